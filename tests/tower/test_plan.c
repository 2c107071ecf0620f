/* The plan and the init against the paper: spatial sizes 224 -> 55 -> 27 -> 13 -> 6,
 * 60,965,224 parameters for two towers, the per-layer counts and multiply-adds, the
 * one-tower ("half the kernels") net, N(0, 0.01) weights and the paper's 0/1 biases,
 * and seeds that reproduce. Every expected number is computed here from the paper's
 * widths, not read from net.c's table. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tower/tower.h"

/* The paper's figure 2 (paper_notes.md), per tower of the two-tower net; fc8: 1000 in all */
static const char *const names[8] = {"conv1", "conv2", "conv3", "conv4",
                                     "conv5", "fc6",   "fc7",   "fc8"};
static const int width[8] = {48, 128, 192, 192, 128, 2048, 2048, 1000};
static const int ksize[8] = {11, 5, 3, 3, 3, 1, 1, 1};
static const int both[8] = {0, 0, 1, 0, 0, 1, 1, 1}; /* reads every tower's output */
static const int bias_one[8] = {0, 1, 0, 1, 1, 1, 1, 0}; /* section 5 */
/* conv output side and the side after pooling, 224 input (paper_notes.md) */
static const int side_out[8] = {55, 27, 13, 13, 13, 1, 1, 1};
static const int side_fin[8] = {27, 13, 13, 13, 6, 1, 1, 1};

static tower_plan make(int towers, int classes, int batch, int in_size, int div)
{
    tower_config cfg = {towers, classes, batch, in_size, 3, div};
    tower_plan p;
    char err[256] = "";
    cr_assert_eq(tower_plan_make(&p, &cfg, err, sizeof err), 0, "tower_plan_make: %s", err);
    return p;
}

/* Parameters of one tower computed from the widths alone: each layer reads its own
 * tower's previous output, or every tower's when it reads both. */
static size_t expect_params(int towers, size_t *w_count, size_t *b_count)
{
    size_t total = 0;
    int in_ch = 3, in_side = 224;
    for (int l = 0; l < 8; l++) {
        int out = l == 7 ? width[7] / towers : width[l];
        int sources = both[l] ? towers : 1;
        size_t fan_in = l < 5 ? (size_t)sources * in_ch * ksize[l] * ksize[l]
                              : (size_t)sources * in_ch * in_side * in_side;
        w_count[l] = (size_t)out * fan_in;
        b_count[l] = (size_t)out;
        total += w_count[l] + b_count[l];
        in_ch = out;
        in_side = side_fin[l];
    }
    return total;
}

Test(plan, paper_shapes_and_counts)
{
    tower_plan p = make(2, 1000, 1, 224, 1);
    size_t wc[8], bc[8];
    size_t per_tower = expect_params(2, wc, bc);
    cr_assert_eq(per_tower * 2, (size_t)60965224, "independent count %zu x 2", per_tower);
    cr_assert_eq(p.n_params, per_tower, "n_params %zu, want %zu", p.n_params, per_tower);
    cr_assert_eq(2 * p.n_params, (size_t)60965224, "two towers: %zu, the paper 60,965,224",
                 2 * p.n_params);
    cr_assert_eq(p.vt, 500, "fc8 outputs per tower %d", p.vt);

    /* paper's neuron counts for both towers after layers 2..8 (the first, 253,440, is a
     * known slip in the paper; 55*55*96 = 290,400) */
    const long neurons[8] = {290400, 186624, 64896, 64896, 43264, 4096, 4096, 1000};
    size_t off = 0;
    double macs = 0.0;
    int in_side = 224;
    for (int l = 0; l < 8; l++) {
        const tower_layer_shape *L = &p.layer[l];
        cr_assert_eq(L->out_h, side_out[l], "%s out side %d want %d", names[l], L->out_h,
                     side_out[l]);
        cr_assert_eq(L->final_h, side_fin[l], "%s final side %d want %d", names[l], L->final_h,
                     side_fin[l]);
        cr_assert_eq(L->sources, both[l] ? 2 : 1, "%s sources %d", names[l], L->sources);
        cr_assert_eq(L->out_ch, l == 7 ? 500 : width[l], "%s out_ch %d", names[l], L->out_ch);
        cr_assert_eq(L->w_count, wc[l], "%s w_count %zu want %zu", names[l], L->w_count, wc[l]);
        cr_assert_eq(L->b_count, bc[l], "%s b_count %zu want %zu", names[l], L->b_count, bc[l]);
        /* one arena: [w conv1][b conv1]...[w fc8][b fc8], no gaps */
        cr_assert_eq(L->w_off, off, "%s w_off %zu want %zu", names[l], L->w_off, off);
        cr_assert_eq(L->b_off, off + wc[l], "%s b_off %zu", names[l], L->b_off);
        off += wc[l] + bc[l];
        long n = 2L * L->out_ch * L->out_h * L->out_h;
        cr_assert_eq(n, neurons[l], "%s neurons (both towers) %ld want %ld", names[l], n,
                     neurons[l]);
        /* multiply-adds per image: one per weight per output position */
        double want_macs = (double)wc[l] * side_out[l] * side_out[l];
        cr_assert(L->macs == want_macs, "%s macs %.0f want %.0f", names[l], L->macs, want_macs);
        macs += 2.0 * L->macs;
        cr_assert_eq(L->in_h, l < 5 ? in_side : 1, "%s in_h %d", names[l], L->in_h);
        in_side = side_fin[l];
    }
    cr_assert_eq(off, p.n_params, "layers cover %zu of %zu parameters", off, p.n_params);
    /* the paper: 724.4 M multiply-adds per image, both towers */
    cr_assert(fabs(macs - 724.4e6) < 0.05e6, "forward multiply-adds %.1f M, paper 724.4 M",
              macs / 1e6);
    /* literal per-tower counts: conv1 17,472 ... fc8 2,048,500 */
    const size_t lit[8] = {17472, 153728, 442560, 331968, 221312, 18876416, 8390656, 2048500};
    for (int l = 0; l < 8; l++)
        cr_assert_eq(wc[l] + bc[l], lit[l], "%s: %zu parameters, want %zu", names[l],
                     wc[l] + bc[l], lit[l]);
}

