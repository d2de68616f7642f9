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
 * - Threads (docs/codegen.md, Threads): row kernels split by rows; reductions by the
 *   first kept dim (reduce_plan), or, when only few results come from many inputs, in
 *   fixed chunks whose partials land in scratch and are combined in chunk order on one
 *   thread. Either way each result is computed the same way for any thread count.
 */
#include <math.h>
#include <string.h>

#include "lower.h"

static LLVMValueRef neg_inf(kiln_cg *cg) { return LLVMConstReal(cg->t_f32, -INFINITY); }

/* ---- sum / mean / max ------------------------------------------------------------------------ */

/* How a reduction is split. The nest runs over the input's collapsed dims; operand 0 is
 * the result (stride 0 on reduced dims), the others are read or written at the input's
 * elements: the input itself (row-major), or, in a REDUCE kernel, the operands of the
 * elementwise members that compute it (broadcast strides, or row-major for the members
 * whose values leave the kernel).
 * - RED_SPLIT: the first kept dim k is cut into items of blk indices. Everything an item
 *   writes (the results whose index along k is in its block — a contiguous range, since
 *   every dim before k is reduced) it computes alone, in the same order as one thread
 *   would: bit-identical for any thread count. k = 0 covers row reductions (sum over
 *   trailing axes); k > 0 up to 8 column blocks of sums over leading axes (bias
 *   gradients).
 *   One item (no kept dim, or too little work) is the plain sequential nest.
 * - RED_CHUNKS: few results from many inputs with no kept dim worth splitting (a full
 *   sum to a scalar): dim 0 (reduced) is cut into a fixed number of chunks that depends
 *   on the shape only; each chunk folds its rows into its own slot of scratch
 *   (n_out values), then one thread combines the slots in chunk order.
 * Every input element is visited exactly once, by one item, so the members a REDUCE
 * kernel stores are written once each. */
enum { RED_SPLIT, RED_CHUNKS };
enum { RED_MAX_CHUNKS = 64, RED_CHUNK_MIN_WORK = 4096, RED_MAX_SCRATCH = 65536, RED_MIN_BLOCK = 64 };

typedef struct reduce_plan {
    int rank, n_ops;     /* operand 0: the result; 1…: read or written per input element */
    int64_t dims[KILN_MAX_RANK], stride[CG_MAX_OPS][KILN_MAX_RANK];
    int64_t n_in, n_out;
    int kind;
    int k;               /* RED_SPLIT: the split dim (−1: none, one item) */
    int64_t blk;         /* RED_SPLIT: indices of dim k per item; RED_CHUNKS: rows of dim 0 per chunk */
    int64_t items;       /* items (RED_SPLIT) or chunks (RED_CHUNKS) */
} reduce_plan;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The plan of reduction n over an input of type xt, its element operands' strides set
 * by the caller in p->stride[1 .. n_ops) (over xt's dims) before the call. */
static void reduce_plan_make(const kiln_type *xt, const kiln_node *n, int n_ops, reduce_plan *p)
{
    bool reduced[KILN_MAX_RANK] = {0};
    for (int i = 0; i < n->attrs.n_axes; i++) reduced[n->attrs.axes[i]] = true;
    p->n_ops = n_ops;
    int64_t s = 1;
    for (int d = xt->rank - 1; d >= 0; d--) {
        p->dims[d] = xt->dims[d];
        p->stride[0][d] = reduced[d] ? 0 : s;
        if (!reduced[d]) s *= xt->dims[d];
    }
    p->n_in = kiln_type_numel(xt);
    p->n_out = kiln_type_numel(&n->type);
    p->rank = cg_collapse_dims(xt->rank, p->dims, n_ops, p->stride);
    p->kind = RED_SPLIT;
    p->k = -1;
    for (int d = 0; d < p->rank && p->k < 0; d++)
        if (p->stride[0][d] != 0) p->k = d;
    p->items = 1;
    if (p->k >= 0) p->blk = p->dims[p->k];
    if (p->n_in < KILN_CG_PARALLEL_MIN_WORK) return;
    if (p->k == 0) { /* rows: one item per index of dim 0 */
        p->blk = 1;
        p->items = p->dims[0];
    } else if (p->k > 0 && p->dims[p->k] >= 2 * RED_MIN_BLOCK) {
        /* up to 8 blocks of the kept dim, each at least RED_MIN_BLOCK wide (whole vectors
         * when it is the innermost dim): narrower blocks make each item walk all the
         * reduced rows for a sliver of every row, which costs more than it spreads */
        p->blk = ceil_div(p->dims[p->k], 8);
        if (p->k == p->rank - 1) p->blk = ceil_div(p->blk, 16) * 16;
        if (p->blk < RED_MIN_BLOCK) p->blk = RED_MIN_BLOCK;
        p->items = ceil_div(p->dims[p->k], p->blk);
    } else if (p->rank > 0) { /* dim 0 is reduced: fixed chunks of it */
        int64_t inner = p->n_in / p->dims[0];
        int64_t chunk = ceil_div(p->dims[0], RED_MAX_CHUNKS);
        if (chunk * inner < RED_CHUNK_MIN_WORK) chunk = ceil_div(RED_CHUNK_MIN_WORK, inner);
        int64_t chunks = ceil_div(p->dims[0], chunk);
        if (chunks >= 2 && chunks * p->n_out <= RED_MAX_SCRATCH) {
            p->kind = RED_CHUNKS;
            p->blk = chunk;
            p->items = chunks;
        }
    }
}

/* The plan of a lone reduction: its input is operand 1. */
static void reduce_plan_node(const kiln_type *xt, const kiln_node *n, reduce_plan *p)
{
    memset(p, 0, sizeof *p);
    cg_row_major_strides(xt, p->stride[1]);
    reduce_plan_make(xt, n, 2, p);
}

int64_t reduce_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    (void)t;
    reduce_plan p;
    reduce_plan_node(&g->nodes[n->in[0]].type, n, &p);
    return p.kind == RED_CHUNKS ? p.items * p.n_out * KILN_ELEM_BYTES : 0;
}

