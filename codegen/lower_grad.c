/* lower_grad.c — kernels for the ops only autodiff emits: unslice, scatter_add and the
 * gradient composites layernorm_grad and cross_entropy_grad (attention_grad is in
 * lower_attention.c).
 *
 * Design: each kernel follows its interpreter twin (ir/interp_grad.c) loop for loop, in
 * the style of the forward kernels it mirrors: unslice is slice's strided copy with the
 * roles of source and destination swapped; scatter_add checks every index before it
 * writes anything (like gather) and then adds rows; the composites recompute the
 * forward's row statistics (layernorm) or probabilities (cross_entropy) in
 * f32 and write the gradient. Results zero-fill first, so positions that receive
 * nothing (outside a slice, an unused table row, an ignored target, a masked key) are 0.
 */
#include <math.h>

#include "lower.h"

static LLVMValueRef add_i64(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(cg->b, a, b, ""); }
static LLVMValueRef mul_i64(kiln_cg *cg, LLVMValueRef a, int64_t k) { return LLVMBuildNSWMul(cg->b, a, cg_i64(cg, k), ""); }
static LLVMValueRef load_f32(kiln_cg *cg, LLVMValueRef p) { return LLVMBuildLoad2(cg->b, cg->t_f32, p, ""); }

/* out[0..n) = 0 */
static void zero_fill(kiln_cg *cg, LLVMValueRef out, int64_t n)
{
    if (n == 0) return;
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "zero");
    cg_store(cg, KILN_F32, out, l.i, cg_f32(cg, 0.0));
    cg_loop_end(cg, &l);
}

/* out[off] += v */
static void add_to(kiln_cg *cg, LLVMValueRef out, LLVMValueRef off, LLVMValueRef v)
{
    cg_store(cg, KILN_F32, out, off, cg_fadd(cg, cg_load(cg, KILN_F32, out, off), v));
}

/* ---- unslice ------------------------------------------------------------------------------ */

/* A nest over the input (row-major) writing the result at start·stride + Σ idx·stride,
 * the axis stride times the step: lower_slice's copy the other way round. */
void lower_unslice(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *ot = &c->node->type, *xt = lower_in_type(c, 0);
    const kiln_attrs *a = &c->node->attrs;
    zero_fill(cg, c->out, kiln_type_numel(ot));
    if (kiln_type_numel(xt) == 0) return;
    int64_t dims[KILN_MAX_RANK], stride[2][KILN_MAX_RANK];
    cg_row_major_strides(ot, stride[0]);
    cg_row_major_strides(xt, stride[1]);
    int64_t base = a->start * stride[0][a->axis];
    stride[0][a->axis] = xt->dims[a->axis] > 1 ? stride[0][a->axis] * a->step : 0;
    for (int d = 0; d < xt->rank; d++) dims[d] = xt->dims[d];
    int rank = cg_collapse_dims(xt->rank, dims, 2, stride);
    LLVMValueRef bases[2] = {cg_i64(cg, base), cg_i64(cg, 0)};
    cg_nest nest;
    cg_nest_begin(cg, &nest, rank, dims, 2, stride, bases);
    cg_store(cg, KILN_F32, c->out, nest.off[0], cg_load(cg, KILN_F32, c->in[0], nest.off[1]));
    cg_nest_end(cg, &nest);
}

/* ---- scatter_add ---------------------------------------------------------------------------- */

/* out (outer, n, inner) = 0; out[o, ids[j], i] += g[o, j, i]. Every index is checked first
 * (as gather does): a bad one returns KILN_RC_INDEX_RANGE before anything is written. */
