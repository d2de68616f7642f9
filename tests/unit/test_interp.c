/* test_interp.c — the reference interpreter against hand-computed values.
 *
 * Each test builds a small graph with kiln_graph_add, runs kiln_interp_run and compares
 * the result with numbers worked out by hand or with numpy in float64 (rounded to f32):
 * at least one test per row of ir/ops.def, then broadcasting corners, size-0 tensors,
 * run-time errors, and the composite ops' precise points (attention masking, cross
 * entropy's ignore_index and label smoothing). Input buffers are the tests' own arrays,
 * so running under ASan also checks that the interpreter never frees or overruns them.
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

#include "ir.h"

/* ---- fixture and helpers ------------------------------------------------------------- */

enum { MAX_NODES = 64 };

typedef struct fix {
    kiln_graph g;
    kiln_diags d;
    void *v[MAX_NODES]; /* zeroed: the interpreter expects empty slots */
} fix;

static int setup(void **state)
{
    fix *f = calloc(1, sizeof *f);
    if (!f) return -1;
    kiln_graph_init(&f->g, "test");
    kiln_diags_init(&f->d);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix *f = *state;
    kiln_interp_free_values(&f->g, f->v);
    kiln_graph_free(&f->g);
    kiln_diags_free(&f->d);
    free(f);
    return 0;
}

#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}
#define INS(...) (uint32_t)(sizeof((uint32_t[]){__VA_ARGS__}) / sizeof(uint32_t)), (const uint32_t[]){__VA_ARGS__}

static void set_shape(kiln_attrs *a, kiln_dtype dt, int rank, const int64_t *dims)
{
    a->dtype = dt;
    a->rank = rank;
    for (int i = 0; i < rank; i++) a->shape[i] = dims[i];
}

static uint32_t checked(fix *f, uint32_t id)
{
    if (id == KILN_NONE) kiln_diags_print(&f->d, stderr);
    assert_int_not_equal(id, KILN_NONE);
    assert_true(id < MAX_NODES);
    return id;
}

/* A graph input whose buffer is `data` (owned by the test). */
static uint32_t input(fix *f, kiln_dtype dt, int rank, const int64_t *dims, const void *data)
{
    kiln_attrs a = {0};
    set_shape(&a, dt, rank, dims);
    a.name = "x";
    uint32_t id = checked(f, kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &a, "x", "inputs.x", &f->d));
    f->v[id] = (void *)data;
    return id;
}
#define IN_F32(f, data, ...) input(f, KILN_F32, SHAPE(__VA_ARGS__), data)
#define IN_I32(f, data, ...) input(f, KILN_I32, SHAPE(__VA_ARGS__), data)

static uint32_t node(fix *f, kiln_op op, const kiln_attrs *a, uint32_t n, const uint32_t *in)
{
    return checked(f, kiln_graph_add(&f->g, op, in, n, a, "y", "layers[0]", &f->d));
}
/* An op without attributes on the given inputs. */
#define OP(f, op, ...) node(f, op, NULL, INS(__VA_ARGS__))

static void run_ok(fix *f, bool training, uint64_t seed)
{
    bool ok = kiln_interp_run(&f->g, f->v, training, seed, &f->d);
    if (!ok) kiln_diags_print(&f->d, stderr);
    assert_true(ok);
    assert_int_equal(f->d.n, 0);
}
static void run(fix *f) { run_ok(f, false, 0); }

static void expect_shape(fix *f, uint32_t id, kiln_dtype dt, int rank, const int64_t *dims)
{
    const kiln_type *t = &f->g.nodes[id].type;
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->rank, rank);
    for (int i = 0; i < rank; i++) assert_int_equal(t->dims[i], dims[i]);
}

