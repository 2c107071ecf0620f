/* Layer gradients in double: every layer of layers_cpu.c, built with -DTOWER_F64, is held
 * against the reference loops (ref_layers.c) and against central finite differences of
 * L = sum(R * out) for a fixed random R, over EVERY input, weight and bias element.
 *
 * Tolerances. FD vs backward: per element |a - b| / max(|a|, |b|, 1e-8) <= 1e-6. The
 * inputs, weights and R are O(0.1..10), so every nonzero gradient here is far above the
 * 1e-8 floor, which only keeps exact zeros (units ReLU, pooling or dropout cut off, where
 * both sides are exactly 0) from dividing by zero. With the per-output difference of
 * chk_fd the rounding error is ~1e-16 * |out| / h ~ 1e-11 relative, and the truncation
 * error of the central difference is ~h^2 |f'''| ~ 1e-10 (0 for the linear layers), so
 * 1e-6 leaves four orders of margin while any wrong term (a missing tap, a transposed
 * index, a wrong constant) is an O(1) relative error. Product vs reference, both in
 * double: |a - b| <= 1e-12 * (sum of |terms|), i.e. only summation order differs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ref_layers.h"
#include "tower/tower.h"

_Static_assert(sizeof(real) == sizeof(double), "this test needs the TOWER_F64 build");

#define FD_TOL 1e-6
#define FD_FLOOR 1e-8
#define REF_TOL 1e-12

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p, "calloc(%zu doubles)", n);
    return p;
}

/* got vs want with a per-element magnitude (or 1 where mag is NULL) */
static void expect_close(const char *what, const double *got, const double *want,
                         const double *mag, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++) {
        double m = mag ? fmax(mag[i], 1e-300) : fmax(fabs(want[i]), 1.0);
        cr_assert(fabs(got[i] - want[i]) <= tol * m,
                  "%s[%zu]: got %.17g want %.17g (|diff| %.3g > %.1g * %.3g)", what, i, got[i],
                  want[i], fabs(got[i] - want[i]), tol, m);
    }
}

/* worst finite-difference error of the running test (each Criterion test is its own
 * process), logged by its .fini so the margin under FD_TOL is on record */
static double fd_worst;
static size_t fd_count;
static const char *fd_worst_what = "";

static void log_fd_worst(void)
{
    cr_log_info("%zu finite differences, worst relative error %.3g (%s)", fd_count, fd_worst,
                fd_worst_what);
}

static void expect_fd(const char *what, size_t i, double analytic, double fd)
{
    double e = chk_rel(analytic, fd, FD_FLOOR);
    fd_count++;
    if (e > fd_worst) {
        fd_worst = e;
        fd_worst_what = what;
    }
    cr_assert(e <= FD_TOL, "%s[%zu]: backward %.17g, finite difference %.17g (rel err %.3g)",
              what, i, analytic, fd, e);
}

/* ---- convolution --------------------------------------------------------------------- */

typedef struct {
    int B, Ci, H, W, Co, K, stride, pad, ldw, Ho, Wo;
    double *in, *w, *b, *out, *col;
} conv_ctx;

static void conv_fwd(void *p)
{
    conv_ctx *c = p;
    tower_conv_forward(c->out, c->in, c->w, c->b, c->B, c->Ci, c->H, c->W, c->Co, c->K,
                       c->stride, c->pad, c->ldw, 0, c->col);
}

