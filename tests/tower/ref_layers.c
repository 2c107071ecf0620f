/* ref_layers: the reference loops behind the tower tests. Each function is the formula
 * in tower.h written as nested loops over outputs (or over every term, for gradients),
 * in double, so that its correctness can be checked by reading it. Speed is no goal. */
#include "ref_layers.h"

#include <math.h>
#include <string.h>

#include "tower/tower.h" /* base_rng_uniform: the dropout mask is part of the spec */

static int ref_out_size(int n, int k, int stride, int pad)
{
    return (n + 2 * pad - k) / stride + 1;
}

void ref_conv_forward(double *out, double *mag, const double *in, const double *w,
                      const double *b, int B, int Ci, int H, int W, int Co, int K,
                      int stride, int pad, int ldw)
{
    int Ho = ref_out_size(H, K, stride, pad), Wo = ref_out_size(W, K, stride, pad);
    for (int n = 0; n < B; n++)
        for (int co = 0; co < Co; co++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = b ? b[co] : 0.0, m = b ? fabs(b[co]) : 0.0;
                    for (int ci = 0; ci < Ci; ci++)
                        for (int ky = 0; ky < K; ky++)
                            for (int kx = 0; kx < K; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue; /* zero padding */
                                double t = w[(size_t)co * ldw + ((size_t)ci * K + ky) * K + kx] *
                                           in[(((size_t)n * Ci + ci) * H + iy) * W + ix];
                                s += t;
                                m += fabs(t);
                            }
                    size_t o = (((size_t)n * Co + co) * Ho + oy) * Wo + ox;
                    out[o] = s;
                    if (mag)
                        mag[o] = m;
                }
}

void ref_conv_backward(double *din, double *mag_din, double *dw, double *mag_dw, double *db,
                       const double *dout, const double *in, const double *w, int B, int Ci,
                       int H, int W, int Co, int K, int stride, int pad, int ldw)
{
    int Ho = ref_out_size(H, K, stride, pad), Wo = ref_out_size(W, K, stride, pad);
    size_t nin = (size_t)B * Ci * H * W;
    if (din)
        memset(din, 0, nin * sizeof *din);
    if (mag_din)
        memset(mag_din, 0, nin * sizeof *mag_din);
    for (int co = 0; co < Co; co++) {
        for (int k = 0; k < Ci * K * K; k++) {
            if (dw)
                dw[(size_t)co * ldw + k] = 0.0;
            if (mag_dw)
                mag_dw[(size_t)co * ldw + k] = 0.0;
        }
        if (db)
            db[co] = 0.0;
    }
    /* Every term of the forward sum, visited once: out[n,co,oy,ox] += w[co,ci,ky,kx] *
     * in[n,ci,iy,ix]. Its derivative sends dout*w to din and dout*in to dw. */
    for (int n = 0; n < B; n++)
        for (int co = 0; co < Co; co++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double g = dout[(((size_t)n * Co + co) * Ho + oy) * Wo + ox];
                    if (db)
                        db[co] += g;
                    for (int ci = 0; ci < Ci; ci++)
                        for (int ky = 0; ky < K; ky++)
                            for (int kx = 0; kx < K; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                size_t wi = (size_t)co * ldw + ((size_t)ci * K + ky) * K + kx;
                                size_t ii = (((size_t)n * Ci + ci) * H + iy) * W + ix;
                                if (din)
                                    din[ii] += g * w[wi];
                                if (mag_din)
                                    mag_din[ii] += fabs(g * w[wi]);
                                if (dw)
                                    dw[wi] += g * in[ii];
                                if (mag_dw)
                                    mag_dw[wi] += fabs(g * in[ii]);
                            }
                }
}