/* Results within rtol (relative, plus a tiny absolute floor); NaN must match NaN. */
static void expect_f32_tol(fix *f, uint32_t id, const float *want, int64_t n, double rtol)
{
    assert_int_equal(f->g.nodes[id].type.dtype, KILN_F32);
    assert_int_equal(kiln_type_numel(&f->g.nodes[id].type), n);
    const float *got = f->v[id];
    for (int64_t i = 0; i < n; i++) {
        bool ok;
        if (isnan(want[i])) ok = isnan(got[i]);
        else if (isinf(want[i])) ok = got[i] == want[i];
        else ok = fabs((double)got[i] - want[i]) <= rtol * fabs((double)want[i]) + 1e-30;
        if (!ok) fail_msg("element %lld: got %.9g, want %.9g", (long long)i, got[i], want[i]);
    }
}
/* Default tolerance: a few f32 ulps (the interpreter rounds float64 math once). */
#define EXPECT_F32(f, id, ...)                                                                 \
    do {                                                                                       \
        const float want_[] = __VA_ARGS__;                                                     \
        expect_f32_tol(f, id, want_, (int64_t)(sizeof want_ / sizeof want_[0]), 4e-7);        \
    } while (0)
#define EXPECT_F32_EXACT(f, id, ...)                                                           \
    do {                                                                                       \
        const float want_[] = __VA_ARGS__;                                                     \
        expect_f32_tol(f, id, want_, (int64_t)(sizeof want_ / sizeof want_[0]), 0);           \
    } while (0)

static void expect_i32(fix *f, uint32_t id, const int32_t *want, int64_t n)
{
    assert_int_equal(f->g.nodes[id].type.dtype, KILN_I32);
    assert_int_equal(kiln_type_numel(&f->g.nodes[id].type), n);
    const int32_t *got = f->v[id];
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("element %lld: got %d, want %d", (long long)i, got[i], want[i]);
}
#define EXPECT_I32(f, id, ...)                                                                 \
    do {                                                                                       \
        const int32_t want_[] = __VA_ARGS__;                                                   \
        expect_i32(f, id, want_, (int64_t)(sizeof want_ / sizeof want_[0]));                  \
    } while (0)

/* The run fails with one diagnostic whose text contains every given fragment. */
static void expect_run_error(fix *f, const char *frag1, const char *frag2)
{
    bool ok = kiln_interp_run(&f->g, f->v, false, 0, &f->d);
    assert_false(ok);
    assert_int_equal(f->d.n, 1);
    const char *msg = f->d.items[0].message;
    if (frag1 && !strstr(msg, frag1)) fail_msg("'%s' lacks '%s'", msg, frag1);
    if (frag2 && !strstr(msg, frag2)) fail_msg("'%s' lacks '%s'", msg, frag2);
}

/* The six inputs most unary tests use. */
static const float UX[6] = {-3.0f, -0.5f, 0.0f, 0.25f, 1.0f, 2.5f};
static const float POS[6] = {0.01f, 0.25f, 1.0f, 2.0f, 9.0f, 100.0f};

static uint32_t unary(fix *f, kiln_op op, const float *x)
{
    return OP(f, op, IN_F32(f, x, 6));
}

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

/* ---- reductions ---------------------------------------------------------------------------- */

/* x = arange(24).reshape(2,3,4)·0.5 − 3.1 in f32 */
static float RED_IN[24];
static void fill_red_in(void)
{
    for (int i = 0; i < 24; i++) RED_IN[i] = (float)(i * 0.5 - 3.1);
}

