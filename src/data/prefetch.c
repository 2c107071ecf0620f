/* prefetch: worker threads that make the next training batches while the current step
 * runs (section 4.1: "generated on the CPU while the GPU is training"). Batch k after the
 * start cursor goes to slot k % depth; its images are split into chunks that any idle
 * worker takes, so one batch is made by all threads at once and the order of work
 * never changes the bytes (each image depends only on its own cursor position). */
#include <stdlib.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "base/base.h"

typedef struct {
    uint8_t *crops;          /* (B, crop, crop, 3) u8 mode */
    data_aug_params *params; /* (B) u8 mode */
    float *x;                /* (B, 3, crop/F, crop/F) float mode (F: o.downsample) */
    int32_t *labels;         /* (B) */
    int64_t seq;             /* batch number in the slot, -1: none yet */
    int chunks_done;
    int ready;
} pf_slot;

struct data_prefetch {
    data_source *s;
    data_cursor start;
    int B, crop, F;
    data_prefetch_opts o;
    int chunk, chunks;       /* images per chunk, chunks per batch */
    pf_slot *slots;          /* (depth) */
    pthread_t *th;
    data_scratch **sc;       /* (nsc) one per thread */
    int nsc;
    int nth;                 /* threads running */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready;
    int64_t assign_seq;      /* next (batch, chunk) to hand to a worker */
    int assign_chunk;
    int64_t taken;           /* batches handed to the consumer */
    int stop, failed;
    char msg[512];
    int64_t batches;
    double wait_total;
};

static void *pf_alloc(const data_prefetch *p, size_t bytes)
{
#ifdef TT_HAVE_CUDA
    if (p->o.pinned) {
        void *ptr = NULL;
        return cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault) == cudaSuccess ? ptr : NULL;
    }
#endif
    (void)p;
    return malloc(bytes);
}

static void pf_free(const data_prefetch *p, void *ptr)
{
    if (!ptr)
        return;
#ifdef TT_HAVE_CUDA
    if (p->o.pinned) {
        cudaFreeHost(ptr);
        return;
    }
#endif
    (void)p;
    free(ptr);
}

typedef struct {
    data_prefetch *p;
    int id;
} pf_arg;

static void *pf_worker(void *argp)
{
    pf_arg *a = argp;
    data_prefetch *p = a->p;
    data_scratch *sc = p->sc[a->id];
    size_t csz = (size_t)p->crop * p->crop * 3, xsz = csz / ((size_t)p->F * p->F);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->stop || p->failed)
            break;
        int64_t released = p->taken > 0 ? p->taken - 1 : 0;
        int64_t seq = p->assign_seq;
        if (seq >= released + p->o.depth) {
            pthread_cond_wait(&p->cv_work, &p->mu);
            continue;
        }
        int ck = p->assign_chunk++;
        if (p->assign_chunk == p->chunks) {
            p->assign_seq++;
            p->assign_chunk = 0;
        }
        pf_slot *sl = &p->slots[seq % p->o.depth];
        if (ck == 0) {
            sl->seq = seq;
            sl->chunks_done = 0;
            sl->ready = 0;
        }
        pthread_mutex_unlock(&p->mu);

        int b0 = ck * p->chunk;
        int n = p->B - b0 < p->chunk ? p->B - b0 : p->chunk;
        data_cursor c = data_cursor_advance(p->start, seq * (int64_t)p->B + b0, p->s->n);
        char e[256];
        int rc = data_fill_train(p->s, c, n, p->crop, p->F,
                                 p->o.u8 ? sl->crops + (size_t)b0 * csz : NULL,
                                 p->o.u8 ? sl->params + b0 : NULL, sl->labels + b0,
                                 p->o.u8 ? NULL : sl->x + (size_t)b0 * xsz, sc, e, sizeof e);

        pthread_mutex_lock(&p->mu);
        if (rc != 0) {
            p->failed = 1;
            snprintf(p->msg, sizeof p->msg, "prefetch batch %lld: %s", (long long)seq, e);
            pthread_cond_broadcast(&p->cv_ready);
            pthread_cond_broadcast(&p->cv_work);
            break;
        }
        if (++sl->chunks_done == p->chunks) {
            sl->ready = 1;
            pthread_cond_broadcast(&p->cv_ready);
        }
    }
    pthread_mutex_unlock(&p->mu);
    free(a);
    return NULL;
}

