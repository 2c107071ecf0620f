/* source: opening a data set (Fashion-MNIST IDX files, or prep's memory-mapped shards),
 * handing out its images as 256x256x3, and the per-epoch permutations. A source is
 * read-only after open except for the permutation cache, which has its own lock. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "base/base.h"

const char *const data_fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                            "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                            "Bag",         "Ankle boot"};

/* ---- Fashion-MNIST IDX ------------------------------------------------------------- */

static int gz_read_all(gzFile f, uint8_t *dst, size_t n)
{
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int r = gzread(f, dst, chunk);
        if (r <= 0)
            return -1;
        dst += r;
        n -= (size_t)r;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int data_idx_load(const char *images_gz, const char *labels_gz, uint8_t **pixels,
                  int32_t **labels, int64_t *n, int *rows, int *cols, char *err,
                  size_t errlen)
{
    *pixels = NULL;
    *labels = NULL;
    gzFile f = gzopen(images_gz, "rb");
    if (!f)
        return data_fail(err, errlen, "%s: cannot open: %s", images_gz, strerror(errno));
    uint8_t hd[16];
    if (gz_read_all(f, hd, 16) != 0) {
        gzclose(f);
        return data_fail(err, errlen, "%s: cannot read the IDX header", images_gz);
    }
    uint32_t cnt = be32(hd + 4), r = be32(hd + 8), c = be32(hd + 12);
    if (be32(hd) != 0x00000803u || cnt == 0 || cnt > 10000000u || r == 0 || r > 4096 ||
        c == 0 || c > 4096 || (uint64_t)cnt * r * c > ((uint64_t)1 << 32)) {
        gzclose(f);
        return data_fail(err, errlen,
                         "%s: not a uint8 image IDX file of sane size (magic %08x, %u x %u x %u)",
                         images_gz, be32(hd), cnt, r, c);
    }
    size_t bytes = (size_t)cnt * r * c;
    uint8_t *px = malloc(bytes);
    if (!px) {
        gzclose(f);
        return data_fail(err, errlen, "%s: out of memory for %zu bytes", images_gz, bytes);
    }
    if (gz_read_all(f, px, bytes) != 0) {
        free(px);
        gzclose(f);
        return data_fail(err, errlen, "%s: truncated (fewer than %u images)", images_gz, cnt);
    }
    gzclose(f);
    f = gzopen(labels_gz, "rb");
    if (!f) {
        free(px);
        return data_fail(err, errlen, "%s: cannot open: %s", labels_gz, strerror(errno));
    }
    uint8_t lh[8];
    if (gz_read_all(f, lh, 8) != 0 || be32(lh) != 0x00000801u || be32(lh + 4) != cnt) {
        free(px);
        gzclose(f);
        return data_fail(err, errlen, "%s: not a label IDX file for %u images", labels_gz, cnt);
    }
    uint8_t *lb = malloc(cnt);
    int32_t *lab = malloc((size_t)cnt * sizeof *lab);
    if (!lb || !lab || gz_read_all(f, lb, cnt) != 0) {
        free(px);
        free(lb);
        free(lab);
        gzclose(f);
        return data_fail(err, errlen, "%s: truncated or out of memory", labels_gz);
    }
    gzclose(f);
    for (uint32_t i = 0; i < cnt; i++)
        lab[i] = lb[i];
    free(lb);
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
    if (data_idx_load(ip, lp, &s->idx_pixels, &s->labels, &s->n, &s->idx_h, &s->idx_w, err,
                      errlen) != 0) {
        data_close(s);
        return NULL;
    }
    int maxl = 0;
    for (int64_t i = 0; i < s->n; i++)
        maxl = s->labels[i] > maxl ? s->labels[i] : maxl;
    s->classes = maxl + 1 > 10 ? maxl + 1 : 10;
    s->names = calloc((size_t)s->classes, sizeof *s->names);
    if (!s->names) {
        data_fail(err, errlen, "out of memory");
        data_close(s);
        return NULL;
    }
    for (int c = 0; c < s->classes; c++) {
        char num[16];
        snprintf(num, sizeof num, "%d", c);
        s->names[c] = strdup(s->classes == 10 ? data_fashion_names[c] : num);
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
        rc = data_idx_load(ip, lp, &tp, &tl, &tn, &th, &tw, err, errlen);
        if (rc == 0) {
            if (th != s->idx_h || tw != s->idx_w)
                rc = data_fail(err, errlen, "%s: %dx%d images, the test file has %dx%d", ip, th,
                               tw, s->idx_h, s->idx_w);
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
    snprintf(path, sizeof path, "%s/meta.bin", dir);
    uint8_t *mb;
    size_t mn;
    if (data_read_file(path, (size_t)1 << 30, &mb, &mn, e2, sizeof e2) != 0) {
        data_fail(err, errlen, "%s: %s", path, e2);
        return NULL;
    }
    data_meta m;
    int rc = data_meta_parse(mb, mn, &m, e2, sizeof e2);
    free(mb);
    if (rc != 0) {
        data_fail(err, errlen, "%s: %s", path, e2);
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
    data_meta_free(&m);
    if (total == 0 || total > 0xffffffffu) {
        data_fail(err, errlen, "%s: the %s split has %llu images", dir, split,
                  (unsigned long long)total);
        data_close(s);
        return NULL;
    }
    s->n = (int64_t)total;
    s->shards = calloc(nsh, sizeof *s->shards);
    s->labels = malloc((size_t)total * sizeof *s->labels);
    if (!s->shards || !s->labels) {
        data_fail(err, errlen, "out of memory");
        data_close(s);
        return NULL;
    }
    uint64_t first = 0;
    for (uint32_t i = 0; i < nsh; i++) {
        snprintf(path, sizeof path, "%s/%s-%05u.tts", dir, split, i);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
            data_fail(err, errlen, "%s: cannot open: %s", path,
                      fd < 0 ? strerror(errno) : "empty or unreadable");
            if (fd >= 0)
                close(fd);
            data_close(s);
            return NULL;
        }
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (map == MAP_FAILED) {
            data_fail(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
            data_close(s);
            return NULL;
        }
        s->shards[i].map = map;
        s->shards[i].bytes = (size_t)st.st_size;
        s->nshards = (int)i + 1;
        data_shard_header h;
        if (data_shard_parse(map, (size_t)st.st_size, 0, &h, e2, sizeof e2) != 0) {
            data_fail(err, errlen, "%s: %s", path, e2);
            data_close(s);
            return NULL;
        }
        uint64_t want = (i + 1 < nsh) ? shard_size : total - first;
        if (strcmp(h.split, split) != 0 || h.index != i || h.first != first ||
            h.count != want || (int)h.classes != s->classes) {
            data_fail(err, errlen,
                      "%s: header (split %s, shard %llu, first %llu, %llu images, %u classes) "
                      "does not match meta.bin (split %s, shard %u, first %llu, %llu images, "
                      "%d classes)",
                      path, h.split, (unsigned long long)h.index, (unsigned long long)h.first,
                      (unsigned long long)h.count, h.classes, split, i,
                      (unsigned long long)first, (unsigned long long)want, s->classes);
            data_close(s);
            return NULL;
        }
        madvise(map, (size_t)st.st_size, MADV_RANDOM);
        const uint8_t *lab = (const uint8_t *)map + DATA_SHARD_HEADER + h.count * DATA_IMAGE_BYTES;
        for (uint64_t k = 0; k < h.count; k++)
            s->labels[first + k] = (int32_t)data_le32(lab + 4 * k);
        s->shards[i].first = (int64_t)first;
        s->shards[i].count = (int64_t)h.count;
        first += h.count;
    }
    return s;
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

/* ---- images ------------------------------------------------------------------------ */

data_scratch *data_scratch_new(const data_source *s)
{
    data_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->img = malloc(DATA_IMAGE_BYTES);
    sc->crop = malloc(DATA_IMAGE_BYTES);
    size_t wsb = s->kind == DATA_SRC_IDX ? data_resize_workspace(s->idx_w, s->idx_h, 1, DATA_SIZE)
                                         : 64;
    sc->ws = malloc(wsb);
    if (!sc->img || !sc->crop || !sc->ws) {
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
    free(sc->crop);
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
