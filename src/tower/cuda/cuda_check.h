/* cuda_check.h: check macros and launch helpers shared by the .cu files of src/tower/cuda.
 * Internal to the CUDA tower backend (not installed, not included from C). */
#ifndef TOWER_CUDA_CHECK_H
#define TOWER_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The layer functions are void (as their CPU twins): a failed launch or library call in
 * the middle of a step leaves device state that nothing can continue from, so the
 * process stops with the failed call, its file and line. Exit code 3 is the CLI's
 * "runtime failure" (2 is reserved for bad arguments). */
#define TOWER_CUDA_FATAL_EXIT 3

static inline void tower_cuda_die(const char *what, const char *reason, const char *file,
                                  int line)
{
    fprintf(stderr, "twotower: CUDA backend: %s failed at %s:%d: %s\n", what, file, line,
            reason);
    exit(TOWER_CUDA_FATAL_EXIT);
}

#define CUDA_CHECK(call)                                                                  \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) tower_cuda_die(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                \
    do {                                                                                  \
        cublasStatus_t s_ = (call);                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                  \
            tower_cuda_die(#call, cublasGetStatusString(s_), __FILE__, __LINE__);        \
    } while (0)

/* After every <<<...>>>: a bad configuration is reported by cudaGetLastError at once;
 * a fault inside the kernel surfaces at the next synchronising call, also checked. */
#define LAUNCH_CHECK(kernel)                                                              \
    do {                                                                                  \
        cudaError_t e_ = cudaGetLastError();                                              \
        if (e_ != cudaSuccess)                                                            \
            tower_cuda_die("launch of " #kernel, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)

/* The layer kernels index in 32 bits (kernels.h): a launch over 2^31 elements or more
 * stops the process, naming the tensor; tower_init_cuda refuses such a batch before any
 * step, with a message. */
static inline void tower_cuda_check_index32(size_t n, const char *what, const char *file,
                                            int line)
{
    if (n <= (size_t)INT32_MAX) return;
    char reason[160];
    snprintf(reason, sizeof reason,
             "%zu elements: the kernels index in 32 bits, up to 2^31 - 1 (a smaller batch)", n);
    tower_cuda_die(what, reason, file, line);
}
#define INDEX32_CHECK(n, what) tower_cuda_check_index32((n), (what), __FILE__, __LINE__)

/* 1-D launches use grid-stride loops, so the grid can be capped. */
#define TOWER_CUDA_THREADS 256
static inline unsigned tower_cuda_blocks(size_t n)
{
    size_t b = (n + TOWER_CUDA_THREADS - 1) / TOWER_CUDA_THREADS;
    const size_t cap = 65535u * 8u;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

#endif
