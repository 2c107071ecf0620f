/* comm_cuda.cu: the GPU backends of src/comm. COMM_SAME_DEVICE: both towers on one GPU,
 * device-to-device copies and an add kernel ordered across the two towers' streams by
 * events. COMM_NCCL: one tower per GPU, NCCL in one process (ncclCommInitAll), grouped
 * collectives on the towers' streams. Knows pointers, counts and streams, not layers. */
#include "comm/comm_cuda.h"
#include "base/base.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct comm_cuda {
    comm_kind kind;
    int ntowers;
    int devices[2];
    /* ready[t]: recorded on tower t's stream once its inputs to the exchange are written;
     * done[t]: recorded on tower t's stream after its part of the exchange. Created once
     * here (on tower t's device) and re-recorded at every call. */
    cudaEvent_t ready[2], done[2];
    ncclComm_t nccl[2];
    int live[2];    /* rank r's communicator exists and has not been aborted */
    int pending[2]; /* NCCL: done[r] marks a collective the host has not yet seen finish */
    int stop;       /* comm_cuda_stop was called (read and written with __atomic_*: the
                       other tower's thread sets it) */
};

static const char *kind_name(comm_kind k)
{
    return k == COMM_NCCL ? "NCCL" : k == COMM_SAME_DEVICE ? "same-device" : "?";
}

/* Check macros that return the failure up (nccl-tests style) rather than exit: comm's
 * callers decide what a failed exchange means. They need `c`, `err`, `errlen` in scope. */
#define CU_TRY(call)                                                                       \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            snprintf(err, errlen, "comm (%s): %s failed at %s:%d: %s", kind_name(c->kind), \
                     #call, __FILE__, __LINE__, cudaGetErrorString(e_));                   \
            return -1;                                                                     \
        }                                                                                  \
    } while (0)

/* Aborts the communicators of ranks [lo, hi) (ncclCommAbort stops their kernels, so
 * nothing hangs on them afterwards); later calls fail with a message instead of using
 * them. One thread per rank: each aborts only its own. */
static void nccl_abort_ranks(comm_cuda *c, int lo, int hi)
{
    for (int r = lo; r < hi; r++) {
        if (c->live[r] && c->nccl[r]) ncclCommAbort(c->nccl[r]);
        c->live[r] = 0;
        c->pending[r] = 0;
    }
}

static void nccl_abort(comm_cuda *c) { nccl_abort_ranks(c, 0, c->ntowers); }

static int any_live(const comm_cuda *c) { return c->live[0] || c->live[1]; }

/* ---- life cycle --------------------------------------------------------------------- */

static void destroy_events(comm_cuda *c)
{
    for (int t = 0; t < c->ntowers; t++) {
        if (cudaSetDevice(c->devices[t]) != cudaSuccess) continue;
        if (c->ready[t]) cudaEventDestroy(c->ready[t]);
        if (c->done[t]) cudaEventDestroy(c->done[t]);
        c->ready[t] = c->done[t] = NULL;
    }
}

extern "C" void comm_cuda_free(comm_cuda *c)
{
    if (!c) return;
    if (c->kind == COMM_NCCL && any_live(c)) {
        char err[512];
        /* never destroy a communicator with work in flight: wait (bounded), else abort */
        if (comm_cuda_wait(c, COMM_CUDA_TIMEOUT_S, err, sizeof err)) {
            fprintf(stderr, "twotower: %s\n", err);
            nccl_abort(c);
        } else {
            for (int r = 0; r < c->ntowers; r++) {
                if (!c->live[r]) continue; /* aborted by its own thread after a failure */
                ncclResult_t res = ncclCommDestroy(c->nccl[r]);
                if (res != ncclSuccess)
                    fprintf(stderr, "twotower: comm (NCCL): ncclCommDestroy (rank %d): %s\n",
                            r, ncclGetErrorString(res));
                c->live[r] = 0;
            }
        }
    }
    destroy_events(c);
    free(c);
}

static comm_cuda *init_fail(comm_cuda *c)
{
    nccl_abort(c);
    destroy_events(c);
    free(c);
    return NULL;
}

