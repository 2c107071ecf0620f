/* metrics: a run folder's records and the console progress line.
 *   RUN/metrics.jsonl  one JSON object per line: "type" "train" (every logging interval),
 *                      "eval" (every evaluation), "event" (schedule decisions, skipped
 *                      steps, resume, signals, checkpoints). Flushed line by line.
 *   RUN/run.json       command line, version, compiler, BLAS, seed, config.
 * Both are written and read with Jansson. Also the top-k error counter used by evaluation.
 *
 * How the trainer calls it:
 *
 *   train_metrics mt;
 *   train_metrics_open(&mt, run_dir, resume ? meta.step : -1, err, sizeof err);
 *   train_run_info info = {argc, argv, git_or_NULL, "cpu", seed, cfg, extra_or_NULL};
 *   train_run_info_write(run_dir, &info, err, sizeof err);   // keeps an existing run.json
 *   if (resume) train_metrics_log_resume(&mt, step, epoch, ckpt_path, argc, argv);
 *   train_progress pg;  train_progress_init(&pg, stderr, 30.0, base_now(), step);
 *   every step:         train_progress_update(&pg, base_now(), step, total, epoch, loss,
 *                                             lr, images_per_s);
 *   every log interval: train_log_row r = {...}; train_metrics_log_train(&mt, &r, ...);
 *   every evaluation:   train_topk_errors(probs, labels, B, V, &w1, &w5) per batch, sum;
 *                       train_eval_row e = {...}; train_metrics_log_eval(&mt, &e, ...);
 *   decisions:          train_metrics_log_event(&mt, step, epoch, "schedule", why, ...);
 *   at the end:         train_progress_end(&pg); train_metrics_close(&mt);
 *
 * Error rates are fractions in [0, 1]. Non-finite numbers are written as null. */
#ifndef TRAIN_METRICS_H
#define TRAIN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "tower/tower.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TRAIN_METRICS_FILE "metrics.jsonl"
#define TRAIN_RUN_INFO_FILE "run.json"

typedef struct {
    FILE *f;          /* RUN/metrics.jsonl, append mode, unbuffered */
    char path[4096];
    int failed;       /* errno of the first failed line, or 0: no line is written after it */
} train_metrics;

/* Creates run_dir (and parents) when missing and opens RUN/metrics.jsonl.
 * resume_step < 0: a fresh run: the file is started empty.
 * resume_step >= 0: resuming from the checkpoint of that step: the lines of steps after
 * it (work the crash lost, to be redone) and a torn last line are dropped, atomically,
 * then new lines are appended, so the file reads as one uninterrupted run.
 * The file must be a regular file where it exists (a FIFO, a device or a folder is
 * refused). The trainer only opens a fresh file in a folder it claimed (runfolder.h).
 * Returns 0, or -1 with err naming the file. */
int train_metrics_open(train_metrics *mt, const char *run_dir, int64_t resume_step, char *err,
                       size_t errlen);
/* 0, or -1 when the close reports a failed write (errno says which). */
int train_metrics_close(train_metrics *mt);

typedef struct {
    int64_t step;           /* steps done */
    double epoch;           /* fractional: images seen / training set size */
    double lr;
    double loss;            /* mean training loss over the interval */
    double train_top1_err;  /* top-1 error on the training batches of the interval */
    double images_per_s;
    double data_wait_share; /* fraction of the interval the trainer waited for data */
    double time_s;          /* training seconds since the run began (resumes included) */
} train_log_row;

typedef struct {
    int64_t step;
    double epoch;
    int64_t images;         /* validation images evaluated */
    double loss;            /* mean validation loss, center crop */
    double top1_err_center, top5_err_center;
    double top1_err_10view, top5_err_10view; /* NaN when 10-view was not run */
    double lr;              /* the rate the steps before this evaluation ran at (a drop
                               decided here shows in the next evaluation's line); NaN:
                               not given */
} train_eval_row;

int train_metrics_log_train(train_metrics *mt, const train_log_row *r, char *err,
                            size_t errlen);