typedef struct reduce_job reduce_job;
/* The input element at the nest's offsets: vals[1 ..) and off[1 ..) are the element
 * operands (vals[0], off[0]: the result or its scratch slot). */
typedef LLVMValueRef (*reduce_elem_fn)(kiln_cg *cg, const reduce_job *j, const LLVMValueRef *vals,
                                       const LLVMValueRef *off);

struct reduce_job {
    const reduce_plan *p;
    kiln_dtype dt;
    bool is_max;
    double count;        /* mean: elements per result */
    bool mean;
    reduce_elem_fn elem;
    const void *user;    /* elem's */
};

static LLVMValueRef reduce_identity(kiln_cg *cg, const reduce_job *j)
{
    if (j->is_max) return j->dt == KILN_I32 ? cg_i32(cg, INT32_MIN) : neg_inf(cg);
    return j->dt == KILN_I32 ? cg_i32(cg, 0) : cg_f32(cg, 0.0);
}

/* acc ⊕ v: the accumulating form (reassociable f32 add, for partial sums per lane) or
 * the fixed-order one (combining chunks) */
static LLVMValueRef reduce_op(kiln_cg *cg, const reduce_job *j, LLVMValueRef acc, LLVMValueRef v, bool reassoc)
{
    if (j->is_max) return cg_intrinsic2(cg, j->dt == KILN_I32 ? "llvm.smax" : "llvm.maximum", acc, v);
    if (j->dt == KILN_I32) return LLVMBuildAdd(cg->b, acc, v, "");
    return reassoc ? cg_fadd_reduce(cg, acc, v) : cg_fadd(cg, acc, v);
}

/* dst[lo, hi) = v */
static void fill_range(kiln_cg *cg, kiln_dtype dt, LLVMValueRef dst, LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef v)
{
    cg_loop l;
    cg_loop_begin(cg, &l, lo, hi, "fill");
    cg_store(cg, dt, dst, l.i, v);
    cg_loop_end(cg, &l);
}

/* A lone reduction's element: its input, loaded. */
static LLVMValueRef load_input(kiln_cg *cg, const reduce_job *j, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    return cg_load(cg, j->dt, vals[1], off[1]);
}

/* The nest over the input with dim `d` running over [lo, hi) (every other dim in full),
 * folding each element (j->elem over vals[1 ..)) into vals[0] at the result offset (plus
 * acc_base). */
static void reduce_nest(kiln_cg *cg, const reduce_job *j, int d, LLVMValueRef lo, LLVMValueRef hi,
                        const LLVMValueRef *vals, LLVMValueRef acc_base)
{
    const reduce_plan *p = j->p;
    int n_ops = p->n_ops;
    if (p->rank == 0) { /* one element */
        LLVMValueRef off[CG_MAX_OPS];
        off[0] = acc_base;
        for (int k = 1; k < n_ops; k++) off[k] = cg_i64(cg, 0);
        cg_store(cg, j->dt, vals[0], acc_base,
                 reduce_op(cg, j, cg_load(cg, j->dt, vals[0], acc_base), j->elem(cg, j, vals, off), true));
        return;
    }
    LLVMValueRef base[CG_MAX_OPS];
    base[0] = acc_base;
    for (int k = 1; k < n_ops; k++) base[k] = cg_i64(cg, 0);
    cg_nest outer;
    cg_nest_begin(cg, &outer, d, p->dims, n_ops, p->stride, base);
    cg_loop mid;
    cg_loop_begin(cg, &mid, lo, hi, "i");
    LLVMValueRef off[CG_MAX_OPS];
    for (int k = 0; k < n_ops; k++)
        off[k] = LLVMBuildNSWAdd(cg->b, outer.off[k], LLVMBuildNSWMul(cg->b, mid.i, cg_i64(cg, p->stride[k][d]), ""), "");
    int64_t ist[CG_MAX_OPS][KILN_MAX_RANK];
    for (int k = 0; k < n_ops; k++)
        for (int e = d + 1; e < p->rank; e++) ist[k][e - d - 1] = p->stride[k][e];
    cg_nest inner;
    cg_nest_begin(cg, &inner, p->rank - d - 1, p->dims + d + 1, n_ops, (const int64_t(*)[KILN_MAX_RANK])ist, off);
    LLVMValueRef v = j->elem(cg, j, vals, inner.off);
    LLVMValueRef acc = cg_load(cg, j->dt, vals[0], inner.off[0]);
    cg_store(cg, j->dt, vals[0], inner.off[0], reduce_op(cg, j, acc, v, true));
    cg_nest_end(cg, &inner);
    cg_loop_end(cg, &mid);
    cg_nest_end(cg, &outer);
}

