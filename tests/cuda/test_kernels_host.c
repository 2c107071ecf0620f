/* test_kernels_host.c: the CUDA kernels' per-thread code (src/tower/cuda/kernels.h) run on
 * the CPU, element by element, against layers_cpu.c. Needs no GPU and runs everywhere,
 * so the index arithmetic of every kernel (im2col, col2im, LRN windows, pooling windows,
 * bias channels, logit layout) and the row-major -> column-major GEMM mapping are tested
 * on machines without one. The emu_* functions below follow the launchers of
 * layers_cuda.cu step for step, with each kernel launch replaced by a loop over its
 * elements and each cublasSgemm / cublasSgemv by the same column-major call to CBLAS
 * (which, like cuBLAS, rejects a leading dimension that is too small). They are copies of
 * the launchers, not the launchers: an edit to one side must be made to the other.
 * The data path's augmentation (src/data/augment_kernel.h) is run the same way against
 * data_augment_cpu. --precision bf16's pieces too: the rounding (tower_k_bf16) against a
 * reference in double arithmetic, the bf16 im2col and gradient transpose against the fp32
 * ones followed by the rounding, bit for bit, and the bf16 conv and fc launchers emulated
 * (bf16 operands widened exactly, fp32 sums) against the fp32 CPU within the bf16 bound
 * (bf16_bound.h). */
#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_bound.h"
#include "data/augment_kernel.h"
#include "data/data.h"
#include "tower/cuda/kernels.h"
#include "tower/tower.h"


static float *fnew(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    cr_assert_not_null(p);
    return p;
}

static float *frand(size_t n, uint64_t key, float scale)
{
    float *p = fnew(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * (float)base_rng_normal(key, 2 * (uint64_t)i, 0);
    return p;
}

static float *fdup(const float *x, size_t n)
{
    float *p = fnew(n);
    memcpy(p, x, sizeof(float) * n);
    return p;
}

/* max |a - b| / max |b| <= tol (0: bit-identical); prints both maxima. */
static void expect_close(const char *what, const float *got, const float *ref, size_t n,
                         double tol)
{
    double max_ref = 0, max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(got[i]) && isfinite(ref[i]), "%s: non-finite at %zu", what, i);
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
        double d = fabs((double)got[i] - ref[i]);
        if (d > max_abs) max_abs = d;
    }
    printf("%-40s n=%-7zu max|cpu|=%-9.3g max abs err=%.3g\n", what, n, max_ref, max_abs);
    cr_assert(max_abs <= tol * (max_ref > 0 ? max_ref : 1), "%s: max abs err %.3g (tol %.1g)",
              what, max_abs, tol);
}

/* ---- the launchers of layers_cuda.cu, emulated --------------------------------------- */

static void emu_gemm_rm(int ta, int tb, int m, int n, int k, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    tower_k_gemm g = tower_k_gemm_rm(ta, tb, m, n, k, A, lda, B, ldb);
    cblas_sgemm(CblasColMajor, g.trans_first ? CblasTrans : CblasNoTrans,
                g.trans_second ? CblasTrans : CblasNoTrans, g.m, g.n, g.k, alpha, g.first,
                g.ld_first, g.second, g.ld_second, beta, C, ldc);
}

/* the chunk loop of layers_cuda.cu: images [n0, n0 + nb) */
#define EMU_CHUNKS(n0, nb, B, images)                                                     \
    for (int n0 = 0, nb = (B) < (images) ? (B) : (images); n0 < (B);                      \
         n0 += nb, nb = (B) - n0 < (images) ? (B) - n0 : (images))

static void emu_conv_forward(float *out, const float *in, const float *w, const float *b,
                             int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                             int ldw, int accumulate, float *scratch, int images, int relu)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    size_t nin = (size_t)Ci * H * W;
    float *col = scratch, *prod = scratch + (size_t)images * CKK * HWo;
    EMU_CHUNKS(n0, nb, B, images) {
        int nq = nb * HWo;
        const float *x = in + (size_t)n0 * nin;
        float *y = out + (size_t)n0 * Co * HWo;
        tower_k_conv_geom cg;
        cr_assert_eq(tower_k_conv_geom_make(&cg, nb, Ci, H, W, K, stride, pad, Ho, Wo), 0);
        for (uint32_t e = 0; e < (uint32_t)Ci * nq; e++) tower_k_im2col_taps(col, x, e, cg);
        emu_gemm_rm(0, 0, Co, nq, CKK, 1.0f, w, ldw, col, nq, 0.0f, prod, nq);
        tower_k_cnhw t = tower_k_cnhw_make(nb, Co, HWo);
        for (uint32_t i = 0; i < (uint32_t)Co * nq; i++) {
            float v = tower_k_conv_out(prod, y, b, i, t, accumulate);
            y[i] = relu ? tower_k_relu(v) : v;
        }
    }
}

/* gemv_rm of layers_cuda.cu: y (m) = alpha A (m x n row-major) . x + beta y */
static void emu_gemv_rm(int m, int n, float alpha, const float *A, int lda, const float *x,
                        float beta, float *y)
{
    cblas_sgemv(CblasColMajor, CblasTrans, n, m, alpha, A, lda, x, 1, beta, y, 1);
}

static void emu_conv_backward(float *din, float *dw, float *db, const float *dout,
                              const float *act, const float *in, const float *w, int B, int Ci,
                              int H, int W,
                              int Co, int K, int stride, int pad, int ldw, int accumulate_din,
                              int accumulate_dw, float *scratch, int images)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    size_t nin = (size_t)Ci * H * W;
    float *col = scratch, *g = scratch + (size_t)images * CKK * HWo;
    float *ones = g + (size_t)images * Co * HWo;
    if (!dw && !din && !db) return;
    if (db)
        for (size_t i = 0; i < (size_t)(B < images ? B : images) * HWo; i++) ones[i] = 1.0f;
    EMU_CHUNKS(n0, nb, B, images) {
        int nq = nb * HWo;
        const float *gd = dout + (size_t)n0 * Co * HWo;
        const float *ad = act ? act + (size_t)n0 * Co * HWo : NULL;
        tower_k_conv_geom cg;
        cr_assert_eq(tower_k_conv_geom_make(&cg, nb, Ci, H, W, K, stride, pad, Ho, Wo), 0);
        tower_k_cnhw t = tower_k_cnhw_make(nb, Co, HWo);
        for (uint32_t i = 0; i < (uint32_t)Co * nq; i++) {
            uint32_t c;
            g[tower_k_cnhw_at(i, t, &c)] = ad ? tower_k_relu_grad(gd[i], ad[i]) : gd[i];
        }
        float beta = tower_k_chunk_beta(accumulate_dw, n0); /* layers_cuda.cu's */
        if (db) emu_gemv_rm(Co, nq, 1.0f, g, nq, ones, beta, db);
        if (dw) {
            const float *x = in + (size_t)n0 * nin;
            for (uint32_t e = 0; e < (uint32_t)Ci * nq; e++) tower_k_im2col_taps(col, x, e, cg);
            emu_gemm_rm(0, 1, Co, CKK, nq, 1.0f, g, nq, col, nq, beta, dw, ldw);
        }
        if (din) {
            emu_gemm_rm(1, 0, CKK, nq, Co, 1.0f, w, ldw, g, nq, 0.0f, col, nq);
            float *dx = din + (size_t)n0 * nin;
            for (uint32_t e = 0; e < (uint32_t)(nb * nin); e++)
                dx[e] = tower_k_col2im_pixel(col, accumulate_din ? dx[e] : 0.0f, e, cg);
        }
    }
}

static void emu_fc_forward(float *out, const float *in, const float *w, const float *b, int B,
                           int Cin, int Cout, int ldw, int accumulate)
{
    emu_gemm_rm(0, 1, B, Cout, Cin, 1.0f, in, Cin, w, ldw, accumulate ? 1.0f : 0.0f, out, Cout);
    if (b)
        for (uint32_t i = 0; i < (uint32_t)(B * Cout); i++)
            out[i] += b[tower_k_channel(i, tower_k_div_of((uint32_t)Cout), tower_k_div_of(1))];
}

static void emu_fc_backward(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, int B, int Cin, int Cout, int ldw,
                            int accumulate_din, int accumulate_dw)
{
    if (din)
        emu_gemm_rm(0, 0, B, Cin, Cout, 1.0f, dout, Cout, w, ldw, accumulate_din ? 1.0f : 0.0f,
                    din, Cin);
    if (dw)
        emu_gemm_rm(1, 0, Cout, Cin, B, 1.0f, dout, Cout, in, Cin, accumulate_dw ? 1.0f : 0.0f,
                    dw, ldw);
    if (db)
        for (int o = 0; o < Cout; o++)
            db[o] = tower_k_fc_bias_grad(dout, accumulate_dw ? db[o] : 0.0f, o, B, Cout);
}

/* ---- conv: a layer reading S source blocks of Ci channels each, as net.c drives it --- */
static void check_conv(const char *name, int B, int S, int Ci, int H, int W, int Co, int K,
                       int stride, int pad, int images)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int kk = Ci * K * K, ldw = S * kk;
    size_t slot = (size_t)B * Ci * H * W, n_in = slot * S, n_w = (size_t)Co * ldw;
    size_t n_out = (size_t)B * Co * Ho * Wo, n_col = tower_conv_col_size(Ci, H, W, K, stride, pad);
    size_t n_scratch = tower_k_conv_scratch_size(Ci, Co, K, Ho, Wo, images);
    float *in = frand(n_in, 11, 1), *w = frand(n_w, 12, 0.3f), *b = frand(Co, 13, 0.1f);
    float *dout = frand(n_out, 14, 1), *dw = frand(n_w, 15, 0.01f), *db = frand(Co, 16, 0.01f);
    float *dw2 = fdup(dw, n_w), *db2 = fdup(db, Co);
    float *out = fnew(n_out), *out2 = fnew(n_out), *din = fnew(n_in), *din2 = fnew(n_in);
    float *col = fnew(n_col), *col2 = fnew(n_scratch);
    char what[96];

    for (int s = 0; s < S; s++) {
        tower_conv_forward(out, in + s * slot, w + (size_t)s * kk, s ? NULL : b, B, Ci, H, W,
                           Co, K, stride, pad, ldw, s > 0, col);
        emu_conv_forward(out2, in + s * slot, w + (size_t)s * kk, s ? NULL : b, B, Ci, H, W, Co,
                         K, stride, pad, ldw, s > 0, col2, images, 0);
    }
    snprintf(what, sizeof what, "%s forward", name);
    expect_close(what, out2, out, n_out, 1e-6);
    for (int s = 0; s < S; s++) {
        tower_conv_backward(din + s * slot, dw + (size_t)s * kk, s ? NULL : db, dout,
                            in + s * slot, w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad,
                            ldw, 0, col);
        emu_conv_backward(din2 + s * slot, dw2 + (size_t)s * kk, s ? NULL : db2, dout, NULL,
                          in + s * slot, w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad,
                          ldw, 0, 1, col2, images);
    }
    snprintf(what, sizeof what, "%s backward din", name);
    expect_close(what, din2, din, n_in, 1e-6);
    snprintf(what, sizeof what, "%s backward dw", name);
    expect_close(what, dw2, dw, n_w, 1e-6);
    snprintf(what, sizeof what, "%s backward db", name);
    expect_close(what, db2, db, Co, 1e-6);
    tower_conv_backward(din, NULL, NULL, dout, in, w, B, Ci, H, W, Co, K, stride, pad, ldw, 1, col);
    emu_conv_backward(din2, NULL, NULL, dout, NULL, in, w, B, Ci, H, W, Co, K, stride, pad, ldw,
                      1, 1, col2, images);
    snprintf(what, sizeof what, "%s backward din (accumulate)", name);
    expect_close(what, din2, din, n_in, 1e-6);

    /* the fused conv + ReLU of the GPU tower against the CPU's conv, then ReLU, then
     * ReLU's backward, then the conv's backward (layer by layer, as net.c runs them) */
    for (int s = 0; s < S; s++) {
        tower_conv_forward(out, in + s * slot, w + (size_t)s * kk, s ? NULL : b, B, Ci, H, W,
                           Co, K, stride, pad, ldw, s > 0, col);
        emu_conv_forward(out2, in + s * slot, w + (size_t)s * kk, s ? NULL : b, B, Ci, H, W, Co,
                         K, stride, pad, ldw, s > 0, col2, images, s == S - 1);
    }
    tower_relu_forward(out, out, n_out);
    snprintf(what, sizeof what, "%s fused ReLU forward", name);
    expect_close(what, out2, out, n_out, 1e-6);
    float *dact = fdup(dout, n_out);
    tower_relu_backward(dact, dact, out, n_out);
    for (int s = 0; s < S; s++) {
        tower_conv_backward(din + s * slot, dw + (size_t)s * kk, s ? NULL : db, dact,
                            in + s * slot, w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad,
                            ldw, 0, col);
        emu_conv_backward(din2 + s * slot, dw2 + (size_t)s * kk, s ? NULL : db2, dout, out,
                          in + s * slot, w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad,
                          ldw, 0, 1, col2, images);
    }
    snprintf(what, sizeof what, "%s fused ReLU backward din", name);
    expect_close(what, din2, din, n_in, 1e-6);
    snprintf(what, sizeof what, "%s fused ReLU backward dw", name);
    expect_close(what, dw2, dw, n_w, 1e-6);
    snprintf(what, sizeof what, "%s fused ReLU backward db", name);
    expect_close(what, db2, db, Co, 1e-6);
    /* accumulate_dw 0 (the GPU tower's default, no zeroing before): dw and db written over
     * whatever they held, by the first chunk's GEMMs with beta 0 and added to by the rest:
     * the CPU's from zero */
    memset(dw, 0, sizeof(float) * n_w);
    memset(db, 0, sizeof(float) * Co);
    for (int s = 0; s < S; s++) {
        tower_conv_backward(NULL, dw + (size_t)s * kk, s ? NULL : db, dact, in + s * slot,
                            w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad, ldw, 0, col);
        emu_conv_backward(NULL, dw2 + (size_t)s * kk, s ? NULL : db2, dout, out, in + s * slot,
                          w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad, ldw, 0, 0, col2,
                          images);
    }
    snprintf(what, sizeof what, "%s backward dw written (accumulate_dw 0)", name);
    expect_close(what, dw2, dw, n_w, 1e-6);
    snprintf(what, sizeof what, "%s backward db written (accumulate_dw 0)", name);
    expect_close(what, db2, db, Co, 1e-6);
    free(dact);
    free(in), free(w), free(b), free(dout), free(dw), free(db), free(dw2), free(db2);
    free(out), free(out2), free(din), free(din2), free(col), free(col2);
}

