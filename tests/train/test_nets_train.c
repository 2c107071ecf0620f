/* Every preset through the model and the checkpoints: a same-seed run of each repeats bit
 * for bit (and another seed does not); an Adam net (fmnist) trains, checkpoints as version
 * 3 with its second moments and update count, and resumes bit for bit, at the model level
 * and through the trainer (one input channel from the RGB data path, --pca-std kept and
 * another one or another switch refused on resume; --mirror off and --downsample 3
 * likewise; --downsample too large for the stored images refused); the default nets
 * still write version 2; a checkpoint of one net is refused for another. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data.h"
#include "helpers.h"
#include "train/checkpoint.h"
#include "train/train.h"

_Static_assert(sizeof(real) == sizeof(float), "this test is for the float build");

/* preset `name` at 67 pixels, widths / 8, batch 2, 10 classes, with one switch (or none) */
static tower_config tiny(const char *name, const char *key, const char *value)
{
    const tower_net *n = tower_net_preset(name);
    cr_assert_not_null(n, "%s", name);
    tower_config cfg = {n->towers, 10, 2, 67, n->in_ch, 8};
    cfg.net = *n;
    if (key) {
        tower_net_switches sw = TOWER_SWITCHES_KEEP;
        char err[256];
        cr_assert_eq(tower_net_switch_parse(&sw, key, value, err, sizeof err), 0, "%s", err);
        cr_assert_eq(tower_net_apply(&cfg.net, &sw, err, sizeof err), 0, "%s", err);
    }
    return cfg;
}

static void open_model(model *m, const tower_config *cfg, uint64_t seed)
{
    model_placement place = {.cpu = 1};
    char err[512] = "";
    cr_assert_eq(model_init(m, cfg, &place, seed, err, sizeof err), 0, "%s", err);
}

/* The batch of a step: a pure function of the step (as the trainer's cursor makes it). */
static void put_batch(model *m, int64_t step)
{
    const tower_config *c = &m->plan.cfg;
    size_t n = (size_t)c->batch * c->in_ch * c->in_size * c->in_size;
    float *x = malloc(n * sizeof *x);
    int32_t y[2];
    cr_assert_not_null(x);
    uint64_t key = base_rng_mix(99, (uint64_t)step);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * base_rng_uniform(key, i) - 1.0f;
    for (int b = 0; b < c->batch; b++)
        y[b] = (int32_t)(base_rng_mix(key, n + (uint64_t)b) % (uint64_t)c->classes);
    model_set_batch(m, x, y);
    free(x);
}

static void steps(model *m, int64_t from, int64_t to, double *loss, real lr)
{
    for (int64_t s = from; s < to; s++) {
        put_batch(m, s);
        loss[s] = model_train_step(m, lr);
        cr_assert(isfinite(loss[s]), "step %lld loss %g", (long long)s, loss[s]);
    }
}

/* the state of every tower (parameters, momentum, Adam's second moment; gradients are no
 * state) of a and b holds the same bits */
static void same_state(const model *a, const model *b, const char *what)
{
    size_t n = a->plan.n_params;
    real *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
    cr_assert(p && q);
    for (int t = 0; t < a->towers; t++)
        for (int which = 0; which <= (a->plan.adam ? 3 : 2); which += which ? 1 : 2) {
            model_get_tensor(a, t, which, p);
            model_get_tensor(b, t, which, q);
            cr_assert(!memcmp(p, q, n * sizeof *p), "%s: tower %d arena %d differs", what, t,
                      which);
        }
    cr_assert_eq(a->updates, b->updates, "%s: updates", what);
    free(p), free(q);
}

static const char *const PRESETS[7] = {"alexnet2012", "alexnet2012-1gpu", "half", "merged",
                                       "alexnet2014", "torchvision", "fmnist"};

