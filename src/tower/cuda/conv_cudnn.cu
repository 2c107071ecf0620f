/* conv_cudnn.cu: the cuDNN convolution path (`--conv cudnn`): per conv layer an input,
 * output and filter descriptor and, per pass (forward, input gradient, weight gradient),
 * a convolution descriptor with the math mode of the algorithm cuDNN's heuristics chose.
 * Everything is set up at start-up; a step only calls cuDNN on the tower's stream.
 * A layer reading two towers (conv3) keeps its weight as (Co, 2*Ci*K*K) column blocks,
 * which cuDNN cannot read with a stride: the block is copied to a packed buffer first
 * (and its weight gradient added back from one). With --precision bf16 every tensor cuDNN
 * sees is bf16 (fp32 sums inside its calls) and the fp32 activations are cast around its
 * calls (the _bf16 functions, kernels.h's tower_k_cudnn_out and neighbours). */
#include "conv_cudnn.h"

#include <stdio.h>
#include <string.h>

#ifdef TT_HAVE_CUDNN

#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda_check.h"
#include "kernels.h"

/* tower_fault_describe_fn for cudnnStatus_t (cuda_check.h's pattern) */
static int describe_cudnn(int status, int injected, char *reason, size_t n)
{
    cudnnStatus_t s = injected ? CUDNN_STATUS_EXECUTION_FAILED : (cudnnStatus_t)status;
    return tower_cuda_describe_library(cudnnGetErrorString(s), injected, reason, n);
}

/* recorded in the thread's fault slot; the enclosing void function returns */
#define CUDNN_CHECK(call) TOWER_CHECK_AS(call, #call, describe_cudnn, )

enum { PASS_FWD, PASS_BWD_DATA, PASS_BWD_FILTER, PASSES };
static const char *const pass_name[PASSES] = {"forward", "input gradient", "weight gradient"};

typedef struct {
    int used;                    /* a conv layer */
    int sources;                 /* the towers it reads */
    int Co, kk;                  /* output channels; Ci*K*K, one source's weight columns */
    cudnnTensorDescriptor_t x, y, bias;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv[PASSES];
    int algo[PASSES];            /* cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t */
    size_t ws[PASSES];
    int tensor_ops[PASSES];      /* the chosen algorithm may use tensor cores (TF32, bf16) */
    size_t in_n, out_n;          /* elements of one source's input (B, Ci, H, W) and of y */
    int hw;                      /* Ho*Wo */
    size_t xb_off, xb_slot;      /* bf16: where the layer's input copies start in xb, and
                                    the elements from one source's copy to the next (in_n
                                    rounded up to XB_ALIGN) */
    uint16_t *x_ext;             /* bf16, a one-source layer: NULL, or where its input copy
                                    is read from instead (another context's, which its
                                    writer fills: tower_cudnn_share_input) */
} layer_ctx;

struct tower_cudnn {
    cudnnHandle_t h;
    cudaStream_t stream;
    layer_ctx layer[TOWER_MAX_LAYERS];
    char name[TOWER_MAX_LAYERS][16]; /* the plan's layer names, for messages */
    void *ws;
    size_t ws_bytes;
    float *packed; /* one source's weight block, packed: the largest Co*Ci*K*K */
    size_t packed_floats;
    /* bf16 only (NULL otherwise): */
    int bf16, batch;
    cublasHandle_t blas;
    uint16_t *xb;  /* every conv layer's input, each source, as the forward cast it */
    uint16_t *yb;  /* the forward's y, then the backward's output gradient: largest y */
    uint16_t *dxb; /* the input gradient cuDNN writes: the largest input */
    uint16_t *dwb;   /* the weight gradient cuDNN writes */
    uint16_t *wpack; /* a source's bf16 weight block, packed (or only realigned) */
    uint16_t *ones_b; /* Ho*Wo bf16 ones (the bias gradient's GEMM), the largest plane */
    float *ones_f;    /* batch fp32 ones (its GEMV over the images) */
    float *bsum;      /* (B, Co) per image and channel sums of the output gradient */
    size_t xb_n, y_n, dx_n, w_n, hw_n, bsum_n;
    int g_given; /* the conv layer whose output gradient yb already holds (the row's LRN +
                    max-pool backward wrote it: tower_cudnn_grad_given), or -1 */
};

extern "C" int tower_cudnn_available(void) { return 1; }

/* Returns -1 with err when s failed. */
static int ok(cudnnStatus_t s, const char *what, const char *layer, char *err, size_t errlen)
{
    if (s == CUDNN_STATUS_SUCCESS) return 0;
    snprintf(err, errlen, "cuDNN: %s for %s: %s", what, layer, cudnnGetErrorString(s));
    return -1;
}

/* The first heuristic result that ran, is deterministic and fits the workspace limit,
 * with a math mode of the run's precision: exactly CUDNN_FMA_MATH (fp32 FMAs, no tensor
 * cores) in fp32, as PyTorch requires when allow_tf32 is off (DEFAULT_MATH would allow
 * TF32 on sm_80+); with tensor (TF32 or bf16) anything but ALLOW_CONVERSION (which may go
 * down to fp16). The three passes have three perf types with the same fields, hence the
 * template. */
