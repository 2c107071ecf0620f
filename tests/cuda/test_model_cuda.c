/* test_model_cuda.c: whole training steps of the two-tower net on the GPU against the CPU
 * backend (the model API of src/train/model.h): the tiny net and the full 2012 net, loss
 * and every parameter gradient of both towers; 20 steps of the single-GPU fallback with
 * the loss falling; a GPU run repeating bit for bit; the fallback equal to two GPUs bit
 * for bit (when there are two); the tower threads equal to the serial order and a failed
 * tower stopping the other; a CUDA error inside a layer (injected, and a real kernel
 * fault) failing the step instead of the process; and the memory a tower needs at batch 128. GPU tests skip
 * with a reason when no CUDA device is present. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"
#include "tower/cuda/kernels.h"
#include "train/device.h"
#include "train/model.h"

/* Whole-step tolerances on max |gpu - cpu| / max |cpu| per tensor: every layer's
 * rounding differences (cuBLAS vs OpenBLAS summation order, expf/powf ulps) pile up
 * through eight layers and back. */
#define TOL_LOSS 1e-4
#define TOL_STEP_GRAD 1e-3
#define TOL_TF32_LOSS 5e-3
#define TOL_TF32_GRAD 3e-2
/* --precision bf16: 8 significant bits against TF32's 11, so each GEMM operand's rounding
 * is 2^3 times TF32's, and the tolerances are TF32's times 8 (the per-layer bound is
 * test_layers_cuda.c's; here the rounding has gone through eight layers and back) */
#define TOL_BF16_LOSS 4e-2
#define TOL_BF16_GRAD 0.25

static const tower_config tiny = {.towers = 2, .classes = 10, .batch = 4, .in_size = 67,
                                  .in_ch = 3, .width_div = 8};
/* the paper's full net at a small batch */
static const tower_config full = {.towers = 2, .classes = 1000, .batch = 8, .in_size = 224,
                                  .in_ch = 3, .width_div = 1};

static void make_batch(const tower_config *cfg, float **x, int32_t **labels, uint64_t key)
{
    size_t n = (size_t)cfg->batch * cfg->in_ch * cfg->in_size * cfg->in_size;
    *x = tt_host_alloc(n);
    tt_fill_normal(*x, n, key, 1.0f);
    *labels = calloc((size_t)cfg->batch, sizeof(int32_t));
    cr_assert_not_null(*labels);
    for (int b = 0; b < cfg->batch; b++)
        (*labels)[b] = (int32_t)(base_rng_mix(key + 1, (uint64_t)b) % (uint64_t)cfg->classes);
}

/* One training step of a and b on the same tiny batch (key); their losses. */
static void step_both(model *a, model *b, uint64_t key, double *la, double *lb)
{
    float *x;
    int32_t *labels;
    make_batch(&tiny, &x, &labels, key);
    model_set_batch(a, x, labels);
    model_set_batch(b, x, labels);
    *la = model_train_step(a, 0.01f);
    *lb = model_train_step(b, 0.01f);
    free(x);
    free(labels);
}

static void init_or_fail(model *m, const tower_config *cfg, model_placement place,
                         uint64_t seed)
{
    char err[512] = "";
    cr_assert_eq(model_init(m, cfg, &place, seed, err, sizeof err), 0, "model_init: %s", err);
}

static const model_placement on_cpu = {.cpu = 1};
static const model_placement on_gpu0 = {.ngpus = 1, .gpus = {0, 0}};

/* Compares every parameter gradient (which=1) or parameter (which=0) of every tower,
 * tensor by tensor, and asserts they all agree within tol. */
static void compare_tensors(const model *g, const model *c, int which, double tol)
{
    size_t n = c->plan.n_params;
    float *a = tt_host_alloc(n), *b = tt_host_alloc(n);
    int all_ok = 1;
    for (int t = 0; t < c->towers; t++) {
        model_get_tensor(g, t, which, a);
        model_get_tensor(c, t, which, b);
        for (int l = 0; l < TOWER_LAYERS; l++) {
            const tower_layer_shape *L = &c->plan.layer[l];
            char what[64];
            snprintf(what, sizeof what, "tower %d %s %s%s", t, tower_plan_row(&c->plan, l)->name,
                     which ? "d" : "", "w");
            all_ok &= tt_compare(what, a + L->w_off, b + L->w_off, L->w_count, tol);
            snprintf(what, sizeof what, "tower %d %s %s%s", t, tower_plan_row(&c->plan, l)->name,
                     which ? "d" : "", "b");
            all_ok &= tt_compare(what, a + L->b_off, b + L->b_off, L->b_count, tol);
        }
    }
    free(a);
    free(b);
    cr_assert(all_ok, "GPU and CPU %s differ beyond tolerance %.1g (see above)",
              which ? "gradients" : "parameters", tol);
}

/* One training step (forward with dropout, backward) on CPU and GPU from the same seed
 * and batch: the same loss, the same gradients. Then the update: the same weights. */
/* paths: NULL, or a convolution path per row given to every GPU tower after model_init
 * (tower_cuda_configure_paths: mixed paths in one tower) */
