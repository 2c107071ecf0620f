/* model: the whole net = one or two towers plus the exchange between them. Drives the
 * towers layer by layer and calls comm at the exchange points the description gives
 * (the inputs of the rows that read all towers: conv3, fc6, fc7 and fc8 in the paper's
 * net) and at the logits. A two-tower model runs each tower on a worker thread of its
 * own; the caller's thread is the coordinator that hands them each phase of a step.
 * Part of src/train (included by train.h). */
#ifndef TRAIN_MODEL_H
#define TRAIN_MODEL_H

#include "comm/comm.h"
#include "tower/tower.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the towers run. */
typedef struct {
    int cpu;        /* 1: CPU backend (the reference) */
    int ngpus;      /* 1: both towers on gpus[0] (the single-GPU fallback); 2: one each */
    int gpus[2];
    int precision;  /* GPU only: the GEMMs' precision, TOWER_PRECISION_* (tower.h):
                       FP32 (0), the default: plain fp32 (CUBLAS_DEFAULT_MATH); TF32 (1,
                       --tf32): TF32 tensor-core math (CUBLAS_TF32_TENSOR_OP_MATH: inputs
                       rounded to 10 mantissa bits, fp32 sums); BF16 (2): bf16 operands
                       (7 mantissa bits) with fp32 sums, everything else fp32, GEMM
                       convolutions only (--precision) */
    int conv;       /* GPU only: 0 (TOWER_CONV_GEMM) chunked im2col + GEMM, what a
                       zeroed placement runs (the CLI's default in fp32);
                       1 (TOWER_CONV_CUDNN) cuDNN's convolutions (builds with cuDNN);
                       2 (MODEL_CONV_AUTO) per conv layer the faster of the two, timed at
                       model_init on tower 0's device (model.conv_path); 3
                       (MODEL_CONV_PREFER_CUDNN) cuDNN on every conv layer it has an
                       algorithm for, GEMM on the rest: the CLI's default in tf32 and bf16
                       (train_placement_resolve; docs/BENCH.md, "Convolution path per
                       layer") */
    int graph;      /* GPU only: MODEL_GRAPH_AUTO (0, the default), _ON or _OFF: whether
                       model_train_step captures the whole step as one CUDA graph and
                       replays it (docs/GPU.md, "One step as one CUDA graph"); --graph */
    int cpu_conv;   /* CPU only: 0, the default: oneDNN runs the convolution passes it is
                       faster at (conv2's forward, the stride-1 layers' input gradients;
                       conv_dnnl.c), when the build has it; 1: im2col + OpenBLAS for every
                       pass (--cpu-conv gemm). Process-wide (tower_conv_dnnl). */
    int serial;     /* 0, the default: a two-tower model runs each tower on a worker thread
                       of its own (on the CPU with half of OpenBLAS's threads each); 1: the
                       caller's thread runs every tower in turn (the order before the
                       workers, which they are tested against; --serial) */
    /* Test hook: test_fail_step >= 1 makes training step number test_fail_step (counted
     * from 1 as the metrics lines count; m->step is test_fail_step - 1 as it starts) fail
     * in tower test_fail_tower, in phase test_fail_phase (MODEL_TEST_FAIL_*) at layer
     * test_fail_layer, as a failed exchange would (the model is failed, the other tower
     * stopped): before that layer's forward (and before the exchange of its input; the
     * default phase) or its backward, inside the exchange of its input (GATHER, a row
     * that reads all towers, or n_layers for the logits) or of its input gradient
     * (REDUCE), or before the tower's update (UPDATE: any layer). 0: off.
     * test_fail_device TOWER_FAULT_ERROR or TOWER_FAULT_STICKY (tower.h; forward, backward
     * and update) fails the op through the backend's fault path instead: the fault
     * injection is armed on the tower's thread right before its op, so that the op's
     * test_fail_call-th checked device call (0: the first) fails as a CUDA error of that
     * kind would. GPU towers make checked calls; CPU ops make none (a test wraps them). */
    int64_t test_fail_step;
    int test_fail_tower, test_fail_layer;
    int test_fail_phase, test_fail_device, test_fail_call;
    /* Debug hook of the delay test (docs/GPU.md, "The delay test"): debug_delay_us > 0
     * enqueues a kernel that busy-waits that many microseconds on the stream of tower
     * debug_delay_tower at the start of every stretch of its work that the other tower
     * hands data to or takes data from: the start of the forward and of the backward,
     * after each of its exchanges, before the update, and before its upload of a uint8
     * batch (on its stream and on the input's copy stream). The results must not change; where an event were missing, the other tower
     * would read stale data. GPU towers only (CPU towers ignore it); 0: off, the default,
     * at the cost of one comparison per point. When 0 here, model_init takes it from the
     * environment, read once: TWOTOWER_DEBUG_DELAY_US (0..1000000) and
     * TWOTOWER_DEBUG_DELAY_TOWER (0 or 1, default 0). */
    int debug_delay_us, debug_delay_tower;
    /* Test hooks of the shared input (both towers on one GPU, model_set_batch_u8):
     * test_input_per_tower 1 makes each tower upload and augment a copy of its own, as on
     * two GPUs (what the shared input is tested against); test_drop_event leaves one of
     * the input's events out (MODEL_TEST_DROP_*), so that a test can show the delay
     * test would see it missing. 0: off. */
    int test_input_per_tower, test_drop_event;
    /* Test hook of the gradients' first write: 1 makes GPU towers zero their gradients
     * and add to them, as CPU towers do, instead of writing each once with beta 0
     * (tower_cuda_set_grad_zeroing), so that a test can show the two give the same step.
     * 0: off. */
    int test_grad_zeroing;
    /* Test hook of the LRN + max-pool backward handing the bf16 gradient to a conv on
     * cuDNN's bf16 path: 1 turns the hand-over off (tower_cuda_set_lrn_handover), so that
     * a test can show it changes no bit. 0: off (the hand-over on). */
    int test_no_lrn_handover;
    /* Test hook of the bf16 input hand-over (a conv on cuDNN's bf16 path, or the fused LRN +
     * max-pool after one, writing the next conv's bf16 input copy; the model writing
     * conv1's with the image): 1 turns it off (tower_cuda_set_input_handover, no
     * tower_cuda_set_input_given: every conv casts its input), so that a test can show it
     * changes no bit. 0: off (the hand-over on). */
    int test_no_input_handover;
    /* --bf16-acts: 1 makes the rows of a bf16 run whose conv is on cuDNN with the LRN and
     * max-pool fused after it (the paper's conv1 and conv2) keep the ReLU's output in bf16
     * only (tower_cuda_set_bf16_acts); 0, the default: in fp32, as every other row. */
    int bf16_acts;
} model_placement;

