/* checkpoint.c — activation checkpointing: the backward pass of each repeated block
 * recomputes the block's activations instead of keeping them from the forward pass.
 *
 * Why. In a training step the backward nodes read the forward activations, so memory
 * planning keeps every activation of every layer alive from the forward pass until its
 * backward reader: the workspace holds all layers at once. Checkpointing keeps only the
 * values at block boundaries; when the backward pass reaches a block it computes the
 * block's forward part again, from its stored input and the parameters, and reads those
 * copies. One extra forward pass of the blocks buys a workspace of about one block's
 * activations plus the boundaries.
 *
 * Blocks come from the graph, not from module names. The frontend labels the output of
 * each copy of a repeated layer "NAME.i" and gives every node the layer built the same
 * `origin`; a chain is the non-source forward nodes labelled P.0, P.1, … P.(R−1) (in that
 * node order, one origin). Block i is then the forward nodes after the output of block
 * i−1 up to its own output, with the chain's origin, that the output depends on. Nodes
 * read by several blocks (built elsewhere, or not on the path to an output) are not in
 * any block and stay stored.
 *
 * The rewrite. The IR is append-only and node ids are the topological order, so the pass
 * builds the graph again with kiln_graph_add, in the same arena (strings the model keeps
 * there stay valid):
 *   - the forward nodes (ids < n_forward) first, unchanged, so they keep their ids;
 *   - then every later node (backward, optimizer) in order, its inputs mapped. Where it
 *     reads a block's internal value (any block member but the block's output), it reads
 *     a recomputed copy instead, built just before the first node that needs it, after
 *     the copies of its own inputs (inputs outside the block are the stored originals:
 *     the block's input, parameters, constants). So a block is recomputed where its
 *     backward pass begins, and only the part the backward pass reads.
 * Copies keep op, attributes (a dropout's mask `stream` included: the copy drops the
 * same elements), label and origin. The graph's outputs, loss and updates are mapped;
 * the caller maps the ids it keeps through map[].
 *
 * kiln_recompute_light (at the end) uses the same rebuild with single cheap activations
 * as the members instead of blocks.
 *
 * Correctness does not depend on which nodes are recomputed — a copy computes the value
 * of its original from the same inputs — only memory and time do. With the same kernels
 * the copies are bit-identical to the originals; a schedule that fuses a copy
 * differently could round differently (docs/training.md says what is measured).
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    KILN_ASSERT(p != NULL);
    return p;
}

/* "P.i" with i a decimal number without leading zeros: the length of P and i, or false. */
static bool block_label(const char *label, size_t *prefix, long *index)
{
    if (!label) return false;
    const char *dot = strrchr(label, '.');
    if (!dot || dot == label || !dot[1] || (dot[1] == '0' && dot[2])) return false;
    long v = 0;
    for (const char *p = dot + 1; *p; p++) {
        if (*p < '0' || *p > '9' || v > 1000000) return false;
        v = v * 10 + (*p - '0');
    }
    *prefix = (size_t)(dot - label);
    *index = v;
    return true;
}

