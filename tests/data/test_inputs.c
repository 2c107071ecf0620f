/* test_inputs: what every reader of src/data checks when it opens a file: FIFOs with an
 * IDX, shard or meta.bin name refused at once (each test has a timeout, so a regression
 * fails instead of hanging); IDX labels above Fashion-MNIST's 10 classes and IDX header
 * counts that disagree with the data refused, naming the file; shards and meta.bin tied
 * together by meta.bin's shard checksums (another prep's file, a stray shard, an old
 * meta.bin version all refused, by the loader and by `prep --verify`). */
#include <sys/stat.h>

#include "data/data_internal.h"
#include "helpers.h"

/* ---- IDX ---------------------------------------------------------------------------- */

/* A fresh folder with good train (20 images) and t10k (10 images) IDX files. */
static char *idx_dir(void)
{
    char *d = th_tmpdir();
    th_write_idx(d, "train", 20, 20, -1, 0);
    th_write_idx(d, "t10k", 10, 10, -1, 0);
    return d;
}

static void expect_idx_refused(const char *dir, int train, const char *want1, const char *want2)
{
    char err[1024] = "";
    data_source *s = data_open_idx(dir, train, err, sizeof err);
    cr_assert_null(s, "%s must be refused", dir);
    cr_assert(strstr(err, want1) && strstr(err, want2), "\"%s\" lacks \"%s\" or \"%s\"", err,
              want1, want2);
}

static void expect_prep_fails(char *src, const char *want1, const char *want2)
{
    char out[4096];
    snprintf(out, sizeof out, "%s-out", src); /* beside SRC: prep refuses OUT inside it */
    char *argv[] = {"prep", src, out, "--quiet"};
    char *log;
    cr_assert_eq(th_run_prep(4, argv, &log), 1, "prep of %s must fail: %s", src, log);
    cr_assert(strstr(log, want1) && strstr(log, want2), "\"%s\" lacks \"%s\" or \"%s\"", log,
              want1, want2);
    free(log);
    th_rmrf(out);
}

Test(inputs, idx_fifo_is_refused_without_waiting, .timeout = 20)
{
    char *d = idx_dir();
    char path[4300];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", d);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(mkfifo(path, 0600), 0);
    expect_idx_refused(d, 1, path, "FIFO");
    expect_prep_fails(d, path, "FIFO");
    /* a FIFO for the labels, with good images */
    cr_assert_eq(unlink(path), 0);
    th_write_idx(d, "train", 20, 20, -1, 0);
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", d);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(mkfifo(path, 0600), 0);
    expect_idx_refused(d, 1, path, "FIFO");
    th_rmrf(d);
    free(d);
}

Test(inputs, idx_symlink_loop_is_named, .timeout = 20)
{
    char *d = idx_dir();
    char path[4300], other[4300];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", d);
    snprintf(other, sizeof other, "%s/loop", d);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(symlink("loop", path), 0);
    cr_assert_eq(symlink("train-images-idx3-ubyte.gz", other), 0);
    expect_idx_refused(d, 1, path, "symbolic links");
    /* prep takes the name as the IDX source and says why it cannot open it */
    expect_prep_fails(d, path, "symbolic links");
    th_rmrf(d);
    free(d);
}

