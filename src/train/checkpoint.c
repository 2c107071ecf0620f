/* checkpoint: the .ttc format (see checkpoint.h), written crash-safe (base_out) and read
 * whole into memory, where every size is checked against the bytes actually present before
 * it is used, so a bad file is refused, never half-loaded. The run state goes through one
 * field table (FIELDS) both ways; the tensors are export's (train_tower_tensors). */
#include "train/checkpoint.h"

#include "data/data.h"

#include "base/base.h"
#include "train/export.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c writes tensor data as little-endian host bytes"
#endif

static const unsigned char CKPT_MAGIC[8] = {'T', 'T', 'C', 'K', 'P', 'T', '\r', '\n'};
#define HEADER_BYTES 28
#define NAME_MAX_LEN 63
#define MAX_DIMS 4
#define MAX_DIM_VALUE ((int64_t)1 << 40)
#define MAX_FILE_BYTES ((uint64_t)1 << 38) /* 256 GiB: far above the paper's net (~1 GB) */

enum { DT_F32 = 1, DT_F64 = 2, DT_I64 = 3 };

#if defined(TOWER_F64)
#define DT_REAL DT_F64
#else
#define DT_REAL DT_F32
#endif

/* ---- little helpers ----------------------------------------------------------------- */

static uint32_t crc_of(const void *p, size_t n)
{
    return (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), (const Bytef *)p, n);
}

static size_t dtype_size(uint32_t dt)
{
    return dt == DT_F32 ? 4 : (dt == DT_F64 || dt == DT_I64) ? 8 : 0;
}
static const char *dtype_name(uint32_t dt)
{
    return dt == DT_F32 ? "f32" : dt == DT_F64 ? "f64" : dt == DT_I64 ? "i64" : "?";
}

/* ---- the run state: one table, written and read by it ------------------------------
 * Every field of train_ckpt_meta that a checkpoint stores is one row: the record it goes
 * in, its name in messages, its C type and place, and the range the reader accepts (the
 * writer checks the same, so a state the reader would refuse is never written). The rows
 * of a record are consecutive and are stored in row order, 8 bytes each: integers as i64
 * (the unsigned seeds as their bits), doubles as their f64 bits; a record of doubles only
 * is typed f64, any other i64. A new field is one row (and its member in
 * train_ckpt_meta); as a row changes its record's length, it comes with a new
 * TRAIN_CKPT_VERSION, and the reader refuses the files of other versions. Rows a version
 * added carry it (.since): a file of an older version has none of them. */

typedef enum { F_INT, F_I32, F_I64, F_U64, F_SIZE, F_F64 } field_type;

typedef struct {
    const char *record;
    const char *name;  /* "config.towers": as messages and the validators name it */
    field_type type;
    size_t off;        /* offsetof(train_ckpt_meta, member) */
    int64_t lo, hi;    /* the accepted range of an integer field */
    uint32_t since;    /* the first format version with this row (0: every one) */
} ckpt_field;

#define ROW(rec, name, type, member, ...) \
    {rec, name, type, offsetof(train_ckpt_meta, member), __VA_ARGS__}
/* rows of version 3 files only: the net other than the two defaults */
#define ROW3(rec, name, type, member, ...) \
    {rec, name, type, offsetof(train_ckpt_meta, member), __VA_ARGS__, 3}
#define ANY INT64_MIN, INT64_MAX
#define NONNEG 0, INT64_MAX