/* model_placement.conv beyond TOWER_CONV_GEMM and _CUDNN: AUTO, each conv layer's path
 * measured at model_init; PREFER_CUDNN, cuDNN wherever it has an algorithm at the run's
 * precision (found at model_init on tower 0's device, tower_cuda_cudnn_rows), GEMM on the
 * other conv layers, and on all of them when cuDNN cannot start (said in conv_note). */
enum { MODEL_CONV_AUTO = 2, MODEL_CONV_PREFER_CUDNN = 3 };

/* model_placement.graph. AUTO: the first step model_train_step can capture runs
 * uncaptured, then again from the same state as a captured graph replayed; the graph is
 * kept only when both give the same bits (parameters, gradients, momentum, Adam's second
 * moment and the loss), and the state kept is the uncaptured step's either way. ON: that
 * step runs uncaptured, the next one is captured and every later one replayed, without
 * the check. OFF: never captured. A capture that fails falls back to
 * the uncaptured step with a line on stderr. Never captured: CPU towers, two GPUs (the
 * NCCL exchange waits on the host inside a step), the bench's profiled steps (m->hooks),
 * and while a test or debug hook is on. */
enum { MODEL_GRAPH_AUTO = 0, MODEL_GRAPH_ON = 1, MODEL_GRAPH_OFF = 2 };

/* `--conv auto`'s timing at model_init: untimed and timed calls each way per layer and
 * path (tower_cuda_conv_measure). */
#define MODEL_CONV_AUTO_WARMUP 2
#define MODEL_CONV_AUTO_REPS 5

/* model_placement.test_fail_phase */
enum {
    MODEL_TEST_FAIL_FORWARD = 0,  /* before layer test_fail_layer's forward */
    MODEL_TEST_FAIL_BACKWARD = 1, /* before its backward */
    MODEL_TEST_FAIL_GATHER = 2,   /* inside the all-gather of its input (or the logits') */
    MODEL_TEST_FAIL_REDUCE = 3,   /* inside the reduce-scatter of its input gradient */
    MODEL_TEST_FAIL_UPDATE = 4    /* before the tower's update */
};