static uint32_t reduce(fix *f, kiln_op op, uint32_t x, int n_axes, const int64_t *axes, bool keepdims)
{
    kiln_attrs a = {0};
    a.n_axes = n_axes;
    for (int i = 0; i < n_axes; i++) a.axes[i] = axes[i];
    a.keepdims = keepdims;
    return node(f, op, &a, INS(x));
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

static uint32_t matmul(fix *f, uint32_t a, uint32_t b, bool ta, bool tb)
{
    kiln_attrs at = {0};
    at.transpose_a = ta;
    at.transpose_b = tb;
    return node(f, KILN_OP_MATMUL, &at, INS(a, b));
}

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

static uint32_t slice(fix *f, uint32_t x, int64_t axis, int64_t start, int64_t end, int64_t step)
{
    kiln_attrs a = {0};
    a.axis = axis;
    a.start = start;
    a.end = end;
    a.step = step;
    return node(f, KILN_OP_SLICE, &a, INS(x));
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

static uint32_t gather(fix *f, uint32_t table, uint32_t idx, int64_t axis)
{
    kiln_attrs a = {0};
    a.axis = axis;
    return node(f, KILN_OP_GATHER, &a, INS(table, idx));
}

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

/* ---- softmax, log_softmax, layernorm -------------------------------------------------------------- */

static const float SM_IN[6] = {1.0f, 2.0f, 3.0f, 1000.0f, 1000.0f, -1000.0f};

static void test_softmax_last_axis_stable(void **state)
{
    fix *f = *state;
    uint32_t y = node(f, KILN_OP_SOFTMAX, &(kiln_attrs){.axis = -1}, INS(IN_F32(f, SM_IN, 2, 3)));
    run(f);
    EXPECT_F32(f, y, {0.09003057f, 0.24472848f, 0.66524094f, 0.5f, 0.5f, 0.0f});
}

static void test_softmax_axis0(void **state)
{
    fix *f = *state;
    uint32_t y = node(f, KILN_OP_SOFTMAX, &(kiln_attrs){.axis = 0}, INS(IN_F32(f, SM_IN, 2, 3)));
    run(f);
    EXPECT_F32(f, y, {0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 0.0f});
}

static void test_log_softmax(void **state)
{
    fix *f = *state;
    uint32_t y = node(f, KILN_OP_LOG_SOFTMAX, &(kiln_attrs){.axis = 1}, INS(IN_F32(f, SM_IN, 2, 3)));
    run(f);
    /* finite even where softmax underflows to 0 */
    EXPECT_F32(f, y, {-2.407606f, -1.407606f, -0.40760598f, -0.6931472f, -0.6931472f, -2000.6931f});
}

static void test_layernorm(void **state)
{
    fix *f = *state;
    static const float x[8] = {1.0f, 2.0f, 4.0f, 7.0f, -1.0f, 0.5f, 0.25f, 3.0f};
    static const float w[4] = {1.0f, 0.5f, 2.0f, -1.0f};
    static const float b[4] = {0.0f, 0.1f, -0.2f, 0.3f};
    kiln_attrs a = {0};
    a.scalar = 1e-5;
    uint32_t y = node(f, KILN_OP_LAYERNORM, &a, INS(IN_F32(f, x, 2, 4), IN_F32(f, w, 4), IN_F32(f, b, 4)));
    run(f);
    EXPECT_F32(f, y, {-1.0910884f, -0.22732653f, 0.23643537f, -1.2275238f,
                      -1.1629696f, 0.035390582f, -0.80302125f, -1.293699f});
}

/* A constant row has zero variance: the output is the bias, with eps keeping it finite. */
static void test_layernorm_constant_row(void **state)
{
    fix *f = *state;
    static const float x[3] = {5, 5, 5};
    static const float w[3] = {2, 2, 2};
    static const float b[3] = {0.5f, -1, 0};
    kiln_attrs a = {0};
    a.scalar = 1e-5;
    uint32_t y = node(f, KILN_OP_LAYERNORM, &a, INS(IN_F32(f, x, 3), IN_F32(f, w, 3), IN_F32(f, b, 3)));
    run(f);
    EXPECT_F32_EXACT(f, y, {0.5f, -1, 0});
}

/* ---- attention ------------------------------------------------------------------------------------ */

/* q, k (1,2,3,4), v (1,2,3,2): B=1, H=2, T=S=3, dh=4, dv=2 (numpy normals rounded). */
static const float AQ[24] = {0.35f, 0.82f, 0.33f, -1.3f, 0.91f, 0.45f, -0.54f, 0.58f, 0.36f, 0.29f, 0.03f, 0.55f,
                             -0.74f, -0.16f, -0.48f, 0.6f, 0.04f, -0.29f, -0.78f, -0.26f, 0.01f, -0.28f, 1.29f, 1.01f};
static const float AK[24] = {-2.71f, -1.89f, -0.17f, -0.42f, 0.21f, 0.22f, 2.12f, -1.11f, -0.38f, 2.04f, 0.65f, 0.66f,
                             -0.51f, -1.65f, 0.17f, 0.11f, -1.23f, -0.68f, -0.07f, -0.94f, -0.1f, 0.1f, 0.04f, -0.51f};
static const float AV[12] = {0.59f, 0.89f, 0.32f, -0.82f, 0.73f, -0.5f, 0.88f, -1.07f, 0.91f, -0.02f, -1.25f, -0.31f};

static uint32_t attention(fix *f, bool causal, const float *mask, const float *bias, int bias_rank,
                          const int64_t *bias_dims, int64_t T)
{
    kiln_attrs a = {0};
    a.scalar = 0.5; /* 1/√dh */
    a.causal = causal;
    a.has_mask = mask != NULL;
    a.has_bias = bias != NULL;
    uint32_t in[5], n = 0;
    in[n++] = IN_F32(f, AQ, 1, 2, T, 4); /* the first T queries */
    in[n++] = IN_F32(f, AK, 1, 2, 3, 4);
    in[n++] = IN_F32(f, AV, 1, 2, 3, 2);
    if (mask) in[n++] = IN_F32(f, mask, 1, 3);
    if (bias) in[n++] = input(f, KILN_F32, bias_rank, bias_dims, bias);
    return node(f, KILN_OP_ATTENTION, &a, n, in);
}

static void test_attention_plain(void **state)
{
    fix *f = *state;
    uint32_t y = attention(f, false, NULL, NULL, 0, NULL, 3);
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(1, 2, 3, 2));
    EXPECT_F32(f, y, {0.46119744f, -0.60510176f, 0.6208339f, -0.45298198f, 0.5872939f, -0.38525566f,
                      0.36130342f, -0.5000971f, 0.25114033f, -0.46064043f, 0.31530425f, -0.6319224f});
}

static void test_attention_causal(void **state)
{
    fix *f = *state;
    uint32_t y = attention(f, true, NULL, NULL, 0, NULL, 3);
    run(f);
    /* query 0 sees only key 0: its output is v[0] exactly */
    EXPECT_F32(f, y, {0.59f, 0.89f, 0.39341587f, -0.3550327f, 0.5872939f, -0.38525566f,
                      0.88f, -1.07f, 0.89556265f, -0.52530867f, 0.31530425f, -0.6319224f});
}

static void test_attention_key_mask(void **state)
{
    fix *f = *state;
    static const float mask[3] = {1, 0, 1};
    uint32_t y = attention(f, false, mask, NULL, 0, NULL, 3);
    run(f);
    EXPECT_F32(f, y, {0.7034504f, -0.23640017f, 0.71383643f, -0.3395186f, 0.6999827f, -0.20197129f,
                      0.048888385f, -0.7734532f, -0.12422797f, -0.7116839f, 0.14457671f, -0.8075955f});
}

/* causal + mask {0,1,1} leaves query 0 no key: zero output, not NaN. A (T,S) bias
 * broadcasts over batch and heads. */
static void test_attention_causal_mask_bias_fully_masked_row(void **state)
{
    fix *f = *state;
    static const float mask[3] = {0, 1, 1};
    static const float bias[9] = {0.5f, -1.0f, 0.25f, 0.0f, 1.0f, -0.5f, 2.0f, 0.0f, 0.0f};
    uint32_t y = attention(f, true, mask, bias, SHAPE(3, 3), 3);
    run(f);
    EXPECT_F32(f, y, {0.0f, 0.0f, 0.32f, -0.82f, 0.58681333f, -0.61175543f,
                      0.0f, 0.0f, 0.91f, -0.02f, -0.2693751f, -0.17834203f});
}

/* A per-head (H,T,S) bias, no mask. */
static void test_attention_head_bias(void **state)
{
    fix *f = *state;
    static const float bias[18] = {0.05f, 0.27f, -0.98f, -1.11f, 0.2f, -0.47f, 0.24f, 0.76f, -1.65f,
                                   0.25f, 1.22f, -0.3f, -0.81f, 0.75f, 0.25f, 0.9f, -0.35f, -1.48f};
    uint32_t y = attention(f, false, NULL, bias, SHAPE(2, 3, 3), 3);
    run(f);
    EXPECT_F32(f, y, {0.38489404f, -0.6607004f, 0.5646483f, -0.57015324f, 0.42223346f, -0.43177265f,
                      0.6940923f, -0.32192934f, 0.26763418f, -0.22640868f, 0.79469216f, -0.92610115f});
}

/* T = 2 queries, S = 3 keys, causal top-left aligned: query i sees keys j <= i. */
static void test_attention_causal_fewer_queries(void **state)
{
    fix *f = *state;
    static float q[16];
    /* the first two queries of each head */
    memcpy(q, AQ, 8 * sizeof(float));
    memcpy(q + 8, AQ + 12, 8 * sizeof(float));
    kiln_attrs a = {0};
    a.scalar = 0.5;
    a.causal = true;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 1, 2, 2, 4), IN_F32(f, AK, 1, 2, 3, 4), IN_F32(f, AV, 1, 2, 3, 2)));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(1, 2, 2, 2));
    EXPECT_F32(f, y, {0.59f, 0.89f, 0.39341587f, -0.3550327f, 0.88f, -1.07f, 0.89556265f, -0.52530867f});
}

