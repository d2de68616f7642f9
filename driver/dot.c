/* dot.c — `kiln compile --emit dot`: the kernel schedule as a Graphviz picture.
 *
 * Design: the picture follows the code, not the graph — one box per kernel the entry
 * calls, in call order, so a training step's ~2,900 nodes become a few hundred boxes
 * that `dot` lays out in seconds (drawing every node took Graphviz more than ten
 * minutes). An edge k → j says kernel j reads a value kernel k wrote; nodes no kernel
 * computes (views, reshapes) are looked through to the kernel that wrote their input. The
 * model's inputs and outputs are ovals; parameters and optimizer state are counted in
 * the box that reads them, and so are the updates a box writes, rather than drawn
 * (there are hundreds, and they would pull every box to the top). With `nodes` every computed node is drawn, each kernel's
 * members inside one cluster, with the sources and views they read outside. Colours tell
 * the kinds apart: GEMM blue, attention orange, fused loops green, one-node kernels grey.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static const char *kind_colour(kiln_kernel_kind kind)
{
    switch (kind) {
    case KILN_KERNEL_GEMM: return "#cfe2f3";
    case KILN_KERNEL_ATTENTION:
    case KILN_KERNEL_ATTENTION_GRAD: return "#fce5cd";
    case KILN_KERNEL_LOOP:
    case KILN_KERNEL_REDUCE:
    case KILN_KERNEL_ROW: return "#d9ead3";
    case KILN_KERNEL_MULTI: return "#ead1dc";
    case KILN_KERNEL_NODE: break;
    }
    return "#eeeeee";
}

/* s inside a DOT string: quotes and backslashes escaped. */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

static bool is_source(const kiln_graph *g, uint32_t id)
{
    return kiln_op_table[g->nodes[id].op].kind == KILN_KIND_SOURCE;
}

/* The kernel that wrote node id's value, looking through nodes no kernel computes
 * (views and reshapes: they alias their first input); KILN_NONE for a source. */
static uint32_t producer(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t id)
{
    while (s->kernel_of[id] == KILN_NONE && !is_source(g, id) && g->nodes[id].n_in > 0) id = g->nodes[id].in[0];
    return s->kernel_of[id];
}

/* The source node (through views) node id reads, or KILN_NONE. */
static uint32_t source_of(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t id)
{
    while (s->kernel_of[id] == KILN_NONE && !is_source(g, id) && g->nodes[id].n_in > 0) id = g->nodes[id].in[0];
    return s->kernel_of[id] == KILN_NONE && is_source(g, id) ? id : KILN_NONE;
}

static void source_node(FILE *f, const kiln_graph *g, uint32_t id)
{
    const kiln_node *n = &g->nodes[id];
    char type[160];
    fprintf(f, "  n%u [shape=oval, label=\"", id);
    put_escaped(f, n->attrs.name ? n->attrs.name : kiln_op_table[n->op].name);
    fprintf(f, "\\n%s\"];\n", kiln_type_str(&n->type, type, sizeof type));
}

static void kernels_dot(FILE *f, const kiln_graph *g, const kiln_kernel_schedule *s, unsigned char *drawn)
{
    uint32_t nk = s->n_kernels;
    uint32_t *edge_mark = malloc((nk ? nk : 1) * sizeof *edge_mark);     /* per producer: last reader */
    uint32_t *src_mark = malloc((g->n_nodes ? g->n_nodes : 1) * sizeof *src_mark); /* per source */
    KILN_ASSERT(edge_mark && src_mark);
    for (uint32_t i = 0; i < nk; i++) edge_mark[i] = KILN_NONE;
    for (uint32_t i = 0; i < g->n_nodes; i++) src_mark[i] = KILN_NONE;
    /* per kernel: the parameters and states whose new value it writes (training step) */
    uint32_t *n_updates = calloc(nk ? nk : 1, sizeof *n_updates);
    KILN_ASSERT(n_updates != NULL);
    for (uint32_t u = 0; u < g->n_updates; u++) {
        uint32_t p = producer(g, s, g->updates[u].value);
        if (p != KILN_NONE) n_updates[p]++;
    }
    char kind[128], ops[256], type[192], where[256];
    for (uint32_t k = 0; k < nk; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        int n_params = 0;
        for (uint32_t i = 0; i < kn->n; i++) {
            const kiln_node *n = &g->nodes[s->members[kn->first + i]];
            for (uint32_t j = 0; j < n->n_in; j++) {
                uint32_t src = source_of(g, s, n->in[j]);
                if (src == KILN_NONE || src_mark[src] == k) continue;
                src_mark[src] = k;
                if (g->nodes[src].op != KILN_OP_INPUT) {
                    n_params += g->nodes[src].op != KILN_OP_CONSTANT;
                    continue;
                }
                if (!drawn[src]) source_node(f, g, src);
                drawn[src] = 1;
                fprintf(f, "  n%u -> k%u;\n", src, k);
            }
        }
        kernel_kind(g, s, k, kind, sizeof kind);
        kernel_ops(g, s, k, ops, sizeof ops);
        kernel_type(g, s, k, type, sizeof type);
        kernel_where(g, s, k, where, sizeof where);
        fprintf(f, "  k%u [fillcolor=\"%s\", label=\"#%u ", k, kind_colour(kn->kind), k);
        put_escaped(f, kind);
        fprintf(f, "\\n%u op%s: ", kn->n, kn->n == 1 ? "" : "s");
        put_escaped(f, ops);
        fprintf(f, "\\n%s", type);
        if (n_params) fprintf(f, " (+%d param%s)", n_params, n_params == 1 ? "" : "s");
        if (n_updates[k]) fprintf(f, "\\nupdates %u param%s/state%s", n_updates[k], n_updates[k] == 1 ? "" : "s",
                                  n_updates[k] == 1 ? "" : "s");
        fprintf(f, "\\n");
        put_escaped(f, where);
        fprintf(f, "\"];\n");
        for (uint32_t i = 0; i < kn->n; i++) {
            const kiln_node *n = &g->nodes[s->members[kn->first + i]];
            for (uint32_t j = 0; j < n->n_in; j++) {
                uint32_t p = producer(g, s, n->in[j]);
                if (p == KILN_NONE || p == k || edge_mark[p] == k) continue;
                edge_mark[p] = k;
                fprintf(f, "  k%u -> k%u;\n", p, k);
            }
        }
    }
    free(edge_mark);
    free(src_mark);
    free(n_updates);
}

