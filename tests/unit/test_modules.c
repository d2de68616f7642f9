/* test_modules.c — the SPEC 1.2 modules as the frontend expands them.
 *
 * Design: each test loads a small model text (written with ' for " so it reads like the
 * JSON it is) through kiln_model_load_text and checks what the SPEC fixes: parameter
 * names and shapes (the weight-file contract), output shapes, the GPT-2 init scheme
 * recorded on the PARAM nodes, and user errors with their JSON path. The numeric tests
 * run the expanded graph through the reference interpreter with hand-set weights and
 * compare with values computed independently in float64 by numpy (the generator is at
 * the end of this file); the T5 bucket table is read off the graph's i32 constant.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend.h"

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct loaded {
    kiln_model m;
    kiln_diags d;
    bool ok;
} loaded;

/* Loads {'format','name','inputs': {INPUTS}, 'layers': [LAYERS], 'outputs': [OUTPUTS]}
 * plus EXTRA (",'init': {…}" or ""). */
static bool load_extra(loaded *L, const char *inputs, const char *layers, const char *outputs, const char *extra)
{
    size_t size = strlen(inputs) + strlen(layers) + strlen(outputs) + strlen(extra) + 200;
    char *text = malloc(size);
    snprintf(text, size, "{'format': 'kiln/1', 'name': 't', 'inputs': {%s}, 'layers': [%s], 'outputs': [%s]%s}",
             inputs, layers, outputs, extra);
    for (char *p = text; *p; p++)
        if (*p == '\'') *p = '"';
    kiln_diags_init(&L->d);
    L->ok = kiln_model_load_text(&L->m, text, strlen(text), "test.json", NULL, &L->d);
    free(text);
    return L->ok;
}

static bool load(loaded *L, const char *inputs, const char *layers, const char *outputs)
{
    return load_extra(L, inputs, layers, outputs, "");
}

/* Loads a model that must be valid; prints its diagnostics otherwise. */
static void must_load(loaded *L, const char *inputs, const char *layers, const char *outputs)
{
    if (!load(L, inputs, layers, outputs)) {
        kiln_diags_print(&L->d, stderr);
        fail_msg("the model did not load");
    }
}

static void unload(loaded *L)
{
    if (L->ok) kiln_model_free(&L->m);
    kiln_diags_free(&L->d);
}

/* The parameter `name` with the given shape; returns its node. */
static const kiln_node *expect_param(const loaded *L, const char *name, int rank, const int64_t *dims)
{
    uint32_t id = kiln_model_find_param(&L->m, name);
    if (id == KILN_NONE) fail_msg("no parameter '%s'", name);
    const kiln_node *p = kiln_graph_node(&L->m.graph, id);
    kiln_type want = {KILN_F32, rank, {0}};
    memcpy(want.dims, dims, (size_t)rank * sizeof *dims);
    if (!kiln_type_equal(&p->type, &want)) {
        char a[64], b[64];
        fail_msg("parameter '%s' is %s, expected %s", name, kiln_type_str(&p->type, a, sizeof a),
                 kiln_type_str(&want, b, sizeof b));
    }
    return p;
}
#define SHAPE(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})

static void expect_no_param(const loaded *L, const char *name)
{
    if (kiln_model_find_param(&L->m, name) != KILN_NONE) fail_msg("unexpected parameter '%s'", name);
}

static void expect_output(const loaded *L, const char *name, int rank, const int64_t *dims)
{
    for (uint32_t i = 0; i < L->m.graph.n_outputs; i++) {
        if (strcmp(L->m.graph.outputs[i].name, name) != 0) continue;
        const kiln_type *t = &kiln_graph_node(&L->m.graph, L->m.graph.outputs[i].node)->type;
        kiln_type want = {KILN_F32, rank, {0}};
        memcpy(want.dims, dims, (size_t)rank * sizeof *dims);
        if (!kiln_type_equal(t, &want)) {
            char a[64], b[64];
            fail_msg("output '%s' is %s, expected %s", name, kiln_type_str(t, a, sizeof a),
                     kiln_type_str(&want, b, sizeof b));
        }
        return;
    }
    fail_msg("no output '%s'", name);
}

/* The model must fail to load with a diagnostic at `where` whose message contains `part`. */
static void expect_error(const char *inputs, const char *layers, const char *outputs, const char *where,
                         const char *part)
{
    loaded L;
    if (load(&L, inputs, layers, outputs)) {
        unload(&L);
        fail_msg("the model loaded, expected an error at %s", where);
    }
    for (int i = 0; i < L.d.n; i++) {
        const kiln_diag *g = &L.d.items[i];
        if (g->where && strcmp(g->where, where) == 0 && strstr(g->message, part)) {
            unload(&L);
            return;
        }
    }
    kiln_diags_print(&L.d, stderr);
    unload(&L);
    fail_msg("no error at %s containing \"%s\"", where, part);
}

static void expect_close(const float *got, const float *want, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (1 + fabs(want[i]))))
            fail_msg("element %lld: got %.9g, expected %.9g", (long long)i, got[i], want[i]);
}

/* ---- running through the interpreter ----------------------------------------------- */

typedef struct binding {
    const char *name;   /* an input or parameter */
    const void *data;   /* f32 or i32 per its type */
} binding;

typedef struct run {
    void **values;
    bool *owned;        /* slots this test allocated (zero-filled unbound params/inputs) */
} run;

/* Runs L's graph with the given bindings (unbound inputs and parameters are zeros) and
 * returns the f32 data of output `name`. */
