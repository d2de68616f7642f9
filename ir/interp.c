/* interp.c — the reference interpreter: the oracle every compiled kernel is tested
 * against, and what `kiln run --interp` runs.
 *
 * Design:
 * - Nodes run in graph order (the graph is topologically sorted). The driver allocates
 *   each result with malloc, then calls the op's function from `impl`, an array indexed
 *   by kiln_op and filled with designated initialisers; a missing row is caught by a
 *   check at the start of every run. INPUT, PARAM and STATE slots belong to the caller;
 *   the graph's updates are applied after the last node.
 * - Elementwise ops share one runner per arity; the table row supplies their scalar
 *   kernels: f32 math is done in double and rounded once to f32 (the conformance data
 *   are float64 PyTorch results stored as f32; for + - * / this double rounding equals
 *   the correctly rounded f32 result), i32 math wraps like two's complement hardware
 *   through uint32 so that overflow is never undefined behaviour.
 * - Every access to a broadcast, transposed, sliced or batched operand goes through one
 *   helper: a stride per result dim (0 where the operand broadcasts) and an odometer
 *   over the result's multi-index. Offsets are integers; no pointer arithmetic is done
 *   on buffers that may be NULL (caller-owned empty tensors).
 * - Plain loops everywhere: clear before fast. Sums accumulate in double.
 * - Run-time errors (a gather index out of range, out of memory) are diagnostics at the
 *   node's origin naming its label; nothing here exits or aborts on user data.
 *
 * The composites (softmax, log_softmax, layernorm, attention, cross_entropy) and dropout
 * live in interp_nn.c, the ops autodiff emits in interp_grad.c; interp_impl.h is what
 * the files share.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interp_impl.h"

/* ---- shared helpers ----------------------------------------------------------------- */

bool kiln_interp_fail(const interp_call *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *op = kiln_op_table[c->node->op].name;
    if (c->node->label)
        kiln_diags_add(c->diags, NULL, 0, 0, c->node->origin, "%s '%s' (node %u): %s", op, c->node->label, c->id,
                       msg);
    else
        kiln_diags_add(c->diags, NULL, 0, 0, c->node->origin, "%s (node %u): %s", op, c->id, msg);
    return false;
}

void *kiln_interp_alloc(const interp_call *c, size_t bytes, const char *what)
{
    void *p = malloc(bytes ? bytes : 1); /* malloc(0) may return NULL: never ask for it */
    if (!p) kiln_interp_fail(c, "out of memory allocating %zu bytes for the %s", bytes, what);
    return p;
}

void kiln_interp_bcast_strides(const kiln_type *t, int rank, int64_t *stride)
{
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int k = d - (rank - t->rank); /* the dim of t aligned with result dim d */
        if (k < 0 || t->dims[k] == 1) {
            stride[d] = 0;
        } else {
            stride[d] = s;
        }
        if (k >= 0) s *= t->dims[k];
    }
}

int64_t kiln_interp_offset(const int64_t *idx, const int64_t *stride, int rank)
{
    int64_t off = 0;
    for (int d = 0; d < rank; d++) off += idx[d] * stride[d];
    return off;
}

void kiln_interp_next_index(int64_t *idx, const int64_t *dims, int rank)
{
    for (int d = rank - 1; d >= 0; d--) {
        if (++idx[d] < dims[d]) return;
        idx[d] = 0;
    }
}

int64_t kiln_interp_span(const int64_t *dims, int from, int to)
{
    int64_t n = 1;
    for (int d = from; d < to; d++) n *= dims[d];
    return n;
}

/* Row-major strides of a type (not broadcast). */
static void row_major_strides(const kiln_type *t, int64_t *stride)
{
    int64_t s = 1;
    for (int d = t->rank - 1; d >= 0; d--) {
        stride[d] = s;
        s *= t->dims[d];
    }
}

/* Copies one 4-byte element whatever its dtype (memcpy keeps this free of aliasing
 * questions and preserves NaN payloads and -0). */
