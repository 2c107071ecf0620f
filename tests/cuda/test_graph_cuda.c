/* test_graph_cuda.c: the training step as one CUDA graph (model_placement.graph, docs/GPU.md
 * "One step as one CUDA graph"): the captured-and-replayed step against the uncaptured one,
 * bit for bit (every step's loss; each tower's weights, last gradients, momentum and Adam's
 * second moment), with both towers on one GPU (--gpus 0), threaded and --serial, over
 * several steps with dropout and a learning-rate change, with SGD and with Adam, from float
 * batches and from the shared uint8 input; auto's check keeping the graph; the loss read
 * one step late; the trainer's checked step skipping a non-finite update on the device.
 * GPU tests skip with a reason when no CUDA device is present. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "gpu_util.h"
#include "train/model.h"

enum { STEPS = 5 };

/* the paper's net at 1/8 width: dropout on fc6 and fc7 */
static const tower_config tiny = {.towers = 2, .classes = 10, .batch = 4, .in_size = 67,
                                  .in_ch = 3, .width_div = 8};
static const model_placement on_gpu0 = {.ngpus = 1, .gpus = {0, 0}};

/* step s's learning rate: a drop after step 2, as the schedule's */
static real lr_of(int s) { return s < 3 ? 0.01f : 0.001f; }

/* What a run leaves: every step's loss and each tower's arenas (params, grads, momentum,
 * Adam's second moment where the net has one). */
typedef struct {
    double loss[STEPS];
    float *arena[2][4];
    size_t n;
    char graph[600];
    int graph_state;
} run_out;

static void batch_float(const tower_config *cfg, int s, float *x, int32_t *labels)
{
    size_t n = (size_t)cfg->batch * cfg->in_ch * cfg->in_size * cfg->in_size;
    tt_fill_normal(x, n, 0x6772617068ull + (uint64_t)s, 1.0f); /* "graph" */
    for (int b = 0; b < cfg->batch; b++)
        labels[b] = (int32_t)(base_rng_mix(0x6c61ull + (uint64_t)s, (uint64_t)b) %
                              (uint64_t)cfg->classes);
}

/* mode 0: model_train_step; 1: model_train_step_deferred (losses collected one step late
 * and at the end); 2: model_train_step_checked; 3: model_train_step, the parameters
 * written from the host as 1.5 times themselves before step 3 (as a checkpoint's load
 * writes them: a replayed step must read them, and in bf16 cast them again) */
static void run_float(const tower_config *cfg, model_placement place, int mode, run_out *o)
{
    model m;
    char err[512] = "";
    cr_assert_eq(model_init(&m, cfg, &place, 3, err, sizeof err), 0, "model_init: %s", err);
    size_t n = (size_t)cfg->batch * cfg->in_ch * cfg->in_size * cfg->in_size;
    float *x = tt_host_alloc(n);
    int32_t *labels = calloc((size_t)cfg->batch, sizeof(int32_t));
    cr_assert_not_null(labels);
    for (int s = 0; s < STEPS; s++) {
        if (mode == 3 && s == 3) {
            float *p = tt_host_alloc(m.plan.n_params);
            for (int t = 0; t < m.towers; t++) {
                model_get_tensor(&m, t, 0, p);
                for (size_t i = 0; i < m.plan.n_params; i++) p[i] *= 1.5f;
                model_set_tensor(&m, t, 0, p);
            }
            free(p);
        }
        batch_float(cfg, s, x, labels);
        model_set_batch(&m, x, labels);
        if (mode == 1) {
            double before = model_train_step_deferred(&m, lr_of(s));
            if (s > 0) o->loss[s - 1] = before;
        } else {
            o->loss[s] = mode == 2 ? model_train_step_checked(&m, lr_of(s))
                                   : model_train_step(&m, lr_of(s));
        }
        cr_assert(!m.failed, "step %d: %s", s, m.error);
    }
    if (mode == 1) o->loss[STEPS - 1] = model_step_loss(&m);
    cr_assert(!m.failed, "%s", m.error);
    o->n = m.plan.n_params;
    for (int t = 0; t < m.towers; t++)
        for (int which = 0; which < 4; which++) {
            o->arena[t][which] = NULL;
            if (which == 3 && !m.tw[t].moment2) continue;
            o->arena[t][which] = tt_host_alloc(o->n);
            model_get_tensor(&m, t, which, o->arena[t][which]);
        }
    model_graph_describe(&m, o->graph, sizeof o->graph);
    o->graph_state = m.graph_state;
    printf("graph: %s\n", o->graph);
    model_free(&m);
    free(x);
    free(labels);
}

