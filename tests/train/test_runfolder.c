/* test_runfolder: nothing lost, nothing hung. A run folder belongs to one run: a new run
 * never writes over an earlier one, a second trainer on a folder in use is refused naming
 * the holder, a resume takes only its own run's checkpoints; the layout is checked before
 * any step; a full disk (a small tmpfs: skipped where it cannot be mounted) stops the run
 * at start (run.json, the lock) or at the first lost metrics line, the newest checkpoint
 * intact and the resumed run's metrics whole; export, plot, dump, bench and prep refuse
 * outputs that would replace an input, a device, a FIFO, or a run's files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../data/helpers.h"
#include "train/checkpoint.h"
#include "train/train.h"

/* ---- helpers ---------------------------------------------------------------------- */

/* snprintf into a path buffer, asserting that nothing was cut off */
#define PATHF(buf, ...) cr_assert(snprintf(buf, sizeof buf, __VA_ARGS__) < (int)sizeof buf)

/* 20 + 10 IDX images in dir: the smallest data set the trainer opens. */
static void make_data(const char *dir)
{
    th_write_idx(dir, "train", 20, 20, -1, 0);
    th_write_idx(dir, "t10k", 10, 10, -1, 0);
}

/* A tiny CPU run: 4 steps per epoch of batch 2, a metrics line per step. */
static void tiny_options(train_options *o, const char *data, const char *run, uint64_t seed)
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
    o->log_every = 1;
    o->quiet = 1;
    o->seed = seed;
    o->run_dir = run;
}

typedef int (*main_fn)(int argc, char **argv);

/* fn(argc, argv), or train_run(o) when fn is NULL, with fd 2 sent to a file; *log gets
 * what it printed. */
static int captured(const train_options *o, main_fn fn, int argc, char **argv, char **log)
{
    char path[] = "/tmp/tt_runfolder_log_XXXXXX";
    int saved, fd = th_capture_begin(path, &saved);
    int rc = fn ? fn(argc, argv) : train_run(o);
    *log = th_capture_end(fd, saved, path);
    return rc;
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* The whole file (NUL-terminated), *n its size; NULL when it cannot be read. */
static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long k = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc((size_t)k + 1, 1);
    cr_assert(fread(b, 1, (size_t)k, f) == (size_t)k);
    fclose(f);
    *n = (size_t)k;
    return b;
}

/* The step of the newest checkpoint of RUN (the one a resume takes), or -1. */
static long newest_ckpt(const char *run)
{
    char dir[4096], path[4400], err[1024];
    PATHF(dir, "%s/ckpt", run);
    if (train_ckpt_latest(dir, path, sizeof path, NULL, 0, err, sizeof err) != 0)
        return -1;
    const char *s = strrchr(path, '-');
    return s ? strtol(s + 1, NULL, 10) : -1;
}

/* The steps of RUN/metrics.jsonl's train lines in order (every line must be whole JSON);
 * returns their count. */
static int train_steps(const char *run, long *steps, int max)
{
    char path[4096], line[4096];
    PATHF(path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *rec = train_metrics_parse(line);
        cr_assert_not_null(rec, "%s holds a line that is not a record: %s", path, line);
        const char *type = json_string_value(json_object_get(rec, "type"));
        double s;
        if (type && !strcmp(type, "train") && n < max &&
            train_metrics_number(rec, "step", &s) == 1)
            steps[n++] = (long)s;
        json_decref(rec);
    }
    fclose(f);
    return n;
}

/* Polls until path exists and holds needle (NULL: any content), up to 60 s. */
static int wait_for(const char *path, const char *needle)
{
    for (int i = 0; i < 60000; i++) {
        size_t n;
        char *b = slurp(path, &n);
        int ok = b && n > 0 && (!needle || strstr(b, needle));
        free(b);
        if (ok)
            return 1;
        usleep(1000);
    }
    return 0;
}

