/* test_codegen.c — compiled kernels (JIT) against the reference interpreter, the memory
 * planner's invariants, and the shape of the generated machine code.
 *
 * Design: a `tg` is a graph under test built by hand with kiln_graph_add, with random
 * (seeded) data for its inputs. tg_check compiles it, runs the entry point on a
 * workspace and output buffers pre-filled with a NaN pattern (so a value the code
 * forgets to write, or reads before writing, shows up), runs kiln_interp_run on the same
 * inputs, and compares every output: bit-exact for layout ops and i32 results, else
 * |got − want| ≤ atol + rtol·|want| with NaN where the interpreter has NaN. Every
 * compile also checks its memory plan (kiln_memplan_check: no two live buffers
 * overlap; lower bound ≤ workspace ≤ unplanned).
 *
 * Shapes are random per trial: dims drawn from {1, 2, 3, 5, 7, 13, 33} (size-1 dims
 * and odd sizes on purpose), ranks 0–4, operands broadcast across ranks; size-0 dims
 * where the op allows them. Several ops share one graph (one compile) where they take
 * the same inputs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen.h"
#include "kiln/runtime.h"
#include "passes.h"
#include "test_graph.h"

/* ---- random shapes --------------------------------------------------------------------- */

static int64_t rng_dim(rng *r)
{
    static const int64_t sizes[] = {1, 1, 2, 3, 5, 7, 13, 33};
    return sizes[rng_int(r, 0, 7)];
}

/* ---- a graph under test ------------------------------------------------------------------ */

/* support/test_graph.h, with random (seeded) data for inputs and parameters */
typedef test_graph tg;

typedef struct tol {
    double rtol, atol;
    bool exact;
} tol;

static const tol EXACT = {0, 0, true};
static const tol ELEMENTWISE = {2e-6, 1e-7, false};

static void tg_init(tg *t, rng *r)
{
    test_graph_init(t, "t");
    t->r = r;
}

static kiln_type type_of(kiln_dtype dt, int rank, const int64_t *dims)
{
    kiln_type ty = {dt, rank, {0}};
    for (int d = 0; d < rank; d++) ty.dims[d] = dims[d];
    return ty;
}

static void *random_data(rng *r, const kiln_type *ty, double scale)
{
    int64_t n = kiln_type_numel(ty);
    void *p = malloc((size_t)(n ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) {
        if (ty->dtype == KILN_I32) ((int32_t *)p)[i] = rng_int(r, -20, 20);
        else ((float *)p)[i] = (float)(rng_normal(r) * scale);
    }
    return p;
}

/* An input with the given data (taken over), or random data when data is NULL. */
static uint32_t tg_input_data(tg *t, kiln_dtype dt, int rank, const int64_t *dims, void *data)
{
    kiln_type ty = type_of(dt, rank, dims);
    return test_graph_input(t, dt, rank, dims, data ? data : random_data(t->r, &ty, 2.0));
}
static uint32_t tg_input(tg *t, kiln_dtype dt, int rank, const int64_t *dims)
{
    return tg_input_data(t, dt, rank, dims, NULL);
}

static uint32_t tg_param(tg *t, int rank, const int64_t *dims)
{
    kiln_type ty = type_of(KILN_F32, rank, dims);
    return test_graph_param(t, rank, dims, KILN_INIT_NORMAL, random_data(t->r, &ty, 1.0));
}

/* The memory plan of the graph passes its own check and sits between the bounds. */
static void check_plan(tg *t)
{
    kiln_compile_request req = test_graph_request(t);
    kiln_memplan p;
    int n_kernels;
    if (!kiln_codegen_plan(&req, &p, &n_kernels, &t->d)) test_graph_fail(t, "kiln_codegen_plan");
    char msg[512];
    if (!kiln_memplan_check(&p, msg, sizeof msg)) fail_msg("memory plan: %s", msg);
    assert_true(p.lower_bound_bytes <= p.workspace_bytes);
    assert_true(p.workspace_bytes <= p.unplanned_bytes);
    kiln_memplan_free(&p);
}

typedef struct run {
    kiln_compiled c;
    void *params, *outs[TEST_GRAPH_MAX]; /* params: the blob after the call */
    int rc;
} run;

/* Compiles and runs t; outputs stay in r->outs. */
static void tg_run(tg *t, run *r)
{
    memset(r, 0, sizeof *r);
    check_plan(t);
    kiln_compile_request req = test_graph_request(t);
    if (!kiln_compile_graph(&req, &r->c, &t->d)) test_graph_fail(t, "kiln_compile_graph");
    r->rc = test_graph_call(t, &r->c, r->outs, &r->params);
}

static void run_free(tg *t, run *r)
{
    test_graph_outputs_free(t, r->outs);
    kiln_aligned_free(r->params);
    kiln_compiled_free(&r->c);
}

static bool close_enough(float got, float want, tol tl)
{
    if (tl.exact) {
        uint32_t a, b;
        memcpy(&a, &got, 4);
        memcpy(&b, &want, 4);
        return a == b || (isnan(got) && isnan(want));
    }
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs((double)got - want) <= tl.atol + tl.rtol * fabs(want);
}

/* Every op some tg_check compiled and compared (test_every_op_compiled reads it last). */
static bool compiled_ops[KILN_OP_COUNT];

/* Compiled vs interpreted: every output, every element. */
static void tg_check(tg *t, tol tl)
{
    for (uint32_t id = 0; id < t->g.n_nodes; id++) compiled_ops[t->g.nodes[id].op] = true;
    void **values = test_graph_interpret(t);

    /* fused (the default) and, unless the test asks for it alone, one kernel per node */
    bool forced = t->no_fuse;
    for (int mode = forced; mode < 2; mode++) {
    t->no_fuse = mode == 1;
    run r;
    tg_run(t, &r);
    assert_int_equal(r.rc, 0);
    for (uint32_t o = 0; o < t->g.n_outputs; o++) {
        const kiln_node *n = &t->g.nodes[t->g.outputs[o].node];
        const void *want = values[t->g.outputs[o].node];
        int64_t count = kiln_type_numel(&n->type);
        for (int64_t i = 0; i < count; i++) {
            bool ok;
            float got_f = 0, want_f = 0;
            if (n->type.dtype == KILN_I32) {
                ok = ((const int32_t *)r.outs[o])[i] == ((const int32_t *)want)[i];
            } else {
                got_f = ((const float *)r.outs[o])[i];
                want_f = ((const float *)want)[i];
                ok = close_enough(got_f, want_f, tl);
            }
            if (!ok) {
                char buf[160];
                char *ir = kiln_graph_print(&t->g);
                print_error("%s\n", ir);
                free(ir);
                if (n->type.dtype == KILN_I32)
                    fail_msg("output %u (%s %s) element %lld: got %d, want %d", o, kiln_op_table[n->op].name,
                             kiln_type_str(&n->type, buf, sizeof buf), (long long)i, ((const int32_t *)r.outs[o])[i],
                             ((const int32_t *)want)[i]);
                fail_msg("output %u (%s %s) element %lld: got %.9g, want %.9g", o, kiln_op_table[n->op].name,
                         kiln_type_str(&n->type, buf, sizeof buf), (long long)i, got_f, want_f);
            }
        }
    }
    run_free(t, &r);
    }
    t->no_fuse = forced;
    test_graph_values_free(t, values);
}

/* The entry's status code for t (which must fail or succeed as the test says). */
static int tg_status(tg *t)
{
    run r;
    tg_run(t, &r);
    int rc = r.rc;
    run_free(t, &r);
    return rc;
}

/* ---- shapes ------------------------------------------------------------------------------ */

static int random_shape(rng *r, int max_rank, int64_t *dims)
{
    int rank = rng_int(r, 0, max_rank);
    for (int d = 0; d < rank; d++) dims[d] = rng_dim(r);
    return rank;
}

/* A shape that broadcasts to (rank, dims): leading dims dropped, some dims set to 1. */
static int broadcast_operand(rng *r, int rank, const int64_t *dims, int64_t *out)
{
    int drop = rng_int(r, 0, rank);
    if (rng_int(r, 0, 2) == 0) drop = 0;
    int k = 0;
    for (int d = drop; d < rank; d++) out[k++] = rng_int(r, 0, 3) == 0 ? 1 : dims[d];
    return k;
}

/* ---- elementwise ------------------------------------------------------------------------- */

static void test_binary_f32(void **state)
{
    static const kiln_op ops[] = {KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_DIV, KILN_OP_MAXIMUM,
                                  KILN_OP_MINIMUM, KILN_OP_POW, KILN_OP_LT, KILN_OP_GT, KILN_OP_EQ};
    rng r = {1};
    for (int trial = 0; trial < 12; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8], da[8], db[8];
        int rank = random_shape(&r, 4, dims);
        if (trial == 1 && rank > 0) dims[rank - 1] = 0; /* empty */
        int ra = broadcast_operand(&r, rank, dims, da), rb = broadcast_operand(&r, rank, dims, db);
        uint32_t a = tg_input(&t, KILN_F32, ra, da), b = tg_input(&t, KILN_F32, rb, db);
        /* equal values and NaNs appear too: eq, maximum and NaN propagation get exercised */
        float *bd = t.in_data[1];
        int64_t nb = kiln_type_numel(&t.g.nodes[b].type);
        if (nb > 0) bd[0] = NAN;
        if (nb > 1) bd[1] = ((float *)t.in_data[0])[0];
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) test_graph_output(&t, test_graph_op2(&t, ops[i], a, b));
        tg_check(&t, ELEMENTWISE);
        test_graph_free(&t);
    }
}

