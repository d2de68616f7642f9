/* decode.c — the pieces of the generation graphs (frontend.h, kiln_decode_mode).
 *
 * Shapes are static, so a KV-cached decoder is two graphs over one fixed-size cache:
 * the prefill (the forward pass over `context` positions, storing every key and value
 * row) and the step (one position, at a position given at run time). Everything here is
 * built from existing ops, so the interpreter, fusion and codegen need nothing new:
 *
 *   position   an INPUT "kv.pos" i32 [1]; tables indexed by position (sinusoidal, learned
 *              position weights, rope's cos/sin) are read at it with a one-row gather,
 *              which also bounds it (a position past the table is a run-time error, not
 *              a wild read).
 *   cache      a STATE (1, context, H, dh) per self-attention and per k / v (positions
 *              first: fe_decode_cache). The step's
 *              new row enters as update_slice(cache, k_new, pos) along the positions: the
 *              memory planner computes it in the cache's storage (KILN_HOME_UPDATE), so
 *              the step writes one row per cache and copies nothing; a pos outside the
 *              cache is a run-time error. Attention then reads that value — the cache
 *              with row pos written.
 *   mask       keys 0..pos are kept: lt(iota, pos + 1) as the attention's (1, S) key mask,
 *              pos + 1 read from a table so that a position outside the cache fails.
 *              Rows past pos hold stale or prefill-padding values; they are never read.
 *
 * The prefill graph's keys and values become the cache's new value (an update); it runs
 * over T ≤ context positions (the driver compiles one per prompt-length bucket) with the
 * prompt padded to T, causal attention keeping the padding out of every row the driver
 * reads; with T < context the rows past T become zeros (unslice), rows no step reads
 * before writing them. Its outputs are then rebuilt for the prompt's last row alone
 * (fe_decode_last_row, at the end of this file): the driver reads only that row.
 */
#include <stdlib.h>
#include <string.h>

#include "modules.h"

uint32_t fe_decode_pos(fe_ctx *c, const fe_node *n)
{
    kiln_model *m = c->m;
    if (m->decode_pos != KILN_NONE) return m->decode_pos;
    kiln_attrs a = {.dtype = KILN_I32, .rank = 1, .shape = {1}, .name = "kv.pos"};
    m->decode_pos = fe_add(c, n, KILN_OP_INPUT, NULL, 0, &a, "kv.pos");
    return m->decode_pos;
}

uint32_t fe_decode_pos_f32(fe_ctx *c, const fe_node *n)
{
    if (c->dec_pos_f32 != KILN_NONE) return c->dec_pos_f32;
    uint32_t p = fe_reshape(c, n, fe_decode_pos(c, n), 2, (int64_t[]){1, 1});
    kiln_attrs a = {.dtype = KILN_F32};
    c->dec_pos_f32 = fe_add(c, n, KILN_OP_CAST, &p, 1, &a, NULL); /* (1, 1) */
    return c->dec_pos_f32;
}

uint32_t fe_decode_mask(fe_ctx *c, const fe_node *n)
{
    if (c->dec_mask != KILN_NONE) return c->dec_mask;
    /* pos + 1 read from the table 1…context: a gather, so that a position outside the
     * cache is a run-time error (KILN_RC_INDEX_RANGE) in compiled code, never a write
     * that misses every row */
    int32_t *succ = fe_table_alloc(c, n, "position table", c->context);
    if (!succ) return KILN_NONE;
    for (int64_t i = 0; i < c->context; i++) succ[i] = (int32_t)(i + 1);
    uint32_t table = fe_const_i32(c, n, 1, (int64_t[]){c->context}, succ, c->context);
    free(succ);
    kiln_attrs g = {.axis = 0};
    uint32_t next = fe_add(c, n, KILN_OP_GATHER, (uint32_t[]){table, fe_decode_pos(c, n)}, 2, &g, NULL); /* [1] */
    next = fe_reshape(c, n, next, 2, (int64_t[]){1, 1});
    kiln_attrs ia = {.dtype = KILN_I32, .rank = 2, .shape = {1, c->context}, .axis = 1};
    uint32_t j = fe_add(c, n, KILN_OP_IOTA, NULL, 0, &ia, NULL); /* (1, S): key positions */
    c->dec_mask = fe_binary(c, n, KILN_OP_LT, j, next);         /* (1, S) f32: j <= pos */
    return c->dec_mask;
}

