/* model.c: a net of one or two towers (figure 2 for the paper's). Runs every tower
 * layer by layer and exchanges between them where the towers talk: the input of every row
 * that reads all towers (all-gather forward, reduce-scatter backward; conv3, fc6, fc7 and
 * fc8 in the paper's net), and the logits. Two towers run on a worker thread each (as the
 * paper's code ran a host thread per GPU), which the caller's thread hands each phase of a
 * step; or both on the caller's thread (place.serial). Built twice, like src/tower: float,
 * and double for the gradient checks. */
#include "train/model.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's thread count (its cblas.h; the BLAS the towers link) */
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int num_threads);

#if defined(TT_HAVE_CUDA) && !defined(TOWER_F64)
#define MODEL_CUDA 1
#include <cuda_runtime.h>

#include "data/data.h"
#else
#define MODEL_CUDA 0
#endif

static int workers_start(model *m, char *err, size_t errlen);
static void workers_stop(model_workers *w);

static void *tower_stream(model *m, int t)
{
#if MODEL_CUDA
    if (m->tw[t].device >= 0) return tower_cuda_stream(&m->tw[t]);
#endif
    (void)m;
    (void)t;
    return NULL;
}

static void hook_begin(const model *m, int t, int region)
{
    if (m->hooks) m->hooks->begin(m->hooks->ctx, t, region);
}

static void hook_end(const model *m, int t, int region)
{
    if (m->hooks) m->hooks->end(m->hooks->ctx, t, region);
}

/* The delay test's hook (model_placement.debug_delay_us): a busy-wait on the chosen tower's
 * stream (or on `stream`, another of its device's), when that tower is among [lo, hi) and
 * on a GPU. Off: one comparison. */
static void debug_delay_on(model *m, int lo, int hi, void *stream)
{
    if (m->place.debug_delay_us <= 0) return;
#if MODEL_CUDA
    int t = m->place.debug_delay_tower;
    if (t >= lo && t < hi && m->tw[t].device >= 0)
        tower_cuda_spin(&m->tw[t], stream, (unsigned)m->place.debug_delay_us);
#else
    (void)lo;
    (void)hi;
    (void)stream;
#endif
}

static void debug_delay(model *m, int lo, int hi) { debug_delay_on(m, lo, hi, NULL); }

/* An integer environment variable within [lo, hi]: 0 and *v untouched when unset, 1 when
 * set and valid, -1 with err otherwise. */
static int env_int(const char *name, long lo, long hi, int *v, char *err, size_t errlen)
{
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end = NULL;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) {
        snprintf(err, errlen, "%s='%s': not an integer in %ld..%ld", name, s, lo, hi);
        return -1;
    }
    *v = (int)x;
    return 1;
}

/* The delay hook from the environment when the placement leaves it off; checked on every
 * backend, used by GPU towers only. */
static int debug_delay_from_env(model_placement *p, int towers, char *err, size_t errlen)
{
    if (p->debug_delay_us == 0 &&
        (env_int("TWOTOWER_DEBUG_DELAY_US", 0, 1000000, &p->debug_delay_us, err, errlen) < 0 ||
         env_int("TWOTOWER_DEBUG_DELAY_TOWER", 0, 1, &p->debug_delay_tower, err, errlen) < 0))
        return -1;
    if (p->debug_delay_us < 0 || p->debug_delay_us > 1000000 || p->debug_delay_tower < 0 ||
        p->debug_delay_tower >= towers) {
        snprintf(err, errlen, "debug delay of %d us on tower %d: the delay must be 0..1000000 "
                              "us, the tower one of the net's %d", p->debug_delay_us,
                 p->debug_delay_tower, towers);
        return -1;
    }
    return 0;
}

#if MODEL_CUDA
/* --conv auto: every conv layer timed on each path on tower 0's device, one choice per
 * layer (tower_conv_choose) given to every tower, so that both towers, on one GPU or on
 * two, run the same numerics. */
static int conv_auto(model *m, char *err, size_t errlen)
{
    if (tower_cuda_conv_measure(&m->tw[0], MODEL_CONV_AUTO_WARMUP, MODEL_CONV_AUTO_REPS,
                                m->conv_timing, m->conv_note, sizeof m->conv_note, err,
                                errlen))
        return -1;
    tower_conv_choose(m->conv_timing, m->plan.n_layers, m->conv_path);
    for (int t = 0; t < m->towers; t++)
        if (tower_cuda_configure_paths(&m->tw[t], m->place.precision, m->conv_path, err,
                                       errlen))
            return -1;
    return 0;
}
#endif

static size_t append_ms(char *buf, size_t n, size_t used, const char *fmt, double v)
{
    if (used >= n) return used;
    int w = v >= 0 ? snprintf(buf + used, n - used, fmt, v) : snprintf(buf + used, n - used, "-");
    return used + (w > 0 ? (size_t)w : 0);
}

/* The conv rows of m's plan; *cudnn gets those on cuDNN. */
static int conv_rows(const model *m, int *cudnn)
{
    int convs = 0;
    *cudnn = 0;
    for (int l = 0; l < m->plan.n_layers; l++)
        if (tower_plan_row(&m->plan, l)->kind == TOWER_CONV) {
            convs++;
            *cudnn += m->conv_path[l] == TOWER_CONV_CUDNN;
        }
    return convs;
}

const char *model_conv_mode_name(const model *m)
{
    if (m->place.conv == MODEL_CONV_AUTO) return "auto";
    if (m->place.conv != MODEL_CONV_PREFER_CUDNN) return tower_conv_path_name(m->place.conv);
    int cudnn, convs = conv_rows(m, &cudnn);
    return cudnn && cudnn < convs ? "mixed" : cudnn ? "cudnn" : "gemm";
}

void model_conv_describe(const model *m, char *buf, size_t n)
{
    if (!n) return;
    if (m->place.cpu) { /* "cpu": im2col + OpenBLAS; "cpu onednn": with conv_dnnl.c's passes,
                         * then which path runs each layer's passes on this CPU */
        char paths[1024];
        tower_conv_paths(paths, sizeof paths, &m->plan);
        snprintf(buf, n, "%s (%s)",
                 tower_conv_dnnl_built() && !tower_conv_dnnl_off() ? "cpu onednn" : "cpu", paths);
        return;
    }
    if (m->place.conv == MODEL_CONV_PREFER_CUDNN) { /* the tf32 and bf16 default */
        int on, convs = conv_rows(m, &on);
        const char *prec = tower_precision_name(m->place.precision);
        size_t used;
        if (!convs) {
            snprintf(buf, n, "no conv layer");
            return;
        }
        if (on == convs) {
            used = (size_t)snprintf(buf, n, "cudnn (the %s default)", prec);
        } else {
            used = (size_t)snprintf(buf, n, "%s (the %s default, cudnn where it can):",
                                    on ? "mixed" : "gemm", prec);
            for (int l = 0; l < m->plan.n_layers && used < n; l++)
                if (tower_plan_row(&m->plan, l)->kind == TOWER_CONV)
                    used += (size_t)snprintf(buf + used, n - used, " %s %s",
                                             tower_plan_row(&m->plan, l)->name,
                                             tower_conv_path_name(m->conv_path[l]));
        }
        if (m->conv_note[0] && used < n) snprintf(buf + used, n - used, "; %s", m->conv_note);
        return;
    }
    if (m->place.conv != MODEL_CONV_AUTO) {
        snprintf(buf, n, "%s", tower_conv_path_name(m->place.conv));
        return;
    }
    size_t used = (size_t)snprintf(buf, n, "auto:");
    int first = 1;
    for (int l = 0; l < m->plan.n_layers && used < n; l++) {
        if (tower_plan_row(&m->plan, l)->kind != TOWER_CONV) continue;
        const tower_conv_timing *T = &m->conv_timing[l];
        used += (size_t)snprintf(buf + used, n - used, "%s %s %s (gemm ", first ? "" : ",",
                                 tower_plan_row(&m->plan, l)->name,
                                 tower_conv_path_name(m->conv_path[l]));
        first = 0;
        used = append_ms(buf, n, used, "%.2f", T->fwd_ms[TOWER_CONV_GEMM]);
        used = append_ms(buf, n, used, " + %.2f", T->bwd_ms[TOWER_CONV_GEMM]);
        if (used < n) used += (size_t)snprintf(buf + used, n - used, " ms, cudnn ");
        used = append_ms(buf, n, used, "%.2f", T->fwd_ms[TOWER_CONV_CUDNN]);
        if (T->fwd_ms[TOWER_CONV_CUDNN] >= 0)
            used = append_ms(buf, n, used, " + %.2f ms", T->bwd_ms[TOWER_CONV_CUDNN]);
        if (used < n) used += (size_t)snprintf(buf + used, n - used, ")");
    }
    if (m->conv_note[0] && used < n) snprintf(buf + used, n - used, "; %s", m->conv_note);
}

void model_bf16_acts_describe(const model *m, char *buf, size_t n)
{
    if (!n) return;
    buf[0] = 0;
    if (m->place.cpu || !m->place.bf16_acts) return;
    int rows = 0;
#if MODEL_CUDA
    rows = tower_cuda_bf16_acts_rows(&m->tw[0]);
#endif
    size_t used = 0;
    for (int l = 0; l < m->plan.n_layers && used < n; l++)
        if (rows & (1 << l))
            used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "",
                                     tower_plan_row(&m->plan, l)->name);
    if (!rows) snprintf(buf, n, "none (no conv layer on cuDNN with its LRN and max-pool fused)");
}

