/* test_simplify.c — passes/simplify.c (CSE, dead code, constant folding, identities)
 * and passes/live.c.
 *
 * Design: every simplified graph goes through check_simplified, which asserts what any
 * caller relies on: the verifier passes; INPUT, PARAM and STATE nodes are all kept, in
 * order, with their names; map gives each kept node a node of the same type; outputs,
 * loss and updates are remapped; and simplifying the result again prints the same IR
 * (idempotence). run_both then runs the original and the simplified graph through the
 * reference interpreter on the same random inputs, parameters and optimizer state and
 * compares every output, the loss and every source after the updates (a training step
 * changes parameters and state in place), with dropout on, so that masks must match too.
 *
 * The graphs: small ones written in the IR text form, one rewrite each (asserting the
 * rewrite happened); the golden files tests/golden/simplify/NAME.kir → NAME.expected.kir
 * (KILN_UPDATE_GOLDEN=1 rewrites the expected files; `test_simplify golden` runs only
 * them, which is the ctest entry golden.simplify); the three example models through the
 * frontend, forward and as a whole training step (autodiff + AdamW, as driver/trainstep.c
 * builds it); and every conformance model, forward and training step. The examples run
 * through the interpreter shrunk (dims and hidden sizes / 8, two layers) so that a
 * training step's many parameter-sized values stay small; at full size they are checked
 * structurally only.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend.h"
#include "passes.h"
#include "test_golden.h"
#include "test_rng.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static void fail_diags(const kiln_diags *d, const char *what)
{
    for (int i = 0; i < d->n; i++)
        print_error("%s: %s: %s\n", what, d->items[i].where ? d->items[i].where : "", d->items[i].message);
    fail_msg("%s failed", what);
}

static void parse(kiln_graph *g, const char *text)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph_init(g, NULL);
    if (!kiln_graph_parse(g, text, "test.kir", &d)) fail_diags(&d, "parse");
    kiln_diags_free(&d);
}

static bool is_source(kiln_op op) { return op == KILN_OP_INPUT || op == KILN_OP_PARAM || op == KILN_OP_STATE; }

static int count_op(const kiln_graph *g, kiln_op op)
{
    int n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) n += g->nodes[i].op == op;
    return n;
}

static uint32_t output_node(const kiln_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (!strcmp(g->outputs[i].name, name)) return g->outputs[i].node;
    fail_msg("no output '%s'", name);
    return KILN_NONE;
}

/* ---- the checks every simplified graph gets ---------------------------------------------- */

/* Simplifies `in` into `out` (initialised here) and checks the result's invariants and
 * idempotence. */
static void simplify_checked(const kiln_graph *in, kiln_graph *out, uint32_t *map, const kiln_simplify_options *opt)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph_init(out, "will be replaced");
    if (!kiln_simplify(in, out, map, opt, &d)) fail_diags(&d, "kiln_simplify");
    if (!kiln_graph_verify(out, &d)) fail_diags(&d, "verify after simplify");
    assert_string_equal(out->name, in->name);
    assert_true(out->n_nodes <= in->n_nodes + in->n_updates); /* an update copy at most per update */

    /* sources: all kept, in order, named as before */
    uint32_t last = 0;
    bool first = true;
    int n_sources_in = 0, n_sources_out = 0;
    for (uint32_t id = 0; id < in->n_nodes; id++) {
        const kiln_node *n = &in->nodes[id];
        if (map[id] == KILN_NONE) {
            assert_false(is_source(n->op));
            continue;
        }
        assert_true(map[id] < out->n_nodes);
        assert_true(kiln_type_equal(&n->type, &out->nodes[map[id]].type));
        if (!is_source(n->op)) continue;
        n_sources_in++;
        const kiln_node *m = &out->nodes[map[id]];
        assert_int_equal(m->op, n->op);
        assert_string_equal(m->attrs.name, n->attrs.name);
        assert_true(first || map[id] > last);
        first = false;
        last = map[id];
    }
    for (uint32_t id = 0; id < out->n_nodes; id++) n_sources_out += is_source(out->nodes[id].op);
    assert_int_equal(n_sources_in, n_sources_out);

    /* outputs, loss, updates remapped */
    assert_int_equal(out->n_outputs, in->n_outputs);
    for (uint32_t i = 0; i < in->n_outputs; i++) {
        assert_string_equal(out->outputs[i].name, in->outputs[i].name);
        assert_int_equal(out->outputs[i].node, map[in->outputs[i].node]);
    }
    assert_int_equal(out->loss, in->loss == KILN_NONE ? KILN_NONE : map[in->loss]);
    assert_true(out->n_updates <= in->n_updates);
    for (uint32_t u = 0; u < out->n_updates; u++) {
        kiln_op op = out->nodes[out->updates[u].target].op;
        assert_true(op == KILN_OP_PARAM || op == KILN_OP_STATE);
        assert_int_not_equal(out->updates[u].value, out->updates[u].target);
    }

    /* idempotent: the result is its own simplification */
    kiln_graph again;
    kiln_graph_init(&again, NULL);
    uint32_t *map2 = calloc(out->n_nodes + 1, sizeof *map2);
    kiln_simplify_options opt2 = opt ? *opt : (kiln_simplify_options){0};
    opt2.stats = NULL; /* keep the first run's */
    if (!kiln_simplify(out, &again, map2, &opt2, &d)) fail_diags(&d, "kiln_simplify again");
    char *p1 = kiln_graph_print(out), *p2 = kiln_graph_print(&again);
    if (strcmp(p1, p2)) {
        print_error("first:\n%s\nsecond:\n%s\n", p1, p2);
        fail_msg("simplify is not idempotent on %s", in->name);
    }
    for (uint32_t id = 0; id < out->n_nodes; id++) {
        if (map2[id] == id) continue;
        /* the one exception: the copy an update reads another target through is
         * rewritten away and made again */
        bool read_by_update = false;
        for (uint32_t u = 0; u < out->n_updates; u++) read_by_update |= out->updates[u].value == id;
        bool copy = read_by_update && out->nodes[id].op == KILN_OP_SCALE && out->nodes[id].attrs.scalar == 1.0;
        if (!copy) fail_msg("%s: node %u maps to %u when simplified again", in->name, id, map2[id]);
    }
    free(p1);
    free(p2);
    free(map2);
    kiln_graph_free(&again);
    kiln_diags_free(&d);
}

