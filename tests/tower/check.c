/* check: the test helpers declared in check.h. */
#include "check.h"

#include <math.h>
#include <string.h>

void chk_rng_seed(chk_rng *r, uint64_t seed)
{
    r->s = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    if (r->s == 0)
        r->s = 1;
}

static uint64_t chk_next(chk_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}

double chk_uniform(chk_rng *r, double lo, double hi)
{
    double u = (double)(chk_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return lo + (hi - lo) * u;
}

double chk_signed(chk_rng *r, double lo, double hi)
{
    double m = chk_uniform(r, lo, hi);
    return (chk_next(r) >> 63) ? -m : m;
}

double chk_normal(chk_rng *r)
{
    double u1 = chk_uniform(r, 0.0, 1.0), u2 = chk_uniform(r, 0.0, 1.0);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void chk_fill(chk_rng *r, double *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = chk_uniform(r, lo, hi);
}

void chk_perm(chk_rng *r, int *p, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(chk_next(r) % (uint64_t)(i + 1));
        int t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

double chk_rel(double a, double b, double floor)
{
    double d = fmax(fmax(fabs(a), fabs(b)), floor);
    return fabs(a - b) / d;
}

double chk_fd(void (*fwd)(void *), void *ctx, double *x, double h, const double *out,
              const double *R, size_t nout, double *plus, double *minus)
{
    /* divide by the step actually taken: save +- h rounds, 2h would not be exact */
    double save = *x, xp = save + h, xm = save - h;
    *x = xp;
    fwd(ctx);
    memcpy(plus, out, nout * sizeof *plus);
    *x = xm;
    fwd(ctx);
    memcpy(minus, out, nout * sizeof *minus);
    *x = save;
    double s = 0.0;
    for (size_t j = 0; j < nout; j++)
        s += R[j] * (plus[j] - minus[j]);
    return s / (xp - xm);
}
