/* test_interp_elementwise.c — the reference interpreter against hand-computed values,
 * one element at a time: sources (inputs, params, constants, iota), binary ops with
 * broadcasting, i32 arithmetic (wrapping), every unary op, casts and dropout.
 *
 * Each test builds a small graph with kiln_graph_add, runs kiln_interp_run and compares
 * the result with numbers worked out by hand or with numpy in float64 (rounded to f32).
 * Input buffers are the tests' own arrays, so running under ASan also checks that the
 * interpreter never frees or overruns them. The other ops are in test_interp_tensor.c
 * and test_interp_nn.c; the shared fixture is interp_fixture.h. */
#include "interp_fixture.h"

/* ---- sources ---------------------------------------------------------------------------- */

static void test_input_and_param_stay_callers(void **state)
{
    fix *f = *state;
    static const float x[3] = {1, 2, 3};
    static const float w[3] = {10, 20, 30};
    uint32_t xi = IN_F32(f, x, 3);
    kiln_attrs pa = {0};
    set_shape(&pa, KILN_F32, SHAPE(3));
    pa.name = "w";
    pa.init = KILN_INIT_ZEROS;
    uint32_t wi = node(f, KILN_OP_PARAM, &pa, 0, NULL);
    f->v[wi] = (void *)w;
    uint32_t y = OP(f, KILN_OP_ADD, xi, wi);
    run(f);
    EXPECT_F32_EXACT(f, y, {11, 22, 33});
    /* free leaves the caller's slots alone (ASan would flag freeing static arrays) */
    kiln_interp_free_values(&f->g, f->v);
    assert_ptr_equal(f->v[xi], x);
    assert_ptr_equal(f->v[wi], w);
    assert_null(f->v[y]);
}

static void test_missing_input_buffer(void **state)
{
    fix *f = *state;
    uint32_t x = IN_F32(f, NULL, 2);
    OP(f, KILN_OP_NEG, x);
    expect_run_error(f, "no buffer", "'x'");
}

static void test_constant_fill_and_values(void **state)
{
    fix *f = *state;
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(2, 2));
    float one = 1.5f;
    a.values = &one;
    a.n_values = 1;
    uint32_t fill = node(f, KILN_OP_CONSTANT, &a, 0, NULL);
    kiln_attrs b = {0};
    set_shape(&b, KILN_I32, SHAPE(3));
    int32_t vals[3] = {7, -8, 9};
    b.values = vals;
    b.n_values = 3;
    uint32_t full = node(f, KILN_OP_CONSTANT, &b, 0, NULL);
    kiln_attrs s = {0};
    set_shape(&s, KILN_F32, 0, NULL); /* a scalar */
    float pi = 3.25f;
    s.values = &pi;
    s.n_values = 1;
    uint32_t scalar = node(f, KILN_OP_CONSTANT, &s, 0, NULL);
    run(f);
    EXPECT_F32_EXACT(f, fill, {1.5f, 1.5f, 1.5f, 1.5f});
    EXPECT_I32(f, full, {7, -8, 9});
    EXPECT_F32_EXACT(f, scalar, {3.25f});
}

static void test_iota(void **state)
{
    fix *f = *state;
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(2, 3));
    a.axis = 1;
    uint32_t cols = node(f, KILN_OP_IOTA, &a, 0, NULL);
    kiln_attrs b = {0};
    set_shape(&b, KILN_I32, SHAPE(3, 2));
    b.axis = -2; /* normalised to 0 by the shape rule */
    uint32_t rows = node(f, KILN_OP_IOTA, &b, 0, NULL);
    run(f);
    EXPECT_F32_EXACT(f, cols, {0, 1, 2, 0, 1, 2});
    EXPECT_I32(f, rows, {0, 0, 1, 1, 2, 2});
}

/* ---- binary elementwise and broadcasting ----------------------------------------------------- */

static void test_add_broadcast_row(void **state)
{
    fix *f = *state;
    static const float a[6] = {1, 2, 3, 4, 5, 6};
    static const float b[3] = {10, 20, 30};
    uint32_t y = OP(f, KILN_OP_ADD, IN_F32(f, a, 2, 3), IN_F32(f, b, 3));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 3));
    EXPECT_F32_EXACT(f, y, {11, 22, 33, 14, 25, 36});
}

