/* metrics: metrics.jsonl and run.json of a run folder, the console progress line, top-k
 * errors and a reader for the flat JSON lines this file writes (for `twotower plot`).
 * Lines are written whole and flushed, so a crash leaves at most one torn last line. */
#include "train/metrics.h"
#include "train/util.h"

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

/* ---- JSON writing ---------------------------------------------------------------------- */

/* A growable string; on allocation failure it stops growing and `bad` is set. */
typedef struct {
    char *s;
    size_t n, cap;
    int bad;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...)
{
    if (b->bad)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->bad = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap <= b->n + (size_t)k)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->bad = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

static void sb_num(sbuf *b, const char *key, double v)
{
    /* %.17g reads back as the same double, so runs can be compared bit for bit from
     * their metrics (resume == uninterrupted) */
    if (isfinite(v))
        sb_add(b, ", \"%s\": %.17g", key, v);
    else
        sb_add(b, ", \"%s\": null", key);
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_add(b, "\\%c", *p);
        else if (*p == '\n')
            sb_add(b, "\\n");
        else if (*p == '\t')
            sb_add(b, "\\t");
        else if (*p < 0x20)
            sb_add(b, "\\u%04x", *p);
        else
            sb_add(b, "%c", *p);
    }
    sb_add(b, "\"");
}

static int write_line(train_metrics *mt, sbuf *b, char *err, size_t errlen)
{
    int ok = !b->bad && mt->f;
    if (ok) {
        sb_add(b, "}\n");
        ok = !b->bad && fwrite(b->s, 1, b->n, mt->f) == b->n && fflush(mt->f) == 0;
    }
    free(b->s);
    if (!ok) {
        train_errf(err, errlen, "%s: write failed: %s", mt->path, mt->f ? strerror(errno) : "not open");
        return -1;
    }
    return 0;
}

/* ---- metrics.jsonl ------------------------------------------------------------------- */

/* Keeps the complete lines of path whose "step" is <= resume_step (lines without a
 * step are kept), via a .tmp and rename so a crash here loses nothing. */
