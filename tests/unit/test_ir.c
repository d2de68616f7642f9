/* test_ir.c — the IR: builder and shape rules for every op in ops.def, shape errors,
 * the text form (exact format, round trip, hostile input, golden files) and the
 * verifier (on good graphs and on hand-corrupted ones).
 *
 * Graphs are built through kiln_graph_add only, as the rest of kiln does. Each test gets
 * a fresh graph and diagnostics from the fixture. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ---- fixture and helpers ------------------------------------------------------------- */

typedef struct fx {
    kiln_graph g;
    kiln_diags d;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    kiln_graph_init(&f->g, "t");
    kiln_diags_init(&f->d);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kiln_graph_free(&f->g);
    kiln_diags_free(&f->d);
    free(f);
    return 0;
}

/* SHAPE(2,3) expands to a dims pointer and its rank. */
#define SHAPE(...) ((const int64_t[]){__VA_ARGS__}), (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define SCALAR_SHAPE NULL, 0

static kiln_attrs type_attrs(kiln_dtype dt, const int64_t *dims, int rank)
{
    kiln_attrs a;
    memset(&a, 0, sizeof a);
    a.dtype = dt;
    a.rank = rank;
    if (rank) memcpy(a.shape, dims, (size_t)rank * sizeof *dims);
    return a;
}

static uint32_t input(fx *f, const char *name, kiln_dtype dt, const int64_t *dims, int rank)
{
    kiln_attrs a = type_attrs(dt, dims, rank);
    a.name = name;
    return kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &a, name, "inputs", &f->d);
}

static uint32_t param(fx *f, const char *name, kiln_init init, double arg, const int64_t *dims, int rank)
{
    kiln_attrs a = type_attrs(KILN_F32, dims, rank);
    a.name = name;
    a.init = init;
    a.init_arg = arg;
    return kiln_graph_add(&f->g, KILN_OP_PARAM, NULL, 0, &a, name, "params", &f->d);
}

static uint32_t opn(fx *f, kiln_op op, const uint32_t *in, uint32_t n, const kiln_attrs *a)
{
    return kiln_graph_add(&f->g, op, in, n, a, kiln_op_table[op].name, "layers[0]", &f->d);
}

static uint32_t op1(fx *f, kiln_op op, uint32_t x, const kiln_attrs *a) { return opn(f, op, &x, 1, a); }

static uint32_t op2(fx *f, kiln_op op, uint32_t x, uint32_t y, const kiln_attrs *a)
{
    uint32_t in[2] = {x, y};
    return opn(f, op, in, 2, a);
}

static kiln_attrs axis_attrs(int64_t axis)
{
    kiln_attrs a;
    memset(&a, 0, sizeof a);
    a.axis = axis;
    return a;
}

static kiln_attrs scalar_attrs(double s)
{
    kiln_attrs a;
    memset(&a, 0, sizeof a);
    a.scalar = s;
    return a;
}

static void check_type(fx *f, uint32_t id, kiln_dtype dt, const int64_t *dims, int rank)
{
    char got[160];
    if (id == KILN_NONE) {
        if (f->d.n) fprintf(stderr, "unexpected error: %s\n", f->d.items[f->d.n - 1].message);
        fail_msg("node was refused");
    }
    const kiln_type *t = &f->g.nodes[id].type;
    kiln_type want = {dt, rank, {0}};
    if (rank) memcpy(want.dims, dims, (size_t)rank * sizeof *dims);
    if (!kiln_type_equal(t, &want)) fail_msg("type %s", kiln_type_str(t, got, sizeof got));
    assert_int_equal(f->d.n, 0);
}

/* The node was refused with exactly one new diagnostic mentioning `what`. */
static void check_refused(fx *f, uint32_t id, int diags_before, const char *what)
{
    assert_int_equal(id, KILN_NONE);
    assert_int_equal(f->d.n, diags_before + 1);
    const char *msg = f->d.items[f->d.n - 1].message;
    if (!strstr(msg, what)) fail_msg("message '%s' lacks '%s'", msg, what);
}

static char *read_text_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, fp);
    s[got] = 0;
    fclose(fp);
    return s;
}

/* ---- a graph using every op ------------------------------------------------------------ */

/* Builds one graph that holds every row of ops.def at least once (test_every_row_built
 * checks that), with labels, origins, odd floats and a loss. */
static void build_all_ops(fx *f)
{
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    uint32_t y = input(f, "y", KILN_F32, SHAPE(3));
    uint32_t idx = input(f, "idx", KILN_I32, SHAPE(2, 4));
    uint32_t tgt = input(f, "targets", KILN_I32, SHAPE(2));
    uint32_t w = param(f, "fc.weight", KILN_INIT_NORMAL, 0.02, SHAPE(3, 4));
    uint32_t b = param(f, "fc.bias", KILN_INIT_ZEROS, 0, SHAPE(4));
    param(f, "ln.weight", KILN_INIT_ONES, 0, SHAPE(3));
    param(f, "emb", KILN_INIT_UNIFORM, 0.1, SHAPE(5, 3));

    float cv[3] = {0.5f, -1.0f, 0.1f};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(3));
    ca.values = cv;
    ca.n_values = 3;
    uint32_t c = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    int32_t iv[1] = {7};
    kiln_attrs cia = type_attrs(KILN_I32, SHAPE(2, 4));
    cia.values = iv;
    cia.n_values = 1;
    uint32_t ci = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &cia, "sevens", NULL, &f->d);
    kiln_attrs ia = type_attrs(KILN_I32, SHAPE(2, 4));
    ia.axis = -1;
    uint32_t io = kiln_graph_add(&f->g, KILN_OP_IOTA, NULL, 0, &ia, "pos", "layers[1]", &f->d);
    op2(f, KILN_OP_ADD, io, ci, NULL);

    static const kiln_op binary[] = {KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_DIV, KILN_OP_MAXIMUM,
                                     KILN_OP_MINIMUM, KILN_OP_POW, KILN_OP_LT, KILN_OP_GT, KILN_OP_EQ};
    for (size_t i = 0; i < sizeof binary / sizeof *binary; i++) op2(f, binary[i], x, y, NULL);
    uint32_t cond = op2(f, KILN_OP_LT, x, c, NULL);
    uint32_t wh[3] = {cond, x, y};
    opn(f, KILN_OP_WHERE, wh, 3, NULL);

    static const kiln_op unary[] = {KILN_OP_NEG, KILN_OP_EXP, KILN_OP_LOG, KILN_OP_SQRT, KILN_OP_RSQRT,
                                    KILN_OP_ABS, KILN_OP_SQUARE, KILN_OP_RECIP, KILN_OP_TANH, KILN_OP_SIGMOID,
                                    KILN_OP_RELU, KILN_OP_SILU, KILN_OP_GELU, KILN_OP_GELU_TANH, KILN_OP_ERF};
    for (size_t i = 0; i < sizeof unary / sizeof *unary; i++) op1(f, unary[i], x, NULL);
    kiln_attrs sa = scalar_attrs(0.1);
    op1(f, KILN_OP_SCALE, x, &sa);
    kiln_attrs da = scalar_attrs(0.25);
    op1(f, KILN_OP_DROPOUT, x, &da);
    kiln_attrs cast = type_attrs(KILN_F32, NULL, 0);
    op1(f, KILN_OP_CAST, idx, &cast);

    kiln_attrs ra = {0};
    ra.n_axes = 1;
    ra.axes[0] = -1;
    op1(f, KILN_OP_SUM, x, &ra);
    ra.n_axes = 2;
    ra.axes[0] = 1;
    ra.axes[1] = 0;
    ra.keepdims = true;
    op1(f, KILN_OP_MEAN, x, &ra);
    ra.n_axes = 1;
    ra.axes[0] = 0;
    ra.keepdims = false;
    op1(f, KILN_OP_MAX, idx, &ra);

    uint32_t h = op2(f, KILN_OP_MATMUL, x, w, NULL);
    kiln_attrs ta = {0};
    ta.transpose_a = true;
    ta.transpose_b = true;
    op2(f, KILN_OP_MATMUL, w, x, &ta);
    uint32_t logits = op2(f, KILN_OP_ADD, h, b, NULL);

    kiln_attrs rs = type_attrs(KILN_F32, SHAPE(-1, 2));
    op1(f, KILN_OP_RESHAPE, x, &rs);
    kiln_attrs pa = {0};
    pa.perm[0] = -1;
    pa.perm[1] = 0;
    op1(f, KILN_OP_TRANSPOSE, x, &pa);
    kiln_attrs sl = {0};
    sl.axis = 1;
    sl.step = -2;
    kiln_slice_normalize(3, false, 0, false, 0, sl.step, &sl.start, &sl.end);
    uint32_t sliced = op1(f, KILN_OP_SLICE, x, &sl);
    kiln_attrs us = type_attrs(KILN_F32, SHAPE(2, 3)); /* the gradient ops autodiff emits */
    us.axis = 1, us.start = sl.start, us.end = sl.end, us.step = sl.step;
    op1(f, KILN_OP_UNSLICE, sliced, &us);
    uint32_t cc[3] = {x, x, x};
    kiln_attrs cca = axis_attrs(0);
    opn(f, KILN_OP_CONCAT, cc, 3, &cca);
    kiln_attrs ba = type_attrs(KILN_F32, SHAPE(4, 2, 3));
    op1(f, KILN_OP_BROADCAST, y, &ba);
    kiln_attrs ga = axis_attrs(0);
    uint32_t rows = op2(f, KILN_OP_GATHER, w, idx, &ga);
    kiln_attrs sc = type_attrs(KILN_F32, SHAPE(3, 4));
    op2(f, KILN_OP_SCATTER_ADD, rows, idx, &sc);
    int32_t one[1] = {1};
    kiln_attrs sa1 = type_attrs(KILN_I32, SHAPE(1));
    sa1.values = one;
    sa1.n_values = 1;
    uint32_t start = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &sa1, NULL, NULL, &f->d);
    kiln_attrs rb = type_attrs(KILN_F32, SHAPE(1, 4));
    uint32_t us_in[3] = {w, op1(f, KILN_OP_RESHAPE, b, &rb), start};
    opn(f, KILN_OP_UPDATE_SLICE, us_in, 3, &ga);

    kiln_attrs sm = axis_attrs(-1);
    op1(f, KILN_OP_SOFTMAX, x, &sm);
    op1(f, KILN_OP_LOG_SOFTMAX, x, &sm);
    uint32_t ln[3] = {x, y, c};
    kiln_attrs eps = scalar_attrs(1e-5);
    opn(f, KILN_OP_LAYERNORM, ln, 3, &eps);
    uint32_t lng[3] = {x, y, x};
    opn(f, KILN_OP_LAYERNORM_GRAD, lng, 3, &eps);

    uint32_t q = input(f, "q", KILN_F32, SHAPE(2, 2, 4, 8));
    uint32_t k = input(f, "k", KILN_F32, SHAPE(2, 2, 5, 8));
    uint32_t v = input(f, "v", KILN_F32, SHAPE(2, 2, 5, 6));
    uint32_t m = input(f, "mask", KILN_F32, SHAPE(2, 5));
    uint32_t bias = input(f, "bias", KILN_F32, SHAPE(1, 4, 5));
    uint32_t at[5] = {q, k, v, m, bias};
    kiln_attrs aa = scalar_attrs(1.0 / sqrt(8.0));
    aa.causal = true;
    aa.has_mask = true;
    aa.has_bias = true;
    uint32_t att = opn(f, KILN_OP_ATTENTION, at, 5, &aa);
    uint32_t atg[6] = {q, k, v, m, bias, att};
    aa.wrt = KILN_WRT_SCORES;
    opn(f, KILN_OP_ATTENTION_GRAD, atg, 6, &aa);
    uint32_t lse = opn(f, KILN_OP_ATTENTION_LSE, at, 5, &aa);
    uint32_t atgs[8] = {q, k, v, m, bias, att, lse, att}; /* with the forward's o and lse */
    aa.wrt = KILN_WRT_Q;
    opn(f, KILN_OP_ATTENTION_GRAD, atgs, 8, &aa);

    kiln_attrs xe = scalar_attrs(0.1);
    xe.ignore_index = -100;
    uint32_t loss = op2(f, KILN_OP_CROSS_ENTROPY, logits, tgt, &xe);
    uint32_t xeg[3] = {logits, tgt, loss};
    opn(f, KILN_OP_CROSS_ENTROPY_GRAD, xeg, 3, &xe);

    /* a training step's shape: optimizer state and updates of a parameter and a state */
    kiln_attrs sta = type_attrs(KILN_F32, SHAPE(3, 4));
    sta.name = "optim.m.fc.weight";
    uint32_t st = kiln_graph_add(&f->g, KILN_OP_STATE, NULL, 0, &sta, NULL, NULL, &f->d);
    uint32_t st_new = op2(f, KILN_OP_ADD, st, w, NULL);
    kiln_attrs step = scalar_attrs(-0.5);
    kiln_graph_add_update(&f->g, w, op1(f, KILN_OP_SCALE, st_new, &step));
    kiln_graph_add_update(&f->g, st, st_new);

    kiln_graph_add_output(&f->g, "logits", logits);
    kiln_graph_add_output(&f->g, "attn out", att);
    f->g.loss = loss;
    assert_int_equal(f->d.n, 0);
}

