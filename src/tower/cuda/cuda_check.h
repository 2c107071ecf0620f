/* cuda_check.h: check macros and launch helpers shared by the .cu files of src/tower/cuda.
 * Internal to the CUDA tower backend (not installed, not included from C). */
#ifndef TOWER_CUDA_CHECK_H
#define TOWER_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tower/tower.h"

/* The layer functions are void (as their CPU twins), so a failed launch or library call
 * cannot be returned: the check macros record it in the calling thread's fault slot
 * (tower.h, TOWER_CHECK_AS: the call as written, file, line, the library's reason) and
 * return from the function; the ops' driver (src/train/model.c) takes the slot after
 * every op and fails the step of that tower. A fault inside a kernel surfaces at the
 * next synchronising call (the loss's read-back, an exchange's wait), which the message then
 * names. A sticky error (the kernel faults below) loses the device's context: the
 * message says so, and nothing more is issued on that thread. */
#define TOWER_CUDA_FATAL_EXIT 3

/* Errors after which the context cannot be used again (CUDA's "sticky" errors: the
 * process must end to use the device again). */
static inline int tower_cuda_sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed:
        return 1;
    default:
        return 0;
    }
}

/* tower_fault_describe_fn for cudaError_t; an injected fault stands for an invalid
 * argument (TOWER_FAULT_ERROR) or an illegal address (TOWER_FAULT_STICKY). */
static inline int tower_cuda_describe_error(int status, int injected, char *reason, size_t n)
{
    cudaError_t e = injected ? (injected == TOWER_FAULT_STICKY ? cudaErrorIllegalAddress
                                                               : cudaErrorInvalidValue)
                             : (cudaError_t)status;
    snprintf(reason, n, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
    return tower_cuda_sticky(e) ? TOWER_FAULT_STICKY : TOWER_FAULT_ERROR;
}

/* The reason of a failed library call (cuBLAS, cuDNN) whose status text is `what`: with
 * the runtime's last error on this thread beside it when there is one, and sticky when that
 * error is (a kernel fault shows up in a library as an execution failure). */
static inline int tower_cuda_describe_library(const char *what, int injected, char *reason,
                                              size_t n)
{
    cudaError_t last = injected == TOWER_FAULT_STICKY ? cudaErrorIllegalAddress
                       : injected                     ? cudaSuccess
                                                      : cudaPeekAtLastError();
    if (last != cudaSuccess)
        snprintf(reason, n, "%s (the runtime: %s: %s)", what, cudaGetErrorName(last),
                 cudaGetErrorString(last));
    else
        snprintf(reason, n, "%s", what);
    return tower_cuda_sticky(last) ? TOWER_FAULT_STICKY : TOWER_FAULT_ERROR;
}

/* tower_fault_describe_fn for cublasStatus_t. */
static inline int tower_cuda_describe_cublas(int status, int injected, char *reason, size_t n)
{
    cublasStatus_t s = injected ? CUBLAS_STATUS_EXECUTION_FAILED : (cublasStatus_t)status;
    return tower_cuda_describe_library(cublasGetStatusString(s), injected, reason, n);
}

/* A failed CUDA runtime call: recorded, and the enclosing void function returns. */
#define CUDA_CHECK(call) TOWER_CHECK_AS(call, #call, tower_cuda_describe_error, )
/* The same in a function that returns a value: `ret` on failure. */
#define CUDA_CHECK_OR(call, ret) TOWER_CHECK_AS(call, #call, tower_cuda_describe_error, ret)

#define CUBLAS_CHECK(call) TOWER_CHECK_AS(call, #call, tower_cuda_describe_cublas, )

/* After every <<<...>>>: a bad configuration is reported by cudaGetLastError at once;
 * a fault inside the kernel surfaces at the next synchronising call, also checked. */
#define LAUNCH_CHECK(kernel)                                                              \
    TOWER_CHECK_AS(cudaGetLastError(), "launch of " #kernel, tower_cuda_describe_error, )

/* For broken invariants alone (INDEX32_CHECK below, a caller's too small scratch, an fc op
 * given a buffer no fc row has), not for device errors. */
static inline void tower_cuda_die(const char *what, const char *reason, const char *file,
                                  int line)
{
    fprintf(stderr, "twotower: CUDA backend: %s failed at %s:%d: %s\n", what, file, line,
            reason);
    exit(TOWER_CUDA_FATAL_EXIT);
}

/* The layer kernels index in 32 bits (kernels.h): a launch over 2^31 elements or more
 * stops the process (exit code 3), naming the tensor. It cannot happen in a step:
 * tower_init_cuda refuses such a batch before any, with a message. It stays fatal
 * because it guards helpers that return a kernel's geometry (no early return fits them)
 * and the launch after it would index out of bounds. */
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
