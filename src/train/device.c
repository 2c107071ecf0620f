/* device.c: the placement flags' table, and --gpus / --cpu / --precision (--tf32) / --conv
 * to a model_placement, checked against the machine before any work starts (a bad device list
 * is a usage error: exit code 2 in the CLI). */
#include "train/device.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEVICE_ID 4095

/* Number of CUDA devices, or -1 with the reason in err (no driver, no runtime, no CUDA
 * in this build). */
static int device_count(char *err, size_t errlen)
{
#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
    return tower_cuda_device_count(err, errlen);
#else
    snprintf(err, errlen, "this build has no CUDA backend (built without nvcc or with "
                          "-Dcuda=disabled)");
    return -1;
#endif
}

/* "0,1" -> ids: only digits and single commas, no spaces, no sign, no empty items; one or
 * two ids, not the same one twice. Returns the number of ids, or -1 with the reason in
 * err (without the flag: callers put "--gpus VALUE" in front). */
static int parse_list(const char *arg, int ids[2], char *err, size_t errlen)
{
    int n = 0;
    const char *p = arg;
    for (;;) {
        if (*p < '0' || *p > '9') {
            snprintf(err, errlen, "malformed device list (expected ids separated by commas, "
                                  "e.g. --gpus 0,1)");
            return -1;
        }
        int v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > MAX_DEVICE_ID) {
                snprintf(err, errlen, "device id out of range (max %d)", MAX_DEVICE_ID);
                return -1;
            }
        }
        if (n == 2) {
            snprintf(err, errlen, "more than two devices (twotower has two towers: one or two "
                                  "GPUs)");
            return -1;
        }
        ids[n++] = v;
        if (*p == '\0') break;
        if (*p != ',') {
            snprintf(err, errlen, "malformed device list (unexpected '%c'; expected ids "
                                  "separated by commas, e.g. --gpus 0,1)", *p);
            return -1;
        }
        p++;
    }
    if (n == 2 && ids[0] == ids[1]) {
        snprintf(err, errlen, "device %d is repeated (for both towers on one GPU, give it once: "
                              "--gpus %d)", ids[0], ids[0]);
        return -1;
    }
    return n;
}

/* --gpus's check in the flag table: the list's form, before the machine is asked. */
static int gpus_check(const char *arg, char *err, size_t errlen)
{
    int ids[2];
    return parse_list(arg, ids, err, errlen) < 0 ? -1 : 0;
}

/* --precision's values in train_placement_args: 1 + TOWER_PRECISION_*, so that 0 says the
 * flag was not given (and --tf32 may say it instead) */
static const int precision_values[] = {1 + TOWER_PRECISION_FP32, 1 + TOWER_PRECISION_TF32,
                                       1 + TOWER_PRECISION_BF16};

/* --conv's values in train_placement_args: 1 + the path (TOWER_CONV_GEMM, _CUDNN,
 * MODEL_CONV_AUTO), so that 0 says the flag was not given (the default then depends on
 * the precision: train_placement_conv_default) */
static const int conv_values[] = {1 + TOWER_CONV_GEMM, 1 + TOWER_CONV_CUDNN,
                                  1 + MODEL_CONV_AUTO};

const base_flag train_placement_flags[] = {
    {BASE_FLAG_BOOL("cpu", train_placement_args, cpu, "run on the CPU backend (the reference)")},
    {BASE_FLAG_STR("gpus", train_placement_args, gpus, "LIST",
                   "0,1: one tower per GPU; 0: both towers on GPU 0"),
     .check = gpus_check},
    {BASE_FLAG_BOOL("tf32", train_placement_args, tf32, "the same as --precision tf32")},
    {BASE_FLAG_CHOICE("precision", train_placement_args, precision, "fp32|tf32|bf16",
                      "GPU GEMMs: plain fp32, TF32 tensor cores, or bf16 operands with fp32\n"
                      "sums (cuDNN on bf16 tensors; weights, momentum, update fp32)"),
     .values = precision_values, .deflt = "fp32"},
    {BASE_FLAG_CHOICE("conv", train_placement_args, conv, "gemm|cudnn|auto",
                      "GPU convolutions: im2col + cuBLAS, cuDNN, or each layer's faster\n"
                      "(timed at start-up); tf32's and bf16's default puts every layer\n"
                      "cuDNN has an algorithm for on cuDNN (none without it in the build)"),
     .values = conv_values, .deflt = "gemm in fp32, cudnn in tf32 and bf16"},
    {BASE_FLAG_CHOICE("graph", train_placement_args, graph, "auto|on|off",
                      "GPU: the whole step as one CUDA graph, captured once and replayed;\n"
                      "auto keeps it only if its first replay gives the uncaptured step's\n"
                      "bits, on skips that check, off never captures")},
    {BASE_FLAG_BOOL("bf16-acts", train_placement_args, bf16_acts,
                    "with --precision bf16 and conv1/conv2 on cuDNN: keep their ReLU output\n"
                    "in bf16 only, which their LRN and max-pool read (default: fp32)")},
    {BASE_FLAG_CHOICE("cpu-conv", train_placement_args, cpu_conv, "onednn|gemm",
                      "CPU convolutions: oneDNN where it is faster (with AVX-512 every\n"
                      "pass and every float GEMM; with AVX2 conv2's forward and the\n"
                      "stride-1 input gradients), im2col + OpenBLAS for the rest;\n"
                      "gemm: im2col + OpenBLAS for all")},
    {BASE_FLAG_BOOL("serial", train_placement_args, serial,
                    "one thread runs both towers in turn (default: a thread per tower)")},
    {0}};

