/* kernels.h: what one CUDA thread of each layer kernel computes, as __host__ __device__
 * functions. layers_cuda.cu's kernels are grid-stride loops around these; because they
 * are plain C as well, tests/cuda/test_kernels_host.c runs them on the CPU against
 * layers_cpu.c, so the index arithmetic of every kernel is tested on machines without
 * a GPU. Internal to the CUDA tower backend. Layouts are those of tower.h (NCHW). */
#ifndef TOWER_CUDA_KERNELS_H
#define TOWER_CUDA_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#endif

#include "tower/tower.h" /* BASE_HD, base_rng_uniform */

/* Exactly rounded float operations: nvcc would otherwise fuse a*b+c into an FMA; the host
 * compiler (x86-64 without -mfma) rounds every operation already. */
#if defined(__CUDA_ARCH__)
#define TK_MUL(a, b) __fmul_rn((a), (b))
#define TK_ADD(a, b) __fadd_rn((a), (b))
#define TK_SUB(a, b) __fsub_rn((a), (b))
#define TK_DIV(a, b) __fdiv_rn((a), (b))
#define TK_SQRT(a) __fsqrt_rn(a)
#else
#define TK_MUL(a, b) ((a) * (b))
#define TK_ADD(a, b) ((a) + (b))
#define TK_SUB(a, b) ((a) - (b))
#define TK_DIV(a, b) ((a) / (b))
#define TK_SQRT(a) sqrtf(a)
#endif

/* ---- GEMM: row-major as cuBLAS's column-major ------------------------------------------
 * A row-major (m x n) matrix with leading dimension ld is, byte for byte, the column-major
 * (n x m) matrix with the same ld: its transpose. So the row-major C = op(A) op(B)
 * (C m x n) is the column-major C^T = op(B)^T op(A)^T (n x m): swap the two operands and
 * the sizes m and n, keep each operand's transpose flag and leading dimension. */
typedef struct {
    int trans_first, trans_second; /* the column-major call's op flags */
    int m, n, k;                   /* its sizes */
    const float *first, *second;
    int ld_first, ld_second;
} tower_k_gemm;

BASE_HD tower_k_gemm tower_k_gemm_rm(int trans_a, int trans_b, int m, int n, int k,
                                      const float *A, int lda, const float *B, int ldb)
{
    tower_k_gemm g;
    g.trans_first = trans_b;
    g.trans_second = trans_a;
    g.m = n;
    g.n = m;
    g.k = k;
    g.first = B;
    g.ld_first = ldb;
    g.second = A;
    g.ld_second = lda;
    return g;
}

/* ---- bf16: the GEMM operands of --precision bf16 ---------------------------------------
 * bf16 is the top half of an IEEE float: the sign, the same 8 exponent bits, 7 stored
 * mantissa bits (8 significant with the implicit one), so its range is fp32's and only the
 * mantissa is shorter. Held as uint16_t, so that plain C (the host tests) reads it. */

/* x rounded to the nearest bf16, ties to even (the rounding of every bf16 store here);
 * overflow gives +-inf, subnormals round as the normal numbers do (same exponent field),
 * and every NaN gives 0x7fff, the canonical NaN (CUDA's own software conversion's). On the
 * device the hardware conversion (cvt.rn.bf16.f32, sm_80 and later); on the host the same
 * rounding in integer arithmetic: adding 0x7fff plus the lowest kept bit carries into the
 * kept bits exactly when the dropped half is above one half, or equal with the kept part
 * odd. tests/cuda/test_kernels_host.c checks the host form against an independent
 * reference (and PyTorch's rounding when it is installed), the GPU test the device's bits
 * against the host's. */
BASE_HD uint16_t tower_k_bf16(float x)
{
#if defined(__CUDA_ARCH__)
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}

/* the float a bf16 stands for (exact) */
BASE_HD float tower_k_bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
#if defined(__CUDA_ARCH__)
    x = __uint_as_float(u);
#else
    memcpy(&x, &u, sizeof x);
#endif
    return x;
}

/* element i of the cast of a float tensor: the weights' copy, the fc GEMMs' operands */
BASE_HD void tower_k_cast_bf16(uint16_t *dst, const float *src, size_t i)
{
    dst[i] = tower_k_bf16(src[i]);
}

/* A tensor read as fp32 values: fp32 itself, or bf16 widened (exactly). The activations a
 * row keeps in bf16 (--precision bf16 on cuDNN: net_cuda.cu's kept activations) are read
 * by the same functions as fp32 ones. A kernel passes `bf16` as a compile-time constant (a
 * template parameter), so that the test folds away once these are inlined. */
typedef struct {
    const void *p;
    int bf16; /* 1: p is uint16_t bf16, 0: float */
} tower_k_src;

BASE_HD tower_k_src tower_k_src_f32(const float *p)
{
    tower_k_src s = {p, 0};
    return s;
}

BASE_HD tower_k_src tower_k_src_of(const void *p, int bf16)
{
    tower_k_src s = {p, bf16};
    return s;
}

BASE_HD float tower_k_ld(tower_k_src s, uint32_t i)
{
    return s.bf16 ? tower_k_bf16_float(((const uint16_t *)s.p)[i]) : ((const float *)s.p)[i];
}

/* ---- 32-bit indices, division by a layer constant -----------------------------------
 * The layer kernels index their tensors in 32 bits (the launchers refuse a tensor of 2^31
 * elements or more) and split an index into coordinates by the layer's sizes, which are
 * known only at run time: by a tower_k_div, base.h's base_div (a multiply-high, an add and
 * a shift; its comment has the proof), made once per launch on the host. */
typedef base_div tower_k_div;

/* d = 0, an empty axis, keeps d = 0 with 1's magic number: nothing is divided by it. */
BASE_HD tower_k_div tower_k_div_of(uint32_t d) { return base_div_of(d); }

/* n / v.d for n < 2^31 */
BASE_HD uint32_t tower_k_quo(tower_k_div v, uint32_t n) { return base_div_quo(v, n); }

/* 1 when a tensor of n elements can be indexed in 32 bits (every index below 2^31) */
BASE_HD int tower_k_fits32(size_t n) { return n <= (size_t)INT32_MAX; }

/* ---- convolution over a chunk of nb images: one GEMM per chunk -------------------------
 * The GPU backend convolves nb images with one SGEMM instead of nb small ones. Its col
 * matrix (Ci*K*K, nb*Ho*Wo) holds the im2col of the nb images side by side: row
 * r = (c, kh, kw), column q = (n, oh, ow), entry the pixel of in (nb, Ci, H, W) that tap
 * (kh, kw) of image n sees at output (oh, ow), 0 in the padding. The GEMM's product and
 * the output gradient it reads are then (Co, nb*HWo), "CNHW", and a transposing pass
 * moves them from / to the (nb, Co, HWo) activations. */

/* The beta of a chunk's dw and db GEMMs: the first chunk (n0 0) writes them unless the
 * call accumulates (accumulate_dw), the later chunks add to what it wrote. */
BASE_HD float tower_k_chunk_beta(int accumulate_dw, int n0)
{
    return accumulate_dw || n0 > 0 ? 1.0f : 0.0f;
}