/* ---- builder: every op ----------------------------------------------------------------- */

static void test_every_row_built(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    int count[KILN_OP_COUNT] = {0};
    for (uint32_t i = 0; i < f->g.n_nodes; i++) count[f->g.nodes[i].op]++;
    for (int op = 0; op < KILN_OP_COUNT; op++)
        if (count[op] == 0) fail_msg("op '%s' is not in the all-ops graph", kiln_op_table[op].name);
}

static void test_op_table(void **state)
{
    (void)state;
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        const kiln_op_info *info = &kiln_op_table[op];
        assert_non_null(info->name);
        assert_int_equal(kiln_op_from_name(info->name), op);
        /* an op with a scalar attribute names it, and only then */
        assert_int_equal(info->scalar_name != NULL, (info->attrs & KILN_A_SCALAR) != 0);
        if (info->kind == KILN_KIND_SOURCE) assert_int_equal(info->arity, 0);
    }
    assert_int_equal(kiln_op_from_name("nope"), KILN_OP_COUNT);
}

static void test_sources(void **state)
{
    fx *f = *state;
    check_type(f, input(f, "tokens", KILN_I32, SHAPE(2, 6)), KILN_I32, SHAPE(2, 6));
    check_type(f, input(f, "s", KILN_F32, SCALAR_SHAPE), KILN_F32, SCALAR_SHAPE);
    uint32_t p = param(f, "w", KILN_INIT_NORMAL, 0.02, SHAPE(17, 16));
    check_type(f, p, KILN_F32, SHAPE(17, 16));
    assert_string_equal(f->g.nodes[p].attrs.name, "w");

    float v[6] = {1, 2, 3, 4, 5, 6};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(2, 3));
    ca.values = v;
    ca.n_values = 6;
    uint32_t c = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    check_type(f, c, KILN_F32, SHAPE(2, 3));
    v[0] = 99; /* the graph owns a copy */
    assert_true(((const float *)f->g.nodes[c].attrs.values)[0] == 1.0f);

    kiln_attrs ia = type_attrs(KILN_I32, SHAPE(4, 5));
    ia.axis = -2;
    uint32_t io = kiln_graph_add(&f->g, KILN_OP_IOTA, NULL, 0, &ia, NULL, NULL, &f->d);
    check_type(f, io, KILN_I32, SHAPE(4, 5));
    assert_int_equal(f->g.nodes[io].attrs.axis, 0);
}

static void test_binary_broadcasting(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(4, 1, 3));
    uint32_t y = input(f, "y", KILN_F32, SHAPE(5, 1));
    static const kiln_op ops[] = {KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_DIV, KILN_OP_MAXIMUM,
                                  KILN_OP_MINIMUM, KILN_OP_POW};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        check_type(f, op2(f, ops[i], x, y, NULL), KILN_F32, SHAPE(4, 5, 3));
    uint32_t i1 = input(f, "i1", KILN_I32, SHAPE(3));
    uint32_t i2 = input(f, "i2", KILN_I32, SCALAR_SHAPE);
    check_type(f, op2(f, KILN_OP_ADD, i1, i2, NULL), KILN_I32, SHAPE(3));
    check_type(f, op2(f, KILN_OP_MAXIMUM, i1, i2, NULL), KILN_I32, SHAPE(3));
}

static void test_comparisons_give_f32(void **state)
{
    fx *f = *state;
    uint32_t a = input(f, "a", KILN_I32, SHAPE(2, 3));
    uint32_t b = input(f, "b", KILN_I32, SHAPE(3));
    check_type(f, op2(f, KILN_OP_LT, a, b, NULL), KILN_F32, SHAPE(2, 3));
    check_type(f, op2(f, KILN_OP_GT, a, b, NULL), KILN_F32, SHAPE(2, 3));
    check_type(f, op2(f, KILN_OP_EQ, a, b, NULL), KILN_F32, SHAPE(2, 3));
}

static void test_where(void **state)
{
    fx *f = *state;
    uint32_t c = input(f, "c", KILN_F32, SHAPE(2, 1));
    uint32_t x = input(f, "x", KILN_F32, SHAPE(3));
    uint32_t y = input(f, "y", KILN_F32, SCALAR_SHAPE);
    uint32_t in[3] = {c, x, y};
    check_type(f, opn(f, KILN_OP_WHERE, in, 3, NULL), KILN_F32, SHAPE(2, 3));
}

static void test_unary(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    static const kiln_op ops[] = {KILN_OP_NEG, KILN_OP_EXP, KILN_OP_LOG, KILN_OP_SQRT, KILN_OP_RSQRT,
                                  KILN_OP_ABS, KILN_OP_SQUARE, KILN_OP_RECIP, KILN_OP_TANH, KILN_OP_SIGMOID,
                                  KILN_OP_RELU, KILN_OP_SILU, KILN_OP_GELU, KILN_OP_GELU_TANH};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) check_type(f, op1(f, ops[i], x, NULL), KILN_F32, SHAPE(2, 3));
    /* neg and abs also take i32; the others need f32 */
    uint32_t i = input(f, "i", KILN_I32, SHAPE(4));
    check_type(f, op1(f, KILN_OP_NEG, i, NULL), KILN_I32, SHAPE(4));
    check_type(f, op1(f, KILN_OP_ABS, i, NULL), KILN_I32, SHAPE(4));
    check_refused(f, op1(f, KILN_OP_EXP, i, NULL), 0, "must be f32");
}

