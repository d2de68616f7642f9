/* lower_reduce.c — reductions (sum, mean, max), softmax / log_softmax, layernorm and
 * cross_entropy.
 *
 * Design:
 * - sum/mean/max over any sorted axis set: the result is first set to the identity,
 *   then one nest walks the input in memory order and folds each element into its
 *   result element (stride 0 along reduced dims). Whatever dims are reduced, the
 *   innermost loop is either an elementwise update of a contiguous result row (kept
 *   last dim) or a reduction into one result element that LICM keeps in a register
 *   (reduced last dim); the vectoriser handles both, the second thanks to `reassoc` on
 *   the accumulating fadd. Max uses llvm.maximum (NaN sticks, like the interpreter).
 * - softmax-like ops work on rows along the axis (element j of row (o, i) at
 *   (o·n + j)·inner + i), each row in three passes: max, Σ exp(x − max), write. For the
 *   usual last axis (inner = 1) every pass is a contiguous loop.
 * - Row statistics are accumulated in f32 (vectorised, partial sums per lane), cross-
 *   row totals (cross_entropy) in double.
 */
#include <math.h>

#include "lower.h"

static LLVMValueRef neg_inf(kiln_cg *cg) { return LLVMConstReal(cg->t_f32, -INFINITY); }

void lower_reduce(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_node *n = c->node;
    const kiln_type *xt = lower_in_type(c, 0), *ot = &n->type;
    kiln_dtype dt = ot->dtype;
    bool is_max = n->op == KILN_OP_MAX;
    int64_t n_out = kiln_type_numel(ot), n_in = kiln_type_numel(xt);
    if (n_out == 0) return;

    LLVMValueRef identity = is_max ? (dt == KILN_I32 ? cg_i32(cg, INT32_MIN) : neg_inf(cg))
                                   : (dt == KILN_I32 ? cg_i32(cg, 0) : cg_f32(cg, 0.0));
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n_out), "init");
    cg_store(cg, dt, c->out, l.i, identity);
    cg_loop_end(cg, &l);

    if (n_in > 0) {
        /* operand 0: the input (row-major); operand 1: the result (0 on reduced dims) */
        bool reduced[KILN_MAX_RANK] = {0};
        for (int i = 0; i < n->attrs.n_axes; i++) reduced[n->attrs.axes[i]] = true;
        int64_t dims[KILN_MAX_RANK], stride[2][KILN_MAX_RANK];
        cg_row_major_strides(xt, stride[0]);
        int64_t s = 1;
        for (int d = xt->rank - 1; d >= 0; d--) {
            dims[d] = xt->dims[d];
            stride[1][d] = reduced[d] ? 0 : s;
            if (!reduced[d]) s *= xt->dims[d];
        }
        int rank = cg_collapse_dims(xt->rank, dims, 2, stride);
        cg_nest nest;
        cg_nest_begin(cg, &nest, rank, dims, 2, stride, NULL);
        LLVMValueRef v = cg_load(cg, dt, c->in[0], nest.off[0]);
        LLVMValueRef acc = cg_load(cg, dt, c->out, nest.off[1]);
        LLVMValueRef r;
        if (is_max) r = cg_intrinsic2(cg, dt == KILN_I32 ? "llvm.smax" : "llvm.maximum", acc, v);
        else r = dt == KILN_I32 ? LLVMBuildAdd(cg->b, acc, v, "") : cg_fadd_reduce(cg, acc, v);
        cg_store(cg, dt, c->out, nest.off[1], r);
        cg_nest_end(cg, &nest);
    }

    if (n->op == KILN_OP_MEAN) { /* over nothing: 0/0 = NaN, as numpy */
        int64_t count = n_out ? n_in / n_out : 0;
        if (n_in == 0) count = 0;
        cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n_out), "mean");
        LLVMValueRef v = cg_load(cg, dt, c->out, l.i);
        cg_store(cg, dt, c->out, l.i, cg_fdiv(cg, v, LLVMConstReal(cg->t_f32, (double)count)));
        cg_loop_end(cg, &l);
    }
}

/* ---- rows ----------------------------------------------------------------------------------- */