static const float *run_graph(loaded *L, run *r, const binding *b, int nb, const char *name)
{
    kiln_graph *g = &L->m.graph;
    r->values = calloc(g->n_nodes, sizeof *r->values);
    r->owned = calloc(g->n_nodes, sizeof *r->owned);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kiln_node *nd = kiln_graph_node(g, i);
        if (nd->op != KILN_OP_INPUT && nd->op != KILN_OP_PARAM) continue;
        for (int k = 0; k < nb; k++)
            if (strcmp(b[k].name, nd->attrs.name) == 0) r->values[i] = (void *)b[k].data;
        if (!r->values[i]) {
            r->values[i] = calloc((size_t)kiln_type_numel(&nd->type) + 1, 4);
            r->owned[i] = true;
        }
    }
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_interp_run(g, r->values, false, 0, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    kiln_diags_free(&d);
    assert_true(ok);
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (strcmp(g->outputs[i].name, name) == 0) return r->values[g->outputs[i].node];
    fail_msg("no output '%s'", name);
    return NULL;
}

static void run_free(loaded *L, run *r)
{
    kiln_interp_free_values(&L->m.graph, r->values);
    for (uint32_t i = 0; i < L->m.graph.n_nodes; i++)
        if (r->owned[i]) free(r->values[i]);
    free(r->values);
    free(r->owned);
}

static const float identity4[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
static const float identity3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
static const float identity2[4] = {1, 0, 0, 1};

/* ---- expected values (numpy, float64; generator at the end of the file) ---------- */

static const float rope_x[12] = {
    0.5f, -1.0f, 0.25f, 2.0f, 1.5f, 0.75f,
    -0.5f, 1.0f, -1.25f, 0.5f, 1.0f, -0.75f,
};
static const float rope_expected[12] = {
    0.639452882f, -0.683813584f, 0.136515889f, 1.78939152f, 1.15423614f, 0.272705465f,
    -0.256432308f, 1.21972221f, -1.02989821f, 0.443603546f, 0.88936436f, -0.534576171f,
};
static const float alibi_x[9] = {
    1.0f, -2.0f, 0.5f, 3.0f, 0.25f, -1.0f,
    -0.5f, 2.0f, 4.0f,
};
static const float alibi_expected[9] = {
    1.23755594f, 0.0502487823f, 1.1621149f, 1.26529571f, 0.0847169343f, 1.16384365f,
    1.08071337f, 0.116383712f, 1.17122946f,
};
static const float rel_x[6] = {
    0.5f, -1.0f, 2.0f, 0.25f, -1.5f, 1.0f,
};
static const float rel_weight[64] = {
    0.1f, -0.1f, 0.2f, 0.1f, 0.3f, 0.3f,
    0.4f, 0.5f, 0.5f, 0.7f, 0.6f, 0.9f,
    0.7f, 1.1f, 0.8f, 1.3f, 0.9f, 1.5f,
    1.0f, 1.7f, 1.1f, 1.9f, 1.2f, 2.1f,
    1.3f, 2.3f, 1.4f, 2.5f, 1.5f, 2.7f,
    1.6f, 2.9f, 1.7f, 3.1f, 1.8f, 3.3f,
    1.9f, 3.5f, 2.0f, 3.7f, 2.1f, 3.9f,
    2.2f, 4.1f, 2.3f, 4.3f, 2.4f, 4.5f,
    2.5f, 4.7f, 2.6f, 4.9f, 2.7f, 5.1f,
    2.8f, 5.3f, 2.9f, 5.5f, 3.0f, 5.7f,
    3.1f, 5.9f, 3.2f, 6.1f,
};
static const float rel_expected[6] = {
    0.189516158f, 0.637770435f, -0.746569112f, 0.900799887f, 0.39711828f, -0.0502188488f,
};
static const int32_t t5_bidirectional[401] = {
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15,
    15, 15, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 13,
    13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 12,
    12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12,
    12, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 10, 10,
    10, 10, 10, 10, 10, 9,
    9, 9, 9, 8, 8, 8,
    8, 7, 6, 5, 4, 3,
    2, 1, 0, 17, 18, 19,
    20, 21, 22, 23, 24, 24,
    24, 24, 25, 25, 25, 25,
    26, 26, 26, 26, 26, 26,
    26, 27, 27, 27, 27, 27,
    27, 27, 27, 27, 28, 28,
    28, 28, 28, 28, 28, 28,
    28, 28, 28, 28, 28, 28,
    29, 29, 29, 29, 29, 29,
    29, 29, 29, 29, 29, 29,
    29, 29, 29, 29, 29, 29,
    30, 30, 30, 30, 30, 30,
    30, 30, 30, 30, 30, 30,
    30, 30, 30, 30, 30, 30,
    30, 30, 30, 30, 30, 30,
    30, 30, 30, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31,
};
static const int32_t t5_causal[401] = {
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 30, 30,
    30, 30, 30, 30, 30, 30,
    30, 30, 30, 30, 30, 30,
    29, 29, 29, 29, 29, 29,
    29, 29, 29, 29, 29, 29,
    28, 28, 28, 28, 28, 28,
    28, 28, 28, 28, 27, 27,
    27, 27, 27, 27, 27, 27,
    27, 27, 26, 26, 26, 26,
    26, 26, 26, 26, 25, 25,
    25, 25, 25, 25, 25, 24,
    24, 24, 24, 24, 24, 23,
    23, 23, 23, 23, 23, 22,
    22, 22, 22, 22, 21, 21,
    21, 21, 20, 20, 20, 20,
    19, 19, 19, 18, 18, 18,
    17, 17, 16, 16, 16, 15,
    14, 13, 12, 11, 10, 9,
    8, 7, 6, 5, 4, 3,
    2, 1, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0,
};
static const float sinusoid_expected[35] = {
    0.0f, 1.0f, 0.0f, 1.0f, 0.0f, 1.0f,
    0.0f, 0.841470985f, 0.540302306f, 0.0719064568f, 0.99741138f, 0.00517945152f,
    0.999986587f, 0.000372759363f, 0.909297427f, -0.416146837f, 0.143440637f, 0.989658923f,
    0.0103587641f, 0.999946347f, 0.000745518675f, 0.141120008f, -0.989992497f, 0.21423219f,
    0.976782764f, 0.0155377988f, 0.999879281f, 0.00111827788f, -0.756802495f, -0.653643621f,
    0.283914612f, 0.958849567f, 0.0207164166f, 0.999785392f, 0.00149103694f,
};

/* ---- dense ------------------------------------------------------------------------- */

static void test_linear(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [2, 3, 5], 'dtype': 'f32'}", "{'name': 'lin', 'op': 'linear', 'in': 'x', 'out': 4}",
              "'lin'");
    const kiln_node *w = expect_param(&L, "lin.weight", SHAPE(4, 5));
    const kiln_node *b = expect_param(&L, "lin.bias", SHAPE(4));
    assert_int_equal(w->attrs.init, KILN_INIT_NORMAL);
    assert_true(fabs(w->attrs.init_arg - 0.02) < 1e-12);
    assert_int_equal(b->attrs.init, KILN_INIT_ZEROS);
    assert_int_equal(L.m.n_params, 2);
    expect_output(&L, "lin", SHAPE(2, 3, 4));
    unload(&L);

    must_load(&L, "'x': {'shape': [5], 'dtype': 'f32'}",
              "{'name': 'lin', 'op': 'linear', 'in': 'x', 'out': 4, 'bias': false}", "'lin'");
    expect_param(&L, "lin.weight", SHAPE(4, 5));
    expect_no_param(&L, "lin.bias");
    expect_output(&L, "lin", SHAPE(4));
    unload(&L);
}