template <typename Perf>
static int pick(const Perf *p, int n, int tensor)
{
    for (int i = 0; i < n; i++) {
        int math_ok = tensor ? p[i].mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
                             : p[i].mathType == CUDNN_FMA_MATH;
        if (p[i].status == CUDNN_STATUS_SUCCESS && p[i].determinism == CUDNN_DETERMINISTIC &&
            p[i].memory <= TOWER_CUDNN_WORKSPACE_LIMIT && math_ok)
            return i;
    }
    return -1;
}

template <typename Perf>
static int choose(layer_ctx *L, int pass, const Perf *p, int n, int tensor, const char *l,
                  char *err, size_t errlen)
{
    int i = pick(p, n, tensor);
    if (i < 0) {
        snprintf(err, errlen,
                 "cuDNN: no deterministic %s algorithm for %s within %zu MiB of workspace%s "
                 "(use --conv gemm)",
                 pass_name[pass], l,
                 TOWER_CUDNN_WORKSPACE_LIMIT >> 20, tensor ? "" : " without tensor cores");
        return -1;
    }
    L->algo[pass] = (int)p[i].algo;
    L->ws[pass] = p[i].memory;
    L->tensor_ops[pass] = tensor && p[i].mathType != CUDNN_FMA_MATH;
    return ok(cudnnSetConvolutionMathType(L->conv[pass], p[i].mathType), "math type", l, err,
              errlen);
}

/* The workspace the chosen algorithms ask for under the math mode now set on each pass's
 * descriptor (the heuristics' figure may come from another mode): the larger of both. */
static int query_workspace(tower_cudnn *c, layer_ctx *L, const char *l, char *err,
                           size_t errlen)
{
    size_t b[PASSES] = {0, 0, 0};
    if (ok(cudnnGetConvolutionForwardWorkspaceSize(c->h, L->x, L->w, L->conv[PASS_FWD], L->y,
                                                   (cudnnConvolutionFwdAlgo_t)L->algo[PASS_FWD],
                                                   &b[PASS_FWD]),
           "forward workspace", l, err, errlen) ||
        ok(cudnnGetConvolutionBackwardDataWorkspaceSize(
               c->h, L->w, L->y, L->conv[PASS_BWD_DATA], L->x,
               (cudnnConvolutionBwdDataAlgo_t)L->algo[PASS_BWD_DATA], &b[PASS_BWD_DATA]),
           "input-gradient workspace", l, err, errlen) ||
        ok(cudnnGetConvolutionBackwardFilterWorkspaceSize(
               c->h, L->x, L->y, L->conv[PASS_BWD_FILTER], L->w,
               (cudnnConvolutionBwdFilterAlgo_t)L->algo[PASS_BWD_FILTER], &b[PASS_BWD_FILTER]),
           "weight-gradient workspace", l, err, errlen))
        return -1;
    for (int p = 0; p < PASSES; p++)
        if (b[p] > L->ws[p]) L->ws[p] = b[p];
    return 0;
}

/* A layer's descriptors destroyed and the layer left out (used 0). */
static void layer_drop(layer_ctx *L)
{
    if (L->x) cudnnDestroyTensorDescriptor(L->x);
    if (L->y) cudnnDestroyTensorDescriptor(L->y);
    if (L->bias) cudnnDestroyTensorDescriptor(L->bias);
    if (L->w) cudnnDestroyFilterDescriptor(L->w);
    for (int p = 0; p < PASSES; p++)
        if (L->conv[p]) cudnnDestroyConvolutionDescriptor(L->conv[p]);
    memset(L, 0, sizeof *L);
}

extern "C" void tower_cudnn_free(tower_cudnn *c)
{
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream); /* nothing of ours still running */
    for (int l = 0; l < TOWER_MAX_LAYERS; l++) layer_drop(&c->layer[l]);
    if (c->ws) cudaFree(c->ws);
    if (c->packed) cudaFree(c->packed);
    void *bf[] = {c->xb, c->yb, c->dxb, c->dwb, c->wpack, c->ones_b, c->ones_f, c->bsum};
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++)
        if (bf[i]) cudaFree(bf[i]);
    if (c->h) cudnnDestroy(c->h);
    free(c);
}

/* bf16 elements every input copy in xb starts on: 256 bytes, cudaMalloc's alignment */
#define XB_ALIGN 128

