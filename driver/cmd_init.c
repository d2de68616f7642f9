/* cmd_init.c — `kiln init`: fresh parameters per the SPEC's init scheme, written as a
 * safetensors file (atomically). The seed is --seed, else the model's init.seed. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "driver.h"

int cmd_init(int argc, char **argv, kiln_diags *diags)
{
    const char *out = NULL;
    int64_t seed = 0;
    bool seed_given = false;
    cli_flag flags[] = {
        {"-o", CLI_STR, &out, NULL,
         "the safetensors file to write (required)"},
        {"--seed", CLI_INT, &seed, &seed_given,
         "the seed (default: the model's init.seed, else 0)"},
    };
    cli_args args;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &args, diags)) return EXIT_USAGE;
    if (args.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "init", "expects one MODEL.json");
    if (!out) kiln_diags_add(diags, NULL, 0, 0, "init", "-o W.safetensors is required");
    const cli_file files[] = {{"MODEL.json", args.positional[0], false, NULL}, {"-o", out, true, NULL}};
    cli_files_distinct(files, 2, diags);
    if (diags->n) return EXIT_USAGE;

    kiln_load_options opt = {.defines = args.defines, .n_defines = args.n_defines};
    kiln_model model;
    if (!kiln_model_load(&model, args.positional[0], &opt, diags)) return EXIT_FAIL;

    int status = EXIT_FAIL;
    int n = model.n_params;
    float **blobs = calloc(n ? (size_t)n : 1, sizeof *blobs);
    kiln_tensor *tensors = calloc(n ? (size_t)n : 1, sizeof *tensors);
    KILN_ASSERT(blobs && tensors);
    for (int i = 0; i < n; i++) {
        const kiln_node *node = &model.graph.nodes[model.params[i]];
        size_t bytes = (size_t)kiln_type_numel(&node->type) * sizeof(float);
        blobs[i] = kiln_aligned_alloc(bytes ? bytes : 1);
        if (!blobs[i]) {
            kiln_diags_add(diags, NULL, 0, 0, node->attrs.name, "out of memory for %zu bytes", bytes);
            goto done;
        }
        tensors[i] = (kiln_tensor){(char *)node->attrs.name, KILN_F32, node->type.rank, {0}, blobs[i]};
        memcpy(tensors[i].shape, node->type.dims, sizeof tensors[i].shape);
    }
    init_params(&model, seed_given ? (uint64_t)seed : model.init_seed, blobs);
    kiln_rt_error err = {{0}};
    if (kiln_tensor_file_write(out, tensors, n, NULL, NULL, 0, &err) != 0) {
        bind_rt_error(diags, out, &err);
        goto done;
    }
    status = EXIT_OK;
done:
    for (int i = 0; i < n; i++) kiln_aligned_free(blobs[i]);
    free(blobs);
    free(tensors);
    kiln_model_free(&model);
    return status;
}
