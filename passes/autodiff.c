/* autodiff.c — reverse-mode automatic differentiation as a graph-to-graph pass.
 *
 * Design (tinygrad's gradient.py, llm.c's backward pass): the forward graph stays as it
 * is, and the pass appends the backward graph after it, built with kiln_graph_add like
 * any other nodes, so it is verified, planned and compiled like the forward graph.
 *
 *   1. Mark the nodes that matter: those on a differentiable path from one of the wrt
 *      nodes to the loss (forward from the wrt nodes, backward from the loss, both along
 *      edges that can carry a gradient — ad_differentiable). Nothing else gets a
 *      backward node, so asking for the gradient of one parameter does not build the
 *      gradients of all the others.
 *   2. Seed the loss's cotangent with 1 and walk the forward nodes from the loss down
 *      (the node array is topologically sorted, so when a node is reached every use of
 *      it has already contributed). Each marked node's rule (grad_rules.c, one per op)
 *      turns the node's cotangent into its inputs' shares, and ad_give sums the shares
 *      of a value used more than once.
 *   3. The gradient of wrt[i] is its summed cotangent, or a zeros constant of its type
 *      when the loss does not depend on it.
 *
 * i32 values never get gradients (indices, targets, masks); comparisons and cast have
 * no rule, so nothing flows through them. The builders below pass KILN_NONE through, so
 * a refused node (a gradient too large to hold) fails the pass with the builder's
 * diagnostic instead of crashing it.
 */
#include <stdlib.h>
#include <string.h>

#include "grad.h"

/* ---- which inputs carry gradients ------------------------------------------------------ */

/* Whether input k of n can carry a gradient at all: the op has a rule, both values are
 * f32, and k is not one of the op's index, target, mask or condition inputs. */
static bool ad_differentiable(const kiln_graph *g, const kiln_node *n, uint32_t k)
{
    if (!kiln_grad_rules[n->op]) return false;
    if (n->type.dtype != KILN_F32 || g->nodes[n->in[k]].type.dtype != KILN_F32) return false;
    switch (n->op) {
    case KILN_OP_WHERE: return k != 0;                                 /* the condition */
    case KILN_OP_GATHER: case KILN_OP_SCATTER_ADD: return k == 0;      /* the indices */
    case KILN_OP_CROSS_ENTROPY: return k == 0;                         /* the targets */
    case KILN_OP_ATTENTION: return !(n->attrs.has_mask && k == 3);     /* the key mask */
    default: return true;
    }
}

bool ad_wants(const ad_ctx *c, const kiln_node *n, uint32_t k)
{
    return c->active[n->in[k]] && ad_differentiable(c->g, n, k);
}

void ad_give(ad_ctx *c, const kiln_node *n, uint32_t k, uint32_t grad)
{
    uint32_t x = n->in[k];
    if (grad != KILN_NONE) /* a rule that builds the wrong type is a bug, not a user error */
        KILN_ASSERT(kiln_type_equal(&c->g->nodes[grad].type, &c->g->nodes[x].type));
    if (c->ct[x] == KILN_NONE) c->ct[x] = grad;
    else c->ct[x] = ad_op2(c, KILN_OP_ADD, c->ct[x], grad);
}

/* ---- builders --------------------------------------------------------------------------- */

uint32_t ad_op(ad_ctx *c, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a)
{
    for (uint32_t i = 0; i < n_in; i++)
        if (in[i] == KILN_NONE) return KILN_NONE;
    return kiln_graph_add(c->g, op, in, n_in, a, NULL, c->origin, c->d);
}

uint32_t ad_op1(ad_ctx *c, kiln_op op, uint32_t x) { return ad_op(c, op, &x, 1, NULL); }

uint32_t ad_op2(ad_ctx *c, kiln_op op, uint32_t x, uint32_t y)
{
    uint32_t in[2] = {x, y};
    return ad_op(c, op, in, 2, NULL);
}

uint32_t ad_where(ad_ctx *c, uint32_t cond, uint32_t x, uint32_t y)
{
    uint32_t in[3] = {cond, x, y};
    return ad_op(c, KILN_OP_WHERE, in, 3, NULL);
}

