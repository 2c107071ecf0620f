/* test_images: every PNG mode against the pixels it must give (fixtures written by
 * libpng from known samples), JPEG decoding, each kind of bad file, and the resize
 * against the slow reference. */
#include <png.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "helpers.h"

static uint32_t lcg = 1;
static uint16_t rnd(uint32_t mod)
{
    lcg = lcg * 1664525u + 1013904223u;
    return (uint16_t)((lcg >> 8) % mod);
}

static uint8_t scale8(uint32_t v, int depth)
{
    if (depth == 16)
        return (uint8_t)floor(v / 257.0 + 0.5);
    return (uint8_t)(v * 255u / ((1u << depth) - 1u));
}

/* The expected RGB of a fixture, straight from the PNG spec and our alpha rule. */
static void expected_rgb(const imgfix_png *s, uint8_t *out)
{
    int ch = imgfix_png_channels(s->color_type);
    for (int p = 0; p < s->w * s->h; p++) {
        const uint16_t *v = s->samples + (size_t)p * ch;
        uint32_t rgb[3], a = 255;
        switch (s->color_type) {
        case PNG_COLOR_TYPE_PALETTE:
            for (int c = 0; c < 3; c++)
                rgb[c] = s->palette[3 * v[0] + c];
            if (v[0] < s->ntrns)
                a = s->trns_alpha[v[0]];
            break;
        case PNG_COLOR_TYPE_GRAY:
            rgb[0] = rgb[1] = rgb[2] = scale8(v[0], s->bit_depth);
            if (s->has_trns_color && v[0] == s->trns_grey)
                a = 0;
            break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
            rgb[0] = rgb[1] = rgb[2] = scale8(v[0], s->bit_depth);
            a = scale8(v[1], s->bit_depth);
            break;
        case PNG_COLOR_TYPE_RGB:
            for (int c = 0; c < 3; c++)
                rgb[c] = scale8(v[c], s->bit_depth);
            if (s->has_trns_color && v[0] == s->trns_rgb[0] && v[1] == s->trns_rgb[1] &&
                v[2] == s->trns_rgb[2])
                a = 0;
            break;
        default: /* RGBA */
            for (int c = 0; c < 3; c++)
                rgb[c] = scale8(v[c], s->bit_depth);
            a = scale8(v[3], s->bit_depth);
        }
        for (int c = 0; c < 3; c++)
            out[3 * p + c] = (uint8_t)((rgb[c] * a + 255 * (255 - a) + 127) / 255);
    }
}

static void check_mode(int ct, int depth, int interlace, int trns)
{
    imgfix_png s = {.w = 13, .h = 7, .color_type = ct, .bit_depth = depth,
                    .interlace = interlace};
    int ch = imgfix_png_channels(ct);
    uint32_t maxv = ct == PNG_COLOR_TYPE_PALETTE ? (1u << depth) : (1u << depth);
    uint16_t *samples = malloc(sizeof *samples * 13 * 7 * ch);
    uint8_t pal[256 * 3], ta[256];
    for (int i = 0; i < 13 * 7 * ch; i++)
        samples[i] = rnd(maxv);
    /* make the extremes and the tRNS colour certainly appear */
    samples[0] = 0;
    samples[ch] = (uint16_t)(maxv - 1);
    s.samples = samples;
    if (ct == PNG_COLOR_TYPE_PALETTE) {
        s.npalette = 1 << depth;
        for (int i = 0; i < 3 * s.npalette; i++)
            pal[i] = (uint8_t)rnd(256);
        s.palette = pal;
        if (trns) {
            s.ntrns = s.npalette > 3 ? s.npalette / 2 : 1;
            for (int i = 0; i < s.ntrns; i++)
                ta[i] = (uint8_t)rnd(256);
            s.trns_alpha = ta;
        }
    } else if (trns) {
        s.has_trns_color = 1;
        s.trns_grey = samples[0];
        for (int c = 0; c < 3; c++)
            s.trns_rgb[c] = samples[c];
    }
    uint8_t *buf;
    size_t n;
    cr_assert_eq(imgfix_png_encode(&s, &buf, &n), 0);
    uint8_t *rgb;
    int w, h;
    char err[256] = "";
    int rc = data_png_decode(buf, n, NULL, &rgb, &w, &h, err, sizeof err);
    cr_assert_eq(rc, 0, "type %d depth %d interlace %d trns %d: %s", ct, depth, interlace, trns,
                 err);
    cr_assert(w == 13 && h == 7);
    uint8_t want[13 * 7 * 3];
    expected_rgb(&s, want);
    for (int i = 0; i < 13 * 7 * 3; i++)
        cr_assert_eq(rgb[i], want[i],
                     "type %d depth %d interlace %d trns %d: pixel %d channel %d is %d, want %d",
                     ct, depth, interlace, trns, i / 3, i % 3, rgb[i], want[i]);
    free(rgb);
    free(buf);
    free(samples);
}

