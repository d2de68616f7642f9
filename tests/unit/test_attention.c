/* test_attention.c — the flash attention kernels (codegen/lower_attention.c) against the
 * reference interpreter.
 *
 * Design: a case is an attention's shapes and options (sizes that are not multiples of
 * the blocks: 1, 7, 33, 100, 257; head dims 8…96 and dv ≠ dh; causal or not; f32 and
 * i32 key masks with fully-masked rows and padded tails (whole key blocks skipped); biases of several broadcast shapes; S = 0; T ≠ S).
 * For each, a graph q, k, v[, mask][, bias][, g] → attention and the four attention_grad
 * nodes is run through kiln_interp_run (the oracle), and the kernels under test are
 * built straight from the emitters — the forward (lower_attention_with_layout) and the
 * gradient group (lower_attention_grad_group_with_layout) with any subset of
 * {dq, dk, dv, dscores} — into their own module, optimised at O3 like the JIT's kernels
 * and called with output buffers pre-filled with NaN. Every case runs on 1 and on 2
 * threads and must give the same bits; the results must be within a tolerance of the
 * interpreter scaled by the output's largest magnitude (an omitted or doubled term is
 * far larger). Targets: the host (AVX-512 here, 16 lanes) and "haswell" (AVX2, 8
 * lanes), which the host can run, and plain x86-64 (SSE2, 4 lanes) once. The layout path reads q, k, v and g stored as
 * (B, T, H, d) and writes the results that way, against the interpreter's transposes.
 * The per-node pipeline (kiln_compile_graph, one kernel per attention_grad node) is
 * checked too. Every tensor the kernels read or write ends where a PROT_NONE page
 * begins, so reading or writing past one faults.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kiln/runtime.h"
#include "lower.h"
#include "test_rng.h"

/* ---- guarded buffers ------------------------------------------------------------------ */

/* `bytes` ending exactly where a PROT_NONE page begins, so that a kernel reading or
 * writing one element past the end faults. The buffers are only 4-byte aligned, as a
 * tensor inside a workspace may be. */
#define MAX_GUARDED 64
static struct guarded {
    void *p, *base;
    size_t len;
} g_guarded[MAX_GUARDED];

static void *guarded_alloc(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (bytes + page - 1) / page * page, len = data + page;
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(base != MAP_FAILED);
    assert_int_equal(mprotect(base + data, page, PROT_NONE), 0);
    void *p = base + data - (bytes / 4 * 4);
    for (int i = 0; i < MAX_GUARDED; i++)
        if (!g_guarded[i].p) {
            g_guarded[i] = (struct guarded){p, base, len};
            return p;
        }
    fail_msg("too many guarded buffers");
    return NULL;
}

static void guarded_free(void *p)
{
    if (!p) return;
    for (int i = 0; i < MAX_GUARDED; i++)
        if (g_guarded[i].p == p) {
            munmap(g_guarded[i].base, g_guarded[i].len);
            g_guarded[i].p = NULL;
            return;
        }
    fail_msg("not a guarded buffer");
}

/* ---- the JIT ------------------------------------------------------------------------- */

static kiln_target g_host, g_haswell, g_sse;
static LLVMOrcLLJITRef g_jit;
static int g_next;

static void check_error(LLVMErrorRef e)
{
    if (!e) return;
    char *msg = LLVMGetErrorMessage(e);
    fail_msg("LLVM: %s", msg);
    LLVMDisposeErrorMessage(msg);
}

static int setup(void **state)
{
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_target_host(&g_host, &d) && kiln_target_for(&g_haswell, "haswell", "+avx2,+fma", &d) &&
              kiln_target_for(&g_sse, "x86-64", "+sse2", &d);
    kiln_diags_free(&d);
    if (!ok || g_haswell.vector_floats != 8 || g_sse.vector_floats != 4) return -1;
    if (LLVMOrcCreateLLJIT(&g_jit, NULL)) return -1;
    LLVMOrcDefinitionGeneratorRef gen;
    if (LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(g_jit), NULL, NULL))
        return -1;
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(g_jit), gen);
    LLVMErrorRef err = kiln_jit_define_runtime(g_jit); /* kiln_parallel_for */
    if (err) {
        LLVMConsumeError(err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    kiln_threads_set(1);
    LLVMOrcDisposeLLJIT(g_jit);
    kiln_target_free(&g_host);
    kiln_target_free(&g_haswell);
    kiln_target_free(&g_sse);
    return 0;
}

/* Builds one kernel with `emit` into a module of its own, checks and optimises it
 * (default<O3>, as the JIT does for kernels) and returns its address. */
typedef LLVMValueRef (*emit_fn)(kiln_cg *cg, void *user);

static void *jit_kernel(const kiln_target *t, emit_fn emit, void *user)
{
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    kiln_cg cg;
    cg_init_in_context(&cg, t, LLVMOrcThreadSafeContextGetContext(tsc), "test_attention");
    LLVMValueRef fn = emit(&cg, user);
    char name[32];
    snprintf(name, sizeof name, "kernel%d", g_next++);
    LLVMSetValueName2(fn, name, strlen(name));
    LLVMSetLinkage(fn, LLVMExternalLinkage);
    LLVMDisposeBuilder(cg.b);
    char *msg = NULL;
    if (LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg)) fail_msg("invalid module: %s", msg);
    LLVMDisposeMessage(msg);
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    check_error(LLVMRunPasses(cg.mod, "default<O3>", t->tm, opts));
    LLVMDisposePassBuilderOptions(opts);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(cg.mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    check_error(LLVMOrcLLJITAddLLVMIRModule(g_jit, LLVMOrcLLJITGetMainJITDylib(g_jit), tsm));
    LLVMOrcExecutorAddress addr = 0;
    check_error(LLVMOrcLLJITLookup(g_jit, &addr, name));
    return (void *)(uintptr_t)addr;
}

/* Calls void fn(ptr × n). */
static void call_kernel(void *fn, void **a, int n)
{
    typedef void *P;
    assert_true(n <= 16);
    void *x[16] = {0};
    memcpy(x, a, (size_t)n * sizeof *x);
    /* extra arguments are ignored by the callee (SysV: caller-cleaned, passed in order) */
    ((void (*)(P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P))fn)(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8],
                                                                 x[9], x[10], x[11], x[12], x[13], x[14], x[15]);
}

/* ---- a case -------------------------------------------------------------------------- */

