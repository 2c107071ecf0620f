/* test_flags: the command-line flag engine (src/base/flags.c) on a table with every type:
 * values land in their fields, one strict rule for numbers, unknown / abbreviated /
 * valueless flags and wrong positional counts are refused naming the flag, groups share
 * entries at an offset, given bits, repeated parses, and the generated --help. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

typedef struct {
    int a, b;
} pair;

typedef struct {
    int on, n, mode, views;
    int64_t big;
    uint64_t seed;
    double lr;
    const char *path, *out;
    pair g1, g2;
} opts;

static int no_x(const char *v, char *err, size_t errlen)
{
    if (strchr(v, 'x')) {
        base_errf(err, errlen, "no x allowed");
        return -1;
    }
    return 0;
}

static const base_flag pair_flags[] = {
    {BASE_FLAG_INT("a", pair, a, 0, 9, "N", "first"), .given = 1u << 4},
    {BASE_FLAG_BOOL("b", pair, b, "second")},
    {0}};

static const int view_values[] = {1, 10};

static const base_flag table[] = {
    {BASE_FLAG_BOOL("on", opts, on, "switch")},
    {BASE_FLAG_INT("n", opts, n, 1, 100, "N", "a count"), .given = 1u << 0},
    {BASE_FLAG_CHOICE("mode", opts, mode, "relu|tanh", "activation"), .given = 1u << 1},
    {BASE_FLAG_CHOICE("views", opts, views, "1|10", "views"), .values = view_values},
    {BASE_FLAG_I64("big", opts, big, 0, INT64_MAX / 2, "N", "a big count"), .deflt = "all"},
    {BASE_FLAG_U64("seed", opts, seed, UINT64_MAX, "S", "seed")},
    {BASE_FLAG_F64("lr", opts, lr, 1e-6, 10, "X", "rate\nsecond line"), .given = 1u << 2},
    {BASE_FLAG_STR("path", opts, path, "DIR", "a folder"), .check = no_x},
    {BASE_FLAG_STR("out", opts, out, "FILE", "output"), .short_name = 'o'},
    {BASE_FLAG_GROUP(pair_flags, opts, g2)},
    {0}};

static void defaults(void *p)
{
    opts *o = p;
    memset(o, 0, sizeof *o);
    o->n = 7;
    o->mode = 1;
    o->views = 1;
    o->seed = 3;
    o->lr = 0.01;
    o->path = "/data";
}

static const base_flags_cmd cmd = {"demo", "[flags] FILE...", "Parses flags.\n", table, 0, 3,
                                   sizeof(opts), defaults};

/* Parses the NULL-ended words after "demo". argv outlives the call: out->pos points
 * into it (until the next parse). */
static int parse(opts *o, base_flags_out *out, char *err, size_t errlen, const char **words)
{
    static char *argv[32];
    argv[0] = "demo";
    int argc = 1;
    while (*words && argc < 31) argv[argc++] = (char *)*words++;
    argv[argc] = NULL;
    return base_flags_parse(&cmd, o, argc, argv, out, err, errlen);
}

#define PARSE(o, out, err, ...) parse(o, out, err, sizeof err, (const char *[]){__VA_ARGS__, NULL})

Test(flags, values_land_in_their_fields)
{
    opts o;
    base_flags_out out;
    char err[512] = "";
    int rc = PARSE(&o, &out, err, "--on", "--n", "42", "--mode", "relu", "--views", "10",
                   "--big=12345678901", "--seed", "18446744073709551615", "--lr", "1e-3",
                   "--path", "/tmp", "-o", "x.bin", "--a", "5", "--b");
    cr_assert_eq(rc, BASE_FLAGS_OK, "%s", err);
    cr_assert_eq(o.on, 1);
    cr_assert_eq(o.n, 42);
    cr_assert_eq(o.mode, 0, "relu is choice 0");
    cr_assert_eq(o.views, 10, "values[] replaces the index");
    cr_assert_eq(o.big, 12345678901LL);
    cr_assert_eq(o.seed, UINT64_MAX);
    cr_assert_eq(o.lr, 1e-3);
    cr_assert_str_eq(o.path, "/tmp");
    cr_assert_str_eq(o.out, "x.bin");
    cr_assert_eq(o.g2.a, 5, "the group writes at its offset");
    cr_assert_eq(o.g2.b, 1);
    cr_assert_eq(o.g1.a, 0, "and nowhere else");
    cr_assert_eq(out.given, (1u << 0) | (1u << 1) | (1u << 2) | (1u << 4));
    cr_assert_eq(out.npos, 0);
}

Test(flags, defaults_then_positionals)
{
    opts o;
    base_flags_out out;
    char err[512] = "";
    cr_assert_eq(PARSE(&o, &out, err, "a.txt", "--n", "3", "b.txt", "--", "--on"),
                 BASE_FLAGS_OK, "%s", err);
    cr_assert_eq(o.n, 3);
    cr_assert_eq(o.on, 0, "after --, --on is an argument");
    cr_assert_eq(o.lr, 0.01, "untouched flags keep the defaults");
    cr_assert_eq(out.given, 1u << 0);
    cr_assert_eq(out.npos, 3);
    cr_assert_str_eq(out.pos[0], "a.txt");
    cr_assert_str_eq(out.pos[1], "b.txt");
    cr_assert_str_eq(out.pos[2], "--on");
}

