/* A tower that fails, in every phase of a step (forward, backward, inside either exchange,
 * the update), in either tower, with the tower threads and in the serial order: both
 * towers stop without a deadlock (every test has a timeout), the model keeps the last good
 * step's counters and does nothing more, and the trainer stops with exit code 3 and a
 * loadable newest checkpoint. Also the fault slot behind the CUDA backend's check macros
 * (tower.h, TOWER_CHECK_AS), in plain C: a device call that fails inside an op, here a
 * CPU stand-in the test wraps around the CPU ops, becomes that tower's failure and is
 * reported with the call's name. CPU backend; no GPU needed. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../train/helpers.h"
#include "train/checkpoint.h"
#include "train/train.h"

_Static_assert(sizeof(real) == sizeof(float), "this test is for the float build");

enum { STEPS = 3, BATCH = 4, SIDE = 67, CLASSES = 10 };

/* ---- the fault slot ------------------------------------------------------------------ */

static int calls_made; /* how many stand-in calls were really made */

/* A device call's stand-in: returns its status (0: success) and counts that it ran. */
static int fake_device_call(int status)
{
    calls_made++;
    return status;
}

/* tower_fault_describe_fn of the stand-in: status 77 is "sticky", anything else not */
static int describe_fake(int status, int injected, char *reason, size_t n)
{
    int kind = injected ? injected : status == 77 ? TOWER_FAULT_STICKY : TOWER_FAULT_ERROR;
    snprintf(reason, n, "fakeError%d", injected ? -injected : status);
    return kind;
}

#define FAKE_CHECK(call) TOWER_CHECK_AS(call, #call, describe_fake, )

static int reached; /* the statement after the check ran */

static void op_with(int status)
{
    FAKE_CHECK(fake_device_call(status));
    reached++;
}

static int op_returning(int status)
{
    TOWER_CHECK_AS(fake_device_call(status), "fake_device_call(status)", describe_fake, -1);
    return 1;
}

Test(fault_slot, a_failed_call_is_recorded_and_later_calls_are_not_made)
{
    char msg[640];
    cr_assert_eq(tower_fault_take(msg, sizeof msg), 0, "the slot starts empty");
    calls_made = reached = 0;
    op_with(0);
    cr_assert(calls_made == 1 && reached == 1 && !tower_fault_pending());
    op_with(5);
    cr_assert_eq(calls_made, 2);
    cr_assert_eq(reached, 1, "the op returned at the failed call");
    cr_assert(tower_fault_pending());
    /* while the fault is pending nothing more is called, in this op or another */
    op_with(0);
    cr_assert_eq(op_returning(0), -1);
    cr_assert(calls_made == 2 && reached == 1, "calls made after the fault: %d", calls_made - 2);
    cr_assert_eq(tower_fault_take(msg, sizeof msg), TOWER_FAULT_ERROR);
    cr_assert(strstr(msg, "fake_device_call failed at ") && strstr(msg, "test_model_fail.c:") &&
                  strstr(msg, ": fakeError5") && !strstr(msg, "(status)") &&
                  !strstr(msg, "context is lost"),
              "message: %s", msg);
    cr_assert(!tower_fault_pending() && tower_fault_take(msg, sizeof msg) == 0, "taken once");
    /* a sticky status says the device is lost; the first fault is the one kept */
    op_with(77);
    op_with(5);
    cr_assert_eq(tower_fault_take(msg, sizeof msg), TOWER_FAULT_STICKY);
    cr_assert(strstr(msg, "fakeError77") && strstr(msg, "context is lost"), "message: %s", msg);
    op_with(0);
    cr_assert_eq(reached, 2, "a taken fault lets calls through again");
}

Test(fault_slot, the_injection_fails_the_nth_checked_call)
{
    char msg[640];
    calls_made = reached = 0;
    tower_fault_inject(2, TOWER_FAULT_STICKY);
    op_with(0);
    cr_assert(reached == 1 && !tower_fault_pending(), "the first call passes");
    op_with(0);
    cr_assert(calls_made == 2 && reached == 1, "the second is made, then reported as failed");
    cr_assert_eq(tower_fault_take(msg, sizeof msg), TOWER_FAULT_STICKY);
    cr_assert(strstr(msg, "fake_device_call failed at ") && strstr(msg, "fakeError-2") &&
                  strstr(msg, "(injected by the test hook)") && strstr(msg, "context is lost"),
              "message: %s", msg);
    op_with(0);
    cr_assert_eq(reached, 2, "the injection fires once");
    tower_fault_inject(1, TOWER_FAULT_ERROR);
    tower_fault_inject(0, 0);
    op_with(0);
    cr_assert(reached == 3 && !tower_fault_pending(), "nth 0 disarms");
}