static void test_sub_scalar_operand(void **state)
{
    fix *f = *state;
    static const float a[3] = {1, 2, 3};
    static const float s = 0.5f;
    uint32_t sv = input(f, KILN_F32, 0, NULL, &s);
    uint32_t y1 = OP(f, KILN_OP_SUB, IN_F32(f, a, 3), sv);
    uint32_t y2 = OP(f, KILN_OP_SUB, sv, IN_F32(f, a, 3));
    uint32_t y3 = OP(f, KILN_OP_SUB, sv, sv); /* scalar op scalar is a scalar */
    run(f);
    EXPECT_F32_EXACT(f, y1, {0.5f, 1.5f, 2.5f});
    EXPECT_F32_EXACT(f, y2, {-0.5f, -1.5f, -2.5f});
    expect_shape(f, y3, KILN_F32, 0, NULL);
    EXPECT_F32_EXACT(f, y3, {0});
}

/* (2,1,3) * (4,1) → (2,4,3): size-1 dims on both sides and a rank difference. */
static void test_mul_broadcast_both_sides(void **state)
{
    fix *f = *state;
    static const float a[6] = {1, 2, 3, 4, 5, 6};
    static const float b[4] = {1, 10, 100, -1};
    uint32_t y = OP(f, KILN_OP_MUL, IN_F32(f, a, 2, 1, 3), IN_F32(f, b, 4, 1));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 4, 3));
    EXPECT_F32_EXACT(f, y, {1, 2, 3, 10, 20, 30, 100, 200, 300, -1, -2, -3,
                            4, 5, 6, 40, 50, 60, 400, 500, 600, -4, -5, -6});
}

static void test_div(void **state)
{
    fix *f = *state;
    static const float a[4] = {1, -1, 0, 1};
    static const float b[4] = {4, 0, 0, 3};
    uint32_t y = OP(f, KILN_OP_DIV, IN_F32(f, a, 4), IN_F32(f, b, 4));
    run(f);
    EXPECT_F32_EXACT(f, y, {0.25f, -INFINITY, NAN, 0.33333334f});
}

static void test_maximum_minimum_nan(void **state)
{
    fix *f = *state;
    static const float a[4] = {1, -2, NAN, 5};
    static const float b[4] = {3, -4, 0, NAN};
    uint32_t ai = IN_F32(f, a, 4), bi = IN_F32(f, b, 4);
    uint32_t mx = OP(f, KILN_OP_MAXIMUM, ai, bi), mn = OP(f, KILN_OP_MINIMUM, ai, bi);
    run(f);
    EXPECT_F32_EXACT(f, mx, {3, -2, NAN, NAN});
    EXPECT_F32_EXACT(f, mn, {1, -4, NAN, NAN});
}

/* numpy.power: sqrt via 0.5, NaN for a negative base with a fractional exponent, exact
 * odd powers of negative bases, inf for 0^-1. */
static void test_pow(void **state)
{
    fix *f = *state;
    static const float a[6] = {2.0f, -8.0f, -2.0f, 0.0f, 4.0f, 1.5f};
    static const float b[6] = {0.5f, 1.0f / 3.0f, 3.0f, -1.0f, -0.5f, 2.2f};
    uint32_t y = OP(f, KILN_OP_POW, IN_F32(f, a, 6), IN_F32(f, b, 6));
    run(f);
    EXPECT_F32(f, y, {1.4142135f, NAN, -8.0f, INFINITY, 0.5f, 2.4400616f});
}

static void test_compare_f32_broadcast(void **state)
{
    fix *f = *state;
    static const float a[4] = {1, 2, 3, NAN};
    static const float b = 2;
    uint32_t ai = IN_F32(f, a, 4), bi = input(f, KILN_F32, 0, NULL, &b);
    uint32_t lt = OP(f, KILN_OP_LT, ai, bi), gt = OP(f, KILN_OP_GT, ai, bi), eq = OP(f, KILN_OP_EQ, ai, bi);
    run(f);
    EXPECT_F32_EXACT(f, lt, {1, 0, 0, 0});
    EXPECT_F32_EXACT(f, gt, {0, 0, 1, 0});
    EXPECT_F32_EXACT(f, eq, {0, 1, 0, 0});
}

static void test_compare_i32_gives_f32(void **state)
{
    fix *f = *state;
    static const int32_t a[3] = {INT32_MIN, 5, INT32_MAX};
    static const int32_t b[3] = {INT32_MIN + 1, 5, INT32_MAX - 1}; /* differ by less than an f32 ulp */
    uint32_t ai = IN_I32(f, a, 3), bi = IN_I32(f, b, 3);
    uint32_t lt = OP(f, KILN_OP_LT, ai, bi), gt = OP(f, KILN_OP_GT, ai, bi), eq = OP(f, KILN_OP_EQ, ai, bi);
    run(f);
    EXPECT_F32_EXACT(f, lt, {1, 0, 0});
    EXPECT_F32_EXACT(f, gt, {0, 0, 1});
    EXPECT_F32_EXACT(f, eq, {0, 1, 0});
}

