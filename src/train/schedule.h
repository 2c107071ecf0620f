/* schedule: the paper's learning-rate rule (section 5) as a pure state machine, and the
 * counter that turns non-finite losses into skipped steps and, K in a row, a stop.
 * Both are plain structs without pointers, so a checkpoint stores them as numbers.
 *
 * How the trainer calls it:
 *
 *   train_sched s;   train_sched_init(&s, 0.01, patience, 3, min_delta);   // at start
 *   ... (or restore s from the checkpoint's meta on --resume)
 *   every evaluation:
 *       char why[256];
 *       int a = train_sched_observe(&s, val_top1_error, why, sizeof why);
 *       log `why` (console + metrics event);
 *       a == TRAIN_SCHED_DROP: the new rate is s.lr (already divided by 10)
 *       a == TRAIN_SCHED_STOP: checkpoint and stop (the fourth plateau)
 *   every step: lr = s.lr.
 *
 *   train_nonfinite nf;  train_nonfinite_init(&nf, 5);
 *   after the forward pass (and after the gradients, when they are checked):
 *       int a = train_nonfinite_observe(&nf, loss, step, why, sizeof why);
 *       a == TRAIN_NONFINITE_SKIP: log `why`, do not update, go to the next batch
 *       a == TRAIN_NONFINITE_STOP: log `why`, stop with an error (the last good
 *                                  checkpoint is left as it is: do not write one)
 */
#ifndef TRAIN_SCHEDULE_H
#define TRAIN_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults; paper_notes.md ("The learning-rate rule") gives the reasons. */
#define TRAIN_SCHED_DEFAULT_LR0 0.01
#define TRAIN_SCHED_DEFAULT_PATIENCE 5      /* evaluations without improvement */
#define TRAIN_SCHED_DEFAULT_MAX_DROPS 3
#define TRAIN_SCHED_DEFAULT_MIN_DELTA 0.001 /* absolute error (0.1 percentage point) */
#define TRAIN_NONFINITE_DEFAULT_LIMIT 5

/* Values are written to checkpoints: append only. */
typedef enum {
    TRAIN_SCHED_NONE = 0, /* keep the rate */
    TRAIN_SCHED_DROP = 1, /* the rate was divided by 10 (s.lr holds the new one) */
    TRAIN_SCHED_STOP = 2, /* plateau after the last drop: training is over */
} train_sched_action;

typedef struct {
    /* settings */
    double lr0;        /* first rate, 0.01 */
    int32_t patience;  /* P: a plateau is P evaluations in a row without improvement */
    int32_t max_drops; /* 3: the fourth plateau stops the run */
    double min_delta;  /* an improvement is err < best - min_delta */
    /* state */
    double lr;         /* the current rate = lr0 / 10^drops */
    double best;       /* lowest validation error seen so far (any rate); 1e300 before any */
    int64_t best_eval; /* index of the evaluation that set `best` (-1 before any) */
    int64_t evals;     /* evaluations observed */
    int32_t drops;     /* times the rate was divided so far */
    int32_t bad;       /* evaluations in a row without improvement (reset by a drop) */
    int32_t stopped;   /* 1 once TRAIN_SCHED_STOP was returned; later calls return STOP */
} train_sched;

/* Sets the rule up. patience >= 1, max_drops >= 0, min_delta >= 0, lr0 > 0; values out
 * of range are clamped to the nearest legal one (the CLI validates flags before this). */
void train_sched_init(train_sched *s, double lr0, int patience, int max_drops, double min_delta);

/* Feeds one validation error (a fraction, e.g. top-1 error 0.412). Returns the action
 * (train_sched_action) and writes a one-line reason with the numbers that drove it to
 * why (may be NULL). A non-finite error counts as "no improvement". */
int train_sched_observe(train_sched *s, double val_error, char *why, size_t whylen);

/* Checks a state read from a file (a checkpoint): 0 if every field is in range,
 * else -1 with the offending field named in err. */
int train_sched_validate(const train_sched *s, char *err, size_t errlen);

/* ---- non-finite losses and gradients ---------------------------------------------- */

typedef enum {
    TRAIN_NONFINITE_OK = 0,   /* finite: train on */
    TRAIN_NONFINITE_SKIP = 1, /* skip this step (no update) */
    TRAIN_NONFINITE_STOP = 2, /* `limit` non-finite steps in a row: stop with an error */
} train_nonfinite_action;

typedef struct {
    int32_t limit;   /* K: this many non-finite steps in a row stop the run (>= 1) */
    int32_t run;     /* current run of non-finite steps */
    int64_t skipped; /* all skipped steps so far (kept across resume) */
} train_nonfinite;

void train_nonfinite_init(train_nonfinite *nf, int limit);
/* value: the step's loss (or any scalar that is non-finite when a gradient is, such
 * as a sum of gradient squares). step: for the message. */
int train_nonfinite_observe(train_nonfinite *nf, double value, int64_t step, char *why,
                            size_t whylen);
int train_nonfinite_validate(const train_nonfinite *nf, char *err, size_t errlen);

/* 1 when every one of n floats is finite: the gradient check the trainer runs on a
 * host copy (model_get_tensor(..., 1, ...)) before model_update. */
int train_all_finite_f32(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