void lower_scatter_add(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *ot = &c->node->type, *it = lower_in_type(c, 1);
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(ot->dims, 0, ax), n = ot->dims[ax], inner = cg_span(ot->dims, ax + 1, ot->rank);
    int64_t n_ids = kiln_type_numel(it);

    if (n_ids > 0) {
        LLVMValueRef bad = cg_local(cg, cg->t_i1, "bad");
        LLVMBuildStore(cg->b, LLVMConstInt(cg->t_i1, 0, 0), bad);
        cg_loop l;
        cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n_ids), "j");
        LLVMValueRef id = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], l.i), cg->t_i64, "");
        LLVMValueRef out_of_range = LLVMBuildICmp(cg->b, LLVMIntUGE, id, cg_i64(cg, n), "");
        LLVMBuildStore(cg->b, LLVMBuildOr(cg->b, LLVMBuildLoad2(cg->b, cg->t_i1, bad, ""), out_of_range, ""), bad);
        cg_loop_end(cg, &l);
        cg_return_if(cg, LLVMBuildLoad2(cg->b, cg->t_i1, bad, ""), KILN_RC_INDEX_RANGE);
    }
    zero_fill(cg, c->out, kiln_type_numel(ot));
    if (n_ids == 0 || outer * inner == 0) return;

    /* rows: nest over (outer, n_ids); operand 0 = the table's outer row, 1 = g's row */
    int64_t dims[2] = {outer, n_ids};
    int64_t stride[2][KILN_MAX_RANK] = {{n * inner, 0}, {n_ids * inner, inner}};
    cg_nest rows;
    cg_nest_begin(cg, &rows, 2, dims, 2, stride, NULL);
    LLVMValueRef row = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], rows.loop[1].i), cg->t_i64, "");
    LLVMValueRef dst = add_i64(cg, rows.off[0], mul_i64(cg, row, inner));
    cg_loop i;
    cg_loop_begin(cg, &i, cg_i64(cg, 0), cg_i64(cg, inner), "i");
    add_to(cg, c->out, add_i64(cg, dst, i.i), cg_load(cg, KILN_F32, c->in[0], add_i64(cg, rows.off[1], i.i)));
    cg_loop_end(cg, &i);
    cg_nest_end(cg, &rows);
}

/* ---- layernorm_grad --------------------------------------------------------------------------- */

/* Σ_j f over a contiguous row of D, into an f32 accumulator (reassociated, vectorisable):
 * f is x_j, (x_j − mean)², ĝ_j = g_j·w_j or ĝ_j·x̂_j. */
enum row_term { TERM_X, TERM_CENTRED_SQ, TERM_GW, TERM_GW_XHAT };

static LLVMValueRef row_term_sum(lower_ctx *c, LLVMValueRef base, int64_t D, enum row_term term, LLVMValueRef mean,
                                 LLVMValueRef inv)
{
    kiln_cg *cg = c->cg;
    LLVMValueRef acc = cg_local(cg, cg->t_f32, "acc");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), acc);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    LLVMValueRef off = add_i64(cg, base, l.i);
    LLVMValueRef x = cg_load(cg, KILN_F32, c->in[0], off), v;
    if (term == TERM_X) {
        v = x;
    } else if (term == TERM_CENTRED_SQ) {
        v = cg_fsub(cg, x, mean);
        v = cg_fmul(cg, v, v);
    } else {
        v = cg_fmul(cg, cg_load(cg, KILN_F32, c->in[2], off), cg_load(cg, KILN_F32, c->in[1], l.i));
        if (term == TERM_GW_XHAT) v = cg_fmul(cg, v, cg_fmul(cg, cg_fsub(cg, x, mean), inv));
    }
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, load_f32(cg, acc), v), acc);
    cg_loop_end(cg, &l);
    return load_f32(cg, acc);
}

/* dx = inv·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) per row, the statistics recomputed in two passes
 * as the forward kernel does. */
void lower_layernorm_grad(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *t = &c->node->type;
    int64_t D = t->dims[t->rank - 1], rows = cg_span(t->dims, 0, t->rank - 1);
    if (D == 0 || rows == 0) return;
    LLVMValueRef dval = LLVMConstReal(cg->t_f32, (double)D);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, rows), "row");
    LLVMValueRef base = mul_i64(cg, r.i, D);
    LLVMValueRef mean = cg_fdiv(cg, row_term_sum(c, base, D, TERM_X, NULL, NULL), dval);
    LLVMValueRef var = cg_fdiv(cg, row_term_sum(c, base, D, TERM_CENTRED_SQ, mean, NULL), dval);
    LLVMValueRef inv = cg_fdiv(cg, cg_f32(cg, 1.0),
                               cg_intrinsic1(cg, "llvm.sqrt", cg_fadd(cg, var, cg_f32(cg, c->node->attrs.scalar))));
    LLVMValueRef m1 = cg_fdiv(cg, row_term_sum(c, base, D, TERM_GW, NULL, NULL), dval);
    LLVMValueRef m2 = cg_fdiv(cg, row_term_sum(c, base, D, TERM_GW_XHAT, mean, inv), dval);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    LLVMValueRef off = add_i64(cg, base, l.i);
    LLVMValueRef xhat = cg_fmul(cg, cg_fsub(cg, cg_load(cg, KILN_F32, c->in[0], off), mean), inv);
    LLVMValueRef gw = cg_fmul(cg, cg_load(cg, KILN_F32, c->in[2], off), cg_load(cg, KILN_F32, c->in[1], l.i));
    LLVMValueRef dx = cg_fmul(cg, inv, cg_fsub(cg, cg_fsub(cg, gw, m1), cg_fmul(cg, xhat, m2)));
    cg_store(cg, KILN_F32, c->out, off, dx);
    cg_loop_end(cg, &l);
    cg_loop_end(cg, &r);
}