static void test_scale_dropout_cast(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    kiln_attrs s = scalar_attrs(-3.5);
    uint32_t sc = op1(f, KILN_OP_SCALE, x, &s);
    check_type(f, sc, KILN_F32, SHAPE(2, 3));
    assert_true(f->g.nodes[sc].attrs.scalar == -3.5);
    kiln_attrs p = scalar_attrs(0.5);
    check_type(f, op1(f, KILN_OP_DROPOUT, x, &p), KILN_F32, SHAPE(2, 3));
    kiln_attrs to_i = type_attrs(KILN_I32, NULL, 0);
    uint32_t ci = op1(f, KILN_OP_CAST, x, &to_i);
    check_type(f, ci, KILN_I32, SHAPE(2, 3));
    /* the rule records the shape in the attributes, so the type attribute is the result */
    assert_int_equal(f->g.nodes[ci].attrs.rank, 2);
    p.scalar = 1.0;
    check_refused(f, op1(f, KILN_OP_DROPOUT, x, &p), 0, "[0, 1)");
}

static void reset_diags(fx *f)
{
    kiln_diags_free(&f->d);
    kiln_diags_init(&f->d);
}

/* The ops autodiff emits: their shape rules and what they refuse. */
static void test_gradient_ops(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3)), idx = input(f, "idx", KILN_I32, SHAPE(4));
    /* unslice: x (2, 3) is the slice [1:7:2] of axis 1 of a (2, 7) */
    kiln_attrs us = type_attrs(KILN_F32, SHAPE(2, 7));
    us.axis = -1, us.start = 1, us.end = 7, us.step = 2;
    uint32_t u = op1(f, KILN_OP_UNSLICE, x, &us);
    check_type(f, u, KILN_F32, SHAPE(2, 7));
    assert_int_equal(f->g.nodes[u].attrs.axis, 1);
    us.step = 3; /* [1:7:3] has 2 elements, x has 3 */
    check_refused(f, op1(f, KILN_OP_UNSLICE, x, &us), 0, "is not the slice");
    reset_diags(f);
    us.step = 0;
    check_refused(f, op1(f, KILN_OP_UNSLICE, x, &us), 0, "step must not be 0");
    reset_diags(f);
    /* scatter_add: g must be what gather(table, idx) gives */
    uint32_t g = input(f, "g", KILN_F32, SHAPE(2, 4));
    kiln_attrs sa = type_attrs(KILN_F32, SHAPE(2, 9));
    sa.axis = 1;
    check_type(f, op2(f, KILN_OP_SCATTER_ADD, g, idx, &sa), KILN_F32, SHAPE(2, 9));
    sa.axis = 0;
    check_refused(f, op2(f, KILN_OP_SCATTER_ADD, g, idx, &sa), 0, "must be f32[4,9]");
    reset_diags(f);
    check_refused(f, op2(f, KILN_OP_SCATTER_ADD, g, g, &sa), 0, "indices must be i32");
    reset_diags(f);
    /* update_slice: the update is x's type but along axis; start is one i32 */
    uint32_t big = input(f, "big", KILN_F32, SHAPE(2, 7)), one = input(f, "one", KILN_I32, SHAPE(1));
    kiln_attrs ua = axis_attrs(-1);
    uint32_t upd = opn(f, KILN_OP_UPDATE_SLICE, (uint32_t[]){big, x, one}, 3, &ua);
    check_type(f, upd, KILN_F32, SHAPE(2, 7));
    assert_int_equal(f->g.nodes[upd].attrs.axis, 1);
    ua.axis = 0;
    check_refused(f, opn(f, KILN_OP_UPDATE_SLICE, (uint32_t[]){big, x, one}, 3, &ua), 0, "but along axis 0");
    reset_diags(f);
    ua.axis = 1;
    check_refused(f, opn(f, KILN_OP_UPDATE_SLICE, (uint32_t[]){big, x, idx}, 3, &ua), 0, "start must be one i32");
    reset_diags(f);
    /* layernorm_grad: the cotangent has the input's type */
    uint32_t w = input(f, "w", KILN_F32, SHAPE(3));
    kiln_attrs eps = scalar_attrs(1e-5);
    uint32_t ln[3] = {x, w, x};
    check_type(f, opn(f, KILN_OP_LAYERNORM_GRAD, ln, 3, &eps), KILN_F32, SHAPE(2, 3));
    ln[2] = g;
    check_refused(f, opn(f, KILN_OP_LAYERNORM_GRAD, ln, 3, &eps), 0, "cotangent");
    reset_diags(f);
    /* attention_grad: one gradient per wrt; the scores are (…, T, S) */
    uint32_t q = input(f, "q", KILN_F32, SHAPE(1, 2, 4, 8)), k = input(f, "k", KILN_F32, SHAPE(1, 2, 5, 8));
    uint32_t v = input(f, "v", KILN_F32, SHAPE(1, 2, 5, 6)), dy = input(f, "dy", KILN_F32, SHAPE(1, 2, 4, 6));
    uint32_t at[4] = {q, k, v, dy};
    kiln_attrs aa = scalar_attrs(0.35);
    const int64_t want[4][4] = {{1, 2, 4, 8}, {1, 2, 5, 8}, {1, 2, 5, 6}, {1, 2, 4, 5}};
    for (int wrt = 0; wrt < KILN_WRT_COUNT; wrt++) {
        aa.wrt = wrt;
        check_type(f, opn(f, KILN_OP_ATTENTION_GRAD, at, 4, &aa), KILN_F32, want[wrt], 4);
    }
    aa.wrt = 9;
    check_refused(f, opn(f, KILN_OP_ATTENTION_GRAD, at, 4, &aa), 0, "wrt 9");
    reset_diags(f);
    aa.wrt = KILN_WRT_Q;
    at[3] = q;
    check_refused(f, opn(f, KILN_OP_ATTENTION_GRAD, at, 4, &aa), 0, "cotangent");
    reset_diags(f);
    /* cross_entropy_grad: dlogits, from a scalar cotangent */
    uint32_t logits = input(f, "logits", KILN_F32, SHAPE(4, 5)), s = input(f, "s", KILN_F32, SCALAR_SHAPE);
    uint32_t ce[3] = {logits, idx, s};
    kiln_attrs xe = scalar_attrs(0.1);
    check_type(f, opn(f, KILN_OP_CROSS_ENTROPY_GRAD, ce, 3, &xe), KILN_F32, SHAPE(4, 5));
    ce[2] = logits;
    check_refused(f, opn(f, KILN_OP_CROSS_ENTROPY_GRAD, ce, 3, &xe), 0, "scalar");
    reset_diags(f);
    /* dropout: a stream of 0 becomes the node's id; others must fit in 32 bits */
    kiln_attrs p = scalar_attrs(0.5);
    uint32_t d = op1(f, KILN_OP_DROPOUT, x, &p);
    assert_int_equal(f->g.nodes[d].attrs.stream, d);
    p.stream = 7;
    assert_int_equal(f->g.nodes[op1(f, KILN_OP_DROPOUT, x, &p)].attrs.stream, 7);
    p.stream = -1;
    check_refused(f, op1(f, KILN_OP_DROPOUT, x, &p), 0, "stream");
    reset_diags(f);
}

/* The text form of the new attributes: stream is required, wrt is a word. */
static void test_parse_stream_and_wrt(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"graph g\n%0 = input \"x\" : f32[2]\n%1 = dropout(%0) p=0.5 : f32[2]\n", "needs the attribute 'stream'"},
        {"graph g\n%0 = input \"x\" : f32[1,1,2,2]\n%1 = attention_grad(%0, %0, %0, %0) scale=1 wrt=w : f32[1,1,2,2]\n",
         "expected q, k, v or scores"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        assert_false(kiln_graph_parse(&g, bad[i][0], "bad.kir", &d));
        if (!strstr(d.items[0].message, bad[i][1])) fail_msg("'%s' lacks '%s'", d.items[0].message, bad[i][1]);
        kiln_graph_free(&g);
        kiln_diags_free(&d);
    }
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    const char *good = "graph g\n%0 = input \"x\" : f32[1,1,2,2]\n"
                       "%1 = attention_grad(%0, %0, %0, %0) scale=1 wrt=scores : f32[1,1,2,2]\n"
                       "%2 = dropout(%1) p=0.25 stream=123 : f32[1,1,2,2]\n";
    assert_true(kiln_graph_parse(&g, good, NULL, &d));
    assert_int_equal(g.nodes[1].attrs.wrt, KILN_WRT_SCORES);
    assert_int_equal(g.nodes[2].attrs.stream, 123);
    char *text = kiln_graph_print(&g);
    assert_string_equal(text, good);
    free(text);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

static void test_reductions(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3, 4));
    kiln_attrs a = {0};
    a.n_axes = 2;
    a.axes[0] = -1;
    a.axes[1] = 0;
    uint32_t s = op1(f, KILN_OP_SUM, x, &a);
    check_type(f, s, KILN_F32, SHAPE(3));
    /* axes are stored sorted and non-negative */
    assert_int_equal(f->g.nodes[s].attrs.axes[0], 0);
    assert_int_equal(f->g.nodes[s].attrs.axes[1], 2);
    a.keepdims = true;
    check_type(f, op1(f, KILN_OP_MEAN, x, &a), KILN_F32, SHAPE(1, 3, 1));
    a.n_axes = 0;
    a.keepdims = false;
    check_type(f, op1(f, KILN_OP_MAX, x, &a), KILN_F32, SHAPE(2, 3, 4));
    uint32_t i = input(f, "i", KILN_I32, SHAPE(5));
    a.n_axes = 1;
    a.axes[0] = 0;
    check_type(f, op1(f, KILN_OP_SUM, i, &a), KILN_I32, SCALAR_SHAPE);
    check_refused(f, op1(f, KILN_OP_MEAN, i, &a), 0, "must be f32");
    a.n_axes = 2;
    a.axes[1] = -1;
    check_refused(f, op1(f, KILN_OP_SUM, i, &a), 1, "axes given for rank");
}

