/* signals: the two-stage SIGINT/SIGTERM handler (see signals.h). The handler only
 * touches a sig_atomic_t and calls write() and _exit(), both async-signal-safe. */
#include "train/signals.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The only global: which signal asked for a stop (0: none). */
static volatile sig_atomic_t g_stop_signal;

static void put(const char *s)
{
    /* Best effort: nothing useful can be done in a handler if stderr is gone. */
    ssize_t r = write(STDERR_FILENO, s, strlen(s));
    (void)r;
}

static void on_signal(int sig)
{
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (g_stop_signal != 0) {
        put("\ntwotower: second ");
        put(name);
        put(": exiting now, no checkpoint written (the last good one is kept)\n");
        _exit(128 + sig);
    }
    g_stop_signal = sig;
    put("\ntwotower: ");
    put(name);
    put(": finishing this step, then writing a checkpoint (send again to exit at once)\n");
}

int train_signals_install(char *err, size_t errlen)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* Block the other stop signal while the handler runs, so SIGINT then SIGTERM in quick
     * succession still count as first and second. */
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = SA_RESTART;
    g_stop_signal = 0;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "signals: sigaction: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int train_signals_stop_requested(void)
{
    return (int)g_stop_signal;
}

int train_signals_exit_code(void)
{
    int s = (int)g_stop_signal;
    return s ? 128 + s : 0;
}

void train_signals_uninstall(void)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    g_stop_signal = 0;
}