static void test_binary_i32(void **state)
{
    static const kiln_op ops[] = {KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_MAXIMUM,
                                  KILN_OP_MINIMUM, KILN_OP_LT, KILN_OP_GT, KILN_OP_EQ};
    rng r = {2};
    for (int trial = 0; trial < 8; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8], da[8], db[8];
        int rank = random_shape(&r, 4, dims);
        int ra = broadcast_operand(&r, rank, dims, da), rb = broadcast_operand(&r, rank, dims, db);
        uint32_t a = tg_input(&t, KILN_I32, ra, da), b = tg_input(&t, KILN_I32, rb, db);
        int32_t *ad = t.in_data[0];
        if (kiln_type_numel(&t.g.nodes[a].type) > 0) ad[0] = INT32_MAX; /* wraps */
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) test_graph_output(&t, test_graph_op2(&t, ops[i], a, b));
        uint32_t neg = test_graph_op1(&t, KILN_OP_NEG, a);
        test_graph_output(&t, neg);
        test_graph_output(&t, test_graph_op1(&t, KILN_OP_ABS, a));
        tg_check(&t, EXACT);
        test_graph_free(&t);
    }
}

static void test_unary(void **state)
{
    static const kiln_op ops[] = {KILN_OP_NEG,  KILN_OP_EXP,     KILN_OP_LOG,     KILN_OP_SQRT, KILN_OP_RSQRT,
                                  KILN_OP_ABS,  KILN_OP_SQUARE,  KILN_OP_RECIP,   KILN_OP_TANH, KILN_OP_SIGMOID,
                                  KILN_OP_RELU, KILN_OP_SILU,    KILN_OP_GELU,    KILN_OP_GELU_TANH};
    rng r = {3};
    for (int trial = 0; trial < 8; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = random_shape(&r, 4, dims);
        uint32_t x = tg_input(&t, KILN_F32, rank, dims);
        float *xd = t.in_data[0];
        int64_t n = kiln_type_numel(&t.g.nodes[x].type);
        /* the edges: large magnitudes (overflow, saturation), zeros, NaN */
        static const float specials[] = {-30.0f, 30.0f, 0.0f, -0.0f, NAN, 90.0f, -90.0f, 1e-30f};
        for (int64_t i = 0; i < n && i < 8; i++) xd[i] = specials[(i + trial) % 8];
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) test_graph_output(&t, test_graph_op1(&t, ops[i], x));
        kiln_attrs a = {.scalar = 0.1};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_SCALE, &x, 1, &a));
        a.scalar = 0.25;
        test_graph_output(&t, test_graph_add(&t, KILN_OP_DROPOUT, &x, 1, &a));
        tg_check(&t, (tol){1e-5, 1e-7, false});
        test_graph_free(&t);
    }
}

static void test_where_and_cast(void **state)
{
    rng r = {4};
    for (int trial = 0; trial < 10; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8], dc[8], da[8], db[8];
        int rank = random_shape(&r, 4, dims);
        int rc = broadcast_operand(&r, rank, dims, dc);
        int ra = broadcast_operand(&r, rank, dims, da), rb = broadcast_operand(&r, rank, dims, db);
        kiln_dtype cdt = trial % 2 ? KILN_I32 : KILN_F32, vdt = trial % 3 ? KILN_F32 : KILN_I32;
        uint32_t c = tg_input(&t, cdt, rc, dc), a = tg_input(&t, vdt, ra, da), b = tg_input(&t, vdt, rb, db);
        int64_t nc = kiln_type_numel(&t.g.nodes[c].type);
        for (int64_t i = 0; i < nc; i++) { /* mostly zeros and ones, as masks are */
            if (cdt == KILN_I32) ((int32_t *)t.in_data[0])[i] = rng_int(&r, 0, 1);
            else ((float *)t.in_data[0])[i] = (float)rng_int(&r, 0, 1);
        }
        if (cdt == KILN_F32 && nc > 0) ((float *)t.in_data[0])[0] = NAN; /* counts as true */
        uint32_t in[3] = {c, a, b};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_WHERE, in, 3, NULL));
        /* casts both ways, including values i32 cannot hold */
        float *fa = t.in_data[1];
        if (vdt == KILN_F32 && kiln_type_numel(&t.g.nodes[a].type) >= 4) {
            fa[0] = 3e9f, fa[1] = -3e9f, fa[2] = NAN, fa[3] = -2.7f;
        }
        kiln_attrs to_i = {.dtype = KILN_I32}, to_f = {.dtype = KILN_F32};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CAST, &a, 1, &to_i));
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CAST, &a, 1, &to_f));
        tg_check(&t, EXACT);
        test_graph_free(&t);
    }
}

/* A chain of elementwise ops over odd, broadcast shapes: fused-like patterns, and
 * intermediate values planned into the workspace. */
static void test_elementwise_chain(void **state)
{
    rng r = {5};
    for (int trial = 0; trial < 6; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[3] = {rng_dim(&r), 1 + rng_dim(&r), rng_dim(&r) * 3}, bias[1] = {dims[2]};
        uint32_t x = tg_input(&t, KILN_F32, 3, dims), b = tg_param(&t, 1, bias);
        uint32_t h = test_graph_op2(&t, KILN_OP_ADD, x, b);
        h = test_graph_op1(&t, KILN_OP_GELU_TANH, h);
        h = test_graph_op2(&t, KILN_OP_MUL, h, x);
        h = test_graph_op1(&t, KILN_OP_TANH, h);
        test_graph_output(&t, test_graph_op2(&t, KILN_OP_SUB, h, b));
        test_graph_output(&t, test_graph_op1(&t, KILN_OP_ERF, h)); /* erf (gelu's gradient) here: test_unary is full */
        tg_check(&t, (tol){1e-5, 1e-6, false});
        test_graph_free(&t);
    }
}

