/* shape.c — one shape rule per op: checks dtypes, attributes and shapes of the inputs
 * and computes the result type. Rules may normalise attributes in place (negative axes
 * become non-negative, reduction axes get sorted, reshape's -1 is resolved); running a
 * rule again on its own output attributes gives the same result, which is what the
 * verifier and the parser rely on.
 *
 * Messages name the op's operands and their types; the builder adds the location. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"

typedef struct rule_ctx {
    const kiln_type *const *in;
    uint32_t n_in;
    kiln_attrs *a;
    kiln_type *out;
    char *msg;
    size_t msg_size;
    kiln_op op;  /* for the rules several ops share (source, binary, unary, reduce) */
} rule_ctx;

__attribute__((format(printf, 2, 3))) static bool fail(rule_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, c->msg_size, fmt, ap);
    va_end(ap);
    return false;
}

/* Type strings for messages: up to four at a time. */
static const char *ts(const kiln_type *t)
{
    static _Thread_local char buf[4][160];
    static _Thread_local int next;
    char *b = buf[next++ & 3];
    return kiln_type_str(t, b, 160);
}

static bool normalize_axis(rule_ctx *c, int64_t *axis, int rank, const char *what)
{
    if (*axis < -rank || *axis >= (rank ? rank : 0) || (rank == 0)) {
        return fail(c, "%s %lld is out of range for rank %d", what, (long long)*axis, rank);
    }
    if (*axis < 0) *axis += rank;
    return true;
}

/* Checks dims are non-negative and the total size is bounded. */
static bool check_size(rule_ctx *c, const kiln_type *t)
{
    if (t->rank < 0 || t->rank > KILN_MAX_RANK)
        return fail(c, "rank %d is out of range (0..%d)", t->rank, KILN_MAX_RANK);
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) {
        if (t->dims[i] < 0) return fail(c, "dim %d is negative (%lld)", i, (long long)t->dims[i]);
        if (t->dims[i] > 0 && n > KILN_MAX_TENSOR_BYTES / KILN_ELEM_BYTES / t->dims[i])
            return fail(c, "shape %s is too large (over %lld bytes)", ts(t),
                        (long long)KILN_MAX_TENSOR_BYTES);
        n *= t->dims[i];
    }
    return true;
}

static void type_from_attrs(kiln_type *t, const kiln_attrs *a)
{
    t->dtype = a->dtype;
    t->rank = a->rank;
    memcpy(t->dims, a->shape, sizeof t->dims);
}

/* numpy broadcasting of n types into out (dims only). */
static bool broadcast_dims(rule_ctx *c, const kiln_type *const *t, int n, kiln_type *out)
{
    int rank = 0;
    for (int i = 0; i < n; i++)
        if (t[i]->rank > rank) rank = t[i]->rank;
    out->rank = rank;
    for (int d = 0; d < rank; d++) {
        int64_t size = 1;
        for (int i = 0; i < n; i++) {
            int k = d - (rank - t[i]->rank);
            if (k < 0) continue;
            int64_t s = t[i]->dims[k];
            if (s == size || s == 1) continue;
            if (size != 1) {
                if (n == 2) return fail(c, "cannot broadcast %s with %s", ts(t[0]), ts(t[1]));
                return fail(c, "cannot broadcast %s, %s and %s", ts(t[0]), ts(t[1]), ts(t[2]));
            }
            size = s;
        }
        out->dims[d] = size;
    }
    return true;
}

static bool need_f32(rule_ctx *c, const kiln_type *t, const char *what)
{
    if (t->dtype != KILN_F32) return fail(c, "%s must be f32, got %s (cast explicitly)", what, ts(t));
    return true;
}

/* ---- rules ------------------------------------------------------------------------- */

static bool rule_source(rule_ctx *c)
{
    kiln_op op = c->op;
    type_from_attrs(c->out, c->a);
    if (!check_size(c, c->out)) return false;
    if (op == KILN_OP_PARAM && c->a->dtype != KILN_F32) return fail(c, "parameters are f32");
    if (op == KILN_OP_STATE && c->a->dtype != KILN_F32) return fail(c, "optimizer state is f32");
    if (op == KILN_OP_CONSTANT) {
        int64_t n = kiln_type_numel(c->out);
        if (c->a->n_values != 1 && c->a->n_values != n)
            return fail(c, "%lld values given for shape %s (%lld elements)", (long long)c->a->n_values,
                        ts(c->out), (long long)n);
        if (!c->a->values && c->a->n_values) return fail(c, "constant without values");
    }
    if (op == KILN_OP_IOTA) return normalize_axis(c, &c->a->axis, c->out->rank, "axis");
    return true;
}