uint32_t fe_decode_row(fe_ctx *c, const fe_node *n, uint32_t table, const char *what)
{
    if (table == KILN_NONE) return KILN_NONE;
    const kiln_type *t = fe_type(c, table);
    if (t->rank != 2 || t->dims[0] < c->context) {
        fe_error(c, n, NULL, "the %s has %lld rows, fewer than the generation context of %lld positions", what,
                 (long long)t->dims[0], (long long)c->context);
        return KILN_NONE;
    }
    kiln_attrs g = {.axis = 0};
    return fe_add(c, n, KILN_OP_GATHER, (uint32_t[]){table, fe_decode_pos(c, n)}, 2, &g, NULL); /* (1, cols) */
}

bool fe_decode_depends(fe_ctx *c, uint32_t id)
{
    if (c->decode == KILN_DECODE_OFF || id == KILN_NONE) return false;
    const kiln_graph *g = c->g;
    if (c->n_dec_dep < g->n_nodes) { /* nodes only ever get appended: extend the memo */
        c->dec_dep = realloc(c->dec_dep, g->n_nodes);
        KILN_ASSERT(c->dec_dep != NULL);
        for (uint32_t i = c->n_dec_dep; i < g->n_nodes; i++) {
            const kiln_node *nd = &g->nodes[i];
            bool dep = nd->op == KILN_OP_INPUT && nd->attrs.name && strcmp(nd->attrs.name, c->dec_tokens) == 0;
            for (uint32_t j = 0; j < nd->n_in && !dep; j++) dep = c->dec_dep[nd->in[j]];
            c->dec_dep[i] = dep;
        }
        c->n_dec_dep = g->n_nodes;
    }
    return c->dec_dep[id];
}

/* A new cache STATE named kv.NAME.SUFFIX of type t with `len` positions (along axis). */
static uint32_t cache_state(fe_ctx *c, const fe_node *n, const char *name, const char *suffix, const kiln_type *t,
                            int axis, int64_t len)
{
    kiln_attrs a = {.dtype = KILN_F32, .rank = t->rank, .name = fe_fmt(c, "kv.%s.%s", name, suffix)};
    for (int d = 0; d < t->rank; d++) a.shape[d] = t->dims[d];
    a.shape[axis] = len;
    uint32_t s = fe_add(c, n, KILN_OP_STATE, NULL, 0, &a, a.name);
    if (s == KILN_NONE) return s;
    kiln_model *m = c->m;
    if (m->n_kv_states == c->cap_kv_states) {
        int cap = c->cap_kv_states ? 2 * c->cap_kv_states : 16;
        uint32_t *grown = kiln_arena_alloc(&c->g->arena, (size_t)cap * sizeof *grown);
        for (int i = 0; i < m->n_kv_states; i++) grown[i] = m->kv_states[i];
        m->kv_states = grown;
        c->cap_kv_states = cap;
    }
    m->kv_states[m->n_kv_states++] = s;
    return s;
}

/* (1, A, B, dh) → (1, B, A, dh): heads ↔ positions, its own inverse. */
static uint32_t swap_heads(fe_ctx *c, const fe_node *n, uint32_t x)
{
    return x == KILN_NONE ? KILN_NONE : fe_transpose(c, n, x, (int64_t[]){0, 2, 1, 3});
}

/* STEP: the cache with position pos replaced by x (1, 1, H, dh): an update_slice, which
 * the memory planner computes in the cache's own storage (nothing reads the old cache
 * after it), so the step writes that one row of H·dh floats and copies nothing. */
static uint32_t write_row(fe_ctx *c, const fe_node *n, uint32_t cache, uint32_t x)
{
    kiln_attrs a = {.axis = 1};
    uint32_t out = fe_add(c, n, KILN_OP_UPDATE_SLICE, (uint32_t[]){cache, x, fe_decode_pos(c, n)}, 3, &a, NULL);
    if (out != KILN_NONE) kiln_graph_add_update(c->g, cache, out);
    return out;
}

/* PREFILL over T ≤ context positions (a prompt's length bucket): the cache's new value is
 * x (1, T, H, dh) in rows 0..T, zeros after — rows no step reads before writing them. */