/* A training run in a child process, its stderr in log; returns its pid. */
static pid_t train_in_child(const train_options *o, const char *log)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        /* never outlives the test, whatever becomes of it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        _exit(train_run(o));
    }
    return pid;
}

static int child_status(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A tmpfs of size bytes at dir, or 0 when it cannot be mounted here (not root, no
 * CAP_SYS_ADMIN, a container without mounts). */
static int mount_tmpfs(const char *dir, long size)
{
    char opt[64];
    PATHF(opt, "size=%ld", size);
    return mkdir(dir, 0700) == 0 && mount("tmpfs", dir, "tmpfs", 0, opt) == 0;
}

/* Fills the file system of path: writes path until ENOSPC, then frees `keep` bytes. */
static void fill_disk(const char *path, long keep)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    static char block[65536];
    off_t total = 0;
    for (;;) {
        ssize_t w = write(fd, block, sizeof block);
        if (w <= 0)
            break;
        total += w;
    }
    cr_assert_eq(errno, ENOSPC, "filling %s: %s", path, strerror(errno));
    if (keep > 0)
        cr_assert_eq(ftruncate(fd, total > keep ? total - keep : 0), 0);
    close(fd);
}

/* ---- a run folder belongs to one run ------------------------------------------------ */

Test(runfolder, new_run_never_overwrites_an_earlier_run, .timeout = 60)
{
    char *d = th_tmpdir();
    make_data(d);
    char run[4096], m[4096], info[4096], ck[4096], other[4096], f[4400], *log;
    PATHF(run, "%s/run", d);
    PATHF(m, "%s/metrics.jsonl", run);
    PATHF(info, "%s/run.json", run);
    train_options o;
    tiny_options(&o, d, run, 1);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    long step = newest_ckpt(run);
    cr_assert_eq(step, 4);
    PATHF(ck, "%s/ckpt/ckpt-%08ld.ttc", run, step);
    size_t nm, ni, nc;
    char *m0 = slurp(m, &nm), *i0 = slurp(info, &ni), *c0 = slurp(ck, &nc);
    cr_assert(m0 && i0 && c0);

    /* another seed into the same folder: refused, every file as it was */
    tiny_options(&o, d, run, 2);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 2, "%s", log);
    cr_assert(strstr(log, run) && strstr(log, "not empty") && strstr(log, "--resume"), "%s", log);
    free(log);
    size_t n;
    char *m1 = slurp(m, &n);
    cr_assert(n == nm && !memcmp(m0, m1, n), "metrics.jsonl changed");
    free(m1);
    m1 = slurp(info, &n);
    cr_assert(n == ni && !memcmp(i0, m1, n), "run.json changed");
    free(m1);
    m1 = slurp(ck, &n);
    cr_assert(n == nc && !memcmp(c0, m1, n), "the checkpoint changed");
    free(m1);
    free(m0);
    free(i0);
    free(c0);

    /* a folder holding something else, and one whose ckpt is a file: refused before any
     * step (no metrics written), naming what is there */
    PATHF(other, "%s/other", d);
    cr_assert_eq(mkdir(other, 0700), 0);
    PATHF(f, "%s/ckpt", other);
    fclose(fopen(f, "w"));
    tiny_options(&o, d, other, 1);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 2, "%s", log);
    cr_assert(strstr(log, other) && strstr(log, "ckpt"), "%s", log);
    PATHF(f, "%s/metrics.jsonl", other);
    cr_assert(!exists(f), "a refused run wrote metrics");
    free(log);
    /* an empty folder is a new run's */
    PATHF(other, "%s/empty", d);
    cr_assert_eq(mkdir(other, 0700), 0);
    tiny_options(&o, d, other, 1);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    th_rmrf(d);
    free(d);
}

/* A start refused before the claim lets go of no lock it does not hold: fd 0 (here a file
 * with text in it) is neither truncated nor closed. */
