/* test_figures_cmd: the subcommands of Figures 3 and 4 end to end on a tiny net (67 pixels,
 * widths / 8 or / 4) and a small IDX data set written here (40 training images, one of
 * them a copy of another, and 12 test images): filters draws one tile per kernel, tower 0's
 * band above tower 1's, grey for the one-channel net; features writes the model's own
 * activations with the data's labels; neighbours finds a training query itself at
 * distance 0 (its copy next) and agrees with distances computed from the features file; the
 * outputs that would replace an input are refused. */
#include <criterion/criterion.h>

#include <jansson.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../reference/st_read.h"
#include "helpers.h"
#include "train/train.h"

_Static_assert(sizeof(real) == sizeof(float), "this test is for the float build");

enum { N_TRAIN = 40, N_TEST = 12, DUP_OF = 3, DUP_AT = 20, BATCH = 4 };

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void write_gz(const char *path, const uint8_t *hdr, size_t hn, const uint8_t *body,
                     size_t bn)
{
    gzFile f = gzopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(gzwrite(f, hdr, (unsigned)hn), (int)hn);
    cr_assert_eq(gzwrite(f, body, (unsigned)bn), (int)bn);
    cr_assert_eq(gzclose(f), Z_OK);
}

/* PRE-images/labels-idx*-ubyte.gz: n 28x28 images, each a blob at its own place and
 * brightness on noise, labels (i * 7) % 10; with dup, image DUP_AT is a copy of DUP_OF. */
static void write_idx(const char *dir, const char *pre, int n, int dup, uint64_t key)
{
    uint8_t h[16], *px = malloc((size_t)n * 784), lab[64];
    cr_assert_not_null(px);
    for (int i = 0; i < n; i++) {
        int cy = 6 + (int)(base_rng_mix(key, 3 * (uint64_t)i) % 16);
        int cx = 6 + (int)(base_rng_mix(key, 3 * (uint64_t)i + 1) % 16);
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                int d2 = (y - cy) * (y - cy) + (x - cx) * (x - cx);
                float v = 40 * base_rng_uniform(key ^ 0x5a5a, (uint64_t)(i * 784 + y * 28 + x)) +
                          (d2 < 30 ? 120 + 3 * (i % 30) : 0);
                px[(size_t)i * 784 + y * 28 + x] = (uint8_t)v;
            }
        lab[i] = (uint8_t)((i * 7) % 10);
    }
    if (dup) {
        memcpy(px + (size_t)DUP_AT * 784, px + (size_t)DUP_OF * 784, 784);
        lab[DUP_AT] = lab[DUP_OF];
    }
    char path[4300];
    put_be32(h, 0x803), put_be32(h + 4, (uint32_t)n), put_be32(h + 8, 28), put_be32(h + 12, 28);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, pre);
    write_gz(path, h, 16, px, (size_t)n * 784);
    put_be32(h, 0x801);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
    write_gz(path, h, 8, lab, (size_t)n);
    free(px);
}

/* A tmp folder with data/ (the IDX files) and run/ckpt/ckpt-00000000.ttc of preset `net`
 * freshly initialised at 67 pixels, widths / wdiv, batch BATCH, 10 classes. */
typedef struct {
    char *dir;
    char data[4200], run[4200], ckpt[4400];
    tower_config cfg;
    int downsample;         /* the run's --downsample F, kept by the checkpoint */
} fixture;

