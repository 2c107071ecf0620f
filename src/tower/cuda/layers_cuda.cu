/* layers_cuda.cu: the CUDA backend of every AlexNet layer, forward and backward; the
 * twin of layers_cpu.c (same names + _cuda, same arguments + cuBLAS handle + stream).
 * fp32 throughout, but for the _bf16 twins of conv and fc (--precision bf16: bf16 GEMM
 * operands, fp32 sums and results). GEMMs through cuBLAS; everything else is a plain kernel
 * whose comment gives the tensor layouts and which thread computes what. No atomics
 * anywhere: every reduction has a fixed order, so a run repeats bit for bit on the same
 * GPU model. */
#include "tower/tower_cuda.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda_check.h"
#include "kernels.h"

#define CU_STREAM(s) ((cudaStream_t)(s))
#define CU_BLAS(h) ((cublasHandle_t)(h))

/* ---- GEMM in row-major terms ----------------------------------------------------------
 * cuBLAS is column-major, our tensors row-major: tower_k_gemm_rm (kernels.h) turns the
 * row-major C = op(A) op(B) into the column-major C^T = op(B)^T op(A)^T, so every call
 * site below reads like the CBLAS row-major call of layers_cpu.c. The math mode is the
 * tower's: plain FP32 by default (net_cuda.cu), TF32 tensor cores with --tf32
 * (tower_cuda_configure). */
static void gemm_rm(cublasHandle_t h, int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                    float *C, int ldc)
{
    tower_k_gemm g = tower_k_gemm_rm(trans_a, trans_b, m, n, k, A, lda, B, ldb);
    CUBLAS_CHECK(cublasSgemm(h, g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                             g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha,
                             g.first, g.ld_first, g.second, g.ld_second, &beta, C, ldc));
}

/* The same row-major GEMM with bf16 A and B, fp32 C and fp32 accumulation (cublasGemmEx,
 * CUBLAS_COMPUTE_32F: tensor cores, every product of two bf16 exact in fp32, the sums in
 * fp32). tower_k_gemm_rm gives the column-major call's flags and sizes; its operands swap
 * as there (first B, second A). */
static void gemm_bf16_rm(cublasHandle_t h, int trans_a, int trans_b, int m, int n, int k,
                         float alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                         float beta, float *C, int ldc)
{
    tower_k_gemm g = tower_k_gemm_rm(trans_a, trans_b, m, n, k, NULL, lda, NULL, ldb);
    CUBLAS_CHECK(cublasGemmEx(h, g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                              g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha,
                              B, CUDA_R_16BF, g.ld_first, A, CUDA_R_16BF, g.ld_second, &beta, C,
                              CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* y (m) = alpha A (m x n, row-major, ld lda) . x (n) + beta y: the row-major matrix is the
 * column-major (n x m) one, so cuBLAS applies it transposed. */
static void gemv_rm(cublasHandle_t h, int m, int n, float alpha, const float *A, int lda,
                    const float *x, float beta, float *y)
{
    CUBLAS_CHECK(cublasSgemv(h, CUBLAS_OP_T, n, m, &alpha, A, lda, x, 1, &beta, y, 1));
}

/* Grid-stride loop over n elements: every kernel below is one of these around a
 * per-element function of kernels.h; consecutive threads take consecutive elements.
 * FOR_EACH_ELEMENT32 indexes in 32 bits, for launches the launcher has checked to be
 * below 2^31 elements (INDEX32_CHECK): the layer kernels, whose index arithmetic is
 * most of their work. */
#define FOR_EACH_ELEMENT(i, n)                                                             \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);               \
         i += (size_t)gridDim.x * blockDim.x)
#define FOR_EACH_ELEMENT32(i, n)                                                           \
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < (uint32_t)(n);           \
         i += gridDim.x * blockDim.x)

/* ---- convolution ------------------------------------------------------------------- */

/* im2col of a chunk of nb images. in (nb, Ci, H, W); col (Ci*K*K, nb*Ho*Wo), row
 * r = (c, kh, kw), column q = (n, oh, ow): the pixel tap (kh, kw) of image n sees at
 * output (oh, ow), 0 in the padding. One thread per (c, q), writing that channel's K*K
 * rows of column q (tower_k_im2col_taps); consecutive threads along q: every store
 * coalesced, reads coalesced along an image row for stride 1. */
__global__ void im2col_chunk_kernel(float *col, const float *in, tower_k_conv_geom g)
{
    FOR_EACH_ELEMENT32(e, (uint32_t)g.Ci * g.nq.d) tower_k_im2col_taps(col, in, e, g);
}

/* col2im of a chunk as a gather (no atomics): one thread per input pixel (n, c, ih, iw) of
 * din (nb, Ci, H, W) sums the col (Ci*K*K, nb*Ho*Wo) entries that came from it, in the
 * order layers_cpu.c's scatter adds them. accumulate: start from din instead of 0. */
__global__ void col2im_chunk_kernel(float *din, const float *col, tower_k_conv_geom g,
                                    int accumulate)
{
    FOR_EACH_ELEMENT32(e, g.nb * (uint32_t)g.Ci * g.hw.d)
        din[e] = tower_k_col2im_pixel(col, accumulate ? din[e] : 0.0f, e, g);
}

/* out (nb, Co, HWo) = prod (Co, nb*HWo) transposed [+ out] [+ b], then ReLU when relu
 * (the fused form): the end of a chunk's forward. One thread per element of out
 * (coalesced writes; reads in runs of HWo). */
__global__ void conv_out_kernel(float *out, const float *prod, const float *b, tower_k_cnhw t,
                                int accumulate, int relu)
{
    FOR_EACH_ELEMENT32(i, t.nb * t.c.d * t.hw.d) {
        float y = tower_k_conv_out(prod, out, b, i, t, accumulate);
        out[i] = relu ? tower_k_relu(y) : y;
    }
}

/* x (n) = v. One thread per element. */
__global__ void fill_kernel(float *x, float v, size_t n)
{
    FOR_EACH_ELEMENT(i, n) x[i] = v;
}

/* g (Co, nb*HWo) = dout (nb, Co, HWo) transposed: the output gradient as the chunk's
 * GEMMs read it; with act (the fused form) first masked by the ReLU's output act > 0.
 * One thread per element of dout (coalesced reads). */
__global__ void to_cnhw_kernel(float *g, const float *dout, const float *act, tower_k_cnhw t)
{
    FOR_EACH_ELEMENT32(i, t.nb * t.c.d * t.hw.d) tower_k_to_cnhw(g, dout, act, i, t);
}

/* out (B, C, HW) += b[c]. One thread per element of out (the fc layers' bias). */
__global__ void bias_add_kernel(float *out, const float *b, uint32_t n, tower_k_div C,
                                tower_k_div HW)
{
    FOR_EACH_ELEMENT32(i, n) out[i] += b[tower_k_channel(i, C, HW)];
}

/* The chunk's geometry for its kernels; stops the process when the chunk is too large
 * for 32-bit indices (tower_init_cuda refuses such a batch first). */
static tower_k_conv_geom chunk_geom(int nb, int Ci, int H, int W, int K, int S, int P, int Ho,
                                    int Wo)
{
    tower_k_conv_geom g;
    if (tower_k_conv_geom_make(&g, nb, Ci, H, W, K, S, P, Ho, Wo) != 0) { /* one of: */
        INDEX32_CHECK((size_t)Ci * K * K * nb * Ho * Wo, "a conv chunk's col (Ci*K*K, nb*Ho*Wo)");
        INDEX32_CHECK((size_t)nb * Ci * H * W, "a conv chunk's input (nb, Ci, H, W)");
    }
    return g;
}

/* The transposing passes' view of a chunk's (nb, Co, HWo) output, checked like chunk_geom. */
static tower_k_cnhw chunk_cnhw(int nb, int Co, int HWo)
{
    INDEX32_CHECK((size_t)nb * Co * HWo, "a conv chunk's output (nb, Co, Ho*Wo)");
    return tower_k_cnhw_make(nb, Co, HWo);
}

extern "C" size_t tower_conv_cuda_scratch_size(int Ci, int H, int W, int Co, int K, int stride,
                                               int pad, int images)
{
    return tower_k_conv_scratch_size(Ci, Co, K, tower_conv_out(H, K, stride, pad),
                                     tower_conv_out(W, K, stride, pad), images);
}

/* The chunk loop both passes share: images [n0, n0 + nb) of B, nb <= images. */
#define FOR_EACH_CHUNK(n0, nb, B, images)                                                 \
    for (int n0 = 0, nb = (B) < (images) ? (B) : (images); n0 < (B);                      \
         n0 += nb, nb = (B) - n0 < (images) ? (B) - n0 : (images))

/* dst (n) = src rounded to bf16 (tower_k_cast_bf16). One thread per element. */
__global__ void cast_bf16_kernel(uint16_t *dst, const float *src, size_t n)
{
    FOR_EACH_ELEMENT(i, n) tower_k_cast_bf16(dst, src, i);
}

extern "C" void tower_cast_bf16_cuda(uint16_t *dst, const float *src, size_t n, void *stream)
{
    if (n == 0) return;
    cast_bf16_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(dst, src,
                                                                                       n);
    LAUNCH_CHECK(cast_bf16_kernel);
}

extern "C" size_t tower_conv_cuda_scratch_bytes_bf16(int Ci, int H, int W, int Co, int K,
                                                     int stride, int pad, int images, int din)
{
    return tower_k_conv_scratch_bf16_of(Ci, Co, K, tower_conv_out(H, K, stride, pad),
                                        tower_conv_out(W, K, stride, pad), images, din)
        .bytes;
}

/* Stops the process when a caller's scratch is smaller than a layout needs: a programming
 * error (the tower sizes its scratch from the same functions), not a run-time condition. */
static void scratch_check(size_t need, size_t have, const char *what)
{
    if (need > have) {
        char why[160];
        snprintf(why, sizeof why, "needs %zu bytes of scratch, was given %zu", need, have);
        tower_cuda_die(what, why, __FILE__, __LINE__);
    }
}

/* ---- the bf16 operands' kernels (--precision bf16) ---------------------------------- */

/* im2col_chunk_kernel's mapping, writing bf16 (tower_k_im2col_taps_bf16) */
__global__ void im2col_chunk_bf16_kernel(uint16_t *col, const float *in, tower_k_conv_geom g)
{
    FOR_EACH_ELEMENT32(e, (uint32_t)g.Ci * g.nq.d) tower_k_im2col_taps_bf16(col, in, e, g);
}

/* to_cnhw_kernel's mapping, writing bf16 (tower_k_to_cnhw_bf16) */
__global__ void to_cnhw_bf16_kernel(uint16_t *g, const float *dout, const float *act,
                                    tower_k_cnhw t)
{
    FOR_EACH_ELEMENT32(i, t.nb * t.c.d * t.hw.d) tower_k_to_cnhw_bf16(g, dout, act, i, t);
}

/* x (n) = v, bf16. One thread per element. */
__global__ void fill_bf16_kernel(uint16_t *x, uint16_t v, size_t n)
{
    FOR_EACH_ELEMENT(i, n) x[i] = v;
}

/* ---- the conv chunk loops, fp32 or with bf16 GEMM operands -------------------------
 * With bf16 (--precision bf16) the GEMMs' operands are bf16: im2col writes the col in
 * bf16, the transposing pass writes the output gradient in bf16, the weights are the
 * tower's bf16 copy of its fp32 master weights (w: the copy's element for the master's;
 * same layout and ldw). Products, dw, db and the input gradient's col are fp32 (fp32
 * sums); the output transpose, bias, ReLU and col2im are the fp32 kernels. The scratch's
 * parts are tower_k_conv_scratch_bf16_of's; fp32's are col, then prod or g, then ones. */

/* A GEMM of the chunk loops: SGEMM, or bf16 operands with fp32 sums. */
static void gemm_op(cublasHandle_t h, int bf16, int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const void *A, int lda, const void *B, int ldb, float beta,
                    float *C, int ldc)
{
    if (bf16)
        gemm_bf16_rm(h, trans_a, trans_b, m, n, k, alpha, (const uint16_t *)A, lda,
                     (const uint16_t *)B, ldb, beta, C, ldc);
    else
        gemm_rm(h, trans_a, trans_b, m, n, k, alpha, (const float *)A, lda, (const float *)B,
                ldb, beta, C, ldc);
}

/* The chunk's col (Ci*K*K, nb*Ho*Wo), fp32 or bf16; npos = Ci * nb*Ho*Wo threads. */
static void im2col_launch(void *col, const float *in, tower_k_conv_geom cg, size_t npos, int bf16,
                          cudaStream_t st)
{
    if (bf16) {
        im2col_chunk_bf16_kernel<<<tower_cuda_blocks(npos), TOWER_CUDA_THREADS, 0, st>>>(
            (uint16_t *)col, in, cg);
        LAUNCH_CHECK(im2col_chunk_bf16_kernel);
    } else {
        im2col_chunk_kernel<<<tower_cuda_blocks(npos), TOWER_CUDA_THREADS, 0, st>>>(
            (float *)col, in, cg);
        LAUNCH_CHECK(im2col_chunk_kernel);
    }
}

static void conv_forward(float *out, const float *in, const void *w, const float *b, int B,
                         int Ci, int H, int W, int Co, int K, int stride, int pad, int ldw,
                         int accumulate, int relu, void *col, float *prod, int images, int bf16,
                         void *cublas, void *stream)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    cudaStream_t st = CU_STREAM(stream);
    size_t nin = (size_t)Ci * H * W;
    FOR_EACH_CHUNK(n0, nb, B, images) {
        int nq = nb * HWo;
        size_t npos = (size_t)Ci * nq, nout = (size_t)Co * nq;
        float *y = out + (size_t)n0 * Co * HWo;
        tower_k_conv_geom cg = chunk_geom(nb, Ci, H, W, K, stride, pad, Ho, Wo);
        im2col_launch(col, in + (size_t)n0 * nin, cg, npos, bf16, st);
        /* prod (Co, nb*HWo) = w (Co, CKK; ld ldw) . col (CKK, nb*HWo) */
        gemm_op(CU_BLAS(cublas), bf16, 0, 0, Co, nq, CKK, 1.0f, w, ldw, col, nq, 0.0f, prod, nq);
        conv_out_kernel<<<tower_cuda_blocks(nout), TOWER_CUDA_THREADS, 0, st>>>(
            y, prod, b, chunk_cnhw(nb, Co, HWo), accumulate, relu);
        LAUNCH_CHECK(conv_out_kernel);
    }
}

