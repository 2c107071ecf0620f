/* tower_cuda: the CUDA twins of the layers and of the per-tower network (src/tower/cuda/).
 * Included by tower.h when the build has CUDA (TT_HAVE_CUDA). Plain C: no CUDA header is
 * needed to include it, so a cudaStream_t and a cublasHandle_t travel as void *.
 *
 * Every `tower_X_cuda` takes the arguments of the CPU `tower_X` (device pointers, fp32),
 * then, for the GEMM layers (conv, fc), the tower's cuBLAS handle, then the stream. They
 * enqueue work on `stream` and return at once; the caller makes the stream's device the
 * current one (the tower-level functions below do this from t->device). These functions
 * are void like their CPU twins: a failed launch or library call is recorded in the
 * calling thread's fault slot (tower.h, "faults": the call, file, line and reason) and the
 * function returns early; while the fault is pending, every later checked call on that
 * thread returns without being made. The caller takes the slot (tower_fault_take) and
 * fails the step; a sticky error means the device's context is lost. */
#ifndef TOWER_CUDA_H
#define TOWER_CUDA_H

#include <stddef.h>
#include <stdint.h>

/* tower.h includes this header at its end, after `tower` and `tower_plan` are declared;
 * including tower.h here as well makes this header usable on its own. */
#include "tower/tower.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cuBLAS workspace each tower hands to its handle at init (cublasSetWorkspace), so the
 * library allocates nothing during a step. 32 MiB is what cuBLAS asks for on Hopper. */
#define TOWER_CUDA_WORKSPACE_BYTES ((size_t)32 << 20)

/* ---- devices -------------------------------------------------------------------- */

/* Number of CUDA devices (>= 0), or -1 with the runtime's reason in err when there is no
 * usable driver or runtime (cudaGetDeviceCount failed). */
int tower_cuda_device_count(char *err, size_t errlen);

/* Device memory of `device`: name (up to namelen bytes), free and total bytes. 0 or -1. */
int tower_cuda_device_info(int device, char *name, size_t namelen, size_t *free_bytes,
                           size_t *total_bytes, char *err, size_t errlen);

/* ---- layers (layers_cuda.cu); shapes and semantics as in tower.h ------------------- */

/* Images a GPU tower convolves per GEMM (a chunk): im2col of the chunk, one SGEMM, a
 * transposing pass. 128 images, a whole batch of the paper's, make each conv pass one
 * launch of each kernel (conv1: a 48 x 387,200 x 363 GEMM) at about 610 MiB of fp32
 * scratch per tower; see paper_notes.md. */
#define TOWER_CUDA_CONV_IMAGES 128

/* Floats of device scratch one conv call needs with chunks of `images` images:
 * images * (Ci*K*K + Co) * Ho*Wo (the chunk's col matrix and its (Co, images*HWo) product
 * or output gradient). */
size_t tower_conv_cuda_scratch_size(int Ci, int H, int W, int Co, int K, int stride, int pad,
                                    int images);

/* scratch: tower_conv_cuda_scratch_size(..., images) floats, images >= 1. The batch is
 * convolved `images` images at a time: im2col of the chunk, one SGEMM, a transposing
 * pass (forward, with the bias) or a transposing pass then one SGEMM for dw and one for
 * din (backward). */
void tower_conv_forward_cuda(float *out, const float *in, const float *w, const float *b,
                             int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                             int ldw, int accumulate, float *scratch, int images, void *cublas,
                             void *stream);
/* accumulate_dw 1: dw += and db += (the CPU twin's semantics); 0: dw = and db = (the first
 * write of a step's gradient, which then needs no zeroing before it: the GPU tower's
 * default, tower_cuda_set_grad_zeroing). The same in every backward below. */
void tower_conv_backward_cuda(float *din, float *dw, float *db, const float *dout,
                              const float *in, const float *w, int B, int Ci, int H, int W,
                              int Co, int K, int stride, int pad, int ldw, int accumulate_din,
                              int accumulate_dw, float *scratch, int images, void *cublas,
                              void *stream);

