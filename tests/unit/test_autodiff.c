/* test_autodiff.c — the autodiff pass (passes/autodiff.c, grad_rules.c) against finite
 * differences, plus the pass's bookkeeping.
 *
 * Design: a `gc` (gradient check) is a graph of f32/i32 inputs with chosen or random
 * (seeded) data and one op under test, y = op(inputs). gc_check appends
 * f = Σ y·r for a fixed random r, runs kiln_autodiff for every f32 input, checks that the
 * result verifies and that its text form round-trips, runs it through the interpreter,
 * and compares each gradient element with a central difference
 *     (F(x + h) − F(x − h)) / ((x + h) − (x − h))        (the f32-rounded step)
 * where F = Σ y·r is summed in double from the interpreter's f32 y. Inputs are drawn away
 * from the ops' kinks and ties (relu/abs at 0, max ties, maximum/minimum equality), so
 * the difference is meaningful; agreement within 1e-3 + 1e-2·|fd|. Inputs that carry no
 * gradient (conditions, masks) must get exact zeros.
 *
 * Every differentiable op has a check, with broadcasting variants for the elementwise
 * ops, and the composites with their awkward cases (attention with causal + mask + bias
 * and a fully masked row, cross_entropy with ignore_index and label smoothing). Then the
 * choices at kinks and ties, dropout's mask reproduced in training mode, zeros for
 * unreachable values, accumulation over several uses, i32 paths, pruning, and errors.
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

#include "grad.h"
#include "passes.h"
#include "test_rng.h"

static double uniform(rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

/* ---- a gradient check ---------------------------------------------------------------------- */

enum { MAX_IN = 8 };

/* How an input's data is drawn. */
typedef enum dist {
    D_ANY,       /* U(−2, 2) */
    D_POS,       /* U(0.5, 2): log, sqrt, pow's base… */
    D_AWAY,      /* ±U(0.1, 2): away from the kinks at 0 */
    D_GRID,      /* multiples of 0.25 in [−2, 2] … */
    D_GRID_HALF, /* … and those plus 0.125: never equal to a D_GRID value */
    D_DISTINCT,  /* a shuffled ramp with gaps of about 0.1: no ties */
    D_MASK,      /* 0 or 1 */
} dist;

typedef struct gc {
    kiln_graph g;
    kiln_diags d;
    rng r;
    int n_in;
    uint32_t in[MAX_IN];
    void *data[MAX_IN];
    bool fd[MAX_IN];         /* check by finite differences; else the gradient must be 0 */
    bool training;
    uint64_t seed;
    uint32_t grads[MAX_IN];  /* after gc_check: the gradient node of each f32 input */
    double h;
} gc;

static int setup(void **state)
{
    gc *t = calloc(1, sizeof *t);
    kiln_graph_init(&t->g, "grad");
    kiln_diags_init(&t->d);
    t->r.s = 12345;
    t->h = 5e-3;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    gc *t = *state;
    for (int i = 0; i < t->n_in; i++) free(t->data[i]);
    kiln_graph_free(&t->g);
    kiln_diags_free(&t->d);
    free(t);
    return 0;
}

static void fail_with_diags(gc *t, const char *what)
{
    for (int i = 0; i < t->d.n; i++) print_error("%s: %s\n", t->d.items[i].where ? t->d.items[i].where : "", t->d.items[i].message);
    fail_msg("%s failed", what);
}

static uint32_t add(gc *t, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a)
{
    uint32_t id = kiln_graph_add(&t->g, op, in, n_in, a, NULL, "test", &t->d);
    if (id == KILN_NONE) fail_with_diags(t, kiln_op_table[op].name);
    return id;
}
static uint32_t op1(gc *t, kiln_op op, uint32_t x, const kiln_attrs *a) { return add(t, op, &x, 1, a); }
static uint32_t op2(gc *t, kiln_op op, uint32_t x, uint32_t y, const kiln_attrs *a)
{
    uint32_t in[2] = {x, y};
    return add(t, op, in, 2, a);
}

#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

static uint32_t input_data(gc *t, kiln_dtype dt, int rank, const int64_t *dims, void *data, bool fd)
{
    kiln_attrs a = {.dtype = dt, .rank = rank};
    for (int d = 0; d < rank; d++) a.shape[d] = dims[d];
    char name[16];
    snprintf(name, sizeof name, "x%d", t->n_in);
    a.name = name;
    assert_true(t->n_in < MAX_IN);
    uint32_t id = kiln_graph_add(&t->g, KILN_OP_INPUT, NULL, 0, &a, name, "inputs", &t->d);
    assert_int_not_equal(id, KILN_NONE);
    t->in[t->n_in] = id;
    t->data[t->n_in] = data;
    t->fd[t->n_in++] = fd;
    return id;
}

/* An f32 input drawn from `how`; checked by finite differences unless it is a mask. */
static uint32_t input(gc *t, dist how, int rank, const int64_t *dims)
{
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= dims[d];
    float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (how) {
        case D_POS: v = uniform(&t->r, 0.5, 2); break;
        case D_AWAY: v = uniform(&t->r, 0.1, 2) * (rng_next(&t->r) & 1 ? 1 : -1); break;
        case D_GRID: v = 0.25 * (double)(int)uniform(&t->r, -8, 8); break;
        case D_GRID_HALF: v = 0.25 * (double)(int)uniform(&t->r, -8, 8) + 0.125; break;
        case D_DISTINCT: v = 0.1 * (double)i - 0.05 * (double)n + uniform(&t->r, -0.02, 0.02); break;
        case D_MASK: v = (double)(rng_next(&t->r) & 1); break;
        default: v = uniform(&t->r, -2, 2); break;
        }
        x[i] = (float)v;
    }
    if (how == D_DISTINCT) /* shuffle the ramp */
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t k = (int64_t)(rng_next(&t->r) % (uint64_t)(i + 1));
            float s = x[i];
            x[i] = x[k], x[k] = s;
        }
    return input_data(t, KILN_F32, rank, dims, x, how != D_MASK);
}

static uint32_t input_i32(gc *t, int rank, const int64_t *dims, const int32_t *values)
{
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= dims[d];
    int32_t *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    memcpy(x, values, (size_t)n * sizeof *x);
    return input_data(t, KILN_I32, rank, dims, x, false);
}

