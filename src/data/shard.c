/* shard: the on-disk formats written by prep and read by the loader (shard files and
 * meta.bin, layouts in data_internal.h), their checks, and the pixel statistics (mean,
 * RGB covariance, its eigen-decomposition) stored in meta.bin. Every size read from a
 * file is bounded before it is used; nothing here trusts a header. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/base.h"
#include "data/data_internal.h"

int data_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

uint32_t data_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    return (uint32_t)crc32_z(crc, p, n);
}

int data_read_file(const char *path, const char *what, size_t max_bytes, uint8_t **buf,
                   size_t *n, char *err, size_t errlen)
{
    *buf = NULL;
    *n = 0;
    size_t len = 0;
    uint8_t *b = base_read_file(path, what, max_bytes, &len, err, errlen);
    if (!b)
        return -1;
    if (len == 0) {
        free(b);
        return data_fail(err, errlen, "%s %s: empty file", what, path);
    }
    *buf = b;
    *n = len;
    return 0;
}

int data_shard_map_file(const char *path, uint8_t **map, size_t *bytes, char *err,
                        size_t errlen)
{
    *map = NULL;
    *bytes = 0;
    int fd = base_open_input(path, "shard", err, errlen);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        int e = errno;
        close(fd);
        return data_fail(err, errlen, "shard %s: %s", path,
                         st.st_size == 0 ? "empty file" : strerror(e));
    }
    if ((uint64_t)st.st_size > SIZE_MAX / 2) {
        close(fd);
        return data_fail(err, errlen, "shard %s: %lld bytes cannot be mapped", path,
                         (long long)st.st_size);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return data_fail(err, errlen, "shard %s: mmap failed: %s", path, strerror(e));
    *map = m;
    *bytes = (size_t)st.st_size;
    return 0;
}

/* ---- shard header ------------------------------------------------------------------ */

void data_shard_header_encode(uint8_t *buf, const data_shard_header *h)
{
    memset(buf, 0, DATA_SHARD_HEADER);
    memcpy(buf, DATA_SHARD_MAGIC, 8);
    base_put_le32(buf + 8, DATA_SHARD_VERSION);
    base_put_le32(buf + 12, DATA_SHARD_HEADER);
    base_put_le32(buf + 16, DATA_SIZE);
    base_put_le32(buf + 20, DATA_SIZE);
    base_put_le32(buf + 24, DATA_CHANNELS);
    base_put_le32(buf + 28, h->classes);
    base_put_le64(buf + 32, h->count);
    base_put_le64(buf + 40, h->first);
    base_put_le64(buf + 48, h->index);
    uint64_t pix = DATA_SHARD_HEADER;
    uint64_t lab = pix + h->count * DATA_IMAGE_BYTES;
    base_put_le64(buf + 56, pix);
    base_put_le64(buf + 64, lab);
    base_put_le64(buf + 72, lab + 4 * h->count);
    base_put_le32(buf + 80, h->payload_crc);
    size_t sl = strnlen(h->split, 8);
    memcpy(buf + 84, h->split, sl); /* NUL padded by the memset */
    base_put_le32(buf + 124, data_crc32(0, buf, 124));
}

