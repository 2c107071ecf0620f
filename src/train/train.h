/* train: the trainer of twotower. Public header of src/train: the model driver, the
 * training run (data, SGD schedule, evaluation, checkpoints), and the CLI pieces. */
#ifndef TRAIN_H
#define TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "data/data.h"
#include "train/model.h"
#include "train/bench.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/dump.h"
#include "train/figures.h"
#include "train/export.h"
#include "train/metrics.h"
#include "train/nets.h"
#include "train/plot.h"
#include "train/runfolder.h"
#include "train/schedule.h"
#include "train/signals.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The per-layer table of `twotower summary`. */
void train_summary_print(FILE *f, const tower_plan *p);

/* --data's default: Debian's dataset-fashion-mnist package. */
#define TRAIN_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

/* Everything `twotower train` takes (defaults: train_options_default). */
typedef struct {
    const char *data;        /* Fashion-MNIST IDX folder, or shards made by `prep` */
    model_placement place;
    const char *net;         /* --net NAME (twotower nets); NULL: by towers */
    double pca_std;          /* --pca-std: the PCA lighting alphas' std (section 4.1's 0.1;
                                0: no lighting); < 0: the data's default */
    int mirror;              /* --mirror on|off: 1 random mirrors (the paper), 0 none; < 0:
                                the default (on) */
    int downsample;          /* --downsample F: the data path's crops are F*size pixels,
                                each FxF block averaged into one input pixel (1: none) */
    tower_net_switches switches; /* --lrn, --pool, --act, --dropout, --optim, ... on top of
                                    the net (TOWER_SWITCHES_KEEP: none) */
    int towers;              /* 2 (the paper) or 1 (= --net half) */
    int batch;               /* 128 (the net's default when not given) */
    int size;                /* input side, 224 */
    int width_div;           /* 1: the paper's widths; >1 divides them (tiny nets for tests) */
    int epochs;              /* 0: the net's (90 for the paper's; a resumed run's net's) */
    int64_t train_limit;     /* images per epoch (0: the whole training set) */
    int64_t test_limit;      /* images evaluated (0: all) */
    int eval_views;          /* 1: center crop; 10: also the paper's ten views */
    double lr;               /* 0.01 */
    uint64_t seed;
    int quiet;               /* no progress line */
    /* long runs (issue 5) */
    const char *run_dir;     /* metrics.jsonl, run.json, ckpt/ (default runs/run-DATE) */
    const char *resume;      /* checkpoint file, checkpoint folder or run folder */
    int64_t ckpt_every;      /* steps between checkpoints (0: only at the end and on signals) */
    int keep;                /* checkpoints kept (3) */
    int64_t eval_every;      /* steps between evaluations (0: every epoch) */
    int64_t log_every;       /* steps between metrics lines (10) */
    int patience;            /* evaluations without improvement before lr /= 10 */
    int max_drops;           /* 3: the plateau after the third drop ends the run */
    double min_delta;        /* an improvement is error < best - min_delta */
    int nonfinite_limit;     /* non-finite steps in a row that stop the run (5) */
    unsigned given;          /* TRAIN_GIVEN_* of the flags the command line set: with
                                --resume, such a flag must agree with the checkpoint (the
                                run is refused otherwise); the rest come from it */
    int argc;                /* the command line, for run.json */
    char **argv;
} train_options;

/* train_options.given: the settings a checkpoint fixes, by flag. */
enum {
    TRAIN_GIVEN_TOWERS = 1u << 0,
    TRAIN_GIVEN_BATCH = 1u << 1,
    TRAIN_GIVEN_SIZE = 1u << 2,
    TRAIN_GIVEN_WIDTH_DIV = 1u << 3,
    TRAIN_GIVEN_SEED = 1u << 4,
    TRAIN_GIVEN_LR = 1u << 5,
    TRAIN_GIVEN_PATIENCE = 1u << 6,
    TRAIN_GIVEN_MAX_DROPS = 1u << 7,
    TRAIN_GIVEN_MIN_DELTA = 1u << 8,
    TRAIN_GIVEN_TRAIN_LIMIT = 1u << 9,
    TRAIN_GIVEN_EVAL_EVERY = 1u << 10,
    TRAIN_GIVEN_NET = 1u << 11,
    TRAIN_GIVEN_PCA_STD = 1u << 12,
    TRAIN_GIVEN_MIRROR = 1u << 13,
    TRAIN_GIVEN_DOWNSAMPLE = 1u << 14,
};

void train_options_default(train_options *o);

/* The net's input from the data path's RGB batch x (B, 3, S, S) (already averaged F x F
 * by the data path when --downsample F > 1: data_augment_reduce_cpu): a net with one input
 * channel (in_ch 1: fmnist) gets the mean of the three channels, which for gray images
 * (Fashion-MNIST's) is the image itself. Returns x itself when in_ch = 3, else scratch
 * ((B, S, S) floats), which it fills. */
const float *train_input_gray(const float *x, int B, int S, int in_ch, float *scratch);

/* --data DIR as train opens it: a folder with train-images-idx3-ubyte.gz is Fashion-MNIST
 * (train 1: its training set, 0: t10k, the test set), any other folder shards of `twotower
 * prep` (train 1: "train", 0: "val"). NULL with err naming --data and the folder. */
data_source *train_open_split(const char *dir, int train, char *err, size_t errlen);

/* The evaluation's batches, the path the trainer's validation takes: images
 * [start, start + k) of a source in one view (DATA_VIEW_CENTER: the center crop) of
 * F*S pixels (F = --downsample, S the net's input), mean subtracted, no lighting, put into
 * the model's input (GPU towers with F = 1: uint8 crops, mean subtracted on the device;
 * otherwise float batches, averaged F x F as they are made, then train_input_gray). A batch of k < B images is padded
 * with copies of its first. Buffers are made once, by init, for the model's batch. */
typedef struct {
    int gpu;                 /* 1: the uint8 device path */
    int downsample;          /* F */
    float *x;                /* (B, 3, S, S) float batch (float path), F x F averaged */
    float *scratch;          /* (B, S, S) the one-channel net's gray batch */
    uint8_t *crops;          /* (B, S, S, 3) GPU path */
    data_aug_params *params; /* (B) GPU path */
    int32_t *labels;         /* (B) the images' labels as the data has them */
    int32_t *model_labels;   /* (B) what the model's loss gets: a label outside the net's
                                classes (another dataset's) as 0 */
} train_eval_batches;

int train_eval_batches_init(train_eval_batches *e, const model *m, int F, char *err,
                            size_t errlen);
void train_eval_batches_free(train_eval_batches *e);
/* Loads the batch into m (then model_forward(m, 0)). 0, or -1 with err (a bad range, an
 * unreadable image, a CUDA failure). */
int train_eval_batches_load(train_eval_batches *e, model *m, data_source *src, int64_t start,
                            int k, int view, char *err, size_t errlen);
/* Runs training as the options say; returns a process exit code (0 ok, 1 run failed,
 * 2 bad arguments or data). */
int train_run(const train_options *o);

#ifdef __cplusplus
}
#endif
#endif