static bool rule_binary(rule_ctx *c)
{
    kiln_op op = c->op;
    const kiln_type *x = c->in[0], *y = c->in[1];
    if (x->dtype != y->dtype)
        return fail(c, "operands %s and %s have different dtypes (cast explicitly)", ts(x), ts(y));
    if ((op == KILN_OP_DIV || op == KILN_OP_POW) && !need_f32(c, x, "operand")) return false;
    if (!broadcast_dims(c, c->in, 2, c->out)) return false;
    bool compare = op == KILN_OP_LT || op == KILN_OP_GT || op == KILN_OP_EQ;
    c->out->dtype = compare ? KILN_F32 : x->dtype;
    return check_size(c, c->out); /* (n,1) op (1,n) can outgrow both operands */
}

static bool rule_where(rule_ctx *c)
{
    if (c->in[1]->dtype != c->in[2]->dtype)
        return fail(c, "branches %s and %s have different dtypes", ts(c->in[1]), ts(c->in[2]));
    if (!broadcast_dims(c, c->in, 3, c->out)) return false;
    c->out->dtype = c->in[1]->dtype;
    return check_size(c, c->out);
}

static bool rule_unary(rule_ctx *c)
{
    kiln_op op = c->op;
    const kiln_type *x = c->in[0];
    *c->out = *x;
    if (op == KILN_OP_CAST) {
        c->out->dtype = c->a->dtype;
        c->a->rank = x->rank;
        memcpy(c->a->shape, x->dims, sizeof c->a->shape);
        return true;
    }
    if (op == KILN_OP_NEG || op == KILN_OP_ABS) return true; /* i32 or f32 */
    if (op == KILN_OP_DROPOUT && !(c->a->scalar >= 0 && c->a->scalar < 1))
        return fail(c, "p = %g must lie in [0, 1)", c->a->scalar);
    if (op == KILN_OP_DROPOUT && !(c->a->stream >= 1 && c->a->stream <= UINT32_MAX))
        return fail(c, "stream %lld is out of range [1, 2^32)", (long long)c->a->stream);
    return need_f32(c, x, "operand");
}

static bool rule_reduce(rule_ctx *c)
{
    kiln_op op = c->op;
    const kiln_type *x = c->in[0];
    kiln_attrs *a = c->a;
    if (op == KILN_OP_MEAN && !need_f32(c, x, "operand")) return false;
    if (a->n_axes < 0 || a->n_axes > x->rank)
        return fail(c, "%d axes given for rank %d", a->n_axes, x->rank);
    bool seen[KILN_MAX_RANK] = {0};
    for (int i = 0; i < a->n_axes; i++) {
        int64_t ax = a->axes[i];
        if (ax < -x->rank || ax >= x->rank)
            return fail(c, "axis %lld is out of range for %s", (long long)ax, ts(x));
        if (ax < 0) ax += x->rank;
        if (seen[ax]) return fail(c, "axis %lld is repeated", (long long)a->axes[i]);
        seen[ax] = true;
    }
    a->n_axes = 0;
    for (int d = 0; d < x->rank; d++)
        if (seen[d]) a->axes[a->n_axes++] = d;
    if (op == KILN_OP_MAX)
        for (int d = 0; d < x->rank; d++)
            if (seen[d] && x->dims[d] == 0) return fail(c, "max over an empty axis %d of %s", d, ts(x));
    c->out->dtype = x->dtype;
    c->out->rank = 0;
    for (int d = 0; d < x->rank; d++) {
        if (!seen[d]) c->out->dims[c->out->rank++] = x->dims[d];
        else if (a->keepdims) c->out->dims[c->out->rank++] = 1;
    }
    return true;
}

