/* tower: the layers of the 2012 AlexNet, the net descriptions (the paper's net and the
 * variants its readers train) and the per-tower network built from one of them.
 * Public header of src/tower. Knows nothing of data loading, exchange or training:
 * the trainer (src/train) drives towers layer by layer and calls src/comm between them.
 *
 * Conventions (llm.c / cuda-convnet2):
 *   - tensors are NCHW, row-major; every pointer below names its shape.
 *   - arguments: outputs, then inputs, then weights, then sizes.
 *   - the CUDA twin of `tower_X` is `tower_X_cuda` with the same arguments plus a
 *     trailing cudaStream_t (see tower_cuda.h).
 *   - parameter gradients accumulate (+=); the trainer zeroes them once per step.
 *   - `real` is float in the product; the gradient-check tests build this library a
 *     second time with -DTOWER_F64 so every layer runs in double. */
#ifndef TOWER_H
#define TOWER_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef TOWER_F64
typedef double real;
#else
typedef float real;
#endif

/* ---- the paper's constants (sections 3.3, 3.4, 4.2, 5; paper_notes.md) ------- */
#define TOWER_LRN_N 5
#define TOWER_LRN_K 2.0
#define TOWER_LRN_ALPHA 1e-4 /* multiplies the raw sum of squares, as the paper writes it */
#define TOWER_LRN_BETA 0.75
#define TOWER_POOL_K 3
#define TOWER_POOL_STRIDE 2
#define TOWER_DROPOUT_P 0.5
#define TOWER_INIT_STD 0.01

/* The counter-based random numbers (base_rng_mix, base_rng_uniform, base_rng_normal)
 * are in base/base.h: every random number derives from (key, index). */

/* ---- layers: CPU backend (layers_cpu.c) ------------------------------------------- */

/* Output size of a convolution along one axis: floor((n + 2 pad - k) / stride) + 1. */
int tower_conv_out(int n, int k, int stride, int pad);

/* Size in reals of the scratch buffer one conv call needs: the im2col columns and the
 * product of one chunk of images (layers_cpu.c says how a chunk is sized). */
size_t tower_conv_col_size(int Ci, int H, int W, int K, int stride, int pad);

/* Images one SGEMM chunk of this convolution holds (layers_cpu.c); a batch of B runs as
 * ceil(B / chunk) chunks, the last one smaller. A function of the shape alone. */
int tower_conv_chunk_images(int Ci, int H, int W, int Co, int K, int stride, int pad);

/* The CPU tower's oneDNN passes (conv_dnnl.h; which ones: tower_conv_dnnl_passes), in builds that have oneDNN (tower_conv_dnnl_built): on unless
 * tower_conv_dnnl(0) was called before the tower's first step, for the process (tests
 * compare the paths; model_init sets it from `--cpu-conv onednn|gemm`). tower_conv_forward/backward below are
 * always the im2col path. */
void tower_conv_dnnl(int on);
int tower_conv_dnnl_off(void);
int tower_conv_dnnl_built(void);
/* The OpenBLAS kernels to ask for (a name for OPENBLAS_CORETYPE) where the library fell
 * back to its Prescott (SSE3) kernels on a CPU with AVX2 or AVX-512, as Debian's 0.3.21
 * does on models newer than itself (Sapphire and Emerald Rapids): SGEMM runs about five
 * times slower there. NULL where its choice stands. */
const char *tower_blas_better_core(void);
/* The passes oneDNN runs for a K x K convolution of stride S (K >= 2), a mask. Where
 * oneDNN has AVX-512 kernels (avx512), every pass: the forward, the weights' and bias'
 * gradients, and the input gradient at stride 1. With AVX2 only, the forward at 5x5
 * stride 1 and the input gradient at every stride 1; 0 for the rest (docs/BENCH.md,
 * "oneDNN", has the timings behind both rules). tower_conv_dnnl_passes is the rule for
 * this machine: a function of the shape and the CPU alone, so a run's summation order
 * never depends on timing. */
enum { TOWER_DNNL_FWD = 1, TOWER_DNNL_BWD_DATA = 2, TOWER_DNNL_BWD_W = 4 };
int tower_conv_dnnl_passes_for(int K, int S, int avx512);
int tower_conv_dnnl_passes(int K, int S);
/* c (n, n) = a . b by oneDNN's SGEMM (bench's probe of the machine's SGEMM): 0, or -1 in a
 * build without oneDNN. */
int tower_dnnl_square_sgemm(int n, const float *a, const float *b, float *c);

/* Convolution. out (B, Co, Ho, Wo); in (B, Ci, H, W); w (Co, ldw) of which the first
 * Ci*K*K columns are used (ldw > Ci*K*K selects one input block of a layer that reads
 * several towers); b (Co) or NULL. accumulate=0: out = conv + b; accumulate=1:
 * out += conv (+ b when non-NULL). col: scratch of tower_conv_col_size(). */
void tower_conv_forward(real *out, const real *in, const real *w, const real *b,
                        int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                        int ldw, int accumulate, real *col);
/* din (B, Ci, H, W) or NULL: = (accumulate_din=0) or += the input gradient;
 * dw (Co, ldw) += ; db (Co) += or NULL. dout (B, Co, Ho, Wo). */
void tower_conv_backward(real *din, real *dw, real *db,
                         const real *dout, const real *in, const real *w,
                         int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                         int ldw, int accumulate_din, real *col);

/* The convolution's column matrix of one image, as the two above build it (and the CUDA
 * backend's tests check its kernels against, bit for bit): col rows (c, kh, kw) of
 * Ci*K*K, each of Ho*Wo columns (oh, ow) at row stride ldc >= Ho*Wo, the pixel of
 * in (Ci, H, W) tap (kh, kw) sees at (oh, ow), 0 in the padding. tower_col2im is its
 * adjoint: in (Ci, H, W) += every col entry at the pixel it came from, in the order
 * (c, kh, kw, oh, ow). */
