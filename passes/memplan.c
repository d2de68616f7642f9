/* memplan.c — static memory planning: where every value of a compiled graph lives.
 *
 * Design (one pass over the nodes, then one placement):
 * 1. Homes. Parameters live in the parameter blob, in the request's order, each offset
 *    rounded up to 64 bytes; optimizer state (STATE nodes) likewise in the optimizer
 *    blob. Inputs are the caller's buffers. A node that is a graph
 *    output is computed straight into the caller's output buffer; when that is not
 *    possible (the output is an input, a parameter, a view, or a node that is already
 *    another output) the entry function copies it at the end. Constants with their
 *    full data are module globals (a splat constant is filled by a kernel instead, so a
 *    large zeros() costs no module size). A reshape is a view: it aliases the memory of
 *    its input, followed through chains of views. Everything else goes to the workspace.
 * 2. Liveness. A workspace value is live from the node that defines it to its last
 *    reader, where reading a view counts as reading the viewed value; a value copied to
 *    an output stays live to the end. A kernel's scratch is live only at its node. The
 *    intervals are inclusive, so a kernel's result never shares memory with its inputs
 *    (kernels take noalias pointers).
 *    In place: an elementwise (LOOP) kernel whose one stored result has the type of a
 *    workspace input that dies at this kernel, read there only directly (each element
 *    before the same element is written, by the one thread that writes it), writes over
 *    that input: the two share one buffer (see in_place; a training step's backward
 *    multiplies dy by a derivative this way).
 * 3. Placement. Buffers (sizes rounded up to 64 bytes) are placed largest first; each
 *    goes into the smallest gap between the buffers already placed whose intervals meet
 *    its own (best fit), or above the highest of them. Greedy by size is what
 *    tinygrad's and TFLite's planners do; it is close to the lower bound (the largest
 *    live set) on transformer graphs. It is not always at it, so the placement is also
 *    tried in order of first use (longest life first among equals) and of life length,
 *    and the smallest of the three is kept.
 *
 * 4. Updates (the training step's new parameters and optimizer state, a KV cache): see
 *    place_updates — computed in place when nothing reads the old value afterwards,
 *    else copied at the end. An update_slice of the target computed in place writes
 *    only its slice (a KV cache's new row).
 *
 * kiln_memplan_check re-derives every buffer from the plan and checks the invariants;
 * the tests run it on every plan.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static int64_t round_up(int64_t n) { return (n + KILN_PLAN_ALIGN - 1) / KILN_PLAN_ALIGN * KILN_PLAN_ALIGN; }

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    KILN_ASSERT(p != NULL);
    return p;
}

/* One buffer to place: a workspace value (node id) or a kernel's scratch. */
typedef struct buffer {
    uint32_t node;
    bool scratch;
    int64_t size;            /* rounded */
    uint32_t first, last;
    int64_t offset;
} buffer;

static int by_size_desc(const void *a, const void *b)
{
    const buffer *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return x->scratch - y->scratch;
}

