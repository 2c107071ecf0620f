/* test_layers_cuda.c: every CUDA layer, forward and backward, against the CPU backend on
 * random inputs at the real AlexNet shapes (the plan of the paper's net; batch 4 to keep
 * the CPU side quick). Prints the maximum absolute and relative error of every output
 * and checks each against a per-layer tolerance:
 *   - GEMM layers (conv, fc) and LRN, softmax: within rounding (cuBLAS and OpenBLAS sum
 *     in different orders; expf/powf differ by an ulp or two);
 *   - ReLU, max-pool, dropout, the SGD update and the fc bias gradient: bit-identical
 *     (the same float operations in the same order);
 *   - the bf16 conv and fc (--precision bf16): every output within the bf16 bound of its
 *     reduction length (bf16_bound.h), and the device's bf16 rounding the host's, bit for
 *     bit.
 * Skips when no CUDA device is present. */
#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_bound.h"
#include "gpu_util.h"
#include "tower/cuda/kernels.h"
#include "tower/tower.h"

#define BATCH 4

/* Tolerances on max |gpu - cpu| / max |cpu| (see gpu_util.h). */
#define TOL_GEMM_FWD 2e-5  /* up to 2304 products per output, fp32 */
#define TOL_GEMM_BWD 1e-4  /* weight gradients sum B*Ho*Wo products (12100 for conv1) */
#define TOL_LRN 2e-5       /* a few ulp: the rest of the layer rounds differently on the two sides */
#define TOL_SOFTMAX 2e-6
#define TOL_EXACT 0.0

static tower_plan plan;
static cublasHandle_t blas;
static cudaStream_t stream;

static void setup(void)
{
    tower_config cfg = {.towers = 2, .classes = 1000, .batch = BATCH, .in_size = 224,
                        .in_ch = 3, .width_div = 1};
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
}

/* The GPU half of every test: a device, a stream and a cuBLAS handle bound to it,
 * plain FP32 math as the tower uses. */
static void gpu_start(void)
{
    TT_NEED_GPUS(1);
    TT_CUDA(cudaSetDevice(0));
    TT_CUDA(cudaStreamCreate(&stream));
    cr_assert_eq(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
    cr_assert_eq(cublasSetStream(blas, stream), CUBLAS_STATUS_SUCCESS);
    cr_assert_eq(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
}

static void gpu_stop(void)
{
    TT_CUDA(cudaStreamSynchronize(stream));
    cublasDestroy(blas);
    cudaStreamDestroy(stream);
}

/* Downloads dev (n) and compares with ref; asserts. */
static void check(const char *what, const float *dev, const float *ref, size_t n, double tol)
{
    float *got = tt_host_alloc(n);
    TT_CUDA(cudaStreamSynchronize(stream));
    tt_dev_download(got, dev, n);
    int ok = tt_compare(what, got, ref, n, tol);
    free(got);
    cr_assert(ok, "%s: GPU and CPU differ beyond tolerance %.1g", what, tol);
}

static char *name2(const char *layer, const char *what)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "%s %s", layer, what);
    return buf;
}

/* Before a backward with accumulate_dw 0: the CPU's dw (nw) and db (nb) zeroed, as the
 * CPU's step zeroes them, the GPU's NaN (0xff bytes), so that a read of them shows. */
static void grads_for_a_write(float *dw, float *db, float *d_dw, float *d_db, size_t nw,
                              size_t nb)
{
    memset(dw, 0, sizeof(float) * nw);
    memset(db, 0, sizeof(float) * nb);
    TT_CUDA(cudaMemset(d_dw, 0xff, sizeof(float) * nw));
    TT_CUDA(cudaMemset(d_db, 0xff, sizeof(float) * nb));
}

/* ---- conv: every source block, forward (accumulating over sources like net.c) and
 * backward (din per source, dw += per block, db on block 0), then din accumulation ---- */
static void check_conv(int l)
{
    gpu_start();
    const tower_layer_spec *s = tower_plan_row(&plan, l);
    const tower_layer_shape *L = &plan.layer[l];
    int B = BATCH, Ci = L->in_ch, H = L->in_h, Co = L->out_ch, K = s->k, S = L->sources;
    int Ho = L->out_h, kk = Ci * K * K, ldw = S * kk;
    size_t slot = (size_t)B * Ci * H * H, n_in = slot * S, n_w = (size_t)Co * ldw;
    size_t n_out = (size_t)B * Co * Ho * Ho;
    size_t n_col = tower_conv_col_size(Ci, H, H, K, s->stride, s->pad);
    /* chunks that do not divide the batch: a full chunk, then a shorter last one */
    int images = B > 2 ? B / 2 + 1 : 1;
    size_t n_scratch = tower_conv_cuda_scratch_size(Ci, H, H, Co, K, s->stride, s->pad, images);
    uint64_t key = 1000 + (uint64_t)l;

    float *in = tt_host_alloc(n_in), *w = tt_host_alloc(n_w), *b = tt_host_alloc(Co);
    float *dout = tt_host_alloc(n_out), *dw = tt_host_alloc(n_w), *db = tt_host_alloc(Co);
    tt_fill_normal(in, n_in, key, 1.0f);
    tt_fill_normal(w, n_w, key + 1, 1.0f / sqrtf((float)(S * kk)));
    tt_fill_normal(b, Co, key + 2, 0.1f);
    tt_fill_normal(dout, n_out, key + 3, 1.0f);
    tt_fill_normal(dw, n_w, key + 4, 0.01f); /* nonzero: dw and db must accumulate */
    tt_fill_normal(db, Co, key + 5, 0.01f);

    float *d_in = tt_dev_upload(in, n_in), *d_w = tt_dev_upload(w, n_w),
          *d_b = tt_dev_upload(b, Co), *d_dout = tt_dev_upload(dout, n_out),
          *d_dw = tt_dev_upload(dw, n_w), *d_db = tt_dev_upload(db, Co);
    float *d_out = tt_dev_alloc(sizeof(float) * n_out), *d_din = tt_dev_alloc(sizeof(float) * n_in);
    float *d_col = tt_dev_alloc(sizeof(float) * n_scratch);
    float *out = tt_host_alloc(n_out), *din = tt_host_alloc(n_in), *col = tt_host_alloc(n_col);

    for (int src = 0; src < S; src++) {
        tower_conv_forward(out, in + src * slot, w + (size_t)src * kk, src == 0 ? b : NULL, B,
                           Ci, H, H, Co, K, s->stride, s->pad, ldw, src > 0, col);
        tower_conv_forward_cuda(d_out, d_in + src * slot, d_w + (size_t)src * kk,
                                src == 0 ? d_b : NULL, B, Ci, H, H, Co, K, s->stride, s->pad,
                                ldw, src > 0, d_col, images, blas, stream);
    }
    check(name2(s->name, "forward out"), d_out, out, n_out, TOL_GEMM_FWD);

    for (int src = 0; src < S; src++) {
        tower_conv_backward(din + src * slot, dw + (size_t)src * kk, src == 0 ? db : NULL, dout,
                            in + src * slot, w + (size_t)src * kk, B, Ci, H, H, Co, K,
                            s->stride, s->pad, ldw, 0, col);
        tower_conv_backward_cuda(d_din + src * slot, d_dw + (size_t)src * kk,
                                 src == 0 ? d_db : NULL, d_dout, d_in + src * slot,
                                 d_w + (size_t)src * kk, B, Ci, H, H, Co, K, s->stride, s->pad,
                                 ldw, 0, 1, d_col, images, blas, stream);
    }
    check(name2(s->name, "backward din"), d_din, din, n_in, TOL_GEMM_FWD);
    check(name2(s->name, "backward dw"), d_dw, dw, n_w, TOL_GEMM_BWD);
    check(name2(s->name, "backward db"), d_db, db, Co, TOL_GEMM_BWD);

    /* accumulate_din = 1 adds onto din (block 0 only; dw, db not asked for) */
    tower_conv_backward(din, NULL, NULL, dout, in, w, B, Ci, H, H, Co, K, s->stride, s->pad,
                        ldw, 1, col);
    tower_conv_backward_cuda(d_din, NULL, NULL, d_dout, d_in, d_w, B, Ci, H, H, Co, K,
                             s->stride, s->pad, ldw, 1, 1, d_col, images, blas, stream);
    check(name2(s->name, "backward din (accumulate)"), d_din, din, n_in, TOL_GEMM_FWD);

    /* accumulate_dw = 0 writes dw and db over what they hold (NaN here: never read), the
     * CPU's from zero */
    grads_for_a_write(dw, db, d_dw, d_db, n_w, Co);
    for (int src = 0; src < S; src++) {
        tower_conv_backward(NULL, dw + (size_t)src * kk, src == 0 ? db : NULL, dout,
                            in + src * slot, w + (size_t)src * kk, B, Ci, H, H, Co, K,
                            s->stride, s->pad, ldw, 0, col);
        tower_conv_backward_cuda(NULL, d_dw + (size_t)src * kk, src == 0 ? d_db : NULL, d_dout,
                                 d_in + src * slot, d_w + (size_t)src * kk, B, Ci, H, H, Co, K,
                                 s->stride, s->pad, ldw, 0, 0, d_col, images, blas, stream);
    }
    check(name2(s->name, "backward dw (written)"), d_dw, dw, n_w, TOL_GEMM_BWD);
    check(name2(s->name, "backward db (written)"), d_db, db, Co, TOL_GEMM_BWD);

    gpu_stop();
    float *frees[] = {d_in, d_w, d_b, d_dout, d_dw, d_db, d_out, d_din, d_col};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) cudaFree(frees[i]);
    free(in), free(w), free(b), free(dout), free(dw), free(db), free(out), free(din), free(col);
}

