/* Tests of the plateau rule and the non-finite step counter on synthetic validation
 * curves: drops exactly when P evaluations in a row fail to improve, never otherwise,
 * and stops at the fourth plateau (after the third drop). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "train/schedule.h"

/* Feeds the curve, records each action. */
static void run(train_sched *s, const double *curve, int n, int *acts)
{
    char why[256];
    for (int i = 0; i < n; i++)
        acts[i] = train_sched_observe(s, curve[i], why, sizeof why);
}

Test(schedule, improving_curve_never_drops)
{
    train_sched s;
    train_sched_init(&s, 0.01, 3, 3, 0.0);
    double c[50];
    int a[50];
    for (int i = 0; i < 50; i++)
        c[i] = 0.9 - 0.01 * i;
    run(&s, c, 50, a);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(a[i], TRAIN_SCHED_NONE, "eval %d", i);
    cr_assert_eq(s.drops, 0);
    cr_assert_eq(s.lr, 0.01);
    cr_assert_float_eq(s.best, 0.41, 1e-12);
    cr_assert_eq(s.best_eval, 49);
}

Test(schedule, drops_after_exactly_patience_flat_evals)
{
    for (int P = 1; P <= 6; P++) {
        train_sched s;
        train_sched_init(&s, 0.01, P, 3, 0.0);
        double c[40];
        int a[40];
        for (int i = 0; i < 10; i++)
            c[i] = 0.9 - 0.05 * i; /* improving: best 0.45 at eval 9 */
        for (int i = 10; i < 40; i++)
            c[i] = 0.5; /* flat, worse than the best */
        run(&s, c, 10 + P, a);
        for (int i = 0; i < 10 + P - 1; i++)
            cr_assert_eq(a[i], TRAIN_SCHED_NONE, "P=%d eval %d", P, i);
        cr_assert_eq(a[10 + P - 1], TRAIN_SCHED_DROP, "P=%d: drop on the P-th flat eval", P);
        cr_assert_float_eq(s.lr, 0.001, 1e-15);
        cr_assert_eq(s.bad, 0, "the counter restarts after a drop");
    }
}

Test(schedule, patience_minus_one_then_improvement_resets)
{
    train_sched s;
    train_sched_init(&s, 0.01, 4, 3, 0.0);
    /* 0.5, then 3 flat (P-1), then an improvement, then 3 flat: never 4 in a row */
    double c[] = {0.5, 0.6, 0.55, 0.5, 0.49, 0.6, 0.6, 0.6, 0.48, 0.7, 0.7, 0.7};
    int n = (int)(sizeof c / sizeof c[0]), a[16];
    run(&s, c, n, a);
    for (int i = 0; i < n; i++)
        cr_assert_eq(a[i], TRAIN_SCHED_NONE, "eval %d", i);
    cr_assert_eq(s.bad, 3);
    cr_assert_eq(train_sched_observe(&s, 0.7, NULL, 0), TRAIN_SCHED_DROP);
}