static int by_offset(const void *a, const void *b)
{
    const buffer *x = *(const buffer *const *)a, *y = *(const buffer *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static bool meet(const buffer *a, const buffer *b) { return a->first <= b->last && b->first <= a->last; }

static int by_first(const void *a, const void *b)
{
    const buffer *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->last != y->last) return x->last > y->last ? -1 : 1;
    return by_size_desc(a, b);
}

static int by_life(const void *a, const void *b)
{
    const buffer *x = a, *y = b;
    uint32_t lx = x->last - x->first, ly = y->last - y->first;
    if (lx != ly) return lx > ly ? -1 : 1;
    return by_size_desc(a, b);
}

/* Best-fit placement of bufs[0..n) in their order. */
static void place(buffer *bufs, size_t n)
{
    const buffer **live = xcalloc(n, sizeof *live);
    for (size_t i = 0; i < n; i++) {
        buffer *b = &bufs[i];
        size_t n_live = 0;
        for (size_t j = 0; j < i; j++)
            if (bufs[j].size > 0 && meet(&bufs[j], b)) live[n_live++] = &bufs[j];
        qsort(live, n_live, sizeof *live, by_offset);
        int64_t best = -1, best_gap = INT64_MAX, top = 0;
        for (size_t j = 0; j < n_live; j++) {
            int64_t gap = live[j]->offset - top;
            if (gap >= b->size && gap < best_gap) {
                best = top;
                best_gap = gap;
            }
            int64_t end = live[j]->offset + live[j]->size;
            if (end > top) top = end;
        }
        b->offset = best >= 0 ? best : top;
    }
    free(live);
}

/* The node whose memory a view reads, following views. */
static uint32_t root_of(const kiln_memplan *p, uint32_t id)
{
    while (p->homes[id].kind == KILN_HOME_ALIAS) id = p->homes[id].index;
    return id;
}

static void assign_homes(const kiln_graph *g, const kiln_plan_request *req, const unsigned char *needed,
                         kiln_memplan *p)
{
    int64_t off = 0;
    for (uint32_t i = 0; i < req->n_params; i++) {
        uint32_t id = req->params[i];
        KILN_ASSERT(id < g->n_nodes && g->nodes[id].op == KILN_OP_PARAM);
        off = round_up(off);
        p->homes[id] = (kiln_home){.kind = KILN_HOME_PARAM, .index = i, .offset = off, .bytes = kiln_type_numel(&g->nodes[id].type) * KILN_ELEM_BYTES};
        off += p->homes[id].bytes;
    }
    p->params_bytes = round_up(off);
    off = 0;
    for (uint32_t i = 0; i < req->n_states; i++) {
        uint32_t id = req->states[i];
        KILN_ASSERT(id < g->n_nodes && g->nodes[id].op == KILN_OP_STATE);
        off = round_up(off);
        p->homes[id] = (kiln_home){.kind = KILN_HOME_STATE, .index = i, .offset = off, .bytes = kiln_type_numel(&g->nodes[id].type) * KILN_ELEM_BYTES};
        off += p->homes[id].bytes;
    }
    p->optim_bytes = round_up(off);
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        uint32_t id = req->inputs[i];
        KILN_ASSERT(id < g->n_nodes && g->nodes[id].op == KILN_OP_INPUT);
        p->homes[id] = (kiln_home){.kind = KILN_HOME_INPUT, .index = i, .offset = 0, .bytes = kiln_type_numel(&g->nodes[id].type) * KILN_ELEM_BYTES};
    }

    /* outputs first, so that a node that is an output is computed into it */
    p->copies = xcalloc(g->n_outputs, sizeof *p->copies);
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        uint32_t id = g->outputs[o].node;
        kiln_op op = g->nodes[id].op;
        bool computed = op != KILN_OP_INPUT && op != KILN_OP_PARAM && op != KILN_OP_STATE;
        if (computed && p->homes[id].kind == KILN_HOME_NONE)
            p->homes[id] = (kiln_home){.kind = KILN_HOME_OUTPUT, .index = o, .offset = 0, .bytes = kiln_type_numel(&g->nodes[id].type) * KILN_ELEM_BYTES};
        else p->copies[p->n_copies++] = (kiln_out_copy){id, o};
    }

    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        kiln_home *h = &p->homes[id];
        if (!needed[id] || h->kind != KILN_HOME_NONE) continue;
        if (req->schedule && req->schedule->rope && req->schedule->rope[id]) continue; /* rotated on load (fuse.c) */
        KILN_ASSERT(n->op != KILN_OP_INPUT && n->op != KILN_OP_PARAM && n->op != KILN_OP_STATE); /* all listed */
        h->bytes = kiln_type_numel(&n->type) * KILN_ELEM_BYTES;
        if (req->schedule && req->schedule->stored_as && req->schedule->stored_as[id] != KILN_NONE) {
            h->kind = KILN_HOME_ALIAS; /* in its transpose's buffer, read with strides (fuse.c) */
            h->index = req->schedule->stored_as[id];
        } else if (req->schedule && req->schedule->internal[id]) {
            h->kind = KILN_HOME_FUSED;
        } else if (req->schedule && req->schedule->view[id]) { /* read with strides */
            h->kind = KILN_HOME_ALIAS;
            h->index = root_of(p, n->in[0]);
        } else if (kiln_constant_is_global(n)) {
            h->kind = KILN_HOME_CONST;
        } else if (n->op == KILN_OP_RESHAPE) {
            h->kind = KILN_HOME_ALIAS;
            h->index = root_of(p, n->in[0]);
        } else {
            h->kind = KILN_HOME_WORKSPACE;
        }
    }
}

