/* ir_model.c — a kiln_model read from the IR text form (docs/ir.md) instead of a model
 * file: what `kiln check --dump-ir` and `--dump-after STAGE` print can be edited and given
 * back to any command that takes MODEL.json, as FILE.kir (kiln_model_load picks this
 * reader by the extension). So a graph written op by op, or a pass's output, can be
 * checked, compiled and run like a model.
 *
 * The text is parsed and verified as written. Its input nodes become the model's inputs
 * and its param nodes its parameters, in node order (the order --dump-ir prints them in,
 * the model file's); the graph's name is the model's; `train`, `tokenizer` and `init`
 * take their defaults (SPEC section 4). Shapes are concrete in IR text, so dims cannot
 * be bound (-D is refused). A generation graph (state nodes) or a training step
 * (update lines) is refused: the commands build those themselves from a forward graph
 * and its loss. */
#include <string.h>

#include "fe.h"

bool kiln_model_path_is_ir(const char *path)
{
    size_t n = path ? strlen(path) : 0;
    return n > 4 && strcmp(path + n - 4, ".kir") == 0;
}

bool kiln_model_load_ir(kiln_model *m, const char *text, const char *file, const kiln_load_options *opt,
                        kiln_diags *diags)
{
    memset(m, 0, sizeof *m);
    kiln_graph_init(&m->graph, "model");
    m->file = kiln_arena_strdup(&m->graph.arena, file ? file : "<model>");
    kiln_model_defaults(m);
    m->decode_pos = m->decode_len = KILN_NONE;
    bool ok = true;
    if (opt && opt->n_defines > 0) {
        kiln_diags_add(diags, m->file, 0, 0, "-D", "IR text has concrete shapes: dims cannot be bound");
        ok = false;
    }
    if (ok && !(kiln_graph_parse(&m->graph, text, m->file, diags) && kiln_graph_verify(&m->graph, diags))) ok = false;
    if (ok && !(fe_valid_name(m->graph.name, true) && strlen(m->graph.name) < 200)) { /* as model.c */
        kiln_diags_add(diags, m->file, 1, 7, "graph",
                       "'%s' must match [a-z_][a-z0-9_]* and be under 200 characters (the model's name: it "
                       "prefixes exported C symbols)",
                       m->graph.name ? m->graph.name : "");
        ok = false;
    }
    if (ok && m->graph.n_updates > 0) {
        kiln_diags_add(diags, m->file, 0, 0, "update",
                       "the graph has %u update lines (a training step): give the forward graph and its loss, and "
                       "--train where the command has it",
                       (unsigned)m->graph.n_updates);
        ok = false;
    }
    for (uint32_t i = 0; ok && i < m->graph.n_nodes; i++) {
        const kiln_node *n = &m->graph.nodes[i];
        if (n->op == KILN_OP_STATE) {
            kiln_diags_add(diags, m->file, 0, 0, n->attrs.name,
                           "state node %%%u: generation graphs are built by `kiln generate` from a model", i);
            ok = false;
        }
        m->n_inputs += n->op == KILN_OP_INPUT;
        m->n_params += n->op == KILN_OP_PARAM;
    }
    if (!ok) {
        kiln_model_free(m);
        return false;
    }
    m->name = m->graph.name;
    m->inputs = kiln_arena_alloc(&m->graph.arena, sizeof *m->inputs * (size_t)(m->n_inputs + 1));
    m->params = kiln_arena_alloc(&m->graph.arena, sizeof *m->params * (size_t)(m->n_params + 1));
    int ni = 0, np = 0;
    for (uint32_t i = 0; i < m->graph.n_nodes; i++) {
        if (m->graph.nodes[i].op == KILN_OP_INPUT) m->inputs[ni++] = i;
        if (m->graph.nodes[i].op == KILN_OP_PARAM) m->params[np++] = i;
    }
    return true;
}
