/* The net descriptions: the seven presets and what they plan to, the default net being
 * the paper's (and `half` for one tower) exactly, the switches on top of a preset and the
 * ones refused, rows that make no sense, where dropout stages land, PyTorch's init, and
 * the Adam arena. Parameter counts are held against PyTorch models in
 * tests/reference/test_nets.py; here the structure. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tower/tower.h"

static const char *const NAMES[7] = {"alexnet2012", "alexnet2012-1gpu", "half", "merged",
                                     "alexnet2014", "torchvision", "fmnist"};

static int plan_of(tower_plan *p, const tower_net *net, int size, int width_div, char *err,
                   size_t errlen)
{
    tower_config cfg = {net->towers, 10, 2, size, net->in_ch, width_div};
    cfg.net = *net;
    return tower_plan_make(p, &cfg, err, errlen);
}

static tower_net preset(const char *name)
{
    const tower_net *n = tower_net_preset(name);
    cr_assert_not_null(n, "no preset %s", name);
    return *n;
}

Test(nets, seven_presets)
{
    int ids[8] = {0};
    cr_assert_null(tower_net_preset("alexnet"), "a name that is no preset");
    cr_assert_null(tower_net_preset_at(7));
    cr_assert_null(tower_net_preset_id(0));
    for (int i = 0; i < 7; i++) {
        const tower_net *n = tower_net_preset_at(i);
        cr_assert_not_null(n);
        cr_assert_str_eq(n->name, NAMES[i], "preset %d is %s", i, n->name);
        cr_assert(strstr(tower_net_names(), n->name), "%s not in tower_net_names()", n->name);
        cr_assert(n->id >= 1 && n->id <= 7 && !ids[n->id], "%s: id %d", n->name, n->id);
        ids[n->id] = 1;
        cr_assert(tower_net_preset_id(n->id) == n && tower_net_preset(n->name) == n);
        cr_assert(n->about && strlen(n->about) > 20, "%s has no one-line description", n->name);
        cr_assert_eq(n->n_layers, 8, "%s", n->name);
        static const char *const rows[8] = {"conv1", "conv2", "conv3", "conv4",
                                            "conv5", "fc6",   "fc7",   "fc8"};
        for (int l = 0; l < 8; l++)
            cr_assert_str_eq(n->layer[l].name, rows[l], "%s row %d", n->name, l);
        /* every preset plans at its own size, full width */
        tower_config cfg = {n->towers, n->classes, 1, n->in_size, n->in_ch, 1};
        cfg.net = *n;
        tower_plan p;
        char err[256] = "";
        cr_assert_eq(tower_plan_make(&p, &cfg, err, sizeof err), 0, "%s: %s", n->name, err);
        cr_assert_eq(p.adam, n->optim.kind == TOWER_OPTIM_ADAM, "%s", n->name);
        cr_assert(n->lr > 0 && n->batch > 0 && n->epochs > 0, "%s training defaults", n->name);
        cr_assert(!tower_net_switched(&n->switches), "%s comes with switches", n->name);
    }
    cr_assert_eq(tower_net_preset("fmnist")->in_ch, 1);
    cr_assert_eq(tower_net_preset("fmnist")->classes, 10);
    cr_assert_eq(tower_net_preset("fmnist")->optim.kind, TOWER_OPTIM_ADAM);
    cr_assert_eq(tower_net_preset("alexnet2012")->towers, 2);
}

/* a zeroed net in a config is the paper's (two towers) or half (one): the same plan,
 * byte for byte, and the same init */
