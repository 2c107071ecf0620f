/* augment_cuda: the training/eval augmentation on the GPU (issue 4 item 3: the uint8
 * crops go to the device and the arithmetic is done there). The same formula as
 * data_augment_cpu, element for element, so the two agree bit for bit.
 * Built only when the CUDA backend is (src/data/meson.build). */
#include <cuda_bf16.h>
#include <stdio.h>

#include "data/augment_kernel.h"
#include "data/data.h"

/* Layouts: x (B, 3, crop, crop) float NCHW out; crops (B, crop, crop, 3) uint8 NHWC in,
 * already mirrored; mean (256, 256, 3) float HWC; params (B).
 * Thread mapping: one thread per output element, x's linear index (32 bits: g.total is
 * below 2^31, so i + the grid's stride cannot wrap), so consecutive threads write
 * consecutive floats (coalesced stores); the uint8 reads stride by 3. The element is
 * augment_kernel.h's data_k_augment_at: three multiply-high divisions, no run-time one.
 * x16: NULL, or where the same value goes rounded to bf16 too (the hardware's round to
 * nearest even, cvt.rn.bf16.f32: the tower's casts' rounding, so the same bits as a cast
 * of x would give): its own kernel (H16), so that the fp32 one is as it was. */
template <bool H16>
static __device__ __forceinline__ void augment_loop(float *x, uint16_t *x16, const uint8_t *crops,
                                    const float *mean, const data_aug_params *params,
                                    data_k_aug g)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < g.total;
         i += gridDim.x * blockDim.x) {
        float v = data_k_augment_at(crops, mean, params, i, g);
        x[i] = v;
        if (H16) x16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    }
}

__global__ static void augment_kernel(float *x, const uint8_t *crops, const float *mean,
                                      const data_aug_params *params, data_k_aug g)
{
    augment_loop<false>(x, NULL, crops, mean, params, g);
}

__global__ static void augment_bf16_kernel(float *x, uint16_t *x16, const uint8_t *crops,
                                           const float *mean, const data_aug_params *params,
                                           data_k_aug g)
{
    augment_loop<true>(x, x16, crops, mean, params, g);
}

extern "C" int data_augment_cuda(float *x, uint16_t *x16, const uint8_t *crops,
                                 const float *mean,
                                 const data_aug_params *params, int B, int crop,
                                 cudaStream_t stream, char *err, size_t errlen)
{
    data_k_aug g;
    if (data_k_aug_make(&g, B, crop) != 0) {
        snprintf(err, errlen,
                 "data_augment_cuda: B %d / crop %d out of range (1 <= crop <= %d, "
                 "B * 3 * crop^2 below 2^31)",
                 B, crop, DATA_SIZE);
        return -1;
    }
    int threads = 256;
    size_t blocks = ((size_t)g.total + threads - 1) / threads;
    if (blocks > 65535u * 16u)
        blocks = 65535u * 16u;
    if (x16)
        augment_bf16_kernel<<<(unsigned)blocks, threads, 0, stream>>>(x, x16, crops, mean,
                                                                       params, g);
    else
        augment_kernel<<<(unsigned)blocks, threads, 0, stream>>>(x, crops, mean, params, g);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "data_augment_cuda: launch failed: %s (%s:%d)",
                 cudaGetErrorString(e), __FILE__, __LINE__);
        return -1;
    }
    return 0;
}
