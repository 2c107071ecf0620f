/* base.c: version, clock, Box-Muller, strict numbers, messages (base.h). The file
 * helpers are in file.c. */
#include "base/base.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TT_VERSION
#error "TT_VERSION comes from meson.build (src/base/meson.build passes it)"
#endif

const char *base_version(void) { return TT_VERSION; }

double base_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double base_rng_normal(uint64_t key, uint64_t index, int second)
{
    double u1 = ((double)(base_rng_mix(key, index) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(base_rng_mix(key, index + 1) >> 11) * (1.0 / 9007199254740992.0);
    double r = sqrt(-2.0 * log(u1));
    return second ? r * sin(6.283185307179586 * u2) : r * cos(6.283185307179586 * u2);
}

int base_parse_i64(const char *s, int64_t *out)
{
    if (!s) return -1;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = (int64_t)v;
    return 0;
}

int base_parse_f64(const char *s, double *out)
{
    if (!s || !*s) return -1;
    /* decimal syntax only: digits, one point, an exponent; no hex, inf, nan, spaces */
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q) && !strchr("+-.eE", *q)) return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

void base_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
