/* primitives.c — the primitive layer ops of SPEC 1.1, each one IR node.
 *
 * A primitive layer has the name of its IR op, so the expander only translates the
 * layer's attributes into kiln_attrs and lets kiln_graph_add check shapes and dtypes.
 * It reads every attribute the op knows before building anything, even when an input
 * failed (fe.h), so that one run reports all attribute problems of the layer, and reads
 * none it does not know: what is left is reported as unknown by model.c. Checks that
 * need the JSON path of one attribute (an axis out of range, a slice step of 0, a wrong
 * number of constant values) are done here; shape checks stay in the shape rules.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fe.h"

static const char *const dtype_names[] = {"f32", "i32", NULL}; /* in kiln_dtype order */

/* A dtype attribute; def < 0 makes it required. */
static bool get_dtype(fe_ctx *c, fe_node *n, int def, kiln_dtype *out)
{
    int d;
    if (!fe_get_enum(c, n, "dtype", dtype_names, def, &d)) return false;
    if (d < 0) {
        fe_error(c, n, "dtype", "required key is missing (\"f32\" or \"i32\")");
        return false;
    }
    *out = (kiln_dtype)d;
    return true;
}

/* An axis for an input of rank `rank`, normalised to [0, rank); rank < 0 (the input
 * failed) only reads it. */
static bool get_axis(fe_ctx *c, fe_node *n, int64_t def, int rank, int64_t *out)
{
    int64_t axis;
    if (!fe_get_int(c, n, "axis", def, &axis)) return false;
    *out = axis;
    if (rank < 0) return true;
    if (axis < -rank || axis >= rank) {
        if (rank == 0) fe_error(c, n, "axis", "the input is a scalar: it has no axis %lld", (long long)axis);
        else fe_error(c, n, "axis", "%lld is out of range for rank %d (use -%d..%d)", (long long)axis, rank, rank,
                      rank - 1);
        return false;
    }
    *out = axis < 0 ? axis + rank : axis;
    return true;
}

/* An optional slice bound: absent or null means python's None. */
static bool get_bound(fe_ctx *c, fe_node *n, const char *key, bool *has, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(n->json, key);
    *has = v && !cJSON_IsNull(v);
    *out = 0;
    if (!*has) {
        fe_mark_used(n, key);
        return true;
    }
    return fe_get_int(c, n, key, 0, out);
}

static bool has_key(const fe_node *n, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(n->json, key) != NULL;
}

/* Element count of a shape, or -1 if it is too large to hold (the shape rule then
 * reports it with the shape). */
static int64_t shape_numel(int rank, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] && n > KILN_MAX_TENSOR_BYTES / KILN_ELEM_BYTES / dims[i]) return -1;
        n *= dims[i];
    }
    return n;
}

static uint32_t expand_constant(fe_ctx *c, fe_node *n)
{
    int rank;
    int64_t dims[KILN_MAX_RANK];
    bool ok = fe_get_shape(c, n, "shape", true, false, &rank, dims);
    double value, *values = NULL;
    int64_t count = 0;
    bool has_values;
    bool has_value = has_key(n, "value");
    ok &= fe_get_num(c, n, "value", 0, &value);
    ok &= fe_get_num_list(c, n, "values", &values, &count, &has_values);
    if (has_value == has_values) {
        fe_error(c, n, NULL, "constant needs exactly one of \"value\" (fills the shape) and \"values\" (a flat "
                             "row-major list)");
        ok = false;
    }
    if (ok && has_values) {
        int64_t numel = shape_numel(rank, dims);
        if (numel >= 0 && count != numel) {
            fe_error(c, n, "values", "%lld values given for a shape of %lld elements", (long long)count,
                     (long long)numel);
            ok = false;
        }
    }
    float *f = NULL;
    if (ok) {
        count = has_values ? count : 1;
        f = malloc((size_t)(count ? count : 1) * sizeof *f);
        KILN_ASSERT(f != NULL);
        for (int64_t i = 0; i < count; i++) {
            double v = has_values ? values[i] : value;
            if (fabs(v) > FLT_MAX) {
                fe_error(c, n, has_values ? fe_fmt(c, "values[%lld]", (long long)i) : "value",
                         "%g does not fit in f32", v);
                ok = false;
                break;
            }
            f[i] = (float)v;
        }
    }
    free(values);
    uint32_t id = ok ? fe_const_f32(c, n, rank, dims, f, count) : KILN_NONE;
    free(f);
    return id;
}