/* The largest value an i32 input may take: the rows of a table it indexes, the classes
 * of a cross_entropy it is the target of (through views); 2 otherwise (masks). */
static uint32_t through_views(const kiln_graph *g, uint32_t id)
{
    for (;;) {
        kiln_op op = g->nodes[id].op;
        if (op != KILN_OP_RESHAPE && op != KILN_OP_CAST && op != KILN_OP_SLICE && op != KILN_OP_TRANSPOSE &&
            op != KILN_OP_BROADCAST)
            return id;
        id = g->nodes[id].in[0];
    }
}

static int64_t i32_bound(const kiln_graph *g, uint32_t input)
{
    int64_t bound = -1;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *n = &g->nodes[id];
        int64_t b = -1;
        if (n->op == KILN_OP_GATHER && through_views(g, n->in[1]) == input)
            b = g->nodes[n->in[0]].type.dims[n->attrs.axis];
        if ((n->op == KILN_OP_CROSS_ENTROPY || n->op == KILN_OP_CROSS_ENTROPY_GRAD) &&
            through_views(g, n->in[1]) == input) {
            const kiln_type *t = &g->nodes[n->in[0]].type;
            b = t->dims[t->rank - 1];
        }
        if (b >= 0 && (bound < 0 || b < bound)) bound = b;
    }
    return bound < 0 ? 2 : bound;
}

static bool close_enough(const kiln_type *t, const void *x, const void *y, int64_t *bad)
{
    int64_t n = kiln_type_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == KILN_I32) {
            if (((const int32_t *)x)[i] != ((const int32_t *)y)[i]) return *bad = i, false;
            continue;
        }
        double a = ((const float *)x)[i], b = ((const float *)y)[i];
        if (isnan(a) && isnan(b)) continue;
        if (!(fabs(a - b) <= 1e-6 + 1e-5 * fabs(b))) return *bad = i, false;
    }
    return true;
}

/* Runs `in` and its simplification `out` on the same random sources (optimizer state
 * zero, as a fresh optimizer blob is) and compares outputs, loss and every source after
 * the updates. */