static void test_matmul(void **state)
{
    fx *f = *state;
    uint32_t a = input(f, "a", KILN_F32, SHAPE(5, 2, 3));
    uint32_t b = input(f, "b", KILN_F32, SHAPE(3, 4));
    check_type(f, op2(f, KILN_OP_MATMUL, a, b, NULL), KILN_F32, SHAPE(5, 2, 4));
    uint32_t bt = input(f, "bt", KILN_F32, SHAPE(1, 4, 3));
    kiln_attrs t = {0};
    t.transpose_b = true;
    check_type(f, op2(f, KILN_OP_MATMUL, a, bt, &t), KILN_F32, SHAPE(5, 2, 4));
    t.transpose_a = true;
    t.transpose_b = false;
    uint32_t at = input(f, "at", KILN_F32, SHAPE(3, 2));
    check_type(f, op2(f, KILN_OP_MATMUL, at, b, &t), KILN_F32, SHAPE(2, 4));
}

static void test_reshape(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3, 4));
    kiln_attrs a = type_attrs(KILN_F32, SHAPE(6, -1));
    uint32_t r = op1(f, KILN_OP_RESHAPE, x, &a);
    check_type(f, r, KILN_F32, SHAPE(6, 4));
    /* -1 is resolved in the stored attributes */
    assert_int_equal(f->g.nodes[r].attrs.shape[1], 4);
    kiln_attrs s = type_attrs(KILN_F32, SCALAR_SHAPE);
    uint32_t one = input(f, "one", KILN_F32, SHAPE(1, 1));
    check_type(f, op1(f, KILN_OP_RESHAPE, one, &s), KILN_F32, SCALAR_SHAPE);
}

static void test_transpose(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3, 4));
    kiln_attrs a = {0};
    a.perm[0] = 2;
    a.perm[1] = -3;
    a.perm[2] = 1;
    uint32_t t = op1(f, KILN_OP_TRANSPOSE, x, &a);
    check_type(f, t, KILN_F32, SHAPE(4, 2, 3));
    assert_int_equal(f->g.nodes[t].attrs.perm[1], 0);
    a.perm[1] = 2;
    check_refused(f, op1(f, KILN_OP_TRANSPOSE, x, &a), 0, "repeats");
}

static void test_slice(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(4, 10));
    kiln_attrs a = axis_attrs(-1);
    a.step = 3;
    assert_true(kiln_slice_normalize(10, true, 1, false, 0, 3, &a.start, &a.end));
    uint32_t s = op1(f, KILN_OP_SLICE, x, &a);
    check_type(f, s, KILN_F32, SHAPE(4, 3)); /* 1, 4, 7 */
    assert_int_equal(f->g.nodes[s].attrs.axis, 1);
    a.step = -1;
    assert_true(kiln_slice_normalize(10, false, 0, false, 0, -1, &a.start, &a.end));
    assert_int_equal(a.start, 9);
    assert_int_equal(a.end, -1);
    check_type(f, op1(f, KILN_OP_SLICE, x, &a), KILN_F32, SHAPE(4, 10));
    assert_false(kiln_slice_normalize(10, false, 0, false, 0, 0, &a.start, &a.end));
    /* a step far past the dim selects one element and must not overflow */
    a.start = 0;
    a.end = 10;
    a.step = INT64_MAX;
    check_type(f, op1(f, KILN_OP_SLICE, x, &a), KILN_F32, SHAPE(4, 1));
    a.start = 9;
    a.end = -1;
    a.step = INT64_MIN;
    check_type(f, op1(f, KILN_OP_SLICE, x, &a), KILN_F32, SHAPE(4, 1));
    a.start = 0;
    a.end = 11;
    a.step = 1;
    check_refused(f, op1(f, KILN_OP_SLICE, x, &a), 0, "not normalised");
}

static void test_concat(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    uint32_t y = input(f, "y", KILN_F32, SHAPE(2, 5));
    uint32_t in[3] = {x, y, x};
    kiln_attrs a = axis_attrs(-1);
    check_type(f, opn(f, KILN_OP_CONCAT, in, 3, &a), KILN_F32, SHAPE(2, 11));
    check_type(f, opn(f, KILN_OP_CONCAT, in, 1, &a), KILN_F32, SHAPE(2, 3));
    a.axis = 0;
    check_refused(f, opn(f, KILN_OP_CONCAT, in, 2, &a), 0, "only axis 0 may differ");
    check_refused(f, opn(f, KILN_OP_CONCAT, in, 0, &a), 1, "at least one input");
}

static void test_broadcast(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_I32, SHAPE(3, 1));
    kiln_attrs a = type_attrs(KILN_I32, SHAPE(2, 3, 4));
    check_type(f, op1(f, KILN_OP_BROADCAST, x, &a), KILN_I32, SHAPE(2, 3, 4));
    kiln_attrs bad = type_attrs(KILN_I32, SHAPE(2, 4, 4));
    check_refused(f, op1(f, KILN_OP_BROADCAST, x, &bad), 0, "cannot broadcast");
    kiln_attrs low = type_attrs(KILN_I32, SHAPE(3));
    check_refused(f, op1(f, KILN_OP_BROADCAST, x, &low), 1, "lower rank");
}

static void test_gather(void **state)
{
    fx *f = *state;
    uint32_t table = input(f, "table", KILN_F32, SHAPE(10, 4, 6));
    uint32_t idx = input(f, "idx", KILN_I32, SHAPE(2, 3));
    kiln_attrs a = axis_attrs(0);
    check_type(f, op2(f, KILN_OP_GATHER, table, idx, &a), KILN_F32, SHAPE(2, 3, 4, 6));
    a.axis = -2;
    check_type(f, op2(f, KILN_OP_GATHER, table, idx, &a), KILN_F32, SHAPE(10, 2, 3, 6));
}

static void test_softmax_log_softmax(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 7));
    kiln_attrs a = axis_attrs(-1);
    uint32_t s = op1(f, KILN_OP_SOFTMAX, x, &a);
    check_type(f, s, KILN_F32, SHAPE(2, 7));
    assert_int_equal(f->g.nodes[s].attrs.axis, 1);
    check_type(f, op1(f, KILN_OP_LOG_SOFTMAX, x, &a), KILN_F32, SHAPE(2, 7));
}

static void test_layernorm(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 6, 16));
    uint32_t w = param(f, "w", KILN_INIT_ONES, 0, SHAPE(16));
    uint32_t b = param(f, "b", KILN_INIT_ZEROS, 0, SHAPE(16));
    uint32_t in[3] = {x, w, b};
    kiln_attrs e = scalar_attrs(1e-5);
    check_type(f, opn(f, KILN_OP_LAYERNORM, in, 3, &e), KILN_F32, SHAPE(2, 6, 16));
    uint32_t w8 = param(f, "w8", KILN_INIT_ONES, 0, SHAPE(8));
    in[1] = w8;
    check_refused(f, opn(f, KILN_OP_LAYERNORM, in, 3, &e), 0, "must be [16]");
    in[1] = w;
    e.scalar = -1;
    check_refused(f, opn(f, KILN_OP_LAYERNORM, in, 3, &e), 1, "non-negative");
}

static void test_attention(void **state)
{
    fx *f = *state;
    uint32_t q = input(f, "q", KILN_F32, SHAPE(2, 4, 6, 8));
    uint32_t k = input(f, "k", KILN_F32, SHAPE(2, 4, 9, 8));
    uint32_t v = input(f, "v", KILN_F32, SHAPE(2, 4, 9, 5));
    uint32_t m = input(f, "m", KILN_F32, SHAPE(2, 9));
    uint32_t bias = input(f, "bias", KILN_F32, SHAPE(4, 1, 9));
    uint32_t in[5] = {q, k, v, m, bias};
    kiln_attrs a = scalar_attrs(0.125);
    check_type(f, opn(f, KILN_OP_ATTENTION, in, 3, &a), KILN_F32, SHAPE(2, 4, 6, 5));
    a.causal = true;
    a.has_mask = true;
    check_type(f, opn(f, KILN_OP_ATTENTION, in, 4, &a), KILN_F32, SHAPE(2, 4, 6, 5));
    a.has_bias = true;
    check_type(f, opn(f, KILN_OP_ATTENTION, in, 5, &a), KILN_F32, SHAPE(2, 4, 6, 5));
    /* attention_lse: one value per query; attention_grad given o and lse checks both */
    uint32_t lse = opn(f, KILN_OP_ATTENTION_LSE, in, 5, &a);
    check_type(f, lse, KILN_F32, SHAPE(2, 4, 6));
    uint32_t y = opn(f, KILN_OP_ATTENTION, in, 5, &a);
    uint32_t gin[8] = {q, k, v, m, bias, y, lse, y};
    check_type(f, opn(f, KILN_OP_ATTENTION_GRAD, gin, 8, &a), KILN_F32, SHAPE(2, 4, 6, 8));
    gin[6] = m; /* not (…, T) */
    check_refused(f, opn(f, KILN_OP_ATTENTION_GRAD, gin, 8, &a), 0, "log-sum-exp");
    /* has_mask and has_bias say how many inputs there must be */
    check_refused(f, opn(f, KILN_OP_ATTENTION, in, 4, &a), 1, "expects 5 inputs");
}

