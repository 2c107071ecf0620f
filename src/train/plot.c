/* plot: turns RUN/metrics.jsonl into gnuplot data files and a script, then runs gnuplot
 * to draw three stacked panels (loss, error, learning rate on a log scale) in one PNG.
 * Curves with no finite point are left out: gnuplot refuses to draw an all-undefined one. */
#include "train/plot.h"

#include "base/base.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/base.h"
#include "train/metrics.h"

extern char **environ;

/* Columns of the two data files; gnuplot columns are 1-based in this order. */
static const char *const TRAIN_COLS[] = {"step", "epoch", "lr", "loss", "train_top1_err"};
static const char *const EVAL_COLS[] = {"step", "epoch", "loss", "top1_err_center",
                                        "top5_err_center", "top1_err_10view",
                                        "top5_err_10view", "lr"};
#define N_TRAIN_COLS 5
#define N_EVAL_COLS 8

/* One data file's columns as gnuplot will see them. The ranges let a panel whose points
 * all share one x (or one y) set that axis's range itself: gnuplot's autoscale would warn
 * of an empty range on stderr (a run with one evaluation) before widening it. */
typedef struct {
    long rows;
    long finite[8]; /* finite values per column */
    double lo[8], hi[8];        /* per column: the smallest and largest finite value */
    double xlo[8][2], xhi[8][2]; /* per column: the smallest and largest x (step, epoch:
                                  * columns 1 and 2) of the rows where it is finite */
} table;

static void widen(double *lo, double *hi, double v, int first)
{
    if (first || v < *lo) *lo = v;
    if (first || v > *hi) *hi = v;
}

static void put_row(FILE *f, const json_t *rec, const char *const *cols, int n, table *t)
{
    double v[8], x[2] = {NAN, NAN};
    int ok[8];
    for (int c = 0; c < n; c++) {
        ok[c] = train_metrics_number(rec, cols[c], &v[c]) == 1 && isfinite(v[c]);
        if (c < 2 && ok[c]) x[c] = v[c];
    }
    for (int c = 0; c < n; c++) {
        if (!ok[c]) {
            fputs(c ? " NaN" : "NaN", f);
            continue;
        }
        fprintf(f, c ? " %.9g" : "%.9g", v[c]);
        widen(&t->lo[c], &t->hi[c], v[c], t->finite[c] == 0);
        for (int k = 0; k < 2; k++)
            if (isfinite(x[k])) widen(&t->xlo[c][k], &t->xhi[c][k], x[k], t->finite[c] == 0);
        t->finite[c]++;
    }
    fputc('\n', f);
    t->rows++;
}

