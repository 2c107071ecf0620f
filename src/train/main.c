/* main.c: the twotower command line: the command list, train's and summary's flag tables,
 * and the dispatch to each subcommand (each parses its argv with base_flags_cli). Every
 * bad flag or value is reported by name with exit code 2 before any work starts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "data/data.h"
#include "train/train.h"
#include "tower/tower.h"

/* ---- train and summary --------------------------------------------------------------- */

/* The net's shape, shared by train and summary (offsets in train_options). */
static const base_flag net_flags[] = {
    {BASE_FLAG_INT("towers", train_options, towers, 1, 2, "N",
                   "2 (the paper), or 1: one tower, half the kernels (--net half)"),
     .given = TRAIN_GIVEN_TOWERS, .deflt = "the net's"},
    {BASE_FLAG_INT("batch", train_options, batch, 1, 4096, "N", "minibatch"),
     .given = TRAIN_GIVEN_BATCH, .deflt = "the net's, 128"},
    {BASE_FLAG_INT("size", train_options, size, 16, 1024, "N", "input side"),
     .given = TRAIN_GIVEN_SIZE, .deflt = "the net's, 224"},
    {BASE_FLAG_INT("width-div", train_options, width_div, 1, 64, "N",
                   "divide every layer's width by N: tiny nets for tests"),
     .given = TRAIN_GIVEN_WIDTH_DIV},
    {0}};

/* What train's table writes: the trainer's options and the placement flags, which
 * become o.place once parsed. */
typedef struct {
    train_options o;
    train_placement_args place;
    train_net_args net;  /* --net and its switches, which become o.net and o.switches */
} train_cli;

static void train_cli_defaults(void *p)
{
    train_cli *c = p;
    memset(c, 0, sizeof *c);
    train_options_default(&c->o);
    train_net_args_default(&c->net);
}

/* --net NAME and the switches into the options, the net's training defaults (its
 * source's batch, lr, input side) for the flags not given; its epochs come in the trainer,
 * where a resumed run knows its net. 0, or -1 with err. */
static int take_net(train_options *o, const train_net_args *a, unsigned given, char *err,
                    size_t errlen)
{
    o->net = a->net;
    if (given & TRAIN_NETS_GIVEN_NET) o->given |= TRAIN_GIVEN_NET;
    if (train_net_args_switches(a, &o->switches, err, errlen)) return -1;
    if (!o->net) return 0;
    const tower_net *net = tower_net_preset(o->net);
    if (!net) {
        base_errf(err, errlen, "--net %s: no such net (the nets: %s; see twotower nets)",
                  o->net, tower_net_names());
        return -1;
    }
    if (!(given & TRAIN_GIVEN_BATCH)) o->batch = net->batch;
    if (!(given & TRAIN_GIVEN_LR)) o->lr = net->lr;
    if (!(given & TRAIN_GIVEN_SIZE)) o->size = net->in_size;
    return 0;
}

/* The flags whose .given bit is set are the ones a checkpoint fixes: with --resume, a
 * value that differs from the checkpoint's is refused (trainer.c names the flag). */
