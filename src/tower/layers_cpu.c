/* layers_cpu.c: the CPU backend of every AlexNet layer, forward and backward.
 * This is the reference the CUDA backend is tested against. GEMMs go through BLAS
 * (OpenBLAS from Debian); everything else is plain loops. Compiled twice: with
 * real = float (the product) and real = double (TOWER_F64, the gradient checks). */
#include "tower/tower.h"
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
#include "tower/conv_dnnl.h"
#endif

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef TOWER_F64
#define GEMM cblas_dgemm
#define RLRN_POW(s, beta) pow((s), -(beta))
#define REXP exp
#define RLOG log
#define RTANH tanh
#define RSQRT sqrt
#else
#define GEMM counted_sgemm
#define RLRN_POW(s, beta) tower_lrn_pow((s), (beta))
#define REXP expf
#define RLOG logf
#define RTANH tanhf
#define RSQRT sqrtf
#endif

/* The elementwise layers (and the conv's bias and gradient passes) compiled twice on
 * x86-64, for AVX2 and for the baseline (SSE2), the one the CPU has picked when the
 * program loads: 8 floats an instruction instead of 4 (about 2x on LRN and ReLU). The
 * same operations in the same order either way (no FMA: -ffp-contract=off), so the same
 * bits on every x86-64; other compilers and CPUs, and the sanitizer build (whose run-time
 * starts after such clones are resolved), build the loops once. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                      \
    !defined(__SANITIZE_ADDRESS__)
#define HOT_LOOPS __attribute__((target_clones("avx2", "default")))
#else
#define HOT_LOOPS
#endif

/* ---- GEMM accounting (twotower bench): time and multiply-adds of every BLAS call ----- */

static atomic_int gemm_counting;
static _Atomic int64_t gemm_ns, gemm_madds;

void tower_cpu_gemm_count(int on) { atomic_store(&gemm_counting, on); }

int tower_cpu_gemm_counting(void)
{
    return atomic_load_explicit(&gemm_counting, memory_order_relaxed);
}

void tower_cpu_gemm_add(double seconds, double madds)
{
    atomic_fetch_add(&gemm_ns, (int64_t)(1e9 * seconds));
    atomic_fetch_add(&gemm_madds, (int64_t)madds);
}

void tower_cpu_gemm_counted(double *seconds, double *flops)
{
    *seconds = 1e-9 * (double)atomic_exchange(&gemm_ns, 0);
    *flops = 2.0 * (double)atomic_exchange(&gemm_madds, 0);
}

