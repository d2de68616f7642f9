/* fuzz_ir.c — the IR text parser (ir/parse.c) and the verifier.
 *
 * Properties: parsing never crashes; a graph that parses and verifies prints to text
 * that parses again and prints identically (the text form round-trips, docs/ir.md).
 */
#include <string.h>

#include "fuzz.h"
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
    kiln_graph_free(&g);
    kiln_diags_free(&d);
    free(text);
    return 0;
}