/* ---- reductions and composites -------------------------------------------------------- */

static void test_reductions(void **state)
{
    rng r = {6};
    for (int trial = 0; trial < 16; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = random_shape(&r, 4, dims);
        if (trial == 3 && rank > 0) dims[0] = 0; /* empty: sums are 0, means NaN */
        kiln_dtype dt = trial % 4 == 1 ? KILN_I32 : KILN_F32;
        uint32_t x = tg_input(&t, dt, rank, dims);
        kiln_attrs a = {.keepdims = trial % 2 == 0};
        a.n_axes = 0;
        for (int d = 0; d < rank; d++)
            if (rng_int(&r, 0, 1)) a.axes[a.n_axes++] = d;
        if (trial % 5 == 4) { /* all axes */
            a.n_axes = rank;
            for (int d = 0; d < rank; d++) a.axes[d] = d;
        }
        int64_t n_red = 1;
        for (int i = 0; i < a.n_axes; i++) n_red *= dims[a.axes[i]];
        test_graph_output(&t, test_graph_add(&t, KILN_OP_SUM, &x, 1, &a));
        bool empty = false;
        for (int i = 0; i < a.n_axes; i++) empty |= dims[a.axes[i]] == 0;
        if (!empty) test_graph_output(&t, test_graph_add(&t, KILN_OP_MAX, &x, 1, &a));
        if (dt == KILN_F32) test_graph_output(&t, test_graph_add(&t, KILN_OP_MEAN, &x, 1, &a));
        /* f32 sums in a different order: error grows with the number of terms */
        tg_check(&t, dt == KILN_I32 ? EXACT : (tol){1e-5, 4e-7 * (double)n_red, false});
        test_graph_free(&t);
    }
}

static void test_softmax(void **state)
{
    rng r = {7};
    for (int trial = 0; trial < 10; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = 1 + random_shape(&r, 3, dims + 1);
        dims[0] = rng_dim(&r);
        uint32_t x = tg_input(&t, KILN_F32, rank, dims);
        float *xd = t.in_data[0];
        if (trial == 2) xd[0] = 80.0f; /* exp would overflow without the max shift */
        if (trial == 5) xd[0] = -INFINITY;
        kiln_attrs a = {.axis = rng_int(&r, 0, rank - 1)};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_SOFTMAX, &x, 1, &a));
        test_graph_output(&t, test_graph_add(&t, KILN_OP_LOG_SOFTMAX, &x, 1, &a));
        tg_check(&t, (tol){1e-5, 1e-6, false});
        test_graph_free(&t);
    }
}

static void test_layernorm(void **state)
{
    rng r = {8};
    for (int trial = 0; trial < 8; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = 1 + random_shape(&r, 3, dims);
        dims[rank - 1] = rng_dim(&r) + (trial % 2) * 64;
        uint32_t x = tg_input(&t, KILN_F32, rank, dims);
        uint32_t w = tg_param(&t, 1, &dims[rank - 1]), b = tg_param(&t, 1, &dims[rank - 1]);
        uint32_t in[3] = {x, w, b};
        kiln_attrs a = {.scalar = trial % 3 ? 1e-5 : 0.5};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_LAYERNORM, in, 3, &a));
        tg_check(&t, (tol){2e-5, 2e-5, false});
        test_graph_free(&t);
    }
}

static void test_cross_entropy(void **state)
{
    rng r = {9};
    for (int trial = 0; trial < 10; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[3] = {rng_dim(&r), rng_dim(&r), rng_dim(&r) + 1};
        int rank = 1 + trial % 3;
        const int64_t *ld = dims + 3 - rank;
        uint32_t x = tg_input(&t, KILN_F32, rank, ld);
        int64_t rows = kiln_type_numel(&t.g.nodes[x].type) / ld[rank - 1];
        int32_t *tgt = malloc((size_t)rows * 4 + 4);
        for (int64_t i = 0; i < rows; i++) tgt[i] = rng_int(&r, 0, (int)ld[rank - 1] - 1);
        if (rows > 1) tgt[1] = trial % 2 ? -100 : 7; /* ignored row (ignore_index -100 or 7) */
        uint32_t y = tg_input_data(&t, KILN_I32, rank - 1, ld, tgt);
        kiln_attrs a = {.scalar = trial % 3 == 0 ? 0.0 : 0.1, .ignore_index = trial % 2 ? -100 : 7};
        if (trial % 2 == 0 && ld[rank - 1] > 7) a.ignore_index = 1000; /* 7 is a real class then */
        uint32_t in[2] = {x, y};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CROSS_ENTROPY, in, 2, &a));
        tg_check(&t, (tol){1e-5, 1e-6, false});
        test_graph_free(&t);
    }
}

static void test_cross_entropy_bad_target(void **state)
{
    rng r = {10};
    tg t;
    tg_init(&t, &r);
    int64_t dims[2] = {4, 5};
    uint32_t x = tg_input(&t, KILN_F32, 2, dims);
    int32_t *tgt = malloc(16);
    tgt[0] = 0, tgt[1] = 4, tgt[2] = 5, tgt[3] = 1;
    uint32_t y = tg_input_data(&t, KILN_I32, 1, dims, tgt);
    uint32_t in[2] = {x, y};
    kiln_attrs a = {.ignore_index = -100};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_CROSS_ENTROPY, in, 2, &a));
    assert_int_equal(tg_status(&t), KILN_RC_TARGET_RANGE);
    tgt[2] = -1;
    assert_int_equal(tg_status(&t), KILN_RC_TARGET_RANGE);
    tgt[2] = -100; /* ignored: fine */
    assert_int_equal(tg_status(&t), KILN_RC_OK);
    test_graph_free(&t);
}

static void test_matmul(void **state)
{
    rng r = {11};
    for (int trial = 0; trial < 16; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t M = rng_dim(&r), N = rng_dim(&r), K = trial == 5 ? 0 : rng_dim(&r) + (trial % 4 == 3 ? 60 : 0);
        if (trial == 9) M = 0; /* an empty result */
        bool ta = rng_int(&r, 0, 1), tb = rng_int(&r, 0, 1);
        int64_t batch[8];
        int br = random_shape(&r, 2, batch);
        int64_t da[8], db[8];
        int ra = broadcast_operand(&r, br, batch, da), rb = broadcast_operand(&r, br, batch, db);
        da[ra] = ta ? K : M, da[ra + 1] = ta ? M : K;
        db[rb] = tb ? N : K, db[rb + 1] = tb ? K : N;
        uint32_t a = tg_input(&t, KILN_F32, ra + 2, da);
        uint32_t b = trial % 3 == 0 ? tg_param(&t, rb + 2, db) : tg_input(&t, KILN_F32, rb + 2, db);
        uint32_t in[2] = {a, b};
        kiln_attrs at = {.transpose_a = ta, .transpose_b = tb};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_MATMUL, in, 2, &at));
        tg_check(&t, (tol){1e-5, 2e-6 * (double)(K + 1), false});
        test_graph_free(&t);
    }
}

