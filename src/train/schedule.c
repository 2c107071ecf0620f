/* schedule: the plateau rule of the paper (section 5: "divided by 10 when the validation
 * error rate stopped improving with the current learning rate", three times in all) and
 * the non-finite step counter. Pure functions of their structs: no clock, no globals. */
#include "train/schedule.h"

#include <math.h>
#include <stdio.h>

#define SCHED_NO_BEST 1e300

void train_sched_init(train_sched *s, double lr0, int patience, int max_drops, double min_delta)
{
    /* NaN compares false everywhere, so each check is written to let NaN fall to the
     * default rather than through. */
    s->lr0 = (lr0 > 0.0 && isfinite(lr0)) ? lr0 : TRAIN_SCHED_DEFAULT_LR0;
    s->patience = patience >= 1 ? patience : 1;
    s->max_drops = max_drops >= 0 ? max_drops : 0;
    s->min_delta = (min_delta >= 0.0 && isfinite(min_delta)) ? min_delta : 0.0;
    s->lr = s->lr0;
    s->best = SCHED_NO_BEST;
    s->best_eval = -1;
    s->evals = 0;
    s->drops = 0;
    s->bad = 0;
    s->stopped = 0;
}

#define SAY(...)                                                                          \
    do {                                                                                  \
        if (why && whylen)                                                                \
            snprintf(why, whylen, __VA_ARGS__);                                           \
    } while (0)

int train_sched_observe(train_sched *s, double val_error, char *why, size_t whylen)
{
    long long ev = (long long)s->evals++;
    if (s->stopped) {
        SAY("schedule: eval %lld: val error %.4f; already stopped after %d drops", ev,
            val_error, (int)s->drops);
        return TRAIN_SCHED_STOP;
    }
    /* The best error is kept across drops: after a drop the new rate must beat the best
     * error of any rate so far, otherwise it is not improving "with the current rate". */
    int improved = isfinite(val_error) && val_error < s->best - s->min_delta;
    if (improved) {
        double prev = s->best;
        s->best = val_error;
        s->best_eval = ev;
        s->bad = 0;
        if (prev >= SCHED_NO_BEST)
            SAY("schedule: eval %lld: val error %.4f (first evaluation); lr %g", ev,
                val_error, s->lr);
        else
            SAY("schedule: eval %lld: val error %.4f improves on best %.4f by more than "
                "min_delta %g; lr %g stays",
                ev, val_error, prev, s->min_delta, s->lr);
        return TRAIN_SCHED_NONE;
    }
    s->bad++;
    if (s->bad < s->patience) {
        SAY("schedule: eval %lld: val error %.4f, best %.4f (eval %lld); %d of %d "
            "evaluations without improvement; lr %g stays",
            ev, val_error, s->best, (long long)s->best_eval, (int)s->bad, (int)s->patience,
            s->lr);
        return TRAIN_SCHED_NONE;
    }
    /* A plateau: the rate has stopped helping. */
    if (s->drops >= s->max_drops) {
        s->stopped = 1;
        SAY("schedule: eval %lld: val error %.4f, best %.4f (eval %lld); %d evaluations "
            "without improvement after drop %d of %d at lr %g: stop",
            ev, val_error, s->best, (long long)s->best_eval, (int)s->bad, (int)s->drops,
            (int)s->max_drops, s->lr);
        return TRAIN_SCHED_STOP;
    }
    double old = s->lr;
    s->drops++;
    s->lr = s->lr0;
    for (int i = 0; i < s->drops; i++)
        s->lr /= 10.0; /* recomputed from lr0 so the rate is the same after any resume */
    s->bad = 0;
    SAY("schedule: eval %lld: val error %.4f, best %.4f (eval %lld); %d evaluations "
        "without improvement: lr %g -> %g (drop %d of %d)",
        ev, val_error, s->best, (long long)s->best_eval, (int)s->patience, old, s->lr,
        (int)s->drops, (int)s->max_drops);
    return TRAIN_SCHED_DROP;
}

int train_sched_validate(const train_sched *s, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (!(s->lr0 > 0.0) || !isfinite(s->lr0))
        bad = "schedule.lr0 (must be > 0)";
    else if (s->patience < 1)
        bad = "schedule.patience (must be >= 1)";
    else if (s->max_drops < 0 || s->max_drops > 100)
        bad = "schedule.max_drops (must be 0..100)";
    else if (!(s->min_delta >= 0.0) || !isfinite(s->min_delta))
        bad = "schedule.min_delta (must be >= 0)";
    else if (s->drops < 0 || s->drops > s->max_drops)
        bad = "schedule.drops (must be 0..max_drops)";
    else if (s->bad < 0 || s->bad > s->patience)
        bad = "schedule.bad (must be 0..patience)";
    else if (s->evals < 0 || s->best_eval < -1 || s->best_eval >= s->evals)
        bad = "schedule.evals/best_eval (out of range)";
    else if (!(s->best >= 0.0) || (s->best_eval < 0) != (s->best >= SCHED_NO_BEST))
        bad = "schedule.best (out of range)";
    else if (s->stopped != 0 && s->stopped != 1)
        bad = "schedule.stopped (must be 0 or 1)";
    else {
        double lr = s->lr0;
        for (int i = 0; i < s->drops; i++)
            lr /= 10.0;
        if (s->lr != lr)
            bad = "schedule.lr (is not lr0 / 10^drops)";
    }
    if (bad) {
        if (err && errlen)
            snprintf(err, errlen, "%s", bad);
        return -1;
    }
    return 0;
}

void train_nonfinite_init(train_nonfinite *nf, int limit)
{
    nf->limit = limit >= 1 ? limit : 1;
    nf->run = 0;
    nf->skipped = 0;
}

int train_nonfinite_observe(train_nonfinite *nf, double value, int64_t step, char *why,
                            size_t whylen)
{
    if (isfinite(value)) {
        nf->run = 0;
        return TRAIN_NONFINITE_OK;
    }
    nf->run++;
    nf->skipped++;
    if (nf->run >= nf->limit) {
        if (why && whylen)
            snprintf(why, whylen,
                     "step %lld: non-finite loss or gradient (%g) for the %d-th step in a row "
                     "(limit %d): stopping; the last good checkpoint is kept",
                     (long long)step, value, nf->run, nf->limit);
        return TRAIN_NONFINITE_STOP;
    }
    if (why && whylen)
        snprintf(why, whylen,
                 "step %lld: non-finite loss or gradient (%g): step skipped (%d in a row, "
                 "limit %d; %lld skipped in all)",
                 (long long)step, value, nf->run, nf->limit, (long long)nf->skipped);
    return TRAIN_NONFINITE_SKIP;
}

int train_nonfinite_validate(const train_nonfinite *nf, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (nf->limit < 1)
        bad = "nonfinite.limit (must be >= 1)";
    else if (nf->run < 0 || nf->run >= nf->limit)
        bad = "nonfinite.run (must be 0..limit-1)";
    else if (nf->skipped < nf->run)
        bad = "nonfinite.skipped (less than the current run)";
    if (bad) {
        if (err && errlen)
            snprintf(err, errlen, "%s", bad);
        return -1;
    }
    return 0;
}

int train_all_finite_f32(const float *x, size_t n)
{
    /* x*0 is 0 for every finite x and NaN for Inf or NaN, so one sum answers for all
     * n without a branch per element. */
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * 0.0f;
    return acc == 0.0f;
}
