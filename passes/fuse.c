/* fuse.c — the kernel schedule: which nodes run together as one kernel, in what order.
 *
 * Design. The graph itself is never rewritten: the interpreter and autodiff keep seeing
 * primitive ops. What this pass produces is a schedule — an ordered list of kernels, each
 * a kind and its member nodes — that memory planning (liveness over kernels) and codegen
 * (one function per kernel) follow.
 *
 * Which nodes need a kernel at all: every live node except the sources (inputs,
 * parameters, optimizer state), views (a reshape aliases its input's memory) and
 * constants with full data (module globals) — unless such a view or constant is a graph
 * output, which needs a kernel to land in the caller's buffer (memplan.c, homes).
 *
 * Grouping, one rule per kind:
 * - LOOP: elementwise nodes of one result shape become one loop nest that keeps their
 *   intermediate values in registers (producer → consumer chains, and siblings joined by
 *   a common consumer, as AdamW's m, v and p updates are). Operands from outside may
 *   broadcast into the shape. A training step's dropout stays alone (its kernel takes the
 *   step counter).
 * - ATTENTION / ATTENTION_GRAD: a forward attention with its attention_lse, or the
 *   attention_grad nodes of one attention, with the transposes of their results (written
 *   in that layout); transposes that only feed attention as q, k, v or g become strided
 *   views. A rotary embedding of q or k (kiln_rope_match) that only attention reads is
 *   computed by nobody: the kernels rotate its x on load (`rope`), and the rotation's
 *   gradient after dq or dk (kiln_rope_grad_match) joins the attention_grad kernel,
 *   which writes it un-rotated.
 * - ROW: row reductions (over trailing axes) with the LOOP groups of their producers and
 *   consumers of the input's or the result's shape, and further row reductions of the
 *   same rows (group_rows): a softmax or layernorm written from primitives.
 * - REDUCE: a sum, mean or max with the LOOP group that computes its input
 *   (group_reductions), folded in as the loop computes it.
 * - GEMM: a matmul that is one GEMM call with its epilogue (group_gemms), a bias gradient
 *   — the column sums of the operand it walks along k (group_bias_grads) — and sibling
 *   chains that read one operand (group_sibling_gemms); see the comments there.
 * What keeps a schedule valid: no group may read, from outside, a value that depends on
 * one of its own members (loop_valid walks back to check); the kernels then form an
 * acyclic graph, and order_kernels runs each after the kernels it reads from.
 *
 * A member's value is `internal` — it never gets a buffer — when every reader is a member
 * of the same kernel and it is neither a graph output nor an update's new value.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* Members a LOOP kernel may have, and outside operands (buffers) it may touch: bounded
 * so a kernel's parameter list and register pressure stay small. */
#define LOOP_MAX_MEMBERS 48
#define LOOP_MAX_INPUTS 15
/* The fewest rows a ROW kernel is made for (group_rows). */
#define ROW_MIN_ROWS 2

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    KILN_ASSERT(p != NULL);
    return p;
}

/* Whether node id needs a kernel: live, not a source, and not a view or a constant
 * global unless it is a graph output. */
static bool node_has_kernel(const kiln_graph *g, const unsigned char *live, uint32_t id)
{
    if (!live[id]) return false;
    const kiln_node *n = &g->nodes[id];
    if (n->op == KILN_OP_INPUT || n->op == KILN_OP_PARAM || n->op == KILN_OP_STATE) return false;
    bool output = false;
    for (uint32_t o = 0; o < g->n_outputs && !output; o++) output = g->outputs[o].node == id;
    if (output) return true;
    if (n->op == KILN_OP_RESHAPE) return false;
    if (kiln_constant_is_global(n)) return false;
    return true;
}

/* ---- grouping ------------------------------------------------------------------------------- */

typedef struct group {
    uint32_t *members; /* sorted by node id */
    uint32_t n;
    bool dead;         /* merged into another */
    kiln_kernel_kind kind;
    uint32_t parts;    /* MULTI: parts of n / parts members each, part after part; else 1 */
} group;

typedef struct fuser {
    const kiln_graph *g;
    const kiln_fuse_request *req;
    unsigned char *has_kernel;
    uint32_t *group_of; /* per node: its LOOP group, or KILN_NONE */
    group *groups;
    uint32_t n_groups;
    uint32_t *mark, stamp; /* per node, for loop_valid's walk */
    uint32_t *group_mark;  /* per group, for the same walk (a stamp of mark's) */
    uint32_t *stack;
} fuser;

static bool loop_fusable(const fuser *f, uint32_t id)
{
    const kiln_node *n = &f->g->nodes[id];
    if (!f->has_kernel[id] || kiln_op_table[n->op].kind != KILN_KIND_ELEMENTWISE) return false;
    if (f->group_of[id] != KILN_NONE) return false; /* taken by a GEMM's epilogue */
    if (n->op == KILN_OP_DROPOUT && f->req->dropout_alone) return false;
    return kiln_type_numel(&n->type) > 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static bool in_list(const uint32_t *list, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (list[i] == id) return true;
    return false;
}

/* Whether id is an update's new value (memplan may compute it in place over its target). */
static bool is_update(const kiln_graph *g, uint32_t id)
{
    for (uint32_t u = 0; u < g->n_updates; u++)
        if (g->updates[u].value == id) return true;
    return false;
}

/* Whether no outside input of the nodes members[0..n) depends, through other nodes and
 * other kernels, on one of the members — the kernel would have to run before itself.
 * The walk goes back from the outside inputs; reaching a node of another group continues
 * from all of that group's inputs (it runs as a unit, so it waits for all of them). The
 * walk has no shortcut by node order: a node before the first member can still depend on
 * a member when its own group, or a group it reads from, holds a node after that member
 * (that group's kernel runs after the member's). Each node and group is visited once. */
static bool acyclic(fuser *f, const uint32_t *members, uint32_t n)
{
    const kiln_graph *g = f->g;
    uint32_t top = 0;
    /* two fresh stamps, both at most f->stamp: the next ++f->stamp must not reuse one */
    f->stamp += 2;
    uint32_t in_set = f->stamp - 1, visited = f->stamp;
    for (uint32_t i = 0; i < n; i++) f->mark[members[i]] = in_set;
    for (uint32_t i = 0; i < n; i++) {
        const kiln_node *m = &g->nodes[members[i]];
        for (uint32_t j = 0; j < m->n_in; j++) {
            uint32_t x = m->in[j];
            if (f->mark[x] == in_set || f->mark[x] == visited) continue;
            f->mark[x] = visited;
            f->stack[top++] = x;
        }
    }
    while (top > 0) {
        uint32_t y = f->stack[--top];
        uint32_t gy = f->group_of[y];
        if (gy != KILN_NONE && f->group_mark[gy] == visited) continue;
        if (gy != KILN_NONE) f->group_mark[gy] = visited;
        uint32_t n_from = gy != KILN_NONE ? f->groups[gy].n : 1;
        for (uint32_t k = 0; k < n_from; k++) {
            const kiln_node *z = &g->nodes[gy != KILN_NONE ? f->groups[gy].members[k] : y];
            for (uint32_t j = 0; j < z->n_in; j++) {
                uint32_t x = z->in[j];
                if (f->mark[x] == visited) continue;
                if (f->mark[x] == in_set) return false;
                f->mark[x] = visited;
                f->stack[top++] = x;
            }
        }
    }
    return true;
}

/* Whether the nodes members[0..n) (sorted) can run as one LOOP kernel: few enough
 * members and outside inputs, and acyclic. */
static bool loop_valid(fuser *f, const uint32_t *members, uint32_t n)
{
    if (n > LOOP_MAX_MEMBERS) return false;
    uint32_t seen[LOOP_MAX_MEMBERS * 3], operands = 0;
    for (uint32_t i = 0; i < n; i++) {
        const kiln_node *m = &f->g->nodes[members[i]];
        for (uint32_t j = 0; j < m->n_in; j++) {
            uint32_t x = m->in[j];
            if (bsearch(&x, members, n, sizeof *members, cmp_u32) || in_list(seen, operands, x)) continue;
            if (operands == LOOP_MAX_INPUTS) return false;
            seen[operands++] = x;
        }
    }
    return acyclic(f, members, n);
}

/* Tries to put node id into one group with the groups gs[0..n_gs); true if done. */
static bool try_join(fuser *f, uint32_t id, const uint32_t *gs, uint32_t n_gs)
{
    uint32_t total = 1;
    for (uint32_t i = 0; i < n_gs; i++) total += f->groups[gs[i]].n;
    if (total > LOOP_MAX_MEMBERS) return false;
    uint32_t members[LOOP_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_gs; i++)
        for (uint32_t k = 0; k < f->groups[gs[i]].n; k++) members[n++] = f->groups[gs[i]].members[k];
    members[n++] = id;
    qsort(members, n, sizeof *members, cmp_u32);
    if (!loop_valid(f, members, n)) return false;
    /* the first group takes everyone */
    group *into = &f->groups[gs[0]];
    into->members = realloc(into->members, n * sizeof *members);
    KILN_ASSERT(into->members != NULL);
    memcpy(into->members, members, n * sizeof *members);
    into->n = n;
    for (uint32_t i = 1; i < n_gs; i++) {
        f->groups[gs[i]].dead = true;
        free(f->groups[gs[i]].members);
        f->groups[gs[i]].members = NULL;
        f->groups[gs[i]].n = 0;
    }
    for (uint32_t k = 0; k < n; k++) f->group_of[members[k]] = gs[0];
    return true;
}

static void new_group(fuser *f, uint32_t id)
{
    group *gr = &f->groups[f->n_groups];
    gr->members = xcalloc(1, sizeof *gr->members);
    gr->members[0] = id;
    gr->n = 1;
    gr->dead = false;
    gr->kind = KILN_KERNEL_LOOP;
    gr->parts = 1;
    f->group_of[id] = f->n_groups++;
}

static void group_loops(fuser *f)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        if (!loop_fusable(f, id)) continue;
        const kiln_node *n = &g->nodes[id];
        /* the groups of this node's producers that compute values of its shape */
        uint32_t cand[8], n_cand = 0;
        for (uint32_t j = 0; j < n->n_in && n_cand < 8; j++) {
            uint32_t x = n->in[j], gx = f->group_of[x];
            if (gx == KILN_NONE || in_list(cand, n_cand, gx) || f->groups[gx].kind != KILN_KERNEL_LOOP) continue;
            if (!kiln_type_equal(&g->nodes[x].type, &n->type)) continue;
            cand[n_cand++] = gx;
        }
        if (!f->req->enable_loop) n_cand = 0;
        bool joined = n_cand > 0 && try_join(f, id, cand, n_cand);
        /* else the latest single group that fits */
        for (uint32_t c = n_cand; !joined && c-- > 0;) joined = try_join(f, id, &cand[c], 1);
        if (!joined) new_group(f, id);
    }
}

