/* build.c — the frontend's node builders.
 *
 * Thin wrappers over kiln_graph_add that supply the location (the layer's JSON path), so
 * that a shape error inside a module names the layer it came from. Every builder
 * accepts KILN_NONE operands (from an earlier error) and then returns KILN_NONE without
 * a message, which keeps one problem from being reported many times.
 *
 * Parameters are PARAM nodes named with their full SPEC name; fe_param also appends them
 * to model->params, whose order is the parameter blob order. The initialiser is only
 * recorded here (attrs.init / init_arg); weights are drawn later, from init.seed.
 */
#include <string.h>

#include "fe.h"

/* Copies n dims (n may be 0 with dims NULL, e.g. for a scalar constant). */
static void copy_dims(int64_t *dst, const int64_t *src, int n)
{
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof *src);
}

uint32_t fe_add(fe_ctx *c, const fe_node *n, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a,
                const char *label)
{
    return kiln_graph_add(c->g, op, in, n_in, a, label, n->path, c->diags);
}

uint32_t fe_unary(fe_ctx *c, const fe_node *n, kiln_op op, uint32_t x)
{
    return fe_add(c, n, op, &x, 1, NULL, NULL);
}

uint32_t fe_binary(fe_ctx *c, const fe_node *n, kiln_op op, uint32_t x, uint32_t y)
{
    uint32_t in[2] = {x, y};
    return fe_add(c, n, op, in, 2, NULL, NULL);
}

uint32_t fe_scale(fe_ctx *c, const fe_node *n, uint32_t x, double by)
{
    kiln_attrs a = {0};
    a.scalar = by;
    return fe_add(c, n, KILN_OP_SCALE, &x, 1, &a, NULL);
}

uint32_t fe_reshape(fe_ctx *c, const fe_node *n, uint32_t x, int rank, const int64_t *dims)
{
    kiln_attrs a = {0};
    a.rank = rank;
    copy_dims(a.shape, dims, rank);
    return fe_add(c, n, KILN_OP_RESHAPE, &x, 1, &a, NULL);
}

uint32_t fe_transpose(fe_ctx *c, const fe_node *n, uint32_t x, const int64_t *perm)
{
    if (x == KILN_NONE) return KILN_NONE;
    kiln_attrs a = {0};
    copy_dims(a.perm, perm, fe_type(c, x)->rank);
    return fe_add(c, n, KILN_OP_TRANSPOSE, &x, 1, &a, NULL);
}

static uint32_t constant(fe_ctx *c, const fe_node *n, kiln_dtype dtype, int rank, const int64_t *dims,
                         const void *values, int64_t n_values)
{
    kiln_attrs a = {0};
    a.dtype = dtype;
    a.rank = rank;
    copy_dims(a.shape, dims, rank);
    a.values = values; /* copied into the graph's arena by kiln_graph_add */
    a.n_values = n_values;
    return fe_add(c, n, KILN_OP_CONSTANT, NULL, 0, &a, NULL);
}

uint32_t fe_const_f32(fe_ctx *c, const fe_node *n, int rank, const int64_t *dims, const float *values, int64_t n_values)
{
    return constant(c, n, KILN_F32, rank, dims, values, n_values);
}

uint32_t fe_const_i32(fe_ctx *c, const fe_node *n, int rank, const int64_t *dims, const int32_t *values,
                      int64_t n_values)
{
    return constant(c, n, KILN_I32, rank, dims, values, n_values);
}

uint32_t fe_to_f32(fe_ctx *c, const fe_node *n, uint32_t x)
{
    if (x == KILN_NONE || fe_type(c, x)->dtype == KILN_F32) return x;
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    return fe_add(c, n, KILN_OP_CAST, &x, 1, &a, NULL);
}

uint32_t fe_find_param(fe_ctx *c, const char *name)
{
    uint32_t id;
    return fe_index_get(&c->param_index, name, &id) ? id : KILN_NONE;
}

uint32_t fe_param(fe_ctx *c, const fe_node *n, const char *name, int rank, const int64_t *dims, kiln_init init,
                  double init_arg)
{
    if (fe_find_param(c, name) != KILN_NONE) {
        fe_error(c, n, NULL, "parameter '%s' is defined twice", name);
        return KILN_NONE;
    }
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.rank = rank;
    copy_dims(a.shape, dims, rank);
    a.name = name;
    a.init = init;
    a.init_arg = init_arg;
    uint32_t id = fe_add(c, n, KILN_OP_PARAM, NULL, 0, &a, name);
    if (id == KILN_NONE) return KILN_NONE;

    kiln_model *m = c->m;
    if (m->n_params == c->n_params_cap) {
        /* an arena array, like everything else the model keeps; the old one is abandoned */
        int cap = c->n_params_cap ? 2 * c->n_params_cap : 64;
        uint32_t *p = kiln_arena_alloc(&c->g->arena, (size_t)cap * sizeof *p);
        if (m->n_params) memcpy(p, m->params, (size_t)m->n_params * sizeof *p);
        m->params = p;
        c->n_params_cap = cap;
    }
    m->params[m->n_params++] = id;
    fe_index_put(c, &c->param_index, c->g->nodes[id].attrs.name, id);
    return id;
}

const char *fe_prefix(fe_ctx *c, const fe_node *n)
{
    /* SPEC: "NAME.0.…" as soon as `repeat` is written, even `repeat: 1` */
    if (n->has_repeat) return fe_fmt(c, "%s.%d", n->name, n->copy);
    return n->name;
}