static void step_close_to_cpu_paths(const tower_config *cfg, model_placement gpu,
                                    const int *paths, double tol_loss, double tol_grad)
{
    TT_NEED_GPUS(1);
    model c, g;
    init_or_fail(&c, cfg, on_cpu, 5);
    init_or_fail(&g, cfg, gpu, 5);
    char err[512] = "";
    for (int t = 0; paths && t < g.towers; t++) {
        cr_assert_eq(tower_cuda_configure_paths(&g.tw[t], gpu.precision, paths, err, sizeof err), 0,
                     "%s", err);
        /* cuDNN's context holds the rows on cuDNN alone: its algorithms are named for
         * those rows and no others */
        char desc[2048];
        tower_cuda_describe_conv(&g.tw[t], desc, sizeof desc);
        const char *algos = strstr(desc, "cuDNN ");
        for (int l = 0; l < g.plan.n_layers; l++) {
            if (tower_plan_row(&g.plan, l)->kind != TOWER_CONV) continue;
            char key[64];
            snprintf(key, sizeof key, "%s: forward algo", tower_plan_row(&g.plan, l)->name);
            cr_assert_eq(algos && strstr(algos, key) != NULL, paths[l] == TOWER_CONV_CUDNN,
                         "tower %d: %s %s cuDNN's description: %s", t,
                         tower_plan_row(&g.plan, l)->name,
                         paths[l] == TOWER_CONV_CUDNN ? "missing from" : "in", desc);
        }
    }
    compare_tensors(&g, &c, 0, 0.0); /* the same init, bit for bit */
    float *x;
    int32_t *labels;
    make_batch(cfg, &x, &labels, 77);
    model_set_batch(&c, x, labels);
    model_set_batch(&g, x, labels);
    double lc = model_forward(&c, 1), lg = model_forward(&g, 1);
    printf("loss: cpu %.9g gpu %.9g (rel diff %.3g)\n", lc, lg, fabs(lg - lc) / fabs(lc));
    cr_assert(fabs(lg - lc) <= tol_loss * fabs(lc), "loss cpu %.9g gpu %.9g", lc, lg);
    model_backward(&c);
    model_backward(&g);
    compare_tensors(&g, &c, 1, tol_grad);
    model_update(&c, 0.01f);
    model_update(&g, 0.01f);
    /* the update is small next to the weights (lr g ~ 1e-5 against |w| ~ 1e-2), so the
     * weights alone would pass even without one: the momentum after one step is
     * -lr (g + wd w) (no decay on biases), the update itself, and must match as well */
    compare_tensors(&g, &c, 2, tol_grad);
    if (c.plan.adam) compare_tensors(&g, &c, 3, tol_grad); /* Adam's second moment */
    compare_tensors(&g, &c, 0, tol_grad);
    model_free(&c);
    model_free(&g);
    free(x);
    free(labels);
}

static void step_close_to_cpu(const tower_config *cfg, model_placement gpu, double tol_loss,
                              double tol_grad)
{
    step_close_to_cpu_paths(cfg, gpu, NULL, tol_loss, tol_grad);
}

static void step_matches_cpu(const tower_config *cfg)
{
    step_close_to_cpu(cfg, on_gpu0, TOL_LOSS, TOL_STEP_GRAD);
}

Test(cuda_model, tiny_step_matches_cpu, .timeout = 120) { step_matches_cpu(&tiny); }

/* --precision bf16: one step of the tiny and the full net against the fp32 CPU within
 * bf16's bounds */
Test(cuda_model, bf16_step_close_to_cpu, .timeout = 300)
{
    model_placement bf16 = on_gpu0;
    bf16.precision = TOWER_PRECISION_BF16;
    step_close_to_cpu(&tiny, bf16, TOL_BF16_LOSS, TOL_BF16_GRAD);
    step_close_to_cpu(&full, bf16, TOL_BF16_LOSS, TOL_BF16_GRAD);
}

/* Ten training steps of the tiny net in bf16 and in fp32 on the GPU, from the same init
 * and batches: every loss finite and within 2% of fp32's (the first differs only by the
 * forward's rounding, about u = 2^-8 of the logits; the rest by the drift of ten updates of
 * lr 0.01, small next to the weights), and after them every parameter finite and the
 * momentum (the sum of the updates) within TOL_BF16_GRAD of fp32's. */
#define BF16_STEPS 10
#define TOL_BF16_TRAIN_LOSS 2e-2
Test(cuda_model, bf16_training_close_to_fp32, .timeout = 300)
{
    TT_NEED_GPUS(1);
    model f, h;
    model_placement bf16 = on_gpu0;
    bf16.precision = TOWER_PRECISION_BF16;
    init_or_fail(&f, &tiny, on_gpu0, 9);
    init_or_fail(&h, &tiny, bf16, 9);
    for (int k = 0; k < BF16_STEPS; k++) {
        double lf, lh;
        step_both(&f, &h, 500 + (uint64_t)k, &lf, &lh);
        printf("step %d: loss fp32 %.6f bf16 %.6f (rel diff %.3g)\n", k + 1, lf, lh,
               fabs(lh - lf) / fabs(lf));
        cr_assert(isfinite(lh), "step %d: bf16 loss %g", k + 1, lh);
        cr_assert(fabs(lh - lf) <= TOL_BF16_TRAIN_LOSS * fabs(lf), "step %d: fp32 %.6f bf16 %.6f",
                  k + 1, lf, lh);
    }
    compare_tensors(&h, &f, 2, TOL_BF16_GRAD);   /* momentum: the updates */
    compare_tensors(&h, &f, 0, TOL_BF16_TRAIN_LOSS); /* parameters (finite: tt_compare) */
    model_free(&f);
    model_free(&h);
}

/* The weights' bf16 copy cannot be stale: the update writes it and marks it current, and
 * anything else that writes parameters (here model_set_tensor, as a checkpoint's load
 * writes them) clears the mark, so the next pass casts them again. An evaluation forward
 * (no mark: cast); the parameters written as 1.5 times themselves: the next evaluation
 * differs; a training step (marked), then an evaluation on the update's copy; the same
 * parameters written back unchanged (unmarked): the evaluation on the cast's copy gives the
 * same loss bit for bit (the update's copy is the cast's); the initial parameters written
 * back: the next evaluation gives the first one's loss bit for bit. SGD (the tiny net) and
 * Adam (fmnist's), each with its own update kernel. */
static void expect_mark(model *h, int want, const char *when)
{
    for (int t = 0; t < h->towers; t++)
        cr_assert_eq(tower_cuda_bf16_weights_current(&h->tw[t]), want,
                     "tower %d %s: the bf16 copy %s marked current", t, when,
                     want ? "is not" : "is still");
}

