/* test_profile.c — per-kernel profiling (runtime/profile.c and the marks codegen/entry.c
 * emits with kiln_compile_request.profile, behind `kiln bench --per-kernel`).
 *
 * The marks' bookkeeping on synthetic calls (each mark closes the slot the previous one
 * opened; -1 and out-of-range slots time nothing; reset and stop); then a small graph —
 * a GEMM with a bias epilogue, a softmax and an elementwise tail, several kernels —
 * compiled with and without profiling: the profiled entry writes bit-identical outputs,
 * closes every kernel slot and the copies slot exactly once per call, and reports the
 * function each kernel calls.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen.h"
#include "kiln/runtime.h"
#include "passes.h"

static void test_marks(void **state)
{
    (void)state;
    assert_null(kiln_profile_ns());
    kiln_profile_mark(0); /* before start: nothing to record into, and no crash */
    assert_int_equal(kiln_profile_start(3), 0);
    const int64_t *ns = kiln_profile_ns(), *calls = kiln_profile_calls();
    assert_non_null(ns);
    assert_non_null(calls);
    for (int run = 0; run < 2; run++) {
        kiln_profile_mark(0);
        struct timespec pause = {0, 2000000}; /* 2 ms in slot 0 */
        nanosleep(&pause, NULL);
        kiln_profile_mark(2);
        kiln_profile_mark(7); /* out of range: closes slot 2, opens nothing timed */
        kiln_profile_mark(-1);
    }
    assert_int_equal(calls[0], 2);
    assert_int_equal(calls[1], 0);
    assert_int_equal(calls[2], 2);
    assert_true(ns[0] >= 4000000);
    assert_true(ns[2] < ns[0]);
    kiln_profile_reset();
    assert_int_equal(calls[0], 0);
    assert_int_equal(ns[0], 0);
    kiln_profile_mark(1);
    kiln_profile_mark(-1);
    assert_int_equal(calls[1], 1);
    kiln_profile_stop();
    assert_null(kiln_profile_ns());
    assert_null(kiln_profile_calls());
}

enum { M = 48, K = 40, N = 72 };

static uint32_t add(kiln_graph *g, kiln_diags *d, kiln_op op, uint32_t a, uint32_t b, const kiln_attrs *at)
{
    uint32_t in[2] = {a, b};
    uint32_t id = kiln_graph_add(g, op, in, b == KILN_NONE ? (a == KILN_NONE ? 0 : 1) : 2, at, NULL, "test", d);
    assert_int_not_equal(id, KILN_NONE);
    return id;
}

static uint32_t source(kiln_graph *g, kiln_diags *d, kiln_op op, const char *name, int rank, int64_t d0, int64_t d1)
{
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.rank = rank;
    a.shape[0] = rank > 1 ? d0 : d1;
    a.shape[1] = d1;
    a.name = name;
    if (op == KILN_OP_PARAM) a.init = KILN_INIT_NORMAL, a.init_arg = 1;
    return add(g, d, op, KILN_NONE, KILN_NONE, &a);
}

/* Compiles y = exp(softmax(h)) · h with h = x·W + b, runs it `runs` times; returns the
 * output (malloc'd). */
static float *run_graph(kiln_graph *g, uint32_t x, uint32_t w, uint32_t b, bool profile, int runs, kiln_compiled *c)
{
    kiln_diags d;
    kiln_diags_init(&d);
    uint32_t inputs[1] = {x}, params[2] = {w, b};
    kiln_compile_request req = {.g = g, .inputs = inputs, .n_inputs = 1, .params = params, .n_params = 2,
                                .name = "p", .profile = profile};
    if (!kiln_compile_graph(&req, c, &d)) {
        for (int i = 0; i < d.n; i++) print_error("%s\n", d.items[i].message);
        fail_msg("compile failed");
    }
    kiln_diags_free(&d);
    float *params_blob = kiln_aligned_alloc((size_t)c->params_bytes);
    void *ws = kiln_aligned_alloc((size_t)c->workspace_bytes);
    float *xin = malloc(sizeof(float) * M * K), *y = malloc(sizeof(float) * M * N);
    assert_true(params_blob && ws && xin && y);
    for (int i = 0; i < M * K; i++) xin[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    float *pw = (float *)((char *)params_blob + c->param_offsets[0]);
    float *pb = (float *)((char *)params_blob + c->param_offsets[1]);
    for (int i = 0; i < K * N; i++) pw[i] = (float)((i * 53 % 97) - 48) / 97.0f;
    for (int i = 0; i < N; i++) pb[i] = (float)i / N;
    if (profile) assert_int_equal(kiln_profile_start((int)c->sched.n_kernels + 1), 0);
    for (int r = 0; r < runs; r++)
        assert_int_equal(((int (*)(void *, void *, void *, void *))c->entry)(params_blob, ws, xin, y), KILN_RC_OK);
    kiln_aligned_free(params_blob);
    kiln_aligned_free(ws);
    free(xin);
    return y;
}

static void test_profiled_entry(void **state)
{
    (void)state;
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, "p");
    kiln_diags_init(&d);
    uint32_t x = source(&g, &d, KILN_OP_INPUT, "x", 2, M, K);
    uint32_t w = source(&g, &d, KILN_OP_PARAM, "w", 2, K, N);
    uint32_t b = source(&g, &d, KILN_OP_PARAM, "b", 1, 0, N);
    uint32_t h = add(&g, &d, KILN_OP_ADD, add(&g, &d, KILN_OP_MATMUL, x, w, NULL), b, NULL);
    kiln_attrs ax = {0};
    ax.axis = 1;
    uint32_t s = add(&g, &d, KILN_OP_SOFTMAX, h, KILN_NONE, &ax);
    uint32_t y = add(&g, &d, KILN_OP_MUL, add(&g, &d, KILN_OP_EXP, s, KILN_NONE, NULL), h, NULL);
    kiln_graph_add_output(&g, "y", y);
    kiln_diags_free(&d);

    kiln_compiled plain, prof;
    float *want = run_graph(&g, x, w, b, false, 1, &plain);
    enum { RUNS = 3 };
    float *got = run_graph(&g, x, w, b, true, RUNS, &prof);
    assert_memory_equal(got, want, sizeof(float) * M * N);
    uint32_t nk = prof.sched.n_kernels;
    assert_int_equal((int)nk, prof.n_kernels);
    assert_int_equal(prof.n_kernels, plain.n_kernels);
    assert_true(nk >= 2);
    assert_null(plain.kernel_fns);
    const int64_t *calls = kiln_profile_calls(), *ns = kiln_profile_ns();
    for (uint32_t k = 0; k <= nk; k++) {
        assert_int_equal(calls[k], RUNS);
        assert_true(ns[k] >= 0);
    }
    for (uint32_t k = 0; k < nk; k++) {
        assert_non_null(prof.kernel_fns[k]);
        assert_true(prof.kernel_fns[k][0] == 'k'); /* k<node>_<what>, lower.c's names */
        assert_true(ns[k] > 0);
    }
    kiln_profile_stop();
    free(want);
    free(got);
    kiln_compiled_free(&plain);
    kiln_compiled_free(&prof);
    kiln_graph_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marks),
        cmocka_unit_test(test_profiled_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