enum mask_kind { MASK_NONE, MASK_F32, MASK_I32 };
enum bias_kind { BIAS_NONE, BIAS_ALIBI /* (H,T,S) */, BIAS_BATCH /* (B,1,1,S) */, BIAS_TS /* (T,S) */,
                 BIAS_FULL /* (B,H,T,S) */, BIAS_HEAD /* (H,1,1) */,
                 BIAS_SLOPES /* (H,1,1) ALiBi slopes: the op's alibi attribute, in-kernel */,
                 BIAS_REL /* (NB,H) T5 bucket embedding: the op's relative attribute, in-kernel */ };

typedef struct acase {
    int64_t B, H, T, S, dh, dv;
    bool causal;
    enum mask_kind mask;
    enum bias_kind bias;
} acase;

/* Attention dropout for the cases built while it is set (test_dropout): the attention
 * nodes get attn_dropout = p, the interpreter runs in training mode with seed
 * seed + step, and the kernels are built with the layout's train_dropout and called with
 * a pointer to step (the step counter) after their inputs. */
static struct {
    double p;
    uint64_t seed;
    float step;
} g_drop;

static attn_layout drop_layout(void)
{
    attn_layout l = {{0}, g_drop.p > 0, g_drop.seed, false, false, false, false};
    return l;
}

/* A case's graph: inputs, the attention node and its four gradient nodes. */
typedef struct agraph {
    acase c;
    kiln_graph g;
    kiln_diags d;
    uint32_t in[6], n_in;           /* q, k, v, [mask], [bias], g */
    uint32_t att, grad[KILN_WRT_COUNT];
    uint32_t lse, sgrad[KILN_WRT_COUNT]; /* attention_lse; the gradients given o and lse */
    void *data[6];
    void **values;                  /* the interpreter's, by node */
} agraph;

static void fail_with_diags(kiln_diags *d, const char *what)
{
    for (int i = 0; i < d->n; i++) print_error("%s: %s\n", what, d->items[i].message);
    fail_msg("%s failed", what);
}

static uint32_t add_node(agraph *a, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *at)
{
    uint32_t id = kiln_graph_add(&a->g, op, in, n_in, at, NULL, "test", &a->d);
    if (id == KILN_NONE) fail_with_diags(&a->d, "kiln_graph_add");
    return id;
}

static uint32_t add_input(agraph *a, int rank, const int64_t *dims)
{
    kiln_attrs at = {.dtype = KILN_F32, .rank = rank};
    memcpy(at.shape, dims, (size_t)rank * sizeof *dims);
    char name[16];
    snprintf(name, sizeof name, "x%u", a->n_in);
    at.name = name;
    return add_node(a, KILN_OP_INPUT, NULL, 0, &at);
}

static float *random_floats(rng *r, int64_t n, double scale)
{
    float *p = guarded_alloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(rng_normal(r) * scale);
    return p;
}

static int64_t numel_of(const agraph *a, uint32_t id) { return kiln_type_numel(&a->g.nodes[id].type); }

/* The forward's statistics and the gradients that read them: attention_lse over the
 * attention's n_att inputs, then attention_grad(q, k, v, [mask], [bias], o, lse, g) with
 * g = a->in[n_att]. */
static void add_stats_nodes(agraph *a, uint32_t n_att, kiln_attrs at)
{
    at.wrt = 0;
    a->lse = add_node(a, KILN_OP_ATTENTION_LSE, a->in, n_att, &at);
    uint32_t sin[8];
    memcpy(sin, a->in, n_att * sizeof *sin);
    sin[n_att] = a->att, sin[n_att + 1] = a->lse, sin[n_att + 2] = a->in[n_att];
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        at.wrt = w;
        a->sgrad[w] = add_node(a, KILN_OP_ATTENTION_GRAD, sin, n_att + 3, &at);
    }
}

/* Builds the graph with random data and runs the interpreter. */
static void agraph_init(agraph *a, const acase *c, rng *r)
{
    memset(a, 0, sizeof *a);
    a->c = *c;
    kiln_graph_init(&a->g, "attention");
    kiln_diags_init(&a->d);
    int64_t B = c->B, H = c->H, T = c->T, S = c->S;
    int64_t qd[4] = {B, H, T, c->dh}, kd[4] = {B, H, S, c->dh}, vd[4] = {B, H, S, c->dv}, gd[4] = {B, H, T, c->dv};
    a->in[a->n_in] = add_input(a, 4, qd), a->data[a->n_in++] = random_floats(r, B * H * T * c->dh, 1.0);
    a->in[a->n_in] = add_input(a, 4, kd), a->data[a->n_in++] = random_floats(r, B * H * S * c->dh, 1.0);
    a->in[a->n_in] = add_input(a, 4, vd), a->data[a->n_in++] = random_floats(r, B * H * S * c->dv, 1.0);
    kiln_attrs at = {.scalar = 1.0 / sqrt((double)(c->dh ? c->dh : 1)), .causal = c->causal};
    uint32_t mask_at = 0;
    if (c->mask != MASK_NONE) { /* 0/1 per (batch, key); batch 0 keeps nothing when B > 1 */
        int64_t md[2] = {B, S};
        float *m = guarded_alloc((size_t)(B * S) * sizeof *m);
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < S; j++) m[b * S + j] = (B > 1 && b == 0) ? 0.0f : (rng_next(r) % 4 != 0);
        if (B > 1) /* the last batch is padding after 5 keys: whole key blocks skipped */
            for (int64_t j = 5; j < S; j++) m[(B - 1) * S + j] = 0.0f;
        if (B == 1 && S > 1) m[0] = 0; /* causal: query 0 of batch 0 keeps nothing */
        mask_at = a->n_in;
        a->in[a->n_in] = add_input(a, 2, md), a->data[a->n_in++] = m;
        at.has_mask = true;
    }
    if (c->bias != BIAS_NONE) {
        int64_t bd[4];
        int rank;
        switch (c->bias) {
        case BIAS_ALIBI: rank = 3, bd[0] = H, bd[1] = T, bd[2] = S; break;
        case BIAS_BATCH: rank = 4, bd[0] = B, bd[1] = 1, bd[2] = 1, bd[3] = S; break;
        case BIAS_TS: rank = 2, bd[0] = T, bd[1] = S; break;
        case BIAS_FULL: rank = 4, bd[0] = B, bd[1] = H, bd[2] = T, bd[3] = S; break;
        case BIAS_REL: rank = 2, bd[0] = T > 40 ? 32 : 8, bd[1] = H; break; /* NB buckets */
        default: rank = 3, bd[0] = H, bd[1] = 1, bd[2] = 1; break; /* BIAS_HEAD, BIAS_SLOPES */
        }
        int64_t n = 1;
        for (int i = 0; i < rank; i++) n *= bd[i];
        float *b = random_floats(r, n, 1.0);
        if (c->bias == BIAS_ALIBI) /* −slope_h·|i − j| */
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < T; i++)
                    for (int64_t j = 0; j < S; j++)
                        b[(h * T + i) * S + j] = -(float)pow(2.0, -(double)(h + 1)) * (float)llabs(i - j);
        if (c->bias == BIAS_SLOPES) /* −slope_h; the kernel multiplies by |i − j| */
            for (int64_t h = 0; h < H; h++) b[h] = -(float)pow(2.0, -8.0 * (double)(h + 1) / (double)H);
        at.alibi = c->bias == BIAS_SLOPES;
        at.relative = c->bias == BIAS_REL;
        a->in[a->n_in] = add_input(a, rank, bd), a->data[a->n_in++] = b;
        at.has_bias = true;
    }
    uint32_t n_att = a->n_in;
    at.attn_dropout = g_drop.p;
    a->att = add_node(a, KILN_OP_ATTENTION, a->in, n_att, &at);
    at.stream = a->g.nodes[a->att].attrs.stream; /* the builder's; the gradients share it */
    a->in[a->n_in] = add_input(a, 4, gd), a->data[a->n_in++] = random_floats(r, B * H * T * c->dv, 1.0);
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        at.wrt = w;
        a->grad[w] = add_node(a, KILN_OP_ATTENTION_GRAD, a->in, a->n_in, &at);
    }
    add_stats_nodes(a, n_att, at);
    if (c->mask == MASK_I32) { /* the builder takes f32 masks; the kernels and the
                                  interpreter also read i32 ones */
        float *m = a->data[mask_at];
        int32_t *mi = guarded_alloc((size_t)(B * S) * sizeof *mi);
        for (int64_t i = 0; i < B * S; i++) mi[i] = m[i] != 0 ? (int32_t)(1 + i % 3) : 0;
        guarded_free(m);
        a->data[mask_at] = mi;
        a->g.nodes[a->in[mask_at]].type.dtype = KILN_I32;
    }
    a->values = calloc(a->g.n_nodes, sizeof *a->values);
    for (uint32_t i = 0; i < a->n_in; i++) a->values[a->in[i]] = a->data[i];
    kiln_graph_add_output(&a->g, "y", a->att);
    for (int w = 0; w < KILN_WRT_COUNT; w++) kiln_graph_add_output(&a->g, kiln_wrt_names[w], a->grad[w]);
    kiln_graph_add_output(&a->g, "lse", a->lse);
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        char name[16];
        snprintf(name, sizeof name, "stats_%s", kiln_wrt_names[w]);
        kiln_graph_add_output(&a->g, name, a->sgrad[w]);
    }
    bool training = g_drop.p > 0;
    if (!kiln_interp_run(&a->g, a->values, training, training ? g_drop.seed + (uint64_t)g_drop.step : 0, &a->d))
        fail_with_diags(&a->d, "kiln_interp_run");
}

