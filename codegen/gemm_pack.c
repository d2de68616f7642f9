/* gemm_pack.c — the GEMM's packers: the slivers of op(A) and op(B) that the micro-kernel
 * reads (the layout: gemm.c's top comment, "Packing"). Functions shared by every GEMM of
 * a module, emitted once on first use. Depends on gemm_gen.h only. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gemm_gen.h"

/* ---- packing ----------------------------------------------------------------------- */

/* Both packers fill slivers of `width` lanes (MR or NR) and depth kc:
 *   dst[q·width + x] = lane x at depth q of the source, or 0 for x ≥ valid
 * (valid ≥ 1: the lanes left before m or n). When width is a multiple of W (B slivers)
 * dst is 64-byte aligned and so is every packed row. */

/* Rows ahead that the copying packer prefetches (one prefetch per line of the lanes it
 * copies, in the row GEMM_PACK_PREFETCH_ROWS on). The packer's loads wait on L3 or memory:
 * perf put 95 % of its samples on them (384×1152×2048 tn, whose B is 9.4 MB, packed block
 * by block). 2–4 rows ahead measured best (+3–6 % on that shape), 16 and more no gain. */
enum { GEMM_PACK_PREFETCH_ROWS = 3 };

/*   void kiln_gemm_pack_copy_wW_X(const float *src, float *dst, i64 sk, i64 valid, i64 kc, i64 nw)
 * lanes contiguous, depth q at src + q·sk: all the slivers of one block, lanes [0, nw)
 * (sliver s at dst + s·width·kc), row by row: depth q of every sliver, then q + 1. Each
 * source row is thus read as one contiguous run of nw floats, which the hardware
 * prefetchers follow, where sliver by sliver (until 2026-12-06: one call per sliver) read
 * 2 lines of each of kc rows ld apart and came back for the next 2. Whole slivers go
 * unmasked; the one overhanging m or n (at most one, the last) zero-fills past valid. */
/* Slivers summed at once by sum_slivers: independent chains of fadds to overlap. */
enum { GEMM_SUM_SLIVERS = 4 };

/* sums[s·width + x] += Σ_q dst[s][q][x] for the block just packed (full whole slivers, then
 * edge_lanes lanes of one more when has_edge), the depths of each lane added one by one
 * in order, q = 0, 1, …, kc−1, with plain fadds: a lane's sum is then the sum of its
 * column in row order, whatever the blocks (their k blocks come in order). The packed
 * block is still in L1/L2, and each sliver's sums stay in a register over its kc depths.
 * (Adding each row into sums as the copier packs it, a masked load and store per row and
 * sliver, made 1536×384×2048 tn 10 % slower at one thread: every row's load waited for
 * the previous row's masked store.) One vector per sliver: width ≤ W (an A sliver). */
