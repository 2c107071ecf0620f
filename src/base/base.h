/* base: what every library of twotower needs and none of them owns. Public header of
 * src/base, the lowest library: tower, comm, data and train may include it; it includes
 * none of them. Holds the version, the monotonic clock, little-endian byte helpers, the
 * counter-based random numbers (also compiled by nvcc), strict number parsing, and the
 * file helpers every reader and writer goes through: one way to open an input (regular
 * files only, never blocking on a FIFO) and one way to write an output (checked against
 * the inputs, written to a temporary file, fsync'd and renamed into place), and the
 * command-line flag engine every subcommand parses its argv with (flags.c). */
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
/* ---- division by a run-time constant, 32 bits -------------------------------------
 * The GPU kernels (src/tower/cuda/kernels.h's tower_k_div, src/data's augmentation) index
 * their tensors in 32 bits and split an index into coordinates by sizes known only at run
 * time. A run-time division costs some 25 instructions (a 64-bit one about 30, or a
 * subroutine); a base_div, made once per launch on the host, divides by a multiply-high,
 * an add and a shift. For 1 <= d <= 2^31 and 0 <= n < 2^31, with s the least s such that
 * 2^s >= d and m = floor(2^32 (2^s - d) / d) + 1 (below 2^32):
 * floor(n / d) = (mulhi(n, m) + n) >> s. That is floor(n (m + 2^32) / 2^(32+s)), and
 * m + 2^32 exceeds 2^(32+s) / d by at most 1, so the quotient exceeds n / d by less than
 * n / 2^(32+s) < 1 / (2d): too little to pass the next integer, as n mod d <= d - 1
 * (Granlund and Montgomery's round-up method; mulhi(n, m) + n < 2^32 as mulhi <= n).
 * tests/cuda/test_kernels_host.c checks it over many divisors and numerators. */
typedef struct {
    uint32_t d, magic, shift;
} base_div;

/* d = 0, an empty axis, keeps d = 0 (the kernels' loop bounds are products of the d's)
 * with 1's magic number: nothing is ever divided by it. */
BASE_HD base_div base_div_of(uint32_t d)
{
    base_div v;
    uint32_t e = d ? d : 1, s = 0;
    while ((UINT64_C(1) << s) < e) s++;
    v.d = d;
    v.shift = s;
    v.magic = (uint32_t)(((UINT64_C(1) << 32) * ((UINT64_C(1) << s) - e)) / e + 1);
    return v;
}

