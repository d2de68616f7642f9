/* cmd_run.c — `kiln run`: read inputs (their shapes bind the model's dims), load the
 * model and its weights, evaluate, and write every output.
 *
 * The order matters for safety: everything is read and checked, then computed, and only
 * then is --out written (atomically), so a failure never leaves a bad output file and
 * never replaces a good one.
 *
 * Evaluation is compiled by default: the graph goes through codegen (memory plan, LLVM,
 * ORC JIT), the parameters are packed into one 64-byte aligned blob at the planned
 * offsets, and the entry point is called through libffi with one pointer per input and
 * output — the argument list depends on the model, so it is built at run time. --interp
 * runs the reference interpreter instead; both must agree.
 *
 * --grads appends the backward graph (autodiff) before either runs, so the gradients
 * are outputs like any other and go through the same interpreter or compiled code.
 *
 * --threads N (default 1, at most KILN_MAX_THREADS used) sizes the runtime's pool; the
 * outputs are the same bits for any N (each output element is computed by one thread). */
#include <ffi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "codegen.h"
#include "kiln/runtime.h"
#include "driver.h"
#include "memlimit.h"

/* The INPUT node a value comes from through views (reshape), or KILN_NONE. */
static uint32_t input_behind(const kiln_graph *g, uint32_t id)
{
    while (g->nodes[id].op == KILN_OP_RESHAPE) id = g->nodes[id].in[0];
    return g->nodes[id].op == KILN_OP_INPUT ? id : KILN_NONE;
}

/* Finds the bad value behind a non-zero status of a compiled entry point: compiled code
 * only says "an index is out of range", but when the indices (or targets) are a model
 * input, the driver can name the tensor, the element and the range. Returns false if no
 * input holds a bad value (the indices were computed inside the model). */
static bool explain_status(const kiln_model *m, void *const *values, const unsigned char *needed,
                           const char *inputs_file, kiln_diags *diags)
{
    const kiln_graph *g = &m->graph;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        if (!needed[id] || (n->op != KILN_OP_GATHER && n->op != KILN_OP_CROSS_ENTROPY)) continue;
        uint32_t in = input_behind(g, n->in[1]);
        if (in == KILN_NONE) continue;
        const kiln_type *table = &g->nodes[n->in[0]].type;
        bool gather = n->op == KILN_OP_GATHER;
        int64_t limit = gather ? table->dims[n->attrs.axis] : table->dims[table->rank - 1];
        const int32_t *ids = values[in];
        int64_t count = kiln_type_numel(&g->nodes[in].type);
        for (int64_t i = 0; i < count; i++) {
            if (!gather && ids[i] == n->attrs.ignore_index) continue;
            if (ids[i] >= 0 && ids[i] < limit) continue;
            kiln_diags_add(diags, inputs_file, 0, 0, g->nodes[in].attrs.name,
                           "%s %d (element %lld) is out of range [0, %lld)%s%s%s",
                           gather ? "index" : "target", (int)ids[i], (long long)i, (long long)limit,
                           n->label ? " for '" : "", n->label ? n->label : "", n->label ? "'" : "");
            return true;
        }
    }
    return false;
}

/* An index computed inside the model was out of range: compiled code cannot say where,
 * so the reference interpreter runs the same values and its diagnostic names the node,
 * its layer and the value (as `kiln run --interp` would). False if it finds nothing. */
static bool locate_by_interpreter(const kiln_model *m, void **values, const char *model_file, kiln_diags *diags)
{
    int before = diags->n;
    if (kiln_interp_run(&m->graph, values, false, 0, diags)) return false;
    kiln_diags_set_file(diags, model_file);
    return diags->n > before;
}

/* What a non-zero status of a compiled entry point means, when neither explain_status
 * nor the interpreter can point at the value. */
static const char *status_message(int rc)
{
    switch (rc) {
    case KILN_RC_INDEX_RANGE: return "an index computed by the model (a gather) is out of range";
    case KILN_RC_TARGET_RANGE: return "a cross_entropy target computed by the model is out of range of the classes";
    }
    return "the compiled model failed";
}