Test(cuda_layers, conv1, .init = setup) { check_conv(0); }
Test(cuda_layers, conv2, .init = setup) { check_conv(1); }
Test(cuda_layers, conv3_two_sources, .init = setup) { check_conv(2); }
Test(cuda_layers, conv4, .init = setup) { check_conv(3); }
Test(cuda_layers, conv5, .init = setup) { check_conv(4); }

/* ---- fc, the same pattern ---------------------------------------------------------- */
static void check_fc(int l)
{
    gpu_start();
    const tower_layer_spec *s = tower_plan_row(&plan, l);
    const tower_layer_shape *L = &plan.layer[l];
    int B = BATCH, Cin = L->in_ch, Cout = L->out_ch, S = L->sources, ldw = S * Cin;
    size_t slot = (size_t)B * Cin, n_in = slot * S, n_w = (size_t)Cout * ldw;
    size_t n_out = (size_t)B * Cout;
    uint64_t key = 2000 + (uint64_t)l;

    float *in = tt_host_alloc(n_in), *w = tt_host_alloc(n_w), *b = tt_host_alloc(Cout);
    float *dout = tt_host_alloc(n_out), *dw = tt_host_alloc(n_w), *db = tt_host_alloc(Cout);
    tt_fill_normal(in, n_in, key, 1.0f);
    tt_fill_normal(w, n_w, key + 1, 1.0f / sqrtf((float)ldw));
    tt_fill_normal(b, Cout, key + 2, 0.1f);
    tt_fill_normal(dout, n_out, key + 3, 1.0f);
    tt_fill_normal(dw, n_w, key + 4, 0.01f);
    tt_fill_normal(db, Cout, key + 5, 0.01f);

    float *d_in = tt_dev_upload(in, n_in), *d_w = tt_dev_upload(w, n_w),
          *d_b = tt_dev_upload(b, Cout), *d_dout = tt_dev_upload(dout, n_out),
          *d_dw = tt_dev_upload(dw, n_w), *d_db = tt_dev_upload(db, Cout);
    float *d_out = tt_dev_alloc(sizeof(float) * n_out), *d_din = tt_dev_alloc(sizeof(float) * n_in);
    float *out = tt_host_alloc(n_out), *din = tt_host_alloc(n_in);

    for (int src = 0; src < S; src++) {
        tower_fc_forward(out, in + src * slot, w + (size_t)src * Cin, src == 0 ? b : NULL, B,
                         Cin, Cout, ldw, src > 0);
        tower_fc_forward_cuda(d_out, d_in + src * slot, d_w + (size_t)src * Cin,
                              src == 0 ? d_b : NULL, B, Cin, Cout, ldw, src > 0, blas, stream);
    }
    check(name2(s->name, "forward out"), d_out, out, n_out, TOL_GEMM_FWD);
    for (int src = 0; src < S; src++) {
        tower_fc_backward(din + src * slot, dw + (size_t)src * Cin, src == 0 ? db : NULL, dout,
                          in + src * slot, w + (size_t)src * Cin, B, Cin, Cout, ldw, 0);
        tower_fc_backward_cuda(d_din + src * slot, d_dw + (size_t)src * Cin,
                               src == 0 ? d_db : NULL, d_dout, d_in + src * slot,
                               d_w + (size_t)src * Cin, B, Cin, Cout, ldw, 0, 1, blas, stream);
    }
    check(name2(s->name, "backward din"), d_din, din, n_in, TOL_GEMM_FWD);
    check(name2(s->name, "backward dw"), d_dw, dw, n_w, TOL_GEMM_BWD);
    /* the bias gradient adds the batch in order on both sides: bit-identical */
    check(name2(s->name, "backward db"), d_db, db, Cout, TOL_EXACT);
    tower_fc_backward(din, NULL, NULL, dout, in, w, B, Cin, Cout, ldw, 1);
    tower_fc_backward_cuda(d_din, NULL, NULL, d_dout, d_in, d_w, B, Cin, Cout, ldw, 1, 1, blas,
                           stream);
    check(name2(s->name, "backward din (accumulate)"), d_din, din, n_in, TOL_GEMM_FWD);
    /* accumulate_dw = 0 writes dw and db over what they hold (NaN here: never read), the
     * CPU's from zero */
    grads_for_a_write(dw, db, d_dw, d_db, n_w, Cout);
    for (int src = 0; src < S; src++) {
        tower_fc_backward(NULL, dw + (size_t)src * Cin, src == 0 ? db : NULL, dout,
                          in + src * slot, w + (size_t)src * Cin, B, Cin, Cout, ldw, 0);
        tower_fc_backward_cuda(NULL, d_dw + (size_t)src * Cin, src == 0 ? d_db : NULL, d_dout,
                               d_in + src * slot, d_w + (size_t)src * Cin, B, Cin, Cout, ldw, 0,
                               0, blas, stream);
    }
    check(name2(s->name, "backward dw (written)"), d_dw, dw, n_w, TOL_GEMM_BWD);
    check(name2(s->name, "backward db (written)"), d_db, db, Cout, TOL_EXACT);

    gpu_stop();
    float *frees[] = {d_in, d_w, d_b, d_dout, d_dw, d_db, d_out, d_din};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) cudaFree(frees[i]);
    free(in), free(w), free(b), free(dout), free(dw), free(db), free(out), free(din);
}

Test(cuda_layers, fc6, .init = setup) { check_fc(5); }
Test(cuda_layers, fc7, .init = setup) { check_fc(6); }
Test(cuda_layers, fc8, .init = setup) { check_fc(7); }

/* ---- ReLU at conv1's output size --------------------------------------------------- */
Test(cuda_layers, relu, .init = setup)
{
    gpu_start();
    const tower_layer_shape *L = &plan.layer[0];
    size_t n = (size_t)BATCH * L->out_ch * L->out_h * L->out_h;
    float *in = tt_host_alloc(n), *dout = tt_host_alloc(n), *out = tt_host_alloc(n),
          *din = tt_host_alloc(n);
    tt_fill_normal(in, n, 3001, 1.0f);
    tt_fill_normal(dout, n, 3002, 1.0f);
    float *d_in = tt_dev_upload(in, n), *d_dout = tt_dev_upload(dout, n);
    float *d_out = tt_dev_alloc(sizeof(float) * n), *d_din = tt_dev_alloc(sizeof(float) * n);
    tower_relu_forward(out, in, n);
    tower_relu_forward_cuda(d_out, d_in, n, stream);
    check("relu forward", d_out, out, n, TOL_EXACT);
    tower_relu_backward(din, dout, out, n);
    tower_relu_backward_cuda(d_din, d_dout, d_out, n, stream);
    check("relu backward", d_din, din, n, TOL_EXACT);
    /* in place, as net.c calls it */
    tower_relu_forward_cuda(d_in, d_in, n, stream);
    check("relu forward in place", d_in, out, n, TOL_EXACT);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_din);
    free(in), free(dout), free(out), free(din);
}

/* ---- LRN after conv1 and conv2 (post-ReLU-like inputs, large enough that the
 * normalisation is far from 1) ------------------------------------------------------- */