/* Homes of the updates' new values. A value goes straight into its target's storage when
 * it is a workspace value and every reader of the target's old value (through views
 * too) runs before it: nothing can see the old value any more, and the kernel's inputs
 * do not include the target, so its noalias pointers stay true. A training step's
 * final "p − step" and "β·m + …" nodes are built that way (passes/optimizer.c), so the
 * new parameters and moments need no workspace and no copies. Any other value is copied
 * at the end and stays live until then. */
/* Where node id's kernel runs: its kernel's position in the schedule, or its own id. */
static uint32_t position(const kiln_plan_request *req, uint32_t id)
{
    if (!req->schedule) return id;
    KILN_ASSERT(req->schedule->kernel_of[id] != KILN_NONE);
    return req->schedule->kernel_of[id];
}

/* Whether the new value v may be computed into target t's storage by a kernel that also
 * reads t: only an elementwise (LOOP) kernel whose every read of t is direct — the element
 * it writes is the element it read, at the same offset (v and t have one type) — or the
 * part of a MULTI kernel that computes v, when no other part reads t (another part walks
 * its elements in its own order, maybe on another thread). */
static bool reads_in_step(const kiln_graph *g, const kiln_plan_request *req, uint32_t t, uint32_t v)
{
    if (!req->schedule) return false;
    const kiln_kernel_schedule *s = req->schedule;
    const kiln_kernel *k = &s->kernels[s->kernel_of[v]];
    if (k->kind != KILN_KERNEL_LOOP && k->kind != KILN_KERNEL_MULTI) return false;
    uint32_t per_part = k->n / k->parts, vpart = 0;
    for (uint32_t i = 0; i < k->n; i++)
        if (s->members[k->first + i] == v) vpart = i / per_part;
    for (uint32_t i = 0; i < k->n; i++) {
        const kiln_node *m = &g->nodes[s->members[k->first + i]];
        bool own = i / per_part == vpart;
        for (uint32_t j = 0; j < m->n_in; j++) {
            uint32_t x = m->in[j];
            if (x == t && !own) return false;
            if (x == t) continue;
            /* a view of t read at another index */
            while (g->nodes[x].op == KILN_OP_RESHAPE && !s->internal[x] && s->kernel_of[x] == KILN_NONE)
                x = g->nodes[x].in[0];
            if (x == t) return false;
        }
    }
    return true;
}

/* Whether v is an update_slice of t itself (its first operand, not through a view), its
 * kernel alone: computed in t's storage it writes only the update's rows and never reads
 * t (codegen/lower_layout.c), so t's old value may die at v. */
static bool slice_in_place(const kiln_graph *g, const kiln_plan_request *req, const kiln_memplan *p, uint32_t t,
                           uint32_t v)
{
    const kiln_node *n = &g->nodes[v];
    if (n->op != KILN_OP_UPDATE_SLICE || n->in[0] != t) return false;
    if (root_of(p, n->in[1]) == t || root_of(p, n->in[2]) == t) return false;
    return !req->schedule || req->schedule->kernels[req->schedule->kernel_of[v]].n == 1;
}

/* A MULTI kernel's parts must agree on which of their values are computed in place (its
 * code is one loop for every part): where they do not, the in-place ones become copies. */
