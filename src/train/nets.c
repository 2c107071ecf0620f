/* nets.c: the net a command line asks for (train_net_choose, the --net and switch flags'
 * table) and `twotower nets`. */
#include "train/nets.h"

#include <stddef.h>
#include <string.h>

void train_net_args_default(train_net_args *a)
{
    *a = (train_net_args){.net = NULL, .lrn = -1, .pool = NULL, .act = -1, .dropout = -1,
                          .init = -1, .optim = 0, .momentum = -1, .weight_decay = -1, .beta1 = -1,
                          .beta2 = -1, .eps = -1};
}

static int check_pool(const char *value, char *err, size_t errlen)
{
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    return tower_net_switch_parse(&sw, "pool", value, err, errlen);
}

#define SW TRAIN_NETS_GIVEN_SWITCH
const base_flag train_net_flags[] = {
    {BASE_FLAG_STR("net", train_net_args, net, "NAME",
                   "the net: alexnet2012, alexnet2012-1gpu, half, merged, alexnet2014,\n"
                   "torchvision, fmnist (twotower nets)"),
     .given = TRAIN_NETS_GIVEN_NET, .deflt = "alexnet2012; half with --towers 1"},
    {BASE_FLAG_CHOICE("lrn", train_net_args, lrn, "on|off",
                      "on: LRN after conv1 and conv2 (the paper's constants); off: none"),
     .values = (const int[]){1, 0}, .given = SW, .deflt = "the net's"},
    {BASE_FLAG_STR("pool", train_net_args, pool, "K:S",
                   "every pooling layer's window and stride (2:2: non-overlapping)"),
     .check = check_pool, .given = SW, .deflt = "the net's"},
    {BASE_FLAG_CHOICE("act", train_net_args, act, "relu|tanh", "every hidden layer's activation"),
     .values = (const int[]){TOWER_ACT_RELU, TOWER_ACT_TANH}, .given = SW,
     .deflt = "the net's"},
    {BASE_FLAG_F64("dropout", train_net_args, dropout, 0, 0.99, "P",
                   "every dropout layer's probability (0: none)"),
     .given = SW, .deflt = "the net's"},
    {BASE_FLAG_CHOICE("init", train_net_args, init, "paper|torch",
                      "paper: N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7\n"
                      "(section 5); torch: PyTorch's defaults (U(+-1/sqrt(fan_in)))"),
     .values = (const int[]){TOWER_INIT_NORMAL, TOWER_INIT_TORCH}, .given = SW,
     .deflt = "the net's"},
    {BASE_FLAG_CHOICE("optim", train_net_args, optim, "sgd|adam", "the optimizer"),
     .values = (const int[]){TOWER_OPTIM_SGD, TOWER_OPTIM_ADAM}, .given = SW,
     .deflt = "the net's"},
    {BASE_FLAG_F64("momentum", train_net_args, momentum, 0, 0.999, "X", "SGD's momentum"),
     .given = SW, .deflt = "the net's"},
    {BASE_FLAG_F64("weight-decay", train_net_args, weight_decay, 0, 0.1, "X",
                   "weight decay (weights only)"),
     .given = SW, .deflt = "the net's"},
    {BASE_FLAG_F64("beta1", train_net_args, beta1, 0, 0.9999, "X", "Adam's beta1"),
     .given = SW, .deflt = "0.9"},
    {BASE_FLAG_F64("beta2", train_net_args, beta2, 0, 0.999999, "X", "Adam's beta2"),
     .given = SW, .deflt = "0.999"},
    {BASE_FLAG_F64("eps", train_net_args, eps, 1e-12, 1, "X", "Adam's eps"), .given = SW,
     .deflt = "1e-8"},
    {0}};
#undef SW

int train_net_args_switches(const train_net_args *a, tower_net_switches *sw, char *err,
                            size_t errlen)
{
    *sw = TOWER_SWITCHES_KEEP;
    char why[256];
    if (a->pool && tower_net_switch_parse(sw, "pool", a->pool, why, sizeof why)) {
        base_errf(err, errlen, "--pool %s: %s", a->pool, why);
        return -1;
    }
    sw->lrn = a->lrn;
    sw->act = a->act;
    sw->dropout = a->dropout;
    sw->optim = a->optim;
    sw->init = a->init;
    sw->momentum = a->momentum;
    sw->weight_decay = a->weight_decay;
    sw->beta1 = a->beta1;
    sw->beta2 = a->beta2;
    sw->eps = a->eps;
    return 0;
}

int train_net_args_choose(const train_net_args *a, tower_config *cfg, char *err,
                          size_t errlen)
{
    tower_net_switches sw;
    if (train_net_args_switches(a, &sw, err, errlen)) return -1;
    return train_net_choose(cfg, a->net, &sw, err, errlen);
}