/* Floats of scratch a chunk of `images` images needs: its col (Ci*K*K, images*HWo), the
 * (Co, images*HWo) product or output gradient after it, then images*HWo ones (the vector
 * the bias-gradient GEMV sums each row of the output gradient with). */
BASE_HD size_t tower_k_conv_scratch_size(int Ci, int Co, int K, int Ho, int Wo, int images)
{
    return (size_t)images * ((size_t)Ci * K * K + (size_t)Co + 1) * Ho * Wo;
}

/* The same scratch with bf16 GEMM operands (--precision bf16), in bytes, each part starting
 * on 256 bytes: col, the chunk's bf16 im2col (CKK, images*HWo), which the input-gradient
 * GEMM then overwrites with its fp32 (CKK, images*HWo) product when din is wanted (the
 * two are used one after the other), so 4 bytes an entry with din and 2 without; prod,
 * the forward's fp32 (Co, images*HWo) product or the backward's bf16 output gradient in
 * its first half; ones, images*HWo bf16 ones (the bias gradient's GEMM). */
typedef struct {
    size_t col, prod, ones, bytes; /* byte offsets of the parts; the total */
} tower_k_conv_scratch_bf16;

BASE_HD size_t tower_k_round256(size_t n) { return (n + 255) & ~(size_t)255; }

BASE_HD tower_k_conv_scratch_bf16 tower_k_conv_scratch_bf16_of(int Ci, int Co, int K, int Ho,
                                                               int Wo, int images, int din)
{
    size_t nq = (size_t)images * Ho * Wo;
    tower_k_conv_scratch_bf16 s;
    s.col = 0;
    s.prod = tower_k_round256((din ? 4 : 2) * (size_t)Ci * K * K * nq);
    s.ones = s.prod + tower_k_round256(4 * (size_t)Co * nq);
    s.bytes = s.ones + tower_k_round256(2 * nq);
    return s;
}

/* One chunk's shape and the divisors its kernels split indices by; made on the host once
 * per launch (tower_k_conv_geom_make), passed to the kernels by value. */
typedef struct {
    int Ci, H, W, K, S, P, Ho, Wo; /* the layer */
    int kq, kr;                    /* (K - 1) / S and (K - 1) % S: tower_k_taps_at */
    uint32_t nb;                   /* images in the chunk */
    tower_k_div nq, hwo, wo;       /* nb*Ho*Wo (col's columns), Ho*Wo, Wo: im2col */
    tower_k_div ci, hw, w, s;      /* Ci, H*W, W and the stride: col2im */
} tower_k_conv_geom;

/* Fills g; returns 0, or -1 when the chunk's col or input has 2^31 elements or more (too
 * large for the kernels' 32-bit indices: g is then not to be used). */
BASE_HD int tower_k_conv_geom_make(tower_k_conv_geom *g, int nb, int Ci, int H, int W, int K,
                                   int S, int P, int Ho, int Wo)
{
    size_t HWo = (size_t)Ho * Wo, nq = (size_t)nb * HWo;
    g->Ci = Ci, g->H = H, g->W = W, g->K = K, g->S = S, g->P = P, g->Ho = Ho, g->Wo = Wo;
    g->kq = (K - 1) / S, g->kr = (K - 1) % S;
    g->nb = (uint32_t)nb;
    g->nq = tower_k_div_of((uint32_t)nq);
    g->hwo = tower_k_div_of((uint32_t)HWo);
    g->wo = tower_k_div_of((uint32_t)Wo);
    g->ci = tower_k_div_of((uint32_t)Ci);
    g->hw = tower_k_div_of((uint32_t)H * (uint32_t)W);
    g->w = tower_k_div_of((uint32_t)W);
    g->s = tower_k_div_of((uint32_t)S);
    return tower_k_fits32((size_t)Ci * K * K * nq) && tower_k_fits32((size_t)nb * Ci * H * W)
               ? 0
               : -1;
}

/* Position e = (c, q) of a chunk's im2col (e < Ci * nb*HWo, q the column), split once:
 * the input plane (n, c) it reads, the col index of its first entry (row (c, 0, 0),
 * column q) and the input coordinates of tap (0, 0). */
typedef struct {
    const float *x;
    uint32_t at;
    int ih0, iw0;
} tower_k_im2col_pos;

BASE_HD tower_k_im2col_pos tower_k_im2col_at(const float *in, uint32_t e, tower_k_conv_geom g)
{
    uint32_t nq = g.nq.d, c = tower_k_quo(g.nq, e), q = e - c * nq;
    uint32_t n = tower_k_quo(g.hwo, q), p = q - n * g.hwo.d;
    uint32_t oh = tower_k_quo(g.wo, p), ow = p - oh * g.wo.d;
    tower_k_im2col_pos a;
    a.x = in + (n * (uint32_t)g.Ci + c) * g.hw.d;
    a.at = c * (uint32_t)(g.K * g.K) * nq + q;
    a.ih0 = (int)oh * g.S - g.P;
    a.iw0 = (int)ow * g.S - g.P;
    return a;
}

/* im2col at position e = (c, q) of the chunk: writes the K*K col entries of channel c in
 * column q, rows (c, kh, kw) in order. One thread per position: its index is split once
 * and every tap after it costs an add, a bounds test, a load and a store. */
BASE_HD void tower_k_im2col_taps(float *col, const float *in, uint32_t e, tower_k_conv_geom g)
{
    tower_k_im2col_pos a = tower_k_im2col_at(in, e, g);
    uint32_t nq = g.nq.d, at = a.at;
    for (int kh = 0; kh < g.K; kh++) {
        int ih = a.ih0 + kh, row_in = ih >= 0 && ih < g.H;
        for (int kw = 0; kw < g.K; kw++, at += nq) {
            int iw = a.iw0 + kw;
            col[at] = row_in && iw >= 0 && iw < g.W ? a.x[ih * g.W + iw] : 0.0f;
        }
    }
}

/* The same entries rounded to bf16 (tower_k_bf16): the col of --precision bf16, half the
 * bytes. Bit for bit tower_k_im2col_taps followed by the rounding (0 stays 0). */
BASE_HD void tower_k_im2col_taps_bf16(uint16_t *col, const float *in, uint32_t e,
                                      tower_k_conv_geom g)
{
    tower_k_im2col_pos a = tower_k_im2col_at(in, e, g);
    uint32_t nq = g.nq.d, at = a.at;
    for (int kh = 0; kh < g.K; kh++) {
        int ih = a.ih0 + kh, row_in = ih >= 0 && ih < g.H;
        for (int kw = 0; kw < g.K; kw++, at += nq) {
            int iw = a.iw0 + kw;
            col[at] = tower_k_bf16(row_in && iw >= 0 && iw < g.W ? a.x[ih * g.W + iw] : 0.0f);
        }
    }
}

/* The taps along one axis (of O outputs) that reach input coordinate x: k = k0 + j*S
 * from output o = o0 - j, j = 0 .. n-1 (x = o*S - P + k with 0 <= k < K, 0 <= o < O), in
 * increasing k. One division: with t = x + P = ot*S + r, tap r comes from ot, and
 * k = r + j*S <= K - 1 holds for j <= (K - 1 - r) / S = kq - (r > kr) (K - 1 = kq*S + kr;
 * -1, no tap, when r > K - 1). */
