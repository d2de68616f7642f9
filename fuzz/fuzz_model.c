/* fuzz_model.c — the model-file frontend: JSON text → IR graph (every builder's shape
 * inference) → the verifier.
 *
 * Properties: loading never crashes, and a model the frontend accepts is one the
 * verifier accepts (the builders checked every shape, so the verifier finding a problem
 * means a builder let one through). The decode graph (generation's prefill form) is
 * built too when the forward one loads, since it expands the same layers differently.
 */
#include <string.h>

#include "frontend.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_model m;
    kiln_load_options opt = {0};
    const char *text = (const char *)data;
    if (kiln_model_load_text(&m, text, size, "fuzz.json", &opt, &d)) {
        kiln_diags v;
        kiln_diags_init(&v);
        bool verified = kiln_graph_verify(&m.graph, &v);
        if (!verified) kiln_diags_print(&v, stderr);
        FUZZ_CHECK(verified);
        kiln_diags_free(&v);
        kiln_model_free(&m);
    }
    kiln_diags_free(&d);
    return 0;
}
