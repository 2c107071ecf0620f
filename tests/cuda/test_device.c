/* test_device.c: --gpus / --cpu parsing (train_parse_placement), --precision and --tf32
 * (train_placement_precision, train_placement_set_gpu_options), and the debug delay's
 * environment variables (model_init). Runs on every machine:
 * the "no device" cases hide the GPUs with CUDA_VISIBLE_DEVICES="" before the CUDA
 * runtime starts, so they behave the same with or without a GPU. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tower/tower_cuda.h"
#include "train/device.h"
#include "train/model.h"

static void hide_gpus(void) { setenv("CUDA_VISIBLE_DEVICES", "", 1); }


static void expect_error(const char *gpus, int cpu, const char *must_contain)
{
    model_placement p;
    char err[512] = "";
    int rc = train_parse_placement(gpus, cpu, &p, err, sizeof err);
    cr_assert_eq(rc, -1, "--gpus '%s' --cpu=%d was accepted", gpus ? gpus : "(none)", cpu);
    cr_assert(strstr(err, "--gpus") != NULL, "message does not name the flag: %s", err);
    cr_assert(strstr(err, must_contain) != NULL, "message '%s' lacks '%s'", err, must_contain);
}

Test(device, cpu_flag)
{
    model_placement p;
    char err[256] = "";
    cr_assert_eq(train_parse_placement(NULL, 1, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.cpu, 1);
    cr_assert_eq(p.ngpus, 0);
}

Test(device, gpus_with_cpu_is_an_error) { expect_error("0", 1, "--cpu"); }

Test(device, malformed_lists)
{
    const char *bad[] = {"", ",", "0,", ",0", "a", "0;1", "0 1", " 0", "-1", "+1", "1.5",
                         "0,,1", "0x1", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        model_placement p;
        char err[512] = "";
        cr_assert_eq(train_parse_placement(bad[i], 0, &p, err, sizeof err), -1,
                     "'%s' was accepted", bad[i]);
        cr_assert(strstr(err, "--gpus") != NULL, "'%s': %s", bad[i], err);
    }
}

Test(device, repeated_device) { expect_error("0,0", 0, "repeated"); }
Test(device, repeated_device_other) { expect_error("1,1", 0, "repeated"); }
Test(device, more_than_two) { expect_error("0,1,2", 0, "more than two"); }
Test(device, many_more_than_two) { expect_error("0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", 0,
                                                "more than two"); }

/* No usable device (or no CUDA in this build): --gpus must fail with a clear message. */
Test(device, gpus_without_device, .init = hide_gpus)
{
    model_placement p;
    char err[512] = "";
    cr_assert_eq(train_parse_placement("0", 0, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "--gpus 0") != NULL, "%s", err);
    cr_assert(strstr(err, "CUDA") != NULL, "message does not say what is missing: %s", err);
}

Test(device, two_gpus_without_device, .init = hide_gpus)
{
    model_placement p;
    char err[512] = "";
    cr_assert_eq(train_parse_placement("0,1", 0, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "--gpus 0,1") != NULL, "%s", err);
}

/* Neither flag and no device: the CPU, with exactly one line on stderr. */
static void hide_gpus_and_capture(void)
{
    hide_gpus();
    cr_redirect_stderr();
}