Test(plan, one_tower_half_the_kernels)
{
    /* Section 3.2's comparison net: one tower alone with the same per-tower widths
     * 48/128/192/192/128/2048/2048 and all 1000 classes. conv3, fc6, fc7 and fc8 read
     * one tower instead of two:
     *   conv1 17,472 + conv2 153,728 + conv3 221,376 + conv4 331,968 + conv5 221,312
     *   + fc6 9,439,232 + fc7 4,196,352 + fc8 2,049,000 = 16,630,440 */
    tower_plan p = make(1, 1000, 1, 224, 1);
    size_t wc[8], bc[8];
    size_t want = expect_params(1, wc, bc);
    cr_assert_eq(want, (size_t)16630440, "independent count %zu", want);
    cr_assert_eq(p.n_params, want, "one tower: %zu parameters, want %zu", p.n_params, want);
    cr_assert_eq(p.vt, 1000);
    for (int l = 0; l < 8; l++) {
        cr_assert_eq(p.layer[l].sources, 1, "%s sources %d", names[l], p.layer[l].sources);
        cr_assert_eq(p.layer[l].w_count, wc[l], "%s w_count %zu want %zu", names[l],
                     p.layer[l].w_count, wc[l]);
        cr_assert_eq(p.layer[l].final_h, side_fin[l]);
    }
}

Test(plan, width_div_keeps_topology)
{
    /* the tiny test nets: every width divided, fc8 keeps classes/towers */
    tower_plan p = make(2, 10, 2, 67, 8);
    for (int l = 0; l < 7; l++)
        cr_assert_eq(p.layer[l].out_ch, width[l] / 8, "%s out_ch %d", names[l],
                     p.layer[l].out_ch);
    cr_assert_eq(p.layer[7].out_ch, 5);
    /* 67 -> conv1 (67 + 4 - 11)/4 + 1 = 16 -> pool 7 -> 7 -> pool 3 -> 3 -> 3 -> 3 -> pool 1 */
    const int fin[5] = {7, 3, 3, 3, 1};
    for (int l = 0; l < 5; l++)
        cr_assert_eq(p.layer[l].final_h, fin[l], "%s final side %d want %d", names[l],
                     p.layer[l].final_h, fin[l]);
    cr_assert_eq(p.layer[5].in_ch, 16 * 1 * 1, "fc6 reads %d features per tower",
                 p.layer[5].in_ch);
}

Test(plan, rejects_unusable_configs)
{
    const tower_config bad[] = {
        {2, 999, 1, 224, 3, 1}, /* classes not divisible by towers */
        {3, 999, 1, 224, 3, 1}, /* three towers */
        {2, 1000, 1, 30, 3, 1}, /* too small: pool5 would have no output */
        {2, 1000, 0, 224, 3, 1}, /* no batch */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tower_plan p;
        char err[256] = "";
        cr_assert_eq(tower_plan_make(&p, &bad[i], err, sizeof err), -1, "config %zu accepted",
                     i);
        cr_assert(err[0] != '\0', "config %zu rejected without a message", i);
    }
}

