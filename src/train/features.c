/* features.c: `twotower features` and `twotower neighbours`, the data of the paper's
 * Figure 4. Both run a checkpoint's net in test mode over a split in the evaluation's
 * batches (the trainer's train_eval_batches: center crop, mean subtracted) and read one
 * layer's activations (model_get_activations). features streams them into a safetensors
 * file; neighbours keeps, for a few query images, the running six nearest training images
 * by Euclidean distance, streaming the training set, and draws the rows. Neither holds more
 * than one batch of images or activations of the split. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "train/train.h"

#define FEAT_PROGRESS_S 10.0 /* seconds between progress lines */

/* ---- a checkpoint's net and the layer read ------------------------------------------ */

typedef struct {
    model m;
    int model_open;
    train_ckpt_meta meta;
    char file[4096];        /* the checkpoint file */
    int layer;              /* the row read */
    size_t dim;             /* model_layer_units of it */
    train_eval_batches eb;
    int eb_open;
    float *acts;            /* (B, dim): the last batch's activations */
} feat_net;

static void feat_net_close(feat_net *f)
{
    if (f->eb_open) train_eval_batches_free(&f->eb);
    if (f->model_open) model_free(&f->m);
    free(f->acts);
    f->eb_open = f->model_open = 0;
    f->acts = NULL;
}

/* Opens the net of ckpt at batch `batch` (0: the checkpoint's) on place and finds the row
 * called layer_name. 0; 1 with err (a bad checkpoint, no memory); 2 with err (a --layer the
 * net lacks, a net the data path cannot feed). */
static int feat_net_open(feat_net *f, const char *ckpt, int batch, const model_placement *place,
                         const char *layer_name, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    if (train_ckpt_open_model(ckpt, batch, place, &f->m, &f->meta, f->file, sizeof f->file,
                              err, errlen))
        return 1;
    f->model_open = 1;
    const tower_plan *p = &f->m.plan;
    f->layer = -1;
    char names[TOWER_MAX_LAYERS * 18] = "";
    for (int l = 0; l < p->n_layers; l++) {
        if (!strcmp(tower_plan_row(p, l)->name, layer_name)) f->layer = l;
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", l ? ", " : "",
                 tower_plan_row(p, l)->name);
    }
    if (f->layer < 0) {
        base_errf(err, errlen, "--layer %s: the net %s of %s has no such layer (its layers: %s)",
                  layer_name, tower_config_net(&p->cfg)->name, f->file, names);
        feat_net_close(f);
        return 2;
    }
    if (p->cfg.in_ch != 3 && p->cfg.in_ch != 1) {
        base_errf(err, errlen, "%s: the net reads %d input channels; the data path gives 3 "
                  "(or 1, their mean)", f->file, p->cfg.in_ch);
        feat_net_close(f);
        return 2;
    }
    f->dim = model_layer_units(&f->m, f->layer);
    /* the crops as the run trained: --downsample F takes F*S pixels, averaged down */
    int F = f->meta.downsample > 0 ? f->meta.downsample : 1;
    if ((long)F * p->cfg.in_size > DATA_SIZE) {
        base_errf(err, errlen, "%s: the net takes crops of %d x %d pixels (--downsample %d); "
                  "the stored images are %d", f->file, F * p->cfg.in_size, F * p->cfg.in_size,
                  F, DATA_SIZE);
        feat_net_close(f);
        return 2;
    }
    if (train_eval_batches_init(&f->eb, &f->m, F, err, errlen)) {
        feat_net_close(f);
        return 1;
    }
    f->eb_open = 1;
    if (!(f->acts = malloc(sizeof(float) * f->dim * (size_t)p->cfg.batch))) {
        base_errf(err, errlen, "out of memory for a batch of %zu activations", f->dim);
        feat_net_close(f);
        return 1;
    }
    return 0;
}

/* The activations of images [start, start + k) of src into f->acts (k rows), their labels
 * in f->eb.labels. 0, or -1 with err. */