static void *fail_on_thread(void *arg)
{
    (void)arg;
    op_with(5);
    return (void *)(intptr_t)tower_fault_pending();
}

Test(fault_slot, each_thread_has_its_own_slot)
{
    pthread_t th;
    void *pending = NULL;
    cr_assert_eq(pthread_create(&th, NULL, fail_on_thread, NULL), 0);
    cr_assert_eq(pthread_join(th, &pending), 0);
    cr_assert(pending != NULL, "the other thread's fault was pending there");
    cr_assert(!tower_fault_pending(), "and not here");
}

/* ---- the model: a tower fails in each phase ------------------------------------------ */

static void make_batch(int64_t s, float *x, int32_t *y)
{
    size_t n = (size_t)BATCH * 3 * SIDE * SIDE;
    uint64_t key = base_rng_mix(91, (uint64_t)s);
    for (size_t i = 0; i < n; i++) x[i] = base_rng_uniform(key, i) - 0.5f;
    for (int b = 0; b < BATCH; b++)
        y[b] = (int32_t)(base_rng_mix(key, n + (uint64_t)b) % (uint64_t)CLASSES);
}

/* The paper's net at width / 8: conv3 (2), fc6 (5), fc7 (6) and fc8 (7) read both towers. */
static tower_config config(void)
{
    tower_config cfg = {2, CLASSES, BATCH, SIDE, 3, 8};
    cfg.net = *tower_net_preset("alexnet2012");
    return cfg;
}

/* Parameters and momentum of both towers, host copies. */
typedef struct {
    real *a[2][2];
    size_t n;
} state;

static void state_get(const model *m, state *s)
{
    s->n = m->plan.n_params;
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 2; k++) {
            s->a[t][k] = malloc(sizeof(real) * s->n);
            cr_assert_not_null(s->a[t][k]);
            model_get_tensor(m, t, k ? 2 : 0, s->a[t][k]);
        }
}

static int state_tower_eq(const state *x, const state *y, int t)
{
    return !memcmp(x->a[t][0], y->a[t][0], sizeof(real) * x->n) &&
           !memcmp(x->a[t][1], y->a[t][1], sizeof(real) * x->n);
}

static void state_free(state *s)
{
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 2; k++) free(s->a[t][k]);
}

/* What a failure test sets up: the hook's placement, and the ops (NULL: the CPU's). */
typedef struct {
    int serial, tower, phase, layer, device, call;
    const tower_ops *ops;
} fail_case;

/* Runs STEPS steps with the hook at the last one, beside a model without it: the last
 * step fails in the case's tower, both workers stop (model_free returns), the counters are
 * the last good step's, later calls do nothing, and the arenas are those of the good steps
 * but for the update the failed step may have applied: none before the update phase; at
 * the update, the failed tower's not, the other's perhaps (threads: either; serial: tower
 * 0's before tower 1's). Returns m.error through msg. */