extern "C" comm_cuda *comm_cuda_init(comm_kind kind, int ntowers, const int *devices,
                                     char *err, size_t errlen)
{
    if (kind != COMM_SAME_DEVICE && kind != COMM_NCCL) {
        snprintf(err, errlen, "comm: kind %d is not a GPU backend", (int)kind);
        return NULL;
    }
    if (ntowers < 1 || ntowers > 2 || !devices) {
        snprintf(err, errlen, "comm (%s): needs 1 or 2 towers and their devices (got %d)",
                 kind_name(kind), ntowers);
        return NULL;
    }
    if (kind == COMM_NCCL && (ntowers != 2 || devices[0] == devices[1])) {
        snprintf(err, errlen,
                 "comm (NCCL): needs two towers on two different GPUs (got %d tower(s), "
                 "GPU %d and %d); use the same-device backend for one GPU",
                 ntowers, devices[0], ntowers > 1 ? devices[1] : devices[0]);
        return NULL;
    }
    if (kind == COMM_SAME_DEVICE && ntowers == 2 && devices[0] != devices[1]) {
        snprintf(err, errlen,
                 "comm (same-device): both towers must be on one GPU (got GPU %d and %d)",
                 devices[0], devices[1]);
        return NULL;
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "comm (%s): no usable CUDA device: %s", kind_name(kind),
                 cudaGetErrorString(e));
        return NULL;
    }
    for (int t = 0; t < ntowers; t++)
        if (devices[t] < 0 || devices[t] >= ndev) {
            snprintf(err, errlen, "comm (%s): GPU %d does not exist (this machine has %d)",
                     kind_name(kind), devices[t], ndev);
            return NULL;
        }
    comm_cuda *c = (comm_cuda *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "comm (%s): out of host memory", kind_name(kind));
        return NULL;
    }
    c->kind = kind;
    c->ntowers = ntowers;
    for (int t = 0; t < ntowers; t++) {
        c->devices[t] = devices[t];
        e = cudaSetDevice(devices[t]);
        if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->ready[t], cudaEventDisableTiming);
        if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->done[t], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            snprintf(err, errlen, "comm (%s): creating events on GPU %d: %s", kind_name(kind),
                     devices[t], cudaGetErrorString(e));
            return init_fail(c);
        }
    }
    if (kind == COMM_NCCL) {
        ncclResult_t res = ncclCommInitAll(c->nccl, ntowers, c->devices);
        if (res != ncclSuccess) {
            snprintf(err, errlen, "comm (NCCL): ncclCommInitAll over GPUs %d,%d failed: %s",
                     devices[0], devices[1], ncclGetErrorString(res));
            return init_fail(c); /* nothing live: nothing to abort */
        }
        c->live[0] = c->live[1] = 1;
    }
    return c;
}

/* ---- NCCL: waiting without hanging ----------------------------------------------------- */

/* Polls ranks [lo, hi) until their pending collectives finish; a failure, a timeout or
 * comm_cuda_stop aborts the communicators of those ranks. */
static int wait_ranks(comm_cuda *c, int lo, int hi, double timeout_s, char *err,
                      size_t errlen)
{
    if (c->kind != COMM_NCCL) return 0;
    const char *aborted = hi - lo > 1 ? "communicators" : "this rank's communicator";
    int pending = 0;
    for (int r = lo; r < hi; r++) pending |= c->pending[r];
    /* stopped: abort even with nothing pending, as a collective issued after the last
     * look at the flag may still wait on the GPU for a rank that will never join it */
    double start = base_now();
    for (;;) {
        int finished = 1;
        if (__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
            snprintf(err, errlen, "comm (NCCL): stopped while waiting for an exchange (the "
                                  "other tower failed); %s aborted", aborted);
            nccl_abort_ranks(c, lo, hi);
            return -1;
        }
        if (!pending) return 0;
        for (int r = lo; r < hi; r++) {
            if (!c->pending[r]) continue;
            ncclResult_t async = ncclSuccess;
            ncclResult_t res = ncclCommGetAsyncError(c->nccl[r], &async);
            if (res == ncclSuccess) res = async;
            if (res != ncclSuccess && res != ncclInProgress) {
                snprintf(err, errlen,
                         "comm (NCCL): rank %d (GPU %d) reported an error: %s (%s); %s "
                         "aborted",
                         r, c->devices[r], ncclGetErrorString(res), ncclGetLastError(c->nccl[r]),
                         aborted);
                nccl_abort_ranks(c, lo, hi);
                return -1;
            }
            CU_TRY(cudaSetDevice(c->devices[r]));
            cudaError_t q = cudaEventQuery(c->done[r]);
            if (q == cudaErrorNotReady) {
                finished = 0;
            } else if (q != cudaSuccess) {
                snprintf(err, errlen,
                         "comm (NCCL): GPU %d failed while exchanging: %s; %s aborted",
                         c->devices[r], cudaGetErrorString(q), aborted);
                nccl_abort_ranks(c, lo, hi);
                return -1;
            }
        }
        if (finished) {
            for (int r = lo; r < hi; r++) c->pending[r] = 0;
            return 0;
        }
        if (base_now() - start > timeout_s) {
            snprintf(err, errlen,
                     "comm (NCCL): an exchange between GPU %d and GPU %d did not finish "
                     "within %.0f s (a GPU hung or stopped); %s aborted",
                     c->devices[0], c->devices[1], timeout_s, aborted);
            nccl_abort_ranks(c, lo, hi);
            return -1;
        }
        struct timespec nap = {0, 50000}; /* 50 us: polls cost nothing next to a step */
        nanosleep(&nap, NULL);
    }
}

