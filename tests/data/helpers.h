/* helpers for the src/data tests (and the trainer tests that need small data sets):
 * temporary folders, running prep with its stderr captured, small IDX files, and the
 * slow, obviously-correct reference resize the fast one is held to. Header-only on
 * purpose: each test executable includes it once. */
#ifndef DATA_TEST_HELPERS_H
#define DATA_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data.h"
#include "imgfix.h"

static inline char *th_tmpdir(void)
{
    char tmpl[] = "/tmp/tt_data_test_XXXXXX";
    char *d = mkdtemp(tmpl);
    cr_assert_not_null(d, "mkdtemp failed");
    return strdup(d);
}

static inline void th_rmrf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* fd 2 sent to a temporary file (path: a mkstemp template) until th_capture_end, which
 * puts fd 2 back and returns what was printed (malloc'd, NUL-terminated). */
static inline int th_capture_begin(char *path, int *saved)
{
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    fflush(stdout);
    fflush(stderr);
    *saved = dup(2);
    dup2(fd, 2);
    return fd;
}

static inline char *th_capture_end(int fd, int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *log = calloc((size_t)n + 1, 1);
    cr_assert(pread(fd, log, (size_t)n, 0) == n);
    close(fd);
    unlink(path);
    return log;
}

/* Runs data_prep_main(argv) with fd 2 sent to a file; *log gets what it printed. */
static inline int th_run_prep(int argc, char **argv, char **log)
{
    char path[] = "/tmp/tt_data_prep_log_XXXXXX";
    int saved, fd = th_capture_begin(path, &saved);
    int rc = data_prep_main(argc, argv);
    *log = th_capture_end(fd, saved, path);
    return rc;
}

static inline uint8_t *th_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    cr_assert(fread(b, 1, (size_t)sz, f) == (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* Triangle weight of source pixel k for output sample j (of the kept S), normalised over
 * the window, straight from the definition: no plans, no separability tricks. */
static inline double th_weight(int in, int out_full, int off, int j, int k)
{
    double scale = (double)in / out_full, fs = scale > 1 ? scale : 1;
    double center = (j + off + 0.5) * scale;
    double sum = 0, wk = 0;
    for (int t = 0; t < in; t++) {
        if (t < floor(center - fs) || t >= ceil(center + fs))
            continue;
        double v = 1 - fabs((t + 0.5 - center) / fs);
        v = v > 0 ? v : 0;
        sum += v;
        if (t == k)
            wk = v;
    }
    return wk / sum;
}

/* Reference: shorter side to S, central S x S; dst (S, S, 3) in double. */
static inline void th_ref_resize(double *dst, int S, const uint8_t *src, int w, int h, int ch)
{
    int rw, rh;
    if (w <= h) {
        rw = S;
        rh = (int)(((int64_t)h * S * 2 + w) / (2 * (int64_t)w));
    } else {
        rh = S;
        rw = (int)(((int64_t)w * S * 2 + h) / (2 * (int64_t)h));
    }
    int ox = (rw - S) / 2, oy = (rh - S) / 2;
    double *wx = calloc((size_t)S * w, sizeof *wx), *wy = calloc((size_t)S * h, sizeof *wy);
    for (int j = 0; j < S; j++)
        for (int k = 0; k < w; k++)
            wx[(size_t)j * w + k] = th_weight(w, rw, ox, j, k);
    for (int i = 0; i < S; i++)
        for (int k = 0; k < h; k++)
            wy[(size_t)i * h + k] = th_weight(h, rh, oy, i, k);
    /* the nonzero span of each row of weights, so the double sum stays small */
    int *xl = malloc(sizeof(int) * S * 2), *yl = malloc(sizeof(int) * S * 2);
    for (int j = 0; j < S; j++) {
        xl[2 * j] = w;
        xl[2 * j + 1] = 0;
        for (int k = 0; k < w; k++)
            if (wx[(size_t)j * w + k] != 0) {
                xl[2 * j] = k < xl[2 * j] ? k : xl[2 * j];
                xl[2 * j + 1] = k + 1;
            }
    }
    for (int i = 0; i < S; i++) {
        yl[2 * i] = h;
        yl[2 * i + 1] = 0;
        for (int k = 0; k < h; k++)
            if (wy[(size_t)i * h + k] != 0) {
                yl[2 * i] = k < yl[2 * i] ? k : yl[2 * i];
                yl[2 * i + 1] = k + 1;
            }
    }
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            for (int c = 0; c < 3; c++) {
                double a = 0;
                for (int y = yl[2 * i]; y < yl[2 * i + 1]; y++)
                    for (int x = xl[2 * j]; x < xl[2 * j + 1]; x++)
                        a += wy[(size_t)i * h + y] * wx[(size_t)j * w + x] *
                             src[((size_t)y * w + x) * ch + (ch == 1 ? 0 : c)];
                dst[((size_t)i * S + j) * 3 + c] = a;
            }
    free(xl);
    free(yl);
    free(wx);
    free(wy);
}

/* ---- Fashion-MNIST-like IDX files (28x28, gzip) ---------------------------------- */

static inline void th_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes a gzip file holding hdr (hn bytes) then body (bn bytes). */
static inline void th_write_gz(const char *path, const uint8_t *hdr, size_t hn,
                               const uint8_t *body, size_t bn)
{
    gzFile f = gzopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(gzwrite(f, hdr, (unsigned)hn), (int)hn);
    if (bn)
        cr_assert_eq(gzwrite(f, body, (unsigned)bn), (int)bn);
    cr_assert_eq(gzclose(f), Z_OK);
}

/* PRE-images-idx3-ubyte.gz with `have` 28x28 images under a header claiming `declare`,
 * and PRE-labels-idx1-ubyte.gz with labels i % 10, except bad_label at image bad_at
 * (bad_at < 0: none). */
static inline void th_write_idx(const char *dir, const char *pre, int have, int declare,
                                int bad_at, int bad_label)
{
    char path[4300];
    uint8_t h[16];
    th_put_be32(h, 0x803), th_put_be32(h + 4, (uint32_t)declare), th_put_be32(h + 8, 28);
    th_put_be32(h + 12, 28);
    uint8_t *px = malloc((size_t)have * 784);
    for (size_t i = 0; i < (size_t)have * 784; i++)
        px[i] = (uint8_t)(i * 2654435761u >> 24);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, pre);
    th_write_gz(path, h, 16, px, (size_t)have * 784);
    free(px);
    th_put_be32(h, 0x801), th_put_be32(h + 4, (uint32_t)declare);
    uint8_t lab[256];
    for (int i = 0; i < declare && i < 256; i++)
        lab[i] = (uint8_t)(i == bad_at ? bad_label : i % 10);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
    th_write_gz(path, h, 8, lab, (size_t)(declare < 256 ? declare : 256));
}

/* A small prep'd data set: classes x per_class generated images, no bad files. */
static inline char *th_make_shards(int classes, int per_class, const char *extra_flag,
                                   const char *extra_val)
{
    char *dir = th_tmpdir();
    char src[4200], out[4200];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    int good, bad;
    cr_assert_eq(imgfix_make_folder(src, classes, per_class, 7, 0, &good, &bad), 0);
    char *argv[16] = {"prep", src, out, "--quiet", "--threads", "2", "--shard-size", "4"};
    int argc = 8;
    if (extra_flag) {
        argv[argc++] = (char *)extra_flag;
        argv[argc++] = (char *)extra_val;
    }
    char *log;
    int rc = th_run_prep(argc, argv, &log);
    cr_assert_eq(rc, 0, "prep failed: %s", log);
    free(log);
    return dir;
}

/* th_make_shards without a val split, opened as the training source; *dir gets the
 * temporary folder for th_close_train_shards. */
static inline data_source *th_open_train_shards(int classes, int per_class, char **dir)
{
    *dir = th_make_shards(classes, per_class, "--val-fraction", "0");
    char out[4200], err[512];
    snprintf(out, sizeof out, "%s/out", *dir);
    data_source *s = data_open_shards(out, "train", err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    return s;
}

static inline void th_close_train_shards(data_source *s, char *dir)
{
    data_close(s);
    th_rmrf(dir);
    free(dir);
}

#endif