static void test_attention(void **state)
{
    rng r = {12};
    for (int trial = 0; trial < 14; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t B = rng_int(&r, 1, 2), H = rng_int(&r, 1, 3), T = rng_dim(&r), S = trial % 2 ? T : rng_dim(&r);
        if (trial == 12) S = 0; /* no keys at all: every row is fully masked */
        int64_t dh = rng_dim(&r), dv = trial % 3 ? dh : rng_dim(&r);
        int64_t qd[4] = {B, H, T, dh}, kd[4] = {B, H, S, dh}, vd[4] = {B, H, S, dv};
        uint32_t in[5];
        uint32_t n_in = 0;
        in[n_in++] = tg_input(&t, KILN_F32, 4, qd);
        in[n_in++] = tg_input(&t, KILN_F32, 4, kd);
        in[n_in++] = tg_input(&t, KILN_F32, 4, vd);
        kiln_attrs a = {.scalar = 1.0 / sqrt((double)dh), .causal = trial % 4 >= 2};
        if (trial % 3 != 1) { /* a key mask (B, S) of 0/1, one batch fully masked sometimes */
            int64_t md[2] = {B, S};
            float *m = malloc((size_t)(B * S) * 4);
            for (int64_t i = 0; i < B * S; i++) m[i] = (float)rng_int(&r, 0, 3) != 0;
            if (trial % 5 == 0)
                for (int64_t i = 0; i < S; i++) m[i] = 0;
            in[n_in++] = tg_input_data(&t, KILN_F32, 2, md, m);
            a.has_mask = true;
        }
        if (trial % 2 == 0) { /* an additive bias broadcast over batch or heads */
            int64_t bd[4] = {1, H, T, S};
            int br = trial % 4 == 0 ? 4 : 3;
            in[n_in++] = tg_input(&t, KILN_F32, br, bd + 4 - br);
            a.has_bias = true;
        }
        test_graph_output(&t, test_graph_add(&t, KILN_OP_ATTENTION, in, n_in, &a));
        tg_check(&t, (tol){2e-5, 2e-5, false});
        test_graph_free(&t);
    }
}

/* ---- layout ---------------------------------------------------------------------------------- */

static void test_layout(void **state)
{
    rng r = {13};
    for (int trial = 0; trial < 16; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = 1 + random_shape(&r, 3, dims);
        dims[rank - 1] = rng_dim(&r);
        kiln_dtype dt = trial % 3 == 2 ? KILN_I32 : KILN_F32;
        uint32_t x = tg_input(&t, dt, rank, dims);

        kiln_attrs tr = {0}; /* a random permutation */
        for (int d = 0; d < rank; d++) tr.perm[d] = d;
        for (int d = rank - 1; d > 0; d--) {
            int k = rng_int(&r, 0, d);
            int64_t s = tr.perm[d];
            tr.perm[d] = tr.perm[k], tr.perm[k] = s;
        }
        test_graph_output(&t, test_graph_add(&t, KILN_OP_TRANSPOSE, &x, 1, &tr));

        kiln_attrs sl = {.axis = rng_int(&r, 0, rank - 1)}; /* a slice, forwards or backwards */
        int64_t len = dims[sl.axis];
        sl.step = rng_int(&r, 0, 1) ? rng_int(&r, 1, 3) : -rng_int(&r, 1, 3);
        assert_true(kiln_slice_normalize(len, rng_int(&r, 0, 1), rng_int(&r, -(int)len, (int)len), rng_int(&r, 0, 1),
                                         rng_int(&r, -(int)len, (int)len), sl.step, &sl.start, &sl.end));
        if (kiln_slice_count(sl.start, sl.end, sl.step) == 0) sl.end = sl.start; /* the IR's empty form */
        test_graph_output(&t, test_graph_add(&t, KILN_OP_SLICE, &x, 1, &sl));

        kiln_attrs bc = {.rank = rank + 1}; /* broadcast to a new leading dim and over 1s */
        bc.shape[0] = 3;
        for (int d = 0; d < rank; d++) bc.shape[d + 1] = dims[d];
        test_graph_output(&t, test_graph_add(&t, KILN_OP_BROADCAST, &x, 1, &bc));

        int64_t d2[8]; /* concat with a second part that may be empty */
        memcpy(d2, dims, sizeof d2);
        int ax = rng_int(&r, 0, rank - 1);
        d2[ax] = trial % 4 == 0 ? 0 : rng_dim(&r);
        uint32_t y = tg_input(&t, dt, rank, d2);
        uint32_t parts[3] = {x, y, x};
        kiln_attrs cc = {.axis = ax};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CONCAT, parts, 3, &cc));

        kiln_attrs rs = {.rank = 2, .shape = {-1, dims[rank - 1]}}; /* a view, then used */
        uint32_t v = test_graph_add(&t, KILN_OP_RESHAPE, &x, 1, &rs);
        test_graph_output(&t, test_graph_op1(&t, KILN_OP_NEG, v));
        tg_check(&t, EXACT);
        test_graph_free(&t);
    }
}

static void test_gather(void **state)
{
    rng r = {14};
    for (int trial = 0; trial < 10; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = 1 + random_shape(&r, 2, dims);
        dims[rank - 1] = rng_dim(&r);
        dims[0] = rng_dim(&r) + 1;
        int ax = rng_int(&r, 0, rank - 1);
        if (trial == 4) dims[(ax + 1) % rank] = rank > 1 ? 0 : dims[0]; /* empty rows */
        uint32_t table = tg_input(&t, trial % 2 ? KILN_I32 : KILN_F32, rank, dims);
        int64_t idims[8];
        int irank = random_shape(&r, 2, idims);
        int64_t n = 1;
        for (int d = 0; d < irank; d++) n *= idims[d];
        int32_t *ids = malloc((size_t)n * 4 + 4);
        for (int64_t i = 0; i < n; i++) ids[i] = rng_int(&r, 0, (int)dims[ax] - 1);
        uint32_t idx = tg_input_data(&t, KILN_I32, irank, idims, ids);
        uint32_t in[2] = {table, idx};
        kiln_attrs a = {.axis = ax};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_GATHER, in, 2, &a));
        tg_check(&t, EXACT);
        test_graph_free(&t);
    }
}

static void test_gather_out_of_range(void **state)
{
    rng r = {15};
    tg t;
    tg_init(&t, &r);
    int64_t dims[2] = {5, 3}, idims[1] = {4};
    uint32_t table = tg_input(&t, KILN_F32, 2, dims);
    int32_t *ids = malloc(16);
    ids[0] = 0, ids[1] = 4, ids[2] = 5, ids[3] = 2;
    uint32_t idx = tg_input_data(&t, KILN_I32, 1, idims, ids);
    uint32_t in[2] = {table, idx};
    kiln_attrs a = {.axis = 0};
    uint32_t g = test_graph_add(&t, KILN_OP_GATHER, in, 2, &a);
    test_graph_output(&t, test_graph_op1(&t, KILN_OP_EXP, g));
    assert_int_equal(tg_status(&t), KILN_RC_INDEX_RANGE);
    ids[2] = -1;
    assert_int_equal(tg_status(&t), KILN_RC_INDEX_RANGE);
    ids[2] = INT32_MIN;
    assert_int_equal(tg_status(&t), KILN_RC_INDEX_RANGE);
    ids[2] = 3;
    assert_int_equal(tg_status(&t), KILN_RC_OK);
    test_graph_free(&t);
}

/* update_slice(x, u, start) computed into a buffer of its own (x copied first), against
 * the interpreter: any axis, f32 and i32, an empty update, every start. */
