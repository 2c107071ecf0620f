/* summary.c: `twotower summary`, the per-layer table of the net a config builds:
 * output shape, the stages after each conv/fc, parameters and multiply-adds per tower and
 * in total, and the memory one tower's arena takes at the chosen batch. */
#include "train/train.h"

#include <stdio.h>
#include <string.h>

void train_summary_print(FILE *f, const tower_plan *p)
{
    int T = p->cfg.towers;
    tower probe;
    memset(&probe, 0, sizeof probe);
    probe.plan = *p;
    probe.ops = &tower_ops_cpu; /* the CPU's (lean) arena; the GPU's is its own line below */
    size_t arena = tower_carve(&probe, NULL);
    const tower_net *net = &p->cfg.net;
    char sw[256];
    tower_net_switches_describe(&net->switches, sw, sizeof sw);
    fprintf(f, "twotower net %s (switches: %s): %d tower%s, %d classes, input %dx%dx%d, "
               "batch %d\n", net->name, sw, T, T > 1 ? "s" : "", p->cfg.classes, p->cfg.in_ch,
            p->cfg.in_size, p->cfg.in_size, p->cfg.batch);
    fprintf(f, "%-6s %-5s %-16s %-24s %-16s %14s %14s %12s %12s\n", "layer", "reads",
            "output/tower", "then", "after pool", "params/tower", "params", "MMAC/tower",
            "MMAC");
    size_t total = 0;
    double macs = 0;
    for (int l = 0; l < p->n_layers; l++) {
        const tower_layer_shape *L = &p->layer[l];
        char out[32], fin[32], then[64] = "";
        snprintf(out, sizeof out, "%dx%dx%d", L->out_ch, L->out_h, L->out_h);
        snprintf(fin, sizeof fin, "%dx%dx%d", L->final_ch, L->final_h, L->final_h);
        /* the stages after the conv/fc, in order */
        size_t o = 0;
        if (L->act != TOWER_ACT_NONE)
            o += (size_t)snprintf(then + o, sizeof then - o, "%s ",
                                  L->act == TOWER_ACT_TANH ? "tanh" : "relu");
        if (L->lrn) o += (size_t)snprintf(then + o, sizeof then - o, "lrn ");
        if (L->pool_k)
            o += (size_t)snprintf(then + o, sizeof then - o, "pool%d:%d ", L->pool_k, L->pool_s);
        if (L->drop_p > 0)
            snprintf(then + o, sizeof then - o, "drop%g%s", L->drop_p,
                     L->drop_scale == TOWER_DROP_INVERTED ? "i" : "");
        if (!then[0]) snprintf(then, sizeof then, "-");
        size_t np = L->w_count + L->b_count;
        total += np * T;
        macs += L->macs * T;
        fprintf(f, "%-6s %-5s %-16s %-24s %-16s %14zu %14zu %12.1f %12.1f\n",
                tower_plan_row(p, l)->name, L->sources > 1 ? "both" : "own", out, then, fin, np,
                np * T, L->macs / 1e6, L->macs * T / 1e6);
    }
    fprintf(f, "total parameters: %zu (%zu per tower)\n", total, p->n_params);
    fprintf(f, "forward multiply-adds per image: %.1f M (%.3f GFLOP; training ~3x)\n", macs / 1e6,
            2 * macs / 1e9);
    fprintf(f, "optimizer: %s, lr %g (the net's default), batch %d, %d epochs\n",
            net->optim.kind == TOWER_OPTIM_ADAM ? "adam" : "sgd", net->lr, net->batch,
            net->epochs);
    fprintf(f, "memory per tower at batch %d (fp32 params, grads, %s, activations): "
               "%.1f MiB\n", p->cfg.batch, p->adam ? "Adam's two moments" : "momentum",
            arena / 1048576.0);
    tower_mem mm;
    tower_memory(&probe, &mm);
    size_t kept = 0;
    for (int l = 0; l < p->n_layers; l++) kept += mm.kept[l];
    fprintf(f, "  of which: parameters, gradients and %s %.1f, input %.1f, kept for backward "
               "%.1f, activation gradients (shared regions) %.1f, loss %.1f, conv scratch "
               "%.1f MiB\n",
            p->adam ? "moments" : "momentum", mm.params / 1048576.0, mm.input / 1048576.0,
            kept / 1048576.0, mm.grads / 1048576.0, mm.loss / 1048576.0,
            mm.scratch / 1048576.0);
#ifdef TT_HAVE_CUDA
    fprintf(f, "GPU memory per tower at batch %d (arena + conv scratch + cuBLAS workspace): %.1f MiB\n",
            p->cfg.batch, tower_cuda_mem_estimate(p) / 1048576.0);
#endif
}