/* B = 2, H = 2 with a different key mask per batch row (the mask has no head dim). */
static void test_attention_mask_per_batch(void **state)
{
    fix *f = *state;
    static float q[16], k[24], v[12];
    for (int i = 0; i < 16; i++) q[i] = (float)(i * 0.1 - 0.7);
    for (int i = 0; i < 24; i++) k[i] = (float)(i * 0.05 - 0.5);
    for (int i = 0; i < 12; i++) v[i] = (float)(i * 0.5);
    static const float mask[6] = {1, 1, 0, 0, 1, 1};
    kiln_attrs a = {0};
    a.scalar = 1;
    a.has_mask = true;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 2, 2, 2, 2), IN_F32(f, k, 2, 2, 3, 2), IN_F32(f, v, 2, 2, 3, 1),
                          IN_F32(f, mask, 2, 3)));
    run(f);
    expect_shape(f, y, KILN_F32, SHAPE(2, 2, 2, 1));
    EXPECT_F32(f, y, {0.23377284f, 0.2387576f, 1.7437513f, 1.74875f, 3.7537496f, 3.7587464f, 5.2637362f, 5.268715f});
}

/* Rank 3 (H, T, dh) with one key and a -inf bias: a row with no finite score is zero. */
static void test_attention_rank3_and_inf_bias(void **state)
{
    fix *f = *state;
    static const float q[4] = {1, 2, 3, 4};   /* (1,2,2) */
    static const float k[2] = {1, 1};         /* (1,1,2) */
    static const float v[3] = {5, 6, 7};      /* (1,1,3) */
    static const float bias[2] = {0, -INFINITY}; /* (2,1): per query */
    kiln_attrs a = {0};
    a.scalar = 1;
    a.has_bias = true;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 1, 2, 2), IN_F32(f, k, 1, 1, 2), IN_F32(f, v, 1, 1, 3), IN_F32(f, bias, 2, 1)));
    run(f);
    EXPECT_F32_EXACT(f, y, {5, 6, 7, 0, 0, 0});
}

