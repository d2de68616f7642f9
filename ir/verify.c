/* verify.c — checks a graph's internal invariants.
 *
 * kiln_graph_add makes every graph it builds well formed; passes that rewrite graphs
 * (or code that pokes at nodes directly) can break that, so tests run this after every
 * pass. It re-derives everything the builder guarantees, node by node:
 *
 *   - the op code is in the table and the type is sane (dtype, rank 0..8, dims >= 0);
 *   - the inputs refer to earlier nodes and their number matches the op's arity;
 *   - the shape rule, re-run on a copy of the stored attributes, succeeds and gives
 *     exactly the stored type and leaves the attributes unchanged (they were stored
 *     normalised; the printer and the parser rely on this);
 *   - source attributes the rules do not look at are in range (init kind, names);
 *   - INPUT, PARAM and STATE names are unique (per op), output names are unique;
 *   - outputs and the loss refer to existing nodes, and the loss is a scalar f32;
 *   - each update targets a PARAM or STATE, at most once, with a value of its type.
 *
 * Each problem is one diagnostic whose `where` is the node id and label ("%12 'fc1'"),
 * so that one run lists all of them. A node whose own type is broken is not used to
 * check the nodes that read it (that would only repeat the same problem).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* "%12 'fc1'" or "%12" */
static const char *node_where(const kiln_graph *g, uint32_t id, char *buf, size_t size)
{
    const char *label = g->nodes[id].label;
    if (label) snprintf(buf, size, "%%%u '%s'", id, label);
    else snprintf(buf, size, "%%%u", id);
    return buf;
}

static bool type_sane(const kiln_type *t)
{
    if ((t->dtype != KILN_F32 && t->dtype != KILN_I32) || t->rank < 0 || t->rank > KILN_MAX_RANK) return false;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] < 0) return false;
    return true;
}

static bool same_double(double x, double y) { return x == y || (isnan(x) && isnan(y)); }

/* Compares the first n entries; n is clamped to 0..KILN_MAX_RANK (it may be corrupt). */
static bool same_i64s(const int64_t *x, const int64_t *y, int n)
{
    if (n > KILN_MAX_RANK) n = KILN_MAX_RANK;
    for (int i = 0; i < n; i++)
        if (x[i] != y[i]) return false;
    return true;
}

/* The first attribute selected by the op's bits that differs between x and y, or NULL.
 * Fields the op does not select are ignored: they may hold anything. */
static const char *attrs_differ(const kiln_op_info *info, const kiln_attrs *x, const kiln_attrs *y, int in_rank)
{
    unsigned bits = info->attrs;
    if ((bits & KILN_A_TYPE) && (x->dtype != y->dtype || x->rank != y->rank || !same_i64s(x->shape, y->shape, x->rank)))
        return "the type attribute";
    if ((bits & KILN_A_NAME) && x->name != y->name) return "name";
    if ((bits & KILN_A_INIT) && (x->init != y->init || !same_double(x->init_arg, y->init_arg))) return "init";
    if ((bits & KILN_A_VALUES) && (x->values != y->values || x->n_values != y->n_values)) return "values";
    if ((bits & KILN_A_AXIS) && x->axis != y->axis) return "axis";
    if ((bits & KILN_A_AXES) && (x->n_axes != y->n_axes || !same_i64s(x->axes, y->axes, x->n_axes))) return "axes";
    if ((bits & KILN_A_KEEPDIMS) && x->keepdims != y->keepdims) return "keepdims";
    if ((bits & KILN_A_PERM) && !same_i64s(x->perm, y->perm, in_rank)) return "perm";
    if ((bits & KILN_A_SLICE) && (x->start != y->start || x->end != y->end || x->step != y->step))
        return "start/end/step";
    if ((bits & KILN_A_SCALAR) && !same_double(x->scalar, y->scalar))
        return info->scalar_name ? info->scalar_name : "scalar";
    if ((bits & KILN_A_TRANSPOSE) && (x->transpose_a != y->transpose_a || x->transpose_b != y->transpose_b))
        return "transpose_a/transpose_b";
    if ((bits & KILN_A_ATTN) && (x->causal != y->causal || x->has_mask != y->has_mask || x->has_bias != y->has_bias ||
                                 x->alibi != y->alibi || x->relative != y->relative))
        return "causal/has_mask/has_bias/alibi/relative";
    if ((bits & KILN_A_ATTN) && (!same_double(x->attn_dropout, y->attn_dropout) ||
                                 (x->attn_dropout != 0 && x->stream != y->stream)))
        return "dropout/stream";
    if ((bits & KILN_A_IGNORE) && x->ignore_index != y->ignore_index) return "ignore_index";
    if ((bits & KILN_A_STREAM) && x->stream != y->stream) return "stream";
    if ((bits & KILN_A_WRT) && x->wrt != y->wrt) return "wrt";
    return NULL;
}

