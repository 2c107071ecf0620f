/* fuzz_image: libFuzzer harness for the image path of src/data: data_image_decode on the
 * raw bytes, which picks PNG (libpng with our limits and transforms, alpha compositing) or
 * JPEG (libjpeg-turbo with our limits and corruption checks) by signature, then resizes
 * whatever decoded to 256x256. Limits are lowered so that a valid-looking large image
 * cannot make a run slow; the point is that no input crashes or allocates unbounded. */
#include <stdint.h>
#include <stdlib.h>

#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    data_image_limits lim = {.max_side = 4096, .max_pixels = 1 << 20, .max_scans = 100};
    uint8_t *dst = malloc(DATA_IMAGE_BYTES);
    char err[256];
    if (dst) data_image_decode(data, size, &lim, dst, err, sizeof err);
    free(dst);
    return 0;
}