static void agraph_free(agraph *a)
{
    for (uint32_t i = 0; i < a->n_in; i++) a->values[a->in[i]] = NULL;
    kiln_interp_free_values(&a->g, a->values);
    free(a->values);
    for (uint32_t i = 0; i < a->n_in; i++) guarded_free(a->data[i]);
    kiln_graph_free(&a->g);
    kiln_diags_free(&a->d);
}

static const char *case_str(const acase *c, char *buf, size_t size)
{
    static const char *masks[] = {"", " mask f32", " mask i32"};
    static const char *biases[] = {"", " bias (H,T,S)", " bias (B,1,1,S)", " bias (T,S)", " bias (B,H,T,S)", " bias (H,1,1)",
                                  " alibi slopes (H,1,1)", " relative buckets (NB,H)"};
    snprintf(buf, size, "B=%lld H=%lld T=%lld S=%lld dh=%lld dv=%lld%s%s%s", (long long)c->B, (long long)c->H,
             (long long)c->T, (long long)c->S, (long long)c->dh, (long long)c->dv, c->causal ? " causal" : "",
             masks[c->mask], biases[c->bias]);
    return buf;
}

/* got vs the interpreter's want: |got − want| ≤ tol·(max |want| + 1e-3) elementwise;
 * infinities (the lse of a query with no key) must be equal. */
static void compare(const acase *c, const char *what, const float *got, const float *want, int64_t n, double tol)
{
    double scale = 1e-3;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(want[i]) && fabs(want[i]) > scale) scale = fabs(want[i]);
    for (int64_t i = 0; i < n; i++) {
        bool ok = isnan(want[i])   ? isnan(got[i])
                  : isinf(want[i]) ? got[i] == want[i]
                                   : fabs((double)got[i] - want[i]) <= tol * scale;
        if (!ok) {
            char buf[200];
            fail_msg("%s, %s: element %lld of %lld: got %.9g, want %.9g (scale %.3g)", case_str(c, buf, sizeof buf),
                     what, (long long)i, (long long)n, got[i], want[i], scale);
        }
    }
}

static float *nan_buffer(int64_t n)
{
    float *p = guarded_alloc((size_t)n * sizeof *p);
    memset(p, 0xFF, (size_t)n * sizeof *p);
    return p;
}

/* Runs fn on 1 and on 2 threads with the outputs NaN-filled before each run; the two
 * runs' outputs must be bit-identical; the 2-thread outputs stay in outs. */
static void run_both(const acase *c, void *fn, void **args, int n_args, float **outs, const int64_t *sizes, int n_outs)
{
    float *first[KILN_WRT_COUNT];
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(kiln_threads_set(threads), 0);
        for (int o = 0; o < n_outs; o++) memset(outs[o], 0xFF, (size_t)sizes[o] * sizeof(float));
        call_kernel(fn, args, n_args);
        if (threads == 1)
            for (int o = 0; o < n_outs; o++) {
                first[o] = malloc((size_t)(sizes[o] ? sizes[o] : 1) * sizeof(float));
                memcpy(first[o], outs[o], (size_t)sizes[o] * sizeof(float));
            }
    }
    kiln_threads_set(1);
    for (int o = 0; o < n_outs; o++) {
        if (memcmp(first[o], outs[o], (size_t)sizes[o] * sizeof(float))) {
            char buf[200];
            fail_msg("%s: output %d differs between 1 and 2 threads", case_str(c, buf, sizeof buf), o);
        }
        free(first[o]);
    }
}

/* ---- the forward ---------------------------------------------------------------------- */

typedef struct fwd_emit {
    const agraph *a;
    const attn_layout *lay;
    bool has_scratch;
} fwd_emit;