static uint32_t prefill_rows(fe_ctx *c, const fe_node *n, uint32_t x, const kiln_type *t)
{
    if (t->dims[1] == c->context) return x;
    kiln_attrs a = {.dtype = KILN_F32, .rank = t->rank, .axis = 1, .start = 0, .end = t->dims[1], .step = 1};
    for (int d = 0; d < t->rank; d++) a.shape[d] = t->dims[d];
    a.shape[1] = c->context;
    return fe_add(c, n, KILN_OP_UNSLICE, &x, 1, &a, NULL);
}

/* The self-attention cache is laid out positions first, (1, context, H, dh): a step's new
 * row is one contiguous run, and in the prefill the keys and values the QKV products
 * compute, (1, T, H·dh), are already the cache's layout, so the planner computes them
 * straight into the cache (no transpose kernel: the prefill does the forward pass's
 * work); attention reads the cache through a transposed view, with strides. */
bool fe_decode_cache(fe_ctx *c, const fe_node *n, const char *name, uint32_t *k, uint32_t *v)
{
    if (*k == KILN_NONE || *v == KILN_NONE) return false;
    const kiln_type *kt = fe_type(c, *k);
    int64_t T = kt->dims[2];
    bool step = c->decode == KILN_DECODE_STEP;
    if (kt->dims[0] != 1 || (step ? T != 1 : T < 1 || T > c->context)) {
        fe_error(c, n, NULL, "internal error: a generation graph needs batch 1 and %s%lld positions, got %lld and %lld",
                 step ? "" : "at most ", (long long)(step ? 1 : c->context), (long long)kt->dims[0], (long long)T);
        return false;
    }
    uint32_t kp = swap_heads(c, n, *k), vp = swap_heads(c, n, *v); /* (1, T, H, dh) */
    if (kp == KILN_NONE || vp == KILN_NONE) return false;
    kiln_type kct = *fe_type(c, kp), vct = *fe_type(c, vp);
    uint32_t ks = cache_state(c, n, name, "k", &kct, 1, c->context);
    uint32_t vs = cache_state(c, n, name, "v", &vct, 1, c->context);
    if (ks == KILN_NONE || vs == KILN_NONE) return false;
    if (c->decode == KILN_DECODE_PREFILL) {
        kiln_graph_add_update(c->g, ks, prefill_rows(c, n, kp, &kct));
        kiln_graph_add_update(c->g, vs, prefill_rows(c, n, vp, &vct));
        return true;
    }
    *k = swap_heads(c, n, write_row(c, n, ks, kp));
    *v = swap_heads(c, n, write_row(c, n, vs, vp));
    return *k != KILN_NONE && *v != KILN_NONE;
}

bool fe_decode_cross(fe_ctx *c, const fe_node *n, const char *name, uint32_t *k, uint32_t *v)
{
    if (*k == KILN_NONE || *v == KILN_NONE) return false;
    /* copies: adding the cache states may move the graph's nodes */
    kiln_type kt = *fe_type(c, *k), vt = *fe_type(c, *v);
    uint32_t ks = cache_state(c, n, name, "k", &kt, 2, kt.dims[2]);
    uint32_t vs = cache_state(c, n, name, "v", &vt, 2, vt.dims[2]);
    if (ks == KILN_NONE || vs == KILN_NONE) return false;
    if (c->decode == KILN_DECODE_PREFILL) {
        kiln_graph_add_update(c->g, ks, *k);
        kiln_graph_add_update(c->g, vs, *v);
    } else {
        *k = ks; /* the step reads what the prefill stored: the encoder does not run */
        *v = vs;
    }
    return true;
}

/* ---- PREFILL: the outputs of the last prompt row only ---------------------------------
 *
 * The driver reads one row of the prefill's logits, that of the prompt's last token, so
 * the prefill computes the outputs for that row alone. Every node after the last
 * operation that mixes positions (in a decoder: the last attention) works row by row —
 * the last layer's output projection, residual, feed-forward, the final layernorm and
 * the logits product — so that tail is rebuilt over one row: at its frontier (values
 * whose rows the tail reads: the last attention's output, the residual stream before
 * it) a gather takes row kv.len − 1, and each node of the tail is rebuilt over it. The
 * frontier's rows are still all computed (the cache needs every key and value); the
 * tail's work shrinks from T rows to one. The old tail nodes become dead.
 *
 * Which axis of a value indexes the token positions is propagated forward from the
 * token input (row_axis_of): ROW_NONE for values that do not depend on the tokens (weights,
 * tables, an encoder's side), ROW_MIXED where it is not known. A node is rebuilt only
 * when it is known to compute row t of its result from row t of its inputs: shapes alone
 * could not tell (heads and positions have equal extents in some models). */
