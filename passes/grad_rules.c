/* grad_rules.c — one vector-Jacobian rule per op, in a table indexed by kiln_op.
 *
 * Each rule reads like its forward op backwards (llm.c's *_backward): given the forward
 * node y = op(x…) and the cotangent g = d loss / d y, it builds d loss / d x_k = g·∂y/∂x_k
 * for every input that wants one, out of the same IR ops the forward graph uses, and
 * hands it to ad_give. Elementwise rules compute at the (broadcast) result shape and let
 * ad_unbroadcast sum the shares of a broadcast operand back to its shape.
 *
 * Choices where the derivative is not unique (also in docs/autodiff.md):
 * - relu and abs have derivative 0 at 0 (torch's choice for relu; abs uses sign(0) = 0).
 * - maximum/minimum give the whole gradient to the first operand on a tie.
 * - max (the reduction) splits the gradient evenly among the maxima, like torch.amax.
 * - pow's gradient for the exponent is g·a^b·log a, taken as 0 where a = 0 (torch).
 * - dropout's backward is the same dropout (same p, same mask stream) of the cotangent.
 * The composites' rules emit their own gradient ops (layernorm_grad, attention_grad,
 * cross_entropy_grad); those, like comparisons, cast and the sources, have no rule.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grad.h"

static uint32_t in_k(const kiln_node *n, uint32_t k) { return n->in[k]; }

/* ---- binary elementwise ---------------------------------------------------------------------- */

static void rule_add(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    for (uint32_t k = 0; k < 2; k++)
        if (ad_wants(c, n, k)) ad_give(c, n, k, ad_unbroadcast(c, g, in_k(n, k)));
}

static void rule_sub(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_unbroadcast(c, g, in_k(n, 0)));
    if (ad_wants(c, n, 1)) ad_give(c, n, 1, ad_unbroadcast(c, ad_op1(c, KILN_OP_NEG, g), in_k(n, 1)));
}

/* y = a·b: da = g·b, db = g·a */
static void rule_mul(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t a = in_k(n, 0), b = in_k(n, 1);
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_unbroadcast(c, ad_op2(c, KILN_OP_MUL, g, b), a));
    if (ad_wants(c, n, 1)) ad_give(c, n, 1, ad_unbroadcast(c, ad_op2(c, KILN_OP_MUL, g, a), b));
}

/* y = a/b: da = g/b, db = −g·a/b² = −g·y/b */
static void rule_div(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t a = in_k(n, 0), b = in_k(n, 1);
    uint32_t g_b = ad_op2(c, KILN_OP_DIV, g, b);
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_unbroadcast(c, g_b, a));
    if (ad_wants(c, n, 1))
        ad_give(c, n, 1, ad_unbroadcast(c, ad_op1(c, KILN_OP_NEG, ad_op2(c, KILN_OP_MUL, g_b, y)), b));
}

/* maximum/minimum: the operand that was chosen gets g, and on a tie (a = b) each gets
 * half, as torch.maximum/minimum do. a_loses_when compares a with b: LT for maximum (a
 * loses where a < b), GT for minimum. */
static void select_rule(ad_ctx *c, const kiln_node *n, uint32_t g, kiln_op a_loses_when)
{
    uint32_t a = in_k(n, 0), b = in_k(n, 1), zero = ad_scalar(c, 0);
    uint32_t tie = ad_op2(c, KILN_OP_EQ, a, b);
    uint32_t shared = ad_where(c, tie, ad_op2(c, KILN_OP_MUL, g, ad_scalar(c, 0.5)), g);
    if (ad_wants(c, n, 0))
        ad_give(c, n, 0, ad_unbroadcast(c, ad_where(c, ad_op2(c, a_loses_when, a, b), zero, shared), a));
    if (ad_wants(c, n, 1))
        ad_give(c, n, 1, ad_unbroadcast(c, ad_where(c, ad_op2(c, a_loses_when, b, a), zero, shared), b));
}
static void rule_maximum(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g) { select_rule(c, n, g, KILN_OP_LT); }
static void rule_minimum(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g) { select_rule(c, n, g, KILN_OP_GT); }

/* y = cast(a) from f32 to f32 (the identity: torch's .to(float32)): da = g. Casts to or
 * from i32 carry no gradient; ad_differentiable never asks for them. */
static void rule_cast(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, g);
}

/* y = a^b: da = g·b·a^(b−1) (not y/a, which fails at a = 0), 0 where b = 0 (a^0 is
 * constant; b·a^(b−1) would be 0·inf = NaN at a = 0, and torch masks it so too);
 * db = g·y·log a, 0 where a = 0 and b ≥ 0 */