/* No keys at all (S = 0): every row is empty, so zero. */
static void test_attention_no_keys(void **state)
{
    fix *f = *state;
    static const float q[4] = {1, 2, 3, 4};
    kiln_attrs a = {0};
    a.scalar = 1;
    uint32_t y = node(f, KILN_OP_ATTENTION, &a,
                      INS(IN_F32(f, q, 1, 2, 2), IN_F32(f, NULL, 1, 0, 2), IN_F32(f, NULL, 1, 0, 2)));
    run(f);
    EXPECT_F32_EXACT(f, y, {0, 0, 0, 0});
}

/* ---- cross_entropy ------------------------------------------------------------------------------- */

static const float CE_LOGITS[12] = {2.0f, 1.0f, 0.1f, 0.5f, 2.5f, -1.0f, 0.0f, 0.0f, 0.0f, 1.0f, -1.0f, 3.0f};

static uint32_t cross_entropy(fix *f, const int32_t *targets, double smoothing)
{
    kiln_attrs a = {0};
    a.ignore_index = -100;
    a.scalar = smoothing;
    return node(f, KILN_OP_CROSS_ENTROPY, &a, INS(IN_F32(f, CE_LOGITS, 4, 3), IN_I32(f, targets, 4)));
}

static void test_cross_entropy_mean(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 1, 2, 2};
    uint32_t y = cross_entropy(f, t, 0);
    run(f);
    expect_shape(f, y, KILN_F32, 0, NULL);
    EXPECT_F32(f, y, {0.45293805f});
}

