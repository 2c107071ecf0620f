/* End-to-end gradient check of the whole two-tower net in double (model.c and the tower
 * library built with -DTOWER_F64, host exchange): the mean loss of model_forward(train=1)
 * differentiated by finite differences with respect to a sample of the weights AND
 * biases of EVERY layer of BOTH towers, against model_backward's gradients. This covers
 * what the per-layer checks cannot: the wiring between layers, the gathered buffers and
 * the reduce-scatter at conv3/fc6/fc7/fc8, the logits exchange and the dropout masks.
 *
 * Tolerance: per element |fd - g| / max(|fd|, |g|, 1e-3) <= 1e-6: relative 1e-6 for
 * gradients of 1e-3 and more (the sampled layers' rms gradients are 0.01-0.2), absolute
 * 1e-9 below that, and exact zeros (dead ReLUs, dropped units, where the loss does not
 * move at all) must come out as 0 to 1e-9. Why the 1e-3 floor: the loss (~2.4) is
 * computed to a few ulps, ~1e-15, so a difference over 2h = 2e-5 carries ~1e-10 of
 * rounding, which is 1e-6 of a 1e-4 gradient (measured: 4e-7 there); at 1e-3 the margin
 * is ten-fold. The finite difference is Richardson-extrapolated central differences,
 * (4 D(h/2) - D(h)) / 3 with h = 1e-5, so truncation is O(h^4) and negligible.
 * h = 1e-5 rather than larger: at 1e-4 about 15% of the perturbations cross a ReLU or
 * pooling kink somewhere in the net. A wrong wire (a missing reduce-scatter term, a slot
 * swapped, a mask regenerated with another key) is an
 * O(1) relative error. ReLU and max-pool kinks: every evaluation records which units
 * are active and which inputs the pools chose; a sample whose perturbation changes
 * either is a kink crossing, not a gradient error, and is skipped (and counted). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "train/model.h"

_Static_assert(sizeof(real) == sizeof(double), "this test needs the TOWER_F64 model");

#define FD_TOL 1e-6
#define FD_H 1e-5
#define PER_LAYER 12 /* weights and biases sampled per layer per tower */
#define MIN_GRAD 1e-3

/* The activity pattern of a forward pass: which ReLU outputs are > 0 and which input
 * each max-pool window chose, in every layer of every tower. */
typedef struct {
    unsigned char *bits;
    size_t n;
} pattern;

static size_t pattern_size(const model *m)
{
    size_t n = 0, B = (size_t)m->plan.cfg.batch;
    for (int t = 0; t < m->towers; t++)
        for (int l = 0; l < m->plan.n_layers; l++) {
            const tower_layer_shape *L = &m->plan.layer[l];
            if (L->act == TOWER_ACT_RELU) /* tanh has no kink */
                n += B * L->out_ch * L->out_h * L->out_h;
            if (L->pool_k)
                n += B * L->final_ch * L->final_h * L->final_h * sizeof(int32_t);
        }
    return n;
}

static void pattern_take(const model *m, pattern *p)
{
    size_t k = 0, B = (size_t)m->plan.cfg.batch;
    for (int t = 0; t < m->towers; t++)
        for (int l = 0; l < m->plan.n_layers; l++) {
            const tower_layer_shape *L = &m->plan.layer[l];
            const tower_acts *A = &m->tw[t].acts[l];
            if (L->act == TOWER_ACT_RELU) {
                size_t n = B * L->out_ch * L->out_h * L->out_h;
                for (size_t i = 0; i < n; i++)
                    p->bits[k++] = A->act[i] > 0;
            }
            if (L->pool_k) {
                size_t n = B * L->final_ch * L->final_h * L->final_h * sizeof(int32_t);
                memcpy(p->bits + k, A->pool_idx, n);
                k += n;
            }
        }
    cr_assert_eq(k, p->n);
}

typedef struct {
    model m;
    real *params[2];
    real *grads[2];
    pattern base, probe;
} fd_net;

/* Weights N(0, 2/fan_in) (fc8: 1/fan_in) and biases U(-0.1, 0.1): activations and
 * gradients of order one in every layer, unlike the paper's init whose 0.01 weights make
 * the gradients of the early layers of a tiny net ~1e-10, below what a finite difference
 * can resolve. The init itself is tested in tests/tower/test_plan.c. */
static void set_params(fd_net *f, uint64_t seed)
{
    chk_rng r;
    chk_rng_seed(&r, seed);
    const tower_plan *p = &f->m.plan;
    for (int t = 0; t < f->m.towers; t++) {
        for (int l = 0; l < p->n_layers; l++) {
            const tower_layer_shape *L = &p->layer[l];
            double fan_in = (double)L->w_count / (double)L->out_ch;
            double sd = sqrt((l == p->n_layers - 1 ? 1.0 : 2.0) / fan_in);
            for (size_t i = 0; i < L->w_count; i++)
                f->params[t][L->w_off + i] = sd * chk_normal(&r);
            for (size_t i = 0; i < L->b_count; i++)
                f->params[t][L->b_off + i] = chk_uniform(&r, -0.1, 0.1);
        }
        model_set_tensor(&f->m, t, 0, f->params[t]);
    }
}

