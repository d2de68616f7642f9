/* interp_fixture.h — what the test_interp_*.c files share: a fixture holding one graph,
 * its diagnostics and its value slots, builders for inputs and nodes, and checks of
 * results against hand-computed values (a few f32 ulps, or exact; NaN matches NaN).
 * Included by one .c per test executable, so the helpers are static (inline: a file
 * may use only some of them). */
#ifndef KILN_TEST_INTERP_FIXTURE_H
#define KILN_TEST_INTERP_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"


/* ---- fixture and helpers ------------------------------------------------------------- */

enum { MAX_NODES = 64 };

typedef struct fix {
    kiln_graph g;
    kiln_diags d;
    void *v[MAX_NODES]; /* zeroed: the interpreter expects empty slots */
} fix;

static inline int setup(void **state)
{
    fix *f = calloc(1, sizeof *f);
    if (!f) return -1;
    kiln_graph_init(&f->g, "test");
    kiln_diags_init(&f->d);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fix *f = *state;
    kiln_interp_free_values(&f->g, f->v);
    kiln_graph_free(&f->g);
    kiln_diags_free(&f->d);
    free(f);
    return 0;
}

#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}
#define INS(...) (uint32_t)(sizeof((uint32_t[]){__VA_ARGS__}) / sizeof(uint32_t)), (const uint32_t[]){__VA_ARGS__}

static inline void set_shape(kiln_attrs *a, kiln_dtype dt, int rank, const int64_t *dims)
{
    a->dtype = dt;
    a->rank = rank;
    for (int i = 0; i < rank; i++) a->shape[i] = dims[i];
}

static inline uint32_t checked(fix *f, uint32_t id)
{
    if (id == KILN_NONE) kiln_diags_print(&f->d, stderr);
    assert_int_not_equal(id, KILN_NONE);
    assert_true(id < MAX_NODES);
    return id;
}

/* A graph input whose buffer is `data` (owned by the test). */
static inline uint32_t input(fix *f, kiln_dtype dt, int rank, const int64_t *dims, const void *data)
{
    kiln_attrs a = {0};
    set_shape(&a, dt, rank, dims);
    a.name = "x";
    uint32_t id = checked(f, kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &a, "x", "inputs.x", &f->d));
    f->v[id] = (void *)data;
    return id;
}
#define IN_F32(f, data, ...) input(f, KILN_F32, SHAPE(__VA_ARGS__), data)
#define IN_I32(f, data, ...) input(f, KILN_I32, SHAPE(__VA_ARGS__), data)

static inline uint32_t node(fix *f, kiln_op op, const kiln_attrs *a, uint32_t n, const uint32_t *in)
{
    return checked(f, kiln_graph_add(&f->g, op, in, n, a, "y", "layers[0]", &f->d));
}
/* An op without attributes on the given inputs. */
#define OP(f, op, ...) node(f, op, NULL, INS(__VA_ARGS__))

static inline void run_ok(fix *f, bool training, uint64_t seed)
{
    bool ok = kiln_interp_run(&f->g, f->v, training, seed, &f->d);
    if (!ok) kiln_diags_print(&f->d, stderr);
    assert_true(ok);
    assert_int_equal(f->d.n, 0);
}
static inline void run(fix *f) { run_ok(f, false, 0); }

static inline void expect_shape(fix *f, uint32_t id, kiln_dtype dt, int rank, const int64_t *dims)
{
    const kiln_type *t = &f->g.nodes[id].type;
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->rank, rank);
    for (int i = 0; i < rank; i++) assert_int_equal(t->dims[i], dims[i]);
}