/* ---- reductions with their producers ---------------------------------------------------------- */

/* A sum, mean or max whose input is computed by a LOOP group joins it as a REDUCE kernel:
 * the reduction folds each element in as the walk computes it, so the input — the
 * square of x − mean in a layernorm written from primitives, the product g·x̂ summed for
 * a layernorm's dw, the exp summed in a softmax — is never written out unless something
 * else reads it. One reduction per kernel; the group stays acyclic (loop_valid). The
 * reduction keeps its own walk (codegen/lower_reduce.c), so its threads and its order of
 * additions are the unfused kernel's. */
static void group_reductions(fuser *f)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        if (!f->has_kernel[id] || f->group_of[id] != KILN_NONE) continue;
        if (kiln_op_table[n->op].kind != KILN_KIND_REDUCTION || is_update(g, id)) continue; /* written in place, maybe: loop kernels only */
        uint32_t x = n->in[0], gx = f->group_of[x];
        if (n->type.dtype != KILN_F32 || g->nodes[x].type.dtype != KILN_F32 || gx == KILN_NONE) continue;
        group *gr = &f->groups[gx];
        if (gr->dead || gr->kind != KILN_KERNEL_LOOP || gr->n + 1 > LOOP_MAX_MEMBERS) continue;
        bool reads_result = false; /* a member would need the finished reduction mid-walk */
        for (uint32_t i = 0; i < gr->n && !reads_result; i++)
            for (uint32_t j = 0; j < g->nodes[gr->members[i]].n_in; j++) reads_result |= g->nodes[gr->members[i]].in[j] == id;
        if (reads_result || !try_join(f, id, &gx, 1)) continue;
        f->groups[gx].kind = KILN_KERNEL_REDUCE;
    }
}

/* ---- attention -------------------------------------------------------------------------------- */

/* Whether a transpose keeps the last dim last (an attention kernel reads and writes rows
 * with a stride, but each row contiguous). */
static bool keeps_last_dim(const kiln_node *n)
{
    return n->op == KILN_OP_TRANSPOSE && n->attrs.perm[n->type.rank - 1] == n->type.rank - 1;
}

/* Whether nodes a and b are attention ops over the same inputs with the same attributes
 * (apart from wrt): the forward of one attention and its lse, or its gradients. */
static bool same_attention(const kiln_node *a, const kiln_node *b, uint32_t n_in)
{
    return a->n_in >= n_in && b->n_in >= n_in && !memcmp(a->in, b->in, n_in * sizeof *a->in) &&
           a->attrs.causal == b->attrs.causal && a->attrs.has_mask == b->attrs.has_mask &&
           a->attrs.has_bias == b->attrs.has_bias && a->attrs.alibi == b->attrs.alibi &&
           a->attrs.relative == b->attrs.relative &&
           a->attrs.scalar == b->attrs.scalar && a->attrs.attn_dropout == b->attrs.attn_dropout &&
           a->attrs.stream == b->attrs.stream;
}

/* The live readers of each node, as one list (CSR). */
typedef struct readers {
    uint32_t *start, *list;
} readers;

static readers readers_of(const kiln_graph *g, const unsigned char *live)
{
    readers r = {xcalloc(g->n_nodes + 1, sizeof(uint32_t)), NULL};
    uint32_t total = 0;
    for (uint32_t id = 0; id < g->n_nodes; id++)
        if (live[id])
            for (uint32_t j = 0; j < g->nodes[id].n_in; j++) r.start[g->nodes[id].in[j] + 1]++, total++;
    for (uint32_t id = 0; id < g->n_nodes; id++) r.start[id + 1] += r.start[id];
    r.list = xcalloc(total, sizeof(uint32_t));
    uint32_t *fill = xcalloc(g->n_nodes, sizeof(uint32_t));
    for (uint32_t id = 0; id < g->n_nodes; id++)
        if (live[id])
            for (uint32_t j = 0; j < g->nodes[id].n_in; j++) {
                uint32_t x = g->nodes[id].in[j];
                r.list[r.start[x] + fill[x]++] = id;
            }
    free(fill);
    return r;
}

/* The readers of an attention result that a kernel cannot do without it: all but the
 * attention_grad nodes reading it as their forward output o (they read a copy the forward
 * kernel writes row-major, so the result's transpose may still be folded). */
static uint32_t result_readers(const kiln_graph *g, const readers *r, uint32_t a, uint32_t *only)
{
    uint32_t count = 0;
    for (uint32_t k = r->start[a]; k < r->start[a + 1]; k++) {
        const kiln_node *u = &g->nodes[r->list[k]];
        uint32_t o = 3 + (u->attrs.has_mask ? 1 : 0) + (u->attrs.has_bias ? 1 : 0);
        bool as_o = u->op == KILN_OP_ATTENTION_GRAD && u->n_in == o + 3 && u->in[o] == a;
        for (uint32_t j = 0; as_o && j < u->n_in; j++) as_o = j == o || u->in[j] != a;
        if (!as_o) count++, *only = r->list[k];
    }
    return count;
}

static bool is_output_or_update(const kiln_graph *g, uint32_t id)
{
    for (uint32_t o = 0; o < g->n_outputs; o++)
        if (g->outputs[o].node == id) return true;
    return is_update(g, id);
}

/* ---- rotary position embeddings ---------------------------------------------------------------- */

/* The rotation gradient dx of attention_grad result G when the attention_grad kernel
 * can write dx instead of G: its q (wrt q) or k (wrt k) input is a rotation no kernel
 * computes (rope[] = KILN_ROPE_RESULT) with the same tables, and G and every inner node
 * are read only inside the gradient. KILN_NONE otherwise. */
static uint32_t rope_grad_of(fuser *f, const readers *r, const unsigned char *rope, uint32_t G)
{
    const kiln_graph *g = f->g;
    const kiln_node *gn = &g->nodes[G];
    if (gn->attrs.wrt != KILN_WRT_Q && gn->attrs.wrt != KILN_WRT_K) return KILN_NONE;
    uint32_t in = gn->in[gn->attrs.wrt == KILN_WRT_Q ? 0 : 1];
    kiln_rope rp;
    if (rope[in] != KILN_ROPE_RESULT || !kiln_rope_match(g, in, &rp)) return KILN_NONE;
    /* dx is the add that reads G·cos, or the one after it */
    uint32_t dx = KILN_NONE;
    kiln_rope_grad rg;
    for (uint32_t k = r->start[G]; k < r->start[G + 1] && dx == KILN_NONE; k++) {
        uint32_t u = r->list[k];
        if (g->nodes[u].op != KILN_OP_MUL || r->start[u + 1] - r->start[u] != 1) continue;
        uint32_t c = r->list[r->start[u]];
        for (int level = 0; level < 2 && dx == KILN_NONE && c != KILN_NONE; level++) {
            if (kiln_rope_grad_match(g, c, &rg) && rg.G == G) dx = c;
            else c = r->start[c + 1] - r->start[c] == 1 ? r->list[r->start[c]] : KILN_NONE;
        }
    }
    if (dx == KILN_NONE || rg.cos != rp.cos || rg.sin != rp.sin || !f->has_kernel[dx] || f->group_of[dx] != KILN_NONE)
        return KILN_NONE;
    /* nothing but the gradient reads G or an inner node */
    uint32_t set[10];
    memcpy(set, rg.inner, sizeof rg.inner);
    set[8] = dx, set[9] = G;
    for (int i = 0; i < 8; i++) {
        uint32_t m = rg.inner[i];
        if (!f->has_kernel[m] || f->group_of[m] != KILN_NONE || is_output_or_update(g, m)) return KILN_NONE;
    }
    if (is_output_or_update(g, G)) return KILN_NONE;
    for (int i = 0; i < 10; i++) {
        uint32_t m = i < 8 ? rg.inner[i] : G;
        if (i == 8) continue; /* dx itself may be read anywhere */
        for (uint32_t k = r->start[m]; k < r->start[m + 1]; k++)
            if (!in_list(set, 10, r->list[k])) return KILN_NONE;
    }
    return dx;
}

