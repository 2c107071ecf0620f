/* test_order_cuda.c: the cross-stream ordering of the single-GPU fallback (both towers on
 * one GPU, --gpus 0) and its shared input. The two towers' streams meet only at events
 * (the exchanges' ready/done, the shared input's ready/free); the delay hook
 * (model_placement.debug_delay_us) makes one tower's stream late at every hand-over, so a
 * missing event would let the other tower read stale data and change the bits. Two
 * controls leave one event out and must see a difference, so the comparison can fail.
 * Every run takes uint8 batches from pinned memory through model_set_batch_u8, as the
 * trainer does. GPU tests skip without a device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "gpu_util.h"
#include "train/model.h"

/* DELAY_US at each of about a dozen points per step is long next to a step of the tiny
 * net (well under a millisecond of GPU work); the controls use a longer one so that the
 * race they open is lost by a wide margin on any GPU. */
enum { STEPS = 3, DELAY_US = 2000, CONTROL_DELAY_US = 20000 };

static const tower_config tiny = {.towers = 2, .classes = 10, .batch = 4, .in_size = 67,
                                  .in_ch = 3, .width_div = 8};
static const model_placement on_gpu0 = {.ngpus = 1, .gpus = {0, 0}};

/* One step's uint8 batch in pinned host memory (the prefetcher's kind). */
typedef struct {
    uint8_t *crops;           /* (B, S, S, 3) */
    data_aug_params *params;  /* (B) */
    int32_t *labels;          /* (B) */
} u8_batch;

static u8_batch batches[STEPS];
static float *mean_image; /* (DATA_SIZE, DATA_SIZE, 3) */

/* Batch s: a function of s alone, different for every step (so a stale input shows). */
static void make_batches(void)
{
    int B = tiny.batch, S = tiny.in_size, span = DATA_SIZE - S + 1;
    size_t nc = (size_t)B * S * S * 3;
    for (int s = 0; s < STEPS; s++) {
        u8_batch *b = &batches[s];
        TT_CUDA(cudaMallocHost((void **)&b->crops, nc));
        TT_CUDA(cudaMallocHost((void **)&b->params, sizeof(data_aug_params) * B));
        TT_CUDA(cudaMallocHost((void **)&b->labels, sizeof(int32_t) * B));
        uint64_t key = base_rng_mix(0x6f72646572ull, (uint64_t)s); /* "order" */
        for (size_t i = 0; i < nc; i++) b->crops[i] = (uint8_t)(base_rng_mix(key, i) >> 24);
        for (int i = 0; i < B; i++) {
            uint64_t r = base_rng_mix(key ^ 0x70ull, (uint64_t)i);
            b->params[i].oy = (int32_t)((r & 0xffff) % (uint64_t)span);
            b->params[i].ox = (int32_t)(((r >> 16) & 0xffff) % (uint64_t)span);
            b->params[i].mirror = (int32_t)((r >> 32) & 1);
            for (int c = 0; c < 3; c++)
                b->params[i].rgb[c] = 20.0f * base_rng_uniform(key ^ 0x72ull, 3 * (uint64_t)i + c) - 10.0f;
            b->labels[i] = (int32_t)(base_rng_mix(key ^ 0x6cull, (uint64_t)i) % (uint64_t)tiny.classes);
        }
    }
    mean_image = tt_host_alloc(DATA_IMAGE_BYTES);
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++)
        mean_image[i] = 100.0f + 50.0f * base_rng_uniform(0x6d65616eull, i);
}

static void free_batches(void)
{
    for (int s = 0; s < STEPS; s++) {
        cudaFreeHost(batches[s].crops);
        cudaFreeHost(batches[s].params);
        cudaFreeHost(batches[s].labels);
    }
    free(mean_image);
}

/* Every GPU test starts here: skip without a device, else make the batches (freed by
 * done()). */
static void begin(void)
{
    TT_NEED_GPUS(1);
    make_batches();
}

static void done(void) { free_batches(); }

/* What a run leaves: every step's loss, and each tower's weights, last gradients and
 * momentum. */
typedef struct {
    double loss[STEPS];
    float *arena[2][3];
    size_t n;
    int graph_state;   /* model.graph_state after the last step: 1 replayed, 0 never decided
                          (a hook keeps the step uncaptured), 2 uncaptured */
    char graph[512];   /* model_graph_describe: what was chosen and why */
} run_out;

