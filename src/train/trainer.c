/* trainer.c: one training run, driven by the coordinator (this thread). It takes
 * prefetched batches from the data loader's thread, runs SGD steps, evaluates (top-1 and
 * top-5, center crop and optionally ten views), follows the paper's plateau schedule,
 * writes metrics and crash-safe checkpoints, and stops cleanly on SIGINT/SIGTERM. The run
 * folder is claimed first (runfolder.h), and the first write that fails (a metrics line,
 * run.json, a checkpoint) ends the run, leaving the newest good checkpoint as it was.
 *
 * Exactness of --resume: every random draw is a function of (seed, step, data cursor),
 * and a checkpoint holds the parameters, momentum, step, cursor and schedule, so the
 * steps after a resume compute exactly what the uninterrupted run computed. */
#include "train/train.h"

#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/data.h"
#include "base/base.h"

void train_options_default(train_options *o)
{
    memset(o, 0, sizeof *o);
    o->data = TRAIN_DEFAULT_DATA;
    o->place.cpu = 1;
    o->switches = TOWER_SWITCHES_KEEP;
    o->pca_std = -1;
    o->mirror = -1;
    o->downsample = 1;
    o->towers = 2;
    o->batch = 128;
    o->size = 224;
    o->width_div = 1;
    o->epochs = 0; /* the net's: 90 for the paper's (on --resume, the checkpoint's net's) */
    o->eval_views = 1;
    o->lr = TRAIN_SCHED_DEFAULT_LR0;
    o->seed = 1;
    o->keep = TRAIN_CKPT_DEFAULT_KEEP;
    o->log_every = 10;
    o->patience = TRAIN_SCHED_DEFAULT_PATIENCE;
    o->max_drops = TRAIN_SCHED_DEFAULT_MAX_DROPS;
    o->min_delta = TRAIN_SCHED_DEFAULT_MIN_DELTA;
    o->nonfinite_limit = TRAIN_NONFINITE_DEFAULT_LIMIT;
}

/* A folder with train-images-idx3-ubyte.gz is Fashion-MNIST; anything else, shards. lstat:
 * the name alone decides, so a dangling or looping link is opened as the IDX file it
 * names and refused with its own reason, not reported as a missing meta.bin. */
static int is_idx_dir(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    return lstat(path, &st) == 0;
}

static int is_dir(const char *p);

