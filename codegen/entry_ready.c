/* entry_ready.c — when a stateful entry is done with a state (kiln_compile_request's
 * ready states): the position after which NAME_train_grad may hand a gradient to its
 * caller, who averages it across processes while the backward pass goes on
 * (docs/distributed.md, driver/dataparallel.c).
 *
 * A state is done once no later kernel writes or reads its memory. A value lives in a
 * state's memory when its home resolves there (an update computed in place, a view of
 * one); a kernel touches it when one of its members or their operands does — or, for an
 * operand that has no memory of its own (a view no kernel computes, a value stored
 * inside another one's buffer), what that one reads. An update copied in after the last
 * kernel is done only then (position n_kernels). entry.c also counts the addresses it
 * actually passes to each kernel, so the calls it emits are never early even if this
 * schedule-level view missed one; this view alone places buckets (an estimate is enough
 * there).
 */
#include <stdlib.h>

#include "lower.h"

/* The ready-state index whose memory node id's value lives in, or −1. */
static int32_t state_of(const kiln_graph *g, const kiln_memplan *p, const int32_t *ready_of, uint32_t id, int depth)
{
    for (int hops = 0; hops < 64 && id < g->n_nodes; hops++) {
        const kiln_home *h = &p->homes[id];
        if (h->kind == KILN_HOME_ALIAS || h->kind == KILN_HOME_UPDATE) {
            id = h->index;
            continue;
        }
        if (h->kind == KILN_HOME_STATE) return ready_of[id];
        if ((h->kind == KILN_HOME_NONE || h->kind == KILN_HOME_FUSED) && depth < 3) {
            /* no memory of its own: a view read through its operand's memory */
            const kiln_node *n = &g->nodes[id];
            for (uint32_t i = 0; i < n->n_in; i++) {
                int32_t r = state_of(g, p, ready_of, n->in[i], depth + 1);
                if (r >= 0) return r;
            }
        }
        return -1;
    }
    return -1;
}

int32_t entry_ready_state(const kiln_graph *g, const kiln_memplan *p, const int32_t *ready_of, uint32_t id)
{
    return state_of(g, p, ready_of, id, 0);
}

static void touch(const kiln_graph *g, const kiln_memplan *p, const kiln_kernel_schedule *s, const int32_t *ready_of,
                  uint32_t id, int32_t k, int32_t *after)
{
    int32_t r = state_of(g, p, ready_of, id, 0);
    if (r >= 0 && after[r] < k) after[r] = k;
    if (s->stored_as && s->stored_as[id] != KILN_NONE) {
        r = state_of(g, p, ready_of, s->stored_as[id], 0);
        if (r >= 0 && after[r] < k) after[r] = k;
    }
}

/* ready_of: per node, its index among the request's ready states, or −1 (malloc'd). */
int32_t *entry_ready_index(const kiln_graph *g, const kiln_compile_request *req)
{
    int32_t *ready_of = malloc((g->n_nodes ? g->n_nodes : 1) * sizeof *ready_of);
    KILN_ASSERT(ready_of != NULL);
    for (uint32_t i = 0; i < g->n_nodes; i++) ready_of[i] = -1;
    for (uint32_t i = 0; i < req->n_ready; i++) {
        uint32_t st = req->states[req->ready_first + i];
        if (st < g->n_nodes) ready_of[st] = (int32_t)i;
    }
    return ready_of;
}

void kiln_ready_after(const kiln_graph *g, const kiln_compile_request *req, const kiln_memplan *p,
                      const kiln_kernel_schedule *s, int32_t *after)
{
    KILN_ASSERT(req->ready_first + req->n_ready <= req->n_states);
    int32_t nk = (int32_t)s->n_kernels;
    int32_t *ready_of = entry_ready_index(g, req);
    for (uint32_t i = 0; i < req->n_ready; i++) after[i] = -1;
    for (int32_t k = 0; k < nk; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        for (uint32_t m = 0; m < kn->n; m++) {
            uint32_t id = s->members[kn->first + m];
            touch(g, p, s, ready_of, id, k, after);
            for (uint32_t i = 0; i < g->nodes[id].n_in; i++) touch(g, p, s, ready_of, g->nodes[id].in[i], k, after);
        }
    }
    /* copied in after the last kernel; or never touched: at the end, to be safe */
    for (uint32_t i = 0; i < p->n_update_copies; i++) {
        int32_t r = state_of(g, p, ready_of, g->updates[p->update_copies[i]].target, 0);
        if (r >= 0) after[r] = nk;
    }
    for (uint32_t i = 0; i < req->n_ready; i++)
        if (after[i] < 0) after[i] = nk;
    free(ready_of);
}
