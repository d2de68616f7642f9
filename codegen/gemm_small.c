/* gemm_small.c — GEMMs of 1…8 rows (batch-1 decoding), nothing packed.
 *
 * With 1…8 rows (no more than MR) and B plain, nothing is packed: for each k block, NR columns at a time, the rows of B are
 * streamed through M×2 accumulators and the sums stored as the general tiles store theirs
 * (same k blocks, same order), so the bits are the general path's; the epilogue is the
 * same gemm_write_epilogue. Threads split n. Measured on the busy 2-core Zen 5 (1 thread,
 * best of 200 calls): 2.4–6.4× faster than packing for m = 1…4 with n, k ≤ 1536, 1.4–1.6×
 * on the memory-bound 2×4096×4096 and at m = 8; AVX2 2.2–2.9× and 1.6–1.9×.
 * With B transposed (x·Wᵀ: the linear layers of a decoding step) op(B)'s columns are
 * B's contiguous rows: small_t_block computes each column as a dot product along k (one
 * k block, G columns at a time, a fixed tree for the lanes), not the general path's bits
 * but independent of the thread split. Only both operands transposed stay on the packed path.
 * Each step of its k loop also prefetches the same depth of the next G rows of B (the
 * weights are read once, in order, from memory: the hardware prefetcher alone left the
 * decode step's GEMMs stalled on loads; with it, ~25 % less CPU time per step on the busy
 * 2-core machine, `kiln generate --threads 1`).
 *
 * Everything else about the GEMM (blocks, threads, epilogues, the packed path) is in
 * gemm.c; the builders both use are gemm_gen.h's. */
#include <stdio.h>
#include <string.h>

#include "gemm_gen.h"

/* With a few rows (batch-1 decoding: m = 1), packing is pure overhead: the A sliver
 * would be mostly padding and B is read once anyway. small_function streams op(B)'s rows
 * instead, B plain only (rows of B are then contiguous along n). */
enum { SMALL_M_MAX = 8 };

bool gemm_use_small(gemm_tile t, const kiln_gemm_shape *s) {
    return s->m >= 1 && s->m <= SMALL_M_MAX && s->m <= t.mr && !(s->trans_a && s->trans_b) && s->n > 0 && s->k > 0;
}

/* B transposed (x·Wᵀ, every linear layer's product): op(B)'s columns are B's rows, so a
 * column's sums are dot products of contiguous rows. The k loop runs over the whole of k
 * (one block: B's rows stream through once), vectorised along k, G columns of B at a time
 * (G·m accumulators: enough independent chains, few enough registers); each column's W
 * lane sums are added by a fixed tree, so the result does not depend on which thread owns
 * the column. (Not the general path's bits: its sums run along k per lane of C.) */
static int small_t_group(int m) { return m <= 1 ? 8 : m <= 4 ? 4 : 2; }

/* The sum of v's lanes: halves added until one lane is left (a fixed order). */
static LLVMValueRef hsum(gen *g, LLVMValueRef v, int w) {
    for (int half = w / 2; half >= 1; half /= 2) {
        LLVMValueRef lo[16], hi[16];
        for (int i = 0; i < half; i++) lo[i] = LLVMConstInt(g->i32, (unsigned)i, 0), hi[i] = LLVMConstInt(g->i32, (unsigned)(half + i), 0);
        LLVMValueRef a = LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(lo, (unsigned)half), "");
        LLVMValueRef b = LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(hi, (unsigned)half), "");
        v = LLVMBuildFAdd(g->b, a, b, "");
    }
    return LLVMBuildExtractElement(g->b, v, LLVMConstInt(g->i32, 0, 0), "");
}

/* B transposed: the sums of rows 0..m of A (plain) with op(B)'s columns j..j+NR over
 * depths [q0, qend), as sum[r][v] (see small_t_group). Columns past n read row n − 1
 * again (their lanes are never stored); tmp holds m×NR floats. */