static void expect_same(const run_out *a, const run_out *b, int towers, const char *what)
{
    static const char *names[4] = {"weights", "gradients", "momentum", "second moment"};
    for (int s = 0; s < STEPS; s++) {
        printf("%s: step %d loss %.17g vs %.17g\n", what, s, a->loss[s], b->loss[s]);
        cr_assert(memcmp(&a->loss[s], &b->loss[s], sizeof(double)) == 0,
                  "%s: step %d loss %.17g vs %.17g", what, s, a->loss[s], b->loss[s]);
    }
    for (int t = 0; t < towers; t++)
        for (int which = 0; which < 4; which++) {
            if (!a->arena[t][which] && !b->arena[t][which]) continue;
            cr_assert(a->arena[t][which] && b->arena[t][which]);
            char w[128];
            snprintf(w, sizeof w, "%s: tower %d %s", what, t, names[which]);
            cr_assert(tt_compare(w, a->arena[t][which], b->arena[t][which], a->n, 0.0),
                      "%s differ", w);
        }
}

static void free_run(run_out *o)
{
    for (int t = 0; t < 2; t++)
        for (int which = 0; which < 4; which++) free(o->arena[t][which]);
}

static void graph_vs_uncaptured(const tower_config *cfg, model_placement place, int mode,
                                const char *what)
{
    model_placement on = place, off = place;
    on.graph = MODEL_GRAPH_ON;
    off.graph = MODEL_GRAPH_OFF;
    run_out g, u;
    memset(&g, 0, sizeof g);
    memset(&u, 0, sizeof u);
    run_float(cfg, on, mode, &g);
    run_float(cfg, off, mode, &u);
    cr_assert_eq(g.graph_state, 1, "%s: the step was not replayed from a graph: %s", what,
                 g.graph);
    cr_assert_eq(u.graph_state, 2, "%s: --graph off captured: %s", what, u.graph);
    expect_same(&g, &u, cfg->towers, what);
    free_run(&g);
    free_run(&u);
}

Test(cuda_graph, replay_equals_uncaptured_threaded, .timeout = 120)
{
    TT_NEED_GPUS(1);
    graph_vs_uncaptured(&tiny, on_gpu0, 0, "--gpus 0 threaded, graph vs uncaptured");
}

Test(cuda_graph, replay_equals_uncaptured_serial, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model_placement serial = on_gpu0;
    serial.serial = 1;
    graph_vs_uncaptured(&tiny, serial, 0, "--gpus 0 --serial, graph vs uncaptured");
}

/* bf16 on cuDNN (and on the GEMM path): the weights' bf16 copy the update writes and the
 * forward's cast skips while it is current (a flag the replayed kernels read on the
 * device), the hand-overs, the kept activations with --bf16-acts: replayed as run */
Test(cuda_graph, replay_equals_uncaptured_bf16, .timeout = 300)
{
    TT_NEED_GPUS(1);
    model_placement p = on_gpu0;
    p.precision = TOWER_PRECISION_BF16;
    graph_vs_uncaptured(&tiny, p, 0, "--precision bf16, graph vs uncaptured");
    if (!tower_cuda_have_cudnn()) return;
    p.conv = TOWER_CONV_CUDNN;
    graph_vs_uncaptured(&tiny, p, 0, "--precision bf16 --conv cudnn, graph vs uncaptured");
    /* the parameters written between replays: the replayed forward's cast must see the
     * flag the write cleared (a cast decided at capture would read the stale copy) */
    graph_vs_uncaptured(&tiny, p, 3, "--precision bf16 --conv cudnn, parameters written "
                                     "before step 3, graph vs uncaptured");
    p.bf16_acts = 1;
    graph_vs_uncaptured(&tiny, p, 0, "--precision bf16 --conv cudnn --bf16-acts, graph vs "
                                     "uncaptured");
}

/* Adam's scalars change every step (its bias corrections): they reach the graph through
 * the staged step scalars as the learning rate does */
Test(cuda_graph, replay_equals_uncaptured_adam, .timeout = 120)
{
    TT_NEED_GPUS(1);
    tower_config cfg = tiny;
    cfg.net = *tower_net_preset("fmnist");
    cfg.towers = cfg.net.towers;
    cfg.in_ch = cfg.net.in_ch;
    graph_vs_uncaptured(&cfg, on_gpu0, 0, "fmnist (Adam), graph vs uncaptured");
}

/* inverted dropout on conv5's pooled output and fc6's */
Test(cuda_graph, replay_equals_uncaptured_torchvision, .timeout = 120)
{
    TT_NEED_GPUS(1);
    tower_config cfg = tiny;
    cfg.net = *tower_net_preset("torchvision");
    cfg.towers = cfg.net.towers;
    cfg.in_ch = cfg.net.in_ch;
    graph_vs_uncaptured(&cfg, on_gpu0, 0, "torchvision, graph vs uncaptured");
}

