/* memplan_report.c — what is live at a memory plan's peak (`kiln check --memory`).
 *
 * The workspace of a plan is at least its largest live set, and the planner reaches that
 * bound on the training steps (memplan.c), so shrinking the workspace means shrinking
 * what is live at the peak: this prints the position where the most workspace bytes are
 * live, and those buffers largest first with the node's op, type, label, origin and live
 * interval, then the same bytes summed by the op that made them. It reads the plan only.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct live_buf {
    uint32_t node;
    bool scratch;
    int64_t size;
    uint32_t first, last;
} live_buf;

static int by_size(const void *a, const void *b)
{
    const live_buf *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

/* Every workspace buffer (values and scratch) with its live interval. */
static size_t collect(const kiln_memplan *p, live_buf *out)
{
    size_t n = 0;
    for (uint32_t id = 0; id < p->n_nodes; id++) {
        const kiln_home *h = &p->homes[id];
        /* a value written over an input (memplan.c, in_place) shares its bytes at its first position */
        uint32_t first = h->first + (h->over ? 1 : 0);
        if (h->kind == KILN_HOME_WORKSPACE && first <= h->last) out[n++] = (live_buf){id, false, h->bytes, first, h->last};
        if (p->scratch_bytes[id] > 0) out[n++] = (live_buf){id, true, p->scratch_bytes[id], h->first, h->first};
    }
    return n;
}

uint32_t kiln_memplan_peak(const kiln_memplan *p, int64_t *bytes)
{
    live_buf *all = calloc(2 * (size_t)p->n_nodes + 1, sizeof *all);
    KILN_ASSERT(all != NULL);
    size_t n = collect(p, all);
    uint32_t end = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].last > end) end = all[i].last;
    /* sweep: +size at first, −size after last */
    int64_t *delta = calloc((size_t)end + 2, sizeof *delta);
    KILN_ASSERT(delta != NULL);
    for (size_t i = 0; i < n; i++) {
        delta[all[i].first] += all[i].size;
        delta[all[i].last + 1] -= all[i].size;
    }
    int64_t live = 0, best = -1;
    uint32_t at = 0;
    for (uint32_t t = 0; t <= end; t++) {
        live += delta[t];
        if (live > best) {
            best = live;
            at = t;
        }
    }
    free(delta);
    free(all);
    if (bytes) *bytes = best < 0 ? 0 : best;
    return at;
}

void kiln_memplan_report(const kiln_graph *g, const kiln_memplan *p, const kiln_kernel_schedule *s, int top,
                         FILE *f)
{
    int64_t peak = 0;
    uint32_t at = kiln_memplan_peak(p, &peak);
    live_buf *all = calloc(2 * (size_t)p->n_nodes + 1, sizeof *all);
    KILN_ASSERT(all != NULL);
    size_t n = collect(p, all), n_live = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].first <= at && at <= all[i].last) all[n_live++] = all[i];
    qsort(all, n_live, sizeof *all, by_size);

    fprintf(f, "workspace peak: %lld bytes (%.1f MiB) live at position %u of %u", (long long)peak,
            (double)peak / 1048576.0, at, s ? s->n_kernels : p->n_nodes);
    if (s && at < s->n_kernels) {
        const kiln_kernel *k = &s->kernels[at];
        uint32_t root = s->members[k->first + k->n - 1];
        fprintf(f, " (a %s kernel computing %%%u %s)", kiln_kernel_kind_name(k->kind), root, kiln_op_table[g->nodes[root].op].name);
    }
    fprintf(f, "; plan %lld bytes, %zu buffers live there\n", (long long)p->workspace_bytes, n_live);
    fprintf(f, "%10s %6s  %-8s %-16s %-22s %-11s %s\n", "bytes", "share", "node", "op", "type", "live", "label/origin");
    char tbuf[96], live[32];
    for (size_t i = 0; i < n_live && (top <= 0 || (int)i < top); i++) {
        const live_buf *b = &all[i];
        const kiln_node *nd = &g->nodes[b->node];
        snprintf(live, sizeof live, "%u..%u", b->first, b->last);
        fprintf(f, "%10lld %5.1f%%  %%%-7u %-16s %-22s %-11s %s%s%s%s\n", (long long)b->size,
                100.0 * (double)b->size / (double)(peak ? peak : 1), b->node,
                b->scratch ? "(scratch)" : kiln_op_table[nd->op].name, kiln_type_str(&nd->type, tbuf, sizeof tbuf),
                live, nd->label ? nd->label : "", nd->label && nd->origin ? " " : "", nd->origin ? nd->origin : "",
                b->scratch ? " scratch" : "");
    }
    if (top > 0 && n_live > (size_t)top) fprintf(f, "  … %zu more\n", n_live - (size_t)top);

    /* the same bytes by op */
    int64_t *by_op = calloc(KILN_OP_COUNT + 1, sizeof *by_op);
    uint32_t *count = calloc(KILN_OP_COUNT + 1, sizeof *count);
    KILN_ASSERT(by_op && count);
    for (size_t i = 0; i < n_live; i++) {
        int op = all[i].scratch ? KILN_OP_COUNT : (int)g->nodes[all[i].node].op;
        by_op[op] += all[i].size;
        count[op]++;
    }
    fprintf(f, "by op:");
    for (;;) {
        int best = -1;
        for (int op = 0; op <= KILN_OP_COUNT; op++)
            if (by_op[op] > 0 && (best < 0 || by_op[op] > by_op[best])) best = op;
        if (best < 0) break;
        fprintf(f, " %s %u×/%.1f MiB", best == KILN_OP_COUNT ? "(scratch)" : kiln_op_table[best].name, count[best],
                (double)by_op[best] / 1048576.0);
        by_op[best] = 0;
    }
    fprintf(f, "\n");
    free(by_op);
    free(count);
    free(all);
}