static const char *tok_input = "'tok': {'shape': [2, 3], 'dtype': 'i32'}";

static void test_linear_tie(void **state)
{
    loaded L;
    must_load(&L, tok_input,
              "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9, 'dim': 6},"
              "{'name': 'head', 'op': 'linear', 'out': 9, 'tie': 'emb.weight'}",
              "'head'");
    expect_param(&L, "emb.weight", SHAPE(9, 6));
    expect_param(&L, "head.bias", SHAPE(9));
    expect_no_param(&L, "head.weight");
    assert_int_equal(L.m.n_params, 2);
    expect_output(&L, "head", SHAPE(2, 3, 9));
    unload(&L);

    /* `out` may be left to the tied parameter */
    must_load(&L, tok_input,
              "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9, 'dim': 6},"
              "{'name': 'head', 'op': 'linear', 'bias': false, 'tie': 'emb.weight'}",
              "'head'");
    assert_int_equal(L.m.n_params, 1);
    expect_output(&L, "head", SHAPE(2, 3, 9));
    unload(&L);
}

static void test_linear_tie_errors(void **state)
{
    expect_error(tok_input,
                 "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9, 'dim': 6},"
                 "{'name': 'head', 'op': 'linear', 'out': 9, 'tie': 'emb.weights'}",
                 "'head'", "layers[1].tie", "no parameter named 'emb.weights'");
    expect_error(tok_input,
                 "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9, 'dim': 6},"
                 "{'name': 'head', 'op': 'linear', 'out': 5, 'tie': 'emb.weight'}",
                 "'head'", "layers[1].tie",
                 "'emb.weight' is f32[9,6] but this layer needs its weight as (out, in) = [5,6]");
    /* a tie to a later layer's parameter is a missing one at this point */
    expect_error(tok_input,
                 "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9, 'dim': 6},"
                 "{'name': 'head', 'op': 'linear', 'out': 6, 'tie': 'late.weight'},"
                 "{'name': 'late', 'op': 'linear', 'out': 6}",
                 "'head'", "layers[1].tie", "no parameter named 'late.weight'");
    expect_error("'x': {'shape': [2, 5], 'dtype': 'f32'}", "{'name': 'lin', 'op': 'linear', 'in': 'x', 'out': 0}",
                 "'lin'", "layers[0].out", "positive");
}

static void test_embedding(void **state)
{
    loaded L;
    must_load(&L, tok_input, "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9, 'dim': 6}", "'emb'");
    const kiln_node *w = expect_param(&L, "emb.weight", SHAPE(9, 6));
    assert_int_equal(w->attrs.init, KILN_INIT_NORMAL);
    expect_output(&L, "emb", SHAPE(2, 3, 6));
    unload(&L);

    expect_error("'x': {'shape': [2, 3], 'dtype': 'f32'}",
                 "{'name': 'emb', 'op': 'embedding', 'in': 'x', 'vocab': 9, 'dim': 6}", "'emb'", "layers[0].in",
                 "token ids must be i32, got f32[2,3]");
    expect_error(tok_input, "{'name': 'emb', 'op': 'embedding', 'in': 'tok', 'vocab': 9}", "'emb'", "layers[0].dim",
                 "missing");
}

static bool graph_has_op(const loaded *L, kiln_op op)
{
    for (uint32_t i = 0; i < L->m.graph.n_nodes; i++)
        if (L->m.graph.nodes[i].op == op) return true;
    return false;
}

