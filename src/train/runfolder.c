/* runfolder.c: the claim on a run folder (runfolder.h): RUN/.lock taken with flock, so the
 * kernel lets it go when the holder exits however it exits (a kill -9 leaves no stale
 * claim); a new run only in a folder that holds no run; the layout checked before any
 * training, so a run that cannot write its checkpoints stops at once, not at the end. */
#include "train/runfolder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "train/checkpoint.h"
#include "train/metrics.h"

/* 1 when dir is an empty folder. */
static int empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n == 0;
}

/* What of an earlier run (or of anything) dir holds: 0 when nothing but the lock file and
 * an empty ckpt/ (what a start that stopped before writing leaves), else 1 with up to
 * three of the names in what. -1 when dir cannot be listed. */
static int holds_files(const char *dir, char *what, size_t n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int found = 0;
    size_t k = 0;
    what[0] = 0;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        if (!strcmp(s, ".") || !strcmp(s, "..") || !strcmp(s, TRAIN_RUN_LOCK_FILE))
            continue;
        if (!strcmp(s, TRAIN_CKPT_SUBDIR)) {
            char sub[4096 + 16];
            snprintf(sub, sizeof sub, "%s/%s", dir, s);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode) && empty_dir(sub))
                continue;
        }
        if (found < 3 && k < n)
            k += (size_t)snprintf(what + k, n - k, "%s%s", found ? ", " : "", s);
        else if (found == 3 && k < n)
            k += (size_t)snprintf(what + k, n - k, ", ...");
        found++;
    }
    closedir(d);
    return found > 0;
}

/* The id the holder wrote into the lock file, or 0 when it cannot be read (it may not
 * have written it yet). */
static long lock_holder(int fd)
{
    char buf[32] = {0};
    ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
    long pid = r > 0 ? strtol(buf, NULL, 10) : 0;
    return pid > 0 ? pid : 0;
}

/* Opens RUN/.lock (creating it when create) and locks it without waiting. 0 with
 * rf->lock_fd set; 2 with err when another process holds it or the name is not a
 * regular file. */
static int take_lock(train_run_folder *rf, const char *path, int create, char *err,
                     size_t errlen)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (create ? O_CREAT : 0),
                  0666);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        base_errf(err, errlen, "run folder %s: cannot use its lock file %s: %s", rf->dir, path,
                  fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return 2;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long pid = lock_holder(fd);
        close(fd);
        if (e != EWOULDBLOCK) {
            base_errf(err, errlen, "run folder %s: cannot lock %s: %s", rf->dir, path,
                      strerror(e));
            return 2;
        }
        char who[64];
        if (pid)
            snprintf(who, sizeof who, "process %ld", pid);
        else
            snprintf(who, sizeof who, "another process");
        base_errf(err, errlen, "run folder %s is in use: %s holds its lock %s (a trainer "
                               "writing this run); wait for it to end, or give another --run",
                  rf->dir, who, path);
        return 2;
    }
    rf->lock_fd = fd;
    return 0;
}

static int refuse_files(const train_run_folder *rf, const char *what, char *err, size_t errlen)
{
    base_errf(err, errlen, "run folder %s is not empty (it holds %s): a new run never writes "
                           "over another run's files; continue that run with --resume %s, or "
                           "give another --run", rf->dir, what, rf->dir);
    return 2;
}

