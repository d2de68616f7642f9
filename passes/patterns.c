/* patterns.c — the graph patterns that fusion and codegen must recognise alike.
 *
 * Design. fuse.c decides which nodes run together; codegen then lowers each kernel and
 * must see in its members exactly the shapes the fuser grouped. Whatever both sides
 * match — which ops count as attention, which activations a GEMM epilogue applies, a
 * constant kept as a global, a matmul that is one GEMM call, a GEMM that can also sum
 * its operand's columns, a rotary embedding and its gradient — is written once, here,
 * and declared in passes.h. None of these functions changes the graph.
 */
#include "passes.h"

/* ---- op sets ---------------------------------------------------------------------------------- */

bool kiln_is_attention_op(kiln_op op)
{
    return op == KILN_OP_ATTENTION || op == KILN_OP_ATTENTION_LSE || op == KILN_OP_ATTENTION_GRAD;
}

bool kiln_is_gemm_activation(kiln_op op)
{
    return op == KILN_OP_RELU || op == KILN_OP_GELU || op == KILN_OP_GELU_TANH || op == KILN_OP_SILU;
}

/* ---- constants ------------------------------------------------------------------------------- */

bool kiln_constant_is_global(const kiln_node *n)
{
    int64_t numel = kiln_type_numel(&n->type);
    return n->op == KILN_OP_CONSTANT && (n->attrs.n_values == numel || numel <= KILN_SPLAT_GLOBAL_MAX);
}

/* ---- rotary position embeddings ---------------------------------------------------------------- */

/* Whether t is a (…, L, dh) f32 table with every other dim 1: row p is position p. */
static bool rope_table(const kiln_graph *g, uint32_t t, int64_t L, int64_t dh)
{
    const kiln_type *tt = &g->nodes[t].type;
    if (tt->dtype != KILN_F32 || tt->rank < 2 || tt->dims[tt->rank - 2] != L || tt->dims[tt->rank - 1] != dh) return false;
    return kiln_type_numel(tt) == L * dh && g->nodes[t].op != KILN_OP_TRANSPOSE && !kiln_is_attention_op(g->nodes[t].op);
}

static bool is_slice_of(const kiln_graph *g, uint32_t id, uint32_t x, int64_t start, int64_t end)
{
    const kiln_node *n = &g->nodes[id];
    return n->op == KILN_OP_SLICE && n->in[0] == x && n->attrs.axis == n->type.rank - 1 && n->attrs.start == start &&
           n->attrs.end == end && n->attrs.step == 1;
}

/* rot·sin with rot = concat(−x[…, h:], x[…, :h]): fills r->x, r->sin and inner[1..5]. */
static bool rope_sin_term(const kiln_graph *g, uint32_t b, const kiln_type *yt, kiln_rope *r)
{
    const kiln_node *bn = &g->nodes[b];
    if (bn->op != KILN_OP_MUL || !kiln_type_equal(&bn->type, yt)) return false;
    int rank = yt->rank;
    int64_t L = yt->dims[rank - 2], dh = yt->dims[rank - 1], h = dh / 2;
    for (int side = 0; side < 2; side++) {
        uint32_t rot = bn->in[side], sn = bn->in[1 - side];
        const kiln_node *c = &g->nodes[rot];
        if (c->op != KILN_OP_CONCAT || c->n_in != 2 || c->attrs.axis != rank - 1 || !kiln_type_equal(&c->type, yt))
            continue;
        const kiln_node *neg = &g->nodes[c->in[0]];
        if (neg->op != KILN_OP_NEG) continue;
        uint32_t x2 = neg->in[0], x1 = c->in[1];
        uint32_t x = g->nodes[x1].op == KILN_OP_SLICE ? g->nodes[x1].in[0] : KILN_NONE;
        if (x == KILN_NONE || !kiln_type_equal(&g->nodes[x].type, yt)) continue;
        if (!is_slice_of(g, x1, x, 0, h) || !is_slice_of(g, x2, x, h, dh) || !rope_table(g, sn, L, dh)) continue;
        r->x = x, r->sin = sn;
        r->inner[1] = b, r->inner[2] = rot, r->inner[3] = c->in[0], r->inner[4] = x1, r->inner[5] = x2;
        return true;
    }
    return false;
}

