/* util.c: strict command-line numbers. */
#include "train/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int train_arg_i64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "twotower %s: %s needs a whole number from %" PRId64 " to %" PRId64
                        ", not '%s'\n", cmd, flag, lo, hi, s ? s : "(missing)");
        return -1;
    }
    *out = v;
    return 0;
}

int train_arg_int(const char *cmd, const char *flag, const char *s, int lo, int hi, int *out)
{
    int64_t v;
    if (train_arg_i64(cmd, flag, s, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int train_arg_f64(const char *cmd, const char *flag, const char *s, double lo, double hi,
                  double *out)
{
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || errno || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "twotower %s: %s needs a number from %g to %g, not '%s'\n", cmd, flag,
                lo, hi, s ? s : "(missing)");
        return -1;
    }
    *out = v;
    return 0;
}
