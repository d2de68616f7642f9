/* lower_gemm_kernel.c — the schedule's GEMM kernels: a matmul with its epilogue.
 *
 * Design. passes/fuse.c groups a matmul that is one GEMM call with the elementwise nodes
 * after it — [scale] [+ bias row] [activation] [+ residual] — and this file turns the
 * group into one call of the GEMM with that epilogue (codegen/gemm.c applies it in the
 * store of each C tile, with each step rounded as its unfused kernel rounds, so fusing
 * changes no bits). The kernel writes the group's last value into C and, when a value
 * before the activation is read elsewhere (a training step's backward), that value into P.
 */
#include <stdio.h>
#include <string.h>

#include "lower.h"

/* The epilogue's activation for op. Which ops a GEMM takes as its activation is the
 * fuser's one list (kiln_is_gemm_activation); this only says how each is applied, and
 * fails loudly on one in that list that the epilogue cannot apply. */
static kiln_gemm_act act_of(kiln_op op)
{
    KILN_ASSERT(kiln_is_gemm_activation(op));
    switch (op) {
    case KILN_OP_RELU: return KILN_GEMM_ACT_RELU;
    case KILN_OP_GELU: return KILN_GEMM_ACT_GELU;
    case KILN_OP_GELU_TANH: return KILN_GEMM_ACT_GELU_TANH;
    case KILN_OP_SILU: return KILN_GEMM_ACT_SILU;
    default: KILN_ASSERT(!"a GEMM activation the epilogue cannot apply"); return KILN_GEMM_ACT_NONE;
    }
}

void gemm_kernel_describe_part(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, uint32_t part,
                               gemm_kernel *gk)
{
    memset(gk, 0, sizeof *gk);
    const kiln_kernel *kn = &s->kernels[k];
    uint32_t per = kn->n / kn->parts, first = kn->first + part * per;
    /* members are in node order: a bias gradient may come before the matmul */
    gk->mm = gk->colsum = KILN_NONE;
    for (uint32_t i = 0; i < per; i++) {
        uint32_t m = s->members[first + i];
        if (g->nodes[m].op == KILN_OP_MATMUL && gk->mm == KILN_NONE) gk->mm = m;
    }
    KILN_ASSERT(gk->mm != KILN_NONE);
    gk->shape = lower_one_gemm_shape(g, &g->nodes[gk->mm]);
    gk->epi.ldp = gk->epi.ldr = gk->shape.n;
    uint32_t v = gk->mm, pre = KILN_NONE, bias = KILN_NONE, res = KILN_NONE;
    for (uint32_t i = 0; i < per; i++) {
        uint32_t m = s->members[first + i];
        const kiln_node *n = &g->nodes[m];
        if (m == gk->mm) continue;
        if (n->op == KILN_OP_SUM) { /* fuse.c's bias gradient: sums of the operand it reads */
            uint32_t y = n->in[0];
            while (g->nodes[y].op == KILN_OP_RESHAPE && s->kernel_of[y] == KILN_NONE) y = g->nodes[y].in[0];
            KILN_ASSERT(kiln_gemm_sums_operand(g, &g->nodes[gk->mm], y, n->type.dims[0], &gk->colsum_operand));
            gk->colsum = m;
            continue;
        }
        if (n->op == KILN_OP_SCALE) {
            KILN_ASSERT(n->attrs.scalar != 0); /* 0 would mean no scale: fuse.c keeps it out */
            gk->epi.scale = n->attrs.scalar;
        } else if (n->op == KILN_OP_ADD && gk->epi.act == KILN_GEMM_ACT_NONE && !gk->epi.bias &&
                   kiln_type_numel(&g->nodes[n->in[0] == v ? n->in[1] : n->in[0]].type) == gk->shape.n) {
            /* the first add with a row of n values, before any activation: fuse.c's bias */
            gk->epi.bias = true;
            bias = n->in[0] == v ? n->in[1] : n->in[0];
        } else if (n->op == KILN_OP_ADD) {
            gk->epi.residual = true;
            res = n->in[0] == v ? n->in[1] : n->in[0];
        } else {
            gk->epi.act = act_of(n->op);
            if (!s->internal[v]) pre = v; /* the value before the activation is read elsewhere */
        }
        v = m;
    }
    gk->epi.pre_out = pre != KILN_NONE;
    gk->last = v;
    /* arguments: C, [P], A, B, [bias], [R], [column sums] */
    gk->args[gk->n_args++] = v;
    if (pre != KILN_NONE) gk->args[gk->n_args++] = pre;
    gk->args[gk->n_args++] = g->nodes[gk->mm].in[0];
    gk->args[gk->n_args++] = g->nodes[gk->mm].in[1];
    if (bias != KILN_NONE) gk->args[gk->n_args++] = bias;
    if (res != KILN_NONE) gk->args[gk->n_args++] = res;
    if (gk->colsum != KILN_NONE) gk->args[gk->n_args++] = gk->colsum;
}

