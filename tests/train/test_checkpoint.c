/* Tests of the checkpoint format: round trips (buffers and a real tiny CPU model), and
 * refusal of every corruption we can make: bit flips (every header byte, every byte of
 * the small records and record heads, a sample of tensor bytes), truncation at every
 * record boundary and at sampled lengths, absurd sizes, wrong magic or version, missing,
 * duplicate or foreign records, mismatched config. A refused file never changes the
 * destination. Also keep-last-K, newest/previous selection, leftover .tmp files and
 * `twotower ckpt-check`. The file is decoded here by an independent reader, written
 * from checkpoint.h's description of the format. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "helpers.h"
#include "train/checkpoint.h"

/* width_div 32: 10,933 parameters per tower, so the thousands of corrupted loads stay
 * fast */
static const tower_config TINY = {2, 10, 2, 67, 3, 32};

/* records of a two-tower file: 9 small ones, then 8 layers x (weight, bias) x (params,
 * momentum) per tower; room for a few more added by the mutations below */
#define N_SMALL 9
#define N_TENSORS (2 * 8 * 4)
#define MAXREC (N_SMALL + N_TENSORS + 8)

/* ---- files and folders ---------------------------------------------------------------- */

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- a filled-in state ------------------------------------------------------------------- */

typedef struct {
    size_t n;
    real *params[2], *momentum[2];
} bufs;

static size_t tiny_n_params(void)
{
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &TINY, err, sizeof err), 0, "%s", err);
    return plan.n_params;
}

static bufs make_bufs(size_t n, float salt)
{
    bufs b = {n, {0}, {0}};
    for (int t = 0; t < 2; t++) {
        b.params[t] = malloc(n * sizeof(real));
        b.momentum[t] = malloc(n * sizeof(real));
        for (size_t i = 0; i < n; i++) {
            b.params[t][i] = (real)sin((double)i * 0.37 + t + salt);
            b.momentum[t][i] = (real)(1e-3 * cos((double)i * 1.3 + t - salt));
        }
    }
    return b;
}

static void free_bufs(bufs *b)
{
    for (int t = 0; t < 2; t++) {
        free(b->params[t]);
        free(b->momentum[t]);
    }
}

static train_ckpt_meta make_meta(int64_t step)
{
    train_ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.cfg = TINY;
    m.seed = 0xfedcba9876543210ull; /* high bit set: stored as i64 bits */
    m.step = step;
    m.epoch = 3;
    m.model_seed = m.seed;
    m.model_step = step;
    m.cursor = (train_cursor){0x8000000000000001ull, 3, 1234};
    train_sched_init(&m.sched, 0.01, 4, 3, 0.001);
    train_sched_observe(&m.sched, 0.7, NULL, 0);
    train_sched_observe(&m.sched, 0.6, NULL, 0);
    train_sched_observe(&m.sched, 0.65, NULL, 0);
    train_nonfinite_init(&m.nonfinite, 5);
    train_nonfinite_observe(&m.nonfinite, NAN, 7, NULL, 0);
    m.stats = (train_ckpt_stats){0.6, 0.3, 1000, 123456, 98.5, 2.25, 0.65, 0.31};
    m.interval = (train_ckpt_interval){2.2, 17.5, 8, 11, 16};
    m.train_limit = 48;
    m.eval_every = 500;
    return m;
}

static void save_bufs(const char *dir, const train_ckpt_meta *m, const bufs *b, int keep)
{
    char err[1024];
    int rc = train_ckpt_save_buffers(dir, m, b->n, (const real *const *)b->params,
                                     (const real *const *)b->momentum, keep, err, sizeof err);
    cr_assert_eq(rc, 0, "save: %s", err);
}

static void ckpt_path(char *p, size_t n, const char *dir, int64_t step)
{
    snprintf(p, n, "%s/ckpt-%08lld.ttc", dir, (long long)step);
}

/* ---- an independent reader/writer of the format ---------------------------------------- */

typedef struct {
    size_t start;      /* offset of name_len */
    size_t data_start; /* offset of the data */
    size_t end;        /* one past the data */
    char name[64];
    uint32_t dtype, ndim;
    int64_t shape[8];
    uint64_t nbytes;
} rec;

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}
static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> 8 * i);
}
static void wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> 8 * i);
}
static uint32_t crc(const void *p, size_t n)
{
    return (uint32_t)crc32(0L, (const Bytef *)p, (uInt)n);
}

/* Decodes a good file's layout. */
static int decode(const unsigned char *b, size_t n, rec *r, int max)
{
    cr_assert(n >= 28);
    cr_assert_eq(memcmp(b, "TTCKPT\r\n", 8), 0);
    cr_assert_eq(rd32(b + 8), 2);
    cr_assert_eq(rd64(b + 16), n);
    cr_assert_eq(rd32(b + 24), crc(b, 24));
    int nr = (int)rd32(b + 12);
    cr_assert(nr <= max);
    size_t o = 28;
    for (int i = 0; i < nr; i++) {
        r[i].start = o;
        uint32_t nl = rd32(b + o);
        cr_assert(nl < 64);
        memcpy(r[i].name, b + o + 4, nl);
        r[i].name[nl] = 0;
        o += 4 + nl;
        r[i].dtype = rd32(b + o);
        r[i].ndim = rd32(b + o + 4);
        o += 8;
        for (uint32_t d = 0; d < r[i].ndim; d++, o += 8)
            r[i].shape[d] = (int64_t)rd64(b + o);
        r[i].nbytes = rd64(b + o);
        uint32_t dcrc = rd32(b + o + 8);
        cr_assert_eq(rd32(b + o + 12), crc(b + r[i].start, o + 12 - r[i].start));
        o += 16;
        r[i].data_start = o;
        cr_assert_eq(dcrc, crc(b + o, r[i].nbytes));
        o += r[i].nbytes;
        r[i].end = o;
    }
    cr_assert_eq(o, n);
    return nr;
}

/* A record to re-encode, with its head fields editable. */
typedef struct {
    char name[80];
    int has_name_len;  /* 0: name_len = strlen(name) */
    uint32_t name_len;
    uint32_t dtype, ndim;
    int64_t shape[8];
    uint64_t nbytes;
    const unsigned char *data;
    size_t data_len;      /* bytes actually written */
    unsigned char *owned; /* a modified copy of the data, freed after encoding */
} wrec;

static size_t encode(unsigned char *out, const wrec *w, int nr, uint32_t version,
                     int64_t file_bytes_delta)
{
    size_t o = 28;
    for (int i = 0; i < nr; i++) {
        size_t s = o;
        uint32_t nl = w[i].has_name_len ? w[i].name_len : (uint32_t)strlen(w[i].name);
        wr32(out + o, nl);
        o += 4;
        size_t copy = nl < strlen(w[i].name) ? nl : strlen(w[i].name);
        memcpy(out + o, w[i].name, copy);
        o += copy;
        wr32(out + o, w[i].dtype);
        wr32(out + o + 4, w[i].ndim);
        o += 8;
        uint32_t nd = w[i].ndim < 8 ? w[i].ndim : 8;
        for (uint32_t d = 0; d < nd; d++, o += 8)
            wr64(out + o, (uint64_t)w[i].shape[d]);
        wr64(out + o, w[i].nbytes);
        wr32(out + o + 8, crc(w[i].data, w[i].data_len));
        wr32(out + o + 12, crc(out + s, o + 12 - s));
        o += 16;
        memcpy(out + o, w[i].data, w[i].data_len);
        o += w[i].data_len;
    }
    memcpy(out, "TTCKPT\r\n", 8);
    wr32(out + 8, version);
    wr32(out + 12, (uint32_t)nr);
    wr64(out + 16, (uint64_t)((int64_t)o + file_bytes_delta));
    wr32(out + 24, crc(out, 24));
    return o;
}

