/* comm_cuda: the GPU backends of src/comm (COMM_SAME_DEVICE and COMM_NCCL), in
 * src/comm/cuda/. Internal to src/comm: only comm.c includes it, under TT_HAVE_CUDA, and
 * forwards kinds 2 and 3 here. Plain C (streams are void *, each a cudaStream_t).
 * Semantics of allgather and reduce_scatter are those of comm.h. */
#ifndef COMM_CUDA_H
#define COMM_CUDA_H

#include <stddef.h>

#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct comm_cuda comm_cuda;

/* How long a wait for NCCL work may take before the communicators are aborted. */
#define COMM_CUDA_TIMEOUT_S 300.0

/* kind: COMM_SAME_DEVICE (ntowers 1 or 2, every device the same) or COMM_NCCL (ntowers 2,
 * two different devices). Always float32 (comm.c refuses float64 on these kinds).
 * Creates the events (and, for NCCL, the communicators with ncclCommInitAll).
 * NULL with err when it cannot start. */
comm_cuda *comm_cuda_init(comm_kind kind, int ntowers, const int *devices, char *err,
                          size_t errlen);
/* Waits (bounded, see comm_cuda_wait) for outstanding NCCL work, then frees everything;
 * communicators that failed or timed out are aborted rather than destroyed. */
void comm_cuda_free(comm_cuda *c);

/* As comm_allgather / comm_reduce_scatter in comm.h. Enqueued on streams[t]; the host
 * does not wait for the GPU (same-device: events order the two streams; NCCL: the
 * collectives are ordered by NCCL itself), except that the NCCL backend first waits for
 * the collective it issued one call earlier (comm_cuda_wait), so the host is never more
 * than one collective ahead and a hung or failed peer is reported instead of hanging. */
int comm_cuda_allgather(comm_cuda *c, void *const *bufs, size_t count, void *const *streams,
                        char *err, size_t errlen);
int comm_cuda_reduce_scatter(comm_cuda *c, void *const *out, void *const *grads, size_t count,
                             void *const *streams, char *err, size_t errlen);

/* Waits until every collective issued so far has finished, polling the streams' events
 * and ncclCommGetAsyncError; on an NCCL error, or after timeout_s, aborts the
 * communicators and returns -1 with a message (a no-op returning 0 for SAME_DEVICE,
 * whose work is ordered by events and needs no host wait). */
int comm_cuda_wait(comm_cuda *c, double timeout_s, char *err, size_t errlen);

/* ---- one thread per rank (comm.h's comm_*_rank); comm.c puts its host barriers between
 * the stages of the same-device exchange: ready, barrier, exchange, barrier, done. Each
 * rank touches only its own events, pending flag and communicator. */
/* same-device: records ready[rank] on stream (the rank's inputs are written); NCCL: 0. */
int comm_cuda_rank_ready(comm_cuda *c, int rank, void *stream, char *err, size_t errlen);
/* same-device: stream waits for the other rank's `ready`, then this rank's copies (or its
 * slot's sum), then records done[rank]. NCCL: waits (bounded) for this rank's previous
 * collective, then issues its collective on its own communicator and stream. */
int comm_cuda_allgather_rank(comm_cuda *c, int rank, void *const *bufs, size_t count,
                             void *stream, char *err, size_t errlen);
int comm_cuda_reduce_scatter_rank(comm_cuda *c, int rank, void *const *out, void *const *grads,
                                  size_t count, void *stream, char *err, size_t errlen);
/* same-device: stream waits for the other rank's `done`; NCCL: 0. */
int comm_cuda_rank_done(comm_cuda *c, int rank, void *stream, char *err, size_t errlen);
/* comm_cuda_wait for this rank alone; a failure aborts this rank's communicator only. */
int comm_cuda_wait_rank(comm_cuda *c, int rank, double timeout_s, char *err, size_t errlen);
/* From any thread: every wait (comm_cuda_wait, comm_cuda_wait_rank, and the one before
 * each NCCL collective) from now on aborts the communicators it is for and returns -1, so
 * each rank's thread aborts its own at its next exchange, and comm_cuda_wait (once the
 * ranks' threads are idle) aborts them all; a collective left waiting on the GPU for a
 * rank that failed is ended that way. */
void comm_cuda_stop(comm_cuda *c);

#ifdef __cplusplus
}
#endif
#endif