/* the AlexNet kernel shapes on small planes, plus a non-square plane (H != W); chunks of
 * one image, of the whole batch, and of a size that leaves a shorter last chunk */
Test(cuda_kernels_host, conv_11x11_stride4_pad2) { check_conv("conv 11x11/4 p2", 3, 1, 3, 35, 35, 5, 11, 4, 2, 2); }
Test(cuda_kernels_host, conv_5x5_pad2) { check_conv("conv 5x5 p2", 2, 1, 4, 13, 13, 6, 5, 1, 2, 1); }
Test(cuda_kernels_host, conv_3x3_two_sources) { check_conv("conv 3x3 p1, 2 sources", 5, 2, 3, 7, 7, 4, 3, 1, 1, 2); }
Test(cuda_kernels_host, conv_3x3_whole_batch) { check_conv("conv 3x3 p1, chunk = batch", 4, 2, 3, 6, 6, 5, 3, 1, 1, 4); }
Test(cuda_kernels_host, conv_non_square) { check_conv("conv 3x3/2 p1 9x12", 3, 1, 2, 9, 12, 3, 3, 2, 1, 2); }
Test(cuda_kernels_host, conv_large_channel_count) { check_conv("conv 3x3 p1 300 ch", 1, 1, 2, 5, 5, 300, 3, 1, 1, 1); }

Test(cuda_kernels_host, fc_two_sources)
{
    int B = 3, Cin = 7, Cout = 5, S = 2, ldw = S * Cin;
    size_t slot = (size_t)B * Cin, n_in = slot * S, n_w = (size_t)Cout * ldw, n_out = (size_t)B * Cout;
    float *in = frand(n_in, 21, 1), *w = frand(n_w, 22, 0.3f), *b = frand(Cout, 23, 0.1f);
    float *dout = frand(n_out, 24, 1), *dw = frand(n_w, 25, 0.01f), *db = frand(Cout, 26, 0.01f);
    float *dw2 = fdup(dw, n_w), *db2 = fdup(db, Cout);
    float *out = fnew(n_out), *out2 = fnew(n_out), *din = fnew(n_in), *din2 = fnew(n_in);
    for (int s = 0; s < S; s++) {
        tower_fc_forward(out, in + s * slot, w + (size_t)s * Cin, s ? NULL : b, B, Cin, Cout, ldw,
                         s > 0);
        emu_fc_forward(out2, in + s * slot, w + (size_t)s * Cin, s ? NULL : b, B, Cin, Cout, ldw,
                       s > 0);
    }
    expect_close("fc forward", out2, out, n_out, 1e-6);
    for (int s = 0; s < S; s++) {
        tower_fc_backward(din + s * slot, dw + (size_t)s * Cin, s ? NULL : db, dout, in + s * slot,
                          w + (size_t)s * Cin, B, Cin, Cout, ldw, 0);
        emu_fc_backward(din2 + s * slot, dw2 + (size_t)s * Cin, s ? NULL : db2, dout,
                        in + s * slot, w + (size_t)s * Cin, B, Cin, Cout, ldw, 0, 1);
    }
    expect_close("fc backward din", din2, din, n_in, 1e-6);
    expect_close("fc backward dw", dw2, dw, n_w, 1e-6);
    expect_close("fc backward db (bit-identical)", db2, db, Cout, 0);
    /* accumulate_dw 0: written over what they held, the CPU's from zero */
    memset(dw, 0, sizeof(float) * n_w);
    memset(db, 0, sizeof(float) * Cout);
    for (int s = 0; s < S; s++) {
        tower_fc_backward(NULL, dw + (size_t)s * Cin, s ? NULL : db, dout, in + s * slot,
                          w + (size_t)s * Cin, B, Cin, Cout, ldw, 0);
        emu_fc_backward(NULL, dw2 + (size_t)s * Cin, s ? NULL : db2, dout, in + s * slot,
                        w + (size_t)s * Cin, B, Cin, Cout, ldw, 0, 0);
    }
    expect_close("fc backward dw written (accumulate_dw 0)", dw2, dw, n_w, 1e-6);
    expect_close("fc backward db written (bit-identical)", db2, db, Cout, 0);
    free(in), free(w), free(b), free(dout), free(dw), free(db), free(dw2), free(db2);
    free(out), free(out2), free(din), free(din2);
}

/* ---- bf16 (--precision bf16) --------------------------------------------------------- */

/* x rounded to bf16 by double arithmetic alone, independent of tower_k_bf16's integer
 * carry: |x| = s 2^q with q the exponent of bf16's spacing at |x| (8 significant bits:
 * 2^(e-8) for |x| in [2^(e-1), 2^e); 2^-133, the subnormal spacing, below 2^-126), s rounded
 * to the nearest integer, ties to even, back to a float (exact), to +-inf at 2^128 and above. */
static uint16_t ref_bf16(float x)
{
    uint16_t sign = signbit(x) ? 0x8000u : 0;
    if (isnan(x)) return 0x7fffu;
    if (isinf(x)) return sign | 0x7f80u;
    double a = fabs((double)x);
    if (a == 0) return sign;
    int e;
    frexp(a, &e);
    int q = e - 8 < -133 ? -133 : e - 8;
    double sc = ldexp(a, -q), fl = floor(sc), r = sc - fl;
    double k = r > 0.5 ? fl + 1 : r < 0.5 ? fl : fmod(fl, 2) == 0 ? fl : fl + 1;
    double v = ldexp(k, q);
    if (v >= ldexp(1, 128)) return sign | 0x7f80u;
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    cr_assert_eq(u & 0xffffu, 0, "the reference of %a is no bf16: %a", (double)x, v);
    return sign | (uint16_t)(u >> 16);
}

static float from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void expect_bf16(uint32_t u)
{
    float x = from_bits(u);
    uint16_t got = tower_k_bf16(x), want = ref_bf16(x);
    if (got != want)
        cr_assert_fail("bf16 of %#010x (%a): got %#06x, want %#06x", u, (double)x, got, want);
}

/* tower_k_bf16 against the double reference: every bf16 value (unchanged) and the floats
 * half a bf16 step above it (ties), and one float either side of each tie, 2^21 random bit
 * patterns, every float exponent's subnormal-like edges, the specials */
Test(cuda_kernels_host, bf16_rounding)
{
    for (uint32_t h = 0; h <= 0xffffu; h++) {
        uint32_t u = h << 16;
        if ((u & 0x7f800000u) == 0x7f800000u) continue; /* inf and NaN: below */
        cr_assert_eq(tower_k_bf16(from_bits(u)), h, "bf16 %#06x is not kept", h);
        for (uint32_t d = 0x7fffu; d <= 0x8001u; d++) expect_bf16(u | d);
        expect_bf16(u | 0xffffu);
        expect_bf16(u | 1u);
    }
    for (uint64_t i = 0; i < (1u << 21); i++) expect_bf16((uint32_t)base_rng_mix(97, i));
    for (uint32_t m = 0; m < (1u << 16); m++) { /* float subnormals, both signs */
        uint32_t u = (uint32_t)base_rng_mix(98, m) & 0x007fffffu;
        expect_bf16(u);
        expect_bf16(u | 0x80000000u);
    }
    /* ties to even, both ways: 1 + 2^-8 (even 1.0 kept), 1 + 3 2^-8 (odd: up) */
    cr_assert_eq(tower_k_bf16(from_bits(0x3f808000u)), 0x3f80u);
    cr_assert_eq(tower_k_bf16(from_bits(0x3f818000u)), 0x3f82u);
    cr_assert_eq(tower_k_bf16(from_bits(0xbf818000u)), 0xbf82u);
    cr_assert_eq(tower_k_bf16(1.0f / 3.0f), 0x3eabu); /* 0x3eaaaaab: below the tie, up */
    /* the largest float rounds to inf, the largest bf16 stays, the tie above it is odd:
     * inf; the smallest subnormal and its bf16 neighbours */
    cr_assert_eq(tower_k_bf16(from_bits(0x7f7fffffu)), 0x7f80u);
    cr_assert_eq(tower_k_bf16(from_bits(0xff7fffffu)), 0xff80u);
    cr_assert_eq(tower_k_bf16(from_bits(0x7f7f0000u)), 0x7f7fu);
    cr_assert_eq(tower_k_bf16(from_bits(0x7f7f7fffu)), 0x7f7fu);
    cr_assert_eq(tower_k_bf16(from_bits(0x7f7f8000u)), 0x7f80u);
    cr_assert_eq(tower_k_bf16(from_bits(0x00000001u)), 0x0000u);
    cr_assert_eq(tower_k_bf16(from_bits(0x00008000u)), 0x0000u); /* a tie, 0 even */
    cr_assert_eq(tower_k_bf16(from_bits(0x00018000u)), 0x0002u); /* a tie, 1 odd: up */
    cr_assert_eq(tower_k_bf16(from_bits(0x00008001u)), 0x0001u);
    cr_assert_eq(tower_k_bf16(from_bits(0x007fffffu)), 0x0080u); /* up to the normals */
    cr_assert_eq(tower_k_bf16(0.0f), 0x0000u);
    cr_assert_eq(tower_k_bf16(-0.0f), 0x8000u);
    cr_assert_eq(tower_k_bf16(INFINITY), 0x7f80u);
    cr_assert_eq(tower_k_bf16(-INFINITY), 0xff80u);
    uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0xffffffffu,
                       0x7fff8000u, 0xff800001u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        cr_assert_eq(tower_k_bf16(from_bits(nans[i])), 0x7fffu, "NaN %#010x", nans[i]);
        cr_assert(isnan(tower_k_bf16_float(tower_k_bf16(from_bits(nans[i])))));
    }
    /* widening is exact, and the cast element is the rounding */
    for (uint32_t h = 0; h <= 0xffffu; h++) {
        float x = tower_k_bf16_float((uint16_t)h);
        uint32_t u;
        memcpy(&u, &x, sizeof u);
        cr_assert_eq(u, h << 16);
    }
    float src[3] = {1.0f / 3.0f, -65504.3f, 1e-40f};
    uint16_t dst[3];
    for (size_t i = 0; i < 3; i++) tower_k_cast_bf16(dst, src, i);
    for (size_t i = 0; i < 3; i++) cr_assert_eq(dst[i], ref_bf16(src[i]));
}

/* The gradient transpose of a conv chunk (to_cnhw): the fp32 element function against the
 * direct (n, c, p) -> (c, n, p) move with the ReLU mask (act > 0) or without, and the bf16
 * one against the fp32 one rounded, bit for bit, every element */
Test(cuda_kernels_host, to_cnhw_fp32_and_bf16)
{
    int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {32, 48, 3025}, {5, 300, 9}, {2, 7, 1}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int nb = shapes[k][0], C = shapes[k][1], HW = shapes[k][2];
        size_t n = (size_t)nb * C * HW;
        tower_k_cnhw t = tower_k_cnhw_make(nb, C, HW);
        float *dout = frand(n, 300 + k, 1), *act = frand(n, 310 + k, 1);
        float *g = fnew(n), *ref = fnew(n);
        uint16_t *gb = calloc(n, sizeof(uint16_t));
        cr_assert_not_null(gb);
        for (int masked = 0; masked < 2; masked++) {
            const float *a = masked ? act : NULL;
            uint32_t i = 0;
            for (int b = 0; b < nb; b++)
                for (int c = 0; c < C; c++)
                    for (int p = 0; p < HW; p++, i++)
                        ref[((size_t)c * nb + b) * HW + p] =
                            a ? (a[i] > 0 ? dout[i] : 0.0f) : dout[i];
            for (uint32_t e = 0; e < (uint32_t)n; e++) {
                tower_k_to_cnhw(g, dout, a, e, t);
                tower_k_to_cnhw_bf16(gb, dout, a, e, t);
            }
            cr_assert(memcmp(g, ref, sizeof(float) * n) == 0, "to_cnhw (%d, %d, %d) differs",
                      nb, C, HW);
            for (size_t j = 0; j < n; j++)
                if (gb[j] != tower_k_bf16(ref[j]))
                    cr_assert_fail("bf16 to_cnhw (%d, %d, %d) at %zu: %#06x, want %#06x", nb, C,
                                   HW, j, gb[j], tower_k_bf16(ref[j]));
        }
        free(dout), free(act), free(g), free(ref), free(gb);
    }
}

/* ---- the bf16 launchers of layers_cuda.cu, emulated: cublasGemmEx's bf16 operands are
 * widened to floats exactly (a bf16 is a float's top half) and multiplied by CBLAS, whose
 * products of two bf16 are exact in fp32 and whose sums are fp32, as the tensor cores'. */