static int to_wrecs(const unsigned char *b, const rec *r, int nr, wrec *w)
{
    for (int i = 0; i < nr; i++) {
        memset(&w[i], 0, sizeof w[i]);
        snprintf(w[i].name, sizeof w[i].name, "%s", r[i].name);
        w[i].dtype = r[i].dtype;
        w[i].ndim = r[i].ndim;
        memcpy(w[i].shape, r[i].shape, sizeof r[i].shape);
        w[i].nbytes = r[i].nbytes;
        w[i].data = b + r[i].data_start;
        w[i].data_len = r[i].nbytes;
    }
    return nr;
}

static int find(const wrec *w, int nr, const char *name)
{
    for (int i = 0; i < nr; i++)
        if (!strcmp(w[i].name, name))
            return i;
    cr_assert_fail("record %s not in the file", name);
    return -1;
}

/* Loads path into sentinel-filled buffers; asserts refusal, that err names the file and
 * contains `needle`, and that the buffers were not touched. */
static void expect_refused(const char *path, const char *needle, const char *what)
{
    size_t n = tiny_n_params();
    bufs b = {n, {0}, {0}};
    for (int t = 0; t < 2; t++) {
        b.params[t] = malloc(n * sizeof(real));
        b.momentum[t] = malloc(n * sizeof(real));
        for (size_t i = 0; i < n; i++)
            b.params[t][i] = b.momentum[t][i] = (real)-7.0;
    }
    train_ckpt_meta meta;
    memset(&meta, 0x5a, sizeof meta);
    unsigned char before[sizeof meta];
    memcpy(before, &meta, sizeof meta);
    char err[2048] = "";
    int rc = train_ckpt_load_buffers(path, &meta, &TINY, n, b.params, b.momentum, err,
                                     sizeof err);
    cr_assert_eq(rc, -1, "%s: accepted", what);
    cr_assert(strstr(err, path) != NULL, "%s: message does not name the file: %s", what, err);
    if (needle)
        cr_assert(strstr(err, needle) != NULL, "%s: message lacks '%s': %s", what, needle, err);
    cr_assert_eq(memcmp(before, &meta, sizeof meta), 0, "%s: meta written in part", what);
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < n; i++)
            cr_assert(b.params[t][i] == (real)-7.0 && b.momentum[t][i] == (real)-7.0,
                      "%s: tensors written in part", what);
    free_bufs(&b);
}

/* ---- round trips ------------------------------------------------------------------------- */

static void assert_meta_eq(const train_ckpt_meta *a, const train_ckpt_meta *b)
{
    cr_assert_eq(memcmp(&a->cfg, &b->cfg, sizeof a->cfg), 0);
    cr_assert_eq(a->seed, b->seed);
    cr_assert_eq(a->step, b->step);
    cr_assert_eq(a->epoch, b->epoch);
    cr_assert_eq(a->model_seed, b->model_seed);
    cr_assert_eq(a->model_step, b->model_step);
    cr_assert_eq(a->cursor.seed, b->cursor.seed);
    cr_assert_eq(a->cursor.epoch, b->cursor.epoch);
    cr_assert_eq(a->cursor.pos, b->cursor.pos);
    cr_assert_eq(a->sched.lr0, b->sched.lr0);
    cr_assert_eq(a->sched.lr, b->sched.lr);
    cr_assert_eq(a->sched.min_delta, b->sched.min_delta);
    cr_assert_eq(a->sched.best, b->sched.best);
    cr_assert_eq(a->sched.best_eval, b->sched.best_eval);
    cr_assert_eq(a->sched.evals, b->sched.evals);
    cr_assert_eq(a->sched.patience, b->sched.patience);
    cr_assert_eq(a->sched.max_drops, b->sched.max_drops);
    cr_assert_eq(a->sched.drops, b->sched.drops);
    cr_assert_eq(a->sched.bad, b->sched.bad);
    cr_assert_eq(a->sched.stopped, b->sched.stopped);
    cr_assert_eq(a->nonfinite.limit, b->nonfinite.limit);
    cr_assert_eq(a->nonfinite.run, b->nonfinite.run);
    cr_assert_eq(a->nonfinite.skipped, b->nonfinite.skipped);
    cr_assert_eq(memcmp(&a->stats, &b->stats, sizeof a->stats), 0);
    cr_assert_eq(memcmp(&a->interval, &b->interval, sizeof a->interval), 0);
    cr_assert_eq(a->train_limit, b->train_limit);
    cr_assert_eq(a->eval_every, b->eval_every);
}

/* The tensors the format promises, computed here from tower.h: per tower, each layer's
 * weight (out, sources * in, k, k) or (out, sources * in) and bias (out), params then
 * momentum. Each record must have that name, dtype and shape, and hold that slice of
 * the buffers it was saved from. */
typedef struct {
    char name[64];
    uint32_t ndim;
    int64_t shape[4];
    const real *data;
} want_tensor;

static int expected_tensors(want_tensor *w, const bufs *b)
{
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &TINY, err, sizeof err), 0, "%s", err);
    int n = 0;
    for (int t = 0; t < 2; t++) {
        for (int mom = 0; mom < 2; mom++) {
            const real *arena = mom ? b->momentum[t] : b->params[t];
            for (int l = 0; l < TOWER_LAYERS; l++) {
                const tower_layer_spec *s = tower_plan_row(&plan, l);
                const tower_layer_shape *L = &plan.layer[l];
                want_tensor *wt = &w[n++], *bt = &w[n++];
                memset(wt, 0, sizeof *wt);
                memset(bt, 0, sizeof *bt);
                snprintf(wt->name, sizeof wt->name, "tower%d.%s.weight%s", t, s->name,
                         mom ? ".momentum" : "");
                snprintf(bt->name, sizeof bt->name, "tower%d.%s.bias%s", t, s->name,
                         mom ? ".momentum" : "");
                wt->ndim = s->kind == TOWER_CONV ? 4 : 2;
                wt->shape[0] = bt->shape[0] = L->out_ch;
                wt->shape[1] = (int64_t)L->sources * L->in_ch;
                wt->shape[2] = wt->shape[3] = s->k;
                wt->data = arena + L->w_off;
                bt->ndim = 1;
                bt->data = arena + L->b_off;
            }
        }
    }
    return n;
}

static void assert_tensor_records(const unsigned char *raw, const rec *r, int nr, const bufs *b)
{
    want_tensor w[N_TENSORS];
    int n = expected_tensors(w, b);
    cr_assert_eq(nr, n, "%d tensor records, expected %d", nr, n);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(r[i].name, w[i].name);
        cr_assert_eq(r[i].dtype, sizeof(real) == 4 ? 1u : 2u, "%s", w[i].name);
        cr_assert_eq(r[i].ndim, w[i].ndim, "%s", w[i].name);
        int64_t count = 1;
        for (uint32_t d = 0; d < w[i].ndim; d++) {
            cr_assert_eq(r[i].shape[d], w[i].shape[d], "%s dim %u", w[i].name, d);
            count *= w[i].shape[d];
        }
        cr_assert_eq(r[i].nbytes, (uint64_t)count * sizeof(real), "%s", w[i].name);
        cr_assert_eq(memcmp(raw + r[i].data_start, w[i].data, r[i].nbytes), 0, "%s",
                     w[i].name);
        total += (size_t)count;
    }
    cr_assert_eq(total, 4 * b->n, "the tensors cover both arenas of both towers");
}

