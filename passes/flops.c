/* flops.c — FLOP counts for `kiln check` and `kiln bench`.
 *
 * The convention is the one papers and llm.c use: a matmul of (M,K)·(K,N) is 2·M·N·K;
 * elementwise ops cost one per output element whatever the function; reductions one per
 * input element; composites the sum of their obvious parts. Attention counts the full
 * T×S score matrix even when causal (what a dense kernel computes). */
#include "passes.h"

#include <stdlib.h>

static int64_t numel(const kiln_type *t) { return kiln_type_numel(t); }

/* ---- composite ops: one row each ----------------------------------------------------- */

typedef int64_t (*composite_flops_fn)(const kiln_graph *g, const kiln_node *n);

static int64_t softmax_flops(const kiln_graph *g, const kiln_node *n)
{
    return 5 * numel(&n->type);   /* max, sub, exp, sum, div */
}

static int64_t layernorm_flops(const kiln_graph *g, const kiln_node *n)
{
    return 8 * numel(&n->type);   /* mean, var (sub, square, sum), normalise, scale, shift */
}

static int64_t layernorm_grad_flops(const kiln_graph *g, const kiln_node *n)
{
    return 14 * numel(&n->type);  /* the statistics again, ĝ, two row means, the combination */
}

static int64_t cross_entropy_flops(const kiln_graph *g, const kiln_node *n)
{
    return 5 * numel(&g->nodes[n->in[0]].type);
}

static int64_t attention_flops(const kiln_graph *g, const kiln_node *n)
{
    const kiln_type *out = &n->type;
    const kiln_type *q = &g->nodes[n->in[0]].type, *k = &g->nodes[n->in[1]].type;
    int r = q->rank;
    int64_t rows = numel(q) / q->dims[r - 1];   /* batch · heads · T */
    int64_t s = k->dims[r - 2], dh = q->dims[r - 1], dv = out->dims[r - 1];
    if (q->dims[r - 1] == 0) rows = numel(out) / (dv ? dv : 1);
    return rows * s * (2 * dh + 2 * dv + 5);
}

/* counted as 0, as it always was: the attention it is computed with counts the scores */
static int64_t attention_lse_flops(const kiln_graph *g, const kiln_node *n) { return 0; }

static int64_t attention_grad_flops(const kiln_graph *g, const kiln_node *n)
{
    /* the forward's scores and softmax, then g·vᵀ and one product for the gradient */
    const kiln_type *q = &g->nodes[n->in[0]].type, *k = &g->nodes[n->in[1]].type;
    const kiln_type *v = &g->nodes[n->in[2]].type;
    int r = q->rank;
    int64_t rows = numel(q) / (q->dims[r - 1] ? q->dims[r - 1] : 1);
    int64_t s = k->dims[r - 2], dh = q->dims[r - 1], dv = v->dims[r - 1];
    return rows * s * (4 * dh + 2 * dv + 8);
}

/* Every composite op has a row (kiln_node_flops asserts it): a new composite must say
 * what it costs rather than count as 0 unseen. */
static const composite_flops_fn composite_flops[KILN_OP_COUNT] = {
    [KILN_OP_SOFTMAX] = softmax_flops,
    [KILN_OP_LOG_SOFTMAX] = softmax_flops,
    [KILN_OP_LAYERNORM] = layernorm_flops,
    [KILN_OP_LAYERNORM_GRAD] = layernorm_grad_flops,
    [KILN_OP_CROSS_ENTROPY] = cross_entropy_flops,
    [KILN_OP_CROSS_ENTROPY_GRAD] = cross_entropy_flops,
    [KILN_OP_ATTENTION] = attention_flops,
    [KILN_OP_ATTENTION_LSE] = attention_lse_flops,
    [KILN_OP_ATTENTION_GRAD] = attention_grad_flops,
};

int64_t kiln_node_flops(const kiln_graph *g, uint32_t id)
{
    const kiln_node *n = &g->nodes[id];
    const kiln_type *out = &n->type;
    switch (kiln_op_table[n->op].kind) {
    case KILN_KIND_SOURCE:
    case KILN_KIND_LAYOUT:
        return 0;
    case KILN_KIND_ELEMENTWISE:
        return n->op == KILN_OP_CAST ? 0 : numel(out);
    case KILN_KIND_REDUCTION:
        return numel(&g->nodes[n->in[0]].type);
    case KILN_KIND_MATMUL: {
        const kiln_type *a = &g->nodes[n->in[0]].type;
        int64_t k = n->attrs.transpose_a ? a->dims[a->rank - 2] : a->dims[a->rank - 1];
        return 2 * numel(out) * k;
    }
    case KILN_KIND_COMPOSITE:
        break;
    }
    KILN_ASSERT(composite_flops[n->op] != NULL);
    return composite_flops[n->op](g, n);
}

int64_t kiln_graph_flops(const kiln_graph *g)
{
    /* only what the outputs need: mark backwards from them */
    unsigned char *live = calloc(g->n_nodes ? g->n_nodes : 1, 1);
    KILN_ASSERT(live != NULL);
    kiln_graph_live(g, 0, live);
    int64_t total = 0;
    for (uint32_t id = 0; id < g->n_nodes; id++)
        if (live[id]) total += kiln_node_flops(g, id);
    free(live);
    return total;
}