static void rule_pow(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t a = in_k(n, 0), b = in_k(n, 1);
    if (ad_wants(c, n, 0)) {
        uint32_t pow_b1 = ad_op2(c, KILN_OP_POW, a, ad_op2(c, KILN_OP_SUB, b, ad_scalar(c, 1)));
        uint32_t d = ad_op2(c, KILN_OP_MUL, g, ad_op2(c, KILN_OP_MUL, b, pow_b1));
        uint32_t b0 = ad_op2(c, KILN_OP_EQ, b, ad_scalar(c, 0));
        ad_give(c, n, 0, ad_unbroadcast(c, ad_where(c, b0, ad_scalar(c, 0), d), a));
    }
    if (ad_wants(c, n, 1)) {
        uint32_t d = ad_op2(c, KILN_OP_MUL, g, ad_op2(c, KILN_OP_MUL, y, ad_op1(c, KILN_OP_LOG, a)));
        uint32_t a0 = ad_op2(c, KILN_OP_EQ, a, ad_scalar(c, 0)), b_neg = ad_op2(c, KILN_OP_LT, b, ad_scalar(c, 0));
        /* torch's mask: a = 0 and b ≥ 0 (at a = 0, b < 0 it keeps y·log a = inf·−inf) */
        uint32_t at_zero = ad_where(c, b_neg, d, ad_scalar(c, 0));
        ad_give(c, n, 1, ad_unbroadcast(c, ad_where(c, a0, at_zero, d), b));
    }
}

/* y = cond ? a : b: each branch gets g where it was taken; cond gets nothing */
static void rule_where(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t cond = in_k(n, 0), zero = ad_scalar(c, 0);
    if (ad_wants(c, n, 1)) ad_give(c, n, 1, ad_unbroadcast(c, ad_where(c, cond, g, zero), in_k(n, 1)));
    if (ad_wants(c, n, 2)) ad_give(c, n, 2, ad_unbroadcast(c, ad_where(c, cond, zero, g), in_k(n, 2)));
}

/* ---- unary elementwise: dx = g·f'(x) --------------------------------------------------------- */

/* The rules below compute f'(x) (from x or from y = f(x), whichever is simpler) and
 * give g·f'(x). */
static void give_times(ad_ctx *c, const kiln_node *n, uint32_t g, uint32_t dfdx)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op2(c, KILN_OP_MUL, g, dfdx));
}

static uint32_t one_minus(ad_ctx *c, uint32_t v) { return ad_op2(c, KILN_OP_SUB, ad_scalar(c, 1), v); }

static void rule_neg(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op1(c, KILN_OP_NEG, g));
}

static void rule_exp(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g) { give_times(c, n, g, y); }

static void rule_log(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op2(c, KILN_OP_DIV, g, in_k(n, 0)));
}

/* y = √x: dx = g / (2y) */
static void rule_sqrt(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_scale(c, ad_op2(c, KILN_OP_DIV, g, y), 0.5));
}

/* y = x^(−1/2): f' = −½·x^(−3/2) = −½·y³ */
static void rule_rsqrt(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    give_times(c, n, g, ad_scale(c, ad_op2(c, KILN_OP_MUL, y, ad_op1(c, KILN_OP_SQUARE, y)), -0.5));
}

/* f' = sign(x), 0 at 0 */
static void rule_abs(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t x = in_k(n, 0), zero = ad_scalar(c, 0);
    give_times(c, n, g, ad_op2(c, KILN_OP_SUB, ad_op2(c, KILN_OP_GT, x, zero), ad_op2(c, KILN_OP_LT, x, zero)));
}

static void rule_square(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_scale(c, ad_op2(c, KILN_OP_MUL, g, in_k(n, 0)), 2.0));
}

/* y = 1/x: f' = −y² */
static void rule_recip(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    ad_give(c, n, 0, ad_op1(c, KILN_OP_NEG, ad_op2(c, KILN_OP_MUL, g, ad_op1(c, KILN_OP_SQUARE, y))));
}

static void rule_tanh(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    give_times(c, n, g, one_minus(c, ad_op1(c, KILN_OP_SQUARE, y)));
}

static void rule_sigmoid(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    give_times(c, n, g, ad_op2(c, KILN_OP_MUL, y, one_minus(c, y)));
}

