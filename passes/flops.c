/* flops.c — FLOP counts for `kiln check` and `kiln bench`.
 *
 * The convention is the one papers and llm.c use: a matmul of (M,K)·(K,N) is 2·M·N·K;
 * elementwise ops cost one per output element whatever the function; reductions one per
 * input element; composites the sum of their obvious parts. Attention counts the full
 * T×S score matrix even when causal (what a dense kernel computes). */
#include "passes.h"

#include <stdlib.h>

static int64_t numel(const kiln_type *t) { return kiln_type_numel(t); }

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
    switch (n->op) {
    case KILN_OP_SOFTMAX:
    case KILN_OP_LOG_SOFTMAX:
        return 5 * numel(out);   /* max, sub, exp, sum, div */
    case KILN_OP_LAYERNORM:
        return 8 * numel(out);   /* mean, var (sub, square, sum), normalise, scale, shift */
    case KILN_OP_LAYERNORM_GRAD:
        return 14 * numel(out);  /* the statistics again, ĝ, two row means, the combination */
    case KILN_OP_CROSS_ENTROPY:
    case KILN_OP_CROSS_ENTROPY_GRAD:
        return 5 * numel(&g->nodes[n->in[0]].type);
    case KILN_OP_ATTENTION_GRAD: {
        /* the forward's scores and softmax, then g·vᵀ and one product for the gradient */
        const kiln_type *q = &g->nodes[n->in[0]].type, *k = &g->nodes[n->in[1]].type;
        const kiln_type *v = &g->nodes[n->in[2]].type;
        int r = q->rank;
        int64_t rows = numel(q) / (q->dims[r - 1] ? q->dims[r - 1] : 1);
        int64_t s = k->dims[r - 2], dh = q->dims[r - 1], dv = v->dims[r - 1];
        return rows * s * (4 * dh + 2 * dv + 8);
    }
    case KILN_OP_ATTENTION: {
        const kiln_type *q = &g->nodes[n->in[0]].type, *k = &g->nodes[n->in[1]].type;
        int r = q->rank;
        int64_t rows = numel(q) / q->dims[r - 1];   /* batch · heads · T */
        int64_t s = k->dims[r - 2], dh = q->dims[r - 1], dv = out->dims[r - 1];
        if (q->dims[r - 1] == 0) rows = numel(out) / (dv ? dv : 1);
        return rows * s * (2 * dh + 2 * dv + 5);
    }
    default:
        return 0;
    }
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
