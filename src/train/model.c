/* model.c: a net of one or two towers (figure 2 for the paper's). Runs every tower
 * layer by layer and exchanges between them where the towers talk: the input of every row
 * that reads all towers (all-gather forward, reduce-scatter backward; conv3, fc6, fc7 and
 * fc8 in the paper's net), and the logits. Built twice, like src/tower: float, and double
 * for the gradient checks. */
#include "train/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
#define MODEL_CUDA 1
#include <cuda_runtime.h>

#include "data/data.h"
#else
#define MODEL_CUDA 0
#endif

static void *tower_stream(model *m, int t)
{
#if MODEL_CUDA
    if (m->tw[t].device >= 0) return tower_cuda_stream(&m->tw[t]);
#endif
    (void)m;
    (void)t;
    return NULL;
}

static void hook_begin(const model *m, int t, int region)
{
    if (m->hooks) m->hooks->begin(m->hooks->ctx, t, region);
}

static void hook_end(const model *m, int t, int region)
{
    if (m->hooks) m->hooks->end(m->hooks->ctx, t, region);
}

/* Exchange failures are fatal for a step: comm has already aborted its communicators
 * and printed the cause; a half-exchanged step cannot be continued. */
static void must(int rc, const char *what, const char *err)
{
    if (rc == 0) return;
    fprintf(stderr, "twotower: exchange failed at %s: %s\n", what, err);
    exit(3);
}

int model_init(model *m, const tower_config *cfg, const model_placement *place, uint64_t seed,
               char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (tower_plan_make(&m->plan, cfg, err, errlen)) return -1;
    m->towers = cfg->towers;
    m->place = *place;
    m->seed = seed;
    m->optim = m->plan.cfg.net.optim;
    int devices[2] = {0, 0};
    comm_kind kind = COMM_HOST;
    if (!place->cpu) {
#if MODEL_CUDA
        for (int t = 0; t < m->towers; t++)
            devices[t] = place->ngpus == 2 ? place->gpus[t] : place->gpus[0];
        kind = (place->ngpus == 2 && m->towers == 2) ? COMM_NCCL : COMM_SAME_DEVICE;
#else
        snprintf(err, errlen, "this build has no CUDA backend: use --cpu");
        return -1;
#endif
    }
    for (int t = 0; t < m->towers; t++) {
        int rc;
#if MODEL_CUDA
        if (!place->cpu)
        {
            rc = tower_init_cuda(&m->tw[t], &m->plan, t, devices[t], seed, err, errlen);
            if (!rc && (place->tf32 || place->conv) &&
                tower_cuda_configure(&m->tw[t], place->tf32, place->conv, err, errlen)) {
                tower_free(&m->tw[t]);
                rc = -1;
            }
        } else
#endif
            rc = tower_init(&m->tw[t], &m->plan, t, seed, err, errlen);
        if (rc) {
            for (int u = 0; u < t; u++) tower_free(&m->tw[u]);
            return -1;
        }
    }
    m->comm = comm_init(kind, sizeof(real) == 8 ? COMM_F64 : COMM_F32, m->towers, devices, err,
                        errlen);
    if (!m->comm) {
        for (int t = 0; t < m->towers; t++) tower_free(&m->tw[t]);
        return -1;
    }
    return 0;
}

void model_free(model *m)
{
#if MODEL_CUDA
    for (int t = 0; t < m->towers; t++) {
        if (m->tw[t].device < 0) continue;
        cudaSetDevice(m->tw[t].device);
        /* uploads may still be in flight on an error path: let them end first */
        cudaStreamSynchronize((cudaStream_t)tower_cuda_stream(&m->tw[t]));
        cudaFree(m->in_crops[t]);
        cudaFree(m->in_params[t]);
        cudaFree(m->in_mean[t]);
        m->in_crops[t] = m->in_params[t] = m->in_mean[t] = NULL;
    }
#endif
    for (int t = 0; t < m->towers; t++) tower_free(&m->tw[t]);
    comm_free(m->comm);
    m->comm = NULL;
}

/* Copies bytes into tower memory (host or device). */
static void put(model *m, int t, void *dst, const void *src, size_t bytes)
{
#if MODEL_CUDA
    if (m->tw[t].device >= 0) {
        if (tower_cuda_copy(&m->tw[t], dst, src, bytes, 0)) exit(3); /* it said why */
        return;
    }
#endif
    (void)m;
    (void)t;
    memcpy(dst, src, bytes);
}

