/* net.c: the net descriptions (the presets and the switches on top of them), the shapes
 * a description implies at one size, one tower's arena, the init, and the one layer loop
 * every backend runs through its table of operations (tower_ops). The trainer
 * (src/train/model.c) runs the towers layer by layer and exchanges between them. */
#include "tower/tower.h"
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
#include "tower/conv_dnnl.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the presets (paper_notes.md: where each comes from) ----------------------------- */

#define LRN_PAPER                                                                        \
    {.on = 1, .n = TOWER_LRN_N, .k = TOWER_LRN_K, .alpha = TOWER_LRN_ALPHA,              \
     .beta = TOWER_LRN_BETA}
#define POOL_PAPER {.k = TOWER_POOL_K, .stride = TOWER_POOL_STRIDE}
#define INIT_PAPER(b) {.kind = TOWER_INIT_NORMAL, .std = TOWER_INIT_STD, .bias = (b)}
#define INIT_TORCH {.kind = TOWER_INIT_TORCH}
#define DROP_PAPER {.p = TOWER_DROPOUT_P, .where = TOWER_DROP_OUTPUT, .scale = TOWER_DROP_PAPER}
#define DROP_TORCH_OUT                                                                   \
    {.p = TOWER_DROPOUT_P, .where = TOWER_DROP_OUTPUT, .scale = TOWER_DROP_INVERTED}
#define DROP_TORCH_IN                                                                    \
    {.p = TOWER_DROPOUT_P, .where = TOWER_DROP_INPUT, .scale = TOWER_DROP_INVERTED}
#define CONV(nm, o, kk, s, p, rd)                                                        \
    .name = nm, .kind = TOWER_CONV, .out = (o), .k = (kk), .stride = (s), .pad = (p),    \
    .reads = TOWER_READS_##rd
#define FC(nm, o, rd)                                                                    \
    .name = nm, .kind = TOWER_FC, .out = (o), .k = 1, .stride = 1, .pad = 0,             \
    .reads = TOWER_READS_##rd
#define RELU .act = TOWER_ACT_RELU
/* Adam's fields hold Adam's defaults in every preset, so `optim adam` alone is usable */
#define SGD(mom, wd)                                                                     \
    {.kind = TOWER_OPTIM_SGD, .momentum = (mom), .weight_decay = (wd), .beta1 = 0.9,     \
     .beta2 = 0.999, .eps = 1e-8}
#define ADAM(wd)                                                                         \
    {.kind = TOWER_OPTIM_ADAM, .momentum = 0.9, .weight_decay = (wd), .beta1 = 0.9,      \
     .beta2 = 0.999, .eps = 1e-8}

/* The paper's figure 2 and section 5. Padding: conv1 2 (224 -> 55, as torchvision; see
 * paper_notes.md), conv2 2, conv3-5 1 ("same"). out: per tower in the two-tower net. */
#define PAPER_ROWS(w1, w2, w3, w4, w5, f6, f7)                                           \
    {CONV("conv1", w1, 11, 4, 2, OWN), RELU, .lrn = LRN_PAPER, .pool = POOL_PAPER,       \
     .init = INIT_PAPER(0)},                                                             \
    {CONV("conv2", w2, 5, 1, 2, OWN), RELU, .lrn = LRN_PAPER, .pool = POOL_PAPER,        \
     .init = INIT_PAPER(1)},                                                             \
    {CONV("conv3", w3, 3, 1, 1, ALL), RELU, .init = INIT_PAPER(0)},                      \
    {CONV("conv4", w4, 3, 1, 1, OWN), RELU, .init = INIT_PAPER(1)},                      \
    {CONV("conv5", w5, 3, 1, 1, OWN), RELU, .pool = POOL_PAPER, .init = INIT_PAPER(1)},  \
    {FC("fc6", f6, ALL), RELU, .dropout = DROP_PAPER, .init = INIT_PAPER(1)},            \
    {FC("fc7", f7, ALL), RELU, .dropout = DROP_PAPER, .init = INIT_PAPER(1)},            \
    {FC("fc8", 0, ALL), .init = INIT_PAPER(0)}

/* A single column (no towers, no groups): every layer reads the whole previous one. */
#define COLUMN_ROWS(w1, w2, w3, w4, w5, lrn1)                                            \
    {CONV("conv1", w1, 11, 4, 2, OWN), RELU, .lrn = lrn1, .pool = POOL_PAPER,            \
     .init = INIT_PAPER(0)},                                                             \
    {CONV("conv2", w2, 5, 1, 2, ALL), RELU, .lrn = lrn1, .pool = POOL_PAPER,             \
     .init = INIT_PAPER(1)},                                                             \
    {CONV("conv3", w3, 3, 1, 1, ALL), RELU, .init = INIT_PAPER(0)},                      \
    {CONV("conv4", w4, 3, 1, 1, ALL), RELU, .init = INIT_PAPER(1)},                      \
    {CONV("conv5", w5, 3, 1, 1, ALL), RELU, .pool = POOL_PAPER, .init = INIT_PAPER(1)},  \
    {FC("fc6", 4096, ALL), RELU, .dropout = DROP_PAPER, .init = INIT_PAPER(1)},          \
    {FC("fc7", 4096, ALL), RELU, .dropout = DROP_PAPER, .init = INIT_PAPER(1)},          \
    {FC("fc8", 0, ALL), .init = INIT_PAPER(0)}

#define NO_LRN {.on = 0}
#define KEEP TOWER_SWITCHES_KEEP_INIT

