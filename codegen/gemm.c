/* gemm.c — generated matrix products C (m×n) = op(A)·op(B), BLIS-style.
 *
 * The loop nest (W = target->vector_floats; mc, kc, nc are the shape's blocks):
 *
 *   for i3 in [0, m) step mc               A block, packed once, reused for all of n
 *     for p in [0, k) step kc
 *       pack op(A)[i3.., p..] → Ap         ceil(mc/MR) slivers of kc×MR:   Ap[s][q][r]
 *       for j2 in [0, n) step nc           B block, sized to stay in L2
 *         pack op(B)[p.., j2..] → Bp       ceil(nc/NR) slivers of kc×NR:   Bp[s][q][c]
 *         for ir in [0, mc) step MR        one A sliver (kc×MR) is reused by …
 *           for jr in [0, nc) step NR      … every B sliver of the block, streamed from L2
 *             tile: C[i3+ir.., j2+jr..] (=|+=) A sliver · B sliver
 * (On one thread a B of n ≤ 1152, or of more than 8 MiB, runs p outside i3 with small
 * A blocks instead, so B is packed once: loops_nest's bo, alone_bo_mc.)
 *
 * Functions. kiln_cg_gemm gives each shape its own function, named by the shape, which
 * passes the shape's sizes, strides and blocks as constants to the loop nest. Everything
 * else is shared by all the GEMMs of a module and emitted once, on first use: the loop
 * nest per combination of transposes (gemm_loops_function), the micro-kernel (tile_function)
 * and the packers. Time goes into the tiles (a tile is ~300 k flops), so calls and
 * run-time trip counts cost nothing measurable, while each further GEMM shape costs a
 * dozen instructions to compile instead of a whole kernel.
 *
 * Micro-kernel (gemm_tile.c: tile_function, epi_tile_function). NR = 2 vectors of W floats. The MR·2 accumulators are
 * <W x float> phis of the k loop, so they live in registers with no help from the
 * optimiser; each step q loads the two B vectors of row q of the B sliver, broadcasts the
 * MR elements of column q of the A sliver and issues 2·MR llvm.fma (see has_fma). MR fills
 * the register file: accumulators + 2 B vectors + 1 broadcast = 12·2+3 = 27 of 32 zmm
 * (12×32 tile, AVX-512), 6·2+3 = 15 of 16 ymm (6×16, AVX2), 15 of 16 xmm (6×8, SSE). The
 * C tile is prefetched before the k loop and again 32 steps before its end (the B sliver
 * streaming through L1 evicts the first), and written after it: overwritten by the first
 * k block (beta = 0), added to by the later ones. (Measured with a C copy of the k loop
 * on Zen 5, best of 30, L2-resident blocks: 12×32, 8×48, 6×64 and 14×32 tiles all ran at
 * 200–220 GFLOP/s, within the noise of each other, so the tile stays 12×32.) A short
 * last sliver of A (m mod MR of 1…8 rows) may run a tile of 4 or 8 rows instead, reading
 * the same packed sliver (gemm_edge_rows, gemm_gen.h).
 *
 * Epilogues (kiln_cg_gemm_epi; the steps and their order are codegen.h's). An epilogue
 * gets its own micro-kernel and loop nest (named with gemm_epi_code: "_ebr_gelu_tanh"), whose
 * tiles are told whether their k block is the first and the last. Blocks before the last
 * write the sums as above; the last one adds the earlier blocks' sums to its own (exactly
 * as the plain GEMM's last `+=` would), then applies the steps (gemm_epilogue.c) to the <W x float> rows and
 * stores C, and P when asked, once — no second pass over C. Cheap steps run on the
 * accumulators in registers, unrolled; the exp-based activations (gelu, gelu_tanh, silu)
 * run in a loop over the tile's rows, the sums staged in a 12×32 stack buffer
 * (gemm_write_epilogue_staged): unrolled, LLVM's scheduler interleaved the 24 computations
 * and spilled their temporaries (the gelu_tanh tile was 3,338 lines of assembly with 339
 * stack accesses; with vm_gelu_tanh and the row loop it is 1,217 lines, and perf puts
 * 18.6 % of its samples outside the k loop against the plain tile's 18.1 %, 2048×1536×384;
 * see docs/performance.md).
 * (Staging through C itself was tried in 2026-12 with the old ~38-operation gelu_tanh
 * and not kept: no gain then.) The order of
 * operations and the rounding are those of the separate kernels (matmul, scale, add,
 * the activation, add): scale in double, then plain fadd's without fast-math flags, so
 * no contraction crosses a step; the activations are lower_elementwise.c's formulas with
 * its flags and its vector math (vmath.h: no libm call, the same bits scalar or vector). So fused and unfused results agree bit for bit (tests/unit/test_gemm.c
 * checks it against kiln_compile_graph). With `accumulate` C holds the values to add to,
 * so when k spans several blocks the partial sums wait in scratch (m×n after the packing
 * slots, kiln_gemm_epi_scratch_floats) instead of in C. k = 0 runs the epilogue micro-
 * kernel with kc = 0 on every tile. The all-default epilogue is the plain GEMM, whose
 * functions and code are unchanged.
 *
 * Packing (gemm_pack.c). The lanes of a sliver at one depth q (MR rows of op(A), NR columns of op(B))
 * are contiguous in the source for op(A) transposed and op(B) plain: pack_copy_function
 * copies them as vectors. Otherwise k is contiguous and pack_transpose_function loads
 * W×W blocks along k and transposes them in registers. Transposes are thus only a
 * packing matter; the micro-kernel is the same for all four. The copier goes row by row
 * over a whole block with a prefetch a few rows ahead (pack_copy_function). A plain op(B)
 * packed per block (B not shared: every product on one thread, see alone_nest; on more,
 * the splits along n, e.g. the weight gradient xᵀ·dy; with or without an epilogue since
 * 2026-12-06 09:30) is not packed
 * beforehand at all: the tiles of the block's first A sliver read its rows from B itself
 * and store the packed sliver as they go (tile_function, epi_tile_function), so the copy's loads from
 * L3/memory overlap the FMAs instead of running alone — on 384×1152×2048 tn the separate
 * copy of B's 9.4 MB took 7 % of the samples, its loads waiting. The FMAs, and so the
 * bits, are the same. (Tried and not kept, 2026-12-06: A packed the same way by the
 * first tile of each A sliver — 12 broadcasts from 12 rows of A and 12 scalar stores per
 * step, 1–3 % slower; each A sliver transposed just before its first tile instead of the
 * whole block before the j2 loop, no gain; prefetching the next B block's source during
 * the current block, slower: with the A block it does not fit L2; the next B block
 * packed into a second slot during the current one, by calls between the tiles or
 * inside the k loops of all its tiles: the copy cost the same, see docs/performance.md.)
 * The B-outer nest of a narrow B (n ≤ 512, AVX-512; since 2026-12-06 19:00) packs no A at
 * all: its tiles broadcast op(A) from A's rows, the next sliver's rows prefetched by the
 * first tile of each sweep (a_rows_for, tile_function's _ab).
 *
 * Column sums of op(A) (kiln_cg_gemm_sum, g.sum_a: a bias gradient dy summed over its rows
 * while dW = dyᵀ·x packs dy). op(A) transposed is packed by the copier, block (i3, p) by
 * block; its summing form (pack_copy_function with sum) then adds the block's packed
 * slivers, still in L1/L2, into sums[i] depth by depth. Each block is packed once, and a
 * lane's k blocks come in order — the nests run p in order for each A block, a claimed
 * block is packed after rounds_wait for round p − 1, and where several threads pack the
 * same A block (a split along n) only one sums it: the first part, or, claiming along n,
 * the thread that claimed the first B block — so sums[i] adds the column in row order
 * from 0, the bits of the separate pass (lower_gemm_kernel.c's emit_colsum), for any
 * thread count. Measured in the char_gpt training step (2 threads): its 24 weight-gradient
 * kernels with sums (36 sums) ~9 ms a step faster (docs/performance.md).
 *
 * Edges are handled by padding, not by extra kernels: packing writes zeros past m and n,
 * so the micro-kernel always multiplies whole tiles, and a tile overhanging C stores
 * through llvm.masked.store with a column mask and a per-row enable. k = 0 writes zeros;
 * m = 0 or n = 0 gives an empty function.
 *
 * Blocking (in floats; caches L1d 48 KiB, L2 1 MiB or more). Caps:
 *   KC = 384  an A sliver is 12×384×4 = 18 KiB (AVX2: 6×384×4 = 9 KiB), reused from L1
 *             by the tiles of one jr sweep; a B sliver, 384×32×4 = 48 KiB, streams.
 *   NC = 320  a B block is 384×320×4 = 480 KiB: half of a 1 MiB L2.
 *   MC = 960  an A block is 960×384×4 = 1.4 MiB and is read from L3; it is large only to
 *             amortise packing B, which happens once per A block.
 * The blocks of a shape are balanced under these caps (blocks_for: k = 400 runs as
 * 208 + 192, not 384 + 16) and are whole tiles, so only the last block of m (n) can hold a
 * partial tile.
 *
 * Scratch (floats, 64-byte aligned): one slot per part,
 *   [ Ap: mc·kc, rounded up to 16 ][ Bp: nc·kc ], rounded up to 16,
 * large enough for the part's blocks too (slot_for: its mc, or B outer's npad·kc, npad =
 * n rounded up to NR);
 * none on the small-m path; then, for an accumulating epilogue over several k blocks,
 * the m×n partial sums.
 *
 * Small m: gemm_small.c (1…8 rows, nothing packed).
 *
 * Threads. A product of m·n·k ≥ 2^18 is cut into one part of whole tiles per thread of
 * the pool at run time (kiln_threads_get; at most the scratch slots, KILN_MAX_THREADS),
 * along m when B is the smaller operand (k·n ≤ m·k), else along n, and handed to
 * kiln_parallel_for2 (the runtime's pool; the JIT resolves it from the process, exported
 * libraries link it from the runtime archive). Each part runs the loop nest on its rows
 * (columns) with its own scratch slot: it packs the uncut operand whole, as one thread
 * does, and its own slice of the other; nothing is shared between the threads but the
 * inputs, and each writes only its slot and its part of C. The duplicated packing of the
 * smaller operand is the price; the gain, measured on a quiet machine (2026-12-06):
 * 256×384×384 at 2 threads 0.64× → 0.91× oneDNN, 512³ 0.80× → 0.98×, 2048×384×384 0.84×
 * → 0.96× (see gemm_split_for for what the previous scheme lost). A part's blocks are
 * its own (part_plan_for): cut along m, a part of a B with n ≤ 1152 (or a large B of
 * n ≤ 2048) runs B outer as one thread does, and a part of a wider large B gets A blocks
 * for its rows, so either packs B once
 * (with the whole shape's mc, a 1024-row part of 2048³ packed B twice); kc stays the
 * shape's. Parts that run B outer, parts of a split along n with one A block and several
 * k blocks, and those claims_n_instead cuts along n, do not run fixed halves: they claim
 * blocks from a counter per k block (claims_for, claim_begin), so a thread that starts
 * late or runs slower does fewer, and a block's rounds (rounds_wait) keep each element's
 * k blocks in order. Sibling products that
 * read one A (a QKV kernel) run as one such job (kiln_cg_gemm_group, gemm_group.c).
 * History: until 2026-12 always 8 equal parts claimed in turn (22 tiles as seven of 3
 * and one of 1: a 9 % tail on 2 threads, the shared operand streamed 8 times); then one
 * part per thread with the operand the split does not cut packed once for all parts by a
 * first phase and read by "_sa"/"_sb" loop nests; then guided parts (T big parts sharing
 * 3/4 of the tiles, small ones the rest, against a descheduled thread). That scheme was
 * deleted once one part per thread had replaced it everywhere (it is in git history, its
 * measurements in docs/performance.md); the "_sa" nest remains for the group's parts,
 * which read their own packed A.
 *
 * The k blocks are the whole shape's, and every element sums its kc blocks, each in k
 * order, in its own accumulator lane, so C is bit-identical for any thread count and any
 * partition. An epilogue's P, R and partial sums move with C, its bias row with the
 * columns; every element's epilogue is computed by the one thread that owns its tile.
 *
 * The emitted IR is already what should run (vector phis, no allocas, addresses as one
 * pointer per loop plus constants), so it needs no IR optimisation. Every loop carries
 * "no unroll, no vectorise" hints and the functions are noinline: O3 over the module
 * costs some compile time but no longer multiplies the code (see docs/performance.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h> /* getenv: KILN_GEMM_TUNE */
