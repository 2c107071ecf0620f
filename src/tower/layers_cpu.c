/* layers_cpu.c: the CPU backend of every AlexNet layer, forward and backward.
 * This is the reference the CUDA backend is tested against. GEMMs go through BLAS
 * (OpenBLAS from Debian); everything else is plain loops. Compiled twice: with
 * real = float (the product) and real = double (TOWER_F64, the gradient checks). */
#include "tower/tower.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef TOWER_F64
#define GEMM cblas_dgemm
#define RPOW pow
#define REXP exp
#define RLOG log
#define RTANH tanh
#define RSQRT sqrt
#else
#define GEMM cblas_sgemm
#define RPOW powf
#define REXP expf
#define RLOG logf
#define RTANH tanhf
#define RSQRT sqrtf
#endif

int tower_conv_out(int n, int k, int stride, int pad)
{
    int span = n + 2 * pad - k;
    return span < 0 ? 0 : span / stride + 1;
}

size_t tower_conv_col_size(int Ci, int H, int W, int K, int stride, int pad)
{
    size_t Ho = (size_t)tower_conv_out(H, K, stride, pad);
    size_t Wo = (size_t)tower_conv_out(W, K, stride, pad);
    return (size_t)Ci * K * K * Ho * Wo;
}

/* col (Ci*K*K, Ho*Wo): row (c, kh, kw) holds, for every output position, the input
 * pixel that kernel tap sees (0 in the padding). One image. */
static void im2col(real *col, const real *in, int Ci, int H, int W, int K, int S, int P,
                   int Ho, int Wo)
{
    for (int c = 0; c < Ci; c++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                real *row = col + ((size_t)(c * K + kh) * K + kw) * Ho * Wo;
                const real *plane = in + (size_t)c * H * W;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * S - P + kh;
                    real *dst = row + (size_t)oh * Wo;
                    if (ih < 0 || ih >= H) {
                        memset(dst, 0, sizeof(real) * (size_t)Wo);
                        continue;
                    }
                    const real *src = plane + (size_t)ih * W;
                    for (int ow = 0; ow < Wo; ow++) {
                        int iw = ow * S - P + kw;
                        dst[ow] = (iw >= 0 && iw < W) ? src[iw] : 0;
                    }
                }
            }
}

/* The adjoint of im2col: every column entry is added back to the pixel it came from.
 * in must be zeroed (or hold what to accumulate onto). */
static void col2im(real *in, const real *col, int Ci, int H, int W, int K, int S, int P,
                   int Ho, int Wo)
{
    for (int c = 0; c < Ci; c++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const real *row = col + ((size_t)(c * K + kh) * K + kw) * Ho * Wo;
                real *plane = in + (size_t)c * H * W;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * S - P + kh;
                    if (ih < 0 || ih >= H) continue;
                    const real *src = row + (size_t)oh * Wo;
                    real *dst = plane + (size_t)ih * W;
                    for (int ow = 0; ow < Wo; ow++) {
                        int iw = ow * S - P + kw;
                        if (iw >= 0 && iw < W) dst[iw] += src[ow];
                    }
                }
            }
}

void tower_conv_forward(real *out, const real *in, const real *w, const real *b,
                        int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                        int ldw, int accumulate, real *col)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    for (int n = 0; n < B; n++) {
        const real *x = in + (size_t)n * Ci * H * W;
        real *y = out + (size_t)n * Co * HWo;
        im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo);
        /* y (Co, HWo) = w (Co, CKK; ld ldw) . col (CKK, HWo) [+ y] */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, HWo, CKK, 1, w, ldw, col, HWo,
             accumulate ? 1 : 0, y, HWo);
        if (b)
            for (int o = 0; o < Co; o++) {
                real bo = b[o], *yo = y + (size_t)o * HWo;
                for (int i = 0; i < HWo; i++) yo[i] += bo;
            }
    }
}

