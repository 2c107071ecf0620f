/* metrics: metrics.jsonl and run.json of a run folder (Jansson), the console progress line
 * and top-k errors. Lines are written whole, unbuffered, so a crash leaves at most one torn
 * last line; the first failed line is the last one written (the trainer stops on it). */
#include "train/metrics.h"

#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* OpenBLAS reports how it was built; declared here so this file needs no cblas.h. */
extern char *openblas_get_config(void);

/* ---- JSON values ----------------------------------------------------------------------- */

json_t *train_json_real(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *train_json_text(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    if (j)
        return j;
    /* not valid UTF-8 (a file name in another encoding, say): keep the ASCII, mark the
     * rest, so the record is still written and still JSON */
    char *t = strdup(s);
    if (!t)
        return NULL;
    for (char *c = t; *c; c++)
        if ((unsigned char)*c >= 0x80)
            *c = '?';
    j = json_string(t);
    free(t);
    return j;
}

/* A seed: a JSON integer, or its decimal digits as a string past INT64_MAX (JSON
 * integers here are int64; the CLI's seeds always fit). */
static json_t *json_u64(uint64_t v)
{
    if (v <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)v);
    char d[24];
    snprintf(d, sizeof d, "%llu", (unsigned long long)v);
    return json_string(d);
}

