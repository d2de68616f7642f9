/* test_interp_tensor.c — the reference interpreter against hand-computed values, on
 * whole tensors: reductions (accumulating in double), matmul (transposes, batch
 * broadcasting), layout (reshape, transpose, slice with any step, concat, broadcast),
 * gather and its index errors, size-0 tensors, and running a graph again after its
 * values are freed. Fixture and helpers: interp_fixture.h. */
#include "interp_fixture.h"

/* ---- reductions ---------------------------------------------------------------------------- */

/* x = arange(24).reshape(2,3,4)·0.5 − 3.1 in f32 */
static float RED_IN[24];
static void fill_red_in(void)
{
    for (int i = 0; i < 24; i++) RED_IN[i] = (float)(i * 0.5 - 3.1);
}

static void test_sum_all_and_keepdims(void **state)
{
    fix *f = *state;
    fill_red_in();
    uint32_t x = IN_F32(f, RED_IN, 2, 3, 4);
    uint32_t all = reduce(f, KILN_OP_SUM, x, SHAPE(0, 1, 2), false);
    uint32_t keep = reduce(f, KILN_OP_SUM, x, SHAPE(2, 0), true); /* given unsorted: sorted by the rule */
    run(f);
    expect_shape(f, all, KILN_F32, 0, NULL);
    EXPECT_F32(f, all, {63.600002f});
    expect_shape(f, keep, KILN_F32, SHAPE(1, 3, 1));
    EXPECT_F32(f, keep, {5.200001f, 21.2f, 37.2f});
}

/* axes [] reduces over nothing (numpy's axis=()): a copy. */
static void test_sum_no_axes(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4};
    uint32_t y = reduce(f, KILN_OP_SUM, IN_F32(f, x, 2, 2), 0, NULL, false);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 2));
    EXPECT_F32_EXACT(f, y, {1, 2, 3, 4});
}

/* Summing in double: 1 + 2^-24 + 2^-24 … would stay 1 in f32 accumulation. */
static void test_sum_accumulates_in_double(void **state)
{
    fix *f = *state;
    static float x[1025];
    x[0] = 1.0f;
    for (int i = 1; i < 1025; i++) x[i] = 0x1.0p-24f;
    uint32_t y = reduce(f, KILN_OP_SUM, IN_F32(f, x, 1025), SHAPE(0), false);
    run(f);
    EXPECT_F32_EXACT(f, y, {1.0f + 1024 * 0x1.0p-24f});
}

static void test_sum_i32_wraps(void **state)
{
    fix *f = *state;
    static const int32_t x[6] = {INT32_MAX, 1, 5, -1, -2, -3};
    uint32_t y = reduce(f, KILN_OP_SUM, IN_I32(f, x, 2, 3), SHAPE(1), false);
    run(f);
    EXPECT_I32(f, y, {INT32_MIN + 5, -6});
}

static void test_mean_middle_axis(void **state)
{
    fix *f = *state;
    fill_red_in();
    uint32_t y = reduce(f, KILN_OP_MEAN, IN_F32(f, RED_IN, 2, 3, 4), SHAPE(1), false);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 4));
    EXPECT_F32(f, y, {-1.1f, -0.59999996f, -0.09999998f, 0.40000004f, 4.9f, 5.4f, 5.9f, 6.4f});
}

static void test_max_f32_nan_propagates(void **state)
{
    fix *f = *state;
    static const float x[6] = {1.0f, -2.0f, 7.5f, NAN, 3.0f, 1.0f};
    uint32_t xi = IN_F32(f, x, 2, 3);
    uint32_t m1 = reduce(f, KILN_OP_MAX, xi, SHAPE(1), false);
    uint32_t m0 = reduce(f, KILN_OP_MAX, xi, SHAPE(0), true);
    run(f);
    EXPECT_F32_EXACT(f, m1, {7.5f, NAN});
    expect_shape(f, m0, KILN_F32, SHAPE(1, 3));
    EXPECT_F32_EXACT(f, m0, {NAN, 3.0f, 7.5f});
}