static int trim_for_resume(const char *path, int64_t resume_step, char *err, size_t errlen)
{
    FILE *in = fopen(path, "rb");
    if (!in)
        return errno == ENOENT ? 0 : (train_errf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    char tmp[4096 + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        train_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        fclose(in);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t k;
    int ok = 1;
    while ((k = getline(&line, &cap, in)) > 0) {
        if (line[k - 1] != '\n')
            break; /* a torn last line from a crash */
        double step;
        if (train_json_number(line, "step", &step) == 1 && step > (double)resume_step)
            continue;
        if (fwrite(line, 1, (size_t)k, out) != (size_t)k)
            ok = 0;
    }
    free(line);
    fclose(in);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0)
        ok = 0;
    if (fclose(out) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        train_errf(err, errlen, "%s: rewriting for resume failed: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int train_metrics_open(train_metrics *mt, const char *run_dir, int64_t resume_step, char *err,
                       size_t errlen)
{
    memset(mt, 0, sizeof *mt);
    if (train_mkdir_p(run_dir, "run folder", err, errlen) != 0)
        return -1;
    if (snprintf(mt->path, sizeof mt->path, "%s/%s", run_dir, TRAIN_METRICS_FILE) >=
        (int)sizeof mt->path) {
        train_errf(err, errlen, "run folder %s: path too long", run_dir);
        return -1;
    }
    if (resume_step >= 0 && trim_for_resume(mt->path, resume_step, err, errlen) != 0)
        return -1;
    mt->f = fopen(mt->path, resume_step >= 0 ? "ab" : "wb");
    if (!mt->f) {
        train_errf(err, errlen, "%s: %s", mt->path, strerror(errno));
        return -1;
    }
    return 0;
}

void train_metrics_close(train_metrics *mt)
{
    if (mt->f)
        fclose(mt->f);
    mt->f = NULL;
}

int train_metrics_log_train(train_metrics *mt, const train_log_row *r, char *err, size_t errlen)
{
    sbuf b = {0};
    sb_add(&b, "{\"type\": \"train\", \"step\": %lld", (long long)r->step);
    sb_num(&b, "epoch", r->epoch);
    sb_num(&b, "lr", r->lr);
    sb_num(&b, "loss", r->loss);
    sb_num(&b, "train_top1_err", r->train_top1_err);
    sb_num(&b, "images_per_s", r->images_per_s);
    sb_num(&b, "data_wait_share", r->data_wait_share);
    sb_num(&b, "time_s", r->time_s);
    return write_line(mt, &b, err, errlen);
}

int train_metrics_log_eval(train_metrics *mt, const train_eval_row *r, char *err, size_t errlen)
{
    sbuf b = {0};
    sb_add(&b, "{\"type\": \"eval\", \"step\": %lld", (long long)r->step);
    sb_num(&b, "epoch", r->epoch);
    sb_add(&b, ", \"images\": %lld", (long long)r->images);
    sb_num(&b, "loss", r->loss);
    sb_num(&b, "top1_err_center", r->top1_err_center);
    sb_num(&b, "top5_err_center", r->top5_err_center);
    sb_num(&b, "top1_err_10view", r->top1_err_10view);
    sb_num(&b, "top5_err_10view", r->top5_err_10view);
    sb_num(&b, "lr", r->lr);
    return write_line(mt, &b, err, errlen);
}

int train_metrics_log_event(train_metrics *mt, int64_t step, double epoch, const char *kind,
                            const char *msg, char *err, size_t errlen)
{
    sbuf b = {0};
    sb_add(&b, "{\"type\": \"event\", \"step\": %lld", (long long)step);
    sb_num(&b, "epoch", epoch);
    sb_add(&b, ", \"kind\": ");
    sb_str(&b, kind);
    sb_add(&b, ", \"msg\": ");
    sb_str(&b, msg);
    return write_line(mt, &b, err, errlen);
}

static void sb_argv(sbuf *b, int argc, char **argv)
{
    sb_add(b, "[");
    for (int i = 0; i < argc; i++) {
        if (i)
            sb_add(b, ", ");
        sb_str(b, argv[i]);
    }
    sb_add(b, "]");
}

int train_metrics_log_resume(train_metrics *mt, int64_t step, double epoch,
                             const char *ckpt_path, int argc, char **argv, char *err,
                             size_t errlen)
{
    sbuf b = {0};
    sb_add(&b, "{\"type\": \"event\", \"step\": %lld", (long long)step);
    sb_num(&b, "epoch", epoch);
    sb_add(&b, ", \"kind\": \"resume\", \"msg\": ");
    sb_str(&b, ckpt_path);
    sb_add(&b, ", \"argv\": ");
    sb_argv(&b, argc, argv);
    return write_line(mt, &b, err, errlen);
}

/* ---- run.json ---------------------------------------------------------------------------- */

int train_run_info_write(const char *run_dir, const train_run_info *info, char *err,
                         size_t errlen)
{
    if (train_mkdir_p(run_dir, "run folder", err, errlen) != 0)
        return -1;
    char path[4096 + 16], tmp[4096 + 32];
    snprintf(path, sizeof path, "%s/%s", run_dir, TRAIN_RUN_INFO_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat st;
    if (stat(path, &st) == 0)
        return 0; /* resuming: run.json describes the first start; the resume is an event */

    char when[64] = "?", host[256] = "?";
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    const char *blas = openblas_get_config();

    sbuf b = {0};
    sb_add(&b, "{\n  \"program\": \"twotower\",\n  \"version\": ");
    sb_str(&b, info->version ? info->version : "?");
    sb_add(&b, ",\n  \"git\": ");
    if (info->git)
        sb_str(&b, info->git);
    else
        sb_add(&b, "null");
    sb_add(&b, ",\n  \"argv\": ");
    sb_argv(&b, info->argc, info->argv);
    sb_add(&b, ",\n  \"started_utc\": ");
    sb_str(&b, when);
    sb_add(&b, ",\n  \"host\": ");
    sb_str(&b, host);
    sb_add(&b, ",\n  \"compiler\": ");
#if defined(__clang__)
    sb_str(&b, "clang " __VERSION__);
#elif defined(__GNUC__)
    sb_str(&b, "gcc " __VERSION__);
#else
    sb_str(&b, "unknown");
#endif
    sb_add(&b, ",\n  \"blas\": ");
    sb_str(&b, blas ? blas : "?");
    sb_add(&b, ",\n  \"backend\": ");
    sb_str(&b, info->backend ? info->backend : "?");
    sb_add(&b, ",\n  \"seed\": %llu", (unsigned long long)info->seed);
    sb_add(&b, ",\n  \"config\": {\"towers\": %d, \"classes\": %d, \"batch\": %d, \"in_size\": "
           "%d, \"in_ch\": %d, \"width_div\": %d}",
           info->cfg.towers, info->cfg.classes, info->cfg.batch, info->cfg.in_size,
           info->cfg.in_ch, info->cfg.width_div);
    if (info->extra_json && info->extra_json[0])
        sb_add(&b, ",\n  %s", info->extra_json);
    sb_add(&b, "\n}\n");
    if (b.bad) {
        free(b.s);
        train_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(b.s, 1, b.n, f) == b.n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    free(b.s);
    if (!ok || rename(tmp, path) != 0) {
        train_errf(err, errlen, "%s: write failed: %s", path, strerror(ok ? errno : e));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- progress line ----------------------------------------------------------------------- */

double train_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

/* ---- reading flat JSON lines ---------------------------------------------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* p at '"': returns the char after the closing quote, or NULL. */
static const char *skip_string(const char *p)
{
    if (*p != '"')
        return NULL;
    for (p++; *p; p++) {
        if (*p == '\\') {
            if (!p[1])
                return NULL;
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* A value that is not an object: string, number, true/false/null, or an array of those. */
static const char *skip_value(const char *p)
{
    p = skip_ws(p);
    if (*p == '"')
        return skip_string(p);
    if (*p == '[') {
        p = skip_ws(p + 1);
        if (*p == ']')
            return p + 1;
        for (;;) {
            p = skip_value(p);
            if (!p)
                return NULL;
            p = skip_ws(p);
            if (*p == ']')
                return p + 1;
            if (*p != ',')
                return NULL;
            p++;
        }
    }
    const char *s = p;
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' &&
           *p != '\t')
        p++;
    return p > s ? p : NULL;
}

/* Finds key among the members of the flat object in line; returns the value's start. */
static const char *find_value(const char *line, const char *key)
{
    const char *p = skip_ws(line);
    if (*p != '{')
        return NULL;
    p = skip_ws(p + 1);
    size_t kl = strlen(key);
    while (*p == '"') {
        const char *k0 = p + 1, *k1 = skip_string(p);
        if (!k1)
            return NULL;
        p = skip_ws(k1);
        if (*p != ':')
            return NULL;
        p = skip_ws(p + 1);
        if ((size_t)(k1 - 1 - k0) == kl && memcmp(k0, key, kl) == 0)
            return p;
        p = skip_value(p);
        if (!p)
            return NULL;
        p = skip_ws(p);
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1);
    }
    return NULL;
}

int train_json_number(const char *line, const char *key, double *out)
{
    const char *v = find_value(line, key);
    if (!v)
        return -1;
    if (strncmp(v, "null", 4) == 0) {
        *out = NAN;
        return 0;
    }
    if (!(*v == '-' || (*v >= '0' && *v <= '9')))
        return -1;
    char *end;
    double d = strtod(v, &end);
    if (end == v)
        return -1;
    *out = d;
    return 1;
}

int train_json_string(const char *line, const char *key, char *out, size_t outlen)
{
    const char *v = find_value(line, key);
    if (!v || *v != '"' || outlen == 0)
        return -1;
    const char *end = skip_string(v);
    if (!end)
        return -1;
    size_t o = 0;
    for (const char *p = v + 1; p < end - 1 && o + 1 < outlen; p++) {
        char c = *p;
        if (c == '\\') {
            p++;
            c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            if (*p == 'u' && end - 1 - p >= 5) {
                /* this writer only emits \u00XX for control bytes */
                char hex[5] = {p[1], p[2], p[3], p[4], 0};
                c = (char)strtol(hex, NULL, 16);
                p += 4;
            }
        }
        out[o++] = c;
    }
    out[o] = 0;
    return 1;
}