static void test_feed_forward(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [2, 3, 6], 'dtype': 'f32'}",
              "{'name': 'ff', 'op': 'feed_forward', 'in': 'x', 'hidden': 10}", "'ff'");
    expect_param(&L, "ff.fc1.weight", SHAPE(10, 6));
    expect_param(&L, "ff.fc1.bias", SHAPE(10));
    const kiln_node *w2 = expect_param(&L, "ff.fc2.weight", SHAPE(6, 10));
    expect_param(&L, "ff.fc2.bias", SHAPE(6));
    assert_true(fabs(w2->attrs.init_arg - 0.02) < 1e-12); /* not repeated: not scaled */
    assert_true(graph_has_op(&L, KILN_OP_RELU));          /* the SPEC 1.4 default */
    assert_false(graph_has_op(&L, KILN_OP_DROPOUT));
    expect_output(&L, "ff", SHAPE(2, 3, 6));
    unload(&L);

    must_load(&L, "'x': {'shape': [2, 3, 6], 'dtype': 'f32'}",
              "{'name': 'ff', 'op': 'feed_forward', 'in': 'x', 'hidden': 10, 'activation': 'silu', 'dropout': 0.1}",
              "'ff'");
    assert_true(graph_has_op(&L, KILN_OP_SILU));
    assert_false(graph_has_op(&L, KILN_OP_RELU));
    assert_true(graph_has_op(&L, KILN_OP_DROPOUT));
    unload(&L);

    expect_error("'x': {'shape': [2, 3, 6], 'dtype': 'f32'}",
                 "{'name': 'ff', 'op': 'feed_forward', 'in': 'x', 'hidden': 10, 'activation': 'swish'}", "'ff'",
                 "layers[0].activation", "");
    expect_error("'x': {'shape': [2, 3, 6], 'dtype': 'f32'}",
                 "{'name': 'ff', 'op': 'feed_forward', 'in': 'x', 'hidden': 10, 'dropout': 1}", "'ff'",
                 "layers[0].dropout", "[0, 1)");
}

/* ---- norms and positions ------------------------------------------------------------ */

static void test_norms(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [2, 3, 6], 'dtype': 'f32'}",
              "{'name': 'ln', 'op': 'layernorm', 'in': 'x'}, {'name': 'rn', 'op': 'rmsnorm', 'eps': 0.001}",
              "'ln', 'rn'");
    assert_int_equal(expect_param(&L, "ln.weight", SHAPE(6))->attrs.init, KILN_INIT_ONES);
    assert_int_equal(expect_param(&L, "ln.bias", SHAPE(6))->attrs.init, KILN_INIT_ZEROS);
    assert_int_equal(expect_param(&L, "rn.weight", SHAPE(6))->attrs.init, KILN_INIT_ONES);
    expect_no_param(&L, "rn.bias");
    assert_int_equal(L.m.n_params, 3);
    expect_output(&L, "ln", SHAPE(2, 3, 6));
    expect_output(&L, "rn", SHAPE(2, 3, 6));
    unload(&L);
}

static void test_pos_encoding(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
              "{'name': 'wpe', 'op': 'pos_encoding', 'in': 'x', 'kind': 'learned', 'max_len': 16}", "'wpe'");
    assert_int_equal(expect_param(&L, "wpe.weight", SHAPE(16, 8))->attrs.init, KILN_INIT_NORMAL);
    expect_output(&L, "wpe", SHAPE(2, 5, 8));
    unload(&L);

    must_load(&L, "'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
              "{'name': 'pe', 'op': 'pos_encoding', 'in': 'x', 'kind': 'sinusoidal'}", "'pe'");
    assert_int_equal(L.m.n_params, 0);
    unload(&L);

    expect_error("'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
                 "{'name': 'wpe', 'op': 'pos_encoding', 'in': 'x', 'kind': 'learned', 'max_len': 4}", "'wpe'",
                 "layers[0].max_len", "the sequence length T = 5 is longer than max_len = 4");
    expect_error("'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
                 "{'name': 'wpe', 'op': 'pos_encoding', 'in': 'x', 'kind': 'sinusoidal', 'max_len': 4}", "'wpe'",
                 "layers[0].max_len", "T = 5");
    expect_error("'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
                 "{'name': 'wpe', 'op': 'pos_encoding', 'in': 'x', 'max_len': 16}", "'wpe'", "layers[0].kind",
                 "missing");
    expect_error("'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
                 "{'name': 'wpe', 'op': 'pos_encoding', 'in': 'x', 'kind': 'learned'}", "'wpe'", "layers[0].max_len",
                 "missing");
}

/* ---- attention ---------------------------------------------------------------------- */

static const char *x258 = "'x': {'shape': [2, 5, 8], 'dtype': 'f32'}, 'mask': {'shape': [2, 5], 'dtype': 'i32'}";

static void expect_projections(const loaded *L, const char *prefix, int64_t dim, int64_t mdim, bool bias)
{
    static const char *const proj[4] = {"q", "k", "v", "o"};
    char name[128];
    for (int i = 0; i < 4; i++) {
        int64_t in = (i == 1 || i == 2) ? mdim : dim;
        snprintf(name, sizeof name, "%s.%s.weight", prefix, proj[i]);
        expect_param(L, name, SHAPE(dim, in));
        snprintf(name, sizeof name, "%s.%s.bias", prefix, proj[i]);
        if (bias) expect_param(L, name, SHAPE(dim));
        else expect_no_param(L, name);
    }
}

static void test_attention_positions(void **state)
{
    static const char *const kinds[] = {"none", "relative", "rope", "alibi"};
    for (int k = 0; k < 4; k++) {
        char layer[256];
        snprintf(layer, sizeof layer,
                 "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 2, 'causal': %s, 'position': '%s',"
                 " 'mask': 'mask'}",
                 k % 2 ? "true" : "false", kinds[k]);
        loaded L;
        must_load(&L, x258, layer, "'att'");
        expect_projections(&L, "att", 8, 8, true);
        if (k == 1) expect_param(&L, "att.rel_bias.weight", SHAPE(32, 2));
        else expect_no_param(&L, "att.rel_bias.weight");
        assert_int_equal(L.m.n_params, 8 + (k == 1));
        expect_output(&L, "att", SHAPE(2, 5, 8));
        unload(&L);
    }
    loaded L;
    must_load(&L, x258, "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 4, 'bias': false}", "'att'");
    expect_projections(&L, "att", 8, 8, false);
    assert_int_equal(L.m.n_params, 4);
    unload(&L);
}

