/* test_comm_gpu.c: the same-device and NCCL backends (src/comm/cuda) against the host
 * rule: all-gather fills every slot, reduce-scatter gives a + b exactly, and NCCL equals
 * same-device bit for bit; the per-rank calls, one thread per tower, give the same. The
 * inputs are written with async copies on the towers' own
 * streams right before the exchange and read back on the same streams after it, with no
 * host synchronisation in between: only the backend's event/NCCL ordering makes the data
 * arrive. Skips without a GPU (NCCL cases: without two). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cuda/gpu_util.h"
#include "comm/comm.h"

enum { N = 100003 }; /* odd, and large enough that a copy takes real time */

typedef struct {
    int dev[2];
    cudaStream_t st[2];
    float *buf[2], *out[2];  /* device: gathered (2, N) and reduce-scatter output (N) */
    float *host[2];          /* pinned: (2, N) */
} rig;

static void rig_open(rig *r, int dev0, int dev1)
{
    r->dev[0] = dev0;
    r->dev[1] = dev1;
    for (int t = 0; t < 2; t++) {
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaStreamCreateWithFlags(&r->st[t], cudaStreamNonBlocking));
        r->buf[t] = tt_dev_alloc(sizeof(float) * 2 * N);
        r->out[t] = tt_dev_alloc(sizeof(float) * N);
        TT_CUDA(cudaMallocHost((void **)&r->host[t], sizeof(float) * 2 * N));
    }
}

static void rig_close(rig *r)
{
    for (int t = 0; t < 2; t++) {
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaStreamSynchronize(r->st[t]));
        cudaStreamDestroy(r->st[t]);
        cudaFree(r->buf[t]);
        cudaFree(r->out[t]);
        cudaFreeHost(r->host[t]);
    }
}

static float own(int t, size_t i) { return (float)(t + 1) * 0.5f + (float)(i % 1000) * 1e-3f; }
static float grad(int t, size_t i) { return (float)t * 1e6f + (float)(i % 977) * 0.3f - 1.7f; }

/* Each tower writes (async, on its stream) its own slot; all-gather; each reads back
 * (async, on its stream) its whole buffer. */
static void gather_and_read(rig *r, comm *c)
{
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < 2 * N; i++) r->host[t][i] = -1.0f;
        for (size_t i = 0; i < N; i++) r->host[t][(size_t)t * N + i] = own(t, i);
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaMemsetAsync(r->buf[t], 0xff, sizeof(float) * 2 * N, r->st[t]));
        TT_CUDA(cudaMemcpyAsync(r->buf[t] + (size_t)t * N, r->host[t] + (size_t)t * N,
                                sizeof(float) * N, cudaMemcpyHostToDevice, r->st[t]));
    }
    void *bufs[2] = {r->buf[0], r->buf[1]}, *streams[2] = {r->st[0], r->st[1]};
    char err[512] = "";
    cr_assert_eq(comm_allgather(c, bufs, N, streams, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 2; t++) {
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaMemcpyAsync(r->host[t], r->buf[t], sizeof(float) * 2 * N,
                                cudaMemcpyDeviceToHost, r->st[t]));
    }
    for (int t = 0; t < 2; t++) {
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaStreamSynchronize(r->st[t]));
        for (size_t i = 0; i < N; i++)
            for (int s = 0; s < 2; s++)
                cr_assert_eq(r->host[t][(size_t)s * N + i], own(s, i),
                             "tower %d slot %d [%zu]: %g", t, s, i,
                             (double)r->host[t][(size_t)s * N + i]);
    }
}

/* Each tower writes gradients for both slots; reduce-scatter; out[t] read back must be
 * grads[0][t] + grads[1][t] exactly. Returns the two outputs (malloc'd) for comparison. */
static void reduce_and_read(rig *r, comm *c, float **result)
{
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < 2 * N; i++) r->host[t][i] = grad(t, i);
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaMemcpyAsync(r->buf[t], r->host[t], sizeof(float) * 2 * N,
                                cudaMemcpyHostToDevice, r->st[t]));
    }
    void *out[2] = {r->out[0], r->out[1]}, *grads[2] = {r->buf[0], r->buf[1]};
    void *streams[2] = {r->st[0], r->st[1]};
    char err[512] = "";
    cr_assert_eq(comm_reduce_scatter(c, out, grads, N, streams, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 2; t++) {
        result[t] = tt_host_alloc(N);
        TT_CUDA(cudaSetDevice(r->dev[t]));
        TT_CUDA(cudaMemcpyAsync(r->host[t], r->out[t], sizeof(float) * N,
                                cudaMemcpyDeviceToHost, r->st[t]));
        TT_CUDA(cudaStreamSynchronize(r->st[t]));
        memcpy(result[t], r->host[t], sizeof(float) * N);
        for (size_t i = 0; i < N; i++) {
            size_t k = (size_t)t * N + i;
            float want = grad(0, k) + grad(1, k);
            cr_assert(memcmp(&result[t][i], &want, sizeof want) == 0,
                      "tower %d [%zu]: %.9g, want %.9g", t, i, (double)result[t][i],
                      (double)want);
        }
    }
}