static bool rule_matmul(rule_ctx *c)
{
    const kiln_type *x = c->in[0], *y = c->in[1];
    if (!need_f32(c, x, "left operand") || !need_f32(c, y, "right operand")) return false;
    if (x->rank < 2 || y->rank < 2)
        return fail(c, "operands %s and %s must have rank 2 or more", ts(x), ts(y));
    int64_t m = c->a->transpose_a ? x->dims[x->rank - 1] : x->dims[x->rank - 2];
    int64_t k1 = c->a->transpose_a ? x->dims[x->rank - 2] : x->dims[x->rank - 1];
    int64_t k2 = c->a->transpose_b ? y->dims[y->rank - 1] : y->dims[y->rank - 2];
    int64_t n = c->a->transpose_b ? y->dims[y->rank - 2] : y->dims[y->rank - 1];
    if (k1 != k2)
        return fail(c, "inner dims differ: %s%s and %s%s", ts(x), c->a->transpose_a ? " (transposed)" : "",
                    ts(y), c->a->transpose_b ? " (transposed)" : "");
    kiln_type bx = *x, by = *y;
    bx.rank -= 2;
    by.rank -= 2;
    const kiln_type *batch[2] = {&bx, &by};
    if (!broadcast_dims(c, batch, 2, c->out))
        return fail(c, "batch dims of %s and %s do not broadcast", ts(x), ts(y));
    c->out->dims[c->out->rank++] = m;
    c->out->dims[c->out->rank++] = n;
    c->out->dtype = KILN_F32;
    return check_size(c, c->out);
}

static bool rule_reshape(rule_ctx *c)
{
    const kiln_type *x = c->in[0];
    kiln_attrs *a = c->a;
    if (a->rank < 0 || a->rank > KILN_MAX_RANK) return fail(c, "rank %d is out of range", a->rank);
    int free_dim = -1;
    int64_t known = 1;
    for (int i = 0; i < a->rank; i++) {
        if (a->shape[i] == -1) {
            if (free_dim >= 0) return fail(c, "more than one -1 in the target shape");
            free_dim = i;
        } else if (a->shape[i] < 0) {
            return fail(c, "dim %d of the target shape is negative (%lld)", i, (long long)a->shape[i]);
        } else {
            if (a->shape[i] > 0 && known > INT64_MAX / a->shape[i]) return fail(c, "target shape is too large");
            known *= a->shape[i];
        }
    }
    int64_t n = kiln_type_numel(x);
    if (free_dim >= 0) {
        if (known == 0 || n % known != 0)
            return fail(c, "cannot infer the -1 dim: %lld elements of %s into %lld-element pieces", (long long)n,
                        ts(x), (long long)known);
        a->shape[free_dim] = n / known;
        known = n;
    }
    a->dtype = x->dtype;
    type_from_attrs(c->out, a);
    if (known != n) return fail(c, "cannot reshape %s (%lld elements) into %s", ts(x), (long long)n, ts(c->out));
    return true;
}

static bool rule_transpose(rule_ctx *c)
{
    const kiln_type *x = c->in[0];
    bool seen[KILN_MAX_RANK] = {0};
    c->out->dtype = x->dtype;
    c->out->rank = x->rank;
    for (int i = 0; i < x->rank; i++) {
        int64_t p = c->a->perm[i];
        if (p < -x->rank || p >= x->rank) return fail(c, "perm entry %lld is out of range for %s", (long long)p, ts(x));
        if (p < 0) p += x->rank;
        if (seen[p]) return fail(c, "perm repeats axis %lld", (long long)p);
        seen[p] = true;
        c->a->perm[i] = p;
        c->out->dims[i] = x->dims[p];
    }
    return true;
}

bool kiln_slice_normalize(int64_t len, bool has_start, int64_t start, bool has_end, int64_t end,
                          int64_t step, int64_t *out_start, int64_t *out_end)
{
    if (step == 0) return false;
    int64_t lo = step > 0 ? 0 : -1, hi = step > 0 ? len : len - 1;
    if (!has_start) start = step > 0 ? lo : hi;
    else if (start < 0) start = start + len < lo ? lo : start + len;
    else if (start > hi) start = hi;
    if (!has_end) end = step > 0 ? hi : lo;
    else if (end < 0) end = end + len < lo ? lo : end + len;
    else if (end > hi) end = hi;
    /* an empty range (x[5:2], x[2:5:-1]) is Python's empty slice: end = start */
    if (step > 0 ? end < start : end > start) end = start;
    *out_start = start;
    *out_end = end;
    return true;
}

int64_t kiln_slice_count(int64_t start, int64_t end, int64_t step)
{
    /* unsigned distances: a huge step (or INT64_MIN) must not overflow */
    if (step > 0) return end > start ? (int64_t)(((uint64_t)end - (uint64_t)start - 1) / (uint64_t)step) + 1 : 0;
    return start > end ? (int64_t)(((uint64_t)start - (uint64_t)end - 1) / (0 - (uint64_t)step)) + 1 : 0;
}