/* g and ones are bf16 with bf16, fp32 without; dcol (the input gradient's col, fp32) may
 * be col: dw's GEMM is done with col when din's writes it. */
static void conv_backward(float *din, float *dw, float *db, const float *dout, const float *act,
                          const float *in, const void *w, int B, int Ci, int H, int W, int Co,
                          int K, int stride, int pad, int ldw, int accumulate_din,
                          int accumulate_dw, void *col, float *dcol, void *g, void *ones,
                          int images, int bf16, void *cublas, void *stream)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    cudaStream_t st = CU_STREAM(stream);
    cublasHandle_t h = CU_BLAS(cublas);
    size_t nin = (size_t)Ci * H * W;
    if (db) {
        size_t nones = (size_t)(B < images ? B : images) * HWo;
        if (bf16) {
            fill_bf16_kernel<<<tower_cuda_blocks(nones), TOWER_CUDA_THREADS, 0, st>>>(
                (uint16_t *)ones, tower_k_bf16(1.0f), nones);
            LAUNCH_CHECK(fill_bf16_kernel);
        } else {
            fill_kernel<<<tower_cuda_blocks(nones), TOWER_CUDA_THREADS, 0, st>>>(
                (float *)ones, 1.0f, nones);
            LAUNCH_CHECK(fill_kernel);
        }
    }
    FOR_EACH_CHUNK(n0, nb, B, images) {
        int nq = nb * HWo;
        size_t npos = (size_t)Ci * nq, nout = (size_t)Co * nq, nx = (size_t)nb * nin;
        size_t at = (size_t)n0 * Co * HWo;
        tower_k_conv_geom cg = chunk_geom(nb, Ci, H, W, K, stride, pad, Ho, Wo);
        tower_k_cnhw ct = chunk_cnhw(nb, Co, HWo);
        /* db and dw: written by the first chunk unless accumulate_dw, then added to */
        float beta = tower_k_chunk_beta(accumulate_dw, n0);
        if (bf16) {
            to_cnhw_bf16_kernel<<<tower_cuda_blocks(nout), TOWER_CUDA_THREADS, 0, st>>>(
                (uint16_t *)g, dout + at, act ? act + at : NULL, ct);
            LAUNCH_CHECK(to_cnhw_bf16_kernel);
        } else {
            to_cnhw_kernel<<<tower_cuda_blocks(nout), TOWER_CUDA_THREADS, 0, st>>>(
                (float *)g, dout + at, act ? act + at : NULL, ct);
            LAUNCH_CHECK(to_cnhw_kernel);
        }
        if (db && bf16) /* db (Co) += g (Co, nb*HWo) . ones (nb*HWo): a GEMM of one column */
            gemm_bf16_rm(h, 0, 0, Co, 1, nq, 1.0f, (const uint16_t *)g, nq,
                         (const uint16_t *)ones, 1, beta, db, 1);
        else if (db) /* db (Co) += g (Co, nb*HWo) . ones: one GEMV, many blocks per channel */
            gemv_rm(h, Co, nq, 1.0f, (const float *)g, nq, (const float *)ones, beta, db);
        if (dw) {
            im2col_launch(col, in + (size_t)n0 * nin, cg, npos, bf16, st);
            /* dw (Co, CKK; ld ldw) += g (Co, nb*HWo) . col^T (nb*HWo, CKK) */
            gemm_op(h, bf16, 0, 1, Co, CKK, nq, 1.0f, g, nq, col, nq, beta, dw, ldw);
        }
        if (din) {
            /* dcol (CKK, nb*HWo) = w^T (CKK, Co) . g (Co, nb*HWo), fp32, then gathered back */
            gemm_op(h, bf16, 1, 0, CKK, nq, Co, 1.0f, w, ldw, g, nq, 0.0f, dcol, nq);
            col2im_chunk_kernel<<<tower_cuda_blocks(nx), TOWER_CUDA_THREADS, 0, st>>>(
                din + (size_t)n0 * nin, dcol, cg, accumulate_din);
            LAUNCH_CHECK(col2im_chunk_kernel);
        }
    }
}