#include <string.h>

#include "gemm_gen.h"      /* the emitter state and builders shared with gemm_small.c */
#include "kiln/runtime.h" /* KILN_MAX_THREADS */

/* KILN_GEMM_TUNE, read at code generation: a diagnostic that overrides the threads
 * section's choices for every GEMM compiled while it is set (not the small-m path), to
 * compare partitions side by side (gemm_bench --variants). Comma-separated:
 * split=m|n (the dimension cut into parts), parts=N (at most KILN_MAX_THREADS),
 * pmc=N (the cap of a part's A block rows, part_plan_for; 0: the whole shape's blocks),
 * pbo=0|1 (B outer in the parts of a split along m, part_plan_for), pnc=N (the cap of a
 * part's B block columns), abcast=0|1 (B outer's tiles broadcast op(A) from A's rows
 * instead of a packed sliver, loops_nest's a_rows, on every shape B outer runs with A
 * plain, or on none; the default chooses by shape: a_rows_for), claims=0|1 (the parts
 * claim their blocks from counters, claims_for; 0 also keeps claims_n_instead off),
 * edge=0|1 (a short last A sliver runs a tile of 4 or 8 rows: gemm_edge_rows; default 1). */
typedef struct gemm_tune {
    char split;      /* 'm', 'n' or 0 */
    int parts;       /* 0: the default */
    int part_mc;     /* -1: the default */
    int part_bo;     /* -1: the default */
    int part_nc;     /* 0: the default */
    int a_bcast;     /* -1: the default (a_rows_for) */
    int claims;      /* -1: the default (claims_for) */
    int edge;        /* -1: the default (gemm_edge_rows) */
} gemm_tune;

/* No override: every choice is the default one. */
static const gemm_tune tune_default = {0, 0, -1, -1, 0, -1, -1, -1};

static gemm_tune tune_now(void) {
    gemm_tune tu = tune_default;
    const char *v = getenv("KILN_GEMM_TUNE");
    for (; v && *v; v += strcspn(v, ","), v += *v == ',') {
        if (strncmp(v, "split=", 6) == 0 && (v[6] == 'm' || v[6] == 'n')) tu.split = v[6];
        else if (strncmp(v, "parts=", 6) == 0) tu.parts = atoi(v + 6);
        else if (strncmp(v, "pmc=", 4) == 0) tu.part_mc = atoi(v + 4);
        else if (strncmp(v, "pbo=", 4) == 0) tu.part_bo = atoi(v + 4);
        else if (strncmp(v, "pnc=", 4) == 0) tu.part_nc = atoi(v + 4);
        else if (strncmp(v, "abcast=", 7) == 0) tu.a_bcast = atoi(v + 7);
        else if (strncmp(v, "claims=", 7) == 0) tu.claims = atoi(v + 7);
        else if (strncmp(v, "edge=", 5) == 0) tu.edge = atoi(v + 5);
    }
    if (tu.parts > KILN_MAX_THREADS) tu.parts = KILN_MAX_THREADS;
    return tu;
}

/* One part per thread, since 2026-12-06 for every product split across threads: each
 * part does what one thread does on its rows or columns — packs the operand the split
 * does not cut whole (as one thread packs it), its own slice of the other (a plain GEMM's
 * B inside its first row of tiles, _pb), its tiles — with nothing shared, no packing
 * phase, and each thread writing only its own scratch slot and its own part of C. The
 * only duplicated work is the packing of the uncut operand, so the cut goes across the
 * larger operand (along m when B, k·n, is the smaller). Before, a split product had
 * guided parts reading one operand packed once by a first phase: on a quiet machine,
 * 256×384×384 on 2 threads ran at 1.3× one thread, 0.64× oneDNN — the phase took 57 µs
 * of a 278 µs call (76 µs of CPU for a copy one thread makes in ~25: lines written by one
 * core after the other read them in the previous call, then read back across cores) and
 * both threads' work grew by ~45 %; with one part per thread 0.91×, and 512³ 0.80× →
 * 0.98×, 2048×384×384 0.84× → 0.96× (docs/performance.md, 2026-12-06 10:00–10:30). The
 * small-m path (gemm_small.c), which packs nothing, cuts the larger of the tile counts. */

static bool claims_n_instead(gemm_tile t, const kiln_gemm_shape *s);

int gemm_edge_rows(gemm_tile t, const kiln_gemm_shape *s) {
    int64_t last = s->m % t.mr, rows = round_up(last, 4);
    if (last == 0 || rows >= t.mr || tune_now().edge == 0) return 0;
    return 200 * (t.mr - rows) >= round_up(s->m, t.mr) ? (int)rows : 0;
}

gemm_split gemm_split_for(gemm_tile t, const kiln_gemm_shape *s) {
    int64_t tiles_m = (s->m + t.mr - 1) / t.mr, tiles_n = (s->n + t.nr - 1) / t.nr;
    bool small = gemm_use_small(t, s);
    gemm_tune tu = small ? tune_default : tune_now();
    /* one part per thread: cut the dimension whose operand is the larger, so that the
     * one every part packs whole is the smaller (A is m·k, B k·n) */
    bool on_m = small ? tiles_m >= tiles_n : s->m >= s->n && !claims_n_instead(t, s);
    if (tu.split) on_m = tu.split == 'm';
    int64_t tiles = on_m ? tiles_m : tiles_n;
    bool big = (double)s->m * (double)s->n * (double)s->k >= (small ? GEMM_SMALL_PARALLEL_MIN : GEMM_PARALLEL_MIN);
    if (!big || tiles < 2) return (gemm_split){on_m, 1, on_m ? s->m : s->n};
    int64_t want = tu.parts > 0 ? tu.parts : KILN_MAX_THREADS;
    int64_t per = (tiles + want - 1) / want;  /* tiles per part */
    return (gemm_split){on_m, (tiles + per - 1) / per, per * (on_m ? t.mr : t.nr)};
}

static int64_t slot_for(gemm_tile t, const kiln_gemm_shape *s, gemm_split sp);

static int64_t scratch_floats(gemm_tile tile, const kiln_gemm_shape *s) {
    if (s->m == 0 || s->n == 0 || s->k == 0) return 0;
    if (gemm_use_small(tile, s)) return 0;  /* nothing packed */
    gemm_split sp = gemm_split_for(tile, s);
    return sp.parts * slot_for(tile, s, sp);
}

int64_t kiln_gemm_scratch_floats(const kiln_target *t, const kiln_gemm_shape *s) {
    return scratch_floats(tile_for(t), s);
}

/* ---- emitter setup ---------------------------------------------------------------- */

/* llvm.fma rounds once on every target, so C is bit-identical whatever the vector width
 * (every element sums its k terms in the same order); but without FMA hardware it becomes
 * a libm call per lane. Such targets (plain x86-64) get llvm.fmuladd: a multiply and an
 * add. A CPU named without features may have FMA: fmuladd then still fuses. */
static bool has_fma(const kiln_target *t) {
    for (const char *p = t->features; p && (p = strstr(p, "+fma")); p += 4)
        if (p[4] == ',' || p[4] == 0) return true;
    return false;
}

static LLVMValueRef intrinsic(gen *g, const char *name, LLVMTypeRef *over, size_t n, LLVMTypeRef *ty) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    assert(id != 0);
    *ty = LLVMIntrinsicGetType(g->ctx, id, over, n);
    return LLVMGetIntrinsicDeclaration(g->mod, id, over, n);
}

gen gemm_gen_init(kiln_cg *cg) {
    gen g = {.ctx = cg->ctx, .mod = cg->mod, .target = cg->target, .t = tile_for(cg->target), .cg = cg};
    assert(g.t.mr <= MR_MAX && g.t.nr == NV * g.t.w && g.t.nr <= NR_MAX);
    g.i1 = LLVMInt1TypeInContext(g.ctx);
    g.i32 = LLVMInt32TypeInContext(g.ctx);
    g.i64 = LLVMInt64TypeInContext(g.ctx);
    g.f32 = LLVMFloatTypeInContext(g.ctx);
    g.f64 = LLVMDoubleTypeInContext(g.ctx);
    g.ptr = LLVMPointerTypeInContext(g.ctx, 0);
    g.vf = LLVMVectorType(g.f32, (unsigned)g.t.w);
    g.vd = LLVMVectorType(g.f64, (unsigned)g.t.w);
    g.vmask = LLVMVectorType(g.i1, (unsigned)g.t.w);
    LLVMValueRef lane[16];
    for (int x = 0; x < g.t.w; x++) lane[x] = LLVMConstInt(g.i32, (unsigned long long)x, 0);
    g.iota = LLVMConstVector(lane, (unsigned)g.t.w);
    LLVMTypeRef vf_ptr[] = {g.vf, g.ptr};
    g.fma = intrinsic(&g, has_fma(cg->target) ? "llvm.fma" : "llvm.fmuladd", &g.vf, 1, &g.fma_ty);
    g.mload = intrinsic(&g, "llvm.masked.load", vf_ptr, 2, &g.mload_ty);
    g.mstore = intrinsic(&g, "llvm.masked.store", vf_ptr, 2, &g.mstore_ty);
    g.prefetch = intrinsic(&g, "llvm.prefetch", &g.ptr, 1, &g.prefetch_ty);
    LLVMMetadataRef no_unroll = LLVMMDStringInContext2(g.ctx, "llvm.loop.unroll.disable", 24);
    LLVMMetadataRef no_vec[] = {LLVMMDStringInContext2(g.ctx, "llvm.loop.vectorize.enable", 26),
                                LLVMValueAsMetadata(LLVMConstInt(g.i1, 0, 0))};
    g.loop_hints[0] = LLVMMDNodeInContext2(g.ctx, &no_unroll, 1);
    g.loop_hints[1] = LLVMMDNodeInContext2(g.ctx, no_vec, 2);
    g.md_loop = LLVMGetMDKindIDInContext(g.ctx, "llvm.loop", 9);
    return g;
}