Test(inputs, idx_label_above_ten_classes_is_refused_at_open, .timeout = 30)
{
    char *d = idx_dir();
    char lab[4300];
    /* training labels: 200 at image 7 is an error, not a 201-class net */
    th_write_idx(d, "train", 20, 20, 7, 200);
    snprintf(lab, sizeof lab, "%s/train-labels-idx1-ubyte.gz", d);
    expect_idx_refused(d, 1, lab, "label 200 of image 7");
    expect_idx_refused(d, 0, lab, "label 200"); /* the test split reads the train stats */
    expect_prep_fails(d, lab, "label 200 of image 7");
    /* 10 is the first label past Fashion-MNIST's classes */
    th_write_idx(d, "train", 20, 20, 3, 10);
    expect_idx_refused(d, 1, lab, "label 10 of image 3");

    /* test labels: refused at open (before any training), naming the t10k file */
    th_write_idx(d, "train", 20, 20, -1, 0);
    th_write_idx(d, "t10k", 10, 10, 9, 200);
    snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte.gz", d);
    char err[1024];
    data_source *s = data_open_idx(d, 1, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_assert_eq(data_classes(s), 10);
    data_close(s);
    expect_idx_refused(d, 0, lab, "label 200 of image 9");
    expect_prep_fails(d, lab, "label 200 of image 9");
    th_rmrf(d);
    free(d);
}

Test(inputs, idx_header_counts_must_match_the_data, .timeout = 30)
{
    char *d = idx_dir();
    char img[4300];
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte.gz", d);
    /* a count smaller than the file: the rest would be silently ignored */
    th_write_idx(d, "train", 20, 17, -1, 0);
    expect_idx_refused(d, 1, img, "data continues after");
    expect_prep_fails(d, img, "data continues after");
    /* a count larger than the file */
    th_write_idx(d, "train", 20, 23, -1, 0);
    expect_idx_refused(d, 1, img, "truncated");
    /* the labels file longer than its count */
    th_write_idx(d, "train", 20, 20, -1, 0);
    char lab[4300];
    snprintf(lab, sizeof lab, "%s/train-labels-idx1-ubyte.gz", d);
    uint8_t h[8], body[25] = {0};
    th_put_be32(h, 0x801), th_put_be32(h + 4, 20);
    th_write_gz(lab, h, 8, body, sizeof body);
    expect_idx_refused(d, 1, lab, "data continues after");
    /* and exactly right opens */
    th_write_idx(d, "train", 20, 20, -1, 0);
    char err[1024];
    data_source *s = data_open_idx(d, 1, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_assert_eq(data_count(s), 20);
    data_close(s);
    th_rmrf(d);
    free(d);
}

/* ---- shards and meta.bin -------------------------------------------------------------- */

/* prep of a generated folder (3 classes x 6 images, made once per dir) with shard size
 * 4 and 1/3 of each class in val, drawn by `seed`: 12 train images in 3 shards and 6 val
 * in 2 whatever the seed, but another seed puts other images in each. Returns OUT. */
static char *prep_into(const char *dir, const char *name, int seed)
{
    char src[4300], seed_s[16], *out = malloc(4300);
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(out, 4300, "%s/%s", dir, name);
    snprintf(seed_s, sizeof seed_s, "%d", seed);
    struct stat st;
    int good, bad;
    if (stat(src, &st) != 0)
        cr_assert_eq(imgfix_make_folder(src, 3, 6, 7, 0, &good, &bad), 0);
    char *argv[] = {"prep", src, out, "--quiet", "--threads", "2", "--shard-size", "4",
                    "--val-fraction", "0.34", "--seed", seed_s};
    char *log;
    cr_assert_eq(th_run_prep(12, argv, &log), 0, "%s", log);
    free(log);
    return out;
}

static int verify(const char *out, char **log)
{
    char *argv[] = {"prep", "--verify", (char *)out};
    return th_run_prep(3, argv, log);
}

/* Both the loader (split `split`) and `prep --verify` refuse out, naming want1, want2. */
static void expect_shards_refused(const char *out, const char *split, const char *want1,
                                  const char *want2)
{
    char err[1024] = "";
    cr_assert_null(data_open_shards(out, split, err, sizeof err), "%s must be refused", out);
    cr_assert(strstr(err, want1) && strstr(err, want2), "\"%s\" lacks \"%s\" or \"%s\"", err,
              want1, want2);
    char *log;
    cr_assert_eq(verify(out, &log), 1, "verify must fail: %s", log);
    cr_assert(strstr(log, want1) && strstr(log, want2), "\"%s\" lacks \"%s\" or \"%s\"", log,
              want1, want2);
    free(log);
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *b = th_read(from, &n);
    unlink(to);
    cr_assert_eq(imgfix_write_file(to, b, n), 0);
    free(b);
}

Test(inputs, shard_fifo_is_refused_without_waiting, .timeout = 30)
{
    char *dir = th_tmpdir();
    char *out = prep_into(dir, "a", 1);
    char path[4400];
    snprintf(path, sizeof path, "%s/train-00001.tts", out);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(mkfifo(path, 0600), 0);
    expect_shards_refused(out, "train", path, "FIFO");
    char err[1024];
    cr_assert_neq(data_shards_verify(out, "train", err, sizeof err), 0);
    cr_assert(strstr(err, path) && strstr(err, "FIFO"), "%s", err);
    /* and meta.bin */
    cr_assert_eq(unlink(path), 0);
    snprintf(path, sizeof path, "%s/meta.bin", out);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(mkfifo(path, 0600), 0);
    cr_assert_null(data_open_shards(out, "train", err, sizeof err));
    cr_assert(strstr(err, path) && strstr(err, "FIFO"), "%s", err);
    free(out);
    th_rmrf(dir);
    free(dir);
}

Test(inputs, files_of_another_prep_are_refused, .timeout = 120)
{
    char *dir = th_tmpdir();
    char *a = prep_into(dir, "a", 1), *b = prep_into(dir, "b", 2);
    char from[4400], to[4400];
    char *log;
    cr_assert_eq(verify(a, &log), 0, "%s", log);
    free(log);

    /* b's meta.bin beside a's shards: the counts agree, the shard checksums do not */
    snprintf(from, sizeof from, "%s/meta.bin", b);
    snprintf(to, sizeof to, "%s/meta.bin", a);
    char keep[4400];
    snprintf(keep, sizeof keep, "%s/meta.keep", dir);
    copy_file(to, keep);
    copy_file(from, to);
    expect_shards_refused(a, "train", "train-00000.tts", "different prep runs");
    copy_file(keep, to);

    /* one of b's shards among a's (same index, same counts) */
    snprintf(from, sizeof from, "%s/val-00001.tts", b);
    snprintf(to, sizeof to, "%s/val-00001.tts", a);
    snprintf(keep, sizeof keep, "%s/val.keep", dir);
    copy_file(to, keep);
    copy_file(from, to);
    expect_shards_refused(a, "val", to, "different prep runs");
    char err[1024];
    cr_assert_neq(data_shards_verify(a, "val", err, sizeof err), 0);
    cr_assert(strstr(err, to), "%s", err);
    copy_file(keep, to);
    cr_assert_eq(verify(a, &log), 0, "%s", log);
    free(log);
    free(a);
    free(b);
    th_rmrf(dir);
    free(dir);
}

Test(inputs, a_stray_shard_is_refused_and_named, .timeout = 120)
{
    char *dir = th_tmpdir();
    char *out = prep_into(dir, "a", 1);
    char from[4400], to[4400];
    snprintf(from, sizeof from, "%s/train-00000.tts", out);
    snprintf(to, sizeof to, "%s/train-00003.tts", out);
    copy_file(from, to);
    /* refused for either split: the folder is one dataset */
    expect_shards_refused(out, "train", to, "not listed");
    expect_shards_refused(out, "val", to, "not listed");
    cr_assert_eq(unlink(to), 0);
    snprintf(to, sizeof to, "%s/val-7.tts", out);
    copy_file(from, to);
    expect_shards_refused(out, "val", to, "not listed");

    /* a new prep into the folder removes the earlier run's shards, strays included */
    char src[4300], *log;
    snprintf(src, sizeof src, "%s/src", dir);
    char *argv[] = {"prep", src, out, "--quiet", "--threads", "2", "--shard-size", "6"};
    cr_assert_eq(th_run_prep(8, argv, &log), 0, "%s", log);
    free(log);
    cr_assert_eq(verify(out, &log), 0, "%s", log);
    free(log);
    struct stat st;
    cr_assert_neq(stat(to, &st), 0, "%s was left", to);
    free(out);
    th_rmrf(dir);
    free(dir);
}

Test(inputs, old_meta_version_asks_for_a_new_prep, .timeout = 60)
{
    char *dir = th_tmpdir();
    char *out = prep_into(dir, "a", 1);
    char path[4400];
    snprintf(path, sizeof path, "%s/meta.bin", out);
    size_t n;
    uint8_t *b = th_read(path, &n);
    cr_assert_eq(b[8], DATA_META_VERSION);
    b[8] = 1; /* version 1: no shard checksums */
    uint32_t crc = (uint32_t)crc32(0, b, (uInt)(n - 4));
    for (int i = 0; i < 4; i++)
        b[n - 4 + i] = (uint8_t)(crc >> (8 * i));
    cr_assert_eq(imgfix_write_file(path, b, n), 0);
    free(b);
    expect_shards_refused(out, "train", "version 1", "re-run");
    free(out);
    th_rmrf(dir);
    free(dir);
}

/* meta.bin's table of shard checksums is bounded by the file before it is read */
Test(inputs, meta_shard_table_is_bounded, .timeout = 60)
{
    char *dir = th_tmpdir();
    char *out = prep_into(dir, "a", 1);
    char path[4400], err[512];
    snprintf(path, sizeof path, "%s/meta.bin", out);
    size_t n;
    uint8_t *b = th_read(path, &n);
    cr_assert_eq(data_meta_check(b, n, err, sizeof err), 0, "%s", err);
    /* cut the file right after the mean image: the table (and the names) are missing */
    size_t cut = DATA_META_FIXED + DATA_IMAGE_BYTES * 4 + 8;
    uint32_t crc = (uint32_t)crc32(0, b, (uInt)(cut - 4));
    for (int i = 0; i < 4; i++)
        b[cut - 4 + i] = (uint8_t)(crc >> (8 * i));
    cr_assert_neq(data_meta_check(b, cut, err, sizeof err), 0);
    cr_assert(strstr(err, "shard checksums"), "%s", err);
    free(b);
    free(out);
    th_rmrf(dir);
    free(dir);
}