/* The fused forms the GPU tower uses for conv + ReLU (no CPU twin: the CPU runs the ReLU
 * as its own pass): forward as tower_conv_forward_cuda, then ReLU on out (call it for the
 * last source only); backward as tower_conv_backward_cuda on dout masked by act > 0 (act:
 * the ReLU's output, (B, Co, Ho, Wo)), the mask folded into the transposing pass, so
 * dout itself is left as it was. */
void tower_conv_relu_forward_cuda(float *out, const float *in, const float *w, const float *b,
                                  int B, int Ci, int H, int W, int Co, int K, int stride,
                                  int pad, int ldw, int accumulate, float *scratch, int images,
                                  void *cublas, void *stream);
void tower_conv_relu_backward_cuda(float *din, float *dw, float *db, const float *dout,
                                   const float *act, const float *in, const float *w, int B,
                                   int Ci, int H, int W, int Co, int K, int stride, int pad,
                                   int ldw, int accumulate_din, int accumulate_dw,
                                   float *scratch, int images, void *cublas, void *stream);

void tower_fc_forward_cuda(float *out, const float *in, const float *w, const float *b, int B,
                           int Cin, int Cout, int ldw, int accumulate, void *cublas,
                           void *stream);
void tower_fc_backward_cuda(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, int B, int Cin, int Cout, int ldw,
                            int accumulate_din, int accumulate_dw, void *cublas, void *stream);

/* ---- bf16 GEMM operands (--precision bf16; no CPU twins) ---------------------------
 * bf16 values travel as uint16_t (kernels.h, tower_k_bf16: round to nearest even). The
 * conv and fc layers below are their fp32 twins with every GEMM's operands in bf16 and
 * fp32 sums (cublasGemmEx, CUDA_R_16BF A and B, CUDA_R_32F C, CUBLAS_COMPUTE_32F); their
 * inputs, outputs and gradients stay fp32. w: the bf16 copy of the fp32 master weights
 * (tower_cast_bf16_cuda), with the master's layout and ldw. scratch (conv): scratch_bytes
 * bytes of device memory, at least tower_conv_cuda_scratch_bytes_bf16 (less stops the
 * process: a caller's error). */

/* dst (n) = src rounded to bf16, on stream: the weights' copy, the fc GEMMs' operands */
void tower_cast_bf16_cuda(uint16_t *dst, const float *src, size_t n, void *stream);
/* Bytes of scratch a bf16 conv call needs with chunks of `images` images: the chunk's bf16
 * col (fp32 when din is wanted, din = 1: the input gradient's GEMM writes its fp32 col over
 * it), its fp32 product or bf16 output gradient, and bf16 ones. */
size_t tower_conv_cuda_scratch_bytes_bf16(int Ci, int H, int W, int Co, int K, int stride,
                                          int pad, int images, int din);
/* relu: the fused ReLU of tower_conv_relu_forward_cuda; act: the ReLU's output as in
 * tower_conv_relu_backward_cuda, or NULL for no activation. */
void tower_conv_forward_bf16_cuda(float *out, const float *in, const uint16_t *w,
                                  const float *b, int B, int Ci, int H, int W, int Co, int K,
                                  int stride, int pad, int ldw, int accumulate, int relu,
                                  void *scratch, size_t scratch_bytes, int images,
                                  void *cublas, void *stream);
void tower_conv_backward_bf16_cuda(float *din, float *dw, float *db, const float *dout,
                                   const float *act, const float *in, const uint16_t *w, int B,
                                   int Ci, int H, int W, int Co, int K, int stride, int pad,
                                   int ldw, int accumulate_din, int accumulate_dw,
                                   void *scratch, size_t scratch_bytes, int images,
                                   void *cublas, void *stream);
/* fc: the operands in buffers the caller keeps between the passes. xb (B, Cin) bf16: the
 * input, which the forward casts `in` into (in NULL: xb holds it already), and which the
 * backward's weight gradient reads again (a backward follows the forward of the same
 * input). gb (B, Cout) bf16: the output gradient, which the backward casts dout into when
 * cast_dout (a layer's first source), and reads as it is otherwise (every source's call of
 * one layer has the same dout). db comes from the fp32 dout. */