/* start/end/step in the IR's normalised form for a dim of len (kiln_slice_normalize). */
static bool slice_normalised(rule_ctx *c, const kiln_attrs *a, int64_t len)
{
    if (a->step == 0) return fail(c, "step must not be 0");
    bool ok = a->step > 0 ? (0 <= a->start && a->start <= len && a->start <= a->end && a->end <= len)
                          : (-1 <= a->end && a->end <= a->start && a->start < len) || (len == 0 && a->start == -1 && a->end == -1);
    if (!ok)
        return fail(c, "slice [%lld:%lld:%lld] is not normalised for a dim of %lld", (long long)a->start,
                    (long long)a->end, (long long)a->step, (long long)len);
    return true;
}

static bool rule_slice(rule_ctx *c)
{
    const kiln_type *x = c->in[0];
    kiln_attrs *a = c->a;
    if (!normalize_axis(c, &a->axis, x->rank, "axis")) return false;
    if (!slice_normalised(c, a, x->dims[a->axis])) return false;
    *c->out = *x;
    c->out->dims[a->axis] = kiln_slice_count(a->start, a->end, a->step);
    return true;
}

static bool rule_concat(rule_ctx *c)
{
    if (c->n_in < 1) return fail(c, "needs at least one input");
    const kiln_type *x = c->in[0];
    if (!normalize_axis(c, &c->a->axis, x->rank, "axis")) return false;
    *c->out = *x;
    int64_t total = 0;
    for (uint32_t i = 0; i < c->n_in; i++) {
        const kiln_type *y = c->in[i];
        if (y->dtype != x->dtype || y->rank != x->rank)
            return fail(c, "input %u is %s but input 0 is %s", i, ts(y), ts(x));
        for (int d = 0; d < x->rank; d++)
            if (d != c->a->axis && y->dims[d] != x->dims[d])
                return fail(c, "input %u is %s but input 0 is %s: only axis %lld may differ", i, ts(y), ts(x),
                            (long long)c->a->axis);
        total += y->dims[c->a->axis];
    }
    c->out->dims[c->a->axis] = total;
    return check_size(c, c->out);
}

static bool rule_broadcast(rule_ctx *c)
{
    const kiln_type *x = c->in[0];
    kiln_attrs *a = c->a;
    a->dtype = x->dtype;
    type_from_attrs(c->out, a);
    if (!check_size(c, c->out)) return false;
    if (x->rank > a->rank) return fail(c, "cannot broadcast %s to the lower rank %s", ts(x), ts(c->out));
    for (int i = 0; i < x->rank; i++) {
        int64_t s = x->dims[i], t = a->shape[a->rank - x->rank + i];
        if (s != t && s != 1) return fail(c, "cannot broadcast %s to %s", ts(x), ts(c->out));
    }
    return true;
}

static bool rule_gather(rule_ctx *c)
{
    const kiln_type *table = c->in[0], *idx = c->in[1];
    if (idx->dtype != KILN_I32) return fail(c, "indices must be i32, got %s", ts(idx));
    if (!normalize_axis(c, &c->a->axis, table->rank, "axis")) return false;
    int64_t ax = c->a->axis;
    int rank = table->rank - 1 + idx->rank;
    if (rank > KILN_MAX_RANK) return fail(c, "result rank %d is over %d", rank, KILN_MAX_RANK);
    kiln_type *o = c->out;
    o->dtype = table->dtype;
    o->rank = 0;
    for (int d = 0; d < ax; d++) o->dims[o->rank++] = table->dims[d];
    for (int d = 0; d < idx->rank; d++) o->dims[o->rank++] = idx->dims[d];
    for (int d = (int)ax + 1; d < table->rank; d++) o->dims[o->rank++] = table->dims[d];
    return check_size(c, o);
}

/* update_slice(x, u, start): the result is x's type; u is x's type but along axis, where
 * it is at most x's extent; start is one i32. */
static bool rule_update_slice(rule_ctx *c)
{
    const kiln_type *x = c->in[0], *u = c->in[1], *at = c->in[2];
    if (at->dtype != KILN_I32 || kiln_type_numel(at) != 1) return fail(c, "start must be one i32, got %s", ts(at));
    if (!normalize_axis(c, &c->a->axis, x->rank, "axis")) return false;
    int64_t ax = c->a->axis;
    bool ok = u->dtype == x->dtype && u->rank == x->rank && u->dims[ax] <= x->dims[ax];
    for (int d = 0; ok && d < x->rank; d++) ok = d == ax || u->dims[d] == x->dims[d];
    if (!ok) return fail(c, "update %s must be %s but along axis %lld, at most as long", ts(u), ts(x), (long long)ax);
    *c->out = *x;
    return true;
}