static int feat_net_batch(feat_net *f, data_source *src, int64_t start, int k, char *err,
                          size_t errlen)
{
    if (train_eval_batches_load(&f->eb, &f->m, src, start, k, DATA_VIEW_CENTER, err, errlen))
        return -1;
    model_forward(&f->m, 0);
    if (f->m.failed) {
        base_errf(err, errlen, "the forward failed: %s", f->m.error);
        return -1;
    }
    return model_get_activations(&f->m, f->layer, f->acts, err, errlen);
}

/* "layer fc7 (2 x 2048 units after relu)" for messages */
static void feat_describe(const feat_net *f, char *buf, size_t n)
{
    const tower_layer_shape *L = &f->m.plan.layer[f->layer];
    const char *act = L->act == TOWER_ACT_RELU ? "after relu"
                      : L->act == TOWER_ACT_TANH ? "after tanh" : "no activation";
    snprintf(buf, n, "%s (%d tower%s x %zu units, %s)", tower_plan_row(&f->m.plan, f->layer)->name,
             f->m.towers, f->m.towers > 1 ? "s" : "", f->dim / (size_t)f->m.towers, act);
}

/* A progress line on stderr every FEAT_PROGRESS_S seconds (none when quiet). */
typedef struct {
    const char *cmd;
    double t0, last;
    int quiet;
} feat_progress;

static void progress(feat_progress *p, const char *what, int64_t done, int64_t total)
{
    double now = base_now();
    if (p->quiet || now - p->last < FEAT_PROGRESS_S) return;
    p->last = now;
    fprintf(stderr, "twotower %s: %s %lld of %lld images (%.0f images/s)\n", p->cmd, what,
            (long long)done, (long long)total, done / (now - p->t0 > 0 ? now - p->t0 : 1e-9));
}

/* The split's source: --split/--query-split train (1) or test (0). exit code 2 with a
 * message when it cannot be opened. */
static data_source *open_split_or_say(const char *cmd, const char *dir, int train)
{
    char err[1536];
    data_source *s = train_open_split(dir, train, err, sizeof err);
    if (!s)
        fprintf(stderr, "twotower %s: cannot open the %s split: %s\n", cmd,
                train ? "train" : "test", err);
    return s;
}

/* The flags features and neighbours share: where the images and the net run, which layer. */
typedef struct {
    const char *data, *layer;
    int batch, quiet;
    train_placement_args place;
} feat_args;

static void feat_args_default(feat_args *a)
{
    memset(a, 0, sizeof *a);
    a->data = TRAIN_DEFAULT_DATA;
    a->layer = "fc7";
}

static const base_flag feat_flags[] = {
    {BASE_FLAG_STR("data", feat_args, data, "DIR", "Fashion-MNIST IDX folder or prep shards")},
    {BASE_FLAG_STR("layer", feat_args, layer, "NAME",
                   "the layer read (conv1..fc8): its output after the activation")},
    {BASE_FLAG_INT("batch", feat_args, batch, 1, 4096, "N", "images a forward pass"),
     .deflt = "the checkpoint's"},
    {BASE_FLAG_BOOL("quiet", feat_args, quiet, "no progress lines")},
    {BASE_FLAG_GROUP(train_placement_flags, feat_args, place)},
    {0}};

/* ---- twotower features ------------------------------------------------------------- */

typedef struct {
    const char *out;
    int split;      /* 0 train, 1 test */
    int64_t offset, limit;
    feat_args a;
} features_opts;

static void features_defaults(void *p)
{
    features_opts *o = p;
    memset(o, 0, sizeof *o);
    feat_args_default(&o->a);
}

static const base_flag features_flags[] = {
    {BASE_FLAG_STR("out", features_opts, out, "FILE",
                   "the safetensors file to write (required)"),
     .short_name = 'o'},
    {BASE_FLAG_CHOICE("split", features_opts, split, "train|test",
                      "the images: the training set, or the test set (prep's val)")},
    {BASE_FLAG_I64("offset", features_opts, offset, 0, INT64_MAX / 2, "N",
                   "the first image (stored order)")},
    {BASE_FLAG_I64("limit", features_opts, limit, 1, INT64_MAX / 2, "N", "images written"),
     .deflt = "all from --offset on"},
    {BASE_FLAG_GROUP(feat_flags, features_opts, a)},
    {0}};