enum { ROW_NONE = -1, ROW_MIXED = -2 };

/* Whether a value of type t that does not depend on the tokens, broadcast against a
 * result of rank r (aligned at the last axis), is constant along the result's axis 1. */
static bool flat_along_rows(const kiln_type *t, int r)
{
    int at = t->rank - r + 1; /* t's axis aligned with the result's axis 1 */
    return at < 0 || t->dims[at] == 1;
}

/* The axis of node id's result that indexes the token positions (see above). */
static int row_axis_of(const kiln_graph *g, const int *ax, uint32_t id, const char *tokens)
{
    const kiln_node *nd = &g->nodes[id];
    if (nd->op == KILN_OP_INPUT) return nd->attrs.name && !strcmp(nd->attrs.name, tokens) ? 1 : ROW_NONE;
    bool dep = false;
    for (uint32_t i = 0; i < nd->n_in; i++) dep |= ax[nd->in[i]] != ROW_NONE;
    if (!dep) return ROW_NONE;
    int r = nd->type.rank, a0 = ax[nd->in[0]];
    const kiln_type *t0 = &g->nodes[nd->in[0]].type;
    switch (kiln_op_table[nd->op].kind) {
    case KILN_KIND_ELEMENTWISE: { /* every input that has rows has them on one axis, at full rank */
        int a = ROW_NONE;
        for (uint32_t i = 0; i < nd->n_in; i++) {
            int ai = ax[nd->in[i]];
            if (ai == ROW_NONE) continue;
            if (ai < 0 || g->nodes[nd->in[i]].type.rank != r || (a != ROW_NONE && a != ai)) return ROW_MIXED;
            a = ai;
        }
        return a;
    }
    case KILN_KIND_REDUCTION: {
        if (a0 < 0) return ROW_MIXED;
        int a = a0;
        for (int i = 0; i < nd->attrs.n_axes; i++) {
            if (nd->attrs.axes[i] == a0) return ROW_MIXED;
            if (nd->attrs.axes[i] < a0 && !nd->attrs.keepdims) a--;
        }
        return a;
    }
    case KILN_KIND_MATMUL: { /* rows of x (a batch axis or m) times a matrix without rows */
        if (a0 < 0 || ax[nd->in[1]] != ROW_NONE || nd->attrs.transpose_a || a0 >= t0->rank - 1) return ROW_MIXED;
        return a0 == t0->rank - 2 ? r - 2 : a0 + (r - t0->rank);
    }
    default: break;
    }
    switch (nd->op) {
    case KILN_OP_GATHER: /* rows of a table at token ids: the ids' axes replace the table's axis */
        if (a0 == ROW_NONE && ax[nd->in[1]] >= 0) return (int)nd->attrs.axis + ax[nd->in[1]];
        return ROW_MIXED;
    case KILN_OP_RESHAPE: /* the dims up to the rows' axis unchanged */
        if (a0 < 0 || a0 >= r) return ROW_MIXED;
        for (int d = 0; d <= a0; d++)
            if (nd->type.dims[d] != t0->dims[d]) return ROW_MIXED;
        return a0;
    case KILN_OP_TRANSPOSE:
        if (a0 < 0) return ROW_MIXED;
        for (int d = 0; d < r; d++)
            if (nd->attrs.perm[d] == a0) return d;
        return ROW_MIXED;
    case KILN_OP_SLICE:   /* along another axis (rope's halves) */
    case KILN_OP_UNSLICE:
        return a0 >= 0 && nd->attrs.axis != a0 ? a0 : ROW_MIXED;
    case KILN_OP_CONCAT: { /* along another axis, every input's rows on one axis */
        int a = ROW_NONE;
        for (uint32_t i = 0; i < nd->n_in; i++) {
            int ai = ax[nd->in[i]];
            if (ai == ROW_NONE) continue;
            if (ai < 0 || (a != ROW_NONE && a != ai)) return ROW_MIXED;
            a = ai;
        }
        return a == nd->attrs.axis ? ROW_MIXED : a;
    }
    case KILN_OP_BROADCAST: /* to a higher rank, aligned at the last axis: the rows keep their extent */
        if (a0 < 0 || t0->dims[a0] != nd->type.dims[a0 + r - t0->rank]) return ROW_MIXED;
        return a0 + r - t0->rank;
    case KILN_OP_LAYERNORM: /* normalises the last axis */
        return a0 >= 0 && a0 < r - 1 && ax[nd->in[1]] == ROW_NONE && ax[nd->in[2]] == ROW_NONE ? a0 : ROW_MIXED;
    case KILN_OP_SOFTMAX:
    case KILN_OP_LOG_SOFTMAX:
        return a0 >= 0 && nd->attrs.axis != a0 ? a0 : ROW_MIXED;
    case KILN_OP_ATTENTION: /* q's rows are the result's (not row-wise: keys of every row) */
        return a0 == t0->rank - 2 ? a0 : ROW_MIXED;
    default:
        return ROW_MIXED;
    }
}

