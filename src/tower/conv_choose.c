/* conv_choose.c: `--conv auto`'s decision per conv layer from measured times
 * (tower_conv_choose, tower.h), and the CPU's oneDNN switch (tower_conv_dnnl). Plain C
 * with no device: net_cuda.cu measures, this decides, and the tests inject timings. Also
 * the names of the convolution paths and of the GEMM precisions that run.json and bench's
 * JSON record. */
#include "tower/tower.h"
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
#include "tower/conv_dnnl.h"
#endif

#include <stdatomic.h>

static atomic_int dnnl_off;

void tower_conv_dnnl(int on) { atomic_store(&dnnl_off, !on); }

int tower_conv_dnnl_off(void) { return atomic_load(&dnnl_off); }

int tower_conv_dnnl_passes_for(int K, int S, int avx512)
{
    if (K < 2) return 0;
    if (avx512) return TOWER_DNNL_FWD | TOWER_DNNL_BWD_W | (S == 1 ? TOWER_DNNL_BWD_DATA : 0);
    if (S != 1) return 0;
    return (K == 5 ? TOWER_DNNL_FWD : 0) | TOWER_DNNL_BWD_DATA;
}

int tower_conv_dnnl_passes(int K, int S)
{
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
    return tower_conv_dnnl_passes_for(K, S, tower_dnnl_avx512());
#else
    return tower_conv_dnnl_passes_for(K, S, 0);
#endif
}

int tower_dnnl_square_sgemm(int n, const float *a, const float *b, float *c)
{
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
    tower_dnnl_sgemm(0, 0, n, n, n, 1, a, n, b, n, 0, c, n);
    return 0;
#else
    (void)n, (void)a, (void)b, (void)c;
    return -1;
#endif
}

int tower_conv_dnnl_built(void)
{
#if defined(TT_HAVE_DNNL) && !defined(TOWER_F64)
    return 1;
#else
    return 0;
#endif
}

/* Forward + backward of one path, or -1 when either was not measured. */
static double total_ms(const tower_conv_timing *t, int path)
{
    if (!(t->fwd_ms[path] >= 0) || !(t->bwd_ms[path] >= 0)) return -1; /* also NaN */
    return t->fwd_ms[path] + t->bwd_ms[path];
}

int tower_conv_choose(const tower_conv_timing *timing, int n, int *path)
{
    int cudnn = 0;
    for (int l = 0; l < n; l++) {
        double g = total_ms(&timing[l], TOWER_CONV_GEMM);
        double c = total_ms(&timing[l], TOWER_CONV_CUDNN);
        int pick = TOWER_CONV_GEMM;
        if (c >= 0 && (g < 0 || c < g * (1.0 - TOWER_CONV_TIE_FRACTION))) pick = TOWER_CONV_CUDNN;
        path[l] = pick;
        cudnn += pick == TOWER_CONV_CUDNN;
    }
    return cudnn;
}

const char *tower_conv_path_name(int path)
{
    return path == TOWER_CONV_GEMM ? "gemm" : path == TOWER_CONV_CUDNN ? "cudnn" : "?";
}

const char *tower_precision_name(int precision)
{
    return precision == TOWER_PRECISION_FP32   ? "fp32"
           : precision == TOWER_PRECISION_TF32 ? "tf32"
           : precision == TOWER_PRECISION_BF16 ? "bf16"
                                               : "?";
}