/* max over j < n of x[base + j·step] (−inf for an empty row; NaN if any is NaN) */
static LLVMValueRef row_max(kiln_cg *cg, LLVMValueRef x, LLVMValueRef base, int64_t n, int64_t step)
{
    LLVMValueRef acc = cg_local(cg, cg->t_f32, "max");
    LLVMBuildStore(cg->b, neg_inf(cg), acc);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "j");
    LLVMValueRef off = LLVMBuildNSWAdd(cg->b, base, LLVMBuildNSWMul(cg->b, l.i, cg_i64(cg, step), ""), "");
    LLVMValueRef m = cg_intrinsic2(cg, "llvm.maximum", LLVMBuildLoad2(cg->b, cg->t_f32, acc, ""), cg_load(cg, KILN_F32, x, off));
    LLVMBuildStore(cg->b, m, acc);
    cg_loop_end(cg, &l);
    return LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
}

static LLVMValueRef row_offset(kiln_cg *cg, LLVMValueRef base, LLVMValueRef j, int64_t step)
{
    return LLVMBuildNSWAdd(cg->b, base, LLVMBuildNSWMul(cg->b, j, cg_i64(cg, step), ""), "");
}

/* softmax: y = exp(x − max) / Σ; log_softmax: y = (x − max) − log Σ. */
void lower_softmax(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *t = &c->node->type;
    bool log_form = c->node->op == KILN_OP_LOG_SOFTMAX;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(t->dims, 0, ax), n = t->dims[ax], inner = cg_span(t->dims, ax + 1, t->rank);
    if (outer * n * inner == 0) return;

    int64_t dims[2] = {outer, inner}, stride[1][KILN_MAX_RANK] = {{n * inner, 1}};
    cg_nest rows;
    cg_nest_begin(cg, &rows, 2, dims, 1, stride, NULL);
    LLVMValueRef base = rows.off[0];
    LLVMValueRef max = row_max(cg, c->in[0], base, n, inner);

    LLVMValueRef sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "j");
    LLVMValueRef off = row_offset(cg, base, l.i, inner);
    LLVMValueRef e = cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, c->in[0], off), max));
    if (!log_form) cg_store(cg, KILN_F32, c->out, off, e);
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, sum, ""), e), sum);
    cg_loop_end(cg, &l);

    LLVMValueRef total = LLVMBuildLoad2(cg->b, cg->t_f32, sum, "");
    LLVMValueRef log_total = log_form ? cg_intrinsic1(cg, "llvm.log", total) : NULL;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "j");
    off = row_offset(cg, base, l.i, inner);
    LLVMValueRef y;
    if (log_form) y = cg_fsub(cg, cg_fsub(cg, cg_load(cg, KILN_F32, c->in[0], off), max), log_total);
    else y = cg_fdiv(cg, cg_load(cg, KILN_F32, c->out, off), total);
    cg_store(cg, KILN_F32, c->out, off, y);
    cg_loop_end(cg, &l);
    cg_nest_end(cg, &rows);
}

/* Σ_j f(x[base + j]) over a contiguous row of n, f32 with reassociation. */
static LLVMValueRef row_sum(kiln_cg *cg, LLVMValueRef x, LLVMValueRef base, int64_t n, LLVMValueRef shift, bool square)
{
    LLVMValueRef acc = cg_local(cg, cg->t_f32, "acc");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), acc);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "j");
    LLVMValueRef v = cg_load(cg, KILN_F32, x, LLVMBuildNSWAdd(cg->b, base, l.i, ""));
    if (shift) v = cg_fsub(cg, v, shift);
    if (square) v = cg_fmul(cg, v, v);
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, acc, ""), v), acc);
    cg_loop_end(cg, &l);
    return LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
}

/* y = (x − mean)·(1/√(var + eps))·w + b over the last axis; var is the biased
 * variance, computed from the centred values (two passes, as the interpreter). */
void lower_layernorm(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *t = &c->node->type;
    int64_t D = t->dims[t->rank - 1], rows = cg_span(t->dims, 0, t->rank - 1);
    if (D == 0 || rows == 0) return;
    LLVMValueRef dval = LLVMConstReal(cg->t_f32, (double)D);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, rows), "row");
    LLVMValueRef base = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, D), "");
    LLVMValueRef mean = cg_fdiv(cg, row_sum(cg, c->in[0], base, D, NULL, false), dval);
    LLVMValueRef var = cg_fdiv(cg, row_sum(cg, c->in[0], base, D, mean, true), dval);
    LLVMValueRef inv = cg_fdiv(cg, cg_f32(cg, 1.0),
                               cg_intrinsic1(cg, "llvm.sqrt", cg_fadd(cg, var, cg_f32(cg, c->node->attrs.scalar))));
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    LLVMValueRef off = LLVMBuildNSWAdd(cg->b, base, l.i, "");
    LLVMValueRef x = cg_fsub(cg, cg_load(cg, KILN_F32, c->in[0], off), mean);
    LLVMValueRef y = cg_fadd(cg, cg_fmul(cg, cg_fmul(cg, x, inv), cg_load(cg, KILN_F32, c->in[1], l.i)),
                             cg_load(cg, KILN_F32, c->in[2], l.i));
    cg_store(cg, KILN_F32, c->out, off, y);
    cg_loop_end(cg, &l);
    cg_loop_end(cg, &r);
}