Test(images, png_every_mode)
{
    for (int il = 0; il < 2; il++) {
        static const int gd[] = {1, 2, 4, 8, 16};
        for (int k = 0; k < 5; k++) {
            check_mode(PNG_COLOR_TYPE_GRAY, gd[k], il, 0);
            check_mode(PNG_COLOR_TYPE_GRAY, gd[k], il, 1);
        }
        for (int k = 0; k < 4; k++) {
            check_mode(PNG_COLOR_TYPE_PALETTE, gd[k], il, 0);
            check_mode(PNG_COLOR_TYPE_PALETTE, gd[k], il, 1);
        }
        for (int d = 8; d <= 16; d += 8) {
            check_mode(PNG_COLOR_TYPE_GRAY_ALPHA, d, il, 0);
            check_mode(PNG_COLOR_TYPE_RGB, d, il, 0);
            check_mode(PNG_COLOR_TYPE_RGB, d, il, 1);
            check_mode(PNG_COLOR_TYPE_RGB_ALPHA, d, il, 0);
        }
    }
}

static void jpeg_roundtrip(int comps, int progressive)
{
    int w = 96, h = 64;
    uint8_t *src = malloc((size_t)w * h * 3);
    imgfix_picture(src, w, h, 2, 3);
    uint8_t *buf, *rgb;
    size_t n;
    int ow, oh;
    char err[256] = "";
    cr_assert_eq(imgfix_jpeg_encode(src, w, h, comps, 95, progressive, &buf, &n), 0);
    cr_assert_eq(data_jpeg_decode(buf, n, NULL, 0, &rgb, &ow, &oh, err, sizeof err), 0, "%s",
                 err);
    cr_assert(ow == w && oh == h);
    double sad = 0;
    int maxd = 0;
    for (int i = 0; i < w * h * 3; i++) {
        int want = comps == 1 ? src[(i / 3) * 3] : src[i];
        int d = abs((int)rgb[i] - want);
        sad += d;
        maxd = d > maxd ? d : maxd;
        if (comps == 1)
            cr_assert_eq(rgb[i], rgb[(i / 3) * 3], "grey JPEG must give R = G = B");
    }
    cr_assert_lt(sad / (w * h * 3), 2.0, "mean error %.2f", sad / (w * h * 3));
    cr_assert_lt(maxd, 24);
    free(src);
    free(buf);
    free(rgb);
}

Test(images, jpeg_colour_grey_progressive)
{
    jpeg_roundtrip(3, 0);
    jpeg_roundtrip(1, 0);
    jpeg_roundtrip(3, 1);
}

Test(images, jpeg_dct_scaling_keeps_short_side)
{
    int w = 1100, h = 800;
    uint8_t *src = malloc((size_t)w * h * 3), *buf, *rgb;
    size_t n;
    int ow, oh;
    char err[256];
    imgfix_picture(src, w, h, 1, 1);
    cr_assert_eq(imgfix_jpeg_encode(src, w, h, 3, 90, 0, &buf, &n), 0);
    cr_assert_eq(data_jpeg_decode(buf, n, NULL, 256, &rgb, &ow, &oh, err, sizeof err), 0);
    cr_assert(ow == 550 && oh == 400, "got %dx%d", ow, oh); /* 1/2: 1/4 would give 200 < 256 */
    free(rgb);
    /* and the full decode path through the resize stays close to resizing the source */
    uint8_t *img = malloc(DATA_IMAGE_BYTES), *ref = malloc(DATA_IMAGE_BYTES);
    cr_assert_eq(data_image_decode(buf, n, NULL, img, err, sizeof err), 0, "%s", err);
    void *ws = malloc(data_resize_workspace(w, h, 3, DATA_SIZE));
    data_resize_center(ref, DATA_SIZE, src, w, h, 3, ws);
    double sad = 0;
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
        sad += abs((int)img[i] - ref[i]);
    cr_assert_lt(sad / DATA_IMAGE_BYTES, 2.0);
    free(ws);
    free(img);
    free(ref);
    free(src);
    free(buf);
}

/* ---- bad files ----------------------------------------------------------------------- */

