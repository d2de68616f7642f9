/* test_kernels_mt.c — the threaded kernels: reductions, row kernels (softmax,
 * log_softmax, layernorm, cross_entropy and their gradients) and layout copies (transpose,
 * slice, broadcast, concat, gather, scatter_add, unslice) on shapes large enough to be
 * split across the runtime's thread pool.
 *
 * Design: each graph is compiled once (with its assembly kept) and run with 1, 2 and 3
 * threads; every output must be the same bits for every thread count, and the 1-thread
 * run must match the reference interpreter (exactly for layout ops). The assembly must
 * show that each kernel under test really took the threaded path (a `.part` function),
 * and, on an AVX-512 host, that the row kernels and transposes use zmm registers. Sizes
 * are odd on purpose (partial vectors, blocks and chunks at every edge).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "kiln/runtime.h"
#include "passes.h"
#include "test_graph.h"

/* ---- a graph under test (support/test_graph.h) with normal-ish random inputs ----------- */

typedef test_graph mt;

typedef struct tol {
    double rtol, atol;
    bool exact;
} tol;

static const tol EXACT = {0, 0, true};

static rng g_rng; /* the inputs' draws; reseeded by every mt_init */

static void mt_init(mt *t, uint64_t seed)
{
    test_graph_init(t, "t");
    g_rng.s = seed;
}

/* An input with the given data (taken over), or normal-ish random data when NULL. */
static uint32_t mt_input_data(mt *t, kiln_dtype dt, int rank, const int64_t *dims, void *data)
{
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= dims[d];
    if (!data) {
        data = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t i = 0; i < n; i++) {
            if (dt == KILN_I32) ((int32_t *)data)[i] = rng_int(&g_rng, -1000, 1000);
            else ((float *)data)[i] = (float)((rng_uniform(&g_rng) + rng_uniform(&g_rng) - 1.0) * 3.0);
        }
    }
    return test_graph_input(t, dt, rank, dims, data);
}
static uint32_t mt_input(mt *t, kiln_dtype dt, int rank, const int64_t *dims)
{
    return mt_input_data(t, dt, rank, dims, NULL);
}