static void conv_case(int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                      int extra_ld, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    conv_ctx c = {B, Ci, H, W, Co, K, stride, pad, Ci * K * K + extra_ld, 0, 0,
                  NULL, NULL, NULL, NULL, NULL};
    c.Ho = tower_conv_out(H, K, stride, pad);
    c.Wo = tower_conv_out(W, K, stride, pad);
    cr_assert_eq(c.Ho, (H + 2 * pad - K) / stride + 1, "tower_conv_out(%d,%d,%d,%d)", H, K,
                 stride, pad);
    int ck = Ci * K * K;
    size_t nin = (size_t)B * Ci * H * W, nw = (size_t)Co * c.ldw;
    size_t nout = (size_t)B * Co * c.Ho * c.Wo;
    c.in = dalloc(nin);
    c.w = dalloc(nw);
    c.b = dalloc((size_t)Co);
    c.out = dalloc(nout);
    c.col = dalloc(tower_conv_col_size(Ci, H, W, K, stride, pad));
    chk_fill(&r, c.in, nin, -1.0, 1.0);
    for (int o = 0; o < Co; o++)
        for (int k = 0; k < c.ldw; k++)
            /* columns past Ci*K*K belong to another input block: NaN proves they are
             * never read */
            c.w[(size_t)o * c.ldw + k] = k < ck ? chk_uniform(&r, -1.0, 1.0) : NAN;
    chk_fill(&r, c.b, (size_t)Co, -1.0, 1.0);
    double *R = dalloc(nout), *want = dalloc(nout), *mag = dalloc(nout);
    chk_fill(&r, R, nout, -1.0, 1.0);

    /* forward, accumulate = 0 and 1, with and without bias */
    ref_conv_forward(want, mag, c.in, c.w, c.b, B, Ci, H, W, Co, K, stride, pad, c.ldw);
    for (size_t i = 0; i < nout; i++)
        c.out[i] = NAN; /* accumulate = 0 must overwrite */
    conv_fwd(&c);
    expect_close("conv out", c.out, want, mag, nout, REF_TOL);
    double *prior = dalloc(nout), *want2 = dalloc(nout);
    chk_fill(&r, prior, nout, -1.0, 1.0);
    memcpy(c.out, prior, nout * sizeof *prior);
    tower_conv_forward(c.out, c.in, c.w, c.b, B, Ci, H, W, Co, K, stride, pad, c.ldw, 1, c.col);
    for (size_t i = 0; i < nout; i++)
        want2[i] = prior[i] + want[i];
    expect_close("conv out (accumulate, bias)", c.out, want2, mag, nout, REF_TOL);
    ref_conv_forward(want, mag, c.in, c.w, NULL, B, Ci, H, W, Co, K, stride, pad, c.ldw);
    memcpy(c.out, prior, nout * sizeof *prior);
    tower_conv_forward(c.out, c.in, c.w, NULL, B, Ci, H, W, Co, K, stride, pad, c.ldw, 1,
                       c.col);
    for (size_t i = 0; i < nout; i++)
        want2[i] = prior[i] + want[i];
    expect_close("conv out (accumulate, no bias)", c.out, want2, mag, nout, REF_TOL);

    /* backward: din overwritten (accumulate_din = 0), dw and db accumulate */
    double *din = dalloc(nin), *dw = dalloc(nw), *db = dalloc((size_t)Co);
    double *rdin = dalloc(nin), *rdw = dalloc(nw), *rdb = dalloc((size_t)Co);
    double *mdin = dalloc(nin), *mdw = dalloc(nw), *dw0 = dalloc(nw), *db0 = dalloc((size_t)Co);
    ref_conv_backward(rdin, mdin, rdw, mdw, rdb, R, c.in, c.w, B, Ci, H, W, Co, K, stride, pad,
                      c.ldw);
    for (size_t i = 0; i < nin; i++)
        din[i] = NAN;
    chk_fill(&r, dw0, nw, -1.0, 1.0);
    chk_fill(&r, db0, (size_t)Co, -1.0, 1.0);
    memcpy(dw, dw0, nw * sizeof *dw);
    memcpy(db, db0, (size_t)Co * sizeof *db);
    tower_conv_backward(din, dw, db, R, c.in, c.w, B, Ci, H, W, Co, K, stride, pad, c.ldw, 0,
                        c.col);
    expect_close("conv din", din, rdin, mdin, nin, REF_TOL);
    for (int o = 0; o < Co; o++)
        for (int k = 0; k < c.ldw; k++) {
            size_t i = (size_t)o * c.ldw + k;
            if (k < ck)
                cr_assert(fabs(dw[i] - (dw0[i] + rdw[i])) <= REF_TOL * (mdw[i] + fabs(dw0[i])),
                          "conv dw[%d,%d]: got %.17g want %.17g + %.17g", o, k, dw[i], dw0[i],
                          rdw[i]);
            else
                cr_assert(dw[i] == dw0[i], "conv dw[%d,%d] outside the block was touched", o,
                          k);
        }
    for (int o = 0; o < Co; o++)
        cr_assert(fabs(db[o] - (db0[o] + rdb[o])) <= REF_TOL * (fabs(db0[o]) + (double)nout),
                  "conv db[%d]: got %.17g want %.17g + %.17g", o, db[o], db0[o], rdb[o]);

    /* accumulate_din = 1 adds; din, db may be NULL */
    double *dprior = dalloc(nin);
    chk_fill(&r, dprior, nin, -1.0, 1.0);
    memcpy(din, dprior, nin * sizeof *din);
    tower_conv_backward(din, dw, NULL, R, c.in, c.w, B, Ci, H, W, Co, K, stride, pad, c.ldw, 1,
                        c.col);
    for (size_t i = 0; i < nin; i++)
        cr_assert(fabs(din[i] - (dprior[i] + rdin[i])) <= REF_TOL * (mdin[i] + 1.0),
                  "conv din (accumulate)[%zu]: got %.17g want %.17g", i, din[i],
                  dprior[i] + rdin[i]);
    memset(dw, 0, nw * sizeof *dw);
    tower_conv_backward(NULL, dw, NULL, R, c.in, c.w, B, Ci, H, W, Co, K, stride, pad, c.ldw, 0,
                        c.col);
    for (int o = 0; o < Co; o++)
        for (int k = 0; k < ck; k++) {
            size_t i = (size_t)o * c.ldw + k;
            cr_assert(fabs(dw[i] - rdw[i]) <= REF_TOL * mdw[i] + 1e-300,
                      "conv dw (din NULL)[%d,%d]: got %.17g want %.17g", o, k, dw[i], rdw[i]);
        }

    /* finite differences: the product's backward against the product's forward */
    memset(dw, 0, nw * sizeof *dw);
    memset(db, 0, (size_t)Co * sizeof *db);
    tower_conv_backward(din, dw, db, R, c.in, c.w, B, Ci, H, W, Co, K, stride, pad, c.ldw, 0,
                        c.col);
    double *plus = dalloc(nout), *minus = dalloc(nout);
    const double h = 1e-3; /* the layer is linear in each argument: no truncation error */
    for (size_t i = 0; i < nin; i++)
        expect_fd("conv din", i, din[i], chk_fd(conv_fwd, &c, &c.in[i], h, c.out, R, nout, plus,
                                                minus));
    for (int o = 0; o < Co; o++)
        for (int k = 0; k < ck; k++) {
            size_t i = (size_t)o * c.ldw + k;
            expect_fd("conv dw", i, dw[i],
                      chk_fd(conv_fwd, &c, &c.w[i], h, c.out, R, nout, plus, minus));
        }
    for (int o = 0; o < Co; o++)
        expect_fd("conv db", (size_t)o, db[o],
                  chk_fd(conv_fwd, &c, &c.b[o], h, c.out, R, nout, plus, minus));

    free(c.in), free(c.w), free(c.b), free(c.out), free(c.col), free(R), free(want), free(mag);
    free(prior), free(want2), free(din), free(dw), free(db), free(rdin), free(rdw), free(rdb);
    free(mdin), free(mdw), free(dw0), free(db0), free(dprior), free(plus), free(minus);
}

Test(layers_f64, conv_stride2_pad1_ldw, .fini = log_fd_worst)
{
    /* non-square input and ldw > Ci*K*K (an input block of a two-source layer) */
    conv_case(2, 3, 9, 7, 4, 3, 2, 1, 5, 11);
}

Test(layers_f64, conv_stride4_pad2_like_conv1, .fini = log_fd_worst)
{
    conv_case(1, 3, 23, 23, 3, 11, 4, 2, 0, 12);
}

Test(layers_f64, conv_stride1_pad2_5x5, .fini = log_fd_worst)
{
    conv_case(2, 4, 6, 6, 5, 5, 1, 2, 7, 13);
}