/* fp32's scratch: col (Ci*K*K, images*Ho*Wo), then prod (forward) or g and ones. */
static void conv_fp32_forward(float *out, const float *in, const float *w, const float *b,
                              int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                              int ldw, int accumulate, int relu, float *scratch, int images,
                              void *cublas, void *stream)
{
    size_t ncol = (size_t)images * Ci * K * K * tower_conv_out(H, K, stride, pad) *
                  tower_conv_out(W, K, stride, pad);
    conv_forward(out, in, w, b, B, Ci, H, W, Co, K, stride, pad, ldw, accumulate, relu, scratch,
                 scratch + ncol, images, 0, cublas, stream);
}

extern "C" void tower_conv_forward_cuda(float *out, const float *in, const float *w,
                                        const float *b, int B, int Ci, int H, int W, int Co,
                                        int K, int stride, int pad, int ldw, int accumulate,
                                        float *scratch, int images, void *cublas, void *stream)
{
    conv_fp32_forward(out, in, w, b, B, Ci, H, W, Co, K, stride, pad, ldw, accumulate, 0,
                      scratch, images, cublas, stream);
}

extern "C" void tower_conv_relu_forward_cuda(float *out, const float *in, const float *w,
                                             const float *b, int B, int Ci, int H, int W,
                                             int Co, int K, int stride, int pad, int ldw,
                                             int accumulate, float *scratch, int images,
                                             void *cublas, void *stream)
{
    conv_fp32_forward(out, in, w, b, B, Ci, H, W, Co, K, stride, pad, ldw, accumulate, 1,
                      scratch, images, cublas, stream);
}

static void conv_fp32_backward(float *din, float *dw, float *db, const float *dout,
                               const float *act, const float *in, const float *w, int B, int Ci,
                               int H, int W, int Co, int K, int stride, int pad, int ldw,
                               int accumulate_din, int accumulate_dw, float *scratch, int images,
                               void *cublas, void *stream)
{
    if (!dw && !din && !db) return;
    size_t HWo = (size_t)tower_conv_out(H, K, stride, pad) * tower_conv_out(W, K, stride, pad);
    float *g = scratch + (size_t)images * Ci * K * K * HWo, *ones = g + (size_t)images * Co * HWo;
    conv_backward(din, dw, db, dout, act, in, w, B, Ci, H, W, Co, K, stride, pad, ldw,
                  accumulate_din, accumulate_dw, scratch, scratch, g, ones, images, 0, cublas,
                  stream);
}

extern "C" void tower_conv_backward_cuda(float *din, float *dw, float *db, const float *dout,
                                         const float *in, const float *w, int B, int Ci, int H,
                                         int W, int Co, int K, int stride, int pad, int ldw,
                                         int accumulate_din, int accumulate_dw, float *scratch,
                                         int images, void *cublas, void *stream)
{
    conv_fp32_backward(din, dw, db, dout, NULL, in, w, B, Ci, H, W, Co, K, stride, pad, ldw,
                       accumulate_din, accumulate_dw, scratch, images, cublas, stream);
}

extern "C" void tower_conv_relu_backward_cuda(float *din, float *dw, float *db,
                                              const float *dout, const float *act,
                                              const float *in, const float *w, int B, int Ci,
                                              int H, int W, int Co, int K, int stride, int pad,
                                              int ldw, int accumulate_din, int accumulate_dw,
                                              float *scratch, int images, void *cublas,
                                              void *stream)
{
    conv_fp32_backward(din, dw, db, dout, act, in, w, B, Ci, H, W, Co, K, stride, pad, ldw,
                       accumulate_din, accumulate_dw, scratch, images, cublas, stream);
}

extern "C" void tower_conv_forward_bf16_cuda(float *out, const float *in, const uint16_t *w,
                                             const float *b, int B, int Ci, int H, int W,
                                             int Co, int K, int stride, int pad, int ldw,
                                             int accumulate, int relu, void *scratch,
                                             size_t scratch_bytes, int images, void *cublas,
                                             void *stream)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    tower_k_conv_scratch_bf16 sl = tower_k_conv_scratch_bf16_of(Ci, Co, K, Ho, Wo, images, 0);
    scratch_check(sl.bytes, scratch_bytes, "conv forward (bf16)");
    conv_forward(out, in, w, b, B, Ci, H, W, Co, K, stride, pad, ldw, accumulate, relu,
                 (char *)scratch + sl.col, (float *)((char *)scratch + sl.prod), images, 1,
                 cublas, stream);
}

extern "C" void tower_conv_backward_bf16_cuda(float *din, float *dw, float *db, const float *dout,
                                              const float *act, const float *in,
                                              const uint16_t *w, int B, int Ci, int H, int W,
                                              int Co, int K, int stride, int pad, int ldw,
                                              int accumulate_din, int accumulate_dw,
                                              void *scratch, size_t scratch_bytes, int images,
                                              void *cublas, void *stream)
{
    if (!dw && !din && !db) return;
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    tower_k_conv_scratch_bf16 sl =
        tower_k_conv_scratch_bf16_of(Ci, Co, K, Ho, Wo, images, din != NULL);
    scratch_check(sl.bytes, scratch_bytes, "conv backward (bf16)");
    char *base = (char *)scratch;
    /* din's fp32 col over the bf16 col, written after dw's GEMM has read it */
    conv_backward(din, dw, db, dout, act, in, w, B, Ci, H, W, Co, K, stride, pad, ldw,
                  accumulate_din, accumulate_dw, base + sl.col, (float *)(base + sl.col),
                  base + sl.prod, base + sl.ones, images, 1, cublas, stream);
}

/* ---- fully connected ---------------------------------------------------------------- */

/* db (Cout) += (accumulate) or = the sum over b of dout (B, Cout). One thread per output
 * unit o (adjacent threads read adjacent columns: coalesced), summing b = 0..B-1 in order:
 * the same float additions in the same order as layers_cpu.c, so the result is
 * bit-identical (from 0, db's value after the CPU's zeroing). */
__global__ void fc_bias_grad_kernel(float *db, const float *dout, int B, int Cout, int accumulate)
{
    FOR_EACH_ELEMENT(o, (size_t)Cout)
        db[o] = tower_k_fc_bias_grad(dout, accumulate ? db[o] : 0.0f, (int)o, B, Cout);
}

/* out (B, Cout) += b: both fc forwards' bias, in fp32. */
static void fc_bias_add(float *out, const float *b, int B, int Cout, void *stream)
{
    size_t n = (size_t)B * Cout;
    INDEX32_CHECK(n, "fc output (B, Cout)");
    bias_add_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        out, b, (uint32_t)n, tower_k_div_of((uint32_t)Cout), tower_k_div_of(1));
    LAUNCH_CHECK(bias_add_kernel);
}

extern "C" void tower_fc_forward_cuda(float *out, const float *in, const float *w,
                                      const float *b, int B, int Cin, int Cout, int ldw,
                                      int accumulate, void *cublas, void *stream)
{
    /* out (B, Cout) = in (B, Cin) . w^T (Cin, Cout) [+ out] */
    gemm_rm(CU_BLAS(cublas), 0, 1, B, Cout, Cin, 1.0f, in, Cin, w, ldw,
            accumulate ? 1.0f : 0.0f, out, Cout);
    if (b) fc_bias_add(out, b, B, Cout, stream);
}