Test(checkpoint, round_trip_buffers)
{
    char *dir = tt_tmpdir("ckpt");
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 0.5f), c = make_bufs(n, 9.0f);
    train_ckpt_meta m = make_meta(1000), got;
    save_bufs(dir, &m, &b, 3);
    char p[4200], err[1024];
    ckpt_path(p, sizeof p, dir, 1000);
    cr_assert(file_exists(p), "%s", p);
    cr_assert_eq(train_ckpt_load_buffers(p, &got, &TINY, n, c.params, c.momentum, err,
                                         sizeof err), 0, "%s", err);
    m.n_params = n;
    assert_meta_eq(&m, &got);
    cr_assert_eq(got.n_params, n);
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(memcmp(b.params[t], c.params[t], n * sizeof(real)), 0);
        cr_assert_eq(memcmp(b.momentum[t], c.momentum[t], n * sizeof(real)), 0);
    }
    /* meta only (m = NULL): validates and fills meta */
    train_ckpt_meta only;
    cr_assert_eq(train_ckpt_load(p, &only, NULL, err, sizeof err), 0, "%s", err);
    assert_meta_eq(&m, &only);
    /* the layout matches the documented format */
    size_t len;
    unsigned char *raw = slurp(p, &len);
    rec r[MAXREC];
    int nr = decode(raw, len, r, MAXREC);
    cr_assert_eq(nr, N_SMALL + N_TENSORS);
    cr_assert_str_eq(r[0].name, "config");
    cr_assert_str_eq(r[N_SMALL - 1].name, "data");
    cr_assert_eq(r[N_SMALL - 1].shape[0], 2);
    cr_assert_eq((int64_t)rd64(raw + r[N_SMALL - 1].data_start), 48);
    cr_assert_eq((int64_t)rd64(raw + r[N_SMALL - 1].data_start + 8), 500);
    assert_tensor_records(raw, r + N_SMALL, nr - N_SMALL, &b);
    free(raw);
    free_bufs(&b);
    free_bufs(&c);
    rm_rf(dir);
    free(dir);
}

/* One tower alone: 32 tensor records, every layer reading only its own tower. */
Test(checkpoint, round_trip_one_tower)
{
    const tower_config one = {1, 10, 2, 67, 3, 32};
    tower_plan plan;
    char *dir = tt_tmpdir("ckpt"), err[1024], p[4200];
    cr_assert_eq(tower_plan_make(&plan, &one, err, sizeof err), 0, "%s", err);
    size_t n = plan.n_params;
    bufs b = make_bufs(n, 1.5f), c = make_bufs(n, 7.0f);
    train_ckpt_meta m = make_meta(9), got;
    m.cfg = one;
    save_bufs(dir, &m, &b, 1);
    ckpt_path(p, sizeof p, dir, 9);
    cr_assert_eq(train_ckpt_load_buffers(p, &got, &one, n, c.params, c.momentum, err,
                                         sizeof err), 0, "%s", err);
    cr_assert_eq(got.cfg.towers, 1);
    cr_assert_eq(memcmp(b.params[0], c.params[0], n * sizeof(real)), 0);
    cr_assert_eq(memcmp(b.momentum[0], c.momentum[0], n * sizeof(real)), 0);
    size_t len;
    unsigned char *raw = slurp(p, &len);
    rec r[MAXREC];
    int nr = decode(raw, len, r, MAXREC);
    cr_assert_eq(nr, N_SMALL + N_TENSORS / 2);
    cr_assert_str_eq(r[N_SMALL + 4].name, "tower0.conv3.weight");
    cr_assert_eq(r[N_SMALL + 4].shape[1], 4, "conv3 reads conv2's 4 channels of one tower");
    cr_assert_str_eq(r[nr - 1].name, "tower0.fc8.bias.momentum");
    cr_assert_eq(r[nr - 1].shape[0], 10);
    free(raw);
    free_bufs(&b);
    free_bufs(&c);
    rm_rf(dir);
    free(dir);
}

static void fill_model_state(model *m, float salt)
{
    size_t n = m->plan.n_params;
    real *v = malloc(n * sizeof(real));
    for (int t = 0; t < m->towers; t++) {
        for (size_t i = 0; i < n; i++)
            v[i] = (real)(1e-2 * sin((double)i + salt + t));
        model_set_tensor(m, t, 2, v);
    }
    free(v);
}

static int model_tensors_equal(const model *a, const model *b, int which)
{
    size_t n = a->plan.n_params;
    real *x = malloc(n * sizeof(real)), *y = malloc(n * sizeof(real));
    int eq = 1;
    for (int t = 0; t < a->towers && eq; t++) {
        model_get_tensor(a, t, which, x);
        model_get_tensor(b, t, which, y);
        eq = memcmp(x, y, n * sizeof(real)) == 0;
    }
    free(x);
    free(y);
    return eq;
}

Test(checkpoint, round_trip_model)
{
    char *dir = tt_tmpdir("ckpt"), err[1024];
    model_placement cpu = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
    model a, b;
    cr_assert_eq(model_init(&a, &TINY, &cpu, 11, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&b, &TINY, &cpu, 22, err, sizeof err), 0, "%s", err);
    fill_model_state(&a, 1.0f);
    a.step = 37;
    cr_assert(!model_tensors_equal(&a, &b, 0));
    train_ckpt_meta m = make_meta(37), got;
    cr_assert_eq(train_ckpt_save(dir, &m, &a, 2, err, sizeof err), 0, "%s", err);
    char p[4200];
    ckpt_path(p, sizeof p, dir, 37);
    cr_assert_eq(train_ckpt_load(p, &got, &b, err, sizeof err), 0, "%s", err);
    cr_assert(model_tensors_equal(&a, &b, 0), "params differ after load");
    cr_assert(model_tensors_equal(&a, &b, 2), "momentum differs after load");
    cr_assert_eq(b.seed, 11);
    cr_assert_eq(b.step, 37);
    cr_assert_eq(got.model_seed, 11);
    cr_assert_eq(got.n_params, a.plan.n_params);
    model_free(&a);
    model_free(&b);
    rm_rf(dir);
    free(dir);
}

/* ---- a file written by an earlier build ------------------------------------------------ */

/* fixtures/ckpt-v2/ckpt-00000037.ttc was written once by train_ckpt_save_buffers as it
 * stood before the record tables, from the state below (TINY, every field a value of its
 * own, tensors from the counter RNG so they are exact here): it holds the format's bytes
 * as that build wrote them, which this build must still read and write unchanged. */
static train_ckpt_meta fixture_meta(void)
{
    train_ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.cfg = TINY;
    m.seed = 0x9e3779b97f4a7c15ull;
    m.step = 37;
    m.epoch = 2;
    m.model_seed = 0x8000000000000011ull;
    m.model_step = 37;
    m.cursor = (train_cursor){0xfedcba9876543210ull, 2, 10};
    m.sched = (train_sched){.lr0 = 0.01, .patience = 4, .max_drops = 3, .min_delta = 0.001,
                            .lr = 0.01 / 10.0, .best = 0.75, .best_eval = 5, .evals = 7,
                            .drops = 1, .bad = 2, .stopped = 0};
    m.nonfinite = (train_nonfinite){5, 1, 3};
    m.stats = (train_ckpt_stats){0.71, 0.32, 30, 74, 12.5, 2.25, 0.8125, 0.40625};
    m.interval = (train_ckpt_interval){2.125, 4.5, 2, 3, 4};
    m.train_limit = 32;
    m.eval_every = 16;
    return m;
}

static bufs fixture_bufs(size_t n)
{
    bufs b = {n, {0}, {0}};
    for (int t = 0; t < 2; t++) {
        b.params[t] = malloc(n * sizeof(real));
        b.momentum[t] = malloc(n * sizeof(real));
        for (size_t i = 0; i < n; i++) {
            b.params[t][i] = (real)base_rng_uniform(0xf1c0 + (uint64_t)t, i) - 0.5f;
            b.momentum[t][i] =
                ((real)base_rng_uniform(0x30e0 + (uint64_t)t, i) - 0.5f) * 0.0078125f;
        }
    }
    return b;
}

#define FIXTURE TT_FIXTURE_DIR "/ckpt-v2/ckpt-00000037.ttc"

Test(checkpoint, version_2_file_of_an_earlier_build_loads_and_resaves_byte_identical)
{
    size_t n = tiny_n_params();
    bufs want = fixture_bufs(n), got = make_bufs(n, 3.0f);
    train_ckpt_meta m = fixture_meta(), meta;
    m.n_params = n;
    char err[1024];
    cr_assert_eq(train_ckpt_load_buffers(FIXTURE, &meta, &TINY, n, got.params, got.momentum,
                                         err, sizeof err), 0, "%s", err);
    assert_meta_eq(&m, &meta);
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(memcmp(want.params[t], got.params[t], n * sizeof(real)), 0, "tower %d", t);
        cr_assert_eq(memcmp(want.momentum[t], got.momentum[t], n * sizeof(real)), 0);
    }
    /* what this build writes from that state is the same file, byte for byte */
    char *dir = tt_tmpdir("ckpt"), p[4200];
    save_bufs(dir, &meta, &got, 0);
    ckpt_path(p, sizeof p, dir, 37);
    size_t la, lb;
    unsigned char *a = slurp(FIXTURE, &la), *b = slurp(p, &lb);
    cr_assert_eq(la, lb);
    cr_assert_eq(memcmp(a, b, la), 0, "the format's bytes changed");
    free(a);
    free(b);
    free_bufs(&want);
    free_bufs(&got);
    rm_rf(dir);
    free(dir);
}