/* Runs the interpreter on the whole graph; values[] must be empty for computed nodes. */
static void run(gc *t, void **values)
{
    for (int i = 0; i < t->n_in; i++) values[t->in[i]] = t->data[i];
    if (!kiln_interp_run(&t->g, values, t->training, t->seed, &t->d)) fail_with_diags(t, "kiln_interp_run");
}

/* F = Σ y·r in double, from the interpreter's y. */
static double objective(gc *t, uint32_t y, const float *r, void **values)
{
    run(t, values);
    const float *yv = values[y];
    double f = 0;
    for (int64_t i = 0; i < kiln_type_numel(&t->g.nodes[y].type); i++) f += (double)yv[i] * r[i];
    kiln_interp_free_values(&t->g, values);
    return f;
}

/* The pass's output is a well-formed graph whose text form reads back to itself. */
static void check_graph(gc *t)
{
    if (!kiln_graph_verify(&t->g, &t->d)) fail_with_diags(t, "kiln_graph_verify");
    char *text = kiln_graph_print(&t->g);
    kiln_graph back;
    kiln_graph_init(&back, NULL);
    if (!kiln_graph_parse(&back, text, "autodiff", &t->d)) fail_with_diags(t, "kiln_graph_parse");
    char *again = kiln_graph_print(&back);
    assert_string_equal(text, again);
    free(again);
    free(text);
    kiln_graph_free(&back);
}

/* Appends f = Σ y·r, differentiates it with respect to every f32 input and compares
 * each gradient with finite differences (see the file comment). */
static void gc_check(gc *t, uint32_t y)
{
    kiln_type yt = t->g.nodes[y].type;
    int64_t ny = kiln_type_numel(&yt);
    float *r = malloc((size_t)(ny ? ny : 1) * sizeof *r);
    for (int64_t i = 0; i < ny; i++) r[i] = (float)uniform(&t->r, -1, 1);
    kiln_attrs ca = {.dtype = KILN_F32, .rank = yt.rank, .values = r, .n_values = ny};
    memcpy(ca.shape, yt.dims, sizeof ca.shape);
    uint32_t rc = add(t, KILN_OP_CONSTANT, NULL, 0, &ca);
    kiln_attrs all = {.n_axes = yt.rank};
    for (int d = 0; d < yt.rank; d++) all.axes[d] = d;
    uint32_t f = op1(t, KILN_OP_SUM, op2(t, KILN_OP_MUL, y, rc, NULL), &all);

    uint32_t wrt[MAX_IN];
    int n_wrt = 0, which[MAX_IN];
    for (int i = 0; i < t->n_in; i++)
        if (t->g.nodes[t->in[i]].type.dtype == KILN_F32) which[n_wrt] = i, wrt[n_wrt++] = t->in[i];
    uint32_t grads[MAX_IN];
    if (!kiln_autodiff(&t->g, f, wrt, (uint32_t)n_wrt, grads, &t->d)) fail_with_diags(t, "kiln_autodiff");
    for (int k = 0; k < n_wrt; k++) t->grads[which[k]] = grads[k];
    check_graph(t);

    void **values = calloc(t->g.n_nodes, sizeof *values);
    run(t, values);
    double *ad[MAX_IN] = {0};
    for (int k = 0; k < n_wrt; k++) {
        const kiln_type *xt = &t->g.nodes[wrt[k]].type;
        assert_true(kiln_type_equal(&t->g.nodes[grads[k]].type, xt));
        int64_t n = kiln_type_numel(xt);
        ad[k] = malloc((size_t)(n ? n : 1) * sizeof **ad);
        for (int64_t e = 0; e < n; e++) ad[k][e] = ((const float *)values[grads[k]])[e];
    }
    kiln_interp_free_values(&t->g, values);

    for (int k = 0; k < n_wrt; k++) {
        int i = which[k];
        float *x = t->data[i];
        int64_t n = kiln_type_numel(&t->g.nodes[wrt[k]].type);
        for (int64_t e = 0; e < n; e++) {
            if (!t->fd[i]) {
                if (ad[k][e] != 0) fail_msg("input %d element %lld: gradient %.9g where none may flow", i, (long long)e, ad[k][e]);
                continue;
            }
            float saved = x[e], xp = (float)(saved + t->h), xm = (float)(saved - t->h);
            x[e] = xp;
            double fp = objective(t, y, r, values);
            x[e] = xm;
            double fm = objective(t, y, r, values);
            x[e] = saved;
            double fd = (fp - fm) / ((double)xp - (double)xm);
            if (!(fabs(ad[k][e] - fd) <= 1e-3 + 1e-2 * fabs(fd)))
                fail_msg("%s: input %d element %lld: autodiff %.7g, finite differences %.7g",
                         kiln_op_table[t->g.nodes[y].op].name, i, (long long)e, ad[k][e], fd);
        }
        free(ad[k]);
    }
    free(values);
    free(r);
}

/* ---- binary elementwise, with broadcasting ---------------------------------------------------------- */

typedef struct bshape {
    int ra;
    int64_t a[4];
    int rb;
    int64_t b[4];
} bshape;

/* same shapes; a row against a matrix; both sides broadcast across ranks; a scalar */
static const bshape BSHAPES[] = {
    {2, {2, 3}, 2, {2, 3}},
    {2, {2, 3}, 1, {3}},
    {3, {2, 1, 3}, 2, {4, 1}},
    {0, {0}, 2, {2, 3}},
};

static void check_binary(void **state, kiln_op op, dist da, dist db)
{
    for (size_t s = 0; s < sizeof BSHAPES / sizeof *BSHAPES; s++) {
        gc *t = *state;
        const bshape *sh = &BSHAPES[s];
        uint32_t a = input(t, da, sh->ra, sh->a), b = input(t, db, sh->rb, sh->b);
        gc_check(t, op2(t, op, a, b, NULL));
        /* a fresh graph for the next shape */
        teardown(state);
        setup(state);
        ((gc *)*state)->r.s = 777 + s;
    }
}