static const tower_net PRESETS[TOWER_NET_PRESETS] = {
    {.name = "alexnet2012", .id = TOWER_NET_ALEXNET2012,
     .about = "the paper's two-tower net (figure 2): 48/128/192/192/128 kernels and "
              "2048/2048 units per tower",
     .towers = 2, .in_ch = 3, .in_size = 224, .classes = 1000, .n_layers = 8,
     .layer = {PAPER_ROWS(48, 128, 192, 192, 128, 2048, 2048)},
     .optim = SGD(0.9, 0.0005), .lr = 0.01, .batch = 128, .epochs = 90, .switches = KEEP},
    {.name = "alexnet2012-1gpu", .id = TOWER_NET_ALEXNET2012_1GPU,
     .about = "section 3.2's one-GPU comparison net: half the kernels in conv1-conv4, "
              "conv5 and fc6/fc7 not halved (the paper's footnote)",
     .towers = 1, .in_ch = 3, .in_size = 224, .classes = 1000, .n_layers = 8,
     .layer = {PAPER_ROWS(48, 128, 192, 192, 256, 4096, 4096)},
     .optim = SGD(0.9, 0.0005), .lr = 0.01, .batch = 128, .epochs = 90, .switches = KEEP},
    {.name = "half", .id = TOWER_NET_HALF,
     .about = "one tower of the two-tower net alone, every width halved (--towers 1)",
     .towers = 1, .in_ch = 3, .in_size = 224, .classes = 1000, .n_layers = 8,
     .layer = {PAPER_ROWS(48, 128, 192, 192, 128, 2048, 2048)},
     .optim = SGD(0.9, 0.0005), .lr = 0.01, .batch = 128, .epochs = 90, .switches = KEEP},
    {.name = "merged", .id = TOWER_NET_MERGED,
     .about = "the two towers merged into one column: 96/256/384/384/256, LRN, 4096/4096, "
              "no groups",
     .towers = 1, .in_ch = 3, .in_size = 224, .classes = 1000, .n_layers = 8,
     .layer = {COLUMN_ROWS(96, 256, 384, 384, 256, LRN_PAPER)},
     .optim = SGD(0.9, 0.0005), .lr = 0.01, .batch = 128, .epochs = 90, .switches = KEEP},
    {.name = "alexnet2014", .id = TOWER_NET_ALEXNET2014,
     .about = "\"One weird trick\" (2014) single column: 64/192/384/384/256, LRN after "
              "conv1 and conv2, 4096/4096",
     .towers = 1, .in_ch = 3, .in_size = 224, .classes = 1000, .n_layers = 8,
     .layer = {COLUMN_ROWS(64, 192, 384, 384, 256, LRN_PAPER)},
     .optim = SGD(0.9, 0.0005), .lr = 0.01, .batch = 128, .epochs = 90, .switches = KEEP},
    {.name = "torchvision", .id = TOWER_NET_TORCHVISION,
     .about = "torchvision.models.alexnet: 64/192/384/256/256, no LRN, inverted dropout on "
              "fc6's and fc7's inputs, PyTorch's init",
     .towers = 1, .in_ch = 3, .in_size = 224, .classes = 1000, .n_layers = 8,
     .layer = {{CONV("conv1", 64, 11, 4, 2, OWN), RELU, .pool = POOL_PAPER, .init = INIT_TORCH},
               {CONV("conv2", 192, 5, 1, 2, ALL), RELU, .pool = POOL_PAPER, .init = INIT_TORCH},
               {CONV("conv3", 384, 3, 1, 1, ALL), RELU, .init = INIT_TORCH},
               {CONV("conv4", 256, 3, 1, 1, ALL), RELU, .init = INIT_TORCH},
               {CONV("conv5", 256, 3, 1, 1, ALL), RELU, .pool = POOL_PAPER, .init = INIT_TORCH},
               {FC("fc6", 4096, ALL), RELU, .dropout = DROP_TORCH_IN, .init = INIT_TORCH},
               {FC("fc7", 4096, ALL), RELU, .dropout = DROP_TORCH_IN, .init = INIT_TORCH},
               {FC("fc8", 0, ALL), .init = INIT_TORCH}},
     .optim = SGD(0.9, 0.0001), .lr = 0.01, .batch = 256, .epochs = 90, .switches = KEEP},
    {.name = "fmnist", .id = TOWER_NET_FMNIST,
     .about = "a PyTorch tutorial's Fashion-MNIST AlexNet: 1 channel, 96/256/384/384/256, "
              "conv1 padding 1, no LRN, 6400 -> 4096 -> 4096 -> 10, Adam",
     .towers = 1, .in_ch = 1, .in_size = 224, .classes = 10, .n_layers = 8,
     .layer = {{CONV("conv1", 96, 11, 4, 1, OWN), RELU, .pool = POOL_PAPER, .init = INIT_TORCH},
               {CONV("conv2", 256, 5, 1, 2, ALL), RELU, .pool = POOL_PAPER, .init = INIT_TORCH},
               {CONV("conv3", 384, 3, 1, 1, ALL), RELU, .init = INIT_TORCH},
               {CONV("conv4", 384, 3, 1, 1, ALL), RELU, .init = INIT_TORCH},
               {CONV("conv5", 256, 3, 1, 1, ALL), RELU, .pool = POOL_PAPER, .init = INIT_TORCH},
               {FC("fc6", 4096, ALL), RELU, .dropout = DROP_TORCH_OUT, .init = INIT_TORCH},
               {FC("fc7", 4096, ALL), RELU, .dropout = DROP_TORCH_OUT, .init = INIT_TORCH},
               {FC("fc8", 0, ALL), .init = INIT_TORCH}},
     .optim = ADAM(0.0), .lr = 0.001, .batch = 256, .epochs = 10, .switches = KEEP},
};

const tower_net *tower_net_preset_at(int i)
{
    return i >= 0 && i < TOWER_NET_PRESETS ? &PRESETS[i] : NULL;
}

const tower_net *tower_net_preset(const char *name)
{
    for (int i = 0; name && i < TOWER_NET_PRESETS; i++)
        if (!strcmp(PRESETS[i].name, name)) return &PRESETS[i];
    return NULL;
}

const tower_net *tower_net_preset_id(int id)
{
    for (int i = 0; i < TOWER_NET_PRESETS; i++)
        if (PRESETS[i].id == id) return &PRESETS[i];
    return NULL;
}

const char *tower_net_names(void)
{
    return "alexnet2012, alexnet2012-1gpu, half, merged, alexnet2014, torchvision, fmnist";
}

const tower_net *tower_config_net(const tower_config *cfg)
{
    if (cfg->net.n_layers) return &cfg->net;
    return tower_net_preset_id(cfg->towers == 1 ? TOWER_NET_HALF : TOWER_NET_ALEXNET2012);
}

/* ---- switches ------------------------------------------------------------------------ */

int tower_net_apply(tower_net *net, const tower_net_switches *sw, char *err, size_t errlen)
{
    int n = net->n_layers;
    tower_net r = *net; /* work on a copy: a refused switch leaves net as it was */
    if (sw->lrn == 0 || sw->lrn == 1) {
        int convs = 0;
        for (int l = 0; l < n; l++) {
            r.layer[l].lrn = (tower_lrn_spec){.on = 0};
            if (sw->lrn == 1 && r.layer[l].kind == TOWER_CONV && convs++ < 2)
                r.layer[l].lrn = (tower_lrn_spec)LRN_PAPER;
        }
        if (sw->lrn == 1 && convs < 2) {
            base_errf(err, errlen, "lrn on: net %s has %d conv layer(s); LRN goes after "
                      "conv1 and conv2", net->name, convs);
            return -1;
        }
    } else if (sw->lrn != -1) {
        base_errf(err, errlen, "lrn: %d is not -1 (keep), 0 (off) or 1 (on)", sw->lrn);
        return -1;
    }
    if (sw->pool_k || sw->pool_s) {
        if (sw->pool_k < 1 || sw->pool_s < 1 || sw->pool_s > sw->pool_k) {
            base_errf(err, errlen, "pool %d:%d: the window and the stride must be at least 1, "
                      "and the stride at most the window (wider strides skip pixels)",
                      sw->pool_k, sw->pool_s);
            return -1;
        }
        int pools = 0;
        for (int l = 0; l < n; l++)
            if (r.layer[l].pool.k > 0) {
                r.layer[l].pool = (tower_pool_spec){.k = sw->pool_k, .stride = sw->pool_s};
                pools++;
            }
        if (!pools) {
            base_errf(err, errlen, "pool %d:%d: net %s has no pooling layer", sw->pool_k,
                      sw->pool_s, net->name);
            return -1;
        }
    }
    if (sw->act == TOWER_ACT_RELU || sw->act == TOWER_ACT_TANH) {
        for (int l = 0; l + 1 < n; l++) r.layer[l].act = sw->act;
    } else if (sw->act != -1) {
        base_errf(err, errlen, "act: %d is not relu (%d) or tanh (%d)", sw->act,
                  TOWER_ACT_RELU, TOWER_ACT_TANH);
        return -1;
    }
    if (sw->dropout >= 0 || sw->dropout != sw->dropout) {
        if (!(sw->dropout < 1)) {
            base_errf(err, errlen, "dropout %g: the probability must be in [0, 1)",
                      sw->dropout);
            return -1;
        }
        int rows = 0;
        for (int l = 0; l < n; l++)
            if (r.layer[l].dropout.p > 0) {
                r.layer[l].dropout.p = sw->dropout;
                rows++;
            }
        if (!rows) {
            base_errf(err, errlen, "dropout %g: net %s has no dropout layer", sw->dropout,
                      net->name);
            return -1;
        }
    }
    if (sw->init == TOWER_INIT_NORMAL || sw->init == TOWER_INIT_TORCH) {
        /* the paper's rule (section 5) on whatever rows the net has */
        for (int l = 0, convs = 0; l < n; l++) {
            tower_init_spec *in = &r.layer[l].init;
            int conv = r.layer[l].kind == TOWER_CONV, ci = conv ? convs++ : -1;
            if (sw->init == TOWER_INIT_TORCH)
                *in = (tower_init_spec){.kind = TOWER_INIT_TORCH};
            else if (in->kind != TOWER_INIT_NORMAL)
                *in = (tower_init_spec){
                    .kind = TOWER_INIT_NORMAL, .std = 0.01,
                    .bias = (conv ? ci == 1 || ci == 3 || ci == 4 : l + 1 < n) ? 1.0 : 0.0};
        }
    } else if (sw->init != -1) {
        base_errf(err, errlen, "init: %d is not paper (%d) or torch (%d)", sw->init,
                  TOWER_INIT_NORMAL, TOWER_INIT_TORCH);
        return -1;
    }
    if (sw->optim) {
        if (sw->optim != TOWER_OPTIM_SGD && sw->optim != TOWER_OPTIM_ADAM) {
            base_errf(err, errlen, "optim: %d is not sgd (%d) or adam (%d)", sw->optim,
                      TOWER_OPTIM_SGD, TOWER_OPTIM_ADAM);
            return -1;
        }
        r.optim.kind = sw->optim;
    }
    int adam = r.optim.kind == TOWER_OPTIM_ADAM;
    if (sw->momentum >= 0) {
        if (adam || !(sw->momentum < 1)) {
            base_errf(err, errlen, adam ? "momentum %g: momentum is SGD's; Adam takes beta1"
                                        : "momentum %g: must be in [0, 1)", sw->momentum);
            return -1;
        }
        r.optim.momentum = sw->momentum;
    }
    if (sw->weight_decay >= 0) {
        if (!(sw->weight_decay < 1)) {
            base_errf(err, errlen, "weight-decay %g: must be in [0, 1)", sw->weight_decay);
            return -1;
        }
        r.optim.weight_decay = sw->weight_decay;
    }
    const double *ab[3] = {&sw->beta1, &sw->beta2, &sw->eps};
    double *rb[3] = {&r.optim.beta1, &r.optim.beta2, &r.optim.eps};
    static const char *const abn[3] = {"beta1", "beta2", "eps"};
    for (int i = 0; i < 3; i++) {
        if (*ab[i] < 0) continue;
        if (!adam) {
            base_errf(err, errlen, "%s %g: %s is Adam's; this net trains with SGD (optim adam)",
                      abn[i], *ab[i], abn[i]);
            return -1;
        }
        if (i < 2 ? !(*ab[i] < 1) : !(*ab[i] > 0 && *ab[i] < 1)) {
            base_errf(err, errlen, "%s %g: must be in %s", abn[i], *ab[i],
                      i < 2 ? "[0, 1)" : "(0, 1)");
            return -1;
        }
        *rb[i] = *ab[i];
    }
    /* remember every switch given, on top of earlier ones */
    tower_net_switches *k = &r.switches;
    if (sw->lrn != -1) k->lrn = sw->lrn;
    if (sw->pool_k) k->pool_k = sw->pool_k, k->pool_s = sw->pool_s;
    if (sw->act != -1) k->act = sw->act;
    if (sw->dropout >= 0) k->dropout = sw->dropout;
    if (sw->optim) k->optim = sw->optim;
    if (sw->init != -1) k->init = sw->init;
    if (sw->momentum >= 0) k->momentum = sw->momentum;
    if (sw->weight_decay >= 0) k->weight_decay = sw->weight_decay;
    if (sw->beta1 >= 0) k->beta1 = sw->beta1;
    if (sw->beta2 >= 0) k->beta2 = sw->beta2;
    if (sw->eps >= 0) k->eps = sw->eps;
    *net = r;
    return 0;
}

