/* flags.c: the command-line flag engine (base.h, "command-line flags"). A command's table
 * is flattened (groups inlined, offsets made absolute) and checked, turned into
 * getopt_long's option array, and each value is converted and range-checked by its type. */
#include "base/base.h"

#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define PROG "twotower"
/* flags of one command, groups included: the option arrays live on the stack */
#define MAX_FLAGS 128
/* getopt_long's val for the long option of flat flag i: above every char, so a short
 * option's val (its character) never collides with one */
#define LONG_VAL0 256
#define MAX_DEPTH 4
#define HELP_COLUMN 22
#define LAST_COLUMN 88

typedef struct {
    const base_flag *f;
    size_t off; /* absolute offset in the options struct */
} flat_flag;

typedef struct {
    flat_flag v[MAX_FLAGS];
    int n;
} flat_table;

static int flatten(const base_flag *t, size_t base_off, int depth, flat_table *ft, char *err,
                   size_t errlen)
{
    if (!t) {
        base_errf(err, errlen, "flag table: a group without a table");
        return -1;
    }
    if (depth > MAX_DEPTH) {
        base_errf(err, errlen, "flag table: groups nested more than %d deep", MAX_DEPTH);
        return -1;
    }
    for (const base_flag *f = t; f->type != BASE_FLAG_TYPE_END; f++) {
        if (f->type == BASE_FLAG_TYPE_GROUP) {
            if (flatten(f->group, base_off + f->off, depth + 1, ft, err, errlen)) return -1;
            continue;
        }
        if (f->type < BASE_FLAG_TYPE_BOOL || f->type > BASE_FLAG_TYPE_CHOICE || !f->name ||
            !f->name[0] || f->name[0] == '-' || strchr(f->name, '=')) {
            base_errf(err, errlen, "flag table: entry %d has no valid name or type", ft->n);
            return -1;
        }
        if (!strcmp(f->name, "help") || f->short_name == 'h' || f->short_name == ':' ||
            f->short_name == '?' || f->short_name < 0) {
            base_errf(err, errlen, "flag table: --%s takes a name of --help's", f->name);
            return -1;
        }
        if ((f->type == BASE_FLAG_TYPE_INT && (f->lo < INT_MIN || f->hi > INT_MAX)) ||
            ((f->type == BASE_FLAG_TYPE_INT || f->type == BASE_FLAG_TYPE_I64) && f->lo > f->hi) ||
            (f->type == BASE_FLAG_TYPE_F64 && !(f->min <= f->max)) ||
            (f->type == BASE_FLAG_TYPE_CHOICE && (!f->choices || !f->choices[0]))) {
            base_errf(err, errlen, "flag table: --%s has an empty range or no choices", f->name);
            return -1;
        }
        for (int i = 0; i < ft->n; i++)
            if (!strcmp(ft->v[i].f->name, f->name) ||
                (f->short_name && ft->v[i].f->short_name == f->short_name)) {
                base_errf(err, errlen, "flag table: --%s is declared twice", f->name);
                return -1;
            }
        if (ft->n == MAX_FLAGS) {
            base_errf(err, errlen, "flag table: more than %d flags", MAX_FLAGS);
            return -1;
        }
        ft->v[ft->n++] = (flat_flag){f, base_off + f->off};
    }
    return 0;
}

/* Optional '+', then decimal digits only, within 64 unsigned bits. */
static int parse_u64(const char *s, uint64_t *out)
{
    const char *p = s + (*s == '+');
    if (!*p) return -1;
    uint64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The index of v in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *v)
{
    size_t n = strlen(v);
    int i = 0;
    for (const char *p = choices;; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return i;
        if (!bar) return -1;
        p = bar + 1;
    }
}

/* "a, b or c" for messages */
static void choice_list(const char *choices, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    const char *last = strrchr(choices, '|');
    for (const char *p = choices; *p && used + 1 < n; p++) {
        const char *piece = *p != '|' ? NULL : p == last ? " or " : ", ";
        int w = piece ? snprintf(buf + used, n - used, "%s", piece)
                      : snprintf(buf + used, n - used, "%c", *p);
        used += (size_t)w < n - used ? (size_t)w : n - used - 1;
    }
}