static void test_cross_entropy_ignore_index(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 1, -100, 2};
    uint32_t y = cross_entropy(f, t, 0);
    run(f);
    EXPECT_F32(f, y, {0.23771328f});
}

static void test_cross_entropy_label_smoothing(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 1, -100, 2};
    static const int32_t t2[4] = {0, 1, 2, 2};
    uint32_t y = cross_entropy(f, t, 0.1);
    uint32_t full = cross_entropy(f, t2, 1.0); /* only the uniform part */
    run(f);
    EXPECT_F32(f, y, {0.39771327f});
    EXPECT_F32(f, full, {1.652938f});
}

static void test_cross_entropy_all_ignored_is_nan(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {-100, -100, -100, -100};
    uint32_t y = cross_entropy(f, t, 0);
    uint32_t z = cross_entropy(f, t, 0.2);
    run(f);
    EXPECT_F32_EXACT(f, y, {NAN});
    EXPECT_F32_EXACT(f, z, {NAN});
}

static void test_cross_entropy_bad_target_is_error(void **state)
{
    fix *f = *state;
    static const int32_t t[4] = {0, 3, 1, 1};
    cross_entropy(f, t, 0);
    expect_run_error(f, "target 3", "[0, 3)");
}

/* Higher-rank logits (2,1,3) with targets (2,1), and a custom ignore_index. */
static void test_cross_entropy_rank3_custom_ignore(void **state)
{
    fix *f = *state;
    static const int32_t t[2] = {2, 1};
    kiln_attrs a = {0};
    a.ignore_index = 2;
    uint32_t y = node(f, KILN_OP_CROSS_ENTROPY, &a, INS(IN_F32(f, CE_LOGITS, 2, 1, 3), IN_I32(f, t, 2, 1)));
    run(f);
    /* only row 1 counts: lse(0.5, 2.5, -1) − 2.5 */
    double lse = log(exp(0.5) + exp(2.5) + exp(-1.0));
    float want = (float)(lse - 2.5);
    expect_f32_tol(f, y, &want, 1, 4e-7);
}

/* ---- the driver ----------------------------------------------------------------------------------- */

/* A graph can be run again once its values are freed; freeing twice is harmless. */
/* ---- the ops autodiff emits --------------------------------------------------------------------- */

static void test_erf(void **state)
{
    fix *f = *state;
    uint32_t y = unary(f, KILN_OP_ERF, UX);
    run(f);
    EXPECT_F32(f, y, {-0.99997791f, -0.520499878f, 0.0f, 0.27632639f, 0.842700793f, 0.999593048f});
}

/* the slice [::-3] of a (2, 5) along axis 1 takes columns 4 and 1: they come back there */
static void test_unslice_negative_step(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(2, 5));
    a.axis = 1, a.step = -3;
    kiln_slice_normalize(5, false, 0, false, 0, -3, &a.start, &a.end);
    uint32_t y = node(f, KILN_OP_UNSLICE, &a, INS(IN_F32(f, x, 2, 2)));
    run(f);
    EXPECT_F32_EXACT(f, y, {0, 2, 0, 0, 1, 0, 4, 0, 0, 3});
}

/* rows 0 and 2 of g go to table row 2 and add up; rows 1 and 3 of the table get nothing */
static void test_scatter_add_duplicates(void **state)
{
    fix *f = *state;
    static const float g[6] = {1, 2, 3, 4, 5, 6};
    static const int32_t idx[3] = {2, 0, 2};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(4, 2));
    uint32_t y = node(f, KILN_OP_SCATTER_ADD, &a, INS(IN_F32(f, g, 3, 2), IN_I32(f, idx, 3)));
    run(f);
    EXPECT_F32_EXACT(f, y, {3, 4, 0, 0, 6, 8, 0, 0});
}