data_prefetch *data_prefetch_start(data_source *s, data_cursor start, int B, int crop,
                                   int depth, char *err, size_t errlen)
{
    data_prefetch_opts o = {.depth = depth, .threads = 0, .u8 = 0, .pinned = 0};
    return data_prefetch_start_ex(s, start, B, crop, &o, err, errlen);
}

data_prefetch *data_prefetch_start_ex(data_source *s, data_cursor start, int B, int crop,
                                      const data_prefetch_opts *opts, char *err,
                                      size_t errlen)
{
    if (data_check_batch(s, &start, B, crop, err, errlen) != 0)
        return NULL;
    if (opts->depth < 2 || opts->depth > 64) {
        data_fail(err, errlen, "prefetch depth %d must be in 2..64", opts->depth);
        return NULL;
    }
    int F = opts->downsample > 1 ? opts->downsample : 1;
    if (crop % F != 0 || (F > 1 && opts->u8)) {
        data_fail(err, errlen, "downsampling %d needs float batches of a crop that is a multiple "
                  "of it (crop %d)", F, crop);
        return NULL;
    }
#ifndef TT_HAVE_CUDA
    if (opts->pinned) {
        data_fail(err, errlen, "pinned prefetch buffers need a CUDA build");
        return NULL;
    }
#endif
    data_prefetch *p = calloc(1, sizeof *p);
    if (!p) {
        data_fail(err, errlen, "out of memory");
        return NULL;
    }
    p->s = s;
    p->start = start;
    p->B = B;
    p->crop = crop;
    p->F = F;
    p->o = *opts;
    int nth = opts->threads;
    if (nth <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        nth = nc > 1 ? (int)nc - 1 : 1;
    }
    if (nth > 256)
        nth = 256;
    /* about two chunks per thread per batch keeps every thread busy at the batch's end */
    p->chunk = (B + 2 * nth - 1) / (2 * nth);
    if (p->chunk < 1)
        p->chunk = 1;
    p->chunks = (B + p->chunk - 1) / p->chunk;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_ready, NULL);
    p->slots = calloc((size_t)opts->depth, sizeof *p->slots);
    p->sc = calloc((size_t)nth, sizeof *p->sc);
    p->th = calloc((size_t)nth, sizeof *p->th);
    p->nsc = p->sc ? nth : 0;
    if (!p->slots || !p->sc || !p->th) {
        data_fail(err, errlen, "out of memory");
        data_prefetch_stop(p);
        return NULL;
    }
    size_t csz = (size_t)crop * crop * 3;
    for (int k = 0; k < opts->depth; k++) {
        pf_slot *sl = &p->slots[k];
        sl->seq = -1;
        sl->labels = pf_alloc(p, (size_t)B * sizeof *sl->labels);
        int ok = sl->labels != NULL;
        if (opts->u8) {
            sl->crops = pf_alloc(p, (size_t)B * csz);
            sl->params = pf_alloc(p, (size_t)B * sizeof *sl->params);
            ok = ok && sl->crops && sl->params;
        } else {
            sl->x = pf_alloc(p, (size_t)B * (csz / ((size_t)F * F)) * sizeof(float));
            ok = ok && sl->x;
        }
        if (!ok) {
            data_fail(err, errlen, "cannot allocate %d prefetch buffers of %d images%s",
                      opts->depth, B, opts->pinned ? " in pinned memory" : "");
            data_prefetch_stop(p);
            return NULL;
        }
    }
    for (int t = 0; t < nth; t++) {
        p->sc[t] = data_scratch_new(s);
        if (!p->sc[t]) {
            data_fail(err, errlen, "out of memory for worker scratch");
            data_prefetch_stop(p);
            return NULL;
        }
    }
    for (int t = 0; t < nth; t++) {
        pf_arg *a = malloc(sizeof *a);
        if (a) {
            a->p = p;
            a->id = t;
        }
        if (!a || pthread_create(&p->th[t], NULL, pf_worker, a) != 0) {
            free(a);
            data_fail(err, errlen, "cannot start prefetch thread %d", t);
            data_prefetch_stop(p);
            return NULL;
        }
        p->nth = t + 1;
    }
    return p;
}

