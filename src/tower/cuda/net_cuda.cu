/* net_cuda.cu: one tower on a GPU: its context (device, stream, cuBLAS handle, one arena
 * laid out by tower_carve exactly as on the CPU) and its table of operations, which puts
 * the _cuda twins of layers_cuda.cu (and cuDNN's convolutions) behind net.c's one layer
 * loop, so the CPU tower is the reference for this one stage for stage. */
#include "tower/tower_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_cudnn.h"
#include "cuda_check.h"
#include "kernels.h"

/* Pinned source buffers of the step scalars' copies: a staging waits only for the copy
 * made this many stagings ago, which the device has long finished. */
#define TOWER_CUDA_STAGE_SLOTS 4

/* What a GPU tower holds besides its arena (t->gpu). No global device or stream: every
 * entry point below makes t's device current before touching it. */
typedef struct {
    int device;
    cudaStream_t stream;   /* every kernel, copy and GEMM of this tower runs on it */
    cublasHandle_t cublas; /* bound to `stream`, with `workspace` as its only scratch */
    void *workspace;       /* TOWER_CUDA_WORKSPACE_BYTES, handed to cuBLAS */
    float *conv_scratch;   /* scratch_bytes_of(): the conv chunks' col and product; NULL
                              while no conv layer is on the GEMM path */
    size_t scratch_bytes;  /* conv_scratch's size */
    int conv_images;       /* images per conv chunk: min(batch, TOWER_CUDA_CONV_IMAGES) */
    int precision;         /* tower_cuda_configure's choices: TOWER_PRECISION_* */
    uint16_t *wbf16;       /* bf16: (n_params) the bf16 copy of the parameters the GEMMs
                              read, remade from them at the start of every forward pass
                              (bf16_weights); NULL in fp32 and tf32 */
    tower_cudnn *cudnn;    /* the cuDNN convolution path, NULL while no layer is on it */
    int conv_path[TOWER_MAX_LAYERS]; /* per row: TOWER_CONV_GEMM (0, what calloc leaves) or
                                        TOWER_CONV_CUDNN; only conv rows are read */
    /* the step scalars (kernels.h's tower_k_step) and the mean loss, in one device
     * allocation: what the ops read and write instead of host values, so that a step
     * needs no host synchronisation (a captured graph replays them) */
    tower_k_step *dev_step;
    double *dev_loss;          /* the last loss forward's mean */
    int *wbf16_current;        /* (device, beside them) 1 while wbf16 is the parameters'
                                  rounding as the last update wrote it: the forward then
                                  casts nothing; 0 after anything else wrote parameters
                                  (tower_cuda_copy, the configuration): bf16_weights */
    tower_k_step staged;       /* what the last copy put into dev_step (host shadow) */
    int have_staged;           /* 0 until the first copy */
    int grad_zeroing;          /* 1: tower_zero_grads clears the gradients and the backward
                                  adds to them (the CPU's way); 0, the default: the zeroing
                                  does nothing and the backward writes each gradient with
                                  beta 0 (every gradient is written once a step), saving the
                                  memset and the GEMMs' read of C (tower_cuda_set_grad_zeroing) */
    int lrn_handover;          /* 1 (the default): lrn_grad_handover's rows hand their conv its
                                  bf16 gradient (tower_cuda_set_lrn_handover) */
    int bf16_acts;             /* 1: the rows with a kept[] buffer keep their activation in it
                                  alone; 0, the default: in fp32 (tower_cuda_set_bf16_acts) */
    int input_handover;        /* 1 (the default): bf16_chain_row's rows write their output, and
                                  bf16_pool_row's their pooled output, as the next conv's bf16
                                  input copy (tower_cuda_set_input_handover) */
    int x_given;               /* 1: whoever writes x writes row 0's bf16 input copy with it
                                  (the model: tower_cuda_set_input_given), so row 0 casts none */
    const tower *x_from;       /* NULL, or the tower whose row-0 bf16 input copy this one's
                                  reads (both towers on one GPU: tower_cuda_share_input) */
    uint16_t *kept[TOWER_MAX_LAYERS]; /* per row, (B, Co, Ho, Wo) the ReLU's output in bf16
                                         where bf16_lrn_row holds and bf16_acts is on
                                         (make_kept), NULL elsewhere: kept_act */
    uint16_t *fc16[TOWER_MAX_LAYERS]; /* bf16: per fc row its GEMMs' bf16 operands, the input
                                         (sources, B, Cin) the forward casts and the backward's
                                         weight gradient reads again, then the output gradient
                                         (B, Cout) cast once for every source's backward
                                         (make_fc16, fc16_grad); NULL elsewhere */
    tower_k_step *host_step;   /* (TOWER_CUDA_STAGE_SLOTS) pinned: the copies' sources */
    cudaEvent_t step_ev[TOWER_CUDA_STAGE_SLOTS]; /* per slot: its last copy done */
    int step_next;             /* the slot of the next copy */
    double *host_loss;         /* (2) pinned: the read-back slots of the mean loss */
    cudaEvent_t loss_ev[2];    /* per slot: its copy done */
    int loss_next;
} tower_gpu;

static tower_gpu *gpu_of(const tower *t) { return (tower_gpu *)t->gpu; }

/* Elements of row l's activation (B, Co, Ho, Wo). */
static size_t act_elems(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return (size_t)t->plan.cfg.batch * L->out_ch * L->out_h * L->out_h;
}

static int bf16_lrn_row(const tower *t, int l);
static int bf16_chain_row(const tower *t, int l);
static int input_given(const tower *t, int l);
static uint16_t *row0_copy(const tower *t);
static uint16_t *pooled_copy(const tower *t, int l);
static int act_row(const tower *t, const float *in);
static uint16_t *kept_act(const tower *t, int l);
static const uint16_t *kept_at(const tower *t, const float *in);

/* Makes the tower's device current; the runtime's current device is per host thread,
 * so this is called at every entry point rather than trusted from an earlier call.
 * -1 when it failed or a fault is already pending on this thread (cuda_check.h): the op
 * then returns at once, issuing nothing. */
static int use_device(const tower *t)
{
    CUDA_CHECK_OR(cudaSetDevice(t->device), -1);
    return 0;
}

/* Images per conv chunk and the scratch (floats) the largest conv layer needs for it. */
static int conv_images_of(const tower_plan *p)
{
    return p->cfg.batch < TOWER_CUDA_CONV_IMAGES ? p->cfg.batch : TOWER_CUDA_CONV_IMAGES;
}

static size_t conv_scratch_floats(const tower_plan *p)
{
    size_t most = 0;
    for (int l = 0; l < p->n_layers; l++) {
        const tower_layer_spec *s = tower_plan_row(p, l);
        const tower_layer_shape *L = &p->layer[l];
        if (s->kind != TOWER_CONV) continue;
        size_t n = tower_conv_cuda_scratch_size(L->in_ch, L->in_h, L->in_h, L->out_ch, s->k,
                                                s->stride, s->pad, conv_images_of(p));
        if (n > most) most = n;
    }
    return most;
}

/* Bytes of GEMM scratch a tower needs at `precision`: the fp32 chunks' floats, or in bf16
 * the largest of the conv layers' bf16 layouts (a din col only where the row has an input
 * gradient: not row 0; the fc layers' operands are their own, fc16). path: each layer's
 * convolution path, NULL for all on GEMM; in bf16 a conv layer on cuDNN needs none of it. */
static size_t scratch_bytes_of(const tower_plan *p, int precision, const int *path)
{
    if (precision != TOWER_PRECISION_BF16) return sizeof(float) * conv_scratch_floats(p);
    size_t most = 0;
    for (int l = 0; l < p->n_layers; l++) {
        const tower_layer_spec *s = tower_plan_row(p, l);
        const tower_layer_shape *L = &p->layer[l];
        if (s->kind != TOWER_CONV || (path && path[l] == TOWER_CONV_CUDNN)) continue;
        size_t n = tower_conv_cuda_scratch_bytes_bf16(L->in_ch, L->in_h, L->in_h, L->out_ch,
                                                      s->k, s->stride, s->pad,
                                                      conv_images_of(p), l > 0);
        if (n > most) most = n;
    }
    return most;
}

/* The layer kernels index in 32 bits (kernels.h): 0, or -1 with a message naming the
 * first layer with a tensor of 2^31 elements or more (a conv chunk's col or input, an
 * activation the LRN, pooling or bias kernels run over). */
static int check_index32(const tower_plan *p, int index, char *err, size_t errlen)
{
    size_t B = (size_t)p->cfg.batch, nb = (size_t)conv_images_of(p);
    for (int l = 0; l < p->n_layers; l++) {
        const tower_layer_spec *s = tower_plan_row(p, l);
        const tower_layer_shape *L = &p->layer[l];
        size_t most = B * L->out_ch * L->out_h * L->out_h;
        if (s->kind == TOWER_CONV) {
            size_t col = nb * L->in_ch * s->k * s->k * L->out_h * L->out_h;
            size_t in = nb * L->in_ch * L->in_h * L->in_h;
            most = most > col ? most : col;
            most = most > in ? most : in;
        }
        if (most > (size_t)INT32_MAX) {
            snprintf(err, errlen,
                     "tower %d: layer %s has a tensor of %zu elements at batch %d: the CUDA "
                     "kernels index in 32 bits, up to 2^31 - 1 (use a smaller --batch)",
                     index, s->name, most, p->cfg.batch);
            return -1;
        }
    }
    return 0;
}

