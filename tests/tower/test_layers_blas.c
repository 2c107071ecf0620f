/* The product's float layers (im2col + OpenBLAS sgemm) against the double reference loops
 * at the REAL per-tower AlexNet shapes, forward and backward, with the layers that read
 * both towers run as two ldw blocks with accumulate, exactly as the net runs them.
 *
 * Tolerance: |got - want| <= 1e-5 * (sum of |terms| of that output). The inputs are
 * converted float -> double exactly, so the reference sees the same numbers and the only
 * difference is float rounding of products and sums. The worst-case bound for a float sum
 * of n terms is about n * 6e-8 * sum|terms| (5.5e-4 at n = 9216), but blocked BLAS sums
 * grow like sqrt(n) * 6e-8 (measured with OpenBLAS 0.3.21: at most 2.6e-7 at any shape
 * below). 1e-5 keeps a 40x margin over that, and is still well below 1/n of the magnitude
 * (1e-4 at n = 9216), so even ONE missing tap shows; a wrong block offset or stride misses by
 * O(1) of the magnitude at many outputs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ref_layers.h"
#include "tower/tower.h"

_Static_assert(sizeof(real) == sizeof(float), "this test is for the float build");

#define BLAS_TOL 1e-5

static void *xalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    cr_assert_not_null(p, "calloc(%zu x %zu)", n, size);
    return p;
}

static void fill_f(chk_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)chk_uniform(r, -1.0, 1.0);
}

static double *to_d(const float *x, size_t n)
{
    double *d = xalloc(n, sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* Largest |got - want| / mag; asserts it is within BLAS_TOL. */
static void expect_blas(const char *layer, const char *what, const float *got,
                        const double *want, const double *mag, size_t n)
{
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double m = fmax(mag[i], 1e-30);
        double e = fabs((double)got[i] - want[i]) / m;
        if (!(e <= worst)) { /* also catches NaN */
            worst = e;
            at = i;
        }
    }
    cr_assert(worst <= BLAS_TOL,
              "%s %s[%zu]: got %.9g want %.9g, |diff| / sum|terms| = %.3g > %.1g", layer, what,
              at, (double)got[at], want[at], worst, BLAS_TOL);
    cr_log_info("%s %s: max |diff| / sum|terms| = %.3g over %zu values", layer, what, worst, n);
}

/* One conv layer of one tower: `sources` input blocks of Ci channels each. */
static void conv_real(const char *name, int B, int sources, int Ci, int H, int Co, int K,
                      int stride, int pad, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    int Ho = tower_conv_out(H, K, stride, pad), ck = Ci * K * K, ldw = sources * ck;
    size_t nblk = (size_t)B * Ci * H * H, nw = (size_t)Co * ldw, nout = (size_t)B * Co * Ho * Ho;
    float *in[2] = {NULL, NULL}, *din[2] = {NULL, NULL};
    float *w = xalloc(nw, sizeof *w), *b = xalloc((size_t)Co, sizeof *b);
    float *out = xalloc(nout, sizeof *out), *dout = xalloc(nout, sizeof *dout);
    float *dw = xalloc(nw, sizeof *dw), *db = xalloc((size_t)Co, sizeof *db);
    float *col = xalloc(tower_conv_col_size(Ci, H, H, K, stride, pad), sizeof *col);
    for (int s = 0; s < sources; s++) {
        in[s] = xalloc(nblk, sizeof *in[s]);
        din[s] = xalloc(nblk, sizeof *din[s]);
        fill_f(&r, in[s], nblk);
    }
    fill_f(&r, w, nw);
    fill_f(&r, b, (size_t)Co);
    fill_f(&r, dout, nout);

    /* the product: block s reads slot s with columns [s*ck, (s+1)*ck) of w */
    for (int s = 0; s < sources; s++)
        tower_conv_forward(out, in[s], w + (size_t)s * ck, s == 0 ? b : NULL, B, Ci, H, H, Co,
                           K, stride, pad, ldw, s > 0, col);
    for (int s = 0; s < sources; s++)
        tower_conv_backward(din[s], dw + (size_t)s * ck, s == 0 ? db : NULL, dout, in[s],
                            w + (size_t)s * ck, B, Ci, H, H, Co, K, stride, pad, ldw, 0, col);

    /* the reference: ONE conv over the channel concatenation of the slots */
    int Cf = sources * Ci;
    size_t nfull = (size_t)B * Cf * H * H;
    double *fin = xalloc(nfull, sizeof *fin);
    for (int n = 0; n < B; n++)
        for (int s = 0; s < sources; s++)
            for (size_t i = 0; i < (size_t)Ci * H * H; i++)
                fin[((size_t)n * Cf + (size_t)s * Ci) * H * H + i] =
                    in[s][(size_t)n * Ci * H * H + i];
    double *dw_ = to_d(w, nw), *db_ = to_d(b, (size_t)Co), *ddout = to_d(dout, nout);
    double *want = xalloc(nout, sizeof *want), *mag = xalloc(nout, sizeof *mag);
    ref_conv_forward(want, mag, fin, dw_, db_, B, Cf, H, H, Co, K, stride, pad, ldw);
    expect_blas(name, "out", out, want, mag, nout);

    double *rdin = xalloc(nfull, sizeof *rdin), *mdin = xalloc(nfull, sizeof *mdin);
    double *rdw = xalloc(nw, sizeof *rdw), *mdw = xalloc(nw, sizeof *mdw);
    double *rdb = xalloc((size_t)Co, sizeof *rdb), *mdb = xalloc((size_t)Co, sizeof *mdb);
    ref_conv_backward(rdin, mdin, rdw, mdw, rdb, ddout, fin, dw_, B, Cf, H, H, Co, K, stride,
                      pad, ldw);
    /* din of slot s is channels [s*Ci, (s+1)*Ci) of the full input gradient */
    float *gdin = xalloc(nfull, sizeof *gdin);
    for (int n = 0; n < B; n++)
        for (int s = 0; s < sources; s++)
            memcpy(gdin + ((size_t)n * Cf + (size_t)s * Ci) * H * H,
                   din[s] + (size_t)n * Ci * H * H, (size_t)Ci * H * H * sizeof *gdin);
    expect_blas(name, "din", gdin, rdin, mdin, nfull);
    expect_blas(name, "dw", dw, rdw, mdw, nw);
    for (int n = 0; n < B; n++)
        for (int o = 0; o < Co; o++)
            for (size_t p = 0; p < (size_t)Ho * Ho; p++)
                mdb[o] += fabs(ddout[((size_t)n * Co + o) * Ho * Ho + p]);
    expect_blas(name, "db", db, rdb, mdb, (size_t)Co);

    for (int s = 0; s < sources; s++)
        free(in[s]), free(din[s]);
    free(w), free(b), free(out), free(dout), free(dw), free(db), free(col), free(fin);
    free(dw_), free(db_), free(ddout), free(want), free(mag), free(rdin), free(mdin), free(rdw);
    free(mdw), free(rdb), free(mdb), free(gdin);
}