static void check_lrn(int l)
{
    gpu_start();
    const tower_layer_spec *s = tower_plan_row(&plan, l);
    const tower_layer_shape *L = &plan.layer[l];
    int B = BATCH, C = L->out_ch, HW = L->out_h * L->out_h;
    size_t n = (size_t)B * C * HW;
    float *in = tt_host_alloc(n), *dout = tt_host_alloc(n), *out = tt_host_alloc(n),
          *scale = tt_host_alloc(n), *din = tt_host_alloc(n);
    tt_fill_normal(in, n, 4000 + (uint64_t)l, 20.0f);
    for (size_t i = 0; i < n; i++) in[i] = in[i] > 0 ? in[i] : 0; /* as after a ReLU */
    tt_fill_normal(dout, n, 4100 + (uint64_t)l, 1.0f);
    float *d_in = tt_dev_upload(in, n), *d_dout = tt_dev_upload(dout, n);
    float *d_out = tt_dev_alloc(sizeof(float) * n), *d_scale = tt_dev_alloc(sizeof(float) * n),
          *d_din = tt_dev_alloc(sizeof(float) * n);
    float k = (float)TOWER_LRN_K, a = (float)TOWER_LRN_ALPHA, be = (float)TOWER_LRN_BETA;
    tower_lrn_forward(out, scale, in, B, C, HW, TOWER_LRN_N, k, a, be);
    tower_lrn_forward_cuda(d_out, d_scale, d_in, B, C, HW, TOWER_LRN_N, k, a, be, stream);
    check(name2(s->name, "lrn forward out"), d_out, out, n, TOL_LRN);
    check(name2(s->name, "lrn forward scale"), d_scale, scale, n, TOL_LRN);
    tower_lrn_backward(din, dout, in, out, scale, B, C, HW, TOWER_LRN_N, k, a, be);
    tower_lrn_backward_cuda(d_din, d_dout, d_in, d_out, d_scale, B, C, HW, TOWER_LRN_N, k, a,
                            be, stream);
    check(name2(s->name, "lrn backward din"), d_din, din, n, TOL_LRN);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_scale), cudaFree(d_din);
    free(in), free(dout), free(out), free(scale), free(din);
}

Test(cuda_layers, lrn1, .init = setup) { check_lrn(0); }
Test(cuda_layers, lrn2, .init = setup) { check_lrn(1); }

/* ---- overlapping max-pool after conv1, conv2, conv5: indices and values identical -- */
static void check_pool(int l)
{
    gpu_start();
    const tower_layer_spec *s = tower_plan_row(&plan, l);
    const tower_layer_shape *L = &plan.layer[l];
    int B = BATCH, C = L->out_ch, H = L->out_h, Ho = L->final_h;
    size_t n_in = (size_t)B * C * H * H, n_out = (size_t)B * C * Ho * Ho;
    float *in = tt_host_alloc(n_in), *dout = tt_host_alloc(n_out), *out = tt_host_alloc(n_out),
          *din = tt_host_alloc(n_in);
    int32_t *idx = calloc(n_out, sizeof(int32_t)), *gidx = calloc(n_out, sizeof(int32_t));
    cr_assert(idx && gidx);
    tt_fill_normal(in, n_in, 5000 + (uint64_t)l, 1.0f);
    for (size_t i = 0; i < n_in; i += 7) in[i] = 0; /* ties, as ReLU zeros make them */
    tt_fill_normal(dout, n_out, 5100 + (uint64_t)l, 1.0f);
    float *d_in = tt_dev_upload(in, n_in), *d_dout = tt_dev_upload(dout, n_out);
    float *d_out = tt_dev_alloc(sizeof(float) * n_out), *d_din = tt_dev_alloc(sizeof(float) * n_in);
    int32_t *d_idx = tt_dev_alloc(sizeof(int32_t) * n_out);
    tower_maxpool_forward(out, idx, in, B, C, H, H, TOWER_POOL_K, TOWER_POOL_STRIDE);
    tower_maxpool_forward_cuda(d_out, d_idx, d_in, B, C, H, H, TOWER_POOL_K, TOWER_POOL_STRIDE,
                               stream);
    check(name2(s->name, "maxpool forward"), d_out, out, n_out, TOL_EXACT);
    TT_CUDA(cudaStreamSynchronize(stream));
    TT_CUDA(cudaMemcpy(gidx, d_idx, sizeof(int32_t) * n_out, cudaMemcpyDeviceToHost));
    size_t differ = 0;
    for (size_t i = 0; i < n_out; i++) differ += gidx[i] != idx[i];
    printf("%-34s %zu of %zu indices differ\n", name2(s->name, "maxpool argmax"), differ, n_out);
    cr_assert_eq(differ, 0, "max-pool indices differ");
    tower_maxpool_backward(din, dout, idx, B, C, H, H, TOWER_POOL_K, TOWER_POOL_STRIDE);
    tower_maxpool_backward_cuda(d_din, d_dout, d_idx, B, C, H, H, TOWER_POOL_K,
                                TOWER_POOL_STRIDE, stream);
    check(name2(s->name, "maxpool backward"), d_din, din, n_in, TOL_EXACT);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_din), cudaFree(d_idx);
    free(in), free(dout), free(out), free(din), free(idx), free(gidx);
}

Test(cuda_layers, maxpool1, .init = setup) { check_pool(0); }
Test(cuda_layers, maxpool2, .init = setup) { check_pool(1); }
Test(cuda_layers, maxpool5, .init = setup) { check_pool(4); }

/* The fused passes reading a kept bf16 input (a row keeping its ReLU's output in bf16 only):
 * bit for bit the fp32 kernels on the widened input (pooled output, argmax, pw, din), and
 * the bf16 gradient with din not written (the step's hand-over) the one written with it. */
static void check_lrn_pool_kept(const char *name, const float *in, const float *d_dpool, int B,
                                int C, int H, int W, float k, float a, float be, int K, int S)
{
    int Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    size_t n = (size_t)B * C * H * W, n_out = (size_t)B * C * Ho * Wo;
    uint16_t *inb = calloc(n, sizeof(uint16_t)), *g1 = calloc(n, sizeof(uint16_t));
    uint16_t *g2 = calloc(n, sizeof(uint16_t)), *d_inb = NULL, *d_g1 = NULL, *d_g2 = NULL;
    float *inw = tt_host_alloc(n), *ref = tt_host_alloc(n);
    int32_t *i1 = calloc(n_out, sizeof(int32_t)), *i2 = calloc(n_out, sizeof(int32_t));
    cr_assert(inb && g1 && g2 && i1 && i2);
    for (size_t i = 0; i < n; i++) inb[i] = tower_k_bf16(in[i]), inw[i] = tower_k_bf16_float(inb[i]);
    float *d_inw = tt_dev_upload(inw, n);
    float *d_o1 = tt_dev_alloc(sizeof(float) * n_out), *d_o2 = tt_dev_alloc(sizeof(float) * n_out);
    float *d_p1 = tt_dev_alloc(sizeof(float) * n), *d_p2 = tt_dev_alloc(sizeof(float) * n);
    float *d_d1 = tt_dev_alloc(sizeof(float) * n), *d_d2 = tt_dev_alloc(sizeof(float) * n);
    int32_t *d_i1 = tt_dev_alloc(sizeof(int32_t) * n_out), *d_i2 = tt_dev_alloc(sizeof(int32_t) * n_out);
    TT_CUDA(cudaMalloc((void **)&d_inb, sizeof(uint16_t) * n));
    TT_CUDA(cudaMalloc((void **)&d_g1, sizeof(uint16_t) * n));
    TT_CUDA(cudaMalloc((void **)&d_g2, sizeof(uint16_t) * n));
    TT_CUDA(cudaMemcpy(d_inb, inb, sizeof(uint16_t) * n, cudaMemcpyHostToDevice));
    TT_CUDA(cudaMemset(d_g1, 0xff, sizeof(uint16_t) * n));
    TT_CUDA(cudaMemset(d_g2, 0xff, sizeof(uint16_t) * n));
    tower_lrn_maxpool_forward_cuda(d_o1, NULL, d_i1, d_p1, d_inw, NULL, B, C, H, W, TOWER_LRN_N,
                                   k, a, be, K, S, stream);
    tower_lrn_maxpool_forward_cuda(d_o2, NULL, d_i2, d_p2, NULL, d_inb, B, C, H, W, TOWER_LRN_N,
                                   k, a, be, K, S, stream);
    tower_lrn_maxpool_backward_cuda(d_d1, d_g1, d_dpool, d_i1, d_inw, NULL, d_p1, B, C, H, W,
                                    TOWER_LRN_N, k, a, be, K, S, stream);
    tower_lrn_maxpool_backward_cuda(d_d2, NULL, d_dpool, d_i2, NULL, d_inb, d_p2, B, C, H, W,
                                    TOWER_LRN_N, k, a, be, K, S, stream);
    tower_lrn_maxpool_backward_cuda(NULL, d_g2, d_dpool, d_i2, NULL, d_inb, d_p2, B, C, H, W,
                                    TOWER_LRN_N, k, a, be, K, S, stream);
    TT_CUDA(cudaStreamSynchronize(stream));
    tt_dev_download(ref, d_o1, n_out);
    check(name2(name, "lrn+pool bf16 input out"), d_o2, ref, n_out, TOL_EXACT);
    TT_CUDA(cudaMemcpy(i1, d_i1, sizeof(int32_t) * n_out, cudaMemcpyDeviceToHost));
    TT_CUDA(cudaMemcpy(i2, d_i2, sizeof(int32_t) * n_out, cudaMemcpyDeviceToHost));
    cr_assert(memcmp(i1, i2, sizeof(int32_t) * n_out) == 0, "%s: bf16 input argmax", name);
    tt_dev_download(ref, d_p1, n);
    check(name2(name, "lrn+pool bf16 input pw"), d_p2, ref, n, TOL_EXACT);
    tt_dev_download(ref, d_d1, n);
    check(name2(name, "lrn+pool bf16 input din"), d_d2, ref, n, TOL_EXACT);
    TT_CUDA(cudaMemcpy(g1, d_g1, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost));
    TT_CUDA(cudaMemcpy(g2, d_g2, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost));
    cr_assert(memcmp(g1, g2, sizeof(uint16_t) * n) == 0,
              "%s: the bf16 gradient with din not written differs", name);
    cudaFree(d_inw), cudaFree(d_o1), cudaFree(d_o2), cudaFree(d_p1), cudaFree(d_p2);
    cudaFree(d_d1), cudaFree(d_d2), cudaFree(d_i1), cudaFree(d_i2), cudaFree(d_inb);
    cudaFree(d_g1), cudaFree(d_g2);
    free(inb), free(g1), free(g2), free(inw), free(ref), free(i1), free(i2);
}

