/* augment: the paper's training augmentation and test views on the CPU (section 4.1):
 * random crops and mirrors, mean subtraction at the pixel's place in the full image,
 * PCA lighting, and the 10-view geometry. Every draw comes from counters keyed on
 * (seed, epoch, position), so a batch is a pure function of its cursor. */
#include <math.h>
#include <stdlib.h>

#include "data/data_internal.h"
#include "base/base.h"

#define DATA_SALT_AUG 0x6175676d656e7461ull /* "augmenta" */

data_cursor data_cursor_advance(data_cursor c, int64_t n, int64_t count)
{
    int64_t t = c.pos + n;
    c.epoch += t / count;
    c.pos = t % count;
    return c;
}

int data_view_geometry(int view, int crop, int *oy, int *ox, int *mirror)
{
    if (view < 0 || view >= DATA_VIEWS || crop < 1 || crop > DATA_SIZE)
        return -1;
    int far = DATA_SIZE - crop, mid = (DATA_SIZE - crop) / 2;
    static const int corner[5][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {-1, -1}};
    int b = view % 5;
    *oy = corner[b][0] < 0 ? mid : corner[b][0] * far;
    *ox = corner[b][1] < 0 ? mid : corner[b][1] * far;
    *mirror = view >= 5;
    return 0;
}

void data_cut_crop(uint8_t *dst, const uint8_t *img, int crop, int oy, int ox, int mirror)
{
    for (int y = 0; y < crop; y++) {
        const uint8_t *src = img + ((size_t)(oy + y) * DATA_SIZE + (size_t)ox) * 3;
        uint8_t *d = dst + (size_t)y * crop * 3;
        if (!mirror) {
            memcpy(d, src, (size_t)crop * 3);
        } else {
            for (int j = 0; j < crop; j++) {
                const uint8_t *q = src + (size_t)(crop - 1 - j) * 3;
                d[3 * j] = q[0];
                d[3 * j + 1] = q[1];
                d[3 * j + 2] = q[2];
            }
        }
    }
}

/* One image's augmented, F x F averaged floats x (3, crop/F, crop/F). Its pixels are read
 * at pix + y * prow + (col0 + dir * u) * 3 for crop row y and column u: a cut crop (prow
 * crop*3, col0 0, dir 1: already mirrored) or the stored image itself (prow DATA_SIZE*3, the
 * crop's corner and direction), so a float batch needs no uint8 copy of its crop. */
static void augment_one(float *x, const uint8_t *pix, size_t prow, int col0, int dir,
                        const float *mean, const data_aug_params *p, int crop, int F)
{
    int S = crop / F;
    size_t plane = (size_t)S * S;
    float inv = 1.0f / (float)(F * F), acc[DATA_SIZE];
    /* the mean's column of crop column u (the pixel's place in the full image) */
    int mcol0 = p->mirror ? p->ox + crop - 1 : p->ox, mdir = p->mirror ? -1 : 1;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S; i++) {
            /* each output pixel sums its block row by row, left to right, from 0: the order
             * in which a full-size float crop reduced afterwards adds; F = 1 stores the
             * value itself (no 0 + v, which would turn -0 into +0) */
            for (int j = 0; j < S; j++)
                acc[j] = 0;
            for (int a = 0; a < F; a++) {
                int y = i * F + a;
                const float *mrow = mean + (size_t)(p->oy + y) * DATA_SIZE * 3 + c;
                const uint8_t *prw = pix + (size_t)y * prow + c;
                for (int e = 0; e < F; e++)
                    for (int j = 0; j < S; j++) {
                        int u = j * F + e;
                        float v = ((float)prw[(size_t)(col0 + dir * u) * 3] -
                                   mrow[(size_t)(mcol0 + mdir * u) * 3]) + p->rgb[c];
                        acc[j] = F == 1 ? v : acc[j] + v;
                    }
            }
            float *dst = x + c * plane + (size_t)i * S;
            if (F == 1)
                memcpy(dst, acc, sizeof(float) * (size_t)S);
            else
                for (int j = 0; j < S; j++)
                    dst[j] = acc[j] * inv;
        }
}

