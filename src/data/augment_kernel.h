/* augment_kernel.h: what one thread of augment_cuda.cu's kernel computes, as
 * __host__ __device__ functions, so tests/cuda/test_kernels_host.c runs it on the CPU
 * against data_augment_cpu, bit for bit, on machines without a GPU. Internal to src/data;
 * layouts are data.h's. */
#ifndef DATA_AUGMENT_KERNEL_H
#define DATA_AUGMENT_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h" /* BASE_HD, base_div */
#include "data/data.h"

/* Exactly rounded: nvcc may not contract these (there is no multiply), but the intrinsics
 * say so; the host compiler rounds every float operation. */
#if defined(__CUDA_ARCH__)
#define DATA_K_ADD(a, b) __fadd_rn((a), (b))
#define DATA_K_SUB(a, b) __fsub_rn((a), (b))
#else
#define DATA_K_ADD(a, b) ((a) + (b))
#define DATA_K_SUB(a, b) ((a) - (b))
#endif

/* One launch's shape: the divisors an output index is split by, made on the host once. */
typedef struct {
    base_div crop, three; /* the crop's side, and 3 (the channels) */
    uint32_t plane;       /* crop * crop */
    uint32_t total;       /* B * 3 * crop * crop, the outputs */
} data_k_aug;

/* Fills g; returns 0, or -1 when B or crop is out of range (1 <= crop <= DATA_SIZE) or the
 * batch has 2^31 elements or more (the kernel's indices are 32 bits: at crop 256 that is
 * B > 10922). */
BASE_HD int data_k_aug_make(data_k_aug *g, int B, int crop)
{
    if (B < 1 || crop < 1 || crop > DATA_SIZE) return -1;
    size_t total = (size_t)B * 3 * (size_t)crop * (size_t)crop;
    if (total > (size_t)INT32_MAX) return -1;
    g->crop = base_div_of((uint32_t)crop);
    g->three = base_div_of(3);
    g->plane = (uint32_t)crop * (uint32_t)crop;
    g->total = (uint32_t)total;
    return 0;
}

/* x[i], i = ((b*3 + c)*crop + y)*crop + j < g.total, of x (B, 3, crop, crop) from crops
 * (B, crop, crop, 3) uint8 (already mirrored), mean (DATA_SIZE, DATA_SIZE, 3) and
 * params (B): crops[b][y][j][c] - mean[oy + y][ox + (mirror ? crop-1-j : j)][c] + rgb[c],
 * two adds in data_augment_cpu's order. Three multiply-high divisions split i; every index
 * is 32 bits (below g.total or the mean's 196,608 floats). */
BASE_HD float data_k_augment_at(const uint8_t *crops, const float *mean,
                                const data_aug_params *params, uint32_t i, data_k_aug g)
{
    uint32_t crop = g.crop.d;
    uint32_t r = base_div_quo(g.crop, i), j = i - r * crop;    /* r = (b*3 + c)*crop + y */
    uint32_t bc = base_div_quo(g.crop, r), y = r - bc * crop;  /* bc = b*3 + c */
    uint32_t b = base_div_quo(g.three, bc), c = bc - 3u * b;
    const data_aug_params *p = params + b;
    uint32_t mj = p->mirror ? crop - 1u - j : j;
    float m = mean[(((uint32_t)p->oy + y) * DATA_SIZE + (uint32_t)p->ox + mj) * 3u + c];
    float v = (float)crops[(b * g.plane + y * crop + j) * 3u + c];
    return DATA_K_ADD(DATA_K_SUB(v, m), p->rgb[c]);
}

#endif
