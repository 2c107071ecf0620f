/* bench.c: `twotower bench`, the training-step benchmark (issue 6). Times full training
 * steps (batch in, forward, backward, SGD) of the model on a placement, from uint8 batches
 * made once from a seed, and prints images/s, per-layer times and memory as a table and
 * as JSON. tools/bench/bench.py runs it beside the same net in PyTorch. */
#include "train/bench.h"

#include "base/base.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "train/device.h"
#include "train/metrics.h"
#include "train/nets.h"

#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
#define BENCH_CUDA 1
#include <cuda_runtime_api.h>
#else
#define BENCH_CUDA 0
#endif

extern int openblas_get_num_threads(void); /* OpenBLAS's cblas.h; the BLAS train links */
extern char *openblas_get_corename(void);

double train_bench_train_flops(const tower_plan *plan)
{
    double macs = 0;
    for (int l = 0; l < plan->n_layers; l++) macs += plan->layer[l].macs;
    return 3.0 * 2.0 * macs * plan->cfg.towers;
}

/* ---- the profiler: wall clock on the CPU, CUDA events on GPUs ----------------------- */

#if BENCH_CUDA
/* A failed event call in the middle of a step leaves nothing to recover (as in the CUDA
 * layers): say which and stop with the CLI's runtime-failure code. */
static void bench_cuda_must(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return;
    fprintf(stderr, "twotower bench: %s failed: %s\n", what, cudaGetErrorString(e));
    exit(3);
}

typedef struct {
    int device[2];
    cudaStream_t stream[2];
    cudaEvent_t ev[2][TRAIN_BENCH_REGIONS][2]; /* [tower][region][begin, end] */
} bench_prof_gpu;
#endif

int train_bench_prof_init(train_bench_prof *p, model *m, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->towers = m->towers;
    p->step_start = -1;
#if BENCH_CUDA
    if (!m->place.cpu) {
        bench_prof_gpu *g = calloc(1, sizeof *g);
        if (!g) {
            snprintf(err, errlen, "out of host memory for the profiler");
            return -1;
        }
        p->gpu = g;
        for (int t = 0; t < m->towers; t++) {
            g->device[t] = m->tw[t].device;
            g->stream[t] = (cudaStream_t)tower_cuda_stream(&m->tw[t]);
            cudaError_t e = cudaSetDevice(g->device[t]);
            for (int r = 0; r < TRAIN_BENCH_REGIONS && e == cudaSuccess; r++)
                for (int k = 0; k < 2 && e == cudaSuccess; k++)
                    e = cudaEventCreate(&g->ev[t][r][k]);
            if (e != cudaSuccess) {
                snprintf(err, errlen, "GPU %d: cudaEventCreate: %s", g->device[t],
                         cudaGetErrorString(e));
                train_bench_prof_free(p);
                return -1;
            }
        }
    }
#else
    (void)err;
    (void)errlen;
#endif
    return 0;
}

void train_bench_prof_free(train_bench_prof *p)
{
#if BENCH_CUDA
    bench_prof_gpu *g = p->gpu;
    if (g)
        for (int t = 0; t < p->towers; t++) {
            cudaSetDevice(g->device[t]);
            for (int r = 0; r < TRAIN_BENCH_REGIONS; r++)
                for (int k = 0; k < 2; k++)
                    if (g->ev[t][r][k]) cudaEventDestroy(g->ev[t][r][k]);
        }
    free(g);
#endif
    p->gpu = NULL;
}

static void prof_mark(train_bench_prof *p, int t, int r, int end)
{
#if BENCH_CUDA
    bench_prof_gpu *g = p->gpu;
    if (g) {
        bench_cuda_must(cudaSetDevice(g->device[t]), "cudaSetDevice");
        bench_cuda_must(cudaEventRecord(g->ev[t][r][end], g->stream[t]), "cudaEventRecord");
    }
#endif
    double now = base_now();
    if (!end) {
        if (p->step_start < 0) p->step_start = now;
        p->start[t][r] = now;
        p->used[t][r] = 1;
    } else if (!p->gpu) {
        p->ms[t][r] += 1e3 * (now - p->start[t][r]);
    }
}

void train_bench_prof_begin(train_bench_prof *p, int t, int r) { prof_mark(p, t, r, 0); }
void train_bench_prof_end(train_bench_prof *p, int t, int r) { prof_mark(p, t, r, 1); }

/* Waits for the towers and adds this step's event intervals. */
static void prof_collect(train_bench_prof *p)
{
#if BENCH_CUDA
    bench_prof_gpu *g = p->gpu;
    if (g)
        for (int t = 0; t < p->towers; t++) {
            bench_cuda_must(cudaSetDevice(g->device[t]), "cudaSetDevice");
            bench_cuda_must(cudaStreamSynchronize(g->stream[t]), "cudaStreamSynchronize");
            for (int r = 0; r < TRAIN_BENCH_REGIONS; r++) {
                if (!p->used[t][r]) continue;
                float ms = 0;
                bench_cuda_must(cudaEventElapsedTime(&ms, g->ev[t][r][0], g->ev[t][r][1]),
                                "cudaEventElapsedTime");
                p->ms[t][r] += ms;
            }
        }
#endif
    memset(p->used, 0, sizeof p->used);
    if (p->step_start >= 0) p->step_ms += 1e3 * (base_now() - p->step_start);
    p->step_start = -1;
    p->steps++;
}

/* ---- the profiled step: the model's own step, its hooks timing every stage ---------- */

static void hook_begin(void *ctx, int t, int r) { train_bench_prof_begin(ctx, t, r); }
static void hook_end(void *ctx, int t, int r) { train_bench_prof_end(ctx, t, r); }

int train_bench_prof_step(train_bench_prof *p, model *m, real lr, double *loss, char *err,
                          size_t errlen)
{
    model_hooks hooks = {hook_begin, hook_end, p};
    const model_hooks *saved = m->hooks;
    /* the step's clock starts here unless the data region started it: the tower workers
     * then only write their own tower's entries of p */
    if (p->step_start < 0) p->step_start = base_now();
    m->hooks = &hooks;
    *loss = model_train_step(m, lr);
    m->hooks = saved;
    if (m->failed) {
        snprintf(err, errlen, "the step failed: %s", m->error);
        return -1;
    }
    prof_collect(p);
    return 0;
}

/* ---- the batches: uint8 crops made once, augmented each step ------------------------ */