#ifndef TOWER_F64
const char *tower_blas_better_core(void)
{
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX"; /* 0.3.21 takes "Cooperlake" only by its own detection */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/* Every float GEMM of the CPU backend (row-major). Where oneDNN runs its AVX-512 kernels
 * and is on (tower_conv_dnnl), oneDNN's SGEMM; else OpenBLAS's. Which one is fixed for the
 * process, so the summation order is too. */
static void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
#if defined(TT_HAVE_DNNL)
    if (!tower_conv_dnnl_off() && tower_dnnl_avx512()) {
        tower_dnnl_sgemm(ta == CblasTrans, tb == CblasTrans, m, n, k, alpha, a, lda, b, ldb, beta,
                         c, ldc);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void counted_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m,
                          int n, int k, float alpha, const float *a, int lda, const float *b,
                          int ldb, float beta, float *c, int ldc)
{
    (void)order; /* always CblasRowMajor */
    if (!atomic_load_explicit(&gemm_counting, memory_order_relaxed)) {
        sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    double t0 = base_now();
    sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    atomic_fetch_add(&gemm_ns, (int64_t)(1e9 * (base_now() - t0)));
    atomic_fetch_add(&gemm_madds, (int64_t)m * n * k);
}
#endif

/* ---- convolution: im2col + one SGEMM per chunk of images ---------------------------
 * The scratch `col` holds, for a chunk of nb images, the column matrix (Ci*K*K, nb*Ho*Wo)
 * and, when nb > 1, a product/gradient block (Co, nb*Ho*Wo). One GEMM per chunk: the
 * weights are packed by BLAS once per chunk rather than once per image, and a narrow
 * output (few columns an image) still makes a GEMM wide enough for BLAS's threads.
 *
 * Chunk size. At least CONV_CHUNK_COLS output positions per GEMM, and no more images
 * than that needs. Measured on 2 cores (interleaved runs, one BLAS thread by thread CPU
 * time and two by wall clock; docs/BENCH.md): at the paper's shapes one image a GEMM was
 * as fast as chunks of 2-9 with two threads, and 10-25% faster with one (the least loaded
 * runs), most likely because a chunk's columns (1.2 MB an image at conv4) are out of the
 * 512 KB L2 and much of L3 by the time the GEMM reads them. So every layer of the paper's
 * net (169 columns an image or more) takes one image a GEMM, and the scratch stays at one
 * conv1 image (4.2 MiB per tower). Chunks are for small outputs: the test nets at
 * --size 67 have 3x3 at conv3-conv5, where a GEMM of 9 columns would spend its time on
 * per-call overhead and packing. CONV_CHUNK_BYTES bounds the column matrix whatever the
 * shape. The chunk is a pure function of the layer's shape, never of the batch or of the
 * BLAS thread count, so the summation order is fixed too. */
#define CONV_CHUNK_COLS 128
#define CONV_CHUNK_BYTES ((size_t)12 << 20)
/* The product block is sized for Co up to this fraction of Ci*K*K (the net's layers
 * need at most 1/6: conv3, 192 of 1152); a layer with more outputs gets fewer images a
 * chunk (down to 1, which needs no product block), so any shape still fits. */
#define CONV_PROD_NUM 1
#define CONV_PROD_DEN 4

int tower_conv_out(int n, int k, int stride, int pad)
{
    int span = n + 2 * pad - k;
    return span < 0 ? 0 : span / stride + 1;
}

/* Images a chunk the scratch is sized for: enough for CONV_CHUNK_COLS columns, within
 * CONV_CHUNK_BYTES of columns, at least 1. */
static size_t conv_chunk_max(size_t CKK, size_t HWo)
{
    if (HWo == 0 || CKK == 0) return 1;
    size_t nb = (CONV_CHUNK_COLS + HWo - 1) / HWo;
    size_t fit = CONV_CHUNK_BYTES / (sizeof(real) * CKK * HWo);
    if (nb > fit) nb = fit;
    return nb < 1 ? 1 : nb;
}

size_t tower_conv_col_size(int Ci, int H, int W, int K, int stride, int pad)
{
    size_t Ho = (size_t)tower_conv_out(H, K, stride, pad);
    size_t Wo = (size_t)tower_conv_out(W, K, stride, pad);
    size_t CKK = (size_t)Ci * K * K, HWo = Ho * Wo, nb = conv_chunk_max(CKK, HWo);
    size_t one = CKK * HWo; /* one image, no product block: what nb = 1 uses */
    if (nb == 1) return one;
    size_t prod = (CKK * CONV_PROD_NUM + CONV_PROD_DEN - 1) / CONV_PROD_DEN;
    return nb * (CKK + prod) * HWo;
}

/* Images per chunk for a layer with Co outputs: the largest nb <= conv_chunk_max whose
 * column matrix and product block fit in tower_conv_col_size (1 always fits). */
static size_t conv_chunk(int Ci, int H, int W, int Co, int K, int S, int P)
{
    size_t Ho = (size_t)tower_conv_out(H, K, S, P), Wo = (size_t)tower_conv_out(W, K, S, P);
    size_t CKK = (size_t)Ci * K * K, HWo = Ho * Wo, nb = conv_chunk_max(CKK, HWo);
    size_t cap = tower_conv_col_size(Ci, H, W, K, S, P), per = (CKK + (size_t)Co) * HWo;
    if (nb > 1 && per > 0 && nb * per > cap) nb = cap / per;
    return nb < 1 ? 1 : nb;
}

int tower_conv_chunk_images(int Ci, int H, int W, int Co, int K, int stride, int pad)
{
    return (int)conv_chunk(Ci, H, W, Co, K, stride, pad);
}

void tower_conv_paths(char *buf, size_t n, const tower_plan *plan)
{
    static const char *what[8] = {"", "forward", "input gradient", "forward + input gradient",
                                  "weights' gradient", "forward + weights' gradient",
                                  "input + weights' gradients", "every pass"};
    int dnnl = tower_conv_dnnl_built() && !tower_conv_dnnl_off();
    size_t used = 0;
    if (n) buf[0] = 0;
    for (int part = 0; part < 2; part++) {
        const char *head = part ? "im2col + one SGEMM per chunk of images:" : "oneDNN:";
        int first = 1;
        for (int l = 0; l < plan->n_layers && used < n; l++) {
            const tower_layer_spec *s = tower_plan_row(plan, l);
            const tower_layer_shape *L = &plan->layer[l];
            if (s->kind != TOWER_CONV) continue;
            int needed = TOWER_DNNL_FWD | TOWER_DNNL_BWD_W | (l > 0 ? TOWER_DNNL_BWD_DATA : 0);
            int on = dnnl ? tower_conv_dnnl_passes(s->k, s->stride) & needed : 0;
            int mine = part ? needed & ~on : on;
            if (!mine) continue;
            used += (size_t)snprintf(buf + used, n - used, "%s%s %s %s",
                                     first && used ? "; " : "", first ? head : ",", s->name,
                                     mine == needed ? "every pass" : what[mine]);
            if (part) {
                size_t nb = conv_chunk(L->in_ch, L->in_h, L->in_h, L->out_ch, s->k, s->stride,
                                       s->pad);
                if (nb > (size_t)plan->cfg.batch) nb = (size_t)plan->cfg.batch;
                used += (size_t)snprintf(buf + used, n - used, " (%zu)", nb);
            }
            first = 0;
        }
    }
}

void tower_conv_describe(char *buf, size_t n, const tower_plan *plan)
{
    char paths[1024];
    tower_conv_paths(paths, sizeof paths, plan);
    snprintf(buf, n, "CPU%s%s", paths[0] ? "; " : "", paths);
}

/* Output positions [*lo, *hi) along one axis whose tap k lands inside the input
 * (0 <= o*S - P + k < n); outside it the tap reads padding. */
static void conv_span(int *lo, int *hi, int n, int k, int S, int P, int out)
{
    int a = P - k, b = n - 1 + P - k; /* need a <= o*S <= b */
    int l = a <= 0 ? 0 : (a + S - 1) / S;
    int h = b < 0 ? 0 : b / S + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* One output row of one im2col row: dst[ow] = src[ow*S + kw - P], 0 outside [lo, hi).
 * src is the input row the tap reads, or NULL for a padding row. */
static void im2col_run(real *dst, const real *src, int kw, int S, int P, int lo, int hi,
                       int Wo)
{
    if (!src) {
        memset(dst, 0, sizeof(real) * (size_t)Wo);
        return;
    }
    for (int ow = 0; ow < lo; ow++) dst[ow] = 0;
    if (lo < hi) {
        const real *s0 = src + (lo * S + kw - P); /* the pixel output lo sees */
        if (S == 1)
            memcpy(dst + lo, s0, sizeof(real) * (size_t)(hi - lo));
        else
            for (int i = 0; i < hi - lo; i++) dst[lo + i] = s0[(size_t)i * S];
    }
    for (int ow = hi; ow < Wo; ow++) dst[ow] = 0;
}

/* col rows (Ci*K*K) of ld `ldc`, HWo columns each from col: row (c, kh, kw) holds, for
 * every output position of one image, the input pixel that kernel tap sees (0 in the
 * padding). Most rows are copies of rows already written: tap (kh, kw) at output
 * (oh, ow) sees what tap (kh - S, kw) sees at (oh + 1, ow), and what tap (kh, kw - S)
 * sees at (oh, ow + 1). So a row with kh >= S is one contiguous copy of an earlier row
 * shifted by Wo, plus its last output row; with kw >= S (and kh < S) it is Ho copies
 * shifted by 1, plus its last column. Only the S x S taps of the top-left corner read the
 * input with a stride; for conv1 (11x11, stride 4) that is 16 of 121 rows, which is what
 * made the element-by-element loop conv1's bottleneck. */
static void im2col(real *col, size_t ldc, const real *in, int Ci, int H, int W, int K,
                   int S, int P, int Ho, int Wo)
{
    size_t HWo = (size_t)Ho * Wo;
    if (HWo == 0) return;
    for (int c = 0; c < Ci; c++) {
        const real *plane = in + (size_t)c * H * W;
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                real *row = col + ((size_t)(c * K + kh) * K + kw) * ldc;
                int lo, hi;
                conv_span(&lo, &hi, W, kw, S, P, Wo);
                if (kh >= S) {
                    const real *up = row - (size_t)S * K * ldc;
                    memcpy(row, up + Wo, sizeof(real) * (HWo - (size_t)Wo));
                    int oh = Ho - 1, ih = oh * S - P + kh;
                    im2col_run(row + (size_t)oh * Wo,
                               ih >= 0 && ih < H ? plane + (size_t)ih * W : NULL, kw, S, P, lo,
                               hi, Wo);
                    continue;
                }
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * S - P + kh;
                    real *dst = row + (size_t)oh * Wo;
                    const real *src = ih >= 0 && ih < H ? plane + (size_t)ih * W : NULL;
                    if (kw >= S && S > 1 && src) {
                        memcpy(dst, row - (size_t)S * ldc + (size_t)oh * Wo + 1,
                               sizeof(real) * (size_t)(Wo - 1));
                        int iw = (Wo - 1) * S - P + kw;
                        dst[Wo - 1] = iw >= 0 && iw < W ? src[iw] : 0;
                    } else {
                        im2col_run(dst, src, kw, S, P, lo, hi, Wo);
                    }
                }
            }
    }
}

/* The adjoint of im2col: every column entry is added back to the pixel it came from, in
 * the order (c, kh, kw, oh, ow). in must be zeroed (or hold what to accumulate onto). */
static void col2im(real *in, const real *col, size_t ldc, int Ci, int H, int W, int K,
                   int S, int P, int Ho, int Wo)
{
    for (int c = 0; c < Ci; c++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const real *row = col + ((size_t)(c * K + kh) * K + kw) * ldc;
                real *plane = in + (size_t)c * H * W;
                int lo, hi;
                conv_span(&lo, &hi, W, kw, S, P, Wo);
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * S - P + kh;
                    if (ih < 0 || ih >= H) continue;
                    if (lo >= hi) continue;
                    const real *src = row + (size_t)oh * Wo + lo;
                    real *dst = plane + (size_t)ih * W + (lo * S + kw - P);
                    if (S == 1)
                        for (int i = 0; i < hi - lo; i++) dst[i] += src[i];
                    else
                        for (int i = 0; i < hi - lo; i++) dst[(size_t)i * S] += src[i];
                }
            }
}