/* Converts and stores one value. 0, or -1 with err naming the flag and value. */
static int set_value(const flat_flag *ff, void *opts, const char *v, char *err, size_t errlen)
{
    const base_flag *f = ff->f;
    char *dst = (char *)opts + ff->off;
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    switch (f->type) {
    case BASE_FLAG_TYPE_BOOL:
        *(int *)dst = 1;
        return 0;
    case BASE_FLAG_TYPE_INT:
    case BASE_FLAG_TYPE_I64:
        if (base_parse_i64(v, &i) || i < f->lo || i > f->hi) {
            base_errf(err, errlen, "--%s '%s': expected a whole number from %" PRId64 " to %" PRId64,
                      f->name, v, f->lo, f->hi);
            return -1;
        }
        break;
    case BASE_FLAG_TYPE_U64:
        if (parse_u64(v, &u) || u > f->umax) {
            base_errf(err, errlen, "--%s '%s': expected a whole number from 0 to %" PRIu64,
                      f->name, v, f->umax);
            return -1;
        }
        break;
    case BASE_FLAG_TYPE_F64:
        if (base_parse_f64(v, &d) || !(d >= f->min && d <= f->max)) {
            base_errf(err, errlen, "--%s '%s': expected a number from %g to %g", f->name, v,
                      f->min, f->max);
            return -1;
        }
        break;
    case BASE_FLAG_TYPE_CHOICE:
        if ((i = choice_index(f->choices, v)) < 0) {
            char list[256];
            choice_list(f->choices, list, sizeof list);
            base_errf(err, errlen, "--%s '%s': expected %s", f->name, v, list);
            return -1;
        }
        break;
    default:
        break;
    }
    if (f->check) {
        char why[256] = "";
        if (f->check(v, why, sizeof why)) {
            base_errf(err, errlen, "--%s '%s': %s", f->name, v, why[0] ? why : "refused");
            return -1;
        }
    }
    switch (f->type) {
    case BASE_FLAG_TYPE_INT: *(int *)dst = (int)i; break;
    case BASE_FLAG_TYPE_I64: *(int64_t *)dst = i; break;
    case BASE_FLAG_TYPE_U64: *(uint64_t *)dst = u; break;
    case BASE_FLAG_TYPE_F64: *(double *)dst = d; break;
    case BASE_FLAG_TYPE_STR: *(const char **)dst = v; break;
    case BASE_FLAG_TYPE_CHOICE: *(int *)dst = f->values ? f->values[i] : (int)i; break;
    default: break;
    }
    return 0;
}

/* Index of the flat flag a short option's character belongs to, or -1. */
static int short_index(const flat_table *ft, int ch)
{
    for (int i = 0; i < ft->n; i++)
        if (ft->v[i].f->short_name && ft->v[i].f->short_name == ch) return i;
    return -1;
}

/* "--batch" for messages about flat flag i (every flag has its long name) */
static const char *flag_label(const flat_table *ft, int i, char *buf, size_t n)
{
    snprintf(buf, n, "--%s", ft->v[i].f->name);
    return buf;
}

/* The flat index getopt_long's val (or optopt) stands for, or -1. */
static int val_index(const flat_table *ft, int val)
{
    if (val >= LONG_VAL0 && val < LONG_VAL0 + ft->n) return val - LONG_VAL0;
    return val > 0 && val < LONG_VAL0 ? short_index(ft, val) : -1;
}