data_source *train_open_split(const char *dir, int train, char *err, size_t errlen)
{
    if (!is_dir(dir)) {
        snprintf(err, errlen, "--data %s: no such folder (give the Fashion-MNIST IDX folder "
                              "or a folder written by `twotower prep`)", dir);
        return NULL;
    }
    if (is_idx_dir(dir)) return data_open_idx(dir, train, err, errlen);
    return data_open_shards(dir, train ? "train" : "val", err, errlen);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

const float *train_input_gray(const float *x, int B, int S, int in_ch, float *scratch)
{
    size_t hw = (size_t)S * S;
    if (in_ch == 3)
        return x;
    for (int b = 0; b < B; b++) { /* in place when x is scratch: image b's planes lie at
                                     or after where its gray plane goes */
        const float *xb = x + (size_t)b * 3 * hw;
        for (size_t p = 0; p < hw; p++)
            scratch[(size_t)b * hw + p] = (xb[p] + xb[hw + p] + xb[2 * hw + p]) / 3.0f;
    }
    return scratch;
}

/* x (B, 3, S, S): already downsampled by the data path (data_augment_reduce_cpu) */
static void set_float_batch(model *m, const float *x, const int32_t *labels, float *scratch)
{
    const tower_config *c = &m->plan.cfg;
    model_set_batch(m, train_input_gray(x, c->batch, c->in_size, c->in_ch, scratch), labels);
}

int train_eval_batches_init(train_eval_batches *e, const model *m, int F, char *err,
                            size_t errlen)
{
    memset(e, 0, sizeof *e);
    int B = m->plan.cfg.batch, S = m->plan.cfg.in_size * F;
    size_t xs = (size_t)3 * S * S;
    e->downsample = F;
    /* the uint8 path gives RGB to the device; a one-channel or downsampled net takes
     * float batches (downsampled as the data path makes them) */
    e->gpu = m->tw[0].device >= 0 && m->plan.cfg.in_ch == 3 && F == 1;
    int scratched = m->plan.cfg.in_ch != 3;
    e->scratch = scratched ? malloc(sizeof(float) * xs * B / ((size_t)F * F)) : NULL;
    e->x = e->gpu ? NULL : malloc(sizeof(float) * xs * B / ((size_t)F * F));
    e->labels = malloc(sizeof(int32_t) * B);
    e->model_labels = malloc(sizeof(int32_t) * B);
    e->crops = e->gpu ? malloc(xs * B) : NULL;
    e->params = e->gpu ? malloc(sizeof(data_aug_params) * B) : NULL;
    if (!e->labels || !e->model_labels || (e->gpu ? !e->crops || !e->params : !e->x) ||
        (scratched && !e->scratch)) {
        train_eval_batches_free(e);
        snprintf(err, errlen, "out of host memory for evaluation batches");
        return -1;
    }
    return 0;
}

void train_eval_batches_free(train_eval_batches *e)
{
    free(e->x);
    free(e->scratch);
    free(e->crops);
    free(e->params);
    free(e->labels);
    free(e->model_labels);
    memset(e, 0, sizeof *e);
}

/* The data half of a load: images [start, start + k) of src in one view into e, padded to
 * the batch, and the labels the loss reads. Touches no model, so it can run beside a
 * forward (evaluate's loader thread). */
static int eval_fetch(train_eval_batches *e, const tower_config *c, data_source *src,
                      int64_t start, int k, int view, char *err, size_t errlen)
{
    int F = e->downsample;
    int B = c->batch, S = c->in_size * F, V = c->classes;
    size_t xs = (size_t)3 * S * S, xr = xs / ((size_t)F * F); /* a crop, its reduced floats */
    if (k < 1 || k > B) {
        snprintf(err, errlen, "an evaluation batch of %d images for a net of batch %d", k, B);
        return -1;
    }
    if (e->gpu ? data_eval_batch_u8(src, start, k, S, view, e->crops, e->params, e->labels, err,
                                    errlen)
               : data_eval_batch_reduced(src, start, k, S, view, F, e->x, e->labels, err,
                                         errlen))
        return -1;
    for (int b = k; b < B; b++) {
        if (e->gpu) {
            memcpy(e->crops + xs * b, e->crops, xs);
            e->params[b] = e->params[0];
        } else {
            memcpy(e->x + xr * b, e->x, sizeof(float) * xr);
        }
        e->labels[b] = e->labels[0];
    }
    /* the loss the forward computes reads probs[label]: a label the net has no output for
     * (another dataset's) goes in as 0; e->labels keeps the data's */
    for (int b = 0; b < B; b++)
        e->model_labels[b] = e->labels[b] >= 0 && e->labels[b] < V ? e->labels[b] : 0;
    return 0;
}

/* The model half: the fetched batch into m. */
static int eval_put(train_eval_batches *e, model *m, data_source *src, char *err, size_t errlen)
{
    if (!e->gpu) {
        set_float_batch(m, e->x, e->model_labels, e->scratch);
        return 0;
    }
    return model_set_batch_u8(m, e->crops, e->params, e->model_labels, data_mean_image(src), err,
                              errlen);
}

int train_eval_batches_load(train_eval_batches *e, model *m, data_source *src, int64_t start,
                            int k, int view, char *err, size_t errlen)
{
    /* the last batch's uploads read e->crops and e->params until model_input_wait */
    if (e->gpu && model_input_wait(m, err, errlen)) return -1;
    if (eval_fetch(e, &m->plan.cfg, src, start, k, view, err, errlen)) return -1;
    return eval_put(e, m, src, err, errlen);
}

/* evaluate's loader thread: fetches one batch while the forward of the one before runs */
typedef struct {
    train_eval_batches *e;
    const tower_config *cfg;
    data_source *src;
    int64_t start;
    int k, view, rc;
    char err[512];
} eval_job;

/* Job i of an evaluation: images from (i / nv) * B, view i % nv (nv 10: the ten views,
 * 1: the centre crop). */
static void eval_job_at(eval_job *j, int64_t i, int nv, int64_t n, int B)
{
    j->start = i / nv * B;
    j->k = (int)(n - j->start < B ? n - j->start : B);
    j->view = nv == DATA_VIEWS ? (int)(i % nv) : DATA_VIEW_CENTER;
}

static void *eval_job_run(void *p)
{
    eval_job *j = p;
    j->rc = eval_fetch(j->e, j->cfg, j->src, j->start, j->k, j->view, j->err, sizeof j->err);
    return NULL;
}

/* Evaluates n images of src: top-1/top-5 errors and mean loss for the center crop, and
 * for the average of the ten views' softmax outputs when views == 10. The model's batch
 * is fixed, so a short last batch is padded with copies of its first image, which are
 * not counted (train_eval_batches_load). */
static int evaluate(model *m, data_source *src, int64_t n, int views, int F,
                    train_eval_row *r, char *err, size_t errlen)
{
    int B = m->plan.cfg.batch, V = m->plan.cfg.classes, nv = views == 10 ? DATA_VIEWS : 1;
    /* two batch buffers: batch i + 1 is fetched by a loader thread while batch i runs
     * (job i: images from (i / nv) * B, view i % nv) */
    train_eval_batches eb[2];
    if (train_eval_batches_init(&eb[0], m, F, err, errlen)) return -1;
    if (train_eval_batches_init(&eb[1], m, F, err, errlen)) {
        train_eval_batches_free(&eb[0]);
        return -1;
    }
    float *probs = malloc(sizeof(float) * (size_t)B * V),
          *acc = malloc(sizeof(float) * (size_t)B * V);
    int rc = 0, loading = 0;
    int c1 = 0, c5 = 0, t1 = 0, t5 = 0;
    double loss = 0;
    pthread_t loader;
    eval_job job[2];
    int64_t jobs = (n + B - 1) / B * nv;
    if (!probs || !acc) {
        snprintf(err, errlen, "out of host memory for evaluation");
        rc = -1;
        goto done;
    }
    for (int q = 0; q < 2; q++)
        job[q] = (eval_job){.e = &eb[q], .cfg = &m->plan.cfg, .src = src};
    for (int64_t i = 0; i < jobs; i++) {
        int v = (int)(i % nv);
        eval_job *cur = &job[i % 2];
        if (i == 0) { /* the first batch: fetched here */
            eval_job_at(cur, 0, nv, n, B);
            eval_job_run(cur);
        } else {
            pthread_join(loader, NULL);
            loading = 0;
        }
        if (cur->rc || eval_put(cur->e, m, src, cur->err, sizeof cur->err)) {
            snprintf(err, errlen, "%s", cur->err);
            rc = -1;
            goto done;
        }
        if (i + 1 < jobs) { /* the next batch, into the other buffer */
            eval_job *nx = &job[(i + 1) % 2];
            eval_job_at(nx, i + 1, nv, n, B);
            /* its buffer's last upload (two batches back) must have ended */
            if (nx->e->gpu && model_input_wait(m, err, errlen)) {
                rc = -1;
                goto done;
            }
            if (pthread_create(&loader, NULL, eval_job_run, nx) != 0) {
                eval_job_run(nx); /* no thread: fetch it here */
            } else {
                loading = 1;
            }
        }
        if (v == 0) memset(acc, 0, sizeof(float) * (size_t)B * V);
        model_forward(m, 0);
        if (m->failed) {
            base_errf(err, errlen, "evaluation: %s", m->error);
            rc = -1;
            goto done;
        }
        model_get_probs(m, probs);
        const int32_t *labels = cur->e->labels;
        int k = cur->k;
        if (cur->view == DATA_VIEW_CENTER) {
            if (train_topk_errors(probs, labels, k, V, &c1, &c5)) {
                snprintf(err, errlen, "a label is outside the %d classes", V);
                rc = -1;
                goto done;
            }
            for (int b = 0; b < k; b++) {
                double p = probs[(size_t)b * V + labels[b]];
                loss -= log(p > 1e-30 ? p : 1e-30);
            }
        }
        for (size_t x = 0; x < (size_t)k * V; x++) acc[x] += probs[x] / DATA_VIEWS;
        if (views == 10 && v == nv - 1 && train_topk_errors(acc, labels, k, V, &t1, &t5)) {
            snprintf(err, errlen, "a label is outside the %d classes", V);
            rc = -1;
            goto done;
        }
    }
    r->images = n;
    r->loss = loss / (double)n;
    r->top1_err_center = (double)c1 / n;
    r->top5_err_center = (double)c5 / n;
    r->top1_err_10view = views == 10 ? (double)t1 / n : NAN;
    r->top5_err_10view = views == 10 ? (double)t5 / n : NAN;
done:
    if (loading) pthread_join(loader, NULL);
    train_eval_batches_free(&eb[0]);
    train_eval_batches_free(&eb[1]);
    free(probs);
    free(acc);
    return rc;
}

/* Everything a run carries between steps; what a checkpoint stores is `meta`. */
typedef struct {
    const train_options *o;
    model m;
    data_source *tr, *te;
    data_prefetch *pf;
    train_run_folder rf;   /* RUN, locked from the start to the end */
    train_metrics mt;
    int metrics_open;
    int write_failed;      /* a metrics line could not be written: the run stops */
    int64_t ckpt_step;     /* step of the newest checkpoint this run wrote or resumed; -1 */
    train_progress pg;
    train_ckpt_meta meta;
    char run_dir[4096], ckpt_dir[4200];
    int64_t n_train, n_test, steps_per_epoch, total_steps;
    /* timing of the logging interval in progress (its sums are meta.interval, which
     * checkpoints carry, so a line logged after a resume averages the same steps) */
    double wait_interval, step_interval; /* seconds waited / stepped since the last line */
    double t_interval;
    double wait_total, step_total; /* seconds waited for data / stepped since this start */
    int64_t train_limit, eval_every; /* the options', or on --resume the checkpoint's */
    int epochs;                      /* --epochs, or the net's */
    int downsample;                  /* F: crops of F*S pixels averaged to S (the meta's) */
    float *gray;                     /* (B, 3, S, S): a one-channel or downsampled net's
                                        batch (set_float_batch) */
} run_state;

/* A metrics line was lost: the run must stop before it writes a checkpoint, or the
 * resumed run would never redo the steps whose lines are missing. */
static void metrics_failed(run_state *r, const char *err)
{
    if (!r->write_failed)
        fprintf(stderr, "twotower: %s\n", err);
    r->write_failed = 1;
}

/* The message and exit code of a run stopped by a lost metrics line. */
static int write_stop(run_state *r)
{
    train_progress_end(&r->pg);
    char newest[64];
    if (r->ckpt_step >= 0)
        snprintf(newest, sizeof newest, "step %lld", (long long)r->ckpt_step);
    else
        snprintf(newest, sizeof newest, "none yet");
    fprintf(stderr, "twotower: stopped at step %lld: %s cannot be written; the newest "
                    "checkpoint (%s) and the metrics lines up to it are kept: free space, "
                    "then continue with --resume %s\n",
            (long long)r->m.step, r->mt.path, newest, r->run_dir);
    return 1;
}

static void log_event(run_state *r, const char *kind, const char *msg)
{
    char err[256];
    train_progress_end(&r->pg);
    fprintf(stderr, "twotower: %s\n", msg);
    if (r->metrics_open &&
        train_metrics_log_event(&r->mt, r->m.step, (double)r->m.step / r->steps_per_epoch,
                                kind, msg, err, sizeof err))
        metrics_failed(r, err);
}

/* The message, event and exit code of a run stopped by a failed step (model.h: an
 * exchange, or a tower's worker): the other tower has been stopped, and the newest
 * checkpoint, written between steps, is left as it was. */
static int model_stop(run_state *r)
{
    char msg[1024], newest[64];
    if (r->ckpt_step >= 0)
        snprintf(newest, sizeof newest, "step %lld", (long long)r->ckpt_step);
    else
        snprintf(newest, sizeof newest, "none yet");
    snprintf(msg, sizeof msg, "step %lld failed: %s; stopping (the newest checkpoint, %s, is "
                              "kept: --resume continues from it)",
             (long long)r->m.step + 1, r->m.error, newest);
    log_event(r, "stop", msg);
    return 3;
}

static int save_ckpt(run_state *r, const char *why)
{
    char err[512], msg[4800];
    r->meta.step = r->m.step;
    r->meta.epoch = r->m.step / r->steps_per_epoch;
    if (train_ckpt_save(r->ckpt_dir, &r->meta, &r->m, r->o->keep, err, sizeof err)) {
        snprintf(msg, sizeof msg, "checkpoint at step %lld FAILED (%s): %s",
                 (long long)r->m.step, why, err);
        log_event(r, "checkpoint", msg);
        return -1;
    }
    r->ckpt_step = r->m.step;
    snprintf(msg, sizeof msg, "checkpoint %s/ckpt-%08lld.ttc (%s)", r->ckpt_dir,
             (long long)r->m.step, why);
    log_event(r, "checkpoint", msg);
    return 0;
}

/* Where the run's files go: --run, else the run folder a --resume names, else a new
 * runs/run-DATE-TIME folder (a name from the clock is fine; no randomness comes from it). */
static void pick_run_dir(const train_options *o, char *out, size_t n)
{
    if (o->run_dir) {
        snprintf(out, n, "%s", o->run_dir);
        return;
    }
    if (o->resume) {
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/%s", o->resume, TRAIN_CKPT_SUBDIR);
        if (is_dir(sub)) {
            snprintf(out, n, "%s", o->resume);
            return;
        }
        /* RUN/ckpt or RUN/ckpt/ckpt-N.ttc: climb to RUN */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", o->resume);
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(tmp, '/');
            int ckpt_level = !strcmp(slash ? slash + 1 : tmp, TRAIN_CKPT_SUBDIR);
            if (!slash) {
                snprintf(tmp, sizeof tmp, ".");
                break;
            }
            *slash = 0;
            if (ckpt_level) break;
        }
        snprintf(out, n, "%s", tmp);
        return;
    }
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    char stamp[64];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tmv);
    snprintf(out, n, "runs/run-%s", stamp);
    /* two runs started in the same second get folders of their own */
    struct stat st;
    for (int k = 2; k < 100 && lstat(out, &st) == 0; k++)
        snprintf(out, n, "runs/run-%s-%d", stamp, k);
}

