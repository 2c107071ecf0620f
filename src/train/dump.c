/* dump.c: `twotower dump`, one training step written out for the PyTorch agreement check
 * (tools/reference/compare.py): weights, the batch, the exact dropout masks, logits,
 * loss and every parameter gradient, from model_forward(train) + model_backward. */
#include "train/dump.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "train/device.h"
#include "train/export.h"
#include "train/nets.h"
#include "train/safetensors.h"

void train_dump_batch(float *x, int32_t *labels, const tower_config *cfg, uint64_t seed)
{
    /* keys of their own ("dump", 0/1), so the batch never shares draws with init or
     * dropout */
    uint64_t kx = base_rng_mix(seed ^ 0x64756d70ull, 0), kl = base_rng_mix(seed ^ 0x64756d70ull, 1);
    size_t n = (size_t)cfg->batch * cfg->in_ch * cfg->in_size * cfg->in_size;
    for (size_t i = 0; i < n; i++)
        x[i] = 255.0f * base_rng_uniform(kx, i) - 127.5f;
    for (int b = 0; b < cfg->batch; b++)
        labels[b] = (int32_t)(base_rng_mix(kl, (uint64_t)b) % (uint64_t)cfg->classes);
}

/* Tower 0's copy of the gathered logits (T, B, Vt), wherever the tower lives. */
static int copy_logits(model *m, real *dst, size_t n)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (m->tw[0].device >= 0)
        return tower_cuda_copy(&m->tw[0], dst, m->tw[0].logits, sizeof(real) * n, 1);
#endif
    memcpy(dst, m->tw[0].logits, sizeof(real) * n);
    return 0;
}

int train_dump_model(model *m, const float *x, const int32_t *labels, const char *path,
                     char *err, size_t errlen)
{
    return train_dump_model_update(m, x, labels, 0, path, err, errlen);
}