/* Checks node `id` whose op is valid; returns false if its own type is unusable. */
static bool verify_node(const kiln_graph *g, uint32_t id, const bool *type_ok, kiln_diags *diags)
{
    const kiln_node *n = &g->nodes[id];
    const kiln_op_info *info = &kiln_op_table[n->op];
    char where[300], tbuf[2][160];
    node_where(g, id, where, sizeof where);

    bool ok = type_sane(&n->type);
    if (!ok)
        kiln_diags_add(diags, NULL, 0, 0, where, "%s: the stored type is malformed (dtype, rank or a dim)",
                       info->name);

    bool check_rule = true;
    if (n->n_in > 0 && !n->in) {
        kiln_diags_add(diags, NULL, 0, 0, where, "%s: %u inputs but no input list", info->name, n->n_in);
        return ok;
    }
    if (info->arity >= 0 && n->n_in != (uint32_t)info->arity) {
        kiln_diags_add(diags, NULL, 0, 0, where, "%s takes %d input%s but the node has %u", info->name, info->arity,
                       info->arity == 1 ? "" : "s", n->n_in);
        check_rule = false;
    }
    for (uint32_t k = 0; k < n->n_in; k++) {
        if (n->in[k] >= id) {
            kiln_diags_add(diags, NULL, 0, 0, where, "%s: input %u is %%%u, which is not an earlier node",
                           info->name, k, n->in[k]);
            check_rule = false;
        } else if (!type_ok[n->in[k]]) {
            check_rule = false; /* already reported at that node */
        }
    }

    if ((info->attrs & KILN_A_NAME) && !n->attrs.name)
        kiln_diags_add(diags, NULL, 0, 0, where, "%s has no name", info->name);
    if ((info->attrs & KILN_A_INIT) && (n->attrs.init < KILN_INIT_NORMAL || n->attrs.init > KILN_INIT_UNIFORM))
        kiln_diags_add(diags, NULL, 0, 0, where, "%s: init kind %d is unknown", info->name, (int)n->attrs.init);

    if (!check_rule || !ok) return ok;

    const kiln_type **types = malloc((n->n_in ? n->n_in : 1) * sizeof *types);
    KILN_ASSERT(types != NULL);
    for (uint32_t k = 0; k < n->n_in; k++) types[k] = &g->nodes[n->in[k]].type;
    kiln_attrs again = n->attrs;
    kiln_type t;
    char msg[512];
    if (!kiln_infer_type(n->op, types, n->n_in, &again, &t, msg, sizeof msg)) {
        kiln_diags_add(diags, NULL, 0, 0, where, "%s: the shape rule fails: %s", info->name, msg);
    } else if (!kiln_type_equal(&t, &n->type)) {
        kiln_diags_add(diags, NULL, 0, 0, where, "%s: the stored type is %s but the shape rule gives %s", info->name,
                       kiln_type_str(&n->type, tbuf[0], sizeof tbuf[0]), kiln_type_str(&t, tbuf[1], sizeof tbuf[1]));
    } else {
        int in_rank = n->n_in ? g->nodes[n->in[0]].type.rank : 0;
        const char *what = attrs_differ(info, &n->attrs, &again, in_rank);
        if (what)
            kiln_diags_add(diags, NULL, 0, 0, where, "%s: %s is not normalised (the shape rule changes it)",
                           info->name, what);
    }
    free(types);
    return ok;
}

/* Each pair of same-op nodes (INPUT, PARAM or STATE) with the same name, reported once at the
 * later node. Quadratic, but only over sources, which number in the hundreds. */
static void verify_names(const kiln_graph *g, kiln_diags *diags)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        bool named = n->op == KILN_OP_INPUT || n->op == KILN_OP_PARAM || n->op == KILN_OP_STATE;
        if (!named || !n->attrs.name) continue;
        for (uint32_t j = 0; j < i; j++) {
            const kiln_node *m = &g->nodes[j];
            if (m->op == n->op && m->attrs.name && strcmp(m->attrs.name, n->attrs.name) == 0) {
                char where[300];
                node_where(g, i, where, sizeof where);
                kiln_diags_add(diags, NULL, 0, 0, where, "%s name \"%s\" is also used by %%%u",
                               kiln_op_table[n->op].name, n->attrs.name, j);
                break;
            }
        }
    }
}

