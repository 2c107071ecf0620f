/* source: opening a data set (Fashion-MNIST IDX files, or prep's memory-mapped shards),
 * handing out its images as 256x256x3, and the per-epoch permutations. A source is
 * read-only after open except for the permutation cache, which has its own lock. */
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "base/base.h"

const char *const data_fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                            "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                            "Bag",         "Ankle boot"};

/* ---- Fashion-MNIST IDX ------------------------------------------------------------- */

/* Reads up to n bytes; returns how many it got (fewer at the end of the data). *why is
 * "" or zlib's reason when the stream is corrupt or cut inside (a bad CRC, an unexpected
 * end of file). */
static size_t gz_read_upto(gzFile f, uint8_t *dst, size_t n, const char **why)
{
    size_t got = 0;
    *why = "";
    while (got < n) {
        unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f, dst + got, chunk);
        if (r < 0) {
            int zerr;
            *why = gzerror(f, &zerr);
            if (!*why || !**why)
                *why = "zlib error";
            break;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* Reads exactly n bytes and then the end of the data: fewer bytes than the header
 * declares and bytes after the declared data are both errors. 0, or -1 with err. */
static int gz_read_exact(gzFile f, uint8_t *dst, size_t n, const char *path, const char *what,
                         char *err, size_t errlen)
{
    const char *why;
    size_t got = gz_read_upto(f, dst, n, &why);
    if (got == n && !why[0]) {
        uint8_t extra;
        size_t more = gz_read_upto(f, &extra, 1, &why);
        if (more > 0)
            return data_fail(err, errlen,
                             "IDX file %s: data continues after the %zu bytes of %s its header "
                             "declares (the header's count is smaller than the file)",
                             path, n, what);
        if (!why[0])
            return 0;
        return data_fail(err, errlen, "IDX file %s: gzip data is corrupt after the %s: %s",
                         path, what, why);
    }
    return data_fail(err, errlen,
                     "IDX file %s: truncated: %zu of the %zu bytes of %s its header declares%s%s",
                     path, got, n, what, why[0] ? "; zlib: " : "", why);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* An IDX file through base_open_input (a FIFO or folder is refused without blocking),
 * then zlib on the descriptor: gzip, or plain bytes read as they are. */
static gzFile idx_open(const char *path, char *err, size_t errlen)
{
    int fd = base_open_input(path, "IDX file", err, errlen);
    if (fd < 0)
        return NULL;
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        data_fail(err, errlen, "IDX file %s: zlib cannot read it (out of memory)", path);
    }
    return f;
}

int data_idx_load(const char *images_gz, const char *labels_gz, int classes,
                  uint8_t **pixels, int32_t **labels, int64_t *n, int *rows, int *cols,
                  char *err, size_t errlen)
{
    *pixels = NULL;
    *labels = NULL;
    gzFile f = idx_open(images_gz, err, errlen);
    if (!f)
        return -1;
    uint8_t hd[16];
    const char *why;
    if (gz_read_upto(f, hd, 16, &why) != 16) {
        gzclose(f);
        return data_fail(err, errlen, "IDX file %s: cannot read the 16-byte image header%s%s",
                         images_gz, why[0] ? ": " : "", why);
    }
    uint32_t cnt = be32(hd + 4), r = be32(hd + 8), c = be32(hd + 12);
    if (be32(hd) != 0x00000803u || cnt == 0 || cnt > 10000000u || r == 0 || r > 4096 ||
        c == 0 || c > 4096 || (uint64_t)cnt * r * c > ((uint64_t)1 << 32)) {
        gzclose(f);
        return data_fail(err, errlen,
                         "IDX file %s: not a uint8 image IDX file of sane size (magic %08x, "
                         "%u x %u x %u)", images_gz, be32(hd), cnt, r, c);
    }
    size_t bytes = (size_t)cnt * r * c;
    uint8_t *px = malloc(bytes);
    if (!px) {
        gzclose(f);
        return data_fail(err, errlen, "IDX file %s: out of memory for %zu bytes", images_gz,
                         bytes);
    }
    char what[96];
    snprintf(what, sizeof what, "%u images of %ux%u", cnt, r, c);
    int rc = gz_read_exact(f, px, bytes, images_gz, what, err, errlen);
    gzclose(f);
    if (rc != 0) {
        free(px);
        return -1;
    }
    f = idx_open(labels_gz, err, errlen);
    if (!f) {
        free(px);
        return -1;
    }
    uint8_t lh[8];
    if (gz_read_upto(f, lh, 8, &why) != 8 || be32(lh) != 0x00000801u || be32(lh + 4) != cnt) {
        free(px);
        gzclose(f);
        return data_fail(err, errlen,
                         "IDX file %s: not a label IDX file for the %u images of %s", labels_gz,
                         cnt, images_gz);
    }
    uint8_t *lb = malloc(cnt);
    int32_t *lab = malloc((size_t)cnt * sizeof *lab);
    if (!lb || !lab) {
        free(px);
        free(lb);
        free(lab);
        gzclose(f);
        return data_fail(err, errlen, "IDX file %s: out of memory", labels_gz);
    }
    snprintf(what, sizeof what, "%u labels", cnt);
    rc = gz_read_exact(f, lb, cnt, labels_gz, what, err, errlen);
    gzclose(f);
    for (uint32_t i = 0; i < cnt && rc == 0; i++) {
        if (lb[i] >= classes)
            rc = data_fail(err, errlen,
                           "IDX file %s: label %u of image %u is outside 0..%d (Fashion-MNIST "
                           "has %d classes)", labels_gz, lb[i], i, classes - 1, classes);
        lab[i] = lb[i];
    }
    free(lb);
    if (rc != 0) {
        free(px);
        free(lab);
        return -1;
    }
    *pixels = px;
    *labels = lab;
    *n = cnt;
    *rows = (int)r;
    *cols = (int)c;
    return 0;
}

/* The IDX mean image: by linearity, the mean of the upscaled images is the upscaled
 * mean 28x28 image (up to each image's rounding to uint8, below 0.5 / pixel). */
static int mean_upscale(float *dst, const double *src, int w, int h, char *err, size_t errlen)
{
    size_t wsb = data_resize_workspace(w, h, 1, DATA_SIZE);
    void *ws = malloc(wsb);
    float *f = malloc((size_t)w * h * sizeof *f);
    if (!ws || !f) {
        free(ws);
        free(f);
        return data_fail(err, errlen, "out of memory for the mean image");
    }
    for (int k = 0; k < w * h; k++)
        f[k] = (float)src[k];
    data_resize_center_f32(dst, DATA_SIZE, f, w, h, 1, ws);
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
        dst[i] = dst[i] < 0 ? 0 : dst[i] > 255 ? 255 : dst[i];
    free(ws);
    free(f);
    return 0;
}

static data_source *source_alloc(char *err, size_t errlen)
{
    data_source *s = calloc(1, sizeof *s);
    if (!s) {
        data_fail(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->perm_lock, NULL);
    pthread_mutex_init(&s->sync_lock, NULL);
    s->lighting_std = DATA_LIGHTING_STD;
    s->mirror = 1;
    return s;
}

static int idx_stats(data_source *s, const uint8_t *px, int64_t n, int rows, int cols,
                     char *err, size_t errlen)
{
    size_t np = (size_t)rows * cols;
    double *m = calloc(np, sizeof *m);
    s->mean = malloc(DATA_IMAGE_BYTES * sizeof(float));
    if (!m || !s->mean) {
        free(m);
        return data_fail(err, errlen, "out of memory for the mean image");
    }
    for (int64_t i = 0; i < n; i++)
        for (size_t k = 0; k < np; k++)
            m[k] += px[(size_t)i * np + k];
    for (size_t k = 0; k < np; k++)
        m[k] /= (double)n;
    int rc = mean_upscale(s->mean, m, cols, rows, err, errlen);
    free(m);
    if (rc != 0)
        return -1;
    /* PCA from every 64th image as the loader sees it (upscaled, rounded) */
    data_pixel_sums acc;
    memset(&acc, 0, sizeof acc);
    size_t wsb = data_resize_workspace(cols, rows, 1, DATA_SIZE);
    void *ws = malloc(wsb);
    uint8_t *img = malloc(DATA_IMAGE_BYTES);
    if (!ws || !img) {
        free(ws);
        free(img);
        return data_fail(err, errlen, "out of memory");
    }
    for (int64_t i = 0; i < n; i += 64) {
        data_resize_center(img, DATA_SIZE, px + (size_t)i * np, cols, rows, 1, ws);
        data_pixel_sums_add_image(&acc, img, (size_t)DATA_SIZE * DATA_SIZE);
    }
    free(ws);
    free(img);
    data_pca_from_sums(&s->pca, &acc);
    return 0;
}

data_source *data_open_idx(const char *dir, int train, char *err, size_t errlen)
{
    char ip[4096], lp[4096];
    const char *pre = train ? "train" : "t10k";
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, pre);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
    data_source *s = source_alloc(err, errlen);
    if (!s)
        return NULL;
    s->kind = DATA_SRC_IDX;
    if (data_idx_load(ip, lp, DATA_IDX_CLASSES, &s->idx_pixels, &s->labels, &s->n, &s->idx_h,
                      &s->idx_w, err, errlen) != 0) {
        data_close(s);
        return NULL;
    }
    /* fixed, never taken from the largest label: a bad label is refused by the loader
     * above instead of silently widening the net */
    s->classes = DATA_IDX_CLASSES;
    s->names = calloc((size_t)s->classes, sizeof *s->names);
    if (!s->names) {
        data_fail(err, errlen, "out of memory");
        data_close(s);
        return NULL;
    }
    for (int c = 0; c < s->classes; c++) {
        s->names[c] = strdup(data_fashion_names[c]);
        if (!s->names[c]) {
            data_fail(err, errlen, "out of memory");
            data_close(s);
            return NULL;
        }
    }
    int rc;
    if (train) {
        rc = idx_stats(s, s->idx_pixels, s->n, s->idx_h, s->idx_w, err, errlen);
    } else {
        /* the test set is centred with the training set's statistics */
        snprintf(ip, sizeof ip, "%s/train-images-idx3-ubyte.gz", dir);
        snprintf(lp, sizeof lp, "%s/train-labels-idx1-ubyte.gz", dir);
        uint8_t *tp;
        int32_t *tl;
        int64_t tn;
        int th, tw;
        rc = data_idx_load(ip, lp, DATA_IDX_CLASSES, &tp, &tl, &tn, &th, &tw, err, errlen);
        if (rc == 0) {
            if (th != s->idx_h || tw != s->idx_w)
                rc = data_fail(err, errlen, "IDX file %s: %dx%d images, the test file has %dx%d",
                               ip, th, tw, s->idx_h, s->idx_w);
            else
                rc = idx_stats(s, tp, tn, th, tw, err, errlen);
            free(tp);
            free(tl);
        }
    }
    if (rc != 0) {
        data_close(s);
        return NULL;
    }
    return s;
}

/* ---- shards ------------------------------------------------------------------------ */

data_source *data_open_shards(const char *dir, const char *split, char *err, size_t errlen)
{
    if (strcmp(split, "train") != 0 && strcmp(split, "val") != 0) {
        data_fail(err, errlen, "split \"%s\" is neither train nor val", split);
        return NULL;
    }
    char path[4096], e2[512];
    data_meta m;
    if (data_meta_load(dir, &m, err, errlen) != 0)
        return NULL;
    if (data_shards_check_listed(dir, &m, err, errlen) != 0) {
        data_meta_free(&m);
        return NULL;
    }
    data_source *s = source_alloc(err, errlen);
    if (!s) {
        data_meta_free(&m);
        return NULL;
    }
    s->kind = DATA_SRC_SHARDS;
    s->classes = m.classes;
    s->names = m.names;
    s->mean = m.mean;
    s->pca = m.pca;
    m.names = NULL;
    m.mean = NULL;
    int train = strcmp(split, "train") == 0;
    uint64_t total = train ? m.n_train : m.n_val;
    uint32_t nsh = train ? m.train_shards : m.val_shards;
    uint32_t shard_size = m.shard_size;
    const uint32_t *want_crc = m.shard_crc + (train ? 0 : m.train_shards);
    if (total == 0 || total > 0xffffffffu) {
        data_fail(err, errlen, "meta.bin %s/meta.bin: the %s split has %llu images", dir, split,
                  (unsigned long long)total);
        goto fail;
    }
    s->n = (int64_t)total;
    s->shards = calloc(nsh, sizeof *s->shards);
    s->labels = malloc((size_t)total * sizeof *s->labels);
    if (!s->shards || !s->labels) {
        data_fail(err, errlen, "out of memory");
        goto fail;
    }
    uint64_t first = 0;
    for (uint32_t i = 0; i < nsh; i++) {
        snprintf(path, sizeof path, "%s/%s-%05u.tts", dir, split, i);
        uint8_t *map;
        size_t bytes;
        if (data_shard_map_file(path, &map, &bytes, err, errlen) != 0)
            goto fail;
        s->shards[i].map = map;
        s->shards[i].bytes = bytes;
        s->nshards = (int)i + 1;
        data_shard_header h;
        if (data_shard_parse(map, bytes, 0, &h, e2, sizeof e2) != 0) {
            data_fail(err, errlen, "shard %s: %s", path, e2);
            goto fail;
        }
        uint64_t want = (i + 1 < nsh) ? shard_size : total - first;
        if (strcmp(h.split, split) != 0 || h.index != i || h.first != first ||
            h.count != want || (int)h.classes != s->classes) {
            data_fail(err, errlen,
                      "shard %s: header (split %s, shard %llu, first %llu, %llu images, %u "
                      "classes) does not match meta.bin (split %s, shard %u, first %llu, %llu "
                      "images, %d classes)",
                      path, h.split, (unsigned long long)h.index, (unsigned long long)h.first,
                      (unsigned long long)h.count, h.classes, split, i,
                      (unsigned long long)first, (unsigned long long)want, s->classes);
            goto fail;
        }
        /* the header's payload checksum against meta.bin's: no payload read, so a shard
         * from another prep run is caught at open even with the same counts */
        if (h.payload_crc != want_crc[i]) {
            data_fail(err, errlen,
                      "shard %s: payload checksum %08x, but %s/meta.bin lists %08x: the shard "
                      "and meta.bin come from different prep runs (re-run prep)",
                      path, h.payload_crc, dir, want_crc[i]);
            goto fail;
        }
        madvise(map, bytes, MADV_RANDOM);
        const uint8_t *lab = map + DATA_SHARD_HEADER + h.count * DATA_IMAGE_BYTES;
        for (uint64_t k = 0; k < h.count; k++)
            s->labels[first + k] = (int32_t)base_get_le32(lab + 4 * k);
        s->shards[i].first = (int64_t)first;
        s->shards[i].count = (int64_t)h.count;
        first += h.count;
    }
    data_meta_free(&m);
    return s;
fail:
    data_meta_free(&m);
    data_close(s);
    return NULL;
}

void data_close(data_source *s)
{
    if (!s)
        return;
    if (s->names)
        for (int c = 0; c < s->classes; c++)
            free(s->names[c]);
    free(s->names);
    free(s->labels);
    free(s->mean);
    free(s->idx_pixels);
    for (int i = 0; i < s->nshards; i++)
        if (s->shards[i].map)
            munmap(s->shards[i].map, s->shards[i].bytes);
    free(s->shards);
    for (int k = 0; k < DATA_PERM_SLOTS; k++)
        free(s->perm[k].perm);
    data_scratch_free(s->sync_scratch);
    pthread_mutex_destroy(&s->perm_lock);
    pthread_mutex_destroy(&s->sync_lock);
    free(s);
}

int64_t data_count(const data_source *s) { return s->n; }
int data_classes(const data_source *s) { return s->classes; }
const char *data_class_name(const data_source *s, int c)
{
    return (c >= 0 && c < s->classes) ? s->names[c] : NULL;
}
int32_t data_label(const data_source *s, int64_t i)
{
    return (i >= 0 && i < s->n) ? s->labels[i] : -1;
}
const float *data_mean_image(const data_source *s) { return s->mean; }
const data_pca *data_get_pca(const data_source *s) { return &s->pca; }
void data_set_lighting_std(data_source *s, double std) { s->lighting_std = std > 0 ? std : 0; }

void data_set_mirror(data_source *s, int on) { s->mirror = on != 0; }

/* ---- images ------------------------------------------------------------------------ */

data_scratch *data_scratch_new(const data_source *s)
{
    data_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->img = malloc(DATA_IMAGE_BYTES);
    size_t wsb = s->kind == DATA_SRC_IDX ? data_resize_workspace(s->idx_w, s->idx_h, 1, DATA_SIZE)
                                         : 64;
    sc->ws = malloc(wsb);
    if (!sc->img || !sc->ws) {
        data_scratch_free(sc);
        return NULL;
    }
    return sc;
}

void data_scratch_free(data_scratch *sc)
{
    if (!sc)
        return;
    free(sc->img);
    free(sc->ws);
    free(sc);
}

const uint8_t *data_source_image(const data_source *s, int64_t i, data_scratch *sc)
{
    if (s->kind == DATA_SRC_IDX) {
        size_t np = (size_t)s->idx_h * s->idx_w;
        data_resize_center(sc->img, DATA_SIZE, s->idx_pixels + (size_t)i * np, s->idx_w,
                           s->idx_h, 1, sc->ws);
        return sc->img;
    }
    /* shards are full except the last: index arithmetic, no search */
    int64_t per = s->shards[0].count;
    int64_t k = i / per;
    if (k >= s->nshards)
        k = s->nshards - 1;
    const data_shard_map *m = &s->shards[k];
    return m->map + DATA_SHARD_HEADER + (size_t)(i - m->first) * DATA_IMAGE_BYTES;
}

int data_image(const data_source *s, int64_t i, uint8_t *dst, char *err, size_t errlen)
{
    if (i < 0 || i >= s->n)
        return data_fail(err, errlen, "image %lld is outside 0..%lld", (long long)i,
                         (long long)s->n - 1);
    data_scratch *sc = data_scratch_new(s);
    if (!sc)
        return data_fail(err, errlen, "out of memory");
    memcpy(dst, data_source_image(s, i, sc), DATA_IMAGE_BYTES);
    data_scratch_free(sc);
    return 0;
}

/* ---- epoch permutations ------------------------------------------------------------ */

#define DATA_SALT_PERM 0x7065726d75746174ull /* "permutat" */

static void make_perm(uint32_t *perm, int64_t n, uint64_t seed, int64_t epoch)
{
    uint64_t key = base_rng_mix(seed ^ DATA_SALT_PERM, (uint64_t)epoch);
    for (int64_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    /* Fisher-Yates; j = floor(u * (i + 1)) from the top 32 bits (n < 2^32) */
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t u = base_rng_mix(key, (uint64_t)i) >> 32;
        int64_t j = (int64_t)((u * (uint64_t)(i + 1)) >> 32);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int data_perm_lookup(data_source *s, uint64_t seed, int64_t epoch, int64_t pos, int n,
                     int64_t *out, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->perm_lock);
    data_perm_slot *hit = NULL, *victim = &s->perm[0];
    for (int k = 0; k < DATA_PERM_SLOTS; k++) {
        data_perm_slot *sl = &s->perm[k];
        if (sl->valid && sl->seed == seed && sl->epoch == epoch)
            hit = sl;
        if (!sl->valid || sl->last_use < victim->last_use)
            victim = sl;
    }
    if (!hit) {
        if (!victim->perm)
            victim->perm = malloc((size_t)s->n * sizeof *victim->perm);
        if (!victim->perm) {
            pthread_mutex_unlock(&s->perm_lock);
            return data_fail(err, errlen, "out of memory for the epoch permutation");
        }
        make_perm(victim->perm, s->n, seed, epoch);
        victim->valid = 1;
        victim->seed = seed;
        victim->epoch = epoch;
        hit = victim;
    }
    hit->last_use = ++s->perm_clock;
    for (int k = 0; k < n; k++)
        out[k] = hit->perm[pos + k];
    pthread_mutex_unlock(&s->perm_lock);
    return 0;
}
