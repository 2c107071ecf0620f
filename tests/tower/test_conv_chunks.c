/* The CPU convolution's chunks (layers_cpu.c: the im2col of several images in one column
 * matrix, one SGEMM per chunk, most im2col rows copied from rows already written), held
 * against the double reference loops at shapes picked to reach every branch: a batch that
 * splits into full chunks and a remainder of one, chunks capped by the scratch (many
 * outputs), padding wider than the kernel, a stride wider than the kernel, a one-row
 * output, non-square inputs. Also: what the scratch held before never reaches a result,
 * and a call repeats bit for bit. (Across BLAS thread counts bits may differ: OpenBLAS
 * 0.3.21's SGEMM itself rounds some outputs differently with 1 and 2 threads, at any K,
 * so runs are bit-identical for a fixed OPENBLAS_NUM_THREADS.)
 * Tolerance as in test_layers_blas.c (1e-5 of the sum of |terms|; float rounding only). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ref_layers.h"
#include "tower/tower.h"

_Static_assert(sizeof(real) == sizeof(float), "this test is for the float build");

#define TOL 1e-5

static float *falloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p, "calloc(%zu floats)", n);
    return p;
}

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p, "calloc(%zu doubles)", n);
    return p;
}

static void fill(chk_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)chk_uniform(r, -1.0, 1.0);
}

static void fill_nan(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
}

/* |got - (prior + want)| <= TOL * (mag + |prior|) for every element; prior may be NULL */
static void expect(const char *shape, const char *what, const float *got, const float *prior,
                   const double *want, const double *mag, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double p = prior ? prior[i] : 0.0, w = p + want[i];
        double m = fmax(mag[i] + fabs(p), 1e-30);
        cr_assert(fabs((double)got[i] - w) <= TOL * m, /* also fails on NaN */
                  "%s %s[%zu]: got %.9g want %.9g (|diff| / sum|terms| %.3g)", shape, what, i,
                  (double)got[i], w, fabs((double)got[i] - w) / m);
    }
}

typedef struct {
    const char *name;
    int B, Ci, H, W, Co, K, S, P, extra_ld;
} shape;

/* One shape through forward (overwrite and accumulate), backward (din overwritten and
 * accumulated, dw and db accumulated), with the scratch full of NaN before every call
 * and w's columns outside the block NaN, against ref_layers.c. */