typedef struct {
    int k0, o0, n;
} tower_k_taps;

BASE_HD tower_k_taps tower_k_taps_at(uint32_t x, int O, tower_k_conv_geom g)
{
    uint32_t t = x + (uint32_t)g.P;
    int ot = (int)tower_k_quo(g.s, t), r = (int)(t - (uint32_t)ot * g.s.d);
    int j_lo = ot >= O ? ot - O + 1 : 0; /* o <= O - 1 */
    int j_hi = g.kq - (r > g.kr);        /* k <= K - 1 */
    if (j_hi > ot) j_hi = ot;            /* o >= 0 */
    tower_k_taps a;
    a.k0 = r + j_lo * g.S;
    a.o0 = ot - j_lo;
    a.n = j_hi >= j_lo ? j_hi - j_lo + 1 : 0;
    return a;
}

/* din element e = (n, c, ih, iw) of the chunk (nb, Ci, H, W): start + the col entries that
 * came from that pixel. A tap (kh, kw) reaches a pixel from at most one output position,
 * so the sum runs over the taps in (kh, kw) order: the order in which layers_cpu.c's
 * col2im adds them (bit-identical). The taps come from tower_k_taps_at along each axis:
 * no division inside the loops. */
BASE_HD float tower_k_col2im_pixel(const float *col, float start, uint32_t e,
                                   tower_k_conv_geom g)
{
    uint32_t plane = tower_k_quo(g.hw, e), pix = e - plane * g.hw.d;
    uint32_t n = tower_k_quo(g.ci, plane), c = plane - n * g.ci.d;
    uint32_t ih = tower_k_quo(g.w, pix), iw = pix - ih * g.w.d;
    tower_k_taps th = tower_k_taps_at(ih, g.Ho, g), tw = tower_k_taps_at(iw, g.Wo, g);
    uint32_t nq = g.nq.d, K = (uint32_t)g.K, S = g.s.d;
    const float *img = col + n * g.hwo.d; /* image n's columns */
    float s = start;
    for (int jh = 0; jh < th.n; jh++) {
        uint32_t kh = (uint32_t)th.k0 + jh * S, oh = (uint32_t)(th.o0 - jh);
        const float *row = img + (c * K + kh) * K * nq + oh * (uint32_t)g.Wo; /* (c, kh, 0) */
        for (int jw = 0; jw < tw.n; jw++) {
            uint32_t kw = (uint32_t)tw.k0 + jw * S, ow = (uint32_t)(tw.o0 - jw);
            s += row[kw * nq + ow];
        }
    }
    return s;
}

/* An (nb, C, HW) tensor and its (C, nb*HW) transpose, for the transposing passes. */
typedef struct {
    uint32_t nb;
    tower_k_div c, hw;
} tower_k_cnhw;

BASE_HD tower_k_cnhw tower_k_cnhw_make(int nb, int C, int HW)
{
    tower_k_cnhw t;
    t.nb = (uint32_t)nb;
    t.c = tower_k_div_of((uint32_t)C);
    t.hw = tower_k_div_of((uint32_t)HW);
    return t;
}

/* Where element i of the (nb, C, HW) tensor sits in the transpose; *c gets its channel. */
BASE_HD uint32_t tower_k_cnhw_at(uint32_t i, tower_k_cnhw t, uint32_t *c)
{
    uint32_t nc = tower_k_quo(t.hw, i), p = i - nc * t.hw.d; /* nc = n*C + c */
    uint32_t n = tower_k_quo(t.c, nc);
    *c = nc - n * t.c.d;
    return (*c * t.nb + n) * t.hw.d + p;
}

/* Conv output element i of the chunk (nb, Co, HWo): the GEMM's product (Co, nb*HWo), plus
 * the earlier value when accumulating (a second source tower), plus the bias if any:
 * the CPU's order (GEMM with beta, then the bias). */
BASE_HD float tower_k_conv_out(const float *prod, const float *prev, const float *b, uint32_t i,
                               tower_k_cnhw t, int accumulate)
{
    uint32_t c;
    float y = prod[tower_k_cnhw_at(i, t, &c)];
    if (accumulate) y += prev[i];
    if (b) y += b[c];
    return y;
}

/* ReLU and its gradient given the ReLU's output, as layers_cpu.c computes them. */
BASE_HD float tower_k_relu(float x) { return x > 0.0f ? x : 0.0f; }
BASE_HD float tower_k_relu_grad(float dout, float out) { return out > 0.0f ? dout : 0.0f; }

/* The transposing pass of a chunk's output gradient, element i of dout (nb, Co, HWo): its
 * value, masked by the ReLU's output act > 0 in the fused form (act not NULL), stored at
 * its place in the (Co, nb*HWo) matrix g the chunk's GEMMs read; the bf16 form rounds it
 * (--precision bf16), bit for bit the fp32 form followed by tower_k_bf16. */
BASE_HD float tower_k_grad_in(const float *dout, const float *act, uint32_t i)
{
    return act ? tower_k_relu_grad(dout[i], act[i]) : dout[i];
}

BASE_HD void tower_k_to_cnhw(float *g, const float *dout, const float *act, uint32_t i,
                             tower_k_cnhw t)
{
    uint32_t c;
    g[tower_k_cnhw_at(i, t, &c)] = tower_k_grad_in(dout, act, i);
}

BASE_HD void tower_k_to_cnhw_bf16(uint16_t *g, const float *dout, const float *act, uint32_t i,
                                  tower_k_cnhw t)
{
    uint32_t c;
    g[tower_k_cnhw_at(i, t, &c)] = tower_k_bf16(tower_k_grad_in(dout, act, i));
}

/* tanh and its gradient from its output. The device's tanhf is not glibc's: GPU and CPU
 * agree within a few ulps here, not bit for bit (the GPU tests' tolerance). */
BASE_HD float tower_k_tanh(float x) { return tanhf(x); }
BASE_HD float tower_k_tanh_grad(float dout, float out)
{
    return TK_MUL(dout, TK_SUB(1.0f, TK_MUL(out, out)));
}

/* The channel of element i of a (B, C, HW) tensor, (i / HW) % C: which bias it gets. */
BASE_HD uint32_t tower_k_channel(uint32_t i, tower_k_div C, tower_k_div HW)
{
    uint32_t bc = tower_k_quo(HW, i);
    return bc - tower_k_quo(C, bc) * C.d;
}

/* ---- the passes around cuDNN's bf16 convolutions (--precision bf16 --conv cudnn) ------
 * cuDNN reads and writes bf16 tensors there (NCHW, fp32 sums inside each call). A row whose
 * ReLU'd output only its own LRN and max-pool read (the paper's conv1 and conv2) keeps that
 * activation in bf16 alone; the other activations between layers stay fp32, as on the GEMM
 * path. One thread per element. */

/* Element i of a conv layer's fp32 output (B, Co, HWo) from cuDNN's bf16 result y, in
 * tower_k_conv_out's order: y, plus the earlier sources' sum when accumulate, plus the
 * bias (b non-NULL: the first source). The caller applies the ReLU after the last source. */