int train_metrics_log_eval(train_metrics *mt, const train_eval_row *r, char *err,
                           size_t errlen);
/* kind: a short word ("schedule", "nonfinite", "checkpoint", "signal", "stop"); msg: any
 * text (escaped). */
int train_metrics_log_event(train_metrics *mt, int64_t step, double epoch, const char *kind,
                            const char *msg, char *err, size_t errlen);
/* An event of kind "resume" carrying the checkpoint and the new command line. */
int train_metrics_log_resume(train_metrics *mt, int64_t step, double epoch,
                             const char *ckpt_path, int argc, char **argv, char *err,
                             size_t errlen);

typedef struct {
    int argc;
    char **argv;
    const char *git;        /* `git describe --always --dirty` of the source, or NULL */
    const char *backend;    /* e.g. "cpu", "cuda: 2 GPUs, nccl" */
    uint64_t seed;
    tower_config cfg;
    json_t *extra;          /* NULL, or an object whose members are added (borrowed) */
} train_run_info;

/* Writes RUN/run.json (crash-safe, base_write_file) when it does not exist yet; an
 * existing one (the first start of a resumed run) is kept; one that is not a regular
 * file is refused. Adds the version
 * (base_version), the compiler (__VERSION__), the BLAS (openblas_get_config) and the
 * start time. Returns 0, or -1 with err. */
int train_run_info_write(const char *run_dir, const train_run_info *info, char *err,
                         size_t errlen);

/* ---- console progress --------------------------------------------------------------- */

typedef struct {
    FILE *out;
    int tty;             /* 1: redraw one line with \r; 0: a plain line every interval_s */
    double interval_s;   /* for non-TTY output */
    double t_start, t_last;
    int64_t step_start;
    int drawn;           /* a \r line is on screen */
} train_progress;

void train_progress_init(train_progress *p, FILE *out, double interval_s, double now,
                         int64_t step0);
/* Prints when due (a TTY: at most 5 times a second). total_steps <= 0: unknown (no
 * bar, no ETA). Returns 1 when it printed. */
int train_progress_update(train_progress *p, double now, int64_t step, int64_t total_steps,
                          double epoch, double loss, double lr, double images_per_s);
/* Ends the \r line (prints a newline if one is drawn). Call before other console output. */
void train_progress_end(train_progress *p);
/* "1d02h", "3h04m", "5m06s", "7s"; "?" for negative or non-finite. */
void train_format_duration(char *buf, size_t n, double seconds);

/* ---- evaluation ---------------------------------------------------------------------- */

/* probs (B, V): one row per sample; labels (B). Adds to *top1_wrong / *top5_wrong the
 * samples whose label is not the most probable class / not among the 5 most probable
 * (ties broken toward the lower class index, as a stable sort would; a NaN probability
 * for the label counts as wrong). V < 5: top-5 covers all classes. Returns 0, or -1
 * (nothing added) when a label is outside 0..V-1 or B, V < 1. */
int train_topk_errors(const float *probs, const int32_t *labels, int B, int V, int *top1_wrong,
                      int *top5_wrong);

/* ---- JSON values and reading metrics.jsonl back ------------------------------------- */

/* New Jansson values for src/train's writers: a number, or null when it is not finite
 * (JSON has no NaN); a string (NULL: null), with every non-ASCII byte of text that is not
 * valid UTF-8 replaced by '?', so no path or message can make a record unwritable. */
json_t *train_json_real(double v);
json_t *train_json_text(const char *s);

/* One line of metrics.jsonl as a JSON object (json_decref it), or NULL when the line is
 * not a whole JSON object (a torn last line, junk). Integers are read as reals. */
json_t *train_metrics_parse(const char *line);
/* The number under key in rec: 1 and *out, 0 for null (NAN in *out), -1 when absent or
 * not a number. */
int train_metrics_number(const json_t *rec, const char *key, double *out);

#ifdef __cplusplus
}
#endif
#endif