/* n / v.d for n < 2^31 */
BASE_HD uint32_t base_div_quo(base_div v, uint32_t n)
{
#if defined(__CUDA_ARCH__)
    uint32_t hi = __umulhi(n, v.magic);
#else
    uint32_t hi = (uint32_t)(((uint64_t)n * v.magic) >> 32);
#endif
    return (hi + n) >> v.shift;
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

/* 1 when path (which need not exist yet) is dir or lies inside it, after links and "."
 * and ".." are resolved; 0 when not, or when dir does not exist; -1 when path cannot be
 * resolved (a loop, no permission). prep uses it to keep OUT out of SRC. */
int base_path_inside(const char *path, const char *dir);

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


/* ---- command-line flags (flags.c) ---------------------------------------------------
 * Every subcommand declares its flags once, in a table of base_flag: name, type, range,
 * destination (an offset into the command's options struct), help line, and the bits
 * it sets in base_flags_out.given (what `train --resume` compares with the checkpoint).
 * The parser (getopt_long), every value check and the --help text come from the table,
 * so they cannot drift apart. One rule for every command: integers are whole decimal
 * numbers (no fraction, hex, exponent, spaces or trailing junk), reals are decimal,
 * flags are spelled in full (no abbreviations), a flag the table lacks is refused. */

typedef enum {
    BASE_FLAG_TYPE_END = 0,    /* ends a table */
    BASE_FLAG_TYPE_BOOL = 1,   /* no value: stores 1 in an int */
    BASE_FLAG_TYPE_INT = 2,    /* int in [lo, hi] */
    BASE_FLAG_TYPE_I64 = 3,    /* int64_t in [lo, hi] */
    BASE_FLAG_TYPE_U64 = 4,    /* uint64_t in [0, umax] */
    BASE_FLAG_TYPE_F64 = 5,    /* finite double in [min, max] */
    BASE_FLAG_TYPE_STR = 6,    /* const char *, pointing into argv */
    BASE_FLAG_TYPE_CHOICE = 7, /* int: the index of the value in "a|b|c", or values[index] */
    BASE_FLAG_TYPE_GROUP = 8,  /* the flags of another table (group), whose offsets are
                                  relative to off: shared sets such as the placement flags */
} base_flag_type;

typedef struct base_flag {
    const char *name;       /* long name without the dashes: "batch" for --batch */
    base_flag_type type;
    size_t off;             /* offsetof the destination in the options struct */
    const char *arg;        /* the value's name in --help ("N", "DIR"); CHOICE: the choices */
    const char *help;       /* --help text; '\n' starts an indented continuation line */
    int64_t lo, hi;         /* INT, I64 */
    uint64_t umax;          /* U64 */
    double min, max;        /* F64 */
    const char *choices;    /* CHOICE: "gemm|cudnn" */
    const int *values;      /* CHOICE: stored instead of the index when not NULL */
    unsigned given;         /* OR'ed into base_flags_out.given when the flag appears */
    const char *deflt;      /* --help's default when the value does not say it ("all");
                               otherwise the help prints the value defaults() stores */
    char short_name;        /* 'o' for -o, or 0 */
    /* extra check of the value after its type's: 0, or -1 with the reason in err (the
       engine puts the flag and value in front) */
    int (*check)(const char *value, char *err, size_t errlen);
    const struct base_flag *group; /* GROUP: the shared table */
} base_flag;

/* The offset of field F of struct S, refused at compile time unless F has type T. */
#define BASE_FLAG_AT(T, S, F) _Generic(((S *)0)->F, T: offsetof(S, F))

/* Table entries: {BASE_FLAG_INT("batch", train_options, batch, 1, 4096, "N", "minibatch"),
 * .given = TRAIN_GIVEN_BATCH}; more designators (.given, .deflt, .short_name, .check,
 * .values) may follow the macro. A table ends with {0}. */
#define BASE_FLAG_BOOL(NAME, S, F, HELP)                                                   \
    .name = (NAME), .type = BASE_FLAG_TYPE_BOOL, .off = BASE_FLAG_AT(int, S, F), .help = (HELP)
#define BASE_FLAG_INT(NAME, S, F, LO, HI, ARG, HELP)                                       \
    .name = (NAME), .type = BASE_FLAG_TYPE_INT, .off = BASE_FLAG_AT(int, S, F), .lo = (LO),  \
    .hi = (HI), .arg = (ARG), .help = (HELP)
#define BASE_FLAG_I64(NAME, S, F, LO, HI, ARG, HELP)                                       \
    .name = (NAME), .type = BASE_FLAG_TYPE_I64, .off = BASE_FLAG_AT(int64_t, S, F),          \
    .lo = (LO), .hi = (HI), .arg = (ARG), .help = (HELP)
#define BASE_FLAG_U64(NAME, S, F, UMAX, ARG, HELP)                                         \
    .name = (NAME), .type = BASE_FLAG_TYPE_U64, .off = BASE_FLAG_AT(uint64_t, S, F),         \
    .umax = (UMAX), .arg = (ARG), .help = (HELP)
#define BASE_FLAG_F64(NAME, S, F, MIN, MAX, ARG, HELP)                                     \
    .name = (NAME), .type = BASE_FLAG_TYPE_F64, .off = BASE_FLAG_AT(double, S, F),           \
    .min = (MIN), .max = (MAX), .arg = (ARG), .help = (HELP)
#define BASE_FLAG_STR(NAME, S, F, ARG, HELP)                                               \
    .name = (NAME), .type = BASE_FLAG_TYPE_STR, .off = BASE_FLAG_AT(const char *, S, F),     \
    .arg = (ARG), .help = (HELP)
#define BASE_FLAG_CHOICE(NAME, S, F, CHOICES, HELP)                                        \
    .name = (NAME), .type = BASE_FLAG_TYPE_CHOICE, .off = BASE_FLAG_AT(int, S, F),           \
    .choices = (CHOICES), .help = (HELP)
#define BASE_FLAG_GROUP(TABLE, S, F)                                                       \
    .type = BASE_FLAG_TYPE_GROUP, .off = offsetof(S, F), .group = (TABLE)

/* One subcommand: its table and what its --help says around the flags. */
typedef struct {
    const char *name;        /* "train": messages begin "twotower train: " */
    const char *synopsis;    /* after "usage: twotower NAME ": "SRC OUT [flags]" */
    const char *about;       /* printed after the usage line ('\n' ended), or NULL */
    const base_flag *flags;  /* the table */
    int min_pos, max_pos;    /* positional arguments taken */
    size_t opts_size;        /* sizeof the options struct the table writes into */
    void (*defaults)(void *opts); /* fills it before parsing, and for --help's defaults */
} base_flags_cmd;

typedef struct {
    char **pos;      /* the positional arguments, in order (getopt_long moves them after
                        the flags inside argv) */
    int npos;
    unsigned given;  /* OR of the .given bits of the flags on the command line */
} base_flags_out;

enum {
    BASE_FLAGS_OK = 0,    /* parsed: go on */
    BASE_FLAGS_HELP = 1,  /* --help or -h was given: print base_flags_usage, exit 0 */
    BASE_FLAGS_ERROR = -1 /* err names the flag (or the argument) and the reason */
};

/* Fills opts with cmd->defaults, then parses argv[1..argc) (argv[0] is the command's
 * name) into it. getopt_long's state is reset on entry (optind = 0), so a process may
 * parse any number of times. BASE_FLAGS_OK, BASE_FLAGS_HELP, or BASE_FLAGS_ERROR with
 * err: an unknown or abbreviated flag, a missing value, a value of the wrong type or out
 * of range, a value the flag takes none of, a wrong number of positional arguments, or
 * a malformed table. */
int base_flags_parse(const base_flags_cmd *cmd, void *opts, int argc, char **argv,
                     base_flags_out *out, char *err, size_t errlen);

/* The --help text: usage line, about, then one line per flag with its value's name and
 * default. */
void base_flags_usage(FILE *f, const base_flags_cmd *cmd);

/* base_flags_parse for a main(): BASE_FLAGS_GO when the command should go on; otherwise
 * the exit code, after printing: 0 for --help (usage on stdout), 2 for an error
 * ("twotower NAME: <err>" on stderr). */
#define BASE_FLAGS_GO (-1)
int base_flags_cli(const base_flags_cmd *cmd, void *opts, int argc, char **argv,
                   base_flags_out *out);

#ifdef __cplusplus
}
#endif
#endif
