/* conv_dnnl.c: the CPU convolution passes that oneDNN (Debian's libdnnl, its JIT kernels)
 * runs faster than im2col + OpenBLAS. Which passes those are depends on the machine's
 * vector width (tower_conv_dnnl_passes, conv_choose.c): with AVX2 only, the forward of the
 * 5x5 stride-1 layer (conv2) and the input gradient of every stride-1 layer (conv2-conv5);
 * with AVX-512, every pass of every layer (the forward, the weights' and bias' gradients,
 * and the input gradient at stride 1). Everything else stays on layers_cpu.c's im2col +
 * GEMM, which is faster there (docs/BENCH.md, "oneDNN").
 *
 * oneDNN wants its own blocked layouts (8 or 16 channels innermost), so each call
 * reorders the NCHW input and the weights in, runs the primitive on a chunk of images, and
 * reorders the result back out, adding it to what is there when the call accumulates (a
 * reorder with a sum post-op; the weights' gradient always adds, chunk after chunk).
 * Primitives are made once per tower and layer, at the first call, for the chunk size and
 * the last, shorter chunk. They run on as many threads as
 * the tower's OpenBLAS share (omp_set_num_threads in the calling thread, so each tower's
 * worker runs its own passes and no OpenMP pool spins beside OpenBLAS's threads). The
 * summation order is oneDNN's for a fixed thread count: runs repeat bit for bit. */
#include "tower/conv_dnnl.h"

#include "base/base.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Images a primitive runs at once: enough to fill the kernels' blocks, few enough that
 * the blocked copies (conv2: 0.5 MB an image in and out) stay near the caches. */
#define DNNL_CHUNK 8

/* One pass (the forward: src -> dst; the input gradient: diff dst -> diff src; the weights'
 * gradient: src and diff dst -> diff weights and diff bias) in oneDNN's layouts: its
 * input, weights (the weights' gradient: its second input, diff dst) and output memories,
 * the primitive, and the reorders in from the caller's layout and out to it
 * (r_out[accumulate]; the weights' gradient has only r_out[1]). */
typedef struct {
    dnnl_memory_t in, w, out, bias; /* bias: the weights' gradient's diff bias (plain) */
    dnnl_primitive_t prim, r_in, r_w, r_out[2];
} dnnl_pass;

enum { PASS_FWD = 0, PASS_BWD_DATA = 1, PASS_BWD_W = 2, PASSES = 3 };

/* one set of primitives for chunks of n images */
typedef struct {
    int n;
    dnnl_memory_t u_src, u_dst; /* the caller's NCHW chunk (handles set per call) */
    dnnl_pass pass[PASSES];     /* prim NULL: not made */
} dnnl_set;

struct tower_dnnl_conv {
    int Ci, H, W, Co, K, S, P, ldw, Ho, Wo, passes;
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_memory_t u_w, u_b, u_dw; /* the caller's weights, bias, weights' gradient */
    float *zero_bias;
    dnnl_set set[2]; /* DNNL_CHUNK images, and the last chunk's count (0: not made) */
};

static int dnnl_ok(dnnl_status_t s, const char *what)
{
    if (s == dnnl_success) return 1;
    fprintf(stderr, "twotower: oneDNN %s failed (status %d)\n", what, (int)s);
    return 0;
}

/* A failed call while running: the step cannot go on (like a failed CUDA launch). */
static void dnnl_must(dnnl_status_t s, const char *what)
{
    if (!dnnl_ok(s, what)) exit(3);
}

static int md_nchw(dnnl_memory_desc_t *md, int n, int c, int h, int w)
{
    dnnl_dims_t d = {n, c, h, w};
    return dnnl_ok(dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_nchw), "memory desc");
}

static int md_any(dnnl_memory_desc_t *md, int n, int c, int h, int w)
{
    dnnl_dims_t d = {n, c, h, w};
    return dnnl_ok(dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_format_tag_any),
                   "memory desc");
}