/* Device bytes outside the arena: the conv scratch and the cuBLAS workspace. */
static size_t side_bytes(const tower_plan *p)
{
    return sizeof(float) * conv_scratch_floats(p) + TOWER_CUDA_WORKSPACE_BYTES;
}

/* ---- devices ------------------------------------------------------------------------ */

extern "C" int tower_cuda_device_count(char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
        return -1;
    }
    return n;
}

extern "C" int tower_cuda_device_info(int device, char *name, size_t namelen,
                                      size_t *free_bytes, size_t *total_bytes, char *err,
                                      size_t errlen)
{
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess) e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "CUDA device %d: %s", device, cudaGetErrorString(e));
        return -1;
    }
    if (name && namelen) snprintf(name, namelen, "%s", prop.name);
    return 0;
}

/* ---- life cycle --------------------------------------------------------------------- */

/* Frees one per-row set of buffers (kept, fc16). */
static void free_rows(uint16_t **rows)
{
    for (int l = 0; l < TOWER_MAX_LAYERS; l++) {
        if (rows[l]) cudaFree(rows[l]);
        rows[l] = NULL;
    }
}

/* rows[l] = `bytes` of device memory, zeroed on the tower's stream (zeros until the first
 * pass writes them, as the arena's): 0, or -1 with err naming row l's `what`, every buffer
 * of rows freed. */
static int row_alloc(tower *t, uint16_t **rows, int l, size_t bytes, const char *what, char *err,
                     size_t errlen)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(p, 0, bytes, gpu_of(t)->stream);
    if (e == cudaSuccess) {
        rows[l] = (uint16_t *)p;
        return 0;
    }
    if (p) cudaFree(p);
    free_rows(rows);
    snprintf(err, errlen, "tower %d on GPU %d: %s's %s (%.1f MiB): %s", t->index, t->device,
             tower_plan_row(&t->plan, l)->name, what, bytes / 1048576.0, cudaGetErrorString(e));
    return -1;
}

/* The kept bf16 activations, made again for the rows that keep one under the tower's
 * paths and precision while bf16_acts is on (none while it is off): 0, or -1 with err. */
static int make_kept(tower *t, char *err, size_t errlen)
{
    tower_gpu *g = gpu_of(t);
    free_rows(g->kept);
    for (int l = 0; l < t->plan.n_layers && g->bf16_acts; l++)
        if (bf16_lrn_row(t, l) &&
            row_alloc(t, g->kept, l, sizeof(uint16_t) * act_elems(t, l), "bf16 activation", err,
                      errlen))
            return -1;
    return 0;
}

/* Elements of fc row l's input, every source: (sources, B, Cin). */
static size_t fc_in_elems(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return (size_t)L->sources * t->plan.cfg.batch * L->in_ch;
}

/* Elements from one source's bf16 input to the next in fc row l's fc16: B * Cin rounded up
 * to 256 bytes, so that every GEMM operand starts aligned (when that rounds nothing, as in
 * the paper's nets, one cast writes every source's at once). */
static size_t fc16_slot(const tower *t, int l)
{
    return tower_k_round256(sizeof(uint16_t) * t->plan.cfg.batch * t->plan.layer[l].in_ch) /
           sizeof(uint16_t);
}

/* Bytes of fc row l's fc16 buffer: its bf16 input, a slot per source, then its output
 * gradient. */
static size_t fc16_bytes(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return sizeof(uint16_t) *
           (L->sources * fc16_slot(t, l) + (size_t)t->plan.cfg.batch * L->out_ch);
}

/* Where fc row l's bf16 output gradient is in its fc16 buffer. */
static uint16_t *fc16_grad(const tower *t, int l)
{
    return gpu_of(t)->fc16[l] + t->plan.layer[l].sources * fc16_slot(t, l);
}

/* The fc rows' bf16 operands, made again at the tower's precision (none but in bf16): 0,
 * or -1 with err. */
static int make_fc16(tower *t, char *err, size_t errlen)
{
    tower_gpu *g = gpu_of(t);
    free_rows(g->fc16);
    for (int l = 0; l < t->plan.n_layers && g->precision == TOWER_PRECISION_BF16; l++)
        if (tower_plan_row(&t->plan, l)->kind == TOWER_FC &&
            row_alloc(t, g->fc16, l, fc16_bytes(t, l), "bf16 GEMM operands", err, errlen))
            return -1;
    return 0;
}

/* Frees whatever tower_init_cuda got as far as creating; safe on a half-built tower.
 * Failures here are reported and skipped: there is nothing better to do while freeing.
 * A lost context (a sticky error, cuda_check.h) gets no more calls: its memory, handles
 * and stream go with the process. */
static void cuda_free(tower *t)
{
    tower_gpu *g = gpu_of(t);
    cudaError_t e = cudaSetDevice(t->device);
    if (e != cudaSuccess)
        fprintf(stderr, "twotower: freeing tower %d: cudaSetDevice(%d): %s\n", t->index,
                t->device, cudaGetErrorString(e));
    cudaError_t pending = e == cudaSuccess && g && g->stream ? cudaStreamSynchronize(g->stream)
                                                             : cudaSuccess;
    if (tower_cuda_sticky(e) || tower_cuda_sticky(pending)) {
        fprintf(stderr, "twotower: freeing tower %d: GPU %d's context is lost (%s): its "
                        "device memory is left to the end of the process\n",
                t->index, t->device, cudaGetErrorString(pending != cudaSuccess ? pending : e));
        free(g);
        t->gpu = NULL;
        t->arena = NULL;
        return;
    }
    if (g) {
        if (pending != cudaSuccess)
            fprintf(stderr, "twotower: freeing tower %d: pending work failed: %s\n", t->index,
                    cudaGetErrorString(pending));
        /* the handles bound to the stream go before the stream itself */
        tower_cudnn_free(g->cudnn);
        g->cudnn = NULL;
        if (g->cublas) cublasDestroy(g->cublas);
        if (g->stream) cudaStreamDestroy(g->stream);
        for (int i = 0; i < TOWER_CUDA_STAGE_SLOTS; i++)
            if (g->step_ev[i]) cudaEventDestroy(g->step_ev[i]);
        for (int i = 0; i < 2; i++)
            if (g->loss_ev[i]) cudaEventDestroy(g->loss_ev[i]);
        if (g->host_step) cudaFreeHost(g->host_step);
        if (g->host_loss) cudaFreeHost(g->host_loss);
        if (g->dev_step) cudaFree(g->dev_step);
        if (g->workspace) cudaFree(g->workspace);
        if (g->conv_scratch) cudaFree(g->conv_scratch);
        if (g->wbf16) cudaFree(g->wbf16);
        free_rows(g->kept);
        free_rows(g->fc16);
        free(g);
        t->gpu = NULL;
    }
    if (t->arena) cudaFree(t->arena);
    t->arena = NULL;
}

/* Returns -1 with err naming the call when `e` failed. */
static int init_fail(tower *t, cudaError_t e, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "tower %d on GPU %d: %s: %s", t->index, t->device, what,
             cudaGetErrorString(e));
    cuda_free(t);
    return -1;
}

static const tower_ops *cuda_ops_table(void);