/* The rotations of q and k that only attention kernels read (as q or k): no kernel
 * computes them or their inner nodes; each attention kernel reading one rotates the
 * rows of its x on load (codegen/lower_attention.c). Each inner node must be read by its
 * own rotation alone. */
static void find_ropes(fuser *f, const readers *r, unsigned char *rope)
{
    const kiln_graph *g = f->g;
    for (uint32_t y = 0; y < g->n_nodes; y++) {
        kiln_rope rp;
        if (!f->has_kernel[y] || is_output_or_update(g, y) || !kiln_rope_match(g, y, &rp)) continue;
        bool ok = r->start[y] < r->start[y + 1];
        for (uint32_t k = r->start[y]; k < r->start[y + 1] && ok; k++) {
            const kiln_node *u = &g->nodes[r->list[k]];
            ok = kiln_is_attention_op(u->op) && f->has_kernel[r->list[k]];
            for (uint32_t j = 0; j < u->n_in && ok; j++) ok = u->in[j] != y || j < 2;
        }
        /* the one reader of each inner node: x·cos, rot·sin → y; rot → rot·sin; −x2, x1 → rot; x2 → −x2 */
        static const int reader_of[6] = {-1, -1, 1, 2, 2, 3};
        for (int i = 0; i < 6 && ok; i++) {
            uint32_t m = rp.inner[i], want = reader_of[i] < 0 ? y : rp.inner[reader_of[i]];
            ok = f->has_kernel[m] && !is_output_or_update(g, m) && r->start[m + 1] - r->start[m] == 1 &&
                 r->list[r->start[m]] == want && f->group_of[m] == KILN_NONE;
        }
        /* (a value read twice by one node, as x·x, has two reader entries and fails above) */
        if (!ok) continue;
        rope[y] = KILN_ROPE_RESULT;
        f->has_kernel[y] = 0;
        for (int i = 0; i < 6; i++) {
            rope[rp.inner[i]] = KILN_ROPE_INNER;
            f->has_kernel[rp.inner[i]] = 0;
        }
    }
}

/* Transposes read only as an attention's q, k, v or (backward) g become strided views:
 * no kernel, no memory; the attention kernels read the memory underneath with strides.
 * What they view must be plain row-major memory: not another attention's result (which
 * may itself be written with strides) nor another strided view. */
static void fold_input_transposes(fuser *f, const readers *r, unsigned char *view, const unsigned char *rope)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        if (!f->has_kernel[id] || !keeps_last_dim(n) || is_output_or_update(g, id)) continue;
        uint32_t root = n->in[0];
        while (g->nodes[root].op == KILN_OP_RESHAPE && !f->has_kernel[root]) root = g->nodes[root].in[0];
        if (kiln_is_attention_op(g->nodes[root].op) || view[root] || g->nodes[root].op == KILN_OP_TRANSPOSE) continue;
        bool ok = r->start[id] < r->start[id + 1];
        for (uint32_t k = r->start[id]; k < r->start[id + 1] && ok; k++) {
            const kiln_node *u = &g->nodes[r->list[k]];
            /* a rotation's slices and x·cos read it as the rotation's x: the attention
             * kernel reads x (this view) and rotates on load */
            if (rope[r->list[k]] == KILN_ROPE_INNER) continue; /* (a table is never a transpose) */
            if (!kiln_is_attention_op(u->op)) ok = false;
            for (uint32_t j = 0; j < u->n_in && ok; j++) {
                if (u->in[j] != id) continue;
                bool slot = j < 3 || (u->op == KILN_OP_ATTENTION_GRAD && j == u->n_in - 1);
                ok = slot;
            }
        }
        if (ok) {
            view[id] = 1;
            f->has_kernel[id] = 0;
        }
    }
}

/* One group per forward attention, and one per set of attention_grad nodes with the same
 * inputs and attributes but wrt (the gradients of one attention, computed together); each
 * result read only by a transpose that keeps the last dim brings that transpose along, and
 * the kernel writes the transposed layout directly. */
static void group_attention(fuser *f, const readers *r, const unsigned char *rope)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        if (!f->has_kernel[id] || !kiln_is_attention_op(n->op) || f->group_of[id] != KILN_NONE) continue;
        uint32_t members[2 * KILN_WRT_COUNT + 2 * 9], count = 0;
        members[count++] = id;
        if (n->op == KILN_OP_ATTENTION_GRAD && f->req->enable_loop)
            for (uint32_t o = id + 1; o < g->n_nodes && count < KILN_WRT_COUNT; o++) {
                const kiln_node *m = &g->nodes[o];
                if (m->op != KILN_OP_ATTENTION_GRAD || !f->has_kernel[o] || f->group_of[o] != KILN_NONE) continue;
                if (m->n_in != n->n_in || !same_attention(m, n, n->n_in)) continue;
                bool dup = false;
                for (uint32_t i = 0; i < count; i++) dup |= g->nodes[members[i]].attrs.wrt == m->attrs.wrt;
                if (!dup) members[count++] = o;
            }
        /* a forward attention computes its attention_lse too (one per attention) */
        if (n->op == KILN_OP_ATTENTION && f->req->enable_loop)
            for (uint32_t o = id + 1; o < g->n_nodes; o++) {
                const kiln_node *m = &g->nodes[o];
                if (m->op != KILN_OP_ATTENTION_LSE || !f->has_kernel[o] || f->group_of[o] != KILN_NONE) continue;
                if (m->n_in != n->n_in || !same_attention(m, n, n->n_in)) continue;
                members[count++] = o;
                break;
            }
        /* the rotary gradients of dq and dk, written un-rotated (their dx replaces the
         * result whose transpose may come along) */
        uint32_t n_results = count, results[KILN_WRT_COUNT + 1];
        memcpy(results, members, count * sizeof *members);
        for (uint32_t i = 0; i < n_results && f->req->enable_loop && n->op == KILN_OP_ATTENTION_GRAD; i++) {
            uint32_t dx = rope_grad_of(f, r, rope, results[i]);
            kiln_rope_grad rg;
            if (dx == KILN_NONE || !kiln_rope_grad_match(g, dx, &rg)) continue;
            for (int k = 0; k < 8; k++) members[count++] = rg.inner[k];
            members[count++] = dx;
            results[i] = dx;
        }
        for (uint32_t i = 0; i < n_results && f->req->enable_loop; i++) {
            uint32_t a = results[i], y = KILN_NONE;
            if (g->nodes[a].op == KILN_OP_ATTENTION_LSE) continue;
            if (is_output_or_update(g, a) || result_readers(g, r, a, &y) != 1) continue;
            if (f->has_kernel[y] && keeps_last_dim(&g->nodes[y]) && f->group_of[y] == KILN_NONE)
                members[count++] = y;
        }
        qsort(members, count, sizeof *members, cmp_u32);
        if (count > 1 && !loop_valid(f, members, count)) { /* then each alone */
            count = 1;
            members[0] = id;
        }
        group *gr = &f->groups[f->n_groups];
        gr->members = xcalloc(count, sizeof *gr->members);
        memcpy(gr->members, members, count * sizeof *members);
        gr->n = count;
        gr->dead = false;
        gr->parts = 1;
        gr->kind = n->op == KILN_OP_ATTENTION_GRAD ? KILN_KERNEL_ATTENTION_GRAD : KILN_KERNEL_ATTENTION;
        for (uint32_t i = 0; i < count; i++) f->group_of[members[i]] = f->n_groups;
        f->n_groups++;
    }
}

/* ---- GEMM epilogues ---------------------------------------------------------------------------- */

/* The one live reader of v when v leaves nowhere else (no output, no update), else NONE. */
static uint32_t sole_reader(const kiln_graph *g, const readers *r, uint32_t v)
{
    if (is_output_or_update(g, v) || r->start[v + 1] - r->start[v] != 1) return KILN_NONE;
    return r->list[r->start[v]];
}

/* The other operand of a binary node n that reads v, or NONE if n reads v twice. */
static uint32_t other_operand(const kiln_node *n, uint32_t v)
{
    if (n->in[0] == v && n->in[1] != v) return n->in[1];
    if (n->in[1] == v && n->in[0] != v) return n->in[0];
    return KILN_NONE;
}

/* ---- row kernels: row reductions with producers and consumers --------------------------------- */