/* A memory object of md: with its own buffer (own = 1) or a handle set per call. */
static int mem(dnnl_memory_t *m, const dnnl_memory_desc_t *md, dnnl_engine_t eng, int own)
{
    return dnnl_ok(dnnl_memory_create(m, md, eng, own ? DNNL_MEMORY_ALLOCATE : DNNL_MEMORY_NONE),
                   "memory");
}

static int mem_of(dnnl_memory_t *m, const_dnnl_primitive_desc_t pd, dnnl_query_t what,
                  dnnl_engine_t eng)
{
    return mem(m, dnnl_primitive_desc_query_md(pd, what, 0), eng, 1);
}

/* A reorder from a's layout to b's; sum: b += a instead of b = a. */
static int reorder(dnnl_primitive_t *p, dnnl_memory_t a, dnnl_memory_t b, dnnl_engine_t eng,
                   int sum)
{
    const dnnl_memory_desc_t *ma, *mb;
    dnnl_memory_get_memory_desc(a, &ma);
    dnnl_memory_get_memory_desc(b, &mb);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    int ok = 1;
    if (sum) {
        ok = dnnl_ok(dnnl_primitive_attr_create(&attr), "attr") &&
             dnnl_ok(dnnl_post_ops_create(&po), "post-ops") &&
             dnnl_ok(dnnl_post_ops_append_sum(po, 1.0f), "sum post-op") &&
             dnnl_ok(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops");
    }
    dnnl_primitive_desc_t pd = NULL;
    ok = ok && dnnl_ok(dnnl_reorder_primitive_desc_create(&pd, ma, eng, mb, eng, attr),
                       "reorder desc");
    ok = ok && dnnl_ok(dnnl_primitive_create(p, pd), "reorder");
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}

static int pass_make(tower_dnnl_conv *c, dnnl_pass *p, const_dnnl_primitive_desc_t pd,
                     dnnl_query_t in_md, dnnl_query_t out_md, dnnl_memory_t user_in,
                     dnnl_memory_t user_out)
{
    return mem_of(&p->in, pd, in_md, c->eng) &&
           mem_of(&p->w, pd, dnnl_query_weights_md, c->eng) &&
           mem_of(&p->out, pd, out_md, c->eng) &&
           dnnl_ok(dnnl_primitive_create(&p->prim, pd), "convolution") &&
           reorder(&p->r_in, user_in, p->in, c->eng, 0) &&
           reorder(&p->r_w, c->u_w, p->w, c->eng, 0) &&
           reorder(&p->r_out[0], p->out, user_out, c->eng, 0) &&
           reorder(&p->r_out[1], p->out, user_out, c->eng, 1);
}

/* The weights' gradient: src from the caller's input, diff dst from its output gradient
 * (in `w`, reordered per chunk like `in`), diff weights added to the caller's. */
static int pass_make_w(tower_dnnl_conv *c, dnnl_pass *p, const_dnnl_primitive_desc_t pd,
                       dnnl_memory_t user_in, dnnl_memory_t user_dout)
{
    return mem_of(&p->in, pd, dnnl_query_src_md, c->eng) &&
           mem_of(&p->w, pd, dnnl_query_diff_dst_md, c->eng) &&
           mem_of(&p->out, pd, dnnl_query_diff_weights_md, c->eng) &&
           mem(&p->bias, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1), c->eng,
               1) &&
           dnnl_ok(dnnl_primitive_create(&p->prim, pd), "convolution weights") &&
           reorder(&p->r_in, user_in, p->in, c->eng, 0) &&
           reorder(&p->r_w, user_dout, p->w, c->eng, 0) &&
           reorder(&p->r_out[1], p->out, c->u_dw, c->eng, 1);
}