/* ---- LRN then max-pool fused (conv1, conv2 of the paper, and an awkward shape: planes in
 * bands, 37 channels, inputs of both signs): the fused kernels against the unfused CUDA
 * kernels bit for bit (pooled output, argmax, input gradient; in * pw against the unfused
 * LRN's output), and against the CPU within the LRN's tolerance. The CPU's gradient is
 * taken through the GPU's argmax: where two window values are within the LRN's rounding
 * of each other the two sides may pick different maxima. */
static void check_lrn_pool_beta(const char *name, int B, int C, int H, int W, int signed_in,
                                float be)
{
    gpu_start();
    int K = TOWER_POOL_K, S = TOWER_POOL_STRIDE, Ho = (H - K) / S + 1, Wo = (W - K) / S + 1;
    size_t n = (size_t)B * C * H * W, n_out = (size_t)B * C * Ho * Wo;
    float k = (float)TOWER_LRN_K, a = (float)TOWER_LRN_ALPHA;
    cr_assert(tower_lrn_maxpool_cuda_fits(B, C, H, W, TOWER_LRN_N, K, S), "%s: not fused", name);
    float *in = tt_host_alloc(n), *dpool = tt_host_alloc(n_out), *lrn = tt_host_alloc(n),
          *scale = tt_host_alloc(n), *out = tt_host_alloc(n_out), *dlrn = tt_host_alloc(n),
          *din = tt_host_alloc(n), *got = tt_host_alloc(n), *pw = tt_host_alloc(n);
    int32_t *idx = calloc(n_out, sizeof(int32_t)), *gidx = calloc(n_out, sizeof(int32_t)),
            *fidx = calloc(n_out, sizeof(int32_t));
    cr_assert(idx && gidx && fidx);
    tt_fill_normal(in, n, 4200 + (uint64_t)C, 20.0f);
    if (!signed_in)
        for (size_t i = 0; i < n; i++) in[i] = in[i] > 0 ? in[i] : 0; /* as after a ReLU */
    tt_fill_normal(dpool, n_out, 4300 + (uint64_t)C, 1.0f);
    float *d_in = tt_dev_upload(in, n), *d_dpool = tt_dev_upload(dpool, n_out);
    float *d_lrn = tt_dev_alloc(sizeof(float) * n), *d_scale = tt_dev_alloc(sizeof(float) * n),
          *d_out = tt_dev_alloc(sizeof(float) * n_out), *d_dlrn = tt_dev_alloc(sizeof(float) * n),
          *d_din = tt_dev_alloc(sizeof(float) * n), *d_pw = tt_dev_alloc(sizeof(float) * n),
          *d_out2 = tt_dev_alloc(sizeof(float) * n_out), *d_din2 = tt_dev_alloc(sizeof(float) * n);
    int32_t *d_idx = tt_dev_alloc(sizeof(int32_t) * n_out),
            *d_idx2 = tt_dev_alloc(sizeof(int32_t) * n_out);
    /* unfused, then fused */
    tower_lrn_forward_cuda(d_lrn, d_scale, d_in, B, C, H * W, TOWER_LRN_N, k, a, be, stream);
    tower_maxpool_forward_cuda(d_out, d_idx, d_lrn, B, C, H, W, K, S, stream);
    tower_maxpool_backward_cuda(d_dlrn, d_dpool, d_idx, B, C, H, W, K, S, stream);
    tower_lrn_backward_cuda(d_din, d_dlrn, d_in, d_lrn, d_scale, B, C, H * W, TOWER_LRN_N, k, a,
                            be, stream);
    /* with the pooled output in bf16 too (the next conv's input copy): every one written */
    uint16_t *d_o16 = NULL;
    TT_CUDA(cudaMalloc((void **)&d_o16, sizeof(uint16_t) * n_out));
    TT_CUDA(cudaMemset(d_o16, 0xff, sizeof(uint16_t) * n_out));
    tower_lrn_maxpool_forward_cuda(d_out2, d_o16, d_idx2, d_pw, d_in, NULL, B, C, H, W,
                                   TOWER_LRN_N, k, a, be, K, S, stream);
    tower_lrn_maxpool_backward_cuda(d_din2, NULL, d_dpool, d_idx2, d_in, NULL, d_pw, B, C, H, W,
                                    TOWER_LRN_N, k, a, be, K, S, stream);
    TT_CUDA(cudaStreamSynchronize(stream));
    /* fused against unfused: bit for bit */
    tt_dev_download(out, d_out, n_out);
    check(name2(name, "lrn+pool fused out vs unfused"), d_out2, out, n_out, TOL_EXACT);
    TT_CUDA(cudaMemcpy(gidx, d_idx, sizeof(int32_t) * n_out, cudaMemcpyDeviceToHost));
    TT_CUDA(cudaMemcpy(fidx, d_idx2, sizeof(int32_t) * n_out, cudaMemcpyDeviceToHost));
    size_t differ = 0;
    for (size_t i = 0; i < n_out; i++) differ += fidx[i] != gidx[i];
    printf("%-34s %zu of %zu indices differ\n", name2(name, "lrn+pool fused argmax"), differ,
           n_out);
    cr_assert_eq(differ, 0, "%s: fused and unfused argmax differ", name);
    {
        uint16_t *o16 = calloc(n_out, sizeof(uint16_t));
        cr_assert(o16);
        TT_CUDA(cudaMemcpy(o16, d_o16, sizeof(uint16_t) * n_out, cudaMemcpyDeviceToHost));
        size_t wrong = 0;
        for (size_t i = 0; i < n_out; i++) wrong += o16[i] != tower_k_bf16(out[i]);
        cr_assert_eq(wrong, 0, "%s: %zu of %zu bf16 pooled outputs are not out rounded", name,
                     wrong, n_out);
        free(o16);
        cudaFree(d_o16);
    }
    tt_dev_download(lrn, d_lrn, n);
    tt_dev_download(pw, d_pw, n);
    for (size_t i = 0; i < n; i++) got[i] = in[i] * pw[i]; /* the product forward pooled */
    cr_assert(tt_compare(name2(name, "lrn+pool in * pw vs unfused lrn"), got, lrn, n, TOL_EXACT),
              "%s: in * pw is not the unfused LRN's output", name);
    tt_dev_download(din, d_din, n);
    check(name2(name, "lrn+pool fused din vs unfused"), d_din2, din, n, TOL_EXACT);
    {
        /* the variant that also writes the masked bf16 gradient (for a conv on cuDNN's bf16
         * path): din bit for bit, gb din through the mask (in > 0), rounded */
        float *d_din3 = tt_dev_alloc(sizeof(float) * n), *din3 = tt_host_alloc(n);
        uint16_t *d_gb = NULL, *gb = calloc(n, sizeof(uint16_t));
        cr_assert_not_null(gb);
        TT_CUDA(cudaMalloc((void **)&d_gb, sizeof(uint16_t) * n));
        TT_CUDA(cudaMemset(d_gb, 0xff, sizeof(uint16_t) * n)); /* every element written */
        tower_lrn_maxpool_backward_cuda(d_din3, d_gb, d_dpool, d_idx2, d_in, NULL, d_pw, B, C, H,
                                        W, TOWER_LRN_N, k, a, be, K, S, stream);
        TT_CUDA(cudaStreamSynchronize(stream));
        tt_dev_download(din3, d_din3, n);
        check(name2(name, "lrn+pool fused din, with the bf16 gradient"), d_din2, din3, n,
              TOL_EXACT);
        TT_CUDA(cudaMemcpy(gb, d_gb, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost));
        size_t wrong = 0;
        for (size_t i = 0; i < n; i++)
            wrong += gb[i] != tower_k_bf16(tower_k_relu_grad(din3[i], in[i]));
        cr_assert_eq(wrong, 0, "%s: %zu of %zu bf16 gradients are not din's", name, wrong, n);
        cudaFree(d_din3), cudaFree(d_gb);
        free(din3), free(gb);
    }
    check_lrn_pool_kept(name, in, d_dpool, B, C, H, W, k, a, be, K, S);
    /* against the CPU (its backward through the GPU's argmax) */
    tower_lrn_forward(lrn, scale, in, B, C, H * W, TOWER_LRN_N, k, a, be);
    tower_maxpool_forward(out, idx, lrn, B, C, H, W, K, S);
    differ = 0;
    for (size_t i = 0; i < n_out; i++) differ += fidx[i] != idx[i];
    printf("%-34s %zu of %zu indices differ from the CPU's\n", name2(name, "lrn+pool argmax"),
           differ, n_out);
    check(name2(name, "lrn+pool fused out vs cpu"), d_out2, out, n_out, TOL_LRN);
    for (size_t i = 0; i < n; i++) pw[i] = tower_lrn_pow(scale[i], be);
    check(name2(name, "lrn+pool fused pw vs cpu"), d_pw, pw, n, TOL_LRN);
    tower_maxpool_backward(dlrn, dpool, fidx, B, C, H, W, K, S);
    tower_lrn_backward(din, dlrn, in, lrn, scale, B, C, H * W, TOWER_LRN_N, k, a, be);
    check(name2(name, "lrn+pool fused din vs cpu"), d_din2, din, n, TOL_LRN);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dpool), cudaFree(d_lrn), cudaFree(d_scale), cudaFree(d_out);
    cudaFree(d_dlrn), cudaFree(d_din), cudaFree(d_pw), cudaFree(d_out2), cudaFree(d_din2);
    cudaFree(d_idx), cudaFree(d_idx2);
    free(in), free(dpool), free(lrn), free(scale), free(out), free(dlrn), free(din), free(got);
    free(pw), free(idx), free(gidx), free(fidx);
}

