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
 *
 * Threads: unslice splits its copy by the outer dim, layernorm_grad and
 * cross_entropy_grad by rows, scatter_add by blocks of columns (duplicate indices add into
 * one table row, so only columns are independent); index and target checks run first on
 * the calling thread. Each output element is written by one thread in a fixed order.
 */
#include <math.h>

#include "lower.h"

static LLVMValueRef add_i64(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(cg->b, a, b, ""); }
static LLVMValueRef mul_i64(kiln_cg *cg, LLVMValueRef a, int64_t k) { return LLVMBuildNSWMul(cg->b, a, cg_i64(cg, k), ""); }
static LLVMValueRef load_f32(kiln_cg *cg, LLVMValueRef p) { return LLVMBuildLoad2(cg->b, cg->t_f32, p, ""); }

/* out[off] += v */
static void add_to(kiln_cg *cg, LLVMValueRef out, LLVMValueRef off, LLVMValueRef v)
{
    cg_store(cg, KILN_F32, out, off, cg_fadd(cg, cg_load(cg, KILN_F32, out, off), v));
}

/* out[off0] = 0 (a cg_parallel_nest body; vals = out) */
static void zero_elem(kiln_cg *cg, void *user, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    (void)user;
    cg_store(cg, KILN_F32, vals[0], off[0], cg_f32(cg, 0.0));
}

/* out[0..n) = 0, split across threads in runs */
static void zero_fill_parallel(kiln_cg *cg, LLVMValueRef out, int64_t n)
{
    if (n == 0) return;
    int64_t stride[1][KILN_MAX_RANK] = {{1}};
    cg_parallel_nest(cg, "zero", 1, &n, 1, (const int64_t(*)[KILN_MAX_RANK])stride, 1, &out, 1, zero_elem, NULL);
}

/* ---- unslice ------------------------------------------------------------------------------ */

/* out[off0] = x[off1] (vals = out, x) */
static void copy_f32(kiln_cg *cg, void *user, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    (void)user;
    cg_store(cg, KILN_F32, vals[0], off[0], cg_load(cg, KILN_F32, vals[1], off[1]));
}

/* A nest over the input (row-major) writing the result at start·stride + Σ idx·stride,
 * the axis stride times the step: lower_slice's copy the other way round, split across
 * threads by its outer dim. The zero fill is skipped when the slice covers the result. */
void lower_unslice(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *ot = &c->node->type, *xt = lower_in_type(c, 0);
    const kiln_attrs *a = &c->node->attrs;
    if (kiln_type_numel(xt) != kiln_type_numel(ot)) zero_fill_parallel(cg, c->out, kiln_type_numel(ot));
    if (kiln_type_numel(xt) == 0) return;
    int64_t dims[KILN_MAX_RANK], stride[2][KILN_MAX_RANK];
    cg_row_major_strides(ot, stride[0]);
    cg_row_major_strides(xt, stride[1]);
    int64_t base = a->start * stride[0][a->axis];
    stride[0][a->axis] = xt->dims[a->axis] > 1 ? stride[0][a->axis] * a->step : 0;
    for (int d = 0; d < xt->rank; d++) dims[d] = xt->dims[d];
    int rank = cg_collapse_dims(xt->rank, dims, 2, stride);
    LLVMValueRef vals[2] = {cg_byte_offset(cg, c->out, base * KILN_ELEM_BYTES), c->in[0]};
    cg_parallel_nest(cg, "copy", rank, dims, 2, (const int64_t(*)[KILN_MAX_RANK])stride, 1, vals, 2, copy_f32, NULL);
}

/* ---- scatter_add ---------------------------------------------------------------------------- */

/* Duplicate indices add into one table row, so rows cannot be split across threads;
 * columns can. An item is (o, a block of blk columns of inner): it zeroes its block of
 * every table row and adds g's rows into it in index order — one thread per output
 * element, the same order for any thread count. */