/* ---- the bias gradient ---------------------------------------------------------------------- */

/* The column sums of a (K, N) row-major matrix with row stride ld: out[j] = Σ_r x[r·ld + j],
 * each column added up in row order, r = 0, 1, …, K−1 (one f32 accumulator per column, so
 * the vectoriser may run the columns as lanes but never reorders a column's sum). Columns
 * are cut into blocks of COLSUM_BLOCK, each block summed by one thread: every result is
 * computed the same way for any thread count and any partition — the same bits. */
enum { COLSUM_BLOCK = 64 };

typedef struct colsum_job {
    int64_t K, N, ld;
} colsum_job;

/* vals = out, x; column blocks [begin, end) */
static void colsum_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    const colsum_job *j = user;
    LLVMValueRef out = vals[0], x = vals[1];
    LLVMValueRef lo = LLVMBuildNSWMul(cg->b, begin, cg_i64(cg, COLSUM_BLOCK), "");
    LLVMValueRef hi = LLVMBuildNSWMul(cg->b, end, cg_i64(cg, COLSUM_BLOCK), "");
    LLVMValueRef n = cg_i64(cg, j->N);
    hi = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, hi, n, ""), hi, n, "");
    cg_loop z, r, c;
    cg_loop_begin(cg, &z, lo, hi, "zero");
    cg_store(cg, KILN_F32, out, z.i, cg_f32(cg, 0.0));
    cg_loop_end(cg, &z);
    cg_loop_begin(cg, &r, cg_i64(cg, 0), cg_i64(cg, j->K), "row");
    LLVMValueRef row = LLVMBuildNSWMul(cg->b, r.i, cg_i64(cg, j->ld), "");
    cg_loop_begin(cg, &c, lo, hi, "col");
    LLVMValueRef v = cg_load(cg, KILN_F32, x, LLVMBuildNSWAdd(cg->b, row, c.i, ""));
    cg_store(cg, KILN_F32, out, c.i, cg_fadd(cg, cg_load(cg, KILN_F32, out, c.i), v));
    cg_loop_end(cg, &c);
    cg_loop_end(cg, &r);
}

/* out (N floats) = the column sums of the operand of the GEMM gk that it walks along k:
 * op(A) = Aᵀ with A (k, m) (lanes = rows of op(A)), or op(B) = B (k, n). */
static void emit_colsum(kiln_cg *cg, const gemm_kernel *gk, LLVMValueRef out, LLVMValueRef a, LLVMValueRef b)
{
    const kiln_gemm_shape *sh = &gk->shape;
    colsum_job j = {sh->k, gk->colsum_operand == 0 ? sh->m : sh->n, gk->colsum_operand == 0 ? sh->lda : sh->ldb};
    if (j.N == 0) return;
    LLVMValueRef vals[2] = {out, gk->colsum_operand == 0 ? a : b};
    int64_t items = (j.N + COLSUM_BLOCK - 1) / COLSUM_BLOCK;
    cg_parallel_for(cg, "colsum", items, j.K * COLSUM_BLOCK, vals, 2, colsum_body, &j);
}

/* Whether the parts of a GEMM kernel can run as one group job (kiln_cg_gemm_group): one
 * shape and one epilogue (fuse.c's siblings have them; checked here all the same) that
 * the group accepts. Whether they read the same A is known only from the pointers, at
 * run time (siblings may share B instead, or read A through different views). */
static bool same_product(const gemm_kernel *x, const gemm_kernel *y)
{
    const kiln_gemm_shape *s = &x->shape, *t = &y->shape;
    const kiln_gemm_epilogue *e = &x->epi, *f = &y->epi;
    return s->m == t->m && s->n == t->n && s->k == t->k && s->trans_a == t->trans_a && s->trans_b == t->trans_b &&
           s->lda == t->lda && s->ldb == t->ldb && s->ldc == t->ldc && e->accumulate == f->accumulate &&
           e->scale == f->scale && e->bias == f->bias && e->pre_out == f->pre_out && e->act == f->act &&
           e->residual == f->residual && (!e->pre_out || e->ldp == f->ldp) && (!e->residual || e->ldr == f->ldr);
}

