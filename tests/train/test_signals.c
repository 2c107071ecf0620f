/* Tests of the two-stage SIGINT/SIGTERM handling: the first signal only sets the flag
 * (the loop finishes its step and checkpoints), the second ends the process at once with
 * 128 + signal, leaving a checkpoint being written as a .tmp. Children are forked so a
 * second signal never ends the test runner itself. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "train/signals.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int wait_child(pid_t pid, int timeout_ms)
{
    int st;
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        sleep_ms(5);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    cr_assert_fail("child %d did not exit within %d ms", (int)pid, timeout_ms);
    return -1;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

Test(signals, first_signal_sets_the_flag_only)
{
    char err[256];
    cr_assert_eq(train_signals_install(err, sizeof err), 0, "%s", err);
    cr_assert_eq(train_signals_stop_requested(), 0);
    cr_assert_eq(train_signals_exit_code(), 0);
    cr_assert_eq(raise(SIGINT), 0);
    /* still running: the handler did not exit */
    cr_assert_eq(train_signals_stop_requested(), SIGINT);
    cr_assert_eq(train_signals_exit_code(), 130);
    train_signals_uninstall();
    cr_assert_eq(train_signals_stop_requested(), 0);

    cr_assert_eq(train_signals_install(err, sizeof err), 0, "%s", err);
    cr_assert_eq(raise(SIGTERM), 0);
    cr_assert_eq(train_signals_stop_requested(), SIGTERM);
    cr_assert_eq(train_signals_exit_code(), 143);
    train_signals_uninstall();
}

Test(signals, second_signal_exits_immediately)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (train_signals_install(NULL, 0) != 0)
            _exit(90);
        raise(SIGTERM);
        if (train_signals_stop_requested() != SIGTERM)
            _exit(91);
        if (write(fds[1], "1", 1) != 1)
            _exit(92);
        raise(SIGINT); /* a second signal of the other kind also counts */
        /* never reached */
        if (write(fds[1], "2", 1) != 1)
            _exit(93);
        _exit(0);
    }
    close(fds[1]);
    int st = wait_child(pid, 5000);
    char buf[8] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    cr_assert(WIFEXITED(st), "child ended by a signal, not _exit");
    cr_assert_eq(WEXITSTATUS(st), 128 + SIGINT, "exit status %d", WEXITSTATUS(st));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(buf, "1", "the code after the second signal ran: '%s'", buf);
}

/* A stand-in for the trainer's loop: steps until the flag is set, then "checkpoints"
 * by writing a .tmp slowly and renaming it. */
static void child_loop(const char *dir, int slow_ckpt_ms)
{
    if (train_signals_install(NULL, 0) != 0)
        _exit(90);
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/running", dir);
    FILE *m = fopen(marker, "w");
    if (!m)
        _exit(91);
    fclose(m);
    for (int step = 0; step < 100000; step++) {
        sleep_ms(1); /* one "step" */
        if (train_signals_stop_requested()) {
            char tmp[4200], fin[4200];
            snprintf(tmp, sizeof tmp, "%s/ckpt-00000001.ttc.tmp", dir);
            snprintf(fin, sizeof fin, "%s/ckpt-00000001.ttc", dir);
            FILE *f = fopen(tmp, "w");
            if (!f)
                _exit(92);
            for (int i = 0; i < 10; i++) {
                fprintf(f, "chunk %d\n", i);
                fflush(f);
                sleep_ms(slow_ckpt_ms);
            }
            fclose(f);
            if (rename(tmp, fin) != 0)
                _exit(93);
            _exit(train_signals_exit_code());
        }
    }
    _exit(94);
}

static void wait_for_file(const char *p)
{
    for (int i = 0; i < 2000 && !file_exists(p); i++)
        sleep_ms(5);
    cr_assert(file_exists(p), "%s never appeared", p);
}

/* A training stand-in in a child process (child_loop, checkpoint writes of write_ms ms)
 * in a fresh folder *dir; returns its pid once it is running. marker, fin and tmp get
 * the paths of its "running" file, its checkpoint and that checkpoint's .tmp. */
static pid_t start_child(char **dir, char marker[4200], char fin[4200], char tmp[4300],
                         int write_ms)
{
    *dir = tt_tmpdir("sig");
    snprintf(marker, 4200, "%s/running", *dir);
    snprintf(fin, 4200, "%s/ckpt-00000001.ttc", *dir);
    snprintf(tmp, 4300, "%s.tmp", fin);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0)
        child_loop(*dir, write_ms);
    wait_for_file(marker);
    return pid;
}

Test(signals, external_sigint_finishes_step_and_checkpoints)
{
    char *dir, marker[4200], fin[4200], tmp[4300];
    pid_t pid = start_child(&dir, marker, fin, tmp, 1);
    cr_assert_eq(kill(pid, SIGINT), 0);
    int st = wait_child(pid, 10000);
    cr_assert(WIFEXITED(st));
    cr_assert_eq(WEXITSTATUS(st), 130);
    cr_assert(file_exists(fin), "the checkpoint was written");
    cr_assert(!file_exists(tmp));
    unlink(fin);
    unlink(marker);
    rmdir(dir);
    free(dir);
}

Test(signals, second_sigterm_during_checkpoint_leaves_only_tmp)
{
    char *dir, marker[4200], fin[4200], tmp[4300];
    pid_t pid = start_child(&dir, marker, fin, tmp, 1000); /* a 10 s checkpoint write */
    cr_assert_eq(kill(pid, SIGTERM), 0);
    wait_for_file(tmp); /* the write has begun */
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int st = wait_child(pid, 1500); /* well before the write would finish */
    cr_assert(WIFEXITED(st));
    cr_assert_eq(WEXITSTATUS(st), 143);
    cr_assert(!file_exists(fin), "the unfinished checkpoint must not replace anything");
    cr_assert(file_exists(tmp));
    unlink(tmp);
    unlink(marker);
    rmdir(dir);
    free(dir);
}