Test(checkpoint, version_2_file_of_an_earlier_build_resumes)
{
    char err[1024];
    model_placement cpu = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
    model a;
    cr_assert_eq(model_init(&a, &TINY, &cpu, 5, err, sizeof err), 0, "%s", err);
    train_ckpt_meta meta;
    cr_assert_eq(train_ckpt_load(FIXTURE, &meta, &a, err, sizeof err), 0, "%s", err);
    cr_assert_eq(a.step, 37);
    cr_assert_eq(a.seed, 0x8000000000000011ull);
    bufs want = fixture_bufs(a.plan.n_params);
    real *w = malloc(a.plan.n_params * sizeof(real));
    model_get_tensor(&a, 1, 2, w);
    cr_assert_eq(memcmp(w, want.momentum[1], a.plan.n_params * sizeof(real)), 0);
    /* two training steps from the restored state */
    size_t xn = (size_t)TINY.batch * TINY.in_ch * TINY.in_size * TINY.in_size;
    float *x = malloc(xn * sizeof(float));
    int32_t y[2] = {3, 7};
    for (size_t i = 0; i < xn; i++)
        x[i] = base_rng_uniform(77, i) - 0.5f;
    for (int s = 0; s < 2; s++) {
        model_set_batch(&a, x, y);
        double loss = model_train_step(&a, (real)meta.sched.lr);
        cr_assert(isfinite(loss) && loss > 0, "step %d: loss %g", s, loss);
    }
    cr_assert_eq(a.step, 39);
    model_get_tensor(&a, 1, 0, w);
    cr_assert_neq(memcmp(w, want.params[1], a.plan.n_params * sizeof(real)), 0,
                  "the steps changed nothing");
    free(w);
    free(x);
    free_bufs(&want);
    model_free(&a);
}

Test(checkpoint, mismatched_config_refused_model_untouched)
{
    char *dir = tt_tmpdir("ckpt"), err[1024];
    model_placement cpu = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
    model a, b, b0;
    tower_config other = TINY;
    other.batch = 4; /* same parameter count, different run */
    cr_assert_eq(model_init(&a, &TINY, &cpu, 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&b, &other, &cpu, 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&b0, &other, &cpu, 2, err, sizeof err), 0, "%s", err);
    train_ckpt_meta m = make_meta(5), got;
    cr_assert_eq(train_ckpt_save(dir, &m, &a, 2, err, sizeof err), 0, "%s", err);
    char p[4200];
    ckpt_path(p, sizeof p, dir, 5);
    cr_assert_eq(train_ckpt_load(p, &got, &b, err, sizeof err), -1);
    cr_assert(strstr(err, "config.batch") && strstr(err, p), "%s", err);
    cr_assert(model_tensors_equal(&b, &b0, 0) && model_tensors_equal(&b, &b0, 2));
    cr_assert_eq(b.step, 0);
    cr_assert_eq(b.seed, 2);
    /* a different width is refused by name too */
    tower_config wide = TINY;
    wide.width_div = 4;
    cr_assert_eq(train_ckpt_load_buffers(p, &got, &wide, 0, NULL, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "config.width_div"), "%s", err);
    model_free(&a);
    model_free(&b);
    model_free(&b0);
    rm_rf(dir);
    free(dir);
}

/* ---- corruption ------------------------------------------------------------------------- */

typedef struct {
    char *dir;
    char good[4200], bad[4200];
    unsigned char *raw;
    size_t len;
    rec r[MAXREC];
    int nr;
} fixture;

static void fixture_make(fixture *f)
{
    f->dir = tt_tmpdir("ckpt");
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 0.25f);
    train_ckpt_meta m = make_meta(64);
    save_bufs(f->dir, &m, &b, 0);
    free_bufs(&b);
    ckpt_path(f->good, sizeof f->good, f->dir, 64);
    snprintf(f->bad, sizeof f->bad, "%s/bad.ttc", f->dir);
    f->raw = slurp(f->good, &f->len);
    f->nr = decode(f->raw, f->len, f->r, MAXREC);
}

static void fixture_free(fixture *f)
{
    free(f->raw);
    rm_rf(f->dir);
    free(f->dir);
}

static const rec *rec_at(const fixture *f, size_t off)
{
    for (int i = 0; i < f->nr; i++)
        if (off >= f->r[i].start && off < f->r[i].end)
            return &f->r[i];
    return NULL;
}

static void flip_and_check(fixture *f, size_t off, int bit)
{
    unsigned char *c = malloc(f->len);
    memcpy(c, f->raw, f->len);
    c[off] ^= (unsigned char)(1u << bit);
    spit(f->bad, c, f->len);
    free(c);
    const rec *r = rec_at(f, off);
    char what[128];
    snprintf(what, sizeof what, "flip byte %zu bit %d", off, bit);
    const char *needle;
    if (!r)
        needle = off < 8 ? "header.magic" : "header";
    else if (off >= r->data_start)
        needle = r->name; /* a data byte: the tensor is named */
    else
        needle = "record";
    expect_refused(f->bad, needle, what);
}

Test(checkpoint, bit_flips_every_header_and_meta_byte, .timeout = 120)
{
    fixture f;
    fixture_make(&f);
    /* the file header and every record head: every byte, two bits each */
    for (size_t off = 0; off < 28; off++) {
        flip_and_check(&f, off, 0);
        flip_and_check(&f, off, 7);
    }
    int checked = 0;
    for (int i = 0; i < f.nr; i++) {
        /* small records: every byte, heads of the tensors: every byte */
        size_t stop = f.r[i].nbytes <= 128 ? f.r[i].end : f.r[i].data_start;
        for (size_t off = f.r[i].start; off < stop; off++, checked++)
            flip_and_check(&f, off, (int)(off % 8));
    }
    cr_assert(checked > 300, "only %d bytes checked", checked);
    fixture_free(&f);
}

Test(checkpoint, bit_flips_sampled_tensor_bytes, .timeout = 120)
{
    fixture f;
    fixture_make(&f);
    int checked = 0, big = 0;
    for (int i = 0; i < f.nr; i++) {
        if (f.r[i].nbytes <= 128)
            continue;
        big++;
        /* first, last, and 60 spread positions of each tensor */
        size_t a = f.r[i].data_start, n = f.r[i].nbytes;
        flip_and_check(&f, a, 3);
        flip_and_check(&f, a + n - 1, 6);
        for (int k = 0; k < 60; k++, checked++)
            flip_and_check(&f, a + (n * (size_t)k * 7919 / 60) % n, k % 8);
    }
    cr_assert(big >= 32, "only %d tensors over 128 bytes", big); /* every weight */
    cr_assert_eq(checked, big * 60);
    fixture_free(&f);
}