static const base_flags_cmd features_cmd = {
    .name = "features",
    .synopsis = "CKPT -o OUT.safetensors [flags]",
    .about =
        "Runs the net of a checkpoint (a .ttc file, a checkpoint folder or a run folder) in\n"
        "test mode over a split's images, in the validation's center crop, and writes one\n"
        "layer's activations: its output after the activation (ReLU), before LRN, pooling and\n"
        "dropout, both towers' units concatenated (tower 0's first). OUT is safetensors with\n"
        "labels (I32, N), indices (I64, N: the images' places in the split) and features\n"
        "(F32, N x units), written as it goes (one batch in memory); read it with\n"
        "tools/reference/safetensors_np.py or the safetensors package. At ImageNet's size (1.2 M\n"
        "fc7 vectors, 20 GB) write it in pieces: --offset 0 --limit 100000, --offset 100000 ...\n"
        "OUT is refused (exit 2) when it is CKPT, lies in CKPT's run or checkpoint folder or in\n"
        "--data, or is not a regular file. The GPUs when there are any, unless --cpu.\n",
    .flags = features_flags,
    .min_pos = 1,
    .max_pos = 1,
    .opts_size = sizeof(features_opts),
    .defaults = features_defaults};

/* Writes labels and indices of images [first, first + n) of src (in chunks). */
static void write_labels(st_stream *st, const data_source *src, int64_t first, int64_t n,
                         int indices)
{
    enum { CHUNK = 4096 };
    int64_t idx[CHUNK];
    int32_t lab[CHUNK];
    for (int64_t at = 0; at < n; at += CHUNK) {
        int m = (int)(n - at < CHUNK ? n - at : CHUNK);
        for (int i = 0; i < m; i++) {
            idx[i] = first + at + i;
            lab[i] = data_label(src, idx[i]);
        }
        if (indices)
            st_stream_write(st, idx, sizeof(int64_t) * (size_t)m);
        else
            st_stream_write(st, lab, sizeof(int32_t) * (size_t)m);
    }
}