bool kiln_row_form_of(const kiln_graph *g, const kiln_node *n, kiln_row_form *f)
{
    if (n->op != KILN_OP_SUM && n->op != KILN_OP_MEAN && n->op != KILN_OP_MAX) return false;
    const kiln_type *xt = &g->nodes[n->in[0]].type;
    if (xt->dtype != KILN_F32 || n->type.dtype != KILN_F32 || n->attrs.n_axes < 1 || xt->rank < 1) return false;
    int first = xt->rank - n->attrs.n_axes;
    for (int i = 0; i < n->attrs.n_axes; i++) /* axes are sorted: the trailing ones */
        if (n->attrs.axes[i] != first + i) return false;
    memset(f, 0, sizeof *f);
    f->x = *xt;
    f->row = n->type;
    f->axis = first;
    f->rows = f->cols = 1;
    for (int d = 0; d < xt->rank; d++) *(d < first ? &f->rows : &f->cols) *= xt->dims[d];
    return f->rows > 0;
}

/* strides of dims [from, to) of st over dims, merged into one; false if they do not */
static bool merged_stride(const int64_t *dims, const int64_t *st, int from, int to, int64_t *out)
{
    int64_t s = 0;
    bool any = false;
    for (int d = to - 1; d >= from; d--) {
        if (dims[d] == 1) continue;
        if (!any) {
            s = st[d];
            any = true;
        } else if (st[d] != st[d + 1] * dims[d + 1] || st[d + 1] == 0) {
            if (!(st[d] == 0 && s == 0)) return false;
        }
    }
    *out = any ? s : 0;
    return true;
}

bool kiln_row_strides(const kiln_row_form *f, const kiln_type *t, int64_t *rs, int64_t *cs)
{
    int n = f->x.rank;
    if (t->rank > n) return false;
    int64_t st[KILN_MAX_RANK], s = 1;
    for (int d = n - 1; d >= 0; d--) { /* numpy alignment: t's dims end at X's */
        int td = d - (n - t->rank);
        int64_t size = td >= 0 ? t->dims[td] : 1;
        if (size != 1 && size != f->x.dims[d]) return false;
        st[d] = size == 1 ? 0 : s;
        s *= size;
    }
    /* dims of size 1 in X carry no stride; the others must merge within rows and columns */
    int64_t dims[KILN_MAX_RANK];
    for (int d = 0; d < n; d++) dims[d] = f->x.dims[d];
    for (int d = n - 1; d > 0; d--) /* a size-1 dim between two others must not break a merge */
        if (dims[d] == 1) st[d] = d + 1 < n ? st[d + 1] * dims[d + 1] : 1;
    return merged_stride(dims, st, 0, f->axis, rs) && merged_stride(dims, st, f->axis, n, cs);
}

/* Whether every outside input of members[0..n) sits at r·rs + c·cs in form f. */
static bool row_inputs_ok(const fuser *f, const kiln_row_form *rf, const uint32_t *members, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const kiln_node *m = &f->g->nodes[members[i]];
        for (uint32_t j = 0; j < m->n_in; j++) {
            int64_t rs, cs;
            if (!bsearch(&m->in[j], members, n, sizeof *members, cmp_u32) &&
                !kiln_row_strides(rf, &f->g->nodes[m->in[j]].type, &rs, &cs))
                return false;
        }
    }
    return true;
}

/* Whether node y can be a member of a ROW kernel of form rf: an elementwise f32 node of
 * X's shape or of the row shape, or a row reduction of the same form. */
static bool row_member_ok(const fuser *f, const kiln_row_form *rf, uint32_t y)
{
    const kiln_node *n = &f->g->nodes[y];
    if (!f->has_kernel[y] || n->type.dtype != KILN_F32) return false;
    if (is_update(f->g, y)) return false; /* written in place, maybe: loop kernels only */
    kiln_row_form other;
    if (kiln_row_form_of(f->g, n, &other))
        return kiln_type_equal(&other.x, &rf->x) && kiln_type_equal(&other.row, &rf->row);
    if (kiln_op_table[n->op].kind != KILN_KIND_ELEMENTWISE) return false;
    if (n->op == KILN_OP_DROPOUT && f->req->dropout_alone) return false;
    return kiln_type_equal(&n->type, &rf->x) || kiln_type_equal(&n->type, &rf->row);
}

/* Row reductions whose producers and consumers are elementwise nodes of their input's
 * shape or of their own (a softmax or a layernorm written from primitives: max, exp(x −
 * max) summed, the division) become one ROW kernel: the LOOP groups and reductions
 * connected through values, taken whole while the kernel stays acyclic. Only where it
 * takes more than a reduction and the group computing its input (REDUCE does that) — a
 * consumer or a second reduction. */
static void group_rows(fuser *f, const readers *r)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        kiln_row_form rf;
        const kiln_node *n = &g->nodes[id];
        if (!f->has_kernel[id] || f->group_of[id] != KILN_NONE || !kiln_row_form_of(g, n, &rf)) continue;
        /* rows are what a ROW kernel splits across threads; with few, the reductions'
         * own kernels (which cut long rows into chunks) stay */
        if (rf.cols < 2 || rf.rows < ROW_MIN_ROWS) continue;
        uint32_t set[LOOP_MAX_MEMBERS], n_set = 0, taken[LOOP_MAX_MEMBERS], n_taken = 0, reductions = 1;
        bool consumer = false;
        set[n_set++] = id;
        /* the group computing the input, then readers of members, until nothing joins */
        uint32_t frontier[2 * LOOP_MAX_MEMBERS], n_front = 0;
        frontier[n_front++] = n->in[0];
        for (uint32_t i = 0; i < n_set; i++) frontier[n_front++] = set[i];
        while (n_front > 0) {
            uint32_t v = frontier[--n_front];
            uint32_t cands[64], n_c = 0;
            if (!in_list(set, n_set, v)) cands[n_c++] = v; /* the input's group */
            for (uint32_t k = r->start[v]; k < r->start[v + 1] && n_c < 64; k++)
                if (!in_list(set, n_set, r->list[k])) cands[n_c++] = r->list[k];
            for (uint32_t c = 0; c < n_c; c++) {
                uint32_t y = cands[c], gy = f->group_of[y];
                if (in_list(set, n_set, y) || !row_member_ok(f, &rf, y)) continue;
                bool red = kiln_op_table[g->nodes[y].op].kind == KILN_KIND_REDUCTION;
                if (!red && (gy == KILN_NONE || f->groups[gy].dead || f->groups[gy].kind != KILN_KERNEL_LOOP)) continue;
                if (red && gy != KILN_NONE) continue;
                uint32_t add[LOOP_MAX_MEMBERS], n_add = 0;
                if (red) add[n_add++] = y;
                else {
                    bool fits = true;
                    for (uint32_t k = 0; k < f->groups[gy].n && fits; k++)
                        fits = row_member_ok(f, &rf, f->groups[gy].members[k]);
                    if (!fits || n_set + f->groups[gy].n > LOOP_MAX_MEMBERS) continue;
                    for (uint32_t k = 0; k < f->groups[gy].n; k++) add[n_add++] = f->groups[gy].members[k];
                }
                if (n_set + n_add > LOOP_MAX_MEMBERS) continue;
                uint32_t trial[LOOP_MAX_MEMBERS];
                memcpy(trial, set, n_set * sizeof *set);
                memcpy(trial + n_set, add, n_add * sizeof *add);
                qsort(trial, n_set + n_add, sizeof *trial, cmp_u32);
                /* a member before the first reduction must not read a later one's value: the
                 * evaluation order is node order, phase by phase (codegen/lower_row.c) */
                if (!loop_valid(f, trial, n_set + n_add) || !row_inputs_ok(f, &rf, trial, n_set + n_add)) continue;
                memcpy(set, trial, (n_set + n_add) * sizeof *set);
                n_set += n_add;
                if (red) reductions++;
                else {
                    taken[n_taken++] = gy;
                    /* a consumer: a member reading a reduction of the set */
                    for (uint32_t k = 0; k < n_add && !consumer; k++)
                        for (uint32_t j = 0; j < g->nodes[add[k]].n_in; j++) {
                            uint32_t x = g->nodes[add[k]].in[j];
                            consumer |= in_list(set, n_set, x) && kiln_op_table[g->nodes[x].op].kind == KILN_KIND_REDUCTION;
                        }
                }
                for (uint32_t k = 0; k < n_add && n_front < 2 * LOOP_MAX_MEMBERS; k++) frontier[n_front++] = add[k];
            }
        }
        if (!consumer && reductions < 2) continue;
        for (uint32_t t = 0; t < n_taken; t++) {
            f->groups[taken[t]].dead = true;
            free(f->groups[taken[t]].members);
            f->groups[taken[t]].members = NULL;
            f->groups[taken[t]].n = 0;
        }
        group *gr = &f->groups[f->n_groups];
        gr->members = xcalloc(n_set, sizeof *gr->members);
        memcpy(gr->members, set, n_set * sizeof *set);
        gr->n = n_set;
        gr->dead = false;
        gr->kind = KILN_KERNEL_ROW;
        gr->parts = 1;
        for (uint32_t k = 0; k < n_set; k++) f->group_of[set[k]] = f->n_groups;
        f->n_groups++;
    }
}