static float *widen(const uint16_t *h, size_t n)
{
    float *x = fnew(n);
    for (size_t i = 0; i < n; i++) x[i] = tower_k_bf16_float(h[i]);
    return x;
}

/* the elements a row-major op(X) of rows x cols (stored transposed when t) with ld spans */
static size_t span(int t, int rows, int cols, int ld)
{
    int r = t ? cols : rows, c = t ? rows : cols;
    return r > 0 ? (size_t)(r - 1) * ld + c : 0;
}

static void emu_gemm_bf16_rm(int ta, int tb, int m, int n, int k, float alpha, const uint16_t *A,
                             int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc)
{
    float *a = widen(A, span(ta, m, k, lda)), *b = widen(B, span(tb, k, n, ldb));
    emu_gemm_rm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, C, ldc);
    free(a), free(b);
}

static void emu_conv_forward_bf16(float *out, const float *in, const uint16_t *w, const float *b,
                                  int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                                  int ldw, int accumulate, int relu, char *scratch,
                                  size_t scratch_bytes, int images)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    size_t nin = (size_t)Ci * H * W;
    tower_k_conv_scratch_bf16 sl = tower_k_conv_scratch_bf16_of(Ci, Co, K, Ho, Wo, images, 0);
    cr_assert_leq(sl.bytes, scratch_bytes);
    uint16_t *col = (uint16_t *)(scratch + sl.col);
    float *prod = (float *)(scratch + sl.prod);
    EMU_CHUNKS(n0, nb, B, images) {
        int nq = nb * HWo;
        const float *x = in + (size_t)n0 * nin;
        float *y = out + (size_t)n0 * Co * HWo;
        tower_k_conv_geom cg;
        cr_assert_eq(tower_k_conv_geom_make(&cg, nb, Ci, H, W, K, stride, pad, Ho, Wo), 0);
        for (uint32_t e = 0; e < (uint32_t)Ci * nq; e++) tower_k_im2col_taps_bf16(col, x, e, cg);
        emu_gemm_bf16_rm(0, 0, Co, nq, CKK, 1.0f, w, ldw, col, nq, 0.0f, prod, nq);
        tower_k_cnhw t = tower_k_cnhw_make(nb, Co, HWo);
        for (uint32_t i = 0; i < (uint32_t)Co * nq; i++) {
            float v = tower_k_conv_out(prod, y, b, i, t, accumulate);
            y[i] = relu ? tower_k_relu(v) : v;
        }
    }
}

static void emu_conv_backward_bf16(float *din, float *dw, float *db, const float *dout,
                                   const float *act, const float *in, const uint16_t *w, int B,
                                   int Ci, int H, int W, int Co, int K, int stride, int pad,
                                   int ldw, int accumulate_din, int accumulate_dw, char *scratch,
                                   size_t scratch_bytes, int images)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int HWo = Ho * Wo, CKK = Ci * K * K;
    size_t nin = (size_t)Ci * H * W;
    tower_k_conv_scratch_bf16 sl =
        tower_k_conv_scratch_bf16_of(Ci, Co, K, Ho, Wo, images, din != NULL);
    cr_assert_leq(sl.bytes, scratch_bytes);
    uint16_t *col = (uint16_t *)(scratch + sl.col), *g = (uint16_t *)(scratch + sl.prod);
    uint16_t *ones = (uint16_t *)(scratch + sl.ones);
    float *dcol = (float *)(scratch + sl.col);
    if (db)
        for (size_t i = 0; i < (size_t)(B < images ? B : images) * HWo; i++)
            ones[i] = tower_k_bf16(1.0f);
    EMU_CHUNKS(n0, nb, B, images) {
        int nq = nb * HWo;
        const float *gd = dout + (size_t)n0 * Co * HWo;
        const float *ad = act ? act + (size_t)n0 * Co * HWo : NULL;
        tower_k_conv_geom cg;
        cr_assert_eq(tower_k_conv_geom_make(&cg, nb, Ci, H, W, K, stride, pad, Ho, Wo), 0);
        tower_k_cnhw t = tower_k_cnhw_make(nb, Co, HWo);
        for (uint32_t i = 0; i < (uint32_t)Co * nq; i++) tower_k_to_cnhw_bf16(g, gd, ad, i, t);
        float beta = tower_k_chunk_beta(accumulate_dw, n0);
        if (db) emu_gemm_bf16_rm(0, 0, Co, 1, nq, 1.0f, g, nq, ones, 1, beta, db, 1);
        if (dw) {
            const float *x = in + (size_t)n0 * nin;
            for (uint32_t e = 0; e < (uint32_t)Ci * nq; e++)
                tower_k_im2col_taps_bf16(col, x, e, cg);
            emu_gemm_bf16_rm(0, 1, Co, CKK, nq, 1.0f, g, nq, col, nq, beta, dw, ldw);
        }
        if (din) {
            emu_gemm_bf16_rm(1, 0, CKK, nq, Co, 1.0f, w, ldw, g, nq, 0.0f, dcol, nq);
            float *dx = din + (size_t)n0 * nin;
            for (uint32_t e = 0; e < (uint32_t)(nb * nin); e++)
                dx[e] = tower_k_col2im_pixel(dcol, accumulate_din ? dx[e] : 0.0f, e, cg);
        }
    }
}

static uint16_t *to_bf16(const float *x, size_t n)
{
    uint16_t *h = calloc(n ? n : 1, sizeof(uint16_t));
    cr_assert_not_null(h);
    for (size_t i = 0; i < n; i++) tower_k_cast_bf16(h, x, i);
    return h;
}

/* ---- cuDNN's bf16 path (conv_cudnn.cu's _bf16 functions), emulated: cuDNN is a bf16
 * convolution with fp32 sums whose result is rounded to bf16 (its output tensors are
 * bf16), here the CPU convolution on the widened bf16 operands, rounded; around it the
 * passes of kernels.h (tower_k_cudnn_out, tower_k_grad_bf16, tower_k_add_bf16,
 * tower_k_add_bf16_block) and the bias gradient's two sums, per image and channel, then
 * over the images. The bound: the bf16 GEMM's, plus one more rounding of each result. */

/* The (rows, kk) block of a bf16 (rows, ld) matrix, widened and packed: the filter cuDNN
 * reads (conv_cudnn.cu packs a source's block) */
static float *widen_block(const uint16_t *w, int rows, int kk, int ld)
{
    float *p = fnew((size_t)rows * kk);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < kk; c++) p[(size_t)r * kk + c] = tower_k_bf16_float(w[(size_t)r * ld + c]);
    return p;
}

static void emu_cudnn_forward_bf16(float *out, const float *in, const uint16_t *w, const float *b,
                                   int B, int Ci, int H, int W, int Co, int K, int stride,
                                   int pad, int ldw, int accumulate, int relu)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int kk = Ci * K * K;
    size_t nin = (size_t)B * Ci * H * W, nout = (size_t)B * Co * Ho * Wo;
    uint16_t *xb = to_bf16(in, nin); /* the forward's cast */
    float *x = widen(xb, nin), *wp = widen_block(w, Co, kk, ldw), *y = fnew(nout);
    float *col = fnew(tower_conv_col_size(Ci, H, W, K, stride, pad));
    tower_conv_forward(y, x, wp, NULL, B, Ci, H, W, Co, K, stride, pad, kk, 0, col);
    uint16_t *yb = to_bf16(y, nout);
    tower_k_div C = tower_k_div_of((uint32_t)Co), HW = tower_k_div_of((uint32_t)(Ho * Wo));
    for (uint32_t i = 0; i < (uint32_t)nout; i++) {
        float v = tower_k_cudnn_out(yb, out, b, i, C, HW, accumulate);
        out[i] = relu ? tower_k_relu(v) : v;
    }
    free(xb), free(x), free(wp), free(y), free(col), free(yb);
}

static void emu_cudnn_backward_bf16(float *din, float *dw, float *db, const float *dout,
                                    const float *act, const float *in, const uint16_t *w, int B,
                                    int Ci, int H, int W, int Co, int K, int stride, int pad,
                                    int ldw, int accumulate_din, int accumulate_dw)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int kk = Ci * K * K, HWo = Ho * Wo;
    size_t nin = (size_t)B * Ci * H * W, nout = (size_t)B * Co * HWo, nw = (size_t)Co * kk;
    uint16_t *g = calloc(nout, sizeof(uint16_t)), *xb = to_bf16(in, nin);
    cr_assert_not_null(g);
    for (uint32_t i = 0; i < (uint32_t)nout; i++)
        tower_k_grad_bf16(g, dout, tower_k_src_of(act, 0), i);
    if (db) { /* (B, Co) sums over each plane, then over the images, in fp32 */
        for (int c = 0; c < Co; c++) {
            float s = 0.0f;
            for (int n = 0; n < B; n++) {
                float p = 0.0f;
                for (int q = 0; q < HWo; q++)
                    p += tower_k_bf16_float(g[((size_t)n * Co + c) * HWo + q]);
                s += p;
            }
            db[c] = accumulate_dw ? db[c] + s : s;
        }
    }
    float *gf = widen(g, nout), *x = widen(xb, nin), *wp = widen_block(w, Co, kk, ldw);
    float *dwf = fnew(nw), *dxf = fnew(nin);
    float *col = fnew(tower_conv_col_size(Ci, H, W, K, stride, pad));
    tower_conv_backward(din ? dxf : NULL, dwf, NULL, gf, x, wp, B, Ci, H, W, Co, K, stride, pad,
                        kk, 0, col);
    uint16_t *dwb = to_bf16(dwf, nw);
    tower_k_div kd = tower_k_div_of((uint32_t)kk);
    for (uint32_t i = 0; i < (uint32_t)nw; i++)
        tower_k_add_bf16_block(dw, (uint32_t)ldw, dwb, i, kd, accumulate_dw);
    if (din) {
        uint16_t *dxb = to_bf16(dxf, nin);
        for (uint32_t i = 0; i < (uint32_t)nin; i++) tower_k_add_bf16(din, dxb, i, accumulate_din);
        free(dxb);
    }
    free(g), free(xb), free(gf), free(x), free(wp), free(dwf), free(dxf), free(col), free(dwb);
}

/* One conv layer of S sources with the fused ReLU, forward and backward (net.c's calls),
 * emulated in bf16 against the fp32 CPU: every output within the bf16 bound of its
 * reduction length K (bf16_bound.h), the bound being the CPU layer run on |in|, |w|,
 * |dout| (the sum of |products| of each output). The ReLU mask is the CPU's output on both
 * sides, so that the masks agree. cudnn 0: the GEMM path's launchers (chunks of `images`);
 * 1: cuDNN's bf16 path, whose bound has one more rounding (u of the result, itself within
 * the GEMM's bound of the fp32 one); there din starts non-zero (the call must write it). */