static void fixture_make_ds(fixture *f, const char *net, int wdiv, int downsample)
{
    f->dir = tt_tmpdir("figcmd");
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    snprintf(f->run, sizeof f->run, "%s/run", f->dir);
    cr_assert_eq(mkdir(f->data, 0755), 0);
    write_idx(f->data, "train", N_TRAIN, 1, 11);
    write_idx(f->data, "t10k", N_TEST, 0, 12);
    tower_config cfg = {.towers = 0, .classes = 10, .batch = BATCH, .in_size = 67, .in_ch = 0,
                        .width_div = wdiv};
    char err[1024];
    cr_assert_eq(train_net_choose(&cfg, net, NULL, err, sizeof err), 0, "%s", err);
    f->cfg = cfg;
    model m;
    model_placement place = {.cpu = 1};
    cr_assert_eq(model_init(&m, &cfg, &place, 5, err, sizeof err), 0, "%s", err);
    train_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.cfg = cfg;
    meta.seed = 5;
    meta.cursor = (train_cursor){5, 0, 0};
    train_sched_init(&meta.sched, 0.01, 5, 3, 0.001);
    train_nonfinite_init(&meta.nonfinite, 5);
    meta.stats = (train_ckpt_stats){1, 1, -1, 0, 0, 0, 1, 1};
    meta.downsample = f->downsample = downsample;
    char ckdir[4250];
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", f->run);
    cr_assert_eq(train_ckpt_save(ckdir, &meta, &m, 0, err, sizeof err), 0, "%s", err);
    snprintf(f->ckpt, sizeof f->ckpt, "%s/ckpt-00000000.ttc", ckdir);
    model_free(&m);
}

static void fixture_make(fixture *f, const char *net, int wdiv)
{
    fixture_make_ds(f, net, wdiv, 1);
}

static void fixture_free(fixture *f)
{
    tt_rmtree(f->dir);
    free(f->dir);
}

/* Runs a subcommand's main on a NULL-ended argument list (argv[0] its name). */
static int run_cmd(int (*cmd_main)(int, char **), const char *const *args)
{
    char *argv[64];
    int argc = 0;
    while (args[argc]) {
        cr_assert_lt(argc, 63);
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    return cmd_main(argc, argv);
}

/* A PNG decoded with libpng in its own format: w, h, channels (1 grey, 3 RGB) and pixels. */
static uint8_t *read_png(const char *path, int *w, int *h, int *channels)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
    *channels = PNG_IMAGE_PIXEL_CHANNELS(img.format);
    cr_assert(*channels == 1 || *channels == 3, "%s: %d channels", path, *channels);
    img.format = *channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    uint8_t *px = malloc(PNG_IMAGE_SIZE(img));
    cr_assert_not_null(px);
    cr_assert(png_image_finish_read(&img, NULL, px, 0, NULL), "%s: %s", path, img.message);
    *w = (int)img.width;
    *h = (int)img.height;
    return px;
}

/* Counts the mosaic's tiles at full range (0 and 255 reached) in a towers x rows x cols
 * layout of side-pixel tiles, 1-pixel gaps, 4-pixel band gaps, and checks that the slots
 * past the last kernel of a band are white. */
