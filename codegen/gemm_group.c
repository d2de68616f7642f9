/* gemm_group.c — sibling GEMM products sharing A (kiln_cg_gemm_group).
 *
 * `count` products of one shape and epilogue that read the same op(A) (a QKV kernel:
 * x·Wq, x·Wk, x·Wv, each + its bias) run as one job of one hand-off: the column tiles of
 * all the products side by side (product q's after product q−1's, each product padded to
 * whole tiles as alone) cut into one part per thread, as one product of count·n columns
 * would be (gemm_split_for); each part packs A once into its own slot and runs the loop
 * nest on its columns of each product it covers, reading that packed A ("_sa"). Until
 * 2026-12-06 the products ran one after another: three hand-offs, and A packed once per
 * product. Each element is still summed by one tile in the same k blocks in the same
 * order, so the bits are those of the products alone, for any thread count. Only for A
 * of one block (m ≤ mc, k ≤ kc): the part's packed A is then one block too.
 *
 * The loop nest, blocking and threads are gemm.c's (see its comment); this file only lays
 * the products' columns side by side and hands them to that nest.
 */
#include <stdio.h>
#include <string.h>

#include "gemm_gen.h"      /* the emitter state, the loop nest and the helpers of gemm.c */
#include "kiln/runtime.h" /* KILN_MAX_THREADS */

enum { GEMM_GROUP_MAX = 8 };  /* products in one group, at most */

/* The group's layout: tiles per product (along n), all tiles, scratch slots (the most
 * parts it is cut into). */
typedef struct group_split {
    int64_t tiles_per, tiles, parts;
} group_split;

static group_split group_split_for(gemm_tile t, const kiln_gemm_shape *s, int count) {
    int64_t per_product = (s->n + t.nr - 1) / t.nr, tiles = per_product * count;
    return (group_split){per_product, tiles, tiles < KILN_MAX_THREADS ? tiles : KILN_MAX_THREADS};
}

bool kiln_gemm_group_ok(const kiln_target *target, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                        int count) {
    gemm_tile t = tile_for(target);
    if (gemm_epi_trivial(e)) e = NULL;
    if (count < 2 || count > GEMM_GROUP_MAX || s->m <= 0 || s->n <= 0 || s->k <= 0 || gemm_use_small(t, s))
        return false;
    if (e && e->accumulate) return false;  /* C holds the values to add to: the products alone */
    gemm_blocks bl = blocks_for(t, s);
    return bl.mc >= s->m && bl.kc >= s->k && (double)s->m * (double)s->n * (double)s->k * count >= GEMM_PARALLEL_MIN;
}

int64_t kiln_gemm_group_scratch_floats(const kiln_target *target, const kiln_gemm_shape *s,
                                       const kiln_gemm_epilogue *e, int count) {
    if (!kiln_gemm_group_ok(target, s, e, count)) return 0;
    gemm_tile t = tile_for(target);
    return group_split_for(t, s, count).parts * slot_floats(blocks_for(t, s));
}

/*   void NAME.part(ptr ctx, i64 begin, i64 end)      ctx = {a, ops, -, scratch}
 * parts [begin, end) of one per thread (at most the slots): A packed into slot `begin`,
 * then the tiles the parts cover (even_first_tile over all the products' column tiles),
 * product by product, each piece one call of the "_sa" loop nest on its columns reading
 * that packed A, packing its B into the rest of the slot. ops holds count × {b, c, bias,
 * p, r}. */