Test(layers_f64, conv_1x1_nopad, .fini = log_fd_worst)
{
    conv_case(3, 5, 4, 3, 2, 1, 1, 0, 0, 14);
}

/* ---- fully connected ----------------------------------------------------------------- */

typedef struct {
    int B, Cin, Cout, ldw;
    double *in, *w, *b, *out;
} fc_ctx;

static void fc_fwd(void *p)
{
    fc_ctx *c = p;
    tower_fc_forward(c->out, c->in, c->w, c->b, c->B, c->Cin, c->Cout, c->ldw, 0);
}

static void fc_case(int B, int Cin, int Cout, int extra_ld, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    fc_ctx c = {B, Cin, Cout, Cin + extra_ld, NULL, NULL, NULL, NULL};
    size_t nin = (size_t)B * Cin, nw = (size_t)Cout * c.ldw, nout = (size_t)B * Cout;
    c.in = dalloc(nin);
    c.w = dalloc(nw);
    c.b = dalloc((size_t)Cout);
    c.out = dalloc(nout);
    chk_fill(&r, c.in, nin, -1.0, 1.0);
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < c.ldw; i++)
            c.w[(size_t)o * c.ldw + i] = i < Cin ? chk_uniform(&r, -1.0, 1.0) : NAN;
    chk_fill(&r, c.b, (size_t)Cout, -1.0, 1.0);
    double *R = dalloc(nout), *want = dalloc(nout), *mag = dalloc(nout), *prior = dalloc(nout);
    chk_fill(&r, R, nout, -1.0, 1.0);
    chk_fill(&r, prior, nout, -1.0, 1.0);

    ref_fc_forward(want, mag, c.in, c.w, c.b, B, Cin, Cout, c.ldw);
    for (size_t i = 0; i < nout; i++)
        c.out[i] = NAN;
    fc_fwd(&c);
    expect_close("fc out", c.out, want, mag, nout, REF_TOL);
    memcpy(c.out, prior, nout * sizeof *prior);
    tower_fc_forward(c.out, c.in, c.w, c.b, B, Cin, Cout, c.ldw, 1);
    for (size_t i = 0; i < nout; i++)
        cr_assert(fabs(c.out[i] - (prior[i] + want[i])) <= REF_TOL * (mag[i] + 1.0),
                  "fc out (accumulate, bias)[%zu]: got %.17g want %.17g", i, c.out[i],
                  prior[i] + want[i]);
    ref_fc_forward(want, mag, c.in, c.w, NULL, B, Cin, Cout, c.ldw);
    memcpy(c.out, prior, nout * sizeof *prior);
    tower_fc_forward(c.out, c.in, c.w, NULL, B, Cin, Cout, c.ldw, 1);
    for (size_t i = 0; i < nout; i++)
        cr_assert(fabs(c.out[i] - (prior[i] + want[i])) <= REF_TOL * (mag[i] + 1.0),
                  "fc out (accumulate, no bias)[%zu]: got %.17g want %.17g", i, c.out[i],
                  prior[i] + want[i]);

    double *din = dalloc(nin), *dw = dalloc(nw), *db = dalloc((size_t)Cout);
    double *rdin = dalloc(nin), *rdw = dalloc(nw), *rdb = dalloc((size_t)Cout);
    double *mdin = dalloc(nin), *mdw = dalloc(nw), *dw0 = dalloc(nw), *db0 = dalloc((size_t)Cout);
    ref_fc_backward(rdin, mdin, rdw, mdw, rdb, R, c.in, c.w, B, Cin, Cout, c.ldw);
    for (size_t i = 0; i < nin; i++)
        din[i] = NAN;
    chk_fill(&r, dw0, nw, -1.0, 1.0);
    chk_fill(&r, db0, (size_t)Cout, -1.0, 1.0);
    memcpy(dw, dw0, nw * sizeof *dw);
    memcpy(db, db0, (size_t)Cout * sizeof *db);
    tower_fc_backward(din, dw, db, R, c.in, c.w, B, Cin, Cout, c.ldw, 0);
    expect_close("fc din", din, rdin, mdin, nin, REF_TOL);
    for (int o = 0; o < Cout; o++) {
        for (int i = 0; i < c.ldw; i++) {
            size_t k = (size_t)o * c.ldw + i;
            if (i < Cin)
                cr_assert(fabs(dw[k] - (dw0[k] + rdw[k])) <= REF_TOL * (mdw[k] + 1.0),
                          "fc dw[%d,%d]: got %.17g want %.17g", o, i, dw[k], dw0[k] + rdw[k]);
            else
                cr_assert(dw[k] == dw0[k], "fc dw[%d,%d] outside the block was touched", o, i);
        }
        cr_assert(fabs(db[o] - (db0[o] + rdb[o])) <= REF_TOL * (double)(B + 1),
                  "fc db[%d]: got %.17g want %.17g", o, db[o], db0[o] + rdb[o]);
    }
    double *dprior = dalloc(nin);
    chk_fill(&r, dprior, nin, -1.0, 1.0);
    memcpy(din, dprior, nin * sizeof *din);
    tower_fc_backward(din, dw, NULL, R, c.in, c.w, B, Cin, Cout, c.ldw, 1);
    for (size_t i = 0; i < nin; i++)
        cr_assert(fabs(din[i] - (dprior[i] + rdin[i])) <= REF_TOL * (mdin[i] + 1.0),
                  "fc din (accumulate)[%zu]: got %.17g want %.17g", i, din[i],
                  dprior[i] + rdin[i]);
    memset(dw, 0, nw * sizeof *dw);
    tower_fc_backward(NULL, dw, NULL, R, c.in, c.w, B, Cin, Cout, c.ldw, 0);
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++) {
            size_t k = (size_t)o * c.ldw + i;
            cr_assert(fabs(dw[k] - rdw[k]) <= REF_TOL * (mdw[k] + 1e-300),
                      "fc dw (din NULL)[%d,%d]: got %.17g want %.17g", o, i, dw[k], rdw[k]);
        }

    memset(dw, 0, nw * sizeof *dw);
    memset(db, 0, (size_t)Cout * sizeof *db);
    tower_fc_backward(din, dw, db, R, c.in, c.w, B, Cin, Cout, c.ldw, 0);
    double *plus = dalloc(nout), *minus = dalloc(nout);
    const double h = 1e-3; /* linear in each argument */
    for (size_t i = 0; i < nin; i++)
        expect_fd("fc din", i, din[i],
                  chk_fd(fc_fwd, &c, &c.in[i], h, c.out, R, nout, plus, minus));
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++) {
            size_t k = (size_t)o * c.ldw + i;
            expect_fd("fc dw", k, dw[k],
                      chk_fd(fc_fwd, &c, &c.w[k], h, c.out, R, nout, plus, minus));
        }
    for (int o = 0; o < Cout; o++)
        expect_fd("fc db", (size_t)o, db[o],
                  chk_fd(fc_fwd, &c, &c.b[o], h, c.out, R, nout, plus, minus));

    free(c.in), free(c.w), free(c.b), free(c.out), free(R), free(want), free(mag), free(prior);
    free(din), free(dw), free(db), free(rdin), free(rdw), free(rdb), free(mdin), free(mdw);
    free(dw0), free(db0), free(dprior), free(plus), free(minus);
}