static void check_conv_bf16_path(const char *name, int cudnn, int B, int S, int Ci, int H,
                                 int W, int Co, int K, int stride, int pad, int images)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    int kk = Ci * K * K, ldw = S * kk;
    size_t slot = (size_t)B * Ci * H * W, n_in = slot * S, n_w = (size_t)Co * ldw;
    size_t n_out = (size_t)B * Co * Ho * Wo, n_col = tower_conv_col_size(Ci, H, W, K, stride, pad);
    size_t sb = tower_k_conv_scratch_bf16_of(Ci, Co, K, Ho, Wo, images, 1).bytes;
    float *in = frand(n_in, 41, 1), *w = frand(n_w, 42, 0.3f), *b = frand(Co, 43, 0.1f);
    float *dout = frand(n_out, 44, 1);
    float *a_in = fdup(in, n_in), *a_w = fdup(w, n_w), *a_b = fdup(b, Co), *a_dout = fdup(dout, n_out);
    tt_abs(a_in, n_in), tt_abs(a_w, n_w), tt_abs(a_b, Co), tt_abs(a_dout, n_out);
    uint16_t *wb = to_bf16(w, n_w);
    float *out = fnew(n_out), *out2 = fnew(n_out), *aout = fnew(n_out);
    float *din = fnew(n_in), *din2 = fnew(n_in), *adin = fnew(n_in);
    /* dw2 and db2 hold garbage: the backward writes them (accumulate_dw 0) */
    float *dw = fnew(n_w), *dw2 = frand(n_w, 45, 7.0f), *adw = fnew(n_w);
    float *db = fnew(Co), *db2 = frand(Co, 46, 7.0f), *adb = fnew(Co), *col = fnew(n_col);
    char *scratch = calloc(sb, 1);
    cr_assert_not_null(scratch);
    char what[96];
    const char *path = cudnn ? "cuDNN bf16" : "bf16";
    for (int s = 0; s < S; s++) {
        tower_conv_forward(out, in + s * slot, w + (size_t)s * kk, s ? NULL : b, B, Ci, H, W,
                           Co, K, stride, pad, ldw, s > 0, col);
        tower_conv_forward(aout, a_in + s * slot, a_w + (size_t)s * kk, s ? NULL : a_b, B, Ci,
                           H, W, Co, K, stride, pad, ldw, s > 0, col);
        if (cudnn)
            emu_cudnn_forward_bf16(out2, in + s * slot, wb + (size_t)s * kk, s ? NULL : b, B,
                                   Ci, H, W, Co, K, stride, pad, ldw, s > 0, s == S - 1);
        else
            emu_conv_forward_bf16(out2, in + s * slot, wb + (size_t)s * kk, s ? NULL : b, B, Ci,
                                  H, W, Co, K, stride, pad, ldw, s > 0, s == S - 1, scratch, sb,
                                  images);
    }
    tower_relu_forward(out, out, n_out);
    double f = tt_bf16_factor((long)S * kk + 1), r = cudnn ? TT_BF16_U : 0.0;
    snprintf(what, sizeof what, "%s %s forward", name, path);
    cr_assert(tt_bf16_within(what, out2, out, aout, n_out, f + r * (1 + f)));
    float *dact = fdup(dout, n_out), *adact = fdup(a_dout, n_out);
    tower_relu_backward(dact, dact, out, n_out);
    tower_relu_backward(adact, adact, out, n_out);
    /* din2 starts at 1 in the first source's slot: the call writes it (accumulate_din 0,
     * as net.c's loop calls it, each source into its own slot); the add's accumulating
     * form is checked exactly in cudnn_bf16_passes */
    for (size_t i = 0; cudnn && i < slot; i++) din2[i] = 1.0f;
    for (int s = 0; s < S; s++) {
        tower_conv_backward(din + s * slot, dw + (size_t)s * kk, s ? NULL : db, dact,
                            in + s * slot, w + (size_t)s * kk, B, Ci, H, W, Co, K, stride, pad,
                            ldw, 0, col);
        tower_conv_backward(adin + s * slot, adw + (size_t)s * kk, s ? NULL : adb, adact,
                            a_in + s * slot, a_w + (size_t)s * kk, B, Ci, H, W, Co, K, stride,
                            pad, ldw, 0, col);
        if (cudnn)
            emu_cudnn_backward_bf16(din2 + s * slot, dw2 + (size_t)s * kk, s ? NULL : db2, dout,
                                    out, in + s * slot, wb + (size_t)s * kk, B, Ci, H, W, Co, K,
                                    stride, pad, ldw, 0, 0);
        else
            emu_conv_backward_bf16(din2 + s * slot, dw2 + (size_t)s * kk, s ? NULL : db2, dout,
                                   out, in + s * slot, wb + (size_t)s * kk, B, Ci, H, W, Co, K,
                                   stride, pad, ldw, 0, 0, scratch, sb, images);
    }
    long kd = (long)Co * K * K, kw = (long)B * Ho * Wo;
    double fd = tt_bf16_factor(kd), fw = tt_bf16_factor(kw);
    snprintf(what, sizeof what, "%s %s backward din", name, path);
    cr_assert(tt_bf16_within(what, din2, din, adin, n_in, fd + r * (1 + fd)));
    snprintf(what, sizeof what, "%s %s backward dw", name, path);
    cr_assert(tt_bf16_within(what, dw2, dw, adw, n_w, fw + r * (1 + fw)));
    snprintf(what, sizeof what, "%s %s backward db", name, path);
    cr_assert(tt_bf16_within(what, db2, db, adb, Co, fw));
    free(dact), free(adact), free(scratch);
    free(in), free(w), free(b), free(dout), free(a_in), free(a_w), free(a_b), free(a_dout), free(wb);
    free(out), free(out2), free(aout), free(din), free(din2), free(adin);
    free(dw), free(dw2), free(adw), free(db), free(db2), free(adb), free(col);
}

Test(cuda_kernels_host, cudnn_bf16_11x11_stride4_pad2) { check_conv_bf16_path("conv 11x11/4 p2", 1, 3, 1, 3, 35, 35, 5, 11, 4, 2, 2); }
Test(cuda_kernels_host, cudnn_bf16_5x5_pad2) { check_conv_bf16_path("conv 5x5 p2", 1, 2, 1, 4, 13, 13, 6, 5, 1, 2, 1); }
Test(cuda_kernels_host, cudnn_bf16_3x3_two_sources) { check_conv_bf16_path("conv 3x3 p1, 2 sources", 1, 5, 2, 3, 7, 7, 4, 3, 1, 1, 2); }
Test(cuda_kernels_host, cudnn_bf16_paper_conv2) { check_conv_bf16_path("conv2 5x5 p2 27, 48 -> 128", 1, 2, 1, 48, 27, 27, 128, 5, 1, 2, 2); }

/* The passes' arithmetic exactly: the output is y + prev + b in that order, then the ReLU;
 * the gradient is to_cnhw_bf16's value in place; the adds write or add the widened bf16,
 * and the block add touches only its (rows, kk) block of the (rows, ld) matrix. */
Test(cuda_kernels_host, cudnn_bf16_passes)
{
    enum { B = 2, C = 3, HW = 5, N = B * C * HW, KK = 4, LD = 7, ROWS = 3 };
    float prev[N], b[C] = {0.5f, -1.25f, 2.0f}, dout[N], act[N];
    uint16_t y[N], g[N];
    for (int i = 0; i < N; i++) {
        y[i] = tower_k_bf16(0.1f * (float)(i - 11));
        prev[i] = 0.03f * (float)(i % 7);
        dout[i] = 0.7f - 0.05f * (float)i;
        act[i] = (i % 3) ? 0.2f * (float)i : 0.0f;
    }
    tower_k_div dc = tower_k_div_of(C), dhw = tower_k_div_of(HW);
    for (uint32_t i = 0; i < N; i++) {
        int c = (int)(i / HW) % C;
        float yv = tower_k_bf16_float(y[i]);
        cr_assert_eq(tower_k_cudnn_out(y, prev, b, i, dc, dhw, 0), yv + b[c]);
        cr_assert_eq(tower_k_cudnn_out(y, prev, NULL, i, dc, dhw, 1), yv + prev[i]);
        cr_assert_eq(tower_k_cudnn_out(y, prev, b, i, dc, dhw, 1), (yv + prev[i]) + b[c]);
        tower_k_grad_bf16(g, dout, tower_k_src_f32(act), i);
        cr_assert_eq(g[i], tower_k_bf16(act[i] > 0.0f ? dout[i] : 0.0f), "at %u", i);
        tower_k_grad_bf16(g, dout, tower_k_src_f32(NULL), i);
        cr_assert_eq(g[i], tower_k_bf16(dout[i]));
        float d[1] = {3.0f};
        tower_k_add_bf16(d, &y[i], 0, 0);
        cr_assert_eq(d[0], yv);
        tower_k_add_bf16(d, &y[i], 0, 1);
        cr_assert_eq(d[0], yv + yv);
        /* a kept activation: the same output through the ReLU, then rounded: the bits the
         * next conv's cast of the fp32 output makes (the input hand-over); its mask */
        uint16_t kept[N], ab[N], cast[N];
        for (int acc = 0; acc < 2; acc++) {
            float v = tower_k_cudnn_out(y, prev, b, i, dc, dhw, acc), out[N];
            tower_k_cudnn_act_bf16(kept, y, prev, b, i, dc, dhw, acc);
            cr_assert_eq(kept[i], tower_k_bf16(v > 0.0f ? v : 0.0f), "at %u", i);
            out[i] = tower_k_relu(v); /* cudnn_out_bf16_kernel's value, then the cast */
            tower_k_cast_bf16(cast, out, i);
            cr_assert_eq(kept[i], cast[i], "at %u: not the cast's bits", i);
        }
        ab[i] = tower_k_bf16(act[i]);
        tower_k_grad_bf16(g, dout, tower_k_src_of(ab, 1), i);
        cr_assert_eq(g[i], tower_k_bf16(tower_k_bf16_float(ab[i]) > 0.0f ? dout[i] : 0.0f));
    }
    float dw[ROWS * LD];
    uint16_t blk[ROWS * KK];
    for (int i = 0; i < ROWS * LD; i++) dw[i] = (float)i;
    for (int i = 0; i < ROWS * KK; i++) blk[i] = tower_k_bf16(0.25f * (float)(i + 1));
    tower_k_div dk = tower_k_div_of(KK);
    for (int acc = 1; acc >= 0; acc--) { /* added to, then written over */
        for (int i = 0; i < ROWS * LD; i++) dw[i] = (float)i;
        for (uint32_t i = 0; i < ROWS * KK; i++) tower_k_add_bf16_block(dw + 2, LD, blk, i, dk, acc);
        for (int r = 0; r < ROWS; r++)
            for (int c = 0; c < LD; c++) {
                float want = (float)(r * LD + c), v = 0.25f * (float)(r * KK + (c - 2) + 1);
                if (c >= 2 && c < 2 + KK) want = acc ? want + v : v;
                cr_assert_eq(dw[r * LD + c], want, "accumulate %d: dw[%d][%d] %g, want %g", acc,
                             r, c, dw[r * LD + c], want);
            }
    }
}

Test(cuda_kernels_host, conv_bf16_11x11_stride4_pad2) { check_conv_bf16_path("conv 11x11/4 p2", 0, 3, 1, 3, 35, 35, 5, 11, 4, 2, 2); }
Test(cuda_kernels_host, conv_bf16_5x5_pad2) { check_conv_bf16_path("conv 5x5 p2", 0, 2, 1, 4, 13, 13, 6, 5, 1, 2, 1); }
Test(cuda_kernels_host, conv_bf16_3x3_two_sources) { check_conv_bf16_path("conv 3x3 p1, 2 sources", 0, 5, 2, 3, 7, 7, 4, 3, 1, 1, 2); }
Test(cuda_kernels_host, conv_bf16_paper_conv2) { check_conv_bf16_path("conv2 5x5 p2 27, 48 -> 128", 0, 2, 1, 48, 27, 27, 128, 5, 1, 2, 2); }

/* fc with bf16 operands, two sources, emulated as the tower runs tower_fc_*_bf16_cuda (the
 * sources' input cast once into one bf16 buffer, which the backward reads again; the output
 * gradient cast once for both sources; the fp32 bias and bias gradient) against the fp32 CPU */
Test(cuda_kernels_host, fc_bf16_two_sources)
{
    int B = 3, Cin = 300, Cout = 5, S = 2, ldw = S * Cin;
    size_t slot = (size_t)B * Cin, n_in = slot * S, n_w = (size_t)Cout * ldw, n_out = (size_t)B * Cout;
    float *in = frand(n_in, 51, 1), *w = frand(n_w, 52, 0.3f), *b = frand(Cout, 53, 0.1f);
    float *dout = frand(n_out, 54, 1);
    float *a_in = fdup(in, n_in), *a_w = fdup(w, n_w), *a_b = fdup(b, Cout), *a_dout = fdup(dout, n_out);
    tt_abs(a_in, n_in), tt_abs(a_w, n_w), tt_abs(a_b, Cout), tt_abs(a_dout, n_out);
    uint16_t *wb = to_bf16(w, n_w), *xb = to_bf16(in, n_in), *gb = to_bf16(dout, n_out);
    float *out = fnew(n_out), *out2 = fnew(n_out), *aout = fnew(n_out);
    float *din = fnew(n_in), *din2 = fnew(n_in), *adin = fnew(n_in);
    float *dw = fnew(n_w), *dw2 = fnew(n_w), *adw = fnew(n_w);
    float *db = fnew(Cout), *db2 = fnew(Cout), *adb = fnew(Cout);
    for (int s = 0; s < S; s++) {
        tower_fc_forward(out, in + s * slot, w + (size_t)s * Cin, s ? NULL : b, B, Cin, Cout,
                         ldw, s > 0);
        tower_fc_forward(aout, a_in + s * slot, a_w + (size_t)s * Cin, s ? NULL : a_b, B, Cin,
                         Cout, ldw, s > 0);
        emu_gemm_bf16_rm(0, 1, B, Cout, Cin, 1.0f, xb + s * slot, Cin, wb + (size_t)s * Cin, ldw,
                         s > 0 ? 1.0f : 0.0f, out2, Cout);
        if (!s)
            for (uint32_t i = 0; i < (uint32_t)(B * Cout); i++)
                out2[i] += b[tower_k_channel(i, tower_k_div_of((uint32_t)Cout), tower_k_div_of(1))];
    }
    cr_assert(tt_bf16_within("fc bf16 forward", out2, out, aout, n_out,
                             tt_bf16_factor((long)S * Cin + 1)));
    for (int s = 0; s < S; s++) {
        tower_fc_backward(din + s * slot, dw + (size_t)s * Cin, s ? NULL : db, dout, in + s * slot,
                          w + (size_t)s * Cin, B, Cin, Cout, ldw, 0);
        tower_fc_backward(adin + s * slot, adw + (size_t)s * Cin, s ? NULL : adb, a_dout,
                          a_in + s * slot, a_w + (size_t)s * Cin, B, Cin, Cout, ldw, 0);
        emu_gemm_bf16_rm(0, 0, B, Cin, Cout, 1.0f, gb, Cout, wb + (size_t)s * Cin, ldw, 0.0f,
                         din2 + s * slot, Cin);
        emu_gemm_bf16_rm(1, 0, Cout, Cin, B, 1.0f, gb, Cout, xb + s * slot, Cin, 1.0f,
                         dw2 + (size_t)s * Cin, ldw);
        if (!s)
            for (int o = 0; o < Cout; o++) db2[o] = tower_k_fc_bias_grad(dout, db2[o], o, B, Cout);
    }
    cr_assert(tt_bf16_within("fc bf16 backward din", din2, din, adin, n_in, tt_bf16_factor(Cout)));
    cr_assert(tt_bf16_within("fc bf16 backward dw", dw2, dw, adw, n_w, tt_bf16_factor(B)));
    expect_close("fc bf16 backward db (fp32, bit-identical)", db2, db, Cout, 0);
    free(in), free(w), free(b), free(dout), free(a_in), free(a_w), free(a_b), free(a_dout);
    free(wb), free(xb), free(gb), free(out), free(out2), free(aout), free(din), free(din2);
    free(adin), free(dw), free(dw2), free(adw), free(db), free(db2), free(adb);
}

/* ---- the 32-bit index arithmetic ------------------------------------------------------ */

