/* test_augment: training batches and test views against the formula: crop offsets and
 * mirrors cut from the stored image, the mean subtracted where the pixel was, PCA
 * lighting along the eigenvectors with alpha ~ N(0, 0.1); the epoch permutation; the
 * 10-view geometry; same cursor -> same batch. */
#include "data/data_internal.h"
#include "helpers.h"

static char *dir;
static data_source *src;
static void setup(void) { src = th_open_train_shards(3, 6, &dir); }
static void teardown(void) { th_close_train_shards(src, dir); }

enum { CROP = 224 };

Test(augment, batch_is_the_formula, .init = setup, .fini = teardown)
{
    const int B = 7;
    size_t csz = (size_t)CROP * CROP * 3;
    uint8_t *crops = malloc(B * csz), *img = malloc(DATA_IMAGE_BYTES);
    float *x = malloc(B * csz * sizeof *x), *x2 = malloc(B * csz * sizeof *x2);
    data_aug_params p[7];
    int32_t lab[7], lab2[7];
    char err[256];
    data_cursor c0 = {.seed = 42, .epoch = 3, .pos = 5}, c = c0, c2 = c0;
    cr_assert_eq(data_train_batch_u8(src, &c, B, CROP, crops, p, lab, err, sizeof err), 0, "%s", err);
    cr_assert_eq(data_train_batch(src, &c2, B, CROP, x, lab2, err, sizeof err), 0, "%s", err);
    cr_assert(c.epoch == 3 && c.pos == 12 && c2.pos == 12);
    int64_t idx[7];
    cr_assert_eq(data_perm_lookup(src, 42, 3, 5, B, idx, err, sizeof err), 0);
    const float *mean = data_mean_image(src);
    const data_pca *pc = data_get_pca(src);
    for (int b = 0; b < B; b++) {
        cr_assert_eq(lab[b], lab2[b]);
        cr_assert_eq(lab[b], data_label(src, idx[b]));
        cr_assert(p[b].oy >= 0 && p[b].oy <= DATA_SIZE - CROP && p[b].ox >= 0 &&
                  p[b].ox <= DATA_SIZE - CROP && (p[b].mirror == 0 || p[b].mirror == 1));
        /* the lighting offset lies in the span of the eigenvectors scaled by sqrt(l_i) */
        double alpha[3];
        for (int i = 0; i < 3; i++) {
            double a = 0;
            for (int r = 0; r < 3; r++)
                a += pc->eigvec[3 * r + i] * p[b].rgb[r];
            alpha[i] = a / sqrt(pc->eigval[i]);
            cr_assert_lt(fabs(alpha[i]), 0.8, "alpha %g is 8 sigma out", alpha[i]);
        }
        cr_assert_eq(data_image(src, idx[b], img, err, sizeof err), 0);
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < CROP; y++)
                for (int j = 0; j < CROP; j++) {
                    int sx = p[b].ox + (p[b].mirror ? CROP - 1 - j : j), sy = p[b].oy + y;
                    size_t at = ((size_t)sy * DATA_SIZE + sx) * 3 + ch;
                    uint8_t u = crops[b * csz + ((size_t)y * CROP + j) * 3 + ch];
                    cr_assert_eq(u, img[at]);
                    double want = (double)img[at] - mean[at] + p[b].rgb[ch];
                    float got = x[b * csz + (size_t)ch * CROP * CROP + (size_t)y * CROP + j];
                    cr_assert_float_eq(got, want, 1e-4, "b %d c %d y %d x %d", b, ch, y, j);
                }
    }
    /* the CPU augmentation of the uint8 half gives the float batch bit for bit */
    data_augment_cpu(x2, crops, mean, p, B, CROP);
    cr_assert_eq(memcmp(x, x2, B * csz * sizeof *x), 0);
    /* lighting off: x is exactly pixel - mean */
    data_set_lighting_std(src, 0);
    c = c0;
    cr_assert_eq(data_train_batch_u8(src, &c, B, CROP, crops, p, lab, err, sizeof err), 0);
    for (int b = 0; b < B; b++)
        cr_assert(p[b].rgb[0] == 0 && p[b].rgb[1] == 0 && p[b].rgb[2] == 0);
    free(crops);
    free(img);
    free(x);
    free(x2);
}

