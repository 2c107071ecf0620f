/* conv_dnnl.h: the CPU convolution passes run by oneDNN (conv_dnnl.c), in builds that
 * have it (TT_HAVE_DNNL; meson's `dnnl` option). float only. */
#ifndef TOWER_CONV_DNNL_H
#define TOWER_CONV_DNNL_H

#include "tower/tower.h" /* tower_conv_dnnl_passes: which passes */

typedef struct tower_dnnl_conv tower_dnnl_conv;

/* One conv layer's primitives for `passes` (TOWER_DNNL_*; the layers ask for
 * tower_conv_dnnl_passes(K, S); the input gradient only at stride 1): in (B, Ci, H, W),
 * w (Co, ldw) of which the first Ci*K*K columns are used, padding P. NULL when no pass is
 * left or oneDNN refused the shape (the caller then runs its own path; a message says
 * why). */
tower_dnnl_conv *tower_dnnl_conv_new(int Ci, int H, int W, int Co, int K, int S, int P,
                                     int ldw, int passes);
void tower_dnnl_conv_free(tower_dnnl_conv *c);

/* tower_conv_forward's contract (out = or += conv + b; b may be NULL): 0, or -1 when this
 * layer's forward is not oneDNN's (nothing written). */
int tower_dnnl_conv_forward(tower_dnnl_conv *c, float *out, const float *in, const float *w,
                            const float *b, int B, int accumulate);
/* tower_conv_backward's input gradient (din = or += ): 0, or -1 as above. */
int tower_dnnl_conv_backward_data(tower_dnnl_conv *c, float *din, const float *dout,
                                  const float *w, int B, int accumulate);
/* tower_conv_backward's weights' and bias' gradients (dw (Co, ldw) +=, db (Co) += unless
 * NULL): 0, or -1 as above. */
int tower_dnnl_conv_backward_weights(tower_dnnl_conv *c, float *dw, float *db, const float *dout,
                                     const float *in, int B);

/* 1 when oneDNN runs AVX-512 kernels here (its effective ISA is avx512_core or above). */
int tower_dnnl_avx512(void);

/* cblas_sgemm's row-major product by oneDNN's dnnl_sgemm (ta, tb: 1 transposes), on the
 * tower's thread count. Where oneDNN has AVX-512 kernels it ran about twice Debian's
 * OpenBLAS on an AMD CPU (OpenBLAS picks its AVX2 kernels there) and as fast as or
 * faster than its AVX-512 kernels on an Intel one (docs/BENCH.md, "oneDNN on AVX-512"). */
void tower_dnnl_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc);

#endif