static int full_range_tiles(const uint8_t *px, int W, int ch, int towers, int kernels, int cols,
                            int side)
{
    int rows = (kernels + cols - 1) / cols, band = rows * side + rows - 1, tiles = 0;
    for (int t = 0; t < towers; t++)
        for (int o = 0; o < rows * cols; o++) {
            int x0 = (o % cols) * (side + 1), y0 = t * (band + 4) + (o / cols) * (side + 1);
            int lo = 255, hi = 0;
            for (int y = 0; y < side; y++)
                for (int x = 0; x < side * ch; x++) {
                    int v = px[((size_t)(y0 + y) * W + x0) * ch + x];
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
            if (o < kernels)
                tiles += lo == 0 && hi == 255;
            else
                cr_assert_eq(lo, 255, "tower %d slot %d (past the last kernel) is not white", t, o);
        }
    return tiles;
}

Test(figures_cmd, filters_draws_every_kernel_in_two_bands, .timeout = 60)
{
    fixture f;
    fixture_make(&f, "alexnet2012", 4);
    tower_plan plan;
    char err[512], png[4300];
    cr_assert_eq(tower_plan_make(&plan, &f.cfg, err, sizeof err), 0, "%s", err);
    int K = plan.layer[0].out_ch, k = tower_plan_row(&plan, 0)->k, zoom = 2, cols = 5;
    cr_assert_eq(K, 12, "alexnet2012 / 4: 12 conv1 kernels a tower");
    snprintf(png, sizeof png, "%s/conv1.png", f.dir);
    char zs[8], cs[8];
    snprintf(zs, sizeof zs, "%d", zoom);
    snprintf(cs, sizeof cs, "%d", cols);
    /* the run folder as CKPT: its newest checkpoint */
    cr_assert_eq(run_cmd(train_filters_main, (const char *[]){"filters", f.run, "-o", png,
                                                              "--zoom", zs, "--cols", cs, NULL}),
                 0);
    int w, h, ch;
    uint8_t *px = read_png(png, &w, &h, &ch);
    int side = k * zoom, rows = (K + cols - 1) / cols, band = rows * side + rows - 1;
    cr_assert_eq(ch, 3, "a 3-channel net draws colour");
    cr_assert_eq(w, cols * side + cols - 1);
    cr_assert_eq(h, 2 * band + 4, "two bands of %d rows", rows);
    cr_assert_eq(full_range_tiles(px, w, ch, 2, K, cols, side), 2 * K,
                 "one full-range tile per kernel");
    for (int x = 0; x < w * 3; x++) /* the gap between the towers' bands */
        cr_assert_eq(px[(size_t)(band + 1) * w * 3 + x], 255);
    free(px);
    /* the default layout: a tower's 12 kernels in one row of 12 */
    cr_assert_eq(run_cmd(train_filters_main, (const char *[]){"filters", f.ckpt, "-o", png, NULL}),
                 0);
    px = read_png(png, &w, &h, &ch);
    cr_assert_eq(w, K * 4 * k + K - 1);
    cr_assert_eq(h, 2 * 4 * k + 4);
    cr_assert_eq(full_range_tiles(px, w, ch, 2, K, K, 4 * k), 2 * K);
    free(px);
    fixture_free(&f);
}

static int layer_index(const tower_config *cfg, const char *name)
{
    tower_plan p;
    char err[256];
    cr_assert_eq(tower_plan_make(&p, cfg, err, sizeof err), 0);
    for (int l = 0; l < p.n_layers; l++)
        if (!strcmp(tower_plan_row(&p, l)->name, name)) return l;
    cr_assert_fail("no layer %s", name);
    return -1;
}

/* every preset (version 2 and 3 checkpoints alike): filters draws its conv1 (one band a
 * tower; grey for fmnist, which reads one channel), features writes its fc7 at the plan's
 * width */
Test(figures_cmd, every_preset_draws_and_writes_features, .timeout = 120)
{
    static const char *const presets[] = {"alexnet2012", "alexnet2012-1gpu", "half", "merged",
                                          "alexnet2014", "torchvision", "fmnist"};
    for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++) {
        fixture f;
        fixture_make(&f, presets[p], 8);
        tower_plan plan;
        char err[512], png[4300], out[4300];
        cr_assert_eq(tower_plan_make(&plan, &f.cfg, err, sizeof err), 0, "%s", err);
        snprintf(png, sizeof png, "%s/conv1.png", f.dir);
        snprintf(out, sizeof out, "%s/fc7.safetensors", f.dir);
        cr_assert_eq(run_cmd(train_filters_main,
                             (const char *[]){"filters", f.run, "-o", png, NULL}), 0, "%s",
                     presets[p]);
        int w, h, ch, K = plan.layer[0].out_ch, k = tower_plan_row(&plan, 0)->k;
        int cols = K < 16 ? K : 16, rows = (K + cols - 1) / cols, T = plan.cfg.towers;
        uint8_t *px = read_png(png, &w, &h, &ch);
        cr_assert_eq(ch, plan.cfg.in_ch == 3 ? 3 : 1, "%s", presets[p]);
        cr_assert(w == cols * 4 * k + cols - 1 &&
                      h == T * (rows * 4 * k + rows - 1) + (T - 1) * 4,
                  "%s: %d x %d", presets[p], w, h);
        cr_assert_eq(full_range_tiles(px, w, ch, T, K, cols, 4 * k), T * K, "%s", presets[p]);
        free(px);
        cr_assert_eq(run_cmd(train_features_main,
                             (const char *[]){"features", f.run, "--data", f.data, "--cpu",
                                              "--quiet", "--limit", "5", "-o", out, NULL}), 0,
                     "%s", presets[p]);
        int l = layer_index(&f.cfg, "fc7");
        tt_st st;
        tt_st_open(&st, out);
        int nd;
        int64_t sh[8];
        size_t nb;
        tt_st_tensor(&st, "features", "F32", &nd, sh, &nb);
        cr_assert(nd == 2 && sh[0] == 5 && sh[1] == (int64_t)T * plan.layer[l].out_ch,
                  "%s: features %lld x %lld", presets[p], (long long)sh[0], (long long)sh[1]);
        cr_assert_str_eq(tt_st_meta(&st, "net"), presets[p]);
        tt_st_close(&st);
        fixture_free(&f);
    }
}