typedef struct {
    int B, S, nb;             /* batch, crop side, batches in the pool */
    uint8_t *crops;           /* (nb, B, S, S, 3) NHWC, as data_train_batch_u8 gives them */
    data_aug_params *params;  /* (nb, B) crop corners, mirror flags, lighting offsets */
    int32_t *labels;          /* (nb, B) */
    float *mean;              /* (DATA_SIZE, DATA_SIZE, 3) the mean image */
    float *x;                 /* CPU: (B, 3, S, S) the augmented batch */
    size_t host_bytes;
    int pinned;               /* GPU: crops/params/labels in cudaMallocHost memory */
    size_t device_bytes;      /* GPU: model_set_batch_u8's staging, all towers */
} bench_data;

static void bench_data_free(bench_data *d)
{
#if BENCH_CUDA
    if (d->pinned) {
        cudaFreeHost(d->crops);
        cudaFreeHost(d->params);
        cudaFreeHost(d->labels);
        d->crops = NULL, d->params = NULL, d->labels = NULL;
    }
#endif
    free(d->crops);
    free(d->params);
    free(d->labels);
    free(d->mean);
    free(d->x);
    memset(d, 0, sizeof *d);
}

/* Fills the pool from seed: random pixels, crop corners inside the 256x256 image, mirror
 * flags, lighting offsets of the size PCA lighting gives (a few pixel units), labels. */
static void bench_data_fill(bench_data *d, int classes, uint64_t seed)
{
    uint64_t key = base_rng_mix(seed ^ 0x62656e6368ull, 0); /* "bench" */
    size_t n = (size_t)d->nb * d->B * d->S * d->S * 3;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = base_rng_mix(key, i / 8);
        for (size_t j = 0; j < 8 && i + j < n; j++) d->crops[i + j] = (uint8_t)(r >> (8 * j));
    }
    uint64_t kp = base_rng_mix(key, 1ull << 62);
    int span = DATA_SIZE - d->S + 1;
    for (int i = 0; i < d->nb * d->B; i++) {
        uint64_t r = base_rng_mix(kp, (uint64_t)i);
        data_aug_params *q = &d->params[i];
        q->oy = (int32_t)((r & 0xffff) % (uint64_t)span);
        q->ox = (int32_t)(((r >> 16) & 0xffff) % (uint64_t)span);
        q->mirror = (int32_t)((r >> 32) & 1);
        for (int c = 0; c < 3; c++)
            q->rgb[c] = 20.0f * base_rng_uniform(kp ^ 0x7267ull, (uint64_t)(3 * i + c)) - 10.0f;
        d->labels[i] = (int32_t)(base_rng_mix(kp ^ 0x6c6162ull, (uint64_t)i) % (uint64_t)classes);
    }
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
        d->mean[i] = 100.0f + 50.0f * base_rng_uniform(key ^ 0x6d65616eull, i);
}

static int bench_data_init(bench_data *d, model *m, int nb, uint64_t seed, char *err,
                           size_t errlen)
{
    memset(d, 0, sizeof *d);
    d->B = m->plan.cfg.batch;
    d->S = m->plan.cfg.in_size;
    d->nb = nb;
    size_t crop_b = (size_t)d->B * d->S * d->S * 3;
    size_t crops_n = crop_b * nb, params_n = (size_t)nb * d->B;
    d->host_bytes = crops_n + params_n * (sizeof(data_aug_params) + sizeof(int32_t)) +
                    sizeof(float) * DATA_IMAGE_BYTES;
#if BENCH_CUDA
    if (!m->place.cpu) {
        /* pinned, so the per-step uploads are asynchronous DMA rather than staged copies */
        d->pinned = 1;
        cudaError_t e = cudaMallocHost((void **)&d->crops, crops_n);
        if (e == cudaSuccess)
            e = cudaMallocHost((void **)&d->params, sizeof(data_aug_params) * params_n);
        if (e == cudaSuccess) e = cudaMallocHost((void **)&d->labels, sizeof(int32_t) * params_n);
        if (e != cudaSuccess) {
            snprintf(err, errlen, "cudaMallocHost of %.1f MiB for the batches: %s",
                     d->host_bytes / 1048576.0, cudaGetErrorString(e));
            bench_data_free(d);
            return -1;
        }
        /* what model_set_batch_u8 allocates per uploading tower on its first call */
        d->device_bytes = (size_t)model_input_towers(m) * (crop_b + sizeof(data_aug_params) * d->B +
                                               sizeof(float) * DATA_IMAGE_BYTES);
    }
#endif
    if (!d->pinned) {
        d->crops = malloc(crops_n);
        d->params = malloc(sizeof(data_aug_params) * params_n);
        d->labels = malloc(sizeof(int32_t) * params_n);
        d->x = malloc(sizeof(float) * crop_b);
        d->host_bytes += sizeof(float) * crop_b;
    }
    d->mean = malloc(sizeof(float) * DATA_IMAGE_BYTES);
    if (!d->crops || !d->params || !d->labels || !d->mean || (!d->pinned && !d->x)) {
        snprintf(err, errlen, "out of host memory: the %d batches need %.1f MiB", nb,
                 d->host_bytes / 1048576.0);
        bench_data_free(d);
        return -1;
    }
    bench_data_fill(d, m->plan.cfg.classes, seed);
    return 0;
}

/* Batch k of the pool into the towers, the way the trainer does it. CPU: data_augment_cpu,
 * then model_set_batch. GPU: model_set_batch_u8 (the uint8 crops, their parameters and the
 * labels uploaded and data_augment_cuda run once per GPU, on tower 0's stream when both
 * towers share one). */
static int bench_data_put(bench_data *d, model *m, int k, char *err, size_t errlen)
{
    size_t crop_b = (size_t)d->B * d->S * d->S * 3;
    const uint8_t *crops = d->crops + (size_t)k * crop_b;
    const data_aug_params *params = d->params + (size_t)k * d->B;
    const int32_t *labels = d->labels + (size_t)k * d->B;
    if (d->pinned) return model_set_batch_u8(m, crops, params, labels, d->mean, err, errlen);
    data_augment_cpu(d->x, crops, d->mean, params, d->B, d->S);
    model_set_batch(m, d->x, labels);
    return 0;
}

/* Waits until every tower's queued work is done (the GPU runs ahead of the host). */
static void bench_sync(model *m)
{
#if BENCH_CUDA
    for (int t = 0; t < m->towers; t++)
        if (m->tw[t].device >= 0) {
            bench_cuda_must(cudaSetDevice(m->tw[t].device), "cudaSetDevice");
            bench_cuda_must(cudaStreamSynchronize((cudaStream_t)tower_cuda_stream(&m->tw[t])),
                            "cudaStreamSynchronize");
        }
#else
    (void)m;
#endif
}

