/* checkpoint: crash-safe save and all-or-nothing load of a training run's whole state
 * (parameters, momentum, step, data cursor, schedule, counters) in twotower's own format,
 * plus the `twotower ckpt-check PATH` subcommand.
 *
 * How the trainer calls it:
 *
 *   train_ckpt_meta meta = {0};         // fill from the trainer's state (see fields)
 *   meta.cfg = m->plan.cfg; meta.seed = seed; meta.step = step; meta.epoch = epoch;
 *   meta.cursor = ...; meta.sched = sched; meta.nonfinite = nf; meta.stats = stats;
 *   meta.interval = the logging accumulators;
 *   meta.train_limit, meta.eval_every = the run's --train-limit and --eval-every;
 *   train_ckpt_save(ckpt_dir, &meta, m, keep_last, err, sizeof err)   // every N steps,
 *                                                  // at the end, and on SIGINT/SIGTERM
 *   On --resume ARG (a file, a checkpoint folder, or a run folder):
 *   char path[4096];
 *   if (train_ckpt_resolve(ARG, path, sizeof path, err, sizeof err) != 0) -> print err, exit 1
 *       (when the newest checkpoint is bad, err says so and names the previous good one)
 *   model_init(m, &cfg, ...);      // the config may come from train_ckpt_load(path, &meta,
 *                                  // NULL, ...) first, which validates without a model
 *   train_ckpt_load(path, &meta, m, err, sizeof err) -> params, momentum, m->seed, m->step
 *   then restore step, epoch, cursor, sched, nonfinite, stats, interval, train_limit
 *   and eval_every from meta.
 *
 * The RNG state: every random number in twotower (init, dropout, crops, flips, PCA
 * lighting, shuffling) is counter-based, a pure function of (seed, step, cursor), so
 * seed + step + cursor stored here ARE the complete RNG state; there is no generator
 * state to save.
 *
 * File format (all integers little-endian; version 2, or 3 for the other nets):
 *   header (28 bytes): magic "TTCKPT\r\n" (8) | u32 version | u32 n_records (1..256) |
 *                      u64 file_bytes (the whole file) | u32 crc32 of the 24 bytes before
 *   n_records records, each:
 *     u32 name_len (1..63) | name | u32 dtype (1 f32, 2 f64, 3 i64) | u32 ndim (0..4) |
 *     i64 shape[ndim] | u64 nbytes | u32 crc32 of the data | u32 crc32 of this record's
 *     bytes from name_len to the data crc | data (nbytes)
 *   Records (all required, each once, any order; the writer puts them in this order):
 *     config i64[6] towers classes batch in_size in_ch width_div
 *     run    i64[6] seed(bits) step epoch model.seed(bits) model.step n_params
 *     cursor i64[3] seed(bits) epoch pos
 *     schedule f64[4] lr0 min_delta lr best
 *     schedule.i i64[7] patience max_drops best_eval evals drops bad stopped
 *     nonfinite i64[3] limit run skipped
 *     stats  f64[8] (train_ckpt_stats in order)
 *     interval f64[5] (train_ckpt_interval in order)
 *     data   i64[2] train_limit eval_every
 *     version 3 only (any net but the default of its tower count, `alexnet2012` or `half`
 *     with the paper's SGD, which keep writing version 2 byte for byte):
 *     net    i64[8] preset id (TOWER_NET_*) and its switches lrn pool_k pool_s act optim init,
 *            then the optimizer updates done (Adam's bias correction)
 *     net.f  f64[6] switches dropout momentum weight_decay beta1 beta2 eps (the net is
 *            rebuilt as tower_net_preset_id + tower_net_apply: the presets' rows are part
 *            of this format)
 *     aug    f64[1] the PCA lighting's std (--pca-std; 0.1 when the run left it; a run that
 *            sets it writes version 3 whatever its net)
 *     aug.i  i64[2] mirror: 1 random mirrors (the paper), 0 none (--mirror; likewise);
 *            downsample: crops of downsample*in_size pixels averaged in blocks to the
 *            input (--downsample; > 1 writes version 3)
 *     then for each tower T < towers, each layer L of the net (conv1 .. fc8),
 *     f32 (f64 in a TOWER_F64 build), every tower's parameters first, then its momentum:
 *       towerT.L.weight  [out_ch, sources*in_ch, k, k] (conv) or [out_ch, sources*in_ch] (fc)
 *       towerT.L.bias    [out_ch]
 *       towerT.L.weight.momentum, towerT.L.bias.momentum: the same shapes
 *       (Adam, version 3: then towerT.L.weight.moment2, towerT.L.bias.moment2, the same)
 *     (out_ch, sources, in_ch: tower_layer_shape of the stored config's tower_plan; k:
 *     the layer's kernel; fc in_ch is the flattened C*H*W.) 2 towers: 9 + 64 records.
 *   The small records are one table in checkpoint.c (FIELDS: a row per field, its record,
 *   type, offset in train_ckpt_meta and accepted range), which both the writer and the
 *   reader walk; the tensors are named and shaped by export's train_tower_tensors, as in
 *   an exported file. Adding a field is one row there (and a new version).
 *   Each tensor must have exactly the shape the stored config gives. Version 1 (one
 *   towerT.params and one towerT.momentum record per tower, no data record) is refused.
 */
