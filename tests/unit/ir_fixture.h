/* ir_fixture.h — what the test_ir_*.c files share: a fixture holding a fresh graph and
 * diagnostics per test, builders over kiln_graph_add, type and refusal checks, and
 * build_all_ops, one graph holding every row of ops.def (built, printed and parsed
 * back, and verified by the three files). Included by one .c per test executable,
 * so the helpers are static (inline: a file may use only some of them). */
#ifndef KILN_TEST_IR_FIXTURE_H
#define KILN_TEST_IR_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"
#include "test_golden.h"


/* ---- fixture and helpers ------------------------------------------------------------- */

typedef struct fx {
    kiln_graph g;
    kiln_diags d;
} fx;

static inline int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    kiln_graph_init(&f->g, "t");
    kiln_diags_init(&f->d);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fx *f = *state;
    kiln_graph_free(&f->g);
    kiln_diags_free(&f->d);
    free(f);
    return 0;
}

/* SHAPE(2,3) expands to a dims pointer and its rank. */
#define SHAPE(...) ((const int64_t[]){__VA_ARGS__}), (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define SCALAR_SHAPE NULL, 0

static inline kiln_attrs type_attrs(kiln_dtype dt, const int64_t *dims, int rank)
{
    kiln_attrs a;
    memset(&a, 0, sizeof a);
    a.dtype = dt;
    a.rank = rank;
    if (rank) memcpy(a.shape, dims, (size_t)rank * sizeof *dims);
    return a;
}

static inline uint32_t input(fx *f, const char *name, kiln_dtype dt, const int64_t *dims, int rank)
{
    kiln_attrs a = type_attrs(dt, dims, rank);
    a.name = name;
    return kiln_graph_add(&f->g, KILN_OP_INPUT, NULL, 0, &a, name, "inputs", &f->d);
}

static inline uint32_t param(fx *f, const char *name, kiln_init init, double arg, const int64_t *dims, int rank)
{
    kiln_attrs a = type_attrs(KILN_F32, dims, rank);
    a.name = name;
    a.init = init;
    a.init_arg = arg;
    return kiln_graph_add(&f->g, KILN_OP_PARAM, NULL, 0, &a, name, "params", &f->d);
}

static inline uint32_t opn(fx *f, kiln_op op, const uint32_t *in, uint32_t n, const kiln_attrs *a)
{
    return kiln_graph_add(&f->g, op, in, n, a, kiln_op_table[op].name, "layers[0]", &f->d);
}

static inline uint32_t op1(fx *f, kiln_op op, uint32_t x, const kiln_attrs *a) { return opn(f, op, &x, 1, a); }

static inline uint32_t op2(fx *f, kiln_op op, uint32_t x, uint32_t y, const kiln_attrs *a)
{
    uint32_t in[2] = {x, y};
    return opn(f, op, in, 2, a);
}

static inline kiln_attrs axis_attrs(int64_t axis)
{
    kiln_attrs a;
    memset(&a, 0, sizeof a);
    a.axis = axis;
    return a;
}

static inline kiln_attrs scalar_attrs(double s)
{
    kiln_attrs a;
    memset(&a, 0, sizeof a);
    a.scalar = s;
    return a;
}

static inline void check_type(fx *f, uint32_t id, kiln_dtype dt, const int64_t *dims, int rank)
{
    char got[160];
    if (id == KILN_NONE) {
        if (f->d.n) fprintf(stderr, "unexpected error: %s\n", f->d.items[f->d.n - 1].message);
        fail_msg("node was refused");
    }
    const kiln_type *t = &f->g.nodes[id].type;
    kiln_type want = {dt, rank, {0}};
    if (rank) memcpy(want.dims, dims, (size_t)rank * sizeof *dims);
    if (!kiln_type_equal(t, &want)) fail_msg("type %s", kiln_type_str(t, got, sizeof got));
    assert_int_equal(f->d.n, 0);
}

/* The node was refused with exactly one new diagnostic mentioning `what`. */
static inline void check_refused(fx *f, uint32_t id, int diags_before, const char *what)
{
    assert_int_equal(id, KILN_NONE);
    assert_int_equal(f->d.n, diags_before + 1);
    const char *msg = f->d.items[f->d.n - 1].message;
    if (!strstr(msg, what)) fail_msg("message '%s' lacks '%s'", msg, what);
}

/* ---- a graph using every op ------------------------------------------------------------ */

/* Builds one graph that holds every row of ops.def at least once (test_every_row_built
 * checks that), with labels, origins, odd floats and a loss. */
