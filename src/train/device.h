/* device: where the towers run, from the command line (--gpus LIST, --cpu, --precision
 * (--tf32), --conv:
 * one flag table shared by train, bench and dump) and what the machine has. Part of
 * src/train; validates everything before any work starts, so the CLI can exit with code
 * 2 and a message naming the flag. */
#ifndef TRAIN_DEVICE_H
#define TRAIN_DEVICE_H

#include <stddef.h>

#include "base/base.h"
#include "train/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gpus_arg: the value of --gpus, or NULL when absent; cpu_flag: --cpu was given.
 *   --gpus 0,1 -> ngpus 2 (one tower per GPU, NCCL);
 *   --gpus 0   -> ngpus 1 (both towers on GPU 0: the single-GPU fallback);
 *   --cpu      -> cpu;
 *   neither    -> GPUs 0,1 if there are two or more, GPU 0 if one, else the CPU with a
 *                 one-line notice on stderr.
 * Returns 0, or -1 with a message naming the flag and its value: a malformed list, a
 * repeated device, more than two devices, --gpus with --cpu, a device that does not
 * exist, or no usable CUDA driver/runtime (also when the build has no CUDA backend). */
int train_parse_placement(const char *gpus_arg, int cpu_flag, model_placement *out, char *err,
                          size_t errlen);

/* "CPU", "GPU 0 (both towers)" or "GPUs 0,1" for logs, then the GPU options that differ
 * from the defaults (", TF32 GEMMs", ", bf16 GEMM operands (fp32 sums)", the convolutions):
 * what run.json records as the backend. */
void train_placement_describe(const model_placement *p, char *buf, size_t n);

/* 1 when this build has cuDNN's convolutions (0 without them or without CUDA; asks no
 * device). */
int train_have_cudnn(void);

/* --conv's default for placement p at precision (TOWER_PRECISION_*), chosen from
 * tools/gpu_cost's prediction (docs/BENCH.md, "Convolution path per layer"):
 * MODEL_CONV_PREFER_CUDNN on a GPU in tf32 and bf16 when the build has cuDNN, else
 * TOWER_CONV_GEMM (fp32, the CPU, a build without cuDNN). */
int train_placement_conv_default(const model_placement *p, int precision);

/* Sets p->precision and p->conv (after train_parse_placement) from the precision
 * (TOWER_PRECISION_*, train_placement_precision) and the path: 0 gemm (TOWER_CONV_GEMM),
 * 1 cudnn, 2 auto (MODEL_CONV_AUTO), 3 MODEL_CONV_PREFER_CUDNN (made gemm on the CPU and in
 * a build without cuDNN). tf32 or bf16, --conv cudnn or --conv auto on a CPU placement,
 * or cudnn in a build without cuDNN, is an error: returns -1 with err naming the flag.
 * auto in a build without cuDNN is not (every layer then stays on GEMM). */
int train_placement_set_gpu_options(model_placement *p, int precision, int conv, char *err,
                                    size_t errlen);

/* Sets p->graph from --graph (MODEL_GRAPH_AUTO 0, the default; _ON 1; _OFF 2). --graph
 * on with a CPU placement is an error (-1 with err naming the flag); off there is not
 * (the CPU never captures). */
int train_placement_set_graph(model_placement *p, int graph, char *err, size_t errlen);

/* The placement flags as given, shared by the tables of train, bench and dump. */
typedef struct {
    int cpu;           /* --cpu */
    const char *gpus;  /* --gpus LIST (its form already checked), or NULL */
    int tf32;          /* --tf32: --precision tf32 */
    int precision;     /* --precision: 0 when absent, else 1 + TOWER_PRECISION_* */
    int conv;          /* --conv: 0 when absent (train_placement_conv_default), else 1 +
                          the path: 1 gemm, 2 cudnn, 3 auto */
    int serial;        /* --serial: one thread runs both towers (model_placement.serial) */
    int cpu_conv;      /* --cpu-conv: 0 onednn (the default), 1 gemm */
    int graph;         /* --graph: 0 auto, 1 on, 2 off (MODEL_GRAPH_*) */
    int bf16_acts;     /* --bf16-acts (model_placement.bf16_acts) */
} train_placement_args;

/* --cpu, --gpus LIST, --tf32, --precision fp32|tf32|bf16, --conv gemm|cudnn|auto,
 * --graph auto|on|off, --bf16-acts, --cpu-conv onednn|gemm, --serial, into a train_placement_args: a group for a command's flag
 * table, {BASE_FLAG_GROUP(train_placement_flags, OPTS, FIELD)}. */
extern const base_flag train_placement_flags[];

/* The precision the flags ask for (TOWER_PRECISION_*): --precision's, else TF32 with --tf32,
 * else FP32. 0, or -1 with err when --tf32 and a --precision other than tf32 are both given. */
int train_placement_precision(const train_placement_args *a, int *precision, char *err,
                              size_t errlen);

/* train_placement_precision, train_parse_placement, then train_placement_set_gpu_options
 * on the flags as given. */
int train_placement_resolve(const train_placement_args *a, model_placement *p, char *err,
                            size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
