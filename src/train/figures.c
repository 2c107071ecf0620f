/* figures.c: pixel mosaics for Figures 3 and 4 and their PNG output (figures.h). The
 * PNG is encoded in memory with libpng's simplified API and written through base_out,
 * like every other output of twotower. */
#include "train/figures.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

void train_picture_free(train_picture *p)
{
    free(p->px);
    memset(p, 0, sizeof *p);
}

static int picture_alloc(train_picture *p, int w, int h, int channels, uint8_t fill, char *err,
                         size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (w < 1 || h < 1 || w > 65536 || h > 65536) {
        base_errf(err, errlen, "picture of %d x %d pixels: out of range", w, h);
        return -1;
    }
    size_t n = (size_t)w * h * channels;
    p->px = malloc(n);
    if (!p->px) {
        base_errf(err, errlen, "out of memory for a %d x %d picture", w, h);
        return -1;
    }
    memset(p->px, fill, n);
    p->w = w;
    p->h = h;
    p->channels = channels;
    return 0;
}

int train_picture_write_png(const train_picture *p, const char *path, char *err,
                            size_t errlen)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)p->w;
    img.height = (png_uint_32)p->h;
    img.format = p->channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    png_alloc_size_t n = 0;
    /* first call sizes the buffer, second encodes */
    if (!png_image_write_to_memory(&img, NULL, &n, 0, p->px, 0, NULL)) {
        base_errf(err, errlen, "%s: PNG encoding failed: %s", path, img.message);
        return -1;
    }
    void *buf = malloc(n);
    if (!buf) {
        base_errf(err, errlen, "%s: out of memory for %zu PNG bytes", path, (size_t)n);
        return -1;
    }
    if (!png_image_write_to_memory(&img, buf, &n, 0, p->px, 0, NULL)) {
        base_errf(err, errlen, "%s: PNG encoding failed: %s", path, img.message);
        free(buf);
        return -1;
    }
    int rc = base_write_file(path, "picture", buf, (size_t)n, err, errlen);
    free(buf);
    return rc;
}

int train_filters_mosaic(train_picture *out, const float *const *w, int towers, int out_ch,
                         int in_ch, int k, int cols, int zoom, char *err, size_t errlen)
{
    if (towers < 1 || out_ch < 1 || in_ch < 1 || k < 1 || cols < 1 || zoom < 1) {
        base_errf(err, errlen, "filters: bad sizes (towers %d, kernels %d, channels %d, "
                               "side %d)", towers, out_ch, in_ch, k);
        return -1;
    }
    int ch = in_ch == 3 ? 3 : 1;
    if (cols > out_ch) cols = out_ch;
    int rows = (out_ch + cols - 1) / cols, tile = k * zoom, gap = 1, band_gap = 4;
    int W = cols * tile + (cols - 1) * gap;
    int band_h = rows * tile + (rows - 1) * gap;
    int H = towers * band_h + (towers - 1) * band_gap;
    if (picture_alloc(out, W, H, ch, 255, err, errlen)) return -1; /* white gaps */
    size_t taps = (size_t)k * k;
    for (int t = 0; t < towers; t++)
        for (int o = 0; o < out_ch; o++) {
            const float *kw = w[t] + (size_t)o * in_ch * taps;
            size_t n = (size_t)(ch == 3 ? 3 : 1) * taps;
            float lo = kw[0], hi = kw[0];
            for (size_t i = 1; i < n; i++) {
                if (kw[i] < lo) lo = kw[i];
                if (kw[i] > hi) hi = kw[i];
            }
            double scale = hi > lo ? 255.0 / ((double)hi - lo) : 0;
            int x0 = (o % cols) * (tile + gap);
            int y0 = t * (band_h + band_gap) + (o / cols) * (tile + gap);
            for (int y = 0; y < k; y++)
                for (int x = 0; x < k; x++)
                    for (int c = 0; c < ch; c++) {
                        float v = kw[(size_t)c * taps + (size_t)y * k + x];
                        double s = hi > lo ? ((double)v - lo) * scale : 127.5;
                        uint8_t b = (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s + 0.5);
                        for (int zy = 0; zy < zoom; zy++)
                            for (int zx = 0; zx < zoom; zx++) {
                                size_t at = ((size_t)(y0 + y * zoom + zy) * W +
                                             (size_t)(x0 + x * zoom + zx)) * ch + c;
                                out->px[at] = b;
                            }
                    }
        }
    return 0;
}

int train_tile_grid(train_picture *out, const uint8_t *tiles, int rows, int cols, int side,
                    char *err, size_t errlen)
{
    if (rows < 1 || cols < 1 || side < 1) {
        base_errf(err, errlen, "tile grid: bad sizes (%d x %d tiles of %d)", rows, cols, side);
        return -1;
    }
    int gap = 2, first_gap = cols > 1 ? 6 : 0;
    int W = cols * side + (cols - 1) * gap + first_gap, H = rows * side + (rows - 1) * gap;
    if (picture_alloc(out, W, H, 3, 255, err, errlen)) return -1;
    size_t tb = (size_t)side * side * 3;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint8_t *src = tiles + ((size_t)r * cols + c) * tb;
            int x0 = c * (side + gap) + (c > 0 ? first_gap : 0), y0 = r * (side + gap);
            for (int y = 0; y < side; y++)
                memcpy(out->px + ((size_t)(y0 + y) * W + x0) * 3, src + (size_t)y * side * 3,
                       (size_t)side * 3);
        }
    return 0;
}