static void test_add(void **state) { check_binary(state, KILN_OP_ADD, D_ANY, D_ANY); }
static void test_sub(void **state) { check_binary(state, KILN_OP_SUB, D_ANY, D_ANY); }
static void test_mul(void **state) { check_binary(state, KILN_OP_MUL, D_ANY, D_ANY); }
static void test_div(void **state) { check_binary(state, KILN_OP_DIV, D_ANY, D_AWAY); }
static void test_maximum(void **state) { check_binary(state, KILN_OP_MAXIMUM, D_GRID, D_GRID_HALF); }
static void test_minimum(void **state) { check_binary(state, KILN_OP_MINIMUM, D_GRID_HALF, D_GRID); }
static void test_pow(void **state) { check_binary(state, KILN_OP_POW, D_POS, D_ANY); }

/* where: both branches get their share, broadcast three ways; the condition nothing */
static void test_where(void **state)
{
    gc *t = *state;
    uint32_t c = input(t, D_MASK, SHAPE(2, 1)), a = input(t, D_ANY, SHAPE(3)), b = input(t, D_ANY, SHAPE(2, 3));
    float *cd = t->data[0];
    cd[0] = 1, cd[1] = 0; /* both branches taken somewhere */
    uint32_t in[3] = {c, a, b};
    gc_check(t, add(t, KILN_OP_WHERE, in, 3, NULL));
}

/* comparisons have no gradient: through lt/gt/eq nothing flows */
static void test_comparisons_carry_nothing(void **state)
{
    gc *t = *state;
    uint32_t a = input(t, D_GRID, SHAPE(2, 3)), b = input(t, D_GRID_HALF, SHAPE(3));
    t->fd[0] = t->fd[1] = false;
    uint32_t s = op2(t, KILN_OP_ADD, op2(t, KILN_OP_LT, a, b, NULL), op2(t, KILN_OP_GT, a, b, NULL), NULL);
    gc_check(t, op2(t, KILN_OP_ADD, s, op2(t, KILN_OP_EQ, a, b, NULL), NULL));
}

/* ---- unary elementwise ------------------------------------------------------------------------------ */

static void check_unary(void **state, kiln_op op, dist how, const kiln_attrs *a)
{
    gc *t = *state;
    uint32_t x = input(t, how, SHAPE(2, 5));
    gc_check(t, op1(t, op, x, a));
}

static void test_neg(void **state) { check_unary(state, KILN_OP_NEG, D_ANY, NULL); }
static void test_exp(void **state) { check_unary(state, KILN_OP_EXP, D_ANY, NULL); }
static void test_log(void **state) { check_unary(state, KILN_OP_LOG, D_POS, NULL); }
static void test_sqrt(void **state) { check_unary(state, KILN_OP_SQRT, D_POS, NULL); }
static void test_rsqrt(void **state) { check_unary(state, KILN_OP_RSQRT, D_POS, NULL); }
static void test_abs(void **state) { check_unary(state, KILN_OP_ABS, D_AWAY, NULL); }
static void test_square(void **state) { check_unary(state, KILN_OP_SQUARE, D_ANY, NULL); }
static void test_recip(void **state) { check_unary(state, KILN_OP_RECIP, D_AWAY, NULL); }
static void test_tanh(void **state) { check_unary(state, KILN_OP_TANH, D_ANY, NULL); }
static void test_sigmoid(void **state) { check_unary(state, KILN_OP_SIGMOID, D_ANY, NULL); }
static void test_relu(void **state) { check_unary(state, KILN_OP_RELU, D_AWAY, NULL); }
static void test_silu(void **state) { check_unary(state, KILN_OP_SILU, D_ANY, NULL); }
static void test_gelu(void **state) { check_unary(state, KILN_OP_GELU, D_ANY, NULL); }
static void test_gelu_tanh(void **state) { check_unary(state, KILN_OP_GELU_TANH, D_ANY, NULL); }

/* gelu_tanh's derivative (grad_rules.c) against the same function in double precision,
 * written without cancellation (s = 1/(1 + E), 1 − s = E·s), at 24001 points of
 * [−12, 12]: absolutely within 3e-7; from −0.5 up within 4 ULP; on [−9, −1], where the
 * true value falls to ~1e-31, within 4·2⁻²⁴·(4 + |2u|) relatively (the float rounding of
 * 2u, magnified by the exponential). Around the zero crossing at −0.75 only the absolute
 * bound holds. The tanh form this rule replaced returned 0 from x ≈ −5.2 down. */
static void test_gelu_tanh_derivative_accuracy(void **state)
{
    gc *t = *state;
    enum { N = 24001 };
    uint32_t x = input(t, D_ANY, SHAPE(N));
    float *xv = t->data[0];
    for (int i = 0; i < N; i++) xv[i] = (float)(-12.0 + 24.0 * i / (N - 1));
    kiln_attrs all = {.n_axes = 1, .axes = {0}};
    uint32_t f = op1(t, KILN_OP_SUM, op1(t, KILN_OP_GELU_TANH, x, NULL), &all), dx;
    if (!kiln_autodiff(&t->g, f, &x, 1, &dx, &t->d)) fail_with_diags(t, "kiln_autodiff");
    void **values = calloc(t->g.n_nodes, sizeof *values);
    run(t, values);
    const float *got = values[dx];
    const double k = 0.79788456080286535588, a = 0.044715;
    for (int i = 0; i < N; i++) {
        double xi = xv[i], two_u = 2 * k * (xi + a * xi * xi * xi), e = exp(-two_u), s = 1 / (1 + e);
        double want = s * (1 + xi * (e * s) * 2 * k * (1 + 3 * a * xi * xi)), err = fabs(got[i] - want);
        double ulp = nextafterf((float)fabs(want), INFINITY) - (float)fabs(want);
        bool ok = err <= 3e-7;
        if (xi >= -0.5) ok = ok && err <= 4 * ulp;
        if (xi >= -9 && xi <= -1) ok = ok && err <= 4 * 0x1p-24 * (4 + fabs(two_u)) * fabs(want);
        if (!ok) fail_msg("gelu_tanh'(%.9g) = %.9g, want %.9g (%.3g ULP)", xi, got[i], want, err / ulp);
    }
    kiln_interp_free_values(&t->g, values);
    free(values);
}
static void test_erf(void **state) { check_unary(state, KILN_OP_ERF, D_ANY, NULL); }
static void test_scale(void **state)
{
    kiln_attrs a = {.scalar = -1.7};
    check_unary(state, KILN_OP_SCALE, D_ANY, &a);
}
static void test_dropout_inference(void **state)
{
    kiln_attrs a = {.scalar = 0.5};
    check_unary(state, KILN_OP_DROPOUT, D_ANY, &a);
}