/* Whether node x needs a kernel and no group has taken it yet. */
static bool free_node(const fuser *f, uint32_t x) { return f->has_kernel[x] && f->group_of[x] == KILN_NONE; }

/* A matmul that is one GEMM call takes the elementwise nodes after it into the GEMM's
 * store of each C tile (codegen/gemm.c, kiln_gemm_epilogue), in the order the store
 * applies them: [scale] → [+ bias row] → [activation] → [+ residual of C's shape]. A
 * value in the chain may be read elsewhere only before the activation (the GEMM then also
 * stores it: the pre-activation a training step's backward reads) and at the end. */
static void group_gemms(fuser *f, const readers *r)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *mm = &g->nodes[id];
        if (!f->has_kernel[id] || f->group_of[id] != KILN_NONE || !kiln_matmul_is_one_gemm(g, mm)) continue;
        uint32_t members[5], count = 0, v = id, x;
        members[count++] = id;
        const kiln_type *ct = &mm->type;
        int64_t N = ct->dims[ct->rank - 1];
        x = sole_reader(g, r, v);
        /* not a scale by ±0: the epilogue's scale 0 means "none" (codegen.h), and x·0 is
         * not x (it is ±0, or NaN at inf and NaN) — such a scale runs as a kernel of its own */
        if (x != KILN_NONE && g->nodes[x].op == KILN_OP_SCALE && g->nodes[x].attrs.scalar != 0 && free_node(f, x))
            members[count++] = v = x;
        x = sole_reader(g, r, v);
        if (x != KILN_NONE && g->nodes[x].op == KILN_OP_ADD && free_node(f, x)) {
            uint32_t b = other_operand(&g->nodes[x], v);
            const kiln_type *bt = b != KILN_NONE ? &g->nodes[b].type : NULL;
            bool row = bt && bt->dtype == KILN_F32 && bt->rank >= 1 && bt->dims[bt->rank - 1] == N &&
                       kiln_type_numel(bt) == N && kiln_type_equal(&g->nodes[x].type, ct);
            if (row) members[count++] = v = x;
        }
        /* the activation: v's only reader, or one of several (then v is also stored) */
        uint32_t act = KILN_NONE;
        for (uint32_t k = r->start[v]; k < r->start[v + 1]; k++) {
            uint32_t u = r->list[k];
            if (kiln_is_gemm_activation(g->nodes[u].op) && free_node(f, u)) {
                /* two: take neither. In a training step these are the forward's GELU and
                 * the copy kiln_recompute_light builds for the backward pass; taking the
                 * first, with the pre-activation also stored, made char_gpt's six MLP-up
                 * GEMMs ~2.4 ms slower each at one thread (Zen 4) where the GELU kernel it
                 * saves takes ~1 ms (docs/performance.md, 2026-12-08) */
                act = act == KILN_NONE ? u : KILN_NONE - 1;
            }
        }
        if (act != KILN_NONE && act != KILN_NONE - 1) members[count++] = v = act;
        x = sole_reader(g, r, v);
        if (x != KILN_NONE && g->nodes[x].op == KILN_OP_ADD && free_node(f, x)) {
            uint32_t res = other_operand(&g->nodes[x], v);
            if (res != KILN_NONE && !in_list(members, count, res) && kiln_type_equal(&g->nodes[res].type, ct) &&
                kiln_type_equal(&g->nodes[x].type, ct))
                members[count++] = v = x;
        }
        if (count == 1) continue;
        /* members are in chain order, which is node order */
        while (count > 1 && !loop_valid(f, members, count)) count--;
        if (count == 1) continue;
        group *gr = &f->groups[f->n_groups];
        gr->members = xcalloc(count, sizeof *gr->members);
        memcpy(gr->members, members, count * sizeof *members);
        gr->n = count;
        gr->dead = false;
        gr->parts = 1;
        gr->kind = KILN_KERNEL_GEMM;
        for (uint32_t i = 0; i < count; i++) f->group_of[members[i]] = f->n_groups;
        f->n_groups++;
    }
}

/* ---- bias gradients ---------------------------------------------------------------------------- */

/* The memory node a value reads (through reshapes no kernel computes: views). */
static uint32_t view_root(const fuser *f, uint32_t x)
{
    while (f->g->nodes[x].op == KILN_OP_RESHAPE && !f->has_kernel[x]) x = f->g->nodes[x].in[0];
    return x;
}

/* Whether node s is a bias gradient: an f32 sum over every axis of its input y but the
 * last, with y's last dim kept as the result (rank 1). Its input, as rows of N values,
 * is then a (K, N) matrix whose column sums s holds. */
static bool is_column_sum(const kiln_graph *g, const kiln_node *s)
{
    if (s->op != KILN_OP_SUM || s->type.dtype != KILN_F32 || s->attrs.keepdims || s->type.rank != 1) return false;
    const kiln_type *yt = &g->nodes[s->in[0]].type;
    if (yt->dtype != KILN_F32 || yt->rank < 2 || s->attrs.n_axes != yt->rank - 1) return false;
    for (int i = 0; i < s->attrs.n_axes; i++)
        if (s->attrs.axes[i] != i) return false;
    return yt->dims[yt->rank - 1] == s->type.dims[0];
}

/* A bias gradient (is_column_sum) joins the GEMM kernel of a matmul that reads the same
 * memory along k (kiln_gemm_sums_operand): the kernel sums the operand's lanes as well
 * (codegen/lower_gemm_kernel.c), so the sum costs no kernel of its own. Runs before the
 * sibling GEMMs are grouped: dWq, dWk and dWv then stay one kernel of three parts, each
 * with its own sum. The matmul may already have an epilogue; a kernel takes one sum. */
static void group_bias_grads(fuser *f, const readers *r)
{
    const kiln_graph *g = f->g;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *s = &g->nodes[id];
        if (!free_node(f, id) || !is_column_sum(g, s)) continue;
        uint32_t y = view_root(f, s->in[0]);
        /* the matmuls reading y's memory, through views: the first free one that walks it along k */
        uint32_t stack[8] = {y}, top = 1, pick = KILN_NONE;
        while (top > 0 && pick == KILN_NONE) {
            uint32_t v = stack[--top];
            for (uint32_t k = r->start[v]; k < r->start[v + 1] && pick == KILN_NONE; k++) {
                uint32_t u = r->list[k];
                const kiln_node *un = &g->nodes[u];
                if (un->op == KILN_OP_RESHAPE && !f->has_kernel[u]) {
                    if (top < 8) stack[top++] = u;
                    continue;
                }
                int side;
                if (!f->has_kernel[u] || !kiln_gemm_sums_operand(g, un, y, s->type.dims[0], &side)) continue;
                uint32_t gu = f->group_of[u];
                if (gu != KILN_NONE && f->groups[gu].kind != KILN_KERNEL_GEMM) continue;
                bool has_sum = false;
                for (uint32_t i = 0; gu != KILN_NONE && i < f->groups[gu].n; i++)
                    has_sum |= g->nodes[f->groups[gu].members[i]].op == KILN_OP_SUM;
                if (!has_sum) pick = u;
            }
        }
        if (pick == KILN_NONE) continue;
        uint32_t gu = f->group_of[pick], members[8], n = 0;
        if (gu == KILN_NONE) members[n++] = pick;
        else
            for (uint32_t i = 0; i < f->groups[gu].n; i++) members[n++] = f->groups[gu].members[i];
        members[n++] = id;
        qsort(members, n, sizeof *members, cmp_u32);
        if (!loop_valid(f, members, n)) continue;
        if (gu == KILN_NONE) {
            gu = f->n_groups++;
            f->groups[gu] = (group){NULL, 0, false, KILN_KERNEL_GEMM, 1};
        }
        group *gr = &f->groups[gu];
        gr->members = realloc(gr->members, n * sizeof *members);
        KILN_ASSERT(gr->members != NULL);
        memcpy(gr->members, members, n * sizeof *members);
        gr->n = n;
        for (uint32_t i = 0; i < n; i++) f->group_of[members[i]] = gu;
    }
}

/* ---- multi-tensor kernels -------------------------------------------------------------------- */

/* A training step ends with the same few elementwise ops once per parameter (AdamW's
 * update of p, m and v), and clipping needs Σg² of every gradient first (a square and a
 * sum over every element). Each is a small kernel on its own, a hundred times over; as
 * one MULTI kernel their launches, and the thread pool's wake-ups, are paid once, and
 * the work is split across threads by element, not by tensor.
 *
 * A part is a LOOP group (elementwise nodes of one shape S), optionally with a sum over
 * every element of one of its members, and it qualifies when it holds an update's new
 * value or ends in such a sum: those are the groups that run at the end of a step
 * anyway (after every gradient when the gradients are clipped), so gathering them moves
 * no work later. Every outside operand of a part must have S's element count (read at
 * the same element) or one element (a scalar, read at 0). Parts join one kernel when
 * they are wired alike (equal `part_key`: ops, attributes, where each input comes from,
 * which values leave) and the kernel stays acyclic, with no part reading another's
 * member. */

#define MULTI_KEY_MAX 8192
#define MULTI_MAX_PARTS 4096