int train_dump_model_update(model *m, const float *x, const int32_t *labels, real lr,
                            const char *path, char *err, size_t errlen)
{
    const tower_config *c = &m->plan.cfg;
    int T = m->towers, B = c->batch, Vt = m->plan.vt, V = T * Vt, nl = m->plan.n_layers;
    size_t np = m->plan.n_params;

    model_set_batch(m, x, labels);
    /* the evaluation forward first (no dropout masks drawn, nothing kept), then the
     * training step the rest of the file describes */
    size_t logit_n = (size_t)B * V;
    real *eval = malloc(sizeof(real) * 2 * logit_n);
    if (!eval) {
        snprintf(err, errlen, "%s: out of memory for the logits", path);
        return -1;
    }
    model_forward(m, 0);
    if (copy_logits(m, eval + logit_n, logit_n)) {
        snprintf(err, errlen, "%s: cannot copy the logits from the device", path);
        free(eval);
        return -1;
    }
    double loss = model_forward(m, 1);
    model_backward(m);
    if (m->failed) {
        snprintf(err, errlen, "%s: the step failed: %s", path, m->error);
        free(eval);
        return -1;
    }

    /* every host buffer in one allocation: params, grads per tower, logits (twice:
     * gathered and class order), masks */
    size_t mask_n[TOWER_MAX_LAYERS] = {0}, masks_total = 0;
    for (int l = 0; l < nl; l++) {
        const tower_layer_shape *L = &m->plan.layer[l];
        if (L->drop_p > 0) {
            mask_n[l] = (size_t)B * L->final_ch * L->final_h * L->final_h;
            masks_total += (size_t)T * mask_n[l];
        }
    }
    int upd = lr > 0;
    size_t total = (upd ? 3 : 2) * (size_t)T * np + 2 * logit_n;
    real *buf = malloc(sizeof(real) * total);
    float *masks = malloc(sizeof(float) * (masks_total ? masks_total : 1));
    if (!buf || !masks) {
        snprintf(err, errlen, "%s: out of memory for %zu values", path, total + masks_total);
        free(buf);
        free(masks);
        free(eval);
        return -1;
    }
    real *params = buf, *grads = buf + (size_t)T * np;
    real *gathered = grads + (size_t)T * np, *logits = gathered + logit_n;
    real *after = logits + logit_n; /* (upd) the parameters after one update */
    for (int t = 0; t < T; t++) {
        model_get_tensor(m, t, 0, params + (size_t)t * np);
        model_get_tensor(m, t, 1, grads + (size_t)t * np);
    }
    if (copy_logits(m, gathered, logit_n)) {
        snprintf(err, errlen, "%s: cannot copy the logits from the device", path);
        free(buf);
        free(masks);
        free(eval);
        return -1;
    }
    /* (T, B, Vt) -> (B, V), class c = slot * Vt + j; the evaluation logits likewise */
    for (int k = 0; k < 2; k++) {
        const real *from = k ? eval + logit_n : gathered;
        real *to = k ? eval : logits;
        for (int b = 0; b < B; b++)
            for (int cl = 0; cl < V; cl++)
                to[(size_t)b * V + cl] = from[(size_t)(cl / Vt) * B * Vt + (size_t)b * Vt + cl % Vt];
    }

    if (upd) {
        /* two optimizer steps (the step counter is left alone): on these gradients, then
         * on -0.5 times them, so the moments mix two different gradients and every
         * constant of the update (betas, bias corrections, eps) shows in the result */
        model_update(m, lr);
        for (int t = 0; t < T; t++) {
            real *g = after + (size_t)t * np; /* scratch until the parameters go there */
            model_get_tensor(m, t, 1, g);
            for (size_t i = 0; i < np; i++) g[i] *= (real)-0.5;
            model_set_tensor(m, t, 1, g);
        }
        model_update(m, lr);
        for (int t = 0; t < T; t++) model_get_tensor(m, t, 0, after + (size_t)t * np);
        if (m->failed) {
            snprintf(err, errlen, "%s: the update failed: %s", path, m->error);
            free(buf);
            free(masks);
            free(eval);
            return -1;
        }
    }
    enum { MAX_T = 2 * (6 * TOWER_MAX_LAYERS + TOWER_MAX_LAYERS) + 5 };
    st_tensor tens[MAX_T];
    char names[2 * 3 * 2 * TOWER_MAX_LAYERS + 2 * TOWER_MAX_LAYERS][TRAIN_EXPORT_NAME_MAX];
    int nt = 0, nn = 0;
    for (int t = 0; t < T; t++) {
        int k = train_export_views(tens + nt, names + nn, &m->plan, t, params + (size_t)t * np, "");
        nt += k;
        nn += k;
    }
    double loss_v[1] = {loss};
    tens[nt++] = (st_tensor){"x", "F32", 4, {B, c->in_ch, c->in_size, c->in_size}, x};
    tens[nt++] = (st_tensor){"labels", "I32", 1, {B}, labels};
    tens[nt++] = (st_tensor){"logits", TRAIN_REAL_DTYPE, 2, {B, V}, logits};
    tens[nt++] = (st_tensor){"logits.eval", TRAIN_REAL_DTYPE, 2, {B, V}, eval};
    tens[nt++] = (st_tensor){"loss", "F64", 1, {1}, loss_v};
    for (int t = 0; t < T; t++) {
        int k = train_export_views(tens + nt, names + nn, &m->plan, t, grads + (size_t)t * np,
                                   "grad.");
        nt += k;
        nn += k;
    }
    for (int t = 0; upd && t < T; t++) {
        int k = train_export_views(tens + nt, names + nn, &m->plan, t, after + (size_t)t * np,
                                   "update.");
        nt += k;
        nn += k;
    }
    /* the masks the dropout stages applied: keep unit i when
     * base_rng_uniform(tower_layer_key(dropout_key, l), i) >= p, i in the (B, C[, H, W])
     * order of layer l's final output (the stage after layer l's last one; a row's
     * dropout on its input is the stage after the row before) */
    float *mk = masks;
    for (int t = 0; t < T; t++)
        for (int l = 0; l < nl; l++) {
            const tower_layer_shape *L = &m->plan.layer[l];
            if (!mask_n[l])
                continue;
            uint64_t key = tower_layer_key(m->tw[t].dropout_key, l);
            float p = (float)L->drop_p;
            for (size_t i = 0; i < mask_n[l]; i++)
                mk[i] = base_rng_uniform(key, i) >= p ? 1.0f : 0.0f;
            snprintf(names[nn], TRAIN_EXPORT_NAME_MAX, "mask.tower%d.%s", t,
                     tower_plan_row(&m->plan, l)->name);
            if (tower_plan_row(&m->plan, l)->kind == TOWER_CONV)
                tens[nt++] = (st_tensor){names[nn++], "F32", 4,
                                         {B, L->final_ch, L->final_h, L->final_h}, mk};
            else
                tens[nt++] = (st_tensor){names[nn++], "F32", 2, {B, L->final_ch}, mk};
            mk += mask_n[l];
        }

    char v[9][32], nv[5][32], uv[6][32];
    snprintf(v[0], sizeof v[0], "%" PRIu64, m->seed);
    snprintf(v[1], sizeof v[1], "%" PRId64, m->step);
    snprintf(v[2], sizeof v[2], "%d", T);
    snprintf(v[3], sizeof v[3], "%d", c->classes);
    snprintf(v[4], sizeof v[4], "%d", c->in_size);
    snprintf(v[5], sizeof v[5], "%d", B);
    snprintf(v[6], sizeof v[6], "%d", c->width_div > 0 ? c->width_div : 1);
    snprintf(v[7], sizeof v[7], "%s", m->place.cpu ? "cpu" : "cuda");
    snprintf(v[8], sizeof v[8], "%d", c->in_ch);
    const char *meta[20 + TRAIN_EXPORT_NET_META + 12 + 1] = {
        "format", "twotower-dump", "seed", v[0], "step", v[1], "towers", v[2],
        "classes", v[3], "size", v[4], "batch", v[5], "width_div", v[6], "backend", v[7],
        "in_ch", v[8]};
    int nm = 20 + train_export_net_meta(meta + 20, nv, &c->net);
    if (upd) {
        const tower_optim *o = &m->optim;
        snprintf(uv[0], 32, "%s", o->kind == TOWER_OPTIM_ADAM ? "adam" : "sgd");
        snprintf(uv[1], 32, "%.9g", (double)lr);
        snprintf(uv[2], 32, "%.17g", o->kind == TOWER_OPTIM_ADAM ? o->beta1 : o->momentum);
        snprintf(uv[3], 32, "%.17g", o->beta2);
        snprintf(uv[4], 32, "%.17g", o->eps);
        snprintf(uv[5], 32, "%.17g", o->weight_decay);
        const char *keys[6] = {"update", "update.lr", o->kind == TOWER_OPTIM_ADAM
                                                          ? "update.beta1" : "update.momentum",
                               "update.beta2", "update.eps", "update.weight_decay"};
        for (int i = 0; i < 6; i++) {
            meta[nm++] = keys[i];
            meta[nm++] = uv[i];
        }
    }
    meta[nm] = NULL;
    int rc = st_write(path, tens, nt, meta, err, errlen);
    free(buf);
    free(masks);
    free(eval);
    return rc;
}

