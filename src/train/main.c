/* main.c: the twotower command line: train, summary, and the tools' subcommands.
 * Every bad flag or value is reported by name with exit code 2 before any work starts. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"
#include "train/util.h"
#include "data/data.h"
#include "base/base.h"

static void usage(FILE *f)
{
    fprintf(f, "twotower %s: the 2012 two-tower AlexNet (Krizhevsky, Sutskever, Hinton)\n",
            base_version());
    fprintf(f,
        "\n"
        "usage: twotower COMMAND [flags]\n"
        "\n"
        "commands:\n"
        "  train       train the net (see flags below)\n"
        "  summary     per-layer table: shapes, parameters, multiply-adds, memory per tower\n"
        "  prep        SRC OUT: image folder or Fashion-MNIST to 256x256 shards (prep --help)\n"
        "  export      [CKPT] OUT.safetensors: weights for PyTorch (export --help)\n"
        "  dump        one batch's weights, logits and gradients for the PyTorch check\n"
        "  plot        RUN [-o PNG]: loss, error and learning-rate curves of a run\n"
        "  ckpt-check  PATH: validate a checkpoint file\n"
        "  bench       time training steps, per layer (bench --help; tools/bench/bench.py)\n"
        "  help        this text\n"
        "\n"
        "train and summary flags:\n"
        "  --cpu               run on the CPU backend (the reference)\n"
        "  --gpus LIST         0,1: one tower per GPU; 0: both towers on GPU 0\n"
        "  --tf32              GPU GEMMs on TF32 tensor cores (default: plain fp32)\n"
        "  --conv gemm|cudnn   GPU convolutions: im2col + cuBLAS (default) or cuDNN\n"
        "  --data DIR          Fashion-MNIST IDX folder or prep shards\n"
        "                      (default /usr/share/datasets/fashion-mnist)\n"
        "  --towers N          2 (the paper) or 1 (one tower, half the kernels)\n"
        "  --classes N         summary only: classes of fc8 (default 1000)\n"
        "  --batch N           minibatch (default 128)\n"
        "  --size N            input side (default 224)\n"
        "  --width-div N       divide every layer's width by N (tiny nets for tests; 1)\n"
        "  --epochs N          passes (default 90)\n"
        "  --train-limit N     images per epoch (default: all)\n"
        "  --test-limit N      test images evaluated (default: all)\n"
        "  --views N           1: center crop; 10: also the paper's ten views\n"
        "  --lr X              initial learning rate (default 0.01)\n"
        "  --seed N            every random number derives from it (default 1)\n"
        "  --quiet             no progress line\n"
        "  --run DIR           run folder: metrics.jsonl, run.json, ckpt/ (default runs/run-DATE)\n"
        "  --resume PATH       continue from a checkpoint file, checkpoint folder or run folder\n"
        "  --ckpt-every N      steps between checkpoints (default: end of run and signals only)\n"
        "  --keep K            checkpoints kept (default 3)\n"
        "  --eval-every N      steps between evaluations (default: every epoch)\n"
        "  --log-every N       steps between metrics lines (default 10)\n"
        "  --patience P        evaluations without improvement before lr /= 10 (default 5)\n"
        "  --max-drops N       learning-rate drops before the last plateau ends the run (3)\n"
        "  --min-delta X       smallest drop in validation error that counts (default 0.001)\n");
}

/* The flags of train and summary that take a value, with the TRAIN_GIVEN_* bit of those
 * a checkpoint fixes (train_options.given). */
static const struct {
    const char *flag;
    unsigned given;
} value_flags[] = {
    {"--gpus", 0},
    {"--conv", 0},
    {"--data", 0},
    {"--towers", TRAIN_GIVEN_TOWERS},
    {"--classes", 0},
    {"--batch", TRAIN_GIVEN_BATCH},
    {"--size", TRAIN_GIVEN_SIZE},
    {"--width-div", TRAIN_GIVEN_WIDTH_DIV},
    {"--epochs", 0},
    {"--views", 0},
    {"--train-limit", TRAIN_GIVEN_TRAIN_LIMIT},
    {"--test-limit", 0},
    {"--seed", TRAIN_GIVEN_SEED},
    {"--lr", TRAIN_GIVEN_LR},
    {"--run", 0},
    {"--resume", 0},
    {"--ckpt-every", 0},
    {"--keep", 0},
    {"--eval-every", TRAIN_GIVEN_EVAL_EVERY},
    {"--log-every", 0},
    {"--patience", TRAIN_GIVEN_PATIENCE},
    {"--max-drops", TRAIN_GIVEN_MAX_DROPS},
    {"--min-delta", TRAIN_GIVEN_MIN_DELTA},
};

/* Index of flag a in value_flags, or -1. */
static int value_flag(const char *a)
{
    for (size_t k = 0; k < sizeof value_flags / sizeof value_flags[0]; k++)
        if (!strcmp(a, value_flags[k].flag)) return (int)k;
    return -1;
}

/* Parses the flags shared by train and summary into o (and classes for summary).
 * 0: go on; 1: --help was printed; -1: a bad flag (message printed). */