/* --resume: every flag the command line gave that a checkpoint fixes must agree with it
 * (a silently ignored --batch or --seed would make a different run than the user asked
 * for, and a different --train-limit or --eval-every would break the exact resume).
 * Returns -1 with err naming the flag and both values. */
static int resume_conflicts(const train_options *o, const train_ckpt_meta *k, const char *ckpt,
                            char *err, size_t errlen)
{
    const struct {
        unsigned bit;
        const char *flag;
        double given, stored;
    } f[] = {
        {TRAIN_GIVEN_TOWERS, "--towers", o->towers, k->cfg.towers},
        {TRAIN_GIVEN_BATCH, "--batch", o->batch, k->cfg.batch},
        {TRAIN_GIVEN_SIZE, "--size", o->size, k->cfg.in_size},
        {TRAIN_GIVEN_WIDTH_DIV, "--width-div", o->width_div, k->cfg.width_div},
        {TRAIN_GIVEN_SEED, "--seed", (double)o->seed, (double)k->seed},
        {TRAIN_GIVEN_LR, "--lr", o->lr, k->sched.lr0},
        {TRAIN_GIVEN_PATIENCE, "--patience", o->patience, k->sched.patience},
        {TRAIN_GIVEN_MAX_DROPS, "--max-drops", o->max_drops, k->sched.max_drops},
        {TRAIN_GIVEN_MIN_DELTA, "--min-delta", o->min_delta, k->sched.min_delta},
        {TRAIN_GIVEN_TRAIN_LIMIT, "--train-limit", (double)o->train_limit,
         (double)k->train_limit},
        {TRAIN_GIVEN_EVAL_EVERY, "--eval-every", (double)o->eval_every, (double)k->eval_every},
        {TRAIN_GIVEN_PCA_STD, "--pca-std", o->pca_std,
         k->pca_set ? k->pca_std : DATA_LIGHTING_STD},
        {TRAIN_GIVEN_MIRROR, "--mirror", o->mirror, k->mirror_set ? k->mirror : 1},
        {TRAIN_GIVEN_DOWNSAMPLE, "--downsample", o->downsample, k->downsample},
    };
    if (train_net_switches_agree(&o->switches, &tower_config_net(&k->cfg)->switches, ckpt, err,
                                 errlen))
        return -1;
    if (o->net && strcmp(o->net, tower_config_net(&k->cfg)->name)) {
        base_errf(err, errlen, "--net %s, but %s was made with --net %s: a resumed run keeps "
                   "the checkpoint's net (drop the flag, or start a new run)", o->net, ckpt,
                   tower_config_net(&k->cfg)->name);
        return -1;
    }
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if ((o->given & f[i].bit) && f[i].given != f[i].stored) {
            base_errf(err, errlen,
                       "%s %g, but %s was made with %g: a resumed run keeps the checkpoint's "
                       "value (drop the flag, or start a new run)",
                       f[i].flag, f[i].given, ckpt, f[i].stored);
            return -1;
        }
    return 0;
}

