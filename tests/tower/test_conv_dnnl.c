/* The CPU's oneDNN passes (conv_dnnl.c: the forward, the input gradient at stride 1, the
 * weights' and bias' gradients; each test asks for every pass, whichever of them this
 * machine's rule hands oneDNN) against the double reference loops, at shapes that split a
 * batch into full chunks and a shorter last one, with a weight block narrower than its row
 * (a layer that reads both towers), padding 0, 1 and 2, stride 1 and 4, overwrite and
 * accumulate; and that a call repeats bit for bit. The tolerance is test_conv_chunks.c's: 1e-5 of the sum of
 * |terms|. Skips when the build has no oneDNN (meson's `dnnl` option). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
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
    int B, Ci, H, Co, K, P, extra_ld, S; /* S: the stride (0 reads as 1) */
} shape;

#define ALL_PASSES (TOWER_DNNL_FWD | TOWER_DNNL_BWD_DATA | TOWER_DNNL_BWD_W)

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

/* The weights' and bias' gradients: dw (ld ldw, its columns past Ci*K*K untouched) and db
 * added to what is there, with and without db, and bit for bit again. */
static void check_weights(const shape *s, tower_dnnl_conv *c, chk_rng *r, const float *in,
                          const double *ind, const float *dout, const double *doutd, int ldw)
{
    int K = s->K, S = s->S ? s->S : 1, Ho = tower_conv_out(s->H, K, S, s->P);
    int ck = s->Ci * K * K;
    size_t nw = (size_t)s->Co * ldw, HWo = (size_t)Ho * Ho;
    double *rdw = dalloc(nw), *mdw = dalloc(nw), *rdb = dalloc((size_t)s->Co);
    double *mdb = dalloc((size_t)s->Co);
    ref_conv_backward(NULL, NULL, rdw, mdw, rdb, doutd, ind, NULL, s->B, s->Ci, s->H, s->H,
                      s->Co, K, S, s->P, ldw);
    for (int n = 0; n < s->B; n++)
        for (int o = 0; o < s->Co; o++)
            for (size_t i = 0; i < HWo; i++) mdb[o] += fabs(doutd[((size_t)n * s->Co + o) * HWo + i]);
    float *dw = falloc(nw), *prior = falloc(nw), *again = falloc(nw);
    float *db = falloc((size_t)s->Co), *dbp = falloc((size_t)s->Co), *dba = falloc((size_t)s->Co);
    fill(r, prior, NULL, nw);
    fill(r, dbp, NULL, (size_t)s->Co);
    for (int o = 0; o < s->Co; o++)
        for (int k = ck; k < ldw; k++) prior[(size_t)o * ldw + k] = 7.0f; /* never written */
    memcpy(dw, prior, nw * sizeof *dw);
    memcpy(db, dbp, (size_t)s->Co * sizeof *db);
    cr_assert_eq(tower_dnnl_conv_backward_weights(c, dw, db, dout, in, s->B), 0);
    for (int o = 0; o < s->Co; o++)
        for (int k = 0; k < ldw; k++) {
            size_t i = (size_t)o * ldw + k;
            if (k < ck) {
                double want = prior[i] + rdw[i], m = mdw[i] + fabs(prior[i]);
                cr_assert(fabs((double)dw[i] - want) <= TOL * m, "%s dw[%zu]: got %.9g want %.9g",
                          s->name, i, (double)dw[i], want);
            } else {
                cr_assert(dw[i] == 7.0f, "%s: dw[%zu] past the block was written", s->name, i);
            }
        }
    for (int o = 0; o < s->Co; o++) {
        double want = dbp[o] + rdb[o], m = mdb[o] + fabs(dbp[o]);
        cr_assert(fabs((double)db[o] - want) <= TOL * m, "%s db[%d]: got %.9g want %.9g", s->name,
                  o, (double)db[o], want);
    }
    memcpy(again, prior, nw * sizeof *again);
    memcpy(dba, dbp, (size_t)s->Co * sizeof *dba);
    cr_assert_eq(tower_dnnl_conv_backward_weights(c, again, dba, dout, in, s->B), 0);
    cr_assert(memcmp(dw, again, nw * sizeof *dw) == 0, "%s: dw differs between calls", s->name);
    cr_assert(memcmp(db, dba, (size_t)s->Co * sizeof *db) == 0, "%s: db differs between calls",
              s->name);
    memcpy(again, prior, nw * sizeof *again);
    cr_assert_eq(tower_dnnl_conv_backward_weights(c, again, NULL, dout, in, s->B), 0);
    cr_assert(memcmp(dw, again, nw * sizeof *dw) == 0, "%s: dw without db differs", s->name);
    free(rdw), free(mdw), free(rdb), free(mdb), free(dw), free(prior), free(again), free(db),
        free(dbp), free(dba);
}