/* The model's own test-mode activations of layer l for images [start, start + k) of the
 * split, read straight from the towers' buffers (CPU): (k, towers * units). */
static float *forward_acts(const fixture *f, int train_split, int64_t start, int k, int l,
                           size_t *dim)
{
    char err[1024];
    data_source *src = data_open_idx(f->data, train_split, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    model m;
    model_placement place = {.cpu = 1};
    cr_assert_eq(model_init(&m, &f->cfg, &place, 99, err, sizeof err), 0, "%s", err);
    train_ckpt_meta meta;
    cr_assert_eq(train_ckpt_load(f->ckpt, &meta, &m, err, sizeof err), 0, "%s", err);
    const tower_config *c = &f->cfg;
    int F = f->downsample, S = F * c->in_size; /* the crops the run trained on */
    size_t xs = (size_t)3 * c->in_size * c->in_size; /* one image's floats, averaged F x F */
    float *x = calloc(xs * c->batch, sizeof(float));
    float *scratch = calloc(xs * c->batch, sizeof(float));
    int32_t labels[BATCH];
    cr_assert_eq(data_eval_batch_reduced(src, start, k, S, DATA_VIEW_CENTER, F, x, labels, err,
                                         sizeof err), 0, "%s", err);
    for (int b = k; b < c->batch; b++) { /* the padding the evaluation uses */
        memcpy(x + xs * b, x, sizeof(float) * xs);
        labels[b] = labels[0];
    }
    model_set_batch(&m, train_input_gray(x, c->batch, c->in_size, c->in_ch, scratch), labels);
    model_forward(&m, 0);
    const tower_layer_shape *L = &m.plan.layer[l];
    size_t per = (size_t)L->out_ch * L->out_h * L->out_h;
    *dim = per * (size_t)m.towers;
    float *out = malloc(sizeof(float) * *dim * k);
    for (int b = 0; b < k; b++)
        for (int t = 0; t < m.towers; t++)
            memcpy(out + (size_t)b * *dim + (size_t)t * per, m.tw[t].acts[l].act + (size_t)b * per,
                   sizeof(float) * per);
    free(x);
    free(scratch);
    model_free(&m);
    data_close(src);
    return out;
}

Test(figures_cmd, features_are_the_models_activations_with_the_datas_labels, .timeout = 60)
{
    fixture f;
    fixture_make(&f, "alexnet2012", 8);
    char out[4300], err[512];
    snprintf(out, sizeof out, "%s/fc7.safetensors", f.dir);
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.run, "--data", f.data, "--cpu", "--quiet",
                                          "-o", out, NULL}),
                 0);
    int l = layer_index(&f.cfg, "fc7");
    size_t dim;
    float *want = forward_acts(&f, 1, 0, BATCH, l, &dim);
    cr_assert_eq(dim, 2 * 2048 / 8, "fc7 of both towers: 2 x 2048 units / 8");
    tt_st st;
    tt_st_open(&st, out);
    cr_assert_str_eq(tt_st_meta(&st, "layer"), "fc7");
    cr_assert_str_eq(tt_st_meta(&st, "split"), "train");
    int nd;
    int64_t sh[8];
    size_t nb;
    const void *feat = tt_st_tensor(&st, "features", "F32", &nd, sh, &nb);
    cr_assert(nd == 2 && sh[0] == N_TRAIN && sh[1] == (int64_t)dim, "features %lld x %lld",
              (long long)sh[0], (long long)sh[1]);
    float *got = malloc(nb);
    memcpy(got, feat, nb);
    /* the same batch positions: the same bits */
    cr_assert_eq(memcmp(got, want, sizeof(float) * dim * BATCH), 0,
                 "images 0..3: features differ from the model's fc7");
    double norm = 0;
    for (size_t i = 0; i < dim; i++) norm += (double)got[i] * got[i];
    cr_assert(norm > 0, "fc7 of image 0 is all zero");
    int32_t labels[N_TRAIN];
    int64_t idx[N_TRAIN];
    memcpy(labels, tt_st_tensor(&st, "labels", "I32", &nd, sh, &nb), sizeof labels);
    cr_assert(nd == 1 && sh[0] == N_TRAIN && nb == sizeof labels);
    memcpy(idx, tt_st_tensor(&st, "indices", "I64", &nd, sh, &nb), sizeof idx);
    data_source *src = data_open_idx(f.data, 1, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    for (int i = 0; i < N_TRAIN; i++) {
        cr_assert_eq(labels[i], data_label(src, i), "image %d", i);
        cr_assert_eq(idx[i], i);
    }
    data_close(src);
    tt_st_close(&st);
    free(want);

    /* a piece of the test split through another batch size (other batch positions: equal
     * within float rounding), fc6 */
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.ckpt, "--data", f.data, "--cpu", "--quiet",
                                          "--split", "test", "--layer", "fc6", "--offset", "5",
                                          "--limit", "3", "--batch", "2", "-o", out, NULL}),
                 0);
    l = layer_index(&f.cfg, "fc6");
    want = forward_acts(&f, 0, 5, 3, l, &dim);
    tt_st_open(&st, out);
    feat = tt_st_tensor(&st, "features", "F32", &nd, sh, &nb);
    cr_assert(nd == 2 && sh[0] == 3 && sh[1] == (int64_t)dim);
    got = realloc(got, nb);
    memcpy(got, feat, nb);
    for (size_t i = 0; i < 3 * dim; i++)
        cr_assert(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])), "fc6[%zu]: %g vs %g",
                  i, got[i], want[i]);
    memcpy(idx, tt_st_tensor(&st, "indices", "I64", &nd, sh, &nb), 3 * sizeof(int64_t));
    cr_assert(idx[0] == 5 && idx[2] == 7);
    tt_st_close(&st);
    free(got);
    free(want);
    fixture_free(&f);
}

