/* simplify.c — common subexpressions, dead code, constant folding and algebraic
 * identities, by rebuilding the graph.
 *
 * The IR has no replace-uses: a graph is an append-only array of nodes in topological
 * order. So simplify builds a new graph, in two walks:
 *
 * 1. Rewrite. Every node the result needs (kiln_graph_live; INPUT, PARAM and STATE
 *    always) is re-added, in order, with its inputs mapped, through one smart
 *    constructor, emit(). emit tries, in this order:
 *      - the identities (x·1 → x, transpose∘transpose → one transpose, …). A rewrite
 *        either names a node that already holds the value or calls emit again with a
 *        simpler node, so a rewrite's own result is simplified too;
 *      - folding: when every input is a constant (CONSTANT or IOTA; folded nodes are
 *        CONSTANTs by then) the node is run through the reference interpreter on a
 *        two-level graph (the constants, then the node) and becomes a CONSTANT. The
 *        interpreter computes in double and rounds once, as a compiled kernel does
 *        within its tolerance. A uniform result is stored as one fill value;
 *      - value numbering: a node equal to one already built (op, result type, inputs,
 *        the attributes its op's KILN_A_* bits select, constant data bytewise) is that
 *        node. Dropout nodes carry their mask stream as an attribute, so two dropouts
 *        with different masks never merge. Activation checkpointing (checkpoint.c)
 *        copies forward nodes into the backward pass so that their values are
 *        recomputed instead of kept; merging a copy with its original would undo that,
 *        so nodes from opt->recompute_from on merge only among themselves (and into
 *        constants).
 *    Since inputs are rewritten before their readers, one walk reaches the fixpoint.
 * 2. Compact. Rewrites leave nodes that nothing reads any more (the constant 1 of x·1,
 *    the inputs of a folded node, a transpose absorbed by a matmul). The rewritten graph
 *    is copied once more, keeping only its live nodes and the sources.
 *
 * Both walks keep the relative order of the nodes they keep, so what ran first still
 * runs first (the training step relies on gathers and losses running before the
 * optimizer's updates), and INPUT, PARAM and STATE keep their order (blob order).
 * Re-added nodes keep their attributes as stored, including a dropout's stream, which
 * the builder would otherwise set from the node's new id.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define FOLD_MAX_BYTES_DEFAULT ((int64_t)16 << 20)
/* Folding runs the interpreter, which is slow on purpose: a node costing more than this
 * is left to the compiled code. */
#define FOLD_MAX_FLOPS ((int64_t)1 << 26)

static bool is_caller_source(kiln_op op) { return op == KILN_OP_INPUT || op == KILN_OP_PARAM || op == KILN_OP_STATE; }

/* ---- node equality and hashing ------------------------------------------------------------ */

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull; /* FNV-1a */
    return h;
}

static size_t values_bytes(const kiln_attrs *a) { return (size_t)a->n_values * KILN_ELEM_BYTES; }

static uint64_t node_hash(const kiln_node *n)
{
    const kiln_attrs *a = &n->attrs;
    unsigned bits = kiln_op_table[n->op].attrs;
    uint64_t h = 0xcbf29ce484222325ull;
    h = mix(h, &n->op, sizeof n->op);
    h = mix(h, &n->type.dtype, sizeof n->type.dtype);
    h = mix(h, &n->type.rank, sizeof n->type.rank);
    h = mix(h, n->type.dims, sizeof(int64_t) * (size_t)n->type.rank);
    h = mix(h, &n->n_in, sizeof n->n_in);
    if (n->n_in) h = mix(h, n->in, sizeof *n->in * n->n_in);
    if (bits & KILN_A_VALUES) {
        h = mix(h, &a->n_values, sizeof a->n_values);
        if (a->n_values) h = mix(h, a->values, values_bytes(a));
    }
    /* the other attributes only refine this; equal nodes must hash equal, and these do */
    if (bits & KILN_A_AXIS) h = mix(h, &a->axis, sizeof a->axis);
    if (bits & KILN_A_SCALAR) h = mix(h, &a->scalar, sizeof a->scalar);
    if (bits & KILN_A_STREAM) h = mix(h, &a->stream, sizeof a->stream);
    return h;
}

static bool same_i64s(const int64_t *x, const int64_t *y, int n) { return n <= 0 || !memcmp(x, y, sizeof *x * (size_t)n); }

/* Doubles compare by their bits: 0 and −0 differ, a NaN equals the same NaN. */
static bool same_double(double x, double y) { return !memcmp(&x, &y, sizeof x); }