typedef struct {
    tower_config cfg;
    uint64_t seed;
    const char *out;
    train_placement_args place;
    train_net_args net;
} dump_opts;

static void dump_defaults(void *p)
{
    dump_opts *o = p;
    /* 0: the net's (train_net_choose) */
    *o = (dump_opts){.cfg = {.towers = 0, .classes = 0, .batch = 2, .in_size = 0,
                             .in_ch = 0, .width_div = 1},
                     .seed = 1};
    train_net_args_default(&o->net);
}

static const base_flag dump_flags[] = {
    {BASE_FLAG_STR("out", dump_opts, out, "FILE", "the safetensors file to write (required)")},
    {BASE_FLAG_INT("batch", dump_opts, cfg.batch, 1, 4096, "N", "images in the batch")},
    {BASE_FLAG_U64("seed", dump_opts, seed, UINT64_MAX, "S", "the net's init and the batch")},
    {BASE_FLAG_GROUP(train_net_flags, dump_opts, net)},
    {BASE_FLAG_INT("size", dump_opts, cfg.in_size, 1, 4096, "N", "input side"),
     .deflt = "the net's"},
    {BASE_FLAG_INT("towers", dump_opts, cfg.towers, 1, 2, "N", "2 or 1 (--net half)"),
     .deflt = "the net's"},
    {BASE_FLAG_INT("classes", dump_opts, cfg.classes, 2, 1000000, "N", "classes of fc8"),
     .deflt = "the net's"},
    {BASE_FLAG_INT("width-div", dump_opts, cfg.width_div, 1, 2048, "N",
                   "divide every layer's width by N")},
    {BASE_FLAG_GROUP(train_placement_flags, dump_opts, place)},
    {0}};

