/* lower_row.c — a ROW kernel: row reductions with their elementwise producers and
 * consumers, each row computed whole by one thread.
 *
 * Design. passes/fuse.c (group_rows) groups row reductions over the same trailing dims of
 * one shape X with the elementwise nodes around them, of X's shape ("full" members) or of
 * the reductions' row shape ("row" members): a softmax written as max, exp(x − max)
 * summed and a division, or a layernorm as means and a division. Every operand sits at
 * r·rs + c·cs for row r and column c (kiln_row_strides). Per row:
 *
 *   row members that need no reduction
 *   for each reduction, in node order:
 *       a pass over the row's columns: the full members it can compute, folding the
 *       reduction's input into an accumulator (a scalar with reassociable adds, which
 *       LLVM vectorises into partial sums per lane, interleaved four ways so that the
 *       adds' latency is hidden)
 *       the reduction's value (a mean divides by the count, as that kernel does), then
 *       the row members that became computable
 *   a last pass for the full members that need the last reduction
 *
 * A full member is recomputed in each pass that needs it (its inputs are one row, in L1)
 * and stored in the first pass that computes it, when its value leaves the kernel —
 * except a transcendental one (exp, log, tanh, …: classify) that a later pass reads:
 * its first pass keeps it in a row buffer in scratch (a slot per part), which later
 * passes read back, as the softmax kernel keeps its exponentials. Row members and
 * reductions are computed once and stored when they leave. Rows go to parts in
 * contiguous ranges, one slot each, so a part's rows reuse its buffer. Each member is
 * computed by the scalar function its one-node kernel applies (lower_scalar_op,
 * cg_node_result), so only the order of a sum's additions can differ from the unfused
 * kernels, never from one thread count to another: rows are split across threads whole.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kiln/runtime.h" /* KILN_MAX_THREADS */
#include "lower.h"

enum { ROW_MAX = 64 };

typedef struct row_kernel {
    const kiln_graph *g;
    const kiln_kernel_schedule *s;
    uint32_t k;
    const kiln_kernel *kn;
    kiln_row_form form;
    const loop_operand *ops;
    int n_ops;
    int64_t rs[CG_MAX_OPS], cs[CG_MAX_OPS];
    /* per member (kernel order): a reduction, a full member, or a row member; the phase
     * after which it is computable (0: before any reduction; p: after reduction p) */
    bool is_red[ROW_MAX], is_full[ROW_MAX];
    int phase[ROW_MAX];
    int cache[ROW_MAX];  /* a full member's row buffer, or −1 (classify) */
    int n_red, n_cache;
    int64_t parts;       /* contiguous ranges of rows, one scratch slot each */
} row_kernel;

static uint32_t member(const row_kernel *rk, uint32_t i) { return rk->s->members[rk->kn->first + i]; }

static int member_index(const row_kernel *rk, uint32_t id)
{
    for (uint32_t i = 0; i < rk->kn->n; i++)
        if (member(rk, i) == id) return (int)i;
    return -1;
}

static int operand_of(const row_kernel *rk, uint32_t id, bool writes)
{
    for (int o = 0; o < rk->n_ops; o++)
        if (writes ? rk->ops[o].writes && rk->ops[o].node == id : rk->ops[o].reads == id) return o;
    return -1;
}

/* phases: a reduction p (1-based, node order) finishes phase p; a member is computable
 * in the phase of its latest input; a reduction's input in the phase before it ends */
