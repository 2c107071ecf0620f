/* tower: the layers of the 2012 AlexNet and the per-tower network built from them.
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

/* ---- the paper's constants (PAPER.md, sections 3.3, 3.4, 4.2, 5) ------------- */
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

/* Cross-channel LRN exactly as the paper writes it:
 *   out[c] = in[c] / scale[c]^beta,  scale[c] = k + alpha * sum_{|j-c| <= n/2} in[j]^2.
 * out, scale, in: (B, C, HW). scale is kept for backward. */
void tower_lrn_forward(real *out, real *scale, const real *in,
                       int B, int C, int HW, int n, real k, real alpha, real beta);
void tower_lrn_backward(real *din, const real *dout, const real *in, const real *out,
                        const real *scale, int B, int C, int HW, int n, real k, real alpha,
                        real beta);

/* Max-pool, window K, stride S, no padding: out (B, C, Ho, Wo), Ho = (H-K)/S + 1.
 * idx (B, C, Ho, Wo): flat index h*W+w of the first maximum in the window (row-major
 * scan). Backward is a gather: each input sums the dout of the windows that chose it,
 * so it is deterministic with no atomics. din is overwritten. */
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

/* ---- the network as data (net.c) -------------------------------------------------- */

enum tower_layer_kind { TOWER_CONV = 1, TOWER_FC = 2 };

/* One row of the 2012 topology, per tower (PAPER.md figure 2). */
typedef struct {
    const char *name;   /* "conv1" ... "fc8" */
    int kind;           /* TOWER_CONV or TOWER_FC */
    int out;            /* kernels (or units) per tower with two towers; fc8: classes in all */
    int k, stride, pad; /* conv only */
    int reads_both;     /* 1: input is every tower's previous output (an exchange point) */
    int relu;           /* 1 everywhere but fc8 */
    int lrn, pool, dropout; /* what follows the ReLU */
    float bias_init;    /* 0 or 1 (section 5) */
} tower_layer_spec;

#define TOWER_LAYERS 8
extern const tower_layer_spec tower_alexnet2012[TOWER_LAYERS];

typedef struct {
    int towers;   /* 2: the paper's net; 1: one tower alone (section 3.2's "half the kernels") */
    int classes;  /* 1000 for ImageNet; fc8 gives classes/towers outputs per tower */
    int batch;    /* B */
    int in_size;  /* input side, 224 */
    int in_ch;    /* 3 */
    int width_div; /* 1: the paper's widths; tests divide every conv/fc width by this to
                      get a tiny net of the same topology (fc8 keeps `classes`) */
} tower_config;

/* Shapes of one layer in one tower, derived from the table and the config. */
typedef struct {
    int in_ch;       /* channels (or features) read from ONE source tower */
    int sources;     /* how many towers' outputs it reads: 1, or towers if reads_both */
    int in_h;        /* input side (conv); 1 for fc */
    int out_ch;      /* outputs per tower */
    int out_h;       /* conv output side; 1 for fc */
    int final_ch, final_h; /* after pooling (= out_* when no pool) */
    size_t w_count, b_count; /* per tower: w is (out_ch, sources * in_ch * k * k) */
    size_t w_off, b_off;     /* offsets in the tower's parameter arena */
    double macs;             /* multiply-adds per image for this tower's layer */
} tower_layer_shape;

typedef struct {
    tower_config cfg;
    tower_layer_shape layer[TOWER_LAYERS];
    size_t n_params;          /* per tower */
    int vt;                   /* fc8 outputs per tower */
} tower_plan;

/* Fills plan from cfg. Returns 0, or -1 with a message in err when cfg is unusable
 * (classes not divisible by towers, input too small for the net, ...). */
int tower_plan_make(tower_plan *plan, const tower_config *cfg, char *err, size_t errlen);

/* Writes into buf (n bytes) how the CPU convolutions of plan run (layers_cpu.c): the
 * images one GEMM chunk holds at each conv layer. */
void tower_conv_describe(char *buf, size_t n, const tower_plan *plan);

/* ---- one tower ------------------------------------------------------------------- */