static const ckpt_field FIELDS[] = {
    /* bounded before tower_plan_make multiplies them: a file could hold any number */
    ROW("config", "config.towers", F_INT, cfg.towers, 1, 2),
    ROW("config", "config.classes", F_INT, cfg.classes, 1, 1 << 20),
    ROW("config", "config.batch", F_INT, cfg.batch, 1, 1 << 16),
    ROW("config", "config.in_size", F_INT, cfg.in_size, 1, 1 << 14),
    ROW("config", "config.in_ch", F_INT, cfg.in_ch, 1, 64),
    ROW("config", "config.width_div", F_INT, cfg.width_div, 1, 1 << 12),
    ROW("run", "run.seed", F_U64, seed, ANY),
    ROW("run", "run.step", F_I64, step, NONNEG),
    ROW("run", "run.epoch", F_I64, epoch, NONNEG),
    ROW("run", "run.model_seed", F_U64, model_seed, ANY),
    ROW("run", "run.model_step", F_I64, model_step, NONNEG),
    ROW("run", "run.n_params", F_SIZE, n_params, NONNEG), /* = the config's, checked apart */
    ROW("cursor", "cursor.seed", F_U64, cursor.seed, ANY),
    ROW("cursor", "cursor.epoch", F_I64, cursor.epoch, NONNEG),
    ROW("cursor", "cursor.pos", F_I64, cursor.pos, NONNEG),
    /* the schedule's own ranges are train_sched_validate's */
    ROW("schedule", "schedule.lr0", F_F64, sched.lr0, ANY),
    ROW("schedule", "schedule.min_delta", F_F64, sched.min_delta, ANY),
    ROW("schedule", "schedule.lr", F_F64, sched.lr, ANY),
    ROW("schedule", "schedule.best", F_F64, sched.best, ANY),
    ROW("schedule.i", "schedule.patience", F_I32, sched.patience, ANY),
    ROW("schedule.i", "schedule.max_drops", F_I32, sched.max_drops, ANY),
    ROW("schedule.i", "schedule.best_eval", F_I64, sched.best_eval, ANY),
    ROW("schedule.i", "schedule.evals", F_I64, sched.evals, ANY),
    ROW("schedule.i", "schedule.drops", F_I32, sched.drops, ANY),
    ROW("schedule.i", "schedule.bad", F_I32, sched.bad, ANY),
    ROW("schedule.i", "schedule.stopped", F_I32, sched.stopped, ANY),
    ROW("nonfinite", "nonfinite.limit", F_I32, nonfinite.limit, 1, INT32_MAX),
    ROW("nonfinite", "nonfinite.run", F_I32, nonfinite.run, 0, INT32_MAX),
    ROW("nonfinite", "nonfinite.skipped", F_I64, nonfinite.skipped, ANY),
    ROW("stats", "stats.best_top1", F_F64, stats.best_top1, ANY),
    ROW("stats", "stats.best_top5", F_F64, stats.best_top5, ANY),
    ROW("stats", "stats.best_step", F_F64, stats.best_step, ANY),
    ROW("stats", "stats.images_seen", F_F64, stats.images_seen, ANY),
    ROW("stats", "stats.train_seconds", F_F64, stats.train_seconds, ANY),
    ROW("stats", "stats.last_loss", F_F64, stats.last_loss, ANY),
    ROW("stats", "stats.last_top1", F_F64, stats.last_top1, ANY),
    ROW("stats", "stats.last_top5", F_F64, stats.last_top5, ANY),
    ROW("interval", "interval.loss_ema", F_F64, interval.loss_ema, ANY),
    ROW("interval", "interval.loss_sum", F_F64, interval.loss_sum, ANY),
    ROW("interval", "interval.steps", F_F64, interval.steps, ANY),
    ROW("interval", "interval.top1_wrong", F_F64, interval.top1_wrong, ANY),
    ROW("interval", "interval.images", F_F64, interval.images, ANY),
    ROW("data", "data.train_limit", F_I64, train_limit, NONNEG),
    ROW("data", "data.eval_every", F_I64, eval_every, NONNEG),
    /* the net as preset + switches (tower_net_preset_id, tower_net_apply): a preset's
     * rows are part of the format; the switches' own ranges are tower_net_apply's */
    ROW3("net", "net.preset", F_INT, cfg.net.id, 1, TOWER_NET_PRESETS),
    ROW3("net", "net.lrn", F_INT, cfg.net.switches.lrn, -1, 1),
    ROW3("net", "net.pool_k", F_INT, cfg.net.switches.pool_k, 0, 64),
    ROW3("net", "net.pool_s", F_INT, cfg.net.switches.pool_s, 0, 64),
    ROW3("net", "net.act", F_INT, cfg.net.switches.act, -1, TOWER_ACT_TANH),
    ROW3("net", "net.optim", F_INT, cfg.net.switches.optim, 0, TOWER_OPTIM_ADAM),
    ROW3("net", "net.init", F_INT, cfg.net.switches.init, -1, TOWER_INIT_TORCH),
    ROW3("net", "net.updates", F_I64, model_updates, 0, INT64_MAX), /* Adam's t */
    ROW3("net.f", "net.dropout", F_F64, cfg.net.switches.dropout, ANY),
    ROW3("net.f", "net.momentum", F_F64, cfg.net.switches.momentum, ANY),
    ROW3("net.f", "net.weight_decay", F_F64, cfg.net.switches.weight_decay, ANY),
    ROW3("net.f", "net.beta1", F_F64, cfg.net.switches.beta1, ANY),
    ROW3("net.f", "net.beta2", F_F64, cfg.net.switches.beta2, ANY),
    ROW3("net.f", "net.eps", F_F64, cfg.net.switches.eps, ANY),
    ROW3("aug", "aug.pca_std", F_F64, pca_std, ANY), /* 0..10, checked apart */
    ROW3("aug.i", "aug.mirror", F_INT, mirror, 0, 1),
    ROW3("aug.i", "aug.downsample", F_INT, downsample, 1, 16),
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

_Static_assert(sizeof(int) == 4, "config fields are stored as i64 and read back into int");
_Static_assert(TRAIN_EXPORT_NAME_MAX == NAME_MAX_LEN + 1, "a tensor's name is a record's name");

/* One record of the run state: FIELDS[first .. first + count). */
typedef struct {
    const char *name;
    uint32_t dtype;
    int first, count;
} ckpt_record;

#define MAX_META_RECORDS N_FIELDS /* at most one record per field */
/* weight and bias, each with its momentum (and Adam's second moment), for every layer of
 * every tower */
#define MAX_TENSORS (2 * TOWER_MAX_LAYERS * 2 * 3)
/* A good file has at most MAX_META_RECORDS + MAX_TENSORS records (107 for the paper's
 * net with Adam); the bound on the header's count only has to keep a corrupt one from
 * sizing anything large, and leaves room for a foreign or duplicate record to be reported
 * by name. */
#define MAX_RECORDS 256

/* Version 2 holds only the nets it had: the default of each tower count (the paper's two
 * towers, `half` for one) with the paper's SGD. Those are still written as version 2,
 * byte for byte as before; any other net or optimizer makes a version 3 file, which adds
 * the net records (and Adam's second moments). */
static uint32_t ckpt_version_of(const train_ckpt_meta *m)
{
    const tower_net *n = &m->cfg.net;
    int def = m->cfg.towers == 1 ? TOWER_NET_HALF : TOWER_NET_ALEXNET2012;
    /* --pca-std, --mirror, --downsample: not in version 2 */
    if (m->pca_set || m->mirror_set || m->downsample > 1) return 3;
    if (n->n_layers == 0) return 2;
    return n->id == def && !tower_net_switched(&n->switches) ? 2 : 3;
}

/* The records of the run state in a file of this version, in FIELDS' order (the order
 * the writer puts them in). */
static int meta_records(ckpt_record *out, uint32_t version)
{
    int n = 0;
    for (int i = 0; i < (int)N_FIELDS; i++) {
        if (FIELDS[i].since > version)
            continue;
        if (n == 0 || strcmp(out[n - 1].name, FIELDS[i].record) != 0)
            out[n++] = (ckpt_record){FIELDS[i].record, DT_F64, i, 0};
        out[n - 1].count++;
        if (FIELDS[i].type != F_F64) /* f64 only when every row is a double */
            out[n - 1].dtype = DT_I64;
    }
    return n;
}

static void *field_at(train_ckpt_meta *m, const ckpt_field *f)
{
    return (char *)m + f->off;
}

/* An integer field as an i64 (a seed: its bits). */
static int64_t field_get(const train_ckpt_meta *m, const ckpt_field *f)
{
    const char *p = (const char *)m + f->off;
    int v32;
    int32_t i32;
    int64_t i64;
    uint64_t u64;
    size_t z;
    switch (f->type) {
    case F_INT: memcpy(&v32, p, sizeof v32); return v32;
    case F_I32: memcpy(&i32, p, sizeof i32); return i32;
    case F_I64: memcpy(&i64, p, sizeof i64); return i64;
    case F_U64: memcpy(&u64, p, sizeof u64); return (int64_t)u64;
    case F_SIZE: memcpy(&z, p, sizeof z); return z > (size_t)INT64_MAX ? -1 : (int64_t)z;
    case F_F64: break;
    }
    return 0;
}

/* Stores v (already checked against the field's range) into the field. */
static void field_set(train_ckpt_meta *m, const ckpt_field *f, int64_t v)
{
    void *p = field_at(m, f);
    int v32 = (int)v;
    int32_t i32 = (int32_t)v;
    uint64_t u64 = (uint64_t)v;
    size_t z = (size_t)v;
    switch (f->type) {
    case F_INT: memcpy(p, &v32, sizeof v32); break;
    case F_I32: memcpy(p, &i32, sizeof i32); break;
    case F_I64: memcpy(p, &v, sizeof v); break;
    case F_U64: memcpy(p, &u64, sizeof u64); break;
    case F_SIZE: memcpy(p, &z, sizeof z); break;
    case F_F64: break;
    }
}

/* v in f's range and in what its C type holds; else -1 with err "WHO: NAME = V ..." */
static int field_check(const ckpt_field *f, int index, int64_t v, const char *who, char *err,
                       size_t errlen)
{
    int64_t lo = f->lo, hi = f->hi;
    if ((f->type == F_INT || f->type == F_I32) && lo < INT32_MIN)
        lo = INT32_MIN;
    if ((f->type == F_INT || f->type == F_I32) && hi > INT32_MAX)
        hi = INT32_MAX;
    if (v >= lo && v <= hi)
        return 0;
    if (lo == 0 && v < 0)
        base_errf(err, errlen, "%s: %s = %lld is negative (%s[%d])", who, f->name,
                  (long long)v, f->record, index);
    else
        base_errf(err, errlen, "%s: %s = %lld out of range %lld..%lld (%s[%d])", who, f->name,
                  (long long)v, (long long)lo, (long long)hi, f->record, index);
    return -1;
}

/* What the reader checks beyond each field's range, on a whole state: the config makes a
 * net whose tower holds n_params, the schedule and the non-finite counter are consistent.
 * plan receives the config's tower plan. 0, or -1 with err. */
static int meta_check(const train_ckpt_meta *m, tower_plan *plan, const char *who, char *err,
                      size_t errlen)
{
    char why[512];
    if (tower_plan_make(plan, &m->cfg, why, sizeof why) != 0) {
        base_errf(err, errlen, "%s: config: not a usable net (%s)", who, why);
        return -1;
    }
    if (m->n_params != plan->n_params) {
        base_errf(err, errlen, "%s: run.n_params %zu per tower, but the config gives %zu", who,
                  m->n_params, plan->n_params);
        return -1;
    }
    if (train_sched_validate(&m->sched, why, sizeof why) != 0 ||
        train_nonfinite_validate(&m->nonfinite, why, sizeof why) != 0) {
        base_errf(err, errlen, "%s: %s", who, why);
        return -1;
    }
    return 0;
}

/* ---- the tensors: one record per weight, bias and momentum buffer ------------------- */

typedef struct {
    train_tensor t;   /* name, shape, place in the arena: train_tower_tensors (export's) */
    int tower, which; /* which: 0 params, 2 momentum, 3 Adam's second moment
                         (model_get_tensor's) */
} tensor_desc;

/* "[128,48,5,5]" */
static void fmt_shape(char *s, size_t n, uint32_t ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(s, n, "[");
    for (uint32_t d = 0; d < ndim && o < n; d++)
        o += (size_t)snprintf(s + o, n - o, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (o < n)
        snprintf(s + o, n - o, "]");
}

/* The tensors of a plan in file order: for each tower every layer's weight and bias, then
 * the same again as momentum (".momentum" after the name) and, for Adam, as the second
 * moment (".moment2"), named and shaped as export
 * names them. The reader copies each record into its place and nothing else, so the
 * tensors must tile the arena exactly ([w conv1][b conv1]...[w fc8][b fc8]); a plan where
 * they do not is refused here rather than written or loaded with holes. Returns the
 * count, or -1 with err. */
static int tensor_table(const tower_plan *plan, tensor_desc *td, char *err, size_t errlen)
{
    int n = 0;
    for (int t = 0; t < plan->cfg.towers; t++) {
        static const char *const suffix[3] = {"", ".momentum", ".moment2"};
        for (int k = 0; k < (plan->adam ? 3 : 2); k++) {
            train_tensor tt[2 * TOWER_MAX_LAYERS];
            int ntt = train_tower_tensors(tt, plan, t, "", suffix[k]);
            size_t next = 0;
            for (int i = 0; i < ntt; i++) {
                tensor_desc *d = &td[n++];
                d->t = tt[i];
                d->tower = t;
                d->which = k ? k + 1 : 0;
                int64_t prod = 1;
                for (int j = 0; j < tt[i].ndim; j++)
                    prod *= tt[i].shape[j];
                if ((uint64_t)prod != tt[i].count || tt[i].off != next) {
                    char sh[96];
                    fmt_shape(sh, sizeof sh, (uint32_t)tt[i].ndim, tt[i].shape);
                    base_errf(err, errlen, "%s: the tower plan gives %zu values at arena "
                              "offset %zu, but shape %s has %lld and the previous tensor "
                              "ends at %zu", tt[i].name, tt[i].count, tt[i].off, sh,
                              (long long)prod, next);
                    return -1;
                }
                next += tt[i].count;
            }
            if (next != plan->n_params) {
                base_errf(err, errlen, "tower%d: the tensors hold %zu values, the tower plan "
                          "says %zu per tower", t, next, plan->n_params);
                return -1;
            }
        }
    }
    return n;
}

/* ---- writing ------------------------------------------------------------------------ */

typedef struct {
    char name[NAME_MAX_LEN + 1];
    uint32_t dtype;
    uint32_t ndim;
    int64_t shape[MAX_DIMS];
    uint64_t nbytes;
    const void *data;          /* NULL for tower tensors: sliced from the source's arena */
    const tensor_desc *tensor; /* tower tensors */
} out_record;

typedef const real *(*tensor_source)(void *ctx, int t, int which, real *scratch);

static size_t record_head_bytes(const out_record *r)
{
    return 4 + strlen(r->name) + 4 + 4 + 8 * (size_t)r->ndim + 8 + 4 + 4;
}

static size_t encode_head(unsigned char *h, const out_record *r, uint32_t data_crc)
{
    size_t nl = strlen(r->name), o = 0;
    base_put_le32(h + o, (uint32_t)nl);
    o += 4;
    memcpy(h + o, r->name, nl);
    o += nl;
    base_put_le32(h + o, r->dtype);
    o += 4;
    base_put_le32(h + o, r->ndim);
    o += 4;
    for (uint32_t d = 0; d < r->ndim; d++, o += 8)
        base_put_le64(h + o, (uint64_t)r->shape[d]);
    base_put_le64(h + o, r->nbytes);
    o += 8;
    base_put_le32(h + o, data_crc);
    o += 4;
    base_put_le32(h + o, crc_of(h, o));
    return o + 4;
}

/* "ckpt-<digits>.ttc" -> step; -1 for any other name (a .tmp included). */
static int64_t parse_ckpt_name(const char *name)
{
    if (strncmp(name, "ckpt-", 5) != 0)
        return -1;
    const char *p = name + 5;
    int64_t v = 0;
    int nd = 0;
    for (; *p >= '0' && *p <= '9'; p++, nd++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (nd == 0 || strcmp(p, ".ttc") != 0)
        return -1;
    return v;
}

static int is_tmp_name(const char *name)
{
    size_t n = strlen(name);
    return strncmp(name, "ckpt-", 5) == 0 && n > 8 && strcmp(name + n - 8, ".ttc.tmp") == 0;
}

typedef struct {
    int64_t step;
    char name[256];
} ckpt_entry;

static int entry_cmp_desc(const void *a, const void *b)
{
    const ckpt_entry *x = a, *y = b;
    if (x->step != y->step)
        return x->step < y->step ? 1 : -1;
    return strcmp(y->name, x->name);
}

/* Lists DIR's checkpoints, newest first. Returns the count (*out malloc'd, may be NULL
 * when 0) or -1 with err. */
static int list_ckpts(const char *dir, ckpt_entry **out, char *err, size_t errlen)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        base_errf(err, errlen, "checkpoint folder %s: %s", dir, strerror(errno));
        return -1;
    }
    size_t n = 0, cap = 0;
    ckpt_entry *v = NULL;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step = parse_ckpt_name(de->d_name);
        if (step < 0 || strlen(de->d_name) >= sizeof v[0].name)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            ckpt_entry *nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                base_errf(err, errlen, "checkpoint folder %s: out of memory listing it", dir);
                return -1;
            }
            v = nv;
        }
        v[n].step = step;
        snprintf(v[n].name, sizeof v[n].name, "%s", de->d_name);
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(v, n, sizeof *v, entry_cmp_desc);
    *out = v;
    return (int)n;
}