Test(layers_f64, fc_ldw, .fini = log_fd_worst)
{
    fc_case(3, 7, 5, 4, 21);
}

Test(layers_f64, fc_exact_ld_batch1, .fini = log_fd_worst)
{
    fc_case(1, 16, 9, 0, 22);
}

/* ---- ReLU ---------------------------------------------------------------------------- */

typedef struct {
    size_t n;
    double *in, *out;
} relu_ctx;

static void relu_fwd(void *p)
{
    relu_ctx *c = p;
    tower_relu_forward(c->out, c->in, c->n);
}

Test(layers_f64, relu, .fini = log_fd_worst)
{
    chk_rng r;
    chk_rng_seed(&r, 31);
    relu_ctx c = {257, NULL, NULL};
    c.in = dalloc(c.n);
    c.out = dalloc(c.n);
    /* |x| >= 1e-2 and h = 1e-5: no perturbation crosses the kink at 0 */
    for (size_t i = 0; i < c.n; i++)
        c.in[i] = chk_signed(&r, 1e-2, 2.0);
    double *R = dalloc(c.n), *want = dalloc(c.n), *din = dalloc(c.n), *rdin = dalloc(c.n);
    double *plus = dalloc(c.n), *minus = dalloc(c.n);
    chk_fill(&r, R, c.n, -1.0, 1.0);
    ref_relu_forward(want, c.in, c.n);
    relu_fwd(&c);
    for (size_t i = 0; i < c.n; i++)
        cr_assert(c.out[i] == want[i], "relu out[%zu]: got %.17g want %.17g", i, c.out[i],
                  want[i]);
    ref_relu_backward(rdin, R, want, c.n);
    tower_relu_backward(din, R, c.out, c.n);
    for (size_t i = 0; i < c.n; i++) {
        cr_assert(din[i] == rdin[i], "relu din[%zu]: got %.17g want %.17g", i, din[i], rdin[i]);
        expect_fd("relu din", i, din[i],
                  chk_fd(relu_fwd, &c, &c.in[i], 1e-5, c.out, R, c.n, plus, minus));
    }
    /* exactly max(0, x) at tiny magnitudes and at 0 */
    double tiny[4] = {1e-300, -1e-300, 0.0, -0.0}, tout[4];
    tower_relu_forward(tout, tiny, 4);
    cr_assert(tout[0] == 1e-300 && tout[1] == 0.0 && tout[2] == 0.0 && tout[3] == 0.0,
              "relu(1e-300, -1e-300, 0, -0) = %g %g %g %g", tout[0], tout[1], tout[2], tout[3]);
    /* in place, both directions (the net applies ReLU on act itself) */
    double *buf = dalloc(c.n);
    memcpy(buf, c.in, c.n * sizeof *buf);
    tower_relu_forward(buf, buf, c.n);
    cr_assert(memcmp(buf, want, c.n * sizeof *buf) == 0, "relu in place differs");
    double *g = dalloc(c.n);
    memcpy(g, R, c.n * sizeof *g);
    tower_relu_backward(g, g, want, c.n);
    cr_assert(memcmp(g, rdin, c.n * sizeof *g) == 0, "relu backward in place differs");
    free(c.in), free(c.out), free(R), free(want), free(din), free(rdin), free(plus);
    free(minus), free(buf), free(g);
}

/* ---- tanh ------------------------------------------------------------------------------ */

static void tanh_fwd(void *p)
{
    relu_ctx *c = p;
    tower_tanh_forward(c->out, c->in, c->n);
}

Test(layers_f64, tanh, .fini = log_fd_worst)
{
    chk_rng r;
    chk_rng_seed(&r, 32);
    relu_ctx c = {257, NULL, NULL};
    c.in = dalloc(c.n);
    c.out = dalloc(c.n);
    /* from the near-linear middle to saturation (tanh(4) = 0.9993) */
    chk_fill(&r, c.in, c.n, -4.0, 4.0);
    double *R = dalloc(c.n), *din = dalloc(c.n), *plus = dalloc(c.n), *minus = dalloc(c.n);
    chk_fill(&r, R, c.n, -1.0, 1.0);
    tanh_fwd(&c);
    for (size_t i = 0; i < c.n; i++)
        cr_assert(fabs(c.out[i] - tanh(c.in[i])) <= 1e-16, "tanh out[%zu]: got %.17g want "
                  "%.17g", i, c.out[i], tanh(c.in[i]));
    tower_tanh_backward(din, R, c.out, c.n);
    for (size_t i = 0; i < c.n; i++) {
        /* against the derivative written from the input, 1 / cosh^2 */
        double want = R[i] / (cosh(c.in[i]) * cosh(c.in[i]));
        cr_assert(fabs(din[i] - want) <= 1e-14 * fabs(R[i]), "tanh din[%zu]: got %.17g "
                  "want %.17g", i, din[i], want);
        expect_fd("tanh din", i, din[i],
                  chk_fd(tanh_fwd, &c, &c.in[i], 1e-5, c.out, R, c.n, plus, minus));
    }
    /* in place, both directions (chk_fd left out stale) */
    double *buf = dalloc(c.n), *g = dalloc(c.n);
    tanh_fwd(&c);
    memcpy(buf, c.in, c.n * sizeof *buf);
    tower_tanh_forward(buf, buf, c.n);
    cr_assert(memcmp(buf, c.out, c.n * sizeof *buf) == 0, "tanh in place differs");
    memcpy(g, R, c.n * sizeof *g);
    tower_tanh_backward(g, g, c.out, c.n);
    cr_assert(memcmp(g, din, c.n * sizeof *g) == 0, "tanh backward in place differs");
    free(c.in), free(c.out), free(R), free(din), free(plus), free(minus), free(buf), free(g);
}