/* Opens data, builds (or restores) the model, opens the run folder. Returns 0 or an
 * exit code. */
static int run_open(run_state *r, const train_options *o)
{
    char err[1024] = "", ckpt[4096] = "";
    r->o = o;
    r->rf.lock_fd = -1; /* not held until claimed (run_close lets go of a held one only) */
    if (train_ckpt_debug_pause_ms(err, sizeof err) < 0) {
        fprintf(stderr, "twotower: %s\n", err);
        return 2;
    }
    r->tr = train_open_split(o->data, 1, err, sizeof err);
    if (!r->tr) {
        fprintf(stderr, "twotower: cannot open training data: %s\n", err);
        return 2;
    }
    r->te = train_open_split(o->data, 0, err, sizeof err);
    if (!r->te) {
        fprintf(stderr, "twotower: cannot open validation data: %s\n", err);
        return 2;
    }
    /* the net: --net and its switches (main.c made the net's batch, lr and size the
     * defaults of the flags not given; its epochs are taken below), or by --towers */
    tower_config cfg = {.towers = o->net && !(o->given & TRAIN_GIVEN_TOWERS) ? 0 : o->towers,
                        .classes = data_classes(r->tr), .batch = o->batch, .in_size = o->size,
                        .in_ch = 0, .width_div = o->width_div};
    if (train_net_choose(&cfg, o->net, &o->switches, err, sizeof err)) {
        fprintf(stderr, "twotower: %s\n", err);
        return 2;
    }
    double lr0 = o->lr;
    r->epochs = o->epochs;
    r->ckpt_step = -1;
    r->train_limit = o->train_limit;
    r->eval_every = o->eval_every;
    if (cfg.classes % cfg.towers) cfg.classes += cfg.towers - cfg.classes % cfg.towers;
    if (o->resume) {
        if (train_ckpt_resolve(o->resume, ckpt, sizeof ckpt, err, sizeof err)) {
            /* resolve names the flag itself for a missing path; not for a bad checkpoint */
            if (!strncmp(err, "--resume", 8))
                fprintf(stderr, "twotower: %s\n", err);
            else
                fprintf(stderr, "twotower: --resume %s: %s\n", o->resume, err);
            return 2;
        }
        train_ckpt_meta peek;
        if (train_ckpt_load(ckpt, &peek, NULL, err, sizeof err)) {
            fprintf(stderr, "twotower: --resume: %s\n", err);
            return 2;
        }
        if (resume_conflicts(o, &peek, ckpt, err, sizeof err)) {
            fprintf(stderr, "twotower: --resume: %s\n", err);
            return 2;
        }
        /* the checkpoint holds no dataset identity, but its classes and cursor say
         * enough to tell another dataset from the one it was trained on */
        int want = data_classes(r->tr);
        if (peek.cfg.towers > 0 && want % peek.cfg.towers)
            want += peek.cfg.towers - want % peek.cfg.towers;
        if (peek.cfg.classes != want || peek.cursor.pos >= data_count(r->tr)) {
            fprintf(stderr, "twotower: --resume %s: the checkpoint was trained on another "
                            "dataset: its net has %d class outputs and its data cursor is at "
                            "image %lld of epoch %lld; --data %s has %d classes (%d outputs) "
                            "and %lld training images\n",
                    ckpt, peek.cfg.classes, (long long)peek.cursor.pos,
                    (long long)peek.cursor.epoch, o->data, data_classes(r->tr), want,
                    (long long)data_count(r->tr));
            return 2;
        }
        fprintf(stderr, "twotower: resuming with the checkpoint's net and schedule: net %s, "
                        "%d towers, %d classes, batch %d, input %d, width_div %d, seed %llu, "
                        "lr0 %g, patience %d, train limit %lld, eval every %lld\n",
                tower_config_net(&peek.cfg)->name, peek.cfg.towers, peek.cfg.classes, peek.cfg.batch,
                peek.cfg.in_size,
                peek.cfg.width_div, (unsigned long long)peek.seed, peek.sched.lr0,
                peek.sched.patience, (long long)peek.train_limit, (long long)peek.eval_every);
        cfg = peek.cfg;
        r->downsample = peek.downsample;
        r->train_limit = peek.train_limit;
        r->eval_every = peek.eval_every;
    }
    if (r->epochs <= 0) r->epochs = tower_config_net(&cfg)->epochs; /* the net's (90, ...) */
    if (cfg.in_ch != 3 && cfg.in_ch != 1) { /* RGB batches, or their gray mean */
        fprintf(stderr, "twotower: the net reads %d input channels; the data path gives 3 "
                        "(or 1, their mean)\n", cfg.in_ch);
        return 2;
    }
    if (!o->resume) r->downsample = o->downsample > 0 ? o->downsample : 1;
    if ((long)r->downsample * cfg.in_size > DATA_SIZE) {
        fprintf(stderr, "twotower: --downsample %d with --size %d: crops of %d pixels; the "
                        "stored images are %d\n", r->downsample, cfg.in_size,
                r->downsample * cfg.in_size, DATA_SIZE);
        return 2;
    }
    if ((cfg.in_ch == 1 || r->downsample > 1) &&
        !(r->gray = malloc(sizeof(float) * 3 * cfg.batch * cfg.in_size * cfg.in_size))) {
        fprintf(stderr, "twotower: out of memory\n");
        return 1;
    }
    /* the run folder before anything is written to it, and before the net takes memory: a
     * second trainer on it is refused here, and a new run never writes over an earlier
     * one (what came before only read: the data, the checkpoint) */
    pick_run_dir(o, r->run_dir, sizeof r->run_dir);
    snprintf(r->ckpt_dir, sizeof r->ckpt_dir, "%s/%s", r->run_dir, TRAIN_CKPT_SUBDIR);
    int claim = train_run_folder_claim(&r->rf, r->run_dir, o->resume != NULL, err, sizeof err);
    if (claim) {
        fprintf(stderr, "twotower: %s\n", err);
        return claim;
    }
    if (o->resume && train_run_folder_check_resume(&r->rf, ckpt, err, sizeof err)) {
        fprintf(stderr, "twotower: --resume: %s\n", err);
        return 2;
    }
    if (model_init(&r->m, &cfg, &o->place, o->seed, err, sizeof err)) {
        fprintf(stderr, "twotower: cannot build the net: %s\n", err);
        return 2;
    }
    memset(&r->meta, 0, sizeof r->meta);
    r->meta.cfg = cfg;
    r->meta.seed = o->seed;
    r->meta.cursor = (train_cursor){o->seed, 0, 0};
    r->meta.train_limit = r->train_limit;
    r->meta.eval_every = r->eval_every;
    r->meta.pca_set = o->pca_std >= 0;
    r->meta.pca_std = o->pca_std >= 0 ? o->pca_std : DATA_LIGHTING_STD;
    r->meta.mirror_set = o->mirror >= 0;
    r->meta.mirror = o->mirror >= 0 ? o->mirror : 1;
    r->meta.downsample = r->downsample;
    train_sched_init(&r->meta.sched, lr0, o->patience, o->max_drops, o->min_delta);
    train_nonfinite_init(&r->meta.nonfinite, o->nonfinite_limit);
    r->meta.stats.best_top1 = r->meta.stats.best_top5 = 1;
    r->meta.stats.last_top1 = r->meta.stats.last_top5 = 1;
    r->meta.stats.best_step = -1;
    if (o->resume && train_ckpt_load(ckpt, &r->meta, &r->m, err, sizeof err)) {
        fprintf(stderr, "twotower: --resume: %s\n", err);
        return 2;
    }

    r->n_train = data_count(r->tr);
    r->n_test = data_count(r->te);
    if (r->train_limit > 0 && r->train_limit < r->n_train) r->n_train = r->train_limit;
    if (o->test_limit > 0 && o->test_limit < r->n_test) r->n_test = o->test_limit;
    r->steps_per_epoch = r->n_train / cfg.batch > 0 ? r->n_train / cfg.batch : 1;
    r->total_steps = r->steps_per_epoch * r->epochs;

    if (o->resume)
        r->ckpt_step = r->m.step;
    /* run.json first, once: a run that cannot write it (a full disk) stops before any
     * training, and leaves no metrics behind */
    char backend[128];
    train_placement_describe(&o->place, backend, sizeof backend);
    char swd[200];
    tower_net_switches_describe(&cfg.net.switches, swd, sizeof swd);
    char convs[2048];
    model_conv_describe(&r->m, convs, sizeof convs);
    json_t *extra = json_pack("{s:i, s:I, s:I, s:s, s:s, s:s, s:f, s:b, s:i, s:s, s:s}",
                              "epochs", r->epochs,
                              "train_limit", (json_int_t)r->train_limit, "test_limit",
                              (json_int_t)o->test_limit, "net", cfg.net.name, "switches", swd,
                              "optimizer",
                              cfg.net.optim.kind == TOWER_OPTIM_ADAM ? "adam" : "sgd",
                              "pca_std", r->meta.pca_std, "mirror", r->meta.mirror,
                              "downsample", r->downsample, "conv", convs, "precision",
                              o->place.cpu ? "fp32" : tower_precision_name(o->place.precision));
    if (extra) json_object_set_new(extra, "bf16_acts", json_boolean(o->place.bf16_acts));
    char kept_layers[256];
    model_bf16_acts_describe(&r->m, kept_layers, sizeof kept_layers);
    if (extra) json_object_set_new(extra, "bf16_acts_layers", json_string(kept_layers));
    train_run_info info = {o->argc, o->argv, NULL, backend, r->meta.seed, cfg, extra};
    int info_rc = train_run_info_write(r->run_dir, &info, err, sizeof err);
    json_decref(extra);
    if (info_rc) {
        fprintf(stderr, "twotower: %s; the run cannot start\n", err);
        return 1;
    }
    if (train_metrics_open(&r->mt, r->run_dir, o->resume ? r->m.step : -1, err, sizeof err)) {
        fprintf(stderr, "twotower: %s; the run cannot start\n", err);
        return 1;
    }
    r->metrics_open = 1;
    if (o->resume) {
        if (train_metrics_log_resume(&r->mt, r->m.step, (double)r->m.step / r->steps_per_epoch,
                                     ckpt, o->argc, o->argv, err, sizeof err)) {
            fprintf(stderr, "twotower: %s; the run cannot start\n", err);
            return 1;
        }
        fprintf(stderr, "twotower: resumed from %s at step %lld (epoch %lld), lr %g\n", ckpt,
                (long long)r->m.step, (long long)(r->m.step / r->steps_per_epoch),
                r->meta.sched.lr);
    }
    tower probe;
    memset(&probe, 0, sizeof probe);
    probe.plan = r->m.plan;
    probe.ops = r->m.tw[0].ops; /* the arena's layout is the backend's */
    double mib = tower_carve(&probe, NULL) / 1048576.0;
#ifdef TT_HAVE_CUDA
    for (int t = 0; t < cfg.towers && !o->place.cpu; t++) {
        char name[256] = "?";
        size_t free_b = 0, total_b = 0;
        char derr[128];
        tower_cuda_device_info(r->m.tw[t].device, name, sizeof name, &free_b, &total_b, derr,
                               sizeof derr);
        mib = tower_cuda_mem_bytes(&r->m.tw[t]) / 1048576.0;
        char conv[1024];
        tower_cuda_describe_conv(&r->m.tw[t], conv, sizeof conv);
        fprintf(stderr, "twotower: tower %d on GPU %d (%s): %.0f MiB, %.0f of %.0f MiB free; "
                        "convolutions: %s\n",
                t, r->m.tw[t].device, name, mib, free_b / 1048576.0, total_b / 1048576.0, conv);
    }
    if (!o->place.cpu && o->place.conv == MODEL_CONV_AUTO)
        fprintf(stderr, "twotower: --conv %s\n", convs);
    else if (!o->place.cpu && o->place.conv == MODEL_CONV_PREFER_CUDNN)
        fprintf(stderr, "twotower: convolutions %s\n", convs);
    char kept[256];
    model_bf16_acts_describe(&r->m, kept, sizeof kept);
    if (kept[0]) fprintf(stderr, "twotower: activations kept in bf16 (--bf16-acts): %s\n", kept);
#endif
    char sw[256];
    tower_net_switches_describe(&cfg.net.switches, sw, sizeof sw);
    fprintf(stderr, "twotower: %s, net %s (switches: %s; %s), %d tower%s on %s (%.0f MiB per "
                    "tower), %lld train images/epoch, %lld validation images, batch %d, %d "
                    "epochs, lr %g, seed %llu, run folder %s\n",
            o->data, cfg.net.name, sw,
            cfg.net.optim.kind == TOWER_OPTIM_ADAM ? "adam" : "sgd", cfg.towers,
            cfg.towers > 1 ? "s" : "", backend, mib, (long long)r->n_train,
            (long long)r->n_test, cfg.batch, r->epochs, r->meta.sched.lr,
            (unsigned long long)r->meta.seed, r->run_dir);

    /* the lighting the run was started with (a resume: the checkpoint's) */
    if (r->meta.pca_set) data_set_lighting_std(r->tr, r->meta.pca_std);
    if (r->meta.mirror_set) data_set_mirror(r->tr, r->meta.mirror);
    data_cursor cur = {r->meta.cursor.seed, r->meta.cursor.epoch, r->meta.cursor.pos};
    /* GPU runs: uint8 crops in pinned memory, augmented on the device (section 4.1's
     * arithmetic on the GPU); the CPU backend: float batches augmented by the workers */
    /* a one-channel or downsampled net: float batches */
    int u8 = !o->place.cpu && cfg.in_ch == 3 && r->downsample == 1;
    data_prefetch_opts popt = {.depth = o->place.cpu ? 2 : 3, .threads = 0, .u8 = u8,
                               .pinned = u8, .downsample = u8 ? 1 : r->downsample};
    r->pf = data_prefetch_start_ex(r->tr, cur, cfg.batch, cfg.in_size * r->downsample, &popt,
                                   err, sizeof err);
    if (!r->pf) {
        fprintf(stderr, "twotower: cannot start the data loader: %s\n", err);
        return 2;
    }
    return 0;
}

