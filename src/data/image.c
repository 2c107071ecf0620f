/* image: PNG (libpng) and JPEG (libjpeg-turbo) from memory buffers to 8-bit RGB, and the
 * resize to the paper's 256x256 (shorter side to 256, central square). Bad input must
 * fail with a reason, never crash and never allocate without bound: sizes are checked
 * against limits, and for PNG against what the file's bytes can hold, before any pixel
 * buffer exists. */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
/* jpeglib.h needs size_t and FILE first */
#include <jerror.h>
#include <jpeglib.h>

#include "data/data_internal.h"

data_image_limits data_image_limits_default(void)
{
    data_image_limits l = {.max_side = 32768, .max_pixels = (int64_t)1 << 26, .max_scans = 500};
    return l;
}

/* ---- PNG --------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *buf;
    size_t n, off;
    jmp_buf jmp;
    char msg[200];
    char warn[200]; /* the last warning: libpng explains an IHDR error in one */
} png_ctx;

static void png_err_fn(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jmp, 1);
}
static void png_warn_fn(png_structp png, png_const_charp msg)
{
    /* warnings (a bad ancillary chunk, say) do not stop a decode; kept for the reason */
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->warn, sizeof c->warn, "%s", msg);
}
static void png_read_fn(png_structp png, png_bytep out, size_t len)
{
    png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->off)
        png_error(png, "truncated file (ends inside a chunk)");
    memcpy(out, c->buf + c->off, len);
    c->off += len;
}

int data_png_decode(const uint8_t *buf, size_t n, const data_image_limits *lim,
                    uint8_t **rgb, int *w, int *h, char *err, size_t errlen)
{
    *rgb = NULL;
    /* a copy: the pointer argument itself must not change between setjmp and longjmp */
    const data_image_limits L = lim ? *lim : data_image_limits_default();
    if (n < 8 || png_sig_cmp(buf, 0, 8) != 0)
        return data_fail(err, errlen, "not a PNG (bad signature)");
    png_ctx ctx = {.buf = buf, .n = n, .off = 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_err_fn, png_warn_fn);
    if (!png)
        return data_fail(err, errlen, "PNG: cannot create decoder");
    png_infop info = png_create_info_struct(png);
    /* volatile: assigned between setjmp and a possible longjmp */
    uint8_t *volatile pix = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return data_fail(err, errlen, "PNG: cannot create decoder");
    }
    if (setjmp(ctx.jmp)) {
        free(pix);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        if (ctx.warn[0])
            return data_fail(err, errlen, "PNG: %s (%s)", ctx.msg, ctx.warn);
        return data_fail(err, errlen, "PNG: %s", ctx.msg);
    }
    /* libpng refuses larger headers before allocating anything; ancillary chunks
     * (zTXt, iCCP, ...) may not make it allocate more than 8 MB */
    png_uint_32 side = (png_uint_32)(L.max_side < 0x7fffffff ? L.max_side : 0x7fffffff);
    png_set_user_limits(png, side, side);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_set_chunk_cache_max(png, 1000);
    png_set_read_fn(png, &ctx, png_read_fn);
    png_read_info(png, info);
    png_uint_32 pw, ph;
    int depth, ctype, ilace;
    png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &ilace, NULL, NULL);
    if (pw == 0 || ph == 0)
        png_error(png, "zero width or height");
    if ((int64_t)pw * (int64_t)ph > L.max_pixels) {
        snprintf(ctx.msg, sizeof ctx.msg, "%ux%u pixels is over the limit of %lld", pw, ph,
                 (long long)L.max_pixels);
        longjmp(ctx.jmp, 1);
    }
    /* deflate cannot expand more than 1032:1, so the file's bytes bound the raw image */
    int nch = png_get_channels(png, info);
    uint64_t raw = (uint64_t)ph * ((((uint64_t)pw * (uint64_t)nch * (uint64_t)depth) + 7) / 8 + 1);
    if (raw > (uint64_t)n * 1040u + 65536u) {
        snprintf(ctx.msg, sizeof ctx.msg,
                 "header claims %ux%u pixels, more than a %zu byte file can hold", pw, ph, n);
        longjmp(ctx.jmp, 1);
    }
    png_set_expand(png); /* palette -> RGB, grey < 8 bit -> 8 bit, tRNS -> alpha */
    if (depth == 16)
        png_set_scale_16(png); /* rounds v / 257, unlike strip_16's high byte */
    if (!(ctype & PNG_COLOR_MASK_COLOR))
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int och = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((och != 3 && och != 4) || png_get_bit_depth(png, info) != 8 ||
        rowbytes != (size_t)pw * (size_t)och)
        png_error(png, "unexpected layout after transforms");
    pix = malloc((size_t)ph * rowbytes);
    rows = malloc((size_t)ph * sizeof *rows);
    if (!pix || !rows)
        png_error(png, "out of memory for the pixels");
    for (png_uint_32 y = 0; y < ph; y++)
        rows[y] = pix + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL); /* a file cut after the pixels is still a truncated file */
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    uint8_t *out = pix;
    size_t npx = (size_t)pw * ph;
    if (och == 4) { /* composite over white, in place, towards 3 bytes per pixel */
        for (size_t i = 0; i < npx; i++) {
            uint32_t a = pix[4 * i + 3];
            for (int c = 0; c < 3; c++)
                out[3 * i + c] = (uint8_t)((pix[4 * i + c] * a + 255u * (255u - a) + 127u) / 255u);
        }
        uint8_t *shrunk = realloc(pix, npx * 3);
        if (shrunk)
            out = shrunk;
    }
    *rgb = out;
    *w = (int)pw;
    *h = (int)ph;
    return 0;
}