static void bf16_weights_never_stale_on(const tower_config *cfg)
{
    model h;
    model_placement bf16 = on_gpu0;
    bf16.precision = TOWER_PRECISION_BF16;
    init_or_fail(&h, cfg, bf16, 11);
    size_t n = h.plan.n_params;
    float *p0[2] = {tt_host_alloc(n), tt_host_alloc(n)};
    for (int t = 0; t < h.towers; t++) model_get_tensor(&h, t, 0, p0[t]);
    float *x;
    int32_t *labels;
    make_batch(cfg, &x, &labels, 600);
    expect_mark(&h, 0, "after the start-up");
    model_set_batch(&h, x, labels);
    double l0 = model_forward(&h, 0);
    expect_mark(&h, 0, "after an evaluation");
    float *scaled = tt_host_alloc(n);
    for (int t = 0; t < h.towers; t++) {
        for (size_t i = 0; i < n; i++) scaled[i] = 1.5f * p0[t][i];
        model_set_tensor(&h, t, 0, scaled);
    }
    free(scaled);
    model_set_batch(&h, x, labels);
    double l1 = model_forward(&h, 0);
    model_set_batch(&h, x, labels);
    model_train_step(&h, 0.05f);
    expect_mark(&h, 1, "after an update");
    model_set_batch(&h, x, labels);
    double lu = model_forward(&h, 0); /* the update's bf16 copy */
    float *now = tt_host_alloc(n);
    for (int t = 0; t < h.towers; t++) {
        model_get_tensor(&h, t, 0, now);
        model_set_tensor(&h, t, 0, now);
    }
    free(now);
    expect_mark(&h, 0, "after model_set_tensor");
    model_set_batch(&h, x, labels);
    double lc = model_forward(&h, 0); /* the cast's, of the same parameters */
    cr_assert(lu == lc, "the update's bf16 copy gave %.17g, the cast's %.17g", lu, lc);
    for (int t = 0; t < h.towers; t++) model_set_tensor(&h, t, 0, p0[t]);
    model_set_batch(&h, x, labels);
    double l2 = model_forward(&h, 0);
    printf("eval loss: initial %.9g, weights x 1.5 %.9g, initial weights written back %.9g\n",
           l0, l1, l2);
    cr_assert(l1 != l0, "the forward read the old bf16 weights after new ones were written");
    cr_assert(l2 == l0, "the forward after the load read stale bf16 weights: %.9g, not %.9g", l2,
              l0);
    model_free(&h);
    free(p0[0]), free(p0[1]), free(x), free(labels);
}

Test(cuda_model, bf16_weights_never_stale, .timeout = 120)
{
    TT_NEED_GPUS(1);
    bf16_weights_never_stale_on(&tiny);
    tower_config adam = tiny;
    adam.net = *tower_net_preset("fmnist");
    adam.towers = adam.net.towers;
    adam.in_ch = adam.net.in_ch;
    bf16_weights_never_stale_on(&adam);
}

Test(cuda_model, tf32_step_close_to_cpu, .timeout = 300)
{
    model_placement tf32 = on_gpu0;
    tf32.precision = TOWER_PRECISION_TF32;
    step_close_to_cpu(&tiny, tf32, TOL_TF32_LOSS, TOL_TF32_GRAD);
    step_close_to_cpu(&full, tf32, TOL_TF32_LOSS, TOL_TF32_GRAD);
}

Test(cuda_model, full_step_matches_cpu, .timeout = 300)
{
    /* the paper's two-tower net; batch 8 keeps the CPU side to a few seconds */
    step_matches_cpu(&full);
}

/* 20 steps on one fixed batch in the single-GPU fallback: the loss falls (the same
 * set-up falls from about 2.2 to about 1.4 on the CPU). */
Test(cuda_model, fallback_20_steps_loss_falls, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model g;
    init_or_fail(&g, &tiny, on_gpu0, 1);
    float *x;
    int32_t *labels;
    make_batch(&tiny, &x, &labels, 99);
    model_set_batch(&g, x, labels);
    double loss[20], first = 0, last = 0;
    for (int s = 0; s < 20; s++) {
        loss[s] = model_train_step(&g, 0.01f);
        printf("step %2d loss %.5f\n", s, loss[s]);
        cr_assert(isfinite(loss[s]), "step %d: loss %g", s, loss[s]);
    }
    for (int s = 0; s < 3; s++) first += loss[s] / 3;
    for (int s = 15; s < 20; s++) last += loss[s] / 5;
    printf("mean of steps 0-2: %.4f, of steps 15-19: %.4f\n", first, last);
    cr_assert(last < first - 0.1, "loss did not fall: %.4f -> %.4f", first, last);
    model_free(&g);
    free(x);
    free(labels);
}

/* Two GPU runs from the same seed: identical losses and weights (no atomics anywhere,
 * cuBLAS deterministic on one GPU model with one stream per handle). */
static void run_steps(const tower_config *cfg, model_placement place, int steps, double *loss,
                      float **params)
{
    model m;
    init_or_fail(&m, cfg, place, 3);
    float *x;
    int32_t *labels;
    for (int s = 0; s < steps; s++) {
        make_batch(cfg, &x, &labels, 500 + (uint64_t)s);
        model_set_batch(&m, x, labels);
        loss[s] = model_train_step(&m, 0.01f);
        free(x);
        free(labels);
    }
    for (int t = 0; t < m.towers; t++) {
        params[t] = tt_host_alloc(m.plan.n_params);
        model_get_tensor(&m, t, 0, params[t]);
    }
    model_free(&m);
}

static void expect_identical_runs(model_placement pa, model_placement pb, const char *what)
{
    enum { STEPS = 3 };
    double la[STEPS], lb[STEPS];
    float *pa_params[2], *pb_params[2];
    run_steps(&tiny, pa, STEPS, la, pa_params);
    run_steps(&tiny, pb, STEPS, lb, pb_params);
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &tiny, err, sizeof err), 0);
    for (int s = 0; s < STEPS; s++) {
        printf("%s: step %d loss %.9g vs %.9g\n", what, s, la[s], lb[s]);
        cr_assert(la[s] == lb[s], "%s: step %d loss %.17g vs %.17g", what, s, la[s], lb[s]);
    }
    for (int t = 0; t < tiny.towers; t++) {
        cr_assert(tt_compare(what, pb_params[t], pa_params[t], plan.n_params, 0.0),
                  "%s: tower %d weights differ", what, t);
        free(pa_params[t]);
        free(pb_params[t]);
    }
}

/* The GPU towers write each gradient once a step with beta 0 instead of zeroing the
 * gradients and adding to them. The same arithmetic (0 + x is x), so the steps should
 * agree bit for bit, and are reported as such or not; asserted within fp32 rounding, in
 * case a library picks another kernel for beta 0 than for beta 1. Both conv paths, fp32
 * and bf16 (test_kernels_host checks the chunk loop's beta, later chunks adding to what
 * the first wrote, on the host). */
