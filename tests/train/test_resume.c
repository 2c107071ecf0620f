/* Resume must be exact: N steps in one go and N/2 steps + checkpoint + a fresh process
 * state + resume + N/2 steps give bit-identical losses and weights (CPU backend).
 * First at the model level (batches and rates as pure functions of the step, as in the
 * trainer), then through the trainer itself (train_run on Fashion-MNIST): stopped at an
 * epoch end, stopped by SIGINT at an arbitrary step, and stopped by a failed tower. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/train.h"

static const tower_config TINY = {2, 10, 2, 67, 3, 8};
#define N_STEPS 8

/* The batch of a step: a function of (data seed, step) only, like the loader's cursor. */
static void make_batch(uint64_t data_seed, int64_t step, float *x, int32_t *y)
{
    size_t n = (size_t)TINY.batch * TINY.in_ch * TINY.in_size * TINY.in_size;
    uint64_t key = base_rng_mix(data_seed, (uint64_t)step);
    for (size_t i = 0; i < n; i++)
        x[i] = base_rng_uniform(key, i) - 0.5f;
    for (int b = 0; b < TINY.batch; b++)
        y[b] = (int32_t)(base_rng_mix(key, n + (uint64_t)b) % (uint64_t)TINY.classes);
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
    model_placement cpu = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
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
    char *dir = tt_tmpdir("resume");
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
    tt_rmtree(dir);
    free(dir);
}

/* The same without the momentum in the checkpoint would differ: this guards the test
 * itself against passing for the wrong reason (e.g. momentum never used). */
Test(resume, losing_momentum_changes_the_losses, .timeout = 120)
{
    model_placement cpu = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
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

/* ---- through the trainer ------------------------------------------------------------------ */

#define FMNIST "/usr/share/datasets/fashion-mnist"

static int have_fmnist(void)
{
    struct stat st;
    return stat(FMNIST "/train-images-idx3-ubyte.gz", &st) == 0;
}

/* The start of every trainer-level test: skipped without Fashion-MNIST; a fresh temporary
 * folder (returned, to remove at the end) holding run folders a and b (names only). */
static char *start_runs(char a[4200], char b[4200])
{
    if (!have_fmnist())
        cr_skip_test("no Fashion-MNIST at " FMNIST " (Debian: dataset-fashion-mnist)");
    char *dir = tt_tmpdir("resume");
    snprintf(a, 4200, "%s/a", dir);
    snprintf(b, 4200, "%s/b", dir);
    return dir;
}

/* A tiny CPU run: 67-pixel inputs, widths / 8, batch 2, 16 steps per epoch, a metrics
 * line per step. */
static void small_options(train_options *o, const char *run, int epochs)
{
    train_options_default(o);
    o->data = FMNIST;
    o->size = 67;
    o->batch = 2;
    o->width_div = 8;
    o->epochs = epochs;
    o->train_limit = 32;
    o->test_limit = 4;
    o->log_every = 1;
    o->ckpt_every = 3;
    o->keep = 2;
    o->quiet = 1;
    o->seed = 7;
    o->run_dir = run;
}

/* The deterministic fields of a run's metrics lines ("type step field=value ..."), one
 * string per train/eval line, timing fields left out. Returns the count. */
static int run_lines(const char *run, char out[][512], int max)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    static const char *const train_keys[] = {"step", "epoch", "lr", "loss", "train_top1_err"};
    static const char *const eval_keys[] = {"step", "loss", "top1_err_center",
                                            "top5_err_center"};
    char line[2048];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        json_t *rec = train_metrics_parse(line);
        const char *type = json_string_value(json_object_get(rec, "type"));
        int tr = type && !strcmp(type, "train");
        if (!tr && (!type || strcmp(type, "eval"))) {
            json_decref(rec);
            continue;
        }
        const char *const *keys = tr ? train_keys : eval_keys;
        int nk = tr ? 5 : 4;
        size_t o = (size_t)snprintf(out[n], 512, "%s", type);
        for (int k = 0; k < nk; k++) {
            double v;
            cr_assert(train_metrics_number(rec, keys[k], &v) >= 0, "%s lacks %s", line, keys[k]);
            o += (size_t)snprintf(out[n] + o, 512 - o, " %s=%a", keys[k], v);
        }
        json_decref(rec);
        n++;
    }
    fclose(f);
    return n;
}