Test(nets, default_net_is_the_preset)
{
    for (int towers = 1; towers <= 2; towers++) {
        tower_config plain = {towers, 10, 2, 67, 3, 8}, named = plain;
        named.net = preset(towers == 2 ? "alexnet2012" : "half");
        tower_plan a, b;
        char err[256];
        cr_assert_eq(tower_plan_make(&a, &plain, err, sizeof err), 0, "%s", err);
        cr_assert_eq(tower_plan_make(&b, &named, err, sizeof err), 0, "%s", err);
        cr_assert(a.n_params == b.n_params && a.vt == b.vt && a.adam == b.adam &&
                  a.n_layers == b.n_layers, "towers %d: the plans differ", towers);
        for (int l = 0; l < a.n_layers; l++) {
            const tower_layer_shape *x = &a.layer[l], *y = &b.layer[l];
            cr_assert(x->in_ch == y->in_ch && x->sources == y->sources && x->in_h == y->in_h &&
                      x->out_ch == y->out_ch && x->out_h == y->out_h &&
                      x->final_h == y->final_h && x->w_off == y->w_off &&
                      x->b_off == y->b_off && x->w_count == y->w_count && x->act == y->act &&
                      x->lrn == y->lrn && x->pool_k == y->pool_k && x->pool_s == y->pool_s &&
                      x->drop_p == y->drop_p && x->drop_scale == y->drop_scale,
                      "towers %d: layer %d differs", towers, l);
        }
        cr_assert_str_eq(a.cfg.net.name, b.cfg.net.name);
        cr_assert_str_eq(tower_config_net(&plain)->name, named.net.name);
        real *pa = malloc(sizeof(real) * a.n_params), *pb = malloc(sizeof(real) * a.n_params);
        cr_assert(pa && pb);
        tower_init_params(pa, &a, 0, 9);
        tower_init_params(pb, &b, 0, 9);
        cr_assert(!memcmp(pa, pb, sizeof(real) * a.n_params));
        free(pa), free(pb);
    }
    /* --towers 1 and --net half are one net; the preset refuses the other tower count */
    tower_config two = {2, 10, 2, 67, 3, 8};
    two.net = preset("half");
    tower_plan p;
    char err[256] = "";
    cr_assert_eq(tower_plan_make(&p, &two, err, sizeof err), -1);
    cr_assert(strstr(err, "half") && strstr(err, "tower"), "%s", err);
}