static void run_both(const kiln_graph *in, const kiln_graph *out, const uint32_t *map, bool training, uint64_t seed)
{
    void **vi = calloc(in->n_nodes + 1, sizeof *vi), **vo = calloc(out->n_nodes + 1, sizeof *vo);
    assert_true(vi && vo);
    rng r = {seed};
    for (uint32_t id = 0; id < in->n_nodes; id++) {
        const kiln_node *n = &in->nodes[id];
        if (!is_source(n->op)) continue;
        int64_t numel = kiln_type_numel(&n->type);
        void *a = malloc((size_t)numel * 4 + 4), *b = malloc((size_t)numel * 4 + 4);
        assert_true(a && b);
        if (n->type.dtype == KILN_I32) {
            int64_t bound = i32_bound(in, id);
            for (int64_t i = 0; i < numel; i++) ((int32_t *)a)[i] = (int32_t)(rng_next(&r) % (uint64_t)bound);
        } else {
            bool lr = n->op == KILN_OP_INPUT && !strcmp(n->attrs.name, "lr");
            for (int64_t i = 0; i < numel; i++)
                ((float *)a)[i] = n->op == KILN_OP_STATE ? 0.0f : lr ? 1e-2f : (float)(rng_normal(&r) * 0.5);
        }
        memcpy(b, a, (size_t)numel * 4);
        vi[id] = a;
        vo[map[id]] = b;
    }
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok_in = kiln_interp_run(in, vi, training, seed, &d);
    bool ok_out = kiln_interp_run(out, vo, training, seed, &d);
    if (ok_in != ok_out) fail_diags(&d, "only one of the two graphs ran");
    int64_t bad = 0;
    char buf[128];
    for (uint32_t i = 0; ok_in && i < in->n_outputs; i++) {
        uint32_t a = in->outputs[i].node, b = out->outputs[i].node;
        if (!close_enough(&in->nodes[a].type, vi[a], vo[b], &bad))
            fail_msg("%s: output '%s' %s differs at element %lld", in->name, in->outputs[i].name,
                     kiln_type_str(&in->nodes[a].type, buf, sizeof buf), (long long)bad);
    }
    if (ok_in && in->loss != KILN_NONE && !close_enough(&in->nodes[in->loss].type, vi[in->loss], vo[out->loss], &bad))
        fail_msg("%s: the loss differs", in->name);
    for (uint32_t id = 0; ok_in && id < in->n_nodes; id++) {
        if (!is_source(in->nodes[id].op)) continue;
        if (!close_enough(&in->nodes[id].type, vi[id], vo[map[id]], &bad))
            fail_msg("%s: source '%s' differs after the updates at element %lld", in->name, in->nodes[id].attrs.name,
                     (long long)bad);
    }
    kiln_interp_free_values(in, vi);
    kiln_interp_free_values(out, vo);
    for (uint32_t id = 0; id < in->n_nodes; id++) {
        if (!is_source(in->nodes[id].op)) continue;
        free(vi[id]);
        free(vo[map[id]]);
    }
    free(vi);
    free(vo);
    kiln_diags_free(&d);
}

/* Parses text, simplifies it with every check, runs both; the result is left in out. */
static uint32_t *simplify_text(const char *text, kiln_graph *in, kiln_graph *out, kiln_simplify_stats *st)
{
    parse(in, text);
    uint32_t *map = calloc(in->n_nodes + 1, sizeof *map);
    kiln_simplify_options opt = {.stats = st};
    simplify_checked(in, out, map, &opt);
    run_both(in, out, map, true, 42);
    return map;
}

/* ---- live.c --------------------------------------------------------------------------------- */

static void test_live(void **state)
{
    kiln_graph g;
    parse(&g, "graph g\n"
              "%0 = input \"x\" : f32[2]\n"
              "%1 = state \"s\" : f32[2]\n"
              "%2 = exp(%0) : f32[2]\n"      /* output */
              "%3 = log(%0) : f32[2]\n"      /* loss only */
              "%4 = sum(%3) axes=[0] : f32[]\n"
              "%5 = tanh(%0) : f32[2]\n"     /* dead */
              "%6 = add(%1, %0) : f32[2]\n"  /* update value */
              "output \"e\" = %2\n"
              "loss = %4\n"
              "update %1 = %6\n");
    unsigned char live[7];
    memset(live, 7, sizeof live);
    kiln_graph_live(&g, KILN_LIVE_UPDATES, live);
    const unsigned char want[7] = {1, 1, 1, 0, 0, 0, 1};
    assert_memory_equal(live, want, 7);
    kiln_graph_live(&g, KILN_LIVE_LOSS | KILN_LIVE_UPDATES, live);
    const unsigned char want_loss[7] = {1, 1, 1, 1, 1, 0, 1};
    assert_memory_equal(live, want_loss, 7);
    kiln_graph_free(&g);
}

/* ---- one rewrite at a time ------------------------------------------------------------------- */

static void test_cse(void **state)
{
    kiln_graph in, out;
    kiln_simplify_stats st;
    uint32_t *map = simplify_text("graph g\n"
                                  "%0 = input \"x\" : f32[3]\n"
                                  "%1 = exp(%0) : f32[3]\n"
                                  "%2 = exp(%0) : f32[3] \"second\"\n"
                                  "%3 = add(%1, %2) : f32[3]\n"
                                  "%4 = dropout(%0) p=0.5 stream=11 : f32[3]\n"
                                  "%5 = dropout(%0) p=0.5 stream=12 : f32[3]\n"
                                  "%6 = add(%4, %5) : f32[3]\n"
                                  "%7 = add(%3, %6) : f32[3]\n"
                                  "output \"y\" = %7\n",
                                  &in, &out, &st);
    assert_int_equal(map[1], map[2]);
    assert_string_equal(out.nodes[map[1]].label, "second"); /* moved: the first had none */
    assert_int_not_equal(map[4], map[5]);                   /* different masks never merge */
    assert_int_equal(out.nodes[map[4]].attrs.stream, 11);   /* streams kept, not renumbered */
    assert_int_equal(out.nodes[map[5]].attrs.stream, 12);
    assert_int_equal(st.merged, 1);
    assert_int_equal(count_op(&out, KILN_OP_EXP), 1);
    free(map);
    kiln_graph_free(&in);
    kiln_graph_free(&out);
}

