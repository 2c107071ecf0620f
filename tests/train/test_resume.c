/* Resume must be exact: N steps in one go and N/2 steps + checkpoint + a fresh process
 * state + resume + N/2 steps give bit-identical losses and weights (tiny net, CPU
 * backend). The batches and the learning rate are pure functions of the step, as in the
 * trainer (counter-based data cursor, schedule state in the checkpoint). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/checkpoint.h"

static const tower_config TINY = {2, 10, 2, 67, 3, 8};
#define N_STEPS 8

static char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/tt-resume-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(p));
    return p;
}

static void rm_tree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The batch of a step: a function of (data seed, step) only, like the loader's cursor. */
static void make_batch(uint64_t data_seed, int64_t step, float *x, int32_t *y)
{
    size_t n = (size_t)TINY.batch * TINY.in_ch * TINY.in_size * TINY.in_size;
    uint64_t key = tower_rng_mix(data_seed, (uint64_t)step);
    for (size_t i = 0; i < n; i++)
        x[i] = tower_rng_uniform(key, i) - 0.5f;
    for (int b = 0; b < TINY.batch; b++)
        y[b] = (int32_t)(tower_rng_mix(key, n + (uint64_t)b) % (uint64_t)TINY.classes);
}

/* Runs steps [from, to) with the schedule driving the rate; a made-up validation error
 * that never improves is observed every 2 steps, so the rate drops in both halves. */
static void train_steps(model *m, train_sched *s, uint64_t data_seed, int64_t from, int64_t to,
                        double *losses)
{
    size_t n = (size_t)TINY.batch * TINY.in_ch * TINY.in_size * TINY.in_size;
    float *x = malloc(n * sizeof(float));
    int32_t y[16];
    for (int64_t step = from; step < to; step++) {
        make_batch(data_seed, step, x, y);
        model_set_batch(m, x, y);
        losses[step] = model_train_step(m, (real)s->lr);
        if (step % 2 == 1)
            train_sched_observe(s, 10.0 + 0.001 * (double)step, NULL, 0);
    }
    free(x);
}

static void get_all(const model *m, real **params, real **mom)
{
    size_t n = m->plan.n_params;
    for (int t = 0; t < m->towers; t++) {
        params[t] = malloc(n * sizeof(real));
        mom[t] = malloc(n * sizeof(real));
        model_get_tensor(m, t, 0, params[t]);
        model_get_tensor(m, t, 2, mom[t]);
    }
}

Test(resume, model_resume_is_bit_identical, .timeout = 120)
{
    const uint64_t seed = 1234, data_seed = 99;
    model_placement cpu = {1, 0, {0, 0}};
    char err[1024];
    /* patience 1: the observed "error" never improves after the first, so the rate drops
     * during the run and the restored schedule must carry the drops over */
    train_sched s_a, s_b;
    train_sched_init(&s_a, 0.01, 1, 3, 0.0);
    s_b = s_a;

    /* uninterrupted */
    model a;
    cr_assert_eq(model_init(&a, &TINY, &cpu, seed, err, sizeof err), 0, "%s", err);
    double la[N_STEPS], lb[N_STEPS];
    train_steps(&a, &s_a, data_seed, 0, N_STEPS, la);
    cr_assert(s_a.drops >= 1, "the schedule dropped during the run");

    /* half, checkpoint, forget everything, resume, second half */
    char *dir = make_tmpdir();
    model b;
    cr_assert_eq(model_init(&b, &TINY, &cpu, seed, err, sizeof err), 0, "%s", err);
    train_steps(&b, &s_b, data_seed, 0, N_STEPS / 2, lb);
    train_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.cfg = TINY;
    meta.seed = seed;
    meta.step = N_STEPS / 2;
    meta.cursor = (train_cursor){data_seed, 0, N_STEPS / 2 * TINY.batch};
    meta.sched = s_b;
    train_nonfinite_init(&meta.nonfinite, 5);
    cr_assert_eq(train_ckpt_save(dir, &meta, &b, 3, err, sizeof err), 0, "%s", err);
    model_free(&b);
    memset(&s_b, 0, sizeof s_b);

    model c; /* a different init seed: everything must come from the checkpoint */
    cr_assert_eq(model_init(&c, &TINY, &cpu, seed + 1, err, sizeof err), 0, "%s", err);
    char path[4300];
    cr_assert_eq(train_ckpt_resolve(dir, path, sizeof path, err, sizeof err), 0, "%s", err);
    train_ckpt_meta got;
    cr_assert_eq(train_ckpt_load(path, &got, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(got.step, N_STEPS / 2);
    cr_assert_eq(c.step, N_STEPS / 2);
    s_b = got.sched;
    train_steps(&c, &s_b, got.cursor.seed, got.step, N_STEPS, lb);

    for (int i = 0; i < N_STEPS; i++)
        cr_assert_eq(memcmp(&la[i], &lb[i], sizeof(double)), 0,
                     "step %d: loss %.17g uninterrupted, %.17g resumed", i, la[i], lb[i]);
    cr_assert_eq(s_a.lr, s_b.lr);
    cr_assert_eq(s_a.drops, s_b.drops);
    real *pa[2], *ma[2], *pc[2], *mc[2];
    get_all(&a, pa, ma);
    get_all(&c, pc, mc);
    size_t n = a.plan.n_params;
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(memcmp(pa[t], pc[t], n * sizeof(real)), 0, "tower %d params differ", t);
        cr_assert_eq(memcmp(ma[t], mc[t], n * sizeof(real)), 0, "tower %d momentum differs", t);
        free(pa[t]);
        free(ma[t]);
        free(pc[t]);
        free(mc[t]);
    }
    model_free(&a);
    model_free(&c);
    rm_tree(dir);
    free(dir);
}

/* The same without the momentum in the checkpoint would differ: this guards the test
 * itself against passing for the wrong reason (e.g. momentum never used). */
Test(resume, losing_momentum_changes_the_losses, .timeout = 120)
{
    model_placement cpu = {1, 0, {0, 0}};
    char err[1024];
    train_sched s_a, s_b;
    train_sched_init(&s_a, 0.01, 100, 3, 0.0);
    s_b = s_a;
    model a, b;
    cr_assert_eq(model_init(&a, &TINY, &cpu, 5, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&b, &TINY, &cpu, 5, err, sizeof err), 0, "%s", err);
    double la[N_STEPS], lb[N_STEPS];
    train_steps(&a, &s_a, 7, 0, N_STEPS, la);
    train_steps(&b, &s_b, 7, 0, N_STEPS / 2, lb);
    real *zero = calloc(b.plan.n_params, sizeof(real));
    for (int t = 0; t < 2; t++)
        model_set_tensor(&b, t, 2, zero);
    free(zero);
    train_steps(&b, &s_b, 7, N_STEPS / 2, N_STEPS, lb);
    cr_assert(memcmp(&la[N_STEPS - 1], &lb[N_STEPS - 1], sizeof(double)) != 0,
              "zeroing the momentum mid-run changed nothing: the resume test proves nothing");
    model_free(&a);
    model_free(&b);
}