void tower_im2col(real *col, size_t ldc, const real *in, int Ci, int H, int W, int K,
                  int stride, int pad)
{
    im2col(col, ldc, in, Ci, H, W, K, stride, pad, tower_conv_out(H, K, stride, pad),
           tower_conv_out(W, K, stride, pad));
}

void tower_col2im(real *in, const real *col, size_t ldc, int Ci, int H, int W, int K,
                  int stride, int pad)
{
    col2im(in, col, ldc, Ci, H, W, K, stride, pad, tower_conv_out(H, K, stride, pad),
           tower_conv_out(W, K, stride, pad));
}

HOT_LOOPS
void tower_conv_forward(real *out, const real *in, const real *w, const real *b,
                        int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                        int ldw, int accumulate, real *col)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    size_t HWo = (size_t)Ho * Wo, CKK = (size_t)Ci * K * K, nin = (size_t)Ci * H * W;
    size_t nbmax = conv_chunk(Ci, H, W, Co, K, stride, pad);
    for (int n0 = 0; n0 < B; n0 += (int)nbmax) {
        size_t nb = (size_t)(B - n0) < nbmax ? (size_t)(B - n0) : nbmax, nq = nb * HWo;
        for (size_t j = 0; j < nb; j++)
            im2col(col + j * HWo, nq, in + (n0 + j) * nin, Ci, H, W, K, stride, pad, Ho, Wo);
        real *y = out + (size_t)n0 * Co * HWo;
        if (nb == 1) {
            /* y (Co, HWo) = w (Co, CKK; ld ldw) . col (CKK, HWo) [+ y] */
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, (int)HWo, (int)CKK, 1, w, ldw,
                 col, (int)HWo, accumulate ? 1 : 0, y, (int)HWo);
            if (b)
                for (int o = 0; o < Co; o++) {
                    real bo = b[o], *yo = y + (size_t)o * HWo;
                    for (size_t i = 0; i < HWo; i++) yo[i] += bo;
                }
            continue;
        }
        /* prod (Co, nb*HWo) = w . col (CKK, nb*HWo), then y (nb, Co, HWo) [+]= prod + b */
        real *prod = col + CKK * nq;
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, (int)nq, (int)CKK, 1, w, ldw, col,
             (int)nq, 0, prod, (int)nq);
        for (size_t j = 0; j < nb; j++)
            for (int o = 0; o < Co; o++) {
                const real *p = prod + (size_t)o * nq + j * HWo;
                real *yo = y + (j * Co + (size_t)o) * HWo, bo = b ? b[o] : 0;
                if (accumulate)
                    for (size_t i = 0; i < HWo; i++) yo[i] += p[i] + bo;
                else
                    for (size_t i = 0; i < HWo; i++) yo[i] = p[i] + bo;
            }
    }
}