/* ---- the loop nest ----------------------------------------------------------------- */

/* The epilogue micro-kernel's 17 arguments for the tile at (i, j) (epi_tile_function). */
static void epi_tile_args(gen *g, LLVMValueRef *args, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef c,
                          LLVMValueRef ldc, LLVMValueRef kc, LLVMValueRef m, LLVMValueRef n, LLVMValueRef i,
                          LLVMValueRef j, LLVMValueRef first, LLVMValueRef last, const epi_args *ea) {
    LLVMValueRef zero = k64(g, 0);
    LLVMValueRef list[] = {ap, bp, at_ij(g, c, i, j, ldc), ldc, kc, sub(g, m, i), sub(g, n, j), first, last,
                           at_ij(g, ea->x, i, j, ea->ldx), ea->ldx, at_ij(g, ea->bias, zero, j, zero),
                           at_ij(g, ea->p, i, j, ea->ldp), ea->ldp, at_ij(g, ea->r, i, j, ea->ldr), ea->ldr,
                           ea->scale};
    memcpy(args, list, sizeof list);
}

/* Claimed blocks (loops_nest's claim; claims_for says where): the threads running a
 * product's parts take its A blocks (CLAIM_M: slivers of MR rows) or B blocks (CLAIM_N:
 * slivers of NR columns) from a counter of slivers per k block (next[p], zero before the
 * hand-off) instead of each running a fixed half, so a thread that starts late or runs on
 * a slower vCPU does fewer blocks instead of making the other wait at the end. A claim
 * takes a quarter of the slivers left in its k block, at least one and at most a block
 * (cap), so the blocks shrink towards the end of each k block: the last ones cost a few
 * microseconds each. (Shrinking only towards the end of the last k block, larger claims
 * before, measured the same or 0.2–1.9 % slower, 2026-12-07.)
 *   for (first = 1; claim(&row, &rows); first = 0) body
 * The counter orders nothing but the split: each C element is still written by one tile
 * per k block, from the same sums, in k order (rounds_wait), so the bits are those of any
 * other partition. */
typedef enum gemm_claim { CLAIM_NONE, CLAIM_M, CLAIM_N } gemm_claim;

typedef struct claim_loop {
    LLVMValueRef row, rows, first;  /* the block's first row (column) of C, its rows (columns); i1 */
    LLVMValueRef sliver, slivers;   /* the same in slivers: `unit` (MR or NR) lanes each */
    LLVMBasicBlockRef head, exit;
} claim_loop;

static claim_loop claim_begin(gen *g, LLVMValueRef next, LLVMValueRef m, LLVMValueRef cap, int64_t unit) {
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
    claim_loop cl = {.head = block(g, "claim")};
    LLVMBasicBlockRef try_ = block(g, "claim.try"), take = block(g, "claim.take"), got = block(g, "claim.got");
    cl.exit = block(g, "claim.none");
    LLVMBuildBr(g->b, cl.head);
    LLVMPositionBuilderAtEnd(g->b, cl.head);
    cl.first = LLVMBuildPhi(g->b, g->i1, "first");
    LLVMValueRef yes = LLVMConstInt(g->i1, 1, 0);
    LLVMAddIncoming(cl.first, &yes, &pre, 1);
    LLVMValueRef seen0 = LLVMBuildLoad2(g->b, g->i64, next, "");
    LLVMSetOrdering(seen0, LLVMAtomicOrderingMonotonic);
    LLVMSetAlignment(seen0, 8);
    LLVMBuildBr(g->b, try_);
    LLVMPositionBuilderAtEnd(g->b, try_);
    LLVMValueRef cur = LLVMBuildPhi(g->b, g->i64, "cur");
    LLVMValueRef mr = k64(g, unit);
    LLVMValueRef left = sub(g, LLVMBuildSDiv(g->b, add(g, m, k64(g, unit - 1)), mr, ""), cur);
    branch(g, lt(g, k64(g, 0), left), take, cl.exit);
    LLVMValueRef chunk = smin(g, LLVMBuildSDiv(g->b, add(g, left, k64(g, 3)), k64(g, 4), ""),
                              LLVMBuildSDiv(g->b, cap, mr, ""));
    LLVMValueRef pair = LLVMBuildAtomicCmpXchg(g->b, next, cur, add(g, cur, chunk), LLVMAtomicOrderingMonotonic,
                                               LLVMAtomicOrderingMonotonic, 0);
    LLVMValueRef seen = LLVMBuildExtractValue(g->b, pair, 0, "");
    LLVMValueRef incoming[] = {seen0, seen};
    LLVMBasicBlockRef from[] = {cl.head, take};
    LLVMAddIncoming(cur, incoming, from, 2);
    LLVMBuildCondBr(g->b, LLVMBuildExtractValue(g->b, pair, 1, ""), got, try_);
    LLVMPositionBuilderAtEnd(g->b, got);
    cl.row = mul(g, cur, mr);
    cl.rows = smin(g, mul(g, chunk, mr), sub(g, m, cl.row));
    cl.sliver = cur, cl.slivers = chunk;
    return cl;
}

/* Rounds (claims over several k blocks): rounds[s] counts the k blocks whose tiles of
 * sliver s are written to C. A thread that claims slivers for k block p waits until each
 * has round p, since its tiles add to what block p − 1 left in C; it then sets them to
 * p + 1. The counters of one k block are claimed in order from the first sliver, so by
 * the time a thread comes back to a sliver for block p, block p − 1 finished it long ago:
 * the wait is a load that finds it done. Each element still sums its k blocks in order,
 * one block per tile, whoever runs it: the same bits. Acquire/release order C's stores
 * before the next round's loads. */
static void rounds_wait(gen *g, LLVMValueRef rounds, const claim_loop *cl, LLVMValueRef round) {
    loop ls = loop_begin(g, cl->sliver, add(g, cl->sliver, cl->slivers), 1, "wait");
    LLVMBasicBlockRef spin = block(g, "wait.spin"), pause = block(g, "wait.pause"), done = block(g, "wait.done");
    LLVMValueRef at_s = LLVMBuildInBoundsGEP2(g->b, g->i64, rounds, &ls.iv, 1, "");
    LLVMBuildBr(g->b, spin);
    LLVMPositionBuilderAtEnd(g->b, spin);
    LLVMValueRef seen = LLVMBuildLoad2(g->b, g->i64, at_s, "");
    LLVMSetOrdering(seen, LLVMAtomicOrderingAcquire);
    LLVMSetAlignment(seen, 8);
    branch(g, lt(g, seen, round), pause, done);
    if (strncmp(g->target->triple, "x86_64", 6) == 0) {  /* as the runtime's pool spins */
        LLVMTypeRef ty;
        LLVMValueRef fn = intrinsic(g, "llvm.x86.sse2.pause", NULL, 0, &ty);
        LLVMBuildCall2(g->b, ty, fn, NULL, 0, "");
    }
    LLVMBuildBr(g->b, spin);
    LLVMPositionBuilderAtEnd(g->b, done);
    loop_end(g, &ls);
}

static void rounds_publish(gen *g, LLVMValueRef rounds, const claim_loop *cl, LLVMValueRef round) {
    loop ls = loop_begin(g, cl->sliver, add(g, cl->sliver, cl->slivers), 1, "publish");
    LLVMValueRef st = LLVMBuildStore(g->b, add(g, round, k64(g, 1)),
                                     LLVMBuildInBoundsGEP2(g->b, g->i64, rounds, &ls.iv, 1, ""));
    LLVMSetOrdering(st, LLVMAtomicOrderingRelease);
    LLVMSetAlignment(st, 8);
    loop_end(g, &ls);
}

static void claim_end(gen *g, claim_loop *cl) {
    LLVMValueRef no = LLVMConstInt(g->i1, 0, 0);
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    hint_loop(g, LLVMBuildBr(g->b, cl->head));
    LLVMAddIncoming(cl->first, &no, &latch, 1);
    LLVMPositionBuilderAtEnd(g->b, cl->exit);
}

/* Calls `tile`, or `short_tile` (when not NULL) for a sliver of at most g->edge_rows
 * rows: `rows` = m − i, the rows left from the sliver's first. */
static void call_tile(gen *g, LLVMValueRef tile, LLVMValueRef short_tile, LLVMValueRef rows, LLVMValueRef *args,
                      unsigned n) {
    if (!short_tile) {
        call(g, tile, args, n);
        return;
    }
    LLVMBasicBlockRef bshort = block(g, "tile.short"), bwhole = block(g, "tile.whole"), join = block(g, "tile.called");
    branch(g, LLVMBuildICmp(g->b, LLVMIntSLE, rows, k64(g, g->edge_rows), ""), bshort, bwhole);
    call(g, short_tile, args, n);
    LLVMBuildBr(g->b, join);
    LLVMPositionBuilderAtEnd(g->b, bwhole);
    call(g, tile, args, n);
    LLVMBuildBr(g->b, join);
    LLVMPositionBuilderAtEnd(g->b, join);
}