/* ---- JPEG -------------------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    int truncated;
    int max_scans;
    char msg[JMSG_LENGTH_MAX + 32];
} jpeg_ctx;

static void jpeg_error_exit_fn(j_common_ptr ci)
{
    jpeg_ctx *c = (jpeg_ctx *)ci->err;
    char m[JMSG_LENGTH_MAX];
    ci->err->format_message(ci, m);
    snprintf(c->msg, sizeof c->msg, "%s", m);
    longjmp(c->jmp, 1);
}
static void jpeg_emit_fn(j_common_ptr ci, int level)
{
    jpeg_ctx *c = (jpeg_ctx *)ci->err;
    /* missing data: libjpeg would fill the rest with grey and carry on. A premature end, a
     * marker where entropy-coded data should be (a file cut or patched inside a scan), or
     * a lost restart marker all mean pixels that are not in the file. Other warnings (e.g.
     * extraneous bytes before a marker, common in camera files) leave the image whole. */
    if (level < 0 && (ci->err->msg_code == JWRN_JPEG_EOF || ci->err->msg_code == JWRN_HIT_MARKER ||
                      ci->err->msg_code == JWRN_MUST_RESYNC))
        c->truncated = 1;
}
static void jpeg_progress_fn(j_common_ptr ci)
{
    jpeg_ctx *c = (jpeg_ctx *)ci->err;
    j_decompress_ptr d = (j_decompress_ptr)ci;
    if (!ci->is_decompressor)
        return;
    if (d->input_scan_number > c->max_scans) {
        snprintf(c->msg, sizeof c->msg, "more than %d progressive scans", c->max_scans);
        longjmp(c->jmp, 1);
    }
}

