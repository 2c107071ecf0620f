/* net.c: the 2012 topology as a table, the shapes it implies, one tower's arena, the
 * paper's init, and the per-tower forward/backward built from the layers. The trainer
 * (src/train/model.c) runs the towers layer by layer and exchanges between them. */
#include "tower/tower.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The paper's figure 2. Padding: conv1 2 (224 -> 55, as torchvision; see paper_notes.md),
 * conv2 2, conv3-5 1 ("same"). out: per tower in the two-tower net; fc8: all classes. */
const tower_layer_spec tower_alexnet2012[TOWER_LAYERS] = {
    /* name    kind        out   k  s  p  both relu lrn pool drop bias */
    {"conv1", TOWER_CONV, 48, 11, 4, 2, 0, 1, 1, 1, 0, 0.0f},
    {"conv2", TOWER_CONV, 128, 5, 1, 2, 0, 1, 1, 1, 0, 1.0f},
    {"conv3", TOWER_CONV, 192, 3, 1, 1, 1, 1, 0, 0, 0, 0.0f},
    {"conv4", TOWER_CONV, 192, 3, 1, 1, 0, 1, 0, 0, 0, 1.0f},
    {"conv5", TOWER_CONV, 128, 3, 1, 1, 0, 1, 0, 1, 0, 1.0f},
    {"fc6", TOWER_FC, 2048, 1, 1, 0, 1, 1, 0, 0, 1, 1.0f},
    {"fc7", TOWER_FC, 2048, 1, 1, 0, 1, 1, 0, 0, 1, 1.0f},
    {"fc8", TOWER_FC, 1000, 1, 1, 0, 1, 0, 0, 0, 0, 0.0f},
};

int tower_plan_make(tower_plan *plan, const tower_config *cfg, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    plan->cfg = *cfg;
    int T = cfg->towers, div = cfg->width_div > 0 ? cfg->width_div : 1;
    plan->cfg.width_div = div;
    if (T != 1 && T != 2) {
        snprintf(err, errlen, "towers must be 1 or 2, not %d", T);
        return -1;
    }
    if (cfg->classes < 2 || cfg->classes % T) {
        snprintf(err, errlen, "classes (%d) must be at least 2 and divisible by towers (%d)",
                 cfg->classes, T);
        return -1;
    }
    if (cfg->batch < 1 || cfg->in_ch < 1 || cfg->in_size < 1) {
        snprintf(err, errlen, "batch, input channels and input size must be positive");
        return -1;
    }
    plan->vt = cfg->classes / T;
    int ch = cfg->in_ch, side = cfg->in_size;
    size_t off = 0;
    for (int l = 0; l < TOWER_LAYERS; l++) {
        const tower_layer_spec *s = &tower_alexnet2012[l];
        tower_layer_shape *L = &plan->layer[l];
        L->sources = s->reads_both ? T : 1;
        L->out_ch = l == TOWER_LAYERS - 1 ? plan->vt : s->out / div;
        if (L->out_ch < 1) {
            snprintf(err, errlen, "width_div %d leaves %s with no units", div, s->name);
            return -1;
        }
        int taps;
        if (s->kind == TOWER_CONV) {
            L->in_ch = ch;
            L->in_h = side;
            L->out_h = tower_conv_out(side, s->k, s->stride, s->pad);
            taps = s->k * s->k;
        } else {
            L->in_ch = ch * side * side; /* flattened (C, H, W) */
            L->in_h = 1;
            L->out_h = 1;
            taps = 1;
        }
        L->final_ch = L->out_ch;
        L->final_h = L->out_h;
        if (s->pool) L->final_h = L->out_h < TOWER_POOL_K
                                      ? 0 : (L->out_h - TOWER_POOL_K) / TOWER_POOL_STRIDE + 1;
        if (L->out_h < 1 || L->final_h < 1) {
            snprintf(err, errlen, "input size %d is too small: %s would have no output",
                     cfg->in_size, s->name);
            return -1;
        }
        L->w_count = (size_t)L->out_ch * L->sources * L->in_ch * taps;
        L->b_count = (size_t)L->out_ch;
        L->w_off = off;
        off += L->w_count;
        L->b_off = off;
        off += L->b_count;
        L->macs = (double)L->w_count * L->out_h * L->out_h;
        ch = L->final_ch;
        side = L->final_h;
    }
    plan->n_params = off;
    return 0;
}

uint64_t tower_step_key(uint64_t seed, int64_t step, int tower_index)
{
    return base_rng_mix(base_rng_mix(seed ^ 0x64726f706f7574ull, (uint64_t)step),
                         (uint64_t)tower_index);
}