void tower_fc_forward_bf16_cuda(float *out, const float *in, uint16_t *xb, const uint16_t *w,
                                const float *b, int B, int Cin, int Cout, int ldw,
                                int accumulate, void *cublas, void *stream);
void tower_fc_backward_bf16_cuda(float *din, float *dw, float *db, const float *dout,
                                 uint16_t *gb, int cast_dout, const uint16_t *xb,
                                 const uint16_t *w, int B, int Cin, int Cout, int ldw,
                                 int accumulate_din, int accumulate_dw, void *cublas,
                                 void *stream);

void tower_relu_forward_cuda(float *out, const float *in, size_t n, void *stream);
void tower_relu_backward_cuda(float *din, const float *dout, const float *out, size_t n,
                              void *stream);
void tower_tanh_forward_cuda(float *out, const float *in, size_t n, void *stream);
void tower_tanh_backward_cuda(float *din, const float *dout, const float *out, size_t n,
                              void *stream);

void tower_lrn_forward_cuda(float *out, float *scale, const float *in, int B, int C, int HW,
                            int n, float k, float alpha, float beta, void *stream);
void tower_lrn_backward_cuda(float *din, const float *dout, const float *in, const float *out,
                             const float *scale, int B, int C, int HW, int n, float k,
                             float alpha, float beta, void *stream);

void tower_maxpool_forward_cuda(float *out, int32_t *idx, const float *in, int B, int C, int H,
                                int W, int K, int S, void *stream);
void tower_maxpool_backward_cuda(float *din, const float *dout, const int32_t *idx, int B,
                                 int C, int H, int W, int K, int S, void *stream);

/* LRN then max-pool as one kernel each way (no CPU twin: the CPU runs tower_lrn_* and
 * tower_maxpool_* in turn). in: the LRN's input (B, C, H, W); out, idx: the pooled output
 * and argmax, as tower_maxpool_forward's of the LRN's output; pw (B, C, H, W): kept for
 * backward, s^-beta with s the scale tower_lrn_forward stores (the LRN's output itself is
 * not stored). Backward: din (B, C, H, W) from dout (B, C, Ho, Wo), idx, in and pw. The
 * results are bit for bit those of the unfused CUDA kernels. Only for shapes where
 * tower_lrn_maxpool_cuda_fits is 1 (a band of pooled rows and a tile of channels fit in a
 * block's shared memory, 32-bit indices); others stop the process. */
int tower_lrn_maxpool_cuda_fits(int B, int C, int H, int W, int n, int K, int S);
/* in16: NULL, or the input in bf16 (a kept activation, net_cuda.cu), read instead of in.
 * out16: NULL, or (B, C, Ho, Wo) bf16 that also receives out, rounded (the next conv's bf16
 * input copy, net_cuda.cu). */
void tower_lrn_maxpool_forward_cuda(float *out, uint16_t *out16, int32_t *idx, float *pw,
                                    const float *in, const uint16_t *in16, int B, int C, int H,
                                    int W, int n, float k, float alpha, float beta, int K,
                                    int S, void *stream);
/* gb: NULL, or (B, C, H, W) bf16 that also receives din through the ReLU's mask (in is
 * the ReLU's output), rounded: the output gradient a conv on cuDNN's bf16 path reads; din
 * may then be NULL (not written). in16 as forward's. */
void tower_lrn_maxpool_backward_cuda(float *din, uint16_t *gb, const float *dout,
                                     const int32_t *idx, const float *in, const uint16_t *in16,
                                     const float *pw, int B, int C, int H, int W, int n, float k,
                                     float alpha, float beta, int K, int S, void *stream);

void tower_dropout_forward_cuda(float *out, const float *in, size_t n, float p, uint64_t key,
                                int train, void *stream);
void tower_dropout_backward_cuda(float *din, const float *dout, size_t n, float p,
                                 uint64_t key, void *stream);
void tower_dropout_inverted_forward_cuda(float *out, const float *in, size_t n, float p,
                                         uint64_t key, int train, void *stream);
void tower_dropout_inverted_backward_cuda(float *din, const float *dout, size_t n, float p,
                                          uint64_t key, void *stream);

