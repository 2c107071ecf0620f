/* val_labels: the ground truth of ILSVRC-2012's flat validation folder (50,000 files
 * ILSVRC2012_val_NNNNNNNN.JPEG, no class sub-folders), so `prep` needs no hand
 * re-organisation. Three formats, told apart by their content:
 *   - the devkit's ILSVRC2012_validation_ground_truth.txt: line i holds the ILSVRC2012_ID
 *     (1..1000) of image i; the IDs map to WordNet IDs through the devkit's meta.mat
 *     (read with matio) or a text file of "ID WNID" lines;
 *   - Kaggle's LOC_val_solution.csv: "ImageId,PredictionString" rows whose first token is
 *     the image's WNID;
 *   - one WNID per line, line i for image i (the form several frameworks ship).
 * A WNID becomes a class index by its position among the sorted train class folders. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <matio.h>

#include "base/base.h"
#include "data/data_internal.h"

#define MAX_TRUTH_BYTES ((size_t)256 << 20)
#define MAX_IDS 100000

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const data_val_entry *)a)->name, ((const data_val_entry *)b)->name);
}

/* Index of wnid among the sorted class names, or -1. */
static int class_of(const char *wnid, char *const *classes, int nclasses)
{
    int lo = 0, hi = nclasses - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(wnid, classes[mid]);
        if (!c) return mid;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

static int push(data_val_labels *v, const char *name, int label, char *err, size_t errlen)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? 2 * v->cap : 1024;
        data_val_entry *ne = realloc(v->e, nc * sizeof *ne);
        if (!ne) return data_fail(err, errlen, "out of memory for the validation labels");
        v->e = ne;
        v->cap = nc;
    }
    data_val_entry *e = &v->e[v->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->label = label;
    return 0;
}

/* The next line of buf (NUL-terminated in place), or NULL at the end. */
static char *next_line(char **cur)
{
    char *s = *cur;
    if (!s || !*s) return NULL;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = 0;
        *cur = nl + 1;
    } else {
        *cur = s + strlen(s);
    }
    size_t k = strlen(s);
    while (k && (s[k - 1] == '\r' || s[k - 1] == ' ' || s[k - 1] == '\t')) s[--k] = 0;
    return s;
}

