/* plot: `twotower plot RUN [-o out.png] [--x epoch|step]` draws a run's loss, top-1/top-5
 * error and learning-rate curves from RUN/metrics.jsonl into one PNG with gnuplot
 * (Debian: gnuplot-nox; pngcairo terminal, plain png when cairo is missing).
 *
 * How main.c calls it: `if (strcmp(argv[1], "plot") == 0) return train_plot_main(argc - 1,
 * argv + 1);` (argv[0] is then "plot"). Writes RUN/plot/{train,eval}.dat and
 * RUN/plot/curves.gp (kept, so the figure can be restyled by hand) and, unless -o says
 * otherwise, RUN/curves.png, every one through base_out (the picture is drawn into its
 * temporary file and renamed into place). Those are the only files plot writes inside the
 * run folder: -o inside RUN is refused unless it names RUN/curves.png, as is -o naming a
 * device, a FIFO or a folder. Exit status 0, 1 on failure (message on stderr), 2 on usage
 * and on a refused -o. */
#ifndef TRAIN_PLOT_H
#define TRAIN_PLOT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int train_plot_main(int argc, char **argv);

/* The work behind it: returns 0, -2 with err when the picture's path is refused (nothing
 * is written then), or -1 with err (no metrics, gnuplot missing or failing).
 * x_step: 1 plots against the step, 0 against the epoch. gnuplot: the program to run
 * ("gnuplot" from PATH when NULL; tests pass a missing one). */
int train_plot_run(const char *run_dir, const char *out_png, int x_step, const char *gnuplot,
                   char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