/* cast has no gradient: an f32 → i32 → f32 path carries nothing */
static void test_cast_carries_nothing(void **state)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(4));
    t->fd[0] = false;
    kiln_attrs to_i = {.dtype = KILN_I32}, to_f = {.dtype = KILN_F32};
    gc_check(t, op1(t, KILN_OP_CAST, op1(t, KILN_OP_CAST, x, &to_i), &to_f));
}

/* an f32 → f32 cast is the identity, and so is its gradient (torch's .to(float32)): it
 * used to stop the gradient, freezing everything upstream */
static void test_cast_f32_to_f32_passes_the_gradient(void **state)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(3, 4));
    kiln_attrs to_f = {.dtype = KILN_F32};
    gc_check(t, op1(t, KILN_OP_TANH, op1(t, KILN_OP_CAST, x, &to_f), NULL));
}

/* ---- reductions --------------------------------------------------------------------------------------- */

static void check_reduce(void **state, kiln_op op, dist how, int n_axes, const int64_t *axes, bool keepdims)
{
    gc *t = *state;
    uint32_t x = input(t, how, SHAPE(2, 3, 4));
    kiln_attrs a = {.n_axes = n_axes, .keepdims = keepdims};
    memcpy(a.axes, axes, (size_t)n_axes * sizeof *axes);
    gc_check(t, op1(t, op, x, &a));
}

static void test_sum(void **state) { check_reduce(state, KILN_OP_SUM, D_ANY, 1, (int64_t[]){1}, false); }
static void test_sum_keepdims_all(void **state) { check_reduce(state, KILN_OP_SUM, D_ANY, 3, (int64_t[]){0, 1, 2}, true); }
static void test_mean(void **state) { check_reduce(state, KILN_OP_MEAN, D_ANY, 2, (int64_t[]){0, 2}, false); }
static void test_mean_keepdims(void **state) { check_reduce(state, KILN_OP_MEAN, D_ANY, 1, (int64_t[]){2}, true); }
static void test_max(void **state) { check_reduce(state, KILN_OP_MAX, D_DISTINCT, 1, (int64_t[]){2}, false); }
static void test_max_two_axes(void **state) { check_reduce(state, KILN_OP_MAX, D_DISTINCT, 2, (int64_t[]){0, 1}, true); }

/* ---- softmax ------------------------------------------------------------------------------------------ */

static void test_softmax(void **state)
{
    gc *t = *state;
    kiln_attrs a = {.axis = 1};
    gc_check(t, op1(t, KILN_OP_SOFTMAX, input(t, D_ANY, SHAPE(2, 4, 3)), &a));
}

static void test_log_softmax(void **state)
{
    gc *t = *state;
    kiln_attrs a = {.axis = -1};
    gc_check(t, op1(t, KILN_OP_LOG_SOFTMAX, input(t, D_ANY, SHAPE(3, 5)), &a));
}

/* ---- matmul ----------------------------------------------------------------------------------------------- */

static void check_matmul(void **state, int ra, const int64_t *a, int rb, const int64_t *b, bool ta, bool tb)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, ra, a), w = input(t, D_ANY, rb, b);
    kiln_attrs at = {.transpose_a = ta, .transpose_b = tb};
    gc_check(t, op2(t, KILN_OP_MATMUL, x, w, &at));
}

static void test_matmul(void **state) { check_matmul(state, SHAPE(3, 4), SHAPE(4, 5), false, false); }
static void test_matmul_transpose_a(void **state) { check_matmul(state, SHAPE(4, 3), SHAPE(4, 5), true, false); }
static void test_matmul_transpose_b(void **state) { check_matmul(state, SHAPE(3, 4), SHAPE(5, 4), false, true); }
static void test_matmul_transpose_both(void **state) { check_matmul(state, SHAPE(4, 3), SHAPE(5, 4), true, true); }
/* batch dims broadcast both ways: (2,1) against (3) */
static void test_matmul_batch_broadcast(void **state)
{
    check_matmul(state, SHAPE(2, 1, 3, 4), SHAPE(3, 5, 4), false, true);
}
static void test_matmul_batch_broadcast_transposed_a(void **state)
{
    check_matmul(state, SHAPE(4, 3), SHAPE(2, 4, 5), true, false);
}

/* ---- layout --------------------------------------------------------------------------------------------- */

static void test_reshape(void **state)
{
    gc *t = *state;
    kiln_attrs a = {.rank = 3, .shape = {3, 2, 2}};
    gc_check(t, op1(t, KILN_OP_RESHAPE, input(t, D_ANY, SHAPE(2, 6)), &a));
}

static void test_transpose(void **state)
{
    gc *t = *state;
    kiln_attrs a = {.perm = {2, 0, 1}};
    gc_check(t, op1(t, KILN_OP_TRANSPOSE, input(t, D_ANY, SHAPE(2, 3, 4)), &a));
}

static void check_slice(void **state, int64_t axis, bool has_start, int64_t start, bool has_end, int64_t end, int64_t step)
{
    gc *t = *state;
    int64_t dims[3] = {3, 7, 2};
    uint32_t x = input(t, D_ANY, 3, dims);
    kiln_attrs a = {.axis = axis, .step = step};
    kiln_slice_normalize(dims[axis], has_start, start, has_end, end, step, &a.start, &a.end);
    gc_check(t, op1(t, KILN_OP_SLICE, x, &a));
}

static void test_slice(void **state) { check_slice(state, 1, true, 1, true, 5, 1); }
static void test_slice_step(void **state) { check_slice(state, 1, true, -6, false, 0, 2); }
static void test_slice_negative_step(void **state) { check_slice(state, 1, false, 0, true, 1, -2); }
static void test_slice_axis0_step3(void **state) { check_slice(state, 0, false, 0, false, 0, 3); }