static void expect_same_steps(model_placement pa, model_placement pb, const char *what)
{
    enum { STEPS = 3 };
    model ma, mb;
    init_or_fail(&ma, &tiny, pa, 3);
    init_or_fail(&mb, &tiny, pb, 3);
    size_t n = ma.plan.n_params;
    float *ga = tt_host_alloc(n), *gb = tt_host_alloc(n);
    int identical = 1;
    for (int s = 0; s < STEPS; s++) {
        double la, lb;
        step_both(&ma, &mb, 500 + (uint64_t)s, &la, &lb);
        printf("%s: step %d loss %.9g vs %.9g\n", what, s, la, lb);
        identical &= la == lb;
        cr_assert(fabs(la - lb) <= 1e-6 * fabs(lb), "%s: step %d loss %.17g vs %.17g", what, s,
                  la, lb);
        /* every step's gradients, tensor by tensor (a block left unwritten would hold the
         * step before's), then the weights */
        for (int t = 0; t < ma.towers; t++)
            for (int which = 0; which < 2; which++) {
                model_get_tensor(&ma, t, which ? 1 : 0, ga);
                model_get_tensor(&mb, t, which ? 1 : 0, gb);
                identical &= memcmp(ga, gb, sizeof(float) * n) == 0;
            }
        compare_tensors(&ma, &mb, 1, 1e-5);
        compare_tensors(&ma, &mb, 0, 1e-6);
    }
    printf("%s: %s\n", what, identical ? "bit-identical" : "within fp32 rounding, not bit-identical");
    free(ga);
    free(gb);
    model_free(&ma);
    model_free(&mb);
}

Test(cuda_model, first_write_equals_zeroing, .timeout = 300)
{
    TT_NEED_GPUS(1);
    model_placement a = on_gpu0, z = on_gpu0;
    z.test_grad_zeroing = 1;
    expect_same_steps(a, z, "gradients written once vs zeroed and added to");
    a.precision = z.precision = TOWER_PRECISION_BF16;
    expect_same_steps(a, z, "bf16: written once vs zeroed and added to");
    if (tower_cuda_have_cudnn()) {
        a.conv = z.conv = TOWER_CONV_CUDNN;
        expect_same_steps(a, z, "bf16 on cuDNN: written once vs zeroed and added to");
        a.precision = z.precision = TOWER_PRECISION_FP32;
        expect_same_steps(a, z, "cuDNN: written once vs zeroed and added to");
    }
}

Test(cuda_model, gpu_runs_repeat_bit_for_bit, .timeout = 120)
{
    TT_NEED_GPUS(1);
    expect_identical_runs(on_gpu0, on_gpu0, "GPU 0 twice");
}

/* ---- the cuDNN convolution path (--conv cudnn): the GEMM path's tolerances against the
 * CPU, and deterministic algorithms only, so it repeats bit for bit too ------------------ */

/* One step of the tiny and the full net on cuDNN at `precision` against the CPU, and two
 * runs bit for bit */
static model_placement on_cudnn(int precision)
{
    model_placement p = on_gpu0;
    p.conv = TOWER_CONV_CUDNN;
    p.precision = precision;
    return p;
}

static void cudnn_steps(int precision, double tol_loss, double tol_grad)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    step_close_to_cpu(&tiny, on_cudnn(precision), tol_loss, tol_grad);
    step_close_to_cpu(&full, on_cudnn(precision), tol_loss, tol_grad);
}

static void cudnn_repeats(int precision, const char *what)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    expect_identical_runs(on_cudnn(precision), on_cudnn(precision), what);
}

Test(cuda_model, cudnn_step_matches_cpu, .timeout = 300)
{
    cudnn_steps(TOWER_PRECISION_FP32, TOL_LOSS, TOL_STEP_GRAD);
}

Test(cuda_model, cudnn_runs_repeat_bit_for_bit, .timeout = 120)
{
    cudnn_repeats(TOWER_PRECISION_FP32, "--conv cudnn twice");
}

/* --precision bf16 on cuDNN (bf16 tensors there, the fp32 activations cast around each
 * call): the bf16 GEMM path's tolerances, and deterministic algorithms, so bit for bit
 * again; below, --conv auto in bf16, each layer timed on both bf16 paths */
Test(cuda_model, cudnn_bf16_step_close_to_cpu, .timeout = 300)
{
    cudnn_steps(TOWER_PRECISION_BF16, TOL_BF16_LOSS, TOL_BF16_GRAD);
}

/* Two steps of ma and mb (a hand-over on and off) on the same batches: every loss, gradient
 * and weight the same, byte for byte */
static void expect_identical_steps(model *ma, model *mb, uint64_t key, const char *what)
{
    size_t n = ma->plan.n_params;
    float *a = tt_host_alloc(n), *b = tt_host_alloc(n);
    for (int s = 0; s < 2; s++) {
        double la, lb;
        step_both(ma, mb, key + (uint64_t)s, &la, &lb);
        cr_assert(la == lb, "%s: step %d: loss %.17g with the hand-over, %.17g without", what, s,
                  la, lb);
        for (int t = 0; t < ma->towers; t++)
            for (int which = 0; which < 2; which++) {
                model_get_tensor(ma, t, which, a);
                model_get_tensor(mb, t, which, b);
                cr_assert(memcmp(a, b, sizeof(float) * n) == 0, "%s: step %d tower %d: %s differ",
                          what, s, t, which ? "gradients" : "weights");
            }
    }
    free(a);
    free(b);
}

/* The LRN + max-pool backward handing conv1's and conv2's bf16 gradient over changes no
 * bit: a step with and without the hand-over, every loss, gradient and weight compared
 * byte for byte */
Test(cuda_model, lrn_handover_changes_no_bit, .timeout = 120)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    for (int acts = 0; acts < 2; acts++) { /* and with --bf16-acts: the _g_h_ kernel against
                                              the _h_ kernel and grad_bf16_h_kernel */
        model_placement pa = on_cudnn(TOWER_PRECISION_BF16), pb = pa;
        pa.bf16_acts = pb.bf16_acts = acts;
        pb.test_no_lrn_handover = 1;
        model ma, mb;
        init_or_fail(&ma, &tiny, pa, 3);
        init_or_fail(&mb, &tiny, pb, 3);
        expect_identical_steps(&ma, &mb, 700, acts ? "with --bf16-acts" : "fp32 activations");
        model_free(&ma);
        model_free(&mb);
    }
}

/* Row l's activations of the last forward of ma and of mb, read back (new buffers, free
 * them); their count. */