Test(checkpoint, truncation_at_every_boundary_and_sampled_lengths, .timeout = 120)
{
    fixture f;
    fixture_make(&f);
    size_t cuts[8 + 5 * MAXREC + 40];
    int nc = 0;
    size_t fixed[] = {0, 1, 7, 8, 12, 27, 28, 29};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        cuts[nc++] = fixed[i];
    for (int i = 0; i < f.nr; i++) {
        cuts[nc++] = f.r[i].start;          /* before a record */
        cuts[nc++] = f.r[i].start + 4;      /* after name_len */
        cuts[nc++] = f.r[i].data_start - 1; /* inside the head's last checksum */
        cuts[nc++] = f.r[i].data_start;     /* head complete, no data */
        cuts[nc++] = f.r[i].end - 1;        /* one data byte short */
    }
    for (int k = 1; k < 40; k++)
        cuts[nc++] = f.len * (size_t)k / 40;
    cuts[nc++] = f.len - 1;
    for (int i = 0; i < nc; i++) {
        size_t cut = cuts[i];
        cr_assert(cut < f.len);
        char what[96];
        spit(f.bad, f.raw, cut);
        snprintf(what, sizeof what, "truncated to %zu of %zu", cut, f.len);
        expect_refused(f.bad, cut < 28 ? "header" : "truncated", what);
        /* the same cut with a header rewritten to claim the short length: the record
         * reader itself must notice (every record boundary is a cut here too) */
        if (cut >= 28) {
            unsigned char *c = malloc(f.len);
            memcpy(c, f.raw, cut);
            wr64(c + 16, cut);
            wr32(c + 24, crc(c, 24));
            spit(f.bad, c, cut);
            free(c);
            snprintf(what, sizeof what, "truncated to %zu, header fixed", cut);
            expect_refused(f.bad, cut == 28 ? "record" : NULL, what);
        }
    }
    /* trailing bytes are refused as well */
    unsigned char *c = malloc(f.len + 5);
    memcpy(c, f.raw, f.len);
    memset(c + f.len, 0, 5);
    spit(f.bad, c, f.len + 5);
    expect_refused(f.bad, "trailing", "5 trailing bytes");
    free(c);
    fixture_free(&f);
}

/* Re-encodes the good file with one change and valid checksums, so that the field check
 * (not a checksum) has to catch it. */
typedef void (*mutator)(wrec *w, int *nr, uint32_t *version, int64_t *fb_delta, void *arg);

static void mutated(fixture *f, mutator mut, void *arg, const char *needle, const char *what)
{
    wrec w[MAXREC];
    int nr = to_wrecs(f->raw, f->r, f->nr, w);
    uint32_t version = 2;
    int64_t delta = 0;
    mut(w, &nr, &version, &delta, arg);
    size_t cap = f->len * 2 + 4096;
    unsigned char *out = calloc(1, cap);
    size_t len = encode(out, w, nr, version, delta);
    cr_assert(len <= cap);
    for (int i = 0; i < nr; i++)
        free(w[i].owned);
    spit(f->bad, out, len);
    free(out);
    expect_refused(f->bad, needle, what);
}

static void m_ndim(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[find(w, *nr, "tower0.conv1.weight")].ndim = 1000;
}
static void m_shape_huge(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    int i = find(w, *nr, "tower1.fc6.weight");
    w[i].ndim = 1;
    w[i].shape[0] = (int64_t)1 << 62;
    w[i].nbytes = (uint64_t)1 << 62; /* consistent-looking but absurd */
}
static void m_shape_neg(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[find(w, *nr, "config")].shape[0] = -6;
}
static void m_overflow(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    int i = find(w, *nr, "tower0.conv2.weight.momentum");
    w[i].ndim = 4; /* 2^36 * 2^36 * ... overflows 64 bits */
    for (int k = 0; k < 4; k++)
        w[i].shape[k] = (int64_t)1 << 36;
}
static void m_nbytes_past_eof(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    int i = find(w, *nr, "tower1.fc8.weight.momentum");
    w[i].shape[0] *= 1000;
    w[i].nbytes *= 1000; /* matches the shape; the file holds 1/1000 of it */
}
static void m_nbytes_wrong(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[find(w, *nr, "stats")].nbytes += 8;
}
static void m_nbytes_neg(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[find(w, *nr, "run")].nbytes = (uint64_t)-8;
}
static void m_namelen0(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[1].has_name_len = 1;
    w[1].name_len = 0;
}
static void m_namelen_big(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[2].has_name_len = 1;
    w[2].name_len = 1000000;
}
static void m_name_bad(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[3].name[0] = '/';
}
static void m_version(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    *v = 1;
}
static void m_fb_huge(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    *d = (int64_t)1 << 62;
}
static void m_nrec0(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    *nr = 0;
}
/* drops the record named by arg */
static void m_missing(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    int i = find(w, *nr, a);
    memmove(&w[i], &w[i + 1], (size_t)(*nr - i - 1) * sizeof *w);
    (*nr)--;
}
static void m_dup(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[*nr] = w[find(w, *nr, "stats")];
    (*nr)++;
}
static void m_foreign(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[*nr] = w[find(w, *nr, "stats")];
    snprintf(w[*nr].name, sizeof w[*nr].name, "tower2.conv1.weight");
    (*nr)++;
}
static void m_dtype(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    int i = find(w, *nr, "tower0.fc7.weight");
    w[i].dtype = 2; /* f64 with consistent sizes: only the dtype check can refuse it */
    w[i].shape[0] /= 2;
    w[i].nbytes = (uint64_t)(w[i].shape[0] * w[i].shape[1]) * 8;
    w[i].data_len = (size_t)w[i].nbytes;
}
static void m_dtype_unknown(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    w[find(w, *nr, "config")].dtype = 9;
}

/* Integer fields of the small records: arg = {record, index, value}. */
typedef struct {
    const char *rec;
    int idx;
    int64_t value; /* f64 records: value / 1000 */
    const char *needle;
} field_poke;

static void m_poke(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    const field_poke *p = a;
    int i = find(w, *nr, p->rec);
    unsigned char *copy = malloc(w[i].data_len);
    memcpy(copy, w[i].data, w[i].data_len);
    wr64(copy + 8 * p->idx, (uint64_t)p->value);
    w[i].data = w[i].owned = copy;
}

static void m_poke_f64(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    const field_poke *p = a;
    int i = find(w, *nr, p->rec);
    unsigned char *copy = malloc(w[i].data_len);
    memcpy(copy, w[i].data, w[i].data_len);
    double x = (double)p->value / 1000.0;
    memcpy(copy + 8 * p->idx, &x, 8);
    w[i].data = w[i].owned = copy;
}

Test(checkpoint, absurd_sizes_and_bad_fields_refused, .timeout = 60)
{
    fixture f;
    fixture_make(&f);
    mutated(&f, m_ndim, NULL, "ndim 1000", "ndim 1000");
    mutated(&f, m_shape_huge, NULL, "shape[0]", "shape 2^62");
    mutated(&f, m_shape_neg, NULL, "shape[0] = -6", "negative shape");
    mutated(&f, m_overflow, NULL, "overflows", "shape product overflow");
    mutated(&f, m_nbytes_past_eof, NULL, "past the end", "nbytes past EOF");
    mutated(&f, m_nbytes_wrong, NULL, "'stats': nbytes", "nbytes != shape");
    mutated(&f, m_nbytes_neg, NULL, "'run': nbytes", "negative nbytes");
    mutated(&f, m_namelen0, NULL, "name_len 0", "name_len 0");
    mutated(&f, m_namelen_big, NULL, "name_len 1000000", "name_len huge");
    mutated(&f, m_name_bad, NULL, "name has a bad character", "name with '/'");
    mutated(&f, m_version, NULL, "header.version 1 is not supported (this build reads version 2)",
            "version 1");
    mutated(&f, m_fb_huge, NULL, "header.file_bytes", "file_bytes 2^62");
    mutated(&f, m_nrec0, NULL, "header.n_records 0", "no records");
    mutated(&f, m_missing, (void *)"cursor", "'cursor' is missing", "cursor missing");
    mutated(&f, m_missing, (void *)"data", "'data' is missing", "data missing");
    mutated(&f, m_missing, (void *)"tower1.conv4.bias.momentum", "'tower1.conv4.bias.momentum' is missing",
            "one momentum tensor missing");
    mutated(&f, m_dup, NULL, "'stats' appears twice", "duplicate");
    mutated(&f, m_foreign, NULL, "'tower2.conv1.weight' is not part", "foreign record");
    mutated(&f, m_dtype, NULL, "'tower0.fc7.weight': dtype f64", "wrong dtype");
    mutated(&f, m_dtype_unknown, NULL, "dtype 9 unknown", "unknown dtype");

    field_poke pokes[] = {
        {"config", 0, 3, "config.towers"},     {"config", 2, 0, "config.batch"},
        {"config", 1, -5, "config.classes"},   {"config", 3, 1LL << 40, "config.in_size"},
        {"config", 5, 2, "run.n_params"},      {"config", 1, 7, "config:"},
        {"run", 1, -1, "run.step"},            {"run", 5, 5, "run.n_params"},
        {"cursor", 2, -3, "cursor.pos"},       {"cursor", 1, -1, "cursor.epoch"},
        {"schedule.i", 4, 7, "schedule.drops"}, {"schedule.i", 0, 0, "schedule.patience"},
        {"schedule.i", 0, 1LL << 40, "schedule.i[0]"},
        {"nonfinite", 0, 0, "nonfinite.limit"}, {"nonfinite", 1, 5, "nonfinite.run"},
        {"data", 0, -1, "data.train_limit = -1 is negative"},
        {"data", 1, -500, "data.eval_every = -500 is negative"},
    };
    for (size_t k = 0; k < sizeof pokes / sizeof pokes[0]; k++)
        mutated(&f, m_poke, &pokes[k], pokes[k].needle, pokes[k].needle);
    field_poke fpokes[] = {
        {"schedule", 2, 500, "schedule.lr"},     /* lr 0.5 is not lr0 / 10^drops */
        {"schedule", 0, -10, "schedule.lr0"},
        {"schedule", 1, -1, "schedule.min_delta"},
    };
    for (size_t k = 0; k < sizeof fpokes / sizeof fpokes[0]; k++)
        mutated(&f, m_poke_f64, &fpokes[k], fpokes[k].needle, fpokes[k].needle);
    /* wrong magic */
    unsigned char *c = malloc(f.len);
    memcpy(c, f.raw, f.len);
    memcpy(c, "PK\x03\x04....", 8);
    spit(f.bad, c, f.len);
    expect_refused(f.bad, "header.magic", "zip magic");
    free(c);
    /* an empty file and a folder named like a checkpoint */
    spit(f.bad, "", 0);
    expect_refused(f.bad, "header", "empty file");
    fixture_free(&f);
}