/* Whether node id (its rows on axis 1) computes row t of its result from row t of its
 * inputs alone, every input with rows having them on axis 1 at the result's rank. */
static bool row_wise(const kiln_graph *g, const int *ax, uint32_t id)
{
    const kiln_node *nd = &g->nodes[id];
    int r = nd->type.rank;
    if (ax[id] != 1) return false;
    kiln_op_kind kind = kiln_op_table[nd->op].kind;
    bool ok = kind == KILN_KIND_ELEMENTWISE || kind == KILN_KIND_MATMUL || nd->op == KILN_OP_LAYERNORM ||
              nd->op == KILN_OP_RESHAPE || nd->op == KILN_OP_SOFTMAX || nd->op == KILN_OP_LOG_SOFTMAX ||
              kind == KILN_KIND_REDUCTION || (nd->op == KILN_OP_TRANSPOSE && nd->attrs.perm[0] == 0 && nd->attrs.perm[1] == 1);
    if (!ok || r < 2) return false;
    if (kind == KILN_KIND_REDUCTION)
        for (int i = 0; i < nd->attrs.n_axes; i++)
            if (nd->attrs.axes[i] <= 1) return false;
    for (uint32_t i = 0; i < nd->n_in; i++) {
        const kiln_type *t = &g->nodes[nd->in[i]].type;
        int ai = ax[nd->in[i]];
        if (ai == ROW_NONE) {
            if (kind != KILN_KIND_MATMUL) {
                if (!flat_along_rows(t, r)) return false;
            } else if (r - 2 > 1) { /* the rows are a batch axis: the matrix's batch dims must not run along them */
                kiln_type batch = *t;
                batch.rank -= 2;
                if (!flat_along_rows(&batch, r - 2)) return false;
            }
        } else if (ai != 1 || t->rank != r) {
            return false;
        }
    }
    return true;
}

typedef struct last_row_ctx {
    fe_ctx *c;
    const int *ax;
    const unsigned char *kept; /* computed anyway: read by a cache update */
    uint32_t *map;   /* old node → its one-row counterpart, KILN_NONE until built */
    uint32_t last;   /* i32 [1]: the index of the prompt's last row */
    uint32_t n_old;  /* nodes before the rewrite: the only ones map covers */
} last_row_ctx;

/* Node id (rows on axis 1) over the last row only: rebuilt if row-wise and read by no
 * cache update, else gathered (the residual stream before the last attention is computed
 * for every row anyway: rebuilding it for one row would redo every layer's tail). */
static uint32_t last_row(last_row_ctx *x, uint32_t id)
{
    if (x->map[id] != KILN_NONE) return x->map[id];
    kiln_graph *g = x->c->g;
    uint32_t out;
    if (x->kept[id] || !row_wise(g, x->ax, id)) {
        kiln_attrs a = {.axis = 1};
        out = kiln_graph_add(g, KILN_OP_GATHER, (uint32_t[]){id, x->last}, 2, &a, NULL, g->nodes[id].origin,
                             x->c->diags);
    } else {
        kiln_node nd = g->nodes[id]; /* a copy: adding nodes moves the array */
        uint32_t in[KILN_MAX_RANK + 8];
        KILN_ASSERT(nd.n_in <= sizeof in / sizeof *in);
        for (uint32_t i = 0; i < nd.n_in; i++)
            in[i] = x->ax[nd.in[i]] == ROW_NONE ? nd.in[i] : last_row(x, nd.in[i]);
        kiln_attrs a = nd.attrs;
        if (nd.op == KILN_OP_RESHAPE) a.shape[1] = 1;
        out = kiln_graph_add(g, nd.op, in, nd.n_in, &a, nd.label, nd.origin, x->c->diags);
    }
    x->map[id] = out;
    return out;
}