static void uniform_multi_updates(const kiln_graph *g, const kiln_plan_request *req, kiln_memplan *p, uint32_t end)
{
    const kiln_kernel_schedule *s = req->schedule;
    for (uint32_t ki = 0; s && ki < s->n_kernels; ki++) {
        const kiln_kernel *k = &s->kernels[ki];
        if (k->kind != KILN_KERNEL_MULTI) continue;
        uint32_t per_part = k->n / k->parts;
        for (uint32_t i = 0; i < per_part; i++) {
            uint32_t n_inplace = 0;
            for (uint32_t q = 0; q < k->parts; q++)
                n_inplace += p->homes[s->members[k->first + q * per_part + i]].kind == KILN_HOME_UPDATE;
            if (n_inplace == 0 || n_inplace == k->parts) continue;
            for (uint32_t q = 0; q < k->parts; q++) {
                uint32_t v = s->members[k->first + q * per_part + i];
                kiln_home *h = &p->homes[v];
                if (h->kind != KILN_HOME_UPDATE) continue;
                h->kind = KILN_HOME_WORKSPACE;
                h->index = 0;
                h->offset = 0;
                h->last = end;
                for (uint32_t u = 0; u < g->n_updates; u++)
                    if (g->updates[u].value == v) p->update_copies[p->n_update_copies++] = u;
            }
        }
    }
}

static void place_updates(const kiln_graph *g, const kiln_plan_request *req, const unsigned char *needed,
                          kiln_memplan *p, uint32_t end)
{
    p->update_copies = xcalloc(g->n_updates, sizeof *p->update_copies);
    for (uint32_t u = 0; u < g->n_updates; u++) {
        uint32_t t = g->updates[u].target, v = g->updates[u].value;
        KILN_ASSERT(needed[v]);
        /* copies run one after another: a new value must not be another target */
        for (uint32_t w = 0; w < g->n_updates; w++)
            KILN_ASSERT(w == u || root_of(p, v) != g->updates[w].target);
        /* a reshape of a workspace value of the target's size (a KV cache's keys as the
         * QKV product computed them): that value goes into the target, the view follows */
        uint32_t r = v;
        while (p->homes[r].kind == KILN_HOME_ALIAS && g->nodes[r].op == KILN_OP_RESHAPE) r = p->homes[r].index;
        if (r != v && p->homes[r].kind == KILN_HOME_WORKSPACE && p->homes[r].bytes == p->homes[t].bytes &&
            root_of(p, v) == r) {
            bool other = false; /* r must not be another update's value or target */
            for (uint32_t w = 0; w < g->n_updates && !other; w++)
                other = w != u && (g->updates[w].value == r || g->updates[w].target == r);
            if (!other) v = r;
        }
        kiln_home *h = &p->homes[v];
        uint32_t at = h->kind == KILN_HOME_WORKSPACE ? position(req, v) : 0;
        bool free_then = p->homes[t].last < at ||
                         (p->homes[t].last == at && (reads_in_step(g, req, t, v) || slice_in_place(g, req, p, t, v)));
        if (h->kind == KILN_HOME_WORKSPACE && free_then && t != v) {
            h->kind = KILN_HOME_UPDATE;
            h->index = t;
            h->offset = p->homes[t].offset;
        } else {
            p->update_copies[p->n_update_copies++] = u;
            p->homes[root_of(p, v)].last = end;
        }
    }
}

/* In-place elementwise kernels (see the top): for each LOOP kernel with exactly one
 * member stored in the workspace, v, an input x of v's kernel that lives in the workspace
 * (read directly, not through a view), has v's type, dies at this kernel and is not
 * taken over yet becomes v's host: v.over = 1 + x. One stored member only, so that every
 * load of an element precedes the one store to it; every member reading x reads it
 * directly (a member reading a view of x could read another element). */