/* model_placement.test_drop_event */
enum {
    MODEL_TEST_DROP_NONE = 0,
    MODEL_TEST_DROP_INPUT_READY = 1, /* tower 1 does not wait for tower 0's upload */
    MODEL_TEST_DROP_INPUT_FREE = 2,  /* tower 0 overwrites the input tower 1 may still read */
    MODEL_TEST_DROP_UPLOADED = 3     /* a tower augments without waiting for its copy
                                        stream's upload of the crops */
};

/* Regions of a step that model_hooks time (region 0 is the caller's: the bench's batch
 * upload). Exchanges are reported for tower 0 only: one exchange involves every tower. */
enum {
    MODEL_REGION_ZERO = 1,      /* zeroing the gradients */
    MODEL_REGION_LOSS_FWD = 2,  /* softmax cross-entropy forward (and, on a GPU, the mean
                                   loss reduced on the device; no host wait) */
    MODEL_REGION_LOSS_BWD = 3,
    MODEL_REGION_UPDATE = 4,    /* the optimizer step */
    MODEL_REGION_XCHG_LOGITS = 5,
    MODEL_REGION_FWD = 6,                                          /* + layer */
    MODEL_REGION_BWD = MODEL_REGION_FWD + TOWER_MAX_LAYERS,        /* + layer */
    MODEL_REGION_XCHG_FWD = MODEL_REGION_BWD + TOWER_MAX_LAYERS,   /* + layer: its input */
    MODEL_REGION_XCHG_BWD = MODEL_REGION_XCHG_FWD + TOWER_MAX_LAYERS, /* + layer */
    MODEL_REGIONS = MODEL_REGION_XCHG_BWD + TOWER_MAX_LAYERS
};

/* Callbacks around every stage of a step (the bench's profiler); a model without them
 * (m->hooks NULL) runs the same calls in the same order. */
typedef struct {
    void (*begin)(void *ctx, int tower, int region);
    void (*end)(void *ctx, int tower, int region);
    void *ctx;
} model_hooks;

/* The tower threads and their hand-over (model.c). */
typedef struct model_workers model_workers;

typedef struct {
    tower_plan plan;
    int towers;                 /* plan.cfg.towers */
    tower tw[2];
    comm *comm;
    model_placement place;
    uint64_t seed;              /* init and dropout keys derive from it */
    int64_t step;               /* steps taken (the dropout key of the next step) */
    int64_t updates;            /* optimizer updates applied (Adam's bias correction; a
                                   step skipped as non-finite has none) */
    double last_loss;           /* the loss of the newest step read back (GPU: a step's
                                   loss comes back after it, model_step_loss) */
    int loss_slot[2], loss_n;   /* GPU: the read-back slots of the steps whose loss is still
                                   in flight (oldest first; tower_cuda_loss_post) */
    int loss_step[2];           /* per slot: 1 when it is a whole step's (uncounted again
                                   when its read-back fails) */
    tower_optim optim;          /* plan.cfg.net.optim: the paper's SGD (0.9, 0.0005) or Adam */
    const model_hooks *hooks;   /* NULL, or the stage timers (bench); called from the
                                   tower's own thread (tower t's regions from worker t) */
    model_workers *workers;     /* one thread per tower (two towers, place.serial 0), or
                                   NULL: the caller's thread runs the towers */
    int failed;                 /* a phase failed (an exchange, a device call inside a
                                   tower's op, the test hook) or a device error at the
                                   upload: the model does nothing more; error says why */
    char error[512];
    /* GPU input staging for model_set_batch_u8, allocated on its first call (start-up),
     * one set per uploading tower on its device (tower 0 alone when both towers share a
     * GPU, else every tower): crops (B, S, S, 3) uint8, the per-image augmentation
     * parameters (B), the mean image (256, 256, 3) float. */
    void *in_crops[2], *in_params[2], *in_mean[2];
    /* cudaEvent_t, created with the staging: in_ready[t] is recorded on uploading tower
     * t's stream after its copies and augmentation of the batch (what tower 1 waits for
     * when it shares tower 0's input, and what model_input_wait waits for); in_free is
     * recorded on tower 1's stream before tower 0 overwrites the shared input.
     * in_copy[t] (cudaStream_t): the crops and parameters are uploaded on it, off the
     * towers' streams, so that the next batch's upload runs beside the step before it:
     * it waits for in_ready[t] (the last augmentation has read the staging) and records
     * in_uploaded[t], which tower t's stream waits for before it augments. */
    void *in_ready[2], *in_free;
    void *in_copy[2], *in_uploaded[2];
    int in_shared;              /* 1 while tower 1's conv1 input and labels are tower 0's
                                   (the last batch came through the shared path) */
    int32_t *in_own_labels[2];  /* each tower's own labels (tower_carve's), restored when
                                   the input stops being shared */
    /* GPU: each row's convolution path, the same on every tower (TOWER_CONV_GEMM for
     * rows that are not convs, and on the CPU); with --conv auto the choice made from
     * conv_timing (tower 0's device, at the run's batch; tower_conv_choose), with
     * MODEL_CONV_PREFER_CUDNN cuDNN's rows, else place.conv on every conv row. conv_note:
     * why cuDNN was not measured (auto), or which rows stay on GEMM and why (prefer), or "". */
    int conv_path[TOWER_MAX_LAYERS];
    tower_conv_timing conv_timing[TOWER_MAX_LAYERS];
    char conv_note[512];
    /* The step as one CUDA graph (place.graph): graph_state 0 while undecided, 1 while
     * graph_exec (a cudaGraphExec_t of the whole step) is replayed, 2 once every step runs
     * uncaptured (off, a failed capture, or auto's check found a difference); graph_shared
     * the in_shared it was captured with (the input pointers it holds: another value
     * captures again); graph_ev the capture's fork and join and the replay's hand-over
     * events (cudaEvent_t); graph_note what was chosen and why, for the start-up line. */
    int graph_state, graph_shared;
    int graph_warm;             /* --graph on: a step has run uncaptured before the capture */
    void *graph_exec, *graph_ev[4];
    char graph_note[512];
} model;