static LLVMValueRef emit_forward(kiln_cg *cg, void *user)
{
    fwd_emit *e = user;
    const kiln_node *n = &e->a->g.nodes[e->a->att];
    unsigned n_ptrs = 1 + n->n_in + (e->has_scratch ? 1 : 0);
    lower_ctx c = {.cg = cg, .g = &e->a->g, .id = e->a->att, .node = n};
    c.fn = cg_kernel_begin(cg, "attention", cg->t_void, n_ptrs);
    c.out = LLVMGetParam(c.fn, 0);
    for (uint32_t i = 0; i < n->n_in; i++) c.in[i] = LLVMGetParam(c.fn, 1 + i);
    if (e->has_scratch) c.scratch = LLVMGetParam(c.fn, n_ptrs - 1);
    lower_attention_with_layout(&c, e->lay);
    LLVMBuildRetVoid(cg->b);
    return c.fn;
}

typedef struct fwd_group_emit {
    const agraph *a;
    bool has_scratch;
    const attn_layout *lay;
} fwd_group_emit;

static LLVMValueRef emit_forward_group(kiln_cg *cg, void *user)
{
    fwd_group_emit *e = user;
    return lower_attention_forward_group(cg, &e->a->g, e->a->att, (attn_fwd_want){true, true, true}, e->has_scratch,
                                         e->lay);
}

/* The forward kernel of case c on target t against the interpreter (alone, and writing
 * its copy and lse too). */
static void check_forward(const kiln_target *t, const acase *c, rng *r)
{
    agraph a;
    agraph_init(&a, c, r);
    const kiln_node *n = &a.g.nodes[a.att];
    int64_t scratch_bytes = attention_scratch_bytes(&a.g, n, t);
    fwd_emit e = {&a, NULL, scratch_bytes > 0};
    int64_t size = numel_of(&a, a.att);
    void *scratch = kiln_aligned_alloc((size_t)(scratch_bytes ? scratch_bytes : 64));
    void *args[16], *fn;
    int k = 0;
    if (g_drop.p == 0) { /* the table's kernel (it never drops) */
        fn = jit_kernel(t, emit_forward, &e);
        float *out = nan_buffer(size);
        args[k++] = out;
        for (uint32_t i = 0; i < n->n_in; i++) args[k++] = a.data[i];
        if (e.has_scratch) args[k++] = scratch;
        run_both(c, fn, args, k, &out, &size, 1);
        compare(c, "forward", out, a.values[a.att], size, 2e-5);
        guarded_free(out);
    }

    /* the forward writing out, its row-major copy o and lse together */
    attn_layout dl = drop_layout();
    fwd_group_emit ge = {&a, e.has_scratch, g_drop.p > 0 ? &dl : NULL};
    fn = jit_kernel(t, emit_forward_group, &ge);
    int64_t sizes[3] = {size, size, numel_of(&a, a.lse)};
    float *outs[3] = {nan_buffer(sizes[0]), nan_buffer(sizes[1]), nan_buffer(sizes[2])};
    k = 0;
    for (int o = 0; o < 3; o++) args[k++] = outs[o];
    for (uint32_t i = 0; i < n->n_in; i++) args[k++] = a.data[i];
    if (ge.lay) args[k++] = &g_drop.step;
    if (e.has_scratch) args[k++] = scratch;
    run_both(c, fn, args, k, outs, sizes, 3);
    compare(c, "forward (group)", outs[0], a.values[a.att], size, 2e-5);
    compare(c, "forward copy o", outs[1], a.values[a.att], size, 2e-5);
    compare(c, "lse", outs[2], a.values[a.lse], sizes[2], 2e-6);
    for (int o = 0; o < 3; o++) guarded_free(outs[o]);
    kiln_aligned_free(scratch);
    agraph_free(&a);
}

/* ---- the backward --------------------------------------------------------------------- */

typedef struct grad_emit {
    const agraph *a;
    uint32_t node_of_wrt[KILN_WRT_COUNT];
    const attn_layout *lay;
    bool has_scratch;
} grad_emit;

static LLVMValueRef emit_grad_group(kiln_cg *cg, void *user)
{
    grad_emit *e = user;
    return lower_attention_grad_group_with_layout(cg, &e->a->g, e->node_of_wrt, e->has_scratch, e->lay);
}

/* The gradient group for the wrt subset `subset` (bit w = wrt w): with the forward's
 * statistics as inputs (stats: a->sgrad, given the interpreter's o and lse) or without
 * (a->grad). */
static void check_grad_subset_of(const kiln_target *t, const agraph *a, unsigned subset, bool stats)
{
    attn_layout dl = drop_layout();
    grad_emit e = {a, {0}, g_drop.p > 0 ? &dl : NULL, false};
    const uint32_t *grad = stats ? a->sgrad : a->grad;
    for (int w = 0; w < KILN_WRT_COUNT; w++) e.node_of_wrt[w] = (subset >> w) & 1 ? grad[w] : KILN_NONE;
    int64_t scratch_bytes = attention_grad_group_scratch_bytes(&a->g, e.node_of_wrt, t, NULL);
    e.has_scratch = scratch_bytes > 0;
    void *fn = jit_kernel(t, emit_grad_group, &e);
    float *outs[KILN_WRT_COUNT];
    int64_t sizes[KILN_WRT_COUNT];
    int wrts[KILN_WRT_COUNT], n_outs = 0;
    void *args[16];
    int k = 0;
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        if (e.node_of_wrt[w] == KILN_NONE) continue;
        sizes[n_outs] = numel_of(a, a->grad[w]);
        outs[n_outs] = nan_buffer(sizes[n_outs]);
        wrts[n_outs] = w;
        args[k++] = outs[n_outs++];
    }
    const kiln_node *n = &a->g.nodes[grad[0]];
    for (uint32_t i = 0; i < n->n_in; i++) args[k++] = a->values[n->in[i]];
    void *scratch = kiln_aligned_alloc((size_t)(scratch_bytes ? scratch_bytes : 64));
    if (e.lay) args[k++] = &g_drop.step;
    if (e.has_scratch) args[k++] = scratch;
    run_both(&a->c, fn, args, k, outs, sizes, n_outs);
    for (int o = 0; o < n_outs; o++) {
        char what[64];
        snprintf(what, sizeof what, "d%s (subset %#x%s)", kiln_wrt_names[wrts[o]], subset, stats ? ", with o, lse" : "");
        compare(&a->c, what, outs[o], a->values[a->grad[wrts[o]]], sizes[o], 1e-4);
        guarded_free(outs[o]);
    }
    kiln_aligned_free(scratch);
}

