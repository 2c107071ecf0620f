/* The CPU's oneDNN passes (conv_dnnl.c: the 5x5 stride-1 forward, the input gradient of
 * every stride-1 layer) against the double reference loops, at shapes that split a batch
 * into full chunks and a shorter last one, with a weight block narrower than its row (a
 * layer that reads both towers), padding 0, 1 and 2, overwrite and accumulate; and that a
 * call repeats bit for bit. The tolerance is test_conv_chunks.c's: 1e-5 of the sum of
 * |terms|. Skips when the build has no oneDNN (meson's `dnnl` option). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ref_layers.h"
#include "tower/tower.h"
#if defined(TT_HAVE_DNNL)
#include "tower/conv_dnnl.h"
#endif

#define TOL 1e-5

#if defined(TT_HAVE_DNNL)
typedef struct {
    const char *name;
    int B, Ci, H, Co, K, P, extra_ld;
} shape;

static float *falloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static void fill(chk_rng *r, float *x, double *xd, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)chk_uniform(r, -1.0, 1.0);
        if (xd) xd[i] = x[i];
    }
}

/* |got - (prior + want)| <= TOL * (mag + |prior|); prior may be NULL */
static void expect(const shape *s, const char *what, const float *got, const float *prior,
                   const double *want, const double *mag, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double p = prior ? prior[i] : 0.0, w = p + want[i], m = fmax(mag[i] + fabs(p), 1e-30);
        cr_assert(fabs((double)got[i] - w) <= TOL * m, "%s %s[%zu]: got %.9g want %.9g", s->name,
                  what, i, (double)got[i], w);
    }
}

static void check(const shape *s, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    int K = s->K, Ho = tower_conv_out(s->H, K, 1, s->P), ck = s->Ci * K * K;
    int ldw = ck + s->extra_ld;
    size_t nin = (size_t)s->B * s->Ci * s->H * s->H, nw = (size_t)s->Co * ldw;
    size_t nout = (size_t)s->B * s->Co * Ho * Ho;
    float *in = falloc(nin), *w = falloc(nw), *b = falloc((size_t)s->Co), *dout = falloc(nout);
    double *ind = dalloc(nin), *wd = dalloc(nw), *bd = dalloc((size_t)s->Co);
    double *doutd = dalloc(nout);
    fill(&r, in, ind, nin);
    fill(&r, w, wd, nw);
    for (int o = 0; o < s->Co; o++)
        for (int k = ck; k < ldw; k++) w[(size_t)o * ldw + k] = NAN; /* never read */
    fill(&r, b, bd, (size_t)s->Co);
    fill(&r, dout, doutd, nout);
    tower_dnnl_conv *c = tower_dnnl_conv_new(s->Ci, s->H, s->H, s->Co, K, 1, s->P, ldw);
    cr_assert_not_null(c, "%s: oneDNN refused the shape", s->name);
    int passes = tower_conv_dnnl_passes(K, 1);

    if (passes & TOWER_DNNL_FWD) {
        double *want = dalloc(nout), *mag = dalloc(nout), *want_nb = dalloc(nout);
        double *mag_nb = dalloc(nout);
        ref_conv_forward(want, mag, ind, wd, bd, s->B, s->Ci, s->H, s->H, s->Co, K, 1, s->P, ldw);
        ref_conv_forward(want_nb, mag_nb, ind, wd, NULL, s->B, s->Ci, s->H, s->H, s->Co, K, 1,
                         s->P, ldw);
        float *out = falloc(nout), *again = falloc(nout), *prior = falloc(nout);
        fill(&r, prior, NULL, nout);
        cr_assert_eq(tower_dnnl_conv_forward(c, out, in, w, b, s->B, 0), 0);
        expect(s, "out", out, NULL, want, mag, nout);
        cr_assert_eq(tower_dnnl_conv_forward(c, again, in, w, b, s->B, 0), 0);
        cr_assert(memcmp(out, again, nout * sizeof *out) == 0, "%s: out differs between calls",
                  s->name);
        memcpy(out, prior, nout * sizeof *out);
        cr_assert_eq(tower_dnnl_conv_forward(c, out, in, w, b, s->B, 1), 0);
        expect(s, "out (accumulate, bias)", out, prior, want, mag, nout);
        memcpy(out, prior, nout * sizeof *out);
        cr_assert_eq(tower_dnnl_conv_forward(c, out, in, w, NULL, s->B, 1), 0);
        expect(s, "out (accumulate, no bias)", out, prior, want_nb, mag_nb, nout);
        free(want), free(mag), free(want_nb), free(mag_nb), free(out), free(again), free(prior);
    } else {
        float *out = falloc(nout);
        cr_assert_eq(tower_dnnl_conv_forward(c, out, in, w, b, s->B, 0), -1,
                     "%s: a forward that is not oneDNN's must say so", s->name);
        free(out);
    }

    cr_assert(passes & TOWER_DNNL_BWD_DATA, "%s: every stride-1 shape has a oneDNN din",
              s->name);
    double *rdin = dalloc(nin), *mdin = dalloc(nin);
    ref_conv_backward(rdin, mdin, NULL, NULL, NULL, doutd, ind, wd, s->B, s->Ci, s->H, s->H,
                      s->Co, K, 1, s->P, ldw);
    float *din = falloc(nin), *again = falloc(nin), *prior = falloc(nin);
    fill(&r, prior, NULL, nin);
    cr_assert_eq(tower_dnnl_conv_backward_data(c, din, dout, w, s->B, 0), 0);
    expect(s, "din", din, NULL, rdin, mdin, nin);
    cr_assert_eq(tower_dnnl_conv_backward_data(c, again, dout, w, s->B, 0), 0);
    cr_assert(memcmp(din, again, nin * sizeof *din) == 0, "%s: din differs between calls",
              s->name);
    memcpy(din, prior, nin * sizeof *din);
    cr_assert_eq(tower_dnnl_conv_backward_data(c, din, dout, w, s->B, 1), 0);
    expect(s, "din (accumulate)", din, prior, rdin, mdin, nin);

    tower_dnnl_conv_free(c);
    free(rdin), free(mdin), free(din), free(again), free(prior);
    free(in), free(w), free(b), free(dout), free(ind), free(wd), free(bd), free(doutd);
}
#endif