static void in_place(const kiln_graph *g, const kiln_plan_request *req, kiln_memplan *p)
{
    const kiln_kernel_schedule *s = req->schedule;
    if (!s) return;
    for (uint32_t ki = 0; ki < s->n_kernels; ki++) {
        const kiln_kernel *k = &s->kernels[ki];
        if (k->kind != KILN_KERNEL_LOOP) continue;
        uint32_t v = KILN_NONE, n_stored = 0;
        for (uint32_t i = 0; i < k->n; i++) {
            uint32_t m = s->members[k->first + i];
            kiln_home_kind hk = p->homes[m].kind;
            if (hk == KILN_HOME_FUSED) continue;
            n_stored++;
            v = hk == KILN_HOME_WORKSPACE ? m : KILN_NONE;
        }
        if (n_stored != 1 || v == KILN_NONE || p->homes[v].first != ki) continue;
        const kiln_type *vt = &g->nodes[v].type;
        for (uint32_t i = 0; i < k->n && !p->homes[v].over; i++) {
            const kiln_node *m = &g->nodes[s->members[k->first + i]];
            for (uint32_t j = 0; j < m->n_in; j++) {
                uint32_t x = m->in[j];
                const kiln_home *hx = &p->homes[x];
                if (hx->kind != KILN_HOME_WORKSPACE || hx->last != ki || hx->first >= ki || x == v) continue;
                if (!kiln_type_equal(&g->nodes[x].type, vt)) continue;
                bool taken = false; /* by another value already */
                for (uint32_t id = 0; id < p->n_nodes && !taken; id++) taken = p->homes[id].over == x + 1;
                if (taken) continue;
                bool direct = true; /* no member reads a view of x */
                for (uint32_t a = 0; a < k->n && direct; a++) {
                    const kiln_node *ma = &g->nodes[s->members[k->first + a]];
                    for (uint32_t b = 0; b < ma->n_in && direct; b++)
                        direct = ma->in[b] == x || root_of(p, ma->in[b]) != x;
                }
                if (!direct) continue;
                p->homes[v].over = x + 1;
                break;
            }
        }
    }
}

/* The buffer that holds node id: follows in-place takeovers back to the first value. */
static uint32_t host_of(const kiln_memplan *p, uint32_t id)
{
    while (p->homes[id].kind == KILN_HOME_WORKSPACE && p->homes[id].over) id = p->homes[id].over - 1;
    return id;
}

/* Value r is read by node id's kernel, at position `at`: r lives at least until then, and
 * must have been computed by then (a value no kernel computes is there from the start). */
static void read_at(const kiln_plan_request *req, kiln_memplan *p, uint32_t r, uint32_t id, uint32_t at)
{
    if (p->homes[r].last < at) p->homes[r].last = at;
    bool computed = req->schedule ? req->schedule->kernel_of[r] != KILN_NONE : true;
    if (computed && p->homes[r].first > at && p->read_early == KILN_NONE) p->read_early = r, p->read_early_by = id;
}