static void check_grad_subset(const kiln_target *t, const agraph *a, unsigned subset)
{
#if defined(__SANITIZE_ADDRESS__)
    /* minutes under ASan: the recomputing path (hand-built graphs only) on small cases;
     * the path training uses, with the forward's o and lse, on every case */
    if (a->c.B * a->c.H * a->c.T * a->c.S > 20000) {
        check_grad_subset_of(t, a, subset, true);
        return;
    }
#endif
    check_grad_subset_of(t, a, subset, false);
    check_grad_subset_of(t, a, subset, true);
}

static void check_backward(const kiln_target *t, const acase *c, rng *r, unsigned subset)
{
    agraph a;
    agraph_init(&a, c, r);
    check_grad_subset(t, &a, subset);
    agraph_free(&a);
}

/* ---- tests --------------------------------------------------------------------------- */

#define ALL 0xFu

/* Odd sizes, every head dim, dv ≠ dh, masks and biases, on the host. */
static const acase sizes_cases[] = {
    {2, 3, 1, 1, 8, 8, false, MASK_NONE, BIAS_NONE},
    {1, 2, 7, 7, 16, 16, true, MASK_NONE, BIAS_NONE},
    {2, 2, 33, 33, 32, 32, true, MASK_F32, BIAS_NONE},
    {1, 3, 100, 100, 64, 64, true, MASK_NONE, BIAS_ALIBI},
    {1, 1, 257, 257, 96, 96, true, MASK_NONE, BIAS_NONE},
    {2, 2, 100, 33, 64, 24, false, MASK_I32, BIAS_BATCH},      /* cross attention, dv ≠ dh */
    {1, 2, 33, 100, 8, 40, true, MASK_F32, BIAS_TS},           /* T < S, causal: top-left */
    {2, 1, 7, 257, 32, 16, false, MASK_NONE, BIAS_FULL},
    {1, 2, 257, 7, 16, 96, true, MASK_I32, BIAS_HEAD},
    {3, 2, 1, 33, 96, 8, false, MASK_F32, BIAS_ALIBI},         /* T = 1 */
    {2, 2, 33, 0, 16, 16, false, MASK_F32, BIAS_NONE},         /* S = 0: no keys */
    {1, 1, 45, 45, 5, 3, true, MASK_NONE, BIAS_NONE},          /* head dims under a vector */
    {2, 3, 70, 70, 32, 32, true, MASK_F32, BIAS_SLOPES},       /* ALiBi in the kernel */
    {1, 2, 33, 100, 64, 64, false, MASK_NONE, BIAS_SLOPES},    /* ALiBi, T ≠ S, symmetric */
    {2, 1, 60, 60, 64, 64, false, MASK_F32, BIAS_REL},         /* T5 buckets in the kernel, log-spaced */
    {1, 2, 150, 150, 32, 32, true, MASK_NONE, BIAS_REL},       /* causal, distances past 128 */
    {2, 1, 33, 70, 8, 16, false, MASK_NONE, BIAS_REL},         /* T < S */
    {1, 2, 70, 33, 96, 96, true, MASK_I32, BIAS_REL},          /* T > S */
};

static void test_forward_sizes(void **state)
{
    rng r = {1};
    for (size_t i = 0; i < sizeof sizes_cases / sizeof *sizes_cases; i++) check_forward(&g_host, &sizes_cases[i], &r);
}

static void test_backward_sizes(void **state)
{
    rng r = {2};
    for (size_t i = 0; i < sizeof sizes_cases / sizeof *sizes_cases; i++)
        check_backward(&g_host, &sizes_cases[i], &r, ALL);
}

/* One query (a decode step: lower_attention_decode.c's decode_item): every mask and bias kind,
 * causal (key 0 only), head dims under, between and past whole vectors (136 > 8 vectors:
 * the tiles again), S past one key block of decode_item (1008 with AVX-512), AVX2. */