void ref_fc_forward(double *out, double *mag, const double *in, const double *w,
                    const double *b, int B, int Cin, int Cout, int ldw)
{
    for (int n = 0; n < B; n++)
        for (int o = 0; o < Cout; o++) {
            double s = b ? b[o] : 0.0, m = b ? fabs(b[o]) : 0.0;
            for (int i = 0; i < Cin; i++) {
                double t = w[(size_t)o * ldw + i] * in[(size_t)n * Cin + i];
                s += t;
                m += fabs(t);
            }
            out[(size_t)n * Cout + o] = s;
            if (mag)
                mag[(size_t)n * Cout + o] = m;
        }
}

void ref_fc_backward(double *din, double *mag_din, double *dw, double *mag_dw, double *db,
                     const double *dout, const double *in, const double *w, int B, int Cin,
                     int Cout, int ldw)
{
    for (int n = 0; din && n < B; n++)
        for (int i = 0; i < Cin; i++) {
            double s = 0.0, m = 0.0;
            for (int o = 0; o < Cout; o++) {
                double t = dout[(size_t)n * Cout + o] * w[(size_t)o * ldw + i];
                s += t;
                m += fabs(t);
            }
            din[(size_t)n * Cin + i] = s;
            if (mag_din)
                mag_din[(size_t)n * Cin + i] = m;
        }
    for (int o = 0; o < Cout; o++) {
        for (int i = 0; dw && i < Cin; i++) {
            double s = 0.0, m = 0.0;
            for (int n = 0; n < B; n++) {
                double t = dout[(size_t)n * Cout + o] * in[(size_t)n * Cin + i];
                s += t;
                m += fabs(t);
            }
            dw[(size_t)o * ldw + i] = s;
            if (mag_dw)
                mag_dw[(size_t)o * ldw + i] = m;
        }
        if (db) {
            double s = 0.0;
            for (int n = 0; n < B; n++)
                s += dout[(size_t)n * Cout + o];
            db[o] = s;
        }
    }
}

void ref_relu_forward(double *out, const double *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] > 0.0 ? in[i] : 0.0;
}

void ref_relu_backward(double *din, const double *dout, const double *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        din[i] = out[i] > 0.0 ? dout[i] : 0.0;
}

/* scale[c] at one (sample, position): k + alpha * sum of squares over the clipped window */
static double ref_lrn_scale(const double *a, int C, int HW, int c, int n, double k,
                            double alpha)
{
    double s = 0.0;
    for (int j = c - n / 2; j <= c + n / 2; j++)
        if (j >= 0 && j < C)
            s += a[(size_t)j * HW] * a[(size_t)j * HW];
    return k + alpha * s;
}

void ref_lrn_forward(double *out, const double *in, int B, int C, int HW, int n, double k,
                     double alpha, double beta)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++) {
                const double *a = in + (size_t)b * C * HW + p;
                size_t o = ((size_t)b * C + c) * HW + p;
                out[o] = in[o] / pow(ref_lrn_scale(a, C, HW, c, n, k, alpha), beta);
            }
}

void ref_lrn_backward(double *din, const double *dout, const double *in, int B, int C, int HW,
                      int n, double k, double alpha, double beta)
{
    /* din[j] = sum_c dout[c] * d out[c] / d in[j], with
     * d out[c]/d in[j] = [c == j] s_c^-beta - beta a_c s_c^(-beta-1) 2 alpha a_j [|j-c| <= n/2] */
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
            const double *a = in + (size_t)b * C * HW + p;
            const double *g = dout + (size_t)b * C * HW + p;
            for (int j = 0; j < C; j++) {
                double s = 0.0;
                for (int c = 0; c < C; c++) {
                    double sc = ref_lrn_scale(a, C, HW, c, n, k, alpha);
                    double d = 0.0;
                    if (c == j)
                        d += pow(sc, -beta);
                    if (j >= c - n / 2 && j <= c + n / 2)
                        d -= beta * a[(size_t)c * HW] * pow(sc, -beta - 1.0) * 2.0 * alpha *
                             a[(size_t)j * HW];
                    s += g[(size_t)c * HW] * d;
                }
                din[((size_t)b * C + j) * HW + p] = s;
            }
        }
}