static void fail_step(const fail_case *c, char *msg, size_t msglen)
{
    tower_config cfg = config();
    model_placement place = {.cpu = 1, .serial = c->serial, .test_fail_step = STEPS,
                             .test_fail_tower = c->tower, .test_fail_layer = c->layer,
                             .test_fail_phase = c->phase, .test_fail_device = c->device,
                             .test_fail_call = c->call};
    model_placement good = {.cpu = 1, .serial = c->serial};
    model m, ref;
    char err[512] = "";
    cr_assert_eq(model_init(&m, &cfg, &place, 11, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&ref, &cfg, &good, 11, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.workers == NULL, c->serial);
    if (c->ops)
        for (int t = 0; t < 2; t++) m.tw[t].ops = c->ops;
    float *x = malloc(sizeof(float) * BATCH * 3 * SIDE * SIDE);
    int32_t y[BATCH];
    cr_assert_not_null(x);
    state before, after_good, now, later;
    for (int s = 0; s < STEPS; s++) {
        make_batch(s, x, y);
        model_set_batch(&m, x, y);
        model_set_batch(&ref, x, y);
        if (s == STEPS - 1) state_get(&ref, &before);
        double loss = model_train_step(&m, (real)0.01), want = model_train_step(&ref, (real)0.01);
        if (s < STEPS - 1)
            cr_assert(loss == want && !m.failed, "step %d: %g against %g (%s)", s + 1, loss, want,
                      m.error);
        else
            cr_assert(isnan(loss) && m.failed, "the failed step returned %g (failed %d)", loss,
                      m.failed);
    }
    state_get(&ref, &after_good);
    snprintf(msg, msglen, "%s", m.error);
    cr_assert_eq(m.step, STEPS - 1, "the failed step is not counted");
    cr_assert_eq(m.updates, STEPS - 1, "nor its update");
    state_get(&m, &now);
    int other = 1 - c->tower;
    if (c->phase != MODEL_TEST_FAIL_UPDATE) {
        for (int t = 0; t < 2; t++)
            cr_assert(state_tower_eq(&now, &before, t), "tower %d: the failed step changed it", t);
    } else {
        cr_assert(state_tower_eq(&now, &before, c->tower), "the failed tower updated");
        int done = state_tower_eq(&now, &after_good, other);
        cr_assert(done || state_tower_eq(&now, &before, other),
                  "the other tower is neither before nor after its update");
        if (c->serial) cr_assert_eq(done, c->tower == 1, "the serial order's update of tower %d",
                                    other);
    }
    /* a failed model does nothing more */
    model_set_batch(&m, x, y);
    cr_assert(isnan(model_train_step(&m, (real)0.01)) && isnan(model_forward(&m, 0)));
    cr_assert_eq(m.step, STEPS - 1);
    state_get(&m, &later);
    for (int t = 0; t < 2; t++) cr_assert(state_tower_eq(&later, &now, t));
    state_free(&before);
    state_free(&after_good);
    state_free(&now);
    state_free(&later);
    free(x);
    model_free(&m); /* joins both workers: a worker still waiting would hang here */
    model_free(&ref);
}

/* Every case of a phase and layer: tower 0 and tower 1, threads and serial order. */
static void fail_all(int phase, int layer, const char *want)
{
    for (int serial = 0; serial < 2; serial++)
        for (int t = 0; t < 2; t++) {
            fail_case c = {serial, t, phase, layer, 0, 0, NULL};
            char msg[512], tw[32];
            fail_step(&c, msg, sizeof msg);
            snprintf(tw, sizeof tw, "tower %d", t);
            cr_assert(strstr(msg, tw) && strstr(msg, want) && strstr(msg, "test hook"),
                      "serial %d, tower %d: %s (wanted %s)", serial, t, msg, want);
        }
}

/* conv1: before any exchange, the other tower waits at conv3's input or stops at its next
 * layer; fc8: the last row */
Test(model_fail, forward_at_conv1, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_FORWARD, 0, "failed before conv1's forward in step 3");
}

Test(model_fail, forward_at_fc8, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_FORWARD, TOWER_LAYERS - 1, "failed before fc8's forward in step 3");
}

/* backward at fc7 (the other tower waits at fc7's reduce-scatter) and at conv1 (the other
 * has passed the last exchange, conv3's, and finishes its backward) */
Test(model_fail, backward_at_fc7, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_BACKWARD, 6, "failed before fc7's backward in step 3");
}

Test(model_fail, backward_at_conv1, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_BACKWARD, 0, "failed before conv1's backward in step 3");
}

/* inside the exchanges: the other tower is let go from the barrier after the copies */
Test(model_fail, inside_the_allgather_of_conv3s_input, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_GATHER, 2, "exchange failed at conv3: comm: tower");
}

Test(model_fail, inside_the_allgather_of_the_logits, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_GATHER, TOWER_LAYERS, "exchange failed at logits: comm: tower");
}

Test(model_fail, inside_the_reduce_scatter_at_fc6, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_REDUCE, 5, "exchange failed at fc6: comm: tower");
}

Test(model_fail, update, .timeout = 120)
{
    fail_all(MODEL_TEST_FAIL_UPDATE, 0, "failed before its update in step 3");
}

/* ---- a device call that fails inside an op ------------------------------------------------
 * The CPU ops wrapped so that each conv and fc op and the update first make one checked
 * stand-in call through TOWER_CHECK_AS, as the CUDA ops make theirs; the hook's device kind
 * arms the injection on the tower's thread right before the op, as it does for GPU towers,
 * whose own check macros then fire. */

static int fake_cudaLaunchKernel(void) { return 0; } /* succeeds: only the injection fails */