/* i32 indices in [lo, hi] */
static uint32_t mt_indices(mt *t, int rank, const int64_t *dims, int lo, int hi)
{
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= dims[d];
    int32_t *v = malloc((size_t)(n ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) v[i] = rng_int(&g_rng, lo, hi);
    return mt_input_data(t, KILN_I32, rank, dims, v);
}

static int64_t out_bytes(const mt *t, uint32_t o)
{
    return kiln_type_numel(&t->g.nodes[t->g.outputs[o].node].type) * 4;
}

/* Runs the compiled entry with `threads` threads; outputs go to outs[o]. */
static void mt_run(mt *t, const kiln_compiled *c, int threads, void **outs)
{
    assert_int_equal(kiln_threads_set(threads), 0);
    assert_int_equal(test_graph_call(t, c, outs, NULL), 0);
    assert_int_equal(kiln_threads_set(1), 0);
}

static bool close_enough(float got, float want, tol tl)
{
    if (isnan(want)) return isnan(got);
    if (tl.exact) return memcmp(&got, &want, 4) == 0;
    if (isinf(want)) return got == want;
    return fabs((double)got - want) <= tl.atol + tl.rtol * fabs(want);
}

/* The assembly of function `name` (up to its .Lfunc_end), or NULL. */
static char *asm_function(const char *text, const char *name)
{
    char label[160];
    snprintf(label, sizeof label, "\n%s:", name);
    const char *p = strstr(text, label);
    if (!p) return NULL;
    const char *e = strstr(p, ".Lfunc_end");
    size_t n = e ? (size_t)(e - p) : strlen(p);
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* The name of the first `.part` function of a kernel of `op` ("k12_sum.rows.part"). */
static bool find_part(const char *text, const char *op, char *name, size_t size)
{
    char key[64];
    snprintf(key, sizeof key, "_%s.", op);
    for (const char *p = text; (p = strstr(p, key)) != NULL; p++) {
        const char *line = p;
        while (line > text && line[-1] != '\n') line--;
        const char *colon = strchr(p, ':'), *nl = strchr(p, '\n');
        if (line[0] != 'k' || !colon || (nl && colon > nl)) continue;
        size_t n = (size_t)(colon - line);
        if (n < 5 || n >= size || strncmp(colon - 5, ".part", 5) != 0) continue;
        memcpy(name, line, n);
        name[n] = 0;
        return true;
    }
    return false;
}

typedef struct expect {
    const char *threaded[8]; /* ops whose kernels must have a .part function */
    const char *zmm[8];      /* ops whose .part must use zmm registers (AVX-512 hosts) */
} expect;

/* Compile once; run with 1, 2, 3 threads: the same bits every time, and the interpreter's
 * values within tl. The assembly must not have the label `absent` (when not NULL: "_sum:"
 * means a sum kernel of its own). */
static void mt_check_absent(mt *t, tol tl, const expect *ex, const char *absent)
{
    kiln_target host;
    assert_true(kiln_target_host(&host, &t->d));
    kiln_compile_request req = {.g = &t->g, .inputs = t->inputs, .n_inputs = (uint32_t)t->n_inputs, .name = "t",
                                .emit_asm = true, .target = &host};
    kiln_compiled c;
    if (!kiln_compile_graph(&req, &c, &t->d)) test_graph_fail(t, "kiln_compile_graph");
    assert_non_null(c.asm_text);
    for (int i = 0; i < 8 && ex->threaded[i]; i++) {
        char name[128];
        if (!find_part(c.asm_text, ex->threaded[i], name, sizeof name))
            fail_msg("the %s kernel of graph %s is not split across threads", ex->threaded[i], kiln_graph_print(&t->g));
    }
    for (int i = 0; i < 8 && ex->zmm[i] && host.vector_floats == 16; i++) {
        char name[128];
        assert_true(find_part(c.asm_text, ex->zmm[i], name, sizeof name));
        char *body = asm_function(c.asm_text, name);
        assert_non_null(body);
        if (!strstr(body, "zmm")) fail_msg("%s has no 512-bit vector code", name);
        free(body);
    }

    if (absent && strstr(c.asm_text, absent)) fail_msg("the assembly has %s", absent);

    void *one[TEST_GRAPH_MAX], *more[TEST_GRAPH_MAX];
    mt_run(t, &c, 1, one);
    for (int threads = 2; threads <= 3; threads++) {
        mt_run(t, &c, threads, more);
        for (uint32_t o = 0; o < t->g.n_outputs; o++) {
            const kiln_node *n = &t->g.nodes[t->g.outputs[o].node];
            if (memcmp(one[o], more[o], (size_t)out_bytes(t, o)) != 0)
                fail_msg("output %u (%s) differs between 1 and %d threads", o, kiln_op_table[n->op].name, threads);
        }
        test_graph_outputs_free(t, more);
    }

    void **values = test_graph_interpret(t);
    for (uint32_t o = 0; o < t->g.n_outputs; o++) {
        const kiln_node *n = &t->g.nodes[t->g.outputs[o].node];
        const void *want = values[t->g.outputs[o].node];
        int64_t count = kiln_type_numel(&n->type);
        for (int64_t i = 0; i < count; i++) {
            bool ok = n->type.dtype == KILN_I32 ? ((const int32_t *)one[o])[i] == ((const int32_t *)want)[i]
                                                : close_enough(((const float *)one[o])[i], ((const float *)want)[i], tl);
            if (!ok) {
                char buf[160];
                fail_msg("output %u (%s %s) element %lld: got %.9g, want %.9g", o, kiln_op_table[n->op].name,
                         kiln_type_str(&n->type, buf, sizeof buf), (long long)i, ((const float *)one[o])[i],
                         ((const float *)want)[i]);
            }
        }
    }
    test_graph_outputs_free(t, one);
    test_graph_values_free(t, values);
    kiln_compiled_free(&c);
    kiln_target_free(&host);
}

static void mt_check(mt *t, tol tl, const expect *ex) { mt_check_absent(t, tl, ex, NULL); }

/* ---- reductions ------------------------------------------------------------------------------ */

typedef struct reduce_case {
    int rank;
    int64_t dims[4];
    int n_axes;
    int64_t axes[4];
    kiln_dtype dt;
} reduce_case;

/* Every way a reduction is split: rows (trailing axes), column blocks (leading axes, as in
 * bias gradients; a middle kept dim), fixed chunks with partials in scratch (a full sum, a
 * sum over leading axes into few results) */
static void test_reductions(void **state)
{
    static const reduce_case cases[] = {
        {3, {37, 61, 45}, 1, {2}, KILN_F32},       /* rows */
        {3, {37, 61, 45}, 2, {1, 2}, KILN_F32},    /* rows */
        {3, {37, 61, 45}, 1, {1}, KILN_F32},       /* rows, a kept last dim */
        {3, {37, 61, 45}, 1, {0}, KILN_F32},       /* column blocks */
        {3, {37, 61, 45}, 2, {0, 1}, KILN_F32},    /* column blocks of 45 */
        {3, {37, 61, 45}, 2, {0, 2}, KILN_F32},    /* blocks of a middle kept dim */
        {3, {37, 61, 45}, 3, {0, 1, 2}, KILN_F32}, /* chunks into a scalar */
        {2, {16007, 7}, 1, {0}, KILN_F32},         /* chunks into 7 results */
        {1, {70001}, 1, {0}, KILN_F32},            /* chunks into a scalar */
        {2, {3, 40001}, 1, {1}, KILN_F32},         /* three long rows */
        {4, {5, 3, 67, 131}, 2, {0, 1}, KILN_F32}, /* a bias gradient: sum over (B, T) */
        {3, {37, 61, 45}, 2, {0, 2}, KILN_I32},
        {2, {16007, 7}, 1, {0}, KILN_I32},
    };
    /* one reduction per graph: several of one input's rows would make one ROW kernel */
    static const kiln_op ops[3] = {KILN_OP_SUM, KILN_OP_MAX, KILN_OP_MEAN};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int op = 0; op < (cases[i].dt == KILN_F32 ? 3 : 2); op++) {
            const reduce_case *rc = &cases[i];
            mt t;
            mt_init(&t, 100 + i);
            uint32_t x = mt_input(&t, rc->dt, rc->rank, rc->dims);
            kiln_attrs a = {.n_axes = rc->n_axes, .keepdims = i % 2 == 0};
            int64_t n_red = 1;
            for (int k = 0; k < rc->n_axes; k++) {
                a.axes[k] = rc->axes[k];
                n_red *= rc->dims[rc->axes[k]];
            }
            test_graph_output(&t, test_graph_add(&t, ops[op], &x, 1, &a));
            expect ex = {{kiln_op_table[ops[op]].name}, {NULL}};
            mt_check(&t, rc->dt == KILN_I32 ? EXACT : (tol){1e-5, 4e-7 * (double)n_red, false}, &ex);
            test_graph_free(&t);
        }
}

/* ---- reductions with their elementwise producers (REDUCE kernels) ---------------------------------- */

/* op(a, b) and op(a): elementwise nodes for the graphs written from primitives below */
static uint32_t binary(mt *t, kiln_op op, uint32_t a, uint32_t b)
{
    uint32_t in[2] = {a, b};
    return test_graph_add(t, op, in, 2, &(kiln_attrs){0});
}
static uint32_t unary(mt *t, kiln_op op, uint32_t a) { return test_graph_add(t, op, &a, 1, &(kiln_attrs){0}); }

/* A sum, mean or max of (x − y)² or exp(x − y), y broadcast into x's shape, becomes one
 * kernel with its producers (fuse.c, group_reductions): the kernel "k…_sum3" (three
 * members) is split across threads and no loop kernel of its own is left. In some cases
 * x − y also leaves the kernel (an output), stored once as the walk passes. Every way a
 * reduction is split is covered (rows, column blocks, chunks into scalars); the bits are
 * the same for 1, 2 and 3 threads and within rounding of the interpreter. */
static void test_reductions_fused(void **state)
{
    static const struct {
        int rank;
        int64_t dims[3], ydims[3];
        int n_axes;
        int64_t axes[3];
        kiln_op op, act;
        bool keep_diff;
    } cases[] = {
        {3, {37, 61, 45}, {37, 61, 1}, 1, {2}, KILN_OP_SUM, KILN_OP_SQUARE, false},      /* rows, y per row */
        {3, {37, 61, 45}, {1, 1, 45}, 2, {0, 1}, KILN_OP_SUM, KILN_OP_SQUARE, true},     /* column blocks */
        {3, {37, 61, 45}, {37, 1, 45}, 2, {0, 1}, KILN_OP_MEAN, KILN_OP_SQUARE, false},  /* dims kept apart */
        {3, {37, 61, 45}, {1, 61, 1}, 3, {0, 1, 2}, KILN_OP_SUM, KILN_OP_EXP, false},    /* chunks into a scalar */
        {2, {16007, 7}, {1, 7}, 1, {0}, KILN_OP_SUM, KILN_OP_SQUARE, true},              /* chunks into 7 */
        {2, {301, 257}, {301, 1}, 1, {1}, KILN_OP_MAX, KILN_OP_EXP, true},               /* rows */
        {2, {3, 40001}, {1, 40001}, 1, {1}, KILN_OP_MEAN, KILN_OP_EXP, false},           /* three long rows */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt t;
        mt_init(&t, 300 + i);
        uint32_t xy[2] = {mt_input(&t, KILN_F32, cases[i].rank, cases[i].dims),
                          mt_input(&t, KILN_F32, cases[i].rank, cases[i].ydims)};
        kiln_attrs a = {.n_axes = cases[i].n_axes, .keepdims = i % 2 == 1};
        int64_t n_red = 1;
        for (int k = 0; k < cases[i].n_axes; k++) {
            a.axes[k] = cases[i].axes[k];
            n_red *= cases[i].dims[cases[i].axes[k]];
        }
        uint32_t diff = binary(&t, KILN_OP_SUB, xy[0], xy[1]);
        uint32_t act = unary(&t, cases[i].act, diff);
        test_graph_output(&t, test_graph_add(&t, cases[i].op, &act, 1, &a));
        if (cases[i].keep_diff) test_graph_output(&t, diff);
        const char *name = kiln_op_table[cases[i].op].name;
        char fused[16];
        snprintf(fused, sizeof fused, "%s3", name);
        expect ex = {{fused}, {NULL}};
        double scale = cases[i].act == KILN_OP_EXP ? 400.0 : 36.0; /* |exp(±6)|, (±6)² */
        mt_check_absent(&t, (tol){2e-5, 4e-7 * scale * (double)n_red, false}, &ex, "_loop");
        test_graph_free(&t);
    }
}

/* softmax written from primitives — max, exp(x − max) summed, the division — is one ROW
 * kernel (fuse.c, group_rows): no loop or reduction kernel of its own is left. Rows of 257
 * (partial vectors) and of 61·45 (two trailing axes); with `keep`, the row maxima and
 * the exponentials leave the kernel too. A large value, −∞, a NaN and a row of −∞ give
 * what the interpreter gives. */
static void test_softmax_primitives(void **state)
{
    static const struct {
        int rank;
        int64_t dims[3];
        int n_axes;
        bool keep;
    } cases[] = {{2, {301, 257}, 1, false}, {3, {37, 61, 45}, 2, true}, {2, {9, 20001}, 1, true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt t;
        mt_init(&t, 9 + i);
        uint32_t x = mt_input(&t, KILN_F32, cases[i].rank, cases[i].dims);
        float *xd = t.in_data[0];
        int64_t cols = cases[i].dims[cases[i].rank - 1] * (cases[i].n_axes == 2 ? cases[i].dims[1] : 1);
        xd[5] = 90.0f;            /* exp would overflow without the max shift */
        xd[cols + 3] = -INFINITY; /* row 1: one weight 0 */
        xd[2 * cols + 7] = NAN;   /* row 2: NaN everywhere, as the interpreter */
        for (int64_t c = 0; c < cols; c++) xd[3 * cols + c] = -INFINITY; /* row 3: NaN (−∞ − −∞) */
        kiln_attrs last = {.n_axes = cases[i].n_axes, .keepdims = true};
        for (int k = 0; k < cases[i].n_axes; k++) last.axes[k] = cases[i].rank - cases[i].n_axes + k;
        uint32_t m = test_graph_add(&t, KILN_OP_MAX, &x, 1, &last);
        uint32_t e = unary(&t, KILN_OP_EXP, binary(&t, KILN_OP_SUB, x, m));
        uint32_t sum = test_graph_add(&t, KILN_OP_SUM, &e, 1, &last);
        test_graph_output(&t, binary(&t, KILN_OP_DIV, e, sum));
        if (cases[i].keep) {
            test_graph_output(&t, m);
            test_graph_output(&t, e);
        }
        expect ex = {{"row5"}, {NULL}};
        mt_check_absent(&t, (tol){1e-5, 1e-7, false}, &ex, "_loop");
        test_graph_free(&t);
    }
}

/* layernorm written from primitives: mean, x − mean, the mean of its square, + eps, sqrt,
 * the division and γ: one ROW kernel with operands per element (x), per row (none), per
 * column (γ) and one scalar (eps); the variance leaves it too. Where an operand varies
 * along rows in a way no row stride gives (β of shape [B, 1, C]), the loop group reading
 * it (the division, γ and β) stays out of the ROW kernel, and the results are the same. */
static void test_layernorm_primitives(void **state)
{
    for (int apart = 0; apart <= 1; apart++) {
        mt t;
        mt_init(&t, 20 + apart);
        int64_t d[3] = {11, 47, 131}, gd[1] = {131}, bd[3] = {11, 1, 131}, ed[1] = {1};
        uint32_t x = mt_input(&t, KILN_F32, 3, d), gamma = mt_input(&t, KILN_F32, 1, gd);
        uint32_t beta = mt_input(&t, KILN_F32, apart ? 3 : 1, apart ? bd : gd);
        float *e = malloc(4);
        e[0] = 1e-5f;
        uint32_t eps = mt_input_data(&t, KILN_F32, 1, ed, e);
        kiln_attrs last = {.n_axes = 1, .axes = {2}, .keepdims = true};
        uint32_t mean = test_graph_add(&t, KILN_OP_MEAN, &x, 1, &last);
        uint32_t c = binary(&t, KILN_OP_SUB, x, mean);
        uint32_t sq = unary(&t, KILN_OP_SQUARE, c);
        uint32_t var = test_graph_add(&t, KILN_OP_MEAN, &sq, 1, &last);
        uint32_t sd = unary(&t, KILN_OP_SQRT, binary(&t, KILN_OP_ADD, var, eps));
        uint32_t y = binary(&t, KILN_OP_MUL, binary(&t, KILN_OP_DIV, c, sd), gamma);
        test_graph_output(&t, binary(&t, KILN_OP_ADD, y, beta));
        test_graph_output(&t, var);
        expect ex = {{apart ? "row6" : "row9"}, {NULL}}; /* apart: not the loop of div, mul, add */
        mt_check_absent(&t, (tol){1e-5, 1e-6, false}, &ex, apart ? NULL : "_loop");
        test_graph_free(&t);
    }
}

/* ---- bias gradients in the weight-gradient GEMM -------------------------------------------------- */

/* db = Σ_rows dy next to dW = dyᵀ·x (op(A) walks dy along k) or dW = xᵀ·dy (op(B) does):
 * fuse.c puts the sum into the GEMM's kernel, which sums dy's columns in a threaded loop
 * of its own (no "_sum" kernel is left). Odd sizes: m, n, k are not multiples of the
 * 12×32 tile, the 64-column blocks of the sums or the GEMM's blocks; a 3-D dy is summed
 * over two axes and reshaped for the GEMM, as autodiff writes it. */
static void test_bias_grad_gemm(void **state)
{
    static const struct {
        int64_t b, t, n, m; /* dy (b, t, n), x (b·t, m) */
        bool dy_is_b;       /* dW = xᵀ·dy instead of dyᵀ·x */
        bool threaded;      /* the product (and the sums with it) is split across threads */
    } cases[] = {
        {1, 301, 203, 77, false, true},
        {3, 101, 203, 45, false, true},
        {1, 517, 131, 39, true, true},
        {1, 29, 37, 21, false, false}, /* too little work: one thread */
        {2, 211, 1000, 13, true, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt t;
        mt_init(&t, 900 + i);
        int64_t rows = cases[i].b * cases[i].t, n = cases[i].n, m = cases[i].m;
        int64_t dims3[3] = {cases[i].b, cases[i].t, n}, xd[2] = {rows, m};
        uint32_t dy = cases[i].b > 1 ? mt_input(&t, KILN_F32, 3, dims3) : mt_input(&t, KILN_F32, 2, &dims3[1]);
        uint32_t x = mt_input(&t, KILN_F32, 2, xd);
        kiln_attrs sa = {.n_axes = cases[i].b > 1 ? 2 : 1, .axes = {0, 1}};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_SUM, &dy, 1, &sa));
        uint32_t dy2 = dy;
        if (cases[i].b > 1) {
            kiln_attrs ra = {.rank = 2, .shape = {rows, n}};
            dy2 = test_graph_add(&t, KILN_OP_RESHAPE, &dy, 1, &ra);
        }
        kiln_attrs ma = {.transpose_a = true};
        uint32_t in[2] = {cases[i].dy_is_b ? x : dy2, cases[i].dy_is_b ? dy2 : x};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_MATMUL, in, 2, &ma));
        /* dy as op(A) (dyᵀ·x): the sums ride on the product's packing of dy
         * (kiln_cg_gemm_sum, its parts named "…_colsum.part"), and there is no pass of their
         * own ("k…_gemm.colsum"); dy as op(B): that pass, split across threads */
        bool rides = !cases[i].dy_is_b;
        expect ex = {{cases[i].threaded ? (rides ? "colsum" : "gemm") : NULL}, {NULL}};
        mt_check_absent(&t, (tol){1e-5, 4e-7 * (double)rows, false}, &ex, rides ? "_gemm.colsum" : "_sum:");
        test_graph_free(&t);
    }
}

