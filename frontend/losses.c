/* losses.c — the `losses` entries of SPEC 1.3, each expanded into a scalar node.
 *
 * model.c resolves a loss's `in` (which may name inputs directly) and its `weight`;
 * this file checks the operands, reads the loss's own attributes and builds the value.
 * cross_entropy stays one composite IR op (it has its own kernel and gradient); the
 * others are written with primitive ops, so autodiff and fusion need nothing new:
 *
 *   mse        mean((a - b)²)
 *   bce_logits mean(max(x, 0) - x·t + log(1 + exp(-|x|)))      (never exp of a positive)
 *   infonce    â = a / max(‖a‖₂, 1e-12) per row (as torch.nn.functional.normalize),
 *              logits = â·b̂ᵀ / τ, CE against the diagonal (iota); symmetric averages
 *              CE(logits) and CE(logitsᵀ) as CLIP does.
 */
#include <string.h>

#include "fe.h"

/* The operands are usable: `want` of them, none from a failed layer. Each loss reads its
 * attributes before calling this, so they are checked even when an operand failed. */
static bool operands_ok(fe_ctx *c, fe_node *n, int want)
{
    if (n->n_in != want) {
        fe_error(c, n, "in", "%s takes %d inputs, got %d", n->op, want, n->n_in);
        return false;
    }
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] == KILN_NONE) return false; /* reported where it failed */
    return true;
}

static const char *type_str(fe_ctx *c, uint32_t id)
{
    char buf[160];
    return fe_fmt(c, "%s", kiln_type_str(fe_type(c, id), buf, sizeof buf));
}

/* Both operands f32 with equal shapes (mse, bce_logits: no silent broadcasting). */
static bool check_same(fe_ctx *c, fe_node *n, uint32_t a, uint32_t b)
{
    const kiln_type *ta = fe_type(c, a), *tb = fe_type(c, b);
    if (ta->dtype != KILN_F32 || tb->dtype != KILN_F32) {
        fe_error(c, n, "in", "%s needs f32 operands, got %s and %s (cast explicitly)", n->op, type_str(c, a),
                 type_str(c, b));
        return false;
    }
    if (!kiln_type_equal(ta, tb)) {
        fe_error(c, n, "in", "%s needs operands of equal shapes, got %s and %s", n->op, type_str(c, a),
                 type_str(c, b));
        return false;
    }
    return true;
}

/* Mean over every axis: a scalar. */
static uint32_t mean_all(fe_ctx *c, const fe_node *n, uint32_t x)
{
    if (x == KILN_NONE) return KILN_NONE;
    kiln_attrs a = {0};
    a.n_axes = fe_type(c, x)->rank;
    for (int i = 0; i < a.n_axes; i++) a.axes[i] = i;
    return fe_add(c, n, KILN_OP_MEAN, &x, 1, &a, NULL);
}

static uint32_t scalar_f32(fe_ctx *c, const fe_node *n, float v)
{
    return fe_const_f32(c, n, 0, NULL, &v, 1);
}

static uint32_t cross_entropy(fe_ctx *c, const fe_node *n, uint32_t logits, uint32_t targets, int64_t ignore,
                              double smoothing)
{
    kiln_attrs a = {0};
    a.ignore_index = ignore;
    a.scalar = smoothing;
    uint32_t in[2] = {logits, targets};
    return fe_add(c, n, KILN_OP_CROSS_ENTROPY, in, 2, &a, NULL);
}

static uint32_t expand_cross_entropy(fe_ctx *c, fe_node *n)
{
    int64_t ignore;
    double smoothing;
    bool ok = fe_get_int(c, n, "ignore_index", -100, &ignore);
    ok &= fe_get_num(c, n, "label_smoothing", 0, &smoothing);
    if (ok && (ignore < INT32_MIN || ignore > INT32_MAX)) {
        fe_error(c, n, "ignore_index", "%lld does not fit in i32 (targets are i32)", (long long)ignore);
        ok = false;
    }
    if (ok && !(smoothing >= 0 && smoothing <= 1)) {
        fe_error(c, n, "label_smoothing", "%g must lie in [0, 1]", smoothing);
        ok = false;
    }
    if (!operands_ok(c, n, 2) || !ok) return KILN_NONE;
    return cross_entropy(c, n, n->in[0], n->in[1], ignore, smoothing);
}

/* x / max(‖x‖₂, 1e-12) along the last axis. */
static uint32_t l2_normalize(fe_ctx *c, const fe_node *n, uint32_t x)
{
    kiln_attrs a = {0};
    a.n_axes = 1;
    a.axes[0] = 1;
    a.keepdims = true;
    /* x / max(‖x‖, 1e-12) as F.normalize, written as x / √max(Σx², 1e-24): the same
     * values, and the clamp comes before the square root, so a row of zeros (a mean pool
     * over a fully masked row) gets F.normalize's finite gradient g/1e-12 rather than
     * 0·∞ = NaN from √'s derivative at 0 */
    uint32_t sq = fe_unary(c, n, KILN_OP_SQUARE, x);
    uint32_t ss = fe_add(c, n, KILN_OP_SUM, &sq, 1, &a, NULL);
    uint32_t denom = fe_unary(c, n, KILN_OP_SQRT, fe_binary(c, n, KILN_OP_MAXIMUM, ss, scalar_f32(c, n, 1e-24f)));
    return fe_binary(c, n, KILN_OP_DIV, x, denom);
}