int data_jpeg_decode(const uint8_t *buf, size_t n, const data_image_limits *lim,
                     int min_side, uint8_t **rgb, int *w, int *h, char *err, size_t errlen)
{
    *rgb = NULL;
    /* a copy: the pointer argument itself must not change between setjmp and longjmp */
    const data_image_limits L = lim ? *lim : data_image_limits_default();
    if (n < 3 || buf[0] != 0xFF || buf[1] != 0xD8 || buf[2] != 0xFF)
        return data_fail(err, errlen, "not a JPEG (bad signature)");
    if (n > 0xffffffffu)
        return data_fail(err, errlen, "JPEG of %zu bytes is too large", n);
    struct jpeg_decompress_struct ci;
    jpeg_ctx ctx;
    memset(&ci, 0, sizeof ci); /* ci.mem stays NULL until create: destroy is then a no-op */
    memset(&ctx, 0, sizeof ctx);
    ctx.max_scans = L.max_scans;
    ci.err = jpeg_std_error(&ctx.pub);
    ctx.pub.error_exit = jpeg_error_exit_fn;
    ctx.pub.emit_message = jpeg_emit_fn;
    struct jpeg_progress_mgr prog = {.progress_monitor = jpeg_progress_fn};
    uint8_t *volatile pix = NULL;
    uint8_t *volatile row = NULL;
    if (setjmp(ctx.jmp)) {
        jpeg_destroy_decompress(&ci);
        free(pix);
        free(row);
        return data_fail(err, errlen, "JPEG: %s", ctx.msg);
    }
    jpeg_create_decompress(&ci);
    ci.progress = &prog;
    /* bounds libjpeg's own big buffers (progressive coefficient arrays): with no
     * backing store a request past this fails instead of allocating */
    ci.mem->max_memory_to_use = (long)(L.max_pixels * 8 < 0x7fffffffL ? L.max_pixels * 8
                                                                      : 0x7fffffffL);
    jpeg_mem_src(&ci, buf, (unsigned long)n);
    jpeg_read_header(&ci, TRUE);
    if (ci.image_width == 0 || ci.image_height == 0) {
        snprintf(ctx.msg, sizeof ctx.msg, "zero width or height");
        longjmp(ctx.jmp, 1);
    }
    if ((int64_t)ci.image_width > L.max_side || (int64_t)ci.image_height > L.max_side ||
        (int64_t)ci.image_width * ci.image_height > L.max_pixels) {
        snprintf(ctx.msg, sizeof ctx.msg, "%ux%u pixels is over the limits", ci.image_width,
                 ci.image_height);
        longjmp(ctx.jmp, 1);
    }
    /* the file's bytes bound the image: even a flat progressive JPEG spends a few bits per
     * 8x8 block on its DC terms, so more than 4096 pixels per byte is a header that lies
     * (checked before libjpeg sizes its coefficient buffers from it) */
    if ((int64_t)ci.image_width * ci.image_height > (int64_t)n * 4096) {
        snprintf(ctx.msg, sizeof ctx.msg, "header says %ux%u pixels, more than a %zu byte file "
                 "can hold", ci.image_width, ci.image_height, n);
        longjmp(ctx.jmp, 1);
    }
    int cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
    ci.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    if (min_side > 0) {
        unsigned shorter = ci.image_width < ci.image_height ? ci.image_width : ci.image_height;
        unsigned denom = 1;
        while (denom < 8 && shorter / (denom * 2) >= (unsigned)min_side)
            denom *= 2;
        ci.scale_num = 1;
        ci.scale_denom = denom;
    }
    ci.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&ci);
    unsigned ow = ci.output_width, oh = ci.output_height;
    int comps = ci.output_components;
    if (ow == 0 || oh == 0 || (comps != 3 && comps != 4) || (comps == 4) != cmyk) {
        snprintf(ctx.msg, sizeof ctx.msg, "unexpected output layout");
        longjmp(ctx.jmp, 1);
    }
    pix = malloc((size_t)ow * oh * 3);
    row = malloc((size_t)ow * (size_t)comps);
    if (!pix || !row) {
        snprintf(ctx.msg, sizeof ctx.msg, "out of memory for the pixels");
        longjmp(ctx.jmp, 1);
    }
    while (ci.output_scanline < oh) {
        unsigned y = ci.output_scanline;
        JSAMPROW rp = row;
        if (jpeg_read_scanlines(&ci, &rp, 1) != 1) {
            snprintf(ctx.msg, sizeof ctx.msg, "decoder returned no row %u", y);
            longjmp(ctx.jmp, 1);
        }
        uint8_t *dst = pix + (size_t)y * ow * 3;
        if (!cmyk) {
            memcpy(dst, row, (size_t)ow * 3);
        } else {
            /* Adobe writes CMYK inverted (the usual case, saw_Adobe_marker): R = C K / 255 */
            int inv = ci.saw_Adobe_marker;
            for (unsigned x = 0; x < ow; x++) {
                unsigned k = row[4 * x + 3];
                for (int c = 0; c < 3; c++) {
                    unsigned v = row[4 * x + c];
                    dst[3 * x + c] = inv ? (uint8_t)((v * k + 127) / 255)
                                         : (uint8_t)(((255 - v) * (255 - k) + 127) / 255);
                }
            }
        }
    }
    jpeg_finish_decompress(&ci);
    int trunc = ctx.truncated;
    jpeg_destroy_decompress(&ci);
    free(row);
    if (trunc) {
        free(pix);
        return data_fail(err, errlen, "JPEG: truncated or corrupt file (image data missing)");
    }
    *rgb = pix;
    *w = (int)ow;
    *h = (int)oh;
    return 0;
}

/* ---- resize ------------------------------------------------------------------------
 * For each output sample j along one axis: the source taps [first, first + count) and
 * their weights (summing to 1). Triangle filter of support max(in/out, 1) around the
 * source position (j + 0.5) * in / out - 0.5 (pixel centres aligned), PIL's scheme. */