static void classify(row_kernel *rk)
{
    const kiln_graph *g = rk->g;
    rk->n_red = 0;
    for (uint32_t i = 0; i < rk->kn->n; i++) {
        const kiln_node *n = &g->nodes[member(rk, i)];
        rk->is_red[i] = kiln_op_table[n->op].kind == KILN_KIND_REDUCTION;
        rk->is_full[i] = !rk->is_red[i] && kiln_type_equal(&n->type, &rk->form.x);
        int ph = 0;
        for (uint32_t j = 0; j < n->n_in; j++) {
            int mi = member_index(rk, n->in[j]);
            if (mi >= 0 && rk->phase[mi] > ph) ph = rk->phase[mi];
        }
        if (rk->is_red[i]) {
            int in = member_index(rk, n->in[0]);
            ph = ++rk->n_red;
            KILN_ASSERT(in < 0 || ph > rk->phase[in]);
        }
        rk->phase[i] = ph;
    }
    /* a transcendental full member read by something computed in a later pass: kept in a
     * row buffer by its first pass (phase p computes it in pass p; a full reader of phase
     * q > p, or reduction number q > p + 1 reading it, runs later) */
    rk->n_cache = 0;
    for (uint32_t i = 0; i < rk->kn->n; i++) {
        rk->cache[i] = -1;
        kiln_op op = g->nodes[member(rk, i)].op;
        bool costly = op == KILN_OP_EXP || op == KILN_OP_LOG || op == KILN_OP_TANH || op == KILN_OP_SIGMOID ||
                      op == KILN_OP_SILU || op == KILN_OP_GELU || op == KILN_OP_GELU_TANH || op == KILN_OP_ERF ||
                      op == KILN_OP_POW;
        if (!rk->is_full[i] || !costly || rk->form.cols == 0) continue;
        bool later = false;
        for (uint32_t j = i + 1; j < rk->kn->n && !later; j++) {
            const kiln_node *r = &g->nodes[member(rk, j)];
            bool reads = false;
            for (uint32_t k = 0; k < r->n_in; k++) reads |= r->in[k] == member(rk, i);
            if (!reads) continue;
            later = rk->is_red[j] ? rk->phase[j] > rk->phase[i] + 1 : rk->is_full[j] && rk->phase[j] > rk->phase[i];
        }
        if (later) rk->cache[i] = rk->n_cache++;
    }
}

/* The parts a ROW kernel's rows are cut into (one scratch slot each). */
static int64_t parts_for(const kiln_row_form *f) { return f->rows < KILN_MAX_THREADS ? f->rows : KILN_MAX_THREADS; }

typedef struct row_state {
    LLVMValueRef value[ROW_MAX]; /* row members and reductions: their values in this row */
    bool stored[ROW_MAX];
    bool cached[ROW_MAX];        /* its row buffer holds this row's values */
    LLVMValueRef buffer;         /* the part's row buffers: n_cache × cols floats */
} row_state;

static LLVMValueRef cache_at(kiln_cg *cg, const row_kernel *rk, int i, LLVMValueRef c)
{
    return LLVMBuildNSWAdd(cg->b, cg_i64(cg, (int64_t)rk->cache[i] * rk->form.cols), c, "");
}

/* Operand o's element of row r, column c (NULL: a row value). */
static LLVMValueRef operand_offset(kiln_cg *cg, const row_kernel *rk, int o, LLVMValueRef r, LLVMValueRef c)
{
    LLVMValueRef off = LLVMBuildNSWMul(cg->b, r, cg_i64(cg, rk->rs[o]), "");
    if (c && rk->cs[o]) off = LLVMBuildNSWAdd(cg->b, off, LLVMBuildNSWMul(cg->b, c, cg_i64(cg, rk->cs[o]), ""), "");
    return off;
}

/* The value of input `in` of a member: another member's (full: vals_full[mi]) or an
 * operand's element. */
static LLVMValueRef input_value(kiln_cg *cg, const row_kernel *rk, const row_state *st, LLVMValueRef *full,
                                uint32_t in, const LLVMValueRef *vals, LLVMValueRef r, LLVMValueRef c)
{
    int mi = member_index(rk, in);
    if (mi >= 0) {
        LLVMValueRef v = rk->is_full[mi] ? full[mi] : st->value[mi];
        KILN_ASSERT(v != NULL);
        return v;
    }
    int o = operand_of(rk, in, false);
    KILN_ASSERT(o >= 0);
    return cg_load(cg, rk->g->nodes[in].type.dtype, vals[o], operand_offset(cg, rk, o, r, c));
}

static LLVMValueRef compute(kiln_cg *cg, const row_kernel *rk, const row_state *st, LLVMValueRef *full, uint32_t i,
                            const LLVMValueRef *vals, LLVMValueRef r, LLVMValueRef c)
{
    const kiln_node *n = &rk->g->nodes[member(rk, i)];
    LLVMValueRef x[3];
    KILN_ASSERT(n->n_in <= 3);
    for (uint32_t j = 0; j < n->n_in; j++) x[j] = input_value(cg, rk, st, full, n->in[j], vals, r, c);
    return cg_node_result(cg, lower_scalar_op(cg, n, x)); /* no FMA with a later member */
}