Test(device, auto_falls_back_to_cpu, .init = hide_gpus_and_capture)
{
    model_placement p;
    char err[256] = "";
    cr_assert_eq(train_parse_placement(NULL, 0, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.cpu, 1);
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char buf[1024] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    cr_assert(strstr(buf, "CPU") != NULL, "no notice on stderr: '%s'", buf);
    char *nl = strchr(buf, '\n');
    cr_assert(nl != NULL && nl[1] == '\0', "the notice is not exactly one line: '%s'", buf);
}

Test(device, describe)
{
    char buf[64];
    model_placement p = {.cpu = 1};
    train_placement_describe(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "CPU");
    p = (model_placement){.ngpus = 1, .gpus = {0, 0}};
    train_placement_describe(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers)");
    p = (model_placement){.ngpus = 2, .gpus = {0, 1}};
    train_placement_describe(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPUs 0,1");
}

/* --graph: auto (0) is what a zeroed placement and no flag give; on is refused on the CPU
 * naming the flag, off is not; an out-of-range value is refused; a GPU placement says on
 * and off in its description (auto says nothing). */
Test(device, graph_flag)
{
    cr_assert_eq(MODEL_GRAPH_AUTO, 0, "the default must be what a zeroed placement holds");
    char err[512] = "", buf[128];
    model_placement p = {.cpu = 1};
    cr_assert_eq(train_placement_set_graph(&p, MODEL_GRAPH_ON, err, sizeof err), -1);
    cr_assert(strstr(err, "--graph on") != NULL, "%s", err);
    cr_assert_eq(train_placement_set_graph(&p, MODEL_GRAPH_OFF, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.graph, MODEL_GRAPH_OFF);
    cr_assert_eq(train_placement_set_graph(&p, 3, err, sizeof err), -1);
    cr_assert(strstr(err, "--graph") != NULL, "%s", err);
    p = (model_placement){.ngpus = 1, .gpus = {0, 0}};
    cr_assert_eq(train_placement_set_graph(&p, MODEL_GRAPH_ON, err, sizeof err), 0, "%s", err);
    train_placement_describe(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers), CUDA graph on");
    p.graph = MODEL_GRAPH_OFF;
    train_placement_describe(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers), CUDA graph off");
    p.graph = MODEL_GRAPH_AUTO;
    train_placement_describe(&p, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers)");
    /* train_placement_resolve passes the flag's value through (the table's choices are in
     * MODEL_GRAPH_*'s order: cli_gpus.sh runs them) */
    train_placement_args a = {.cpu = 1};
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.graph, MODEL_GRAPH_AUTO);
    a.graph = MODEL_GRAPH_ON;
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), -1);
}

/* A CPU model reports that it never captures; its deferred steps return the step
 * before's loss, and model_step_loss the newest, the same numbers model_train_step
 * gives. */
Test(device, cpu_model_graph_and_deferred_loss)
{
    tower_config cfg = {.towers = 2, .classes = 10, .batch = 2, .in_size = 67, .in_ch = 3,
                        .width_div = 16};
    model_placement place = {.cpu = 1};
    model a, b;
    char err[512] = "", buf[256];
    cr_assert_eq(model_init(&a, &cfg, &place, 4, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&b, &cfg, &place, 4, err, sizeof err), 0, "%s", err);
    model_graph_describe(&a, buf, sizeof buf);
    cr_assert_str_eq(buf, "uncaptured (CPU)");
    size_t nx = (size_t)cfg.batch * 3 * 67 * 67;
    float *x = calloc(nx, sizeof(float));
    cr_assert_not_null(x);
    for (size_t i = 0; i < nx; i++) x[i] = (float)((i * 7919) % 255) / 255.0f - 0.5f;
    int32_t labels[2] = {3, 7};
    model_set_batch(&a, x, labels);
    model_set_batch(&b, x, labels);
    double la[3], lb[3];
    for (int s = 0; s < 3; s++) la[s] = model_train_step(&a, 0.01f);
    cr_assert(isnan(model_train_step_deferred(&b, 0.01f)), "no step before the first");
    lb[0] = model_train_step_deferred(&b, 0.01f);
    lb[1] = model_train_step_deferred(&b, 0.01f);
    lb[2] = model_step_loss(&b);
    for (int s = 0; s < 3; s++)
        cr_assert(la[s] == lb[s], "step %d: %.17g vs %.17g", s, la[s], lb[s]);
    free(x);
    model_free(&a);
    model_free(&b);
}

/* --precision fp32|tf32|bf16 and --tf32: --tf32 is --precision tf32 (the same placement),
 * a contradiction between the two is refused naming both, fp32 is the default; tf32 and
 * bf16 on the CPU are refused naming the flag; bf16 runs with every --conv. A GPU
 * placement is made by hand: no device is asked. */
static int precision_of(int tf32, int precision_flag, char *err, size_t errlen)
{
    train_placement_args a = {.tf32 = tf32, .precision = precision_flag};
    int prec = -1;
    return train_placement_precision(&a, &prec, err, errlen) ? -1 : prec;
}

