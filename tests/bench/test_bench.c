/* tests/bench: the pieces of `twotower bench` that its numbers rest on: the FLOP count
 * (4.35 GFLOP per image for the paper's net, as issue 6 states it) and the profiled step,
 * which drives the towers itself to time every layer and must therefore do exactly what
 * model_train_step does (same losses, same weights, bit for bit), and a whole `twotower
 * bench` with its JSON read back. On the CPU everywhere; the same on a GPU, and a whole
 * `twotower bench --gpus 0`, skip without a device. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/bench.h"
#include "train/dump.h"

Test(bench, flops_of_the_paper_net)
{
    tower_config cfg = {.towers = 2, .classes = 1000, .batch = 128, .in_size = 224,
                        .in_ch = 3, .width_div = 1};
    tower_plan plan;
    char err[256];
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    double f = train_bench_train_flops(&plan);
    /* 724.4 M multiply-adds forward (twotower summary), x2 FLOPs, x3 for training */
    cr_assert(fabs(f - 4.3466e9) < 0.001e9, "training FLOPs per image %.4e, not 4.35e9", f);
    /* one tower alone has half the kernels: less than half the work (conv3, fc6-fc8
     * read one tower instead of two) */
    cfg.towers = 1;
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    double f1 = train_bench_train_flops(&plan);
    cr_assert(f1 < 0.5 * f && f1 > 0.3 * f, "one tower: %.4e of %.4e", f1, f);
}

/* Two models from one seed: one trained by model_train_step, the other by the profiled
 * step. Losses and every parameter and momentum must agree bit for bit. */
static void same_as_model_train_step(int towers, model_placement place)
{
    tower_config cfg = {.towers = towers, .classes = 10, .batch = 3, .in_size = 67,
                        .in_ch = 3, .width_div = 8};
    model a, b;
    char err[256];
    cr_assert_eq(model_init(&a, &cfg, &place, 7, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&b, &cfg, &place, 7, err, sizeof err), 0, "%s", err);
    size_t xn = (size_t)cfg.batch * 3 * cfg.in_size * cfg.in_size, np = a.plan.n_params;
    float *x = malloc(sizeof(float) * xn);
    int32_t labels[3];
    real *pa = malloc(sizeof(real) * np), *pb = malloc(sizeof(real) * np);
    cr_assert(x && pa && pb);
    train_bench_prof p;
    cr_assert_eq(train_bench_prof_init(&p, &b, err, sizeof err), 0, "%s", err);
    for (int s = 0; s < 3; s++) {
        train_dump_batch(x, labels, &cfg, 100 + (uint64_t)s);
        model_set_batch(&a, x, labels);
        model_set_batch(&b, x, labels);
        double la = model_train_step(&a, 0.01f), lb = -1;
        cr_assert_eq(train_bench_prof_step(&p, &b, 0.01f, &lb, err, sizeof err), 0, "%s", err);
        cr_assert(isfinite(la));
        cr_assert(la == lb, "step %d: model_train_step loss %.9g, profiled step %.9g", s, la,
                  lb);
        cr_assert_eq(a.step, b.step);
        cr_assert(b.last_loss == lb);
    }
    for (int t = 0; t < towers; t++)
        for (int which = 0; which < 3; which++) {
            model_get_tensor(&a, t, which, pa);
            model_get_tensor(&b, t, which, pb);
            cr_assert(memcmp(pa, pb, sizeof(real) * np) == 0,
                      "tower %d arena %d differs after 3 steps", t, which);
        }
    /* every layer of every tower was timed on each step, and each tower's parts fit in the
     * steps (a tower's regions run one after the other on its thread; with the tower
     * threads the two towers' run at the same time) */
    cr_assert_eq(p.steps, 3);
    for (int t = 0; t < towers; t++) {
        double parts = 0;
        for (int l = 0; l < TOWER_LAYERS; l++) {
            cr_assert(p.ms[t][TRAIN_BENCH_FWD + l] > 0, "tower %d layer %d forward not timed",
                      t, l);
            cr_assert(p.ms[t][TRAIN_BENCH_BWD + l] > 0, "tower %d layer %d backward not timed",
                      t, l);
            parts += p.ms[t][TRAIN_BENCH_FWD + l] + p.ms[t][TRAIN_BENCH_BWD + l];
        }
        cr_assert(parts <= p.step_ms * 1.001 + 0.01, "tower %d: parts %.4f ms > steps %.4f ms",
                  t, parts, p.step_ms);
    }
    cr_assert(p.ms[1 % towers][TRAIN_BENCH_SGD] > 0);
    train_bench_prof_free(&p);
    free(x);
    free(pa);
    free(pb);
    model_free(&a);
    model_free(&b);
}