extern "C" int comm_cuda_wait(comm_cuda *c, double timeout_s, char *err, size_t errlen)
{
    return wait_ranks(c, 0, c->ntowers, timeout_s, err, errlen);
}

extern "C" int comm_cuda_wait_rank(comm_cuda *c, int rank, double timeout_s, char *err,
                                   size_t errlen)
{
    return wait_ranks(c, rank, rank + 1, timeout_s, err, errlen);
}

extern "C" void comm_cuda_stop(comm_cuda *c) { __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE); }

/* Before every collective: the communicators must be alive, and the previous collective
 * must have finished (bounded wait), so a failure surfaces at the next exchange with a
 * message and the host never queues more than one collective ahead of the GPUs. */
static int nccl_before(comm_cuda *c, int lo, int hi, char *err, size_t errlen)
{
    for (int r = lo; r < hi; r++)
        if (!c->live[r]) {
            snprintf(err, errlen, "comm (NCCL): the communicator of rank %d was aborted after "
                                  "an earlier failure", r);
            return -1;
        }
    return wait_ranks(c, lo, hi, COMM_CUDA_TIMEOUT_S, err, errlen);
}

/* After ncclGroupEnd (or a rank's own collective): its result, then done[r] on each
 * stream of ranks [lo, hi) for the next wait. streams[r] is rank r's stream. */
static int nccl_after(comm_cuda *c, int lo, int hi, ncclResult_t res, const char *what,
                      void *const *streams, char *err, size_t errlen)
{
    if (res != ncclSuccess) {
        snprintf(err, errlen, "comm (NCCL): %s failed: %s (%s); communicator%s aborted", what,
                 ncclGetErrorString(res), ncclGetLastError(c->nccl[lo]),
                 hi - lo > 1 ? "s" : "");
        nccl_abort_ranks(c, lo, hi);
        return -1;
    }
    for (int r = lo; r < hi; r++) {
        CU_TRY(cudaSetDevice(c->devices[r]));
        CU_TRY(cudaEventRecord(c->done[r], (cudaStream_t)streams[r]));
        c->pending[r] = 1;
    }
    return 0;
}

static int nccl_allgather(comm_cuda *c, void *const *bufs, size_t count, void *const *streams,
                          char *err, size_t errlen)
{
    if (nccl_before(c, 0, c->ntowers, err, errlen)) return -1;
    /* in place: rank r's slot r is its send buffer (sendbuff == recvbuff + r * count) */
    ncclResult_t res = ncclGroupStart();
    for (int r = 0; r < c->ntowers && res == ncclSuccess; r++)
        res = ncclAllGather((const float *)bufs[r] + (size_t)r * count, bufs[r], count,
                            ncclFloat, c->nccl[r], (cudaStream_t)streams[r]);
    ncclResult_t end = ncclGroupEnd(); /* always closes the group, even after a failure */
    return nccl_after(c, 0, c->ntowers, res != ncclSuccess ? res : end, "ncclAllGather",
                      streams, err, errlen);
}