static uint32_t expand_param(fe_ctx *c, fe_node *n)
{
    static const char *const inits[] = {"normal", "zeros", "ones", "uniform", NULL}; /* kiln_init order */
    int rank, init;
    int64_t dims[KILN_MAX_RANK];
    double std, bound;
    bool ok = fe_get_shape(c, n, "shape", true, false, &rank, dims);
    ok &= fe_get_enum(c, n, "init", inits, KILN_INIT_NORMAL, &init);
    bool has_std = has_key(n, "std"), has_bound = has_key(n, "bound");
    ok &= fe_get_num(c, n, "std", 0.02, &std); /* SPEC 1.1: its own default, not the model's init.std */
    ok &= fe_get_num(c, n, "bound", 0, &bound);
    if (!ok) return KILN_NONE;
    if (has_std && init != KILN_INIT_NORMAL) {
        fe_error(c, n, "std", "applies only to init \"normal\"");
        ok = false;
    }
    if (has_bound && init != KILN_INIT_UNIFORM) {
        fe_error(c, n, "bound", "applies only to init \"uniform\"");
        ok = false;
    }
    if (init == KILN_INIT_NORMAL && std < 0) {
        fe_error(c, n, "std", "%g is negative", std);
        ok = false;
    } else if (init == KILN_INIT_NORMAL && std > FLT_MAX) { /* else init writes ±inf weights */
        fe_error(c, n, "std", "%g does not fit in f32", std);
        ok = false;
    }
    if (init == KILN_INIT_UNIFORM && !has_bound) {
        fe_error(c, n, "bound", "required key is missing (init \"uniform\" draws from U(-bound, bound))");
        ok = false;
    } else if (init == KILN_INIT_UNIFORM && !(bound > 0)) {
        fe_error(c, n, "bound", "%g must be positive", bound);
        ok = false;
    } else if (init == KILN_INIT_UNIFORM && bound > FLT_MAX) {
        fe_error(c, n, "bound", "%g does not fit in f32", bound);
        ok = false;
    }
    if (!ok) return KILN_NONE;
    double arg = init == KILN_INIT_NORMAL ? std : init == KILN_INIT_UNIFORM ? bound : 0;
    return fe_param(c, n, n->name, rank, dims, (kiln_init)init, arg);
}

/* matmul of 1-D operands as torch.matmul has it: a vector a (k) is the matrix (1, k) and
 * b (k) is (k, 1), and the dim each added is dropped from the product again — (k)·(k) is
 * a scalar, (k)·(…, k, n) is (…, n), (…, m, k)·(k) is (…, m). A vector is its own
 * transpose (torch's v.T), so the transpose flags do not apply to it. */
static uint32_t matmul_of_vectors(fe_ctx *c, fe_node *n, kiln_attrs a)
{
    uint32_t in[2] = {n->in[0], n->in[1]};
    bool vec[2];
    for (int k = 0; k < 2; k++) {
        const kiln_type *t = fe_type(c, in[k]);
        vec[k] = t->rank == 1;
        if (vec[k]) in[k] = fe_reshape(c, n, in[k], 2, k == 0 ? (int64_t[]){1, t->dims[0]} : (int64_t[]){t->dims[0], 1});
    }
    if (vec[0]) a.transpose_a = false;
    if (vec[1]) a.transpose_b = false;
    uint32_t y = fe_add(c, n, KILN_OP_MATMUL, in, 2, &a, NULL);
    if (y == KILN_NONE) return KILN_NONE;
    kiln_type yt = *fe_type(c, y);
    int64_t dims[KILN_MAX_RANK];
    int rank = 0;
    for (int i = 0; i < yt.rank; i++)
        if (!(vec[0] && i == yt.rank - 2) && !(vec[1] && i == yt.rank - 1)) dims[rank++] = yt.dims[i];
    return fe_reshape(c, n, y, rank, dims);
}

