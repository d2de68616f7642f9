/* test_extremes.c — the kernels prone to overflow stay finite on extreme inputs,
 * compiled and interpreted alike.
 *
 * A training run that meets one huge activation must not turn it into NaN inside a
 * kernel that could have stayed finite: softmax and log_softmax (the max shift),
 * cross_entropy and its gradient (log-sum-exp), layernorm and its gradient (the
 * variance of values near ±1e30, whose squares overflow f32), attention with every key
 * masked (a row with nothing to attend to gets zero weights, not 0/0), and the
 * elementwise functions built on codegen/vmath.c's vector exp and tanh (tanh, sigmoid,
 * silu, gelu_tanh, exp at the overflow edge). codegen/vmath.c's functions themselves
 * are checked bit by bit over every special value in test_vmath.c; here they run
 * inside the kernels that use them.
 *
 * Each case builds a small graph by hand, fills its inputs with extreme rows (±1e30,
 * logits of ±1e4 and ±3e38, all-equal rows, -1e30 "masked" rows, ±inf where the op
 * has a defined answer), compiles it (fused, the default pipeline), runs the reference
 * interpreter on the same inputs, and requires (1) every output finite where the test
 * says it must be, in both, and (2) the compiled output equal to the interpreter's
 * within a tolerance (infinities equal exactly, NaN only where the interpreter has NaN).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "kiln/runtime.h"
#include "passes.h"
#include "test_graph.h"

/* ---- a graph under test (support/test_graph.h) holding copies of the extreme rows ------ */

static void *copy_of(int rank, const int64_t *dims, const void *data)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    void *copy = malloc((size_t)n * 4 + 4);
    memcpy(copy, data, (size_t)n * 4);
    return copy;
}

static uint32_t xg_input(test_graph *t, int rank, const int64_t *dims, const float *data)
{
    return test_graph_input(t, KILN_F32, rank, dims, copy_of(rank, dims, data));
}
static uint32_t xg_input_i32(test_graph *t, int rank, const int64_t *dims, const int32_t *data)
{
    return test_graph_input(t, KILN_I32, rank, dims, copy_of(rank, dims, data));
}
static uint32_t xg_param(test_graph *t, int rank, const int64_t *dims, const float *data)
{
    return test_graph_param(t, rank, dims, KILN_INIT_ONES, copy_of(rank, dims, data));
}

static bool close_enough(float got, float want, double rtol, double atol)
{
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs((double)got - want) <= atol + rtol * fabs(want);
}

/* Compiles t, runs it and the interpreter, compares every output; with `finite`, every
 * output element must also be finite in both. */
static void xg_check(test_graph *t, bool finite, double rtol, double atol)
{
    void **values = test_graph_interpret(t);
    kiln_compile_request req = {.g = &t->g, .inputs = t->inputs, .n_inputs = (uint32_t)t->n_inputs,
                                .params = t->params, .n_params = (uint32_t)t->n_params, .name = "x"};
    kiln_compiled c;
    if (!kiln_compile_graph(&req, &c, &t->d)) test_graph_fail(t, "kiln_compile_graph");
    void *outs[TEST_GRAPH_MAX];
    assert_int_equal(test_graph_call(t, &c, outs, NULL), 0);

    for (uint32_t o = 0; o < t->g.n_outputs; o++) {
        const kiln_node *n = &t->g.nodes[t->g.outputs[o].node];
        const float *want = values[t->g.outputs[o].node], *got = outs[o];
        for (int64_t i = 0; i < kiln_type_numel(&n->type); i++) {
            if (finite && !isfinite(want[i]))
                fail_msg("output %u (%s) element %lld: the interpreter gives %g", o, kiln_op_table[n->op].name,
                         (long long)i, want[i]);
            if (finite && !isfinite(got[i]))
                fail_msg("output %u (%s) element %lld: the compiled kernel gives %g", o, kiln_op_table[n->op].name,
                         (long long)i, got[i]);
            if (!close_enough(got[i], want[i], rtol, atol))
                fail_msg("output %u (%s) element %lld: got %.9g, want %.9g", o, kiln_op_table[n->op].name,
                         (long long)i, got[i], want[i]);
        }
    }
    test_graph_outputs_free(t, outs);
    kiln_compiled_free(&c);
    test_graph_values_free(t, values);
}

/* ---- the extreme rows ------------------------------------------------------------------ */

#define COLS 37 /* odd, over two 16-lane vectors: vector body and scalar tail both run */
#define ROWS 8

