/* interp_grad.c — the reference interpreter's gradient ops: the ops that only autodiff
 * (passes/autodiff.c) emits.
 *
 * Design: each op is the textbook backward of its forward op in interp.c / interp_nn.c,
 * written the same way: one row (or one query) at a time, every sum in double, one
 * rounding to f32 per result element. The composites recompute what the forward had
 * (row statistics, softmax probabilities) instead of reading saved intermediates, so a
 * gradient depends only on the forward op's inputs and the cotangent:
 *
 *   unslice(g)               zeros of the attribute type, g placed at the slice positions
 *   scatter_add(g, idx)      zeros of the table type, rows of g added at their indices
 *   layernorm_grad(x, w, g)  dx = inv·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), ĝ = g·w
 *   attention_grad(…, g)     dq, dk, dv or dscores (attrs.wrt) from recomputed p
 *   cross_entropy_grad(x, t, g)  g/n·(softmax(x) − (1 − ε)·onehot(t) − ε/C) per kept row
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "interp_impl.h"

/* ---- unslice ------------------------------------------------------------------------------ */

/* The inverse of run_slice's strided read: input element idx goes to the result offset
 * base + Σ idx·stride, with the axis stride multiplied by the step. */
bool kiln_interp_unslice(const interp_call *c)
{
    const kiln_type *ot = &c->node->type, *xt = interp_in_type(c, 0);
    const kiln_attrs *a = &c->node->attrs;
    const float *x = interp_in(c, 0);
    float *out = c->out;
    int64_t n_out = kiln_type_numel(ot), n_in = kiln_type_numel(xt);
    for (int64_t i = 0; i < n_out; i++) out[i] = 0.0f;
    if (n_in == 0) return true;
    int64_t stride[KILN_MAX_RANK], s = 1;
    for (int d = ot->rank - 1; d >= 0; d--) {
        stride[d] = s;
        s *= ot->dims[d];
    }
    int64_t base = a->start * stride[a->axis];
    stride[a->axis] = xt->dims[a->axis] > 1 ? stride[a->axis] * a->step : 0; /* as run_slice */
    int64_t idx[KILN_MAX_RANK] = {0};
    for (int64_t i = 0; i < n_in; i++) {
        out[base + kiln_interp_offset(idx, stride, xt->rank)] = x[i];
        kiln_interp_next_index(idx, xt->dims, xt->rank);
    }
    return true;
}

/* ---- scatter_add ----------------------------------------------------------------------------- */

/* out[o, idx[j…], i] += g[o, j…, i] with the table (outer, n, inner); indices are checked
 * first, as gather does, so a bad one is an error and never a wild write. */
bool kiln_interp_scatter_add(const interp_call *c)
{
    const kiln_type *ot = &c->node->type, *it = interp_in_type(c, 1);
    const float *g = interp_in(c, 0);
    const int32_t *ids = interp_in(c, 1);
    int ax = (int)c->node->attrs.axis;
    int64_t outer = kiln_interp_span(ot->dims, 0, ax), n = ot->dims[ax];
    int64_t inner = kiln_interp_span(ot->dims, ax + 1, ot->rank);
    int64_t n_ids = kiln_type_numel(it), n_out = kiln_type_numel(ot);
    for (int64_t j = 0; j < n_ids; j++)
        if (ids[j] < 0 || ids[j] >= n) {
            char buf[160];
            return kiln_interp_fail(c, "index %d (element %lld of the indices) is out of range [0, %lld) for axis %d of %s",
                                    (int)ids[j], (long long)j, (long long)n, ax, kiln_type_str(ot, buf, sizeof buf));
        }
    double *acc = kiln_interp_alloc(c, (size_t)n_out * sizeof *acc, "scatter_add sums");
    if (!acc) return false;
    for (int64_t i = 0; i < n_out; i++) acc[i] = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < n_ids; j++)
            for (int64_t i = 0; i < inner; i++) acc[(o * n + ids[j]) * inner + i] += g[(o * n_ids + j) * inner + i];
    float *out = c->out;
    for (int64_t i = 0; i < n_out; i++) out[i] = (float)acc[i];
    free(acc);
    return true;
}

/* ---- layernorm_grad -------------------------------------------------------------------------- */