/* f' = [x > 0]: 0 at 0 */
/* y = max(x, 0): g where x ≤ 0 is false, else 0 — PyTorch's threshold_backward, under
 * which a NaN x (relu passes it on) passes g too; x ≤ 0 as (x < 0) + (x = 0), one of
 * which is 1 for any number and neither for NaN */
static void rule_relu(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    uint32_t x = in_k(n, 0), zero = ad_scalar(c, 0);
    uint32_t at_most_zero = ad_op2(c, KILN_OP_ADD, ad_op2(c, KILN_OP_LT, x, zero), ad_op2(c, KILN_OP_EQ, x, zero));
    ad_give(c, n, 0, ad_where(c, at_most_zero, zero, g));
}

/* y = x·σ(x): f' = σ·(1 + x·(1 − σ)) */
static void rule_silu(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t x = in_k(n, 0), s = ad_op1(c, KILN_OP_SIGMOID, x);
    uint32_t inner = ad_op2(c, KILN_OP_ADD, ad_scalar(c, 1), ad_op2(c, KILN_OP_MUL, x, one_minus(c, s)));
    give_times(c, n, g, ad_op2(c, KILN_OP_MUL, s, inner));
}

/* x·v in f32, v rounded to f32 — for the constants of the activations' derivatives, which
 * PyTorch's CPU kernels also hold as floats. `scale` would multiply in double (its own
 * rounding, as the op is specified), which costs a widening, two multiplies and a
 * narrowing per vector: the gelu_tanh gradient loop of char_gpt's training step took
 * 2.2 ms with four such scales (docs/performance.md). Halves stay scales: they are exact
 * either way. */
static uint32_t times_f32(ad_ctx *c, uint32_t x, double v) { return ad_op2(c, KILN_OP_MUL, x, ad_scalar(c, v)); }

/* y = x·Φ(x): f' = Φ(x) + x·φ(x), Φ(x) = ½·(1 + erf(x/√2)), φ(x) = exp(−x²/2)/√(2π) */
static void rule_gelu(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t x = in_k(n, 0);
    uint32_t erf = ad_op1(c, KILN_OP_ERF, times_f32(c, x, 0.70710678118654752440));
    uint32_t cdf = ad_scale(c, ad_op2(c, KILN_OP_ADD, erf, ad_scalar(c, 1)), 0.5);
    uint32_t pdf = times_f32(c, ad_op1(c, KILN_OP_EXP, ad_scale(c, ad_op1(c, KILN_OP_SQUARE, x), -0.5)),
                             0.39894228040143267794);
    give_times(c, n, g, ad_op2(c, KILN_OP_ADD, cdf, ad_op2(c, KILN_OP_MUL, x, pdf)));
}

/* y = ½·x·(1 + tanh u) = x·s, u = k·(x + a·x³), s = σ(2u) = 1/(1 + E), E = e^−2u:
 * f' = s + x·s·(1 − s)·2u' = s·(1 + x·(E·s)·(2k + 6ka·x²)). PyTorch's derivative,
 * ½·(1 + t) + ½·x·(1 − t²)·u' with t = tanh u, with one exponential where tanh takes an
 * exponential, a polynomial and selects: char_gpt's gradient loop went from 63 to 50
 * instructions per 16 elements, ~20 % faster (docs/performance.md). 1 − s as E·s keeps its
 * relative precision where s rounds to 1, and s keeps its own where it is tiny (1 − t²
 * and 1 + t do not): against the double-precision derivative on [−12, 12], at most
 * 2.4e-7 off (the tanh form 5.6e-7), within 3 ULP from x = −0.5 up (4.7), and relatively
 * close in the negative tail, where the tanh form gave 0 from x ≈ −5.2 down
 * (test_autodiff's test_gelu_tanh_derivative_accuracy). −2u is capped at 88 (E stays
 * finite, so E·s is never ∞·0), where s < e^−88 and f' is 0 to within float's range.
 * At x = −∞ the result is −∞ where PyTorch's formula gives NaN (as at +∞, here too). */