/* three parts on the middle axis, one of them used twice */
static void test_concat(void **state)
{
    gc *t = *state;
    uint32_t a = input(t, D_ANY, SHAPE(2, 1, 3)), b = input(t, D_ANY, SHAPE(2, 4, 3));
    uint32_t in[3] = {a, b, a};
    kiln_attrs c = {.axis = 1};
    gc_check(t, add(t, KILN_OP_CONCAT, in, 3, &c));
}

static void test_broadcast(void **state)
{
    gc *t = *state;
    kiln_attrs a = {.rank = 3, .shape = {2, 3, 4}};
    gc_check(t, op1(t, KILN_OP_BROADCAST, input(t, D_ANY, SHAPE(3, 1)), &a));
}

/* duplicate indices: their rows add up in the table's gradient; row 3 is never read */
static void test_gather_duplicates(void **state)
{
    gc *t = *state;
    uint32_t table = input(t, D_ANY, SHAPE(5, 3));
    uint32_t idx = input_i32(t, SHAPE(2, 3), (const int32_t[]){0, 2, 2, 4, 0, 2});
    kiln_attrs a = {.axis = 0};
    gc_check(t, op2(t, KILN_OP_GATHER, table, idx, &a));
}

static void test_gather_middle_axis(void **state)
{
    gc *t = *state;
    uint32_t table = input(t, D_ANY, SHAPE(2, 4, 3));
    uint32_t idx = input_i32(t, SHAPE(5), (const int32_t[]){3, 1, 3, 3, 0});
    kiln_attrs a = {.axis = 1};
    gc_check(t, op2(t, KILN_OP_GATHER, table, idx, &a));
}

/* the gradient ops are themselves differentiable where that is cheap: unslice ↔ slice,
 * scatter_add ↔ gather */
static void test_unslice(void **state)
{
    gc *t = *state;
    kiln_attrs a = {.rank = 2, .shape = {3, 7}, .axis = 1, .start = 5, .end = 0, .step = -2};
    gc_check(t, op1(t, KILN_OP_UNSLICE, input(t, D_ANY, SHAPE(3, 3)), &a));
}

static void test_scatter_add(void **state)
{
    gc *t = *state;
    uint32_t g = input(t, D_ANY, SHAPE(4, 2));
    uint32_t idx = input_i32(t, SHAPE(4), (const int32_t[]){1, 1, 0, 3});
    kiln_attrs a = {.rank = 2, .shape = {5, 2}, .axis = 0};
    gc_check(t, op2(t, KILN_OP_SCATTER_ADD, g, idx, &a));
}

/* update_slice: x's gradient is g with the slice zeroed, u's the slice of g (at a start
 * read at run time) */
static void test_update_slice(void **state)
{
    gc *t = *state;
    uint32_t in[3] = {input(t, D_ANY, SHAPE(2, 5, 3)), input(t, D_ANY, SHAPE(2, 2, 3)),
                      input_i32(t, SHAPE(1), (const int32_t[]){2})};
    kiln_attrs a = {.axis = 1};
    gc_check(t, add(t, KILN_OP_UPDATE_SLICE, in, 3, &a));
}

/* ---- composites ------------------------------------------------------------------------------------------- */

static void test_layernorm(void **state)
{
    gc *t = *state;
    uint32_t in[3] = {input(t, D_ANY, SHAPE(2, 3, 5)), input(t, D_ANY, SHAPE(5)), input(t, D_ANY, SHAPE(5))};
    kiln_attrs a = {.scalar = 1e-5};
    gc_check(t, add(t, KILN_OP_LAYERNORM, in, 3, &a));
}

/* q (2,2,4,3), k (2,2,5,3), v (2,2,5,2), causal (top-left: query i sees keys j ≤ i), a
 * key mask that removes key 0 of batch 0 — so that batch's query 0 has no key left — and
 * a bias broadcast over the batch. */
static void test_attention_causal_mask_bias(void **state)
{
    gc *t = *state;
    uint32_t in[5];
    in[0] = input(t, D_ANY, SHAPE(2, 2, 4, 3));
    in[1] = input(t, D_ANY, SHAPE(2, 2, 5, 3));
    in[2] = input(t, D_ANY, SHAPE(2, 2, 5, 2));
    in[3] = input(t, D_MASK, SHAPE(2, 5));
    in[4] = input(t, D_ANY, SHAPE(2, 4, 5));
    const float mask[10] = {0, 1, 0, 1, 1, 1, 1, 0, 1, 0};
    memcpy(t->data[3], mask, sizeof mask);
    kiln_attrs a = {.scalar = 0.577, .causal = true, .has_mask = true, .has_bias = true};
    uint32_t y = add(t, KILN_OP_ATTENTION, in, 5, &a);
    gc_check(t, y);
    /* the query with no key: nothing reaches q there */
    void **values = calloc(t->g.n_nodes, sizeof *values);
    run(t, values);
    const float *dq = values[t->grads[0]];
    for (int e = 0; e < 3; e++) assert_true(dq[e] == 0.0f);
    kiln_interp_free_values(&t->g, values);
    free(values);
}

/* no causality, a bias with only (T, S), and dv ≠ dh */
static void test_attention_mask_head_bias(void **state)
{
    gc *t = *state;
    uint32_t in[5];
    in[0] = input(t, D_ANY, SHAPE(1, 3, 2, 4));
    in[1] = input(t, D_ANY, SHAPE(1, 3, 3, 4));
    in[2] = input(t, D_ANY, SHAPE(1, 3, 3, 5));
    in[3] = input(t, D_MASK, SHAPE(1, 3));
    in[4] = input(t, D_ANY, SHAPE(2, 3));
    const float mask[3] = {1, 0, 1};
    memcpy(t->data[3], mask, sizeof mask);
    kiln_attrs a = {.scalar = 0.5, .has_mask = true, .has_bias = true};
    gc_check(t, add(t, KILN_OP_ATTENTION, in, 5, &a));
}

/* ALiBi: the bias input is a slope per head, multiplied by |i − j| inside the op; its
 * gradient is Σ dscores·|i − j| */
static void test_attention_alibi(void **state)
{
    gc *t = *state;
    uint32_t in[4];
    in[0] = input(t, D_ANY, SHAPE(2, 2, 4, 3));
    in[1] = input(t, D_ANY, SHAPE(2, 2, 5, 3));
    in[2] = input(t, D_ANY, SHAPE(2, 2, 5, 2));
    in[3] = input(t, D_ANY, SHAPE(2, 1, 1));
    kiln_attrs a = {.scalar = 0.577, .has_bias = true, .alibi = true};
    gc_check(t, add(t, KILN_OP_ATTENTION, in, 4, &a));
}