uint32_t ad_scale(ad_ctx *c, uint32_t x, double by)
{
    kiln_attrs a = {.scalar = by};
    return ad_op(c, KILN_OP_SCALE, &x, 1, &a);
}

uint32_t ad_fill(ad_ctx *c, const kiln_type *t, double v)
{
    kiln_attrs a = {.dtype = t->dtype, .rank = t->rank, .n_values = 1};
    memcpy(a.shape, t->dims, sizeof a.shape);
    float f = (float)v;
    int32_t i = (int32_t)v;
    a.values = t->dtype == KILN_I32 ? (const void *)&i : (const void *)&f;
    return ad_op(c, KILN_OP_CONSTANT, NULL, 0, &a);
}

uint32_t ad_scalar(ad_ctx *c, double v)
{
    kiln_type t = {KILN_F32, 0, {0}};
    /* the constants every other rule uses are made once (their origin is the first user's) */
    if (v == 0 && c->zero != KILN_NONE) return c->zero;
    if (v == 1 && c->one != KILN_NONE) return c->one;
    uint32_t id = ad_fill(c, &t, v);
    if (v == 0) c->zero = id;
    if (v == 1) c->one = id;
    return id;
}

uint32_t ad_reshape_like(ad_ctx *c, uint32_t x, uint32_t like)
{
    if (x == KILN_NONE) return x;
    kiln_type t = c->g->nodes[like].type;
    if (kiln_type_equal(&c->g->nodes[x].type, &t)) return x;
    kiln_attrs a = {.rank = t.rank};
    memcpy(a.shape, t.dims, sizeof a.shape);
    return ad_op(c, KILN_OP_RESHAPE, &x, 1, &a);
}

uint32_t ad_sum(ad_ctx *c, uint32_t x, const int64_t *axes, int n_axes, bool keepdims)
{
    kiln_attrs a = {.n_axes = n_axes, .keepdims = keepdims};
    memcpy(a.axes, axes, (size_t)n_axes * sizeof *axes);
    return ad_op(c, KILN_OP_SUM, &x, 1, &a);
}

uint32_t ad_unbroadcast(ad_ctx *c, uint32_t g, uint32_t to)
{
    if (g == KILN_NONE) return g;
    kiln_type from = c->g->nodes[g].type, t = c->g->nodes[to].type;
    if (kiln_type_equal(&from, &t)) return g;
    int64_t axes[KILN_MAX_RANK];
    int n_axes = 0, lead = from.rank - t.rank;
    KILN_ASSERT(lead >= 0);
    for (int d = 0; d < from.rank; d++)
        if (d < lead || (t.dims[d - lead] == 1 && from.dims[d] != 1)) axes[n_axes++] = d;
    if (n_axes) g = ad_sum(c, g, axes, n_axes, false);
    return ad_reshape_like(c, g, to);
}

uint32_t ad_keepdims(ad_ctx *c, uint32_t g, uint32_t x, const int64_t *axes, int n_axes)
{
    if (g == KILN_NONE) return g;
    kiln_type t = c->g->nodes[x].type;
    for (int i = 0; i < n_axes; i++) t.dims[axes[i]] = 1;
    if (kiln_type_equal(&c->g->nodes[g].type, &t)) return g;
    kiln_attrs a = {.rank = t.rank};
    memcpy(a.shape, t.dims, sizeof a.shape);
    return ad_op(c, KILN_OP_RESHAPE, &g, 1, &a);
}

/* ---- the pass ----------------------------------------------------------------------------- */

/* Marks active[] (step 1 of the file comment). */
static void mark_active(const kiln_graph *g, uint32_t loss, const uint32_t *wrt, uint32_t n_wrt,
                        unsigned char *active)
{
    uint32_t n = g->n_nodes;
    unsigned char *from = calloc(n, 1), *to = calloc(n, 1);
    KILN_ASSERT(from && to);
    for (uint32_t i = 0; i < n_wrt; i++) from[wrt[i]] = 1;
    for (uint32_t id = 0; id < n; id++) {
        const kiln_node *node = &g->nodes[id];
        for (uint32_t k = 0; k < node->n_in && !from[id]; k++)
            if (from[node->in[k]] && ad_differentiable(g, node, k)) from[id] = 1;
    }
    to[loss] = 1;
    for (uint32_t id = loss + 1; id-- > 0;) {
        const kiln_node *node = &g->nodes[id];
        if (!to[id]) continue;
        for (uint32_t k = 0; k < node->n_in; k++)
            if (ad_differentiable(g, node, k)) to[node->in[k]] = 1;
    }
    for (uint32_t id = 0; id < n; id++) active[id] = from[id] && to[id];
    free(from);
    free(to);
}