/* a one-tower net: no second stream to fork and join */
Test(cuda_graph, replay_equals_uncaptured_one_tower, .timeout = 120)
{
    TT_NEED_GPUS(1);
    tower_config cfg = tiny;
    cfg.towers = 1;
    graph_vs_uncaptured(&cfg, on_gpu0, 0, "one tower, graph vs uncaptured");
}

/* the default: auto captures, checks the first replay against the uncaptured step and,
 * the bits being the same, keeps the graph; its run equals --graph off's */
Test(cuda_graph, auto_keeps_the_graph, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model_placement aut = on_gpu0, off = on_gpu0;
    off.graph = MODEL_GRAPH_OFF;
    run_out a, u;
    memset(&a, 0, sizeof a);
    memset(&u, 0, sizeof u);
    run_float(&tiny, aut, 0, &a);
    run_float(&tiny, off, 0, &u);
    cr_assert_eq(a.graph_state, 1, "auto did not keep the graph: %s", a.graph);
    cr_assert(strstr(a.graph, "auto: the whole step captured once and replayed"), "%s", a.graph);
    expect_same(&a, &u, tiny.towers, "auto vs off");
    free_run(&a);
    free_run(&u);
}

/* the loss read one step late gives every step's loss, and the same state */
Test(cuda_graph, deferred_loss_equals_synchronous, .timeout = 120)
{
    TT_NEED_GPUS(1);
    model_placement on = on_gpu0;
    on.graph = MODEL_GRAPH_ON;
    run_out d, s;
    memset(&d, 0, sizeof d);
    memset(&s, 0, sizeof s);
    run_float(&tiny, on, 1, &d);
    run_float(&tiny, on, 0, &s);
    expect_same(&d, &s, tiny.towers, "deferred vs synchronous loss");
    free_run(&d);
    free_run(&s);
}

/* The trainer's step (model_train_step_checked): a label out of range makes the loss NaN,
 * and the update kernel itself skips it on the device, in the graph as uncaptured: the
 * weights and momentum stay as they were, m->updates does not count it. */
Test(cuda_graph, checked_step_skips_a_nonfinite_update, .timeout = 120)
{
    TT_NEED_GPUS(1);
    for (int graph = MODEL_GRAPH_ON; graph <= MODEL_GRAPH_OFF; graph++) {
        model_placement place = on_gpu0;
        place.graph = graph;
        model m;
        char err[512] = "";
        cr_assert_eq(model_init(&m, &tiny, &place, 3, err, sizeof err), 0, "%s", err);
        size_t n = (size_t)tiny.batch * 3 * tiny.in_size * tiny.in_size, np = m.plan.n_params;
        float *x = tt_host_alloc(n), *before = tt_host_alloc(np), *after = tt_host_alloc(np);
        int32_t labels[4];
        batch_float(&tiny, 0, x, labels);
        model_set_batch(&m, x, labels);
        double good = model_train_step_checked(&m, 0.01f);
        cr_assert(isfinite(good) && m.updates == 1, "loss %g, %lld updates (%s)", good,
                  (long long)m.updates, m.error);
        labels[1] = 1000; /* out of range: that sample's loss, so the mean, is NaN */
        model_set_batch(&m, x, labels);
        model_get_tensor(&m, 1, 0, before);
        double bad = model_train_step_checked(&m, 0.01f);
        model_get_tensor(&m, 1, 0, after);
        cr_assert(isnan(bad) && !m.failed, "loss %g (%s)", bad, m.error);
        cr_assert_eq(m.updates, 1, "the skipped update was counted");
        cr_assert_eq(m.step, 2);
        cr_assert(memcmp(before, after, sizeof(float) * np) == 0,
                  "graph %d: the weights changed in a non-finite step", graph);
        /* and the next good step updates again, as update number 2 */
        labels[1] = 2;
        model_set_batch(&m, x, labels);
        cr_assert(isfinite(model_train_step_checked(&m, 0.01f)) && m.updates == 2);
        free(x);
        free(before);
        free(after);
        model_free(&m);
    }
}

/* ---- the shared uint8 input (model_set_batch_u8: tower 1 reads tower 0's x, ordered by
 * the input's events outside the graph) -------------------------------------------------- */

