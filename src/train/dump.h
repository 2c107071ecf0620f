/* dump: `twotower dump`, one training step's inputs and results (weights, batch,
 * dropout masks, logits, loss, gradients) as safetensors, for tools/reference/compare.py
 * to check against PyTorch. Part of src/train. */
#ifndef TRAIN_DUMP_H
#define TRAIN_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "train/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Builds the batch the dump uses: x (B, in_ch, S, S) uniform in [-127.5, 127.5) (the
 * range of mean-subtracted raw RGB), labels (B) uniform in [0, classes); a pure
 * function of seed. */
void train_dump_batch(float *x, int32_t *labels, const tower_config *cfg, uint64_t seed);

/* Runs model_forward(m, 1) + model_backward(m) on (x, labels) (no update, m->step
 * unchanged) and writes everything compare.py needs to path. 0, or -1 with err. */
int train_dump_model(model *m, const float *x, const int32_t *labels, const char *path,
                     char *err, size_t errlen);

/* The same, then two optimizer updates at learning rate lr (m->optim; lr > 0), the first
 * on the batch's gradients, the second on -0.5 times them; the parameters after them go
 * into the file as update.tower{t}.{layer}.weight/.bias with the optimizer's constants in
 * the metadata (update, update.lr, ...): compare.py checks Adam against torch.optim.Adam
 * with it. m's parameters are left updated (and its gradients scaled); m->step is not. */
int train_dump_model_update(model *m, const float *x, const int32_t *labels, real lr,
                            const char *path, char *err, size_t errlen);

/* `twotower dump --out F.safetensors [--net NAME] [switches] [--batch 2] [--seed S]
 * [--size N] [--towers 2] [--classes N] [--width-div 1] [--cpu | --gpus 0[,1] [--precision P]
 * [--conv gemm|cudnn|auto]]` (the CPU unless --gpus); argv[0] is "dump". Returns the exit
 * code (0 ok, 1 failed, 2 usage). */
int train_dump_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
