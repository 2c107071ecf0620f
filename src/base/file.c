/* file.c: the one way twotower opens an input and the one way it writes an output
 * (base.h). Inputs: regular files only, opened without blocking so a FIFO named like a
 * data file is refused instead of hanging. Outputs: checked against the inputs and
 * devices, written to "<path>.tmp", fsync'd, renamed over path, the folder fsync'd. */
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m)) return "a folder";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

int base_open_input(const char *path, const char *what, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        base_errf(err, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        base_errf(err, errlen, "%s %s: cannot stat: %s", what, path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        base_errf(err, errlen, "%s %s: %s, not a regular file", what, path, kind_of(st.st_mode));
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        base_errf(err, errlen, "%s %s: fcntl: %s", what, path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

FILE *base_fopen_input(const char *path, const char *what, char *err, size_t errlen)
{
    int fd = base_open_input(path, what, err, errlen);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        base_errf(err, errlen, "%s %s: fdopen: %s", what, path, strerror(errno));
        close(fd);
    }
    return f;
}

void *base_read_file(const char *path, const char *what, size_t max_bytes, size_t *len,
                     char *err, size_t errlen)
{
    int fd = base_open_input(path, what, err, errlen);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > max_bytes) {
        base_errf(err, errlen, "%s %s: %lld bytes, more than the %zu this reader takes", what,
                  path, (long long)st.st_size, max_bytes);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        base_errf(err, errlen, "%s %s: out of memory for %zu bytes", what, path, n);
        close(fd);
        return NULL;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            base_errf(err, errlen, "%s %s: read failed after %zu of %zu bytes: %s", what, path,
                      got, n, r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* The canonical form of path, which need not exist: the realpath of its longest existing
 * leading part, then the rest resolved by name ("." dropped, ".." taking one part off),
 * which is exact because parts that do not exist cannot be links. 0, or -1 when the
 * path is too long or an existing part cannot be resolved (a loop, no permission). */
static int canonical(const char *path, char *out, size_t outlen)
{
    char head[PATH_MAX], real[PATH_MAX], first[PATH_MAX];
    const char *tail[PATH_MAX / 2]; /* the parts that do not exist, last first (in head) */
    int nt = 0, pops = 0;
    if (!*path || snprintf(head, sizeof head, "%s", path) >= (int)sizeof head) return -1;
    for (;;) {
        size_t n = strlen(head);
        while (n > 1 && head[n - 1] == '/') head[--n] = 0;
        if (realpath(head, real)) break;
        if (errno != ENOENT) return -1;
        char *slash = strrchr(head, '/');
        const char *last = slash ? slash + 1 : head;
        if (!strcmp(last, "..")) pops++;
        else if (pops > 0 && strcmp(last, ".")) pops--;
        else if (strcmp(last, ".") && *last) tail[nt++] = last;
        if ((!slash || slash == head) && nt > 0 && tail[nt - 1] == last)
            tail[nt - 1] = strcpy(first, last); /* head becomes "." or "/" over it */
        if (!slash) snprintf(head, sizeof head, ".");
        else if (slash == head) head[1] = 0;
        else *slash = 0;
    }
    for (; pops > 0; pops--) { /* "../.." above the existing part */
        char *slash = strrchr(real, '/');
        if (slash == real) real[1] = 0;
        else if (slash) *slash = 0;
    }
    size_t k = (size_t)snprintf(out, outlen, "%s", real);
    for (int i = nt - 1; i >= 0 && k < outlen; i--)
        k += (size_t)snprintf(out + k, outlen - k, "%s%s", k > 1 ? "/" : "", tail[i]);
    return k < outlen ? 0 : -1;
}

int base_path_inside(const char *path, const char *dir)
{
    char cp[PATH_MAX], cd[PATH_MAX];
    if (!realpath(dir, cd)) return 0; /* a folder that does not exist holds nothing */
    if (canonical(path, cp, sizeof cp) != 0) return -1;
    size_t k = strlen(cd);
    if (k == 1) return 1; /* "/" */
    return !strncmp(cp, cd, k) && (cp[k] == '/' || cp[k] == 0);
}

int base_check_output(const char *path, const char *what, const char *const *inputs, int n,
                      const char *const *protect, int n_protect, char *err, size_t errlen)
{
    if (!path || !*path) {
        base_errf(err, errlen, "%s: empty output path", what);
        return -1;
    }
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode)) {
        base_errf(err, errlen, "%s %s: exists and is %s; refusing to replace it", what, path,
                  kind_of(st.st_mode));
        return -1;
    }
    if (exists)
        for (int i = 0; i < n; i++) {
            struct stat si;
            if (!inputs[i] || stat(inputs[i], &si) != 0) continue;
            if (si.st_dev == st.st_dev && si.st_ino == st.st_ino) {
                base_errf(err, errlen, "%s %s: is the same file as the input %s; refusing to "
                                       "overwrite an input", what, path, inputs[i]);
                return -1;
            }
        }
    for (int i = 0; i < n_protect; i++) {
        int in = protect[i] ? base_path_inside(path, protect[i]) : 0;
        if (in < 0) {
            base_errf(err, errlen, "%s %s: cannot resolve the path to check it against %s",
                      what, path, protect[i]);
            return -1;
        }
        if (in) {
            base_errf(err, errlen, "%s %s: lies inside %s, whose files it would "
                                   "replace; write it elsewhere", what, path, protect[i]);
            return -1;
        }
    }
    return 0;
}

int base_out_open(base_out *o, const char *path, const char *what, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    snprintf(o->what, sizeof o->what, "%s", what);
    if (snprintf(o->path, sizeof o->path, "%s", path) >= (int)sizeof o->path) {
        base_errf(err, errlen, "%s %s: path too long", what, path);
        return -1;
    }
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp", path);
    struct stat st;
    if (lstat(o->tmp, &st) == 0 && !S_ISREG(st.st_mode)) {
        base_errf(err, errlen, "%s %s: its temporary file %s exists and is %s", what, path,
                  o->tmp, S_ISLNK(st.st_mode) ? "a symbolic link" : kind_of(st.st_mode));
        return -1;
    }
    int fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) {
        base_errf(err, errlen, "%s %s: cannot create %s: %s", what, path, o->tmp, strerror(errno));
        return -1;
    }
    o->f = fdopen(fd, "wb");
    if (!o->f) {
        base_errf(err, errlen, "%s %s: fdopen: %s", what, path, strerror(errno));
        close(fd);
        unlink(o->tmp);
        return -1;
    }
    return 0;
}

int base_out_write(base_out *o, const void *p, size_t n)
{
    if (o->failed) return -1;
    if (n && fwrite(p, 1, n, o->f) != n) {
        o->failed = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

int base_out_printf(base_out *o, const char *fmt, ...)
{
    if (o->failed) return -1;
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(o->f, fmt, ap);
    va_end(ap);
    if (r < 0) {
        o->failed = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

int base_out_pwrite(base_out *o, const void *p, size_t n, uint64_t off)
{
    if (o->failed) return -1;
    if (fflush(o->f) != 0) {
        o->failed = errno ? errno : EIO;
        return -1;
    }
    off_t end = ftello(o->f);
    if (end < 0 || off > (uint64_t)end || n > (uint64_t)end - off) {
        o->failed = end < 0 ? errno : EINVAL;
        return -1;
    }
    const char *c = p;
    while (n > 0) {
        ssize_t w = pwrite(fileno(o->f), c, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            o->failed = w < 0 ? errno : EIO;
            return -1;
        }
        c += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

void base_out_abort(base_out *o)
{
    if (o->f) fclose(o->f);
    o->f = NULL;
    unlink(o->tmp);
}

int base_out_commit(base_out *o, char *err, size_t errlen)
{
    /* ferror: a write made straight to o->f (fprintf) that failed is a failure too */
    if (!o->failed && (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0))
        o->failed = errno ? errno : EIO;
    if (fclose(o->f) != 0 && !o->failed) o->failed = errno ? errno : EIO;
    o->f = NULL;
    if (o->failed) {
        base_errf(err, errlen, "%s %s: write failed: %s (the previous file, if any, is "
                               "untouched)", o->what, o->path, strerror(o->failed));
        unlink(o->tmp);
        return -1;
    }
    if (rename(o->tmp, o->path) != 0) {
        base_errf(err, errlen, "%s %s: rename from %s: %s", o->what, o->path, o->tmp,
                  strerror(errno));
        unlink(o->tmp);
        return -1;
    }
    return base_fsync_dir_of(o->path, err, errlen);
}

int base_write_file(const char *path, const char *what, const void *data, size_t n, char *err,
                    size_t errlen)
{
    base_out o;
    if (base_out_open(&o, path, what, err, errlen)) return -1;
    base_out_write(&o, data, n);
    return base_out_commit(&o, err, errlen);
}

int base_fsync_dir_of(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        base_errf(err, errlen, "%s: path too long", path);
        return -1;
    }
    struct stat st;
    const char *dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? path : dirname(buf);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        base_errf(err, errlen, "folder %s: open for fsync: %s", dir, strerror(errno));
        return -1;
    }
    int rc = fsync(fd), e = errno;
    close(fd);
    if (rc != 0) {
        base_errf(err, errlen, "folder %s: fsync: %s", dir, strerror(e));
        return -1;
    }
    return 0;
}

int base_mkdir_p(const char *dir, const char *what, char *err, size_t errlen)
{
    char tmp[4096];
    if (!*dir || snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        base_errf(err, errlen, "%s '%s': empty or too long path", what, dir);
        return -1;
    }
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
            base_errf(err, errlen, "%s %s: mkdir %s: %s", what, dir, tmp, strerror(errno));
            return -1;
        }
        *p = c;
        if (c == 0) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        base_errf(err, errlen, "%s %s: not a folder", what, dir);
        return -1;
    }
    return 0;
}