static int nccl_reduce_scatter(comm_cuda *c, void *const *out, void *const *grads,
                               size_t count, void *const *streams, char *err, size_t errlen)
{
    if (nccl_before(c, 0, c->ntowers, err, errlen)) return -1;
    /* rank r receives sum over ranks of grads[rank][slot r]: with two ranks one float
     * addition per element, a + b == b + a, so it equals the same-device and host sums */
    ncclResult_t res = ncclGroupStart();
    for (int r = 0; r < c->ntowers && res == ncclSuccess; r++)
        res = ncclReduceScatter(grads[r], out[r], count, ncclFloat, ncclSum, c->nccl[r],
                                (cudaStream_t)streams[r]);
    ncclResult_t end = ncclGroupEnd();
    return nccl_after(c, 0, c->ntowers, res != ncclSuccess ? res : end, "ncclReduceScatter",
                      streams, err, errlen);
}

/* ---- same device: copies, an add kernel, and events ---------------------------------- */

/* out (count) = a (count) + b (count), b may be NULL (one tower: a copy). One thread per
 * element, grid-stride. The sum is grads[0] + grads[1] in that order (commutative). */
__global__ void comm_add_kernel(float *out, const float *a, const float *b, size_t count)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = b ? a[i] + b[i] : a[i];
}

/* Cross-stream ordering with events only (no host sync): every tower's stream first
 * waits for the other's `ready` (its inputs are written), does its part, records `done`,
 * then waits for the other's `done`, so that neither stream runs ahead and overwrites a
 * buffer the other is still reading. One rank's share of each stage is below; the
 * one-thread calls run every rank's share of a stage before the next stage, the per-rank
 * calls (comm.c) a host barrier between the stages, which makes sure the other rank's
 * event has been recorded before this rank's stream waits for it. */
static int rank_record(comm_cuda *c, int t, cudaEvent_t ev, void *stream, char *err,
                       size_t errlen)
{
    CU_TRY(cudaSetDevice(c->devices[t])); /* same-device: every tower is on devices[0] */
    CU_TRY(cudaEventRecord(ev, (cudaStream_t)stream));
    return 0;
}

static int rank_wait_others(comm_cuda *c, int t, const cudaEvent_t *ev, void *stream,
                            char *err, size_t errlen)
{
    for (int u = 0; u < c->ntowers; u++)
        if (u != t) CU_TRY(cudaStreamWaitEvent((cudaStream_t)stream, ev[u], 0));
    return 0;
}

/* Every rank's share of one stage: record ev[t] on each stream, then each waits for the
 * others'. */
static int record_all(comm_cuda *c, cudaEvent_t *ev, void *const *streams, char *err,
                      size_t errlen)
{
    for (int t = 0; t < c->ntowers; t++)
        if (rank_record(c, t, ev[t], streams[t], err, errlen)) return -1;
    for (int t = 0; t < c->ntowers; t++)
        if (rank_wait_others(c, t, ev, streams[t], err, errlen)) return -1;
    return 0;
}

/* Tower t's stream fills the other slots of tower t's buffer. */
static int same_gather_copies(comm_cuda *c, int t, void *const *bufs, size_t count,
                              void *stream, char *err, size_t errlen)
{
    size_t slot = count * sizeof(float);
    for (int s = 0; s < c->ntowers; s++)
        if (s != t)
            CU_TRY(cudaMemcpyAsync((char *)bufs[t] + s * slot, (const char *)bufs[s] + s * slot,
                                   slot, cudaMemcpyDeviceToDevice, (cudaStream_t)stream));
    return 0;
}

/* Tower s's stream computes its own slot: out[s] = grads[0][s] + grads[1][s]. */
static int same_sum_slot(comm_cuda *c, int s, void *const *out, void *const *grads,
                         size_t count, void *stream, char *err, size_t errlen)
{
    size_t blocks = (count + 255) / 256;
    if (blocks > 65535u * 8u) blocks = 65535u * 8u;
    if (blocks < 1) blocks = 1;
    const float *a = (const float *)grads[0] + (size_t)s * count;
    const float *b = c->ntowers > 1 ? (const float *)grads[1] + (size_t)s * count : NULL;
    comm_add_kernel<<<(unsigned)blocks, 256, 0, (cudaStream_t)stream>>>((float *)out[s], a, b,
                                                                       count);
    CU_TRY(cudaGetLastError());
    return 0;
}