/* Activation buffers of one layer (B = batch). Pointers into the tower's arena. */
typedef struct {
    real *in;        /* this layer's input: own previous output, the image, or the
                        gathered buffer (sources, B, in_ch, in_h, in_h) */
    real *din;       /* gradient of `in` (same shape); for reads_both layers the
                        trainer reduce-scatters it into the sources' dout */
    real *act;       /* (B, out_ch, out_h, out_h): conv/fc output, ReLU applied in place */
    real *dact;
    real *lrn, *lrn_scale, *dlrn; /* (B, out_ch, out_h, out_h) when lrn */
    real *pool, *dpool;           /* (B, out_ch, final_h, final_h) when pool */
    int32_t *pool_idx;
    real *out;       /* the layer's final output (act, lrn, pool, or dropout result).
                        When the next layer reads_both this is slot `index` of the next
                        layer's gathered `in`. */
    real *dout;      /* gradient of out */
} tower_acts;

typedef struct tower {
    tower_plan plan;
    int index;        /* which tower: 0 or 1 */
    int device;       /* -1: CPU; >= 0: CUDA device (see tower_cuda.h) */
    real *params;     /* (n_params) one arena: [w conv1][b conv1]...[w fc8][b fc8] */
    real *grads;      /* (n_params) */
    real *momentum;   /* (n_params) */
    real *w[TOWER_LAYERS], *b[TOWER_LAYERS];   /* views into params */
    real *dw[TOWER_LAYERS], *db[TOWER_LAYERS]; /* views into grads */
    real *x;          /* (B, in_ch, in_size, in_size) the image batch, = acts[0].in */
    tower_acts acts[TOWER_LAYERS];
    real *logits;     /* (towers, B, vt): fc8's gathered output; acts[7].out is slot index */
    real *probs;      /* (towers, B, vt) */
    real *losses;     /* (B) */
    int32_t *labels;  /* (B) */
    real *col;        /* im2col scratch, the largest any layer needs */
    void *arena;      /* the one allocation behind everything above */
    size_t arena_bytes;
    uint64_t dropout_key; /* set by the trainer each step: tower_step_key() */
    void *gpu;        /* CUDA-side context (tower_cuda.h), NULL on the CPU */
} tower;

/* Allocates one CPU tower (one arena) and initialises its parameters with the paper's
 * init from `seed` (weights N(0, 0.01), biases 0 or 1 per the table). The same seed
 * gives the same weights on every backend. Returns 0 or -1 with err. */
int tower_init(tower *t, const tower_plan *plan, int index, uint64_t seed, char *err,
               size_t errlen);
void tower_free(tower *t);

/* Writes the paper's init of tower `index` into params (n_params reals). */
void tower_init_params(real *params, const tower_plan *plan, int index, uint64_t seed);

/* Key for one step's dropout masks: a pure function of (seed, step, tower, layer). */
uint64_t tower_step_key(uint64_t seed, int64_t step, int tower_index);
uint64_t tower_layer_key(uint64_t step_key, int layer);

/* Layer l of this tower, forward: reads acts[l].in (already gathered by the trainer
 * when the layer reads_both), writes acts[l].out. train=0 for evaluation (dropout
 * scales by 1-p). */
void tower_forward_layer(tower *t, int l, int train);
/* Softmax cross-entropy over t->logits (gathered by the trainer) and t->labels;
 * fills probs and losses. Returns the mean loss (computed on the host). */
double tower_loss_forward(tower *t);
/* dlogits of this tower's slot into acts[7].dout. */
void tower_loss_backward(tower *t);
/* Layer l backward: reads acts[l].dout, writes acts[l].din (for reads_both layers the
 * gradient for every source slot) and accumulates dw, db. l=0 computes no din. */
void tower_backward_layer(tower *t, int l);
void tower_zero_grads(tower *t);
/* Lays every buffer of the tower out from base (host or device memory) and returns the
 * bytes needed; base NULL only measures. Shared by the CPU and CUDA towers so both
 * have the same arena. */
size_t tower_carve(tower *t, char *base);
void tower_sgd(tower *t, real lr, real momentum, real wd);

#ifdef __cplusplus
}
#endif

/* The CUDA twins (tower_X_cuda), present when the CUDA backend is built. */
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64) && __has_include("tower/tower_cuda.h")
#include "tower/tower_cuda.h"
#endif
#endif