void data_augment_reduce_cpu(float *x, const uint8_t *crops, const float *mean,
                             const data_aug_params *params, int B, int crop, int F)
{
    size_t csz = (size_t)crop * crop * 3, xsz = csz / ((size_t)F * F);
    for (int b = 0; b < B; b++)
        augment_one(x + b * xsz, crops + b * csz, (size_t)crop * 3, 0, 1, mean, &params[b], crop,
                    F);
}

void data_augment_cpu(float *x, const uint8_t *crops, const float *mean,
                      const data_aug_params *params, int B, int crop)
{
    data_augment_reduce_cpu(x, crops, mean, params, B, crop, 1);
}

/* x (3, crop/F, crop/F) straight from the stored 256 x 256 image */
static void augment_from_image(float *x, const uint8_t *img, const float *mean,
                               const data_aug_params *p, int crop, int F)
{
    augment_one(x, img + (size_t)p->oy * DATA_SIZE * 3, (size_t)DATA_SIZE * 3,
                p->mirror ? p->ox + crop - 1 : p->ox, p->mirror ? -1 : 1, mean, p, crop, F);
}

/* floor(u * range) with u the top 32 bits of a counter draw */
static int draw_below(uint64_t key, uint64_t i, int range)
{
    return (int)(((base_rng_mix(key, i) >> 32) * (uint64_t)range) >> 32);
}

const uint8_t *data_make_train_item(const data_source *s, uint64_t seed, int64_t epoch,
                                    int64_t pos, int64_t idx, int crop, uint8_t *crop_dst,
                                    data_aug_params *p, data_scratch *sc)
{
    uint64_t key = base_rng_mix(base_rng_mix(seed ^ DATA_SALT_AUG, (uint64_t)epoch),
                                 (uint64_t)pos);
    int range = DATA_SIZE - crop + 1;
    p->oy = draw_below(key, 0, range);
    p->ox = draw_below(key, 1, range);
    p->mirror = s->mirror ? (int32_t)(base_rng_mix(key, 2) >> 63) : 0;
    double alpha[3] = {base_rng_normal(key, 3, 0), base_rng_normal(key, 3, 1),
                       base_rng_normal(key, 5, 0)};
    for (int c = 0; c < 3; c++) {
        double v = 0;
        for (int i = 0; i < 3; i++)
            v += s->pca.eigvec[3 * c + i] * (alpha[i] * s->lighting_std) * sqrt(s->pca.eigval[i]);
        p->rgb[c] = (float)v;
    }
    const uint8_t *img = data_source_image(s, idx, sc);
    if (crop_dst)
        data_cut_crop(crop_dst, img, crop, p->oy, p->ox, p->mirror);
    return img;
}

int data_check_batch(const data_source *s, const data_cursor *c, int B, int crop, char *err,
                     size_t errlen)
{
    if (B < 1)
        return data_fail(err, errlen, "batch size %d must be at least 1", B);
    if (crop < 1 || crop > DATA_SIZE)
        return data_fail(err, errlen, "crop %d must be in 1..%d", crop, DATA_SIZE);
    if (c && (c->epoch < 0 || c->pos < 0 || c->pos >= s->n))
        return data_fail(err, errlen, "cursor (epoch %lld, pos %lld) is outside the %lld images",
                         (long long)c->epoch, (long long)c->pos, (long long)s->n);
    return 0;
}

int data_fill_train(data_source *s, data_cursor c, int n, int crop, int F, uint8_t *crops,
                    data_aug_params *params, int32_t *labels, float *x, data_scratch *sc,
                    char *err, size_t errlen)
{
    enum { RUN = 64 };
    int64_t idx[RUN];
    size_t csz = (size_t)crop * crop * 3, xsz = csz / ((size_t)F * F);
    int done = 0;
    while (done < n) {
        /* a run of positions inside one epoch, looked up in one lock */
        int64_t left = s->n - c.pos;
        int k = n - done < RUN ? n - done : RUN;
        if (k > left)
            k = (int)left;
        if (data_perm_lookup(s, c.seed, c.epoch, c.pos, k, idx, err, errlen) != 0)
            return -1;
        for (int t = 0; t < k; t++) {
            int b = done + t;
            data_aug_params local;
            data_aug_params *p = params ? &params[b] : &local;
            const uint8_t *img = data_make_train_item(s, c.seed, c.epoch, c.pos + t, idx[t],
                                                      crop, crops ? crops + b * csz : NULL, p, sc);
            labels[b] = s->labels[idx[t]];
            if (x)
                augment_from_image(x + b * xsz, img, s->mean, p, crop, F);
        }
        done += k;
        c = data_cursor_advance(c, k, s->n);
    }
    return 0;
}

