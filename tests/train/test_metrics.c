/* Tests of the run folder records (metrics.jsonl lines read back field by field, escapes,
 * nulls, text that is not UTF-8, trimming on resume, run.json), the progress line (plain
 * and TTY), top-k errors and `twotower plot` (a real PNG from gnuplot; clear failures
 * without it). */
#include <criterion/criterion.h>
#include <math.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "base/base.h"
#include "train/metrics.h"
#include "train/plot.h"

/* Reads the lines of a file (at most max); returns the count. */
static int read_lines(const char *path, char lines[][1024], int max)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    int n = 0;
    while (n < max && fgets(lines[n], 1024, f))
        n++;
    fclose(f);
    return n;
}

/* A line as a record; asserts it is one. */
static json_t *rec_of(const char *line)
{
    json_t *r = train_metrics_parse(line);
    cr_assert_not_null(r, "not a JSON object: %s", line);
    return r;
}

static double num(const char *line, const char *key)
{
    double v;
    json_t *r = rec_of(line);
    int rc = train_metrics_number(r, key, &v);
    json_decref(r);
    cr_assert(rc >= 0, "key %s missing in %s", key, line);
    return v;
}

/* The string under key (copied into a static buffer), or NULL. */
static const char *str(const char *line, const char *key)
{
    static char s[1024];
    json_t *r = rec_of(line);
    const char *v = json_string_value(json_object_get(r, key));
    if (v)
        snprintf(s, sizeof s, "%s", v);
    json_decref(r);
    return v ? s : NULL;
}

/* train_metrics_number's answer for key in line */
static int num_rc(const char *line, const char *key, double *v)
{
    json_t *r = rec_of(line);
    int rc = train_metrics_number(r, key, v);
    json_decref(r);
    return rc;
}