/* A record re-encoded with another shape (and the byte count that goes with it). */
typedef struct {
    const char *rec;
    uint32_t ndim;
    int64_t shape[4];
} reshape;

static void m_reshape(wrec *w, int *nr, uint32_t *v, int64_t *d, void *a)
{
    const reshape *r = a;
    int i = find(w, *nr, r->rec);
    uint64_t count = 1;
    w[i].ndim = r->ndim;
    for (uint32_t k = 0; k < r->ndim; k++) {
        w[i].shape[k] = r->shape[k];
        count *= (uint64_t)r->shape[k];
    }
    w[i].nbytes = count * (w[i].dtype == 1 ? 4 : 8);
    cr_assert(w[i].nbytes <= w[i].data_len, "the tests only shrink or reshape");
    w[i].data_len = (size_t)w[i].nbytes;
}

Test(checkpoint, tensor_shape_mismatch_refused_by_name)
{
    fixture f;
    fixture_make(&f);
    /* TINY's conv2: 256 / 2 towers / 32 = 4 kernels per tower, reading conv1's 96 / 2 / 32
     * = 1 channel of its own tower, 5x5 */
    reshape k3 = {"tower0.conv2.weight", 4, {4, 1, 3, 3}};
    mutated(&f, m_reshape, &k3, ": tower0.conv2.weight has shape [4,1,3,3], the config gives "
            "[4,1,5,5]", "conv2 with 3x3 kernels");
    /* the same element count in other shapes: the shape itself is checked, not the size */
    reshape swapped = {"tower1.conv2.weight.momentum", 4, {1, 4, 5, 5}};
    mutated(&f, m_reshape, &swapped, ": tower1.conv2.weight.momentum has shape [1,4,5,5], the "
            "config gives [4,1,5,5]", "conv2 momentum transposed");
    /* conv3 reads both towers: 2 x conv2's 4 channels; 384 / 2 / 32 = 6 kernels */
    reshape one_source = {"tower1.conv3.weight", 4, {6, 4, 3, 3}};
    mutated(&f, m_reshape, &one_source, ": tower1.conv3.weight has shape [6,4,3,3], the config "
            "gives [6,8,3,3]", "conv3 reading one tower");
    reshape flat = {"tower0.conv1.weight", 1, {1 * 3 * 11 * 11}};
    mutated(&f, m_reshape, &flat, ": tower0.conv1.weight has shape [363], the config gives "
            "[1,3,11,11]", "conv1 flattened");
    reshape bias2d = {"tower1.fc8.bias", 2, {5, 1}};
    mutated(&f, m_reshape, &bias2d, ": tower1.fc8.bias has shape [5,1], the config gives [5]",
            "fc8 bias as a matrix");
    /* a small record's length is the format's */
    reshape cursor2 = {"cursor", 1, {2}};
    mutated(&f, m_reshape, &cursor2, "record 'cursor' has shape [2], format version 2 gives [3]",
            "short cursor");
    fixture_free(&f);
}

/* Records may come in any order: the same file with its records reversed loads the
 * same state into the same places. */
Test(checkpoint, records_in_any_order)
{
    fixture f;
    fixture_make(&f);
    wrec w[MAXREC], rev[MAXREC];
    int nr = to_wrecs(f.raw, f.r, f.nr, w);
    for (int i = 0; i < nr; i++)
        rev[i] = w[nr - 1 - i];
    unsigned char *out = calloc(1, f.len + 4096);
    size_t len = encode(out, rev, nr, 2, 0);
    cr_assert_eq(len, f.len);
    spit(f.bad, out, len);
    size_t n = tiny_n_params();
    bufs want = make_bufs(n, 0.25f), got = make_bufs(n, 3.0f); /* 0.25: fixture_make's */
    train_ckpt_meta a, b;
    char err[1024];
    cr_assert_eq(train_ckpt_load_buffers(f.good, &a, &TINY, n, NULL, NULL, err, sizeof err), 0,
                 "%s", err);
    cr_assert_eq(train_ckpt_load_buffers(f.bad, &b, &TINY, n, got.params, got.momentum, err,
                                         sizeof err), 0, "%s", err);
    assert_meta_eq(&a, &b);
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(memcmp(want.params[t], got.params[t], n * sizeof(real)), 0);
        cr_assert_eq(memcmp(want.momentum[t], got.momentum[t], n * sizeof(real)), 0);
    }
    free(out);
    free_bufs(&want);
    free_bufs(&got);
    fixture_free(&f);
}

/* A version-1 file (one record per tower arena, no data record) is refused by version,
 * before anything else is looked at. */
Test(checkpoint, version_1_file_refused)
{
    fixture f;
    fixture_make(&f);
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 0.5f);
    wrec w[N_SMALL + 4];
    int nr = to_wrecs(f.raw, f.r, N_SMALL - 1, w); /* the small records but data */
    for (int t = 0; t < 2; t++) {
        for (int mom = 0; mom < 2; mom++) {
            wrec *r = &w[nr++];
            memset(r, 0, sizeof *r);
            snprintf(r->name, sizeof r->name, "tower%d.%s", t, mom ? "momentum" : "params");
            r->dtype = sizeof(real) == 4 ? 1 : 2;
            r->ndim = 1;
            r->shape[0] = (int64_t)n;
            r->nbytes = n * sizeof(real);
            r->data = (const unsigned char *)(mom ? b.momentum[t] : b.params[t]);
            r->data_len = n * sizeof(real);
        }
    }
    unsigned char *out = calloc(1, f.len + 4096);
    size_t len = encode(out, w, nr, 1, 0);
    spit(f.bad, out, len);
    expect_refused(f.bad, "header.version 1 is not supported (this build reads version 2)",
                   "a version-1 file");
    free(out);
    free_bufs(&b);
    fixture_free(&f);
}

/* ---- the checkpoint folder ------------------------------------------------------------------ */

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        n += l > s && strcmp(de->d_name + l - s, suffix) == 0;
    }
    closedir(d);
    return n;
}

