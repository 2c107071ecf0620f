/* prep: `twotower prep SRC OUT`: an ImageNet-style folder (one sub-folder per class,
 * PNG/JPEG) or the Fashion-MNIST IDX files to 256x256x3 uint8 shards, plus meta.bin with
 * class names, the mean image and the RGB PCA of the training pixels. Decoding uses
 * every core; bad files are skipped with one line each and counted; the run fails only
 * when the skipped share passes --max-skip. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "base/base.h"

typedef struct {
    char *path;     /* file, or NULL for an IDX image */
    int label;
    int64_t idx;    /* IDX image index */
    uint64_t order; /* sort key inside a class */
} prep_item;

typedef struct {
    prep_item *v;
    int64_t n, cap;
} item_list;

typedef struct {
    const char *src, *out;
    double val_fraction;
    uint64_t seed;
    int shard_size;
    int threads;
    double max_skip;
    int64_t limit;
    int quiet;
    data_image_limits lim;
    size_t max_file_bytes;
    const char *val_labels;  /* ground truth of a flat val/ folder (ILSVRC-2012) */
    const char *val_synsets; /* the devkit's meta.mat (or ID WNID text) for its IDs */
} prep_opts;

static int list_push(item_list *l, prep_item it)
{
    if (l->n == l->cap) {
        int64_t nc = l->cap ? l->cap * 2 : 1024;
        prep_item *nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv)
            return -1;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = it;
    return 0;
}

static void list_free(item_list *l)
{
    for (int64_t i = 0; i < l->n; i++)
        free(l->v[i].path);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 ||
                   strcasecmp(dot, ".jpeg") == 0);
}

/* Sorted names in dir (no hidden entries); dirs_only selects sub-folders. */
static int list_dir(const char *dir, int dirs_only, char ***names, int64_t *n, char *err,
                    size_t errlen)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return data_fail(err, errlen, "%s: cannot open folder: %s", dir, strerror(errno));
    char **v = NULL;
    int64_t cnt = 0, cap = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (dirs_only) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (!is_dir(path))
                continue;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv)
                goto oom;
            v = nv;
        }
        v[cnt] = strdup(e->d_name);
        if (!v[cnt])
            goto oom;
        cnt++;
    }
    closedir(d);
    if (cnt > 1)
        qsort(v, (size_t)cnt, sizeof *v, cmp_str);
    *names = v;
    *n = cnt;
    return 0;
oom:
    closedir(d);
    for (int64_t i = 0; i < cnt; i++)
        free(v[i]);
    free(v);
    return data_fail(err, errlen, "%s: out of memory listing the folder", dir);
}