static void check(const shape *s, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    int K = s->K, S = s->S ? s->S : 1, Ho = tower_conv_out(s->H, K, S, s->P);
    int ck = s->Ci * K * K;
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
    tower_dnnl_conv *c = tower_dnnl_conv_new(s->Ci, s->H, s->H, s->Co, K, S, s->P, ldw,
                                             ALL_PASSES);
    cr_assert_not_null(c, "%s: oneDNN refused the shape", s->name);

    {
        double *want = dalloc(nout), *mag = dalloc(nout), *want_nb = dalloc(nout);
        double *mag_nb = dalloc(nout);
        ref_conv_forward(want, mag, ind, wd, bd, s->B, s->Ci, s->H, s->H, s->Co, K, S, s->P, ldw);
        ref_conv_forward(want_nb, mag_nb, ind, wd, NULL, s->B, s->Ci, s->H, s->H, s->Co, K, S,
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
    }

    check_weights(s, c, &r, in, ind, dout, doutd, ldw);

    if (S != 1) {
        float *din = falloc(nin);
        cr_assert_eq(tower_dnnl_conv_backward_data(c, din, dout, w, s->B, 0), -1,
                     "%s: an input gradient at stride %d must be refused", s->name, S);
        tower_dnnl_conv_free(c);
        free(din), free(in), free(w), free(b), free(dout), free(ind), free(wd), free(bd),
            free(doutd);
        return;
    }
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
    tower_dnnl_conv *c = tower_dnnl_conv_new(Ci, H, H, Co, K, 1, P, ck, TOWER_DNNL_FWD);
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

/* conv1's kind: 11x11 stride 4 (the forward and the weights' gradient; no input gradient
 * at stride 4), 13 images: a chunk of 8 and one of 5 */
Test(conv_dnnl, eleven_by_eleven_stride_four)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    shape s = {"11x11s4p2 27x27 3->5", 13, 3, 27, 5, 11, 2, 0, 4};
    check(&s, 306);
#endif
}

/* what the rule hands oneDNN: with AVX-512 every pass (the input gradient at stride 1
 * only); with AVX2 only stride 1, the forward only at 5x5; this machine's is one of them */
Test(conv_dnnl, which_passes)
{
    need_dnnl();
#if defined(TT_HAVE_DNNL)
    int all = TOWER_DNNL_FWD | TOWER_DNNL_BWD_W;
    cr_assert_eq(tower_conv_dnnl_passes_for(5, 1, 0), TOWER_DNNL_FWD | TOWER_DNNL_BWD_DATA);
    cr_assert_eq(tower_conv_dnnl_passes_for(3, 1, 0), TOWER_DNNL_BWD_DATA);
    cr_assert_eq(tower_conv_dnnl_passes_for(11, 4, 0), 0);
    cr_assert_eq(tower_conv_dnnl_passes_for(3, 2, 0), 0);
    cr_assert_eq(tower_conv_dnnl_passes_for(5, 1, 1), all | TOWER_DNNL_BWD_DATA);
    cr_assert_eq(tower_conv_dnnl_passes_for(3, 1, 1), all | TOWER_DNNL_BWD_DATA);
    cr_assert_eq(tower_conv_dnnl_passes_for(11, 4, 1), all);
    cr_assert_eq(tower_conv_dnnl_passes_for(1, 1, 1), 0);
    int avx512 = tower_dnnl_avx512();
    cr_assert(avx512 == 0 || avx512 == 1);
    for (int K = 1; K <= 11; K++)
        for (int S = 1; S <= 4; S++)
            cr_assert_eq(tower_conv_dnnl_passes(K, S), tower_conv_dnnl_passes_for(K, S, avx512));
    /* stride 4 has no input gradient: asking for only that leaves nothing */
    cr_assert_null(tower_dnnl_conv_new(3, 224, 224, 48, 11, 4, 2, 363, TOWER_DNNL_BWD_DATA));
#endif
}

/* the line bench and run.json print: each pass a conv layer needs under exactly one path */
Test(conv_dnnl, describe)
{
    tower_config cfg = {2, 1000, 4, 224, 3, 1};
    tower_plan p;
    char err[256] = "", buf[1024];
    cr_assert_eq(tower_plan_make(&p, &cfg, err, sizeof err), 0, "%s", err);
    tower_conv_describe(buf, sizeof buf, &p);
    if (!tower_conv_dnnl_built()) {
        cr_assert(strstr(buf, "oneDNN") == NULL, "%s", buf);
    } else if (tower_conv_dnnl_passes(11, 4) == (TOWER_DNNL_FWD | TOWER_DNNL_BWD_W)) {
        cr_assert_str_eq(buf, "CPU; oneDNN: conv1 every pass, conv2 every pass, conv3 every pass, "
                              "conv4 every pass, conv5 every pass");
    } else {
        cr_assert(strstr(buf, "; oneDNN: conv2 forward + input gradient, conv3 input gradient, "
                              "conv4 input gradient, conv5 input gradient; im2col") != NULL,
                  "%s", buf);
        cr_assert(strstr(buf, ": conv1 every pass (") != NULL, "%s", buf);
        cr_assert(strstr(buf, ", conv2 weights' gradient (") != NULL, "%s", buf);
    }
    tower_conv_dnnl(0);
    tower_conv_describe(buf, sizeof buf, &p);
    cr_assert(strstr(buf, "oneDNN") == NULL, "%s", buf);
    for (int l = 1; l <= 5; l++) {
        char want[32];
        snprintf(want, sizeof want, "conv%d every pass (", l);
        cr_assert(strstr(buf, want) != NULL, "%s: no %s", buf, want);
    }
}