/* With x̂ = (x − mean)·inv and ĝ = g·w, the gradient of y = x̂·w + b through the mean and
 * the variance is dx = inv·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) over each row. */
bool kiln_interp_layernorm_grad(const interp_call *c)
{
    const kiln_type *t = &c->node->type;
    const float *x = interp_in(c, 0), *w = interp_in(c, 1), *g = interp_in(c, 2);
    float *dx = c->out;
    double eps = c->node->attrs.scalar;
    int64_t D = t->dims[t->rank - 1], rows = kiln_interp_span(t->dims, 0, t->rank - 1);
    if (D == 0) return true;
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = r * D;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < D; j++) mean += x[base + j];
        mean /= (double)D;
        for (int64_t j = 0; j < D; j++) var += (x[base + j] - mean) * (x[base + j] - mean);
        var /= (double)D;
        double inv = 1.0 / sqrt(var + eps);
        double m1 = 0, m2 = 0; /* mean(ĝ), mean(ĝ·x̂) */
        for (int64_t j = 0; j < D; j++) {
            double gh = (double)g[base + j] * w[j], xh = (x[base + j] - mean) * inv;
            m1 += gh;
            m2 += gh * xh;
        }
        m1 /= (double)D;
        m2 /= (double)D;
        for (int64_t j = 0; j < D; j++) {
            double gh = (double)g[base + j] * w[j], xh = (x[base + j] - mean) * inv;
            dx[base + j] = (float)(inv * (gh - m1 - xh * m2));
        }
    }
    return true;
}

/* ---- attention_grad -------------------------------------------------------------------------- */

/* Inputs as attention's (ir.h, KILN_A_ATTN), then [o, lse] (ignored: the statistics are
 * recomputed here, which is what makes this the oracle for kernels that use them), then
 * g (…,H,T,dv). Per batch-head l and
 * query i, the forward's probabilities p_j are recomputed exactly as kiln_interp_attention
 * does; then with dP_j = g_i·v_j and dS_j = p_j·(dP_j − Σ_k p_k·dP_k) (softmax's
 * backward):
 *   dq_i = scale·Σ_j dS_j·k_j     dk_j += scale·dS_j·q_i     dv_j += p_j·g_i
 *   dscores_ij = dS_j (what the bias receives, before the reduction to its shape).
 * Excluded keys have p_j = 0 and so get nothing; a query with no key left has zero
 * weights in the forward and contributes nothing here.
 * With attention dropout (multipliers m_j, kiln_interp_attn_drop_scale) the forward is
 * out_i = Σ_j p_j·m_j·v_j, so dv_j += p_j·m_j·g_i and the softmax sees dp_j = m_j·dP_j:
 * dS_j = p_j·(m_j·dP_j − Σ_k p_k·m_k·dP_k). */