int base_flags_parse(const base_flags_cmd *cmd, void *opts, int argc, char **argv,
                     base_flags_out *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    flat_table ft;
    ft.n = 0;
    if (flatten(cmd->flags, 0, 0, &ft, err, errlen)) return BASE_FLAGS_ERROR;
    if (cmd->defaults) cmd->defaults(opts);

    struct option lo[MAX_FLAGS + 2];
    /* ':' first: a missing value returns ':' rather than '?' */
    char shorts[3 + 2 * MAX_FLAGS + 1] = ":h";
    size_t ns = 2;
    for (int i = 0; i < ft.n; i++) {
        const base_flag *f = ft.v[i].f;
        int has_arg = f->type == BASE_FLAG_TYPE_BOOL ? no_argument : required_argument;
        lo[i] = (struct option){f->name, has_arg, NULL, LONG_VAL0 + i};
        if (f->short_name) {
            shorts[ns++] = f->short_name;
            if (has_arg == required_argument) shorts[ns++] = ':';
        }
    }
    shorts[ns] = 0;
    lo[ft.n] = (struct option){"help", no_argument, NULL, 'h'};
    lo[ft.n + 1] = (struct option){NULL, 0, NULL, 0};

    /* getopt_long keeps its state in globals: optind = 0 re-initialises glibc's scanner
     * fully, opterr = 0 leaves every message to us; both are put back on the way out */
    int saved_opterr = opterr;
    opterr = 0;
    optind = 0;
    int rc = BASE_FLAGS_OK;
    char label[80];
    for (;;) {
        int ch = getopt_long(argc, argv, shorts, lo, NULL);
        if (ch == -1) break;
        if (ch == 'h') {
            rc = BASE_FLAGS_HELP;
            break;
        }
        const char *text = optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
        if (ch == ':') {
            int k = val_index(&ft, optopt);
            const char *arg = k >= 0 ? ft.v[k].f->arg : NULL;
            if (k >= 0 && !arg && ft.v[k].f->type == BASE_FLAG_TYPE_CHOICE)
                arg = ft.v[k].f->choices;
            base_errf(err, errlen, "%s needs a value%s%s%s",
                      k >= 0 ? flag_label(&ft, k, label, sizeof label) : text,
                      arg ? " (" : "", arg ? arg : "", arg ? ")" : "");
            rc = BASE_FLAGS_ERROR;
            break;
        }
        if (ch == '?') {
            int k = optopt >= LONG_VAL0 ? val_index(&ft, optopt) : -1;
            if (k >= 0)
                base_errf(err, errlen, "%s takes no value ('%s')",
                          flag_label(&ft, k, label, sizeof label), text);
            else if (optopt > 0 && optopt < LONG_VAL0)
                base_errf(err, errlen, "unknown flag '-%c'", optopt);
            else
                base_errf(err, errlen, "unknown flag '%s'", text);
            rc = BASE_FLAGS_ERROR;
            break;
        }
        int k = val_index(&ft, ch);
        if (k < 0) { /* cannot happen: every val getopt_long returns is one of ours */
            base_errf(err, errlen, "flag '%s' has no table entry", text);
            rc = BASE_FLAGS_ERROR;
            break;
        }
        if (ch >= LONG_VAL0) {
            /* getopt_long takes any unique prefix of a name; a flag is refused unless spelled
             * in full, so that adding a flag never changes what an old command line means.
             * The option's text is argv[optind - 1], or argv[optind - 2] when its value was
             * the next element. */
            const char *opt = optarg && optind >= 2 && optarg == argv[optind - 1]
                                  ? argv[optind - 2] : text;
            size_t len = strlen(ft.v[k].f->name);
            if (strncmp(opt, "--", 2) || strncmp(opt + 2, ft.v[k].f->name, len) ||
                (opt[2 + len] != 0 && opt[2 + len] != '=')) {
                base_errf(err, errlen, "unknown flag '%s' (flags are spelled in full: --%s?)",
                          opt, ft.v[k].f->name);
                rc = BASE_FLAGS_ERROR;
                break;
            }
        }
        if (set_value(&ft.v[k], opts, optarg, err, errlen)) {
            rc = BASE_FLAGS_ERROR;
            break;
        }
        out->given |= ft.v[k].f->given;
    }
    if (rc == BASE_FLAGS_OK) {
        int first = optind < argc ? optind : argc;
        out->pos = argv + first;
        out->npos = argc - first;
        if (out->npos < cmd->min_pos) {
            base_errf(err, errlen, "%s (it takes %s%d)",
                      out->npos ? "too few arguments" : "no arguments",
                      cmd->max_pos > cmd->min_pos ? "at least " : "", cmd->min_pos);
            rc = BASE_FLAGS_ERROR;
        } else if (out->npos > cmd->max_pos) {
            base_errf(err, errlen, "unexpected argument '%s'", out->pos[cmd->max_pos]);
            rc = BASE_FLAGS_ERROR;
        }
    }
    optind = 1;
    opterr = saved_opterr;
    return rc;
}