static LLVMValueRef min_i64(kiln_cg *cg, LLVMValueRef a, int64_t b)
{
    LLVMValueRef bv = cg_i64(cg, b);
    return LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, a, bv, ""), a, bv, "");
}

/* RED_SPLIT items [begin, end): vals = out, the element operands */
static void reduce_split_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    reduce_job *j = user;
    const reduce_plan *p = j->p;
    LLVMValueRef out = vals[0];
    LLVMValueRef lo, hi, out_lo, out_hi;
    if (p->k < 0) {
        lo = hi = NULL;
        out_lo = cg_i64(cg, 0);
        out_hi = cg_i64(cg, p->n_out);
    } else {
        lo = LLVMBuildNSWMul(cg->b, begin, cg_i64(cg, p->blk), "");
        hi = min_i64(cg, LLVMBuildNSWMul(cg->b, end, cg_i64(cg, p->blk), ""), p->dims[p->k]);
        /* every dim before k is reduced, so the results of indices [lo, hi) of dim k are
         * one contiguous range */
        out_lo = LLVMBuildNSWMul(cg->b, lo, cg_i64(cg, p->stride[0][p->k]), "");
        out_hi = LLVMBuildNSWMul(cg->b, hi, cg_i64(cg, p->stride[0][p->k]), "");
    }
    fill_range(cg, j->dt, out, out_lo, out_hi, reduce_identity(cg, j));
    if (p->n_in > 0) {
        if (p->k < 0) reduce_nest(cg, j, 0, cg_i64(cg, 0), cg_i64(cg, p->rank ? p->dims[0] : 1), vals, cg_i64(cg, 0));
        else reduce_nest(cg, j, p->k, lo, hi, vals, cg_i64(cg, 0));
    }
    if (j->mean) { /* over nothing: 0/0 = NaN, as numpy */
        cg_loop l;
        cg_loop_begin(cg, &l, out_lo, out_hi, "mean");
        LLVMValueRef v = cg_load(cg, j->dt, out, l.i);
        cg_store(cg, j->dt, out, l.i, cg_fdiv(cg, v, LLVMConstReal(cg->t_f32, j->count)));
        cg_loop_end(cg, &l);
    }
}

/* RED_CHUNKS chunks [begin, end): vals = scratch, the element operands; chunk c folds
 * rows [c·blk, min((c+1)·blk, dims[0])) of dim 0 into scratch[c·n_out, (c+1)·n_out) */
static void reduce_chunk_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    reduce_job *j = user;
    const reduce_plan *p = j->p;
    cg_loop c;
    cg_loop_begin(cg, &c, begin, end, "chunk");
    LLVMValueRef slot = LLVMBuildNSWMul(cg->b, c.i, cg_i64(cg, p->n_out), "");
    fill_range(cg, j->dt, vals[0], slot, LLVMBuildNSWAdd(cg->b, slot, cg_i64(cg, p->n_out), ""), reduce_identity(cg, j));
    LLVMValueRef lo = LLVMBuildNSWMul(cg->b, c.i, cg_i64(cg, p->blk), "");
    LLVMValueRef hi = min_i64(cg, LLVMBuildNSWAdd(cg->b, lo, cg_i64(cg, p->blk), ""), p->dims[0]);
    reduce_nest(cg, j, 0, lo, hi, vals, slot);
    cg_loop_end(cg, &c);
}

/* The whole reduction of plan j->p: out the result, scratch (RED_CHUNKS), elems[0 ..
 * n_ops − 1) the element operands. */