static void test_max_i32(void **state)
{
    fix *f = *state;
    static const int32_t x[6] = {INT32_MIN, INT32_MIN, -5, 9, 2, 9};
    uint32_t y = reduce(f, KILN_OP_MAX, IN_I32(f, x, 3, 2), SHAPE(1), false);
    run(f);
    EXPECT_I32(f, y, {INT32_MIN, 9, 9});
}

/* ---- matmul --------------------------------------------------------------------------------- */

static void test_matmul_2d(void **state)
{
    fix *f = *state;
    static const float a[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};  /* (2,3) */
    static const float b[6] = {0.1f, 0.4f, 0.7f, 1.0f, 1.3f, 1.6f};    /* (3,2) */
    uint32_t y = matmul(f, IN_F32(f, a, 2, 3), IN_F32(f, b, 3, 2), false, false);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 2));
    EXPECT_F32(f, y, {-0.45f, -0.9f, 2.6999998f, 3.6000001f});
}

/* A stored (K,M) = (3,2), B stored (N,K) = (4,3): C = Aᵀ·Bᵀ is (2,4). */
static void test_matmul_transposed(void **state)
{
    fix *f = *state;
    static const float a[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    static float b[12];
    for (int i = 0; i < 12; i++) b[i] = (float)(i * 0.2);
    uint32_t y = matmul(f, IN_F32(f, a, 3, 2), IN_F32(f, b, 4, 3), true, true);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 4));
    EXPECT_F32(f, y, {0.4f, 0.39999998f, 0.39999998f, 0.4000001f, 0.7f, 1.6f, 2.5f, 3.4f});
}

/* (2,1,2,3) · (3,3,2) → (2,3,2,2): batch dims broadcast with a rank difference. */
static void test_matmul_batched_broadcast(void **state)
{
    fix *f = *state;
    static float a[12], b[18];
    for (int i = 0; i < 12; i++) a[i] = (float)(i * 0.25 - 1);
    for (int i = 0; i < 18; i++) b[i] = (float)(i * 0.1 - 0.5);
    uint32_t y = matmul(f, IN_F32(f, a, 2, 1, 2, 3), IN_F32(f, b, 3, 3, 2), false, false);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 3, 2, 2));
    EXPECT_F32(f, y, {0.77500004f, 0.55f, 0.1f, 0.1f, -0.575f, -0.8f, 0.1f, 0.10000001f,
                      -1.925f, -2.15f, 0.10000001f, 0.10000001f, -0.575f, -0.35f, -1.25f, -0.8f,
                      0.77500004f, 1.0f, 1.45f, 1.9000001f, 2.125f, 2.3500001f, 4.15f, 4.6f});
}

/* K = 0: every result element is an empty sum. */
static void test_matmul_empty_inner(void **state)
{
    fix *f = *state;
    uint32_t y = matmul(f, IN_F32(f, NULL, 2, 0), IN_F32(f, NULL, 0, 3), false, false);
    run(f);
    EXPECT_F32_EXACT(f, y, {0, 0, 0, 0, 0, 0});
}

/* ---- layout ---------------------------------------------------------------------------------- */

static void test_reshape(void **state)
{
    fix *f = *state;
    static const int32_t x[6] = {1, 2, 3, 4, 5, 6};
    kiln_attrs a = {0};
    set_shape(&a, KILN_I32, SHAPE(3, -1));
    uint32_t y = node(f, KILN_OP_RESHAPE, &a, INS(IN_I32(f, x, 2, 3)));
    run(f);
    expect_shape(f, y, KILN_I32, SHAPE(3, 2));
    EXPECT_I32(f, y, {1, 2, 3, 4, 5, 6});
}

