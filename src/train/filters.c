/* filters.c: `twotower filters`, the paper's Figure 3: the first layer's kernels of a
 * checkpoint drawn as a mosaic, tower 0's band above tower 1's, each kernel scaled to its
 * own range (train_filters_mosaic). Reads the checkpoint's parameters only: no model, no
 * device, no data. */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/figures.h"

typedef struct {
    const char *out;
    int cols, zoom;
} filters_opts;

static void filters_defaults(void *p)
{
    filters_opts *o = p;
    *o = (filters_opts){.out = NULL, .cols = 16, .zoom = 4};
}

static const base_flag filters_flags[] = {
    {BASE_FLAG_STR("out", filters_opts, out, "PNG", "the picture to write (required)"),
     .short_name = 'o'},
    {BASE_FLAG_INT("cols", filters_opts, cols, 1, 1024, "N",
                   "kernels a row (fewer when a tower has fewer)")},
    {BASE_FLAG_INT("zoom", filters_opts, zoom, 1, 64, "N", "pixels a kernel tap")},
    {0}};

static const base_flags_cmd filters_cmd = {
    .name = "filters",
    .synopsis = "CKPT -o PNG [flags]",
    .about = "Draws the first layer's kernels (conv1) of a checkpoint (a .ttc file, a checkpoint\n"
             "folder or a run folder: its newest checkpoint) as the paper's Figure 3: tower 0's\n"
             "kernels above tower 1's, a white gap between them. Each kernel is scaled to its\n"
             "own range for display (its lowest weight black, its highest white, its channels\n"
             "together), so brightness does not compare across kernels. Colour for a net of 3\n"
             "input channels, grey for 1 (fmnist). -o is refused (exit 2) when it is CKPT, lies\n"
             "in the run or checkpoint folder CKPT names (or a run's ckpt/), or is not a\n"
             "regular file.\n",
    .flags = filters_flags,
    .min_pos = 1,
    .max_pos = 1,
    .opts_size = sizeof(filters_opts),
    .defaults = filters_defaults};

/* The mosaic of conv1 of the checkpoint ckpt; info gets a line on what it shows. 0, or -1
 * with err. */
static int filters_picture(const char *ckpt, int cols, int zoom, train_picture *pic,
                           char *info, size_t infolen, char *err, size_t errlen)
{
    char file[4096];
    train_ckpt_meta meta;
    tower_plan plan;
    real *host[2];
    if (train_ckpt_read_params(ckpt, file, sizeof file, &meta, &plan, host, err, errlen))
        return -1;
    const tower_layer_spec *row = tower_plan_row(&plan, 0);
    const tower_layer_shape *L = &plan.layer[0];
    int T = plan.cfg.towers, rc = -1, C = L->sources * L->in_ch; /* conv1 reads the image */
    float *w[2] = {NULL, NULL};
    if (row->kind != TOWER_CONV) {
        base_errf(err, errlen, "%s: the net's first layer (%s) is not a convolution: it has "
                  "no kernels to draw", file, row->name);
        goto done;
    }
    /* the mosaic takes float weights whatever `real` is */
    for (int t = 0; t < T; t++) {
        if (!(w[t] = malloc(sizeof(float) * L->w_count))) {
            base_errf(err, errlen, "out of memory for %zu weights", L->w_count);
            goto done;
        }
        for (size_t i = 0; i < L->w_count; i++) w[t][i] = (float)host[t][L->w_off + i];
    }
    if (train_filters_mosaic(pic, (const float *const *)w, T, L->out_ch, C, row->k, cols,
                             zoom, err, errlen))
        goto done;
    snprintf(info, infolen, "%s of %s (net %s, step %lld): %d kernels (%d tower%s x %d) of "
             "%dx%dx%d, %s", row->name, file, tower_config_net(&plan.cfg)->name,
             (long long)meta.model_step, T * L->out_ch, T, T > 1 ? "s" : "", L->out_ch, row->k,
             row->k, C, C == 3 ? "in colour" : "channel 0 in grey");
    rc = 0;
done:
    free(w[0]);
    free(w[1]);
    free(host[0]);
    free(host[1]);
    return rc;
}

int train_filters_main(int argc, char **argv)
{
    filters_opts o;
    base_flags_out fo;
    int frc = base_flags_cli(&filters_cmd, &o, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    const char *ckpt = fo.pos[0];
    char err[1536], info[4600];
    if (!o.out) {
        fprintf(stderr, "twotower filters: -o PNG is required (see twotower filters --help)\n");
        return 2;
    }
    if (train_check_out(ckpt, NULL, o.out, "-o", err, sizeof err)) {
        fprintf(stderr, "twotower filters: %s\n", err);
        return 2;
    }
    train_picture pic;
    if (filters_picture(ckpt, o.cols, o.zoom, &pic, info, sizeof info, err, sizeof err)) {
        fprintf(stderr, "twotower filters: %s\n", err);
        return 1;
    }
    int rc = train_picture_write_png(&pic, o.out, err, sizeof err);
    if (rc)
        fprintf(stderr, "twotower filters: %s\n", err);
    else
        printf("twotower filters: wrote %s (%d x %d pixels): %s, each scaled to its own "
               "range\n", o.out, pic.w, pic.h, info);
    train_picture_free(&pic);
    return rc ? 1 : 0;
}