/* mean, standard deviation and the fraction within one standard deviation of 0 */
static void stats(const real *x, size_t n, double *mean, double *sd, double *in1)
{
    double s = 0.0, s2 = 0.0;
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
        c += fabs((double)x[i]) < TOWER_INIT_STD;
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
    *in1 = (double)c / (double)n;
}

Test(plan, paper_init_and_seeds, .timeout = 120)
{
    tower_plan p = make(2, 1000, 1, 224, 1);
    real *a = malloc(p.n_params * sizeof *a), *b = malloc(p.n_params * sizeof *b);
    cr_assert(a && b, "two arenas of %zu parameters", p.n_params);
    tower_init_params(a, &p, 0, 1234);
    for (int t = 0; t < 2; t++) {
        const real *prm = a;
        if (t == 1) {
            tower_init_params(b, &p, 1, 1234);
            prm = b;
        }
        for (int l = 0; l < 8; l++) {
            const tower_layer_shape *L = &p.layer[l];
            double mean, sd, in1, n = (double)L->w_count;
            stats(prm + L->w_off, L->w_count, &mean, &sd, &in1);
            /* 5 standard errors: mean 0.01/sqrt(n), sample sd 0.01/sqrt(2n), and the
             * N(0,1) mass within one sigma 0.6827 with sd sqrt(p(1-p)/n); a uniform draw
             * of the same std would put only 0.577 there */
            cr_assert(fabs(mean) <= 5.0 * TOWER_INIT_STD / sqrt(n),
                      "tower %d %s weight mean %.3g (n %.0f)", t, names[l], mean, n);
            cr_assert(fabs(sd - TOWER_INIT_STD) <= 5.0 * TOWER_INIT_STD / sqrt(2.0 * n),
                      "tower %d %s weight std %.5g, want 0.01", t, names[l], sd);
            cr_assert(fabs(in1 - 0.6827) <= 5.0 * sqrt(0.6827 * 0.3173 / n),
                      "tower %d %s: %.4f of weights within 1 std, N(0,1) has 0.6827", t,
                      names[l], in1);
            for (size_t i = 0; i < L->b_count; i++)
                cr_assert(prm[L->b_off + i] == (real)bias_one[l],
                          "tower %d %s bias[%zu] = %g, want %d", t, names[l], i,
                          (double)prm[L->b_off + i], bias_one[l]);
        }
    }
    /* tower 1 draws its own weights: (almost) no weight equals tower 0's */
    size_t same = 0, nw = 0;
    for (int l = 0; l < 8; l++)
        for (size_t i = 0; i < p.layer[l].w_count; i++, nw++)
            same += a[p.layer[l].w_off + i] == b[p.layer[l].w_off + i];
    cr_assert(same < nw / 1000, "%zu of %zu weights equal between tower 0 and 1", same, nw);
    /* the same seed gives bit-identical parameters; another seed does not */
    tower_init_params(b, &p, 0, 1234);
    cr_assert(memcmp(a, b, p.n_params * sizeof *a) == 0, "same seed, different parameters");
    tower_init_params(b, &p, 0, 1235);
    cr_assert(memcmp(a, b, p.layer[0].w_count * sizeof *a) != 0, "seed 1235 gave seed 1234's");
    free(a);
    free(b);
}

Test(plan, tower_init_arena)
{
    /* tower_init writes the same init as tower_init_params, and the named views point at
     * the plan's offsets */
    tower_plan p = make(2, 10, 2, 67, 8);
    tower t;
    char err[256] = "";
    cr_assert_eq(tower_init(&t, &p, 1, 99, err, sizeof err), 0, "tower_init: %s", err);
    real *want = malloc(p.n_params * sizeof *want);
    cr_assert_not_null(want);
    tower_init_params(want, &p, 1, 99);
    cr_assert(memcmp(t.params, want, p.n_params * sizeof *want) == 0,
              "tower_init params differ from tower_init_params");
    for (int l = 0; l < 8; l++) {
        cr_assert(t.w[l] == t.params + p.layer[l].w_off, "%s w view", names[l]);
        cr_assert(t.b[l] == t.params + p.layer[l].b_off, "%s b view", names[l]);
        cr_assert(t.dw[l] == t.grads + p.layer[l].w_off, "%s dw view", names[l]);
        cr_assert(t.db[l] == t.grads + p.layer[l].b_off, "%s db view", names[l]);
    }
    cr_assert_eq(t.index, 1);
    cr_assert(t.x == t.acts[0].in, "x is conv1's input");
    free(want);
    tower_free(&t);
}

