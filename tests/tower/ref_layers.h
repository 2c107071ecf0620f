/* ref_layers: slow, obviously-correct loop versions of every layer in src/tower/tower.h,
 * in double, written only from the header's documented semantics (no im2col, no BLAS).
 * The tests hold the product's layers (float and TOWER_F64 builds) against these. */
#ifndef REF_LAYERS_H
#define REF_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* Every reference function OVERWRITES its outputs (the tests add the accumulate=1
 * prior themselves). Optional `mag` outputs (NULL to skip) receive, per output
 * element, the sum of the absolute values of the terms that were added to form it;
 * float-vs-double tolerances are stated relative to that magnitude. */

/* out (B, Co, Ho, Wo) = conv(in (B, Ci, H, W), w (Co, ldw) first Ci*K*K columns as
 * (Ci, K, K)) + b (Co, or NULL). Ho, Wo from the header's floor rule. */
void ref_conv_forward(double *out, double *mag, const double *in, const double *w,
                      const double *b, int B, int Ci, int H, int W, int Co, int K,
                      int stride, int pad, int ldw);
/* din (B, Ci, H, W) = d/d in of sum(dout * out); dw (Co, ldw): only the first
 * Ci*K*K columns of each row are written; db (Co). Any of the three may be NULL. */
void ref_conv_backward(double *din, double *mag_din, double *dw, double *mag_dw, double *db,
                       const double *dout, const double *in, const double *w, int B, int Ci,
                       int H, int W, int Co, int K, int stride, int pad, int ldw);

/* out (B, Cout) = in (B, Cin) . w (Cout, ldw)^T (first Cin columns) + b (Cout or NULL). */
void ref_fc_forward(double *out, double *mag, const double *in, const double *w,
                    const double *b, int B, int Cin, int Cout, int ldw);
void ref_fc_backward(double *din, double *mag_din, double *dw, double *mag_dw, double *db,
                     const double *dout, const double *in, const double *w, int B, int Cin,
                     int Cout, int ldw);

void ref_relu_forward(double *out, const double *in, size_t n);
void ref_relu_backward(double *din, const double *dout, const double *out, size_t n);

/* The paper's LRN over channels; backward from the explicit Jacobian. in (B, C, HW). */
void ref_lrn_forward(double *out, const double *in, int B, int C, int HW, int n, double k,
                     double alpha, double beta);
void ref_lrn_backward(double *din, const double *dout, const double *in, int B, int C, int HW,
                      int n, double k, double alpha, double beta);

/* Max-pool with no padding; idx (or NULL) gets the flat h*W+w of the first maximum in
 * row-major window order; backward scatters dout onto that position. */
void ref_maxpool_forward(double *out, int32_t *idx, const double *in, int B, int C, int H,
                         int W, int K, int S);
void ref_maxpool_backward(double *din, const double *dout, const double *in, int B, int C,
                          int H, int W, int K, int S);

/* Paper dropout: keep unit i when base_rng_uniform(key, i) >= p, no rescale;
 * evaluation multiplies by (1 - p). */
void ref_dropout_forward(double *out, const double *in, size_t n, double p, uint64_t key,
                         int train);
void ref_dropout_backward(double *din, const double *dout, size_t n, double p, uint64_t key);

/* Softmax cross-entropy over T*Vt classes gathered as (T, B, Vt); losses (B), probs in
 * the same gathered layout. */
void ref_softmax_xent_forward(double *losses, double *probs, const double *logits,
                              const int32_t *labels, int B, int T, int Vt);
/* dlogits (B, Vt): gradient of the MEAN loss for tower `slot`'s logits. */
void ref_softmax_xent_backward(double *dlogits, const double *logits, const int32_t *labels,
                               int B, int T, int Vt, int slot);

/* v <- momentum v - wd lr w - lr g; w <- w + v. */
void ref_sgd_update(double *w, double *v, const double *g, size_t n, double lr,
                    double momentum, double wd);

#endif
