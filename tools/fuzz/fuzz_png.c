/* fuzz_png: libFuzzer harness for the PNG path of src/data: data_png_decode on the raw
 * bytes (libpng with our limits and transforms, alpha compositing), then the resize to
 * 256x256 of whatever decoded. Limits are lowered so that a valid-looking large image
 * cannot make a run slow; the point is that no input crashes or allocates unbounded. */
#include <stdint.h>
#include <stdlib.h>

#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    data_image_limits lim = {.max_side = 4096, .max_pixels = 1 << 20, .max_scans = 100};
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    char err[256];
    if (data_png_decode(data, size, &lim, &rgb, &w, &h, err, sizeof err) != 0)
        return 0;
    size_t wsb = data_resize_workspace(w, h, 3, DATA_SIZE);
    void *ws = malloc(wsb);
    uint8_t *dst = malloc(DATA_IMAGE_BYTES);
    if (ws && dst)
        data_resize_center(dst, DATA_SIZE, rgb, w, h, 3, ws);
    free(ws);
    free(dst);
    free(rgb);
    return 0;
}