static int parse_flags(int argc, char **argv, train_options *o, int *classes)
{
    int summary = classes != NULL;
    const char *gpus = NULL;
    int cpu = 0, tf32 = 0;
    const char *conv = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        int rc = 0, takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1; /* not an error: the caller exits 0 */
        }
        if (!strcmp(a, "--cpu")) cpu = 1, takes = 0;
        else if (!strcmp(a, "--tf32")) tf32 = 1, takes = 0;
        else if (!strcmp(a, "--quiet")) o->quiet = 1, takes = 0;
        else if (!v && value_flag(a) < 0) {
            fprintf(stderr, "twotower: unknown flag '%s' for '%s' (see twotower help)\n", a,
                    argv[1]);
            return -1;
        } else if (!v) {
            fprintf(stderr, "twotower: %s needs a value\n", a);
            return -1;
        } else if (!strcmp(a, "--gpus")) gpus = v;
        else if (!strcmp(a, "--conv")) conv = v;
        else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--towers")) rc = train_arg_int(argv[1], a, v, 1, 2, &o->towers);
        else if (!strcmp(a, "--classes")) rc = train_arg_int(argv[1], a, v, 2, 1 << 20, classes);
        else if (!strcmp(a, "--batch")) rc = train_arg_int(argv[1], a, v, 1, 4096, &o->batch);
        else if (!strcmp(a, "--size")) rc = train_arg_int(argv[1], a, v, 16, 1024, &o->size);
        else if (!strcmp(a, "--width-div")) rc = train_arg_int(argv[1], a, v, 1, 64, &o->width_div);
        else if (!strcmp(a, "--epochs")) rc = train_arg_int(argv[1], a, v, 1, 100000, &o->epochs);
        else if (!strcmp(a, "--views")) {
            rc = train_arg_int(argv[1], a, v, 1, 10, &o->eval_views);
            if (!rc && o->eval_views != 1 && o->eval_views != 10) {
                fprintf(stderr, "twotower: --views is 1 or 10, not %s\n", v);
                rc = -1;
            }
        } else if (!strcmp(a, "--train-limit")) {
            rc = train_arg_i64(argv[1], a, v, 1, INT64_MAX / 2, &n);
            o->train_limit = n;
        } else if (!strcmp(a, "--test-limit")) {
            rc = train_arg_i64(argv[1], a, v, 1, INT64_MAX / 2, &n);
            o->test_limit = n;
        } else if (!strcmp(a, "--seed")) {
            rc = train_arg_i64(argv[1], a, v, 0, INT64_MAX, &n);
            o->seed = (uint64_t)n;
        } else if (!strcmp(a, "--lr")) rc = train_arg_f64(argv[1], a, v, 1e-12, 10, &o->lr);
        else if (!strcmp(a, "--run")) o->run_dir = v;
        else if (!strcmp(a, "--resume")) o->resume = v;
        else if (!strcmp(a, "--ckpt-every")) rc = train_arg_i64(argv[1], a, v, 0, INT64_MAX / 2, &o->ckpt_every);
        else if (!strcmp(a, "--keep")) rc = train_arg_int(argv[1], a, v, 1, 1000000, &o->keep);
        else if (!strcmp(a, "--eval-every")) rc = train_arg_i64(argv[1], a, v, 0, INT64_MAX / 2, &o->eval_every);
        else if (!strcmp(a, "--log-every")) rc = train_arg_i64(argv[1], a, v, 1, INT64_MAX / 2, &o->log_every);
        else if (!strcmp(a, "--patience")) rc = train_arg_int(argv[1], a, v, 1, 1000000, &o->patience);
        else if (!strcmp(a, "--max-drops")) rc = train_arg_int(argv[1], a, v, 0, 100, &o->max_drops);
        else if (!strcmp(a, "--min-delta")) rc = train_arg_f64(argv[1], a, v, 0, 1, &o->min_delta);
        else {
            fprintf(stderr, "twotower: unknown flag '%s' for '%s' (see twotower help)\n", a,
                    argv[1]);
            return -1;
        }
        if (rc) return -1;
        int k = value_flag(a);
        if (takes && k >= 0) o->given |= value_flags[k].given;
        i += takes;
    }
    char err[512] = "";
    if (summary) return 0; /* summary needs no device */
    if (o->train_limit > 0 && o->train_limit < o->batch) {
        fprintf(stderr, "twotower: --train-limit %lld is less than one batch (--batch %d): an "
                        "epoch would hold no step\n", (long long)o->train_limit, o->batch);
        return -1;
    }
    if (train_parse_placement(gpus, cpu, &o->place, err, sizeof err) ||
        train_placement_set_gpu_options(&o->place, tf32, conv, err, sizeof err)) {
        fprintf(stderr, "twotower: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("twotower %s\n", base_version());
        return 0;
    }
    train_options o;
    train_options_default(&o);
    /* the tools' subcommands parse their own flags (argv[0] is the subcommand) */
    if (!strcmp(cmd, "prep")) return data_prep_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "export")) return train_export_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "dump")) return train_dump_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return train_plot_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "ckpt-check")) return train_ckpt_check_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return train_bench_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) {
        o.argc = argc;
        o.argv = argv;
        int rc = parse_flags(argc, argv, &o, NULL);
        if (rc) return rc > 0 ? 0 : 2;
        return train_run(&o);
    }
    if (!strcmp(cmd, "summary")) {
        int classes = 1000;
        o.place.cpu = 1;
        for (int i = 2; i < argc; i++) /* summary needs no device: ignore placement flags */
            if (!strcmp(argv[i], "--gpus") || !strcmp(argv[i], "--cpu")) {
                fprintf(stderr, "twotower: summary takes no --gpus/--cpu\n");
                return 2;
            }
        int rc = parse_flags(argc, argv, &o, &classes);
        if (rc) return rc > 0 ? 0 : 2;
        tower_config cfg = {o.towers, classes, o.batch, o.size, 3, o.width_div};
        tower_plan plan;
        char err[256];
        if (tower_plan_make(&plan, &cfg, err, sizeof err)) {
            fprintf(stderr, "twotower: %s\n", err);
            return 2;
        }
        train_summary_print(stdout, &plan);
        return 0;
    }
    fprintf(stderr, "twotower: unknown command '%s' (see twotower help)\n", cmd);
    return 2;
}