/* argv as a JSON array of strings. */
static json_t *argv_array(int argc, char **argv)
{
    json_t *a = json_array();
    for (int i = 0; a && i < argc; i++)
        if (json_array_append_new(a, train_json_text(argv[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* %.17g: every double reads back as itself, so runs can be compared bit for bit from
 * their metrics (resume == uninterrupted) */
#define METRICS_JSON_FLAGS JSON_REAL_PRECISION(17)

/* Writes rec (consumed) as one line, whole, and flushes it: a crash leaves at most one
 * torn last line, which the next resume drops. */
static int write_line(train_metrics *mt, json_t *rec, char *err, size_t errlen)
{
    char *text = rec ? json_dumps(rec, METRICS_JSON_FLAGS) : NULL;
    json_decref(rec);
    const char *why = !mt->f ? "not open" : !text ? "out of memory" : NULL;
    if (!why && mt->failed)
        why = "an earlier line failed, so no line is written after it";
    if (!why) {
        size_t n = strlen(text);
        text[n] = '\n'; /* replaces the NUL: the line is written with one fwrite */
        errno = 0;
        if (fwrite(text, 1, n + 1, mt->f) != n + 1 || fflush(mt->f) != 0) {
            mt->failed = errno ? errno : EIO;
            why = strerror(mt->failed);
        }
    }
    free(text);
    if (why) {
        base_errf(err, errlen, "%s: write failed: %s", mt->path, why);
        return -1;
    }
    return 0;
}

/* {"type": type, "step": step, "epoch": epoch}: the start of every line */
static json_t *record(const char *type, int64_t step, double epoch)
{
    return json_pack("{s:s, s:I, s:o}", "type", type, "step", (json_int_t)step, "epoch",
                     train_json_real(epoch));
}

/* ---- metrics.jsonl ------------------------------------------------------------------- */

json_t *train_metrics_parse(const char *line)
{
    json_t *j = json_loads(line, JSON_DECODE_INT_AS_REAL, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

int train_metrics_number(const json_t *rec, const char *key, double *out)
{
    const json_t *v = json_object_get(rec, key);
    if (json_is_null(v)) {
        *out = NAN;
        return 0;
    }
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 1;
}

/* Keeps the complete lines of path whose "step" is <= resume_step (lines without a
 * step are kept), through base_out so that a crash here loses nothing. */
static int trim_for_resume(const char *path, int64_t resume_step, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT)
        return 0; /* a run continued in a new folder: nothing to keep */
    FILE *in = base_fopen_input(path, "metrics", err, errlen);
    if (!in)
        return -1;
    base_out out;
    if (base_out_open(&out, path, "metrics", err, errlen) != 0) {
        fclose(in);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t k;
    while ((k = getline(&line, &cap, in)) > 0) {
        if (line[k - 1] != '\n')
            break; /* a torn last line from a crash */
        json_t *rec = train_metrics_parse(line);
        double step;
        int later = rec && train_metrics_number(rec, "step", &step) == 1 &&
                    step > (double)resume_step;
        json_decref(rec);
        if (!later)
            base_out_write(&out, line, (size_t)k);
    }
    free(line);
    fclose(in);
    return base_out_commit(&out, err, errlen);
}

int train_metrics_open(train_metrics *mt, const char *run_dir, int64_t resume_step, char *err,
                       size_t errlen)
{
    memset(mt, 0, sizeof *mt);
    if (base_mkdir_p(run_dir, "run folder", err, errlen) != 0)
        return -1;
    if (snprintf(mt->path, sizeof mt->path, "%s/%s", run_dir, TRAIN_METRICS_FILE) >=
        (int)sizeof mt->path) {
        base_errf(err, errlen, "run folder %s: path too long", run_dir);
        return -1;
    }
    /* never a FIFO (the open would wait for a reader), a device or a folder */
    if (base_check_output(mt->path, "metrics", NULL, 0, NULL, 0, err, errlen) != 0)
        return -1;
    if (resume_step >= 0 && trim_for_resume(mt->path, resume_step, err, errlen) != 0)
        return -1;
    mt->f = fopen(mt->path, resume_step >= 0 ? "ab" : "wb");
    if (!mt->f) {
        base_errf(err, errlen, "%s: %s", mt->path, strerror(errno));
        return -1;
    }
    /* unbuffered: a line goes out in one write, and a failed one leaves nothing in a
     * buffer for a later flush to add after it */
    setvbuf(mt->f, NULL, _IONBF, 0);
    return 0;
}

int train_metrics_close(train_metrics *mt)
{
    int rc = mt->f && fclose(mt->f) != 0 ? -1 : 0;
    mt->f = NULL;
    return rc;
}

int train_metrics_log_train(train_metrics *mt, const train_log_row *r, char *err, size_t errlen)
{
    json_t *j = record("train", r->step, r->epoch);
    json_object_set_new(j, "lr", train_json_real(r->lr));
    json_object_set_new(j, "loss", train_json_real(r->loss));
    json_object_set_new(j, "train_top1_err", train_json_real(r->train_top1_err));
    json_object_set_new(j, "images_per_s", train_json_real(r->images_per_s));
    json_object_set_new(j, "data_wait_share", train_json_real(r->data_wait_share));
    json_object_set_new(j, "time_s", train_json_real(r->time_s));
    return write_line(mt, j, err, errlen);
}

int train_metrics_log_eval(train_metrics *mt, const train_eval_row *r, char *err, size_t errlen)
{
    json_t *j = record("eval", r->step, r->epoch);
    json_object_set_new(j, "images", json_integer((json_int_t)r->images));
    json_object_set_new(j, "loss", train_json_real(r->loss));
    json_object_set_new(j, "top1_err_center", train_json_real(r->top1_err_center));
    json_object_set_new(j, "top5_err_center", train_json_real(r->top5_err_center));
    json_object_set_new(j, "top1_err_10view", train_json_real(r->top1_err_10view));
    json_object_set_new(j, "top5_err_10view", train_json_real(r->top5_err_10view));
    json_object_set_new(j, "lr", train_json_real(r->lr));
    return write_line(mt, j, err, errlen);
}

int train_metrics_log_event(train_metrics *mt, int64_t step, double epoch, const char *kind,
                            const char *msg, char *err, size_t errlen)
{
    json_t *j = record("event", step, epoch);
    json_object_set_new(j, "kind", train_json_text(kind));
    json_object_set_new(j, "msg", train_json_text(msg));
    return write_line(mt, j, err, errlen);
}

int train_metrics_log_resume(train_metrics *mt, int64_t step, double epoch,
                             const char *ckpt_path, int argc, char **argv, char *err,
                             size_t errlen)
{
    json_t *j = record("event", step, epoch);
    json_object_set_new(j, "kind", json_string("resume"));
    json_object_set_new(j, "msg", train_json_text(ckpt_path));
    json_object_set_new(j, "argv", argv_array(argc, argv));
    return write_line(mt, j, err, errlen);
}

/* ---- run.json ---------------------------------------------------------------------------- */

int train_run_info_write(const char *run_dir, const train_run_info *info, char *err,
                         size_t errlen)
{
    if (base_mkdir_p(run_dir, "run folder", err, errlen) != 0)
        return -1;
    char path[4096 + 16];
    snprintf(path, sizeof path, "%s/%s", run_dir, TRAIN_RUN_INFO_FILE);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
        return 0; /* resuming: run.json describes the first start; the resume is an event */
    if (base_check_output(path, "run info", NULL, 0, NULL, 0, err, errlen) != 0)
        return -1;

    char when[64] = "?", host[256] = "?";
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    const char *blas = openblas_get_config();
#if defined(__clang__)
    const char *compiler = "clang " __VERSION__;
#elif defined(__GNUC__)
    const char *compiler = "gcc " __VERSION__;
#else
    const char *compiler = "unknown";
#endif
    const tower_config *c = &info->cfg;
    json_t *j = json_pack("{s:s, s:s, s:o, s:o, s:s, s:o, s:s, s:o, s:o, s:o, "
                          "s:{s:i, s:i, s:i, s:i, s:i, s:i}}",
                          "program", "twotower", "version", base_version(),
                          "git", train_json_text(info->git),
                          "argv", argv_array(info->argc, info->argv),
                          "started_utc", when, "host", train_json_text(host),
                          "compiler", compiler, "blas", train_json_text(blas ? blas : "?"),
                          "backend", train_json_text(info->backend ? info->backend : "?"),
                          "seed", json_u64(info->seed),
                          "config", "towers", c->towers, "classes", c->classes, "batch",
                          c->batch, "in_size", c->in_size, "in_ch", c->in_ch, "width_div",
                          c->width_div);
    if (j && info->extra)
        json_object_update(j, info->extra);
    char *text = j ? json_dumps(j, JSON_INDENT(2) | METRICS_JSON_FLAGS) : NULL;
    json_decref(j);
    if (!text) {
        base_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = strlen(text);
    text[n] = '\n';
    int rc = base_write_file(path, "run info", text, n + 1, err, errlen);
    free(text);
    return rc;
}

/* ---- progress line ----------------------------------------------------------------------- */

void train_format_duration(char *buf, size_t n, double s)
{
    if (!(s >= 0.0) || !isfinite(s) || s > 1e9) {
        snprintf(buf, n, "?");
        return;
    }
    long long t = (long long)(s + 0.5);
    if (t >= 86400)
        snprintf(buf, n, "%lldd%02lldh", t / 86400, (t % 86400) / 3600);
    else if (t >= 3600)
        snprintf(buf, n, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(buf, n, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, n, "%llds", t);
}

void train_progress_init(train_progress *p, FILE *out, double interval_s, double now,
                         int64_t step0)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = out && isatty(fileno(out));
    p->interval_s = interval_s > 0 ? interval_s : 30.0;
    p->t_start = now;
    p->t_last = -1e300;
    p->step_start = step0;
}

int train_progress_update(train_progress *p, double now, int64_t step, int64_t total_steps,
                          double epoch, double loss, double lr, double images_per_s)
{
    if (!p->out)
        return 0;
    double gap = p->tty ? 0.2 : p->interval_s;
    int last = total_steps > 0 && step >= total_steps;
    if (now - p->t_last < gap && !last)
        return 0;
    p->t_last = now;
    char eta[32] = "?", bar[32] = "";
    int64_t done = step - p->step_start;
    if (total_steps > 0 && done > 0) {
        double rate = (now - p->t_start) / (double)done;
        train_format_duration(eta, sizeof eta, rate * (double)(total_steps - step));
    }
    double frac = total_steps > 0 ? (double)step / (double)total_steps : 0.0;
    if (frac > 1.0)
        frac = 1.0;
    if (total_steps > 0) {
        int w = 20, k = (int)(frac * w);
        bar[0] = '[';
        for (int i = 0; i < w; i++)
            bar[1 + i] = i < k ? '#' : '.';
        bar[w + 1] = ']';
        bar[w + 2] = ' ';
        bar[w + 3] = 0;
    }
    char line[256];
    if (total_steps > 0)
        snprintf(line, sizeof line,
                 "%s%5.1f%% step %lld/%lld ep %.2f loss %.4f lr %.3g %.0f img/s ETA %s", bar,
                 100.0 * frac, (long long)step, (long long)total_steps, epoch, loss, lr,
                 images_per_s, eta);
    else
        snprintf(line, sizeof line, "step %lld ep %.2f loss %.4f lr %.3g %.0f img/s",
                 (long long)step, epoch, loss, lr, images_per_s);
    if (p->tty) {
        /* \033[K clears what a longer previous line left on screen. */
        fprintf(p->out, "\r%s\033[K", line);
        p->drawn = 1;
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    return 1;
}

void train_progress_end(train_progress *p)
{
    if (p->out && p->tty && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    p->drawn = 0;
}

/* ---- top-k ------------------------------------------------------------------------------- */

int train_topk_errors(const float *probs, const int32_t *labels, int B, int V, int *top1_wrong,
                      int *top5_wrong)
{
    if (B < 1 || V < 1)
        return -1;
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= V)
            return -1;
    int w1 = 0, w5 = 0;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * (size_t)V;
        int y = labels[b];
        float py = p[y];
        int rank;
        if (isnan(py)) {
            rank = INT_MAX; /* no ranking can be trusted: wrong for every k */
        } else {
            /* rank = how many classes a stable descending sort puts before y */
            rank = 0;
            for (int c = 0; c < V; c++)
                rank += p[c] > py || (c < y && p[c] == py);
        }
        w1 += rank >= 1;
        w5 += rank >= 5;
    }
    *top1_wrong += w1;
    *top5_wrong += w5;
    return 0;
}
