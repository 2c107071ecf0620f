/* The tower workers (one thread per tower, model.c) against the serial order (one thread
 * runs both towers, place.serial): the same steps give the same bits, at the same OpenBLAS
 * thread count per GEMM; and a tower that fails stops the other and leaves the model as
 * its last good step left it, in both orders, without a deadlock (every test has a
 * timeout, so a hang fails instead of blocking the suite). CPU backend. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/model.h"

_Static_assert(sizeof(real) == sizeof(float), "this test is for the float build");

/* OpenBLAS's cblas.h: the library the towers link */
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int num_threads);

enum { STEPS = 4, BATCH = 4, SIDE = 67, CLASSES = 10 };

/* Batch of step s: a function of s alone (as the trainer's loader cursor gives it). */
static void make_batch(int64_t s, float *x, int32_t *y)
{
    size_t n = (size_t)BATCH * 3 * SIDE * SIDE;
    uint64_t key = base_rng_mix(77, (uint64_t)s);
    for (size_t i = 0; i < n; i++) x[i] = base_rng_uniform(key, i) - 0.5f;
    for (int b = 0; b < BATCH; b++)
        y[b] = (int32_t)(base_rng_mix(key, n + (uint64_t)b) % (uint64_t)CLASSES);
}

/* The paper's net at width / 8, or the same with Adam (a second moment arena). */
static tower_config config(int adam)
{
    tower_config cfg = {2, CLASSES, BATCH, SIDE, 3, 8};
    cfg.net = *tower_net_preset("alexnet2012");
    if (adam) {
        tower_net_switches sw = TOWER_SWITCHES_KEEP;
        char err[256] = "";
        cr_assert_eq(tower_net_switch_parse(&sw, "optim", "adam", err, sizeof err), 0, "%s",
                     err);
        cr_assert_eq(tower_net_apply(&cfg.net, &sw, err, sizeof err), 0, "%s", err);
    }
    return cfg;
}

typedef struct {
    double loss[STEPS], eval_loss;
    float probs[BATCH * CLASSES];
    real *arena[2][4]; /* [tower][params, grads, momentum, second moment] */
    int arenas;
    size_t n;
    int blas_per_gemm; /* OpenBLAS's count while the model lived */
} run_out;

/* STEPS training steps, then an evaluation forward; everything the step leaves out. */
static void run(const tower_config *cfg, int serial, int blas, run_out *o)
{
    openblas_set_num_threads(blas);
    model_placement place = {.cpu = 1, .serial = serial};
    model m;
    char err[512] = "";
    cr_assert_eq(model_init(&m, cfg, &place, 11, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.workers == NULL, serial, "serial %d: workers %p", serial, (void *)m.workers);
    o->blas_per_gemm = openblas_get_num_threads();
    float *x = malloc(sizeof(float) * BATCH * 3 * SIDE * SIDE);
    int32_t y[BATCH];
    cr_assert_not_null(x);
    for (int s = 0; s < STEPS; s++) {
        make_batch(s, x, y);
        model_set_batch(&m, x, y);
        o->loss[s] = model_train_step(&m, (real)0.01);
        cr_assert(isfinite(o->loss[s]), "step %d: loss %g (%s)", s, o->loss[s], m.error);
    }
    make_batch(STEPS, x, y);
    model_set_batch(&m, x, y);
    o->eval_loss = model_forward(&m, 0);
    model_get_probs(&m, o->probs);
    cr_assert(!m.failed, "%s", m.error);
    o->n = m.plan.n_params;
    o->arenas = m.plan.adam ? 4 : 3;
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < o->arenas; k++) {
            o->arena[t][k] = malloc(sizeof(real) * o->n);
            cr_assert_not_null(o->arena[t][k]);
            model_get_tensor(&m, t, k, o->arena[t][k]);
        }
    free(x);
    model_free(&m);
    cr_assert_eq(openblas_get_num_threads(), blas, "model_free restores OpenBLAS's count");
}

static void run_free(run_out *o)
{
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < o->arenas; k++) free(o->arena[t][k]);
}

static void assert_same(const run_out *a, const run_out *b, const char *what)
{
    static const char *const names[4] = {"params", "grads", "momentum", "second moment"};
    for (int s = 0; s < STEPS; s++)
        cr_assert_eq(memcmp(&a->loss[s], &b->loss[s], sizeof(double)), 0,
                     "%s: step %d loss %.17g threaded, %.17g serial", what, s, a->loss[s],
                     b->loss[s]);
    cr_assert_eq(memcmp(&a->eval_loss, &b->eval_loss, sizeof(double)), 0, "%s: eval loss",
                 what);
    cr_assert_eq(memcmp(a->probs, b->probs, sizeof a->probs), 0, "%s: probabilities", what);
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < a->arenas; k++)
            cr_assert_eq(memcmp(a->arena[t][k], b->arena[t][k], sizeof(real) * a->n), 0,
                         "%s: tower %d %s differ", what, t, names[k]);
}

/* The workers split OpenBLAS's threads (count / 2 a tower): the serial run gets that
 * count, so both run every GEMM on the same number of threads. */
