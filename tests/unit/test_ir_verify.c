/* test_ir_verify.c — the IR verifier: good graphs pass, and hand-corrupted ones (wrong
 * types, a later input, wrong arity, unnormalised attributes, bad ops, duplicate
 * names, outputs and losses, source attributes) each fail with their message, every
 * problem reported at once. Fixture: ir_fixture.h. */
#include "ir_fixture.h"

/* ---- verifier -------------------------------------------------------------------------- */

static void test_verify_good_graphs(void **state)
{
    fx *f = *state;
    assert_true(kiln_graph_verify(&f->g, &f->d)); /* empty */
    build_all_ops(f);
    assert_true(kiln_graph_verify(&f->g, &f->d));
    assert_int_equal(f->d.n, 0);
}

/* Verifies the corrupted graph: one diagnostic (at least), the first at node `id`,
 * mentioning `what`. */
static void check_verify_fails(fx *f, uint32_t id, const char *what)
{
    assert_false(kiln_graph_verify(&f->g, &f->d));
    assert_true(f->d.n >= 1);
    const kiln_diag *e = &f->d.items[0];
    char where[64];
    snprintf(where, sizeof where, "%%%u", id);
    if (id != KILN_NONE && (!e->where || strncmp(e->where, where, strlen(where)) != 0))
        fail_msg("diagnostic at '%s', want %s", e->where ? e->where : "(null)", where);
    if (!strstr(e->message, what)) fail_msg("message '%s' lacks '%s'", e->message, what);
}

static uint32_t find_op(const kiln_graph *g, kiln_op op)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == op) return i;
    fail_msg("no %s node", kiln_op_table[op].name);
    return KILN_NONE;
}

static void test_verify_wrong_type(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t m = find_op(&f->g, KILN_OP_MATMUL);
    f->g.nodes[m].type.dims[1] = 5;
    check_verify_fails(f, m, "the stored type is f32[2,5] but the shape rule gives f32[2,4]");
    /* the where names the label too */
    char where[64];
    snprintf(where, sizeof where, "%%%u 'matmul'", m);
    assert_string_equal(f->d.items[0].where, where);
}

static void test_verify_later_input(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t e = find_op(&f->g, KILN_OP_EXP);
    ((uint32_t *)f->g.nodes[e].in)[0] = e + 1;
    check_verify_fails(f, e, "not an earlier node");
    kiln_diags_free(&f->d);
    ((uint32_t *)f->g.nodes[e].in)[0] = 1000000; /* past the end: must not be read */
    check_verify_fails(f, e, "not an earlier node");
}

static void test_verify_wrong_arity(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t a = find_op(&f->g, KILN_OP_SUB);
    f->g.nodes[a].n_in = 1;
    check_verify_fails(f, a, "sub takes 2 inputs but the node has 1");
}

static void test_verify_unnormalised_attrs(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t s = find_op(&f->g, KILN_OP_SOFTMAX);
    f->g.nodes[s].attrs.axis = -1; /* same type, but not the stored form */
    check_verify_fails(f, s, "axis is not normalised");
    kiln_diags_free(&f->d);
    f->g.nodes[s].attrs.axis = 1;
    uint32_t r = find_op(&f->g, KILN_OP_SUM);
    f->g.nodes[r].attrs.axes[0] = -1;
    check_verify_fails(f, r, "axes is not normalised");
}

static void test_verify_rule_fails(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t d = find_op(&f->g, KILN_OP_DROPOUT);
    f->g.nodes[d].attrs.scalar = 2;
    check_verify_fails(f, d, "the shape rule fails");
}

static void test_verify_bad_op_and_type(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    f->g.nodes[3].op = (kiln_op)(KILN_OP_COUNT + 7);
    check_verify_fails(f, 3, "not in the op table");
    kiln_diags_free(&f->d);
    f->g.nodes[3].op = KILN_OP_INPUT;
    f->g.nodes[0].type.rank = 99;
    check_verify_fails(f, 0, "malformed");
    /* the nodes reading x are not checked against its broken type: no cascade */
    for (int i = 0; i < f->d.n; i++) assert_null(strstr(f->d.items[i].message, "shape rule gives"));
}

static void test_verify_duplicate_names(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    f->g.nodes[1].attrs.name = f->g.nodes[0].attrs.name; /* two inputs "x" */
    check_verify_fails(f, 1, "input name \"x\" is also used by %0");
    kiln_diags_free(&f->d);
    f->g.nodes[1].attrs.name = "y";
    f->g.nodes[5].attrs.name = f->g.nodes[4].attrs.name;
    check_verify_fails(f, 5, "param name \"fc.weight\"");
    kiln_diags_free(&f->d);
    /* an input and a param may share a name */
    f->g.nodes[5].attrs.name = "x";
    assert_true(kiln_graph_verify(&f->g, &f->d));
}

static void test_verify_outputs_and_loss(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t loss = f->g.loss;
    f->g.loss = 0; /* x is f32[2,3] */
    check_verify_fails(f, 0, "the loss must be a scalar f32, not f32[2,3]");
    kiln_diags_free(&f->d);
    f->g.loss = f->g.n_nodes;
    check_verify_fails(f, KILN_NONE, "the loss refers to");
    kiln_diags_free(&f->d);
    f->g.loss = loss;
    f->g.outputs[1].node = 12345;
    check_verify_fails(f, KILN_NONE, "output refers to %12345");
    kiln_diags_free(&f->d);
    f->g.outputs[1].node = 0;
    f->g.outputs[1].name = f->g.outputs[0].name;
    check_verify_fails(f, KILN_NONE, "given twice");
}

static void test_verify_source_attrs(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    f->g.nodes[4].attrs.init = (kiln_init)9;
    check_verify_fails(f, 4, "init kind 9");
    kiln_diags_free(&f->d);
    f->g.nodes[4].attrs.init = KILN_INIT_NORMAL;
    f->g.nodes[0].attrs.name = NULL;
    check_verify_fails(f, 0, "has no name");
}

static void test_verify_reports_every_problem(void **state)
{
    fx *f = *state;
    build_all_ops(f);
    uint32_t e = find_op(&f->g, KILN_OP_EXP);
    uint32_t m = find_op(&f->g, KILN_OP_MATMUL);
    f->g.nodes[e].type.dtype = KILN_I32;
    f->g.nodes[m].n_in = 1;
    assert_false(kiln_graph_verify(&f->g, &f->d));
    assert_int_equal(f->d.n, 2);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_verify_good_graphs),
        T(test_verify_wrong_type),
        T(test_verify_later_input),
        T(test_verify_wrong_arity),
        T(test_verify_unnormalised_attrs),
        T(test_verify_rule_fails),
        T(test_verify_bad_op_and_type),
        T(test_verify_duplicate_names),
        T(test_verify_outputs_and_loss),
        T(test_verify_source_attrs),
        T(test_verify_reports_every_problem),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
