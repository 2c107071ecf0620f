/* check: small helpers shared by the tower and model tests: a seeded random stream for
 * test inputs (independent of the product's RNG, so a bug there cannot hide in both) and
 * the error measures the tests assert on. */
#ifndef CHECK_H
#define CHECK_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s;
} chk_rng;

/* xorshift64* from a nonzero seed */
void chk_rng_seed(chk_rng *r, uint64_t seed);
double chk_uniform(chk_rng *r, double lo, double hi);
/* uniform magnitude in [lo, hi] with a random sign: values kept away from 0 (ReLU kinks) */
double chk_signed(chk_rng *r, double lo, double hi);
/* N(0, 1) (Box-Muller) */
double chk_normal(chk_rng *r);
void chk_fill(chk_rng *r, double *x, size_t n, double lo, double hi);
/* random permutation of 0..n-1 */
void chk_perm(chk_rng *r, int *p, int n);

/* |a - b| / max(|a|, |b|, floor): relative error that stays finite at a = b = 0. */
double chk_rel(double a, double b, double floor);

/* Central finite difference of sum_j R[j] * out[j] with respect to *x.
 * fwd(ctx) recomputes out (nout values) from the current inputs. The difference is
 * formed per output, sum_j R[j] (out+[j] - out-[j]) / 2h, so outputs that *x does not
 * reach cancel exactly instead of adding the rounding error of the whole sum.
 * plus/minus: scratch of nout doubles. *x is restored; out is left stale. */
double chk_fd(void (*fwd)(void *), void *ctx, double *x, double h, const double *out,
              const double *R, size_t nout, double *plus, double *minus);

#endif