/* recompute_from: nodes from there on (activation checkpointing's copies) never merge
 * into earlier nodes, except constants; among themselves they still do. */
static void test_recompute_from(void **state)
{
    const char *text = "graph g\n"
                       "%0 = input \"x\" : f32[3]\n"
                       "%1 = param \"w\" init=zeros : f32[3]\n"
                       "%2 = mul(%0, %1) : f32[3]\n"
                       "%3 = constant [2] : f32[]\n"
                       "%4 = tanh(%2) : f32[3]\n"
                       "%5 = mul(%4, %3) : f32[3]\n"
                       "%6 = sum(%5) axes=[0] : f32[]\n"
                       /* from here on: the 'backward pass' with its recomputed copies */
                       "%7 = mul(%0, %1) : f32[3]\n"
                       "%8 = tanh(%7) : f32[3]\n"
                       "%9 = tanh(%7) : f32[3]\n"
                       "%10 = constant [2] : f32[]\n"
                       "%11 = mul(%8, %10) : f32[3]\n"
                       "%12 = add(%11, %9) : f32[3]\n"
                       "output \"y\" = %12\n"
                       "loss = %6\n";
    kiln_graph in, out;
    parse(&in, text);
    uint32_t map[13];
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_simplify_options opt = {.recompute_from = 7};
    kiln_graph_init(&out, NULL);
    if (!kiln_simplify(&in, &out, map, &opt, &d)) fail_diags(&d, "kiln_simplify");
    if (!kiln_graph_verify(&out, &d)) fail_diags(&d, "verify");
    assert_int_not_equal(map[7], map[2]); /* the copies stay copies */
    assert_int_not_equal(map[8], map[4]);
    assert_int_equal(map[8], map[9]);     /* equal copies merge */
    assert_int_equal(map[10], map[3]);    /* constants merge across */
    assert_int_equal(count_op(&out, KILN_OP_TANH), 2);
    run_both(&in, &out, map, false, 7);
    kiln_graph_free(&out);

    /* without it, the backward pass reads the forward's values */
    opt.recompute_from = 0;
    kiln_graph_init(&out, NULL);
    if (!kiln_simplify(&in, &out, map, &opt, &d)) fail_diags(&d, "kiln_simplify");
    assert_int_equal(map[7], map[2]);
    assert_int_equal(map[8], map[4]);
    assert_int_equal(map[11], map[5]);
    assert_int_equal(count_op(&out, KILN_OP_TANH), 1);
    kiln_graph_free(&out);
    kiln_graph_free(&in);
    kiln_diags_free(&d);
    (void)state;
}

static void test_dce(void **state)
{
    kiln_graph in, out;
    kiln_simplify_stats st;
    uint32_t *map = simplify_text("graph g\n"
                                  "%0 = input \"x\" : f32[3]\n"
                                  "%1 = input \"unused\" : f32[3]\n"
                                  "%2 = param \"w\" init=zeros : f32[3]\n"
                                  "%3 = exp(%1) : f32[3]\n"
                                  "%4 = mul(%0, %2) : f32[3]\n"
                                  "%5 = sum(%4) axes=[0] : f32[]\n"
                                  "%6 = tanh(%3) : f32[3]\n"
                                  "output \"y\" = %4\n"
                                  "loss = %5\n",
                                  &in, &out, &st);
    assert_int_equal(map[3], KILN_NONE);
    assert_int_equal(map[6], KILN_NONE);
    assert_int_not_equal(map[1], KILN_NONE); /* sources stay */
    assert_int_not_equal(map[5], KILN_NONE); /* the loss stays */
    assert_int_equal(out.n_nodes, 5);
    assert_int_equal(st.removed, 2);
    free(map);
    kiln_graph_free(&in);
    kiln_graph_free(&out);

    /* no_dce keeps them */
    parse(&in, "graph g\n%0 = input \"x\" : f32[3]\n%1 = exp(%0) : f32[3]\n%2 = log(%0) : f32[3]\noutput \"y\" = %1\n");
    uint32_t m2[3];
    kiln_simplify_options opt = {.no_dce = true};
    simplify_checked(&in, &out, m2, &opt);
    assert_int_equal(out.n_nodes, 3);
    kiln_graph_free(&in);
    kiln_graph_free(&out);
}