HOT_LOOPS
void tower_conv_backward(real *din, real *dw, real *db,
                         const real *dout, const real *in, const real *w,
                         int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                         int ldw, int accumulate_din, real *col)
{
    int Ho = tower_conv_out(H, K, stride, pad), Wo = tower_conv_out(W, K, stride, pad);
    size_t HWo = (size_t)Ho * Wo, CKK = (size_t)Ci * K * K, nin = (size_t)Ci * H * W;
    size_t nbmax = conv_chunk(Ci, H, W, Co, K, stride, pad);
    for (int n0 = 0; n0 < B; n0 += (int)nbmax) {
        size_t nb = (size_t)(B - n0) < nbmax ? (size_t)(B - n0) : nbmax, nq = nb * HWo;
        /* g (Co, nb*HWo): the chunk's dout with its images side by side (for one image,
         * dout itself) */
        const real *g = dout + (size_t)n0 * Co * HWo;
        if (nb > 1) {
            real *gt = col + CKK * nq;
            for (size_t j = 0; j < nb; j++)
                for (int o = 0; o < Co; o++)
                    memcpy(gt + (size_t)o * nq + j * HWo, g + (j * Co + (size_t)o) * HWo,
                           sizeof(real) * HWo);
            g = gt;
        }
        if (db)
            for (int o = 0; o < Co; o++) {
                const real *go = g + (size_t)o * nq;
                real s = 0;
                for (size_t i = 0; i < nq; i++) s += go[i];
                db[o] += s;
            }
        if (dw) {
            for (size_t j = 0; j < nb; j++)
                im2col(col + j * HWo, nq, in + (n0 + j) * nin, Ci, H, W, K, stride, pad, Ho,
                       Wo);
            /* dw (Co, CKK; ld ldw) += g (Co, nb*HWo) . col^T (nb*HWo, CKK) */
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Co, (int)CKK, (int)nq, 1, g,
                 (int)nq, col, (int)nq, 1, dw, ldw);
        }
        if (din) {
            /* col (CKK, nb*HWo) = w^T (CKK, Co) . g (Co, nb*HWo), then scattered back */
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)nq, Co, 1, w, ldw, g,
                 (int)nq, 0, col, (int)nq);
            for (size_t j = 0; j < nb; j++) {
                real *dx = din + (n0 + j) * nin;
                if (!accumulate_din) memset(dx, 0, sizeof(real) * nin);
                col2im(dx, col + j * HWo, nq, Ci, H, W, K, stride, pad, Ho, Wo);
            }
        }
    }
}