static void store_member(kiln_cg *cg, const row_kernel *rk, uint32_t i, const LLVMValueRef *vals, LLVMValueRef r,
                         LLVMValueRef c, LLVMValueRef v)
{
    int o = operand_of(rk, member(rk, i), true);
    if (o < 0) return; /* internal */
    cg_store(cg, KILN_F32, vals[o], operand_offset(cg, rk, o, r, c), v);
}

/* Row members computable in `phase`, in order, stored when they leave. */
static void row_members(kiln_cg *cg, const row_kernel *rk, row_state *st, int phase, const LLVMValueRef *vals,
                        LLVMValueRef r)
{
    for (uint32_t i = 0; i < rk->kn->n; i++) {
        if (rk->is_red[i] || rk->is_full[i] || rk->phase[i] != phase) continue;
        st->value[i] = compute(cg, rk, st, NULL, i, vals, r, NULL);
        store_member(cg, rk, i, vals, r, NULL, st->value[i]);
    }
}

/* A pass over the row's columns computing the full members of phases ≤ `phase` (storing
 * those not stored yet) and, when red ≥ 0, folding member red's input: its value. */
static LLVMValueRef column_pass(kiln_cg *cg, const row_kernel *rk, row_state *st, int phase, int red,
                                const LLVMValueRef *vals, LLVMValueRef r)
{
    const kiln_graph *g = rk->g;
    const kiln_node *rn = red >= 0 ? &g->nodes[member(rk, (uint32_t)red)] : NULL;
    bool is_max = rn && rn->op == KILN_OP_MAX;
    LLVMValueRef acc = NULL;
    if (rn) {
        acc = cg_local(cg, cg->t_f32, "acc");
        LLVMBuildStore(cg->b, is_max ? LLVMConstReal(cg->t_f32, -INFINITY) : cg_f32(cg, 0.0), acc);
    }
    bool store_now[ROW_MAX] = {0};
    for (uint32_t i = 0; i < rk->kn->n; i++)
        if (rk->is_full[i] && rk->phase[i] <= phase && !st->stored[i]) store_now[i] = st->stored[i] = true;
    cg_loop c;
    cg_loop_begin(cg, &c, cg_i64(cg, 0), cg_i64(cg, rk->form.cols), "col");
    LLVMValueRef full[ROW_MAX] = {0};
    bool cache_now[ROW_MAX] = {0};
    for (uint32_t i = 0; i < rk->kn->n; i++) {
        if (!rk->is_full[i] || rk->phase[i] > phase) continue;
        if (st->cached[i]) {
            full[i] = cg_load(cg, KILN_F32, st->buffer, cache_at(cg, rk, (int)i, c.i));
            continue;
        }
        full[i] = compute(cg, rk, st, full, i, vals, r, c.i);
        if (store_now[i]) store_member(cg, rk, i, vals, r, c.i, full[i]);
        if (rk->cache[i] >= 0) {
            cg_store(cg, KILN_F32, st->buffer, cache_at(cg, rk, (int)i, c.i), full[i]);
            cache_now[i] = true;
        }
    }
    if (rn) {
        LLVMValueRef v = input_value(cg, rk, st, full, rn->in[0], vals, r, c.i);
        LLVMValueRef a = LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
        LLVMBuildStore(cg->b, is_max ? cg_intrinsic2(cg, "llvm.maximum", a, v) : cg_fadd_reduce(cg, a, v), acc);
        cg_loop_end_interleaved(cg, &c, 4); /* four partial results hide the add's (max's) latency */
    } else {
        cg_loop_end(cg, &c);
    }
    for (uint32_t i = 0; i < rk->kn->n; i++) st->cached[i] |= cache_now[i];
    if (!rn) return NULL;
    LLVMValueRef v = LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
    if (rn->op == KILN_OP_MEAN) /* as lower_reduce: over nothing 0/0 = NaN */
        v = cg_fdiv(cg, v, LLVMConstReal(cg->t_f32, (double)rk->form.cols));
    return v;
}

/* parts [begin, end): part q runs rows [q·rows/P, (q+1)·rows/P) with slot q of scratch
 * (vals[n_ops]) when rows are cached */