int model_init(model *m, const tower_config *cfg, const model_placement *place, uint64_t seed,
               char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (tower_plan_make(&m->plan, cfg, err, errlen)) return -1;
    m->towers = cfg->towers;
    m->place = *place;
    if (debug_delay_from_env(&m->place, m->towers, err, errlen)) return -1;
    m->seed = seed;
    m->optim = m->plan.cfg.net.optim;
    int devices[2] = {0, 0};
    comm_kind kind = COMM_HOST;
    if (!place->cpu) {
#if MODEL_CUDA
        for (int t = 0; t < m->towers; t++)
            devices[t] = place->ngpus == 2 ? place->gpus[t] : place->gpus[0];
        kind = (place->ngpus == 2 && m->towers == 2) ? COMM_NCCL : COMM_SAME_DEVICE;
#else
        snprintf(err, errlen, "this build has no CUDA backend: use --cpu");
        return -1;
#endif
    }
    if (place->cpu) tower_conv_dnnl(!place->cpu_conv); /* before any tower's first call */
    /* each conv row's path at init: cudnn's, prefer's (found on tower 0 once it is made,
     * before any tower configures), and GEMM for gemm and for auto until its timing */
    int paths[TOWER_MAX_LAYERS];
    for (int l = 0; l < TOWER_MAX_LAYERS; l++)
        paths[l] = !place->cpu && place->conv == TOWER_CONV_CUDNN ? TOWER_CONV_CUDNN
                                                                  : TOWER_CONV_GEMM;
    for (int t = 0; t < m->towers; t++) {
        int rc;
#if MODEL_CUDA
        if (!place->cpu)
        {
            rc = tower_init_cuda(&m->tw[t], &m->plan, t, devices[t], seed, err, errlen);
            if (!rc && t == 0 && place->conv == MODEL_CONV_PREFER_CUDNN &&
                tower_cuda_cudnn_rows(&m->tw[0], place->precision, paths, m->conv_note,
                                      sizeof m->conv_note, err, errlen)) {
                tower_free(&m->tw[t]);
                rc = -1;
            }
            int any_cudnn = 0;
            for (int l = 0; l < m->plan.n_layers; l++) any_cudnn |= paths[l] == TOWER_CONV_CUDNN;
            if (!rc && (place->precision || any_cudnn) &&
                tower_cuda_configure_paths(&m->tw[t], place->precision, paths, err, errlen)) {
                tower_free(&m->tw[t]);
                rc = -1;
            }
            if (!rc && place->test_grad_zeroing) tower_cuda_set_grad_zeroing(&m->tw[t], 1);
            if (!rc && place->test_no_lrn_handover) tower_cuda_set_lrn_handover(&m->tw[t], 0);
            if (!rc && place->test_no_input_handover) tower_cuda_set_input_handover(&m->tw[t], 0);
            /* the model writes conv1's bf16 input with x (model_set_batch, _u8), where it
             * reads one (tower_cuda_input_copy) */
            if (!rc && !place->test_no_input_handover) tower_cuda_set_input_given(&m->tw[t], 1);
            if (!rc && place->bf16_acts &&
                tower_cuda_set_bf16_acts(&m->tw[t], 1, err, errlen)) {
                tower_free(&m->tw[t]);
                rc = -1;
            }
        } else
#endif
            rc = tower_init(&m->tw[t], &m->plan, t, seed, err, errlen);
        if (rc) {
            for (int u = 0; u < t; u++) tower_free(&m->tw[u]);
            return -1;
        }
    }
    for (int l = 0; l < m->plan.n_layers; l++) {
        int is_conv = tower_plan_row(&m->plan, l)->kind == TOWER_CONV;
        m->conv_path[l] = !place->cpu && is_conv ? paths[l] : TOWER_CONV_GEMM;
        for (int k = 0; k < TOWER_CONV_PATHS; k++)
            m->conv_timing[l].fwd_ms[k] = m->conv_timing[l].bwd_ms[k] = -1;
    }
#if MODEL_CUDA
    if (!place->cpu && place->conv == MODEL_CONV_AUTO && conv_auto(m, err, errlen)) {
        for (int t = 0; t < m->towers; t++) tower_free(&m->tw[t]);
        return -1;
    }
#endif
    for (int t = 0; t < m->towers; t++) m->in_own_labels[t] = m->tw[t].labels;
    m->comm = comm_init(kind, sizeof(real) == 8 ? COMM_F64 : COMM_F32, m->towers, devices, err,
                        errlen);
    if (!m->comm) {
        for (int t = 0; t < m->towers; t++) tower_free(&m->tw[t]);
        return -1;
    }
    if (!place->serial && m->towers == 2 && workers_start(m, err, errlen)) {
        model_free(m);
        return -1;
    }
    return 0;
}

void model_free(model *m)
{
    workers_stop(m->workers); /* idle between phases: they only have to quit */
    m->workers = NULL;
#if MODEL_CUDA
    if (m->towers > 0 && m->tw[0].device >= 0) {
        cudaSetDevice(m->tw[0].device);
        if (m->graph_exec) cudaGraphExecDestroy((cudaGraphExec_t)m->graph_exec);
        m->graph_exec = NULL;
        for (int i = 0; i < 4; i++)
            if (m->graph_ev[i]) cudaEventDestroy((cudaEvent_t)m->graph_ev[i]);
        memset(m->graph_ev, 0, sizeof m->graph_ev);
    }
    for (int t = 0; t < m->towers; t++) {
        if (m->tw[t].device < 0) continue;
        cudaSetDevice(m->tw[t].device);
        /* uploads may still be in flight on an error path: let them end first */
        if (m->in_copy[t]) cudaStreamSynchronize((cudaStream_t)m->in_copy[t]);
        cudaStreamSynchronize((cudaStream_t)tower_cuda_stream(&m->tw[t]));
        cudaFree(m->in_crops[t]);
        cudaFree(m->in_params[t]);
        cudaFree(m->in_mean[t]);
        m->in_crops[t] = m->in_params[t] = m->in_mean[t] = NULL;
        if (m->in_ready[t]) cudaEventDestroy((cudaEvent_t)m->in_ready[t]);
        m->in_ready[t] = NULL;
        if (m->in_uploaded[t]) cudaEventDestroy((cudaEvent_t)m->in_uploaded[t]);
        m->in_uploaded[t] = NULL;
        if (m->in_copy[t]) cudaStreamDestroy((cudaStream_t)m->in_copy[t]);
        m->in_copy[t] = NULL;
    }
    if (m->in_free) {
        cudaSetDevice(m->tw[1].device);
        cudaEventDestroy((cudaEvent_t)m->in_free);
        m->in_free = NULL;
    }
#endif
    for (int t = 0; t < m->towers; t++) tower_free(&m->tw[t]);
    comm_free(m->comm);
    m->comm = NULL;
}

/* Copies bytes into tower memory (host or device). */
static void put(model *m, int t, void *dst, const void *src, size_t bytes)
{
#if MODEL_CUDA
    if (m->tw[t].device >= 0) {
        if (tower_cuda_copy(&m->tw[t], dst, src, bytes, 0)) exit(3); /* it said why */
        return;
    }
#endif
    (void)m;
    (void)t;
    memcpy(dst, src, bytes);
}

static void get(const model *m, int t, void *dst, const void *src, size_t bytes)
{
#if MODEL_CUDA
    if (m->tw[t].device >= 0) {
        if (tower_cuda_copy((tower *)&m->tw[t], dst, src, bytes, 1)) exit(3);
        return;
    }
#endif
    (void)m;
    (void)t;
    memcpy(dst, src, bytes);
}

int model_input_towers(const model *m)
{
    int one = m->towers == 2 && m->tw[0].device >= 0 && m->tw[1].device == m->tw[0].device &&
              !m->place.test_input_per_tower;
    return one ? 1 : m->towers;
}

#if MODEL_CUDA
/* Both towers on one GPU read one input (model_set_batch_u8): tower 0 uploads and augments
 * it, tower 1's conv1 and loss read tower 0's x and labels. Fixed for the model's life. */
static int input_shared(const model *m) { return m->towers == 2 && model_input_towers(m) == 1; }
#endif

/* Tower 1 reads its own x and labels again, once its stream is done with tower 0's. */
static void input_unshare(model *m)
{
    if (!m->in_shared) return;
#if MODEL_CUDA
    cudaError_t e = cudaSetDevice(m->tw[1].device);
    if (e == cudaSuccess) e = cudaStreamSynchronize((cudaStream_t)tower_cuda_stream(&m->tw[1]));
    if (e != cudaSuccess) {
        fprintf(stderr, "twotower: tower 1: waiting for its reads of the shared input: %s\n",
                cudaGetErrorString(e));
        exit(3);
    }
#endif
    m->tw[1].acts[0].in = m->tw[1].x;
    m->tw[1].labels = m->in_own_labels[1];
#if MODEL_CUDA
    tower_cuda_share_input(&m->tw[1], NULL); /* its own bf16 input copy again */
#endif
    m->in_shared = 0;
}