/* tower_k_quo against the division it replaces: every divisor up to 3000 with every
 * numerator up to 3000 and the 200 below 2^31; then divisors at and around every power of
 * two up to 2^31 and random ones, each with numerators at the edges and random ones */
static void expect_quo(tower_k_div v, uint32_t n)
{
    if (tower_k_quo(v, n) != n / v.d)
        cr_assert_fail("%u / %u: got %u", n, v.d, tower_k_quo(v, n));
}

Test(cuda_kernels_host, divider)
{
    for (uint32_t d = 1; d <= 3000; d++) {
        tower_k_div v = tower_k_div_of(d);
        for (uint32_t n = 0; n <= 3000; n++)
            expect_quo(v, n);
        for (uint32_t n = INT32_MAX - 199; n <= (uint32_t)INT32_MAX; n++)
            expect_quo(v, n);
    }
    uint32_t ds[3 * 32 + 1000];
    int nd = 0;
    for (int k = 0; k <= 31; k++) {
        uint32_t p = (uint32_t)1 << k;
        ds[nd++] = p;
        ds[nd++] = p + 1;
        if (p > 1) ds[nd++] = p - 1;
    }
    for (int j = 0; j < 1000; j++) ds[nd++] = 1 + (uint32_t)(base_rng_mix(101, j) % INT32_MAX);
    for (int j = 0; j < nd; j++) {
        uint32_t d = ds[j];
        if (d > (uint32_t)1 << 31) continue;
        tower_k_div v = tower_k_div_of(d);
        uint32_t edge[] = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, INT32_MAX, INT32_MAX - 1,
                           INT32_MAX - d + 1, INT32_MAX / d * d, INT32_MAX / d * d - 1};
        for (size_t e = 0; e < sizeof edge / sizeof edge[0]; e++) {
            uint32_t n = edge[e];
            if (n > (uint32_t)INT32_MAX) continue;
            expect_quo(v, n);
        }
        for (int r = 0; r < 2000; r++) {
            uint32_t n = (uint32_t)(base_rng_mix(102 + j, r) % ((uint64_t)INT32_MAX + 1));
            expect_quo(v, n);
        }
    }
    /* an empty axis keeps its size 0 (the kernels' bounds) and divides as by 1 */
    cr_assert(tower_k_div_of(0).d == 0 && tower_k_quo(tower_k_div_of(0), 17) == 17);
}

/* the transposing passes' index and the bias channel, every element of awkward shapes */
Test(cuda_kernels_host, cnhw_index_and_channel)
{
    int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {32, 48, 3025}, {5, 300, 9}, {2, 7, 1}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int nb = shapes[k][0], C = shapes[k][1], HW = shapes[k][2];
        tower_k_cnhw t = tower_k_cnhw_make(nb, C, HW);
        tower_k_div dc = tower_k_div_of((uint32_t)C), dhw = tower_k_div_of((uint32_t)HW);
        uint32_t i = 0;
        for (int n = 0; n < nb; n++)
            for (int c = 0; c < C; c++)
                for (int p = 0; p < HW; p++, i++) {
                    uint32_t ch, at = tower_k_cnhw_at(i, t, &ch);
                    if (ch != (uint32_t)c || at != ((uint32_t)c * nb + n) * HW + p ||
                        tower_k_channel(i, dc, dhw) != (uint32_t)c)
                        cr_assert_fail("(%d, %d, %d) of (%d, %d, %d): channel %u, at %u", n,
                                       c, p, nb, C, HW, ch, at);
                }
    }
}

/* The chunk's im2col (one thread per channel and column, tower_k_im2col_taps over every
 * position) against layers_cpu.c's tower_im2col of each image, and the chunk's col2im
 * (tower_k_col2im_pixel over every pixel, from random starting values) against
 * tower_col2im adding onto the same values: bit for bit, every element. */
static void check_im2col(const char *name, int nb, int Ci, int H, int W, int K, int S, int P)
{
    int Ho = tower_conv_out(H, K, S, P), Wo = tower_conv_out(W, K, S, P);
    size_t HWo = (size_t)Ho * Wo, nq = nb * HWo, CKK = (size_t)Ci * K * K;
    size_t nin = (size_t)Ci * H * W, ncol = CKK * nq;
    tower_k_conv_geom g;
    cr_assert_eq(tower_k_conv_geom_make(&g, nb, Ci, H, W, K, S, P, Ho, Wo), 0);
    float *in = frand(nb * nin, 111, 1), *col = fnew(ncol), *ref = fnew(ncol);
    for (size_t i = 0; i < ncol; i++) col[i] = NAN; /* a tap left unwritten shows */
    for (int n = 0; n < nb; n++) tower_im2col(ref + n * HWo, nq, in + n * nin, Ci, H, W, K, S, P);
    for (uint32_t e = 0; e < (uint32_t)(Ci * nq); e++) tower_k_im2col_taps(col, in, e, g);
    cr_assert(memcmp(col, ref, sizeof(float) * ncol) == 0, "%s: im2col differs", name);
    /* the bf16 col: every entry the fp32 one rounded (tower_k_bf16), bit for bit */
    uint16_t *colb = calloc(ncol ? ncol : 1, sizeof(uint16_t));
    cr_assert_not_null(colb);
    for (size_t i = 0; i < ncol; i++) colb[i] = 0xffff; /* a NaN: an unwritten tap shows */
    for (uint32_t e = 0; e < (uint32_t)(Ci * nq); e++) tower_k_im2col_taps_bf16(colb, in, e, g);
    for (size_t i = 0; i < ncol; i++)
        if (colb[i] != tower_k_bf16(ref[i]))
            cr_assert_fail("%s: bf16 im2col entry %zu is %#06x, the fp32 entry %.9g rounds to "
                           "%#06x", name, i, colb[i], ref[i], tower_k_bf16(ref[i]));
    free(colb);

    float *dcol = frand(ncol, 112, 1), *start = frand(nb * nin, 113, 1);
    float *din = fnew(nb * nin), *dref = fdup(start, nb * nin);
    for (int n = 0; n < nb; n++)
        tower_col2im(dref + n * nin, dcol + n * HWo, nq, Ci, H, W, K, S, P);
    for (uint32_t e = 0; e < (uint32_t)(nb * nin); e++)
        din[e] = tower_k_col2im_pixel(dcol, start[e], e, g);
    cr_assert(memcmp(din, dref, sizeof(float) * nb * nin) == 0, "%s: col2im differs", name);
    printf("%-40s col %zu x %zu, din %zu: bit-identical\n", name, CKK, nq, nb * nin);
    free(in), free(col), free(ref), free(dcol), free(start), free(din), free(dref);
}

/* the paper's layers for one image and for a chunk of three, then awkward shapes */
Test(cuda_kernels_host, im2col_col2im_paper_conv1) { check_im2col("conv1 11x11/4 p2 224", 1, 3, 224, 224, 11, 4, 2); }
Test(cuda_kernels_host, im2col_col2im_paper_conv2) { check_im2col("conv2 5x5 p2 27, 3 images", 3, 48, 27, 27, 5, 1, 2); }
Test(cuda_kernels_host, im2col_col2im_paper_conv3) { check_im2col("conv3 3x3 p1 13", 1, 256, 13, 13, 3, 1, 1); }
Test(cuda_kernels_host, im2col_col2im_awkward)
{
    check_im2col("3x3/2 p1 9x12, 2 images", 2, 2, 9, 12, 3, 2, 1);
    check_im2col("2x2/3 (pixels no tap reaches) 10x7", 2, 3, 10, 7, 2, 3, 0);
    check_im2col("3x3 p3 (rows of padding) 4x5", 1, 2, 4, 5, 3, 1, 3);
    check_im2col("1x1 5x6, 3 images", 3, 4, 5, 6, 1, 1, 0);
    check_im2col("5x5/2 p1 one output row 5x17", 2, 3, 5, 17, 5, 2, 1);
    check_im2col("7x7/3 p2 23x23", 1, 3, 23, 23, 7, 3, 2);
    check_im2col("3x3 on 2x2: no output", 2, 2, 2, 2, 3, 1, 0);
}

/* a chunk the 32-bit indices cannot reach is refused; the paper's largest chunks are not */
Test(cuda_kernels_host, conv_geometry_bounds)
{
    tower_k_conv_geom g;
    cr_assert_eq(tower_k_conv_geom_make(&g, 32, 3, 224, 224, 11, 4, 2, 55, 55), 0);
    cr_assert_eq(tower_k_conv_geom_make(&g, 32, 48, 27, 27, 5, 1, 2, 27, 27), 0);
    cr_assert_eq(tower_k_conv_geom_make(&g, 32, 256, 13, 13, 3, 1, 1, 13, 13), 0);
    cr_assert_eq(tower_k_conv_geom_make(&g, 200, 256, 224, 224, 3, 1, 1, 224, 224), -1); /* col */
    cr_assert_eq(tower_k_conv_geom_make(&g, 50000, 256, 224, 224, 224, 1, 0, 1, 1), -1); /* input */
    cr_assert(tower_k_fits32(INT32_MAX) && !tower_k_fits32((size_t)INT32_MAX + 1));
}

/* LRN: the paper's layers for one image, a few channels fewer than the window, a batch */
static void check_lrn(int B, int C, int HW)
{
    int half = TOWER_LRN_N / 2;
    size_t n = (size_t)B * C * HW;
    float k = (float)TOWER_LRN_K, a = (float)TOWER_LRN_ALPHA, be = (float)TOWER_LRN_BETA;
    float *in = frand(n, 31, 30), *dout = frand(n, 32, 1);
    float *out = fnew(n), *scale = fnew(n), *din = fnew(n);
    float *out2 = fnew(n), *scale2 = fnew(n), *din2 = fnew(n);
    tower_k_div dc = tower_k_div_of((uint32_t)C), dhw = tower_k_div_of((uint32_t)HW);
    char what[80];
    tower_lrn_forward(out, scale, in, B, C, HW, TOWER_LRN_N, k, a, be);
    for (uint32_t i = 0; i < (uint32_t)n; i++)
        out2[i] = tower_k_lrn_forward(scale2, in, i, dc, dhw, half, k, a, be);
    snprintf(what, sizeof what, "lrn forward out (%d, %d, %d)", B, C, HW);
    expect_close(what, out2, out, n, 0);
    snprintf(what, sizeof what, "lrn forward scale (%d, %d, %d)", B, C, HW);
    expect_close(what, scale2, scale, n, 0);
    tower_lrn_backward(din, dout, in, out, scale, B, C, HW, TOWER_LRN_N, k, a, be);
    for (uint32_t i = 0; i < (uint32_t)n; i++)
        din2[i] = tower_k_lrn_backward(dout, in, out, scale, i, dc, dhw, half, a, be);
    snprintf(what, sizeof what, "lrn backward (%d, %d, %d)", B, C, HW);
    expect_close(what, din2, din, n, 0);
    free(in), free(dout), free(out), free(scale), free(din), free(out2), free(scale2), free(din2);
}

Test(cuda_kernels_host, lrn) { check_lrn(2, 11, 10); }
Test(cuda_kernels_host, lrn_paper_conv1) { check_lrn(1, 48, 55 * 55); }
Test(cuda_kernels_host, lrn_paper_conv2) { check_lrn(1, 128, 27 * 27); }
Test(cuda_kernels_host, lrn_few_channels)
{
    check_lrn(3, 3, 7);
    check_lrn(2, 1, 5);
}

static void check_pool(int B, int C, int H, int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * C * Ho * Wo;
    float *in = frand(n_in, 41, 1), *dout = frand(n_out, 42, 1);
    for (size_t i = 0; i < n_in; i += 3) in[i] = 0; /* ties */
    float *out = fnew(n_out), *out2 = fnew(n_out), *din = fnew(n_in), *din2 = fnew(n_in);
    int32_t *idx = calloc(n_out, sizeof(int32_t)), *idx2 = calloc(n_out, sizeof(int32_t));
    cr_assert(idx && idx2);
    tower_k_pool g = tower_k_pool_make(H, W, K, S);
    cr_assert(g.Ho == Ho && g.Wo == Wo);
    char what[80];
    tower_maxpool_forward(out, idx, in, B, C, H, W, K, S);
    for (uint32_t i = 0; i < (uint32_t)n_out; i++)
        out2[i] = tower_k_maxpool_forward(in, i, g, &idx2[i]);
    snprintf(what, sizeof what, "maxpool %dx%d/%d forward (%d, %d, %d, %d)", K, K, S, B, C, H, W);
    expect_close(what, out2, out, n_out, 0);
    cr_assert_arr_eq(idx2, idx, sizeof(int32_t) * n_out, "max-pool indices differ");
    tower_maxpool_backward(din, dout, idx, B, C, H, W, K, S);
    for (size_t i = 0; i < n_in; i++) din2[i] = NAN; /* every element is a cell's to write */
    size_t cells = tower_k_pool_cells(B, C, g);
    cr_assert_eq(cells, (size_t)B * C * ((H + S - 1) / S) * ((W + S - 1) / S));
    for (uint32_t e = 0; e < (uint32_t)cells; e++)
        tower_k_maxpool_backward_cell(din2, dout, idx, e, g);
    snprintf(what, sizeof what, "maxpool %dx%d/%d backward (%d, %d, %d, %d)", K, K, S, B, C, H, W);
    expect_close(what, din2, din, n_in, 0);
    free(in), free(dout), free(out), free(out2), free(din), free(din2), free(idx), free(idx2);
}