extern "C" void tower_fc_backward_cuda(float *din, float *dw, float *db, const float *dout,
                                       const float *in, const float *w, int B, int Cin,
                                       int Cout, int ldw, int accumulate_din, int accumulate_dw,
                                       void *cublas, void *stream)
{
    cublasHandle_t h = CU_BLAS(cublas);
    if (din) /* din (B, Cin) = dout (B, Cout) . w (Cout, Cin) */
        gemm_rm(h, 0, 0, B, Cin, Cout, 1.0f, dout, Cout, w, ldw, accumulate_din ? 1.0f : 0.0f,
                din, Cin);
    if (dw) /* dw (Cout, Cin) += (or =) dout^T (Cout, B) . in (B, Cin) */
        gemm_rm(h, 1, 0, Cout, Cin, B, 1.0f, dout, Cout, in, Cin, accumulate_dw ? 1.0f : 0.0f,
                dw, ldw);
    if (db) {
        fc_bias_grad_kernel<<<tower_cuda_blocks((size_t)Cout), TOWER_CUDA_THREADS, 0,
                              CU_STREAM(stream)>>>(db, dout, B, Cout, accumulate_dw);
        LAUNCH_CHECK(fc_bias_grad_kernel);
    }
}

/* The fc layers with bf16 GEMM operands (tower_cuda.h): the input and the output gradient
 * in bf16 in the caller's xb and gb, w the tower's bf16 copy; out, din and dw are fp32
 * (fp32 sums), the bias and its gradient the fp32 kernels above (db from the fp32 dout). */
extern "C" void tower_fc_forward_bf16_cuda(float *out, const float *in, uint16_t *xb,
                                           const uint16_t *w, const float *b, int B, int Cin,
                                           int Cout, int ldw, int accumulate, void *cublas,
                                           void *stream)
{
    if (in) tower_cast_bf16_cuda(xb, in, (size_t)B * Cin, stream);
    /* out (B, Cout) = in (B, Cin) . w^T (Cin, Cout) [+ out] */
    gemm_bf16_rm(CU_BLAS(cublas), 0, 1, B, Cout, Cin, 1.0f, xb, Cin, w, ldw,
                 accumulate ? 1.0f : 0.0f, out, Cout);
    if (b) fc_bias_add(out, b, B, Cout, stream);
}

extern "C" void tower_fc_backward_bf16_cuda(float *din, float *dw, float *db, const float *dout,
                                            uint16_t *gb, int cast_dout, const uint16_t *xb,
                                            const uint16_t *w, int B, int Cin, int Cout, int ldw,
                                            int accumulate_din, int accumulate_dw, void *cublas,
                                            void *stream)
{
    cublasHandle_t h = CU_BLAS(cublas);
    if (cast_dout && (din || dw)) tower_cast_bf16_cuda(gb, dout, (size_t)B * Cout, stream);
    if (din) /* din (B, Cin) = dout (B, Cout) . w (Cout, Cin) */
        gemm_bf16_rm(h, 0, 0, B, Cin, Cout, 1.0f, gb, Cout, w, ldw,
                     accumulate_din ? 1.0f : 0.0f, din, Cin);
    if (dw) /* dw (Cout, Cin) += (or =) dout^T (Cout, B) . in (B, Cin) */
        gemm_bf16_rm(h, 1, 0, Cout, Cin, B, 1.0f, gb, Cout, xb, Cin,
                     accumulate_dw ? 1.0f : 0.0f, dw, ldw);
    if (db) {
        fc_bias_grad_kernel<<<tower_cuda_blocks((size_t)Cout), TOWER_CUDA_THREADS, 0,
                              CU_STREAM(stream)>>>(db, dout, B, Cout, accumulate_dw);
        LAUNCH_CHECK(fc_bias_grad_kernel);
    }
}

/* ---- ReLU: one thread per element, any shape ------------------------------------------ */

__global__ void relu_forward_kernel(float *out, const float *in, size_t n)
{
    FOR_EACH_ELEMENT(i, n) out[i] = tower_k_relu(in[i]);
}

__global__ void relu_backward_kernel(float *din, const float *dout, const float *out, size_t n)
{
    FOR_EACH_ELEMENT(i, n) din[i] = tower_k_relu_grad(dout[i], out[i]);
}

extern "C" void tower_relu_forward_cuda(float *out, const float *in, size_t n, void *stream)
{
    if (n == 0) return;
    relu_forward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        out, in, n);
    LAUNCH_CHECK(relu_forward_kernel);
}

extern "C" void tower_relu_backward_cuda(float *din, const float *dout, const float *out,
                                         size_t n, void *stream)
{
    if (n == 0) return;
    relu_backward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        din, dout, out, n);
    LAUNCH_CHECK(relu_backward_kernel);
}

/* ---- tanh: one thread per element, any shape ------------------------------------------ */

__global__ void tanh_forward_kernel(float *out, const float *in, size_t n)
{
    FOR_EACH_ELEMENT(i, n) out[i] = tower_k_tanh(in[i]);
}

__global__ void tanh_backward_kernel(float *din, const float *dout, const float *out, size_t n)
{
    FOR_EACH_ELEMENT(i, n) din[i] = tower_k_tanh_grad(dout[i], out[i]);
}

extern "C" void tower_tanh_forward_cuda(float *out, const float *in, size_t n, void *stream)
{
    if (n == 0) return;
    tanh_forward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        out, in, n);
    LAUNCH_CHECK(tanh_forward_kernel);
}

extern "C" void tower_tanh_backward_cuda(float *din, const float *dout, const float *out,
                                         size_t n, void *stream)
{
    if (n == 0) return;
    tanh_backward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        din, dout, out, n);
    LAUNCH_CHECK(tanh_backward_kernel);
}

/* ---- local response normalisation (across channels) ----------------------------------
 * in, out, scale, dout, din: (B, C, HW). One thread per element (b, c, p); it reads the
 * n channels around c at the same (b, p), so a warp (consecutive p) reads contiguous
 * memory. The sums run over the window in channel order, as in layers_cpu.c. */
__global__ void lrn_forward_kernel(float *out, float *scale, const float *in, uint32_t n,
                                   tower_k_div C, tower_k_div HW, int half, float k,
                                   float alpha, float beta)
{
    FOR_EACH_ELEMENT32(i, n)
        out[i] = tower_k_lrn_forward(scale, in, i, C, HW, half, k, alpha, beta);
}

__global__ void lrn_backward_kernel(float *din, const float *dout, const float *in,
                                    const float *out, const float *scale, uint32_t n,
                                    tower_k_div C, tower_k_div HW, int half, float alpha,
                                    float beta)
{
    FOR_EACH_ELEMENT32(i, n)
        din[i] = tower_k_lrn_backward(dout, in, out, scale, i, C, HW, half, alpha, beta);
}

extern "C" void tower_lrn_forward_cuda(float *out, float *scale, const float *in, int B, int C,
                                       int HW, int n, float k, float alpha, float beta,
                                       void *stream)
{
    size_t total = (size_t)B * C * HW;
    if (total == 0) return;
    INDEX32_CHECK(total, "lrn forward (B, C, HW)");
    lrn_forward_kernel<<<tower_cuda_blocks(total), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        out, scale, in, (uint32_t)total, tower_k_div_of((uint32_t)C),
        tower_k_div_of((uint32_t)HW), n / 2, k, alpha, beta);
    LAUNCH_CHECK(lrn_forward_kernel);
}

extern "C" void tower_lrn_backward_cuda(float *din, const float *dout, const float *in,
                                        const float *out, const float *scale, int B, int C,
                                        int HW, int n, float k, float alpha, float beta,
                                        void *stream)
{
    (void)k; /* k is inside scale already */
    size_t total = (size_t)B * C * HW;
    if (total == 0) return;
    INDEX32_CHECK(total, "lrn backward (B, C, HW)");
    lrn_backward_kernel<<<tower_cuda_blocks(total), TOWER_CUDA_THREADS, 0,
                          CU_STREAM(stream)>>>(din, dout, in, out, scale, (uint32_t)total,
                                               tower_k_div_of((uint32_t)C),
                                               tower_k_div_of((uint32_t)HW), n / 2, alpha,
                                               beta);
    LAUNCH_CHECK(lrn_backward_kernel);
}

/* ---- overlapping max-pool ---------------------------------------------------------------
 * in, din (B, C, H, W); out, dout, idx (B, C, Ho, Wo), no padding. */

/* One thread per output element; the window is scanned row-major keeping the first
 * maximum (strict >), exactly as layers_cpu.c, so idx and out are bit-identical. */