uint64_t tower_layer_key(uint64_t step_key, int layer)
{
    return base_rng_mix(step_key, (uint64_t)layer);
}

void tower_init_params(real *params, const tower_plan *plan, int index, uint64_t seed)
{
    for (int l = 0; l < TOWER_LAYERS; l++) {
        const tower_layer_shape *L = &plan->layer[l];
        uint64_t key = base_rng_mix(seed ^ 0x696e6974ull, (uint64_t)(index * 64 + l));
        real *w = params + L->w_off, *b = params + L->b_off;
        for (size_t i = 0; i < L->w_count; i++)
            w[i] = (real)(TOWER_INIT_STD * base_rng_normal(key, 2 * (uint64_t)i, 0));
        for (size_t i = 0; i < L->b_count; i++) b[i] = (real)tower_alexnet2012[l].bias_init;
    }
}

/* Bump allocator over the arena: 256-byte aligned slices (good for the GPU too).
 * With base NULL it only counts. */
typedef struct {
    char *base;
    size_t used;
} carver;

static void *take(carver *c, size_t bytes)
{
    size_t at = (c->used + 255) & ~(size_t)255;
    c->used = at + bytes;
    return c->base ? c->base + at : NULL;
}
#define TAKE_REAL(c, n) ((real *)take((c), sizeof(real) * (size_t)(n)))

size_t tower_carve(tower *t, char *base)
{
    const tower_plan *p = &t->plan;
    size_t B = (size_t)p->cfg.batch, P = p->n_params;
    int T = p->cfg.towers;
    carver c = {base, 0};
    t->params = TAKE_REAL(&c, P);
    t->grads = TAKE_REAL(&c, P);
    t->momentum = TAKE_REAL(&c, P);
    for (int l = 0; l < TOWER_LAYERS; l++) {
        const tower_layer_shape *L = &p->layer[l];
        t->w[l] = t->params ? t->params + L->w_off : NULL;
        t->b[l] = t->params ? t->params + L->b_off : NULL;
        t->dw[l] = t->grads ? t->grads + L->w_off : NULL;
        t->db[l] = t->grads ? t->grads + L->b_off : NULL;
    }
    t->x = TAKE_REAL(&c, B * p->cfg.in_ch * p->cfg.in_size * p->cfg.in_size);
    size_t col = 0;
    for (int l = 0; l < TOWER_LAYERS; l++) {
        const tower_layer_spec *s = &tower_alexnet2012[l];
        const tower_layer_shape *L = &p->layer[l];
        tower_acts *A = &t->acts[l];
        size_t in_n = B * L->in_ch * L->in_h * L->in_h;
        size_t act_n = B * L->out_ch * L->out_h * L->out_h;
        size_t fin_n = B * L->final_ch * L->final_h * L->final_h;
        if (s->kind == TOWER_CONV) {
            size_t cs = tower_conv_col_size(L->in_ch, L->in_h, L->in_h, s->k, s->stride, s->pad);
            if (cs > col) col = cs;
        }
        /* input: the image, the previous layer's output, or a gathered buffer */
        if (l == 0) {
            A->in = t->x;
            A->din = NULL;
        } else if (s->reads_both) {
            /* A->in and A->din were allocated by layer l - 1, whose `out` is a slot of it */
        } else {
            A->in = t->acts[l - 1].out;
            A->din = t->acts[l - 1].dout;
        }
        /* the last stage writes `out`: slot `index` of the next gathered buffer, or
         * (fc8) slot `index` of the gathered logits, or a buffer of its own */
        int next_gathered = l + 1 < TOWER_LAYERS && tower_alexnet2012[l + 1].reads_both;
        int last_is_act = !s->lrn && !s->pool && !s->dropout;
        if (l == TOWER_LAYERS - 1) {
            t->logits = TAKE_REAL(&c, (size_t)T * B * p->vt);
            A->out = t->logits ? t->logits + (size_t)t->index * B * p->vt : NULL;
            A->dout = TAKE_REAL(&c, fin_n);
        } else if (next_gathered) {
            /* allocate the next layer's gathered input now so `out` can point into it;
             * the loop iteration for l + 1 must not allocate it again */
            const tower_layer_shape *N = &p->layer[l + 1];
            size_t next_in = B * N->in_ch * N->in_h * N->in_h;
            t->acts[l + 1].in = TAKE_REAL(&c, next_in * N->sources);
            t->acts[l + 1].din = TAKE_REAL(&c, next_in * N->sources);
            A->out = t->acts[l + 1].in ? t->acts[l + 1].in + (size_t)t->index * next_in : NULL;
            A->dout = TAKE_REAL(&c, fin_n);
        } else {
            A->out = TAKE_REAL(&c, fin_n);
            A->dout = TAKE_REAL(&c, fin_n);
        }
        if (last_is_act) {
            A->act = A->out;
            A->dact = A->dout;
        } else {
            A->act = TAKE_REAL(&c, act_n);
            A->dact = TAKE_REAL(&c, act_n);
        }
        A->lrn = A->lrn_scale = A->dlrn = NULL;
        A->pool = A->dpool = NULL;
        A->pool_idx = NULL;
        if (s->lrn) {
            A->lrn = TAKE_REAL(&c, act_n);
            A->lrn_scale = TAKE_REAL(&c, act_n);
            A->dlrn = TAKE_REAL(&c, act_n);
        }
        if (s->pool) { /* pooling is always the last stage in this net */
            A->pool = A->out;
            A->dpool = A->dout;
            A->pool_idx = (int32_t *)take(&c, sizeof(int32_t) * fin_n);
        }
        (void)in_n;
    }
    t->probs = TAKE_REAL(&c, (size_t)T * B * p->vt);
    t->losses = TAKE_REAL(&c, B);
    t->labels = (int32_t *)take(&c, sizeof(int32_t) * B);
    t->col = TAKE_REAL(&c, col);
    return c.used;
}