static void emit_reduction(kiln_cg *cg, reduce_job *j, LLVMValueRef out, LLVMValueRef scratch, const LLVMValueRef *elems)
{
    const reduce_plan *p = j->p;
    if (p->n_out == 0) return;
    int64_t per_item = p->n_in / p->items;
    LLVMValueRef vals[CG_MAX_OPS];
    for (int k = 1; k < p->n_ops; k++) vals[k] = elems[k - 1];
    if (p->kind == RED_SPLIT) {
        vals[0] = out;
        cg_parallel_for(cg, "rows", p->items, per_item, vals, (unsigned)p->n_ops, reduce_split_body, j);
        return;
    }
    vals[0] = scratch;
    cg_parallel_for(cg, "chunks", p->items, per_item, vals, (unsigned)p->n_ops, reduce_chunk_body, j);
    /* out = identity ⊕ chunk 0 ⊕ chunk 1 ⊕ …, in chunk order, then the mean's division */
    LLVMValueRef z = cg_i64(cg, 0), all = cg_i64(cg, p->n_out);
    fill_range(cg, j->dt, out, z, all, reduce_identity(cg, j));
    cg_loop ch, o;
    cg_loop_begin(cg, &ch, z, cg_i64(cg, p->items), "chunk");
    LLVMValueRef slot = LLVMBuildNSWMul(cg->b, ch.i, all, "");
    cg_loop_begin(cg, &o, z, all, "o");
    LLVMValueRef part = cg_load(cg, j->dt, scratch, LLVMBuildNSWAdd(cg->b, slot, o.i, ""));
    cg_store(cg, j->dt, out, o.i, reduce_op(cg, j, cg_load(cg, j->dt, out, o.i), part, false));
    cg_loop_end(cg, &o);
    cg_loop_end(cg, &ch);
    if (j->mean) {
        cg_loop_begin(cg, &o, z, all, "mean");
        LLVMValueRef v = cg_load(cg, j->dt, out, o.i);
        cg_store(cg, j->dt, out, o.i, cg_fdiv(cg, v, LLVMConstReal(cg->t_f32, j->count)));
        cg_loop_end(cg, &o);
    }
}

static reduce_job job_for(const reduce_plan *p, const kiln_node *n, reduce_elem_fn elem, const void *user)
{
    reduce_job j = {p, n->type.dtype, n->op == KILN_OP_MAX, 0, n->op == KILN_OP_MEAN, elem, user};
    j.count = p->n_in == 0 ? 0.0 : (double)(p->n_in / p->n_out);
    return j;
}

void lower_reduce(lower_ctx *c)
{
    const kiln_type *xt = lower_in_type(c, 0);
    reduce_plan p;
    reduce_plan_node(xt, c->node, &p);
    reduce_job j = job_for(&p, c->node, load_input, NULL);
    emit_reduction(c->cg, &j, c->out, c->scratch, &c->in[0]);
}

/* ---- a REDUCE kernel: a reduction with the elementwise members computing its input ---- */

typedef struct fused_input {
    const kiln_graph *g;
    const kiln_kernel_schedule *s;
    uint32_t k, x;            /* the kernel; the reduction's input (a member) */
    const loop_operand *ops;  /* the element operands (the kernel's but the reduction's result) */
    int n_ops;
} fused_input;

static LLVMValueRef fused_elem(kiln_cg *cg, const reduce_job *j, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    const fused_input *fi = j->user;
    return lower_loop_elements(cg, fi->g, fi->s, fi->k, fi->ops, fi->n_ops, vals + 1, off + 1, fi->x);
}

uint32_t lower_first_reduction(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k)
{
    const kiln_kernel *kn = &s->kernels[k];
    for (uint32_t i = 0; i < kn->n; i++) {
        uint32_t m = s->members[kn->first + i];
        if (kiln_op_table[g->nodes[m].op].kind == KILN_KIND_REDUCTION) return m;
    }
    return KILN_NONE;
}

LLVMValueRef lower_reduce_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                                 const loop_operand *ops, int n_ops, bool has_scratch)
{
    uint32_t r = lower_first_reduction(g, s, k);
    KILN_ASSERT(r != KILN_NONE);
    const kiln_node *rn = &g->nodes[r];
    const kiln_type *xt = &g->nodes[rn->in[0]].type;
    char name[64];
    snprintf(name, sizeof name, "k%u_%s%u", s->members[s->kernels[k].first], kiln_op_table[rn->op].name,
             s->kernels[k].n);
    LLVMValueRef vals[CG_MAX_OPS];
    LLVMValueRef fn = lower_operands_function(cg, name, ops, n_ops, has_scratch ? 1u : 0u, vals);
    /* the element operands: every operand but the reduction's result, in order */
    loop_operand eops[CG_MAX_OPS];
    LLVMValueRef evals[CG_MAX_OPS], out = NULL;
    int n_e = 0;
    reduce_plan p;
    memset(&p, 0, sizeof p);
    for (int o = 0; o < n_ops; o++) {
        LLVMValueRef v = vals[o];
        if (ops[o].writes && ops[o].node == r) {
            out = v;
            continue;
        }
        KILN_ASSERT(n_e + 1 < CG_MAX_OPS);
        if (ops[o].writes) cg_row_major_strides(xt, p.stride[1 + n_e]);
        else cg_bcast_strides(&g->nodes[ops[o].node].type, xt->rank, p.stride[1 + n_e]);
        eops[n_e] = ops[o];
        evals[n_e++] = v;
    }
    KILN_ASSERT(out != NULL);
    LLVMValueRef scratch = has_scratch ? LLVMGetParam(fn, (unsigned)n_ops) : NULL;
    reduce_plan_make(xt, rn, 1 + n_e, &p);
    /* the scratch is the lone reduction's (reduce_scratch_bytes); where the element
     * operands keep dims apart, the chunks may differ: then one sequential walk */
    reduce_plan lone;
    reduce_plan_node(xt, rn, &lone);
    int64_t have = lone.kind == RED_CHUNKS && scratch ? lone.items * lone.n_out : 0;
    if (p.kind == RED_CHUNKS && p.items * p.n_out > have) {
        p.kind = RED_SPLIT;
        p.items = 1;
        p.blk = p.k >= 0 ? p.dims[p.k] : 0;
    }
    fused_input fi = {g, s, k, rn->in[0], eops, n_e};
    reduce_job j = job_for(&p, rn, fused_elem, &fi);
    emit_reduction(cg, &j, out, scratch, evals);
    LLVMBuildRetVoid(cg->b);
    return fn;
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
    cg_loop_end_interleaved(cg, &l, 4);
    return LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
}