/* Quotes s for a gnuplot string literal (single quotes; a quote is doubled). */
static void gp_str(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

typedef struct {
    const char *file; /* "train.dat" / "eval.dat" */
    int col;          /* 1-based */
    const char *title;
    double scale;     /* 100 for errors in percent */
    const char *style;
} curve;

/* The table a curve's file is (train.dat's or eval.dat's), and whether the curve has a
 * point to draw: a finite value in its column where x is finite too. */
static const table *curve_table(const curve *c, const table *tt, const table *te)
{
    return strcmp(c->file, "train.dat") == 0 ? tt : te;
}

static int curve_has_data(const curve *c, int xcol, const table *tt, const table *te)
{
    const table *t = curve_table(c, tt, te);
    return t->finite[c->col - 1] != 0 && t->finite[xcol - 1] != 0;
}

/* Where every point a panel draws has one x (or one y), that axis's range set around it
 * (logy: the panel's y axis is logarithmic), so that gnuplot has no empty range to warn
 * of; autoscale again after the panel. */
static void gp_ranges(FILE *f, int xcol, const curve *cv, int n, const table *tt,
                      const table *te, int logy)
{
    double xlo = 0, xhi = 0, ylo = 0, yhi = 0;
    int any = 0;
    for (int i = 0; i < n; i++) {
        if (!curve_has_data(&cv[i], xcol, tt, te))
            continue;
        const table *t = curve_table(&cv[i], tt, te);
        int c = cv[i].col - 1;
        widen(&ylo, &yhi, t->lo[c] * cv[i].scale, !any); /* scales are positive */
        widen(&ylo, &yhi, t->hi[c] * cv[i].scale, 0);
        widen(&xlo, &xhi, t->xlo[c][xcol - 1], !any);
        widen(&xlo, &xhi, t->xhi[c][xcol - 1], 0);
        any = 1;
    }
    if (!any)
        return;
    if (xlo == xhi) {
        double d = fabs(xlo) * 0.05 > 0.5 ? fabs(xlo) * 0.05 : 0.5;
        fprintf(f, "set xrange [%.9g:%.9g]\n", xlo - d, xhi + d);
    }
    if (ylo == yhi) {
        if (logy && ylo > 0)
            fprintf(f, "set yrange [%.9g:%.9g]\n", ylo / 10, yhi * 10);
        else {
            double d = ylo != 0 ? fabs(ylo) * 0.1 : 1;
            fprintf(f, "set yrange [%.9g:%.9g]\n", ylo - d, yhi + d);
        }
    }
}

/* Plots the curves that have data; a panel without any says "no data". */
static void gp_panel(FILE *f, const char *dir, int xcol, const curve *cv, int n,
                     const table *tt, const table *te, int logy)
{
    int any = 0;
    gp_ranges(f, xcol, cv, n, tt, te, logy);
    for (int i = 0; i < n; i++) {
        if (!curve_has_data(&cv[i], xcol, tt, te))
            continue;
        fputs(any ? ", \\\n     " : "plot ", f);
        char p[4096 + 32];
        snprintf(p, sizeof p, "%s/%s", dir, cv[i].file);
        gp_str(f, p);
        fprintf(f, " using %d:($%d*%g) with %s title ", xcol, cv[i].col, cv[i].scale,
                cv[i].style);
        gp_str(f, cv[i].title);
        any = 1;
    }
    if (!any)
        fputs("set label 9 'no data' at graph 0.5, 0.5 center\n"
              "plot [0:1][0:1] -1 notitle\nunset label 9", f);
    fputs("\nset autoscale x\nset autoscale y\n", f);
}

static int run_gnuplot(const char *prog, const char *script, char *err, size_t errlen)
{
    pid_t pid;
    char *argv[] = {(char *)prog, (char *)script, NULL};
    int rc = posix_spawnp(&pid, prog, NULL, NULL, argv, environ);
    if (rc != 0) {
        base_errf(err, errlen, "plot: cannot run %s: %s (install it: apt-get install gnuplot-nox)",
             prog, strerror(rc));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            base_errf(err, errlen, "plot: waiting for %s: %s", prog, strerror(errno));
            return -1;
        }
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        base_errf(err, errlen, "plot: %s not found (install it: apt-get install gnuplot-nox)", prog);
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        base_errf(err, errlen, "plot: %s %s failed (status %d); its messages are above", prog,
             script, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return -1;
    }
    return 0;
}

/* 1 when out names run_dir/curves.png, plot's own picture in the run folder. */
static int is_own_picture(const char *run_dir, const char *out)
{
    char dir[4096], a[PATH_MAX], b[PATH_MAX];
    const char *slash = strrchr(out, '/');
    if (strcmp(slash ? slash + 1 : out, "curves.png") != 0)
        return 0;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - out > 0 ? slash - out : 1), out);
    return realpath(dir, a) && realpath(run_dir, b) && !strcmp(a, b);
}

/* Opens one of plot's own files in RUN/plot/ through base_out. */
static int open_work(base_out *o, const char *path, char *err, size_t errlen)
{
    if (base_check_output(path, "plot file", NULL, 0, NULL, 0, err, errlen) != 0)
        return -1;
    return base_out_open(o, path, "plot file", err, errlen);
}