void tower_im2col(real *col, size_t ldc, const real *in, int Ci, int H, int W, int K,
                  int stride, int pad);
void tower_col2im(real *in, const real *col, size_t ldc, int Ci, int H, int W, int K,
                  int stride, int pad);

/* Fully connected. out (B, Cout); in (B, Cin); w (Cout, ldw), first Cin columns used;
 * b (Cout) or NULL. accumulate as for conv. */
void tower_fc_forward(real *out, const real *in, const real *w, const real *b,
                      int B, int Cin, int Cout, int ldw, int accumulate);
void tower_fc_backward(real *din, real *dw, real *db,
                       const real *dout, const real *in, const real *w,
                       int B, int Cin, int Cout, int ldw, int accumulate_din);

/* ReLU, n elements; out may alias in. Backward: din = dout * (out > 0); din may alias dout. */
void tower_relu_forward(real *out, const real *in, size_t n);
void tower_relu_backward(real *din, const real *dout, const real *out, size_t n);

/* tanh, n elements; out may alias in. Backward from the output: din = dout (1 - out^2);
 * din may alias dout. (Figure 1 of the paper compares ReLU against it.) */
void tower_tanh_forward(real *out, const real *in, size_t n);
void tower_tanh_backward(real *din, const real *dout, const real *out, size_t n);

/* The CPU layers' GEMM accounting, for `twotower bench`: while counting is on, every
 * BLAS call of the CPU layers (any thread) adds its wall time and its FLOPs (2 m n k), and
 * so does every oneDNN convolution pass (conv_dnnl.c: its reorders included, the direct
 * convolution's FLOPs) through tower_cpu_gemm_add; tower_cpu_gemm_counted() returns the
 * sums since the last read and resets them. */
void tower_cpu_gemm_count(int on);
int tower_cpu_gemm_counting(void);
void tower_cpu_gemm_add(double seconds, double madds);
void tower_cpu_gemm_counted(double *seconds, double *flops);

/* LRN's scale^-beta; every backend calls it. The paper's beta = 3/4 needs no powf:
 * - on the host (the CPU layers, and the CUDA kernels' host emulation, which so match
 *   them bit for bit): sqrt(sqrt(s)) / s, three correctly rounded operations, within
 *   2 ulp of s^-0.75 over the scales LRN makes (s >= k > 0). A loop of them vectorises
 *   where powf is a library call per element (about 6x slower; it was most of the CPU
 *   LRN's time).
 * - on the GPU: r r rsqrt(r) with r = rsqrt(s) (s^-1/2 s^-1/2 s^1/4), two special-function
 *   instructions and two multiplies, within about 6 ulp; the CPU-vs-GPU tests allow for
 *   it as they allowed for two libraries' powf.
 * Any other beta is powf's. */
BASE_HD float tower_lrn_pow(float s, float beta)
{
    if (beta != 0.75f) return powf(s, -beta);
#if defined(__CUDA_ARCH__)
    float r = rsqrtf(s);
    return r * r * rsqrtf(r);
#else
    return sqrtf(sqrtf(s)) / s;
#endif
}

/* Cross-channel LRN exactly as the paper writes it:
 *   out[c] = in[c] / scale[c]^beta,  scale[c] = k + alpha * sum_{|j-c| <= n/2} in[j]^2.
 * out, scale, in: (B, C, HW). scale is kept for backward. */
void tower_lrn_forward(real *out, real *scale, const real *in,
                       int B, int C, int HW, int n, real k, real alpha, real beta);
void tower_lrn_backward(real *din, const real *dout, const real *in, const real *out,
                        const real *scale, int B, int C, int HW, int n, real k, real alpha,
                        real beta);
/* The same LRN keeping nothing but its input for backward (the CPU's lean arena): the
 * forward takes each image's scale in work and gives tower_lrn_forward's out bit for
 * bit; the backward recomputes each image's scale and scale^-beta from in (the forward's
 * bits; tower_lrn_backward takes the power once per element as well) and out as
 * in * scale^-beta, and gives tower_lrn_backward's din bit for bit; din may alias dout.
 * work: tower_lrn_lean_work_size() reals, both. */
size_t tower_lrn_lean_work_size(int C, int HW);
void tower_lrn_forward_lean(real *out, const real *in, int B, int C, int HW, int n, real k,
                            real alpha, real beta, real *work);
void tower_lrn_backward_lean(real *din, const real *dout, const real *in, int B, int C,
                             int HW, int n, real k, real alpha, real beta, real *work);

/* Max-pool, window K, stride S, no padding: out (B, C, Ho, Wo), Ho = (H-K)/S + 1.
 * idx (B, C, Ho, Wo): flat index h*W+w of the first maximum in the window (row-major
 * scan). Backward: each input sums, from 0 in (oh, ow) order, the dout of the windows
 * that chose it (the CPU scatters in output order, the GPU gathers: the same sums), so it
 * is deterministic with no atomics. din is overwritten and aliases nothing. */
void tower_maxpool_forward(real *out, int32_t *idx, const real *in,
                           int B, int C, int H, int W, int K, int S);
void tower_maxpool_backward(real *din, const real *dout, const int32_t *idx,
                            int B, int C, int H, int W, int K, int S);

/* Dropout as the paper does it: training keeps a unit when
 * base_rng_uniform(key, i) >= p and multiplies it by 1 (no rescale); evaluation
 * multiplies every unit by (1 - p). The mask is recomputed from key in backward.
 * out may alias in. */