/* unslice(g): the result type is the attribute's; slicing it as the attributes say must
 * give g's type. */
static bool rule_unslice(rule_ctx *c)
{
    const kiln_type *x = c->in[0];
    kiln_attrs *a = c->a;
    a->dtype = x->dtype;
    type_from_attrs(c->out, a);
    if (!check_size(c, c->out)) return false;
    if (!normalize_axis(c, &a->axis, c->out->rank, "axis")) return false;
    if (!slice_normalised(c, a, c->out->dims[a->axis])) return false;
    kiln_type sliced = *c->out;
    sliced.dims[a->axis] = kiln_slice_count(a->start, a->end, a->step);
    if (!kiln_type_equal(&sliced, x))
        return fail(c, "%s is not the slice [%lld:%lld:%lld] along axis %lld of %s", ts(x), (long long)a->start,
                    (long long)a->end, (long long)a->step, (long long)a->axis, ts(c->out));
    return true;
}

/* scatter_add(g, indices): the result (the table) type is the attribute's; g must have
 * the type gather(table, indices) would give. */
static bool rule_scatter_add(rule_ctx *c)
{
    const kiln_type *x = c->in[0], *idx = c->in[1];
    kiln_attrs *a = c->a;
    if (!need_f32(c, x, "updates")) return false;
    if (idx->dtype != KILN_I32) return fail(c, "indices must be i32, got %s", ts(idx));
    a->dtype = x->dtype;
    type_from_attrs(c->out, a);
    if (!check_size(c, c->out)) return false;
    if (!normalize_axis(c, &a->axis, c->out->rank, "axis")) return false;
    int64_t ax = a->axis;
    kiln_type want = {x->dtype, 0, {0}};
    if (c->out->rank - 1 + idx->rank > KILN_MAX_RANK) return fail(c, "rank is over %d", KILN_MAX_RANK);
    for (int d = 0; d < ax; d++) want.dims[want.rank++] = c->out->dims[d];
    for (int d = 0; d < idx->rank; d++) want.dims[want.rank++] = idx->dims[d];
    for (int d = (int)ax + 1; d < c->out->rank; d++) want.dims[want.rank++] = c->out->dims[d];
    if (!kiln_type_equal(&want, x))
        return fail(c, "updates %s must be %s for indices %s into %s", ts(x), ts(&want), ts(idx), ts(c->out));
    return true;
}

static bool rule_softmax(rule_ctx *c)
{
    if (!need_f32(c, c->in[0], "operand")) return false;
    if (!normalize_axis(c, &c->a->axis, c->in[0]->rank, "axis")) return false;
    *c->out = *c->in[0];
    return true;
}

static bool rule_layernorm(rule_ctx *c)
{
    const kiln_type *x = c->in[0], *w = c->in[1], *b = c->in[2];
    if (!need_f32(c, x, "input") || !need_f32(c, w, "weight") || !need_f32(c, b, "bias")) return false;
    if (x->rank < 1) return fail(c, "input %s has no last axis to normalise", ts(x));
    int64_t d = x->dims[x->rank - 1];
    if (w->rank != 1 || w->dims[0] != d || b->rank != 1 || b->dims[0] != d)
        return fail(c, "weight %s and bias %s must be [%lld] for input %s", ts(w), ts(b), (long long)d, ts(x));
    if (!(c->a->scalar >= 0)) return fail(c, "eps = %g must be non-negative", c->a->scalar);
    *c->out = *x;
    return true;
}