#define PK TOWER_POOL_K
#define PS TOWER_POOL_STRIDE
Test(cuda_kernels_host, maxpool_odd_planes) { check_pool(2, 3, 13, 13, PK, PS); }  /* conv5 -> 6 */
Test(cuda_kernels_host, maxpool_even_non_square) { check_pool(1, 2, 12, 9, PK, PS); } /* edge rows unused */
Test(cuda_kernels_host, maxpool_paper_sizes)
{
    check_pool(1, 4, 55, 55, PK, PS);
    check_pool(1, 5, 27, 27, PK, PS);
}
/* the net descriptions' other poolings: non-overlapping, stride 1, a window wider than
 * twice the stride, a stride wider than the window */
Test(cuda_kernels_host, maxpool_other_windows)
{
    check_pool(2, 3, 8, 10, 2, 2);
    check_pool(1, 2, 7, 6, 3, 1);
    check_pool(1, 2, 11, 12, 5, 2);
    check_pool(2, 2, 11, 10, 2, 3); /* gaps: rows no window covers */
}

/* ---- LRN then max-pool, fused (kernels.h): lrn_maxpool_forward_kernel and
 * lrn_maxpool_backward_kernel emulated tile by tile, every thread of a block in turn and
 * phase 1 before phase 2 (the barrier), shared memory a buffer poisoned before each tile
 * (+inf in forward, where a read would win a window; NaN in backward), so a read of
 * anything the tile did not write shows. Against layers_cpu.c's LRN then max-pool: the
 * pooled output, argmax, pw (= tower_lrn_pow(scale, beta) for every element: each one written)
 * and din bit for bit; out16 (NULL, or the pooled output in bf16 too): out rounded, bit for
 * bit. */
static void emu_lrn_maxpool_forward(float *out, uint16_t *out16, int32_t *idx, float *pw,
                                    tower_k_src in, tower_k_lrnpool g)
{
    float *tile = fnew((size_t)g.tile_floats);
    for (uint32_t t = 0; t < g.fwd_tiles; t++) {
        tower_k_lrnpool_ftile f = tower_k_lrnpool_ftile_at(t, g);
        for (int i = 0; i < g.tile_floats; i++) tile[i] = INFINITY;
        uint32_t n1 = (uint32_t)(f.np - 1) * g.hw.d + (uint32_t)f.rows * g.p.w.d;
        uint32_t n2 = (uint32_t)(f.np - 1) * g.howo.d + (uint32_t)f.noh * g.p.wo.d;
        cr_assert(n1 <= (uint32_t)g.tile_floats, "tile %u: %u elements, %d floats", t, n1,
                  g.tile_floats);
        for (uint32_t e = 0; e < n1; e++) /* the launcher's two kernels: beta 0.75 a constant */
            tower_k_lrnpool_fwd_lrn(tile, pw, in, e, f, g, g.beta == 0.75f ? 0.75f : g.beta);
        for (uint32_t o = 0; o < n2; o++)
            tower_k_lrnpool_fwd_pool(out, out16, idx, tile, o, f, g);
    }
    free(tile);
}

/* gb: NULL, or the bf16 gradient lrn_maxpool_backward_g_kernel also writes (din then may
 * be NULL) */
static void emu_lrn_maxpool_backward(float *din, uint16_t *gb, const float *dpool,
                                     const int32_t *idx, tower_k_src in, const float *pw,
                                     tower_k_lrnpool g)
{
    enum { P = TOWER_K_LRNPOOL_P, LANES = TOWER_K_LRNPOOL_LANES };
    size_t nsh = (size_t)g.nj_max * P;
    float *terms = fnew(nsh), *dls = fnew(nsh);
    for (uint32_t t = 0; t < g.bwd_tiles; t++) {
        tower_k_lrnpool_btile v = tower_k_lrnpool_btile_at(t, g);
        cr_assert(v.jhi - v.jlo + 1 <= g.nj_max && v.c1 - v.c0 <= g.G);
        for (size_t i = 0; i < nsh; i++) terms[i] = dls[i] = NAN;
        for (int ty = 0; ty < LANES; ty++)
            for (int pp = 0; pp < v.np; pp++) {
                uint32_t pos = v.p0 + (uint32_t)pp;
                tower_k_pool_win win = tower_k_lrnpool_windows(pos, g);
                for (int jj = ty; jj <= v.jhi - v.jlo; jj += LANES) {
                    int at = jj * P + pp;
                    dls[at] = tower_k_lrnpool_bwd_term(&terms[at], dpool, idx, in, pw, v.b,
                                                       v.jlo + jj, pos, win, g);
                }
            }
        for (int ty = 0; ty < LANES; ty++)
            for (int pp = 0; pp < v.np; pp++)
                for (int c = v.c0 + ty; c < v.c1; c += LANES) {
                    float dl = dls[(c - v.jlo) * P + pp];
                    if (gb)
                        tower_k_lrnpool_bwd_din_g(din, gb, terms + pp, dl, in, pw, v.b, c,
                                                  v.p0 + (uint32_t)pp, v.jlo, g);
                    else
                        tower_k_lrnpool_bwd_din(din, terms + pp, dl, in, pw, v.b, c,
                                                v.p0 + (uint32_t)pp, v.jlo, g);
                }
    }
    free(terms), free(dls);
}

/* The same fused passes reading a kept bf16 input (a row keeping its ReLU's output in bf16
 * only, net_cuda.cu): bit for bit layers_cpu.c's LRN then max-pool of the widened input,
 * and the bf16 gradient with din not written (the step's hand-over) the one written with
 * it, masked by the bf16 input. */
static void check_lrn_pool_kept(const float *in, const float *dpool, tower_k_lrnpool g, int B,
                                int C, int H, int W, int n, int K, int S, const char *what)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * C * Ho * Wo;
    float k = g.k, a = g.alpha, be = g.beta;
    uint16_t *inb = to_bf16(in, n_in), *gb = calloc(n_in, sizeof(uint16_t));
    uint16_t *gref = calloc(n_in, sizeof(uint16_t));
    float *inw = fnew(n_in), *lrn = fnew(n_in), *scale = fnew(n_in), *out = fnew(n_out);
    float *dlrn = fnew(n_in), *din = fnew(n_in), *out2 = fnew(n_out), *pw = fnew(n_in);
    float *din2 = fnew(n_in);
    int32_t *idx = calloc(n_out, sizeof(int32_t)), *idx2 = calloc(n_out, sizeof(int32_t));
    cr_assert(gb && gref && idx && idx2);
    for (size_t i = 0; i < n_in; i++) inw[i] = tower_k_bf16_float(inb[i]), din2[i] = NAN;
    for (size_t i = 0; i < n_out; i++) out2[i] = NAN, idx2[i] = -1;
    tower_lrn_forward(lrn, scale, inw, B, C, H * W, n, k, a, be);
    tower_maxpool_forward(out, idx, lrn, B, C, H, W, K, S);
    emu_lrn_maxpool_forward(out2, NULL, idx2, pw, tower_k_src_of(inb, 1), g);
    char w2[160];
    snprintf(w2, sizeof w2, "lrn+pool fwd, bf16 input, %s", what);
    expect_close(w2, out2, out, n_out, 0);
    cr_assert_arr_eq(idx2, idx, sizeof(int32_t) * n_out, "%s: argmax differs", w2);
    tower_maxpool_backward(dlrn, dpool, idx, B, C, H, W, K, S);
    tower_lrn_backward(din, dlrn, inw, lrn, scale, B, C, H * W, n, k, a, be);
    emu_lrn_maxpool_backward(din2, NULL, dpool, idx2, tower_k_src_of(inb, 1), pw, g);
    snprintf(w2, sizeof w2, "lrn+pool bwd, bf16 input, %s", what);
    expect_close(w2, din2, din, n_in, 0);
    memset(gb, 0xff, sizeof(uint16_t) * n_in); /* every element must be written */
    emu_lrn_maxpool_backward(NULL, gb, dpool, idx2, tower_k_src_of(inb, 1), pw, g);
    for (uint32_t i = 0; i < (uint32_t)n_in; i++)
        tower_k_grad_bf16(gref, din, tower_k_src_of(inb, 1), i);
    cr_assert_eq(memcmp(gb, gref, sizeof(uint16_t) * n_in), 0,
                 "%s: the bf16 gradient with din not written", w2);
    free(inb), free(gb), free(gref), free(inw), free(lrn), free(scale), free(out), free(dlrn);
    free(din), free(out2), free(pw), free(din2), free(idx), free(idx2);
}

/* signed: inputs of both signs (a tanh net's); else as after a ReLU, zeros included */
static void check_lrn_pool_beta(int B, int C, int H, int W, int n, int K, int S,
                                int tile_floats, int signed_in, float be)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * C * Ho * Wo;
    float k = (float)TOWER_LRN_K, a = (float)TOWER_LRN_ALPHA;
    float *in = frand(n_in, 61, 30), *dpool = frand(n_out, 62, 1);
    if (!signed_in)
        for (size_t i = 0; i < n_in; i++) in[i] = in[i] > 0 ? in[i] : 0; /* ties */
    float *lrn = fnew(n_in), *scale = fnew(n_in), *out = fnew(n_out), *dlrn = fnew(n_in);
    float *din = fnew(n_in), *out2 = fnew(n_out), *pw = fnew(n_in), *pw_ref = fnew(n_in);
    float *din2 = fnew(n_in);
    int32_t *idx = calloc(n_out, sizeof(int32_t)), *idx2 = calloc(n_out, sizeof(int32_t));
    cr_assert(idx && idx2);
    for (size_t i = 0; i < n_in; i++) pw[i] = din2[i] = NAN;
    for (size_t i = 0; i < n_out; i++) out2[i] = NAN, idx2[i] = -1;
    tower_k_lrnpool g;
    cr_assert_eq(tower_k_lrnpool_make(&g, B, C, H, W, n, k, a, be, K, S, tile_floats), 0,
                 "(%d, %d, %d, %d) n %d pool %d:%d tile %d refused", B, C, H, W, n, K, S,
                 tile_floats);
    cr_assert(g.tile_floats <= TOWER_K_LRNPOOL_SHARED);
    char what[96];
    snprintf(what, sizeof what, "(%d, %d, %d, %d) n %d %d:%d, %d planes x %d bands", B, C, H,
             W, n, K, S, g.np, (int)g.bands.d);
    tower_lrn_forward(lrn, scale, in, B, C, H * W, n, k, a, be);
    tower_maxpool_forward(out, idx, lrn, B, C, H, W, K, S);
    uint16_t *o16 = malloc(sizeof(uint16_t) * n_out);
    cr_assert(o16);
    memset(o16, 0xff, sizeof(uint16_t) * n_out); /* every one must be written */
    emu_lrn_maxpool_forward(out2, o16, idx2, pw, tower_k_src_f32(in), g);
    for (size_t i = 0; i < n_in; i++) pw_ref[i] = tower_lrn_pow(scale[i], be);
    char w2[128];
    snprintf(w2, sizeof w2, "lrn+pool fwd %s", what);
    expect_close(w2, out2, out, n_out, 0);
    for (size_t i = 0; i < n_out; i++)
        cr_assert_eq(o16[i], tower_k_bf16(out[i]), "%s: bf16 pooled output %zu: 0x%04x, want "
                     "0x%04x (%g rounded)", what, i, o16[i], tower_k_bf16(out[i]), out[i]);
    free(o16);
    cr_assert_arr_eq(idx2, idx, sizeof(int32_t) * n_out, "%s: argmax differs", what);
    snprintf(w2, sizeof w2, "lrn+pool pw %s", what);
    expect_close(w2, pw, pw_ref, n_in, 0);
    tower_maxpool_backward(dlrn, dpool, idx, B, C, H, W, K, S);
    tower_lrn_backward(din, dlrn, in, lrn, scale, B, C, H * W, n, k, a, be);
    emu_lrn_maxpool_backward(din2, NULL, dpool, idx2, tower_k_src_f32(in), pw, g);
    snprintf(w2, sizeof w2, "lrn+pool bwd %s", what);
    expect_close(w2, din2, din, n_in, 0);
    /* with the bf16 gradient: the same din, and gb is tower_k_grad_bf16 of it (in: the ReLU's
     * output, so in > 0 is the mask; a tanh net's signed inputs mask too, as the kernel
     * is only asked for after a ReLU) */
    uint16_t *gb = calloc(n_in, sizeof(uint16_t)), *gref = calloc(n_in, sizeof(uint16_t));
    cr_assert(gb && gref);
    memset(gb, 0xff, sizeof(uint16_t) * n_in); /* every element must be written */
    float *din3 = fnew(n_in);
    emu_lrn_maxpool_backward(din3, gb, dpool, idx2, tower_k_src_f32(in), pw, g);
    snprintf(w2, sizeof w2, "lrn+pool bwd with bf16 gradient %s", what);
    expect_close(w2, din3, din, n_in, 0);
    for (uint32_t i = 0; i < (uint32_t)n_in; i++)
        tower_k_grad_bf16(gref, din3, tower_k_src_f32(in), i);
    cr_assert_eq(memcmp(gb, gref, sizeof(uint16_t) * n_in), 0, "%s: the bf16 gradient", w2);
    check_lrn_pool_kept(in, dpool, g, B, C, H, W, n, K, S, what);
    free(gb), free(gref), free(din3);
    free(in), free(dpool), free(lrn), free(scale), free(out), free(dlrn), free(din), free(out2);
    free(pw), free(pw_ref), free(din2), free(idx), free(idx2);
}

static void check_lrn_pool(int B, int C, int H, int W, int n, int K, int S, int tile_floats,
                           int signed_in)
{
    check_lrn_pool_beta(B, C, H, W, n, K, S, tile_floats, signed_in, (float)TOWER_LRN_BETA);
}