BASE_HD float tower_k_cudnn_out(const uint16_t *y, const float *prev, const float *b, uint32_t i,
                                tower_k_div C, tower_k_div HW, int accumulate)
{
    float v = tower_k_bf16_float(y[i]);
    if (accumulate) v += prev[i];
    if (b) v += b[tower_k_channel(i, C, HW)];
    return v;
}

/* Element i of the bf16 output gradient cuDNN reads: the ReLU's mask applied when act is
 * its output (act.p non-NULL; fp32, or the kept bf16 one), then rounded; with an fp32 act
 * bit for bit tower_k_to_cnhw_bf16's value, in place. */
BASE_HD void tower_k_grad_bf16(uint16_t *g, const float *dout, tower_k_src act, uint32_t i)
{
    float d = dout[i];
    g[i] = tower_k_bf16(act.p ? tower_k_relu_grad(d, tower_k_ld(act, i)) : d);
}

/* Element i of a kept activation (a row that keeps its ReLU's output in bf16, net_cuda.cu):
 * tower_k_cudnn_out's value through the ReLU, rounded to bf16, where the fp32 form would
 * store the unrounded value. */
BASE_HD void tower_k_cudnn_act_bf16(uint16_t *a, const uint16_t *y, const float *prev,
                                    const float *b, uint32_t i, tower_k_div C, tower_k_div HW,
                                    int accumulate)
{
    a[i] = tower_k_bf16(tower_k_relu(tower_k_cudnn_out(y, prev, b, i, C, HW, accumulate)));
}

/* dst[i] = src[i] (bf16, exact in fp32), or dst[i] + src[i] when accumulate: cuDNN's bf16
 * input gradient into the fp32 din */
BASE_HD void tower_k_add_bf16(float *dst, const uint16_t *src, uint32_t i, int accumulate)
{
    float v = tower_k_bf16_float(src[i]);
    dst[i] = accumulate ? dst[i] + v : v;
}

/* Element i of a packed (rows, kk) bf16 block added to (accumulate) or written into the
 * fp32 (rows, ld) block dw: the weight gradient of one source, into its column block of
 * the layer's dw. */
BASE_HD void tower_k_add_bf16_block(float *dw, uint32_t ld, const uint16_t *src, uint32_t i,
                                    tower_k_div kk, int accumulate)
{
    uint32_t r = tower_k_quo(kk, i);
    size_t at = (size_t)r * ld + (i - r * kk.d);
    float v = tower_k_bf16_float(src[i]);
    dw[at] = accumulate ? dw[at] + v : v;
}

/* fc bias gradient of unit o: start + dout[0][o] + dout[1][o] + ... in batch order, as
 * layers_cpu.c adds them (bit-identical). */
BASE_HD float tower_k_fc_bias_grad(const float *dout, float start, int o, int B, int Cout)
{
    float s = start;
    for (int b = 0; b < B; b++) s += dout[(size_t)b * Cout + o];
    return s;
}

/* ---- local response normalisation over channels; in, out, scale (B, C, HW) -------- */

/* The channels lo..hi (0-based, inclusive) of the window around channel c of C. */
BASE_HD int tower_k_lrn_lo(int c, int half) { return c - half < 0 ? 0 : c - half; }
BASE_HD int tower_k_lrn_hi(int c, int half, int C) { return c + half > C - 1 ? C - 1 : c + half; }

/* k + alpha * the sum of squares of channels lo..hi at one position, in channel order:
 * x[base] is the position's channel 0, hw the channel stride. The fused kernels
 * recompute it with these same operations, so it is bit for bit what forward stored. */
BASE_HD float tower_k_lrn_denom(tower_k_src x, uint32_t base, uint32_t hw, int lo, int hi,
                                float k, float alpha)
{
    float sum = 0.0f;
    for (int j = lo; j <= hi; j++) {
        float xj = tower_k_ld(x, base + (uint32_t)j * hw);
        sum += xj * xj;
    }
    return k + alpha * sum;
}

/* Element i: writes scale[i] = k + alpha * sum of squares over the n channels around c
 * (in channel order) and returns out[i] = in[i] * scale^-beta. */
BASE_HD float tower_k_lrn_forward(float *scale, const float *in, uint32_t i, tower_k_div C,
                                  tower_k_div HW, int half, float k, float alpha, float beta)
{
    int c = (int)tower_k_channel(i, C, HW), nc = (int)C.d;
    uint32_t base = i - (uint32_t)c * HW.d; /* element (b, 0, p) */
    float s = tower_k_lrn_denom(tower_k_src_f32(in), base, HW.d, tower_k_lrn_lo(c, half),
                                tower_k_lrn_hi(c, half, nc), k, alpha);
    scale[i] = s;
    return in[i] * tower_lrn_pow(s, beta);
}

/* The input gradient at one element from its output gradient, s^-beta, its input and acc,
 * the sum of dout out / s over its window: shared by the unfused and fused backward. */
BASE_HD float tower_k_lrn_din(float dout, float pw, float in, float acc, float alpha,
                              float beta)
{
    return dout * pw - 2.0f * alpha * beta * in * acc;
}

/* din[m] = dout[m] s_m^-beta - 2 alpha beta in[m] sum_{|i-m| <= n/2} dout[i] out[i] / s[i] */
BASE_HD float tower_k_lrn_backward(const float *dout, const float *in, const float *out,
                                   const float *scale, uint32_t i, tower_k_div C,
                                   tower_k_div HW, int half, float alpha, float beta)
{
    int c = (int)tower_k_channel(i, C, HW), nc = (int)C.d;
    uint32_t base = i - (uint32_t)c * HW.d;
    int lo = tower_k_lrn_lo(c, half), hi = tower_k_lrn_hi(c, half, nc);
    float acc = 0.0f;
    for (int j = lo; j <= hi; j++) {
        uint32_t q = base + (uint32_t)j * HW.d;
        acc += dout[q] * out[q] / scale[q];
    }
    return tower_k_lrn_din(dout[i], tower_lrn_pow(scale[i], beta), in[i], acc, alpha, beta);
}

/* ---- overlapping max-pool, no padding; in (B, C, H, W), out/idx (B, C, Ho, Wo) ------ */

typedef struct {
    int H, W, K, S, Ho, Wo;
    int kq, kr; /* (K - 1) / S and (K - 1) % S */
    tower_k_div h, w, ho, wo, s;
    tower_k_div ch, cw; /* S x S cells per column and per row: ceil(H / S), ceil(W / S) */
} tower_k_pool;

BASE_HD tower_k_pool tower_k_pool_make(int H, int W, int K, int S)
{
    tower_k_pool g;
    g.H = H, g.W = W, g.K = K, g.S = S;
    g.Ho = (H - K) / S + 1;
    g.Wo = (W - K) / S + 1;
    g.kq = (K - 1) / S, g.kr = (K - 1) % S;
    g.h = tower_k_div_of((uint32_t)H);
    g.w = tower_k_div_of((uint32_t)W);
    g.ho = tower_k_div_of((uint32_t)g.Ho);
    g.wo = tower_k_div_of((uint32_t)g.Wo);
    g.s = tower_k_div_of((uint32_t)S);
    g.ch = tower_k_div_of((uint32_t)((H + S - 1) / S));
    g.cw = tower_k_div_of((uint32_t)((W + S - 1) / S));
    return g;
}

