/* fuzz_shard: libFuzzer harness for the readers of prep's files: data_shard_check (a
 * shard held in memory) and data_meta_check (meta.bin). The first byte picks the reader.
 * Random bytes never pass a CRC, so the harness writes the right header CRC (shard) or
 * trailing CRC (meta) into its copy: the fuzzer then reaches every check behind them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/data.h"

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] & 1;
    size_t n = size - 1;
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return 0;
    memcpy(b, data + 1, n);
    char err[256];
    if (mode == 0) {
        if (n >= 128)
            put32(b + 124, (uint32_t)crc32(0, b, 124));
        data_shard_check(b, n, 1, err, sizeof err);
    } else {
        if (n >= 4)
            put32(b + n - 4, (uint32_t)crc32(0, b, (uInt)(n - 4)));
        data_meta_check(b, n, err, sizeof err);
    }
    free(b);
    return 0;
}