/* ---- one tower's life cycle and its per-layer passes (CPU) ------------------------ */

#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
#define ON_GPU(t) ((t)->device >= 0)
#else
#define ON_GPU(t) 0
#endif

int tower_init(tower *t, const tower_plan *plan, int index, uint64_t seed, char *err,
               size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->plan = *plan;
    t->index = index;
    t->device = -1;
    size_t bytes = tower_carve(t, NULL);
    void *mem = aligned_alloc(256, (bytes + 255) & ~(size_t)255);
    if (!mem) {
        snprintf(err, errlen, "out of host memory: tower %d needs %.1f MiB", index,
                 bytes / 1048576.0);
        return -1;
    }
    memset(mem, 0, bytes);
    t->arena = mem;
    t->arena_bytes = bytes;
    tower_carve(t, mem);
    tower_init_params(t->params, plan, index, seed);
    return 0;
}

void tower_free(tower *t)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (t->device >= 0) {
        tower_free_cuda(t);
        return;
    }
#endif
    free(t->arena);
    t->arena = NULL;
}

void tower_zero_grads(tower *t)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (ON_GPU(t)) {
        tower_zero_grads_cuda(t);
        return;
    }
#endif
    memset(t->grads, 0, sizeof(real) * t->plan.n_params);
}

void tower_forward_layer(tower *t, int l, int train)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (ON_GPU(t)) {
        tower_forward_layer_cuda(t, l, train);
        return;
    }
#endif
    const tower_layer_spec *s = &tower_alexnet2012[l];
    const tower_layer_shape *L = &t->plan.layer[l];
    tower_acts *A = &t->acts[l];
    int B = t->plan.cfg.batch, S = L->sources;
    size_t act_n = (size_t)B * L->out_ch * L->out_h * L->out_h;
    if (s->kind == TOWER_CONV) {
        size_t slot = (size_t)B * L->in_ch * L->in_h * L->in_h;
        int kk = L->in_ch * s->k * s->k;
        for (int src = 0; src < S; src++) /* sum the sources' contributions */
            tower_conv_forward(A->act, A->in + src * slot, t->w[l] + (size_t)src * kk,
                               src == 0 ? t->b[l] : NULL, B, L->in_ch, L->in_h, L->in_h,
                               L->out_ch, s->k, s->stride, s->pad, S * kk, src > 0, t->col);
    } else {
        size_t slot = (size_t)B * L->in_ch;
        for (int src = 0; src < S; src++)
            tower_fc_forward(A->act, A->in + src * slot, t->w[l] + (size_t)src * L->in_ch,
                             src == 0 ? t->b[l] : NULL, B, L->in_ch, L->out_ch,
                             S * L->in_ch, src > 0);
    }
    if (s->relu) tower_relu_forward(A->act, A->act, act_n);
    const real *cur = A->act;
    if (s->lrn) {
        tower_lrn_forward(A->lrn, A->lrn_scale, cur, B, L->out_ch, L->out_h * L->out_h,
                          TOWER_LRN_N, (real)TOWER_LRN_K, (real)TOWER_LRN_ALPHA,
                          (real)TOWER_LRN_BETA);
        cur = A->lrn;
    }
    if (s->pool)
        tower_maxpool_forward(A->pool, A->pool_idx, cur, B, L->out_ch, L->out_h, L->out_h,
                              TOWER_POOL_K, TOWER_POOL_STRIDE);
    if (s->dropout)
        tower_dropout_forward(A->out, cur, act_n, (real)TOWER_DROPOUT_P,
                              tower_layer_key(t->dropout_key, l), train);
}