int data_shard_parse(const uint8_t *buf, size_t n, int check_payload, data_shard_header *h,
                     char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    if (n < DATA_SHARD_HEADER)
        return data_fail(err, errlen, "shard of %zu bytes is shorter than its %u byte header",
                         n, DATA_SHARD_HEADER);
    if (memcmp(buf, DATA_SHARD_MAGIC, 8) != 0)
        return data_fail(err, errlen, "not a twotower shard (bad magic)");
    if (base_get_le32(buf + 8) != DATA_SHARD_VERSION)
        return data_fail(err, errlen, "shard version %u, this build reads %u",
                         base_get_le32(buf + 8), DATA_SHARD_VERSION);
    if (base_get_le32(buf + 124) != data_crc32(0, buf, 124))
        return data_fail(err, errlen, "shard header checksum mismatch");
    if (base_get_le32(buf + 12) != DATA_SHARD_HEADER)
        return data_fail(err, errlen, "shard header size %u, expected %u", base_get_le32(buf + 12),
                         DATA_SHARD_HEADER);
    if (base_get_le32(buf + 16) != DATA_SIZE || base_get_le32(buf + 20) != DATA_SIZE ||
        base_get_le32(buf + 24) != DATA_CHANNELS)
        return data_fail(err, errlen, "shard images are %ux%ux%u, expected %dx%dx%d",
                         base_get_le32(buf + 16), base_get_le32(buf + 20), base_get_le32(buf + 24),
                         DATA_SIZE, DATA_SIZE, DATA_CHANNELS);
    uint32_t classes = base_get_le32(buf + 28);
    if (classes < 1 || classes > DATA_MAX_CLASSES)
        return data_fail(err, errlen, "shard claims %u classes (1..%d)", classes,
                         DATA_MAX_CLASSES);
    uint64_t count = base_get_le64(buf + 32);
    if (count > DATA_MAX_SHARD_IMAGES)
        return data_fail(err, errlen, "shard claims %llu images (at most %d)",
                         (unsigned long long)count, DATA_MAX_SHARD_IMAGES);
    /* count is bounded, so these cannot overflow */
    uint64_t pix = DATA_SHARD_HEADER, lab = pix + count * DATA_IMAGE_BYTES,
             end = lab + 4 * count;
    if (base_get_le64(buf + 56) != pix || base_get_le64(buf + 64) != lab || base_get_le64(buf + 72) != end)
        return data_fail(err, errlen, "shard offsets do not match its %llu images",
                         (unsigned long long)count);
    if ((uint64_t)n != end)
        return data_fail(err, errlen, "shard is %zu bytes, its header says %llu (truncated?)",
                         n, (unsigned long long)end);
    const char *sp = (const char *)buf + 84;
    if (memchr(sp, 0, 8) == NULL)
        return data_fail(err, errlen, "shard split name is not terminated");
    if (strcmp(sp, "train") != 0 && strcmp(sp, "val") != 0)
        return data_fail(err, errlen, "shard split \"%.8s\" is neither train nor val", sp);
    const uint8_t *labels = buf + lab;
    for (uint64_t i = 0; i < count; i++) {
        uint32_t v = base_get_le32(labels + 4 * i);
        if (v >= classes)
            return data_fail(err, errlen, "label %d of image %llu is outside 0..%u",
                             (int32_t)v, (unsigned long long)i, classes - 1);
    }
    h->payload_crc = base_get_le32(buf + 80);
    if (check_payload && data_crc32(0, buf + pix, (size_t)(end - pix)) != h->payload_crc)
        return data_fail(err, errlen, "shard payload checksum mismatch (corrupt pixels or labels)");
    memcpy(h->split, sp, 8);
    h->split[8] = 0;
    h->classes = classes;
    h->count = count;
    h->first = base_get_le64(buf + 40);
    h->index = base_get_le64(buf + 48);
    return 0;
}

int64_t data_shard_check(const uint8_t *buf, size_t n, int check_payload, char *err,
                         size_t errlen)
{
    data_shard_header h;
    if (data_shard_parse(buf, n, check_payload, &h, err, errlen) != 0)
        return -1;
    return (int64_t)h.count;
}

int data_shards_verify(const char *dir, const char *split, char *err, size_t errlen)
{
    int train = strcmp(split, "train") == 0;
    if (!train && strcmp(split, "val") != 0)
        return data_fail(err, errlen, "split \"%s\" is neither train nor val", split);
    data_meta m;
    if (data_meta_load(dir, &m, err, errlen) != 0)
        return -1;
    int rc = data_shards_check_listed(dir, &m, err, errlen);
    uint32_t nsh = train ? m.train_shards : m.val_shards;
    const uint32_t *want = m.shard_crc + (train ? 0 : m.train_shards);
    char path[4096], e2[512];
    for (uint32_t i = 0; i < nsh && rc == 0; i++) {
        snprintf(path, sizeof path, "%s/%s-%05u.tts", dir, split, i);
        uint8_t *map;
        size_t bytes;
        if ((rc = data_shard_map_file(path, &map, &bytes, err, errlen)) != 0)
            break;
        madvise(map, bytes, MADV_SEQUENTIAL);
        data_shard_header h;
        rc = data_shard_parse(map, bytes, 1, &h, e2, sizeof e2);
        munmap(map, bytes);
        if (rc != 0)
            rc = data_fail(err, errlen, "shard %s: %s", path, e2);
        else if (h.payload_crc != want[i])
            rc = data_fail(err, errlen,
                           "shard %s: payload checksum %08x, but %s/meta.bin lists %08x: the "
                           "shard and meta.bin come from different prep runs (re-run prep)",
                           path, h.payload_crc, dir, want[i]);
    }
    data_meta_free(&m);
    return rc;
}

