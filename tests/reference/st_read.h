/* st_read.h: a safetensors file as the C tests see it: read whole, its header parsed with
 * Jansson, so the tests of export and dump can compare what was written with the model it
 * came from. (twotower itself never reads safetensors; the Python side reads them with
 * tools/reference/safetensors_np.py.) Every malformed part fails the test. */
#ifndef TESTS_REFERENCE_ST_READ_H
#define TESTS_REFERENCE_ST_READ_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

typedef struct {
    unsigned char *buf;
    size_t len, data_start;
    json_t *h;               /* the header object */
} tt_st;

static inline void tt_st_open(tt_st *f, const char *path)
{
    char err[512];
    f->buf = base_read_file(path, "safetensors file", (size_t)1 << 32, &f->len, err,
                            sizeof err);
    cr_assert_not_null(f->buf, "%s", err);
    cr_assert_geq(f->len, 8, "%s: too short", path);
    uint64_t hl = base_get_le64(f->buf);
    cr_assert_leq(hl, f->len - 8, "%s: header length %llu", path, (unsigned long long)hl);
    json_error_t je;
    f->h = json_loadb((const char *)f->buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(f->h, "%s: header: %s", path, je.text);
    cr_assert(json_is_object(f->h), "%s: the header is not an object", path);
    f->data_start = 8 + (size_t)hl;
}

static inline void tt_st_close(tt_st *f)
{
    json_decref(f->h);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* A metadata value, or NULL. */
static inline const char *tt_st_meta(const tt_st *f, const char *key)
{
    return json_string_value(json_object_get(json_object_get(f->h, "__metadata__"), key));
}

/* Tensors in the file (__metadata__ is not one). */
static inline size_t tt_st_count(const tt_st *f)
{
    return json_object_size(f->h) - (json_object_get(f->h, "__metadata__") != NULL);
}

/* Tensor name's bytes (not aligned: memcpy them out), its shape in ndim/shape (up to 8
 * dimensions) and *nbytes; asserts that it exists with this dtype and lies in the file. */
static inline const void *tt_st_tensor(const tt_st *f, const char *name, const char *dtype,
                                       int *ndim, int64_t shape[8], size_t *nbytes)
{
    json_t *e = json_object_get(f->h, name);
    cr_assert_not_null(e, "no tensor '%s'", name);
    cr_assert_str_eq(json_string_value(json_object_get(e, "dtype")), dtype, "%s", name);
    json_t *sh = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
    cr_assert(json_is_array(sh) && json_array_size(sh) <= 8, "%s: shape", name);
    cr_assert(json_is_array(off) && json_array_size(off) == 2, "%s: data_offsets", name);
    *ndim = (int)json_array_size(sh);
    for (int d = 0; d < *ndim; d++)
        shape[d] = json_integer_value(json_array_get(sh, (size_t)d));
    json_int_t b = json_integer_value(json_array_get(off, 0));
    json_int_t en = json_integer_value(json_array_get(off, 1));
    cr_assert(b >= 0 && en >= b && (size_t)en <= f->len - f->data_start, "%s: offsets", name);
    *nbytes = (size_t)(en - b);
    return f->buf + f->data_start + (size_t)b;
}

#endif
