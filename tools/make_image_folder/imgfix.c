/* imgfix: writes the image fixtures of imgfix.h with libpng, libjpeg and zlib. Used by
 * tests/data (compiled in) and by tools/make_image_folder (the command-line wrapper). */
#include "imgfix.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
/* after stdio.h */
#include <jpeglib.h>

const char *const imgfix_bad_names[IMGFIX_BAD_KINDS] = {
    "bad_truncated.png", "bad_crc.png",        "bad_zero_width.png",
    "bad_huge.png",      "bad_text.png",       "bad_empty.png",
    "bad_unreadable.png", "bad_truncated.jpg", "bad_text.jpg"};

int imgfix_png_channels(int ct)
{
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    default: return 0;
    }
}

typedef struct {
    uint8_t *buf;
    size_t n, cap;
} membuf;

static void mem_write(png_structp png, png_bytep data, size_t len)
{
    membuf *m = png_get_io_ptr(png);
    if (m->n + len > m->cap) {
        size_t nc = (m->cap ? m->cap * 2 : 4096) + len;
        uint8_t *nb = realloc(m->buf, nc);
        if (!nb)
            png_error(png, "out of memory");
        m->buf = nb;
        m->cap = nc;
    }
    memcpy(m->buf + m->n, data, len);
    m->n += len;
}
static void mem_flush(png_structp png) { (void)png; }

int imgfix_png_encode(const imgfix_png *s, uint8_t **buf, size_t *n)
{
    int ch = imgfix_png_channels(s->color_type);
    int d = s->bit_depth;
    size_t rowbytes = ((size_t)s->w * ch * d + 7) / 8;
    uint8_t *img = calloc((size_t)s->h, rowbytes);
    png_bytep *rows = malloc((size_t)s->h * sizeof *rows);
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!img || !rows || !png || !info) {
        fprintf(stderr, "imgfix: out of memory\n");
        free(img);
        free(rows);
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    /* pack the samples MSB first (sub-byte depths) or big-endian (16 bit) */
    for (int y = 0; y < s->h; y++) {
        uint8_t *r = img + (size_t)y * rowbytes;
        rows[y] = r;
        for (int k = 0; k < s->w * ch; k++) {
            uint16_t v = s->samples[(size_t)y * s->w * ch + k];
            if (d == 16) {
                r[2 * k] = (uint8_t)(v >> 8);
                r[2 * k + 1] = (uint8_t)v;
            } else if (d == 8) {
                r[k] = (uint8_t)v;
            } else {
                size_t bit = (size_t)k * d;
                r[bit / 8] |= (uint8_t)(v << (8 - d - bit % 8));
            }
        }
    }
    if (setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "imgfix: libpng failed to write\n");
        free(img);
        free(rows);
        free(m.buf);
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, d, s->color_type,
                 s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->color_type == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[256];
        for (int i = 0; i < s->npalette; i++) {
            pal[i].red = s->palette[3 * i];
            pal[i].green = s->palette[3 * i + 1];
            pal[i].blue = s->palette[3 * i + 2];
        }
        png_set_PLTE(png, info, pal, s->npalette);
        if (s->ntrns > 0)
            png_set_tRNS(png, info, s->trns_alpha, s->ntrns, NULL);
    } else if (s->has_trns_color) {
        png_color_16 c = {0};
        c.gray = s->trns_grey;
        c.red = s->trns_rgb[0];
        c.green = s->trns_rgb[1];
        c.blue = s->trns_rgb[2];
        png_set_tRNS(png, info, NULL, 0, &c);
    }
    png_write_info(png, info);
    if (s->interlace)
        png_set_interlace_handling(png);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(img);
    free(rows);
    *buf = m.buf;
    *n = m.n;
    return 0;
}

int imgfix_jpeg_encode(const uint8_t *rgb, int w, int h, int comps, int quality,
                       int progressive, uint8_t **buf, size_t *n)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr); /* fixtures are well-formed: errors exit */
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long outn = 0;
    jpeg_mem_dest(&ci, &out, &outn);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = comps;
    ci.in_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    if (progressive)
        jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    uint8_t *row = malloc((size_t)w * comps);
    if (!row) {
        jpeg_destroy_compress(&ci);
        return -1;
    }
    while (ci.next_scanline < ci.image_height) {
        const uint8_t *src = rgb + (size_t)ci.next_scanline * w * 3;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comps; c++)
                row[x * comps + c] = src[3 * x + c];
        JSAMPROW rp = row;
        jpeg_write_scanlines(&ci, &rp, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(row);
    *buf = malloc(outn);
    if (!*buf) {
        free(out);
        return -1;
    }
    memcpy(*buf, out, outn);
    free(out);
    *n = outn;
    return 0;
}