void tower_dropout_forward(real *out, const real *in, size_t n, real p, uint64_t key,
                           int train);
void tower_dropout_backward(real *din, const real *dout, size_t n, real p, uint64_t key);

/* Inverted dropout (PyTorch's nn.Dropout): the same mask, kept units multiplied by
 * 1 / (1 - p) in training; evaluation is the identity. p < 1. out may alias in. */
void tower_dropout_inverted_forward(real *out, const real *in, size_t n, real p, uint64_t key,
                                    int train);
void tower_dropout_inverted_backward(real *din, const real *dout, size_t n, real p,
                                     uint64_t key);

/* Softmax cross-entropy over V = T*Vt classes whose logits are gathered from T towers:
 * logits, probs (T, B, Vt) (class c of sample b at [(c / Vt) * B * Vt + b * Vt + c % Vt]);
 * labels (B); losses (B). The mean over the batch is the loss. */
void tower_softmax_xent_forward(real *losses, real *probs, const real *logits,
                                const int32_t *labels, int B, int T, int Vt);
/* dlogits (B, Vt): gradient of the mean loss for the logits of tower `slot`. */
void tower_softmax_xent_backward(real *dlogits, const real *probs, const int32_t *labels,
                                 int B, int T, int Vt, int slot);

/* The paper's update (section 5), applied to n parameters:
 *   v <- momentum v - wd lr w - lr g;   w <- w + v. */
void tower_sgd_update(real *w, real *v, const real *g, size_t n, real lr, real momentum,
                      real wd);

/* Adam (Kingma and Ba), as torch.optim.Adam computes it, applied to n parameters:
 *   g' = g + wd w;  m <- beta1 m + (1 - beta1) g';  v <- beta2 v + (1 - beta2) g'^2;
 *   w <- w - step_size * m / (sqrt(v) / bc2_sqrt + eps)
 * with the bias corrections of update t (1-based) folded into two scalars the caller
 * computes once per step (tower_adam_scalars): step_size = lr / (1 - beta1^t) and
 * bc2_sqrt = sqrt(1 - beta2^t). */
void tower_adam_update(real *w, real *m, real *v, const real *g, size_t n, real step_size,
                       real beta1, real beta2, real eps, real bc2_sqrt, real wd);
/* step_size and bc2_sqrt of update t >= 1, in double. */
void tower_adam_scalars(double lr, double beta1, double beta2, int64_t t, double *step_size,
                        double *bc2_sqrt);

/* ---- a net as data: rows with named fields (net.c) ---------------------------------
 * A net description is a list of rows, one per conv or fc layer, each saying what the
 * layer is (kind, outputs per tower, kernel), which towers it reads, and what follows it
 * (activation, LRN, pooling, dropout), plus how it is initialised. The exchange points
 * of a two-tower net follow from the rows: every row that reads all towers gathers its
 * input from them (conv3, fc6, fc7, fc8 in the paper's net), and the last row's outputs
 * (the logits) are gathered too. The presets (tower_net_preset) are the paper's net and
 * the variants its readers train; paper_notes.md says where each comes from. */

enum tower_layer_kind { TOWER_CONV = 1, TOWER_FC = 2 };
enum tower_reads { TOWER_READS_OWN = 0, TOWER_READS_ALL = 1 };
enum tower_act { TOWER_ACT_NONE = 0, TOWER_ACT_RELU = 1, TOWER_ACT_TANH = 2 };
/* Where a row's dropout applies: after its last stage (the paper: fc6 and fc7's outputs),
 * or on its input (torchvision: the inputs of fc6 and fc7), which is the last stage of
 * the row before. */
enum tower_drop_where { TOWER_DROP_OUTPUT = 0, TOWER_DROP_INPUT = 1 };
/* How dropout scales: the paper's (training multiplies by the 0/1 mask, evaluation by
 * 1 - p) or inverted (training by mask / (1 - p), evaluation by 1), PyTorch's. */
enum tower_drop_scale { TOWER_DROP_PAPER = 0, TOWER_DROP_INVERTED = 1 };
/* Weight init: the paper's N(0, std) with constant biases, or PyTorch's default for
 * nn.Conv2d / nn.Linear (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))). */
enum tower_init_kind { TOWER_INIT_NORMAL = 0, TOWER_INIT_TORCH = 1 };
enum tower_optim_kind { TOWER_OPTIM_SGD = 1, TOWER_OPTIM_ADAM = 2 };

typedef struct {
    int on;                 /* 0: no LRN after this row's activation */
    int n;                  /* channels in the window (5) */
    double k, alpha, beta;  /* 2, 1e-4 (on the raw sum of squares), 0.75 */
} tower_lrn_spec;

typedef struct {
    int k, stride;          /* max-pool window and stride; k = 0: no pooling */
} tower_pool_spec;

typedef struct {
    double p;               /* drop probability; 0: no dropout */
    int where;              /* TOWER_DROP_OUTPUT or TOWER_DROP_INPUT */
    int scale;              /* TOWER_DROP_PAPER or TOWER_DROP_INVERTED */
} tower_dropout_spec;

typedef struct {
    int kind;               /* TOWER_INIT_NORMAL or TOWER_INIT_TORCH */
    double std;             /* NORMAL: weights N(0, std) */
    double bias;            /* NORMAL: every bias */
} tower_init_spec;