/* Row r of the extreme matrix (ROWS × COLS). */
static void extreme_rows(float *x)
{
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < COLS; j++) {
            float v;
            switch (r) {
            case 0: v = j % 2 ? 1e30f : -1e30f; break;               /* ±1e30 alternating */
            case 1: v = j == 3 ? 1e30f : 0.5f * (float)j; break;     /* one huge value */
            case 2: v = -1e30f; break;                                /* all masked (additive -1e30) */
            case 3: v = 1e30f; break;                                 /* all equal and huge */
            case 4: v = (float)(j - 18) * 1e4f; break;                /* large logits */
            case 5: v = j % 3 ? -FLT_MAX : FLT_MAX; break;            /* the edge of f32 */
            case 6: v = j == 0 ? 0.0f : -1e30f; break;                /* one kept, the rest masked */
            default: v = (float)(j % 5) - 2.0f; break;                /* ordinary */
            }
            x[r * COLS + j] = v;
        }
}

static const int64_t MAT[2] = {ROWS, COLS};

static void test_softmax_extremes(void **state)
{
    (void)state;
    float x[ROWS * COLS];
    extreme_rows(x);
    test_graph t;
    test_graph_init(&t, "x");
    uint32_t in = xg_input(&t, 2, MAT, x);
    kiln_attrs a = {.axis = 1};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SOFTMAX, &in, 1, &a));
    xg_check(&t, true, 1e-5, 1e-6);
    test_graph_free(&t);
}

/* log_softmax of ±FLT_MAX rows is −2·FLT_MAX = −inf mathematically; every other row
 * must stay finite. */
static void test_log_softmax_extremes(void **state)
{
    (void)state;
    float x[ROWS * COLS];
    extreme_rows(x);
    for (int j = 0; j < COLS; j++) x[5 * COLS + j] = j % 3 ? -1e37f : 1e37f; /* not ±FLT_MAX */
    test_graph t;
    test_graph_init(&t, "x");
    uint32_t in = xg_input(&t, 2, MAT, x);
    kiln_attrs a = {.axis = 1};
    test_graph_output(&t, test_graph_add(&t, KILN_OP_LOG_SOFTMAX, &in, 1, &a));
    xg_check(&t, true, 1e-5, 1e-6);
    test_graph_free(&t);
}

/* The cross-entropy loss over extreme logits, and its gradient: the target sits at a
 * low logit in some rows (a loss of about 2e30: large, but finite). */
static void test_cross_entropy_extremes(void **state)
{
    (void)state;
    float x[ROWS * COLS];
    extreme_rows(x);
    for (int j = 0; j < COLS; j++) x[5 * COLS + j] = j % 3 ? -1e37f : 1e37f;
    int32_t tgt[ROWS] = {0, 3, 5, 36, 1, 1, 0, 2};
    for (int smoothing = 0; smoothing < 2; smoothing++) {
        test_graph t;
        test_graph_init(&t, "x");
        uint32_t in[3];
        in[0] = xg_input(&t, 2, MAT, x);
        in[1] = xg_input_i32(&t, 1, MAT, tgt);
        kiln_attrs a = {.scalar = smoothing ? 0.1 : 0.0, .ignore_index = -100};
        uint32_t loss = test_graph_add(&t, KILN_OP_CROSS_ENTROPY, in, 2, &a);
        test_graph_output(&t, loss);
        float one = 1.0f;
        in[2] = xg_input(&t, 0, MAT, &one);
        test_graph_output(&t, test_graph_add(&t, KILN_OP_CROSS_ENTROPY_GRAD, in, 3, &a));
        xg_check(&t, true, 1e-5, 1e-6);
        test_graph_free(&t);
    }
}

/* layernorm over rows whose squares overflow f32 (±1e30): the output is finite (the
 * normalised row is bounded by sqrt(COLS)), and so is its gradient. */
static void test_layernorm_extremes(void **state)
{
    (void)state;
    float x[ROWS * COLS], w[COLS], b[COLS], g[ROWS * COLS];
    extreme_rows(x);
    for (int j = 0; j < COLS; j++) w[j] = 1.0f + 0.01f * (float)j, b[j] = 0.1f * (float)(j % 3);
    for (int i = 0; i < ROWS * COLS; i++) g[i] = (float)(i % 7) - 3.0f;
    for (int grad = 0; grad < 2; grad++) {
        test_graph t;
        test_graph_init(&t, "x");
        uint32_t in[3];
        in[0] = xg_input(&t, 2, MAT, x);
        in[1] = xg_param(&t, 1, &MAT[1], w);
        kiln_attrs a = {.scalar = 1e-5};
        if (grad) {
            in[2] = xg_input(&t, 2, MAT, g);
            test_graph_output(&t, test_graph_add(&t, KILN_OP_LAYERNORM_GRAD, in, 3, &a));
        } else {
            in[2] = xg_param(&t, 1, &MAT[1], b);
            test_graph_output(&t, test_graph_add(&t, KILN_OP_LAYERNORM, in, 3, &a));
        }
        xg_check(&t, true, 2e-4, 2e-4);
        test_graph_free(&t);
    }
}