void tower_fc_forward(real *out, const real *in, const real *w, const real *b,
                      int B, int Cin, int Cout, int ldw, int accumulate)
{
    /* out (B, Cout) = in (B, Cin) . w^T (Cin, Cout) [+ out] */
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, Cout, Cin, 1, in, Cin, w, ldw,
         accumulate ? 1 : 0, out, Cout);
    if (b)
        for (int n = 0; n < B; n++)
            for (int o = 0; o < Cout; o++) out[(size_t)n * Cout + o] += b[o];
}

void tower_fc_backward(real *din, real *dw, real *db,
                       const real *dout, const real *in, const real *w,
                       int B, int Cin, int Cout, int ldw, int accumulate_din)
{
    if (din) /* din (B, Cin) = dout (B, Cout) . w (Cout, Cin) */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, Cin, Cout, 1, dout, Cout, w, ldw,
             accumulate_din ? 1 : 0, din, Cin);
    if (dw) /* dw (Cout, Cin) += dout^T (Cout, B) . in (B, Cin) */
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, Cin, B, 1, dout, Cout, in, Cin, 1,
             dw, ldw);
    if (db)
        for (int n = 0; n < B; n++)
            for (int o = 0; o < Cout; o++) db[o] += dout[(size_t)n * Cout + o];
}

HOT_LOOPS
void tower_relu_forward(real *out, const real *in, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0 ? in[i] : 0;
}