/* Descriptors of conv layer l at batch B; precision: TOWER_PRECISION_*. */
static int describe_layer(tower_cudnn *c, const tower_plan *plan, int ln, int precision,
                          char *err, size_t errlen)
{
    int tensor = precision != TOWER_PRECISION_FP32;
    cudnnDataType_t dt = precision == TOWER_PRECISION_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    cudnnMathType_t math = precision == TOWER_PRECISION_FP32   ? CUDNN_FMA_MATH
                           : precision == TOWER_PRECISION_TF32 ? CUDNN_DEFAULT_MATH
                                                               : CUDNN_TENSOR_OP_MATH;
    const tower_layer_spec *s = tower_plan_row(plan, ln);
    const char *l = s->name; /* what the messages below name */
    const tower_layer_shape *S = &plan->layer[ln];
    layer_ctx *L = &c->layer[ln];
    int B = plan->cfg.batch;
    L->used = 1;
    L->sources = S->sources;
    L->Co = S->out_ch;
    L->kk = S->in_ch * s->k * s->k;
    L->in_n = (size_t)B * S->in_ch * S->in_h * S->in_h;
    L->hw = S->out_h * S->out_h;
    L->out_n = (size_t)B * S->out_ch * L->hw;
    if (ok(cudnnCreateTensorDescriptor(&L->x), "cudnnCreateTensorDescriptor", l, err, errlen) ||
        ok(cudnnCreateTensorDescriptor(&L->y), "cudnnCreateTensorDescriptor", l, err, errlen) ||
        ok(cudnnCreateTensorDescriptor(&L->bias), "cudnnCreateTensorDescriptor", l, err,
           errlen) ||
        ok(cudnnCreateFilterDescriptor(&L->w), "cudnnCreateFilterDescriptor", l, err, errlen))
        return -1;
    if (ok(cudnnSetTensor4dDescriptor(L->x, CUDNN_TENSOR_NCHW, dt, B, S->in_ch, S->in_h,
                                      S->in_h), "input descriptor", l, err, errlen) ||
        ok(cudnnSetTensor4dDescriptor(L->y, CUDNN_TENSOR_NCHW, dt, B, S->out_ch, S->out_h,
                                      S->out_h), "output descriptor", l, err, errlen) ||
        ok(cudnnSetTensor4dDescriptor(L->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                      S->out_ch, 1, 1), "bias descriptor", l, err, errlen) ||
        ok(cudnnSetFilter4dDescriptor(L->w, dt, CUDNN_TENSOR_NCHW, S->out_ch,
                                      S->in_ch, s->k, s->k), "filter descriptor", l, err, errlen))
        return -1;
    for (int p = 0; p < PASSES; p++) {
        /* cross-correlation: the im2col convolution of layers_cpu.c (no kernel flip) */
        if (ok(cudnnCreateConvolutionDescriptor(&L->conv[p]), "cudnnCreateConvolutionDescriptor",
               l, err, errlen) ||
            ok(cudnnSetConvolution2dDescriptor(L->conv[p], s->pad, s->pad, s->stride,
                                               s->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                               CUDNN_DATA_FLOAT), "convolution descriptor", l,
               err, errlen) ||
            /* the heuristics only offer what the descriptor's math mode allows: FMA_MATH is
             * fp32 without tensor cores (PyTorch's choice when allow_tf32 is off); the
             * sums are fp32 in every mode (the descriptor's compute type) */
            ok(cudnnSetConvolutionMathType(L->conv[p], math), "math type", l, err, errlen))
            return -1;
    }
    int n, out[4];
    if (ok(cudnnGetConvolution2dForwardOutputDim(L->conv[PASS_FWD], L->x, L->w, &out[0], &out[1],
                                                 &out[2], &out[3]), "output size", l, err, errlen))
        return -1;
    if (out[0] != B || out[1] != S->out_ch || out[2] != S->out_h || out[3] != S->out_h) {
        snprintf(err, errlen, "cuDNN: %s: output %dx%dx%dx%d, the plan says %dx%dx%dx%d", s->name,
                 out[0], out[1], out[2], out[3], B, S->out_ch, S->out_h, S->out_h);
        return -1;
    }
    enum { MAX_ALGOS = 16 };
    cudnnConvolutionFwdAlgoPerf_t fwd[MAX_ALGOS];
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[MAX_ALGOS];
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[MAX_ALGOS];
    if (ok(cudnnGetConvolutionForwardAlgorithm_v7(c->h, L->x, L->w, L->conv[PASS_FWD], L->y,
                                                  MAX_ALGOS, &n, fwd), "forward heuristics", l,
           err, errlen) ||
        choose(L, PASS_FWD, fwd, n, tensor, l, err, errlen))
        return -1;
    if (ok(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->h, L->w, L->y, L->conv[PASS_BWD_DATA],
                                                       L->x, MAX_ALGOS, &n, bwd_data),
           "input-gradient heuristics", l, err, errlen) ||
        choose(L, PASS_BWD_DATA, bwd_data, n, tensor, l, err, errlen))
        return -1;
    if (ok(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->h, L->x, L->y,
                                                         L->conv[PASS_BWD_FILTER], L->w,
                                                         MAX_ALGOS, &n, bwd_filter),
           "weight-gradient heuristics", l, err, errlen) ||
        choose(L, PASS_BWD_FILTER, bwd_filter, n, tensor, l, err, errlen))
        return -1;
    if (query_workspace(c, L, l, err, errlen)) return -1;
    for (int p = 0; p < PASSES; p++)
        if (L->ws[p] > c->ws_bytes) c->ws_bytes = L->ws[p];
    size_t packed = (size_t)L->Co * L->kk;
    if (!c->bf16 && S->sources > 1 && packed > c->packed_floats) c->packed_floats = packed;
    if (!c->bf16) return 0;
    /* bf16's buffers: this layer's input copies (each starting on XB_ALIGN elements, so
     * that cuDNN's tensor-core kernels see aligned tensors), and the largest of each
     * scratch; the passes around cuDNN index in 32 bits */
    if (L->out_n > (size_t)INT32_MAX || L->in_n > (size_t)INT32_MAX) {
        snprintf(err, errlen, "cuDNN bf16: %s has a tensor of %zu elements at batch %d: the "
                 "passes around cuDNN index in 32 bits, up to 2^31 - 1 (use a smaller --batch)",
                 l, L->out_n > L->in_n ? L->out_n : L->in_n, B);
        return -1;
    }
    L->xb_slot = (L->in_n + XB_ALIGN - 1) / XB_ALIGN * XB_ALIGN;
    L->xb_off = c->xb_n;
    c->xb_n += (size_t)S->sources * L->xb_slot;
    if (L->out_n > c->y_n) c->y_n = L->out_n;
    if (L->in_n > c->dx_n) c->dx_n = L->in_n;
    if (packed > c->w_n) c->w_n = packed;
    if ((size_t)L->hw > c->hw_n) c->hw_n = (size_t)L->hw;
    if ((size_t)B * L->Co > c->bsum_n) c->bsum_n = (size_t)B * L->Co;
    return 0;
}