static void test_attention_cross(void **state)
{
    loaded L;
    must_load(&L,
              "'x': {'shape': [2, 3, 8], 'dtype': 'f32'}, 'm': {'shape': [2, 5, 6], 'dtype': 'f32'},"
              "'mask': {'shape': [2, 5], 'dtype': 'f32'}",
              "{'name': 'att', 'op': 'attention', 'in': ['x', 'm'], 'heads': 2, 'mask': 'mask'}", "'att'");
    expect_projections(&L, "att", 8, 6, true);
    expect_output(&L, "att", SHAPE(2, 3, 8));
    unload(&L);

    /* the key mask is (B, S), S from the memory */
    expect_error("'x': {'shape': [2, 3, 8], 'dtype': 'f32'}, 'm': {'shape': [2, 5, 6], 'dtype': 'f32'},"
                 "'mask': {'shape': [2, 3], 'dtype': 'i32'}",
                 "{'name': 'att', 'op': 'attention', 'in': ['x', 'm'], 'heads': 2, 'mask': 'mask'}", "'att'",
                 "layers[0].mask", "the mask is i32[2,3] but must be (B, S) = [2,5]");
}

static void test_attention_errors(void **state)
{
    expect_error("'x': {'shape': [1, 2, 384], 'dtype': 'f32'}",
                 "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 7}", "'att'", "layers[0].heads",
                 "384 is not divisible by 7");
    expect_error("'x': {'shape': [1, 2, 6], 'dtype': 'f32'}",
                 "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 2, 'position': 'rope'}", "'att'",
                 "layers[0].position", "rope needs an even head dim, but dim 6 / 2 heads = 3");
    expect_error("'x': {'shape': [1, 2, 6], 'dtype': 'f32'}",
                 "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 2, 'position': 'rotary'}", "'att'",
                 "layers[0].position", "");
    expect_error("'x': {'shape': [1, 2, 6], 'dtype': 'f32'}",
                 "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 0}", "'att'", "layers[0].heads",
                 "positive");
    expect_error("'x': {'shape': [2, 6], 'dtype': 'f32'}", "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 2}",
                 "'att'", "layers[0].in", "must be f32 of shape (B, T, D), got f32[2,6]");
}

/* ---- layers ------------------------------------------------------------------------- */

static void expect_encoder_params(const loaded *L, const char *p, int64_t dim, int64_t hidden)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s.attn", p);
    expect_projections(L, buf, dim, dim, true);
    static const char *const lns[] = {"ln1", "ln2"};
    for (int i = 0; i < 2; i++) {
        snprintf(buf, sizeof buf, "%s.%s.weight", p, lns[i]);
        expect_param(L, buf, SHAPE(dim));
        snprintf(buf, sizeof buf, "%s.%s.bias", p, lns[i]);
        expect_param(L, buf, SHAPE(dim));
    }
    snprintf(buf, sizeof buf, "%s.ff.fc1.weight", p);
    expect_param(L, buf, SHAPE(hidden, dim));
    snprintf(buf, sizeof buf, "%s.ff.fc2.weight", p);
    expect_param(L, buf, SHAPE(dim, hidden));
}

static void test_encoder_layer(void **state)
{
    static const char *const norms[] = {"post", "pre"};
    for (int k = 0; k < 2; k++) {
        char layer[256];
        snprintf(layer, sizeof layer,
                 "{'name': 'enc', 'op': 'encoder_layer', 'in': 'x', 'heads': 2, 'hidden': 16, 'norm': '%s',"
                 " 'mask': 'mask', 'position': 'relative'}",
                 norms[k]);
        loaded L;
        must_load(&L, x258, layer, "'enc'");
        expect_encoder_params(&L, "enc", 8, 16);
        expect_param(&L, "enc.attn.rel_bias.weight", SHAPE(32, 2));
        assert_int_equal(L.m.n_params, 8 + 1 + 2 + 4 + 2);
        expect_output(&L, "enc", SHAPE(2, 5, 8));
        /* not repeated: the residual projections keep the plain std */
        assert_true(fabs(expect_param(&L, "enc.attn.o.weight", SHAPE(8, 8))->attrs.init_arg - 0.02) < 1e-12);
        /* post-norm ends with a layernorm; pre-norm with the residual add */
        const kiln_node *out = kiln_graph_node(&L.m.graph, L.m.graph.outputs[0].node);
        assert_int_equal(out->op, k == 0 ? KILN_OP_LAYERNORM : KILN_OP_ADD);
        unload(&L);
    }
    expect_error(x258, "{'name': 'enc', 'op': 'encoder_layer', 'in': 'x', 'heads': 3, 'hidden': 16}", "'enc'",
                 "layers[0].heads", "8 is not divisible by 3");
    expect_error(x258, "{'name': 'enc', 'op': 'encoder_layer', 'in': 'x', 'heads': 2, 'hidden': 16, 'casual': true}",
                 "'enc'", "layers[0].casual", "");
}

