/* conv_dnnl.h: the CPU convolution passes run by oneDNN (conv_dnnl.c), in builds that
 * have it (TT_HAVE_DNNL; meson's `dnnl` option). float only. */
#ifndef TOWER_CONV_DNNL_H
#define TOWER_CONV_DNNL_H

#include "tower/tower.h" /* tower_conv_dnnl_passes: which passes */

typedef struct tower_dnnl_conv tower_dnnl_conv;

/* One conv layer's primitives: in (B, Ci, H, W), w (Co, ldw) of which the first Ci*K*K
 * columns are used, padding P. NULL when the shape has no oneDNN pass or oneDNN refused
 * it (the caller then runs its own path; a message says why). */
tower_dnnl_conv *tower_dnnl_conv_new(int Ci, int H, int W, int Co, int K, int S, int P,
                                     int ldw);
void tower_dnnl_conv_free(tower_dnnl_conv *c);

/* tower_conv_forward's contract (out = or += conv + b; b may be NULL): 0, or -1 when this
 * layer's forward is not oneDNN's (nothing written). */
int tower_dnnl_conv_forward(tower_dnnl_conv *c, float *out, const float *in, const float *w,
                            const float *b, int B, int accumulate);
/* tower_conv_backward's input gradient (din = or += ): 0, or -1 as above. */
int tower_dnnl_conv_backward_data(tower_dnnl_conv *c, float *din, const float *dout,
                                  const float *w, int B, int accumulate);

#endif