static void check_shape(const shape *s, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    int Ho = tower_conv_out(s->H, s->K, s->S, s->P), Wo = tower_conv_out(s->W, s->K, s->S, s->P);
    cr_assert(Ho > 0 && Wo > 0, "%s: empty output", s->name);
    int ck = s->Ci * s->K * s->K, ldw = ck + s->extra_ld;
    size_t nin = (size_t)s->B * s->Ci * s->H * s->W, nw = (size_t)s->Co * ldw;
    size_t nout = (size_t)s->B * s->Co * Ho * Wo;
    size_t ncol = tower_conv_col_size(s->Ci, s->H, s->W, s->K, s->S, s->P);
    float *in = falloc(nin), *w = falloc(nw), *b = falloc((size_t)s->Co), *col = falloc(ncol);
    float *out = falloc(nout), *prior = falloc(nout), *dout = falloc(nout);
    float *din = falloc(nin), *dprior = falloc(nin), *dw = falloc(nw), *dw0 = falloc(nw);
    float *db = falloc((size_t)s->Co), *db0 = falloc((size_t)s->Co);
    fill(&r, in, nin);
    fill(&r, w, nw);
    for (int o = 0; o < s->Co; o++)
        for (int k = ck; k < ldw; k++)
            w[(size_t)o * ldw + k] = NAN; /* another input block's columns: never read */
    fill(&r, b, (size_t)s->Co);
    fill(&r, prior, nout);
    fill(&r, dout, nout);
    fill(&r, dprior, nin);
    fill(&r, dw0, nw);
    fill(&r, db0, (size_t)s->Co);

    double *din_ = dalloc(nin), *w_ = dalloc(nw), *b_ = dalloc((size_t)s->Co);
    double *dout_ = dalloc(nout);
    for (size_t i = 0; i < nin; i++)
        din_[i] = in[i];
    for (size_t i = 0; i < nw; i++)
        w_[i] = w[i];
    for (int o = 0; o < s->Co; o++)
        b_[o] = b[o];
    for (size_t i = 0; i < nout; i++)
        dout_[i] = dout[i];
    double *want = dalloc(nout), *mag = dalloc(nout), *want_nb = dalloc(nout);
    double *mag_nb = dalloc(nout);
    ref_conv_forward(want, mag, din_, w_, b_, s->B, s->Ci, s->H, s->W, s->Co, s->K, s->S, s->P,
                     ldw);
    ref_conv_forward(want_nb, mag_nb, din_, w_, NULL, s->B, s->Ci, s->H, s->W, s->Co, s->K,
                     s->S, s->P, ldw);

    fill_nan(col, ncol);
    fill_nan(out, nout);
    tower_conv_forward(out, in, w, b, s->B, s->Ci, s->H, s->W, s->Co, s->K, s->S, s->P, ldw, 0,
                       col);
    expect(s->name, "out", out, NULL, want, mag, nout);
    memcpy(out, prior, nout * sizeof *out);
    fill_nan(col, ncol);
    tower_conv_forward(out, in, w, b, s->B, s->Ci, s->H, s->W, s->Co, s->K, s->S, s->P, ldw, 1,
                       col);
    expect(s->name, "out (accumulate, bias)", out, prior, want, mag, nout);
    memcpy(out, prior, nout * sizeof *out);
    fill_nan(col, ncol);
    tower_conv_forward(out, in, w, NULL, s->B, s->Ci, s->H, s->W, s->Co, s->K, s->S, s->P, ldw,
                       1, col);
    expect(s->name, "out (accumulate, no bias)", out, prior, want_nb, mag_nb, nout);

    double *rdin = dalloc(nin), *mdin = dalloc(nin), *rdw = dalloc(nw), *mdw = dalloc(nw);
    double *rdb = dalloc((size_t)s->Co), *mdb = dalloc((size_t)s->Co);
    ref_conv_backward(rdin, mdin, rdw, mdw, rdb, dout_, din_, w_, s->B, s->Ci, s->H, s->W,
                      s->Co, s->K, s->S, s->P, ldw);
    for (size_t i = 0; i < nout; i++)
        mdb[(i / ((size_t)Ho * Wo)) % (size_t)s->Co] += fabs(dout_[i]);
    fill_nan(col, ncol);
    fill_nan(din, nin);
    memcpy(dw, dw0, nw * sizeof *dw);
    memcpy(db, db0, (size_t)s->Co * sizeof *db);
    tower_conv_backward(din, dw, db, dout, in, w, s->B, s->Ci, s->H, s->W, s->Co, s->K, s->S,
                        s->P, ldw, 0, col);
    expect(s->name, "din", din, NULL, rdin, mdin, nin);
    expect(s->name, "db", db, db0, rdb, mdb, (size_t)s->Co);
    for (int o = 0; o < s->Co; o++) {
        size_t row = (size_t)o * ldw;
        expect(s->name, "dw", dw + row, dw0 + row, rdw + row, mdw + row, (size_t)ck);
        cr_assert(memcmp(dw + row + ck, dw0 + row + ck, sizeof(float) * s->extra_ld) == 0,
                  "%s dw[%d, %d..]: outside the block was touched", s->name, o, ck);
    }
    memcpy(din, dprior, nin * sizeof *din);
    memcpy(dw, dw0, nw * sizeof *dw);
    fill_nan(col, ncol);
    tower_conv_backward(din, dw, NULL, dout, in, w, s->B, s->Ci, s->H, s->W, s->Co, s->K, s->S,
                        s->P, ldw, 1, col);
    expect(s->name, "din (accumulate)", din, dprior, rdin, mdin, nin);
    for (int o = 0; o < s->Co; o++) {
        size_t row = (size_t)o * ldw;
        expect(s->name, "dw (db NULL)", dw + row, dw0 + row, rdw + row, mdw + row, (size_t)ck);
    }
    memcpy(dw, dw0, nw * sizeof *dw);
    fill_nan(col, ncol);
    tower_conv_backward(NULL, dw, NULL, dout, in, w, s->B, s->Ci, s->H, s->W, s->Co, s->K,
                        s->S, s->P, ldw, 0, col);
    for (int o = 0; o < s->Co; o++) {
        size_t row = (size_t)o * ldw;
        expect(s->name, "dw (din NULL)", dw + row, dw0 + row, rdw + row, mdw + row, (size_t)ck);
    }

    free(in), free(w), free(b), free(col), free(out), free(prior), free(dout), free(din);
    free(dprior), free(dw), free(dw0), free(db), free(db0), free(din_), free(w_), free(b_);
    free(dout_), free(want), free(mag), free(want_nb), free(mag_nb), free(rdin), free(mdin);
    free(rdw), free(mdw), free(rdb), free(mdb);
}