extern "C" int tower_init_cuda(tower *t, const tower_plan *plan, int index, int device,
                               uint64_t seed, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->plan = *plan;
    t->index = index;
    t->device = device;
    t->ops = cuda_ops_table();
    if (check_index32(plan, index, err, errlen) != 0) {
        t->device = -1;
        return -1;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "tower %d: cannot use GPU %d: %s", index, device,
                 cudaGetErrorString(e));
        t->device = -1;
        return -1;
    }
    size_t bytes = tower_carve(t, NULL);
    tower_gpu *g = (tower_gpu *)calloc(1, sizeof *g);
    if (g) g->lrn_handover = g->input_handover = 1;
    float *host = (float *)malloc(sizeof(float) * plan->n_params);
    if (!g || !host) {
        free(g);
        free(host);
        snprintf(err, errlen, "tower %d: out of host memory for its initial parameters",
                 index);
        return -1;
    }
    g->device = device;
    t->gpu = g;

    size_t free_b = 0, total_b = 0;
    if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) {
        free(host);
        return init_fail(t, e, "cudaMemGetInfo", err, errlen);
    }
    void *arena = NULL;
    g->conv_images = conv_images_of(plan);
    size_t side = side_bytes(plan);
    e = cudaMalloc(&arena, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&g->workspace, TOWER_CUDA_WORKSPACE_BYTES);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&g->conv_scratch, sizeof(float) * conv_scratch_floats(plan));
    if (e == cudaSuccess) g->scratch_bytes = sizeof(float) * conv_scratch_floats(plan);
    if (e != cudaSuccess) {
        free(host);
        if (arena) cudaFree(arena);
        snprintf(err, errlen,
                 "tower %d on GPU %d: cannot allocate %.1f MiB (arena %.1f MiB + conv scratch "
                 "and cuBLAS workspace %.1f MiB); %.1f MiB free of %.1f MiB: %s (try a "
                 "smaller --batch)",
                 index, device, (bytes + side) / 1048576.0, bytes / 1048576.0,
                 side / 1048576.0, free_b / 1048576.0, total_b / 1048576.0,
                 cudaGetErrorString(e));
        cuda_free(t);
        return -1;
    }
    t->arena = arena;
    t->arena_bytes = bytes;
    tower_carve(t, (char *)arena);

    if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        free(host);
        return init_fail(t, e, "cudaStreamCreateWithFlags", err, errlen);
    }
    /* the step scalars and the mean loss: device, pinned staging, events */
    size_t step_bytes = sizeof(tower_k_step) + sizeof(double) + sizeof(int);
    e = cudaMalloc((void **)&g->dev_step, step_bytes);
    if (e == cudaSuccess) {
        g->dev_loss = (double *)(g->dev_step + 1);
        g->wbf16_current = (int *)(g->dev_loss + 1);
        e = cudaMemsetAsync(g->dev_step, 0, step_bytes, g->stream);
    }
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&g->host_step, sizeof(tower_k_step) * TOWER_CUDA_STAGE_SLOTS);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&g->host_loss, 2 * sizeof(double));
    for (int i = 0; i < TOWER_CUDA_STAGE_SLOTS && e == cudaSuccess; i++)
        e = cudaEventCreateWithFlags(&g->step_ev[i], cudaEventDisableTiming);
    for (int i = 0; i < 2 && e == cudaSuccess; i++)
        e = cudaEventCreateWithFlags(&g->loss_ev[i], cudaEventDisableTiming);
    if (e != cudaSuccess) {
        free(host);
        return init_fail(t, e, "the step scalars' and loss's buffers", err, errlen);
    }
    cublasStatus_t s = cublasCreate(&g->cublas);
    /* cublasSetStream resets the workspace to cuBLAS's own pool, so the stream first,
     * then our workspace; DEFAULT_MATH is plain fp32 (TF32 only with TF32_TENSOR_OP). */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(g->cublas, g->stream);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetWorkspace(g->cublas, g->workspace, TOWER_CUDA_WORKSPACE_BYTES);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(g->cublas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(host);
        snprintf(err, errlen, "tower %d on GPU %d: cuBLAS set-up failed: %s", index, device,
                 cublasGetStatusString(s));
        cuda_free(t);
        return -1;
    }

    /* the same init as a CPU tower (same seed, same numbers), then one upload; the rest
     * of the arena (grads, momentum, activations) starts at zero as on the CPU */
    tower_init_params(host, plan, index, seed);
    e = cudaMemsetAsync(arena, 0, bytes, g->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(t->params, host, sizeof(float) * plan->n_params,
                            cudaMemcpyHostToDevice, g->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream);
    free(host);
    if (e != cudaSuccess) return init_fail(t, e, "uploading the initial parameters", err, errlen);
    return 0;
}

/* Makes t's device current and waits for its stream, before a reconfiguration changes what
 * its kernels read: 0, or -1 with err. */
static int settle(tower *t, char *err, size_t errlen)
{
    cudaError_t e = cudaSetDevice(t->device);
    if (e == cudaSuccess) e = cudaStreamSynchronize(gpu_of(t)->stream); /* nothing in flight */
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "tower %d on GPU %d: %s", t->index, t->device, cudaGetErrorString(e));
    return -1;
}

extern "C" int tower_cuda_configure_paths(tower *t, int precision, const int *path, char *err,
                                         size_t errlen)
{
    tower_gpu *g = gpu_of(t);
    int any_gemm = 0, any_cudnn = 0;
    int tf32 = precision == TOWER_PRECISION_TF32, bf16 = precision == TOWER_PRECISION_BF16;
    if (!tf32 && !bf16 && precision != TOWER_PRECISION_FP32) {
        snprintf(err, errlen, "tower %d: precision %d is neither fp32, tf32 nor bf16", t->index,
                 precision);
        return -1;
    }
    for (int l = 0; l < t->plan.n_layers; l++) {
        if (tower_plan_row(&t->plan, l)->kind != TOWER_CONV) continue;
        if (path[l] != TOWER_CONV_GEMM && path[l] != TOWER_CONV_CUDNN) {
            snprintf(err, errlen, "tower %d: convolution path %d for %s is neither gemm nor cudnn",
                     t->index, path[l], tower_plan_row(&t->plan, l)->name);
            return -1;
        }
        any_gemm |= path[l] == TOWER_CONV_GEMM;
        any_cudnn |= path[l] == TOWER_CONV_CUDNN;
    }
    if (settle(t, err, errlen)) return -1;
    cudaError_t e;
    cublasStatus_t s = cublasSetMathMode(g->cublas,
                                         tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "tower %d on GPU %d: cublasSetMathMode(%s): %s", t->index,
                 t->device, tf32 ? "TF32_TENSOR_OP" : "DEFAULT", cublasGetStatusString(s));
        return -1;
    }
    g->precision = precision;
    tower_cudnn_free(g->cudnn);
    g->cudnn = NULL;
    for (int l = 0; l < t->plan.n_layers; l++) g->conv_path[l] = TOWER_CONV_GEMM;
    if (any_cudnn) {
        /* the rows on cuDNN alone: each of them must have its algorithms */
        g->cudnn = tower_cudnn_create(&t->plan, precision, g->cublas, g->stream, path, NULL, 0,
                                      err, errlen);
        if (!g->cudnn) return -1;
    }
    /* the GEMM scratch at this precision's size, and the weights' bf16 copy and the fc
     * layers' bf16 operands in bf16 only */
    size_t need = any_gemm ? scratch_bytes_of(&t->plan, precision, path) : 0;
    if (g->conv_scratch && g->scratch_bytes != need) {
        cudaFree(g->conv_scratch);
        g->conv_scratch = NULL;
        g->scratch_bytes = 0;
    }
    if (need && !g->conv_scratch) {
        e = cudaMalloc((void **)&g->conv_scratch, need);
        if (e != cudaSuccess) {
            g->conv_scratch = NULL;
            tower_cudnn_free(g->cudnn);
            g->cudnn = NULL;
            snprintf(err, errlen, "tower %d on GPU %d: conv scratch (%.1f MiB): %s", t->index,
                     t->device, need / 1048576.0, cudaGetErrorString(e));
            return -1;
        }
        g->scratch_bytes = need;
    }
    if (!bf16 && g->wbf16) {
        cudaFree(g->wbf16);
        g->wbf16 = NULL;
    } else if (bf16 && !g->wbf16) {
        e = cudaMalloc((void **)&g->wbf16, sizeof(uint16_t) * t->plan.n_params);
        if (e != cudaSuccess) {
            g->wbf16 = NULL;
            snprintf(err, errlen, "tower %d on GPU %d: the weights' bf16 copy (%.1f MiB): %s",
                     t->index, t->device, sizeof(uint16_t) * t->plan.n_params / 1048576.0,
                     cudaGetErrorString(e));
            return -1;
        }
    }
    if (make_fc16(t, err, errlen)) return -1;
    /* the bf16 copy (new, or from before) is not the parameters' until made again */
    e = cudaMemsetAsync(g->wbf16_current, 0, sizeof(int), g->stream);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "tower %d on GPU %d: %s", t->index, t->device,
                 cudaGetErrorString(e));
        return -1;
    }
    for (int l = 0; l < t->plan.n_layers; l++)
        if (tower_plan_row(&t->plan, l)->kind == TOWER_CONV) g->conv_path[l] = path[l];
    /* a new cuDNN context reads its own input copy: the shared one again, if any */
    if (g->x_from && tower_cuda_share_input(t, g->x_from)) {
        snprintf(err, errlen, "tower %d: row 0's shared bf16 input copy: the towers' paths or "
                              "precisions differ", t->index);
        return -1;
    }
    return make_kept(t, err, errlen); /* the rows that keep a bf16 activation now */
}

extern "C" int tower_cuda_configure(tower *t, int precision, int conv, char *err, size_t errlen)
{
    if (conv != TOWER_CONV_GEMM && conv != TOWER_CONV_CUDNN) {
        snprintf(err, errlen, "tower %d: convolution path %d is neither gemm nor cudnn", t->index,
                 conv);
        return -1;
    }
    int path[TOWER_MAX_LAYERS];
    for (int l = 0; l < TOWER_MAX_LAYERS; l++) path[l] = conv;
    return tower_cuda_configure_paths(t, precision, path, err, errlen);
}

extern "C" int tower_cuda_conv_path(const tower *t, int l)
{
    return gpu_of(t)->conv_path[l];
}