static void prune(const char *dir, int keep_last, const char *just_written)
{
    ckpt_entry *v;
    int n = list_ckpts(dir, &v, NULL, 0);
    if (n < 0)
        return;
    if (keep_last > 0) {
        for (int i = keep_last; i < n; i++) {
            if (strcmp(v[i].name, just_written) == 0)
                continue; /* never delete what was just written (an older step re-saved) */
            char p[4096 + 256];
            snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
            unlink(p);
        }
    }
    free(v);
    /* A .tmp is what a killed writer left behind: never a checkpoint, safe to remove. */
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_tmp_name(de->d_name)) {
            char p[4096 + 256];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

int train_ckpt_debug_pause_ms(char *err, size_t errlen)
{
    const char *s = getenv("TWOTOWER_DEBUG_CKPT_PAUSE_MS");
    int64_t ms = 0;
    if (s && *s && (base_parse_i64(s, &ms) != 0 || ms < 0 || ms > 60000)) {
        base_errf(err, errlen, "TWOTOWER_DEBUG_CKPT_PAUSE_MS='%s': not an integer in 0..60000",
                  s);
        return -1;
    }
    return (int)ms;
}

/* The hook's stop: what is written so far goes to the .tmp first, so the file a kill leaves
 * is a real partial write. */
static void debug_pause(base_out *out, int ms)
{
    fflush(out->f);
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static int ckpt_write(const char *dir, const train_ckpt_meta *meta, size_t n_params,
                      tensor_source src, void *ctx, int keep_last, char *err, size_t errlen)
{
    /* the state as it will be stored, checked as the reader will check it */
    train_ckpt_meta mm = *meta;
    mm.n_params = n_params;
    uint32_t version = ckpt_version_of(&mm);
    if (!mm.pca_set) mm.pca_std = DATA_LIGHTING_STD; /* what a version 3 file records */
    if (!mm.mirror_set) mm.mirror = 1;
    if (mm.downsample < 1) mm.downsample = 1;
    if (!(mm.pca_std >= 0 && mm.pca_std <= 10)) {
        base_errf(err, errlen, "checkpoint: aug.pca_std %g out of range 0..10", mm.pca_std);
        return -1;
    }
    ckpt_record mr[MAX_META_RECORDS];
    int nm = meta_records(mr, version);
    for (int k = 0; k < nm; k++)
        for (int j = 0; j < mr[k].count; j++) {
            const ckpt_field *f = &FIELDS[mr[k].first + j];
            if (f->type != F_F64 &&
                field_check(f, j, field_get(&mm, f), "checkpoint", err, errlen) != 0)
                return -1;
        }
    tower_plan plan;
    tensor_desc td[MAX_TENSORS];
    char perr[512];
    int nt;
    if (meta_check(&mm, &plan, "checkpoint", err, errlen) != 0)
        return -1;
    if ((nt = tensor_table(&plan, td, perr, sizeof perr)) < 0) {
        base_errf(err, errlen, "checkpoint: config: not a usable net (%s)", perr);
        return -1;
    }
    int pause_ms = train_ckpt_debug_pause_ms(err, errlen);
    if (pause_ms < 0 || base_mkdir_p(dir, "checkpoint folder", err, errlen) != 0)
        return -1;

    /* the run state's records: each field's 8 bytes, in table order */
    uint8_t vals[8 * N_FIELDS];
    for (int i = 0; i < (int)N_FIELDS; i++) {
        uint64_t bits;
        if (FIELDS[i].type == F_F64)
            memcpy(&bits, (const char *)&mm + FIELDS[i].off, 8);
        else
            bits = (uint64_t)field_get(&mm, &FIELDS[i]);
        base_put_le64(vals + 8 * (size_t)i, bits);
    }
    out_record recs[MAX_META_RECORDS + MAX_TENSORS];
    int nr = 0;
    for (int k = 0; k < nm; k++) {
        out_record *r = &recs[nr++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", mr[k].name);
        r->dtype = mr[k].dtype;
        r->ndim = 1;
        r->shape[0] = mr[k].count;
        r->nbytes = 8 * (uint64_t)mr[k].count;
        r->data = vals + 8 * (size_t)mr[k].first;
    }
    for (int i = 0; i < nt; i++) {
        out_record *r = &recs[nr++];
        memset(r, 0, sizeof *r);
        memcpy(r->name, td[i].t.name, sizeof r->name);
        r->dtype = DT_REAL;
        r->ndim = (uint32_t)td[i].t.ndim;
        memcpy(r->shape, td[i].t.shape, sizeof r->shape);
        r->nbytes = (uint64_t)td[i].t.count * sizeof(real);
        r->tensor = &td[i];
    }
    uint64_t total = HEADER_BYTES;
    for (int i = 0; i < nr; i++)
        total += record_head_bytes(&recs[i]) + recs[i].nbytes;

    char final_path[4096];
    if (snprintf(final_path, sizeof final_path, "%s/ckpt-%08lld.ttc", dir,
                 (long long)mm.step) >= (int)sizeof final_path) {
        base_errf(err, errlen, "checkpoint folder %s: path too long", dir);
        return -1;
    }
    /* a folder or a FIFO under a checkpoint's name is never replaced */
    if (base_check_output(final_path, "checkpoint", NULL, 0, NULL, 0, err, errlen) != 0)
        return -1;
    real *scratch = malloc(n_params * sizeof(real));
    if (!scratch) {
        base_errf(err, errlen, "checkpoint %s: cannot allocate %zu bytes for a tensor copy",
                  final_path, n_params * sizeof(real));
        return -1;
    }
    base_out out;
    if (base_out_open(&out, final_path, "checkpoint", err, errlen) != 0) {
        free(scratch);
        return -1;
    }
    unsigned char head[HEADER_BYTES];
    memcpy(head, CKPT_MAGIC, 8);
    base_put_le32(head + 8, version);
    base_put_le32(head + 12, (uint32_t)nr);
    base_put_le64(head + 16, total);
    base_put_le32(head + 24, crc_of(head, 24));
    base_out_write(&out, head, HEADER_BYTES);
    /* The tensors come grouped by (tower, params or momentum), so each arena is fetched
     * once (a device copy for a GPU model) and sliced. */
    const real *arena = NULL;
    int arena_tower = -1, arena_which = -1;
    for (int i = 0; i < nr; i++) {
        const void *data = recs[i].data;
        const tensor_desc *d = recs[i].tensor;
        if (d) {
            if (d->tower != arena_tower || d->which != arena_which) {
                arena = src(ctx, d->tower, d->which, scratch);
                arena_tower = d->tower;
                arena_which = d->which;
            }
            data = arena + d->t.off;
        }
        unsigned char rh[4 + NAME_MAX_LEN + 8 + 8 * MAX_DIMS + 16];
        size_t hn = encode_head(rh, &recs[i], crc_of(data, recs[i].nbytes));
        base_out_write(&out, rh, hn);
        base_out_write(&out, data, recs[i].nbytes);
        if (pause_ms > 0 && i == nr / 2) debug_pause(&out, pause_ms);
    }
    free(scratch);
    /* a failed commit leaves the previous checkpoints as they were */
    if (base_out_commit(&out, err, errlen) != 0)
        return -1;
    prune(dir, keep_last, strrchr(final_path, '/') + 1);
    return 0;
}

typedef struct {
    const real *const *params, *const *momentum, *const *moment2;
} buffer_ctx;

static const real *buffer_source(void *ctx, int t, int which, real *scratch)
{
    const buffer_ctx *b = ctx;
    (void)scratch;
    return which == 0 ? b->params[t] : which == 2 ? b->momentum[t] : b->moment2[t];
}

int train_ckpt_save_buffers(const char *dir, const train_ckpt_meta *meta, size_t n_params,
                            const real *const *params, const real *const *momentum,
                            int keep_last, char *err, size_t errlen)
{
    return train_ckpt_save_buffers3(dir, meta, n_params, params, momentum, NULL, keep_last,
                                    err, errlen);
}

int train_ckpt_save_buffers3(const char *dir, const train_ckpt_meta *meta, size_t n_params,
                             const real *const *params, const real *const *momentum,
                             const real *const *moment2, int keep_last, char *err,
                             size_t errlen)
{
    if (meta->cfg.net.n_layers && meta->cfg.net.optim.kind == TOWER_OPTIM_ADAM && !moment2) {
        base_errf(err, errlen, "checkpoint: the net trains with Adam: its second moments "
                  "are needed");
        return -1;
    }
    buffer_ctx b = {params, momentum, moment2};
    return ckpt_write(dir, meta, n_params, buffer_source, &b, keep_last, err, errlen);
}

static const real *model_source(void *ctx, int t, int which, real *scratch)
{
    model_get_tensor((const model *)ctx, t, which, scratch);
    return scratch;
}

int train_ckpt_save(const char *dir, const train_ckpt_meta *meta, const model *m, int keep_last,
                    char *err, size_t errlen)
{
    train_ckpt_meta mm = *meta;
    mm.cfg = m->plan.cfg;
    mm.model_seed = m->seed;
    mm.model_step = m->step;
    mm.model_updates = m->updates;
    mm.n_params = m->plan.n_params;
    return ckpt_write(dir, &mm, m->plan.n_params, model_source, (void *)m, keep_last, err,
                      errlen);
}

/* ---- reading ------------------------------------------------------------------------ */

typedef struct {
    char name[NAME_MAX_LEN + 1];
    uint32_t dtype, ndim;
    int64_t shape[MAX_DIMS];
    uint64_t nbytes;
    const unsigned char *data;
} in_record;

static int read_whole(const char *path, unsigned char **buf, size_t *len, uint32_t *vers,
                      char *err, size_t errlen)
{
    *buf = NULL;
    int fd = base_open_input(path, "checkpoint", err, errlen);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        base_errf(err, errlen, "checkpoint %s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (st.st_size < HEADER_BYTES) {
        base_errf(err, errlen, "checkpoint %s: header: file is %lld bytes, shorter than the "
             "%d-byte header (truncated)", path, (long long)st.st_size, HEADER_BYTES);
        close(fd);
        return -1;
    }
    unsigned char head[HEADER_BYTES];
    if (pread(fd, head, HEADER_BYTES, 0) != HEADER_BYTES) {
        base_errf(err, errlen, "checkpoint %s: header: read failed", path);
        close(fd);
        return -1;
    }
    /* The header is checked before the size it states is trusted for anything. */
    if (memcmp(head, CKPT_MAGIC, 8) != 0) {
        base_errf(err, errlen, "checkpoint %s: header.magic: not a twotower checkpoint", path);
        close(fd);
        return -1;
    }
    if (crc_of(head, 24) != base_get_le32(head + 24)) {
        base_errf(err, errlen, "checkpoint %s: header: checksum mismatch (stored %08x, computed "
             "%08x)", path, base_get_le32(head + 24), crc_of(head, 24));
        close(fd);
        return -1;
    }
    uint32_t version = base_get_le32(head + 8);
    if (version != 2 && version != TRAIN_CKPT_VERSION) {
        base_errf(err, errlen, "checkpoint %s: header.version %u is not supported (this build "
             "reads version 2) nor 3 (the other nets)", path, version);
        close(fd);
        return -1;
    }
    *vers = version;
    uint64_t fb = base_get_le64(head + 16);
    if (fb > MAX_FILE_BYTES || fb < HEADER_BYTES) {
        base_errf(err, errlen, "checkpoint %s: header.file_bytes %llu out of range", path,
             (unsigned long long)fb);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size != fb) {
        base_errf(err, errlen, "checkpoint %s: header.file_bytes: the header says %llu bytes, the "
             "file has %lld (%s)", path, (unsigned long long)fb, (long long)st.st_size,
             (uint64_t)st.st_size < fb ? "truncated" : "trailing bytes");
        close(fd);
        return -1;
    }
    size_t n = (size_t)fb;
    unsigned char *b = malloc(n);
    if (!b) {
        base_errf(err, errlen, "checkpoint %s: cannot allocate %zu bytes to read it", path, n);
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, b + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            base_errf(err, errlen, "checkpoint %s: read failed at byte %zu: %s", path, got,
                 r < 0 ? strerror(errno) : "file shrank while reading");
            free(b);
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 0;
}

static int valid_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_';
}

/* Parses record #idx at *off. Checks: every field lies inside the file, the name is
 * sane, the header checksum, ndim, each dim, nbytes = prod(shape) * dtype size (no
 * overflow), the data inside the file and its checksum. */
static int parse_record(const char *path, const unsigned char *b, size_t len, size_t *off,
                        int idx, in_record *r, char *err, size_t errlen)
{
    size_t o = *off, start = *off;
#define NEED(n, what)                                                                     \
    do {                                                                                  \
        if (len - o < (size_t)(n)) {                                                      \
            base_errf(err, errlen, "checkpoint %s: record #%d at byte %zu: %s runs past the end " \
                 "of the file", path, idx, start, what);                                  \
            return -1;                                                                    \
        }                                                                                 \
    } while (0)
    NEED(4, "name_len");
    uint32_t nl = base_get_le32(b + o);
    o += 4;
    if (nl < 1 || nl > NAME_MAX_LEN) {
        base_errf(err, errlen, "checkpoint %s: record #%d at byte %zu: name_len %u out of range "
             "1..%d", path, idx, start, nl, NAME_MAX_LEN);
        return -1;
    }
    NEED(nl, "name");
    for (uint32_t i = 0; i < nl; i++) {
        if (!valid_name_char(b[o + i])) {
            base_errf(err, errlen, "checkpoint %s: record #%d at byte %zu: name has a bad "
                 "character (byte %u)", path, idx, start, i);
            return -1;
        }
    }
    memcpy(r->name, b + o, nl);
    r->name[nl] = 0;
    o += nl;
    NEED(8, "dtype/ndim");
    r->dtype = base_get_le32(b + o);
    r->ndim = base_get_le32(b + o + 4);
    o += 8;
    if (r->ndim > MAX_DIMS) {
        base_errf(err, errlen, "checkpoint %s: record '%s': ndim %u exceeds %d", path, r->name,
             r->ndim, MAX_DIMS);
        return -1;
    }
    NEED(8 * (size_t)r->ndim + 16, "shape/nbytes/checksums");
    for (uint32_t d = 0; d < r->ndim; d++, o += 8)
        r->shape[d] = (int64_t)base_get_le64(b + o);
    r->nbytes = base_get_le64(b + o);
    uint32_t data_crc = base_get_le32(b + o + 8);
    uint32_t head_crc = base_get_le32(b + o + 12);
    o += 12;
    if (crc_of(b + start, o - start) != head_crc) {
        base_errf(err, errlen, "checkpoint %s: record '%s' (#%d at byte %zu): header checksum "
             "mismatch", path, r->name, idx, start);
        return -1;
    }
    o += 4;
    size_t es = dtype_size(r->dtype);
    if (es == 0) {
        base_errf(err, errlen, "checkpoint %s: record '%s': dtype %u unknown", path, r->name,
             r->dtype);
        return -1;
    }
    uint64_t count = 1;
    for (uint32_t d = 0; d < r->ndim; d++) {
        if (r->shape[d] < 0 || r->shape[d] > MAX_DIM_VALUE) {
            base_errf(err, errlen, "checkpoint %s: record '%s': shape[%u] = %lld out of range "
                 "0..2^40", path, r->name, d, (long long)r->shape[d]);
            return -1;
        }
        if (r->shape[d] != 0 && count > (uint64_t)MAX_DIM_VALUE / (uint64_t)r->shape[d]) {
            base_errf(err, errlen, "checkpoint %s: record '%s': shape product overflows", path,
                 r->name);
            return -1;
        }
        count *= (uint64_t)r->shape[d];
    }
    if (r->nbytes != count * es) {
        base_errf(err, errlen, "checkpoint %s: record '%s': nbytes %llu != %llu elements x %zu "
             "bytes (%s)", path, r->name, (unsigned long long)r->nbytes,
             (unsigned long long)count, es, dtype_name(r->dtype));
        return -1;
    }
    if (r->nbytes > len - o) {
        base_errf(err, errlen, "checkpoint %s: record '%s': nbytes %llu runs past the end of the "
             "file (%zu bytes left)", path, r->name, (unsigned long long)r->nbytes, len - o);
        return -1;
    }
    r->data = b + o;
    uint32_t c = crc_of(r->data, (size_t)r->nbytes);
    if (c != data_crc) {
        base_errf(err, errlen, "checkpoint %s: record '%s': data checksum mismatch (stored %08x, "
             "computed %08x)", path, r->name, data_crc, c);
        return -1;
    }
    o += (size_t)r->nbytes;
    *off = o;
    return 0;
#undef NEED
}

/* The records of one file while it is checked: which of them an expected name claimed,
 * so that anything left over is reported as foreign. */
typedef struct {
    const char *path;
    const in_record *v;
    int n;
    unsigned char used[MAX_RECORDS];
    uint32_t version;  /* the file's format version */
} rec_set;

/* The record must exist with this dtype and shape. A tensor's shape comes from the
 * stored config (tensor = 1), a small record's from the format. */
static const in_record *want(rec_set *s, const char *name, uint32_t dtype, uint32_t ndim,
                             const int64_t *shape, int tensor, char *err, size_t errlen)
{
    const in_record *r = NULL;
    for (int i = 0; i < s->n && !r; i++) {
        if (strcmp(s->v[i].name, name) == 0) {
            r = &s->v[i];
            s->used[i] = 1;
        }
    }
    if (!r) {
        base_errf(err, errlen, "checkpoint %s: record '%s' is missing", s->path, name);
        return NULL;
    }
    if (r->dtype != dtype) {
        base_errf(err, errlen, "checkpoint %s: record '%s': dtype %s, expected %s", s->path,
                   name, dtype_name(r->dtype), dtype_name(dtype));
        return NULL;
    }
    int same = r->ndim == ndim;
    for (uint32_t d = 0; same && d < ndim; d++)
        same = r->shape[d] == shape[d];
    if (!same) {
        char got[128], exp[128];
        fmt_shape(got, sizeof got, r->ndim, r->shape);
        fmt_shape(exp, sizeof exp, ndim, shape);
        if (tensor)
            base_errf(err, errlen, "checkpoint %s: %s has shape %s, the config gives %s",
                       s->path, name, got, exp);
        else
            base_errf(err, errlen, "checkpoint %s: record '%s' has shape %s, format version %u "
                       "gives %s", s->path, name, got, s->version, exp);
        return NULL;
    }
    return r;
}

static const in_record *want_vec(rec_set *s, const char *name, uint32_t dtype, int64_t count,
                                 char *err, size_t errlen)
{
    return want(s, name, dtype, 1, &count, 0, err, errlen);
}

static int check_cfg_match(const char *path, const tower_config *file_cfg,
                           const tower_config *want_cfg, char *err, size_t errlen)
{
    train_ckpt_meta a, b;
    a.cfg = *file_cfg;
    b.cfg = *want_cfg;
    for (int i = 0; i < (int)N_FIELDS; i++) {
        if (strcmp(FIELDS[i].record, "config") != 0)
            continue;
        int64_t x = field_get(&a, &FIELDS[i]), y = field_get(&b, &FIELDS[i]);
        if (x != y) {
            base_errf(err, errlen, "checkpoint %s: %s is %lld in the checkpoint but %lld in "
                      "this run (refused: resume with the same configuration)", path,
                      FIELDS[i].name, (long long)x, (long long)y);
            return -1;
        }
    }
    /* the net: the same preset with the same switches (a zeroed net is the default) */
    const tower_net *na = tower_config_net(file_cfg), *nb = tower_config_net(want_cfg);
    const tower_net_switches *sa = &na->switches, *sb = &nb->switches;
    if (na->id != nb->id || sa->lrn != sb->lrn || sa->pool_k != sb->pool_k ||
        sa->pool_s != sb->pool_s || sa->act != sb->act || sa->optim != sb->optim ||
        sa->dropout != sb->dropout || sa->momentum != sb->momentum ||
        sa->weight_decay != sb->weight_decay || sa->beta1 != sb->beta1 ||
        sa->beta2 != sb->beta2 || sa->eps != sb->eps) {
        char da[200], db[200];
        tower_net_switches_describe(sa, da, sizeof da);
        tower_net_switches_describe(sb, db, sizeof db);
        base_errf(err, errlen, "checkpoint %s: config.net is %s (switches: %s) in the "
                  "checkpoint but %s (switches: %s) in this run (refused: resume with the "
                  "same net)", path, na->name, da, nb->name, db);
        return -1;
    }
    return 0;
}

/* A file read whole and validated: the tensors' data point into buf. */
typedef struct {
    unsigned char *buf;
    in_record *recs;
    train_ckpt_meta meta;
    int nt;
    tensor_desc td[MAX_TENSORS];
    const unsigned char *tdata[MAX_TENSORS];
} parsed_ckpt;

static void parsed_free(parsed_ckpt *p)
{
    free(p->recs);
    free(p->buf);
}

/* Everything but copying the tensors out: on success p holds the validated meta and
 * where each tensor's data lies; on failure nothing (parsed_free is still due). */
static int ckpt_parse(const char *path, parsed_ckpt *p, char *err, size_t errlen)
{
    size_t len;
    uint32_t version = 0;
    p->recs = NULL;
    if (read_whole(path, &p->buf, &len, &version, err, errlen) != 0)
        return -1;
    const unsigned char *b = p->buf;
    uint32_t nr = base_get_le32(b + 12);
    if (nr < 1 || nr > MAX_RECORDS) {
        base_errf(err, errlen, "checkpoint %s: header.n_records %u out of range 1..%d", path, nr,
                  MAX_RECORDS);
        return -1;
    }
    in_record *v = calloc(nr, sizeof *v);
    if (!v) {
        base_errf(err, errlen, "checkpoint %s: out of memory", path);
        return -1;
    }
    p->recs = v;
    size_t off = HEADER_BYTES;
    for (uint32_t i = 0; i < nr; i++) {
        if (parse_record(path, b, len, &off, (int)i, &v[i], err, errlen) != 0)
            return -1;
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(v[j].name, v[i].name) == 0) {
                base_errf(err, errlen, "checkpoint %s: record '%s' appears twice", path,
                          v[i].name);
                return -1;
            }
        }
    }
    if (off != len) {
        base_errf(err, errlen, "checkpoint %s: %zu bytes after the last record (header."
                  "n_records %u)", path, len - off, nr);
        return -1;
    }
    rec_set rs = {path, v, (int)nr, {0}, version};

    /* the run state: every record of the table, every field in its range */
    char who[4096 + 16];
    snprintf(who, sizeof who, "checkpoint %s", path);
    train_ckpt_meta mt;
    memset(&mt, 0, sizeof mt);
    ckpt_record mr[MAX_META_RECORDS];
    int nm = meta_records(mr, version);
    for (int k = 0; k < nm; k++) {
        const in_record *r = want_vec(&rs, mr[k].name, mr[k].dtype, mr[k].count, err, errlen);
        if (!r)
            return -1;
        for (int j = 0; j < mr[k].count; j++) {
            const ckpt_field *f = &FIELDS[mr[k].first + j];
            uint64_t bits = base_get_le64(r->data + 8 * (size_t)j);
            if (f->type == F_F64) {
                memcpy(field_at(&mt, f), &bits, 8);
                continue;
            }
            if (field_check(f, j, (int64_t)bits, who, err, errlen) != 0)
                return -1;
            field_set(&mt, f, (int64_t)bits);
        }
    }
    if (version == 3) {
        /* the net: its preset, then its switches, exactly as the run built it */
        tower_net_switches sw = mt.cfg.net.switches;
        const tower_net *pre = tower_net_preset_id(mt.cfg.net.id);
        char why[256];
        mt.cfg.net = *pre;
        if (tower_net_apply(&mt.cfg.net, &sw, why, sizeof why) != 0) {
            base_errf(err, errlen, "%s: net %s: %s", who, pre->name, why);
            return -1;
        }
        if (!(mt.pca_std >= 0 && mt.pca_std <= 10)) {
            base_errf(err, errlen, "%s: aug.pca_std %g out of range 0..10", who, mt.pca_std);
            return -1;
        }
        mt.pca_set = 1;
        mt.mirror_set = 1;
    } else {
        mt.downsample = 1; /* version 2: the crops are the net's input */
        mt.model_updates = mt.model_step; /* version 2: SGD, whose update needs no count */
    }
    tower_plan plan;
    if (meta_check(&mt, &plan, who, err, errlen) != 0)
        return -1;

    char terr[512];
    if ((p->nt = tensor_table(&plan, p->td, terr, sizeof terr)) < 0) {
        base_errf(err, errlen, "checkpoint %s: config: not a usable net (%s)", path, terr);
        return -1;
    }
    for (int i = 0; i < p->nt; i++) {
        const train_tensor *d = &p->td[i].t;
        const in_record *r = want(&rs, d->name, DT_REAL, (uint32_t)d->ndim, d->shape, 1, err,
                                  errlen);
        if (!r)
            return -1;
        p->tdata[i] = r->data;
    }
    for (uint32_t i = 0; i < nr; i++) {
        if (!rs.used[i]) {
            base_errf(err, errlen, "checkpoint %s: record '%s' is not part of a version %u "
                      "checkpoint with %d tower(s)", path, v[i].name, version,
                      mt.cfg.towers);
            return -1;
        }
    }
    p->meta = mt;
    return 0;
}

/* Copies the tensors of tower t (which: 0 params, 2 momentum) into their places in dst,
 * an arena of n_params reals; they tile it whole (tensor_table). The file buffer is not
 * aligned for real, so this is a byte copy. */
static void copy_tensors(real *dst, const parsed_ckpt *p, int t, int which)
{
    for (int i = 0; i < p->nt; i++)
        if (p->td[i].tower == t && p->td[i].which == which)
            memcpy(dst + p->td[i].t.off, p->tdata[i], p->td[i].t.count * sizeof(real));
}

int train_ckpt_load_buffers(const char *path, train_ckpt_meta *meta,
                            const tower_config *expect_cfg, size_t expect_n_params,
                            real *const *params, real *const *momentum, char *err,
                            size_t errlen)
{
    return train_ckpt_load_buffers3(path, meta, expect_cfg, expect_n_params, params, momentum,
                                    NULL, err, errlen);
}

int train_ckpt_load_buffers3(const char *path, train_ckpt_meta *meta,
                             const tower_config *expect_cfg, size_t expect_n_params,
                             real *const *params, real *const *momentum,
                             real *const *moment2, char *err, size_t errlen)
{
    parsed_ckpt p;
    int rc = ckpt_parse(path, &p, err, errlen);
    if (rc == 0 && expect_cfg)
        rc = check_cfg_match(path, &p.meta.cfg, expect_cfg, err, errlen);
    if (rc == 0 && expect_n_params && expect_n_params != p.meta.n_params) {
        base_errf(err, errlen, "checkpoint %s: run.n_params %zu per tower, this run has %zu", path,
             p.meta.n_params, expect_n_params);
        rc = -1;
    }
    if (rc == 0) {
        for (int t = 0; t < p.meta.cfg.towers; t++) {
            if (params)
                copy_tensors(params[t], &p, t, 0);
            if (momentum)
                copy_tensors(momentum[t], &p, t, 2);
            if (moment2 && tower_config_net(&p.meta.cfg)->optim.kind == TOWER_OPTIM_ADAM)
                copy_tensors(moment2[t], &p, t, 3);
        }
        *meta = p.meta;
    }
    parsed_free(&p);
    return rc;
}

int train_ckpt_load(const char *path, train_ckpt_meta *meta, model *m, char *err, size_t errlen)
{
    parsed_ckpt p;
    int rc = ckpt_parse(path, &p, err, errlen);
    real *tmp = NULL;
    if (rc == 0 && m) {
        size_t n = p.meta.n_params;
        rc = check_cfg_match(path, &p.meta.cfg, &m->plan.cfg, err, errlen);
        if (rc == 0 && m->plan.n_params != n) {
            base_errf(err, errlen, "checkpoint %s: run.n_params %zu per tower, the model has %zu",
                 path, n, m->plan.n_params);
            rc = -1;
        }
        /* Each arena is assembled in one host buffer and handed to the model whole.
         * Everything was validated above, so from here on nothing can fail. */
        if (rc == 0 && !(tmp = malloc(n * sizeof(real)))) {
            base_errf(err, errlen, "checkpoint %s: cannot allocate %zu bytes", path,
                 n * sizeof(real));
            rc = -1;
        }
        for (int t = 0; rc == 0 && t < p.meta.cfg.towers; t++) {
            for (int which = 0; which <= (m->plan.adam ? 3 : 2); which += which ? 1 : 2) {
                copy_tensors(tmp, &p, t, which);
                model_set_tensor(m, t, which, tmp);
            }
        }
        if (rc == 0) {
            m->seed = p.meta.model_seed;
            m->step = p.meta.model_step;
            m->updates = p.meta.model_updates;
        }
    }
    if (rc == 0)
        *meta = p.meta;
    free(tmp);
    parsed_free(&p);
    return rc;
}

/* ---- finding the checkpoint to resume from ------------------------------------------ */

int train_ckpt_latest(const char *dir, char *path, size_t pathlen, char *prev, size_t prevlen,
                      char *err, size_t errlen)
{
    if (path && pathlen)
        path[0] = 0;
    if (prev && prevlen)
        prev[0] = 0;
    ckpt_entry *v;
    int n = list_ckpts(dir, &v, err, errlen);
    if (n < 0)
        return -1;
    if (n == 0) {
        base_errf(err, errlen, "checkpoint folder %s: no checkpoints (ckpt-STEP.ttc) in it", dir);
        free(v);
        return -1;
    }
    char newest[4096 + 256], reason[1024];
    snprintf(newest, sizeof newest, "%s/%s", dir, v[0].name);
    if (path && pathlen)
        snprintf(path, pathlen, "%s", newest);
    train_ckpt_meta meta;
    if (train_ckpt_load(newest, &meta, NULL, reason, sizeof reason) == 0) {
        free(v);
        return 0;
    }
    for (int i = 1; i < n; i++) {
        char p[4096 + 256], r2[1024];
        snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
        if (train_ckpt_load(p, &meta, NULL, r2, sizeof r2) == 0) {
            if (prev && prevlen)
                snprintf(prev, prevlen, "%s", p);
            base_errf(err, errlen, "newest checkpoint %s is bad (%s); previous good one: %s (use "
                 "--resume %s)", newest, reason, p, p);
            free(v);
            return 1;
        }
    }
    base_errf(err, errlen, "newest checkpoint %s is bad (%s); no older good one among the %d in %s",
         newest, reason, n, dir);
    free(v);
    return -1;
}

static int has_ckpts(const char *dir)
{
    ckpt_entry *v;
    int n = list_ckpts(dir, &v, NULL, 0);
    free(v);
    return n > 0;
}

int train_ckpt_resolve(const char *arg, char *path, size_t pathlen, char *err, size_t errlen)
{
    struct stat st;
    if (stat(arg, &st) != 0) {
        base_errf(err, errlen, "--resume %s: %s", arg, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode)) {
        if (snprintf(path, pathlen, "%s", arg) >= (int)pathlen) {
            base_errf(err, errlen, "--resume %s: path too long", arg);
            return -1;
        }
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        base_errf(err, errlen, "--resume %s: not a file or a folder", arg);
        return -1;
    }
    char dir[4096 + 16];
    snprintf(dir, sizeof dir, "%s", arg);
    if (!has_ckpts(dir)) {
        char sub[4096 + 16];
        snprintf(sub, sizeof sub, "%s/%s", arg, TRAIN_CKPT_SUBDIR);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode) && has_ckpts(sub))
            snprintf(dir, sizeof dir, "%s", sub);
    }
    char prev[4096];
    int rc = train_ckpt_latest(dir, path, pathlen, prev, sizeof prev, err, errlen);
    return rc == 0 ? 0 : -1;
}