int train_parse_placement(const char *gpus_arg, int cpu_flag, model_placement *out, char *err,
                          size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (gpus_arg && cpu_flag) {
        snprintf(err, errlen, "--gpus %s and --cpu exclude each other: give one of them",
                 gpus_arg);
        return -1;
    }
    if (cpu_flag) {
        out->cpu = 1;
        return 0;
    }
    char why[256] = "";
    if (!gpus_arg) { /* no flag: the GPUs if there are any, else the CPU */
        int count = device_count(why, sizeof why);
        if (count <= 0) {
            fprintf(stderr, "twotower: no usable CUDA device (%s); running on the CPU\n",
                    count == 0 ? "the driver reports none" : why);
            out->cpu = 1;
            return 0;
        }
        out->ngpus = count >= 2 ? 2 : 1;
        out->gpus[0] = 0;
        out->gpus[1] = count >= 2 ? 1 : 0;
        return 0;
    }

    int ids[2];
    int n = parse_list(gpus_arg, ids, why, sizeof why);
    if (n < 0) {
        snprintf(err, errlen, "--gpus '%s': %s", gpus_arg, why);
        return -1;
    }
    int count = device_count(why, sizeof why);
    if (count < 0) {
        snprintf(err, errlen, "--gpus %s: no usable CUDA driver or device: %s", gpus_arg, why);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= count) {
            if (count == 0)
                snprintf(err, errlen, "--gpus %s: this machine has no CUDA device", gpus_arg);
            else
                snprintf(err, errlen,
                         "--gpus %s: there is no CUDA device %d (this machine has %d: 0 to %d)",
                         gpus_arg, ids[i], count, count - 1);
            return -1;
        }
    out->ngpus = n;
    out->gpus[0] = ids[0];
    out->gpus[1] = n == 2 ? ids[1] : ids[0]; /* one GPU: both towers on it */
    return 0;
}

void train_placement_describe(const model_placement *p, char *buf, size_t n)
{
    if (p->cpu || p->ngpus < 1)
        snprintf(buf, n, "CPU");
    else if (p->ngpus == 1)
        snprintf(buf, n, "GPU %d (both towers)", p->gpus[0]);
    else
        snprintf(buf, n, "GPUs %d,%d", p->gpus[0], p->gpus[1]);
    size_t used = strlen(buf);
    if (!p->cpu && p->ngpus >= 1 && used < n)
        snprintf(buf + used, n - used, "%s%s",
                 p->precision == TOWER_PRECISION_TF32   ? ", TF32 GEMMs"
                 : p->precision == TOWER_PRECISION_BF16 ? ", bf16 GEMM operands (fp32 sums)"
                                                        : "",
                 p->conv == MODEL_CONV_AUTO   ? ", convolutions timed per layer"
                 : p->conv == TOWER_CONV_CUDNN ? ", cuDNN convolutions"
                 : p->conv == TOWER_CONV_GEMM && train_placement_conv_default(p, p->precision)
                     ? ", GEMM convolutions"
                     : "");
    used = strlen(buf);
    if (!p->cpu && p->ngpus >= 1 && p->graph != MODEL_GRAPH_AUTO && used < n)
        snprintf(buf + used, n - used, "%s",
                 p->graph == MODEL_GRAPH_ON ? ", CUDA graph on" : ", CUDA graph off");
    used = strlen(buf);
    if (!p->cpu && p->bf16_acts && used < n)
        snprintf(buf + used, n - used, ", bf16 activations kept (--bf16-acts)");
    used = strlen(buf);
    if (p->cpu && p->cpu_conv && used < n)
        snprintf(buf + used, n - used, ", convolutions all im2col + OpenBLAS");
    used = strlen(buf);
    if (p->serial && used < n) snprintf(buf + used, n - used, ", serial");
}

int train_have_cudnn(void)
{
#ifdef TT_HAVE_CUDA
    return tower_cuda_have_cudnn();
#else
    return 0;
#endif
}

int train_placement_conv_default(const model_placement *p, int precision)
{
    return !p->cpu && precision != TOWER_PRECISION_FP32 && train_have_cudnn()
               ? MODEL_CONV_PREFER_CUDNN
               : TOWER_CONV_GEMM;
}

