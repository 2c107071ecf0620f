/* safetensors: a small writer and reader for the safetensors format (8-byte little-endian
 * header length, a JSON header, then the raw little-endian tensor bytes), used by the
 * weight export, the PyTorch agreement dump and the checkpoints. Part of src/train. */
#ifndef TRAIN_SAFETENSORS_H
#define TRAIN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_DIMS 6
/* Largest header the reader accepts; safetensors itself caps it at 100 MB. */
#define ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    const char *name;
    const char *dtype;           /* "F32", "F64", "I32", "I64" */
    int ndim;                    /* 0 .. ST_MAX_DIMS; 0 is a scalar (one element) */
    int64_t shape[ST_MAX_DIMS];
    const void *data;            /* product(shape) elements of dtype, host memory */
} st_tensor;

/* Bytes per element of a dtype name, or 0 when it is not one of the four above. */
size_t st_dtype_size(const char *dtype);

/* Writes tensors (in the given order, offsets increasing, no gaps) with optional
 * __metadata__ (NULL-terminated key/value string pairs, may be NULL). The header is
 * padded with spaces to a multiple of 8 so that the data starts 8-byte aligned.
 * Written to PATH.tmp, fsync, rename over PATH, fsync of the directory, so a crash
 * leaves either the old file or the new one. Returns 0, or -1 with a message in err. */
int st_write(const char *path, const st_tensor *t, int n, const char *const *metadata,
             char *err, size_t errlen);

/* ---- reading ---------------------------------------------------------------------- */

typedef struct {
    char *name;
    char dtype[8];
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;         /* byte offsets in the data section */
} st_entry;

typedef struct {
    char *path;
    void *fp;                    /* FILE *, kept open for st_read_tensor */
    uint64_t data_start;         /* 8 + header length */
    uint64_t data_bytes;         /* file size - data_start */
    int n;
    st_entry *entries;
    int n_meta;
    char **meta;                 /* 2 * n_meta strings: key, value, key, value, ... */
} st_file;

/* Opens PATH and parses its header; every entry is checked against the file (dtype
 * known, shape product times element size = end - begin, offsets inside the data).
 * Returns 0, or -1 with a message naming the file and the problem. */
int st_open(st_file *f, const char *path, char *err, size_t errlen);
void st_close(st_file *f);

/* The entry called name, or NULL. */
const st_entry *st_find(const st_file *f, const char *name);
/* The metadata value for key, or NULL. */
const char *st_meta(const st_file *f, const char *key);

/* Reads tensor `name` into dst (dst_bytes long). Fails unless the dtype matches and
 * the tensor is exactly dst_bytes long. */
int st_read_tensor(const st_file *f, const char *name, const char *dtype, void *dst,
                   size_t dst_bytes, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