static void test_scatter_add_bad_index_is_error(void **state)
{
    fix *f = *state;
    static const float g[2] = {1, 2};
    static const int32_t idx[2] = {1, 4};
    kiln_attrs a = {0};
    set_shape(&a, KILN_F32, SHAPE(4));
    node(f, KILN_OP_SCATTER_ADD, &a, INS(IN_F32(f, g, 2), IN_I32(f, idx, 2)));
    expect_run_error(f, "index 4", "out of range");
}

/* numpy float64: dx = inv·(ĝ − mean ĝ − x̂·mean(ĝ·x̂)), ĝ = g·w */
static void test_layernorm_grad(void **state)
{
    fix *f = *state;
    static const float x[6] = {1, 2, 4, 0.5f, -1, 3}, w[3] = {0.5f, -2, 1.5f}, g[6] = {1, -1, 0.5f, 2, 0, -1};
    kiln_attrs a = {0};
    a.scalar = 1e-5;
    uint32_t y = node(f, KILN_OP_LAYERNORM_GRAD, &a, INS(IN_F32(f, x, 2, 3), IN_F32(f, w, 3), IN_F32(f, g, 2, 3)));
    run(f);
    EXPECT_F32(f, y, {-0.486795575f, 0.730193577f, -0.243398002f, 0.618459931f, -0.386535463f, -0.231924469f});
}

/* q, k, v (1,1,3,2), causal, key 1 masked, a bias over the keys: queries 0 and 1 see only
 * key 0 (a one-key softmax passes no gradient to the scores), query 2 sees keys 0 and 2.
 * Expected values from numpy in float64. */
static uint32_t attention_grad(fix *f, kiln_wrt wrt)
{
    static const float q[6] = {0.5f, -1, 1, 2, -0.5f, 0.25f}, k[6] = {1, 0, 0.5f, 0.5f, -1, 1};
    static const float v[6] = {1, 2, 3, -1, 0, 1}, mask[3] = {1, 0, 1}, bias[3] = {0.1f, -0.2f, 0.3f};
    static const float g[6] = {1, 0.5f, -1, 2, 0.25f, -0.5f};
    kiln_attrs a = {0};
    a.scalar = 0.7, a.causal = true, a.has_mask = true, a.has_bias = true, a.wrt = wrt;
    return node(f, KILN_OP_ATTENTION_GRAD, &a,
                INS(IN_F32(f, q, 1, 1, 3, 2), IN_F32(f, k, 1, 1, 3, 2), IN_F32(f, v, 1, 1, 3, 2),
                    IN_F32(f, mask, 1, 3), IN_F32(f, bias, 3), IN_F32(f, g, 1, 1, 3, 2)));
}

static void test_attention_grad(void **state)
{
    fix *f = *state;
    uint32_t dq = attention_grad(f, KILN_WRT_Q), dk = attention_grad(f, KILN_WRT_K);
    uint32_t dv = attention_grad(f, KILN_WRT_V), ds = attention_grad(f, KILN_WRT_SCORES);
    run(f);
    expect_shape(f, ds, KILN_F32, SHAPE(1, 1, 3, 3));
    expect_f32_tol(f, dq, (const float[]){0, 0, 0, 0, -0.0663974011f, 0.0331987006f}, 6, 1e-6);
    expect_f32_tol(f, dk, (const float[]){0.0165993503f, -0.00829967514f, 0, 0, -0.0165993503f, 0.00829967514f}, 6, 1e-6);
    expect_f32_tol(f, dv, (const float[]){0.0636133465f, 2.37277331f, 0, 0, 0.186386654f, -0.372773307f}, 6, 1e-6);
    expect_f32_tol(f, ds, (const float[]){0, 0, 0, 0, 0, 0, -0.0474267151f, 0, 0.0474267151f}, 9, 1e-6);
}

/* logits (3,3), targets {0, ignored, 2}, ε = 0.1, upstream 2: kept rows get
 * 2/2·(softmax − 0.9·onehot − 0.1/3), the ignored row 0 (numpy float64) */