int train_net_switches_agree(const tower_net_switches *given, const tower_net_switches *stored,
                             const char *ckpt, char *err, size_t errlen)
{
    char g[64], s[64];
    const char *flag = NULL;
    static const char *const lrn_names[3] = {"the net's", "off", "on"};
    static const char *const act_names[4] = {"the net's", "none", "relu", "tanh"};
    static const char *const init_names[3] = {"the net's", "paper", "torch"};
#define CMP_I(F, NAME, NAMES)                                                              \
    if (!flag && given->F != -1 && given->F != stored->F) {                                \
        flag = NAME;                                                                       \
        snprintf(g, sizeof g, "%s", NAMES[given->F + 1]);                                  \
        snprintf(s, sizeof s, "%s", NAMES[stored->F + 1]);                                 \
    }
#define CMP_F(F, NAME)                                                                     \
    if (!flag && given->F >= 0 && given->F != stored->F) {                                 \
        flag = NAME;                                                                       \
        snprintf(g, sizeof g, "%g", given->F);                                             \
        snprintf(s, sizeof s, stored->F >= 0 ? "%g" : "the net's", stored->F);             \
    }
    CMP_I(lrn, "--lrn", lrn_names)
    CMP_I(act, "--act", act_names)
    CMP_I(init, "--init", init_names)
    CMP_F(dropout, "--dropout")
    CMP_F(momentum, "--momentum")
    CMP_F(weight_decay, "--weight-decay")
    CMP_F(beta1, "--beta1")
    CMP_F(beta2, "--beta2")
    CMP_F(eps, "--eps")
#undef CMP_I
#undef CMP_F
    if (!flag && given->optim && given->optim != stored->optim) {
        flag = "--optim";
        snprintf(g, sizeof g, "%s", given->optim == TOWER_OPTIM_ADAM ? "adam" : "sgd");
        snprintf(s, sizeof s, "%s", stored->optim == TOWER_OPTIM_ADAM ? "adam"
                                    : stored->optim ? "sgd" : "the net's");
    }
    if (!flag && given->pool_k &&
        (given->pool_k != stored->pool_k || given->pool_s != stored->pool_s)) {
        flag = "--pool";
        snprintf(g, sizeof g, "%d:%d", given->pool_k, given->pool_s);
        if (stored->pool_k) snprintf(s, sizeof s, "%d:%d", stored->pool_k, stored->pool_s);
        else snprintf(s, sizeof s, "the net's");
    }
    if (!flag) return 0;
    base_errf(err, errlen, "%s %s, but %s was made with %s: a resumed run keeps the "
              "checkpoint's net (drop the flag, or start a new run)", flag, g, ckpt, s);
    return -1;
}

int train_net_choose(tower_config *cfg, const char *name, const tower_net_switches *sw,
                     char *err, size_t errlen)
{
    const tower_net *p;
    if (name) {
        p = tower_net_preset(name);
        if (!p) {
            base_errf(err, errlen, "--net %s: no such net (the nets: %s; see twotower nets)",
                      name, tower_net_names());
            return -1;
        }
        if (cfg->towers && cfg->towers != p->towers) {
            base_errf(err, errlen, "--towers %d contradicts --net %s, which has %d tower%s",
                      cfg->towers, name, p->towers, p->towers > 1 ? "s" : "");
            return -1;
        }
    } else {
        if (cfg->towers != 0 && cfg->towers != 1 && cfg->towers != 2) {
            base_errf(err, errlen, "--towers %d: 1 or 2", cfg->towers);
            return -1;
        }
        p = tower_net_preset_id(cfg->towers == 1 ? TOWER_NET_HALF : TOWER_NET_ALEXNET2012);
    }
    tower_net net = *p;
    char why[512];
    if (sw && tower_net_apply(&net, sw, why, sizeof why)) {
        /* tower_net_apply's messages start with the switch's name: the flag's */
        base_errf(err, errlen, "--%s", why);
        return -1;
    }
    cfg->net = net;
    cfg->towers = net.towers;
    if (!cfg->classes) cfg->classes = net.classes;
    if (!cfg->in_size) cfg->in_size = net.in_size;
    if (!cfg->in_ch) cfg->in_ch = net.in_ch;
    return 0;
}

size_t train_net_params(const tower_net *net)
{
    tower_config cfg = {.towers = net->towers, .classes = net->classes, .batch = 1,
                        .in_size = net->in_size, .in_ch = net->in_ch, .width_div = 1,
                        .net = *net};
    tower_plan plan;
    char err[256];
    if (tower_plan_make(&plan, &cfg, err, sizeof err)) return 0;
    return plan.n_params * (size_t)net->towers;
}

int train_nets_main(int argc, char **argv)
{
    if (argc > 1) {
        int help = !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
        fprintf(help ? stdout : stderr,
                "usage: twotower nets\n"
                "Lists the nets --net takes, one line each: name, towers, input, classes,\n"
                "parameters in all at that input, and what it is (paper_notes.md says where\n"
                "each comes from). twotower summary --net NAME prints one's layers.\n");
        return help ? 0 : 2;
    }
    for (int i = 0; i < TOWER_NET_PRESETS; i++) {
        const tower_net *n = tower_net_preset_at(i);
        printf("%-17s %d tower%s  %dx%dx%d  %4d classes  %11zu parameters  %s\n", n->name,
               n->towers, n->towers > 1 ? "s" : " ", n->in_ch, n->in_size, n->in_size,
               n->classes, train_net_params(n), n->about);
    }
    return 0;
}