int imgfix_write_file(const char *path, const uint8_t *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "imgfix: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int bad = n && fwrite(buf, 1, n, f) != n;
    bad = fclose(f) != 0 || bad;
    if (bad)
        fprintf(stderr, "imgfix: %s: write failed\n", path);
    return bad ? -1 : 0;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t put_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t len)
{
    put_be32(p, len);
    memcpy(p + 4, type, 4);
    if (len)
        memcpy(p + 8, data, len);
    put_be32(p + 8 + len, (uint32_t)crc32(0, p + 4, 4 + len));
    return 12 + len;
}

int imgfix_png_lying_header(uint32_t w, uint32_t h, uint8_t **buf, size_t *n)
{
    uint8_t ihdr[13];
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = 8; /* depth */
    ihdr[9] = 2; /* RGB */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    uint8_t raw[64] = {0}, z[128];
    uLongf zn = sizeof z;
    if (compress2(z, &zn, raw, sizeof raw, 9) != Z_OK)
        return -1;
    uint8_t *b = malloc(8 + 25 + 12 + zn + 12);
    if (!b)
        return -1;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    size_t o = 8;
    o += put_chunk(b + o, "IHDR", ihdr, 13);
    o += put_chunk(b + o, "IDAT", z, (uint32_t)zn);
    o += put_chunk(b + o, "IEND", NULL, 0);
    *buf = b;
    *n = o;
    return 0;
}

void imgfix_picture(uint8_t *rgb, int w, int h, int tone, uint64_t seed)
{
    double ph = (double)(seed % 1000) * 0.01;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double u = (double)x / w, v = (double)y / h;
            double r = 128 + 90 * sin(6.0 * u + 1.3 * tone + ph);
            double g = 128 + 90 * sin(5.0 * v + 2.1 * tone);
            double b = 128 + 90 * cos(4.0 * (u + v) + 0.7 * tone - ph);
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)lrint(r);
            p[1] = (uint8_t)lrint(g);
            p[2] = (uint8_t)lrint(b);
        }
}

