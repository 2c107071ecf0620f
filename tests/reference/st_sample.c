/* st_sample: writes a known safetensors file with st_write (`st_sample write PATH`) or
 * checks one that tools/reference/safetensors_np.py wrote (`st_sample check PATH`), so
 * test_safetensors_np.py can test the numpy reader and writer against the C ones. */
#include <stdio.h>
#include <string.h>

#include "train/safetensors.h"

static const float F[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
static const double D[2] = {3.141592653589793, -1e300};
static const int32_t I[3] = {7, -8, 2147483647};
static const int64_t L[2] = {-9000000000000000000LL, 5};

int main(int argc, char **argv)
{
    char err[512] = "";
    if (argc == 3 && !strcmp(argv[1], "write")) {
        st_tensor t[4] = {{"f32", "F32", 3, {1, 2, 3}, F}, {"f64", "F64", 1, {2}, D},
                          {"i32", "I32", 1, {3}, I}, {"i64", "I64", 2, {2, 1}, L}};
        const char *meta[] = {"format", "st_sample", "quote", "a \"b\" \\ c", NULL};
        if (st_write(argv[2], t, 4, meta, err, sizeof err)) {
            fprintf(stderr, "st_sample: %s\n", err);
            return 1;
        }
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "check")) {
        /* the numpy writer's file: same tensors and metadata */
        st_file f;
        if (st_open(&f, argv[2], err, sizeof err)) {
            fprintf(stderr, "st_sample: %s\n", err);
            return 1;
        }
        float f32[6];
        double f64[2];
        int32_t i32[3];
        int64_t i64[2];
        int bad = st_read_tensor(&f, "f32", "F32", f32, sizeof f32, err, sizeof err)
                  || st_read_tensor(&f, "f64", "F64", f64, sizeof f64, err, sizeof err)
                  || st_read_tensor(&f, "i32", "I32", i32, sizeof i32, err, sizeof err)
                  || st_read_tensor(&f, "i64", "I64", i64, sizeof i64, err, sizeof err);
        if (bad) {
            fprintf(stderr, "st_sample: %s\n", err);
            st_close(&f);
            return 1;
        }
        const st_entry *e = st_find(&f, "f32");
        const char *q = st_meta(&f, "quote");
        bad = memcmp(f32, F, sizeof F) || memcmp(f64, D, sizeof D) || memcmp(i32, I, sizeof I)
              || memcmp(i64, L, sizeof L) || e->ndim != 3 || e->shape[2] != 3 || !q
              || strcmp(q, "a \"b\" \\ c") || f.data_start % 8 != 0;
        st_close(&f);
        if (bad)
            fprintf(stderr, "st_sample: %s differs from the expected tensors\n", argv[2]);
        return bad;
    }
    fprintf(stderr, "usage: st_sample write|check PATH\n");
    return 2;
}