static void rule_gelu_tanh(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    const double k = 0.79788456080286535588, a = 0.044715; /* √(2/π) */
    uint32_t x = in_k(n, 0), x2 = ad_op1(c, KILN_OP_SQUARE, x);
    uint32_t minus_2u = ad_op2(c, KILN_OP_MUL, x, ad_op2(c, KILN_OP_SUB, times_f32(c, x2, -2 * k * a), ad_scalar(c, 2 * k)));
    uint32_t e = ad_op1(c, KILN_OP_EXP, ad_op2(c, KILN_OP_MINIMUM, minus_2u, ad_scalar(c, 88)));
    uint32_t s = ad_op1(c, KILN_OP_RECIP, ad_op2(c, KILN_OP_ADD, e, ad_scalar(c, 1)));
    uint32_t du = ad_op2(c, KILN_OP_ADD, times_f32(c, x2, 6 * k * a), ad_scalar(c, 2 * k)); /* (2u)' */
    uint32_t x_s_e = ad_op2(c, KILN_OP_MUL, x, ad_op2(c, KILN_OP_MUL, e, s));
    uint32_t inner = ad_op2(c, KILN_OP_ADD, ad_scalar(c, 1), ad_op2(c, KILN_OP_MUL, x_s_e, du));
    give_times(c, n, g, ad_op2(c, KILN_OP_MUL, s, inner));
}

/* f' = 2/√π·exp(−x²) */
static void rule_erf(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t e = ad_op1(c, KILN_OP_EXP, ad_op1(c, KILN_OP_NEG, ad_op1(c, KILN_OP_SQUARE, in_k(n, 0))));
    give_times(c, n, g, ad_scale(c, e, 1.12837916709551257390));
}

static void rule_scale(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_scale(c, g, n->attrs.scalar));
}

/* y = x·mask/(1 − p): dx = g·mask/(1 − p), i.e. the same dropout — same p and stream, so
 * the same mask — of g. Outside training both are the identity. */
static void rule_dropout(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    kiln_attrs a = {.scalar = n->attrs.scalar, .stream = n->attrs.stream};
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op(c, KILN_OP_DROPOUT, &g, 1, &a));
}

/* ---- reductions ------------------------------------------------------------------------------ */

/* v broadcast to the type of node `like` (nothing when they agree) */
static uint32_t broadcast_like(ad_ctx *c, uint32_t v, uint32_t like)
{
    if (v == KILN_NONE) return v;
    kiln_type t = c->g->nodes[like].type;
    if (kiln_type_equal(&c->g->nodes[v].type, &t)) return v;
    kiln_attrs a = {.rank = t.rank};
    memcpy(a.shape, t.dims, sizeof a.shape);
    return ad_op(c, KILN_OP_BROADCAST, &v, 1, &a);
}

/* sum: every element of x gets the cotangent of the sum it went into */
static void rule_sum(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t x = in_k(n, 0);
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, broadcast_like(c, ad_keepdims(c, g, x, n->attrs.axes, n->attrs.n_axes), x));
}

/* mean: the same, divided by the number of elements averaged */
static void rule_mean(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t x = in_k(n, 0);
    const kiln_type *xt = &c->g->nodes[x].type;
    int64_t count = 1;
    for (int i = 0; i < n->attrs.n_axes; i++) count *= xt->dims[n->attrs.axes[i]];
    if (!ad_wants(c, n, 0)) return;
    uint32_t gk = ad_keepdims(c, g, x, n->attrs.axes, n->attrs.n_axes);
    /* an empty x has nothing to receive: any factor will do */
    ad_give(c, n, 0, broadcast_like(c, ad_scale(c, gk, count ? 1.0 / (double)count : 1.0), x));
}

/* max: the elements equal to their maximum share its cotangent evenly (torch.amax) */
static void rule_max(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    uint32_t x = in_k(n, 0);
    const int64_t *axes = n->attrs.axes;
    int n_axes = n->attrs.n_axes;
    uint32_t is_max = ad_op2(c, KILN_OP_EQ, x, ad_keepdims(c, y, x, axes, n_axes));
    uint32_t count = ad_sum(c, is_max, axes, n_axes, true);
    uint32_t share = ad_op2(c, KILN_OP_DIV, ad_keepdims(c, g, x, axes, n_axes), count);
    ad_give(c, n, 0, ad_op2(c, KILN_OP_MUL, is_max, share));
}

/* ---- softmax, log_softmax ----------------------------------------------------------------------- */

/* y = softmax(x): dx = y·(g − Σ g·y) along the axis */
static void rule_softmax(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    uint32_t dot = ad_sum(c, ad_op2(c, KILN_OP_MUL, g, y), &n->attrs.axis, 1, true);
    ad_give(c, n, 0, ad_op2(c, KILN_OP_MUL, y, ad_op2(c, KILN_OP_SUB, g, dot)));
}

/* y = log_softmax(x): dx = g − softmax(x)·Σ g = g − exp(y)·Σ g along the axis */
static void rule_log_softmax(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    uint32_t total = ad_sum(c, g, &n->attrs.axis, 1, true);
    ad_give(c, n, 0, ad_op2(c, KILN_OP_SUB, g, ad_op2(c, KILN_OP_MUL, ad_op1(c, KILN_OP_EXP, y), total)));
}