typedef struct scatter_job {
    int64_t n, n_ids, inner, blk, blocks;
} scatter_job;

/* items [begin, end); vals = out, g, ids */
static void scatter_cols(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const scatter_job *sj = user;
    LLVMValueRef out = vals[0], g = vals[1], ids = vals[2];
    cg_loop it;
    cg_loop_begin(cg, &it, begin, end, "item");
    LLVMValueRef o = LLVMBuildSDiv(cg->b, it.i, cg_i64(cg, sj->blocks), "");
    LLVMValueRef lo = mul_i64(cg, LLVMBuildSRem(cg->b, it.i, cg_i64(cg, sj->blocks), ""), sj->blk);
    LLVMValueRef hi = add_i64(cg, lo, cg_i64(cg, sj->blk)), inner = cg_i64(cg, sj->inner);
    hi = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, hi, inner, ""), hi, inner, "");
    LLVMValueRef table = mul_i64(cg, o, sj->n * sj->inner), grows = mul_i64(cg, o, sj->n_ids * sj->inner);
    cg_loop r, i;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, sj->n), "trow");
    LLVMValueRef dst = add_i64(cg, table, mul_i64(cg, r.i, sj->inner));
    cg_loop_begin(cg, &i, lo, hi, "i");
    cg_store(cg, KILN_F32, out, add_i64(cg, dst, i.i), cg_f32(cg, 0.0));
    cg_loop_end(cg, &i);
    cg_loop_end(cg, &r);
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, sj->n_ids), "j");
    LLVMValueRef row = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, ids, r.i), cg->t_i64, "");
    dst = add_i64(cg, table, mul_i64(cg, row, sj->inner));
    LLVMValueRef src = add_i64(cg, grows, mul_i64(cg, r.i, sj->inner));
    cg_loop_begin(cg, &i, lo, hi, "i");
    add_to(cg, out, add_i64(cg, dst, i.i), cg_load(cg, KILN_F32, g, add_i64(cg, src, i.i)));
    cg_loop_end(cg, &i);
    cg_loop_end(cg, &r);
    cg_loop_end(cg, &it);
}

/* out (outer, n, inner) = 0; out[o, ids[j], i] += g[o, j, i]. Every index is checked first
 * (as gather does): a bad one returns KILN_RC_INDEX_RANGE before anything is written. */
void lower_scatter_add(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *ot = &c->node->type, *it = lower_in_type(c, 1);
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(ot->dims, 0, ax), n = ot->dims[ax], inner = cg_span(ot->dims, ax + 1, ot->rank);
    int64_t n_ids = kiln_type_numel(it);

    if (n_ids > 0) cg_return_if_index_outside(cg, c->in[1], n_ids, n);
    if (n_ids == 0 || outer * inner == 0) {
        zero_fill_parallel(cg, c->out, kiln_type_numel(ot));
        return;
    }
    /* about 4 column blocks, whole vectors of 16 floats each: every block walks all the
     * indices, so narrow blocks cost more in loop overhead than they spread */
    int64_t blk = (inner + 3) / 4;
    blk = (blk + 15) / 16 * 16;
    if (blk < 64) blk = 64;
    scatter_job sj = {n, n_ids, inner, blk, (inner + blk - 1) / blk};
    LLVMValueRef vals[3] = {c->out, c->in[0], c->in[1]};
    cg_parallel_for(cg, "cols", outer * sj.blocks, (n + n_ids) * blk, vals, 3, scatter_cols, &sj);
}

/* ---- layernorm_grad --------------------------------------------------------------------------- */

/* Σ_j f over a contiguous row of D, into f32 accumulators (reassociated, vectorised,
 * four vectors interleaved): f is x_j, or (x_j − mean)², or — two sums in one pass —
 * ĝ_j = g_j·w_j and ĝ_j·x̂_j. vals = out, x, w, g. */