/* The data region of a profiled step: each GPU tower's stream holds its own part; on the
 * CPU the whole call is one wall-clock interval, booked to tower 0. */
static int bench_data_put_timed(bench_data *d, model *m, train_bench_prof *p, int k,
                                char *err, size_t errlen)
{
    int T = p->gpu ? m->towers : 1;
    for (int t = 0; t < T; t++) train_bench_prof_begin(p, t, TRAIN_BENCH_DATA);
    int rc = bench_data_put(d, m, k, err, errlen);
    for (int t = 0; t < T; t++) train_bench_prof_end(p, t, TRAIN_BENCH_DATA);
    return rc;
}

/* ---- options -------------------------------------------------------------------------- */

typedef struct {
    tower_config cfg;
    model_placement place;
    int warmup, steps, profile_steps, batches;
    uint64_t seed;
    double lr;
    const char *json;
    train_placement_args place_flags; /* become place once parsed */
    train_net_args net;               /* --net and its switches */
} bench_opts;

static void bench_defaults(void *p)
{
    bench_opts *o = p;
    /* towers, classes, in_ch 0: the net's (train_net_choose) */
    *o = (bench_opts){.cfg = {.towers = 0, .classes = 0, .batch = 128, .in_size = 224,
                              .in_ch = 0, .width_div = 1},
                      .warmup = 5, .steps = 20, .profile_steps = 3, .batches = 4, .seed = 1,
                      .lr = 0.01};
    train_net_args_default(&o->net);
}

#define BENCH_STR_(x) #x
#define BENCH_STR(x) BENCH_STR_(x)

static const base_flag bench_flags[] = {
    {BASE_FLAG_GROUP(train_placement_flags, bench_opts, place_flags)},
    {BASE_FLAG_INT("batch", bench_opts, cfg.batch, 1, 4096, "N", "images per step")},
    {BASE_FLAG_INT("size", bench_opts, cfg.in_size, 1, DATA_SIZE, "N", "input side")},
    {BASE_FLAG_INT("warmup", bench_opts, warmup, 0, 1000000, "N", "untimed steps first")},
    {BASE_FLAG_INT("steps", bench_opts, steps, 1, 1000000, "N", "timed steps, for images/s")},
    {BASE_FLAG_INT("profile-steps", bench_opts, profile_steps, 0, 1000000, "N",
                   "steps with every layer timed")},
    {BASE_FLAG_INT("batches", bench_opts, batches, 1, 1024, "N",
                   "uint8 crop batches made once and cycled")},
    {BASE_FLAG_STR("json", bench_opts, json, "FILE", "also write every number as JSON")},
    {BASE_FLAG_GROUP(train_net_flags, bench_opts, net)},
    {BASE_FLAG_INT("towers", bench_opts, cfg.towers, 1, 2, "N", "2 or 1 (--net half)"),
     .deflt = "the net's"},
    {BASE_FLAG_INT("classes", bench_opts, cfg.classes, 2, 1 << 20, "N", "classes of fc8"),
     .deflt = "the net's"},
    {BASE_FLAG_INT("width-div", bench_opts, cfg.width_div, 1, 2048, "N",
                   "divide every layer's width by N")},
    {BASE_FLAG_U64("seed", bench_opts, seed, INT64_MAX, "N", "the net's init and the batches")},
    {BASE_FLAG_F64("lr", bench_opts, lr, 0, 10, "X", "learning rate of the steps")},
    {0}};

static const base_flags_cmd bench_cmd = {
    .name = "bench",
    .synopsis = "[--cpu | --gpus LIST [--precision fp32|tf32|bf16] [--conv gemm|cudnn|auto] "
                "[--graph auto|on|off]] "
                "[flags]",
    .about =
        "Times full training steps (batch in, forward, backward, update) of the net\n"
        "(--net and its switches; its optimizer is the update) built from --seed: --warmup\n"
        "steps, then --steps timed with model_train_step (images/s), then --profile-steps\n"
        "with every layer timed (wall clock on the CPU, CUDA events on a GPU). The\n"
        "batches are --batches uint8 crop batches made once from --seed and augmented\n"
        "every step (on the GPU with --gpus). --size is at most " BENCH_STR(DATA_SIZE)
        " (the crops come\nfrom " BENCH_STR(DATA_SIZE) "x" BENCH_STR(DATA_SIZE) " images). "
        "Prints a table; --json FILE also writes every\nnumber.\n"
        "--gpus 0: both towers on GPU 0; --gpus 0,1: one each; --cpu: the CPU backend;\n"
        "neither: the GPUs if there are any, else the CPU.\n"
        "On the CPU it also times this machine's 2048^3 SGEMM on the towers' threads\n"
        "(OpenBLAS's and oneDNN's; the step's GFLOP/s as a share of the faster) and\n"
        "counts the timed steps' time inside BLAS and oneDNN (with nothing else, the rate\n"
        "the step would reach).\n"
        "On one GPU each timed step is one CUDA graph replayed (unless --graph off), its\n"
        "loss read back one step late; --graph auto decides at the first step (a warm-up\n"
        "one when there is one).\n",
    .flags = bench_flags,
    .opts_size = sizeof(bench_opts),
    .defaults = bench_defaults};

/* BASE_FLAGS_GO, or the exit code (0 after --help, 2 after a bad flag). */
static int bench_parse(int argc, char **argv, bench_opts *o)
{
    base_flags_out out;
    int rc = base_flags_cli(&bench_cmd, o, argc, argv, &out);
    if (rc != BASE_FLAGS_GO) return rc;
    char err[512] = "";
    if (train_placement_resolve(&o->place_flags, &o->place, err, sizeof err)) {
        fprintf(stderr, "twotower bench: %s\n", err);
        return 2;
    }
    tower_plan plan;
    if (train_net_args_choose(&o->net, &o->cfg, err, sizeof err) ||
        tower_plan_make(&plan, &o->cfg, err, sizeof err)) {
        fprintf(stderr, "twotower bench: %s\n", err);
        return 2;
    }
    if (o->cfg.in_ch != 3) { /* the uint8 crops are RGB */
        fprintf(stderr, "twotower bench: --net %s reads %d input channel(s); the bench's "
                        "batches are RGB crops\n", o->cfg.net.name, o->cfg.in_ch);
        return 2;
    }
    return BASE_FLAGS_GO;
}