/* Compiles the model's forward graph and runs it on values[] (parameters and inputs
 * bound). On success out_data[o] holds output o in a kiln_aligned_alloc buffer. */
static bool run_compiled(const kiln_model *m, void **values, const unsigned char *needed, void **out_data,
                         const char *model_file, const char *inputs_file, kiln_diags *diags)
{
    const kiln_graph *g = &m->graph;
    kiln_compile_request req = {.g = g, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = m->name,
                                .pipeline = &cli_pipeline};
    kiln_compiled c;
    if (!kiln_compile_graph(&req, &c, diags)) return false;
    cli_print_dump(c.dump);

    int64_t io_bytes = 0;
    for (uint32_t o = 0; o < g->n_outputs; o++)
        io_bytes += kiln_type_numel(&g->nodes[g->outputs[o].node].type) * KILN_ELEM_BYTES;
    if (!limits_check_blobs(g, c.params_bytes, 0, c.workspace_bytes, io_bytes, "run", diags)) {
        kiln_compiled_free(&c);
        return false;
    }
    bool ok = false;
    void *params = kiln_aligned_alloc((size_t)c.params_bytes);
    void *workspace = kiln_aligned_alloc((size_t)c.workspace_bytes);
    void **args = calloc(c.n_args, sizeof *args), **arg_ptrs = calloc(c.n_args, sizeof *arg_ptrs);
    ffi_type **arg_types = calloc(c.n_args, sizeof *arg_types);
    KILN_ASSERT(args && arg_ptrs && arg_types);
    if (!params || !workspace) {
        kiln_diags_add(diags, NULL, 0, 0, "run", "out of memory for %lld bytes of parameters and %lld of workspace",
                       (long long)c.params_bytes, (long long)c.workspace_bytes);
        goto done;
    }
    for (int i = 0; i < m->n_params; i++) {
        size_t bytes = (size_t)kiln_type_numel(&g->nodes[m->params[i]].type) * KILN_ELEM_BYTES;
        if (bytes) memcpy((char *)params + c.param_offsets[i], values[m->params[i]], bytes);
    }
    uint32_t k = 0;
    args[k++] = params;
    args[k++] = workspace;
    for (int i = 0; i < m->n_inputs; i++) args[k++] = values[m->inputs[i]];
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        size_t bytes = (size_t)kiln_type_numel(&g->nodes[g->outputs[o].node].type) * KILN_ELEM_BYTES;
        out_data[o] = kiln_aligned_alloc(bytes);
        if (!out_data[o]) {
            kiln_diags_add(diags, NULL, 0, 0, g->outputs[o].name, "out of memory for %zu bytes of output", bytes);
            goto done;
        }
        args[k++] = out_data[o];
    }
    KILN_ASSERT(k == c.n_args);

    /* int NAME_forward(ptr, ptr, …): libffi takes the address of each argument */
    for (uint32_t i = 0; i < k; i++) {
        arg_types[i] = &ffi_type_pointer;
        arg_ptrs[i] = &args[i];
    }
    ffi_cif cif;
    KILN_ASSERT(ffi_prep_cif(&cif, FFI_DEFAULT_ABI, k, &ffi_type_sint, arg_types) == FFI_OK);
    ffi_arg rc = 0;
    ffi_call(&cif, FFI_FN(c.entry), &rc, arg_ptrs);
    if ((int)rc != KILN_RC_OK) {
        if (!explain_status(m, values, needed, inputs_file, diags) &&
            !locate_by_interpreter(m, values, model_file, diags))
            kiln_diags_add(diags, model_file, 0, 0, NULL, "%s", status_message((int)rc));
        goto done;
    }
    ok = true;

done:
    kiln_aligned_free(params);
    kiln_aligned_free(workspace);
    free(args);
    free(arg_ptrs);
    free(arg_types);
    kiln_compiled_free(&c);
    return ok;
}

/* --grads: appends the gradient of the model's loss with respect to every parameter (in
 * model order) and every f32 input (autodiff, passes/autodiff.c), and makes the loss and
 * the gradients outputs named "loss" and "grad.NAME". */