#ifndef TRAIN_CHECKPOINT_H
#define TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "train/model.h"
#include "train/schedule.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TRAIN_CKPT_VERSION 3 /* written for nets other than the two defaults; 2 still read */
#define TRAIN_CKPT_SUBDIR "ckpt"   /* a run folder's checkpoint folder: RUN/ckpt */
#define TRAIN_CKPT_DEFAULT_KEEP 3

/* The data loader's position: which permutation (seed, epoch) and how far into it. */
typedef struct {
    uint64_t seed;
    int64_t epoch;
    int64_t pos;   /* samples of this epoch already handed out */
} train_cursor;

/* Bookkeeping that survives a resume (metrics and the progress line use it). */
typedef struct {
    double best_top1;      /* best validation top-1 error (center crop) so far; 1 before any */
    double best_top5;      /* top-5 error at that evaluation */
    double best_step;      /* step of that evaluation; -1 before any */
    double images_seen;    /* training images consumed, skipped steps included */
    double train_seconds;  /* wall time spent training before this checkpoint */
    double last_loss;      /* loss of the last step before the checkpoint */
    double last_top1;      /* last validation top-1 error; 1 before any */
    double last_top5;
} train_ckpt_stats;

/* The logging interval in progress, so that a metrics line logged after a resume
 * averages the same steps as it would have without the interruption. (Kept out of
 * train_ckpt_stats so code that fills stats positionally keeps compiling.) */
typedef struct {
    double loss_ema;     /* smoothed loss of the progress line */
    double loss_sum;     /* sum of the step losses since the last metrics line */
    double steps;        /* steps since the last metrics line */
    double top1_wrong;   /* training samples top-1 wrong since the last line */
    double images;       /* training images since the last line */
} train_ckpt_interval;

typedef struct {
    tower_config cfg;
    uint64_t seed;              /* the run's seed */
    int64_t step;               /* optimizer steps done (the next step has this index) */
    int64_t epoch;              /* the current epoch (0-based) */
    uint64_t model_seed;        /* m->seed and m->step (filled by save, restored by load) */
    int64_t model_step;
    int64_t model_updates;      /* m->updates (Adam's bias correction; version 2 files: the
                                   step) */
    size_t n_params;            /* per tower (filled by save and load) */
    train_cursor cursor;
    train_sched sched;
    train_nonfinite nonfinite;
    train_ckpt_stats stats;
    train_ckpt_interval interval;
    int64_t train_limit;        /* --train-limit of the run (0: the whole set): it sets the
                                   epoch length, hence the data cursor and the schedule */
    int64_t eval_every;         /* --eval-every of the run (0: every epoch): it sets when the
                                   schedule decides */
    int pca_set;                /* 1: the run set the PCA lighting's std (--pca-std) */
    double pca_std;             /* that std (pca_set): the data stream depends on it, so a
                                   resume takes it from here; stored in version 3 files */
    int mirror_set;             /* 1: the run set --mirror */
    int mirror;                 /* 1: random mirrors, 0: none (mirror_set; version 3) */
    int downsample;             /* --downsample F (1: none; > 1 writes version 3) */
} train_ckpt_meta;

/* Writes DIR/ckpt-STEP.ttc (STEP = meta->step, 8 digits or more) from the model's params
 * and momentum (model_get_tensor), crash-safe through base_out (DIR/ckpt-STEP.ttc.tmp,
 * fsync, rename, fsync of DIR). A state the reader would refuse (a field out of range,
 * an inconsistent schedule) is refused first. DIR is created when missing. Then removes all but the newest keep_last
 * checkpoints (keep_last <= 0 keeps all) and any leftover .tmp. meta->model_seed,
 * model_step and n_params are taken from m. Returns 0, or -1 with err. On failure the
 * previous checkpoints are untouched. */
int train_ckpt_save(const char *dir, const train_ckpt_meta *meta, const model *m, int keep_last,
                    char *err, size_t errlen);