/* x (B, 3, crop, crop) averaged F x F the slow way: each block summed from 0, row by row
 * and left to right, then times 1/(F*F) */
static void block_average(float *out, const float *x, int B, int crop, int F)
{
    int S = crop / F;
    float inv = 1.0f / (float)(F * F);
    for (int p = 0; p < B * 3; p++)
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                float s = 0;
                for (int a = 0; a < F; a++)
                    for (int e = 0; e < F; e++)
                        s += x[(size_t)p * crop * crop + (size_t)(i * F + a) * crop + j * F + e];
                out[(size_t)p * S * S + (size_t)i * S + j] = s * inv;
            }
}

Test(augment, downsampled_batches_are_the_block_average_bit_for_bit, .init = setup,
     .fini = teardown)
{
    /* --downsample F: the fused augment-and-average (data_augment_reduce_cpu) against the
     * full-size float crop averaged afterwards, for training batches (mirrored and not,
     * with lighting), the prefetcher's batches and the evaluation views */
    enum { B = 6 };
    static const int cases[][2] = {{222, 3}, {134, 2}, {201, 3}, {75, 5}, {90, 1}};
    char err[256];
    const float *mean = data_mean_image(src);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int crop = cases[t][0], F = cases[t][1], S = crop / F;
        size_t csz = (size_t)crop * crop * 3, rsz = (size_t)S * S * 3;
        uint8_t *crops = malloc(B * csz);
        float *full = malloc(B * csz * sizeof(float)), *want = malloc(B * rsz * sizeof(float)),
              *got = malloc(B * rsz * sizeof(float));
        data_aug_params p[B];
        int32_t lab[B];
        data_cursor c = {.seed = 7, .epoch = 1, .pos = 2};
        cr_assert_eq(data_train_batch_u8(src, &c, B, crop, crops, p, lab, err, sizeof err), 0,
                     "%s", err);
        int mirrored = 0;
        for (int b = 0; b < B; b++)
            mirrored += p[b].mirror;
        cr_assert(mirrored > 0 && mirrored < B, "the draws mirror some crops, not all");
        data_augment_cpu(full, crops, mean, p, B, crop);
        block_average(want, full, B, crop, F);
        data_augment_reduce_cpu(got, crops, mean, p, B, crop, F);
        cr_assert_eq(memcmp(want, got, B * rsz * sizeof(float)), 0, "crop %d F %d", crop, F);

        /* the prefetcher's float batches (the trainer's path) */
        data_prefetch_opts o = {.depth = 2, .threads = 2, .downsample = F};
        data_cursor c0 = {.seed = 7, .epoch = 1, .pos = 2};
        data_prefetch *pf = data_prefetch_start_ex(src, c0, B, crop, &o, err, sizeof err);
        cr_assert_not_null(pf, "%s", err);
        const float *px;
        const int32_t *pl;
        cr_assert_eq(data_prefetch_next(pf, &px, &pl, NULL, NULL, err, sizeof err), 0, "%s", err);
        cr_assert_eq(memcmp(want, px, B * rsz * sizeof(float)), 0, "prefetch crop %d F %d", crop,
                     F);
        data_prefetch_stop(pf);

        /* an evaluation view (mirrored: view 5 and up) */
        for (int view = 4; view <= 5; view++) {
            cr_assert_eq(data_eval_batch(src, 1, B - 1, crop, view, full, lab, err, sizeof err),
                         0, "%s", err);
            block_average(want, full, B - 1, crop, F);
            cr_assert_eq(data_eval_batch_reduced(src, 1, B - 1, crop, view, F, got, lab, err,
                                                 sizeof err), 0, "%s", err);
            cr_assert_eq(memcmp(want, got, (B - 1) * rsz * sizeof(float)), 0,
                         "view %d crop %d F %d", view, crop, F);
        }
        free(crops);
        free(full);
        free(want);
        free(got);
    }
    /* a crop that is not a multiple of F is refused, naming both */
    float x1[3];
    int32_t l1;
    cr_assert_neq(data_eval_batch_reduced(src, 0, 1, 100, 0, 3, x1, &l1, err, sizeof err), 0);
    cr_assert(strstr(err, "100") && strstr(err, "3"), "%s", err);
    data_prefetch_opts bad = {.depth = 2, .downsample = 3};
    data_cursor c0 = {.seed = 1};
    cr_assert_null(data_prefetch_start_ex(src, c0, 2, 100, &bad, err, sizeof err));
}