/* ---- matmul -------------------------------------------------------------------------------------- */

static uint32_t matmul(ad_ctx *c, uint32_t a, uint32_t b, bool ta, bool tb)
{
    kiln_attrs at = {.transpose_a = ta, .transpose_b = tb};
    uint32_t in[2] = {a, b};
    return ad_op(c, KILN_OP_MATMUL, in, 2, &at);
}

/* Y = op(A)·op(B) (op = transpose where the flag says): d op(A) = G·op(B)ᵀ and
 * d op(B) = op(A)ᵀ·G, each written so that it comes out in the operand's stored layout
 * (for a transposed A, dA = (G·op(B)ᵀ)ᵀ = op(B)·Gᵀ), then summed over the batch dims
 * the operand was broadcast along. */
static void rule_matmul(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t a = in_k(n, 0), b = in_k(n, 1);
    bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
    /* db before da: db is the last reader of a (a layer's input, often a recomputed copy:
     * passes/checkpoint.c), so a dies before da's buffer, of a's size, is taken */
    if (ad_wants(c, n, 1)) {
        const kiln_type *at = &c->g->nodes[a].type, *bt = &c->g->nodes[b].type;
        if (bt->rank == 2 && at->rank > 2 && !ta) {
            /* a 2-D B shared by every batch element (x·Wᵀ of a linear layer): the batch's
             * rows are rows of one product, so dB is one GEMM with k = all rows, not a
             * GEMM per batch element followed by a sum over the batch */
            int64_t K = at->dims[at->rank - 1], N = c->g->nodes[g].type.dims[at->rank - 1];
            kiln_attrs ra = {.dtype = KILN_F32, .rank = 2, .shape = {-1, K}};
            kiln_attrs rg = {.dtype = KILN_F32, .rank = 2, .shape = {-1, N}};
            uint32_t a2 = ad_op(c, KILN_OP_RESHAPE, &a, 1, &ra), g2 = ad_op(c, KILN_OP_RESHAPE, &g, 1, &rg);
            ad_give(c, n, 1, tb ? matmul(c, g2, a2, true, false) : matmul(c, a2, g2, true, false));
        } else {
            uint32_t db = tb ? matmul(c, g, a, true, ta) : matmul(c, a, g, !ta, false);
            ad_give(c, n, 1, ad_unbroadcast(c, db, b));
        }
    }
    if (ad_wants(c, n, 0)) {
        uint32_t da = ta ? matmul(c, b, g, tb, true) : matmul(c, g, b, false, !tb);
        ad_give(c, n, 0, ad_unbroadcast(c, da, a));
    }
}

/* ---- layout ------------------------------------------------------------------------------------- */

static void rule_reshape(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_reshape_like(c, g, in_k(n, 0)));
}

/* y = transpose(x, perm): dx = transpose(g, perm⁻¹) */
static void rule_transpose(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    kiln_attrs a = {0};
    for (int d = 0; d < n->type.rank; d++) a.perm[n->attrs.perm[d]] = d;
    ad_give(c, n, 0, ad_op(c, KILN_OP_TRANSPOSE, &g, 1, &a));
}

/* y = x[slice]: dx = zeros of x's type with g at the slice's positions */
static void rule_slice(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    kiln_type t = c->g->nodes[in_k(n, 0)].type;
    kiln_attrs a = {.rank = t.rank, .axis = n->attrs.axis, .start = n->attrs.start, .end = n->attrs.end,
                    .step = n->attrs.step};
    memcpy(a.shape, t.dims, sizeof a.shape);
    ad_give(c, n, 0, ad_op(c, KILN_OP_UNSLICE, &g, 1, &a));
}

/* y = unslice(x): dx = the slice of g */
static void rule_unslice(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    kiln_attrs a = {.axis = n->attrs.axis, .start = n->attrs.start, .end = n->attrs.end, .step = n->attrs.step};
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op(c, KILN_OP_SLICE, &g, 1, &a));
}

/* y = concat(x…): each part gets its block of g */
static void rule_concat(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    int64_t pos = 0, ax = n->attrs.axis;
    for (uint32_t k = 0; k < n->n_in; k++) {
        int64_t len = c->g->nodes[in_k(n, k)].type.dims[ax];
        kiln_attrs a = {.axis = ax, .start = pos, .end = pos + len, .step = 1};
        if (ad_wants(c, n, k)) ad_give(c, n, k, ad_op(c, KILN_OP_SLICE, &g, 1, &a));
        pos += len;
    }
}