int64_t data_shard_name_index(const char *name, const char *split)
{
    size_t ls = strlen(split), ln = strlen(name);
    if (ln < ls + 6 || strncmp(name, split, ls) != 0 || name[ls] != '-' ||
        strcmp(name + ln - 4, ".tts") != 0)
        return -1;
    int64_t v = 0;
    for (size_t k = ls + 1; k < ln - 4; k++) {
        if (name[k] < '0' || name[k] > '9')
            return -1;
        if (v < ((int64_t)1 << 40))
            v = v * 10 + (name[k] - '0');
    }
    return v;
}

int data_shards_check_listed(const char *dir, const data_meta *m, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d)
        return data_fail(err, errlen, "dataset %s: cannot list the folder: %s", dir,
                         strerror(errno));
    static const char *const splits[2] = {"train", "val"};
    const uint32_t listed[2] = {m->train_shards, m->val_shards};
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        for (int k = 0; k < 2; k++) {
            int64_t i = data_shard_name_index(e->d_name, splits[k]);
            if (i < 0)
                continue;
            char want[32];
            snprintf(want, sizeof want, "%s-%05u.tts", splits[k], (unsigned)(i & 0xffffffffu));
            if (i >= (int64_t)listed[k] || strcmp(want, e->d_name) != 0)
                rc = data_fail(err, errlen,
                               "shard %s/%s: not listed in %s/meta.bin, whose %s split has %u "
                               "shard%s (%s-00000.tts..): a stray file from another prep run? "
                               "(remove it, or re-run prep into an empty folder)",
                               dir, e->d_name, dir, splits[k], listed[k],
                               listed[k] == 1 ? "" : "s", splits[k]);
        }
    }
    closedir(d);
    return rc;
}

int data_meta_load(const char *dir, data_meta *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    char path[4096], e2[512];
    if (snprintf(path, sizeof path, "%s/meta.bin", dir) >= (int)sizeof path)
        return data_fail(err, errlen, "dataset %s: path too long", dir);
    uint8_t *mb;
    size_t mn;
    if (data_read_file(path, "meta.bin", DATA_META_MAX_BYTES, &mb, &mn, err, errlen) != 0)
        return -1;
    int rc = data_meta_parse(mb, mn, m, e2, sizeof e2);
    free(mb);
    if (rc != 0)
        return data_fail(err, errlen, "meta.bin %s: %s", path, e2);
    return 0;
}

/* ---- meta.bin ---------------------------------------------------------------------- */