static size_t acts_of_both(const model *ma, const model *mb, int l, float **a, float **b)
{
    size_t n = (size_t)ma->plan.cfg.batch * model_layer_units(ma, l);
    char err[256] = "";
    *a = tt_host_alloc(n);
    *b = tt_host_alloc(n);
    cr_assert_eq(model_get_activations(ma, l, *a, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_get_activations(mb, l, *b, err, sizeof err), 0, "%s", err);
    return n;
}

/* The bf16 input hand-over (conv3 and conv4 writing conv4's and conv5's bf16 input copy in
 * place of their fp32 activation and that conv's cast; conv1's fused LRN + max-pool writing
 * conv2's beside its fp32 pooled output; model_set_batch writing conv1's with x) changes no
 * bit: two steps with and without it,
 * every loss, gradient and weight compared byte for byte (a copy left unwritten or written
 * wrong would change conv2's, conv4's or conv5's output); and conv3's and conv4's
 * activations read back are the fp32 ones rounded to bf16, every other row's the same */
Test(cuda_model, input_handover_changes_no_bit, .timeout = 120)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    model_placement pa = on_cudnn(TOWER_PRECISION_BF16), pb = pa;
    pb.test_no_input_handover = 1;
    model ma, mb;
    init_or_fail(&ma, &tiny, pa, 3);
    init_or_fail(&mb, &tiny, pb, 3);
    expect_identical_steps(&ma, &mb, 720, "the input hand-over");
    int handed = 0;
    for (int l = 0; l < ma.plan.n_layers; l++) {
        const tower_layer_shape *L = &ma.plan.layer[l];
        /* conv3 and conv4 of the default net: no LRN or pool, the next row a one-source conv */
        int hands = tower_plan_row(&ma.plan, l)->kind == TOWER_CONV && !L->lrn && !L->pool_k &&
                    l + 1 < ma.plan.n_layers &&
                    tower_plan_row(&ma.plan, l + 1)->kind == TOWER_CONV &&
                    ma.plan.layer[l + 1].sources == 1;
        handed += hands;
        float *x, *y;
        size_t m = acts_of_both(&ma, &mb, l, &x, &y), wrong = 0;
        for (size_t i = 0; i < m; i++) {
            float want = hands ? tower_k_bf16_float(tower_k_bf16(y[i])) : y[i];
            wrong += memcmp(&x[i], &want, sizeof want) != 0;
        }
        cr_assert_eq(wrong, 0, "%s: %zu of %zu activations are not the %s",
                     tower_plan_row(&ma.plan, l)->name, wrong, m,
                     hands ? "fp32 ones rounded" : "same");
        free(x);
        free(y);
    }
    cr_assert_eq(handed, 2, "the tiny net has %d rows that hand over, not conv3 and conv4",
                 handed);
    /* the rows whose bf16 input is written before them: conv1's with x (model_set_batch),
     * conv2's by conv1's fused LRN + max-pool (where the fused kernels take the tiny net's
     * shape), conv4's and conv5's by conv3 and conv4; none without the hand-over */
    const tower_layer_shape *L0 = &ma.plan.layer[0];
    int fits = tower_lrn_maxpool_cuda_fits(tiny.batch, L0->out_ch, L0->out_h, L0->out_h,
                                           tower_plan_row(&ma.plan, 0)->lrn.n, L0->pool_k,
                                           L0->pool_s);
    int want = 1 | (fits ? 2 : 0) | 8 | 16;
    for (int t = 0; t < ma.towers; t++) {
        cr_assert_eq(tower_cuda_input_given_rows(&ma.tw[t]), want,
                     "tower %d: rows 0x%x given their bf16 input, want 0x%x", t,
                     tower_cuda_input_given_rows(&ma.tw[t]), want);
        cr_assert_eq(tower_cuda_input_given_rows(&mb.tw[t]), 0);
    }
    model_free(&ma);
    model_free(&mb);
}

/* With --bf16-acts a row with its LRN and max-pool fused after the conv (the tiny net's
 * conv1 and conv2, as the paper's) keeps its ReLU's output in bf16 only: after the same
 * forward the first such row's activations read back are the fp32-kept model's rounded to
 * bf16, bit for bit (and some differ: the rounding happened); a later one's input differs
 * already (the first's rounding went through its LRN and pool), so its values are only
 * checked to be bf16 ones; the step after stays within bf16's tolerances of the step with
 * fp32 activations (the kept rounding is one more per element, inside them) */
Test(cuda_model, kept_bf16_acts_are_the_fp32_ones_rounded, .timeout = 120)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    model_placement pa = on_cudnn(TOWER_PRECISION_BF16), pb = pa;
    pa.bf16_acts = 1;
    model ma, mb;
    init_or_fail(&ma, &tiny, pa, 5);
    init_or_fail(&mb, &tiny, pb, 5);
    float *x;
    int32_t *labels;
    make_batch(&tiny, &x, &labels, 801);
    model_set_batch(&ma, x, labels);
    model_set_batch(&mb, x, labels);
    model_forward(&ma, 0);
    model_forward(&mb, 0);
    int rows = 0;
    for (int l = 0; l < ma.plan.n_layers; l++) {
        const tower_layer_shape *L = &ma.plan.layer[l];
        if (!L->lrn || !L->pool_k) continue;
        rows++;
        float *a, *b;
        size_t n = acts_of_both(&ma, &mb, l, &a, &b), wrong = 0, rounded = 0;
        for (size_t i = 0; i < n; i++) {
            /* the first row: b's rounding; a later one: any bf16 value */
            float want = tower_k_bf16_float(tower_k_bf16(rows == 1 ? b[i] : a[i]));
            wrong += memcmp(&a[i], &want, sizeof want) != 0;
            rounded += a[i] != b[i];
        }
        printf("%s: %zu of %zu kept activations rounded, %zu wrong\n",
               tower_plan_row(&ma.plan, l)->name, rounded, n, wrong);
        cr_assert_eq(wrong, 0, "%s: %zu of %zu kept activations are not %s",
                     tower_plan_row(&ma.plan, l)->name, wrong, n,
                     rows == 1 ? "the fp32 ones rounded" : "bf16 values");
        cr_assert(rounded > 0, "%s: no activation was rounded: the bf16 one was not kept",
                  tower_plan_row(&ma.plan, l)->name);
        free(a);
        free(b);
    }
    cr_assert(rows == 2, "the tiny net has %d rows with LRN and max-pool, not 2", rows);
    double la = model_forward(&ma, 1), lb = model_forward(&mb, 1);
    cr_assert(fabs(la - lb) <= TOL_BF16_LOSS * fabs(lb), "loss: kept bf16 %.9g, fp32 %.9g", la,
              lb);
    model_backward(&ma);
    model_backward(&mb);
    compare_tensors(&ma, &mb, 1, TOL_BF16_GRAD);
    free(x);
    free(labels);
    model_free(&ma);
    model_free(&mb);
}