void model_set_batch(model *m, const float *x, const int32_t *labels)
{
    const tower_config *c = &m->plan.cfg;
    size_t n = (size_t)c->batch * c->in_ch * c->in_size * c->in_size;
    input_unshare(m);
    for (int t = 0; t < m->towers; t++) {
        tower *tw = &m->tw[t];
        if (sizeof(real) == sizeof(float)) {
            put(m, t, tw->x, x, n * sizeof(float));
        } else { /* the double build (tests): widen on the host */
            for (size_t i = 0; i < n; i++) tw->x[i] = (real)x[i];
        }
#if MODEL_CUDA
        /* conv1's bf16 input, where it reads one: written with x (tower_cuda_set_input_given),
         * here as the cast conv1 would make, on the tower's stream after the upload */
        uint16_t *x16 = tw->device >= 0 ? tower_cuda_input_copy(tw) : NULL;
        if (x16) {
            tower_cast_bf16_cuda(x16, (const float *)tw->x, n, tower_cuda_stream(tw));
            char why[640]; /* a launch failure, reported here as put's are */
            if (tower_fault_take(why, sizeof why)) {
                fprintf(stderr, "twotower: tower %d: conv1's bf16 input: %s\n", t, why);
                exit(3);
            }
        }
#endif
        put(m, t, tw->labels, labels, sizeof(int32_t) * (size_t)c->batch);
    }
}

#if MODEL_CUDA
static int cuda_fail(cudaError_t e, const char *what, int t, char *err, size_t errlen)
{
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "%s for tower %d: %s: %s%s", what, t, cudaGetErrorName(e),
             cudaGetErrorString(e),
             tower_cuda_error_sticky((int)e)
                 ? "; the device's context is lost (a sticky error, possibly from a kernel "
                   "of an earlier step)"
                 : "");
    return -1;
}

/* A device error the coordinator met between steps (an upload, a wait for one) fails the
 * model as a tower's would, so the trainer stops with exit code 3. */
static int input_failed(model *m, const char *err)
{
    if (!m->failed) {
        m->failed = 1;
        snprintf(m->error, sizeof m->error, "%s", err);
    }
    return -1;
}

/* Tower t's staging on its device (the first call: start-up, not a training step): the
 * crops, parameters and mean image buffers, the mean uploaded, and the events. */
static int input_alloc(model *m, int t, int shared, const float *mean, char *err,
                       size_t errlen)
{
    const tower_config *c = &m->plan.cfg;
    size_t B = (size_t)c->batch, crop_bytes = B * c->in_size * c->in_size * 3;
    size_t par_bytes = B * sizeof(data_aug_params);
    size_t mean_bytes = sizeof(float) * DATA_SIZE * DATA_SIZE * 3;
    cudaStream_t st = (cudaStream_t)tower_cuda_stream(&m->tw[t]);
    void *dc = NULL, *dp = NULL, *dm = NULL;
    cudaEvent_t ready = NULL, free_ev = NULL, uploaded = NULL;
    cudaStream_t copy = NULL;
    if (cuda_fail(cudaMalloc(&dc, crop_bytes), "cudaMalloc(crops)", t, err, errlen) ||
        cuda_fail(cudaMalloc(&dp, par_bytes), "cudaMalloc(params)", t, err, errlen) ||
        cuda_fail(cudaMalloc(&dm, mean_bytes), "cudaMalloc(mean)", t, err, errlen) ||
        cuda_fail(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming),
                  "cudaEventCreate(input ready)", t, err, errlen) ||
        cuda_fail(cudaEventCreateWithFlags(&uploaded, cudaEventDisableTiming),
                  "cudaEventCreate(input uploaded)", t, err, errlen) ||
        cuda_fail(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking),
                  "cudaStreamCreate(the input's copy stream)", t, err, errlen) ||
        (shared && cuda_fail(cudaEventCreateWithFlags(&free_ev, cudaEventDisableTiming),
                             "cudaEventCreate(input free)", t, err, errlen)) ||
        cuda_fail(cudaMemcpyAsync(dm, mean, mean_bytes, cudaMemcpyHostToDevice, st),
                  "upload of the mean image", t, err, errlen)) {
        cudaStreamSynchronize(st);
        cudaFree(dc);
        cudaFree(dp);
        cudaFree(dm);
        if (ready) cudaEventDestroy(ready);
        if (free_ev) cudaEventDestroy(free_ev);
        if (uploaded) cudaEventDestroy(uploaded);
        if (copy) cudaStreamDestroy(copy);
        return -1;
    }
    /* all or none: in_crops doubles as the "allocated" flag */
    m->in_params[t] = dp;
    m->in_mean[t] = dm;
    m->in_ready[t] = ready;
    m->in_uploaded[t] = uploaded;
    m->in_copy[t] = copy;
    if (shared) m->in_free = free_ev;
    m->in_crops[t] = dc;
    return 0;
}
#endif

int model_set_batch_u8(model *m, const uint8_t *crops, const void *params,
                       const int32_t *labels, const float *mean, char *err, size_t errlen)
{
#if MODEL_CUDA
    const tower_config *c = &m->plan.cfg;
    size_t B = (size_t)c->batch, crop_bytes = B * c->in_size * c->in_size * 3;
    size_t par_bytes = B * sizeof(data_aug_params);
    if (c->in_ch != 3) {
        snprintf(err, errlen, "model_set_batch_u8: the net takes %d input channels; the "
                              "uint8 crops have 3", c->in_ch);
        return -1;
    }
    if (m->towers > 0 && m->tw[0].device >= 0) {
        if (m->failed) {
            snprintf(err, errlen, "the model failed: %s", m->error);
            return -1;
        }
        int shared = input_shared(m), drop = m->place.test_drop_event;
        cudaStream_t st1 = shared ? (cudaStream_t)tower_cuda_stream(&m->tw[1]) : NULL;
        if (!shared) input_unshare(m);
        for (int t = 0; t < (shared ? 1 : m->towers); t++) {
            tower *tw = &m->tw[t];
            cudaStream_t st = (cudaStream_t)tower_cuda_stream(tw);
            if (cuda_fail(cudaSetDevice(tw->device), "cudaSetDevice", t, err, errlen))
                return input_failed(m, err);
            if (!m->in_crops[t] && input_alloc(m, t, shared, mean, err, errlen))
                return input_failed(m, err);
            /* the crops and parameters on the copy stream, once the last batch's
             * augmentation (in_ready, recorded after it) has read the staging; the
             * tower's stream augments once they are in (in_uploaded). So the upload runs
             * beside whatever the tower's stream still has to do of the last step. */
            cudaStream_t cs = (cudaStream_t)m->in_copy[t];
            debug_delay(m, t, t + 1);
            debug_delay_on(m, t, t + 1, cs); /* the copy stream as well: a late upload */
            char why[640]; /* the delay hook's launches, made through the fault slot */
            if (tower_fault_take(why, sizeof why)) {
                base_errf(err, errlen, "tower %d: the delay hook before its upload: %s", t, why);
                return input_failed(m, err);
            }
            if (cuda_fail(cudaStreamWaitEvent(cs, (cudaEvent_t)m->in_ready[t], 0),
                          "cudaStreamWaitEvent(staging free)", t, err, errlen) ||
                cuda_fail(cudaMemcpyAsync(m->in_crops[t], crops, crop_bytes,
                                          cudaMemcpyHostToDevice, cs),
                          "upload of the crops", t, err, errlen) ||
                cuda_fail(cudaMemcpyAsync(m->in_params[t], params, par_bytes,
                                          cudaMemcpyHostToDevice, cs),
                          "upload of the augmentation parameters", t, err, errlen) ||
                cuda_fail(cudaEventRecord((cudaEvent_t)m->in_uploaded[t], cs),
                          "cudaEventRecord(input uploaded)", t, err, errlen) ||
                /* the control (a test hook) also leaves in_ready unordered after the copy,
                 * so model_input_wait no longer covers the host slot under it */
                (drop != MODEL_TEST_DROP_UPLOADED &&
                 cuda_fail(cudaStreamWaitEvent(st, (cudaEvent_t)m->in_uploaded[t], 0),
                           "cudaStreamWaitEvent(input uploaded)", t, err, errlen)))
                return input_failed(m, err);
            /* shared: tower 1 may still read the last batch's x and labels (its conv1's
             * backward, its loss); tower 0 writes them once tower 1's stream is past that */
            if (shared &&
                (cuda_fail(cudaEventRecord((cudaEvent_t)m->in_free, st1),
                           "cudaEventRecord(input free)", 1, err, errlen) ||
                 (drop != MODEL_TEST_DROP_INPUT_FREE &&
                  cuda_fail(cudaStreamWaitEvent(st, (cudaEvent_t)m->in_free, 0),
                            "cudaStreamWaitEvent(input free)", t, err, errlen))))
                return input_failed(m, err);
            if (cuda_fail(cudaMemcpyAsync(tw->labels, labels, sizeof(int32_t) * B,
                                          cudaMemcpyHostToDevice, st),
                          "upload of the labels", t, err, errlen))
                return input_failed(m, err);
            /* and conv1's bf16 input where it reads one (tower_cuda_set_input_given) */
            if (data_augment_cuda(tw->x, tower_cuda_input_copy(tw), m->in_crops[t],
                                  m->in_mean[t], m->in_params[t],
                                  (int)B, c->in_size, st, err, errlen))
                return input_failed(m, err);
            if (cuda_fail(cudaEventRecord((cudaEvent_t)m->in_ready[t], st),
                          "cudaEventRecord(input ready)", t, err, errlen))
                return input_failed(m, err);
        }
        if (shared) {
            if (drop != MODEL_TEST_DROP_INPUT_READY &&
                cuda_fail(cudaStreamWaitEvent(st1, (cudaEvent_t)m->in_ready[0], 0),
                          "cudaStreamWaitEvent(input ready)", 1, err, errlen))
                return input_failed(m, err);
            /* tower 0's bf16 copy of x too, where conv1 reads one (first: a refusal leaves
             * tower 1 on its own input) */
            if (tower_cuda_share_input(&m->tw[1], &m->tw[0])) {
                base_errf(err, errlen, "tower 1: conv1's bf16 input cannot be tower 0's (the "
                                       "towers' convolution paths or precisions differ)");
                return input_failed(m, err);
            }
            m->tw[1].acts[0].in = m->tw[0].x;
            m->tw[1].labels = m->tw[0].labels;
            m->in_shared = 1;
        }
        return 0;
    }
#else
    (void)crops;
    (void)params;
    (void)labels;
    (void)mean;
#endif
    snprintf(err, errlen, "model_set_batch_u8 is the GPU data path; CPU towers take float "
                          "batches (model_set_batch)");
    (void)m;
    return -1;
}

