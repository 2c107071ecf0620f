/* runfolder: a run folder belongs to one run. The trainer claims RUN before it writes
 * anything there: it holds RUN/.lock (flock) from the start to the end, so a second
 * trainer on the same folder is refused by name, and a new run (no --resume) is refused
 * a folder that already holds one, so nothing of an earlier run is overwritten.
 *
 *   train_run_folder rf;
 *   int rc = train_run_folder_claim(&rf, run_dir, resume != NULL, err, sizeof err);
 *   if (rc) -> print err, exit rc
 *   after resolving the checkpoint of --resume:
 *   rc = train_run_folder_check_resume(&rf, ckpt_path, err, sizeof err)
 *   ... train ...
 *   train_run_folder_release(&rf);   // at the end, whatever happened
 */
#ifndef TRAIN_RUNFOLDER_H
#define TRAIN_RUNFOLDER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RUN/.lock: held with flock(LOCK_EX) while a trainer uses RUN; it holds the holder's
 * process id as text. The file stays after the run (an unlocked file is no claim): it is
 * never removed, since a process that opened it before the removal could then lock a
 * file no later trainer sees. */
#define TRAIN_RUN_LOCK_FILE ".lock"

typedef struct {
    char dir[4096];
    int lock_fd;   /* RUN/.lock, locked; -1 when not held */
    int fresh;     /* RUN was new or empty when claimed: it holds no earlier run */
} train_run_folder;

/* Claims dir for this process, before the run writes anything into it:
 *   - creates dir when missing; refuses a path that is not a folder;
 *   - takes RUN/.lock without waiting, refusing when another process holds it (naming
 *     that process), and writes this process's id into it;
 *   - resume == 0 (a new run): refuses a folder that holds anything but the lock file and
 *     an empty ckpt/ (an earlier run's files, or files that are not a run's);
 *   - the layout: RUN/ckpt a folder (created), RUN and RUN/ckpt writable, metrics.jsonl
 *     and run.json regular files where they exist.
 * Returns 0, 2 when the folder cannot be used for this run (err says why and what to do),
 * or 1 when it cannot be written (a full disk: err names the file). On failure nothing is
 * held. */
int train_run_folder_claim(train_run_folder *rf, const char *dir, int resume, char *err,
                           size_t errlen);

/* --resume: a folder that held a run when claimed takes only that run's own checkpoints
 * (ckpt must lie inside it); continuing another run's checkpoint there would mix two runs
 * in one folder. A fresh folder takes any checkpoint (a run continued elsewhere). 0, or 2
 * with err. */
int train_run_folder_check_resume(const train_run_folder *rf, const char *ckpt, char *err,
                                  size_t errlen);

/* Empties the lock file and lets the lock go (closing it). Safe to call twice. */
void train_run_folder_release(train_run_folder *rf);

#ifdef __cplusplus
}
#endif
#endif
