/* dump_net: `twotower dump` for any preset with switches on top (the switch flags of the
 * command line come with its flag table), and optionally one optimizer update, for the
 * PyTorch agreement tests. usage:
 *   dump_net OUT NET SIZE WIDTH_DIV CLASSES SEED [--update LR] [SWITCH VALUE]...
 * SWITCH: lrn, pool, act, dropout, optim, momentum, weight-decay, beta1, beta2, eps
 * (tower_net_switch_parse). Batch 2, CPU. Exit 0, 1 (failed) or 2 (usage). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: dump_net OUT NET SIZE WIDTH_DIV CLASSES SEED [--update LR] "
                        "[SWITCH VALUE]...\n");
        return 2;
    }
    tower_config cfg = {.towers = 0, .classes = atoi(argv[5]), .batch = 2,
                        .in_size = atoi(argv[3]), .in_ch = 0, .width_div = atoi(argv[4])};
    uint64_t seed = strtoull(argv[6], NULL, 10);
    double lr = 0;
    tower_net_switches sw = TOWER_SWITCHES_KEEP;
    char err[512];
    for (int i = 7; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--update")) {
            lr = atof(argv[i + 1]);
            continue;
        }
        if (tower_net_switch_parse(&sw, argv[i], argv[i + 1], err, sizeof err)) {
            fprintf(stderr, "dump_net: %s\n", err);
            return 2;
        }
    }
    if ((argc - 7) % 2) {
        fprintf(stderr, "dump_net: a switch without a value\n");
        return 2;
    }
    model m;
    model_placement place = {.cpu = 1};
    if (train_net_choose(&cfg, argv[2], &sw, err, sizeof err) ||
        model_init(&m, &cfg, &place, seed, err, sizeof err)) {
        fprintf(stderr, "dump_net: %s\n", err);
        return 2;
    }
    size_t xn = (size_t)cfg.batch * cfg.in_ch * cfg.in_size * cfg.in_size;
    float *x = malloc(sizeof(float) * xn);
    int32_t labels[2];
    int rc = 1;
    if (x) {
        train_dump_batch(x, labels, &cfg, seed);
        rc = train_dump_model_update(&m, x, labels, (real)lr, argv[1], err, sizeof err);
        if (rc) fprintf(stderr, "dump_net: %s\n", err);
    }
    free(x);
    model_free(&m);
    return rc ? 1 : 0;
}