static void expect_bad(int kind, const char *why)
{
    char *dir = th_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, imgfix_bad_names[kind]);
    cr_assert_eq(imgfix_write_bad(path, kind), 0);
    uint8_t *buf = NULL;
    size_t n = 0;
    char err[512] = "";
    int rc = data_read_file(path, "image", (size_t)64 << 20, &buf, &n, err, sizeof err);
    if (rc == 0) {
        uint8_t *dst = malloc(DATA_IMAGE_BYTES);
        rc = data_image_decode(buf, n, NULL, dst, err, sizeof err);
        free(dst);
    }
    cr_assert_neq(rc, 0, "%s must be refused", imgfix_bad_names[kind]);
    cr_assert(strstr(err, why) != NULL, "%s: reason \"%s\" does not say \"%s\"",
              imgfix_bad_names[kind], err, why);
    free(buf);
    th_rmrf(dir);
    free(dir);
}

Test(images, bad_files_are_refused_with_a_reason)
{
    expect_bad(IMGFIX_BAD_TRUNCATED_PNG, "truncated");
    expect_bad(IMGFIX_BAD_CRC_PNG, "CRC");
    expect_bad(IMGFIX_BAD_ZERO_WIDTH_PNG, "PNG");
    expect_bad(IMGFIX_BAD_HUGE_PNG, "PNG");
    expect_bad(IMGFIX_BAD_TEXT_AS_PNG, "bad signature");
    expect_bad(IMGFIX_BAD_EMPTY, "empty");
    expect_bad(IMGFIX_BAD_UNREADABLE, "cannot open");
    expect_bad(IMGFIX_BAD_TRUNCATED_JPEG, "truncated");
    expect_bad(IMGFIX_BAD_TEXT_AS_JPEG, "bad signature");
}

Test(images, lying_headers_are_refused_before_allocating)
{
    static const uint32_t dims[][2] = {{0, 64}, {64, 0}, {100000, 100000}, {30000, 30000},
                                       {8000, 8000}, {4000, 3000}};
    static const char *why[] = {"IHDR", "IHDR", "IHDR", "over the limit", "can hold",
                                "can hold"};
    for (int k = 0; k < 6; k++) {
        uint8_t *buf, *rgb = NULL;
        size_t n;
        int w, h;
        char err[512] = "";
        cr_assert_eq(imgfix_png_lying_header(dims[k][0], dims[k][1], &buf, &n), 0);
        int rc = data_png_decode(buf, n, NULL, &rgb, &w, &h, err, sizeof err);
        cr_assert_neq(rc, 0, "%ux%u in %zu bytes must be refused", dims[k][0], dims[k][1], n);
        cr_assert_null(rgb);
        cr_assert(strstr(err, why[k]) != NULL, "%ux%u: \"%s\"", dims[k][0], dims[k][1], err);
        free(buf);
    }
}

/* The SOF0/SOF2 frame header of a JPEG: where its height and width bytes are. */
static size_t jpeg_sof_at(const uint8_t *b, size_t n)
{
    for (size_t i = 2; i + 9 < n; i++)
        if (b[i] == 0xFF && (b[i + 1] == 0xC0 || b[i + 1] == 0xC2)) return i;
    return 0;
}

/* A JPEG whose frame header claims 8192x8192 in ~1 KB (baseline and progressive): refused
 * from the header, before libjpeg sizes buffers from it. Then a real-sized one cut by a
 * marker inside its scan: refused as missing data, not decoded as grey fill. */
Test(images, lying_and_corrupt_jpegs_are_refused)
{
    uint8_t rgb[16 * 16 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 7);
    for (int progressive = 0; progressive < 2; progressive++) {
        uint8_t *buf, *out = malloc(DATA_IMAGE_BYTES);
        size_t n;
        char err[512] = "";
        cr_assert_eq(imgfix_jpeg_encode(rgb, 16, 16, 3, 90, progressive, &buf, &n), 0);
        size_t sof = jpeg_sof_at(buf, n);
        cr_assert(sof > 0, "no SOF marker");
        buf[sof + 5] = 0x20, buf[sof + 6] = 0x00; /* height 8192 */
        buf[sof + 7] = 0x20, buf[sof + 8] = 0x00; /* width 8192 */
        int rc = data_image_decode(buf, n, NULL, out, err, sizeof err);
        cr_assert_neq(rc, 0, "8192x8192 in %zu bytes (progressive %d) must be refused", n,
                      progressive);
        cr_assert(strstr(err, "can hold") != NULL, "\"%s\"", err);
        free(buf);
        free(out);
    }
    enum { W = 512, H = 512 };
    uint8_t *big = malloc((size_t)W * H * 3), *buf, *out = malloc(DATA_IMAGE_BYTES);
    for (size_t i = 0; i < (size_t)W * H * 3; i++) big[i] = (uint8_t)((i * 2654435761u) >> 24);
    size_t n;
    char err[512] = "";
    cr_assert_eq(imgfix_jpeg_encode(big, W, H, 3, 90, 0, &buf, &n), 0);
    cr_assert_eq(data_image_decode(buf, n, NULL, out, err, sizeof err), 0, "%s", err);
    /* an EOI marker a third of the way into the scan, the rest of the file still there */
    buf[n / 3] = 0xFF, buf[n / 3 + 1] = 0xD9;
    cr_assert_neq(data_image_decode(buf, n, NULL, out, err, sizeof err), 0,
                  "a scan cut by a marker must be refused");
    cr_assert(strstr(err, "missing") != NULL, "\"%s\"", err);
    free(big), free(buf), free(out);
}