static inline void build_all_ops(fx *f)
{
    uint32_t x = input(f, "x", KILN_F32, SHAPE(2, 3));
    uint32_t y = input(f, "y", KILN_F32, SHAPE(3));
    uint32_t idx = input(f, "idx", KILN_I32, SHAPE(2, 4));
    uint32_t tgt = input(f, "targets", KILN_I32, SHAPE(2));
    uint32_t w = param(f, "fc.weight", KILN_INIT_NORMAL, 0.02, SHAPE(3, 4));
    uint32_t b = param(f, "fc.bias", KILN_INIT_ZEROS, 0, SHAPE(4));
    param(f, "ln.weight", KILN_INIT_ONES, 0, SHAPE(3));
    param(f, "emb", KILN_INIT_UNIFORM, 0.1, SHAPE(5, 3));

    float cv[3] = {0.5f, -1.0f, 0.1f};
    kiln_attrs ca = type_attrs(KILN_F32, SHAPE(3));
    ca.values = cv;
    ca.n_values = 3;
    uint32_t c = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &ca, NULL, NULL, &f->d);
    int32_t iv[1] = {7};
    kiln_attrs cia = type_attrs(KILN_I32, SHAPE(2, 4));
    cia.values = iv;
    cia.n_values = 1;
    uint32_t ci = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &cia, "sevens", NULL, &f->d);
    kiln_attrs ia = type_attrs(KILN_I32, SHAPE(2, 4));
    ia.axis = -1;
    uint32_t io = kiln_graph_add(&f->g, KILN_OP_IOTA, NULL, 0, &ia, "pos", "layers[1]", &f->d);
    op2(f, KILN_OP_ADD, io, ci, NULL);

    static const kiln_op binary[] = {KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_DIV, KILN_OP_MAXIMUM,
                                     KILN_OP_MINIMUM, KILN_OP_POW, KILN_OP_LT, KILN_OP_GT, KILN_OP_EQ};
    for (size_t i = 0; i < sizeof binary / sizeof *binary; i++) op2(f, binary[i], x, y, NULL);
    uint32_t cond = op2(f, KILN_OP_LT, x, c, NULL);
    uint32_t wh[3] = {cond, x, y};
    opn(f, KILN_OP_WHERE, wh, 3, NULL);

    static const kiln_op unary[] = {KILN_OP_NEG, KILN_OP_EXP, KILN_OP_LOG, KILN_OP_SQRT, KILN_OP_RSQRT,
                                    KILN_OP_ABS, KILN_OP_SQUARE, KILN_OP_RECIP, KILN_OP_TANH, KILN_OP_SIGMOID,
                                    KILN_OP_RELU, KILN_OP_SILU, KILN_OP_GELU, KILN_OP_GELU_TANH, KILN_OP_ERF};
    for (size_t i = 0; i < sizeof unary / sizeof *unary; i++) op1(f, unary[i], x, NULL);
    kiln_attrs sa = scalar_attrs(0.1);
    op1(f, KILN_OP_SCALE, x, &sa);
    kiln_attrs da = scalar_attrs(0.25);
    op1(f, KILN_OP_DROPOUT, x, &da);
    kiln_attrs cast = type_attrs(KILN_F32, NULL, 0);
    op1(f, KILN_OP_CAST, idx, &cast);

    kiln_attrs ra = {0};
    ra.n_axes = 1;
    ra.axes[0] = -1;
    op1(f, KILN_OP_SUM, x, &ra);
    ra.n_axes = 2;
    ra.axes[0] = 1;
    ra.axes[1] = 0;
    ra.keepdims = true;
    op1(f, KILN_OP_MEAN, x, &ra);
    ra.n_axes = 1;
    ra.axes[0] = 0;
    ra.keepdims = false;
    op1(f, KILN_OP_MAX, idx, &ra);

    uint32_t h = op2(f, KILN_OP_MATMUL, x, w, NULL);
    kiln_attrs ta = {0};
    ta.transpose_a = true;
    ta.transpose_b = true;
    op2(f, KILN_OP_MATMUL, w, x, &ta);
    uint32_t logits = op2(f, KILN_OP_ADD, h, b, NULL);

    kiln_attrs rs = type_attrs(KILN_F32, SHAPE(-1, 2));
    op1(f, KILN_OP_RESHAPE, x, &rs);
    kiln_attrs pa = {0};
    pa.perm[0] = -1;
    pa.perm[1] = 0;
    op1(f, KILN_OP_TRANSPOSE, x, &pa);
    kiln_attrs sl = {0};
    sl.axis = 1;
    sl.step = -2;
    kiln_slice_normalize(3, false, 0, false, 0, sl.step, &sl.start, &sl.end);
    uint32_t sliced = op1(f, KILN_OP_SLICE, x, &sl);
    kiln_attrs us = type_attrs(KILN_F32, SHAPE(2, 3)); /* the gradient ops autodiff emits */
    us.axis = 1, us.start = sl.start, us.end = sl.end, us.step = sl.step;
    op1(f, KILN_OP_UNSLICE, sliced, &us);
    uint32_t cc[3] = {x, x, x};
    kiln_attrs cca = axis_attrs(0);
    opn(f, KILN_OP_CONCAT, cc, 3, &cca);
    kiln_attrs ba = type_attrs(KILN_F32, SHAPE(4, 2, 3));
    op1(f, KILN_OP_BROADCAST, y, &ba);
    kiln_attrs ga = axis_attrs(0);
    uint32_t rows = op2(f, KILN_OP_GATHER, w, idx, &ga);
    kiln_attrs sc = type_attrs(KILN_F32, SHAPE(3, 4));
    op2(f, KILN_OP_SCATTER_ADD, rows, idx, &sc);
    int32_t one[1] = {1};
    kiln_attrs sa1 = type_attrs(KILN_I32, SHAPE(1));
    sa1.values = one;
    sa1.n_values = 1;
    uint32_t start = kiln_graph_add(&f->g, KILN_OP_CONSTANT, NULL, 0, &sa1, NULL, NULL, &f->d);
    kiln_attrs rb = type_attrs(KILN_F32, SHAPE(1, 4));
    uint32_t us_in[3] = {w, op1(f, KILN_OP_RESHAPE, b, &rb), start};
    opn(f, KILN_OP_UPDATE_SLICE, us_in, 3, &ga);

    kiln_attrs sm = axis_attrs(-1);
    op1(f, KILN_OP_SOFTMAX, x, &sm);
    op1(f, KILN_OP_LOG_SOFTMAX, x, &sm);
    uint32_t ln[3] = {x, y, c};
    kiln_attrs eps = scalar_attrs(1e-5);
    opn(f, KILN_OP_LAYERNORM, ln, 3, &eps);
    uint32_t lng[3] = {x, y, x};
    opn(f, KILN_OP_LAYERNORM_GRAD, lng, 3, &eps);

    uint32_t q = input(f, "q", KILN_F32, SHAPE(2, 2, 4, 8));
    uint32_t k = input(f, "k", KILN_F32, SHAPE(2, 2, 5, 8));
    uint32_t v = input(f, "v", KILN_F32, SHAPE(2, 2, 5, 6));
    uint32_t m = input(f, "mask", KILN_F32, SHAPE(2, 5));
    uint32_t bias = input(f, "bias", KILN_F32, SHAPE(1, 4, 5));
    uint32_t at[5] = {q, k, v, m, bias};
    kiln_attrs aa = scalar_attrs(1.0 / sqrt(8.0));
    aa.causal = true;
    aa.has_mask = true;
    aa.has_bias = true;
    uint32_t att = opn(f, KILN_OP_ATTENTION, at, 5, &aa);
    uint32_t atg[6] = {q, k, v, m, bias, att};
    aa.wrt = KILN_WRT_SCORES;
    opn(f, KILN_OP_ATTENTION_GRAD, atg, 6, &aa);
    uint32_t lse = opn(f, KILN_OP_ATTENTION_LSE, at, 5, &aa);
    uint32_t atgs[8] = {q, k, v, m, bias, att, lse, att}; /* with the forward's o and lse */
    aa.wrt = KILN_WRT_Q;
    opn(f, KILN_OP_ATTENTION_GRAD, atgs, 8, &aa);

    kiln_attrs xe = scalar_attrs(0.1);
    xe.ignore_index = -100;
    uint32_t loss = op2(f, KILN_OP_CROSS_ENTROPY, logits, tgt, &xe);
    uint32_t xeg[3] = {logits, tgt, loss};
    opn(f, KILN_OP_CROSS_ENTROPY_GRAD, xeg, 3, &xe);

    /* a training step's shape: optimizer state and updates of a parameter and a state */
    kiln_attrs sta = type_attrs(KILN_F32, SHAPE(3, 4));
    sta.name = "optim.m.fc.weight";
    uint32_t st = kiln_graph_add(&f->g, KILN_OP_STATE, NULL, 0, &sta, NULL, NULL, &f->d);
    uint32_t st_new = op2(f, KILN_OP_ADD, st, w, NULL);
    kiln_attrs step = scalar_attrs(-0.5);
    kiln_graph_add_update(&f->g, w, op1(f, KILN_OP_SCALE, st_new, &step));
    kiln_graph_add_update(&f->g, st, st_new);

    kiln_graph_add_output(&f->g, "logits", logits);
    kiln_graph_add_output(&f->g, "attn out", att);
    f->g.loss = loss;
    assert_int_equal(f->d.n, 0);
}

#endif