/* One layer of one tower. Stages in order: conv/fc, act, LRN, pool, dropout. */
typedef struct {
    char name[16];          /* "conv1" ... "fc8": tensor names in checkpoints and exports */
    int kind;               /* TOWER_CONV or TOWER_FC */
    int out;                /* kernels (units) per tower; the last row's is ignored: it has
                               the config's classes / towers */
    int k, stride, pad;     /* conv only */
    int reads;              /* TOWER_READS_OWN, or TOWER_READS_ALL (an exchange point) */
    int act;                /* TOWER_ACT_* */
    tower_lrn_spec lrn;
    tower_pool_spec pool;
    tower_dropout_spec dropout;
    tower_init_spec init;
} tower_layer_spec;

/* The optimizer (section 5 for SGD). Weight decay never touches the biases. */
typedef struct {
    int kind;               /* TOWER_OPTIM_SGD or TOWER_OPTIM_ADAM */
    double momentum;        /* SGD: 0.9 */
    double weight_decay;    /* 0.0005 (SGD's v -= wd lr w; Adam's g += wd w) */
    double beta1, beta2, eps; /* Adam: 0.9, 0.999, 1e-8 */
} tower_optim;

/* What was switched on top of the preset (tower_net_apply); "keep" values leave the
 * preset's choice. Recorded in the net so checkpoints, dumps and logs can say it. */
typedef struct {
    int lrn;                /* -1 keep; 0 no LRN anywhere; 1 LRN after conv1 and conv2's
                               activations with the paper's constants (any net) */
    int pool_k, pool_s;     /* 0 keep; else every pooling row gets window k, stride s */
    int act;                /* -1 keep; else TOWER_ACT_RELU or TOWER_ACT_TANH on every row
                               but the last */
    double dropout;         /* < 0 keep; else every dropout row gets this p (0: off) */
    int optim;              /* 0 keep; TOWER_OPTIM_SGD or TOWER_OPTIM_ADAM */
    int init;               /* -1 keep; TOWER_INIT_NORMAL: the paper's on every row (N(0,
                               0.01), biases 1 in conv2, conv4, conv5 and the hidden fc
                               layers, else 0), TOWER_INIT_TORCH: PyTorch's defaults */
    double momentum, weight_decay, beta1, beta2, eps; /* < 0 keep */
} tower_net_switches;

#define TOWER_SWITCHES_KEEP_INIT                                                         \
    {.lrn = -1, .pool_k = 0, .pool_s = 0, .act = -1, .dropout = -1, .optim = 0, .init = -1,\
     .momentum = -1, .weight_decay = -1, .beta1 = -1, .beta2 = -1, .eps = -1}
#define TOWER_SWITCHES_KEEP ((tower_net_switches)TOWER_SWITCHES_KEEP_INIT)

/* Presets, by id (append-only: checkpoints store the id). */
enum tower_net_id {
    TOWER_NET_ALEXNET2012 = 1,
    TOWER_NET_ALEXNET2012_1GPU = 2,
    TOWER_NET_HALF = 3,
    TOWER_NET_MERGED = 4,
    TOWER_NET_ALEXNET2014 = 5,
    TOWER_NET_TORCHVISION = 6,
    TOWER_NET_FMNIST = 7,
};
#define TOWER_NET_PRESETS 7
#define TOWER_MAX_LAYERS 16
/* Rows of the paper's net (conv1-conv5, fc6-fc8), which every preset shares; a
 * description may have up to TOWER_MAX_LAYERS, so code loops over plan->n_layers. */
#define TOWER_LAYERS 8

typedef struct {
    char name[32];          /* "alexnet2012", ... */
    int id;                 /* TOWER_NET_* */
    const char *about;      /* one line for `twotower nets` (a static string) */
    int towers;             /* 1 or 2 */
    int in_ch, in_size, classes; /* the defaults the source uses (3, 224, 1000) */
    int n_layers;
    tower_layer_spec layer[TOWER_MAX_LAYERS];
    /* training defaults where the source prescribes them (paper_notes.md) */
    tower_optim optim;
    double lr;
    int batch, epochs;
    tower_net_switches switches; /* what tower_net_apply changed (TOWER_SWITCHES_KEEP) */
} tower_net;

/* The preset called name, or NULL. */
const tower_net *tower_net_preset(const char *name);
/* The preset with this id, or NULL. */
const tower_net *tower_net_preset_id(int id);
/* Preset i of TOWER_NET_PRESETS, in `twotower nets` order (i = 0: alexnet2012). */
const tower_net *tower_net_preset_at(int i);
/* "alexnet2012, alexnet2012-1gpu, ..." for messages. */
const char *tower_net_names(void);

/* Applies the switches to net (in place) and records them in net->switches. Returns 0,
 * or -1 with a message naming the switch when one makes no sense for this net (a pool
 * switch on a net without pooling, a dropout p >= 1, momentum for Adam, ...). Sizes are
 * checked later, by tower_plan_make (e.g. pool 2:2 with too small an input). */
int tower_net_apply(tower_net *net, const tower_net_switches *sw, char *err, size_t errlen);
/* Sets one switch from its text, as a command line gives it: key is lrn (on|off), pool
 * (K:S), act (relu|tanh), dropout (P), optim (sgd|adam), momentum, weight-decay, beta1,
 * beta2, eps (numbers). 0, or -1 with a message naming key and value. */
int tower_net_switch_parse(tower_net_switches *sw, const char *key, const char *value,
                           char *err, size_t errlen);
/* 1 when any switch differs from keep (a field at a time: never memcmp, the struct has
 * padding). */
int tower_net_switched(const tower_net_switches *sw);
/* "pool 2:2, act tanh" (or "none"): the switches that differ from keep. */
void tower_net_switches_describe(const tower_net_switches *sw, char *buf, size_t n);

/* ---- a net at one size: the plan --------------------------------------------------- */