Test(schedule, equal_to_best_is_not_an_improvement)
{
    train_sched s;
    train_sched_init(&s, 0.01, 2, 3, 0.0);
    cr_assert_eq(train_sched_observe(&s, 0.5, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(train_sched_observe(&s, 0.5, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(train_sched_observe(&s, 0.5, NULL, 0), TRAIN_SCHED_DROP);
}

Test(schedule, min_delta_small_gains_do_not_count)
{
    train_sched s;
    train_sched_init(&s, 0.01, 3, 3, 0.01);
    double c[] = {0.5, 0.495, 0.492, 0.491}; /* each below 0.5 by less than 0.01 */
    int a[4];
    run(&s, c, 4, a);
    cr_assert_eq(a[0], TRAIN_SCHED_NONE);
    cr_assert_eq(a[1], TRAIN_SCHED_NONE);
    cr_assert_eq(a[2], TRAIN_SCHED_NONE);
    cr_assert_eq(a[3], TRAIN_SCHED_DROP);
    cr_assert_eq(s.best, 0.5, "sub-threshold values never become the best");
    /* a gain above min_delta does count */
    train_sched_init(&s, 0.01, 3, 3, 0.01);
    double d[] = {0.5, 0.495, 0.48, 0.479, 0.478, 0.477};
    int b[6];
    run(&s, d, 6, b);
    cr_assert_eq(b[4], TRAIN_SCHED_NONE);
    cr_assert_eq(b[5], TRAIN_SCHED_DROP);
    cr_assert_eq(s.best_eval, 2);
}

Test(schedule, best_is_kept_across_drops)
{
    train_sched s;
    train_sched_init(&s, 0.01, 2, 3, 0.0);
    double c[] = {0.40, 0.45, 0.45}; /* drop at eval 2 */
    int a[3];
    run(&s, c, 3, a);
    cr_assert_eq(a[2], TRAIN_SCHED_DROP);
    /* after the drop the error falls but stays above the best 0.40: not an improvement */
    cr_assert_eq(train_sched_observe(&s, 0.43, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(train_sched_observe(&s, 0.42, NULL, 0), TRAIN_SCHED_DROP);
    cr_assert_float_eq(s.lr, 1e-4, 1e-18);
}

Test(schedule, fourth_plateau_stops_after_third_drop)
{
    train_sched s;
    train_sched_init(&s, 0.01, 2, 3, 0.0);
    const double expect_lr[] = {0.01, 0.001, 0.0001, 0.00001};
    double err = 0.9;
    int drops = 0, stops = 0, evals = 0;
    for (int plateau = 0; plateau < 4; plateau++) {
        cr_assert_float_eq(s.lr, expect_lr[plateau], 1e-18, "plateau %d", plateau);
        for (int i = 0; i < 5; i++, evals++) { /* improve 5 times */
            err -= 0.02;
            cr_assert_eq(train_sched_observe(&s, err, NULL, 0), TRAIN_SCHED_NONE);
        }
        cr_assert_eq(train_sched_observe(&s, err + 0.01, NULL, 0), TRAIN_SCHED_NONE);
        int a = train_sched_observe(&s, err + 0.01, NULL, 0);
        evals += 2;
        if (plateau < 3) {
            cr_assert_eq(a, TRAIN_SCHED_DROP, "plateau %d drops", plateau);
            drops++;
        } else {
            cr_assert_eq(a, TRAIN_SCHED_STOP, "the fourth plateau stops");
            stops++;
        }
    }
    cr_assert_eq(drops, 3);
    cr_assert_eq(stops, 1);
    cr_assert_eq(s.drops, 3);
    cr_assert_eq(s.stopped, 1);
    cr_assert_eq(s.evals, evals);
    /* after a stop every observation says stop, even an improvement */
    cr_assert_eq(train_sched_observe(&s, 0.01, NULL, 0), TRAIN_SCHED_STOP);
    cr_assert_float_eq(s.lr, 1e-5, 1e-18);
}

Test(schedule, max_drops_zero_stops_at_first_plateau)
{
    train_sched s;
    train_sched_init(&s, 0.05, 1, 0, 0.0);
    cr_assert_eq(train_sched_observe(&s, 0.5, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(train_sched_observe(&s, 0.6, NULL, 0), TRAIN_SCHED_STOP);
    cr_assert_eq(s.lr, 0.05);
}

Test(schedule, nan_error_counts_as_no_improvement)
{
    train_sched s;
    train_sched_init(&s, 0.01, 2, 3, 0.0);
    cr_assert_eq(train_sched_observe(&s, NAN, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(s.best_eval, -1);
    cr_assert_eq(train_sched_observe(&s, 0.5, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(train_sched_observe(&s, NAN, NULL, 0), TRAIN_SCHED_NONE);
    cr_assert_eq(train_sched_observe(&s, INFINITY, NULL, 0), TRAIN_SCHED_DROP);
}

Test(schedule, why_line_names_the_numbers)
{
    train_sched s;
    train_sched_init(&s, 0.01, 2, 3, 0.0);
    char why[256];
    train_sched_observe(&s, 0.4321, why, sizeof why);
    cr_assert(strstr(why, "0.4321") != NULL, "%s", why);
    train_sched_observe(&s, 0.5, why, sizeof why);
    cr_assert(strstr(why, "1 of 2") != NULL, "%s", why);
    cr_assert_eq(train_sched_observe(&s, 0.55, why, sizeof why), TRAIN_SCHED_DROP);
    cr_assert(strstr(why, "0.5500") && strstr(why, "best 0.4321") && strstr(why, "0.01 -> 0.001"),
              "%s", why);
    /* a tiny buffer is never overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    train_sched_observe(&s, 0.1, small, 4);
    cr_assert_eq(small[3], 0);
    cr_assert_eq(small[4], 'x');
}

/* A closed loop standing in for a real run: the error relaxes toward a floor that
 * depends on the rate (lower rate, lower floor), as in the paper's figure of error vs
 * epoch. The rule must take three drops at plateaus and then stop, within 90 epochs. */
Test(schedule, closed_loop_three_drops_then_stop)
{
    train_sched s;
    train_sched_init(&s, TRAIN_SCHED_DEFAULT_LR0, TRAIN_SCHED_DEFAULT_PATIENCE,
                     TRAIN_SCHED_DEFAULT_MAX_DROPS, TRAIN_SCHED_DEFAULT_MIN_DELTA);
    double err = 0.999;
    int drop_at[3], nd = 0, stop_at = -1;
    for (int epoch = 0; epoch < 200 && stop_at < 0; epoch++) {
        double floor_ = 0.40 + 20.0 * s.lr; /* 0.6, 0.42, 0.402, 0.4002 */
        err = floor_ + (err - floor_) * 0.8;
        int a = train_sched_observe(&s, err, NULL, 0);
        if (a == TRAIN_SCHED_DROP)
            drop_at[nd++] = epoch;
        if (a == TRAIN_SCHED_STOP)
            stop_at = epoch;
    }
    cr_assert_eq(nd, 3);
    cr_assert(drop_at[0] < drop_at[1] && drop_at[1] < drop_at[2] && drop_at[2] < stop_at);
    cr_assert(stop_at < 90, "stopped at epoch %d", stop_at);
    /* each segment lasts at least P evaluations past its last improvement */
    cr_assert(drop_at[1] - drop_at[0] >= TRAIN_SCHED_DEFAULT_PATIENCE);
    cr_assert(stop_at - drop_at[2] >= TRAIN_SCHED_DEFAULT_PATIENCE);
}

Test(schedule, init_clamps_bad_settings)
{
    train_sched s;
    train_sched_init(&s, -1.0, 0, -3, NAN);
    cr_assert_eq(s.lr0, TRAIN_SCHED_DEFAULT_LR0);
    cr_assert_eq(s.patience, 1);
    cr_assert_eq(s.max_drops, 0);
    cr_assert_eq(s.min_delta, 0.0);
    char err[128];
    cr_assert_eq(train_sched_validate(&s, err, sizeof err), 0, "%s", err);
}

Test(schedule, validate_names_the_bad_field)
{
    train_sched good;
    train_sched_init(&good, 0.01, 3, 3, 0.001);
    train_sched_observe(&good, 0.5, NULL, 0);
    train_sched_observe(&good, 0.6, NULL, 0);
    char err[128];
    cr_assert_eq(train_sched_validate(&good, err, sizeof err), 0, "%s", err);
#define BAD(stmt, field)                                                                  \
    do {                                                                                  \
        train_sched x = good;                                                             \
        stmt;                                                                             \
        err[0] = 0;                                                                       \
        cr_assert_eq(train_sched_validate(&x, err, sizeof err), -1, "%s accepted", #stmt); \
        cr_assert(strstr(err, field) != NULL, "%s: '%s' lacks %s", #stmt, err, field);     \
    } while (0)
    BAD(x.lr0 = 0, "lr0");
    BAD(x.lr0 = NAN, "lr0");
    BAD(x.patience = 0, "patience");
    BAD(x.max_drops = -1, "max_drops");
    BAD(x.min_delta = -0.5, "min_delta");
    BAD(x.drops = 4, "drops");
    BAD(x.bad = 9, "bad");
    BAD(x.best_eval = 7, "best_eval");
    BAD(x.best = NAN, "best");
    BAD(x.stopped = 2, "stopped");
    BAD(x.lr = 0.5, "lr");
#undef BAD
}

Test(nonfinite, skips_then_stops_after_k_in_a_row)
{
    train_nonfinite nf;
    train_nonfinite_init(&nf, 3);
    char why[256];
    cr_assert_eq(train_nonfinite_observe(&nf, 2.3, 0, why, sizeof why), TRAIN_NONFINITE_OK);
    cr_assert_eq(train_nonfinite_observe(&nf, NAN, 1, why, sizeof why), TRAIN_NONFINITE_SKIP);
    cr_assert(strstr(why, "step 1") && strstr(why, "skipped"), "%s", why);
    cr_assert_eq(train_nonfinite_observe(&nf, INFINITY, 2, why, sizeof why),
                 TRAIN_NONFINITE_SKIP);
    cr_assert_eq(train_nonfinite_observe(&nf, 2.2, 3, why, sizeof why), TRAIN_NONFINITE_OK);
    cr_assert_eq(nf.run, 0, "a finite step resets the run");
    cr_assert_eq(train_nonfinite_observe(&nf, NAN, 4, why, sizeof why), TRAIN_NONFINITE_SKIP);
    cr_assert_eq(train_nonfinite_observe(&nf, -INFINITY, 5, why, sizeof why),
                 TRAIN_NONFINITE_SKIP);
    cr_assert_eq(train_nonfinite_observe(&nf, NAN, 6, why, sizeof why), TRAIN_NONFINITE_STOP);
    cr_assert(strstr(why, "step 6") && strstr(why, "stopping"), "%s", why);
    cr_assert_eq(nf.skipped, 5);
    char err[128];
    train_nonfinite ok;
    train_nonfinite_init(&ok, 3);
    cr_assert_eq(train_nonfinite_validate(&ok, err, sizeof err), 0);
    ok.run = 3;
    cr_assert_eq(train_nonfinite_validate(&ok, err, sizeof err), -1);
    cr_assert(strstr(err, "nonfinite.run"), "%s", err);
}

Test(nonfinite, all_finite_scan)
{
    float x[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = (float)(i - 500) * 1e30f; /* huge but finite */
    cr_assert(train_all_finite_f32(x, 1000));
    x[999] = INFINITY;
    cr_assert(!train_all_finite_f32(x, 1000));
    x[999] = 0;
    x[3] = NAN;
    cr_assert(!train_all_finite_f32(x, 1000));
    cr_assert(train_all_finite_f32(x, 3));
    cr_assert(train_all_finite_f32(x, 0));
}