int model_input_wait(model *m, char *err, size_t errlen)
{
#if MODEL_CUDA
    for (int t = 0; t < m->towers; t++) {
        if (!m->in_ready[t]) continue;
        cudaError_t e = cudaSetDevice(m->tw[t].device);
        if (e == cudaSuccess) e = cudaEventSynchronize((cudaEvent_t)m->in_ready[t]);
        if (cuda_fail(e, "waiting for the batch's upload", t, err, errlen))
            return input_failed(m, err);
    }
#else
    (void)m;
    (void)err;
    (void)errlen;
#endif
    return 0;
}

/* ---- one phase of a step, for every tower or for one ----------------------------------
 * Each phase is written once, over a range of towers: rank < 0 runs every tower on this
 * thread in turn, layer by layer (the serial order: place.serial, and one-tower nets);
 * rank t runs tower t alone, on its worker thread, and meets the other tower at the
 * exchanges (comm's _rank calls). Which thread runs a tower changes none of its
 * arithmetic: the threaded step computes the serial step's bits (at the same OpenBLAS
 * thread count, paper_notes.md "Tower threads"). */

static int first_tower(int rank) { return rank < 0 ? 0 : rank; }
static int end_tower(const model *m, int rank) { return rank < 0 ? m->towers : rank + 1; }

/* Elements of one slot of layer l's gathered input, or of the logits (l = n_layers). */
static size_t slot_count(const model *m, int l)
{
    if (l == m->plan.n_layers) return (size_t)m->plan.cfg.batch * m->plan.vt;
    const tower_layer_shape *L = &m->plan.layer[l];
    return (size_t)m->plan.cfg.batch * L->in_ch * L->in_h * L->in_h;
}

static const char *xchg_name(const model *m, int l)
{
    return l == m->plan.n_layers ? "logits" : tower_plan_row(&m->plan, l)->name;
}

/* "tower R: WHAT WHERE: WHY" (a worker's rank), or without the tower (the serial order,
 * whose one call exchanges for both); a failed CUDA call inside comm that lost the
 * device's context (the runtime keeps a sticky error as this thread's last) is said. */
static void xchg_error(const model *m, int rank, const char *what, const char *where,
                       const char *why, char *err, size_t errlen)
{
    const char *lost = "";
#if MODEL_CUDA
    if (m->tw[0].device >= 0 && tower_cuda_error_sticky((int)cudaPeekAtLastError()))
        lost = "; the device's context is lost (a sticky error): nothing more is run on it";
#endif
    if (rank >= 0)
        base_errf(err, errlen, "tower %d: %s %s: %s%s", rank, what, where, why, lost);
    else
        base_errf(err, errlen, "%s %s: %s%s", what, where, why, lost);
}

/* The all-gather of layer l's input (each tower's acts[l].in), or of the logits
 * (l = n_layers). Exchanges are timed on tower 0 only. */
static int xchg_gather(model *m, int rank, int l, char *err, size_t errlen)
{
    int n = m->plan.n_layers, region = l == n ? MODEL_REGION_XCHG_LOGITS
                                              : MODEL_REGION_XCHG_FWD + l;
    void *bufs[2], *streams[2];
    char why[256] = "";
    for (int t = 0; t < m->towers; t++) {
        bufs[t] = l == n ? (void *)m->tw[t].logits : (void *)m->tw[t].acts[l].in;
        streams[t] = tower_stream(m, t);
    }
    if (rank <= 0) hook_begin(m, 0, region);
    int rc = rank < 0 ? comm_allgather(m->comm, bufs, slot_count(m, l), streams, why, sizeof why)
                      : comm_allgather_rank(m->comm, rank, bufs, slot_count(m, l), streams[rank],
                                            why, sizeof why);
    if (rank <= 0) hook_end(m, 0, region);
    if (rc) xchg_error(m, rank, "exchange failed at", xchg_name(m, l), why, err, errlen);
    return rc;
}

/* After layer l's backward (it reads all towers): every tower holds a gradient for every
 * source slot (acts[l].din); each source tower gets the sum for its own slot as the dout
 * of layer l - 1. */
static int xchg_reduce(model *m, int rank, int l, char *err, size_t errlen)
{
    void *outs[2], *grads[2], *streams[2];
    char why[256] = "";
    for (int t = 0; t < m->towers; t++) {
        outs[t] = m->tw[t].acts[l - 1].dout;
        grads[t] = m->tw[t].acts[l].din;
        streams[t] = tower_stream(m, t);
    }
    if (rank <= 0) hook_begin(m, 0, MODEL_REGION_XCHG_BWD + l);
    int rc = rank < 0 ? comm_reduce_scatter(m->comm, outs, grads, slot_count(m, l), streams, why,
                                            sizeof why)
                      : comm_reduce_scatter_rank(m->comm, rank, outs, grads, slot_count(m, l),
                                                 streams[rank], why, sizeof why);
    if (rank <= 0) hook_end(m, 0, MODEL_REGION_XCHG_BWD + l);
    if (rc) xchg_error(m, rank, "exchange failed at", xchg_name(m, l), why, err, errlen);
    return rc;
}

/* The ops of a step that are not a test phase (model.h's MODEL_TEST_FAIL_*), for messages. */
enum { MODEL_OP_LOSS = 100, MODEL_OP_LOSS_BACKWARD = 101, MODEL_OP_ZERO = 102 };

/* "step N" (a training step, counted from 1 as the metrics lines count) or "the
 * evaluation after step N". */
static void step_text(const model *m, int train, char *buf, size_t n)
{
    if (train)
        snprintf(buf, n, "step %lld", (long long)m->step + 1);
    else
        snprintf(buf, n, "the evaluation after step %lld", (long long)m->step);
}

/* What a tower's op is, for messages: "conv2's forward", "the loss's backward", ... */
static void op_text(const model *m, int phase, int l, char *buf, size_t n)
{
    const char *layer = l >= 0 && l < m->plan.n_layers ? tower_plan_row(&m->plan, l)->name
                                                       : "the logits";
    switch (phase) {
    case MODEL_TEST_FAIL_FORWARD: snprintf(buf, n, "%s's forward", layer); break;
    case MODEL_TEST_FAIL_BACKWARD: snprintf(buf, n, "%s's backward", layer); break;
    case MODEL_TEST_FAIL_UPDATE: snprintf(buf, n, "its update"); break;
    case MODEL_OP_LOSS: snprintf(buf, n, "the loss"); break;
    case MODEL_OP_LOSS_BACKWARD: snprintf(buf, n, "the loss's backward"); break;
    default: snprintf(buf, n, "zeroing its gradients"); break;
    }
}

/* The test hook (model_placement.test_fail_*): 1 when it is due for tower t's op of
 * `phase` at layer l (the exchanges: the layer whose input is exchanged; the update: any
 * l) in training step test_fail_step. */
static int test_due(const model *m, int phase, int t, int l, int train)
{
    const model_placement *p = &m->place;
    return train && p->test_fail_step >= 1 && m->step == p->test_fail_step - 1 &&
           p->test_fail_phase == phase && t == p->test_fail_tower &&
           (phase == MODEL_TEST_FAIL_UPDATE || l == p->test_fail_layer);
}

/* The hook's own failure (test_fail_device 0), for any tower among [lo, hi): before layer
 * l's forward (and before the exchange of its input) or backward, or before the update;
 * -1 with err, as a failed exchange would. At an exchange (GATHER, REDUCE) it arms comm's
 * test hook instead, so that the exchange itself fails inside, for that tower. */
static int test_fail(model *m, int phase, int lo, int hi, int l, int train, char *err,
                     size_t errlen)
{
    for (int t = lo; t < hi; t++) {
        if (!test_due(m, phase, t, l, train)) continue;
        if (phase == MODEL_TEST_FAIL_GATHER || phase == MODEL_TEST_FAIL_REDUCE) {
            comm_test_fail_rank(m->comm, t);
            return 0;
        }
        if (m->place.test_fail_device) return 0; /* test_arm's, at the op itself */
        char what[96];
        op_text(m, phase, l, what, sizeof what);
        base_errf(err, errlen, "tower %d failed before %s in step %lld (the test hook)", t, what,
                  (long long)m->step + 1);
        return -1;
    }
    return 0;
}

/* The device kind (test_fail_device TOWER_FAULT_*): right before tower t's op, arms the
 * fault injection on this thread (tower.h, tower_fault_inject), so that the op's
 * test_fail_call-th checked device call fails as a CUDA error would. GPU towers: the
 * CUDA backend's own check macros fire; CPU ops make no checked calls (a test wraps
 * them). op_fault disarms it after the op. */