static void test_repeat_and_residual_scale(void **state)
{
    loaded L;
    if (!load_extra(&L, "'x': {'shape': [2, 5, 8], 'dtype': 'f32'}",
                    "{'name': 'blocks', 'op': 'encoder_layer', 'in': 'x', 'repeat': 3, 'heads': 2, 'hidden': 16,"
                    " 'norm': 'pre', 'causal': true}",
                    "'blocks'", ", 'init': {'std': 0.05}")) {
        kiln_diags_print(&L.d, stderr);
        fail_msg("the model did not load");
    }
    for (int i = 0; i < 3; i++) {
        char p[32];
        snprintf(p, sizeof p, "blocks.%d", i);
        expect_encoder_params(&L, p, 8, 16);
    }
    expect_no_param(&L, "blocks.3.attn.q.weight");
    expect_no_param(&L, "blocks.attn.q.weight");
    assert_int_equal(L.m.n_params, 3 * 16);
    double scaled = 0.05 / sqrt(2.0 * 3);
    assert_true(fabs(expect_param(&L, "blocks.1.attn.o.weight", SHAPE(8, 8))->attrs.init_arg - scaled) < 1e-12);
    assert_true(fabs(expect_param(&L, "blocks.2.ff.fc2.weight", SHAPE(8, 16))->attrs.init_arg - scaled) < 1e-12);
    assert_true(fabs(expect_param(&L, "blocks.1.attn.q.weight", SHAPE(8, 8))->attrs.init_arg - 0.05) < 1e-12);
    assert_true(fabs(expect_param(&L, "blocks.1.ff.fc1.weight", SHAPE(16, 8))->attrs.init_arg - 0.05) < 1e-12);
    expect_output(&L, "blocks", SHAPE(2, 5, 8));
    unload(&L);

    /* a repeated stand-alone module is named the same way */
    must_load(&L, "'x': {'shape': [2, 8], 'dtype': 'f32'}",
              "{'name': 'mlp', 'op': 'linear', 'in': 'x', 'repeat': 2, 'out': 8}", "'mlp'");
    expect_param(&L, "mlp.0.weight", SHAPE(8, 8));
    expect_param(&L, "mlp.1.bias", SHAPE(8));
    assert_int_equal(L.m.n_params, 4);
    unload(&L);
}

static const char *dec_inputs =
    "'x': {'shape': [2, 4, 8], 'dtype': 'f32'}, 'm': {'shape': [2, 5, 6], 'dtype': 'f32'},"
    "'mask': {'shape': [2, 4], 'dtype': 'i32'}, 'mmask': {'shape': [2, 5], 'dtype': 'i32'}";

static void test_decoder_layer(void **state)
{
    static const char *const norms[] = {"post", "pre"};
    for (int k = 0; k < 2; k++) {
        char layer[300];
        snprintf(layer, sizeof layer,
                 "{'name': 'dec', 'op': 'decoder_layer', 'in': 'x', 'heads': 2, 'hidden': 16, 'norm': '%s',"
                 " 'memory': 'm', 'mask': 'mask', 'memory_mask': 'mmask', 'position': 'rope', 'causal': true}",
                 norms[k]);
        loaded L;
        must_load(&L, dec_inputs, layer, "'dec'");
        expect_projections(&L, "dec.self_attn", 8, 8, true);
        expect_projections(&L, "dec.cross_attn", 8, 6, true);
        static const char *const lns[] = {"dec.ln1.weight", "dec.ln2.weight", "dec.ln3.weight",
                                          "dec.ln1.bias", "dec.ln2.bias", "dec.ln3.bias"};
        for (int i = 0; i < 6; i++) expect_param(&L, lns[i], SHAPE(8));
        expect_param(&L, "dec.ff.fc1.weight", SHAPE(16, 8));
        expect_param(&L, "dec.ff.fc2.weight", SHAPE(8, 16));
        assert_int_equal(L.m.n_params, 8 + 8 + 6 + 4);
        expect_output(&L, "dec", SHAPE(2, 4, 8));
        /* self-attention causal, cross-attention not */
        int n_attn = 0;
        for (uint32_t i = 0; i < L.m.graph.n_nodes; i++) {
            const kiln_node *nd = &L.m.graph.nodes[i];
            if (nd->op != KILN_OP_ATTENTION) continue;
            assert_int_equal(nd->attrs.causal, n_attn == 0);
            assert_true(nd->attrs.has_mask);
            assert_false(nd->attrs.has_bias);
            n_attn++;
        }
        assert_int_equal(n_attn, 2);
        unload(&L);
    }
    expect_error(dec_inputs, "{'name': 'dec', 'op': 'decoder_layer', 'in': 'x', 'heads': 2, 'hidden': 16}", "'dec'",
                 "layers[0].memory", "missing");
    expect_error(dec_inputs,
                 "{'name': 'dec', 'op': 'decoder_layer', 'in': 'x', 'heads': 2, 'hidden': 16, 'memory': 'm',"
                 " 'memory_mask': 'mask'}",
                 "'dec'", "layers[0].memory_mask", "must be (B, S) = [2,5]");
}

/* ---- pool --------------------------------------------------------------------------- */

static void test_pool_shapes(void **state)
{
    static const char *const kinds[] = {"mean", "first", "last"};
    for (int k = 0; k < 3; k++)
        for (int masked = 0; masked < 2; masked++) {
            char layer[200];
            snprintf(layer, sizeof layer, "{'name': 'p', 'op': 'pool', 'in': 'x', 'kind': '%s'%s}", kinds[k],
                     masked ? ", 'mask': 'mask'" : "");
            loaded L;
            must_load(&L, x258, layer, "'p'");
            assert_int_equal(L.m.n_params, 0);
            expect_output(&L, "p", SHAPE(2, 8));
            unload(&L);
        }
    expect_error(x258, "{'name': 'p', 'op': 'pool', 'in': 'x'}", "'p'", "layers[0].kind", "missing");
    expect_error(x258, "{'name': 'p', 'op': 'pool', 'in': 'x', 'kind': 'max'}", "'p'", "layers[0].kind", "");
}

/* ---- numbers ------------------------------------------------------------------------ */

static void test_sinusoidal_values(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [1, 5, 7], 'dtype': 'f32'}",
              "{'name': 'pe', 'op': 'pos_encoding', 'in': 'x', 'kind': 'sinusoidal', 'max_len': 5}", "'pe'");
    static const float zeros[35];
    run r;
    const float *pe = run_graph(&L, &r, (binding[]){{"x", zeros}}, 1, "pe");
    expect_close(pe, sinusoid_expected, 35, 1e-6);
    run_free(&L, &r);
    unload(&L);
}

static void test_rope_values(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [1, 3, 4], 'dtype': 'f32'}",
              "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 1, 'bias': false, 'position': 'rope'}", "'att'");
    binding b[] = {{"x", rope_x}, {"att.q.weight", identity4}, {"att.k.weight", identity4},
                   {"att.v.weight", identity4}, {"att.o.weight", identity4}};
    run r;
    expect_close(run_graph(&L, &r, b, 5, "att"), rope_expected, 12, 1e-5);
    run_free(&L, &r);
    unload(&L);
}