uint32_t kiln_decode_mixing_node(const kiln_model *m, uint32_t node, const char *tokens)
{
    const kiln_graph *g = &m->graph;
    int *ax = malloc((g->n_nodes ? g->n_nodes : 1) * sizeof *ax);
    KILN_ASSERT(ax != NULL);
    for (uint32_t id = 0; id < g->n_nodes; id++) ax[id] = row_axis_of(g, ax, id, tokens);
    uint32_t at = node < g->n_nodes && ax[node] == ROW_MIXED ? node : KILN_NONE;
    /* back along mixed inputs, to the node whose inputs still had their rows */
    for (bool back = at != KILN_NONE; back;) {
        back = false;
        for (uint32_t i = 0; i < g->nodes[at].n_in && !back; i++)
            if (ax[g->nodes[at].in[i]] == ROW_MIXED) at = g->nodes[at].in[i], back = true;
    }
    free(ax);
    return at;
}

void fe_decode_last_row(fe_ctx *c)
{
    kiln_graph *g = c->g;
    kiln_model *m = c->m;
    uint32_t n_old = g->n_nodes;
    int *ax = malloc((n_old ? n_old : 1) * sizeof *ax);
    uint32_t *map = malloc((n_old ? n_old : 1) * sizeof *map);
    unsigned char *kept = calloc(n_old ? n_old : 1, 1);
    KILN_ASSERT(ax && map && kept);
    for (uint32_t id = 0; id < n_old; id++) {
        ax[id] = row_axis_of(g, ax, id, c->dec_tokens);
        map[id] = KILN_NONE;
    }
    for (uint32_t u = 0; u < g->n_updates; u++) kept[g->updates[u].value] = 1;
    for (uint32_t id = n_old; id-- > 0;)
        if (kept[id])
            for (uint32_t i = 0; i < g->nodes[id].n_in; i++) kept[g->nodes[id].in[i]] = 1;
    uint32_t tok = kiln_model_find_input(m, c->dec_tokens);
    last_row_ctx x = {c, ax, kept, map, KILN_NONE, n_old};
    fe_node top = {.path = "outputs"};
    for (uint32_t o = 0; o < g->n_outputs && tok != KILN_NONE; o++) {
        uint32_t id = g->outputs[o].node;
        if (id >= n_old || ax[id] != 1) continue;
        if (x.last == KILN_NONE) {
            /* the prompt's length n, 1 ≤ n ≤ T, and its last row n − 1 read from a table so that
             * a length outside the rows is a run-time error (KILN_RC_INDEX_RANGE) */
            int64_t T = g->nodes[tok].type.dims[1];
            kiln_attrs in = {.dtype = KILN_I32, .rank = 1, .shape = {1}, .name = "kv.len"};
            m->decode_len = fe_add(c, &top, KILN_OP_INPUT, NULL, 0, &in, "kv.len");
            int32_t *prev = fe_table_alloc(c, &top, "row table", T + 1);
            if (!prev) break;
            for (int64_t i = 0; i <= T; i++) prev[i] = (int32_t)(i - 1); /* n = 0 gives −1: out of range */
            uint32_t table = fe_const_i32(c, &top, 1, (int64_t[]){T + 1}, prev, T + 1);
            free(prev);
            kiln_attrs ga = {.axis = 0};
            x.last = fe_add(c, &top, KILN_OP_GATHER, (uint32_t[]){table, m->decode_len}, 2, &ga, NULL);
            if (x.last == KILN_NONE) break;
        }
        uint32_t row = last_row(&x, id);
        if (row != KILN_NONE) g->outputs[o].node = row;
    }
    free(ax);
    free(map);
    free(kept);
}