static void copy_elem(void *dst, int64_t di, const void *src, int64_t si)
{
    memcpy((char *)dst + di * KILN_ELEM_BYTES, (const char *)src + si * KILN_ELEM_BYTES, KILN_ELEM_BYTES);
}

/* Copies n elements from src+si to dst+di; n may be 0 with src NULL. */
static void copy_elems(void *dst, int64_t di, const void *src, int64_t si, int64_t n)
{
    if (n > 0)
        memcpy((char *)dst + di * KILN_ELEM_BYTES, (const char *)src + si * KILN_ELEM_BYTES,
               (size_t)n * KILN_ELEM_BYTES);
}

/* ---- scalar kernels of the elementwise ops ------------------------------------------ */

/* f32 ops take and return doubles: the caller widens the f32 operands and rounds the
 * result to f32 once. */
static double f_add(double x, double y) { return x + y; }
static double f_sub(double x, double y) { return x - y; }
static double f_mul(double x, double y) { return x * y; }
static double f_div(double x, double y) { return x / y; }
/* NaN propagates, as in torch.maximum / numpy.maximum */
static double f_maximum(double x, double y) { return isnan(x) ? x : isnan(y) ? y : x > y ? x : y; }
static double f_minimum(double x, double y) { return isnan(x) ? x : isnan(y) ? y : x < y ? x : y; }
/* C's pow is numpy's float power: pow(-8, 1/3) is NaN, pow(0, -1) is inf, pow(x, 0) is 1. */
static double f_pow(double x, double y) { return pow(x, y); }

static double f_neg(double x) { return -x; }
static double f_exp(double x) { return exp(x); }
static double f_log(double x) { return log(x); }
static double f_sqrt(double x) { return sqrt(x); }
static double f_rsqrt(double x) { return 1.0 / sqrt(x); }
static double f_abs(double x) { return fabs(x); }
static double f_square(double x) { return x * x; }
static double f_recip(double x) { return 1.0 / x; }
static double f_tanh(double x) { return tanh(x); }
/* Stable for large |x|: exp is only taken of a non-positive number. */
static double f_sigmoid(double x)
{
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}
static double f_relu(double x) { return x < 0 ? 0.0 : x; } /* NaN passes through */
static double f_silu(double x) { return x * f_sigmoid(x); }
static double f_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double f_erf(double x) { return erf(x); }
static double f_gelu_tanh(double x)
{
    const double k = sqrt(2.0 / 3.14159265358979323846); /* √(2/π) */
    return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
}

/* i32: wrap modulo 2^32 by computing in uint32 (signed overflow would be UB). */
static int32_t i_add(int32_t x, int32_t y) { return (int32_t)((uint32_t)x + (uint32_t)y); }
static int32_t i_sub(int32_t x, int32_t y) { return (int32_t)((uint32_t)x - (uint32_t)y); }
static int32_t i_mul(int32_t x, int32_t y) { return (int32_t)((uint32_t)x * (uint32_t)y); }
static int32_t i_maximum(int32_t x, int32_t y) { return x > y ? x : y; }
static int32_t i_minimum(int32_t x, int32_t y) { return x < y ? x : y; }
static int32_t i_neg(int32_t x) { return (int32_t)(0u - (uint32_t)x); } /* -INT32_MIN wraps to itself */
static int32_t i_abs(int32_t x) { return x < 0 ? i_neg(x) : x; }

/* Comparisons see both dtypes as doubles, which hold every f32 and i32 exactly. */
static bool c_lt(double x, double y) { return x < y; }
static bool c_gt(double x, double y) { return x > y; }
static bool c_eq(double x, double y) { return x == y; }

/* f32 → i32 truncates toward zero; NaN gives 0 and out-of-range values saturate (the
 * semantics of LLVM's llvm.fptosi.sat, so compiled code can match exactly). */
static int32_t f32_to_i32(float x)
{
    double d = x;
    if (isnan(d)) return 0;
    if (d >= 2147483648.0) return INT32_MAX;
    if (d <= -2147483649.0) return INT32_MIN;
    return (int32_t)d;
}

/* ---- the op table -------------------------------------------------------------------- */