/* ---- rows ------------------------------------------------------------------------------------- */

static void test_softmax(void **state)
{
    mt t;
    mt_init(&t, 1);
    int64_t d2[2] = {301, 257}, d3[3] = {13, 300, 21};
    uint32_t x = mt_input(&t, KILN_F32, 2, d2), y = mt_input(&t, KILN_F32, 3, d3);
    ((float *)t.in_data[0])[5] = 90.0f;      /* exp would overflow without the max shift */
    ((float *)t.in_data[0])[600] = -INFINITY;
    kiln_attrs last = {.axis = 1};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SOFTMAX, &x, 1, &last));
    test_graph_output(&t, test_graph_add(&t, KILN_OP_LOG_SOFTMAX, &x, 1, &last));
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SOFTMAX, &y, 1, &last)); /* a middle axis: strided rows */
    expect ex = {{"softmax", "log_softmax"}, {"softmax", "log_softmax"}};
    mt_check(&t, (tol){1e-5, 1e-6, false}, &ex);
    test_graph_free(&t);
}

static void test_layernorm_and_grad(void **state)
{
    mt t;
    mt_init(&t, 2);
    int64_t d[3] = {11, 47, 131}, w[1] = {131};
    uint32_t x = mt_input(&t, KILN_F32, 3, d), g = mt_input(&t, KILN_F32, 3, d);
    uint32_t wt = mt_input(&t, KILN_F32, 1, w), b = mt_input(&t, KILN_F32, 1, w);
    uint32_t in[3] = {x, wt, b}, gin[3] = {x, wt, g};
    kiln_attrs a = {.scalar = 1e-5};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_LAYERNORM, in, 3, &a));
    test_graph_output(&t, test_graph_add(&t, KILN_OP_LAYERNORM_GRAD, gin, 3, &a));
    expect ex = {{"layernorm", "layernorm_grad"}, {"layernorm", "layernorm_grad"}};
    mt_check(&t, (tol){1e-4, 1e-4, false}, &ex);
    test_graph_free(&t);
}