bool kiln_autodiff(kiln_graph *g, uint32_t loss, const uint32_t *wrt, uint32_t n_wrt, uint32_t *grads,
                   kiln_diags *d)
{
    int before = d->n + d->dropped;
    char buf[160];
    if (loss >= g->n_nodes) {
        kiln_diags_add(d, NULL, 0, 0, "autodiff", "the loss %%%u is not a node of the graph", loss);
        return false;
    }
    const kiln_type *lt = &g->nodes[loss].type;
    if (lt->dtype != KILN_F32 || lt->rank != 0) {
        kiln_diags_add(d, NULL, 0, 0, "autodiff", "the loss must be a scalar f32, not %s",
                       kiln_type_str(lt, buf, sizeof buf));
        return false;
    }
    for (uint32_t i = 0; i < n_wrt; i++) {
        grads[i] = KILN_NONE;
        if (wrt[i] >= g->n_nodes)
            kiln_diags_add(d, NULL, 0, 0, "autodiff", "wrt[%u] = %%%u is not a node of the graph", i, wrt[i]);
        else if (g->nodes[wrt[i]].type.dtype != KILN_F32)
            kiln_diags_add(d, NULL, 0, 0, "autodiff", "wrt[%u] = %%%u is %s: only f32 values have gradients", i,
                           wrt[i], kiln_type_str(&g->nodes[wrt[i]].type, buf, sizeof buf));
    }
    if (d->n + d->dropped != before) return false;

    ad_ctx c = {.g = g, .d = d, .n_fwd = g->n_nodes, .origin = "autodiff", .zero = KILN_NONE, .one = KILN_NONE};
    c.ct = malloc(c.n_fwd * sizeof *c.ct);
    c.active = calloc(c.n_fwd, 1);
    KILN_ASSERT(c.ct && c.active);
    for (uint32_t id = 0; id < c.n_fwd; id++) c.ct[id] = KILN_NONE;
    mark_active(g, loss, wrt, n_wrt, c.active);

    if (c.active[loss]) c.ct[loss] = ad_scalar(&c, 1.0);
    for (uint32_t id = loss + 1; id-- > 0;) {
        if (!c.active[id] || c.ct[id] == KILN_NONE) continue;
        if (!kiln_grad_rules[g->nodes[id].op]) {
            /* a missing rule would silently freeze everything upstream */
            if (!kiln_grad_none[g->nodes[id].op]) {
                const kiln_node *n = &g->nodes[id];
                kiln_diags_add(d, NULL, 0, 0, n->origin ? n->origin : "autodiff",
                               "no gradient rule for op '%s' (node %%%u%s%s): the loss depends on it through a "
                               "differentiable input", kiln_op_table[n->op].name, id, n->label ? ", " : "",
                               n->label ? n->label : "");
                free(c.ct);
                free(c.active);
                return false;
            }
            continue;
        }
        kiln_node y = g->nodes[id]; /* a copy: the rule's nodes may move the array */
        c.origin = y.origin;
        kiln_grad_rules[y.op](&c, id, &y, c.ct[id]);
    }

    c.origin = "autodiff";
    bool ok = true;
    for (uint32_t i = 0; i < n_wrt; i++) {
        kiln_type t = g->nodes[wrt[i]].type;
        grads[i] = c.ct[wrt[i]] != KILN_NONE ? c.ct[wrt[i]] : ad_fill(&c, &t, 0.0);
        ok &= grads[i] != KILN_NONE;
    }
    free(c.ct);
    free(c.active);
    return ok && d->n + d->dropped == before;
}