#define LN TOWER_LRN_N
#define LT TOWER_K_LRNPOOL_TILE
Test(cuda_kernels_host, lrn_pool_paper_conv1) { check_lrn_pool(2, 48, 55, 55, LN, PK, PS, LT, 0); }
Test(cuda_kernels_host, lrn_pool_paper_conv2) { check_lrn_pool(2, 128, 27, 27, LN, PK, PS, LT, 0); }
/* rows and columns no window covers (their pw still written), non-square, signed inputs */
Test(cuda_kernels_host, lrn_pool_odd_edges)
{
    check_lrn_pool(3, 7, 12, 10, LN, PK, PS, LT, 0);
    check_lrn_pool(2, 9, 13, 11, LN, PK, PS, LT, 1);
}
/* planes larger than a tile: bands of one and of three pooled rows, the last band owning
 * the rows below the last window */
Test(cuda_kernels_host, lrn_pool_bands)
{
    check_lrn_pool(2, 5, 23, 17, LN, PK, PS, 60, 0);
    check_lrn_pool(2, 5, 24, 17, LN, PK, PS, 120, 1);
    check_lrn_pool(1, 3, 70, 71, LN, PK, PS, LT, 0);
}
/* fewer channels than the window, one channel, channel groups of TOWER_K_LRNPOOL_G (64)
 * with a short last one and with three, other windows, and tiles of many planes across
 * images */
Test(cuda_kernels_host, lrn_pool_channels)
{
    check_lrn_pool(2, 3, 9, 9, LN, PK, PS, LT, 0);
    check_lrn_pool(1, 1, 7, 7, LN, PK, PS, LT, 1);
    check_lrn_pool(2, 37, 9, 9, LN, PK, PS, LT, 0);
    check_lrn_pool(1, 70, 6, 6, 9, PK, PS, LT, 1);
    check_lrn_pool(1, 150, 5, 5, LN, PK, PS, LT, 0);
    check_lrn_pool(3, 10, 8, 8, 3, PK, PS, LT, 0);
}
/* a beta other than the paper's 0.75: the launcher's powf kernel */
Test(cuda_kernels_host, lrn_pool_other_beta)
{
    check_lrn_pool_beta(2, 48, 55, 55, LN, PK, PS, LT, 0, 0.5f);
    check_lrn_pool_beta(2, 9, 13, 11, LN, PK, PS, 60, 1, 0.6f);
}
Test(cuda_kernels_host, lrn_pool_other_windows)
{
    check_lrn_pool(2, 6, 8, 10, LN, 2, 2, LT, 0);
    check_lrn_pool(1, 4, 7, 6, LN, 3, 1, LT, 0);
    check_lrn_pool(1, 3, 11, 12, LN, 5, 2, LT, 1);
    check_lrn_pool(2, 4, 11, 10, LN, 2, 3, LT, 0); /* gaps: rows no window covers */
    check_lrn_pool(2, 4, 11, 10, LN, 2, 3, 30, 0); /* the same in bands */
}
/* what the fused kernels refuse: a band of K rows over 48 KiB, 2^31 elements */
Test(cuda_kernels_host, lrn_pool_refused)
{
    tower_k_lrnpool g;
    cr_assert_eq(tower_k_lrnpool_make(&g, 1, 4, 60, 60, LN, 2, 1e-4f, 0.75f, 3, 2, LT), 0);
    cr_assert_eq(tower_k_lrnpool_make(&g, 1, 4, 9, 5000, LN, 2, 1e-4f, 0.75f, 3, 2, LT), -1);
    /* conv1's output per tower, 48 x 55 x 55 an image, passes 2^31 - 1 at batch 14,790 */
    cr_assert_eq(tower_k_lrnpool_make(&g, 14789, 48, 55, 55, LN, 2, 1e-4f, 0.75f, 3, 2, LT), 0);
    cr_assert_eq(tower_k_lrnpool_make(&g, 14790, 48, 55, 55, LN, 2, 1e-4f, 0.75f, 3, 2, LT), -1);
    cr_assert_eq(tower_k_lrnpool_make(&g, 1, 4, 2, 2, LN, 2, 1e-4f, 0.75f, 3, 2, LT), -1);
}

Test(cuda_kernels_host, dropout)
{
    size_t n = 1000;
    uint64_t key = tower_layer_key(tower_step_key(7, 3, 1), 6);
    float p = (float)TOWER_DROPOUT_P;
    float *in = frand(n, 51, 1), *out = fnew(n), *out2 = fnew(n), *din = fnew(n), *din2 = fnew(n);
    for (int train = 0; train < 2; train++) {
        tower_dropout_forward(out, in, n, p, key, train);
        for (size_t i = 0; i < n; i++) out2[i] = tower_k_dropout_forward(in[i], i, p, key, train);
        expect_close(train ? "dropout forward (train)" : "dropout forward (eval)", out2, out, n, 0);
    }
    tower_dropout_backward(din, in, n, p, key);
    for (size_t i = 0; i < n; i++) din2[i] = tower_k_dropout_backward(in[i], i, p, key);
    expect_close("dropout backward", din2, din, n, 0);
    free(in), free(out), free(out2), free(din), free(din2);
}

Test(cuda_kernels_host, softmax_dlogits)
{
    int B = 3, T = 2, Vt = 5;
    size_t n = (size_t)T * B * Vt;
    int32_t labels[3] = {0, 9, 5};
    float *logits = frand(n, 61, 2), *probs = fnew(n), *losses = fnew(B);
    float *dl = fnew((size_t)B * Vt), *dl2 = fnew((size_t)B * Vt);
    tower_softmax_xent_forward(losses, probs, logits, labels, B, T, Vt);
    for (int slot = 0; slot < T; slot++) {
        tower_softmax_xent_backward(dl, probs, labels, B, T, Vt, slot);
        for (size_t i = 0; i < (size_t)B * Vt; i++)
            dl2[i] = tower_k_softmax_dlogit(probs, labels, i, B, Vt, slot);
        expect_close(slot ? "softmax dlogits slot 1" : "softmax dlogits slot 0", dl2, dl,
                     (size_t)B * Vt, 0);
    }
    /* the layout: class c of sample b */
    cr_assert_eq(tower_k_logit_at(2, 7, B, Vt), (size_t)(1 * B * Vt + 2 * Vt + 2));
    free(logits), free(probs), free(losses), free(dl), free(dl2);
}

/* the softmax kernel's rows: every class of every sample of awkward layouts (one tower,
 * one class a tower, towers narrower and wider than a block, the paper's 2 x 500) is its
 * tower's row plus its class within the tower, tower_k_logit_at's index */
Test(cuda_kernels_host, logit_row)
{
    const int shapes[][3] = {{3, 2, 5}, {4, 1, 1}, {2, 3, 1}, {5, 2, 31}, {3, 2, 128},
                             {2, 2, 129}, {7, 4, 13}, {128, 2, 500}, {3, 1, 1000}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int B = shapes[k][0], T = shapes[k][1], Vt = shapes[k][2];
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < Vt; j++) {
                    size_t got = tower_k_logit_row(b, t, B, Vt) + (size_t)j;
                    size_t want = tower_k_logit_at(b, t * Vt + j, B, Vt);
                    if (got != want)
                        cr_assert_fail("B %d T %d Vt %d b %d tower %d class %d: row + j %zu, "
                                       "want %zu", B, T, Vt, b, t, j, got, want);
                }
    }
}

Test(cuda_kernels_host, sgd)
{
    size_t n = 777;
    float *w = frand(n, 71, 0.01f), *v = frand(n, 72, 0.001f), *g = frand(n, 73, 0.1f);
    float *w2 = fdup(w, n), *v2 = fdup(v, n);
    for (int step = 0; step < 3; step++) {
        tower_sgd_update(w, v, g, n, 0.01f, 0.9f, 0.0005f);
        for (size_t i = 0; i < n; i++) tower_k_sgd(w2, v2, g, i, 0.01f, 0.9f, 0.0005f);
    }
    expect_close("sgd weights", w2, w, n, 0);
    expect_close("sgd momentum", v2, v, n, 0);
    free(w), free(v), free(g), free(w2), free(v2);
}

/* the fused arena update against net.c's per-tensor tower_sgd on a tiny two-tower plan */
Test(cuda_kernels_host, sgd_arena)
{
    tower_config cfg = {.towers = 2, .classes = 10, .batch = 2, .in_size = 67, .in_ch = 3,
                        .width_div = 16};
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    tower t;
    cr_assert_eq(tower_init(&t, &plan, 0, 5, err, sizeof err), 0, "%s", err);
    size_t n = plan.n_params;
    float *g = frand(n, 81, 0.1f), *v = frand(n, 82, 0.001f);
    memcpy(t.grads, g, sizeof(float) * n);
    memcpy(t.momentum, v, sizeof(float) * n);
    float *w2 = fdup(t.params, n), *v2 = fdup(v, n);
    tower_k_bias_ranges r;
    r.n = plan.n_layers;
    for (int l = 0; l < plan.n_layers; l++) {
        r.lo[l] = plan.layer[l].b_off;
        r.hi[l] = plan.layer[l].b_off + plan.layer[l].b_count;
    }
    for (int step = 0; step < 3; step++) {
        tower_sgd(&t, 0.01f, 0.9f, 0.0005f);
        for (size_t i = 0; i < n; i++) tower_k_sgd_arena(w2, v2, g, i, 0.01f, 0.9f, 0.0005f, &r);
    }
    expect_close("sgd arena weights", w2, t.params, n, 0);
    expect_close("sgd arena momentum", v2, t.momentum, n, 0);
    /* the ranges themselves: every bias element in, every weight element out */
    for (int l = 0; l < TOWER_LAYERS; l++) {
        const tower_layer_shape *L = &plan.layer[l];
        cr_assert(!tower_k_is_bias(&r, L->w_off) && !tower_k_is_bias(&r, L->b_off - 1));
        cr_assert(tower_k_is_bias(&r, L->b_off) &&
                  tower_k_is_bias(&r, L->b_off + L->b_count - 1));
    }
    cr_assert(!tower_k_is_bias(&r, n));
    tower_free(&t);
    free(g), free(v), free(w2), free(v2);
}

/* tanh: the host's tanhf is the CPU backend's, so bit for bit here (the device's tanhf is
 * within a few ulps: the GPU tests' tolerance) */
Test(cuda_kernels_host, tanh)
{
    size_t n = 1000;
    float *in = frand(n, 91, 2), *dout = frand(n, 92, 1), *out = fnew(n), *out2 = fnew(n);
    float *din = fnew(n), *din2 = fnew(n);
    tower_tanh_forward(out, in, n);
    for (size_t i = 0; i < n; i++) out2[i] = tower_k_tanh(in[i]);
    expect_close("tanh forward", out2, out, n, 0);
    tower_tanh_backward(din, dout, out, n);
    for (size_t i = 0; i < n; i++) din2[i] = tower_k_tanh_grad(dout[i], out[i]);
    expect_close("tanh backward", din2, din, n, 0);
    free(in), free(dout), free(out), free(out2), free(din), free(din2);
}

/* inverted dropout with the launcher's host-side scale, as layers_cuda.cu computes it */
Test(cuda_kernels_host, dropout_inverted)
{
    size_t n = 1000;
    uint64_t key = tower_layer_key(tower_step_key(7, 3, 0), 4);
    float p = 0.3f, scale = (float)(1.0 / (1.0 - (double)p));
    float *in = frand(n, 93, 1), *out = fnew(n), *out2 = fnew(n), *din = fnew(n), *din2 = fnew(n);
    for (int train = 0; train < 2; train++) {
        tower_dropout_inverted_forward(out, in, n, p, key, train);
        for (size_t i = 0; i < n; i++)
            out2[i] = tower_k_dropout_inv_forward(in[i], i, p, scale, key, train);
        expect_close(train ? "inverted dropout (train)" : "inverted dropout (eval)", out2, out,
                     n, 0);
    }
    tower_dropout_inverted_backward(din, in, n, p, key);
    for (size_t i = 0; i < n; i++) din2[i] = tower_k_dropout_inv_backward(in[i], i, p, scale, key);
    expect_close("inverted dropout backward", din2, din, n, 0);
    free(in), free(out), free(out2), free(din), free(din2);
}

/* Adam, per element and over a whole arena (no decay in the bias ranges), against the CPU
 * tower's update: bit for bit */
