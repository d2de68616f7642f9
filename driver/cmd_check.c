/* cmd_check.c — `kiln check`: validate a model file and describe it — dims, inputs,
 * parameters, every node's shape, outputs, FLOPs of one forward pass and the forward
 * pass's memory plan as codegen compiles it: kernels, the planned workspace, the same
 * buffers without reuse, and the lower bound any plan can reach (the largest set of
 * workspace bytes live at once in kernel order).
 *
 * --json prints one object for scripts and tests; --dump-ir prints the graph's IR text
 * (the golden tests' view of the frontend). --train describes the training step instead
 * (trainstep.c: forward, backward and optimizer in one graph): its FLOPs, kernels and
 * workspace, and the optimizer blob. --checkpoint-activations (with --train) describes the
 * checkpointed step (trainstep.c, passes/checkpoint.c) and adds the figures of the plain
 * one: blocks found, nodes recomputed, FLOPs and workspace without it. --memory adds what
 * is live at the workspace's peak (passes/memplan_report.c): the largest buffers there and
 * their bytes by op. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "codegen.h"
#include "driver.h"
#include "passes.h"
#include "train.h"

/* The forward pass's memory plan, as codegen would compile it. */
typedef struct memory_report {
    int kernels;                /* kernel calls: one per node computed by a kernel */
    int64_t workspace_bytes;    /* the planned workspace */
    int64_t unplanned_bytes;    /* every workspace buffer without reuse */
    int64_t lower_bound_bytes;  /* most workspace bytes live at one time */
    int64_t optim_bytes;        /* --train: the optimizer blob */
    int unfused_kernels;        /* the same with one kernel per node (--disable-pass fuse) */
    int64_t unfused_workspace_bytes;
} memory_report;

/* --checkpoint-activations: what the pass did, and the plain step's figures. */
typedef struct checkpoint_report {
    kiln_checkpoint_result res;
    int64_t flops_without, workspace_without;
} checkpoint_report;

static bool is_intermediate(const kiln_node *n) { return kiln_op_table[n->op].kind != KILN_KIND_SOURCE; }

static bool plan_memory(const kiln_model *m, const train_step *ts, memory_report *r, kiln_diags *diags)
{
    kiln_compile_request req = {.g = &m->graph, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = m->name};
    req.pipeline = &cli_pipeline;
    if (ts) req = train_step_request(m, ts);

    kiln_memplan plan;
    if (!kiln_codegen_plan(&req, &plan, &r->kernels, diags)) return false;
    r->workspace_bytes = plan.workspace_bytes;
    r->unplanned_bytes = plan.unplanned_bytes;
    r->lower_bound_bytes = plan.lower_bound_bytes;
    r->optim_bytes = plan.optim_bytes;
    kiln_memplan_free(&plan);
    /* the same without fusion, to show what fusion saved */
    req.no_fuse = true;
    if (!kiln_codegen_plan(&req, &plan, &r->unfused_kernels, diags)) return false;
    r->unfused_workspace_bytes = plan.workspace_bytes;
    kiln_memplan_free(&plan);
    return true;
}

static void print_text(const kiln_model *m, int64_t params, int64_t flops, memory_report mem, const checkpoint_report *ck)
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
    const char *what = g->n_updates ? "training step" : "forward";
    printf("%s FLOPs: %lld (%.3f GFLOP)\n", what, (long long)flops, (double)flops / 1e9);
    printf("%s kernels: %d (%d without fusion)\n", what, mem.kernels, mem.unfused_kernels);
    printf("%s workspace: %lld bytes planned (%lld without reuse, %lld live at most; %lld without fusion)\n", what,
           (long long)mem.workspace_bytes, (long long)mem.unplanned_bytes, (long long)mem.lower_bound_bytes,
           (long long)mem.unfused_workspace_bytes);
    if (g->n_updates) printf("optimizer state: %lld bytes\n", (long long)mem.optim_bytes);
    if (ck)
        printf("checkpointed activations: %u blocks, %u nodes recomputed (%+.1f%% FLOPs); without: workspace %lld "
               "bytes (%.2fx this)\n", ck->res.n_blocks, ck->res.n_recomputed,
               100.0 * (double)(flops - ck->flops_without) / (double)(ck->flops_without ? ck->flops_without : 1),
               (long long)ck->workspace_without,
               (double)ck->workspace_without / (double)(mem.workspace_bytes ? mem.workspace_bytes : 1));
}

