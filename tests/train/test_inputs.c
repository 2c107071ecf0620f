/* test_inputs: the trainer's side of "every input is checked when it is opened": a bad
 * test label stops `train` before any step (naming the file, no run folder made); a
 * looping link named like the IDX images is reported as that file, not as a missing
 * meta.bin; a FIFO named like the IDX file or a checkpoint is refused without waiting;
 * --resume onto another dataset names both datasets' class and image counts. */
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/helpers.h"
#include "train/checkpoint.h"
#include "train/train.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

/* A tiny CPU run on data, writing run. */
static void tiny_options(train_options *o, const char *data, const char *run)
{
    train_options_default(o);
    o->data = data;
    o->size = 67;
    o->batch = 2;
    o->width_div = 8;
    o->epochs = 1;
    o->train_limit = 8;
    o->test_limit = 4;
    o->ckpt_every = 2;
    o->quiet = 1;
    o->run_dir = run;
}

/* train_run(o) with fd 2 sent to a file; *log gets what it printed. */
static int run_captured(const train_options *o, char **log)
{
    char path[] = "/tmp/tt_train_inputs_log_XXXXXX";
    int saved, fd = th_capture_begin(path, &saved);
    int rc = train_run(o);
    *log = th_capture_end(fd, saved, path);
    return rc;
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

Test(inputs, bad_test_label_stops_train_before_any_step, .timeout = 60)
{
    char *d = th_tmpdir();
    th_write_idx(d, "train", 20, 20, -1, 0);
    th_write_idx(d, "t10k", 10, 10, 5, 200);
    char run[4300], lab[4300], *log;
    snprintf(run, sizeof run, "%s/run", d);
    snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte.gz", d);
    train_options o;
    tiny_options(&o, d, run);
    cr_assert_eq(run_captured(&o, &log), 2, "%s", log);
    cr_assert(strstr(log, lab) && strstr(log, "label 200 of image 5"), "%s", log);
    cr_assert(!exists(run), "the run folder was made before the data was checked");
    free(log);
    th_rmrf(d);
    free(d);
}

Test(inputs, looping_idx_link_is_named, .timeout = 30)
{
    char *d = th_tmpdir();
    char img[4300], loop[4300], run[4300], *log;
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte.gz", d);
    snprintf(loop, sizeof loop, "%s/loop", d);
    snprintf(run, sizeof run, "%s/run", d);
    cr_assert_eq(symlink("loop", img), 0);
    cr_assert_eq(symlink("train-images-idx3-ubyte.gz", loop), 0);
    train_options o;
    tiny_options(&o, d, run);
    cr_assert_eq(run_captured(&o, &log), 2, "%s", log);
    cr_assert(strstr(log, img) && strstr(log, "symbolic links"), "%s", log);
    cr_assert_null(strstr(log, "meta.bin"), "%s", log);
    free(log);
    th_rmrf(d);
    free(d);
}

Test(inputs, fifos_are_refused_without_waiting, .timeout = 30)
{
    char *d = th_tmpdir();
    char img[4300], run[4300], ck[4300], err[1024], *log;
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte.gz", d);
    snprintf(run, sizeof run, "%s/run", d);
    cr_assert_eq(mkfifo(img, 0600), 0);
    train_options o;
    tiny_options(&o, d, run);
    cr_assert_eq(run_captured(&o, &log), 2, "%s", log);
    cr_assert(strstr(log, img) && strstr(log, "FIFO"), "%s", log);
    free(log);
    /* a checkpoint */
    snprintf(ck, sizeof ck, "%s/ckpt-00000004.ttc", d);
    cr_assert_eq(mkfifo(ck, 0600), 0);
    train_ckpt_meta meta;
    cr_assert_neq(train_ckpt_load(ck, &meta, NULL, err, sizeof err), 0);
    cr_assert(strstr(err, ck) && strstr(err, "FIFO"), "%s", err);
    th_rmrf(d);
    free(d);
}

Test(inputs, resume_onto_another_dataset_names_both, .timeout = 240)
{
    struct stat st;
    if (stat(FMNIST "/train-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("no Fashion-MNIST at " FMNIST " (Debian: dataset-fashion-mnist)");
    char *d = th_tmpdir();
    char run[4300], src[4300], out[4300], *log;
    snprintf(run, sizeof run, "%s/run", d);
    snprintf(src, sizeof src, "%s/src", d);
    snprintf(out, sizeof out, "%s/shards", d);
    train_options o;
    tiny_options(&o, FMNIST, run);
    cr_assert_eq(run_captured(&o, &log), 0, "%s", log);
    free(log);
    /* 3 classes, 39 training images: the checkpoint's cursor (image 8) lies inside them,
     * so only the class count tells the datasets apart */
    int good, bad;
    cr_assert_eq(imgfix_make_folder(src, 3, 14, 7, 0, &good, &bad), 0);
    char *argv[] = {"prep", src, out, "--quiet", "--threads", "2"};
    cr_assert_eq(th_run_prep(6, argv, &log), 0, "%s", log);
    free(log);
    tiny_options(&o, out, run);
    o.epochs = 2;
    o.resume = run;
    cr_assert_eq(run_captured(&o, &log), 2, "%s", log);
    cr_assert(strstr(log, "another dataset") && strstr(log, "10 class outputs") &&
                  strstr(log, "3 classes") && strstr(log, "39 training images"),
              "%s", log);
    free(log);
    th_rmrf(d);
    free(d);
}