static void run_u8(model_placement place, run_out *o)
{
    int B = tiny.batch, S = tiny.in_size, span = DATA_SIZE - S + 1;
    size_t nc = (size_t)B * S * S * 3;
    uint8_t *crops;
    data_aug_params *params;
    int32_t *labels;
    TT_CUDA(cudaMallocHost((void **)&crops, nc));
    TT_CUDA(cudaMallocHost((void **)&params, sizeof(data_aug_params) * B));
    TT_CUDA(cudaMallocHost((void **)&labels, sizeof(int32_t) * B));
    float *mean = tt_host_alloc(DATA_IMAGE_BYTES);
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
        mean[i] = 100.0f + 50.0f * base_rng_uniform(0x6d65616eull, i);
    model m;
    char err[512] = "";
    cr_assert_eq(model_init(&m, &tiny, &place, 3, err, sizeof err), 0, "model_init: %s", err);
    for (int s = 0; s < STEPS; s++) {
        /* the host buffers are refilled only after the last upload is done reading them */
        cr_assert_eq(model_input_wait(&m, err, sizeof err), 0, "%s", err);
        uint64_t key = base_rng_mix(0x7538ull, (uint64_t)s);
        for (size_t i = 0; i < nc; i++) crops[i] = (uint8_t)(base_rng_mix(key, i) >> 24);
        for (int i = 0; i < B; i++) {
            uint64_t r = base_rng_mix(key ^ 0x70ull, (uint64_t)i);
            params[i].oy = (int32_t)((r & 0xffff) % (uint64_t)span);
            params[i].ox = (int32_t)(((r >> 16) & 0xffff) % (uint64_t)span);
            params[i].mirror = (int32_t)((r >> 32) & 1);
            for (int c = 0; c < 3; c++) params[i].rgb[c] = 0;
            labels[i] = (int32_t)(base_rng_mix(key ^ 0x6cull, (uint64_t)i) %
                                  (uint64_t)tiny.classes);
        }
        cr_assert_eq(model_set_batch_u8(&m, crops, params, labels, mean, err, sizeof err), 0,
                     "%s", err);
        o->loss[s] = model_train_step(&m, lr_of(s));
        cr_assert(!m.failed, "step %d: %s", s, m.error);
    }
    cr_assert_eq(model_input_wait(&m, err, sizeof err), 0, "%s", err);
    o->n = m.plan.n_params;
    for (int t = 0; t < m.towers; t++)
        for (int which = 0; which < 4; which++) {
            o->arena[t][which] = NULL;
            if (which == 3) continue;
            o->arena[t][which] = tt_host_alloc(o->n);
            model_get_tensor(&m, t, which, o->arena[t][which]);
        }
    model_graph_describe(&m, o->graph, sizeof o->graph);
    o->graph_state = m.graph_state;
    model_free(&m);
    cudaFreeHost(crops);
    cudaFreeHost(params);
    cudaFreeHost(labels);
    free(mean);
}

/* base with --graph on against --graph off on the shared uint8 input: the replayed step
 * equal to the uncaptured one */
static void shared_input_graph_vs_uncaptured(model_placement base, const char *what)
{
    model_placement on = base, off = base;
    on.graph = MODEL_GRAPH_ON;
    off.graph = MODEL_GRAPH_OFF;
    run_out g, u;
    memset(&g, 0, sizeof g);
    memset(&u, 0, sizeof u);
    run_u8(on, &g);
    run_u8(off, &u);
    cr_assert_eq(g.graph_state, 1, "%s: %s", what, g.graph);
    expect_same(&g, &u, tiny.towers, what);
    free_run(&g);
    free_run(&u);
}

Test(cuda_graph, replay_equals_uncaptured_shared_input, .timeout = 120)
{
    TT_NEED_GPUS(1);
    shared_input_graph_vs_uncaptured(on_gpu0, "shared uint8 input, graph vs uncaptured");
}

/* The same in bf16 on cuDNN, with and without --bf16-acts: the replayed step reads the
 * hand-overs' copies (conv1's written with the shared image by tower 0 and read by tower 1,
 * the pooled and chained inputs, the kept activations), so a copy the graph left stale
 * shows up as a difference from the uncaptured step. */
Test(cuda_graph, replay_equals_uncaptured_shared_input_bf16_cudnn, .timeout = 300)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    model_placement p = on_gpu0;
    p.precision = TOWER_PRECISION_BF16;
    p.conv = TOWER_CONV_CUDNN;
    shared_input_graph_vs_uncaptured(p, "shared uint8 input, bf16 on cuDNN");
    p.bf16_acts = 1;
    shared_input_graph_vs_uncaptured(p, "shared uint8 input, bf16 on cuDNN, --bf16-acts");
}

/* Two GPUs never capture (the NCCL exchange waits on the host inside a step): --graph on
 * runs them uncaptured and says why. */
Test(cuda_graph, two_gpus_run_uncaptured, .timeout = 120)
{
    TT_NEED_GPUS(2);
    model_placement two = {.ngpus = 2, .gpus = {0, 1}, .graph = MODEL_GRAPH_ON};
    run_out o;
    memset(&o, 0, sizeof o);
    run_float(&tiny, two, 0, &o);
    cr_assert(strstr(o.graph, "two GPUs"), "%s", o.graph);
    free_run(&o);
}
