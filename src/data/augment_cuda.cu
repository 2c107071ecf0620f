/* augment_cuda: the training/eval augmentation on the GPU (issue 4 item 3: the uint8
 * crops go to the device and the arithmetic is done there). The same formula as
 * data_augment_cpu, element for element, so the two agree bit for bit.
 * Built only when the CUDA backend is (src/data/meson.build). */
#include <stdio.h>

#include "data/augment_kernel.h"
#include "data/data.h"

/* Layouts: x (B, 3, crop, crop) float NCHW out; crops (B, crop, crop, 3) uint8 NHWC in,
 * already mirrored; mean (256, 256, 3) float HWC; params (B).
 * Thread mapping: one thread per output element, x's linear index (32 bits: g.total is
 * below 2^31, so i + the grid's stride cannot wrap), so consecutive threads write
 * consecutive floats (coalesced stores); the uint8 reads stride by 3. The element is
 * augment_kernel.h's data_k_augment_at: three multiply-high divisions, no run-time one. */
__global__ static void augment_kernel(float *x, const uint8_t *crops, const float *mean,
                                      const data_aug_params *params, data_k_aug g)
{
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < g.total;
         i += gridDim.x * blockDim.x)
        x[i] = data_k_augment_at(crops, mean, params, i, g);
}

extern "C" int data_augment_cuda(float *x, const uint8_t *crops, const float *mean,
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
    augment_kernel<<<(unsigned)blocks, threads, 0, stream>>>(x, crops, mean, params, g);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "data_augment_cuda: launch failed: %s (%s:%d)",
                 cudaGetErrorString(e), __FILE__, __LINE__);
        return -1;
    }
    return 0;
}