/* The first maximum (strict >) of the K x K window at (top, left) of x (rows of W
 * floats), scanned row-major: its offset in x. */
BASE_HD int tower_k_pool_argmax(const float *x, int W, int K, int top, int left)
{
    int best = top * W + left;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            int j = (top + kh) * W + left + kw;
            if (x[j] > x[best]) best = j;
        }
    return best;
}

/* Output element i: the window scanned row-major keeping the first maximum (strict >);
 * *best gets its flat index h * W + w within the plane. */
BASE_HD float tower_k_maxpool_forward(const float *in, uint32_t i, tower_k_pool g,
                                      int32_t *best_out)
{
    uint32_t t = tower_k_quo(g.wo, i), bc = tower_k_quo(g.ho, t);
    int ow = (int)(i - t * g.wo.d), oh = (int)(t - bc * g.ho.d);
    const float *x = in + bc * g.h.d * g.w.d;
    int best = tower_k_pool_argmax(x, g.W, g.K, oh * g.S, ow * g.S);
    *best_out = best;
    return x[best];
}

/* The windows [oh0, oh1] x [ow0, ow1] that contain input (h, w) of a plane, and its flat
 * index me = h * W + w (what a window's argmax is compared with). */
typedef struct {
    int oh0, oh1, ow0, ow1, me;
} tower_k_pool_win;

/* The windows of input (a*S + r, b*S + c), 0 <= r, c < S: windows oh with
 * oh*S <= h <= oh*S + K - 1 are oh1 = a and below it those with
 * (a - oh)*S <= K - 1 - r, as for tower_k_taps_at; the same along w. No division. */
BASE_HD tower_k_pool_win tower_k_pool_windows_of(int a, int r, int b, int c, tower_k_pool g)
{
    tower_k_pool_win v;
    int oh0 = a - (g.kq - (r > g.kr)), ow0 = b - (g.kq - (c > g.kr));
    v.oh0 = oh0 < 0 ? 0 : oh0;
    v.ow0 = ow0 < 0 ? 0 : ow0;
    v.oh1 = a > g.Ho - 1 ? g.Ho - 1 : a;
    v.ow1 = b > g.Wo - 1 ? g.Wo - 1 : b;
    v.me = (a * g.S + r) * g.W + b * g.S + c;
    return v;
}

/* The windows of input (h, w): h = a*S + r, w = b*S + c split by two divisions. */
BASE_HD tower_k_pool_win tower_k_pool_windows(int h, int w, tower_k_pool g)
{
    int a = (int)tower_k_quo(g.s, (uint32_t)h), b = (int)tower_k_quo(g.s, (uint32_t)w);
    return tower_k_pool_windows_of(a, h - a * g.S, b, w - b * g.S, g);
}

/* The sum, in (oh, ow) order, of the pooled gradient gr of the windows v whose recorded
 * maximum (ix) is v.me; gr and ix: one plane (Ho, Wo). */
BASE_HD float tower_k_pool_gather(const float *gr, const int32_t *ix, tower_k_pool_win v,
                                  int Wo)
{
    float sum = 0.0f;
    for (int oh = v.oh0; oh <= v.oh1; oh++)
        for (int ow = v.ow0; ow <= v.ow1; ow++)
            if (ix[oh * Wo + ow] == v.me) sum += gr[oh * Wo + ow];
    return sum;
}

/* Cell e of the input gradient: a plane (H, W) is cut into S x S cells (a, b),
 * a < ceil(H / S), b < ceil(W / S), e = (bc * ceil(H / S) + a) * ceil(W / S) + b; the cell's
 * inputs (a*S + r, b*S + c) inside the plane lie in the same windows' rows oh <= a and
 * columns ow <= b, so one split of e serves S x S inputs and their windows come without a
 * division (tower_k_pool_windows_of). Writes din at each of them: the sum, in (oh, ow)
 * order, of the dout of the windows whose recorded maximum it is (a gather: no atomics,
 * deterministic; 0 where no window took it). */
BASE_HD void tower_k_maxpool_backward_cell(float *din, const float *dout, const int32_t *idx,
                                           uint32_t e, tower_k_pool g)
{
    uint32_t t = tower_k_quo(g.cw, e), bc = tower_k_quo(g.ch, t);
    int b = (int)(e - t * g.cw.d), a = (int)(t - bc * g.ch.d);
    uint32_t plane = bc * g.ho.d * g.wo.d;
    float *d = din + bc * g.h.d * g.w.d;
    int nr = g.H - a * g.S < g.S ? g.H - a * g.S : g.S;
    int nc = g.W - b * g.S < g.S ? g.W - b * g.S : g.S;
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) {
            tower_k_pool_win v = tower_k_pool_windows_of(a, r, b, c, g);
            d[v.me] = tower_k_pool_gather(dout + plane, idx + plane, v, g.Wo);
        }
}

/* The cells of a (B, C, H, W) input gradient: B * C * ceil(H / S) * ceil(W / S). */
BASE_HD size_t tower_k_pool_cells(int B, int C, tower_k_pool g)
{
    return (size_t)B * C * g.ch.d * g.cw.d;
}

/* ---- LRN then max-pool, fused: one pass forward, one backward ------------------------
 * Where a row has LRN followed by max pooling (the paper's conv1 and conv2), the GPU runs
 * both stages as one kernel each way; in (the LRN's input: the ReLU's output) and din are
 * (B, C, H, W), out, dout, idx (B, C, Ho, Wo), pw (B, C, H, W). Kept for backward: the
 * pooled output and its argmax idx (as unfused) and pw = s^-beta, s = k + alpha * the
 * window's sum of squares. Neither s nor the LRN's output is stored: backward recomputes
 * s from in with the forward's operations (tower_k_lrn_denom) and the output as in * pw,
 * the one rounded product forward pooled, so every value is bit for bit the unfused one.
 *
 * Forward: a tile is np whole planes (consecutive in (b, c) order; as many as fit in
 * TOWER_K_LRNPOOL_TILE floats, so that small planes give a block enough work) or, for a
 * plane larger than that, a band of R pooled rows of one plane. Its block computes the LRN
 * of the input rows the tile's windows cover (all W columns) into shared memory, one
 * thread per element, writing pw for the rows the tile owns (a band: [oh0*S, (oh0+R)*S),
 * the last band down to H, so every element's pw is written once, uncovered rows
 * included), then pools its windows from shared memory, one thread per output.
 * Backward: a tile is G output channels [c0, c1) x P positions of one image's planes. Its
 * block first computes, for the channels jlo..jhi whose terms those outputs read (G plus
 * the window's half on each side), the pooled gradient dl gathered through the argmax
 * (tower_k_pool_gather) and the LRN term dl * out / s, into shared memory; then each
 * output sums its window's terms in channel order (tower_k_lrn_din). A channel's term is
 * so computed once per tile, not once per output that reads it. */

