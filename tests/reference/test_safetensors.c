/* tests/reference: the bytes st_write puts on disk (header length, JSON, padding,
 * offsets, data), its refusals, and that export and dump write the tensors, shapes and
 * dropout masks the model really has (read back with st_read.h). The reader the Python
 * tools use is tested by test_safetensors_np.py. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_read.h"
#include "train/checkpoint.h"
#include "train/dump.h"
#include "train/export.h"
#include "train/safetensors.h"

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tt_st_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static char *path_in(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    b[len] = 0;
    *n = (size_t)len;
    return b;
}

TestSuite(safetensors, .init = make_tmpdir, .fini = remove_tmpdir);

static const float SA[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
static const double SD[3] = {3.141592653589793, -1e300, 0.5};
static const int32_t SI[5] = {7, -8, 9, INT32_MIN, INT32_MAX};
static const int64_t SL[1] = {INT64_MIN};

static int write_sample(const char *path)
{
    st_tensor t[4] = {
        {"a", "F32", 2, {2, 3}, SA},
        {"d \"quoted\"\\", "F64", 1, {3}, SD},  /* escapes survive the round trip */
        {"i", "I32", 1, {5}, SI},
        {"scalar", "I64", 0, {0}, SL},
    };
    const char *meta[] = {"seed", "42", "note", "line\nbreak\ttab", NULL};
    char err[256] = "";
    int rc = st_write(path, t, 4, meta, err, sizeof err);
    cr_assert_eq(rc, 0, "st_write: %s", err);
    return rc;
}

Test(safetensors, header_layout_and_bytes)
{
    const char *p = path_in("s.safetensors");
    write_sample(p);
    size_t n;
    unsigned char *b = slurp(p, &n);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)b[i] << (8 * i);
    cr_assert_eq(hlen % 8, 0, "header length %" PRIu64 " is not a multiple of 8", hlen);
    cr_assert_eq(b[8], '{');
    /* the JSON ends at the last '}' and only spaces pad it (fewer than 8) */
    size_t end = 8 + hlen;
    size_t last = end - 1;
    while (b[last] == ' ')
        last--;
    cr_assert_eq(b[last], '}');
    cr_assert_lt(end - 1 - last, 8u);
    char *h = strndup((const char *)b + 8, hlen);
    cr_assert(strstr(h, "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"),
              "%s", h);
    cr_assert(strstr(h, "\"d \\\"quoted\\\"\\\\\":{\"dtype\":\"F64\",\"shape\":[3],"
                        "\"data_offsets\":[24,48]}"), "%s", h);
    cr_assert(strstr(h, "\"i\":{\"dtype\":\"I32\",\"shape\":[5],\"data_offsets\":[48,68]}"));
    cr_assert(strstr(h, "\"scalar\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[68,76]}"));
    cr_assert(strstr(h, "\"__metadata__\":{\"seed\":\"42\",\"note\":\"line\\nbreak\\ttab\"}"));
    free(h);
    /* the data section is exactly the tensors, back to back, in the given order */
    cr_assert_eq(n, end + 76);
    cr_assert_eq(memcmp(b + end, SA, 24), 0);
    cr_assert_eq(memcmp(b + end + 24, SD, 24), 0);
    cr_assert_eq(memcmp(b + end + 48, SI, 20), 0);
    cr_assert_eq(memcmp(b + end + 68, SL, 8), 0);
    free(b);
    /* no .tmp left behind */
    cr_assert_neq(access(path_in("s.safetensors.tmp"), F_OK), 0);
}

Test(safetensors, writer_refuses_bad_input)
{
    char err[256];
    float x = 1;
    st_tensor dup[2] = {{"w", "F32", 1, {1}, &x}, {"w", "F32", 1, {1}, &x}};
    cr_assert_eq(st_write(path_in("x"), dup, 2, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "given twice"), "%s", err);
    st_tensor bad[1] = {{"w", "BF16", 1, {1}, &x}};
    cr_assert_eq(st_write(path_in("x"), bad, 1, NULL, err, sizeof err), -1);
    st_tensor neg[1] = {{"w", "F32", 1, {-1}, &x}};
    cr_assert_eq(st_write(path_in("x"), neg, 1, NULL, err, sizeof err), -1);
    const char *odd[] = {"k", NULL};
    st_tensor ok[1] = {{"w", "F32", 1, {1}, &x}};
    cr_assert_eq(st_write(path_in("x"), ok, 1, odd, err, sizeof err), -1);
    const char *latin1[] = {"note", "caf\xe9", NULL};
    cr_assert_eq(st_write(path_in("x"), ok, 1, latin1, err, sizeof err), -1);
    cr_assert(strstr(err, "not UTF-8"), "%s", err);
    st_tensor bad_name[1] = {{"w\xff", "F32", 1, {1}, &x}};
    cr_assert_eq(st_write(path_in("x"), bad_name, 1, NULL, err, sizeof err), -1);
    cr_assert_eq(st_write("/nonexistent-dir/x.safetensors", ok, 1, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "/nonexistent-dir/x.safetensors.tmp"), "%s", err);
    cr_assert_neq(access(path_in("x"), F_OK), 0);
}