/* A label outside [0, T*Vt) gives a NaN loss for that sample (the device cannot return
 * an error); the trainer checks every batch's labels against the classes before it
 * hands them to the model (trainer.c). */
void tower_softmax_xent_forward_cuda(float *losses, float *probs, const float *logits,
                                     const int32_t *labels, int B, int T, int Vt,
                                     void *stream);
void tower_softmax_xent_backward_cuda(float *dlogits, const float *probs,
                                      const int32_t *labels, int B, int T, int Vt, int slot,
                                      void *stream);

void tower_sgd_update_cuda(float *w, float *v, const float *g, size_t n, float lr,
                           float momentum, float wd, void *stream);
/* tower_sgd_update_cuda over a tower's whole arena in one launch: weight decay on the
 * weights, none on the biases (plan's b_off/b_count), as tower_sgd. Bit-identical to the
 * per-tensor calls. */
void tower_sgd_arena_cuda(float *params, float *mom, const float *grads,
                          const tower_plan *plan, float lr, float momentum, float wd,
                          void *stream);
void tower_adam_update_cuda(float *w, float *m, float *v, const float *g, size_t n,
                            float step_size, float beta1, float beta2, float eps,
                            float bc2_sqrt, float wd, void *stream);
/* tower_adam_update_cuda over the whole arena in one launch, no weight decay on the
 * biases, as the CPU tower's update. */
void tower_adam_arena_cuda(float *params, float *m, float *v, const float *grads,
                           const tower_plan *plan, float step_size, float beta1, float beta2,
                           float eps, float bc2_sqrt, float wd, void *stream);

/* The per-step scalars in device memory (kernels.h's tower_k_step), which a captured step
 * (a CUDA graph) reads at every replay: */
typedef struct tower_k_step tower_k_step;
/* Dropout with the row's key read from *key (device memory): the mask and outputs of
 * tower_dropout_forward_cuda (inverted 0) or tower_dropout_inverted_forward_cuda (1) with
 * that key, bit for bit. */
void tower_dropout_step_forward_cuda(float *out, const float *in, size_t n, float p,
                                     int inverted, const uint64_t *key, int train,
                                     void *stream);
void tower_dropout_step_backward_cuda(float *din, const float *dout, size_t n, float p,
                                      int inverted, const uint64_t *key, void *stream);
/* tower_sgd_arena_cuda (adam 0: m the momentum, v unused) or tower_adam_arena_cuda (adam
 * 1) with their scalars read from *s, bit for bit; nothing at all when s->skip_nonfinite
 * and *loss (the tower's mean loss on the device) is not finite. wb: NULL, or (n_params)
 * the weights' bf16 copy, written with the new weights (tower_k_cast_bf16 of each), and
 * then *wb_current = 1 (device memory). */
void tower_update_arena_step_cuda(float *params, float *m, float *v, const float *grads,
                                  const tower_plan *plan, int adam, const tower_k_step *s,
                                  const double *loss, uint16_t *wb, int *wb_current,
                                  void *stream);
/* dst (n) = src rounded to bf16, as tower_cast_bf16_cuda, unless *current (device memory)
 * is non-zero: then nothing (the update wrote dst already). */
void tower_cast_weights_bf16_cuda(uint16_t *dst, const float *src, size_t n,
                                  const int *current, void *stream);
/* *out = the mean of losses (B) as the CPU tower computes it (kernels.h's
 * tower_k_loss_mean: double, sample order), on the device. */
void tower_loss_mean_cuda(double *out, const float *losses, int B, void *stream);

/* ---- one tower on a GPU (net_cuda.cu) -------------------------------------------------
 * A GPU tower runs net.c's layer loop like a CPU tower: tower_init_cuda points t->ops at
 * the CUDA table (the twins above on the tower's stream, cuBLAS handle and conv path), so
 * tower_forward_layer & co. need nothing CUDA-specific. */

/* tower_init_params on the host, then one cudaMalloc for the whole arena (tower_carve
 * lays it out exactly as on the CPU) and an upload; creates the tower's stream and cuBLAS
 * handle (t->gpu) and sets t->ops. 0, or -1 with err (out of memory: how much was asked,
 * how much free). tower_free releases it all. */
