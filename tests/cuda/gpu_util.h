/* gpu_util.h: helpers shared by the GPU tests (tests/cuda, tests/comm): skip without a
 * device, checked device buffers, seeded random data, and the GPU-vs-CPU comparison that
 * prints its maximum errors. */
#ifndef TT_TEST_GPU_UTIL_H
#define TT_TEST_GPU_UTIL_H

#include <criterion/criterion.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "tower/tower_cuda.h" /* tower_cuda_have_cudnn */

/* Number of CUDA devices, 0 when none or no usable driver (why says which). */
int tt_gpu_count(char *why, size_t n);

/* Skips the calling test unless at least `min` devices are present. */
#define TT_NEED_GPUS(min)                                                                   \
    do {                                                                                    \
        char why_[256] = "";                                                                \
        int n_ = tt_gpu_count(why_, sizeof why_);                                           \
        if (n_ < (min)) cr_skip_test("needs %d CUDA device(s): %s", (int)(min), why_);      \
    } while (0)

/* Skips the calling test in a build without the cuDNN path (meson's -Dcudnn). */
#define TT_NEED_CUDNN()                                                                     \
    do {                                                                                    \
        if (!tower_cuda_have_cudnn()) cr_skip_test("this build has no cuDNN (-Dcudnn)");    \
    } while (0)

#define TT_CUDA(call)                                                                       \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        cr_assert_eq(e_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));             \
    } while (0)

void *tt_dev_alloc(size_t bytes);                        /* zeroed */
float *tt_dev_upload(const float *host, size_t n);       /* new device copy */
void tt_dev_download(float *host, const void *dev, size_t n_floats);
float *tt_host_alloc(size_t n);                          /* zeroed, asserts */

/* x[i] = scale * N(0,1), from (key, i): the same numbers on every run. */
void tt_fill_normal(float *x, size_t n, uint64_t key, float scale);

/* Prints "what: n, max|ref|, max abs err, max rel err, tolerance" and returns 1 when
 * max |got - ref| <= tol * max(max|ref|, 1e-30), 0 otherwise (or on any NaN/Inf).
 * tol 0 asks for bit-identical values. */
int tt_compare(const char *what, const float *got, const float *ref, size_t n, double tol);

#endif