static void threaded_equals_serial(int adam, int blas)
{
    int before = openblas_get_num_threads();
    tower_config cfg = config(adam);
    run_out a, b;
    run(&cfg, 0, 2 * blas, &a);
    run(&cfg, 1, blas, &b);
    cr_assert_eq(a.blas_per_gemm, blas, "threaded with %d OpenBLAS threads: %d a tower",
                 2 * blas, a.blas_per_gemm);
    char what[64];
    snprintf(what, sizeof what, "%s, %d BLAS thread(s) a GEMM", adam ? "adam" : "sgd", blas);
    assert_same(&a, &b, what);
    cr_assert(a.loss[0] != a.loss[STEPS - 1], "the loss never changed");
    run_free(&a);
    run_free(&b);
    openblas_set_num_threads(before);
}

Test(model_threads, threaded_equals_serial_one_blas_thread, .timeout = 120)
{
    threaded_equals_serial(0, 1);
}

/* two BLAS threads a GEMM: OpenBLAS's threaded GEMMs, called from both workers at once */
Test(model_threads, threaded_equals_serial_two_blas_threads, .timeout = 120)
{
    threaded_equals_serial(0, 2);
}

Test(model_threads, threaded_equals_serial_adam, .timeout = 120)
{
    threaded_equals_serial(1, 1);
}

/* One tower's worker fails (the test hook) in the third step before `layer`: it returns
 * NaN, the model is failed with the hook's message, later calls do nothing, the
 * parameters and momentum are those of two good steps, and model_free returns (both
 * workers were let go). serial 1: the same through the serial order. */
static void fail_one(int serial, int bad, int layer)
{
    tower_config cfg = config(0);
    model_placement place = {.cpu = 1, .serial = serial, .test_fail_step = 3,
                             .test_fail_tower = bad, .test_fail_layer = layer};
    model_placement good = {.cpu = 1, .serial = serial};
    model m, ref;
    char err[512] = "";
    cr_assert_eq(model_init(&m, &cfg, &place, 11, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&ref, &cfg, &good, 11, err, sizeof err), 0, "%s", err);
    float *x = malloc(sizeof(float) * BATCH * 3 * SIDE * SIDE);
    int32_t y[BATCH];
    cr_assert_not_null(x);
    for (int s = 0; s < 3; s++) {
        make_batch(s, x, y);
        model_set_batch(&m, x, y);
        double loss = model_train_step(&m, (real)0.01);
        if (s < 2) {
            cr_assert(isfinite(loss) && !m.failed, "step %d: %g %s", s, loss, m.error);
            model_set_batch(&ref, x, y);
            model_train_step(&ref, (real)0.01);
        } else {
            cr_assert(isnan(loss), "the failed step returned %g", loss);
        }
    }
    cr_assert(m.failed, "the hook did not fail the model");
    char want[64];
    snprintf(want, sizeof want, "tower %d failed before %s", bad,
             tower_plan_row(&m.plan, layer)->name);
    cr_assert(strstr(m.error, want) && strstr(m.error, "test hook"), "error: %s", m.error);
    /* a failed model does nothing more */
    cr_assert(isnan(model_forward(&m, 0)));
    cr_assert(isnan(model_train_step(&m, (real)0.01)));
    size_t n = m.plan.n_params;
    real *p = malloc(sizeof(real) * n), *q = malloc(sizeof(real) * n);
    cr_assert(p && q);
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 3; k += 2) {
            model_get_tensor(&m, t, k, p);
            model_get_tensor(&ref, t, k, q);
            cr_assert_eq(memcmp(p, q, sizeof(real) * n), 0,
                         "tower %d %s changed by the failed step", t, k ? "momentum" : "params");
        }
    free(p);
    free(q);
    free(x);
    model_free(&m);
    model_free(&ref);
}

/* before any exchange (the other tower waits at conv3's), at conv3's exchange, at fc8's
 * (the last row; the other tower waits at fc8's input) */
Test(model_threads, failing_tower_1_at_conv1_stops_tower_0, .timeout = 60)
{
    fail_one(0, 1, 0);
}

Test(model_threads, failing_tower_0_at_conv3_stops_tower_1, .timeout = 60)
{
    fail_one(0, 0, 2);
}

Test(model_threads, failing_tower_1_at_fc8_stops_tower_0, .timeout = 60)
{
    fail_one(0, 1, TOWER_LAYERS - 1);
}

Test(model_threads, failing_tower_in_the_serial_order, .timeout = 60)
{
    fail_one(1, 1, 2);
}

/* One-tower nets have no workers: the caller's thread runs the tower. */
Test(model_threads, one_tower_has_no_workers, .timeout = 60)
{
    tower_config cfg = {1, CLASSES, BATCH, SIDE, 3, 8};
    model_placement place = {.cpu = 1};
    model m;
    char err[512] = "";
    cr_assert_eq(model_init(&m, &cfg, &place, 11, err, sizeof err), 0, "%s", err);
    cr_assert_null(m.workers);
    model_free(&m);
}
