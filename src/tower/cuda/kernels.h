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

/* ---- convolution ------------------------------------------------------------------- */

/* col (Ci*K*K, Ho*Wo) of one image, element i: row r = (c, kh, kw), column p = (oh, ow);
 * the pixel of in (Ci, H, W) that tap (kh, kw) sees at p, 0 in the padding. */
BASE_HD float tower_k_im2col(const float *in, size_t i, int H, int W, int K, int S, int P,
                              int Ho, int Wo)
{
    size_t HWo = (size_t)Ho * Wo, r = i / HWo, p = i % HWo;
    int c = (int)(r / ((size_t)K * K)), kh = (int)(r / K % K), kw = (int)(r % K);
    int ih = (int)(p / Wo) * S - P + kh, iw = (int)(p % Wo) * S - P + kw;
    return (ih >= 0 && ih < H && iw >= 0 && iw < W) ? in[((size_t)c * H + ih) * W + iw] : 0.0f;
}

/* din (Ci, H, W) element i from col (Ci*K*K rows of Ho*Wo columns, row stride ld): start
 * + the col entries that came from pixel i. A tap (kh, kw) reaches a pixel from at most
 * one output position, so the sum runs over (kh, kw) in order: the order in which
 * layers_cpu.c's col2im adds them. */
BASE_HD float tower_k_col2im(const float *col, size_t ld, float start, size_t i, int H, int W,
                              int K, int S, int P, int Ho, int Wo)
{
    int c = (int)(i / ((size_t)H * W)), ih = (int)(i / W % H), iw = (int)(i % W);
    float s = start;
    for (int kh = 0; kh < K; kh++) {
        int th = ih + P - kh; /* = oh * S when this tap reaches the pixel */
        if (th < 0 || th % S) continue;
        int oh = th / S;
        if (oh >= Ho) continue;
        for (int kw = 0; kw < K; kw++) {
            int tw = iw + P - kw;
            if (tw < 0 || tw % S) continue;
            int ow = tw / S;
            if (ow >= Wo) continue;
            s += col[((size_t)(c * K + kh) * K + kw) * ld + (size_t)oh * Wo + ow];
        }
    }
    return s;
}

/* ---- convolution over a chunk of nb images: one GEMM per chunk -------------------------
 * The GPU backend convolves nb images with one SGEMM instead of nb small ones. Its col
 * matrix (Ci*K*K, nb*Ho*Wo) holds the im2col of the nb images side by side (column
 * q = n*Ho*Wo + p); the GEMM's product and the output gradient it reads are then
 * (Co, nb*HWo), "CNHW", and a transposing pass moves them from / to the (nb, Co, HWo)
 * activations. */

/* Floats of scratch a chunk of `images` images needs: its col (Ci*K*K, images*HWo), the
 * (Co, images*HWo) product or output gradient after it, then images*HWo ones (the vector
 * the bias-gradient GEMV sums each row of the output gradient with). */
BASE_HD size_t tower_k_conv_scratch_size(int Ci, int Co, int K, int Ho, int Wo, int images)
{
    return (size_t)images * ((size_t)Ci * K * K + (size_t)Co + 1) * Ho * Wo;
}

/* col element i of the chunk starting at image `in` (nb images of Ci*H*W) */
BASE_HD float tower_k_im2col_chunk(const float *in, size_t i, int nb, int Ci, int H, int W,
                                    int K, int S, int P, int Ho, int Wo)
{
    size_t HWo = (size_t)Ho * Wo, nq = (size_t)nb * HWo;
    size_t r = i / nq, n = i % nq / HWo, p = i % HWo;
    return tower_k_im2col(in + n * Ci * H * W, r * HWo + p, H, W, K, S, P, Ho, Wo);
}

/* Element i of din (nb, Ci, H, W): start + the entries of the chunk's col that came from
 * it (tower_k_col2im on image n's columns, row stride nb*HWo). */
BASE_HD float tower_k_col2im_chunk(const float *col, float start, size_t i, int nb, int Ci,
                                    int H, int W, int K, int S, int P, int Ho, int Wo)
{
    size_t HWo = (size_t)Ho * Wo, nin = (size_t)Ci * H * W;
    return tower_k_col2im(col + i / nin * HWo, (size_t)nb * HWo, start, i % nin, H, W, K, S,
                          P, Ho, Wo);
}