Test(runfolder, refused_start_leaves_the_callers_files_alone, .timeout = 30)
{
    char *d = th_tmpdir();
    char in[4096], run[4096], *log;
    PATHF(in, "%s/stdin.txt", d);
    PATHF(run, "%s/run", d);
    FILE *f = fopen(in, "w");
    fputs("keep me\n", f);
    fclose(f);
    int fd = open(in, O_RDWR);
    cr_assert(fd >= 0);
    int saved = dup(0);
    dup2(fd, 0);
    close(fd);
    train_options o;
    tiny_options(&o, "/nonexistent/twotower-data", run, 1);
    int rc = captured(&o, NULL, 0, NULL, &log);
    int open0 = fcntl(0, F_GETFD) != -1;
    dup2(saved, 0);
    close(saved);
    cr_assert_eq(rc, 2, "%s", log);
    free(log);
    cr_assert(open0, "fd 0 was closed");
    size_t n;
    char *text = slurp(in, &n);
    cr_assert_str_eq(text, "keep me\n");
    free(text);
    th_rmrf(d);
    free(d);
}

Test(runfolder, second_trainer_is_refused_naming_the_holder, .timeout = 120)
{
    char *d = th_tmpdir();
    make_data(d);
    char run[4096], m[4096], lock[4096], clog[4096], *log;
    PATHF(run, "%s/run", d);
    PATHF(m, "%s/metrics.jsonl", run);
    PATHF(lock, "%s/.lock", run);
    PATHF(clog, "%s/child.log", d);
    train_options o;
    tiny_options(&o, d, run, 1);
    o.epochs = 5000; /* minutes: it runs until it is killed, */
    o.patience = 1000000; /* never stopped by a plateau */
    pid_t child = train_in_child(&o, clog);
    cr_assert(wait_for(m, "\"kind\": \"checkpoint\""), "the first trainer never saved");
    char pid[32];
    PATHF(pid, "process %ld", (long)child);

    tiny_options(&o, d, run, 1);
    int rc = captured(&o, NULL, 0, NULL, &log);
    cr_assert_eq(rc, 2, "%s", log);
    cr_assert(strstr(log, "in use") && strstr(log, pid) && strstr(log, lock), "%s", log);
    free(log);
    /* a resume is a second trainer too */
    o.resume = run;
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 2, "%s", log);
    cr_assert(strstr(log, "in use") && strstr(log, pid), "%s", log);
    free(log);

    /* the lock dies with its holder, however it ends */
    kill(child, SIGKILL);
    cr_assert_eq(child_status(child), 128 + SIGKILL);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    long steps[4096];
    int n = train_steps(run, steps, 4096);
    for (int i = 1; i < n; i++)
        cr_assert_eq(steps[i], steps[i - 1] + 1, "one trainer's lines: %ld after %ld", steps[i],
                     steps[i - 1]);
    size_t k;
    char *held = slurp(lock, &k);
    cr_assert(held && k == 0, "a finished run's lock file names no process: '%s'", held);
    free(held);
    th_rmrf(d);
    free(d);
}

