/* gemm_tile.c — the GEMM's micro-kernels: one MR×NR tile of C from an A sliver and a B
 * sliver (gemm.c's top comment, "Micro-kernel"), plain (tile_function) and with a fused
 * epilogue (epi_tile_function), each optionally packing B on the way (_pb) or reading
 * op(A) from A's rows (_ab). Functions shared by every GEMM of a module, emitted once on
 * first use. Depends on gemm_gen.h only. */
#include <stdio.h>
#include <string.h>

#include "gemm_gen.h"

/* Writes the accumulators to the tile at c: stores them, or adds them to what is there
 * (later k blocks). `masked` for a tile overhanging m or n: a column mask per vector,
 * rows past `rows` disabled (their address clamped to a valid row). */
static void write_tile(gen *g, LLVMValueRef acc[][NV], LLVMValueRef c, LLVMValueRef ldc, LLVMValueRef rows,
                       LLVMValueRef cols, bool masked, bool accumulate) {
    const int w = g->t.w;
    LLVMValueRef colmask[NV] = {0}, none = LLVMConstNull(g->vmask);
    if (masked)
        for (int v = 0; v < NV; v++) colmask[v] = lanes_below(g, sub(g, cols, k64(g, v * w)));
    for (int r = 0; r < g->t.mr; r++) {
        LLVMValueRef on = masked ? lt(g, k64(g, r), rows) : NULL;
        LLVMValueRef row = masked ? smin(g, k64(g, r), sub(g, rows, k64(g, 1))) : k64(g, r);
        LLVMValueRef crow = at(g, c, mul(g, row, ldc));
        for (int v = 0; v < NV; v++) {
            LLVMValueRef val = acc[r][v];
            if (masked) {
                LLVMValueRef p = at_any(g, crow, k64(g, v * w));
                LLVMValueRef mask = LLVMBuildSelect(g->b, on, colmask[v], none, "");
                if (accumulate) val = LLVMBuildFAdd(g->b, val, masked_load(g, p, mask), "");
                masked_store(g, val, p, mask);
            } else {
                LLVMValueRef p = at(g, crow, k64(g, v * w));
                if (accumulate) val = LLVMBuildFAdd(g->b, val, load_aligned(g, g->vf, p, 4), "");
                store_aligned(g, val, p, 4);
            }
        }
    }
}

/* Prefetches, for writing, the MR rows of NR floats at base, rows ld apart. A prefetch
 * never faults, so rows and columns past the tile need no care. */
static void prefetch_tile(gen *g, LLVMValueRef base, LLVMValueRef ld) {
    for (int r = 0; r < g->t.mr; r++) {
        LLVMValueRef row = at_any(g, base, mul(g, k64(g, r), ld));
        for (int off = 0; off < g->t.nr; off += 16) prefetch_for_write(g, at_any(g, row, k64(g, off)));
        prefetch_for_write(g, at_any(g, row, k64(g, g->t.nr - 1)));  /* a row may straddle one more line */
    }
}

/* B packed by the micro-kernel (tile_function): the k loop reads row q of the B sliver
 * from op(B) itself, src + q·ld (mask: the lanes before n; the others load as 0), and
 * also stores it as row q of the packed sliver bp, for the tiles after this one. */
typedef struct b_source {
    LLVMValueRef src, ld, mask[NV];
} b_source;

/* Steps ahead that such a tile prefetches its source row (3 lines: 32 floats may straddle
 * one more). The rows come from L3 or memory, ld apart; 32 steps, ~400 cycles, measured
 * best (4: no gain over packing separately, 64: the same as 32). */
enum { GEMM_TILE_PREFETCH_ROWS = 32 };