/*   void kiln_gemm_loops_wW_TATB(const float *a, const float *b, float *c, float *scratch,
 *                                i64 m, i64 n, i64 k, i64 lda, i64 ldb, i64 ldc,
 *                                i64 mc, i64 kc, i64 nc)
 * the loop nest of the file comment around calls of the micro-kernel and the packers,
 * for one combination of transposes; m, n, k ≥ 1, blocks as blocks_for. It is shared too:
 * only the blocks' trip counts depend on the shape, and a tile's work dwarfs them.
 * With an epilogue (e not NULL) it is kiln_gemm_loops_wW_TATB_eCODE, whose arguments go
 * on with epi_args' eight (x, ldx, bias, p, ldp, r, ldr, scale), and whose tiles learn
 * whether their k block is the first and the last. With shared_a ("_sa", the group's
 * parts: kiln_cg_gemm_group) two more follow, an op(A) packed beforehand and its rows
 * rounded to slivers ("full", "pad"), and the nest reads A's blocks there instead of
 * packing them; its scratch is then Bp alone.
 * With bo ("_bo", one thread only: alone_bo_mc) the k blocks p run outside the A blocks
 * i3: the first A block packs every B block of k block p (block j2 at Bp + j2·kc, so
 * Bp needs kc·npad floats) and the later A blocks read them. Each C
 * element still sums its k blocks in p order, the first stored and the later added: the
 * same bits. gemm_loops_function is the usual order.
 * With a_rows ("_ab"; bo and op(A) not transposed: a_rows_for) A is not packed: the
 * tiles broadcast op(A)(i, q) from A's rows, a + (i+r)·lda + p + q (tile_function's _ab),
 * the same fmas in the same order, so the same bits.
 * With claim CLAIM_M ("_cl"; bo: claims_for) the A blocks of each k block p are claimed
 * (claim_begin) from the counter next[p] (`next`, the last argument) instead of running
 * from 0 to m: the parts of a split product each call it on the whole m, and a thread
 * packs B's k block p in its first claim of p. With CLAIM_N ("_cn") the nest runs the A
 * blocks i3 outside and p inside them, packs A's block (i3, p) in a thread's first claim
 * of it, and claims B blocks of at most nc columns, each packed by its tiles as usual;
 * each A block has its own counters and rounds. Either way the slivers' rounds (after the
 * counters) order the k blocks: rounds_wait, rounds_publish. */
static LLVMValueRef loops_nest(gen g, bool trans_a, bool trans_b, const kiln_gemm_epilogue *e, bool shared_a,
                               bool bo, bool a_rows, gemm_claim claim) {
    assert(!bo || !shared_a);
    assert(!a_rows || (bo && !trans_a));
    assert(claim != CLAIM_M || bo);
    assert(claim != CLAIM_N || (!bo && !shared_a));
    bool claims = claim != CLAIM_NONE, p_outer = bo || claim == CLAIM_N;
    char name[96], code[48] = "";
    if (e) gemm_epi_code(e, code, sizeof code);
    snprintf(name, sizeof name, "kiln_gemm_loops_w%d_%c%c%s%s%s%s%s%s%s", g.t.w, trans_a ? 't' : 'n',
             trans_b ? 't' : 'n', code, shared_a ? "_sa" : "", bo ? "_bo" : "",
             a_rows ? "_ab" : "", claim == CLAIM_M ? "_cl" : claim == CLAIM_N ? "_cn" : "",
             g.edge_rows == 4 ? "_e4" : g.edge_rows == 8 ? "_e8" : "", g.sum_a ? "_colsum" : "");
    assert(g.edge_rows == 0 || g.edge_rows == 4 || g.edge_rows == 8);
    LLVMValueRef tile = e ? epi_tile_function(g, e, false, a_rows) : tile_function(g, false, a_rows);
    /* B packed by the first row of tiles of each block (tile_function, epi_tile_function) */
    bool fuse_b = !trans_b;
    LLVMValueRef tile_pb = !fuse_b ? NULL : e ? epi_tile_function(g, e, true, a_rows) : tile_function(g, true, a_rows);
    /* the short tile of a last sliver of 4 or 8 rows or fewer (gemm_edge_rows). Not for the first
     * row of tiles, which packs B: with B plain a product of m ≤ 8 takes the small path
     * (gemm_small.c), so that sliver is short only in a part's or a claim's rare first
     * sliver (the whole _pb tile, masked, serves it), and a function fewer per epilogue
     * is less to compile */
    LLVMValueRef tile_short = NULL;
    if (g.edge_rows) {
        gen ge = edge_gen(g);
        tile_short = e ? epi_tile_function(ge, e, false, a_rows) : tile_function(ge, false, a_rows);
    }
    /* op(A)(i, q) = a[i·lda + q], or a[q·lda + i] when transposed: rows of op(A) are
     * contiguous only then; op(B)(q, j) = b[q·ldb + j] (b[j·ldb + q]) the other way. */
    operand pa = {.lanes_contiguous = trans_a, .width = g.t.mr}, pb = {.lanes_contiguous = !trans_b, .width = g.t.nr};
    pa.packer = a_rows ? NULL : pa.lanes_contiguous ? pack_copy_function(g, pa.width, false) : pack_transpose_function(g, pa.width);
    pb.packer = fuse_b ? NULL : pb.lanes_contiguous ? pack_copy_function(g, pb.width, false) : pack_transpose_function(g, pb.width);
    /* the sums of op(A)'s lanes ride on its copier (kiln_cg_gemm_sum: op(A) transposed) */
    assert(!g.sum_a || (pa.lanes_contiguous && !a_rows && !shared_a));
    if (g.sum_a) pa.sum_packer = pack_copy_function(g, pa.width, true);

    LLVMTypeRef i64 = g.i64, ptr = g.ptr;
    LLVMTypeRef params[25] = {ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, i64, i64,
                              ptr, i64, ptr, ptr, i64, ptr, i64, g.f64};
    const char *names[25] = {"a", "b",  "c",  "scratch", "m", "n",   "k", "lda", "ldb", "ldc", "mc",
                             "kc", "nc", "x", "ldx",     "bias", "p", "ldp", "r", "ldr", "scale"};
    unsigned n_params = e ? 21 : 13, at_full = n_params;
    if (shared_a) {  /* the packed A, and its rows rounded to slivers */
        params[n_params] = ptr, names[n_params++] = "full";
        params[n_params] = i64, names[n_params++] = "pad";
    }
    if (claims) params[n_params] = ptr, names[n_params++] = "next";
    unsigned at_next = n_params;  /* next is parameter at_next - 1 */
    if (g.sum_a) params[n_params] = ptr, names[n_params++] = "sums";
    LLVMValueRef fn;
    if (!function_begin(&g, name, n_params, params, names, &fn)) return fn;
    if (claims)  /* the other threads claim from it too: not noalias */
        LLVMRemoveEnumAttributeAtIndex(g.fn, at_next, LLVMGetEnumAttributeKindForName("noalias", 7));
    if (g.sum_a)  /* the threads of a claiming product add to it in turn */
        LLVMRemoveEnumAttributeAtIndex(g.fn, n_params, LLVMGetEnumAttributeKindForName("noalias", 7));
    if (shared_a) add_attr(&g, at_full + 1, "readonly");
    add_attr(&g, 1, "readonly");
    add_attr(&g, 2, "readonly");
    if (e) {
        add_attr(&g, 16, "readonly");  /* bias */
        add_attr(&g, 19, "readonly");  /* r */
    }
    LLVMValueRef c = param(&g, 2), ap = param(&g, 3), m = param(&g, 4), n = param(&g, 5), k = param(&g, 6);
    LLVMValueRef ldc = param(&g, 9), mc_max = param(&g, 10), kc_max = param(&g, 11), nc_max = param(&g, 12);
    pa.src = param(&g, 0), pa.ld = param(&g, 7), pa.lim = m;
    pb.src = param(&g, 1), pb.ld = param(&g, 8), pb.lim = n;
    epi_args ea = {0};
    if (e) {  /* absent operands as constant NULLs, so at_ij skips them */
        LLVMValueRef null = LLVMConstPointerNull(g.ptr);
        ea = (epi_args){e->accumulate ? param(&g, 13) : null, param(&g, 14), e->bias ? param(&g, 15) : null,
                        e->pre_out ? param(&g, 16) : null, param(&g, 17), e->residual ? param(&g, 18) : null,
                        param(&g, 19), param(&g, 20)};
    }
    /* Bp follows Ap, 16-float aligned (packed_a_floats); with shared_a it is the slot */
    LLVMValueRef a_floats = LLVMBuildAnd(g.b, add(&g, mul(&g, mc_max, kc_max), k64(&g, 15)), k64(&g, -16), "");
    LLVMValueRef bp = shared_a ? ap : at(&g, ap, a_floats);

    /* i3 then p; with bo, p then i3 (B outer: every block of B for k block p stays packed,
     * side by side, while all of m goes by); claiming along n, p then the claimed j2 */
    loop l0 = {0};  /* claiming along n: the A blocks outside, each with its counters */
    LLVMValueRef i3n = k64(&g, 0), mcn = m;
    if (claim == CLAIM_N) {
        l0 = loop_begin(&g, k64(&g, 0), m, 1, "i3");
        l0.step_value = mc_max;
        i3n = l0.iv, mcn = smin(&g, mc_max, sub(&g, m, i3n));
    }
    loop l1 = loop_begin(&g, k64(&g, 0), p_outer ? k : m, 1, p_outer ? "p" : "i3");
    l1.step_value = p_outer ? kc_max : mc_max;
    LLVMValueRef x1 = smin(&g, l1.step_value, sub(&g, p_outer ? k : m, l1.iv));
    loop l2 = {0};
    claim_loop cl = {0};
    LLVMValueRef x2;
    LLVMValueRef round = NULL, rounds = NULL;
    if (claims) {  /* i3 (j2): the claimed blocks, from k block p's counter; then the rounds */
        LLVMValueRef next = param(&g, at_next - 1);
        LLVMValueRef blocks = LLVMBuildSDiv(g.b, add(&g, k, sub(&g, kc_max, k64(&g, 1))), kc_max, "");
        if (claim == CLAIM_N) {  /* A block i3's counters and rounds after the earlier blocks' */
            LLVMValueRef ns = LLVMBuildSDiv(g.b, add(&g, n, k64(&g, g.t.nr - 1)), k64(&g, g.t.nr), "");
            LLVMValueRef at_i3 = mul(&g, LLVMBuildSDiv(g.b, i3n, mc_max, ""), add(&g, blocks, ns));
            next = LLVMBuildInBoundsGEP2(g.b, g.i64, next, &at_i3, 1, "");
        }
        round = LLVMBuildSDiv(g.b, l1.iv, kc_max, "round");
        rounds = LLVMBuildInBoundsGEP2(g.b, g.i64, next, &blocks, 1, "rounds");
        bool on_m = claim == CLAIM_M;
        cl = claim_begin(&g, LLVMBuildInBoundsGEP2(g.b, g.i64, next, &round, 1, ""), on_m ? m : n,
                         on_m ? mc_max : nc_max, on_m ? g.t.mr : g.t.nr);
        rounds_wait(&g, rounds, &cl, round);
        l2.iv = on_m ? cl.row : i3n, x2 = on_m ? cl.rows : mcn;
    } else {
        l2 = loop_begin(&g, k64(&g, 0), bo ? m : k, 1, bo ? "i3" : "p");
        l2.step_value = bo ? mc_max : kc_max;
        x2 = smin(&g, l2.step_value, sub(&g, bo ? m : k, l2.iv));
    }
    loop li = p_outer ? l2 : l1, lp = p_outer ? l1 : l2;
    LLVMValueRef mc = p_outer ? x2 : x1, kc = p_outer ? x1 : x2;
    LLVMValueRef i3_first = claims ? cl.first : bo ? LLVMBuildICmp(g.b, LLVMIntEQ, li.iv, k64(&g, 0), "") : NULL;
    LLVMValueRef accumulate = NULL, first = NULL, last = NULL;
    if (e) {
        first = LLVMBuildICmp(g.b, LLVMIntEQ, lp.iv, k64(&g, 0), "");
        last = LLVMBuildICmp(g.b, LLVMIntSGE, add(&g, lp.iv, kc), k, "");
    } else {
        accumulate = LLVMBuildICmp(g.b, LLVMIntNE, lp.iv, k64(&g, 0), "");
    }
    LLVMValueRef apb = ap;  /* block (i3, p) of the packed A */
    if (shared_a)            /* in the packed A: k block p at p·mpad, its slivers from i3 on */
        apb = at(&g, param(&g, at_full), add(&g, mul(&g, lp.iv, param(&g, at_full + 1)), mul(&g, li.iv, kc)));
    else if (claim == CLAIM_N) {  /* A's block for k block p, in a thread's first claim of it */
        LLVMBasicBlockRef apack = block(&g, "pack.a"), ago = block(&g, "packed.a");
        branch(&g, cl.first, apack, ago);
        /* every thread with a claim packs the block; the one that claimed its first B block
         * (always its first claim) sums it. It waited (rounds_wait) for that B block's
         * round p − 1, which came after k block p − 1's sums: each lane's depths in order. */
        if (g.sum_a)
            pa.sums = LLVMBuildSelect(g.b, LLVMBuildICmp(g.b, LLVMIntEQ, cl.row, k64(&g, 0), ""),
                                      param(&g, n_params - 1), LLVMConstPointerNull(g.ptr), "");
        emit_pack(&g, &pa, li.iv, mc, lp.iv, kc, ap);
        LLVMBuildBr(g.b, ago);
        LLVMPositionBuilderAtEnd(g.b, ago);
    } else if (!a_rows) {
        /* each block (i3, p) is packed once, p after p for its lanes (with CLAIM_M after
         * rounds_wait for round p − 1): the sums add each lane's depths in order */
        if (g.sum_a) pa.sums = param(&g, n_params - 1);
        emit_pack(&g, &pa, li.iv, mc, lp.iv, kc, ap);
    }

    loop lj = {0};
    LLVMValueRef nc;
    if (claim == CLAIM_N) {
        lj.iv = cl.row, nc = cl.rows;
    } else {
        lj = loop_begin(&g, k64(&g, 0), n, 1, "j2");
        lj.step_value = nc_max;
        nc = smin(&g, nc_max, sub(&g, n, lj.iv));
    }
    LLVMValueRef bpj = bo ? at(&g, bp, mul(&g, lj.iv, kc)) : bp;  /* bo: block j2 from j2·kc on */
    if (!fuse_b) {
        LLVMBasicBlockRef bpack = block(&g, "pack.b"), bgo = block(&g, "packed.b");
        branch(&g, bo ? i3_first : LLVMConstInt(g.i1, 1, 0), bpack, bgo);
        emit_pack(&g, &pb, lj.iv, nc, lp.iv, kc, bpj);
        LLVMBuildBr(g.b, bgo);
        LLVMPositionBuilderAtEnd(g.b, bgo);
    }

    loop lr = loop_begin(&g, k64(&g, 0), mc, g.t.mr, "ir");
    LLVMValueRef i = add(&g, li.iv, lr.iv);
    LLVMValueRef asl = a_rows ? at(&g, pa.src, add(&g, mul(&g, i, pa.ld), lp.iv))  /* op(A)(i, p) = a[i·lda + p] */
                              : at(&g, apb, mul(&g, lr.iv, kc));
    loop lc = loop_begin(&g, k64(&g, 0), nc, g.t.nr, "jr");
    LLVMValueRef j = add(&g, lj.iv, lc.iv);
    /* the tile's arguments, then op(B)(p, j) and ldb for a _pb tile */
    LLVMValueRef args[21];
    unsigned n_args = e ? 17 : 8;
    if (e) {
        epi_tile_args(&g, args, asl, at(&g, bpj, mul(&g, lc.iv, kc)), c, ldc, kc, m, n, i, j, first, last, &ea);
    } else {
        LLVMValueRef list[] = {asl, at(&g, bpj, mul(&g, lc.iv, kc)), at(&g, c, add(&g, mul(&g, i, ldc), j)), ldc, kc,
                               sub(&g, m, i), sub(&g, n, j), accumulate};
        memcpy(args, list, sizeof list);
    }
    if (a_rows) {  /* lda, and for a sliver's first tile of each B block, to the next sliver (a_source) */
        args[n_args++] = pa.ld;
        LLVMValueRef first_tile = LLVMBuildICmp(g.b, LLVMIntEQ, lc.iv, k64(&g, 0), "");
        args[n_args++] = LLVMBuildSelect(g.b, first_tile, mul(&g, pa.ld, k64(&g, g.t.mr)), k64(&g, 0), "");
    }
    if (fuse_b) {  /* the first A sliver's tiles pack the B slivers they read */
        LLVMBasicBlockRef bfirst = block(&g, "pack.b"), bmore = block(&g, "packed"), bjoin = block(&g, "tile.done");
        LLVMValueRef row0 = LLVMBuildICmp(g.b, LLVMIntEQ, lr.iv, k64(&g, 0), "");
        branch(&g, bo ? LLVMBuildAnd(g.b, row0, i3_first, "") : row0, bfirst, bmore);
        args[n_args] = at_any(&g, pb.src, add(&g, mul(&g, lp.iv, pb.ld), j));  /* op(B)(p, j) */
        args[n_args + 1] = pb.ld;
        call(&g, tile_pb, args, n_args + 2);
        LLVMBuildBr(g.b, bjoin);
        LLVMPositionBuilderAtEnd(g.b, bmore);
        call_tile(&g, tile, tile_short, sub(&g, m, i), args, n_args);
        LLVMBuildBr(g.b, bjoin);
        LLVMPositionBuilderAtEnd(g.b, bjoin);
    } else {
        call_tile(&g, tile, tile_short, sub(&g, m, i), args, n_args);
    }
    loop_end(&g, &lc);
    loop_end(&g, &lr);
    if (claim != CLAIM_N) loop_end(&g, &lj);
    if (claims) {
        rounds_publish(&g, rounds, &cl, round);
        claim_end(&g, &cl);
    } else {
        loop_end(&g, &l2);
    }
    loop_end(&g, &l1);
    if (claim == CLAIM_N) loop_end(&g, &l0);
    return function_end(&g);
}