/* ---- what the machine is ----------------------------------------------------------- */

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        snprintf(buf, n, "%s", c);
        buf[strcspn(buf, "\n")] = 0;
        break;
    }
    fclose(f);
}

/* Peak resident memory of this process (VmHWM), or 0 when /proc does not say. */
static size_t peak_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

/* ---- the machine's SGEMM rate (CPU) ------------------------------------------------ */

/* The square SGEMM the CPU's GFLOP/s is compared with: large enough for OpenBLAS's best
 * blocking, small enough to time in about a second. */
#define SGEMM_PROBE_N 2048
#define SGEMM_PROBE_S 0.5

typedef struct {
    pthread_barrier_t *go;
    double gflops;
    int ok, dnnl; /* dnnl: oneDNN's SGEMM, not OpenBLAS's */
} sgemm_probe;

static void probe_sgemm(const sgemm_probe *pr, size_t n, const float *a, const float *b,
                        float *c)
{
    if (pr->dnnl)
        tower_dnnl_square_sgemm((int)n, a, b, c);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1, a,
                    (int)n, b, (int)n, 0, c, (int)n);
}

/* One thread's SGEMMs: one untimed, then repeated for SGEMM_PROBE_S. */
static void *sgemm_probe_run(void *arg)
{
    sgemm_probe *pr = arg;
    size_t n = SGEMM_PROBE_N, nn = n * n;
    float *a = malloc(sizeof(float) * 3 * nn);
    pr->ok = a != NULL;
    pthread_barrier_wait(pr->go);
    if (!a) return NULL;
    float *b = a + nn, *c = b + nn;
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)(i % 97) * 1e-3f;
        b[i] = (float)(i % 89) * 1e-3f;
    }
    probe_sgemm(pr, n, a, b, c);
    pthread_barrier_wait(pr->go); /* every thread times the same seconds */
    int reps = 0;
    double t0 = base_now(), dt;
    do {
        probe_sgemm(pr, n, a, b, c);
        reps++;
    } while ((dt = base_now() - t0) < SGEMM_PROBE_S);
    pr->gflops = 2.0 * (double)n * n * n * reps / dt / 1e9;
    free(a);
    return NULL;
}

/* The SGEMM rate of `threads` threads at once (each with OpenBLAS's current thread count,
 * as the towers run), summed, of OpenBLAS (dnnl 0) or oneDNN (1). 0 when it cannot be
 * measured (oneDNN: not in this build). */
static double sgemm_machine_gflops(int threads, int dnnl)
{
    if (dnnl && !tower_conv_dnnl_built()) return 0;
    pthread_t th[2];
    sgemm_probe pr[2];
    pthread_barrier_t go;
    if (threads < 1 || threads > 2 || pthread_barrier_init(&go, NULL, (unsigned)threads + 1))
        return 0;
    int started = 0;
    for (; started < threads; started++) {
        pr[started] = (sgemm_probe){&go, 0, 0, dnnl};
        if (pthread_create(&th[started], NULL, sgemm_probe_run, &pr[started])) break;
    }
    if (started < threads) { /* the barrier would never open: say so, measure nothing */
        for (int i = 0; i < started; i++) pthread_cancel(th[i]);
        for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
        return 0;
    }
    pthread_barrier_wait(&go); /* allocated */
    int ok = 1;
    for (int i = 0; i < threads; i++) ok = ok && pr[i].ok;
    pthread_barrier_wait(&go); /* warmed up */
    double sum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        sum += pr[i].gflops;
    }
    pthread_barrier_destroy(&go);
    return ok ? sum : 0;
}

/* ---- the report -------------------------------------------------------------------- */

typedef struct {
    double images_per_s, ms_mean, ms_median, ms_min, ms_max, gflops, flops_per_image;
    double loss_first, loss_last;
    int finite;
    /* CPU: the machine's SGEMM rate as the towers' threads see it, and the timed steps'
     * BLAS calls (their share of the threads' time, their rate); 0 on a GPU */
    double sgemm_gflops, gemm_share, gemm_gflops, gemm_bound_gflops;
    double sgemm_openblas, sgemm_dnnl; /* each library's; sgemm_gflops is the faster */
    int sgemm_threads;
    size_t rss_peak;
    size_t pool_host;       /* the batch pool: uint8 crops, their parameters, labels, the
                               mean image and (CPU) the float batch */
    char device[256];
    char conv_detail[1024]; /* the convolution path (GPU: and cuDNN's algorithms) */
    char conv_choice[2048]; /* model_conv_describe: --conv auto's per-layer choice and times */
    char graph[600];        /* model_graph_describe after the timed steps: --graph's choice */
    char bf16_acts[256];    /* model_bf16_acts_describe: "" without --bf16-acts */
    int ndev, dev[2];
    size_t gpu_used_before[2], gpu_used_after[2], gpu_total[2];
} bench_result;

/* Whole numbers (byte counts, multiply-adds) as JSON integers; others as reals, written
 * to 9 digits (BENCH_JSON_FLAGS); NaN and infinities (a time that was not measured) as
 * null. */
static json_t *jnum(double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 9e15) return json_integer((json_int_t)v);
    return train_json_real(v);
}

static json_t *jnum_arr(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, jnum(v[i]));
    return a;
}

#define BENCH_JSON_FLAGS (JSON_INDENT(1) | JSON_REAL_PRECISION(9))

static double per_step(const train_bench_prof *p, int t, int r)
{
    return p->steps ? p->ms[t][r] / p->steps : NAN;
}

/* Layer l's forward FLOPs for the whole batch, all towers; backward is twice that (the
 * input gradient and the weight gradient). */
static double layer_flops(const tower_plan *plan, int l)
{
    return 2.0 * plan->layer[l].macs * plan->cfg.batch * plan->cfg.towers;
}

static const char *data_path_text(const model *m)
{
    if (m->place.cpu) return "uint8 crops (host) -> data_augment_cpu -> model_set_batch";
    return model_input_towers(m) == 1 && m->towers == 2
               ? "uint8 crops (pinned host) -> model_set_batch_u8: one upload + "
                 "data_augment_cuda into tower 0's x, which both towers read"
               : "uint8 crops (pinned host) -> model_set_batch_u8: upload + "
                 "data_augment_cuda into each tower's x";
}

static double mib(size_t b) { return b / 1048576.0; }

