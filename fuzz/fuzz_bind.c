/* fuzz_bind.c — the `kiln run` input binder (driver/bind.c) with the reference
 * interpreter behind it, as `kiln run --interp` does: an inputs file read by the
 * safetensors reader, dims bound from its shapes, the model loaded with them, inputs
 * (and, from the same file, parameters) bound by name and type, then one interpreted run
 * with freshly initialised parameters.
 *
 * The model is fixed (tests/hostile/base/model.json: tokens → embedding → linear →
 * softmax); the fuzzer writes the inputs file. Properties: no crash, and a run that
 * succeeds gives probabilities that are finite and sum to about 1 per row — token ids
 * out of range must be refused by the binder or the interpreter, never read.
 */
#include <math.h>
#include <string.h>

#include "driver.h"
#include "fuzz.h"
#include "ir.h"

static const char MODEL[] =
    "{\"format\": \"kiln/1\", \"name\": \"fuzz_bind\", \"dims\": {\"B\": 2, \"T\": 4},\n"
    " \"inputs\": {\"tokens\": {\"shape\": [\"B\", \"T\"], \"dtype\": \"i32\"}},\n"
    " \"layers\": [\n"
    "  {\"name\": \"emb\", \"op\": \"embedding\", \"in\": \"tokens\", \"vocab\": 16, \"dim\": 8},\n"
    "  {\"name\": \"proj\", \"op\": \"linear\", \"out\": 5},\n"
    "  {\"name\": \"probs\", \"op\": \"softmax\"}],\n"
    " \"outputs\": [\"probs\"]}\n";

static void run(const kiln_model *m, const kiln_tensor_file *f, const char *path, kiln_diags *d)
{
    const kiln_graph *g = &m->graph;
    void **values = calloc(g->n_nodes + 1, sizeof *values), **wvalues = calloc(g->n_nodes + 1, sizeof *wvalues);
    unsigned char *needed = calloc(g->n_nodes + 1, 1);
    float **blobs = calloc((size_t)m->n_params + 1, sizeof *blobs);
    bind_needed(g, false, needed);
    bind_params(m, f, path, wvalues, d); /* the same file as weights: refused, or bound */
    for (int i = 0; i < m->n_params; i++) {
        blobs[i] = calloc((size_t)kiln_type_numel(&g->nodes[m->params[i]].type) + 1, sizeof(float));
        values[m->params[i]] = blobs[i];
    }
    init_params(m, 1, blobs);
    int64_t work = 0;
    for (int i = 0; i < m->n_inputs; i++) work += kiln_type_numel(&g->nodes[m->inputs[i]].type);
    if (bind_inputs(m, f, path, needed, values, d) && work <= (1 << 14)) {
        if (kiln_interp_run(g, values, false, 0, d)) {
            const kiln_node *out = &g->nodes[g->outputs[0].node];
            const float *p = values[g->outputs[0].node];
            int64_t rows = kiln_type_numel(&out->type) / 5;
            for (int64_t r = 0; r < rows; r++) {
                double sum = 0;
                for (int k = 0; k < 5; k++) {
                    FUZZ_CHECK(isfinite(p[5 * r + k]));
                    sum += p[5 * r + k];
                }
                FUZZ_CHECK(fabs(sum - 1) < 1e-4);
            }
        }
        for (int i = 0; i < m->n_inputs; i++) values[m->inputs[i]] = NULL; /* the file's */
        for (int i = 0; i < m->n_params; i++) values[m->params[i]] = NULL;  /* ours */
        kiln_interp_free_values(g, values);
    }
    for (int i = 0; i < m->n_params; i++) free(blobs[i]);
    free(blobs);
    free(needed);
    free(wvalues);
    free(values);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("inputs.safetensors", data, size);
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tensor_file f;
    kiln_rt_error err;
    if (kiln_tensor_file_read(path, &f, &err) != 0) {
        bind_rt_error(&d, path, &err);
        kiln_diags_free(&d);
        return 0;
    }
    int n_given;
    kiln_given_input *given = bind_given_inputs(&f, &n_given);
    kiln_load_options opt = {NULL, 0, given, n_given, path};
    kiln_model m;
    if (kiln_model_load_text(&m, MODEL, sizeof MODEL - 1, "model.json", &opt, &d)) {
        run(&m, &f, path, &d);
        kiln_model_free(&m);
    }
    free(given);
    kiln_tensor_file_free(&f);
    kiln_diags_free(&d);
    return 0;
}
