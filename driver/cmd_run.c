/* cmd_run.c — `kiln run`: read inputs (their shapes bind the model's dims), load the
 * model and its weights, evaluate, and write every output.
 *
 * The order matters for safety: everything is read and checked, then computed, and only
 * then is --out written (atomically), so a failure never leaves a bad output file and
 * never replaces a good one. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "driver.h"

int cmd_run(int argc, char **argv, kiln_diags *diags)
{
    const char *weights = NULL, *inputs = NULL, *out = NULL;
    bool grads = false, interp = false;
    cli_flag flags[] = {
        {"--weights", CLI_STR, &weights, NULL}, {"--inputs", CLI_STR, &inputs, NULL},
        {"--out", CLI_STR, &out, NULL},         {"--grads", CLI_BOOL, &grads, NULL},
        {"--interp", CLI_BOOL, &interp, NULL},
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (args.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "run", "expects one MODEL.json");
    if (!weights) kiln_diags_add(diags, NULL, 0, 0, "run", "--weights W.safetensors is required");
    if (!inputs) kiln_diags_add(diags, NULL, 0, 0, "run", "--inputs X.safetensors is required");
    if (!out) kiln_diags_add(diags, NULL, 0, 0, "run", "--out Y.safetensors is required");
    if (diags->n) return EXIT_USAGE;
    if (grads) {
        kiln_diags_add(diags, NULL, 0, 0, "--grads", "gradients are not implemented in this version of kiln");
        return EXIT_FAIL;
    }
    if (!interp) {
        kiln_diags_add(diags, NULL, 0, 0, "run",
                       "compiled execution is not implemented in this version of kiln; use --interp");
        return EXIT_FAIL;
    }

    int status = EXIT_FAIL;
    kiln_model model;
    bool have_model = false;
    kiln_tensor_file in_file = {0}, w_file = {0};
    kiln_given_input *given = NULL;
    void **values = NULL;
    unsigned char *needed = NULL;
    kiln_tensor *outs = NULL;
    kiln_rt_error err = {{0}};

    if (kiln_tensor_file_read(inputs, &in_file, &err) != 0) {
        kiln_diags_add(diags, NULL, 0, 0, NULL, "%s", err.msg);
        goto done;
    }
    int n_given;
    given = bind_given_inputs(&in_file, &n_given);
    kiln_load_options opt = {args.defines, args.n_defines, given, n_given};
    if (!kiln_model_load(&model, args.positional[0], &opt, diags)) goto done;
    have_model = true;
    if (kiln_tensor_file_read(weights, &w_file, &err) != 0) {
        kiln_diags_add(diags, NULL, 0, 0, NULL, "%s", err.msg);
        goto done;
    }

    const kiln_graph *g = &model.graph;
    values = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *values);
    needed = calloc(g->n_nodes ? g->n_nodes : 1, 1);
    KILN_ASSERT(values && needed);
    bind_needed(g, false, needed);
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
    if (!kiln_interp_run(g, values, false, 0, diags)) goto done;

    outs = calloc(g->n_outputs ? g->n_outputs : 1, sizeof *outs);
    KILN_ASSERT(outs != NULL);
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        const kiln_node *n = &g->nodes[g->outputs[i].node];
        outs[i].name = (char *)g->outputs[i].name;
        outs[i].dtype = n->type.dtype;
        outs[i].rank = n->type.rank;
        memcpy(outs[i].shape, n->type.dims, sizeof outs[i].shape);
        outs[i].data = values[g->outputs[i].node];
    }
    if (kiln_tensor_file_write(out, outs, (int)g->n_outputs, NULL, NULL, 0, &err) != 0) {
        kiln_diags_add(diags, NULL, 0, 0, NULL, "%s", err.msg);
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
        kiln_model_free(&model);
    }
    free(outs);
    free(values);
    free(needed);
    free(given);
    kiln_tensor_file_free(&in_file);
    kiln_tensor_file_free(&w_file);
    return status;
}