static uint32_t expand_infonce(fe_ctx *c, fe_node *n)
{
    double tau;
    bool symmetric;
    bool ok = fe_get_num(c, n, "temperature", 0.07, &tau);
    ok &= fe_get_bool(c, n, "symmetric", true, &symmetric);
    if (ok && !(tau > 0)) {
        fe_error(c, n, "temperature", "%g must be positive", tau);
        ok = false;
    }
    if (!operands_ok(c, n, 2) || !ok) return KILN_NONE;
    uint32_t a = n->in[0], b = n->in[1];
    const kiln_type *ta = fe_type(c, a), *tb = fe_type(c, b);
    if (ta->rank != 2 || !kiln_type_equal(ta, tb) || ta->dtype != KILN_F32) {
        fe_error(c, n, "in", "infonce needs a and b of the same shape (B, D) in f32, got %s and %s", type_str(c, a),
                 type_str(c, b));
        return KILN_NONE;
    }
    int64_t batch = ta->dims[0];

    kiln_attrs mm = {0};
    mm.transpose_b = true;
    uint32_t ab[2] = {l2_normalize(c, n, a), l2_normalize(c, n, b)};
    uint32_t logits = fe_scale(c, n, fe_add(c, n, KILN_OP_MATMUL, ab, 2, &mm, NULL), 1.0 / tau); /* (B, B) */

    kiln_attrs io = {0};
    io.dtype = KILN_I32;
    io.rank = 1;
    io.shape[0] = batch;
    uint32_t targets = fe_add(c, n, KILN_OP_IOTA, NULL, 0, &io, NULL); /* 0, 1, …, B-1 */

    uint32_t loss = cross_entropy(c, n, logits, targets, -100, 0);
    if (!symmetric) return loss;
    static const int64_t swap[2] = {1, 0};
    uint32_t back = cross_entropy(c, n, fe_transpose(c, n, logits, swap), targets, -100, 0);
    return fe_scale(c, n, fe_binary(c, n, KILN_OP_ADD, loss, back), 0.5);
}

static uint32_t expand_mse(fe_ctx *c, fe_node *n)
{
    if (!operands_ok(c, n, 2) || !check_same(c, n, n->in[0], n->in[1])) return KILN_NONE;
    uint32_t d = fe_binary(c, n, KILN_OP_SUB, n->in[0], n->in[1]);
    return mean_all(c, n, fe_unary(c, n, KILN_OP_SQUARE, d));
}

static uint32_t expand_bce_logits(fe_ctx *c, fe_node *n)
{
    if (!operands_ok(c, n, 2) || !check_same(c, n, n->in[0], n->in[1])) return KILN_NONE;
    uint32_t x = n->in[0], t = n->in[1];
    /* max(x, 0) as maximum, not relu: at x = 0 the kinks of max and |x| cancel in the
     * value, and maximum's tie rule (half each way) makes them cancel in the gradient too,
     * giving torch's sigmoid(0) − t; relu's 0 there gave −t (a zero-initialised head) */
    uint32_t pos = fe_binary(c, n, KILN_OP_MAXIMUM, x, scalar_f32(c, n, 0.0f));
    uint32_t xt = fe_binary(c, n, KILN_OP_MUL, x, t);
    uint32_t e = fe_unary(c, n, KILN_OP_EXP, fe_unary(c, n, KILN_OP_NEG, fe_unary(c, n, KILN_OP_ABS, x)));
    uint32_t soft = fe_unary(c, n, KILN_OP_LOG, fe_binary(c, n, KILN_OP_ADD, e, scalar_f32(c, n, 1.0f)));
    uint32_t per = fe_binary(c, n, KILN_OP_ADD, fe_binary(c, n, KILN_OP_SUB, pos, xt), soft);
    return mean_all(c, n, per);
}

static const struct {
    const char *op;
    uint32_t (*expand)(fe_ctx *, fe_node *);
} losses[] = {
    {"cross_entropy", expand_cross_entropy},
    {"infonce", expand_infonce},
    {"mse", expand_mse},
    {"bce_logits", expand_bce_logits},
};

uint32_t fe_expand_loss(fe_ctx *c, fe_node *n)
{
    const char *names[4];
    for (int i = 0; i < 4; i++) {
        names[i] = losses[i].op;
        if (strcmp(n->op, losses[i].op) == 0) return losses[i].expand(c, n);
    }
    const char *hint = fe_closest(n->op, names, 4);
    if (hint) fe_error(c, n, "op", "unknown loss '%s' (did you mean '%s'?)", n->op, hint);
    else fe_error(c, n, "op", "unknown loss '%s' (expected cross_entropy, infonce, mse or bce_logits)",
                  fe_short(c, n->op));
    return KILN_NONE;
}
