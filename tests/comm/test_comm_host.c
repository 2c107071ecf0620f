/* test_comm_host.c: the exchange interface (comm.h) on its host backend, and the refusals
 * every backend shares: all-gather fills every slot, reduce-scatter sums a + b exactly,
 * bad arguments fail with a message; the per-rank calls of two threads give the one-thread
 * calls' bits, and comm_abort lets a rank waiting for the other go. Runs everywhere (no
 * GPU needed). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"

static comm *host_comm(comm_dtype dtype, int ntowers)
{
    char err[256] = "";
    comm *c = comm_init(COMM_HOST, dtype, ntowers, NULL, err, sizeof err);
    cr_assert_not_null(c, "comm_init(host): %s", err);
    cr_assert_eq(comm_get_kind(c), COMM_HOST);
    return c;
}

/* value of slot s, element i, as tower s writes it */
static float val(int s, size_t i) { return (float)(s * 1000) + (float)i * 0.25f - 3.0f; }

Test(comm_host, allgather_f32_two_towers)
{
    enum { N = 1001 };
    comm *c = host_comm(COMM_F32, 2);
    float *b0 = malloc(2 * N * sizeof(float)), *b1 = malloc(2 * N * sizeof(float));
    cr_assert(b0 && b1);
    for (size_t i = 0; i < 2 * N; i++) b0[i] = b1[i] = -12345.0f; /* not yet exchanged */
    for (size_t i = 0; i < N; i++) {
        b0[i] = val(0, i);     /* tower 0 wrote slot 0 */
        b1[N + i] = val(1, i); /* tower 1 wrote slot 1 */
    }
    void *bufs[2] = {b0, b1}, *streams[2] = {NULL, NULL};
    char err[256] = "";
    cr_assert_eq(comm_allgather(c, bufs, N, streams, err, sizeof err), 0, "%s", err);
    for (size_t i = 0; i < N; i++)
        for (int s = 0; s < 2; s++) {
            cr_assert_eq(b0[s * N + i], val(s, i), "tower 0 slot %d [%zu]", s, i);
            cr_assert_eq(b1[s * N + i], val(s, i), "tower 1 slot %d [%zu]", s, i);
        }
    free(b0);
    free(b1);
    comm_free(c);
}

Test(comm_host, allgather_f64_two_towers)
{
    enum { N = 17 };
    comm *c = host_comm(COMM_F64, 2);
    double b0[2 * N], b1[2 * N];
    for (size_t i = 0; i < N; i++) {
        b0[i] = 1.0 / (double)(i + 1);
        b0[N + i] = 0;
        b1[i] = 0;
        b1[N + i] = -2.0 / (double)(i + 3);
    }
    void *bufs[2] = {b0, b1}, *streams[2] = {NULL, NULL};
    char err[256] = "";
    cr_assert_eq(comm_allgather(c, bufs, N, streams, err, sizeof err), 0, "%s", err);
    cr_assert_arr_eq(b0, b1, sizeof b0, "the two towers' gathered buffers differ");
    cr_assert_eq(b0[N + 4], -2.0 / 7.0);
    comm_free(c);
}

Test(comm_host, allgather_one_tower_is_a_no_op)
{
    comm *c = host_comm(COMM_F32, 1);
    float b[4] = {1, 2, 3, 4};
    void *bufs[1] = {b}, *streams[1] = {NULL};
    char err[256] = "";
    cr_assert_eq(comm_allgather(c, bufs, 4, streams, err, sizeof err), 0, "%s", err);
    cr_assert_eq(b[3], 4);
    comm_free(c);
}

/* the host exchange is finished when it returns: comm_wait has nothing to wait for */
Test(comm_host, wait_returns_at_once)
{
    comm *c = host_comm(COMM_F32, 2);
    char err[256] = "";
    cr_assert_eq(comm_wait(c, err, sizeof err), 0, "%s", err);
    cr_assert_str_empty(err);
    comm_free(c);
}