LLVMValueRef gemm_loops_function(gen g, bool trans_a, bool trans_b, const kiln_gemm_epilogue *e, bool shared_a) {
    return loops_nest(g, trans_a, trans_b, e, shared_a, false, false, CLAIM_NONE);
}

/* B outer on one thread (loops_nest's bo): for a B of at most GEMM_BO_N columns that the
 * usual order would pack once per A block (m > mc), the nest runs p outside i3 with A
 * blocks of GEMM_BO_MC rows, so B is packed once and each small A block is still in L2
 * when its tiles read it; the k block of B (kc×n, ≤ 1.7 MiB) is re-read from L2/L3 by
 * each A block, ~4 GB/s at n = 1152. 1 thread, interleaved A/B, bits identical:
 * 2048×384×1536 +1.2 %, 2048×384×384 +0.8–2 %, the same shapes nt/tn +1–3 %,
 * 2048×1152×384 nn/nt +1–1.8 % (B was packed 3 times, mc = 684); 1024³ ±0.5 %;
 * n = 1536 no gain (2048×1536×384: −1 to +1 %), so the limit is 1152. A blocks of 48,
 * 192 and 384 rows measured the same within the noise. A wider B takes it too when B is
 * large (large_b: k·n ≥ 2^21 floats, 8 MiB, a quarter of L3), since each of its packings then
 * reads it from memory: 2048³ (B 16 MiB, packed 3 times by the usual nest) +1.8 % against
 * an identical control variant (10 interleaved runs, 2026-12-06 13:01; A blocks of 192:
 * the same); 1024³ (4 MiB) and 2048×1536×384 (2.3 MiB) ±0.5 %, so they keep the usual
 * nest. Returns the A block's rows, or 0 for the usual nest (also when the scratch has no
 * room for kc·npad floats of B). */
enum { GEMM_BO_N = 1152, GEMM_BO_MC = 96 };

/* A B that comes from memory every time it is packed: B outer on one thread
 * (alone_bo_mc), one A block per part on more (part_plan_for) */
static bool large_b(const kiln_gemm_shape *s) { return s->k * s->n >= (int64_t)1 << 21; }

static int64_t alone_bo_mc(gemm_tile t, const kiln_gemm_shape *s) {
    if (s->m == 0 || s->n == 0 || s->k == 0) return 0;
    gemm_blocks bl = blocks_for(t, s);
    if ((s->n > GEMM_BO_N && !large_b(s)) || s->m <= bl.mc) return 0;
    int64_t mc = balanced(s->m, GEMM_BO_MC, t.mr);
    bool fits = round_up(mc * bl.kc, 16) + round_up(s->n, t.nr) * bl.kc <= scratch_floats(t, s);
    return fits ? mc : 0;
}

/* Whether a B-outer nest (bo) broadcasts op(A) from A's rows instead of packing it
 * (loops_nest's a_rows): only for op(A) not transposed, whose rows hold it, and by default
 * for B of n ≤ GEMM_AB_N columns on 16-float vectors. There packing A costs most: a B
 * block of few columns gives each packed A sliver few tiles to serve, and the A
 * transposer took 6.9 % of the samples of 2048×384×1536 (the tiles 91 %). Measured on Zen
 * 5 against an identical control in the same runs (docs/performance.md, GEMM,
 * 2026-12-06 18:40–19:05): n = 384, nn and nt, k = 384 and 1536, +2.9 % at one thread
 * (each of 6 sets +2.4 % or more), +1.8 % at two; n = 768 +1 % at one thread, ±1 % at two; n = 1152 ±0.5 %. AVX2's
 * 6-row tiles are not measured, so they keep packing A. KILN_GEMM_TUNE=abcast=0|1 turns it
 * off or on for every bo nest with op(A) plain, for comparison. */
enum { GEMM_AB_N = 512 };
static bool a_rows_for(gemm_tile t, const kiln_gemm_shape *s, bool bo) {
    if (!bo || s->trans_a) return false;
    int tuned = tune_now().a_bcast;
    if (tuned >= 0) return tuned == 1;
    return t.w == 16 && s->n <= GEMM_AB_N;
}

/* ---- the parts' blocks ------------------------------------------------------------- */