static void test_update_slice(void **state)
{
    rng r = {41};
    for (int trial = 0; trial < 10; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8], udims[8];
        int rank = 1 + random_shape(&r, 2, dims);
        int ax = rng_int(&r, 0, rank - 1);
        dims[ax] = rng_dim(&r) + 2;
        memcpy(udims, dims, sizeof udims);
        udims[ax] = trial == 3 ? 0 : rng_int(&r, 1, (int)dims[ax]);
        kiln_dtype dt = trial % 2 ? KILN_I32 : KILN_F32;
        uint32_t x = tg_input(&t, dt, rank, dims), u = tg_input(&t, dt, rank, udims);
        int32_t *start = malloc(4);
        *start = rng_int(&r, 0, (int)(dims[ax] - udims[ax]));
        uint32_t in[3] = {x, u, tg_input_data(&t, KILN_I32, 1, (int64_t[]){1}, start)};
        kiln_attrs a = {.axis = ax};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_UPDATE_SLICE, in, 3, &a));
        tg_check(&t, EXACT);
        test_graph_free(&t);
    }
}

/* update_slice as a parameter's update (a KV cache's row write): the plan computes it in
 * the parameter's own storage, the kernel changes only the slice, a later reader sees the
 * new value, and a start past the end fails before writing. */
static void test_update_slice_in_place(void **state)
{
    rng r = {42};
    tg t;
    tg_init(&t, &r);
    int64_t dims[3] = {2, 5, 3}, udims[3] = {2, 2, 3};
    uint32_t p = tg_param(&t, 3, dims), u = tg_input(&t, KILN_F32, 3, udims);
    int32_t *start = malloc(4);
    *start = 3;
    uint32_t in[3] = {p, u, tg_input_data(&t, KILN_I32, 1, (int64_t[]){1}, start)};
    kiln_attrs a = {.axis = 1};
    uint32_t y = test_graph_add(&t, KILN_OP_UPDATE_SLICE, in, 3, &a);
    kiln_attrs two = {.scalar = 2};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SCALE, &y, 1, &two));
    kiln_graph_add_update(&t.g, p, y);
    t.no_fuse = true; /* no simplify either: the plan's homes are indexed by these ids */

    kiln_compile_request req = test_graph_request(&t);
    kiln_memplan plan;
    int n_kernels;
    if (!kiln_codegen_plan(&req, &plan, &n_kernels, &t.d)) test_graph_fail(&t, "kiln_codegen_plan");
    assert_int_equal(plan.homes[y].kind, KILN_HOME_UPDATE);
    assert_int_equal(plan.n_update_copies, 0);
    kiln_memplan_free(&plan);

    const float *x0 = t.param_data[0], *uv = t.in_data[0];
    float want[30];
    for (int o = 0; o < 2; o++)
        for (int j = 0; j < 5; j++)
            for (int i = 0; i < 3; i++)
                want[(o * 5 + j) * 3 + i] = j >= 3 ? uv[(o * 2 + j - 3) * 3 + i] : x0[(o * 5 + j) * 3 + i];
    run rr;
    tg_run(&t, &rr);
    assert_int_equal(rr.rc, KILN_RC_OK);
    const float *got = (const float *)((const char *)rr.params + rr.c.param_offsets[0]);
    const float *y2 = rr.outs[0];
    for (int i = 0; i < 30; i++) {
        assert_memory_equal(&got[i], &want[i], 4);
        assert_true(y2[i] == 2 * want[i]);
    }
    run_free(&t, &rr);
    *start = 4; /* 4 + 2 rows > 5 */
    tg_run(&t, &rr);
    assert_int_equal(rr.rc, KILN_RC_INDEX_RANGE);
    assert_memory_equal((const char *)rr.params + rr.c.param_offsets[0], x0, sizeof want);
    run_free(&t, &rr);
    test_graph_free(&t);
}

static void test_sources(void **state)
{
    rng r = {16};
    for (int trial = 0; trial < 6; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = random_shape(&r, 3, dims);
        kiln_type ty = type_of(trial % 2 ? KILN_I32 : KILN_F32, rank, dims);
        int64_t n = kiln_type_numel(&ty);
        void *vals = random_data(&r, &ty, 1.0);
        kiln_attrs full = {.dtype = ty.dtype, .rank = rank, .values = vals, .n_values = n};
        memcpy(full.shape, ty.dims, sizeof full.shape);
        uint32_t c = test_graph_add(&t, KILN_OP_CONSTANT, NULL, 0, &full);
        test_graph_output(&t, c);                          /* a constant straight into an output */
        kiln_attrs splat = full;
        splat.n_values = 1;
        uint32_t s = test_graph_add(&t, KILN_OP_CONSTANT, NULL, 0, &splat);
        uint32_t x = tg_input(&t, ty.dtype, rank, dims);
        test_graph_output(&t, test_graph_op2(&t, KILN_OP_ADD, test_graph_op2(&t, KILN_OP_ADD, x, c), s)); /* global + splat in use */
        if (rank > 0) {
            kiln_attrs io = {.dtype = ty.dtype, .rank = rank, .axis = rng_int(&r, 0, rank - 1)};
            memcpy(io.shape, ty.dims, sizeof io.shape);
            test_graph_output(&t, test_graph_add(&t, KILN_OP_IOTA, NULL, 0, &io));
        }
        tg_check(&t, EXACT);
        free(vals);
        test_graph_free(&t);
    }
}

/* ---- the ops autodiff emits ------------------------------------------------------------------ */

static void test_unslice_scatter_add(void **state)
{
    rng r = {40};
    for (int trial = 0; trial < 12; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = 1 + random_shape(&r, 3, dims);
        dims[rank - 1] = rng_dim(&r);
        /* unslice: a random slice's shape back into dims, forwards or backwards */
        kiln_attrs us = {.rank = rank, .axis = rng_int(&r, 0, rank - 1)};
        memcpy(us.shape, dims, sizeof us.shape);
        int64_t len = dims[us.axis];
        us.step = rng_int(&r, 0, 1) ? rng_int(&r, 1, 3) : -rng_int(&r, 1, 3);
        assert_true(kiln_slice_normalize(len, rng_int(&r, 0, 1), rng_int(&r, -(int)len, (int)len), rng_int(&r, 0, 1),
                                         rng_int(&r, -(int)len, (int)len), us.step, &us.start, &us.end));
        if (kiln_slice_count(us.start, us.end, us.step) == 0) us.end = us.start;
        int64_t sd[8];
        memcpy(sd, dims, sizeof sd);
        sd[us.axis] = kiln_slice_count(us.start, us.end, us.step);
        uint32_t x = tg_input(&t, KILN_F32, rank, sd);
        test_graph_output(&t, test_graph_add(&t, KILN_OP_UNSLICE, &x, 1, &us));
        /* scatter_add: rows of g into a table along a random axis, with repeats */
        int ax = rng_int(&r, 0, rank - 1);
        int64_t idims[2] = {rng_dim(&r), trial % 3 ? 2 : 1};
        int irank = rng_int(&r, 0, 2), n_ids = 1;
        for (int d = 0; d < irank; d++) n_ids *= (int)idims[d];
        int32_t *ids = malloc((size_t)n_ids * 4 + 4);
        for (int i = 0; i < n_ids; i++) ids[i] = rng_int(&r, 0, (int)dims[ax] - 1);
        int64_t gd[8];
        int gr = 0;
        for (int d = 0; d < ax; d++) gd[gr++] = dims[d];
        for (int d = 0; d < irank; d++) gd[gr++] = idims[d];
        for (int d = ax + 1; d < rank; d++) gd[gr++] = dims[d];
        if (gr <= 8) {
            uint32_t in[2] = {tg_input(&t, KILN_F32, gr, gd), tg_input_data(&t, KILN_I32, irank, idims, ids)};
            kiln_attrs sa = {.rank = rank, .axis = ax};
            memcpy(sa.shape, dims, sizeof sa.shape);
            test_graph_output(&t, test_graph_add(&t, KILN_OP_SCATTER_ADD, in, 2, &sa));
        } else {
            free(ids);
        }
        tg_check(&t, (tol){1e-5, 1e-5, false});
        test_graph_free(&t);
    }
}