enum row_term { TERM_X, TERM_CENTRED_SQ, TERM_GW_AND_GW_XHAT };

static void row_term_sum(kiln_cg *cg, const LLVMValueRef *vals, LLVMValueRef base, int64_t D, enum row_term term,
                         LLVMValueRef mean, LLVMValueRef inv, LLVMValueRef *sum, LLVMValueRef *sum2)
{
    LLVMValueRef acc = cg_local(cg, cg->t_f32, "acc"), acc2 = cg_local(cg, cg->t_f32, "acc2");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), acc);
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), acc2);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    LLVMValueRef off = add_i64(cg, base, l.i);
    LLVMValueRef x = cg_load(cg, KILN_F32, vals[1], off), v;
    if (term == TERM_X) {
        v = x;
    } else if (term == TERM_CENTRED_SQ) {
        v = cg_fsub(cg, x, mean);
        v = cg_fmul(cg, v, v);
    } else {
        v = cg_fmul(cg, cg_load(cg, KILN_F32, vals[3], off), cg_load(cg, KILN_F32, vals[2], l.i));
        LLVMValueRef v2 = cg_fmul(cg, v, cg_fmul(cg, cg_fsub(cg, x, mean), inv));
        LLVMBuildStore(cg->b, cg_fadd_reduce(cg, load_f32(cg, acc2), v2), acc2);
    }
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, load_f32(cg, acc), v), acc);
    cg_loop_end_interleaved(cg, &l, 4);
    *sum = load_f32(cg, acc);
    if (sum2) *sum2 = load_f32(cg, acc2);
}

typedef struct layernorm_grad_job {
    int64_t D;
    double eps;
} layernorm_grad_job;

/* One row of layernorm_grad in double; vals = out, x, w, g. */
static void slow_rows(kiln_cg *cg, const LLVMValueRef *vals, LLVMValueRef base, int64_t D, double eps)
{
    LLVMTypeRef f64 = cg->t_f64;
    LLVMValueRef mean, inv;
    cg_row_stats_f64(cg, vals[1], base, D, eps, &mean, &inv);
    LLVMValueRef a1 = cg_local(cg, f64, "m1"), a2 = cg_local(cg, f64, "m2");
    LLVMBuildStore(cg->b, LLVMConstReal(f64, 0.0), a1);
    LLVMBuildStore(cg->b, LLVMConstReal(f64, 0.0), a2);
    LLVMValueRef m[2];
    for (int pass = 0; pass < 2; pass++) {
        cg_loop l;
        cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
        LLVMValueRef off = add_i64(cg, base, l.i);
        LLVMValueRef x = LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, vals[1], off), f64, "");
        LLVMValueRef xh = LLVMBuildFMul(cg->b, LLVMBuildFSub(cg->b, x, mean, ""), inv, "");
        LLVMValueRef gh = LLVMBuildFMul(cg->b, LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, vals[3], off), f64, ""),
                                        LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, vals[2], l.i), f64, ""), "");
        if (pass == 0) {
            LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, f64, a1, ""), gh, ""), a1);
            LLVMValueRef ghx = LLVMBuildFMul(cg->b, gh, xh, "");
            LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, f64, a2, ""), ghx, ""), a2);
        } else {
            LLVMValueRef d = LLVMBuildFSub(cg->b, LLVMBuildFSub(cg->b, gh, m[0], ""), LLVMBuildFMul(cg->b, xh, m[1], ""), "");
            d = LLVMBuildFMul(cg->b, inv, d, "");
            cg_store(cg, KILN_F32, vals[0], off, LLVMBuildFPTrunc(cg->b, d, cg->t_f32, ""));
        }
        cg_loop_end(cg, &l);
        if (pass == 0) {
            LLVMValueRef dval = LLVMConstReal(f64, (double)D);
            m[0] = LLVMBuildFDiv(cg->b, LLVMBuildLoad2(cg->b, f64, a1, ""), dval, "");
            m[1] = LLVMBuildFDiv(cg->b, LLVMBuildLoad2(cg->b, f64, a2, ""), dval, "");
        }
    }
}