static void test_transpose_3d(void **state)
{
    fix *f = *state;
    static int32_t x[24];
    for (int i = 0; i < 24; i++) x[i] = i;
    kiln_attrs a = {0};
    a.perm[0] = 1, a.perm[1] = 2, a.perm[2] = 0;
    uint32_t y = node(f, KILN_OP_TRANSPOSE, &a, INS(IN_I32(f, x, 2, 3, 4)));
    run(f);
    expect_shape(f, y, KILN_I32, SHAPE(3, 4, 2));
    /* y[i,j,k] = x[k,i,j] = 12k + 4i + j */
    EXPECT_I32(f, y, {0, 12, 1, 13, 2, 14, 3, 15, 4, 16, 5, 17, 6, 18, 7, 19, 8, 20, 9, 21, 10, 22, 11, 23});
}

static void test_slice_step(void **state)
{
    fix *f = *state;
    static float x[12];
    for (int i = 0; i < 12; i++) x[i] = (float)i;
    uint32_t xi = IN_F32(f, x, 2, 6);
    /* python x[:, 1:6:2] */
    uint32_t y = slice(f, xi, 1, 1, 6, 2);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 3));
    EXPECT_F32_EXACT(f, y, {1, 3, 5, 7, 9, 11});
}

static void test_slice_negative_step(void **state)
{
    fix *f = *state;
    static float x[12];
    for (int i = 0; i < 12; i++) x[i] = (float)i;
    uint32_t xi = IN_F32(f, x, 2, 6);
    int64_t s, e;
    /* python x[:, ::-2] and x[::-1, :] */
    assert_true(kiln_slice_normalize(6, false, 0, false, 0, -2, &s, &e));
    uint32_t y = slice(f, xi, -1, s, e, -2);
    assert_true(kiln_slice_normalize(2, false, 0, false, 0, -1, &s, &e));
    uint32_t z = slice(f, xi, 0, s, e, -1);
    run(f);
    EXPECT_F32_EXACT(f, y, {5, 3, 1, 11, 9, 7});
    EXPECT_F32_EXACT(f, z, {6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5});
}

/* Python's len(range(len)[start:end:step]) (CPython's PySlice_AdjustIndices), the
 * reference for the test below; has_* false is an omitted bound. */
static int64_t python_slice_len(int64_t len, bool has_start, int64_t start, bool has_end, int64_t end, int64_t step)
{
    if (!has_start) start = step > 0 ? 0 : len - 1;
    else if (start < 0 && (start += len) < 0) start = step < 0 ? -1 : 0;
    else if (start >= len) start = step < 0 ? len - 1 : len;
    if (!has_end) end = step > 0 ? len : -1;
    else if (end < 0 && (end += len) < 0) end = step < 0 ? -1 : 0;
    else if (end >= len) end = step < 0 ? len - 1 : len;
    if (step > 0) return end > start ? (end - start - 1) / step + 1 : 0;
    return start > end ? (start - end - 1) / -step + 1 : 0;
}

/* Every slice of dims 0..6 with bounds in −9..9 or omitted and steps ±1..3 normalises
 * to a form the shape rule accepts, with Python's length: empty ranges included
 * (x[5:2], x[-1:-3], x[2:5:-1] were refused as "not normalised"). */