/* bf16's buffers (c->*_n from describe_layer); cudaSuccess or the first failure */
static cudaError_t alloc_bf16(tower_cudnn *c)
{
    cudaError_t e = cudaMalloc((void **)&c->xb, 2 * c->xb_n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->yb, 2 * c->y_n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->dxb, 2 * c->dx_n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->dwb, 2 * c->w_n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->wpack, 2 * c->w_n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->ones_b, 2 * c->hw_n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->ones_f, sizeof(float) * c->batch);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->bsum, sizeof(float) * c->bsum_n);
    /* the input copies zeroed, as the fp32 activations they may stand for (net_cuda.cu's
     * input hand-over) start */
    if (e == cudaSuccess) e = cudaMemsetAsync(c->xb, 0, 2 * c->xb_n, c->stream);
    if (e != cudaSuccess) return e;
    /* the ones, written once from the host */
    size_t n = c->hw_n > (size_t)c->batch ? c->hw_n : (size_t)c->batch;
    uint16_t *hb = (uint16_t *)malloc(2 * n);
    float *hf = (float *)malloc(sizeof(float) * n);
    if (!hb || !hf) {
        free(hb);
        free(hf);
        return cudaErrorMemoryAllocation;
    }
    for (size_t i = 0; i < n; i++) {
        hb[i] = tower_k_bf16(1.0f);
        hf[i] = 1.0f;
    }
    /* on the tower's stream, which does not wait for the legacy one (a plain cudaMemcpy
     * from pageable memory may return before its DMA lands), and finished before the host
     * copies go */
    e = cudaMemcpyAsync(c->ones_b, hb, 2 * c->hw_n, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(c->ones_f, hf, sizeof(float) * c->batch, cudaMemcpyHostToDevice,
                            c->stream);
    cudaError_t es = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) e = es;
    free(hb);
    free(hf);
    return e;
}

static size_t bf16_bytes(const tower_cudnn *c)
{
    return c->bf16 ? 2 * (c->xb_n + c->y_n + c->dx_n + 2 * c->w_n + c->hw_n) +
                         sizeof(float) * (c->batch + c->bsum_n)
                   : 0;
}

extern "C" tower_cudnn *tower_cudnn_create(const tower_plan *plan, int precision, void *cublas,
                                           void *stream, const int *path, char *dropped,
                                           size_t droppedlen, char *err, size_t errlen)
{
    if (dropped && droppedlen) dropped[0] = 0;
    tower_cudnn *c = (tower_cudnn *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "cuDNN: out of host memory");
        return NULL;
    }
    cudnnStatus_t s = cudnnCreate(&c->h);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnSetStream(c->h, (cudaStream_t)stream);
    if (s != CUDNN_STATUS_SUCCESS) {
        snprintf(err, errlen, "cuDNN: cannot start (cudnnCreate/cudnnSetStream): %s (library "
                 "version %zu, built against %d.%d)", cudnnGetErrorString(s),
                 cudnnGetVersion(), CUDNN_MAJOR, CUDNN_MINOR);
        tower_cudnn_free(c);
        return NULL;
    }
    c->stream = (cudaStream_t)stream;
    c->g_given = -1;
    c->bf16 = precision == TOWER_PRECISION_BF16;
    c->batch = plan->cfg.batch;
    c->blas = (cublasHandle_t)cublas;
    if (c->bf16 && !c->blas) {
        snprintf(err, errlen, "cuDNN in bf16: no cuBLAS handle given (a caller's error)");
        tower_cudnn_free(c);
        return NULL;
    }
    int dev = 0, major = 0;
    if (c->bf16 && cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
        major < 8) {
        snprintf(err, errlen, "--precision bf16 with cuDNN needs a GPU of compute capability 8.0 "
                 "or later (GPU %d is %d.x): use --precision fp32 or tf32", dev, major);
        tower_cudnn_free(c);
        return NULL;
    }
    int described = 0;
    size_t used = 0;
    for (int l = 0; l < plan->n_layers; l++) {
        snprintf(c->name[l], sizeof c->name[l], "%s", tower_plan_row(plan, l)->name);
        if (tower_plan_row(plan, l)->kind != TOWER_CONV || (path && path[l] != TOWER_CONV_CUDNN))
            continue;
        char why[512];
        if (!describe_layer(c, plan, l, precision, why, sizeof why)) {
            described++;
            continue;
        }
        if (!dropped) {
            snprintf(err, errlen, "%s", why);
            tower_cudnn_free(c);
            return NULL;
        }
        /* left out: describe_layer fails before it adds to the context's sizes, except
         * the 32-bit check, after which a size only grows a buffer */
        layer_drop(&c->layer[l]);
        int w = used < droppedlen ? snprintf(dropped + used, droppedlen - used, "%s%s",
                                             used ? "; " : "", why)
                                  : 0;
        if (w > 0) used += (size_t)w;
    }
    if (!described) {
        snprintf(err, errlen, "%s", dropped && dropped[0] ? dropped : "cuDNN: no conv layer to describe");
        tower_cudnn_free(c);
        return NULL;
    }
    cudaError_t e = cudaSuccess;
    if (c->ws_bytes) e = cudaMalloc(&c->ws, c->ws_bytes);
    if (e == cudaSuccess && c->packed_floats)
        e = cudaMalloc((void **)&c->packed, sizeof(float) * c->packed_floats);
    if (e == cudaSuccess && c->bf16) e = alloc_bf16(c);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cuDNN: cannot allocate %.1f MiB of workspace%s: %s",
                 (c->ws_bytes + sizeof(float) * c->packed_floats + bf16_bytes(c)) / 1048576.0,
                 c->bf16 ? " and bf16 buffers" : "",
                 cudaGetErrorString(e));
        tower_cudnn_free(c);
        return NULL;
    }
    return c;
}