static void print_json(const kiln_model *m, int64_t params, int64_t flops, memory_report mem, const checkpoint_report *ck)
{
    const kiln_graph *g = &m->graph;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddNumberToObject(o, "params", (double)params);
    cJSON_AddNumberToObject(o, "param_tensors", m->n_params);
    cJSON_AddNumberToObject(o, "flops", (double)flops);
    cJSON_AddNumberToObject(o, "nodes", g->n_nodes);
    cJSON_AddNumberToObject(o, "kernels", mem.kernels);
    cJSON_AddNumberToObject(o, "workspace_bytes", (double)mem.workspace_bytes);
    cJSON_AddNumberToObject(o, "unplanned_bytes", (double)mem.unplanned_bytes);
    cJSON_AddNumberToObject(o, "lower_bound_bytes", (double)mem.lower_bound_bytes);
    cJSON_AddNumberToObject(o, "unfused_kernels", mem.unfused_kernels);
    cJSON_AddNumberToObject(o, "unfused_workspace_bytes", (double)mem.unfused_workspace_bytes);
    if (g->n_updates) cJSON_AddNumberToObject(o, "optim_bytes", (double)mem.optim_bytes);
    if (ck) {
        cJSON *c = cJSON_AddObjectToObject(o, "checkpoint");
        cJSON_AddNumberToObject(c, "blocks", ck->res.n_blocks);
        cJSON_AddNumberToObject(c, "recomputed_nodes", ck->res.n_recomputed);
        cJSON_AddNumberToObject(c, "flops_without", (double)ck->flops_without);
        cJSON_AddNumberToObject(c, "workspace_bytes_without", (double)ck->workspace_without);
    }
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

/* --memory: the plan's live set at its peak, after the report. */
static bool print_peak(const kiln_model *m, const train_step *ts, kiln_diags *diags)
{
    kiln_compile_request req = {.g = &m->graph, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = m->name};
    req.pipeline = &cli_pipeline;
    if (ts) req = train_step_request(m, ts);
    kiln_program prog;
    if (!kiln_codegen_program(&req, &prog, diags)) return false;
    kiln_memplan_report(prog.g, &prog.plan, &prog.sched, 24, stdout);
    kiln_program_free(&prog);
    return true;
}

/* Prints the text --dump-after asks for: the graph after that pipeline stage. */
static bool dump_stage(const kiln_model *m, const train_step *ts, kiln_diags *diags)
{
    kiln_compile_request req = {.g = &m->graph, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .pipeline = &cli_pipeline};
    if (ts) req = train_step_request(m, ts);
    char *dump = kiln_codegen_dump(&req, diags);
    if (!dump) return false;
    cli_print_dump(dump);
    free(dump);
    return true;
}

int cmd_check(int argc, char **argv, kiln_diags *diags)
{
    bool json = false, train = false, dump_ir = false, ckpt = false, memory = false;
    cli_flag flags[] = {
        CLI_PIPELINE_FLAGS,
        {"--json", CLI_BOOL, &json, NULL,
         "print one JSON object instead of the text report (default: text)"},
        {"--train", CLI_BOOL, &train, NULL,
         "describe the training step instead: FLOPs, kernels, workspace, optimizer state (default: the forward pass)"},
        {"--dump-ir", CLI_BOOL, &dump_ir, NULL,
         "print the IR graph in its text form (default: off)"},
        {"--checkpoint-activations", CLI_BOOL, &ckpt, NULL,
         "with --train: describe the checkpointed step and what it saves (default: off)"},
        {"--memory", CLI_BOOL, &memory, NULL,
         "also print what is live at the workspace's peak: the 24 largest buffers and the bytes by op (default: off)"},
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (!cli_pipeline_valid(diags)) return EXIT_USAGE;
    if (args.n_positional != 1) {
        kiln_diags_add(diags, NULL, 0, 0, "check", "expects one MODEL.json (or IR text, NAME.kir)");
        return EXIT_USAGE;
    }
    if (ckpt && !train) {
        kiln_diags_add(diags, NULL, 0, 0, "--checkpoint-activations", "applies to the training step: add --train");
        return EXIT_USAGE;
    }
    if (!cli_pipeline_runs(KILN_RUNS_COMPILE | (train ? KILN_RUNS_GRADS | KILN_RUNS_STEP : 0), "--train", "--train",
                           diags))
        return EXIT_USAGE;
    kiln_load_options opt = {args.defines, args.n_defines, NULL, 0, NULL};
    kiln_model model;
    if (!kiln_model_load(&model, args.positional[0], &opt, diags)) return EXIT_FAIL;
    train_step ts = {0};
    if (train && !train_step_build(&model, &ts, diags)) {
        kiln_model_free(&model);
        return EXIT_FAIL;
    }
    checkpoint_report ck = {0};
    if (ckpt) { /* the plain step's figures first (unless only a text is asked for) */
        memory_report plain;
        bool ok = cli_pipeline.dump_after || dump_ir || plan_memory(&model, &ts, &plain, diags);
        ck.workspace_without = ok && !cli_pipeline.dump_after && !dump_ir ? plain.workspace_bytes : 0;
        ck.flops_without = train_step_flops(&model.graph);
        if (!ok || !train_step_checkpoint(&model, &ts, &ck.res, diags)) {
            train_step_free(&ts);
            kiln_model_free(&model);
            return EXIT_FAIL;
        }
    }
    if (cli_pipeline.dump_after) { /* the stage's text alone, like --dump-ir */
        bool ok = dump_stage(&model, train ? &ts : NULL, diags);
        train_step_free(&ts);
        kiln_model_free(&model);
        return ok ? EXIT_OK : EXIT_FAIL;
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
    memory_report mem;
    if (!plan_memory(&model, train ? &ts : NULL, &mem, diags)) {
        train_step_free(&ts);
        kiln_model_free(&model);
        return EXIT_FAIL;
    }
    int64_t flops = train ? train_step_flops(&model.graph) : kiln_graph_flops(&model.graph);
    if (json) print_json(&model, params, flops, mem, ckpt ? &ck : NULL);
    else print_text(&model, params, flops, mem, ckpt ? &ck : NULL);
    bool ok = !memory || print_peak(&model, train ? &ts : NULL, diags);
    train_step_free(&ts);
    kiln_model_free(&model);
    return ok ? EXIT_OK : EXIT_FAIL;
}