/* A read by the micro-kernel from A itself (op(A) not transposed, loops_nest's a_rows):
 * element (r, q) of the tile's A is row[r][q], the MR row pointers computed once before
 * the k loop (rows past m clamped to the last one: a_rows_for). When `next` (a run-time
 * i64, floats from a row to the same row of the next sliver, MR·lda) is not 0, the loop
 * also prefetches, every 16 steps, the line at depth q of each of the next sliver's rows,
 * which otherwise come from L3 in the first tile that reads them (nothing packed them);
 * the loop nest asks it of each sliver's first tile of a B block (jr = 0), 0 elsewhere.
 * (Without it the A packing saved was lost again: 1 thread −1 to +1 %; prefetching a
 * tile's own rows ahead, or the next sliver from every tile, no better or −2 %. Measured
 * 2026-12-06 17:00–17:25 against this form, no better: the next sliver's rows spread over
 * the tiles of the sweep, or from its last tile, 64 floats deeper, into L2, with all of n
 * as one B block; the next A block into L2 from every tile, −4 to −5 %. A loop of
 * prefetches inside the k loop cost up to 10 %. See docs/performance.md.) */
typedef struct a_source {
    LLVMValueRef row[MR_MAX];
    LLVMValueRef next;
} a_source;

/* The k loop of a tile from depth q0 to kc: sum[r][v] = init[r][v] (zeros when NULL) +
 * Σ_q0≤q<kc ap[q·MR + r]·bp[q·NR + v·W + lane], one fma per step in q order, as
 * <W x float> phis (see the file comment); leaves the builder after the loop. The loop
 * runs at least once (q0 < kc) unless `may_be_empty`, which adds an exit for q0 ≥ kc.
 * With bs the B rows come from the source and are packed on the way (b_source); with as
 * the A elements come from A's rows (a_source: as->row[r][q] for ap[q·MR + r]). */

static void emit_k_loop(gen *g, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef q0, LLVMValueRef kc,
                        LLVMValueRef init[][NV], bool may_be_empty, LLVMValueRef sum[][NV], const b_source *bs,
                        const a_source *as) {
    const int w = g->t.w, mr = g->t.mr, nr = g->t.nr, stride = g->sliver_mr ? g->sliver_mr : mr;
    LLVMValueRef acc[MR_MAX][NV], next[MR_MAX][NV], zero = LLVMConstNull(g->vf), start[MR_MAX][NV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV; v++) start[r][v] = init ? init[r][v] : zero;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b), body = block(g, "k"), done = block(g, "k.done");
    if (may_be_empty) LLVMBuildCondBr(g->b, lt(g, q0, kc), body, done);
    else LLVMBuildBr(g->b, body);
    LLVMPositionBuilderAtEnd(g->b, body);
    LLVMValueRef q = LLVMBuildPhi(g->b, g->i64, "q");
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = LLVMBuildPhi(g->b, g->vf, "acc");

    /* Step q: row q of the B sliver (2 aligned vectors), column q of the A sliver. */
    LLVMValueRef brow = at(g, bp, mul(g, q, k64(g, nr))), acol = as ? NULL : at(g, ap, mul(g, q, k64(g, stride)));
    LLVMValueRef bv[NV];
    if (bs) {
        LLVMValueRef srow = at_any(g, bs->src, mul(g, q, bs->ld));
        {   /* the row GEMM_TILE_PREFETCH_ROWS steps on: it comes from L3 or memory */
            LLVMValueRef pr = at_any(g, srow, mul(g, k64(g, GEMM_TILE_PREFETCH_ROWS), bs->ld));
            prefetch_for_read(g, pr);
            prefetch_for_read(g, at_any(g, pr, k64(g, 16)));
            prefetch_for_read(g, at_any(g, pr, k64(g, nr - 1)));
        }
        for (int v = 0; v < NV; v++) {
            bv[v] = masked_load(g, at_any(g, srow, k64(g, v * w)), bs->mask[v]);
            store_aligned(g, bv[v], at(g, brow, k64(g, v * w)), 4u * (unsigned)w);
        }
    } else {
        for (int v = 0; v < NV; v++) bv[v] = load_aligned(g, g->vf, at(g, brow, k64(g, v * w)), 4u * (unsigned)w);
    }
    if (as) {  /* every 16 steps (a line of each row), the next sliver's rows when asked */
        LLVMBasicBlockRef bpf = block(g, "a.prefetch"), bgo = block(g, "a.go");
        LLVMValueRef due = LLVMBuildICmp(g->b, LLVMIntEQ, LLVMBuildAnd(g->b, q, k64(g, 15), ""), k64(g, 0), "");
        branch(g, LLVMBuildAnd(g->b, due, LLVMBuildICmp(g->b, LLVMIntNE, as->next, k64(g, 0), ""), ""), bpf, bgo);
        for (int r = 0; r < mr; r++) prefetch_for_read(g, at_any(g, as->row[r], add(g, q, as->next)));
        LLVMBuildBr(g->b, bgo);
        LLVMPositionBuilderAtEnd(g->b, bgo);
    }
    for (int r = 0; r < mr; r++) {
        LLVMValueRef ap_rq = as ? at(g, as->row[r], q) : at(g, acol, k64(g, r));
        LLVMValueRef av = splat(g, load_aligned(g, g->f32, ap_rq, 4), g->vf);
        for (int v = 0; v < NV; v++) {
            LLVMValueRef args[] = {av, bv[v], acc[r][v]};
            next[r][v] = LLVMBuildCall2(g->b, g->fma_ty, g->fma, args, 3, "");
        }
    }
    LLVMValueRef q1 = add(g, q, k64(g, 1));
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    hint_loop(g, LLVMBuildCondBr(g->b, lt(g, q1, kc), body, done));

    LLVMAddIncoming(q, &q0, &pre, 1);
    LLVMAddIncoming(q, &q1, &latch, 1);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV; v++) {
            LLVMAddIncoming(acc[r][v], &start[r][v], &pre, 1);
            LLVMAddIncoming(acc[r][v], &next[r][v], &latch, 1);
        }
    LLVMPositionBuilderAtEnd(g->b, done);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV; v++) {
            if (!may_be_empty) {
                sum[r][v] = next[r][v];
                continue;
            }
            sum[r][v] = LLVMBuildPhi(g->b, g->vf, "sum");
            LLVMAddIncoming(sum[r][v], &start[r][v], &pre, 1);
            LLVMAddIncoming(sum[r][v], &next[r][v], &latch, 1);
        }
}