/* a run with --downsample 2 trained on 134-pixel crops averaged to 67: its features come
 * from the same crops (and the one-channel net's from their gray mean) */
Test(figures_cmd, features_take_the_checkpoints_downsample, .timeout = 60)
{
    static const char *const nets[] = {"alexnet2012", "fmnist"};
    for (int n = 0; n < 2; n++) {
        fixture f;
        fixture_make_ds(&f, nets[n], 8, 2);
        char out[4300];
        snprintf(out, sizeof out, "%s/fc6.safetensors", f.dir);
        cr_assert_eq(run_cmd(train_features_main,
                             (const char *[]){"features", f.run, "--data", f.data, "--cpu",
                                              "--quiet", "--layer", "fc6", "--limit", "6", "-o",
                                              out, NULL}), 0, "%s", nets[n]);
        size_t dim;
        float *want = forward_acts(&f, 1, 0, BATCH, layer_index(&f.cfg, "fc6"), &dim);
        tt_st st;
        tt_st_open(&st, out);
        int nd;
        int64_t sh[8];
        size_t nb;
        const void *got = tt_st_tensor(&st, "features", "F32", &nd, sh, &nb);
        cr_assert(nd == 2 && sh[0] == 6 && sh[1] == (int64_t)dim, "%s", nets[n]);
        cr_assert_eq(memcmp(got, want, sizeof(float) * dim * BATCH), 0,
                     "%s: features differ from the forward on 134-pixel crops averaged 2x2",
                     nets[n]);
        tt_st_close(&st);
        free(want);
        fixture_free(&f);
    }
}

