/* imgfix: image fixtures for the data tests and tools/make_image_folder: PNGs in every
 * mode written through libpng from given samples (so a test knows the exact pixels),
 * JPEGs through libjpeg, the bad files prep must survive, and a whole ImageNet-style
 * folder mixing them. Not part of the twotower libraries. */
#ifndef IMGFIX_H
#define IMGFIX_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int w, h;
    int color_type;             /* PNG_COLOR_TYPE_* */
    int bit_depth;              /* 1, 2, 4, 8, 16 as the type allows */
    int interlace;              /* 1: Adam7 */
    const uint16_t *samples;    /* (h, w, channels) in 0..2^depth-1; palette: indices */
    int npalette;
    const uint8_t *palette;     /* (npalette, 3) */
    int ntrns;
    const uint8_t *trns_alpha;  /* (ntrns) alpha of palette entries 0..ntrns-1 */
    int has_trns_color;         /* grey/RGB tRNS: this colour is fully transparent */
    uint16_t trns_grey, trns_rgb[3];
} imgfix_png;

/* Channels of a PNG colour type (palette: 1). */
int imgfix_png_channels(int color_type);
/* Encodes spec into *buf (malloc'd), *n bytes. 0 or -1 (with a message on stderr). */
int imgfix_png_encode(const imgfix_png *spec, uint8_t **buf, size_t *n);
/* RGB (h, w, 3) -> JPEG; comps 1 writes greyscale from the R channel. */
int imgfix_jpeg_encode(const uint8_t *rgb, int w, int h, int comps, int quality,
                       int progressive, uint8_t **buf, size_t *n);
int imgfix_write_file(const char *path, const uint8_t *buf, size_t n);

/* A PNG whose IHDR says w x h (colour type 2, 8 bit) followed by one tiny IDAT and
 * IEND, every CRC right: zero sizes and 100000x100000 bombs. */
int imgfix_png_lying_header(uint32_t w, uint32_t h, uint8_t **buf, size_t *n);

/* The kinds of bad file prep must skip (each with a reason line). */
enum {
    IMGFIX_BAD_TRUNCATED_PNG = 0,
    IMGFIX_BAD_CRC_PNG = 1,
    IMGFIX_BAD_ZERO_WIDTH_PNG = 2,
    IMGFIX_BAD_HUGE_PNG = 3,
    IMGFIX_BAD_TEXT_AS_PNG = 4,
    IMGFIX_BAD_EMPTY = 5,
    IMGFIX_BAD_UNREADABLE = 6, /* a dangling symlink: open() fails even for root */
    IMGFIX_BAD_TRUNCATED_JPEG = 7,
    IMGFIX_BAD_TEXT_AS_JPEG = 8,
    IMGFIX_BAD_KINDS = 9
};
extern const char *const imgfix_bad_names[IMGFIX_BAD_KINDS];
/* Writes bad file `kind` at path. 0 or -1. */
int imgfix_write_bad(const char *path, int kind);

/* A smooth w x h RGB test picture whose colours depend on `tone` (class) and `seed`. */
void imgfix_picture(uint8_t *rgb, int w, int h, int tone, uint64_t seed);

/* An ImageNet-style folder: dir/class_XX/ with per_class good images each, mixing PNG
 * modes (RGB, palette, grey 16-bit, RGBA, interlaced) and JPEG (baseline, progressive,
 * greyscale) at various sizes and aspect ratios; with_bad adds one file of every bad
 * kind to class 0 (names bad_<kind>.png/.jpg). *good and *bad receive the counts. */
int imgfix_make_folder(const char *dir, int classes, int per_class, uint64_t seed,
                       int with_bad, int *good, int *bad);

#endif