static void test_alibi_values(void **state)
{
    loaded L;
    /* heads 3: slopes 2^(-8/3), 2^(-16/3), 2^(-8) — the formula for a head count that is
     * not a power of two */
    must_load(&L, "'x': {'shape': [1, 3, 3], 'dtype': 'f32'}",
              "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 3, 'bias': false, 'position': 'alibi'}",
              "'att'");
    /* q = 0, so the scores are the bias alone; v and o pass x through */
    binding b[] = {{"x", alibi_x}, {"att.v.weight", identity3}, {"att.o.weight", identity3}};
    run r;
    expect_close(run_graph(&L, &r, b, 3, "att"), alibi_expected, 9, 1e-5);
    run_free(&L, &r);
    unload(&L);
}

static void test_relative_values(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [1, 3, 2], 'dtype': 'f32'}",
              "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 2, 'bias': false, 'position': 'relative'}",
              "'att'");
    binding b[] = {{"x", rel_x}, {"att.v.weight", identity2}, {"att.o.weight", identity2},
                   {"att.rel_bias.weight", rel_weight}};
    run r;
    expect_close(run_graph(&L, &r, b, 4, "att"), rel_expected, 6, 1e-5);
    run_free(&L, &r);
    unload(&L);
}

/* A relative attention over 200 positions: its attention node takes the (32, H) table
 * with the `relative` attribute (the kernel picks rows by bucket; no (T, S) table is
 * built), and kiln_t5_bucket gives T5's bucket of every j − i in −199…199. */
static void check_buckets(bool causal, const int32_t *expected /* rel −200…200 */)
{
    char layer[200];
    snprintf(layer, sizeof layer,
             "{'name': 'att', 'op': 'attention', 'in': 'x', 'heads': 1, 'position': 'relative', 'causal': %s}",
             causal ? "true" : "false");
    loaded L;
    must_load(&L, "'x': {'shape': [1, 200, 2], 'dtype': 'f32'}", layer, "'att'");
    const kiln_node *att = NULL;
    for (uint32_t i = 0; i < L.m.graph.n_nodes; i++) {
        const kiln_node *nd = &L.m.graph.nodes[i];
        if (nd->op == KILN_OP_CONSTANT && nd->type.dtype == KILN_I32 && nd->type.rank == 2)
            fail_msg("a (T, S) bucket table was built");
        if (nd->op == KILN_OP_ATTENTION) att = nd;
    }
    assert_non_null(att);
    assert_true(att->attrs.relative && att->attrs.causal == causal);
    const kiln_type *wt = &L.m.graph.nodes[att->in[3]].type;
    assert_true(wt->rank == 2 && wt->dims[0] == 32 && wt->dims[1] == 1);
    for (int rel = -199; rel < 200; rel++) {
        int32_t got = kiln_t5_bucket(rel, !causal, 32, KILN_T5_MAX_DISTANCE);
        if (got != expected[rel + 200])
            fail_msg("%s bucket of j - i = %d: got %d, expected %d", causal ? "causal" : "bidirectional", rel, got,
                     expected[rel + 200]);
    }
    unload(&L);
}

static void test_t5_buckets(void **state)
{
    check_buckets(false, t5_bidirectional);
    check_buckets(true, t5_causal);
}

static void test_pool_values(void **state)
{
    float x[3 * 4 * 2];
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < 4; t++)
            for (int d = 0; d < 2; d++) x[(b * 4 + t) * 2 + d] = (float)(10 * b + 2 * t + d);
    static const int32_t mask[12] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0};
    static const char *inputs = "'x': {'shape': [3, 4, 2], 'dtype': 'f32'}, 'mask': {'shape': [3, 4], 'dtype': 'i32'}";
    binding b[] = {{"x", x}, {"mask", mask}};
    loaded L;
    run r;

    /* last unmasked: t = 1, t = 2 (a hole before it), none (zeros) */
    must_load(&L, inputs, "{'name': 'p', 'op': 'pool', 'in': 'x', 'kind': 'last', 'mask': 'mask'}", "'p'");
    expect_close(run_graph(&L, &r, b, 2, "p"), (const float[]){2, 3, 14, 15, 0, 0}, 6, 0);
    run_free(&L, &r);
    unload(&L);

    must_load(&L, inputs, "{'name': 'p', 'op': 'pool', 'in': 'x', 'kind': 'last'}", "'p'");
    expect_close(run_graph(&L, &r, b, 2, "p"), (const float[]){6, 7, 16, 17, 26, 27}, 6, 0);
    run_free(&L, &r);
    unload(&L);

    /* mean over kept positions; a fully masked row is zeros, not NaN */
    must_load(&L, inputs, "{'name': 'p', 'op': 'pool', 'in': 'x', 'kind': 'mean', 'mask': 'mask'}", "'p'");
    expect_close(run_graph(&L, &r, b, 2, "p"), (const float[]){1, 2, 12, 13, 0, 0}, 6, 1e-6);
    run_free(&L, &r);
    unload(&L);

    must_load(&L, inputs, "{'name': 'p', 'op': 'pool', 'in': 'x', 'kind': 'first', 'mask': 'mask'}", "'p'");
    expect_close(run_graph(&L, &r, b, 2, "p"), (const float[]){0, 1, 10, 11, 20, 21}, 6, 0);
    run_free(&L, &r);
    unload(&L);
}