static void free_names(char **v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Image files of one class folder into list (stored order: by file name). */
static int add_class_files(item_list *l, const char *cdir, int label, int64_t *ignored,
                           char *err, size_t errlen)
{
    char **f;
    int64_t nf;
    if (list_dir(cdir, 0, &f, &nf, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (int64_t i = 0; i < nf && rc == 0; i++) {
        if (!has_image_ext(f[i])) {
            (*ignored)++;
            continue;
        }
        size_t len = strlen(cdir) + strlen(f[i]) + 2;
        prep_item it = {.path = malloc(len), .label = label, .idx = -1, .order = (uint64_t)i};
        if (!it.path || list_push(l, it) != 0) {
            free(it.path);
            rc = data_fail(err, errlen, "out of memory listing %s", cdir);
            break;
        }
        snprintf(it.path, len, "%s/%s", cdir, f[i]);
    }
    free_names(f, nf);
    return rc;
}

/* 1 when val/ holds image files and no class folders (ILSVRC-2012's layout), 0 when it
 * holds class folders only, -1 (err) when it mixes both. */
static int val_is_flat(const char *val, char *err, size_t errlen)
{
    char **f, **d;
    int64_t nf, nd;
    if (list_dir(val, 0, &f, &nf, err, errlen) != 0) return -1;
    if (list_dir(val, 1, &d, &nd, err, errlen) != 0) {
        free_names(f, nf);
        return -1;
    }
    int64_t images = 0;
    for (int64_t i = 0; i < nf; i++) images += has_image_ext(f[i]);
    free_names(f, nf);
    free_names(d, nd);
    if (images > 0 && nd > 0)
        return data_fail(err, errlen, "%s holds both images (%lld) and class folders (%lld): "
                                      "use one layout", val, (long long)images, (long long)nd);
    return images > 0;
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The images of a flat val/ folder, labelled by the ground truth (--val-labels, or the
 * devkit's or Kaggle's file found in SRC). An image the ground truth does not list stops
 * prep naming it; entries whose image is missing are reported by name and skipped. */
static int add_flat_val(const prep_opts *o, const char *val, char **classes, int nclasses,
                        item_list *l, int64_t *ignored, char *err, size_t errlen)
{
    char truth[4200], syn[4200];
    const char *t = o->val_labels, *s = o->val_synsets;
    if (!t) {
        snprintf(truth, sizeof truth, "%s/LOC_val_solution.csv", o->src);
        if (!is_file(truth))
            snprintf(truth, sizeof truth, "%s/ILSVRC2012_validation_ground_truth.txt", o->src);
        if (!is_file(truth))
            return data_fail(err, errlen, "%s is a flat folder of images: give its ground truth "
                                          "with --val-labels (the devkit's ILSVRC2012_"
                                          "validation_ground_truth.txt with --val-synsets "
                                          "meta.mat, or LOC_val_solution.csv)", val);
        t = truth;
    }
    if (!s) {
        snprintf(syn, sizeof syn, "%s/meta.mat", o->src);
        if (is_file(syn)) s = syn;
    }
    data_val_labels gt;
    if (data_val_labels_load(t, s, classes, nclasses, &gt, err, errlen)) return -1;
    char **f;
    int64_t nf;
    if (list_dir(val, 0, &f, &nf, err, errlen) != 0) {
        data_val_labels_free(&gt);
        return -1;
    }
    int rc = 0;
    int64_t unlisted = 0;
    for (int64_t i = 0; i < nf && rc == 0; i++) {
        if (!has_image_ext(f[i])) {
            (*ignored)++;
            continue;
        }
        int label = data_val_label_of(&gt, f[i]);
        if (label < 0) {
            if (unlisted++ < 10) fprintf(stderr, "prep: %s/%s: not in the ground truth %s\n",
                                         val, f[i], t);
            continue;
        }
        size_t len = strlen(val) + strlen(f[i]) + 2;
        prep_item it = {.path = malloc(len), .label = label, .idx = -1, .order = (uint64_t)i};
        if (!it.path || list_push(l, it) != 0) {
            free(it.path);
            rc = data_fail(err, errlen, "out of memory listing %s", val);
            break;
        }
        snprintf(it.path, len, "%s/%s", val, f[i]);
    }
    free_names(f, nf);
    if (rc == 0 && unlisted)
        rc = data_fail(err, errlen, "%lld image(s) of %s are not in the ground truth %s (the "
                                    "first are named above)", (long long)unlisted, val, t);
    int64_t missing = 0;
    for (size_t k = 0; rc == 0 && k < gt.n; k++)
        if (!gt.seen[k] && missing++ < 10)
            fprintf(stderr, "prep: %s lists %s, which %s does not hold: skipped\n", t,
                    gt.e[k].name, val);
    if (rc == 0 && missing)
        fprintf(stderr, "prep: %lld image(s) listed in %s are missing from %s\n",
                (long long)missing, t, val);
    data_val_labels_free(&gt);
    return rc;
}

static int cmp_order(const void *a, const void *b)
{
    const prep_item *x = a, *y = b;
    if (x->label != y->label)
        return x->label < y->label ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* The seeded split: per class, a permutation from (seed, class) puts the first
 * round(fraction * n) files in val; both splits keep file-name order. */
/* --limit on a folder source: keep `limit` items drawn by seed from the whole list (which
 * is sorted by class, so its first items would all be one class), then back in (class,
 * name) order. */
static void keep_seeded_subset(item_list *l, int64_t limit, uint64_t seed)
{
    if (limit >= l->n) return;
    uint64_t key = base_rng_mix(seed ^ 0x6c696d6974ull /* "limit" */, (uint64_t)l->n);
    for (int64_t i = l->n - 1; i > 0; i--) {
        int64_t j = (int64_t)(((base_rng_mix(key, (uint64_t)i) >> 32) * (uint64_t)(i + 1)) >> 32);
        prep_item t = l->v[i];
        l->v[i] = l->v[j];
        l->v[j] = t;
    }
    for (int64_t i = limit; i < l->n; i++)
        free(l->v[i].path);
    l->n = limit;
    if (l->n > 1)
        qsort(l->v, (size_t)l->n, sizeof *l->v, cmp_order);
}

static int split_by_seed(item_list *all, item_list *train, item_list *val, int classes,
                         double frac, uint64_t seed, char *err, size_t errlen)
{
    int64_t start = 0;
    for (int c = 0; c < classes; c++) {
        int64_t end = start;
        while (end < all->n && all->v[end].label == c)
            end++;
        int64_t n = end - start;
        int64_t nval = (int64_t)llround(frac * (double)n);
        int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
        if (!perm)
            return data_fail(err, errlen, "out of memory for the split");
        for (int64_t i = 0; i < n; i++)
            perm[i] = i;
        uint64_t key = base_rng_mix(seed ^ 0x73706c6974ull /* "split" */, (uint64_t)c);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(((base_rng_mix(key, (uint64_t)i) >> 32) * (uint64_t)(i + 1)) >> 32);
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        char *isval = calloc((size_t)(n > 0 ? n : 1), 1);
        if (!isval) {
            free(perm);
            return data_fail(err, errlen, "out of memory for the split");
        }
        for (int64_t i = 0; i < nval; i++)
            isval[perm[i]] = 1;
        for (int64_t i = 0; i < n; i++) {
            prep_item it = all->v[start + i];
            all->v[start + i].path = NULL; /* ownership moves */
            if (list_push(isval[i] ? val : train, it) != 0) {
                free(it.path);
                free(perm);
                free(isval);
                return data_fail(err, errlen, "out of memory for the split");
            }
        }
        free(perm);
        free(isval);
        start = end;
    }
    return 0;
}

/* ---- shard writer ------------------------------------------------------------------ */

typedef struct {
    const char *out, *split;
    int classes, shard_size;
    int open;            /* a shard is being written to out */
    base_out file;       /* "<OUT>/<split>-NNNNN.tts", crash-safe (tmp, fsync, rename) */
    uint32_t crc;
    int32_t *labels;
    int64_t count, first, written;
    uint32_t index;
    uint32_t *crcs;       /* (max_shards) payload crc32 of each closed shard, for meta.bin */
    uint32_t max_shards;
} shard_writer;

static int shard_write_failed(shard_writer *w, char *err, size_t errlen)
{
    int rc = data_fail(err, errlen, "%s: write failed: %s", w->file.tmp,
                       strerror(w->file.failed));
    base_out_abort(&w->file);
    w->open = 0;
    return rc;
}

static int shard_close(shard_writer *w, char *err, size_t errlen)
{
    if (!w->open)
        return 0;
    uint8_t *lab = malloc((size_t)w->count * 4 + 4);
    if (!lab)
        return data_fail(err, errlen, "%s: out of memory", w->file.tmp);
    for (int64_t i = 0; i < w->count; i++)
        base_put_le32(lab + 4 * i, (uint32_t)w->labels[i]);
    w->crc = data_crc32(w->crc, lab, (size_t)w->count * 4);
    base_out_write(&w->file, lab, (size_t)w->count * 4);
    free(lab);
    /* the header holds the count and the checksum: written last, over the zeros */
    uint8_t hdr[DATA_SHARD_HEADER];
    data_shard_header h = {.classes = (uint32_t)w->classes, .count = (uint64_t)w->count,
                           .first = (uint64_t)w->first, .index = w->index,
                           .payload_crc = w->crc};
    snprintf(h.split, sizeof h.split, "%s", w->split);
    data_shard_header_encode(hdr, &h);
    if (base_out_pwrite(&w->file, hdr, sizeof hdr, 0) != 0)
        return shard_write_failed(w, err, errlen);
    w->open = 0;
    if (base_out_commit(&w->file, err, errlen) != 0)
        return -1;
    if (w->index >= w->max_shards) /* cannot happen: max_shards covers every item */
        return data_fail(err, errlen, "%s: more shards than the %u planned", w->file.path,
                         w->max_shards);
    w->crcs[w->index] = w->crc;
    w->first += w->count;
    w->count = 0;
    w->index++;
    return 0;
}

static int shard_add(shard_writer *w, const uint8_t *img, int32_t label, char *err,
                     size_t errlen)
{
    if (!w->open) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s-%05u.tts", w->out, w->split, w->index);
        if (base_out_open(&w->file, path, "shard", err, errlen) != 0)
            return -1;
        w->open = 1;
        static const uint8_t zero[DATA_SHARD_HEADER];
        base_out_write(&w->file, zero, sizeof zero);
        w->crc = 0;
    }
    if (base_out_write(&w->file, img, DATA_IMAGE_BYTES) != 0)
        return shard_write_failed(w, err, errlen);
    w->crc = data_crc32(w->crc, img, DATA_IMAGE_BYTES);
    w->labels[w->count++] = label;
    w->written++;
    if (w->count == w->shard_size)
        return shard_close(w, err, errlen);
    return 0;
}

/* ---- parallel decode --------------------------------------------------------------- */

typedef struct {
    const prep_opts *o;
    const prep_item *items;  /* this chunk */
    int n;
    uint8_t *imgs;           /* (n, 256, 256, 3) */
    char (*why)[256];        /* (n) empty when the image is good */
    const uint8_t *idx_pixels;
    int idx_h, idx_w;
    int stats;               /* accumulate statistics (train split) */
    int next;                /* atomic work counter */
} chunk_job;

typedef struct {
    chunk_job *job;
    uint64_t *mean_sum;      /* (256*256*3) this thread's sums */
    data_pixel_sums px;
    void *ws;
    size_t ws_bytes;
} worker_state;

static void decode_one(chunk_job *j, worker_state *st, int i)
{
    const prep_item *it = &j->items[i];
    uint8_t *dst = j->imgs + (size_t)i * DATA_IMAGE_BYTES;
    j->why[i][0] = 0;
    if (!it->path) {
        data_resize_center(dst, DATA_SIZE,
                           j->idx_pixels + (size_t)it->idx * j->idx_h * j->idx_w, j->idx_w,
                           j->idx_h, 1, st->ws);
    } else {
        uint8_t *buf;
        size_t n;
        char e[4400];
        if (data_read_file(it->path, "image", j->o->max_file_bytes, &buf, &n, e, sizeof e) != 0) {
            /* the skip line names the file already: keep the reason after "image PATH: " */
            size_t pre = strlen("image ") + strlen(it->path) + 2;
            const char *r = strlen(e) > pre ? e + pre : e;
            size_t l = strnlen(r, 255);
            memcpy(j->why[i], r, l);
            j->why[i][l] = 0;
            return;
        }
        int rc = data_image_decode(buf, n, &j->o->lim, dst, j->why[i], 256);
        free(buf);
        if (rc != 0) {
            if (!j->why[i][0])
                snprintf(j->why[i], 256, "cannot decode");
            return;
        }
    }
    if (j->stats) {
        uint64_t *m = st->mean_sum;
        for (size_t k = 0; k < DATA_IMAGE_BYTES; k++)
            m[k] += dst[k];
        data_pixel_sums_add_image(&st->px, dst, (size_t)DATA_SIZE * DATA_SIZE);
    }
}

static void *decode_worker(void *arg)
{
    worker_state *st = arg;
    chunk_job *j = st->job;
    for (;;) {
        int i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->n)
            break;
        decode_one(j, st, i);
    }
    return NULL;
}

/* ---- the run ------------------------------------------------------------------------ */

typedef struct {
    int64_t written, skipped;
    uint32_t *crcs;   /* (shards) payload crc32 of each shard written (malloc'd) */
    uint32_t shards;
} split_result;

static void progress(const prep_opts *o, const char *split, int64_t done, int64_t total,
                     double t0, int *last_decile, double *last_draw)
{
    if (o->quiet)
        return;
    double t = base_now();
    double rate = done / (t - t0 > 1e-9 ? t - t0 : 1e-9);
    if (isatty(2)) {
        if (t - *last_draw < 0.1 && done < total)
            return;
        *last_draw = t;
        int w = 30, f = total ? (int)(w * done / total) : w;
        char bar[64];
        for (int k = 0; k < w; k++)
            bar[k] = k < f ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\rprep %-5s [%s] %3d%% %lld/%lld %.0f img/s", split, bar,
                total ? (int)(100 * done / total) : 100, (long long)done, (long long)total, rate);
        if (done == total)
            fputc('\n', stderr);
    } else {
        int dec = total ? (int)(10 * done / total) : 10;
        if (dec > *last_decile) {
            *last_decile = dec;
            fprintf(stderr, "prep %s: %d%% (%lld/%lld, %.0f img/s)\n", split, dec * 10,
                    (long long)done, (long long)total, rate);
        }
    }
}

static int run_split(const prep_opts *o, const char *split, const item_list *items,
                     int classes, const uint8_t *idx_pixels, int idx_h, int idx_w,
                     uint64_t *mean_sum, data_pixel_sums *px, split_result *res, char *err,
                     size_t errlen)
{
    memset(res, 0, sizeof *res);
    int nth = o->threads;
    int chunk = nth * 16 < 64 ? 64 : nth * 16;
    if (chunk > 512)
        chunk = 512;
    shard_writer w = {.out = o->out, .split = split, .classes = classes,
                      .shard_size = o->shard_size};
    w.labels = malloc((size_t)o->shard_size * sizeof *w.labels);
    w.max_shards = (uint32_t)((items->n + o->shard_size - 1) / o->shard_size);
    w.crcs = malloc(((size_t)w.max_shards + 1) * sizeof *w.crcs);
    uint8_t *imgs = malloc((size_t)chunk * DATA_IMAGE_BYTES);
    char(*why)[256] = malloc((size_t)chunk * sizeof *why);
    worker_state *ws = calloc((size_t)nth, sizeof *ws);
    pthread_t *th = calloc((size_t)nth, sizeof *th);
    int rc = 0;
    if (!w.labels || !w.crcs || !imgs || !why || !ws || !th) {
        rc = data_fail(err, errlen, "out of memory for %d image buffers", chunk);
        goto done;
    }
    int stats = mean_sum != NULL;
    for (int t = 0; t < nth; t++) {
        if (stats && !(ws[t].mean_sum = calloc(DATA_IMAGE_BYTES, sizeof(uint64_t)))) {
            rc = data_fail(err, errlen, "out of memory for the mean sums");
            goto done;
        }
        if (idx_pixels) {
            ws[t].ws = malloc(data_resize_workspace(idx_w, idx_h, 1, DATA_SIZE));
            if (!ws[t].ws) {
                rc = data_fail(err, errlen, "out of memory");
                goto done;
            }
        }
    }
    double t0 = base_now(), last_draw = 0;
    int last_decile = -1;
    progress(o, split, 0, items->n, t0, &last_decile, &last_draw);
    for (int64_t base = 0; base < items->n && rc == 0; base += chunk) {
        int n = items->n - base < chunk ? (int)(items->n - base) : chunk;
        chunk_job job = {.o = o, .items = items->v + base, .n = n, .imgs = imgs, .why = why,
                         .idx_pixels = idx_pixels, .idx_h = idx_h, .idx_w = idx_w,
                         .stats = stats, .next = 0};
        int started = 0;
        for (int t = 1; t < nth; t++) { /* this thread is worker 0 */
            ws[t].job = &job;
            if (pthread_create(&th[t], NULL, decode_worker, &ws[t]) != 0)
                break;
            started = t;
        }
        ws[0].job = &job;
        decode_worker(&ws[0]);
        for (int t = 1; t <= started; t++)
            pthread_join(th[t], NULL);
        /* in order, so output and shards do not depend on thread timing */
        for (int i = 0; i < n && rc == 0; i++) {
            if (why[i][0]) {
                res->skipped++;
                fprintf(stderr, "prep: skipped %s: %s\n",
                        items->v[base + i].path ? items->v[base + i].path : "(IDX image)",
                        why[i]);
                continue;
            }
            rc = shard_add(&w, imgs + (size_t)i * DATA_IMAGE_BYTES, items->v[base + i].label,
                           err, errlen);
            res->written++;
        }
        progress(o, split, base + n, items->n, t0, &last_decile, &last_draw);
    }
    if (rc == 0)
        rc = shard_close(&w, err, errlen);
    if (rc == 0 && stats) {
        for (int t = 0; t < nth; t++) {
            for (size_t k = 0; k < DATA_IMAGE_BYTES; k++)
                mean_sum[k] += ws[t].mean_sum[k];
            data_pixel_sums_merge(px, &ws[t].px);
        }
    }
done:
    if (w.open)
        base_out_abort(&w.file);
    if (ws)
        for (int t = 0; t < nth; t++) {
            free(ws[t].mean_sum);
            free(ws[t].ws);
        }
    free(ws);
    free(th);
    free(w.labels);
    if (rc == 0) {
        res->crcs = w.crcs;
        res->shards = w.index;
    } else {
        free(w.crcs);
    }
    free(imgs);
    free(why);
    return rc;
}

/* What prep's flag table writes: the options, and two flags that are not options. */
typedef struct {
    prep_opts o;
    int max_file_mb; /* becomes o.max_file_bytes */
    int verify;
} prep_cli;

static void prep_defaults(void *p)
{
    prep_cli *c = p;
    *c = (prep_cli){.o = {.val_fraction = 0.1, .seed = 1, .shard_size = 1024, .threads = 0,
                          .max_skip = 0.01, .limit = -1, .quiet = 0,
                          .lim = data_image_limits_default()},
                    .max_file_mb = 64};
}

static const base_flag prep_flags[] = {
    {BASE_FLAG_F64("val-fraction", prep_cli, o.val_fraction, 0, 0.999, "F",
                   "share of each class put in val when SRC has no train/ val/\n"
                   "folders; 0: no val split")},
    {BASE_FLAG_U64("seed", prep_cli, o.seed, 9007199254740992u, "N", "seed of that split")},
    {BASE_FLAG_INT("shard-size", prep_cli, o.shard_size, 1, DATA_MAX_SHARD_IMAGES, "N",
                   "images per shard (1024 images: about 192 MiB)")},
    {BASE_FLAG_INT("threads", prep_cli, o.threads, 1, 256, "N", "decoding threads"),
     .deflt = "every core"},
    {BASE_FLAG_F64("max-skip", prep_cli, o.max_skip, 0, 1, "F",
                   "fail when more than this share of images is skipped")},
    {BASE_FLAG_I64("limit", prep_cli, o.limit, 1, 1000000000000, "N",
                   "keep at most N images per split (quick runs): the first N\n"
                   "of Fashion-MNIST's files, N drawn by --seed from a folder"),
     .deflt = "all"},
    {BASE_FLAG_I64("max-pixels", prep_cli, o.lim.max_pixels, 1, 10000000000, "N",
                   "largest accepted image, in pixels")},
    {BASE_FLAG_INT("max-file-mb", prep_cli, max_file_mb, 1, 65536, "N",
                   "largest accepted file, in MiB")},
    {BASE_FLAG_STR("val-labels", prep_cli, o.val_labels, "FILE",
                   "ground truth of a flat val/ folder (ILSVRC-2012): the devkit's\n"
                   "ILSVRC2012_validation_ground_truth.txt, LOC_val_solution.csv,\n"
                   "or one WNID a line"),
     .deflt = "SRC/LOC_val_solution.csv or SRC/ILSVRC2012_validation_ground_truth.txt"},
    {BASE_FLAG_STR("val-synsets", prep_cli, o.val_synsets, "FILE",
                   "the devkit's data/meta.mat (or 'ID WNID' lines) for the\n"
                   "ground truth's ILSVRC2012_IDs"),
     .deflt = "SRC/meta.mat"},
    {BASE_FLAG_BOOL("quiet", prep_cli, o.quiet, "no progress bar")},
    {BASE_FLAG_BOOL("verify", prep_cli, verify,
                    "with OUT alone: re-read every shard, check every checksum")},
    {0}};

static const base_flags_cmd prep_cmd = {
    .name = "prep",
    .synopsis = "SRC OUT [flags]\n       twotower prep --verify OUT",
    .about = "  SRC: a folder with one sub-folder per class (PNG/JPEG files), or with train/ and\n"
             "       val/ each holding such class folders, or train/ with class folders and a\n"
             "       flat val/ with its ground truth (ILSVRC-2012: --val-labels), or the\n"
             "       Fashion-MNIST IDX .gz files\n"
             "  OUT: gets train-NNNNN.tts, val-NNNNN.tts shards and meta.bin (+ meta.txt);\n"
             "       an earlier prep's are removed first, so OUT may not be SRC or inside it\n",
    .flags = prep_flags,
    .min_pos = 1,
    .max_pos = 2,
    .opts_size = sizeof(prep_cli),
    .defaults = prep_defaults};

static int write_meta(const prep_opts *o, char **names, int classes, const split_result *rt,
                      const split_result *rv, const uint64_t *mean_sum,
                      const data_pixel_sums *px, char *err, size_t errlen)
{
    int64_t ntrain = rt->written, nval = rv->written;
    data_meta m;
    memset(&m, 0, sizeof m);
    m.classes = classes;
    m.names = names;
    m.shard_size = (uint32_t)o->shard_size;
    m.n_train = (uint64_t)ntrain;
    m.n_val = (uint64_t)nval;
    m.train_shards = (uint32_t)((ntrain + o->shard_size - 1) / o->shard_size);
    m.val_shards = (uint32_t)((nval + o->shard_size - 1) / o->shard_size);
    m.seed = o->seed;
    if (m.train_shards != rt->shards || m.val_shards != rv->shards)
        return data_fail(err, errlen, "%s: wrote %u train and %u val shards, expected %u and %u",
                         o->out, rt->shards, rv->shards, m.train_shards, m.val_shards);
    m.shard_crc = malloc(((size_t)m.train_shards + m.val_shards + 1) * sizeof *m.shard_crc);
    if (!m.shard_crc)
        return data_fail(err, errlen, "out of memory for the shard checksums");
    for (uint32_t i = 0; i < m.train_shards; i++)
        m.shard_crc[i] = rt->crcs[i];
    for (uint32_t i = 0; i < m.val_shards; i++)
        m.shard_crc[m.train_shards + i] = rv->crcs[i];
    data_pca_from_sums(&m.pca, px);
    m.mean = malloc(DATA_IMAGE_BYTES * sizeof(float));
    if (!m.mean) {
        free(m.shard_crc);
        return data_fail(err, errlen, "out of memory for the mean image");
    }
    for (size_t k = 0; k < DATA_IMAGE_BYTES; k++)
        m.mean[k] = (float)((double)mean_sum[k] / (double)ntrain);
    uint8_t *buf;
    size_t n;
    int rc = data_meta_encode(&m, &buf, &n, err, errlen);
    free(m.mean);
    free(m.shard_crc);
    if (rc != 0)
        return -1;
    char fin[4096];
    snprintf(fin, sizeof fin, "%s/meta.bin", o->out);
    rc = base_write_file(fin, "meta", buf, n, err, errlen);
    free(buf);
    if (rc != 0)
        return -1;
    snprintf(fin, sizeof fin, "%s/meta.txt", o->out);
    base_out f;
    if (base_out_open(&f, fin, "meta", err, errlen) != 0)
        return -1;
    base_out_printf(&f, "# twotower prep of %s (meta.bin holds the same in binary)\n", o->src);
    base_out_printf(&f, "train %lld images in %u shards\nval %lld images in %u shards\n",
                    (long long)ntrain, m.train_shards, (long long)nval, m.val_shards);
    base_out_printf(&f, "rgb_mean %.4f %.4f %.4f\n", m.pca.rgb_mean[0], m.pca.rgb_mean[1],
                    m.pca.rgb_mean[2]);
    base_out_printf(&f, "eigval %.4f %.4f %.4f\n", m.pca.eigval[0], m.pca.eigval[1],
                    m.pca.eigval[2]);
    for (int r = 0; r < 3; r++)
        base_out_printf(&f, "eigvec_row%d %.6f %.6f %.6f\n", r, m.pca.eigvec[3 * r],
                        m.pca.eigvec[3 * r + 1], m.pca.eigvec[3 * r + 2]);
    base_out_printf(&f, "classes %d\n", classes);
    for (int c = 0; c < classes; c++)
        base_out_printf(&f, "%d %s\n", c, names[c]);
    return base_out_commit(&f, err, errlen);
}

/* `prep --verify OUT`: opens both splits (meta.bin, headers, sizes, labels) and re-reads
 * every shard against its payload checksum, which the loader skips at start-up (reading
 * all of ImageNet would take minutes). 0 when everything matches, 1 naming the first file
 * that does not. */
static int verify_output(const char *out)
{
    char err[1024];
    double t0 = base_now();
    int64_t count[2] = {0, 0};
    static const char *const splits[2] = {"train", "val"};
    data_meta m;
    if (data_meta_load(out, &m, err, sizeof err) != 0) {
        fprintf(stderr, "prep --verify: %s\n", err);
        return 1;
    }
    uint64_t expect[2] = {m.n_train, m.n_val};
    int rc = data_shards_check_listed(out, &m, err, sizeof err);
    data_meta_free(&m);
    if (rc != 0) {
        fprintf(stderr, "prep --verify: %s\n", err);
        return 1;
    }
    for (int s = 0; s < 2; s++) {
        if (expect[s] == 0) continue; /* e.g. --val-fraction 0: no val shards */
        data_source *src = data_open_shards(out, splits[s], err, sizeof err);
        if (!src || data_shards_verify(out, splits[s], err, sizeof err) != 0) {
            if (src) data_close(src);
            fprintf(stderr, "prep --verify: %s\n", err);
            return 1;
        }
        count[s] = data_count(src);
        data_close(src);
    }
    fprintf(stderr, "prep --verify: %s: %lld train + %lld val images, every header and "
                    "checksum matches meta.bin, no stray shards (%.1f s)\n",
            out, (long long)count[0], (long long)count[1], base_now() - t0);
    return 0;
}

/* Removes every file in out named like a shard ("train-N.tts", "val-N.tts"). 0 or -1. */
static int remove_old_shards(const char *out, char *err, size_t errlen)
{
    DIR *d = opendir(out);
    if (!d)
        return data_fail(err, errlen, "%s: cannot list the folder: %s", out, strerror(errno));
    int rc = 0;
    struct dirent *e;
    char path[4400];
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (data_shard_name_index(e->d_name, "train") < 0 &&
            data_shard_name_index(e->d_name, "val") < 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", out, e->d_name);
        if (unlink(path) != 0)
            rc = data_fail(err, errlen, "%s: cannot remove the previous run's shard: %s", path,
                           strerror(errno));
    }
    closedir(d);
    return rc;
}

/* The name is there (a file, a FIFO, even a dangling or looping link): it is meant as
 * input, so it is opened and refused with its own reason instead of being passed over. */
static int name_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* OUT before any work: a folder (or a name to create) that is neither SRC nor inside it,
 * since prep removes an earlier prep's shards and meta.bin from OUT and would mix its
 * output with its input; meta.bin and meta.txt there regular files or absent. 0, or -1
 * after a message. */
static int check_out(const char *src, const char *out)
{
    char err[4096 + 512];
    struct stat st;
    if (stat(out, &st) == 0 && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "prep: OUT %s exists and is not a folder\n", out);
        return -1;
    }
    int inside = base_path_inside(out, src);
    if (inside != 0) {
        fprintf(stderr, "prep: OUT %s %s SRC %s: prep writes shards and meta.bin into OUT and "
                        "removes an earlier prep's there, so OUT must lie outside its input\n",
                out, inside < 0 ? "cannot be resolved against" : "is or lies inside", src);
        return -1;
    }
    static const char *const own[] = {"meta.bin", "meta.txt"};
    for (int i = 0; i < 2; i++) {
        char p[4096 + 16];
        snprintf(p, sizeof p, "%s/%s", out, own[i]);
        if (base_check_output(p, "OUT file", NULL, 0, NULL, 0, err, sizeof err) != 0) {
            fprintf(stderr, "prep: %s\n", err);
            return -1;
        }
    }
    return 0;
}

int data_prep_main(int argc, char **argv)
{
    prep_cli cli;
    base_flags_out fo;
    int frc = base_flags_cli(&prep_cmd, &cli, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    if (fo.npos != (cli.verify ? 1 : 2)) {
        fprintf(stderr, "twotower prep: %s (see twotower prep --help)\n",
                cli.verify ? "--verify takes OUT alone" : "expected SRC OUT (or --verify OUT)");
        return 2;
    }
    if (cli.verify) return verify_output(fo.pos[0]);
    prep_opts o = cli.o;
    o.max_file_bytes = (size_t)cli.max_file_mb << 20;
    o.src = fo.pos[0];
    o.out = fo.pos[1];
    if (check_out(o.src, o.out) != 0)
        return 2;
    if (o.threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = nc > 0 ? (int)nc : 1;
    }
    char err[1024];
    double t0 = base_now();
    item_list train = {0}, val = {0}, all = {0};
    char **classes = NULL;
    int64_t nclasses = 0, ignored = 0;
    uint8_t *idx_train = NULL, *idx_val = NULL;
    int32_t *lab_train = NULL, *lab_val = NULL;
    int idx_h = 0, idx_w = 0;
    int rc = 1;
    uint64_t *mean_sum = NULL;
    split_result rt = {0}, rv = {0}; /* up here: every goto below reaches their free */
    char p1[4096], p2[4096];

    snprintf(p1, sizeof p1, "%s/train-images-idx3-ubyte.gz", o.src);
    if (name_exists(p1)) {
        /* Fashion-MNIST: train-* is the train split, t10k-* (if present) val */
        int64_t n;
        snprintf(p2, sizeof p2, "%s/train-labels-idx1-ubyte.gz", o.src);
        if (data_idx_load(p1, p2, DATA_IDX_CLASSES, &idx_train, &lab_train, &n, &idx_h, &idx_w,
                          err, sizeof err) != 0)
            goto fail;
        for (int64_t i = 0; i < n; i++)
            if (list_push(&train, (prep_item){.label = lab_train[i], .idx = i}))
                goto oom;
        snprintf(p1, sizeof p1, "%s/t10k-images-idx3-ubyte.gz", o.src);
        snprintf(p2, sizeof p2, "%s/t10k-labels-idx1-ubyte.gz", o.src);
        if (name_exists(p1)) {
            int vh, vw;
            if (data_idx_load(p1, p2, DATA_IDX_CLASSES, &idx_val, &lab_val, &n, &vh, &vw, err,
                              sizeof err) != 0)
                goto fail;
            if (vh != idx_h || vw != idx_w) {
                data_fail(err, sizeof err, "%s: %dx%d images, train has %dx%d", p1, vh, vw, idx_h,
                         idx_w);
                goto fail;
            }
            for (int64_t i = 0; i < n; i++)
                if (list_push(&val, (prep_item){.label = lab_val[i], .idx = i}))
                    goto oom;
        }
        classes = calloc(10, sizeof *classes);
        nclasses = classes ? 10 : 0;
        int ok = classes != NULL;
        for (int c = 0; ok && c < 10; c++)
            ok = (classes[c] = strdup(data_fashion_names[c])) != NULL;
        if (!ok) {
            data_fail(err, sizeof err, "out of memory");
            goto fail;
        }
    } else {
        snprintf(p1, sizeof p1, "%s/train", o.src);
        snprintf(p2, sizeof p2, "%s/val", o.src);
        int folders = is_dir(p1) && is_dir(p2);
        if (list_dir(folders ? p1 : o.src, 1, &classes, &nclasses, err, sizeof err) != 0)
            goto fail;
        if (nclasses == 0) {
            data_fail(err, sizeof err, "%s: no class sub-folders and no IDX files",
                     folders ? p1 : o.src);
            goto fail;
        }
        if (nclasses > DATA_MAX_CLASSES) {
            data_fail(err, sizeof err, "%s: %lld classes, at most %d", o.src, (long long)nclasses,
                     DATA_MAX_CLASSES);
            goto fail;
        }
        int flat_val = 0;
        if (folders && (flat_val = val_is_flat(p2, err, sizeof err)) < 0)
            goto fail;
        if (!flat_val && (o.val_labels || o.val_synsets)) {
            data_fail(err, sizeof err, "--val-labels/--val-synsets are for a flat val/ folder "
                                       "(images, no class folders); %s is not one",
                      folders ? p2 : o.src);
            goto fail;
        }
        for (int64_t c = 0; c < nclasses; c++) {
            if (strlen(classes[c]) > DATA_MAX_NAME) {
                data_fail(err, sizeof err, "class folder name %.40s... is over %d bytes",
                         classes[c], DATA_MAX_NAME);
                goto fail;
            }
            char cdir[4096];
            if (snprintf(cdir, sizeof cdir, "%s/%s", folders ? p1 : o.src, classes[c]) >=
                (int)sizeof cdir) {
                data_fail(err, sizeof err, "%s: path too long", classes[c]);
                goto fail;
            }
            if (add_class_files(folders ? &train : &all, cdir, (int)c, &ignored, err,
                                sizeof err) != 0)
                goto fail;
            if (folders && !flat_val) {
                if (snprintf(cdir, sizeof cdir, "%s/%s", p2, classes[c]) >= (int)sizeof cdir) {
                    data_fail(err, sizeof err, "%s: path too long", classes[c]);
                    goto fail;
                }
                if (is_dir(cdir) &&
                    add_class_files(&val, cdir, (int)c, &ignored, err, sizeof err) != 0)
                    goto fail;
            }
        }
        if (flat_val) {
            if (add_flat_val(&o, p2, classes, (int)nclasses, &val, &ignored, err, sizeof err))
                goto fail;
        } else if (folders) {
            char **vc;
            int64_t nvc;
            if (list_dir(p2, 1, &vc, &nvc, err, sizeof err) != 0)
                goto fail;
            for (int64_t i = 0; i < nvc; i++) {
                void *hit = bsearch(&vc[i], classes, (size_t)nclasses, sizeof *classes, cmp_str);
                if (!hit) {
                    data_fail(err, sizeof err, "%s/%s: class not in %s", p2, vc[i], p1);
                    free_names(vc, nvc);
                    goto fail;
                }
            }
            free_names(vc, nvc);
        } else if (split_by_seed(&all, &train, &val, (int)nclasses, o.val_fraction, o.seed, err,
                                 sizeof err) != 0) {
            goto fail;
        }
        if (train.n > 1)
            qsort(train.v, (size_t)train.n, sizeof *train.v, cmp_order);
        if (val.n > 1)
            qsort(val.v, (size_t)val.n, sizeof *val.v, cmp_order);
    }
    if (o.limit > 0 && idx_train) { /* IDX: the file's own order, already mixed */
        train.n = train.n < o.limit ? train.n : o.limit;
        val.n = val.n < o.limit ? val.n : o.limit;
    } else if (o.limit > 0) {
        keep_seeded_subset(&train, o.limit, o.seed);
        keep_seeded_subset(&val, o.limit, o.seed + 1);
    }
    if (train.n == 0) {
        data_fail(err, sizeof err, "%s: no training images found", o.src);
        goto fail;
    }
    if (mkdir(o.out, 0755) != 0 && errno != EEXIST) {
        data_fail(err, sizeof err, "%s: cannot create: %s", o.out, strerror(errno));
        goto fail;
    }
    /* meta.bin is what makes OUT a dataset, and it is written last: remove an earlier
     * run's now, so that if this run stops half way the folder is refused as incomplete
     * instead of pairing the old mean, PCA and counts with new shards */
    {
        char meta[4200];
        snprintf(meta, sizeof meta, "%s/meta.bin", o.out);
        if (unlink(meta) != 0 && errno != ENOENT) {
            data_fail(err, sizeof err, "%s: cannot remove the previous run's file: %s", meta,
                      strerror(errno));
            goto fail;
        }
        /* and its shards: one this run does not overwrite (the earlier run had more
         * images) would be a stray shard, which the loader refuses */
        if (remove_old_shards(o.out, err, sizeof err) != 0)
            goto fail;
    }
    if (!o.quiet)
        fprintf(stderr, "prep: %s: %lld classes, %lld train + %lld val images, %d threads\n",
                o.src, (long long)nclasses, (long long)train.n, (long long)val.n, o.threads);
    mean_sum = calloc(DATA_IMAGE_BYTES, sizeof *mean_sum);
    if (!mean_sum) {
        data_fail(err, sizeof err, "out of memory");
        goto fail;
    }
    data_pixel_sums px;
    memset(&px, 0, sizeof px);
    if (run_split(&o, "train", &train, (int)nclasses, idx_train, idx_h, idx_w, mean_sum, &px,
                  &rt, err, sizeof err) != 0)
        goto fail;
    if (val.n > 0 && run_split(&o, "val", &val, (int)nclasses, idx_val, idx_h, idx_w, NULL,
                               NULL, &rv, err, sizeof err) != 0)
        goto fail;
    double el = base_now() - t0;
    int64_t seen = rt.written + rt.skipped + rv.written + rv.skipped;
    int64_t skipped = rt.skipped + rv.skipped;
    double share = seen ? (double)skipped / (double)seen : 0;
    fprintf(stderr,
            "prep: %lld train + %lld val images written, %lld skipped (%.2f%%), %lld files "
            "without an image extension ignored; %.1f s, %.0f images/s\n",
            (long long)rt.written, (long long)rv.written, (long long)skipped, 100 * share,
            (long long)ignored, el, seen / (el > 1e-9 ? el : 1e-9));
    if (share > o.max_skip) {
        data_fail(err, sizeof err,
                 "%.2f%% of the images were skipped, over --max-skip %.2f%%: meta.bin not written",
                 100 * share, 100 * o.max_skip);
        goto fail;
    }
    if (rt.written == 0) {
        data_fail(err, sizeof err, "every training image was skipped");
        goto fail;
    }
    if (write_meta(&o, classes, (int)nclasses, &rt, &rv, mean_sum, &px, err, sizeof err) != 0)
        goto fail;
    rc = 0;
    goto out;
oom:
    data_fail(err, sizeof err, "%s: out of memory listing the IDX images", o.src);
fail:
    fprintf(stderr, "prep: %s\n", err);
    rc = 1;
out:
    list_free(&train);
    list_free(&val);
    list_free(&all);
    free_names(classes, nclasses);
    free(idx_train);
    free(idx_val);
    free(lab_train);
    free(lab_val);
    free(mean_sum);
    free(rt.crcs);
    free(rv.crcs);
    return rc;
}