static void put_f64(uint8_t *p, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    base_put_le64(p, u);
}
static double get_f64(const uint8_t *p)
{
    uint64_t u = base_get_le64(p);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

int data_meta_encode(const data_meta *m, uint8_t **buf, size_t *n, char *err, size_t errlen)
{
    size_t mean_bytes = DATA_IMAGE_BYTES * 4;
    size_t nsh = (size_t)m->train_shards + m->val_shards;
    if (!m->shard_crc && nsh > 0)
        return data_fail(err, errlen, "meta.bin needs the checksum of each of its %zu shards",
                         nsh);
    size_t size = DATA_META_FIXED + mean_bytes + 4 * nsh + 4;
    for (int c = 0; c < m->classes; c++) {
        size_t l = strlen(m->names[c]);
        if (l == 0 || l > DATA_MAX_NAME)
            return data_fail(err, errlen, "class name %d has %zu bytes (1..%d)", c, l,
                             DATA_MAX_NAME);
        size += 2 + l;
    }
    uint8_t *b = calloc(1, size);
    if (!b)
        return data_fail(err, errlen, "out of memory for meta.bin (%zu bytes)", size);
    memcpy(b, DATA_META_MAGIC, 8);
    base_put_le32(b + 8, DATA_META_VERSION);
    base_put_le32(b + 12, DATA_SIZE);
    base_put_le32(b + 16, DATA_SIZE);
    base_put_le32(b + 20, DATA_CHANNELS);
    base_put_le32(b + 24, (uint32_t)m->classes);
    base_put_le32(b + 28, m->shard_size);
    base_put_le64(b + 32, m->n_train);
    base_put_le64(b + 40, m->n_val);
    base_put_le32(b + 48, m->train_shards);
    base_put_le32(b + 52, m->val_shards);
    base_put_le64(b + 56, m->seed);
    const double *d[4] = {m->pca.rgb_mean, m->pca.cov, m->pca.eigval, m->pca.eigvec};
    const int dn[4] = {3, 9, 3, 9};
    uint8_t *p = b + 72;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < dn[k]; i++, p += 8)
            put_f64(p, d[k][i]);
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++, p += 4) {
        uint32_t u;
        memcpy(&u, &m->mean[i], 4);
        base_put_le32(p, u);
    }
    for (size_t i = 0; i < nsh; i++, p += 4)
        base_put_le32(p, m->shard_crc[i]);
    for (int c = 0; c < m->classes; c++) {
        size_t l = strlen(m->names[c]);
        p[0] = (uint8_t)l;
        p[1] = (uint8_t)(l >> 8);
        memcpy(p + 2, m->names[c], l);
        p += 2 + l;
    }
    base_put_le32(p, data_crc32(0, b, (size_t)(p - b)));
    *buf = b;
    *n = size;
    return 0;
}

void data_meta_free(data_meta *m)
{
    if (m->names)
        for (int c = 0; c < m->classes; c++)
            free(m->names[c]);
    free(m->names);
    free(m->mean);
    free(m->shard_crc);
    memset(m, 0, sizeof *m);
}