static void small_t_block(gen *g, int m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef lda, LLVMValueRef ldb,
                          LLVMValueRef n, LLVMValueRef j, LLVMValueRef q0, LLVMValueRef qend, LLVMValueRef tmp,
                          LLVMValueRef sum[][NV]) {
    const int w = g->t.w, nr = g->t.nr, G = small_t_group(m);
    LLVMValueRef zero = LLVMConstNull(g->vf);
    loop lg = loop_begin(g, k64(g, 0), k64(g, nr), G, "jj");
    LLVMValueRef brow[8], arow[SMALL_M_MAX];
    for (int c = 0; c < G; c++) {
        LLVMValueRef col = smin(g, add(g, j, add(g, lg.iv, k64(g, c))), sub(g, n, k64(g, 1)));
        brow[c] = at(g, b, mul(g, col, ldb));
    }
    for (int r = 0; r < m; r++) arow[r] = at(g, a, mul(g, k64(g, r), lda));
    LLVMValueRef acc[SMALL_M_MAX][8], next[SMALL_M_MAX][8];
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b), body = block(g, "tq"), done = block(g, "tq.done");
    LLVMBuildBr(g->b, body);
    LLVMPositionBuilderAtEnd(g->b, body);
    LLVMValueRef q = LLVMBuildPhi(g->b, g->i64, "q");
    for (int r = 0; r < m; r++)
        for (int c = 0; c < G; c++) acc[r][c] = LLVMBuildPhi(g->b, g->vf, "acc");
    LLVMValueRef mask = lanes_below(g, sub(g, qend, q)), bv[8], av[SMALL_M_MAX];
    for (int c = 0; c < G; c++) bv[c] = masked_load(g, at_any(g, brow[c], q), mask);
    for (int c = 0; c < G; c++) /* the next group's rows (B's next G rows), one line per row and step */
        prefetch_for_read(g, at_any(g, brow[c], add(g, q, mul(g, k64(g, G), ldb))));
    for (int r = 0; r < m; r++) av[r] = masked_load(g, at_any(g, arow[r], q), mask);
    for (int r = 0; r < m; r++)
        for (int c = 0; c < G; c++) {
            LLVMValueRef args[] = {av[r], bv[c], acc[r][c]};
            next[r][c] = LLVMBuildCall2(g->b, g->fma_ty, g->fma, args, 3, "");
        }
    LLVMValueRef q1 = add(g, q, k64(g, w));
    hint_loop(g, LLVMBuildCondBr(g->b, lt(g, q1, qend), body, done));
    LLVMAddIncoming(q, &q0, &pre, 1);
    LLVMAddIncoming(q, &q1, &body, 1);
    for (int r = 0; r < m; r++)
        for (int c = 0; c < G; c++) {
            LLVMAddIncoming(acc[r][c], &zero, &pre, 1);
            LLVMAddIncoming(acc[r][c], &next[r][c], &body, 1);
        }
    LLVMPositionBuilderAtEnd(g->b, done);
    for (int r = 0; r < m; r++)
        for (int c = 0; c < G; c++) {
            LLVMValueRef idx = add(g, k64(g, r * nr + c), lg.iv);
            store_aligned(g, hsum(g, next[r][c], w), at(g, tmp, idx), 4);
        }
    loop_end(g, &lg);
    for (int r = 0; r < m; r++)
        for (int v = 0; v < NV; v++) sum[r][v] = load_aligned(g, g->vf, at(g, tmp, k64(g, r * nr + v * w)), 4);
}

/*   void kiln_gemm_small_wW_mM_T[_eCODE](const float *a, const float *b, float *c, i64 n,
 *        i64 k, i64 lda, i64 ldb, i64 ldc, i64 kc, float *x, i64 ldx, const float *bias,
 *        float *p, i64 ldp, const float *r, i64 ldr, double scale, i64 j0, i64 j1)
 * C[0..M)[j0..j1) of an M-row product (T: A plain or transposed), k ≥ 1. For each k block
 * (the general path's kc), for each NR columns: M×2 accumulators in registers, fed at
 * each depth q by the NR floats of B's row q (masked past n) and the M elements of
 * op(A)'s column q, broadcast; then, like the general path's tiles, the block's sums
 * are stored into X (C, or the partial sums x with accumulate), added to what the earlier
 * blocks left there, and on the last block the epilogue (e, or none) goes to C. So every
 * element gets the general path's bits. The k blocks are the outer loop so that a block
 * of B's rows stays in cache (and its pages in the TLB) while its columns are swept. */