static void run_u8(model_placement place, run_out *o)
{
    model m;
    char err[512] = "";
    cr_assert_eq(model_init(&m, &tiny, &place, 3, err, sizeof err), 0, "model_init: %s", err);
    for (int s = 0; s < STEPS; s++) {
        cr_assert_eq(model_set_batch_u8(&m, batches[s].crops, batches[s].params,
                                        batches[s].labels, mean_image, err, sizeof err),
                     0, "model_set_batch_u8: %s", err);
        o->loss[s] = model_train_step(&m, 0.01f);
        cr_assert(isfinite(o->loss[s]), "step %d: loss %g (%s)", s, o->loss[s], m.error);
    }
    /* bf16 on cuDNN with the hand-overs: conv1 reads the copy written with x, and with a
     * shared input tower 1 reads tower 0's (it has none to write); without them, none */
    if (place.precision == TOWER_PRECISION_BF16 && place.conv == TOWER_CONV_CUDNN) {
        int given = !place.test_no_input_handover;
        for (int t = 0; t < m.towers; t++)
            cr_assert_eq(tower_cuda_input_given_rows(&m.tw[t]) & 1, given,
                         "tower %d: conv1 %s its bf16 input", t, given ? "casts" : "is given");
        int shared = model_input_towers(&m) == 1;
        cr_assert_eq(tower_cuda_input_copy(&m.tw[1]) == NULL, shared || !given,
                     "tower 1 %s a bf16 input copy to write", shared ? "has" : "lacks");
    }
    cr_assert_eq(model_input_wait(&m, err, sizeof err), 0, "%s", err);
    o->n = m.plan.n_params;
    for (int t = 0; t < m.towers; t++)
        for (int which = 0; which < 3; which++) {
            o->arena[t][which] = tt_host_alloc(o->n);
            model_get_tensor(&m, t, which, o->arena[t][which]);
        }
    o->graph_state = m.graph_state;
    model_graph_describe(&m, o->graph, sizeof o->graph);
    model_free(&m);
}

static void run_free(run_out *o)
{
    for (int t = 0; t < tiny.towers; t++)
        for (int which = 0; which < 3; which++) free(o->arena[t][which]);
}

/* 1 when the two runs agree bit for bit in every loss and every arena; prints each
 * comparison. */
static int identical(const run_out *a, const run_out *b, const char *what)
{
    static const char *names[3] = {"weights", "gradients", "momentum"};
    int same = 1;
    for (int s = 0; s < STEPS; s++) {
        printf("%s: step %d loss %.9g vs %.9g\n", what, s, a->loss[s], b->loss[s]);
        same &= a->loss[s] == b->loss[s];
    }
    for (int t = 0; t < tiny.towers; t++)
        for (int which = 0; which < 3; which++) {
            char label[160];
            snprintf(label, sizeof label, "%s: tower %d %s", what, t, names[which]);
            same &= tt_compare(label, b->arena[t][which], a->arena[t][which], a->n, 0.0);
        }
    return same;
}

static void expect_identical(model_placement pa, model_placement pb, const char *what)
{
    run_out a, b;
    run_u8(pa, &a);
    run_u8(pb, &b);
    cr_assert(identical(&a, &b, what), "%s: the runs differ (see above)", what);
    run_free(&a);
    run_free(&b);
}

/* ---- the shared input: one upload and augmentation for both towers on one GPU -------- */

/* Tower 0's x is the CPU's augmentation bit for bit, tower 1's conv1 reads that same
 * buffer and labels, and a tower uploading its own copy (as on two GPUs) holds the same
 * bits; a float batch gives tower 1 its own input back. */