#define TOWER_K_LRNPOOL_P 32         /* backward: positions per tile (threadIdx.x) */
#define TOWER_K_LRNPOOL_LANES 4      /* backward: channel lanes (threadIdx.y) */
#define TOWER_K_LRNPOOL_G 64         /* backward: output channels per tile */
#define TOWER_K_LRNPOOL_TILE 4096    /* forward: floats a tile should stay within */
#define TOWER_K_LRNPOOL_SHARED 12288 /* floats of shared memory a block may use (48 KiB) */

typedef struct {
    int C, half;                /* channels; the LRN window n = 2 half + 1 */
    float k, alpha, beta;
    tower_k_pool p;             /* the (H, W) -> (Ho, Wo) pooling */
    tower_k_div hw, c, howo;    /* H*W, C, Ho*Wo */
    uint32_t planes;            /* B * C */
    int np;                     /* forward: planes per tile (1 when bands > 1) */
    int R;                      /* forward: pooled rows per band (Ho when one band) */
    tower_k_div bands;          /* forward: bands per plane */
    int tile_floats;            /* forward: shared memory of the largest tile, floats */
    uint32_t fwd_tiles;         /* ceil(B * C / np) * bands */
    int G, nj_max;              /* backward: output channels per tile; channels whose terms a
                                   tile holds at most (shared: 2 * nj_max * P floats) */
    tower_k_div groups, ptiles; /* backward: channel groups per image, position tiles per
                                   plane */
    uint32_t bwd_tiles;         /* B * groups * ptiles */
} tower_k_lrnpool;

/* The input rows [h0, h0 + rows) band `band` of R pooled rows holds: its windows' rows and
 * the rows it owns (whose pw it writes); *own: how many of them it owns. */
BASE_HD int tower_k_lrnpool_band_rows(int band, int R, int bands, tower_k_pool p, int *own)
{
    int oh0 = band * R, noh = p.Ho - oh0 < R ? p.Ho - oh0 : R, h0 = oh0 * p.S;
    int own_end = band == bands - 1 ? p.H : (oh0 + R) * p.S;
    int win_end = (oh0 + noh - 1) * p.S + p.K;
    *own = own_end - h0;
    return (own_end > win_end ? own_end : win_end) - h0;
}

/* Fills g for a (B, C, H, W) tensor, LRN window n (odd), pooling K:S; tile_floats: the
 * forward tile's target size (TOWER_K_LRNPOOL_TILE; smaller in tests, for many bands).
 * Returns 0, or -1 when the fused kernels do not take this shape (a band of one pooled row
 * or a backward tile wider than TOWER_K_LRNPOOL_SHARED floats, or 2^31 elements or more):
 * the unfused kernels then run. */
BASE_HD int tower_k_lrnpool_make(tower_k_lrnpool *g, int B, int C, int H, int W, int n,
                                 float k, float alpha, float beta, int K, int S,
                                 int tile_floats)
{
    g->C = C, g->half = n / 2, g->k = k, g->alpha = alpha, g->beta = beta;
    g->p = tower_k_pool_make(H, W, K, S);
    g->hw = tower_k_div_of((uint32_t)H * (uint32_t)W);
    g->c = tower_k_div_of((uint32_t)C);
    int Ho = g->p.Ho, R = Ho, np = 1;
    if (B < 1 || C < 1 || H < K || W < K || S < 1 || !tower_k_fits32((size_t)B * C * H * W))
        return -1;
    g->howo = tower_k_div_of((uint32_t)Ho * (uint32_t)g->p.Wo);
    g->planes = (uint32_t)B * (uint32_t)C;
    size_t hw = (size_t)H * W;
    if (hw > (size_t)tile_floats) { /* bands whose windows' rows fit in tile_floats */
        R = (tile_floats / W - K) / S + 1;
        R = R < 1 ? 1 : R > Ho ? Ho : R;
    } else { /* whole planes, as many as fit */
        np = (int)((size_t)tile_floats / hw);
        np = (uint32_t)np > g->planes ? (int)g->planes : np;
    }
    int bands = (Ho + R - 1) / R, rows = 0, own;
    for (int b = 0; b < bands; b++) {
        int r = tower_k_lrnpool_band_rows(b, R, bands, g->p, &own);
        rows = r > rows ? r : rows;
    }
    g->np = np;
    g->R = R;
    g->bands = tower_k_div_of((uint32_t)bands);
    g->tile_floats = np * rows * W;
    g->fwd_tiles = (g->planes + (uint32_t)np - 1) / (uint32_t)np * (uint32_t)bands;
    int G = C < TOWER_K_LRNPOOL_G ? C : TOWER_K_LRNPOOL_G, groups = (C + G - 1) / G;
    int ptiles = (int)((hw + TOWER_K_LRNPOOL_P - 1) / TOWER_K_LRNPOOL_P);
    g->G = G;
    g->nj_max = G + 2 * g->half < C ? G + 2 * g->half : C;
    g->groups = tower_k_div_of((uint32_t)groups);
    g->ptiles = tower_k_div_of((uint32_t)ptiles);
    g->bwd_tiles = (uint32_t)((size_t)B * groups * ptiles);
    return g->tile_floats <= TOWER_K_LRNPOOL_SHARED &&
                   2 * g->nj_max * TOWER_K_LRNPOOL_P <= TOWER_K_LRNPOOL_SHARED
               ? 0
               : -1;
}

/* Forward tile t: planes [plane0, plane0 + np) (np = 1 for a band), pooled rows
 * [oh0, oh0 + noh) of each, input rows [h0, h0 + rows) of each in shared memory (planes
 * HW floats apart: np > 1 only when rows = H), of which the first `own` are the tile's to
 * write pw for. */
typedef struct {
    uint32_t plane0;
    int np, oh0, noh, h0, rows, own;
} tower_k_lrnpool_ftile;

BASE_HD tower_k_lrnpool_ftile tower_k_lrnpool_ftile_at(uint32_t t, tower_k_lrnpool g)
{
    tower_k_lrnpool_ftile f;
    uint32_t pt = tower_k_quo(g.bands, t);
    int band = (int)(t - pt * g.bands.d);
    f.plane0 = pt * (uint32_t)g.np;
    f.np = g.planes - f.plane0 < (uint32_t)g.np ? (int)(g.planes - f.plane0) : g.np;
    f.oh0 = band * g.R;
    f.noh = g.p.Ho - f.oh0 < g.R ? g.p.Ho - f.oh0 : g.R;
    f.h0 = f.oh0 * g.p.S;
    f.rows = tower_k_lrnpool_band_rows(band, g.R, (int)g.bands.d, g.p, &f.own);
    return f;
}

/* Forward, element e of tile f (e < np * rows * W): the LRN output at input row
 * h0 + q / W, column q % W of the tile's plane pl = e / HW (q = e % HW) into tile[e], and
 * its s^-beta into pw when the tile owns the row: tower_k_lrn_forward's operations. beta
 * is g.beta (a caller may pass it as a constant equal to g.beta: the same value, so the
 * same bits). */
