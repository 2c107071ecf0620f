/* util: small helpers every part of src/train shares: strict command-line numbers, the
 * err/errlen message convention, and creating a folder with its parents. */
#ifndef TRAIN_UTIL_H
#define TRAIN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The whole string as a number within [lo, hi], or -1 after one line on stderr naming
 * the subcommand (cmd, e.g. "train"), the flag and the bad value. */
int train_arg_i64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out);
int train_arg_int(const char *cmd, const char *flag, const char *s, int lo, int hi, int *out);
int train_arg_f64(const char *cmd, const char *flag, const char *s, double lo, double hi,
                  double *out);

/* vsnprintf into err when err is not NULL (the err/errlen convention). */
void train_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* mkdir -p dir. what names the folder's role in messages ("run folder", ...).
 * 0, or -1 with err: "<what> <dir>: <reason>". */
int train_mkdir_p(const char *dir, const char *what, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