static int good_png(const uint8_t *rgb, int w, int h, uint8_t **buf, size_t *n)
{
    uint16_t *s = malloc((size_t)w * h * 3 * sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        s[i] = rgb[i];
    imgfix_png spec = {.w = w, .h = h, .color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 8,
                       .samples = s};
    int rc = imgfix_png_encode(&spec, buf, n);
    free(s);
    return rc;
}

int imgfix_write_bad(const char *path, int kind)
{
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = 0;
    enum { W = 64, H = 64 };
    uint8_t rgb[W * H * 3];
    /* noise, so that the compressed data is large and a cut lands inside it */
    uint32_t st = 12345;
    for (size_t i = 0; i < sizeof rgb; i++) {
        st = st * 1664525u + 1013904223u;
        rgb[i] = (uint8_t)(st >> 24);
    }
    switch (kind) {
    case IMGFIX_BAD_TRUNCATED_PNG:
        rc = good_png(rgb, W, H, &b, &n);
        n = n * 6 / 10;
        break;
    case IMGFIX_BAD_CRC_PNG: {
        rc = good_png(rgb, W, H, &b, &n);
        uint8_t *idat = rc == 0 ? memmem(b, n, "IDAT", 4) : NULL;
        if (!idat)
            rc = -1;
        else
            idat[4 + 100] ^= 0x55; /* a data byte: the chunk CRC no longer matches */
        break;
    }
    case IMGFIX_BAD_ZERO_WIDTH_PNG:
        rc = imgfix_png_lying_header(0, 64, &b, &n);
        break;
    case IMGFIX_BAD_HUGE_PNG:
        rc = imgfix_png_lying_header(100000, 100000, &b, &n);
        break;
    case IMGFIX_BAD_TEXT_AS_PNG:
    case IMGFIX_BAD_TEXT_AS_JPEG: {
        static const char txt[] = "This is a text file with an image name.\n";
        b = malloc(sizeof txt);
        if (!b)
            return -1;
        memcpy(b, txt, sizeof txt - 1);
        n = sizeof txt - 1;
        break;
    }
    case IMGFIX_BAD_EMPTY:
        break;
    case IMGFIX_BAD_UNREADABLE:
        unlink(path);
        if (symlink("/nonexistent/twotower/fixture.png", path) != 0) {
            fprintf(stderr, "imgfix: symlink %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    case IMGFIX_BAD_TRUNCATED_JPEG:
        rc = imgfix_jpeg_encode(rgb, W, H, 3, 90, 0, &b, &n);
        n = n / 2;
        break;
    default:
        return -1;
    }
    if (rc == 0)
        rc = imgfix_write_file(path, b, n);
    free(b);
    return rc;
}

int imgfix_make_folder(const char *dir, int classes, int per_class, uint64_t seed,
                       int with_bad, int *good, int *bad)
{
    *good = *bad = 0;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "imgfix: mkdir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    static const int sizes[8][2] = {{300, 200}, {200, 320}, {256, 256}, {400, 300},
                                    {180, 240}, {260, 260}, {220, 330}, {256, 384}};
    char path[4096];
    for (int c = 0; c < classes; c++) {
        snprintf(path, sizeof path, "%s/class_%02d", dir, c);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "imgfix: mkdir %s: %s\n", path, strerror(errno));
            return -1;
        }
        for (int i = 0; i < per_class; i++) {
            int kind = (i + c) % 8;
            int w = sizes[kind][0], h = sizes[kind][1];
            uint8_t *rgb = malloc((size_t)w * h * 3);
            uint16_t *s = malloc((size_t)w * h * 4 * sizeof *s);
            if (!rgb || !s) {
                free(rgb);
                free(s);
                return -1;
            }
            imgfix_picture(rgb, w, h, c, seed * 1000 + (uint64_t)i);
            uint8_t *b = NULL;
            size_t n = 0;
            int rc = 0, jpeg = kind == 1 || kind == 3 || kind == 7;
            imgfix_png spec = {.w = w, .h = h, .bit_depth = 8, .samples = s};
            uint8_t pal[64 * 3];
            size_t np = (size_t)w * h;
            switch (kind) {
            case 1: rc = imgfix_jpeg_encode(rgb, w, h, 3, 90, 0, &b, &n); break;
            case 3: rc = imgfix_jpeg_encode(rgb, w, h, 3, 85, 1, &b, &n); break;
            case 7: rc = imgfix_jpeg_encode(rgb, w, h, 1, 90, 0, &b, &n); break;
            case 2: /* palette: 4 levels per channel */
                for (int k = 0; k < 64; k++) {
                    pal[3 * k] = (uint8_t)(32 + 64 * (k >> 4));
                    pal[3 * k + 1] = (uint8_t)(32 + 64 * ((k >> 2) & 3));
                    pal[3 * k + 2] = (uint8_t)(32 + 64 * (k & 3));
                }
                for (size_t p = 0; p < np; p++)
                    s[p] = (uint16_t)((rgb[3 * p] >> 6) << 4 | (rgb[3 * p + 1] >> 6) << 2 |
                                      (rgb[3 * p + 2] >> 6));
                spec.color_type = PNG_COLOR_TYPE_PALETTE;
                spec.npalette = 64;
                spec.palette = pal;
                rc = imgfix_png_encode(&spec, &b, &n);
                break;
            case 4: /* grey 16-bit */
                for (size_t p = 0; p < np; p++)
                    s[p] = (uint16_t)(rgb[3 * p + 1] * 257u);
                spec.color_type = PNG_COLOR_TYPE_GRAY;
                spec.bit_depth = 16;
                rc = imgfix_png_encode(&spec, &b, &n);
                break;
            case 5: /* RGBA with an alpha ramp */
                for (size_t p = 0; p < np; p++) {
                    for (int k = 0; k < 3; k++)
                        s[4 * p + k] = rgb[3 * p + k];
                    s[4 * p + 3] = (uint16_t)(255 - (p % (size_t)w) * 128 / (size_t)w);
                }
                spec.color_type = PNG_COLOR_TYPE_RGB_ALPHA;
                rc = imgfix_png_encode(&spec, &b, &n);
                break;
            default: /* 0: RGB; 6: RGB interlaced */
                for (size_t p = 0; p < np * 3; p++)
                    s[p] = rgb[p];
                spec.color_type = PNG_COLOR_TYPE_RGB;
                spec.interlace = kind == 6;
                rc = imgfix_png_encode(&spec, &b, &n);
                break;
            }
            free(rgb);
            free(s);
            if (rc != 0)
                return -1;
            snprintf(path, sizeof path, "%s/class_%02d/img_%04d.%s", dir, c, i,
                     jpeg ? "jpg" : "png");
            rc = imgfix_write_file(path, b, n);
            free(b);
            if (rc != 0)
                return -1;
            (*good)++;
        }
    }
    snprintf(path, sizeof path, "%s/class_00/notes.txt", dir);
    if (imgfix_write_file(path, (const uint8_t *)"not an image\n", 13) != 0)
        return -1;
    if (with_bad) {
        for (int k = 0; k < IMGFIX_BAD_KINDS; k++) {
            snprintf(path, sizeof path, "%s/class_00/%s", dir, imgfix_bad_names[k]);
            if (imgfix_write_bad(path, k) != 0)
                return -1;
            (*bad)++;
        }
    }
    return 0;
}