typedef struct {
    int taps;        /* max taps per output sample */
    int *first;      /* (S) */
    int *count;      /* (S) */
    float *w;        /* (S, taps) */
} axis_plan;

static int axis_taps(int in, int out_full)
{
    double scale = (double)in / out_full;
    double support = scale > 1.0 ? scale : 1.0;
    return (int)ceil(support) * 2 + 1;
}

/* in: source length; out_full: resized length; off: first resized sample kept; S: kept */
static void axis_build(axis_plan *p, int in, int out_full, int off, int S)
{
    double scale = (double)in / out_full;
    double fs = scale > 1.0 ? scale : 1.0;
    double support = fs;
    for (int j = 0; j < S; j++) {
        double center = (j + off + 0.5) * scale;
        int lo = (int)floor(center - support);
        int hi = (int)ceil(center + support);
        if (lo < 0)
            lo = 0;
        if (hi > in)
            hi = in;
        int cnt = 0;
        double sum = 0;
        float *wj = p->w + (size_t)j * p->taps;
        for (int k = lo; k < hi && cnt < p->taps; k++) {
            double x = (k + 0.5 - center) / fs;
            double v = 1.0 - fabs(x);
            if (v < 0)
                v = 0;
            wj[cnt++] = (float)v;
            sum += v;
        }
        if (sum <= 0) { /* cannot happen with support >= 1, but stay defined */
            lo = (int)center < in ? (int)center : in - 1;
            wj[0] = 1.0f;
            cnt = 1;
            sum = 1;
        }
        for (int t = 0; t < cnt; t++)
            wj[t] = (float)(wj[t] / sum);
        p->first[j] = lo;
        p->count[j] = cnt;
    }
}

static void resized_dims(int w, int h, int S, int *rw, int *rh)
{
    /* shorter side exactly S; the other rounded, never below S */
    if (w <= h) {
        *rw = S;
        int64_t v = ((int64_t)h * S * 2 + w) / (2 * (int64_t)w);
        *rh = v < S ? S : (int)v;
    } else {
        *rh = S;
        int64_t v = ((int64_t)w * S * 2 + h) / (2 * (int64_t)h);
        *rw = v < S ? S : (int)v;
    }
}

size_t data_resize_workspace(int w, int h, int ch, int S)
{
    int rw, rh;
    resized_dims(w, h, S, &rw, &rh);
    size_t tx = (size_t)axis_taps(w, rw), ty = (size_t)axis_taps(h, rh);
    size_t bytes = 2 * (size_t)S * 2 * sizeof(int) + (size_t)S * (tx + ty) * sizeof(float);
    bytes += (size_t)h * S * (size_t)ch * sizeof(float); /* horizontal pass */
    bytes += (size_t)S * (size_t)ch * (sizeof(float) + 1); /* one output row: sums, bytes */
    return bytes + 64;
}

/* One routine for both element types: src8 or srcf is the source, dst8 or dstf the
 * destination (uint8 output is rounded to nearest and clamped). */