/* ---- cross_entropy_grad --------------------------------------------------------------------------- */

/* Kept rows (target ≠ ignore_index) get g/n·(softmax(x) − (1 − ε)·onehot(t) − ε/C), n
 * the number of kept rows; the rest stay 0. A target outside [0, C) returns
 * KILN_RC_TARGET_RANGE before anything is written. */
void lower_cross_entropy_grad(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *xt = lower_in_type(c, 0);
    int64_t C = xt->dims[xt->rank - 1], rows = kiln_type_numel(lower_in_type(c, 1));
    double eps = c->node->attrs.scalar;
    LLVMValueRef ignore = cg_i64(cg, c->node->attrs.ignore_index);

    /* 1. count the kept rows and check their targets */
    LLVMValueRef kept = cg_local(cg, cg->t_i64, "kept");
    LLVMBuildStore(cg->b, cg_i64(cg, 0), kept);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, rows), "row");
    LLVMValueRef t = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], r.i), cg->t_i64, "");
    cg_if keep;
    cg_if_begin(cg, &keep, LLVMBuildICmp(cg->b, LLVMIntNE, t, ignore, ""));
    cg_return_if(cg, LLVMBuildICmp(cg->b, LLVMIntUGE, t, cg_i64(cg, C), ""), KILN_RC_TARGET_RANGE);
    LLVMBuildStore(cg->b, add_i64(cg, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg_i64(cg, 1)), kept);
    cg_if_end(cg, &keep);
    cg_loop_end(cg, &r);

    zero_fill(cg, c->out, rows * C);
    if (rows * C == 0) return;
    LLVMValueRef n = LLVMBuildSIToFP(cg->b, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg->t_f32, "");
    LLVMValueRef scale = cg_fdiv(cg, cg_load(cg, KILN_F32, c->in[2], cg_i64(cg, 0)), n);

    /* 2. each kept row: max, Σ exp(x − max), then the gradient */
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, rows), "row");
    t = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], r.i), cg->t_i64, "");
    cg_if_begin(cg, &keep, LLVMBuildICmp(cg->b, LLVMIntNE, t, ignore, ""));
    LLVMValueRef base = mul_i64(cg, r.i, C);
    LLVMValueRef max = cg_local(cg, cg->t_f32, "max"), sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f32, -INFINITY), max);
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    LLVMValueRef xv = cg_load(cg, KILN_F32, c->in[0], add_i64(cg, base, l.i));
    LLVMBuildStore(cg->b, cg_intrinsic2(cg, "llvm.maximum", load_f32(cg, max), xv), max);
    cg_loop_end(cg, &l);
    LLVMValueRef m = load_f32(cg, max);
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    xv = cg_load(cg, KILN_F32, c->in[0], add_i64(cg, base, l.i));
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, load_f32(cg, sum), cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, xv, m))), sum);
    cg_loop_end(cg, &l);
    LLVMValueRef total = load_f32(cg, sum);
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    LLVMValueRef off = add_i64(cg, base, l.i);
    LLVMValueRef pj = cg_fdiv(cg, cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, c->in[0], off), m)), total);
    LLVMValueRef hit = LLVMBuildICmp(cg->b, LLVMIntEQ, l.i, t, "");
    LLVMValueRef want = LLVMBuildSelect(cg->b, hit, cg_f32(cg, 1.0 - eps + eps / (double)C), cg_f32(cg, eps / (double)C), "");
    cg_store(cg, KILN_F32, c->out, off, cg_fmul(cg, scale, cg_fsub(cg, pj, want)));
    cg_loop_end(cg, &l);
    cg_if_end(cg, &keep);
    cg_loop_end(cg, &r);
}