static LLVMValueRef row_offset(kiln_cg *cg, LLVMValueRef base, LLVMValueRef j, int64_t step)
{
    return LLVMBuildNSWAdd(cg->b, base, LLVMBuildNSWMul(cg->b, j, cg_i64(cg, step), ""), "");
}

/* Row kernels are split across threads by rows (cg_parallel_for): a row is computed by
 * one thread with the same code whatever the split, so results are bit-identical for
 * any thread count. These are rough element-operation counts per row element, to
 * weigh the work against the pool's wake-up cost. */
enum { SOFTMAX_WORK = 16, LAYERNORM_WORK = 6, CROSS_ENTROPY_WORK = 16 };

typedef struct softmax_job {
    bool log_form;
    int64_t n, inner;
} softmax_job;

/* rows [begin, end) of softmax: row r = (o, i) starts at o·n·inner + i, step inner;
 * vals = out, x */
static void softmax_rows(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const softmax_job *sj = user;
    int64_t n = sj->n, inner = sj->inner;
    LLVMValueRef out = vals[0], x = vals[1];
    cg_loop r;
    cg_loop_begin(cg, &r, begin, end, "row");
    LLVMValueRef base;
    if (inner == 1) {
        base = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, n), "");
    } else {
        LLVMValueRef o = LLVMBuildSDiv(cg->b, r.i, cg_i64(cg, inner), "");
        LLVMValueRef i = LLVMBuildSRem(cg->b, r.i, cg_i64(cg, inner), "");
        base = LLVMBuildNSWAdd(cg->b, LLVMBuildNSWMul(cg->b, o, cg_i64(cg, n * inner), ""), i, "");
    }
    LLVMValueRef max = row_max(cg, x, base, n, inner);

    LLVMValueRef sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "j");
    LLVMValueRef off = row_offset(cg, base, l.i, inner);
    LLVMValueRef e = cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, x, off), max));
    if (!sj->log_form) cg_store(cg, KILN_F32, out, off, e);
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, sum, ""), e), sum);
    cg_loop_end_interleaved(cg, &l, 4);

    LLVMValueRef total = LLVMBuildLoad2(cg->b, cg->t_f32, sum, "");
    LLVMValueRef log_total = sj->log_form ? cg_intrinsic1(cg, "llvm.log", total) : NULL;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n), "j");
    off = row_offset(cg, base, l.i, inner);
    LLVMValueRef y;
    if (sj->log_form) y = cg_fsub(cg, cg_fsub(cg, cg_load(cg, KILN_F32, x, off), max), log_total);
    else y = cg_fdiv(cg, cg_load(cg, KILN_F32, out, off), total);
    cg_store(cg, KILN_F32, out, off, y);
    cg_loop_end(cg, &l);
    cg_loop_end(cg, &r);
}

/* softmax: y = exp(x − max) / Σ; log_softmax: y = (x − max) − log Σ. */
void lower_softmax(lower_ctx *c)
{
    const kiln_type *t = &c->node->type;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = cg_span(t->dims, 0, ax), n = t->dims[ax], inner = cg_span(t->dims, ax + 1, t->rank);
    if (outer * n * inner == 0) return;
    softmax_job sj = {c->node->op == KILN_OP_LOG_SOFTMAX, n, inner};
    LLVMValueRef vals[2] = {c->out, c->in[0]};
    cg_parallel_for(c->cg, "rows", outer * inner, n * SOFTMAX_WORK, vals, 2, softmax_rows, &sj);
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
    cg_loop_end_interleaved(cg, &l, 4);
    return LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
}

/* ---- rows whose f32 variance overflows ------------------------------------------------------

 * Values beyond about ±1e19 square past FLT_MAX: the f32 variance becomes inf (or NaN
 * when the mean overflows too) and the row's output 0 or NaN, where the interpreter,
 * which works in double, gives the normalised row. Such rows take this slow path: the
 * statistics again in double, scalar. A branch per row on the f32 variance decides, so
 * ordinary rows pay one compare. */