Test(cuda_model, cudnn_bf16_runs_repeat_bit_for_bit, .timeout = 120)
{
    cudnn_repeats(TOWER_PRECISION_BF16, "--precision bf16 --conv cudnn twice");
}

/* The CLI's default in tf32 and bf16 (MODEL_CONV_PREFER_CUDNN): every conv layer of the
 * tiny and the full net on cuDNN, on every tower, said so, and the same steps as --conv
 * cudnn bit for bit (the same paths and algorithms) */
static model_placement default_placement(int precision, int bf16_acts)
{
    /* as the flags give it: --gpus 0 --precision P [--bf16-acts], no --conv */
    train_placement_args a = {.gpus = "0", .precision = 1 + precision, .bf16_acts = bf16_acts};
    model_placement p;
    char err[512] = "";
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.conv, MODEL_CONV_PREFER_CUDNN);
    return p;
}

static void expect_prefer_is_cudnn(int precision, const tower_config *cfg)
{
    model_placement p = default_placement(precision, 0);
    model m;
    init_or_fail(&m, cfg, p, 5);
    char line[2048], want[64];
    model_conv_describe(&m, line, sizeof line);
    printf("%s default: convolutions %s\n", tower_precision_name(precision), line);
    snprintf(want, sizeof want, "cudnn (the %s default)", tower_precision_name(precision));
    cr_assert_str_eq(line, want);
    cr_assert_str_eq(model_conv_mode_name(&m), "cudnn");
    for (int l = 0; l < m.plan.n_layers; l++) {
        int want_path = tower_plan_row(&m.plan, l)->kind == TOWER_CONV ? TOWER_CONV_CUDNN
                                                                       : TOWER_CONV_GEMM;
        cr_assert_eq(m.conv_path[l], want_path, "row %d: path %d", l, m.conv_path[l]);
        for (int t = 0; t < m.towers; t++)
            cr_assert_eq(tower_cuda_conv_path(&m.tw[t], l), want_path, "tower %d row %d", t, l);
    }
    model_free(&m);
}

Test(cuda_model, default_tf32_bf16_is_cudnn, .timeout = 300)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    model_placement fp32 = on_gpu0;
    cr_assert_eq(train_placement_conv_default(&fp32, TOWER_PRECISION_FP32), TOWER_CONV_GEMM);
    int precisions[] = {TOWER_PRECISION_TF32, TOWER_PRECISION_BF16};
    for (int i = 0; i < 2; i++) {
        expect_prefer_is_cudnn(precisions[i], &tiny);
        expect_prefer_is_cudnn(precisions[i], &full);
        expect_identical_runs(default_placement(precisions[i], 0), on_cudnn(precisions[i]),
                              precisions[i] == TOWER_PRECISION_BF16
                                  ? "bf16's default vs --conv cudnn"
                                  : "tf32's default vs --conv cudnn");
    }
    /* --precision bf16 --bf16-acts with the default: conv1's and conv2's activations kept,
     * as with --conv cudnn --bf16-acts, and the same bits */
    model_placement kept = default_placement(TOWER_PRECISION_BF16, 1);
    model m;
    init_or_fail(&m, &tiny, kept, 5);
    int rows = tower_cuda_bf16_acts_rows(&m.tw[0]);
    model_free(&m);
    cr_assert(rows != 0, "--bf16-acts with bf16's default kept no activation");
    model_placement cudnn_kept = on_cudnn(TOWER_PRECISION_BF16);
    cudnn_kept.bf16_acts = 1;
    expect_identical_runs(kept, cudnn_kept, "bf16's default --bf16-acts vs --conv cudnn --bf16-acts");
}

/* ---- --conv auto and mixed paths: each conv layer on its own path, the same tolerances;
 * auto gives every tower the one choice made on tower 0 ---------------------------------- */
static void expect_auto_choice(model_placement place, const tower_config *cfg)
{
    model m;
    init_or_fail(&m, cfg, place, 5);
    char line[2048];
    model_conv_describe(&m, line, sizeof line);
    printf("--conv %s\n", line);
    cr_assert(strncmp(line, "auto:", 5) == 0, "%s", line);
    for (int l = 0; l < m.plan.n_layers; l++) {
        int conv = tower_plan_row(&m.plan, l)->kind == TOWER_CONV;
        for (int t = 0; t < m.towers; t++)
            cr_assert_eq(tower_cuda_conv_path(&m.tw[t], l), m.conv_path[l],
                         "tower %d row %d: path %d, the model chose %d", t, l,
                         tower_cuda_conv_path(&m.tw[t], l), m.conv_path[l]);
        if (conv) {
            cr_assert(m.conv_timing[l].fwd_ms[TOWER_CONV_GEMM] > 0 &&
                          m.conv_timing[l].bwd_ms[TOWER_CONV_GEMM] > 0,
                      "row %d: GEMM not timed", l);
            cr_assert_eq(m.conv_timing[l].fwd_ms[TOWER_CONV_CUDNN] > 0, tower_cuda_have_cudnn(),
                         "row %d: cuDNN timed %g with cuDNN %s", l,
                         m.conv_timing[l].fwd_ms[TOWER_CONV_CUDNN],
                         tower_cuda_have_cudnn() ? "built" : "absent");
        } else {
            cr_assert_eq(m.conv_path[l], TOWER_CONV_GEMM);
        }
    }
    model_free(&m);
}

Test(cuda_model, auto_step_matches_cpu, .timeout = 300)
{
    TT_NEED_GPUS(1);
    model_placement aut = on_gpu0;
    aut.conv = MODEL_CONV_AUTO;
    expect_auto_choice(aut, &full);
    step_close_to_cpu(&tiny, aut, TOL_LOSS, TOL_STEP_GRAD);
    step_close_to_cpu(&full, aut, TOL_LOSS, TOL_STEP_GRAD);
}

Test(cuda_model, auto_bf16_step_close_to_cpu, .timeout = 300)
{
    TT_NEED_GPUS(1);
    model_placement aut = on_gpu0;
    aut.conv = MODEL_CONV_AUTO;
    aut.precision = TOWER_PRECISION_BF16;
    expect_auto_choice(aut, &tiny);
    step_close_to_cpu(&tiny, aut, TOL_BF16_LOSS, TOL_BF16_GRAD);
}