static void net_open(fd_net *f, const tower_config *net_cfg, uint64_t seed)
{
    /* batch 2 so the batch mean and the per-sample slots are both exercised */
    tower_config cfg = *net_cfg;
    model_placement place = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
    char err[256] = "";
    cr_assert_eq(model_init(&f->m, &cfg, &place, seed, err, sizeof err), 0, "model_init: %s",
                 err);
    size_t np = f->m.plan.n_params;
    for (int t = 0; t < 2; t++) {
        f->params[t] = calloc(np, sizeof(real));
        f->grads[t] = calloc(np, sizeof(real));
        cr_assert(f->params[t] && f->grads[t]);
    }
    f->base.n = f->probe.n = pattern_size(&f->m);
    f->base.bits = malloc(f->base.n);
    f->probe.bits = malloc(f->probe.n);
    cr_assert(f->base.bits && f->probe.bits);
    set_params(f, seed + 1);

    chk_rng r;
    chk_rng_seed(&r, seed + 2);
    size_t nx = (size_t)cfg.batch * cfg.in_ch * cfg.in_size * cfg.in_size;
    float *x = malloc(nx * sizeof *x);
    cr_assert_not_null(x);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)chk_uniform(&r, -1.0, 1.0);
    /* one label in each tower's half of the classes (tower 0 holds 0-4 when T = 2) */
    int32_t labels[2] = {3, 7};
    model_set_batch(&f->m, x, labels);
    free(x);
}

static void net_close(fd_net *f)
{
    model_free(&f->m);
    for (int t = 0; t < 2; t++)
        free(f->params[t]), free(f->grads[t]);
    free(f->base.bits);
    free(f->probe.bits);
}

/* Loss with parameter i of tower t set to v; *same: the activity pattern matched base. */
static double loss_at(fd_net *f, int t, size_t i, double v, int *same)
{
    double save = f->params[t][i];
    f->params[t][i] = v;
    model_set_tensor(&f->m, t, 0, f->params[t]);
    double loss = model_forward(&f->m, 1);
    pattern_take(&f->m, &f->probe);
    *same &= memcmp(f->probe.bits, f->base.bits, f->base.n) == 0;
    f->params[t][i] = save;
    model_set_tensor(&f->m, t, 0, f->params[t]);
    return loss;
}

/* Central difference on the steps actually taken, Richardson-extrapolated. */
static double fd_at(fd_net *f, int t, size_t i, int *same)
{
    double x = f->params[t][i], d[2];
    for (int k = 0; k < 2; k++) {
        double h = k == 0 ? FD_H : FD_H / 2, xp = x + h, xm = x - h;
        d[k] = (loss_at(f, t, i, xp, same) - loss_at(f, t, i, xm, same)) / (xp - xm);
    }
    return (4.0 * d[1] - d[0]) / 3.0;
}

/* A net of the given towers at in_size, batch 2, 10 classes: the default net of its tower
 * count, or `net` (a preset with switches) when not NULL. */
static tower_config fd_config(int towers, int in_size, int width_div, const tower_net *net)
{
    tower_config cfg = {towers, 10, 2, in_size, 3, width_div};
    if (net) cfg.net = *net;
    return cfg;
}