static int parse_num(const char *key, const char *value, double lo, double hi, double *out,
                     char *err, size_t errlen)
{
    double v;
    if (!value || base_parse_f64(value, &v) || !(v >= lo && v <= hi)) {
        base_errf(err, errlen, "%s needs a number from %g to %g, not '%s'", key, lo, hi,
                  value ? value : "(missing)");
        return -1;
    }
    *out = v;
    return 0;
}

int tower_net_switch_parse(tower_net_switches *sw, const char *key, const char *value,
                           char *err, size_t errlen)
{
    const char *v = value ? value : "";
    if (!strcmp(key, "lrn")) {
        if (!strcmp(v, "on")) sw->lrn = 1;
        else if (!strcmp(v, "off")) sw->lrn = 0;
        else goto bad;
        return 0;
    }
    if (!strcmp(key, "pool")) {
        int64_t k, s;
        const char *colon = strchr(v, ':');
        char ks[32];
        if (!colon || (size_t)(colon - v) >= sizeof ks) goto bad;
        memcpy(ks, v, (size_t)(colon - v));
        ks[colon - v] = 0;
        if (base_parse_i64(ks, &k) || base_parse_i64(colon + 1, &s) || k < 1 || k > 64 ||
            s < 1 || s > k)
            goto bad;
        sw->pool_k = (int)k;
        sw->pool_s = (int)s;
        return 0;
    }
    if (!strcmp(key, "act")) {
        if (!strcmp(v, "relu")) sw->act = TOWER_ACT_RELU;
        else if (!strcmp(v, "tanh")) sw->act = TOWER_ACT_TANH;
        else goto bad;
        return 0;
    }
    if (!strcmp(key, "init")) {
        if (!strcmp(v, "paper")) sw->init = TOWER_INIT_NORMAL;
        else if (!strcmp(v, "torch")) sw->init = TOWER_INIT_TORCH;
        else goto bad;
        return 0;
    }
    if (!strcmp(key, "optim")) {
        if (!strcmp(v, "sgd")) sw->optim = TOWER_OPTIM_SGD;
        else if (!strcmp(v, "adam")) sw->optim = TOWER_OPTIM_ADAM;
        else goto bad;
        return 0;
    }
    if (!strcmp(key, "dropout")) return parse_num(key, value, 0, 0.99, &sw->dropout, err, errlen);
    if (!strcmp(key, "momentum"))
        return parse_num(key, value, 0, 0.999, &sw->momentum, err, errlen);
    if (!strcmp(key, "weight-decay"))
        return parse_num(key, value, 0, 0.1, &sw->weight_decay, err, errlen);
    if (!strcmp(key, "beta1")) return parse_num(key, value, 0, 0.9999, &sw->beta1, err, errlen);
    if (!strcmp(key, "beta2"))
        return parse_num(key, value, 0, 0.999999, &sw->beta2, err, errlen);
    if (!strcmp(key, "eps")) return parse_num(key, value, 1e-12, 1, &sw->eps, err, errlen);
    base_errf(err, errlen, "unknown switch '%s' (lrn, pool, act, dropout, init, optim, momentum, "
              "weight-decay, beta1, beta2, eps)", key);
    return -1;
bad:
    base_errf(err, errlen, "%s: '%s' is not %s", key, v,
              !strcmp(key, "lrn")    ? "on or off"
              : !strcmp(key, "pool") ? "K:S (window:stride, 1 <= S <= K <= 64; e.g. 3:2, 2:2)"
              : !strcmp(key, "act")  ? "relu or tanh"
              : !strcmp(key, "init") ? "paper or torch"
                                     : "sgd or adam");
    return -1;
}

int tower_net_switched(const tower_net_switches *sw)
{
    return sw->lrn != -1 || sw->pool_k || sw->pool_s || sw->act != -1 || sw->dropout >= 0 ||
           sw->optim || sw->init != -1 || sw->momentum >= 0 || sw->weight_decay >= 0 || sw->beta1 >= 0 ||
           sw->beta2 >= 0 || sw->eps >= 0;
}

void tower_net_switches_describe(const tower_net_switches *sw, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
#define ADD(...)                                                                          \
    do {                                                                                  \
        if (o < n) o += (size_t)snprintf(buf + o, n - o, "%s", o ? ", " : "");            \
        if (o < n) o += (size_t)snprintf(buf + o, n - o, __VA_ARGS__);                    \
    } while (0)
    if (sw->lrn >= 0) ADD("lrn %s", sw->lrn ? "on" : "off");
    if (sw->pool_k) ADD("pool %d:%d", sw->pool_k, sw->pool_s);
    if (sw->act >= 0) ADD("act %s", sw->act == TOWER_ACT_TANH ? "tanh" : "relu");
    if (sw->dropout >= 0) ADD("dropout %g", sw->dropout);
    if (sw->init >= 0) ADD("init %s", sw->init == TOWER_INIT_TORCH ? "torch" : "paper");
    if (sw->optim) ADD("optim %s", sw->optim == TOWER_OPTIM_ADAM ? "adam" : "sgd");
    if (sw->momentum >= 0) ADD("momentum %g", sw->momentum);
    if (sw->weight_decay >= 0) ADD("weight-decay %g", sw->weight_decay);
    if (sw->beta1 >= 0) ADD("beta1 %g", sw->beta1);
    if (sw->beta2 >= 0) ADD("beta2 %g", sw->beta2);
    if (sw->eps >= 0) ADD("eps %g", sw->eps);
#undef ADD
    if (!buf[0]) snprintf(buf, n, "none");
}

