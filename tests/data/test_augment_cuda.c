/* test_augment_cuda: data_augment_cuda against data_augment_cpu, bit for bit, on random
 * crops, a random mean image and random params (mirrors, corners, lighting). Built with
 * the CUDA backend only; skips when no device is present. */
#include <cuda_runtime_api.h>

#include "helpers.h"

Test(augment_cuda, matches_cpu)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0)
        cr_skip_test("no CUDA device: data_augment_cuda not run");
    const int B = 5, crop = 224;
    size_t nc = (size_t)B * crop * crop * 3;
    uint8_t *crops = malloc(nc);
    float *mean = malloc(DATA_IMAGE_BYTES * sizeof *mean), *xc = malloc(nc * 4), *xg = malloc(nc * 4);
    data_aug_params p[5];
    uint32_t s = 3;
    for (size_t i = 0; i < nc; i++) {
        s = s * 1664525u + 1013904223u;
        crops[i] = (uint8_t)(s >> 24);
    }
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++) {
        s = s * 1664525u + 1013904223u;
        mean[i] = (float)(s >> 8) / (float)(1 << 24) * 255.0f;
    }
    for (int b = 0; b < B; b++) {
        p[b].oy = (b * 7) % 33;
        p[b].ox = (b * 13) % 33;
        p[b].mirror = b & 1;
        for (int c = 0; c < 3; c++)
            p[b].rgb[c] = (float)(b - 2) * 3.7f + (float)c * 0.31f;
    }
    data_augment_cpu(xc, crops, mean, p, B, crop);
    uint8_t *dcrops;
    float *dmean, *dx;
    data_aug_params *dp;
    cr_assert_eq(cudaMalloc((void **)&dcrops, nc), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&dmean, DATA_IMAGE_BYTES * 4), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&dx, nc * 4), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&dp, sizeof p), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dcrops, crops, nc, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dmean, mean, DATA_IMAGE_BYTES * 4, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dp, p, sizeof p, cudaMemcpyHostToDevice), cudaSuccess);
    char err[256];
    cr_assert_eq(data_augment_cuda(dx, dcrops, dmean, dp, B, crop, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cudaMemcpy(xg, dx, nc * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < nc; i++)
        cr_assert_eq(xg[i], xc[i], "element %zu: GPU %.9g CPU %.9g", i, xg[i], xc[i]);
    cudaFree(dcrops);
    cudaFree(dmean);
    cudaFree(dx);
    cudaFree(dp);
    free(crops);
    free(mean);
    free(xc);
    free(xg);
}
