/* fuzz_ir.c — the IR text parser (ir/parse.c) and the verifier, the kernel schedule of
 * what verifies (passes/fuse.c), and the same text read as a model (frontend/ir_model.c,
 * `kiln check NAME.kir`).
 *
 * Properties: parsing never crashes; a graph that parses and verifies prints to text
 * that parses again and prints identically (the text form round-trips, docs/ir.md); its
 * schedule puts every node that needs a kernel in exactly one, runs every kernel after
 * the kernels computing what its members read, and gives each `row` kernel reductions of
 * one form with members of its shapes and each `reduce` kernel one reduction; the
 * model reader accepts a text exactly when it parses and verifies with a valid name and
 * no update or state, and its inputs and params are the graph's, in node order.
 */
#include <string.h>

#include "fuzz.h"
#include "frontend.h"
#include "ir.h"
#include "passes.h"

/* The kernel that computes what node x's readers read: x's own, or, through views that
 * no kernel computes (reshapes, folded transposes), the viewed value's; KILN_NONE for a
 * source. */
static uint32_t computed_in(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t x)
{
    while (s->kernel_of[x] == KILN_NONE && g->nodes[x].n_in > 0 &&
           (g->nodes[x].op == KILN_OP_RESHAPE || g->nodes[x].op == KILN_OP_TRANSPOSE))
        x = g->nodes[x].in[0];
    return s->kernel_of[x];
}

static void check_schedule(const kiln_graph *g)
{
    unsigned char *live = malloc(g->n_nodes + 1);
    memset(live, 1, g->n_nodes + 1);
    kiln_fuse_request req = {live, true, true, true};
    kiln_kernel_schedule s;
    kiln_diags d;
    kiln_diags_init(&d);
    FUZZ_CHECK(kiln_fuse(g, &req, &s, &d));
    uint32_t *seen = calloc(g->n_nodes + 1, sizeof *seen);
    for (uint32_t k = 0; k < s.n_kernels; k++) {
        const kiln_kernel *kn = &s.kernels[k];
        uint32_t reductions = 0;
        kiln_row_form form, other;
        for (uint32_t i = 0; i < kn->n; i++) {
            uint32_t m = s.members[kn->first + i];
            FUZZ_CHECK(s.kernel_of[m] == k && seen[m]++ == 0);
            const kiln_node *n = &g->nodes[m];
            for (uint32_t j = 0; j < n->n_in; j++) {
                uint32_t from = computed_in(g, &s, n->in[j]);
                FUZZ_CHECK(from == KILN_NONE || from <= k);
            }
            if (kiln_op_table[n->op].kind == KILN_KIND_REDUCTION) reductions++;
            if (kn->kind == KILN_KERNEL_ROW && kiln_op_table[n->op].kind == KILN_KIND_REDUCTION) {
                FUZZ_CHECK(kiln_row_form_of(g, n, reductions == 1 ? &form : &other));
                if (reductions > 1)
                    FUZZ_CHECK(kiln_type_equal(&form.x, &other.x) && kiln_type_equal(&form.row, &other.row));
            }
        }
        if (kn->kind == KILN_KERNEL_REDUCE) FUZZ_CHECK(reductions == 1);
        if (kn->kind == KILN_KERNEL_ROW) {
            FUZZ_CHECK(reductions >= 1);
            for (uint32_t i = 0; i < kn->n; i++) {
                const kiln_node *n = &g->nodes[s.members[kn->first + i]];
                if (kiln_op_table[n->op].kind == KILN_KIND_REDUCTION) continue;
                FUZZ_CHECK(kiln_type_equal(&n->type, &form.x) || kiln_type_equal(&n->type, &form.row));
            }
        }
    }
    kiln_schedule_free(&s);
    kiln_diags_free(&d);
    free(seen);
    free(live);
}

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
        check_schedule(&g);
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