typedef bool (*interp_fn)(const interp_call *c);

typedef struct op_impl {
    interp_fn run;
    bool caller_owned;                   /* INPUT, PARAM, STATE: the caller supplies the buffer */
    /* scalar kernels, used by the elementwise runners */
    double (*f1)(double x);
    double (*f2)(double x, double y);
    int32_t (*i1)(int32_t x);
    int32_t (*i2)(int32_t x, int32_t y);
    bool (*cmp)(double x, double y);
} op_impl;

static const op_impl impl[KILN_OP_COUNT];

/* ---- sources ------------------------------------------------------------------------- */

/* The driver has already checked the caller's buffer. */
static bool run_caller_buffer(const interp_call *c) { return true; }

static bool run_constant(const interp_call *c)
{
    const kiln_attrs *a = &c->node->attrs;
    int64_t n = kiln_type_numel(&c->node->type);
    if (a->n_values == 1) {
        for (int64_t i = 0; i < n; i++) copy_elem(c->out, i, a->values, 0);
    } else {
        KILN_ASSERT(a->n_values == n);
        copy_elems(c->out, 0, a->values, 0, n);
    }
    return true;
}

static bool run_iota(const interp_call *c)
{
    const kiln_type *t = &c->node->type;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = kiln_interp_span(t->dims, 0, ax), n = t->dims[ax];
    int64_t inner = kiln_interp_span(t->dims, ax + 1, t->rank);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t at = (o * n + j) * inner + i;
                if (t->dtype == KILN_I32) ((int32_t *)c->out)[at] = (int32_t)j;
                else ((float *)c->out)[at] = (float)j;
            }
    return true;
}

/* ---- elementwise ---------------------------------------------------------------------- */

static bool run_unary(const interp_call *c)
{
    const op_impl *k = &impl[c->node->op];
    const void *x = interp_in(c, 0);
    int64_t n = kiln_type_numel(&c->node->type);
    if (c->node->type.dtype == KILN_I32) {
        KILN_ASSERT(k->i1 != NULL);
        for (int64_t i = 0; i < n; i++) ((int32_t *)c->out)[i] = k->i1(((const int32_t *)x)[i]);
    } else {
        KILN_ASSERT(k->f1 != NULL);
        for (int64_t i = 0; i < n; i++) ((float *)c->out)[i] = (float)k->f1(((const float *)x)[i]);
    }
    return true;
}

static bool run_scale(const interp_call *c)
{
    const float *x = interp_in(c, 0);
    double by = c->node->attrs.scalar;
    int64_t n = kiln_type_numel(&c->node->type);
    for (int64_t i = 0; i < n; i++) ((float *)c->out)[i] = (float)(x[i] * by);
    return true;
}

static bool run_cast(const interp_call *c)
{
    const void *x = interp_in(c, 0);
    kiln_dtype from = interp_in_type(c, 0)->dtype, to = c->node->type.dtype;
    int64_t n = kiln_type_numel(&c->node->type);
    if (from == to) {
        copy_elems(c->out, 0, x, 0, n);
    } else if (to == KILN_I32) {
        for (int64_t i = 0; i < n; i++) ((int32_t *)c->out)[i] = f32_to_i32(((const float *)x)[i]);
    } else {
        for (int64_t i = 0; i < n; i++) ((float *)c->out)[i] = (float)((const int32_t *)x)[i];
    }
    return true;
}

/* Binary ops with numpy broadcasting: arithmetic (f32 or i32) and comparisons (f32
 * result for either dtype). */