int train_plot_run(const char *run_dir, const char *out_png, int x_step, const char *gnuplot,
                   char *err, size_t errlen)
{
    char mpath[4096 + 32], pdir[4096 + 16], tpath[4096 + 32], epath[4096 + 32],
        gpath[4096 + 32], png[4096 + 32];
    snprintf(mpath, sizeof mpath, "%s/%s", run_dir, TRAIN_METRICS_FILE);
    snprintf(pdir, sizeof pdir, "%s/plot", run_dir);
    snprintf(tpath, sizeof tpath, "%s/train.dat", pdir);
    snprintf(epath, sizeof epath, "%s/eval.dat", pdir);
    snprintf(gpath, sizeof gpath, "%s/curves.gp", pdir);
    if (out_png)
        snprintf(png, sizeof png, "%s", out_png);
    else
        snprintf(png, sizeof png, "%s/curves.png", run_dir);

    /* the picture never replaces the metrics, a device or a FIFO; inside the run folder
     * it may only be plot's own RUN/curves.png, the rest of the folder is the run's */
    const char *inputs[] = {mpath};
    const char *protect[] = {run_dir};
    int own = !out_png || is_own_picture(run_dir, out_png);
    char why[4096 + 512];
    if (base_check_output(png, "picture", inputs, 1, NULL, 0, why, sizeof why)) {
        base_errf(err, errlen, "plot: %s", why);
        return -2;
    }
    if (!own && base_check_output(png, "picture", NULL, 0, protect, 1, why, sizeof why)) {
        base_errf(err, errlen, "plot: %s (plot's own file in a run folder is curves.png, its "
                               "default output)", why);
        return -2;
    }
    FILE *in = base_fopen_input(mpath, "metrics", why, sizeof why);
    if (!in) {
        base_errf(err, errlen, "plot: %s (is %s a run folder?)", why, run_dir);
        return -1;
    }
    if (mkdir(pdir, 0777) != 0 && errno != EEXIST) {
        base_errf(err, errlen, "plot: mkdir %s: %s", pdir, strerror(errno));
        fclose(in);
        return -1;
    }
    base_out ot, oe, og, op;
    if (open_work(&ot, tpath, err, errlen) != 0) {
        fclose(in);
        return -1;
    }
    if (open_work(&oe, epath, err, errlen) != 0) {
        base_out_abort(&ot);
        fclose(in);
        return -1;
    }
    FILE *ft = ot.f, *fe = oe.f;
    table tt = {0}, te = {0};
    char *line = NULL;
    size_t cap = 0;
    long bad = 0;
    while (getline(&line, &cap, in) > 0) {
        json_t *rec = train_metrics_parse(line);
        const char *type = json_string_value(json_object_get(rec, "type"));
        if (!type)
            bad += line[0] != '\n';
        else if (strcmp(type, "train") == 0)
            put_row(ft, rec, TRAIN_COLS, N_TRAIN_COLS, &tt);
        else if (strcmp(type, "eval") == 0)
            put_row(fe, rec, EVAL_COLS, N_EVAL_COLS, &te);
        json_decref(rec);
    }
    free(line);
    fclose(in);
    /* base_out_commit counts the stream's errors, so a full disk shows here */
    if (base_out_commit(&ot, err, errlen) != 0) {
        base_out_abort(&oe);
        return -1;
    }
    if (base_out_commit(&oe, err, errlen) != 0)
        return -1;
    if (bad)
        fprintf(stderr, "plot: %s: %ld line(s) are not metrics records; skipped\n", mpath, bad);
    if (tt.rows == 0 && te.rows == 0) {
        base_errf(err, errlen, "plot: %s has no train or eval records yet", mpath);
        return -1;
    }

    /* gnuplot draws into the picture's temporary file, renamed over it once drawn: a
     * failed plot leaves the previous picture as it was */
    if (base_out_open(&op, png, "picture", err, errlen) != 0)
        return -1;
    if (open_work(&og, gpath, err, errlen) != 0) {
        base_out_abort(&op);
        return -1;
    }
    FILE *g = og.f;
    int xcol = x_step ? 1 : 2;
    fputs("# written by `twotower plot`; run `gnuplot curves.gp` to redraw\n"
          "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "    set terminal pngcairo size 1200,1200 font 'sans,10'\n"
          "} else {\n"
          "    set terminal png size 1200,1200\n"
          "}\n", g);
    fputs("set output ", g);
    gp_str(g, op.tmp);
    /* fixed margins line the three x axes up whatever the labels' widths; the keys sit
     * in the right margin so they never hide a curve */
    fputs("\nset datafile missing 'NaN'\nset grid\n"
          "set key outside right top vertical Left reverse\nset lmargin 12\nset rmargin 30\n",
          g);
    fputs("set multiplot layout 3,1 title ", g);
    gp_str(g, run_dir);
    fprintf(g, "\nset xlabel '%s'\n", x_step ? "step" : "epoch");

    fputs("set title 'loss'\nset ylabel 'cross-entropy'\n", g);
    const curve loss[] = {{"train.dat", 4, "train (interval mean)", 1, "lines lw 1"},
                          {"eval.dat", 3, "validation, center", 1, "linespoints pt 7 ps 0.6"}};
    gp_panel(g, pdir, xcol, loss, 2, &tt, &te, 0);

    fputs("set title 'error'\nset ylabel 'error (%)'\n", g);
    const curve errs[] = {
        {"train.dat", 5, "train top-1", 100, "lines lw 1"},
        {"eval.dat", 4, "val top-1, center", 100, "linespoints pt 7 ps 0.6"},
        {"eval.dat", 5, "val top-5, center", 100, "linespoints pt 7 ps 0.6"},
        {"eval.dat", 6, "val top-1, 10 views", 100, "linespoints pt 5 ps 0.6"},
        {"eval.dat", 7, "val top-5, 10 views", 100, "linespoints pt 5 ps 0.6"}};
    gp_panel(g, pdir, xcol, errs, 5, &tt, &te, 0);

    fputs("set title 'learning rate'\nset ylabel 'lr'\nset logscale y\nset format y '%g'\n"
          "unset key\n"
          "set offsets graph 0, graph 0, graph 0.1, graph 0.1\n", g);
    /* the evaluations' lines carry the rate too: drops decided between two training
     * lines (log_every longer than the evaluation period) still show */
    const curve lr[] = {{"train.dat", 3, "lr", 1, "steps lw 2"},
                        {"eval.dat", 8, "lr at evaluations", 1, "points pt 7 ps 0.6"}};
    gp_panel(g, pdir, xcol, lr, 2, &tt, &te, 1);
    fputs("unset logscale y\nunset multiplot\nset output\n", g);
    if (base_out_commit(&og, err, errlen) != 0) {
        base_out_abort(&op);
        return -1;
    }

    if (run_gnuplot(gnuplot ? gnuplot : "gnuplot", gpath, err, errlen) != 0) {
        base_out_abort(&op);
        return -1;
    }
    struct stat st;
    if (stat(op.tmp, &st) != 0 || st.st_size == 0) {
        base_errf(err, errlen, "plot: gnuplot ran but drew nothing into %s", op.tmp);
        base_out_abort(&op);
        return -1;
    }
    /* the commit fsyncs the file gnuplot wrote (the same inode) and renames it over png */
    return base_out_commit(&op, err, errlen);
}