/* Position (h*W+w) of the first maximum of one window in row-major order. */
static int32_t ref_argmax(const double *plane, int W, int y0, int x0, int K)
{
    int32_t best = y0 * W + x0;
    for (int y = y0; y < y0 + K; y++)
        for (int x = x0; x < x0 + K; x++)
            if (plane[y * W + x] > plane[best])
                best = y * W + x;
    return best;
}

void ref_maxpool_forward(double *out, int32_t *idx, const double *in, int B, int C, int H,
                         int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
        const double *plane = in + bc * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int32_t m = ref_argmax(plane, W, oy * S, ox * S, K);
                out[(bc * Ho + oy) * Wo + ox] = plane[m];
                if (idx)
                    idx[(bc * Ho + oy) * Wo + ox] = m;
            }
    }
}

void ref_maxpool_backward(double *din, const double *dout, const double *in, int B, int C,
                          int H, int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    memset(din, 0, (size_t)B * C * H * W * sizeof *din);
    for (size_t bc = 0; bc < (size_t)B * C; bc++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int32_t m = ref_argmax(in + bc * H * W, W, oy * S, ox * S, K);
                din[bc * H * W + m] += dout[(bc * Ho + oy) * Wo + ox];
            }
}

void ref_dropout_forward(double *out, const double *in, size_t n, double p, uint64_t key,
                         int train)
{
    for (size_t i = 0; i < n; i++) {
        if (train)
            out[i] = (double)base_rng_uniform(key, i) >= p ? in[i] : 0.0;
        else
            out[i] = in[i] * (1.0 - p);
    }
}

void ref_dropout_backward(double *din, const double *dout, size_t n, double p, uint64_t key)
{
    for (size_t i = 0; i < n; i++)
        din[i] = (double)base_rng_uniform(key, i) >= p ? dout[i] : 0.0;
}

/* Address of class c of sample b in the gathered (T, B, Vt) layout. */
static size_t ref_xent_at(int c, int b, int B, int Vt)
{
    return (size_t)(c / Vt) * B * Vt + (size_t)b * Vt + (size_t)(c % Vt);
}

void ref_softmax_xent_forward(double *losses, double *probs, const double *logits,
                              const int32_t *labels, int B, int T, int Vt)
{
    int V = T * Vt;
    for (int b = 0; b < B; b++) {
        double mx = -INFINITY, z = 0.0;
        for (int c = 0; c < V; c++)
            mx = fmax(mx, logits[ref_xent_at(c, b, B, Vt)]);
        for (int c = 0; c < V; c++)
            z += exp(logits[ref_xent_at(c, b, B, Vt)] - mx);
        for (int c = 0; c < V; c++)
            probs[ref_xent_at(c, b, B, Vt)] = exp(logits[ref_xent_at(c, b, B, Vt)] - mx) / z;
        losses[b] = mx + log(z) - logits[ref_xent_at(labels[b], b, B, Vt)];
    }
}

void ref_softmax_xent_backward(double *dlogits, const double *logits, const int32_t *labels,
                               int B, int T, int Vt, int slot)
{
    int V = T * Vt;
    for (int b = 0; b < B; b++) {
        double mx = -INFINITY, z = 0.0;
        for (int c = 0; c < V; c++)
            mx = fmax(mx, logits[ref_xent_at(c, b, B, Vt)]);
        for (int c = 0; c < V; c++)
            z += exp(logits[ref_xent_at(c, b, B, Vt)] - mx);
        for (int j = 0; j < Vt; j++) {
            int c = slot * Vt + j;
            double p = exp(logits[ref_xent_at(c, b, B, Vt)] - mx) / z;
            dlogits[(size_t)b * Vt + j] = (p - (c == labels[b] ? 1.0 : 0.0)) / B;
        }
    }
}

void ref_sgd_update(double *w, double *v, const double *g, size_t n, double lr,
                    double momentum, double wd)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] - wd * lr * w[i] - lr * g[i];
        w[i] = w[i] + v[i];
    }
}