/* The last GEMM_PREFETCH_STEPS steps of a tile's k loop run after it prefetches (again)
 * what the tile writes: the prefetch before the loop brings C from memory, but the B
 * sliver streaming through L1 during the loop (kc·NR·4 = 48 KiB, all of L1) evicts it
 * again, and the stores of the tile then waited for their lines (~20 % of the tile's
 * samples in a perf profile of 2048×1536×384). 32 steps are ~400 cycles: enough for L2.
 * (Measured again 2026-12-06 13:00 with the tiles as they are now: 8–192 steps, no
 * prefetch before the loop, or none at all, all within ±1 % on 2048³ and 2048×1536×384;
 * see docs/performance.md. Kept: it costs nothing measurable either.) */
enum { GEMM_PREFETCH_STEPS = 32 };

/* The k loop in two parts around `late()`'s prefetches, the same fmas in the same order;
 * packing B on the way when bs (emit_k_loop). */
static void emit_k_loop_split(gen *g, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef kc, bool may_be_empty,
                              void (*late)(gen *g, const void *ctx), const void *ctx, LLVMValueRef sum[][NV],
                              const b_source *bs, const a_source *as) {
    if (g->sliver_mr) { /* a short tile (edge_gen), once per sweep: one loop is less to compile */
        emit_k_loop(g, ap, bp, k64(g, 0), kc, NULL, may_be_empty, sum, bs, as);
        return;
    }
    LLVMValueRef mid = sub(g, kc, k64(g, GEMM_PREFETCH_STEPS)), zero = k64(g, 0), part[MR_MAX][NV];
    mid = LLVMBuildSelect(g->b, lt(g, mid, zero), zero, mid, "");
    emit_k_loop(g, ap, bp, zero, mid, NULL, true, part, bs, as);
    late(g, ctx);
    emit_k_loop(g, ap, bp, mid, kc, part, may_be_empty, sum, bs, as);
}

