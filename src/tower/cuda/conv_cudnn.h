/* conv_cudnn.h: the cuDNN convolution path of a GPU tower (`--conv cudnn`), internal to
 * src/tower/cuda. One context per tower: descriptors and a chosen algorithm for every conv
 * layer and pass, one workspace. The other path is the chunked im2col + GEMM of
 * layers_cuda.cu (fp32's default; tf32's and bf16's is this one where it has algorithms);
 * selected per conv row with tower_cuda_configure_paths. Built only when meson
 * finds cuDNN (TT_HAVE_CUDNN); otherwise tower_cudnn_create says so. */
#ifndef TOWER_CUDA_CONV_CUDNN_H
#define TOWER_CUDA_CONV_CUDNN_H

#include <stddef.h>
#include <stdint.h>

#include "tower/tower.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tower_cudnn tower_cudnn;

/* 1 when this build has the cuDNN path. */
int tower_cudnn_available(void);

/* Descriptors for the conv layers of plan at its batch (every one with path NULL, else
 * those whose path[l] is TOWER_CONV_CUDNN), algorithms chosen by cuDNN's heuristics among
 * the deterministic ones (so a run repeats bit for bit) that need at most
 * TOWER_CUDNN_WORKSPACE_LIMIT bytes. precision (TOWER_PRECISION_*): FP32 without tensor
 * cores; TF32 allows them (as PyTorch's allow_tf32); BF16 makes every tensor cuDNN sees
 * bf16 (fp32 sums inside its calls) and adds the bf16 buffers the _bf16 calls below use.
 * cublas: the tower's cublasHandle_t, bound to stream (bf16's bias gradient is two cuBLAS
 * calls); stream: the tower's cudaStream_t; the caller has made the tower's device
 * current. dropped NULL: a layer cuDNN cannot take (no algorithm) fails the whole call;
 * else such a layer is left out (tower_cudnn_has says which are in) and named, with why,
 * in dropped ("" when none was): what `--conv auto`'s timing wants. NULL with err on
 * failure, or when no layer is left. */
tower_cudnn *tower_cudnn_create(const tower_plan *plan, int precision, void *cublas,
                                void *stream, const int *path, char *dropped,
                                size_t droppedlen, char *err, size_t errlen);
/* 1 when conv layer l is described in c (c may be NULL). */
int tower_cudnn_has(const tower_cudnn *c, int l);
void tower_cudnn_free(tower_cudnn *c);
/* Device bytes it holds (workspace, the packed weight block, bf16's buffers). */
size_t tower_cudnn_bytes(const tower_cudnn *c);
/* What it chose, one line per layer and pass, for the start-up report and bench. */
void tower_cudnn_describe(const tower_cudnn *c, char *buf, size_t n);

/* The twins of tower_conv_forward_cuda / tower_conv_backward_cuda for conv layer l
 * (shapes from the plan; in/out/din are one source slot; w is the source's column block of
 * the layer's weight, leading dimension ldw). Same semantics: out = conv (+ b)
 * (accumulate 0) or out += conv (+ b); dw and db += (accumulate_dw) or = ; din = or += . */
void tower_cudnn_forward(tower_cudnn *c, int l, float *out, const float *in, const float *w,
                         const float *b, int ldw, int accumulate);
void tower_cudnn_backward(tower_cudnn *c, int l, float *din, float *dw, float *db,
                          const float *dout, const float *in, const float *w, int ldw,
                          int accumulate_din, int accumulate_dw);

/* The same in bf16 (a context made with TOWER_PRECISION_BF16): w is source src's column
 * block of the tower's bf16 weight copy (leading dimension ldw), in, out, dout and din
 * fp32 as above. The forward casts in to bf16 into the context's copy of layer l's input
 * src, which the backward's weight gradient reads again (the backward always follows the
 * forward of the same input, as the weights' copy does), convolves into a bf16 y, and
 * writes out = y (+ out when accumulate) (+ b), ReLU'd when relu (the last source). The
 * backward rounds the output gradient to bf16 once per layer (at src 0), with the ReLU's
 * mask when act_out is its output; then db += (or =) its sums (a bf16 GEMM of one column over
 * each image's planes, then an fp32 GEMV over the images), dw's block += (or =) cuDNN's bf16
 * weight gradient, din = or += cuDNN's bf16 input gradient. keep: NULL, or (at the last
 * source, with relu) where the row keeps its ReLU'd output in bf16 only: the forward then
 * writes bf16(relu(...)) there and not into out (which it still reads as the sum so far);
 * act16: NULL, or that kept output, the backward's ReLU mask in place of act_out. in:
 * NULL for a one-source layer whose input copy the row before wrote
 * (tower_cudnn_input_copy). */
void tower_cudnn_forward_bf16(tower_cudnn *c, int l, int src, float *out, const float *in,
                              const uint16_t *w, const float *b, int ldw, int accumulate,
                              int relu, uint16_t *keep);
void tower_cudnn_backward_bf16(tower_cudnn *c, int l, int src, float *din, float *dw, float *db,
                               const float *dout, const float *act_out, const uint16_t *act16,
                               const uint16_t *w, int ldw, int accumulate_din,
                               int accumulate_dw);

/* bf16: where conv layer l's backward reads its bf16 output gradient (NULL unless c is a
 * bf16 context and l a conv layer). A pass right before the backward (the row's fused
 * LRN + max-pool backward) may write the gradient there, masked by the ReLU and rounded
 * as the backward would make it, and say so with tower_cudnn_grad_given: the backward
 * of layer l then makes none. Any forward forgets it (the buffer is the forward's y). */
uint16_t *tower_cudnn_grad_buffer(tower_cudnn *c, int l);
void tower_cudnn_grad_given(tower_cudnn *c, int l);

/* bf16: conv layer l's copy of its input in bf16 (NULL unless c is a bf16 context and l a
 * conv layer of one source): what the forward convolves and the weight gradient reads (its
 * own, or the one tower_cudnn_share_input put in its place). The row before may write it
 * itself (its kept bf16 activation or pooled output, net_cuda.cu), or for row 0 whoever
 * writes the image; the forward of l is then given in = NULL and casts nothing. */
uint16_t *tower_cudnn_input_copy(tower_cudnn *c, int l);
/* bf16, a one-source conv layer l: its passes read the input copy at `from` (another
 * context's tower_cudnn_input_copy, which that context's writer fills, ordered before this
 * context's reads by the caller) instead of their own; NULL: their own again, which
 * tower_cudnn_input_copy then returns. The forward must then be given in = NULL. 0, or -1
 * where l has no input copy. */
int tower_cudnn_share_input(tower_cudnn *c, int l, uint16_t *from);

/* dst (n fp32, n < 2^31) = src (bf16) widened, exactly, on the context's stream: a kept bf16
 * activation read back as fp32 (add_bf16_kernel, as for the input gradients). */
void tower_cudnn_widen(tower_cudnn *c, float *dst, const uint16_t *src, size_t n);

/* The largest workspace the heuristics may report for an algorithm that is chosen; the
 * size cuDNN then asks for under the math mode set for it is allocated as it is. */
#define TOWER_CUDNN_WORKSPACE_LIMIT ((size_t)512 << 20)

#ifdef __cplusplus
}
#endif
#endif