static void test_cross_entropy_grad(void **state)
{
    fix *f = *state;
    static const float x[9] = {1, 2, 0.5f, 0, 0, 0, -1, 3, 2}, g[1] = {2};
    static const int32_t t[3] = {0, -100, 2};
    kiln_attrs a = {0};
    a.scalar = 0.1, a.ignore_index = -100;
    uint32_t y = node(f, KILN_OP_CROSS_ENTROPY_GRAD, &a, INS(IN_F32(f, x, 3, 3), IN_I32(f, t, 3), input(f, KILN_F32, 0, NULL, g)));
    run(f);
    expect_f32_tol(f, y, (const float[]){-0.702109436f, 0.595198386f, 0.10691105f, 0, 0, 0, -0.0201204464f,
                                         0.688065851f, -0.667945405f}, 9, 1e-6);
}

static void test_cross_entropy_grad_bad_target_is_error(void **state)
{
    fix *f = *state;
    static const float x[4] = {1, 2, 3, 4}, g[1] = {1};
    static const int32_t t[2] = {0, 2};
    kiln_attrs a = {0};
    a.ignore_index = -100;
    node(f, KILN_OP_CROSS_ENTROPY_GRAD, &a, INS(IN_F32(f, x, 2, 2), IN_I32(f, t, 2), input(f, KILN_F32, 0, NULL, g)));
    expect_run_error(f, "target 2", "out of range");
}

/* interp_impl.h exposes this for tests: dropout's keep decision */
bool kiln_interp_dropout_keep(uint64_t seed, uint32_t stream, int64_t i, double p);

/* dropout's mask follows its stream, not its node: the same stream, the same elements */
static void test_dropout_stream(void **state)
{
    fix *f = *state;
    enum { N = 200 };
    static float x[N], g[N];
    for (int i = 0; i < N; i++) x[i] = 1.0f + (float)(i % 5), g[i] = -2.0f;
    kiln_attrs a = {0};
    a.scalar = 0.5;
    uint32_t y = node(f, KILN_OP_DROPOUT, &a, INS(IN_F32(f, x, N)));
    assert_int_equal(f->g.nodes[y].attrs.stream, y); /* the builder's default */
    a.stream = f->g.nodes[y].attrs.stream;
    uint32_t back = node(f, KILN_OP_DROPOUT, &a, INS(IN_F32(f, g, N)));
    run_ok(f, true, 7);
    const float *ry = f->v[y], *rb = f->v[back];
    int kept = 0;
    for (int i = 0; i < N; i++) {
        assert_true((ry[i] != 0) == (rb[i] != 0));
        assert_true((ry[i] != 0) == kiln_interp_dropout_keep(7, (uint32_t)a.stream, i, 0.5));
        kept += ry[i] != 0;
    }
    assert_in_range(kept, 60, 140);
}

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
        T(test_slice_huge_step),
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
        T(test_softmax_last_axis_stable),
        T(test_softmax_axis0),
        T(test_log_softmax),
        T(test_layernorm),
        T(test_layernorm_constant_row),
        T(test_attention_plain),
        T(test_attention_causal),
        T(test_attention_key_mask),
        T(test_attention_causal_mask_bias_fully_masked_row),
        T(test_attention_head_bias),
        T(test_attention_causal_fewer_queries),
        T(test_attention_mask_per_batch),
        T(test_attention_rank3_and_inf_bias),
        T(test_attention_no_keys),
        T(test_cross_entropy_mean),
        T(test_cross_entropy_ignore_index),
        T(test_cross_entropy_label_smoothing),
        T(test_cross_entropy_all_ignored_is_nan),
        T(test_cross_entropy_bad_target_is_error),
        T(test_cross_entropy_rank3_custom_ignore),
        T(test_erf),
        T(test_unslice_negative_step),
        T(test_scatter_add_duplicates),
        T(test_scatter_add_bad_index_is_error),
        T(test_layernorm_grad),
        T(test_attention_grad),
        T(test_cross_entropy_grad),
        T(test_cross_entropy_grad_bad_target_is_error),
        T(test_dropout_stream),
        T(test_rerun_after_free),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