void tower_backward_layer(tower *t, int l)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (ON_GPU(t)) {
        tower_backward_layer_cuda(t, l);
        return;
    }
#endif
    const tower_layer_spec *s = &tower_alexnet2012[l];
    const tower_layer_shape *L = &t->plan.layer[l];
    tower_acts *A = &t->acts[l];
    int B = t->plan.cfg.batch, S = L->sources, HW = L->out_h * L->out_h;
    size_t act_n = (size_t)B * L->out_ch * HW;
    /* walk the stages back from `dout` to `dact` */
    if (s->dropout)
        tower_dropout_backward(A->dact, A->dout, act_n, (real)TOWER_DROPOUT_P,
                               tower_layer_key(t->dropout_key, l));
    if (s->pool)
        tower_maxpool_backward(s->lrn ? A->dlrn : A->dact, A->dpool, A->pool_idx, B,
                               L->out_ch, L->out_h, L->out_h, TOWER_POOL_K, TOWER_POOL_STRIDE);
    if (s->lrn)
        tower_lrn_backward(A->dact, A->dlrn, A->act, A->lrn, A->lrn_scale, B, L->out_ch, HW,
                           TOWER_LRN_N, (real)TOWER_LRN_K, (real)TOWER_LRN_ALPHA,
                           (real)TOWER_LRN_BETA);
    if (s->relu) tower_relu_backward(A->dact, A->dact, A->act, act_n);
    if (s->kind == TOWER_CONV) {
        size_t slot = (size_t)B * L->in_ch * L->in_h * L->in_h;
        int kk = L->in_ch * s->k * s->k;
        for (int src = 0; src < S; src++)
            tower_conv_backward(A->din ? A->din + src * slot : NULL,
                                t->dw[l] + (size_t)src * kk, src == 0 ? t->db[l] : NULL,
                                A->dact, A->in + src * slot, t->w[l] + (size_t)src * kk, B,
                                L->in_ch, L->in_h, L->in_h, L->out_ch, s->k, s->stride, s->pad,
                                S * kk, 0, t->col);
    } else {
        size_t slot = (size_t)B * L->in_ch;
        for (int src = 0; src < S; src++)
            tower_fc_backward(A->din ? A->din + src * slot : NULL,
                              t->dw[l] + (size_t)src * L->in_ch, src == 0 ? t->db[l] : NULL,
                              A->dact, A->in + src * slot, t->w[l] + (size_t)src * L->in_ch, B,
                              L->in_ch, L->out_ch, S * L->in_ch, 0);
    }
}

double tower_loss_forward(tower *t)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (ON_GPU(t)) return tower_loss_forward_cuda(t);
#endif
    int B = t->plan.cfg.batch;
    tower_softmax_xent_forward(t->losses, t->probs, t->logits, t->labels, B,
                               t->plan.cfg.towers, t->plan.vt);
    double sum = 0;
    for (int b = 0; b < B; b++) sum += t->losses[b];
    return sum / B;
}

void tower_loss_backward(tower *t)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (ON_GPU(t)) {
        tower_loss_backward_cuda(t);
        return;
    }
#endif
    tower_softmax_xent_backward(t->acts[TOWER_LAYERS - 1].dout, t->probs, t->labels,
                                t->plan.cfg.batch, t->plan.cfg.towers, t->plan.vt, t->index);
}

void tower_sgd(tower *t, real lr, real momentum, real wd)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    if (ON_GPU(t)) {
        tower_sgd_cuda(t, lr, momentum, wd);
        return;
    }
#endif
    /* weight decay on weights only, as in cuda-convnet2 (see paper_notes.md) */
    for (int l = 0; l < TOWER_LAYERS; l++) {
        const tower_layer_shape *L = &t->plan.layer[l];
        tower_sgd_update(t->params + L->w_off, t->momentum + L->w_off, t->grads + L->w_off,
                         L->w_count, lr, momentum, wd);
        tower_sgd_update(t->params + L->b_off, t->momentum + L->b_off, t->grads + L->b_off,
                         L->b_count, lr, momentum, 0);
    }
}