static bool run_binary(const interp_call *c)
{
    const op_impl *k = &impl[c->node->op];
    const kiln_type *ot = &c->node->type;
    const kiln_type *at = interp_in_type(c, 0), *bt = interp_in_type(c, 1);
    const void *a = interp_in(c, 0), *b = interp_in(c, 1);
    int r = ot->rank;
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    kiln_interp_bcast_strides(at, r, sa);
    kiln_interp_bcast_strides(bt, r, sb);
    int64_t n = kiln_type_numel(ot);
    for (int64_t i = 0; i < n; i++) {
        int64_t ia = kiln_interp_offset(idx, sa, r), ib = kiln_interp_offset(idx, sb, r);
        if (k->cmp) {
            bool v = k->cmp(interp_load(a, at->dtype, ia), interp_load(b, bt->dtype, ib));
            ((float *)c->out)[i] = v ? 1.0f : 0.0f;
        } else if (at->dtype == KILN_I32) {
            KILN_ASSERT(k->i2 != NULL);
            ((int32_t *)c->out)[i] = k->i2(((const int32_t *)a)[ia], ((const int32_t *)b)[ib]);
        } else {
            KILN_ASSERT(k->f2 != NULL);
            ((float *)c->out)[i] = (float)k->f2(((const float *)a)[ia], ((const float *)b)[ib]);
        }
        kiln_interp_next_index(idx, ot->dims, r);
    }
    return true;
}

/* where(cond, a, b) with three-way broadcasting; cond of either dtype, != 0 is true
 * (so NaN counts as true, as in numpy). */
static bool run_where(const interp_call *c)
{
    const kiln_type *ot = &c->node->type;
    int r = ot->rank;
    int64_t s[3][KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    for (uint32_t k = 0; k < 3; k++) kiln_interp_bcast_strides(interp_in_type(c, k), r, s[k]);
    const void *cond = interp_in(c, 0), *a = interp_in(c, 1), *b = interp_in(c, 2);
    kiln_dtype cdt = interp_in_type(c, 0)->dtype;
    int64_t n = kiln_type_numel(ot);
    for (int64_t i = 0; i < n; i++) {
        bool take_a = interp_load(cond, cdt, kiln_interp_offset(idx, s[0], r)) != 0;
        if (take_a) copy_elem(c->out, i, a, kiln_interp_offset(idx, s[1], r));
        else copy_elem(c->out, i, b, kiln_interp_offset(idx, s[2], r));
        kiln_interp_next_index(idx, ot->dims, r);
    }
    return true;
}

/* ---- reductions ------------------------------------------------------------------------ */

/* Result element by result element: an odometer over the kept dims picks the first
 * input element, a second odometer over the reduced dims visits the ones it combines.
 * The result's row-major order is the kept dims' order (keepdims only adds 1s). */
static bool run_reduce(const interp_call *c)
{
    const kiln_type *xt = interp_in_type(c, 0);
    const kiln_attrs *a = &c->node->attrs;
    const void *x = interp_in(c, 0);
    kiln_op op = c->node->op;

    bool reduced[KILN_MAX_RANK] = {0};
    for (int i = 0; i < a->n_axes; i++) reduced[a->axes[i]] = true;
    int64_t stride[KILN_MAX_RANK];
    row_major_strides(xt, stride);
    int64_t kdims[KILN_MAX_RANK], kstride[KILN_MAX_RANK], rdims[KILN_MAX_RANK], rstride[KILN_MAX_RANK];
    int nk = 0, nr = 0;
    for (int d = 0; d < xt->rank; d++) {
        if (reduced[d]) {
            rdims[nr] = xt->dims[d];
            rstride[nr++] = stride[d];
        } else {
            kdims[nk] = xt->dims[d];
            kstride[nk++] = stride[d];
        }
    }
    int64_t n_out = kiln_interp_span(kdims, 0, nk), n_red = kiln_interp_span(rdims, 0, nr);
    int64_t kidx[KILN_MAX_RANK] = {0};
    for (int64_t o = 0; o < n_out; o++) {
        int64_t base = kiln_interp_offset(kidx, kstride, nk);
        int64_t ridx[KILN_MAX_RANK] = {0};
        if (xt->dtype == KILN_I32) { /* sum or max: the shape rule makes mean f32-only */
            const int32_t *xi = x;
            uint64_t sum = 0; /* wraps mod 2^64, then truncated mod 2^32: no UB */
            int32_t max = INT32_MIN;
            for (int64_t j = 0; j < n_red; j++) {
                int32_t v = xi[base + kiln_interp_offset(ridx, rstride, nr)];
                sum += (uint64_t)(int64_t)v;
                if (j == 0 || v > max) max = v;
                kiln_interp_next_index(ridx, rdims, nr);
            }
            ((int32_t *)c->out)[o] = op == KILN_OP_MAX ? max : (int32_t)(uint32_t)sum;
        } else {
            const float *xf = x;
            double sum = 0, max = -INFINITY;
            for (int64_t j = 0; j < n_red; j++) {
                double v = xf[base + kiln_interp_offset(ridx, rstride, nr)];
                sum += v;
                if (!isnan(max) && (isnan(v) || v > max)) max = v; /* the first NaN sticks */
                kiln_interp_next_index(ridx, rdims, nr);
            }
            double r = op == KILN_OP_SUM ? sum : op == KILN_OP_MEAN ? sum / (double)n_red : max;
            ((float *)c->out)[o] = (float)r; /* mean over nothing is 0/0 = NaN, as numpy */
        }
        kiln_interp_next_index(kidx, kdims, nk);
    }
    return true;
}

/* ---- matmul ---------------------------------------------------------------------------- */

/* C[..., i, j] = Σ_k A[..., i, k] · B[..., k, j] over broadcast batch dims; A is stored
 * (K, M) when transpose_a and B (N, K) when transpose_b. */
static bool run_matmul(const interp_call *c)
{
    const kiln_type *ot = &c->node->type, *at = interp_in_type(c, 0), *bt = interp_in_type(c, 1);
    const float *a = interp_in(c, 0), *b = interp_in(c, 1);
    float *out = c->out;
    bool ta = c->node->attrs.transpose_a, tb = c->node->attrs.transpose_b;
    int br = ot->rank - 2; /* batch rank */
    int64_t M = ot->dims[br], N = ot->dims[br + 1];
    int64_t K = ta ? at->dims[at->rank - 2] : at->dims[at->rank - 1];

    kiln_type abatch = *at, bbatch = *bt;
    abatch.rank -= 2;
    bbatch.rank -= 2;
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    kiln_interp_bcast_strides(&abatch, br, sa);
    kiln_interp_bcast_strides(&bbatch, br, sb);
    int64_t amat = M * K, bmat = K * N; /* elements per matrix */
    int64_t n_batch = kiln_interp_span(ot->dims, 0, br);

    for (int64_t bi = 0; bi < n_batch; bi++) {
        int64_t a0 = kiln_interp_offset(idx, sa, br) * amat, b0 = kiln_interp_offset(idx, sb, br) * bmat;
        int64_t c0 = bi * M * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    double x = a[a0 + (ta ? k * M + i : i * K + k)];
                    double y = b[b0 + (tb ? j * K + k : k * N + j)];
                    s += x * y;
                }
                out[c0 + i * N + j] = (float)s;
            }
        kiln_interp_next_index(idx, ot->dims, br);
    }
    return true;
}