int data_meta_parse(const uint8_t *buf, size_t n, data_meta *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    size_t mean_bytes = DATA_IMAGE_BYTES * 4;
    if (n < DATA_META_FIXED + mean_bytes + 4)
        return data_fail(err, errlen, "meta.bin of %zu bytes is too short", n);
    if (memcmp(buf, DATA_META_MAGIC, 8) != 0)
        return data_fail(err, errlen, "not a twotower meta.bin (bad magic)");
    uint32_t version = base_get_le32(buf + 8);
    if (version < DATA_META_VERSION)
        return data_fail(err, errlen,
                         "meta.bin version %u is from an older prep (no shard checksums); "
                         "this build reads version %u: re-run `twotower prep` on the source",
                         version, DATA_META_VERSION);
    if (version != DATA_META_VERSION)
        return data_fail(err, errlen, "meta.bin version %u, this build reads %u (a newer "
                                      "twotower wrote it)", version, DATA_META_VERSION);
    if (base_get_le32(buf + n - 4) != data_crc32(0, buf, n - 4))
        return data_fail(err, errlen, "meta.bin checksum mismatch");
    if (base_get_le32(buf + 12) != DATA_SIZE || base_get_le32(buf + 16) != DATA_SIZE ||
        base_get_le32(buf + 20) != DATA_CHANNELS)
        return data_fail(err, errlen, "meta.bin image size is not %dx%dx%d", DATA_SIZE,
                         DATA_SIZE, DATA_CHANNELS);
    uint32_t classes = base_get_le32(buf + 24);
    if (classes < 1 || classes > DATA_MAX_CLASSES)
        return data_fail(err, errlen, "meta.bin claims %u classes (1..%d)", classes,
                         DATA_MAX_CLASSES);
    uint32_t shard_size = base_get_le32(buf + 28);
    if (shard_size < 1 || shard_size > DATA_MAX_SHARD_IMAGES)
        return data_fail(err, errlen, "meta.bin shard size %u out of range", shard_size);
    uint64_t nt = base_get_le64(buf + 32), nv = base_get_le64(buf + 40);
    uint32_t st = base_get_le32(buf + 48), sv = base_get_le32(buf + 52);
    if (nt > ((uint64_t)1 << 40) || nv > ((uint64_t)1 << 40))
        return data_fail(err, errlen, "meta.bin image counts out of range");
    if ((uint64_t)st != (nt + shard_size - 1) / shard_size ||
        (uint64_t)sv != (nv + shard_size - 1) / shard_size)
        return data_fail(err, errlen, "meta.bin shard counts do not match its image counts");
    m->classes = (int)classes;
    m->shard_size = shard_size;
    m->n_train = nt;
    m->n_val = nv;
    m->train_shards = st;
    m->val_shards = sv;
    m->seed = base_get_le64(buf + 56);
    double *d[4] = {m->pca.rgb_mean, m->pca.cov, m->pca.eigval, m->pca.eigvec};
    const int dn[4] = {3, 9, 3, 9};
    const uint8_t *p = buf + 72;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < dn[k]; i++, p += 8) {
            d[k][i] = get_f64(p);
            if (!isfinite(d[k][i]) || fabs(d[k][i]) > 1e6)
                return data_fail(err, errlen, "meta.bin PCA statistics are not finite");
        }
    m->mean = malloc(mean_bytes);
    m->names = calloc(classes, sizeof *m->names);
    if (!m->mean || !m->names) {
        data_meta_free(m);
        return data_fail(err, errlen, "out of memory reading meta.bin");
    }
    for (size_t i = 0; i < DATA_IMAGE_BYTES; i++, p += 4) {
        uint32_t u = base_get_le32(p);
        memcpy(&m->mean[i], &u, 4);
        if (!(m->mean[i] >= 0.0f && m->mean[i] <= 255.0f)) {
            data_meta_free(m);
            return data_fail(err, errlen, "meta.bin mean image value %zu is outside 0..255", i);
        }
    }
    const uint8_t *end = buf + n - 4;
    /* st and sv are u32, so the table's size cannot overflow; it is bounded by what is
     * left of the file before anything is allocated for it */
    uint64_t nsh = (uint64_t)st + sv;
    if (nsh * 4 > (uint64_t)(end - p)) {
        data_meta_free(m);
        return data_fail(err, errlen, "meta.bin ends inside its table of %llu shard checksums",
                         (unsigned long long)nsh);
    }
    m->shard_crc = malloc(nsh ? (size_t)nsh * 4 : 1);
    if (!m->shard_crc) {
        data_meta_free(m);
        return data_fail(err, errlen, "out of memory reading meta.bin");
    }
    for (uint64_t i = 0; i < nsh; i++, p += 4)
        m->shard_crc[i] = base_get_le32(p);
    for (uint32_t c = 0; c < classes; c++) {
        if (end - p < 2) {
            data_meta_free(m);
            return data_fail(err, errlen, "meta.bin ends inside class name %u", c);
        }
        size_t l = (size_t)p[0] | (size_t)p[1] << 8;
        p += 2;
        if (l == 0 || l > DATA_MAX_NAME || (size_t)(end - p) < l || memchr(p, 0, l)) {
            data_meta_free(m);
            return data_fail(err, errlen, "meta.bin class name %u is malformed", c);
        }
        m->names[c] = malloc(l + 1);
        if (!m->names[c]) {
            data_meta_free(m);
            return data_fail(err, errlen, "out of memory reading meta.bin");
        }
        memcpy(m->names[c], p, l);
        m->names[c][l] = 0;
        p += l;
    }
    if (p != end) {
        data_meta_free(m);
        return data_fail(err, errlen, "meta.bin has %zu trailing bytes", (size_t)(end - p));
    }
    return 0;
}

int data_meta_check(const uint8_t *buf, size_t n, char *err, size_t errlen)
{
    data_meta m;
    if (data_meta_parse(buf, n, &m, err, errlen) != 0)
        return -1;
    data_meta_free(&m);
    return 0;
}

/* ---- pixel statistics -------------------------------------------------------------- */