int train_features_main(int argc, char **argv)
{
    features_opts o;
    base_flags_out fo;
    int frc = base_flags_cli(&features_cmd, &o, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    const char *ckpt = fo.pos[0];
    char err[1536];
    if (!o.out) {
        fprintf(stderr, "twotower features: -o FILE is required (see twotower features "
                        "--help)\n");
        return 2;
    }
    model_placement place;
    if (train_check_out(ckpt, o.a.data, o.out, "-o", err, sizeof err) ||
        train_placement_resolve(&o.a.place, &place, err, sizeof err)) {
        fprintf(stderr, "twotower features: %s\n", err);
        return 2;
    }
    const char *split = o.split ? "test" : "train";
    data_source *src = open_split_or_say("features", o.a.data, !o.split);
    if (!src) return 2;
    int64_t count = data_count(src);
    if (o.offset >= count) {
        fprintf(stderr, "twotower features: --offset %lld: the %s split of %s has %lld images "
                        "(0 to %lld)\n", (long long)o.offset, split, o.a.data, (long long)count,
                (long long)count - 1);
        data_close(src);
        return 2;
    }
    int64_t n = count - o.offset;
    if (o.limit > 0 && o.limit < n) n = o.limit;
    feat_net f;
    int rc = feat_net_open(&f, ckpt, o.a.batch, &place, o.a.layer, err, sizeof err);
    if (rc) {
        fprintf(stderr, "twotower features: %s\n", err);
        data_close(src);
        return rc;
    }
    int B = f.m.plan.cfg.batch;
    char desc[160], vals[8][64], nv[5][32];
    feat_describe(&f, desc, sizeof desc);
    snprintf(vals[0], 64, "%s", tower_plan_row(&f.m.plan, f.layer)->name);
    snprintf(vals[1], 64, "%s", split);
    snprintf(vals[2], 64, "%" PRId64, o.offset);
    snprintf(vals[3], 64, "%" PRId64, n);
    snprintf(vals[4], 64, "%" PRId64, count);
    snprintf(vals[5], 64, "%d", f.m.towers);
    snprintf(vals[6], 64, "%" PRId64, f.meta.model_step);
    snprintf(vals[7], 64, "%d", f.m.plan.cfg.in_size);
    const char *meta[2 * 12 + TRAIN_EXPORT_NET_META + 1] = {
        "format", "twotower-features", "layer", vals[0], "split", split, "offset", vals[2],
        "count", vals[3], "split_images", vals[4], "towers", vals[5], "step", vals[6],
        "size", vals[7], "view", "center crop", "stage",
        "after the activation, before LRN, pooling and dropout; towers concatenated",
        "checkpoint", f.file};
    int nm = 2 * 12 + train_export_net_meta(meta + 2 * 12, nv, &f.m.plan.cfg.net);
    meta[nm] = NULL;
    st_tensor tens[3] = {{"labels", "I32", 1, {n}, NULL},
                         {"indices", "I64", 1, {n}, NULL},
                         {"features", "F32", 2, {n, (int64_t)f.dim}, NULL}};
    st_stream st;
    if (st_stream_open(&st, o.out, tens, 3, meta, err, sizeof err)) {
        fprintf(stderr, "twotower features: %s\n", err);
        feat_net_close(&f);
        data_close(src);
        return 1;
    }
    write_labels(&st, src, o.offset, n, 0);
    write_labels(&st, src, o.offset, n, 1);
    char where[128];
    train_placement_describe(&place, where, sizeof where);
    if (!o.a.quiet)
        fprintf(stderr, "twotower features: %s of %lld %s images from %lld on, batch %d, %s\n",
                desc, (long long)n, split, (long long)o.offset, B, where);
    feat_progress pg = {"features", base_now(), base_now(), o.a.quiet};
    rc = 0;
    for (int64_t at = 0; at < n && rc == 0; at += B) {
        int k = (int)(n - at < B ? n - at : B);
        if (feat_net_batch(&f, src, o.offset + at, k, err, sizeof err) ||
            st_stream_write(&st, f.acts, sizeof(float) * f.dim * (size_t)k)) {
            if (st.out.failed)
                snprintf(err, sizeof err, "%s: write failed: %s", o.out, strerror(st.out.failed));
            rc = 1;
            break;
        }
        progress(&pg, "wrote", at + k, n);
    }
    if (rc) {
        st_stream_abort(&st);
        fprintf(stderr, "twotower features: %s (nothing written)\n", err);
    } else if (st_stream_commit(&st, err, sizeof err)) {
        fprintf(stderr, "twotower features: %s\n", err);
        rc = 1;
    } else {
        printf("twotower features: wrote %s: %s of %lld %s images (%lld to %lld), %lld x %zu "
               "float32, with labels and indices, in %.1f s\n", o.out, desc, (long long)n, split,
               (long long)o.offset, (long long)(o.offset + n - 1), (long long)n, f.dim,
               base_now() - pg.t0);
    }
    feat_net_close(&f);
    data_close(src);
    return rc;
}

/* ---- twotower neighbours ------------------------------------------------------------- */

void train_nearest_offer(double *dist, int64_t *idx, int *filled, int k, double d, int64_t i)
{
    int n = *filled;
    if (n == k && !(d < dist[k - 1])) return;
    int at = n < k ? n : k - 1; /* the slot freed: the end, or the farthest's */
    while (at > 0 && d < dist[at - 1]) {
        dist[at] = dist[at - 1];
        idx[at] = idx[at - 1];
        at--;
    }
    dist[at] = d;
    idx[at] = i;
    if (n < k) *filled = n + 1;
}

typedef struct {
    const char *out, *json;
    int queries, k, query_split, tile;
    uint64_t seed;
    int64_t limit;
    feat_args a;
} neighbours_opts;

#define NB_SEED_GIVEN 1u

static void neighbours_defaults(void *p)
{
    neighbours_opts *o = p;
    memset(o, 0, sizeof *o);
    feat_args_default(&o->a);
    o->queries = 8;
    o->k = 6;
    o->tile = 64;
    o->seed = 1;
}

static const base_flag neighbours_flags[] = {
    {BASE_FLAG_STR("out", neighbours_opts, out, "PNG", "the picture to write (required)"),
     .short_name = 'o'},
    {BASE_FLAG_STR("json", neighbours_opts, json, "FILE",
                   "the rows as JSON: each query's index, label, and its\n"
                   "neighbours' indices, labels and distances"),
     .deflt = "PNG's name with .json"},
    {BASE_FLAG_INT("queries", neighbours_opts, queries, 1, 1000, "N",
                   "query images, one row each: the split's first N")},
    {BASE_FLAG_U64("seed", neighbours_opts, seed, UINT64_MAX, "S",
                   "draw the N queries at random from S instead"),
     .given = NB_SEED_GIVEN, .deflt = "the first N"},
    {BASE_FLAG_CHOICE("query-split", neighbours_opts, query_split, "test|train",
                      "where the queries come from (train: the searched images;\n"
                      "a query then finds itself first, at distance 0)")},
    {BASE_FLAG_INT("neighbours", neighbours_opts, k, 1, 64, "K", "nearest training images a row")},
    {BASE_FLAG_I64("limit", neighbours_opts, limit, 1, INT64_MAX / 2, "N",
                   "search the first N training images"),
     .deflt = "all"},
    {BASE_FLAG_INT("tile", neighbours_opts, tile, 8, 256, "N", "pixels a side of each image")},
    {BASE_FLAG_GROUP(feat_flags, neighbours_opts, a)},
    {0}};

static const base_flags_cmd neighbours_cmd = {
    .name = "neighbours",
    .synopsis = "CKPT -o PNG [flags]",
    .about =
        "The paper's Figure 4: N query images (the test split's first N, or --seed's draw),\n"
        "each row followed by the K training images nearest it in Euclidean distance of a\n"
        "layer's activations (fc7: its output after ReLU, in test mode, center crop; as\n"
        "twotower features writes them). The training set is streamed in batches keeping a\n"
        "running top K per query, so no training features are held. Writes the PNG and a JSON\n"
        "file beside it (--json). The outputs are refused (exit 2) when one is CKPT, lies in\n"
        "CKPT's run or checkpoint folder or in --data, or is not a regular file. The GPUs\n"
        "when there are any, unless --cpu.\n",
    .flags = neighbours_flags,
    .min_pos = 1,
    .max_pos = 1,
    .opts_size = sizeof(neighbours_opts),
    .defaults = neighbours_defaults};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* N distinct images of [0, pool): the first N, or (seeded) drawn from seed, ascending. */
static void pick_queries(int64_t *q, int N, int64_t pool, int seeded, uint64_t seed)
{
    uint64_t key = base_rng_mix(seed ^ 0x6e656967ull, 0); /* "neig": a stream of its own */
    uint64_t draw = 0;
    for (int i = 0; i < N; i++) {
        if (!seeded) {
            q[i] = i;
            continue;
        }
        for (;;) { /* N <= pool, so a new one always comes */
            int64_t c = (int64_t)(base_rng_mix(key, draw++) % (uint64_t)pool);
            int seen = 0;
            for (int j = 0; j < i && !seen; j++) seen = q[j] == c;
            if (!seen) {
                q[i] = c;
                break;
            }
        }
    }
    qsort(q, (size_t)N, sizeof *q, cmp_i64);
}

/* The query images' activations, qf (N, dim): each computed in the batch that holds it when
 * the split is streamed from image 0 in batches of B over `streamed` images, so a query
 * from the searched split gets exactly the bits its search batch gives (distance 0 to
 * itself). Queries are ascending; each batch runs once. */
static int query_features(feat_net *f, data_source *src, const int64_t *q, int N,
                          int64_t streamed, float *qf, int32_t *qlabel, char *err, size_t errlen)
{
    int B = f->m.plan.cfg.batch;
    int64_t loaded = -1;
    for (int i = 0; i < N; i++) {
        int64_t start = q[i] / B * B;
        if (start != loaded) {
            int k = (int)(streamed - start < B ? streamed - start : B);
            if (feat_net_batch(f, src, start, k, err, errlen)) return -1;
            loaded = start;
        }
        memcpy(qf + (size_t)i * f->dim, f->acts + (size_t)(q[i] - start) * f->dim,
               sizeof(float) * f->dim);
        qlabel[i] = f->eb.labels[q[i] - start];
    }
    return 0;
}

/* The stored image i of src as a side x side RGB tile (the 256 x 256 image resized). */
static int image_tile(const data_source *src, int64_t i, int side, uint8_t *tile, uint8_t *img,
                      void *ws, char *err, size_t errlen)
{
    if (data_image(src, i, img, err, errlen)) return -1;
    data_resize_center(tile, side, img, DATA_SIZE, DATA_SIZE, 3, ws);
    return 0;
}

static json_t *image_json(const data_source *src, int64_t i, int32_t label, const char *split)
{
    const char *name = data_class_name(src, label);
    json_t *o = json_pack("{s:s, s:I, s:i}", "split", split, "index", (json_int_t)i, "label",
                          label);
    if (o && name) json_object_set_new(o, "class", json_string(name));
    return o;
}

/* PNG path with .png replaced by .json (or .json appended). */
static void json_beside(const char *png, char *out, size_t n)
{
    size_t len = strlen(png);
    if (len > 4 && !strcmp(png + len - 4, ".png"))
        snprintf(out, n, "%.*s.json", (int)(len - 4), png);
    else
        snprintf(out, n, "%s.json", png);
}

typedef struct {
    int N, K;
    int64_t *q;         /* (N) query indices */
    int32_t *qlabel;    /* (N) */
    float *qf;          /* (N, dim) query activations */
    double *dist;       /* (N, K) squared distances, ascending per query */
    int64_t *nidx;      /* (N, K) */
    int *filled;        /* (N) */
} nb_rows;

static void nb_free(nb_rows *r)
{
    free(r->q);
    free(r->qlabel);
    free(r->qf);
    free(r->dist);
    free(r->nidx);
    free(r->filled);
}

static int nb_alloc(nb_rows *r, int N, int K, size_t dim)
{
    memset(r, 0, sizeof *r);
    r->N = N;
    r->K = K;
    r->q = malloc(sizeof(int64_t) * N);
    r->qlabel = malloc(sizeof(int32_t) * N);
    r->qf = malloc(sizeof(float) * dim * N);
    r->dist = malloc(sizeof(double) * N * K);
    r->nidx = malloc(sizeof(int64_t) * N * K);
    r->filled = calloc((size_t)N, sizeof(int));
    if (r->q && r->qlabel && r->qf && r->dist && r->nidx && r->filled) return 0;
    nb_free(r);
    return -1;
}

/* Streams images [0, n) of src, offering each to every query's running top K. */
static int nb_search(feat_net *f, data_source *src, int64_t n, nb_rows *r, feat_progress *pg,
                     char *err, size_t errlen)
{
    int B = f->m.plan.cfg.batch;
    for (int64_t start = 0; start < n; start += B) {
        int k = (int)(n - start < B ? n - start : B);
        if (feat_net_batch(f, src, start, k, err, errlen)) return -1;
        for (int b = 0; b < k; b++) {
            const float *x = f->acts + (size_t)b * f->dim;
            for (int i = 0; i < r->N; i++) {
                const float *qv = r->qf + (size_t)i * f->dim;
                double d = 0; /* in double, from the float bits: 0 exactly for equal vectors */
                for (size_t u = 0; u < f->dim; u++) {
                    double e = (double)x[u] - (double)qv[u];
                    d += e * e;
                }
                train_nearest_offer(r->dist + (size_t)i * r->K, r->nidx + (size_t)i * r->K,
                                    &r->filled[i], r->K, d, start + b);
            }
        }
        progress(pg, "searched", start + k, n);
    }
    return 0;
}

/* The figure's tiles: row i is query i then its neighbours (blank past `filled`). */
static int nb_picture(const nb_rows *r, const data_source *qsrc, const data_source *tsrc,
                      int side, train_picture *pic, char *err, size_t errlen)
{
    int cols = r->K + 1;
    size_t tb = (size_t)side * side * 3;
    uint8_t *tiles = malloc(tb * (size_t)r->N * cols), *img = malloc(DATA_IMAGE_BYTES);
    void *ws = malloc(data_resize_workspace(DATA_SIZE, DATA_SIZE, 3, side));
    int rc = -1;
    if (!tiles || !img || !ws) {
        base_errf(err, errlen, "out of memory for %d x %d tiles of %d pixels", r->N, cols, side);
        goto done;
    }
    memset(tiles, 255, tb * (size_t)r->N * cols);
    for (int i = 0; i < r->N; i++)
        for (int c = 0; c < cols; c++) {
            uint8_t *t = tiles + ((size_t)i * cols + c) * tb;
            if (c > r->filled[i]) continue; /* fewer images searched than K */
            const data_source *s = c == 0 ? qsrc : tsrc;
            int64_t at = c == 0 ? r->q[i] : r->nidx[(size_t)i * r->K + c - 1];
            if (image_tile(s, at, side, t, img, ws, err, errlen)) goto done;
        }
    rc = train_tile_grid(pic, tiles, r->N, cols, side, err, errlen);
done:
    free(tiles);
    free(img);
    free(ws);
    return rc;
}

static int nb_write_json(const nb_rows *r, const data_source *qsrc, const data_source *tsrc,
                         const char *qsplit, const feat_net *f, const char *desc,
                         int64_t searched, const char *path, char *err, size_t errlen)
{
    json_t *rows = json_array();
    for (int i = 0; i < r->N; i++) {
        json_t *row = image_json(qsrc, r->q[i], r->qlabel[i], qsplit), *nb = json_array();
        for (int j = 0; j < r->filled[i]; j++) {
            int64_t t = r->nidx[(size_t)i * r->K + j];
            json_t *e = image_json(tsrc, t, data_label(tsrc, t), "train");
            json_object_set_new(e, "distance", json_real(sqrt(r->dist[(size_t)i * r->K + j])));
            json_array_append_new(nb, e);
        }
        json_object_set_new(row, "neighbours", nb);
        json_array_append_new(rows, row);
    }
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:o}", "format",
                            "twotower-neighbours", "checkpoint", f->file, "layer",
                            tower_plan_row(&f->m.plan, f->layer)->name, "features", desc,
                            "metric", "euclidean", "searched_train_images",
                            (json_int_t)searched, "view", "center crop", "queries", rows);
    char *text = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
    json_decref(doc);
    if (!text) {
        base_errf(err, errlen, "%s: out of memory for the JSON", path);
        return -1;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* the NUL becomes the last line's end */
    int rc = base_write_file(path, "neighbours JSON", text, len + 1, err, errlen);
    free(text);
    return rc;
}