static int set_make(tower_dnnl_conv *c, dnnl_set *s, int n)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    dnnl_memory_desc_t us, ud, as, aw, ad, bd;
    dnnl_dims_t wd = {c->Co, c->Ci, c->K, c->K}, bdim = {c->Co};
    dnnl_dims_t str = {c->S, c->S}, pad = {c->P, c->P};
    /* the right padding oneDNN needs for the same output size as tower_conv_out */
    dnnl_dims_t padr = {(c->Ho - 1) * c->S + c->K - c->H - c->P,
                        (c->Wo - 1) * c->S + c->K - c->W - c->P};
    if (!md_nchw(&us, n, c->Ci, c->H, c->W) || !md_nchw(&ud, n, c->Co, c->Ho, c->Wo) ||
        !md_any(&as, n, c->Ci, c->H, c->W) || !md_any(&ad, n, c->Co, c->Ho, c->Wo) ||
        !dnnl_ok(dnnl_memory_desc_init_by_tag(&aw, 4, wd, dnnl_f32, dnnl_format_tag_any),
                 "memory desc") ||
        !dnnl_ok(dnnl_memory_desc_init_by_tag(&bd, 1, bdim, dnnl_f32, dnnl_x), "memory desc"))
        return 0;
    if (!mem(&s->u_src, &us, c->eng, 0) || !mem(&s->u_dst, &ud, c->eng, 0)) return 0;
    dnnl_convolution_desc_t fd;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL, wpd = NULL;
    int ok = dnnl_ok(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training,
                                                        dnnl_convolution_direct, &as, &aw, &bd,
                                                        &ad, str, pad, padr),
                     "convolution desc") &&
             dnnl_ok(dnnl_primitive_desc_create(&fpd, &fd, NULL, c->eng, NULL),
                     "convolution primitive desc");
    if (ok && (c->passes & TOWER_DNNL_FWD))
        ok = pass_make(c, &s->pass[PASS_FWD], fpd, dnnl_query_src_md, dnnl_query_dst_md,
                       s->u_src, s->u_dst);
    if (ok && (c->passes & TOWER_DNNL_BWD_DATA)) {
        dnnl_convolution_desc_t bdd;
        ok = dnnl_ok(dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct,
                                                              &as, &aw, &ad, str, pad, padr),
                     "convolution backward desc") &&
             dnnl_ok(dnnl_primitive_desc_create(&bpd, &bdd, NULL, c->eng, fpd),
                     "convolution backward primitive desc") &&
             pass_make(c, &s->pass[PASS_BWD_DATA], bpd, dnnl_query_diff_dst_md,
                       dnnl_query_diff_src_md, s->u_dst, s->u_src);
    }
    if (ok && (c->passes & TOWER_DNNL_BWD_W)) {
        dnnl_convolution_desc_t wdd;
        ok = dnnl_ok(dnnl_convolution_backward_weights_desc_init(&wdd, dnnl_convolution_direct,
                                                                 &as, &aw, &bd, &ad, str, pad,
                                                                 padr),
                     "convolution weights desc") &&
             dnnl_ok(dnnl_primitive_desc_create(&wpd, &wdd, NULL, c->eng, fpd),
                     "convolution weights primitive desc") &&
             pass_make_w(c, &s->pass[PASS_BWD_W], wpd, s->u_src, s->u_dst);
    }
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return ok;
}

static void set_free(dnnl_set *s)
{
    for (int k = 0; k < PASSES; k++) {
        dnnl_pass *q = &s->pass[k];
        dnnl_primitive_t p[] = {q->prim, q->r_in, q->r_w, q->r_out[0], q->r_out[1]};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            if (p[i]) dnnl_primitive_destroy(p[i]);
        dnnl_memory_t m[] = {q->in, q->w, q->out, q->bias};
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
            if (m[i]) dnnl_memory_destroy(m[i]);
    }
    if (s->u_src) dnnl_memory_destroy(s->u_src);
    if (s->u_dst) dnnl_memory_destroy(s->u_dst);
    memset(s, 0, sizeof *s);
}

