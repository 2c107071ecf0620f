/* test_shards: prep -> shards -> loader round trip (pixels, labels, names, split sizes,
 * mean image and PCA recomputed from the stored pixels), checksums, and the refusals of
 * damaged shards and meta.bin. */
#include <dirent.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "helpers.h"

static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

Test(shards, round_trip, .timeout = 120)
{
    /* 3 classes x 5 images; val fraction 0.4 puts 2 of each class in val */
    char *dir = th_make_shards(3, 5, "--val-fraction", "0.4");
    char src[4200], out[4200], err[512];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    data_source *tr = data_open_shards(out, "train", err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    data_source *va = data_open_shards(out, "val", err, sizeof err);
    cr_assert_not_null(va, "%s", err);
    cr_assert_eq(data_count(tr), 9);
    cr_assert_eq(data_count(va), 6);
    cr_assert_eq(count_files(out, "train-"), 3); /* shard size 4: 4 + 4 + 1 */
    cr_assert_eq(count_files(out, "val-"), 2);
    cr_assert_eq(data_classes(tr), 3);
    cr_assert_str_eq(data_class_name(tr, 0), "class_00");
    cr_assert_str_eq(data_class_name(tr, 2), "class_02");
    cr_assert_null(data_class_name(tr, 3));

    /* every stored image is one source file, decoded and resized, with its label; every
     * source file is stored exactly once over the two splits */
    int used[3][5] = {{0}};
    uint8_t *img = malloc(DATA_IMAGE_BYTES), *want = malloc(DATA_IMAGE_BYTES);
    data_source *sp[2] = {tr, va};
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < data_count(sp[k]); i++) {
            cr_assert_eq(data_image(sp[k], i, img, err, sizeof err), 0);
            int lab = data_label(sp[k], i), hit = -1;
            for (int f = 0; f < 5 && hit < 0; f++) {
                char path[4300];
                const char *ext = ((f + lab) % 8 == 1 || (f + lab) % 8 == 3 || (f + lab) % 8 == 7)
                                      ? "jpg" : "png";
                snprintf(path, sizeof path, "%s/class_%02d/img_%04d.%s", src, lab, f, ext);
                size_t n;
                uint8_t *buf = th_read(path, &n);
                cr_assert_eq(data_image_decode(buf, n, NULL, want, err, sizeof err), 0, "%s", err);
                free(buf);
                if (memcmp(img, want, DATA_IMAGE_BYTES) == 0)
                    hit = f;
            }
            cr_assert(hit >= 0, "split %d image %lld matches no file of class %d", k,
                      (long long)i, lab);
            cr_assert_eq(used[lab][hit]++, 0, "file %d of class %d stored twice", hit, lab);
        }
    /* stored order: by class, then file name */
    for (int64_t i = 1; i < data_count(tr); i++)
        cr_assert(data_label(tr, i - 1) <= data_label(tr, i));

    /* mean image and PCA: recomputed from the stored training pixels */
    double *mean = calloc(DATA_IMAGE_BYTES, sizeof *mean);
    double s[3] = {0}, ss[9] = {0}, npx = 0;
    for (int64_t i = 0; i < data_count(tr); i++) {
        cr_assert_eq(data_image(tr, i, img, err, sizeof err), 0);
        for (size_t k = 0; k < DATA_IMAGE_BYTES; k++)
            mean[k] += img[k];
        for (size_t p = 0; p < DATA_IMAGE_BYTES / 3; p++) {
            for (int a = 0; a < 3; a++) {
                s[a] += img[3 * p + a];
                for (int b = 0; b < 3; b++)
                    ss[3 * a + b] += (double)img[3 * p + a] * img[3 * p + b];
            }
            npx++;
        }
    }
    const float *m = data_mean_image(tr);
    const float *mv = data_mean_image(va);
    for (size_t k = 0; k < DATA_IMAGE_BYTES; k++) {
        cr_assert_float_eq(m[k], mean[k] / 9.0, 1e-3, "mean[%zu]", k);
        cr_assert_eq(m[k], mv[k], "val must be centred with the training mean");
    }
    const data_pca *pc = data_get_pca(tr);
    for (int a = 0; a < 3; a++) {
        cr_assert_float_eq(pc->rgb_mean[a], s[a] / npx, 1e-9);
        for (int b = 0; b < 3; b++) {
            double cov = ss[3 * a + b] / npx - (s[a] / npx) * (s[b] / npx);
            cr_assert_float_eq(pc->cov[3 * a + b], cov, 1e-6 * (1 + fabs(cov)));
        }
    }
    /* eigen-decomposition: C p_i = l_i p_i, unit vectors, descending, orthogonal */
    for (int i = 0; i < 3; i++) {
        if (i > 0)
            cr_assert_geq(pc->eigval[i - 1], pc->eigval[i]);
        double norm = 0;
        for (int r = 0; r < 3; r++) {
            double cp = 0;
            for (int c = 0; c < 3; c++)
                cp += pc->cov[3 * r + c] * pc->eigvec[3 * c + i];
            cr_assert_float_eq(cp, pc->eigval[i] * pc->eigvec[3 * r + i], 1e-6 * (1 + pc->eigval[0]));
            norm += pc->eigvec[3 * r + i] * pc->eigvec[3 * r + i];
        }
        cr_assert_float_eq(norm, 1.0, 1e-9);
    }
    cr_assert_gt(pc->eigval[2], 0.0, "colourful fixtures give three nonzero eigenvalues");
    free(mean);
    free(img);
    free(want);
    data_close(tr);
    data_close(va);
    cr_assert_eq(data_shards_verify(out, "train", err, sizeof err), 0, "%s", err);
    cr_assert_eq(data_shards_verify(out, "val", err, sizeof err), 0, "%s", err);
    th_rmrf(dir);
    free(dir);
}