/* Frees the run; the run folder is let go last. -1 when metrics.jsonl failed to close. */
static int run_close(run_state *r)
{
    /* the model first: it waits for uploads that may still read the prefetcher's
     * (pinned) buffers */
    if (r->m.comm) model_free(&r->m);
    if (r->pf) data_prefetch_stop(r->pf);
    if (r->tr) data_close(r->tr);
    if (r->te) data_close(r->te);
    free(r->gray);
    r->gray = NULL;
    int rc = 0;
    if (r->metrics_open) {
        train_progress_end(&r->pg);
        if (train_metrics_close(&r->mt) != 0) {
            fprintf(stderr, "twotower: %s: closing failed: %s\n", r->mt.path, strerror(errno));
            rc = -1;
        }
        r->metrics_open = 0;
    }
    train_run_folder_release(&r->rf);
    return rc;
}

/* One evaluation, its metrics line, and the schedule's decision. Returns 1 when the
 * schedule says training is over, 0 to go on, -1 on failure. */
static int run_eval(run_state *r)
{
    char err[512], why[512];
    train_eval_row e;
    double t0 = base_now();
    if (evaluate(&r->m, r->te, r->n_test, r->o->eval_views, r->downsample, &e, err,
                 sizeof err)) {
        log_event(r, "stop", err);
        return -1;
    }
    e.step = r->m.step;
    e.epoch = (double)r->m.step / r->steps_per_epoch;
    e.lr = r->meta.sched.lr;
    train_progress_end(&r->pg);
    printf("step %lld (epoch %.2f): validation on %lld images (%.1f s): accuracy %.2f%%, "
           "top-1 error %.2f%%, top-5 error %.2f%%, loss %.4f",
           (long long)e.step, e.epoch, (long long)e.images, base_now() - t0,
           100 * (1 - e.top1_err_center), 100 * e.top1_err_center, 100 * e.top5_err_center,
           e.loss);
    if (!isnan(e.top1_err_10view))
        printf("; 10-view accuracy %.2f%%, top-1 error %.2f%%, top-5 error %.2f%%",
               100 * (1 - e.top1_err_10view), 100 * e.top1_err_10view, 100 * e.top5_err_10view);
    printf("\n");
    fflush(stdout);
    if (train_metrics_log_eval(&r->mt, &e, err, sizeof err)) metrics_failed(r, err);
    train_ckpt_stats *st = &r->meta.stats;
    st->last_top1 = e.top1_err_center;
    st->last_top5 = e.top5_err_center;
    if (e.top1_err_center < st->best_top1) {
        st->best_top1 = e.top1_err_center;
        st->best_top5 = e.top5_err_center;
        st->best_step = (double)e.step;
    }
    int a = train_sched_observe(&r->meta.sched, e.top1_err_center, why, sizeof why);
    log_event(r, "schedule", why);
    return a == TRAIN_SCHED_STOP;
}