void tower_dnnl_conv_free(tower_dnnl_conv *c)
{
    if (!c) return;
    for (int i = 0; i < 2; i++) set_free(&c->set[i]);
    if (c->u_w) dnnl_memory_destroy(c->u_w);
    if (c->u_b) dnnl_memory_destroy(c->u_b);
    if (c->u_dw) dnnl_memory_destroy(c->u_dw);
    if (c->st) dnnl_stream_destroy(c->st);
    if (c->eng) dnnl_engine_destroy(c->eng);
    free(c->zero_bias);
    free(c);
}

/* The tower's thread count for oneDNN: its share of OpenBLAS's (model.c sets it). */
static void threads_here(void)
{
    int n = openblas_get_num_threads();
    omp_set_num_threads(n > 0 ? n : 1);
}

tower_dnnl_conv *tower_dnnl_conv_new(int Ci, int H, int W, int Co, int K, int S, int P,
                                     int ldw, int passes)
{
    if (S != 1) passes &= ~TOWER_DNNL_BWD_DATA; /* only stride 1's is tested */
    int Ho = tower_conv_out(H, K, S, P), Wo = tower_conv_out(W, K, S, P);
    if (!passes || Ho <= 0 || Wo <= 0) return NULL;
    tower_dnnl_conv *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    *c = (tower_dnnl_conv){Ci, H, W, Co, K, S, P, ldw, Ho, Wo, passes};
    c->zero_bias = calloc((size_t)Co, sizeof(float));
    threads_here();
    dnnl_memory_desc_t uw, ub;
    dnnl_dims_t wd = {Co, Ci, K, K}, ws = {ldw, (dnnl_dim_t)K * K, K, 1}, bdim = {Co};
    int ok = c->zero_bias && dnnl_ok(dnnl_engine_create(&c->eng, dnnl_cpu, 0), "engine") &&
             dnnl_ok(dnnl_stream_create(&c->st, c->eng, dnnl_stream_default_flags), "stream") &&
             dnnl_ok(dnnl_memory_desc_init_by_strides(&uw, 4, wd, dnnl_f32, ws), "memory desc") &&
             dnnl_ok(dnnl_memory_desc_init_by_tag(&ub, 1, bdim, dnnl_f32, dnnl_x), "memory desc") &&
             mem(&c->u_w, &uw, c->eng, 0) && mem(&c->u_b, &ub, c->eng, 0) &&
             mem(&c->u_dw, &uw, c->eng, 0);
    if (!ok) {
        tower_dnnl_conv_free(c);
        return NULL;
    }
    return c;
}

/* The set for chunks of n images, made at first use (NULL when oneDNN refused it). A
 * third size (another batch size) replaces the slot that is not `keep`. */
static dnnl_set *set_for(tower_dnnl_conv *c, int n, const dnnl_set *keep)
{
    for (int i = 0; i < 2; i++)
        if (c->set[i].n == n) return &c->set[i];
    int i = c->set[0].n == 0 ? 0 : c->set[1].n == 0 ? 1 : &c->set[1] == keep ? 0 : 1;
    set_free(&c->set[i]);
    if (set_make(c, &c->set[i], n)) return &c->set[i];
    set_free(&c->set[i]);
    return NULL;
}

static void run(tower_dnnl_conv *c, dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *a,
                const char *what)
{
    dnnl_must(dnnl_primitive_execute(p, c->st, nargs, a), what);
}

static void run_reorder(tower_dnnl_conv *c, dnnl_primitive_t p, dnnl_memory_t from,
                        dnnl_memory_t to)
{
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    run(c, p, 2, a, "reorder");
}

/* bench's library accounting (tower_cpu_gemm_count): the call's time and the direct
 * convolution's multiply-adds */
static double count_start(void) { return tower_cpu_gemm_counting() ? base_now() : 0; }