/* rows [begin, end); vals = out, x, w, g */
static void layernorm_grad_rows(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const layernorm_grad_job *lj = user;
    int64_t D = lj->D;
    LLVMValueRef dval = LLVMConstReal(cg->t_f32, (double)D);
    cg_loop r;
    cg_loop_begin(cg, &r, begin, end, "row");
    LLVMValueRef base = mul_i64(cg, r.i, D);
    LLVMValueRef s, s2;
    row_term_sum(cg, vals, base, D, TERM_X, NULL, NULL, &s, NULL);
    LLVMValueRef mean = cg_fdiv(cg, s, dval);
    row_term_sum(cg, vals, base, D, TERM_CENTRED_SQ, mean, NULL, &s, NULL);
    LLVMValueRef var = cg_fdiv(cg, s, dval);
    LLVMValueRef inv = cg_fdiv(cg, cg_f32(cg, 1.0), cg_intrinsic1(cg, "llvm.sqrt", cg_fadd(cg, var, cg_f32(cg, lj->eps))));
    LLVMValueRef fits = cg_var_fits(cg, var);
    cg_if fast, slow;
    cg_if_begin(cg, &fast, fits);
    row_term_sum(cg, vals, base, D, TERM_GW_AND_GW_XHAT, mean, inv, &s, &s2);
    LLVMValueRef m1 = cg_fdiv(cg, s, dval), m2 = cg_fdiv(cg, s2, dval);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    LLVMValueRef off = add_i64(cg, base, l.i);
    LLVMValueRef xhat = cg_fmul(cg, cg_fsub(cg, cg_load(cg, KILN_F32, vals[1], off), mean), inv);
    LLVMValueRef gw = cg_fmul(cg, cg_load(cg, KILN_F32, vals[3], off), cg_load(cg, KILN_F32, vals[2], l.i));
    LLVMValueRef dx = cg_fmul(cg, inv, cg_fsub(cg, cg_fsub(cg, gw, m1), cg_fmul(cg, xhat, m2)));
    cg_store(cg, KILN_F32, vals[0], off, dx);
    cg_loop_end(cg, &l);
    cg_if_end(cg, &fast);
    /* the f32 variance overflowed (values beyond about ±1e19): the row in double, as the
     * interpreter computes it (lower_reduce.c, cg_row_stats_f64) */
    cg_if_begin(cg, &slow, LLVMBuildNot(cg->b, fits, ""));
    slow_rows(cg, vals, base, D, lj->eps);
    cg_if_end(cg, &slow);
    cg_loop_end(cg, &r);
}

/* dx = inv·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) per row, the statistics recomputed in two passes
 * as the forward kernel does; rows split across threads. */
void lower_layernorm_grad(lower_ctx *c)
{
    const kiln_type *t = &c->node->type;
    int64_t D = t->dims[t->rank - 1], rows = cg_span(t->dims, 0, t->rank - 1);
    if (D == 0 || rows == 0) return;
    layernorm_grad_job lj = {D, c->node->attrs.scalar};
    LLVMValueRef vals[4] = {c->out, c->in[0], c->in[1], c->in[2]};
    cg_parallel_for(c->cg, "rows", rows, D * 12, vals, 4, layernorm_grad_rows, &lj);
}

/* ---- cross_entropy_grad --------------------------------------------------------------------------- */

typedef struct ce_grad_job {
    int64_t C, ignore;
    double eps;
} ce_grad_job;