/* out[s] = grads[0][slot s] + grads[1][slot s], exactly a + b in float */
Test(comm_host, reduce_scatter_f32_two_towers)
{
    enum { N = 513 };
    comm *c = host_comm(COMM_F32, 2);
    float g0[2 * N], g1[2 * N], o0[N], o1[N];
    for (size_t i = 0; i < 2 * N; i++) {
        g0[i] = 0.1f * (float)i - 7.3f;
        g1[i] = 1e-3f * (float)(i * i % 97) + 1e7f * (float)(i % 2); /* rounding matters */
    }
    void *out[2] = {o0, o1}, *grads[2] = {g0, g1}, *streams[2] = {NULL, NULL};
    char err[256] = "";
    cr_assert_eq(comm_reduce_scatter(c, out, grads, N, streams, err, sizeof err), 0, "%s", err);
    for (size_t i = 0; i < N; i++) {
        float want0 = g0[i] + g1[i], want1 = g0[N + i] + g1[N + i];
        cr_assert(memcmp(&o0[i], &want0, sizeof want0) == 0, "slot 0 [%zu]", i);
        cr_assert(memcmp(&o1[i], &want1, sizeof want1) == 0, "slot 1 [%zu]", i);
        float rev = g1[i] + g0[i]; /* the order does not matter: why backends agree */
        cr_assert(memcmp(&o0[i], &rev, sizeof rev) == 0);
    }
    comm_free(c);
}

Test(comm_host, reduce_scatter_f64_and_one_tower)
{
    comm *c = host_comm(COMM_F64, 2);
    double g0[4] = {1, 2, 3, 4}, g1[4] = {10, 20, 30, 40}, o0[2], o1[2];
    void *out[2] = {o0, o1}, *grads[2] = {g0, g1}, *streams[2] = {NULL, NULL};
    char err[256] = "";
    cr_assert_eq(comm_reduce_scatter(c, out, grads, 2, streams, err, sizeof err), 0, "%s", err);
    cr_assert(o0[0] == 11 && o0[1] == 22 && o1[0] == 33 && o1[1] == 44);
    comm_free(c);

    c = host_comm(COMM_F32, 1);
    float h[3] = {1.5f, -2, 8}, o[3];
    void *out1[1] = {o}, *grads1[1] = {h}, *streams1[1] = {NULL};
    cr_assert_eq(comm_reduce_scatter(c, out1, grads1, 3, streams1, err, sizeof err), 0, "%s",
                 err);
    cr_assert(o[0] == 1.5f && o[1] == -2 && o[2] == 8, "one tower: its own gradient");
    comm_free(c);
}

Test(comm_host, bad_arguments_are_refused_with_a_message)
{
    char err[256] = "";
    cr_assert_null(comm_init(COMM_HOST, COMM_F32, 0, NULL, err, sizeof err));
    cr_assert(strlen(err) > 0);
    err[0] = '\0';
    cr_assert_null(comm_init(COMM_HOST, COMM_F32, 3, NULL, err, sizeof err));
    cr_assert(strlen(err) > 0);
    err[0] = '\0';
    int devs[2] = {0, 0};
    cr_assert_null(comm_init(COMM_SAME_DEVICE, COMM_F64, 2, devs, err, sizeof err),
                   "float64 accepted on a GPU backend");
    cr_assert(strstr(err, "64") != NULL, "%s", err);
}

/* A GPU backend without a usable device (hidden here; or no CUDA in the build) refuses
 * to start, with a message, instead of failing later. */
static void hide_gpus(void) { setenv("CUDA_VISIBLE_DEVICES", "", 1); }

Test(comm_host, gpu_backends_without_device_refuse, .init = hide_gpus)
{
    char err[256] = "";
    int same[2] = {0, 0}, two[2] = {0, 1};
    cr_assert_null(comm_init(COMM_SAME_DEVICE, COMM_F32, 2, same, err, sizeof err));
    cr_assert(strlen(err) > 0);
    err[0] = '\0';
    cr_assert_null(comm_init(COMM_NCCL, COMM_F32, 2, two, err, sizeof err));
    cr_assert(strlen(err) > 0);
}

/* ---- one thread per rank ------------------------------------------------------------ */

enum { RN = 513, ROUNDS = 40 };

typedef struct {
    comm *c;
    int rank;
    float *gathered[2]; /* (2, RN) each: every rank's gathered buffer */
    float *grads[2];    /* (2, RN) each */
    float *out[2];      /* (RN) each */
    int rc;
    char err[256];
} rank_job;

/* ROUNDS all-gathers and reduce-scatters of rank job->rank, each round's inputs written
 * (own slot, own gradients) just before its exchange, as a tower's layers do. */
