/* cmd_check.c — `kiln check`: validate a model file and describe it — dims, inputs,
 * parameters, every node's shape, outputs, FLOPs of one forward pass and the memory the
 * forward pass's intermediate values need (with no reuse, and the lower bound any plan
 * can reach: the largest set of values live at once in node order).
 *
 * --json prints one object for scripts and tests; --dump-ir prints the graph's IR text
 * (the golden tests' view of the frontend). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "driver.h"
#include "passes.h"

typedef struct memory_report {
    int64_t unplanned_bytes;    /* every intermediate value needed by the outputs */
    int64_t lower_bound_bytes;  /* most bytes live at one time */
} memory_report;

static bool is_intermediate(const kiln_node *n) { return kiln_op_table[n->op].kind != KILN_KIND_SOURCE; }

static memory_report measure_memory(const kiln_graph *g, const unsigned char *needed)
{
    memory_report r = {0, 0};
    uint32_t *last_use = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *last_use);
    KILN_ASSERT(last_use != NULL);
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        last_use[id] = id;
        for (uint32_t j = 0; j < g->nodes[id].n_in; j++) last_use[g->nodes[id].in[j]] = id;
    }
    for (uint32_t i = 0; i < g->n_outputs; i++) last_use[g->outputs[i].node] = g->n_nodes;
    /* sweep: +bytes at definition, -bytes after the last use */
    int64_t *release = calloc((size_t)g->n_nodes + 1, sizeof *release);
    KILN_ASSERT(release != NULL);
    int64_t live = 0;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        if (needed[id] && is_intermediate(n)) {
            int64_t bytes = kiln_type_numel(&n->type) * KILN_ELEM_BYTES;
            r.unplanned_bytes += bytes;
            live += bytes;
            release[last_use[id]] += bytes;
        }
        if (live > r.lower_bound_bytes) r.lower_bound_bytes = live;
        live -= release[id];
    }
    free(release);
    free(last_use);
    return r;
}

static void print_text(const kiln_model *m, int64_t params, int64_t flops, memory_report mem)
{
    const kiln_graph *g = &m->graph;
    char buf[256];
    printf("model %s (%s)\n", m->name, m->file);
    printf("dims:");
    for (int i = 0; i < m->n_dims; i++) printf(" %s=%lld", m->dims[i].name, (long long)m->dims[i].value);
    printf("%s\ninputs:\n", m->n_dims ? "" : " (none)");
    for (int i = 0; i < m->n_inputs; i++) {
        const kiln_node *n = &g->nodes[m->inputs[i]];
        printf("  %-24s %s\n", n->attrs.name, kiln_type_str(&n->type, buf, sizeof buf));
    }
    printf("parameters: %lld in %d tensors (%.2f MiB)\n", (long long)params, m->n_params,
           (double)params * 4 / (1 << 20));
    for (int i = 0; i < m->n_params; i++) {
        const kiln_node *n = &g->nodes[m->params[i]];
        printf("  %-40s %s\n", n->attrs.name, kiln_type_str(&n->type, buf, sizeof buf));
    }
    printf("nodes: %u\n", g->n_nodes);
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        if (!is_intermediate(n)) continue;
        printf("  %%%-5u %-14s %-28s %-20s %s\n", id, kiln_op_table[n->op].name,
               kiln_type_str(&n->type, buf, sizeof buf), n->origin ? n->origin : "", n->label ? n->label : "");
    }
    printf("outputs:\n");
    for (uint32_t i = 0; i < g->n_outputs; i++)
        printf("  %-24s %s\n", g->outputs[i].name, kiln_type_str(&g->nodes[g->outputs[i].node].type, buf, sizeof buf));
    if (g->loss != KILN_NONE) printf("loss: %%%u\n", g->loss);
    printf("forward FLOPs: %lld (%.3f GFLOP)\n", (long long)flops, (double)flops / 1e9);
    printf("forward intermediates: %lld bytes without reuse, %lld bytes live at most\n",
           (long long)mem.unplanned_bytes, (long long)mem.lower_bound_bytes);
}

static void print_json(const kiln_model *m, int64_t params, int64_t flops, memory_report mem)
{
    const kiln_graph *g = &m->graph;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddNumberToObject(o, "params", (double)params);
    cJSON_AddNumberToObject(o, "param_tensors", m->n_params);
    cJSON_AddNumberToObject(o, "flops", (double)flops);
    cJSON_AddNumberToObject(o, "nodes", g->n_nodes);
    cJSON_AddNumberToObject(o, "unplanned_bytes", (double)mem.unplanned_bytes);
    cJSON_AddNumberToObject(o, "lower_bound_bytes", (double)mem.lower_bound_bytes);
    cJSON *dims = cJSON_AddObjectToObject(o, "dims");
    for (int i = 0; i < m->n_dims; i++) cJSON_AddNumberToObject(dims, m->dims[i].name, (double)m->dims[i].value);
    cJSON *shapes = cJSON_AddObjectToObject(o, "outputs");
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        const kiln_type *t = &g->nodes[g->outputs[i].node].type;
        cJSON *s = cJSON_AddArrayToObject(shapes, g->outputs[i].name);
        for (int d = 0; d < t->rank; d++) cJSON_AddItemToArray(s, cJSON_CreateNumber((double)t->dims[d]));
    }
    char *text = cJSON_Print(o);
    puts(text);
    free(text);
    cJSON_Delete(o);
}

int cmd_check(int argc, char **argv, kiln_diags *diags)
{
    bool json = false, train = false, dump_ir = false;
    cli_flag flags[] = {
        {"--json", CLI_BOOL, &json, NULL},
        {"--train", CLI_BOOL, &train, NULL},
        {"--dump-ir", CLI_BOOL, &dump_ir, NULL},
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (args.n_positional != 1) {
        kiln_diags_add(diags, NULL, 0, 0, "check", "expects one MODEL.json");
        return EXIT_USAGE;
    }
    kiln_load_options opt = {args.defines, args.n_defines, NULL, 0};
    kiln_model model;
    if (!kiln_model_load(&model, args.positional[0], &opt, diags)) return EXIT_FAIL;
    if (train) {
        kiln_diags_add(diags, NULL, 0, 0, "--train",
                       "the training step is not implemented in this version of kiln");
        kiln_model_free(&model);
        return EXIT_FAIL;
    }
    if (dump_ir) {
        char *text = kiln_graph_print(&model.graph);
        fputs(text, stdout);
        free(text);
        kiln_model_free(&model);
        return EXIT_OK;
    }
    int64_t params = 0;
    for (int i = 0; i < model.n_params; i++) params += kiln_type_numel(&model.graph.nodes[model.params[i]].type);
    unsigned char *needed = calloc(model.graph.n_nodes ? model.graph.n_nodes : 1, 1);
    KILN_ASSERT(needed != NULL);
    bind_needed(&model.graph, false, needed);
    memory_report mem = measure_memory(&model.graph, needed);
    int64_t flops = kiln_graph_flops(&model.graph);
    if (json) print_json(&model, params, flops, mem);
    else print_text(&model, params, flops, mem);
    free(needed);
    kiln_model_free(&model);
    return EXIT_OK;
}