static void test_arm(const model *m, int phase, int t, int l, int train)
{
    const model_placement *p = &m->place;
    if (p->test_fail_device && test_due(m, phase, t, l, train))
        tower_fault_inject(p->test_fail_call > 0 ? p->test_fail_call : 1, p->test_fail_device);
}

/* After tower t's op: a device call that failed inside it (the calling thread's fault
 * slot, tower.h; the op returned early) fails the step, naming the call, the tower, the
 * op and the step. 0, or -1 with err. The CPU ops record nothing: one thread-local load. */
static int op_fault(const model *m, int t, int phase, int l, int train, char *err,
                    size_t errlen)
{
    tower_fault_inject(0, 0); /* the test hook's, if armed and not consumed */
    char why[640];
    if (!tower_fault_take(why, sizeof why)) return 0;
    char what[96], when[64];
    op_text(m, phase, l, what, sizeof what);
    step_text(m, train, when, sizeof when);
    base_errf(err, errlen, "tower %d, %s in %s: %s", t, what, when, why);
    return -1;
}

/* A worker (rank >= 0) stops between layers once the other tower has failed (comm_abort),
 * rather than running on to its next exchange. */
static int stopped(model *m, int rank, int phase, int l, int train, char *err, size_t errlen)
{
    if (rank < 0 || !comm_aborted(m->comm)) return 0;
    char what[96], when[64];
    op_text(m, phase, l, what, sizeof what);
    step_text(m, train, when, sizeof when);
    base_errf(err, errlen, "tower %d stopped before %s in %s: the other tower failed", rank,
              what, when);
    return -1;
}

static int towers_forward(model *m, int rank, int train, double *loss, char *err,
                          size_t errlen)
{
    int lo = first_tower(rank), hi = end_tower(m, rank), n = m->plan.n_layers;
    for (int t = lo; t < hi; t++) m->tw[t].dropout_key = tower_step_key(m->seed, m->step, t);
    debug_delay(m, lo, hi);
    for (int l = 0; l < n; l++) {
        if (stopped(m, rank, MODEL_TEST_FAIL_FORWARD, l, train, err, errlen) ||
            test_fail(m, MODEL_TEST_FAIL_FORWARD, lo, hi, l, train, err, errlen))
            return -1;
        if (tower_plan_row(&m->plan, l)->reads == TOWER_READS_ALL) {
            if (test_fail(m, MODEL_TEST_FAIL_GATHER, lo, hi, l, train, err, errlen) ||
                xchg_gather(m, rank, l, err, errlen))
                return -1;
            debug_delay(m, lo, hi);
        }
        for (int t = lo; t < hi; t++) {
            test_arm(m, MODEL_TEST_FAIL_FORWARD, t, l, train);
            hook_begin(m, t, MODEL_REGION_FWD + l);
            tower_forward_layer(&m->tw[t], l, train);
            hook_end(m, t, MODEL_REGION_FWD + l);
            if (op_fault(m, t, MODEL_TEST_FAIL_FORWARD, l, train, err, errlen)) return -1;
        }
    }
    /* the logits: each tower computes the softmax over all classes (identically) */
    if (test_fail(m, MODEL_TEST_FAIL_GATHER, lo, hi, n, train, err, errlen) ||
        xchg_gather(m, rank, n, err, errlen))
        return -1;
    debug_delay(m, lo, hi);
    /* the loss's read-back after the phase waits on the towers' streams: first a bounded
     * wait for the exchange (NCCL), so a hung peer GPU ends the run with a message (the
     * same-device and host backends return at once: nothing here waits inside a capture) */
    char why[256] = "";
    if (rank < 0 ? comm_wait(m->comm, why, sizeof why)
                 : comm_wait_rank(m->comm, rank, why, sizeof why)) {
        xchg_error(m, rank, "exchange failed at", "logits", why, err, errlen);
        return -1;
    }
    for (int t = lo; t < hi; t++) {
        hook_begin(m, t, MODEL_REGION_LOSS_FWD);
        *loss = tower_loss_forward(&m->tw[t]);
        hook_end(m, t, MODEL_REGION_LOSS_FWD);
        if (op_fault(m, t, MODEL_OP_LOSS, -1, train, err, errlen)) return -1;
    }
    return 0;
}

static int towers_backward(model *m, int rank, char *err, size_t errlen)
{
    int lo = first_tower(rank), hi = end_tower(m, rank);
    debug_delay(m, lo, hi);
    for (int t = lo; t < hi; t++) {
        hook_begin(m, t, MODEL_REGION_ZERO);
        tower_zero_grads(&m->tw[t]);
        hook_end(m, t, MODEL_REGION_ZERO);
        if (op_fault(m, t, MODEL_OP_ZERO, -1, 1, err, errlen)) return -1;
        hook_begin(m, t, MODEL_REGION_LOSS_BWD);
        tower_loss_backward(&m->tw[t]);
        hook_end(m, t, MODEL_REGION_LOSS_BWD);
        if (op_fault(m, t, MODEL_OP_LOSS_BACKWARD, -1, 1, err, errlen)) return -1;
    }
    for (int l = m->plan.n_layers - 1; l >= 0; l--) {
        if (stopped(m, rank, MODEL_TEST_FAIL_BACKWARD, l, 1, err, errlen) ||
            test_fail(m, MODEL_TEST_FAIL_BACKWARD, lo, hi, l, 1, err, errlen))
            return -1;
        for (int t = lo; t < hi; t++) {
            test_arm(m, MODEL_TEST_FAIL_BACKWARD, t, l, 1);
            hook_begin(m, t, MODEL_REGION_BWD + l);
            tower_backward_layer(&m->tw[t], l);
            hook_end(m, t, MODEL_REGION_BWD + l);
            if (op_fault(m, t, MODEL_TEST_FAIL_BACKWARD, l, 1, err, errlen)) return -1;
        }
        if (l > 0 && tower_plan_row(&m->plan, l)->reads == TOWER_READS_ALL) {
            if (test_fail(m, MODEL_TEST_FAIL_REDUCE, lo, hi, l, 1, err, errlen) ||
                xchg_reduce(m, rank, l, err, errlen))
                return -1;
            debug_delay(m, lo, hi);
        }
    }
    return 0;
}

/* The towers update independently (no exchange): a tower that fails here does not stop
 * the other's update; the step is failed either way (model.h: what a failed step
 * leaves). */
static int towers_update(model *m, int rank, real lr, char *err, size_t errlen)
{
    int lo = first_tower(rank), hi = end_tower(m, rank);
    debug_delay(m, lo, hi);
    if (stopped(m, rank, MODEL_TEST_FAIL_UPDATE, -1, 1, err, errlen)) return -1;
    for (int t = lo; t < hi; t++) {
        if (test_fail(m, MODEL_TEST_FAIL_UPDATE, t, t + 1, -1, 1, err, errlen)) return -1;
        test_arm(m, MODEL_TEST_FAIL_UPDATE, t, -1, 1);
        hook_begin(m, t, MODEL_REGION_UPDATE);
        tower_update(&m->tw[t], &m->optim, lr, m->updates);
        hook_end(m, t, MODEL_REGION_UPDATE);
        if (op_fault(m, t, MODEL_TEST_FAIL_UPDATE, -1, 1, err, errlen)) return -1;
    }
    return 0;
}

/* One phase of a step, as the coordinator hands it to the workers: the step descriptor. */
enum {
    MODEL_JOB_FORWARD = 1,
    MODEL_JOB_BACKWARD = 2,
    MODEL_JOB_UPDATE = 3,
    MODEL_JOB_QUIT = 4,
    MODEL_JOB_CLEAR = 5 /* after a failed capture: each thread's last CUDA error cleared */
};
typedef struct {
    int kind;   /* MODEL_JOB_* */
    int train;  /* forward: dropout masks (1) or the evaluation scaling (0) */
    real lr;    /* update */
} model_job;

static int run_job(model *m, int rank, const model_job *job, double *loss, char *err,
                   size_t errlen)
{
    switch (job->kind) {
    case MODEL_JOB_FORWARD: return towers_forward(m, rank, job->train, loss, err, errlen);
    case MODEL_JOB_BACKWARD: return towers_backward(m, rank, err, errlen);
    case MODEL_JOB_UPDATE: return towers_update(m, rank, job->lr, err, errlen);
    case MODEL_JOB_CLEAR:
#if MODEL_CUDA
        cudaGetLastError(); /* a capture's failed call may have left it set on this thread */
#endif
        return 0;
    default: snprintf(err, errlen, "model: job %d unknown", job->kind); return -1;
    }
}

/* ---- the tower workers: one thread per tower, the caller's thread coordinating ------- */

typedef struct {
    struct model_workers *w;
    int t;
} worker_arg;

struct model_workers {
    model *m;
    pthread_t th[2];
    worker_arg arg[2];
    int started;          /* threads running */
    pthread_mutex_t mu;
    pthread_cond_t go;    /* gen moved: a job to run */
    pthread_cond_t idle;  /* busy reached 0 */
    model_job job;        /* the job of generation gen */
    unsigned gen;
    int busy;             /* workers still on the job */
    double loss[2];       /* each tower's loss of the last forward (the same number) */
    int failed;           /* -1, or the first tower whose job failed */
    char err[512];        /* its message */
    int blas_before;      /* OpenBLAS's thread count before the split (restored), or 0 */
};