typedef struct part {
    uint32_t group;     /* its LOOP group */
    uint32_t *members;  /* the group's members [+ the sum], node order */
    uint32_t n;
    char *key;
} part;

static bool key_add(char *buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool key_add(char *buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *len, MULTI_KEY_MAX - *len, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= MULTI_KEY_MAX - *len) return false;
    *len += (size_t)w;
    return true;
}

/* The key of the part members[0..n) (sorted), or false when it is no part: an operand of
 * another size, a dropout, or too long a key. */
static bool part_key(const fuser *f, const readers *r, const uint32_t *members, uint32_t n, char *key)
{
    const kiln_graph *g = f->g;
    int64_t numel = kiln_type_numel(&g->nodes[members[0]].type);
    uint32_t outside[LOOP_MAX_INPUTS + 2], n_out = 0;
    size_t len = 0;
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; i++) {
        uint32_t id = members[i];
        const kiln_node *m = &g->nodes[id];
        if (m->op == KILN_OP_DROPOUT) return false;
        /* (a SUM here is over every element: its axes are all of its input's) */
        ok = key_add(key, &len, "%s d%d s%a(", kiln_op_table[m->op].name, m->type.dtype, m->attrs.scalar);
        for (uint32_t j = 0; j < m->n_in && ok; j++) {
            uint32_t x = m->in[j];
            const uint32_t *in = bsearch(&x, members, n, sizeof *members, cmp_u32);
            if (in) {
                ok = key_add(key, &len, " m%td", in - members);
                continue;
            }
            int64_t xn = kiln_type_numel(&g->nodes[x].type);
            if (xn != numel && xn != 1) return false;
            uint32_t o = 0;
            while (o < n_out && outside[o] != x) o++;
            if (o == n_out) {
                if (n_out == LOOP_MAX_INPUTS + 2) return false;
                outside[n_out++] = x;
            }
            ok = key_add(key, &len, " o%u%c%d", o, xn == numel ? 'f' : 's', g->nodes[x].type.dtype);
        }
        /* whether the value leaves the part, and which operand an update overwrites */
        bool leaves = false;
        for (uint32_t o = 0; o < g->n_outputs; o++) leaves |= g->outputs[o].node == id;
        for (uint32_t k = r->start[id]; k < r->start[id + 1]; k++)
            leaves |= !bsearch(&r->list[k], members, n, sizeof *members, cmp_u32);
        for (uint32_t u = 0; u < g->n_updates && ok; u++) {
            if (g->updates[u].value != id) continue;
            uint32_t o = 0;
            while (o < n_out && outside[o] != g->updates[u].target) o++;
            ok = key_add(key, &len, " u%d", o < n_out ? (int)o : -1);
            leaves = true;
        }
        ok = ok && key_add(key, &len, ")%s;", leaves ? "*" : "");
    }
    return ok;
}

/* The part of LOOP group gi, or false. */
static bool make_part(fuser *f, const readers *r, uint32_t gi, part *p, char *key)
{
    const kiln_graph *g = f->g;
    const group *gr = &f->groups[gi];
    if (kiln_type_numel(&g->nodes[gr->members[0]].type) <= 0) return false;
    bool update = false;
    uint32_t sum = KILN_NONE;
    for (uint32_t i = 0; i < gr->n; i++) {
        uint32_t id = gr->members[i];
        update |= is_update(g, id);
        for (uint32_t k = r->start[id]; k < r->start[id + 1] && sum == KILN_NONE; k++) {
            uint32_t y = r->list[k];
            const kiln_node *yn = &g->nodes[y];
            if (yn->op == KILN_OP_SUM && free_node(f, y) && yn->type.dtype == KILN_F32 &&
                yn->attrs.n_axes == g->nodes[id].type.rank && yn->n_in == 1)
                sum = y;
        }
    }
    if (!update && sum == KILN_NONE) return false;
    p->group = gi;
    p->n = gr->n + (sum != KILN_NONE);
    p->members = xcalloc(p->n, sizeof *p->members);
    memcpy(p->members, gr->members, gr->n * sizeof *p->members);
    if (sum != KILN_NONE) p->members[gr->n] = sum;
    qsort(p->members, p->n, sizeof *p->members, cmp_u32);
    if (!part_key(f, r, p->members, p->n, key)) {
        free(p->members);
        return false;
    }
    p->key = strdup(key);
    KILN_ASSERT(p->key != NULL);
    return true;
}

/* Whether a member of one of the two sets reads a member of the other. */
static bool reads_across(fuser *f, const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
    for (int pass = 0; pass < 2; pass++) {
        const uint32_t *x = pass ? b : a, *y = pass ? a : b;
        uint32_t nx = pass ? nb : na, ny = pass ? na : nb;
        uint32_t stamp = ++f->stamp;
        for (uint32_t i = 0; i < nx; i++) f->mark[x[i]] = stamp;
        for (uint32_t i = 0; i < ny; i++)
            for (uint32_t j = 0; j < f->g->nodes[y[i]].n_in; j++)
                if (f->mark[f->g->nodes[y[i]].in[j]] == stamp) return true;
    }
    return false;
}

/* Tries to add part q to the kernel whose members (part after part) are have[0..n_have);
 * true when the union stays acyclic and no part reads another. */
static bool multi_fits(fuser *f, const uint32_t *have, uint32_t n_have, const part *q)
{
    if (reads_across(f, have, n_have, q->members, q->n)) return false;
    uint32_t *all = xcalloc(n_have + q->n, sizeof *all);
    memcpy(all, have, n_have * sizeof *all);
    memcpy(all + n_have, q->members, q->n * sizeof *all);
    qsort(all, n_have + q->n, sizeof *all, cmp_u32);
    bool ok = acyclic(f, all, n_have + q->n);
    free(all);
    return ok;
}

static int by_key_then_first(const void *a, const void *b)
{
    const part *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : cmp_u32(&x->members[0], &y->members[0]);
}

/* Moves part q into group gi (a MULTI group), retiring q's LOOP group. */
static void multi_take(fuser *f, uint32_t gi, const part *q)
{
    group *gr = &f->groups[gi];
    gr->members = realloc(gr->members, (gr->n + q->n) * sizeof *gr->members);
    KILN_ASSERT(gr->members != NULL);
    memcpy(gr->members + gr->n, q->members, q->n * sizeof *q->members);
    gr->n += q->n;
    gr->parts++;
    group *old = &f->groups[q->group];
    old->dead = true;
    free(old->members);
    old->members = NULL;
    old->n = 0;
    for (uint32_t i = 0; i < q->n; i++) f->group_of[q->members[i]] = gi;
}

static void group_multi(fuser *f, const readers *r)
{
    uint32_t n_groups = f->n_groups;
    part *parts = xcalloc(n_groups, sizeof *parts);
    uint32_t n_parts = 0;
    char *key = xcalloc(MULTI_KEY_MAX, 1);
    for (uint32_t gi = 0; gi < n_groups; gi++)
        if (!f->groups[gi].dead && f->groups[gi].kind == KILN_KERNEL_LOOP && make_part(f, r, gi, &parts[n_parts], key))
            n_parts++;
    free(key);
    qsort(parts, n_parts, sizeof *parts, by_key_then_first);
    /* each run of equal keys, in node order: a part joins the first kernel of its key it
     * fits; a kernel starts as a lone part and becomes a MULTI group at its second */
    uint32_t *open = xcalloc(n_parts ? n_parts : 1, sizeof *open); /* a part index, or a group | bit 31 */
    for (uint32_t a = 0, b; a < n_parts; a = b) {
        for (b = a; b < n_parts && strcmp(parts[b].key, parts[a].key) == 0;) b++;
        uint32_t n_open = 0;
        for (uint32_t q = a; q < b; q++) {
            bool placed = false;
            for (uint32_t o = 0; o < n_open && !placed; o++) {
                if (open[o] >> 31) {
                    uint32_t gi = open[o] & 0x7fffffffu;
                    group *gr = &f->groups[gi];
                    if (gr->parts >= MULTI_MAX_PARTS || !multi_fits(f, gr->members, gr->n, &parts[q])) continue;
                    multi_take(f, gi, &parts[q]);
                } else {
                    const part *first = &parts[open[o]];
                    if (!multi_fits(f, first->members, first->n, &parts[q])) continue;
                    uint32_t gi = f->n_groups++;
                    f->groups[gi] = (group){xcalloc(1, sizeof(uint32_t)), 0, false, KILN_KERNEL_MULTI, 0};
                    multi_take(f, gi, first);
                    multi_take(f, gi, &parts[q]);
                    open[o] = gi | 1u << 31;
                }
                placed = true;
            }
            if (!placed) open[n_open++] = q;
        }
    }
    for (uint32_t i = 0; i < n_parts; i++) {
        free(parts[i].members);
        free(parts[i].key);
    }
    free(open);
    free(parts);
}

/* Sibling GEMMs: kernels that are one GEMM [with its epilogue], wired alike (equal
 * shapes, flags and epilogues) and reading one same operand — an attention's q, k and v
 * projections of one input, or their weight gradients, which all read that input — run
 * as one GEMM kernel of several parts when none depends on another. */