Test(augment, draws_have_the_paper_distribution, .init = setup, .fini = teardown)
{
    /* 18 images x 200 epochs = 3600 draws of crops, mirrors and alphas */
    const int B = 18, E = 200, crop = 8; /* a small crop: the params are what counts */
    data_aug_params p[18];
    uint8_t crops[18 * 8 * 8 * 3];
    int32_t lab[18];
    char err[256];
    const data_pca *pc = data_get_pca(src);
    double s1[3] = {0}, s2[3] = {0}, mir = 0, n = 0;
    int seen_oy[DATA_SIZE] = {0};
    for (int e = 0; e < E; e++) {
        data_cursor c = {.seed = 7, .epoch = e, .pos = 0};
        cr_assert_eq(data_train_batch_u8(src, &c, B, crop, crops, p, lab, err, sizeof err), 0);
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < 3; i++) {
                double a = 0;
                for (int r = 0; r < 3; r++)
                    a += pc->eigvec[3 * r + i] * p[b].rgb[r];
                a /= sqrt(pc->eigval[i]);
                s1[i] += a;
                s2[i] += a * a;
            }
            mir += p[b].mirror;
            seen_oy[p[b].oy]++;
            n++;
        }
    }
    for (int i = 0; i < 3; i++) {
        double m = s1[i] / n, sd = sqrt(s2[i] / n - m * m);
        cr_assert_lt(fabs(m), 0.01, "alpha_%d mean %g", i, m);
        cr_assert_float_eq(sd, DATA_LIGHTING_STD, 0.008, "alpha_%d std %g", i, sd);
    }
    cr_assert_float_eq(mir / n, 0.5, 0.04, "mirror share %g", mir / n);
    for (int o = 0; o <= DATA_SIZE - crop; o++) /* 249 values, ~14 draws each */
        cr_assert_gt(seen_oy[o], 0, "crop row offset %d never drawn", o);
}

Test(augment, mirror_off_flips_nothing_and_keeps_the_other_draws, .init = setup, .fini = teardown)
{
    /* --mirror off: no crop flipped; the corners and the lighting are the same draws as
     * with mirrors on (every draw is keyed by the image's place), and an unflipped image
     * is the same crop */
    const int B = 18, crop = 8;
    data_aug_params on[18], off[18];
    uint8_t c_on[18 * 8 * 8 * 3], c_off[18 * 8 * 8 * 3];
    int32_t lab[18];
    char err[256];
    int flipped = 0;
    for (int e = 0; e < 20; e++) {
        data_cursor c = {.seed = 11, .epoch = e, .pos = 0};
        data_set_mirror(src, 1);
        cr_assert_eq(data_train_batch_u8(src, &c, B, crop, c_on, on, lab, err, sizeof err), 0);
        c = (data_cursor){.seed = 11, .epoch = e, .pos = 0};
        data_set_mirror(src, 0);
        cr_assert_eq(data_train_batch_u8(src, &c, B, crop, c_off, off, lab, err, sizeof err), 0);
        for (int b = 0; b < B; b++) {
            cr_assert_eq(off[b].mirror, 0, "epoch %d image %d mirrored with --mirror off", e, b);
            cr_assert_eq(off[b].oy, on[b].oy);
            cr_assert_eq(off[b].ox, on[b].ox);
            for (int i = 0; i < 3; i++)
                cr_assert_eq(off[b].rgb[i], on[b].rgb[i]);
            size_t sz = (size_t)crop * crop * 3;
            if (!on[b].mirror)
                cr_assert_eq(memcmp(c_on + b * sz, c_off + b * sz, sz), 0);
            flipped += on[b].mirror;
        }
    }
    data_set_mirror(src, 1);
    cr_assert_gt(flipped, 0, "mirrors on flipped nothing in 360 draws");
}