int train_ckpt_read_params(const char *arg, char *file, size_t filelen, train_ckpt_meta *meta,
                           tower_plan *plan, real *params[2], char *err, size_t errlen)
{
    struct stat sb;
    params[0] = params[1] = NULL;
    /* train_ckpt_resolve words its errors for --resume; the common one gets ours */
    if (stat(arg, &sb) != 0) {
        base_errf(err, errlen, "checkpoint %s: %s", arg, strerror(errno));
        return -1;
    }
    if (train_ckpt_resolve(arg, file, filelen, err, errlen)) return -1;
    /* first pass: the config (and a full validation) without buffers */
    if (train_ckpt_load_buffers(file, meta, NULL, 0, NULL, NULL, err, errlen)) return -1;
    if (tower_plan_make(plan, &meta->cfg, err, errlen)) {
        char why[256];
        snprintf(why, sizeof why, "%s", err);
        base_errf(err, errlen, "%s: unusable config: %s", file, why);
        return -1;
    }
    for (int t = 0; t < plan->cfg.towers; t++)
        if (!(params[t] = malloc(sizeof(real) * plan->n_params))) {
            base_errf(err, errlen, "%s: out of memory for %zu parameters", file, plan->n_params);
            free(params[0]);
            params[0] = NULL;
            return -1;
        }
    if (train_ckpt_load_buffers(file, meta, &meta->cfg, plan->n_params, params, NULL, err,
                                errlen)) {
        free(params[0]);
        free(params[1]);
        params[0] = params[1] = NULL;
        return -1;
    }
    return 0;
}

