/* comm.c: the exchange interface and its host backend, and the barrier the per-rank calls
 * of the tower threads meet at. The same-device and NCCL backends live in src/comm/cuda/
 * and are reached through comm_cuda.h. */
#include "comm/comm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(TT_HAVE_CUDA) && __has_include("comm/comm_cuda.h")
#include "comm/comm_cuda.h"
#define COMM_CUDA 1
#else
#define COMM_CUDA 0
#endif

struct comm {
    comm_kind kind;
    comm_dtype dtype;
    int ntowers;
    void *backend; /* the CUDA backend's state for kinds 2 and 3 */
    /* the per-rank calls' barrier: a generation counter under mu (pthread_barrier_t has
     * no way to let the waiting ranks go when a tower fails) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;       /* ranks waiting in the current generation */
    unsigned gen;      /* completed barriers */
    int aborted;       /* comm_abort was called: every barrier and exchange fails */
    int test_fail[2];  /* comm_test_fail_rank: rank's next exchange fails inside */
};

comm *comm_init(comm_kind kind, comm_dtype dtype, int ntowers, const int *devices, char *err,
                size_t errlen)
{
    if (ntowers < 1 || ntowers > 2) {
        snprintf(err, errlen, "comm: %d towers (1 or 2 supported)", ntowers);
        return NULL;
    }
    if (dtype != COMM_F32 && (dtype != COMM_F64 || kind != COMM_HOST)) {
        snprintf(err, errlen, "comm: float64 exchange exists only on the host backend");
        return NULL;
    }
    comm *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "comm: out of memory");
        return NULL;
    }
    c->kind = kind;
    c->dtype = dtype;
    c->ntowers = ntowers;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (kind == COMM_HOST) return c;
#if COMM_CUDA
    c->backend = comm_cuda_init(kind, ntowers, devices, err, errlen);
    if (c->backend) return c;
#else
    (void)devices;
    snprintf(err, errlen, "comm: this build has no CUDA backend (built with -Dcuda=disabled "
                          "or without nvcc)");
#endif
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return NULL;
}