BASE_HD void tower_k_lrnpool_fwd_lrn(float *tile, float *pw, tower_k_src in, uint32_t e,
                                     tower_k_lrnpool_ftile f, tower_k_lrnpool g, float beta)
{
    uint32_t pl = tower_k_quo(g.hw, e), q = e - pl * g.hw.d, plane = f.plane0 + pl;
    int c = (int)(plane - tower_k_quo(g.c, plane) * g.c.d);
    uint32_t at = plane * g.hw.d + (uint32_t)f.h0 * g.p.w.d + q;
    float s = tower_k_lrn_denom(in, at - (uint32_t)c * g.hw.d, g.hw.d, tower_k_lrn_lo(c, g.half),
                                tower_k_lrn_hi(c, g.half, g.C), g.k, g.alpha);
    float v = tower_lrn_pow(s, beta);
    tile[e] = tower_k_ld(in, at) * v;
    if (q < (uint32_t)f.own * g.p.w.d) pw[at] = v;
}

/* Forward, pooled output o of tile f (o < np * noh * Wo; plane pl = o / (Ho*Wo)): the
 * first maximum of its window in the plane's rows in shared memory (tower_k_pool_argmax,
 * as unfused) into out, its plane index h * W + w into idx; out16: NULL, or where the same
 * value goes too, rounded to bf16 (the next conv's bf16 input copy, net_cuda.cu). */
BASE_HD void tower_k_lrnpool_fwd_pool(float *out, uint16_t *out16, int32_t *idx,
                                      const float *tile, uint32_t o, tower_k_lrnpool_ftile f,
                                      tower_k_lrnpool g)
{
    uint32_t pl = tower_k_quo(g.howo, o), q = o - pl * g.howo.d; /* q < noh * Wo */
    uint32_t r = tower_k_quo(g.p.wo, q), ow = q - r * g.p.wo.d;
    const float *x = tile + pl * g.hw.d;
    int best = tower_k_pool_argmax(x, g.p.W, g.p.K, (int)r * g.p.S, (int)ow * g.p.S);
    uint32_t at = (f.plane0 + pl) * g.howo.d + (uint32_t)f.oh0 * g.p.wo.d + q;
    out[at] = x[best];
    if (out16) out16[at] = tower_k_bf16(x[best]);
    idx[at] = best + f.h0 * g.p.W;
}

/* Backward tile t: output channels [c0, c1) of image b, terms of channels jlo..jhi,
 * positions [p0, p0 + np) of the planes. */
typedef struct {
    uint32_t b, p0;
    int c0, c1, jlo, jhi, np;
} tower_k_lrnpool_btile;

BASE_HD tower_k_lrnpool_btile tower_k_lrnpool_btile_at(uint32_t t, tower_k_lrnpool g)
{
    tower_k_lrnpool_btile v;
    uint32_t bg = tower_k_quo(g.ptiles, t), pi = t - bg * g.ptiles.d;
    v.b = tower_k_quo(g.groups, bg);
    v.c0 = (int)(bg - v.b * g.groups.d) * g.G;
    v.c1 = v.c0 + g.G < g.C ? v.c0 + g.G : g.C;
    v.jlo = tower_k_lrn_lo(v.c0, g.half);
    v.jhi = tower_k_lrn_hi(v.c1 - 1, g.half, g.C);
    v.p0 = pi * TOWER_K_LRNPOOL_P;
    v.np = g.hw.d - v.p0 < TOWER_K_LRNPOOL_P ? (int)(g.hw.d - v.p0) : TOWER_K_LRNPOOL_P;
    return v;
}

/* The pooling windows that contain position pos of a plane. */
BASE_HD tower_k_pool_win tower_k_lrnpool_windows(uint32_t pos, tower_k_lrnpool g)
{
    uint32_t h = tower_k_quo(g.p.w, pos);
    return tower_k_pool_windows((int)h, (int)(pos - h * g.p.w.d), g.p);
}

/* Backward, channel j of image b at position pos (its windows v): returns dl, the pooled
 * gradient gathered through the argmax (tower_k_maxpool_backward_cell's sum), and writes *term
 * = dl * out / s (out = in * pw, s recomputed): the summand of tower_k_lrn_backward. */
BASE_HD float tower_k_lrnpool_bwd_term(float *term, const float *dpool, const int32_t *idx,
                                       tower_k_src in, const float *pw, uint32_t b, int j,
                                       uint32_t pos, tower_k_pool_win v, tower_k_lrnpool g)
{
    uint32_t plane = b * g.c.d + (uint32_t)j, po = plane * g.p.ho.d * g.p.wo.d;
    float dl = tower_k_pool_gather(dpool + po, idx + po, v, g.p.Wo);
    uint32_t base = b * g.c.d * g.hw.d + pos, at = plane * g.hw.d + pos;
    float s = tower_k_lrn_denom(in, base, g.hw.d, tower_k_lrn_lo(j, g.half),
                                tower_k_lrn_hi(j, g.half, g.C), g.k, g.alpha);
    *term = dl * (tower_k_ld(in, at) * pw[at]) / s;
    return dl;
}

/* Backward, din at channel c of image b, position pos: terms points at channel jlo's term
 * of this position in the tile (channel stride TOWER_K_LRNPOOL_P), dl is dl at (c, pos);
 * the window's terms summed in channel order, as tower_k_lrn_backward. */
BASE_HD float tower_k_lrnpool_bwd_value(const float *terms, float dl, tower_k_src in,
                                        const float *pw, uint32_t at, int c, int jlo,
                                        tower_k_lrnpool g)
{
    int lo = tower_k_lrn_lo(c, g.half), hi = tower_k_lrn_hi(c, g.half, g.C);
    float acc = 0.0f;
    for (int j = lo; j <= hi; j++) acc += terms[(j - jlo) * TOWER_K_LRNPOOL_P];
    return tower_k_lrn_din(dl, pw[at], tower_k_ld(in, at), acc, g.alpha, g.beta);
}

BASE_HD void tower_k_lrnpool_bwd_din(float *din, const float *terms, float dl, tower_k_src in,
                                     const float *pw, uint32_t b, int c, uint32_t pos,
                                     int jlo, tower_k_lrnpool g)
{
    uint32_t at = (b * g.c.d + (uint32_t)c) * g.hw.d + pos;
    din[at] = tower_k_lrnpool_bwd_value(terms, dl, in, pw, at, c, jlo, g);
}

/* The same, writing gb[at], din's value through the ReLU's mask (in is the ReLU's output:
 * the LRN's input) rounded to bf16: tower_k_grad_bf16 of din, bit for bit, for the conv on
 * cuDNN's bf16 path, which then needs no pass of its own over din; and din itself unless
 * it is NULL (the conv reads only gb, so the step passes NULL). */
BASE_HD void tower_k_lrnpool_bwd_din_g(float *din, uint16_t *gb, const float *terms, float dl,
                                       tower_k_src in, const float *pw, uint32_t b, int c,
                                       uint32_t pos, int jlo, tower_k_lrnpool g)
{
    uint32_t at = (b * g.c.d + (uint32_t)c) * g.hw.d + pos;
    float v = tower_k_lrnpool_bwd_value(terms, dl, in, pw, at, c, jlo, g);
    if (din) din[at] = v;
    gb[at] = tower_k_bf16(tower_k_relu_grad(v, tower_k_ld(in, at)));
}

/* ---- dropout: the counter-based mask of tower.h (the CPU's, bit for bit) ------------ */