/* cond (2,1) f32 with a NaN (≠ 0, so true), a (3), b scalar → (2,3). */
static void test_where_three_way_broadcast(void **state)
{
    fix *f = *state;
    static const float cond[2] = {0, NAN};
    static const float a[3] = {1, 2, 3};
    static const float b = -1;
    uint32_t y = OP(f, KILN_OP_WHERE, IN_F32(f, cond, 2, 1), IN_F32(f, a, 3), input(f, KILN_F32, 0, NULL, &b));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 3));
    EXPECT_F32_EXACT(f, y, {-1, -1, -1, 1, 2, 3});
}

static void test_where_i32_cond_and_branches(void **state)
{
    fix *f = *state;
    static const int32_t cond[4] = {1, 0, -7, 0};
    static const int32_t a[4] = {10, 20, 30, 40};
    static const int32_t b[4] = {-1, -2, -3, -4};
    uint32_t y = OP(f, KILN_OP_WHERE, IN_I32(f, cond, 4), IN_I32(f, a, 4), IN_I32(f, b, 4));
    run(f);
    EXPECT_I32(f, y, {10, -2, 30, -4});
}

/* ---- i32 arithmetic ------------------------------------------------------------------------- */

static void test_i32_add_sub_wrap(void **state)
{
    fix *f = *state;
    static const int32_t a[4] = {INT32_MAX, INT32_MIN, 5, -5};
    static const int32_t b[4] = {1, 1, 7, -7};
    uint32_t ai = IN_I32(f, a, 4), bi = IN_I32(f, b, 4);
    uint32_t add = OP(f, KILN_OP_ADD, ai, bi), sub = OP(f, KILN_OP_SUB, ai, bi);
    run(f);
    EXPECT_I32(f, add, {INT32_MIN, INT32_MIN + 1, 12, -12});
    EXPECT_I32(f, sub, {INT32_MAX - 1, INT32_MAX, -2, 2});
}

static void test_i32_mul_wrap_broadcast(void **state)
{
    fix *f = *state;
    static const int32_t a[4] = {65536, -3, 46341, 7};
    static const int32_t b[2] = {65536, 2};
    uint32_t y = OP(f, KILN_OP_MUL, IN_I32(f, a, 2, 2), IN_I32(f, b, 2));
    run(f);
    /* 2^32 wraps to 0; 46341·65536 = 3037003776 wraps to -1257963520 */
    EXPECT_I32(f, y, {0, -6, -1257963520, 14});
}

static void test_i32_maximum_minimum(void **state)
{
    fix *f = *state;
    static const int32_t a[3] = {INT32_MIN, 4, -2};
    static const int32_t b[3] = {INT32_MAX, 4, -3};
    uint32_t ai = IN_I32(f, a, 3), bi = IN_I32(f, b, 3);
    uint32_t mx = OP(f, KILN_OP_MAXIMUM, ai, bi), mn = OP(f, KILN_OP_MINIMUM, ai, bi);
    run(f);
    EXPECT_I32(f, mx, {INT32_MAX, 4, -2});
    EXPECT_I32(f, mn, {INT32_MIN, 4, -3});
}

static void test_i32_neg_abs(void **state)
{
    fix *f = *state;
    static const int32_t a[4] = {3, -4, 0, INT32_MIN};
    uint32_t ai = IN_I32(f, a, 4);
    uint32_t neg = OP(f, KILN_OP_NEG, ai), abs_ = OP(f, KILN_OP_ABS, ai);
    run(f);
    EXPECT_I32(f, neg, {-3, 4, 0, INT32_MIN}); /* two's complement wrap, like torch */
    EXPECT_I32(f, abs_, {3, 4, 0, INT32_MIN});
}

/* ---- unary f32 ------------------------------------------------------------------------------ */

static void test_neg(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_NEG, UX);
    run(f);
    EXPECT_F32_EXACT(f, y, {3.0f, 0.5f, -0.0f, -0.25f, -1.0f, -2.5f});
}

static void test_exp(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_EXP, UX);
    run(f);
    EXPECT_F32(f, y, {0.049787067f, 0.60653067f, 1.0f, 1.2840254f, 2.7182817f, 12.182494f});
}

