/* test_figures: the Figure 3 mosaic (one tile per kernel, each scaled to its own range,
 * tower 0's band above tower 1's) and the Figure 4 tile grid, and the PNG they are written
 * as, read back with libpng. */
#include <criterion/criterion.h>

#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/train.h"

/* Counts the tiles of a mosaic: a tile is a zoom-aligned block whose pixels are not the
 * white gap; each must reach both 0 and 255 (its own range). */
Test(figures, mosaic_has_one_tile_per_kernel_each_at_full_range)
{
    enum { T = 2, O = 48, C = 3, K = 11, COLS = 8, ZOOM = 3 };
    float *w[T];
    for (int t = 0; t < T; t++) {
        w[t] = malloc(sizeof(float) * O * C * K * K);
        for (int i = 0; i < O * C * K * K; i++) /* kernels of very different scales */
            w[t][i] = (float)((i % 97) - 40) * (float)(1 + i / (C * K * K)) * (t ? -1.f : 1.f);
    }
    train_picture p;
    char err[256];
    cr_assert_eq(train_filters_mosaic(&p, (const float *const *)w, T, O, C, K, COLS, ZOOM, err,
                                      sizeof err), 0, "%s", err);
    int tile = K * ZOOM, rows = O / COLS, band = rows * tile + (rows - 1);
    cr_assert_eq(p.channels, 3);
    cr_assert_eq(p.w, COLS * tile + COLS - 1);
    cr_assert_eq(p.h, T * band + 4);
    int tiles = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < COLS; c++) {
                int x0 = c * (tile + 1), y0 = t * (band + 4) + r * (tile + 1);
                int lo = 255, hi = 0;
                for (int y = 0; y < tile; y++)
                    for (int x = 0; x < tile * 3; x++) {
                        int v = p.px[(size_t)(y0 + y) * p.w * 3 + (size_t)x0 * 3 + x];
                        lo = v < lo ? v : lo;
                        hi = v > hi ? v : hi;
                    }
                tiles += lo == 0 && hi == 255;
            }
    cr_assert_eq(tiles, T * O);
    /* the gap between the bands is white */
    for (int x = 0; x < p.w * 3; x++) cr_assert_eq(p.px[(size_t)(band + 1) * p.w * 3 + x], 255);
    /* a 1-channel net draws grey */
    train_picture g;
    cr_assert_eq(train_filters_mosaic(&g, (const float *const *)w, 1, 8, 1, K, 4, 1, err,
                                      sizeof err), 0);
    cr_assert_eq(g.channels, 1);
    cr_assert_eq(g.w, 4 * K + 3);
    train_picture_free(&g);
    /* PNG round trip */
    char path[] = "/tmp/tt_fig_XXXXXX.png";
    int fd = mkstemps(path, 4);
    cr_assert(fd >= 0);
    cr_assert_eq(train_picture_write_png(&p, path, err, sizeof err), 0, "%s", err);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path));
    img.format = PNG_FORMAT_RGB;
    uint8_t *back = malloc(PNG_IMAGE_SIZE(img));
    cr_assert(png_image_finish_read(&img, NULL, back, 0, NULL));
    cr_assert_eq((int)img.width, p.w);
    cr_assert_eq((int)img.height, p.h);
    cr_assert_eq(memcmp(back, p.px, (size_t)p.w * p.h * 3), 0);
    free(back);
    unlink(path);
    close(fd);
    train_picture_free(&p);
    for (int t = 0; t < T; t++) free(w[t]);
}

Test(figures, tile_grid_places_every_tile)
{
    enum { R = 2, C = 7, S = 5 };
    uint8_t tiles[R * C * S * S * 3];
    for (int i = 0; i < R * C; i++) memset(tiles + i * S * S * 3, i, S * S * 3);
    train_picture p;
    char err[256];
    cr_assert_eq(train_tile_grid(&p, tiles, R, C, S, err, sizeof err), 0);
    cr_assert_eq(p.w, C * S + (C - 1) * 2 + 6);
    cr_assert_eq(p.h, R * S + 2);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            int x = c * (S + 2) + (c ? 6 : 0) + 2, y = r * (S + 2) + 2;
            cr_assert_eq(p.px[((size_t)y * p.w + x) * 3], r * C + c);
        }
    train_picture_free(&p);
    cr_assert_eq(train_tile_grid(&p, tiles, 0, C, S, err, sizeof err), -1);
}
