/* graph.c — the op table, types, and the graph builder.
 *
 * kiln_graph_add is the one way nodes enter a graph: it copies attributes into the
 * graph's arena and runs the op's shape rule (shape.c), so every graph that exists is
 * well typed and every user error is reported where the node came from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

const kiln_op_info kiln_op_table[KILN_OP_COUNT] = {
#define OP(id, text, arity, kind, attrs, scalar_name) \
    [KILN_OP_##id] = {text, arity, KILN_KIND_##kind, attrs, scalar_name},
#include "ops.def"
#undef OP
};

bool kiln_op_table_check(char *msg, size_t size)
{
    for (int i = 0; i < KILN_OP_COUNT; i++) {
        const kiln_op_info *o = &kiln_op_table[i];
        if (!o->name || !o->name[0]) {
            snprintf(msg, size, "op %d has no name", i);
            return false;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(kiln_op_table[j].name, o->name) == 0) {
                snprintf(msg, size, "ops %d and %d are both named '%s'", j, i, o->name);
                return false;
            }
        if ((o->kind == KILN_KIND_SOURCE) != (o->arity == 0)) {
            snprintf(msg, size, "op '%s': a source has no inputs, and only a source", o->name);
            return false;
        }
        if (((o->attrs & KILN_A_SCALAR) != 0) != (o->scalar_name != NULL)) {
            snprintf(msg, size, "op '%s': a scalar attribute needs a name, and a name a scalar attribute", o->name);
            return false;
        }
        if (!kiln_shape_rule_exists((kiln_op)i)) {
            snprintf(msg, size, "op '%s' has no shape rule (ir/shape.c)", o->name);
            return false;
        }
        if (o->arity < -1 || o->arity > 3) {
            snprintf(msg, size, "op '%s': arity %d", o->name, o->arity);
            return false;
        }
    }
    return true;
}
#undef OP

const char *const kiln_wrt_names[KILN_WRT_COUNT] = {"q", "k", "v", "scores"};

kiln_op kiln_op_from_name(const char *name)
{
    for (int i = 0; i < KILN_OP_COUNT; i++)
        if (strcmp(kiln_op_table[i].name, name) == 0) return (kiln_op)i;
    return KILN_OP_COUNT;
}

int64_t kiln_type_numel(const kiln_type *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->dims[i];
    return n;
}

bool kiln_type_equal(const kiln_type *a, const kiln_type *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

char *kiln_type_str(const kiln_type *t, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "%s[", kiln_dtype_name(t->dtype));
    for (int i = 0; i < t->rank && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ",%lld" : "%lld", (long long)t->dims[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

void kiln_graph_init(kiln_graph *g, const char *name)
{
    memset(g, 0, sizeof *g);
    kiln_arena_init(&g->arena);
    g->name = kiln_arena_strdup(&g->arena, name ? name : "graph");
    g->loss = KILN_NONE;
}

void kiln_graph_free(kiln_graph *g)
{
    kiln_arena_free(&g->arena);
    free(g->nodes);
    free(g->outputs);
    free(g->updates);
    memset(g, 0, sizeof *g);
    g->loss = KILN_NONE;
}

void kiln_graph_add_output(kiln_graph *g, const char *name, uint32_t node)
{
    KILN_ASSERT(node < g->n_nodes);
    if (g->n_outputs == g->cap_outputs) {
        uint32_t cap = g->cap_outputs ? g->cap_outputs * 2 : 4;
        kiln_output *o = realloc(g->outputs, cap * sizeof *o);
        KILN_ASSERT(o != NULL);
        g->outputs = o;
        g->cap_outputs = cap;
    }
    g->outputs[g->n_outputs++] = (kiln_output){kiln_arena_strdup(&g->arena, name), node};
}

void kiln_graph_add_update(kiln_graph *g, uint32_t target, uint32_t value)
{
    KILN_ASSERT(target < g->n_nodes && value < g->n_nodes);
    if (g->n_updates == g->cap_updates) {
        uint32_t cap = g->cap_updates ? g->cap_updates * 2 : 16;
        kiln_update *u = realloc(g->updates, cap * sizeof *u);
        KILN_ASSERT(u != NULL);
        g->updates = u;
        g->cap_updates = cap;
    }
    g->updates[g->n_updates++] = (kiln_update){target, value};
}

/* Copies what the attributes point to into the graph's arena. */
static void own_attrs(kiln_graph *g, kiln_attrs *a, const kiln_op_info *info)
{
    if ((info->attrs & KILN_A_NAME) && a->name) a->name = kiln_arena_strdup(&g->arena, a->name);
    if ((info->attrs & KILN_A_VALUES) && a->values && a->n_values > 0) {
        size_t bytes = (size_t)a->n_values * KILN_ELEM_BYTES;
        void *copy = kiln_arena_alloc(&g->arena, bytes);
        memcpy(copy, a->values, bytes);
        a->values = copy;
    }
}

uint32_t kiln_graph_add(kiln_graph *g, kiln_op op, const uint32_t *in, uint32_t n_in,
                        const kiln_attrs *attrs, const char *label, const char *origin,
                        kiln_diags *diags)
{
    KILN_ASSERT(op < KILN_OP_COUNT);
    const kiln_op_info *info = &kiln_op_table[op];
    const kiln_type *types[64];
    KILN_ASSERT(n_in <= 64);
    for (uint32_t i = 0; i < n_in; i++) {
        if (in[i] == KILN_NONE) return KILN_NONE; /* an earlier error was reported */
        KILN_ASSERT(in[i] < g->n_nodes);
        types[i] = &g->nodes[in[i]].type;
    }

    kiln_attrs a;
    if (attrs) a = *attrs;
    else memset(&a, 0, sizeof a);
    /* a dropout without a mask stream gets its own: the id it is about to have (never 0,
     * as dropout has an input) */
    if (op == KILN_OP_DROPOUT && a.stream == 0) a.stream = g->n_nodes;
    /* likewise an attention with dropout (its lse and gradients copy the forward's) */
    if (op == KILN_OP_ATTENTION && a.attn_dropout > 0 && a.stream == 0) a.stream = g->n_nodes;

    kiln_type out;
    char msg[512];
    if (!kiln_infer_type(op, types, n_in, &a, &out, msg, sizeof msg)) {
        if (label) kiln_diags_add(diags, NULL, 0, 0, origin, "%s '%s': %s", info->name, label, msg);
        else kiln_diags_add(diags, NULL, 0, 0, origin, "%s: %s", info->name, msg);
        return KILN_NONE;
    }

    if (g->n_nodes == g->cap_nodes) {
        uint32_t cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
        kiln_node *nodes = realloc(g->nodes, cap * sizeof *nodes);
        KILN_ASSERT(nodes != NULL);
        g->nodes = nodes;
        g->cap_nodes = cap;
    }
    own_attrs(g, &a, info);
    uint32_t *ins = NULL;
    if (n_in) {
        ins = kiln_arena_alloc(&g->arena, n_in * sizeof *ins);
        memcpy(ins, in, n_in * sizeof *ins);
    }
    uint32_t id = g->n_nodes++;
    g->nodes[id] = (kiln_node){
        .op = op,
        .type = out,
        .n_in = n_in,
        .in = ins,
        .attrs = a,
        .label = label ? kiln_arena_strdup(&g->arena, label) : NULL,
        .origin = origin ? kiln_arena_strdup(&g->arena, origin) : NULL,
    };
    return id;
}