static LLVMValueRef small_function(gen g, int m, bool trans_a, bool trans_b, const kiln_gemm_epilogue *e) {
    const int w = g.t.w, nr = g.t.nr;
    char name[96], code[48] = "";
    if (e) gemm_epi_code(e, code, sizeof code);
    snprintf(name, sizeof name, "kiln_gemm_small_w%d_m%d_%c%c%s", w, m, trans_a ? 't' : 'n', trans_b ? 't' : 'n', code);
    LLVMTypeRef i64 = g.i64, ptr = g.ptr;
    LLVMTypeRef params[] = {ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, ptr,  i64,
                            ptr, ptr, i64, ptr, i64, g.f64, i64, i64};
    static const char *const names[] = {"a", "b",    "c", "n",   "k", "lda", "ldb",   "ldc", "kc", "x",
                                        "ldx", "bias", "p", "ldp", "r", "ldr", "scale", "j0",  "j1"};
    LLVMValueRef fn;
    if (!function_begin(&g, name, 19, params, names, &fn)) return fn;
    g.t.mr = m;  /* gemm_write_epilogue emits the rows there are, no more */
    add_attr(&g, 1, "readonly");
    add_attr(&g, 2, "readonly");
    add_attr(&g, 12, "readonly");
    add_attr(&g, 15, "readonly");
    LLVMValueRef a = param(&g, 0), b = param(&g, 1), c = param(&g, 2), n = param(&g, 3), k = param(&g, 4);
    LLVMValueRef lda = param(&g, 5), ldb = param(&g, 6), ldc = param(&g, 7), kc_max = param(&g, 8);
    /* the partial sums: x with accumulate, else C (never both: they are noalias) */
    bool acc_x = e && e->accumulate;
    LLVMValueRef x = acc_x ? param(&g, 9) : c, ldx = acc_x ? param(&g, 10) : ldc;
    LLVMValueRef zero = LLVMConstNull(g.vf), none = LLVMConstNull(g.vmask), tmp = NULL;
    if (trans_b) { /* the columns' sums, m×NR floats (in the entry block: one slot) */
        tmp = LLVMBuildAlloca(g.b, LLVMArrayType2(g.f32, (uint64_t)(SMALL_M_MAX * NR_MAX)), "sums");
        LLVMSetAlignment(tmp, 64);
    }

    loop lp = loop_begin(&g, k64(&g, 0), k, 1, "p");
    lp.step_value = kc_max;
    LLVMValueRef qend = add(&g, lp.iv, smin(&g, kc_max, sub(&g, k, lp.iv)));
    LLVMValueRef first = LLVMBuildICmp(g.b, LLVMIntEQ, lp.iv, k64(&g, 0), "");
    LLVMValueRef last = LLVMBuildICmp(g.b, LLVMIntSGE, qend, k, "");

    loop lj = loop_begin(&g, param(&g, 17), param(&g, 18), nr, "j");
    LLVMValueRef j = lj.iv, cols = sub(&g, n, j), colmask[NV];
    for (int v = 0; v < NV; v++) colmask[v] = lanes_below(&g, sub(&g, cols, k64(&g, v * w)));
    LLVMValueRef bcol = at(&g, b, j);

    /* the block's k loop (runs at least once: p < k) */
    LLVMValueRef acc[SMALL_M_MAX][NV], sum[SMALL_M_MAX][NV];
    if (trans_b) {
        small_t_block(&g, m, a, b, lda, ldb, n, j, lp.iv, qend, tmp, sum);
        goto sums;
    }
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g.b), body = block(&g, "q"), done = block(&g, "q.done");
    LLVMBuildBr(g.b, body);
    LLVMPositionBuilderAtEnd(g.b, body);
    LLVMValueRef q = LLVMBuildPhi(g.b, g.i64, "q");
    for (int r = 0; r < m; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = LLVMBuildPhi(g.b, g.vf, "acc");
    LLVMValueRef brow = at(&g, bcol, mul(&g, q, ldb)), bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = masked_load(&g, at_any(&g, brow, k64(&g, v * w)), colmask[v]);
    for (int r = 0; r < m; r++) {  /* op(A)(r, q) = a[r·lda + q], or a[q·lda + r] */
        LLVMValueRef idx = trans_a ? add(&g, mul(&g, q, lda), k64(&g, r)) : add(&g, mul(&g, k64(&g, r), lda), q);
        LLVMValueRef av = splat(&g, load_aligned(&g, g.f32, at(&g, a, idx), 4), g.vf);
        for (int v = 0; v < NV; v++) {
            LLVMValueRef args[] = {av, bv[v], acc[r][v]};
            sum[r][v] = LLVMBuildCall2(g.b, g.fma_ty, g.fma, args, 3, "");
        }
    }
    LLVMValueRef q1 = add(&g, q, k64(&g, 1));
    hint_loop(&g, LLVMBuildCondBr(g.b, lt(&g, q1, qend), body, done));
    LLVMAddIncoming(q, &lp.iv, &pre, 1);
    LLVMAddIncoming(q, &q1, &body, 1);
    for (int r = 0; r < m; r++)
        for (int v = 0; v < NV; v++) {
            LLVMAddIncoming(acc[r][v], &zero, &pre, 1);
            LLVMAddIncoming(acc[r][v], &sum[r][v], &body, 1);
        }
    LLVMPositionBuilderAtEnd(g.b, done);
sums:;
    /* v = the block's sums, + what the earlier blocks left in X (as write_tile adds; x is
     * NULL when there is a single block, so no inbounds promise: the load's mask is off) */
    LLVMValueRef val[SMALL_M_MAX][NV];
    for (int r = 0; r < m; r++) {
        LLVMValueRef xrow = at_any(&g, at_any(&g, x, j), mul(&g, k64(&g, r), ldx));
        for (int v = 0; v < NV; v++) {
            LLVMValueRef mask = LLVMBuildSelect(g.b, first, none, colmask[v], "");
            LLVMValueRef old = masked_load(&g, at_any(&g, xrow, k64(&g, v * w)), mask);
            val[r][v] = LLVMBuildSelect(g.b, first, sum[r][v], LLVMBuildFAdd(g.b, sum[r][v], old, ""), "");
        }
    }
    LLVMBasicBlockRef bnext = block(&g, "j.next");
    if (e) {  /* the last block: the epilogue, into C */
        LLVMBasicBlockRef blast = block(&g, "last"), bmore = block(&g, "more");
        branch(&g, last, blast, bmore);
        LLVMValueRef null = LLVMConstPointerNull(g.ptr);
        epi_ptrs out = {at(&g, c, j), ldc, e->bias ? at(&g, param(&g, 11), j) : null,
                        e->pre_out ? at(&g, param(&g, 12), j) : null, param(&g, 13),
                        e->residual ? at(&g, param(&g, 14), j) : null, param(&g, 15), param(&g, 16)};
        gemm_write_epilogue(&g, e, val, &out, k64(&g, m), cols, true);
        LLVMBuildBr(g.b, bnext);
        LLVMPositionBuilderAtEnd(g.b, bmore);
    }
    for (int r = 0; r < m; r++) {
        LLVMValueRef xrow = at(&g, at(&g, x, j), mul(&g, k64(&g, r), ldx));
        for (int v = 0; v < NV; v++) masked_store(&g, val[r][v], at_any(&g, xrow, k64(&g, v * w)), colmask[v]);
    }
    LLVMBuildBr(g.b, bnext);
    LLVMPositionBuilderAtEnd(g.b, bnext);
    loop_end(&g, &lj);
    loop_end(&g, &lp);
    return function_end(&g);
}

