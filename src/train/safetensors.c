/* safetensors: writer and reader for the format PyTorch, JAX and HF tools share
 * (https://github.com/huggingface/safetensors): u64 LE header length N, N bytes of JSON
 * {"name": {"dtype","shape","data_offsets"}, "__metadata__": {...}}, then the data. */
#include "train/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c writes host memory as little-endian data: port it before use"
#endif

static void st_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

size_t st_dtype_size(const char *dtype)
{
    if (!dtype)
        return 0;
    if (!strcmp(dtype, "F32") || !strcmp(dtype, "I32"))
        return 4;
    if (!strcmp(dtype, "F64") || !strcmp(dtype, "I64"))
        return 8;
    return 0;
}

/* ---- a growable string for the JSON header ------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} st_buf;

static void buf_put(st_buf *b, const char *p, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void buf_puts(st_buf *b, const char *p) { buf_put(b, p, strlen(p)); }

static void buf_printf(st_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->oom = 1;
        return;
    }
    buf_put(b, tmp, (size_t)n);
}

/* JSON string with the escapes RFC 8259 requires (quote, backslash, control chars). */
static void buf_json_string(st_buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"')
            buf_puts(b, "\\\"");
        else if (*p == '\\')
            buf_puts(b, "\\\\");
        else if (*p == '\n')
            buf_puts(b, "\\n");
        else if (*p == '\t')
            buf_puts(b, "\\t");
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_put(b, (const char *)p, 1);
    }
    buf_put(b, "\"", 1);
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

/* ---- writer ------------------------------------------------------------------------ */

static int write_all(FILE *fp, const void *p, size_t n)
{
    /* fwrite in pieces so one huge tensor does not meet a short write unreported */
    const char *c = p;
    while (n > 0) {
        size_t chunk = n < (64u << 20) ? n : (64u << 20);
        if (fwrite(c, 1, chunk, fp) != chunk)
            return -1;
        c += chunk;
        n -= chunk;
    }
    return 0;
}

/* fsync of the directory holding path, so the rename itself survives a crash. */
static int fsync_dir_of(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash) {
        *slash = '\0';
        d = dir;
    }
    int fd = open(d, O_RDONLY | O_DIRECTORY);
    int rc = -1;
    if (fd >= 0) {
        rc = fsync(fd);
        close(fd);
    }
    free(dir);
    return rc;
}