/* Interval bookkeeping and the metrics line every log_every steps. */
static void run_log(run_state *r, double loss, int wrong, double wait, double dt)
{
    train_ckpt_stats *st = &r->meta.stats;
    int B = r->m.plan.cfg.batch;
    train_ckpt_interval *iv = &r->meta.interval;
    iv->loss_sum += loss;
    iv->steps += 1;
    iv->top1_wrong += wrong;
    iv->images += B;
    st->images_seen += B;
    st->train_seconds += dt;
    st->last_loss = loss;
    iv->loss_ema = r->m.step == 1 ? loss : 0.95 * iv->loss_ema + 0.05 * loss;
    r->wait_interval += wait;
    r->step_interval += dt;
    r->wait_total += wait;
    r->step_total += dt;
    double now = base_now();
    train_progress_update(&r->pg, now, r->m.step, r->total_steps,
                          (double)r->m.step / r->steps_per_epoch, iv->loss_ema,
                          r->meta.sched.lr, B / (dt > 0 ? dt : 1e-9));
    if (r->o->log_every > 0 && r->m.step % r->o->log_every == 0) {
        char err[256];
        train_log_row row = {r->m.step, (double)r->m.step / r->steps_per_epoch,
                             r->meta.sched.lr, iv->loss_sum / iv->steps,
                             iv->top1_wrong / iv->images, iv->images / (now - r->t_interval),
                             r->step_interval > 0 ? r->wait_interval / r->step_interval : 0,
                             st->train_seconds};
        if (train_metrics_log_train(&r->mt, &row, err, sizeof err))
            metrics_failed(r, err);
        iv->loss_sum = iv->steps = iv->top1_wrong = iv->images = 0;
        r->wait_interval = r->step_interval = 0;
        r->t_interval = now;
    }
}