static void assert_same_runs(const char *a, const char *b, int expect_lines)
{
    static char la[256][512], lb[256][512];
    int na = run_lines(a, la, 256), nb = run_lines(b, lb, 256);
    cr_assert_eq(na, expect_lines, "%d lines in %s", na, a);
    cr_assert_eq(na, nb, "%d lines uninterrupted, %d resumed", na, nb);
    for (int i = 0; i < na; i++)
        cr_assert_str_eq(la[i], lb[i], "line %d differs", i);
}

/* The final checkpoints hold the same bits. */
static void assert_same_final_ckpt(const char *a, const char *b, int64_t step)
{
    char pa[4300], pb[4300], err[1024];
    snprintf(pa, sizeof pa, "%s/ckpt/ckpt-%08lld.ttc", a, (long long)step);
    snprintf(pb, sizeof pb, "%s/ckpt/ckpt-%08lld.ttc", b, (long long)step);
    train_ckpt_meta ma, mb;
    cr_assert_eq(train_ckpt_load(pa, &ma, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(train_ckpt_load(pb, &mb, NULL, err, sizeof err), 0, "%s", err);
    size_t n = ma.n_params;
    real *p[4], *q[4];
    for (int i = 0; i < 4; i++) {
        p[i] = malloc(n * sizeof(real));
        q[i] = malloc(n * sizeof(real));
    }
    cr_assert_eq(train_ckpt_load_buffers(pa, &ma, NULL, 0, p, p + 2, err, sizeof err), 0);
    cr_assert_eq(train_ckpt_load_buffers(pb, &mb, NULL, 0, q, q + 2, err, sizeof err), 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(memcmp(p[i], q[i], n * sizeof(real)), 0, "%s of tower %d differ",
                     i < 2 ? "params" : "momentum", i % 2);
        free(p[i]);
        free(q[i]);
    }
    cr_assert_eq(ma.cursor.pos, mb.cursor.pos);
    cr_assert_eq(ma.cursor.epoch, mb.cursor.epoch);
    cr_assert_eq(ma.sched.lr, mb.sched.lr);
    cr_assert_eq(ma.sched.evals, mb.sched.evals);
    cr_assert_eq(ma.sched.best, mb.sched.best);
}

/* Resumes run b (ckpt_every as its first part had it) to the end of epoch 2, asserts it
 * equals run a line for line and bit for bit, and removes the test's folder. */
static void resume_equals_uninterrupted(const char *a, const char *b, int64_t ckpt_every,
                                        char *dir)
{
    train_options o;
    small_options(&o, b, 2);
    o.ckpt_every = ckpt_every;
    o.resume = b;
    cr_assert_eq(train_run(&o), 0, "resumed run");
    assert_same_runs(a, b, 32 + 2);
    assert_same_final_ckpt(a, b, 32);
    tt_rmtree(dir);
    free(dir);
}

/* Run a: two epochs uninterrupted; run b: the first epoch only, to be resumed. */
static void run_whole_and_first_epoch(train_options *o, const char *a, const char *b)
{
    small_options(o, a, 2);
    cr_assert_eq(train_run(o), 0, "uninterrupted run");
    small_options(o, b, 1);
    cr_assert_eq(train_run(o), 0, "first epoch");
}

Test(resume, trainer_stopped_at_epoch_end_is_bit_identical, .timeout = 240)
{
    char a[4200], b[4200], *dir = start_runs(a, b);
    train_options o;
    run_whole_and_first_epoch(&o, a, b);
    resume_equals_uninterrupted(a, b, o.ckpt_every, dir);
}

/* The run's schedule events, "step|message" each, in file order. Returns the count. */
static int schedule_events(const char *run, char out[][512], int max)
{
    char path[4300], line[2048];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        double step;
        json_t *rec = train_metrics_parse(line);
        const char *kind = json_string_value(json_object_get(rec, "kind"));
        if (kind && !strcmp(kind, "schedule")) {
            const char *msg = json_string_value(json_object_get(rec, "msg"));
            cr_assert_not_null(msg, "%s", line);
            cr_assert(train_metrics_number(rec, "step", &step) == 1, "%s", line);
            snprintf(out[n++], 512, "%.0f|%s", step, msg);
        }
        json_decref(rec);
    }
    fclose(f);
    return n;
}

/* Every schedule decision is logged at the step of the evaluation that drove it, and a
 * run resumed from an older checkpoint into the same folder logs each decision once. */
Test(resume, events_carry_their_step_and_are_not_repeated, .timeout = 240)
{
    char a[4200], b[4200], ck[4400], *dir = start_runs(a, b);
    train_options o;
    small_options(&o, a, 2);
    o.eval_every = 4;
    o.patience = 1;
    o.ckpt_every = 10;
    o.keep = 5;
    cr_assert_eq(train_run(&o), 0, "first run");
    static char first[64][512], again[64][512];
    int n = schedule_events(a, first, 64);
    cr_assert(n >= 2, "%d schedule events", n);
    for (int i = 0; i < n; i++) {
        long step = strtol(first[i], NULL, 10);
        cr_assert(step > 0 && step % 4 == 0, "event at step %ld, not an evaluation's: %s", step,
                  first[i]);
    }
    snprintf(ck, sizeof ck, "%s/ckpt/ckpt-%08d.ttc", a, 10);
    small_options(&o, a, 2);
    o.eval_every = 4;
    o.patience = 1;
    o.ckpt_every = 10;
    o.keep = 5;
    o.resume = ck;
    cr_assert_eq(train_run(&o), 0, "resumed from step 10");
    cr_assert_eq(schedule_events(a, again, 64), n, "the events after step 10 were repeated");
    for (int i = 0; i < n; i++) cr_assert_str_eq(again[i], first[i], "event %d", i);
    tt_rmtree(dir);
    free(dir);
}

/* A run that diverges (learning rate 10): non-finite steps are skipped with a line each,
 * five in a row stop it with exit status 1, and the newest checkpoint left is one whose
 * weights are all finite (checkpoints wait for good steps). */
Test(resume, diverging_run_stops_and_keeps_a_good_checkpoint, .timeout = 240)
{
    char a[4200], b[4200], path[4300], line[2048], err[1024];
    char *dir = start_runs(a, b);
    train_options o;
    small_options(&o, a, 4);
    o.lr = 10;
    o.ckpt_every = 1;
    o.keep = 2;
    cr_assert_eq(train_run(&o), 1, "a diverging run ends with status 1");
    snprintf(path, sizeof path, "%s/metrics.jsonl", a);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int skips = 0, stops = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *rec = train_metrics_parse(line);
        const char *kind = json_string_value(json_object_get(rec, "kind"));
        int nonfinite = kind && !strcmp(kind, "nonfinite");
        json_decref(rec);
        if (!nonfinite)
            continue;
        skips += strstr(line, "step skipped") != NULL;
        stops += strstr(line, "stopping; the last good checkpoint is kept") != NULL;
    }
    fclose(f);
    cr_assert(skips >= TRAIN_NONFINITE_DEFAULT_LIMIT - 1, "%d skip lines", skips);
    cr_assert_eq(stops, 1);
    char newest[4400], prev[4400], ckdir[4300];
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", a);
    cr_assert_eq(train_ckpt_latest(ckdir, newest, sizeof newest, prev, sizeof prev, err,
                                   sizeof err), 0, "%s", err);
    train_ckpt_meta m;
    cr_assert_eq(train_ckpt_load(newest, &m, NULL, err, sizeof err), 0, "%s", err);
    size_t n = m.n_params;
    real *p[2] = {malloc(n * sizeof(real)), malloc(n * sizeof(real))};
    real *v[2] = {malloc(n * sizeof(real)), malloc(n * sizeof(real))};
    cr_assert_eq(train_ckpt_load_buffers(newest, &m, NULL, 0, p, v, err, sizeof err), 0, "%s",
                 err);
    for (int t = 0; t < 2; t++) {
        cr_assert(train_all_finite_f32(p[t], n), "%s: tower %d weights not finite", newest, t);
        free(p[t]);
        free(v[t]);
    }
    tt_rmtree(dir);
    free(dir);
}

