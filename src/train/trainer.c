/* trainer.c: one training run. The coordinator (this thread) takes prefetched batches
 * from the data loader's thread, runs SGD steps on the model, evaluates after every
 * epoch (top-1/top-5, center crop and optionally the paper's ten views) and prints a
 * live progress line. */
#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/data.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

void train_options_default(train_options *o)
{
    memset(o, 0, sizeof *o);
    o->data = "/usr/share/datasets/fashion-mnist";
    o->place.cpu = 1;
    o->towers = 2;
    o->batch = 128;
    o->size = 224;
    o->epochs = 90;
    o->eval_views = 1;
    o->lr = 0.01;
    o->seed = 1;
}

/* A folder with train-images-idx3-ubyte.gz is Fashion-MNIST; anything else, shards. */
static int is_idx_dir(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    return stat(path, &st) == 0;
}

static data_source *open_split(const char *dir, int train, char *err, size_t errlen)
{
    if (is_idx_dir(dir)) return data_open_idx(dir, train, err, errlen);
    return data_open_shards(dir, train ? "train" : "val", err, errlen);
}

/* Top-k bookkeeping for one batch of class-major probabilities (n rows of V). */
static void count_topk(const float *probs, const int32_t *labels, int n, int V, int64_t *top1,
                       int64_t *top5)
{
    for (int b = 0; b < n; b++) {
        const float *p = probs + (size_t)b * V;
        float mine = p[labels[b]];
        int higher = 0; /* classes ranked above the true one (ties count against us) */
        for (int c = 0; c < V; c++)
            if (c != labels[b] && p[c] >= mine) higher++;
        *top1 += higher >= 1;
        *top5 += higher >= 5;
    }
}

typedef struct {
    double top1, top5;        /* error rates, center crop */
    double top1_10, top5_10;  /* ten views (negative when not run) */
    int64_t images;
} eval_result;

/* Evaluates n images of src. The model's batch is fixed, so a short last batch is padded
 * with copies of its first image and the padding is not counted. */
static int evaluate(model *m, data_source *src, int64_t n, int views, eval_result *r,
                    char *err, size_t errlen)
{
    int B = m->plan.cfg.batch, S = m->plan.cfg.in_size, V = m->plan.cfg.classes;
    size_t xs = (size_t)3 * S * S;
    float *x = malloc(sizeof(float) * xs * B), *probs = malloc(sizeof(float) * (size_t)B * V),
          *acc = malloc(sizeof(float) * (size_t)B * V);
    int32_t *labels = malloc(sizeof(int32_t) * B);
    int rc = 0;
    if (!x || !probs || !acc || !labels) {
        snprintf(err, errlen, "out of host memory for evaluation");
        rc = -1;
        goto done;
    }
    int64_t c1 = 0, c5 = 0, t1 = 0, t5 = 0;
    for (int64_t start = 0; start < n; start += B) {
        int k = (int)(n - start < B ? n - start : B);
        memset(acc, 0, sizeof(float) * (size_t)B * V);
        for (int v = 0; v < (views == 10 ? 10 : 1); v++) {
            int view = views == 10 ? v : DATA_VIEW_CENTER;
            if (data_eval_batch(src, start, k, S, view, x, labels, err, errlen)) {
                rc = -1;
                goto done;
            }
            for (int b = k; b < B; b++) {
                memcpy(x + xs * b, x, sizeof(float) * xs);
                labels[b] = labels[0];
            }
            model_set_batch(m, x, labels);
            model_forward(m, 0);
            model_get_probs(m, probs);
            if (view == DATA_VIEW_CENTER) count_topk(probs, labels, k, V, &c1, &c5);
            for (size_t i = 0; i < (size_t)k * V; i++) acc[i] += probs[i];
        }
        if (views == 10) count_topk(acc, labels, k, V, &t1, &t5);
    }
    r->images = n;
    r->top1 = (double)c1 / n;
    r->top5 = (double)c5 / n;
    r->top1_10 = views == 10 ? (double)t1 / n : -1;
    r->top5_10 = views == 10 ? (double)t5 / n : -1;
done:
    free(x);
    free(probs);
    free(acc);
    free(labels);
    return rc;
}

static void fmt_duration(char *buf, size_t n, double s)
{
    if (s < 0 || !isfinite(s)) s = 0;
    int h = (int)(s / 3600), mnt = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, n, "%dh%02dm", h, mnt);
    else snprintf(buf, n, "%dm%02ds", mnt, sec);
}