static void *rank_main(void *p)
{
    rank_job *j = p;
    int r = j->rank;
    for (int k = 0; k < ROUNDS && j->rc == 0; k++) {
        for (size_t i = 0; i < RN; i++) {
            j->gathered[r][r * RN + i] = val(r, i) + (float)k;
            j->grads[r][i] = 0.1f * (float)(k + 1) * val(r, i);
            j->grads[r][RN + i] = -0.3f * val(1 - r, i) + (float)k;
        }
        void *bufs[2] = {j->gathered[0], j->gathered[1]};
        void *g[2] = {j->grads[0], j->grads[1]}, *o[2] = {j->out[0], j->out[1]};
        j->rc = comm_allgather_rank(j->c, r, bufs, RN, NULL, j->err, sizeof j->err);
        if (j->rc == 0)
            j->rc = comm_reduce_scatter_rank(j->c, r, o, g, RN, NULL, j->err, sizeof j->err);
        if (j->rc == 0) j->rc = comm_wait_rank(j->c, r, j->err, sizeof j->err);
        /* the last round's results are checked; the others must hold at once */
        for (size_t i = 0; i < RN && j->rc == 0; i++)
            if (j->gathered[r][(1 - r) * RN + i] != val(1 - r, i) + (float)k) j->rc = 2;
    }
    return NULL;
}

Test(comm_host, rank_calls_of_two_threads_equal_the_one_thread_calls, .timeout = 60)
{
    comm *c = host_comm(COMM_F32, 2);
    rank_job j[2];
    float *mem = calloc(2 * (2 * RN + 2 * RN + RN), sizeof(float));
    cr_assert_not_null(mem);
    for (int r = 0; r < 2; r++) {
        float *base = mem + (size_t)r * 5 * RN;
        j[0].gathered[r] = j[1].gathered[r] = base;
        j[0].grads[r] = j[1].grads[r] = base + 2 * RN;
        j[0].out[r] = j[1].out[r] = base + 4 * RN;
    }
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        j[r].c = c;
        j[r].rank = r;
        j[r].rc = 0;
        j[r].err[0] = 0;
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &j[r]), 0);
    }
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 2; r++) cr_assert_eq(j[r].rc, 0, "rank %d: %d %s", r, j[r].rc, j[r].err);
    /* the last round again, by the one-thread calls */
    float *ref = calloc(5 * 2 * RN, sizeof(float));
    cr_assert_not_null(ref);
    void *bufs[2], *g[2], *o[2], *streams[2] = {NULL, NULL};
    for (int r = 0; r < 2; r++) {
        float *base = ref + (size_t)r * 5 * RN;
        bufs[r] = base;
        g[r] = base + 2 * RN;
        o[r] = base + 4 * RN;
        memcpy(base + (size_t)r * RN, j[0].gathered[r] + (size_t)r * RN, RN * sizeof(float));
        memcpy(g[r], j[0].grads[r], 2 * RN * sizeof(float));
    }
    char err[256] = "";
    cr_assert_eq(comm_allgather(c, bufs, RN, streams, err, sizeof err), 0, "%s", err);
    cr_assert_eq(comm_reduce_scatter(c, o, g, RN, streams, err, sizeof err), 0, "%s", err);
    for (int r = 0; r < 2; r++) {
        cr_assert_arr_eq(bufs[r], j[0].gathered[r], 2 * RN * sizeof(float), "rank %d gathered",
                         r);
        cr_assert_arr_eq(o[r], j[0].out[r], RN * sizeof(float), "rank %d sums", r);
    }
    free(ref);
    free(mem);
    comm_free(c);
}

typedef struct {
    comm *c;
    int rc;
    char err[256];
} lone_job;

static void *lone_rank(void *p)
{
    lone_job *j = p;
    float buf[2 * 8] = {0};
    float other[2 * 8] = {0};
    void *bufs[2] = {buf, other};
    j->rc = comm_allgather_rank(j->c, 0, bufs, 8, NULL, j->err, sizeof j->err);
    return NULL;
}

/* Rank 1 never comes (its tower failed): comm_abort lets rank 0 go with -1, and every
 * later exchange fails at once. */
Test(comm_host, abort_lets_the_waiting_rank_go, .timeout = 30)
{
    comm *c = host_comm(COMM_F32, 2);
    lone_job j = {c, 0, ""};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, lone_rank, &j), 0);
    struct timespec nap = {0, 20 * 1000 * 1000};
    nanosleep(&nap, NULL);
    comm_abort(c);
    pthread_join(th, NULL);
    cr_assert_eq(j.rc, -1, "the waiting rank returned %d", j.rc);
    cr_assert(strstr(j.err, "another tower failed"), "message: %s", j.err);
    float a[2] = {0}, b[2] = {0};
    void *bufs[2] = {a, b};
    char err[256] = "";
    cr_assert_eq(comm_reduce_scatter_rank(c, 1, bufs, bufs, 1, NULL, err, sizeof err), -1);
    cr_assert_eq(comm_wait_rank(c, 1, err, sizeof err), -1);
    comm_free(c);
}