static void test_fold_position_table_and_mask(void **state)
{
    kiln_graph in, out;
    kiln_simplify_stats st;
    /* pos[i, j] = i · 0.5 + j, and a causal mask, then both added to x */
    uint32_t *map = simplify_text("graph g\n"
                                  "%0 = input \"x\" : f32[4,3]\n"
                                  "%1 = iota axis=0 : f32[4,3]\n"
                                  "%2 = scale(%1) by=0.5 : f32[4,3]\n"
                                  "%3 = iota axis=1 : f32[4,3]\n"
                                  "%4 = add(%2, %3) : f32[4,3] \"pos\"\n"
                                  "%5 = add(%0, %4) : f32[4,3]\n"
                                  "%6 = iota axis=0 : i32[4,1]\n"
                                  "%7 = iota axis=1 : i32[1,3]\n"
                                  "%8 = gt(%7, %6) : f32[4,3]\n"
                                  "%9 = constant [0] : f32[]\n"
                                  "%10 = where(%8, %9, %5) : f32[4,3]\n"
                                  "output \"y\" = %10\n",
                                  &in, &out, &st);
    const kiln_node *pos = &out.nodes[map[4]];
    assert_int_equal(pos->op, KILN_OP_CONSTANT);
    assert_string_equal(pos->label, "pos");
    assert_int_equal(pos->attrs.n_values, 12);
    const float *v = pos->attrs.values;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) assert_true(v[i * 3 + j] == (float)(i * 0.5 + j));
    const kiln_node *mask = &out.nodes[map[8]];
    assert_int_equal(mask->op, KILN_OP_CONSTANT);
    assert_true(((const float *)mask->attrs.values)[1] == 1.0f && ((const float *)mask->attrs.values)[3] == 0.0f);
    assert_int_equal(count_op(&out, KILN_OP_IOTA), 0);
    assert_int_equal(st.folded, 3);
    free(map);
    kiln_graph_free(&in);
    kiln_graph_free(&out);
}

static void test_fold_limits(void **state)
{
    kiln_graph in, out;
    /* 8×8 floats = 256 bytes: over a 128-byte cap, kept; a uniform 4×4 result is one
     * fill value */
    parse(&in, "graph g\n"
               "%0 = iota axis=0 : f32[8,8]\n"
               "%1 = scale(%0) by=2 : f32[8,8]\n"
               "%2 = constant [3] : f32[]\n"
               "%3 = broadcast(%2) : f32[4,4]\n"
               "%4 = exp(%3) : f32[4,4]\n"
               "%5 = dropout(%1) p=0.5 stream=4 : f32[8,8]\n"
               "output \"big\" = %1\n"
               "output \"fill\" = %4\n"
               "output \"drop\" = %5\n");
    uint32_t map[6];
    kiln_simplify_options opt = {.fold_max_bytes = 128};
    simplify_checked(&in, &out, map, &opt);
    assert_int_equal(out.nodes[map[1]].op, KILN_OP_SCALE);
    assert_int_equal(out.nodes[map[4]].op, KILN_OP_CONSTANT); /* uniform: one value */
    assert_int_equal(out.nodes[map[4]].attrs.n_values, 1);
    assert_true(((const float *)out.nodes[map[4]].attrs.values)[0] == (float)exp(3.0));
    assert_int_equal(out.nodes[map[5]].op, KILN_OP_DROPOUT);  /* depends on the run */
    run_both(&in, &out, map, true, 7);
    kiln_graph_free(&out);
    /* no_fold */
    opt = (kiln_simplify_options){.no_fold = true};
    simplify_checked(&in, &out, map, &opt);
    assert_int_equal(out.nodes[map[4]].op, KILN_OP_EXP);
    kiln_graph_free(&out);
    kiln_graph_free(&in);
}

/* Each identity: the output named "y" must become node %0 ("x") or, for the
 * composing rules, a single node of the given op reading x. */
typedef struct ident_case {
    const char *body;      /* nodes after %0 = input "x" */
    kiln_op becomes;       /* KILN_OP_INPUT: x itself */
    int nodes_after;       /* node count of the result */
} ident_case;