Test(nets_train, every_preset_repeats_bit_for_bit, .timeout = 120)
{
    for (int i = 0; i < 7; i++) {
        tower_config cfg = tiny(PRESETS[i], NULL, NULL);
        model a, b, c;
        double la[2], lb[2], lc[1];
        open_model(&a, &cfg, 11);
        open_model(&b, &cfg, 11);
        open_model(&c, &cfg, 12);
        real lr = (real)cfg.net.lr;
        steps(&a, 0, 2, la, lr);
        steps(&b, 0, 2, lb, lr);
        steps(&c, 0, 1, lc, lr);
        for (int s = 0; s < 2; s++)
            cr_assert(la[s] == lb[s], "%s step %d: %.17g vs %.17g", PRESETS[i], s, la[s], lb[s]);
        same_state(&a, &b, PRESETS[i]);
        cr_assert(la[0] != lc[0], "%s: seeds 11 and 12 gave the same loss", PRESETS[i]);
        cr_assert_eq(a.updates, 2);
        model_free(&a), model_free(&b), model_free(&c);
    }
}

/* fmnist trains with Adam: on one repeated batch the loss falls fast */
Test(nets_train, adam_net_learns_a_batch, .timeout = 60)
{
    tower_config cfg = tiny("fmnist", NULL, NULL);
    model m;
    open_model(&m, &cfg, 3);
    double first = 0, last = 0;
    for (int s = 0; s < 30; s++) {
        put_batch(&m, 0);
        double l = model_train_step(&m, (real)cfg.net.lr);
        if (s == 0) first = l;
        last = l;
    }
    cr_assert(last < 0.5 * first, "Adam: loss %.4f -> %.4f in 30 steps on one batch", first,
              last);
    model_free(&m);
}