uint32_t fe_expand_primitive(fe_ctx *c, fe_node *n)
{
    kiln_op op = kiln_op_from_name(n->op);
    KILN_ASSERT(op != KILN_OP_COUNT);
    if (op == KILN_OP_CONSTANT) return expand_constant(c, n);
    if (op == KILN_OP_PARAM) return expand_param(c, n);

    /* the rank of the first input for axis checks; -1 when an input failed, and then the
     * attributes are only read (and checked as far as that goes) */
    bool inputs_ok = true;
    for (int k = 0; k < n->n_in; k++) inputs_ok &= n->in[k] != KILN_NONE;
    int rank = n->n_in == 0 ? 0 : inputs_ok ? fe_type(c, n->in[0])->rank : -1;
    kiln_attrs a = {0};
    bool ok = true, present;
    switch (op) {
    case KILN_OP_SCALE: ok = fe_need_num(c, n, "by", &a.scalar); break;
    case KILN_OP_CAST: ok = get_dtype(c, n, -1, &a.dtype); break;
    case KILN_OP_DROPOUT:
        /* torch.nn.Dropout's default */
        ok = fe_get_num(c, n, "p", 0.5, &a.scalar);
        if (ok && !(a.scalar >= 0 && a.scalar < 1)) {
            fe_error(c, n, "p", "%g must lie in [0, 1)", a.scalar);
            ok = false;
        }
        break;
    case KILN_OP_SUM:
    case KILN_OP_MEAN:
    case KILN_OP_MAX:
        ok = fe_get_int_list(c, n, "axes", KILN_MAX_RANK, &a.n_axes, a.axes, &present);
        if (ok && !present) { /* all axes; `axes: []` reduces over none */
            a.n_axes = rank < 0 ? 0 : rank;
            for (int i = 0; i < a.n_axes; i++) a.axes[i] = i;
        }
        if (ok && rank >= 0)
            for (int i = 0; i < a.n_axes; i++)
                if (a.axes[i] < -rank || a.axes[i] >= rank) {
                    fe_error(c, n, fe_fmt(c, "axes[%d]", i), "axis %lld is out of range for rank %d",
                             (long long)a.axes[i], rank);
                    ok = false;
                }
        ok &= fe_get_bool(c, n, "keepdims", false, &a.keepdims);
        break;
    case KILN_OP_SOFTMAX:
    case KILN_OP_LOG_SOFTMAX: ok = get_axis(c, n, -1, rank, &a.axis); break;
    case KILN_OP_MATMUL:
        ok = fe_get_bool(c, n, "transpose_a", false, &a.transpose_a);
        ok &= fe_get_bool(c, n, "transpose_b", false, &a.transpose_b);
        break;
    case KILN_OP_RESHAPE: ok = fe_get_shape(c, n, "shape", true, true, &a.rank, a.shape); break;
    case KILN_OP_BROADCAST: ok = fe_get_shape(c, n, "shape", true, false, &a.rank, a.shape); break;
    case KILN_OP_TRANSPOSE: {
        int count;
        ok = fe_get_int_list(c, n, "perm", KILN_MAX_RANK, &count, a.perm, &present);
        if (ok && !present) {
            fe_error(c, n, "perm", "required key is missing (a permutation of the input's axes)");
            ok = false;
        } else if (ok && rank >= 0 && count != rank) {
            fe_error(c, n, "perm", "has %d entries but the input has rank %d", count, rank);
            ok = false;
        }
        break;
    }
    case KILN_OP_SLICE: {
        bool has_start, has_end;
        int64_t start, end;
        ok = get_axis(c, n, 0, rank, &a.axis);
        ok &= get_bound(c, n, "start", &has_start, &start);
        ok &= get_bound(c, n, "end", &has_end, &end);
        ok &= fe_get_int(c, n, "step", 1, &a.step);
        if (ok && a.step == 0) {
            fe_error(c, n, "step", "must not be 0");
            ok = false;
        }
        if (ok && inputs_ok) {
            int64_t len = fe_type(c, n->in[0])->dims[a.axis];
            kiln_slice_normalize(len, has_start, start, has_end, end, a.step, &a.start, &a.end);
        }
        break;
    }
    case KILN_OP_CONCAT: ok = get_axis(c, n, 0, rank, &a.axis); break;
    case KILN_OP_GATHER: ok = get_axis(c, n, 0, rank, &a.axis); break;
    case KILN_OP_IOTA:
        ok = fe_get_shape(c, n, "shape", true, false, &a.rank, a.shape);
        ok &= get_dtype(c, n, KILN_I32, &a.dtype);
        if (ok) ok = get_axis(c, n, 0, a.rank, &a.axis);
        else fe_mark_used(n, "axis");
        break;
    default: break; /* elementwise ops without attributes */
    }
    if (!ok || !inputs_ok) return KILN_NONE;
    if (op == KILN_OP_MATMUL && (rank == 1 || fe_type(c, n->in[1])->rank == 1)) return matmul_of_vectors(c, n, a);
    return fe_add(c, n, op, n->in, (uint32_t)n->n_in, &a, NULL);
}