/* The default of flag f as opts (filled by defaults()) holds it, into buf ("" if none). */
static void default_text(const base_flag *f, const char *src, char *buf, size_t n)
{
    buf[0] = 0;
    if (f->deflt) {
        snprintf(buf, n, "default: %s", f->deflt);
        return;
    }
    if (!src) return;
    switch (f->type) {
    case BASE_FLAG_TYPE_INT: snprintf(buf, n, "default %d", *(const int *)src); break;
    case BASE_FLAG_TYPE_I64:
        snprintf(buf, n, "default %" PRId64, *(const int64_t *)src);
        break;
    case BASE_FLAG_TYPE_U64:
        snprintf(buf, n, "default %" PRIu64, *(const uint64_t *)src);
        break;
    case BASE_FLAG_TYPE_F64: snprintf(buf, n, "default %g", *(const double *)src); break;
    case BASE_FLAG_TYPE_STR:
        if (*(const char *const *)src) snprintf(buf, n, "default %s", *(const char *const *)src);
        break;
    case BASE_FLAG_TYPE_CHOICE: {
        int v = *(const int *)src, i = 0;
        for (const char *p = f->choices;; i++) {
            const char *bar = strchr(p, '|');
            int len = bar ? (int)(bar - p) : (int)strlen(p);
            if ((f->values ? f->values[i] : i) == v) {
                snprintf(buf, n, "default %.*s", len, p);
                break;
            }
            if (!bar) break;
            p = bar + 1;
        }
        break;
    }
    default: break;
    }
}

/* "  --name ARG" padded to the help column, then the help's lines, the default in
 * parentheses at the end (on a line of its own when it would pass the last column). */
static void usage_line(FILE *f, const char *left, const char *help, const char *def)
{
    int w = fprintf(f, "  %s", left);
    if (w >= HELP_COLUMN - 1) {
        fputc('\n', f);
        w = 0;
    }
    fprintf(f, "%*s", HELP_COLUMN - w, "");
    int col = HELP_COLUMN;
    for (const char *p = help ? help : ""; *p; p++) {
        fputc(*p, f);
        col++;
        if (*p == '\n') {
            fprintf(f, "%*s", HELP_COLUMN, "");
            col = HELP_COLUMN;
        }
    }
    if (def[0]) {
        int len = (int)strlen(def) + 3;
        if (col > HELP_COLUMN && col + len > LAST_COLUMN)
            fprintf(f, "\n%*s(%s)", HELP_COLUMN, "", def);
        else
            fprintf(f, "%s(%s)", col > HELP_COLUMN ? " " : "", def);
    }
    fputc('\n', f);
}

void base_flags_usage(FILE *f, const base_flags_cmd *cmd)
{
    fprintf(f, "usage: " PROG " %s %s\n", cmd->name, cmd->synopsis ? cmd->synopsis : "[flags]");
    if (cmd->about) fprintf(f, "%s", cmd->about);
    flat_table ft;
    ft.n = 0;
    char err[256];
    if (flatten(cmd->flags, 0, 0, &ft, err, sizeof err)) {
        fprintf(f, "(%s)\n", err);
        return;
    }
    /* the defaults as the command sets them, so the help cannot disagree with them */
    char *defs = NULL;
    if (cmd->defaults && cmd->opts_size) {
        defs = calloc(1, cmd->opts_size);
        if (defs) cmd->defaults(defs);
    }
    fprintf(f, "\nflags:\n");
    for (int i = 0; i < ft.n; i++) {
        const base_flag *fl = ft.v[i].f;
        char left[128], def[160];
        const char *arg = fl->arg ? fl->arg
                          : fl->type == BASE_FLAG_TYPE_CHOICE ? fl->choices
                          : fl->type == BASE_FLAG_TYPE_BOOL ? NULL : "X";
        if (fl->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", fl->short_name, fl->name,
                     arg ? " " : "", arg ? arg : "");
        else
            snprintf(left, sizeof left, "--%s%s%s", fl->name, arg ? " " : "", arg ? arg : "");
        default_text(fl, defs ? defs + ft.v[i].off : NULL, def, sizeof def);
        usage_line(f, left, fl->help, def);
    }
    usage_line(f, "-h, --help", "this text", "");
    free(defs);
}

int base_flags_cli(const base_flags_cmd *cmd, void *opts, int argc, char **argv,
                   base_flags_out *out)
{
    char err[1024];
    int rc = base_flags_parse(cmd, opts, argc, argv, out, err, sizeof err);
    if (rc == BASE_FLAGS_HELP) {
        base_flags_usage(stdout, cmd);
        return 0;
    }
    if (rc == BASE_FLAGS_ERROR) {
        fprintf(stderr, PROG " %s: %s (see " PROG " %s --help)\n", cmd->name, err, cmd->name);
        return 2;
    }
    return BASE_FLAGS_GO;
}