static bool add_gradients(kiln_model *m, const char *model_file, kiln_diags *diags)
{
    kiln_graph *g = &m->graph;
    if (g->loss == KILN_NONE) {
        kiln_diags_add(diags, model_file, 0, 0, NULL, "--grads needs a loss: the model has no \"losses\"");
        return false;
    }
    for (uint32_t o = 0; o < g->n_outputs; o++)
        if (strcmp(g->outputs[o].name, "loss") == 0) {
            kiln_diags_add(diags, model_file, 0, 0, "outputs",
                           "--grads writes the loss as \"loss\", which is already an output's name");
            return false;
        }
    uint32_t n = 0, *wrt = malloc(((size_t)m->n_params + (size_t)m->n_inputs + 1) * sizeof *wrt);
    KILN_ASSERT(wrt);
    for (int i = 0; i < m->n_params; i++) wrt[n++] = m->params[i];
    for (int i = 0; i < m->n_inputs; i++)
        if (g->nodes[m->inputs[i]].type.dtype == KILN_F32) wrt[n++] = m->inputs[i];
    /* the pipeline's autodiff stage alone: the parameters, then the f32 inputs */
    kiln_train_request tr = {.loss = g->loss, .params = m->params, .n_params = (uint32_t)m->n_params,
                             .extra_wrt = wrt + m->n_params, .n_extra_wrt = n - (uint32_t)m->n_params,
                             .options = &cli_pipeline};
    kiln_train_result res;
    bool ok = kiln_pipeline_train(g, &tr, &res, diags);
    cli_print_dump(res.dump); /* --dump-after autodiff */
    const uint32_t *grads = res.grads;
    if (ok) {
        kiln_graph_add_output(g, "loss", g->loss);
        for (uint32_t i = 0; i < n; i++) {
            char name[512];
            snprintf(name, sizeof name, "grad.%s", g->nodes[wrt[i]].attrs.name);
            kiln_graph_add_output(g, name, grads[i]);
        }
    } else {
        kiln_diags_set_file(diags, model_file);
    }
    free(wrt);
    kiln_train_result_free(&res);
    return ok;
}