Test(cuda_order, shared_input_is_what_two_uploads_give, .timeout = 120)
{
    begin();
    model shared, own;
    model_placement per_tower = on_gpu0;
    per_tower.test_input_per_tower = 1;
    char err[512] = "";
    cr_assert_eq(model_init(&shared, &tiny, &on_gpu0, 3, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_init(&own, &tiny, &per_tower, 3, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_input_towers(&shared), 1);
    cr_assert_eq(model_input_towers(&own), 2);
    const u8_batch *b = &batches[1];
    cr_assert_eq(model_set_batch_u8(&shared, b->crops, b->params, b->labels, mean_image, err,
                                    sizeof err), 0, "%s", err);
    cr_assert_eq(model_set_batch_u8(&own, b->crops, b->params, b->labels, mean_image, err,
                                    sizeof err), 0, "%s", err);
    cr_assert_eq(model_input_wait(&shared, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_input_wait(&own, err, sizeof err), 0, "%s", err);
    cr_assert(shared.tw[1].acts[0].in == shared.tw[0].x, "tower 1 reads tower 0's x");
    cr_assert(shared.tw[1].labels == shared.tw[0].labels, "and its labels");
    cr_assert(own.tw[1].acts[0].in == own.tw[1].x, "a tower with its own upload reads it");
    cr_assert_null(shared.in_crops[1], "no staging for tower 1 when it shares tower 0's");
    TT_CUDA(cudaDeviceSynchronize());

    int B = tiny.batch, S = tiny.in_size;
    size_t nx = (size_t)B * 3 * S * S;
    float *ref = tt_host_alloc(nx), *x = tt_host_alloc(nx);
    data_augment_cpu(ref, b->crops, mean_image, b->params, B, S);
    const float *views[3] = {shared.tw[1].acts[0].in, own.tw[0].x, own.tw[1].x};
    const char *names[3] = {"shared x (tower 1's conv1 input)", "tower 0's own x",
                            "tower 1's own x"};
    for (int v = 0; v < 3; v++) {
        tt_dev_download(x, views[v], nx);
        cr_assert(tt_compare(names[v], x, ref, nx, 0.0), "%s differs from the CPU's", names[v]);
    }
    int32_t labels[2][8];
    TT_CUDA(cudaMemcpy(labels[0], shared.tw[1].labels, sizeof(int32_t) * B,
                       cudaMemcpyDeviceToHost));
    TT_CUDA(cudaMemcpy(labels[1], own.tw[1].labels, sizeof(int32_t) * B,
                       cudaMemcpyDeviceToHost));
    for (int i = 0; i < B; i++) {
        cr_assert_eq(labels[0][i], b->labels[i], "shared label %d", i);
        cr_assert_eq(labels[1][i], b->labels[i], "own label %d", i);
    }

    /* a float batch: every tower takes its own copy again */
    model_set_batch(&shared, ref, b->labels);
    cr_assert(shared.tw[1].acts[0].in == shared.tw[1].x && !shared.in_shared);
    cr_assert(shared.tw[1].labels == shared.in_own_labels[1]);
    tt_dev_download(x, shared.tw[1].x, nx);
    cr_assert(tt_compare("tower 1's x after a float batch", x, ref, nx, 0.0));
    free(ref);
    free(x);
    model_free(&shared);
    model_free(&own);
    done();
}

/* Whole steps: the shared input against each tower uploading its own, bit for bit, with
 * the tower threads and in the serial order. */
Test(cuda_order, shared_input_steps_equal_two_uploads, .timeout = 120)
{
    begin();
    for (int serial = 0; serial <= 1; serial++) {
        model_placement shared = on_gpu0, own = on_gpu0;
        shared.serial = own.serial = serial;
        own.test_input_per_tower = 1;
        expect_identical(shared, own, serial ? "shared vs own input, --serial"
                                             : "shared vs own input, threads");
    }
    done();
}

/* ---- the delay test ------------------------------------------------------------------- */

/* A late stream on either tower changes no bit: every hand-over between the towers'
 * streams is ordered by an event. With the tower threads and in the serial order, and
 * with per-tower inputs (where only the exchanges order the streams). */
Test(cuda_order, delay_on_either_tower_changes_nothing, .timeout = 300)
{
    begin();
    for (int variant = 0; variant < 3; variant++) {
        model_placement base = on_gpu0;
        base.serial = variant == 1;
        base.test_input_per_tower = variant == 2;
        const char *how = variant == 0 ? "threads" : variant == 1 ? "--serial"
                                                                  : "per-tower input";
        run_out ref;
        run_u8(base, &ref);
        for (int t = 0; t < 2; t++) {
            model_placement late = base;
            late.debug_delay_us = DELAY_US;
            late.debug_delay_tower = t;
            run_out o;
            run_u8(late, &o);
            char what[96];
            snprintf(what, sizeof what, "%s, tower %d %d us late", how, t, DELAY_US);
            cr_assert(identical(&ref, &o, what), "%s: the delay changed the result", what);
            run_free(&o);
        }
        run_free(&ref);
    }
    done();
}

/* The controls: with one event of the shared input left out, the same delay makes the
 * runs differ. Tower 1 not waiting for tower 0's upload: tower 0 late before it, tower 1's
 * conv1 reads the last batch's x (zeros in the first step). Tower 0 not waiting for
 * tower 1 to be done with the input: tower 1 late after its last exchange, its conv1's
 * backward reads the next batch's x. */
static void control_sees_a_missing_event(int drop, int late_tower, const char *what)
{
    begin();
    run_out ref, o;
    run_u8(on_gpu0, &ref);
    model_placement broken = on_gpu0;
    broken.test_drop_event = drop;
    broken.debug_delay_us = CONTROL_DELAY_US;
    broken.debug_delay_tower = late_tower;
    run_u8(broken, &o);
    cr_assert(!identical(&ref, &o, what),
              "%s: no difference with the event left out; the delay test could not see a "
              "missing event (is the delay hook working?)", what);
    run_free(&ref);
    run_free(&o);
    done();
}

Test(cuda_order, control_missing_input_ready_is_seen, .timeout = 120)
{
    control_sees_a_missing_event(MODEL_TEST_DROP_INPUT_READY, 0,
                                 "input-ready left out, tower 0 late");
}

/* Tower 0 not waiting for its copy stream: the copy stream late (the delay hook spins on
 * it too, before the upload), tower 0 augments the staging before the crops are in. */
Test(cuda_order, control_missing_upload_is_seen, .timeout = 120)
{
    control_sees_a_missing_event(MODEL_TEST_DROP_UPLOADED, 0,
                                 "input-uploaded left out, the copy stream late");
}

Test(cuda_order, control_missing_input_free_is_seen, .timeout = 120)
{
    control_sees_a_missing_event(MODEL_TEST_DROP_INPUT_FREE, 1,
                                 "input-free left out, tower 1 late");
}

/* ---- bf16 on cuDNN: conv1's bf16 input written with x ----------------------------------- */

/* The augmentation writing conv1's bf16 input beside x (tower 1's conv1 reading tower 0's,
 * on the same events as x) changes no bit against each tower's conv1 casting x itself
 * (test_no_input_handover, which also turns off the other bf16 hand-overs: the same bits
 * too), with the shared input and with each tower's own; and a late stream on either tower
 * changes nothing (a copy read before its writer, or overwritten while read, would). */
Test(cuda_order, bf16_input_copy_changes_nothing, .timeout = 300)
{
    TT_NEED_GPUS(1);
    TT_NEED_CUDNN();
    make_batches();
    model_placement base = on_gpu0;
    base.conv = TOWER_CONV_CUDNN;
    base.precision = TOWER_PRECISION_BF16;
    model_placement cast = base;
    cast.test_no_input_handover = 1;
    run_out ref;
    run_u8(cast, &ref);
    /* --graph auto, the default: without a delay hook the step is replayed from a graph
     * (auto's own check found it equal to the uncaptured step), so the copies are checked
     * in the replayed step too; the delayed runs are uncaptured (a debug hook is unfit
     * for capture) and compared with the replayed reference */
    cr_assert_eq(ref.graph_state, 1, "conv1 casting x: the step was not replayed: %s",
                 ref.graph);
    for (int variant = 0; variant < 4; variant++) {
        model_placement p = base;
        p.test_input_per_tower = variant == 1;
        if (variant >= 2) {
            p.debug_delay_us = DELAY_US;
            p.debug_delay_tower = variant - 2;
        }
        const char *what = variant == 0   ? "bf16 input copy, shared"
                           : variant == 1 ? "bf16 input copy, per tower"
                           : variant == 2 ? "bf16 input copy, tower 0 late"
                                          : "bf16 input copy, tower 1 late";
        run_out o;
        run_u8(p, &o);
        /* the delayed runs never capture (graph_unfit: a debug hook), so their state stays
         * undecided (0) and the description says why */
        cr_assert_eq(o.graph_state, variant < 2 ? 1 : 0, "%s: graph state %d: %s", what,
                     o.graph_state, o.graph);
        if (variant >= 2)
            cr_assert(strstr(o.graph, "uncaptured (a test or debug hook is on)"), "%s: %s",
                      what, o.graph);
        cr_assert(identical(&ref, &o, what), "%s: differs from conv1 casting x", what);
        run_free(&o);
    }
    run_free(&ref);
    done();
}