static void patch_byte(const char *path, long off, int delta)
{
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, off, off < 0 ? SEEK_END : SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, off < 0 ? SEEK_END : SEEK_SET);
    fputc((c + delta) & 0xff, f);
    fclose(f);
}

Test(shards, damage_is_caught, .timeout = 120)
{
    char *dir = th_make_shards(2, 4, "--val-fraction", "0.25");
    char out[4200], path[4300], path2[4400], err[512] = "";
    snprintf(out, sizeof out, "%s/out", dir);

    /* a flipped pixel: open is fine (headers only), verify finds it */
    snprintf(path, sizeof path, "%s/train-00000.tts", out);
    patch_byte(path, DATA_SHARD_HEADER + 1000, 1);
    cr_assert_neq(data_shards_verify(out, "train", err, sizeof err), 0);
    cr_assert(strstr(err, "checksum") && strstr(err, "train-00000.tts"), "%s", err);
    patch_byte(path, DATA_SHARD_HEADER + 1000, -1);
    cr_assert_eq(data_shards_verify(out, "train", err, sizeof err), 0, "%s", err);

    /* a label out of range is refused at open */
    patch_byte(path, -1, 1); /* most significant byte of the last label */
    data_source *s = data_open_shards(out, "train", err, sizeof err);
    cr_assert_null(s);
    cr_assert(strstr(err, "label"), "%s", err);
    patch_byte(path, -1, -1);

    /* a header byte: the header checksum */
    patch_byte(path, 40, 1);
    cr_assert_null(data_open_shards(out, "train", err, sizeof err));
    cr_assert(strstr(err, "header checksum"), "%s", err);
    patch_byte(path, 40, -1);

    /* a truncated shard */
    size_t n;
    uint8_t *b = th_read(path, &n);
    snprintf(path2, sizeof path2, "%s.keep", path);
    cr_assert_eq(rename(path, path2), 0);
    cr_assert_eq(imgfix_write_file(path, b, n - 7), 0);
    cr_assert_null(data_open_shards(out, "train", err, sizeof err));
    cr_assert(strstr(err, "truncated"), "%s", err);
    cr_assert_eq(rename(path2, path), 0);

    /* a val shard where a train shard should be */
    snprintf(path2, sizeof path2, "%s/val-00000.tts", out);
    free(b);
    b = th_read(path2, &n);
    cr_assert_eq(imgfix_write_file(path, b, n), 0);
    cr_assert_null(data_open_shards(out, "train", err, sizeof err));
    cr_assert(strstr(err, "does not match meta.bin"), "%s", err);
    free(b);

    /* meta.bin: one flipped byte anywhere fails its checksum */
    snprintf(path, sizeof path, "%s/meta.bin", out);
    patch_byte(path, 300, 1);
    cr_assert_null(data_open_shards(out, "val", err, sizeof err));
    cr_assert(strstr(err, "checksum"), "%s", err);
    th_rmrf(dir);
    free(dir);
}

Test(shards, memory_checks_refuse_garbage)
{
    char err[256];
    uint8_t junk[5000];
    memset(junk, 0xAB, sizeof junk);
    cr_assert_eq(data_shard_check(junk, sizeof junk, 1, err, sizeof err), -1);
    cr_assert_eq(data_shard_check(junk, 10, 1, err, sizeof err), -1);
    cr_assert_eq(data_meta_check(junk, sizeof junk, err, sizeof err), -1);
    /* a valid empty-payload header of 0 images parses; claims of more do not */
    uint8_t hdr[DATA_SHARD_HEADER];
    data_shard_header h = {.split = "train", .classes = 3, .count = 0};
    h.payload_crc = 0;
    data_shard_header_encode(hdr, &h);
    cr_assert_eq(data_shard_check(hdr, sizeof hdr, 1, err, sizeof err), 0, "%s", err);
    h.count = 2;
    data_shard_header_encode(hdr, &h);
    cr_assert_eq(data_shard_check(hdr, sizeof hdr, 1, err, sizeof err), -1);
    h.count = (uint64_t)1 << 40;
    data_shard_header_encode(hdr, &h);
    cr_assert_eq(data_shard_check(hdr, sizeof hdr, 1, err, sizeof err), -1);
    cr_assert(strstr(err, "claims"), "%s", err);
}