bool kiln_rope_match(const kiln_graph *g, uint32_t y, kiln_rope *r)
{
    const kiln_node *n = &g->nodes[y];
    const kiln_type *yt = &n->type;
    if (n->op != KILN_OP_ADD || yt->dtype != KILN_F32 || yt->rank < 2) return false;
    int64_t L = yt->dims[yt->rank - 2], dh = yt->dims[yt->rank - 1];
    if (dh < 2 || dh % 2 != 0) return false;
    for (int side = 0; side < 2; side++) {
        uint32_t a = n->in[side], b = n->in[1 - side];
        if (!rope_sin_term(g, b, yt, r)) continue;
        const kiln_node *an = &g->nodes[a];
        if (an->op != KILN_OP_MUL || !kiln_type_equal(&an->type, yt)) continue;
        for (int s2 = 0; s2 < 2; s2++) {
            if (an->in[s2] != r->x || an->in[1 - s2] == r->x || !rope_table(g, an->in[1 - s2], L, dh)) continue;
            r->cos = an->in[1 - s2];
            r->inner[0] = a;
            return true;
        }
    }
    return false;
}

uint32_t kiln_schedule_reads(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t x, uint32_t src[3])
{
    kiln_rope rp;
    if (!s->rope || s->rope[x] != KILN_ROPE_RESULT || !kiln_rope_match(g, x, &rp)) return src[0] = x, 1;
    src[0] = rp.x, src[1] = rp.cos, src[2] = rp.sin;
    return 3;
}

static bool is_unslice_of(const kiln_graph *g, uint32_t id, const kiln_type *t, int64_t start, int64_t end)
{
    const kiln_node *n = &g->nodes[id];
    return n->op == KILN_OP_UNSLICE && kiln_type_equal(&n->type, t) && n->attrs.axis == t->rank - 1 &&
           n->attrs.start == start && n->attrs.end == end && n->attrs.step == 1;
}

/* The three terms of a rotation's gradient, leaves[0..3) and the inner add, from dx. */
static bool rope_grad_terms(const kiln_graph *g, uint32_t dx, uint32_t side, uint32_t leaves[3], uint32_t *t)
{
    const kiln_node *n = &g->nodes[dx];
    uint32_t p = n->in[side], q = n->in[1 - side];
    if (g->nodes[p].op != KILN_OP_ADD || !kiln_type_equal(&g->nodes[p].type, &n->type)) return false;
    leaves[0] = g->nodes[p].in[0], leaves[1] = g->nodes[p].in[1], leaves[2] = q;
    *t = p;
    return true;
}

