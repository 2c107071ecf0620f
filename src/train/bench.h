/* bench: `twotower bench`, the training-step benchmark (issue 6). Builds the model on a
 * placement, makes a few uint8 batches once from a seed, and times full training steps
 * (data in, forward, backward, SGD): images/s, per-layer times, memory. Part of src/train;
 * tools/bench/bench.py runs it beside PyTorch. */
#ifndef TRAIN_BENCH_H
#define TRAIN_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "train/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FLOPs of one training step per image: 3 x (2 x the forward multiply-adds of every
 * tower), the usual forward + two backward GEMMs count. 4.35e9 for the paper's net. */
double train_bench_train_flops(const tower_plan *plan);

/* Timed regions of a profiled step, per tower: the model's (model.h: MODEL_REGION_*),
 * plus the batch in. The exchange regions are timed on tower 0 only (an exchange
 * involves both towers at once). */
enum {
    TRAIN_BENCH_DATA = 0,                       /* the batch in (upload + augmentation) */
    TRAIN_BENCH_ZERO = MODEL_REGION_ZERO,       /* zeroing the gradients */
    TRAIN_BENCH_LOSS_FWD = MODEL_REGION_LOSS_FWD,
    TRAIN_BENCH_LOSS_BWD = MODEL_REGION_LOSS_BWD,
    TRAIN_BENCH_SGD = MODEL_REGION_UPDATE,      /* the optimizer step (SGD or Adam) */
    TRAIN_BENCH_XCHG_LOGITS = MODEL_REGION_XCHG_LOGITS,
    TRAIN_BENCH_FWD = MODEL_REGION_FWD,         /* + layer */
    TRAIN_BENCH_BWD = MODEL_REGION_BWD,         /* + layer */
    TRAIN_BENCH_XCHG_FWD = MODEL_REGION_XCHG_FWD, /* + layer */
    TRAIN_BENCH_XCHG_BWD = MODEL_REGION_XCHG_BWD, /* + layer */
    TRAIN_BENCH_REGIONS = MODEL_REGIONS
};

/* Per-region times of profiled steps: wall clock around each call on the CPU, CUDA events
 * on each tower's stream on GPUs. */
typedef struct {
    double ms[2][TRAIN_BENCH_REGIONS]; /* [tower][region], summed over the profiled steps */
    double step_ms;                    /* wall clock of the profiled steps (from the first
                                          region begun, the data, to the towers' end), summed */
    int steps;                         /* profiled steps so far */
    /* private */
    double start[2][TRAIN_BENCH_REGIONS];
    unsigned char used[2][TRAIN_BENCH_REGIONS];
    double step_start;                 /* < 0: no region begun since the last step */
    int towers;
    void *gpu; /* CUDA events when the towers are on GPUs */
} train_bench_prof;

/* Ready to time steps of m (keeps m's streams; m must outlive p). 0, or -1 with err
 * (the CUDA events could not be made). */
int train_bench_prof_init(train_bench_prof *p, model *m, char *err, size_t errlen);
void train_bench_prof_free(train_bench_prof *p);
/* Starts / ends region r of tower t: a wall-clock reading on the CPU, an event enqueued on
 * the tower's stream on a GPU. The first begin after a collected step starts step_ms. */
void train_bench_prof_begin(train_bench_prof *p, int t, int r);
void train_bench_prof_end(train_bench_prof *p, int t, int r);

/* One training step: model_train_step itself with p's timers as the model's hooks
 * (every layer, exchange, loss and update timed); then waits for the towers and adds the
 * step's times to p. Regions begun and ended since the last step (the data) are
 * collected with it. Returns 0 with the loss in *loss, or -1 with err when the step failed
 * (m->failed: an exchange or a tower's worker). */
int train_bench_prof_step(train_bench_prof *p, model *m, real lr, double *loss, char *err,
                          size_t errlen);

/* `twotower bench [--cpu | --gpus LIST] [--batch 128] [--size 224] [--warmup N]
 * [--steps N] [--profile-steps N] [--batches N] [--json FILE] [--towers 2]
 * [--classes 1000] [--width-div N] [--seed N] [--lr X]`; argv[0] is "bench".
 * Returns the exit code: 0 ok, 1 the run failed (or its loss was not finite), 2 usage. */
int train_bench_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