typedef struct {
    int towers;   /* 2: the paper's net; 1: one tower (must equal net.towers when net is
                     given) */
    int classes;  /* 1000 for ImageNet; the last row gives classes/towers per tower */
    int batch;    /* B */
    int in_size;  /* input side, 224 */
    int in_ch;    /* 3 */
    int width_div; /* 1: the net's widths; tests divide every row's width but the last by
                      this to get a tiny net of the same topology */
    tower_net net; /* the description; n_layers = 0 (a zeroed field): the paper's net for
                      towers = 2, `half` for towers = 1 (what --towers 1 always built) */
} tower_config;

/* Shapes and stages of one layer in one tower, derived from its row and the config. */
typedef struct {
    int in_ch;       /* channels (or features) read from ONE source tower */
    int sources;     /* how many towers' outputs it reads: 1, or towers if it reads all */
    int in_h;        /* input side (conv); 1 for fc */
    int out_ch;      /* outputs per tower */
    int out_h;       /* conv output side; 1 for fc */
    int final_ch, final_h; /* after pooling (= out_* when no pool) */
    size_t w_count, b_count; /* per tower: w is (out_ch, sources * in_ch * k * k) */
    size_t w_off, b_off;     /* offsets in the tower's parameter arena */
    double macs;             /* multiply-adds per image for this tower's layer */
    /* the stage sequence after the conv/fc, resolved from the rows */
    int act;                 /* TOWER_ACT_* */
    int lrn;                 /* 1: LRN with the row's constants */
    int pool_k, pool_s;      /* 0: no pooling */
    double drop_p;           /* 0: no dropout stage on this layer's output */
    int drop_scale;          /* TOWER_DROP_PAPER or TOWER_DROP_INVERTED */
    int drop_row;            /* the row whose dropout this is (this one, or the next for a
                                dropout on the next row's input) */
} tower_layer_shape;

typedef struct {
    tower_config cfg;         /* cfg.net resolved (never n_layers = 0 here) */
    int n_layers;             /* cfg.net.n_layers */
    tower_layer_shape layer[TOWER_MAX_LAYERS];
    size_t n_params;          /* per tower */
    int vt;                   /* last-row outputs per tower */
    int adam;                 /* 1: the optimizer is Adam (a second-moment arena) */
} tower_plan;

/* Fills plan from cfg. Returns 0, or -1 with a message in err when cfg is unusable
 * (classes not divisible by towers, input too small for the net, a row that makes no
 * sense, ...). */
int tower_plan_make(tower_plan *plan, const tower_config *cfg, char *err, size_t errlen);
/* cfg's net: cfg->net, or the default of its tower count when that is zeroed. */
const tower_net *tower_config_net(const tower_config *cfg);
/* Row l of the plan's net. */
static inline const tower_layer_spec *tower_plan_row(const tower_plan *p, int l)
{
    return &p->cfg.net.layer[l];
}

/* Writes into buf (n bytes) which path runs each pass a conv layer of plan needs on this
 * CPU (layers_cpu.c; the first layer has no input gradient): "oneDNN: conv1 every pass,
 * ...", then "; im2col + one SGEMM per chunk of images: conv3 weights' gradient (8), ..."
 * with the images one GEMM chunk holds; either part absent when it has no pass.
 * tower_conv_describe is the same after "CPU; " (bench's line). */
void tower_conv_paths(char *buf, size_t n, const tower_plan *plan);
void tower_conv_describe(char *buf, size_t n, const tower_plan *plan);

/* ---- one tower ------------------------------------------------------------------- */

/* Activation buffers of one layer (B = batch). Pointers into the tower's arena. Each
 * stage has its own buffer except the last, which writes `out`. */
typedef struct {
    real *in;        /* this layer's input: own previous output, the image, or the
                        gathered buffer (sources, B, in_ch, in_h, in_h) */
    real *din;       /* gradient of `in` (same shape); for layers reading all towers the
                        trainer reduce-scatters it into the sources' dout */
    real *act;       /* (B, out_ch, out_h, out_h): conv/fc output, activation in place */
    real *dact;
    real *lrn, *lrn_scale, *dlrn; /* (B, out_ch, out_h, out_h) when lrn; where the backend
                                     fuses LRN with the pooling after it (fuses_lrn_pool)
                                     lrn_scale holds scale^-beta and lrn, dlrn go unused */
    real *pool, *dpool;           /* (B, out_ch, final_h, final_h) when pool */
    int32_t *pool_idx;
    real *out;       /* the layer's final output (act, lrn, pool, or dropout result).
                        When the next layer reads all towers this is slot `index` of the
                        next layer's gathered `in`. */
    real *dout;      /* gradient of out */
} tower_acts;

struct tower_ops;

typedef struct tower {
    tower_plan plan;
    int index;        /* which tower: 0 or 1 */
    int device;       /* -1: CPU; >= 0: CUDA device (see tower_cuda.h) */
    const struct tower_ops *ops; /* the backend's operations (tower_ops_cpu, or CUDA's) */
    real *params;     /* (n_params) one arena: [w conv1][b conv1]...[w fc8][b fc8] */
    real *grads;      /* (n_params) */
    real *momentum;   /* (n_params) SGD's velocity, Adam's first moment */
    real *moment2;    /* (n_params) Adam's second moment; NULL for SGD (not carved) */
    real *w[TOWER_MAX_LAYERS], *b[TOWER_MAX_LAYERS];   /* views into params */
    real *dw[TOWER_MAX_LAYERS], *db[TOWER_MAX_LAYERS]; /* views into grads */
    real *x;          /* (B, in_ch, in_size, in_size) the image batch, = acts[0].in */
    tower_acts acts[TOWER_MAX_LAYERS];
    real *logits;     /* (towers, B, vt): the last row's gathered output; acts[last].out is
                         slot index */
    real *probs;      /* (towers, B, vt) */
    real *losses;     /* (B) */
    int32_t *labels;  /* (B) */
    real *col;        /* im2col scratch, the largest any layer needs */
    void *conv_cpu[TOWER_MAX_LAYERS]; /* CPU: a conv layer's oneDNN primitives (conv_dnnl.h),
                                         made at its first call; NULL: none */
    int conv_cpu_tried[TOWER_MAX_LAYERS];
    void *arena;      /* the one allocation behind everything above */
    size_t arena_bytes;
    uint64_t dropout_key; /* set by the trainer each step: tower_step_key() */
    void *gpu;        /* CUDA-side context (tower_cuda.h), NULL on the CPU */
} tower;