extern "C" size_t tower_cudnn_bytes(const tower_cudnn *c)
{
    return c ? c->ws_bytes + sizeof(float) * c->packed_floats + bf16_bytes(c) : 0;
}

extern "C" int tower_cudnn_has(const tower_cudnn *c, int l)
{
    return c && l >= 0 && l < TOWER_MAX_LAYERS && c->layer[l].used;
}

extern "C" void tower_cudnn_describe(const tower_cudnn *c, char *buf, size_t n)
{
    int w0 = snprintf(buf, n, "cuDNN %zu (CUDA runtime %zu)%s: ", cudnnGetVersion(),
                      cudnnGetCudartVersion(), c->bf16 ? ", bf16 tensors" : "");
    size_t used = w0 > 0 ? (size_t)w0 : 0;
    for (int l = 0; l < TOWER_MAX_LAYERS && used < n; l++) {
        const layer_ctx *L = &c->layer[l];
        if (!L->used) continue;
        int w = snprintf(buf + used, n - used,
                         "%s: forward algo %d%s, input grad algo %d%s, weight grad algo %d%s; ",
                         c->name[l], L->algo[0], L->tensor_ops[0] ? " (TC)" : "",
                         L->algo[1], L->tensor_ops[1] ? " (TC)" : "", L->algo[2],
                         L->tensor_ops[2] ? " (TC)" : "");
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* The weight block of one source (Co rows of kk elements of `size` bytes, row stride ldw)
 * as cuDNN reads it: w itself, or, when copy, packed into buf (cuDNN's filters have no row
 * stride). NULL after a failed copy (recorded in the fault slot). */
static const void *weight_block(tower_cudnn *c, const layer_ctx *L, const void *w, int ldw,
                                size_t size, void *buf, int copy)
{
    if (!copy) return w;
    CUDA_CHECK_OR(cudaMemcpy2DAsync(buf, size * L->kk, w, size * ldw, size * L->kk, L->Co,
                                    cudaMemcpyDeviceToDevice, c->stream),
                  NULL);
    return buf;
}

/* fp32: packed when the layer reads two towers (ldw != kk) */
static const float *packed_weights(tower_cudnn *c, const layer_ctx *L, const float *w, int ldw)
{
    return (const float *)weight_block(c, L, w, ldw, sizeof(float), c->packed, ldw != L->kk);
}

/* dw (Co, ldw) += (accumulate) or = packed (Co, kk): one thread per element of the block
 * (grid-stride). */
__global__ void add_block_kernel(float *dw, int ldw, const float *packed, int kk, size_t n,
                                 int accumulate)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float *d = &dw[i / kk * ldw + i % kk];
        *d = accumulate ? *d + packed[i] : packed[i];
    }
}

extern "C" void tower_cudnn_forward(tower_cudnn *c, int l, float *out, const float *in,
                                    const float *w, const float *b, int ldw, int accumulate)
{
    layer_ctx *L = &c->layer[l];
    const float one = 1.0f, zero = 0.0f;
    const float *wp = packed_weights(c, L, w, ldw);
    CUDNN_CHECK(cudnnConvolutionForward(c->h, &one, L->x, in, L->w, wp, L->conv[PASS_FWD],
                                        (cudnnConvolutionFwdAlgo_t)L->algo[PASS_FWD], c->ws,
                                        c->ws_bytes, accumulate ? &one : &zero, L->y, out));
    if (b) /* out += b broadcast over (B, HW): after the convolution, as the CPU adds it */
        CUDNN_CHECK(cudnnAddTensor(c->h, &one, L->bias, b, &one, L->y, out));
}

