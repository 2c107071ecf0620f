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

/* ---- 32-bit indices, division by a layer constant -----------------------------------
 * The layer kernels index their tensors in 32 bits (the launchers refuse a tensor of 2^31
 * elements or more) and split an index into coordinates by the layer's sizes, which are
 * known only at run time. A run-time division costs some 25 instructions (a 64-bit one
 * about 30, or a subroutine); a tower_k_div, made once per launch on the host, divides
 * by a multiply-high, an add and a shift. For 1 <= d <= 2^31 and 0 <= n < 2^31, with s
 * the least s such that 2^s >= d and m = floor(2^32 (2^s - d) / d) + 1 (below 2^32):
 * floor(n / d) = (mulhi(n, m) + n) >> s. That is floor(n (m + 2^32) / 2^(32+s)), and
 * m + 2^32 exceeds 2^(32+s) / d by at most 1, so the quotient exceeds n / d by less than
 * n / 2^(32+s) < 1 / (2d): too little to pass the next integer, as n mod d <= d - 1
 * (Granlund and Montgomery's round-up method; mulhi(n, m) + n < 2^32 as mulhi <= n).
 * test_kernels_host.c checks it over many divisors and numerators. */
typedef struct {
    uint32_t d, magic, shift;
} tower_k_div;

/* d = 0, an empty axis, keeps d = 0 (the kernels' loop bounds are products of the d's)
 * with 1's magic number: nothing is ever divided by it. */
BASE_HD tower_k_div tower_k_div_of(uint32_t d)
{
    tower_k_div v;
    uint32_t e = d ? d : 1, s = 0;
    while ((UINT64_C(1) << s) < e) s++;
    v.d = d;
    v.shift = s;
    v.magic = (uint32_t)(((UINT64_C(1) << 32) * ((UINT64_C(1) << s) - e)) / e + 1);
    return v;
}

/* n / v.d for n < 2^31 */
BASE_HD uint32_t tower_k_quo(tower_k_div v, uint32_t n)
{
#if defined(__CUDA_ARCH__)
    uint32_t hi = __umulhi(n, v.magic);
#else
    uint32_t hi = (uint32_t)(((uint64_t)n * v.magic) >> 32);
#endif
    return (hi + n) >> v.shift;
}

/* 1 when a tensor of n elements can be indexed in 32 bits (every index below 2^31) */
BASE_HD int tower_k_fits32(size_t n) { return n <= (size_t)INT32_MAX; }

/* ---- convolution over a chunk of nb images: one GEMM per chunk -------------------------
 * The GPU backend convolves nb images with one SGEMM instead of nb small ones. Its col
 * matrix (Ci*K*K, nb*Ho*Wo) holds the im2col of the nb images side by side: row
 * r = (c, kh, kw), column q = (n, oh, ow), entry the pixel of in (nb, Ci, H, W) that tap
 * (kh, kw) of image n sees at output (oh, ow), 0 in the padding. The GEMM's product and
 * the output gradient it reads are then (Co, nb*HWo), "CNHW", and a transposing pass
 * moves them from / to the (nb, Co, HWo) activations. */

/* Floats of scratch a chunk of `images` images needs: its col (Ci*K*K, images*HWo), the
 * (Co, images*HWo) product or output gradient after it, then images*HWo ones (the vector
 * the bias-gradient GEMV sums each row of the output gradient with). */