/* The row pointers of a tile's A read from A itself (a_source): row r at a + r·lda, the
 * rows at or past `rows` (a last sliver overhanging m) clamped to row rows − 1, whose
 * sums the masked write drops; so nothing past m is read. (Whole tiles with unclamped
 * pointers, a second copy of the loops, measured the same: the loop's few extra moves
 * for 12 pointers in 15 registers cost nothing measurable.) */
static a_source a_rows_for(gen *g, LLVMValueRef a, LLVMValueRef lda, LLVMValueRef next, LLVMValueRef rows) {
    a_source as = {{0}, next};
    LLVMValueRef last = sub(g, rows, k64(g, 1));
    for (int r = 0; r < g->t.mr; r++) as.row[r] = at(g, a, mul(g, smin(g, k64(g, r), last), lda));
    return as;
}

/* The four ways to write sums to a tile at c: (whole tile | masked) × (store | add, as
 * `add` says). Leaves the builder at the end of them all. */
static void write_tile_4(gen *g, LLVMValueRef sum[][NV], LLVMValueRef c, LLVMValueRef ldc, LLVMValueRef rows,
                         LLVMValueRef cols, LLVMValueRef add) {
    LLVMValueRef whole = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, rows, k64(g, g->t.mr), ""),
                                      LLVMBuildICmp(g->b, LLVMIntSGE, cols, k64(g, g->t.nr), ""), "");
    if (g->sliver_mr) whole = LLVMConstInt(g->i1, 0, 0); /* a short tile (edge_gen): masked writes only, less to compile */
    LLVMBasicBlockRef arm[2] = {block(g, "whole"), block(g, "edge")}, end = block(g, "end");
    LLVMBuildCondBr(g->b, whole, arm[0], arm[1]);
    for (int masked = 0; masked < 2; masked++) {
        LLVMBasicBlockRef badd = block(g, "add"), bset = block(g, "set");
        LLVMPositionBuilderAtEnd(g->b, arm[masked]);
        branch(g, add, badd, bset);
        write_tile(g, sum, c, ldc, rows, cols, masked, true);
        LLVMBuildBr(g->b, end);
        LLVMPositionBuilderAtEnd(g->b, bset);
        write_tile(g, sum, c, ldc, rows, cols, masked, false);
        LLVMBuildBr(g->b, end);
    }
    LLVMPositionBuilderAtEnd(g->b, end);
}

/* late prefetch of the plain tile: ctx = {c, ldc} */
static void prefetch_late(gen *g, const void *ctx) {
    const LLVMValueRef *c = ctx;
    prefetch_tile(g, c[0], c[1]);
}

/*   void kiln_gemm_tile_wW_MRxNR(const float *ap, const float *bp, float *c, i64 ldc,
 *                                i64 kc, i64 rows, i64 cols, i1 accumulate)
 * C[r][x] (=|+=) Σ_q<kc ap[q·MR + r]·bp[q·NR + x] for r < min(rows, MR), x < min(cols, NR),
 * C rows ldc apart; kc ≥ 1. ap is an A sliver, bp a (64-byte aligned) B sliver.
 *   void kiln_gemm_tile_wW_MRxNR_pb(…, i1 accumulate, const float *bsrc, i64 ldb)  (pack_b)
 * the same sums with the B sliver read from op(B) at bsrc, rows ldb apart, and written
 * to bp as the packer would have (zeros past cols): the loop nest calls it for the first
 * A sliver of a block, which thus packs B while it computes (see "Packing").
 *   void kiln_gemm_tile_wW_MRxNR_ab(const float *a, …, i1 accumulate, i64 lda, i64 anext[, bsrc, ldb])
 * (a_rows) the same sums with op(A)(r, q) read from A itself, a[r·lda + q] (a at the
 * tile's first row and depth; rows ≥ `rows` read row rows − 1: a_rows_for), nothing
 * packed; anext ≠ 0: also prefetch the rows anext floats on (a_source).
 *   void kiln_gemm_tile_wW_RofMRxNR…(…)  (edge_gen: g.t.mr = R, g.sliver_mr = MR)
 * any of these for the first R (4 or 8) rows of an MR-row sliver (rows ≤ R): the loop
 * nest calls it for the short last sliver of some shapes (gemm_edge_rows). */
