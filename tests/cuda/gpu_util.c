/* gpu_util.c: see gpu_util.h. */
#include "gpu_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tower/tower.h"

int tt_gpu_count(char *why, size_t n)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(why, n, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
        return 0;
    }
    if (count == 0) snprintf(why, n, "the driver reports none");
    else snprintf(why, n, "this machine has %d", count);
    return count;
}

void *tt_dev_alloc(size_t bytes)
{
    void *p = NULL;
    TT_CUDA(cudaMalloc(&p, bytes ? bytes : 1));
    TT_CUDA(cudaMemset(p, 0, bytes ? bytes : 1));
    /* cudaMemset is asynchronous on the legacy stream, which the tests' non-blocking
     * streams do not wait for: finish it before anyone else writes the buffer */
    TT_CUDA(cudaDeviceSynchronize());
    return p;
}

float *tt_dev_upload(const float *host, size_t n)
{
    float *d = tt_dev_alloc(sizeof(float) * n);
    TT_CUDA(cudaMemcpy(d, host, sizeof(float) * n, cudaMemcpyHostToDevice));
    return d;
}

/* The layer functions record a failed call in this thread's fault slot (tower.h) instead
 * of ending the process: a test that calls them directly fails with the call's message. */
static void no_fault(void)
{
    char msg[640];
    if (tower_fault_take(msg, sizeof msg)) cr_assert_fail("a device call failed: %s", msg);
}

void tt_dev_download(float *host, const void *dev, size_t n_floats)
{
    no_fault();
    TT_CUDA(cudaDeviceSynchronize());
    TT_CUDA(cudaMemcpy(host, dev, sizeof(float) * n_floats, cudaMemcpyDeviceToHost));
}

float *tt_host_alloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    cr_assert_not_null(p, "out of host memory (%zu floats)", n);
    return p;
}

void tt_fill_normal(float *x, size_t n, uint64_t key, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)base_rng_normal(key, 2 * (uint64_t)i, 0);
}

int tt_compare(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    no_fault();
    double max_ref = 0, max_abs = 0, max_rel = 0;
    size_t worst = 0, bad = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(ref[i]) && fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) {
            bad++;
            continue;
        }
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > max_abs) {
            max_abs = d;
            worst = i;
        }
        /* relative error where it means something: not on values near 0 */
        if (fabs(ref[i]) > 1e-3 * max_ref && d / fabs(ref[i]) > max_rel)
            max_rel = d / fabs(ref[i]);
    }
    double limit = tol * (max_ref > 1e-30 ? max_ref : 1e-30);
    int ok = bad == 0 && max_abs <= limit;
    printf("%-34s n=%-9zu max|cpu|=%-10.4g max abs err=%-10.3g max rel err=%-10.3g "
           "(abs err / max|cpu| = %.3g, tol %.1g)%s\n",
           what, n, max_ref, max_abs, max_rel, max_ref > 0 ? max_abs / max_ref : max_abs, tol,
           ok ? "" : "  <-- FAIL");
    if (!ok && n)
        printf("%-34s worst at %zu: gpu %.9g cpu %.9g; %zu non-finite\n", "", worst,
               (double)got[worst], (double)ref[worst], bad);
    fflush(stdout);
    return ok;
}