static LLVMValueRef group_part_function(gen g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                                        const char *gemm_name, LLVMValueRef loops, int count) {
    LLVMValueRef fn;
    if (!part_function_begin(&g, gemm_name, &fn)) return fn;
    gemm_blocks bl = blocks_for(g.t, s);
    group_split gs = group_split_for(g.t, s, count);
    LLVMValueRef ctx = param(&g, 0), begin = param(&g, 1), end = param(&g, 2), v[4];
    for (int i = 0; i < 4; i++)
        v[i] = load_aligned(&g, g.ptr, LLVMBuildInBoundsGEP2(g.b, g.ptr, ctx, (LLVMValueRef[]){k64(&g, i)}, 1, ""), 8);
    LLVMValueRef threads = gemm_part_threads(&g, (gemm_split){false, gs.parts, 0});
    LLVMValueRef t0 = even_first_tile(&g, begin, threads, gs.tiles), t1 = even_first_tile(&g, end, threads, gs.tiles);
    LLVMBasicBlockRef work = block(&g, "work"), none = block(&g, "none");
    branch(&g, lt(&g, t0, t1), work, none);
    /* A, one block, into the slot: as the loop nest would pack block (0, 0) */
    LLVMValueRef ap = at(&g, v[3], mul(&g, begin, k64(&g, slot_floats(bl))));
    LLVMValueRef bp = at(&g, ap, k64(&g, packed_a_floats(bl)));
    operand pa = {.lanes_contiguous = s->trans_a, .width = g.t.mr, .src = v[0], .ld = k64(&g, s->lda),
                  .lim = k64(&g, s->m)};
    pa.packer = pa.lanes_contiguous ? pack_copy_function(g, pa.width, false) : pack_transpose_function(g, pa.width);
    emit_pack(&g, &pa, k64(&g, 0), k64(&g, s->m), k64(&g, 0), k64(&g, s->k), ap);
    LLVMValueRef per = k64(&g, gs.tiles_per), zero = k64(&g, 0), one = k64(&g, 1), nr = k64(&g, g.t.nr);
    loop lq = loop_begin(&g, zero, k64(&g, count), 1, "q");
    LLVMValueRef q0 = mul(&g, lq.iv, per);  /* product q's first tile */
    LLVMValueRef lo = LLVMBuildSelect(g.b, lt(&g, t0, q0), q0, t0, "");
    LLVMValueRef hi = smin(&g, t1, add(&g, q0, per));
    LLVMBasicBlockRef piece = block(&g, "piece"), next = block(&g, "next");
    branch(&g, lt(&g, lo, hi), piece, next);
    LLVMValueRef op[5];
    for (int i = 0; i < 5; i++) {
        LLVMValueRef idx = add(&g, mul(&g, lq.iv, k64(&g, 5)), k64(&g, i));
        op[i] = load_aligned(&g, g.ptr, LLVMBuildInBoundsGEP2(g.b, g.ptr, v[1], &idx, 1, ""), 8);
    }
    LLVMValueRef first = mul(&g, sub(&g, lo, q0), nr);  /* the piece's first column */
    LLVMValueRef lanes = sub(&g, smin(&g, mul(&g, sub(&g, hi, q0), nr), k64(&g, s->n)), first);
    LLVMValueRef b = at(&g, op[0], mul(&g, first, k64(&g, s->trans_b ? s->ldb : 1)));
    LLVMValueRef c = at(&g, op[1], first);
    LLVMValueRef args[23] = {v[0], b, c, bp, k64(&g, s->m), lanes, k64(&g, s->k), k64(&g, s->lda),
                             k64(&g, s->ldb), k64(&g, s->ldc), k64(&g, bl.mc), k64(&g, bl.kc), k64(&g, bl.nc)};
    unsigned n_args = e ? 21 : 13;
    if (e) {  /* the bias row, P and R move with the columns (no partial sums: kiln_gemm_group_ok) */
        epi_args ea = gemm_shape_epi_args(&g, s, e, v[3], op[2], op[3], op[4]);
        ea.p = at_ij(&g, ea.p, zero, first, ea.ldp);
        ea.r = at_ij(&g, ea.r, zero, first, ea.ldr);
        ea.bias = at_ij(&g, ea.bias, zero, first, one);
        epi_args_list(&ea, &args[13]);
    }
    args[n_args++] = ap;                                /* the packed A, read by "_sa" */
    args[n_args++] = k64(&g, round_up(s->m, g.t.mr));  /* its lanes (one k block: unused) */
    call(&g, loops, args, n_args);
    LLVMBuildBr(g.b, next);
    LLVMPositionBuilderAtEnd(g.b, next);
    loop_end(&g, &lq);
    LLVMBuildBr(g.b, none);
    LLVMPositionBuilderAtEnd(g.b, none);
    return function_end(&g);
}

LLVMValueRef kiln_cg_gemm_group(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, int count) {
    if (gemm_epi_trivial(e)) e = NULL;
    assert(kiln_gemm_group_ok(cg->target, s, e, count));
    char prefix[32], name[256];
    snprintf(prefix, sizeof prefix, "kiln_gemm_x%d", count);
    gemm_name(s, e, prefix, name, sizeof name);
    LLVMValueRef existing = LLVMGetNamedFunction(cg->mod, name);
    if (existing) return existing;
    gen g = gemm_gen_init(cg);
    g.edge_rows = gemm_edge_rows(g.t, s);
    LLVMValueRef loops = gemm_loops_function(g, s->trans_a, s->trans_b, e, true);  /* own builder */
    LLVMValueRef part = group_part_function(g, s, e, name, loops, count);
    group_split gs = group_split_for(g.t, s, count);
    /* void NAME(const float *a, float *scratch, ptr ops) */
    LLVMTypeRef params[] = {g.ptr, g.ptr, g.ptr};
    const char *names[] = {"a", "scratch", "ops"};
    function_begin(&g, name, 3, params, names, &existing);
    add_attr(&g, 1, "readonly");
    add_attr(&g, 3, "readonly");
    /* kiln_parallel_for(part, &{a, ops, -, scratch}, one part per thread): one hand-off;
     * on one thread one part, inline, A packed once for all the products */
    LLVMTypeRef ctx_ty = LLVMArrayType2(g.ptr, 4);
    LLVMValueRef ctx = LLVMBuildAlloca(g.b, ctx_ty, "ctx");
    LLVMValueRef vals[4] = {param(&g, 0), param(&g, 2), LLVMConstPointerNull(g.ptr), param(&g, 1)};
    for (unsigned i = 0; i < 4; i++) {
        LLVMValueRef idx[] = {k64(&g, 0), k64(&g, i)};
        LLVMBuildStore(g.b, vals[i], LLVMBuildInBoundsGEP2(g.b, ctx_ty, ctx, idx, 2, ""));
    }
    LLVMTypeRef pf_params[] = {g.ptr, g.ptr, g.i64};
    LLVMTypeRef pf_ty = LLVMFunctionType(LLVMVoidTypeInContext(g.ctx), pf_params, 3, 0);
    LLVMValueRef pf = LLVMGetNamedFunction(g.mod, "kiln_parallel_for");
    if (!pf) pf = LLVMAddFunction(g.mod, "kiln_parallel_for", pf_ty);
    LLVMValueRef args[] = {part, ctx, gemm_part_threads(&g, (gemm_split){false, gs.parts, 0})};
    LLVMBuildCall2(g.b, pf_ty, pf, args, 3, "");
    return function_end(&g);
}