static void need_dnnl(void)
{
    if (!tower_conv_dnnl_built()) cr_skip_test("this build has no oneDNN (meson -Ddnnl)");
}

/* conv2's kind: 5x5, padding 2; 19 images: two chunks of 8 and one of 3 */
Test(conv_dnnl, five_by_five_forward_and_input_gradient)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    shape s = {"5x5p2 9x9 6->10", 19, 6, 9, 10, 5, 2, 0};
    check(&s, 301);
#endif
}

/* conv3's kind: 3x3, padding 1, a weight block of one of two towers' inputs (ldw twice) */
Test(conv_dnnl, three_by_three_input_gradient_of_one_input_block)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    shape s = {"3x3p1 7x7 5->6, block", 10, 5, 7, 6, 3, 1, 5 * 9};
    check(&s, 302);
#endif
}

/* no padding, a batch smaller than one chunk, and one image */
Test(conv_dnnl, no_padding_and_small_batches)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    shape s = {"3x3p0 6x6 4->3", 5, 4, 6, 3, 3, 0, 0};
    check(&s, 303);
    shape t = {"5x5p2 5x5 3->4, one image", 1, 3, 5, 4, 5, 2, 2};
    check(&t, 304);
#endif
}

/* one layer's primitives through three batch sizes (19 = 8 + 8 + 3, then 5, then 19
 * again): the sizes share two slots, and each call's result is the first call's */
Test(conv_dnnl, batch_sizes_share_the_slots)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    chk_rng r;
    chk_rng_seed(&r, 305);
    int Ci = 3, H = 6, Co = 4, K = 5, P = 2, B = 19, ck = Ci * K * K;
    size_t nin = (size_t)B * Ci * H * H, nout = (size_t)B * Co * H * H;
    float *in = falloc(nin), *w = falloc((size_t)Co * ck), *b = falloc((size_t)Co);
    float *o1 = falloc(nout), *o2 = falloc(nout), *o5 = falloc(nout);
    fill(&r, in, NULL, nin);
    fill(&r, w, NULL, (size_t)Co * ck);
    fill(&r, b, NULL, (size_t)Co);
    tower_dnnl_conv *c = tower_dnnl_conv_new(Ci, H, H, Co, K, 1, P, ck);
    cr_assert_not_null(c);
    cr_assert_eq(tower_dnnl_conv_forward(c, o1, in, w, b, B, 0), 0);
    cr_assert_eq(tower_dnnl_conv_forward(c, o5, in, w, b, 5, 0), 0);
    cr_assert_eq(tower_dnnl_conv_forward(c, o2, in, w, b, B, 0), 0);
    cr_assert(memcmp(o1, o2, nout * sizeof *o1) == 0, "19 images, after 5: differs");
    /* the first 5 images do not depend on the chunk they ran in beyond rounding */
    for (size_t i = 0; i < (size_t)5 * Co * H * H; i++)
        cr_assert(fabsf(o5[i] - o1[i]) <= 1e-5f * (1 + fabsf(o1[i])), "5 images [%zu]", i);
    tower_dnnl_conv_free(c);
    free(in), free(w), free(b), free(o1), free(o2), free(o5);
#endif
}

/* what the rule hands oneDNN: only stride 1, the forward only at 5x5 */
Test(conv_dnnl, which_passes)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    cr_assert_eq(tower_conv_dnnl_passes(5, 1), TOWER_DNNL_FWD | TOWER_DNNL_BWD_DATA);
    cr_assert_eq(tower_conv_dnnl_passes(3, 1), TOWER_DNNL_BWD_DATA);
    cr_assert_eq(tower_conv_dnnl_passes(11, 4), 0);
    cr_assert_eq(tower_conv_dnnl_passes(3, 2), 0);
    cr_assert_null(tower_dnnl_conv_new(3, 224, 224, 48, 11, 4, 2, 363));
#endif
}