static void test_slice_python_lengths(void **state)
{
    (void)state;
    kiln_diags d;
    kiln_diags_init(&d);
    for (int64_t len = 0; len <= 6; len++) {
        kiln_graph g; /* its own graph: 4,900 slices per dim are more than the fixture holds */
        kiln_graph_init(&g, "slices");
        kiln_attrs in = {0};
        set_shape(&in, KILN_F32, 2, (const int64_t[]){2, len});
        in.name = "x";
        uint32_t xi = kiln_graph_add(&g, KILN_OP_INPUT, NULL, 0, &in, "x", "inputs.x", &d);
        assert_int_not_equal(xi, KILN_NONE);
        for (int64_t step = -3; step <= 3; step++) {
            if (step == 0) continue;
            for (int64_t start = -10; start <= 9; start++)
                for (int64_t end = -10; end <= 9; end++) {
                    bool has_start = start > -10, has_end = end > -10; /* −10: omitted */
                    kiln_attrs a = {.axis = 1, .step = step};
                    assert_true(kiln_slice_normalize(len, has_start, start, has_end, end, step, &a.start, &a.end));
                    int64_t want = python_slice_len(len, has_start, start, has_end, end, step);
                    assert_int_equal(kiln_slice_count(a.start, a.end, step), want);
                    uint32_t y = kiln_graph_add(&g, KILN_OP_SLICE, &xi, 1, &a, "y", "layers[0]", &d);
                    if (y == KILN_NONE) kiln_diags_print(&d, stderr);
                    assert_int_not_equal(y, KILN_NONE);
                    assert_int_equal(g.nodes[y].type.dims[1], want);
                }
        }
        kiln_graph_free(&g);
    }
    kiln_diags_free(&d);
}

/* python x[1::2**62] and x[2::-2**63]: one element each, no overflow. */
static void test_slice_huge_step(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4};
    uint32_t xi = IN_F32(f, x, 4);
    uint32_t y = slice(f, xi, 0, 1, 4, INT64_C(1) << 62);
    uint32_t z = slice(f, xi, 0, 2, -1, INT64_MIN);
    run(f);
    EXPECT_F32_EXACT(f, y, {2});
    EXPECT_F32_EXACT(f, z, {3});
}

static void test_slice_empty(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4};
    uint32_t xi = IN_F32(f, x, 4);
    uint32_t y = slice(f, xi, 0, 3, 3, 1);   /* x[3:3] */
    uint32_t z = slice(f, xi, 0, -1, -1, -1); /* x[-10::-1] normalised */
    uint32_t w = OP(f, KILN_OP_EXP, y);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(0));
    expect_shape(f, z, KILN_F32, SHAPE(0));
    expect_shape(f, w, KILN_F32, SHAPE(0));
}

static void test_concat_three_with_empty(void **state)
{
    fix *f = *state;
    static const float a[4] = {1, 2, 3, 4};        /* (2,2) */
    static const float c[6] = {5, 6, 7, 8, 9, 10}; /* (2,3) */
    kiln_attrs at = {0};
    at.axis = 1;
    uint32_t y = node(f, KILN_OP_CONCAT, &at, INS(IN_F32(f, a, 2, 2), IN_F32(f, NULL, 2, 0), IN_F32(f, c, 2, 3)));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 5));
    EXPECT_F32_EXACT(f, y, {1, 2, 5, 6, 7, 3, 4, 8, 9, 10});
}

static void test_concat_axis0_i32(void **state)
{
    fix *f = *state;
    static const int32_t a[2] = {1, 2}, b[4] = {3, 4, 5, 6};
    kiln_attrs at = {0};
    at.axis = 0;
    uint32_t y = node(f, KILN_OP_CONCAT, &at, INS(IN_I32(f, a, 1, 2), IN_I32(f, b, 2, 2)));
    uint32_t one = node(f, KILN_OP_CONCAT, &at, INS(IN_I32(f, a, 1, 2))); /* a single input */
    run(f);
    EXPECT_I32(f, y, {1, 2, 3, 4, 5, 6});
    EXPECT_I32(f, one, {1, 2});
}