/* Elementwise functions built on vmath's exp and tanh, at ±1e30 and the overflow edges:
 * tanh, sigmoid, silu, gelu_tanh, gelu and erf are bounded (or ≈ x) and must stay finite;
 * exp overflows to +inf exactly (and never gives NaN). */
static void test_elementwise_extremes(void **state)
{
    (void)state;
    static const float specials[] = {1e30f, -1e30f, FLT_MAX, -FLT_MAX, 88.7f, 88.8f, -87.3f, -103.9f, -104.0f,
                                     9.0f,  -9.0f,  20.0f,   -20.0f,   1e-30f, -1e-30f, 0.0f, -0.0f, 3e38f, -3e38f,
                                     1e10f, -1e10f, 1e5f,    -1e5f,    44.0f,  -44.0f,  1.0f, -1.0f};
    enum { N = sizeof specials / sizeof *specials };
    int64_t n = N;
    static const kiln_op bounded[] = {KILN_OP_TANH, KILN_OP_SIGMOID, KILN_OP_GELU_TANH, KILN_OP_GELU, KILN_OP_ERF};
    for (size_t k = 0; k < sizeof bounded / sizeof *bounded; k++) {
        test_graph t;
        test_graph_init(&t, "x");
        uint32_t in = xg_input(&t, 1, &n, specials);
        test_graph_output(&t, test_graph_add(&t, bounded[k], &in, 1, NULL));
        xg_check(&t, true, 4e-6, 1e-7);
        test_graph_free(&t);
    }
    /* silu(x) = x·sigmoid(x): finite for finite x except where x·1 is ±FLT_MAX… which is
     * finite too */
    test_graph t;
    test_graph_init(&t, "x");
    uint32_t in = xg_input(&t, 1, &n, specials);
    test_graph_output(&t, test_graph_add(&t, KILN_OP_SILU, &in, 1, NULL));
    xg_check(&t, true, 4e-6, 1e-7);
    test_graph_free(&t);
    /* exp: +inf past the overflow threshold, 0 below the underflow one, never NaN */
    test_graph_init(&t, "x");
    in = xg_input(&t, 1, &n, specials);
    uint32_t e = test_graph_add(&t, KILN_OP_EXP, &in, 1, NULL);
    test_graph_output(&t, e);
    xg_check(&t, false, 4e-6, 1e-45);
    test_graph_free(&t);
}

/* Attention whose key mask drops every key of a sequence (a padded batch row): the
 * output is zeros, and so is the log-sum-exp's use downstream — never 0/0. The scores
 * of the other sequence are huge (q, k ≈ 1e15: q·k ≈ 1e31). */
static void test_attention_all_masked(void **state)
{
    (void)state;
    enum { B = 2, H = 1, T = 5, D = 4 };
    int64_t qd[4] = {B, H, T, D}, md[2] = {B, T};
    float q[B * H * T * D], k[B * H * T * D], v[B * H * T * D], mask[B * T];
    for (int i = 0; i < B * H * T * D; i++) {
        q[i] = (float)((i * 7) % 5 - 2) * 1e15f;
        k[i] = (float)((i * 3) % 5 - 2) * 1e15f;
        v[i] = (float)(i % 9) - 4.0f;
    }
    for (int i = 0; i < B * T; i++) mask[i] = i < T ? 0.0f : 1.0f; /* sequence 0: every key masked */
    for (int causal = 0; causal < 2; causal++) {
        test_graph t;
        test_graph_init(&t, "x");
        uint32_t in[4] = {xg_input(&t, 4, qd, q), xg_input(&t, 4, qd, k), xg_input(&t, 4, qd, v),
                          xg_input(&t, 2, md, mask)};
        kiln_attrs a = {.scalar = 0.5, .has_mask = true, .causal = causal};
        test_graph_output(&t, test_graph_add(&t, KILN_OP_ATTENTION, in, 4, &a));
        xg_check(&t, true, 1e-5, 1e-5);
        test_graph_free(&t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_extremes),     cmocka_unit_test(test_log_softmax_extremes),
        cmocka_unit_test(test_cross_entropy_extremes), cmocka_unit_test(test_layernorm_extremes),
        cmocka_unit_test(test_elementwise_extremes), cmocka_unit_test(test_attention_all_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