static void get(const model *m, int t, void *dst, const void *src, size_t bytes)
{
#if MODEL_CUDA
    if (m->tw[t].device >= 0) {
        if (tower_cuda_copy((tower *)&m->tw[t], dst, src, bytes, 1)) exit(3);
        return;
    }
#endif
    (void)m;
    (void)t;
    memcpy(dst, src, bytes);
}

void model_set_batch(model *m, const float *x, const int32_t *labels)
{
    const tower_config *c = &m->plan.cfg;
    size_t n = (size_t)c->batch * c->in_ch * c->in_size * c->in_size;
    for (int t = 0; t < m->towers; t++) {
        tower *tw = &m->tw[t];
        if (sizeof(real) == sizeof(float)) {
            put(m, t, tw->x, x, n * sizeof(float));
        } else { /* the double build (tests): widen on the host */
            for (size_t i = 0; i < n; i++) tw->x[i] = (real)x[i];
        }
        put(m, t, tw->labels, labels, sizeof(int32_t) * (size_t)c->batch);
    }
}

#if MODEL_CUDA
static int cuda_fail(cudaError_t e, const char *what, int t, char *err, size_t errlen)
{
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "%s for tower %d: %s", what, t, cudaGetErrorString(e));
    return -1;
}
#endif

int model_set_batch_u8(model *m, const uint8_t *crops, const void *params,
                       const int32_t *labels, const float *mean, char *err, size_t errlen)
{
#if MODEL_CUDA
    const tower_config *c = &m->plan.cfg;
    size_t B = (size_t)c->batch, crop_bytes = B * c->in_size * c->in_size * 3;
    size_t par_bytes = B * sizeof(data_aug_params);
    size_t mean_bytes = sizeof(float) * DATA_SIZE * DATA_SIZE * 3;
    if (c->in_ch != 3) {
        snprintf(err, errlen, "model_set_batch_u8: the net takes %d input channels; the "
                              "uint8 crops have 3", c->in_ch);
        return -1;
    }
    for (int t = 0; t < m->towers; t++) {
        tower *tw = &m->tw[t];
        if (tw->device < 0) break;
        cudaStream_t st = (cudaStream_t)tower_cuda_stream(tw);
        if (cuda_fail(cudaSetDevice(tw->device), "cudaSetDevice", t, err, errlen)) return -1;
        if (!m->in_crops[t]) { /* first call: start-up, not a training step */
            void *dc = NULL, *dp = NULL, *dm = NULL;
            if (cuda_fail(cudaMalloc(&dc, crop_bytes), "cudaMalloc(crops)", t, err, errlen) ||
                cuda_fail(cudaMalloc(&dp, par_bytes), "cudaMalloc(params)", t, err, errlen) ||
                cuda_fail(cudaMalloc(&dm, mean_bytes), "cudaMalloc(mean)", t, err, errlen) ||
                cuda_fail(cudaMemcpyAsync(dm, mean, mean_bytes, cudaMemcpyHostToDevice, st),
                          "upload of the mean image", t, err, errlen)) {
                cudaStreamSynchronize(st);
                cudaFree(dc);
                cudaFree(dp);
                cudaFree(dm);
                return -1;
            }
            /* all three or none: in_crops doubles as the "allocated" flag */
            m->in_params[t] = dp;
            m->in_mean[t] = dm;
            m->in_crops[t] = dc;
        }
        if (cuda_fail(cudaMemcpyAsync(m->in_crops[t], crops, crop_bytes, cudaMemcpyHostToDevice,
                                      st), "upload of the crops", t, err, errlen) ||
            cuda_fail(cudaMemcpyAsync(m->in_params[t], params, par_bytes,
                                      cudaMemcpyHostToDevice, st),
                      "upload of the augmentation parameters", t, err, errlen) ||
            cuda_fail(cudaMemcpyAsync(tw->labels, labels, sizeof(int32_t) * B,
                                      cudaMemcpyHostToDevice, st),
                      "upload of the labels", t, err, errlen))
            return -1;
        if (data_augment_cuda(tw->x, m->in_crops[t], m->in_mean[t], m->in_params[t], (int)B,
                              c->in_size, st, err, errlen))
            return -1;
    }
    if (m->towers > 0 && m->tw[0].device >= 0) return 0;
#else
    (void)crops;
    (void)params;
    (void)labels;
    (void)mean;
#endif
    snprintf(err, errlen, "model_set_batch_u8 is the GPU data path; CPU towers take float "
                          "batches (model_set_batch)");
    (void)m;
    return -1;
}