void tower_conv_backward(real *din, real *dw, real *db,
                         const real *dout, const real *in, const real *w,
                         int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                         int ldw, int accumulate_din, real *col)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    for (int n = 0; n < B; n++) {
        const real *x = in + (size_t)n * Ci * H * W;
        const real *g = dout + (size_t)n * Co * HWo;
        if (db)
            for (int o = 0; o < Co; o++) {
                const real *go = g + (size_t)o * HWo;
                real s = 0;
                for (int i = 0; i < HWo; i++) s += go[i];
                db[o] += s;
            }
        if (dw) {
            im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo);
            /* dw (Co, CKK; ld ldw) += g (Co, HWo) . col^T (HWo, CKK) */
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Co, CKK, HWo, 1, g, HWo, col, HWo,
                 1, dw, ldw);
        }
        if (din) {
            real *dx = din + (size_t)n * Ci * H * W;
            /* col (CKK, HWo) = w^T (CKK, Co) . g (Co, HWo), then scattered back */
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, HWo, Co, 1, w, ldw, g, HWo,
                 0, col, HWo);
            if (!accumulate_din) memset(dx, 0, sizeof(real) * (size_t)Ci * H * W);
            col2im(dx, col, Ci, H, W, K, stride, pad, Ho, Wo);
        }
    }
}

void tower_fc_forward(real *out, const real *in, const real *w, const real *b,
                      int B, int Cin, int Cout, int ldw, int accumulate)
{
    /* out (B, Cout) = in (B, Cin) . w^T (Cin, Cout) [+ out] */
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, Cout, Cin, 1, in, Cin, w, ldw,
         accumulate ? 1 : 0, out, Cout);
    if (b)
        for (int n = 0; n < B; n++)
            for (int o = 0; o < Cout; o++) out[(size_t)n * Cout + o] += b[o];
}

void tower_fc_backward(real *din, real *dw, real *db,
                       const real *dout, const real *in, const real *w,
                       int B, int Cin, int Cout, int ldw, int accumulate_din)
{
    if (din) /* din (B, Cin) = dout (B, Cout) . w (Cout, Cin) */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, Cin, Cout, 1, dout, Cout, w, ldw,
             accumulate_din ? 1 : 0, din, Cin);
    if (dw) /* dw (Cout, Cin) += dout^T (Cout, B) . in (B, Cin) */
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, Cin, B, 1, dout, Cout, in, Cin, 1,
             dw, ldw);
    if (db)
        for (int n = 0; n < B; n++)
            for (int o = 0; o < Cout; o++) db[o] += dout[(size_t)n * Cout + o];
}

void tower_relu_forward(real *out, const real *in, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0 ? in[i] : 0;
}

void tower_relu_backward(real *din, const real *dout, const real *out, size_t n)
{
    for (size_t i = 0; i < n; i++) din[i] = out[i] > 0 ? dout[i] : 0;
}

void tower_tanh_forward(real *out, const real *in, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = RTANH(in[i]);
}

/* d tanh(x) / dx = 1 - tanh(x)^2: from the output, so no input needs keeping */
void tower_tanh_backward(real *din, const real *dout, const real *out, size_t n)
{
    for (size_t i = 0; i < n; i++) din[i] = dout[i] * (1 - out[i] * out[i]);
}

void tower_lrn_forward(real *out, real *scale, const real *in,
                       int B, int C, int HW, int n, real k, real alpha, real beta)
{
    int half = n / 2;
    for (int b = 0; b < B; b++) {
        const real *x = in + (size_t)b * C * HW;
        real *s = scale + (size_t)b * C * HW, *y = out + (size_t)b * C * HW;
        for (int c = 0; c < C; c++) {
            real *sc = s + (size_t)c * HW;
            for (int p = 0; p < HW; p++) sc[p] = 0;
            int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
            for (int j = lo; j <= hi; j++) {
                const real *xj = x + (size_t)j * HW;
                for (int p = 0; p < HW; p++) sc[p] += xj[p] * xj[p];
            }
            const real *xc = x + (size_t)c * HW;
            real *yc = y + (size_t)c * HW;
            for (int p = 0; p < HW; p++) {
                sc[p] = k + alpha * sc[p];
                yc[p] = xc[p] * RPOW(sc[p], -beta);
            }
        }
    }
}

