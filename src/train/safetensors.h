/* safetensors: the writer of the safetensors format (8-byte little-endian header length, a
 * JSON header, then the raw little-endian tensor bytes), used by the weight export and the
 * PyTorch agreement dump, and streamed for `twotower features`. Part of src/train.
 * twotower never reads these files back; the tests and the PyTorch tools read them with
 * tools/reference/safetensors_np.py (or the `safetensors` package). */
#ifndef TRAIN_SAFETENSORS_H
#define TRAIN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

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

/* The same file written piece by piece, for tensors too big to hold (`twotower features`'
 * 1.2 M x 4096 activations): open writes the header of t[0..n) (their data is not read),
 * then the tensors' bytes go in through st_stream_write in file order (t[0]'s, then
 * t[1]'s, ...; any split into calls), and commit checks that exactly the header's bytes came
 * and puts the file in place (crash-safe as st_write). A failed write sticks (base_out);
 * abort leaves path as it was. */
typedef struct {
    base_out out;
    uint64_t left;   /* data bytes the header promises that have not come yet */
    int open, overrun;
} st_stream;

int st_stream_open(st_stream *s, const char *path, const st_tensor *t, int n,
                   const char *const *metadata, char *err, size_t errlen);
/* 0, or -1 once a write failed or more bytes came than the header holds. */
int st_stream_write(st_stream *s, const void *p, size_t n);
/* 0, or -1 with err (a short or long stream, a failed write); the file is not written then. */
int st_stream_commit(st_stream *s, char *err, size_t errlen);
void st_stream_abort(st_stream *s);

#ifdef __cplusplus
}
#endif
#endif