static void test_rmsnorm_values(void **state)
{
    loaded L;
    must_load(&L, "'x': {'shape': [1, 4], 'dtype': 'f32'}", "{'name': 'n', 'op': 'rmsnorm', 'in': 'x'}", "'n'");
    static const float x[4] = {1, -2, 3, -4}, w[4] = {1, 2, 0.5f, 1};
    double inv = 1 / sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
    float want[4];
    for (int i = 0; i < 4; i++) want[i] = (float)(x[i] * inv * w[i]);
    run r;
    expect_close(run_graph(&L, &r, (binding[]){{"x", x}, {"n.weight", w}}, 2, "n"), want, 4, 1e-6);
    run_free(&L, &r);
    unload(&L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_tie),
        cmocka_unit_test(test_linear_tie_errors),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_feed_forward),
        cmocka_unit_test(test_norms),
        cmocka_unit_test(test_pos_encoding),
        cmocka_unit_test(test_attention_positions),
        cmocka_unit_test(test_attention_cross),
        cmocka_unit_test(test_attention_errors),
        cmocka_unit_test(test_encoder_layer),
        cmocka_unit_test(test_repeat_and_residual_scale),
        cmocka_unit_test(test_decoder_layer),
        cmocka_unit_test(test_pool_shapes),
        cmocka_unit_test(test_sinusoidal_values),
        cmocka_unit_test(test_rope_values),
        cmocka_unit_test(test_alibi_values),
        cmocka_unit_test(test_relative_values),
        cmocka_unit_test(test_t5_buckets),
        cmocka_unit_test(test_pool_values),
        cmocka_unit_test(test_rmsnorm_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The generator of the expected values above (python3 + numpy; run and paste):
 *
 * import numpy as np, math
 * np.set_printoptions(precision=9)
 * def carr(name, a, fmt="%.9gf"):
 *     a = np.asarray(a).ravel()
 *     def f(v):
 *         if fmt == "%d": return "%d" % v
 *         t = "%.9g" % v
 *         return t + ("f" if ("." in t or "e" in t) else ".0f")
 *     items = [f(v) for v in a]
 *     lines = ["    " + ", ".join(items[i:i + 6]) + "," for i in range(0, len(items), 6)]
 *     ctype = "float" if fmt != "%d" else "int32_t"
 *     return "static const %s %s[%d] = {\n%s\n};" % (ctype, name, a.size, "\n".join(lines))
 *
 * def softmax(s):
 *     s = s - s.max(-1, keepdims=True); e = np.exp(s); return e / e.sum(-1, keepdims=True)
 *
 * # rope: x (1,3,4) heads 1, identity weights, no bias, not causal
 * x = np.array([[0.5, -1.0, 0.25, 2.0], [1.5, 0.75, -0.5, 1.0], [-1.25, 0.5, 1.0, -0.75]])
 * T, dh = 3, 4; half = dh // 2
 * def rope(x):
 *     out = np.empty_like(x)
 *     for p in range(x.shape[0]):
 *         for i in range(half):
 *             ang = p * 10000.0 ** (-2 * i / dh)
 *             a, b = x[p, i], x[p, i + half]
 *             out[p, i] = a * math.cos(ang) - b * math.sin(ang)
 *             out[p, i + half] = b * math.cos(ang) + a * math.sin(ang)
 *     return out
 * q = rope(x); k = rope(x)
 * out = softmax(q @ k.T / math.sqrt(dh)) @ x
 * print(carr("rope_x", x)); print(carr("rope_expected", out))
 *
 * # alibi: x (1,3,3), heads 3, Wq = 0, Wv = Wo = I
 * x = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0], [-0.5, 2.0, 4.0]])
 * H = 3; T = 3
 * out = np.zeros((T, H))
 * for h in range(H):
 *     m = 2.0 ** (-8 * (h + 1) / H)
 *     bias = np.array([[-m * abs(i - j) for j in range(T)] for i in range(T)])
 *     out[:, h] = softmax(bias) @ x[:, h]
 * print(carr("alibi_x", x)); print(carr("alibi_expected", out))
 *
 * # relative: x (1,3,2), heads 2, Wq = 0, Wv = Wo = I, rel_bias.weight[b][h] = 0.1*(b+1)*(h+1) - 0.3*h
 * def bucket(rel, bidirectional, nb=32, md=128):
 *     # HF T5 _relative_position_bucket, with T5's f32 arithmetic
 *     r = 0
 *     if bidirectional:
 *         nb //= 2
 *         r += (rel > 0) * nb
 *         n = abs(rel)
 *     else:
 *         n = -min(rel, 0)
 *     me = nb // 2
 *     if n < me: return r + n
 *     log_ratio = np.float32(np.log(np.float32(n) / np.float32(me)))
 *     large = me + int(log_ratio / np.float32(math.log(md / me)) * np.float32(nb - me))
 *     return r + min(large, nb - 1)
 * x = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0]])
 * W = np.array([[0.1 * (b + 1) * (h + 1) - 0.3 * h for h in range(2)] for b in range(32)])
 * out = np.zeros((3, 2))
 * for h in range(2):
 *     bias = np.array([[W[bucket(j - i, True), h] for j in range(3)] for i in range(3)])
 *     out[:, h] = softmax(bias) @ x[:, h]
 * print(carr("rel_x", x)); print(carr("rel_weight", W)); print(carr("rel_expected", out))
 *
 * # T5 buckets for rel = -200..200
 * print(carr("t5_bidirectional", [bucket(r, True) for r in range(-200, 201)], "%d"))
 * print(carr("t5_causal", [bucket(r, False) for r in range(-200, 201)], "%d"))
 *
 * # sinusoidal PE, T=5, D=7 (odd: last column is a sine)
 * T, D = 5, 7
 * pe = np.zeros((T, D))
 * pos = np.arange(T)[:, None]
 * div = np.exp(np.arange(0, D, 2) * -(math.log(10000.0) / D))
 * pe[:, 0::2] = np.sin(pos * div)
 * pe[:, 1::2] = np.cos(pos * div[: D // 2])
 * print(carr("sinusoid_expected", pe))
 */