Test(cuda_model, auto_one_choice_on_two_gpus, .timeout = 300)
{
    TT_NEED_GPUS(2);
    model_placement aut = {.ngpus = 2, .gpus = {0, 1}, .conv = MODEL_CONV_AUTO};
    expect_auto_choice(aut, &tiny);
}

Test(cuda_model, mixed_paths_step_matches_cpu, .timeout = 300)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    /* every other conv layer on cuDNN, starting with conv1 and then with conv2; the GEMM
     * layers' fused ReLU beside cuDNN's separate one */
    for (int first = 0; first < 2; first++) {
        int paths[TOWER_MAX_LAYERS]; /* the convs are the first rows; the rest ignored */
        for (int l = 0; l < TOWER_MAX_LAYERS; l++)
            paths[l] = (l + first) % 2 ? TOWER_CONV_GEMM : TOWER_CONV_CUDNN;
        step_close_to_cpu_paths(&tiny, on_gpu0, paths, TOL_LOSS, TOL_STEP_GRAD);
        /* and in bf16: both paths' bf16 passes, the ReLU fused on both */
        model_placement bf16 = on_gpu0;
        bf16.precision = TOWER_PRECISION_BF16;
        step_close_to_cpu_paths(&tiny, bf16, paths, TOL_BF16_LOSS, TOL_BF16_GRAD);
    }
    /* conv3 and conv4 on cuDNN between GEMM layers, in bf16: conv3 hands conv4 its input,
     * conv4, before conv5 on GEMM, writes the fp32 activation conv5 reads */
    int chain[TOWER_MAX_LAYERS];
    for (int l = 0; l < TOWER_MAX_LAYERS; l++)
        chain[l] = l == 2 || l == 3 ? TOWER_CONV_CUDNN : TOWER_CONV_GEMM;
    model_placement bf16 = on_gpu0;
    bf16.precision = TOWER_PRECISION_BF16;
    step_close_to_cpu_paths(&tiny, bf16, chain, TOL_BF16_LOSS, TOL_BF16_GRAD);
}

/* The fallback runs the same kernels in the same order as two GPUs, and a + b is the
 * same sum in the same-device add kernel and in NCCL: identical losses and weights. */
Test(cuda_model, fallback_equals_two_gpus, .timeout = 120)
{
    TT_NEED_GPUS(2);
    model_placement two = {.ngpus = 2, .gpus = {0, 1}};
    expect_identical_runs(on_gpu0, two, "--gpus 0 vs --gpus 0,1");
}

/* ---- the tower workers (one host thread per tower) against the serial order ----------- */

/* The workers issue each tower's kernels on its own thread; the streams, kernels and the
 * exchange's events (same device) or collectives (NCCL) are the serial order's: the same
 * bits. */
Test(cuda_model, threaded_equals_serial_on_one_gpu, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model_placement serial = on_gpu0;
    serial.serial = 1;
    expect_identical_runs(on_gpu0, serial, "--gpus 0 threaded vs --serial");
}

Test(cuda_model, threaded_equals_serial_on_two_gpus, .timeout = 120)
{
    TT_NEED_GPUS(2);
    model_placement two = {.ngpus = 2, .gpus = {0, 1}}, serial = two;
    serial.serial = 1;
    expect_identical_runs(two, serial, "--gpus 0,1 threaded vs --serial");
}

/* The test hook fails tower 1 before conv3 in the second step: tower 0 is let go at its
 * exchange (same device: the host barrier; NCCL: its wait sees the stop and aborts its
 * communicator), the model reports the hook, and model_free returns (no stream is left
 * waiting on a collective). The timeout catches a hang. */
static void gpu_failure_stops_the_other(model_placement place)
{
    place.test_fail_step = 2;
    place.test_fail_tower = 1;
    place.test_fail_layer = 2;
    model m;
    init_or_fail(&m, &tiny, place, 3);
    cr_assert_not_null(m.workers);
    float *x;
    int32_t *labels;
    for (int s = 0; s < 2; s++) {
        make_batch(&tiny, &x, &labels, 500 + (uint64_t)s);
        model_set_batch(&m, x, labels);
        double loss = model_train_step(&m, 0.01f);
        free(x);
        free(labels);
        cr_assert(s == 0 ? isfinite(loss) : isnan(loss), "step %d: loss %g", s, loss);
    }
    cr_assert(m.failed && strstr(m.error, "test hook"), "error: %s", m.error);
    model_free(&m);
}

Test(cuda_model, failing_tower_stops_the_other_on_one_gpu, .timeout = 120)
{
    TT_NEED_GPUS(1);
    gpu_failure_stops_the_other(on_gpu0);
}

Test(cuda_model, failing_tower_stops_the_other_on_two_gpus, .timeout = 120)
{
    TT_NEED_GPUS(2);
    gpu_failure_stops_the_other((model_placement){.ngpus = 2, .gpus = {0, 1}});
}

/* A CUDA error inside a layer (model.h's device kind of the hook: the fault injection
 * makes the op's third checked call, the real CUDA_CHECK / CUBLAS_CHECK / LAUNCH_CHECK of
 * layers_cuda.cu and net_cuda.cu, take its error branch) fails tower 1's step instead of
 * ending the process: the message names the tower, the op, the step and the call with
 * its file, the other tower stops, and model_free returns. The sticky kind says the
 * device is lost (the model is then freed without waiting on it). */
static void gpu_device_error(model_placement place, int kind)
{
    place.test_fail_step = 2;
    place.test_fail_tower = 1;
    place.test_fail_layer = 1;
    place.test_fail_phase = MODEL_TEST_FAIL_FORWARD;
    place.test_fail_device = kind;
    place.test_fail_call = 3;
    model m;
    init_or_fail(&m, &tiny, place, 3);
    float *x;
    int32_t *labels;
    for (int s = 0; s < 2; s++) {
        make_batch(&tiny, &x, &labels, 600 + (uint64_t)s);
        model_set_batch(&m, x, labels);
        double loss = model_train_step(&m, 0.01f);
        free(x);
        free(labels);
        cr_assert(s == 0 ? isfinite(loss) : isnan(loss), "step %d: loss %g", s, loss);
    }
    printf("the injected CUDA error: %s\n", m.error);
    cr_assert(m.failed && strstr(m.error, "tower 1, conv2's forward in step 2: ") &&
                  strstr(m.error, " failed at ") && strstr(m.error, "src/tower/cuda/") &&
                  strstr(m.error, "(injected by the test hook)"),
              "error: %s", m.error);
    cr_assert_eq(strstr(m.error, "context is lost") != NULL, kind == TOWER_FAULT_STICKY, "%s",
                 m.error);
    cr_assert_eq(m.step, 1);
    model_free(&m);
}

