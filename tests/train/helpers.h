/* helpers.h: what the tests of tests/train share: a fresh temporary folder per test and
 * its removal. */
#ifndef TESTS_TRAIN_HELPERS_H
#define TESTS_TRAIN_HELPERS_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

/* $TMPDIR (or /tmp)/tt-TAG-XXXXXX, created; free() the result. */
static inline char *tt_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *p = malloc(4096);
    cr_assert_not_null(p);
    snprintf(p, 4096, "%s/tt-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    cr_assert_not_null(mkdtemp(p), "mkdtemp %s", p);
    return p;
}

/* rm -rf DIR */
static inline void tt_rmtree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

#endif