static bool same_str(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* Marks member[id] = 1 for the forward nodes inside some block (not its output). */
static uint32_t find_blocks(const kiln_graph *g, uint32_t n_forward, unsigned char *member)
{
    uint32_t n_blocks = 0;
    unsigned char *seen = xcalloc(n_forward, 1), *anc = xcalloc(n_forward, 1);
    uint32_t *outs = xcalloc(n_forward, sizeof *outs);
    for (uint32_t first = 0; first < n_forward; first++) {
        const kiln_node *f = &g->nodes[first];
        size_t plen;
        long idx;
        if (seen[first] || kiln_op_table[f->op].kind == KILN_KIND_SOURCE || !f->origin ||
            !block_label(f->label, &plen, &idx) || idx != 0)
            continue;
        /* the chain P.0, P.1, …: later nodes of the same origin labelled P.k, in order */
        uint32_t n = 0;
        outs[n++] = first;
        seen[first] = 1;
        for (uint32_t id = first + 1; id < n_forward; id++) {
            const kiln_node *x = &g->nodes[id];
            size_t xl;
            long xi;
            if (kiln_op_table[x->op].kind == KILN_KIND_SOURCE || !same_str(x->origin, f->origin) ||
                !block_label(x->label, &xl, &xi) || xl != plen || strncmp(x->label, f->label, plen) != 0)
                continue;
            if (xi != (long)n) break; /* not a chain in order: stop at what was consistent */
            outs[n++] = id;
            seen[id] = 1;
        }
        /* block k: the nodes in (outs[k−1], outs[k]] of the chain's origin that outs[k] reads */
        for (uint32_t k = 0; k < n; k++) {
            uint32_t lo = k ? outs[k - 1] + 1 : 0, hi = outs[k];
            anc[hi] = 1;
            for (uint32_t id = hi + 1; id-- > lo;) {
                const kiln_node *x = &g->nodes[id];
                if (!anc[id]) continue;
                anc[id] = 0;
                if (kiln_op_table[x->op].kind == KILN_KIND_SOURCE || !same_str(x->origin, f->origin)) continue;
                if (id != hi) member[id] = 1;
                for (uint32_t j = 0; j < x->n_in; j++)
                    if (x->in[j] >= lo) anc[x->in[j]] = 1;
            }
            n_blocks++;
        }
    }
    free(seen);
    free(anc);
    free(outs);
    return n_blocks;
}

typedef struct rebuild {
    kiln_graph *g;
    const kiln_node *old;       /* the old node array */
    const unsigned char *member;
    uint32_t *map;              /* old id → new id */
    uint32_t *copy;             /* block member → its recomputed copy, or KILN_NONE */
    uint32_t *stack;            /* work list of recompute() */
    uint32_t n_copies;
    kiln_diags *d;
} rebuild;

/* Adds old node `id` with inputs in[] (already new ids). */
static uint32_t add_like(rebuild *r, uint32_t id, const uint32_t *in)
{
    const kiln_node *n = &r->old[id];
    /* attrs as stored: a dropout keeps its stream, which the builder sets only when 0 */
    return kiln_graph_add(r->g, n->op, in, n->n_in, &n->attrs, n->label, n->origin, r->d);
}

/* The id a later node should read for old node x: its recomputed copy if x is a block
 * member (built now, with the copies it needs, if it is not yet), else its mapped id. */
static uint32_t reading(rebuild *r, uint32_t x)
{
    if (!r->member[x]) return r->map[x];
    if (r->copy[x] != KILN_NONE) return r->copy[x];
    /* depth-first, inputs before readers, without recursion (blocks can be deep) */
    uint32_t top = 0;
    r->stack[top++] = x;
    while (top) {
        uint32_t id = r->stack[top - 1];
        const kiln_node *n = &r->old[id];
        bool ready = true;
        for (uint32_t j = 0; j < n->n_in; j++) {
            uint32_t y = n->in[j];
            if (r->member[y] && r->copy[y] == KILN_NONE) {
                r->stack[top++] = y;
                ready = false;
                break;
            }
        }
        if (!ready) continue;
        uint32_t in[64];
        KILN_ASSERT(n->n_in <= 64);
        for (uint32_t j = 0; j < n->n_in; j++) in[j] = r->member[n->in[j]] ? r->copy[n->in[j]] : r->map[n->in[j]];
        r->copy[id] = add_like(r, id, in);
        if (r->copy[id] == KILN_NONE) return KILN_NONE;
        r->n_copies++;
        top--;
    }
    return r->copy[x];
}

/* The rebuild shared by both entry points: backward nodes read recomputed copies of the
 * forward nodes marked in member[] (see the top of the file). */
static bool rebuild_graph(kiln_graph *g, uint32_t n_forward, const unsigned char *member, uint32_t *map,
                          uint32_t *n_copies, kiln_diags *d)
{
    uint32_t n_old = g->n_nodes;
    /* take the old nodes, outputs and updates out; the arena stays */
    kiln_node *old = g->nodes;
    kiln_output *outputs = g->outputs;
    kiln_update *updates = g->updates;
    uint32_t n_outputs = g->n_outputs, n_updates = g->n_updates, loss = g->loss;
    g->nodes = NULL;
    g->n_nodes = g->cap_nodes = 0;
    g->outputs = NULL;
    g->n_outputs = g->cap_outputs = 0;
    g->updates = NULL;
    g->n_updates = g->cap_updates = 0;

    rebuild r = {g, old, member, map, xcalloc(n_old, sizeof(uint32_t)), xcalloc(n_old, sizeof(uint32_t)), 0, d};
    for (uint32_t id = 0; id < n_old; id++) r.copy[id] = map[id] = KILN_NONE;
    bool ok = true;
    for (uint32_t id = 0; id < n_old && ok; id++) {
        const kiln_node *n = &old[id];
        uint32_t in[64];
        KILN_ASSERT(n->n_in <= 64);
        for (uint32_t j = 0; j < n->n_in && ok; j++) {
            /* forward nodes read the originals; later nodes read members' copies */
            in[j] = id < n_forward ? map[n->in[j]] : reading(&r, n->in[j]);
            ok = in[j] != KILN_NONE;
        }
        if (ok) map[id] = add_like(&r, id, in);
        ok = ok && map[id] != KILN_NONE;
        if (ok && id < n_forward) KILN_ASSERT(map[id] == id);
    }
    if (ok) {
        for (uint32_t i = 0; i < n_outputs; i++) kiln_graph_add_output(g, outputs[i].name, map[outputs[i].node]);
        for (uint32_t i = 0; i < n_updates; i++) kiln_graph_add_update(g, map[updates[i].target], map[updates[i].value]);
        g->loss = loss == KILN_NONE ? KILN_NONE : map[loss];
        *n_copies = r.n_copies;
    } else {
        /* a copy of a node that was built once cannot be refused: a bug, reported */
        kiln_diags_add(d, NULL, 0, 0, "checkpoint", "internal error: rebuilding the training step failed");
    }
    free(old);
    free(outputs);
    free(updates);
    free(r.copy);
    free(r.stack);
    return ok;
}

bool kiln_checkpoint(kiln_graph *g, uint32_t n_forward, uint32_t *map, kiln_checkpoint_result *res, kiln_diags *d)
{
    memset(res, 0, sizeof *res);
    KILN_ASSERT(n_forward <= g->n_nodes);
    unsigned char *member = xcalloc(g->n_nodes, 1);
    res->n_blocks = find_blocks(g, n_forward, member);
    bool ok = rebuild_graph(g, n_forward, member, map, &res->n_recomputed, d);
    free(member);
    return ok;
}

/* ---- light recomputation ----------------------------------------------------------------
 *
 * Without blocks, some activations are still cheaper to compute again than to keep: an
 * activation function's result (the GEMM of the next layer reads it for its weight
 * gradient; the activation's own gradient reads its input) and a layernorm's (the next
 * GEMMs' weight gradients read it; layernorm_grad and the scale's gradient read its input).
 * Their inputs stay stored anyway because the backward pass reads them, so a copy built
 * just before the first backward reader costs one elementwise or row pass and frees the
 * result right after its forward readers: in char_gpt at B=8 T=256, the six 12 MiB GELU
 * results and thirteen 3 MiB layernorm results. A node qualifies when its op is one of
 * those (light_op), a backward node reads it, and every input that is not a source is
 * read by a backward node itself (else its copy would keep that input alive longer). */
static bool light_op(kiln_op op)
{
    switch (op) {
    case KILN_OP_RELU:
    case KILN_OP_SILU:
    case KILN_OP_GELU:
    case KILN_OP_GELU_TANH:
    case KILN_OP_LAYERNORM: return true;
    default: return false;
    }
}

static uint32_t find_light(const kiln_graph *g, uint32_t n_forward, unsigned char *member)
{
    unsigned char *read_back = xcalloc(n_forward, 1); /* read directly by a later node */
    for (uint32_t id = n_forward; id < g->n_nodes; id++)
        for (uint32_t j = 0; j < g->nodes[id].n_in; j++)
            if (g->nodes[id].in[j] < n_forward) read_back[g->nodes[id].in[j]] = 1;
    uint32_t n = 0;
    for (uint32_t id = 0; id < n_forward; id++) {
        const kiln_node *x = &g->nodes[id];
        if (!light_op(x->op) || !read_back[id]) continue;
        bool stored = true;
        for (uint32_t j = 0; j < x->n_in && stored; j++)
            stored = kiln_op_table[g->nodes[x->in[j]].op].kind == KILN_KIND_SOURCE || read_back[x->in[j]];
        if (!stored) continue;
        member[id] = 1;
        n++;
    }
    free(read_back);
    return n;
}

bool kiln_recompute_light(kiln_graph *g, uint32_t n_forward, uint32_t *map, kiln_checkpoint_result *res,
                          kiln_diags *d)
{
    memset(res, 0, sizeof *res);
    KILN_ASSERT(n_forward <= g->n_nodes);
    unsigned char *member = xcalloc(g->n_nodes, 1);
    bool ok = true;
    if (find_light(g, n_forward, member)) ok = rebuild_graph(g, n_forward, member, map, &res->n_recomputed, d);
    else
        for (uint32_t id = 0; id < g->n_nodes; id++) map[id] = id;
    free(member);
    return ok;
}