bool kiln_plan_memory(const kiln_graph *g, const kiln_plan_request *req, kiln_memplan *plan, kiln_diags *d)
{
    (void)d; /* every size was bounded when the graph was built: nothing here can fail */
    kiln_memplan *p = plan;
    memset(p, 0, sizeof *p);
    uint32_t n = g->n_nodes;
    p->n_nodes = n;
    p->read_early = p->read_early_by = KILN_NONE;
    p->homes = xcalloc(n, sizeof *p->homes);
    p->scratch_offset = xcalloc(n, sizeof *p->scratch_offset);
    p->scratch_bytes = xcalloc(n, sizeof *p->scratch_bytes);
    unsigned char *needed = xcalloc(n, 1);
    for (uint32_t id = 0; id < n; id++) needed[id] = req->needed ? req->needed[id] : 1;
    assign_homes(g, req, needed, p);

    /* liveness of workspace values over kernel positions: reads through views count for
     * the viewed value; values inside a kernel are no reads */
    uint32_t end = req->schedule ? req->schedule->n_kernels : n;
    for (uint32_t id = 0; id < n; id++) {
        bool runs = req->schedule ? req->schedule->kernel_of[id] != KILN_NONE : needed[id];
        p->homes[id].first = p->homes[id].last = runs ? position(req, id) : 0;
        p->scratch_offset[id] = -1;
    }
    for (uint32_t id = 0; id < n; id++) {
        if (!needed[id]) continue;
        const kiln_home *h = &p->homes[id];
        if (h->kind != KILN_HOME_WORKSPACE && h->kind != KILN_HOME_OUTPUT && h->kind != KILN_HOME_FUSED) continue;
        uint32_t at = position(req, id);
        for (uint32_t j = 0; j < g->nodes[id].n_in; j++) {
            uint32_t x = g->nodes[id].in[j];
            if (p->homes[x].kind == KILN_HOME_FUSED) continue;
            uint32_t src[3] = {x}, n_src = req->schedule ? kiln_schedule_reads(g, req->schedule, x, src) : 1;
            for (uint32_t i = 0; i < n_src; i++) read_at(req, p, root_of(p, src[i]), id, at);
        }
    }
    for (uint32_t i = 0; i < p->n_copies; i++) p->homes[root_of(p, p->copies[i].node)].last = end;
    place_updates(g, req, needed, p, end);
    uniform_multi_updates(g, req, p, end);

    in_place(g, req, p);

    /* the buffers to place: a value taken over lives on in its host's buffer */
    uint32_t *host_last = xcalloc(n, sizeof *host_last);
    for (uint32_t id = 0; id < n; id++)
        if (p->homes[id].kind == KILN_HOME_WORKSPACE) {
            uint32_t hst = host_of(p, id);
            if (p->homes[id].last > host_last[hst]) host_last[hst] = p->homes[id].last;
        }
    buffer *bufs = xcalloc(2 * (size_t)n, sizeof *bufs);
    size_t n_bufs = 0;
    for (uint32_t id = 0; id < n; id++) {
        const kiln_home *h = &p->homes[id];
        if (h->kind == KILN_HOME_WORKSPACE && !h->over)
            bufs[n_bufs++] = (buffer){id, false, round_up(h->bytes), h->first, host_last[id], 0};
        int64_t s = req->scratch_bytes && needed[id] ? req->scratch_bytes[id] : 0;
        KILN_ASSERT(s >= 0);
        if (s > 0) {
            p->scratch_bytes[id] = s;
            bufs[n_bufs++] = (buffer){id, true, round_up(s), position(req, id), position(req, id), 0};
        }
    }
    /* three orders, the smallest plan kept (ties: the first, by size) */
    int (*orders[3])(const void *, const void *) = {by_size_desc, by_first, by_life};
    buffer *best = xcalloc(2 * (size_t)n, sizeof *best);
    int64_t best_top = INT64_MAX;
    for (int o = 0; o < 3; o++) {
        qsort(bufs, n_bufs, sizeof *bufs, orders[o]);
        place(bufs, n_bufs);
        int64_t top = 0;
        for (size_t i = 0; i < n_bufs; i++)
            if (bufs[i].offset + bufs[i].size > top) top = bufs[i].offset + bufs[i].size;
        if (top < best_top) {
            best_top = top;
            memcpy(best, bufs, n_bufs * sizeof *bufs);
        }
    }
    memcpy(bufs, best, n_bufs * sizeof *bufs);
    free(best);

    for (size_t i = 0; i < n_bufs; i++) {
        const buffer *b = &bufs[i];
        if (b->scratch) p->scratch_offset[b->node] = b->offset;
        else p->homes[b->node].offset = b->offset;
        if (b->offset + b->size > p->workspace_bytes) p->workspace_bytes = b->offset + b->size;
        p->unplanned_bytes += b->size;
    }
    for (uint32_t id = 0; id < n; id++)
        if (p->homes[id].kind == KILN_HOME_WORKSPACE && p->homes[id].over)
            p->homes[id].offset = p->homes[host_of(p, id)].offset;
    free(host_last);
    /* the lower bound: the most bytes live at one time (values copied out live to n) */
    for (uint32_t t = 0; t <= end; t++) {
        int64_t live = 0;
        for (size_t i = 0; i < n_bufs; i++)
            if (bufs[i].first <= t && t <= bufs[i].last) live += bufs[i].size;
        if (live > p->lower_bound_bytes) p->lower_bound_bytes = live;
    }
    free(bufs);
    free(needed);
    return true;
}