LLVMValueRef tile_function(gen g, bool pack_b, bool a_rows) {
    const int w = g.t.w, mr = g.t.mr, nr = g.t.nr;
    char name[64], of[16] = "";
    if (g.sliver_mr) snprintf(of, sizeof of, "of%d", g.sliver_mr);
    snprintf(name, sizeof name, "kiln_gemm_tile_w%d_%d%sx%d%s%s", w, mr, of, nr, a_rows ? "_ab" : "",
             pack_b ? "_pb" : "");
    LLVMTypeRef params[12] = {g.ptr, g.ptr, g.ptr, g.i64, g.i64, g.i64, g.i64, g.i1};
    const char *names[12] = {"ap", "bp", "c", "ldc", "kc", "rows", "cols", "accumulate"};
    unsigned n_params = 8, at_lda = 0, at_bsrc = 0;
    if (a_rows) {
        at_lda = n_params, params[n_params] = g.i64, names[n_params++] = "lda";
        params[n_params] = g.i64, names[n_params++] = "anext";
    }
    if (pack_b) {
        at_bsrc = n_params;
        params[n_params] = g.ptr, names[n_params++] = "bsrc";
        params[n_params] = g.i64, names[n_params++] = "ldb";
    }
    LLVMValueRef fn;
    if (!function_begin(&g, name, n_params, params, names, &fn)) return fn;
    LLVMValueRef ap = param(&g, 0), bp = param(&g, 1), c = param(&g, 2), ldc = param(&g, 3), kc = param(&g, 4);
    LLVMValueRef rows = param(&g, 5), cols = param(&g, 6), accumulate = param(&g, 7);
    b_source bs = {0};
    if (pack_b) {
        bs.src = param(&g, at_bsrc), bs.ld = param(&g, at_bsrc + 1);
        for (int v = 0; v < NV; v++) bs.mask[v] = lanes_below(&g, sub(&g, cols, k64(&g, v * w)));
    }
    a_source as = a_rows ? a_rows_for(&g, ap, param(&g, at_lda), param(&g, at_lda + 1), rows) : (a_source){{0}, 0};

    /* Start fetching the C tile now: its lines are needed only after the k loop, and
     * unless C is small they come from L3. */
    prefetch_tile(&g, c, ldc);
    LLVMValueRef sum[MR_MAX][NV], late[2] = {c, ldc};
    emit_k_loop_split(&g, ap, bp, kc, false, prefetch_late, late, sum, pack_b ? &bs : NULL, a_rows ? &as : NULL);
    write_tile_4(&g, sum, c, ldc, rows, cols, accumulate);
    return function_end(&g);
}

/* The epilogue tile's prefetches: X, and on the last block C (when accumulating), P, R. */
typedef struct epi_prefetch_ctx {
    const kiln_gemm_epilogue *e;
    const epi_ptrs *out;
    LLVMValueRef x, ldx, last;
} epi_prefetch_ctx;

static void epi_prefetch(gen *g, const void *ctx) {
    const epi_prefetch_ctx *pf = ctx;
    const kiln_gemm_epilogue *e = pf->e;
    prefetch_tile(g, pf->x, pf->ldx);
    if (!(e->accumulate || e->pre_out || e->residual)) return;
    LLVMBasicBlockRef yes = block(g, "prefetch"), go = block(g, "go");
    branch(g, pf->last, yes, go);
    if (e->accumulate) prefetch_tile(g, pf->out->c, pf->out->ldc);
    if (e->pre_out) prefetch_tile(g, pf->out->p, pf->out->ldp);
    if (e->residual) prefetch_tile(g, pf->out->r, pf->out->ldr);
    LLVMBuildBr(g->b, go);
    LLVMPositionBuilderAtEnd(g->b, go);
}