/* The convolution mode in one line, for the start-up report, run.json and bench:
 * "gemm", "cudnn", or "auto: conv1 gemm (gemm 1.20 + 2.31 ms, cudnn 1.41 + 2.95 ms), ..."
 * (each layer's choice, then each path's forward + backward in milliseconds per call,
 * "-" for a path not measured, and conv_note). On the CPU "cpu onednn" (oneDNN runs
 * some passes: --cpu-conv onednn in a build with it) or "cpu", then in brackets which
 * path runs each conv layer's passes on this CPU (tower_conv_describe). */
void model_conv_describe(const model *m, char *buf, size_t n);
/* The convolution mode as one word, for bench's JSON: "gemm", "cudnn" or "auto" as asked;
 * the tf32 and bf16 default (MODEL_CONV_PREFER_CUDNN) by what it chose: "cudnn" (every
 * conv layer), "gemm" (none) or "mixed". */
const char *model_conv_mode_name(const model *m);

/* With --bf16-acts: the layers whose activation is kept in bf16 ("conv1, conv2"), or
 * "none (...)" when none qualifies (--conv auto chose GEMM for them, a net without LRN);
 * "" without the flag or on the CPU. */
void model_bf16_acts_describe(const model *m, char *buf, size_t n);

/* Builds the towers of cfg's net on the placement, initialised from seed (each row's init).
 * Returns 0, or -1 with err (e.g. no CUDA in this build, out of GPU memory). */
int model_init(model *m, const tower_config *cfg, const model_placement *place, uint64_t seed,
               char *err, size_t errlen);
void model_free(model *m);

/* Copies a host batch in: x (B, in_ch, in_size, in_size) float, labels (B). */
void model_set_batch(model *m, const float *x, const int32_t *labels);

/* The GPU data path (paper section 4.1 on the device): uploads uint8 crops
 * (B, S, S, 3, already mirrored), their augmentation parameters (`params`: B
 * data_aug_params from src/data) and labels, and runs data_augment_cuda into the towers'
 * input; the mean image (256, 256, 3) is uploaded on the first call only. Both towers on
 * one GPU: tower 0 uploads and augments once, on its stream, and tower 1 reads tower 0's
 * input and labels (its stream waits for in_ready[0]; tower 0's next upload waits for
 * tower 1 to be done with them); the same bits as two uploads. On two GPUs each tower
 * uploads and augments its own.
 * The copies are asynchronous: crops, params and labels must stay untouched until
 * model_input_wait returns (the trainer calls it before it hands a prefetch slot back).
 * GPU placements only: returns -1 with err on the CPU or on a CUDA failure. */
int model_set_batch_u8(model *m, const uint8_t *crops, const void *params,
                       const int32_t *labels, const float *mean, char *err, size_t errlen);
/* Towers that upload and augment a copy of their own of a uint8 batch: 1 when both
 * towers share one GPU, else every tower (each holds model_set_batch_u8's staging). */
int model_input_towers(const model *m);
/* Waits until the device has finished reading the host buffers of the last
 * model_set_batch_u8 (its copies and augmentation). 0 (also on CPU towers, or before any
 * upload), or -1 with err on a CUDA failure. */