/* One fc layer of one tower: `sources` input blocks of Cin features each. */
static void fc_real(const char *name, int B, int sources, int Cin, int Cout, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    int ldw = sources * Cin, Cf = ldw;
    size_t nblk = (size_t)B * Cin, nw = (size_t)Cout * ldw, nout = (size_t)B * Cout;
    float *in[2] = {NULL, NULL}, *din[2] = {NULL, NULL};
    float *w = xalloc(nw, sizeof *w), *b = xalloc((size_t)Cout, sizeof *b);
    float *out = xalloc(nout, sizeof *out), *dout = xalloc(nout, sizeof *dout);
    float *dw = xalloc(nw, sizeof *dw), *db = xalloc((size_t)Cout, sizeof *db);
    for (int s = 0; s < sources; s++) {
        in[s] = xalloc(nblk, sizeof *in[s]);
        din[s] = xalloc(nblk, sizeof *din[s]);
        fill_f(&r, in[s], nblk);
    }
    fill_f(&r, w, nw);
    fill_f(&r, b, (size_t)Cout);
    fill_f(&r, dout, nout);
    for (int s = 0; s < sources; s++)
        tower_fc_forward(out, in[s], w + (size_t)s * Cin, s == 0 ? b : NULL, B, Cin, Cout, ldw,
                         s > 0);
    for (int s = 0; s < sources; s++)
        tower_fc_backward(din[s], dw + (size_t)s * Cin, s == 0 ? db : NULL, dout, in[s],
                          w + (size_t)s * Cin, B, Cin, Cout, ldw, 0);

    double *fin = xalloc((size_t)B * Cf, sizeof *fin);
    for (int n = 0; n < B; n++)
        for (int s = 0; s < sources; s++)
            for (int i = 0; i < Cin; i++)
                fin[(size_t)n * Cf + (size_t)s * Cin + i] = in[s][(size_t)n * Cin + i];
    double *dw_ = to_d(w, nw), *db_ = to_d(b, (size_t)Cout), *ddout = to_d(dout, nout);
    double *want = xalloc(nout, sizeof *want), *mag = xalloc(nout, sizeof *mag);
    ref_fc_forward(want, mag, fin, dw_, db_, B, Cf, Cout, ldw);
    expect_blas(name, "out", out, want, mag, nout);

    double *rdin = xalloc((size_t)B * Cf, sizeof *rdin), *mdin = xalloc((size_t)B * Cf, 8);
    double *rdw = xalloc(nw, sizeof *rdw), *mdw = xalloc(nw, sizeof *mdw);
    double *rdb = xalloc((size_t)Cout, sizeof *rdb), *mdb = xalloc((size_t)Cout, sizeof *mdb);
    ref_fc_backward(rdin, mdin, rdw, mdw, rdb, ddout, fin, dw_, B, Cf, Cout, ldw);
    float *gdin = xalloc((size_t)B * Cf, sizeof *gdin);
    for (int n = 0; n < B; n++)
        for (int s = 0; s < sources; s++)
            memcpy(gdin + (size_t)n * Cf + (size_t)s * Cin, din[s] + (size_t)n * Cin,
                   (size_t)Cin * sizeof *gdin);
    expect_blas(name, "din", gdin, rdin, mdin, (size_t)B * Cf);
    expect_blas(name, "dw", dw, rdw, mdw, nw);
    for (int o = 0; o < Cout; o++)
        for (int n = 0; n < B; n++)
            mdb[o] += fabs(ddout[(size_t)n * Cout + o]);
    expect_blas(name, "db", db, rdb, mdb, (size_t)Cout);

    for (int s = 0; s < sources; s++)
        free(in[s]), free(din[s]);
    free(w), free(b), free(out), free(dout), free(dw), free(db), free(fin), free(dw_);
    free(db_), free(ddout), free(want), free(mag), free(rdin), free(mdin), free(rdw), free(mdw);
    free(rdb), free(mdb), free(gdin);
}