static void test_attention_plain(void **state)
{
    gc *t = *state;
    uint32_t in[3] = {input(t, D_ANY, SHAPE(2, 3, 4)), input(t, D_ANY, SHAPE(2, 3, 4)), input(t, D_ANY, SHAPE(2, 3, 4))};
    kiln_attrs a = {.scalar = 0.5};
    gc_check(t, add(t, KILN_OP_ATTENTION, in, 3, &a));
}

static void check_cross_entropy(void **state, double smoothing, int64_t ignore, const int32_t *targets)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(2, 3, 5));
    uint32_t tg = input_i32(t, SHAPE(2, 3), targets);
    kiln_attrs a = {.scalar = smoothing, .ignore_index = ignore};
    gc_check(t, op2(t, KILN_OP_CROSS_ENTROPY, x, tg, &a));
}

static void test_cross_entropy(void **state) { check_cross_entropy(state, 0, -100, (const int32_t[]){0, 4, 2, 1, 3, 3}); }
static void test_cross_entropy_ignore_smoothing(void **state)
{
    check_cross_entropy(state, 0.1, -100, (const int32_t[]){0, -100, 2, 1, -100, 4});
}
/* ignore_index may be a real class: rows with target 2 are skipped */
static void test_cross_entropy_ignore_real_class(void **state)
{
    check_cross_entropy(state, 0.25, 2, (const int32_t[]){2, 4, 2, 1, 0, 3});
}

/* ---- choices at kinks and ties ------------------------------------------------------------------------------ */

/* Differentiates Σ y (r = 1 everywhere) at hand-picked points and returns the gradient of
 * input 0 (interpreted; the caller frees values with free_run). */
static const float *grad_at(gc *t, uint32_t y, void ***values_out)
{
    kiln_type yt = t->g.nodes[y].type;
    kiln_attrs all = {.n_axes = yt.rank};
    for (int d = 0; d < yt.rank; d++) all.axes[d] = d;
    uint32_t f = op1(t, KILN_OP_SUM, y, &all);
    uint32_t grads[MAX_IN];
    if (!kiln_autodiff(&t->g, f, t->in, 1, grads, &t->d)) fail_with_diags(t, "kiln_autodiff");
    check_graph(t);
    void **values = calloc(t->g.n_nodes, sizeof *values);
    run(t, values);
    *values_out = values;
    return values[grads[0]];
}

static void free_run(gc *t, void **values)
{
    kiln_interp_free_values(&t->g, values);
    free(values);
}

static void expect_grad(const float *got, const float *want, int n)
{
    for (int i = 0; i < n; i++)
        if (fabsf(got[i] - want[i]) > 1e-6f) fail_msg("element %d: gradient %.9g, want %.9g", i, got[i], want[i]);
}

static uint32_t input_values(gc *t, int n, const float *v)
{
    float *x = malloc((size_t)n * sizeof *x);
    memcpy(x, v, (size_t)n * sizeof *x);
    return input_data(t, KILN_F32, 1, (const int64_t[]){n}, x, true);
}

static void test_relu_abs_zero_at_zero(void **state)
{
    gc *t = *state;
    uint32_t x = input_values(t, 4, (const float[]){-1, 0, 2, -0.0f});
    uint32_t y = op2(t, KILN_OP_ADD, op1(t, KILN_OP_RELU, x, NULL), op1(t, KILN_OP_ABS, x, NULL), NULL);
    void **v;
    const float *g = grad_at(t, y, &v);
    expect_grad(g, (const float[]){-1, 0, 2, 0}, 4); /* relu' + abs' = 0 + −1, 0 + 0, 1 + 1, 0 */
    free_run(t, v);
}

/* relu at NaN passes the gradient on, as PyTorch's threshold_backward (x ≤ 0 is false) */
static void test_relu_nan_passes_gradient(void **state)
{
    gc *t = *state;
    uint32_t x = input_values(t, 4, (const float[]){NAN, -1, 0, 2});
    void **v;
    const float *g = grad_at(t, op1(t, KILN_OP_RELU, x, NULL), &v);
    expect_grad(g, (const float[]){1, 0, 0, 1}, 4);
    free_run(t, v);
}

/* maximum and minimum: on a tie each operand gets half (torch.maximum/minimum) */
static void test_maximum_minimum_ties_split(void **state)
{
    gc *t = *state;
    uint32_t a = input_values(t, 3, (const float[]){1, 2, 3}), b = input_values(t, 3, (const float[]){1, 5, 3});
    uint32_t y = op2(t, KILN_OP_ADD, op2(t, KILN_OP_MAXIMUM, a, b, NULL), op2(t, KILN_OP_MINIMUM, a, b, NULL), NULL);
    kiln_attrs by = {.scalar = 10};
    y = op2(t, KILN_OP_ADD, y, op1(t, KILN_OP_SCALE, op2(t, KILN_OP_MAXIMUM, b, a, NULL), &by), NULL);
    void **v;
    const float *g = grad_at(t, y, &v); /* d/da: max + min + 10·max(b, a): ties ½ + ½ + 10·½; 2 < 5: 0 + 1 + 0 */
    expect_grad(g, (const float[]){6, 1, 6}, 3);
    free_run(t, v);
}

/* max over an axis: tied maxima share the gradient evenly (torch.amax) */
static void test_max_ties_split(void **state)
{
    gc *t = *state;
    uint32_t x = input_values(t, 6, (const float[]){1, 3, 3, 2, 3, 0});
    kiln_attrs a = {.n_axes = 1, .axes = {0}};
    void **v;
    const float *g = grad_at(t, op1(t, KILN_OP_MAX, x, &a), &v);
    expect_grad(g, (const float[]){0, 1.0f / 3, 1.0f / 3, 0, 1.0f / 3, 0}, 6);
    free_run(t, v);
}

/* ---- dropout in training mode --------------------------------------------------------------------------------- */