/* Gathered buffer of layer l (it reads all towers): each tower's acts[l].in. */
static void gather_input(model *m, int l)
{
    const tower_layer_shape *L = &m->plan.layer[l];
    size_t count = (size_t)m->plan.cfg.batch * L->in_ch * L->in_h * L->in_h;
    void *bufs[2], *streams[2];
    char err[256] = "";
    for (int t = 0; t < m->towers; t++) {
        bufs[t] = m->tw[t].acts[l].in;
        streams[t] = tower_stream(m, t);
    }
    hook_begin(m, 0, MODEL_REGION_XCHG_FWD + l);
    int rc = comm_allgather(m->comm, bufs, count, streams, err, sizeof err);
    hook_end(m, 0, MODEL_REGION_XCHG_FWD + l);
    must(rc, tower_plan_row(&m->plan, l)->name, err);
}

double model_forward(model *m, int train)
{
    int n = m->plan.n_layers;
    for (int t = 0; t < m->towers; t++)
        m->tw[t].dropout_key = tower_step_key(m->seed, m->step, t);
    for (int l = 0; l < n; l++) {
        if (tower_plan_row(&m->plan, l)->reads == TOWER_READS_ALL) gather_input(m, l);
        for (int t = 0; t < m->towers; t++) {
            hook_begin(m, t, MODEL_REGION_FWD + l);
            tower_forward_layer(&m->tw[t], l, train);
            hook_end(m, t, MODEL_REGION_FWD + l);
        }
    }
    /* the logits: each tower computes the softmax over all classes (identically) */
    void *bufs[2], *streams[2];
    char err[256] = "";
    for (int t = 0; t < m->towers; t++) {
        bufs[t] = m->tw[t].logits;
        streams[t] = tower_stream(m, t);
    }
    hook_begin(m, 0, MODEL_REGION_XCHG_LOGITS);
    int rc = comm_allgather(m->comm, bufs, (size_t)m->plan.cfg.batch * m->plan.vt, streams, err,
                            sizeof err);
    hook_end(m, 0, MODEL_REGION_XCHG_LOGITS);
    must(rc, "logits", err);
    /* tower_loss_forward waits on the towers' streams: first a bounded wait for the
     * exchange (NCCL), so a hung peer GPU ends the run with a message */
    must(comm_wait(m->comm, err, sizeof err), "logits", err);
    double loss = 0;
    for (int t = 0; t < m->towers; t++) {
        hook_begin(m, t, MODEL_REGION_LOSS_FWD);
        loss = tower_loss_forward(&m->tw[t]);
        hook_end(m, t, MODEL_REGION_LOSS_FWD);
    }
    m->last_loss = loss;
    return loss;
}

void model_backward(model *m)
{
    for (int t = 0; t < m->towers; t++) {
        hook_begin(m, t, MODEL_REGION_ZERO);
        tower_zero_grads(&m->tw[t]);
        hook_end(m, t, MODEL_REGION_ZERO);
        hook_begin(m, t, MODEL_REGION_LOSS_BWD);
        tower_loss_backward(&m->tw[t]);
        hook_end(m, t, MODEL_REGION_LOSS_BWD);
    }
    for (int l = m->plan.n_layers - 1; l >= 0; l--) {
        for (int t = 0; t < m->towers; t++) {
            hook_begin(m, t, MODEL_REGION_BWD + l);
            tower_backward_layer(&m->tw[t], l);
            hook_end(m, t, MODEL_REGION_BWD + l);
        }
        if (l > 0 && tower_plan_row(&m->plan, l)->reads == TOWER_READS_ALL) {
            /* every tower holds a gradient for every source slot; each source tower
             * gets the sum for its own slot as the dout of layer l - 1 */
            const tower_layer_shape *L = &m->plan.layer[l];
            size_t count = (size_t)m->plan.cfg.batch * L->in_ch * L->in_h * L->in_h;
            void *outs[2], *grads[2], *streams[2];
            char err[256] = "";
            for (int t = 0; t < m->towers; t++) {
                outs[t] = m->tw[t].acts[l - 1].dout;
                grads[t] = m->tw[t].acts[l].din;
                streams[t] = tower_stream(m, t);
            }
            hook_begin(m, 0, MODEL_REGION_XCHG_BWD + l);
            int rc = comm_reduce_scatter(m->comm, outs, grads, count, streams, err, sizeof err);
            hook_end(m, 0, MODEL_REGION_XCHG_BWD + l);
            must(rc, tower_plan_row(&m->plan, l)->name, err);
        }
    }
}