/* Per-tower shapes of the two-tower net (the paper's figure 2; pads from net.c's table,
 * which the plan test pins to 55/27/13). Batch 2 where the reference is cheap, 1 where
 * its loops dominate the run time. */
Test(layers_blas, conv1_3to48_11x11s4p2_224)
{
    conv_real("conv1", 2, 1, 3, 224, 48, 11, 4, 2, 101);
}

Test(layers_blas, conv2_48to128_5x5p2_27)
{
    conv_real("conv2", 1, 1, 48, 27, 128, 5, 1, 2, 102);
}

Test(layers_blas, conv3_2x128to192_3x3p1_13)
{
    conv_real("conv3", 2, 2, 128, 13, 192, 3, 1, 1, 103);
}

Test(layers_blas, conv4_192to192_3x3p1_13)
{
    conv_real("conv4", 1, 1, 192, 13, 192, 3, 1, 1, 104);
}

Test(layers_blas, conv5_192to128_3x3p1_13)
{
    conv_real("conv5", 1, 1, 192, 13, 128, 3, 1, 1, 105);
}

Test(layers_blas, fc6_2x4608to2048)
{
    fc_real("fc6", 2, 2, 4608, 2048, 106);
}

Test(layers_blas, fc7_2x2048to2048)
{
    fc_real("fc7", 2, 2, 2048, 2048, 107);
}

Test(layers_blas, fc8_2x2048to500)
{
    fc_real("fc8", 2, 2, 2048, 500, 108);
}

/* The lean arena's LRN (no scale or output kept; the backward recomputes both, in place
 * on dout) gives the kept-scale LRN's bits, forward and backward, at conv2's shape
 * (tower_lrn_*_lean, tower.h). */
Test(layers_blas, lrn_lean_bit_for_bit)
{
    int B = 3, C = 128, HW = 27 * 27;
    size_t n = (size_t)B * C * HW;
    chk_rng r;
    chk_rng_seed(&r, 71);
    float *in = xalloc(n, sizeof *in), *dout = xalloc(n, sizeof *dout);
    float *out = xalloc(n, sizeof *out), *scale = xalloc(n, sizeof *scale);
    float *din = xalloc(n, sizeof *din), *out2 = xalloc(n, sizeof *out2);
    float *g2 = xalloc(n, sizeof *g2);
    float *work = xalloc(tower_lrn_lean_work_size(C, HW), sizeof *work);
    for (size_t i = 0; i < n; i++) in[i] = (float)chk_uniform(&r, 0.0, 40.0); /* ReLU'd */
    fill_f(&r, dout, n);
    real k = (real)TOWER_LRN_K, a = (real)TOWER_LRN_ALPHA, b = (real)TOWER_LRN_BETA;
    tower_lrn_forward(out, scale, in, B, C, HW, TOWER_LRN_N, k, a, b);
    tower_lrn_forward_lean(out2, in, B, C, HW, TOWER_LRN_N, k, a, b, work);
    cr_assert(memcmp(out, out2, n * sizeof *out) == 0, "lean forward differs");
    tower_lrn_backward(din, dout, in, out, scale, B, C, HW, TOWER_LRN_N, k, a, b);
    memcpy(g2, dout, n * sizeof *g2);
    tower_lrn_backward_lean(g2, g2, in, B, C, HW, TOWER_LRN_N, k, a, b, work);
    cr_assert(memcmp(din, g2, n * sizeof *din) == 0, "lean backward (in place) differs");
    free(in), free(dout), free(out), free(scale), free(din), free(out2), free(g2), free(work);
}