static void verify_outputs(const kiln_graph *g, kiln_diags *diags)
{
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        const kiln_output *o = &g->outputs[i];
        const char *name = o->name ? o->name : "(null)";
        if (!o->name) kiln_diags_add(diags, NULL, 0, 0, "outputs", "output %u has no name", i);
        if (o->node >= g->n_nodes)
            kiln_diags_add(diags, NULL, 0, 0, name, "output refers to %%%u but the graph has %u nodes", o->node,
                           g->n_nodes);
        for (uint32_t j = 0; o->name && j < i; j++)
            if (g->outputs[j].name && strcmp(g->outputs[j].name, o->name) == 0) {
                kiln_diags_add(diags, NULL, 0, 0, name, "output name is given twice");
                break;
            }
    }
    if (g->loss == KILN_NONE) return;
    if (g->loss >= g->n_nodes) {
        kiln_diags_add(diags, NULL, 0, 0, "loss", "the loss refers to %%%u but the graph has %u nodes", g->loss,
                       g->n_nodes);
        return;
    }
    const kiln_type *t = &g->nodes[g->loss].type;
    if (t->dtype != KILN_F32 || t->rank != 0) {
        char where[300], buf[160];
        node_where(g, g->loss, where, sizeof where);
        kiln_diags_add(diags, NULL, 0, 0, where, "the loss must be a scalar f32, not %s",
                       type_sane(t) ? kiln_type_str(t, buf, sizeof buf) : "a malformed type");
    }
}

/* Each update names an existing PARAM or STATE, at most once, and a value of its type. */
static void verify_updates(const kiln_graph *g, kiln_diags *diags)
{
    for (uint32_t i = 0; i < g->n_updates; i++) {
        const kiln_update *u = &g->updates[i];
        char where[64];
        snprintf(where, sizeof where, "update %u", i);
        if (u->target >= g->n_nodes || u->value >= g->n_nodes) {
            kiln_diags_add(diags, NULL, 0, 0, where, "refers to %%%u = %%%u but the graph has %u nodes", u->target,
                           u->value, g->n_nodes);
            continue;
        }
        const kiln_node *t = &g->nodes[u->target], *v = &g->nodes[u->value];
        if (t->op != KILN_OP_PARAM && t->op != KILN_OP_STATE)
            kiln_diags_add(diags, NULL, 0, 0, where, "the target %%%u is not a param or a state", u->target);
        if (!type_sane(&t->type) || !type_sane(&v->type) || !kiln_type_equal(&t->type, &v->type)) {
            char a[160], b[160];
            kiln_diags_add(diags, NULL, 0, 0, where, "the new value %%%u (%s) does not have the type of %%%u (%s)",
                           u->value, type_sane(&v->type) ? kiln_type_str(&v->type, b, sizeof b) : "malformed",
                           u->target, type_sane(&t->type) ? kiln_type_str(&t->type, a, sizeof a) : "malformed");
        }
        for (uint32_t j = 0; j < i; j++)
            if (g->updates[j].target == u->target) {
                kiln_diags_add(diags, NULL, 0, 0, where, "%%%u is also updated by update %u", u->target, j);
                break;
            }
    }
}

bool kiln_graph_verify(const kiln_graph *g, kiln_diags *diags)
{
    int before = diags->n + diags->dropped;
    if (g->n_nodes > 0 && !g->nodes) {
        kiln_diags_add(diags, NULL, 0, 0, NULL, "the graph has %u nodes but no node array", g->n_nodes);
        return false;
    }
    bool *type_ok = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *type_ok);
    KILN_ASSERT(type_ok != NULL);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if ((unsigned)n->op >= KILN_OP_COUNT) {
            char where[300];
            node_where(g, i, where, sizeof where);
            kiln_diags_add(diags, NULL, 0, 0, where, "op code %d is not in the op table", (int)n->op);
            continue;
        }
        type_ok[i] = verify_node(g, i, type_ok, diags);
    }
    free(type_ok);
    verify_names(g, diags);
    verify_outputs(g, diags);
    verify_updates(g, diags);
    return diags->n + diags->dropped == before;
}