/* One tower's arena by part (tower_memory), the layers' kept buffers one by one. */
static void print_arena_parts(FILE *f, const tower *t)
{
    tower_mem mm;
    tower_memory(t, &mm);
    fprintf(f, "  tower %d arena   params+grads+%s %.1f, input %.1f, kept for backward",
            t->index, t->moment2 ? "moments" : "momentum", mib(mm.params), mib(mm.input));
    size_t kept = 0;
    for (int l = 0; l < t->plan.n_layers; l++) kept += mm.kept[l];
    fprintf(f, " %.1f (", mib(kept));
    for (int l = 0; l < t->plan.n_layers; l++)
        fprintf(f, "%s%s %.1f", l ? ", " : "", tower_plan_row(&t->plan, l)->name,
                mib(mm.kept[l]));
    fprintf(f, "), activation gradients %.1f", mib(mm.grads));
    if (t->ops->lean)
        fprintf(f, " (regions %.1f + %.1f + %.1f)", mib(mm.grad_part[0]), mib(mm.grad_part[1]),
                mib(mm.grad_part[2]));
    fprintf(f, ", loss %.1f, conv scratch %.1f MiB\n", mib(mm.loss), mib(mm.scratch));
}

static void print_table(FILE *f, const bench_opts *o, const model *m, const bench_result *r,
                        const train_bench_prof *p, char *place)
{
    const tower_plan *plan = &m->plan;
    int T = m->towers;
    fprintf(f, "twotower bench: %s, %s; precision %s: fp32 storage, %s\n", place, r->device,
            tower_precision_name(m->place.precision),
            m->place.precision == TOWER_PRECISION_TF32
                ? "GEMMs in TF32 (tensor cores), the rest fp32"
            : m->place.precision == TOWER_PRECISION_BF16
                ? "GEMM operands in bf16 with fp32 sums (tensor cores), the rest fp32"
                : "fp32 math (TF32 off)");
    fprintf(f, "convolutions: %s\n", r->conv_detail);
    if (m->place.conv == MODEL_CONV_AUTO || m->place.conv == MODEL_CONV_PREFER_CUDNN)
        fprintf(f, "conv %s\n", r->conv_choice);
    fprintf(f, "graph: %s\n", r->graph);
    if (r->bf16_acts[0])
        fprintf(f, "activations kept in bf16 (--bf16-acts): %s\n", r->bf16_acts);
    fprintf(f, "net: %s, %d tower(s), %d classes, input 3x%dx%d, batch %d, width_div %d; "
               "%.3f GFLOP per image for a training step\n",
            plan->cfg.net.name, T, plan->cfg.classes, plan->cfg.in_size, plan->cfg.in_size, plan->cfg.batch,
            plan->cfg.width_div, r->flops_per_image / 1e9);
    fprintf(f, "data: %d uint8 batches made once (seed %" PRIu64 "), each step %s\n",
            o->batches, o->seed, data_path_text(m));
    if (m->workers && m->place.cpu)
        fprintf(f, "threads: one per tower, OpenBLAS %d thread(s) a tower\n",
                openblas_get_num_threads());
    else
        fprintf(f, "threads: %s\n", m->workers ? "one per tower" : "one for every tower");
    fprintf(f, "steps: %d warm-up, %d timed (model_train_step)\n", o->warmup, o->steps);
    fprintf(f, "  images/s       %10.1f\n", r->images_per_s);
    fprintf(f, "  ms/step        %10.3f  (median %.3f, min %.3f, max %.3f)\n", r->ms_mean,
            r->ms_median, r->ms_min, r->ms_max);
    fprintf(f, "  GFLOP/s        %10.1f\n", r->gflops);
    if (r->sgemm_gflops > 0) {
        fprintf(f, "  of SGEMM       %9.1f%%  (this machine's %dx%d SGEMM: %.1f GFLOP/s on %d "
                   "thread(s) at once, as the towers run: OpenBLAS %.1f",
                100 * r->gflops / r->sgemm_gflops, SGEMM_PROBE_N, SGEMM_PROBE_N,
                r->sgemm_gflops, r->sgemm_threads, r->sgemm_openblas);
        if (r->sgemm_dnnl > 0) fprintf(f, ", oneDNN %.1f; the faster", r->sgemm_dnnl);
        fprintf(f, ")\n");
    }
    if (r->gemm_share > 0)
        fprintf(f, "  in BLAS/oneDNN %9.1f%%  of the tower threads' time, at %.1f GFLOP/s a "
                   "thread; with nothing else the step would run at %.1f GFLOP/s\n",
                100 * r->gemm_share, r->gemm_gflops, r->gemm_bound_gflops);
    fprintf(f, "  loss           %10.4f -> %.4f%s\n", r->loss_first, r->loss_last,
            r->finite ? "" : "  (NOT FINITE)");
    for (int t = 0; t < T; t++) {
        fprintf(f, "  tower %d memory  arena %.1f MiB", t, m->tw[t].arena_bytes / 1048576.0);
#if BENCH_CUDA
        if (m->tw[t].device >= 0)
            fprintf(f, ", on GPU %d %.1f MiB in all (arena, conv scratch or cuDNN workspace, "
                       "cuBLAS workspace)", m->tw[t].device,
                    tower_cuda_mem_bytes(&m->tw[t]) / 1048576.0);
#endif
        fputc('\n', f);
    }
    print_arena_parts(f, &m->tw[0]);
    fprintf(f, "  batch pool     %10.1f MiB (host)\n", mib(r->pool_host));
    for (int s = 0; s < r->ndev; s++)
        fprintf(f, "  GPU %d memory   %.1f MiB used after the run (%.1f MiB before the model, "
                   "CUDA context included), of %.1f MiB\n",
                r->dev[s], r->gpu_used_after[s] / 1048576.0, r->gpu_used_before[s] / 1048576.0,
                r->gpu_total[s] / 1048576.0);
    fprintf(f, "  peak RSS       %10.1f MiB (host)\n", r->rss_peak / 1048576.0);
    if (!p || !p->steps) return;

    fprintf(f, "per layer, ms per step (%d profiled step(s), %s):\n", p->steps,
            p->gpu ? "CUDA events on each tower's stream" : "wall clock");
    fprintf(f, "  %-6s", "layer");
    for (int t = 0; t < T; t++) fprintf(f, "   fwd t%d", t);
    for (int t = 0; t < T; t++) fprintf(f, "   bwd t%d", t);
    fprintf(f, "  xchg fwd  xchg bwd  fwd GF/s  bwd GF/s\n");
    double sum = 0;
    for (int l = 0; l < plan->n_layers; l++) {
        double fw = 0, bw = 0;
        fprintf(f, "  %-6s", tower_plan_row(plan, l)->name);
        for (int t = 0; t < T; t++) {
            fprintf(f, " %8.3f", per_step(p, t, TRAIN_BENCH_FWD + l));
            fw += per_step(p, t, TRAIN_BENCH_FWD + l);
        }
        for (int t = 0; t < T; t++) {
            fprintf(f, " %8.3f", per_step(p, t, TRAIN_BENCH_BWD + l));
            bw += per_step(p, t, TRAIN_BENCH_BWD + l);
        }
        /* exchanges happen at the inputs of the layers that read both towers */
        int x = tower_plan_row(plan, l)->reads == TOWER_READS_ALL && T == 2;
        double xf = x ? per_step(p, 0, TRAIN_BENCH_XCHG_FWD + l) : 0;
        double xb = x ? per_step(p, 0, TRAIN_BENCH_XCHG_BWD + l) : 0;
        if (x) fprintf(f, "  %8.3f  %8.3f", xf, xb);
        else fprintf(f, "  %8s  %8s", "-", "-");
        fprintf(f, "  %8.1f  %8.1f\n", layer_flops(plan, l) / (fw * 1e6),
                2 * layer_flops(plan, l) / (bw * 1e6));
        sum += fw + bw + xf + xb;
    }
    static const char *other[] = {"data", "zero grads", "loss fwd", "loss bwd", "sgd"};
    for (int r0 = 0; r0 < 5; r0++) {
        fprintf(f, "  %-10s", other[r0]);
        for (int t = 0; t < T; t++) {
            fprintf(f, " t%d %8.3f", t, per_step(p, t, r0));
            sum += per_step(p, t, r0);
        }
        fputc('\n', f);
    }
    double xl = per_step(p, 0, TRAIN_BENCH_XCHG_LOGITS);
    sum += xl;
    fprintf(f, "  %-10s    %8.3f\n", "logits xchg", xl);
    fprintf(f, "  sum of the parts %.3f ms; profiled step %.3f ms wall%s\n", sum,
            p->step_ms / p->steps,
            T == 2 && (p->gpu || m->workers)
                ? " (the towers run at the same time: parts can sum past it)"
                : "");
}

