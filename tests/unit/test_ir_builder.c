/* test_ir_builder.c — the IR builder: the shape and dtype rules of every op in ops.def
 * (broadcasting, reductions, matmul, layout, attention, the ops autodiff emits), the
 * shape errors it refuses with a message, the op table's consistency and the
 * "did you mean" helper. The text form is test_ir_text.c, the verifier
 * test_ir_verify.c; the shared fixture is ir_fixture.h.
 *
 * Graphs are built through kiln_graph_add only, as the rest of kiln does. Each test gets
 * a fresh graph and diagnostics from the fixture. */
#include "ir_fixture.h"

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

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
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
        T(test_gradient_ops),
        T(test_parse_stream_and_wrt),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