static void test_log(void **state)
{
    fix *f = *state;
    static const float x[3] = {0, -1, INFINITY};
    uint32_t y = unary(f, KILN_OP_LOG, POS);
    uint32_t z = OP(f, KILN_OP_LOG, IN_F32(f, x, 3));
    run(f);
    EXPECT_F32(f, y, {-4.6051702f, -1.3862944f, 0.0f, 0.6931472f, 2.1972246f, 4.6051702f});
    EXPECT_F32_EXACT(f, z, {-INFINITY, NAN, INFINITY});
}

static void test_sqrt(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_SQRT, POS);
    run(f);
    EXPECT_F32(f, y, {0.1f, 0.5f, 1.0f, 1.4142135f, 3.0f, 10.0f});
}

static void test_rsqrt(void **state)
{
    fix *f = *state;
    static const float x[2] = {0.0f, -1.0f};
    uint32_t y = unary(f, KILN_OP_RSQRT, POS);
    uint32_t z = OP(f, KILN_OP_RSQRT, IN_F32(f, x, 2));
    run(f);
    EXPECT_F32(f, y, {10.0f, 2.0f, 1.0f, 0.70710677f, 0.33333334f, 0.1f});
    EXPECT_F32_EXACT(f, z, {INFINITY, NAN});
}

static void test_abs(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_ABS, UX);
    run(f);
    EXPECT_F32_EXACT(f, y, {3.0f, 0.5f, 0.0f, 0.25f, 1.0f, 2.5f});
}

static void test_square(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_SQUARE, UX);
    run(f);
    EXPECT_F32_EXACT(f, y, {9.0f, 0.25f, 0.0f, 0.0625f, 1.0f, 6.25f});
}

static void test_recip(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_RECIP, UX);
    run(f);
    EXPECT_F32(f, y, {-0.33333334f, -2.0f, INFINITY, 4.0f, 1.0f, 0.4f});
}

static void test_tanh(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_TANH, UX);
    run(f);
    EXPECT_F32(f, y, {-0.9950548f, -0.46211717f, 0.0f, 0.24491866f, 0.7615942f, 0.9866143f});
}

/* Large |x| must not overflow into NaN (exp(800) is inf in double). */
static void test_sigmoid_stable(void **state)
{
    fix *f = *state;
    static const float x[6] = {-800.0f, -30.0f, -1.0f, 0.0f, 2.0f, 800.0f};
    uint32_t y = unary(f, KILN_OP_SIGMOID, x);
    run(f);
    EXPECT_F32(f, y, {0.0f, 9.357623e-14f, 0.26894143f, 0.5f, 0.8807971f, 1.0f});
}

static void test_relu(void **state)
{
    fix *f = *state;
    static const float x[4] = {-2, 0, 3.5f, NAN};
    uint32_t y = OP(f, KILN_OP_RELU, IN_F32(f, x, 4));
    run(f);
    EXPECT_F32_EXACT(f, y, {0, 0, 3.5f, NAN});
}

static void test_silu(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_SILU, UX);
    run(f);
    EXPECT_F32(f, y, {-0.14227761f, -0.18877034f, 0.0f, 0.14054413f, 0.7310586f, 2.3103545f});
}

static void test_gelu_erf(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_GELU, UX);
    run(f);
    EXPECT_F32(f, y, {-0.004049694f, -0.15426877f, 0.0f, 0.14967658f, 0.8413448f, 2.4844759f});
}

static void test_gelu_tanh(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_GELU_TANH, UX);
    run(f);
    EXPECT_F32(f, y, {-0.003637392f, -0.154286f, 0.0f, 0.14967535f, 0.841192f, 2.4849157f});
}

static void test_scale(void **state)
{
    fix *f = *state;
    kiln_attrs a = {0};
    a.scalar = 0.1; /* the double 0.1, not 0.1f: the product is rounded once */
    uint32_t y = node(f, KILN_OP_SCALE, &a, INS(IN_F32(f, UX, 6)));
    run(f);
    EXPECT_F32_EXACT(f, y, {-0.3f, -0.05f, 0.0f, 0.025f, 0.1f, 0.25f});
}