/* The backward dropout keeps exactly the forward's elements: dx = r·mask/(1 − p). */
static void test_dropout_training_same_mask(void **state)
{
    gc *t = *state;
    t->training = true;
    t->seed = 99;
    uint32_t x = input(t, D_POS, SHAPE(8, 8));
    kiln_attrs a = {.scalar = 0.4};
    uint32_t y = op1(t, KILN_OP_DROPOUT, x, &a);
    gc_check(t, y); /* finite differences see the same mask: seed and stream are fixed */

    /* the backward dropout has the forward's stream */
    int backward = 0;
    for (uint32_t id = y + 1; id < t->g.n_nodes; id++)
        if (t->g.nodes[id].op == KILN_OP_DROPOUT) {
            assert_int_equal(t->g.nodes[id].attrs.stream, t->g.nodes[y].attrs.stream);
            assert_true(t->g.nodes[id].attrs.scalar == 0.4);
            backward++;
        }
    assert_int_equal(backward, 1);

    /* dx is zero exactly where y was dropped, and r/(1 − p) elsewhere */
    void **values = calloc(t->g.n_nodes, sizeof *values);
    run(t, values);
    const float *yv = values[y], *dx = values[t->grads[0]];
    int dropped = 0;
    for (int i = 0; i < 64; i++) {
        assert_true((yv[i] == 0) == (dx[i] == 0));
        dropped += yv[i] == 0;
    }
    assert_in_range(dropped, 10, 45);
    free_run(t, values);
}

/* ---- the pass's bookkeeping ---------------------------------------------------------------------------------- */

/* A parameter the loss does not read, and one behind a comparison, get zeros of their type. */
static void test_unreachable_gets_zeros(void **state)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(3));
    kiln_attrs pa = {.dtype = KILN_F32, .rank = 2, .shape = {2, 2}, .name = "unused", .init = KILN_INIT_ZEROS};
    uint32_t p = add(t, KILN_OP_PARAM, NULL, 0, &pa);
    kiln_attrs all = {.n_axes = 1, .axes = {0}};
    uint32_t loss = op1(t, KILN_OP_SUM, op1(t, KILN_OP_EXP, x, NULL), &all);
    uint32_t wrt[2] = {p, x}, grads[2];
    assert_true(kiln_autodiff(&t->g, loss, wrt, 2, grads, &t->d));
    const kiln_node *z = &t->g.nodes[grads[0]];
    assert_int_equal(z->op, KILN_OP_CONSTANT);
    assert_true(kiln_type_equal(&z->type, &t->g.nodes[p].type));
    assert_int_equal(z->attrs.n_values, 1);
    assert_true(((const float *)z->attrs.values)[0] == 0.0f);
    check_graph(t);
}

/* x is used three times (x·x, then + x): its gradient sums them, 2x + 1 */
static void test_value_used_twice_accumulates(void **state)
{
    gc *t = *state;
    uint32_t x = input_values(t, 3, (const float[]){0.5f, -1, 2});
    uint32_t y = op2(t, KILN_OP_ADD, op2(t, KILN_OP_MUL, x, x, NULL), x, NULL);
    void **v;
    const float *g = grad_at(t, y, &v);
    expect_grad(g, (const float[]){2, -1, 5}, 3);
    free_run(t, v);
}

/* A model-like graph: the gradient of x reaches it along every path (exp, the matmul,
 * the residual add), checked by finite differences. */
static void test_shared_value_finite_differences(void **state)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(3, 4)), w = input(t, D_ANY, SHAPE(4, 4));
    kiln_attrs tb = {.transpose_b = true};
    uint32_t h = op2(t, KILN_OP_MATMUL, op1(t, KILN_OP_TANH, x, NULL), w, &tb);
    gc_check(t, op2(t, KILN_OP_MUL, op2(t, KILN_OP_ADD, h, x, NULL), op1(t, KILN_OP_EXP, x, NULL), NULL));
}

/* i32 values never get gradients; an f32 input reaching the loss only through an i32
 * cast gets zeros, and asking for an i32 value's gradient is refused */
static void test_i32_paths(void **state)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(4));
    uint32_t ids = input_i32(t, SHAPE(4), (const int32_t[]){3, 1, 0, 2});
    kiln_attrs to_i = {.dtype = KILN_I32}, to_f = {.dtype = KILN_F32}, ax = {.axis = 0};
    uint32_t xi = op1(t, KILN_OP_CAST, x, &to_i);
    uint32_t y = op1(t, KILN_OP_CAST, op2(t, KILN_OP_ADD, xi, op2(t, KILN_OP_GATHER, xi, ids, &ax), NULL), &to_f);
    kiln_attrs all = {.n_axes = 1, .axes = {0}};
    uint32_t loss = op1(t, KILN_OP_SUM, y, &all);
    uint32_t nodes_before = t->g.n_nodes, grad;
    assert_true(kiln_autodiff(&t->g, loss, &x, 1, &grad, &t->d));
    assert_int_equal(t->g.nodes[grad].op, KILN_OP_CONSTANT); /* zeros, and nothing else built */
    assert_int_equal(t->g.n_nodes, nodes_before + 1);
    assert_false(kiln_autodiff(&t->g, loss, &ids, 1, &grad, &t->d));
    assert_non_null(strstr(t->d.items[t->d.n - 1].message, "only f32 values have gradients"));
}

/* Only what a wrt node needs is built: layernorm's weight alone needs no layernorm_grad. */
static void test_prunes_to_what_is_asked(void **state)
{
    gc *t = *state;
    uint32_t in[3] = {input(t, D_ANY, SHAPE(2, 4)), input(t, D_ANY, SHAPE(4)), input(t, D_ANY, SHAPE(4))};
    kiln_attrs eps = {.scalar = 1e-5};
    uint32_t y = add(t, KILN_OP_LAYERNORM, in, 3, &eps);
    kiln_attrs all = {.n_axes = 2, .axes = {0, 1}};
    uint32_t loss = op1(t, KILN_OP_SUM, op1(t, KILN_OP_SQUARE, y, NULL), &all);
    uint32_t grad;
    assert_true(kiln_autodiff(&t->g, loss, &in[1], 1, &grad, &t->d));
    for (uint32_t id = loss + 1; id < t->g.n_nodes; id++) assert_int_not_equal(t->g.nodes[id].op, KILN_OP_LAYERNORM_GRAD);
    assert_true(kiln_type_equal(&t->g.nodes[grad].type, &t->g.nodes[in[1]].type));
    check_graph(t);
}