Test(runfolder, resume_takes_only_its_own_runs_checkpoints, .timeout = 60)
{
    char *d = th_tmpdir();
    make_data(d);
    char a[4096], b[4096], c[4096], ck[4400], bm[4096], moved[4096], *log;
    PATHF(a, "%s/a", d);
    PATHF(b, "%s/b", d);
    PATHF(c, "%s/c", d);
    PATHF(bm, "%s/metrics.jsonl", b);
    train_options o;
    tiny_options(&o, d, a, 1);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    tiny_options(&o, d, b, 2);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    size_t n0, n;
    char *m0 = slurp(bm, &n0);
    PATHF(ck, "%s/ckpt/ckpt-00000004.ttc", a);
    /* a's checkpoint continued in b's folder: refused, b as it was */
    tiny_options(&o, d, b, 1);
    o.resume = ck;
    o.epochs = 2;
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 2, "%s", log);
    cr_assert(strstr(log, "holds another run") && strstr(log, b), "%s", log);
    free(log);
    char *m1 = slurp(bm, &n);
    cr_assert(n == n0 && !memcmp(m0, m1, n), "b's metrics changed");
    free(m0);
    free(m1);
    /* in a new folder it is a run continued elsewhere */
    o.run_dir = c;
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    cr_assert_eq(newest_ckpt(c), 8);
    /* a mistyped --resume creates nothing (its folder would be d itself) */
    char nope[4400], dl[4400];
    PATHF(nope, "%s/nope", d);
    PATHF(dl, "%s/.lock", d);
    o.run_dir = NULL;
    o.resume = nope;
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 2, "%s", log);
    cr_assert(strstr(log, nope), "%s", log);
    free(log);
    cr_assert(!exists(dl), "a refused resume left a lock file in %s", d);
    /* the layout is checked before any step: a's ckpt/ replaced by a file */
    PATHF(moved, "%s/ckpt-moved", a);
    PATHF(ck, "%s/ckpt", a);
    cr_assert_eq(rename(ck, moved), 0);
    fclose(fopen(ck, "w"));
    PATHF(ck, "%s/ckpt-00000004.ttc", moved);
    o.run_dir = a;
    o.resume = ck;
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 2, "%s", log);
    cr_assert(strstr(log, "is not a folder") && strstr(log, "/ckpt"), "%s", log);
    free(log);
    th_rmrf(d);
    free(d);
}

/* ---- the first failed write stops the run ------------------------------------------ */

Test(runfolder, full_disk_at_start_stops_before_training, .timeout = 60)
{
    char *d = th_tmpdir();
    make_data(d);
    char mnt[4096], run[4096], fill[4096], f[4400], *log;
    PATHF(mnt, "%s/mnt", d);
    if (!mount_tmpfs(mnt, 1 << 20)) {
        int e = errno;
        th_rmrf(d);
        cr_skip_test("cannot mount a tmpfs here (%s): needs root with CAP_SYS_ADMIN",
                     strerror(e));
    }
    PATHF(run, "%s/run", mnt);
    PATHF(fill, "%s/fill", mnt);
    /* one page left: the lock file's id fits, run.json does not */
    fill_disk(fill, 4096);
    train_options o;
    tiny_options(&o, d, run, 1);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 1, "%s", log);
    PATHF(f, "%s/run.json", run);
    cr_assert(strstr(log, f) && strstr(log, "No space left on device") &&
                  strstr(log, "cannot start"), "%s", log);
    PATHF(f, "%s/metrics.jsonl", run);
    cr_assert(!exists(f), "metrics written after run.json failed");
    cr_assert_eq(newest_ckpt(run), -1, "a checkpoint after run.json failed");
    free(log);
    /* nothing left at all: the lock file's id does not fit */
    unlink(fill);
    th_rmrf(run);
    fill_disk(fill, 0);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 1, "%s", log);
    cr_assert(strstr(log, ".lock") && strstr(log, "No space left on device"), "%s", log);
    free(log);
    cr_assert_eq(umount2(mnt, MNT_DETACH), 0);
    th_rmrf(d);
    free(d);
}