static void test_identities(void **state)
{
    static const ident_case cases[] = {
        {"%1 = constant [1] : f32[]\n%2 = mul(%0, %1) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = constant [1,1,1] : f32[3]\n%2 = mul(%1, %0) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = constant [0] : f32[]\n%2 = add(%0, %1) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = constant [0] : f32[3]\n%2 = add(%1, %0) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = constant [0] : f32[]\n%2 = sub(%0, %1) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = constant [1] : f32[]\n%2 = div(%0, %1) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = scale(%0) by=1 : f32[2,3]\n%2 = exp(%1) : f32[2,3]\n", KILN_OP_EXP, 2},
        {"%1 = neg(%0) : f32[2,3]\n%2 = neg(%1) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = dropout(%0) p=0 stream=1 : f32[2,3]\n%2 = exp(%1) : f32[2,3]\n", KILN_OP_EXP, 2},
        {"%1 = cast(%0) : f32[2,3]\n%2 = exp(%1) : f32[2,3]\n", KILN_OP_EXP, 2},
        {"%1 = reshape(%0) : f32[2,3]\n%2 = exp(%1) : f32[2,3]\n", KILN_OP_EXP, 2},
        {"%1 = reshape(%0) : f32[6]\n%2 = reshape(%1) : f32[3,2]\n", KILN_OP_RESHAPE, 2},
        {"%1 = reshape(%0) : f32[6]\n%2 = reshape(%1) : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = broadcast(%0) : f32[2,3]\n%2 = exp(%1) : f32[2,3]\n", KILN_OP_EXP, 2},
        {"%1 = broadcast(%0) : f32[1,2,3]\n%2 = broadcast(%1) : f32[5,2,3]\n", KILN_OP_BROADCAST, 2},
        {"%1 = transpose(%0) perm=[1,0] : f32[3,2]\n%2 = transpose(%1) perm=[1,0] : f32[2,3]\n", KILN_OP_INPUT, 1},
        {"%1 = transpose(%0) perm=[0,1] : f32[2,3]\n%2 = exp(%1) : f32[2,3]\n", KILN_OP_EXP, 2},
        {"%1 = reshape(%0) : f32[1,2,3]\n%2 = transpose(%1) perm=[2,0,1] : f32[3,1,2]\n"
         "%3 = transpose(%2) perm=[2,0,1] : f32[2,3,1]\n%4 = exp(%3) : f32[2,3,1]\n%5 = reshape(%4) : f32[2,3]\n",
         KILN_OP_RESHAPE, 5},
        {"%1 = transpose(%0) perm=[1,0] : f32[3,2]\n%2 = matmul(%1, %0) : f32[3,3]\n", KILN_OP_MATMUL, 2},
        {"%1 = transpose(%0) perm=[1,0] : f32[3,2]\n%2 = matmul(%0, %1) : f32[2,2]\n", KILN_OP_MATMUL, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char text[1024];
        /* the output is the last node */
        int last = 0;
        for (const char *p = cases[c].body; (p = strchr(p, '%')); p++) {
            int k = atoi(p + 1);
            if (k > last) last = k;
        }
        snprintf(text, sizeof text, "graph g\n%%0 = input \"x\" : f32[2,3]\n%soutput \"y\" = %%%d\n", cases[c].body,
                 last);
        kiln_graph in, out;
        kiln_simplify_stats st;
        uint32_t *map = simplify_text(text, &in, &out, &st);
        const kiln_node *y = &out.nodes[output_node(&out, "y")];
        if (y->op != cases[c].becomes || (int)out.n_nodes != cases[c].nodes_after) {
            char *p = kiln_graph_print(&out);
            print_error("case %zu:\n%s\nbecame:\n%s\n", c, text, p);
            free(p);
            fail_msg("identity case %zu not applied", c);
        }
        assert_true(st.rewritten >= 1);
        /* transposes absorbed by a matmul flip its flag */
        if (y->op == KILN_OP_MATMUL) {
            assert_int_equal(count_op(&out, KILN_OP_TRANSPOSE), 0);
            assert_true(y->attrs.transpose_a != y->attrs.transpose_b);
        }
        free(map);
        kiln_graph_free(&in);
        kiln_graph_free(&out);

        /* no_identities leaves the graph's nodes alone */
        parse(&in, text);
        uint32_t *m2 = calloc(in.n_nodes, sizeof *m2);
        kiln_simplify_options opt = {.no_identities = true, .no_fold = true};
        simplify_checked(&in, &out, m2, &opt);
        assert_int_equal(out.n_nodes, in.n_nodes); /* every node is live */
        free(m2);
        kiln_graph_free(&in);
        kiln_graph_free(&out);
    }
}

static void test_identity_needs_equal_type(void **state)
{
    kiln_graph in, out;
    kiln_simplify_stats st;
    /* x·ones(2,1,3) broadcasts x up: not x; x + 0 where 0 is i32-free f32 of x's type */
    uint32_t *map = simplify_text("graph g\n"
                                  "%0 = input \"x\" : f32[2,3]\n"
                                  "%1 = constant [1] : f32[2,1,3]\n"
                                  "%2 = mul(%0, %1) : f32[2,2,3]\n"
                                  "%3 = constant [0,0,1] : f32[3]\n"
                                  "%4 = add(%0, %3) : f32[2,3]\n"
                                  "%5 = constant [2] : f32[]\n"
                                  "%6 = mul(%0, %5) : f32[2,3]\n"
                                  "output \"a\" = %2\noutput \"b\" = %4\noutput \"c\" = %6\n",
                                  &in, &out, &st);
    assert_int_equal(out.nodes[map[2]].op, KILN_OP_MUL);
    assert_int_equal(out.nodes[map[4]].op, KILN_OP_ADD);
    assert_int_equal(out.nodes[map[6]].op, KILN_OP_MUL);
    assert_int_equal(st.rewritten, 0);
    free(map);
    kiln_graph_free(&in);
    kiln_graph_free(&out);
}

static void test_updates(void **state)
{
    kiln_graph in, out;
    kiln_simplify_stats st;
    uint32_t *map = simplify_text("graph g\n"
                                  "%0 = param \"p\" init=zeros : f32[3]\n"
                                  "%1 = param \"q\" init=zeros : f32[3]\n"
                                  "%2 = state \"r\" : f32[3]\n"
                                  "%3 = input \"g\" : f32[3]\n"
                                  "%4 = scale(%0) by=1 : f32[3]\n"
                                  "%5 = add(%1, %3) : f32[3]\n"
                                  "%6 = reshape(%1) : f32[3]\n"
                                  "output \"y\" = %5\n"
                                  "update %0 = %4\n"
                                  "update %1 = %5\n"
                                  "update %2 = %6\n",
                                  &in, &out, &st);
    /* p ← p is gone; r ← q reads a copy of q, not q's storage */
    assert_int_equal(out.n_updates, 2);
    assert_int_equal(out.updates[0].target, map[1]);
    assert_int_equal(out.updates[1].target, map[2]);
    const kiln_node *copy = &out.nodes[out.updates[1].value];
    assert_int_equal(copy->op, KILN_OP_SCALE);
    assert_int_equal(copy->in[0], map[1]);
    free(map);
    kiln_graph_free(&in);
    kiln_graph_free(&out);
}

/* ---- golden files ---------------------------------------------------------------------------- */

static int golden_one(const char *dir, const char *name)
{
    char path[4096], expected_path[4096];
    snprintf(path, sizeof path, "%s/%.255s", dir, name);
    snprintf(expected_path, sizeof expected_path, "%s/%.*s.expected.kir", dir, (int)(strlen(name) - 4), name);
    char *text = golden_read_file(path);
    assert_non_null(text);
    kiln_graph in, out;
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_graph_init(&in, NULL);
    if (!kiln_graph_parse(&in, text, path, &d)) fail_diags(&d, path);
    uint32_t *map = calloc(in.n_nodes + 1, sizeof *map);
    simplify_checked(&in, &out, map, NULL);
    run_both(&in, &out, map, true, 3);
    char *got = kiln_graph_print(&out);
    int mismatch = golden_check(expected_path, got);
    free(got);
    free(text);
    free(map);
    kiln_graph_free(&in);
    kiln_graph_free(&out);
    kiln_diags_free(&d);
    return mismatch;
}

static void test_golden(void **state)
{
    const char *dir = KILN_SOURCE_DIR "/tests/golden/simplify";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    int n = 0, bad = 0;
    char names[64][256];
    while ((e = readdir(dp)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".kir") || strstr(e->d_name, ".expected.kir")) continue;
        assert_true(n < 64 && len < 256);
        strcpy(names[n++], e->d_name);
    }
    closedir(dp);
    for (int i = 0; i < n; i++) bad += golden_one(dir, names[i]);
    assert_true(n >= 5);
    if (bad) fail_msg("%d golden file(s) differ", bad);
}