static bool parts_as_group(const kiln_target *t, const gemm_kernel *gks, uint32_t parts)
{
    if (parts < 2) return false;
    for (uint32_t q = 1; q < parts; q++)
        if (!same_product(&gks[0], &gks[q])) return false;
    return kiln_gemm_group_ok(t, &gks[0].shape, &gks[0].epi, (int)parts);
}

int64_t gemm_kernel_parts_scratch_bytes(const kiln_target *t, const gemm_kernel *gks, uint32_t parts)
{
    int64_t floats = kiln_gemm_epi_scratch_floats(t, &gks[0].shape, &gks[0].epi);
    if (parts_as_group(t, gks, parts)) {
        int64_t group = kiln_gemm_group_scratch_floats(t, &gks[0].shape, &gks[0].epi, (int)parts);
        if (group > floats) floats = group;
    }
    return floats * KILN_ELEM_BYTES;
}

/* One part's pointers, read off the kernel's parameters from *at on. */
typedef struct part_ptrs {
    LLVMValueRef c, pre, a, b, bias, res, sums;
} part_ptrs;

static part_ptrs take_part_ptrs(LLVMValueRef fn, const gemm_kernel *gk, unsigned *at)
{
    part_ptrs p = {0};
    p.c = LLVMGetParam(fn, (*at)++);
    if (gk->epi.pre_out) p.pre = LLVMGetParam(fn, (*at)++);
    p.a = LLVMGetParam(fn, (*at)++);
    p.b = LLVMGetParam(fn, (*at)++);
    if (gk->epi.bias) p.bias = LLVMGetParam(fn, (*at)++);
    if (gk->epi.residual) p.res = LLVMGetParam(fn, (*at)++);
    if (gk->colsum != KILN_NONE) p.sums = LLVMGetParam(fn, (*at)++);
    return p;
}

/* Whether part q's bias gradient rides on its product's packing of op(A)
 * (kiln_cg_gemm_sum) instead of a pass of its own (emit_colsum): a sum of op(A)'s lanes
 * that the product packs with its copier, and not in a group job (whose A is packed once
 * for all parts). */
static bool sum_rides(const kiln_target *t, const gemm_kernel *gk, bool grouped)
{
    return gk->colsum != KILN_NONE && gk->colsum_operand == 0 && !grouped && kiln_gemm_can_sum_a(t, &gk->shape);
}

/* The parts one after another, sharing the scratch. */
static void emit_parts_in_turn(kiln_cg *cg, kiln_cg *gemm_cg, const gemm_kernel *gks, const part_ptrs *pp,
                               uint32_t parts, LLVMValueRef scratch, bool grouped)
{
    for (uint32_t q = 0; q < parts; q++) {
        const gemm_kernel *gk = &gks[q];
        if (gk->shape.m <= 0 || gk->shape.n <= 0) continue;
        bool rides = sum_rides(cg->target, gk, grouped);
        LLVMValueRef gemm = lower_gemm_declare(cg, rides ? kiln_cg_gemm_sum(gemm_cg, &gk->shape, &gk->epi)
                                                         : kiln_cg_gemm_epi(gemm_cg, &gk->shape, &gk->epi));
        /* (a, b, c, scratch, [bias], [pre_out], [residual], [sums]) */
        LLVMValueRef args[8] = {pp[q].a, pp[q].b, pp[q].c, scratch};
        unsigned n = 4;
        if (pp[q].bias) args[n++] = pp[q].bias;
        if (pp[q].pre) args[n++] = pp[q].pre;
        if (pp[q].res) args[n++] = pp[q].res;
        if (rides) args[n++] = pp[q].sums;
        LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(gemm), gemm, args, n, "");
    }
}

/* if (every part's A is the first's) group(a, scratch, ops) else the parts in turn; ops
 * = parts × {b, c, bias, pre_out, residual} on the stack. */