Test(cuda_model, cuda_error_in_a_layer_fails_the_step_threaded, .timeout = 120)
{
    TT_NEED_GPUS(1);
    gpu_device_error(on_gpu0, TOWER_FAULT_ERROR);
}

Test(cuda_model, cuda_error_in_a_layer_fails_the_step_serial, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model_placement serial = on_gpu0;
    serial.serial = 1;
    gpu_device_error(serial, TOWER_FAULT_STICKY);
}

/* A real kernel fault: tower 1's conv4 weights pointer made invalid, so its SGEMM reads
 * an illegal address. The fault is asynchronous and sticky (the whole context on that
 * GPU is lost, so either tower may be the one whose synchronising call sees it first: a
 * layer's check, the loss's copy, or an exchange's event inside comm):
 * the step fails with the runtime's illegal-address error and the lost context said,
 * both workers stop, and model_free returns without waiting on the device. */
Test(cuda_model, kernel_fault_fails_the_step_and_loses_the_device, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model m;
    /* uncaptured: a graph would hold the valid pointer of the step it captured */
    model_placement uncaptured = on_gpu0;
    uncaptured.graph = MODEL_GRAPH_OFF;
    init_or_fail(&m, &tiny, uncaptured, 3);
    float *x;
    int32_t *labels;
    make_batch(&tiny, &x, &labels, 700);
    model_set_batch(&m, x, labels);
    cr_assert(isfinite(model_train_step(&m, 0.01f)), "the good step: %s", m.error);
    m.tw[1].w[3] = (float *)(uintptr_t)0x100; /* not device memory */
    double loss = model_train_step(&m, 0.01f);
    free(x);
    free(labels);
    printf("the kernel fault: %s\n", m.error);
    cr_assert(isnan(loss) && m.failed, "loss %g", loss);
    cr_assert(strstr(m.error, " failed at ") && strstr(m.error, "illegal memory access") &&
                  strstr(m.error, "context is lost"),
              "error: %s", m.error);
    cr_assert_eq(m.step, 1);
    model_free(&m);
}

/* The paper's towers each fit in a 3 GB GTX 580; ours must at batch 128 in fp32. The
 * estimate needs no device; with one, the real tower must hold exactly that much. */
Test(cuda_model, tower_fits_in_3gb_at_batch_128)
{
    tower_config cfg = {.towers = 2, .classes = 1000, .batch = 128, .in_size = 224,
                        .in_ch = 3, .width_div = 1};
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    size_t bytes = tower_cuda_mem_estimate(&plan);
    printf("GPU memory per tower at batch 128: %.1f MiB (arena + conv scratch + cuBLAS workspace)\n",
           bytes / 1048576.0);
    cr_assert(bytes > 0 && bytes < (size_t)3000 * 1000 * 1000,
              "a tower needs %.1f MiB at batch 128: more than a 3 GB GTX 580", bytes / 1048576.0);
    char why[256];
    if (tt_gpu_count(why, sizeof why) < 1) return; /* the estimate alone, then */
    size_t free_b = 0, total_b = 0;
    char name[128] = "";
    cr_assert_eq(tower_cuda_device_info(0, name, sizeof name, &free_b, &total_b, err,
                                        sizeof err), 0, "%s", err);
    printf("GPU 0: %s, %.0f MiB free of %.0f MiB\n", name, free_b / 1048576.0,
           total_b / 1048576.0);
    cr_assert(name[0] != '\0' && total_b > 0 && free_b <= total_b);
    if (free_b < bytes + ((size_t)512 << 20)) return; /* a busy GPU: nothing more to learn */
    tower t;
    cr_assert_eq(tower_init_cuda(&t, &plan, 0, 0, 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_cuda_mem_bytes(&t), bytes);
    tower_free(&t);
}

/* The kernels index in 32 bits: a batch whose conv1 output has 2^31 elements or more
 * (48 x 55 x 55 per image: batch 14,791) is refused by tower_init_cuda with a message,
 * before any device work (so this runs without a GPU too). */
Test(cuda_model, batch_beyond_32bit_indices_refused)
{
    tower_config cfg = {.towers = 2, .classes = 1000, .batch = 15000, .in_size = 224,
                        .in_ch = 3, .width_div = 1};
    tower_plan plan;
    char err[256] = "";
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    tower t;
    cr_assert_eq(tower_init_cuda(&t, &plan, 0, 0, 1, err, sizeof err), -1);
    printf("batch 15000: %s\n", err);
    cr_assert(strstr(err, "conv1") && strstr(err, "32 bits") && strstr(err, "--batch"), "%s",
              err);
}

/* ---- the other nets through the same layer loop: torchvision's (no LRN, inverted dropout
 * on conv5's pooled output and fc6's), fmnist's (one channel, Adam), the paper's net with
 * tanh (no fused conv + ReLU) and with 2:2 pooling ---------------------------------------- */
static void preset_step_matches_cpu(const char *name, const char *key, const char *value)
{
    tower_config cfg = tiny;
    cfg.net = *tower_net_preset(name);
    cfg.towers = cfg.net.towers;
    cfg.in_ch = cfg.net.in_ch;
    if (key) {
        tower_net_switches sw = TOWER_SWITCHES_KEEP;
        char err[256];
        cr_assert_eq(tower_net_switch_parse(&sw, key, value, err, sizeof err), 0, "%s", err);
        cr_assert_eq(tower_net_apply(&cfg.net, &sw, err, sizeof err), 0, "%s", err);
    }
    step_matches_cpu(&cfg);
}

Test(cuda_model, torchvision_step_matches_cpu, .timeout = 120)
{
    preset_step_matches_cpu("torchvision", NULL, NULL);
}
Test(cuda_model, fmnist_adam_step_matches_cpu, .timeout = 120)
{
    preset_step_matches_cpu("fmnist", NULL, NULL);
}
Test(cuda_model, tanh_step_matches_cpu, .timeout = 120)
{
    preset_step_matches_cpu("alexnet2012", "act", "tanh");
}
Test(cuda_model, pool_2_2_step_matches_cpu, .timeout = 120)
{
    preset_step_matches_cpu("half", "pool", "2:2");
}