Test(figures_cmd, features_of_a_one_channel_net, .timeout = 60)
{
    fixture f;
    fixture_make(&f, "fmnist", 8);
    char out[4300];
    snprintf(out, sizeof out, "%s/fc8.safetensors", f.dir);
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.run, "--data", f.data, "--cpu", "--quiet",
                                          "--layer", "fc8", "--split", "test", "-o", out, NULL}),
                 0);
    tt_st st;
    tt_st_open(&st, out);
    int nd;
    int64_t sh[8];
    size_t nb;
    tt_st_tensor(&st, "features", "F32", &nd, sh, &nb);
    cr_assert(nd == 2 && sh[0] == N_TEST && sh[1] == 10, "fc8: the 10 logits");
    tt_st_close(&st);
    fixture_free(&f);
}

/* The JSON's rows: query i's index and its neighbours' indices and distances. */
static json_t *load_rows(const char *path, int want_rows, int want_k)
{
    json_error_t je;
    json_t *doc = json_load_file(path, 0, &je);
    cr_assert_not_null(doc, "%s: %s", path, je.text);
    json_t *rows = json_object_get(doc, "queries");
    cr_assert(json_is_array(rows) && (int)json_array_size(rows) == want_rows, "%s: rows", path);
    for (int i = 0; i < want_rows; i++) {
        json_t *nb = json_object_get(json_array_get(rows, (size_t)i), "neighbours");
        cr_assert(json_is_array(nb) && (int)json_array_size(nb) == want_k, "row %d", i);
    }
    json_incref(rows);
    json_decref(doc);
    return rows;
}