/* ---- LRN ----------------------------------------------------------------------------- */

typedef struct {
    int B, C, HW, n;
    double k, alpha, beta;
    double *in, *out, *scale;
} lrn_ctx;

static void lrn_fwd(void *p)
{
    lrn_ctx *c = p;
    tower_lrn_forward(c->out, c->scale, c->in, c->B, c->C, c->HW, c->n, c->k, c->alpha,
                      c->beta);
}

static void lrn_case(int B, int C, int HW, int n, double k, double alpha, double beta,
                     double amp, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    lrn_ctx c = {B, C, HW, n, k, alpha, beta, NULL, NULL, NULL};
    size_t N = (size_t)B * C * HW;
    c.in = dalloc(N);
    c.out = dalloc(N);
    c.scale = dalloc(N);
    chk_fill(&r, c.in, N, -amp, amp);
    double *R = dalloc(N), *want = dalloc(N), *din = dalloc(N), *rdin = dalloc(N);
    double *plus = dalloc(N), *minus = dalloc(N);
    chk_fill(&r, R, N, -1.0, 1.0);
    ref_lrn_forward(want, c.in, B, C, HW, n, k, alpha, beta);
    lrn_fwd(&c);
    expect_close("lrn out", c.out, want, NULL, N, REF_TOL);
    ref_lrn_backward(rdin, R, c.in, B, C, HW, n, k, alpha, beta);
    tower_lrn_backward(din, R, c.in, c.out, c.scale, B, C, HW, n, k, alpha, beta);
    expect_close("lrn din", din, rdin, NULL, N, REF_TOL);
    /* smooth everywhere: h = 1e-5 keeps the h^2 truncation error near 1e-10 */
    for (size_t i = 0; i < N; i++)
        expect_fd("lrn din", i, din[i],
                  chk_fd(lrn_fwd, &c, &c.in[i], 1e-5, c.out, R, N, plus, minus));
    free(c.in), free(c.out), free(c.scale), free(R), free(want), free(din), free(rdin);
    free(plus), free(minus);
}

Test(layers_f64, lrn_paper_constants, .fini = log_fd_worst)
{
    /* Amplitude 10: alpha * sum a^2 ~ 0.03 against k = 2, so the normalisation term is
     * large enough that an error in it shows far above 1e-6. C = 7 > n exercises both
     * clipped edges of the window. */
    lrn_case(2, 7, 5, TOWER_LRN_N, TOWER_LRN_K, TOWER_LRN_ALPHA, TOWER_LRN_BETA, 10.0, 41);
}

Test(layers_f64, lrn_strong_alpha_n3, .fini = log_fd_worst)
{
    /* alpha = 0.1 makes the cross-channel term dominate; n = 3, fewer channels than n */
    lrn_case(1, 2, 3, 3, 1.0, 0.1, 0.75, 2.0, 42);
    lrn_case(2, 6, 4, 3, 2.0, 0.1, 0.5, 3.0, 43);
}

/* ---- max-pool ------------------------------------------------------------------------ */

typedef struct {
    int B, C, H, W, K, S;
    double *in, *out;
    int32_t *idx;
} pool_ctx;

static void pool_fwd(void *p)
{
    pool_ctx *c = p;
    tower_maxpool_forward(c->out, c->idx, c->in, c->B, c->C, c->H, c->W, c->K, c->S);
}

static void pool_case(int H, int W, int K, int S, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    pool_ctx c = {2, 3, H, W, K, S, NULL, NULL, NULL};
    int Ho = (c.H - c.K) / c.S + 1, Wo = (c.W - c.K) / c.S + 1;
    size_t nin = (size_t)c.B * c.C * c.H * c.W, nout = (size_t)c.B * c.C * Ho * Wo;
    c.in = dalloc(nin);
    c.out = dalloc(nout);
    c.idx = calloc(nout, sizeof *c.idx);
    cr_assert_not_null(c.idx);
    /* distinct values 0.01 apart (a shuffled ramp): with h = 1e-5 no window's maximum
     * changes during the finite difference */
    int *perm = malloc(nin * sizeof *perm);
    cr_assert_not_null(perm);
    chk_perm(&r, perm, (int)nin);
    for (size_t i = 0; i < nin; i++)
        c.in[i] = 0.01 * (perm[i] - (int)nin / 2);
    double *want = dalloc(nout), *R = dalloc(nout), *din = dalloc(nin), *rdin = dalloc(nin);
    double *plus = dalloc(nout), *minus = dalloc(nout);
    int32_t *ridx = calloc(nout, sizeof *ridx);
    cr_assert_not_null(ridx);
    chk_fill(&r, R, nout, -1.0, 1.0);
    ref_maxpool_forward(want, ridx, c.in, c.B, c.C, c.H, c.W, c.K, c.S);
    pool_fwd(&c);
    for (size_t i = 0; i < nout; i++) {
        cr_assert(c.out[i] == want[i], "pool out[%zu]: got %g want %g", i, c.out[i], want[i]);
        cr_assert(c.idx[i] == ridx[i], "pool idx[%zu]: got %d want %d", i, c.idx[i], ridx[i]);
    }
    ref_maxpool_backward(rdin, R, c.in, c.B, c.C, c.H, c.W, c.K, c.S);
    for (size_t i = 0; i < nin; i++)
        din[i] = NAN; /* backward overwrites din */
    tower_maxpool_backward(din, R, c.idx, c.B, c.C, c.H, c.W, c.K, c.S);
    expect_close("pool din", din, rdin, NULL, nin, REF_TOL);
    for (size_t i = 0; i < nin; i++)
        expect_fd("pool din", i, din[i],
                  chk_fd(pool_fwd, &c, &c.in[i], 1e-5, c.out, R, nout, plus, minus));
    free(c.in), free(c.out), free(c.idx), free(perm), free(want), free(R), free(din);
    free(rdin), free(plus), free(minus), free(ridx);
}