static const base_flag train_flags[] = {
    {BASE_FLAG_GROUP(train_placement_flags, train_cli, place)},
    {BASE_FLAG_STR("data", train_cli, o.data, "DIR", "Fashion-MNIST IDX folder or prep shards")},
    {BASE_FLAG_GROUP(train_net_flags, train_cli, net)},
    {BASE_FLAG_GROUP(net_flags, train_cli, o)},
    {BASE_FLAG_INT("epochs", train_cli, o.epochs, 1, 100000, "N", "passes"),
     .deflt = "the net's, 90; on --resume the checkpoint net's"},
    {BASE_FLAG_I64("train-limit", train_cli, o.train_limit, 1, INT64_MAX / 2, "N",
                   "images per epoch"),
     .given = TRAIN_GIVEN_TRAIN_LIMIT, .deflt = "all"},
    {BASE_FLAG_I64("test-limit", train_cli, o.test_limit, 1, INT64_MAX / 2, "N",
                   "test images evaluated"),
     .deflt = "all"},
    {BASE_FLAG_CHOICE("views", train_cli, o.eval_views, "1|10",
                      "1: center crop; 10: also the paper's ten views"),
     .values = (const int[]){1, 10}},
    {BASE_FLAG_F64("lr", train_cli, o.lr, 1e-12, 10, "X", "initial learning rate"),
     .given = TRAIN_GIVEN_LR, .deflt = "the net's, 0.01"},
    {BASE_FLAG_U64("seed", train_cli, o.seed, INT64_MAX, "N",
                   "every random number derives from it"),
     .given = TRAIN_GIVEN_SEED},
    {BASE_FLAG_F64("pca-std", train_cli, o.pca_std, 0, 10, "X",
                   "std of the PCA lighting's alphas (section 4.1; 0: none)"),
     .given = TRAIN_GIVEN_PCA_STD, .deflt = "0.1"},
    {BASE_FLAG_CHOICE("mirror", train_cli, o.mirror, "on|off",
                      "random left-right mirrors of the training crops (section 4.1)"),
     .values = (const int[]){1, 0}, .given = TRAIN_GIVEN_MIRROR, .deflt = "on"},
    {BASE_FLAG_INT("downsample", train_cli, o.downsample, 1, 16, "F",
                   "crops of F*size pixels, each FxF block averaged to one input\n"
                   "pixel (a low-resolution net on the same crops; --size 74 with\n"
                   "--downsample 3 crops 222 of the 256 stored)"),
     .given = TRAIN_GIVEN_DOWNSAMPLE},
    {BASE_FLAG_BOOL("quiet", train_cli, o.quiet, "no progress line")},
    {BASE_FLAG_STR("run", train_cli, o.run_dir, "DIR",
                   "run folder: metrics.jsonl, run.json, ckpt/; a new run takes\n"
                   "only a new or empty one, and one trainer at a time holds it"),
     .deflt = "runs/run-DATE-TIME"},
    {BASE_FLAG_STR("resume", train_cli, o.resume, "PATH",
                   "continue from a checkpoint file, checkpoint folder or run folder")},
    {BASE_FLAG_I64("ckpt-every", train_cli, o.ckpt_every, 0, INT64_MAX / 2, "N",
                   "steps between checkpoints"),
     .deflt = "end of run and signals only"},
    {BASE_FLAG_INT("keep", train_cli, o.keep, 1, 1000000, "K", "checkpoints kept")},
    {BASE_FLAG_I64("eval-every", train_cli, o.eval_every, 0, INT64_MAX / 2, "N",
                   "steps between evaluations"),
     .given = TRAIN_GIVEN_EVAL_EVERY, .deflt = "every epoch"},
    {BASE_FLAG_I64("log-every", train_cli, o.log_every, 1, INT64_MAX / 2, "N",
                   "steps between metrics lines")},
    {BASE_FLAG_INT("patience", train_cli, o.patience, 1, 1000000, "P",
                   "evaluations without improvement before lr /= 10"),
     .given = TRAIN_GIVEN_PATIENCE},
    {BASE_FLAG_INT("max-drops", train_cli, o.max_drops, 0, 100, "N",
                   "learning-rate drops before the last plateau ends the run"),
     .given = TRAIN_GIVEN_MAX_DROPS},
    {BASE_FLAG_F64("min-delta", train_cli, o.min_delta, 0, 1, "X",
                   "smallest drop in validation error that counts"),
     .given = TRAIN_GIVEN_MIN_DELTA},
    {0}};

static const base_flags_cmd train_cmd = {
    .name = "train",
    .synopsis = "[flags]      (or: twotower --FLAG ...)",
    .about = "Trains the net (--net: the paper's two towers unless it says otherwise; twotower\n"
             "nets) with its optimizer (the paper's: SGD, momentum 0.9, weight decay 0.0005)\n"
             "and the paper's schedule. Placement: --gpus 0,1 one tower per GPU, --gpus 0 both\n"
             "on GPU 0, --cpu the CPU backend; neither: the GPUs if any, else the CPU.\n",
    .flags = train_flags,
    .opts_size = sizeof(train_cli),
    .defaults = train_cli_defaults};

/* argc/argv: the flags, argv[0] standing for the command; all_argc/all_argv: the whole
 * command line, for run.json. */
static int train_main(int argc, char **argv, int all_argc, char **all_argv)
{
    train_cli c;
    base_flags_out out;
    int rc = base_flags_cli(&train_cmd, &c, argc, argv, &out);
    if (rc != BASE_FLAGS_GO) return rc;
    train_options *o = &c.o;
    o->given = out.given;
    o->argc = all_argc;
    o->argv = all_argv;
    char err[512] = "";
    if (take_net(o, &c.net, out.given, err, sizeof err)) {
        fprintf(stderr, "twotower train: %s\n", err);
        return 2;
    }
    if (o->train_limit > 0 && o->train_limit < o->batch) {
        fprintf(stderr, "twotower train: --train-limit %lld is less than one batch (--batch %d): "
                        "an epoch would hold no step\n", (long long)o->train_limit, o->batch);
        return 2;
    }
    if (train_placement_resolve(&c.place, &o->place, err, sizeof err)) {
        fprintf(stderr, "twotower train: %s\n", err);
        return 2;
    }
    return train_run(o);
}

typedef struct {
    train_options o; /* only the net's shape is read */
    train_net_args net;
    int classes;
} summary_cli;

static void summary_cli_defaults(void *p)
{
    summary_cli *c = p;
    memset(c, 0, sizeof *c);
    train_options_default(&c->o);
    train_net_args_default(&c->net);
    c->classes = 0; /* the net's */
}

static const base_flag summary_flags[] = {
    {BASE_FLAG_GROUP(train_net_flags, summary_cli, net)},
    {BASE_FLAG_GROUP(net_flags, summary_cli, o)},
    {BASE_FLAG_INT("classes", summary_cli, classes, 2, 1 << 20, "N", "classes of fc8"),
     .deflt = "the net's, 1000"},
    {0}};