#define GEMM_MAX_PARTS 4
/* Siblings are near each other in the graph's order: GEMMs far apart reading one value
 * (a checkpointed block's recomputed projection and the forward's) would move work across
 * the schedule and lengthen lives — the recomputation would run in the forward. */
#define GEMM_SIBLING_WINDOW 48

/* The members of the GEMM chain starting at matmul mm: its group's, or mm alone. */
static uint32_t gemm_chain(const fuser *f, uint32_t mm, const uint32_t **members)
{
    uint32_t gi = f->group_of[mm];
    if (gi == KILN_NONE) {
        *members = NULL;
        return 1;
    }
    *members = f->groups[gi].members;
    return f->groups[gi].n;
}

static bool gemm_key(const fuser *f, const readers *r, uint32_t mm, char *key)
{
    const kiln_graph *g = f->g;
    const uint32_t *ms;
    uint32_t n = gemm_chain(f, mm, &ms);
    size_t len = 0;
    char t[160];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = ms ? ms[i] : mm;
        const kiln_node *m = &g->nodes[id];
        if (!key_add(key, &len, "%s %s s%a t%d%d (", kiln_op_table[m->op].name, kiln_type_str(&m->type, t, sizeof t),
                     m->attrs.scalar, m->attrs.transpose_a, m->attrs.transpose_b))
            return false;
        for (uint32_t j = 0; j < m->n_in; j++) {
            uint32_t x = m->in[j];
            bool inside = false;
            for (uint32_t q = 0; q < n && ms; q++) inside |= ms[q] == x;
            if (!key_add(key, &len, "%s ", inside ? "m" : kiln_type_str(&g->nodes[x].type, t, sizeof t))) return false;
        }
        bool leaves = is_output_or_update(g, id);
        for (uint32_t k = r->start[id]; k < r->start[id + 1]; k++) {
            bool inside = false;
            for (uint32_t q = 0; q < n && ms; q++) inside |= ms[q] == r->list[k];
            leaves |= !inside;
        }
        if (!key_add(key, &len, ")%s;", leaves ? "*" : "")) return false;
    }
    return true;
}

static void group_sibling_gemms(fuser *f, const readers *r)
{
    const kiln_graph *g = f->g;
    char *key = xcalloc(MULTI_KEY_MAX, 1), *other = xcalloc(MULTI_KEY_MAX, 1);
    for (uint32_t mm = 0; mm < g->n_nodes; mm++) {
        const kiln_node *n = &g->nodes[mm];
        if (!f->has_kernel[mm] || !kiln_matmul_is_one_gemm(g, n)) continue;
        uint32_t gi = f->group_of[mm];
        if (gi != KILN_NONE && (f->groups[gi].kind != KILN_KERNEL_GEMM || f->groups[gi].parts != 1)) continue;
        if (!gemm_key(f, r, mm, key)) continue;
        /* later matmuls reading one of mm's operands in the same slot */
        uint32_t sib[GEMM_MAX_PARTS], n_sib = 0;
        for (uint32_t slot = 0; slot < 2 && n_sib == 0; slot++) {
            /* the operand, or another reshape view of the same memory of its type (a
             * graph without CSE reshapes one value once per reader) */
            uint32_t x = n->in[slot], root = x;
            while (g->nodes[root].op == KILN_OP_RESHAPE && !f->has_kernel[root]) root = g->nodes[root].in[0];
            uint32_t views[8], n_views = 0;
            views[n_views++] = x;
            for (uint32_t k = r->start[root]; k < r->start[root + 1] && n_views < 8; k++) {
                uint32_t v = r->list[k];
                if (v != x && g->nodes[v].op == KILN_OP_RESHAPE && !f->has_kernel[v] &&
                    kiln_type_equal(&g->nodes[v].type, &g->nodes[x].type))
                    views[n_views++] = v;
            }
            if (root != x && n_views < 8 && kiln_type_equal(&g->nodes[root].type, &g->nodes[x].type)) views[n_views++] = root;
            for (uint32_t vi = 0; vi < n_views; vi++)
            for (uint32_t k = r->start[views[vi]]; k < r->start[views[vi] + 1] && n_sib < GEMM_MAX_PARTS - 1; k++) {
                uint32_t y = r->list[k];
                const kiln_node *yn = &g->nodes[y];
                if (y <= mm || y - mm > GEMM_SIBLING_WINDOW || yn->op != KILN_OP_MATMUL || yn->in[slot] != views[vi] ||
                    in_list(sib, n_sib, y))
                    continue;
                if (!f->has_kernel[y] || !kiln_matmul_is_one_gemm(g, yn)) continue;
                uint32_t gy = f->group_of[y];
                if (gy != KILN_NONE && (f->groups[gy].kind != KILN_KERNEL_GEMM || f->groups[gy].parts != 1)) continue;
                if (!gemm_key(f, r, y, other) || strcmp(key, other) != 0) continue;
                sib[n_sib++] = y;
            }
        }
        if (n_sib == 0) continue;
        /* the kernel: mm's chain, then each sibling's that still fits */
        const uint32_t *ms;
        uint32_t per = gemm_chain(f, mm, &ms);
        uint32_t *have = xcalloc(per * GEMM_MAX_PARTS, sizeof *have), n_have = per, parts = 1;
        memcpy(have, ms ? ms : &mm, per * sizeof *have);
        for (uint32_t i = 0; i < n_sib; i++) {
            const uint32_t *ys;
            gemm_chain(f, sib[i], &ys);
            part q = {KILN_NONE, (uint32_t *)(ys ? ys : &sib[i]), per, NULL};
            if (!multi_fits(f, have, n_have, &q)) continue;
            memcpy(have + n_have, q.members, per * sizeof *have);
            n_have += per;
            parts++;
        }
        if (parts == 1) {
            free(have);
            continue;
        }
        uint32_t into = f->n_groups++;
        for (uint32_t i = 0; i < n_have; i++) {
            uint32_t old = f->group_of[have[i]];
            if (old != KILN_NONE && !f->groups[old].dead) {
                f->groups[old].dead = true;
                free(f->groups[old].members);
                f->groups[old].members = NULL;
                f->groups[old].n = 0;
            }
            f->group_of[have[i]] = into;
        }
        f->groups[into] = (group){have, n_have, false, KILN_KERNEL_GEMM, parts};
    }
    free(key);
    free(other);
}

/* ---- the schedule ---------------------------------------------------------------------------- */

static int by_first_member(const void *a, const void *b, void *ctx)
{
    const uint32_t *members = ctx;
    const kiln_kernel *x = a, *y = b;
    return cmp_u32(&members[x->first], &members[y->first]);
}

/* The kernel that computes the memory node x reads from (through views), or KILN_NONE
 * for a source or a constant global. */
static uint32_t producer(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t x)
{
    while (s->kernel_of[x] == KILN_NONE && (g->nodes[x].op == KILN_OP_RESHAPE || s->view[x])) x = g->nodes[x].in[0];
    return s->kernel_of[x];
}

/* Puts the kernels (sorted by first member) into an order where each runs after the
 * kernels it reads from: of the kernels whose inputs are ready, always the one with the
 * earliest first member, so the order stays close to the graph's (and its memory use
 * close to what the graph's author arranged). A group may read a node that comes after
 * its first member (loop_valid allows it when that node does not depend on the group). */
static void order_kernels(const kiln_graph *g, kiln_kernel_schedule *s)
{
    uint32_t nk = s->n_kernels;
    /* the edges producer → reader, grouped by producer (counting sort) */
    uint32_t n_edges = 0;
    for (uint32_t i = 0; i < s->n_members; i++) n_edges += 3 * g->nodes[s->members[i]].n_in;
    uint32_t *from = xcalloc(n_edges, sizeof *from), *to = xcalloc(n_edges, sizeof *to);
    uint32_t *start = xcalloc(nk + 1, sizeof *start), *reader = xcalloc(n_edges, sizeof *reader);
    uint32_t *waiting = xcalloc(nk, sizeof *waiting), *order = xcalloc(nk, sizeof *order);
    uint32_t e = 0;
    for (uint32_t k = 0; k < nk; k++)
        for (uint32_t i = 0; i < s->kernels[k].n; i++) {
            const kiln_node *m = &g->nodes[s->members[s->kernels[k].first + i]];
            for (uint32_t j = 0; j < m->n_in; j++) {
                uint32_t src[3], n_src = kiln_schedule_reads(g, s, m->in[j], src);
                for (uint32_t q = 0; q < n_src; q++) {
                    uint32_t p = producer(g, s, src[q]);
                    if (p == KILN_NONE || p == k) continue;
                    from[e] = p, to[e] = k, e++;
                    waiting[k]++;
                    start[p + 1]++;
                }
            }
        }
    for (uint32_t k = 0; k < nk; k++) start[k + 1] += start[k];
    uint32_t *fill = xcalloc(nk, sizeof *fill);
    for (uint32_t i = 0; i < e; i++) reader[start[from[i]] + fill[from[i]]++] = to[i];

    /* always the ready kernel with the earliest first member: a scan from the lowest
     * not-yet-run index (kernels are sorted by first member) */
    unsigned char *done = xcalloc(nk, 1);
    uint32_t n_done = 0, lowest = 0;
    while (n_done < nk) {
        while (done[lowest]) lowest++;
        uint32_t pick = lowest;
        while (pick < nk && (waiting[pick] != 0 || done[pick])) pick++;
        KILN_ASSERT(pick < nk); /* loop_valid keeps the kernel graph acyclic */
        done[pick] = 1;
        order[n_done++] = pick;
        for (uint32_t r = start[pick]; r < start[pick + 1]; r++) waiting[reader[r]]--;
    }
    kiln_kernel *sorted = xcalloc(nk, sizeof *sorted);
    for (uint32_t i = 0; i < nk; i++) sorted[i] = s->kernels[order[i]];
    memcpy(s->kernels, sorted, nk * sizeof *sorted);
    for (uint32_t ki = 0; ki < nk; ki++)
        for (uint32_t i = 0; i < s->kernels[ki].n; i++) s->kernel_of[s->members[s->kernels[ki].first + i]] = ki;
    free(sorted);
    free(done);
    free(fill);
    free(order);
    free(waiting);
    free(reader);
    free(start);
    free(to);
    free(from);
}