/* Where element i of an (nb, C, HW) tensor sits in its (C, nb*HW) transpose. */
BASE_HD size_t tower_k_cnhw_of(size_t i, int nb, int C, size_t HW)
{
    size_t chw = (size_t)C * HW, n = i / chw, c = i % chw / HW, p = i % HW;
    return (c * nb + n) * HW + p;
}

/* Conv output element i of the chunk (nb, Co, HWo): the GEMM's product (Co, nb*HWo), plus
 * the earlier value when accumulating (a second source tower), plus the bias if any:
 * the CPU's order (GEMM with beta, then the bias). */
BASE_HD float tower_k_conv_out(const float *prod, const float *prev, const float *b,
                                size_t i, int nb, int Co, size_t HWo, int accumulate)
{
    float y = prod[tower_k_cnhw_of(i, nb, Co, HWo)];
    if (accumulate) y += prev[i];
    if (b) y += b[i / HWo % Co];
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

/* The channel of element i of a (B, C, HW) tensor: which bias it gets. */
BASE_HD int tower_k_channel_of(size_t i, int C, size_t HW) { return (int)((i / HW) % C); }

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
BASE_HD float tower_k_lrn_forward(float *scale, const float *in, size_t i, int C, int HW,
                                   int half, float k, float alpha, float beta)
{
    int c = (int)(i / HW % C);
    size_t base = i - (size_t)c * HW; /* element (b, 0, p) */
    int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
    float sum = 0.0f;
    for (int j = lo; j <= hi; j++) {
        float xj = in[base + (size_t)j * HW];
        sum += xj * xj;
    }
    float s = k + alpha * sum;
    scale[i] = s;
    return in[i] * powf(s, -beta);
}

/* din[m] = dout[m] s_m^-beta - 2 alpha beta in[m] sum_{|i-m| <= n/2} dout[i] out[i] / s[i] */
BASE_HD float tower_k_lrn_backward(const float *dout, const float *in, const float *out,
                                    const float *scale, size_t i, int C, int HW, int half,
                                    float alpha, float beta)
{
    int c = (int)(i / HW % C);
    size_t base = i - (size_t)c * HW;
    int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
    float acc = 0.0f;
    for (int j = lo; j <= hi; j++) {
        size_t q = base + (size_t)j * HW;
        acc += dout[q] * out[q] / scale[q];
    }
    return dout[i] * powf(scale[i], -beta) - 2.0f * alpha * beta * in[i] * acc;
}

/* ---- overlapping max-pool, no padding; in (B, C, H, W), out/idx (B, C, Ho, Wo) ------ */

/* Output element i: the window scanned row-major keeping the first maximum (strict >);
 * *best gets its flat index h * W + w within the plane. */
BASE_HD float tower_k_maxpool_forward(const float *in, size_t i, int H, int W, int K, int S,
                                       int Ho, int Wo, int32_t *best_out)
{
    size_t bc = i / ((size_t)Ho * Wo);
    int oh = (int)(i / Wo % Ho), ow = (int)(i % Wo);
    const float *x = in + bc * H * W;
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
BASE_HD float tower_k_maxpool_backward(const float *dout, const int32_t *idx, size_t i,
                                        int H, int W, int K, int S, int Ho, int Wo)
{
    size_t bc = i / ((size_t)H * W);
    int h = (int)(i / W % H), w = (int)(i % W);
    const float *g = dout + bc * Ho * Wo;
    const int32_t *ix = idx + bc * Ho * Wo;
    /* windows oh with oh*S <= h <= oh*S + K - 1 */
    int oh0 = h - K + 1 <= 0 ? 0 : (h - K + S) / S, oh1 = h / S;
    int ow0 = w - K + 1 <= 0 ? 0 : (w - K + S) / S, ow1 = w / S;
    if (oh1 > Ho - 1) oh1 = Ho - 1;
    if (ow1 > Wo - 1) ow1 = Wo - 1;
    int me = h * W + w;
    float sum = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++)
            if (ix[oh * Wo + ow] == me) sum += g[oh * Wo + ow];
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