/* Whether x and y compute the same value: same op, type, inputs and every attribute the
 * op's KILN_A_* bits select. */
static bool same_node(const kiln_node *x, const kiln_node *y)
{
    if (x->op != y->op || !kiln_type_equal(&x->type, &y->type) || x->n_in != y->n_in) return false;
    if (x->n_in && memcmp(x->in, y->in, sizeof *x->in * x->n_in)) return false;
    const kiln_attrs *a = &x->attrs, *b = &y->attrs;
    unsigned bits = kiln_op_table[x->op].attrs;
    if ((bits & KILN_A_TYPE) && (a->dtype != b->dtype || a->rank != b->rank || !same_i64s(a->shape, b->shape, a->rank)))
        return false;
    if ((bits & KILN_A_NAME) && (!a->name || !b->name || strcmp(a->name, b->name))) return false;
    if ((bits & KILN_A_INIT) && (a->init != b->init || !same_double(a->init_arg, b->init_arg))) return false;
    if ((bits & KILN_A_VALUES) &&
        (a->n_values != b->n_values || (a->n_values && memcmp(a->values, b->values, values_bytes(a)))))
        return false;
    if ((bits & KILN_A_AXIS) && a->axis != b->axis) return false;
    if ((bits & KILN_A_AXES) && (a->n_axes != b->n_axes || !same_i64s(a->axes, b->axes, a->n_axes))) return false;
    if ((bits & KILN_A_KEEPDIMS) && a->keepdims != b->keepdims) return false;
    if ((bits & KILN_A_PERM) && !same_i64s(a->perm, b->perm, x->type.rank)) return false;
    if ((bits & KILN_A_SLICE) && (a->start != b->start || a->end != b->end || a->step != b->step)) return false;
    if ((bits & KILN_A_SCALAR) && !same_double(a->scalar, b->scalar)) return false;
    if ((bits & KILN_A_TRANSPOSE) && (a->transpose_a != b->transpose_a || a->transpose_b != b->transpose_b)) return false;
    if ((bits & KILN_A_ATTN) && (a->causal != b->causal || a->has_mask != b->has_mask || a->has_bias != b->has_bias ||
                                 a->alibi != b->alibi || a->relative != b->relative || !same_double(a->attn_dropout, b->attn_dropout) ||
                                 (a->attn_dropout != 0 && a->stream != b->stream)))
        return false;
    if ((bits & KILN_A_IGNORE) && a->ignore_index != b->ignore_index) return false;
    if ((bits & KILN_A_STREAM) && a->stream != b->stream) return false;
    if ((bits & KILN_A_WRT) && a->wrt != b->wrt) return false;
    return true;
}

/* ---- the rewriting state ---------------------------------------------------------------- */

typedef struct cse_slot {
    uint64_t hash;
    uint32_t id;          /* node of the rewritten graph + 1; 0 = empty */
} cse_slot;

typedef struct simp {
    const kiln_simplify_options *opt;
    kiln_simplify_stats stats;
    kiln_graph *g;        /* the rewritten graph being built */
    cse_slot *slots;      /* open addressing, linear probing, power-of-two size */
    uint32_t cap, used;
    uint32_t cse_min;     /* CSE may merge only into nodes from this id on, or into nodes
                             without inputs (opt->recompute_from: checkpoint copies) */
    kiln_diags *d;
    bool failed;
} simp;

static uint32_t cse_find(const simp *s, const kiln_node *n, uint64_t h)
{
    if (!s->cap) return KILN_NONE;
    for (uint32_t i = (uint32_t)h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        const cse_slot *sl = &s->slots[i];
        if (!sl->id) return KILN_NONE;
        uint32_t id = sl->id - 1;
        if (id < s->cse_min && n->n_in > 0) continue; /* an original a checkpoint copy must not become */
        if (sl->hash == h && same_node(&s->g->nodes[id], n)) return id;
    }
}