/* An attention result that its kernel writes only through its transpose member y (the
 * head merge) and that is read outside the kernel only as the forward output `o` of
 * attention_grad nodes lives in y's buffer (stored_as): the gradient kernels read it
 * there with y's strides, so no row-major copy of it is written or kept. */
static void attention_stored_as(const kiln_graph *g, const kiln_fuse_request *req, kiln_kernel_schedule *s)
{
    uint32_t nn = g->n_nodes;
    s->stored_as = xcalloc(nn, sizeof *s->stored_as);
    unsigned char *other = xcalloc(nn, 1); /* read by something else than an attention_grad's o */
    for (uint32_t o = 0; o < g->n_outputs; o++) other[g->outputs[o].node] = 1;
    for (uint32_t u = 0; u < g->n_updates; u++) other[g->updates[u].value] = 1;
    for (uint32_t id = 0; id < nn; id++) {
        s->stored_as[id] = KILN_NONE;
        if (!req->live[id]) continue;
        const kiln_node *n = &g->nodes[id];
        uint32_t o_at = KILN_NONE;
        if (n->op == KILN_OP_ATTENTION_GRAD) {
            uint32_t base = 3 + (n->attrs.has_mask ? 1 : 0) + (n->attrs.has_bias ? 1 : 0);
            if (n->n_in == base + 3) o_at = base;
        }
        for (uint32_t j = 0; j < n->n_in; j++)
            if (j != o_at && (s->kernel_of[id] == KILN_NONE || s->kernel_of[id] != s->kernel_of[n->in[j]]))
                other[n->in[j]] = 1;
    }
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        if (kn->kind != KILN_KERNEL_ATTENTION) continue;
        uint32_t att = KILN_NONE, y = KILN_NONE;
        for (uint32_t i = 0; i < kn->n; i++)
            if (g->nodes[s->members[kn->first + i]].op == KILN_OP_ATTENTION) att = s->members[kn->first + i];
        for (uint32_t i = 0; i < kn->n && att != KILN_NONE; i++) {
            uint32_t m = s->members[kn->first + i];
            if (g->nodes[m].op == KILN_OP_TRANSPOSE && g->nodes[m].in[0] == att) y = m;
        }
        if (att != KILN_NONE && y != KILN_NONE && !s->internal[att] && !other[att] && !s->internal[y])
            s->stored_as[att] = y;
    }
    free(other);
}

bool kiln_fuse(const kiln_graph *g, const kiln_fuse_request *req, kiln_kernel_schedule *s, kiln_diags *d)
{
    (void)d;
    memset(s, 0, sizeof *s);
    uint32_t nn = g->n_nodes;
    s->n_nodes = nn;
    s->kernel_of = xcalloc(nn, sizeof *s->kernel_of);
    s->internal = xcalloc(nn, 1);
    s->members = xcalloc(nn, sizeof *s->members);
    s->kernels = xcalloc(nn, sizeof *s->kernels);
    unsigned char *has_kernel = xcalloc(nn, 1);
    for (uint32_t id = 0; id < nn; id++) {
        has_kernel[id] = node_has_kernel(g, req->live, id);
        s->kernel_of[id] = KILN_NONE;
    }

    /* groups: at most one per node, and a MULTI group per two of them */
    fuser f = {g, req, has_kernel, xcalloc(nn, sizeof(uint32_t)), xcalloc(nn + nn / 2 + 1, sizeof(group)), 0,
               xcalloc(nn, sizeof(uint32_t)), 0, xcalloc(nn + nn / 2 + 1, sizeof(uint32_t)),
               xcalloc(nn, sizeof(uint32_t))};
    for (uint32_t id = 0; id < nn; id++) f.group_of[id] = KILN_NONE;
    s->view = xcalloc(nn, 1);
    s->rope = xcalloc(nn, 1);
    readers r = readers_of(g, req->live);
    if (req->enable_loop) find_ropes(&f, &r, s->rope);
    if (req->enable_loop) fold_input_transposes(&f, &r, s->view, s->rope);
    group_attention(&f, &r, s->rope);
    if (req->enable_gemm) group_gemms(&f, &r);
    if (req->enable_gemm) group_bias_grads(&f, &r);
    if (req->enable_gemm) group_sibling_gemms(&f, &r);
    group_loops(&f);
    if (req->enable_loop) group_rows(&f, &r);
    if (req->enable_loop) group_multi(&f, &r);
    if (req->enable_loop) group_reductions(&f);
    free(r.start);
    free(r.list);

    /* kernels: each live group, then every other node with a kernel on its own */
    for (uint32_t gi = 0; gi < f.n_groups; gi++) {
        group *gr = &f.groups[gi];
        if (gr->dead) continue;
        kiln_kernel *k = &s->kernels[s->n_kernels++];
        k->kind = gr->kind == KILN_KERNEL_LOOP && gr->n == 1 ? KILN_KERNEL_NODE : gr->kind;
        k->parts = gr->parts;
        k->first = s->n_members;
        k->n = gr->n;
        for (uint32_t i = 0; i < gr->n; i++) s->members[s->n_members++] = gr->members[i];
    }
    for (uint32_t id = 0; id < nn; id++) {
        if (!has_kernel[id] || f.group_of[id] != KILN_NONE) continue;
        kiln_kernel *k = &s->kernels[s->n_kernels++];
        k->kind = KILN_KERNEL_NODE;
        k->parts = 1;
        k->first = s->n_members;
        k->n = 1;
        s->members[s->n_members++] = id;
    }
    qsort_r(s->kernels, s->n_kernels, sizeof *s->kernels, by_first_member, s->members);
    for (uint32_t ki = 0; ki < s->n_kernels; ki++)
        for (uint32_t i = 0; i < s->kernels[ki].n; i++) s->kernel_of[s->members[s->kernels[ki].first + i]] = ki;
    order_kernels(g, s);

    /* internal values: read only inside their own kernel */
    unsigned char *escapes = xcalloc(nn, 1);
    for (uint32_t o = 0; o < g->n_outputs; o++) escapes[g->outputs[o].node] = 1;
    for (uint32_t u = 0; u < g->n_updates; u++) escapes[g->updates[u].value] = 1;
    for (uint32_t id = 0; id < nn; id++) {
        if (!req->live[id]) continue;
        const kiln_node *n = &g->nodes[id];
        for (uint32_t j = 0; j < n->n_in; j++) {
            uint32_t x = n->in[j];
            if (s->kernel_of[id] == KILN_NONE || s->kernel_of[id] != s->kernel_of[x]) escapes[x] = 1;
        }
    }
    for (uint32_t id = 0; id < nn; id++)
        s->internal[id] = s->kernel_of[id] != KILN_NONE && !escapes[id] &&
                          s->kernels[s->kernel_of[id]].kind != KILN_KERNEL_NODE;
    attention_stored_as(g, req, s);

    for (uint32_t gi = 0; gi < f.n_groups; gi++) free(f.groups[gi].members);
    free(f.groups);
    free(f.group_of);
    free(f.mark);
    free(f.group_mark);
    free(f.stack);
    free(escapes);
    free(has_kernel);
    return true;
}

const char *kiln_kernel_kind_name(kiln_kernel_kind kind)
{
    switch (kind) {
    case KILN_KERNEL_NODE: return "node";
    case KILN_KERNEL_LOOP: return "loop";
    case KILN_KERNEL_ATTENTION: return "attention";
    case KILN_KERNEL_ATTENTION_GRAD: return "attention_grad";
    case KILN_KERNEL_GEMM: return "gemm";
    case KILN_KERNEL_MULTI: return "multi";
    case KILN_KERNEL_REDUCE: return "reduce";
    case KILN_KERNEL_ROW: return "row";
    }
    return "?";
}

void kiln_schedule_free(kiln_kernel_schedule *s)
{
    free(s->kernels);
    free(s->members);
    free(s->kernel_of);
    free(s->internal);
    free(s->view);
    free(s->rope);
    free(s->stored_as);
    memset(s, 0, sizeof *s);
}