/*   void kiln_gemm_tile_wW_MRxNR_eCODE(const float *ap, const float *bp, float *c, i64 ldc,
 *        i64 kc, i64 rows, i64 cols, i1 first, i1 last, float *x, i64 ldx,
 *        const float *bias, float *p, i64 ldp, const float *r, i64 ldr, double scale)
 * The micro-kernel with an epilogue. The sums of k block after k block meet in X — C
 * itself, or with `accumulate` (C holds the values to add to) the partial sums x:
 *   not last:  X (=|+=) Σ_q<kc …   as tile_function, `first` choosing =
 *   last:      v = Σ_q<kc … (+ X unless first), then the epilogue, stored into C.
 * kc may be 0 (k = 0: the epilogue of zeros); pointers of absent steps may be NULL.
 *   void kiln_gemm_tile_wW_MRxNR_eCODE_pb(…, double scale, const float *bsrc, i64 ldb)  (pack_b)
 * the same with the B sliver read from op(B) and packed on the way, as tile_function's
 * _pb (kc ≥ 1 there: the loop nest calls it only for a product).
 *   …_ab…(const float *a, …, double scale, i64 lda, i64 anext[, bsrc, ldb])  (a_rows)
 * A read from its rows, as tile_function's _ab (kc ≥ 1). */