static void test_scatter_add_out_of_range(void **state)
{
    rng r = {41};
    tg t;
    tg_init(&t, &r);
    int64_t gd[2] = {3, 2}, idims[1] = {3};
    int32_t *ids = malloc(12);
    ids[0] = 0, ids[1] = 4, ids[2] = 2;
    uint32_t in[2] = {tg_input(&t, KILN_F32, 2, gd), tg_input_data(&t, KILN_I32, 1, idims, ids)};
    kiln_attrs sa = {.rank = 2, .shape = {4, 2}, .axis = 0};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SCATTER_ADD, in, 2, &sa));
    assert_int_equal(tg_status(&t), KILN_RC_INDEX_RANGE);
    ids[1] = -1;
    assert_int_equal(tg_status(&t), KILN_RC_INDEX_RANGE);
    ids[1] = 3;
    assert_int_equal(tg_status(&t), KILN_RC_OK);
    test_graph_free(&t);
}

static void test_layernorm_grad(void **state)
{
    rng r = {42};
    for (int trial = 0; trial < 8; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[8];
        int rank = 1 + random_shape(&r, 3, dims);
        dims[rank - 1] = rng_dim(&r) + (trial % 2) * 64;
        uint32_t in[3] = {tg_input(&t, KILN_F32, rank, dims), tg_param(&t, 1, &dims[rank - 1]),
                          tg_input(&t, KILN_F32, rank, dims)};
        kiln_attrs a = {.scalar = trial % 3 ? 1e-5 : 0.5};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_LAYERNORM_GRAD, in, 3, &a));
        tg_check(&t, (tol){1e-4, 1e-4, false});
        test_graph_free(&t);
    }
}

/* test_attention's shapes and masks, each of the four gradients */
static void test_attention_grad(void **state)
{
    rng r = {43};
    for (int trial = 0; trial < 14; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t B = rng_int(&r, 1, 2), H = rng_int(&r, 1, 3), T = rng_dim(&r), S = trial % 2 ? T : rng_dim(&r);
        if (trial == 12) S = 0;
        int64_t dh = rng_dim(&r), dv = trial % 3 ? dh : rng_dim(&r);
        int64_t qd[4] = {B, H, T, dh}, kd[4] = {B, H, S, dh}, vd[4] = {B, H, S, dv}, gd[4] = {B, H, T, dv};
        uint32_t in[6];
        uint32_t n_in = 0;
        in[n_in++] = tg_input(&t, KILN_F32, 4, qd);
        in[n_in++] = tg_input(&t, KILN_F32, 4, kd);
        in[n_in++] = tg_input(&t, KILN_F32, 4, vd);
        kiln_attrs a = {.scalar = 1.0 / sqrt((double)dh), .causal = trial % 4 >= 2};
        if (trial % 3 != 1) {
            int64_t md[2] = {B, S};
            float *m = malloc((size_t)(B * S) * 4 + 4);
            for (int64_t i = 0; i < B * S; i++) m[i] = (float)rng_int(&r, 0, 3) != 0;
            if (trial % 5 == 0)
                for (int64_t i = 0; i < S; i++) m[i] = 0;
            in[n_in++] = tg_input_data(&t, KILN_F32, 2, md, m);
            a.has_mask = true;
        }
        if (trial % 2 == 0) {
            int64_t bd[4] = {1, H, T, S};
            int br = trial % 4 == 0 ? 4 : 3;
            in[n_in++] = tg_input(&t, KILN_F32, br, bd + 4 - br);
            a.has_bias = true;
        }
        in[n_in++] = tg_input(&t, KILN_F32, 4, gd);
        for (int w = 0; w < KILN_WRT_COUNT; w++) {
            a.wrt = w;
            test_graph_output(&t, test_graph_add(&t, KILN_OP_ATTENTION_GRAD, in, n_in, &a));
        }
        tg_check(&t, (tol){1e-4, 5e-5, false});
        test_graph_free(&t);
    }
}

static void test_cross_entropy_grad(void **state)
{
    rng r = {44};
    for (int trial = 0; trial < 10; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t dims[3] = {rng_dim(&r), rng_dim(&r), rng_dim(&r) + 1};
        int rank = 1 + trial % 3;
        const int64_t *ld = dims + 3 - rank;
        uint32_t x = tg_input(&t, KILN_F32, rank, ld);
        int64_t rows = kiln_type_numel(&t.g.nodes[x].type) / ld[rank - 1];
        int32_t *tgt = malloc((size_t)rows * 4 + 4);
        for (int64_t i = 0; i < rows; i++) tgt[i] = rng_int(&r, 0, (int)ld[rank - 1] - 1);
        if (rows > 1) tgt[1] = -100;
        if (trial == 7)
            for (int64_t i = 0; i < rows; i++) tgt[i] = -100; /* nothing kept: all zeros */
        uint32_t in[3] = {x, tg_input_data(&t, KILN_I32, rank - 1, ld, tgt), tg_input(&t, KILN_F32, 0, NULL)};
        kiln_attrs a = {.scalar = trial % 3 == 0 ? 0.0 : 0.1, .ignore_index = -100};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CROSS_ENTROPY_GRAD, in, 3, &a));
        tg_check(&t, (tol){1e-4, 1e-6, false});
        test_graph_free(&t);
    }
}

/* A whole backward graph (kiln_autodiff of a small transformer-like block with a
 * cross-entropy loss, and a parameter it does not read) compiled and compared with the
 * interpreter. */
static void test_autodiff_graph(void **state)
{
    rng r = {45};
    for (int trial = 0; trial < 3; trial++) {
        tg t;
        tg_init(&t, &r);
        int64_t B = 2, T = 3 + trial, D = 8, H = 2, V = 11;
        int64_t xd[3] = {B, T, D}, wd[2] = {D, D}, dd[1] = {D}, ed[2] = {V, D}, td[2] = {B, T};
        uint32_t x = tg_input(&t, KILN_F32, 3, xd);
        uint32_t w = tg_param(&t, 2, wd), lw = tg_param(&t, 1, dd), lb = tg_param(&t, 1, dd), emb = tg_param(&t, 2, ed);
        int32_t *tgt = malloc((size_t)(B * T) * 4);
        for (int i = 0; i < B * T; i++) tgt[i] = rng_int(&r, 0, (int)V - 1);
        tgt[1] = -100;
        uint32_t targets = tg_input_data(&t, KILN_I32, 2, td, tgt);
        uint32_t ln_in[3] = {x, lw, lb};
        kiln_attrs eps = {.scalar = 1e-5}, tb = {.transpose_b = true};
        uint32_t h = test_graph_add(&t, KILN_OP_LAYERNORM, ln_in, 3, &eps);
        uint32_t qkv = test_graph_add(&t, KILN_OP_MATMUL, (uint32_t[]){h, w}, 2, &tb);
        kiln_attrs split = {.rank = 4, .shape = {B, T, H, D / H}}, perm = {.perm = {0, 2, 1, 3}};
        uint32_t heads = test_graph_add(&t, KILN_OP_TRANSPOSE, (uint32_t[]){test_graph_add(&t, KILN_OP_RESHAPE, &qkv, 1, &split)}, 1, &perm);
        kiln_attrs at = {.scalar = 0.5, .causal = true};
        uint32_t att = test_graph_add(&t, KILN_OP_ATTENTION, (uint32_t[]){heads, heads, heads}, 3, &at);
        uint32_t back = test_graph_add(&t, KILN_OP_TRANSPOSE, &att, 1, &perm);
        kiln_attrs merge = {.rank = 3, .shape = {B, T, D}};
        uint32_t y = test_graph_op2(&t, KILN_OP_ADD, x, test_graph_op1(&t, KILN_OP_GELU, test_graph_add(&t, KILN_OP_RESHAPE, &back, 1, &merge)));
        uint32_t logits = test_graph_add(&t, KILN_OP_MATMUL, (uint32_t[]){y, emb}, 2, &tb);
        kiln_attrs ce = {.scalar = 0.1, .ignore_index = -100};
        uint32_t loss = test_graph_add(&t, KILN_OP_CROSS_ENTROPY, (uint32_t[]){logits, targets}, 2, &ce);
        uint32_t unused = tg_param(&t, 1, dd); /* its gradient is a zeros constant, computed into its output */
        uint32_t wrt[6] = {x, w, lw, lb, emb, unused}, grads[6];
        if (!kiln_autodiff(&t.g, loss, wrt, 6, grads, &t.d)) test_graph_fail(&t, "kiln_autodiff");
        test_graph_output(&t, loss);
        for (int i = 0; i < 6; i++) test_graph_output(&t, grads[i]);
        tg_check(&t, (tol){1e-3, 1e-5, false});
        test_graph_free(&t);
    }
}

