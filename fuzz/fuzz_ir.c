/* fuzz_ir.c — the IR text parser (ir/parse.c) and the verifier, and the same text read
 * as a model (frontend/ir_model.c, `kiln check NAME.kir`).
 *
 * Properties: parsing never crashes; a graph that parses and verifies prints to text
 * that parses again and prints identically (the text form round-trips, docs/ir.md); the
 * model reader accepts a text exactly when it parses and verifies with a valid name and
 * no update or state, and its inputs and params are the graph's, in node order.
 */
#include <string.h>

#include "fuzz.h"
#include "frontend.h"
#include "ir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memchr(data, 0, size)) return 0; /* the parser takes C text */
    char *text = fuzz_text(data, size);
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph g;
    kiln_graph_init(&g, "fuzz");
    if (kiln_graph_parse(&g, text, "fuzz.kir", &d) && kiln_graph_verify(&g, &d)) {
        char *once = kiln_graph_print(&g);
        kiln_graph h;
        kiln_graph_init(&h, "fuzz");
        bool reparsed = kiln_graph_parse(&h, once, "printed.kir", &d);
        if (!reparsed) {
            fprintf(stderr, "printed text does not parse:\n%s\n", once);
            kiln_diags_print(&d, stderr);
        }
        FUZZ_CHECK(reparsed);
        char *twice = kiln_graph_print(&h);
        if (strcmp(once, twice) != 0) fprintf(stderr, "first print:\n%s\nsecond print:\n%s\n", once, twice);
        FUZZ_CHECK(strcmp(once, twice) == 0);
        free(twice);
        kiln_graph_free(&h);
        free(once);
    }
    kiln_model m;
    if (kiln_model_load_ir(&m, text, "fuzz.kir", NULL, &d)) {
        uint32_t ni = 0, np = 0;
        for (uint32_t i = 0; i < m.graph.n_nodes; i++) {
            FUZZ_CHECK(m.graph.nodes[i].op != KILN_OP_STATE);
            if (m.graph.nodes[i].op == KILN_OP_INPUT) FUZZ_CHECK(ni < (uint32_t)m.n_inputs && m.inputs[ni++] == i);
            if (m.graph.nodes[i].op == KILN_OP_PARAM) FUZZ_CHECK(np < (uint32_t)m.n_params && m.params[np++] == i);
        }
        FUZZ_CHECK(ni == (uint32_t)m.n_inputs && np == (uint32_t)m.n_params && m.graph.n_updates == 0);
        FUZZ_CHECK(g.n_nodes == m.graph.n_nodes); /* it parsed as a graph too */
        kiln_model_free(&m);
    }
    kiln_graph_free(&g);
    kiln_diags_free(&d);
    free(text);
    return 0;
}