static int is_wnid(const char *s)
{
    if (s[0] != 'n' || strlen(s) != 9) return 0;
    for (int i = 1; i < 9; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return 1;
}

static void val_name(char *dst, size_t n, long i) { snprintf(dst, n, "ILSVRC2012_val_%08ld", i); }

/* ID -> WNID from the devkit's meta.mat: the struct array `synsets`, whose leaf entries
 * carry ILSVRC2012_ID 1..1000 and their WNID. ids[k] = WNID of ID k (k >= 1). */
static int read_meta_mat(const char *path, char (*ids)[16], int max_id, char *err, size_t errlen)
{
    char why[512];
    int fd = base_open_input(path, "synset map", why, sizeof why); /* regular file, no FIFO */
    if (fd < 0) return data_fail(err, errlen, "%s", why);
    close(fd);
    mat_t *mat = Mat_Open(path, MAT_ACC_RDONLY);
    if (!mat)
        return data_fail(err, errlen, "synset map %s: not a MATLAB file matio can read", path);
    matvar_t *syn = Mat_VarRead(mat, "synsets");
    int rc = 0;
    if (!syn || syn->class_type != MAT_C_STRUCT) {
        rc = data_fail(err, errlen, "synset map %s: no struct array 'synsets' (the devkit's "
                                    "data/meta.mat has one)", path);
        goto out;
    }
    size_t n = 1;
    for (int d = 0; d < syn->rank; d++) n *= syn->dims[d];
    for (size_t i = 0; i < n; i++) {
        matvar_t *id = Mat_VarGetStructFieldByName(syn, "ILSVRC2012_ID", i);
        matvar_t *wn = Mat_VarGetStructFieldByName(syn, "WNID", i);
        if (!id || !wn || !id->data || !wn->data || wn->class_type != MAT_C_CHAR) {
            rc = data_fail(err, errlen, "synset map %s: entry %zu lacks ILSVRC2012_ID or WNID",
                           path, i + 1);
            goto out;
        }
        double v;
        switch (id->class_type) {
        case MAT_C_DOUBLE: v = *(const double *)id->data; break;
        case MAT_C_UINT16: v = *(const uint16_t *)id->data; break;
        case MAT_C_UINT8: v = *(const uint8_t *)id->data; break;
        case MAT_C_INT32: v = *(const int32_t *)id->data; break;
        default:
            rc = data_fail(err, errlen, "synset map %s: entry %zu: ILSVRC2012_ID of an "
                                        "unexpected type", path, i + 1);
            goto out;
        }
        size_t len = wn->nbytes < 15 ? wn->nbytes : 15;
        char w[16];
        memcpy(w, wn->data, len);
        w[len] = 0;
        if (v >= 1 && v <= max_id && v == (int)v) snprintf(ids[(int)v], 16, "%s", w);
    }
out:
    if (syn) Mat_VarFree(syn);
    Mat_Close(mat);
    return rc;
}

/* ID -> WNID from a text file of "ID WNID [words...]" lines. */
static int read_id_text(const char *path, char (*ids)[16], int max_id, char *err, size_t errlen)
{
    char why[512];
    size_t len;
    char *buf = base_read_file(path, "synset map", MAX_TRUTH_BYTES, &len, why, sizeof why);
    if (!buf) return data_fail(err, errlen, "%s", why);
    char *cur = buf, *line;
    long ln = 0;
    int rc = 0;
    while ((line = next_line(&cur))) {
        ln++;
        if (!*line || *line == '#') continue;
        char w[64];
        long id;
        if (sscanf(line, "%ld %63s", &id, w) != 2 || id < 1 || id > max_id || !is_wnid(w)) {
            rc = data_fail(err, errlen, "synset map %s: line %ld: expected 'ID WNID' (an ID from "
                                        "1 to %d and an id like n01440764)", path, ln, max_id);
            break;
        }
        snprintf(ids[id], 16, "%s", w);
    }
    free(buf);
    return rc;
}

int data_val_labels_load(const char *truth, const char *synsets, char *const *classes,
                         int nclasses, data_val_labels *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char why[512];
    size_t len;
    char *buf = base_read_file(truth, "validation ground truth", MAX_TRUTH_BYTES, &len, why,
                               sizeof why);
    if (!buf) return data_fail(err, errlen, "%s", why);
    char *cur = buf, *line, (*ids)[16] = NULL;
    int rc = 0;
    long ln = 0;
    /* tell the format from the first non-empty line */
    char *probe = buf;
    while (*probe == '\n' || *probe == '\r') probe++;
    int csv = !strncmp(probe, "ImageId,", 8);
    int numeric = isdigit((unsigned char)*probe);
    if (numeric) {
        if (!synsets) {
            rc = data_fail(err, errlen, "validation ground truth %s holds ILSVRC2012_IDs: give "
                                        "the devkit's data/meta.mat (or an 'ID WNID' text file) "
                                        "with --val-synsets", truth);
            goto out;
        }
        ids = calloc(MAX_IDS + 1, sizeof *ids);
        if (!ids) {
            rc = data_fail(err, errlen, "out of memory");
            goto out;
        }
        const char *dot = strrchr(synsets, '.');
        rc = dot && !strcmp(dot, ".mat") ? read_meta_mat(synsets, ids, MAX_IDS, err, errlen)
                                         : read_id_text(synsets, ids, MAX_IDS, err, errlen);
        if (rc) goto out;
    }
    while ((line = next_line(&cur))) {
        ln++;
        if (!*line) continue;
        char name[64], wnid[64];
        if (csv) {
            if (ln == 1) continue; /* the header */
            char *comma = strchr(line, ',');
            if (!comma || comma - line >= (long)sizeof name ||
                sscanf(comma + 1, "%63s", wnid) != 1) {
                rc = data_fail(err, errlen, "validation ground truth %s: line %ld: expected "
                                            "'ImageId,WNID ...'", truth, ln);
                goto out;
            }
            memcpy(name, line, (size_t)(comma - line));
            name[comma - line] = 0;
        } else if (numeric) {
            int64_t id;
            if (base_parse_i64(line, &id) || id < 1 || id > MAX_IDS || !ids[id][0]) {
                rc = data_fail(err, errlen, "validation ground truth %s: line %ld: '%.40s' is "
                                            "not an ILSVRC2012_ID listed in %s", truth, ln, line,
                               synsets);
                goto out;
            }
            val_name(name, sizeof name, ln);
            snprintf(wnid, sizeof wnid, "%s", ids[id]);
        } else {
            if (sscanf(line, "%63s", wnid) != 1) continue;
            val_name(name, sizeof name, ln);
        }
        int c = class_of(wnid, classes, nclasses);
        if (c < 0) {
            rc = data_fail(err, errlen, "validation ground truth %s: line %ld: class %s (for %s) "
                                        "is not one of the %d train class folders", truth, ln,
                           wnid, name, nclasses);
            goto out;
        }
        if ((rc = push(out, name, c, err, errlen))) goto out;
    }
    if (out->n == 0) {
        rc = data_fail(err, errlen, "validation ground truth %s: no entries", truth);
        goto out;
    }
    qsort(out->e, out->n, sizeof *out->e, cmp_entry);
    for (size_t i = 1; i < out->n; i++)
        if (!strcmp(out->e[i - 1].name, out->e[i].name)) {
            rc = data_fail(err, errlen, "validation ground truth %s: %s is listed twice", truth,
                           out->e[i].name);
            goto out;
        }
    if (!(out->seen = calloc(out->n, 1))) rc = data_fail(err, errlen, "out of memory");
out:
    free(ids);
    free(buf);
    if (rc) data_val_labels_free(out);
    return rc;
}

int data_val_label_of(data_val_labels *v, const char *file_name)
{
    char key[64];
    const char *dot = strrchr(file_name, '.');
    size_t k = dot ? (size_t)(dot - file_name) : strlen(file_name);
    if (k >= sizeof key) return -1;
    memcpy(key, file_name, k);
    key[k] = 0;
    data_val_entry probe;
    snprintf(probe.name, sizeof probe.name, "%s", key);
    const data_val_entry *e = bsearch(&probe, v->e, v->n, sizeof *v->e, cmp_entry);
    if (!e) return -1;
    v->seen[e - v->e] = 1;
    return e->label;
}

void data_val_labels_free(data_val_labels *v)
{
    free(v->e);
    free(v->seen);
    memset(v, 0, sizeof *v);
}