static bool rule_attention(rule_ctx *c)
{
    kiln_attrs *a = c->a;
    uint32_t want = 3 + (a->has_mask ? 1 : 0) + (a->has_bias ? 1 : 0);
    if (c->n_in != want) return fail(c, "expects %u inputs, got %u", want, c->n_in);
    if (!(a->attn_dropout >= 0 && a->attn_dropout < 1))
        return fail(c, "dropout = %g must lie in [0, 1)", a->attn_dropout);
    if (a->attn_dropout > 0 && !(a->stream >= 1 && a->stream <= UINT32_MAX))
        return fail(c, "stream %lld is out of range [1, 2^32)", (long long)a->stream);
    const kiln_type *q = c->in[0], *k = c->in[1], *v = c->in[2];
    for (int i = 0; i < 3; i++)
        if (!need_f32(c, c->in[i], i == 0 ? "q" : i == 1 ? "k" : "v")) return false;
    int r = q->rank;
    if (r < 3 || k->rank != r || v->rank != r)
        return fail(c, "q %s, k %s, v %s must share a rank of 3 or more", ts(q), ts(k), ts(v));
    for (int d = 0; d < r - 2; d++)
        if (q->dims[d] != k->dims[d] || q->dims[d] != v->dims[d])
            return fail(c, "leading dims of q %s, k %s and v %s differ", ts(q), ts(k), ts(v));
    int64_t T = q->dims[r - 2], S = k->dims[r - 2];
    if (q->dims[r - 1] != k->dims[r - 1] || v->dims[r - 2] != S)
        return fail(c, "q %s, k %s and v %s do not fit (q, k share the last dim; k, v the keys)", ts(q), ts(k),
                    ts(v));
    uint32_t next = 3;
    if (a->has_mask) {
        const kiln_type *m = c->in[next++];
        bool ok = m->dtype == KILN_F32 && m->rank == r - 2 && m->dims[r - 3] == S;
        for (int d = 0; ok && d < r - 3; d++) ok = m->dims[d] == q->dims[d];
        if (!ok) {
            kiln_type want_m = {KILN_F32, r - 2, {0}};
            memcpy(want_m.dims, q->dims, sizeof(int64_t) * (size_t)(r - 3));
            want_m.dims[r - 3] = S;
            return fail(c, "key mask is %s but must be %s", ts(m), ts(&want_m));
        }
    }
    if (a->relative) {
        const kiln_type *b = a->has_bias ? c->in[next] : NULL;
        if (!b) return fail(c, "relative needs its bucket embedding as the bias input");
        if (a->alibi) return fail(c, "relative and alibi exclude each other");
        if (b->dtype != KILN_F32 || b->rank != 2 || b->dims[1] != q->dims[r - 3] || b->dims[0] < 2 || b->dims[0] % 2)
            return fail(c, "relative bucket embedding %s must be f32 (buckets, %lld heads) with an even number of buckets of 2 or more",
                        ts(b), (long long)q->dims[r - 3]);
        next++;
    } else if (a->has_bias) {
        const kiln_type *b = c->in[next++];
        kiln_type scores = *q;
        scores.dims[r - 1] = S;
        (void)T;
        if (b->dtype != KILN_F32 || b->rank > r) return fail(c, "bias %s does not broadcast to scores %s", ts(b), ts(&scores));
        for (int i = 0; i < b->rank; i++) {
            int64_t s = b->dims[i], t = scores.dims[r - b->rank + i];
            if (s != t && s != 1) return fail(c, "bias %s does not broadcast to scores %s", ts(b), ts(&scores));
        }
        if (a->alibi && ((b->rank >= 1 && b->dims[b->rank - 1] != 1) || (b->rank >= 2 && b->dims[b->rank - 2] != 1)))
            return fail(c, "alibi slopes %s must be 1 along the query and key dims", ts(b));
    }
    if (a->alibi && !a->has_bias) return fail(c, "alibi needs its slopes as the bias input");
    *c->out = *q;
    c->out->dims[r - 1] = v->dims[r - 1];
    return check_size(c, c->out); /* (…,T,dv) can outgrow q (…,T,dh) and v (…,S,dv) */
}

/* layernorm_grad(x, w, g) → dx: g has x's type. */
static bool rule_layernorm_grad(rule_ctx *c)
{
    const kiln_type *x = c->in[0], *w = c->in[1], *g = c->in[2];
    if (!need_f32(c, x, "input") || !need_f32(c, w, "weight")) return false;
    if (x->rank < 1) return fail(c, "input %s has no last axis to normalise", ts(x));
    if (w->rank != 1 || w->dims[0] != x->dims[x->rank - 1])
        return fail(c, "weight %s must be [%lld] for input %s", ts(w), (long long)x->dims[x->rank - 1], ts(x));
    if (!kiln_type_equal(g, x)) return fail(c, "cotangent %s must have the input's type %s", ts(g), ts(x));
    if (!(c->a->scalar >= 0)) return fail(c, "eps = %g must be non-negative", c->a->scalar);
    *c->out = *x;
    return true;
}