static void *worker_main(void *arg)
{
    model_workers *w = ((worker_arg *)arg)->w;
    int t = ((worker_arg *)arg)->t;
    unsigned seen = 0;
#if MODEL_CUDA
    /* the tower's device is this thread's (every GPU tower op sets it again anyway) */
    if (w->m->tw[t].device >= 0) cudaSetDevice(w->m->tw[t].device);
#endif
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->gen == seen) pthread_cond_wait(&w->go, &w->mu);
        seen = w->gen;
        model_job job = w->job;
        pthread_mutex_unlock(&w->mu);
        if (job.kind == MODEL_JOB_QUIT) return NULL;
        char err[512] = "";
        double loss = NAN;
        int rc = run_job(w->m, t, &job, &loss, err, sizeof err);
        pthread_mutex_lock(&w->mu);
        w->loss[t] = loss;
        if (rc && w->failed < 0) {
            /* the first failure is the cause; the other tower's, if any, follows from
             * comm_abort, which lets it go at its next exchange */
            w->failed = t;
            snprintf(w->err, sizeof w->err, "%s", err);
            comm_abort(w->m->comm);
        }
        if (--w->busy == 0) pthread_cond_signal(&w->idle);
        pthread_mutex_unlock(&w->mu);
    }
}

/* Hands job to every worker and waits until all have finished it. */
static int workers_run(model_workers *w, const model_job *job, double *loss, char *err,
                       size_t errlen)
{
    pthread_mutex_lock(&w->mu);
    w->job = *job;
    w->busy = w->started;
    w->gen++;
    pthread_cond_broadcast(&w->go);
    while (w->busy > 0) pthread_cond_wait(&w->idle, &w->mu);
    int failed = w->failed;
    if (failed >= 0) snprintf(err, errlen, "%s", w->err);
    if (loss) *loss = w->loss[w->started - 1];
    pthread_mutex_unlock(&w->mu);
    return failed >= 0 ? -1 : 0;
}

static void workers_stop(model_workers *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->job.kind = MODEL_JOB_QUIT;
    w->gen++;
    pthread_cond_broadcast(&w->go);
    pthread_mutex_unlock(&w->mu);
    for (int t = 0; t < w->started; t++) pthread_join(w->th[t], NULL);
    if (w->blas_before > 0) openblas_set_num_threads(w->blas_before);
    pthread_cond_destroy(&w->idle);
    pthread_cond_destroy(&w->go);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* One worker per tower. CPU towers split OpenBLAS's threads between them: OpenBLAS's
 * count is one process-wide number (0.3.21 has no per-call count), so each tower's GEMMs
 * run on max(1, count / towers) threads (paper_notes.md "Tower threads"). */
static int workers_start(model *m, char *err, size_t errlen)
{
    model_workers *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of host memory for the tower workers");
        return -1;
    }
    w->m = m;
    w->failed = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->go, NULL);
    pthread_cond_init(&w->idle, NULL);
    if (m->place.cpu) {
        w->blas_before = openblas_get_num_threads();
        int each = w->blas_before / m->towers;
        openblas_set_num_threads(each > 1 ? each : 1);
    }
    /* SIGINT and SIGTERM go to the coordinator (or the data threads), never to a worker:
     * the trainer looks at them between steps */
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    int rc = 0;
    for (int t = 0; t < m->towers && rc == 0; t++) {
        w->arg[t] = (worker_arg){w, t};
        rc = pthread_create(&w->th[t], NULL, worker_main, &w->arg[t]);
        if (rc == 0) w->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        snprintf(err, errlen, "cannot start the worker of tower %d: %s", w->started,
                 strerror(rc));
        workers_stop(w);
        return -1;
    }
    m->workers = w;
    return 0;
}

/* ---- the step ------------------------------------------------------------------------- */

/* Runs one phase on the workers, or on this thread when there are none. A failure fails
 * the model for good: it says why in m->error and does nothing more. */
static int model_run(model *m, const model_job *job, double *loss)
{
    if (m->failed) return -1;
    char err[512] = "";
    int rc = m->workers ? workers_run(m->workers, job, loss, err, sizeof err)
                        : run_job(m, -1, job, loss, err, sizeof err);
    if (rc) {
        m->failed = 1;
        snprintf(m->error, sizeof m->error, "%s", err);
        /* the workers are idle: end any NCCL collective still waiting on a GPU for the
         * failed tower (comm_abort's contract), before anything synchronises a stream */
        char why[256];
        if (m->workers) comm_wait(m->comm, why, sizeof why);
    }
    return rc;
}

/* ---- GPU towers: the step's scalars, its loss, and the step as one CUDA graph ------- */

#if MODEL_CUDA
static int gpu_model(const model *m) { return m->towers > 0 && m->tw[0].device >= 0; }

/* A device call the coordinator made between phases (a staging, the loss's read-back, a
 * graph launch) failed: the model fails with the fault slot's text (the call, file, line,
 * reason, and a lost context said), as a tower's op would. -1. */
static int coord_fault(model *m, const char *what)
{
    char why[640];
    if (!tower_fault_take(why, sizeof why)) snprintf(why, sizeof why, "failed");
    if (!m->failed) {
        m->failed = 1;
        base_errf(m->error, sizeof m->error, "%s in step %lld: %s", what,
                  (long long)m->step + 1, why);
    }
    return -1;
}

static int cuda_call(model *m, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 0;
    if (!m->failed) {
        m->failed = 1;
        base_errf(m->error, sizeof m->error, "%s in step %lld: %s: %s%s", what,
                  (long long)m->step + 1, cudaGetErrorName(e), cudaGetErrorString(e),
                  tower_cuda_error_sticky((int)e)
                      ? "; the device's context is lost (a sticky error)" : "");
    }
    return -1;
}

/* This step's dropout keys on every tower (the coordinator stages them before the step,
 * outside any capture; the ops then find them staged). */
static int stage_keys(model *m)
{
    for (int t = 0; t < m->towers; t++) {
        m->tw[t].dropout_key = tower_step_key(m->seed, m->step, t);
        if (tower_cuda_stage_keys(&m->tw[t], m->tw[t].dropout_key))
            return coord_fault(m, "staging the dropout keys");
    }
    return 0;
}

/* Update number m->updates at lr; skip: the update kernel skips a non-finite loss. */
static int stage_update(model *m, real lr, int skip)
{
    for (int t = 0; t < m->towers; t++)
        if (tower_cuda_stage_update(&m->tw[t], &m->optim, (float)lr, m->updates, skip))
            return coord_fault(m, "staging the update's scalars");
    return 0;
}

/* The loss of the phase or step just enqueued goes into the next read-back slot of the
 * last tower (the towers' means are the same bits; the workers returned the last one's).
 * is_step: it is a whole step's (counted in m->step and m->updates once enqueued). */
static int loss_post(model *m, int is_step)
{
    int slot = tower_cuda_loss_post(&m->tw[m->towers - 1]);
    if (slot < 0) return coord_fault(m, "posting the loss's read-back");
    m->loss_step[m->loss_n] = is_step;
    m->loss_slot[m->loss_n++] = slot;
    return 0;
}

/* Reads the oldest loss in flight into m->last_loss. A failure (a fault in any kernel of
 * the steps in flight surfaces here) fails the model and uncounts those steps: m->step
 * and m->updates are the last good step's (model.h). */
static int loss_take(model *m)
{
    double v = NAN;
    int rc = tower_cuda_loss_take(&m->tw[m->towers - 1], m->loss_slot[0], &v);
    if (rc) {
        for (int i = 0; i < m->loss_n; i++)
            if (m->loss_step[i]) {
                m->step--;
                m->updates--;
            }
        m->loss_n = 0;
        return coord_fault(m, "reading the loss back");
    }
    m->loss_slot[0] = m->loss_slot[1];
    m->loss_step[0] = m->loss_step[1];
    m->loss_n--;
    m->last_loss = v;
    return 0;
}
#endif

/* Every loss still in flight read (the newest into m->last_loss). */
static int loss_flush(model *m)
{
#if MODEL_CUDA
    while (m->loss_n > 0)
        if (loss_take(m)) return -1;
#else
    (void)m;
#endif
    return 0;
}

double model_forward(model *m, int train)
{
    double loss = NAN;
    if (m->failed || loss_flush(m)) return NAN;
#if MODEL_CUDA
    if (gpu_model(m) && train && stage_keys(m)) return NAN;
#endif
    model_job job = {MODEL_JOB_FORWARD, train, 0};
    if (model_run(m, &job, &loss)) return NAN;
#if MODEL_CUDA
    if (gpu_model(m)) {
        if (loss_post(m, 0) || loss_take(m)) return NAN;
        loss = m->last_loss;
    }
#endif
    m->last_loss = loss;
    return loss;
}

void model_backward(model *m)
{
    model_job job = {MODEL_JOB_BACKWARD, 0, 0};
    model_run(m, &job, NULL);
}

void model_update(model *m, real lr)
{
    if (m->failed) return;
    m->updates++; /* the update's number, which Adam's bias correction reads */
#if MODEL_CUDA
    if (gpu_model(m) && stage_update(m, lr, 0)) {
        m->updates--;
        return;
    }
#endif
    model_job job = {MODEL_JOB_UPDATE, 0, lr};
    if (model_run(m, &job, NULL)) m->updates--; /* counts whole updates only */
}

#if MODEL_CUDA
/* The step's three phases as jobs (uncaptured, or inside a capture). */
static int run_phases(model *m, real lr)
{
    double loss = NAN;
    model_job fwd = {MODEL_JOB_FORWARD, 1, 0}, bwd = {MODEL_JOB_BACKWARD, 0, 0},
              upd = {MODEL_JOB_UPDATE, 0, lr};
    if (model_run(m, &fwd, &loss) || model_run(m, &bwd, NULL) || model_run(m, &upd, NULL))
        return -1;
    m->last_loss = loss; /* NaN: GPU towers leave it on the device until read */
    return 0;
}

