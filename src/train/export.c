/* export.c: `twotower export`, a model's weights as safetensors with one tensor per
 * tower and layer (docs/WEIGHTS.md); tools/reference/twotower_torch.py loads the file
 * into PyTorch. The checkpoint code reuses train_export_model. */
#include "train/export.h"

#include "train/checkpoint.h"
#include "train/nets.h"
#include "base/base.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int train_tower_tensors(train_tensor *out, const tower_plan *plan, int t, const char *prefix,
                        const char *suffix)
{
    for (int l = 0; l < plan->n_layers; l++) {
        const tower_layer_spec *s = tower_plan_row(plan, l);
        const tower_layer_shape *L = &plan->layer[l];
        for (int bias = 0; bias < 2; bias++) {
            train_tensor *d = &out[2 * l + bias];
            memset(d, 0, sizeof *d);
            snprintf(d->name, sizeof d->name, "%stower%d.%s.%s%s", prefix, t, s->name,
                     bias ? "bias" : "weight", suffix);
            d->ndim = bias ? 1 : s->kind == TOWER_CONV ? 4 : 2;
            d->shape[0] = L->out_ch;
            if (!bias)
                d->shape[1] = (int64_t)L->sources * L->in_ch;
            /* the arena's (out_ch, sources*in_ch*k*k) row-major is exactly this 4-D shape,
             * and PyTorch's conv weight layout */
            if (d->ndim == 4)
                d->shape[2] = d->shape[3] = s->k;
            d->off = bias ? L->b_off : L->w_off;
            d->count = bias ? L->b_count : L->w_count;
        }
    }
    return 2 * plan->n_layers;
}

int train_export_views(st_tensor *out, char (*names)[TRAIN_EXPORT_NAME_MAX],
                       const tower_plan *plan, int tower_index, const real *arena,
                       const char *prefix)
{
    train_tensor tt[2 * TOWER_MAX_LAYERS];
    int n = train_tower_tensors(tt, plan, tower_index, prefix, "");
    for (int i = 0; i < n; i++) {
        memcpy(names[i], tt[i].name, TRAIN_EXPORT_NAME_MAX);
        memset(&out[i], 0, sizeof out[i]);
        out[i].name = names[i];
        out[i].dtype = TRAIN_REAL_DTYPE;
        out[i].ndim = tt[i].ndim;
        memcpy(out[i].shape, tt[i].shape, sizeof tt[i].shape);
        out[i].data = arena + tt[i].off;
    }
    return n;
}

int train_export_net_meta(const char **meta, char (*vals)[32], const tower_net *net)
{
    const tower_net_switches *sw = &net->switches;
    int n = 0;
    snprintf(vals[0], 32, "%s", net->name);
    snprintf(vals[1], 32, "%d", sw->lrn);
    if (sw->pool_k) snprintf(vals[2], 32, "%d:%d", sw->pool_k, sw->pool_s);
    else vals[2][0] = 0;
    snprintf(vals[3], 32, "%s", sw->act == TOWER_ACT_RELU ? "relu"
                                : sw->act == TOWER_ACT_TANH ? "tanh" : "");
    if (sw->dropout >= 0) snprintf(vals[4], 32, "%.17g", sw->dropout);
    else vals[4][0] = 0;
    static const char *const keys[5] = {"net", "switch.lrn", "switch.pool", "switch.act",
                                        "switch.dropout"};
    for (int i = 0; i < 5; i++) {
        meta[n++] = keys[i];
        meta[n++] = vals[i];
    }
    return n;
}

int train_export_arenas(const tower_plan *plan, const real *const *params, uint64_t seed,
                        int64_t step, const char *path, char *err, size_t errlen)
{
    int T = plan->cfg.towers, nt = 0;
    st_tensor tens[2 * 2 * TOWER_MAX_LAYERS];
    char names[2 * 2 * TOWER_MAX_LAYERS][TRAIN_EXPORT_NAME_MAX];
    for (int t = 0; t < T; t++)
        nt += train_export_views(tens + nt, names + nt, plan, t, params[t], "");
    const tower_config *c = &plan->cfg;
    char v[7][32], nv[5][32];
    snprintf(v[0], sizeof v[0], "%d", c->towers);
    snprintf(v[1], sizeof v[1], "%d", c->classes);
    snprintf(v[2], sizeof v[2], "%d", c->in_size);
    snprintf(v[3], sizeof v[3], "%d", c->in_ch);
    snprintf(v[4], sizeof v[4], "%d", c->width_div > 0 ? c->width_div : 1);
    snprintf(v[5], sizeof v[5], "%" PRIu64, seed);
    snprintf(v[6], sizeof v[6], "%" PRId64, step);
    const char *meta[16 + TRAIN_EXPORT_NET_META + 1] = {
        "format", "twotower-weights", "towers", v[0], "classes", v[1], "size", v[2],
        "in_ch", v[3], "width_div", v[4], "seed", v[5], "step", v[6]};
    int nm = 16 + train_export_net_meta(meta + 16, nv, &c->net);
    meta[nm] = NULL;
    return st_write(path, tens, nt, meta, err, errlen);
}