static void emit_parts_grouped(kiln_cg *cg, kiln_cg *gemm_cg, const gemm_kernel *gks, const part_ptrs *pp,
                               uint32_t parts, LLVMValueRef scratch)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
    LLVMValueRef same = LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), 1, 0);
    for (uint32_t q = 1; q < parts; q++)
        same = LLVMBuildAnd(cg->b, same, LLVMBuildICmp(cg->b, LLVMIntEQ, pp[q].a, pp[0].a, ""), "");
    LLVMBasicBlockRef one = LLVMAppendBasicBlockInContext(cg->ctx, fn, "one_job");
    LLVMBasicBlockRef apart = LLVMAppendBasicBlockInContext(cg->ctx, fn, "in_turn");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, fn, "done");
    LLVMBuildCondBr(cg->b, same, one, apart);

    LLVMPositionBuilderAtEnd(cg->b, one);
    LLVMTypeRef ops_ty = LLVMArrayType2(cg->t_ptr, parts * 5);
    LLVMValueRef ops = LLVMBuildAlloca(cg->b, ops_ty, "ops");
    LLVMValueRef null = LLVMConstPointerNull(cg->t_ptr);
    for (uint32_t q = 0; q < parts; q++) {
        LLVMValueRef v[5] = {pp[q].b, pp[q].c, pp[q].bias ? pp[q].bias : null, pp[q].pre ? pp[q].pre : null,
                             pp[q].res ? pp[q].res : null};
        for (uint32_t i = 0; i < 5; i++) {
            LLVMValueRef idx[] = {cg_i64(cg, 0), cg_i64(cg, q * 5 + i)};
            LLVMBuildStore(cg->b, v[i], LLVMBuildInBoundsGEP2(cg->b, ops_ty, ops, idx, 2, ""));
        }
    }
    LLVMValueRef group = lower_gemm_declare(cg, kiln_cg_gemm_group(gemm_cg, &gks[0].shape, &gks[0].epi, (int)parts));
    LLVMValueRef args[3] = {pp[0].a, scratch, ops};
    LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(group), group, args, 3, "");
    LLVMBuildBr(cg->b, done);

    LLVMPositionBuilderAtEnd(cg->b, apart);
    emit_parts_in_turn(cg, gemm_cg, gks, pp, parts, scratch, true);
    LLVMBuildBr(cg->b, done);
    LLVMPositionBuilderAtEnd(cg->b, done);
}

LLVMValueRef lower_gemm_kernel_parts(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const gemm_kernel *gks,
                                     uint32_t parts, bool has_scratch)
{
    (void)g;
    char name[64];
    snprintf(name, sizeof name, parts > 1 ? "k%u_gemm%u" : "k%u_gemm", gks[0].mm, parts);
    unsigned n_ptrs = has_scratch ? 1 : 0;
    for (uint32_t q = 0; q < parts; q++) n_ptrs += (unsigned)gks[q].n_args;
    LLVMValueRef fn = cg_kernel_begin(cg, name, cg->t_void, n_ptrs);
    LLVMValueRef scratch = has_scratch ? LLVMGetParam(fn, n_ptrs - 1) : LLVMConstPointerNull(cg->t_ptr);
    part_ptrs pp[8];
    KILN_ASSERT(parts <= 8);
    unsigned at = 0;
    for (uint32_t q = 0; q < parts; q++) pp[q] = take_part_ptrs(fn, &gks[q], &at);
    /* the bias gradients that do not ride on their product's packing first: each brings
     * its operand into cache for the packing */
    bool grouped = has_scratch && parts_as_group(cg->target, gks, parts);
    for (uint32_t q = 0; q < parts; q++)
        if (pp[q].sums && !sum_rides(cg->target, &gks[q], grouped))
            emit_colsum(cg, &gks[q], pp[q].sums, pp[q].a, pp[q].b);
    if (grouped)
        emit_parts_grouped(cg, gemm_cg, gks, pp, parts, scratch);
    else
        emit_parts_in_turn(cg, gemm_cg, gks, pp, parts, scratch, false);
    LLVMBuildRetVoid(cg->b);
    return fn;
}

bool gemm_kernel_key(const kiln_graph *g, const gemm_kernel *gk, bool has_scratch, char *buf, size_t size)
{
    if (!lower_kernel_key(g, gk->mm, has_scratch, buf, size)) return false;
    size_t len = strlen(buf);
    int n = snprintf(buf + len, size - len, " epi scale=%a bias=%d pre=%d act=%d res=%d colsum=%d", gk->epi.scale,
                     gk->epi.bias, gk->epi.pre_out, (int)gk->epi.act, gk->epi.residual,
                     gk->colsum != KILN_NONE ? gk->colsum_operand : -1);
    return n >= 0 && (size_t)n < size - len;
}
