/* base: what every library of twotower needs and none of them owns. Public header of
 * src/base, the lowest library: tower, comm, data and train may include it; it includes
 * none of them. Holds the version, the monotonic clock, little-endian byte helpers, the
 * counter-based random numbers (also compiled by nvcc), strict number parsing, and the
 * file helpers every reader and writer goes through: one way to open an input (regular
 * files only, never blocking on a FIFO) and one way to write an output (checked against
 * the inputs, written to a temporary file, fsync'd and renamed into place). */
#ifndef BASE_H
#define BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version and clock ---------------------------------------------------------- */

/* The project's version, from meson.build's project() alone. */
const char *base_version(void);

/* Seconds on the monotonic clock (CLOCK_MONOTONIC): for durations only. */
double base_now(void);

/* ---- little-endian bytes (every on-disk format of twotower is little-endian) ------ */

static inline void base_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t base_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void base_put_le64(uint8_t *p, uint64_t v)
{
    base_put_le32(p, (uint32_t)v);
    base_put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t base_get_le64(const uint8_t *p)
{
    return (uint64_t)base_get_le32(p) | (uint64_t)base_get_le32(p + 4) << 32;
}

/* ---- counter-based random numbers -------------------------------------------------
 * Every random number in twotower is a pure function of (key, index), so the CPU and
 * the GPU draw the same dropout masks and augmentation, and nothing is stored for
 * backward. splitmix64's finaliser; the two inline functions are also compiled by nvcc. */
#if defined(__CUDACC__)
#define BASE_HD __host__ __device__ static inline
#else
#define BASE_HD static inline
#endif
BASE_HD uint64_t base_rng_mix(uint64_t key, uint64_t index)
{
    uint64_t z = key + 0x9e3779b97f4a7c15ull * (index + 1ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* uniform in [0, 1) with 24 bits, exact in float */
BASE_HD float base_rng_uniform(uint64_t key, uint64_t index)
{
    return (float)(base_rng_mix(key, index) >> 40) * (1.0f / 16777216.0f);
}
/* One N(0, 1) draw by Box-Muller from the counters index and index + 1 (53-bit
 * uniforms u1 in (0, 1], u2 in [0, 1)): second = 0 gives r cos(2 pi u2), second = 1
 * r sin(2 pi u2). Host only (double). */
double base_rng_normal(uint64_t key, uint64_t index, int second);

/* ---- strict numbers ---------------------------------------------------------------- */

/* The whole of s as a decimal integer: optional sign, digits, nothing else (no
 * fraction, exponent, hex, spaces or trailing junk). 0, or -1 (out of range too). */
int base_parse_i64(const char *s, int64_t *out);
/* The whole of s as a finite decimal number (strtod's syntax without hex, inf or nan). */
int base_parse_f64(const char *s, double *out);

/* ---- messages ---------------------------------------------------------------------- */

/* vsnprintf into err when err is not NULL (the err/errlen convention of every library). */
void base_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- inputs ------------------------------------------------------------------------ */

/* Opens path for reading, refusing anything but a regular file (a folder, a FIFO, a
 * device, a socket) without blocking on it: the open is O_NONBLOCK, the check fstat's.
 * `what` names the file's role in messages ("checkpoint", "IDX file", ...).
 * Returns the descriptor (blocking mode restored, O_CLOEXEC), or -1 with err:
 * "<what> <path>: <reason>". */
int base_open_input(const char *path, const char *what, char *err, size_t errlen);
/* The same as a stdio stream ("rb"). */
FILE *base_fopen_input(const char *path, const char *what, char *err, size_t errlen);
/* Reads the whole regular file into a malloc'd buffer of *len bytes (plus a NUL after
 * it), refusing files over max_bytes. NULL with err on any failure. */
void *base_read_file(const char *path, const char *what, size_t max_bytes, size_t *len,
                     char *err, size_t errlen);

/* ---- outputs ----------------------------------------------------------------------- */

/* Checks that path may be written as an output: if it exists it must be a regular file
 * (never a folder, device, FIFO or socket), and it must not be the same file (device and
 * inode) as any of the n inputs, nor lie inside any of the n_protect folders (a run's
 * own folder, say). 0, or -1 with err naming path and the reason. Inputs that do not
 * exist are skipped. */
int base_check_output(const char *path, const char *what, const char *const *inputs, int n,
                      const char *const *protect, int n_protect, char *err, size_t errlen);

/* A crash-safe output: bytes go to "<path>.tmp"; base_out_commit fsyncs it, renames it
 * over path and fsyncs the folder, so a crash leaves either the old file or the new
 * one, never a torn one. The first failed write sticks: later writes do nothing and
 * commit reports it. */
typedef struct {
    char path[4096];
    char tmp[4096 + 8];
    char what[64];
    FILE *f;
    int failed;  /* errno of the first failure, or 0 */
} base_out;

/* Opens "<path>.tmp" for writing (replacing a stale one). It does not check the target:
 * call base_check_output first when the path comes from a user. 0, or -1 with err. */
int base_out_open(base_out *o, const char *path, const char *what, char *err, size_t errlen);
/* Appends n bytes (nothing after a failure). Returns 0, or -1 once failed. */
int base_out_write(base_out *o, const void *p, size_t n);
/* printf into the output (same sticky failure). */
int base_out_printf(base_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Overwrites n bytes at byte offset off of what was written so far, for a header that
 * is only known at the end (a shard's count and checksum); off + n must not pass the end.
 * The same sticky failure. Returns 0, or -1 once failed. */
int base_out_pwrite(base_out *o, const void *p, size_t n, uint64_t off);
/* Flush, fsync, close, rename over path, fsync the folder. 0, or -1 with err (the
 * temporary file is removed and the old path left as it was). */
int base_out_commit(base_out *o, char *err, size_t errlen);
/* Gives up: closes and removes the temporary file; path is untouched. */
void base_out_abort(base_out *o);
/* One call for a whole buffer: open, write, commit. */
int base_write_file(const char *path, const char *what, const void *data, size_t n, char *err,
                    size_t errlen);

/* fsync of the folder holding path (or of path itself when it is a folder), so a rename
 * or a create in it survives a crash. 0, or -1 with err. */
int base_fsync_dir_of(const char *path, char *err, size_t errlen);

/* mkdir -p dir. 0, or -1 with err: "<what> <dir>: <reason>". */
int base_mkdir_p(const char *dir, const char *what, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