/* logits (…, C), targets i32 (…) → the mean over kept rows (target ≠ ignore_index) of
 * (1 − ε)·(lse − x_t) + (ε/C)·Σ_c (lse − x_c), the interpreter's formula. A target
 * outside [0, C) makes the kernel return KILN_RC_TARGET_RANGE before writing. */
void lower_cross_entropy(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *xt = lower_in_type(c, 0);
    int64_t C = xt->dims[xt->rank - 1], rows = kiln_type_numel(lower_in_type(c, 1));
    double eps = c->node->attrs.scalar;
    LLVMValueRef nll = cg_local(cg, cg->t_f64, "nll"), smooth = cg_local(cg, cg->t_f64, "smooth");
    LLVMValueRef kept = cg_local(cg, cg->t_i64, "kept");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f64, 0.0), nll);
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f64, 0.0), smooth);
    LLVMBuildStore(cg->b, cg_i64(cg, 0), kept);

    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, rows), "row");
    LLVMValueRef t = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], r.i), cg->t_i64, "");
    cg_if keep;
    cg_if_begin(cg, &keep, LLVMBuildICmp(cg->b, LLVMIntNE, t, cg_i64(cg, c->node->attrs.ignore_index), ""));
    /* unsigned compare: a negative target is a huge number */
    cg_return_if(cg, LLVMBuildICmp(cg->b, LLVMIntUGE, t, cg_i64(cg, C), ""), KILN_RC_TARGET_RANGE);
    LLVMValueRef base = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, C), "");
    LLVMValueRef max = row_max(cg, c->in[0], base, C, 1);
    LLVMValueRef sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    LLVMValueRef e = cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, c->in[0], LLVMBuildNSWAdd(cg->b, base, l.i, "")), max));
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, sum, ""), e), sum);
    cg_loop_end(cg, &l);
    LLVMValueRef lse = cg_fadd(cg, max, cg_intrinsic1(cg, "llvm.log", LLVMBuildLoad2(cg->b, cg->t_f32, sum, "")));
    LLVMValueRef xt_val = cg_load(cg, KILN_F32, c->in[0], LLVMBuildNSWAdd(cg->b, base, t, ""));
    LLVMValueRef row_nll = LLVMBuildFPExt(cg->b, cg_fsub(cg, lse, xt_val), cg->t_f64, "");
    LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, nll, ""), row_nll, ""), nll);
    if (eps != 0) {
        /* Σ_c (lse − x_c) = C·lse − Σ_c x_c, both in f32 */
        LLVMValueRef sx = row_sum(cg, c->in[0], base, C, NULL, false);
        LLVMValueRef row_smooth = cg_fsub(cg, cg_fmul(cg, LLVMConstReal(cg->t_f32, (double)C), lse), sx);
        LLVMValueRef wide = LLVMBuildFPExt(cg->b, row_smooth, cg->t_f64, "");
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, smooth, ""), wide, ""), smooth);
    }
    LLVMBuildStore(cg->b, LLVMBuildNSWAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg_i64(cg, 1), ""), kept);
    cg_if_end(cg, &keep);
    cg_loop_end(cg, &r);

    /* (1 − ε)·nll/kept + ε/C·smooth/kept; no kept row gives 0/0 = NaN, as torch */
    LLVMValueRef k = LLVMBuildSIToFP(cg->b, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg->t_f64, "");
    LLVMValueRef loss = LLVMBuildFMul(cg->b, LLVMConstReal(cg->t_f64, 1.0 - eps),
                                      LLVMBuildFDiv(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, nll, ""), k, ""), "");
    if (eps != 0) {
        LLVMValueRef s = LLVMBuildFDiv(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, smooth, ""), k, "");
        loss = LLVMBuildFAdd(cg->b, loss, LLVMBuildFMul(cg->b, LLVMConstReal(cg->t_f64, eps / (double)C), s, ""), "");
    }
    cg_store(cg, KILN_F32, c->out, cg_i64(cg, 0), LLVMBuildFPTrunc(cg->b, loss, cg->t_f32, ""));
}