BASE_HD size_t tower_k_conv_scratch_size(int Ci, int Co, int K, int Ho, int Wo, int images)
{
    return (size_t)images * ((size_t)Ci * K * K + (size_t)Co + 1) * Ho * Wo;
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

/* im2col at position e = (c, q) of the chunk (e < Ci * nb*HWo, q the column): writes the
 * K*K col entries of channel c in column q, rows (c, kh, kw) in order. One thread per
 * position: its index is split once and every tap after it costs an add, a bounds test,
 * a load and a store. */
BASE_HD void tower_k_im2col_taps(float *col, const float *in, uint32_t e, tower_k_conv_geom g)
{
    uint32_t nq = g.nq.d, c = tower_k_quo(g.nq, e), q = e - c * nq;
    uint32_t n = tower_k_quo(g.hwo, q), p = q - n * g.hwo.d;
    uint32_t oh = tower_k_quo(g.wo, p), ow = p - oh * g.wo.d;
    const float *x = in + (n * (uint32_t)g.Ci + c) * g.hw.d; /* the plane (n, c) */
    uint32_t at = c * (uint32_t)(g.K * g.K) * nq + q;         /* row (c, 0, 0), column q */
    int ih0 = (int)oh * g.S - g.P, iw0 = (int)ow * g.S - g.P;
    for (int kh = 0; kh < g.K; kh++) {
        int ih = ih0 + kh, row_in = ih >= 0 && ih < g.H;
        for (int kw = 0; kw < g.K; kw++, at += nq) {
            int iw = iw0 + kw;
            col[at] = row_in && iw >= 0 && iw < g.W ? x[ih * g.W + iw] : 0.0f;
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

/* fc bias gradient of unit o: start + dout[0][o] + dout[1][o] + ... in batch order, as
 * layers_cpu.c adds them (bit-identical). */
BASE_HD float tower_k_fc_bias_grad(const float *dout, float start, int o, int B, int Cout)
{
    float s = start;
    for (int b = 0; b < B; b++) s += dout[(size_t)b * Cout + o];
    return s;
}

/* ---- local response normalisation over channels; in, out, scale (B, C, HW) -------- */

/* Element i: writes scale[i] = k + alpha * sum of squares over the n channels around c
 * (in channel order) and returns out[i] = in[i] * scale^-beta. */
BASE_HD float tower_k_lrn_forward(float *scale, const float *in, uint32_t i, tower_k_div C,
                                  tower_k_div HW, int half, float k, float alpha, float beta)
{
    int c = (int)tower_k_channel(i, C, HW), nc = (int)C.d;
    uint32_t base = i - (uint32_t)c * HW.d; /* element (b, 0, p) */
    int lo = c - half < 0 ? 0 : c - half, hi = c + half > nc - 1 ? nc - 1 : c + half;
    float sum = 0.0f;
    for (int j = lo; j <= hi; j++) {
        float xj = in[base + (uint32_t)j * HW.d];
        sum += xj * xj;
    }
    float s = k + alpha * sum;
    scale[i] = s;
    return in[i] * powf(s, -beta);
}

/* din[m] = dout[m] s_m^-beta - 2 alpha beta in[m] sum_{|i-m| <= n/2} dout[i] out[i] / s[i] */
BASE_HD float tower_k_lrn_backward(const float *dout, const float *in, const float *out,
                                   const float *scale, uint32_t i, tower_k_div C,
                                   tower_k_div HW, int half, float alpha, float beta)
{
    int c = (int)tower_k_channel(i, C, HW), nc = (int)C.d;
    uint32_t base = i - (uint32_t)c * HW.d;
    int lo = c - half < 0 ? 0 : c - half, hi = c + half > nc - 1 ? nc - 1 : c + half;
    float acc = 0.0f;
    for (int j = lo; j <= hi; j++) {
        uint32_t q = base + (uint32_t)j * HW.d;
        acc += dout[q] * out[q] / scale[q];
    }
    return dout[i] * powf(scale[i], -beta) - 2.0f * alpha * beta * in[i] * acc;
}

/* ---- overlapping max-pool, no padding; in (B, C, H, W), out/idx (B, C, Ho, Wo) ------ */

typedef struct {
    int H, W, K, S, Ho, Wo;
    int kq, kr; /* (K - 1) / S and (K - 1) % S */
    tower_k_div h, w, ho, wo, s;
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
    return g;
}

/* Output element i: the window scanned row-major keeping the first maximum (strict >);
 * *best gets its flat index h * W + w within the plane. */
BASE_HD float tower_k_maxpool_forward(const float *in, uint32_t i, tower_k_pool g,
                                      int32_t *best_out)
{
    uint32_t t = tower_k_quo(g.wo, i), bc = tower_k_quo(g.ho, t);
    int ow = (int)(i - t * g.wo.d), oh = (int)(t - bc * g.ho.d);
    int W = g.W, K = g.K, S = g.S;
    const float *x = in + bc * g.h.d * g.w.d;
    int best = (oh * S) * W + ow * S;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            int j = (oh * S + kh) * W + ow * S + kw;
            if (x[j] > x[best]) best = j;
        }
    *best_out = best;
    return x[best];
}

/* Input element i: the sum, in (oh, ow) order, of the dout of the windows whose recorded
 * maximum is this element (a gather: no atomics, deterministic). */
BASE_HD float tower_k_maxpool_backward(const float *dout, const int32_t *idx, uint32_t i,
                                       tower_k_pool g)
{
    uint32_t t = tower_k_quo(g.w, i), bc = tower_k_quo(g.h, t);
    int w = (int)(i - t * g.w.d), h = (int)(t - bc * g.h.d);
    int Wo = g.Wo;
    const float *gr = dout + bc * g.ho.d * g.wo.d;
    const int32_t *ix = idx + bc * g.ho.d * g.wo.d;
    /* windows oh with oh*S <= h <= oh*S + K - 1: oh1 = h / S and below it those with
     * (oh1 - oh)*S <= K - 1 - (h - oh1*S), as for tower_k_taps_at */
    int oh1 = (int)tower_k_quo(g.s, (uint32_t)h), ow1 = (int)tower_k_quo(g.s, (uint32_t)w);
    int oh0 = oh1 - (g.kq - (h - oh1 * g.S > g.kr));
    int ow0 = ow1 - (g.kq - (w - ow1 * g.S > g.kr));
    if (oh0 < 0) oh0 = 0;
    if (ow0 < 0) ow0 = 0;
    if (oh1 > g.Ho - 1) oh1 = g.Ho - 1;
    if (ow1 > Wo - 1) ow1 = Wo - 1;
    int me = h * g.W + w;
    float sum = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++)
            if (ix[oh * Wo + ow] == me) sum += gr[oh * Wo + ow];
    return sum;
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

#endif