/* Host arenas for the towers of plan; 0, or -1 with err. */
static int alloc_arenas(real **host, const tower_plan *plan, const char *path, char *err,
                        size_t errlen)
{
    host[0] = host[1] = NULL;
    for (int t = 0; t < plan->cfg.towers; t++) {
        host[t] = malloc(sizeof(real) * plan->n_params);
        if (!host[t]) {
            snprintf(err, errlen, "%s: out of memory for %zu parameters", path,
                     plan->n_params);
            free(host[0]);
            host[0] = NULL;
            return -1;
        }
    }
    return 0;
}

int train_export_model(const model *m, const char *path, char *err, size_t errlen)
{
    real *host[2];
    if (alloc_arenas(host, &m->plan, path, err, errlen))
        return -1;
    for (int t = 0; t < m->towers; t++)
        model_get_tensor(m, t, 0, host[t]);
    int rc = train_export_arenas(&m->plan, (const real *const *)host, m->seed, m->step, path,
                                 err, errlen);
    free(host[0]);
    free(host[1]);
    return rc;
}

int train_export_checkpoint(const char *ckpt, const char *path, char *err, size_t errlen)
{
    char file[4096];
    train_ckpt_meta meta;
    tower_plan plan;
    real *host[2];
    if (train_ckpt_read_params(ckpt, file, sizeof file, &meta, &plan, host, err, errlen))
        return -1;
    int rc = train_export_arenas(&plan, (const real *const *)host, meta.model_seed,
                                 meta.model_step, path, err, errlen);
    free(host[0]);
    free(host[1]);
    return rc;
}

int train_check_out(const char *ckpt, const char *data, const char *out, const char *what,
                    char *err, size_t errlen)
{
    char dir[4096];
    const char *protect[2];
    int n_protect = 0;
    struct stat st;
    if (ckpt && stat(ckpt, &st) == 0) {
        /* a folder given as the input is the run's (or its checkpoint folder): the output
         * goes elsewhere; a checkpoint file's own folder when it is a run's ckpt/, which
         * holds checkpoints only (an output there could replace an older one) */
        snprintf(dir, sizeof dir, "%s", ckpt);
        if (!S_ISDIR(st.st_mode)) {
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = 0;
            else
                snprintf(dir, sizeof dir, ".");
        }
        const char *last = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
        if (S_ISDIR(st.st_mode) || !strcmp(last, TRAIN_CKPT_SUBDIR)) protect[n_protect++] = dir;
    }
    if (data) protect[n_protect++] = data;
    const char *inputs[1] = {ckpt};
    return base_check_output(out, what, inputs, ckpt ? 1 : 0, protect, n_protect, err, errlen);
}

int train_export_check_out(const char *ckpt, const char *out, char *err, size_t errlen)
{
    return train_check_out(ckpt, NULL, out, "OUT", err, errlen);
}

typedef struct {
    tower_config cfg;
    train_net_args net;
    uint64_t seed;
} export_opts;

static void export_defaults(void *p)
{
    export_opts *o = p;
    /* 0: the net's (train_net_choose) */
    *o = (export_opts){.cfg = {.towers = 0, .classes = 0, .batch = 1, .in_size = 0,
                               .in_ch = 0, .width_div = 1},
                       .seed = 1};
    train_net_args_default(&o->net);
}