typedef struct {
    const char *out;
    int x_step; /* --x: 0 epoch, 1 step */
} plot_opts;

static void plot_defaults(void *p) { *(plot_opts *)p = (plot_opts){0}; }

static const base_flag plot_flags[] = {
    {BASE_FLAG_STR("out", plot_opts, out, "PNG", "the picture"), .short_name = 'o',
     .deflt = "RUN/curves.png"},
    {BASE_FLAG_CHOICE("x", plot_opts, x_step, "epoch|step", "the horizontal axis")},
    {0}};

static const base_flags_cmd plot_cmd = {
    .name = "plot",
    .synopsis = "RUN [-o out.png] [--x epoch|step]",
    .about = "Draws loss, top-1/top-5 error and learning rate from RUN/metrics.jsonl (needs\n"
             "gnuplot, Debian gnuplot-nox). -o writes elsewhere: inside RUN only\n"
             "RUN/curves.png is plot's own.\n",
    .flags = plot_flags,
    .min_pos = 1,
    .max_pos = 1,
    .opts_size = sizeof(plot_opts),
    .defaults = plot_defaults};

int train_plot_main(int argc, char **argv)
{
    plot_opts o;
    base_flags_out fo;
    int frc = base_flags_cli(&plot_cmd, &o, argc, argv, &fo);
    if (frc != BASE_FLAGS_GO) return frc;
    const char *run = fo.pos[0], *out = o.out;
    int x_step = o.x_step;
    char err[8192 + 256];
    int rc = train_plot_run(run, out, x_step, NULL, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        return rc == -2 ? 2 : 1;
    }
    if (out)
        printf("plot: wrote %s\n", out);
    else
        printf("plot: wrote %s/curves.png\n", run);
    return 0;
}