/* ---- the GPU's convolution path per conv layer ------------------------------------
 * How a GPU tower convolves one conv layer: chunked im2col + SGEMM (layers_cuda.cu, the
 * default) or cuDNN (conv_cudnn.cu, when the build has it). Values reach run.json and
 * bench's JSON as names (tower_conv_path_name). */
enum { TOWER_CONV_GEMM = 0, TOWER_CONV_CUDNN = 1, TOWER_CONV_PATHS = 2 };

/* One conv layer's measured cost per path at the run's batch, in milliseconds: fwd_ms the
 * forward of all its sources (with its activation), bwd_ms the backward. A negative time:
 * that path was not measured (no cuDNN in the build, cuDNN had no algorithm, or the row
 * is not a conv layer). */
typedef struct {
    double fwd_ms[TOWER_CONV_PATHS];
    double bwd_ms[TOWER_CONV_PATHS];
} tower_conv_timing;

/* cuDNN is chosen for a layer only when its forward + backward is faster than the GEMM
 * path's by more than this fraction of the GEMM path's time: a closer result is a tie
 * within the timing noise, and a tie keeps the default. */
#define TOWER_CONV_TIE_FRACTION 0.03

/* `--conv auto`'s decision, from measured times alone (no device: plain C, so a test can
 * inject timings): path[l] for l < n is TOWER_CONV_GEMM or TOWER_CONV_CUDNN, the faster
 * measured path of row l by forward + backward, GEMM on a tie (TOWER_CONV_TIE_FRACTION),
 * GEMM when cuDNN was not measured, cuDNN when only cuDNN was, GEMM for a row with
 * neither (not a conv layer). Returns how many rows got cuDNN. */
int tower_conv_choose(const tower_conv_timing *timing, int n, int *path);
/* "gemm", "cudnn", or "?" for anything else. */
const char *tower_conv_path_name(int path);

/* ---- the GPU's GEMM precision (--precision) -----------------------------------------
 * FP32: plain fp32 GEMMs (cuBLAS DEFAULT_MATH), the default and the paper's numbers;
 * TF32: the GEMMs' operands rounded to TF32 on the tensor cores, fp32 sums (--tf32);
 * BF16: the GEMMs' operands (im2col columns, output gradients, weights, fc inputs) stored
 * in bf16, fp32 sums and fp32 results; parameters, momentum, gradients, the update and
 * every other layer stay fp32 (paper_notes.md, "bf16 GEMM operands"). The CPU backend is
 * fp32 only. Values reach run.json and bench's JSON as names (tower_precision_name). */
enum { TOWER_PRECISION_FP32 = 0, TOWER_PRECISION_TF32 = 1, TOWER_PRECISION_BF16 = 2 };
/* "fp32", "tf32", "bf16", or "?" for anything else. */
const char *tower_precision_name(int precision);

/* ---- the backends' operations: one table per backend -------------------------------
 * net.c runs every layer's stage sequence once, for every backend, through the tower's
 * table: the CPU's wraps layers_cpu.c, CUDA's (net_cuda.cu) wraps layers_cuda.cu and
 * cuDNN. Every op takes the tower first (the backend's context: scratch, stream,
 * handles), then the arguments of the layer function it stands for, in that function's
 * order. Adding a layer kind means: its CPU function, its CUDA twin, an entry here (or an
 * enum value an entry dispatches on), its row fields, its tests. */