/* Draws node id outside the clusters (a source or a view), and what a view reads. */
static void outside_node(FILE *f, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t id, unsigned char *drawn)
{
    while (!drawn[id]) {
        drawn[id] = 1;
        const kiln_node *n = &g->nodes[id];
        if (is_source(g, id) || n->n_in == 0) {
            source_node(f, g, id);
            return;
        }
        char type[160];
        fprintf(f, "  n%u [style=dashed, label=\"%%%u %s\\n%s\"];\n", id, id, kiln_op_table[n->op].name,
                kiln_type_str(&n->type, type, sizeof type));
        for (uint32_t j = 0; j < n->n_in; j++) fprintf(f, "  n%u -> n%u;\n", n->in[j], id);
        for (uint32_t j = 1; j < n->n_in; j++)
            if (s->kernel_of[n->in[j]] == KILN_NONE) outside_node(f, g, s, n->in[j], drawn);
        if (s->kernel_of[n->in[0]] != KILN_NONE) return;
        id = n->in[0];
    }
}

static void nodes_dot(FILE *f, const kiln_graph *g, const kiln_kernel_schedule *s, unsigned char *drawn)
{
    char kind[128], type[160];
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        kernel_kind(g, s, k, kind, sizeof kind);
        fprintf(f, "  subgraph cluster_k%u {\n    style=filled; fillcolor=\"%s\"; label=\"#%u ", k,
                kind_colour(kn->kind), k);
        put_escaped(f, kind);
        fprintf(f, "\";\n");
        for (uint32_t i = 0; i < kn->n; i++) {
            uint32_t id = s->members[kn->first + i];
            const kiln_node *n = &g->nodes[id];
            drawn[id] = 1;
            fprintf(f, "    n%u [fillcolor=white, label=\"%%%u %s\\n%s", id, id, kiln_op_table[n->op].name,
                    kiln_type_str(&n->type, type, sizeof type));
            if (n->label) {
                fprintf(f, "\\n");
                put_escaped(f, n->label);
            }
            fprintf(f, "\"%s];\n", s->internal[id] ? ", style=\"rounded,filled,dotted\"" : "");
        }
        fprintf(f, "  }\n");
    }
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        for (uint32_t i = 0; i < kn->n; i++) {
            uint32_t id = s->members[kn->first + i];
            const kiln_node *n = &g->nodes[id];
            for (uint32_t j = 0; j < n->n_in; j++) {
                if (s->kernel_of[n->in[j]] == KILN_NONE) outside_node(f, g, s, n->in[j], drawn);
                fprintf(f, "  n%u -> n%u;\n", n->in[j], id);
            }
        }
    }
}

char *dot_schedule(const kiln_graph *g, const kiln_kernel_schedule *s, bool nodes)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    KILN_ASSERT(f != NULL);
    fprintf(f, "digraph \"");
    put_escaped(f, g->name ? g->name : "graph");
    /* nslimit bounds the network-simplex passes that place nodes across each rank: the
     * training step's edges from forward activations to backward kernels span a hundred
     * ranks, and unbounded placement of their ~25,000 virtual nodes took Graphviz
     * minutes; at 0.2 the char_gpt training step renders in about 5 s of CPU */
    fprintf(f, "\" {\n  graph [nslimit=0.2];\n"
               "  node [shape=box, style=\"rounded,filled\", fontname=monospace, fontsize=10];\n");
    unsigned char *drawn = calloc(g->n_nodes ? g->n_nodes : 1, 1); /* per node: drawn as n<id> */
    KILN_ASSERT(drawn != NULL);
    if (nodes) nodes_dot(f, g, s, drawn);
    else kernels_dot(f, g, s, drawn);
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        uint32_t id = g->outputs[o].node;
        fprintf(f, "  out%u [shape=oval, style=bold, label=\"", o);
        put_escaped(f, g->outputs[o].name);
        fprintf(f, "\"];\n");
        uint32_t p = producer(g, s, id);
        if (nodes || p == KILN_NONE) {
            if (s->kernel_of[id] == KILN_NONE) outside_node(f, g, s, id, drawn);
            fprintf(f, "  n%u -> out%u;\n", id, o);
        } else {
            fprintf(f, "  k%u -> out%u;\n", p, o);
        }
    }
    fprintf(f, "}\n");
    free(drawn);
    fclose(f);
    return text;
}