/* The small kernel's 19 arguments for columns [j0, j1); ptrs = {a, b, c, scratch, bias,
 * p, r}, the partial sums (accumulate over several k blocks) at the start of scratch. */
static void small_args(gen *g, LLVMValueRef *args, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                       const LLVMValueRef *ptrs, LLVMValueRef j0, LLVMValueRef j1) {
    int64_t kc = s->trans_b ? s->k : blocks_for(g->t, s).kc; /* B transposed: one block (small_t_group) */
    LLVMValueRef x = e && e->accumulate && s->k > kc ? ptrs[3] : LLVMConstPointerNull(g->ptr);
    LLVMValueRef list[] = {ptrs[0], ptrs[1], ptrs[2], k64(g, s->n), k64(g, s->k), k64(g, s->lda), k64(g, s->ldb),
                           k64(g, s->ldc), k64(g, kc), x, k64(g, s->n), ptrs[4], ptrs[5],
                           k64(g, e && e->pre_out ? e->ldp : 0), ptrs[6], k64(g, e && e->residual ? e->ldr : 0),
                           LLVMConstReal(g->f64, e && gemm_has_scale(e) ? e->scale : 1.0), j0, j1};
    memcpy(args, list, sizeof list);
}

/*   void NAME.part(ptr ctx, i64 begin, i64 end)      ctx = {a, b, c, scratch, bias, p, r}
 * the small kernel on the columns of parts [begin, end) (gemm_split_for: along n). */