/* ---- export and dump on a tiny net --------------------------------------------- */

static void tiny_model(model *m, int towers, int batch)
{
    tower_config cfg = {.towers = towers, .classes = 10, .batch = batch, .in_size = 67,
                        .in_ch = 3, .width_div = 16};
    model_placement place = {.cpu = 1, .ngpus = 0, .gpus = {0, 0}};
    char err[256] = "";
    cr_assert_eq(model_init(m, &cfg, &place, 5, err, sizeof err), 0, "%s", err);
}

Test(safetensors, export_writes_every_tower_layer)
{
    for (int towers = 1; towers <= 2; towers++) {
        model m;
        tiny_model(&m, towers, 1);
        const char *p = path_in("w.safetensors");
        char err[256] = "";
        cr_assert_eq(train_export_model(&m, p, err, sizeof err), 0, "%s", err);
        tt_st f;
        tt_st_open(&f, p);
        cr_assert_eq(tt_st_count(&f), (size_t)towers * 2 * TOWER_LAYERS);
        cr_assert_str_eq(tt_st_meta(&f, "format"), "twotower-weights");
        cr_assert_eq(atoi(tt_st_meta(&f, "towers")), towers);
        real *arena = malloc(sizeof(real) * m.plan.n_params);
        cr_assert_not_null(arena);
        for (int t = 0; t < towers; t++) {
            model_get_tensor(&m, t, 0, arena);
            for (int l = 0; l < TOWER_LAYERS; l++) {
                const tower_layer_shape *L = &m.plan.layer[l];
                char name[64];
                int nd;
                int64_t sh[8];
                size_t nb;
                snprintf(name, sizeof name, "tower%d.%s.weight", t, tower_plan_row(&m.plan, l)->name);
                const void *w = tt_st_tensor(&f, name, TRAIN_REAL_DTYPE, &nd, sh, &nb);
                cr_assert_eq(sh[0], L->out_ch);
                cr_assert_eq(sh[1], (int64_t)L->sources * L->in_ch);
                cr_assert_eq(nd, tower_plan_row(&m.plan, l)->kind == TOWER_CONV ? 4 : 2);
                cr_assert_eq(nb, sizeof(real) * L->w_count);
                cr_assert_eq(memcmp(w, arena + L->w_off, nb), 0, "%s", name);
                snprintf(name, sizeof name, "tower%d.%s.bias", t, tower_plan_row(&m.plan, l)->name);
                const void *b = tt_st_tensor(&f, name, TRAIN_REAL_DTYPE, &nd, sh, &nb);
                cr_assert(nd == 1 && sh[0] == L->out_ch, "%s", name);
                cr_assert_eq(nb, sizeof(real) * L->b_count);
                cr_assert_eq(memcmp(b, arena + L->b_off, nb), 0, "%s", name);
            }
        }
        free(arena);
        tt_st_close(&f);
        model_free(&m);
    }
}