static void test_cross_entropy(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 6, 17));
    uint32_t t = input(f, "t", KILN_I32, SHAPE(2, 6));
    kiln_attrs a = scalar_attrs(0.1);
    a.ignore_index = -1;
    uint32_t l = op2(f, KILN_OP_CROSS_ENTROPY, x, t, &a);
    check_type(f, l, KILN_F32, SCALAR_SHAPE);
    assert_int_equal(f->g.nodes[l].attrs.ignore_index, -1);
    a.scalar = 1.5;
    check_refused(f, op2(f, KILN_OP_CROSS_ENTROPY, x, t, &a), 0, "label_smoothing");
}

/* ---- builder: errors ------------------------------------------------------------------- */

static void test_err_broadcast_mismatch(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    uint32_t y = input(f, "y", KILN_F32, SHAPE(4));
    check_refused(f, op2(f, KILN_OP_ADD, x, y, NULL), 0, "cannot broadcast f32[2,3] with f32[4]");
    /* the diagnostic names the label, and `where` is the origin */
    assert_non_null(strstr(f->d.items[0].message, "'add'"));
    assert_string_equal(f->d.items[0].where, "layers[0]");
}

static void test_err_matmul_inner(void **state)
{
    fx *f = *state;
    uint32_t a = input(f, "a", KILN_F32, SHAPE(2, 3));
    uint32_t b = input(f, "b", KILN_F32, SHAPE(4, 5));
    check_refused(f, op2(f, KILN_OP_MATMUL, a, b, NULL), 0, "inner dims differ");
    uint32_t v = input(f, "v", KILN_F32, SHAPE(3));
    check_refused(f, op2(f, KILN_OP_MATMUL, a, v, NULL), 1, "rank 2 or more");
    uint32_t c = input(f, "c", KILN_F32, SHAPE(2, 3, 4));
    uint32_t d = input(f, "d", KILN_F32, SHAPE(5, 4, 1));
    check_refused(f, op2(f, KILN_OP_MATMUL, c, d, NULL), 2, "batch dims");
}

static void test_err_bad_axis(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    kiln_attrs a = axis_attrs(2);
    check_refused(f, op1(f, KILN_OP_SOFTMAX, x, &a), 0, "axis 2 is out of range for rank 2");
    a.axis = -3;
    check_refused(f, op1(f, KILN_OP_LOG_SOFTMAX, x, &a), 1, "out of range");
    kiln_attrs r = {0};
    r.n_axes = 1;
    r.axes[0] = 5;
    check_refused(f, op1(f, KILN_OP_SUM, x, &r), 2, "out of range");
    r.n_axes = 2;
    r.axes[0] = 1;
    r.axes[1] = -1;
    check_refused(f, op1(f, KILN_OP_SUM, x, &r), 3, "repeated");
    uint32_t s = input(f, "s", KILN_F32, SCALAR_SHAPE);
    a.axis = 0;
    check_refused(f, op1(f, KILN_OP_SOFTMAX, s, &a), 4, "rank 0");
}

static void test_err_reshape_count(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    kiln_attrs a = type_attrs(KILN_F32, SHAPE(4, 2));
    check_refused(f, op1(f, KILN_OP_RESHAPE, x, &a), 0, "cannot reshape f32[2,3] (6 elements)");
    kiln_attrs b = type_attrs(KILN_F32, SHAPE(4, -1));
    check_refused(f, op1(f, KILN_OP_RESHAPE, x, &b), 1, "cannot infer the -1");
    kiln_attrs c = type_attrs(KILN_F32, SHAPE(-1, -1));
    check_refused(f, op1(f, KILN_OP_RESHAPE, x, &c), 2, "more than one -1");
}

static void test_err_dtype_mix(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(3));
    uint32_t i = input(f, "i", KILN_I32, SHAPE(3));
    check_refused(f, op2(f, KILN_OP_MUL, x, i, NULL), 0, "different dtypes");
    uint32_t in[3] = {x, x, i};
    check_refused(f, opn(f, KILN_OP_WHERE, in, 3, NULL), 1, "different dtypes");
    check_refused(f, op2(f, KILN_OP_DIV, i, i, NULL), 2, "must be f32");
    check_refused(f, op2(f, KILN_OP_MATMUL, i, i, NULL), 3, "must be f32");
}

static void test_err_gather_f32_indices(void **state)
{
    fx *f = *state;
    uint32_t t = input(f, "t", KILN_F32, SHAPE(10, 4));
    uint32_t idx = input(f, "idx", KILN_F32, SHAPE(3));
    kiln_attrs a = axis_attrs(0);
    check_refused(f, op2(f, KILN_OP_GATHER, t, idx, &a), 0, "indices must be i32");
}

static void test_err_attention_shape(void **state)
{
    fx *f = *state;
    uint32_t q = input(f, "q", KILN_F32, SHAPE(2, 4, 6, 8));
    uint32_t k = input(f, "k", KILN_F32, SHAPE(2, 4, 9, 7));
    uint32_t v = input(f, "v", KILN_F32, SHAPE(2, 4, 9, 5));
    uint32_t in[4] = {q, k, v, 0};
    kiln_attrs a = scalar_attrs(1);
    check_refused(f, opn(f, KILN_OP_ATTENTION, in, 3, &a), 0, "do not fit");
    uint32_t k3 = input(f, "k3", KILN_F32, SHAPE(4, 9, 8));
    in[1] = k3;
    check_refused(f, opn(f, KILN_OP_ATTENTION, in, 3, &a), 1, "share a rank");
    uint32_t k2 = input(f, "k2", KILN_F32, SHAPE(2, 4, 9, 8));
    uint32_t m = input(f, "m", KILN_F32, SHAPE(2, 8));
    in[1] = k2;
    in[3] = m;
    a.has_mask = true;
    check_refused(f, opn(f, KILN_OP_ATTENTION, in, 4, &a), 2, "key mask is f32[2,8] but must be f32[2,9]");
}

static void test_err_cross_entropy_target(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 6, 17));
    uint32_t t = input(f, "t", KILN_I32, SHAPE(2, 5));
    kiln_attrs a = scalar_attrs(0);
    check_refused(f, op2(f, KILN_OP_CROSS_ENTROPY, x, t, &a), 0, "without its last dim");
    uint32_t tf = input(f, "tf", KILN_F32, SHAPE(2, 6));
    check_refused(f, op2(f, KILN_OP_CROSS_ENTROPY, x, tf, &a), 1, "targets must be i32");
}

static void test_err_arity(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(3));
    check_refused(f, op1(f, KILN_OP_ADD, x, NULL), 0, "expects 2 inputs, got 1");
    check_refused(f, op2(f, KILN_OP_EXP, x, x, NULL), 1, "expects 1 input, got 2");
}

static void test_err_sources(void **state)
{
    fx *f = *state;
    kiln_attrs a = type_attrs(KILN_I32, SHAPE(3));
    a.name = "p";
    check_refused(f, kiln_graph_add(&f->g, KILN_OP_PARAM, NULL, 0, &a, NULL, NULL, &f->d), 0, "parameters are f32");
    float v[2] = {1, 2};
    kiln_attrs c = type_attrs(KILN_F32, SHAPE(3));
    c.values = v;
    c.n_values = 2;
    check_refused(f, kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &c, NULL, NULL, &f->d), 1, "2 values given");
    kiln_attrs big = type_attrs(KILN_F32, SHAPE(1 << 20, 1 << 20));
    big.name = "big";
    check_refused(f, kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &big, NULL, NULL, &f->d), 2, "too large");
    kiln_attrs neg = type_attrs(KILN_F32, SHAPE(2, -3));
    neg.name = "neg";
    check_refused(f, kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &neg, NULL, NULL, &f->d), 3, "negative");
    assert_int_equal(f->g.n_nodes, 0);
}

static void test_err_inputs_none_are_silent(void **state)
{
    fx *f = *state;
    uint32_t x = input(f, "x", KILN_F32, SHAPE(3));
    uint32_t y = input(f, "y", KILN_F32, SHAPE(4));
    uint32_t bad = op2(f, KILN_OP_ADD, x, y, NULL);
    check_refused(f, bad, 0, "cannot broadcast");
    /* a node built on a refused one is refused without a second report */
    assert_int_equal(op1(f, KILN_OP_EXP, bad, NULL), KILN_NONE);
    assert_int_equal(f->d.n, 1);
    assert_int_equal(f->g.n_nodes, 2);
}

/* ---- text form ------------------------------------------------------------------------- */

static void test_print_format(void **state)
{
    fx *f = *state;
    uint32_t tok = input(f, "tokens", KILN_I32, SHAPE(2, 6));
    uint32_t wte = param(f, "wte.weight", KILN_INIT_NORMAL, 0.02, SHAPE(17, 16));
    kiln_attrs ga = axis_attrs(0);
    uint32_t e = kiln_graph_add(&f->g, KILN_OP_GATHER, (uint32_t[]){wte, tok}, 2, &ga, "wte", "layers[0]", &f->d);
    kiln_attrs ra = {0};
    ra.n_axes = 1;
    ra.axes[0] = 2;
    ra.keepdims = true;
    uint32_t s = kiln_graph_add(&f->g, KILN_OP_SUM, &e, 1, &ra, NULL, NULL, &f->d);
    kiln_attrs sl = axis_attrs(1);
    sl.start = 0;
    sl.end = 6;
    sl.step = 2;
    kiln_graph_add(&f->g, KILN_OP_SLICE, &s, 1, &sl, "every other", "layers[1].x y", &f->d);
    float v[2] = {0.1f, -2};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(2));
    ca.values = v;
    ca.n_values = 2;
    kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    kiln_graph_add_output(&f->g, "emb", e);
    assert_int_equal(f->d.n, 0);

    char *text = kiln_graph_print(&f->g);
    assert_string_equal(text, "graph t\n"
                              "%0 = input \"tokens\" : i32[2,6] @inputs \"tokens\"\n"
                              "%1 = param \"wte.weight\" init=normal std=0.02 : f32[17,16] @params \"wte.weight\"\n"
                              "%2 = gather(%1, %0) axis=0 : f32[2,6,16] @layers[0] \"wte\"\n"
                              "%3 = sum(%2) axes=[2] keepdims : f32[2,6,1]\n"
                              "%4 = slice(%3) axis=1 start=0 end=6 step=2 : f32[2,3,1] @\"layers[1].x y\" \"every other\"\n"
                              "%5 = constant [0.1,-2] : f32[2]\n"
                              "output \"emb\" = %2\n");
    free(text);
}