static void test_cast_f32_to_i32(void **state)
{
    fix *f = *state;
    static const float x[9] = {2.9f, -2.9f, 0.5f, -0.5f, 3e9f, -3e9f, NAN, INFINITY, 2147483520.0f};
    kiln_attrs a = {0};
    a.dtype = KILN_I32;
    uint32_t y = node(f, KILN_OP_CAST, &a, INS(IN_F32(f, x, 9)));
    run(f);
    /* toward zero; out of range saturates and NaN gives 0 (llvm.fptosi.sat) */
    EXPECT_I32(f, y, {2, -2, 0, 0, INT32_MAX, INT32_MIN, 0, INT32_MAX, 2147483520});
}

static void test_cast_i32_to_f32_and_same(void **state)
{
    fix *f = *state;
    static const int32_t x[3] = {-7, 16777217, 0}; /* 2^24+1 rounds to even */
    uint32_t xi = IN_I32(f, x, 3);
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    uint32_t y = node(f, KILN_OP_CAST, &a, INS(xi));
    kiln_attrs b = {0};
    b.dtype = KILN_I32;
    uint32_t same = node(f, KILN_OP_CAST, &b, INS(xi));
    run(f);
    EXPECT_F32_EXACT(f, y, {-7.0f, 16777216.0f, 0.0f});
    EXPECT_I32(f, same, {-7, 16777217, 0});
}

/* ---- dropout ---------------------------------------------------------------------------------- */

static void test_dropout_identity_outside_training(void **state)
{
    fix *f = *state;
    kiln_attrs a = {0};
    a.scalar = 0.5;
    uint32_t y = node(f, KILN_OP_DROPOUT, &a, INS(IN_F32(f, UX, 6)));
    run(f);
    EXPECT_F32_EXACT(f, y, {-3.0f, -0.5f, 0.0f, 0.25f, 1.0f, 2.5f});
}

static void test_dropout_training(void **state)
{
    fix *f = *state;
    enum { N = 4000 };
    static float x[N];
    for (int i = 0; i < N; i++) x[i] = 1.0f + (float)(i % 7);
    kiln_attrs a = {0};
    a.scalar = 0.25;
    uint32_t xi = IN_F32(f, x, N);
    uint32_t y1 = node(f, KILN_OP_DROPOUT, &a, INS(xi));
    uint32_t y2 = node(f, KILN_OP_DROPOUT, &a, INS(xi)); /* another node: another mask */
    run_ok(f, true, 42);
    const float *r1 = f->v[y1], *r2 = f->v[y2];
    int kept = 0, same_mask = 0;
    for (int i = 0; i < N; i++) {
        /* kept elements are scaled by 1/(1-p), exactly rounded */
        if (r1[i] != 0) {
            assert_true(r1[i] == (float)(x[i] / 0.75));
            kept++;
        }
        if ((r1[i] != 0) == (r2[i] != 0)) same_mask++;
    }
    /* 3000 expected; binomial sd is 27 */
    assert_in_range(kept, 2850, 3150);
    assert_true(same_mask < N - 100);

    /* the same seed reproduces the same result; another seed differs */
    float first[N];
    memcpy(first, r1, sizeof first);
    kiln_interp_free_values(&f->g, f->v);
    run_ok(f, true, 42);
    assert_memory_equal(first, f->v[y1], sizeof first);
    kiln_interp_free_values(&f->g, f->v);
    run_ok(f, true, 43);
    assert_memory_not_equal(first, f->v[y1], sizeof first);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_input_and_param_stay_callers),
        T(test_missing_input_buffer),
        T(test_constant_fill_and_values),
        T(test_iota),
        T(test_add_broadcast_row),
        T(test_sub_scalar_operand),
        T(test_mul_broadcast_both_sides),
        T(test_div),
        T(test_maximum_minimum_nan),
        T(test_pow),
        T(test_compare_f32_broadcast),
        T(test_compare_i32_gives_f32),
        T(test_where_three_way_broadcast),
        T(test_where_i32_cond_and_branches),
        T(test_i32_add_sub_wrap),
        T(test_i32_mul_wrap_broadcast),
        T(test_i32_maximum_minimum),
        T(test_i32_neg_abs),
        T(test_neg),
        T(test_exp),
        T(test_log),
        T(test_sqrt),
        T(test_rsqrt),
        T(test_abs),
        T(test_square),
        T(test_recip),
        T(test_tanh),
        T(test_sigmoid_stable),
        T(test_relu),
        T(test_silu),
        T(test_gelu_erf),
        T(test_gelu_tanh),
        T(test_scale),
        T(test_cast_f32_to_i32),
        T(test_cast_i32_to_f32_and_same),
        T(test_dropout_identity_outside_training),
        T(test_dropout_training),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