/* rows [begin, end); vals = out, logits, targets, &scale (an f32 in the caller's frame) */
static void ce_grad_rows(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const ce_grad_job *cj = user;
    int64_t C = cj->C;
    double eps = cj->eps;
    LLVMValueRef out = vals[0], x = vals[1], scale = load_f32(cg, vals[3]);
    cg_loop r, l;
    cg_loop_begin(cg, &r, begin, end, "row");
    LLVMValueRef t = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, vals[2], r.i), cg->t_i64, "");
    LLVMValueRef base = mul_i64(cg, r.i, C);
    LLVMValueRef skip = LLVMBuildICmp(cg->b, LLVMIntEQ, t, cg_i64(cg, cj->ignore), "");
    cg_if ignored, keep;
    cg_if_begin(cg, &ignored, skip);
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    cg_store(cg, KILN_F32, out, add_i64(cg, base, l.i), cg_f32(cg, 0.0));
    cg_loop_end(cg, &l);
    cg_if_end(cg, &ignored);
    cg_if_begin(cg, &keep, LLVMBuildNot(cg->b, skip, ""));
    LLVMValueRef max = cg_local(cg, cg->t_f32, "max"), sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f32, -INFINITY), max);
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    LLVMValueRef xv = cg_load(cg, KILN_F32, x, add_i64(cg, base, l.i));
    LLVMBuildStore(cg->b, cg_intrinsic2(cg, "llvm.maximum", load_f32(cg, max), xv), max);
    cg_loop_end_interleaved(cg, &l, 4);
    LLVMValueRef m = load_f32(cg, max);
    /* e_j = exp(x_j − max) is parked in the result row, so exp runs once per element */
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    LLVMValueRef off = add_i64(cg, base, l.i);
    LLVMValueRef e = cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, x, off), m));
    cg_store(cg, KILN_F32, out, off, e);
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, load_f32(cg, sum), e), sum);
    cg_loop_end_interleaved(cg, &l, 4);
    LLVMValueRef total = load_f32(cg, sum);
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    off = add_i64(cg, base, l.i);
    LLVMValueRef pj = cg_fdiv(cg, cg_load(cg, KILN_F32, out, off), total);
    LLVMValueRef hit = LLVMBuildICmp(cg->b, LLVMIntEQ, l.i, t, "");
    LLVMValueRef want = LLVMBuildSelect(cg->b, hit, cg_f32(cg, 1.0 - eps + eps / (double)C), cg_f32(cg, eps / (double)C), "");
    cg_store(cg, KILN_F32, out, off, cg_fmul(cg, scale, cg_fsub(cg, pj, want)));
    cg_loop_end(cg, &l);
    cg_if_end(cg, &keep);
    cg_loop_end(cg, &r);
}

/* Kept rows (target ≠ ignore_index) get g/n·(softmax(x) − (1 − ε)·onehot(t) − ε/C), n
 * the number of kept rows; the rest are 0. A target outside [0, C) returns
 * KILN_RC_TARGET_RANGE before anything is written. The rows are split across threads. */
void lower_cross_entropy_grad(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *xt = lower_in_type(c, 0);
    int64_t C = xt->dims[xt->rank - 1], rows = kiln_type_numel(lower_in_type(c, 1));
    LLVMValueRef ignore = cg_i64(cg, c->node->attrs.ignore_index);

    /* 1. count the kept rows and check their targets (one thread; cheap) */
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
    if (rows * C == 0) return;

    /* 2. every row: zeros (ignored) or max, Σ exp(x − max), then the gradient */
    LLVMValueRef n = LLVMBuildSIToFP(cg->b, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg->t_f32, "");
    LLVMValueRef scale = cg_local(cg, cg->t_f32, "scale");
    LLVMBuildStore(cg->b, cg_fdiv(cg, cg_load(cg, KILN_F32, c->in[2], cg_i64(cg, 0)), n), scale);
    ce_grad_job cj = {C, c->node->attrs.ignore_index, c->node->attrs.scalar};
    LLVMValueRef vals[4] = {c->out, c->in[0], c->in[1], scale};
    cg_parallel_for(cg, "rows", rows, C * 16, vals, 4, ce_grad_rows, &cj);
}