/* label smoothing, ignored rows, and a row count that is no multiple of the chunk */
static void test_cross_entropy_and_grad(void **state)
{
    for (int trial = 0; trial < 2; trial++) {
        mt t;
        mt_init(&t, 3 + trial);
        int64_t d[3] = {3, 667, 67}, gd[1] = {0};
        uint32_t x = mt_input(&t, KILN_F32, 3, d);
        uint32_t y = mt_indices(&t, 2, d, 0, 66);
        int32_t *tgt = t.in_data[1];
        for (int i = 0; i < 3 * 667; i += 7) tgt[i] = -100;
        uint32_t g = mt_input(&t, KILN_F32, 0, gd);
        kiln_attrs a = {.scalar = trial ? 0.1 : 0.0, .ignore_index = -100};
        uint32_t in[2] = {x, y}, gin[3] = {x, y, g};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CROSS_ENTROPY, in, 2, &a));
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CROSS_ENTROPY_GRAD, gin, 3, &a));
        expect ex = {{"cross_entropy", "cross_entropy_grad"}, {"cross_entropy", "cross_entropy_grad"}};
        mt_check(&t, (tol){1e-4, 1e-6, false}, &ex);
        test_graph_free(&t);
    }
}

/* ---- layout ----------------------------------------------------------------------------------- */

