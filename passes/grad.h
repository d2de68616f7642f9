/* grad.h — private to passes/autodiff.c (the pass) and passes/grad_rules.c (one
 * vector-Jacobian rule per op).
 *
 * A rule sees the forward node y (a copy: building nodes may move the node array), the
 * cotangent g of y (a node of y's type) and, for each input k that needs a gradient
 * (ad_wants), builds the input's share of d loss / d input with the ad_* builders below
 * and hands it to ad_give, which sums the shares of every use of a value. Builders take
 * and return node ids and pass KILN_NONE through, so a rule needs no error handling: a
 * node the graph refuses (a gradient too large to hold) was reported by kiln_graph_add
 * and the pass fails at the end.
 */
#ifndef KILN_GRAD_H
#define KILN_GRAD_H

#include "passes.h"

typedef struct ad_ctx {
    kiln_graph *g;
    kiln_diags *d;
    uint32_t n_fwd;          /* the nodes that existed before the pass: only they get cotangents */
    uint32_t *ct;            /* per forward node: the sum of its cotangents so far, or KILN_NONE */
    unsigned char *active;   /* per forward node: on a differentiable path from a wrt node to the loss */
    const char *origin;      /* the origin of the forward node whose rule runs (new nodes get it) */
    uint32_t zero, one;      /* f32[] constants 0 and 1, made on first use */
} ad_ctx;

/* The rule of one op; NULL in the table = not differentiable (its inputs get nothing). */
typedef void (*ad_rule)(ad_ctx *c, uint32_t y, const kiln_node *n, uint32_t g);
extern const ad_rule kiln_grad_rules[KILN_OP_COUNT];
/* Ops that deliberately have no rule (grad_rules.c); every other op must have one. */
extern const bool kiln_grad_none[KILN_OP_COUNT];

/* Whether input k of n needs a gradient in this pass (it lies on a path to a wrt node). */
bool ad_wants(const ad_ctx *c, const kiln_node *n, uint32_t k);
/* Adds `grad` (of the input's type) to the cotangent of input k of n. */
void ad_give(ad_ctx *c, const kiln_node *n, uint32_t k, uint32_t grad);

/* ---- builders (autodiff.c) -------------------------------------------------------------- */

uint32_t ad_op(ad_ctx *c, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a);
uint32_t ad_op1(ad_ctx *c, kiln_op op, uint32_t x);
uint32_t ad_op2(ad_ctx *c, kiln_op op, uint32_t x, uint32_t y);
uint32_t ad_where(ad_ctx *c, uint32_t cond, uint32_t x, uint32_t y);
uint32_t ad_scale(ad_ctx *c, uint32_t x, double by);
/* An f32 scalar constant (0 and 1 are shared). */
uint32_t ad_scalar(ad_ctx *c, double v);
/* A constant of type t filled with v. */
uint32_t ad_fill(ad_ctx *c, const kiln_type *t, double v);
/* x reshaped to the type of node `like` (nothing when they agree). */
uint32_t ad_reshape_like(ad_ctx *c, uint32_t x, uint32_t like);
/* Σ x over `axes` (sorted), keeping them as 1s when keepdims. */
uint32_t ad_sum(ad_ctx *c, uint32_t x, const int64_t *axes, int n_axes, bool keepdims);
/* The one helper of every broadcasting rule: g (of a broadcast result's shape) summed
 * over the dims along which node `to` was broadcast — its missing leading dims and its
 * size-1 dims — and reshaped to `to`'s type. */
uint32_t ad_unbroadcast(ad_ctx *c, uint32_t g, uint32_t to);
/* The inverse for reductions: g, the cotangent of a reduction of x over `axes` (with or
 * without keepdims), reshaped to keepdims form (the dims of x with 1s on the axes). */
uint32_t ad_keepdims(ad_ctx *c, uint32_t g, uint32_t x, const int64_t *axes, int n_axes);

#endif
