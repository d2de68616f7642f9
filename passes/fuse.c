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
 * The order condition that keeps every schedule valid: a kernel runs at the position of
 * its first member (in node order), so every input a member reads from outside the
 * kernel must come from a node before that first member. Nodes are topologically
 * ordered, so then every kernel's inputs are computed before it runs and every reader of
 * its results runs after it.
 *
 * A member's value is `internal` — it never gets a buffer — when every reader is a member
 * of the same kernel and it is neither a graph output nor an update's new value.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* Members a LOOP kernel may have, and outside operands (buffers) it may touch: bounded
 * so a kernel's parameter list and register pressure stay small. */
#define LOOP_MAX_MEMBERS 48
#define LOOP_MAX_INPUTS 15

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    KILN_ASSERT(p != NULL);
    return p;
}

bool kiln_node_has_kernel(const kiln_graph *g, const unsigned char *live, uint32_t id)
{
    if (!live[id]) return false;
    const kiln_node *n = &g->nodes[id];
    if (n->op == KILN_OP_INPUT || n->op == KILN_OP_PARAM || n->op == KILN_OP_STATE) return false;
    bool output = false;
    for (uint32_t o = 0; o < g->n_outputs && !output; o++) output = g->outputs[o].node == id;
    if (output) return true;
    if (n->op == KILN_OP_RESHAPE) return false;
    if (n->op == KILN_OP_CONSTANT && n->attrs.n_values == kiln_type_numel(&n->type)) return false;
    return true;
}

/* ---- grouping ------------------------------------------------------------------------------- */

typedef struct group {
    uint32_t *members; /* sorted by node id */
    uint32_t n;
    bool dead;         /* merged into another */
} group;

typedef struct fuser {
    const kiln_graph *g;
    const kiln_fuse_request *req;
    const unsigned char *has_kernel;
    uint32_t *group_of; /* per node: its LOOP group, or KILN_NONE */
    group *groups;
    uint32_t n_groups;
} fuser;

static bool loop_fusable(const fuser *f, uint32_t id)
{
    const kiln_node *n = &f->g->nodes[id];
    if (!f->has_kernel[id] || kiln_op_table[n->op].kind != KILN_KIND_ELEMENTWISE) return false;
    if (n->op == KILN_OP_DROPOUT && f->req->dropout_alone) return false;
    return kiln_type_numel(&n->type) > 0;
}

static bool in_list(const uint32_t *list, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (list[i] == id) return true;
    return false;
}

/* Whether members[0..n) (sorted) can be one kernel: every outside input comes before the
 * first member, and there are not too many of them (with one result per member at most,
 * a kernel has fewer than 64 operands: codegen's CG_MAX_OPS). */
static bool loop_valid(const fuser *f, const uint32_t *members, uint32_t n)
{
    if (n > LOOP_MAX_MEMBERS) return false;
    uint32_t first = members[0], operands = 0;
    uint32_t seen[LOOP_MAX_MEMBERS * 3];
    for (uint32_t i = 0; i < n; i++) {
        const kiln_node *m = &f->g->nodes[members[i]];
        for (uint32_t j = 0; j < m->n_in; j++) {
            uint32_t x = m->in[j];
            if (in_list(members, n, x)) continue;
            if (x >= first) return false;
            if (!in_list(seen, operands, x)) seen[operands++] = x;
        }
    }
    return operands <= LOOP_MAX_INPUTS;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
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
            if (gx == KILN_NONE || in_list(cand, n_cand, gx)) continue;
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

/* ---- the schedule ---------------------------------------------------------------------------- */

static int by_first_member(const void *a, const void *b, void *ctx)
{
    const uint32_t *members = ctx;
    const kiln_kernel *x = a, *y = b;
    return cmp_u32(&members[x->first], &members[y->first]);
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
        has_kernel[id] = kiln_node_has_kernel(g, req->live, id);
        s->kernel_of[id] = KILN_NONE;
    }

    fuser f = {g, req, has_kernel, xcalloc(nn, sizeof(uint32_t)), xcalloc(nn, sizeof(group)), 0};
    for (uint32_t id = 0; id < nn; id++) f.group_of[id] = KILN_NONE;
    group_loops(&f);

    /* kernels: each live group, then every other node with a kernel on its own */
    for (uint32_t gi = 0; gi < f.n_groups; gi++) {
        group *gr = &f.groups[gi];
        if (gr->dead) continue;
        kiln_kernel *k = &s->kernels[s->n_kernels++];
        k->kind = gr->n > 1 ? KILN_KERNEL_LOOP : KILN_KERNEL_NODE;
        k->first = s->n_members;
        k->n = gr->n;
        for (uint32_t i = 0; i < gr->n; i++) s->members[s->n_members++] = gr->members[i];
    }
    for (uint32_t id = 0; id < nn; id++) {
        if (!has_kernel[id] || f.group_of[id] != KILN_NONE) continue;
        kiln_kernel *k = &s->kernels[s->n_kernels++];
        k->kind = KILN_KERNEL_NODE;
        k->first = s->n_members;
        k->n = 1;
        s->members[s->n_members++] = id;
    }
    qsort_r(s->kernels, s->n_kernels, sizeof *s->kernels, by_first_member, s->members);
    for (uint32_t ki = 0; ki < s->n_kernels; ki++)
        for (uint32_t i = 0; i < s->kernels[ki].n; i++) s->kernel_of[s->members[s->kernels[ki].first + i]] = ki;

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

    for (uint32_t gi = 0; gi < f.n_groups; gi++) free(f.groups[gi].members);
    free(f.groups);
    free(f.group_of);
    free(escapes);
    free(has_kernel);
    return true;
}

void kiln_schedule_free(kiln_kernel_schedule *s)
{
    free(s->kernels);
    free(s->members);
    free(s->kernel_of);
    free(s->internal);
    memset(s, 0, sizeof *s);
}