/* print → parse → print is byte-identical, and the parsed graph verifies. */
static void check_round_trip(const kiln_graph *g)
{
    char *text = kiln_graph_print(g);
    kiln_graph h;
    kiln_diags d;
    kiln_graph_init(&h, NULL);
    kiln_diags_init(&d);
    bool ok = kiln_graph_parse(&h, text, "roundtrip.kir", &d);
    if (!ok) {
        kiln_diags_print(&d, stderr);
        fprintf(stderr, "%s", text);
        fail_msg("the printed graph does not parse");
    }
    char *again = kiln_graph_print(&h);
    assert_string_equal(text, again);
    assert_true(kiln_graph_verify(&h, &d));
    assert_int_equal(h.n_nodes, g->n_nodes);
    assert_int_equal(h.loss, g->loss);
    free(text);
    free(again);
    kiln_graph_free(&h);
    kiln_diags_free(&d);
}

static void test_round_trip_all_ops(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    check_round_trip(&f->g);
}

static void test_round_trip_floats(void **state)
{
    fx *f = *state;
    float v[] = {0.1f, -0.0f, 1e-45f, 3.4028235e38f, 16777217.0f, 1.0f / 3.0f, INFINITY, -INFINITY, 100.0f, 1e6f};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(10));
    ca.values = v;
    ca.n_values = 10;
    uint32_t c = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    int32_t iv[] = {INT32_MIN, INT32_MAX, 0};
    kiln_attrs ia = type_attrs(KILN_I32, SHAPE(3));
    ia.values = iv;
    ia.n_values = 3;
    kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ia, NULL, NULL, &f->d);
    static const double scales[] = {0.1, 1.0 / 3.0, 1e-300, 5e-324, -2.5, 1e300, 0.0};
    for (size_t i = 0; i < sizeof scales / sizeof *scales; i++) {
        kiln_attrs s = scalar_attrs(scales[i]);
        op1(f, KILN_OP_SCALE, c, &s);
    }
    param(f, "p", KILN_INIT_UNIFORM, 1.0 / 7.0, SHAPE(2));
    assert_int_equal(f->d.n, 0);
    check_round_trip(&f->g);

    /* and the values themselves come back bit for bit */
    char *text = kiln_graph_print(&f->g);
    kiln_graph h;
    kiln_graph_init(&h, NULL);
    assert_true(kiln_graph_parse(&h, text, NULL, &f->d));
    assert_memory_equal(h.nodes[0].attrs.values, v, sizeof v);
    assert_memory_equal(h.nodes[1].attrs.values, iv, sizeof iv);
    for (size_t i = 0; i < sizeof scales / sizeof *scales; i++)
        assert_memory_equal(&h.nodes[2 + i].attrs.scalar, &scales[i], sizeof(double));
    assert_non_null(strstr(text, "by=0.1 "));        /* shortest form, not 0.10000000000000001 */
    assert_non_null(strstr(text, "[0.1,-0,1.4013e-45,3.4028235e+38,16777216,0.33333334,inf,-inf,100,1e+06]"));
    free(text);
    kiln_graph_free(&h);
}

static void test_round_trip_strings(void **state)
{
    fx *f = *state;
    kiln_graph_free(&f->g);
    kiln_graph_init(&f->g, "my graph \"v2\"");
    kiln_attrs a = type_attrs(KILN_F32, SHAPE(2));
    a.name = "we\\ird \"name\"\n\ttab \x01 é";
    uint32_t x = kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &a, "", "", &f->d);
    kiln_graph_add(&f->g, KILN_OP_EXP, &x, 1, NULL, "label # not a comment", "layers[\"k\"]", &f->d);
    kiln_graph_add(&f->g, KILN_OP_NEG, &x, 1, NULL, NULL, "only.origin", &f->d);
    kiln_graph_add_output(&f->g, "out \"1\"", 1);
    assert_int_equal(f->d.n, 0);
    check_round_trip(&f->g);
    char *text = kiln_graph_print(&f->g);
    kiln_graph h;
    kiln_graph_init(&h, NULL);
    assert_true(kiln_graph_parse(&h, text, NULL, &f->d));
    assert_string_equal(h.name, f->g.name);
    assert_string_equal(h.nodes[0].attrs.name, a.name);
    assert_string_equal(h.nodes[0].label, "");
    assert_string_equal(h.nodes[1].origin, "layers[\"k\"]");
    assert_null(h.nodes[2].label);
    assert_string_equal(h.outputs[0].name, "out \"1\"");
    free(text);
    kiln_graph_free(&h);
}

/* Hand-written text may use comments, blank lines, spare blanks, key=true/false and
 * attributes in any order; printing gives the canonical form. */
static void test_parse_lenient_input(void **state)
{
    fx *f = *state;
    const char *good = "# a comment\n"
                       "\n"
                       "graph   lenient   # trailing comment\n"
                       "%0=input\"a\":f32[2,3]\n"
                       "  %1 = param \"w\" std=0.5 init=normal : f32[3,3]\r\n"
                       "%2 = matmul( %0 ,%1 ) transpose_b=true transpose_a=false : f32[2,3]\n"
                       "%3 = sum(%2) keepdims=false axes=[ 1 , 0 ] : f32[]\n"
                       "loss = %3";
    assert_true(kiln_graph_parse(&f->g, good, "l.kir", &f->d));
    char *out = kiln_graph_print(&f->g);
    assert_string_equal(out, "graph lenient\n"
                             "%0 = input \"a\" : f32[2,3]\n"
                             "%1 = param \"w\" init=normal std=0.5 : f32[3,3]\n"
                             "%2 = matmul(%0, %1) transpose_b : f32[2,3]\n"
                             "%3 = sum(%2) axes=[0,1] : f32[]\n"
                             "loss = %3\n");
    free(out);
}

/* One hostile text: it must be refused with a first diagnostic at line:col whose
 * message contains `what`. */
typedef struct hostile {
    const char *text;
    int line, col;
    const char *what;
} hostile;

static void check_hostile(const hostile *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        bool ok = kiln_graph_parse(&g, h[i].text, "bad.kir", &d);
        if (ok) fail_msg("case %zu parsed: %s", i, h[i].text);
        assert_true(d.n >= 1);
        const kiln_diag *e = &d.items[0];
        if (e->line != h[i].line || e->col != h[i].col || !strstr(e->message, h[i].what) ||
            !e->file || strcmp(e->file, "bad.kir") != 0)
            fail_msg("case %zu: got %d:%d '%s', want %d:%d '%s'", i, e->line, e->col, e->message, h[i].line,
                     h[i].col, h[i].what);
        kiln_graph_free(&g);
        kiln_diags_free(&d);
    }
}

#define HDR "graph g\n%0 = input \"x\" : f32[2,3]\n"

static void test_hostile_lexical(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {"", 1, 1, "expected 'graph NAME'"},
        {"graf g\n", 1, 1, "expected 'graph NAME'"},
        {"graph\n", 1, 6, "expected the graph's name"},
        {"graph g extra!\n", 1, 9, "unexpected text"},
        {HDR "%1 = exp(%0) : f32[2,3] \"unterminated\n", 3, 38, "unterminated string"},
        {HDR "%1 = exp(%0) : f32[2,3] \"bad \\q escape\"\n", 3, 30, "unknown escape"},
        {HDR "%1 = exp(%0) : f32[2,3] \"nul \\x00\"\n", 3, 30, "\\x00"},
        {HDR "%1 = exp(%0) : f32[2,3] \"tab\there\"\n", 3, 29, "control character"},
        {HDR "%1 = exp(%0) : f32[2,3] \"end\\", 3, 29, "unknown escape"},
        {HDR "%1 = softmax(%0) axis=1x : f32[2,3]\n", 3, 23, "bad integer"},
        {HDR "%1 = softmax(%0) axis=99999999999999999999 : f32[2,3]\n", 3, 23, "out of range"},
        {HDR "%1 = scale(%0) by=1e999 : f32[2,3]\n", 3, 19, "out of range"},
        {HDR "%1 = scale(%0) by=0.5.5 : f32[2,3]\n", 3, 19, "bad number"},
        {HDR "%1 = scale(%0) by= : f32[2,3]\n", 3, 20, "expected a number"},
        {HDR "%1 = exp(%0) : f32[2,3] @\n", 3, 26, "expected an origin"},
    };
    check_hostile(cases, sizeof cases / sizeof *cases);
}