static void test_decode(void **state)
{
    rng r = {11};
    const acase cases[] = {
        {2, 3, 1, 40, 64, 64, false, MASK_F32, BIAS_NONE},
        {2, 2, 1, 33, 5, 19, false, MASK_I32, BIAS_SLOPES},
        {1, 2, 1, 1500, 64, 32, false, MASK_F32, BIAS_HEAD},
        {2, 2, 1, 70, 16, 16, true, MASK_NONE, BIAS_FULL},
        {1, 2, 1, 50, 136, 40, false, MASK_NONE, BIAS_BATCH},
        {2, 1, 1, 20, 32, 32, false, MASK_F32, BIAS_TS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_forward(&g_host, &cases[i], &r);
    check_forward(&g_haswell, &cases[1], &r);
    check_forward(&g_haswell, &cases[2], &r);
}

/* Every non-empty subset of {dq, dk, dv, dscores}, one kernel each, causal with a mask
 * and a bias; and each gradient alone without them. */
static void test_backward_subsets(void **state)
{
    rng r = {3};
    const acase cases[] = {
        {2, 2, 40, 40, 16, 24, true, MASK_F32, BIAS_ALIBI},
        {1, 2, 19, 35, 8, 8, false, MASK_NONE, BIAS_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        agraph a;
        agraph_init(&a, &cases[i], &r);
        for (unsigned subset = 1; subset <= ALL; subset++) {
            bool single = (subset & (subset - 1)) == 0;
#if defined(__SANITIZE_ADDRESS__)
            /* the kernels are not instrumented: under ASan, each gradient alone and all four
             * together; the pairs and triples run in the plain build (CI time, docs/testing.md) */
            if (!single && subset != ALL) continue;
#endif
            if (i == 0 || single) check_grad_subset(&g_host, &a, subset);
        }
        agraph_free(&a);
    }
}

/* AVX2: 8 lanes, blocks of 16. */
static void test_haswell(void **state)
{
    rng r = {4};
    const acase cases[] = {
        {1, 2, 7, 7, 8, 8, true, MASK_NONE, BIAS_NONE},
        {2, 2, 33, 33, 32, 32, true, MASK_F32, BIAS_ALIBI},
        {1, 2, 100, 57, 64, 20, false, MASK_I32, BIAS_BATCH},
        {1, 1, 17, 100, 96, 64, true, MASK_NONE, BIAS_TS},
        {2, 1, 5, 0, 16, 16, true, MASK_NONE, BIAS_NONE},
        {1, 2, 45, 60, 16, 16, false, MASK_F32, BIAS_REL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_forward(&g_haswell, &cases[i], &r);
        check_backward(&g_haswell, &cases[i], &r, ALL);
    }
    check_backward(&g_haswell, &cases[1], &r, 1u << KILN_WRT_Q | 1u << KILN_WRT_V);
}

/* SSE2 only (4 lanes, blocks of 8; masked loads and gathers become scalar code). */
static void test_sse(void **state)
{
    rng r = {9};
    const acase c = {2, 2, 21, 13, 12, 6, true, MASK_F32, BIAS_SLOPES};
    check_forward(&g_sse, &c, &r);
    check_backward(&g_sse, &c, &r, ALL);
}

/* Other ranks: q (…, H, T, d) with `rank` dims (the batch dims are 2, 3 and H = 2, T = S
 * = 21, d = 16) and a key mask (…, S) without the head dim: rank 3 has no batch dim and a
 * mask of (S), rank 5 two batch dims and a mask of (2, 3, S). */
static void check_rank(int rank, rng *r)
{
    agraph a;
    memset(&a, 0, sizeof a);
    kiln_graph_init(&a.g, "ranks");
    kiln_diags_init(&a.d);
    int64_t qd[5], md[5], n = 21 * 16, nm = 21;
    static const int64_t batch[2] = {2, 3};
    for (int d = 0; d < rank - 3; d++) qd[d] = md[d] = batch[d], n *= batch[d], nm *= batch[d];
    qd[rank - 3] = 2, n *= 2;
    qd[rank - 2] = 21, qd[rank - 1] = 16, md[rank - 3] = 21;
    for (int i = 0; i < 3; i++) a.in[a.n_in] = add_input(&a, rank, qd), a.data[a.n_in++] = random_floats(r, n, 1.0);
    float *m = guarded_alloc((size_t)nm * sizeof *m);
    for (int64_t i = 0; i < nm; i++) m[i] = (float)(rng_next(r) % 3 != 0);
    a.in[a.n_in] = add_input(&a, rank - 2, md), a.data[a.n_in++] = m;
    kiln_attrs at = {.scalar = 0.25, .causal = true, .has_mask = true};
    a.att = add_node(&a, KILN_OP_ATTENTION, a.in, a.n_in, &at);
    a.in[a.n_in] = add_input(&a, rank, qd), a.data[a.n_in++] = random_floats(r, n, 1.0);
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        at.wrt = w;
        a.grad[w] = add_node(&a, KILN_OP_ATTENTION_GRAD, a.in, a.n_in, &at);
    }
    add_stats_nodes(&a, 4, at);
    a.c = (acase){n / (2 * 21 * 16), 2, 21, 21, 16, 16, true, MASK_F32, BIAS_NONE};
    a.values = calloc(a.g.n_nodes, sizeof *a.values);
    for (uint32_t i = 0; i < a.n_in; i++) a.values[a.in[i]] = a.data[i];
    if (!kiln_interp_run(&a.g, a.values, false, 0, &a.d)) fail_with_diags(&a.d, "kiln_interp_run");

    int64_t scratch_bytes = attention_scratch_bytes(&a.g, &a.g.nodes[a.att], &g_host);
    fwd_emit e = {&a, NULL, scratch_bytes > 0};
    void *fn = jit_kernel(&g_host, emit_forward, &e);
    int64_t size = numel_of(&a, a.att);
    float *out = nan_buffer(size);
    void *scratch = kiln_aligned_alloc((size_t)scratch_bytes + 64);
    void *args[12] = {out, a.data[0], a.data[1], a.data[2], a.data[3], scratch};
    run_both(&a.c, fn, args, 6, &out, &size, 1);
    char what[32];
    snprintf(what, sizeof what, "rank-%d forward", rank);
    compare(&a.c, what, out, a.values[a.att], size, 2e-5);
    guarded_free(out);
    kiln_aligned_free(scratch);
    check_grad_subset(&g_host, &a, ALL);
    agraph_free(&a);
}

static void test_ranks(void **state)
{
    rng r = {5};
    check_rank(3, &r);
    check_rank(5, &r);
}

/* ---- operand strides ------------------------------------------------------------------- */

/* (B, H, R, d) row-major data → the same tensor stored as (B, R, H, d). */
static float *to_bthd(const float *x, int64_t B, int64_t H, int64_t R, int64_t d)
{
    float *y = guarded_alloc((size_t)(B * H * R * d) * sizeof *y);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < R; i++)
                for (int64_t e = 0; e < d; e++) y[((b * R + i) * H + h) * d + e] = x[((b * H + h) * R + i) * d + e];
    return y;
}

/* The strides of a (B, R, H, d) buffer read as (B, H, R, d): batch, head, row. */
static void bthd_strides(int64_t R, int64_t H, int64_t d, int64_t *s)
{
    s[0] = R * H * d, s[1] = d, s[2] = H * d;
}

/* Forward and backward with q, k, v, g, out, dq, dk, dv in (B, T, H, d) storage, the
 * mask with a row stride of S + 5 and dscores with a row stride of S + 3. */
static void check_layout(const kiln_target *t, const acase *c, rng *r)
{
    agraph a;
    agraph_init(&a, c, r);
    int64_t B = c->B, H = c->H, T = c->T, S = c->S, dh = c->dh, dv = c->dv;
    int64_t sq[3], sk[3], sv[3], so[3], sm[1] = {S + 5}, sd[3] = {H * T * (S + 3), T * (S + 3), S + 3};
    bthd_strides(T, H, dh, sq), bthd_strides(S, H, dh, sk), bthd_strides(S, H, dv, sv), bthd_strides(T, H, dv, so);
    attn_layout lay = {{0}, false, 0, false, false, false, false};
    lay.stride[ATTN_Q] = sq, lay.stride[ATTN_K] = sk, lay.stride[ATTN_V] = sv, lay.stride[ATTN_OUT] = so;
    lay.stride[ATTN_G] = so, lay.stride[ATTN_DQ] = sq, lay.stride[ATTN_DK] = sk, lay.stride[ATTN_DV] = sv;
    lay.stride[ATTN_MASK] = c->mask ? sm : NULL;
    lay.stride[ATTN_DSCORES] = sd;
    const kiln_node *n = &a.g.nodes[a.grad[0]];
    void *ins[6];
    ins[0] = to_bthd(a.data[0], B, H, T, dh);
    ins[1] = to_bthd(a.data[1], B, H, S, dh);
    ins[2] = to_bthd(a.data[2], B, H, S, dv);
    for (uint32_t i = 3; i + 1 < n->n_in; i++) ins[i] = a.data[i];
    if (c->mask) { /* the mask's rows padded to S + 5 */
        int32_t *m = guarded_alloc((size_t)(B * (S + 5)) * sizeof *m), *src = a.data[3];
        memset(m, 0, (size_t)(B * (S + 5)) * sizeof *m);
        for (int64_t b = 0; b < B; b++) memcpy(m + b * (S + 5), src + b * S, (size_t)S * sizeof *m);
        ins[3] = m;
    }
    ins[n->n_in - 1] = to_bthd(a.data[n->n_in - 1], B, H, T, dv);

    /* forward */
    int64_t scratch_bytes = attention_scratch_bytes(&a.g, &a.g.nodes[a.att], t);
    fwd_emit fe = {&a, &lay, scratch_bytes > 0};
    void *fn = jit_kernel(t, emit_forward, &fe);
    int64_t size = B * T * H * dv;
    float *out = nan_buffer(size);
    void *scratch = kiln_aligned_alloc((size_t)scratch_bytes + 64);
    void *args[16];
    int k = 0;
    args[k++] = out;
    for (uint32_t i = 0; i + 1 < n->n_in; i++) args[k++] = ins[i];
    if (fe.has_scratch) args[k++] = scratch;
    run_both(c, fn, args, k, &out, &size, 1);
    float *want = to_bthd(a.values[a.att], B, H, T, dv);
    compare(c, "forward, (B,T,H,d) layout", out, want, size, 2e-5);
    guarded_free(want);
    guarded_free(out);
    kiln_aligned_free(scratch);

    /* backward: all four in one kernel */
    grad_emit ge = {&a, {a.grad[0], a.grad[1], a.grad[2], a.grad[3]}, &lay, false};
    scratch_bytes = attention_grad_group_scratch_bytes(&a.g, ge.node_of_wrt, t, NULL);
    ge.has_scratch = scratch_bytes > 0;
    fn = jit_kernel(t, emit_grad_group, &ge);
    int64_t sizes[4] = {B * T * H * dh, B * S * H * dh, B * S * H * dv, B * H * T * (S + 3)};
    float *outs[4];
    for (int o = 0; o < 4; o++) outs[o] = nan_buffer(sizes[o]);
    scratch = kiln_aligned_alloc((size_t)scratch_bytes + 64);
    k = 0;
    for (int o = 0; o < 4; o++) args[k++] = outs[o];
    for (uint32_t i = 0; i < n->n_in; i++) args[k++] = ins[i];
    if (ge.has_scratch) args[k++] = scratch;
    run_both(c, fn, args, k, outs, sizes, 4);
    const int64_t rows[3] = {T, S, S}, cols[3] = {dh, dh, dv};
    for (int w = 0; w < 3; w++) {
        want = to_bthd(a.values[a.grad[w]], B, H, rows[w], cols[w]);
        compare(c, kiln_wrt_names[w], outs[w], want, sizes[w], 1e-4);
        guarded_free(want);
    }
    /* dscores: the padded rows' first S columns, and the padding untouched (NaN) */
    float *ds = malloc((size_t)(B * H * T * S + 1) * sizeof *ds);
    for (int64_t i = 0; i < B * H * T; i++) {
        memcpy(ds + i * S, outs[3] + i * (S + 3), (size_t)S * sizeof *ds);
        for (int64_t j = S; j < S + 3; j++) assert_true(isnan(outs[3][i * (S + 3) + j]));
    }
    compare(c, "scores", ds, a.values[a.grad[3]], B * H * T * S, 1e-4);
    free(ds);
    for (int o = 0; o < 4; o++) guarded_free(outs[o]);
    kiln_aligned_free(scratch);
    guarded_free(ins[0]), guarded_free(ins[1]), guarded_free(ins[2]), guarded_free(ins[n->n_in - 1]);
    if (c->mask) guarded_free(ins[3]);
    agraph_free(&a);
}

static void test_layout(void **state)
{
    rng r = {6};
    const acase cases[] = {
        {2, 3, 37, 37, 32, 32, true, MASK_F32, BIAS_NONE},
        {1, 2, 20, 45, 64, 24, false, MASK_I32, BIAS_ALIBI},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_layout(&g_host, &cases[i], &r);
    check_layout(&g_haswell, &cases[0], &r);
}

/* ---- the per-node pipeline --------------------------------------------------------------- */

/* kiln_compile_graph on the case's graph: the attention and one kernel per
 * attention_grad node (the table rows), planned scratch, NaN-filled workspace. */
static void test_pipeline(void **state)
{
    rng r = {7};
    const acase cases[] = {
        {2, 2, 50, 50, 32, 32, true, MASK_F32, BIAS_ALIBI},
        {1, 2, 37, 37, 16, 16, true, MASK_NONE, BIAS_SLOPES},
        {1, 3, 9, 70, 16, 8, false, MASK_NONE, BIAS_NONE},
        {1, 2, 37, 45, 16, 16, false, MASK_NONE, BIAS_REL},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const acase *c = &cases[ci];
        agraph a;
        agraph_init(&a, c, &r);
        kiln_compile_request req = {.g = &a.g, .inputs = a.in, .n_inputs = a.n_in, .name = "t"};
        kiln_compiled comp;
        if (!kiln_compile_graph(&req, &comp, &a.d)) fail_with_diags(&a.d, "kiln_compile_graph");
        void *ws = kiln_aligned_alloc((size_t)comp.workspace_bytes + 64);
        memset(ws, 0xFF, (size_t)comp.workspace_bytes);
        float *outs[10];
        int64_t sizes[10];
        void *args[24];
        int k = 0;
        args[k++] = NULL; /* no parameters */
        args[k++] = ws;
        for (uint32_t i = 0; i < a.n_in; i++) args[k++] = a.data[i];
        for (uint32_t o = 0; o < a.g.n_outputs; o++) {
            sizes[o] = numel_of(&a, a.g.outputs[o].node);
            outs[o] = nan_buffer(sizes[o]);
            args[k++] = outs[o];
        }
        assert_int_equal(k, comp.n_args);
        typedef void *P;
        kiln_threads_set(2);
        assert_true(k <= 18);
        int rc = ((int (*)(P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P))comp.entry)(
            args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10],
            args[11], args[12], args[13], args[14], args[15], args[16], args[17]);
        kiln_threads_set(1);
        assert_int_equal(rc, 0);
        for (uint32_t o = 0; o < a.g.n_outputs; o++) {
            const char *name = a.g.outputs[o].name;
            double tol = !strcmp(name, "y") ? 2e-5 : !strcmp(name, "lse") ? 2e-6 : 1e-4;
            compare(c, name, outs[o], a.values[a.g.outputs[o].node], sizes[o], tol);
            guarded_free(outs[o]);
        }
        kiln_aligned_free(ws);
        kiln_compiled_free(&comp);
        agraph_free(&a);
    }
}

/* ---- attention dropout ------------------------------------------------------------------ */

/* Dropout on the attention weights inside the kernels: forward and every gradient
 * against the interpreter in training mode (the same masks, so the same values), on odd
 * sizes with masks, ALiBi slopes, biases and T ≠ S, AVX-512 and AVX2; the dropout must
 * change the result; the IR text keeps it (print → parse → print). */
static void test_dropout(void **state)
{
    rng r = {10};
    const acase cases[] = {
        {2, 2, 33, 33, 32, 32, true, MASK_F32, BIAS_NONE},
        {1, 2, 50, 50, 64, 64, true, MASK_NONE, BIAS_SLOPES},
        {2, 2, 40, 33, 16, 24, false, MASK_I32, BIAS_BATCH},
        {1, 1, 45, 45, 8, 3, true, MASK_NONE, BIAS_TS},
        {1, 2, 7, 70, 96, 96, false, MASK_NONE, BIAS_REL},
    };
    g_drop.p = 0.3, g_drop.seed = 1000, g_drop.step = 7;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_forward(&g_host, &cases[i], &r);
        check_backward(&g_host, &cases[i], &r, ALL);
    }
    g_drop.step = 8; /* another step, other masks; and AVX2 */
    check_forward(&g_haswell, &cases[0], &r);
    check_backward(&g_haswell, &cases[0], &r, 1u << KILN_WRT_Q | 1u << KILN_WRT_V);

    /* the dropout does something: the same data without it gives another output */
    rng r1 = {11}, r2 = {11};
    agraph with, without;
    agraph_init(&with, &cases[0], &r1);
    char *text = kiln_graph_print(&with.g);
    assert_non_null(strstr(text, "dropout=0.3"));
    kiln_graph round;
    kiln_graph_init(&round, "round");
    if (!kiln_graph_parse(&round, text, "test", &with.d)) fail_with_diags(&with.d, "kiln_graph_parse");
    char *again = kiln_graph_print(&round);
    assert_string_equal(text, again);
    free(text), free(again);
    kiln_graph_free(&round);
    g_drop.p = 0;
    agraph_init(&without, &cases[0], &r2);
    int64_t n = numel_of(&with, with.att), differ = 0;
    const float *y1 = with.values[with.att], *y0 = without.values[without.att];
    for (int64_t i = 0; i < n; i++) differ += y1[i] != y0[i];
    assert_true(differ > n / 4); /* batch 0 keeps no key: its rows are 0 either way */
    agraph_free(&with);
    agraph_free(&without);
}

/* With p = 0 nothing changes: an attention whose dropout is 0 gives, in training mode,
 * the interpreter's inference bits, and a kernel built for a training step (layout
 * train_dropout) takes no step counter and writes the same bits as one built without. */
static void test_dropout_zero(void **state)
{
    rng r = {12};
    const acase c = {2, 2, 33, 40, 16, 16, true, MASK_F32, BIAS_SLOPES};
    g_drop.p = 0;
    agraph a;
    agraph_init(&a, &c, &r);
    void **train = calloc(a.g.n_nodes, sizeof *train);
    for (uint32_t i = 0; i < a.n_in; i++) train[a.in[i]] = a.data[i];
    if (!kiln_interp_run(&a.g, train, true, 1234, &a.d)) fail_with_diags(&a.d, "kiln_interp_run");
    for (uint32_t o = 0; o < a.g.n_outputs; o++) {
        uint32_t id = a.g.outputs[o].node;
        assert_memory_equal(train[id], a.values[id], (size_t)numel_of(&a, id) * sizeof(float));
    }
    for (uint32_t i = 0; i < a.n_in; i++) train[a.in[i]] = NULL;
    kiln_interp_free_values(&a.g, train);
    free(train);

    const kiln_node *n = &a.g.nodes[a.att];
    int64_t scratch_bytes = attention_scratch_bytes(&a.g, n, &g_host);
    void *scratch = kiln_aligned_alloc((size_t)scratch_bytes + 64);
    attn_layout lay = {{0}, true, 99, false, false, false, false};
    int64_t size = numel_of(&a, a.att), sizes[3] = {size, size, numel_of(&a, a.lse)};
    float *res[2][3];
    for (int v = 0; v < 2; v++) {
        fwd_group_emit ge = {&a, scratch_bytes > 0, v ? &lay : NULL};
        void *fn = jit_kernel(&g_host, emit_forward_group, &ge);
        void *args[16];
        int k = 0;
        for (int o = 0; o < 3; o++) args[k++] = res[v][o] = nan_buffer(sizes[o]);
        for (uint32_t i = 0; i < n->n_in; i++) args[k++] = a.data[i];
        args[k++] = scratch; /* no step counter before it */
        run_both(&c, fn, args, k, res[v], sizes, 3);
    }
    for (int o = 0; o < 3; o++) {
        assert_memory_equal(res[0][o], res[1][o], (size_t)sizes[o] * sizeof(float));
        guarded_free(res[0][o]), guarded_free(res[1][o]);
    }
    kiln_aligned_free(scratch);
    agraph_free(&a);
}

/* Whether some line of the assembly is a vector FMA on `reg` registers. */
static bool fma_line_with(const char *text, const char *reg)
{
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[256];
        if (len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = 0;
            if (strstr(buf, "vfmadd") && strstr(buf, reg)) return true;
        }
        line = end ? end + 1 : NULL;
    }
    return false;
}

