/* bench_data: speed of the data path, as a benchmark and not a timed test (issue 4
 * item 6). `bench_data prep ...` runs prep (which prints images/s); `bench_data loader
 * (--idx DIR | --shards DIR) ...` measures what the prefetcher delivers, float batches
 * (CPU path, augmentation done here) and uint8 crops (GPU path, arithmetic on device). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/data.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int loader(int argc, char **argv)
{
    const char *idx = NULL, *shards = NULL;
    int B = 128, crop = 224, threads = 0, batches = 40, depth = 4;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--idx") && i + 1 < argc)
            idx = argv[++i];
        else if (!strcmp(argv[i], "--shards") && i + 1 < argc)
            shards = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--crop") && i + 1 < argc)
            crop = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc)
            batches = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--depth") && i + 1 < argc)
            depth = atoi(argv[++i]);
        else {
            fprintf(stderr, "bench_data loader: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    char err[512];
    data_source *s = idx ? data_open_idx(idx, 1, err, sizeof err)
                         : shards ? data_open_shards(shards, "train", err, sizeof err) : NULL;
    if (!s) {
        fprintf(stderr, "bench_data: %s\n", (idx || shards) ? err : "give --idx or --shards");
        return 1;
    }
    for (int u8 = 0; u8 < 2; u8++) {
        data_prefetch_opts o = {.depth = depth, .threads = threads, .u8 = u8, .pinned = 0};
        data_cursor c = {.seed = 1, .epoch = 0, .pos = 0};
        data_prefetch *p = data_prefetch_start_ex(s, c, B, crop, &o, err, sizeof err);
        if (!p) {
            fprintf(stderr, "bench_data: %s\n", err);
            data_close(s);
            return 1;
        }
        double t0 = 0;
        for (int k = 0; k < batches + 2; k++) {
            if (k == 2)
                t0 = now_s(); /* the first two batches include thread start-up */
            double w;
            int rc;
            if (u8) {
                const uint8_t *cr;
                const data_aug_params *pa;
                const int32_t *lab;
                rc = data_prefetch_next_u8(p, &cr, &pa, &lab, NULL, &w, err, sizeof err);
            } else {
                const float *x;
                const int32_t *lab;
                rc = data_prefetch_next(p, &x, &lab, NULL, &w, err, sizeof err);
            }
            if (rc != 0) {
                fprintf(stderr, "bench_data: %s\n", err);
                data_prefetch_stop(p);
                data_close(s);
                return 1;
            }
        }
        double el = now_s() - t0;
        char th[32];
        snprintf(th, sizeof th, threads ? "%d" : "auto (cores - 1)", threads);
        printf("loader %-6s %s B=%d crop=%d threads=%s: %.0f images/s (%.2f ms/batch)\n",
               u8 ? "uint8" : "float", idx ? "idx" : "shards", B, crop, th,
               batches * (double)B / el, 1e3 * el / batches);
        data_prefetch_stop(p);
    }
    data_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "prep"))
        return data_prep_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "loader"))
        return loader(argc - 2, argv + 2);
    fprintf(stderr, "usage: bench_data prep SRC OUT [prep flags]\n"
                    "       bench_data loader (--idx DIR | --shards DIR) [--batch 128] "
                    "[--crop 224] [--threads N] [--batches 40] [--depth 4]\n");
    return 2;
}