Test(checkpoint, keep_last_k)
{
    char *dir = tt_tmpdir("ckpt");
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 1.0f);
    char sub[4200], p[4300];
    snprintf(sub, sizeof sub, "%s/run/ckpt", dir); /* created by save, parents too */
    for (int64_t step = 100; step <= 600; step += 100) {
        train_ckpt_meta m = make_meta(step);
        save_bufs(sub, &m, &b, 3);
        cr_assert_eq(count_files(sub, ".ttc"), step / 100 < 3 ? (int)(step / 100) : 3);
    }
    for (int64_t step = 100; step <= 600; step += 100) {
        ckpt_path(p, sizeof p, sub, step);
        cr_assert_eq(file_exists(p), step >= 400, "step %lld", (long long)step);
    }
    /* re-saving an older step (a resume from it) keeps that file even past K */
    train_ckpt_meta m = make_meta(200);
    save_bufs(sub, &m, &b, 1);
    ckpt_path(p, sizeof p, sub, 200);
    cr_assert(file_exists(p));
    ckpt_path(p, sizeof p, sub, 600);
    cr_assert(file_exists(p), "the newest stays");
    /* keep <= 0 keeps all */
    for (int64_t step = 700; step <= 900; step += 100) {
        train_ckpt_meta mm = make_meta(step);
        save_bufs(sub, &mm, &b, 0);
    }
    cr_assert_eq(count_files(sub, ".ttc"), 5);
    /* steps past 8 digits sort by number, not by name */
    train_ckpt_meta big = make_meta(123456789012LL);
    save_bufs(sub, &big, &b, 2);
    char latest[4300], prev[4300], err[2048];
    cr_assert_eq(train_ckpt_latest(sub, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), 0, "%s", err);
    cr_assert(strstr(latest, "ckpt-123456789012.ttc"), "%s", latest);
    cr_assert_eq(count_files(sub, ".ttc"), 2);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}

/* off < 0 counts from the end (the last tensor's data) */
static void corrupt_byte(const char *path, long off)
{
    size_t len;
    unsigned char *b = slurp(path, &len);
    b[off < 0 ? len - (size_t)(-off) : (size_t)off % len] ^= 0x10;
    spit(path, b, len);
    free(b);
}

Test(checkpoint, latest_and_previous_when_newest_is_bad)
{
    char *dir = tt_tmpdir("ckpt");
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 2.0f);
    for (int64_t step = 10; step <= 40; step += 10) {
        train_ckpt_meta m = make_meta(step);
        save_bufs(dir, &m, &b, 0);
    }
    char latest[4300], prev[4300], err[4096], p40[4300], p30[4300], p20[4300];
    ckpt_path(p40, sizeof p40, dir, 40);
    ckpt_path(p30, sizeof p30, dir, 30);
    ckpt_path(p20, sizeof p20, dir, 20);
    cr_assert_eq(train_ckpt_latest(dir, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), 0, "%s", err);
    cr_assert_str_eq(latest, p40);
    cr_assert_str_eq(prev, "");

    corrupt_byte(p40, -100); /* inside a tensor */
    cr_assert_eq(train_ckpt_latest(dir, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), 1);
    cr_assert_str_eq(latest, p40);
    cr_assert_str_eq(prev, p30);
    char want[9000];
    snprintf(want, sizeof want, "newest checkpoint %s is bad (", p40);
    cr_assert(strstr(err, want), "%s", err);
    snprintf(want, sizeof want, "previous good one: %s (use --resume %s)", p30, p30);
    cr_assert(strstr(err, want), "%s", err);
    cr_assert(strstr(err, "checksum"), "the reason is given: %s", err);

    /* --resume DIR refuses and offers the previous one; --resume FILE takes that file */
    char path[4300];
    cr_assert_eq(train_ckpt_resolve(dir, path, sizeof path, err, sizeof err), -1);
    cr_assert(strstr(err, "use --resume") && strstr(err, p30), "%s", err);
    cr_assert_eq(train_ckpt_resolve(p30, path, sizeof path, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(path, p30);

    /* two bad in a row: the third newest is offered */
    cr_assert_eq(truncate(p30, 100), 0);
    cr_assert_eq(train_ckpt_latest(dir, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), 1);
    cr_assert_str_eq(prev, p20);
    /* all bad: -1, the newest's reason given */
    char p10[4300];
    ckpt_path(p10, sizeof p10, dir, 10);
    corrupt_byte(p20, 3);
    corrupt_byte(p10, 40);
    cr_assert_eq(train_ckpt_latest(dir, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), -1);
    cr_assert(strstr(err, "no older good one") && strstr(err, p40), "%s", err);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}

Test(checkpoint, resolve_run_folder_and_empty)
{
    char *dir = tt_tmpdir("ckpt"), sub[4200], path[4300], err[2048], want[4300];
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 3.0f);
    cr_assert_eq(train_ckpt_resolve(dir, path, sizeof path, err, sizeof err), -1);
    cr_assert(strstr(err, "no checkpoints"), "%s", err);
    snprintf(sub, sizeof sub, "%s/%s", dir, TRAIN_CKPT_SUBDIR);
    train_ckpt_meta m = make_meta(8);
    save_bufs(sub, &m, &b, 2);
    cr_assert_eq(train_ckpt_resolve(dir, path, sizeof path, err, sizeof err), 0, "%s", err);
    ckpt_path(want, sizeof want, sub, 8);
    cr_assert_str_eq(path, want);
    cr_assert_eq(train_ckpt_resolve("/nonexistent/run", path, sizeof path, err, sizeof err), -1);
    cr_assert(strstr(err, "/nonexistent/run"), "%s", err);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}

Test(checkpoint, leftover_tmp_is_ignored_and_cleaned)
{
    char *dir = tt_tmpdir("ckpt");
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 4.0f);
    train_ckpt_meta m = make_meta(50);
    save_bufs(dir, &m, &b, 3);
    /* a writer killed mid-way at a later step leaves a .tmp: never a candidate */
    char tmp[4300], p50[4300], latest[4300], prev[4300], err[2048];
    ckpt_path(p50, sizeof p50, dir, 50);
    snprintf(tmp, sizeof tmp, "%s/ckpt-00000099.ttc.tmp", dir);
    size_t len;
    unsigned char *raw = slurp(p50, &len);
    spit(tmp, raw, len / 2);
    cr_assert_eq(train_ckpt_latest(dir, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), 0, "%s", err);
    cr_assert_str_eq(latest, p50);
    /* even a complete-looking .tmp is not used */
    spit(tmp, raw, len);
    cr_assert_eq(train_ckpt_latest(dir, latest, sizeof latest, prev, sizeof prev, err,
                                   sizeof err), 0, "%s", err);
    cr_assert_str_eq(latest, p50);
    /* the next save removes it */
    train_ckpt_meta m2 = make_meta(60);
    save_bufs(dir, &m2, &b, 3);
    cr_assert(!file_exists(tmp));
    cr_assert_eq(count_files(dir, ".tmp"), 0);
    free(raw);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}

