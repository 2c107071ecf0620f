/* export: a model's weights as a safetensors file that PyTorch (tools/reference) and
 * other tools can read; the layout is documented in docs/WEIGHTS.md. Also the one place
 * that names and shapes a tower's parameter tensors (train_tower_tensors), which
 * `twotower dump` and the checkpoints use too. Part of src/train. */
#ifndef TRAIN_EXPORT_H
#define TRAIN_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "train/model.h"
#include "train/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* safetensors dtype of `real` in this build: "F32", or "F64" under TOWER_F64. */
#define TRAIN_REAL_DTYPE (sizeof(real) == 8 ? "F64" : "F32")
#define TRAIN_EXPORT_NAME_MAX 64

/* One parameter tensor of a tower as every file of twotower names and shapes it:
 * {prefix}tower{t}.{layer}.weight{suffix}, (out_ch, sources*in_ch, k, k) for conv and
 * (out_ch, sources*in_ch) for fc, and {prefix}tower{t}.{layer}.bias{suffix}, (out_ch);
 * the arena's row-major bytes unchanged (PyTorch's layout). out_ch, sources, in_ch: the
 * plan's tower_layer_shape; fc in_ch is the flattened C*H*W. */
typedef struct {
    char name[TRAIN_EXPORT_NAME_MAX];
    int ndim;                  /* 4: conv weight, 2: fc weight, 1: bias */
    int64_t shape[4];
    size_t off, count;         /* where it lies in the tower's arena, in reals */
} train_tensor;

/* The 2 * n_layers tensors of tower t in layer order (layer names: the net's rows):
 * out[2l] layer l's weight, out[2l+1] its bias. prefix, suffix: "" or e.g. "grad.",
 * ".momentum" (names stay under TRAIN_EXPORT_NAME_MAX). Returns 2 * plan->n_layers. */
int train_tower_tensors(train_tensor *out, const tower_plan *plan, int t, const char *prefix,
                        const char *suffix);

/* Views of one tower's 2 * n_layers tensors in a host copy of its arena (params or
 * grads, n_params reals): out[2l] = {prefix}tower{t}.{layer}.weight, conv weights shaped
 * (out_ch, sources*in_ch, k, k) and fc weights (out_ch, sources*in_ch) (the arena's
 * row-major bytes unchanged), out[2l+1] = {prefix}tower{t}.{layer}.bias (out_ch).
 * names: 2 * n_layers buffers that the views point into; prefix "" or e.g. "grad.".
 * Returns the number of views, 2 * plan->n_layers. */
int train_export_views(st_tensor *out, char (*names)[TRAIN_EXPORT_NAME_MAX],
                       const tower_plan *plan, int tower_index, const real *arena,
                       const char *prefix);

/* Metadata strings that say which net a file holds: net (the preset's name) and its
 * switches as tools/reference reads them (switch.lrn: -1 keep, 0, 1; switch.pool "K:S"
 * or ""; switch.act "", "relu", "tanh"; switch.dropout "" or p). meta: room for
 * TRAIN_EXPORT_NET_META key/value pointers; vals: storage for their values. Returns the
 * number of pointers added. */
#define TRAIN_EXPORT_NET_META 10
int train_export_net_meta(const char **meta, char (*vals)[32], const tower_net *net);

/* Writes the parameters of plan->cfg.towers towers (params[t]: a host arena of
 * plan->n_params reals) to path with metadata format, towers, classes, size, in_ch,
 * width_div, seed, step, net and its switches. Returns 0, or -1 with err. */
int train_export_arenas(const tower_plan *plan, const real *const *params, uint64_t seed,
                        int64_t step, const char *path, char *err, size_t errlen);

/* The same for a model (its parameters via model_get_tensor, m->seed, m->step). */
int train_export_model(const model *m, const char *path, char *err, size_t errlen);

/* The parameters of a checkpoint: ckpt is a .ttc file, a checkpoint folder or a run
 * folder (train_ckpt_resolve); the whole file is validated before anything is written.
 * Returns 0, or -1 with err naming the file. */
int train_export_checkpoint(const char *ckpt, const char *path, char *err, size_t errlen);

/* Whether OUT may be written by an export of ckpt (NULL: a fresh net): base_check_output
 * with ckpt as the input, and as a protected folder the folder ckpt names (a run or
 * checkpoint folder) or, for a checkpoint file, its folder when that is a run's ckpt/.
 * 0, or -1 with err naming OUT. */
int train_export_check_out(const char *ckpt, const char *out, char *err, size_t errlen);
/* The same rule for any command that reads a checkpoint (and data): OUT (named `what` in
 * messages, e.g. "-o") is refused when it is ckpt itself, lies in the folder ckpt names or a
 * run's ckpt/ holding it, or inside the data folder `data` (NULL: none), or is not a regular
 * file. 0, or -1 with err. */
int train_check_out(const char *ckpt, const char *data, const char *out, const char *what,
                    char *err, size_t errlen);

/* `twotower export [CKPT] OUT.safetensors [--net NAME] [switches] [--seed S] [--towers T]
 * [--classes V] [--size S] [--width-div D]`: the checkpoint's weights, or without CKPT the net freshly
 * initialised from the flags. argv[0] is "export". Returns the exit code (0 ok,
 * 1 failed, 2 usage). */
int train_export_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