int model_input_wait(model *m, char *err, size_t errlen);

/* The step's phases. Each runs on the tower workers when there are any (returning when
 * both are done) or on this thread. A failure in a tower (an exchange, the test hook, or
 * a device call that failed inside one of its ops: the fault slot, tower.h) fails the
 * model: m->failed is set, m->error says why (the tower, the op or exchange, the step,
 * and for a device call the call as written, its file, line and reason, and whether the
 * device's context is lost), the other tower is stopped at its next layer or exchange
 * (comm_abort lets it go from a barrier), and every later call does nothing (forward
 * returns NaN).
 * What a failed step leaves: m->step and m->updates are those of the last good step;
 * the towers' arenas are as the failure left them, which may be part of the step (a
 * backward half done, the update applied to one tower and not the other, a device that
 * stopped mid-kernel), so they are not a state to continue from or to save. Callers
 * check m->failed after every phase; the trainer then stops with exit code 3 without
 * another checkpoint, so the newest checkpoint, written between good steps, is the state
 * to resume from. */

/* Forward through every layer and the loss; train selects dropout masks (keyed on
 * seed and m->step) or the evaluation scaling. Returns the mean loss (NaN on failure). */
double model_forward(model *m, int train);
/* Backward through every layer (after model_forward with train=1); the grads hold exactly
 * this batch's gradient afterwards (CPU towers zero them first and add; GPU towers write
 * each once, docs/GPU.md "Gradients written once"). */
void model_backward(model *m);
/* The net's optimizer (m->optim: the paper's SGD, or Adam) at learning rate lr, weight
 * decay on the weights only (see paper_notes.md); m->updates += 1 (not when it failed). */
void model_update(model *m, real lr);
/* zero_grad + forward(train) + backward + update; m->step += 1 (not when the step
 * failed). Returns the loss (NaN when the model failed). On GPU towers on one GPU this is
 * the step place.graph captures and replays: no host wait inside it; the loss is reduced
 * on the device and read back after the step. */
double model_train_step(model *m, real lr);
/* The same step with the update skipped when the step's loss is not finite (the
 * trainer's rule for GPU towers: on the device, by the update kernel itself, so the step
 * stays one graph); m->updates counts only applied updates. Returns the loss. */
double model_train_step_checked(model *m, real lr);
/* model_train_step without waiting for its loss: returns the loss of the step before
 * (NaN for the first, or when that one was read already), which the device has finished
 * or nearly so while this one is queued; model_step_loss gives this step's. CPU towers
 * compute the step at once (the value returned is still the previous step's). */
double model_train_step_deferred(model *m, real lr);
/* Waits for every step still in flight and returns the newest one's loss (m->last_loss);
 * NaN when the model failed (a fault in any kernel of a step surfaces here). */
double model_step_loss(model *m);
/* What place.graph chose, in one line ("off", "on: ...", "auto: ..."), for the start-up
 * report and bench; "uncaptured (CPU)" on the CPU. */
void model_graph_describe(const model *m, char *buf, size_t n);

/* Copies the softmax outputs to the host: probs (B, classes), class-major per sample. */
void model_get_probs(const model *m, float *probs);
/* Units of layer l's output that model_get_activations reads, for all towers together:
 * towers * out_ch * out_h * out_h (the layer's conv or fc output, before LRN and pooling). */
size_t model_layer_units(const model *m, int l);
/* Copies layer l's output after its activation (ReLU, tanh, or none: fc8's logits) from the
 * last model_forward to the host: acts (B, model_layer_units), each sample's units tower 0's
 * first, then tower 1's, each tower's in its (C, H, W) order: the towers' halves concatenated,
 * as the next layer that reads all towers sees them. It is the stage before LRN, pooling and
 * dropout (so an evaluation forward's fc6/fc7 are not yet scaled by dropout's 1 - p). Works
 * on CPU and CUDA towers. 0, or -1 with err (out of memory, a layer out of range). */
int model_get_activations(const model *m, int l, float *acts, char *err, size_t errlen);
/* Host copies of a tower's arenas (n_params reals each) for checkpoints and export;
 * which: 0 params, 1 grads, 2 momentum (Adam: first moment), 3 Adam's second moment
 * (Adam nets only). */
void model_get_tensor(const model *m, int tower_index, int which, real *dst);
void model_set_tensor(model *m, int tower_index, int which, const real *src);

#ifdef __cplusplus
}
#endif
#endif