Test(plan, dropout_keys_distinct)
{
    /* the masks of the two towers, of successive steps and of fc6 and fc7 must differ
     * (the same mask everywhere would correlate units the paper drops independently),
     * and the keys are pure functions of their arguments */
    uint64_t k00 = tower_step_key(7, 0, 0), k01 = tower_step_key(7, 0, 1);
    uint64_t k10 = tower_step_key(7, 1, 0), k00b = tower_step_key(8, 0, 0);
    cr_assert(k00 != k01 && k00 != k10 && k00 != k00b && k01 != k10,
              "step keys collide: %llx %llx %llx %llx", (unsigned long long)k00,
              (unsigned long long)k01, (unsigned long long)k10, (unsigned long long)k00b);
    cr_assert(tower_step_key(7, 0, 0) == k00, "tower_step_key is not a pure function");
    cr_assert(tower_layer_key(k00, 5) != tower_layer_key(k00, 6), "fc6 and fc7 share a key");
    cr_assert(tower_layer_key(k00, 5) != tower_layer_key(k01, 5), "towers share fc6's key");
    cr_assert(tower_layer_key(k00, 5) == tower_layer_key(k00, 5));
}

/* The CPU's lean arena (tower_carve, net.c): the parts tower_memory reports add up to the
 * arena, it is smaller than the full layout of the same plan, and every buffer the
 * forward keeps lies outside the gradient regions, every activation gradient inside them
 * (the regions are carved after the loss buffers, before the conv scratch). */
Test(plan, lean_arena_parts_and_regions)
{
    tower_plan p = make(2, 10, 3, 67, 8);
    tower t;
    char err[256] = "";
    cr_assert_eq(tower_init(&t, &p, 0, 5, err, sizeof err), 0, "tower_init: %s", err);
    cr_assert(t.ops->lean, "the CPU tower's arena is lean");
    tower_mem m, full;
    tower_memory(&t, &m);
    cr_assert_eq(m.total, t.arena_bytes);
    size_t sum = m.params + m.input + m.grads + m.loss + m.scratch, regions = 0;
    for (int l = 0; l < p.n_layers; l++) sum += m.kept[l];
    for (int r = 0; r < 3; r++) regions += m.grad_part[r];
    cr_assert_eq(sum, m.total, "parts %zu, arena %zu", sum, m.total);
    cr_assert_eq(regions, m.grads, "the lean gradients are the regions");
    tower probe;
    memset(&probe, 0, sizeof probe);
    probe.plan = p; /* no ops: the full layout (the CUDA backend's) */
    tower_memory(&probe, &full);
    cr_assert_eq(full.total, tower_carve(&probe, NULL));
    cr_assert(full.total > m.total, "full %zu, lean %zu", full.total, m.total);
    cr_assert(full.grad_part[0] == 0 && full.grad_part[2] == 0);
    const char *lo = (const char *)t.acts[p.n_layers - 1].dout, *hi = (const char *)t.col;
    for (int l = 0; l < p.n_layers; l++) {
        const tower_acts *A = &t.acts[l];
        const void *kept[4] = {A->in, A->act, A->out, A->pool_idx};
        const void *grad[3] = {A->dout, A->dact, A->din};
        for (int i = 0; i < 4; i++)
            cr_assert(!kept[i] || (const char *)kept[i] < lo, "%s kept buffer %d in a region",
                      names[l], i);
        for (int i = 0; i < 3; i++)
            cr_assert(l == 0 && i == 2 ? !grad[i]
                                       : (const char *)grad[i] >= lo &&
                                             (const char *)grad[i] < hi,
                      "%s gradient %d outside the regions", names[l], i);
        cr_assert_null(A->lrn_scale, "%s keeps no LRN scale", names[l]);
        /* what runs in place: dropout, LRN, activation; a pool writes a buffer of its own */
        cr_assert(A->dact == (p.layer[l].pool_k ? A->dact : A->dout));
        if (p.layer[l].pool_k) cr_assert(A->dpool == A->dout && A->dact != A->dout);
        if (l > 0) cr_assert(A->din != A->dact, "%s din is its own buffer", names[l]);
    }
    tower_free(&t);
}