static LLVMValueRef small_part_function(gen g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                                        const char *gemm_name, LLVMValueRef small) {
    LLVMValueRef fn;
    if (!part_function_begin(&g, gemm_name, &fn)) return fn;
    gemm_split sp = gemm_split_for(g.t, s);
    assert(!sp.on_m);
    LLVMValueRef ctx = param(&g, 0), v[7];
    for (int i = 0; i < 7; i++)
        v[i] = load_aligned(&g, g.ptr, LLVMBuildInBoundsGEP2(g.b, g.ptr, ctx, (LLVMValueRef[]){k64(&g, i)}, 1, ""), 8);
    LLVMValueRef j0 = mul(&g, param(&g, 1), k64(&g, sp.lanes));
    LLVMValueRef j1 = smin(&g, mul(&g, param(&g, 2), k64(&g, sp.lanes)), k64(&g, s->n));
    LLVMValueRef args[19];
    small_args(&g, args, s, e, v, j0, j1);
    call(&g, small, args, 19);
    return function_end(&g);
}

/* The shape's function void NAME(a, b, c, scratch, [bias], [p], [r]) on the small-m path:
 * the small kernel over all columns, or over parts of them on the thread pool. */
LLVMValueRef gemm_small(gen g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, const char *name) {
    LLVMValueRef small = small_function(g, (int)s->m, s->trans_a, s->trans_b, e);  /* own builder */
    gemm_split sp = gemm_split_for(g.t, s);
    LLVMValueRef part = sp.parts > 1 ? small_part_function(g, s, e, name, small) : NULL;
    LLVMValueRef ptrs[7];
    gemm_function_begin(&g, name, e, ptrs);
    if (part) {
        LLVMTypeRef ctx_ty = LLVMArrayType2(g.ptr, 7);
        LLVMValueRef ctx = LLVMBuildAlloca(g.b, ctx_ty, "ctx");
        for (unsigned i = 0; i < 7; i++) {
            LLVMValueRef idx[] = {k64(&g, 0), k64(&g, i)};
            LLVMBuildStore(g.b, ptrs[i], LLVMBuildInBoundsGEP2(g.b, ctx_ty, ctx, idx, 2, ""));
        }
        gemm_parallel_for_call(&g, part, ctx, sp.parts);
    } else {
        LLVMValueRef args[19];
        small_args(&g, args, s, e, ptrs, k64(&g, 0), k64(&g, s->n));
        call(&g, small, args, 19);
    }
    return function_end(&g);
}