/* ---- layout ---------------------------------------------------------------------------- */

static bool run_reshape(const interp_call *c)
{
    copy_elems(c->out, 0, interp_in(c, 0), 0, kiln_type_numel(&c->node->type));
    return true;
}

/* Copies every result element from the input offset given by `stride` (per result dim)
 * plus `base`: transpose, slice and broadcast are this loop with different strides. */
static void gather_strided(const interp_call *c, const int64_t *stride, int64_t base)
{
    const kiln_type *ot = &c->node->type;
    const void *x = interp_in(c, 0);
    int64_t idx[KILN_MAX_RANK] = {0};
    int64_t n = kiln_type_numel(ot);
    for (int64_t i = 0; i < n; i++) {
        copy_elem(c->out, i, x, base + kiln_interp_offset(idx, stride, ot->rank));
        kiln_interp_next_index(idx, ot->dims, ot->rank);
    }
}

static bool run_transpose(const interp_call *c)
{
    int64_t in_stride[KILN_MAX_RANK], stride[KILN_MAX_RANK];
    row_major_strides(interp_in_type(c, 0), in_stride);
    for (int d = 0; d < c->node->type.rank; d++) stride[d] = in_stride[c->node->attrs.perm[d]];
    gather_strided(c, stride, 0);
    return true;
}