int train_placement_set_gpu_options(model_placement *p, int precision, int conv, char *err,
                                    size_t errlen)
{
    if (conv < TOWER_CONV_GEMM || conv > MODEL_CONV_PREFER_CUDNN) {
        snprintf(err, errlen, "--conv: %d is not gemm (0), cudnn (1), auto (2) or the tf32 "
                              "and bf16 default (3)", conv);
        return -1;
    }
    if (precision < TOWER_PRECISION_FP32 || precision > TOWER_PRECISION_BF16) {
        snprintf(err, errlen, "--precision: %d is not fp32 (0), tf32 (1) or bf16 (2)", precision);
        return -1;
    }
    if (conv == MODEL_CONV_PREFER_CUDNN) /* GEMM where that is the default: nothing refused */
        conv = train_placement_conv_default(p, precision);
    if ((precision || conv) && p->cpu) {
        snprintf(err, errlen, "%s is a GPU option and this run is on the CPU (which computes in "
                              "plain fp32 with its own convolution): drop it or run on a GPU",
                 precision == TOWER_PRECISION_TF32   ? "--tf32 (--precision tf32)"
                 : precision == TOWER_PRECISION_BF16 ? "--precision bf16"
                 : conv == MODEL_CONV_AUTO           ? "--conv auto"
                                                     : "--conv cudnn");
        return -1;
    }
    if (conv == TOWER_CONV_CUDNN && !train_have_cudnn()) {
        snprintf(err, errlen, "--conv cudnn: this build has no cuDNN (meson found no cudnn.h "
                              "and libcudnn): use --conv gemm");
        return -1;
    }
    p->precision = precision;
    p->conv = conv; /* auto without cuDNN in the build: every layer on GEMM, said so */
    return 0;
}

int train_placement_set_graph(model_placement *p, int graph, char *err, size_t errlen)
{
    if (graph < MODEL_GRAPH_AUTO || graph > MODEL_GRAPH_OFF) {
        snprintf(err, errlen, "--graph: %d is not auto (0), on (1) or off (2)", graph);
        return -1;
    }
    if (graph == MODEL_GRAPH_ON && p->cpu) {
        snprintf(err, errlen, "--graph on is a GPU option and this run is on the CPU (which has "
                              "no CUDA graphs): drop it or run on a GPU");
        return -1;
    }
    p->graph = graph;
    return 0;
}

int train_placement_precision(const train_placement_args *a, int *precision, char *err,
                              size_t errlen)
{
    int given = a->precision - 1; /* -1: --precision absent */
    if (a->tf32 && given >= 0 && given != TOWER_PRECISION_TF32) {
        snprintf(err, errlen, "--tf32 and --precision %s contradict each other: give one of "
                              "them (--tf32 is --precision tf32)",
                 tower_precision_name(given));
        return -1;
    }
    *precision = given >= 0 ? given : a->tf32 ? TOWER_PRECISION_TF32 : TOWER_PRECISION_FP32;
    return 0;
}

int train_placement_resolve(const train_placement_args *a, model_placement *p, char *err,
                            size_t errlen)
{
    int precision;
    if (train_placement_precision(a, &precision, err, errlen)) return -1;
    /* --cpu-conv gemm on a GPU: refused before --gpus asks for the devices, and after the
     * placement when no flag chose and the GPUs were found */
    int gpu = a->gpus != NULL;
    if (!(a->cpu_conv && gpu) && train_parse_placement(a->gpus, a->cpu, p, err, errlen))
        return -1;
    if (a->cpu_conv && (gpu || !p->cpu)) {
        snprintf(err, errlen, "--cpu-conv gemm is a CPU option and this run is on a GPU (whose "
                              "convolutions --conv chooses): drop it or use --cpu");
        return -1;
    }
    p->serial = a->serial;
    p->cpu_conv = a->cpu_conv;
    if (train_placement_set_graph(p, a->graph, err, errlen)) return -1;
    int conv = a->conv ? a->conv - 1 : train_placement_conv_default(p, precision);
    if (a->bf16_acts && (p->cpu || precision != TOWER_PRECISION_BF16 || !conv)) {
        snprintf(err, errlen, "--bf16-acts keeps the activations of conv layers that run on "
                              "cuDNN in bf16, so it needs a GPU, --precision bf16 and cuDNN's "
                              "convolutions (bf16's default in a build with cuDNN, or --conv "
                              "cudnn or auto), and this run is %s%s: drop --bf16-acts",
                 p->cpu ? "on the CPU" : "in ",
                 p->cpu                                ? ""
                 : precision != TOWER_PRECISION_BF16   ? tower_precision_name(precision)
                 : a->conv                             ? "bf16 with --conv gemm"
                                                       : "bf16 in a build without cuDNN");
        return -1;
    }
    p->bf16_acts = a->bf16_acts;
    return train_placement_set_gpu_options(p, precision, conv, err, errlen);
}
