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
 * before writing them.
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