Test(layers_f64, maxpool_3_2, .fini = log_fd_worst)
{
    /* H = 9 and W = 8: an odd and an even side, where (W-K)/S is not whole */
    pool_case(9, 8, TOWER_POOL_K, TOWER_POOL_STRIDE, 51);
}

/* the paper's non-overlapping comparison (section 3.4): every input in one window at
 * most; an odd side leaves the last row and column out */
Test(layers_f64, maxpool_2_2, .fini = log_fd_worst)
{
    pool_case(9, 8, 2, 2, 52);
}

Test(layers_f64, maxpool_ties_pick_first)
{
    /* the header fixes the tie rule: the first maximum in row-major window order */
    enum { H = 5, W = 5 };
    double in[H * W], out[4];
    int32_t idx[4];
    for (int i = 0; i < H * W; i++)
        in[i] = 1.0;
    tower_maxpool_forward(out, idx, in, 1, 1, H, W, 3, 2);
    const int32_t first[4] = {0, 2, 10, 12};
    for (int i = 0; i < 4; i++) {
        cr_assert(out[i] == 1.0, "tie out[%d] = %g", i, out[i]);
        cr_assert(idx[i] == first[i], "tie idx[%d]: got %d want %d", i, idx[i], first[i]);
    }
    /* a tie inside one window between (1,2) and (2,1): row-major picks (1,2) = 7 */
    for (int i = 0; i < H * W; i++)
        in[i] = 0.0;
    in[1 * W + 2] = 3.0;
    in[2 * W + 1] = 3.0;
    tower_maxpool_forward(out, idx, in, 1, 1, H, W, 3, 2);
    cr_assert(idx[0] == 7, "tie in window 0: got %d want 7", idx[0]);
    /* window 1 (cols 2..4) holds (1,2) = 7 only; window 2 (rows 2..4) holds (2,1) = 11 */
    cr_assert(idx[1] == 7 && idx[2] == 11, "got idx %d %d want 7 11", idx[1], idx[2]);
    /* window 3 (rows 2..4, cols 2..4) is all zeros: its first element (2,2) = 12 */
    cr_assert(idx[3] == 12, "all-zero window: got %d want 12", idx[3]);
    /* the gather sums the windows that chose a position: 7 was chosen twice */
    double dout[4] = {1.0, 10.0, 100.0, 1000.0}, din[H * W];
    tower_maxpool_backward(din, dout, idx, 1, 1, H, W, 3, 2);
    for (int i = 0; i < H * W; i++) {
        double want = i == 7 ? 11.0 : i == 11 ? 100.0 : i == 12 ? 1000.0 : 0.0;
        cr_assert(din[i] == want, "tie din[%d]: got %g want %g", i, din[i], want);
    }
}

/* ---- dropout ------------------------------------------------------------------------- */

typedef struct {
    size_t n;
    uint64_t key;
    double *in, *out;
} drop_ctx;

static void drop_fwd(void *p)
{
    drop_ctx *c = p;
    tower_dropout_forward(c->out, c->in, c->n, TOWER_DROPOUT_P, c->key, 1);
}

Test(layers_f64, dropout_fixed_key, .fini = log_fd_worst)
{
    chk_rng r;
    chk_rng_seed(&r, 61);
    drop_ctx c = {300, 0x1234abcdull, NULL, NULL};
    c.in = dalloc(c.n);
    c.out = dalloc(c.n);
    chk_fill(&r, c.in, c.n, -2.0, 2.0);
    double *want = dalloc(c.n), *R = dalloc(c.n), *din = dalloc(c.n), *rdin = dalloc(c.n);
    double *plus = dalloc(c.n), *minus = dalloc(c.n);
    chk_fill(&r, R, c.n, -1.0, 1.0);
    ref_dropout_forward(want, c.in, c.n, TOWER_DROPOUT_P, c.key, 1);
    drop_fwd(&c);
    size_t kept = 0;
    for (size_t i = 0; i < c.n; i++) {
        cr_assert(c.out[i] == want[i], "dropout out[%zu]: got %g want %g", i, c.out[i],
                  want[i]);
        kept += c.out[i] != 0.0;
    }
    cr_assert(kept > 0 && kept < c.n, "dropout kept %zu of %zu", kept, c.n);
    ref_dropout_backward(rdin, R, c.n, TOWER_DROPOUT_P, c.key);
    tower_dropout_backward(din, R, c.n, TOWER_DROPOUT_P, c.key);
    for (size_t i = 0; i < c.n; i++) {
        cr_assert(din[i] == rdin[i], "dropout din[%zu]: got %g want %g", i, din[i], rdin[i]);
        expect_fd("dropout din", i, din[i],
                  chk_fd(drop_fwd, &c, &c.in[i], 1e-3, c.out, R, c.n, plus, minus));
    }
    /* evaluation: every unit times (1 - p), exactly */
    tower_dropout_forward(c.out, c.in, c.n, TOWER_DROPOUT_P, c.key, 0);
    for (size_t i = 0; i < c.n; i++)
        cr_assert(c.out[i] == c.in[i] * (1.0 - TOWER_DROPOUT_P), "dropout eval out[%zu] = %g",
                  i, c.out[i]);
    /* in place, and a different key gives a different mask */
    memcpy(c.out, c.in, c.n * sizeof *c.out);
    tower_dropout_forward(c.out, c.out, c.n, TOWER_DROPOUT_P, c.key, 1);
    cr_assert(memcmp(c.out, want, c.n * sizeof *want) == 0, "dropout in place differs");
    tower_dropout_forward(c.out, c.in, c.n, TOWER_DROPOUT_P, c.key + 1, 1);
    cr_assert(memcmp(c.out, want, c.n * sizeof *want) != 0, "key+1 gave the same mask");
    free(c.in), free(c.out), free(want), free(R), free(din), free(rdin), free(plus),
        free(minus);
}