/* The blocks of one part of a product split across T ≥ 2 threads (part_function; one
 * thread runs the whole shape's blocks). A split along m gives each part m/T rows, but the
 * whole shape's mc was chosen for m: a 1024-row part of 2048³ ran A blocks of 684 + 340
 * rows and so packed all of B twice, as did the parts of every m = 2048 training shape.
 * For a B of n ≤ GEMM_BO_N, or a large B (large_b) of n ≤ GEMM_BO_LARGE_N, the part runs
 * B outer (loops_nest's bo, as one thread does: alone_bo_mc) with A blocks of GEMM_BO_MC
 * rows, which its threads claim (claims_for); for a larger B the part's rows (on 2
 * threads, the largest part) are blocked under their own cap, GEMM_PART_MC, so a part of
 * up to that many rows is one A block; either packs B once. kc is the shape's, so the
 * bits do not change. `mc` is the part's A block rows (its slot has room for it: slot_for),
 * `bo` B outer. A large B took B outer since 2026-12-07 (2048³ at 2 threads, against one
 * 1024-row A block per part, eight sets in-process: +1.2 %, 0.996–1.034; 1 thread the
 * same); each thread's slot then holds a k block of B, at most 2048·384 floats (3 MiB). */
enum { GEMM_PART_MC = 1024, GEMM_BO_LARGE_N = 2048 };
typedef struct part_plan {
    int64_t mc, nc;
    bool bo;
} part_plan;

static part_plan part_plan_for(gemm_tile t, const kiln_gemm_shape *s, gemm_split sp) {
    gemm_blocks bl = blocks_for(t, s);
    part_plan pl = {bl.mc, bl.nc, false};
    if (sp.parts < 2) return pl;
    gemm_tune tu = tune_now();
    /* the rows (columns) of a part of 2 */
    int64_t tiles_m = (s->m + t.mr - 1) / t.mr, rows = sp.on_m ? (tiles_m + 1) / 2 * t.mr : s->m;
    int64_t tiles_n = (s->n + t.nr - 1) / t.nr, cols = sp.on_m ? s->n : (tiles_n + 1) / 2 * t.nr;
    if (tu.part_nc > 0) pl.nc = balanced(cols, round_up(tu.part_nc, t.nr), t.nr);
    if (!sp.on_m) {
        if (tu.part_mc > 0) pl.mc = balanced(rows, round_up(tu.part_mc, t.mr), t.mr);
        return pl;
    }
    int cap = tu.part_mc >= 0 ? tu.part_mc : GEMM_PART_MC;
    bool bo = tu.part_bo >= 0 ? tu.part_bo : true;
    bool bo_fits = s->n <= GEMM_BO_N || (large_b(s) && s->n <= GEMM_BO_LARGE_N);
    if (bo && bo_fits && s->m > bl.mc) return (part_plan){balanced(rows, GEMM_BO_MC, t.mr), pl.nc, true};
    /* only for a large B (large_b), which comes from memory each time
     * it is packed (2048³: +2–3 %), while a B of a few MiB is packed again from L2/L3 for
     * less than the larger A block costs (2048×1536×384: −1 to −2 %) */
    if (cap > 0 && (tu.part_mc > 0 || large_b(s))) pl.mc = balanced(rows, round_up(cap, t.mr), t.mr);
    return pl;
}

/* Whether the parts of a split product claim their blocks (loops_nest's claim) instead of
 * running a fixed half each, and which: CLAIM_M when the split is along m and the parts
 * run B outer (part_plan_for), so a thread keeps the B it packed in its first claim of a k
 * block for all its claims of that block; CLAIM_N when the split is along n with one A
 * block (m ≤ mc) and several k blocks (the weight gradients xᵀ·dy), or because
 * claims_n_instead moved it there. Why: the two vCPUs do not run a half at the same
 * speed, which one is slower changes from call to call, the worker starts 4–86 µs after
 * the caller, and on a shared machine a neighbour slows one of them (gemm_bench
 * --pool-stats: halves of 2048×384×1536 took 5908 and 6702 µs). Measured on Zen 5 at two
 * threads against fixed halves in the same runs (docs/performance.md, GEMM, 2026-12-06
 * 21:20–21:35 and 2026-12-06 23:35 – 12-07 00:25): one k block 2048×384×384 +2.6 %,
 * 2048×1152×384 nn +1.0 %, nt +2.3 %; several 2048×384×1536 nn +2.5 %, nt +3.8 %,
 * 2048×384×1152 nt +1.4 %, 1024³ +0.6 %, 384×1152×2048 tn +1.9 %; MLP up cut along n
 * 2048×1536×384 nn +1.1 %, nt +3.1 %; in sets where a neighbour disturbed the machine
 * +13 to +36 %; halves against themselves ±0.4 %. Not for a split along n with one k block
 * and one A block (the forward pass's m = 256 products: ±1 %, no gain). Same bits.
 * KILN_GEMM_TUNE=claims=0 turns it off (and claims_n_instead with it). */
enum { GEMM_CLAIM_COUNTERS = 2048 };

/* A product the split would cut along m whose parts cannot run B outer (n > GEMM_BO_N)
 * and which has one k block (MLP up, 2048×1536×384) is cut along n instead, where its
 * parts claim B blocks (CLAIM_N, over all its A blocks): each thread then packs every A
 * block, instead of packing all of B for each of its own A blocks, and the claims balance
 * the threads. (Measured in the claims' comment above; 2048³, with several k blocks, ran
 * 3 % slower cut along n, so it keeps its halves.) */
static bool claims_n_instead(gemm_tile t, const kiln_gemm_shape *s) {
    return s->m >= s->n && s->n > GEMM_BO_N && s->k <= blocks_for(t, s).kc && tune_now().claims != 0;
}

/* The counters a claiming product keeps on its caller's stack: one per k block (the next
 * sliver to claim in it), then one per sliver of m (its round: rounds_wait); along n the
 * same per A block, with slivers of n. */
static int64_t claim_counters(gemm_tile t, const kiln_gemm_shape *s, gemm_split sp) {
    gemm_blocks bl = blocks_for(t, s);
    int64_t kb = (s->k + bl.kc - 1) / bl.kc;
    if (sp.on_m) return kb + (s->m + t.mr - 1) / t.mr;
    int64_t part_mc = part_plan_for(t, s, sp).mc, mc = part_mc < bl.mc ? part_mc : bl.mc;  /* either, at run time */
    return (s->m + mc - 1) / mc * (kb + (s->n + t.nr - 1) / t.nr);
}

static gemm_claim claims_for(gemm_tile t, const kiln_gemm_shape *s, gemm_split sp) {
    int tuned = tune_now().claims;
    if (tuned == 0 || sp.parts < 2 || claim_counters(t, s, sp) > GEMM_CLAIM_COUNTERS)
        return CLAIM_NONE;
    part_plan pl = part_plan_for(t, s, sp);
    /* part_plan_for's bo is only ever set for one part per thread of a split along m */
    if (pl.bo) return CLAIM_M;
    if (sp.on_m) return CLAIM_NONE;
    return claims_n_instead(t, s) || (s->m <= pl.mc && s->k > blocks_for(t, s).kc) ? CLAIM_N : CLAIM_NONE;
}

/* Floats of one part's scratch slot: room for the whole shape's blocks (one thread runs
 * them through the part function) and for the part's (part_plan_for). */
static int64_t slot_for(gemm_tile t, const kiln_gemm_shape *s, gemm_split sp) {
    gemm_blocks bl = blocks_for(t, s);
    int64_t floats = slot_floats(bl);
    part_plan pl = part_plan_for(t, s, sp);
    int64_t part = pl.bo ? round_up(pl.mc * bl.kc, 16) + round_up(s->n, t.nr) * bl.kc
                         : slot_floats((gemm_blocks){pl.mc, bl.kc, pl.nc});
    return round_up(part > floats ? part : floats, 16);
}

/* The nest a split product runs when the pool has one thread: needed when B outer
 * applies (the parts' nest has no bo; one part per thread packs B once per A block of the
 * usual mc). */
static LLVMValueRef alone_nest(gen g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e) {
    bool bo = alone_bo_mc(g.t, s) > 0;
    if (!bo) return NULL;
    return loops_nest(g, s->trans_a, s->trans_b, e, false, bo, a_rows_for(g.t, s, bo), CLAIM_NONE);
}

/* if (threads == 1) { the nest alone on the shape; goto returned block } else continue here.
 * `threads` is the pool's size at run time (gemm_part_threads). With an epilogue the product's function has its
 * operands after scratch (bias, p, r: those present, in that order; kiln_cg_gemm_epi). */
static LLVMBasicBlockRef alone_branch(gen *g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                                      LLVMValueRef loops, LLVMValueRef threads) {
    LLVMBasicBlockRef alone = block(g, "one.thread"), shared = block(g, "threads"), after = block(g, "done");
    branch(g, LLVMBuildICmp(g->b, LLVMIntEQ, threads, k64(g, 1), ""), alone, shared);
    gemm_blocks bl = blocks_for(g->t, s);
    LLVMValueRef args[22] = {param(g, 0), param(g, 1), param(g, 2), param(g, 3), k64(g, s->m), k64(g, s->n),
                             k64(g, s->k), k64(g, s->lda), k64(g, s->ldb), k64(g, s->ldc),
                             k64(g, alone_bo_mc(g->t, s) ? alone_bo_mc(g->t, s) : bl.mc),  /* bo: its mc */
                             k64(g, bl.kc), k64(g, bl.nc)};
    if (e) {
        LLVMValueRef null = LLVMConstPointerNull(g->ptr), ops[3];
        const bool present[3] = {e->bias, e->pre_out, e->residual};
        for (unsigned i = 0, at_ = 4; i < 3; i++) ops[i] = present[i] ? param(g, at_++) : null;
        epi_args ea = gemm_shape_epi_args(g, s, e, param(g, 3), ops[0], ops[1], ops[2]);
        epi_args_list(&ea, &args[13]);
    }
    unsigned n_args = e ? 21 : 13;
    if (g->sum_a) args[n_args++] = last_param(g);
    call(g, loops, args, n_args);
    LLVMBuildBr(g->b, after);
    LLVMPositionBuilderAtEnd(g->b, shared);
    return after;
}

/* ---- one product ------------------------------------------------------------------- */

/* k = 0: C is the m×n zero matrix. */
static void emit_zero_c(gen *g, const kiln_gemm_shape *s, LLVMValueRef c) {
    loop li = loop_begin(g, k64(g, 0), k64(g, s->m), 1, "zero.i");
    LLVMValueRef crow = at(g, c, mul(g, li.iv, k64(g, s->ldc)));
    loop lj = loop_begin(g, k64(g, 0), k64(g, s->n), 1, "zero.j");
    store_aligned(g, LLVMConstNull(g->f32), at(g, crow, lj.iv), 4);
    loop_end(g, &lj);
    loop_end(g, &li);
}