Test(augment, epochs_are_permutations_and_seeded, .init = setup, .fini = teardown)
{
    int64_t n = data_count(src), a[18], b[18];
    char err[256];
    cr_assert_eq(n, 18);
    cr_assert_eq(data_perm_lookup(src, 1, 0, 0, 18, a, err, sizeof err), 0);
    int seen[18] = {0};
    for (int i = 0; i < 18; i++)
        seen[a[i]]++;
    for (int i = 0; i < 18; i++)
        cr_assert_eq(seen[i], 1, "image %d appears %d times in epoch 0", i, seen[i]);
    cr_assert_eq(data_perm_lookup(src, 1, 1, 0, 18, b, err, sizeof err), 0);
    cr_assert_neq(memcmp(a, b, sizeof a), 0, "epochs 0 and 1 are shuffled alike");
    cr_assert_eq(data_perm_lookup(src, 2, 0, 0, 18, b, err, sizeof err), 0);
    cr_assert_neq(memcmp(a, b, sizeof a), 0, "seeds 1 and 2 are shuffled alike");
    /* a third epoch evicts a cached one; asking again gives the same order */
    cr_assert_eq(data_perm_lookup(src, 1, 5, 0, 18, b, err, sizeof err), 0);
    cr_assert_eq(data_perm_lookup(src, 1, 0, 0, 18, b, err, sizeof err), 0);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);

    /* a batch across the epoch end: the last 2 of epoch 4, the first 3 of epoch 5 */
    int32_t lab[5];
    uint8_t crops[5 * 4 * 4 * 3];
    data_aug_params p[5];
    data_cursor c = {.seed = 1, .epoch = 4, .pos = 16};
    cr_assert_eq(data_train_batch_u8(src, &c, 5, 4, crops, p, lab, err, sizeof err), 0);
    cr_assert(c.epoch == 5 && c.pos == 3);
    int64_t e4[18], e5[18];
    data_perm_lookup(src, 1, 4, 0, 18, e4, err, sizeof err);
    data_perm_lookup(src, 1, 5, 0, 18, e5, err, sizeof err);
    int64_t want[5] = {e4[16], e4[17], e5[0], e5[1], e5[2]};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(lab[i], data_label(src, want[i]));
    /* refusals */
    data_cursor bad = {.seed = 1, .epoch = 0, .pos = 18};
    cr_assert_eq(data_train_batch_u8(src, &bad, 5, 4, crops, p, lab, err, sizeof err), -1);
    bad.pos = 0;
    cr_assert_eq(data_train_batch_u8(src, &bad, 5, 257, crops, p, lab, err, sizeof err), -1);
}