static void rows_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const row_kernel *rk = user;
    cg_loop q;
    cg_loop_begin(cg, &q, begin, end, "part");
    LLVMValueRef rows = cg_i64(cg, rk->form.rows), parts = cg_i64(cg, rk->parts);
    LLVMValueRef lo = LLVMBuildSDiv(cg->b, LLVMBuildNSWMul(cg->b, q.i, rows, ""), parts, "");
    LLVMValueRef hi = LLVMBuildSDiv(cg->b, LLVMBuildNSWMul(cg->b, LLVMBuildNSWAdd(cg->b, q.i, cg_i64(cg, 1), ""), rows, ""),
                                    parts, "");
    row_state st;
    memset(&st, 0, sizeof st);
    if (rk->n_cache > 0)
        st.buffer = cg_gep(cg, KILN_F32, vals[rk->n_ops],
                           LLVMBuildNSWMul(cg->b, q.i, cg_i64(cg, rk->n_cache * rk->form.cols), ""));
    cg_loop r;
    cg_loop_begin(cg, &r, lo, hi, "row");
    row_members(cg, rk, &st, 0, vals, r.i);
    int p = 0;
    for (uint32_t i = 0; i < rk->kn->n; i++) {
        if (!rk->is_red[i]) continue;
        p++;
        st.value[i] = column_pass(cg, rk, &st, p - 1, (int)i, vals, r.i);
        store_member(cg, rk, i, vals, r.i, NULL, st.value[i]);
        row_members(cg, rk, &st, p, vals, r.i);
    }
    bool left = false; /* full members of the last phase */
    for (uint32_t i = 0; i < rk->kn->n; i++) left |= rk->is_full[i] && !st.stored[i];
    if (left) column_pass(cg, rk, &st, p, -1, vals, r.i);
    cg_loop_end(cg, &r);
    cg_loop_end(cg, &q);
}

/* The kernel's form (from its first reduction, returned), phases and row buffers. */
static uint32_t row_kernel_init(row_kernel *rk, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k)
{
    *rk = (row_kernel){.g = g, .s = s, .k = k, .kn = &s->kernels[k]};
    KILN_ASSERT(rk->kn->n <= ROW_MAX);
    uint32_t first_red = lower_first_reduction(g, s, k);
    KILN_ASSERT(first_red != KILN_NONE && kiln_row_form_of(g, &g->nodes[first_red], &rk->form));
    classify(rk);
    rk->parts = parts_for(&rk->form);
    return first_red;
}

uint32_t lower_row_scratch(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, int64_t *bytes)
{
    row_kernel rk;
    uint32_t first_red = row_kernel_init(&rk, g, s, k);
    *bytes = rk.parts * rk.n_cache * rk.form.cols * KILN_ELEM_BYTES;
    return first_red;
}

LLVMValueRef lower_row_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                              const loop_operand *ops, int n_ops, bool has_scratch)
{
    row_kernel rk;
    row_kernel_init(&rk, g, s, k);
    rk.ops = ops;
    rk.n_ops = n_ops;
    KILN_ASSERT(has_scratch == (rk.n_cache > 0));
    for (int o = 0; o < n_ops; o++) {
        const kiln_type *t = &g->nodes[ops[o].writes ? ops[o].node : ops[o].reads].type;
        bool ok = kiln_row_strides(&rk.form, t, &rk.rs[o], &rk.cs[o]);
        if (ops[o].writes && !kiln_type_equal(t, &rk.form.x)) { /* a row value: one per row */
            rk.rs[o] = 1;
            rk.cs[o] = 0;
            ok = true;
        }
        KILN_ASSERT(ok);
    }
    char name[64];
    snprintf(name, sizeof name, "k%u_row%u", member(&rk, 0), rk.kn->n);
    LLVMValueRef vals[CG_MAX_OPS + 1];
    LLVMValueRef fn = lower_operands_function(cg, name, ops, n_ops, rk.n_cache > 0 ? 1u : 0u, vals);
    if (rk.n_cache > 0) vals[n_ops] = LLVMGetParam(fn, (unsigned)n_ops);
    /* rough element-operations per part: a pass per reduction and one more, per row */
    int64_t work = rk.form.cols * (int64_t)rk.kn->n * (rk.n_red + 1) * (rk.form.rows / rk.parts);
    cg_parallel_for(cg, "rows", rk.parts, work, vals, (unsigned)n_ops + (rk.n_cache > 0 ? 1u : 0u), rows_body, &rk);
    LLVMBuildRetVoid(cg->b);
    return fn;
}