/* ---- the plan: shapes and stages at one size ------------------------------------------ */

/* A row that cannot be run, whatever the size: -1 with the reason. */
static int check_row(const tower_net *net, int l, char *err, size_t errlen)
{
    const tower_layer_spec *s = &net->layer[l];
    const char *nm = s->name[0] ? s->name : "(unnamed)";
    int last = l == net->n_layers - 1;
    if (!s->name[0] || memchr(s->name, 0, sizeof s->name) == NULL) {
        base_errf(err, errlen, "net %s: row %d has no name", net->name, l);
        return -1;
    }
    if (s->kind != TOWER_CONV && s->kind != TOWER_FC) {
        base_errf(err, errlen, "net %s: %s: kind %d is neither conv nor fc", net->name, nm,
                  s->kind);
        return -1;
    }
    if (l > 0 && s->kind == TOWER_CONV && net->layer[l - 1].kind == TOWER_FC) {
        base_errf(err, errlen, "net %s: %s is a conv layer after an fc layer", net->name, nm);
        return -1;
    }
    if (last && s->kind != TOWER_FC) {
        base_errf(err, errlen, "net %s: the last layer (%s) must be fc: it gives the classes",
                  net->name, nm);
        return -1;
    }
    if (!last && s->out < 1) {
        base_errf(err, errlen, "net %s: %s has %d outputs", net->name, nm, s->out);
        return -1;
    }
    if (s->kind == TOWER_CONV &&
        (s->k < 1 || s->k > 64 || s->stride < 1 || s->stride > 64 || s->pad < 0 ||
         s->pad >= s->k)) {
        base_errf(err, errlen, "net %s: %s: kernel %d, stride %d, padding %d (kernel and "
                  "stride 1..64, padding below the kernel)", net->name, nm, s->k, s->stride,
                  s->pad);
        return -1;
    }
    if (s->reads != TOWER_READS_OWN && s->reads != TOWER_READS_ALL) {
        base_errf(err, errlen, "net %s: %s: reads %d is neither own nor all", net->name, nm,
                  s->reads);
        return -1;
    }
    if (l == 0 && s->reads == TOWER_READS_ALL) {
        base_errf(err, errlen, "net %s: %s reads the image, which every tower has: it "
                  "cannot read all towers", net->name, nm);
        return -1;
    }
    if (s->act != TOWER_ACT_NONE && s->act != TOWER_ACT_RELU && s->act != TOWER_ACT_TANH) {
        base_errf(err, errlen, "net %s: %s: activation %d unknown", net->name, nm, s->act);
        return -1;
    }
    if (s->lrn.on && (s->kind != TOWER_CONV || s->lrn.n < 1 || s->lrn.n % 2 == 0 ||
                      !(s->lrn.k > 0) || !(s->lrn.alpha >= 0) || !(s->lrn.beta >= 0))) {
        base_errf(err, errlen, "net %s: %s: LRN needs a conv layer, an odd window and "
                  "k > 0, alpha, beta >= 0", net->name, nm);
        return -1;
    }
    if (s->pool.k < 0 || (s->pool.k > 0 && (s->kind != TOWER_CONV || s->pool.stride < 1 ||
                                            s->pool.stride > s->pool.k))) {
        base_errf(err, errlen, "net %s: %s: pool %d:%d (conv layers only; 1 <= stride <= "
                  "window)", net->name, nm, s->pool.k, s->pool.stride);
        return -1;
    }
    const tower_dropout_spec *d = &s->dropout;
    if (!(d->p >= 0 && d->p < 1) ||
        (d->where != TOWER_DROP_OUTPUT && d->where != TOWER_DROP_INPUT) ||
        (d->scale != TOWER_DROP_PAPER && d->scale != TOWER_DROP_INVERTED)) {
        base_errf(err, errlen, "net %s: %s: dropout p %g (in [0, 1)), where %d, scale %d",
                  net->name, nm, d->p, d->where, d->scale);
        return -1;
    }
    if (d->p > 0 && d->where == TOWER_DROP_INPUT &&
        (l == 0 || net->layer[l - 1].dropout.p > 0) &&
        (l == 0 || net->layer[l - 1].dropout.where == TOWER_DROP_OUTPUT)) {
        base_errf(err, errlen, l == 0 ? "net %s: %s: dropout on the image is not supported"
                                      : "net %s: %s: dropout on its input and on the output "
                                        "of the layer before: one place only",
                  net->name, nm);
        return -1;
    }
    if (d->p > 0 && d->where == TOWER_DROP_OUTPUT && last) {
        base_errf(err, errlen, "net %s: %s: dropout on the logits", net->name, nm);
        return -1;
    }
    if ((s->init.kind != TOWER_INIT_NORMAL && s->init.kind != TOWER_INIT_TORCH) ||
        !(s->init.std >= 0) || !isfinite(s->init.bias)) {
        base_errf(err, errlen, "net %s: %s: init kind %d, std %g, bias %g", net->name, nm,
                  s->init.kind, s->init.std, s->init.bias);
        return -1;
    }
    return 0;
}

int tower_plan_make(tower_plan *plan, const tower_config *cfg, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    plan->cfg = *cfg;
    int T = cfg->towers, div = cfg->width_div > 0 ? cfg->width_div : 1;
    plan->cfg.width_div = div;
    tower_net *net = &plan->cfg.net;
    if (net->n_layers == 0) { /* the default: what --towers always built */
        const tower_net *d = tower_net_preset_id(T == 1 ? TOWER_NET_HALF : TOWER_NET_ALEXNET2012);
        if (T != 1 && T != 2) {
            snprintf(err, errlen, "towers must be 1 or 2, not %d", T);
            return -1;
        }
        *net = *d;
    }
    if (net->n_layers < 1 || net->n_layers > TOWER_MAX_LAYERS) {
        snprintf(err, errlen, "net %s: %d layers (1..%d)", net->name, net->n_layers,
                 TOWER_MAX_LAYERS);
        return -1;
    }
    if (T != 1 && T != 2) {
        snprintf(err, errlen, "towers must be 1 or 2, not %d", T);
        return -1;
    }
    if (T != net->towers) {
        snprintf(err, errlen, "net %s has %d tower%s, not %d", net->name, net->towers,
                 net->towers > 1 ? "s" : "", T);
        return -1;
    }
    if (cfg->classes < 2 || cfg->classes % T) {
        snprintf(err, errlen, "classes (%d) must be at least 2 and divisible by towers (%d)",
                 cfg->classes, T);
        return -1;
    }
    if (cfg->batch < 1 || cfg->in_ch < 1 || cfg->in_size < 1) {
        snprintf(err, errlen, "batch, input channels and input size must be positive");
        return -1;
    }
    if (net->optim.kind != TOWER_OPTIM_SGD && net->optim.kind != TOWER_OPTIM_ADAM) {
        snprintf(err, errlen, "net %s: optimizer %d is neither sgd nor adam", net->name,
                 net->optim.kind);
        return -1;
    }
    int n = net->n_layers;
    plan->n_layers = n;
    plan->adam = net->optim.kind == TOWER_OPTIM_ADAM;
    plan->vt = cfg->classes / T;
    for (int l = 0; l < n; l++)
        if (check_row(net, l, err, errlen)) return -1;
    int ch = cfg->in_ch, side = cfg->in_size;
    size_t off = 0;
    for (int l = 0; l < n; l++) {
        const tower_layer_spec *s = &net->layer[l];
        tower_layer_shape *L = &plan->layer[l];
        L->sources = s->reads == TOWER_READS_ALL ? T : 1;
        L->out_ch = l == n - 1 ? plan->vt : s->out / div;
        if (L->out_ch < 1) {
            snprintf(err, errlen, "width_div %d leaves %s with no units", div, s->name);
            return -1;
        }
        int taps;
        if (s->kind == TOWER_CONV) {
            L->in_ch = ch;
            L->in_h = side;
            L->out_h = tower_conv_out(side, s->k, s->stride, s->pad);
            taps = s->k * s->k;
        } else {
            L->in_ch = ch * side * side; /* flattened (C, H, W) */
            L->in_h = 1;
            L->out_h = 1;
            taps = 1;
        }
        if (L->out_h < 1) {
            snprintf(err, errlen, "input size %d is too small: %s would have no output (a "
                     "%dx%d input to a %dx%d kernel with padding %d)", cfg->in_size, s->name,
                     side, side, s->k, s->k, s->pad);
            return -1;
        }
        L->act = s->act;
        L->lrn = s->lrn.on;
        L->pool_k = s->pool.k;
        L->pool_s = s->pool.k ? s->pool.stride : 0;
        L->final_ch = L->out_ch;
        L->final_h = L->out_h;
        if (L->pool_k) {
            if (L->out_h < L->pool_k) {
                snprintf(err, errlen, "input size %d is too small for pool %d:%d after %s (its "
                         "output is %dx%d)", cfg->in_size, L->pool_k, L->pool_s, s->name,
                         L->out_h, L->out_h);
                return -1;
            }
            L->final_h = (L->out_h - L->pool_k) / L->pool_s + 1;
        }
        /* the dropout stage on this layer's output: its own row's, or the next row's
         * dropout on its input */
        const tower_layer_spec *nx = l + 1 < n ? &net->layer[l + 1] : NULL;
        if (s->dropout.p > 0 && s->dropout.where == TOWER_DROP_OUTPUT) {
            L->drop_p = s->dropout.p;
            L->drop_scale = s->dropout.scale;
            L->drop_row = l;
        } else if (nx && nx->dropout.p > 0 && nx->dropout.where == TOWER_DROP_INPUT) {
            L->drop_p = nx->dropout.p;
            L->drop_scale = nx->dropout.scale;
            L->drop_row = l + 1;
        }
        L->w_count = (size_t)L->out_ch * L->sources * L->in_ch * taps;
        L->b_count = (size_t)L->out_ch;
        L->w_off = off;
        off += L->w_count;
        L->b_off = off;
        off += L->b_count;
        L->macs = (double)L->w_count * L->out_h * L->out_h;
        ch = L->final_ch;
        side = L->final_h;
    }
    plan->n_params = off;
    return 0;
}