static void test_hostile_structure(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {HDR "%1 = frobnicate(%0) : f32[2,3]\n", 3, 6, "unknown op 'frobnicate'"},
        {HDR "%1 = add(%0, %2) : f32[2,3]\n", 3, 14, "%2 is not defined"},
        {HDR "%1 = add(%0, %1) : f32[2,3]\n", 3, 14, "%1 is not defined"},
        {HDR "%2 = exp(%0) : f32[2,3]\n", 3, 1, "expected node %1"},
        {HDR "%0 = exp(%0) : f32[2,3]\n", 3, 1, "expected node %1"},
        {HDR "%99999999999999999999999 = exp(%0) : f32[2,3]\n", 3, 1, "expected node %1"},
        {HDR "%1 exp(%0) : f32[2,3]\n", 3, 4, "expected '='"},
        {HDR "%1 = exp(%0)\n", 3, 13, "expected ':'"},
        {HDR "%1 = exp(%0) :\n", 3, 15, "expected a dtype"},
        {HDR "%1 = exp(%0) : f64[2,3]\n", 3, 16, "expected a dtype"},
        {HDR "%1 = exp(%0) : f32[2,3\n", 3, 23, "expected ','"},
        {HDR "%1 = exp(%0 : f32[2,3]\n", 3, 13, "expected ','"},
        {HDR "%1 = exp(%0,) : f32[2,3]\n", 3, 13, "expected a node reference"},
        {HDR "%1 = exp(%0) : f32[2,3] \"l\" junk\n", 3, 29, "unexpected text"},
        {HDR "%1 = exp(%0) : f32[1,1,1,1,1,1,1,1,1]\n", 3, 36, "more than 8 entries"},
        {HDR "%1 = exp(%0) : f32[2,-3]\n", 3, 19, "negative"},
        {HDR "= exp(%0) : f32[2,3]\n", 3, 1, "expected a node"},
        {HDR "%", 3, 1, "expected a node id"},
        {HDR "%1 = ", 3, 6, "expected an op name"},
        {HDR "output \"y\" = %5\n", 3, 14, "%5 is not defined"},
        {HDR "output y = %0\n", 3, 8, "expected '\"'"},
        {HDR "loss %0\n", 3, 6, "expected '='"},
    };
    check_hostile(cases, sizeof cases / sizeof *cases);
}

static void test_hostile_semantics(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {HDR "%1 = add(%0) : f32[2,3]\n", 3, 6, "expects 2 inputs, got 1"},
        {HDR "%1 = exp(%0) : f32[3,2]\n", 3, 16, "the type f32[3,2] differs from f32[2,3]"},
        {HDR "%1 = exp(%0) axis=0 : f32[2,3]\n", 3, 14, "exp has no attribute 'axis'"},
        {HDR "%1 = softmax(%0) axis=0 axis=1 : f32[2,3]\n", 3, 25, "given twice"},
        {HDR "%1 = softmax(%0) : f32[2,3]\n", 3, 6, "needs the attribute 'axis'"},
        {HDR "%1 = softmax(%0) axis=2 : f32[2,3]\n", 3, 6, "axis 2 is out of range"},
        {HDR "%1 = transpose(%0) perm=[1] : f32[3,2]\n", 3, 6, "perm has 1 entries but the input has rank 2"},
        {HDR "%1 = param \"w\" init=gaussian : f32[2]\n", 3, 21, "expected normal"},
        {HDR "%1 = param \"w\" init=zeros std=1 : f32[2]\n", 3, 6, "does not go with this init"},
        {HDR "%1 = param \"w\" init=normal : f32[2]\n", 3, 6, "needs the attribute 'std'"},
        {HDR "%1 = input \"x\" : f32[2]\n", 3, 12, "already used by %0"},
        {HDR "%1 = constant [1,2] : f32[3]\n", 3, 6, "2 values given"},
        {HDR "%1 = constant [1.5] : i32[3]\n", 3, 16, "bad i32 value"},
        {HDR "%1 = constant [3000000000] : i32[3]\n", 3, 16, "out of the i32 range"},
        {HDR "%1 = constant [1e39] : f32[1]\n", 3, 16, "out of the f32 range"},
        {HDR "%1 = constant [1,,2] : f32[3]\n", 3, 18, "expected a number"},
        {HDR "%1 = matmul(%0, %0) transpose_b=maybe : f32[2,2]\n", 3, 33, "expected true or false"},
        {HDR "%1 = input \"big\" : f32[1048576,1048576]\n", 3, 6, "too large"},
        {HDR "loss = %0\n", 3, 8, "must be a scalar f32"},
        {HDR "%1 = sum(%0) axes=[0,1] : f32[]\nloss = %1\nloss = %1\n", 5, 1, "given twice"},
        {HDR "output \"a\" = %0\noutput \"a\" = %0\n", 4, 8, "given twice"},
    };
    check_hostile(cases, sizeof cases / sizeof *cases);
}

static void test_hostile_too_many_inputs(void **state)
{
    (void)state;
    /* concat takes any number of inputs, but the builder takes at most 64 */
    char text[4096] = HDR "%1 = concat(";
    for (int i = 0; i < 65; i++) strcat(text, i ? ", %0" : "%0");
    strcat(text, ") axis=0 : f32[130,3]\n");
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, "bad.kir", &d));
    assert_int_equal(d.items[0].line, 3);
    assert_int_equal(d.items[0].col, 13 + 64 * 4);
    assert_non_null(strstr(d.items[0].message, "more than 64 inputs"));
    kiln_graph_free(&g);
    kiln_diags_free(&d);
}

static void test_hostile_overlong_lines(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *text = malloc(n + 64);
    kiln_graph g;
    kiln_diags d;

    /* a megabyte of junk on one line */
    strcpy(text, "graph g\n");
    memset(text + 8, 'z', n);
    strcpy(text + 8 + n, " = 1\n");
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, NULL, &d));
    assert_int_equal(d.items[0].line, 2);
    assert_int_equal(d.items[0].col, 1);
    kiln_graph_free(&g);
    kiln_diags_free(&d);

    /* a megabyte-long label is fine, and the error after it has the right column */
    strcpy(text, "graph g\n%0 = input \"x\" : f32[2] \"");
    size_t at = strlen(text);
    memset(text + at, 'a', n);
    strcpy(text + at + n, "\" ?\n");
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, NULL, &d));
    assert_int_equal(d.items[0].col, (int)(at - 8 + n + 3));
    assert_non_null(strstr(d.items[0].message, "unexpected text"));
    kiln_graph_free(&g);
    kiln_diags_free(&d);

    /* a 100-digit number */
    strcpy(text, HDR "%1 = softmax(%0) axis=");
    memset(text + strlen(text), '7', 100);
    strcpy(text + strlen(HDR "%1 = softmax(%0) axis=") + 100, " : f32[2,3]\n");
    kiln_graph_init(&g, NULL);
    kiln_diags_init(&d);
    assert_false(kiln_graph_parse(&g, text, NULL, &d));
    assert_non_null(strstr(d.items[0].message, "too long"));
    kiln_graph_free(&g);
    kiln_diags_free(&d);
    free(text);
}

/* Mutations of a valid text (flipped, deleted and duplicated bytes, truncation) must
 * never crash; whatever still parses must verify and print stably. Run it under the
 * sanitizers. */
static void test_hostile_mutations(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    char *good = kiln_graph_print(&f->g);
    size_t len = strlen(good);
    static const char alphabet[] = "%=()[],:@\"\\#\n -0123456789e.xfi";
    uint64_t rng = 0x9e3779b97f4a7c15u;
    char *text = malloc(len * 2 + 2);
    int parsed = 0;
    for (int round = 0; round < 1500; round++) {
        memcpy(text, good, len + 1);
        size_t n = len;
        int edits = 1 + round % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            size_t pos = (size_t)(rng >> 33) % n;
            int kind = (int)((rng >> 20) % 4);
            if (kind == 0) text[pos] = alphabet[(rng >> 40) % (sizeof alphabet - 1)];
            else if (kind == 1 && n > 1) {
                memmove(text + pos, text + pos + 1, n - pos);
                n--;
            } else if (kind == 2 && n < len * 2) {
                memmove(text + pos + 1, text + pos, n - pos + 1);
                n++;
            } else {
                text[pos] = 0;
                n = pos ? pos : 1;
            }
        }
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        if (kiln_graph_parse(&g, text, NULL, &d)) {
            parsed++;
            assert_true(kiln_graph_verify(&g, &d));
            check_round_trip(&g);
        } else {
            assert_true(d.n >= 1);
            assert_true(d.items[0].line >= 1 && d.items[0].col >= 1);
        }
        kiln_graph_free(&g);
        kiln_diags_free(&d);
    }
    assert_true(parsed > 0);
    free(text);
    free(good);
}

static void test_parse_empty_graph(void **state)
{
    fx *f = *state;
    assert_true(kiln_graph_parse(&f->g, "graph empty\n", NULL, &f->d));
    assert_int_equal(f->g.n_nodes, 0);
    assert_string_equal(f->g.name, "empty");
    assert_int_equal(f->g.loss, KILN_NONE);
    char *text = kiln_graph_print(&f->g);
    assert_string_equal(text, "graph empty\n");
    free(text);
    assert_false(kiln_graph_parse(&f->g, NULL, NULL, &f->d));
}

static void test_golden_files(void **state)
{
    (void)state;
    const char *dir_path = KILN_SOURCE_DIR "/tests/golden/ir";
    DIR *dir = opendir(dir_path);
    assert_non_null(dir);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".kir") != 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir_path, de->d_name);
        char *text = read_text_file(path);
        assert_non_null(text);
        kiln_graph g;
        kiln_diags d;
        kiln_graph_init(&g, NULL);
        kiln_diags_init(&d);
        if (!kiln_graph_parse(&g, text, de->d_name, &d)) {
            kiln_diags_print(&d, stderr);
            fail_msg("%s does not parse", de->d_name);
        }
        assert_true(kiln_graph_verify(&g, &d));
        char *printed = kiln_graph_print(&g);
        if (strcmp(printed, text) != 0) {
            fprintf(stderr, "--- %s\n%s--- printed\n%s", de->d_name, text, printed);
            fail_msg("%s: print(parse(file)) differs from the file", de->d_name);
        }
        free(printed);
        free(text);
        kiln_graph_free(&g);
        kiln_diags_free(&d);
        files++;
    }
    closedir(dir);
    assert_true(files >= 3);
}