static void rule_broadcast(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_unbroadcast(c, g, in_k(n, 0)));
}

/* y = table[indices]: each row of g goes back to the table row it came from, rows
 * gathered more than once adding up */
static void rule_gather(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    if (!ad_wants(c, n, 0)) return;
    kiln_type t = c->g->nodes[in_k(n, 0)].type;
    kiln_attrs a = {.rank = t.rank, .axis = n->attrs.axis};
    memcpy(a.shape, t.dims, sizeof a.shape);
    uint32_t in[2] = {g, in_k(n, 1)};
    ad_give(c, n, 0, ad_op(c, KILN_OP_SCATTER_ADD, in, 2, &a));
}

/* y = scatter_add(x, indices): dx = gather(g, indices) */
static void rule_scatter_add(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    kiln_attrs a = {.axis = n->attrs.axis};
    uint32_t in[2] = {g, in_k(n, 1)};
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op(c, KILN_OP_GATHER, in, 2, &a));
}

/* y = update_slice(x, u, start): dx = g with the slice zeroed (zeros written over it);
 * du = g's slice, gathered at start + 0…m−1 (a slice at a run-time start) */
static void rule_update_slice(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t u = in_k(n, 1), start = in_k(n, 2);
    kiln_type ut = c->g->nodes[u].type;
    kiln_attrs ax = {.axis = n->attrs.axis};
    if (ad_wants(c, n, 0)) {
        uint32_t in[3] = {g, ad_fill(c, &ut, 0.0), start};
        ad_give(c, n, 0, ad_op(c, KILN_OP_UPDATE_SLICE, in, 3, &ax));
    }
    if (ad_wants(c, n, 1)) {
        kiln_attrs one = {.dtype = KILN_I32, .rank = 1, .shape = {1}};
        kiln_attrs ia = {.dtype = KILN_I32, .rank = 1, .shape = {ut.dims[n->attrs.axis]}, .axis = 0};
        uint32_t at = ad_op(c, KILN_OP_RESHAPE, &start, 1, &one);
        uint32_t rows = ad_op2(c, KILN_OP_ADD, ad_op(c, KILN_OP_IOTA, NULL, 0, &ia), at);
        uint32_t in[2] = {g, rows};
        ad_give(c, n, 1, ad_op(c, KILN_OP_GATHER, in, 2, &ax));
    }
}

/* ---- composites ----------------------------------------------------------------------------------- */

/* y = x̂·w + b, x̂ = layernorm(x, 1, 0): dx from layernorm_grad; dw = Σ g·x̂ and db = Σ g
 * over every axis but the last */
static void rule_layernorm(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t x = in_k(n, 0), w = in_k(n, 1), b = in_k(n, 2);
    kiln_attrs eps = {.scalar = n->attrs.scalar};
    if (ad_wants(c, n, 0)) {
        uint32_t in[3] = {x, w, g};
        ad_give(c, n, 0, ad_op(c, KILN_OP_LAYERNORM_GRAD, in, 3, &eps));
    }
    if (ad_wants(c, n, 1)) {
        kiln_type wt = c->g->nodes[w].type;
        uint32_t in[3] = {x, ad_fill(c, &wt, 1.0), ad_fill(c, &wt, 0.0)};
        uint32_t xhat = ad_op(c, KILN_OP_LAYERNORM, in, 3, &eps);
        ad_give(c, n, 1, ad_unbroadcast(c, ad_op2(c, KILN_OP_MUL, g, xhat), w));
    }
    if (ad_wants(c, n, 2)) ad_give(c, n, 2, ad_unbroadcast(c, g, b));
}

/* The bucket embedding's gradient from the diagonal sums d (…, H, T+S−1) of the scores'
 * gradient (element t: relative position j − i = S − 1 − t): summed over the batch dims,
 * then each diagonal added into its bucket's row by scatter_add (in order: deterministic). */