/* ---- whole models --------------------------------------------------------------------------- */

/* driver/trainstep.c's training step, rebuilt from what the libraries offer: the loss
 * as the only output, its gradients, the optimizer update from the model's settings. */
static void make_training_step(kiln_model *m)
{
    kiln_graph *g = &m->graph;
    kiln_diags d;
    kiln_diags_init(&d);
    g->n_outputs = 0;
    kiln_graph_add_output(g, "loss", g->loss);
    uint32_t n = (uint32_t)m->n_params;
    uint32_t *grads = calloc(n + 1, sizeof *grads);
    if (!kiln_autodiff(g, g->loss, m->params, n, grads, &d)) fail_diags(&d, "autodiff");
    const kiln_train_config *t = &m->train;
    kiln_optim_group *groups = calloc((size_t)t->n_groups + 1, sizeof *groups);
    for (int i = 0; i < t->n_groups; i++)
        groups[i] = (kiln_optim_group){t->groups[i].match, t->groups[i].lr_scale, t->groups[i].weight_decay};
    kiln_optim_config cfg = {.kind = t->optimizer == KILN_OPT_SGD ? KILN_OPTIM_SGD : KILN_OPTIM_ADAMW,
                             .beta1 = t->beta1, .beta2 = t->beta2, .eps = t->eps, .momentum = t->momentum,
                             .weight_decay = t->weight_decay, .grad_clip = t->grad_clip, .freeze = t->freeze,
                             .n_freeze = t->n_freeze, .groups = groups, .n_groups = t->n_groups};
    kiln_optim_result res;
    if (!kiln_optim_build(g, m->params, grads, n, &cfg, &res, &d)) fail_diags(&d, "optimizer");
    if (!kiln_graph_verify(g, &d)) fail_diags(&d, "verify training step");
    free(groups);
    free(grads);
    kiln_diags_free(&d);
}