static void test_transpose(void **state)
{
    static const struct {
        int rank;
        int64_t dims[4], perm[4];
    } cases[] = {
        {2, {301, 259}, {1, 0}},             /* the last dim moves: tiles */
        {4, {7, 67, 5, 33}, {0, 2, 1, 3}},   /* heads: the last dim stays */
        {3, {33, 45, 70}, {2, 0, 1}},        /* tiles with an outer dim */
        {3, {45, 70, 33}, {1, 2, 0}},
        {4, {3, 37, 5, 129}, {0, 3, 2, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt t;
        mt_init(&t, 10 + i);
        uint32_t x = mt_input(&t, i % 2 ? KILN_I32 : KILN_F32, cases[i].rank, cases[i].dims);
        kiln_attrs a = {0};
        for (int d = 0; d < cases[i].rank; d++) a.perm[d] = cases[i].perm[d];
        test_graph_output(&t, test_graph_add(&t, KILN_OP_TRANSPOSE, &x, 1, &a));
        expect ex = {{"transpose"}, {"transpose"}};
        mt_check(&t, EXACT, &ex);
        test_graph_free(&t);
    }
}

static void test_copies(void **state)
{
    mt t;
    mt_init(&t, 20);
    int64_t d[3] = {9, 301, 67}, d2[3] = {9, 44, 67}, row[2] = {1, 259};
    uint32_t x = mt_input(&t, KILN_F32, 3, d), y = mt_input(&t, KILN_F32, 3, d2), r = mt_input(&t, KILN_F32, 2, row);
    kiln_attrs sl = {.axis = 1, .step = -2}; /* backwards, every second */
    assert_true(kiln_slice_normalize(301, 1, 300, 0, 0, -2, &sl.start, &sl.end));
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SLICE, &x, 1, &sl));
    kiln_attrs bc = {.rank = 3, .shape = {3, 301, 259}};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_BROADCAST, &r, 1, &bc));
    uint32_t parts[3] = {x, y, x};
    kiln_attrs c1 = {.axis = 1}, c0 = {.axis = 0};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_CONCAT, parts, 3, &c1));
    uint32_t p0[2] = {x, x};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_CONCAT, p0, 2, &c0));
    expect ex = {{"slice", "broadcast", "concat"}, {NULL}};
    mt_check(&t, EXACT, &ex);
    test_graph_free(&t);
}

