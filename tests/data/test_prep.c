/* test_prep: `prep` on a generated ImageNet-style folder with every kind of bad file
 * (each named in one line, counted, skipped), the --max-skip threshold, a split given by
 * train/ and val/ folders, usage errors, and Fashion-MNIST shards equal to what the
 * on-the-fly IDX loader gives. */
#include <sys/stat.h>

#include "helpers.h"

static int exists(const char *dir, const char *name)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

Test(prep, bad_files_reported_and_skipped, .timeout = 120)
{
    char *dir = th_tmpdir();
    char src[4200], out[4200], out2[4200], err[256];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(out2, sizeof out2, "%s/out2", dir);
    int good, bad;
    cr_assert_eq(imgfix_make_folder(src, 3, 6, 11, 1, &good, &bad), 0);
    cr_assert(good == 18 && bad == IMGFIX_BAD_KINDS);
    char *log;
    char *argv[] = {"prep", src, out, "--threads", "2", "--max-skip", "0.5", "--seed", "3"};
    int rc = th_run_prep(9, argv, &log);
    cr_assert_eq(rc, 0, "%s", log);
    for (int k = 0; k < IMGFIX_BAD_KINDS; k++) {
        char line[4400];
        snprintf(line, sizeof line, "prep: skipped %s/class_00/%s: ", src, imgfix_bad_names[k]);
        char *at = strstr(log, line);
        cr_assert_not_null(at, "no line for %s in:\n%s", imgfix_bad_names[k], log);
        cr_assert_null(strstr(at + 1, line), "%s reported twice", imgfix_bad_names[k]);
    }
    cr_assert_not_null(strstr(log, "9 skipped (33.33%)"), "%s", log);
    cr_assert_not_null(strstr(log, "1 files without an image extension ignored"), "%s", log);
    cr_assert_not_null(strstr(log, "images/s"), "%s", log);
    free(log);
    data_source *tr = data_open_shards(out, "train", err, sizeof err);
    data_source *va = data_open_shards(out, "val", err, sizeof err);
    cr_assert(tr && va, "%s", err);
    /* 6 files per class (bad ones never reach a split), 10% -> 1 per class in val */
    cr_assert_eq(data_count(tr), 15);
    cr_assert_eq(data_count(va), 3);
    data_close(tr);
    data_close(va);

    /* the same folder with the default threshold: non-zero exit, no meta.bin */
    char *argv2[] = {"prep", src, out2, "--quiet", "--threads", "2"};
    rc = th_run_prep(6, argv2, &log);
    cr_assert_eq(rc, 1);
    cr_assert_not_null(strstr(log, "over --max-skip 1.00%: meta.bin not written"), "%s", log);
    cr_assert(!exists(out2, "meta.bin"));
    free(log);
    /* again into the first, good folder: the failed run must not leave the old meta.bin
     * beside its new shards (a dataset made of two runs); the folder is refused instead */
    char *argv3[] = {"prep", src, out, "--quiet", "--threads", "2", "--seed", "4"};
    rc = th_run_prep(8, argv3, &log);
    cr_assert_eq(rc, 1, "%s", log);
    cr_assert(!exists(out, "meta.bin"), "the previous run's meta.bin is still there");
    free(log);
    cr_assert_null(data_open_shards(out, "train", err, sizeof err));
    cr_assert_not_null(strstr(err, "meta.bin"), "%s", err);
    th_rmrf(dir);
    free(dir);
}