static void sum_slivers(gen *g, LLVMValueRef dst, LLVMValueRef sums, int width, LLVMValueRef kc, LLVMValueRef full,
                        LLVMValueRef edge_lanes, LLVMValueRef has_edge) {
    assert(width <= g->t.w);
    LLVMValueRef kw = k64(g, width), sstep = mul(g, kw, kc);
    LLVMValueRef slivers = LLVMBuildSelect(g->b, has_edge, add(g, full, k64(g, 1)), full, "");
    loop ls = loop_begin(g, k64(g, 0), slivers, GEMM_SUM_SLIVERS, "sum.s");
    LLVMValueRef mask[GEMM_SUM_SLIVERS], src[GEMM_SUM_SLIVERS], out[GEMM_SUM_SLIVERS], acc[GEMM_SUM_SLIVERS];
    LLVMValueRef zero = k64(g, 0);
    for (int j = 0; j < GEMM_SUM_SLIVERS; j++) {  /* the lanes of sliver s + j: width, edge_lanes or none */
        LLVMValueRef s = add(g, ls.iv, k64(g, j));
        LLVMValueRef lanes = LLVMBuildSelect(g->b, lt(g, s, full), kw,
                                             LLVMBuildSelect(g->b, lt(g, s, slivers), edge_lanes, zero, ""), "");
        mask[j] = lanes_below(g, lanes);
        src[j] = at_any(g, dst, mul(g, s, sstep));
        out[j] = at_any(g, sums, mul(g, s, kw));
        acc[j] = masked_load(g, out[j], mask[j]);
    }
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
    loop lq = loop_begin(g, zero, kc, 1, "sum.q");
    LLVMBasicBlockRef body = LLVMGetInsertBlock(g->b);
    LLVMPositionBuilderBefore(g->b, LLVMGetNextInstruction(lq.iv));  /* the sums: phis of the loop head */
    LLVMValueRef phi[GEMM_SUM_SLIVERS];
    for (int j = 0; j < GEMM_SUM_SLIVERS; j++) {
        phi[j] = LLVMBuildPhi(g->b, g->vf, "sum");
        LLVMAddIncoming(phi[j], &acc[j], &pre, 1);
    }
    LLVMPositionBuilderAtEnd(g->b, body);
    for (int j = 0; j < GEMM_SUM_SLIVERS; j++)
        acc[j] = LLVMBuildFAdd(g->b, phi[j], masked_load(g, at_any(g, src[j], mul(g, lq.iv, kw)), mask[j]), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    loop_end(g, &lq);
    for (int j = 0; j < GEMM_SUM_SLIVERS; j++) {
        LLVMAddIncoming(phi[j], &acc[j], &latch, 1);
        masked_store(g, phi[j], out[j], mask[j]);  /* the head's value: after the last depth */
    }
    loop_end(g, &ls);
}

LLVMValueRef pack_copy_function(gen g, int width, bool sum) {
    char name[64];
    snprintf(name, sizeof name, "kiln_gemm_pack_copy_w%d_%d%s", g.t.w, width, sum ? "_colsum" : "");
    LLVMTypeRef params[] = {g.ptr, g.ptr, g.i64, g.i64, g.i64, g.i64, g.ptr};
    static const char *const names[] = {"src", "dst", "sk", "valid", "kc", "nw", "sums"};
    LLVMValueRef fn;
    if (!function_begin(&g, name, sum ? 7 : 6, params, names, &fn)) return fn;
    LLVMValueRef src = param(&g, 0), dst = param(&g, 1), sk = param(&g, 2), valid = param(&g, 3), kc = param(&g, 4);
    LLVMValueRef nw = param(&g, 5), sums = sum ? param(&g, 6) : NULL;
    const int w = g.t.w, chunks = (width + w - 1) / w;
    unsigned dst_align = width % w == 0 ? 4u * (unsigned)w : 4u;
    assert(chunks <= NR_MAX / 4);
    LLVMValueRef kw = k64(&g, width);
    LLVMValueRef slivers = LLVMBuildSDiv(g.b, add(&g, nw, k64(&g, width - 1)), kw, "");
    LLVMValueRef full = smin(&g, slivers, LLVMBuildSDiv(g.b, valid, kw, ""));
    LLVMValueRef edge_lanes = sub(&g, valid, mul(&g, full, kw));  /* < width when there is an edge sliver */
    LLVMValueRef has_edge = lt(&g, full, slivers);
    LLVMValueRef emask[NR_MAX / 4], cmask[NR_MAX / 4];
    for (int ch = 0; ch < chunks; ch++) {
        emask[ch] = lanes_below(&g, sub(&g, edge_lanes, k64(&g, ch * w)));
        cmask[ch] = width - ch * w >= w ? NULL : lanes_below(&g, k64(&g, width - ch * w));
    }
    LLVMValueRef sstep = mul(&g, kw, kc);  /* floats from one sliver to the next */
    loop lq = loop_begin(&g, k64(&g, 0), kc, 1, "q");
    LLVMValueRef row = at(&g, src, mul(&g, lq.iv, sk)), drow = at(&g, dst, mul(&g, lq.iv, kw));
    loop ls = loop_begin(&g, k64(&g, 0), full, 1, "s");
    LLVMValueRef sp = at(&g, row, mul(&g, ls.iv, kw)), dp = at(&g, drow, mul(&g, ls.iv, sstep));
    {   /* the same lanes GEMM_PACK_PREFETCH_ROWS rows on (16 floats a line; never faults) */
        LLVMValueRef pr = at_any(&g, sp, mul(&g, k64(&g, GEMM_PACK_PREFETCH_ROWS), sk));
        for (int off = 0; off < width; off += 16) prefetch_for_read(&g, at_any(&g, pr, k64(&g, off)));
        prefetch_for_read(&g, at_any(&g, pr, k64(&g, width - 1)));  /* the row may straddle one more */
    }
    for (int ch = 0; ch < chunks; ch++) {
        LLVMValueRef v = cmask[ch] ? masked_load(&g, at_any(&g, sp, k64(&g, ch * w)), cmask[ch])
                                   : load_aligned(&g, g.vf, at(&g, sp, k64(&g, ch * w)), 4);
        LLVMValueRef d = at(&g, dp, k64(&g, ch * w));
        if (cmask[ch]) masked_store(&g, v, d, cmask[ch]);
        else store_aligned(&g, v, d, dst_align);
    }
    loop_end(&g, &ls);
    LLVMBasicBlockRef bedge = block(&g, "edge"), bnext = block(&g, "next");
    branch(&g, has_edge, bedge, bnext);
    sp = at(&g, row, mul(&g, full, kw)), dp = at(&g, drow, mul(&g, full, sstep));
    for (int ch = 0; ch < chunks; ch++) {
        LLVMValueRef v = masked_load(&g, at_any(&g, sp, k64(&g, ch * w)), emask[ch]);
        LLVMValueRef d = at(&g, dp, k64(&g, ch * w));
        if (cmask[ch]) masked_store(&g, v, d, cmask[ch]);
        else store_aligned(&g, v, d, dst_align);
    }
    LLVMBuildBr(g.b, bnext);
    LLVMPositionBuilderAtEnd(g.b, bnext);
    loop_end(&g, &lq);
    if (sum) sum_slivers(&g, dst, sums, width, kc, full, edge_lanes, has_edge);
    return function_end(&g);
}

/* Transposes the W×W block r[0..W) in registers (cg_transpose_square). */
static void transpose(gen *g, LLVMValueRef *r) { cg_transpose_square(g->b, g->i32, g->t.w, r); }

/* Lanes [x0, x0 + lanes) of a transposed sliver (lanes ≤ W, all valid): W consecutive k
 * of each lane are loaded as vectors (rows past `lanes` are zeros), transposed in
 * registers and stored as W packed rows; the last kc mod W depths go one float at a time.
 * The lanes start at src + x0·sw + off[x]. */
static void transpose_block(gen *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef *off, LLVMValueRef sw,
                            LLVMValueRef x0, int lanes, int width, LLVMValueRef kc) {
    const int w = g->t.w;
    unsigned dst_align = width % w == 0 ? 4u * (unsigned)w : 4u;  /* rows stay aligned */
    LLVMValueRef first = at(g, src, mul(g, x0, sw)), dfirst = at(g, dst, x0);
    loop lq = loop_begin(g, k64(g, 0), sub(g, kc, k64(g, w - 1)), w, "q.vec");  /* q0 + W ≤ kc */
    LLVMValueRef col = at(g, first, lq.iv), drow = at(g, dfirst, mul(g, lq.iv, k64(g, width)));
    LLVMValueRef r[16];
    for (int x = 0; x < w; x++) r[x] = x < lanes ? load_aligned(g, g->vf, at(g, col, off[x]), 4) : LLVMConstNull(g->vf);
    transpose(g, r);
    for (int q = 0; q < w; q++) {
        LLVMValueRef dp = at(g, drow, k64(g, q * width));
        if (lanes == w) store_aligned(g, r[q], dp, dst_align);
        else masked_store(g, r[q], dp, lanes_below(g, k64(g, lanes)));
    }
    loop_end(g, &lq);
    LLVMValueRef tail = LLVMBuildAnd(g->b, kc, k64(g, -(int64_t)w), "");  /* kc rounded down to W */
    loop lt_ = loop_begin(g, tail, kc, 1, "q.tail");
    col = at(g, first, lt_.iv);
    drow = at(g, dfirst, mul(g, lt_.iv, k64(g, width)));
    for (int x = 0; x < lanes; x++)
        store_aligned(g, load_aligned(g, g->f32, at(g, col, off[x]), 4), at(g, drow, k64(g, x)), 4);
    loop_end(g, &lt_);
}

/*   void kiln_gemm_pack_transpose_wW_X(const float *src, float *dst, i64 sw, i64 valid, i64 kc)
 * lane x at src + x·sw, k contiguous. A whole sliver (valid ≥ width) goes by W-lane blocks
 * (transpose_block). A sliver overhanging m or n (the last one, at most once per block)
 * goes one float at a time: its lanes past valid read a clamped, valid row and store 0. */
LLVMValueRef pack_transpose_function(gen g, int width) {
    char name[64];
    snprintf(name, sizeof name, "kiln_gemm_pack_transpose_w%d_%d", g.t.w, width);
    LLVMTypeRef params[] = {g.ptr, g.ptr, g.i64, g.i64, g.i64};
    static const char *const names[] = {"src", "dst", "sw", "valid", "kc"};
    LLVMValueRef fn;
    if (!function_begin(&g, name, 5, params, names, &fn)) return fn;
    LLVMValueRef src = param(&g, 0), dst = param(&g, 1), sw = param(&g, 2), valid = param(&g, 3), kc = param(&g, 4);
    const int w = g.t.w;
    LLVMBasicBlockRef whole = block(&g, "whole"), edge = block(&g, "edge"), done = block(&g, "done");
    branch(&g, LLVMBuildICmp(g.b, LLVMIntSGE, valid, k64(&g, width), ""), whole, edge);

    LLVMValueRef off[16];  /* lane x of a block starts at the block's pointer + x·sw */
    for (int x = 0; x < w; x++) off[x] = mul(&g, k64(&g, x), sw);
    int full = width / w * w;  /* lanes in whole W-lane blocks: one loop, one copy of the code */
    if (full > 0) {
        loop lb = loop_begin(&g, k64(&g, 0), k64(&g, full), w, "block");
        transpose_block(&g, src, dst, off, sw, lb.iv, w, width, kc);
        loop_end(&g, &lb);
    }
    if (full < width) transpose_block(&g, src, dst, off, sw, k64(&g, full), width - full, width, kc);
    LLVMBuildBr(g.b, done);

    LLVMPositionBuilderAtEnd(g.b, edge);
    loop lx = loop_begin(&g, k64(&g, 0), k64(&g, width), 1, "x");
    LLVMValueRef in = lt(&g, lx.iv, valid);
    LLVMValueRef lane = at(&g, src, mul(&g, smin(&g, lx.iv, sub(&g, valid, k64(&g, 1))), sw));
    LLVMValueRef dcol = at(&g, dst, lx.iv);
    loop lq2 = loop_begin(&g, k64(&g, 0), kc, 1, "q");
    LLVMValueRef v = load_aligned(&g, g.f32, at(&g, lane, lq2.iv), 4);
    v = LLVMBuildSelect(g.b, in, v, LLVMConstNull(g.f32), "");
    store_aligned(&g, v, at(&g, dcol, mul(&g, lq2.iv, k64(&g, width))), 4);
    loop_end(&g, &lq2);
    loop_end(&g, &lx);
    LLVMBuildBr(g.b, done);
    LLVMPositionBuilderAtEnd(g.b, done);
    return function_end(&g);
}

/* Packs the slivers of one block: lanes [w0, w0 + nw), depths [p, p + kc), into dst. */
void emit_pack(gen *g, const operand *o, LLVMValueRef w0, LLVMValueRef nw, LLVMValueRef p, LLVMValueRef kc,
                      LLVMValueRef dst) {
    if (o->lanes_contiguous) {  /* one call for the block, row by row */
        LLVMValueRef args[] = {at(g, o->src, add(g, w0, mul(g, p, o->ld))), dst, o->ld, sub(g, o->lim, w0), kc, nw,
                               NULL};
        if (!o->sums) {
            call(g, o->packer, args, 6);
            return;
        }
        /* the sums, unless this call leaves them to another (a null pointer) */
        LLVMBasicBlockRef bsum = block(g, "pack.sum"), bplain = block(g, "pack.plain"), bdone = block(g, "packed.sum");
        branch(g, LLVMBuildIsNull(g->b, o->sums, ""), bplain, bsum);
        LLVMPositionBuilderAtEnd(g->b, bsum);
        args[6] = at_any(g, o->sums, w0);
        call(g, o->sum_packer, args, 7);
        LLVMBuildBr(g->b, bdone);
        LLVMPositionBuilderAtEnd(g->b, bplain);
        call(g, o->packer, args, 6);
        LLVMBuildBr(g->b, bdone);
        LLVMPositionBuilderAtEnd(g->b, bdone);
        return;
    }
    assert(!o->sums);  /* only a copier sums */
    loop ls = loop_begin(g, k64(g, 0), nw, o->width, "pack");  /* the transposer: one call per sliver */
    LLVMValueRef lane0 = add(g, w0, ls.iv);
    LLVMValueRef args[] = {
        at(g, o->src, add(g, mul(g, lane0, o->ld), p)),  /* lane 0 at depth p */
        at(g, dst, mul(g, ls.iv, kc)),                   /* sliver s starts at s·width·kc */
        o->ld,                                           /* the transposer's sw */
        sub(g, o->lim, lane0),
        kc,
    };
    call(g, o->packer, args, 5);
    loop_end(g, &ls);
}
