/* comm: moves activations and gradients between the towers at the four exchange points
 * (conv3's input, fc6's, fc7's and fc8's inputs) and the logits. Public header of src/comm.
 * It knows buffers, counts and streams, nothing of layers.
 *
 * A "gathered" buffer holds one slot per tower: (towers, count). Tower t writes its own
 * slot t; comm_allgather fills the other slots. Backward, every tower holds a gradient
 * for every slot; comm_reduce_scatter sums them so that each tower gets the gradient
 * of its own slot. With two towers the sum is a + b, which is commutative in IEEE
 * arithmetic, so every backend gives bit-identical results. */
#ifndef COMM_H
#define COMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    COMM_HOST = 1,        /* CPU towers: memcpy and a loop */
    COMM_SAME_DEVICE = 2, /* both towers on one GPU: device copies and an add kernel */
    COMM_NCCL = 3,        /* one tower per GPU: NCCL in one process (ncclCommInitAll) */
} comm_kind;

typedef enum { COMM_F32 = 1, COMM_F64 = 2 } comm_dtype; /* F64 only on COMM_HOST */

typedef struct comm comm;

/* ntowers: 1 or 2. devices: ntowers CUDA device ids (ignored for COMM_HOST).
 * Returns NULL with a message in err when the backend cannot start. */
comm *comm_init(comm_kind kind, comm_dtype dtype, int ntowers, const int *devices, char *err,
                size_t errlen);
void comm_free(comm *c);
comm_kind comm_get_kind(const comm *c);

/* bufs[t]: tower t's gathered buffer, ntowers slots of `count` elements, on tower t's
 * device. On return (host) or in stream order (GPU: each tower's stream waits for the
 * other tower's writes through events), slot s of every bufs[t] equals slot s of
 * bufs[s]. streams[t]: tower t's cudaStream_t, or NULL for the host.
 * Returns 0, or -1 with a message (a failed NCCL call aborts the communicators). */
int comm_allgather(comm *c, void *const *bufs, size_t count, void *const *streams,
                   char *err, size_t errlen);

/* grads[t]: tower t's gradient for every slot (ntowers, count); out[t]: count elements.
 * out[s] = sum over t of grads[t][slot s]. out[s] may not alias grads. */
int comm_reduce_scatter(comm *c, void *const *out, void *const *grads, size_t count,
                        void *const *streams, char *err, size_t errlen);

/* Waits until the last exchange has finished on the GPUs, polling NCCL's asynchronous
 * errors, for at most 300 s (NCCL only; the host and same-device backends return 0 at
 * once). Call it before a host wait on a tower's stream that follows an exchange, so a
 * failed or hung peer ends the run with a message instead of blocking forever.
 * 0, or -1 with err (the communicators are then aborted). */
int comm_wait(comm *c, char *err, size_t errlen);

/* ---- one thread per tower ----------------------------------------------------------
 * The trainer's tower workers (src/train/model.c) call these instead, each thread with its
 * own rank, in the same order of exchanges. The arguments are those above: every tower's
 * buffers (a rank reads the others' slots), and this rank's stream. Each returns when its
 * own buffers are filled (host) or the work is enqueued on its stream (GPU), and the other
 * rank may write its buffers again, as after the one-thread call:
 *   host:        a barrier, this rank's copies or sums, a barrier;
 *   same-device: this rank's `ready` event, a barrier, its stream waits for the other's
 *                `ready` and copies or adds, its `done`, a barrier, its stream waits for
 *                the other's `done`: the one-thread calls' events, each tower on its thread;
 *   NCCL:        this rank's collective on its own communicator, no host barrier (with one
 *                thread per rank no ncclGroupStart/End is needed), and comm_wait_rank polls
 *                only this rank.
 * The sums are the one-thread calls' (grads[0] + grads[1], in that order), so the results
 * are the same bits. comm_abort, from any thread, wakes every rank waiting in a barrier or
 * in comm_wait_rank: from then on every exchange returns -1, so a tower that failed stops
 * the other at its next exchange instead of leaving it waiting. */
int comm_allgather_rank(comm *c, int rank, void *const *bufs, size_t count, void *stream,
                        char *err, size_t errlen);
int comm_reduce_scatter_rank(comm *c, int rank, void *const *out, void *const *grads,
                             size_t count, void *stream, char *err, size_t errlen);
int comm_wait_rank(comm *c, int rank, char *err, size_t errlen);
/* After comm_abort, once no rank's thread is inside comm, comm_wait (the one-thread call)
 * aborts every NCCL communicator, so nothing left on a GPU waits for a rank that failed. */
void comm_abort(comm *c);
/* 1 once comm_abort has been called: a tower's worker checks it between layers, so it
 * stops at its next layer rather than at its next exchange. */
int comm_aborted(comm *c);
/* Undoes comm_abort after a failed CUDA graph capture (src/train/model.c), in which no
 * exchange ran on any device: once no rank's thread is inside comm, the barrier and the
 * test hook are as comm_init left them and the exchanges run again. Host and same-device
 * only (an aborted NCCL communicator is gone): 0, or -1 for NCCL. */
int comm_reset_abort(comm *c);
/* Test hook: rank's next exchange fails inside (-1, "... (the test hook)"), as a failed
 * copy or collective would: the per-rank calls after their first barrier (host and
 * same-device; the other rank then waits in the second one until comm_abort), before the
 * collective (NCCL); the one-thread calls at once. Called from the rank's own thread, or
 * from the caller's before a one-thread call. */
void comm_test_fail_rank(comm *c, int rank);

#ifdef __cplusplus
}
#endif
#endif