Test(metrics, lines_read_back)
{
    char *dir = tt_tmpdir("met"), run[4200], err[512];
    snprintf(run, sizeof run, "%s/a/run1", dir); /* parents are created */
    train_metrics mt;
    cr_assert_eq(train_metrics_open(&mt, run, -1, err, sizeof err), 0, "%s", err);
    train_log_row r = {100, 0.25, 0.01, 6.5, 0.97, 231.5, 0.125, 12.5};
    cr_assert_eq(train_metrics_log_train(&mt, &r, err, sizeof err), 0, "%s", err);
    r.loss = NAN; /* a skipped step's loss is not a number: null */
    r.step = 101;
    cr_assert_eq(train_metrics_log_train(&mt, &r, err, sizeof err), 0, "%s", err);
    train_eval_row e = {400, 1.0, 10000, 2.5, 0.41, 0.19, NAN, NAN, 0.001};
    cr_assert_eq(train_metrics_log_eval(&mt, &e, err, sizeof err), 0, "%s", err);
    const char *msg = "lr 0.01 -> 0.001 \"quoted\" back\\slash\nnew\tline \x01";
    cr_assert_eq(train_metrics_log_event(&mt, 400, 1.0, "schedule", msg, err, sizeof err), 0);
    char *argv[] = {"twotower", "train", "--run", "a b\"c", NULL};
    cr_assert_eq(train_metrics_log_resume(&mt, 400, 1.0, "/x/ckpt-00000400.ttc", 4, argv, err,
                                          sizeof err), 0);
    train_metrics_close(&mt);

    char path[4300], lines[16][1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    int n = read_lines(path, lines, 16);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(str(lines[0], "type"), "train");
    cr_assert_eq(num(lines[0], "step"), 100);
    cr_assert_eq(num(lines[0], "epoch"), 0.25);
    cr_assert_eq(num(lines[0], "lr"), 0.01);
    cr_assert_eq(num(lines[0], "loss"), 6.5);
    cr_assert_eq(num(lines[0], "train_top1_err"), 0.97);
    cr_assert_eq(num(lines[0], "images_per_s"), 231.5);
    cr_assert_eq(num(lines[0], "data_wait_share"), 0.125);
    cr_assert_eq(num(lines[0], "time_s"), 12.5);
    double v;
    cr_assert_eq(num_rc(lines[1], "loss", &v), 0, "NaN is written as null");
    cr_assert(isnan(v));
    cr_assert(strstr(lines[1], "null") && !strstr(lines[1], "nan"), "%s", lines[1]);
    cr_assert_str_eq(str(lines[2], "type"), "eval");
    cr_assert_eq(num(lines[2], "images"), 10000);
    cr_assert_eq(num(lines[2], "top1_err_center"), 0.41);
    cr_assert_eq(num(lines[2], "top5_err_center"), 0.19);
    cr_assert_eq(num_rc(lines[2], "top1_err_10view", &v), 0);
    cr_assert_eq(num(lines[2], "lr"), 0.001, "the rate in an evaluation's line");
    cr_assert_str_eq(str(lines[3], "msg"), msg, "escapes round trip: '%s'", str(lines[3], "msg"));
    cr_assert_str_eq(str(lines[3], "kind"), "schedule");
    cr_assert_eq(num(lines[3], "step"), 400, "keys after an escaped string are found");
    cr_assert_str_eq(str(lines[4], "kind"), "resume");
    cr_assert(strstr(lines[4], "\"argv\": [\"twotower\", \"train\", \"--run\", \"a b\\\"c\"]"),
              "%s", lines[4]);
    for (int i = 0; i < n; i++) {
        size_t l = strlen(lines[i]);
        cr_assert(l > 2 && lines[i][0] == '{' && lines[i][l - 2] == '}' && lines[i][l - 1] == '\n',
                  "line %d is one object per line: %s", i, lines[i]);
    }
    tt_rmtree(dir);
    free(dir);
}

Test(metrics, records_are_read_as_json)
{
    const char *l = "{\"type\": \"event\", \"msg\": \"\\\"step\\\": 5, x\", \"step\": 7}";
    double v;
    cr_assert_eq(num_rc(l, "step", &v), 1);
    cr_assert_eq(v, 7, "a key inside a string value is not a key");
    cr_assert_eq(num_rc(l, "missing", &v), -1);
    cr_assert_eq(num_rc(l, "msg", &v), -1, "a string is not a number");
    cr_assert_eq(num_rc("{\"a\": [1, \"x\", null], \"step\": -2.5e3}", "step", &v), 1);
    cr_assert_eq(v, -2500);
    cr_assert_eq(num_rc("{\"step\": 12345678901234567890123}", "step", &v), 1,
                 "a huge integer reads as a real");
    /* not records: junk, a torn line, an array, an empty line */
    const char *bad[] = {"not json", "{\"step\": 3", "[1, 2]", "", "{\"a\": 1} {"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_null(train_metrics_parse(bad[i]), "accepted: %s", bad[i]);
}

/* Text that is not UTF-8 (a path in another encoding) still makes a JSON line. */
Test(metrics, non_utf8_text_is_written_as_json)
{
    char *dir = tt_tmpdir("met"), err[512], path[4300], lines[4][1024];
    train_metrics mt;
    cr_assert_eq(train_metrics_open(&mt, dir, -1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(train_metrics_log_event(&mt, 1, 0, "checkpoint", "caf\xe9 \xc3\xa9", err,
                                         sizeof err), 0, "%s", err);
    cr_assert_eq(train_metrics_log_event(&mt, 2, 0, "checkpoint", "caf\xc3\xa9", err,
                                         sizeof err), 0, "%s", err);
    train_metrics_close(&mt);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    cr_assert_eq(read_lines(path, lines, 4), 2);
    cr_assert_str_eq(str(lines[0], "msg"), "caf? ??", "bytes that are not UTF-8 become '?'");
    cr_assert_str_eq(str(lines[1], "msg"), "caf\xc3\xa9", "valid UTF-8 is kept");
    tt_rmtree(dir);
    free(dir);
}

Test(metrics, resume_trims_lost_steps_and_torn_line)
{
    char *dir = tt_tmpdir("met"), err[512], path[4300], lines[32][1024];
    train_metrics mt;
    cr_assert_eq(train_metrics_open(&mt, dir, -1, err, sizeof err), 0, "%s", err);
    for (int s = 1; s <= 10; s++) {
        train_log_row r = {s, s / 10.0, 0.01, 7.0 - s * 0.1, 0.9, 100, 0.1, s};
        cr_assert_eq(train_metrics_log_train(&mt, &r, err, sizeof err), 0);
        if (s == 5)
            train_metrics_log_event(&mt, 5, 0.5, "checkpoint", "ckpt-00000005.ttc", err,
                                    sizeof err);
    }
    train_metrics_close(&mt);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "a");
    fputs("{\"type\": \"train\", \"step\": 3, \"lo", f); /* killed mid-line */
    fclose(f);

    cr_assert_eq(train_metrics_open(&mt, dir, 6, err, sizeof err), 0, "%s", err);
    train_log_row r = {7, 0.7, 0.01, 1.0, 0.5, 100, 0.1, 7};
    cr_assert_eq(train_metrics_log_train(&mt, &r, err, sizeof err), 0);
    train_metrics_close(&mt);
    int n = read_lines(path, lines, 32);
    cr_assert_eq(n, 8, "steps 1..6, the step-5 event, then the new step 7");
    double prev = 0;
    for (int i = 0; i < n; i++) {
        double s = num(lines[i], "step");
        cr_assert(s >= prev, "steps stay in order");
        prev = s;
    }
    cr_assert_eq(num(lines[7], "step"), 7);
    cr_assert_eq(num(lines[7], "loss"), 1.0);

    /* a fresh (non-resume) open starts the file empty */
    cr_assert_eq(train_metrics_open(&mt, dir, -1, err, sizeof err), 0);
    train_metrics_close(&mt);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, 0);
    tt_rmtree(dir);
    free(dir);
}

Test(metrics, run_json_written_once)
{
    char *dir = tt_tmpdir("met"), err[512], path[4300];
    char *argv[] = {"twotower", "train", "--cpu", "--seed", "7", NULL};
    json_t *extra = json_pack("{s:i}", "epochs", 90);
    train_run_info info = {5, argv, "v0.1.0-3-gabc", "cpu", 7, {2, 10, 2, 67, 3, 8}, extra};
    cr_assert_eq(train_run_info_write(dir, &info, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/run.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "%s: %s", path, je.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "version")), base_version());
    cr_assert_str_eq(json_string_value(json_object_get(j, "git")), "v0.1.0-3-gabc");
    json_t *av = json_object_get(j, "argv");
    cr_assert_eq(json_array_size(av), 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(json_string_value(json_array_get(av, i)), argv[i]);
    cr_assert_eq(json_integer_value(json_object_get(j, "seed")), 7);
    json_t *cfg = json_object_get(j, "config");
    cr_assert_eq(json_integer_value(json_object_get(cfg, "towers")), 2);
    cr_assert_eq(json_integer_value(json_object_get(cfg, "width_div")), 8);
    cr_assert_eq(json_integer_value(json_object_get(j, "epochs")), 90, "the extra members");
    cr_assert_str_eq(json_string_value(json_object_get(j, "backend")), "cpu");
    cr_assert_not_null(json_string_value(json_object_get(j, "compiler")));
    cr_assert(!strncmp(json_string_value(json_object_get(j, "blas")), "OpenBLAS", 8));
    cr_assert(!strncmp(json_string_value(json_object_get(j, "started_utc")), "20", 2));
    json_decref(j);
    /* a resume keeps the first start's run.json */
    info.seed = 99;
    cr_assert_eq(train_run_info_write(dir, &info, err, sizeof err), 0);
    j = json_load_file(path, 0, &je);
    cr_assert_not_null(j);
    cr_assert_eq(json_integer_value(json_object_get(j, "seed")), 7);
    json_decref(j);
    json_decref(extra);
    tt_rmtree(dir);
    free(dir);
}

Test(metrics, progress_plain_lines_every_interval)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    train_progress p;
    train_progress_init(&p, f, 10.0, 100.0, 0);
    cr_assert_eq(p.tty, 0);
    cr_assert_eq(train_progress_update(&p, 100.5, 10, 1000, 0.01, 6.9, 0.01, 250), 1);
    cr_assert_eq(train_progress_update(&p, 105.0, 20, 1000, 0.02, 6.8, 0.01, 250), 0);
    cr_assert_eq(train_progress_update(&p, 111.0, 100, 1000, 0.1, 6.5, 0.01, 250), 1);
    cr_assert_eq(train_progress_update(&p, 112.0, 1000, 1000, 1.0, 6.0, 0.01, 250), 1,
                 "the last step always prints");
    train_progress_end(&p);
    fclose(f);
    cr_assert(strstr(text, "step 100/1000") && strstr(text, " 10.0%"), "%s", text);
    /* 100 steps in 11 s: 900 left -> 99 s */
    cr_assert(strstr(text, "ETA 1m39s"), "%s", text);
    cr_assert(!strchr(text, '\r'), "no carriage returns when not a TTY");
    int nl = 0;
    for (char *c = text; *c; c++)
        nl += *c == '\n';
    cr_assert_eq(nl, 3);
    free(text);
}

Test(metrics, progress_tty_redraws_one_line)
{
    int master, slave;
    cr_assert_eq(openpty(&master, &slave, NULL, NULL, NULL), 0);
    FILE *f = fdopen(slave, "w");
    train_progress p;
    train_progress_init(&p, f, 30.0, 0.0, 0);
    cr_assert_eq(p.tty, 1);
    cr_assert_eq(train_progress_update(&p, 0.5, 5, 0, 0.0, 2.0, 0.01, 10), 1);
    cr_assert_eq(train_progress_update(&p, 0.6, 6, 0, 0.0, 2.0, 0.01, 10), 0, "rate-limited");
    cr_assert_eq(train_progress_update(&p, 0.8, 8, 0, 0.0, 2.0, 0.01, 10), 1);
    train_progress_end(&p);
    fclose(f);
    /* A pty hands its bytes over in pieces (one read may return only the first write),
     * so read until end() has finished the line, the slave side is drained (EIO) or
     * nothing arrives for 5 s. */
    char buf[1024];
    size_t n = 0;
    buf[0] = 0;
    while (n < sizeof buf - 1 && !strchr(buf, '\n')) {
        struct pollfd pfd = {.fd = master, .events = POLLIN};
        if (poll(&pfd, 1, 5000) <= 0)
            break;
        ssize_t got = read(master, buf + n, sizeof buf - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
        buf[n] = 0;
    }
    close(master);
    cr_assert(n > 0);
    cr_assert(buf[0] == '\r' && strstr(buf, "\033[K") && strstr(buf, "step 8"), "%s", buf);
    cr_assert(!strstr(buf, "ETA"), "no ETA without a total");
    cr_assert(strchr(buf, '\n'), "end() finishes the line");
}

Test(metrics, duration_format)
{
    char b[32];
    train_format_duration(b, sizeof b, 7.4);
    cr_assert_str_eq(b, "7s");
    train_format_duration(b, sizeof b, 306);
    cr_assert_str_eq(b, "5m06s");
    train_format_duration(b, sizeof b, 3 * 3600 + 4 * 60);
    cr_assert_str_eq(b, "3h04m");
    train_format_duration(b, sizeof b, 5.5 * 86400);
    cr_assert_str_eq(b, "5d12h");
    train_format_duration(b, sizeof b, NAN);
    cr_assert_str_eq(b, "?");
    train_format_duration(b, sizeof b, -1);
    cr_assert_str_eq(b, "?");
}

Test(metrics, topk_errors)
{
    /* 4 samples, 7 classes */
    const float p[4 * 7] = {
        0.10f, 0.50f, 0.05f, 0.05f, 0.10f, 0.10f, 0.10f, /* label 1: top-1 right */
        0.30f, 0.20f, 0.15f, 0.12f, 0.11f, 0.07f, 0.05f, /* label 4: rank 4, top-5 right */
        0.30f, 0.20f, 0.15f, 0.12f, 0.11f, 0.07f, 0.05f, /* label 5: rank 5, both wrong */
        0.25f, 0.25f, 0.10f, 0.10f, 0.10f, 0.10f, 0.10f, /* label 1 tied with 0: wrong */
    };
    const int32_t y[4] = {1, 4, 5, 1};
    int w1 = 0, w5 = 0;
    cr_assert_eq(train_topk_errors(p, y, 4, 7, &w1, &w5), 0);
    cr_assert_eq(w1, 3);
    cr_assert_eq(w5, 1);
    /* ties break toward the lower index: label 0 in the tie is right */
    const int32_t y0[1] = {0};
    w1 = w5 = 0;
    train_topk_errors(p + 21, y0, 1, 7, &w1, &w5);
    cr_assert_eq(w1, 0);
    /* accumulates across calls */
    train_topk_errors(p, y, 4, 7, &w1, &w5);
    cr_assert_eq(w1, 3);
    cr_assert_eq(w5, 1);
    /* NaN for the label is wrong; NaN elsewhere is ignored */
    float q[3] = {NAN, 0.5f, 0.2f};
    const int32_t ya[1] = {0}, yb[1] = {1};
    w1 = w5 = 0;
    train_topk_errors(q, ya, 1, 3, &w1, &w5);
    cr_assert(w1 == 1 && w5 == 1);
    w1 = w5 = 0;
    train_topk_errors(q, yb, 1, 3, &w1, &w5);
    cr_assert(w1 == 0 && w5 == 0);
    /* V < 5: top-5 covers everything */
    const int32_t yc[1] = {2};
    w1 = w5 = 0;
    train_topk_errors(q, yc, 1, 3, &w1, &w5);
    cr_assert(w1 == 1 && w5 == 0);
    /* bad labels: refused, nothing added */
    const int32_t bad[2] = {1, 3};
    w1 = w5 = 0;
    cr_assert_eq(train_topk_errors(q, bad, 1, 3, &w1, &w5), 0);
    cr_assert_eq(train_topk_errors(p, bad + 1, 1, 3, &w1, &w5), -1);
    const int32_t neg[1] = {-1};
    cr_assert_eq(train_topk_errors(p, neg, 1, 7, &w1, &w5), -1);
    cr_assert_eq(train_topk_errors(p, y, 0, 7, &w1, &w5), -1);
    cr_assert(w1 == 0 && w5 == 0);
}

/* ---- plot ------------------------------------------------------------------------------- */

static int have_gnuplot(void)
{
    return system("gnuplot --version > /dev/null 2>&1") == 0;
}

static void write_run(const char *dir, int with_eval)
{
    train_metrics mt;
    char err[256];
    cr_assert_eq(train_metrics_open(&mt, dir, -1, err, sizeof err), 0, "%s", err);
    double lr = 0.01;
    for (int s = 10; s <= 600; s += 10) {
        if (s == 300 || s == 500)
            lr /= 10;
        double ep = s / 100.0;
        train_log_row r = {s, ep, lr, 2.3 * exp(-s / 200.0) + 0.3, 0.9 * exp(-s / 300.0) + 0.05,
                           200, 0.05, s * 0.1};
        cr_assert_eq(train_metrics_log_train(&mt, &r, err, sizeof err), 0);
        if (with_eval && s % 100 == 0) {
            train_eval_row e = {s, ep, 1000, r.loss + 0.1, r.train_top1_err + 0.05,
                                r.train_top1_err / 3, s >= 300 ? r.train_top1_err : NAN,
                                s >= 300 ? r.train_top1_err / 3.2 : NAN, lr};
            cr_assert_eq(train_metrics_log_eval(&mt, &e, err, sizeof err), 0);
        }
    }
    train_metrics_close(&mt);
}

Test(plot, draws_a_png, .timeout = 60)
{
    if (!have_gnuplot())
        cr_skip_test("gnuplot is not installed (Debian: gnuplot-nox)");
    char *dir = tt_tmpdir("met"), err[1024], png[4300];
    write_run(dir, 1);
    cr_assert_eq(train_plot_run(dir, NULL, 0, NULL, err, sizeof err), 0, "%s", err);
    snprintf(png, sizeof png, "%s/curves.png", dir);
    FILE *f = fopen(png, "rb");
    cr_assert_not_null(f, "%s", png);
    unsigned char sig[8];
    cr_assert_eq(fread(sig, 1, 8, f), 8);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    cr_assert_eq(memcmp(sig, "\x89PNG\r\n\x1a\n", 8), 0, "not a PNG");
    cr_assert(size > 10000, "a PNG of %ld bytes is too small to hold three panels", size);
    /* -o elsewhere (outside the run folder: inside it only curves.png is plot's) and
     * against the step; train-only runs plot too */
    char *dir2 = tt_tmpdir("met");
    write_run(dir2, 0);
    snprintf(png, sizeof png, "%s/other.png", dir);
    char *argv[] = {"plot", dir2, "-o", png, "--x", "step", NULL};
    cr_assert_eq(train_plot_main(6, argv), 0);
    struct stat st;
    cr_assert(stat(png, &st) == 0 && st.st_size > 5000);
    tt_rmtree(dir);
    tt_rmtree(dir2);
    free(dir);
    free(dir2);
}

/* The first n - 1 bytes of the file at path into buf, 0-terminated. */
static void read_text(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = 0;
    fclose(f);
}

/* A run with one training line and one evaluation (a short run): every panel's points
 * share one x, and each curve one y. The script sets those ranges itself, so gnuplot,
 * whose stderr a wrapper keeps, warns of no empty range. */
Test(plot, one_point_sets_its_ranges, .timeout = 60)
{
    if (!have_gnuplot())
        cr_skip_test("gnuplot is not installed (Debian: gnuplot-nox)");
    char *dir = tt_tmpdir("met"), err[1024], path[4300], wrap[4300];
    train_metrics mt;
    cr_assert_eq(train_metrics_open(&mt, dir, -1, err, sizeof err), 0, "%s", err);
    train_log_row r = {8, 1.0, 0.01, 2.3, 0.9, 200, 0.05, 0.1};
    cr_assert_eq(train_metrics_log_train(&mt, &r, err, sizeof err), 0);
    train_eval_row e = {8, 1.0, 256, 2.35, 0.9, 0.5, NAN, NAN, 0.01};
    cr_assert_eq(train_metrics_log_eval(&mt, &e, err, sizeof err), 0);
    train_metrics_close(&mt);
    snprintf(wrap, sizeof wrap, "%s/gnuplot-wrapper", dir);
    FILE *f = fopen(wrap, "w");
    cr_assert_not_null(f);
    fprintf(f, "#!/bin/sh\nexec gnuplot \"$@\" 2>'%s/gnuplot.err'\n", dir);
    fclose(f);
    cr_assert_eq(chmod(wrap, 0755), 0);
    cr_assert_eq(train_plot_run(dir, NULL, 0, wrap, err, sizeof err), 0, "%s", err);
    char text[4096], gp[16384];
    snprintf(path, sizeof path, "%s/gnuplot.err", dir);
    read_text(path, text, sizeof text);
    cr_assert(!strstr(text, "empty"), "gnuplot warned: %s", text);
    snprintf(path, sizeof path, "%s/plot/curves.gp", dir);
    read_text(path, gp, sizeof gp);
    /* epoch 1 widened by half an epoch; the lr panel a decade each way on its log axis */
    cr_assert(strstr(gp, "set xrange [0.5:1.5]"), "%s", gp);
    cr_assert(strstr(gp, "set yrange [0.001:0.1]"), "%s", gp);
    tt_rmtree(dir);
    free(dir);
}

Test(plot, fails_clearly)
{
    char *dir = tt_tmpdir("met"), err[1024];
    /* no metrics at all */
    cr_assert_eq(train_plot_run(dir, NULL, 0, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "metrics.jsonl") && strstr(err, dir), "%s", err);
    /* metrics without records */
    train_metrics mt;
    cr_assert_eq(train_metrics_open(&mt, dir, -1, err, sizeof err), 0);
    train_metrics_log_event(&mt, 0, 0, "start", "x", err, sizeof err);
    train_metrics_close(&mt);
    cr_assert_eq(train_plot_run(dir, NULL, 0, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "no train or eval records"), "%s", err);
    /* gnuplot missing */
    write_run(dir, 1);
    cr_assert_eq(train_plot_run(dir, NULL, 0, "/nonexistent/gnuplot", err, sizeof err), -1);
    cr_assert(strstr(err, "gnuplot") && strstr(err, "apt-get install gnuplot-nox"), "%s", err);
    /* usage errors */
    char *a1[] = {"plot", NULL};
    char *a2[] = {"plot", dir, "--x", "time", NULL};
    cr_assert_eq(train_plot_main(1, a1), 2);
    cr_assert_eq(train_plot_main(4, a2), 2);
    tt_rmtree(dir);
    free(dir);
}