void model_update(model *m, real lr)
{
    m->updates++;
    for (int t = 0; t < m->towers; t++) {
        hook_begin(m, t, MODEL_REGION_UPDATE);
        tower_update(&m->tw[t], &m->optim, lr, m->updates);
        hook_end(m, t, MODEL_REGION_UPDATE);
    }
}

double model_train_step(model *m, real lr)
{
    double loss = model_forward(m, 1);
    model_backward(m);
    model_update(m, lr);
    m->step++;
    return loss;
}

void model_get_probs(const model *m, float *probs)
{
    int B = m->plan.cfg.batch, T = m->towers, Vt = m->plan.vt;
    size_t n = (size_t)T * B * Vt;
    /* tower 0's copy of the gathered probs, re-ordered to (B, classes) */
    real *host = malloc(sizeof(real) * n);
    if (!host) {
        fprintf(stderr, "twotower: out of host memory reading probabilities\n");
        exit(3);
    }
    get(m, 0, host, m->tw[0].probs, sizeof(real) * n);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < T * Vt; c++)
            probs[(size_t)b * T * Vt + c] =
                (float)host[(size_t)(c / Vt) * B * Vt + (size_t)b * Vt + c % Vt];
    free(host);
}

size_t model_layer_units(const model *m, int l)
{
    const tower_layer_shape *L = &m->plan.layer[l];
    return (size_t)m->towers * L->out_ch * L->out_h * L->out_h;
}

int model_get_activations(const model *m, int l, float *acts, char *err, size_t errlen)
{
    if (l < 0 || l >= m->plan.n_layers) {
        base_errf(err, errlen, "layer %d: the net has layers 0..%d", l, m->plan.n_layers - 1);
        return -1;
    }
    const tower_layer_shape *L = &m->plan.layer[l];
    size_t B = (size_t)m->plan.cfg.batch, per = (size_t)L->out_ch * L->out_h * L->out_h;
    size_t all = (size_t)m->towers * per;
    real *host = malloc(sizeof(real) * B * per);
    if (!host) {
        base_errf(err, errlen, "out of host memory for %zu activations of layer %s", B * per,
                  tower_plan_row(&m->plan, l)->name);
        return -1;
    }
    /* each tower's (B, C, H, W) block goes to its part of every sample's row */
    for (int t = 0; t < m->towers; t++) {
        get(m, t, host, m->tw[t].acts[l].act, sizeof(real) * B * per);
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < per; i++)
                acts[b * all + (size_t)t * per + i] = (float)host[b * per + i];
    }
    free(host);
    return 0;
}

static real *arena_of(const model *m, int t, int which)
{
    const tower *tw = &m->tw[t];
    real *a = which == 0 ? tw->params : which == 1 ? tw->grads : which == 2 ? tw->momentum
                                                                            : tw->moment2;
    if (!a) { /* a caller's mistake (an SGD net has no second moment): say so, never guess */
        fprintf(stderr, "twotower: tower %d has no arena %d (%s)\n", t, which,
                which == 3 ? "the second moment is Adam's" : "not 0..3");
        exit(3);
    }
    return a;
}

void model_get_tensor(const model *m, int tower_index, int which, real *dst)
{
    get(m, tower_index, dst, arena_of(m, tower_index, which),
        sizeof(real) * m->plan.n_params);
}

void model_set_tensor(model *m, int tower_index, int which, const real *src)
{
    put(m, tower_index, arena_of(m, tower_index, which), src, sizeof(real) * m->plan.n_params);
}