/* attention_grad(q, k, v, [mask], [bias], g): the forward attention's rule on all but
 * the last input, g of the attention result's type; the result has the type of q, k or
 * v, or of the scores (…, H, T, S). */
/* attention_lse: attention's inputs → (…,T), one log-sum-exp per query */
static bool rule_attention_lse(rule_ctx *c)
{
    if (!rule_attention(c)) return false;
    *c->out = *c->in[0];
    c->out->rank--;
    return true;
}

/* attention_grad(q, k, v, [mask], [bias], [o, lse], g): o and lse (both or neither) are
 * the forward's output and attention_lse. */
static bool rule_attention_grad(rule_ctx *c)
{
    if (c->n_in < 4) return fail(c, "expects the attention inputs and a cotangent, got %u inputs", c->n_in);
    uint32_t base = 3 + (c->a->has_mask ? 1 : 0) + (c->a->has_bias ? 1 : 0);
    bool stats = c->n_in == base + 3;
    kiln_type fwd;
    rule_ctx inner = *c;
    inner.n_in = stats ? base : c->n_in - 1;
    inner.out = &fwd;
    if (!rule_attention(&inner)) return false;
    const kiln_type *g = c->in[c->n_in - 1];
    if (!kiln_type_equal(g, &fwd)) return fail(c, "cotangent %s must be the attention result's type %s", ts(g), ts(&fwd));
    if (stats) {
        kiln_type lse = *c->in[0];
        lse.rank--;
        if (!kiln_type_equal(c->in[base], &fwd))
            return fail(c, "forward output %s must be the attention result's type %s", ts(c->in[base]), ts(&fwd));
        if (!kiln_type_equal(c->in[base + 1], &lse))
            return fail(c, "log-sum-exp %s must be %s", ts(c->in[base + 1]), ts(&lse));
    }
    switch (c->a->wrt) {
    case KILN_WRT_Q: *c->out = *c->in[0]; break;
    case KILN_WRT_K: *c->out = *c->in[1]; break;
    case KILN_WRT_V: *c->out = *c->in[2]; break;
    case KILN_WRT_SCORES:
        *c->out = *c->in[0];
        c->out->dims[c->out->rank - 1] = c->in[1]->dims[c->in[1]->rank - 2];
        if (c->a->relative) { /* summed along diagonals: (…, H, T + S − 1) */
            c->out->rank--;
            c->out->dims[c->out->rank - 1] = c->in[0]->dims[c->in[0]->rank - 2] + c->in[1]->dims[c->in[1]->rank - 2] - 1;
            if (c->out->dims[c->out->rank - 1] < 0) c->out->dims[c->out->rank - 1] = 0;
        }
        return check_size(c, c->out); /* the T×S scores the forward never materialises */
    default: return fail(c, "wrt %d is not q, k, v or scores", c->a->wrt);
    }
    return true;
}

static bool rule_cross_entropy(rule_ctx *c)
{
    const kiln_type *x = c->in[0], *t = c->in[1];
    if (!need_f32(c, x, "logits")) return false;
    if (t->dtype != KILN_I32) return fail(c, "targets must be i32, got %s", ts(t));
    bool ok = x->rank >= 1 && t->rank == x->rank - 1;
    for (int d = 0; ok && d < t->rank; d++) ok = t->dims[d] == x->dims[d];
    if (!ok) return fail(c, "targets %s must have the shape of logits %s without its last dim", ts(t), ts(x));
    if (!(c->a->scalar >= 0 && c->a->scalar <= 1))
        return fail(c, "label_smoothing = %g must lie in [0, 1]", c->a->scalar);
    *c->out = (kiln_type){KILN_F32, 0, {0}};
    return true;
}

/* cross_entropy_grad(logits, targets, g) → dlogits, with g the loss's scalar cotangent. */
static bool rule_cross_entropy_grad(rule_ctx *c)
{
    kiln_type loss;
    rule_ctx inner = *c;
    inner.n_in = 2;
    inner.out = &loss;
    if (!rule_cross_entropy(&inner)) return false;
    if (!kiln_type_equal(c->in[2], &loss)) return fail(c, "cotangent %s must be a scalar f32", ts(c->in[2]));
    *c->out = *c->in[0];
    return true;
}

/* ---- the table: one rule per op ------------------------------------------------------ */