Test(runfolder, full_disk_mid_run_stops_at_the_first_lost_line, .timeout = 120)
{
    char *d = th_tmpdir();
    make_data(d);
    char mnt[4096], run[4096], fill[4096], m[4400], clog[4096], tmp[4400], *log;
    PATHF(mnt, "%s/mnt", d);
    if (!mount_tmpfs(mnt, 16 << 20)) {
        int e = errno;
        th_rmrf(d);
        cr_skip_test("cannot mount a tmpfs here (%s): needs root with CAP_SYS_ADMIN",
                     strerror(e));
    }
    PATHF(run, "%s/run", mnt);
    PATHF(fill, "%s/fill", mnt);
    PATHF(m, "%s/metrics.jsonl", run);
    PATHF(clog, "%s/child.log", d);
    /* a first sitting to step 4 (its checkpoint), then a long second one with no periodic
     * checkpoints, whose disk fills once it has resumed: only metrics lines are written */
    train_options o;
    tiny_options(&o, d, run, 1);
    o.patience = 1000000; /* the checkpoint's schedule: never stopped by a plateau */
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    cr_assert_eq(newest_ckpt(run), 4);
    tiny_options(&o, d, run, 1);
    o.resume = run;
    o.epochs = 5000; /* minutes: it runs until the disk is full */
    o.ckpt_every = 0;
    pid_t child = train_in_child(&o, clog);
    cr_assert(wait_for(m, "\"kind\": \"resume\""), "the second sitting never resumed");
    fill_disk(fill, 0);
    int rc = child_status(child);
    size_t n;
    char *clogt = slurp(clog, &n);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, clogt);
    cr_assert(strstr(clogt, m) && strstr(clogt, "No space left on device") &&
                  strstr(clogt, "stopped at step"), "%s", clogt);
    free(clogt);
    cr_assert_eq(newest_ckpt(run), 4, "the newest checkpoint is the one before the failure");
    PATHF(tmp, "%s/ckpt/ckpt-00000004.ttc.tmp", run);
    cr_assert(!exists(tmp));

    /* space again: the resumed run redoes the lost steps, and the metrics read as one run */
    unlink(fill);
    tiny_options(&o, d, run, 1);
    o.resume = run;
    o.epochs = 3;
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    long steps[64];
    int k = train_steps(run, steps, 64);
    cr_assert_eq(k, 12, "%d train lines", k);
    for (int i = 0; i < k; i++)
        cr_assert_eq(steps[i], i + 1, "line %d is step %ld", i, steps[i]);
    cr_assert_eq(umount2(mnt, MNT_DETACH), 0);
    th_rmrf(d);
    free(d);
}

/* ---- outputs never replace inputs or devices ---------------------------------------- */