static void resize_core(uint8_t *dst8, float *dstf, int S, const uint8_t *src8,
                        const float *srcf, int w, int h, int ch, void *ws)
{
    int rw, rh;
    resized_dims(w, h, S, &rw, &rh);
    axis_plan px, py;
    px.taps = axis_taps(w, rw);
    py.taps = axis_taps(h, rh);
    char *p = ws;
    px.first = (int *)p;
    p += (size_t)S * sizeof(int);
    px.count = (int *)p;
    p += (size_t)S * sizeof(int);
    py.first = (int *)p;
    p += (size_t)S * sizeof(int);
    py.count = (int *)p;
    p += (size_t)S * sizeof(int);
    px.w = (float *)p;
    p += (size_t)S * px.taps * sizeof(float);
    py.w = (float *)p;
    p += (size_t)S * py.taps * sizeof(float);
    float *tmp = (float *)p; /* (h, S, ch): rows that any output row needs */
    p += (size_t)h * S * ch * sizeof(float);
    float *acc = (float *)p; /* (S, ch): the output row being summed */
    p += (size_t)S * ch * sizeof(float);
    uint8_t *q8 = (uint8_t *)p; /* (S, ch): that row rounded */
    axis_build(&px, w, rw, (rw - S) / 2, S);
    axis_build(&py, h, rh, (rh - S) / 2, S);
    int ylo = py.first[0], yhi = py.first[S - 1] + py.count[S - 1];
    for (int y = ylo; y < yhi; y++) {
        size_t ro = (size_t)y * w * ch;
        float *t = tmp + (size_t)y * S * ch;
        for (int j = 0; j < S; j++) {
            const float *wj = px.w + (size_t)j * px.taps;
            size_t o = ro + (size_t)px.first[j] * ch;
            if (ch == 1) {
                float a = 0;
                if (src8)
                    for (int k = 0; k < px.count[j]; k++)
                        a += wj[k] * src8[o + k];
                else
                    for (int k = 0; k < px.count[j]; k++)
                        a += wj[k] * srcf[o + k];
                t[j] = a;
            } else {
                float a = 0, b = 0, c = 0;
                for (int k = 0; k < px.count[j]; k++) {
                    size_t q = o + 3 * (size_t)k;
                    a += wj[k] * (src8 ? src8[q] : srcf[q]);
                    b += wj[k] * (src8 ? src8[q + 1] : srcf[q + 1]);
                    c += wj[k] * (src8 ? src8[q + 2] : srcf[q + 2]);
                }
                t[3 * j] = a;
                t[3 * j + 1] = b;
                t[3 * j + 2] = c;
            }
        }
    }
    for (int i = 0; i < S; i++) {
        const float *wi = py.w + (size_t)i * py.taps;
        const float *t0 = tmp + (size_t)py.first[i] * S * ch;
        size_t orow = (size_t)i * S * 3;
        /* tap by tap over the whole row (vectorises); each sum still adds its taps in
         * order from 0, so the result is the one-pixel-at-a-time loop's bit for bit */
        for (int j = 0; j < S * ch; j++)
            acc[j] = 0;
        for (int k = 0; k < py.count[i]; k++) {
            const float *tk = t0 + (size_t)k * S * ch;
            float wk = wi[k];
            for (int j = 0; j < S * ch; j++)
                acc[j] += wk * tk[j];
        }
        if (dstf) {
            for (int j = 0; j < S * ch; j++) {
                if (ch == 1)
                    dstf[orow + 3 * j] = dstf[orow + 3 * j + 1] = dstf[orow + 3 * j + 2] = acc[j];
                else
                    dstf[orow + j] = acc[j];
            }
            continue;
        }
        /* rounded to nearest (halves up) and clamped, a whole row at once (vectorises),
         * then gray spread to the three channels */
        for (int j = 0; j < S * ch; j++) {
            int v = (int)(acc[j] + 0.5f);
            q8[j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        if (ch == 1)
            for (int j = 0; j < S; j++)
                dst8[orow + 3 * j] = dst8[orow + 3 * j + 1] = dst8[orow + 3 * j + 2] = q8[j];
        else
            memcpy(dst8 + orow, q8, (size_t)S * ch);
    }
}

void data_resize_center(uint8_t *dst, int S, const uint8_t *src, int w, int h, int ch, void *ws)
{
    resize_core(dst, NULL, S, src, NULL, w, h, ch, ws);
}

void data_resize_center_f32(float *dst, int S, const float *src, int w, int h, int ch, void *ws)
{
    resize_core(NULL, dst, S, NULL, src, w, h, ch, ws);
}

int data_image_decode(const uint8_t *buf, size_t n, const data_image_limits *lim,
                      uint8_t *dst, char *err, size_t errlen)
{
    uint8_t *rgb = NULL;
    int w = 0, h = 0, rc;
    if (n >= 8 && png_sig_cmp(buf, 0, 8) == 0)
        rc = data_png_decode(buf, n, lim, &rgb, &w, &h, err, errlen);
    else if (n >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
        rc = data_jpeg_decode(buf, n, lim, DATA_SIZE, &rgb, &w, &h, err, errlen);
    else if (n == 0)
        return data_fail(err, errlen, "empty file");
    else
        return data_fail(err, errlen, "not a PNG or JPEG (bad signature)");
    if (rc != 0)
        return -1;
    size_t wsb = data_resize_workspace(w, h, 3, DATA_SIZE);
    void *ws = malloc(wsb);
    if (!ws) {
        free(rgb);
        return data_fail(err, errlen, "out of memory for the resize (%zu bytes)", wsb);
    }
    data_resize_center(dst, DATA_SIZE, rgb, w, h, 3, ws);
    free(ws);
    free(rgb);
    return 0;
}