static void check_cfg(const tower_config *cfg, int64_t step, uint64_t seed, int dropout)
{
    fd_net f;
    int towers = cfg->towers;
    net_open(&f, cfg, seed);
    f.m.step = step; /* fixed dropout masks: model_forward keys on m->step */
    double loss = model_forward(&f.m, 1);
    cr_assert(isfinite(loss) && loss > 0.0, "loss %g", loss);
    cr_assert_eq(f.m.step, step, "model_forward advanced the step");
    pattern_take(&f.m, &f.base);
    model_backward(&f.m);
    for (int t = 0; t < towers; t++)
        model_get_tensor(&f.m, t, 1, f.grads[t]);
    /* the forward is a pure function of parameters, batch and step: dropout is on
     * (evaluation scaling gives another loss) and its masks follow the step */
    if (dropout) {
        cr_assert(model_forward(&f.m, 0) != loss, "train=1 and train=0 give the same loss");
        f.m.step = step + 1;
        cr_assert(model_forward(&f.m, 1) != loss, "steps %lld and %lld drew the same masks",
                  (long long)step, (long long)step + 1);
    }
    f.m.step = step;
    cr_assert(model_forward(&f.m, 1) == loss, "forward is not repeatable");

    chk_rng r;
    chk_rng_seed(&r, seed + 3);
    size_t checked = 0, skipped = 0, small = 0;
    double worst = 0.0;
    for (int t = 0; t < towers; t++)
        for (int l = 0; l < f.m.plan.n_layers; l++) {
            const tower_layer_shape *L = &f.m.plan.layer[l];
            for (int kind = 0; kind < 2; kind++) { /* 0 weights, 1 biases */
                size_t off = kind ? L->b_off : L->w_off, cnt = kind ? L->b_count : L->w_count;
                size_t layer_checked = 0;
                for (int s = 0; s < 4 * PER_LAYER && layer_checked < PER_LAYER &&
                                s < 4 * (int)cnt;
                     s++) {
                    size_t i = off + (size_t)chk_uniform(&r, 0.0, (double)cnt);
                    double g = f.grads[t][i];
                    small += fabs(g) < MIN_GRAD;
                    int same = 1;
                    double fd = fd_at(&f, t, i, &same);
                    if (!same) {
                        skipped++;
                        continue;
                    }
                    double e = chk_rel(g, fd, MIN_GRAD);
                    if (e > worst)
                        worst = e;
                    cr_expect(e <= FD_TOL,
                              "tower %d %s %s[%zu]: backward %.12g, finite difference %.12g "
                              "(rel err %.3g)",
                              t, tower_plan_row(&f.m.plan, l)->name, kind ? "b" : "w", i - off,
                              g, fd, e);
                    layer_checked++;
                    checked++;
                }
                /* every layer of every tower must contribute samples */
                size_t need = cnt < PER_LAYER / 2 ? cnt : PER_LAYER / 2;
                cr_expect(layer_checked >= need,
                          "tower %d %s %s: only %zu gradients checked", t,
                          tower_plan_row(&f.m.plan, l)->name, kind ? "b" : "w", layer_checked);
            }
        }
    char sw[128];
    tower_net_switches_describe(&f.m.plan.cfg.net.switches, sw, sizeof sw);
    cr_log_info("%s (%s), towers %d: %zu gradients checked (%zu below %g), %zu kink "
                "crossings skipped, worst rel err %.3g",
                f.m.plan.cfg.net.name, sw, towers, checked, small, MIN_GRAD, skipped, worst);
    cr_assert(skipped * 10 <= checked, "%zu kink crossings for %zu checks", skipped, checked);
    net_close(&f);
}

static void check_net(int towers, int in_size, int width_div, int64_t step, uint64_t seed)
{
    tower_config cfg = fd_config(towers, in_size, width_div, NULL);
    check_cfg(&cfg, step, seed, 1);
}

/* a preset with switches on top, on one tower */
static void check_switched(const char *preset, const char *key, const char *value,
                           int in_size, int64_t step, uint64_t seed, int dropout)
{
    tower_net net = *tower_net_preset(preset);
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    char err[256] = "";
    if (key) {
        cr_assert_eq(tower_net_switch_parse(&sw, key, value, err, sizeof err), 0, "%s", err);
        cr_assert_eq(tower_net_apply(&net, &sw, err, sizeof err), 0, "%s", err);
    }
    tower_config cfg = fd_config(net.towers, in_size, 8, &net);
    cfg.in_ch = net.in_ch;
    check_cfg(&cfg, step, seed, dropout);
}

Test(model_fd, two_towers_dropout_on, .timeout = 120)
{
    /* 95 -> conv1 23 -> pool 11 -> 11 -> pool 5 -> 5 -> 5 -> 5 -> pool 2: fc6 reads a 2x2
     * map per channel, so the (C, H, W) flattening is exercised */
    check_net(2, 95, 8, 5, 1001);
}

Test(model_fd, one_tower_dropout_on, .timeout = 120)
{
    check_net(1, 95, 8, 3, 1002);
}

/* tanh in every hidden layer (no kinks but the pools'); the switched nets run on one tower
 * at 67 pixels, which keeps the suite's time (the towers' wiring is the first test's, the
 * flattening of a 2x2 map into fc6 the 95-pixel tests' and the 2:2 one's) */
Test(model_fd, tanh, .timeout = 120)
{
    check_switched("half", "act", "tanh", 67, 4, 1003, 1);
}

/* the paper's non-overlapping comparison pooling, 2:2: 67 -> 16 -> pool 8 -> 8 -> pool 4
 * -> 4 -> 4 -> 4 -> pool 2 (fc6 reads a 2x2 map per channel) */
Test(model_fd, pool_2_2, .timeout = 120)
{
    check_switched("half", "pool", "2:2", 67, 6, 1004, 1);
}

/* a net without LRN whose dropout sits on the inputs of fc6 and fc7 and rescales
 * (torchvision's layout, so conv5's pooled output is dropped too) */
Test(model_fd, torchvision_no_lrn_inverted_dropout, .timeout = 120)
{
    check_switched("torchvision", NULL, NULL, 67, 7, 1005, 1);
}

/* LRN switched off on the paper's layout */
Test(model_fd, lrn_off, .timeout = 120)
{
    check_switched("half", "lrn", "off", 67, 8, 1006, 1);
}