int tower_init_cuda(tower *t, const tower_plan *plan, int index, int device, uint64_t seed,
                    char *err, size_t errlen);
/* precision (tower.h's TOWER_PRECISION_*): FP32, plain fp32 GEMMs (what tower_init_cuda
 * sets); TF32, the GEMMs on TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH), and cuDNN may
 * use them too; BF16, every GEMM with bf16 operands and fp32 sums (the _bf16 layers above),
 * the weights read from a bf16 copy the tower makes of its fp32 master weights at the
 * start of every forward pass, and cuDNN's convolutions on bf16 tensors (conv_cudnn.h's
 * _bf16 calls). conv:
 * TOWER_CONV_GEMM or TOWER_CONV_CUDNN (descriptors and algorithms chosen now; the GEMM
 * path's scratch is freed meanwhile). At start-up, between steps. 0, or -1 with err (e.g.
 * no cuDNN in this build, or no deterministic algorithm). */
int tower_cuda_configure(tower *t, int precision, int conv, char *err, size_t errlen);
/* tower_cuda_configure with a path per row: path[l] (TOWER_CONV_GEMM or TOWER_CONV_CUDNN)
 * for every conv row l < plan.n_layers, other rows ignored. A cuDNN context is made when
 * any layer is on cuDNN, the GEMM path's scratch kept when any is on GEMM; in bf16 the fc
 * layers' bf16 operands (their own buffers, made again at every call). Not while another
 * tower shares this one's input copy (tower_cuda_share_input): the copy is freed here. */
int tower_cuda_configure_paths(tower *t, int precision, const int *path, char *err,
                               size_t errlen);
/* Row l's convolution path now (TOWER_CONV_GEMM for a row that is not a conv). */
int tower_cuda_conv_path(const tower *t, int l);
/* `--conv auto`'s measurement on t's device, of a tower with every conv row on GEMM (as
 * tower_init_cuda or a configuration on GEMM leaves it; otherwise -1 with err), at its
 * batch and its precision (in BF16 the weights' bf16 copy is made first, and each row is
 * timed with the others on GEMM, so without a hand-over from or to a neighbour): for
 * every conv row,
 * each path's forward and backward (tower_forward_weighted / tower_backward_weighted, so
 * with the activation as a step runs it) `warmup` times untimed, then `reps` times each
 * way between CUDA events on t's stream; timing[l] gets the mean milliseconds per call,
 * -1 where a path was not measured (no cuDNN in the build, or cuDNN found no algorithm:
 * why, in note). Afterwards t's paths are as before and its arena as tower_init_cuda
 * left it (all zero but the parameters), so call it before any step. 0, or -1 with err. */
int tower_cuda_conv_measure(tower *t, int warmup, int reps, tower_conv_timing *timing,
                            char *note, size_t notelen, char *err, size_t errlen);
/* The paths of the CLI's default in tf32 and bf16 (model.h's MODEL_CONV_PREFER_CUDNN),
 * found on t's device at `precision`: path[l] TOWER_CONV_CUDNN for every conv row cuDNN has
 * an algorithm for (tower_cudnn_create's lenient call, its context freed again), else
 * TOWER_CONV_GEMM. The rows left on GEMM are named in note with cuDNN's reason ("" when
 * none is); when cuDNN takes no row at all (a build without it, no algorithm anywhere, or
 * cuDNN failing to start), every row is on GEMM and note says why. t's own paths are not
 * changed. 0, or -1 with err when the device itself fails (cudaSetDevice, the stream). */
int tower_cuda_cudnn_rows(tower *t, int precision, int *path, char *note, size_t notelen,
                          char *err, size_t errlen);