bool kiln_interp_attention_grad(const interp_call *c)
{
    interp_attn at;
    kiln_interp_attn_init(c, &at);
    const kiln_attrs *a = at.a;
    const float *q = at.q, *k = at.k, *v = at.v;
    const float *g = interp_in(c, c->node->n_in - 1);
    int64_t T = at.T, dh = at.dh, S = at.S, dv = at.dv;

    int64_t n_out = kiln_type_numel(&c->node->type);
    double *acc = kiln_interp_alloc(c, (size_t)n_out * sizeof *acc, "attention gradient sums");
    double *p = kiln_interp_alloc(c, (size_t)(3 * S) * sizeof *p, "attention probabilities");
    if (!acc || !p) {
        free(acc);
        free(p);
        return false;
    }
    double *dS = p + S, *m = p + 2 * S;
    for (int64_t i = 0; i < n_out; i++) acc[i] = 0;

    int64_t idx[KILN_MAX_RANK] = {0};
    for (int64_t l = 0; l < at.n_batch; l++) {
        int64_t q0 = l * T * dh, k0 = l * S * dh, v0 = l * S * dv, g0 = l * T * dv;
        for (int64_t i = 0; i < T; i++) {
            /* the forward's probabilities; no key left: nothing flows back */
            if (!kiln_interp_attn_probs(&at, l, i, idx, p, NULL)) continue;

            kiln_interp_attn_drop_scale(&at, l, i, m);
            /* softmax's backward: dS_j = p_j·(m_j·dP_j − Σ_k p_k·m_k·dP_k) */
            double dot = 0;
            for (int64_t j = 0; j < S; j++) {
                double dP = 0;
                if (p[j] != 0 && m[j] != 0)
                    for (int64_t e = 0; e < dv; e++) dP += (double)g[g0 + i * dv + e] * v[v0 + j * dv + e];
                dS[j] = m[j] * dP;
                dot += p[j] * dS[j];
            }
            for (int64_t j = 0; j < S; j++) dS[j] = p[j] * (dS[j] - dot);

            switch ((kiln_wrt)a->wrt) {
            case KILN_WRT_Q:
                for (int64_t j = 0; j < S; j++)
                    for (int64_t d = 0; d < dh; d++) acc[q0 + i * dh + d] += a->scalar * dS[j] * k[k0 + j * dh + d];
                break;
            case KILN_WRT_K:
                for (int64_t j = 0; j < S; j++)
                    for (int64_t d = 0; d < dh; d++) acc[k0 + j * dh + d] += a->scalar * dS[j] * q[q0 + i * dh + d];
                break;
            case KILN_WRT_V:
                for (int64_t j = 0; j < S; j++)
                    for (int64_t e = 0; e < dv; e++) acc[v0 + j * dv + e] += p[j] * m[j] * g[g0 + i * dv + e];
                break;
            default: /* scores, laid out (…, H, T, S); relative: summed along diagonals,
                        (…, H, T + S − 1) at i − j + S − 1 */
                if (a->relative)
                    for (int64_t j = 0; j < S; j++) acc[l * (T + S - 1) + i - j + S - 1] += dS[j];
                else
                    for (int64_t j = 0; j < S; j++) acc[(l * T + i) * S + j] = dS[j];
                break;
            }
        }
        kiln_interp_next_index(idx, at.qt->dims, at.r - 2);
    }
    float *out = c->out;
    for (int64_t i = 0; i < n_out; i++) out[i] = (float)acc[i];
    free(acc);
    free(p);
    return true;
}

/* ---- cross_entropy_grad ----------------------------------------------------------------------- */

/* The loss is the mean over the n kept rows of (1 − ε)·nll + (ε/C)·Σ_c (lse − x_c), so
 * its gradient on a kept row is g/n·(p_c − (1 − ε)·[c = t] − ε/C) with p = softmax(x);
 * ignored rows get 0, and so does everything when no row is kept (torch's nll_loss
 * backward skips ignored rows the same way). */
bool kiln_interp_cross_entropy_grad(const interp_call *c)
{
    const kiln_type *xt = interp_in_type(c, 0);
    const float *x = interp_in(c, 0);
    const int32_t *target = interp_in(c, 1);
    double g = *(const float *)interp_in(c, 2);
    float *dx = c->out;
    int64_t C = xt->dims[xt->rank - 1], rows = kiln_type_numel(interp_in_type(c, 1));
    double eps = c->node->attrs.scalar;
    int64_t ignore = c->node->attrs.ignore_index;
    int64_t kept = 0;
    for (int64_t n = 0; n < rows; n++) {
        int64_t t = target[n];
        if (t == ignore) continue;
        if (t < 0 || t >= C)
            return kiln_interp_fail(c, "target %lld (element %lld of the targets) is out of range [0, %lld)",
                                    (long long)t, (long long)n, (long long)C);
        kept++;
    }
    for (int64_t n = 0; n < rows; n++) {
        int64_t t = target[n], base = n * C; /* offsets, not pointers: x may be NULL when empty */
        if (t == ignore) {
            for (int64_t j = 0; j < C; j++) dx[base + j] = 0.0f;
            continue;
        }
        double max = -INFINITY, sum = 0;
        for (int64_t j = 0; j < C; j++)
            if (x[base + j] > max) max = x[base + j];
        for (int64_t j = 0; j < C; j++) sum += exp(x[base + j] - max);
        double scale = g / (double)kept;
        for (int64_t j = 0; j < C; j++) {
            double pj = exp(x[base + j] - max) / sum;
            dx[base + j] = (float)(scale * (pj - (j == t ? 1.0 - eps : 0.0) - eps / (double)C));
        }
    }
    return true;
}