int train_neighbours_main(int argc, char **argv)
{
    neighbours_opts o;
    base_flags_out fo;
    int frc = base_flags_cli(&neighbours_cmd, &o, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    const char *ckpt = fo.pos[0];
    char err[1536], json_path[4200];
    if (!o.out) {
        fprintf(stderr, "twotower neighbours: -o PNG is required (see twotower neighbours "
                        "--help)\n");
        return 2;
    }
    if (o.json)
        snprintf(json_path, sizeof json_path, "%s", o.json);
    else
        json_beside(o.out, json_path, sizeof json_path);
    if (!strcmp(json_path, o.out)) {
        fprintf(stderr, "twotower neighbours: --json %s is -o's file too: give another\n",
                json_path);
        return 2;
    }
    model_placement place;
    if (train_check_out(ckpt, o.a.data, o.out, "-o", err, sizeof err) ||
        train_check_out(ckpt, o.a.data, json_path, "--json", err, sizeof err) ||
        train_placement_resolve(&o.a.place, &place, err, sizeof err)) {
        fprintf(stderr, "twotower neighbours: %s\n", err);
        return 2;
    }
    int self = o.query_split == 1; /* queries from the searched split */
    const char *qsplit = self ? "train" : "test";
    data_source *tsrc = open_split_or_say("neighbours", o.a.data, 1), *qsrc = NULL;
    if (!tsrc) return 2;
    qsrc = self ? tsrc : open_split_or_say("neighbours", o.a.data, 0);
    if (!qsrc) {
        data_close(tsrc);
        return 2;
    }
    int64_t searched = data_count(tsrc);
    if (o.limit > 0 && o.limit < searched) searched = o.limit;
    int64_t pool = self ? searched : data_count(qsrc);
    int rc = 2;
    feat_net f;
    nb_rows r;
    int f_open = 0, r_open = 0;
    if (o.queries > pool) {
        fprintf(stderr, "twotower neighbours: --queries %d: the %s split has %lld images to "
                        "query%s\n", o.queries, qsplit, (long long)pool,
                self && o.limit ? " (within --limit)" : "");
        goto out;
    }
    if ((rc = feat_net_open(&f, ckpt, o.a.batch, &place, o.a.layer, err, sizeof err))) {
        fprintf(stderr, "twotower neighbours: %s\n", err);
        goto out;
    }
    f_open = 1;
    rc = 1;
    if (nb_alloc(&r, o.queries, o.k, f.dim)) {
        fprintf(stderr, "twotower neighbours: out of memory for %d queries\n", o.queries);
        goto out;
    }
    r_open = 1;
    pick_queries(r.q, r.N, pool, (fo.given & NB_SEED_GIVEN) != 0, o.seed);
    char desc[160], where[128];
    feat_describe(&f, desc, sizeof desc);
    train_placement_describe(&place, where, sizeof where);
    if (!o.a.quiet)
        fprintf(stderr, "twotower neighbours: %d %s queries against %lld training images by "
                        "%s, batch %d, %s\n", r.N, qsplit, (long long)searched, desc,
                f.m.plan.cfg.batch, where);
    feat_progress pg = {"neighbours", base_now(), base_now(), o.a.quiet};
    if (query_features(&f, qsrc, r.q, r.N, self ? searched : pool, r.qf, r.qlabel, err,
                       sizeof err) ||
        nb_search(&f, tsrc, searched, &r, &pg, err, sizeof err)) {
        fprintf(stderr, "twotower neighbours: %s\n", err);
        goto out;
    }
    train_picture pic;
    if (nb_picture(&r, qsrc, tsrc, o.tile, &pic, err, sizeof err)) {
        fprintf(stderr, "twotower neighbours: %s\n", err);
        goto out;
    }
    int wrc = train_picture_write_png(&pic, o.out, err, sizeof err);
    train_picture_free(&pic);
    if (wrc || nb_write_json(&r, qsrc, tsrc, qsplit, &f, desc, searched, json_path, err,
                             sizeof err)) {
        fprintf(stderr, "twotower neighbours: %s\n", err);
        goto out;
    }
    printf("twotower neighbours: wrote %s and %s: %d %s queries, each with its %d nearest of "
           "%lld training images by %s (%.1f s)\n", o.out, json_path, r.N, qsplit, r.K,
           (long long)searched, desc, base_now() - pg.t0);
    for (int i = 0; i < r.N; i++) {
        printf("  %s %lld (label %d):", qsplit, (long long)r.q[i], r.qlabel[i]);
        for (int j = 0; j < r.filled[i]; j++)
            printf(" %lld (%d) %.4g%s", (long long)r.nidx[(size_t)i * r.K + j],
                   data_label(tsrc, r.nidx[(size_t)i * r.K + j]),
                   sqrt(r.dist[(size_t)i * r.K + j]), j + 1 < r.filled[i] ? "," : "");
        printf("\n");
    }
    rc = 0;
out:
    if (r_open) nb_free(&r);
    if (f_open) feat_net_close(&f);
    if (qsrc != tsrc) data_close(qsrc);
    data_close(tsrc);
    return rc;
}