/* the paper's beta runs lrn_maxpool_forward_kernel (s^-0.75 as r r rsqrt(r)), any other
 * lrn_maxpool_forward_pow_kernel (powf) */
static void check_lrn_pool(const char *name, int B, int C, int H, int W, int signed_in)
{
    check_lrn_pool_beta(name, B, C, H, W, signed_in, (float)TOWER_LRN_BETA);
}

Test(cuda_layers, lrn_pool1, .init = setup)
{
    const tower_layer_shape *L = &plan.layer[0];
    check_lrn_pool("conv1", BATCH, L->out_ch, L->out_h, L->out_h, 0);
}
Test(cuda_layers, lrn_pool2, .init = setup)
{
    const tower_layer_shape *L = &plan.layer[1];
    check_lrn_pool("conv2", BATCH, L->out_ch, L->out_h, L->out_h, 0);
}
Test(cuda_layers, lrn_pool_awkward, .init = setup) { check_lrn_pool("70x71", 2, 37, 70, 71, 1); }
Test(cuda_layers, lrn_pool_other_beta, .init = setup)
{
    const tower_layer_shape *L = &plan.layer[1];
    check_lrn_pool_beta("conv2 beta 0.5", BATCH, L->out_ch, L->out_h, L->out_h, 0, 0.5f);
}

/* ---- dropout at fc6's size: the same counter-based mask on both sides --------------- */
Test(cuda_layers, dropout, .init = setup)
{
    gpu_start();
    size_t n = (size_t)BATCH * plan.layer[5].out_ch;
    uint64_t key = tower_layer_key(tower_step_key(42, 7, 1), 5);
    float p = (float)TOWER_DROPOUT_P;
    float *in = tt_host_alloc(n), *dout = tt_host_alloc(n), *out = tt_host_alloc(n),
          *din = tt_host_alloc(n);
    tt_fill_normal(in, n, 6001, 1.0f);
    tt_fill_normal(dout, n, 6002, 1.0f);
    float *d_in = tt_dev_upload(in, n), *d_dout = tt_dev_upload(dout, n);
    float *d_out = tt_dev_alloc(sizeof(float) * n), *d_din = tt_dev_alloc(sizeof(float) * n);
    tower_dropout_forward(out, in, n, p, key, 1);
    tower_dropout_forward_cuda(d_out, d_in, n, p, key, 1, stream);
    check("dropout forward (train)", d_out, out, n, TOL_EXACT);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) kept += out[i] != 0;
    cr_assert(kept > n / 3 && kept < 2 * n / 3, "kept %zu of %zu", kept, n);
    tower_dropout_backward(din, dout, n, p, key);
    tower_dropout_backward_cuda(d_din, d_dout, n, p, key, stream);
    check("dropout backward", d_din, din, n, TOL_EXACT);
    tower_dropout_forward(out, in, n, p, key, 0);
    tower_dropout_forward_cuda(d_out, d_in, n, p, key, 0, stream);
    check("dropout forward (eval)", d_out, out, n, TOL_EXACT);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_din);
    free(in), free(dout), free(out), free(din);
}

/* ---- softmax cross-entropy over the gathered (T=2, B, 500) logits ------------------- */
Test(cuda_layers, softmax_xent, .init = setup)
{
    gpu_start();
    int B = BATCH, T = 2, Vt = plan.vt;
    size_t n = (size_t)T * B * Vt;
    float *logits = tt_host_alloc(n), *probs = tt_host_alloc(n), *losses = tt_host_alloc(B),
          *dl = tt_host_alloc((size_t)B * Vt);
    int32_t labels[BATCH] = {0, 499, 500, 999}; /* both towers' ranges and their edges */
    tt_fill_normal(logits, n, 7001, 3.0f);
    float *d_logits = tt_dev_upload(logits, n);
    float *d_probs = tt_dev_alloc(sizeof(float) * n), *d_losses = tt_dev_alloc(sizeof(float) * B),
          *d_dl = tt_dev_alloc(sizeof(float) * B * Vt);
    int32_t *d_labels = tt_dev_alloc(sizeof labels);
    TT_CUDA(cudaMemcpy(d_labels, labels, sizeof labels, cudaMemcpyHostToDevice));
    tower_softmax_xent_forward(losses, probs, logits, labels, B, T, Vt);
    tower_softmax_xent_forward_cuda(d_losses, d_probs, d_logits, d_labels, B, T, Vt, stream);
    check("softmax probs", d_probs, probs, n, TOL_SOFTMAX);
    check("softmax losses", d_losses, losses, B, TOL_SOFTMAX);
    for (int slot = 0; slot < T; slot++) {
        tower_softmax_xent_backward(dl, probs, labels, B, T, Vt, slot);
        /* from the CPU probs, so the backward kernel alone is compared: bit-identical */
        float *d_cpu_probs = tt_dev_upload(probs, n);
        tower_softmax_xent_backward_cuda(d_dl, d_cpu_probs, d_labels, B, T, Vt, slot, stream);
        check(slot ? "softmax dlogits slot 1" : "softmax dlogits slot 0", d_dl, dl,
              (size_t)B * Vt, TOL_EXACT);
        cudaFree(d_cpu_probs);
    }
    gpu_stop();
    cudaFree(d_logits), cudaFree(d_probs), cudaFree(d_losses), cudaFree(d_dl), cudaFree(d_labels);
    free(logits), free(probs), free(losses), free(dl);
}

/* the softmax kernel's block per sample over other layouts: fewer classes than the block's
 * threads (threads with none), one tower, towers wider than the block with a short last
 * pass, three towers; labels at both ends of the classes and between */
