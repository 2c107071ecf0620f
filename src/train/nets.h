/* nets: choosing a net from the command line (--net NAME, or --towers as before) and
 * `twotower nets`, the list of the presets. Part of src/train (included by train.h). */
#ifndef TRAIN_NETS_H
#define TRAIN_NETS_H

#include <stddef.h>
#include <stdio.h>

#include "base/base.h"
#include "tower/tower.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Puts the net in cfg->net: the preset `name`, or without a name the one --towers always
 * built (cfg->towers 2 or 0: alexnet2012; 1: half, so --towers 1 is --net half), then the
 * switches sw (NULL: none). cfg->towers 0 means --towers was not given and becomes the
 * net's; a given one must agree with the net. cfg->classes, in_size and in_ch 0 become the
 * net's defaults. Returns 0, or -1 with err naming the flag (--net, --towers) or the
 * switch. */
int train_net_choose(tower_config *cfg, const char *name, const tower_net_switches *sw,
                     char *err, size_t errlen);

/* The net flags as given, shared by the tables of train, summary, bench, dump and export:
 * --net NAME and the switches on top of it (tower_net_switches; paper_notes.md). Every
 * value is "keep" (the net's own) until its flag is given. */
typedef struct {
    const char *net;      /* --net NAME, or NULL: by --towers */
    int lrn;              /* --lrn on|off: 1, 0; -1 keep */
    const char *pool;     /* --pool K:S (its form already checked), or NULL */
    int act;              /* --act relu|tanh: TOWER_ACT_*; -1 keep */
    int init;             /* --init paper|torch: TOWER_INIT_NORMAL / _TORCH; -1 keep */
    double dropout;       /* --dropout P; < 0 keep */
    int optim;            /* --optim sgd|adam: TOWER_OPTIM_*; 0 keep */
    double momentum, weight_decay, beta1, beta2, eps; /* < 0 keep */
} train_net_args;

/* Everything keep. A command's defaults() calls it. */
void train_net_args_default(train_net_args *a);
/* --net and the switch flags into a train_net_args: a group for a command's flag table,
 * {BASE_FLAG_GROUP(train_net_flags, OPTS, FIELD)}. --net sets TRAIN_NETS_GIVEN_NET, a
 * switch TRAIN_NETS_GIVEN_SWITCH in the parse's given bits. */
extern const base_flag train_net_flags[];
enum { TRAIN_NETS_GIVEN_NET = 1u << 20, TRAIN_NETS_GIVEN_SWITCH = 1u << 21 };
/* The switches the flags give (keep for the others). 0, or -1 with err naming the flag. */
int train_net_args_switches(const train_net_args *a, tower_net_switches *sw, char *err,
                            size_t errlen);
/* train_net_choose with the flags' net and switches. */
int train_net_args_choose(const train_net_args *a, tower_config *cfg, char *err,
                          size_t errlen);
/* --resume: a switch given on the command line must be the one the checkpoint's net was
 * built with (stored); -1 with err naming the flag and both values otherwise. */
int train_net_switches_agree(const tower_net_switches *given, const tower_net_switches *stored,
                             const char *ckpt, char *err, size_t errlen);

/* Parameters of the whole net (every tower) at its default size: the figure `twotower
 * nets` prints. 0 when the preset cannot be planned (never for the built-in ones). */
size_t train_net_params(const tower_net *net);

/* `twotower nets`: one line per preset with its parameter count. argv[0] is "nets".
 * Returns the exit code. */
int train_nets_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