/* IR slices are normalised (see kiln_slice_normalize): element i along the axis is
 * start + i·step, always inside the input. */
static bool run_slice(const interp_call *c)
{
    const kiln_attrs *a = &c->node->attrs;
    int64_t stride[KILN_MAX_RANK];
    row_major_strides(interp_in_type(c, 0), stride);
    int64_t base = a->start * stride[a->axis];
    /* With one element (or none) the step is never used, and a huge step times the
     * stride could overflow; with more, (count-1)·step stays inside the dim. */
    if (c->node->type.dims[a->axis] > 1) stride[a->axis] *= a->step;
    else stride[a->axis] = 0;
    gather_strided(c, stride, base); /* base is never used when the result is empty */
    return true;
}

static bool run_broadcast(const interp_call *c)
{
    int64_t stride[KILN_MAX_RANK];
    kiln_interp_bcast_strides(interp_in_type(c, 0), c->node->type.rank, stride);
    gather_strided(c, stride, 0);
    return true;
}

/* Each input contributes a block of dims[axis]·inner elements to every outer row. */
static bool run_concat(const interp_call *c)
{
    const kiln_type *ot = &c->node->type;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = kiln_interp_span(ot->dims, 0, ax), inner = kiln_interp_span(ot->dims, ax + 1, ot->rank);
    int64_t total = ot->dims[ax], pos = 0;
    for (uint32_t k = 0; k < c->node->n_in; k++) {
        int64_t len = interp_in_type(c, k)->dims[ax];
        for (int64_t o = 0; o < outer; o++)
            copy_elems(c->out, (o * total + pos) * inner, interp_in(c, k), o * len * inner, len * inner);
        pos += len;
    }
    return true;
}

/* numpy.take: out[o, j..., i] = table[o, idx[j...], i]. Every index is checked before
 * anything is read, so a bad one is reported even when the result is empty. */
static bool run_gather(const interp_call *c)
{
    const kiln_type *tt = interp_in_type(c, 0), *it = interp_in_type(c, 1);
    const void *table = interp_in(c, 0);
    const int32_t *ids = interp_in(c, 1);
    int ax = (int)c->node->attrs.axis;
    int64_t outer = kiln_interp_span(tt->dims, 0, ax), n = tt->dims[ax];
    int64_t inner = kiln_interp_span(tt->dims, ax + 1, tt->rank);
    int64_t n_ids = kiln_type_numel(it);
    for (int64_t j = 0; j < n_ids; j++) {
        if (ids[j] < 0 || ids[j] >= n) {
            char buf[160];
            return kiln_interp_fail(c, "index %d (element %lld of the indices) is out of range [0, %lld) for axis %d of %s",
                                    (int)ids[j], (long long)j, (long long)n, ax, kiln_type_str(tt, buf, sizeof buf));
        }
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < n_ids; j++)
            copy_elems(c->out, (o * n_ids + j) * inner, table, (o * n + ids[j]) * inner, inner);
    return true;
}

/* update_slice: out = x with out[o, start + j, i] = u[o, j, i]; start is checked first. */
static bool run_update_slice(const interp_call *c)
{
    const kiln_type *xt = interp_in_type(c, 0), *ut = interp_in_type(c, 1);
    int ax = (int)c->node->attrs.axis;
    int64_t outer = kiln_interp_span(xt->dims, 0, ax), n = xt->dims[ax], m = ut->dims[ax];
    int64_t inner = kiln_interp_span(xt->dims, ax + 1, xt->rank);
    int32_t start = *(const int32_t *)interp_in(c, 2);
    if (start < 0 || start > n - m) {
        char buf[160];
        return kiln_interp_fail(c, "start %d is out of range [0, %lld] for %lld rows along axis %d of %s", (int)start,
                                (long long)(n - m), (long long)m, ax, kiln_type_str(xt, buf, sizeof buf));
    }
    copy_elems(c->out, 0, interp_in(c, 0), 0, kiln_type_numel(xt));
    for (int64_t o = 0; o < outer; o++)
        copy_elems(c->out, (o * n + start) * inner, interp_in(c, 1), o * m * inner, m * inner);
    return true;
}