Test(augment, same_cursor_same_batch_across_opens, .init = setup, .fini = teardown)
{
    char out[4200], err[256];
    snprintf(out, sizeof out, "%s/out", dir);
    data_source *s2 = data_open_shards(out, "train", err, sizeof err);
    cr_assert_not_null(s2);
    const int B = 6, crop = 64;
    size_t n = (size_t)B * 3 * crop * crop;
    float *x1 = malloc(n * 4), *x2 = malloc(n * 4);
    int32_t l1[6], l2[6];
    data_cursor c1 = {.seed = 99, .epoch = 2, .pos = 4}, c2 = c1;
    cr_assert_eq(data_train_batch(src, &c1, B, crop, x1, l1, err, sizeof err), 0);
    cr_assert_eq(data_train_batch(s2, &c2, B, crop, x2, l2, err, sizeof err), 0);
    cr_assert_eq(memcmp(x1, x2, n * 4), 0);
    cr_assert_eq(memcmp(l1, l2, sizeof l1), 0);
    c2 = (data_cursor){.seed = 100, .epoch = 2, .pos = 4};
    cr_assert_eq(data_train_batch(s2, &c2, B, crop, x2, l2, err, sizeof err), 0);
    cr_assert_neq(memcmp(x1, x2, n * 4), 0, "another seed must give another batch");
    free(x1);
    free(x2);
    data_close(s2);
}

Test(augment, ten_views, .init = setup, .fini = teardown)
{
    static const int want[10][3] = {{0, 0, 0},   {0, 32, 0},  {32, 0, 0},  {32, 32, 0},
                                    {16, 16, 0}, {0, 0, 1},   {0, 32, 1},  {32, 0, 1},
                                    {32, 32, 1}, {16, 16, 1}};
    for (int v = 0; v < DATA_VIEWS; v++) {
        int oy, ox, m;
        cr_assert_eq(data_view_geometry(v, CROP, &oy, &ox, &m), 0);
        cr_assert(oy == want[v][0] && ox == want[v][1] && m == want[v][2], "view %d", v);
    }
    int oy, ox, m;
    cr_assert_eq(data_view_geometry(DATA_VIEW_CENTER, 227, &oy, &ox, &m), 0);
    cr_assert(oy == 14 && ox == 14 && m == 0);
    cr_assert_eq(data_view_geometry(10, CROP, &oy, &ox, &m), -1);

    const int n = 3;
    size_t plane = (size_t)CROP * CROP, csz = plane * 3;
    float *xv[DATA_VIEWS];
    int32_t lab[3];
    char err[256];
    uint8_t *img = malloc(DATA_IMAGE_BYTES);
    const float *mean = data_mean_image(src);
    for (int v = 0; v < DATA_VIEWS; v++) {
        xv[v] = malloc(n * csz * sizeof(float));
        cr_assert_eq(data_eval_batch(src, 15, n, CROP, v, xv[v], lab, err, sizeof err), 0, "%s", err);
        for (int b = 0; b < n; b++)
            cr_assert_eq(lab[b], data_label(src, 15 + b));
    }
    for (int b = 0; b < n; b++) {
        cr_assert_eq(data_image(src, 15 + b, img, err, sizeof err), 0);
        for (int v = 0; v < 5; v++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < CROP; y += 7)
                    for (int j = 0; j < CROP; j++) {
                        size_t at = ((size_t)(want[v][0] + y) * DATA_SIZE + want[v][1] + j) * 3 + c;
                        float plain = xv[v][b * csz + c * plane + (size_t)y * CROP + j];
                        float mirrored = xv[v + 5][b * csz + c * plane + (size_t)y * CROP + (CROP - 1 - j)];
                        cr_assert_float_eq(plain, (double)img[at] - mean[at], 1e-4);
                        cr_assert_eq(plain, mirrored, "view %d is not the mirror of view %d", v + 5, v);
                    }
    }
    /* the tail batch may be short; past the end is refused */
    cr_assert_eq(data_eval_batch(src, 17, 1, CROP, 4, xv[0], lab, err, sizeof err), 0);
    cr_assert_eq(data_eval_batch(src, 17, 2, CROP, 4, xv[0], lab, err, sizeof err), -1);
    for (int v = 0; v < DATA_VIEWS; v++)
        free(xv[v]);
    free(img);
}