/* --resume takes the net, seed, schedule, train limit and evaluation period from the
 * checkpoint: left off the command line they are the checkpoint's (the run continues
 * exactly), given and different they are refused with exit status 2. */
Test(resume, checkpoint_settings_win_and_conflicts_are_refused, .timeout = 240)
{
    char a[4200], b[4200], *dir = start_runs(a, b);
    train_options o;
    run_whole_and_first_epoch(&o, a, b);

    static const struct {
        unsigned bit;
        const char *what;
    } conflicts[] = {{TRAIN_GIVEN_BATCH, "--batch"}, {TRAIN_GIVEN_SEED, "--seed"},
                     {TRAIN_GIVEN_TRAIN_LIMIT, "--train-limit"}, {TRAIN_GIVEN_LR, "--lr"}};
    for (size_t i = 0; i < sizeof conflicts / sizeof conflicts[0]; i++) {
        small_options(&o, b, 2);
        o.resume = b;
        o.given = conflicts[i].bit;
        o.batch = 4, o.seed = 8, o.train_limit = 64, o.lr = 0.02; /* all differ */
        cr_assert_eq(train_run(&o), 2, "%s differing from the checkpoint", conflicts[i].what);
    }
    /* the command line's defaults (not given) give way to the checkpoint */
    train_options_default(&o);
    o.data = FMNIST;
    o.epochs = 2;
    o.test_limit = 4;
    o.log_every = 1;
    o.ckpt_every = 3;
    o.keep = 2;
    o.quiet = 1;
    o.run_dir = b;
    o.resume = b;
    cr_assert_eq(train_run(&o), 0, "resumed with defaults");
    assert_same_runs(a, b, 32 + 2);
    assert_same_final_ckpt(a, b, 32);
    tt_rmtree(dir);
    free(dir);
}