static int describe_fake_cuda(int status, int injected, char *reason, size_t n)
{
    (void)status;
    snprintf(reason, n, "%s", injected == TOWER_FAULT_STICKY
                                  ? "fakeErrorIllegalAddress: an illegal memory access"
                                  : "fakeErrorInvalidValue: invalid argument");
    return injected == TOWER_FAULT_STICKY ? TOWER_FAULT_STICKY : TOWER_FAULT_ERROR;
}

#define DEVICE_CALL() TOWER_CHECK_AS(fake_cudaLaunchKernel(), "fake_cudaLaunchKernel()",      \
                                     describe_fake_cuda, )

static void dev_conv_forward(tower *t, int l, real *out, const real *in, const real *w,
                             const real *b, int ldw, int accumulate, int act)
{
    DEVICE_CALL();
    tower_ops_cpu.conv_forward(t, l, out, in, w, b, ldw, accumulate, act);
}

static void dev_conv_backward(tower *t, int l, real *din, real *dw, real *db, const real *dout,
                              const real *act_out, const real *in, const real *w, int ldw,
                              int accumulate_din, int act)
{
    DEVICE_CALL();
    tower_ops_cpu.conv_backward(t, l, din, dw, db, dout, act_out, in, w, ldw, accumulate_din,
                                act);
}

static void dev_fc_forward(tower *t, real *out, const real *in, const real *w, const real *b,
                           int B, int Cin, int Cout, int ldw, int accumulate)
{
    DEVICE_CALL();
    tower_ops_cpu.fc_forward(t, out, in, w, b, B, Cin, Cout, ldw, accumulate);
}

static void dev_fc_backward(tower *t, real *din, real *dw, real *db, const real *dout,
                            const real *in, const real *w, int B, int Cin, int Cout, int ldw,
                            int accumulate_din)
{
    DEVICE_CALL();
    tower_ops_cpu.fc_backward(t, din, dw, db, dout, in, w, B, Cin, Cout, ldw, accumulate_din);
}

static void dev_update(tower *t, const tower_optim *o, real lr, int64_t t_update)
{
    DEVICE_CALL();
    tower_ops_cpu.update(t, o, lr, t_update);
}

static tower_ops dev_ops;

static const tower_ops *device_ops(void)
{
    dev_ops = tower_ops_cpu;
    dev_ops.name = "cpu with checked stand-in calls";
    dev_ops.conv_forward = dev_conv_forward;
    dev_ops.conv_backward = dev_conv_backward;
    dev_ops.fc_forward = dev_fc_forward;
    dev_ops.fc_backward = dev_fc_backward;
    dev_ops.update = dev_update;
    return &dev_ops;
}

/* Threads and serial, both towers: the message names the tower, the op, the step and the
 * call (its name, this file, the reason), and whether the device is lost. */
static void device_fault(int phase, int layer, int kind, int call, const char *op)
{
    const tower_ops *ops = device_ops();
    for (int serial = 0; serial < 2; serial++)
        for (int t = 0; t < 2; t++) {
            fail_case c = {serial, t, phase, layer, kind, call, ops};
            char msg[512], want[128];
            fail_step(&c, msg, sizeof msg);
            snprintf(want, sizeof want, "tower %d, %s in step 3: fake_cudaLaunchKernel failed at ",
                     t, op);
            cr_assert(strstr(msg, want) && strstr(msg, "test_model_fail.c:") &&
                          strstr(msg, "(injected by the test hook)"),
                      "serial %d, tower %d: %s (wanted %s)", serial, t, msg, want);
            cr_assert_eq(strstr(msg, "context is lost") != NULL, kind == TOWER_FAULT_STICKY,
                         "%s", msg);
        }
}

Test(model_fail, device_error_in_conv2s_forward, .timeout = 120)
{
    device_fault(MODEL_TEST_FAIL_FORWARD, 1, TOWER_FAULT_ERROR, 1, "conv2's forward");
}

/* the second source's convolution of conv3 (it reads both towers): the op ends midway */
Test(model_fail, sticky_error_in_conv3s_second_source, .timeout = 120)
{
    device_fault(MODEL_TEST_FAIL_FORWARD, 2, TOWER_FAULT_STICKY, 2, "conv3's forward");
}

Test(model_fail, device_error_in_fc6s_backward, .timeout = 120)
{
    device_fault(MODEL_TEST_FAIL_BACKWARD, 5, TOWER_FAULT_ERROR, 1, "fc6's backward");
}

Test(model_fail, sticky_error_in_the_update, .timeout = 120)
{
    device_fault(MODEL_TEST_FAIL_UPDATE, 0, TOWER_FAULT_STICKY, 1, "its update");
}