Test(prep, split_from_folders_and_usage, .timeout = 120)
{
    char *dir = th_tmpdir();
    char src[4200], tr[4300], va[4300], out[4200], err[256];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(tr, sizeof tr, "%s/train", src);
    snprintf(va, sizeof va, "%s/val", src);
    snprintf(out, sizeof out, "%s/out", dir);
    cr_assert_eq(mkdir(src, 0755), 0);
    int good, bad;
    cr_assert_eq(imgfix_make_folder(tr, 2, 5, 1, 0, &good, &bad), 0);
    cr_assert_eq(imgfix_make_folder(va, 2, 2, 2, 0, &good, &bad), 0);
    char *log;
    char *argv[] = {"prep", "--quiet", src, out, "--shard-size", "3"};
    cr_assert_eq(th_run_prep(6, argv, &log), 0, "%s", log);
    free(log);
    data_source *s = data_open_shards(out, "val", err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_assert_eq(data_count(s), 4);
    cr_assert_eq(data_label(s, 0), 0);
    cr_assert_eq(data_label(s, 3), 1);
    data_close(s);
    s = data_open_shards(out, "train", err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_assert_eq(data_count(s), 10);
    data_close(s);

    char *u1[] = {"prep", src};
    cr_assert_eq(th_run_prep(2, u1, &log), 2);
    free(log);
    char *u2[] = {"prep", src, out, "--bogus"};
    cr_assert_eq(th_run_prep(4, u2, &log), 2);
    cr_assert_not_null(strstr(log, "--bogus"));
    free(log);
    char *u3[] = {"prep", src, out, "--val-fraction", "2"};
    cr_assert_eq(th_run_prep(5, u3, &log), 2);
    free(log);
    char *u4[] = {"prep", "/nonexistent/twotower", out};
    cr_assert_eq(th_run_prep(3, u4, &log), 1);
    cr_assert_not_null(strstr(log, "/nonexistent/twotower"), "%s", log);
    free(log);
    th_rmrf(dir);
    free(dir);
}

/* --limit on a folder: N images drawn by seed across the classes, not the first class's */
Test(prep, limit_draws_from_every_class, .timeout = 120)
{
    char *dir = th_tmpdir();
    char src[4200], out[4200], err[256];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    int good, bad;
    cr_assert_eq(imgfix_make_folder(src, 4, 6, 5, 0, &good, &bad), 0);
    char *log;
    char *argv[] = {"prep", src, out, "--limit", "8", "--val-fraction", "0", "--quiet"};
    cr_assert_eq(th_run_prep(8, argv, &log), 0, "%s", log);
    free(log);
    data_source *tr = data_open_shards(out, "train", err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    cr_assert_eq(data_count(tr), 8);
    int seen[4] = {0}, classes = 0;
    for (int64_t i = 0; i < 8; i++) {
        int32_t c = data_label(tr, i);
        cr_assert(c >= 0 && c < 4);
        if (i > 0) cr_assert(c >= data_label(tr, i - 1), "kept in class order");
        classes += !seen[c]++;
    }
    cr_assert(classes >= 2, "8 of 24 images from %d class(es)", classes);
    data_close(tr);

    /* prep --verify: every checksum matches; then one flipped pixel byte is found */
    char *v[] = {"prep", "--verify", out};
    cr_assert_eq(th_run_prep(3, v, &log), 0, "%s", log);
    cr_assert_not_null(strstr(log, "every header and checksum matches"), "%s", log);
    free(log);
    char shard[4400];
    snprintf(shard, sizeof shard, "%s/train-00000.tts", out);
    FILE *f = fopen(shard, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, -1000, SEEK_END), 0);
    int c = fgetc(f);
    cr_assert_eq(fseek(f, -1000, SEEK_END), 0);
    fputc(c ^ 0x5a, f);
    fclose(f);
    cr_assert_eq(th_run_prep(3, v, &log), 1, "%s", log);
    cr_assert_not_null(strstr(log, "train-00000.tts"), "%s", log);
    free(log);
    th_rmrf(dir);
    free(dir);
}

#define FMNIST "/usr/share/datasets/fashion-mnist"

Test(prep, fashion_mnist_shards_equal_idx_loader, .timeout = 120)
{
    struct stat st;
    if (stat(FMNIST "/train-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("no Fashion-MNIST at " FMNIST " (Debian package dataset-fashion-mnist)");
    char *dir = th_tmpdir();
    char out[4200], err[256];
    snprintf(out, sizeof out, "%s/out", dir);
    char *log;
    char *argv[] = {"prep", FMNIST, out, "--limit", "40", "--shard-size", "16", "--quiet"};
    cr_assert_eq(th_run_prep(8, argv, &log), 0, "%s", log);
    free(log);
    data_source *sh = data_open_shards(out, "train", err, sizeof err);
    cr_assert_not_null(sh, "%s", err);
    data_source *ix = data_open_idx(FMNIST, 1, err, sizeof err);
    cr_assert_not_null(ix, "%s", err);
    cr_assert_eq(data_count(sh), 40);
    cr_assert_eq(data_classes(sh), 10);
    cr_assert_str_eq(data_class_name(sh, 9), "Ankle boot");
    uint8_t *a = malloc(DATA_IMAGE_BYTES), *b = malloc(DATA_IMAGE_BYTES);
    for (int64_t i = 0; i < 40; i++) {
        cr_assert_eq(data_image(sh, i, a, err, sizeof err), 0);
        cr_assert_eq(data_image(ix, i, b, err, sizeof err), 0);
        cr_assert_eq(memcmp(a, b, DATA_IMAGE_BYTES), 0, "image %lld", (long long)i);
        cr_assert_eq(data_label(sh, i), data_label(ix, i));
        for (size_t k = 0; k < DATA_IMAGE_BYTES; k += 3)
            cr_assert(a[k] == a[k + 1] && a[k] == a[k + 2], "grey must reach all channels");
    }
    data_close(ix);
    ix = data_open_idx(FMNIST, 0, err, sizeof err);
    data_source *shv = data_open_shards(out, "val", err, sizeof err);
    cr_assert(ix && shv, "%s", err);
    cr_assert_eq(data_count(shv), 40);
    cr_assert_eq(data_image(shv, 39, a, err, sizeof err), 0);
    cr_assert_eq(data_image(ix, 39, b, err, sizeof err), 0);
    cr_assert_eq(memcmp(a, b, DATA_IMAGE_BYTES), 0);
    free(a);
    free(b);
    data_close(ix);
    data_close(sh);
    data_close(shv);
    th_rmrf(dir);
    free(dir);
}

/* A JPEG of a flat colour (tone) at path. */
static void write_jpeg(const char *path, int tone)
{
    uint8_t rgb[32 * 32 * 3];
    imgfix_picture(rgb, 32, 32, tone, 7);
    uint8_t *buf;
    size_t n;
    cr_assert_eq(imgfix_jpeg_encode(rgb, 32, 32, 3, 90, 0, &buf, &n), 0);
    cr_assert_eq(imgfix_write_file(path, buf, n), 0);
    free(buf);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

/* ILSVRC-2012's layout: train/ with WNID class folders, a flat val/ of
 * ILSVRC2012_val_NNNNNNNN.JPEG and the ground truth beside them. */
Test(prep, imagenet_flat_val_folder, .timeout = 120)
{
    char *dir = th_tmpdir();
    char src[4200], p[4400], out[4200], err[256];
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    const char *wnids[2] = {"n01440764", "n01443537"};
    cr_assert_eq(mkdir(src, 0755), 0);
    snprintf(p, sizeof p, "%s/train", src);
    cr_assert_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/val", src);
    cr_assert_eq(mkdir(p, 0755), 0);
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/train/%s", src, wnids[c]);
        cr_assert_eq(mkdir(p, 0755), 0);
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/train/%s/%s_%d.JPEG", src, wnids[c], wnids[c], i);
            write_jpeg(p, c * 100 + i);
        }
    }
    /* val images 1..4: classes 1, 0, 1, 0 */
    for (int i = 1; i <= 4; i++) {
        snprintf(p, sizeof p, "%s/val/ILSVRC2012_val_%08d.JPEG", src, i);
        write_jpeg(p, 50 + i);
    }
    snprintf(p, sizeof p, "%s/LOC_val_solution.csv", src);
    write_text(p, "ImageId,PredictionString\n"
                  "ILSVRC2012_val_00000003,n01443537 1 2 3 4\n"
                  "ILSVRC2012_val_00000001,n01443537 1 2 3 4\n"
                  "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
                  "ILSVRC2012_val_00000004,n01440764 1 2 3 4\n"
                  "ILSVRC2012_val_00000005,n01440764 1 2 3 4\n");
    char *log;
    char *argv[] = {"prep", src, out, "--threads", "2", "--quiet"};
    int rc = th_run_prep(6, argv, &log);
    cr_assert_eq(rc, 0, "%s", log);
    /* image 5 is listed but absent: named, and the run goes on */
    cr_assert(strstr(log, "ILSVRC2012_val_00000005, which") && strstr(log, "1 image(s) listed"),
              "%s", log);
    free(log);
    data_source *va = data_open_shards(out, "val", err, sizeof err);
    cr_assert(va, "%s", err);
    cr_assert_eq(data_count(va), 4);
    int ones = 0;
    for (int64_t i = 0; i < 4; i++) ones += data_label(va, i);
    cr_assert_eq(ones, 2);
    /* class order: label 0 (images 2 and 4) first, then label 1 */
    cr_assert_eq(data_label(va, 0), 0);
    cr_assert_eq(data_label(va, 3), 1);
    data_close(va);

    /* the devkit's form, given by flag: IDs and an ID -> WNID map */
    char gt[4400], map[4400];
    snprintf(gt, sizeof gt, "%s/gt.txt", dir);
    snprintf(map, sizeof map, "%s/map.txt", dir);
    write_text(gt, "7\n3\n7\n3\n");
    write_text(map, "3 n01440764\n7 n01443537\n");
    char *argv2[] = {"prep", src, out, "--threads", "2", "--quiet", "--val-labels", gt,
                     "--val-synsets", map};
    rc = th_run_prep(10, argv2, &log);
    cr_assert_eq(rc, 0, "%s", log);
    free(log);
    va = data_open_shards(out, "val", err, sizeof err);
    cr_assert(va, "%s", err);
    cr_assert_eq(data_count(va), 4);
    data_close(va);

    /* an image the ground truth does not list stops prep, naming it */
    snprintf(p, sizeof p, "%s/val/ILSVRC2012_val_00000009.JPEG", src);
    write_jpeg(p, 9);
    rc = th_run_prep(10, argv2, &log);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(log, "ILSVRC2012_val_00000009.JPEG: not in the ground truth"), "%s", log);
    free(log);
    /* no ground truth at all: refused, saying which flag gives it */
    snprintf(p, sizeof p, "%s/LOC_val_solution.csv", src);
    cr_assert_eq(unlink(p), 0);
    rc = th_run_prep(6, argv, &log);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(log, "--val-labels"), "%s", log);
    free(log);
    th_rmrf(dir);
    free(dir);
}