/* ---- verifier -------------------------------------------------------------------------- */

static void test_verify_good_graphs(void **state)
{
    fx *f = *state;
    assert_true(kiln_graph_verify(&f->g, &f->d)); /* empty */
    build_all_ops(f);
    assert_true(kiln_graph_verify(&f->g, &f->d));
    assert_int_equal(f->d.n, 0);
}

/* Verifies the corrupted graph: one diagnostic (at least), the first at node `id`,
 * mentioning `what`. */
static void check_verify_fails(fx *f, uint32_t id, const char *what)
{
    assert_false(kiln_graph_verify(&f->g, &f->d));
    assert_true(f->d.n >= 1);
    const kiln_diag *e = &f->d.items[0];
    char where[64];
    snprintf(where, sizeof where, "%%%u", id);
    if (id != KILN_NONE && (!e->where || strncmp(e->where, where, strlen(where)) != 0))
        fail_msg("diagnostic at '%s', want %s", e->where ? e->where : "(null)", where);
    if (!strstr(e->message, what)) fail_msg("message '%s' lacks '%s'", e->message, what);
}

static uint32_t find_op(const kiln_graph *g, kiln_op op)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == op) return i;
    fail_msg("no %s node", kiln_op_table[op].name);
    return KILN_NONE;
}

static void test_verify_wrong_type(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t m = find_op(&f->g, KILN_OP_MATMUL);
    f->g.nodes[m].type.dims[1] = 5;
    check_verify_fails(f, m, "the stored type is f32[2,5] but the shape rule gives f32[2,4]");
    /* the where names the label too */
    char where[64];
    snprintf(where, sizeof where, "%%%u 'matmul'", m);
    assert_string_equal(f->d.items[0].where, where);
}

static void test_verify_later_input(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t e = find_op(&f->g, KILN_OP_EXP);
    ((uint32_t *)f->g.nodes[e].in)[0] = e + 1;
    check_verify_fails(f, e, "not an earlier node");
    kiln_diags_free(&f->d);
    ((uint32_t *)f->g.nodes[e].in)[0] = 1000000; /* past the end: must not be read */
    check_verify_fails(f, e, "not an earlier node");
}

static void test_verify_wrong_arity(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t a = find_op(&f->g, KILN_OP_SUB);
    f->g.nodes[a].n_in = 1;
    check_verify_fails(f, a, "sub takes 2 inputs but the node has 1");
}

static void test_verify_unnormalised_attrs(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t s = find_op(&f->g, KILN_OP_SOFTMAX);
    f->g.nodes[s].attrs.axis = -1; /* same type, but not the stored form */
    check_verify_fails(f, s, "axis is not normalised");
    kiln_diags_free(&f->d);
    f->g.nodes[s].attrs.axis = 1;
    uint32_t r = find_op(&f->g, KILN_OP_SUM);
    f->g.nodes[r].attrs.axes[0] = -1;
    check_verify_fails(f, r, "axes is not normalised");
}

static void test_verify_rule_fails(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t d = find_op(&f->g, KILN_OP_DROPOUT);
    f->g.nodes[d].attrs.scalar = 2;
    check_verify_fails(f, d, "the shape rule fails");
}

static void test_verify_bad_op_and_type(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    f->g.nodes[3].op = (kiln_op)(KILN_OP_COUNT + 7);
    check_verify_fails(f, 3, "not in the op table");
    kiln_diags_free(&f->d);
    f->g.nodes[3].op = KILN_OP_INPUT;
    f->g.nodes[0].type.rank = 99;
    check_verify_fails(f, 0, "malformed");
    /* the nodes reading x are not checked against its broken type: no cascade */
    for (int i = 0; i < f->d.n; i++) assert_null(strstr(f->d.items[i].message, "shape rule gives"));
}

static void test_verify_duplicate_names(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    f->g.nodes[1].attrs.name = f->g.nodes[0].attrs.name; /* two inputs "x" */
    check_verify_fails(f, 1, "input name \"x\" is also used by %0");
    kiln_diags_free(&f->d);
    f->g.nodes[1].attrs.name = "y";
    f->g.nodes[5].attrs.name = f->g.nodes[4].attrs.name;
    check_verify_fails(f, 5, "param name \"fc.weight\"");
    kiln_diags_free(&f->d);
    /* an input and a param may share a name */
    f->g.nodes[5].attrs.name = "x";
    assert_true(kiln_graph_verify(&f->g, &f->d));
}

static void test_verify_outputs_and_loss(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t loss = f->g.loss;
    f->g.loss = 0; /* x is f32[2,3] */
    check_verify_fails(f, 0, "the loss must be a scalar f32, not f32[2,3]");
    kiln_diags_free(&f->d);
    f->g.loss = f->g.n_nodes;
    check_verify_fails(f, KILN_NONE, "the loss refers to");
    kiln_diags_free(&f->d);
    f->g.loss = loss;
    f->g.outputs[1].node = 12345;
    check_verify_fails(f, KILN_NONE, "output refers to %12345");
    kiln_diags_free(&f->d);
    f->g.outputs[1].node = 0;
    f->g.outputs[1].name = f->g.outputs[0].name;
    check_verify_fails(f, KILN_NONE, "given twice");
}

static void test_verify_source_attrs(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    f->g.nodes[4].attrs.init = (kiln_init)9;
    check_verify_fails(f, 4, "init kind 9");
    kiln_diags_free(&f->d);
    f->g.nodes[4].attrs.init = KILN_INIT_NORMAL;
    f->g.nodes[0].attrs.name = NULL;
    check_verify_fails(f, 0, "has no name");
}

static void test_verify_reports_every_problem(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t e = find_op(&f->g, KILN_OP_EXP);
    uint32_t m = find_op(&f->g, KILN_OP_MATMUL);
    f->g.nodes[e].type.dtype = KILN_I32;
    f->g.nodes[m].n_in = 1;
    assert_false(kiln_graph_verify(&f->g, &f->d));
    assert_int_equal(f->d.n, 2);
}

/* ---- main ----------------------------------------------------------------------------- */

/* The op table's rows are consistent (a check that fails on a half-added or
 * mis-declared row, in place of a compile-time count of ops.def against itself). */
static void test_op_table_check(void **state)
{
    char msg[256];
    if (!kiln_op_table_check(msg, sizeof msg)) fail_msg("%s", msg);
}

/* "Did you mean": near misspellings are found, far ones and exact strangers are not. */
static void test_closest_name(void **state)
{
    (void)state;
    const char *const flags[] = {"--steps", "--seed", "--save", "--save-every", "--batch"};
    assert_string_equal(kiln_closest_name("--stpes", flags, 5), "--steps");
    assert_string_equal(kiln_closest_name("--STEPS", flags, 5), "--steps");
    assert_string_equal(kiln_closest_name("--batch-size", flags, 5) ? "x" : "none", "none");
    assert_string_equal(kiln_closest_name("--save_every", flags, 5), "--save-every");
    assert_null(kiln_closest_name("--zzzzzzzz", flags, 5));
    assert_null(kiln_closest_name("x", flags, 5));
    assert_null(kiln_closest_name("--steps", flags, 0));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_op_table_check),
        cmocka_unit_test(test_closest_name),
        T(test_every_row_built),
        T(test_op_table),
        T(test_sources),
        T(test_binary_broadcasting),
        T(test_comparisons_give_f32),
        T(test_where),
        T(test_unary),
        T(test_scale_dropout_cast),
        T(test_reductions),
        T(test_matmul),
        T(test_reshape),
        T(test_transpose),
        T(test_slice),
        T(test_concat),
        T(test_broadcast),
        T(test_gather),
        T(test_softmax_log_softmax),
        T(test_layernorm),
        T(test_attention),
        T(test_cross_entropy),
        T(test_err_broadcast_mismatch),
        T(test_err_matmul_inner),
        T(test_err_bad_axis),
        T(test_err_reshape_count),
        T(test_err_dtype_mix),
        T(test_err_gather_f32_indices),
        T(test_err_attention_shape),
        T(test_err_cross_entropy_target),
        T(test_err_arity),
        T(test_err_sources),
        T(test_err_inputs_none_are_silent),
        T(test_print_format),
        T(test_round_trip_all_ops),
        T(test_round_trip_floats),
        T(test_round_trip_strings),
        T(test_parse_lenient_input),
        T(test_hostile_lexical),
        T(test_hostile_structure),
        T(test_hostile_semantics),
        T(test_hostile_too_many_inputs),
        T(test_hostile_overlong_lines),
        T(test_hostile_mutations),
        T(test_parse_empty_graph),
        T(test_gradient_ops),
        T(test_parse_stream_and_wrt),
        T(test_golden_files),
        T(test_verify_good_graphs),
        T(test_verify_wrong_type),
        T(test_verify_later_input),
        T(test_verify_wrong_arity),
        T(test_verify_unnormalised_attrs),
        T(test_verify_rule_fails),
        T(test_verify_bad_op_and_type),
        T(test_verify_duplicate_names),
        T(test_verify_outputs_and_loss),
        T(test_verify_source_attrs),
        T(test_verify_reports_every_problem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