__global__ void maxpool_forward_kernel(float *out, int32_t *idx, const float *in, uint32_t n,
                                       tower_k_pool g)
{
    FOR_EACH_ELEMENT32(i, n) {
        int32_t best;
        out[i] = tower_k_maxpool_forward(in, i, g, &best);
        idx[i] = best;
    }
}

/* Gather, no atomics: one thread per S x S cell of input elements (tower_k_pool_cells)
 * sums for each of them, in (oh, ow) order, the dout of the windows (at most ceil(K/S)^2)
 * whose recorded maximum it is. Consecutive threads take consecutive cells of a row. din
 * is overwritten. Bit-identical to layers_cpu.c. */
__global__ void maxpool_backward_kernel(float *din, const float *dout, const int32_t *idx,
                                        uint32_t n, tower_k_pool g)
{
    FOR_EACH_ELEMENT32(e, n) tower_k_maxpool_backward_cell(din, dout, idx, e, g);
}

extern "C" void tower_maxpool_forward_cuda(float *out, int32_t *idx, const float *in, int B,
                                           int C, int H, int W, int K, int S, void *stream)
{
    tower_k_pool g = tower_k_pool_make(H, W, K, S);
    size_t n = (size_t)B * C * g.Ho * g.Wo;
    if (n == 0) return;
    INDEX32_CHECK((size_t)B * C * H * W, "maxpool input (B, C, H, W)");
    maxpool_forward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        out, idx, in, (uint32_t)n, g);
    LAUNCH_CHECK(maxpool_forward_kernel);
}

extern "C" void tower_maxpool_backward_cuda(float *din, const float *dout, const int32_t *idx,
                                            int B, int C, int H, int W, int K, int S,
                                            void *stream)
{
    tower_k_pool g = tower_k_pool_make(H, W, K, S);
    size_t n = (size_t)B * C * H * W;
    if (n == 0) return;
    INDEX32_CHECK(n, "maxpool input gradient (B, C, H, W)");
    size_t cells = tower_k_pool_cells(B, C, g);
    maxpool_backward_kernel<<<tower_cuda_blocks(cells), TOWER_CUDA_THREADS, 0,
                              CU_STREAM(stream)>>>(din, dout, idx, (uint32_t)cells, g);
    LAUNCH_CHECK(maxpool_backward_kernel);
}

/* ---- LRN then max-pool, fused (kernels.h says what is kept for backward) --------------
 * in, pw, din (B, C, H, W); out, dout, idx (B, C, Ho, Wo). One block per tile, the tiles
 * taken in a block-stride loop when there are more than the grid holds; every thread of a
 * block runs the same tiles, so the barriers inside the loop are reached by all. The
 * loops inside a tile step by the block's size as a constant (the launchers launch
 * exactly that many threads). */
#define FOR_EACH_TILE(t, n) for (uint32_t t = blockIdx.x; t < (uint32_t)(n); t += gridDim.x)
#define FOR_EACH_IN_TILE(e, n)                                                            \
    for (uint32_t e = threadIdx.x; e < (uint32_t)(n); e += TOWER_CUDA_THREADS)

/* Forward, a tile = np whole planes, or a band of R pooled rows of one plane; 256 threads.
 * Phase 1: one thread per input element of the tile's rows computes its LRN output into
 * shared memory (and pw for the rows the tile owns): consecutive threads along a row, so
 * the five channel reads of a warp are each coalesced. Phase 2: one thread per pooled
 * output scans its window in shared memory, writing out and idx. beta is g.beta, or the
 * constant 0.75f in the kernel for the paper's beta: tower_lrn_pow's test of beta then
 * folds away with its powf, which no thread of that launch would run. */
template <int H16> /* 1: in is bf16 (a kept activation), 0: fp32 */
static __device__ __forceinline__ void lrn_maxpool_forward_tiles(float *out, uint16_t *out16,
                                                                 int32_t *idx, float *pw,
                                                                 const void *x,
                                                                 const tower_k_lrnpool &g,
                                                                 float beta)
{
    extern __shared__ float tile[]; /* (np, rows, W), planes H*W floats apart */
    const tower_k_src in = tower_k_src_of(x, H16);
    FOR_EACH_TILE(t, g.fwd_tiles) {
        tower_k_lrnpool_ftile f = tower_k_lrnpool_ftile_at(t, g);
        /* planes H*W apart: np > 1 only with whole planes, and e < rows * W when np = 1 */
        FOR_EACH_IN_TILE(e, (uint32_t)(f.np - 1) * g.hw.d + (uint32_t)f.rows * g.p.w.d)
            tower_k_lrnpool_fwd_lrn(tile, pw, in, e, f, g, beta);
        __syncthreads();
        FOR_EACH_IN_TILE(o, (uint32_t)(f.np - 1) * g.howo.d + (uint32_t)f.noh * g.p.wo.d)
            tower_k_lrnpool_fwd_pool(out, out16, idx, tile, o, f, g);
        __syncthreads(); /* the next tile overwrites the shared rows */
    }
}

/* g.beta is 0.75 (the paper's; the launcher checks): s^-beta as r r rsqrt(r) only */
__global__ void lrn_maxpool_forward_kernel(float *out, uint16_t *out16, int32_t *idx, float *pw,
                                           const float *in, tower_k_lrnpool g)
{
    lrn_maxpool_forward_tiles<0>(out, out16, idx, pw, in, g, 0.75f);
}

/* any other beta: tower_lrn_pow's powf */
__global__ void lrn_maxpool_forward_pow_kernel(float *out, uint16_t *out16, int32_t *idx,
                                               float *pw, const float *in, tower_k_lrnpool g)
{
    lrn_maxpool_forward_tiles<0>(out, out16, idx, pw, in, g, g.beta);
}

/* the two again, reading a kept bf16 input */
__global__ void lrn_maxpool_forward_h_kernel(float *out, uint16_t *out16, int32_t *idx,
                                             float *pw, const uint16_t *in, tower_k_lrnpool g)
{
    lrn_maxpool_forward_tiles<1>(out, out16, idx, pw, in, g, 0.75f);
}

__global__ void lrn_maxpool_forward_pow_h_kernel(float *out, uint16_t *out16, int32_t *idx,
                                                 float *pw, const uint16_t *in,
                                                 tower_k_lrnpool g)
{
    lrn_maxpool_forward_tiles<1>(out, out16, idx, pw, in, g, g.beta);
}

/* Backward, a tile = G output channels x P positions of one image, P x LANES threads:
 * threadIdx.x the position (a warp reads 32 consecutive positions of a plane),
 * threadIdx.y a lane over channels. Phase 1: each thread finds its position's pooling
 * windows once, then for its channels among jlo..jhi gathers dl and computes the term
 * dl * out / s into shared memory. Phase 2: each thread sums, for its output channels,
 * the window's terms in channel order and writes din. */
template <bool G, int H16> /* G: gb written too; H16: in is bf16 */
static __device__ __forceinline__ void lrn_maxpool_backward_body(float *din, uint16_t *gb,
                                                                 const float *dpool,
                                                                 const int32_t *idx,
                                                                 const void *x,
                                                                 const float *pw,
                                                                 tower_k_lrnpool g)
{
    extern __shared__ float sh[]; /* terms (nj_max, P), then dl (nj_max, P) */
    const tower_k_src in = tower_k_src_of(x, H16);
    float *terms = sh, *dls = sh + g.nj_max * TOWER_K_LRNPOOL_P;
    int pp = (int)threadIdx.x;
    FOR_EACH_TILE(t, g.bwd_tiles) {
        tower_k_lrnpool_btile v = tower_k_lrnpool_btile_at(t, g);
        uint32_t pos = v.p0 + (uint32_t)pp;
        if (pp < v.np) {
            tower_k_pool_win win = tower_k_lrnpool_windows(pos, g);
            for (int jj = (int)threadIdx.y; jj <= v.jhi - v.jlo; jj += TOWER_K_LRNPOOL_LANES) {
                int at = jj * TOWER_K_LRNPOOL_P + pp;
                dls[at] = tower_k_lrnpool_bwd_term(&terms[at], dpool, idx, in, pw, v.b,
                                                   v.jlo + jj, pos, win, g);
            }
        }
        __syncthreads();
        if (pp < v.np)
            for (int c = v.c0 + (int)threadIdx.y; c < v.c1; c += TOWER_K_LRNPOOL_LANES) {
                int at = (c - v.jlo) * TOWER_K_LRNPOOL_P + pp;
                if (G)
                    tower_k_lrnpool_bwd_din_g(din, gb, terms + pp, dls[at], in, pw, v.b, c, pos,
                                              v.jlo, g);
                else
                    tower_k_lrnpool_bwd_din(din, terms + pp, dls[at], in, pw, v.b, c, pos,
                                            v.jlo, g);
            }
        __syncthreads(); /* the next tile overwrites the terms */
    }
}