int train_run(const train_options *o)
{
    char err[512] = "";
    data_source *tr = open_split(o->data, 1, err, sizeof err);
    if (!tr) {
        fprintf(stderr, "twotower: cannot open training data: %s\n", err);
        return 2;
    }
    data_source *te = open_split(o->data, 0, err, sizeof err);
    if (!te) {
        fprintf(stderr, "twotower: cannot open test data: %s\n", err);
        data_close(tr);
        return 2;
    }
    tower_config cfg = {o->towers, data_classes(tr), o->batch, o->size, 3, 1};
    if (cfg.classes % o->towers) cfg.classes += o->towers - cfg.classes % o->towers;
    model m;
    if (model_init(&m, &cfg, &o->place, o->seed, err, sizeof err)) {
        fprintf(stderr, "twotower: cannot build the net: %s\n", err);
        data_close(tr);
        data_close(te);
        return 2;
    }
    int64_t n_train = data_count(tr), n_test = data_count(te);
    if (o->train_limit > 0 && o->train_limit < n_train) n_train = o->train_limit;
    if (o->test_limit > 0 && o->test_limit < n_test) n_test = o->test_limit;
    int64_t steps_per_epoch = n_train / o->batch;
    if (steps_per_epoch < 1) steps_per_epoch = 1;
    int64_t total_steps = steps_per_epoch * o->epochs;
    fprintf(stderr, "twotower: %s, %d tower%s on %s, %lld train images/epoch, %lld test "
                    "images, batch %d, %d epochs, lr %g, seed %llu\n",
            o->data, o->towers, o->towers > 1 ? "s" : "",
            o->place.cpu ? "the CPU" : (o->place.ngpus == 2 ? "GPUs" : "one GPU"),
            (long long)n_train, (long long)n_test, o->batch, o->epochs, o->lr,
            (unsigned long long)o->seed);

    data_cursor cur = {o->seed, 0, 0};
    data_prefetch *pf = data_prefetch_start(tr, cur, o->batch, o->size, 2, err, sizeof err);
    if (!pf) {
        fprintf(stderr, "twotower: cannot start the data loader: %s\n", err);
        model_free(&m);
        data_close(tr);
        data_close(te);
        return 2;
    }
    int tty = isatty(2) && !o->quiet;
    double lr = o->lr, t_start = now_s(), wait_total = 0, step_total = 0, last_print = 0;
    double loss_avg = 0;
    int nonfinite_run = 0, rc = 0;
    for (int epoch = 0; epoch < o->epochs && rc == 0; epoch++) {
        double t_epoch = now_s();
        for (int64_t s = 0; s < steps_per_epoch; s++) {
            const float *x;
            const int32_t *labels;
            double wait;
            double t0 = now_s();
            if (data_prefetch_next(pf, &x, &labels, &cur, &wait, err, sizeof err)) {
                fprintf(stderr, "\ntwotower: data loader failed: %s\n", err);
                rc = 1;
                break;
            }
            model_set_batch(&m, x, labels);
            double loss = model_forward(&m, 1);
            if (!isfinite(loss)) {
                /* skip the update: the weights stay as they were before this batch */
                fprintf(stderr, "\ntwotower: step %lld: non-finite loss, step skipped\n",
                        (long long)m.step);
                m.step++;
                if (++nonfinite_run >= 5) {
                    fprintf(stderr, "twotower: 5 non-finite losses in a row: stopping\n");
                    rc = 1;
                    break;
                }
                continue;
            }
            nonfinite_run = 0;
            model_backward(&m);
            model_update(&m, (real)lr);
            m.step++;
            double dt = now_s() - t0;
            wait_total += wait;
            step_total += dt;
            loss_avg = m.step == 1 ? loss : 0.95 * loss_avg + 0.05 * loss;
            double t = now_s();
            if (!o->quiet && (t - last_print > (tty ? 0.5 : 10) || s == steps_per_epoch - 1)) {
                last_print = t;
                int64_t done = (int64_t)epoch * steps_per_epoch + s + 1;
                double ips = done * (double)o->batch / (t - t_start);
                char eta[32];
                fmt_duration(eta, sizeof eta, (total_steps - done) * o->batch / ips);
                fprintf(stderr, "%sepoch %d/%d step %lld/%lld loss %.4f  %.1f img/s  "
                                "data wait %.1f%%  ETA %s%s",
                        tty ? "\r" : "", epoch + 1, o->epochs, (long long)(s + 1),
                        (long long)steps_per_epoch, loss_avg, ips,
                        100 * wait_total / (step_total > 0 ? step_total : 1), eta,
                        tty ? "   " : "\n");
            }
        }
        if (rc) break;
        if (tty) fputc('\n', stderr);
        eval_result r;
        double t_eval = now_s();
        if (evaluate(&m, te, n_test, o->eval_views, &r, err, sizeof err)) {
            fprintf(stderr, "twotower: evaluation failed: %s\n", err);
            rc = 1;
            break;
        }
        printf("epoch %d: train %.1f s, test on %lld images (%.1f s): accuracy %.2f%% "
               "(top-1 error %.2f%%, top-5 error %.2f%%)",
               epoch + 1, t_eval - t_epoch, (long long)r.images, now_s() - t_eval,
               100 * (1 - r.top1), 100 * r.top1, 100 * r.top5);
        if (r.top1_10 >= 0)
            printf("; 10-view: accuracy %.2f%% (top-5 error %.2f%%)", 100 * (1 - r.top1_10),
                   100 * r.top5_10);
        printf("\n");
        fflush(stdout);
    }
    data_prefetch_stop(pf);
    model_free(&m);
    data_close(tr);
    data_close(te);
    return rc;
}