/* Without the hook the wrapped ops are the CPU's: the same losses as the plain model. */
Test(model_fail, wrapped_ops_change_nothing, .timeout = 120)
{
    tower_config cfg = config();
    model_placement place = {.cpu = 1};
    model m, ref;
    char err[512] = "";
    cr_assert_eq(model_init(&m, &cfg, &place, 11, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&ref, &cfg, &place, 11, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 2; t++) m.tw[t].ops = device_ops();
    float *x = malloc(sizeof(float) * BATCH * 3 * SIDE * SIDE);
    int32_t y[BATCH];
    cr_assert_not_null(x);
    for (int s = 0; s < 2; s++) {
        make_batch(s, x, y);
        model_set_batch(&m, x, y);
        model_set_batch(&ref, x, y);
        double a = model_train_step(&m, (real)0.01), b = model_train_step(&ref, (real)0.01);
        cr_assert(a == b && !m.failed, "step %d: %g against %g (%s)", s + 1, a, b, m.error);
    }
    free(x);
    model_free(&m);
    model_free(&ref);
}

/* ---- the trainer: exit code 3, the newest checkpoint loadable ---------------------- */

#define FMNIST "/usr/share/datasets/fashion-mnist"

/* A tiny CPU run (tests/train/test_resume.c's): 67-pixel inputs, widths / 8, batch 2, 16
 * steps per epoch, two epochs, a checkpoint every 3 steps; step 20 fails as `c` says. */
static void failing_run(const fail_case *c, const char *want)
{
    struct stat st;
    if (stat(FMNIST "/train-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("no Fashion-MNIST at " FMNIST " (Debian: dataset-fashion-mnist)");
    char *dir = tt_tmpdir("fail"), run[4200], path[4300], err[2048], line[2048];
    snprintf(run, sizeof run, "%s/run", dir);
    train_options o;
    train_options_default(&o);
    o.data = FMNIST;
    o.size = 67;
    o.batch = 2;
    o.width_div = 8;
    o.epochs = 2;
    o.train_limit = 32;
    o.test_limit = 4;
    o.log_every = 1;
    o.ckpt_every = 3;
    o.keep = 2;
    o.quiet = 1;
    o.seed = 7;
    o.run_dir = run;
    o.place.serial = c->serial;
    o.place.test_fail_step = 20;
    o.place.test_fail_tower = c->tower;
    o.place.test_fail_layer = c->layer;
    o.place.test_fail_phase = c->phase;
    cr_assert_eq(train_run(&o), 3, "a failed tower ends the run with status 3");
    cr_assert_eq(train_ckpt_resolve(run, path, sizeof path, err, sizeof err), 0, "%s", err);
    train_ckpt_meta m;
    cr_assert_eq(train_ckpt_load(path, &m, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.step, 18, "newest checkpoint at step %lld", (long long)m.step);
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    int stops = 0;
    while (fgets(line, sizeof line, f))
        stops += strstr(line, "\"stop\"") && strstr(line, "step 20 failed") && strstr(line, want);
    fclose(f);
    cr_assert_eq(stops, 1, "one stop event naming '%s' in %s", want, path);
    tt_rmtree(dir);
    free(dir);
}

Test(model_fail_trainer, backward_in_tower_0, .timeout = 240)
{
    fail_case c = {0, 0, MODEL_TEST_FAIL_BACKWARD, 3, 0, 0, NULL};
    failing_run(&c, "tower 0 failed before conv4's backward in step 20");
}

Test(model_fail_trainer, allgather_in_tower_1_serial, .timeout = 240)
{
    fail_case c = {1, 1, MODEL_TEST_FAIL_GATHER, 5, 0, 0, NULL};
    failing_run(&c, "exchange failed at fc6: comm: tower 1's exchange failed inside");
}

Test(model_fail_trainer, reduce_scatter_in_tower_1, .timeout = 240)
{
    fail_case c = {0, 1, MODEL_TEST_FAIL_REDUCE, 2, 0, 0, NULL};
    failing_run(&c, "tower 1: exchange failed at conv3: comm: tower 1's exchange failed inside");
}

Test(model_fail_trainer, update_in_tower_0, .timeout = 240)
{
    fail_case c = {0, 0, MODEL_TEST_FAIL_UPDATE, 0, 0, 0, NULL};
    failing_run(&c, "tower 0 failed before its update in step 20");
}