extern "C" void tower_cudnn_backward(tower_cudnn *c, int l, float *din, float *dw, float *db,
                                     const float *dout, const float *in, const float *w,
                                     int ldw, int accumulate_din, int accumulate_dw)
{
    layer_ctx *L = &c->layer[l];
    const float one = 1.0f, zero = 0.0f;
    const float *bw = accumulate_dw ? &one : &zero; /* dw's and db's beta */
    if (db) CUDNN_CHECK(cudnnConvolutionBackwardBias(c->h, &one, L->y, dout, bw, L->bias, db));
    if (dw) {
        int direct = ldw == L->kk; /* else into the packed block, then added to dw's block */
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(
            c->h, &one, L->x, in, L->y, dout, L->conv[PASS_BWD_FILTER],
            (cudnnConvolutionBwdFilterAlgo_t)L->algo[PASS_BWD_FILTER], c->ws, c->ws_bytes,
            direct ? bw : &zero, L->w, direct ? dw : c->packed));
        if (!direct) {
            size_t n = (size_t)L->Co * L->kk;
            add_block_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, c->stream>>>(
                dw, ldw, c->packed, L->kk, n, accumulate_dw);
            LAUNCH_CHECK(add_block_kernel);
        }
    }
    if (din) {
        const float *wp = packed_weights(c, L, w, ldw);
        CUDNN_CHECK(cudnnConvolutionBackwardData(
            c->h, &one, L->w, wp, L->y, dout, L->conv[PASS_BWD_DATA],
            (cudnnConvolutionBwdDataAlgo_t)L->algo[PASS_BWD_DATA], c->ws, c->ws_bytes,
            accumulate_din ? &one : &zero, L->x, din));
    }
}

/* ---- bf16 (--precision bf16): fp32 activations cast around cuDNN's bf16 calls, or a kept
 * bf16 activation written in place of one ---------------------------------------------- */

/* out = tower_k_cudnn_out (+ ReLU when relu): the forward's end */
__global__ void cudnn_out_bf16_kernel(float *out, const uint16_t *y, const float *b,
                                      tower_k_div C, tower_k_div HW, uint32_t n, int accumulate,
                                      int relu)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = tower_k_cudnn_out(y, out, b, i, C, HW, accumulate);
        out[i] = relu ? tower_k_relu(v) : v;
    }
}

/* act (a kept activation) = tower_k_cudnn_act_bf16: the forward's end where the row keeps
 * its ReLU's output in bf16 only; out is read as the sum so far when accumulate */
__global__ void cudnn_act_bf16_kernel(uint16_t *act, const float *out, const uint16_t *y,
                                      const float *b, tower_k_div C, tower_k_div HW, uint32_t n,
                                      int accumulate)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        tower_k_cudnn_act_bf16(act, y, out, b, i, C, HW, accumulate);
}

/* g = the output gradient in bf16, masked by the ReLU when act is non-NULL (fp32) */
__global__ void grad_bf16_kernel(uint16_t *g, const float *dout, const float *act, uint32_t n)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        tower_k_grad_bf16(g, dout, tower_k_src_of(act, 0), i);
}

/* the same, masked by a kept bf16 activation */
__global__ void grad_bf16_h_kernel(uint16_t *g, const float *dout, const uint16_t *act,
                                   uint32_t n)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        tower_k_grad_bf16(g, dout, tower_k_src_of(act, 1), i);
}

/* din = or += cuDNN's bf16 input gradient */
__global__ void add_bf16_kernel(float *dst, const uint16_t *src, uint32_t n, int accumulate)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        tower_k_add_bf16(dst, src, i, accumulate);
}

/* dw's (Co, ldw) block += (accumulate) or = cuDNN's packed (Co, kk) bf16 weight gradient */
__global__ void add_bf16_block_kernel(float *dw, uint32_t ldw, const uint16_t *src, tower_k_div kk,
                                      uint32_t n, int accumulate)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        tower_k_add_bf16_block(dw, ldw, src, i, kk, accumulate);
}

/* bf16: packed as in fp32, and also copied when it does not start on 16 bytes (a layer's
 * weights sit wherever the parameter arena puts them; cuDNN's tensor-core kernels want
 * aligned filters) */
static const uint16_t *packed_weights_bf16(tower_cudnn *c, const layer_ctx *L, const uint16_t *w,
                                           int ldw)
{
    return (const uint16_t *)weight_block(c, L, w, ldw, sizeof(uint16_t), c->wpack,
                                          ldw != L->kk || (uintptr_t)w % 16 != 0);
}

extern "C" uint16_t *tower_cudnn_grad_buffer(tower_cudnn *c, int l)
{
    return c && c->bf16 && l >= 0 && l < TOWER_MAX_LAYERS && c->layer[l].used ? c->yb : NULL;
}

extern "C" void tower_cudnn_grad_given(tower_cudnn *c, int l) { c->g_given = l; }

/* Source src's input copy of layer l as the passes read it: its own, or the shared one */
static uint16_t *x_copy(tower_cudnn *c, const layer_ctx *L, int src)
{
    return L->x_ext ? L->x_ext : c->xb + L->xb_off + (size_t)src * L->xb_slot;
}