static comm *open_comm(comm_kind kind, int dev0, int dev1)
{
    int devs[2] = {dev0, dev1};
    char err[512] = "";
    comm *c = comm_init(kind, COMM_F32, 2, devs, err, sizeof err);
    cr_assert_not_null(c, "comm_init(%d): %s", (int)kind, err);
    cr_assert_eq(comm_get_kind(c), kind);
    return c;
}

Test(comm_gpu, same_device, .timeout = 60)
{
    TT_NEED_GPUS(1);
    rig r;
    rig_open(&r, 0, 0);
    comm *c = open_comm(COMM_SAME_DEVICE, 0, 0);
    float *res[2];
    for (int rep = 0; rep < 3; rep++) { /* events re-recorded: repeated calls work */
        gather_and_read(&r, c);
        reduce_and_read(&r, c, res);
        free(res[0]);
        free(res[1]);
    }
    comm_free(c);
    rig_close(&r);
}

Test(comm_gpu, same_device_refuses_two_devices)
{
    TT_NEED_GPUS(2);
    int devs[2] = {0, 1};
    char err[512] = "";
    cr_assert_null(comm_init(COMM_SAME_DEVICE, COMM_F32, 2, devs, err, sizeof err));
    cr_assert(strstr(err, "one GPU") != NULL, "%s", err);
}

Test(comm_gpu, nccl_refuses_one_device)
{
    TT_NEED_GPUS(1);
    int devs[2] = {0, 0};
    char err[512] = "";
    cr_assert_null(comm_init(COMM_NCCL, COMM_F32, 2, devs, err, sizeof err));
    cr_assert(strstr(err, "two different GPUs") != NULL, "%s", err);
}

Test(comm_gpu, missing_device_is_named)
{
    TT_NEED_GPUS(1);
    char why[128];
    int n = tt_gpu_count(why, sizeof why);
    int devs[2] = {n, n};
    char err[512] = "";
    cr_assert_null(comm_init(COMM_SAME_DEVICE, COMM_F32, 2, devs, err, sizeof err));
    cr_assert(strstr(err, "does not exist") != NULL, "%s", err);
}

Test(comm_gpu, nccl_equals_same_device, .timeout = 120)
{
    TT_NEED_GPUS(2);
    rig one, two;
    rig_open(&one, 0, 0);
    rig_open(&two, 0, 1);
    comm *same = open_comm(COMM_SAME_DEVICE, 0, 0), *nccl = open_comm(COMM_NCCL, 0, 1);
    float *rs[2], *rn[2];
    for (int rep = 0; rep < 3; rep++) {
        gather_and_read(&two, nccl);
        gather_and_read(&one, same);
        reduce_and_read(&two, nccl, rn);
        reduce_and_read(&one, same, rs);
        for (int t = 0; t < 2; t++) {
            cr_assert_arr_eq(rn[t], rs[t], sizeof(float) * N, "tower %d: NCCL != same-device",
                             t);
            free(rn[t]);
            free(rs[t]);
        }
        char err[512] = ""; /* the bounded wait after a finished exchange: no error */
        cr_assert_eq(comm_wait(nccl, err, sizeof err), 0, "%s", err);
        cr_assert_eq(comm_wait(same, err, sizeof err), 0, "%s", err);
    }
    comm_free(nccl);
    comm_free(same);
    rig_close(&two);
    rig_close(&one);
}

/* ---- one thread per tower: the per-rank calls ------------------------------------------ */

typedef struct {
    rig *r;
    comm *c;
    int t;
    int rc;         /* 0, or the first failure (no asserts off the test's own thread) */
    char err[512];
} rank_arg;