Test(runfolder, outputs_never_replace_inputs_or_devices, .timeout = 60)
{
    char *d = th_tmpdir();
    make_data(d);
    char run[4096], ck[4400], old[4400], m[4096], fifo[4096], dev[4096], png[4096], sub[4096];
    char *log;
    PATHF(run, "%s/run", d);
    PATHF(m, "%s/metrics.jsonl", run);
    PATHF(fifo, "%s/fifo", d);
    PATHF(dev, "%s/null", d);
    train_options o;
    tiny_options(&o, d, run, 1);
    cr_assert_eq(captured(&o, NULL, 0, NULL, &log), 0, "%s", log);
    free(log);
    PATHF(ck, "%s/ckpt/ckpt-00000004.ttc", run);
    PATHF(old, "%s/ckpt/ckpt-00000002.ttc", run);
    size_t nc, nm, n;
    char *c0 = slurp(ck, &nc), *m0 = slurp(m, &nm), *x;
    cr_assert(c0 && m0);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int have_dev = mknod(dev, S_IFCHR | 0600, makedev(1, 3)) == 0;

    /* export: the checkpoint itself, an older checkpoint of the run it names, a FIFO */
    char *e1[] = {"export", ck, ck};
    cr_assert_eq(captured(NULL, train_export_main, 3, e1, &log), 2, "%s", log);
    cr_assert(strstr(log, ck) && strstr(log, "same file as the input"), "%s", log);
    free(log);
    char *e2[] = {"export", run, old};
    cr_assert_eq(captured(NULL, train_export_main, 3, e2, &log), 2, "%s", log);
    cr_assert(strstr(log, old) && strstr(log, "lies inside"), "%s", log);
    free(log);
    char *e3[] = {"export", run, fifo};
    cr_assert_eq(captured(NULL, train_export_main, 3, e3, &log), 2, "%s", log);
    cr_assert(strstr(log, fifo) && strstr(log, "FIFO"), "%s", log);
    free(log);
    x = slurp(ck, &n);
    cr_assert(n == nc && !memcmp(x, c0, n), "the checkpoint changed");
    free(x);
    cr_assert(exists(old), "the older checkpoint is gone");

    /* plot: the metrics, another file in the run folder, a FIFO */
    char *p1[] = {"plot", run, "-o", m};
    cr_assert_eq(captured(NULL, train_plot_main, 4, p1, &log), 2, "%s", log);
    cr_assert(strstr(log, m) && strstr(log, "same file as the input"), "%s", log);
    free(log);
    x = slurp(m, &n);
    cr_assert(n == nm && !memcmp(x, m0, n), "metrics.jsonl changed");
    free(x);
    PATHF(png, "%s/loss.png", run);
    char *p2[] = {"plot", run, "-o", png};
    cr_assert_eq(captured(NULL, train_plot_main, 4, p2, &log), 2, "%s", log);
    cr_assert(strstr(log, png) && strstr(log, "curves.png"), "%s", log);
    cr_assert(!exists(png));
    free(log);
    char *p3[] = {"plot", run, "-o", fifo};
    cr_assert_eq(captured(NULL, train_plot_main, 4, p3, &log), 2, "%s", log);
    free(log);

    /* dump and bench: checked before any work */
    char *du[] = {"dump", "--out", fifo, "--size", "67", "--width-div", "8"};
    cr_assert_eq(captured(NULL, train_dump_main, 7, du, &log), 2, "%s", log);
    cr_assert(strstr(log, fifo) && strstr(log, "FIFO"), "%s", log);
    free(log);
    char *be[] = {"bench", "--cpu", "--json", fifo, "--size", "67", "--width-div", "8",
                  "--batch", "2", "--steps", "1", "--warmup", "0", "--profile-steps", "0"};
    cr_assert_eq(captured(NULL, train_bench_main, 16, be, &log), 2, "%s", log);
    cr_assert(strstr(log, fifo) && strstr(log, "FIFO"), "%s", log);
    free(log);
    struct stat st;
    cr_assert(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO was replaced");

    /* a device node (root only): export, dump and plot leave it a device */
    if (have_dev) {
        char *e4[] = {"export", ck, dev};
        char *d2[] = {"dump", "--out", dev};
        char *p4[] = {"plot", run, "-o", dev};
        cr_assert_eq(captured(NULL, train_export_main, 3, e4, &log), 2, "%s", log);
        cr_assert(strstr(log, dev) && strstr(log, "character device"), "%s", log);
        free(log);
        cr_assert_eq(captured(NULL, train_dump_main, 3, d2, &log), 2, "%s", log);
        free(log);
        cr_assert_eq(captured(NULL, train_plot_main, 4, p4, &log), 2, "%s", log);
        free(log);
        cr_assert(stat(dev, &st) == 0 && S_ISCHR(st.st_mode), "the device was replaced");
    } else {
        cr_log_info("mknod refused (%s): the device cases are left out", strerror(errno));
    }

    /* prep: OUT is SRC, or inside it (even when it does not exist yet) */
    char *r1[] = {"prep", d, d, "--quiet"};
    cr_assert_eq(th_run_prep(4, r1, &log), 2, "%s", log);
    cr_assert(strstr(log, "inside SRC"), "%s", log);
    free(log);
    PATHF(sub, "%s/new/shards", d);
    char *r2[] = {"prep", d, sub, "--quiet"};
    cr_assert_eq(th_run_prep(4, r2, &log), 2, "%s", log);
    cr_assert(strstr(log, sub) && strstr(log, "inside SRC"), "%s", log);
    free(log);
    PATHF(sub, "%s/new", d);
    cr_assert(!exists(sub), "prep made OUT inside SRC");
    free(c0);
    free(m0);
    th_rmrf(d);
    free(d);
}