/* The gradient of an intermediate value, and of the loss itself. */
static void test_wrt_intermediate_and_loss(void **state)
{
    gc *t = *state;
    uint32_t x = input_values(t, 2, (const float[]){1, 2});
    uint32_t h = op1(t, KILN_OP_SQUARE, x, NULL);
    kiln_attrs by = {.scalar = 3}, all = {.n_axes = 1, .axes = {0}};
    uint32_t loss = op1(t, KILN_OP_SUM, op1(t, KILN_OP_SCALE, h, &by), &all);
    uint32_t wrt[3] = {h, loss, x}, grads[3];
    assert_true(kiln_autodiff(&t->g, loss, wrt, 3, grads, &t->d));
    void **values = calloc(t->g.n_nodes, sizeof *values);
    run(t, values);
    expect_grad(values[grads[0]], (const float[]){3, 3}, 2);
    expect_grad(values[grads[1]], (const float[]){1}, 1);
    expect_grad(values[grads[2]], (const float[]){6, 12}, 2);
    free_run(t, values);
}

static void test_errors(void **state)
{
    gc *t = *state;
    uint32_t x = input(t, D_ANY, SHAPE(3)), grad;
    uint32_t y = op1(t, KILN_OP_EXP, x, NULL);
    assert_false(kiln_autodiff(&t->g, y, &x, 1, &grad, &t->d)); /* not a scalar */
    assert_non_null(strstr(t->d.items[t->d.n - 1].message, "scalar f32"));
    assert_false(kiln_autodiff(&t->g, 999, &x, 1, &grad, &t->d));
    uint32_t bad = 999;
    kiln_attrs all = {.n_axes = 1, .axes = {0}};
    uint32_t loss = op1(t, KILN_OP_SUM, y, &all);
    assert_false(kiln_autodiff(&t->g, loss, &bad, 1, &grad, &t->d));
}

/* A gradient too large to hold is refused with the builder's message, not a crash: the
 * scores of a (T, S) = (2^18, 2^18) attention would need 256 GiB. */
static void test_too_large_gradient_fails_cleanly(void **state)
{
    gc *t = *state;
    int64_t T = (int64_t)1 << 18;
    kiln_attrs qa = {.dtype = KILN_F32, .rank = 4, .shape = {1, 1, T, 1}, .name = "q"};
    uint32_t q = add(t, KILN_OP_INPUT, NULL, 0, &qa);
    qa.name = "bias";
    qa.rank = 2, qa.shape[0] = T, qa.shape[1] = 1;
    uint32_t bias = add(t, KILN_OP_INPUT, NULL, 0, &qa);
    uint32_t in[4] = {q, q, q, bias};
    kiln_attrs a = {.scalar = 1, .has_bias = true};
    uint32_t y = add(t, KILN_OP_ATTENTION, in, 4, &a);
    kiln_attrs all = {.n_axes = 4, .axes = {0, 1, 2, 3}};
    uint32_t loss = op1(t, KILN_OP_SUM, y, &all), grad;
    assert_false(kiln_autodiff(&t->g, loss, &bias, 1, &grad, &t->d));
    assert_non_null(strstr(t->d.items[t->d.n - 1].message, "too large"));
}

/* Every op has a gradient rule or is on the explicit no-gradient list, never both: an op
 * added without a rule makes autodiff refuse graphs that need it instead of silently
 * freezing whatever lies upstream. */
static void test_every_op_has_a_rule_or_none(void **state)
{
    (void)state;
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        bool rule = kiln_grad_rules[op] != NULL, none = kiln_grad_none[op];
        if (rule == none)
            fail_msg("op '%s': %s", kiln_op_table[op].name,
                     rule ? "has a rule and is on the no-gradient list" : "has no rule and is not on the no-gradient list");
    }
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_has_a_rule_or_none),
        T(test_add), T(test_sub), T(test_mul), T(test_div), T(test_maximum), T(test_minimum), T(test_pow),
        T(test_where), T(test_comparisons_carry_nothing),
        T(test_neg), T(test_exp), T(test_log), T(test_sqrt), T(test_rsqrt), T(test_abs), T(test_square),
        T(test_recip), T(test_tanh), T(test_sigmoid), T(test_relu), T(test_silu), T(test_gelu),
        T(test_gelu_tanh), T(test_gelu_tanh_derivative_accuracy), T(test_erf), T(test_scale), T(test_dropout_inference), T(test_cast_carries_nothing), T(test_cast_f32_to_f32_passes_the_gradient),
        T(test_sum), T(test_sum_keepdims_all), T(test_mean), T(test_mean_keepdims), T(test_max),
        T(test_max_two_axes),
        T(test_softmax), T(test_log_softmax),
        T(test_matmul), T(test_matmul_transpose_a), T(test_matmul_transpose_b), T(test_matmul_transpose_both),
        T(test_matmul_batch_broadcast), T(test_matmul_batch_broadcast_transposed_a),
        T(test_reshape), T(test_transpose), T(test_slice), T(test_slice_step), T(test_slice_negative_step),
        T(test_slice_axis0_step3), T(test_concat), T(test_broadcast), T(test_gather_duplicates),
        T(test_gather_middle_axis), T(test_unslice), T(test_scatter_add), T(test_update_slice),
        T(test_layernorm), T(test_attention_causal_mask_bias), T(test_attention_mask_head_bias),
        T(test_attention_alibi),
        T(test_attention_plain), T(test_cross_entropy), T(test_cross_entropy_ignore_smoothing),
        T(test_cross_entropy_ignore_real_class),
        T(test_relu_abs_zero_at_zero), T(test_relu_nan_passes_gradient), T(test_maximum_minimum_ties_split), T(test_max_ties_split),
        T(test_dropout_training_same_mask),
        T(test_unreachable_gets_zeros), T(test_value_used_twice_accumulates),
        T(test_shared_value_finite_differences), T(test_i32_paths), T(test_prunes_to_what_is_asked),
        T(test_wrt_intermediate_and_loss), T(test_errors), T(test_too_large_gradient_fails_cleanly),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
