/* norm.c — layernorm and rmsnorm over the last axis.
 *
 * layernorm stays the composite IR op (its own kernel and gradient rule: the mean and
 * variance are computed once per row); rmsnorm is short enough to expand into
 * primitives, x · rsqrt(mean(x², −1) + eps) · w, which the fusion pass turns back into
 * one row-wise kernel. Both take dim from the input's last axis; weights start at 1 and
 * biases at 0 (SPEC 1, `init`). eps defaults are PyTorch's nn.LayerNorm (1e-5) and the
 * common RMSNorm (1e-6, as in LLaMA).
 */
#include "modules.h"

/* The last dim of x, or -1 after reporting that x has none. */
static int64_t last_dim(fe_ctx *c, const fe_node *n, uint32_t x, const char *what)
{
    const kiln_type *t = fe_type(c, x);
    if (t->rank < 1) {
        fe_error(c, n, NULL, "%s normalises over the last axis, but its input is a scalar", what);
        return -1;
    }
    return t->dims[t->rank - 1];
}

static bool get_eps(fe_ctx *c, fe_node *n, double def, double *eps)
{
    if (!fe_get_num(c, n, "eps", def, eps)) return false;
    if (!(*eps >= 0)) {
        fe_error(c, n, "eps", "must be non-negative, got %g", *eps);
        return false;
    }
    return true;
}

uint32_t fe_build_layernorm(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, double eps)
{
    if (x == KILN_NONE) return KILN_NONE;
    int64_t d = last_dim(c, n, x, "layernorm");
    if (d < 0) return KILN_NONE;
    uint32_t w = fe_param(c, n, fe_fmt(c, "%s.weight", prefix), 1, &d, KILN_INIT_ONES, 0); /* (d) */
    uint32_t b = fe_param(c, n, fe_fmt(c, "%s.bias", prefix), 1, &d, KILN_INIT_ZEROS, 0);  /* (d) */
    kiln_attrs a = {.scalar = eps};
    return fe_add(c, n, KILN_OP_LAYERNORM, (uint32_t[]){x, w, b}, 3, &a, NULL); /* like x */
}

uint32_t fe_expand_layernorm(fe_ctx *c, fe_node *n)
{
    double eps;
    if (!get_eps(c, n, 1e-5, &eps) || !fe_inputs_ok(n)) return KILN_NONE;
    return fe_build_layernorm(c, n, fe_prefix(c, n), n->in[0], eps);
}

uint32_t fe_expand_rmsnorm(fe_ctx *c, fe_node *n)
{
    double eps;
    if (!get_eps(c, n, 1e-6, &eps) || !fe_inputs_ok(n)) return KILN_NONE;
    uint32_t x = n->in[0]; /* (…, d) */
    int64_t d = last_dim(c, n, x, "rmsnorm");
    if (d < 0) return KILN_NONE;
    uint32_t w = fe_param(c, n, fe_fmt(c, "%s.weight", fe_prefix(c, n)), 1, &d, KILN_INIT_ONES, 0); /* (d) */

    int rank = fe_type(c, x)->rank;
    kiln_attrs mean = {.n_axes = 1, .axes = {rank - 1}, .keepdims = true};
    uint32_t sq = fe_unary(c, n, KILN_OP_SQUARE, x);
    uint32_t ms = fe_add(c, n, KILN_OP_MEAN, &sq, 1, &mean, NULL); /* (…, 1) */
    float e = (float)eps;
    uint32_t eps_c = fe_const_f32(c, n, 0, (int64_t[]){0}, &e, 1); /* [] */
    uint32_t inv = fe_unary(c, n, KILN_OP_RSQRT, fe_binary(c, n, KILN_OP_ADD, ms, eps_c)); /* (…, 1) */
    uint32_t y = fe_binary(c, n, KILN_OP_MUL, x, inv); /* (…, d) */
    return fe_binary(c, n, KILN_OP_MUL, y, w);
}