/* ---- memory planning ------------------------------------------------------------------------- */

/* A long chain reuses memory: the plan is far below the sum and equals the bound. */
static void test_memplan_reuse(void **state)
{
    rng r = {17};
    tg t;
    tg_init(&t, &r);
    t.no_fuse = true; /* what is tested is the plan of one kernel per node */
    int64_t dims[2] = {33, 65};
    uint32_t h = tg_input(&t, KILN_F32, 2, dims);
    for (int i = 0; i < 12; i++) h = test_graph_op1(&t, i % 2 ? KILN_OP_TANH : KILN_OP_SQUARE, h);
    test_graph_output(&t, h);
    kiln_compile_request req = test_graph_request(&t);
    kiln_memplan p;
    int n_kernels;
    assert_true(kiln_codegen_plan(&req, &p, &n_kernels, &t.d));
    assert_int_equal(n_kernels, 12);
    int64_t one = (33 * 65 * 4 + 63) / 64 * 64;
    assert_int_equal(p.unplanned_bytes, 11 * one);      /* the last one is the output */
    assert_int_equal(p.lower_bound_bytes, 2 * one);
    assert_int_equal(p.workspace_bytes, 2 * one);
    char msg[256];
    assert_true(kiln_memplan_check(&p, msg, sizeof msg));
    kiln_memplan_free(&p);
    tg_check(&t, (tol){1e-5, 1e-6, false});
    test_graph_free(&t);
}

/* Views alias, outputs that live elsewhere are copied, duplicates work. */
static void test_memplan_homes(void **state)
{
    rng r = {18};
    tg t;
    tg_init(&t, &r);
    t.no_fuse = true; /* what is tested is the plan of one kernel per node */
    int64_t dims[2] = {6, 7}, pd[1] = {7};
    uint32_t x = tg_input(&t, KILN_F32, 2, dims), w = tg_param(&t, 1, pd);
    uint32_t e = test_graph_op1(&t, KILN_OP_EXP, x);
    kiln_attrs rs = {.rank = 1, .shape = {42}};
    uint32_t v = test_graph_add(&t, KILN_OP_RESHAPE, &e, 1, &rs);
    kiln_attrs rs2 = {.rank = 3, .shape = {2, 3, 7}};
    uint32_t v2 = test_graph_add(&t, KILN_OP_RESHAPE, &v, 1, &rs2);  /* a view of a view */
    uint32_t y = test_graph_op1(&t, KILN_OP_NEG, v2);
    uint32_t xr = test_graph_add(&t, KILN_OP_RESHAPE, &x, 1, &rs);   /* a view of an input, as output */
    test_graph_output(&t, y);
    test_graph_output(&t, y);   /* the same node twice */
    test_graph_output(&t, x);   /* an input */
    test_graph_output(&t, w);   /* a parameter */
    test_graph_output(&t, xr);
    test_graph_output(&t, v2);  /* a view, as output */

    kiln_compile_request req = test_graph_request(&t);
    kiln_memplan p;
    int n_kernels;
    assert_true(kiln_codegen_plan(&req, &p, &n_kernels, &t.d));
    assert_int_equal(p.homes[e].kind, KILN_HOME_WORKSPACE);
    assert_int_equal(p.homes[v].kind, KILN_HOME_ALIAS);
    assert_int_equal(p.homes[v].index, e);
    assert_int_equal(p.homes[v2].kind, KILN_HOME_OUTPUT); /* an output computes into it */
    assert_int_equal(p.homes[y].kind, KILN_HOME_OUTPUT);
    assert_int_equal(p.homes[w].kind, KILN_HOME_PARAM);
    assert_int_equal(p.n_copies, 3);                       /* y again, x, w */
    assert_int_equal(p.homes[e].last, p.homes[v2].first);  /* read through v2's copy kernel */
    char msg[256];
    assert_true(kiln_memplan_check(&p, msg, sizeof msg));
    kiln_memplan_free(&p);
    tg_check(&t, ELEMENTWISE);  /* exp is vmath's, within 1 ulp of the interpreter */
    test_graph_free(&t);
}

/* Parameter offsets are 64-byte aligned, in request order. */
static void test_memplan_params(void **state)
{
    rng r = {19};
    tg t;
    tg_init(&t, &r);
    int64_t a[1] = {7}, b[2] = {5, 7}, c[1] = {16};
    uint32_t pa = tg_param(&t, 1, a), pb = tg_param(&t, 2, b), pc = tg_param(&t, 1, c);
    test_graph_output(&t, test_graph_op2(&t, KILN_OP_ADD, pb, test_graph_op2(&t, KILN_OP_MUL, pa, pa)));
    (void)pc;
    run rr;
    tg_run(&t, &rr);
    assert_int_equal(rr.rc, 0);
    assert_int_equal(rr.c.param_offsets[0], 0);
    assert_int_equal(rr.c.param_offsets[1], 64);
    assert_int_equal(rr.c.param_offsets[2], 64 + 192);
    assert_int_equal(rr.c.params_bytes, 64 + 192 + 64);
    run_free(&t, &rr);
    (void)pb;
    test_graph_free(&t);
}

/* Nodes with equal kernels (same op, attributes and operand types) share one function. */
static void test_kernels_shared(void **state)
{
    rng r = {22};
    tg t;
    tg_init(&t, &r);
    t.no_fuse = true; /* what is tested is the plan of one kernel per node */
    int64_t dims[2] = {5, 9};
    uint32_t h = tg_input(&t, KILN_F32, 2, dims);
    for (int i = 0; i < 8; i++) h = test_graph_op1(&t, i % 2 ? KILN_OP_TANH : KILN_OP_SQUARE, h);
    kiln_attrs sc = {.scalar = 0.5};
    h = test_graph_add(&t, KILN_OP_SCALE, &h, 1, &sc);
    sc.scalar = 0.25; /* another attribute: another function */
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SCALE, &h, 1, &sc));
    run rr;
    tg_run(&t, &rr);
    assert_int_equal(rr.rc, 0);
    assert_int_equal(rr.c.n_kernels, 10);
    assert_int_equal(rr.c.n_functions, 4);
    run_free(&t, &rr);
    tg_check(&t, (tol){1e-5, 1e-6, false});
    test_graph_free(&t);
}

/* ---- machine code -------------------------------------------------------------------------- */