int cmd_run(int argc, char **argv, kiln_diags *diags)
{
    const char *weights = NULL, *inputs = NULL, *out = NULL;
    bool grads = false, interp = false;
    int64_t threads = 1;
    cli_flag flags[] = {
        CLI_PIPELINE_FLAGS,
        LIMITS_FLAG,
        {"--weights", CLI_STR, &weights, NULL,
         "the parameters by name, a safetensors file (required)"},
        {"--inputs", CLI_STR, &inputs, NULL,
         "the inputs by name, a safetensors file; their shapes bind dims (required)"},
        {"--out", CLI_STR, &out, NULL,
         "the safetensors file to write, one tensor per model output (required)"},
        {"--grads", CLI_BOOL, &grads, NULL,
         "also write loss and grad.NAME for every parameter and f32 input (default: off)"},
        {"--interp", CLI_BOOL, &interp, NULL,
         "run the reference interpreter instead of compiled code (default: compiled)"},
        THREADS_FLAG(threads,
                     "threads for every kernel with enough work, at most 8 used; same bits for any N (default: 1)"),
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (!cli_pipeline_valid(diags) || !limits_valid(diags)) return EXIT_USAGE;
    if (args.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "run", "expects one MODEL.json");
    if (!weights) kiln_diags_add(diags, NULL, 0, 0, "run", "--weights W.safetensors is required");
    if (!inputs) kiln_diags_add(diags, NULL, 0, 0, "run", "--inputs X.safetensors is required");
    if (!out) kiln_diags_add(diags, NULL, 0, 0, "run", "--out Y.safetensors is required");
    cli_threads_check(threads, diags);
    cli_pipeline_runs((interp ? 0 : KILN_RUNS_COMPILE) | (grads ? KILN_RUNS_GRADS : 0), "--grads", NULL, diags);
    const cli_file files[] = {{"MODEL.json", args.positional[0], false, NULL},
                              {"--weights", weights, false, NULL},
                              {"--inputs", inputs, false, NULL},
                              {"--out", out, true, NULL}};
    cli_files_distinct(files, 4, diags);
    if (diags->n) return EXIT_USAGE;
    cli_threads_use(threads);

    int status = EXIT_FAIL;
    kiln_model model;
    bool have_model = false;
    kiln_tensor_file in_file = {0}, w_file = {0};
    kiln_given_input *given = NULL;
    void **values = NULL;
    unsigned char *needed = NULL;
    kiln_tensor *outs = NULL;
    void **out_data = NULL; /* compiled outputs (kiln_aligned_alloc) */
    kiln_rt_error err = {{0}};

    if (kiln_tensor_file_read(inputs, &in_file, &err) != 0) {
        bind_rt_error(diags, inputs, &err);
        goto done;
    }
    int n_given;
    given = bind_given_inputs(&in_file, &n_given);
    kiln_load_options opt = {args.defines, args.n_defines, given, n_given, inputs};
    if (!kiln_model_load(&model, args.positional[0], &opt, diags)) goto done;
    have_model = true;
    if (kiln_tensor_file_read(weights, &w_file, &err) != 0) {
        bind_rt_error(diags, weights, &err);
        goto done;
    }

    if (grads && !add_gradients(&model, args.positional[0], diags)) goto done;

    const kiln_graph *g = &model.graph;
    values = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *values);
    needed = calloc(g->n_nodes ? g->n_nodes : 1, 1);
    KILN_ASSERT(values && needed);
    bind_needed(g, grads, needed);
    for (int i = 0; grads && i < model.n_inputs; i++) needed[model.inputs[i]] = 1; /* targets too */
    bool ok = bind_params(&model, &w_file, weights, values, diags);
    ok = bind_inputs(&model, &in_file, inputs, needed, values, diags) && ok;
    if (!ok) goto done;
    /* parameters the outputs do not need still have values; inputs they do not need may
     * be absent, and the interpreter must not run the nodes that read them */
    for (uint32_t id = 0; id < g->n_nodes; id++)
        if (g->nodes[id].op == KILN_OP_INPUT && !values[id]) {
            /* give unused inputs a zero buffer so every node can be evaluated */
            values[id] = calloc((size_t)kiln_type_numel(&g->nodes[id].type) + 1, KILN_ELEM_BYTES);
            KILN_ASSERT(values[id] != NULL);
            needed[id] = 2; /* ours to free */
        }
    out_data = calloc(g->n_outputs ? g->n_outputs : 1, sizeof *out_data);
    KILN_ASSERT(out_data != NULL);
    if (!interp) {
        if (!run_compiled(&model, values, needed, out_data, args.positional[0], inputs, diags)) goto done;
    } else if (!kiln_interp_run(g, values, false, 0, diags)) {
        /* run-time errors name the node and its layer: say which model file it is in */
        kiln_diags_set_file(diags, args.positional[0]);
        goto done;
    }

    outs = calloc(g->n_outputs ? g->n_outputs : 1, sizeof *outs);
    KILN_ASSERT(outs != NULL);
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        const kiln_node *n = &g->nodes[g->outputs[i].node];
        outs[i].name = (char *)g->outputs[i].name;
        outs[i].dtype = n->type.dtype;
        outs[i].rank = n->type.rank;
        memcpy(outs[i].shape, n->type.dims, sizeof outs[i].shape);
        outs[i].data = interp ? values[g->outputs[i].node] : out_data[i];
    }
    if (kiln_tensor_file_write(out, outs, (int)g->n_outputs, NULL, NULL, 0, &err) != 0) {
        bind_rt_error(diags, out, &err);
        goto done;
    }
    status = EXIT_OK;

done:
    if (have_model) {
        if (values) {
            /* the interpreter frees its own slots; unused-input buffers are ours */
            for (uint32_t id = 0; id < model.graph.n_nodes; id++)
                if (needed[id] == 2) {
                    free(values[id]);
                    values[id] = NULL;
                }
            kiln_interp_free_values(&model.graph, values);
        }
        if (out_data)
            for (uint32_t i = 0; i < model.graph.n_outputs; i++) kiln_aligned_free(out_data[i]);
        kiln_model_free(&model);
    }
    free(out_data);
    free(outs);
    free(values);
    free(needed);
    free(given);
    kiln_tensor_file_free(&in_file);
    kiln_tensor_file_free(&w_file);
    return status;
}