/* .given marks the flags that describe a fresh net: a checkpoint fixes all of them */
#define EXPORT_NET_FLAG 1u
static const base_flag export_flags[] = {
    {BASE_FLAG_U64("seed", export_opts, seed, UINT64_MAX, "S", "the fresh net's init"),
     .given = EXPORT_NET_FLAG},
    {BASE_FLAG_GROUP(train_net_flags, export_opts, net)},
    {BASE_FLAG_INT("towers", export_opts, cfg.towers, 1, 2, "N", "2 or 1 (--net half)"),
     .given = EXPORT_NET_FLAG, .deflt = "the net's"},
    {BASE_FLAG_INT("classes", export_opts, cfg.classes, 2, 1000000, "N", "classes of fc8"),
     .given = EXPORT_NET_FLAG, .deflt = "the net's"},
    {BASE_FLAG_INT("size", export_opts, cfg.in_size, 1, 4096, "N", "input side"),
     .given = EXPORT_NET_FLAG, .deflt = "the net's"},
    {BASE_FLAG_INT("width-div", export_opts, cfg.width_div, 1, 2048, "N",
                   "divide every layer's width by N"),
     .given = EXPORT_NET_FLAG},
    {0}};

static const base_flags_cmd export_cmd = {
    .name = "export",
    .synopsis = "CKPT OUT.safetensors\n       twotower export OUT.safetensors [flags]",
    .about = "Writes the weights of a checkpoint (a .ttc file, a checkpoint folder or a run\n"
             "folder: its newest checkpoint), or of the net freshly initialised from --seed\n"
             "(--net and its init), as safetensors: tower{t}.{layer}.weight/.bias, see\n"
             "docs/WEIGHTS.md. The flags describe the fresh net; a checkpoint fixes them.\n"
             "OUT is refused (exit 2) when it is CKPT itself, lies inside the run or\n"
             "checkpoint folder given as CKPT or a run's ckpt/ folder, or is not a regular\n"
             "file (a device, a FIFO).\n",
    .flags = export_flags,
    .min_pos = 1,
    .max_pos = 2,
    .opts_size = sizeof(export_opts),
    .defaults = export_defaults};

int train_export_main(int argc, char **argv)
{
    export_opts o;
    base_flags_out fo;
    int frc = base_flags_cli(&export_cmd, &o, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    tower_config cfg = o.cfg;
    uint64_t seed = o.seed;
    char **pos = fo.pos;
    int npos = fo.npos;
    int net_flags = fo.given & (EXPORT_NET_FLAG | TRAIN_NETS_GIVEN_NET | TRAIN_NETS_GIVEN_SWITCH);
    /* OUT is a file: a folder there is most likely a run or checkpoint folder given
     * without OUT (export RUN), which must not become a fresh net's weights */
    struct stat st;
    if (stat(pos[npos - 1], &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "twotower export: OUT %s is a folder; give the file to write (e.g. "
                        "twotower export %s weights.safetensors)\n",
                pos[npos - 1], pos[npos - 1]);
        return 2;
    }
    char err[512];
    if (train_export_check_out(npos == 2 ? pos[0] : NULL, pos[npos - 1], err, sizeof err)) {
        fprintf(stderr, "twotower export: %s\n", err);
        return 2;
    }
    if (npos == 2) {
        if (net_flags) {
            fprintf(stderr, "twotower export: the checkpoint %s fixes the net and its seed; "
                    "--net, its switches, --seed/--towers/--classes/--size/--width-div apply "
                    "only without one\n",
                    pos[0]);
            return 2;
        }
        if (train_export_checkpoint(pos[0], pos[1], err, sizeof err)) {
            fprintf(stderr, "twotower export: %s\n", err);
            return 1;
        }
        printf("twotower export: wrote %s from %s\n", pos[1], pos[0]);
        return 0;
    }
    const char *out = pos[0];
    if (train_net_args_choose(&o.net, &cfg, err, sizeof err)) {
        fprintf(stderr, "twotower export: %s\n", err);
        return 2;
    }
    model m;
    model_placement place = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
    if (model_init(&m, &cfg, &place, seed, err, sizeof err)) {
        fprintf(stderr, "twotower export: %s\n", err);
        return 2;
    }
    int rc = train_export_model(&m, out, err, sizeof err);
    if (rc)
        fprintf(stderr, "twotower export: %s\n", err);
    else
        printf("twotower export: wrote %s (%d tower(s), %zu parameters per tower, seed %" PRIu64
               ")\n", out, m.towers, m.plan.n_params, seed);
    model_free(&m);
    return rc ? 1 : 0;
}