Test(layers_f64, dropout_keeps_half)
{
    /* 2e5 units: the kept fraction has standard deviation sqrt(0.25/n) = 0.0011;
     * 0.006 is over 5 sigma */
    size_t n = 200000;
    double *x = dalloc(n);
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0;
    tower_dropout_forward(x, x, n, TOWER_DROPOUT_P, 77, 1);
    double kept = 0.0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(x[i] == 0.0 || x[i] == 1.0, "dropout rescaled a unit: %g", x[i]);
        kept += x[i];
    }
    cr_assert(fabs(kept / (double)n - 0.5) < 0.006, "kept fraction %.4f", kept / (double)n);
    free(x);
}

static void drop_inv_fwd(void *p)
{
    drop_ctx *c = p;
    tower_dropout_inverted_forward(c->out, c->in, c->n, 0.3, c->key, 1);
}

/* PyTorch's scaling: the paper's mask, kept units times 1 / (1 - p); the identity in
 * evaluation */
Test(layers_f64, dropout_inverted, .fini = log_fd_worst)
{
    chk_rng r;
    chk_rng_seed(&r, 62);
    drop_ctx c = {300, 0x77aa55ull, NULL, NULL};
    c.in = dalloc(c.n);
    c.out = dalloc(c.n);
    chk_fill(&r, c.in, c.n, -2.0, 2.0);
    double *mask = dalloc(c.n), *R = dalloc(c.n), *din = dalloc(c.n);
    double *plus = dalloc(c.n), *minus = dalloc(c.n);
    chk_fill(&r, R, c.n, -1.0, 1.0);
    for (size_t i = 0; i < c.n; i++) mask[i] = 1.0;
    ref_dropout_forward(mask, mask, c.n, 0.3, c.key, 1); /* the paper's 0/1 mask */
    drop_inv_fwd(&c);
    size_t kept = 0;
    for (size_t i = 0; i < c.n; i++) {
        double want = mask[i] * c.in[i] / 0.7;
        cr_assert(fabs(c.out[i] - want) <= 1e-15 * fabs(want), "out[%zu]: %.17g want %.17g", i,
                  c.out[i], want);
        kept += mask[i] != 0;
    }
    cr_assert(kept > c.n / 2 && kept < c.n, "kept %zu of %zu at p = 0.3", kept, c.n);
    tower_dropout_inverted_backward(din, R, c.n, 0.3, c.key);
    for (size_t i = 0; i < c.n; i++)
        expect_fd("inverted dropout din", i, din[i],
                  chk_fd(drop_inv_fwd, &c, &c.in[i], 1e-3, c.out, R, c.n, plus, minus));
    tower_dropout_inverted_forward(c.out, c.in, c.n, 0.3, c.key, 0);
    cr_assert(memcmp(c.out, c.in, c.n * sizeof *c.in) == 0, "evaluation is not the identity");
    free(c.in), free(c.out), free(mask), free(R), free(din), free(plus), free(minus);
}

/* ---- softmax cross-entropy ----------------------------------------------------------- */

typedef struct {
    int B, T, Vt;
    double *logits, *probs, *losses;
    const int32_t *labels;
} xent_ctx;

static void xent_fwd(void *p)
{
    xent_ctx *c = p;
    tower_softmax_xent_forward(c->losses, c->probs, c->logits, c->labels, c->B, c->T, c->Vt);
}

static void xent_case(int B, int T, int Vt, const int32_t *labels, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    xent_ctx c = {B, T, Vt, NULL, NULL, NULL, labels};
    size_t n = (size_t)T * B * Vt;
    c.logits = dalloc(n);
    c.probs = dalloc(n);
    c.losses = dalloc((size_t)B);
    chk_fill(&r, c.logits, n, -3.0, 3.0);
    double *rprobs = dalloc(n), *rloss = dalloc((size_t)B), *R = dalloc((size_t)B);
    double *plus = dalloc((size_t)B), *minus = dalloc((size_t)B);
    double *dl = dalloc((size_t)B * Vt), *rdl = dalloc((size_t)B * Vt);
    for (int b = 0; b < B; b++)
        R[b] = 1.0 / B; /* L = mean of the losses, the quantity backward differentiates */
    ref_softmax_xent_forward(rloss, rprobs, c.logits, labels, B, T, Vt);
    xent_fwd(&c);
    expect_close("xent losses", c.losses, rloss, NULL, (size_t)B, REF_TOL);
    expect_close("xent probs", c.probs, rprobs, NULL, n, REF_TOL);
    for (int slot = 0; slot < T; slot++) {
        ref_softmax_xent_backward(rdl, c.logits, labels, B, T, Vt, slot);
        tower_softmax_xent_backward(dl, c.probs, labels, B, T, Vt, slot);
        expect_close("xent dlogits", dl, rdl, NULL, (size_t)B * Vt, REF_TOL);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < Vt; j++) {
                size_t gi = (size_t)slot * B * Vt + (size_t)b * Vt + j;
                double fd = chk_fd(xent_fwd, &c, &c.logits[gi], 1e-5, c.losses, R, (size_t)B,
                                   plus, minus);
                xent_fwd(&c); /* chk_fd leaves probs stale; backward reads them */
                expect_fd("xent dlogits", (size_t)b * Vt + j, dl[(size_t)b * Vt + j], fd);
            }
    }
    free(c.logits), free(c.probs), free(c.losses), free(rprobs), free(rloss), free(R);
    free(plus), free(minus), free(dl), free(rdl);
}

Test(layers_f64, softmax_xent_two_slots, .fini = log_fd_worst)
{
    /* labels in both towers' halves of the class range (classes 0-3 slot 0, 4-7 slot 1) */
    const int32_t labels[3] = {1, 6, 3};
    xent_case(3, 2, 4, labels, 71);
}