/* Images per chunk of a shape, asserted to be more than one (the chunked path). */
static int chunk_of(const shape *s)
{
    int nb = tower_conv_chunk_images(s->Ci, s->H, s->W, s->Co, s->K, s->S, s->P);
    cr_assert(nb >= 1, "%s: chunk of %d images", s->name, nb);
    return nb;
}

/* 7x7 outputs (49 columns an image): two full chunks and a remainder of one image. */
Test(conv_chunks, full_chunks_and_a_remainder_of_one)
{
    shape s = {"3x3p1 7x7", 0, 3, 7, 7, 4, 3, 1, 1, 0};
    int nb = chunk_of(&s);
    cr_assert(nb > 1, "a 7x7 output should take several images a chunk, not %d", nb);
    s.B = 2 * nb + 1;
    check_shape(&s, 201);
}

/* Many outputs for 9 columns: the product block holds fewer images than the columns
 * alone would allow (48 outputs: one image a chunk; 5 outputs: more than one, fewer than
 * with 1 output), and the batch splits into the chunks that fit. */
Test(conv_chunks, chunks_capped_by_many_outputs)
{
    shape one = {"1->1 3x3p1 4x4", 0, 1, 4, 4, 1, 3, 1, 1, 0};
    shape s = {"1->48 3x3p1 4x4", 0, 1, 4, 4, 48, 3, 1, 1, 3};
    shape t = {"1->5 3x3p1 4x4", 0, 1, 4, 4, 5, 3, 1, 1, 0};
    int n1 = chunk_of(&one), n48 = chunk_of(&s), n5 = chunk_of(&t);
    cr_assert(n48 == 1 && n5 > 1 && n5 < n1, "chunks: %d (1 output), %d (5), %d (48)", n1, n5,
              n48);
    s.B = 3;
    check_shape(&s, 202);
    t.B = 2 * n5 + 1;
    check_shape(&t, 203);
}

/* conv1's 11x11 stride 4 on a 35x55 input (8x13 outputs): rows copied from the tap S
 * above and S to the left, the strided corner taps, a full chunk and a part of one. */
Test(conv_chunks, stride4_11x11_like_conv1)
{
    shape s = {"11x11s4p2 35x55", 0, 3, 35, 55, 5, 11, 4, 2, 2};
    int nb = chunk_of(&s);
    cr_assert(nb > 1, "an 8x13 output should take several images a chunk, not %d", nb);
    s.B = nb + nb / 2 + 1;
    check_shape(&s, 204);
}

/* padding wider than the kernel (whole rows and columns of padding) and a stride wider
 * than the kernel (input pixels no tap reads) */
Test(conv_chunks, padding_and_stride_wider_than_the_kernel)
{
    shape s = {"3x3s1p3 9x5", 3, 2, 9, 5, 3, 3, 1, 3, 0};
    check_shape(&s, 205);
    shape t = {"2x2s3p1 31x25", 5, 2, 31, 25, 3, 2, 3, 1, 1};
    check_shape(&t, 206);
    shape u = {"5x5s2p4 7x7", 4, 2, 7, 7, 3, 5, 2, 4, 0};
    check_shape(&u, 207);
}

/* the kernel covers the whole padded input: one output row and column */
Test(conv_chunks, one_output_pixel)
{
    shape s = {"7x7p1 5x5", 3, 2, 5, 5, 4, 7, 1, 1, 0};
    check_shape(&s, 208);
}