extern "C" void tower_cuda_describe_conv(const tower *t, char *buf, size_t n)
{
    const tower_gpu *g = gpu_of(t);
    int any_gemm = 0;
    for (int l = 0; l < t->plan.n_layers; l++)
        any_gemm |= tower_plan_row(&t->plan, l)->kind == TOWER_CONV &&
                    g->conv_path[l] == TOWER_CONV_GEMM;
    const char *gemm =
        g->precision == TOWER_PRECISION_BF16 ? "bf16 GEMM (fp32 sums)" : "SGEMM";
    if (g->cudnn && !any_gemm) { /* every conv layer on cuDNN */
        tower_cudnn_describe(g->cudnn, buf, n);
        return;
    }
    if (!g->cudnn) {
        snprintf(buf, n, "im2col + one %s per chunk of %d images", gemm, g->conv_images);
        return;
    }
    /* mixed: each layer's path, then the GEMM chunking and cuDNN's algorithms */
    size_t used = 0;
    buf[0] = 0;
    for (int l = 0; l < t->plan.n_layers && used < n; l++) {
        if (tower_plan_row(&t->plan, l)->kind != TOWER_CONV) continue;
        used += snprintf(buf + used, n - used, "%s%s %s", used ? ", " : "per layer: ",
                         tower_plan_row(&t->plan, l)->name,
                         tower_conv_path_name(g->conv_path[l]));
    }
    if (used < n)
        used += snprintf(buf + used, n - used, "; GEMM: im2col + one %s per chunk of %d "
                         "images; cuDNN: ", gemm, g->conv_images);
    if (used < n) tower_cudnn_describe(g->cudnn, buf + used, n - used);
}

extern "C" int tower_cuda_cudnn_rows(tower *t, int precision, int *path, char *note,
                                     size_t notelen, char *err, size_t errlen)
{
    tower_gpu *g = gpu_of(t);
    const tower_plan *p = &t->plan;
    if (note && notelen) note[0] = 0;
    for (int l = 0; l < TOWER_MAX_LAYERS; l++) path[l] = TOWER_CONV_GEMM;
    if (!tower_cudnn_available()) {
        if (note) snprintf(note, notelen, "this build has no cuDNN");
        return 0;
    }
    if (settle(t, err, errlen)) return -1;
    char why[512] = "", dropped[512] = "";
    tower_cudnn *c = tower_cudnn_create(p, precision, g->cublas, g->stream, NULL, dropped,
                                        sizeof dropped, why, sizeof why);
    if (!c) {
        if (note) snprintf(note, notelen, "cuDNN takes no layer: %s", why);
        return 0;
    }
    for (int l = 0; l < p->n_layers; l++)
        if (tower_plan_row(p, l)->kind == TOWER_CONV && tower_cudnn_has(c, l))
            path[l] = TOWER_CONV_CUDNN;
    tower_cudnn_free(c);
    if (dropped[0] && note) snprintf(note, notelen, "on GEMM where cuDNN has no algorithm: %s",
                                     dropped);
    return 0;
}

extern "C" int tower_cuda_have_cudnn(void) { return tower_cudnn_available(); }

extern "C" void *tower_cuda_stream(tower *t) { return gpu_of(t)->stream; }

/* One thread: reads %globaltimer (nanoseconds, the same clock on every SM) until `ns` have
 * passed, napping between reads so as not to hog its SM's issue slots. */
static __global__ void spin_kernel(unsigned long long ns)
{
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}

extern "C" void tower_cuda_spin(tower *t, void *stream, unsigned us)
{
    if (use_device(t)) return;
    spin_kernel<<<1, 1, 0, stream ? (cudaStream_t)stream : gpu_of(t)->stream>>>(1000ull * us);
    LAUNCH_CHECK(spin_kernel);
}

