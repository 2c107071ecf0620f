/* bf16_bound.c: see bf16_bound.h. */
#include "bf16_bound.h"

#include <math.h>
#include <stdio.h>

double tt_bf16_factor(long K)
{
    return 1.01 * (2 * TT_BF16_U + TT_BF16_U * TT_BF16_U + 2.0 * (double)(K + 2) * ldexp(1, -23));
}

int tt_bf16_within(const char *what, const float *got, const float *ref, const float *absref,
                   size_t n, double factor)
{
    double max_ref = 0, max_abs = 0, worst = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), lim = factor * absref[i] + 1e-30;
        if (!isfinite(got[i]) || !(d <= lim)) bad++;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
        if (d > max_abs) max_abs = d;
        if (d / lim > worst) worst = d / lim;
    }
    printf("%-36s n=%-8zu max|ref|=%-9.3g max abs err=%-9.3g of the bound %.3f, err/max|ref| "
           "%.3g (bf16 bound factor %.4f)%s\n",
           what, n, max_ref, max_abs, worst, max_ref > 0 ? max_abs / max_ref : 0.0, factor,
           bad ? " OUT OF BOUND" : "");
    return bad == 0;
}

void tt_abs(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = fabsf(x[i]);
}
