/* test_augment_cuda: data_augment_cuda against data_augment_cpu, bit for bit, on random
 * crops, a random mean image and random params (mirrors, corners at both edges, lighting),
 * at the paper's crop and at awkward sides (1, odd, 256: the whole image). Built with the
 * CUDA backend only; the comparisons skip when no device is present (tests/cuda's
 * test_kernels_host runs the kernel's element function on the CPU everywhere). */
#include <string.h>

#include <cuda_runtime_api.h>

#include "helpers.h"
#include "tower/cuda/kernels.h" /* tower_k_bf16: the host form of the towers' rounding */

static void expect_matches_cpu(int B, int crop, uint32_t s)
{
    size_t nc = (size_t)B * crop * crop * 3;
    uint8_t *crops = malloc(nc);
    float *mean = malloc(DATA_IMAGE_BYTES * sizeof *mean), *xc = malloc(nc * 4), *xg = malloc(nc * 4);
    data_aug_params *p = calloc((size_t)B, sizeof *p);
    cr_assert(crops && mean && xc && xg && p);
    for (size_t i = 0; i < nc; i++) {
        s = s * 1664525u + 1013904223u;
        crops[i] = (uint8_t)(s >> 24);
    }
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++) {
        s = s * 1664525u + 1013904223u;
        mean[i] = (float)(s >> 8) / (float)(1 << 24) * 255.0f;
    }
    int room = DATA_SIZE - crop;
    for (int b = 0; b < B; b++) {
        p[b].oy = b == 0 ? 0 : b == 1 ? room : (b * 7) % (room + 1);
        p[b].ox = b == 0 ? 0 : b == 1 ? room : (b * 13) % (room + 1);
        p[b].mirror = b & 1;
        for (int c = 0; c < 3; c++)
            p[b].rgb[c] = (float)(b - 2) * 3.7f + (float)c * 0.31f;
    }
    data_augment_cpu(xc, crops, mean, p, B, crop);
    uint8_t *dcrops;
    float *dmean, *dx;
    data_aug_params *dp;
    size_t np = (size_t)B * sizeof *p;
    cr_assert_eq(cudaMalloc((void **)&dcrops, nc), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&dmean, DATA_IMAGE_BYTES * 4), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&dx, nc * 4), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&dp, np), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dcrops, crops, nc, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dmean, mean, DATA_IMAGE_BYTES * 4, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dp, p, np, cudaMemcpyHostToDevice), cudaSuccess);
    char err[256];
    /* without the bf16 copy, then with it (the same x, and x rounded: every element written) */
    uint16_t *dx16, *x16 = malloc(nc * 2);
    cr_assert(x16);
    cr_assert_eq(cudaMalloc((void **)&dx16, nc * 2), cudaSuccess);
    cr_assert_eq(cudaMemset(dx16, 0xff, nc * 2), cudaSuccess);
    for (int with16 = 0; with16 < 2; with16++) {
        cr_assert_eq(cudaMemset(dx, 0xff, nc * 4), cudaSuccess);
        cr_assert_eq(data_augment_cuda(dx, with16 ? dx16 : NULL, dcrops, dmean, dp, B, crop, 0,
                                       err, sizeof err),
                     0, "%s", err);
        cr_assert_eq(cudaMemcpy(xg, dx, nc * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        for (size_t i = 0; i < nc; i++)
            if (memcmp(&xg[i], &xc[i], sizeof(float)) != 0)
                cr_assert_fail("B %d crop %d element %zu: GPU %.9g CPU %.9g", B, crop, i,
                               xg[i], xc[i]);
    }
    cr_assert_eq(cudaMemcpy(x16, dx16, nc * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < nc; i++)
        if (x16[i] != tower_k_bf16(xc[i]))
            cr_assert_fail("B %d crop %d element %zu: bf16 0x%04x, want 0x%04x (%.9g rounded)",
                           B, crop, i, x16[i], tower_k_bf16(xc[i]), xc[i]);
    cudaFree(dx16);
    free(x16);
    cudaFree(dcrops);
    cudaFree(dmean);
    cudaFree(dx);
    cudaFree(dp);
    free(crops);
    free(mean);
    free(xc);
    free(xg);
    free(p);
}

Test(augment_cuda, matches_cpu)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0)
        cr_skip_test("no CUDA device: data_augment_cuda not run");
    expect_matches_cpu(5, 224, 3);
    expect_matches_cpu(4, 1, 4);
    expect_matches_cpu(3, 227, 5);
    expect_matches_cpu(2, DATA_SIZE, 6);
    expect_matches_cpu(6, 67, 7);
}

/* the 32-bit bound and the crop range are refused before anything touches the device */
Test(augment_cuda, bounds)
{
    char err[256];
    cr_assert_eq(data_augment_cuda(NULL, NULL, NULL, NULL, NULL, 10923, DATA_SIZE, 0, err, sizeof err), -1);
    cr_assert(strstr(err, "2^31") != NULL, "%s", err);
    cr_assert_eq(data_augment_cuda(NULL, NULL, NULL, NULL, NULL, 1, DATA_SIZE + 1, 0, err, sizeof err), -1);
    cr_assert_eq(data_augment_cuda(NULL, NULL, NULL, NULL, NULL, 0, 224, 0, err, sizeof err), -1);
}