static void test_broadcast(void **state)
{
    fix *f = *state;
    static const float x[3] = {1, 2, 3};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(2, 3, 2));
    uint32_t y = node(f, KILN_OP_BROADCAST, &a, INS(IN_F32(f, x, 3, 1)));
    static const float s = 7;
    kiln_attrs b = {0};
    set_shape(&b, KILN_F32, SHAPE(2));
    uint32_t z = node(f, KILN_OP_BROADCAST, &b, INS(input(f, KILN_F32, 0, NULL, &s)));
    run(f);
    EXPECT_F32_EXACT(f, y, {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
    EXPECT_F32_EXACT(f, z, {7, 7});
}

/* ---- gather ---------------------------------------------------------------------------------- */


static void test_gather_rows(void **state)
{
    fix *f = *state;
    static const float table[6] = {0, 1, 10, 11, 20, 21}; /* (3,2) */
    static const int32_t idx[4] = {2, 0, 2, 1};            /* (2,2) */
    uint32_t y = gather(f, IN_F32(f, table, 3, 2), IN_I32(f, idx, 2, 2), 0);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 2, 2));
    EXPECT_F32_EXACT(f, y, {20, 21, 0, 1, 20, 21, 10, 11});
}

/* numpy.take(table, idx, axis=1) on a (2,3,2) i32 table: shape (2, 2, 2). */
static void test_gather_middle_axis_i32(void **state)
{
    fix *f = *state;
    static int32_t table[12];
    for (int i = 0; i < 12; i++) table[i] = i;
    static const int32_t idx[2] = {2, 0};
    uint32_t y = gather(f, IN_I32(f, table, 2, 3, 2), IN_I32(f, idx, 2), 1);
    static const int32_t one = 1;
    uint32_t z = gather(f, IN_I32(f, table, 2, 3, 2), input(f, KILN_I32, 0, NULL, &one), -1); /* scalar index */
    run(f);
    expect_shape(f, y, KILN_I32, SHAPE(2, 2, 2));
    EXPECT_I32(f, y, {4, 5, 0, 1, 10, 11, 6, 7});
    expect_shape(f, z, KILN_I32, SHAPE(2, 3));
    EXPECT_I32(f, z, {1, 3, 5, 7, 9, 11});
}

static void test_gather_negative_index_is_error(void **state)
{
    fix *f = *state;
    static const float table[4] = {1, 2, 3, 4};
    static const int32_t idx[3] = {0, -1, 1};
    gather(f, IN_F32(f, table, 2, 2), IN_I32(f, idx, 3), 0);
    expect_run_error(f, "index -1", "[0, 2)");
    assert_string_equal(f->d.items[0].where, "layers[0]");
    assert_non_null(strstr(f->d.items[0].message, "'y'"));
}

static void test_gather_too_large_index_is_error(void **state)
{
    fix *f = *state;
    static const float table[4] = {1, 2, 3, 4};
    static const int32_t idx[2] = {1, 2};
    uint32_t g = gather(f, IN_F32(f, table, 2, 2), IN_I32(f, idx, 2), 1);
    OP(f, KILN_OP_NEG, g); /* never runs */
    expect_run_error(f, "index 2", "element 1");
    /* free after a failed run: the later node's slot is still empty */
    kiln_interp_free_values(&f->g, f->v);
}

/* The index is checked even when nothing would be copied. */
static void test_gather_error_with_empty_rows(void **state)
{
    fix *f = *state;
    static const int32_t idx[1] = {0};
    gather(f, IN_F32(f, NULL, 0, 5), IN_I32(f, idx, 1), 0);
    expect_run_error(f, "index 0", "[0, 0)");
}

/* ---- size-0 tensors ------------------------------------------------------------------------------ */

static void test_empty_elementwise_and_reductions(void **state)
{
    fix *f = *state;
    static const float b[3] = {1, 2, 3};
    uint32_t x = IN_F32(f, NULL, 0, 3);
    uint32_t y = OP(f, KILN_OP_ADD, x, IN_F32(f, b, 3));
    uint32_t s0 = reduce(f, KILN_OP_SUM, y, SHAPE(0), false);  /* over the empty axis: zeros */
    uint32_t m0 = reduce(f, KILN_OP_MEAN, y, SHAPE(0), false); /* 0/0 */
    uint32_t s1 = reduce(f, KILN_OP_SUM, y, SHAPE(1), false);  /* over a full axis of no rows */
    uint32_t sm = node(f, KILN_OP_SOFTMAX, &(kiln_attrs){.axis = 0}, INS(y));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(0, 3));
    EXPECT_F32_EXACT(f, s0, {0, 0, 0});
    EXPECT_F32_EXACT(f, m0, {NAN, NAN, NAN});
    expect_shape(f, s1, KILN_F32, SHAPE(0));
    expect_shape(f, sm, KILN_F32, SHAPE(0, 3));
}