/* Matches leaves (in any order) as G·cos, unslice(−(G·sin)[:h] at h:), unslice((G·sin)[h:] at :h). */
static bool rope_grad_leaves(const kiln_graph *g, const uint32_t leaves[3], const kiln_type *t, kiln_rope_grad *r)
{
    int64_t L = t->dims[t->rank - 2], dh = t->dims[t->rank - 1], h = dh / 2;
    uint32_t u1 = KILN_NONE, u2 = KILN_NONE, a = KILN_NONE;
    for (int i = 0; i < 3; i++) {
        if (is_unslice_of(g, leaves[i], t, h, dh) && u1 == KILN_NONE) u1 = leaves[i];
        else if (is_unslice_of(g, leaves[i], t, 0, h) && u2 == KILN_NONE) u2 = leaves[i];
        else a = leaves[i];
    }
    if (u1 == KILN_NONE || u2 == KILN_NONE || a == KILN_NONE) return false;
    uint32_t neg = g->nodes[u1].in[0], s2 = g->nodes[u2].in[0];
    if (g->nodes[neg].op != KILN_OP_NEG) return false;
    uint32_t s1 = g->nodes[neg].in[0];
    if (g->nodes[s1].op != KILN_OP_SLICE) return false;
    uint32_t b = g->nodes[s1].in[0];
    if (!is_slice_of(g, s1, b, 0, h) || !is_slice_of(g, s2, b, h, dh)) return false;
    const kiln_node *an = &g->nodes[a], *bn = &g->nodes[b];
    if (an->op != KILN_OP_MUL || bn->op != KILN_OP_MUL || !kiln_type_equal(&an->type, t) || !kiln_type_equal(&bn->type, t))
        return false;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            uint32_t G = an->in[i];
            if (bn->in[j] != G || !kiln_type_equal(&g->nodes[G].type, t)) continue;
            uint32_t cs = an->in[1 - i], sn = bn->in[1 - j];
            if (cs == G || sn == G || !rope_table(g, cs, L, dh) || !rope_table(g, sn, L, dh)) continue;
            *r = (kiln_rope_grad){G, cs, sn, {a, b, s1, s2, neg, u1, u2, KILN_NONE}};
            return true;
        }
    return false;
}

bool kiln_rope_grad_match(const kiln_graph *g, uint32_t dx, kiln_rope_grad *r)
{
    const kiln_node *n = &g->nodes[dx];
    const kiln_type *t = &n->type;
    if (n->op != KILN_OP_ADD || t->dtype != KILN_F32 || t->rank < 2) return false;
    int64_t dh = t->dims[t->rank - 1];
    if (dh < 2 || dh % 2 != 0) return false;
    for (uint32_t side = 0; side < 2; side++) {
        uint32_t leaves[3], inner_add;
        if (!rope_grad_terms(g, dx, side, leaves, &inner_add) || !rope_grad_leaves(g, leaves, t, r)) continue;
        r->inner[7] = inner_add;
        return true;
    }
    return false;
}

/* ---- GEMMs ------------------------------------------------------------------------------------ */

bool kiln_matmul_is_one_gemm(const kiln_graph *g, const kiln_node *n)
{
    if (n->op != KILN_OP_MATMUL || n->type.dtype != KILN_F32) return false;
    if (n->type.rank == 2) return true;
    const kiln_type *at = &g->nodes[n->in[0]].type, *bt = &g->nodes[n->in[1]].type;
    if (n->attrs.transpose_a || at->rank != n->type.rank) return false;
    for (int d = 0; d < bt->rank - 2; d++)
        if (bt->dims[d] != 1) return false;
    return true;
}

/* Whether the 2-D matmul mm reads the memory of y (through reshapes), as rows of n values,
 * as the operand it walks along k: op(A) = Yᵀ (transpose_a: the rows of op(A) are the
 * columns of Y, the (K, n) matrix of y's memory) or op(B) = Y (no transpose_b: the
 * columns of op(B) are Y's). Then Y's column sums are the sums along k of that operand's
 * lanes — what the weight gradient dW = dyᵀ·x (or xᵀ·dy) reads anyway — and a kernel that
 * runs the GEMM can produce them too. */
bool kiln_gemm_sums_operand(const kiln_graph *g, const kiln_node *mm, uint32_t y, int64_t n, int *operand)
{
    if (mm->op != KILN_OP_MATMUL || mm->type.rank != 2 || !kiln_matmul_is_one_gemm(g, mm)) return false;
    for (int side = 0; side < 2; side++) {
        uint32_t x = mm->in[side];
        while (x != y && g->nodes[x].op == KILN_OP_RESHAPE) x = g->nodes[x].in[0];
        if (x != y) continue;
        const kiln_type *ot = &g->nodes[mm->in[side]].type;
        bool walks_k = side == 0 ? mm->attrs.transpose_a : !mm->attrs.transpose_b;
        if (!walks_k || ot->rank != 2 || ot->dims[1] != n) continue;
        *operand = side;
        return true;
    }
    return false;
}