__global__ void lrn_maxpool_backward_kernel(float *din, const float *dpool, const int32_t *idx,
                                            const float *in, const float *pw, tower_k_lrnpool g)
{
    lrn_maxpool_backward_body<false, 0>(din, NULL, dpool, idx, in, pw, g);
}

/* The same, also writing the masked gradient in bf16 (tower_k_lrnpool_bwd_din_g) into gb:
 * the row's conv on cuDNN's bf16 path reads it instead of making its own; din may be NULL. */
__global__ void lrn_maxpool_backward_g_kernel(float *din, uint16_t *gb, const float *dpool,
                                              const int32_t *idx, const float *in,
                                              const float *pw, tower_k_lrnpool g)
{
    lrn_maxpool_backward_body<true, 0>(din, gb, dpool, idx, in, pw, g);
}

/* the two again, reading a kept bf16 input */
__global__ void lrn_maxpool_backward_h_kernel(float *din, const float *dpool, const int32_t *idx,
                                              const uint16_t *in, const float *pw,
                                              tower_k_lrnpool g)
{
    lrn_maxpool_backward_body<false, 1>(din, NULL, dpool, idx, in, pw, g);
}

__global__ void lrn_maxpool_backward_g_h_kernel(float *din, uint16_t *gb, const float *dpool,
                                                const int32_t *idx, const uint16_t *in,
                                                const float *pw, tower_k_lrnpool g)
{
    lrn_maxpool_backward_body<true, 1>(din, gb, dpool, idx, in, pw, g);
}

/* The fused kernels' geometry, or -1 (then the unfused kernels are the ones to run). */
static int lrnpool_geom(tower_k_lrnpool *g, int B, int C, int H, int W, int n, float k,
                        float alpha, float beta, int K, int S)
{
    return tower_k_lrnpool_make(g, B, C, H, W, n, k, alpha, beta, K, S, TOWER_K_LRNPOOL_TILE);
}

/* The grid of a block-per-tile launch: one block per tile, capped as tower_cuda_blocks */
static unsigned tile_blocks(uint32_t tiles)
{
    const uint32_t cap = 65535u * 8u;
    return tiles < 1 ? 1 : tiles > cap ? cap : tiles;
}

extern "C" int tower_lrn_maxpool_cuda_fits(int B, int C, int H, int W, int n, int K, int S)
{
    tower_k_lrnpool g;
    return lrnpool_geom(&g, B, C, H, W, n, 1.0f, 1.0f, 1.0f, K, S) == 0;
}

extern "C" void tower_lrn_maxpool_forward_cuda(float *out, uint16_t *out16, int32_t *idx,
                                               float *pw, const float *in, const uint16_t *in16,
                                               int B, int C, int H, int W, int n, float k,
                                               float alpha, float beta, int K, int S,
                                               void *stream)
{
    tower_k_lrnpool g;
    if ((size_t)B * C * H * W == 0) return;
    if (lrnpool_geom(&g, B, C, H, W, n, k, alpha, beta, K, S) != 0) {
        INDEX32_CHECK((size_t)B * C * H * W, "lrn + maxpool input (B, C, H, W)");
        tower_cuda_die("lrn + maxpool forward", "a shape the fused kernels do not take "
                       "(tower_lrn_maxpool_cuda_fits)", __FILE__, __LINE__);
    }
    size_t shared = sizeof(float) * (size_t)g.tile_floats;
    unsigned blocks = tile_blocks(g.fwd_tiles);
    cudaStream_t st = CU_STREAM(stream);
    if (g.beta == 0.75f && in16) {
        lrn_maxpool_forward_h_kernel<<<blocks, TOWER_CUDA_THREADS, shared, st>>>(
            out, out16, idx, pw, in16, g);
        LAUNCH_CHECK(lrn_maxpool_forward_h_kernel);
    } else if (in16) {
        lrn_maxpool_forward_pow_h_kernel<<<blocks, TOWER_CUDA_THREADS, shared, st>>>(
            out, out16, idx, pw, in16, g);
        LAUNCH_CHECK(lrn_maxpool_forward_pow_h_kernel);
    } else if (g.beta == 0.75f) {
        lrn_maxpool_forward_kernel<<<blocks, TOWER_CUDA_THREADS, shared, st>>>(out, out16, idx,
                                                                              pw, in, g);
        LAUNCH_CHECK(lrn_maxpool_forward_kernel);
    } else {
        lrn_maxpool_forward_pow_kernel<<<blocks, TOWER_CUDA_THREADS, shared, st>>>(
            out, out16, idx, pw, in, g);
        LAUNCH_CHECK(lrn_maxpool_forward_pow_kernel);
    }
}

extern "C" void tower_lrn_maxpool_backward_cuda(float *din, uint16_t *gb, const float *dout,
                                                const int32_t *idx, const float *in,
                                                const uint16_t *in16, const float *pw, int B,
                                                int C, int H, int W, int n, float k,
                                                float alpha, float beta, int K, int S,
                                                void *stream)
{
    tower_k_lrnpool g;
    if ((size_t)B * C * H * W == 0) return;
    if (lrnpool_geom(&g, B, C, H, W, n, k, alpha, beta, K, S) != 0) {
        INDEX32_CHECK((size_t)B * C * H * W, "lrn + maxpool input gradient (B, C, H, W)");
        tower_cuda_die("lrn + maxpool backward", "a shape the fused kernels do not take "
                       "(tower_lrn_maxpool_cuda_fits)", __FILE__, __LINE__);
    }
    size_t shared = sizeof(float) * 2 * (size_t)g.nj_max * TOWER_K_LRNPOOL_P;
    if (!gb && !din) {
        tower_cuda_die("lrn + maxpool backward", "neither din nor the bf16 gradient to write "
                       "(a caller's error)", __FILE__, __LINE__);
    }
    dim3 threads(TOWER_K_LRNPOOL_P, TOWER_K_LRNPOOL_LANES);
    unsigned blocks = tile_blocks(g.bwd_tiles);
    cudaStream_t st = CU_STREAM(stream);
    if (gb && in16) {
        lrn_maxpool_backward_g_h_kernel<<<blocks, threads, shared, st>>>(din, gb, dout, idx,
                                                                        in16, pw, g);
        LAUNCH_CHECK(lrn_maxpool_backward_g_h_kernel);
    } else if (gb) {
        lrn_maxpool_backward_g_kernel<<<blocks, threads, shared, st>>>(din, gb, dout, idx, in,
                                                                      pw, g);
        LAUNCH_CHECK(lrn_maxpool_backward_g_kernel);
    } else if (in16) {
        lrn_maxpool_backward_h_kernel<<<blocks, threads, shared, st>>>(din, dout, idx, in16, pw,
                                                                      g);
        LAUNCH_CHECK(lrn_maxpool_backward_h_kernel);
    } else {
        lrn_maxpool_backward_kernel<<<blocks, threads, shared, st>>>(din, dout, idx, in, pw, g);
        LAUNCH_CHECK(lrn_maxpool_backward_kernel);
    }
}

/* ---- dropout: one thread per element; the mask is base_rng_uniform(key, i), the
 * same pure function the CPU uses, so masks (and outputs) are bit-identical. ---------- */

__global__ void dropout_forward_kernel(float *out, const float *in, size_t n, float p,
                                       uint64_t key, int train)
{
    FOR_EACH_ELEMENT(i, n) out[i] = tower_k_dropout_forward(in[i], i, p, key, train);
}

__global__ void dropout_backward_kernel(float *din, const float *dout, size_t n, float p,
                                        uint64_t key)
{
    FOR_EACH_ELEMENT(i, n) din[i] = tower_k_dropout_backward(dout[i], i, p, key);
}

extern "C" void tower_dropout_forward_cuda(float *out, const float *in, size_t n, float p,
                                           uint64_t key, int train, void *stream)
{
    if (n == 0) return;
    dropout_forward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        out, in, n, p, key, train);
    LAUNCH_CHECK(dropout_forward_kernel);
}

extern "C" void tower_dropout_backward_cuda(float *din, const float *dout, size_t n, float p,
                                            uint64_t key, void *stream)
{
    if (n == 0) return;
    dropout_backward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                              CU_STREAM(stream)>>>(din, dout, n, p, key);
    LAUNCH_CHECK(dropout_backward_kernel);
}

/* Inverted dropout: the same mask, kept units times 1 / (1 - p) (rounded to float on the
 * host, as layers_cpu.c does), evaluation the identity. One thread per element. */