/* d out[i] / d in[m] = [i==m] s_i^-beta - 2 alpha beta in_i in_m s_i^(-beta-1) for |i-m| <= n/2,
 * so din[m] = dout[m] s_m^-beta - 2 alpha beta in[m] sum_i dout[i] out[i] / s[i]. */
void tower_lrn_backward(real *din, const real *dout, const real *in, const real *out,
                        const real *scale, int B, int C, int HW, int n, real k, real alpha,
                        real beta)
{
    (void)k;
    int half = n / 2;
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)b * C * HW;
        const real *x = in + off, *y = out + off, *s = scale + off, *g = dout + off;
        real *dx = din + off;
        for (int c = 0; c < C; c++) {
            real *dxc = dx + (size_t)c * HW;
            const real *xc = x + (size_t)c * HW, *sc = s + (size_t)c * HW,
                       *gc = g + (size_t)c * HW;
            for (int p = 0; p < HW; p++) dxc[p] = 0;
            int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
            for (int i = lo; i <= hi; i++) {
                const real *gi = g + (size_t)i * HW, *yi = y + (size_t)i * HW,
                           *si = s + (size_t)i * HW;
                for (int p = 0; p < HW; p++) dxc[p] += gi[p] * yi[p] / si[p];
            }
            for (int p = 0; p < HW; p++)
                dxc[p] = gc[p] * RPOW(sc[p], -beta) - 2 * alpha * beta * xc[p] * dxc[p];
        }
    }
}

void tower_maxpool_forward(real *out, int32_t *idx, const real *in,
                           int B, int C, int H, int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
        const real *x = in + bc * H * W;
        real *y = out + bc * Ho * Wo;
        int32_t *ix = idx + bc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                int best = (oh * S) * W + ow * S;
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        int i = (oh * S + kh) * W + ow * S + kw;
                        if (x[i] > x[best]) best = i;
                    }
                y[oh * Wo + ow] = x[best];
                ix[oh * Wo + ow] = best;
            }
    }
}

void tower_maxpool_backward(real *din, const real *dout, const int32_t *idx,
                            int B, int C, int H, int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
        real *dx = din + bc * H * W;
        const real *g = dout + bc * Ho * Wo;
        const int32_t *ix = idx + bc * Ho * Wo;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                /* windows oh with oh*S <= h <= oh*S + K - 1 */
                int oh0 = h - K + 1 <= 0 ? 0 : (h - K + S) / S, oh1 = h / S;
                int ow0 = w - K + 1 <= 0 ? 0 : (w - K + S) / S, ow1 = w / S;
                if (oh1 > Ho - 1) oh1 = Ho - 1;
                if (ow1 > Wo - 1) ow1 = Wo - 1;
                real sum = 0;
                int me = h * W + w;
                for (int oh = oh0; oh <= oh1; oh++)
                    for (int ow = ow0; ow <= ow1; ow++)
                        if (ix[oh * Wo + ow] == me) sum += g[oh * Wo + ow];
                dx[me] = sum;
            }
    }
}

void tower_dropout_forward(real *out, const real *in, size_t n, real p, uint64_t key,
                           int train)
{
    if (!train) {
        for (size_t i = 0; i < n; i++) out[i] = in[i] * (1 - p);
        return;
    }
    float pf = (float)p;
    for (size_t i = 0; i < n; i++) out[i] = base_rng_uniform(key, i) >= pf ? in[i] : 0;
}

void tower_dropout_backward(real *din, const real *dout, size_t n, real p, uint64_t key)
{
    float pf = (float)p;
    for (size_t i = 0; i < n; i++) din[i] = base_rng_uniform(key, i) >= pf ? dout[i] : 0;
}