Test(nets, switches_apply_to_every_matching_row)
{
    char err[256] = "";
    tower_net n = preset("alexnet2012");
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    cr_assert_eq(tower_net_switch_parse(&sw, "pool", "2:2", err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_net_switch_parse(&sw, "act", "tanh", err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_net_switch_parse(&sw, "dropout", "0.3", err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_net_switch_parse(&sw, "lrn", "off", err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    int pools = 0, drops = 0;
    for (int l = 0; l < 8; l++) {
        const tower_layer_spec *s = &n.layer[l];
        if (s->pool.k) {
            cr_assert(s->pool.k == 2 && s->pool.stride == 2, "%s pool %d:%d", s->name,
                      s->pool.k, s->pool.stride);
            pools++;
        }
        cr_assert_eq(s->act, l < 7 ? TOWER_ACT_TANH : TOWER_ACT_NONE, "%s act", s->name);
        cr_assert(!s->lrn.on, "%s still has LRN", s->name);
        if (s->dropout.p > 0) {
            cr_assert(s->dropout.p == 0.3, "%s p %g", s->name, s->dropout.p);
            drops++;
        }
    }
    cr_assert(pools == 3 && drops == 2, "pools %d dropouts %d", pools, drops);
    char d[256];
    tower_net_switches_describe(&n.switches, d, sizeof d);
    cr_assert_str_eq(d, "lrn off, pool 2:2, act tanh, dropout 0.3");

    /* lrn on: after conv1 and conv2 with the paper's constants, on a net without any */
    n = preset("torchvision");
    sw = TOWER_SWITCHES_KEEP;
    sw.lrn = 1;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    for (int l = 0; l < 8; l++)
        cr_assert_eq(n.layer[l].lrn.on, l < 2, "torchvision %s lrn", n.layer[l].name);
    cr_assert(n.layer[1].lrn.n == 5 && n.layer[1].lrn.k == 2.0 && n.layer[1].lrn.alpha == 1e-4 &&
              n.layer[1].lrn.beta == 0.75);
    /* dropout 0: no dropout stage anywhere */
    n = preset("torchvision");
    sw = TOWER_SWITCHES_KEEP;
    sw.dropout = 0;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    tower_plan p;
    cr_assert_eq(plan_of(&p, &n, 67, 8, err, sizeof err), 0, "%s", err);
    for (int l = 0; l < 8; l++) cr_assert(p.layer[l].drop_p == 0, "layer %d drops", l);
    /* the optimizer and its constants */
    n = preset("alexnet2012");
    sw = TOWER_SWITCHES_KEEP;
    cr_assert_eq(tower_net_switch_parse(&sw, "optim", "adam", err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_net_switch_parse(&sw, "beta2", "0.99", err, sizeof err), 0, "%s", err);
    cr_assert_eq(tower_net_switch_parse(&sw, "weight-decay", "0", err, sizeof err), 0, "%s",
                 err);
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    cr_assert(n.optim.kind == TOWER_OPTIM_ADAM && n.optim.beta2 == 0.99 &&
              n.optim.weight_decay == 0 && n.optim.beta1 == 0.9 && n.optim.eps == 1e-8);
    cr_assert_eq(plan_of(&p, &n, 67, 8, err, sizeof err), 0, "%s", err);
    cr_assert(p.adam);
}

/* each refusal names the switch and leaves the net as it was */
static void refused(const char *net, const char *key, const char *value, const char *needle)
{
    tower_net n = preset(net), before = n;
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    char err[256] = "";
    int rc = tower_net_switch_parse(&sw, key, value, err, sizeof err);
    if (rc == 0) rc = tower_net_apply(&n, &sw, err, sizeof err);
    cr_assert_eq(rc, -1, "%s %s on %s accepted", key, value, net);
    cr_assert(strstr(err, needle), "%s %s: message '%s' lacks '%s'", key, value, err, needle);
    cr_assert(!memcmp(&n, &before, sizeof n), "%s %s: the net changed", key, value);
}

Test(nets, senseless_switches_refused)
{
    refused("alexnet2012", "pool", "3:4", "'3:4'");        /* strides past the window */
    refused("alexnet2012", "pool", "2x2", "pool");
    refused("alexnet2012", "pool", "0:1", "pool");
    refused("alexnet2012", "act", "sigmoid", "act");
    refused("alexnet2012", "lrn", "maybe", "lrn");
    refused("alexnet2012", "dropout", "1", "dropout");
    refused("alexnet2012", "dropout", "-0.1", "dropout");
    refused("alexnet2012", "optim", "rmsprop", "optim");
    refused("fmnist", "momentum", "0.5", "Adam");          /* momentum is SGD's */
    refused("alexnet2012", "beta1", "0.8", "SGD");         /* betas are Adam's */
    refused("alexnet2012", "eps", "0", "eps");
    refused("alexnet2012", "colour", "on", "unknown switch");
    /* the struct's own check, without the text */
    tower_net n = preset("alexnet2012");
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    char err[256] = "";
    sw.pool_k = 3, sw.pool_s = 4;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), -1);
    cr_assert(strstr(err, "pool 3:4") && strstr(err, "skip"), "%s", err);
    sw = TOWER_SWITCHES_KEEP;
    /* a dropout switch on a net with no dropout left */
    sw.dropout = 0;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    sw.dropout = 0.5;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), -1);
    cr_assert(strstr(err, "no dropout"), "%s", err);
}

/* sizes are the plan's: a pooling switch that leaves a layer no output is refused there */
Test(nets, switch_too_big_for_the_input)
{
    tower_net n = preset("alexnet2012");
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    char err[256] = "";
    sw.pool_k = 5, sw.pool_s = 5;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    tower_plan p;
    cr_assert_eq(plan_of(&p, &n, 67, 8, err, sizeof err), -1);
    cr_assert(strstr(err, "pool 5:5") && strstr(err, "too small"), "%s", err);
    /* 2:2 at 31: conv1 7 -> 3 -> conv2 3 -> 1 -> conv5 1, whose 2x2 pool has no window */
    n = preset("alexnet2012");
    sw.pool_k = 2, sw.pool_s = 2;
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    cr_assert_eq(plan_of(&p, &n, 31, 8, err, sizeof err), -1);
    cr_assert(strstr(err, "pool 2:2") && strstr(err, "conv5"), "%s", err);
    cr_assert_eq(plan_of(&p, &n, 67, 8, err, sizeof err), 0, "%s", err);
    cr_assert_eq(p.layer[4].final_h, 2, "67 at 2:2: conv5 4x4 -> 2x2");
}

/* rows that cannot run, whatever the size */
static void bad_row(void (*edit)(tower_net *), const char *needle)
{
    tower_net n = preset("half");
    edit(&n);
    tower_plan p;
    char err[256] = "";
    cr_assert_eq(plan_of(&p, &n, 67, 8, err, sizeof err), -1, "accepted (%s)", needle);
    cr_assert(strstr(err, needle), "'%s' lacks '%s'", err, needle);
}
static void conv_after_fc(tower_net *n) { n->layer[6].kind = TOWER_CONV; }
static void last_is_conv(tower_net *n) { n->n_layers = 5; }
static void first_reads_all(tower_net *n) { n->layer[0].reads = TOWER_READS_ALL; }
static void even_lrn(tower_net *n) { n->layer[0].lrn.n = 4; }
static void pool_on_fc(tower_net *n) { n->layer[5].pool = (tower_pool_spec){3, 2}; }
static void drop_on_image(tower_net *n)
{
    n->layer[0].dropout = (tower_dropout_spec){0.5, TOWER_DROP_INPUT, TOWER_DROP_PAPER};
}
static void drop_twice(tower_net *n)
{
    n->layer[6].dropout.where = TOWER_DROP_INPUT; /* fc6's output, twice */
}
static void bad_act(tower_net *n) { n->layer[2].act = 7; }

Test(nets, senseless_rows_refused)
{
    bad_row(conv_after_fc, "after an fc");
    bad_row(last_is_conv, "must be fc");
    bad_row(first_reads_all, "image");
    bad_row(even_lrn, "odd window");
    bad_row(pool_on_fc, "pool");
    bad_row(drop_on_image, "image");
    bad_row(drop_twice, "one place");
    bad_row(bad_act, "activation");
}

/* torchvision's dropout on fc6's and fc7's inputs is the stage after conv5's pool and
 * after fc6's ReLU, inverted; the paper's is on fc6's and fc7's outputs, unscaled */
Test(nets, dropout_stages_land_where_the_rows_say)
{
    tower_plan p;
    char err[256];
    cr_assert_eq(plan_of(&p, tower_net_preset("torchvision"), 67, 8, err, sizeof err), 0, "%s",
                 err);
    for (int l = 0; l < 8; l++) {
        int want = l == 4 || l == 5;
        cr_assert_eq(p.layer[l].drop_p > 0, want, "torchvision layer %d drop %g", l,
                     p.layer[l].drop_p);
        if (want)
            cr_assert(p.layer[l].drop_scale == TOWER_DROP_INVERTED && p.layer[l].drop_row == l + 1);
    }
    cr_assert_eq(plan_of(&p, tower_net_preset("alexnet2012"), 67, 8, err, sizeof err), 0);
    for (int l = 0; l < 8; l++) {
        int want = l == 5 || l == 6;
        cr_assert_eq(p.layer[l].drop_p > 0, want, "alexnet2012 layer %d", l);
        if (want) cr_assert(p.layer[l].drop_scale == TOWER_DROP_PAPER && p.layer[l].drop_row == l);
    }
    /* a tower carves conv5's pooled output apart from the dropped one it hands on */
    tower t;
    cr_assert_eq(plan_of(&p, tower_net_preset("torchvision"), 67, 8, err, sizeof err), 0);
    cr_assert_eq(tower_init(&t, &p, 0, 3, err, sizeof err), 0, "%s", err);
    cr_assert(t.acts[4].pool != t.acts[4].out && t.acts[4].out == t.acts[5].in);
    cr_assert_null(t.moment2, "an SGD net has no second moment");
    tower_free(&t);
    cr_assert_eq(plan_of(&p, tower_net_preset("fmnist"), 67, 8, err, sizeof err), 0);
    cr_assert_eq(tower_init(&t, &p, 0, 3, err, sizeof err), 0, "%s", err);
    cr_assert_not_null(t.moment2, "Adam's second moment");
    cr_assert(t.moment2 >= t.momentum + p.n_params, "moment2 overlaps momentum");
    for (size_t i = 0; i < p.n_params; i++) cr_assert(t.moment2[i] == 0);
    tower_free(&t);
}

/* PyTorch's default init: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
Test(nets, torch_init)
{
    tower_plan p;
    char err[256];
    cr_assert_eq(plan_of(&p, tower_net_preset("torchvision"), 67, 4, err, sizeof err), 0);
    real *w = malloc(sizeof(real) * p.n_params);
    cr_assert_not_null(w);
    tower_init_params(w, &p, 0, 5);
    for (int l = 0; l < 8; l++) {
        const tower_layer_shape *L = &p.layer[l];
        double bound = 1.0 / sqrt((double)(L->w_count / L->out_ch)), s = 0, s2 = 0;
        for (size_t i = 0; i < L->w_count; i++) {
            double x = w[L->w_off + i];
            cr_assert(fabs(x) <= bound, "layer %d weight %g past %g", l, x, bound);
            s += x;
            s2 += x * x;
        }
        double n = (double)L->w_count, var = s2 / n - (s / n) * (s / n);
        /* U(-b, b) has variance b^2 / 3; 5 standard errors of the sample variance */
        cr_assert(fabs(var - bound * bound / 3) <= 5 * bound * bound * sqrt(4.0 / 45 / n),
                  "layer %d weight variance %g, U(-%g, %g) has %g", l, var, bound, bound,
                  bound * bound / 3);
        int distinct = 0;
        for (size_t i = 0; i < L->b_count; i++) {
            cr_assert(fabs(w[L->b_off + i]) <= bound);
            distinct += i > 0 && w[L->b_off + i] != w[L->b_off];
        }
        cr_assert(distinct > 0 || L->b_count == 1, "layer %d biases all equal", l);
    }
    free(w);
}