/* Why the step cannot be captured now, or NULL. */
static const char *graph_unfit(const model *m)
{
    const model_placement *p = &m->place;
    if (m->towers == 2 && m->tw[0].device != m->tw[1].device)
        return "two GPUs: the NCCL exchange waits on the host inside a step";
    if (m->hooks) return "the stages are timed one by one (bench's profiled steps)";
    if (p->test_fail_step >= 1 || p->debug_delay_us > 0 || p->test_drop_event)
        return "a test or debug hook is on";
    return NULL;
}

static cudaStream_t stream_of(model *m, int t)
{
    return (cudaStream_t)tower_cuda_stream(&m->tw[t]);
}

static int graph_events(model *m)
{
    if (cuda_call(m, cudaSetDevice(m->tw[0].device), "cudaSetDevice")) return -1;
    for (int i = 0; i < 4; i++) {
        if (m->graph_ev[i]) continue;
        cudaEvent_t ev;
        if (cuda_call(m, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming),
                      "creating the graph's events"))
            return -1;
        m->graph_ev[i] = ev;
    }
    return 0;
}

static void graph_drop(model *m)
{
    if (m->graph_exec) cudaGraphExecDestroy((cudaGraphExec_t)m->graph_exec);
    m->graph_exec = NULL;
}

/* Captures the whole step (both towers' streams: tower 1's joins the capture through an
 * event of tower 0's, and is joined back before it ends) into m->graph_exec. Nothing runs
 * on the device. A failure is not the model's: -1 with why, the model as before it (its
 * failure undone, comm's abort undone, each thread's last CUDA error cleared). */
static int graph_capture(model *m, real lr, char *why, size_t n)
{
    cudaStream_t s0 = stream_of(m, 0), s1 = m->towers == 2 ? stream_of(m, 1) : NULL;
    cudaError_t e = cudaSetDevice(m->tw[0].device);
    if (e == cudaSuccess) e = cudaStreamBeginCapture(s0, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        base_errf(why, n, "cudaStreamBeginCapture: %s", cudaGetErrorString(e));
        cudaGetLastError();
        return -1;
    }
    if (s1) {
        e = cudaEventRecord((cudaEvent_t)m->graph_ev[0], s0);
        if (e == cudaSuccess) e = cudaStreamWaitEvent(s1, (cudaEvent_t)m->graph_ev[0], 0);
    }
    int rc = e == cudaSuccess ? run_phases(m, lr) : -1;
    if (e != cudaSuccess)
        base_errf(why, n, "joining tower 1's stream to the capture: %s", cudaGetErrorString(e));
    else if (rc)
        base_errf(why, n, "%s", m->error);
    if (s1) { /* joined back even after a failure, so that the capture can end */
        cudaError_t j = cudaEventRecord((cudaEvent_t)m->graph_ev[1], s1);
        if (j == cudaSuccess) j = cudaStreamWaitEvent(s0, (cudaEvent_t)m->graph_ev[1], 0);
        if (j != cudaSuccess && !rc && e == cudaSuccess) {
            base_errf(why, n, "joining tower 1's stream back: %s", cudaGetErrorString(j));
            e = j;
        }
    }
    cudaGraph_t g = NULL;
    cudaError_t end = cudaStreamEndCapture(s0, &g);
    if (end != cudaSuccess && !rc && e == cudaSuccess) {
        base_errf(why, n, "cudaStreamEndCapture: %s", cudaGetErrorString(end));
        e = end;
    }
    cudaGraphExec_t exec = NULL;
    if (!rc && e == cudaSuccess) {
        e = cudaGraphInstantiate(&exec, g, 0);
        if (e != cudaSuccess) base_errf(why, n, "cudaGraphInstantiate: %s", cudaGetErrorString(e));
    }
    if (g) cudaGraphDestroy(g);
    if (rc || e != cudaSuccess) {
        cudaGetLastError();
        m->failed = 0;
        m->error[0] = 0;
        comm_reset_abort(m->comm);
        model_job clear = {MODEL_JOB_CLEAR, 0, 0};
        model_run(m, &clear, NULL);
        return -1;
    }
    m->graph_exec = exec;
    m->graph_shared = m->in_shared;
    m->last_loss = NAN;
    return 0;
}

/* One replay of the step on tower 0's stream, tower 1's stream handing over to it before
 * (its staged scalars, its wait for the shared input) and taking over after it. */
static int graph_replay(model *m)
{
    cudaStream_t s0 = stream_of(m, 0), s1 = m->towers == 2 ? stream_of(m, 1) : NULL;
    if (cuda_call(m, cudaSetDevice(m->tw[0].device), "cudaSetDevice")) return -1;
    if (s1 && (cuda_call(m, cudaEventRecord((cudaEvent_t)m->graph_ev[2], s1),
                         "cudaEventRecord(before the graph)") ||
               cuda_call(m, cudaStreamWaitEvent(s0, (cudaEvent_t)m->graph_ev[2], 0),
                         "cudaStreamWaitEvent(before the graph)")))
        return -1;
    if (cuda_call(m, cudaGraphLaunch((cudaGraphExec_t)m->graph_exec, s0),
                  "the step's graph (cudaGraphLaunch)"))
        return -1;
    if (s1 && (cuda_call(m, cudaEventRecord((cudaEvent_t)m->graph_ev[3], s0),
                         "cudaEventRecord(after the graph)") ||
               cuda_call(m, cudaStreamWaitEvent(s1, (cudaEvent_t)m->graph_ev[3], 0),
                         "cudaStreamWaitEvent(after the graph)")))
        return -1;
    m->last_loss = NAN;
    return 0;
}

/* A 64-bit hash of the state a step leaves (parameters, gradients, momentum, Adam's
 * second moment, every tower), for auto's comparison; host copies through `buf`. */
static uint64_t state_hash(model *m, float *buf)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n = m->plan.n_params;
    for (int t = 0; t < m->towers; t++)
        for (int which = 0; which < 4; which++) {
            if (which == 3 && !m->tw[t].moment2) continue;
            model_get_tensor(m, t, which, buf);
            const uint32_t *w = (const uint32_t *)buf;
            for (size_t i = 0; i < n; i++) h = (h ^ w[i]) * 0x100000001b3ull;
        }
    return h;
}

static void free_saved(float *buf, float *saved[2][3])
{
    free(buf);
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 3; k++) free(saved[t][k]);
}

/* The state a step starts from (params, momentum, Adam's second moment) put back. */
static void restore_saved(model *m, float *saved[2][3])
{
    for (int t = 0; t < m->towers; t++)
        for (int k = 0; k < 3; k++)
            if (saved[t][k]) model_set_tensor(m, t, k == 0 ? 0 : k + 1, saved[t][k]);
}

/* The first step place.graph may capture. Every library and kernel has run once
 * uncaptured before a capture (cuBLAS's and the modules' lazy set-up then happens outside
 * it). on: this step runs uncaptured, the next one is captured and replayed. auto: this
 * step runs uncaptured from a host copy of its starting state, then from that state again
 * as a captured graph replayed; the graph is kept only when both gave the same bits
 * (otherwise, or when the capture fails, the step runs uncaptured once more from the
 * copy, so that the state kept is always the uncaptured step's). The step's loss is left
 * on the device for the caller's read-back either way. */
static int graph_first(model *m, real lr)
{
    char why[600] = "";
    size_t n = m->plan.n_params;
    float *saved[2][3] = {{NULL}}, *buf = NULL;
    double lg = NAN, lu = NAN;
    uint64_t hg = 0, hu = 0;
    if (graph_events(m) || loss_flush(m)) return -1;
    if (m->place.graph == MODEL_GRAPH_ON) {
        if (!m->graph_warm) { /* this step uncaptured, the next one captured */
            m->graph_warm = 1;
            return run_phases(m, lr);
        }
        if (graph_capture(m, lr, why, sizeof why)) {
            snprintf(m->graph_note, sizeof m->graph_note,
                     "on: uncaptured (the capture failed: %s)", why);
            fprintf(stderr, "twotower: --graph %s\n", m->graph_note);
            m->graph_state = 2;
            return run_phases(m, lr);
        }
        snprintf(m->graph_note, sizeof m->graph_note,
                 "on: the whole step captured once (step %lld) and replayed (not checked)",
                 (long long)m->step + 1);
        m->graph_state = 1;
        return graph_replay(m);
    }
    /* auto: the state the step starts from */
    int ok = (buf = malloc(sizeof(float) * n)) != NULL;
    for (int t = 0; t < m->towers && ok; t++)
        for (int k = 0; k < 3 && ok; k++) {
            int which = k == 0 ? 0 : k + 1;
            if (which == 3 && !m->tw[t].moment2) continue;
            ok = (saved[t][k] = malloc(sizeof(float) * n)) != NULL;
            if (ok) model_get_tensor(m, t, which, saved[t][k]);
        }
    if (!ok) {
        snprintf(m->graph_note, sizeof m->graph_note,
                 "auto: uncaptured (no host memory for the check's copy of the state)");
        fprintf(stderr, "twotower: --graph %s\n", m->graph_note);
        m->graph_state = 2;
        free_saved(buf, saved);
        return run_phases(m, lr);
    }
    if (run_phases(m, lr) || loss_post(m, 0) || loss_take(m)) goto failed;
    lu = m->last_loss;
    hu = state_hash(m, buf);
    restore_saved(m, saved);
    if (graph_capture(m, lr, why, sizeof why)) {
        snprintf(m->graph_note, sizeof m->graph_note, "auto: uncaptured (the capture failed: %s)",
                 why);
        m->graph_state = 2;
    } else {
        if (graph_replay(m) || loss_post(m, 0) || loss_take(m)) goto failed;
        lg = m->last_loss;
        hg = state_hash(m, buf);
        if (hg == hu && memcmp(&lg, &lu, sizeof lg) == 0) {
            snprintf(m->graph_note, sizeof m->graph_note,
                     "auto: the whole step captured once and replayed (step %lld replayed "
                     "gave the uncaptured step's bits: parameters, gradients, momentum, loss)",
                     (long long)m->step + 1);
            m->graph_state = 1;
        } else {
            snprintf(m->graph_note, sizeof m->graph_note,
                     "auto: uncaptured (step %lld replayed from a graph differs from the "
                     "uncaptured step: loss %.17g vs %.17g, state hash %016llx vs %016llx)",
                     (long long)m->step + 1, lg, lu, (unsigned long long)hg,
                     (unsigned long long)hu);
            m->graph_state = 2;
            graph_drop(m);
        }
    }
    fprintf(stderr, "twotower: --graph %s\n", m->graph_note);
    if (m->graph_state == 2) { /* the uncaptured step's state, once more */
        restore_saved(m, saved);
        if (run_phases(m, lr)) goto failed;
    }
    free_saved(buf, saved);
    return 0;
failed:
    free_saved(buf, saved);
    return -1;
}