/* Every op's row is set (kiln_shape_rule_exists, checked with the op table by
 * kiln_op_table_check): a row added to ops.def without its rule fails there instead of
 * borrowing another op's. */
static bool (*const shape_rule[KILN_OP_COUNT])(rule_ctx *c) = {
    [KILN_OP_INPUT] = rule_source,
    [KILN_OP_PARAM] = rule_source,
    [KILN_OP_CONSTANT] = rule_source,
    [KILN_OP_IOTA] = rule_source,
    [KILN_OP_STATE] = rule_source,

    [KILN_OP_ADD] = rule_binary,
    [KILN_OP_SUB] = rule_binary,
    [KILN_OP_MUL] = rule_binary,
    [KILN_OP_DIV] = rule_binary,
    [KILN_OP_MAXIMUM] = rule_binary,
    [KILN_OP_MINIMUM] = rule_binary,
    [KILN_OP_POW] = rule_binary,
    [KILN_OP_LT] = rule_binary,
    [KILN_OP_GT] = rule_binary,
    [KILN_OP_EQ] = rule_binary,
    [KILN_OP_WHERE] = rule_where,

    [KILN_OP_NEG] = rule_unary,
    [KILN_OP_EXP] = rule_unary,
    [KILN_OP_LOG] = rule_unary,
    [KILN_OP_SQRT] = rule_unary,
    [KILN_OP_RSQRT] = rule_unary,
    [KILN_OP_ABS] = rule_unary,
    [KILN_OP_SQUARE] = rule_unary,
    [KILN_OP_RECIP] = rule_unary,
    [KILN_OP_TANH] = rule_unary,
    [KILN_OP_SIGMOID] = rule_unary,
    [KILN_OP_RELU] = rule_unary,
    [KILN_OP_SILU] = rule_unary,
    [KILN_OP_GELU] = rule_unary,
    [KILN_OP_GELU_TANH] = rule_unary,
    [KILN_OP_ERF] = rule_unary,
    [KILN_OP_SCALE] = rule_unary,
    [KILN_OP_CAST] = rule_unary,
    [KILN_OP_DROPOUT] = rule_unary,

    [KILN_OP_SUM] = rule_reduce,
    [KILN_OP_MEAN] = rule_reduce,
    [KILN_OP_MAX] = rule_reduce,

    [KILN_OP_MATMUL] = rule_matmul,

    [KILN_OP_RESHAPE] = rule_reshape,
    [KILN_OP_TRANSPOSE] = rule_transpose,
    [KILN_OP_SLICE] = rule_slice,
    [KILN_OP_CONCAT] = rule_concat,
    [KILN_OP_BROADCAST] = rule_broadcast,
    [KILN_OP_GATHER] = rule_gather,
    [KILN_OP_UPDATE_SLICE] = rule_update_slice,

    [KILN_OP_SOFTMAX] = rule_softmax,
    [KILN_OP_LOG_SOFTMAX] = rule_softmax,
    [KILN_OP_LAYERNORM] = rule_layernorm,
    [KILN_OP_ATTENTION] = rule_attention,
    [KILN_OP_ATTENTION_LSE] = rule_attention_lse,
    [KILN_OP_CROSS_ENTROPY] = rule_cross_entropy,

    [KILN_OP_UNSLICE] = rule_unslice,
    [KILN_OP_SCATTER_ADD] = rule_scatter_add,
    [KILN_OP_LAYERNORM_GRAD] = rule_layernorm_grad,
    [KILN_OP_ATTENTION_GRAD] = rule_attention_grad,
    [KILN_OP_CROSS_ENTROPY_GRAD] = rule_cross_entropy_grad,
};

bool kiln_shape_rule_exists(kiln_op op) { return op < KILN_OP_COUNT && shape_rule[op] != NULL; }

bool kiln_infer_type(kiln_op op, const kiln_type *const *in, uint32_t n_in, kiln_attrs *attrs,
                     kiln_type *out, char *msg, size_t msg_size)
{
    rule_ctx c = {in, n_in, attrs, out, msg, msg_size, op};
    memset(out, 0, sizeof *out);
    const kiln_op_info *info = &kiln_op_table[op];
    if (info->arity >= 0 && n_in != (uint32_t)info->arity)
        return fail(&c, "expects %d input%s, got %u", info->arity, info->arity == 1 ? "" : "s", n_in);
    KILN_ASSERT(shape_rule[op] != NULL);
    return shape_rule[op](&c);
}