int train_run_folder_claim(train_run_folder *rf, const char *dir, int resume, char *err,
                           size_t errlen)
{
    memset(rf, 0, sizeof *rf);
    rf->lock_fd = -1;
    if (!*dir || snprintf(rf->dir, sizeof rf->dir, "%s", dir) >= (int)sizeof rf->dir) {
        base_errf(err, errlen, "run folder '%s': empty or too long a path", dir);
        return 2;
    }
    char lock[4096 + 16], ckpt[4096 + 16], what[512];
    snprintf(lock, sizeof lock, "%s/%s", dir, TRAIN_RUN_LOCK_FILE);
    snprintf(ckpt, sizeof ckpt, "%s/%s", dir, TRAIN_CKPT_SUBDIR);
    struct stat st;
    int exists = stat(dir, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) {
        base_errf(err, errlen, "run folder %s: exists and is not a folder", dir);
        return 2;
    }
    int rc = 0;
    /* a folder in use is named as such, before it is judged by its files; a folder
     * without a lock file gets one only once it is known to be this run's */
    if (exists && lstat(lock, &st) == 0 && (rc = take_lock(rf, lock, 0, err, errlen)))
        return rc;
    if (exists && !resume) {
        int h = holds_files(dir, what, sizeof what);
        if (h != 0) {
            train_run_folder_release(rf);
            if (h < 0) {
                base_errf(err, errlen, "run folder %s: cannot list it: %s", dir, strerror(errno));
                return 2;
            }
            return refuse_files(rf, what, err, errlen);
        }
    }
    if (!exists && base_mkdir_p(dir, "run folder", err, errlen) != 0)
        return 2;
    if (rf->lock_fd < 0 && (rc = take_lock(rf, lock, 1, err, errlen)))
        return rc;
    /* again under the lock: a run may have started and ended since the look above */
    int h = holds_files(dir, what, sizeof what);
    rf->fresh = h == 0;
    if (!resume && h != 0) {
        train_run_folder_release(rf);
        return refuse_files(rf, h < 0 ? "files that cannot be listed" : what, err, errlen);
    }

    /* the layout, so a run that could not keep its checkpoints stops now, not after
     * training (access: a read-only mount; root passes permission bits) */
    const char *own[] = {TRAIN_METRICS_FILE, TRAIN_RUN_INFO_FILE};
    for (int i = 0; i < 2; i++) {
        char p[4096 + 32];
        snprintf(p, sizeof p, "%s/%s", dir, own[i]);
        if (base_check_output(p, "run folder file", NULL, 0, NULL, 0, err, errlen) != 0) {
            rc = 2;
            goto fail;
        }
    }
    if (lstat(ckpt, &st) == 0 && !S_ISDIR(st.st_mode)) {
        base_errf(err, errlen, "run folder %s: %s is not a folder; a run keeps its "
                               "checkpoints there", dir, ckpt);
        rc = 2;
        goto fail;
    }
    if (base_mkdir_p(ckpt, "checkpoint folder", err, errlen) != 0) {
        rc = 2;
        goto fail;
    }
    const char *wr[] = {dir, ckpt};
    for (int i = 0; i < 2; i++)
        if (access(wr[i], W_OK | X_OK) != 0) {
            base_errf(err, errlen, "run folder %s: %s cannot be written: %s", dir, wr[i],
                      strerror(errno));
            rc = 2;
            goto fail;
        }

    /* the holder's id, for the message of a trainer refused; a full disk shows here */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    errno = 0;
    if (ftruncate(rf->lock_fd, 0) != 0 || pwrite(rf->lock_fd, pid, (size_t)n, 0) != n) {
        base_errf(err, errlen, "run folder %s: cannot write its lock file %s: %s", dir, lock,
                  strerror(errno ? errno : EIO));
        rc = 1;
        goto fail;
    }
    return 0;
fail:
    train_run_folder_release(rf);
    return rc;
}

int train_run_folder_check_resume(const train_run_folder *rf, const char *ckpt, char *err,
                                  size_t errlen)
{
    if (rf->fresh || base_path_inside(ckpt, rf->dir) == 1)
        return 0;
    base_errf(err, errlen, "run folder %s holds another run: continuing %s there would mix two "
                           "runs' metrics and checkpoints in one folder; resume into a new "
                           "--run, or from %s's own checkpoints (--resume %s)",
              rf->dir, ckpt, rf->dir, rf->dir);
    return 2;
}

void train_run_folder_release(train_run_folder *rf)
{
    if (rf->lock_fd < 0)
        return;
    /* the id goes first, so a finished run's lock file names no process */
    int ignored = ftruncate(rf->lock_fd, 0); /* a failure changes nothing: the lock goes */
    (void)ignored;
    close(rf->lock_fd);
    rf->lock_fd = -1;
}