Test(cuda_kernels_host, adam)
{
    size_t n = 777;
    float *w = frand(n, 94, 0.05f), *m = fnew(n), *v = fnew(n), *g = frand(n, 95, 0.1f);
    float *w2 = fdup(w, n), *m2 = fnew(n), *v2 = fnew(n);
    for (int t = 1; t <= 3; t++) {
        double ss, bc;
        tower_adam_scalars(0.001, 0.9, 0.999, t, &ss, &bc);
        tower_adam_update(w, m, v, g, n, (float)ss, 0.9f, 0.999f, 1e-8f, (float)bc, 0.01f);
        for (size_t i = 0; i < n; i++)
            tower_k_adam(w2, m2, v2, g, i, (float)ss, 0.9f, 0.999f, 1e-8f, (float)bc, 0.01f);
        for (size_t i = 0; i < n; i++) g[i] = -0.5f * g[i] + 0.01f;
    }
    expect_close("adam weights", w2, w, n, 0);
    expect_close("adam first moment", m2, m, n, 0);
    expect_close("adam second moment", v2, v, n, 0);
    free(w), free(m), free(v), free(g), free(w2), free(m2), free(v2);

    tower_net net = *tower_net_preset("fmnist");
    net.optim.weight_decay = 0.01; /* so that the bias ranges matter */
    tower_config cfg = {.towers = 1, .classes = 10, .batch = 2, .in_size = 67, .in_ch = 1,
                        .width_div = 16, .net = net};
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    tower t;
    cr_assert_eq(tower_init(&t, &plan, 0, 5, err, sizeof err), 0, "%s", err);
    n = plan.n_params;
    g = frand(n, 96, 0.1f);
    memcpy(t.grads, g, sizeof(float) * n);
    w2 = fdup(t.params, n), m2 = fnew(n), v2 = fnew(n);
    tower_k_bias_ranges r;
    r.n = plan.n_layers;
    for (int l = 0; l < plan.n_layers; l++) {
        r.lo[l] = plan.layer[l].b_off;
        r.hi[l] = plan.layer[l].b_off + plan.layer[l].b_count;
    }
    for (int step = 1; step <= 2; step++) {
        tower_update(&t, &plan.cfg.net.optim, 0.001f, step);
        double ss, bc;
        tower_adam_scalars(0.001f, 0.9, 0.999, step, &ss, &bc);
        for (size_t i = 0; i < n; i++)
            tower_k_adam_arena(w2, m2, v2, g, i, (float)ss, 0.9f, 0.999f, 1e-8f, (float)bc,
                               0.01f, &r);
    }
    expect_close("adam arena weights", w2, t.params, n, 0);
    expect_close("adam arena second moment", v2, t.moment2, n, 0);
    tower_free(&t);
    free(g), free(w2), free(m2), free(v2);
}

/* ---- the data path's augmentation (src/data/augment_kernel.h) -------------------------- */

/* B random uint8 crops of side crop, their params (corners at both edges and in between,
 * every other image mirrored, random lighting) and a random mean image; then every output
 * element of data_k_augment_at, in the kernel's linear order, against data_augment_cpu and
 * data_augment_reduce_cpu with F = 1, bit for bit. */
static void expect_augment(int B, int crop, uint64_t key)
{
    data_k_aug g;
    cr_assert_eq(data_k_aug_make(&g, B, crop), 0, "B %d crop %d", B, crop);
    size_t nc = (size_t)B * crop * crop * 3, nx = nc, nm = (size_t)DATA_SIZE * DATA_SIZE * 3;
    cr_assert_eq(g.total, nx);
    uint8_t *crops = malloc(nc);
    float *mean = fnew(nm), *x = fnew(nx), *xr = fnew(nx), *xk = fnew(nx);
    data_aug_params *p = calloc((size_t)B, sizeof *p);
    cr_assert(crops && p);
    for (size_t i = 0; i < nc; i++) crops[i] = (uint8_t)(base_rng_mix(key, i) >> 56);
    for (size_t i = 0; i < nm; i++) mean[i] = 255.0f * base_rng_uniform(key + 1, i);
    int room = DATA_SIZE - crop;
    for (int b = 0; b < B; b++) {
        uint64_t r = base_rng_mix(key + 2, (uint64_t)b);
        int pick = b % 3; /* 0: the top-left corner, 1: the bottom-right, 2: random */
        p[b].oy = pick == 0 ? 0 : pick == 1 ? room : (int)(r % (uint64_t)(room + 1));
        p[b].ox = pick == 0 ? 0 : pick == 1 ? room : (int)((r >> 20) % (uint64_t)(room + 1));
        p[b].mirror = (b + crop) % 2;
        for (int c = 0; c < 3; c++)
            p[b].rgb[c] = 20.0f * (float)base_rng_normal(key + 3, 2 * (uint64_t)(3 * b + c), 0);
    }
    data_augment_cpu(x, crops, mean, p, B, crop);
    data_augment_reduce_cpu(xr, crops, mean, p, B, crop, 1);
    for (uint32_t i = 0; i < g.total; i++) xk[i] = data_k_augment_at(crops, mean, p, i, g);
    if (memcmp(x, xk, sizeof(float) * nx) != 0 || memcmp(xr, xk, sizeof(float) * nx) != 0)
        for (size_t i = 0; i < nx; i++)
            if (memcmp(&x[i], &xk[i], sizeof(float)) != 0 ||
                memcmp(&xr[i], &xk[i], sizeof(float)) != 0)
                cr_assert_fail("B %d crop %d element %zu: kernel %.9g cpu %.9g reduce %.9g", B,
                               crop, i, xk[i], x[i], xr[i]);
    free(crops), free(mean), free(x), free(xr), free(xk), free(p);
}

/* every crop side the data path takes (1 .. DATA_SIZE), mirrored and not, then the
 * paper's batch (128 x 224) and awkward ones */
Test(cuda_kernels_host, augment)
{
    for (int crop = 1; crop <= DATA_SIZE; crop++)
        expect_augment(crop % 7 == 0 ? 3 : 2, crop, 1000 + (uint64_t)crop);
    expect_augment(128, 224, 7);
    expect_augment(1, 227, 8);
    expect_augment(5, 255, 9);
    expect_augment(7, 67, 10);
}

/* the launcher's bounds: the kernel's indices are 32 bits */
Test(cuda_kernels_host, augment_bounds)
{
    data_k_aug g;
    cr_assert_eq(data_k_aug_make(&g, 10922, DATA_SIZE), 0); /* 2,147,221,504 elements */
    cr_assert_eq(g.total, 10922u * 3 * DATA_SIZE * DATA_SIZE);
    cr_assert_eq(data_k_aug_make(&g, 10923, DATA_SIZE), -1); /* 2^31 + 49,152 */
    cr_assert_eq(data_k_aug_make(&g, 0, 224), -1);
    cr_assert_eq(data_k_aug_make(&g, 1, 0), -1);
    cr_assert_eq(data_k_aug_make(&g, 1, DATA_SIZE + 1), -1);
    cr_assert_eq(data_k_aug_make(&g, INT32_MAX, 1), -1);
}

/* ---- the step as one CUDA graph: what its kernels compute from the step scalars -------- */

/* The device's mean loss (one thread, tower_k_loss_mean) against the host's double sum in
 * sample order, and against the CPU tower's own loss forward, bit for bit, at batch sizes
 * from 1 to beyond a warp's and a block's, with losses of very different sizes (so that
 * another order would round differently). */
Test(cuda_kernels_host, loss_mean_is_the_host_sum)
{
    const int sizes[] = {1, 2, 3, 31, 32, 33, 128, 1000, 4099};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int B = sizes[k];
        float *l = fnew((size_t)B);
        for (int b = 0; b < B; b++)
            l[b] = (float)ldexp(fabs(base_rng_normal(91, (uint64_t)b, 0)) + 1e-3, (b * 7) % 40 - 20);
        double sum = 0;
        for (int b = 0; b < B; b++) sum += l[b];
        double want = sum / B, got = tower_k_loss_mean(l, B);
        double reversed = 0; /* the order matters: a reversed sum differs at these sizes */
        for (int b = B - 1; b >= 0; b--) reversed += l[b];
        printf("loss mean B=%-5d %.17g (reversed order %.17g)\n", B, got, reversed / B);
        cr_assert(memcmp(&got, &want, sizeof got) == 0, "B=%d: %.17g vs %.17g", B, got, want);
        free(l);
    }
    /* a NaN loss (a label out of range) gives a NaN mean, as on the host */
    float nanl[3] = {1.0f, NAN, 2.0f};
    cr_assert(isnan(tower_k_loss_mean(nanl, 3)));
}

Test(cuda_kernels_host, loss_mean_is_the_cpu_towers)
{
    tower_config cfg = {.towers = 2, .classes = 10, .batch = 5, .in_size = 67, .in_ch = 3,
                        .width_div = 16};
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    tower t;
    cr_assert_eq(tower_init(&t, &plan, 0, 5, err, sizeof err), 0, "%s", err);
    size_t nl = (size_t)cfg.towers * cfg.batch * plan.vt;
    for (size_t i = 0; i < nl; i++) t.logits[i] = (float)base_rng_normal(93, i, 0) * 3.0f;
    for (int b = 0; b < cfg.batch; b++) t.labels[b] = (int32_t)((b * 3) % cfg.classes);
    double cpu = tower_loss_forward(&t), dev = tower_k_loss_mean(t.losses, cfg.batch);
    printf("loss: CPU tower %.17g, device's reduction %.17g\n", cpu, dev);
    cr_assert(memcmp(&cpu, &dev, sizeof cpu) == 0, "%.17g vs %.17g", cpu, dev);
    tower_free(&t);
}

/* The update's guard: applied always unless skip_nonfinite, then only for a finite loss. */
Test(cuda_kernels_host, update_guard)
{
    tower_k_step s;
    memset(&s, 0, sizeof s);
    const double losses[] = {0.0, 2.5, -1e300, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof losses / sizeof losses[0]; i++) {
        s.skip_nonfinite = 0;
        cr_assert(tower_k_update_applies(&s, losses[i]));
        s.skip_nonfinite = 1;
        cr_assert_eq(tower_k_update_applies(&s, losses[i]), isfinite(losses[i]) ? 1 : 0,
                     "loss %g", losses[i]);
    }
}

/* The step kernels' arithmetic from a staged tower_k_step, emulated: the SGD and Adam
 * arena updates over several steps with a learning-rate change, and the dropout masks of
 * each row's staged key, against the CPU's by-value functions, bit for bit. The struct is
 * filled as net_cuda.cu's staging fills it (floats rounded from the optimizer's doubles,
 * Adam's scalars from tower_adam_scalars). */
Test(cuda_kernels_host, step_scalars_update_and_dropout)
{
    tower_config cfg = {.towers = 2, .classes = 10, .batch = 2, .in_size = 67, .in_ch = 3,
                        .width_div = 16};
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    size_t n = plan.n_params;
    tower_k_bias_ranges r;
    r.n = plan.n_layers;
    for (int l = 0; l < plan.n_layers; l++) {
        r.lo[l] = plan.layer[l].b_off;
        r.hi[l] = plan.layer[l].b_off + plan.layer[l].b_count;
    }
    const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0.0005;
    float *g = frand(n, 95, 0.1f);
    float *w = frand(n, 96, 0.05f), *m1 = fnew(n), *m2 = fnew(n);
    float *we = fdup(w, n), *m1e = fnew(n), *m2e = fnew(n);
    float *ws = frand(n, 97, 0.05f), *vs = fnew(n);
    float *wse = fdup(ws, n), *vse = fnew(n);
    const float lrs[] = {0.01f, 0.01f, 0.001f, 0.001f}; /* a learning-rate change */
    for (int step = 0; step < 4; step++) {
        tower_k_step s;
        memset(&s, 0, sizeof s);
        s.lr = lrs[step];
        s.momentum = 0.9f;
        s.weight_decay = (float)wd;
        s.beta1 = (float)beta1;
        s.beta2 = (float)beta2;
        s.eps = (float)eps;
        double step_size, bc2_sqrt;
        tower_adam_scalars((double)lrs[step], beta1, beta2, step + 1, &step_size, &bc2_sqrt);
        s.step_size = (float)step_size;
        s.bc2_sqrt = (float)bc2_sqrt;
        /* the CPU: per tensor, by value, as net.c's cpu_update */
        for (int l = 0; l < plan.n_layers; l++)
            for (int bias = 0; bias < 2; bias++) {
                const tower_layer_shape *L = &plan.layer[l];
                size_t off = bias ? L->b_off : L->w_off, cnt = bias ? L->b_count : L->w_count;
                float d = bias ? 0 : (float)wd;
                tower_adam_update(w + off, m1 + off, m2 + off, g + off, cnt, (float)step_size,
                                  (float)beta1, (float)beta2, (float)eps, (float)bc2_sqrt, d);
                tower_sgd_update(ws + off, vs + off, g + off, cnt, lrs[step], 0.9f, d);
            }
        /* the step kernels' bodies: the scalars read from the struct */
        for (size_t i = 0; i < n; i++) {
            tower_k_adam_arena(we, m1e, m2e, g, i, s.step_size, s.beta1, s.beta2, s.eps,
                               s.bc2_sqrt, s.weight_decay, &r);
            tower_k_sgd_arena(wse, vse, g, i, s.lr, s.momentum, s.weight_decay, &r);
        }
    }
    expect_close("adam from the step scalars: weights", we, w, n, 0);
    expect_close("adam from the step scalars: m", m1e, m1, n, 0);
    expect_close("adam from the step scalars: v", m2e, m2, n, 0);
    expect_close("sgd from the step scalars: weights", wse, ws, n, 0);
    expect_close("sgd from the step scalars: momentum", vse, vs, n, 0);

    /* dropout: each row's staged key is tower_layer_key of the step key, as net.c passes */
    size_t nd = 999;
    float *x = frand(nd, 98, 1.0f), *ref = fnew(nd), *got = fnew(nd);
    for (int64_t step = 0; step < 3; step++) {
        uint64_t step_key = tower_step_key(7, step, 1);
        tower_k_step s;
        memset(&s, 0, sizeof s);
        for (int l = 0; l < plan.n_layers; l++) s.key[l] = tower_layer_key(step_key, l);
        for (int l = 0; l < plan.n_layers; l++) {
            tower_dropout_forward(ref, x, nd, 0.5f, tower_layer_key(step_key, l), 1);
            for (size_t i = 0; i < nd; i++)
                got[i] = tower_k_dropout_forward(x[i], i, 0.5f, s.key[l], 1);
            cr_assert(memcmp(got, ref, sizeof(float) * nd) == 0, "step %lld row %d",
                      (long long)step, l);
        }
    }
    free(g), free(w), free(m1), free(m2), free(we), free(m1e), free(m2e);
    free(ws), free(vs), free(wse), free(vse), free(x), free(ref), free(got);
}