/* The whole step on GPU towers: staged scalars, then the graph (replayed, or captured
 * first) or the three phases uncaptured; the loss posted for read-back. */
static int step_gpu(model *m, real lr, int skip)
{
    if (stage_keys(m)) return -1;
    m->updates++; /* the update's number, which Adam's bias correction reads */
    if (stage_update(m, lr, skip)) {
        m->updates--;
        return -1;
    }
    const char *unfit = graph_unfit(m);
    if (m->place.graph == MODEL_GRAPH_OFF && !m->graph_state) {
        snprintf(m->graph_note, sizeof m->graph_note, "off: uncaptured (--graph off)");
        m->graph_state = 2;
    }
    int rc;
    if (unfit || m->graph_state == 2) {
        rc = run_phases(m, lr);
    } else if (m->graph_state == 0) {
        rc = graph_first(m, lr);
    } else {
        /* the graph holds the input's pointers: other ones (the input became shared or
         * stopped being) are captured again */
        if (m->graph_exec && m->graph_shared != m->in_shared) graph_drop(m);
        char why[600] = "";
        if (!m->graph_exec && graph_capture(m, lr, why, sizeof why)) {
            snprintf(m->graph_note, sizeof m->graph_note,
                     "uncaptured (capturing the step again for another input failed: %s)", why);
            fprintf(stderr, "twotower: --graph %s\n", m->graph_note);
            m->graph_state = 2;
            rc = run_phases(m, lr);
        } else {
            rc = graph_replay(m);
        }
    }
    if (rc || loss_post(m, 1)) {
        m->updates--;
        return -1;
    }
    return 0;
}
#endif

/* Enqueues one whole step; the loss is m->last_loss (CPU) or in flight (GPU). */
static int step_enqueue(model *m, real lr, int skip)
{
    if (m->failed) return -1;
#if MODEL_CUDA
    if (gpu_model(m)) {
        if (step_gpu(m, lr, skip)) return -1;
        m->step++;
        return 0;
    }
#endif
    double loss = model_forward(m, 1);
    model_backward(m);
    if (!skip || isfinite(loss)) model_update(m, lr);
    if (m->failed) return -1;
    m->last_loss = loss;
    m->step++;
    return 0;
}

double model_step_loss(model *m)
{
    if (m->failed || loss_flush(m)) return NAN;
    return m->last_loss;
}

double model_train_step(model *m, real lr)
{
    if (step_enqueue(m, lr, 0)) return NAN;
    return model_step_loss(m);
}

double model_train_step_checked(model *m, real lr)
{
    if (step_enqueue(m, lr, 1)) return NAN;
    double loss = model_step_loss(m);
    /* the device skipped the update of a non-finite step (CPU: step_enqueue did) */
    if (!m->failed && !isfinite(loss) && !m->place.cpu) m->updates--;
    return loss;
}

double model_train_step_deferred(model *m, real lr)
{
    double before = NAN;
#if MODEL_CUDA
    /* the first capture reads losses back itself: the step before's is read first */
    if (gpu_model(m) && m->graph_state == 0 && m->loss_n > 0) {
        if (loss_flush(m)) return NAN;
        before = m->last_loss;
    }
#endif
    if (m->place.cpu && m->step > 0) before = m->last_loss; /* computed at once */
    if (step_enqueue(m, lr, 0)) return NAN;
#if MODEL_CUDA
    if (gpu_model(m) && m->loss_n == 2) { /* the step before's: done or nearly */
        if (loss_take(m)) return NAN;
        before = m->last_loss;
    }
#endif
    return before;
}

void model_graph_describe(const model *m, char *buf, size_t n)
{
    if (!n) return;
    if (m->place.cpu) {
        snprintf(buf, n, "uncaptured (CPU)");
        return;
    }
    if (m->graph_note[0]) {
        snprintf(buf, n, "%s", m->graph_note);
        return;
    }
#if MODEL_CUDA
    const char *unfit = m->towers > 0 && m->tw[0].device >= 0 ? graph_unfit(m) : NULL;
    if (unfit) {
        snprintf(buf, n, "uncaptured (%s)", unfit);
        return;
    }
#endif
    snprintf(buf, n, "%s (decided at the first step)",
             m->place.graph == MODEL_GRAPH_ON ? "on" : m->place.graph == MODEL_GRAPH_OFF ? "off"
                                                                                      : "auto");
}

void model_get_probs(const model *m, float *probs)
{
    int B = m->plan.cfg.batch, T = m->towers, Vt = m->plan.vt;
    size_t n = (size_t)T * B * Vt;
    /* tower 0's copy of the gathered probs, re-ordered to (B, classes) */
    real *host = malloc(sizeof(real) * n);
    if (!host) {
        fprintf(stderr, "twotower: out of host memory reading probabilities\n");
        exit(3);
    }
    get(m, 0, host, m->tw[0].probs, sizeof(real) * n);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < T * Vt; c++)
            probs[(size_t)b * T * Vt + c] =
                (float)host[(size_t)(c / Vt) * B * Vt + (size_t)b * Vt + c % Vt];
    free(host);
}

size_t model_layer_units(const model *m, int l)
{
    const tower_layer_shape *L = &m->plan.layer[l];
    return (size_t)m->towers * L->out_ch * L->out_h * L->out_h;
}

int model_get_activations(const model *m, int l, float *acts, char *err, size_t errlen)
{
    if (l < 0 || l >= m->plan.n_layers) {
        base_errf(err, errlen, "layer %d: the net has layers 0..%d", l, m->plan.n_layers - 1);
        return -1;
    }
    const tower_layer_shape *L = &m->plan.layer[l];
    size_t B = (size_t)m->plan.cfg.batch, per = (size_t)L->out_ch * L->out_h * L->out_h;
    size_t all = (size_t)m->towers * per;
    real *host = malloc(sizeof(real) * B * per);
    if (!host) {
        base_errf(err, errlen, "out of host memory for %zu activations of layer %s", B * per,
                  tower_plan_row(&m->plan, l)->name);
        return -1;
    }
    /* each tower's (B, C, H, W) block goes to its part of every sample's row */
    for (int t = 0; t < m->towers; t++) {
#if MODEL_CUDA
        /* a row keeping its activation in bf16 only has it widened into the fp32 place */
        if (m->tw[t].device >= 0 && tower_cuda_acts_fp32((tower *)&m->tw[t], l) != 0) {
            char why[512] = "";
            tower_fault_take(why, sizeof why);
            free(host);
            base_errf(err, errlen, "tower %d: reading layer %s's activations failed on its GPU: %s",
                      t, tower_plan_row(&m->plan, l)->name, why[0] ? why : "(no reason given)");
            return -1;
        }
#endif
        get(m, t, host, m->tw[t].acts[l].act, sizeof(real) * B * per);
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < per; i++)
                acts[b * all + (size_t)t * per + i] = (float)host[b * per + i];
    }
    free(host);
    return 0;
}

static real *arena_of(const model *m, int t, int which)
{
    const tower *tw = &m->tw[t];
    real *a = which == 0 ? tw->params : which == 1 ? tw->grads : which == 2 ? tw->momentum
                                                                            : tw->moment2;
    if (!a) { /* a caller's mistake (an SGD net has no second moment): say so, never guess */
        fprintf(stderr, "twotower: tower %d has no arena %d (%s)\n", t, which,
                which == 3 ? "the second moment is Adam's" : "not 0..3");
        exit(3);
    }
    return a;
}

void model_get_tensor(const model *m, int tower_index, int which, real *dst)
{
    get(m, tower_index, dst, arena_of(m, tower_index, which),
        sizeof(real) * m->plan.n_params);
}

void model_set_tensor(model *m, int tower_index, int which, const real *src)
{
    put(m, tower_index, arena_of(m, tower_index, which), src, sizeof(real) * m->plan.n_params);
}
