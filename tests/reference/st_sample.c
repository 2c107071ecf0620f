/* st_sample: writes a known safetensors file with st_write (`st_sample PATH`), so
 * test_safetensors_np.py can check that the numpy reader (and the `safetensors` package,
 * where installed) read back exactly what C wrote: dtypes, shapes, a scalar, names and
 * metadata that need escapes. */
#include <stdint.h>
#include <stdio.h>

#include "train/safetensors.h"

static const float F[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
static const double D[2] = {3.141592653589793, -1e300};
static const int32_t I[3] = {7, -8, 2147483647};
static const int64_t L[2] = {-9000000000000000000LL, 5};
static const int64_t S[1] = {INT64_MIN};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: st_sample PATH\n");
        return 2;
    }
    st_tensor t[5] = {{"f32", "F32", 3, {1, 2, 3}, F},
                      {"f64 \"quoted\"\\", "F64", 1, {2}, D},
                      {"i32", "I32", 1, {3}, I},
                      {"i64", "I64", 2, {2, 1}, L},
                      {"scalar", "I64", 0, {0}, S}};
    const char *meta[] = {"format", "st_sample", "quote", "a \"b\" \\ c", "note",
                          "line\nbreak\ttab \x01 \xc3\xa9", NULL};
    char err[512] = "";
    if (st_write(argv[1], t, 5, meta, err, sizeof err)) {
        fprintf(stderr, "st_sample: %s\n", err);
        return 1;
    }
    return 0;
}