__global__ void dropout_inv_forward_kernel(float *out, const float *in, size_t n, float p,
                                           float scale, uint64_t key, int train)
{
    FOR_EACH_ELEMENT(i, n) out[i] = tower_k_dropout_inv_forward(in[i], i, p, scale, key, train);
}

__global__ void dropout_inv_backward_kernel(float *din, const float *dout, size_t n, float p,
                                            float scale, uint64_t key)
{
    FOR_EACH_ELEMENT(i, n) din[i] = tower_k_dropout_inv_backward(dout[i], i, p, scale, key);
}

extern "C" void tower_dropout_inverted_forward_cuda(float *out, const float *in, size_t n,
                                                    float p, uint64_t key, int train,
                                                    void *stream)
{
    if (n == 0) return;
    float scale = (float)(1.0 / (1.0 - (double)p));
    dropout_inv_forward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                 CU_STREAM(stream)>>>(out, in, n, p, scale, key, train);
    LAUNCH_CHECK(dropout_inv_forward_kernel);
}

extern "C" void tower_dropout_inverted_backward_cuda(float *din, const float *dout, size_t n,
                                                     float p, uint64_t key, void *stream)
{
    if (n == 0) return;
    float scale = (float)(1.0 / (1.0 - (double)p));
    dropout_inv_backward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                  CU_STREAM(stream)>>>(din, dout, n, p, scale, key);
    LAUNCH_CHECK(dropout_inv_backward_kernel);
}

/* ---- softmax cross-entropy over the gathered logits ----------------------------------
 * logits, probs (T, B, Vt): class c of sample b at (c / Vt) * B * Vt + b * Vt + c % Vt;
 * labels, losses (B). One block of SOFTMAX_THREADS threads per sample: thread t takes,
 * tower by tower, the classes j = t, t + SOFTMAX_THREADS, ... of the tower's row
 * (tower_k_logit_row: no division per class), so each class is one thread's and a block
 * holds ceil(Vt / SOFTMAX_THREADS) classes a thread a tower (4 for the paper's 2 x 500).
 * The max and the (double) sum are block reductions in a fixed order: xor-shuffle trees
 * within each warp, then the warps' results in warp order. The sum is in double, as on the
 * CPU; the summation order differs from the CPU's sequential one, so probs and losses agree
 * within rounding, not bit for bit. */
#define SOFTMAX_THREADS 128
#define SOFTMAX_WARPS (SOFTMAX_THREADS / 32)

/* The block's max of v: every thread gets the same value. sh: SOFTMAX_WARPS floats. */
static __device__ float softmax_block_max(float v, float *sh)
{
    for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    v = sh[0];
    for (int w = 1; w < SOFTMAX_WARPS; w++) v = fmaxf(v, sh[w]);
    return v;
}

/* The block's sum of v, the warps' sums added in warp order: every thread gets the same
 * bits. sh: SOFTMAX_WARPS doubles. */
static __device__ double softmax_block_sum(double v, double *sh)
{
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    v = sh[0];
    for (int w = 1; w < SOFTMAX_WARPS; w++) v += sh[w];
    return v;
}

__global__ void softmax_xent_forward_kernel(float *losses, float *probs, const float *logits,
                                            const int32_t *labels, int B, int T, int Vt)
{
    __shared__ float sh_max[SOFTMAX_WARPS];
    __shared__ double sh_sum[SOFTMAX_WARPS];
    int b = (int)blockIdx.x, tid = (int)threadIdx.x;
    float mx = -INFINITY;
    for (int t = 0; t < T; t++) {
        const float *x = logits + tower_k_logit_row(b, t, B, Vt);
        for (int j = tid; j < Vt; j += SOFTMAX_THREADS) mx = fmaxf(mx, x[j]);
    }
    mx = softmax_block_max(mx, sh_max);
    double sum = 0.0;
    for (int t = 0; t < T; t++) {
        size_t row = tower_k_logit_row(b, t, B, Vt);
        const float *x = logits + row;
        float *p = probs + row;
        for (int j = tid; j < Vt; j += SOFTMAX_THREADS) {
            float e = expf(x[j] - mx);
            p[j] = e;
            sum += e;
        }
    }
    sum = softmax_block_sum(sum, sh_sum);
    float inv = (float)(1.0 / sum);
    for (int t = 0; t < T; t++) {
        float *p = probs + tower_k_logit_row(b, t, B, Vt);
        for (int j = tid; j < Vt; j += SOFTMAX_THREADS) p[j] *= inv;
    }
    if (tid == 0) {
        int y = labels[b];
        losses[b] = (y >= 0 && y < T * Vt)
                        ? (float)(log(sum) + (double)mx - (double)logits[tower_k_logit_at(b, y, B, Vt)])
                        : nanf("");
    }
}

/* dlogits (B, Vt) for tower `slot`: (p - [c == label]) / B. One thread per element; the
 * same float operations as the CPU, so bit-identical given the same probs. */
__global__ void softmax_xent_backward_kernel(float *dlogits, const float *probs,
                                             const int32_t *labels, int B, int Vt, int slot)
{
    size_t n = (size_t)B * Vt;
    FOR_EACH_ELEMENT(i, n) dlogits[i] = tower_k_softmax_dlogit(probs, labels, i, B, Vt, slot);
}

extern "C" void tower_softmax_xent_forward_cuda(float *losses, float *probs,
                                                const float *logits, const int32_t *labels,
                                                int B, int T, int Vt, void *stream)
{
    if (B <= 0) return;
    softmax_xent_forward_kernel<<<(unsigned)B, SOFTMAX_THREADS, 0, CU_STREAM(stream)>>>(
        losses, probs, logits, labels, B, T, Vt);
    LAUNCH_CHECK(softmax_xent_forward_kernel);
}

extern "C" void tower_softmax_xent_backward_cuda(float *dlogits, const float *probs,
                                                 const int32_t *labels, int B, int T, int Vt,
                                                 int slot, void *stream)
{
    (void)T;
    size_t n = (size_t)B * Vt;
    if (n == 0) return;
    softmax_xent_backward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                   CU_STREAM(stream)>>>(dlogits, probs, labels, B, Vt, slot);
    LAUNCH_CHECK(softmax_xent_backward_kernel);
}

/* ---- the paper's SGD update: v <- momentum v - wd lr w - lr g; w <- w + v ---------------
 * w, v, g (n), one thread per element. tower_k_sgd rounds every operation on its own
 * (nvcc may not fuse them into FMAs), in layers_cpu.c's order: given the same gradients,
 * the GPU and CPU updates are bit-identical. */
__global__ void sgd_update_kernel(float *w, float *v, const float *g, size_t n, float lr,
                                  float momentum, float wd)
{
    FOR_EACH_ELEMENT(i, n) tower_k_sgd(w, v, g, i, lr, momentum, wd);
}

extern "C" void tower_sgd_update_cuda(float *w, float *v, const float *g, size_t n, float lr,
                                      float momentum, float wd, void *stream)
{
    if (n == 0) return;
    sgd_update_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        w, v, g, n, lr, momentum, wd);
    LAUNCH_CHECK(sgd_update_kernel);
}

/* The same update over a tower's whole parameter arena in one launch (tower_k_sgd_arena:
 * no weight decay inside the bias ranges). Bit-identical to the per-tensor launches. */
/* The bias ranges [b_off, b_off + b_count) of every layer of the plan. */
static tower_k_bias_ranges bias_ranges(const tower_plan *plan)
{
    tower_k_bias_ranges r;
    memset(&r, 0, sizeof r);
    r.n = plan->n_layers;
    for (int l = 0; l < plan->n_layers; l++) {
        r.lo[l] = plan->layer[l].b_off;
        r.hi[l] = plan->layer[l].b_off + plan->layer[l].b_count;
    }
    return r;
}

__global__ void sgd_arena_kernel(float *w, float *v, const float *g, size_t n, float lr,
                                 float momentum, float wd, tower_k_bias_ranges r)
{
    FOR_EACH_ELEMENT(i, n) tower_k_sgd_arena(w, v, g, i, lr, momentum, wd, &r);
}

extern "C" void tower_sgd_arena_cuda(float *params, float *mom, const float *grads,
                                     const tower_plan *plan, float lr, float momentum,
                                     float wd, void *stream)
{
    tower_k_bias_ranges r = bias_ranges(plan);
    size_t n = plan->n_params;
    if (n == 0) return;
    sgd_arena_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        params, mom, grads, n, lr, momentum, wd, r);
    LAUNCH_CHECK(sgd_arena_kernel);
}