static int64_t jint(json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

Test(figures_cmd, a_training_query_is_its_own_nearest_neighbour, .timeout = 60)
{
    fixture f;
    fixture_make(&f, "alexnet2012", 8);
    char png[4300], json[4300];
    snprintf(png, sizeof png, "%s/self.png", f.dir);
    snprintf(json, sizeof json, "%s/self.json", f.dir);
    enum { Q = 24, SIDE = 16 };
    cr_assert_eq(run_cmd(train_neighbours_main,
                         (const char *[]){"neighbours", f.run, "--data", f.data, "--cpu",
                                          "--quiet", "--query-split", "train", "--queries", "24",
                                          "--tile", "16", "-o", png, NULL}),
                 0);
    json_t *rows = load_rows(json, Q, 6); /* beside the PNG by default */
    for (int i = 0; i < Q; i++) {
        json_t *row = json_array_get(rows, (size_t)i);
        json_t *nb = json_object_get(row, "neighbours");
        cr_assert_eq(jint(row, "index"), i, "the first 24 images, in order");
        json_t *first = json_array_get(nb, 0);
        double d0 = json_real_value(json_object_get(first, "distance"));
        int64_t n0 = jint(first, "index");
        /* itself, or a copy offered before it (image DUP_AT is image DUP_OF) */
        cr_assert(n0 == i || d0 == 0, "query %d: nearest %lld at %g", i, (long long)n0, d0);
        cr_assert_eq(d0, 0.0, "query %d: its own distance %g", i, d0);
        double d1 = json_real_value(json_object_get(json_array_get(nb, 1), "distance"));
        double d2 = json_real_value(json_object_get(json_array_get(nb, 2), "distance"));
        if (i == DUP_AT || i == DUP_OF) {
            /* the copy comes next: the same pixels at another batch position, equal within
             * float rounding (exactly 0 only at the same position, where it would come
             * first, the lower index winning the tie); a fresh net's fc7 differs little
             * between images (biases 1, weights N(0, 0.01)), so the margin is a tenth */
            int64_t n1 = jint(json_array_get(nb, 1), "index");
            int64_t other = i == DUP_AT ? DUP_OF : DUP_AT;
            cr_assert(n0 == other || n1 == other, "query %d: its copy %lld is not next", i,
                      (long long)other);
            cr_assert(d1 <= 0.1 * d2, "query %d: copy at %g, next image at %g", i, d1, d2);
        } else {
            cr_assert_eq(n0, i);
            cr_assert(d1 > 0, "query %d: a second image at distance 0 (fc7 does not tell them "
                      "apart)", i);
        }
        for (int j = 1; j < 6; j++)
            cr_assert_leq(json_real_value(json_object_get(json_array_get(nb, (size_t)j - 1),
                                                          "distance")),
                          json_real_value(json_object_get(json_array_get(nb, (size_t)j),
                                                          "distance")),
                          "row %d ascending", i);
    }
    json_decref(rows);
    int w, h, ch;
    uint8_t *px = read_png(png, &w, &h, &ch);
    cr_assert_eq(w, 7 * SIDE + 6 * 2 + 6, "a query column and six neighbours");
    cr_assert_eq(h, Q * SIDE + (Q - 1) * 2);
    free(px);
    fixture_free(&f);
}

Test(figures_cmd, neighbours_agree_with_the_features_file, .timeout = 60)
{
    fixture f;
    fixture_make(&f, "alexnet2012", 8);
    char png[4300], json[4300], tr[4300], te[4300];
    snprintf(png, sizeof png, "%s/fig4.png", f.dir);
    snprintf(json, sizeof json, "%s/rows.json", f.dir);
    snprintf(tr, sizeof tr, "%s/train.safetensors", f.dir);
    snprintf(te, sizeof te, "%s/test.safetensors", f.dir);
    const char *common[] = {"--data", f.data, "--cpu", "--quiet"};
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.run, common[0], common[1], common[2],
                                          common[3], "-o", tr, NULL}), 0);
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.run, common[0], common[1], common[2],
                                          common[3], "--split", "test", "-o", te, NULL}), 0);
    cr_assert_eq(run_cmd(train_neighbours_main,
                         (const char *[]){"neighbours", f.run, common[0], common[1], common[2],
                                          common[3], "--queries", "3", "--seed", "7", "--json",
                                          json, "-o", png, NULL}), 0);
    tt_st a, b;
    tt_st_open(&a, tr);
    tt_st_open(&b, te);
    int nd;
    int64_t sh[8];
    size_t nb;
    const float *xt = tt_st_tensor(&a, "features", "F32", &nd, sh, &nb);
    size_t dim = (size_t)sh[1];
    const float *xq = tt_st_tensor(&b, "features", "F32", &nd, sh, &nb);
    cr_assert_eq((size_t)sh[1], dim);
    json_t *rows = load_rows(json, 3, 6);
    int64_t prev = -1;
    char err[512];
    data_source *src = data_open_idx(f.data, 1, err, sizeof err);
    cr_assert_not_null(src, "%s", err);
    for (int i = 0; i < 3; i++) {
        json_t *row = json_array_get(rows, (size_t)i);
        int64_t q = jint(row, "index");
        cr_assert(q > prev && q < N_TEST, "queries drawn ascending from the test split");
        prev = q;
        /* the brute-force top 6 from the files */
        double d[N_TRAIN];
        int order[N_TRAIN];
        for (int t = 0; t < N_TRAIN; t++) {
            double s = 0;
            for (size_t u = 0; u < dim; u++) {
                float x, y;
                memcpy(&x, (const char *)xt + (t * dim + u) * 4, 4);
                memcpy(&y, (const char *)xq + (q * dim + u) * 4, 4);
                s += ((double)x - y) * ((double)x - y);
            }
            d[t] = s;
            order[t] = t;
        }
        for (int x = 1; x < N_TRAIN; x++) /* stable insertion sort: ties keep the lower index */
            for (int y = x; y > 0 && d[order[y]] < d[order[y - 1]]; y--) {
                int tmp = order[y];
                order[y] = order[y - 1];
                order[y - 1] = tmp;
            }
        json_t *nbs = json_object_get(row, "neighbours");
        for (int j = 0; j < 6; j++) {
            json_t *e = json_array_get(nbs, (size_t)j);
            cr_assert_eq(jint(e, "index"), order[j], "query %lld neighbour %d", (long long)q, j);
            cr_assert_eq(jint(e, "label"), data_label(src, order[j]));
            cr_assert_eq(json_real_value(json_object_get(e, "distance")), sqrt(d[order[j]]));
        }
    }
    data_close(src);
    json_decref(rows);
    tt_st_close(&a);
    tt_st_close(&b);
    fixture_free(&f);
}