typedef struct tower_ops {
    const char *name; /* "cpu", "cuda" */
    /* 1 when this backend's convolution of row l applies activation act itself (forward:
     * on the output, after the last source; backward: folded into its pass), as the GPU
     * GEMM path does for ReLU; the layer loop then passes act to conv_forward/backward
     * and skips the act op. */
    int (*fuses_act)(const tower *t, int l, int act);
    /* Row l's convolution of one source block (shapes from the plan): out (B, Co, Ho, Wo)
     * = or += conv(in, w columns [0, Ci*K*K) of leading dimension ldw) (+ b); act:
     * TOWER_ACT_NONE or the fused activation. */
    void (*conv_forward)(tower *t, int l, real *out, const real *in, const real *w,
                         const real *b, int ldw, int accumulate, int act);
    /* act_out: the fused activation's output (its gradient mask), when act is fused. */
    void (*conv_backward)(tower *t, int l, real *din, real *dw, real *db, const real *dout,
                          const real *act_out, const real *in, const real *w, int ldw,
                          int accumulate_din, int act);
    void (*fc_forward)(tower *t, real *out, const real *in, const real *w, const real *b,
                       int B, int Cin, int Cout, int ldw, int accumulate);
    void (*fc_backward)(tower *t, real *din, real *dw, real *db, const real *dout,
                        const real *in, const real *w, int B, int Cin, int Cout, int ldw,
                        int accumulate_din);
    void (*act_forward)(tower *t, int act, real *out, const real *in, size_t n);
    void (*act_backward)(tower *t, int act, real *din, const real *dout, const real *out,
                         size_t n);
    void (*lrn_forward)(tower *t, real *out, real *scale, const real *in, int B, int C,
                        int HW, int n, real k, real alpha, real beta);
    void (*lrn_backward)(tower *t, real *din, const real *dout, const real *in,
                         const real *out, const real *scale, int B, int C, int HW, int n,
                         real k, real alpha, real beta);
    void (*maxpool_forward)(tower *t, real *out, int32_t *idx, const real *in, int B, int C,
                            int H, int W, int K, int S);
    void (*maxpool_backward)(tower *t, real *din, const real *dout, const int32_t *idx,
                             int B, int C, int H, int W, int K, int S);
    /* 1 when this backend runs row l's LRN and the max-pool after it as one pass each way
     * (the GPU's fused kernels): the layer loop then calls lrn_pool_forward/backward in
     * place of lrn_* and maxpool_*. Forward: out, idx as maxpool_forward of the LRN's
     * output, keep (B, C, H, W) what the backend keeps for backward (CUDA: scale^-beta);
     * backward: din from dout, idx, in (the LRN's input) and keep. NULL: never fused. */
    int (*fuses_lrn_pool)(const tower *t, int l);
    void (*lrn_pool_forward)(tower *t, real *out, int32_t *idx, real *keep, const real *in,
                             int B, int C, int H, int W, int n, real k, real alpha, real beta,
                             int K, int S);
    void (*lrn_pool_backward)(tower *t, real *din, const real *dout, const int32_t *idx,
                              const real *in, const real *keep, int B, int C, int H, int W,
                              int n, real k, real alpha, real beta, int K, int S);
    /* row l's dropout; scale: TOWER_DROP_PAPER or TOWER_DROP_INVERTED; key:
     * tower_layer_key(t->dropout_key, l) (the CUDA ops read it from the step's staged
     * scalars, tower_cuda_stage_keys, staging it themselves outside a capture) */
    void (*dropout_forward)(tower *t, int l, int scale, real *out, const real *in, size_t n,
                            real p, uint64_t key, int train);
    void (*dropout_backward)(tower *t, int l, int scale, real *din, const real *dout, size_t n,
                             real p, uint64_t key);
    /* softmax cross-entropy; the CPU's returns the mean loss, summed in double in sample
     * order; the CUDA one leaves that same mean on the device and returns NaN (no host
     * wait inside a step: tower_cuda_loss_post / _take read it) */
    double (*loss_forward)(tower *t, real *losses, real *probs, const real *logits,
                           const int32_t *labels, int B, int T, int Vt);
    void (*loss_backward)(tower *t, real *dlogits, const real *probs, const int32_t *labels,
                          int B, int T, int Vt, int slot);
    void (*zero_grads)(tower *t);
    /* The whole arena's update: update number `t_update` (1-based; Adam's bias
     * correction), weight decay on the weights only. */
    void (*update)(tower *t, const tower_optim *o, real lr, int64_t t_update);
    void (*free)(tower *t);
    /* 1: the tower's arena is lean (tower_carve): every activation gradient and forward
     * temporary lives in three shared regions, and the ops take what that implies:
     * lrn_forward and lrn_backward get scale = NULL (tower_lrn_*_lean recompute it),
     * lrn_backward out = NULL and din == dout, dropout_backward and act_backward
     * din == dout. 0 (the CUDA backend): one buffer per stage. Last, so positional
     * initialisers of the tables stay valid. */
    int lean;
} tower_ops;

/* The CPU backend's table (net.c). */
extern const tower_ops tower_ops_cpu;

/* Allocates one CPU tower (one arena) and initialises its parameters from `seed` with
 * each row's init (the paper's: weights N(0, 0.01), biases 0 or 1). The same seed gives
 * the same weights on every backend. Returns 0 or -1 with err. */
int tower_init(tower *t, const tower_plan *plan, int index, uint64_t seed, char *err,
               size_t errlen);
void tower_free(tower *t);

/* Writes the init of tower `index` into params (n_params reals). */
void tower_init_params(real *params, const tower_plan *plan, int index, uint64_t seed);

/* Key for one step's dropout masks: a pure function of (seed, step, tower, layer). */
uint64_t tower_step_key(uint64_t seed, int64_t step, int tower_index);
uint64_t tower_layer_key(uint64_t step_key, int layer);

/* Layer l of this tower, forward: reads acts[l].in (already gathered by the trainer
 * when the layer reads all towers), writes acts[l].out. train=0 for evaluation (the
 * dropout stages scale as their row says). */
void tower_forward_layer(tower *t, int l, int train);
/* Softmax cross-entropy over t->logits (gathered by the trainer) and t->labels;
 * fills probs and losses. Returns the mean loss (CPU towers); a GPU tower returns NaN and
 * leaves the mean on the device (tower_cuda.h, tower_cuda_loss_post). */
double tower_loss_forward(tower *t);
/* dlogits of this tower's slot into the last layer's dout. */
void tower_loss_backward(tower *t);
/* Layer l backward: reads acts[l].dout, writes acts[l].din (for layers reading all towers
 * the gradient for every source slot) and accumulates dw, db. l=0 computes no din. */
void tower_backward_layer(tower *t, int l);
/* The part of row l that carries weights, each way: the conv or fc of every source with
 * its activation (fused or as its own op): forward acts[l].in -> acts[l].act, backward
 * acts[l].dact -> acts[l].din, dw and db. tower_forward_layer and tower_backward_layer
 * call these; on their own they are what `--conv auto` times (tower_cuda_conv_measure). */
