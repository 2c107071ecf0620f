/* bf16_round.c: the host rounding of --precision bf16 (kernels.h, tower_k_bf16) as a filter
 * for test_bf16_torch.py: float32 bit patterns in (native-endian uint32), their bf16 bit
 * patterns out (uint16), until the end of the input. */
#include <stdio.h>

#include "tower/cuda/kernels.h"

int main(void)
{
    uint32_t u[4096];
    uint16_t h[4096];
    size_t n;
    while ((n = fread(u, sizeof u[0], sizeof u / sizeof u[0], stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            float x;
            memcpy(&x, &u[i], sizeof x);
            h[i] = tower_k_bf16(x);
        }
        if (fwrite(h, sizeof h[0], n, stdout) != n) return 1;
    }
    return ferror(stdin) ? 1 : 0;
}