/* ---- the table ------------------------------------------------------------------------- */

static const op_impl impl[KILN_OP_COUNT] = {
    [KILN_OP_INPUT] = {.run = run_caller_buffer, .caller_owned = true},
    [KILN_OP_PARAM] = {.run = run_caller_buffer, .caller_owned = true},
    [KILN_OP_STATE] = {.run = run_caller_buffer, .caller_owned = true},
    [KILN_OP_CONSTANT] = {.run = run_constant},
    [KILN_OP_IOTA] = {.run = run_iota},

    [KILN_OP_ADD] = {.run = run_binary, .f2 = f_add, .i2 = i_add},
    [KILN_OP_SUB] = {.run = run_binary, .f2 = f_sub, .i2 = i_sub},
    [KILN_OP_MUL] = {.run = run_binary, .f2 = f_mul, .i2 = i_mul},
    [KILN_OP_DIV] = {.run = run_binary, .f2 = f_div},
    [KILN_OP_MAXIMUM] = {.run = run_binary, .f2 = f_maximum, .i2 = i_maximum},
    [KILN_OP_MINIMUM] = {.run = run_binary, .f2 = f_minimum, .i2 = i_minimum},
    [KILN_OP_POW] = {.run = run_binary, .f2 = f_pow},
    [KILN_OP_LT] = {.run = run_binary, .cmp = c_lt},
    [KILN_OP_GT] = {.run = run_binary, .cmp = c_gt},
    [KILN_OP_EQ] = {.run = run_binary, .cmp = c_eq},
    [KILN_OP_WHERE] = {.run = run_where},

    [KILN_OP_NEG] = {.run = run_unary, .f1 = f_neg, .i1 = i_neg},
    [KILN_OP_EXP] = {.run = run_unary, .f1 = f_exp},
    [KILN_OP_LOG] = {.run = run_unary, .f1 = f_log},
    [KILN_OP_SQRT] = {.run = run_unary, .f1 = f_sqrt},
    [KILN_OP_RSQRT] = {.run = run_unary, .f1 = f_rsqrt},
    [KILN_OP_ABS] = {.run = run_unary, .f1 = f_abs, .i1 = i_abs},
    [KILN_OP_SQUARE] = {.run = run_unary, .f1 = f_square},
    [KILN_OP_RECIP] = {.run = run_unary, .f1 = f_recip},
    [KILN_OP_TANH] = {.run = run_unary, .f1 = f_tanh},
    [KILN_OP_SIGMOID] = {.run = run_unary, .f1 = f_sigmoid},
    [KILN_OP_RELU] = {.run = run_unary, .f1 = f_relu},
    [KILN_OP_SILU] = {.run = run_unary, .f1 = f_silu},
    [KILN_OP_GELU] = {.run = run_unary, .f1 = f_gelu},
    [KILN_OP_GELU_TANH] = {.run = run_unary, .f1 = f_gelu_tanh},
    [KILN_OP_ERF] = {.run = run_unary, .f1 = f_erf},
    [KILN_OP_SCALE] = {.run = run_scale},
    [KILN_OP_CAST] = {.run = run_cast},
    [KILN_OP_DROPOUT] = {.run = kiln_interp_dropout},

    [KILN_OP_SUM] = {.run = run_reduce},
    [KILN_OP_MEAN] = {.run = run_reduce},
    [KILN_OP_MAX] = {.run = run_reduce},

    [KILN_OP_MATMUL] = {.run = run_matmul},

    [KILN_OP_RESHAPE] = {.run = run_reshape},
    [KILN_OP_TRANSPOSE] = {.run = run_transpose},
    [KILN_OP_SLICE] = {.run = run_slice},
    [KILN_OP_CONCAT] = {.run = run_concat},
    [KILN_OP_BROADCAST] = {.run = run_broadcast},
    [KILN_OP_GATHER] = {.run = run_gather},
    [KILN_OP_UPDATE_SLICE] = {.run = run_update_slice},

    [KILN_OP_SOFTMAX] = {.run = kiln_interp_softmax},
    [KILN_OP_LOG_SOFTMAX] = {.run = kiln_interp_log_softmax},
    [KILN_OP_LAYERNORM] = {.run = kiln_interp_layernorm},
    [KILN_OP_ATTENTION] = {.run = kiln_interp_attention},
    [KILN_OP_ATTENTION_LSE] = {.run = kiln_interp_attention_lse},
    [KILN_OP_CROSS_ENTROPY] = {.run = kiln_interp_cross_entropy},

    [KILN_OP_UNSLICE] = {.run = kiln_interp_unslice},
    [KILN_OP_SCATTER_ADD] = {.run = kiln_interp_scatter_add},
    [KILN_OP_LAYERNORM_GRAD] = {.run = kiln_interp_layernorm_grad},
    [KILN_OP_ATTENTION_GRAD] = {.run = kiln_interp_attention_grad},
    [KILN_OP_CROSS_ENTROPY_GRAD] = {.run = kiln_interp_cross_entropy_grad},
};