/* conv5's channels on a 5x5 input (chunks of several images) with a full chunk and one
 * image more, and conv1's real shape with 2 images: forward and backward repeat bit for
 * bit, whatever the scratch held before (zeros, NaN, random numbers). */
static void repeat_bits(int B, int Ci, int H, int Co, int K, int S, int P, int backward_din)
{
    chk_rng r;
    chk_rng_seed(&r, 209);
    int Ho = tower_conv_out(H, K, S, P), ck = Ci * K * K;
    size_t nin = (size_t)B * Ci * H * H, nw = (size_t)Co * ck, nout = (size_t)B * Co * Ho * Ho;
    size_t ncol = tower_conv_col_size(Ci, H, H, K, S, P);
    float *in = falloc(nin), *w = falloc(nw), *b = falloc((size_t)Co), *dout = falloc(nout);
    float *col = falloc(ncol), *out[2], *din[2], *dw[2], *db[2];
    fill(&r, in, nin);
    fill(&r, w, nw);
    fill(&r, b, (size_t)Co);
    fill(&r, dout, nout);
    for (int run = 0; run < 2; run++) {
        out[run] = falloc(nout), din[run] = falloc(nin), dw[run] = falloc(nw);
        db[run] = falloc((size_t)Co);
        if (run) fill_nan(col, ncol);
        tower_conv_forward(out[run], in, w, b, B, Ci, H, H, Co, K, S, P, ck, 0, col);
        if (run) fill(&r, col, ncol);
        tower_conv_backward(backward_din ? din[run] : NULL, dw[run], db[run], dout, in, w, B,
                            Ci, H, H, Co, K, S, P, ck, 0, col);
    }
    cr_assert(memcmp(out[0], out[1], nout * sizeof(float)) == 0, "out differs between runs");
    cr_assert(memcmp(din[0], din[1], nin * sizeof(float)) == 0, "din differs between runs");
    cr_assert(memcmp(dw[0], dw[1], nw * sizeof(float)) == 0, "dw differs between runs");
    cr_assert(memcmp(db[0], db[1], (size_t)Co * sizeof(float)) == 0, "db differs between runs");
    for (int run = 0; run < 2; run++)
        free(out[run]), free(din[run]), free(dw[run]), free(db[run]);
    free(in), free(w), free(b), free(dout), free(col);
}

Test(conv_chunks, conv5_bits_repeat)
{
    int nb = tower_conv_chunk_images(192, 5, 5, 128, 3, 1, 1);
    cr_assert(nb > 1, "a 5x5 output should take several images a chunk, not %d", nb);
    repeat_bits(nb + 1, 192, 5, 128, 3, 1, 1, 1);
}

Test(conv_chunks, conv1_bits_repeat)
{
    repeat_bits(2, 3, 224, 48, 11, 4, 2, 0);
}

/* Memory is a target too: no conv layer of the paper's net needs more scratch than one
 * conv1 image's columns (what the per-image GEMM needed), and each needs at least one
 * image's. */
Test(conv_chunks, scratch_stays_bounded_at_the_papers_shapes)
{
    static const int sh[5][4] = {{3, 224, 11, 4}, {48, 27, 5, 1}, {128, 13, 3, 1},
                                 {192, 13, 3, 1}, {192, 13, 3, 1}};
    static const int pad[5] = {2, 2, 1, 1, 1};
    for (int l = 0; l < 5; l++) {
        size_t n = tower_conv_col_size(sh[l][0], sh[l][1], sh[l][1], sh[l][2], sh[l][3], pad[l]);
        size_t one = (size_t)sh[l][0] * sh[l][2] * sh[l][2] *
                     (size_t)tower_conv_out(sh[l][1], sh[l][2], sh[l][3], pad[l]) *
                     (size_t)tower_conv_out(sh[l][1], sh[l][2], sh[l][3], pad[l]);
        cr_assert(n >= one, "conv%d: scratch below one image's columns", l + 1);
        size_t conv1 = (size_t)3 * 11 * 11 * 55 * 55;
        cr_assert(n <= conv1, "conv%d: scratch %zu reals, above conv1's one image (%zu)",
                  l + 1, n, conv1);
    }
}