Test(nets, init_switch)
{
    /* --init torch: PyTorch's defaults on every row; --init paper on a torch-init preset:
     * N(0, 0.01) with the paper's biases (1 in conv2, conv4, conv5 and the hidden fc
     * layers, 0 in conv1, conv3 and the last); on a paper-init preset it changes nothing */
    char err[256] = "", d[256];
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    cr_assert_eq(tower_net_switch_parse(&sw, "init", "torch", err, sizeof err), 0, "%s", err);
    tower_net n = preset("alexnet2012");
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    for (int l = 0; l < n.n_layers; l++)
        cr_assert_eq(n.layer[l].init.kind, TOWER_INIT_TORCH, "%s", n.layer[l].name);
    tower_net_switches_describe(&n.switches, d, sizeof d);
    cr_assert_str_eq(d, "init torch");
    cr_assert(tower_net_switched(&n.switches));

    sw = TOWER_SWITCHES_KEEP;
    cr_assert_eq(tower_net_switch_parse(&sw, "init", "paper", err, sizeof err), 0, "%s", err);
    n = preset("torchvision");
    cr_assert_eq(tower_net_apply(&n, &sw, err, sizeof err), 0, "%s", err);
    static const double bias[8] = {0, 1, 0, 1, 1, 1, 1, 0};
    for (int l = 0; l < 8; l++) {
        const tower_init_spec *in = &n.layer[l].init;
        cr_assert(in->kind == TOWER_INIT_NORMAL && in->std == 0.01 && in->bias == bias[l],
                  "%s: kind %d std %g bias %g", n.layer[l].name, in->kind, in->std, in->bias);
    }
    tower_net a = preset("alexnet2012"), b = a;
    cr_assert_eq(tower_net_apply(&b, &sw, err, sizeof err), 0, "%s", err);
    for (int l = 0; l < 8; l++)
        cr_assert(!memcmp(&a.layer[l].init, &b.layer[l].init, sizeof a.layer[l].init));

    sw = TOWER_SWITCHES_KEEP;
    cr_assert_neq(tower_net_switch_parse(&sw, "init", "xavier", err, sizeof err), 0);
    cr_assert(strstr(err, "paper or torch"), "%s", err);
}