extern "C" int tower_cuda_copy(tower *t, void *dst, const void *src, size_t bytes, int kind)
{
    static const cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                            cudaMemcpyDeviceToDevice};
    if (kind < 0 || kind > 2) {
        fprintf(stderr, "twotower: tower_cuda_copy: kind %d is not 0, 1 or 2\n", kind);
        return -1;
    }
    tower_gpu *g = gpu_of(t);
    cudaError_t e = cudaSetDevice(t->device);
    if (e == cudaSuccess && bytes) e = cudaMemcpyAsync(dst, src, bytes, kinds[kind], g->stream);
    /* a copy into the parameters leaves the weights' bf16 copy behind them (bf16_weights) */
    const char *d = (const char *)dst, *p = (const char *)t->params;
    if (e == cudaSuccess && kind != 1 && bytes && d < p + sizeof(float) * t->plan.n_params &&
        d + bytes > p)
        e = cudaMemsetAsync(g->wbf16_current, 0, sizeof(int), g->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess) {
        fprintf(stderr, "twotower: tower %d on GPU %d: copy of %zu bytes (kind %d) failed: %s\n",
                t->index, t->device, bytes, kind, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

extern "C" int tower_cuda_error_sticky(int cuda_error)
{
    return tower_cuda_sticky((cudaError_t)cuda_error);
}

/* Bytes of the kept bf16 activations and the fc layers' bf16 operands. */
static size_t rows_bytes(const tower *t)
{
    size_t n = 0;
    for (int l = 0; l < t->plan.n_layers; l++) {
        if (gpu_of(t)->kept[l]) n += sizeof(uint16_t) * act_elems(t, l);
        if (gpu_of(t)->fc16[l]) n += fc16_bytes(t, l);
    }
    return n;
}

extern "C" size_t tower_cuda_mem_bytes(const tower *t)
{
    const tower_gpu *g = gpu_of(t);
    /* cuDNN's workspace, the GEMM path's scratch, or both when the layers are mixed */
    return t->arena_bytes + TOWER_CUDA_WORKSPACE_BYTES +
           (g->cudnn ? tower_cudnn_bytes(g->cudnn) : 0) +
           (g->conv_scratch ? g->scratch_bytes : 0) +
           (g->wbf16 ? sizeof(uint16_t) * t->plan.n_params : 0) + rows_bytes(t);
}

extern "C" size_t tower_cuda_mem_estimate(const tower_plan *plan)
{
    /* tower is a few KiB: measuring the carve on a scratch one needs no device */
    tower *scratch = (tower *)calloc(1, sizeof *scratch);
    if (!scratch) return 0;
    scratch->plan = *plan;
    size_t bytes = tower_carve(scratch, NULL);
    free(scratch);
    return bytes + side_bytes(plan);
}

/* ---- the operations: net.c's layer loop runs these, each on the tower's stream -------- */

static int cuda_fuses_act(const tower *t, int l, int act)
{
    /* conv + ReLU on the GEMM path run fused (the ReLU in the convolution's output pass,
     * its backward in the transposing pass of the gradient), and so on cuDNN's in bf16 (in
     * the pass that casts cuDNN's output back, its backward in the gradient's cast); a
     * layer on cuDNN's path in fp32 or TF32, tanh and the fc layers run the activation as
     * its own kernel */
    const tower_gpu *g = gpu_of(t);
    return act == TOWER_ACT_RELU && tower_plan_row(&t->plan, l)->kind == TOWER_CONV &&
           (g->conv_path[l] == TOWER_CONV_GEMM || g->precision == TOWER_PRECISION_BF16);
}

/* bf16: the bf16 copy of the parameters the GEMMs read. The update writes it with the new
 * weights and marks it current (wbf16_current, on the device); a forward pass starts (every
 * pass, training, evaluation, dump, features, starts with row 0's first source, net.c's
 * layer loop, whose weights are t->w[0]) with one cast over the whole parameter arena that
 * does nothing while the mark is set. Whatever else writes the parameters (a checkpoint's
 * load, model_set_tensor: tower_cuda_copy; the start-up upload; a new configuration)
 * clears the mark, so the copy cannot be stale: the pass reads the rounding of what the
 * parameters hold. The mark is read on the device, so a captured graph decides afresh at
 * every replay. Backward reads the copy its forward made (the update comes after it). */
static const uint16_t *bf16_weights(tower *t, const float *w)
{
    tower_gpu *g = gpu_of(t);
    if (w == t->w[0])
        tower_cast_weights_bf16_cuda(g->wbf16, t->params, t->plan.n_params, g->wbf16_current,
                                     g->stream);
    return g->wbf16 + (w - t->params);
}

/* Which of conv layer l's input slots `in` is (net.c's layer loop passes slot src of the
 * layer's input): cuDNN's bf16 path keeps a bf16 copy of each. */
static int source_of(const tower *t, int l, const float *in)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    size_t slot = (size_t)t->plan.cfg.batch * L->in_ch * L->in_h * L->in_h;
    return (int)((size_t)(in - t->acts[l].in) / slot);
}

static void cuda_conv_forward(tower *t, int l, float *out, const float *in, const float *w,
                              const float *b, int ldw, int accumulate, int act)
{
    if (use_device(t)) return;
    tower_gpu *g = gpu_of(t);
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    if (g->conv_path[l] == TOWER_CONV_CUDNN && g->precision == TOWER_PRECISION_BF16) {
        /* the last source (act passed) of a row that keeps its activation writes it there;
         * a row whose input copy the row before wrote (input_given) casts none */
        uint16_t *keep = act == TOWER_ACT_RELU ? kept_act(t, l) : NULL;
        tower_cudnn_forward_bf16(g->cudnn, l, source_of(t, l, in), out,
                                 input_given(t, l) ? NULL : in, bf16_weights(t, w), b, ldw,
                                 accumulate, act == TOWER_ACT_RELU, keep);
        return;
    }
    if (g->conv_path[l] == TOWER_CONV_CUDNN) {
        tower_cudnn_forward(g->cudnn, l, out, in, w, b, ldw, accumulate);
        return;
    }
    if (g->precision == TOWER_PRECISION_BF16) {
        tower_conv_forward_bf16_cuda(out, in, bf16_weights(t, w), b, t->plan.cfg.batch,
                                     L->in_ch, L->in_h, L->in_h, L->out_ch, s->k, s->stride,
                                     s->pad, ldw, accumulate, act == TOWER_ACT_RELU,
                                     g->conv_scratch, g->scratch_bytes, g->conv_images,
                                     g->cublas, g->stream);
        return;
    }
    (act == TOWER_ACT_RELU ? tower_conv_relu_forward_cuda : tower_conv_forward_cuda)(
        out, in, w, b, t->plan.cfg.batch, L->in_ch, L->in_h, L->in_h, L->out_ch, s->k,
        s->stride, s->pad, ldw, accumulate, g->conv_scratch, g->conv_images, g->cublas,
        g->stream);
}

static void cuda_conv_backward(tower *t, int l, float *din, float *dw, float *db,
                               const float *dout, const float *act_out, const float *in,
                               const float *w, int ldw, int accumulate_din, int act)
{
    if (use_device(t)) return;
    tower_gpu *g = gpu_of(t);
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    int B = t->plan.cfg.batch;
    int acc_dw = g->grad_zeroing; /* else this is the step's one write of dw and db */
    if (g->conv_path[l] == TOWER_CONV_CUDNN && g->precision == TOWER_PRECISION_BF16)
        tower_cudnn_backward_bf16(g->cudnn, l, source_of(t, l, in), din, dw, db, dout,
                                  act == TOWER_ACT_RELU ? act_out : NULL,
                                  act == TOWER_ACT_RELU ? kept_act(t, l) : NULL,
                                  g->wbf16 + (w - t->params), ldw, accumulate_din, acc_dw);
    else if (g->conv_path[l] == TOWER_CONV_CUDNN)
        tower_cudnn_backward(g->cudnn, l, din, dw, db, dout, in, w, ldw, accumulate_din, acc_dw);
    else if (g->precision == TOWER_PRECISION_BF16)
        tower_conv_backward_bf16_cuda(din, dw, db, dout, act == TOWER_ACT_RELU ? act_out : NULL,
                                      in, g->wbf16 + (w - t->params), B, L->in_ch, L->in_h,
                                      L->in_h, L->out_ch, s->k, s->stride, s->pad, ldw,
                                      accumulate_din, acc_dw, g->conv_scratch, g->scratch_bytes,
                                      g->conv_images, g->cublas, g->stream);
    else if (act == TOWER_ACT_RELU) /* ReLU's backward: the mask in the transposing pass */
        tower_conv_relu_backward_cuda(din, dw, db, dout, act_out, in, w, B, L->in_ch, L->in_h,
                                      L->in_h, L->out_ch, s->k, s->stride, s->pad, ldw,
                                      accumulate_din, acc_dw, g->conv_scratch, g->conv_images,
                                      g->cublas, g->stream);
    else
        tower_conv_backward_cuda(din, dw, db, dout, in, w, B, L->in_ch, L->in_h, L->in_h,
                                 L->out_ch, s->k, s->stride, s->pad, ldw, accumulate_din, acc_dw,
                                 g->conv_scratch, g->conv_images, g->cublas, g->stream);
}

/* The fc row whose input `in` is a source slot of, and which source (*src): the row; a
 * caller passing any other buffer is a programming error (the ops are net.c's layer loop's),
 * which stops the process. */
static int fc_row_of(const tower *t, const float *in, int *src, const char *what)
{
    for (int l = 0; l < t->plan.n_layers; l++) {
        size_t slot = (size_t)t->plan.cfg.batch * t->plan.layer[l].in_ch;
        if (tower_plan_row(&t->plan, l)->kind != TOWER_FC || in < t->acts[l].in ||
            in >= t->acts[l].in + fc_in_elems(t, l))
            continue;
        *src = (int)((size_t)(in - t->acts[l].in) / slot);
        return l;
    }
    tower_cuda_die(what, "its input is no fc row's input slot", __FILE__, __LINE__);
    return -1;
}

/* bf16: the first source's forward casts every source's input at once into the row's
 * fc16 (the exchange before the row gathered them all; where the slots are padded, each
 * source's forward casts its own), each source's GEMM reads its slot of it, and so does its
 * backward's weight gradient; the first source's backward casts the output gradient, which
 * every source's two GEMMs read. */
static void cuda_fc_forward(tower *t, float *out, const float *in, const float *w,
                            const float *b, int B, int Cin, int Cout, int ldw, int accumulate)
{
    if (use_device(t)) return;
    tower_gpu *g = gpu_of(t);
    if (g->precision == TOWER_PRECISION_BF16) {
        int src = 0, l = fc_row_of(t, in, &src, "fc forward (bf16)");
        size_t slot = fc16_slot(t, l);
        int whole = slot == (size_t)B * Cin; /* unpadded: one cast for every source */
        if (whole && src == 0)
            tower_cast_bf16_cuda(g->fc16[l], in, fc_in_elems(t, l), g->stream);
        tower_fc_forward_bf16_cuda(out, whole ? NULL : in, g->fc16[l] + src * slot,
                                   bf16_weights(t, w), b, B, Cin, Cout, ldw, accumulate,
                                   g->cublas, g->stream);
    } else
        tower_fc_forward_cuda(out, in, w, b, B, Cin, Cout, ldw, accumulate, g->cublas,
                              g->stream);
}

static void cuda_fc_backward(tower *t, float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, int B, int Cin, int Cout, int ldw,
                             int accumulate_din)
{
    if (use_device(t)) return;
    tower_gpu *g = gpu_of(t);
    if (g->precision == TOWER_PRECISION_BF16) {
        int src = 0, l = fc_row_of(t, in, &src, "fc backward (bf16)");
        tower_fc_backward_bf16_cuda(din, dw, db, dout, fc16_grad(t, l), src == 0,
                                    g->fc16[l] + src * fc16_slot(t, l),
                                    g->wbf16 + (w - t->params), B, Cin, Cout, ldw,
                                    accumulate_din, g->grad_zeroing, g->cublas, g->stream);
    } else
        tower_fc_backward_cuda(din, dw, db, dout, in, w, B, Cin, Cout, ldw, accumulate_din,
                               g->grad_zeroing, g->cublas, g->stream);
}

static void cuda_act_forward(tower *t, int act, float *out, const float *in, size_t n)
{
    if (use_device(t)) return;
    if (act == TOWER_ACT_RELU) tower_relu_forward_cuda(out, in, n, gpu_of(t)->stream);
    else if (act == TOWER_ACT_TANH) tower_tanh_forward_cuda(out, in, n, gpu_of(t)->stream);
}

static void cuda_act_backward(tower *t, int act, float *din, const float *dout,
                              const float *out, size_t n)
{
    if (use_device(t)) return;
    if (act == TOWER_ACT_RELU) tower_relu_backward_cuda(din, dout, out, n, gpu_of(t)->stream);
    else if (act == TOWER_ACT_TANH)
        tower_tanh_backward_cuda(din, dout, out, n, gpu_of(t)->stream);
}

static void cuda_lrn_forward(tower *t, float *out, float *scale, const float *in, int B, int C,
                             int HW, int n, float k, float alpha, float beta)
{
    if (use_device(t)) return;
    tower_lrn_forward_cuda(out, scale, in, B, C, HW, n, k, alpha, beta, gpu_of(t)->stream);
}

static void cuda_lrn_backward(tower *t, float *din, const float *dout, const float *in,
                              const float *out, const float *scale, int B, int C, int HW, int n,
                              float k, float alpha, float beta)
{
    if (use_device(t)) return;
    tower_lrn_backward_cuda(din, dout, in, out, scale, B, C, HW, n, k, alpha, beta,
                            gpu_of(t)->stream);
}

static void cuda_maxpool_forward(tower *t, float *out, int32_t *idx, const float *in, int B,
                                 int C, int H, int W, int K, int S)
{
    if (use_device(t)) return;
    tower_maxpool_forward_cuda(out, idx, in, B, C, H, W, K, S, gpu_of(t)->stream);
}

static void cuda_maxpool_backward(tower *t, float *din, const float *dout, const int32_t *idx,
                                  int B, int C, int H, int W, int K, int S)
{
    if (use_device(t)) return;
    tower_maxpool_backward_cuda(din, dout, idx, B, C, H, W, K, S, gpu_of(t)->stream);
}

/* LRN and the max-pool after it as one kernel each way where the shape fits the fused
 * kernels (the paper's conv1 and conv2 do); keep: s^-beta (tower_lrn_maxpool_*_cuda) */
static int cuda_fuses_lrn_pool(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return tower_lrn_maxpool_cuda_fits(t->plan.cfg.batch, L->out_ch, L->out_h, L->out_h,
                                       tower_plan_row(&t->plan, l)->lrn.n, L->pool_k,
                                       L->pool_s);
}

/* out16: where the row's pooled output goes in bf16 too (pooled_copy) */
static void cuda_lrn_pool_forward(tower *t, float *out, int32_t *idx, float *keep,
                                  const float *in, int B, int C, int H, int W, int n, float k,
                                  float alpha, float beta, int K, int S)
{
    if (use_device(t)) return;
    tower_lrn_maxpool_forward_cuda(out, pooled_copy(t, act_row(t, in)), idx, keep, in,
                                   kept_at(t, in), B, C, H, W, n, k, alpha, beta, K, S,
                                   gpu_of(t)->stream);
}

/* 1 when row l is a conv on cuDNN's bf16 path with its ReLU fused (cuda_fuses_act: a conv
 * row) */
static int bf16_cudnn_relu_row(const tower *t, int l)
{
    const tower_gpu *g = gpu_of(t);
    return g->cudnn && g->precision == TOWER_PRECISION_BF16 &&
           g->conv_path[l] == TOWER_CONV_CUDNN && t->plan.layer[l].act == TOWER_ACT_RELU &&
           cuda_fuses_act(t, l, TOWER_ACT_RELU);
}

/* 1 when row l's conv runs on cuDNN's bf16 path with its ReLU fused, LRN and pooling fused
 * after it: its ReLU's output is read by those alone (the fused passes and the conv's
 * mask), so it can be kept in bf16 only, and the fused backward can hand over the conv's
 * bf16 output gradient. */
static int bf16_lrn_row(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return bf16_cudnn_relu_row(t, l) && L->lrn && L->pool_k && cuda_fuses_lrn_pool(t, l);
}

/* 1 when row l's fused LRN + max-pool backward hands its conv the bf16 output gradient */
static int lrn_grad_handover(const tower *t, int l)
{
    return gpu_of(t)->lrn_handover && bf16_lrn_row(t, l);
}

/* 1 when the row after l is a conv on cuDNN of one source whose input is row l's `out`
 * (with row l on cuDNN's bf16 path, so is it: it has a bf16 input copy) */
static int next_reads(const tower *t, int l, const float *out)
{
    return l + 1 < t->plan.n_layers && tower_plan_row(&t->plan, l + 1)->kind == TOWER_CONV &&
           gpu_of(t)->conv_path[l + 1] == TOWER_CONV_CUDNN &&
           t->plan.layer[l + 1].sources == 1 && t->acts[l + 1].in == out;
}

/* 1 when row l's conv runs on cuDNN's bf16 path with its ReLU fused, its output is that
 * ReLU's (no LRN, pooling or dropout after it), and the next row, a one-source conv on
 * cuDNN's bf16 path, reads it as its input (the paper's conv3 and conv4): its activation
 * can be the next row's bf16 input copy itself (tower_cudnn_input_copy), which that row's
 * forward then does not cast. */
static int bf16_chain_row(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return bf16_cudnn_relu_row(t, l) && !L->lrn && !L->pool_k && L->drop_p == 0 &&
           next_reads(t, l, t->acts[l].act);
}

/* 1 when row l's fused LRN + max-pool (bf16_lrn_row) ends the row (no dropout after it) and
 * the next row, a one-source conv on cuDNN's bf16 path, reads its pooled output (the
 * paper's conv1 into conv2): the fused forward writes that output in bf16 into the next
 * row's input copy as well, bit for bit that row's cast of it, which then makes none. The
 * fp32 output is written as before (what dump and features read). */
static int bf16_pool_row(const tower *t, int l)
{
    return bf16_lrn_row(t, l) && t->plan.layer[l].drop_p == 0 &&
           next_reads(t, l, t->acts[l].pool);
}

/* The next row's bf16 input copy where row l writes it (`hands`: row l is a bf16_chain_row
 * or a bf16_pool_row) and input_handover is on (the default); NULL elsewhere. */
static uint16_t *next_copy(const tower *t, int l, int hands)
{
    const tower_gpu *g = gpu_of(t);
    return hands && g->input_handover ? tower_cudnn_input_copy(g->cudnn, l + 1) : NULL;
}

/* Where row l's pooled output goes in bf16 too: a bf16_pool_row's next row's input copy;
 * NULL elsewhere (l may be -1). */
static uint16_t *pooled_copy(const tower *t, int l)
{
    return l >= 0 ? next_copy(t, l, bf16_pool_row(t, l)) : NULL;
}

/* Row 0's bf16 input copy, as its passes read it (another tower's when shared), where row 0
 * is a one-source conv on cuDNN's bf16 path; NULL elsewhere. */
static uint16_t *row0_copy(const tower *t)
{
    const tower_gpu *g = gpu_of(t);
    return g->cudnn && g->precision == TOWER_PRECISION_BF16 && t->plan.n_layers > 0 &&
                   tower_plan_row(&t->plan, 0)->kind == TOWER_CONV &&
                   g->conv_path[0] == TOWER_CONV_CUDNN
               ? tower_cudnn_input_copy(g->cudnn, 0)
               : NULL;
}

/* 1 when conv row l's bf16 input copy is written by the row before (a bf16_chain_row's
 * activation, or a bf16_pool_row's pooled output), or for row 0 by whoever wrote x
 * (x_given), so that its forward casts none */
static int input_given(const tower *t, int l)
{
    if (l == 0) return gpu_of(t)->x_given && row0_copy(t);
    return gpu_of(t)->input_handover && (bf16_chain_row(t, l - 1) || bf16_pool_row(t, l - 1));
}

/* Row l's kept bf16 activation, or NULL where the row keeps the fp32 one: with bf16_acts
 * on, a bf16_lrn_row's buffer, made for those rows under the configured paths (make_kept;
 * the cuDNN path's timing under --conv auto, which flips a row's path without one, writes
 * the fp32 act); with input_handover on (the default), a bf16_chain_row's next row's input
 * copy, holding what that row's cast of the fp32 act would (the same bits). */
static uint16_t *kept_act(const tower *t, int l)
{
    const tower_gpu *g = gpu_of(t);
    if (bf16_lrn_row(t, l)) return g->bf16_acts ? g->kept[l] : NULL;
    return next_copy(t, l, bf16_chain_row(t, l));
}

/* The row whose act `in` is, or -1. */
static int act_row(const tower *t, const float *in)
{
    for (int l = 0; l < t->plan.n_layers; l++)
        if (t->acts[l].act == in) return l;
    return -1;
}

/* The kept activation whose fp32 place is `in` (a row's act), or NULL. */
static const uint16_t *kept_at(const tower *t, const float *in)
{
    int l = act_row(t, in);
    return l >= 0 ? kept_act(t, l) : NULL;
}

/* The row whose ReLU output in is and whose conv output gradient din is: when it hands
 * over (lrn_grad_handover), the fused backward writes the bf16 gradient the conv's
 * backward reads (tower_cudnn_grad_buffer) in place of din, saving that backward's pass
 * over din; where the row keeps its activation in bf16, it reads that. */
static void cuda_lrn_pool_backward(tower *t, float *din, const float *dout, const int32_t *idx,
                                   const float *in, const float *keep, int B, int C, int H,
                                   int W, int n, float k, float alpha, float beta, int K, int S)
{
    if (use_device(t)) return;
    tower_gpu *g = gpu_of(t);
    int l = act_row(t, in);
    int handover = l >= 0 && t->acts[l].dact == din && lrn_grad_handover(t, l);
    uint16_t *gb = handover ? tower_cudnn_grad_buffer(g->cudnn, l) : NULL;
    /* handing over, the fp32 din (the row's dact) has no reader: the conv reads gb */
    tower_lrn_maxpool_backward_cuda(gb ? NULL : din, gb, dout, idx, in,
                                    l >= 0 ? kept_act(t, l) : NULL, keep, B, C, H, W, n, k,
                                    alpha, beta, K, S, g->stream);
    if (gb) tower_cudnn_grad_given(g->cudnn, l);
}

/* ---- the step scalars (tower_k_step) ---------------------------------------------------
 * The host shadow `staged` says what the device holds; a staging that changes nothing
 * copies nothing. The model stages every step's scalars before the step (outside any
 * capture); an op that finds its value unstaged (a caller driving the tower directly)
 * stages it itself, which a capture cannot hold: then it records a fault. */

/* Copies `want` to the device when it differs from what is staged: 0, or -1 (fault). */
static int stage(tower *t, const tower_k_step *want)
{
    tower_gpu *g = gpu_of(t);
    if (g->have_staged && memcmp(want, &g->staged, sizeof *want) == 0) return 0;
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    CUDA_CHECK_OR(cudaStreamIsCapturing(g->stream, &cap), -1);
    if (cap != cudaStreamCaptureStatusNone) {
        /* a capture would hold this copy's source address, not its value */
        TOWER_CHECK_AS(cudaErrorStreamCaptureUnsupported,
                       "staging the step scalars while the stream is being captured",
                       tower_cuda_describe_error, -1);
    }
    int i = g->step_next;
    g->step_next = (i + 1) % TOWER_CUDA_STAGE_SLOTS;
    /* the slot's last copy must be done before the host rewrites its source (an event
     * never recorded is complete) */
    CUDA_CHECK_OR(cudaEventSynchronize(g->step_ev[i]), -1);
    g->host_step[i] = *want;
    CUDA_CHECK_OR(cudaMemcpyAsync(g->dev_step, &g->host_step[i], sizeof *want,
                                  cudaMemcpyHostToDevice, g->stream),
                  -1);
    CUDA_CHECK_OR(cudaEventRecord(g->step_ev[i], g->stream), -1);
    g->staged = *want;
    g->have_staged = 1;
    return 0;
}

/* The staged struct with every row's key of this step key. */
static tower_k_step with_keys(const tower *t, uint64_t dropout_key)
{
    tower_k_step s = gpu_of(t)->staged;
    for (int l = 0; l < TOWER_MAX_LAYERS; l++)
        s.key[l] = l < t->plan.n_layers ? tower_layer_key(dropout_key, l) : 0;
    return s;
}

/* The staged struct with update number t_update's scalars, computed as the by-value path
 * did (tower_adam_scalars in double, then rounded to float). */
static tower_k_step with_update(const tower *t, const tower_optim *o, float lr,
                                int64_t t_update, int skip_nonfinite)
{
    tower_k_step s = gpu_of(t)->staged;
    s.lr = lr;
    s.momentum = (float)o->momentum;
    s.weight_decay = (float)o->weight_decay;
    s.step_size = s.bc2_sqrt = 0;
    s.beta1 = (float)o->beta1;
    s.beta2 = (float)o->beta2;
    s.eps = (float)o->eps;
    if (o->kind == TOWER_OPTIM_ADAM) {
        double step_size, bc2_sqrt;
        tower_adam_scalars((double)lr, o->beta1, o->beta2, t_update, &step_size, &bc2_sqrt);
        s.step_size = (float)step_size;
        s.bc2_sqrt = (float)bc2_sqrt;
    }
    s.skip_nonfinite = skip_nonfinite;
    return s;
}

extern "C" int tower_cuda_stage_keys(tower *t, uint64_t dropout_key)
{
    if (use_device(t)) return -1;
    tower_k_step s = with_keys(t, dropout_key);
    return stage(t, &s);
}

extern "C" int tower_cuda_stage_update(tower *t, const tower_optim *o, float lr,
                                       int64_t t_update, int skip_nonfinite)
{
    if (use_device(t)) return -1;
    tower_k_step s = with_update(t, o, lr, t_update, skip_nonfinite);
    return stage(t, &s);
}

/* Row l's key on the device, staged first when it is not yet (a direct caller). */
static const uint64_t *key_on_device(tower *t, int l, uint64_t key)
{
    tower_gpu *g = gpu_of(t);
    if (!g->have_staged || g->staged.key[l] != key) {
        tower_k_step s = g->staged;
        s.key[l] = key;
        if (stage(t, &s)) return NULL;
    }
    return &g->dev_step->key[l];
}

static void cuda_dropout_forward(tower *t, int l, int scale, float *out, const float *in,
                                 size_t n, float p, uint64_t key, int train)
{
    if (use_device(t)) return;
    /* evaluation reads no key: whatever is staged will do */
    const uint64_t *k = train ? key_on_device(t, l, key) : &gpu_of(t)->dev_step->key[l];
    if (!k) return;
    tower_dropout_step_forward_cuda(out, in, n, p, scale == TOWER_DROP_INVERTED, k, train,
                                    gpu_of(t)->stream);
}

static void cuda_dropout_backward(tower *t, int l, int scale, float *din, const float *dout,
                                  size_t n, float p, uint64_t key)
{
    if (use_device(t)) return;
    const uint64_t *k = key_on_device(t, l, key);
    if (!k) return;
    tower_dropout_step_backward_cuda(din, dout, n, p, scale == TOWER_DROP_INVERTED, k,
                                     gpu_of(t)->stream);
}

/* The softmax, then the mean loss into dev_loss on the device (the CPU's sum: double,
 * sample order), with no host wait: NaN here, the mean comes back through
 * tower_cuda_loss_post / _take. */
static double cuda_loss_forward(tower *t, float *losses, float *probs, const float *logits,
                                const int32_t *labels, int B, int T, int Vt)
{
    if (use_device(t)) return NAN;
    tower_gpu *g = gpu_of(t);
    tower_softmax_xent_forward_cuda(losses, probs, logits, labels, B, T, Vt, g->stream);
    tower_loss_mean_cuda(g->dev_loss, losses, B, g->stream);
    return NAN;
}

extern "C" int tower_cuda_loss_post(tower *t)
{
    if (use_device(t)) return -1;
    tower_gpu *g = gpu_of(t);
    int i = g->loss_next;
    g->loss_next = 1 - i;
    CUDA_CHECK_OR(cudaMemcpyAsync(&g->host_loss[i], g->dev_loss, sizeof(double),
                                  cudaMemcpyDeviceToHost, g->stream),
                  -1);
    CUDA_CHECK_OR(cudaEventRecord(g->loss_ev[i], g->stream), -1);
    return i;
}

extern "C" int tower_cuda_loss_take(tower *t, int slot, double *loss)
{
    *loss = NAN;
    if (use_device(t)) return -1;
    tower_gpu *g = gpu_of(t);
    /* a fault in any kernel of the step surfaces here (or at an exchange's wait) */
    CUDA_CHECK_OR(cudaEventSynchronize(g->loss_ev[slot]), -1);
    *loss = g->host_loss[slot];
    return 0;
}

static void cuda_loss_backward(tower *t, float *dlogits, const float *probs,
                               const int32_t *labels, int B, int T, int Vt, int slot)
{
    if (use_device(t)) return;
    tower_softmax_xent_backward_cuda(dlogits, probs, labels, B, T, Vt, slot, gpu_of(t)->stream);
}

static void cuda_zero_grads(tower *t)
{
    if (!gpu_of(t)->grad_zeroing || use_device(t)) return; /* the backward writes them */
    CUDA_CHECK(cudaMemsetAsync(t->grads, 0, sizeof(float) * t->plan.n_params,
                               gpu_of(t)->stream));
}

extern "C" void tower_cuda_set_grad_zeroing(tower *t, int on) { gpu_of(t)->grad_zeroing = !!on; }

extern "C" void tower_cuda_set_lrn_handover(tower *t, int on) { gpu_of(t)->lrn_handover = !!on; }

extern "C" void tower_cuda_set_input_handover(tower *t, int on)
{
    gpu_of(t)->input_handover = !!on;
}

extern "C" uint16_t *tower_cuda_input_copy(const tower *t)
{
    const tower_gpu *g = gpu_of(t);
    return g->x_given && !g->x_from ? row0_copy(t) : NULL;
}

extern "C" void tower_cuda_set_input_given(tower *t, int on) { gpu_of(t)->x_given = !!on; }

extern "C" int tower_cuda_share_input(tower *t, const tower *from)
{
    tower_gpu *g = gpu_of(t);
    g->x_from = NULL;
    if (g->cudnn && row0_copy(t)) tower_cudnn_share_input(g->cudnn, 0, NULL); /* its own */
    /* not given its input: its conv1 casts the shared x into its own copy, as before */
    if (!from || !g->x_given) return 0;
    uint16_t *own = row0_copy(t), *src = tower_cuda_input_copy(from);
    if (!own && !src) return 0; /* nothing to share: neither reads a bf16 copy */
    if (!own || !src) return -1;
    g->x_from = from;
    return tower_cudnn_share_input(g->cudnn, 0, src);
}

extern "C" int tower_cuda_set_bf16_acts(tower *t, int on, char *err, size_t errlen)
{
    tower_gpu *g = gpu_of(t);
    if (g->bf16_acts == !!on) return 0;
    if (settle(t, err, errlen)) return -1;
    g->bf16_acts = !!on;
    if (make_kept(t, err, errlen) == 0) return 0;
    g->bf16_acts = 0;
    return -1;
}

extern "C" int tower_cuda_bf16_weights_current(tower *t)
{
    int v = -1;
    if (use_device(t)) return -1;
    tower_gpu *g = gpu_of(t);
    CUDA_CHECK_OR(cudaMemcpyAsync(&v, g->wbf16_current, sizeof v, cudaMemcpyDeviceToHost,
                                  g->stream),
                  -1);
    CUDA_CHECK_OR(cudaStreamSynchronize(g->stream), -1);
    return v;
}

extern "C" int tower_cuda_bf16_acts_rows(const tower *t)
{
    int rows = 0;
    for (int l = 0; l < t->plan.n_layers; l++)
        if (bf16_lrn_row(t, l) && kept_act(t, l)) rows |= 1 << l;
    return rows;
}

extern "C" int tower_cuda_input_given_rows(const tower *t)
{
    int rows = 0;
    for (int l = 0; l < t->plan.n_layers; l++) /* input_given: a conv on cuDNN's bf16 path */
        if (input_given(t, l)) rows |= 1 << l;
    return rows;
}

extern "C" int tower_cuda_acts_fp32(tower *t, int l)
{
    if (use_device(t)) return -1;
    const uint16_t *k = l >= 0 && l < t->plan.n_layers ? kept_act(t, l) : NULL;
    if (!k) return 0; /* (a kept activation needs a cuDNN context) */
    tower_cudnn_widen(gpu_of(t)->cudnn, t->acts[l].act, k, act_elems(t, l));
    return tower_fault_pending() ? -1 : 0;
}

/* One launch over the arena; weight decay on weights only, as the CPU's update. Its
 * scalars are the staged ones (the model stages them; a direct caller's are staged here,
 * with skip_nonfinite as the model last staged it, 0 when it never did). */
static void cuda_update(tower *t, const tower_optim *o, float lr, int64_t t_update)
{
    if (use_device(t)) return;
    tower_gpu *g = gpu_of(t);
    tower_k_step s = with_update(t, o, lr, t_update, g->have_staged ? g->staged.skip_nonfinite : 0);
    if (stage(t, &s)) return;
    tower_update_arena_step_cuda(t->params, t->momentum, t->moment2, t->grads, &t->plan,
                                 o->kind == TOWER_OPTIM_ADAM, g->dev_step, g->dev_loss,
                                 g->wbf16, g->wbf16_current, g->stream);
}

static const tower_ops cuda_ops = {
    /* .name = */ "cuda",
    /* .fuses_act = */ cuda_fuses_act,
    /* .conv_forward = */ cuda_conv_forward,
    /* .conv_backward = */ cuda_conv_backward,
    /* .fc_forward = */ cuda_fc_forward,
    /* .fc_backward = */ cuda_fc_backward,
    /* .act_forward = */ cuda_act_forward,
    /* .act_backward = */ cuda_act_backward,
    /* .lrn_forward = */ cuda_lrn_forward,
    /* .lrn_backward = */ cuda_lrn_backward,
    /* .maxpool_forward = */ cuda_maxpool_forward,
    /* .maxpool_backward = */ cuda_maxpool_backward,
    /* .fuses_lrn_pool = */ cuda_fuses_lrn_pool,
    /* .lrn_pool_forward = */ cuda_lrn_pool_forward,
    /* .lrn_pool_backward = */ cuda_lrn_pool_backward,
    /* .dropout_forward = */ cuda_dropout_forward,
    /* .dropout_backward = */ cuda_dropout_backward,
    /* .loss_forward = */ cuda_loss_forward,
    /* .loss_backward = */ cuda_loss_backward,
    /* .zero_grads = */ cuda_zero_grads,
    /* .update = */ cuda_update,
    /* .free = */ cuda_free,
    /* .lean = */ 0,
};

static const tower_ops *cuda_ops_table(void) { return &cuda_ops; }

/* ---- `--conv auto`: each conv layer timed on both paths -------------------------------- */

/* Row l's backward as a step runs it: a handing-over row's conv makes no bf16 gradient
 * (the buffer then holds the forward's y: good for timing only) */
static void backward_as_in_a_step(tower *t, int l, int handover)
{
    if (handover) tower_cudnn_grad_given(gpu_of(t)->cudnn, l);
    tower_backward_weighted(t, l);
}

extern "C" int tower_cuda_conv_measure(tower *t, int warmup, int reps, tower_conv_timing *timing,
                                       char *note, size_t notelen, char *err, size_t errlen)
{
    tower_gpu *g = gpu_of(t);
    const tower_plan *p = &t->plan;
    if (note && notelen) note[0] = 0;
    for (int l = 0; l < p->n_layers; l++)
        for (int k = 0; k < TOWER_CONV_PATHS; k++) timing[l].fwd_ms[k] = timing[l].bwd_ms[k] = -1;
    if (reps < 1) reps = 1;
    /* from a tower on GEMM alone (as tower_init_cuda leaves it): the cuDNN context made
     * below then holds every row cuDNN can take, and each row is timed beside GEMM rows */
    if (g->cudnn) {
        snprintf(err, errlen, "tower %d: timing the convolutions needs every conv row on GEMM "
                 "first (a caller's error)", t->index);
        return -1;
    }
    if (settle(t, err, errlen)) return -1;
    cudaError_t e = cudaSuccess;
    /* both paths ready for the measurement: a cuDNN context (when the build has one and
     * cuDNN finds algorithms) and the GEMM path's scratch; what was not there before is
     * released after */
    int saved[TOWER_MAX_LAYERS];
    memcpy(saved, g->conv_path, sizeof saved);
    tower_cudnn *own = NULL;
    if (tower_cudnn_available()) {
        /* every conv row cuDNN can take: one it cannot is timed on GEMM alone, and said */
        char why[512] = "", dropped[512] = "";
        own = tower_cudnn_create(p, g->precision, g->cublas, g->stream, NULL, dropped,
                                 sizeof dropped, why, sizeof why);
        if (!own && note) snprintf(note, notelen, "cuDNN not measured: %s", why);
        else if (dropped[0] && note)
            snprintf(note, notelen, "cuDNN not measured where it has no algorithm: %s", dropped);
        g->cudnn = own;
    } else if (note) {
        snprintf(note, notelen, "cuDNN not measured: this build has no cuDNN");
    }
    /* the GEMM path's scratch at this precision with every conv layer on it; the tower's
     * own (none with every conv layer on cuDNN) is kept aside meanwhile */
    int own_scratch = 0;
    size_t need = scratch_bytes_of(p, g->precision, NULL), kept_bytes = g->scratch_bytes;
    float *kept = g->conv_scratch;
    if (!g->conv_scratch || g->scratch_bytes < need) {
        e = cudaMalloc((void **)&g->conv_scratch, need);
        if (e != cudaSuccess) {
            g->conv_scratch = kept;
            snprintf(err, errlen, "tower %d on GPU %d: conv scratch (%.1f MiB) for timing: %s",
                     t->index, t->device, need / 1048576.0, cudaGetErrorString(e));
            goto out;
        }
        g->scratch_bytes = need;
        own_scratch = 1;
    }
    /* the weights' copy the passes read, made once and marked current, so that the timed
     * conv1 forwards cast nothing, as in a step after an update */
    if (g->precision == TOWER_PRECISION_BF16) {
        tower_cast_bf16_cuda(g->wbf16, t->params, p->n_params, g->stream);
        const int one = 1;
        e = cudaMemcpyAsync(g->wbf16_current, &one, sizeof one, cudaMemcpyHostToDevice,
                            g->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream); /* `one` is on the stack */
    }
    {
        cudaEvent_t ev[3] = {NULL, NULL, NULL};
        for (int i = 0; i < 3 && e == cudaSuccess; i++) e = cudaEventCreate(&ev[i]);
        for (int l = 0; l < p->n_layers && e == cudaSuccess; l++) {
            if (tower_plan_row(p, l)->kind != TOWER_CONV) continue;
            for (int k = 0; k < TOWER_CONV_PATHS && e == cudaSuccess; k++) {
                if (k == TOWER_CONV_CUDNN && !tower_cudnn_has(g->cudnn, l)) continue;
                g->conv_path[l] = k;
                int handover = k == TOWER_CONV_CUDNN && lrn_grad_handover(t, l);
                for (int i = 0; i < warmup; i++) {
                    tower_forward_weighted(t, l);
                    backward_as_in_a_step(t, l, handover);
                }
                e = cudaEventRecord(ev[0], g->stream);
                for (int i = 0; i < reps && e == cudaSuccess; i++) tower_forward_weighted(t, l);
                if (e == cudaSuccess) e = cudaEventRecord(ev[1], g->stream);
                for (int i = 0; i < reps && e == cudaSuccess; i++)
                    backward_as_in_a_step(t, l, handover);
                if (e == cudaSuccess) e = cudaEventRecord(ev[2], g->stream);
                if (e == cudaSuccess) e = cudaEventSynchronize(ev[2]);
                float f = 0, b = 0;
                if (e == cudaSuccess) e = cudaEventElapsedTime(&f, ev[0], ev[1]);
                if (e == cudaSuccess) e = cudaEventElapsedTime(&b, ev[1], ev[2]);
                if (tower_fault_pending()) break;
                timing[l].fwd_ms[k] = f / reps;
                timing[l].bwd_ms[k] = b / reps;
            }
            /* each row timed with the others on their configured paths (so without the
             * input hand-over, which needs two rows on cuDNN) */
            g->conv_path[l] = saved[l];
            if (tower_fault_pending()) break;
        }
        for (int i = 0; i < 3; i++)
            if (ev[i]) cudaEventDestroy(ev[i]);
        char fault[512];
        if (tower_fault_take(fault, sizeof fault)) {
            snprintf(err, errlen, "tower %d on GPU %d: timing the convolutions: %s", t->index,
                     t->device, fault);
            e = cudaErrorUnknown;
        } else if (e != cudaSuccess) {
            snprintf(err, errlen, "tower %d on GPU %d: timing the convolutions: %s", t->index,
                     t->device, cudaGetErrorString(e));
        }
        /* the timed passes wrote activations and accumulated gradients: the arena is put
         * back as tower_init_cuda left it (all zero but the parameters) */
        if (e == cudaSuccess) {
            char *a = (char *)t->arena, *pa = (char *)t->params;
            size_t pb = sizeof(float) * p->n_params;
            e = cudaMemsetAsync(a, 0, (size_t)(pa - a), g->stream);
            if (e == cudaSuccess)
                e = cudaMemsetAsync(pa + pb, 0, t->arena_bytes - (size_t)(pa - a) - pb,
                                    g->stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream);
            if (e != cudaSuccess)
                snprintf(err, errlen, "tower %d on GPU %d: clearing the arena after timing: %s",
                         t->index, t->device, cudaGetErrorString(e));
        }
    }
out:
    memcpy(g->conv_path, saved, sizeof saved);
    if (g->wbf16_current) /* as after any configuration: the next pass casts */
        cudaMemsetAsync(g->wbf16_current, 0, sizeof(int), g->stream);
    if (own) {
        tower_cudnn_free(own);
        g->cudnn = NULL;
    }
    if (own_scratch) {
        cudaFree(g->conv_scratch);
        g->conv_scratch = kept;
        g->scratch_bytes = kept_bytes;
    }
    return e == cudaSuccess ? 0 : -1;
}