Test(device, precision_flags)
{
    char err[512] = "";
    cr_assert_eq(precision_of(0, 0, err, sizeof err), TOWER_PRECISION_FP32, "%s", err);
    cr_assert_eq(precision_of(1, 0, err, sizeof err), TOWER_PRECISION_TF32, "%s", err);
    /* --precision's stored value is 1 + TOWER_PRECISION_* */
    cr_assert_eq(precision_of(0, 1 + TOWER_PRECISION_TF32, err, sizeof err),
                 precision_of(1, 0, err, sizeof err), "--precision tf32 is not --tf32");
    cr_assert_eq(precision_of(1, 1 + TOWER_PRECISION_TF32, err, sizeof err),
                 TOWER_PRECISION_TF32);
    cr_assert_eq(precision_of(0, 1 + TOWER_PRECISION_BF16, err, sizeof err),
                 TOWER_PRECISION_BF16);
    cr_assert_eq(precision_of(0, 1 + TOWER_PRECISION_FP32, err, sizeof err),
                 TOWER_PRECISION_FP32);
    cr_assert_eq(precision_of(1, 1 + TOWER_PRECISION_BF16, err, sizeof err), -1);
    cr_assert(strstr(err, "--tf32") && strstr(err, "--precision bf16"), "%s", err);
    cr_assert_eq(precision_of(1, 1 + TOWER_PRECISION_FP32, err, sizeof err), -1);
    cr_assert(strstr(err, "--precision fp32"), "%s", err);
    cr_assert_str_eq(tower_precision_name(TOWER_PRECISION_FP32), "fp32");
    cr_assert_str_eq(tower_precision_name(TOWER_PRECISION_TF32), "tf32");
    cr_assert_str_eq(tower_precision_name(TOWER_PRECISION_BF16), "bf16");
}