extern "C" uint16_t *tower_cudnn_input_copy(tower_cudnn *c, int l)
{
    if (!c || !c->bf16 || l < 0 || l >= TOWER_MAX_LAYERS || !c->layer[l].used ||
        c->layer[l].sources != 1)
        return NULL;
    return x_copy(c, &c->layer[l], 0);
}

extern "C" int tower_cudnn_share_input(tower_cudnn *c, int l, uint16_t *from)
{
    if (!tower_cudnn_input_copy(c, l)) return -1;
    c->layer[l].x_ext = from;
    return 0;
}

#define BF16_LAUNCH(kernel, n, ...)                                                           \
    do {                                                                                      \
        kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, c->stream>>>(__VA_ARGS__);      \
        LAUNCH_CHECK(kernel);                                                                 \
    } while (0)

extern "C" void tower_cudnn_widen(tower_cudnn *c, float *dst, const uint16_t *src, size_t n)
{
    if (n == 0) return;
    INDEX32_CHECK(n, "bf16 tensor read back as fp32");
    BF16_LAUNCH(add_bf16_kernel, n, dst, src, (uint32_t)n, 0);
}

extern "C" void tower_cudnn_forward_bf16(tower_cudnn *c, int l, int src, float *out,
                                         const float *in, const uint16_t *w, const float *b,
                                         int ldw, int accumulate, int relu, uint16_t *keep)
{
    layer_ctx *L = &c->layer[l];
    const float one = 1.0f, zero = 0.0f;
    c->g_given = -1; /* yb is about to hold this y */
    uint16_t *x = x_copy(c, L, src);
    if (in && L->x_ext) /* a shared copy is its writer's alone */
        tower_cuda_die("cuDNN bf16 forward", "an input to cast into a shared input copy (a "
                       "caller's error)", __FILE__, __LINE__);
    if (in) /* kept for the weight gradient */
        tower_cast_bf16_cuda(x, in, L->in_n, c->stream);
    else if (src != 0 || L->sources != 1) /* the row before wrote it: tower_cudnn_input_copy */
        tower_cuda_die("cuDNN bf16 forward", "no input for a source other than a one-source "
                       "layer's (a caller's error)", __FILE__, __LINE__);
    const uint16_t *wp = packed_weights_bf16(c, L, w, ldw);
    if (!wp) return;
    CUDNN_CHECK(cudnnConvolutionForward(c->h, &one, L->x, x, L->w, wp, L->conv[PASS_FWD],
                                        (cudnnConvolutionFwdAlgo_t)L->algo[PASS_FWD], c->ws,
                                        c->ws_bytes, &zero, L->y, c->yb));
    tower_k_div C = tower_k_div_of((uint32_t)L->Co), HW = tower_k_div_of((uint32_t)L->hw);
    if (keep && !relu)
        tower_cuda_die("cuDNN bf16 forward", "a kept bf16 activation without its ReLU (a "
                       "caller's error)", __FILE__, __LINE__);
    if (keep)
        BF16_LAUNCH(cudnn_act_bf16_kernel, L->out_n, keep, out, c->yb, b, C, HW,
                    (uint32_t)L->out_n, accumulate);
    else
        BF16_LAUNCH(cudnn_out_bf16_kernel, L->out_n, out, c->yb, b, C, HW, (uint32_t)L->out_n,
                    accumulate, relu);
}

extern "C" void tower_cudnn_backward_bf16(tower_cudnn *c, int l, int src, float *din, float *dw,
                                          float *db, const float *dout, const float *act_out,
                                          const uint16_t *act16, const uint16_t *w, int ldw,
                                          int accumulate_din, int accumulate_dw)
{
    layer_ctx *L = &c->layer[l];
    const float one = 1.0f, zero = 0.0f;
    uint16_t *g = c->yb; /* the output gradient: made once, at the first source's call, unless
                            the pass before made it (tower_cudnn_grad_given) */
    if (src == 0 && c->g_given >= 0 && c->g_given != l) /* a hand-over nobody took */
        tower_cuda_die("cuDNN bf16 backward", "the output gradient handed over for another "
                       "layer was never read (a caller's error)", __FILE__, __LINE__);
    if (src == 0 && c->g_given != l && act16)
        BF16_LAUNCH(grad_bf16_h_kernel, L->out_n, g, dout, act16, (uint32_t)L->out_n);
    else if (src == 0 && c->g_given != l)
        BF16_LAUNCH(grad_bf16_kernel, L->out_n, g, dout, act_out, (uint32_t)L->out_n);
    if (src == 0) c->g_given = -1;
    if (db) {
        /* bsum (B*Co) = g, as (B*Co) rows of Ho*Wo, times ones: per image and channel, then
         * db (Co) += bsum as (B, Co) summed over the images. Both in fp32, in cuBLAS's order
         * (deterministic for a handle, stream and shape). */
        int rows = c->batch * L->Co;
        CUBLAS_CHECK(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, 1, L->hw, &one, g,
                                  CUDA_R_16BF, L->hw, c->ones_b, CUDA_R_16BF, L->hw, &zero,
                                  c->bsum, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
        CUBLAS_CHECK(cublasSgemv(c->blas, CUBLAS_OP_N, L->Co, c->batch, &one, c->bsum, L->Co,
                                 c->ones_f, 1, accumulate_dw ? &one : &zero, db, 1));
    }
    if (dw) {
        const uint16_t *x = x_copy(c, L, src);
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(
            c->h, &one, L->x, x, L->y, g, L->conv[PASS_BWD_FILTER],
            (cudnnConvolutionBwdFilterAlgo_t)L->algo[PASS_BWD_FILTER], c->ws, c->ws_bytes, &zero,
            L->w, c->dwb));
        size_t n = (size_t)L->Co * L->kk;
        BF16_LAUNCH(add_bf16_block_kernel, n, dw, (uint32_t)ldw, c->dwb,
                    tower_k_div_of((uint32_t)L->kk), (uint32_t)n, accumulate_dw);
    }
    if (din) {
        const uint16_t *wp = packed_weights_bf16(c, L, w, ldw);
        if (!wp) return;
        CUDNN_CHECK(cudnnConvolutionBackwardData(
            c->h, &one, L->w, wp, L->y, g, L->conv[PASS_BWD_DATA],
            (cudnnConvolutionBwdDataAlgo_t)L->algo[PASS_BWD_DATA], c->ws, c->ws_bytes, &zero,
            L->x, c->dxb));
        BF16_LAUNCH(add_bf16_kernel, L->in_n, din, c->dxb, (uint32_t)L->in_n, accumulate_din);
    }
}

