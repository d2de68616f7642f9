/* test_graph.h — a graph under test, built by hand, with data for its inputs and
 * parameters; and the plumbing to run it compiled and interpreted.
 *
 * The codegen tests (test_codegen.c, test_kernels_mt.c, test_extremes.c) all build a
 * small graph with kiln_graph_add, keep one buffer per input and parameter, compile it,
 * call the entry point and compare against kiln_interp_run. What they check differs
 * (memory plans, thread counts, finiteness); this is the part they share. A failure
 * inside any of these functions fails the running cmocka test with the diagnostics. */
#ifndef KILN_TEST_GRAPH_H
#define KILN_TEST_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "codegen.h"
#include "test_rng.h"

#define TEST_GRAPH_MAX 16 /* inputs, parameters and outputs of one graph */

typedef struct test_graph {
    kiln_graph g;
    kiln_diags d;
    uint32_t inputs[TEST_GRAPH_MAX], params[TEST_GRAPH_MAX];
    void *in_data[TEST_GRAPH_MAX], *param_data[TEST_GRAPH_MAX]; /* owned, malloc'd */
    int n_inputs, n_params;
    rng *r;                      /* the draws of tests that fill inputs at random */
    const kiln_target *target;   /* compile for this CPU; NULL: the host */
    bool no_fuse;                /* one kernel per node (tests of the unfused plan) */
} test_graph;

void test_graph_init(test_graph *t, const char *name);
void test_graph_free(test_graph *t);
/* Prints t's diagnostics and fails the test: `what` is the call that failed. */
void test_graph_fail(test_graph *t, const char *what);

uint32_t test_graph_add(test_graph *t, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a);
uint32_t test_graph_op1(test_graph *t, kiln_op op, uint32_t x);
uint32_t test_graph_op2(test_graph *t, kiln_op op, uint32_t x, uint32_t y);
/* An input "x<i>" or parameter "p<i>" (init as given) holding `data`, which t takes over. */
uint32_t test_graph_input(test_graph *t, kiln_dtype dt, int rank, const int64_t *dims, void *data);
uint32_t test_graph_param(test_graph *t, int rank, const int64_t *dims, kiln_init init, void *data);
/* Output "y<i>". */
void test_graph_output(test_graph *t, uint32_t node);

/* numel × 4 bytes (every test dtype is 4 bytes wide) of node id's type, at least 4. */
size_t test_graph_bytes(const test_graph *t, uint32_t id);

/* What to compile: t's graph, inputs and parameters, for t->target. A no_fuse request
 * also skips simplify, so that every node of the test's graph is compiled as it stands
 * (simplify would fold a node of constants into data, and plan tests index homes by the
 * test's node ids). */
kiln_compile_request test_graph_request(test_graph *t);

/* The reference interpreter's values of every node (inputs and parameters borrowed from
 * t); free with test_graph_values_free. */
void **test_graph_interpret(test_graph *t);
void test_graph_values_free(test_graph *t, void **values);

/* Calls c's entry on t's inputs: copies the parameters into a fresh blob, fills the
 * workspace and every output with a NaN pattern (a value read before it is written, or
 * never written, shows up), and leaves the outputs in outs[o] (kiln_aligned_alloc'd;
 * free with test_graph_outputs_free). Returns the entry's status. With params_out, the
 * parameter blob after the call (its updates applied) is left there for the caller to
 * kiln_aligned_free. */
int test_graph_call(test_graph *t, const kiln_compiled *c, void **outs, void **params_out);
void test_graph_outputs_free(test_graph *t, void **outs);

/* Calls an entry point with n pointer arguments (the tests do not link libffi). */
int test_call_entry(void *fn, void **args, uint32_t n);

#endif
