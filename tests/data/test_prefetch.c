/* test_prefetch: the prefetcher gives exactly the batches data_train_batch gives, in
 * order, whatever its thread count and depth, in float and uint8 modes; cursors after
 * each batch; wait statistics; refusals. */
#include "helpers.h"

static char *dir;
static data_source *src;
static void setup(void) { src = th_open_train_shards(3, 5, &dir); }
static void teardown(void) { th_close_train_shards(src, dir); }

enum { B = 4, CROP = 48, K = 11 }; /* 11 batches of 4 over 15 images: three epochs */

Test(prefetch, equals_synchronous_batches, .init = setup, .fini = teardown, .timeout = 60)
{
    size_t n = (size_t)B * 3 * CROP * CROP;
    float *ref = malloc(K * n * sizeof *ref);
    int32_t rlab[K][B];
    data_cursor rafter[K];
    char err[256];
    data_cursor c = {.seed = 5, .epoch = 1, .pos = 9};
    const data_cursor start = c;
    for (int k = 0; k < K; k++) {
        cr_assert_eq(data_train_batch(src, &c, B, CROP, ref + k * n, rlab[k], err, sizeof err), 0);
        rafter[k] = c;
    }
    static const int cfg[][2] = {{1, 2}, {2, 2}, {3, 4}, {4, 3}};
    for (int t = 0; t < 4; t++) {
        data_prefetch_opts o = {.depth = cfg[t][1], .threads = cfg[t][0], .u8 = 0};
        data_prefetch *p = data_prefetch_start_ex(src, start, B, CROP, &o, err, sizeof err);
        cr_assert_not_null(p, "%s", err);
        for (int k = 0; k < K; k++) {
            const float *x;
            const int32_t *lab;
            data_cursor after;
            double w = -1;
            cr_assert_eq(data_prefetch_next(p, &x, &lab, &after, &w, err, sizeof err), 0, "%s", err);
            cr_assert_eq(memcmp(x, ref + k * n, n * sizeof *x), 0,
                         "threads %d depth %d: batch %d differs", cfg[t][0], cfg[t][1], k);
            cr_assert_eq(memcmp(lab, rlab[k], sizeof rlab[k]), 0);
            cr_assert(after.seed == rafter[k].seed && after.epoch == rafter[k].epoch &&
                      after.pos == rafter[k].pos);
            cr_assert_geq(w, 0.0);
        }
        int64_t nb;
        double wt;
        data_prefetch_stats(p, &nb, &wt);
        cr_assert_eq(nb, K);
        cr_assert_geq(wt, 0.0);
        const uint8_t *cr;
        const data_aug_params *pa;
        const int32_t *lab;
        cr_assert_eq(data_prefetch_next_u8(p, &cr, &pa, &lab, NULL, NULL, err, sizeof err), -1,
                     "a float prefetcher must refuse the uint8 call");
        data_prefetch_stop(p);
    }
    /* uint8 mode: crops + params that augment to the same floats */
    data_prefetch_opts o = {.depth = 3, .threads = 2, .u8 = 1};
    data_prefetch *p = data_prefetch_start_ex(src, start, B, CROP, &o, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    float *x = malloc(n * sizeof *x);
    for (int k = 0; k < K; k++) {
        const uint8_t *cr;
        const data_aug_params *pa;
        const int32_t *lab;
        cr_assert_eq(data_prefetch_next_u8(p, &cr, &pa, &lab, NULL, NULL, err, sizeof err), 0);
        data_augment_cpu(x, cr, data_mean_image(src), pa, B, CROP);
        cr_assert_eq(memcmp(x, ref + k * n, n * sizeof *x), 0, "uint8 batch %d differs", k);
        cr_assert_eq(memcmp(lab, rlab[k], sizeof rlab[k]), 0);
    }
    data_prefetch_stop(p);
    free(x);
    free(ref);
}

Test(prefetch, stop_while_workers_wait_and_refusals, .init = setup, .fini = teardown)
{
    char err[256];
    data_cursor c = {.seed = 1, .epoch = 0, .pos = 0};
    /* started and stopped without taking a batch: workers blocked on full slots exit */
    data_prefetch *p = data_prefetch_start(src, c, B, CROP, 2, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    usleep(20000);
    data_prefetch_stop(p);
    cr_assert_null(data_prefetch_start(src, c, B, CROP, 1, err, sizeof err));
    c.pos = 15;
    cr_assert_null(data_prefetch_start(src, c, B, CROP, 2, err, sizeof err));
#ifndef TT_HAVE_CUDA
    data_prefetch_opts o = {.depth = 2, .threads = 1, .pinned = 1};
    c.pos = 0;
    cr_assert_null(data_prefetch_start_ex(src, c, B, CROP, &o, err, sizeof err));
#endif
}
