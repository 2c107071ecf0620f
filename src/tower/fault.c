/* fault.c: the per-thread fault slot behind TOWER_CHECK_AS (tower.h): a backend's failed
 * device call inside a void op is recorded here and taken by whoever drives the ops, so a
 * CUDA error fails the step of the tower that met it instead of ending the process. */
#include "tower/tower.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    int kind;          /* 0: empty; TOWER_FAULT_ERROR or TOWER_FAULT_STICKY */
    char msg[640];     /* "CALL failed at FILE:LINE: REASON" */
    int inject_nth;    /* the test hook: checked calls until the injected failure; 0: off */
    int inject_kind;
} fault_slot;

/* One per thread: a tower's ops run on one thread at a time (its worker, or the caller's
 * in the serial order), and the driver takes the slot after each op. */
static _Thread_local fault_slot slot;

int tower_fault_pending(void) { return slot.kind != 0; }

/* The injection due at this call, or 0. */
static int injected_now(void)
{
    if (slot.inject_nth <= 0 || --slot.inject_nth > 0) return 0;
    return slot.inject_kind;
}

int tower_fault_check(int status, const char *call, tower_fault_describe_fn describe,
                      const char *file, int line)
{
    int injected = status == 0 ? injected_now() : 0;
    if (status == 0 && !injected) return 0;
    if (slot.kind) return 1; /* the first fault is the cause */
    char reason[320];
    int kind = describe(status, injected, reason, sizeof reason);
    slot.kind = kind == TOWER_FAULT_STICKY ? TOWER_FAULT_STICKY : TOWER_FAULT_ERROR;
    /* the function's name is enough beside the file and line: not its arguments */
    int name = (int)strcspn(call, "(");
    base_errf(slot.msg, sizeof slot.msg, "%.*s failed at %s:%d: %s%s%s", name, call, file, line,
              reason,
             injected ? " (injected by the test hook)" : "",
             slot.kind == TOWER_FAULT_STICKY
                 ? "; the device's context is lost (a sticky error): nothing more is run on it"
                 : "");
    return 1;
}

int tower_fault_take(char *msg, size_t n)
{
    int kind = slot.kind;
    if (!kind) return 0;
    if (msg && n) snprintf(msg, n, "%s", slot.msg);
    slot.kind = 0;
    slot.msg[0] = '\0';
    return kind;
}

void tower_fault_inject(int nth, int kind)
{
    slot.inject_nth = nth > 0 ? nth : 0;
    slot.inject_kind = nth > 0 ? kind : 0;
}