static int same_allgather(comm_cuda *c, void *const *bufs, size_t count, void *const *streams,
                          char *err, size_t errlen)
{
    if (record_all(c, c->ready, streams, err, errlen)) return -1;
    for (int t = 0; t < c->ntowers; t++)
        if (same_gather_copies(c, t, bufs, count, streams[t], err, errlen)) return -1;
    return record_all(c, c->done, streams, err, errlen);
}

static int same_reduce_scatter(comm_cuda *c, void *const *out, void *const *grads,
                               size_t count, void *const *streams, char *err, size_t errlen)
{
    if (record_all(c, c->ready, streams, err, errlen)) return -1;
    for (int s = 0; s < c->ntowers; s++)
        if (same_sum_slot(c, s, out, grads, count, streams[s], err, errlen)) return -1;
    return record_all(c, c->done, streams, err, errlen);
}

/* ---- the interface ------------------------------------------------------------------- */

extern "C" int comm_cuda_allgather(comm_cuda *c, void *const *bufs, size_t count,
                                   void *const *streams, char *err, size_t errlen)
{
    if (c->ntowers == 1 || count == 0) return 0; /* one slot: nothing to exchange */
    if (c->kind == COMM_NCCL) return nccl_allgather(c, bufs, count, streams, err, errlen);
    return same_allgather(c, bufs, count, streams, err, errlen);
}

extern "C" int comm_cuda_reduce_scatter(comm_cuda *c, void *const *out, void *const *grads,
                                        size_t count, void *const *streams, char *err,
                                        size_t errlen)
{
    if (count == 0) return 0;
    if (c->kind == COMM_NCCL)
        return nccl_reduce_scatter(c, out, grads, count, streams, err, errlen);
    return same_reduce_scatter(c, out, grads, count, streams, err, errlen);
}

/* ---- one thread per rank --------------------------------------------------------------- */

extern "C" int comm_cuda_rank_ready(comm_cuda *c, int rank, void *stream, char *err,
                                    size_t errlen)
{
    if (c->kind == COMM_NCCL) return 0;
    return rank_record(c, rank, c->ready[rank], stream, err, errlen);
}

extern "C" int comm_cuda_rank_done(comm_cuda *c, int rank, void *stream, char *err,
                                   size_t errlen)
{
    if (c->kind == COMM_NCCL) return 0;
    return rank_wait_others(c, rank, c->done, stream, err, errlen);
}

extern "C" int comm_cuda_allgather_rank(comm_cuda *c, int rank, void *const *bufs,
                                        size_t count, void *stream, char *err, size_t errlen)
{
    if (c->ntowers == 1 || count == 0) return 0;
    if (c->kind == COMM_NCCL) {
        void *streams[2] = {NULL, NULL};
        streams[rank] = stream;
        if (nccl_before(c, rank, rank + 1, err, errlen)) return -1;
        ncclResult_t res = ncclAllGather((const float *)bufs[rank] + (size_t)rank * count,
                                         bufs[rank], count, ncclFloat, c->nccl[rank],
                                         (cudaStream_t)stream);
        return nccl_after(c, rank, rank + 1, res, "ncclAllGather", streams, err, errlen);
    }
    if (rank_wait_others(c, rank, c->ready, stream, err, errlen) ||
        same_gather_copies(c, rank, bufs, count, stream, err, errlen))
        return -1;
    return rank_record(c, rank, c->done[rank], stream, err, errlen);
}

extern "C" int comm_cuda_reduce_scatter_rank(comm_cuda *c, int rank, void *const *out,
                                             void *const *grads, size_t count, void *stream,
                                             char *err, size_t errlen)
{
    if (count == 0) return 0;
    if (c->kind == COMM_NCCL) {
        void *streams[2] = {NULL, NULL};
        streams[rank] = stream;
        if (nccl_before(c, rank, rank + 1, err, errlen)) return -1;
        ncclResult_t res = ncclReduceScatter(grads[rank], out[rank], count, ncclFloat, ncclSum,
                                             c->nccl[rank], (cudaStream_t)stream);
        return nccl_after(c, rank, rank + 1, res, "ncclReduceScatter", streams, err, errlen);
    }
    if (rank_wait_others(c, rank, c->ready, stream, err, errlen) ||
        same_sum_slot(c, rank, out, grads, count, stream, err, errlen))
        return -1;
    return rank_record(c, rank, c->done[rank], stream, err, errlen);
}