static void test_empty_matmul_and_layout(void **state)
{
    fix *f = *state;
    static const float b[6] = {1, 2, 3, 4, 5, 6};
    uint32_t a = IN_F32(f, NULL, 0, 2);
    uint32_t y = matmul(f, a, IN_F32(f, b, 2, 3), false, false); /* (0,3) */
    kiln_attrs tp = {0};
    tp.perm[0] = 1, tp.perm[1] = 0;
    uint32_t t = node(f, KILN_OP_TRANSPOSE, &tp, INS(y));
    kiln_attrs bc = {0};
    set_shape(&bc, KILN_F32, SHAPE(4, 3, 0));
    uint32_t br = node(f, KILN_OP_BROADCAST, &bc, INS(t));
    static const int32_t idx[2] = {0, 1};
    uint32_t g = gather(f, t, IN_I32(f, idx, 2), 0); /* (2,0) */
    kiln_attrs ln = {0};
    ln.scalar = 1e-5;
    uint32_t w = IN_F32(f, NULL, 0), bias = IN_F32(f, NULL, 0);
    uint32_t norm = node(f, KILN_OP_LAYERNORM, &ln, INS(t, w, bias));
    run(f);
    expect_shape(f, t, KILN_F32, SHAPE(3, 0));
    expect_shape(f, br, KILN_F32, SHAPE(4, 3, 0));
    expect_shape(f, g, KILN_F32, SHAPE(2, 0));
    expect_shape(f, norm, KILN_F32, SHAPE(3, 0));
}

/* ---- the driver ----------------------------------------------------------------------------------- */

/* A graph can be run again once its values are freed; freeing twice is harmless. */
static void test_rerun_after_free(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4};
    uint32_t xi = IN_F32(f, x, 2, 2);
    uint32_t y = OP(f, KILN_OP_MUL, xi, xi);
    uint32_t s = reduce(f, KILN_OP_SUM, y, SHAPE(0, 1), false);
    run(f);
    EXPECT_F32_EXACT(f, s, {30});
    kiln_interp_free_values(&f->g, f->v);
    kiln_interp_free_values(&f->g, f->v); /* twice is harmless: slots are NULL */
    run(f);
    EXPECT_F32_EXACT(f, s, {30});
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_sum_all_and_keepdims),
        T(test_sum_no_axes),
        T(test_sum_accumulates_in_double),
        T(test_sum_i32_wraps),
        T(test_mean_middle_axis),
        T(test_max_f32_nan_propagates),
        T(test_max_i32),
        T(test_matmul_2d),
        T(test_matmul_transposed),
        T(test_matmul_batched_broadcast),
        T(test_matmul_empty_inner),
        T(test_reshape),
        T(test_transpose_3d),
        T(test_slice_step),
        T(test_slice_negative_step),
        T(test_slice_python_lengths), T(test_slice_huge_step),
        T(test_slice_empty),
        T(test_concat_three_with_empty),
        T(test_concat_axis0_i32),
        T(test_broadcast),
        T(test_gather_rows),
        T(test_gather_middle_axis_i32),
        T(test_gather_negative_index_is_error),
        T(test_gather_too_large_index_is_error),
        T(test_gather_error_with_empty_rows),
        T(test_empty_elementwise_and_reductions),
        T(test_empty_matmul_and_layout),
        T(test_rerun_after_free),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