int st_write(const char *path, const st_tensor *t, int n, const char *const *metadata,
             char *err, size_t errlen)
{
    if (n < 0 || (n > 0 && !t)) {
        st_errf(err, errlen, "%s: bad tensor list (n=%d)", path, n);
        return -1;
    }
    /* names must be unique: a reader would silently keep one of two */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name)) {
                st_errf(err, errlen, "%s: tensor name '%s' given twice", path, t[i].name);
                return -1;
            }

    st_buf h = {0};
    uint64_t offset = 0;
    buf_put(&h, "{", 1);
    int first = 1;
    if (metadata && metadata[0]) {
        buf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; metadata[i]; i += 2) {
            if (!metadata[i + 1]) {
                free(h.s);
                st_errf(err, errlen, "%s: metadata key '%s' has no value", path, metadata[i]);
                return -1;
            }
            if (i > 0)
                buf_put(&h, ",", 1);
            buf_json_string(&h, metadata[i]);
            buf_put(&h, ":", 1);
            buf_json_string(&h, metadata[i + 1]);
        }
        buf_put(&h, "}", 1);
        first = 0;
    }
    for (int i = 0; i < n; i++) {
        size_t es = st_dtype_size(t[i].dtype);
        int64_t numel = (t[i].ndim >= 0 && t[i].ndim <= ST_MAX_DIMS)
                            ? st_numel(t[i].ndim, t[i].shape) : -1;
        if (!t[i].name || !es || numel < 0 || (numel > 0 && !t[i].data)
            || !strcmp(t[i].name, "__metadata__")
            || (uint64_t)numel > (UINT64_MAX - offset) / es) {
            free(h.s);
            st_errf(err, errlen, "%s: tensor %d ('%s') has a bad name, dtype, shape or data",
                    path, i, t[i].name ? t[i].name : "(null)");
            return -1;
        }
        uint64_t bytes = (uint64_t)numel * es;
        if (!first)
            buf_put(&h, ",", 1);
        first = 0;
        buf_json_string(&h, t[i].name);
        buf_puts(&h, ":{\"dtype\":");
        buf_json_string(&h, t[i].dtype);
        buf_puts(&h, ",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++)
            buf_printf(&h, d ? ",%" PRId64 : "%" PRId64, t[i].shape[d]);
        buf_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset,
                   offset + bytes);
        offset += bytes;
    }
    buf_put(&h, "}", 1);
    while (!h.oom && h.len % 8 != 0)
        buf_put(&h, " ", 1);
    if (h.oom) {
        free(h.s);
        st_errf(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        free(h.s);
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        st_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(h.s);
        free(tmp);
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int bad = write_all(fp, len8, 8) || write_all(fp, h.s, h.len);
    for (int i = 0; i < n && !bad; i++) {
        size_t bytes = (size_t)st_numel(t[i].ndim, t[i].shape) * st_dtype_size(t[i].dtype);
        bad = write_all(fp, t[i].data, bytes);
    }
    free(h.s);
    if (bad || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        st_errf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        fclose(fp);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (fclose(fp) != 0) {
        st_errf(err, errlen, "%s: close failed: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        st_errf(err, errlen, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    if (fsync_dir_of(path) != 0) {
        st_errf(err, errlen, "%s: fsync of its directory failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- reader: a small JSON parser for exactly the safetensors header ---------------- */

typedef struct {
    const char *p, *end;
    const char *why; /* first problem met */
} st_json;

static void js_ws(st_json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int js_fail(st_json *j, const char *why)
{
    if (!j->why)
        j->why = why;
    return -1;
}

static int js_expect(st_json *j, char c)
{
    js_ws(j);
    if (j->p >= j->end || *j->p != c)
        return js_fail(j, "unexpected character in the JSON header");
    j->p++;
    return 0;
}

static int js_hex4(st_json *j, unsigned *out)
{
    if (j->end - j->p < 4)
        return js_fail(j, "short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *j->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return js_fail(j, "bad \\u escape");
    }
    *out = v;
    return 0;
}

/* Parses a JSON string into a new malloc'd UTF-8 string. */
static int js_string(st_json *j, char **out)
{
    *out = NULL;
    if (js_expect(j, '"'))
        return -1;
    size_t cap = (size_t)(j->end - j->p) + 1, len = 0;
    /* the decoded string is never longer than what is left of the header */
    char *s = malloc(cap);
    if (!s)
        return js_fail(j, "out of memory");
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20) {
            free(s);
            return js_fail(j, "control character inside a JSON string");
        }
        if (c != '\\') {
            s[len++] = (char)c;
            continue;
        }
        if (j->p >= j->end)
            break;
        char e = *j->p++;
        unsigned cp;
        switch (e) {
        case '"': s[len++] = '"'; break;
        case '\\': s[len++] = '\\'; break;
        case '/': s[len++] = '/'; break;
        case 'b': s[len++] = '\b'; break;
        case 'f': s[len++] = '\f'; break;
        case 'n': s[len++] = '\n'; break;
        case 'r': s[len++] = '\r'; break;
        case 't': s[len++] = '\t'; break;
        case 'u':
            if (js_hex4(j, &cp)) {
                free(s);
                return -1;
            }
            if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\'
                && j->p[1] == 'u') {
                unsigned lo;
                j->p += 2;
                if (js_hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    free(s);
                    return js_fail(j, "bad surrogate pair");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            /* 6 escape bytes always cover the <= 4 UTF-8 bytes written here */
            if (cp < 0x80) {
                s[len++] = (char)cp;
            } else if (cp < 0x800) {
                s[len++] = (char)(0xc0 | (cp >> 6));
                s[len++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                s[len++] = (char)(0xe0 | (cp >> 12));
                s[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                s[len++] = (char)(0x80 | (cp & 0x3f));
            } else {
                s[len++] = (char)(0xf0 | (cp >> 18));
                s[len++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                s[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                s[len++] = (char)(0x80 | (cp & 0x3f));
            }
            break;
        default:
            free(s);
            return js_fail(j, "bad escape in a JSON string");
        }
    }
    if (j->p >= j->end) {
        free(s);
        return js_fail(j, "unterminated JSON string");
    }
    j->p++;
    s[len] = '\0';
    *out = s;
    return 0;
}

/* A non-negative integer that fits in int64. */
static int js_uint(st_json *j, uint64_t *out)
{
    js_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return js_fail(j, "expected a non-negative integer");
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        uint64_t d = (uint64_t)(*j->p++ - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return js_fail(j, "integer too large");
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* [int, int, ...] with at most maxn entries; *n gets the count. */
static int js_uint_array(st_json *j, uint64_t *v, int maxn, int *n)
{
    *n = 0;
    if (js_expect(j, '['))
        return -1;
    js_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        if (*n >= maxn)
            return js_fail(j, "array too long");
        if (js_uint(j, &v[(*n)++]))
            return -1;
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return js_expect(j, ']');
    }
}

/* Skips any JSON value (for keys the reader does not know), depth-bounded. */
static int js_skip(st_json *j, int depth)
{
    if (depth > 32)
        return js_fail(j, "JSON nested too deeply");
    js_ws(j);
    if (j->p >= j->end)
        return js_fail(j, "truncated JSON header");
    char c = *j->p;
    if (c == '"') {
        char *s;
        if (js_string(j, &s))
            return -1;
        free(s);
        return 0;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        js_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                char *k;
                if (js_string(j, &k))
                    return -1;
                free(k);
                if (js_expect(j, ':'))
                    return -1;
            }
            if (js_skip(j, depth + 1))
                return -1;
            js_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            return js_expect(j, close);
        }
    }
    /* number, true, false, null */
    const char *start = j->p;
    while (j->p < j->end && (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9')
                             || (*j->p >= 'a' && *j->p <= 'z')))
        j->p++;
    return j->p > start ? 0 : js_fail(j, "bad JSON value");
}

static int parse_metadata(st_json *j, st_file *f)
{
    if (js_expect(j, '{'))
        return -1;
    js_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        char *k = NULL, *v = NULL;
        if (js_string(j, &k) || js_expect(j, ':')) {
            free(k);
            return -1;
        }
        js_ws(j);
        if (j->p >= j->end || *j->p != '"') {
            free(k);
            return js_fail(j, "__metadata__ must map strings to strings");
        }
        if (js_string(j, &v)) {
            free(k);
            return -1;
        }
        char **meta = realloc(f->meta, sizeof(char *) * 2 * (size_t)(f->n_meta + 1));
        if (!meta) {
            free(k);
            free(v);
            return js_fail(j, "out of memory");
        }
        f->meta = meta;
        f->meta[2 * f->n_meta] = k;
        f->meta[2 * f->n_meta + 1] = v;
        f->n_meta++;
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return js_expect(j, '}');
    }
}

static int parse_entry(st_json *j, st_entry *e)
{
    int have_dtype = 0, have_shape = 0, have_off = 0;
    if (js_expect(j, '{'))
        return -1;
    for (;;) {
        char *k;
        if (js_string(j, &k) || js_expect(j, ':')) {
            free(k); /* NULL when js_string failed */
            return -1;
        }
        int rc;
        if (!strcmp(k, "dtype")) {
            char *d;
            rc = js_string(j, &d);
            if (!rc) {
                if (strlen(d) >= sizeof e->dtype)
                    rc = js_fail(j, "dtype name too long");
                else
                    strcpy(e->dtype, d);
                free(d);
            }
            have_dtype = 1;
        } else if (!strcmp(k, "shape")) {
            uint64_t v[ST_MAX_DIMS];
            rc = js_uint_array(j, v, ST_MAX_DIMS, &e->ndim);
            for (int d = 0; d < e->ndim; d++)
                e->shape[d] = (int64_t)v[d];
            have_shape = 1;
        } else if (!strcmp(k, "data_offsets")) {
            uint64_t v[2];
            int cnt;
            rc = js_uint_array(j, v, 2, &cnt);
            if (!rc && cnt != 2)
                rc = js_fail(j, "data_offsets needs two numbers");
            e->begin = v[0];
            e->end = v[1];
            have_off = 1;
        } else {
            rc = js_skip(j, 0);
        }
        free(k);
        if (rc)
            return -1;
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (js_expect(j, '}'))
            return -1;
        break;
    }
    if (!have_dtype || !have_shape || !have_off)
        return js_fail(j, "a tensor entry lacks dtype, shape or data_offsets");
    return 0;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->fp)
        fclose(f->fp);
    for (int i = 0; i < f->n; i++)
        free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < 2 * f->n_meta; i++)
        free(f->meta[i]);
    free(f->meta);
    free(f->path);
    memset(f, 0, sizeof *f);
}

int st_open(st_file *f, const char *path, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    FILE *fp = fopen(path, "rb");
    if (!f->path || !fp) {
        st_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        if (fp)
            fclose(fp);
        st_close(f);
        return -1;
    }
    f->fp = fp;
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) {
        st_errf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        st_close(f);
        return -1;
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    unsigned char len8[8];
    if (fsize < 8 || fread(len8, 1, 8, fp) != 8) {
        st_errf(err, errlen, "%s: too short for a safetensors file", path);
        st_close(f);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > fsize - 8) {
        st_errf(err, errlen, "%s: header length %" PRIu64 " is impossible (file is %" PRIu64
                " bytes)", path, hlen, fsize);
        st_close(f);
        return -1;
    }
    char *h = malloc((size_t)hlen);
    if (!h || fread(h, 1, (size_t)hlen, fp) != (size_t)hlen) {
        st_errf(err, errlen, "%s: cannot read the %" PRIu64 "-byte header", path, hlen);
        free(h);
        st_close(f);
        return -1;
    }
    f->data_start = 8 + hlen;
    f->data_bytes = fsize - f->data_start;

    st_json j = {h, h + hlen, NULL};
    int cap = 0;
    if (js_expect(&j, '{') == 0) {
        js_ws(&j);
        if (j.p < j.end && *j.p == '}')
            j.p++;
        else
            for (;;) {
                char *k;
                if (js_string(&j, &k))
                    break;
                if (js_expect(&j, ':')) {
                    free(k);
                    break;
                }
                if (!strcmp(k, "__metadata__")) {
                    free(k);
                    if (parse_metadata(&j, f))
                        break;
                } else {
                    if (f->n == cap) {
                        int ncap = cap ? 2 * cap : 64;
                        st_entry *e = realloc(f->entries, sizeof(st_entry) * (size_t)ncap);
                        if (!e) {
                            free(k);
                            js_fail(&j, "out of memory");
                            break;
                        }
                        f->entries = e;
                        cap = ncap;
                    }
                    st_entry *e = &f->entries[f->n];
                    memset(e, 0, sizeof *e);
                    e->name = k;
                    f->n++;
                    if (parse_entry(&j, e))
                        break;
                }
                js_ws(&j);
                if (j.p < j.end && *j.p == ',') {
                    j.p++;
                    continue;
                }
                js_expect(&j, '}');
                break;
            }
    }
    if (!j.why) {
        js_ws(&j);
        if (j.p != j.end)
            js_fail(&j, "trailing bytes after the JSON header");
    }
    free(h);
    if (j.why) {
        st_errf(err, errlen, "%s: bad header: %s", path, j.why);
        st_close(f);
        return -1;
    }
    for (int i = 0; i < f->n; i++) {
        st_entry *e = &f->entries[i];
        size_t es = st_dtype_size(e->dtype);
        int64_t numel = st_numel(e->ndim, e->shape);
        if (!es || numel < 0 || e->end < e->begin || e->end > f->data_bytes
            || (uint64_t)numel > UINT64_MAX / es || (uint64_t)numel * es != e->end - e->begin) {
            st_errf(err, errlen, "%s: tensor '%s' (dtype %s) has a bad shape or offsets "
                    "[%" PRIu64 ", %" PRIu64 ") for %" PRIu64 " data bytes", path, e->name,
                    e->dtype, e->begin, e->end, f->data_bytes);
            st_close(f);
            return -1;
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(f->entries[k].name, e->name)) {
                st_errf(err, errlen, "%s: tensor '%s' appears twice", path, e->name);
                st_close(f);
                return -1;
            }
    }
    return 0;
}

const st_entry *st_find(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->entries[i].name, name))
            return &f->entries[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[2 * i], key))
            return f->meta[2 * i + 1];
    return NULL;
}

int st_read_tensor(const st_file *f, const char *name, const char *dtype, void *dst,
                   size_t dst_bytes, char *err, size_t errlen)
{
    const st_entry *e = st_find(f, name);
    if (!e) {
        st_errf(err, errlen, "%s: no tensor '%s'", f->path, name);
        return -1;
    }
    if (strcmp(e->dtype, dtype) != 0) {
        st_errf(err, errlen, "%s: tensor '%s' is %s, expected %s", f->path, name, e->dtype,
                dtype);
        return -1;
    }
    if (e->end - e->begin != (uint64_t)dst_bytes) {
        st_errf(err, errlen, "%s: tensor '%s' has %" PRIu64 " bytes, expected %zu", f->path,
                name, e->end - e->begin, dst_bytes);
        return -1;
    }
    FILE *fp = f->fp;
    if (fseeko(fp, (off_t)(f->data_start + e->begin), SEEK_SET) != 0
        || fread(dst, 1, dst_bytes, fp) != dst_bytes) {
        st_errf(err, errlen, "%s: cannot read tensor '%s': %s", f->path, name,
                ferror(fp) ? strerror(errno) : "file truncated");
        return -1;
    }
    return 0;
}