void cg_row_stats_f64(kiln_cg *cg, LLVMValueRef x, LLVMValueRef base, int64_t D, double eps, LLVMValueRef *mean,
                      LLVMValueRef *inv)
{
    LLVMValueRef acc = cg_local(cg, cg->t_f64, "acc64");
    LLVMValueRef dval = LLVMConstReal(cg->t_f64, (double)D);
    for (int pass = 0; pass < 2; pass++) {
        LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f64, 0.0), acc);
        cg_loop l;
        cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
        LLVMValueRef v = LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, x, LLVMBuildNSWAdd(cg->b, base, l.i, "")),
                                        cg->t_f64, "");
        if (pass == 1) {
            v = LLVMBuildFSub(cg->b, v, *mean, "");
            v = LLVMBuildFMul(cg->b, v, v, "");
        }
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, acc, ""), v, ""), acc);
        cg_loop_end(cg, &l);
        LLVMValueRef m = LLVMBuildFDiv(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, acc, ""), dval, "");
        if (pass == 0) *mean = m;
        else {
            LLVMValueRef sd = cg_intrinsic1(cg, "llvm.sqrt", LLVMBuildFAdd(cg->b, m, LLVMConstReal(cg->t_f64, eps), ""));
            *inv = LLVMBuildFDiv(cg->b, LLVMConstReal(cg->t_f64, 1.0), sd, "");
        }
    }
}

LLVMValueRef cg_var_fits(kiln_cg *cg, LLVMValueRef var)
{
    return LLVMBuildFCmp(cg->b, LLVMRealOLT, var, LLVMConstReal(cg->t_f32, 3.4028234663852886e38), "var.fits");
}

typedef struct layernorm_job {
    int64_t D;
    double eps;
} layernorm_job;

/* rows [begin, end) of layernorm; vals = out, x, w, b */
static void layernorm_rows(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const layernorm_job *lj = user;
    int64_t D = lj->D;
    LLVMValueRef out = vals[0], x = vals[1], w = vals[2], b = vals[3];
    LLVMValueRef dval = LLVMConstReal(cg->t_f32, (double)D);
    cg_loop r;
    cg_loop_begin(cg, &r, begin, end, "row");
    LLVMValueRef base = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, D), "");
    LLVMValueRef mean = cg_fdiv(cg, row_sum(cg, x, base, D, NULL, false), dval);
    LLVMValueRef var = cg_fdiv(cg, row_sum(cg, x, base, D, mean, true), dval);
    LLVMValueRef inv = cg_fdiv(cg, cg_f32(cg, 1.0), cg_intrinsic1(cg, "llvm.sqrt", cg_fadd(cg, var, cg_f32(cg, lj->eps))));
    LLVMValueRef fits = cg_var_fits(cg, var);
    cg_if fast, slow;
    cg_if_begin(cg, &fast, fits);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    LLVMValueRef off = LLVMBuildNSWAdd(cg->b, base, l.i, "");
    LLVMValueRef xc = cg_fsub(cg, cg_load(cg, KILN_F32, x, off), mean);
    LLVMValueRef y = cg_fadd(cg, cg_fmul(cg, cg_fmul(cg, xc, inv), cg_load(cg, KILN_F32, w, l.i)),
                             cg_load(cg, KILN_F32, b, l.i));
    cg_store(cg, KILN_F32, out, off, y);
    cg_loop_end(cg, &l);
    cg_if_end(cg, &fast);
    /* the variance overflowed f32: the row again in double */
    cg_if_begin(cg, &slow, LLVMBuildNot(cg->b, fits, ""));
    LLVMValueRef mean64, inv64;
    cg_row_stats_f64(cg, x, base, D, lj->eps, &mean64, &inv64);
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, D), "j");
    off = LLVMBuildNSWAdd(cg->b, base, l.i, "");
    LLVMTypeRef f64 = cg->t_f64;
    LLVMValueRef xd = LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, x, off), f64, "");
    LLVMValueRef yd = LLVMBuildFMul(cg->b, LLVMBuildFMul(cg->b, LLVMBuildFSub(cg->b, xd, mean64, ""), inv64, ""),
                                    LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, w, l.i), f64, ""), "");
    yd = LLVMBuildFAdd(cg->b, yd, LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, b, l.i), f64, ""), "");
    cg_store(cg, KILN_F32, out, off, LLVMBuildFPTrunc(cg->b, yd, cg->t_f32, ""));
    cg_loop_end(cg, &l);
    cg_if_end(cg, &slow);
    cg_loop_end(cg, &r);
}

/* y = (x − mean)·(1/√(var + eps))·w + b over the last axis; var is the biased
 * variance, computed from the centred values (two passes, as the interpreter). */
void lower_layernorm(lower_ctx *c)
{
    const kiln_type *t = &c->node->type;
    int64_t D = t->dims[t->rank - 1], rows = cg_span(t->dims, 0, t->rank - 1);
    if (D == 0 || rows == 0) return;
    layernorm_job lj = {D, c->node->attrs.scalar};
    LLVMValueRef vals[4] = {c->out, c->in[0], c->in[1], c->in[2]};
    cg_parallel_for(c->cg, "rows", rows, D * LAYERNORM_WORK, vals, 4, layernorm_rows, &lj);
}

