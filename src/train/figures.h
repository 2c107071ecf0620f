/* figures: the paper's Figures 3 and 4. The pictures as pixels and PNG files (figures.c):
 * conv1's kernels as a mosaic (one band per tower), and rows of images (a query and its
 * nearest neighbours); and the subcommands that gather their data from a checkpoint:
 * `twotower filters` (filters.c), `twotower features` and `twotower neighbours`
 * (features.c). Part of src/train (included by train.h). */
#ifndef TRAIN_FIGURES_H
#define TRAIN_FIGURES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An 8-bit image, rows top to bottom, channels interleaved (1 grey or 3 RGB). */
typedef struct {
    int w, h, channels;
    uint8_t *px; /* (h, w, channels) */
} train_picture;

void train_picture_free(train_picture *p);

/* Writes p as a PNG at path through the crash-safe writer (base_out). 0, or -1 with err. */
int train_picture_write_png(const train_picture *p, const char *path, char *err,
                            size_t errlen);

/* conv1's kernels as the paper's Figure 3 draws them: w[t] holds tower t's weights
 * (out_ch, in_ch, k, k) as float; each kernel is scaled to its own range (min -> 0,
 * max -> 255; a constant kernel is mid grey), drawn zoom x zoom pixels per tap, `cols`
 * kernels a row with a 1-pixel gap; tower 0's kernels above tower 1's, the bands
 * separated by a 4-pixel gap. in_ch 3 draws colour, any other in_ch draws channel 0's
 * grey (1-channel nets). 0, or -1 with err (out of memory, bad sizes). */
int train_filters_mosaic(train_picture *out, const float *const *w, int towers, int out_ch,
                         int in_ch, int k, int cols, int zoom, char *err, size_t errlen);

/* A grid of rows x cols tiles, each side x side x 3 uint8 (row-major tiles, tile (r, c)
 * at tiles + (r * cols + c) * side * side * 3), with a 2-pixel gap, and a 6-pixel gap
 * after the first column (the queries of Figure 4). */
int train_tile_grid(train_picture *out, const uint8_t *tiles, int rows, int cols, int side,
                    char *err, size_t errlen);

/* The running k nearest of one query (Figure 4's six): dist[0..*filled) ascending with
 * idx their images. Offers (d, i): kept when fewer than k are held or d is below the
 * farthest held; an equal distance keeps the image offered first (the lower index, as the
 * images stream in order). */
void train_nearest_offer(double *dist, int64_t *idx, int *filled, int k, double d, int64_t i);

/* `twotower filters CKPT -o PNG [--cols N] [--zoom N]`: Figure 3 from a checkpoint (a .ttc
 * file, a checkpoint folder or a run folder). argv[0] is "filters". Returns the exit code
 * (0 ok, 1 failed, 2 usage). */
int train_filters_main(int argc, char **argv);

/* `twotower features CKPT -o OUT.safetensors [--data DIR] [--split train|test]
 * [--layer fc7] [--offset N] [--limit N] [--batch N] [placement]`: a layer's activations
 * (model_get_activations) of a split's images in the evaluation's center crop, streamed
 * into OUT with their labels and indices. argv[0] is "features". */
int train_features_main(int argc, char **argv);

/* `twotower neighbours CKPT -o PNG [--json F] [--data DIR] [--queries N] [--seed S]
 * [--query-split test|train] [--layer fc7] [--neighbours 6] [--limit N] [placement]`:
 * Figure 4, the training images nearest each query by Euclidean distance of the layer's
 * activations, found streaming the training set. argv[0] is "neighbours". */
int train_neighbours_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