Test(safetensors, dump_masks_are_the_ones_applied)
{
    model m;
    tiny_model(&m, 2, 3);
    const tower_config *c = &m.plan.cfg;
    size_t xn = (size_t)c->batch * c->in_ch * c->in_size * c->in_size;
    float *x = malloc(sizeof(float) * xn);
    int32_t labels[3];
    train_dump_batch(x, labels, c, 5);
    for (int b = 0; b < 3; b++)
        cr_assert(labels[b] >= 0 && labels[b] < c->classes);
    const char *p = path_in("d.safetensors");
    char err[256] = "";
    cr_assert_eq(train_dump_model(&m, x, labels, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.step, 0, "the dump must not take a step");
    tt_st f;
    tt_st_open(&f, p);
    cr_assert_str_eq(tt_st_meta(&f, "format"), "twotower-dump");
    int nd;
    int64_t sh[8];
    size_t nb;
    for (int t = 0; t < 2; t++)
        for (int l = 0; l < TOWER_LAYERS; l++) {
            if (!(m.plan.layer[l].drop_p > 0))
                continue;
            const tower_layer_shape *L = &m.plan.layer[l];
            size_t n = (size_t)c->batch * L->out_ch;
            float *mask = malloc(sizeof(float) * n);
            char name[64];
            snprintf(name, sizeof name, "mask.tower%d.%s", t, tower_plan_row(&m.plan, l)->name);
            const void *d = tt_st_tensor(&f, name, "F32", &nd, sh, &nb);
            cr_assert(nd == 2 && sh[0] == c->batch && sh[1] == L->out_ch, "%s", name);
            cr_assert_eq(nb, sizeof(float) * n);
            memcpy(mask, d, nb);
            /* what the tower really did: out = act * mask (act is after the ReLU) */
            const tower_acts *A = &m.tw[t].acts[l];
            size_t kept = 0, live = 0;
            for (size_t i = 0; i < n; i++) {
                cr_assert(mask[i] == 0.0f || mask[i] == 1.0f);
                cr_assert_eq(A->out[i], A->act[i] * (real)mask[i], "%s[%zu]", name, i);
                kept += mask[i] == 1.0f;
                live += A->act[i] > 0;
            }
            cr_assert_gt(live, n / 4, "too few live units to test the mask");
            cr_assert(kept > n / 4 && kept < 3 * n / 4, "%s keeps %zu of %zu", name, kept, n);
            free(mask);
        }
    /* logits in class order: class c of sample b is tower c/Vt's slot */
    float logits[3 * 10];
    const void *d = tt_st_tensor(&f, "logits", "F32", &nd, sh, &nb);
    cr_assert(nd == 2 && sh[0] == 3 && sh[1] == 10 && nb == sizeof logits);
    memcpy(logits, d, nb);
    int Vt = m.plan.vt;
    for (int b = 0; b < 3; b++)
        for (int cl = 0; cl < 10; cl++)
            cr_assert_eq(logits[b * 10 + cl],
                         m.tw[1].logits[(size_t)(cl / Vt) * 3 * Vt + (size_t)b * Vt + cl % Vt]);
    double loss;
    d = tt_st_tensor(&f, "loss", "F64", &nd, sh, &nb);
    cr_assert(nd == 1 && sh[0] == 1 && nb == sizeof loss);
    memcpy(&loss, d, nb);
    cr_assert_eq(loss, m.last_loss);
    tt_st_close(&f);
    free(x);
    model_free(&m);
}

Test(safetensors, export_from_checkpoint)
{
    tower_config cfg = {.towers = 2, .classes = 10, .batch = 4, .in_size = 67, .in_ch = 3,
                        .width_div = 16};
    tower_plan plan;
    char err[1024] = "";
    cr_assert_eq(tower_plan_make(&plan, &cfg, err, sizeof err), 0, "%s", err);
    real *params[2], *mom[2];
    for (int t = 0; t < 2; t++) {
        params[t] = malloc(sizeof(real) * plan.n_params);
        mom[t] = calloc(plan.n_params, sizeof(real));
        cr_assert(params[t] && mom[t]);
        tower_init_params(params[t], &plan, t, 77);
        params[t][3] = (real)(0.5 + t); /* not the init: the export must read the file */
    }
    train_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.cfg = cfg;
    meta.seed = meta.model_seed = 77;
    meta.step = meta.model_step = 12;
    meta.cursor = (train_cursor){77, 0, 48};
    train_sched_init(&meta.sched, 0.01, 4, 3, 0.001);
    train_nonfinite_init(&meta.nonfinite, 5);
    meta.stats = (train_ckpt_stats){1, 1, -1, 48, 1.0, 2.3, 1, 1};
    const char *dir = path_in("run");
    cr_assert_eq(train_ckpt_save_buffers(dir, &meta, plan.n_params,
                                         (const real *const *)params,
                                         (const real *const *)mom, 0, err, sizeof err),
                 0, "%s", err);
    char out[600];
    snprintf(out, sizeof out, "%s/w.safetensors", tmpdir);
    cr_assert_eq(train_export_checkpoint(dir, out, err, sizeof err), 0, "%s", err);
    tt_st f;
    tt_st_open(&f, out);
    cr_assert_eq(tt_st_count(&f), 2 * 2 * TOWER_LAYERS);
    cr_assert_str_eq(tt_st_meta(&f, "seed"), "77");
    cr_assert_str_eq(tt_st_meta(&f, "step"), "12");
    for (int t = 0; t < 2; t++) {
        const tower_layer_shape *L = &plan.layer[0];
        real *w = malloc(sizeof(real) * L->w_count);
        char name[64];
        int nd;
        int64_t sh[8];
        size_t nb;
        snprintf(name, sizeof name, "tower%d.conv1.weight", t);
        const void *d = tt_st_tensor(&f, name, TRAIN_REAL_DTYPE, &nd, sh, &nb);
        cr_assert_eq(nb, sizeof(real) * L->w_count);
        memcpy(w, d, nb);
        cr_assert_eq(memcmp(w, params[t] + L->w_off, sizeof(real) * L->w_count), 0);
        cr_assert_eq(w[3], (real)(0.5 + t));
        free(w);
    }
    tt_st_close(&f);

    /* a damaged checkpoint is refused and nothing is written */
    char ck[700];
    snprintf(ck, sizeof ck, "%s/ckpt/ckpt-00000012.ttc", dir);
    if (access(ck, F_OK) != 0) /* save may write into DIR itself */
        snprintf(ck, sizeof ck, "%s/ckpt-00000012.ttc", dir);
    FILE *fp = fopen(ck, "r+b");
    cr_assert_not_null(fp, "no checkpoint at %s", ck);
    fseek(fp, -5, SEEK_END);
    fputc(0x5a, fp);
    fclose(fp);
    snprintf(out, sizeof out, "%s/w2.safetensors", tmpdir);
    cr_assert_eq(train_export_checkpoint(ck, out, err, sizeof err), -1);
    cr_assert(strstr(err, "ckpt-00000012.ttc"), "%s", err);
    cr_assert_neq(access(out, F_OK), 0);
    for (int t = 0; t < 2; t++) {
        free(params[t]);
        free(mom[t]);
    }
}