static const base_flags_cmd summary_cmd = {
    .name = "summary",
    .synopsis = "[flags]",
    .about = "Prints the per-layer table of the net (--net and its switches): output shapes,\n"
             "the stages after each layer, parameters, multiply-adds and the memory one tower\n"
             "takes (no device, no data).\n",
    .flags = summary_flags,
    .opts_size = sizeof(summary_cli),
    .defaults = summary_cli_defaults};

static int summary_main(int argc, char **argv)
{
    summary_cli c;
    base_flags_out out;
    int rc = base_flags_cli(&summary_cmd, &c, argc, argv, &out);
    if (rc != BASE_FLAGS_GO) return rc;
    char err[512] = "";
    if (take_net(&c.o, &c.net, out.given, err, sizeof err)) {
        fprintf(stderr, "twotower summary: %s\n", err);
        return 2;
    }
    tower_config cfg = {.towers = c.o.net && !(out.given & TRAIN_GIVEN_TOWERS) ? 0 : c.o.towers,
                        .classes = c.classes, .batch = c.o.batch, .in_size = c.o.size,
                        .in_ch = 0, .width_div = c.o.width_div};
    tower_plan plan;
    if (train_net_choose(&cfg, c.o.net, &c.o.switches, err, sizeof err) ||
        tower_plan_make(&plan, &cfg, err, sizeof err)) {
        fprintf(stderr, "twotower summary: %s\n", err);
        return 2;
    }
    train_summary_print(stdout, &plan);
    return 0;
}

/* ---- the command list ------------------------------------------------------------------ */

static const struct {
    const char *name, *args, *what;
    int (*main)(int argc, char **argv); /* argv[0] is the command's name */
} commands[] = {
    {"train", "[flags]", "train the net", NULL},
    {"summary", "[flags]", "per-layer table: shapes, parameters, multiply-adds, memory", summary_main},
    {"nets", "", "the nets --net takes, one line each with its parameter count",
     train_nets_main},
    {"prep", "SRC OUT", "image folder or Fashion-MNIST to 256x256 shards", data_prep_main},
    {"export", "[CKPT] OUT", "weights as safetensors, for PyTorch", train_export_main},
    {"dump", "--out F", "one batch's weights, logits and gradients for the PyTorch check",
     train_dump_main},
    {"plot", "RUN", "loss, error and learning-rate curves of a run", train_plot_main},
    {"ckpt-check", "PATH...", "validate checkpoint files", train_ckpt_check_main},
    {"bench", "[flags]", "time training steps, per layer (tools/bench/bench.py)",
     train_bench_main},
    {"filters", "CKPT -o PNG", "conv1's kernels as a picture (the paper's figure 3)",
     train_filters_main},
    {"features", "CKPT -o F", "a layer's activations of a split, as safetensors",
     train_features_main},
    {"neighbours", "CKPT -o PNG", "test images and their nearest training images by fc7 "
     "(figure 4)", train_neighbours_main},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "twotower %s: the 2012 two-tower AlexNet (Krizhevsky, Sutskever, Hinton)\n\n"
               "usage: twotower COMMAND [flags]     (twotower COMMAND --help lists its flags)\n"
               "       twotower --FLAG ...          the same as twotower train --FLAG ...\n\n"
               "commands:\n", base_version());
    for (int i = 0; i < N_COMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s %s", commands[i].name, commands[i].args);
        fprintf(f, "  %-24s%s\n", left, commands[i].what);
    }
    fprintf(f, "  %-24s%s\n", "help [COMMAND]", "this text, or the command's flags");
}

/* OpenBLAS picks its kernels once, as it loads, from OPENBLAS_CORETYPE or the CPU's model;
 * where it fell back to its slowest ones on a CPU it does not know (tower_blas_better_core),
 * name the right ones and start this program again, once. A user's own OPENBLAS_CORETYPE
 * always stands. */
static void blas_kernels(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = tower_blas_better_core();
    if (!core || setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* no /proc: go on with the slow kernels */
}

int main(int argc, char **argv)
{
    blas_kernels(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
        (!strcmp(cmd, "help") && argc == 2)) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("twotower %s\n", base_version());
        return 0;
    }
    /* `twotower help CMD` is `twotower CMD --help` */
    char help_flag[] = "--help";
    char *help_argv[3] = {argc > 2 ? argv[2] : NULL, help_flag, NULL};
    int help = !strcmp(cmd, "help");
    if (help) {
        if (argc > 3) {
            fprintf(stderr, "twotower help: one command at most (see twotower help)\n");
            return 2;
        }
        cmd = argv[2];
    }
    int sub_argc = help ? 2 : argc - 1;
    char **sub_argv = help ? help_argv : argv + 1;
    if (!strcmp(cmd, "train")) return train_main(sub_argc, sub_argv, argc, argv);
    /* flags with no command: train (argv[0], "twotower", stands for the command) */
    if (!help && !strncmp(cmd, "--", 2) && cmd[2]) return train_main(argc, argv, argc, argv);
    for (int i = 0; i < N_COMMANDS; i++)
        if (commands[i].main && !strcmp(cmd, commands[i].name))
            return commands[i].main(sub_argc, sub_argv);
    fprintf(stderr, "twotower: unknown command '%s' (see twotower help)\n", cmd);
    return 2;
}