HOT_LOOPS
void tower_relu_backward(real *din, const real *dout, const real *out, size_t n)
{
    for (size_t i = 0; i < n; i++) din[i] = out[i] > 0 ? dout[i] : 0;
}

void tower_tanh_forward(real *out, const real *in, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = RTANH(in[i]);
}

/* d tanh(x) / dx = 1 - tanh(x)^2: from the output, so no input needs keeping */
void tower_tanh_backward(real *din, const real *dout, const real *out, size_t n)
{
    for (size_t i = 0; i < n; i++) din[i] = dout[i] * (1 - out[i] * out[i]);
}

/* One image's LRN scale: s (C, HW) = k + alpha * sum_{|j-c| <= n/2} x[j]^2. Every LRN
 * below computes its scale here, so a scale recomputed in backward has the forward's bits
 * (no contraction: meson builds with -ffp-contract=off). Inlined, so that each of the
 * HOT_LOOPS builds of the LRN layers has its own copy. */
static inline __attribute__((always_inline)) void
lrn_scale_image(real *s, const real *x, int C, int HW, int n, real k, real alpha)
{
    int half = n / 2;
    for (int c = 0; c < C; c++) {
        real *sc = s + (size_t)c * HW;
        for (int p = 0; p < HW; p++) sc[p] = 0;
        int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
        for (int j = lo; j <= hi; j++) {
            const real *xj = x + (size_t)j * HW;
            for (int p = 0; p < HW; p++) sc[p] += xj[p] * xj[p];
        }
        for (int p = 0; p < HW; p++) sc[p] = k + alpha * sc[p];
    }
}

HOT_LOOPS
void tower_lrn_forward(real *out, real *scale, const real *in,
                       int B, int C, int HW, int n, real k, real alpha, real beta)
{
    size_t chw = (size_t)C * HW;
    for (int b = 0; b < B; b++) {
        const real *x = in + b * chw;
        real *s = scale + b * chw, *y = out + b * chw;
        lrn_scale_image(s, x, C, HW, n, k, alpha);
        for (size_t i = 0; i < chw; i++) y[i] = x[i] * RLRN_POW(s[i], beta);
    }
}

/* d out[i] / d in[m] = [i==m] s_i^-beta - 2 alpha beta in_i in_m s_i^(-beta-1) for |i-m| <= n/2,
 * so din[m] = dout[m] s_m^-beta - 2 alpha beta in[m] sum_i dout[i] out[i] / s[i].
 * One image, given q = s^-beta and t = dout out / s at every element (each term of the sum
 * is one element's, whichever channel's window it falls in, so it is taken once): the
 * window sums in channel order into dx, then din there; dx (C, HW) aliases none of them. */
static inline __attribute__((always_inline)) void
lrn_backward_image(real *dx, const real *g, const real *x, const real *t, const real *q, int C,
                   int HW, int n, real alpha, real beta)
{
    int half = n / 2;
    real c2ab = 2 * alpha * beta;
    for (int c = 0; c < C; c++) {
        real *dxc = dx + (size_t)c * HW;
        const real *xc = x + (size_t)c * HW, *gc = g + (size_t)c * HW,
                   *qc = q + (size_t)c * HW;
        int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
        for (int p = 0; p < HW; p++) dxc[p] = 0;
        for (int i = lo; i <= hi; i++) {
            const real *ti = t + (size_t)i * HW;
            for (int p = 0; p < HW; p++) dxc[p] += ti[p];
        }
        for (int p = 0; p < HW; p++) dxc[p] = gc[p] * qc[p] - c2ab * xc[p] * dxc[p];
    }
}

HOT_LOOPS
void tower_lrn_backward(real *din, const real *dout, const real *in, const real *out,
                        const real *scale, int B, int C, int HW, int n, real k, real alpha,
                        real beta)
{
    (void)k;
    size_t chw = (size_t)C * HW;
    real *work = malloc(sizeof(real) * 3 * chw);
    if (!work) abort(); /* only the tests call this one; the trainer's path is the lean one */
    real *q = work, *t = work + chw, *dx = work + 2 * chw;
    for (int b = 0; b < B; b++) {
        const real *g = dout + b * chw, *y = out + b * chw, *s = scale + b * chw;
        for (size_t i = 0; i < chw; i++) {
            q[i] = RLRN_POW(s[i], beta);
            t[i] = g[i] * y[i] / s[i];
        }
        lrn_backward_image(dx, g, in + b * chw, t, q, C, HW, n, alpha, beta);
        memcpy(din + b * chw, dx, sizeof(real) * chw);
    }
    free(work);
}

