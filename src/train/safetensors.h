/* safetensors: the writer of the safetensors format (8-byte little-endian header length, a
 * JSON header, then the raw little-endian tensor bytes), used by the weight export and the
 * PyTorch agreement dump. Part of src/train. twotower never reads these files back; the
 * tests and the PyTorch tools read them with tools/reference/safetensors_np.py (or the
 * `safetensors` package). */
#ifndef TRAIN_SAFETENSORS_H
#define TRAIN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_DIMS 6

typedef struct {
    const char *name;
    const char *dtype;           /* "F32", "F64", "I32", "I64" */
    int ndim;                    /* 0 .. ST_MAX_DIMS; 0 is a scalar (one element) */
    int64_t shape[ST_MAX_DIMS];
    const void *data;            /* product(shape) elements of dtype, host memory */
} st_tensor;

/* Writes tensors (in the given order, offsets increasing, no gaps) with optional
 * __metadata__ (NULL-terminated key/value string pairs, may be NULL). Names and metadata
 * must be UTF-8; a name may not repeat. The header (Jansson, compact) is padded with
 * spaces to a multiple of 8 so that the data starts 8-byte aligned. Written crash-safe
 * (base_out: PATH.tmp, fsync, rename), so a crash leaves either the old file or the new
 * one. Returns 0, or -1 with a message in err. */
int st_write(const char *path, const st_tensor *t, int n, const char *const *metadata,
             char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