/* Results within rtol (relative, plus a tiny absolute floor); NaN must match NaN. */
static inline void expect_f32_tol(fix *f, uint32_t id, const float *want, int64_t n, double rtol)
{
    assert_int_equal(f->g.nodes[id].type.dtype, KILN_F32);
    assert_int_equal(kiln_type_numel(&f->g.nodes[id].type), n);
    const float *got = f->v[id];
    for (int64_t i = 0; i < n; i++) {
        bool ok;
        if (isnan(want[i])) ok = isnan(got[i]);
        else if (isinf(want[i])) ok = got[i] == want[i];
        else ok = fabs((double)got[i] - want[i]) <= rtol * fabs((double)want[i]) + 1e-30;
        if (!ok) fail_msg("element %lld: got %.9g, want %.9g", (long long)i, got[i], want[i]);
    }
}
/* Default tolerance: a few f32 ulps (the interpreter rounds float64 math once). */
#define EXPECT_F32(f, id, ...)                                                                 \
    do {                                                                                       \
        const float want_[] = __VA_ARGS__;                                                     \
        expect_f32_tol(f, id, want_, (int64_t)(sizeof want_ / sizeof want_[0]), 4e-7);        \
    } while (0)
#define EXPECT_F32_EXACT(f, id, ...)                                                           \
    do {                                                                                       \
        const float want_[] = __VA_ARGS__;                                                     \
        expect_f32_tol(f, id, want_, (int64_t)(sizeof want_ / sizeof want_[0]), 0);           \
    } while (0)

static inline void expect_i32(fix *f, uint32_t id, const int32_t *want, int64_t n)
{
    assert_int_equal(f->g.nodes[id].type.dtype, KILN_I32);
    assert_int_equal(kiln_type_numel(&f->g.nodes[id].type), n);
    const int32_t *got = f->v[id];
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("element %lld: got %d, want %d", (long long)i, got[i], want[i]);
}
#define EXPECT_I32(f, id, ...)                                                                 \
    do {                                                                                       \
        const int32_t want_[] = __VA_ARGS__;                                                   \
        expect_i32(f, id, want_, (int64_t)(sizeof want_ / sizeof want_[0]));                  \
    } while (0)

/* The run fails with one diagnostic whose text contains every given fragment. */
static inline void expect_run_error(fix *f, const char *frag1, const char *frag2)
{
    bool ok = kiln_interp_run(&f->g, f->v, false, 0, &f->d);
    assert_false(ok);
    assert_int_equal(f->d.n, 1);
    const char *msg = f->d.items[0].message;
    if (frag1 && !strstr(msg, frag1)) fail_msg("'%s' lacks '%s'", msg, frag1);
    if (frag2 && !strstr(msg, frag2)) fail_msg("'%s' lacks '%s'", msg, frag2);
}

/* The six inputs most unary tests use. */
static const float UX[6] = {-3.0f, -0.5f, 0.0f, 0.25f, 1.0f, 2.5f};
static const float POS[6] = {0.01f, 0.25f, 1.0f, 2.0f, 9.0f, 100.0f};

static inline uint32_t unary(fix *f, kiln_op op, const float *x)
{
    return OP(f, op, IN_F32(f, x, 6));
}

/* Builders of nodes with attributes, used by more than one file. */
static inline uint32_t reduce(fix *f, kiln_op op, uint32_t x, int n_axes, const int64_t *axes, bool keepdims)
{
    kiln_attrs a = {0};
    a.n_axes = n_axes;
    for (int i = 0; i < n_axes; i++) a.axes[i] = axes[i];
    a.keepdims = keepdims;
    return node(f, op, &a, INS(x));
}

static inline uint32_t matmul(fix *f, uint32_t a, uint32_t b, bool ta, bool tb)
{
    kiln_attrs at = {0};
    at.transpose_a = ta;
    at.transpose_b = tb;
    return node(f, KILN_OP_MATMUL, &at, INS(a, b));
}

static inline uint32_t slice(fix *f, uint32_t x, int64_t axis, int64_t start, int64_t end, int64_t step)
{
    kiln_attrs a = {0};
    a.axis = axis;
    a.start = start;
    a.end = end;
    a.step = step;
    return node(f, KILN_OP_SLICE, &a, INS(x));
}

static inline uint32_t gather(fix *f, uint32_t table, uint32_t idx, int64_t axis)
{
    kiln_attrs a = {0};
    a.axis = axis;
    return node(f, KILN_OP_GATHER, &a, INS(table, idx));
}

#endif
