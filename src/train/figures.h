/* figures: the pictures of the paper's Figures 3 and 4 as pixels and PNG files: conv1's
 * kernels as a mosaic (one band per tower), and rows of images (a query and its nearest
 * neighbours). Pure rendering; the subcommands that gather the data are filters.c and
 * features.c. Part of src/train (included by train.h). */
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

#ifdef __cplusplus
}
#endif
#endif