BASE_HD float tower_k_dropout_forward(float x, size_t i, float p, uint64_t key, int train)
{
    return train ? (base_rng_uniform(key, i) >= p ? x : 0.0f) : x * (1.0f - p);
}

BASE_HD float tower_k_dropout_backward(float dout, size_t i, float p, uint64_t key)
{
    return base_rng_uniform(key, i) >= p ? dout : 0.0f;
}

/* Inverted dropout: the same mask, kept units times scale = (float)(1 / (1 - p)), which
 * the launcher computes on the host as layers_cpu.c does. */
BASE_HD float tower_k_dropout_inv_forward(float x, size_t i, float p, float scale, uint64_t key,
                                          int train)
{
    return train ? (base_rng_uniform(key, i) >= p ? TK_MUL(x, scale) : 0.0f) : x;
}

BASE_HD float tower_k_dropout_inv_backward(float dout, size_t i, float p, float scale,
                                           uint64_t key)
{
    return base_rng_uniform(key, i) >= p ? TK_MUL(dout, scale) : 0.0f;
}

/* ---- softmax cross-entropy over gathered logits (T, B, Vt) ---------------------------- */

BASE_HD size_t tower_k_logit_at(int b, int c, int B, int Vt)
{
    return (size_t)(c / Vt) * B * Vt + (size_t)b * Vt + c % Vt;
}

/* The index of sample b's first class in tower t's part of the logits (class t*Vt): the
 * tower's classes j = 0 .. Vt-1 follow it, tower_k_logit_at(b, t*Vt + j) = row + j. The
 * softmax kernel walks each tower's row so, with no division per class. */
BASE_HD size_t tower_k_logit_row(int b, int t, int B, int Vt)
{
    return (size_t)t * B * Vt + (size_t)b * Vt;
}

/* dlogits (B, Vt) element i of tower `slot`: (p - [c == label]) / B, as the CPU computes */
BASE_HD float tower_k_softmax_dlogit(const float *probs, const int32_t *labels, size_t i,
                                      int B, int Vt, int slot)
{
    float invB = 1.0f / (float)B;
    int b = (int)(i / Vt), j = (int)(i % Vt), c = slot * Vt + j;
    float p = probs[tower_k_logit_at(b, c, B, Vt)];
    return (p - (c == labels[b] ? 1.0f : 0.0f)) * invB;
}

/* ---- SGD: v <- momentum v - wd lr w - lr g; w <- w + v (element i) -------------------
 * Every operation rounded on its own (TK_*), in layers_cpu.c's order: bit-identical. */
BASE_HD void tower_k_sgd(float *w, float *v, const float *g, size_t i, float lr,
                          float momentum, float wd)
{
    float vi = TK_SUB(TK_SUB(TK_MUL(momentum, v[i]), TK_MUL(TK_MUL(wd, lr), w[i])),
                      TK_MUL(lr, g[i]));
    v[i] = vi;
    w[i] = TK_ADD(w[i], vi);
}

/* ---- Adam, element i: tower_adam_update's operations in its order, each rounded on its
 * own, so bit-identical to the CPU given the same scalars ------------------------------ */
BASE_HD void tower_k_adam(float *w, float *m, float *v, const float *g, size_t i,
                          float step_size, float beta1, float beta2, float eps, float bc2_sqrt,
                          float wd)
{
    float one_b1 = TK_SUB(1.0f, beta1), one_b2 = TK_SUB(1.0f, beta2);
    float gi = TK_ADD(g[i], TK_MUL(wd, w[i]));
    float mi = TK_ADD(TK_MUL(beta1, m[i]), TK_MUL(one_b1, gi));
    float vi = TK_ADD(TK_MUL(beta2, v[i]), TK_MUL(one_b2, TK_MUL(gi, gi)));
    float denom = TK_ADD(TK_DIV(TK_SQRT(vi), bc2_sqrt), eps);
    m[i] = mi;
    v[i] = vi;
    w[i] = TK_SUB(w[i], TK_MUL(step_size, TK_DIV(mi, denom)));
}

/* The fused update of a whole parameter arena ([w conv1][b conv1]...[w fc8][b fc8]) in
 * one launch: element i is a bias (no weight decay) when it falls in one of the n ranges
 * [lo, hi), else a weight. Same arithmetic as tower_k_sgd per tensor: bit-identical. */
typedef struct {
    int n;
    size_t lo[TOWER_MAX_LAYERS], hi[TOWER_MAX_LAYERS];
} tower_k_bias_ranges;

BASE_HD int tower_k_is_bias(const tower_k_bias_ranges *r, size_t i)
{
    for (int l = 0; l < r->n; l++)
        if (i >= r->lo[l] && i < r->hi[l]) return 1;
    return 0;
}

BASE_HD void tower_k_sgd_arena(float *w, float *v, const float *g, size_t i, float lr,
                                float momentum, float wd, const tower_k_bias_ranges *r)
{
    tower_k_sgd(w, v, g, i, lr, momentum, tower_k_is_bias(r, i) ? 0.0f : wd);
}

BASE_HD void tower_k_adam_arena(float *w, float *m, float *v, const float *g, size_t i,
                                float step_size, float beta1, float beta2, float eps,
                                float bc2_sqrt, float wd, const tower_k_bias_ranges *r)
{
    tower_k_adam(w, m, v, g, i, step_size, beta1, beta2, eps, bc2_sqrt,
                 tower_k_is_bias(r, i) ? 0.0f : wd);
}

/* ---- the scalars of one step, read from device memory ---------------------------------
 * What changes from step to step (the dropout keys, the learning rate, Adam's bias
 * corrections) reaches the kernels through this struct in device memory rather than as
 * launch arguments, so that a captured step (a CUDA graph) replays with each step's own
 * values: the host copies a new struct in before each step (net_cuda.cu, "step scalars").
 * The update's constants (momentum, decay, Adam's betas and eps) live here too, so a
 * replayed graph holds no host scalar at all. The floats are the very values the
 * by-value launchers are given (the CPU's, rounded to float as before), so the updates
 * and masks are the same bits. */
struct tower_k_step {
    uint64_t key[TOWER_MAX_LAYERS]; /* row l's dropout key: tower_layer_key(step key, l) */
    float lr, momentum, weight_decay; /* SGD */
    float step_size, beta1, beta2, eps, bc2_sqrt; /* Adam (tower_adam_scalars, as float) */
    int32_t skip_nonfinite; /* 1: the update leaves the arena as it is when the tower's mean
                               loss of this step is not finite (model_train_step's rule) */
    int32_t unused;
};
typedef struct tower_k_step tower_k_step;

/* The mean loss as the CPU tower returns it: the B per-sample losses summed in double in
 * sample order, then divided by B. One thread runs it (B is at most a few thousand), so
 * the order, and so every bit, is the host loop's. */
BASE_HD double tower_k_loss_mean(const float *losses, int B)
{
    double sum = 0;
    for (int b = 0; b < B; b++) sum += losses[b];
    return sum / B;
}

/* The update's guard (skip_nonfinite): 1 when this step's update is to be applied. */
BASE_HD int tower_k_update_applies(const tower_k_step *s, double loss)
{
    return !s->skip_nonfinite || isfinite(loss);
}

#endif