uint64_t tower_step_key(uint64_t seed, int64_t step, int tower_index)
{
    return base_rng_mix(base_rng_mix(seed ^ 0x64726f706f7574ull, (uint64_t)step),
                         (uint64_t)tower_index);
}

uint64_t tower_layer_key(uint64_t step_key, int layer)
{
    return base_rng_mix(step_key, (uint64_t)layer);
}

/* uniform in [-1, 1) with 53 bits */
static double uniform_pm1(uint64_t key, uint64_t i)
{
    return (double)(base_rng_mix(key, i) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

void tower_init_params(real *params, const tower_plan *plan, int index, uint64_t seed)
{
    for (int l = 0; l < plan->n_layers; l++) {
        const tower_layer_shape *L = &plan->layer[l];
        const tower_init_spec *in = &tower_plan_row(plan, l)->init;
        uint64_t key = base_rng_mix(seed ^ 0x696e6974ull, (uint64_t)(index * 64 + l));
        real *w = params + L->w_off, *b = params + L->b_off;
        if (in->kind == TOWER_INIT_TORCH) {
            /* kaiming_uniform_(a = sqrt(5)) and PyTorch's bias init both come to
             * U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = one output's weights */
            double bound = 1.0 / sqrt((double)(L->w_count / L->b_count));
            uint64_t kb = base_rng_mix(key, 0x62696173ull); /* "bias" */
            for (size_t i = 0; i < L->w_count; i++) w[i] = (real)(bound * uniform_pm1(key, i));
            for (size_t i = 0; i < L->b_count; i++) b[i] = (real)(bound * uniform_pm1(kb, i));
            continue;
        }
        for (size_t i = 0; i < L->w_count; i++)
            w[i] = (real)(in->std * base_rng_normal(key, 2 * (uint64_t)i, 0));
        for (size_t i = 0; i < L->b_count; i++) b[i] = (real)in->bias;
    }
}

/* ---- one tower's arena ------------------------------------------------------------------ */

/* Bump allocator over the arena: 256-byte aligned slices (good for the GPU too).
 * With base NULL it only counts; part (a tower_mem field or NULL) is what the bytes of
 * the next takes count toward. */
typedef struct {
    char *base;
    size_t used;
    size_t *part;
} carver;

static void *take(carver *c, size_t bytes)
{
    size_t at = (c->used + 255) & ~(size_t)255;
    if (c->part) *c->part += at + bytes - c->used;
    c->used = at + bytes;
    return c->base ? c->base + at : NULL;
}
#define TAKE_REAL(c, n) ((real *)take((c), sizeof(real) * (size_t)(n)))

/* The lean arena's regions: 0 and 1 take turns for each layer's dout and din (the
 * reduce-scatter's output goes opposite its input), 2 holds the gradient before a pool
 * (the pool's din, then LRN and the activation backward in place). Every buffer starts
 * at its region's base; a region is as large as the largest buffer it holds. The forward
 * never touches a gradient, so its temporaries live there too: an LRN output that is
 * not the last stage in region 2, a pool output that is not the last stage (dropout
 * follows) in region 0. */
enum { LEAN_PING = 0, LEAN_PONG = 1, LEAN_PREPOOL = 2, LEAN_REGIONS = 3 };

static real *lean_at(real *const reg[LEAN_REGIONS], size_t size[LEAN_REGIONS], int r,
                     size_t n)
{
    if (sizeof(real) * n > size[r]) size[r] = sizeof(real) * n;
    return reg[r];
}

/* Places every activation gradient and forward temporary of the lean arena in the
 * regions reg (NULL: only sizes them). Walks the layers as backward does. */
static void lean_place(tower *t, real *const reg[LEAN_REGIONS], size_t size[LEAN_REGIONS])
{
    const tower_plan *p = &t->plan;
    size_t B = (size_t)p->cfg.batch;
    int n = p->n_layers, r = LEAN_PING;
    for (int l = n - 1; l >= 0; l--) {
        const tower_layer_shape *L = &p->layer[l];
        tower_acts *A = &t->acts[l];
        size_t act_n = B * L->out_ch * L->out_h * L->out_h;
        size_t fin_n = B * L->final_ch * L->final_h * L->final_h;
        int last_lrn = L->lrn && !L->pool_k && !(L->drop_p > 0);
        int last_pool = L->pool_k && !(L->drop_p > 0);
        if (l == n - 1) A->dout = lean_at(reg, size, r, fin_n);
        /* else layer l + 1 placed it */
        real *d = A->dout; /* dropout's backward in place */
        A->dpool = L->pool_k ? d : NULL;
        if (L->pool_k) d = lean_at(reg, size, LEAN_PREPOOL, act_n);
        A->dlrn = L->lrn ? d : NULL; /* LRN's and the activation's backward in place */
        A->dact = d;
        if (L->lrn && !last_lrn) A->lrn = lean_at(reg, size, LEAN_PREPOOL, act_n);
        if (L->pool_k && !last_pool) A->pool = lean_at(reg, size, LEAN_PING, fin_n);
        if (l == 0) {
            A->din = NULL;
            break;
        }
        size_t slot = B * L->in_ch * L->in_h * L->in_h;
        A->din = lean_at(reg, size, 1 - r, slot * L->sources);
        if (tower_plan_row(p, l)->reads == TOWER_READS_ALL) {
            /* this layer's dout is spent once its din is made */
            t->acts[l - 1].dout = lean_at(reg, size, r, slot);
        } else {
            t->acts[l - 1].dout = A->din;
            r = 1 - r;
        }
    }
}

static size_t carve(tower *t, char *base, tower_mem *m)
{
    const tower_plan *p = &t->plan;
    size_t B = (size_t)p->cfg.batch, P = p->n_params;
    int T = p->cfg.towers, n = p->n_layers, lean = t->ops && t->ops->lean;
    tower_mem scratch_m;
    if (!m) m = &scratch_m;
    memset(m, 0, sizeof *m);
    carver c = {base, 0, &m->params};
    t->params = TAKE_REAL(&c, P);
    t->grads = TAKE_REAL(&c, P);
    t->momentum = TAKE_REAL(&c, P);
    t->moment2 = p->adam ? TAKE_REAL(&c, P) : NULL;
    for (int l = 0; l < n; l++) {
        const tower_layer_shape *L = &p->layer[l];
        t->w[l] = t->params ? t->params + L->w_off : NULL;
        t->b[l] = t->params ? t->params + L->b_off : NULL;
        t->dw[l] = t->grads ? t->grads + L->w_off : NULL;
        t->db[l] = t->grads ? t->grads + L->b_off : NULL;
    }
    c.part = &m->input;
    t->x = TAKE_REAL(&c, B * p->cfg.in_ch * p->cfg.in_size * p->cfg.in_size);
    size_t col = 0;
    for (int l = 0; l < n; l++) {
        const tower_layer_spec *s = tower_plan_row(p, l);
        const tower_layer_shape *L = &p->layer[l];
        tower_acts *A = &t->acts[l];
        size_t act_n = B * L->out_ch * L->out_h * L->out_h;
        size_t fin_n = B * L->final_ch * L->final_h * L->final_h;
        if (s->kind == TOWER_CONV) {
            size_t cs = tower_conv_col_size(L->in_ch, L->in_h, L->in_h, s->k, s->stride, s->pad);
            if (cs > col) col = cs;
        }
        if (lean && L->lrn) {
            size_t w = tower_lrn_lean_work_size(L->out_ch, L->out_h * L->out_h);
            if (w > col) col = w;
        }
        /* input: the image, the previous layer's output, or a gathered buffer */
        if (l == 0) {
            A->in = t->x;
            A->din = NULL;
        } else if (s->reads == TOWER_READS_ALL) {
            /* A->in (and in the full arena A->din) were allocated by layer l - 1, whose
             * `out` is a slot of it */
        } else {
            A->in = t->acts[l - 1].out;
            A->din = t->acts[l - 1].dout;
        }
        /* the last stage writes `out`: slot `index` of the next gathered buffer, or (the
         * last layer) slot `index` of the gathered logits, or a buffer of its own */
        int next_gathered = l + 1 < n && tower_plan_row(p, l + 1)->reads == TOWER_READS_ALL;
        c.part = &m->kept[l];
        if (l == n - 1) {
            c.part = &m->loss;
            t->logits = TAKE_REAL(&c, (size_t)T * B * p->vt);
            A->out = t->logits ? t->logits + (size_t)t->index * B * p->vt : NULL;
            c.part = &m->grads;
            A->dout = lean ? NULL : TAKE_REAL(&c, fin_n);
        } else if (next_gathered) {
            /* allocate the next layer's gathered input now so `out` can point into it;
             * the loop iteration for l + 1 must not allocate it again */
            const tower_layer_shape *N = &p->layer[l + 1];
            size_t next_in = B * N->in_ch * N->in_h * N->in_h;
            t->acts[l + 1].in = TAKE_REAL(&c, next_in * N->sources);
            c.part = &m->grads;
            t->acts[l + 1].din = lean ? NULL : TAKE_REAL(&c, next_in * N->sources);
            A->out = t->acts[l + 1].in ? t->acts[l + 1].in + (size_t)t->index * next_in : NULL;
            A->dout = lean ? NULL : TAKE_REAL(&c, fin_n);
        } else {
            A->out = TAKE_REAL(&c, fin_n);
            c.part = &m->grads;
            A->dout = lean ? NULL : TAKE_REAL(&c, fin_n);
        }
        /* every stage but the last has a buffer of its own (in the order of the paper's
         * carve, so its nets keep their arena layout); the lean arena keeps the
         * activation (the activation's and LRN's backward read it) and the pool's
         * argmax, and places the rest in its regions */
        int last_act = !L->lrn && !L->pool_k && !(L->drop_p > 0);
        int last_lrn = L->lrn && !L->pool_k && !(L->drop_p > 0);
        int last_pool = L->pool_k && !(L->drop_p > 0);
        size_t *kept = &m->kept[l], *kept_act = &m->kept_act[l], *kept_lrn = &m->kept_lrn[l];
        size_t *grads = &m->grads;
        if (last_act) {
            A->act = A->out;
            A->dact = A->dout;
        } else {
            c.part = kept_act;
            A->act = TAKE_REAL(&c, act_n);
            c.part = grads;
            A->dact = lean ? NULL : TAKE_REAL(&c, act_n);
        }
        A->lrn = A->lrn_scale = A->dlrn = NULL;
        A->pool = A->dpool = NULL;
        A->pool_idx = NULL;
        if (L->lrn) {
            c.part = kept_lrn;
            A->lrn = last_lrn ? A->out : lean ? NULL : TAKE_REAL(&c, act_n);
            A->lrn_scale = lean ? NULL : TAKE_REAL(&c, act_n);
            c.part = grads;
            A->dlrn = last_lrn ? A->dout : lean ? NULL : TAKE_REAL(&c, act_n);
        }
        if (L->pool_k) {
            if (last_pool) {
                A->pool = A->out;
                A->dpool = A->dout;
            } else {
                c.part = kept;
                A->pool = lean ? NULL : TAKE_REAL(&c, fin_n);
                c.part = grads;
                A->dpool = lean ? NULL : TAKE_REAL(&c, fin_n);
            }
            c.part = &m->kept_idx[l];
            A->pool_idx = (int32_t *)take(&c, sizeof(int32_t) * fin_n);
        }
    }
    c.part = &m->loss;
    t->probs = TAKE_REAL(&c, (size_t)T * B * p->vt);
    t->losses = TAKE_REAL(&c, B);
    t->labels = (int32_t *)take(&c, sizeof(int32_t) * B);
    if (lean) {
        real *reg[LEAN_REGIONS] = {NULL, NULL, NULL};
        size_t size[LEAN_REGIONS] = {0, 0, 0};
        lean_place(t, reg, size);
        for (int r = 0; r < LEAN_REGIONS; r++) {
            size_t before = c.used;
            c.part = &m->grads;
            reg[r] = (real *)take(&c, size[r]);
            m->grad_part[r] = c.used - before;
        }
        lean_place(t, reg, size);
    }
    c.part = &m->scratch;
    t->col = TAKE_REAL(&c, col);
    /* kept[l] is the layer's total: the activation, LRN and argmax parts added in */
    for (int l = 0; l < n; l++) m->kept[l] += m->kept_act[l] + m->kept_lrn[l] + m->kept_idx[l];
    m->total = c.used;
    return c.used;
}

size_t tower_carve(tower *t, char *base) { return carve(t, base, NULL); }

void tower_memory(const tower *t, tower_mem *m)
{
    tower probe = *t; /* carving a copy with no base leaves t's pointers alone */
    carve(&probe, NULL, m);
}

/* ---- the CPU backend's operations: layers_cpu.c behind the table ---------------------- */

static int cpu_fuses_act(const tower *t, int l, int act)
{
    (void)t, (void)l, (void)act;
    return 0; /* the CPU runs every activation as its own pass */
}

#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
/* The layer's oneDNN primitives when oneDNN runs one of its passes (conv_dnnl.h), made at
 * the first call, in the tower's own thread. */
static tower_dnnl_conv *cpu_dnnl(tower *t, int l, int ldw)
{
    if (!t->conv_cpu_tried[l]) {
        const tower_layer_spec *s = tower_plan_row(&t->plan, l);
        const tower_layer_shape *L = &t->plan.layer[l];
        t->conv_cpu_tried[l] = 1;
        if (!tower_conv_dnnl_off()) /* NULL for a shape with no oneDNN pass */
            t->conv_cpu[l] = tower_dnnl_conv_new(L->in_ch, L->in_h, L->in_h, L->out_ch, s->k,
                                                 s->stride, s->pad, ldw,
                                                 tower_conv_dnnl_passes(s->k, s->stride));
    }
    return t->conv_cpu[l];
}
#endif

static void cpu_conv_forward(tower *t, int l, real *out, const real *in, const real *w,
                             const real *b, int ldw, int accumulate, int act)
{
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    (void)act;
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
    tower_dnnl_conv *d = cpu_dnnl(t, l, ldw);
    if (d && tower_dnnl_conv_forward(d, out, in, w, b, t->plan.cfg.batch, accumulate) == 0)
        return;
#endif
    tower_conv_forward(out, in, w, b, t->plan.cfg.batch, L->in_ch, L->in_h, L->in_h, L->out_ch,
                       s->k, s->stride, s->pad, ldw, accumulate, t->col);
}

static void cpu_conv_backward(tower *t, int l, real *din, real *dw, real *db, const real *dout,
                              const real *act_out, const real *in, const real *w, int ldw,
                              int accumulate_din, int act)
{
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    (void)act_out, (void)act;
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
    tower_dnnl_conv *d = cpu_dnnl(t, l, ldw);
    if (d && din && tower_dnnl_conv_backward_data(d, din, dout, w, t->plan.cfg.batch,
                                                  accumulate_din) == 0)
        din = NULL; /* its input gradient is done */
    if (d && dw && tower_dnnl_conv_backward_weights(d, dw, db, dout, in, t->plan.cfg.batch) == 0)
        dw = db = NULL; /* so are the weights' and the bias' */
#endif
    if (!din && !dw && !db) return;
    tower_conv_backward(din, dw, db, dout, in, w, t->plan.cfg.batch, L->in_ch, L->in_h,
                        L->in_h, L->out_ch, s->k, s->stride, s->pad, ldw, accumulate_din,
                        t->col);
}

static void cpu_fc_forward(tower *t, real *out, const real *in, const real *w, const real *b,
                           int B, int Cin, int Cout, int ldw, int accumulate)
{
    (void)t;
    tower_fc_forward(out, in, w, b, B, Cin, Cout, ldw, accumulate);
}

static void cpu_fc_backward(tower *t, real *din, real *dw, real *db, const real *dout,
                            const real *in, const real *w, int B, int Cin, int Cout, int ldw,
                            int accumulate_din)
{
    (void)t;
    tower_fc_backward(din, dw, db, dout, in, w, B, Cin, Cout, ldw, accumulate_din);
}

static void cpu_act_forward(tower *t, int act, real *out, const real *in, size_t n)
{
    (void)t;
    if (act == TOWER_ACT_RELU) tower_relu_forward(out, in, n);
    else if (act == TOWER_ACT_TANH) tower_tanh_forward(out, in, n);
}

static void cpu_act_backward(tower *t, int act, real *din, const real *dout, const real *out,
                             size_t n)
{
    (void)t;
    if (act == TOWER_ACT_RELU) tower_relu_backward(din, dout, out, n);
    else if (act == TOWER_ACT_TANH) tower_tanh_backward(din, dout, out, n);
}

static void cpu_lrn_forward(tower *t, real *out, real *scale, const real *in, int B, int C,
                            int HW, int n, real k, real alpha, real beta)
{
    (void)scale; /* the lean arena keeps none: one image's at a time in col */
    tower_lrn_forward_lean(out, in, B, C, HW, n, k, alpha, beta, t->col);
}

static void cpu_lrn_backward(tower *t, real *din, const real *dout, const real *in,
                             const real *out, const real *scale, int B, int C, int HW, int n,
                             real k, real alpha, real beta)
{
    (void)out, (void)scale; /* not kept: recomputed from in, one image at a time in col */
    tower_lrn_backward_lean(din, dout, in, B, C, HW, n, k, alpha, beta, t->col);
}

static void cpu_maxpool_forward(tower *t, real *out, int32_t *idx, const real *in, int B, int C,
                                int H, int W, int K, int S)
{
    (void)t;
    tower_maxpool_forward(out, idx, in, B, C, H, W, K, S);
}

static void cpu_maxpool_backward(tower *t, real *din, const real *dout, const int32_t *idx,
                                 int B, int C, int H, int W, int K, int S)
{
    (void)t;
    tower_maxpool_backward(din, dout, idx, B, C, H, W, K, S);
}

static void cpu_dropout_forward(tower *t, int l, int scale, real *out, const real *in,
                                size_t n, real p, uint64_t key, int train)
{
    (void)t;
    (void)l;
    if (scale == TOWER_DROP_INVERTED) tower_dropout_inverted_forward(out, in, n, p, key, train);
    else tower_dropout_forward(out, in, n, p, key, train);
}

static void cpu_dropout_backward(tower *t, int l, int scale, real *din, const real *dout,
                                 size_t n, real p, uint64_t key)
{
    (void)t;
    (void)l;
    if (scale == TOWER_DROP_INVERTED) tower_dropout_inverted_backward(din, dout, n, p, key);
    else tower_dropout_backward(din, dout, n, p, key);
}

static double cpu_loss_forward(tower *t, real *losses, real *probs, const real *logits,
                               const int32_t *labels, int B, int T, int Vt)
{
    (void)t;
    tower_softmax_xent_forward(losses, probs, logits, labels, B, T, Vt);
    double sum = 0;
    for (int b = 0; b < B; b++) sum += losses[b];
    return sum / B;
}

static void cpu_loss_backward(tower *t, real *dlogits, const real *probs,
                              const int32_t *labels, int B, int T, int Vt, int slot)
{
    (void)t;
    tower_softmax_xent_backward(dlogits, probs, labels, B, T, Vt, slot);
}

static void cpu_zero_grads(tower *t) { memset(t->grads, 0, sizeof(real) * t->plan.n_params); }

/* weight decay on weights only, as in cuda-convnet2 (see paper_notes.md) */
static void cpu_update(tower *t, const tower_optim *o, real lr, int64_t t_update)
{
    const tower_plan *p = &t->plan;
    double step_size = 0, bc2_sqrt = 0;
    if (o->kind == TOWER_OPTIM_ADAM)
        tower_adam_scalars((double)lr, o->beta1, o->beta2, t_update, &step_size, &bc2_sqrt);
    for (int l = 0; l < p->n_layers; l++) {
        const tower_layer_shape *L = &p->layer[l];
        for (int bias = 0; bias < 2; bias++) {
            size_t off = bias ? L->b_off : L->w_off, cnt = bias ? L->b_count : L->w_count;
            real wd = bias ? 0 : (real)o->weight_decay;
            if (o->kind == TOWER_OPTIM_ADAM)
                tower_adam_update(t->params + off, t->momentum + off, t->moment2 + off,
                                  t->grads + off, cnt, (real)step_size, (real)o->beta1,
                                  (real)o->beta2, (real)o->eps, (real)bc2_sqrt, wd);
            else
                tower_sgd_update(t->params + off, t->momentum + off, t->grads + off, cnt, lr,
                                 (real)o->momentum, wd);
        }
    }
}

static void cpu_free(tower *t)
{
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
    for (int l = 0; l < TOWER_MAX_LAYERS; l++) {
        tower_dnnl_conv_free(t->conv_cpu[l]);
        t->conv_cpu[l] = NULL;
        t->conv_cpu_tried[l] = 0;
    }
#endif
    free(t->arena);
    t->arena = NULL;
}

const tower_ops tower_ops_cpu = {
    .name = "cpu",
    .fuses_act = cpu_fuses_act,
    .conv_forward = cpu_conv_forward,
    .conv_backward = cpu_conv_backward,
    .fc_forward = cpu_fc_forward,
    .fc_backward = cpu_fc_backward,
    .act_forward = cpu_act_forward,
    .act_backward = cpu_act_backward,
    .lrn_forward = cpu_lrn_forward,
    .lrn_backward = cpu_lrn_backward,
    .maxpool_forward = cpu_maxpool_forward,
    .maxpool_backward = cpu_maxpool_backward,
    .fuses_lrn_pool = NULL, /* the CPU runs LRN and pooling as passes of their own */
    .lrn_pool_forward = NULL,
    .lrn_pool_backward = NULL,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
    .loss_forward = cpu_loss_forward,
    .loss_backward = cpu_loss_backward,
    .zero_grads = cpu_zero_grads,
    .update = cpu_update,
    .free = cpu_free,
    .lean = 1,
};

/* ---- one tower's life cycle --------------------------------------------------------------- */

int tower_init(tower *t, const tower_plan *plan, int index, uint64_t seed, char *err,
               size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->plan = *plan;
    t->index = index;
    t->device = -1;
    t->ops = &tower_ops_cpu;
    size_t bytes = tower_carve(t, NULL);
    void *mem = aligned_alloc(256, (bytes + 255) & ~(size_t)255);
    if (!mem) {
        snprintf(err, errlen, "out of host memory: tower %d needs %.1f MiB", index,
                 bytes / 1048576.0);
        return -1;
    }
    memset(mem, 0, bytes);
    t->arena = mem;
    t->arena_bytes = bytes;
    tower_carve(t, mem);
    tower_init_params(t->params, plan, index, seed);
    return 0;
}

void tower_free(tower *t)
{
    if (t->ops) t->ops->free(t);
}

void tower_zero_grads(tower *t) { t->ops->zero_grads(t); }

/* ---- the layer loop: one stage sequence for every backend ----------------------------------
 * forward:  conv/fc (summing the sources) -> act -> LRN -> max-pool -> dropout -> out
 * backward: the same stages walked back from dout to dact, then the conv/fc's gradients. */

/* 1 when row l's LRN and the max-pool after it run as one pass each way (the backend's
 * fuses_lrn_pool says so: the GPU's fused kernels). */
static int lrn_pool_fused(const tower *t, int l)
{
    const tower_layer_shape *L = &t->plan.layer[l];
    return L->lrn && L->pool_k && t->ops->fuses_lrn_pool && t->ops->fuses_lrn_pool(t, l);
}

void tower_forward_weighted(tower *t, int l)
{
    const tower_ops *op = t->ops;
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    tower_acts *A = &t->acts[l];
    int B = t->plan.cfg.batch, S = L->sources, HW = L->out_h * L->out_h;
    size_t act_n = (size_t)B * L->out_ch * HW;
    int fused = L->act != TOWER_ACT_NONE && op->fuses_act(t, l, L->act);
    if (s->kind == TOWER_CONV) {
        size_t slot = (size_t)B * L->in_ch * L->in_h * L->in_h;
        int kk = L->in_ch * s->k * s->k;
        for (int src = 0; src < S; src++) /* sum the sources' contributions */
            op->conv_forward(t, l, A->act, A->in + src * slot, t->w[l] + (size_t)src * kk,
                             src == 0 ? t->b[l] : NULL, S * kk, src > 0,
                             fused && src == S - 1 ? L->act : TOWER_ACT_NONE);
    } else {
        size_t slot = (size_t)B * L->in_ch;
        for (int src = 0; src < S; src++)
            op->fc_forward(t, A->act, A->in + src * slot, t->w[l] + (size_t)src * L->in_ch,
                           src == 0 ? t->b[l] : NULL, B, L->in_ch, L->out_ch, S * L->in_ch,
                           src > 0);
    }
    if (L->act != TOWER_ACT_NONE && !fused) op->act_forward(t, L->act, A->act, A->act, act_n);
}

void tower_forward_layer(tower *t, int l, int train)
{
    const tower_ops *op = t->ops;
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    tower_acts *A = &t->acts[l];
    int B = t->plan.cfg.batch, HW = L->out_h * L->out_h;
    size_t fin_n = (size_t)B * L->final_ch * L->final_h * L->final_h;
    tower_forward_weighted(t, l);
    const real *cur = A->act;
    if (lrn_pool_fused(t, l)) {
        op->lrn_pool_forward(t, A->pool, A->pool_idx, A->lrn_scale, cur, B, L->out_ch,
                             L->out_h, L->out_h, s->lrn.n, (real)s->lrn.k, (real)s->lrn.alpha,
                             (real)s->lrn.beta, L->pool_k, L->pool_s);
        cur = A->pool;
    } else {
        if (L->lrn) {
            op->lrn_forward(t, A->lrn, A->lrn_scale, cur, B, L->out_ch, HW, s->lrn.n,
                            (real)s->lrn.k, (real)s->lrn.alpha, (real)s->lrn.beta);
            cur = A->lrn;
        }
        if (L->pool_k) {
            op->maxpool_forward(t, A->pool, A->pool_idx, cur, B, L->out_ch, L->out_h,
                                L->out_h, L->pool_k, L->pool_s);
            cur = A->pool;
        }
    }
    if (L->drop_p > 0)
        op->dropout_forward(t, l, L->drop_scale, A->out, cur, fin_n, (real)L->drop_p,
                            tower_layer_key(t->dropout_key, l), train);
}

void tower_backward_layer(tower *t, int l)
{
    const tower_ops *op = t->ops;
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    tower_acts *A = &t->acts[l];
    int B = t->plan.cfg.batch, HW = L->out_h * L->out_h;
    size_t fin_n = (size_t)B * L->final_ch * L->final_h * L->final_h;
    /* walk the stages back from `dout` to `dact` */
    real *d_before_pool = L->lrn ? A->dlrn : A->dact;
    if (L->drop_p > 0)
        op->dropout_backward(t, l, L->drop_scale, L->pool_k ? A->dpool : d_before_pool,
                             A->dout, fin_n, (real)L->drop_p, tower_layer_key(t->dropout_key, l));
    if (lrn_pool_fused(t, l)) {
        op->lrn_pool_backward(t, A->dact, A->dpool, A->pool_idx, A->act, A->lrn_scale, B,
                              L->out_ch, L->out_h, L->out_h, s->lrn.n, (real)s->lrn.k,
                              (real)s->lrn.alpha, (real)s->lrn.beta, L->pool_k, L->pool_s);
    } else {
        if (L->pool_k)
            op->maxpool_backward(t, d_before_pool, A->dpool, A->pool_idx, B, L->out_ch,
                                 L->out_h, L->out_h, L->pool_k, L->pool_s);
        if (L->lrn)
            op->lrn_backward(t, A->dact, A->dlrn, A->act, op->lean ? NULL : A->lrn,
                             A->lrn_scale, B, L->out_ch, HW, s->lrn.n, (real)s->lrn.k,
                             (real)s->lrn.alpha, (real)s->lrn.beta);
    }
    tower_backward_weighted(t, l);
}

void tower_backward_weighted(tower *t, int l)
{
    const tower_ops *op = t->ops;
    const tower_layer_spec *s = tower_plan_row(&t->plan, l);
    const tower_layer_shape *L = &t->plan.layer[l];
    tower_acts *A = &t->acts[l];
    int B = t->plan.cfg.batch, S = L->sources, HW = L->out_h * L->out_h;
    size_t act_n = (size_t)B * L->out_ch * HW;
    int fused = L->act != TOWER_ACT_NONE && op->fuses_act(t, l, L->act);
    if (L->act != TOWER_ACT_NONE && !fused)
        op->act_backward(t, L->act, A->dact, A->dact, A->act, act_n);
    if (s->kind == TOWER_CONV) {
        size_t slot = (size_t)B * L->in_ch * L->in_h * L->in_h;
        int kk = L->in_ch * s->k * s->k;
        for (int src = 0; src < S; src++)
            op->conv_backward(t, l, A->din ? A->din + src * slot : NULL,
                              t->dw[l] + (size_t)src * kk, src == 0 ? t->db[l] : NULL, A->dact,
                              A->act, A->in + src * slot, t->w[l] + (size_t)src * kk, S * kk, 0,
                              fused ? L->act : TOWER_ACT_NONE);
    } else {
        size_t slot = (size_t)B * L->in_ch;
        for (int src = 0; src < S; src++)
            op->fc_backward(t, A->din ? A->din + src * slot : NULL,
                            t->dw[l] + (size_t)src * L->in_ch, src == 0 ? t->db[l] : NULL,
                            A->dact, A->in + src * slot, t->w[l] + (size_t)src * L->in_ch, B,
                            L->in_ch, L->out_ch, S * L->in_ch, 0);
    }
}

double tower_loss_forward(tower *t)
{
    return t->ops->loss_forward(t, t->losses, t->probs, t->logits, t->labels,
                                t->plan.cfg.batch, t->plan.cfg.towers, t->plan.vt);
}

void tower_loss_backward(tower *t)
{
    t->ops->loss_backward(t, t->acts[t->plan.n_layers - 1].dout, t->probs, t->labels,
                          t->plan.cfg.batch, t->plan.cfg.towers, t->plan.vt, t->index);
}

void tower_update(tower *t, const tower_optim *o, real lr, int64_t t_update)
{
    t->ops->update(t, o, lr, t_update);
}

void tower_sgd(tower *t, real lr, real momentum, real wd)
{
    tower_optim o = {.kind = TOWER_OPTIM_SGD, .momentum = momentum, .weight_decay = wd};
    t->ops->update(t, &o, lr, 1);
}