#else /* no cuDNN in this build: the path reports itself missing */

extern "C" int tower_cudnn_available(void) { return 0; }

extern "C" tower_cudnn *tower_cudnn_create(const tower_plan *plan, int precision, void *cublas,
                                           void *stream, const int *path, char *dropped,
                                           size_t droppedlen, char *err, size_t errlen)
{
    (void)plan;
    (void)precision;
    (void)cublas;
    (void)stream;
    (void)path;
    if (dropped && droppedlen) dropped[0] = 0;
    snprintf(err, errlen, "--conv cudnn: this build has no cuDNN (meson found no cudnn.h and "
                          "libcudnn; -Dcudnn=enabled makes that an error): use --conv gemm");
    return NULL;
}

extern "C" void tower_cudnn_free(tower_cudnn *c) { (void)c; }
extern "C" size_t tower_cudnn_bytes(const tower_cudnn *c) { (void)c; return 0; }
extern "C" int tower_cudnn_has(const tower_cudnn *c, int l)
{
    (void)c, (void)l;
    return 0;
}
extern "C" void tower_cudnn_describe(const tower_cudnn *c, char *buf, size_t n)
{
    (void)c;
    if (n) buf[0] = 0;
}
extern "C" void tower_cudnn_forward(tower_cudnn *c, int l, float *out, const float *in,
                                    const float *w, const float *b, int ldw, int accumulate)
{
    (void)c, (void)l, (void)out, (void)in, (void)w, (void)b, (void)ldw, (void)accumulate;
}
extern "C" void tower_cudnn_backward(tower_cudnn *c, int l, float *din, float *dw, float *db,
                                     const float *dout, const float *in, const float *w,
                                     int ldw, int accumulate_din, int accumulate_dw)
{
    (void)c, (void)l, (void)din, (void)dw, (void)db, (void)dout, (void)in, (void)w, (void)ldw;
    (void)accumulate_din, (void)accumulate_dw;
}

extern "C" void tower_cudnn_forward_bf16(tower_cudnn *c, int l, int src, float *out,
                                         const float *in, const uint16_t *w, const float *b,
                                         int ldw, int accumulate, int relu, uint16_t *keep)
{
    (void)c, (void)l, (void)src, (void)out, (void)in, (void)w, (void)b, (void)ldw;
    (void)accumulate, (void)relu, (void)keep;
}
extern "C" void tower_cudnn_backward_bf16(tower_cudnn *c, int l, int src, float *din, float *dw,
                                          float *db, const float *dout, const float *act_out,
                                          const uint16_t *act16, const uint16_t *w, int ldw,
                                          int accumulate_din, int accumulate_dw)
{
    (void)c, (void)l, (void)src, (void)din, (void)dw, (void)db, (void)dout, (void)act_out;
    (void)act16, (void)w, (void)ldw, (void)accumulate_din, (void)accumulate_dw;
}

extern "C" uint16_t *tower_cudnn_grad_buffer(tower_cudnn *c, int l)
{
    (void)c, (void)l;
    return NULL;
}
extern "C" void tower_cudnn_grad_given(tower_cudnn *c, int l) { (void)c, (void)l; }
extern "C" uint16_t *tower_cudnn_input_copy(tower_cudnn *c, int l)
{
    (void)c, (void)l;
    return NULL;
}
extern "C" int tower_cudnn_share_input(tower_cudnn *c, int l, uint16_t *from)
{
    (void)c, (void)l, (void)from;
    return -1;
}
extern "C" void tower_cudnn_widen(tower_cudnn *c, float *dst, const uint16_t *src, size_t n)
{
    (void)c, (void)dst, (void)src, (void)n;
}

#endif