/* One line: the tower's convolution path (and cuDNN's algorithms). */
void tower_cuda_describe_conv(const tower *t, char *buf, size_t n);
/* 1 when this build has the cuDNN convolution path. */
int tower_cuda_have_cudnn(void);
/* The tower's cudaStream_t: what comm and the trainer order their work on. */
void *tower_cuda_stream(tower *t);
/* Enqueues on stream (a cudaStream_t of t's device; NULL: t's own) one single-thread
 * kernel that busy-waits `us` microseconds by the device's global timer, so that
 * everything enqueued after it on that stream starts that much later while other streams
 * run on. A debug aid for the ordering tests (model.h's debug_delay_us: t's stream and the
 * input's copy stream); never part of a normal step. */
void tower_cuda_spin(tower *t, void *stream, unsigned us);
/* on 1: tower_zero_grads clears t's gradients and its backward adds to them, as a CPU
 * tower's does; on 0 (the default): tower_zero_grads does nothing and the backward writes
 * every gradient with beta 0, which is the same step (each gradient is written once a
 * step: one source block of dw per call, db at source 0) without the memset and without
 * the GEMMs reading dw back. A test hook (model_placement.test_grad_zeroing) and a
 * fallback; the layer functions' accumulate_dw is what it sets. */
void tower_cuda_set_grad_zeroing(tower *t, int on);
/* on 1 (the default): where a row's conv runs on cuDNN's bf16 path with the LRN and max-pool
 * fused after it, their backward also writes the conv's bf16 output gradient and the conv
 * makes none (the same bits); 0: the conv makes it. A test hook
 * (model_placement.test_no_lrn_handover). */
void tower_cuda_set_lrn_handover(tower *t, int on);
/* on 1 (the default): where a row's conv runs on cuDNN's bf16 path with its ReLU fused and
 * its output is the input of the next row, a one-source conv on that path (the paper's
 * conv3 and conv4), the row's output pass writes the next conv's bf16 input copy instead of
 * its fp32 act, the next conv casts none and the row's backward masks by it: the same bits
 * (the cast it replaces rounds the same value), unless an output is a positive value under
 * 2^-134 or less, which bf16 rounds to 0 and the mask then takes as 0. Likewise where a
 * row's LRN and max-pool are fused after such a conv and its pooled output is the next
 * one-source conv's input (the paper's conv1 into conv2): the fused forward writes that
 * output in bf16 into the next conv's input copy as well as in fp32, and the next conv
 * casts none (the same bits, always). 0: the fp32 act and the casts. A test hook
 * (model_placement.test_no_input_handover). */
void tower_cuda_set_input_handover(tower *t, int on);
/* Row 0's bf16 input copy (the paper's conv1 on cuDNN's bf16 path: (B, in_ch, in_size,
 * in_size)), for whoever writes x to write it as well, rounded, where
 * tower_cuda_set_input_given promised so; NULL where it did not, where row 0 reads no such
 * copy, or where it reads another tower's (tower_cuda_share_input). */
uint16_t *tower_cuda_input_copy(const tower *t);
/* on 1: every write of x writes row 0's bf16 input copy too (the model's model_set_batch and
 * model_set_batch_u8: the same bits as the cast it replaces), so row 0's forward casts none;
 * 0, the default (a caller driving the tower itself): row 0 casts x. */
void tower_cuda_set_input_given(tower *t, int on);
/* Both towers on one GPU reading one x (the model's shared input): t's row 0 reads from's
 * bf16 input copy (which whoever writes from's x writes) instead of its own, also across a
 * new configuration of t (not of from: call it again then); from NULL: its own again. Only
 * where t was given its input (tower_cuda_set_input_given; else its row 0 casts the shared
 * x itself, and nothing is shared). 0 (also where neither tower's row 0 reads a bf16 copy:
 * nothing to share), or -1 where only one of them does (nothing is then shared). */
int tower_cuda_share_input(tower *t, const tower *from);
/* on 1: in bf16, a row whose conv runs on cuDNN with its ReLU fused and the LRN and
 * max-pool fused after it keeps the ReLU's output in bf16 only (its fp32 act is not
 * written): the conv's output pass writes it, the fused LRN + max-pool reads it both ways,
 * and the conv's backward masks by it. 0 (the default): the fp32 act, as every other row.
 * model_placement.bf16_acts (--bf16-acts) sets it, before or after the configuration (the
 * buffers follow both: 2 bytes an element of those rows' activations). 0, or -1 with err
 * (the buffers could not be allocated: then off). */