static uint32_t file_version(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    unsigned char h[12];
    cr_assert_eq(fread(h, 1, 12, f), 12u);
    fclose(f);
    return (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
}

static void save(const model *m, const char *dir, int64_t step, char *path, size_t n)
{
    train_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.cfg = m->plan.cfg;
    meta.seed = 1;
    meta.step = step;
    meta.cursor = (train_cursor){1, 0, step * 2};
    train_sched_init(&meta.sched, 0.001, 5, 3, 0.001);
    train_nonfinite_init(&meta.nonfinite, 5);
    meta.stats = (train_ckpt_stats){1, 1, -1, 0, 0, 0, 1, 1};
    char err[1024];
    cr_assert_eq(train_ckpt_save(dir, &meta, m, 0, err, sizeof err), 0, "%s", err);
    snprintf(path, n, "%s/ckpt-%08lld.ttc", dir, (long long)step);
}

/* half the steps, a checkpoint, a fresh model loaded from it, the other half: the same
 * losses and arenas as one uninterrupted run (Adam's moments and update count too) */
static void resume_exact(const char *name, const char *key, const char *value,
                         uint32_t want_version)
{
    tower_config cfg = tiny(name, key, value);
    real lr = (real)(cfg.net.optim.kind == TOWER_OPTIM_ADAM ? 0.001 : 0.01);
    model a, b, c;
    double la[6], lb[6];
    open_model(&a, &cfg, 21);
    open_model(&b, &cfg, 21);
    steps(&a, 0, 6, la, lr);
    steps(&b, 0, 3, lb, lr);
    char *dir = tt_tmpdir("nets"), path[4300], err[1024];
    save(&b, dir, 3, path, sizeof path);
    cr_assert_eq(file_version(path), want_version, "%s: version", name);
    open_model(&c, &cfg, 5); /* another seed: everything must come from the file */
    train_ckpt_meta meta;
    cr_assert_eq(train_ckpt_load(path, &meta, &c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(tower_config_net(&meta.cfg)->name, name);
    same_state(&b, &c, "loaded");
    steps(&c, 3, 6, lb, lr);
    for (int s = 3; s < 6; s++)
        cr_assert(la[s] == lb[s], "%s step %d: %.17g uninterrupted, %.17g resumed", name, s,
                  la[s], lb[s]);
    same_state(&a, &c, "resumed");
    model_free(&a), model_free(&b), model_free(&c);
    tt_rmtree(dir);
    free(dir);
}

Test(nets_train, adam_resume_is_bit_identical, .timeout = 60)
{
    resume_exact("fmnist", NULL, NULL, 3);
}

Test(nets_train, switched_net_resume_is_bit_identical, .timeout = 60)
{
    resume_exact("alexnet2012", "pool", "2:2", 3);      /* the paper's net, switched */
    resume_exact("alexnet2012", "optim", "adam", 3);    /* two towers with Adam */
    resume_exact("alexnet2012", "init", "torch", 3);    /* PyTorch's init: the net differs */
    resume_exact("alexnet2012", NULL, NULL, 2);         /* the default: version 2 still */
    resume_exact("half", NULL, NULL, 2);
}

/* a checkpoint of one net does not load into another, whatever the shapes */
Test(nets_train, other_net_refused)
{
    tower_config a = tiny("alexnet2012", NULL, NULL), b = tiny("alexnet2012", "act", "tanh");
    model ma, mb;
    open_model(&ma, &a, 1);
    open_model(&mb, &b, 1);
    char *dir = tt_tmpdir("nets"), path[4300], err[1024] = "";
    save(&ma, dir, 1, path, sizeof path);
    train_ckpt_meta meta;
    cr_assert_eq(train_ckpt_load(path, &meta, &mb, err, sizeof err), -1,
                 "tanh net took a relu net's checkpoint");
    cr_assert(strstr(err, "config.net") && strstr(err, "act tanh"), "%s", err);
    model_free(&ma), model_free(&mb);
    tt_rmtree(dir);
    free(dir);
}

/* ---- through the trainer: the one-channel net from the RGB data path, Adam, version 3,
 * resumed at an epoch end equal to the uninterrupted run ------------------------------ */

#define FMNIST "/usr/share/datasets/fashion-mnist"

static void fmnist_options(train_options *o, const char *data, const char *run, int epochs)
{
    train_options_default(o);
    o->data = data;
    o->net = "fmnist";
    o->size = 67;
    o->batch = 2;
    o->width_div = 8;
    o->lr = 0.001;
    o->epochs = epochs;
    o->train_limit = 16;
    o->test_limit = 4;
    o->ckpt_every = 3;
    o->keep = 2;
    o->quiet = 1;
    o->seed = 9;
    o->pca_std = 0.05; /* --pca-std: kept by the checkpoint */
    o->mirror = 0;     /* --mirror off: likewise */
    o->downsample = 3; /* 201-pixel crops averaged to 67: likewise */
    o->run_dir = run;
}

Test(nets_train, trainer_fmnist_resume_is_bit_identical, .timeout = 240)
{
    struct stat st;
    if (stat(FMNIST "/train-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("no Fashion-MNIST at " FMNIST " (Debian: dataset-fashion-mnist)");
    char *dir = tt_tmpdir("netsrun"), a[4200], b[4200], data[4200];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    /* a 64-image prep: opened in milliseconds, where the IDX files take seconds a start */
    snprintf(data, sizeof data, "%s/data", dir);
    char *prep[] = {"prep", FMNIST, data, "--limit", "64", "--quiet", NULL};
    cr_assert_eq(data_prep_main(6, prep), 0, "prep of " FMNIST);
    train_options o;
    fmnist_options(&o, data, a, 2);
    cr_assert_eq(train_run(&o), 0, "uninterrupted run");
    fmnist_options(&o, data, b, 1);
    cr_assert_eq(train_run(&o), 0, "first epoch");
    fmnist_options(&o, data, b, 2);
    o.resume = b;
    o.pca_std = 0.2; /* another lighting, asked for: refused */
    o.given = TRAIN_GIVEN_PCA_STD;
    cr_assert_eq(train_run(&o), 2, "a resume with another --pca-std");
    o.pca_std = 0.05;
    o.mirror = 1; /* mirrors back on, asked for: refused */
    o.given = TRAIN_GIVEN_MIRROR;
    cr_assert_eq(train_run(&o), 2, "a resume with --mirror on onto a --mirror off run");
    o.mirror = 0;
    o.downsample = 2; /* another downsampling, asked for: refused */
    o.given = TRAIN_GIVEN_DOWNSAMPLE;
    cr_assert_eq(train_run(&o), 2, "a resume with --downsample 2 onto --downsample 3");
    o.downsample = 3;
    o.given = 0;
    o.switches.act = TOWER_ACT_TANH; /* another net, asked for: refused */
    cr_assert_eq(train_run(&o), 2, "a resume with --act tanh onto a relu net");
    char c[4200];
    snprintf(c, sizeof c, "%s/c", dir);
    fmnist_options(&o, data, c, 1);
    o.downsample = 4; /* 268-pixel crops of 256-pixel images */
    cr_assert_eq(train_run(&o), 2, "--downsample 4 with --size 67");
    fmnist_options(&o, data, b, 2);
    o.resume = b;
    o.pca_std = -1; /* left out: the checkpoint's */
    o.mirror = -1;
    cr_assert_eq(train_run(&o), 0, "resumed");
    char pa[4300], pb[4300], err[1024];
    snprintf(pa, sizeof pa, "%s/ckpt/ckpt-%08d.ttc", a, 16);
    snprintf(pb, sizeof pb, "%s/ckpt/ckpt-%08d.ttc", b, 16);
    cr_assert_eq(file_version(pa), 3u);
    train_ckpt_meta ma, mb;
    size_t n;
    cr_assert_eq(train_ckpt_load(pa, &ma, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ma.cfg.in_ch, 1, "the fmnist net reads one channel");
    cr_assert_eq(ma.model_updates, 16);
    cr_assert(ma.pca_set && ma.pca_std == 0.05, "pca_std %g (set %d)", ma.pca_std, ma.pca_set);
    cr_assert(ma.mirror_set && ma.mirror == 0, "mirror %d (set %d)", ma.mirror, ma.mirror_set);
    cr_assert_eq(ma.downsample, 3);
    n = ma.n_params;
    real *p[3], *q[3];
    for (int i = 0; i < 3; i++) {
        p[i] = malloc(n * sizeof(real));
        q[i] = malloc(n * sizeof(real));
        cr_assert(p[i] && q[i]);
    }
    cr_assert_eq(train_ckpt_load_buffers3(pa, &ma, NULL, 0, p, p + 1, p + 2, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(train_ckpt_load_buffers3(pb, &mb, NULL, 0, q, q + 1, q + 2, err, sizeof err),
                 0, "%s", err);
    static const char *const what[3] = {"params", "first moments", "second moments"};
    for (int i = 0; i < 3; i++) {
        cr_assert(!memcmp(p[i], q[i], n * sizeof(real)), "%s differ", what[i]);
        free(p[i]), free(q[i]);
    }
    cr_assert_eq(ma.model_updates, mb.model_updates);
    tt_rmtree(dir);
    free(dir);
}

Test(nets_train, input_gray_is_the_channel_mean)
{
    /* (--downsample's F x F average is made by the data path: tests/data's augment
     * tests) three channels: x itself; one channel: the mean of the three, as the fmnist
     * net always had it */
    float x[3 * 4 * 4], g[16];
    for (int i = 0; i < 3 * 16; i++)
        x[i] = (float)i;
    cr_assert_eq(train_input_gray(x, 1, 4, 3, g), x);
    const float *r = train_input_gray(x, 1, 4, 1, g);
    for (int p = 0; p < 16; p++)
        cr_assert_eq(r[p], (x[p] + x[16 + p] + x[32 + p]) / 3.0f);
}

/* run.json's "conv" on the CPU: the mode, then each conv layer's passes by path */
Test(nets_train, conv_line_names_every_conv_layer)
{
    tower_config cfg = tiny("alexnet2012", NULL, NULL);
    model m;
    open_model(&m, &cfg, 1);
    char buf[2048];
    model_conv_describe(&m, buf, sizeof buf);
    const char *mode = tower_conv_dnnl_built() ? "cpu onednn (" : "cpu (";
    cr_assert(strncmp(buf, mode, strlen(mode)) == 0, "%s", buf);
    for (int l = 1; l <= 5; l++) {
        char name[16];
        snprintf(name, sizeof name, "conv%d ", l);
        cr_assert(strstr(buf, name) != NULL, "%s: no %s", buf, name);
    }
    cr_assert_eq(buf[strlen(buf) - 1], ')', "%s", buf);
    model_free(&m);
}