void tower_forward_weighted(tower *t, int l);
void tower_backward_weighted(tower *t, int l);
void tower_zero_grads(tower *t);
/* Lays every buffer of the tower out from base (host or device memory) and returns the
 * bytes needed; base NULL only measures. The layout follows t->ops: the full one (a
 * buffer per stage and per gradient; the CUDA backend, and t->ops NULL) or, when
 * t->ops->lean, the lean one (the CPU's): the forward keeps only what backward reads, and
 * the activation gradients share two ping-pong regions and one pre-pool region (net.c). */
size_t tower_carve(tower *t, char *base);
/* Where one tower's arena goes, in bytes (alignment included in each part). */
typedef struct {
    size_t params;        /* params, grads, momentum (and Adam's second moment) */
    size_t input;         /* x: the image batch */
    size_t kept[TOWER_MAX_LAYERS]; /* per layer, what its forward keeps for backward: the
                                      activation, the LRN's scale (full arena), the
                                      pool's argmax, the output it hands on (the next
                                      layer's input, gathered from every tower when that
                                      reads all) and, in the full arena, the LRN and pool
                                      outputs that are not the last stage */
    size_t kept_act[TOWER_MAX_LAYERS];   /* of kept: the activation (conv/fc output) */
    size_t kept_lrn[TOWER_MAX_LAYERS];   /* of kept: the LRN's scale and output (full arena;
                                            the lean one keeps neither) */
    size_t kept_idx[TOWER_MAX_LAYERS];   /* of kept: the pool's argmax (int32) */
    size_t grads;         /* activation gradients: full arena one buffer per stage; lean
                             the three regions (which also hold the forward temporaries) */
    size_t grad_part[3];  /* lean: the regions (two ping-pong ones for dout/din, one for
                             the gradient before a pool); full: 0 */
    size_t loss;          /* logits (gathered), probs, losses, labels */
    size_t scratch;       /* col: the conv chunk scratch (lean: also the LRN's per-image work) */
    size_t total;         /* the arena: tower_carve's bytes */
} tower_mem;

/* t's arena by part (t->plan and t->ops as tower_carve reads them; nothing allocated). */
void tower_memory(const tower *t, tower_mem *m);

/* The plan's optimizer step, update number t_update (1-based). */
void tower_update(tower *t, const tower_optim *o, real lr, int64_t t_update);
/* The paper's SGD step (tower_update with SGD and these constants). */
void tower_sgd(tower *t, real lr, real momentum, real wd);

/* ---- faults: a device call that fails inside an op ------------------------------------
 * The ops are void, like their CPU twins, so a backend's failed device call (CUDA, cuBLAS,
 * cuDNN) cannot return a status. Each is made through TOWER_CHECK_AS, which records the
 * first failure in the calling thread's fault slot (the call as written, file, line, the
 * library's reason) and returns from the op; while a fault is pending every later checked
 * call on that thread returns at once without being made, so the rest of the op, and of
 * any op after it, issues no device work. Whoever drives the ops (src/train/model.c,
 * after every op of a step) takes the slot and fails the step, naming the tower, the layer
 * and the step. A tower's ops run on one thread at a time, so a thread's slot is its
 * tower's. Plain C: the CPU tests check it without a GPU. */
enum {
    TOWER_FAULT_ERROR = 1,  /* an error the device survives (a bad argument, a library
                               status): the context could be used again */
    TOWER_FAULT_STICKY = 2  /* the context is lost (a kernel fault: illegal address,
                               launch failure, ...): every later call on the device fails */
};

/* What the backend says about a failed status: writes the reason (the status's name and
 * text) and returns TOWER_FAULT_ERROR or TOWER_FAULT_STICKY. injected > 0 (the test hook,
 * tower_fault_inject): status is 0 and the function describes the error of that kind it
 * stands in for. */
typedef int (*tower_fault_describe_fn)(int status, int injected, char *reason, size_t n);

/* 1 when the calling thread has a fault not yet taken. */
int tower_fault_pending(void);
/* The check's body: 0 when status is 0 (success) and no injection is due; otherwise
 * records the fault (call, file, line, describe's reason and kind) unless one is already
 * pending, and returns 1. */
int tower_fault_check(int status, const char *call, tower_fault_describe_fn describe,
                      const char *file, int line);
/* Takes the calling thread's fault: 0 when none; else its kind (TOWER_FAULT_ERROR or
 * TOWER_FAULT_STICKY) with "CALL failed at FILE:LINE: REASON" in msg, and the slot empty. */
int tower_fault_take(char *msg, size_t n);
/* Test hook: the nth checked call the calling thread makes from now (1: the next) fails
 * as if its library had returned an error of `kind`, after the call itself was made;
 * nth 0 disarms. CPU ops make no checked calls, so only GPU towers (or a test's own
 * checked calls) consume it. */
void tower_fault_inject(int nth, int kind);

/* One checked call: status is the call's result (0: success, as cudaSuccess,
 * CUBLAS_STATUS_SUCCESS and CUDNN_STATUS_SUCCESS all are); call_text what the message
 * names; ret what the enclosing function returns on failure (empty in a void function).
 * The status is not evaluated, the call not made, when a fault is already pending. */
#define TOWER_CHECK_AS(status, call_text, describe, ret)                                  \
    do {                                                                                  \
        if (tower_fault_pending()) return ret;                                            \
        if (tower_fault_check((int)(status), (call_text), (describe), __FILE__, __LINE__)) \
            return ret;                                                                   \
    } while (0)

#ifdef __cplusplus
}
#endif

/* The CUDA twins (tower_X_cuda), present when the CUDA backend is built. */
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64) && __has_include("tower/tower_cuda.h")
#include "tower/tower_cuda.h"
#endif
#endif