int tower_cuda_set_bf16_acts(tower *t, int on, char *err, size_t errlen);
/* 1 while the weights' bf16 copy is marked as the last update wrote it (the next forward
 * casts nothing), 0 once anything else wrote the parameters; -1 on a fault. Waits for the
 * tower's stream. For tests. */
int tower_cuda_bf16_weights_current(tower *t);
/* The rows whose activation --bf16-acts keeps in bf16 now (bit l for row l; 0 while it is
 * off, and where no row qualifies: none on cuDNN with the LRN and max-pool fused). */
int tower_cuda_bf16_acts_rows(const tower *t);
/* The conv rows whose forward casts no input, its bf16 copy written before it (bit l for row
 * l): by the row before (tower_cuda_set_input_handover) or, for row 0, with x
 * (tower_cuda_set_input_given). For tests. */
int tower_cuda_input_given_rows(const tower *t);
/* Makes t->acts[l].act hold row l's activation in fp32: where the row keeps it in bf16
 * only (tower_cuda_set_bf16_acts), widens the kept one into it (on the tower's stream);
 * otherwise nothing. For readers of the activations (model_get_activations). 0, or -1 (a
 * fault, cuda_check.h). */
int tower_cuda_acts_fp32(tower *t, int l);
/* kind 0: host -> device, 1: device -> host, 2: device -> device. Synchronous with
 * respect to the tower's stream (enqueued on it, then the stream is synchronised).
 * 0, or -1 after printing the failed call and its reason on stderr. */
int tower_cuda_copy(tower *t, void *dst, const void *src, size_t bytes, int kind);

/* ---- the step's scalars and its loss, without a host wait inside the step ------------
 * A GPU tower's ops read what changes per step (dropout keys, the update's scalars) from
 * a tower_k_step in device memory, and leave the mean loss in device memory, so that a
 * step holds no host synchronisation and can be captured as a CUDA graph (model.c). */
/* Stages every row's dropout key, tower_layer_key(dropout_key, l), for the following
 * forward and backward: when they differ from those staged last, the struct is copied to
 * the device on t's stream (from one of four pinned buffers, each reused only after an
 * event shows its last copy done). Never while t's stream is being captured (the ops
 * record a fault if they find their scalars unstaged then). 0, or -1 (the fault slot). */
int tower_cuda_stage_keys(tower *t, uint64_t dropout_key);
/* Stages the update's scalars for update number t_update at lr (as tower_update would
 * compute them) and skip_nonfinite (1: the next update does nothing when the tower's mean
 * loss is not finite). As tower_cuda_stage_keys. */
int tower_cuda_stage_update(tower *t, const tower_optim *o, float lr, int64_t t_update,
                            int skip_nonfinite);
/* The mean loss of the tower's last loss forward (tower_loss_forward leaves it on the
 * device: the CUDA op returns NaN): _post enqueues its copy into the next of two pinned
 * slots on t's stream and records the slot's event, returning the slot (0 or 1); _take
 * waits for that event and reads the slot. A slot is posted again only after it was
 * taken (model.c keeps at most two in flight). -1 on failure (the fault slot: a fault in
 * any kernel of the step surfaces at _take). */
int tower_cuda_loss_post(tower *t);
int tower_cuda_loss_take(tower *t, int slot, double *loss);
/* 1 when `cuda_error` (a cudaError_t) is a sticky error: the device's context is lost
 * and every later call on it fails (cuda_check.h's list). */
int tower_cuda_error_sticky(int cuda_error);
/* Device bytes this tower holds: its arena, the conv chunk scratch, the cuBLAS workspace,
 * cuDNN's context and, in bf16, its weights' bf16 copy, the fc layers' bf16 operands and
 * the kept bf16 activations. */
size_t tower_cuda_mem_bytes(const tower *t);
/* The same figure for a plan in fp32, without a device (for `twotower summary`); the CUDA
 * context itself (a few hundred MiB per device) is not counted in either. */
size_t tower_cuda_mem_estimate(const tower_plan *plan);

#ifdef __cplusplus
}
#endif
#endif