/* gather (embedding lookup) and its gradients: scatter_add with repeated indices (they
 * must add up in index order whatever the threads) and unslice */
static void test_gather_scatter_unslice(void **state)
{
    mt t;
    mt_init(&t, 30);
    int64_t table[2] = {97, 259}, ids[2] = {7, 301}, gd[3] = {7, 301, 259}, xs[2] = {131, 259};
    uint32_t tb = mt_input(&t, KILN_F32, 2, table);
    uint32_t id = mt_indices(&t, 2, ids, 0, 96);
    uint32_t g = mt_input(&t, KILN_F32, 3, gd);
    uint32_t xs_in = mt_input(&t, KILN_F32, 2, xs);
    uint32_t gin[2] = {tb, id}, sin[2] = {g, id};
    kiln_attrs ga = {.axis = 0};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_GATHER, gin, 2, &ga));
    kiln_attrs sa = {.rank = 2, .shape = {97, 259}, .axis = 0};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SCATTER_ADD, sin, 2, &sa));
    kiln_attrs us = {.rank = 2, .shape = {400, 259}, .axis = 0, .start = 7, .end = 400, .step = 3};
    assert_true(kiln_slice_count(us.start, us.end, us.step) == 131);
    test_graph_output(&t, test_graph_add(&t, KILN_OP_UNSLICE, &xs_in, 1, &us));
    expect ex = {{"gather", "scatter_add", "unslice"}, {NULL}};
    /* scatter_add sums in f32 (the interpreter in double): up to 7·301/97 terms of ±3 */
    mt_check(&t, (tol){1e-5, 2e-5, false}, &ex);
    test_graph_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_reductions_fused),
        cmocka_unit_test(test_softmax_primitives),
        cmocka_unit_test(test_layernorm_primitives),
        cmocka_unit_test(test_bias_grad_gemm),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_layernorm_and_grad),
        cmocka_unit_test(test_cross_entropy_and_grad),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_copies),
        cmocka_unit_test(test_gather_scatter_unslice),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    kiln_threads_set(1);
    return rc;
}