static void count_end(const tower_dnnl_conv *c, double t0, int B)
{
    if (t0 <= 0) return;
    double madds = (double)B * c->Co * c->Ho * c->Wo * c->Ci * c->K * c->K;
    tower_cpu_gemm_add(base_now() - t0, madds);
}

/* The primitive sets a batch of B images runs on: full chunks of DNNL_CHUNK and the last,
 * shorter one, each made before anything is written, so a refusal (0) leaves the
 * caller's memory untouched. */
typedef struct {
    dnnl_set *full, *last;
} dnnl_chunks;

static int chunks_for(tower_dnnl_conv *c, int B, dnnl_chunks *ch)
{
    ch->full = B >= DNNL_CHUNK ? set_for(c, DNNL_CHUNK, NULL) : NULL;
    ch->last = B % DNNL_CHUNK ? set_for(c, B % DNNL_CHUNK, ch->full) : NULL;
    return !((B >= DNNL_CHUNK && !ch->full) || (B % DNNL_CHUNK && !ch->last));
}

/* The chunk that starts at image n0 of B: its set, and its image count in *n. */
static dnnl_set *chunk_at(const dnnl_chunks *ch, int B, int n0, int *n)
{
    *n = B - n0 < DNNL_CHUNK ? B - n0 : DNNL_CHUNK;
    return *n == DNNL_CHUNK ? ch->full : ch->last;
}

/* The forward or the input gradient over the batch, a chunk at a time: from (B, the
 * pass's input per image, nfrom reals) into to (nto reals an image), = or +=
 * (accumulate); b the forward's bias (NULL: none). -1 when oneDNN refused a chunk's
 * primitives (to untouched). */
static int run_pass(tower_dnnl_conv *c, int k, float *to, const float *from, const float *w,
                    const float *b, int B, int accumulate)
{
    dnnl_chunks ch;
    if (!chunks_for(c, B, &ch)) return -1;
    double t0 = count_start();
    threads_here();
    size_t nin = (size_t)c->Ci * c->H * c->W, nout = (size_t)c->Co * c->Ho * c->Wo;
    size_t nfrom = k == PASS_FWD ? nin : nout, nto = k == PASS_FWD ? nout : nin;
    dnnl_must(dnnl_memory_set_data_handle(c->u_w, (void *)w), "weights handle");
    if (k == PASS_FWD)
        dnnl_must(dnnl_memory_set_data_handle(c->u_b, (void *)(b ? b : c->zero_bias)), "bias");
    int weights_in = 0;
    for (int n0 = 0, n; n0 < B; n0 += n) {
        dnnl_set *s = chunk_at(&ch, B, n0, &n);
        dnnl_pass *p = &s->pass[k];
        dnnl_memory_t u_from = k == PASS_FWD ? s->u_src : s->u_dst;
        dnnl_memory_t u_to = k == PASS_FWD ? s->u_dst : s->u_src;
        if (!weights_in || n != DNNL_CHUNK) run_reorder(c, p->r_w, c->u_w, p->w);
        weights_in = n == DNNL_CHUNK;
        dnnl_must(dnnl_memory_set_data_handle(u_from, (void *)(from + (size_t)n0 * nfrom)),
                  "input handle");
        dnnl_must(dnnl_memory_set_data_handle(u_to, to + (size_t)n0 * nto), "output handle");
        run_reorder(c, p->r_in, u_from, p->in);
        if (k == PASS_FWD) {
            dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, p->in},
                                    {DNNL_ARG_WEIGHTS, p->w},
                                    {DNNL_ARG_BIAS, c->u_b},
                                    {DNNL_ARG_DST, p->out}};
            run(c, p->prim, 4, a, "convolution");
        } else {
            dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_DST, p->in},
                                    {DNNL_ARG_WEIGHTS, p->w},
                                    {DNNL_ARG_DIFF_SRC, p->out}};
            run(c, p->prim, 3, a, "convolution backward");
        }
        run_reorder(c, p->r_out[accumulate ? 1 : 0], p->out, u_to);
    }
    dnnl_must(dnnl_stream_wait(c->st), "stream wait");
    count_end(c, t0, B);
    return 0;
}