/* --emit llvm / asm: the optimised module as text, with the entry as its only export. */
static void test_emit(void **state)
{
    rng r = {23};
    tg t;
    tg_init(&t, &r);
    int64_t dims[2] = {16, 40};
    uint32_t x = tg_input(&t, KILN_F32, 2, dims);
    test_graph_output(&t, test_graph_op1(&t, KILN_OP_EXP, x));
    kiln_compile_request req = test_graph_request(&t);
    char *ir = kiln_codegen_emit(&req, false, &t.d);
    if (!ir) test_graph_fail(&t, "kiln_codegen_emit");
    assert_non_null(strstr(ir, "i32 @t_forward(ptr"));
    assert_non_null(strstr(ir, "%in_x0"));
    assert_non_null(strstr(ir, "define internal"));
    assert_non_null(strstr(ir, "\"prefer-vector-width\"=\"512\""));
    assert_null(strstr(ir, "min-legal-vector-width"));
    free(ir);
    char *text = kiln_codegen_emit(&req, true, &t.d);
    if (!text) test_graph_fail(&t, "kiln_codegen_emit");
    assert_non_null(strstr(text, "t_forward:"));
    assert_non_null(strstr(text, ".globl\tt_forward"));
    free(text);
    test_graph_free(&t);
}

static char *compile_asm(tg *t)
{
    kiln_compile_request req = test_graph_request(t);
    req.emit_asm = true;
    kiln_compiled c;
    if (!kiln_compile_graph(&req, &c, &t->d)) test_graph_fail(t, "kiln_compile_graph");
    char *text = c.asm_text;
    c.asm_text = NULL;
    kiln_compiled_free(&c);
    return text;
}

/* An error diagnostic inside LLVM (here: inline assembly it cannot assemble) is kiln's
 * bug and must end as an internal error (message, abort), not in LLVM's default exit(1).
 * Run in a child, whose stderr goes to a file. */
static void test_llvm_error_diagnostic(void **state)
{
    (void)state;
    char path[] = "/tmp/kiln-test-llvm-diag-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        kiln_target host;
        kiln_diags d;
        kiln_diags_init(&d);
        if (!kiln_target_host(&host, &d)) _exit(3);
        kiln_cg cg;
        kiln_cg_init(&cg, &host, "diag");
        LLVMTypeRef fn_type = LLVMFunctionType(cg.t_void, NULL, 0, 0);
        LLVMValueRef fn = LLVMAddFunction(cg.mod, "f", fn_type);
        LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, fn, "entry"));
        const char *bad = "kiln_no_such_instruction %eax";
        LLVMValueRef asm_fn = LLVMGetInlineAsm(fn_type, (char *)bad, strlen(bad), "", 0, 1, 0, LLVMInlineAsmDialectATT, 0);
        LLVMBuildCall2(cg.b, fn_type, asm_fn, NULL, 0, "");
        LLVMBuildRetVoid(cg.b);
        LLVMMemoryBufferRef obj;
        char *err = NULL;
        LLVMTargetMachineEmitToMemoryBuffer(host.tm, cg.mod, LLVMObjectFile, &err, &obj);
        _exit(4); /* LLVM accepted it, or the handler returned */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    char text[4096] = {0};
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)) {
        print_message("child: %s %d; stderr: %.*s\n", WIFSIGNALED(status) ? "signal" : "exit",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), (int)(n > 0 ? n : 0), text);
        fail();
    }
    assert_non_null(strstr(text, "kiln: internal error in LLVM:"));
    assert_non_null(strstr(text, "kiln_no_such_instruction"));
}

static void test_asm_vectorised(void **state)
{
    kiln_target host;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_true(kiln_target_host(&host, &d));
    rng r = {20};
    tg t;
    tg_init(&t, &r);
    t.target = &host;
    int64_t ad[2] = {64, 96}, bd[2] = {96, 128};
    uint32_t a = tg_input(&t, KILN_F32, 2, ad), b = tg_input(&t, KILN_F32, 2, bd);
    uint32_t m = test_graph_op2(&t, KILN_OP_MATMUL, a, b);
    test_graph_output(&t, test_graph_op1(&t, KILN_OP_RELU, test_graph_op2(&t, KILN_OP_MUL, test_graph_op2(&t, KILN_OP_ADD, m, m), m)));
    char *text = compile_asm(&t);
    if (host.vector_floats == 16) {
        assert_non_null(strstr(text, "zmm"));
        assert_non_null(strstr(text, "vfmadd"));
    } else {
        print_message("host has no avx512f: zmm check skipped\n");
    }
    /* the elementwise chain: packed single-precision vector adds and multiplies */
    assert_non_null(strstr(text, "vaddps"));
    assert_non_null(strstr(text, "vmulps"));
    free(text);
    test_graph_free(&t);
    kiln_target_free(&host);
    kiln_diags_free(&d);
}

/* An AVX2-only target: no 512-bit registers, and the code still computes the right
 * thing (the host can run it). */
static void test_avx2_target(void **state)
{
    kiln_target hw;
    kiln_diags d;
    kiln_diags_init(&d);
    assert_true(kiln_target_for(&hw, "haswell", "", &d));
    assert_int_equal(hw.vector_floats, 8);
    rng r = {21};
    tg t;
    tg_init(&t, &r);
    t.target = &hw;
    int64_t ad[2] = {13, 40}, bd[2] = {40, 33};
    uint32_t a = tg_input(&t, KILN_F32, 2, ad), b = tg_input(&t, KILN_F32, 2, bd);
    uint32_t m = test_graph_op2(&t, KILN_OP_MATMUL, a, b);
    kiln_attrs ax = {.axis = 1};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SOFTMAX, &m, 1, &ax));
    char *text = compile_asm(&t);
    assert_null(strstr(text, "zmm"));
    assert_non_null(strstr(text, "ymm"));
    free(text);
    tg_check(&t, (tol){1e-5, 1e-6, false});
    test_graph_free(&t);
    kiln_target_free(&hw);
    kiln_diags_free(&d);
}

/* Every op with a kernel was compiled and compared with the interpreter by some test
 * above (the sources have their own checks: inputs and parameters need no kernel). */
static void test_every_op_compiled(void **state)
{
    for (int op = 0; op < KILN_OP_COUNT; op++)
        if (kiln_op_table[op].kind != KILN_KIND_SOURCE && !compiled_ops[op])
            fail_msg("op '%s' is never compiled by test_codegen", kiln_op_table[op].name);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_f32),
        cmocka_unit_test(test_binary_i32),
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_where_and_cast),
        cmocka_unit_test(test_elementwise_chain),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_cross_entropy_bad_target),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_gather_out_of_range),
        cmocka_unit_test(test_update_slice),
        cmocka_unit_test(test_update_slice_in_place),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_memplan_reuse),
        cmocka_unit_test(test_memplan_homes),
        cmocka_unit_test(test_memplan_params),
        cmocka_unit_test(test_kernels_shared),
        cmocka_unit_test(test_emit),
        cmocka_unit_test(test_asm_vectorised),
        cmocka_unit_test(test_avx2_target),
        cmocka_unit_test(test_unslice_scatter_add),
        cmocka_unit_test(test_scatter_add_out_of_range),
        cmocka_unit_test(test_layernorm_grad),
        cmocka_unit_test(test_attention_grad),
        cmocka_unit_test(test_cross_entropy_grad),
        cmocka_unit_test(test_autodiff_graph),
        cmocka_unit_test(test_llvm_error_diagnostic),
        cmocka_unit_test(test_every_op_compiled), /* last: it reads what the others compiled */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