static void check_softmax_shape(int B, int T, int Vt)
{
    gpu_start();
    int V = T * Vt;
    size_t n = (size_t)T * B * Vt;
    float *logits = tt_host_alloc(n), *probs = tt_host_alloc(n), *losses = tt_host_alloc(B);
    int32_t *labels = calloc((size_t)B, sizeof(int32_t));
    cr_assert(labels);
    for (int b = 0; b < B; b++) labels[b] = b == 0 ? 0 : b == 1 ? V - 1 : (b * 37) % V;
    tt_fill_normal(logits, n, 7100 + (uint64_t)V, 3.0f);
    float *d_logits = tt_dev_upload(logits, n);
    float *d_probs = tt_dev_alloc(sizeof(float) * n), *d_losses = tt_dev_alloc(sizeof(float) * B);
    int32_t *d_labels = tt_dev_alloc(sizeof(int32_t) * B);
    TT_CUDA(cudaMemcpy(d_labels, labels, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    tower_softmax_xent_forward(losses, probs, logits, labels, B, T, Vt);
    tower_softmax_xent_forward_cuda(d_losses, d_probs, d_logits, d_labels, B, T, Vt, stream);
    char what[64];
    snprintf(what, sizeof what, "softmax probs (%d, %d, %d)", T, B, Vt);
    check(what, d_probs, probs, n, TOL_SOFTMAX);
    snprintf(what, sizeof what, "softmax losses (%d, %d, %d)", T, B, Vt);
    check(what, d_losses, losses, B, TOL_SOFTMAX);
    gpu_stop();
    cudaFree(d_logits), cudaFree(d_probs), cudaFree(d_losses), cudaFree(d_labels);
    free(logits), free(probs), free(losses), free(labels);
}

Test(cuda_layers, softmax_xent_shapes, .init = setup)
{
    check_softmax_shape(3, 1, 7);
    check_softmax_shape(5, 2, 129);
    check_softmax_shape(4, 1, 1000);
    check_softmax_shape(2, 3, 300);
}

/* ---- the SGD update: bit-identical by construction (no FMA on either side) ---------
 * arena = 0: one tensor through tower_sgd_update_cuda; 1: the whole parameter arena in one
 * tower_sgd_arena_cuda launch against net.c's per-tensor tower_sgd (decay on weights). */
static void check_sgd(size_t n, uint64_t key, int arena)
{
    gpu_start();
    float *w = tt_host_alloc(n), *v = tt_host_alloc(n), *g = tt_host_alloc(n);
    tt_fill_normal(w, n, key, 0.01f);
    tt_fill_normal(v, n, key + 1, 0.001f);
    tt_fill_normal(g, n, key + 2, 0.1f);
    float *d_w = tt_dev_upload(w, n), *d_v = tt_dev_upload(v, n), *d_g = tt_dev_upload(g, n);
    for (int step = 0; step < 3; step++) {
        if (!arena) {
            tower_sgd_update(w, v, g, n, 0.01f, 0.9f, 0.0005f);
            tower_sgd_update_cuda(d_w, d_v, d_g, n, 0.01f, 0.9f, 0.0005f, stream);
            continue;
        }
        for (int l = 0; l < TOWER_LAYERS; l++) {
            const tower_layer_shape *L = &plan.layer[l];
            tower_sgd_update(w + L->w_off, v + L->w_off, g + L->w_off, L->w_count, 0.01f, 0.9f,
                             0.0005f);
            tower_sgd_update(w + L->b_off, v + L->b_off, g + L->b_off, L->b_count, 0.01f, 0.9f,
                             0.0f);
        }
        tower_sgd_arena_cuda(d_w, d_v, d_g, &plan, 0.01f, 0.9f, 0.0005f, stream);
    }
    check(arena ? "sgd arena weights" : "sgd weights", d_w, w, n, TOL_EXACT);
    check(arena ? "sgd arena momentum" : "sgd momentum", d_v, v, n, TOL_EXACT);
    gpu_stop();
    cudaFree(d_w), cudaFree(d_v), cudaFree(d_g);
    free(w), free(v), free(g);
}

Test(cuda_layers, sgd_update, .init = setup) { check_sgd(plan.layer[7].w_count, 8001, 0); }
Test(cuda_layers, sgd_arena, .init = setup) { check_sgd(plan.n_params, 8011, 1); }

/* ---- tanh at conv1's output size: the device's tanhf is within a few ulps of glibc's */
#define TOL_TANH 1e-6
Test(cuda_layers, tanh, .init = setup)
{
    gpu_start();
    const tower_layer_shape *L = &plan.layer[0];
    size_t n = (size_t)BATCH * L->out_ch * L->out_h * L->out_h;
    float *in = tt_host_alloc(n), *dout = tt_host_alloc(n), *out = tt_host_alloc(n),
          *din = tt_host_alloc(n);
    tt_fill_normal(in, n, 3101, 2.0f);
    tt_fill_normal(dout, n, 3102, 1.0f);
    float *d_in = tt_dev_upload(in, n), *d_dout = tt_dev_upload(dout, n);
    float *d_out = tt_dev_alloc(sizeof(float) * n), *d_din = tt_dev_alloc(sizeof(float) * n);
    tower_tanh_forward(out, in, n);
    tower_tanh_forward_cuda(d_out, d_in, n, stream);
    check("tanh forward", d_out, out, n, TOL_TANH);
    /* the backward from the CPU's output on both sides: bit-identical arithmetic */
    float *d_cpu_out = tt_dev_upload(out, n);
    tower_tanh_backward(din, dout, out, n);
    tower_tanh_backward_cuda(d_din, d_dout, d_cpu_out, n, stream);
    check("tanh backward", d_din, din, n, TOL_EXACT);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_din), cudaFree(d_cpu_out);
    free(in), free(dout), free(out), free(din);
}

/* ---- inverted dropout at fc6's size: the same mask and scale on both sides ---------- */
Test(cuda_layers, dropout_inverted, .init = setup)
{
    gpu_start();
    size_t n = (size_t)BATCH * plan.layer[5].out_ch;
    uint64_t key = tower_layer_key(tower_step_key(43, 2, 0), 4);
    float p = 0.5f;
    float *in = tt_host_alloc(n), *dout = tt_host_alloc(n), *out = tt_host_alloc(n),
          *din = tt_host_alloc(n);
    tt_fill_normal(in, n, 6101, 1.0f);
    tt_fill_normal(dout, n, 6102, 1.0f);
    float *d_in = tt_dev_upload(in, n), *d_dout = tt_dev_upload(dout, n);
    float *d_out = tt_dev_alloc(sizeof(float) * n), *d_din = tt_dev_alloc(sizeof(float) * n);
    for (int train = 1; train >= 0; train--) {
        tower_dropout_inverted_forward(out, in, n, p, key, train);
        tower_dropout_inverted_forward_cuda(d_out, d_in, n, p, key, train, stream);
        check(train ? "inverted dropout (train)" : "inverted dropout (eval)", d_out, out, n,
              TOL_EXACT);
    }
    tower_dropout_inverted_backward(din, dout, n, p, key);
    tower_dropout_inverted_backward_cuda(d_din, d_dout, n, p, key, stream);
    check("inverted dropout backward", d_din, din, n, TOL_EXACT);
    gpu_stop();
    cudaFree(d_in), cudaFree(d_dout), cudaFree(d_out), cudaFree(d_din);
    free(in), free(dout), free(out), free(din);
}

/* ---- Adam: per tensor and over the whole arena (no decay on the biases) against the
 * CPU tower's arithmetic: bit-identical (every operation rounded on its own) ---------- */
static void check_adam(size_t n, uint64_t key, int arena)
{
    gpu_start();
    float *w = tt_host_alloc(n), *m = tt_host_alloc(n), *v = tt_host_alloc(n),
          *g = tt_host_alloc(n);
    tt_fill_normal(w, n, key, 0.01f);
    tt_fill_normal(g, n, key + 2, 0.1f);
    float *d_w = tt_dev_upload(w, n), *d_m = tt_dev_upload(m, n), *d_v = tt_dev_upload(v, n),
          *d_g = tt_dev_upload(g, n);
    for (int t = 1; t <= 3; t++) {
        double ss, bc;
        tower_adam_scalars(0.001, 0.9, 0.999, t, &ss, &bc);
        if (!arena) {
            tower_adam_update(w, m, v, g, n, (float)ss, 0.9f, 0.999f, 1e-8f, (float)bc, 1e-4f);
            tower_adam_update_cuda(d_w, d_m, d_v, d_g, n, (float)ss, 0.9f, 0.999f, 1e-8f,
                                   (float)bc, 1e-4f, stream);
            continue;
        }
        for (int l = 0; l < plan.n_layers; l++) {
            const tower_layer_shape *L = &plan.layer[l];
            tower_adam_update(w + L->w_off, m + L->w_off, v + L->w_off, g + L->w_off,
                              L->w_count, (float)ss, 0.9f, 0.999f, 1e-8f, (float)bc, 1e-4f);
            tower_adam_update(w + L->b_off, m + L->b_off, v + L->b_off, g + L->b_off,
                              L->b_count, (float)ss, 0.9f, 0.999f, 1e-8f, (float)bc, 0.0f);
        }
        tower_adam_arena_cuda(d_w, d_m, d_v, d_g, &plan, (float)ss, 0.9f, 0.999f, 1e-8f,
                              (float)bc, 1e-4f, stream);
    }
    check(arena ? "adam arena weights" : "adam weights", d_w, w, n, TOL_EXACT);
    check(arena ? "adam arena first moment" : "adam first moment", d_m, m, n, TOL_EXACT);
    check(arena ? "adam arena second moment" : "adam second moment", d_v, v, n, TOL_EXACT);
    gpu_stop();
    cudaFree(d_w), cudaFree(d_m), cudaFree(d_v), cudaFree(d_g);
    free(w), free(m), free(v), free(g);
}

Test(cuda_layers, adam_update, .init = setup) { check_adam(plan.layer[7].w_count, 8101, 0); }
Test(cuda_layers, adam_arena, .init = setup) { check_adam(plan.n_params, 8111, 1); }

/* ---- bf16 GEMM operands (--precision bf16) ----------------------------------------------
 * Every output of a bf16 layer against the fp32 CPU within the bf16 bound: each GEMM
 * operand rounded once to 8 significant bits moves a product a_k b_k by at most
 * (2u + u^2)|a_k b_k| (u = 2^-8), and both sides sum in fp32, so an output of reduction
 * length K differs by at most f(K) sum_k |a_k b_k| (tt_bf16_factor; the sums of |products|
 * are the CPU layer run on |in|, |w|, |dout|). K: Ci*K*K per source (conv forward), Co*K*K
 * taps (din), B*Ho*Wo (dw, db); fc: S*Cin, Cout, B. Random data's typical error is far
 * below the bound (about u/4 of max|ref|, printed). */

static uint16_t *dev_bf16_of(const float *d_x, size_t n)
{
    uint16_t *d = tt_dev_alloc(sizeof(uint16_t) * (n ? n : 1));
    tower_cast_bf16_cuda(d, d_x, n, stream);
    return d;
}

/* The device's rounding (the cast kernel, cvt.rn.bf16.f32) against the host's
 * (tower_k_bf16): every bf16 value and the floats around its ties, random bit patterns,
 * subnormals, the largest floats, infinities and NaNs, bit for bit. */
Test(cuda_layers, bf16_cast_bits, .init = setup)
{
    gpu_start();
    size_t n = (size_t)6 << 16, at = 0;
    float *x = tt_host_alloc(n + 4096);
    uint32_t specials[] = {0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x00008000u, 0x00018000u,
                           0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffffffffu,
                           0x80000000u, 0x00000001u};
    for (uint32_t h = 0; h <= 0xffffu; h++) {
        uint32_t u[6] = {h << 16, h << 16 | 0x7fffu, h << 16 | 0x8000u, h << 16 | 0x8001u,
                         h << 16 | 1u, (uint32_t)base_rng_mix(7, h)};
        for (int k = 0; k < 6; k++) memcpy(&x[at++], &u[k], sizeof(float));
    }
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++)
        memcpy(&x[at++], &specials[k], sizeof(float));
    for (uint32_t m = 0; m < 2048; m++) { /* subnormals */
        uint32_t u = (uint32_t)base_rng_mix(8, m) & 0x007fffffu;
        memcpy(&x[at++], &u, sizeof(float));
    }
    float *d_x = tt_dev_upload(x, at);
    uint16_t *d_h = dev_bf16_of(d_x, at), *h = calloc(at, sizeof(uint16_t));
    cr_assert_not_null(h);
    TT_CUDA(cudaStreamSynchronize(stream));
    TT_CUDA(cudaMemcpy(h, d_h, sizeof(uint16_t) * at, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < at; i++)
        if (h[i] != tower_k_bf16(x[i]) && bad++ < 5)
            printf("bf16 of %a: device %#06x, host %#06x\n", (double)x[i], h[i],
                   tower_k_bf16(x[i]));
    printf("bf16 cast: %zu values, %zu differ from the host's rounding\n", at, bad);
    cr_assert_eq(bad, 0, "the device rounds %zu of %zu values otherwise than the host", bad, at);
    gpu_stop();
    cudaFree(d_x), cudaFree(d_h), free(x), free(h);
}

static void expect_bf16(const char *what, const float *dev, const float *ref, const float *absref,
                        size_t n, long K)
{
    float *got = tt_host_alloc(n);
    TT_CUDA(cudaStreamSynchronize(stream));
    tt_dev_download(got, dev, n);
    int ok = tt_bf16_within(what, got, ref, absref, n, tt_bf16_factor(K));
    free(got);
    cr_assert(ok, "%s: beyond the bf16 bound", what);
}

static float *abs_dup(const float *x, size_t n)
{
    float *a = tt_host_alloc(n);
    for (size_t i = 0; i < n; i++) a[i] = fabsf(x[i]);
    return a;
}

/* conv row l with the fused ReLU in bf16 (every source, as net.c drives it) against the
 * CPU's conv, ReLU and their backward; the ReLU mask is the CPU's output on both sides */
static void check_conv_bf16(int l)
{
    gpu_start();
    const tower_layer_spec *s = tower_plan_row(&plan, l);
    const tower_layer_shape *L = &plan.layer[l];
    int B = BATCH, Ci = L->in_ch, H = L->in_h, Co = L->out_ch, K = s->k, S = L->sources;
    int Ho = L->out_h, kk = Ci * K * K, ldw = S * kk;
    size_t slot = (size_t)B * Ci * H * H, n_in = slot * S, n_w = (size_t)Co * ldw;
    size_t n_out = (size_t)B * Co * Ho * Ho;
    size_t n_col = tower_conv_col_size(Ci, H, H, K, s->stride, s->pad);
    int images = B > 2 ? B / 2 + 1 : 1;
    size_t sb = tower_conv_cuda_scratch_bytes_bf16(Ci, H, H, Co, K, s->stride, s->pad, images,
                                                   1);
    uint64_t key = 3000 + (uint64_t)l;
    float *in = tt_host_alloc(n_in), *w = tt_host_alloc(n_w), *b = tt_host_alloc(Co);
    float *dout = tt_host_alloc(n_out);
    tt_fill_normal(in, n_in, key, 1.0f);
    tt_fill_normal(w, n_w, key + 1, 1.0f / sqrtf((float)(S * kk)));
    tt_fill_normal(b, Co, key + 2, 0.1f);
    tt_fill_normal(dout, n_out, key + 3, 1.0f);
    float *a_in = abs_dup(in, n_in), *a_w = abs_dup(w, n_w), *a_b = abs_dup(b, Co);
    float *out = tt_host_alloc(n_out), *aout = tt_host_alloc(n_out), *col = tt_host_alloc(n_col);
    float *din = tt_host_alloc(n_in), *adin = tt_host_alloc(n_in);
    float *dw = tt_host_alloc(n_w), *adw = tt_host_alloc(n_w);
    float *db = tt_host_alloc(Co), *adb = tt_host_alloc(Co);
    float *d_in = tt_dev_upload(in, n_in), *d_w = tt_dev_upload(w, n_w),
          *d_b = tt_dev_upload(b, Co), *d_dout = tt_dev_upload(dout, n_out);
    float *d_out = tt_dev_alloc(sizeof(float) * n_out), *d_din = tt_dev_alloc(sizeof(float) * n_in);
    float *d_dw = tt_dev_alloc(sizeof(float) * n_w), *d_db = tt_dev_alloc(sizeof(float) * Co);
    cudaMemset(d_dw, 0xff, sizeof(float) * n_w); /* NaN: written (accumulate_dw 0), not read */
    cudaMemset(d_db, 0xff, sizeof(float) * Co);
    void *d_scratch = tt_dev_alloc(sb);
    uint16_t *d_wb = dev_bf16_of(d_w, n_w);

    for (int src = 0; src < S; src++) {
        tower_conv_forward(out, in + src * slot, w + (size_t)src * kk, src == 0 ? b : NULL, B,
                           Ci, H, H, Co, K, s->stride, s->pad, ldw, src > 0, col);
        tower_conv_forward(aout, a_in + src * slot, a_w + (size_t)src * kk, src == 0 ? a_b : NULL,
                           B, Ci, H, H, Co, K, s->stride, s->pad, ldw, src > 0, col);
        tower_conv_forward_bf16_cuda(d_out, d_in + src * slot, d_wb + (size_t)src * kk,
                                     src == 0 ? d_b : NULL, B, Ci, H, H, Co, K, s->stride,
                                     s->pad, ldw, src > 0, src == S - 1, d_scratch, sb, images,
                                     blas, stream);
    }
    tower_relu_forward(out, out, n_out);
    expect_bf16(name2(s->name, "bf16 forward (ReLU)"), d_out, out, aout, n_out, (long)S * kk + 1);

    float *dact = tt_host_alloc(n_out), *adact = tt_host_alloc(n_out);
    for (size_t i = 0; i < n_out; i++) {
        dact[i] = out[i] > 0 ? dout[i] : 0.0f;
        adact[i] = fabsf(dact[i]);
    }
    float *d_act = tt_dev_upload(out, n_out); /* the CPU's ReLU output: the same mask */
    /* pass 0 writes dw and db over the NaN (accumulate_dw 0) and din; pass 1 adds the same
     * gradient again (accumulate_dw 1), as the CPU's += */
    for (int pass = 0; pass < 2; pass++) {
        for (int src = 0; src < S; src++) {
            float *cd = pass ? NULL : din + src * slot, *acd = pass ? NULL : adin + src * slot;
            tower_conv_backward(cd, dw + (size_t)src * kk, src == 0 ? db : NULL, dact,
                                in + src * slot, w + (size_t)src * kk, B, Ci, H, H, Co, K,
                                s->stride, s->pad, ldw, 0, col);
            tower_conv_backward(acd, adw + (size_t)src * kk, src == 0 ? adb : NULL, adact,
                                a_in + src * slot, a_w + (size_t)src * kk, B, Ci, H, H, Co, K,
                                s->stride, s->pad, ldw, 0, col);
            tower_conv_backward_bf16_cuda(l && !pass ? d_din + src * slot : NULL,
                                          d_dw + (size_t)src * kk, src == 0 ? d_db : NULL,
                                          d_dout, d_act, d_in + src * slot,
                                          d_wb + (size_t)src * kk, B, Ci, H, H, Co, K, s->stride,
                                          s->pad, ldw, 0, pass, d_scratch, sb, images, blas,
                                          stream);
        }
        if (l && !pass)
            expect_bf16(name2(s->name, "bf16 backward din"), d_din, din, adin, n_in,
                        (long)Co * K * K);
        expect_bf16(name2(s->name, pass ? "bf16 backward dw (accumulated)" : "bf16 backward dw"),
                    d_dw, dw, adw, n_w, (long)B * Ho * Ho);
        expect_bf16(name2(s->name, pass ? "bf16 backward db (accumulated)" : "bf16 backward db"),
                    d_db, db, adb, Co, (long)B * Ho * Ho);
    }
    gpu_stop();
    void *frees[] = {d_in, d_w, d_b, d_dout, d_out, d_din, d_dw, d_db, d_scratch, d_wb, d_act};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) cudaFree(frees[i]);
    float *hf[] = {in, w, b, dout, a_in, a_w, a_b, out, aout, col, din, adin, dw, adw, db, adb,
                   dact, adact};
    for (size_t i = 0; i < sizeof hf / sizeof hf[0]; i++) free(hf[i]);
}