/* cross_entropy's rows are summed in a fixed number of chunks (by the shape alone): each
 * chunk's Σ nll and Σ smoothing term (doubles) go to scratch, and one thread adds the
 * chunks up in order — the same bits for any thread count. */
static int64_t ce_chunk_rows(int64_t rows, int64_t C)
{
    int64_t chunk = (rows + 63) / 64, min_rows = (4096 + C - 1) / (C > 0 ? C : 1);
    return chunk > min_rows ? chunk : (min_rows > 0 ? min_rows : 1);
}

static int64_t ce_chunks(const kiln_graph *g, const kiln_node *n)
{
    const kiln_type *xt = &g->nodes[n->in[0]].type;
    int64_t C = xt->dims[xt->rank - 1], rows = kiln_type_numel(&g->nodes[n->in[1]].type);
    return rows == 0 ? 0 : (rows + ce_chunk_rows(rows, C) - 1) / ce_chunk_rows(rows, C);
}

int64_t cross_entropy_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    (void)t;
    return ce_chunks(g, n) * 2 * (int64_t)sizeof(double);
}

typedef struct ce_job {
    int64_t rows, C, chunk;
    int64_t ignore;
    double eps;
} ce_job;

/* chunks [begin, end); vals = scratch (2 doubles per chunk), logits, targets. The
 * targets were checked before. */
