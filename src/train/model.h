/* model: the whole two-tower net = one or two towers plus the exchange between them.
 * Drives the towers layer by layer and calls comm at the exchange points (conv3's, fc6's,
 * fc7's and fc8's inputs, and the logits). Part of src/train (included by train.h). */
#ifndef TRAIN_MODEL_H
#define TRAIN_MODEL_H

#include "comm/comm.h"
#include "tower/tower.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the towers run. */
typedef struct {
    int cpu;        /* 1: CPU backend (the reference) */
    int ngpus;      /* 1: both towers on gpus[0] (the single-GPU fallback); 2: one each */
    int gpus[2];
} model_placement;

typedef struct {
    tower_plan plan;
    int towers;                 /* plan.cfg.towers */
    tower tw[2];
    comm *comm;
    model_placement place;
    uint64_t seed;              /* init and dropout keys derive from it */
    int64_t step;               /* steps taken (the dropout key of the next step) */
    double last_loss;
    real momentum, weight_decay; /* 0.9, 0.0005 */
} model;

/* Builds the towers on the placement, initialised from seed with the paper's init.
 * Returns 0, or -1 with err (e.g. no CUDA in this build, out of GPU memory). */
int model_init(model *m, const tower_config *cfg, const model_placement *place, uint64_t seed,
               char *err, size_t errlen);
void model_free(model *m);

/* Copies a host batch in: x (B, in_ch, in_size, in_size) float, labels (B). */
void model_set_batch(model *m, const float *x, const int32_t *labels);

/* Forward through every layer and the loss; train selects dropout masks (keyed on
 * seed and m->step) or the evaluation scaling. Returns the mean loss. */
double model_forward(model *m, int train);
/* Backward through every layer (after model_forward with train=1); grads are zeroed
 * first, so they hold exactly this batch's gradient afterwards. */
void model_backward(model *m);
/* SGD with the paper's momentum and weight decay (weights only; see paper_notes.md). */
void model_update(model *m, real lr);
/* zero_grad + forward(train) + backward + update; m->step += 1. Returns the loss. */
double model_train_step(model *m, real lr);

/* Copies the softmax outputs to the host: probs (B, classes), class-major per sample. */
void model_get_probs(const model *m, float *probs);
/* Host copies of a tower's arenas (n_params reals each) for checkpoints and export;
 * which: 0 params, 1 grads, 2 momentum. */
void model_get_tensor(const model *m, int tower_index, int which, real *dst);
void model_set_tensor(model *m, int tower_index, int which, const real *src);

#ifdef __cplusplus
}
#endif
#endif