/* k = 0 with an epilogue: every tile of C gets the epilogue of zero sums, through the
 * epilogue micro-kernel with kc = 0 (one thread: there is no product to share). */
static void emit_zero_epilogue(gen *g, const kiln_gemm_shape *s, LLVMValueRef tile, LLVMValueRef c,
                               const epi_args *ea) {
    LLVMValueRef null = LLVMConstPointerNull(g->ptr), yes = LLVMConstInt(g->i1, 1, 0);
    loop li = loop_begin(g, k64(g, 0), k64(g, s->m), g->t.mr, "zero.i");
    loop lj = loop_begin(g, k64(g, 0), k64(g, s->n), g->t.nr, "zero.j");
    LLVMValueRef args[17];
    epi_tile_args(g, args, null, null, c, k64(g, s->ldc), k64(g, 0), k64(g, s->m), k64(g, s->n), li.iv, lj.iv, yes,
                  yes, ea);
    call(g, tile, args, 17);
    loop_end(g, &lj);
    loop_end(g, &li);
}

/* Whether the partial sums need a home of their own (see kiln_cg_gemm_epi): C holds the
 * values to add to and k spans several blocks. */
static bool needs_partials(gemm_tile t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e) {
    return e && e->accumulate && s->m > 0 && s->n > 0 && s->k > 0 && s->k > blocks_for(t, s).kc;
}

int64_t kiln_gemm_epi_scratch_floats(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e) {
    int64_t floats = kiln_gemm_scratch_floats(t, s);
    if (!gemm_epi_trivial(e) && needs_partials(tile_for(t), s, e)) floats += round_up(s->m * s->n, 16);
    return floats;
}

/* The shape's epilogue operands as values of the function being built: the pointers
 * bias, p, r (NULL constants for absent steps) and x, the partial sums after the packing
 * slots in scratch (m×n, row stride n) when needs_partials. */
epi_args gemm_shape_epi_args(gen *g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, LLVMValueRef scratch,
                             LLVMValueRef bias, LLVMValueRef p, LLVMValueRef r) {
    LLVMValueRef null = LLVMConstPointerNull(g->ptr), x = null;
    if (needs_partials(g->t, s, e))
        x = at(g, scratch, k64(g, kiln_gemm_scratch_floats(g->target, s)));
    return (epi_args){
        x,
        k64(g, s->n),
        e->bias ? bias : null,
        e->pre_out ? p : null,
        k64(g, e->pre_out ? e->ldp : 0),
        e->residual ? r : null,
        k64(g, e->residual ? e->ldr : 0),
        LLVMConstReal(g->f64, gemm_has_scale(e) ? e->scale : 1.0),
    };
}

/* The threads a product's parts are laid out for at run time (see "Threads"): the
 * pool's (kiln_threads_get, read by the caller and again by each part: kiln_threads_set
 * never runs during a kiln_parallel_for), at most sp.parts (the scratch slots). */
LLVMValueRef gemm_part_threads(gen *g, gemm_split sp) {
    LLVMTypeRef ty = LLVMFunctionType(g->i32, NULL, 0, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(g->mod, "kiln_threads_get");
    if (!fn) fn = LLVMAddFunction(g->mod, "kiln_threads_get", ty);
    LLVMValueRef n = LLVMBuildSExt(g->b, LLVMBuildCall2(g->b, ty, fn, NULL, 0, ""), g->i64, "");
    n = smin(g, n, k64(g, sp.parts));
    return LLVMBuildSelect(g->b, lt(g, n, k64(g, 1)), k64(g, 1), n, "");
}

/*   void NAME.part(ptr ctx, i64 begin, i64 end)      ctx = {a, b, c, scratch}
 * parts [begin, end) of one per thread (gemm_part_threads): one call of the loop nest on the tiles they
 * cover (tiles·begin/count up to tiles·end/count), i.e. on A (B) and C moved to the first
 * of their rows (columns), packing into scratch slot `begin`. The chunks of concurrent
 * calls are disjoint, so their first parts, and slots, differ; the slot has room for the
 * whole shape's blocks, whatever the chunk's size.
 * With an epilogue ctx = {a, b, c, scratch, bias, p, r}, and P, R, the partial sums (and
 * bias, when the split is along n) move with C. With claims (claims_for) ctx ends with
 * `next`, the counters the nest claims blocks from (claim_counters), and every part is
 * the whole m (n). */
static LLVMValueRef part_function(gen g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, const char *gemm_name,
                                  LLVMValueRef loops) {
    gemm_split sp = gemm_split_for(g.t, s);
    part_plan pl = part_plan_for(g.t, s, sp);  /* B outer: `loops` is alone_nest's bo nest */
    LLVMValueRef fn;
    if (!part_function_begin(&g, gemm_name, &fn)) return fn;
    gemm_blocks bl = blocks_for(g.t, s);
    bool claims = claims_for(g.t, s, sp) != CLAIM_NONE;
    LLVMValueRef ctx = param(&g, 0), begin = param(&g, 1), end = param(&g, 2), v[9];
    for (int i = 0; i < (e ? 7 : 4) + claims + g.sum_a; i++)
        v[i] = load_aligned(&g, g.ptr, LLVMBuildInBoundsGEP2(g.b, g.ptr, ctx, (LLVMValueRef[]){k64(&g, i)}, 1, ""), 8);
    /* parts [begin, end) of one per thread → whole tiles (even_first_tile); none: return.
     * With claims every part is the whole m, from which it claims blocks. */
    int64_t unit = sp.on_m ? g.t.mr : g.t.nr, dim = sp.on_m ? s->m : s->n, tiles = (dim + unit - 1) / unit;
    LLVMValueRef threads = gemm_part_threads(&g, sp), t0, t1;
    if (claims) {
        t0 = k64(&g, 0), t1 = k64(&g, tiles);
    } else {
        t0 = even_first_tile(&g, begin, threads, tiles);
        t1 = even_first_tile(&g, end, threads, tiles);
    }
    LLVMBasicBlockRef work = block(&g, "work"), none = block(&g, "none");
    branch(&g, lt(&g, t0, t1), work, none);
    LLVMValueRef first = mul(&g, t0, k64(&g, unit));
    LLVMValueRef lanes = sub(&g, smin(&g, mul(&g, t1, k64(&g, unit)), k64(&g, dim)), first);
    LLVMValueRef a = v[0], b = v[1], c = v[2], m = k64(&g, s->m), n = k64(&g, s->n);
    epi_args ea = e ? gemm_shape_epi_args(&g, s, e, v[3], v[4], v[5], v[6]) : (epi_args){0};
    LLVMValueRef zero = k64(&g, 0);
    if (sp.on_m) {  /* row i of op(A) starts at a + i·lda, or a + i when transposed */
        a = at(&g, a, mul(&g, first, k64(&g, s->trans_a ? 1 : s->lda)));
        c = at(&g, c, mul(&g, first, k64(&g, s->ldc)));
        m = lanes;
    } else {        /* column j of op(B) starts at b + j, or b + j·ldb when transposed */
        b = at(&g, b, mul(&g, first, k64(&g, s->trans_b ? s->ldb : 1)));
        c = at(&g, c, first);
        n = lanes;
    }
    LLVMValueRef scratch = at(&g, v[3], mul(&g, begin, k64(&g, slot_for(g.t, s, sp))));  /* slot `begin` */
    /* the part's A blocks (part_plan_for) on two threads or more; one thread runs the
     * whole shape's */
    LLVMValueRef mc = k64(&g, pl.bo ? pl.mc : bl.mc), nc = k64(&g, bl.nc);  /* bo: any thread count */
    LLVMValueRef alone = LLVMBuildICmp(g.b, LLVMIntEQ, threads, k64(&g, 1), "");
    if (!pl.bo && pl.mc != bl.mc) mc = LLVMBuildSelect(g.b, alone, mc, k64(&g, pl.mc), "");
    if (pl.nc != bl.nc) nc = LLVMBuildSelect(g.b, alone, nc, k64(&g, pl.nc), "");
    LLVMValueRef args[24] = {a, b, c, scratch, m, n, k64(&g, s->k), k64(&g, s->lda), k64(&g, s->ldb), k64(&g, s->ldc),
                             mc, k64(&g, bl.kc), nc};
    unsigned n_args = e ? 21 : 13;
    if (e) {  /* the m×n operands move with C, the bias row with the columns */
        LLVMValueRef one = k64(&g, 1);
        ea.x = at_ij(&g, ea.x, sp.on_m ? first : zero, sp.on_m ? zero : first, ea.ldx);
        ea.p = at_ij(&g, ea.p, sp.on_m ? first : zero, sp.on_m ? zero : first, ea.ldp);
        ea.r = at_ij(&g, ea.r, sp.on_m ? first : zero, sp.on_m ? zero : first, ea.ldr);
        if (!sp.on_m) ea.bias = at_ij(&g, ea.bias, zero, first, one);
        epi_args_list(&ea, &args[13]);
    }
    if (claims) args[n_args++] = v[e ? 7 : 4];  /* the counters of claimed slivers */
    if (g.sum_a) {  /* the sums of the part's lanes of op(A); cut along n, the first part's */
        LLVMValueRef sums = v[(e ? 7 : 4) + claims];
        if (claims) args[n_args++] = sums;  /* the nest claims, and sums, blocks of the whole */
        else if (sp.on_m) args[n_args++] = at(&g, sums, first);
        else args[n_args++] = LLVMBuildSelect(g.b, LLVMBuildICmp(g.b, LLVMIntEQ, first, zero, ""), sums,
                                              LLVMConstPointerNull(g.ptr), "");
    }
    call(&g, loops, args, n_args);
    LLVMBuildBr(g.b, none);
    LLVMPositionBuilderAtEnd(g.b, none);
    return function_end(&g);
}

void gemm_function_begin(gen *g, const char *name, const kiln_gemm_epilogue *e, LLVMValueRef ops[7]) {
    LLVMTypeRef params[8] = {g->ptr, g->ptr, g->ptr, g->ptr, g->ptr, g->ptr, g->ptr, g->ptr};
    const char *names[8] = {"a", "b", "c", "scratch"};
    unsigned n_params = 4, at_bias = 0, at_p = 0, at_r = 0;
    if (e && e->bias) at_bias = n_params, names[n_params++] = "bias";
    if (e && e->pre_out) at_p = n_params, names[n_params++] = "pre_out";
    if (e && e->residual) at_r = n_params, names[n_params++] = "residual";
    if (g->sum_a) names[n_params++] = "sums";
    LLVMValueRef fn;
    bool fresh = function_begin(g, name, n_params, params, names, &fn);
    assert(fresh);  /* the callers looked the name up first */
    (void)fresh;
    /* the operands only read (nocapture noalias from function_begin) */
    add_attr(g, 1, "readonly");
    add_attr(g, 2, "readonly");
    if (at_bias) add_attr(g, at_bias + 1, "readonly");
    if (at_r) add_attr(g, at_r + 1, "readonly");
    LLVMValueRef null = LLVMConstPointerNull(g->ptr);
    for (unsigned i = 0; i < 4; i++) ops[i] = param(g, i);
    ops[4] = at_bias ? param(g, at_bias) : null;
    ops[5] = at_p ? param(g, at_p) : null;
    ops[6] = at_r ? param(g, at_r) : null;
}

/* kiln_parallel_for(part, ctx, parts) (gemm_small.c's split) */
void gemm_parallel_for_call(gen *g, LLVMValueRef part, LLVMValueRef ctx, int64_t parts) {
    LLVMTypeRef pf_params[] = {g->ptr, g->ptr, g->i64};
    LLVMTypeRef pf_ty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pf_params, 3, 0);
    LLVMValueRef pf = LLVMGetNamedFunction(g->mod, "kiln_parallel_for");
    if (!pf) pf = LLVMAddFunction(g->mod, "kiln_parallel_for", pf_ty);
    LLVMValueRef args[] = {part, ctx, k64(g, parts)};
    LLVMBuildCall2(g->b, pf_ty, pf, args, 3, "");
}