/* The per-layer profile, or null when none was taken. */
static json_t *profile_json(const train_bench_prof *p, const tower_plan *plan, int T)
{
    if (!p || !p->steps) return json_null();
    json_t *j = json_pack("{s:i, s:s, s:o}", "steps", p->steps, "timer",
                          p->gpu ? "cuda events" : "wall clock", "step_ms",
                          jnum(p->step_ms / p->steps));
    static const char *names[] = {"data_ms", "zero_grads_ms", "loss_fwd_ms", "loss_bwd_ms",
                                  "sgd_ms"};
    for (int r0 = 0; r0 < 5; r0++) {
        double v[2];
        for (int t = 0; t < T; t++) v[t] = per_step(p, t, r0);
        json_object_set_new(j, names[r0],
                            jnum_arr(v, p->gpu ? T : (r0 == TRAIN_BENCH_DATA ? 1 : T)));
    }
    json_object_set_new(j, "logits_xchg_ms",
                        jnum(per_step(p, 0, TRAIN_BENCH_XCHG_LOGITS)));
    json_t *layers = json_array();
    for (int l = 0; l < plan->n_layers; l++) {
        double fw[2], bw[2], fs = 0, bs = 0;
        for (int t = 0; t < T; t++) {
            fw[t] = per_step(p, t, TRAIN_BENCH_FWD + l);
            bw[t] = per_step(p, t, TRAIN_BENCH_BWD + l);
            fs += fw[t];
            bs += bw[t];
        }
        int x = tower_plan_row(plan, l)->reads == TOWER_READS_ALL && T == 2;
        json_array_append_new(layers, json_pack(
            "{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "name", tower_plan_row(plan, l)->name,
            "fwd_ms", jnum_arr(fw, T), "bwd_ms", jnum_arr(bw, T), "fwd_ms_total", jnum(fs),
            "bwd_ms_total", jnum(bs),
            "xchg_fwd_ms", jnum(x ? per_step(p, 0, TRAIN_BENCH_XCHG_FWD + l) : NAN),
            "xchg_bwd_ms", jnum(x && l > 0 ? per_step(p, 0, TRAIN_BENCH_XCHG_BWD + l) : NAN),
            "fwd_gflops_per_s", jnum(layer_flops(plan, l) / (fs * 1e6)),
            "bwd_gflops_per_s", jnum(2 * layer_flops(plan, l) / (bs * 1e6))));
    }
    json_object_set_new(j, "layers", layers);
    return j;
}

static json_t *memory_json(const model *m, const bench_result *r, const bench_data *d)
{
    int T = m->towers;
    double arena[2] = {0, 0}, dev_b[2] = {0, 0};
    for (int t = 0; t < T; t++) {
        arena[t] = (double)m->tw[t].arena_bytes;
#if BENCH_CUDA
        if (m->tw[t].device >= 0) dev_b[t] = (double)tower_cuda_mem_bytes(&m->tw[t]);
#endif
    }
    json_t *j = json_pack("{s:o}", "arena_bytes", jnum_arr(arena, T));
    if (!m->place.cpu) {
        double before[2], after[2], total[2], devs[2];
        for (int s = 0; s < r->ndev; s++) {
            before[s] = (double)r->gpu_used_before[s];
            after[s] = (double)r->gpu_used_after[s];
            total[s] = (double)r->gpu_total[s];
            devs[s] = r->dev[s];
        }
        json_object_set_new(j, "tower_device_bytes", jnum_arr(dev_b, T));
        json_object_set_new(j, "gpu_devices", jnum_arr(devs, r->ndev));
        json_object_set_new(j, "gpu_used_before_bytes", jnum_arr(before, r->ndev));
        json_object_set_new(j, "gpu_used_after_bytes", jnum_arr(after, r->ndev));
        json_object_set_new(j, "gpu_total_bytes", jnum_arr(total, r->ndev));
        json_object_set_new(j, "batch_buffers_device_bytes", jnum((double)d->device_bytes));
    }
    tower_mem mm;
    tower_memory(&m->tw[0], &mm);
    double kept[TOWER_MAX_LAYERS], regions[3] = {(double)mm.grad_part[0],
                                                 (double)mm.grad_part[1],
                                                 (double)mm.grad_part[2]};
    for (int l = 0; l < m->plan.n_layers; l++) kept[l] = (double)mm.kept[l];
    json_object_set_new(
        j, "arena_parts",
        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "params", jnum((double)mm.params),
                  "input", jnum((double)mm.input), "kept", jnum_arr(kept, m->plan.n_layers),
                  "grads", jnum((double)mm.grads), "grad_regions", jnum_arr(regions, 3),
                  "loss", jnum((double)mm.loss), "scratch", jnum((double)mm.scratch), "lean",
                  m->tw[0].ops->lean));
    json_object_set_new(j, "batch_pool_host_bytes", jnum((double)d->host_bytes));
    json_object_set_new(j, "rss_peak_bytes", jnum((double)r->rss_peak));
    return j;
}