/* The fault-injection hook of tools/kill_test.sh: TWOTOWER_DEBUG_CKPT_PAUSE_MS=N makes every
 * checkpoint write stop for N ms (0..60000) halfway through its records, with the first half
 * flushed to its ckpt-*.ttc.tmp, so a kill -9 sent once that .tmp exists lands inside a write
 * on any machine. Returns N (0 when unset or empty), or -1 with err naming the variable when
 * it is not an integer in range; the trainer checks it before it starts, each write reads it
 * again. */
int train_ckpt_debug_pause_ms(char *err, size_t errlen);

/* Same from host buffers: params[t], momentum[t] hold n_params reals for t < cfg.towers.
 * (train_ckpt_save is this plus model_get_tensor; tests use it directly.) */
int train_ckpt_save_buffers(const char *dir, const train_ckpt_meta *meta, size_t n_params,
                            const real *const *params, const real *const *momentum,
                            int keep_last, char *err, size_t errlen);
/* The same with Adam's second moments (moment2[t]; NULL for an SGD net). */
int train_ckpt_save_buffers3(const char *dir, const train_ckpt_meta *meta, size_t n_params,
                             const real *const *params, const real *const *momentum,
                             const real *const *moment2, int keep_last, char *err,
                             size_t errlen);

/* Reads and validates the WHOLE file (header, every record's bounds, names, shapes
 * against the stored config, checksums, state ranges) into temporary buffers; only when
 * all of it is good does it fill meta and, when m is not NULL, the model: params,
 * momentum, m->seed, m->step. m's config must equal the file's (else refused, naming the
 * config field). Never loads in part. Returns 0, or -1 with err naming the file and the
 * field. m = NULL only validates and fills meta (ckpt-check, reading the config). */
int train_ckpt_load(const char *path, train_ckpt_meta *meta, model *m, char *err, size_t errlen);

/* Same into caller buffers: when params/momentum are not NULL, params[t] and momentum[t]
 * (t < towers) receive n_params reals each; expect_cfg (or NULL) must match. */
int train_ckpt_load_buffers(const char *path, train_ckpt_meta *meta,
                            const tower_config *expect_cfg, size_t expect_n_params,
                            real *const *params, real *const *momentum, char *err,
                            size_t errlen);
/* The same with Adam's second moments into moment2[t] (when not NULL and the net is an
 * Adam one). */
int train_ckpt_load_buffers3(const char *path, train_ckpt_meta *meta,
                             const tower_config *expect_cfg, size_t expect_n_params,
                             real *const *params, real *const *momentum,
                             real *const *moment2, char *err, size_t errlen);

/* The checkpoints of DIR (ckpt-*.ttc; .tmp files are ignored), newest step first, each
 * validated with train_ckpt_load(..., NULL) until a good one is found. path always gets
 * the newest file. Returns
 *    0: the newest is good (prev = "").
 *    1: the newest is bad: prev = the newest good older one; err = "newest checkpoint X
 *       is bad (reason); previous good one: Y (use --resume Y)".
 *   -1: no checkpoint, or none good (err says which and why).
 * Validating reads each file whole (CRC of every byte). */
int train_ckpt_latest(const char *dir, char *path, size_t pathlen, char *prev, size_t prevlen,
                      char *err, size_t errlen);

/* --resume ARG: ARG is a checkpoint file, a checkpoint folder, or a run folder (its
 * ckpt/ subfolder is used). The newest checkpoint must be good: if it is bad, returns -1
 * with train_ckpt_latest's message offering the previous one by name. 0 and the file in
 * path otherwise. */
int train_ckpt_resolve(const char *arg, char *path, size_t pathlen, char *err, size_t errlen);

/* The parameters of the checkpoint ARG names (a .ttc file, a checkpoint folder or a run
 * folder: train_ckpt_resolve), the whole file validated first: file gets the file's path,
 * meta its state, plan the plan of its config, params[t] (t < towers) a malloc'd host arena
 * of plan->n_params reals each (the caller frees both; params[1] NULL for one tower).
 * 0, or -1 with err naming the file (nothing allocated). */
int train_ckpt_read_params(const char *arg, char *file, size_t filelen, train_ckpt_meta *meta,
                           tower_plan *plan, real *params[2], char *err, size_t errlen);

/* A model on `place` with the parameters of the checkpoint ARG names (as above) and its
 * net and sizes, at batch `batch` (0: the checkpoint's): for evaluation only (no momentum).
 * 0, or -1 with err (nothing to free). */
int train_ckpt_open_model(const char *arg, int batch, const model_placement *place, model *m,
                          train_ckpt_meta *meta, char *file, size_t filelen, char *err,
                          size_t errlen);

/* `twotower ckpt-check PATH...`: validates each file (or the newest in each folder),
 * prints its step, epoch, config and tensors. Exit status 0 when all are good, 1 if any
 * is bad, 2 on usage errors. argv[0] is "ckpt-check". */
int train_ckpt_check_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