Test(device, precision_placement)
{
    char err[512] = "";
    model_placement cpu = {.cpu = 1}, gpu = {.ngpus = 1, .gpus = {0, 0}};
    cr_assert_eq(train_placement_set_gpu_options(&cpu, TOWER_PRECISION_FP32, 0, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(train_placement_set_gpu_options(&cpu, TOWER_PRECISION_BF16, 0, err, sizeof err),
                 -1, "--precision bf16 --cpu was accepted");
    cr_assert(strstr(err, "--precision bf16") && strstr(err, "CPU"), "%s", err);
    cr_assert_eq(train_placement_set_gpu_options(&cpu, TOWER_PRECISION_TF32, 0, err, sizeof err),
                 -1);
    cr_assert(strstr(err, "--tf32"), "%s", err);
    model_placement g = gpu;
    cr_assert_eq(train_placement_set_gpu_options(&g, TOWER_PRECISION_BF16, TOWER_CONV_GEMM, err,
                                                 sizeof err),
                 0, "%s", err);
    cr_assert_eq(g.precision, TOWER_PRECISION_BF16);
    /* bf16 runs on cuDNN too (bf16 tensors there) and under --conv auto; cudnn needs a
     * build with cuDNN, whatever the precision */
    g = gpu;
    cr_assert_eq(train_placement_set_gpu_options(&g, TOWER_PRECISION_BF16, MODEL_CONV_AUTO, err,
                                                 sizeof err),
                 0, "%s", err);
    cr_assert_eq(g.conv, MODEL_CONV_AUTO);
    g = gpu;
    int r = train_placement_set_gpu_options(&g, TOWER_PRECISION_BF16, TOWER_CONV_CUDNN, err,
                                            sizeof err);
    int have_cudnn = train_have_cudnn();
    if (have_cudnn) {
        cr_assert_eq(r, 0, "%s", err);
        cr_assert_eq(g.conv, TOWER_CONV_CUDNN);
        cr_assert_eq(g.precision, TOWER_PRECISION_BF16);
    } else {
        cr_assert_eq(r, -1, "--conv cudnn was accepted in a build without cuDNN");
        cr_assert(strstr(err, "--conv cudnn") && strstr(err, "no cuDNN"), "%s", err);
    }
    g = gpu;
    cr_assert_eq(train_placement_set_gpu_options(&g, 3, 0, err, sizeof err), -1);
    /* what run.json records as the backend */
    char buf[128];
    g = gpu;
    g.precision = TOWER_PRECISION_BF16;
    train_placement_describe(&g, buf, sizeof buf);
    cr_assert_str_eq(buf, have_cudnn ? "GPU 0 (both towers), bf16 GEMM operands (fp32 sums), "
                                       "GEMM convolutions"
                                     : "GPU 0 (both towers), bf16 GEMM operands (fp32 sums)");
    g.precision = TOWER_PRECISION_TF32;
    train_placement_describe(&g, buf, sizeof buf);
    /* GEMM in tf32 is said where the default would have been cuDNN; the default never */
    cr_assert_str_eq(buf, have_cudnn ? "GPU 0 (both towers), TF32 GEMMs, GEMM convolutions"
                                     : "GPU 0 (both towers), TF32 GEMMs");
    g.conv = MODEL_CONV_PREFER_CUDNN;
    train_placement_describe(&g, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers), TF32 GEMMs");
    g.conv = TOWER_CONV_CUDNN;
    train_placement_describe(&g, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers), TF32 GEMMs, cuDNN convolutions");
    g.precision = TOWER_PRECISION_FP32;
    g.conv = TOWER_CONV_GEMM;
    train_placement_describe(&g, buf, sizeof buf);
    cr_assert_str_eq(buf, "GPU 0 (both towers)");
}

/* --conv's default: gemm in fp32, on the CPU and without cuDNN in the build; in tf32 and
 * bf16 cuDNN wherever it takes a layer (MODEL_CONV_PREFER_CUDNN), which the placement
 * makes gemm where cuDNN cannot run; --bf16-acts refused where the default is gemm */
Test(device, conv_default)
{
    int have_cudnn = train_have_cudnn();
    const model_placement cpu = {.cpu = 1}, gpu = {.ngpus = 1, .gpus = {0, 0}};
    int precisions[] = {TOWER_PRECISION_FP32, TOWER_PRECISION_TF32, TOWER_PRECISION_BF16};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(train_placement_conv_default(&cpu, precisions[i]), TOWER_CONV_GEMM);
        cr_assert_eq(train_placement_conv_default(&gpu, precisions[i]),
                     precisions[i] != TOWER_PRECISION_FP32 && have_cudnn
                         ? MODEL_CONV_PREFER_CUDNN
                         : TOWER_CONV_GEMM,
                     "%s", tower_precision_name(precisions[i]));
    }
    char err[512] = "";
    model_placement g = gpu;
    cr_assert_eq(train_placement_set_gpu_options(&g, TOWER_PRECISION_BF16,
                                                 MODEL_CONV_PREFER_CUDNN, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(g.conv, have_cudnn ? MODEL_CONV_PREFER_CUDNN : TOWER_CONV_GEMM);
    g = gpu; /* asked for in fp32 (an API caller; the flags never do): GEMM, fp32's default */
    cr_assert_eq(train_placement_set_gpu_options(&g, TOWER_PRECISION_FP32,
                                                 MODEL_CONV_PREFER_CUDNN, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(g.conv, TOWER_CONV_GEMM);
    model_placement c = cpu;
    cr_assert_eq(train_placement_set_gpu_options(&c, TOWER_PRECISION_FP32,
                                                 MODEL_CONV_PREFER_CUDNN, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(c.conv, TOWER_CONV_GEMM);
    cr_assert_eq(train_placement_set_gpu_options(&c, TOWER_PRECISION_FP32, 4, err, sizeof err),
                 -1);
    cr_assert(strstr(err, "--conv: 4"), "%s", err);
    /* the flags as given, on the CPU: no --conv is gemm, --bf16-acts is refused */
    train_placement_args a = {.cpu = 1};
    model_placement p;
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.conv, TOWER_CONV_GEMM);
    a.bf16_acts = 1;
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "this run is on the CPU: drop --bf16-acts"), "%s", err);
}

/* The delay test's hook (model_placement.debug_delay_us) from the environment: read by
 * model_init on every backend (CPU towers ignore the delay), a bad value refused naming the
 * variable, the placement's own value kept over the environment's. */
static int init_with_env(const char *us, const char *which, model_placement place, model *m,
                         char *err, size_t errlen)
{
    if (us) setenv("TWOTOWER_DEBUG_DELAY_US", us, 1);
    if (which) setenv("TWOTOWER_DEBUG_DELAY_TOWER", which, 1);
    tower_config cfg = {.towers = 2, .classes = 10, .batch = 2, .in_size = 67, .in_ch = 3,
                        .width_div = 8};
    return model_init(m, &cfg, &place, 1, err, errlen);
}

Test(device, debug_delay_from_the_environment)
{
    const model_placement cpu = {.cpu = 1, .serial = 1};
    model m;
    char err[512] = "";
    cr_assert_eq(init_with_env("250", "1", cpu, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.place.debug_delay_us, 250);
    cr_assert_eq(m.place.debug_delay_tower, 1);
    model_free(&m);
    model_placement own = cpu;
    own.debug_delay_us = 40; /* the placement's own value wins; the tower is its own too */
    cr_assert_eq(init_with_env("250", "1", own, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.place.debug_delay_us, 40);
    cr_assert_eq(m.place.debug_delay_tower, 0);
    model_free(&m);
}

Test(device, debug_delay_bad_values_refused)
{
    const model_placement cpu = {.cpu = 1, .serial = 1};
    const char *bad_us[] = {"x", "-1", "1000001", "12us", " "};
    for (size_t i = 0; i < sizeof bad_us / sizeof bad_us[0]; i++) {
        model m;
        char err[512] = "";
        cr_assert_eq(init_with_env(bad_us[i], "0", cpu, &m, err, sizeof err), -1,
                     "TWOTOWER_DEBUG_DELAY_US='%s' was accepted", bad_us[i]);
        cr_assert(strstr(err, "TWOTOWER_DEBUG_DELAY_US"), "%s", err);
    }
    model m;
    char err[512] = "";
    cr_assert_eq(init_with_env("10", "2", cpu, &m, err, sizeof err), -1);
    cr_assert(strstr(err, "TWOTOWER_DEBUG_DELAY_TOWER"), "%s", err);
    model_placement no_such_tower = cpu;
    no_such_tower.debug_delay_us = 10;
    no_such_tower.debug_delay_tower = 2;
    cr_assert_eq(init_with_env(NULL, NULL, no_such_tower, &m, err, sizeof err), -1);
    cr_assert(strstr(err, "tower 2"), "%s", err);
}

#if defined(TT_HAVE_CUDA)
/* With real devices: an id past the last one names the count; valid lists are taken. */
Test(device, real_devices)
{
    char err[512] = "";
    int count = tower_cuda_device_count(err, sizeof err);
    if (count <= 0) cr_skip_test("no CUDA device: %s", count < 0 ? err : "none");
    model_placement p;
    char arg[32];
    snprintf(arg, sizeof arg, "%d", count);
    cr_assert_eq(train_parse_placement(arg, 0, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "there is no CUDA device") != NULL, "%s", err);
    cr_assert_eq(train_parse_placement("0", 0, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.ngpus, 1);
    cr_assert_eq(p.gpus[0], 0);
    cr_assert_eq(p.gpus[1], 0);
    cr_assert_eq(train_parse_placement(NULL, 0, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.ngpus, count >= 2 ? 2 : 1);
    if (count >= 2) {
        cr_assert_eq(train_parse_placement("1,0", 0, &p, err, sizeof err), 0, "%s", err);
        cr_assert_eq(p.ngpus, 2);
        cr_assert_eq(p.gpus[0], 1);
        cr_assert_eq(p.gpus[1], 0);
    }
}

/* --conv's default from the flags as given on a GPU: gemm in fp32, bf16's on cuDNN where
 * the build has it; --bf16-acts taken with that default, refused with --conv gemm, in fp32
 * and where bf16's default is gemm (no cuDNN in the build) */
Test(device, conv_default_on_a_gpu)
{
    char err[512] = "";
    int count = tower_cuda_device_count(err, sizeof err);
    if (count <= 0) cr_skip_test("no CUDA device: %s", count < 0 ? err : "none");
    int have_cudnn = tower_cuda_have_cudnn();
    model_placement p;
    train_placement_args a = {.gpus = "0"};
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.conv, TOWER_CONV_GEMM);
    a.precision = 1 + TOWER_PRECISION_BF16;
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.conv, have_cudnn ? MODEL_CONV_PREFER_CUDNN : TOWER_CONV_GEMM);
    /* tf32, as --precision tf32 and as --tf32 */
    train_placement_args t32 = {.gpus = "0", .precision = 1 + TOWER_PRECISION_TF32};
    cr_assert_eq(train_placement_resolve(&t32, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.conv, have_cudnn ? MODEL_CONV_PREFER_CUDNN : TOWER_CONV_GEMM);
    t32 = (train_placement_args){.gpus = "0", .tf32 = 1};
    cr_assert_eq(train_placement_resolve(&t32, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.precision, TOWER_PRECISION_TF32);
    cr_assert_eq(p.conv, have_cudnn ? MODEL_CONV_PREFER_CUDNN : TOWER_CONV_GEMM);
    t32.conv = 1 + TOWER_CONV_GEMM; /* given, it wins */
    cr_assert_eq(train_placement_resolve(&t32, &p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.conv, TOWER_CONV_GEMM);
    a.bf16_acts = 1;
    int rc = train_placement_resolve(&a, &p, err, sizeof err);
    if (have_cudnn) {
        cr_assert_eq(rc, 0, "%s", err);
        cr_assert_eq(p.bf16_acts, 1);
    } else {
        cr_assert_eq(rc, -1);
        cr_assert(strstr(err, "bf16 in a build without cuDNN"), "%s", err);
    }
    a.conv = 1 + TOWER_CONV_GEMM;
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "this run is in bf16 with --conv gemm: drop --bf16-acts"), "%s", err);
    a.conv = 0;
    a.precision = 1 + TOWER_PRECISION_FP32;
    cr_assert_eq(train_placement_resolve(&a, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "this run is in fp32: drop --bf16-acts"), "%s", err);
}
#endif