/* A FIFO with an image's name: refused as not a regular file, at once (opening it for
 * reading would otherwise wait for a writer forever). */
Test(images, fifo_is_refused_without_waiting, .timeout = 10)
{
    char *dir = th_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/fifo.png", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    uint8_t *buf = NULL;
    size_t n = 0;
    char err[512] = "";
    cr_assert_neq(data_read_file(path, "image", (size_t)1 << 20, &buf, &n, err, sizeof err), 0);
    cr_assert(strstr(err, "not a regular file") != NULL, "\"%s\"", err);
    th_rmrf(dir);
    free(dir);
}

/* ---- resize -------------------------------------------------------------------------- */

static void check_resize(int w, int h, int ch, uint32_t seed)
{
    lcg = seed;
    uint8_t *src = malloc((size_t)w * h * ch), *dst = malloc(DATA_IMAGE_BYTES);
    for (size_t i = 0; i < (size_t)w * h * ch; i++)
        src[i] = (uint8_t)rnd(256);
    void *ws = malloc(data_resize_workspace(w, h, ch, DATA_SIZE));
    data_resize_center(dst, DATA_SIZE, src, w, h, ch, ws);
    double *ref = malloc(DATA_IMAGE_BYTES * sizeof *ref);
    th_ref_resize(ref, DATA_SIZE, src, w, h, ch);
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
        cr_assert(fabs(dst[i] - ref[i]) <= 0.5 + 1e-3, "%dx%dx%d: sample %zu is %d, ref %.3f", w,
                  h, ch, i, dst[i], ref[i]);
    free(src);
    free(dst);
    free(ws);
    free(ref);
}

Test(images, resize_matches_reference, .timeout = 60)
{
    check_resize(28, 28, 1, 1);   /* Fashion-MNIST upscale */
    check_resize(300, 200, 3, 2); /* landscape shrink: center cut of 384 wide */
    check_resize(200, 333, 3, 3); /* portrait, odd */
    check_resize(1030, 700, 3, 4); /* strong shrink: wide triangle */
    check_resize(256, 256, 3, 5);
}

Test(images, resize_identity_and_center_cut)
{
    uint8_t *src = malloc((size_t)512 * 256 * 3), *dst = malloc(DATA_IMAGE_BYTES);
    lcg = 9;
    for (size_t i = 0; i < (size_t)512 * 256 * 3; i++)
        src[i] = (uint8_t)rnd(256);
    void *ws = malloc(data_resize_workspace(512, 256, 3, DATA_SIZE));
    data_resize_center(dst, DATA_SIZE, src, 512, 256, 3, ws);
    /* 512x256 is already 256 tall: the central 256 columns, untouched */
    for (int y = 0; y < 256; y++)
        cr_assert_eq(memcmp(dst + (size_t)y * 256 * 3, src + ((size_t)y * 512 + 128) * 3, 256 * 3),
                     0, "row %d", y);
    free(ws);
    /* a constant image stays exactly constant at every scale */
    free(src);
    src = malloc((size_t)256 * 1000 * 3);
    memset(src, 77, (size_t)256 * 1000 * 3);
    static const int sz[][2] = {{512, 256}, {29, 31}, {500, 375}, {256, 1000}};
    for (int k = 0; k < 4; k++) {
        ws = malloc(data_resize_workspace(sz[k][0], sz[k][1], 3, DATA_SIZE));
        data_resize_center(dst, DATA_SIZE, src, sz[k][0], sz[k][1], 3, ws);
        for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
            cr_assert_eq(dst[i], 77);
        free(ws);
    }
    free(src);
    free(dst);
}