/* The kernels are explicit 512-bit vector code on AVX-512 and 256-bit on AVX2. */
static void test_vector_code(void **state)
{
    rng r = {8};
    acase c = {1, 2, 64, 64, 64, 64, true, MASK_NONE, BIAS_NONE};
    for (int ti = 0; ti < 2; ti++) {
        const kiln_target *t = ti ? &g_haswell : &g_host;
        agraph a;
        agraph_init(&a, &c, &r);
        kiln_compile_request req = {.g = &a.g, .inputs = a.in, .n_inputs = a.n_in, .name = "t", .target = t,
                                    .emit_asm = true};
        kiln_compiled comp;
        if (!kiln_compile_graph(&req, &comp, &a.d)) fail_with_diags(&a.d, "kiln_compile_graph");
        const char *text = comp.asm_text;
        assert_non_null(text);
        assert_true(fma_line_with(text, t->vector_floats == 16 ? "zmm" : "ymm"));
        if (t->vector_floats == 8) assert_null(strstr(text, "zmm"));
        kiln_compiled_free(&comp);
        agraph_free(&a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_sizes),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_backward_sizes),
        cmocka_unit_test(test_backward_subsets),
        cmocka_unit_test(test_haswell),
        cmocka_unit_test(test_sse),
        cmocka_unit_test(test_ranks),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_vector_code),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_dropout_zero),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