Test(layers_f64, softmax_xent_one_tower, .fini = log_fd_worst)
{
    const int32_t labels[2] = {4, 0};
    xent_case(2, 1, 5, labels, 72);
}

Test(layers_f64, softmax_xent_large_logits)
{
    /* logits of 1000 must not overflow exp: the loss is shift-invariant */
    double logits[2 * 1 * 3] = {1000.0, 999.0, 998.0, 1001.0, 1000.5, 990.0};
    double probs[6], losses[1], rl[1], rp[6];
    const int32_t labels[1] = {3};
    tower_softmax_xent_forward(losses, probs, logits, labels, 1, 2, 3);
    ref_softmax_xent_forward(rl, rp, logits, labels, 1, 2, 3);
    cr_assert(isfinite(losses[0]) && fabs(losses[0] - rl[0]) <= 1e-12,
              "loss %.17g want %.17g", losses[0], rl[0]);
    for (int i = 0; i < 6; i++)
        cr_assert(fabs(probs[i] - rp[i]) <= 1e-12, "probs[%d] %.17g want %.17g", i, probs[i],
                  rp[i]);
}

/* ---- SGD ----------------------------------------------------------------------------- */

Test(layers_f64, sgd_update_formula)
{
    chk_rng r;
    chk_rng_seed(&r, 81);
    size_t n = 1000;
    double *w = dalloc(n), *v = dalloc(n), *g = dalloc(n), *rw = dalloc(n), *rv = dalloc(n);
    chk_fill(&r, w, n, -1.0, 1.0);
    chk_fill(&r, v, n, -0.1, 0.1);
    chk_fill(&r, g, n, -1.0, 1.0);
    memcpy(rw, w, n * sizeof *w);
    memcpy(rv, v, n * sizeof *v);
    /* three steps with the paper's momentum and decay and a large rate, so that a wrong
     * sign or a missing term is visible */
    for (int step = 0; step < 3; step++) {
        tower_sgd_update(w, v, g, n, 0.1, 0.9, 0.0005);
        ref_sgd_update(rw, rv, g, n, 0.1, 0.9, 0.0005);
    }
    /* only the order of the three products may differ: a few ulps */
    for (size_t i = 0; i < n; i++) {
        cr_assert(fabs(v[i] - rv[i]) <= 1e-14, "sgd v[%zu]: got %.17g want %.17g", i, v[i],
                  rv[i]);
        cr_assert(fabs(w[i] - rw[i]) <= 1e-14, "sgd w[%zu]: got %.17g want %.17g", i, w[i],
                  rw[i]);
    }
    /* wd = 0 and momentum = 0: plain gradient descent, w - lr g exactly */
    double w1 = 0.5, v1 = 0.25, g1 = 2.0;
    tower_sgd_update(&w1, &v1, &g1, 1, 0.125, 0.0, 0.0);
    cr_assert(v1 == -0.25 && w1 == 0.25, "plain SGD: v %g w %g", v1, w1);
    free(w), free(v), free(g), free(rw), free(rv);
}

/* ---- Adam ---------------------------------------------------------------------------- */

/* Two steps against Kingma and Ba's algorithm written out here in its textbook form
 * (bias-corrected moments m_hat, v_hat; w -= lr m_hat / (sqrt(v_hat) + eps)), which is
 * what tower_adam_update's folded scalars must equal; weight decay as torch.optim.Adam's
 * L2 term (g += wd w). */
Test(layers_f64, adam_update_formula)
{
    chk_rng r;
    chk_rng_seed(&r, 82);
    size_t n = 1000;
    double *w = dalloc(n), *m = dalloc(n), *v = dalloc(n), *g = dalloc(n);
    double *rw = dalloc(n), *rm = dalloc(n), *rv = dalloc(n);
    chk_fill(&r, w, n, -1.0, 1.0);
    memcpy(rw, w, n * sizeof *w);
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    for (int t = 1; t <= 3; t++) {
        chk_fill(&r, g, n, -1.0, 1.0); /* a new gradient each step: the moments mix them */
        for (size_t i = 0; i < n; i += 7) g[i] *= 1e-9; /* some near eps */
        double step_size, bc2_sqrt;
        tower_adam_scalars(lr, b1, b2, t, &step_size, &bc2_sqrt);
        tower_adam_update(w, m, v, g, n, step_size, b1, b2, eps, bc2_sqrt, wd);
        for (size_t i = 0; i < n; i++) {
            double gi = g[i] + wd * rw[i];
            rm[i] = b1 * rm[i] + (1 - b1) * gi;
            rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
            double mhat = rm[i] / (1 - pow(b1, t)), vhat = rv[i] / (1 - pow(b2, t));
            rw[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
        for (size_t i = 0; i < n; i++) {
            cr_assert(fabs(m[i] - rm[i]) <= 1e-15 + 1e-13 * fabs(rm[i]), "step %d m[%zu]: %.17g "
                      "want %.17g", t, i, m[i], rm[i]);
            cr_assert(fabs(v[i] - rv[i]) <= 1e-13 * fabs(rv[i]) + 1e-300, "step %d v[%zu]: "
                      "%.17g want %.17g", t, i, v[i], rv[i]);
            /* the change, to 1e-9 of the step's lr: the folded corrections reorder a few
             * roundings, a wrong one moves it by a factor */
            cr_assert(fabs(w[i] - rw[i]) <= 1e-9 * lr, "step %d w[%zu]: %.17g want %.17g", t,
                      i, w[i], rw[i]);
        }
    }
    /* the first step with wd = 0 is lr g / (|g| + eps): about lr sign(g) */
    double w1 = 0.5, m1 = 0, v1 = 0, g1 = -0.25, ss, bc;
    tower_adam_scalars(0.125, 0.9, 0.999, 1, &ss, &bc);
    tower_adam_update(&w1, &m1, &v1, &g1, 1, ss, 0.9, 0.999, 1e-8, bc, 0);
    cr_assert(fabs(w1 - (0.5 + 0.125 * 0.25 / (0.25 + 1e-8))) <= 1e-15, "first step %.17g", w1);
    free(w), free(m), free(v), free(g), free(rw), free(rm), free(rv);
}