void data_pixel_sums_add_image(data_pixel_sums *acc, const uint8_t *rgb, size_t pixels)
{
    /* per-image sums fit in 64 bits with room to spare (65536 px * 65025) */
    uint64_t s0 = 0, s1 = 0, s2 = 0, s00 = 0, s01 = 0, s02 = 0, s11 = 0, s12 = 0, s22 = 0;
    for (size_t i = 0; i < pixels; i++) {
        uint32_t r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        s0 += r;
        s1 += g;
        s2 += b;
        s00 += r * r;
        s01 += r * g;
        s02 += r * b;
        s11 += g * g;
        s12 += g * b;
        s22 += b * b;
    }
    acc->n += pixels;
    acc->s[0] += s0;
    acc->s[1] += s1;
    acc->s[2] += s2;
    acc->ss[0] += s00;
    acc->ss[1] += s01;
    acc->ss[2] += s02;
    acc->ss[3] += s01;
    acc->ss[4] += s11;
    acc->ss[5] += s12;
    acc->ss[6] += s02;
    acc->ss[7] += s12;
    acc->ss[8] += s22;
}

void data_pixel_sums_merge(data_pixel_sums *acc, const data_pixel_sums *x)
{
    acc->n += x->n;
    for (int i = 0; i < 3; i++)
        acc->s[i] += x->s[i];
    for (int i = 0; i < 9; i++)
        acc->ss[i] += x->ss[i];
}

/* Cyclic Jacobi rotations on a symmetric 3x3: a few sweeps reach double precision. */
static void jacobi3(double a[9], double v[9])
{
    for (int i = 0; i < 9; i++)
        v[i] = (i % 4 == 0) ? 1.0 : 0.0;
    for (int sweep = 0; sweep < 50; sweep++) {
        double off = fabs(a[1]) + fabs(a[2]) + fabs(a[5]);
        if (off < 1e-300)
            break;
        for (int p = 0; p < 2; p++)
            for (int q = p + 1; q < 3; q++) {
                double apq = a[3 * p + q];
                if (fabs(apq) < 1e-300)
                    continue;
                double theta = (a[3 * q + q] - a[3 * p + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < 3; k++) { /* A <- A J */
                    double akp = a[3 * k + p], akq = a[3 * k + q];
                    a[3 * k + p] = c * akp - s * akq;
                    a[3 * k + q] = s * akp + c * akq;
                }
                for (int k = 0; k < 3; k++) { /* A <- J^T A */
                    double apk = a[3 * p + k], aqk = a[3 * q + k];
                    a[3 * p + k] = c * apk - s * aqk;
                    a[3 * q + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < 3; k++) { /* V <- V J */
                    double vkp = v[3 * k + p], vkq = v[3 * k + q];
                    v[3 * k + p] = c * vkp - s * vkq;
                    v[3 * k + q] = s * vkp + c * vkq;
                }
            }
    }
}

void data_pca_from_sums(data_pca *out, const data_pixel_sums *acc)
{
    memset(out, 0, sizeof *out);
    if (acc->n == 0) {
        for (int i = 0; i < 3; i++)
            out->eigvec[4 * i] = 1.0;
        return;
    }
    double n = (double)acc->n;
    for (int c = 0; c < 3; c++)
        out->rgb_mean[c] = (double)acc->s[c] / n;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            out->cov[3 * a + b] = (double)acc->ss[3 * a + b] / n - out->rgb_mean[a] * out->rgb_mean[b];
    double a[9], v[9];
    memcpy(a, out->cov, sizeof a);
    jacobi3(a, v);
    int order[3] = {0, 1, 2};
    for (int i = 0; i < 3; i++) /* sort descending */
        for (int j = i + 1; j < 3; j++)
            if (a[4 * order[j]] > a[4 * order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    for (int i = 0; i < 3; i++) {
        int k = order[i];
        double lam = a[4 * k];
        out->eigval[i] = lam > 0 ? lam : 0; /* a covariance is PSD; clip rounding */
        int big = 0; /* sign: largest-magnitude component positive (reproducible) */
        for (int r = 1; r < 3; r++)
            if (fabs(v[3 * r + k]) > fabs(v[3 * big + k]) + 1e-12)
                big = r;
        double sg = v[3 * big + k] < 0 ? -1.0 : 1.0;
        for (int r = 0; r < 3; r++)
            out->eigvec[3 * r + i] = sg * v[3 * r + k];
    }
}