#define RANK_TRY(call)                                                                  \
    do {                                                                                \
        if (a->rc == 0 && (call) != 0) {                                                \
            a->rc = -1;                                                                 \
            if (!a->err[0]) snprintf(a->err, sizeof a->err, "%s failed", #call);        \
        }                                                                               \
    } while (0)

/* Rank t, on its own thread: writes its slot and its gradients on its stream (async),
 * all-gathers and reduce-scatters with the rank calls, reads its buffers back. The host
 * buffers were filled by the test's thread; the results are checked there. */
static void *rank_exchange(void *p)
{
    rank_arg *a = p;
    rig *r = a->r;
    int t = a->t;
    void *bufs[2] = {r->buf[0], r->buf[1]};
    float *gather_host = r->host[t];
    RANK_TRY(cudaSetDevice(r->dev[t]));
    RANK_TRY(cudaMemsetAsync(r->buf[t], 0xff, sizeof(float) * 2 * N, r->st[t]));
    RANK_TRY(cudaMemcpyAsync(r->buf[t] + (size_t)t * N, gather_host + (size_t)t * N,
                             sizeof(float) * N, cudaMemcpyHostToDevice, r->st[t]));
    RANK_TRY(comm_allgather_rank(a->c, t, bufs, N, r->st[t], a->err, sizeof a->err));
    RANK_TRY(cudaMemcpyAsync(gather_host, r->buf[t], sizeof(float) * 2 * N,
                             cudaMemcpyDeviceToHost, r->st[t]));
    RANK_TRY(cudaStreamSynchronize(r->st[t]));
    return NULL;
}

static void *rank_reduce(void *p)
{
    rank_arg *a = p;
    rig *r = a->r;
    int t = a->t;
    void *grads[2] = {r->buf[0], r->buf[1]}, *out[2] = {r->out[0], r->out[1]};
    RANK_TRY(cudaSetDevice(r->dev[t]));
    RANK_TRY(cudaMemcpyAsync(r->buf[t], r->host[t], sizeof(float) * 2 * N,
                             cudaMemcpyHostToDevice, r->st[t]));
    RANK_TRY(comm_reduce_scatter_rank(a->c, t, out, grads, N, r->st[t], a->err, sizeof a->err));
    RANK_TRY(comm_wait_rank(a->c, t, a->err, sizeof a->err));
    RANK_TRY(cudaMemcpyAsync(r->host[t], r->out[t], sizeof(float) * N, cudaMemcpyDeviceToHost,
                             r->st[t]));
    RANK_TRY(cudaStreamSynchronize(r->st[t]));
    return NULL;
}

static void run_ranks(rig *r, comm *c, void *(*fn)(void *))
{
    rank_arg a[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        a[t] = (rank_arg){r, c, t, 0, ""};
        cr_assert_eq(pthread_create(&th[t], NULL, fn, &a[t]), 0);
    }
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < 2; t++) cr_assert_eq(a[t].rc, 0, "rank %d: %s", t, a[t].err);
}

static void rank_calls_match(int dev0, int dev1, comm_kind kind)
{
    rig r;
    rig_open(&r, dev0, dev1);
    comm *c = open_comm(kind, dev0, dev1);
    for (int rep = 0; rep < 3; rep++) {
        for (int t = 0; t < 2; t++) {
            for (size_t i = 0; i < 2 * N; i++) r.host[t][i] = -1.0f;
            for (size_t i = 0; i < N; i++) r.host[t][(size_t)t * N + i] = own(t, i) + (float)rep;
        }
        run_ranks(&r, c, rank_exchange);
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < N; i++)
                for (int s = 0; s < 2; s++)
                    cr_assert_eq(r.host[t][(size_t)s * N + i], own(s, i) + (float)rep,
                                 "rep %d tower %d slot %d [%zu]", rep, t, s, i);
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < 2 * N; i++) r.host[t][i] = grad(t, i) + (float)rep;
        run_ranks(&r, c, rank_reduce);
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < N; i++) {
                size_t k = (size_t)t * N + i;
                float want = (grad(0, k) + (float)rep) + (grad(1, k) + (float)rep);
                cr_assert(memcmp(&r.host[t][i], &want, sizeof want) == 0,
                          "rep %d tower %d [%zu]: %.9g, want %.9g", rep, t, i,
                          (double)r.host[t][i], (double)want);
            }
    }
    comm_free(c);
    rig_close(&r);
}

Test(comm_gpu, same_device_rank_calls_from_two_threads, .timeout = 60)
{
    TT_NEED_GPUS(1);
    rank_calls_match(0, 0, COMM_SAME_DEVICE);
}

Test(comm_gpu, nccl_rank_calls_from_two_threads, .timeout = 120)
{
    TT_NEED_GPUS(2);
    rank_calls_match(0, 1, COMM_NCCL);
}