int train_run(const train_options *o)
{
    char err[1024] = "", msg[1024];
    run_state *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "twotower: out of memory\n");
        return 1;
    }
    int rc = run_open(r, o);
    if (rc) {
        run_close(r);
        free(r);
        return rc;
    }
    if (train_signals_install(err, sizeof err)) fprintf(stderr, "twotower: %s\n", err);
    int B = r->m.plan.cfg.batch, V = r->m.plan.cfg.classes;
    float *probs = malloc(sizeof(float) * (size_t)B * V);
    if (!probs) {
        fprintf(stderr, "twotower: out of memory\n");
        run_close(r);
        free(r);
        return 1;
    }
    train_progress_init(&r->pg, o->quiet ? NULL : stderr, 30.0, base_now(), r->m.step);
    r->t_interval = base_now();
    int done = r->meta.sched.stopped;
    while (!done && r->m.step < r->total_steps) {
        const int32_t *labels;
        data_cursor after;
        double wait, t0 = base_now();
        int bad;
        if (o->place.cpu || r->m.plan.cfg.in_ch != 3 || r->downsample > 1) {
            const float *x;
            bad = data_prefetch_next(r->pf, &x, &labels, &after, &wait, err, sizeof err);
            if (!bad) set_float_batch(&r->m, x, labels, r->gray);
        } else {
            const uint8_t *crops;
            const data_aug_params *params;
            /* the slot of the last batch goes back to the loader's threads in the next
             * call: only once the device has finished copying from it */
            bad = model_input_wait(&r->m, err, sizeof err) ||
                  data_prefetch_next_u8(r->pf, &crops, &params, &labels, &after, &wait, err,
                                        sizeof err) ||
                  model_set_batch_u8(&r->m, crops, params, labels, data_mean_image(r->tr), err,
                                     sizeof err);
        }
        if (bad && r->m.failed) { /* a device error at the upload: as a tower's */
            rc = model_stop(r);
            break;
        }
        if (bad) {
            snprintf(msg, sizeof msg, "data loader failed: %s", err);
            log_event(r, "stop", msg);
            rc = 1;
            break;
        }
        r->meta.cursor = (train_cursor){after.seed, after.epoch, after.pos};
        int wrong1 = 0, wrong5 = 0, skipped;
        if (!o->place.cpu) {
            /* GPU towers: the whole step at once (one CUDA graph where --graph allows), its
             * update skipped on the device when the loss is not finite (the check on GPUs,
             * see paper_notes.md); the probabilities are the step's, as after its forward */
            int64_t step_before = r->m.step;
            double loss = model_train_step_checked(&r->m, (real)r->meta.sched.lr);
            if (!r->m.failed) {
                model_get_probs(&r->m, probs);
                train_topk_errors(probs, labels, B, V, &wrong1, &wrong5);
            }
            if (r->m.failed) { /* a tower failed: no checkpoint after it */
                rc = model_stop(r);
                break;
            }
            int a = train_nonfinite_observe(&r->meta.nonfinite, loss, step_before, msg,
                                            sizeof msg);
            skipped = a != TRAIN_NONFINITE_OK;
            if (skipped) {
                log_event(r, "nonfinite", msg); /* the batch is consumed, the weights kept */
                if (a == TRAIN_NONFINITE_STOP) {
                    rc = 1;
                    break;
                }
            } else {
                run_log(r, loss, wrong1, wait, base_now() - t0);
            }
        } else {
            double loss = model_forward(&r->m, 1);
            if (!r->m.failed) {
                model_get_probs(&r->m, probs);
                train_topk_errors(probs, labels, B, V, &wrong1, &wrong5);
                model_backward(&r->m);
            }
            if (r->m.failed) { /* a tower failed: no update, no checkpoint after it */
                rc = model_stop(r);
                break;
            }
            /* a non-finite loss, or (CPU towers, whose gradients are host memory) a non-finite
             * gradient, skips the update */
            double check = loss;
            for (int t = 0; t < r->m.towers && isfinite(check); t++)
                if (!train_all_finite_f32(r->m.tw[t].grads, r->m.plan.n_params)) check = NAN;
            int a = train_nonfinite_observe(&r->meta.nonfinite, check, r->m.step, msg, sizeof msg);
            skipped = a != TRAIN_NONFINITE_OK;
            if (skipped) {
                log_event(r, "nonfinite", msg);
                r->m.step++; /* the batch is consumed; the weights stay as they were */
                if (a == TRAIN_NONFINITE_STOP) {
                    rc = 1;
                    break;
                }
            } else {
                model_update(&r->m, (real)r->meta.sched.lr);
                if (r->m.failed) {
                    rc = model_stop(r);
                    break;
                }
                r->m.step++;
                run_log(r, loss, wrong1, wait, base_now() - t0);
            }
        }
        /* a skipped step still ends its epoch: the evaluation, the schedule and a signal
         * are handled as after any step; only checkpoints wait for a good step, so a
         * streak of non-finite steps never replaces the last good checkpoint */

        int epoch_end = r->m.step % r->steps_per_epoch == 0;
        int eval_due = r->eval_every > 0 ? r->m.step % r->eval_every == 0 : epoch_end;
        if (eval_due || r->m.step == r->total_steps) {
            int e = run_eval(r);
            if (e < 0) {
                rc = r->m.failed ? 3 : 1;
                break;
            }
            if (e == 1) {
                log_event(r, "stop", "the schedule ended training (plateau after the last "
                                     "learning-rate drop)");
                done = 1;
            }
        }
        if (r->write_failed) {
            rc = write_stop(r);
            break;
        }
        if (train_signals_stop_requested()) {
            snprintf(msg, sizeof msg, "stopped by signal %d at step %lld%s",
                     train_signals_stop_requested(), (long long)r->m.step,
                     skipped ? " (after a skipped non-finite step: no checkpoint written, the "
                               "last good one is kept)" : "");
            log_event(r, "signal", msg);
            if (r->write_failed)
                rc = write_stop(r);
            else
                rc = skipped ? train_signals_exit_code()
                             : save_ckpt(r, "signal") ? 1 : train_signals_exit_code();
            goto out;
        }
        if (o->ckpt_every > 0 && r->m.step % o->ckpt_every == 0 && !done && !skipped &&
            r->m.step < r->total_steps)
            if (save_ckpt(r, "periodic")) {
                rc = 1;
                break;
            }
    }
    if (rc == 0) {
        if (save_ckpt(r, "end of run")) rc = 1;
        train_progress_end(&r->pg);
        /* the whole run's share of step time spent waiting for data (the metrics lines
         * give it per logging interval) */
        snprintf(msg, sizeof msg, "data wait: %.2f%% of step time (%.2f s of %.2f s) since "
                                  "this process started",
                 r->step_total > 0 ? 100 * r->wait_total / r->step_total : 0.0, r->wait_total,
                 r->step_total);
        log_event(r, "data_wait", msg);
        if (r->write_failed)
            rc = write_stop(r);
        else if (r->meta.stats.best_step >= 0)
            fprintf(stderr, "twotower: done at step %lld; best validation top-1 error %.2f%% "
                            "(top-5 %.2f%%) at step %.0f\n",
                    (long long)r->m.step, 100 * r->meta.stats.best_top1,
                    100 * r->meta.stats.best_top5, r->meta.stats.best_step);
        else
            fprintf(stderr, "twotower: done at step %lld; no evaluation scored better than "
                            "100%% error\n", (long long)r->m.step);
    }
out:
    train_signals_uninstall();
    free(probs);
    if (run_close(r) != 0 && rc == 0) rc = 1;
    free(r);
    return rc;
}