static uint32_t relative_grad(ad_ctx *c, uint32_t d, uint32_t w, bool causal)
{
    const kiln_type *dt = &c->g->nodes[d].type, *wt = &c->g->nodes[w].type;
    int r = dt->rank;
    const kiln_type *kt = &c->g->nodes[c->g->nodes[d].in[1]].type; /* k (…, S, dh) */
    int64_t L = dt->dims[r - 1], NB = wt->dims[0], H = wt->dims[1], S = kt->dims[kt->rank - 2];
    if (r > 2) {
        kiln_attrs s = {.n_axes = r - 2};
        for (int i = 0; i < r - 2; i++) s.axes[i] = i;
        d = ad_op(c, KILN_OP_SUM, &d, 1, &s); /* (H, L) */
    }
    kiln_attrs tp = {.perm = {1, 0}};
    d = ad_op(c, KILN_OP_TRANSPOSE, &d, 1, &tp); /* (L, H) */
    int32_t *bk = malloc((size_t)(L > 0 ? L : 1) * sizeof *bk);
    KILN_ASSERT(bk != NULL);
    for (int64_t t = 0; t < L; t++) bk[t] = kiln_t5_bucket(S - 1 - t, !causal, (int)NB, KILN_T5_MAX_DISTANCE);
    kiln_attrs ca = {.dtype = KILN_I32, .rank = 1, .shape = {L}, .values = L > 0 ? bk : NULL, .n_values = L};
    uint32_t idx = ad_op(c, KILN_OP_CONSTANT, NULL, 0, &ca); /* (L) i32 buckets */
    free(bk);
    kiln_attrs sa = {.dtype = KILN_F32, .rank = 2, .shape = {NB, H}, .axis = 0};
    uint32_t in[2] = {d, idx};
    return ad_op(c, KILN_OP_SCATTER_ADD, in, 2, &sa); /* (NB, H) */
}

/* attention(q, k, v, [mask], [bias]): one attention_grad per input wanted, each given
 * the forward's output and attention_lse (the fuser computes all of them in one kernel,
 * and the forward's lse in the forward attention kernel); the bias gets the scores'
 * gradient reduced to its shape; the mask gets nothing */
static void rule_attention(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    uint32_t bias = n->n_in - 1;
    bool any = ad_wants(c, n, 0) || ad_wants(c, n, 1) || ad_wants(c, n, 2) || (n->attrs.has_bias && ad_wants(c, n, bias));
    if (!any) return;
    uint32_t in[8];
    KILN_ASSERT(n->n_in + 3 <= 8);
    memcpy(in, n->in, n->n_in * sizeof *in);
    kiln_attrs a = {.scalar = n->attrs.scalar, .causal = n->attrs.causal, .has_mask = n->attrs.has_mask,
                    .has_bias = n->attrs.has_bias, .alibi = n->attrs.alibi, .relative = n->attrs.relative,
                    /* attention dropout: the gradients drop the weights the forward dropped */
                    .attn_dropout = n->attrs.attn_dropout, .stream = n->attrs.stream};
    /* the forward's output and row log-sum-exp (one forward kernel computes both), so the
     * backward kernel skips recomputing the softmax statistics */
    in[n->n_in] = y;
    in[n->n_in + 1] = ad_op(c, KILN_OP_ATTENTION_LSE, n->in, n->n_in, &a);
    in[n->n_in + 2] = g;
    uint32_t n_grad_in = n->n_in + 3;
    for (uint32_t k = 0; k < 3; k++) {
        if (!ad_wants(c, n, k)) continue;
        a.wrt = (int)k; /* KILN_WRT_Q, _K, _V in input order */
        ad_give(c, n, k, ad_op(c, KILN_OP_ATTENTION_GRAD, in, n_grad_in, &a));
    }
    if (n->attrs.has_bias && ad_wants(c, n, bias)) {
        a.wrt = KILN_WRT_SCORES;
        uint32_t scores = ad_op(c, KILN_OP_ATTENTION_GRAD, in, n_grad_in, &a);
        if (n->attrs.relative) { /* (…, H, T+S−1) diagonal sums → the (NB, H) buckets */
            ad_give(c, n, bias, relative_grad(c, scores, in_k(n, bias), n->attrs.causal));
            return;
        }
        if (n->attrs.alibi) { /* bias = slope·|i − j|: the slope gets Σ dscores·|i − j| */
            const kiln_type *st = &c->g->nodes[scores].type;
            int64_t T = st->dims[st->rank - 2], S = st->dims[st->rank - 1];
            kiln_attrs ti = {.dtype = KILN_F32, .rank = 2, .shape = {T, 1}, .axis = 0};
            kiln_attrs tj = {.dtype = KILN_F32, .rank = 2, .shape = {1, S}, .axis = 1};
            uint32_t i = ad_op(c, KILN_OP_IOTA, NULL, 0, &ti), j = ad_op(c, KILN_OP_IOTA, NULL, 0, &tj);
            uint32_t dist = ad_op1(c, KILN_OP_ABS, ad_op2(c, KILN_OP_SUB, i, j)); /* (T, S) */
            scores = ad_op2(c, KILN_OP_MUL, scores, dist);
        }
        ad_give(c, n, bias, ad_unbroadcast(c, scores, in_k(n, bias)));
    }
}