static int next_common(data_prefetch *p, pf_slot **out, data_cursor *after, double *wait_s,
                       char *err, size_t errlen)
{
    double t0 = base_now();
    pthread_mutex_lock(&p->mu);
    int64_t seq = p->taken;
    /* asking for batch seq releases batch seq - 1: its slot may be refilled */
    pthread_cond_broadcast(&p->cv_work);
    pf_slot *sl = &p->slots[seq % p->o.depth];
    while (!p->failed && !(sl->seq == seq && sl->ready))
        pthread_cond_wait(&p->cv_ready, &p->mu);
    if (p->failed) {
        pthread_mutex_unlock(&p->mu);
        return data_fail(err, errlen, "%s", p->msg);
    }
    p->taken++;
    pthread_cond_broadcast(&p->cv_work);
    double w = base_now() - t0;
    p->batches++;
    p->wait_total += w;
    pthread_mutex_unlock(&p->mu);
    if (wait_s)
        *wait_s = w;
    if (after)
        *after = data_cursor_advance(p->start, (seq + 1) * (int64_t)p->B, p->s->n);
    *out = sl;
    return 0;
}

int data_prefetch_next(data_prefetch *p, const float **x, const int32_t **labels,
                       data_cursor *after, double *wait_s, char *err, size_t errlen)
{
    if (p->o.u8)
        return data_fail(err, errlen, "this prefetcher hands out uint8 crops: use "
                                      "data_prefetch_next_u8");
    pf_slot *sl;
    if (next_common(p, &sl, after, wait_s, err, errlen) != 0)
        return -1;
    *x = sl->x;
    *labels = sl->labels;
    return 0;
}

int data_prefetch_next_u8(data_prefetch *p, const uint8_t **crops,
                          const data_aug_params **params, const int32_t **labels,
                          data_cursor *after, double *wait_s, char *err, size_t errlen)
{
    if (!p->o.u8)
        return data_fail(err, errlen, "this prefetcher hands out float batches: use "
                                      "data_prefetch_next");
    pf_slot *sl;
    if (next_common(p, &sl, after, wait_s, err, errlen) != 0)
        return -1;
    *crops = sl->crops;
    *params = sl->params;
    *labels = sl->labels;
    return 0;
}

void data_prefetch_stats(const data_prefetch *p, int64_t *batches, double *wait_total_s)
{
    data_prefetch *q = (data_prefetch *)p; /* the lock is not part of the logical state */
    pthread_mutex_lock(&q->mu);
    if (batches)
        *batches = q->batches;
    if (wait_total_s)
        *wait_total_s = q->wait_total;
    pthread_mutex_unlock(&q->mu);
}

void data_prefetch_stop(data_prefetch *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->nth; t++)
        pthread_join(p->th[t], NULL);
    if (p->slots)
        for (int k = 0; k < p->o.depth; k++) {
            pf_free(p, p->slots[k].labels);
            pf_free(p, p->slots[k].crops);
            pf_free(p, p->slots[k].params);
            pf_free(p, p->slots[k].x);
        }
    if (p->sc)
        for (int t = 0; t < p->nsc; t++)
            data_scratch_free(p->sc[t]);
    free(p->sc);
    free(p->slots);
    free(p->th);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_ready);
    free(p);
}