void comm_free(comm *c)
{
    if (!c) return;
#if COMM_CUDA
    if (c->backend) comm_cuda_free(c->backend);
#endif
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

comm_kind comm_get_kind(const comm *c) { return c->kind; }

int comm_wait(comm *c, char *err, size_t errlen)
{
#if COMM_CUDA
    if (c->backend) return comm_cuda_wait(c->backend, COMM_CUDA_TIMEOUT_S, err, errlen);
#endif
    (void)c;
    (void)err;
    (void)errlen;
    return 0;
}

static size_t elem_size(const comm *c) { return c->dtype == COMM_F64 ? 8 : 4; }

/* Tower t's share of the host all-gather: the other towers' slots into its buffer. */
static void host_gather(const comm *c, int t, void *const *bufs, size_t count)
{
    size_t slot = count * elem_size(c);
    for (int s = 0; s < c->ntowers; s++)
        if (s != t) memcpy((char *)bufs[t] + s * slot, (const char *)bufs[s] + s * slot, slot);
}

/* Slot s of the host reduce-scatter: out[s] = grads[0][slot s] + grads[1][slot s].
 * g0 + g1 (no 0 + in front, so even the sign of a zero matches): with two towers a + b ==
 * b + a exactly, so this matches the GPU backends bit for bit. */
static void host_sum_slot(const comm *c, int s, void *const *out, void *const *grads,
                          size_t count)
{
    int T = c->ntowers;
    if (c->dtype == COMM_F64) {
        double *o = out[s];
        for (size_t i = 0; i < count; i++) {
            double acc = ((const double *)grads[0])[s * count + i];
            for (int t = 1; t < T; t++) acc += ((const double *)grads[t])[s * count + i];
            o[i] = acc;
        }
    } else {
        float *o = out[s];
        for (size_t i = 0; i < count; i++) {
            float acc = ((const float *)grads[0])[s * count + i];
            for (int t = 1; t < T; t++) acc += ((const float *)grads[t])[s * count + i];
            o[i] = acc;
        }
    }
}

/* comm_test_fail_rank's failure, when armed for `rank` (-1: any rank, the one-thread
 * calls): -1 with err, disarmed. Read and written by the rank's own thread only. */
static int test_failed(comm *c, int rank, char *err, size_t errlen)
{
    for (int r = 0; r < c->ntowers; r++) {
        if ((rank >= 0 && r != rank) || !c->test_fail[r]) continue;
        c->test_fail[r] = 0;
        snprintf(err, errlen, "comm: tower %d's exchange failed inside (the test hook)", r);
        return -1;
    }
    return 0;
}

void comm_test_fail_rank(comm *c, int rank)
{
    if (rank >= 0 && rank < c->ntowers) c->test_fail[rank] = 1;
}

int comm_allgather(comm *c, void *const *bufs, size_t count, void *const *streams,
                   char *err, size_t errlen)
{
    if (test_failed(c, -1, err, errlen)) return -1;
    if (c->ntowers == 1) return 0; /* one slot: nothing to exchange */
    if (c->kind != COMM_HOST) {
#if COMM_CUDA
        return comm_cuda_allgather(c->backend, bufs, count, streams, err, errlen);
#endif
    }
    for (int t = 0; t < c->ntowers; t++) host_gather(c, t, bufs, count);
    (void)streams;
    (void)err;
    (void)errlen;
    return 0;
}

int comm_reduce_scatter(comm *c, void *const *out, void *const *grads, size_t count,
                        void *const *streams, char *err, size_t errlen)
{
    if (test_failed(c, -1, err, errlen)) return -1;
    if (c->kind != COMM_HOST) {
#if COMM_CUDA
        return comm_cuda_reduce_scatter(c->backend, out, grads, count, streams, err, errlen);
#endif
    }
    for (int s = 0; s < c->ntowers; s++) host_sum_slot(c, s, out, grads, count);
    (void)streams;
    (void)err;
    (void)errlen;
    return 0;
}

/* ---- one thread per tower ------------------------------------------------------------- */

/* Waits until every rank has arrived. -1 with err when comm_abort came first (or comes
 * while this rank waits). */
static int barrier(comm *c, char *err, size_t errlen)
{
    pthread_mutex_lock(&c->mu);
    unsigned gen = c->gen;
    if (!c->aborted && ++c->arrived == c->ntowers) {
        c->arrived = 0;
        c->gen++;
        pthread_cond_broadcast(&c->cv);
    }
    while (!c->aborted && c->gen == gen) pthread_cond_wait(&c->cv, &c->mu);
    int rc = c->gen == gen ? -1 : 0; /* the barrier did not complete: aborted */
    pthread_mutex_unlock(&c->mu);
    if (rc) snprintf(err, errlen, "comm: stopped at an exchange (another tower failed)");
    return rc;
}

/* host and same-device: after comm_abort every call fails (NCCL: comm_cuda's waits say
 * so, and abort the communicator) */
static int is_aborted(comm *c, char *err, size_t errlen)
{
    pthread_mutex_lock(&c->mu);
    int a = c->aborted;
    pthread_mutex_unlock(&c->mu);
    if (a) snprintf(err, errlen, "comm: stopped at an exchange (another tower failed)");
    return a;
}

int comm_aborted(comm *c)
{
    pthread_mutex_lock(&c->mu);
    int a = c->aborted;
    pthread_mutex_unlock(&c->mu);
    return a;
}

void comm_abort(comm *c)
{
    pthread_mutex_lock(&c->mu);
    c->aborted = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
#if COMM_CUDA
    if (c->backend) comm_cuda_stop(c->backend);
#endif
}

int comm_reset_abort(comm *c)
{
    if (c->kind == COMM_NCCL) return -1;
    pthread_mutex_lock(&c->mu);
    c->aborted = 0;
    c->arrived = 0;
    c->test_fail[0] = c->test_fail[1] = 0;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

enum { OP_GATHER = 1, OP_SUM = 2 };

/* One rank's exchange: the stages comm.h describes, per backend. */
static int exchange_rank(comm *c, int op, int rank, void *const *out, void *const *in,
                         size_t count, void *stream, char *err, size_t errlen)
{
#if COMM_CUDA
    if (c->kind == COMM_NCCL && test_failed(c, rank, err, errlen)) return -1;
    if (c->kind == COMM_NCCL)
        return op == OP_GATHER
                   ? comm_cuda_allgather_rank(c->backend, rank, in, count, stream, err, errlen)
                   : comm_cuda_reduce_scatter_rank(c->backend, rank, out, in, count, stream,
                                                   err, errlen);
    if (c->kind == COMM_SAME_DEVICE) {
        if (comm_cuda_rank_ready(c->backend, rank, stream, err, errlen) ||
            barrier(c, err, errlen) || test_failed(c, rank, err, errlen))
            return -1;
        int rc = op == OP_GATHER
                     ? comm_cuda_allgather_rank(c->backend, rank, in, count, stream, err, errlen)
                     : comm_cuda_reduce_scatter_rank(c->backend, rank, out, in, count, stream,
                                                     err, errlen);
        /* a failed rank leaves at once: its caller's comm_abort lets the other one go */
        if (rc) return -1;
        if (barrier(c, err, errlen)) return -1;
        return comm_cuda_rank_done(c->backend, rank, stream, err, errlen);
    }
#endif
    if (c->kind != COMM_HOST) {
        snprintf(err, errlen, "comm: kind %d has no per-rank exchange in this build",
                 (int)c->kind);
        return -1;
    }
    /* the test hook fails this rank between the barriers, as a failed copy would: the
     * other rank is then waiting in the second barrier until comm_abort */
    if (is_aborted(c, err, errlen) || barrier(c, err, errlen) ||
        test_failed(c, rank, err, errlen))
        return -1;
    if (op == OP_GATHER)
        host_gather(c, rank, in, count);
    else
        host_sum_slot(c, rank, out, in, count);
    (void)stream;
    return barrier(c, err, errlen);
}

int comm_allgather_rank(comm *c, int rank, void *const *bufs, size_t count, void *stream,
                        char *err, size_t errlen)
{
    if (c->ntowers == 1 || count == 0) return 0; /* one slot: nothing to exchange */
    return exchange_rank(c, OP_GATHER, rank, NULL, bufs, count, stream, err, errlen);
}

int comm_reduce_scatter_rank(comm *c, int rank, void *const *out, void *const *grads,
                             size_t count, void *stream, char *err, size_t errlen)
{
    if (count == 0) return 0;
    return exchange_rank(c, OP_SUM, rank, out, grads, count, stream, err, errlen);
}

int comm_wait_rank(comm *c, int rank, char *err, size_t errlen)
{
#if COMM_CUDA
    if (c->kind == COMM_NCCL)
        return comm_cuda_wait_rank(c->backend, rank, COMM_CUDA_TIMEOUT_S, err, errlen);
#endif
    (void)rank;
    return is_aborted(c, err, errlen) ? -1 : 0;
}