/* ---- the driver ------------------------------------------------------------------------- */

bool kiln_interp_run(const kiln_graph *g, void **values, bool training, uint64_t seed, kiln_diags *diags)
{
    /* A row added to ops.def without one here would otherwise be a NULL call. */
    for (int op = 0; op < KILN_OP_COUNT; op++) KILN_ASSERT(impl[op].run != NULL);

    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const kiln_node *node = &g->nodes[id];
        interp_call c = {.g = g, .node = node, .id = id, .values = values,
                         .training = training, .seed = seed, .diags = diags};
        int64_t numel = kiln_type_numel(&node->type);
        if (impl[node->op].caller_owned) {
            if (!values[id] && numel > 0) {
                const char *name = node->attrs.name ? node->attrs.name : "?";
                return kiln_interp_fail(&c, "no buffer was given for %s '%s'", kiln_op_table[node->op].name, name);
            }
            continue;
        }
        /* Slots the interpreter fills must start empty, or their old buffer would leak. */
        KILN_ASSERT(values[id] == NULL);
        values[id] = kiln_interp_alloc(&c, (size_t)numel * KILN_ELEM_BYTES, "result");
        if (!values[id]) return false;
        c.out = values[id];
        if (!impl[node->op].run(&c)) return false;
    }
    /* Updates last, so every node above saw the old values. A new value may itself be
     * another update's target (or the target itself): copy all the new values out
     * before writing any of them. */
    void **fresh = calloc(g->n_updates ? g->n_updates : 1, sizeof *fresh);
    KILN_ASSERT(fresh != NULL);
    bool ok = true;
    for (uint32_t u = 0; u < g->n_updates && ok; u++) {
        const kiln_update *up = &g->updates[u];
        KILN_ASSERT(kiln_type_equal(&g->nodes[up->value].type, &g->nodes[up->target].type));
        size_t bytes = (size_t)kiln_type_numel(&g->nodes[up->value].type) * KILN_ELEM_BYTES;
        interp_call c = {.g = g, .node = &g->nodes[up->target], .id = up->target, .values = values, .diags = diags};
        fresh[u] = kiln_interp_alloc(&c, bytes, "update");
        if (!fresh[u]) ok = false;
        else if (bytes) memcpy(fresh[u], values[up->value], bytes);
    }
    for (uint32_t u = 0; u < g->n_updates && ok; u++) {
        const kiln_update *up = &g->updates[u];
        size_t bytes = (size_t)kiln_type_numel(&g->nodes[up->target].type) * KILN_ELEM_BYTES;
        if (bytes) memcpy(values[up->target], fresh[u], bytes);
    }
    for (uint32_t u = 0; u < g->n_updates; u++) free(fresh[u]);
    free(fresh);
    return ok;
}

void kiln_interp_free_values(const kiln_graph *g, void **values)
{
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        if (impl[g->nodes[id].op].caller_owned) continue;
        free(values[id]);
        values[id] = NULL;
    }
}