static int count_train_lines(const char *run)
{
    char path[4300], line[2048];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, "\"type\": \"train\"") != NULL;
    fclose(f);
    return n;
}

Test(resume, trainer_stopped_by_sigint_mid_epoch_is_bit_identical, .timeout = 240)
{
    char a[4200], b[4200], *dir = start_runs(a, b);
    train_options o;
    small_options(&o, a, 2);
    o.ckpt_every = 0; /* only the signal's checkpoint: the stop step is arbitrary */
    cr_assert_eq(train_run(&o), 0, "uninterrupted run");
    /* the run reports its data wait as a share of step time, once, at the end */
    char mpath[4300], line[2048];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", a);
    FILE *mf = fopen(mpath, "r");
    cr_assert_not_null(mf);
    int waits = 0;
    while (fgets(line, sizeof line, mf))
        waits += strstr(line, "\"data_wait\"") && strstr(line, "% of step time");
    fclose(mf);
    cr_assert_eq(waits, 1, "one data_wait event in %s", mpath);

    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        train_options c;
        small_options(&c, b, 2);
        c.ckpt_every = 0;
        _exit(train_run(&c));
    }
    /* SIGINT once the child is well inside the loop (the handler is installed before the
     * first step, and the first metrics line comes after it) */
    for (int i = 0; i < 6000 && count_train_lines(b) < 5; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    cr_assert(count_train_lines(b) >= 5, "the child never got going");
    cr_assert_eq(kill(pid, SIGINT), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child was killed instead of stopping");
    int code = WEXITSTATUS(st);
    if (code == 0)
        cr_skip_test("the run finished before the signal arrived");
    cr_assert_eq(code, 130, "a SIGINT stop exits 130 after its checkpoint");
    char path[4300], err[2048];
    cr_assert_eq(train_ckpt_resolve(b, path, sizeof path, err, sizeof err), 0, "%s", err);
    train_ckpt_meta m;
    cr_assert_eq(train_ckpt_load(path, &m, NULL, err, sizeof err), 0, "%s", err);
    /* 32: the signal came after the last step's check, its stop checkpoint is the end */
    cr_assert(m.step >= 5 && m.step <= 32, "stopped at step %lld", (long long)m.step);
    resume_equals_uninterrupted(a, b, 0, dir);
}

/* A tower's worker fails in step 20 (the model's test hook, before conv3's exchange, so
 * the other tower waits there until it is let go): the run stops with status 3 and a stop
 * event naming the failure, the newest checkpoint (step 18) is intact, and resuming from
 * it gives the uninterrupted run bit for bit. The timeout catches a deadlock. */
Test(resume, failed_tower_stops_the_run_and_the_resume_is_bit_identical, .timeout = 240)
{
    char a[4200], b[4200], *dir = start_runs(a, b);
    train_options o;
    small_options(&o, a, 2);
    cr_assert_eq(train_run(&o), 0, "uninterrupted run");
    small_options(&o, b, 2);
    o.place.test_fail_step = 20;
    o.place.test_fail_tower = 1;
    o.place.test_fail_layer = 2;
    cr_assert_eq(train_run(&o), 3, "a failed tower ends the run with status 3");
    char path[4300], err[2048], line[2048];
    cr_assert_eq(train_ckpt_resolve(b, path, sizeof path, err, sizeof err), 0, "%s", err);
    train_ckpt_meta m;
    cr_assert_eq(train_ckpt_load(path, &m, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.step, 18, "newest checkpoint at step %lld", (long long)m.step);
    snprintf(path, sizeof path, "%s/metrics.jsonl", b);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    int stops = 0;
    while (fgets(line, sizeof line, f))
        stops += strstr(line, "\"stop\"") && strstr(line, "tower 1 failed before conv3") &&
                 strstr(line, "step 20 failed");
    fclose(f);
    cr_assert_eq(stops, 1, "one stop event naming the failure in %s", path);
    resume_equals_uninterrupted(a, b, o.ckpt_every, dir);
}
