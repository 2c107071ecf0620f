/* signals: SIGINT/SIGTERM for long runs. The first one asks the trainer to stop after
 * the current step (it then writes a checkpoint and exits); the second one ends the
 * process at once with _exit, touching no file, so a checkpoint being written stays a
 * .tmp that never replaces the last good one.
 *
 * How the trainer calls it:
 *
 *   train_signals_install(err, sizeof err);             // once, before the loop
 *   for (;;) {
 *       ... one step ...
 *       if (train_signals_stop_requested()) {           // 0, or SIGINT / SIGTERM
 *           save a checkpoint; log "stopped by SIGINT at step N, checkpoint X";
 *           return train_signals_exit_code();           // 130 (SIGINT) or 143 (SIGTERM)
 *       }
 *   }
 *
 * Exit status: a run stopped by a signal exits 128 + signal number (130, 143) after its
 * checkpoint, like a shell reports a job ended by that signal, so `train && export` does
 * not go on with an unfinished run; a finished run exits 0. The second signal also exits
 * 128 + signal number, immediately, and prints one line saying no checkpoint was written.
 *
 * The flag is the one process-wide variable in twotower: a signal handler can reach
 * nothing else. */
#ifndef TRAIN_SIGNALS_H
#define TRAIN_SIGNALS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the handler for SIGINT and SIGTERM (sigaction, SA_RESTART) and clears the
 * flag. Returns 0, or -1 with err. */
int train_signals_install(char *err, size_t errlen);

/* 0 while no signal has arrived, else the number of the first one (SIGINT or SIGTERM). */
int train_signals_stop_requested(void);

/* 128 + the first signal's number, or 0 when none arrived. */
int train_signals_exit_code(void);

/* Puts the default handlers back and clears the flag (tests; a library user that keeps
 * running after training). */
void train_signals_uninstall(void);

#ifdef __cplusplus
}
#endif
#endif