Test(checkpoint, failed_save_leaves_previous_untouched)
{
    char *dir = tt_tmpdir("ckpt"), err[2048], p[4300], blocker[4300];
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 5.0f);
    train_ckpt_meta m = make_meta(1);
    save_bufs(dir, &m, &b, 3);
    ckpt_path(p, sizeof p, dir, 1);
    size_t l1;
    unsigned char *before = slurp(p, &l1);
    /* the final name of the next checkpoint is a folder: rename must fail */
    ckpt_path(blocker, sizeof blocker, dir, 2);
    cr_assert_eq(mkdir(blocker, 0777), 0);
    char sub[4400];
    snprintf(sub, sizeof sub, "%s/x", blocker);
    spit(sub, "x", 1);
    train_ckpt_meta m2 = make_meta(2);
    cr_assert_eq(train_ckpt_save_buffers(dir, &m2, n, (const real *const *)b.params,
                                         (const real *const *)b.momentum, 1, err, sizeof err),
                 -1);
    cr_assert(strstr(err, "ckpt-00000002.ttc"), "%s", err);
    size_t l2;
    unsigned char *after = slurp(p, &l2);
    cr_assert(l1 == l2 && memcmp(before, after, l1) == 0, "step 1 changed");
    cr_assert_eq(count_files(dir, ".tmp"), 0, "the .tmp is removed on failure");
    /* a folder that cannot be created */
    char filedir[4400];
    snprintf(filedir, sizeof filedir, "%s/afile", dir);
    spit(filedir, "x", 1);
    cr_assert_eq(train_ckpt_save_buffers(filedir, &m2, n, (const real *const *)b.params,
                                         (const real *const *)b.momentum, 1, err, sizeof err),
                 -1);
    cr_assert(strstr(err, "afile"), "%s", err);
    /* a state the reader would refuse is not written */
    train_ckpt_meta neg = make_meta(3);
    neg.train_limit = -1;
    cr_assert_eq(train_ckpt_save_buffers(dir, &neg, n, (const real *const *)b.params,
                                         (const real *const *)b.momentum, 1, err, sizeof err),
                 -1);
    cr_assert(strstr(err, "data.train_limit = -1 is negative"), "%s", err);
    cr_assert_eq(train_ckpt_save_buffers(dir, &m2, n - 1, (const real *const *)b.params,
                                         (const real *const *)b.momentum, 1, err, sizeof err),
                 -1);
    cr_assert(strstr(err, "the config gives"), "%s", err);
    ckpt_path(p, sizeof p, dir, 3);
    cr_assert(!file_exists(p), "%s written", p);
    free(before);
    free(after);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}

/* The kill test's hook: TWOTOWER_DEBUG_CKPT_PAUSE_MS stops a write halfway with its first
 * half in the .tmp, changes no byte of the file written, and a bad value is refused. */
Test(checkpoint, debug_pause_hook)
{
    char *dir = tt_tmpdir("ckpt"), err[2048], p[4300], tmp[4400];
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 6.0f);
    train_ckpt_meta m = make_meta(7);
    unsetenv("TWOTOWER_DEBUG_CKPT_PAUSE_MS");
    cr_assert_eq(train_ckpt_debug_pause_ms(err, sizeof err), 0);
    save_bufs(dir, &m, &b, 0);
    ckpt_path(p, sizeof p, dir, 7);
    size_t len;
    unsigned char *plain = slurp(p, &len);
    cr_assert_eq(unlink(p), 0);

    setenv("TWOTOWER_DEBUG_CKPT_PAUSE_MS", "1", 1);
    cr_assert_eq(train_ckpt_debug_pause_ms(err, sizeof err), 1);
    save_bufs(dir, &m, &b, 0);
    size_t len2;
    unsigned char *paused = slurp(p, &len2);
    cr_assert(len == len2 && memcmp(plain, paused, len) == 0, "the pause changed the file");
    cr_assert_eq(unlink(p), 0);

    /* a writer killed in the pause leaves a .tmp that is the file's first part, and nothing
     * under the checkpoint's name */
    setenv("TWOTOWER_DEBUG_CKPT_PAUSE_MS", "30000", 1);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char cerr[1024];
        train_ckpt_save_buffers(dir, &m, b.n, (const real *const *)b.params,
                                (const real *const *)b.momentum, 0, cerr, sizeof cerr);
        _exit(0);
    }
    size_t part = 0;
    for (int i = 0; i < 20000 && part == 0; i++) { /* up to 20 s for the child to get there */
        struct stat st;
        if (stat(tmp, &st) == 0 && st.st_size > 28) part = (size_t)st.st_size;
        else nanosleep(&(struct timespec){0, 1000000L}, NULL);
    }
    /* the first half is flushed whole once the size stays put (3 looks, 50 ms apart) */
    struct stat st;
    for (int same = 0, i = 0; same < 3 && i < 400; i++) {
        nanosleep(&(struct timespec){0, 50000000L}, NULL);
        cr_assert_eq(stat(tmp, &st), 0);
        same = (size_t)st.st_size == part ? same + 1 : 0;
        part = (size_t)st.st_size;
    }
    kill(pid, SIGKILL);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status), "the writer finished before its kill");
    cr_assert(part > 28 && part < len, ".tmp of %zu bytes, the file has %zu", part, len);
    size_t tlen;
    unsigned char *t = slurp(tmp, &tlen);
    cr_assert_eq(tlen, part);
    cr_assert(memcmp(t, plain, tlen) == 0, "the .tmp is not the file's first part");
    cr_assert(!file_exists(p), "a killed writer left %s", p);

    /* a bad value: refused before anything is written, naming the variable */
    const char *bad[] = {"x", "-1", "60001", "2.5"};
    for (int i = 0; i < 4; i++) {
        setenv("TWOTOWER_DEBUG_CKPT_PAUSE_MS", bad[i], 1);
        cr_assert_eq(train_ckpt_debug_pause_ms(err, sizeof err), -1, "%s", bad[i]);
        cr_assert(strstr(err, "TWOTOWER_DEBUG_CKPT_PAUSE_MS"), "%s", err);
        cr_assert_eq(train_ckpt_save_buffers(dir, &m, n, (const real *const *)b.params,
                                             (const real *const *)b.momentum, 0, err,
                                             sizeof err), -1, "%s", bad[i]);
        cr_assert(strstr(err, bad[i]), "%s", err);
        cr_assert(!file_exists(p), "%s written under %s", p, bad[i]);
    }
    unsetenv("TWOTOWER_DEBUG_CKPT_PAUSE_MS");
    free(t);
    free(plain);
    free(paused);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}

Test(checkpoint, ckpt_check_subcommand)
{
    char *dir = tt_tmpdir("ckpt"), p[4300];
    size_t n = tiny_n_params();
    bufs b = make_bufs(n, 6.0f);
    train_ckpt_meta m = make_meta(77);
    save_bufs(dir, &m, &b, 3);
    ckpt_path(p, sizeof p, dir, 77);
    char *ok_file[] = {"ckpt-check", p, NULL};
    char *ok_dir[] = {"ckpt-check", dir, NULL};
    char *none[] = {"ckpt-check", NULL};
    /* what it prints: the tensor count, the run's data flags, and each tensor's shape once */
    char out_path[4400];
    snprintf(out_path, sizeof out_path, "%s/check.txt", dir);
    fflush(stdout);
    int saved = dup(1);
    FILE *cap = fopen(out_path, "w");
    cr_assert(saved >= 0 && cap);
    dup2(fileno(cap), 1);
    int rc = train_ckpt_check_main(2, ok_file);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    fclose(cap);
    cr_assert_eq(rc, 0);
    size_t len;
    char *text = (char *)slurp(out_path, &len);
    text[len] = 0;
    const char *needles[] = {": OK: step 77", "64 tensors", "train_limit 48", "eval_every 500",
                             "conv1.weight [1,3,11,11] conv1.bias [1]",
                             "conv3.weight [6,8,3,3]", "fc8.weight [5,", "fc8.bias [5]\n"};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        cr_assert(strstr(text, needles[i]), "ckpt-check output lacks '%s':\n%s", needles[i],
                  text);
    free(text);
    unlink(out_path);
    cr_assert_eq(train_ckpt_check_main(2, ok_file), 0);
    cr_assert_eq(train_ckpt_check_main(2, ok_dir), 0);
    cr_assert_eq(train_ckpt_check_main(1, none), 2);
    corrupt_byte(p, -2000);
    cr_assert_eq(train_ckpt_check_main(2, ok_file), 1);
    cr_assert_eq(train_ckpt_check_main(2, ok_dir), 1);
    char *missing[] = {"ckpt-check", "/nonexistent.ttc", NULL};
    cr_assert_eq(train_ckpt_check_main(2, missing), 1);
    /* a well-formed file whose momentum holds a NaN: not a checkpoint to resume from */
    b.momentum[1][n / 2] = NAN;
    m = make_meta(78);
    save_bufs(dir, &m, &b, 3);
    ckpt_path(p, sizeof p, dir, 78);
    char *nan_file[] = {"ckpt-check", p, NULL};
    cr_assert_eq(train_ckpt_check_main(2, nan_file), 1);
    free_bufs(&b);
    rm_rf(dir);
    free(dir);
}