/* Loads a model from text, optionally turns it into its training step, simplifies it
 * with every check, and (when run) compares it with the interpreter. */
static void check_model(const char *text, const char *what, const kiln_dim_binding *defs, int n_defs, bool train,
                        bool run)
{
    kiln_model m;
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_load_options lo = {defs, n_defs, NULL, 0, NULL};
    if (!kiln_model_load_text(&m, text, strlen(text), what, &lo, &d)) fail_diags(&d, what);
    if (train) {
        if (m.graph.loss == KILN_NONE) {
            kiln_model_free(&m);
            kiln_diags_free(&d);
            return;
        }
        make_training_step(&m);
    }
    uint32_t *map = calloc(m.graph.n_nodes + 1, sizeof *map);
    kiln_graph out;
    kiln_simplify_stats st;
    kiln_simplify_options opt = {.stats = &st};
    simplify_checked(&m.graph, &out, map, &opt);
    print_message("%-40s %-5s %5u → %5u nodes (removed %u, merged %u, folded %u, rewrites %u)\n", what,
                  train ? "train" : "fwd", m.graph.n_nodes, out.n_nodes, st.removed, st.merged, st.folded,
                  st.rewritten);
    assert_true(out.n_nodes <= m.graph.n_nodes);
    if (run) run_both(&m.graph, &out, map, train, 1234);
    free(map);
    kiln_graph_free(&out);
    kiln_model_free(&m);
    kiln_diags_free(&d);
}

/* The example with dims and hidden sizes divided by 8 and at most two layers per stack:
 * the same architecture, small enough for the interpreter's training step. */
static char *shrink(const char *text)
{
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    cJSON *l;
    cJSON_ArrayForEach(l, layers)
    {
        static const char *const keys[] = {"dim", "hidden"};
        for (int k = 0; k < 2; k++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(l, keys[k]);
            if (cJSON_IsNumber(v)) cJSON_SetNumberValue(v, v->valuedouble / 8);
        }
        cJSON *r = cJSON_GetObjectItemCaseSensitive(l, "repeat");
        if (cJSON_IsNumber(r) && r->valuedouble > 2) cJSON_SetNumberValue(r, 2);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static const struct example {
    const char *file;
    kiln_dim_binding dims[3];
    int n_dims;
} examples[] = {
    {"char_gpt.json", {{"B", 2}, {"T", 8}}, 2},
    {"bert_classifier.json", {{"B", 2}, {"T", 8}}, 2},
    {"translator.json", {{"B", 2}, {"S", 6}, {"T", 5}}, 3},
};

static void test_examples(void **state)
{
    for (size_t i = 0; i < sizeof examples / sizeof *examples; i++) {
        char path[512];
        snprintf(path, sizeof path, KILN_SOURCE_DIR "/examples/%s", examples[i].file);
        char *text = golden_read_file(path);
        assert_non_null(text);
        /* full size: forward through the interpreter, the training step structurally */
        check_model(text, examples[i].file, examples[i].dims, examples[i].n_dims, false, true);
        check_model(text, examples[i].file, examples[i].dims, examples[i].n_dims, true, false);
        /* shrunk: the training step through the interpreter too */
        char *small = shrink(text);
        char what[300];
        snprintf(what, sizeof what, "%s (shrunk)", examples[i].file);
        check_model(small, what, examples[i].dims, examples[i].n_dims, true, true);
        free(small);
        free(text);
    }
}

static void test_conformance_models(void **state)
{
    const char *dir = KILN_SOURCE_DIR "/tests/conformance/cases";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/model.json", dir, e->d_name);
        char *text = golden_read_file(path);
        if (!text) continue;
        check_model(text, e->d_name, NULL, 0, false, true);
        check_model(text, e->d_name, NULL, 0, true, true);
        free(text);
        n++;
    }
    closedir(dp);
    assert_true(n >= 26);
}

#define T(f) cmocka_unit_test(f)

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        T(test_live),
        T(test_cse),
        T(test_recompute_from),
        T(test_dce),
        T(test_fold_position_table_and_mask),
        T(test_fold_limits),
        T(test_identities),
        T(test_identity_needs_equal_type),
        T(test_updates),
        T(test_golden),
        T(test_examples),
        T(test_conformance_models),
    };
    if (argc > 1 && !strcmp(argv[1], "golden")) {
        const struct CMUnitTest golden[] = {T(test_golden)};
        return cmocka_run_group_tests_name("simplify golden", golden, NULL, NULL);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