LLVMValueRef epi_tile_function(gen g, const kiln_gemm_epilogue *e, bool pack_b, bool a_rows) {
    const int w = g.t.w, mr = g.t.mr, nr = g.t.nr;
    char name[96], code[48], of[16] = "";
    gemm_epi_code(e, code, sizeof code);
    if (g.sliver_mr) snprintf(of, sizeof of, "of%d", g.sliver_mr);
    snprintf(name, sizeof name, "kiln_gemm_tile_w%d_%d%sx%d%s%s%s", w, mr, of, nr, code, a_rows ? "_ab" : "",
             pack_b ? "_pb" : "");
    LLVMTypeRef i64 = g.i64, ptr = g.ptr;
    LLVMTypeRef params[21] = {ptr, ptr, ptr, i64, i64, i64, i64, g.i1, g.i1, ptr, i64, ptr, ptr, i64, ptr, i64, g.f64};
    const char *names[21] = {"ap",   "bp", "c",    "ldc", "kc",  "rows", "cols", "first", "last", "x",
                             "ldx", "bias", "p",   "ldp", "r",   "ldr",  "scale"};
    unsigned n_params = 17, at_lda = 0, at_bsrc = 0;
    if (a_rows) {
        at_lda = n_params, params[n_params] = i64, names[n_params++] = "lda";
        params[n_params] = i64, names[n_params++] = "anext";
    }
    if (pack_b) {
        at_bsrc = n_params;
        params[n_params] = ptr, names[n_params++] = "bsrc";
        params[n_params] = i64, names[n_params++] = "ldb";
    }
    LLVMValueRef fn;
    if (!function_begin(&g, name, n_params, params, names, &fn)) return fn;
    add_attr(&g, 12, "readonly");  /* bias */
    add_attr(&g, 15, "readonly");  /* r */
    LLVMValueRef ap = param(&g, 0), bp = param(&g, 1), kc = param(&g, 4), rows = param(&g, 5), cols = param(&g, 6);
    LLVMValueRef first = param(&g, 7), last = param(&g, 8);
    epi_ptrs out = {param(&g, 2), param(&g, 3), param(&g, 11), param(&g, 12), param(&g, 13), param(&g, 14),
                    param(&g, 15), param(&g, 16)};
    /* the row loop's staging area (gemm_epi_staged), in the entry block */
    LLVMValueRef stage = NULL;
    if (gemm_epi_staged(e)) {
        stage = LLVMBuildAlloca(g.b, LLVMArrayType2(g.f32, (uint64_t)(mr * nr)), "stage");
        LLVMSetAlignment(stage, 64);
    }
    /* the partial sums: x with accumulate, else C (never both: they are noalias) */
    LLVMValueRef x = e->accumulate ? param(&g, 9) : out.c, ldx = e->accumulate ? param(&g, 10) : out.ldc;

    /* prefetch what the tile writes (see tile_function), on the last block also what
     * the epilogue reads and writes; before the k loop and again near its end */
    epi_prefetch_ctx pf = {e, &out, x, ldx, last};
    epi_prefetch(&g, &pf);
    b_source bs = {0};
    if (pack_b) {
        bs.src = param(&g, at_bsrc), bs.ld = param(&g, at_bsrc + 1);
        for (int v = 0; v < NV; v++) bs.mask[v] = lanes_below(&g, sub(&g, cols, k64(&g, v * w)));
    }
    a_source as = a_rows ? a_rows_for(&g, ap, param(&g, at_lda), param(&g, at_lda + 1), rows) : (a_source){{0}, 0};
    LLVMValueRef sum[MR_MAX][NV];
    emit_k_loop_split(&g, ap, bp, kc, true, epi_prefetch, &pf, sum, pack_b ? &bs : NULL, a_rows ? &as : NULL);

    LLVMBasicBlockRef blast = block(&g, "last"), bmore = block(&g, "more"), end = block(&g, "end");
    branch(&g, last, blast, bmore);
    LLVMValueRef whole = LLVMBuildAnd(g.b, LLVMBuildICmp(g.b, LLVMIntSGE, rows, k64(&g, mr), ""),
                                      LLVMBuildICmp(g.b, LLVMIntSGE, cols, k64(&g, nr), ""), "");
    if (g.sliver_mr) whole = LLVMConstInt(g.i1, 0, 0); /* a short tile (edge_gen): masked writes only, less to compile */
    LLVMBasicBlockRef arm[2] = {block(&g, "last.whole"), block(&g, "last.edge")};
    LLVMBuildCondBr(g.b, whole, arm[0], arm[1]);
    for (int masked = 0; masked < 2; masked++) {
        /* v = sum, or sum + X after an earlier block (phis, so the epilogue is emitted once) */
        LLVMBasicBlockRef bfirst = block(&g, "first"), blater = block(&g, "later"), join = block(&g, "join");
        LLVMPositionBuilderAtEnd(g.b, arm[masked]);
        branch(&g, first, bfirst, blater);
        LLVMBuildBr(g.b, join);
        LLVMPositionBuilderAtEnd(g.b, blater);
        LLVMValueRef colmask[NV] = {0}, later[MR_MAX][NV], v[MR_MAX][NV];
        if (masked)
            for (int c = 0; c < NV; c++) colmask[c] = lanes_below(&g, sub(&g, cols, k64(&g, c * w)));
        for (int r = 0; r < mr; r++) {
            LLVMValueRef on = masked ? lt(&g, k64(&g, r), rows) : NULL;
            LLVMValueRef row = masked ? smin(&g, k64(&g, r), sub(&g, rows, k64(&g, 1))) : k64(&g, r);
            LLVMValueRef xrow = at(&g, x, mul(&g, row, ldx));
            for (int c = 0; c < NV; c++) {
                LLVMValueRef mask = masked ? LLVMBuildSelect(g.b, on, colmask[c], LLVMConstNull(g.vmask), "") : NULL;
                LLVMValueRef old = row_load(&g, xrow, k64(&g, c * w), mask);
                later[r][c] = LLVMBuildFAdd(g.b, sum[r][c], old, "");  /* as write_tile adds */
            }
        }
        LLVMBasicBlockRef later_end = LLVMGetInsertBlock(g.b);
        LLVMBuildBr(g.b, join);
        LLVMPositionBuilderAtEnd(g.b, join);
        for (int r = 0; r < mr; r++)
            for (int c = 0; c < NV; c++) {
                v[r][c] = LLVMBuildPhi(g.b, g.vf, "v");
                LLVMAddIncoming(v[r][c], &sum[r][c], &bfirst, 1);
                LLVMAddIncoming(v[r][c], &later[r][c], &later_end, 1);
            }
        if (stage) gemm_write_epilogue_staged(&g, e, v, stage, &out, rows, cols, masked);
        else gemm_write_epilogue(&g, e, v, &out, rows, cols, masked);
        LLVMBuildBr(g.b, end);
    }
    LLVMPositionBuilderAtEnd(g.b, bmore);
    write_tile_4(&g, sum, x, ldx, rows, cols, LLVMBuildNot(g.b, first, ""));
    LLVMBuildBr(g.b, end);
    LLVMPositionBuilderAtEnd(g.b, end);
    return function_end(&g);
}
