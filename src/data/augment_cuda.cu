/* augment_cuda: the training/eval augmentation on the GPU (issue 4 item 3: the uint8
 * crops go to the device and the arithmetic is done there). The same formula as
 * data_augment_cpu, element for element, so the two agree bit for bit.
 * Built only when the CUDA backend is (src/data/meson.build). */
#include <stdio.h>

#include "data/data.h"

/* Layouts: x (B, 3, crop, crop) float NCHW out; crops (B, crop, crop, 3) uint8 NHWC in,
 * already mirrored; mean (256, 256, 3) float HWC; params (B).
 * Thread mapping: one thread per output element, x's linear index, so consecutive
 * threads write consecutive floats (coalesced stores); the uint8 reads stride by 3. */
__global__ static void augment_kernel(float *x, const uint8_t *crops, const float *mean,
                                      const data_aug_params *params, int B, int crop)
{
    size_t plane = (size_t)crop * crop;
    size_t total = (size_t)B * 3 * plane;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(i % crop);
        int y = (int)((i / crop) % crop);
        int c = (int)((i / plane) % 3);
        int b = (int)(i / (3 * plane));
        const data_aug_params p = params[b];
        int mj = p.mirror ? crop - 1 - j : j;
        float m = mean[((size_t)(p.oy + y) * DATA_SIZE + (size_t)(p.ox + mj)) * 3 + c];
        float v = (float)crops[(size_t)b * plane * 3 + ((size_t)y * crop + j) * 3 + c];
        /* two separate adds in the CPU's order; no FMA can form (no multiply) */
        x[i] = __fadd_rn(__fsub_rn(v, m), p.rgb[c]);
    }
}

extern "C" int data_augment_cuda(float *x, const uint8_t *crops, const float *mean,
                                 const data_aug_params *params, int B, int crop,
                                 cudaStream_t stream, char *err, size_t errlen)
{
    if (B < 1 || crop < 1 || crop > DATA_SIZE) {
        snprintf(err, errlen, "data_augment_cuda: B %d / crop %d out of range", B, crop);
        return -1;
    }
    size_t total = (size_t)B * 3 * crop * crop;
    int threads = 256;
    size_t blocks = (total + threads - 1) / threads;
    if (blocks > 65535u * 16u)
        blocks = 65535u * 16u;
    augment_kernel<<<(unsigned)blocks, threads, 0, stream>>>(x, crops, mean, params, B, crop);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        snprintf(err, errlen, "data_augment_cuda: launch failed: %s (%s:%d)",
                 cudaGetErrorString(e), __FILE__, __LINE__);
        return -1;
    }
    return 0;
}