size_t tower_lrn_lean_work_size(int C, int HW) { return 3 * (size_t)C * HW; }

HOT_LOOPS
void tower_lrn_forward_lean(real *out, const real *in, int B, int C, int HW, int n, real k,
                            real alpha, real beta, real *work)
{
    size_t chw = (size_t)C * HW;
    for (int b = 0; b < B; b++) {
        const real *x = in + b * chw;
        real *y = out + b * chw;
        lrn_scale_image(work, x, C, HW, n, k, alpha);
        for (size_t i = 0; i < chw; i++) y[i] = x[i] * RLRN_POW(work[i], beta);
    }
}

/* The scale recomputed from in (the forward's bits), out as in * s^-beta (rounded as the
 * forward rounded it): tower_lrn_backward's operations on the same values. */
HOT_LOOPS
void tower_lrn_backward_lean(real *din, const real *dout, const real *in, int B, int C,
                             int HW, int n, real k, real alpha, real beta, real *work)
{
    size_t chw = (size_t)C * HW;
    real *s = work, *q = work + chw, *dx = work + 2 * chw;
    for (int b = 0; b < B; b++) {
        const real *x = in + b * chw, *g = dout + b * chw;
        lrn_scale_image(s, x, C, HW, n, k, alpha);
        for (size_t i = 0; i < chw; i++) {
            real qi = RLRN_POW(s[i], beta), yi = x[i] * qi;
            q[i] = qi;
            s[i] = g[i] * yi / s[i]; /* t, over the scale it no longer needs */
        }
        /* into dx first: din may be dout, which the image's channels all read */
        lrn_backward_image(dx, g, x, s, q, C, HW, n, alpha, beta);
        memcpy(din + b * chw, dx, sizeof(real) * chw);
    }
}

/* One window's first maximum in row-major scan order (strictly greater replaces, so a
 * tie or a NaN keeps the earlier pixel): its value into *v, its plane index returned.
 * x points at the window's top-left pixel, at plane index at. */
static inline int32_t pool_window(const real *x, int32_t at, int W, int K, real *v)
{
    real bv = x[0];
    int32_t bi = at;
    for (int kh = 0; kh < K; kh++) {
        const real *r = x + (size_t)kh * W;
        for (int kw = 0; kw < K; kw++)
            if (r[kw] > bv) {
                bv = r[kw];
                bi = at + kh * W + kw;
            }
    }
    *v = bv;
    return bi;
}

void tower_maxpool_forward(real *out, int32_t *idx, const real *in,
                           int B, int C, int H, int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
        const real *x = in + bc * H * W;
        real *y = out + bc * Ho * Wo;
        int32_t *ix = idx + bc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int32_t row = oh * S * W;
            real *yr = y + (size_t)oh * Wo;
            int32_t *ir = ix + (size_t)oh * Wo;
            if (K == 3) /* the paper's pools: the window's size known to the compiler */
                for (int ow = 0; ow < Wo; ow++) {
                    int32_t at = row + ow * S;
                    ir[ow] = pool_window(x + at, at, W, 3, &yr[ow]);
                }
            else
                for (int ow = 0; ow < Wo; ow++) {
                    int32_t at = row + ow * S;
                    ir[ow] = pool_window(x + at, at, W, K, &yr[ow]);
                }
        }
    }
}

/* Each output's gradient added to the input it took, in output order: an input in
 * several windows (K > S) gets its windows' gradients summed in (oh, ow) order, from 0. */
void tower_maxpool_backward(real *din, const real *dout, const int32_t *idx,
                            int B, int C, int H, int W, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    size_t HWo = (size_t)Ho * Wo, HW = (size_t)H * W;
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
        real *dx = din + bc * HW;
        const real *g = dout + bc * HWo;
        const int32_t *ix = idx + bc * HWo;
        memset(dx, 0, sizeof(real) * HW);
        for (size_t o = 0; o < HWo; o++) dx[ix[o]] += g[o];
    }
}

HOT_LOOPS
void tower_dropout_forward(real *out, const real *in, size_t n, real p, uint64_t key,
                           int train)
{
    if (!train) {
        for (size_t i = 0; i < n; i++) out[i] = in[i] * (1 - p);
        return;
    }
    float pf = (float)p;
    for (size_t i = 0; i < n; i++) out[i] = base_rng_uniform(key, i) >= pf ? in[i] : 0;
}