static void cse_insert(simp *s, uint32_t id, uint64_t h)
{
    if ((s->used + 1) * 2 > s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 1024;
        cse_slot *slots = calloc(cap, sizeof *slots);
        KILN_ASSERT(slots != NULL);
        for (uint32_t i = 0; i < s->cap; i++) {
            if (!s->slots[i].id) continue;
            uint32_t j = (uint32_t)s->slots[i].hash & (cap - 1);
            while (slots[j].id) j = (j + 1) & (cap - 1);
            slots[j] = s->slots[i];
        }
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    uint32_t j = (uint32_t)h & (s->cap - 1);
    while (s->slots[j].id) j = (j + 1) & (s->cap - 1);
    s->slots[j] = (cse_slot){h, id + 1};
    s->used++;
}

/* The label of a node that is replaced moves to its replacement if that has none. */
static void give_label(simp *s, uint32_t to, const char *label)
{
    if (label && !s->g->nodes[to].label) s->g->nodes[to].label = kiln_arena_strdup(&s->g->arena, label);
}

static const kiln_node *node(const simp *s, uint32_t id) { return &s->g->nodes[id]; }

static bool same_type(const simp *s, uint32_t id, const kiln_type *t) { return kiln_type_equal(&node(s, id)->type, t); }

/* Whether node id is a CONSTANT every element of which equals v (0 or 1; 0 matches −0). */
static bool const_all(const simp *s, uint32_t id, int v)
{
    const kiln_node *n = node(s, id);
    if (n->op != KILN_OP_CONSTANT || n->attrs.n_values == 0) return false;
    for (int64_t i = 0; i < n->attrs.n_values; i++) {
        if (n->type.dtype == KILN_I32) {
            int32_t x;
            memcpy(&x, (const char *)n->attrs.values + i * KILN_ELEM_BYTES, sizeof x);
            if (x != v) return false;
        } else {
            float x;
            memcpy(&x, (const char *)n->attrs.values + i * KILN_ELEM_BYTES, sizeof x);
            if (x != (float)v) return false;
        }
    }
    return true;
}

static uint32_t emit(simp *s, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *attrs,
                     const char *label, const char *origin);

/* ---- algebraic identities ---------------------------------------------------------------- */

/* The rewrite is "the value is node x" (x has type t: checked by the callers). */
static bool to_node(simp *s, uint32_t x, const char *label, uint32_t *res)
{
    give_label(s, x, label);
    s->stats.rewritten++;
    *res = x;
    return true;
}

/* The rewrite is "the value is this simpler node". */
static bool to_emit(simp *s, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a, const char *label,
                    const char *origin, uint32_t *res)
{
    s->stats.rewritten++;
    *res = emit(s, op, in, n_in, a, label, origin);
    return true;
}

/* perm swaps the last two of its `rank` dims and keeps the others. */
static bool swaps_last_two(const int64_t *perm, int rank)
{
    if (rank < 2 || perm[rank - 2] != rank - 1 || perm[rank - 1] != rank - 2) return false;
    for (int i = 0; i < rank - 2; i++)
        if (perm[i] != i) return false;
    return true;
}

/* Tries the identities on the node (op, in, a) of type t. On a rewrite, *res holds the
 * node with its value and the result is true. */
static bool identity(simp *s, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a, const kiln_type *t,
                     const char *label, const char *origin, uint32_t *res)
{
    const kiln_node *x = n_in ? node(s, in[0]) : NULL;
    switch (op) {
    case KILN_OP_MUL:
        if (const_all(s, in[1], 1) && same_type(s, in[0], t)) return to_node(s, in[0], label, res);
        if (const_all(s, in[0], 1) && same_type(s, in[1], t)) return to_node(s, in[1], label, res);
        return false;
    case KILN_OP_ADD:
        if (const_all(s, in[1], 0) && same_type(s, in[0], t)) return to_node(s, in[0], label, res);
        if (const_all(s, in[0], 0) && same_type(s, in[1], t)) return to_node(s, in[1], label, res);
        return false;
    case KILN_OP_SUB:
        if (const_all(s, in[1], 0) && same_type(s, in[0], t)) return to_node(s, in[0], label, res);
        return false;
    case KILN_OP_DIV:
        if (const_all(s, in[1], 1) && same_type(s, in[0], t)) return to_node(s, in[0], label, res);
        return false;
    case KILN_OP_SCALE:
        if (a->scalar == 1.0) return to_node(s, in[0], label, res);
        return false;
    case KILN_OP_DROPOUT: /* p = 0 keeps every element and divides by 1 */
        if (a->scalar == 0.0) return to_node(s, in[0], label, res);
        return false;
    case KILN_OP_NEG:
        if (x->op == KILN_OP_NEG) return to_node(s, x->in[0], label, res);
        return false;
    case KILN_OP_CAST:
        if (same_type(s, in[0], t)) return to_node(s, in[0], label, res);
        return false;
    case KILN_OP_RESHAPE:
    case KILN_OP_BROADCAST:
        /* reshape∘reshape is one reshape; broadcasting composes the same way (a dim of
         * x is 1 or the middle's dim, which is 1 or the final dim) */
        if (same_type(s, in[0], t)) return to_node(s, in[0], label, res);
        if (x->op == op) return to_emit(s, op, &x->in[0], 1, a, label, origin, res);
        return false;
    case KILN_OP_TRANSPOSE: {
        bool ident = true;
        for (int i = 0; i < t->rank; i++) ident = ident && a->perm[i] == i;
        if (ident) return to_node(s, in[0], label, res);
        if (x->op != KILN_OP_TRANSPOSE) return false;
        /* y = transpose(x0, p1): y.dims[i] = x0.dims[p1[i]]; transpose(y, p2) has
         * dims[i] = y.dims[p2[i]] = x0.dims[p1[p2[i]]] */
        kiln_attrs c = *a;
        for (int i = 0; i < t->rank; i++) c.perm[i] = x->attrs.perm[a->perm[i]];
        return to_emit(s, KILN_OP_TRANSPOSE, &x->in[0], 1, &c, label, origin, res);
    }
    case KILN_OP_MATMUL: {
        /* transpose_a/transpose_b transpose an operand's last two dims, which is what a
         * transpose with that perm does; batch dims are untouched either way */
        uint32_t nin[2] = {in[0], in[1]};
        kiln_attrs c = *a;
        bool changed = false;
        for (int k = 0; k < 2; k++) {
            const kiln_node *o = node(s, in[k]);
            if (o->op != KILN_OP_TRANSPOSE || !swaps_last_two(o->attrs.perm, o->type.rank)) continue;
            nin[k] = o->in[0];
            if (k == 0) c.transpose_a = !c.transpose_a;
            else c.transpose_b = !c.transpose_b;
            changed = true;
        }
        if (!changed) return false;
        return to_emit(s, KILN_OP_MATMUL, nin, 2, &c, label, origin, res);
    }
    default:
        return false;
    }
}

/* ---- constant folding --------------------------------------------------------------------- */

static bool is_constant(const simp *s, uint32_t id)
{
    kiln_op op = node(s, id)->op;
    return op == KILN_OP_CONSTANT || op == KILN_OP_IOTA;
}

/* Computes the node (op, in, a) of type t, whose inputs are all constants, with the
 * interpreter. Returns false (and leaves the node to run-time) when it is too big or
 * too costly, or when the interpreter fails (a gather index out of range: the compiled
 * code reports that when it runs). */
static bool fold(simp *s, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a, const kiln_type *t,
                 const char *label, const char *origin, uint32_t *res)
{
    if (kiln_op_table[op].kind == KILN_KIND_SOURCE || op == KILN_OP_DROPOUT || n_in == 0) return false;
    for (uint32_t i = 0; i < n_in; i++)
        if (!is_constant(s, in[i])) return false;
    int64_t max_bytes = s->opt->fold_max_bytes > 0 ? s->opt->fold_max_bytes : FOLD_MAX_BYTES_DEFAULT;
    int64_t numel = kiln_type_numel(t);
    if (numel > max_bytes / KILN_ELEM_BYTES) return false;

    kiln_graph mini;
    kiln_diags md;
    kiln_graph_init(&mini, "fold");
    kiln_diags_init(&md);
    uint32_t min[64];
    KILN_ASSERT(n_in <= 64);
    for (uint32_t i = 0; i < n_in; i++) {
        uint32_t j = 0;
        while (j < i && in[j] != in[i]) j++;
        const kiln_node *c = node(s, in[i]);
        min[i] = j < i ? min[j] : kiln_graph_add(&mini, c->op, NULL, 0, &c->attrs, NULL, NULL, &md);
    }
    uint32_t id = kiln_graph_add(&mini, op, min, n_in, a, NULL, NULL, &md);
    bool ok = id != KILN_NONE && kiln_node_flops(&mini, id) <= FOLD_MAX_FLOPS;
    void **values = NULL;
    if (ok) {
        values = calloc(mini.n_nodes, sizeof *values);
        KILN_ASSERT(values != NULL);
        ok = kiln_interp_run(&mini, values, false, 0, &md);
    }
    if (ok) {
        kiln_attrs c = {0};
        c.dtype = t->dtype;
        c.rank = t->rank;
        memcpy(c.shape, t->dims, sizeof c.shape);
        c.values = values[id];
        c.n_values = numel;
        /* a uniform result is one fill value: no table in the compiled module */
        const char *v = values[id];
        bool uniform = numel > 1;
        for (int64_t i = 1; i < numel && uniform; i++) uniform = !memcmp(v, v + i * KILN_ELEM_BYTES, KILN_ELEM_BYTES);
        if (uniform) c.n_values = 1;
        s->stats.folded++;
        *res = emit(s, KILN_OP_CONSTANT, NULL, 0, &c, label, origin);
    }
    if (values) kiln_interp_free_values(&mini, values);
    free(values);
    kiln_graph_free(&mini);
    kiln_diags_free(&md);
    return ok;
}

/* ---- emit: the smart constructor ------------------------------------------------------------ */

/* Adds the node (op, in, attrs) to the rewritten graph, or finds a node that already
 * holds its value. KILN_NONE only after an internal error (s->failed). */
static uint32_t emit(simp *s, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *attrs,
                     const char *label, const char *origin)
{
    if (s->failed) return KILN_NONE;
    kiln_graph *g = s->g;
    kiln_attrs a;
    if (attrs) a = *attrs;
    else memset(&a, 0, sizeof a);
    /* the result type, and the attributes normalised as the builder stores them */
    const kiln_type *types[64];
    KILN_ASSERT(n_in <= 64);
    for (uint32_t i = 0; i < n_in; i++) types[i] = &g->nodes[in[i]].type;
    kiln_type t;
    char msg[512];
    if (!kiln_infer_type(op, types, n_in, &a, &t, msg, sizeof msg)) {
        kiln_diags_add(s->d, NULL, 0, 0, origin, "internal error: simplify rebuilt a %s node the builder refuses: %s",
                       kiln_op_table[op].name, msg);
        s->failed = true;
        return KILN_NONE;
    }

    uint32_t res;
    if (!s->opt->no_identities && identity(s, op, in, n_in, &a, &t, label, origin, &res)) {
        KILN_ASSERT(s->failed || kiln_type_equal(&g->nodes[res].type, &t));
        return res;
    }
    if (!s->opt->no_fold && fold(s, op, in, n_in, &a, &t, label, origin, &res)) return res;

    bool numbered = !s->opt->no_cse && !is_caller_source(op);
    uint64_t h = 0;
    if (numbered) {
        kiln_node proto = {.op = op, .type = t, .n_in = n_in, .in = in, .attrs = a};
        h = node_hash(&proto);
        uint32_t same = cse_find(s, &proto, h);
        if (same != KILN_NONE) {
            give_label(s, same, label);
            s->stats.merged++;
            return same;
        }
    }
    uint32_t id = kiln_graph_add(g, op, in, n_in, &a, label, origin, s->d);
    if (id == KILN_NONE) {
        s->failed = true;
        return KILN_NONE;
    }
    if (numbered) cse_insert(s, id, h);
    return id;
}

/* ---- the two walks ------------------------------------------------------------------------ */

/* Re-adds node n of another graph to g as it is, inputs mapped through map. */
static uint32_t copy_node(kiln_graph *g, const kiln_node *n, const uint32_t *map, kiln_diags *d)
{
    uint32_t ins[64];
    KILN_ASSERT(n->n_in <= 64);
    for (uint32_t j = 0; j < n->n_in; j++) {
        ins[j] = map[n->in[j]];
        KILN_ASSERT(ins[j] != KILN_NONE);
    }
    return kiln_graph_add(g, n->op, ins, n->n_in, &n->attrs, n->label, n->origin, d);
}

/* Walk 1: in → s->g, map1[in id] = rewritten node. */
static void rewrite(simp *s, const kiln_graph *in, uint32_t *map1)
{
    unsigned char *live = calloc(in->n_nodes ? in->n_nodes : 1, 1);
    KILN_ASSERT(live != NULL);
    if (s->opt->no_dce) memset(live, 1, in->n_nodes);
    else kiln_graph_live(in, KILN_LIVE_LOSS | KILN_LIVE_UPDATES, live);
    for (uint32_t id = 0; id < in->n_nodes && !s->failed; id++) {
        const kiln_node *n = &in->nodes[id];
        map1[id] = KILN_NONE;
        if (s->opt->recompute_from && id == s->opt->recompute_from) s->cse_min = s->g->n_nodes;
        if (is_caller_source(n->op)) {
            map1[id] = copy_node(s->g, n, map1, s->d);
            if (map1[id] == KILN_NONE) s->failed = true;
            continue;
        }
        if (!live[id]) continue;
        uint32_t ins[64];
        KILN_ASSERT(n->n_in <= 64);
        for (uint32_t j = 0; j < n->n_in; j++) ins[j] = map1[n->in[j]];
        map1[id] = emit(s, n->op, ins, n->n_in, &n->attrs, n->label, n->origin);
    }
    free(live);
    if (s->failed) return;

    kiln_graph *g = s->g;
    for (uint32_t i = 0; i < in->n_outputs; i++) kiln_graph_add_output(g, in->outputs[i].name, map1[in->outputs[i].node]);
    g->loss = in->loss == KILN_NONE ? KILN_NONE : map1[in->loss];
    for (uint32_t u = 0; u < in->n_updates; u++) {
        uint32_t target = map1[in->updates[u].target], value = map1[in->updates[u].value];
        if (value == target) continue; /* "target keeps its value": nothing to do */
        /* an update reading another target's storage (through views too) would chain
         * updates, which compiled code does not allow: read a copy (x·1 is exact) */
        uint32_t root = value;
        while (g->nodes[root].op == KILN_OP_RESHAPE) root = g->nodes[root].in[0];
        bool chained = false;
        for (uint32_t w = 0; w < in->n_updates && !chained; w++)
            chained = w != u && map1[in->updates[w].target] == root;
        if (chained) {
            kiln_attrs one = {0};
            one.scalar = 1.0;
            value = kiln_graph_add(g, KILN_OP_SCALE, &value, 1, &one, NULL, in->nodes[in->updates[u].value].origin, s->d);
            if (value == KILN_NONE) {
                s->failed = true;
                return;
            }
        }
        kiln_graph_add_update(g, target, value);
    }
}

/* Walk 2: s->g → out, keeping what is live and the sources; map2[rewritten id] = out id. */
static bool compact(const simp *s, kiln_graph *out, uint32_t *map2, kiln_diags *d)
{
    const kiln_graph *g = s->g;
    unsigned char *live = calloc(g->n_nodes ? g->n_nodes : 1, 1);
    KILN_ASSERT(live != NULL);
    if (s->opt->no_dce) memset(live, 1, g->n_nodes);
    else kiln_graph_live(g, KILN_LIVE_LOSS | KILN_LIVE_UPDATES, live);
    bool ok = true;
    for (uint32_t id = 0; id < g->n_nodes && ok; id++) {
        const kiln_node *n = &g->nodes[id];
        map2[id] = KILN_NONE;
        if (!live[id] && !is_caller_source(n->op)) continue;
        map2[id] = copy_node(out, n, map2, d);
        ok = map2[id] != KILN_NONE;
    }
    free(live);
    if (!ok) return false;
    for (uint32_t i = 0; i < g->n_outputs; i++) kiln_graph_add_output(out, g->outputs[i].name, map2[g->outputs[i].node]);
    out->loss = g->loss == KILN_NONE ? KILN_NONE : map2[g->loss];
    for (uint32_t u = 0; u < g->n_updates; u++)
        kiln_graph_add_update(out, map2[g->updates[u].target], map2[g->updates[u].value]);
    return true;
}

bool kiln_simplify(const kiln_graph *in, kiln_graph *out, uint32_t *map, const kiln_simplify_options *opt,
                   kiln_diags *d)
{
    static const kiln_simplify_options defaults = {0};
    KILN_ASSERT(out->n_nodes == 0);
    out->name = kiln_arena_strdup(&out->arena, in->name);
    kiln_graph rewritten;
    kiln_graph_init(&rewritten, in->name);
    simp s = {.opt = opt ? opt : &defaults, .g = &rewritten, .d = d};
    uint32_t *map1 = calloc(in->n_nodes ? in->n_nodes : 1, sizeof *map1);
    KILN_ASSERT(map1 != NULL);
    rewrite(&s, in, map1);
    bool ok = !s.failed;
    uint32_t *map2 = NULL;
    if (ok) {
        map2 = calloc(rewritten.n_nodes ? rewritten.n_nodes : 1, sizeof *map2);
        KILN_ASSERT(map2 != NULL);
        ok = compact(&s, out, map2, d);
    }
    if (ok) {
        s.stats.removed = 0;
        for (uint32_t id = 0; id < in->n_nodes; id++) {
            map[id] = map1[id] == KILN_NONE ? KILN_NONE : map2[map1[id]];
            s.stats.removed += map[id] == KILN_NONE;
        }
        if (s.opt->stats) *s.opt->stats = s.stats;
    }
    free(map1);
    free(map2);
    free(s.slots);
    kiln_graph_free(&rewritten);
    return ok;
}