/* The weights' and bias' gradients over the batch, a chunk at a time: from the input (in)
 * and the output gradient (dout), each chunk's added to dw (ld ldw) and db (NULL: none).
 * -1 as run_pass. */
static int run_weights(tower_dnnl_conv *c, float *dw, float *db, const float *dout,
                       const float *in, int B)
{
    dnnl_chunks ch;
    if (!chunks_for(c, B, &ch)) return -1;
    double t0 = count_start();
    threads_here();
    size_t nin = (size_t)c->Ci * c->H * c->W, nout = (size_t)c->Co * c->Ho * c->Wo;
    dnnl_must(dnnl_memory_set_data_handle(c->u_dw, dw), "weights' gradient handle");
    for (int n0 = 0, n; n0 < B; n0 += n) {
        dnnl_set *s = chunk_at(&ch, B, n0, &n);
        dnnl_pass *p = &s->pass[PASS_BWD_W];
        dnnl_must(dnnl_memory_set_data_handle(s->u_src, (void *)(in + (size_t)n0 * nin)),
                  "input handle");
        dnnl_must(dnnl_memory_set_data_handle(s->u_dst, (void *)(dout + (size_t)n0 * nout)),
                  "output gradient handle");
        run_reorder(c, p->r_in, s->u_src, p->in);
        run_reorder(c, p->r_w, s->u_dst, p->w);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, p->in},
                                {DNNL_ARG_DIFF_DST, p->w},
                                {DNNL_ARG_DIFF_WEIGHTS, p->out},
                                {DNNL_ARG_DIFF_BIAS, p->bias}};
        run(c, p->prim, 4, a, "convolution weights");
        run_reorder(c, p->r_out[1], p->out, c->u_dw);
        if (db) {
            dnnl_must(dnnl_stream_wait(c->st), "stream wait");
            void *h = NULL;
            dnnl_must(dnnl_memory_get_data_handle(p->bias, &h), "bias handle");
            const float *chunk_db = h;
            for (int o = 0; o < c->Co; o++) db[o] += chunk_db[o];
        }
    }
    dnnl_must(dnnl_stream_wait(c->st), "stream wait");
    count_end(c, t0, B);
    return 0;
}

int tower_dnnl_conv_forward(tower_dnnl_conv *c, float *out, const float *in, const float *w,
                            const float *b, int B, int accumulate)
{
    if (!c || !(c->passes & TOWER_DNNL_FWD)) return -1;
    return run_pass(c, PASS_FWD, out, in, w, b, B, accumulate);
}

int tower_dnnl_conv_backward_data(tower_dnnl_conv *c, float *din, const float *dout,
                                  const float *w, int B, int accumulate)
{
    if (!c || !(c->passes & TOWER_DNNL_BWD_DATA)) return -1;
    return run_pass(c, PASS_BWD_DATA, din, dout, w, NULL, B, accumulate);
}

int tower_dnnl_conv_backward_weights(tower_dnnl_conv *c, float *dw, float *db, const float *dout,
                                     const float *in, int B)
{
    if (!c || !(c->passes & TOWER_DNNL_BWD_W)) return -1;
    return run_weights(c, dw, db, dout, in, B);
}

int tower_dnnl_avx512(void)
{
    static atomic_int known; /* 0: not asked yet; 1: no; 2: yes */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (!k) {
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        k = (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 2 : 1;
        atomic_store(&known, k);
    }
    return k == 2;
}

void tower_dnnl_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc)
{
    threads_here();
    dnnl_must(dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
                         ldc),
              "sgemm");
}
