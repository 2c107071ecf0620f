/* util: what every subcommand of src/train shares: strict command-line numbers. (The
 * err/errlen formatter and mkdir -p are src/base's base_errf and base_mkdir_p.) */
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

#ifdef __cplusplus
}
#endif
#endif