Test(cuda_layers, conv1_bf16, .init = setup) { check_conv_bf16(0); }
Test(cuda_layers, conv2_bf16, .init = setup) { check_conv_bf16(1); }
Test(cuda_layers, conv3_two_sources_bf16, .init = setup) { check_conv_bf16(2); }

/* fc row l in bf16 (every source) against the CPU; the bias gradient is fp32 on both sides
 * (the same additions in the same order): bit-identical. As the tower calls them: the
 * forward casts each source's input into its slot of one bf16 buffer, which the backward
 * reads again; the first source's backward casts the output gradient, the others read it. */
static void check_fc_bf16(int l)
{
    gpu_start();
    const tower_layer_spec *s = tower_plan_row(&plan, l);
    const tower_layer_shape *L = &plan.layer[l];
    int B = BATCH, Cin = L->in_ch, Cout = L->out_ch, S = L->sources, ldw = S * Cin;
    size_t slot = (size_t)B * Cin, n_in = slot * S, n_w = (size_t)Cout * ldw;
    size_t n_out = (size_t)B * Cout;
    uint64_t key = 4000 + (uint64_t)l;
    float *in = tt_host_alloc(n_in), *w = tt_host_alloc(n_w), *b = tt_host_alloc(Cout);
    float *dout = tt_host_alloc(n_out);
    tt_fill_normal(in, n_in, key, 1.0f);
    tt_fill_normal(w, n_w, key + 1, 1.0f / sqrtf((float)ldw));
    tt_fill_normal(b, Cout, key + 2, 0.1f);
    tt_fill_normal(dout, n_out, key + 3, 1.0f);
    float *a_in = abs_dup(in, n_in), *a_w = abs_dup(w, n_w), *a_b = abs_dup(b, Cout);
    float *a_dout = abs_dup(dout, n_out);
    float *out = tt_host_alloc(n_out), *aout = tt_host_alloc(n_out);
    float *din = tt_host_alloc(n_in), *adin = tt_host_alloc(n_in);
    float *dw = tt_host_alloc(n_w), *adw = tt_host_alloc(n_w);
    float *db = tt_host_alloc(Cout), *adb = tt_host_alloc(Cout);
    float *d_in = tt_dev_upload(in, n_in), *d_w = tt_dev_upload(w, n_w),
          *d_b = tt_dev_upload(b, Cout), *d_dout = tt_dev_upload(dout, n_out);
    float *d_out = tt_dev_alloc(sizeof(float) * n_out), *d_din = tt_dev_alloc(sizeof(float) * n_in);
    float *d_dw = tt_dev_alloc(sizeof(float) * n_w), *d_db = tt_dev_alloc(sizeof(float) * Cout);
    cudaMemset(d_dw, 0xff, sizeof(float) * n_w); /* NaN: written (accumulate_dw 0), not read */
    cudaMemset(d_db, 0xff, sizeof(float) * Cout);
    uint16_t *d_xb = (uint16_t *)tt_dev_alloc(sizeof(uint16_t) * n_in);
    uint16_t *d_gb = (uint16_t *)tt_dev_alloc(sizeof(uint16_t) * n_out);
    uint16_t *d_wb = dev_bf16_of(d_w, n_w);
    for (int src = 0; src < S; src++) {
        tower_fc_forward(out, in + src * slot, w + (size_t)src * Cin, src == 0 ? b : NULL, B,
                         Cin, Cout, ldw, src > 0);
        tower_fc_forward(aout, a_in + src * slot, a_w + (size_t)src * Cin, src == 0 ? a_b : NULL,
                         B, Cin, Cout, ldw, src > 0);
        tower_fc_forward_bf16_cuda(d_out, d_in + src * slot, d_xb + src * slot,
                                   d_wb + (size_t)src * Cin, src == 0 ? d_b : NULL, B, Cin, Cout,
                                   ldw, src > 0, blas, stream);
    }
    expect_bf16(name2(s->name, "bf16 forward"), d_out, out, aout, n_out, (long)S * Cin + 1);
    for (int src = 0; src < S; src++) {
        tower_fc_backward(din + src * slot, dw + (size_t)src * Cin, src == 0 ? db : NULL, dout,
                          in + src * slot, w + (size_t)src * Cin, B, Cin, Cout, ldw, 0);
        tower_fc_backward(adin + src * slot, adw + (size_t)src * Cin, src == 0 ? adb : NULL,
                          a_dout, a_in + src * slot, a_w + (size_t)src * Cin, B, Cin, Cout, ldw,
                          0);
        tower_fc_backward_bf16_cuda(d_din + src * slot, d_dw + (size_t)src * Cin,
                                    src == 0 ? d_db : NULL, d_dout, d_gb, src == 0,
                                    d_xb + src * slot, d_wb + (size_t)src * Cin, B, Cin, Cout,
                                    ldw, 0, 0, blas, stream);
    }
    expect_bf16(name2(s->name, "bf16 backward din"), d_din, din, adin, n_in, Cout);
    expect_bf16(name2(s->name, "bf16 backward dw"), d_dw, dw, adw, n_w, B);
    check(name2(s->name, "bf16 backward db (fp32)"), d_db, db, Cout, TOL_EXACT);
    gpu_stop();
    void *frees[] = {d_in, d_w, d_b, d_dout, d_out, d_din, d_dw, d_db, d_xb, d_gb, d_wb};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) cudaFree(frees[i]);
    float *hf[] = {in, w, b, dout, a_in, a_w, a_b, a_dout, out, aout, din, adin, dw, adw, db, adb};
    for (size_t i = 0; i < sizeof hf / sizeof hf[0]; i++) free(hf[i]);
}

Test(cuda_layers, fc6_two_sources_bf16, .init = setup) { check_fc_bf16(5); }
Test(cuda_layers, fc8_bf16, .init = setup) { check_fc_bf16(7); }