/* --json FILE: every number of the run, written crash-safe (base_write_file). */
static int write_json(const char *path, const bench_opts *o, const model *m,
                      const bench_result *r, const train_bench_prof *p, const char *place,
                      const bench_data *d)
{
    const tower_plan *plan = &m->plan;
    int T = m->towers;
    json_t *layers = json_array();
    for (int l = 0; l < plan->n_layers; l++) {
        const tower_layer_shape *L = &plan->layer[l];
        json_array_append_new(layers, json_pack(
            "{s:s, s:i, s:i, s:i, s:o, s:o}", "name", tower_plan_row(plan, l)->name, "out_ch",
            L->out_ch, "out_h", L->out_h, "final_h", L->final_h, "params_per_tower",
            jnum((double)(L->w_count + L->b_count)), "macs_per_tower", jnum(L->macs)));
    }
    json_t *j = json_pack(
        "{s:s, s:i, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:o, s:s}, s:o, s:s, "
        "s:o, "
        "s:i, s:i, s:s, s:b, s:s, s:o, s:s, s:{s:o, s:o}, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
        "s:o, s:b}",
        "tool", "twotower bench", "format", 1,
        "config", "towers", T, "classes", plan->cfg.classes, "batch", plan->cfg.batch, "size",
        plan->cfg.in_size, "width_div", plan->cfg.width_div, "warmup", o->warmup, "steps",
        o->steps, "profile_steps", o->profile_steps, "batches", o->batches, "seed",
        (json_int_t)o->seed, "lr", jnum(o->lr), "net", plan->cfg.net.name,
        "placement", train_json_text(place), "backend", m->place.cpu ? "cpu" : "cuda",
        "device", train_json_text(r->device),
        "blas_threads", m->place.cpu ? openblas_get_num_threads() : 0,
        "tower_threads", m->workers ? T : 0,
        "precision", tower_precision_name(m->place.precision), "tf32",
        m->place.precision == TOWER_PRECISION_TF32, "conv",
        model_conv_mode_name(m),
        "conv_detail", train_json_text(r->conv_detail), "data_path", data_path_text(m),
        "plan", "params_per_tower", jnum((double)plan->n_params), "layers", layers,
        "flops_per_image", jnum(r->flops_per_image), "images_per_s", jnum(r->images_per_s),
        "gflops_per_s", jnum(r->gflops), "ms_per_step", jnum(r->ms_mean),
        "ms_per_step_median", jnum(r->ms_median), "ms_per_step_min", jnum(r->ms_min),
        "ms_per_step_max", jnum(r->ms_max), "loss_first", jnum(r->loss_first),
        "loss_last", jnum(r->loss_last), "loss_finite", r->finite);
    if (j) {
        json_object_set_new(j, "conv_choice", json_string(r->conv_choice));
        json_object_set_new(j, "graph", json_string(r->graph));
        json_object_set_new(j, "bf16_acts", json_boolean(m->place.bf16_acts));
        json_object_set_new(j, "bf16_acts_layers", json_string(r->bf16_acts));
        if (m->place.cpu) { /* the machine's SGEMM and the steps' BLAS calls */
            json_object_set_new(j, "sgemm_gflops_per_s", jnum(r->sgemm_gflops));
            json_object_set_new(j, "sgemm_openblas_gflops_per_s", jnum(r->sgemm_openblas));
            json_object_set_new(j, "sgemm_onednn_gflops_per_s", jnum(r->sgemm_dnnl));
            json_object_set_new(j, "sgemm_threads", json_integer(r->sgemm_threads));
            json_object_set_new(j, "blas_share", jnum(r->gemm_share));
            json_object_set_new(j, "blas_gflops_per_thread", jnum(r->gemm_gflops));
            json_object_set_new(j, "blas_bound_gflops_per_s", jnum(r->gemm_bound_gflops));
        }
        json_object_set_new(j, "memory", memory_json(m, r, d));
        json_object_set_new(j, "profile", profile_json(p, plan, T));
    }
    char *text = j ? json_dumps(j, BENCH_JSON_FLAGS) : NULL;
    json_decref(j);
    char err[4200 + 256];
    int rc = -1;
    if (!text) {
        snprintf(err, sizeof err, "out of memory");
    } else {
        size_t n = strlen(text);
        text[n] = '\n';
        rc = base_write_file(path, "--json", text, n + 1, err, sizeof err);
        free(text);
    }
    if (rc) fprintf(stderr, "twotower bench: %s\n", err);
    return rc;
}

/* ---- the run -------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* GPU memory in use on each device that holds a tower (total - free: every process's
 * allocations and the CUDA context included, as nvidia-smi shows it). */
static void gpu_used(const model_placement *pl, int towers, bench_result *r, size_t *used)
{
    r->ndev = 0;
    if (pl->cpu) return;
    for (int t = 0; t < towers; t++) {
        int dev = pl->ngpus == 2 ? pl->gpus[t] : pl->gpus[0];
        if (r->ndev && r->dev[0] == dev) continue;
        r->dev[r->ndev++] = dev;
    }
#if BENCH_CUDA
    for (int s = 0; s < r->ndev; s++) {
        size_t fr = 0, tot = 0;
        char err[256];
        if (tower_cuda_device_info(r->dev[s], NULL, 0, &fr, &tot, err, sizeof err) == 0) {
            used[s] = tot - fr;
            r->gpu_total[s] = tot;
        }
    }
#else
    (void)used;
#endif
}

