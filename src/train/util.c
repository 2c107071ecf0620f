/* util.c: strict command-line numbers, the err/errlen formatter, mkdir -p. */
#include "train/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

void train_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int train_mkdir_p(const char *dir, const char *what, char *err, size_t errlen)
{
    char tmp[4096];
    if (!*dir || snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        train_errf(err, errlen, "%s '%s': empty or too long path", what, dir);
        return -1;
    }
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
            train_errf(err, errlen, "%s %s: mkdir %s: %s", what, dir, tmp, strerror(errno));
            return -1;
        }
        *p = c;
        if (c == 0) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        train_errf(err, errlen, "%s %s: not a folder", what, dir);
        return -1;
    }
    return 0;
}