HOT_LOOPS
void tower_dropout_backward(real *din, const real *dout, size_t n, real p, uint64_t key)
{
    float pf = (float)p;
    for (size_t i = 0; i < n; i++) din[i] = base_rng_uniform(key, i) >= pf ? dout[i] : 0;
}

/* The same mask as the paper's dropout; the scale 1/(1-p) is rounded once to real and
 * multiplied in, as the CUDA twin does (kernels.h). */
HOT_LOOPS
void tower_dropout_inverted_forward(real *out, const real *in, size_t n, real p, uint64_t key,
                                    int train)
{
    if (!train) {
        if (out != in) memcpy(out, in, sizeof(real) * n);
        return;
    }
    float pf = (float)p;
    real scale = (real)(1.0 / (1.0 - (double)p));
    for (size_t i = 0; i < n; i++) out[i] = base_rng_uniform(key, i) >= pf ? in[i] * scale : 0;
}

HOT_LOOPS
void tower_dropout_inverted_backward(real *din, const real *dout, size_t n, real p,
                                     uint64_t key)
{
    float pf = (float)p;
    real scale = (real)(1.0 / (1.0 - (double)p));
    for (size_t i = 0; i < n; i++)
        din[i] = base_rng_uniform(key, i) >= pf ? dout[i] * scale : 0;
}

static size_t logit_at(int b, int c, int B, int Vt)
{
    return (size_t)(c / Vt) * B * Vt + (size_t)b * Vt + c % Vt;
}

void tower_softmax_xent_forward(real *losses, real *probs, const real *logits,
                                const int32_t *labels, int B, int T, int Vt)
{
    int V = T * Vt;
    for (int b = 0; b < B; b++) {
        real mx = logits[logit_at(b, 0, B, Vt)];
        for (int c = 1; c < V; c++) {
            real z = logits[logit_at(b, c, B, Vt)];
            if (z > mx) mx = z;
        }
        double sum = 0; /* double: 1000 terms, and it costs nothing here */
        for (int c = 0; c < V; c++) {
            size_t i = logit_at(b, c, B, Vt);
            probs[i] = REXP(logits[i] - mx);
            sum += probs[i];
        }
        real inv = (real)(1.0 / sum);
        for (int c = 0; c < V; c++) probs[logit_at(b, c, B, Vt)] *= inv;
        losses[b] = (real)(log(sum) + mx - logits[logit_at(b, labels[b], B, Vt)]);
    }
}

void tower_softmax_xent_backward(real *dlogits, const real *probs, const int32_t *labels,
                                 int B, int T, int Vt, int slot)
{
    (void)T;
    real invB = (real)1 / B;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < Vt; j++) {
            int c = slot * Vt + j;
            real p = probs[logit_at(b, c, B, Vt)];
            dlogits[(size_t)b * Vt + j] = (p - (c == labels[b] ? 1 : 0)) * invB;
        }
}

HOT_LOOPS
void tower_sgd_update(real *w, real *v, const real *g, size_t n, real lr, real momentum,
                      real wd)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] - wd * lr * w[i] - lr * g[i];
        w[i] += v[i];
    }
}

void tower_adam_scalars(double lr, double beta1, double beta2, int64_t t, double *step_size,
                        double *bc2_sqrt)
{
    *step_size = lr / (1.0 - pow(beta1, (double)t));
    *bc2_sqrt = sqrt(1.0 - pow(beta2, (double)t));
}

/* Each operation rounded on its own in this order (no FMA: -ffp-contract=off), which is
 * what tower_k_adam in kernels.h does on the GPU, so the two agree bit for bit. */
HOT_LOOPS
void tower_adam_update(real *w, real *m, real *v, const real *g, size_t n, real step_size,
                       real beta1, real beta2, real eps, real bc2_sqrt, real wd)
{
    real one_b1 = 1 - beta1, one_b2 = 1 - beta2;
    for (size_t i = 0; i < n; i++) {
        real gi = g[i] + wd * w[i];
        real mi = beta1 * m[i] + one_b1 * gi;
        real vi = beta2 * v[i] + one_b2 * (gi * gi);
        real denom = RSQRT(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - step_size * (mi / denom);
    }
}