static void ce_chunk_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const ce_job *cj = user;
    int64_t C = cj->C;
    LLVMValueRef part = vals[0], x = vals[1], targets = vals[2];
    LLVMValueRef nll = cg_local(cg, cg->t_f64, "nll"), smooth = cg_local(cg, cg->t_f64, "smooth");
    cg_loop ch;
    cg_loop_begin(cg, &ch, begin, end, "chunk");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f64, 0.0), nll);
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f64, 0.0), smooth);
    LLVMValueRef lo = LLVMBuildNSWMul(cg->b, ch.i, cg_i64(cg, cj->chunk), "");
    LLVMValueRef hi = LLVMBuildNSWAdd(cg->b, lo, cg_i64(cg, cj->chunk), "");
    LLVMValueRef rows = cg_i64(cg, cj->rows);
    hi = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, hi, rows, ""), hi, rows, "");
    cg_loop r;
    cg_loop_begin(cg, &r, lo, hi, "row");
    LLVMValueRef t = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, targets, r.i), cg->t_i64, "");
    cg_if keep;
    cg_if_begin(cg, &keep, LLVMBuildICmp(cg->b, LLVMIntNE, t, cg_i64(cg, cj->ignore), ""));
    LLVMValueRef base = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, C), "");
    LLVMValueRef max = row_max(cg, x, base, C, 1);
    LLVMValueRef sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, C), "j");
    LLVMValueRef e = cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, x, LLVMBuildNSWAdd(cg->b, base, l.i, "")), max));
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, sum, ""), e), sum);
    cg_loop_end_interleaved(cg, &l, 4);
    /* lse − x_t as (max − x_t) + log Σ, in double: lse = max + log Σ would round the log
     * term away for logits near 1e7, and torch's loss does not move with a constant
     * added to the row */
    LLVMValueRef log_sum = LLVMBuildFPExt(cg->b, cg_intrinsic1(cg, "llvm.log", LLVMBuildLoad2(cg->b, cg->t_f32, sum, "")),
                                          cg->t_f64, "");
    LLVMValueRef xt_val = cg_load(cg, KILN_F32, x, LLVMBuildNSWAdd(cg->b, base, t, ""));
    LLVMValueRef max64 = LLVMBuildFPExt(cg->b, max, cg->t_f64, "");
    LLVMValueRef gap = LLVMBuildFSub(cg->b, max64, LLVMBuildFPExt(cg->b, xt_val, cg->t_f64, ""), "");
    LLVMValueRef row_nll = LLVMBuildFAdd(cg->b, gap, log_sum, "");
    LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, nll, ""), row_nll, ""), nll);
    if (cj->eps != 0) {
        /* Σ_c (lse − x_c) = Σ_c (max − x_c) + C·log Σ, in double: terms ≥ 0 (no
         * cancellation), whose f32 sum would overflow for logits near ±1e37 */
        LLVMValueRef acc = cg_local(cg, cg->t_f64, "gaps");
        LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f64, 0), acc);
        cg_loop l2;
        cg_loop_begin(cg, &l2, cg_i64(cg, 0), cg_i64(cg, C), "j");
        LLVMValueRef xj = LLVMBuildFPExt(cg->b, cg_load(cg, KILN_F32, x, LLVMBuildNSWAdd(cg->b, base, l2.i, "")),
                                         cg->t_f64, "");
        LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f64, acc, ""), LLVMBuildFSub(cg->b, max64, xj, "")),
                       acc);
        cg_loop_end_interleaved(cg, &l2, 4);
        LLVMValueRef c_log = LLVMBuildFMul(cg->b, LLVMConstReal(cg->t_f64, (double)C), log_sum, "");
        LLVMValueRef wide = LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, acc, ""), c_log, "");
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, smooth, ""), wide, ""), smooth);
    }
    cg_if_end(cg, &keep);
    cg_loop_end(cg, &r);
    LLVMValueRef slot = LLVMBuildNSWMul(cg->b, ch.i, cg_i64(cg, 2), "");
    LLVMBuildStore(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, nll, ""), LLVMBuildInBoundsGEP2(cg->b, cg->t_f64, part, &slot, 1, ""));
    slot = LLVMBuildNSWAdd(cg->b, slot, cg_i64(cg, 1), "");
    LLVMBuildStore(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, smooth, ""), LLVMBuildInBoundsGEP2(cg->b, cg->t_f64, part, &slot, 1, ""));
    cg_loop_end(cg, &ch);
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
    int64_t ignore = c->node->attrs.ignore_index;

    /* 1. check the targets and count the kept rows (one thread; cheap) */
    LLVMValueRef kept = cg_local(cg, cg->t_i64, "kept");
    LLVMBuildStore(cg->b, cg_i64(cg, 0), kept);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, rows), "row");
    LLVMValueRef t = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, c->in[1], r.i), cg->t_i64, "");
    cg_if keep;
    cg_if_begin(cg, &keep, LLVMBuildICmp(cg->b, LLVMIntNE, t, cg_i64(cg, ignore), ""));
    /* unsigned compare: a negative target is a huge number */
    cg_return_if(cg, LLVMBuildICmp(cg->b, LLVMIntUGE, t, cg_i64(cg, C), ""), KILN_RC_TARGET_RANGE);
    LLVMBuildStore(cg->b, LLVMBuildNSWAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg_i64(cg, 1), ""), kept);
    cg_if_end(cg, &keep);
    cg_loop_end(cg, &r);

    /* 2. per-chunk sums, in parallel; 3. their total in chunk order */
    LLVMValueRef nll_total = LLVMConstReal(cg->t_f64, 0.0), smooth_total = nll_total;
    if (rows > 0) {
        ce_job cj = {rows, C, ce_chunk_rows(rows, C), ignore, eps};
        int64_t chunks = (rows + cj.chunk - 1) / cj.chunk;
        LLVMValueRef vals[3] = {c->scratch, c->in[0], c->in[1]};
        cg_parallel_for(cg, "rows", chunks, cj.chunk * C * CROSS_ENTROPY_WORK, vals, 3, ce_chunk_body, &cj);
        LLVMValueRef nll = cg_local(cg, cg->t_f64, "nll"), smooth = cg_local(cg, cg->t_f64, "smooth");
        LLVMBuildStore(cg->b, nll_total, nll);
        LLVMBuildStore(cg->b, smooth_total, smooth);
        cg_loop ch;
        cg_loop_begin(cg, &ch, cg_i64(cg, 0), cg_i64(cg, chunks), "chunk");
        LLVMValueRef slot = LLVMBuildNSWMul(cg->b, ch.i, cg_i64(cg, 2), "");
        LLVMValueRef a = LLVMBuildLoad2(cg->b, cg->t_f64, LLVMBuildInBoundsGEP2(cg->b, cg->t_f64, c->scratch, &slot, 1, ""), "");
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, nll, ""), a, ""), nll);
        slot = LLVMBuildNSWAdd(cg->b, slot, cg_i64(cg, 1), "");
        a = LLVMBuildLoad2(cg->b, cg->t_f64, LLVMBuildInBoundsGEP2(cg->b, cg->t_f64, c->scratch, &slot, 1, ""), "");
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->t_f64, smooth, ""), a, ""), smooth);
        cg_loop_end(cg, &ch);
        nll_total = LLVMBuildLoad2(cg->b, cg->t_f64, nll, "");
        smooth_total = LLVMBuildLoad2(cg->b, cg->t_f64, smooth, "");
    }

    /* (1 − ε)·nll/kept + ε/C·smooth/kept; no kept row gives 0/0 = NaN, as torch */
    LLVMValueRef k = LLVMBuildSIToFP(cg->b, LLVMBuildLoad2(cg->b, cg->t_i64, kept, ""), cg->t_f64, "");
    LLVMValueRef loss = LLVMBuildFMul(cg->b, LLVMConstReal(cg->t_f64, 1.0 - eps), LLVMBuildFDiv(cg->b, nll_total, k, ""), "");
    if (eps != 0) {
        LLVMValueRef s = LLVMBuildFDiv(cg->b, smooth_total, k, "");
        loss = LLVMBuildFAdd(cg->b, loss, LLVMBuildFMul(cg->b, LLVMConstReal(cg->t_f64, eps / (double)C), s, ""), "");
    }
    cg_store(cg, KILN_F32, c->out, cg_i64(cg, 0), LLVMBuildFPTrunc(cg->b, loss, cg->t_f32, ""));
}
