/* test_comm_host.c: the exchange interface (comm.h) on its host backend, and the refusals
 * every backend shares: all-gather fills every slot, reduce-scatter sums a + b exactly,
 * bad arguments fail with a message. Runs everywhere (no GPU needed). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