static const model_placement on_cpu = {.cpu = 1};
Test(bench, profiled_step_is_model_train_step_two_towers) { same_as_model_train_step(2, on_cpu); }
Test(bench, profiled_step_is_model_train_step_one_tower) { same_as_model_train_step(1, on_cpu); }

static void need_gpu(void)
{
#if defined(TT_HAVE_CUDA)
    char err[256] = "";
    int n = tower_cuda_device_count(err, sizeof err);
    if (n < 1) cr_skip_test("no CUDA device: %s", n < 0 ? err : "none found");
#else
    cr_skip_test("no CUDA device: this build has no CUDA backend");
#endif
}

/* GPU: the same kernels in the same order on the same streams, so bit for bit as well */
Test(bench, gpu_profiled_step_is_model_train_step, .timeout = 120)
{
    need_gpu();
    model_placement gpu = {.cpu = 0, .ngpus = 1, .gpus = {0, 0}};
    same_as_model_train_step(2, gpu);
}

/* Runs `twotower bench` with the placement flags and --json, then reads the JSON back:
 * the backend and timer named, every profiled timing a number (none left null), the loss
 * finite, the net's shape. Returns the parsed file (json_decref it). */
static json_t *bench_json(const char *const *flags, int nflags, const char *backend,
                          const char *timer)
{
    char path[] = "/tmp/twotower-bench-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char *argv[32] = {"bench"};
    int argc = 1;
    for (int i = 0; i < nflags; i++) argv[argc++] = (char *)flags[i];
    const char *rest[] = {"--size", "67", "--width-div", "8", "--batch", "4", "--classes", "10",
                          "--warmup", "2", "--steps", "3", "--profile-steps", "2", "--json"};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) argv[argc++] = (char *)rest[i];
    argv[argc++] = path;
    cr_assert_eq(train_bench_main(argc, argv), 0);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    unlink(path);
    cr_assert_not_null(j, "%s: %s", path, je.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "backend")), backend);
    json_t *prof = json_object_get(j, "profile");
    cr_assert_str_eq(json_string_value(json_object_get(prof, "timer")), timer);
    cr_assert(json_is_true(json_object_get(j, "loss_finite")));
    cr_assert(json_is_number(json_object_get(j, "images_per_s")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "config"), "batch")), 4);
    json_t *layers = json_object_get(prof, "layers");
    cr_assert_eq(json_array_size(layers), TOWER_LAYERS);
    for (size_t l = 0; l < TOWER_LAYERS; l++) {
        json_t *L = json_array_get(layers, l);
        const char *keys[] = {"fwd_ms", "bwd_ms"};
        for (int k = 0; k < 2; k++) {
            json_t *a = json_object_get(L, keys[k]);
            cr_assert_eq(json_array_size(a), 2, "layer %zu %s", l, keys[k]);
            for (size_t t = 0; t < 2; t++)
                cr_assert(json_number_value(json_array_get(a, t)) > 0,
                          "layer %zu %s of tower %zu came out empty", l, keys[k], t);
        }
    }
    json_t *plan = json_object_get(json_object_get(j, "plan"), "layers");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(plan, 7), "name")), "fc8");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(plan, 7), "out_ch")), 5);
    return j;
}