static const base_flags_cmd dump_cmd = {
    .name = "dump",
    .synopsis = "--out F.safetensors [flags]",
    .about = "Runs one training forward and backward (no update) of the net (--net and its\n"
             "switches) initialised from --seed on a batch made from --seed, and writes\n"
             "weights, batch, dropout masks, logits (also an evaluation forward's), loss and\n"
             "gradients for tools/reference/compare.py. CPU unless --gpus.\n",
    .flags = dump_flags,
    .opts_size = sizeof(dump_opts),
    .defaults = dump_defaults};

int train_dump_main(int argc, char **argv)
{
    dump_opts o;
    base_flags_out fo;
    int frc = base_flags_cli(&dump_cmd, &o, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    if (!o.out) {
        fprintf(stderr, "twotower dump: --out FILE is required (see twotower dump "
                        "--help)\n");
        return 2;
    }
    tower_config cfg = o.cfg;
    uint64_t seed = o.seed;
    const char *out = o.out;
    model_placement place;
    char err[512];
    if (!o.place.gpus) o.place.cpu = 1; /* the CPU unless --gpus says otherwise */
    if (train_placement_resolve(&o.place, &place, err, sizeof err)) {
        fprintf(stderr, "twotower dump: %s\n", err);
        return 2;
    }
    /* before any work: never a device, a FIFO or a folder */
    if (base_check_output(out, "--out", NULL, 0, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "twotower dump: %s\n", err);
        return 2;
    }
    model m;
    if (train_net_args_choose(&o.net, &cfg, err, sizeof err) ||
        model_init(&m, &cfg, &place, seed, err, sizeof err)) {
        fprintf(stderr, "twotower dump: %s\n", err);
        return 2;
    }
    size_t xn = (size_t)cfg.batch * cfg.in_ch * cfg.in_size * cfg.in_size;
    float *x = malloc(sizeof(float) * xn);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)cfg.batch);
    int rc = -1;
    if (!x || !labels) {
        snprintf(err, sizeof err, "%s: out of memory for the batch", out);
    } else {
        train_dump_batch(x, labels, &cfg, seed);
        rc = train_dump_model(&m, x, labels, out, err, sizeof err);
    }
    if (rc)
        fprintf(stderr, "twotower dump: %s\n", err);
    else
        printf("twotower dump: wrote %s (loss %.6f, %d tower(s), batch %d, size %d, "
               "%d classes)\n", out, m.last_loss, m.towers, cfg.batch, cfg.in_size,
               cfg.classes);
    free(x);
    free(labels);
    model_free(&m);
    return rc ? 1 : 0;
}
