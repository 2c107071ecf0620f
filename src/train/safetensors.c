/* safetensors: the writer for the format PyTorch, JAX and HF tools share
 * (https://github.com/huggingface/safetensors): u64 LE header length N, N bytes of JSON
 * {"__metadata__": {...}, "name": {"dtype","shape","data_offsets"}, ...}, then the data. */
#include "train/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c writes host memory as little-endian data: port it before use"
#endif

/* Bytes per element of a dtype name, or 0 when it is not one of the four st_tensor takes. */
static size_t st_dtype_size(const char *dtype)
{
    if (!dtype)
        return 0;
    if (!strcmp(dtype, "F32") || !strcmp(dtype, "I32"))
        return 4;
    if (!strcmp(dtype, "F64") || !strcmp(dtype, "I64"))
        return 8;
    return 0;
}

/* Element count of a shape; -1 when a dimension is negative or the product overflows. */
static int64_t st_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return -1;
        if (shape[d] != 0 && n > INT64_MAX / shape[d])
            return -1;
        n *= shape[d];
    }
    return n;
}

/* The header object; NULL with err on a bad tensor list or metadata. need_data: a
 * non-empty tensor must have its data (st_write; a stream's comes later). */
static json_t *make_header(const char *path, const st_tensor *t, int n,
                           const char *const *metadata, int need_data, char *err,
                           size_t errlen)
{
    json_t *h = json_object();
    if (!h) {
        base_errf(err, errlen, "%s: out of memory building the header", path);
        return NULL;
    }
    if (metadata && metadata[0]) {
        json_t *m = json_object();
        json_object_set_new(h, "__metadata__", m);
        for (int i = 0; metadata[i]; i += 2) {
            json_t *v = metadata[i + 1] ? json_string(metadata[i + 1]) : NULL;
            if (!v || json_object_set_new(m, metadata[i], v) != 0) {
                base_errf(err, errlen, "%s: metadata key '%s' has no value, or one of them "
                          "is not UTF-8", path, metadata[i]);
                json_decref(h);
                return NULL;
            }
        }
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        size_t es = st_dtype_size(t[i].dtype);
        int64_t numel = (t[i].ndim >= 0 && t[i].ndim <= ST_MAX_DIMS)
                            ? st_numel(t[i].ndim, t[i].shape) : -1;
        if (!t[i].name || !es || numel < 0 || (need_data && numel > 0 && !t[i].data)
            || !strcmp(t[i].name, "__metadata__")
            || (uint64_t)numel > (UINT64_MAX - offset) / es) {
            base_errf(err, errlen, "%s: tensor %d ('%s') has a bad name, dtype, shape or data",
                      path, i, t[i].name ? t[i].name : "(null)");
            json_decref(h);
            return NULL;
        }
        /* names must be unique: a reader would silently keep one of two */
        if (json_object_get(h, t[i].name)) {
            base_errf(err, errlen, "%s: tensor name '%s' given twice", path, t[i].name);
            json_decref(h);
            return NULL;
        }
        uint64_t bytes = (uint64_t)numel * es;
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)t[i].shape[d]));
        json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", t[i].dtype, "shape", shape,
                              "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes));
        if (!e || json_object_set_new(h, t[i].name, e) != 0) {
            base_errf(err, errlen, "%s: tensor %d: its name is not UTF-8, or out of memory",
                      path, i);
            json_decref(h);
            return NULL;
        }
        offset += bytes;
    }
    return h;
}

/* st_stream_open, need_data as make_header's */
static int stream_open(st_stream *s, const char *path, const st_tensor *t, int n,
                       const char *const *metadata, int need_data, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (n < 0 || (n > 0 && !t)) {
        base_errf(err, errlen, "%s: bad tensor list (n=%d)", path, n);
        return -1;
    }
    uint64_t total = 0;
    json_t *h = make_header(path, t, n, metadata, need_data, err, errlen);
    if (!h)
        return -1;
    for (int i = 0; i < n; i++) /* make_header checked the sizes: no overflow here */
        total += (uint64_t)st_numel(t[i].ndim, t[i].shape) * st_dtype_size(t[i].dtype);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!text) {
        base_errf(err, errlen, "%s: out of memory writing the header", path);
        return -1;
    }
    size_t hl = strlen(text), pad = (8 - hl % 8) % 8;
    uint8_t len8[8];
    base_put_le64(len8, (uint64_t)(hl + pad));
    if (base_out_open(&s->out, path, "safetensors file", err, errlen) != 0) {
        free(text);
        return -1;
    }
    base_out_write(&s->out, len8, 8);
    base_out_write(&s->out, text, hl);
    base_out_write(&s->out, "       ", pad);
    free(text);
    s->left = total;
    s->open = 1;
    return 0;
}

int st_stream_open(st_stream *s, const char *path, const st_tensor *t, int n,
                   const char *const *metadata, char *err, size_t errlen)
{
    return stream_open(s, path, t, n, metadata, 0, err, errlen);
}

int st_stream_write(st_stream *s, const void *p, size_t n)
{
    if (!s->open || n > s->left) {
        s->overrun = 1;
        return -1;
    }
    s->left -= n;
    return base_out_write(&s->out, p, n);
}

int st_stream_commit(st_stream *s, char *err, size_t errlen)
{
    if (!s->open) {
        base_errf(err, errlen, "safetensors stream: not open");
        return -1;
    }
    s->open = 0;
    if (s->overrun || s->left) {
        base_errf(err, errlen, "%s: %s the bytes its header promises (%llu left): not written",
                  s->out.path, s->overrun ? "more than" : "fewer than",
                  (unsigned long long)s->left);
        base_out_abort(&s->out);
        return -1;
    }
    return base_out_commit(&s->out, err, errlen);
}

void st_stream_abort(st_stream *s)
{
    if (s->open) base_out_abort(&s->out);
    s->open = 0;
}

int st_write(const char *path, const st_tensor *t, int n, const char *const *metadata,
             char *err, size_t errlen)
{
    st_stream s;
    if (stream_open(&s, path, t, n, metadata, 1, err, errlen)) return -1;
    for (int i = 0; i < n; i++)
        st_stream_write(&s, t[i].data,
                        (size_t)st_numel(t[i].ndim, t[i].shape) * st_dtype_size(t[i].dtype));
    return st_stream_commit(&s, err, errlen);
}