/* The whole CPU path of `twotower bench`, JSON included. */
Test(bench, cpu_bench_writes_its_json, .timeout = 120)
{
    const char *flags[] = {"--cpu"};
    json_t *j = bench_json(flags, 1, "cpu", "wall clock");
    cr_assert_null(json_object_get(json_object_get(j, "memory"), "gpu_devices"), "no GPU there");
    /* the machine's SGEMM was measured, and the steps' BLAS calls were counted: a share of
     * the threads' time, and a bound at least the run's own rate */
    double sgemm = json_number_value(json_object_get(j, "sgemm_gflops_per_s"));
    double share = json_number_value(json_object_get(j, "blas_share"));
    double gf = json_number_value(json_object_get(j, "gflops_per_s"));
    double bound = json_number_value(json_object_get(j, "blas_bound_gflops_per_s"));
    cr_assert(sgemm > 0, "sgemm_gflops_per_s %g", sgemm);
    /* the ceiling is the faster library's SGEMM; oneDNN's is measured where it is built */
    double ob = json_number_value(json_object_get(j, "sgemm_openblas_gflops_per_s"));
    double dn = json_number_value(json_object_get(j, "sgemm_onednn_gflops_per_s"));
    cr_assert(ob > 0, "sgemm_openblas_gflops_per_s %g", ob);
    cr_assert(tower_conv_dnnl_built() ? dn > 0 : dn == 0, "sgemm_onednn_gflops_per_s %g", dn);
    cr_assert(sgemm == (dn > ob ? dn : ob), "sgemm %g is not the faster of %g and %g", sgemm, ob, dn);
    cr_assert(share > 0 && share <= 1.05, "blas_share %g", share);
    cr_assert(bound >= gf, "blas bound %g below the run's %g GFLOP/s", bound, gf);
    cr_assert(json_number_value(json_object_get(j, "blas_gflops_per_thread")) > 0);
    /* the CPU computes in fp32, the default precision, and says so */
    cr_assert_str_eq(json_string_value(json_object_get(j, "precision")), "fp32");
    cr_assert(json_is_false(json_object_get(j, "tf32")));
    json_decref(j);
}

/* The whole GPU path of `twotower bench`: pinned uint8 batches, upload, data_augment_cuda,
 * timed steps, CUDA-event profile, memory readings, JSON. */
Test(bench, gpu_bench_runs, .timeout = 120)
{
    need_gpu();
    const char *flags[] = {"--gpus", "0"};
    json_t *j = bench_json(flags, 2, "cuda", "cuda events");
    cr_assert(strstr(json_string_value(json_object_get(j, "data_path")), "data_augment_cuda"));
    cr_assert_eq(json_array_size(json_object_get(json_object_get(j, "memory"), "gpu_devices")),
                 1);
    json_decref(j);
}

/* --precision bf16 and --tf32 on the GPU: the JSON records the precision (no CPU twin of
 * either, so only the GPU can run them). */
Test(bench, gpu_bench_records_precision, .timeout = 120)
{
    need_gpu();
    const char *bf16[] = {"--gpus", "0", "--precision", "bf16"};
    json_t *j = bench_json(bf16, 4, "cuda", "cuda events");
    cr_assert_str_eq(json_string_value(json_object_get(j, "precision")), "bf16");
    cr_assert(json_is_false(json_object_get(j, "tf32")));
    json_decref(j);
    const char *tf32[] = {"--gpus", "0", "--tf32"};
    j = bench_json(tf32, 3, "cuda", "cuda events");
    cr_assert_str_eq(json_string_value(json_object_get(j, "precision")), "tf32");
    cr_assert(json_is_true(json_object_get(j, "tf32")));
    json_decref(j);
}

/* Usage errors are exit code 2, before any work. */
Test(bench, bad_flags_exit_2)
{
    char *a1[] = {"bench", "--size", "300", "--cpu", NULL}; /* past the 256 of the images */
    char *a2[] = {"bench", "--steps", "0", "--cpu", NULL};
    char *a3[] = {"bench", "--frobnicate", "1", NULL};
    char *a4[] = {"bench", "--cpu", "--size", "20", NULL}; /* too small for the net */
    char *a5[] = {"bench", "--cpu", "--classes", "11", NULL}; /* not divisible by towers */
    char *a6[] = {"bench", "--cpu", "--json", NULL};
    char *a7[] = {"bench", "--cpu", "--precision", "bf16", NULL}; /* a GPU option */
    cr_assert_eq(train_bench_main(4, a1), 2);
    cr_assert_eq(train_bench_main(4, a2), 2);
    cr_assert_eq(train_bench_main(3, a3), 2);
    cr_assert_eq(train_bench_main(4, a4), 2);
    cr_assert_eq(train_bench_main(4, a5), 2);
    cr_assert_eq(train_bench_main(3, a6), 2);
    cr_assert_eq(train_bench_main(4, a7), 2);
}