void kiln_memplan_free(kiln_memplan *p)
{
    free(p->homes);
    free(p->scratch_offset);
    free(p->scratch_bytes);
    free(p->copies);
    free(p->update_copies);
    memset(p, 0, sizeof *p);
}

/* Whether one of two values takes the other's buffer over where their lives touch: the
 * same offset and size, and the input's life ends at the result's first position. */
static bool takes_over(const kiln_memplan *p, const buffer *a, const buffer *b)
{
    for (int pass = 0; pass < 2; pass++) {
        const buffer *x = pass ? b : a, *v = pass ? a : b;
        if (p->homes[v->node].over == x->node + 1 && x->offset == v->offset && x->size == v->size &&
            x->last == v->first)
            return true;
    }
    return false;
}

bool kiln_memplan_check(const kiln_memplan *p, char *msg, size_t msg_size)
{
    if (p->read_early != KILN_NONE) {
        snprintf(msg, msg_size, "node %u is read by node %u's kernel, which runs before the kernel computing it",
                 p->read_early, p->read_early_by);
        return false;
    }
    buffer *bufs = xcalloc(2 * (size_t)p->n_nodes, sizeof *bufs);
    size_t n = 0;
    for (uint32_t id = 0; id < p->n_nodes; id++) {
        const kiln_home *h = &p->homes[id];
        if (h->kind == KILN_HOME_WORKSPACE) bufs[n++] = (buffer){id, false, h->bytes, h->first, h->last, h->offset};
        if (p->scratch_bytes[id] > 0)
            bufs[n++] = (buffer){id, true, p->scratch_bytes[id], h->first, h->first, p->scratch_offset[id]};
        if (h->kind == KILN_HOME_ALIAS && p->homes[h->index].kind == KILN_HOME_ALIAS) {
            snprintf(msg, msg_size, "node %u aliases node %u, itself a view", id, h->index);
            free(bufs);
            return false;
        }
        if (h->kind == KILN_HOME_UPDATE &&
            (h->index >= p->n_nodes ||
             (p->homes[h->index].kind != KILN_HOME_PARAM && p->homes[h->index].kind != KILN_HOME_STATE))) {
            snprintf(msg, msg_size, "node %u is computed into node %u, which is not a parameter or a state", id,
                     h->index);
            free(bufs);
            return false;
        }
    }
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const buffer *a = &bufs[i];
        if (a->offset < 0 || a->offset % KILN_PLAN_ALIGN != 0 || a->offset + a->size > p->workspace_bytes) {
            snprintf(msg, msg_size, "%s of node %u at [%lld, +%lld) is misplaced in a workspace of %lld bytes",
                     a->scratch ? "scratch" : "value", a->node, (long long)a->offset, (long long)a->size,
                     (long long)p->workspace_bytes);
            ok = false;
        }
        for (size_t j = i + 1; j < n && ok; j++) {
            const buffer *b = &bufs[j];
            if (a->size == 0 || b->size == 0 || !meet(a, b)) continue;
            if (!a->scratch && !b->scratch && takes_over(p, a, b)) continue;
            if (a->offset < b->offset + b->size && b->offset < a->offset + a->size) {
                snprintf(msg, msg_size, "%s of node %u [%lld, +%lld) live %u..%u overlaps %s of node %u [%lld, +%lld) live %u..%u",
                         a->scratch ? "scratch" : "value", a->node, (long long)a->offset, (long long)a->size, a->first,
                         a->last, b->scratch ? "scratch" : "value", b->node, (long long)b->offset, (long long)b->size,
                         b->first, b->last);
                ok = false;
            }
        }
    }
    free(bufs);
    return ok;
}