static int sync_scratch(data_source *s, char *err, size_t errlen)
{
    if (!s->sync_scratch)
        s->sync_scratch = data_scratch_new(s);
    return s->sync_scratch ? 0 : data_fail(err, errlen, "out of memory for batch scratch");
}

static int train_common(data_source *s, data_cursor *cur, int B, int crop, uint8_t *crops,
                        data_aug_params *params, int32_t *labels, float *x, char *err,
                        size_t errlen)
{
    if (data_check_batch(s, cur, B, crop, err, errlen) != 0)
        return -1;
    pthread_mutex_lock(&s->sync_lock);
    int rc = sync_scratch(s, err, errlen);
    if (rc == 0)
        rc = data_fill_train(s, *cur, B, crop, 1, crops, params, labels, x, s->sync_scratch,
                             err, errlen);
    pthread_mutex_unlock(&s->sync_lock);
    if (rc == 0)
        *cur = data_cursor_advance(*cur, B, s->n);
    return rc;
}

int data_train_batch(data_source *s, data_cursor *cur, int B, int crop, float *x,
                     int32_t *labels, char *err, size_t errlen)
{
    return train_common(s, cur, B, crop, NULL, NULL, labels, x, err, errlen);
}

int data_train_batch_u8(data_source *s, data_cursor *cur, int B, int crop, uint8_t *crops,
                        data_aug_params *params, int32_t *labels, char *err, size_t errlen)
{
    return train_common(s, cur, B, crop, crops, params, labels, NULL, err, errlen);
}

static int eval_common(data_source *s, int64_t start, int n, int crop, int view, int F,
                       uint8_t *crops, data_aug_params *params, int32_t *labels, float *x,
                       char *err, size_t errlen)
{
    if (F < 1 || crop % F != 0)
        return data_fail(err, errlen, "crop %d is not a multiple of the downsampling %d", crop,
                         F);
    int oy, ox, mirror;
    if (data_view_geometry(view, crop, &oy, &ox, &mirror) != 0)
        return data_fail(err, errlen, "view %d / crop %d: views are 0..%d, crops 1..%d", view,
                         crop, DATA_VIEWS - 1, DATA_SIZE);
    if (n < 1 || start < 0 || start > s->n - n)
        return data_fail(err, errlen, "images [%lld, %lld) are outside 0..%lld",
                         (long long)start, (long long)start + n, (long long)s->n);
    pthread_mutex_lock(&s->sync_lock);
    if (sync_scratch(s, err, errlen) != 0) {
        pthread_mutex_unlock(&s->sync_lock);
        return -1;
    }
    data_scratch *sc = s->sync_scratch;
    size_t csz = (size_t)crop * crop * 3;
    for (int b = 0; b < n; b++) {
        data_aug_params local = {.oy = oy, .ox = ox, .mirror = mirror, .rgb = {0, 0, 0}};
        const uint8_t *img = data_source_image(s, start + b, sc);
        if (crops)
            data_cut_crop(crops + b * csz, img, crop, oy, ox, mirror);
        if (params)
            params[b] = local;
        labels[b] = s->labels[start + b];
        if (x)
            augment_from_image(x + b * (csz / ((size_t)F * F)), img, s->mean, &local, crop, F);
    }
    pthread_mutex_unlock(&s->sync_lock);
    return 0;
}

int data_eval_batch(data_source *s, int64_t start, int n, int crop, int view, float *x,
                    int32_t *labels, char *err, size_t errlen)
{
    return eval_common(s, start, n, crop, view, 1, NULL, NULL, labels, x, err, errlen);
}

int data_eval_batch_reduced(data_source *s, int64_t start, int n, int crop, int view, int F,
                            float *x, int32_t *labels, char *err, size_t errlen)
{
    return eval_common(s, start, n, crop, view, F, NULL, NULL, labels, x, err, errlen);
}

int data_eval_batch_u8(data_source *s, int64_t start, int n, int crop, int view,
                       uint8_t *crops, data_aug_params *params, int32_t *labels, char *err,
                       size_t errlen)
{
    return eval_common(s, start, n, crop, view, 1, crops, params, labels, NULL, err, errlen);
}