int train_ckpt_open_model(const char *arg, int batch, const model_placement *place, model *m,
                          train_ckpt_meta *meta, char *file, size_t filelen, char *err,
                          size_t errlen)
{
    tower_plan plan;
    real *params[2];
    if (train_ckpt_read_params(arg, file, filelen, meta, &plan, params, err, errlen)) return -1;
    tower_config cfg = meta->cfg;
    if (batch > 0) cfg.batch = batch;
    int rc = model_init(m, &cfg, place, meta->model_seed, err, errlen);
    if (rc == 0) {
        for (int t = 0; t < m->towers; t++) model_set_tensor(m, t, 0, params[t]);
        m->step = meta->model_step;
        m->updates = meta->model_updates;
    }
    free(params[0]);
    free(params[1]);
    return rc;
}

/* ---- twotower ckpt-check ------------------------------------------------------------ */

static int check_one(const char *arg)
{
    char path[4096], err[1536];
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (train_ckpt_resolve(arg, path, sizeof path, err, sizeof err) != 0) {
            fprintf(stderr, "ckpt-check: BAD: %s\n", err);
            return 1;
        }
    } else {
        snprintf(path, sizeof path, "%s", arg);
    }
    train_ckpt_meta m;
    if (train_ckpt_load(path, &m, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "ckpt-check: BAD: %s\n", err);
        return 1;
    }
    tower_plan plan;
    tensor_desc td[MAX_TENSORS];
    int nt = -1;
    if (tower_plan_make(&plan, &m.cfg, err, sizeof err) == 0)
        nt = tensor_table(&plan, td, err, sizeof err);
    if (nt < 0) { /* cannot happen: the load checked both */
        fprintf(stderr, "ckpt-check: BAD: %s: %s\n", path, err);
        return 1;
    }
    /* well-formed is not enough to resume from: the weights and momentum must be finite
     * (the trainer never saves after a non-finite step, but a file can come from
     * elsewhere) */
    real *buf[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    int T = m.cfg.towers, ok = 1, arenas = plan.adam ? 3 : 2;
    for (int i = 0; i < arenas * T; i++)
        ok &= (buf[i] = malloc(m.n_params * sizeof(real))) != NULL;
    if (!ok || train_ckpt_load_buffers3(path, &m, NULL, 0, buf, buf + T,
                                        plan.adam ? buf + 2 * T : NULL, err, sizeof err) != 0) {
        fprintf(stderr, "ckpt-check: BAD: %s: %s\n", path, ok ? err : "out of memory");
        for (int i = 0; i < 6; i++) free(buf[i]);
        return 1;
    }
    int nonfinite_at = -1;
    for (int i = 0; i < arenas * T && nonfinite_at < 0; i++)
        for (size_t j = 0; j < m.n_params; j++)
            if (!isfinite(buf[i][j])) {
                nonfinite_at = i;
                break;
            }
    for (int i = 0; i < 6; i++) free(buf[i]);
    if (nonfinite_at >= 0) {
        fprintf(stderr, "ckpt-check: BAD: %s: tower %d's %s hold non-finite values\n", path,
                nonfinite_at % T, nonfinite_at < T ? "parameters"
                                  : nonfinite_at < 2 * T ? "momentum buffers"
                                                         : "second moments");
        return 1;
    }
    char swd[200];
    tower_net_switches_describe(&tower_config_net(&m.cfg)->switches, swd, sizeof swd);
    printf("%s: OK: step %lld, epoch %lld; net %s (switches: %s; %s); config towers=%d "
           "classes=%d batch=%d in=%dx%dx%d width_div=%d; %d tensors (%zu params per tower, "
           "each tensor with its momentum%s, checksums good); cursor seed=%llu epoch=%lld "
           "pos=%lld; train_limit %lld, eval_every %lld; lr %g after %d drop(s), best val "
           "error %.4f; %lld non-finite steps skipped\n",
           path, (long long)m.step, (long long)m.epoch, tower_config_net(&m.cfg)->name, swd,
           plan.adam ? "adam" : "sgd", m.cfg.towers, m.cfg.classes,
           m.cfg.batch, m.cfg.in_ch, m.cfg.in_size, m.cfg.in_size, m.cfg.width_div, nt,
           m.n_params, plan.adam ? " and second moment" : "", (unsigned long long)m.cursor.seed,
           (long long)m.cursor.epoch,
           (long long)m.cursor.pos, (long long)m.train_limit, (long long)m.eval_every,
           m.sched.lr, (int)m.sched.drops, m.sched.best_eval >= 0 ? m.sched.best : NAN,
           (long long)m.nonfinite.skipped);
    /* The shapes once: tower0's parameters (every tower and momentum have the same). */
    printf("  per tower:");
    for (int i = 0; i < 2 * plan.n_layers; i++) {
        char sh[96];
        fmt_shape(sh, sizeof sh, (uint32_t)td[i].t.ndim, td[i].t.shape);
        printf(" %s %s", td[i].t.name + strlen("tower0."), sh);
    }
    printf("\n");
    return 0;
}

static const base_flag ckpt_check_flags[] = {{0}};

static const base_flags_cmd ckpt_check_cmd = {
    .name = "ckpt-check",
    .synopsis = "PATH...",
    .about = "  PATH: a checkpoint file (ckpt-STEP.ttc), a checkpoint folder or a run\n"
             "  folder (its newest checkpoint). Reads the whole file, checks every\n"
             "  size, shape and checksum. Exit 0: all good; 1: one is bad.\n",
    .flags = ckpt_check_flags,
    .min_pos = 1,
    .max_pos = INT_MAX};

int train_ckpt_check_main(int argc, char **argv)
{
    char none;
    base_flags_out fo;
    int rc = base_flags_cli(&ckpt_check_cmd, &none, argc, argv, &fo);
    if (rc != BASE_FLAGS_GO) return rc;
    int bad = 0;
    for (int i = 0; i < fo.npos; i++)
        bad |= check_one(fo.pos[i]);
    return bad ? 1 : 0;
}
