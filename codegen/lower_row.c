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
 *       LLVM vectorises into partial sums per lane, as the lone reduction kernel's row)
 *       the reduction's value (a mean divides by the count, as that kernel does), then
 *       the row members that became computable
 *   a last pass for the full members that need the last reduction
 *
 * A full member is recomputed in each pass that needs it (its inputs are one row, in L1)
 * and stored in the first pass that computes it, when its value leaves the kernel; row
 * members and reductions are computed once and stored when they leave. Each member is
 * computed by the scalar function its one-node kernel applies (lower_scalar_op,
 * cg_node_result), so only the order of a sum's additions can differ from the unfused
 * kernels, never from one thread count to another: rows are split across threads whole.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

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
    int n_red;
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
}

typedef struct row_state {
    LLVMValueRef value[ROW_MAX]; /* row members and reductions: their values in this row */
    bool stored[ROW_MAX];
} row_state;

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
    LLVMValueRef off = LLVMBuildNSWMul(cg->b, r, cg_i64(cg, rk->rs[o]), "");
    if (c && rk->cs[o]) off = LLVMBuildNSWAdd(cg->b, off, LLVMBuildNSWMul(cg->b, c, cg_i64(cg, rk->cs[o]), ""), "");
    return cg_load(cg, rk->g->nodes[in].type.dtype, vals[o], off);
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
    LLVMValueRef off = LLVMBuildNSWMul(cg->b, r, cg_i64(cg, rk->rs[o]), "");
    if (c) off = LLVMBuildNSWAdd(cg->b, off, LLVMBuildNSWMul(cg->b, c, cg_i64(cg, rk->cs[o]), ""), "");
    cg_store(cg, KILN_F32, vals[o], off, v);
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
    for (uint32_t i = 0; i < rk->kn->n; i++) {
        if (!rk->is_full[i] || rk->phase[i] > phase) continue;
        full[i] = compute(cg, rk, st, full, i, vals, r, c.i);
        if (store_now[i]) store_member(cg, rk, i, vals, r, c.i, full[i]);
    }
    if (rn) {
        LLVMValueRef v = input_value(cg, rk, st, full, rn->in[0], vals, r, c.i);
        LLVMValueRef a = LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
        LLVMBuildStore(cg->b, is_max ? cg_intrinsic2(cg, "llvm.maximum", a, v) : cg_fadd_reduce(cg, a, v), acc);
    }
    cg_loop_end(cg, &c);
    if (!rn) return NULL;
    LLVMValueRef v = LLVMBuildLoad2(cg->b, cg->t_f32, acc, "");
    if (rn->op == KILN_OP_MEAN) /* as lower_reduce: over nothing 0/0 = NaN */
        v = cg_fdiv(cg, v, LLVMConstReal(cg->t_f32, (double)rk->form.cols));
    return v;
}

static void rows_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const row_kernel *rk = user;
    cg_loop r;
    cg_loop_begin(cg, &r, begin, end, "row");
    row_state st;
    memset(&st, 0, sizeof st);
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
}

LLVMValueRef lower_row_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                              const loop_operand *ops, int n_ops)
{
    row_kernel rk = {.g = g, .s = s, .k = k, .kn = &s->kernels[k], .ops = ops, .n_ops = n_ops};
    KILN_ASSERT(rk.kn->n <= ROW_MAX);
    uint32_t first_red = KILN_NONE;
    for (uint32_t i = 0; i < rk.kn->n && first_red == KILN_NONE; i++)
        if (kiln_op_table[g->nodes[member(&rk, i)].op].kind == KILN_KIND_REDUCTION) first_red = member(&rk, i);
    KILN_ASSERT(first_red != KILN_NONE && kiln_row_form_of(g, &g->nodes[first_red], &rk.form));
    classify(&rk);
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
    LLVMValueRef vals[CG_MAX_OPS];
    LLVMValueRef fn = lower_operands_function(cg, name, ops, n_ops, 0, vals);
    /* rough element-operations per row: a pass per reduction and one more */
    int64_t work = rk.form.cols * (int64_t)rk.kn->n * (rk.n_red + 1);
    cg_parallel_for(cg, "rows", rk.form.rows, work, vals, (unsigned)n_ops, rows_body, &rk);
    LLVMBuildRetVoid(cg->b);
    return fn;
}