/* ---- Adam: w, m, v, g (n), one thread per element; tower_k_adam rounds every operation
 * on its own in layers_cpu.c's order: bit-identical to the CPU given the same gradients
 * (and the same host-computed scalars). ---------------------------------------------- */
__global__ void adam_update_kernel(float *w, float *m, float *v, const float *g, size_t n,
                                   float step_size, float beta1, float beta2, float eps,
                                   float bc2_sqrt, float wd)
{
    FOR_EACH_ELEMENT(i, n) tower_k_adam(w, m, v, g, i, step_size, beta1, beta2, eps, bc2_sqrt, wd);
}

extern "C" void tower_adam_update_cuda(float *w, float *m, float *v, const float *g, size_t n,
                                       float step_size, float beta1, float beta2, float eps,
                                       float bc2_sqrt, float wd, void *stream)
{
    if (n == 0) return;
    adam_update_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        w, m, v, g, n, step_size, beta1, beta2, eps, bc2_sqrt, wd);
    LAUNCH_CHECK(adam_update_kernel);
}

__global__ void adam_arena_kernel(float *w, float *m, float *v, const float *g, size_t n,
                                  float step_size, float beta1, float beta2, float eps,
                                  float bc2_sqrt, float wd, tower_k_bias_ranges r)
{
    FOR_EACH_ELEMENT(i, n)
        tower_k_adam_arena(w, m, v, g, i, step_size, beta1, beta2, eps, bc2_sqrt, wd, &r);
}

extern "C" void tower_adam_arena_cuda(float *params, float *m, float *v, const float *grads,
                                      const tower_plan *plan, float step_size, float beta1,
                                      float beta2, float eps, float bc2_sqrt, float wd,
                                      void *stream)
{
    tower_k_bias_ranges r = bias_ranges(plan);
    size_t n = plan->n_params;
    if (n == 0) return;
    adam_arena_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(
        params, m, v, grads, n, step_size, beta1, beta2, eps, bc2_sqrt, wd, r);
    LAUNCH_CHECK(adam_arena_kernel);
}

/* ---- the same kernels with their per-step scalars in device memory (tower_k_step) -----
 * What a captured step replays (net_cuda.cu): each thread reads the struct, then does
 * exactly what the by-value kernel above does with those values. */

__global__ void dropout_step_forward_kernel(float *out, const float *in, size_t n, float p,
                                            float scale, int inverted, const uint64_t *key,
                                            int train)
{
    uint64_t k = *key;
    if (inverted)
        FOR_EACH_ELEMENT(i, n) out[i] = tower_k_dropout_inv_forward(in[i], i, p, scale, k, train);
    else
        FOR_EACH_ELEMENT(i, n) out[i] = tower_k_dropout_forward(in[i], i, p, k, train);
}

__global__ void dropout_step_backward_kernel(float *din, const float *dout, size_t n, float p,
                                             float scale, int inverted, const uint64_t *key)
{
    uint64_t k = *key;
    if (inverted)
        FOR_EACH_ELEMENT(i, n) din[i] = tower_k_dropout_inv_backward(dout[i], i, p, scale, k);
    else
        FOR_EACH_ELEMENT(i, n) din[i] = tower_k_dropout_backward(dout[i], i, p, k);
}

extern "C" void tower_dropout_step_forward_cuda(float *out, const float *in, size_t n, float p,
                                                int inverted, const uint64_t *key, int train,
                                                void *stream)
{
    if (n == 0) return;
    float scale = (float)(1.0 / (1.0 - (double)p)); /* as tower_dropout_inverted_*_cuda */
    dropout_step_forward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                  CU_STREAM(stream)>>>(out, in, n, p, scale, inverted, key,
                                                       train);
    LAUNCH_CHECK(dropout_step_forward_kernel);
}

extern "C" void tower_dropout_step_backward_cuda(float *din, const float *dout, size_t n,
                                                 float p, int inverted, const uint64_t *key,
                                                 void *stream)
{
    if (n == 0) return;
    float scale = (float)(1.0 / (1.0 - (double)p));
    dropout_step_backward_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                   CU_STREAM(stream)>>>(din, dout, n, p, scale, inverted, key);
    LAUNCH_CHECK(dropout_step_backward_kernel);
}

/* The updates: wb non-NULL (bf16) also writes each new weight's bf16 copy, and one thread
 * says the copy is current (*wb_current = 1: the next forward's cast_weights_bf16_kernel
 * then has nothing to do); the next kernel on the stream sees both, after this one. A
 * skipped update changes neither the weights nor the copy, nor the flag. */
__global__ void sgd_arena_step_kernel(float *w, float *v, const float *g, size_t n,
                                      const tower_k_step *s, const double *loss,
                                      tower_k_bias_ranges r, uint16_t *wb, int *wb_current)
{
    if (!tower_k_update_applies(s, *loss)) return;
    float lr = s->lr, momentum = s->momentum, wd = s->weight_decay;
    FOR_EACH_ELEMENT(i, n) {
        tower_k_sgd_arena(w, v, g, i, lr, momentum, wd, &r);
        if (wb) tower_k_cast_bf16(wb, w, i);
    }
    if (wb && blockIdx.x == 0 && threadIdx.x == 0) *wb_current = 1;
}

__global__ void adam_arena_step_kernel(float *w, float *m, float *v, const float *g, size_t n,
                                       const tower_k_step *s, const double *loss,
                                       tower_k_bias_ranges r, uint16_t *wb, int *wb_current)
{
    if (!tower_k_update_applies(s, *loss)) return;
    float step_size = s->step_size, beta1 = s->beta1, beta2 = s->beta2, eps = s->eps,
          bc2_sqrt = s->bc2_sqrt, wd = s->weight_decay;
    FOR_EACH_ELEMENT(i, n) {
        tower_k_adam_arena(w, m, v, g, i, step_size, beta1, beta2, eps, bc2_sqrt, wd, &r);
        if (wb) tower_k_cast_bf16(wb, w, i);
    }
    if (wb && blockIdx.x == 0 && threadIdx.x == 0) *wb_current = 1;
}

/* The weights' bf16 copy at a forward pass's start, unless the update made it current: the
 * flag is read on the device, so a captured graph decides at each replay. A grid of at most
 * CAST_WEIGHTS_BLOCKS blocks (about 8 a GPU's SM), each thread striding over the arena: when
 * the copy is current its threads only read the flag, instead of a block per 256 weights
 * starting to do so. */
#define CAST_WEIGHTS_BLOCKS 1024u
__global__ void cast_weights_bf16_kernel(uint16_t *dst, const float *src, size_t n,
                                         const int *current)
{
    if (*current) return;
    FOR_EACH_ELEMENT(i, n) tower_k_cast_bf16(dst, src, i);
}

extern "C" void tower_cast_weights_bf16_cuda(uint16_t *dst, const float *src, size_t n,
                                             const int *current, void *stream)
{
    if (n == 0) return;
    unsigned blocks = tower_cuda_blocks(n);
    blocks = blocks < CAST_WEIGHTS_BLOCKS ? blocks : CAST_WEIGHTS_BLOCKS;
    cast_weights_bf16_kernel<<<blocks, TOWER_CUDA_THREADS, 0, CU_STREAM(stream)>>>(dst, src, n,
                                                                                 current);
    LAUNCH_CHECK(cast_weights_bf16_kernel);
}

extern "C" void tower_update_arena_step_cuda(float *params, float *m, float *v,
                                             const float *grads, const tower_plan *plan,
                                             int adam, const tower_k_step *s,
                                             const double *loss, uint16_t *wb,
                                             int *wb_current, void *stream)
{
    tower_k_bias_ranges r = bias_ranges(plan);
    size_t n = plan->n_params;
    if (n == 0) return;
    if (adam) {
        adam_arena_step_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                 CU_STREAM(stream)>>>(params, m, v, grads, n, s, loss, r, wb,
                                                      wb_current);
        LAUNCH_CHECK(adam_arena_step_kernel);
    } else {
        sgd_arena_step_kernel<<<tower_cuda_blocks(n), TOWER_CUDA_THREADS, 0,
                                CU_STREAM(stream)>>>(params, m, grads, n, s, loss, r, wb,
                                                     wb_current);
        LAUNCH_CHECK(sgd_arena_step_kernel);
    }
}

/* The mean loss on the device (tower_k_loss_mean: one thread, the host's order). */
__global__ void loss_mean_kernel(double *out, const float *losses, int B)
{
    *out = tower_k_loss_mean(losses, B);
}

extern "C" void tower_loss_mean_cuda(double *out, const float *losses, int B, void *stream)
{
    loss_mean_kernel<<<1, 1, 0, CU_STREAM(stream)>>>(out, losses, B);
    LAUNCH_CHECK(loss_mean_kernel);
}