/* cross_entropy(logits, targets): dlogits from cross_entropy_grad; targets get nothing */
static void rule_cross_entropy(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g)
{
    kiln_attrs a = {.scalar = n->attrs.scalar, .ignore_index = n->attrs.ignore_index};
    uint32_t in[3] = {in_k(n, 0), in_k(n, 1), g};
    if (ad_wants(c, n, 0)) ad_give(c, n, 0, ad_op(c, KILN_OP_CROSS_ENTROPY_GRAD, in, 3, &a));
}

/* ---- the table ------------------------------------------------------------------------------------ */

const ad_rule kiln_grad_rules[KILN_OP_COUNT] = {
    [KILN_OP_ADD] = rule_add,
    [KILN_OP_SUB] = rule_sub,
    [KILN_OP_MUL] = rule_mul,
    [KILN_OP_DIV] = rule_div,
    [KILN_OP_MAXIMUM] = rule_maximum,
    [KILN_OP_MINIMUM] = rule_minimum,
    [KILN_OP_CAST] = rule_cast,
    [KILN_OP_POW] = rule_pow,
    [KILN_OP_WHERE] = rule_where,

    [KILN_OP_NEG] = rule_neg,
    [KILN_OP_EXP] = rule_exp,
    [KILN_OP_LOG] = rule_log,
    [KILN_OP_SQRT] = rule_sqrt,
    [KILN_OP_RSQRT] = rule_rsqrt,
    [KILN_OP_ABS] = rule_abs,
    [KILN_OP_SQUARE] = rule_square,
    [KILN_OP_RECIP] = rule_recip,
    [KILN_OP_TANH] = rule_tanh,
    [KILN_OP_SIGMOID] = rule_sigmoid,
    [KILN_OP_RELU] = rule_relu,
    [KILN_OP_SILU] = rule_silu,
    [KILN_OP_GELU] = rule_gelu,
    [KILN_OP_GELU_TANH] = rule_gelu_tanh,
    [KILN_OP_ERF] = rule_erf,
    [KILN_OP_SCALE] = rule_scale,
    [KILN_OP_DROPOUT] = rule_dropout,

    [KILN_OP_SUM] = rule_sum,
    [KILN_OP_MEAN] = rule_mean,
    [KILN_OP_MAX] = rule_max,

    [KILN_OP_MATMUL] = rule_matmul,

    [KILN_OP_RESHAPE] = rule_reshape,
    [KILN_OP_TRANSPOSE] = rule_transpose,
    [KILN_OP_SLICE] = rule_slice,
    [KILN_OP_CONCAT] = rule_concat,
    [KILN_OP_BROADCAST] = rule_broadcast,
    [KILN_OP_GATHER] = rule_gather,
    [KILN_OP_UNSLICE] = rule_unslice,
    [KILN_OP_SCATTER_ADD] = rule_scatter_add,
    [KILN_OP_UPDATE_SLICE] = rule_update_slice,

    [KILN_OP_SOFTMAX] = rule_softmax,
    [KILN_OP_LOG_SOFTMAX] = rule_log_softmax,
    [KILN_OP_LAYERNORM] = rule_layernorm,
    [KILN_OP_ATTENTION] = rule_attention,
    [KILN_OP_CROSS_ENTROPY] = rule_cross_entropy,

    /* no rule: the ops of kiln_grad_none below */
};

/* Ops through which no gradient flows, on purpose: sources (input, param, state,
 * constant, iota), comparisons (piecewise constant), and the gradient composites (no
 * second derivatives). (cast has a rule: f32 to f32 is the identity; i32 values carry
 * no gradient, so the casts to and from i32 never ask for one.)
 * Every other op needs a rule; autodiff refuses a graph that needs a missing one. */
const bool kiln_grad_none[KILN_OP_COUNT] = {
    [KILN_OP_INPUT] = true,     [KILN_OP_PARAM] = true,          [KILN_OP_STATE] = true,
    [KILN_OP_CONSTANT] = true,  [KILN_OP_IOTA] = true,           [KILN_OP_LT] = true,
    [KILN_OP_GT] = true,        [KILN_OP_EQ] = true,
    [KILN_OP_LAYERNORM_GRAD] = true, [KILN_OP_ATTENTION_GRAD] = true, [KILN_OP_CROSS_ENTROPY_GRAD] = true,
    [KILN_OP_ATTENTION_LSE] = true,
};