/* Each bad command line is refused with BASE_FLAGS_ERROR and a message holding `want`. */
static void refused(const char *want, const char **words)
{
    opts o;
    base_flags_out out;
    char err[512] = "";
    int rc = parse(&o, &out, err, sizeof err, words);
    cr_expect_eq(rc, BASE_FLAGS_ERROR, "accepted %s %s", words[0], words[1] ? words[1] : "");
    cr_expect(strstr(err, want) != NULL, "'%s' lacks '%s'", err, want);
}
#define REFUSED(want, ...) refused(want, (const char *[]){__VA_ARGS__, NULL})

Test(flags, integers_are_whole_decimal_numbers)
{
    const char *bad[] = {"2.5", "0x10", "10k", " 3", "3 ", "1e2", "", "+", "010.", "0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        REFUSED("--n", "--n", bad[i]);
    REFUSED("from 1 to 100", "--n", "101");
    REFUSED("'2.5'", "--n", "2.5");
    REFUSED("--big", "--big", "-1");
    REFUSED("--seed", "--seed", "-1");
    REFUSED("--seed", "--seed", "18446744073709551616");
    REFUSED("--seed", "--seed", "0x10");
    REFUSED("--a", "--a", "1.0");
}

Test(flags, reals_choices_and_checks)
{
    REFUSED("--lr 'inf'", "--lr", "inf");
    REFUSED("--lr '0x1p-3'", "--lr", "0x1p-3");
    REFUSED("from 1e-06 to 10", "--lr", "11");
    REFUSED("expected relu or tanh", "--mode", "gelu");
    REFUSED("expected 1 or 10", "--views", "5");
    REFUSED("--path 'a/x': no x allowed", "--path", "a/x");
}

Test(flags, unknown_abbreviated_and_valueless)
{
    REFUSED("unknown flag '--bogus'", "--bogus");
    REFUSED("unknown flag '--bogus=1'", "--bogus=1");
    REFUSED("unknown flag '--se'", "--se", "5");  /* a prefix of --seed */
    REFUSED("unknown flag '--pat=a'", "--pat=a"); /* a prefix of --path */
    REFUSED("unknown flag '-q'", "-q");
    REFUSED("--n needs a value", "--n");
    REFUSED("--out needs a value (FILE)", "-o");
    REFUSED("--on takes no value", "--on=1");
    REFUSED("unexpected argument 'd'", "a", "b", "c", "d");
}

Test(flags, help_wins_and_parsing_repeats)
{
    opts o;
    base_flags_out out;
    char err[512] = "";
    cr_assert_eq(PARSE(&o, &out, err, "--n", "5", "--help"), BASE_FLAGS_HELP);
    cr_assert_eq(PARSE(&o, &out, err, "-h"), BASE_FLAGS_HELP);
    /* getopt_long's state is reset: the same words parse the same way again */
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(PARSE(&o, &out, err, "x", "--n", "9"), BASE_FLAGS_OK, "%s", err);
        cr_assert_eq(o.n, 9);
        cr_assert_eq(out.npos, 1);
    }
}

Test(flags, help_lists_every_flag_with_its_default)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    base_flags_usage(f, &cmd);
    fclose(f);
    const char *want[] = {"usage: twotower demo [flags] FILE...\nParses flags.\n",
                          "  --on                switch\n",
                          "  --n N               a count (default 7)\n",
                          "  --mode relu|tanh    activation (default tanh)\n",
                          "  --views 1|10        views (default 1)\n",
                          "  --big N             a big count (default: all)\n",
                          "  --seed S            seed (default 3)\n",
                          "  --lr X              rate\n                      second line "
                          "(default 0.01)\n",
                          "  --path DIR          a folder (default /data)\n",
                          "  -o, --out FILE      output\n",
                          "  --a N               first (default 0)\n",
                          "  -h, --help          this text\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(text, want[i]) != NULL, "help lacks '%s':\n%s", want[i], text);
    free(text);
}

Test(flags, malformed_tables_are_refused)
{
    static const base_flag twice[] = {{BASE_FLAG_BOOL("on", opts, on, "")},
                                      {BASE_FLAG_GROUP(pair_flags, opts, g1)},
                                      {BASE_FLAG_GROUP(pair_flags, opts, g2)},
                                      {0}};
    static const base_flag help[] = {{BASE_FLAG_BOOL("help", opts, on, "")}, {0}};
    static const base_flag range[] = {{BASE_FLAG_INT("n", opts, n, 5, 1, "N", "")}, {0}};
    const base_flag *bad[] = {twice, help, range};
    const char *want[] = {"--a is declared twice", "--help", "--n has an empty range"};
    for (int i = 0; i < 3; i++) {
        base_flags_cmd c = cmd;
        c.flags = bad[i];
        opts o;
        base_flags_out out;
        char err[256] = "";
        char *argv[] = {"demo", NULL};
        cr_expect_eq(base_flags_parse(&c, &o, 1, argv, &out, err, sizeof err), BASE_FLAGS_ERROR);
        cr_expect(strstr(err, want[i]) != NULL, "'%s' lacks '%s'", err, want[i]);
    }
}