/* The same mask as the paper's dropout; the scale 1/(1-p) is rounded once to real and
 * multiplied in, as the CUDA twin does (kernels.h). */
void tower_dropout_inverted_forward(real *out, const real *in, size_t n, real p, uint64_t key,
                                    int train)
{
    if (!train) {
        if (out != in) memcpy(out, in, sizeof(real) * n);
        return;
    }
    float pf = (float)p;
    real scale = (real)(1.0 / (1.0 - (double)p));
    for (size_t i = 0; i < n; i++) out[i] = base_rng_uniform(key, i) >= pf ? in[i] * scale : 0;
}

void tower_dropout_inverted_backward(real *din, const real *dout, size_t n, real p,
                                     uint64_t key)
{
    float pf = (float)p;
    real scale = (real)(1.0 / (1.0 - (double)p));
    for (size_t i = 0; i < n; i++)
        din[i] = base_rng_uniform(key, i) >= pf ? dout[i] * scale : 0;
}

static size_t logit_at(int b, int c, int B, int Vt)
{
    return (size_t)(c / Vt) * B * Vt + (size_t)b * Vt + c % Vt;
}

void tower_softmax_xent_forward(real *losses, real *probs, const real *logits,
                                const int32_t *labels, int B, int T, int Vt)
{
    int V = T * Vt;
    for (int b = 0; b < B; b++) {
        real mx = logits[logit_at(b, 0, B, Vt)];
        for (int c = 1; c < V; c++) {
            real z = logits[logit_at(b, c, B, Vt)];
            if (z > mx) mx = z;
        }
        double sum = 0; /* double: 1000 terms, and it costs nothing here */
        for (int c = 0; c < V; c++) {
            size_t i = logit_at(b, c, B, Vt);
            probs[i] = REXP(logits[i] - mx);
            sum += probs[i];
        }
        real inv = (real)(1.0 / sum);
        for (int c = 0; c < V; c++) probs[logit_at(b, c, B, Vt)] *= inv;
        losses[b] = (real)(log(sum) + mx - logits[logit_at(b, labels[b], B, Vt)]);
    }
}

void tower_softmax_xent_backward(real *dlogits, const real *probs, const int32_t *labels,
                                 int B, int T, int Vt, int slot)
{
    (void)T;
    real invB = (real)1 / B;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < Vt; j++) {
            int c = slot * Vt + j;
            real p = probs[logit_at(b, c, B, Vt)];
            dlogits[(size_t)b * Vt + j] = (p - (c == labels[b] ? 1 : 0)) * invB;
        }
}

void tower_sgd_update(real *w, real *v, const real *g, size_t n, real lr, real momentum,
                      real wd)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] - wd * lr * w[i] - lr * g[i];
        w[i] += v[i];
    }
}

void tower_adam_scalars(double lr, double beta1, double beta2, int64_t t, double *step_size,
                        double *bc2_sqrt)
{
    *step_size = lr / (1.0 - pow(beta1, (double)t));
    *bc2_sqrt = sqrt(1.0 - pow(beta2, (double)t));
}

/* Each operation rounded on its own in this order (no FMA: -ffp-contract=off), which is
 * what tower_k_adam in kernels.h does on the GPU, so the two agree bit for bit. */
void tower_adam_update(real *w, real *m, real *v, const real *g, size_t n, real step_size,
                       real beta1, real beta2, real eps, real bc2_sqrt, real wd)
{
    real one_b1 = 1 - beta1, one_b2 = 1 - beta2;
    for (size_t i = 0; i < n; i++) {
        real gi = g[i] + wd * w[i];
        real mi = beta1 * m[i] + one_b1 * gi;
        real vi = beta2 * v[i] + one_b2 * (gi * gi);
        real denom = RSQRT(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - step_size * (mi / denom);
    }
}
