/* test_graph.c — a graph under test and its compiled and interpreted runs (test_graph.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/runtime.h"
#include "test_graph.h"

void test_graph_init(test_graph *t, const char *name)
{
    memset(t, 0, sizeof *t);
    kiln_graph_init(&t->g, name);
    kiln_diags_init(&t->d);
}

void test_graph_free(test_graph *t)
{
    for (int i = 0; i < t->n_inputs; i++) free(t->in_data[i]);
    for (int i = 0; i < t->n_params; i++) free(t->param_data[i]);
    kiln_graph_free(&t->g);
    kiln_diags_free(&t->d);
}

void test_graph_fail(test_graph *t, const char *what)
{
    for (int i = 0; i < t->d.n; i++)
        print_error("%s: %s: %s\n", what, t->d.items[i].where ? t->d.items[i].where : "", t->d.items[i].message);
    fail_msg("%s failed", what);
}

uint32_t test_graph_add(test_graph *t, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a)
{
    uint32_t id = kiln_graph_add(&t->g, op, in, n_in, a, NULL, "test", &t->d);
    if (id == KILN_NONE) test_graph_fail(t, "kiln_graph_add");
    return id;
}

uint32_t test_graph_op1(test_graph *t, kiln_op op, uint32_t x) { return test_graph_add(t, op, &x, 1, NULL); }

uint32_t test_graph_op2(test_graph *t, kiln_op op, uint32_t x, uint32_t y)
{
    uint32_t in[2] = {x, y};
    return test_graph_add(t, op, in, 2, NULL);
}

static kiln_attrs source_attrs(kiln_dtype dt, int rank, const int64_t *dims, char *name, size_t name_size,
                               char prefix, int index)
{
    kiln_attrs a = {0};
    a.dtype = dt;
    a.rank = rank;
    for (int d = 0; d < rank; d++) a.shape[d] = dims[d];
    snprintf(name, name_size, "%c%d", prefix, index);
    a.name = name;
    return a;
}

uint32_t test_graph_input(test_graph *t, kiln_dtype dt, int rank, const int64_t *dims, void *data)
{
    char name[16];
    kiln_attrs a = source_attrs(dt, rank, dims, name, sizeof name, 'x', t->n_inputs);
    uint32_t id = test_graph_add(t, KILN_OP_INPUT, NULL, 0, &a);
    assert_true(t->n_inputs < TEST_GRAPH_MAX);
    t->inputs[t->n_inputs] = id;
    t->in_data[t->n_inputs++] = data;
    return id;
}

uint32_t test_graph_param(test_graph *t, int rank, const int64_t *dims, kiln_init init, void *data)
{
    char name[16];
    kiln_attrs a = source_attrs(KILN_F32, rank, dims, name, sizeof name, 'p', t->n_params);
    a.init = init;
    a.init_arg = 1;
    uint32_t id = test_graph_add(t, KILN_OP_PARAM, NULL, 0, &a);
    assert_true(t->n_params < TEST_GRAPH_MAX);
    t->params[t->n_params] = id;
    t->param_data[t->n_params++] = data;
    return id;
}

void test_graph_output(test_graph *t, uint32_t node)
{
    char name[16];
    snprintf(name, sizeof name, "y%u", t->g.n_outputs);
    assert_true(t->g.n_outputs < TEST_GRAPH_MAX);
    kiln_graph_add_output(&t->g, name, node);
}

size_t test_graph_bytes(const test_graph *t, uint32_t id)
{
    int64_t n = kiln_type_numel(&t->g.nodes[id].type);
    return (size_t)(n ? n : 1) * 4;
}

kiln_compile_request test_graph_request(test_graph *t)
{
    static const kiln_pipeline_options no_simplify = {.disable = "simplify"};
    return (kiln_compile_request){.g = &t->g, .inputs = t->inputs, .n_inputs = (uint32_t)t->n_inputs,
                                  .params = t->params, .n_params = (uint32_t)t->n_params, .name = "t",
                                  .target = t->target, .no_fuse = t->no_fuse,
                                  .pipeline = t->no_fuse ? &no_simplify : NULL};
}

void **test_graph_interpret(test_graph *t)
{
    void **values = calloc(t->g.n_nodes, sizeof *values);
    assert_non_null(values);
    for (int i = 0; i < t->n_inputs; i++) values[t->inputs[i]] = t->in_data[i];
    for (int i = 0; i < t->n_params; i++) values[t->params[i]] = t->param_data[i];
    if (!kiln_interp_run(&t->g, values, false, 0, &t->d)) test_graph_fail(t, "kiln_interp_run");
    return values;
}

void test_graph_values_free(test_graph *t, void **values)
{
    kiln_interp_free_values(&t->g, values);
    free(values);
}

int test_graph_call(test_graph *t, const kiln_compiled *c, void **outs, void **params_out)
{
    void *params = kiln_aligned_alloc((size_t)c->params_bytes);
    void *workspace = kiln_aligned_alloc((size_t)c->workspace_bytes);
    assert_non_null(params);
    assert_non_null(workspace);
    memset(workspace, 0xFF, (size_t)c->workspace_bytes); /* NaN everywhere */
    for (int i = 0; i < t->n_params; i++)
        memcpy((char *)params + c->param_offsets[i], t->param_data[i], test_graph_bytes(t, t->params[i]));
    void *args[2 + 2 * TEST_GRAPH_MAX];
    uint32_t k = 0;
    args[k++] = params;
    args[k++] = workspace;
    for (int i = 0; i < t->n_inputs; i++) args[k++] = t->in_data[i];
    for (uint32_t o = 0; o < t->g.n_outputs; o++) {
        size_t bytes = test_graph_bytes(t, t->g.outputs[o].node);
        outs[o] = kiln_aligned_alloc(bytes);
        assert_non_null(outs[o]);
        memset(outs[o], 0xFF, bytes);
        args[k++] = outs[o];
    }
    assert_int_equal(k, c->n_args);
    int rc = test_call_entry(c->entry, args, k);
    kiln_aligned_free(workspace);
    if (params_out) *params_out = params;
    else kiln_aligned_free(params);
    return rc;
}

void test_graph_outputs_free(test_graph *t, void **outs)
{
    for (uint32_t o = 0; o < t->g.n_outputs; o++) kiln_aligned_free(outs[o]);
}

int test_call_entry(void *fn, void **a, uint32_t n)
{
    typedef void *P;
    switch (n) {
    case 3: return ((int (*)(P, P, P))fn)(a[0], a[1], a[2]);
    case 4: return ((int (*)(P, P, P, P))fn)(a[0], a[1], a[2], a[3]);
    case 5: return ((int (*)(P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4]);
    case 6: return ((int (*)(P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5]);
    case 7: return ((int (*)(P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
    case 8: return ((int (*)(P, P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    case 9: return ((int (*)(P, P, P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
    case 10:
        return ((int (*)(P, P, P, P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
    }
    /* wider entries: pass 34 (the most a test graph has); the callee reads its own count */
    assert_true(n <= 2 + 2 * TEST_GRAPH_MAX);
    P b[2 + 2 * TEST_GRAPH_MAX] = {0};
    for (uint32_t i = 0; i < n; i++) b[i] = a[i];
    return ((int (*)(P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P,
                     P))fn)(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                            b[15], b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23], b[24], b[25], b[26], b[27],
                            b[28], b[29], b[30], b[31], b[32], b[33]);
}