Test(figures_cmd, outputs_that_are_inputs_are_refused, .timeout = 60)
{
    fixture f;
    fixture_make(&f, "alexnet2012", 8);
    struct stat before, after;
    cr_assert_eq(stat(f.ckpt, &before), 0);
    char in_data[4300], in_run[4300], ok[4300];
    snprintf(in_data, sizeof in_data, "%s/x.png", f.data);
    snprintf(in_run, sizeof in_run, "%s/x.png", f.run);
    snprintf(ok, sizeof ok, "%s/ok.png", f.dir);
    /* the checkpoint itself */
    cr_assert_eq(run_cmd(train_filters_main, (const char *[]){"filters", f.ckpt, "-o", f.ckpt,
                                                              NULL}), 2);
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.ckpt, "--data", f.data, "--cpu", "-o",
                                          f.ckpt, NULL}), 2);
    /* inside the run folder given as CKPT, or inside --data */
    cr_assert_eq(run_cmd(train_filters_main, (const char *[]){"filters", f.run, "-o", in_run,
                                                              NULL}), 2);
    cr_assert_eq(run_cmd(train_neighbours_main,
                         (const char *[]){"neighbours", f.run, "--data", f.data, "--cpu", "-o",
                                          in_data, NULL}), 2);
    cr_assert_eq(run_cmd(train_neighbours_main,
                         (const char *[]){"neighbours", f.run, "--data", f.data, "--cpu", "-o", ok,
                                          "--json", f.ckpt, NULL}), 2);
    cr_assert_eq(run_cmd(train_neighbours_main,
                         (const char *[]){"neighbours", f.run, "--data", f.data, "--cpu", "-o", ok,
                                          "--json", ok, NULL}), 2);
    /* a layer the net lacks, too many queries, an offset past the end: usage errors */
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.run, "--data", f.data, "--cpu", "-o", ok,
                                          "--layer", "fc9", NULL}), 2);
    cr_assert_eq(run_cmd(train_features_main,
                         (const char *[]){"features", f.run, "--data", f.data, "--cpu", "-o", ok,
                                          "--offset", "40", NULL}), 2);
    cr_assert_eq(run_cmd(train_neighbours_main,
                         (const char *[]){"neighbours", f.run, "--data", f.data, "--cpu", "-o", ok,
                                          "--queries", "13", NULL}), 2);
    /* not a checkpoint: a failure, not a crash */
    char idx[4300];
    snprintf(idx, sizeof idx, "%s/train-labels-idx1-ubyte.gz", f.data);
    cr_assert_eq(run_cmd(train_filters_main, (const char *[]){"filters", idx, "-o", ok, NULL}), 1);
    cr_assert_eq(stat(f.ckpt, &after), 0);
    cr_assert(before.st_size == after.st_size && before.st_mtime == after.st_mtime,
              "the checkpoint was touched");
    cr_assert_neq(access(in_run, F_OK), 0);
    cr_assert_neq(access(in_data, F_OK), 0);
    cr_assert_neq(access(ok, F_OK), 0);
    fixture_free(&f);
}

Test(figures_cmd, nearest_offer_keeps_the_k_smallest_first_come_on_ties)
{
    double d[3];
    int64_t i[3];
    int n = 0;
    const double in[] = {5, 2, 2, 9, 1, 2, 0.5};
    for (int k = 0; k < 7; k++) train_nearest_offer(d, i, &n, 3, in[k], k);
    cr_assert_eq(n, 3);
    cr_assert(d[0] == 0.5 && i[0] == 6);
    cr_assert(d[1] == 1 && i[1] == 4);
    cr_assert(d[2] == 2 && i[2] == 1, "the first 2 offered stays: %g %lld", d[2], (long long)i[2]);
}