static int bench_run(const bench_opts *o)
{
    char err[512] = "", place[96];
    bench_result r;
    memset(&r, 0, sizeof r);
    train_placement_describe(&o->place, place, sizeof place);
    if (o->place.cpu) {
        char cpu[200];
        cpu_model(cpu, sizeof cpu);
        snprintf(r.device, sizeof r.device, "%s, %ld cores online, OpenBLAS %d thread(s) (%s kernels)",
                 cpu, sysconf(_SC_NPROCESSORS_ONLN), openblas_get_num_threads(),
                 openblas_get_corename());
    } else {
#if BENCH_CUDA
        size_t fr, tot;
        char name[128] = "?";
        tower_cuda_device_info(o->place.gpus[0], name, sizeof name, &fr, &tot, err, sizeof err);
        snprintf(r.device, sizeof r.device, "%s", name);
        if (o->place.ngpus == 2 &&
            tower_cuda_device_info(o->place.gpus[1], name, sizeof name, &fr, &tot, err,
                                   sizeof err) == 0)
            snprintf(r.device + strlen(r.device), sizeof r.device - strlen(r.device),
                     " + %s", name);
#endif
    }
    gpu_used(&o->place, o->cfg.towers, &r, r.gpu_used_before);

    model m;
    if (model_init(&m, &o->cfg, &o->place, o->seed, err, sizeof err)) {
        fprintf(stderr, "twotower bench: %s\n", err);
        return 1;
    }
    tower_conv_describe(r.conv_detail, sizeof r.conv_detail, &m.plan);
    model_conv_describe(&m, r.conv_choice, sizeof r.conv_choice);
#if BENCH_CUDA
    if (!o->place.cpu) tower_cuda_describe_conv(&m.tw[0], r.conv_detail, sizeof r.conv_detail);
#endif
    bench_data d;
    train_bench_prof p;
    memset(&p, 0, sizeof p);
    double *step_ms = malloc(sizeof(double) * (size_t)o->steps);
    int rc = 1, k = 0, B = o->cfg.batch;
    real lr = (real)o->lr;
    double t0, total_s, loss = 0;
    if (!step_ms) {
        fprintf(stderr, "twotower bench: out of host memory\n");
        model_free(&m);
        return 1;
    }
    if (bench_data_init(&d, &m, o->batches, o->seed, err, sizeof err)) {
        fprintf(stderr, "twotower bench: %s\n", err);
        free(step_ms);
        model_free(&m);
        return 1;
    }
    if (train_bench_prof_init(&p, &m, err, sizeof err)) goto fail;

    for (int s = 0; s < o->warmup; s++, k = (k + 1) % o->batches) {
        if (bench_data_put(&d, &m, k, err, sizeof err)) goto fail;
        model_train_step(&m, lr);
    }
    if (m.failed) goto failed_step;
    bench_sync(&m);
    double gemm_s, gemm_flops;
    tower_cpu_gemm_counted(&gemm_s, &gemm_flops); /* from 0 */
    tower_cpu_gemm_count(o->place.cpu);
    t0 = base_now();
    for (int s = 0; s < o->steps; s++, k = (k + 1) % o->batches) {
        double ts = base_now();
        if (bench_data_put(&d, &m, k, err, sizeof err)) goto fail;
        /* the step before's loss: this one's is read while the next one runs */
        loss = model_train_step_deferred(&m, lr);
        if (s == 1) r.loss_first = loss;
        step_ms[s] = 1e3 * (base_now() - ts);
    }
    if (m.failed) goto failed_step;
    bench_sync(&m);
    total_s = base_now() - t0;
    tower_cpu_gemm_count(0);
    tower_cpu_gemm_counted(&gemm_s, &gemm_flops);
    loss = model_step_loss(&m);
    if (m.failed) goto failed_step;
    if (o->steps == 1) r.loss_first = loss;
    r.loss_last = loss;
    model_graph_describe(&m, r.graph, sizeof r.graph);
    model_bf16_acts_describe(&m, r.bf16_acts, sizeof r.bf16_acts);
    r.finite = isfinite(r.loss_first) && isfinite(r.loss_last);
    for (int s = 0; s < o->profile_steps; s++, k = (k + 1) % o->batches) {
        if (bench_data_put_timed(&d, &m, &p, k, err, sizeof err)) goto fail;
        if (train_bench_prof_step(&p, &m, lr, &loss, err, sizeof err)) goto fail;
        r.finite = r.finite && isfinite(loss);
    }
    gpu_used(&o->place, o->cfg.towers, &r, r.gpu_used_after);
    r.rss_peak = peak_rss_bytes();
    r.pool_host = d.host_bytes;

    r.images_per_s = (double)B * o->steps / total_s;
    r.ms_mean = 1e3 * total_s / o->steps;
    qsort(step_ms, (size_t)o->steps, sizeof *step_ms, cmp_double);
    r.ms_min = step_ms[0];
    r.ms_max = step_ms[o->steps - 1];
    r.ms_median = o->steps % 2 ? step_ms[o->steps / 2]
                               : 0.5 * (step_ms[o->steps / 2 - 1] + step_ms[o->steps / 2]);
    r.flops_per_image = train_bench_train_flops(&m.plan);
    r.gflops = r.flops_per_image * r.images_per_s / 1e9;
    if (o->place.cpu && gemm_s > 0) {
        /* the threads that ran the towers: one each, or one for both (--serial) */
        r.sgemm_threads = m.workers ? o->cfg.towers : 1;
        r.gemm_share = gemm_s / (r.sgemm_threads * total_s);
        r.gemm_gflops = gemm_flops / gemm_s / 1e9;
        r.gemm_bound_gflops = r.gflops / r.gemm_share;
        r.sgemm_openblas = sgemm_machine_gflops(r.sgemm_threads, 0);
        r.sgemm_dnnl = sgemm_machine_gflops(r.sgemm_threads, 1);
        r.sgemm_gflops = r.sgemm_dnnl > r.sgemm_openblas ? r.sgemm_dnnl : r.sgemm_openblas;
    }

    print_table(stdout, o, &m, &r, &p, place);
    rc = 0;
    if (o->json && write_json(o->json, o, &m, &r, &p, place, &d)) rc = 1;
    if (!r.finite) {
        fprintf(stderr, "twotower bench: the loss is not finite (%g -> %g): the steps did not "
                        "train; try a smaller --lr\n", r.loss_first, r.loss_last);
        rc = 1;
    }
    goto done;
failed_step:
    base_errf(err, sizeof err, "the step failed: %s", m.error);
fail:
    fprintf(stderr, "twotower bench: %s\n", err);
    rc = 1;
done:
    train_bench_prof_free(&p);
    bench_data_free(&d);
    free(step_ms);
    model_free(&m);
    return rc;
}

int train_bench_main(int argc, char **argv)
{
    bench_opts o;
    int rc = bench_parse(argc, argv, &o);
    if (rc != BASE_FLAGS_GO) return rc;
    char err[4200 + 256];
    /* before the benchmark runs: never a device, a FIFO or a folder */
    if (o.json && base_check_output(o.json, "--json", NULL, 0, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "twotower bench: %s\n", err);
        return 2;
    }
    return bench_run(&o);
}