LLVMValueRef kiln_cg_gemm(kiln_cg *cg, const kiln_gemm_shape *s) { return kiln_cg_gemm_epi(cg, s, NULL); }

/* A product's function name: prefix, the shape, and the epilogue's steps, strides and
 * scale (as its bits). */
void gemm_name(const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, const char *prefix, char *name,
                      size_t size) {
    int len = snprintf(name, size, "%s_m%" PRId64 "_n%" PRId64 "_k%" PRId64 "_%c%c_lda%" PRId64 "_ldb%" PRId64
                       "_ldc%" PRId64, prefix, s->m, s->n, s->k, s->trans_a ? 't' : 'n', s->trans_b ? 't' : 'n',
                       s->lda, s->ldb, s->ldc);
    if (e) {
        char code[48];
        gemm_epi_code(e, code, sizeof code);
        uint64_t bits;
        memcpy(&bits, &e->scale, sizeof bits);
        len += snprintf(name + len, size - (size_t)len, "%s", code);
        if (e->pre_out) len += snprintf(name + len, size - (size_t)len, "_ldp%" PRId64, e->ldp);
        if (e->residual) len += snprintf(name + len, size - (size_t)len, "_ldr%" PRId64, e->ldr);
        if (gemm_has_scale(e)) len += snprintf(name + len, size - (size_t)len, "_s%016" PRIx64, bits);
    }
    assert(len < (int)size);
}

bool kiln_gemm_can_sum_a(const kiln_target *t, const kiln_gemm_shape *s) {
    gemm_tile tile = tile_for(t);  /* an A sliver's lanes in one vector: not SSE's 6 lanes of 4 */
    return s->trans_a && s->n > 0 && tile.mr <= tile.w && !gemm_use_small(tile, s);  /* n = 0 packs nothing */
}

static LLVMValueRef gemm_product(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, bool sum_a);

LLVMValueRef kiln_cg_gemm_epi(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e) {
    return gemm_product(cg, s, e, false);
}

LLVMValueRef kiln_cg_gemm_sum(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e) {
    assert(kiln_gemm_can_sum_a(cg->target, s));
    return gemm_product(cg, s, e, true);
}

static LLVMValueRef gemm_product(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, bool sum_a) {
    assert(s->m >= 0 && s->n >= 0 && s->k >= 0);
    assert(s->ldc >= s->n);
    assert(s->lda >= (s->trans_a ? s->m : s->k) && s->ldb >= (s->trans_b ? s->k : s->n));
    if (gemm_epi_trivial(e)) e = NULL;  /* the plain product: kiln_cg_gemm's own function */
    assert(!e || ((!e->pre_out || e->ldp >= s->n) && (!e->residual || e->ldr >= s->n)));
    assert(!e || (e->act >= KILN_GEMM_ACT_NONE && e->act <= KILN_GEMM_ACT_SILU));

    char name[256];
    gemm_name(s, e, "kiln_gemm", name, sizeof name);
    if (sum_a) strcat(name, "_colsum");  /* gemm_name leaves room: its names stay far below 256 */
    LLVMValueRef existing = LLVMGetNamedFunction(cg->mod, name);
    if (existing) return existing;

    gen g = gemm_gen_init(cg);
    if (gemm_use_small(g.t, s)) return gemm_small(g, s, e, name);
    g.sum_a = sum_a;
    g.edge_rows = gemm_edge_rows(g.t, s);
    bool work = s->m > 0 && s->n > 0 && s->k > 0;
    gemm_split sp = gemm_split_for(g.t, s);
    bool parted = work && sp.parts > 1;
    /* parts that run B outer (part_plan_for) and do not claim run the nest one thread
     * runs (alone_nest) */
    bool parts_bo = parted && part_plan_for(g.t, s, sp).bo;
    assert(!parts_bo || alone_bo_mc(g.t, s) > 0);
    /* parts that claim (claims_for) run their nest on one thread too, as the part function
     * called once on the whole product: it claims every block itself */
    gemm_claim claim = parted ? claims_for(g.t, s, sp) : CLAIM_NONE;
    bool claims = claim != CLAIM_NONE;
    LLVMValueRef loops = work && !parts_bo && !claims ? gemm_loops_function(g, s->trans_a, s->trans_b, e, false)
                                                      : NULL;  /* own builder */
    LLVMValueRef loops_alone = claims ? NULL : alone_nest(g, s, e);
    LLVMValueRef zero_tile = e && !work && s->m > 0 && s->n > 0 ? epi_tile_function(g, e, false, false) : NULL;

    LLVMValueRef loops_parts = claims ? loops_nest(g, s->trans_a, s->trans_b, e, false, claim == CLAIM_M,
                                                   a_rows_for(g.t, s, claim == CLAIM_M), claim)
                               : parts_bo ? loops_alone : loops;
    LLVMValueRef part = parted ? part_function(g, s, e, name, loops_parts) : NULL;  /* own builder */
    /* void NAME(a, b, c, scratch, [bias], [p], [r]): the shape's constants passed to the
     * shared loop nest, zeros (or their epilogue) for k = 0, nothing for m·n = 0. */
    LLVMValueRef ops[7];
    gemm_function_begin(&g, name, e, ops);
    LLVMValueRef bias = ops[4], p = ops[5], r = ops[6], sums = sum_a ? last_param(&g) : NULL;
    if (sums && s->m > 0)  /* the packers add to them */
        LLVMBuildMemSet(g.b, sums, LLVMConstInt(LLVMInt8TypeInContext(g.ctx), 0, 0), k64(&g, s->m * 4), 4);
    if (part) {
        /* kiln_parallel_for(part, &{a, b, c, scratch[, bias, p, r][, next]}, parts). The
         * operands' nocapture still holds: the pool forgets them before kiln_parallel_for
         * returns. */
        unsigned n_ctx = e ? 7 : 4;
        LLVMValueRef vals[9] = {param(&g, 0), param(&g, 1), param(&g, 2), param(&g, 3), bias, p, r};
        if (claims) {  /* then the counters of claimed slivers and the rounds, zero */
            int64_t counters = claim_counters(g.t, s, sp);
            LLVMValueRef next = LLVMBuildAlloca(g.b, LLVMArrayType2(g.i64, (uint64_t)counters), "next");
            LLVMSetAlignment(next, 8);
            LLVMBuildMemSet(g.b, next, LLVMConstInt(LLVMInt8TypeInContext(g.ctx), 0, 0), k64(&g, counters * 8), 8);
            vals[n_ctx++] = next;
        }
        if (sums) vals[n_ctx++] = sums;
        LLVMTypeRef ctx_ty = LLVMArrayType2(g.ptr, n_ctx);
        LLVMValueRef ctx = LLVMBuildAlloca(g.b, ctx_ty, "ctx");
        for (unsigned i = 0; i < n_ctx; i++) {
            LLVMValueRef idx[] = {k64(&g, 0), k64(&g, i)};
            LLVMBuildStore(g.b, vals[i], LLVMBuildInBoundsGEP2(g.b, ctx_ty, ctx, idx, 2, ""));
        }
        /* kiln_parallel_for2(part, 0, part, parts, ctx): an empty first phase, then the
         * parts — the same work as kiln_parallel_for(part, ctx, parts). The first phase once
         * packed a shared operand (see "Threads", History); calling kiln_parallel_for
         * instead would change the emitted code, so it is left for a change of its own. */
        LLVMTypeRef pf_params[] = {g.ptr, g.i64, g.ptr, g.i64, g.ptr};
        LLVMTypeRef pf_ty = LLVMFunctionType(LLVMVoidTypeInContext(g.ctx), pf_params, 5, 0);
        LLVMValueRef pf = LLVMGetNamedFunction(g.mod, "kiln_parallel_for2");
        if (!pf) pf = LLVMAddFunction(g.mod, "kiln_parallel_for2", pf_ty);
        LLVMValueRef count = gemm_part_threads(&g, sp);
        LLVMBasicBlockRef after = loops_alone ? alone_branch(&g, s, e, loops_alone, gemm_part_threads(&g, sp)) : NULL;
        LLVMValueRef args[] = {part, k64(&g, 0), part, count, ctx};
        LLVMBuildCall2(g.b, pf_ty, pf, args, 5, "");
        if (after) LLVMBuildBr(g.b, after), LLVMPositionBuilderAtEnd(g.b, after);
    } else if (work) {
        gemm_blocks bl = blocks_for(g.t, s);
        LLVMValueRef args[22] = {param(&g, 0), param(&g, 1), param(&g, 2), param(&g, 3), k64(&g, s->m),
                                 k64(&g, s->n), k64(&g, s->k), k64(&g, s->lda), k64(&g, s->ldb), k64(&g, s->ldc),
                                 k64(&g, bl.mc), k64(&g, bl.kc), k64(&g, bl.nc)};
        if (e) {
            epi_args ea = gemm_shape_epi_args(&g, s, e, param(&g, 3), bias, p, r);
            epi_args_list(&ea, &args[13]);
        }
        unsigned n_args = e ? 21 : 13;
        if (sums) args[n_args++] = sums;
        call(&g, loops, args, n_args);
    } else if (zero_tile) {
        epi_args ea = gemm_shape_epi_args(&g, s, e, param(&g, 3), bias, p, r);
        emit_zero_epilogue(&g, s, zero_tile, param(&g, 2), &ea);
    } else if (s->m > 0 && s->n > 0) {
        emit_zero_c(&g, s, param(&g, 2));
    }
    return function_end(&g);
}
