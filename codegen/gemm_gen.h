/* gemm_gen.h — private to the GEMM's files (gemm.c, gemm_epilogue.c, gemm_group.c,
 * gemm_pack.c, gemm_small.c, gemm_tile.c): the GEMM emitter's state, blocking and the small IR builders they share
 * (static inline: each is a line or two), and the functions each calls in another. See gemm.c's comment. */
#ifndef KILN_GEMM_GEN_H
#define KILN_GEMM_GEN_H

#include <assert.h>
#include <inttypes.h>
#include <string.h>
#include <stdio.h> /* snprintf: part_function_begin */

#include <llvm-c/DebugInfo.h> /* LLVMTemporaryMDNode: loop hints */

#include "lower.h" /* cg_fadd, cg_fmul, cg_intrinsic1: the epilogue's arithmetic */

enum { GEMM_KC = 384, GEMM_MC = 960, GEMM_NC = 320 };

/* The register tile for a vector width. */
typedef struct gemm_tile {
    int w;       /* floats per vector */
    int mr, nr;  /* rows of A broadcast per step × columns of B (= 2 vectors) */
} gemm_tile;

enum { MR_MAX = 12, NV = 2, NR_MAX = 32 };  /* NV: vectors per tile row */

static inline gemm_tile tile_for(const kiln_target *t) {
    if (t->vector_floats >= 16) return (gemm_tile){16, 12, 32};
    if (t->vector_floats == 8) return (gemm_tile){8, 6, 16};
    return (gemm_tile){4, 6, 8};
}

static inline int64_t round_up(int64_t x, int64_t q) { return (x + q - 1) / q * q; }

/* The block sizes of one shape: as few blocks as the caps allow, of equal size rounded up
 * to a multiple of q (so 400 = 208 + 192, not 384 + 16). Every block but the last is full. */
typedef struct gemm_blocks {
    int64_t mc, kc, nc;
} gemm_blocks;

static inline int64_t balanced(int64_t len, int64_t cap, int64_t q) {
    int64_t count = (len + cap - 1) / cap;
    return round_up((len + count - 1) / count, q);
}

/* mc and nc are rounded to whole tiles (packing pads them); kc to whole vectors, which
 * keeps the transposing packer off its scalar tail, but never past k. */
static inline gemm_blocks blocks_for(gemm_tile t, const kiln_gemm_shape *s) {
    int64_t kc = balanced(s->k, GEMM_KC, t.w);
    return (gemm_blocks){balanced(s->m, GEMM_MC, t.mr), kc < s->k ? kc : s->k, balanced(s->n, GEMM_NC, t.nr)};
}

/* How a product is split across threads (see gemm.c's "Threads"): `parts` pieces of the
 * larger of m and n (in tiles), `lanes` rows or columns each (the last may be shorter). */
typedef struct gemm_split {
    bool on_m;
    int64_t parts, lanes;
} gemm_split;

enum { GEMM_PARALLEL_MIN = 1 << 18 };  /* m·n·k: below this a hand-off costs more than it saves */
/* On the small-m path (matrix–vector work, bound by reading B) a hand-off pays sooner:
 * 1×384×384 reads 590 KB of B, tens of microseconds, against a few for the hand-off. */
enum { GEMM_SMALL_PARALLEL_MIN = 1 << 16 };

/* gemm.c: how a product is split across threads; whether the small-m path takes it
 * (gemm_small.c). */
gemm_split gemm_split_for(gemm_tile t, const kiln_gemm_shape *s);
bool gemm_use_small(gemm_tile t, const kiln_gemm_shape *s);

/* ---- emission state and small builders ------------------------------------------- */

typedef struct gen {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    const kiln_target *target;
    gemm_tile t;
    /* A tile of fewer rows than the sliver it reads (edge_gen): t.mr rows computed,
     * sliver_mr the packed sliver's row count (its stride per depth q); 0: t.mr. */
    int sliver_mr;
    /* Rows of the last A sliver when the loop nests should call a shorter tile for it
     * (gemm_edge_rows), else 0. */
    int edge_rows;
    /* The product also sums the lanes of op(A) along k (a bias gradient riding along,
     * kiln_cg_gemm_sum): the loop nests take a `sums` pointer and pack A with
     * pack_copy_function's summing form. */
    bool sum_a;
    LLVMBuilderRef b;   /* our own builder per function: the caller's cg->b keeps its place */
    LLVMValueRef fn;    /* the function being emitted */
    const kiln_cg *cg;  /* the caller's module, for the cg_* helpers of the epilogue */
    LLVMTypeRef i1, i32, i64, f32, f64, ptr, vf, vd, vmask;  /* vf = <W x float>, vd = <W x double> */
    LLVMValueRef iota;                              /* <W x i32> 0, 1, …, W-1 */
    LLVMTypeRef fma_ty, mload_ty, mstore_ty, prefetch_ty;
    LLVMValueRef fma, mload, mstore, prefetch;      /* llvm.fma, masked.load/.store, prefetch */
    LLVMMetadataRef loop_hints[2];                  /* no unrolling, no vectorising */
    unsigned md_loop;                               /* kind id of !llvm.loop */
} gen;

static inline LLVMValueRef k64(gen *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }
static inline LLVMValueRef add(gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWAdd(g->b, x, y, ""); }
static inline LLVMValueRef sub(gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWSub(g->b, x, y, ""); }
static inline LLVMValueRef mul(gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWMul(g->b, x, y, ""); }
static inline LLVMValueRef lt(gen *g, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildICmp(g->b, LLVMIntSLT, x, y, ""); }
static inline LLVMValueRef smin(gen *g, LLVMValueRef x, LLVMValueRef y) {
    return LLVMBuildSelect(g->b, lt(g, x, y), x, y, "");
}

/* &base[idx] for an element that exists. */
static inline LLVMValueRef at(gen *g, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(g->b, g->f32, base, &idx, 1, "");
}
/* &base[idx] that may point past the array: only for masked accesses and prefetches,
 * which do not touch memory there (so no inbounds promise). */
static inline LLVMValueRef at_any(gen *g, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildGEP2(g->b, g->f32, base, &idx, 1, "");
}

static inline LLVMValueRef load_aligned(gen *g, LLVMTypeRef ty, LLVMValueRef p, unsigned align) {
    LLVMValueRef v = LLVMBuildLoad2(g->b, ty, p, "");
    LLVMSetAlignment(v, align);
    return v;
}
static inline void store_aligned(gen *g, LLVMValueRef v, LLVMValueRef p, unsigned align) {
    LLVMSetAlignment(LLVMBuildStore(g->b, v, p), align);
}

static inline LLVMValueRef splat(gen *g, LLVMValueRef x, LLVMTypeRef vty) {
    LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(vty), x, LLVMConstInt(g->i32, 0, 0), "");
    return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(vty), LLVMConstNull(LLVMVectorType(g->i32, (unsigned)g->t.w)),
                                  "");
}

/* <W x i1>: lane < count, for any i64 count (negative → none, ≥ W → all). */
static inline LLVMValueRef lanes_below(gen *g, LLVMValueRef count) {
    LLVMValueRef n = LLVMBuildTrunc(g->b, smin(g, count, k64(g, g->t.w)), g->i32, "");
    return LLVMBuildICmp(g->b, LLVMIntSLT, g->iota, splat(g, n, LLVMVectorType(g->i32, (unsigned)g->t.w)), "");
}

static inline LLVMValueRef masked_load(gen *g, LLVMValueRef p, LLVMValueRef mask) {
    LLVMValueRef args[] = {p, LLVMConstInt(g->i32, 4, 0), mask, LLVMConstNull(g->vf)};
    return LLVMBuildCall2(g->b, g->mload_ty, g->mload, args, 4, "");
}
static inline void masked_store(gen *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef mask) {
    LLVMValueRef args[] = {v, p, LLVMConstInt(g->i32, 4, 0), mask};
    LLVMBuildCall2(g->b, g->mstore_ty, g->mstore, args, 4, "");
}

/* Vector `off` of a tile's row at base: a plain access, or one under `mask` (see
 * write_tile: a masked tile clamps the rows past its end to a valid one, all lanes off). */
static inline LLVMValueRef row_load(gen *g, LLVMValueRef base, LLVMValueRef off, LLVMValueRef mask) {
    return mask ? masked_load(g, at_any(g, base, off), mask) : load_aligned(g, g->vf, at(g, base, off), 4);
}
static inline void row_store(gen *g, LLVMValueRef x, LLVMValueRef base, LLVMValueRef off, LLVMValueRef mask) {
    if (mask) masked_store(g, x, at_any(g, base, off), mask);
    else store_aligned(g, x, at(g, base, off), 4);
}

/* llvm.prefetch(p, write, high locality, data cache) */
static inline void prefetch_for_write(gen *g, LLVMValueRef p) {
    LLVMValueRef args[] = {p, LLVMConstInt(g->i32, 1, 0), LLVMConstInt(g->i32, 3, 0), LLVMConstInt(g->i32, 1, 0)};
    LLVMBuildCall2(g->b, g->prefetch_ty, g->prefetch, args, 4, "");
}

/* llvm.prefetch(p, read, high locality, data cache) */
static inline void prefetch_for_read(gen *g, LLVMValueRef p) {
    LLVMValueRef args[] = {p, LLVMConstInt(g->i32, 0, 0), LLVMConstInt(g->i32, 3, 0), LLVMConstInt(g->i32, 1, 0)};
    LLVMBuildCall2(g->b, g->prefetch_ty, g->prefetch, args, 4, "");
}
static inline LLVMValueRef call(gen *g, LLVMValueRef fn, LLVMValueRef *args, unsigned n) {
    return LLVMBuildCall2(g->b, LLVMGlobalGetValueType(fn), fn, args, n, "");
}

static inline LLVMBasicBlockRef block(gen *g, const char *name) {
    return LLVMAppendBasicBlockInContext(g->ctx, g->fn, name);
}

/* if (cond) goto then_; else goto else_; — leaves the builder in then_. */
static inline void branch(gen *g, LLVMValueRef cond, LLVMBasicBlockRef then_, LLVMBasicBlockRef else_) {
    LLVMBuildCondBr(g->b, cond, then_, else_);
    LLVMPositionBuilderAtEnd(g->b, then_);
}

/* for (iv = from; iv < to; iv += step): loop_begin leaves the builder in the body,
 * loop_end closes it from wherever the body ended and continues after the loop. */
typedef struct loop {
    LLVMValueRef iv;
    int64_t step;
    LLVMValueRef step_value;  /* set after loop_begin for a step known only at run time */
    LLVMBasicBlockRef head, exit;
} loop;

static inline loop loop_begin(gen *g, LLVMValueRef from, LLVMValueRef to, int64_t step, const char *name) {
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
    loop l = {.step = step, .head = block(g, name)};
    LLVMBasicBlockRef body = block(g, name);
    l.exit = block(g, name);
    LLVMBuildBr(g->b, l.head);
    LLVMPositionBuilderAtEnd(g->b, l.head);
    l.iv = LLVMBuildPhi(g->b, g->i64, name);
    LLVMAddIncoming(l.iv, &from, &pre, 1);
    LLVMBuildCondBr(g->b, lt(g, l.iv, to), body, l.exit);
    LLVMPositionBuilderAtEnd(g->b, body);
    return l;
}

/* Marks the back edge `br` of a loop "do not unroll, do not vectorise". The loops are
 * written the way they should run; without the hints O3 fully unrolls the packing loops
 * and peels the k blocks, which triples compile time for no speed. A loop id is a node
 * whose first operand is itself, hence the temporary. */
static inline void hint_loop(gen *g, LLVMValueRef br) {
    LLVMMetadataRef self = LLVMTemporaryMDNode(g->ctx, NULL, 0);
    LLVMMetadataRef ops[] = {self, g->loop_hints[0], g->loop_hints[1]};
    LLVMMetadataRef id = LLVMMDNodeInContext2(g->ctx, ops, 3);
    LLVMMetadataReplaceAllUsesWith(self, id);  /* also frees the temporary */
    LLVMSetMetadata(br, g->md_loop, LLVMMetadataAsValue(g->ctx, id));
}

static inline void loop_end(gen *g, loop *l) {
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    LLVMValueRef next = add(g, l->iv, l->step_value ? l->step_value : k64(g, l->step));
    hint_loop(g, LLVMBuildBr(g->b, l->head));
    LLVMAddIncoming(l->iv, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(g->b, l->exit);
}

/* ---- functions -------------------------------------------------------------------- */

static inline void add_attr(gen *g, LLVMAttributeIndex idx, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(g->fn, idx, LLVMCreateEnumAttribute(g->ctx, kind, 0));
}

/* Starts the internal function `void name(params…)` in g (with a fresh builder at its
 * entry), or returns false when the module already has it (*existing set). Pointer
 * parameters are noalias: no two operands of a GEMM overlap. */
static inline bool function_begin(gen *g, const char *name, unsigned n, const LLVMTypeRef *params,
                           const char *const *names, LLVMValueRef *existing) {
    *existing = LLVMGetNamedFunction(g->mod, name);
    if (*existing) return false;
    g->fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), (LLVMTypeRef *)params, n, 0));
    LLVMSetLinkage(g->fn, LLVMInternalLinkage);
    add_attr(g, LLVMAttributeFunctionIndex, "nounwind");
    add_attr(g, LLVMAttributeFunctionIndex, "noinline");  /* units compiled once, shared */
    for (unsigned i = 0; i < n; i++) {
        LLVMSetValueName2(LLVMGetParam(g->fn, i), names[i], strlen(names[i]));
        if (params[i] != g->ptr) continue;
        add_attr(g, i + 1, "noalias");
        add_attr(g, i + 1, "nocapture");
    }
    kiln_target_tag_function(g->target, g->fn);
    g->b = LLVMCreateBuilderInContext(g->ctx);
    LLVMPositionBuilderAtEnd(g->b, block(g, "entry"));
    return true;
}

/* Starts a product's part function, `void GEMM.part(ptr ctx, i64 begin, i64 end)`: the
 * pool runs it on parts [begin, end) (kiln_parallel_for2). As function_begin. */
static inline bool part_function_begin(gen *g, const char *gemm_name, LLVMValueRef *existing) {
    char name[320];
    snprintf(name, sizeof name, "%s.part", gemm_name);
    LLVMTypeRef params[] = {g->ptr, g->i64, g->i64};
    static const char *const names[] = {"ctx", "begin", "end"};
    return function_begin(g, name, 3, params, names, existing);
}

static inline LLVMValueRef function_end(gen *g) {
    LLVMBuildRetVoid(g->b);
    LLVMDisposeBuilder(g->b);
    g->b = NULL;
    return g->fn;
}

static inline LLVMValueRef param(gen *g, unsigned i) { return LLVMGetParam(g->fn, i); }
static inline LLVMValueRef last_param(gen *g) { return LLVMGetParam(g->fn, LLVMCountParams(g->fn) - 1); }

/* ---- shared with gemm_small.c --------------------------------------------------- */

/* Where the epilogue of one tile reads and writes: each pointer at the tile's first
 * element (NULL when its step is absent). */
typedef struct epi_ptrs {
    LLVMValueRef c, ldc, bias, p, ldp, r, ldr, scale;  /* scale: a double */
} epi_ptrs;

/* gemm_epilogue.c: an epilogue with a scale other than 1; one that changes nothing (the
 * plain GEMM); the "_e…" part of function names; the last write of a tile with the
 * epilogue's steps, unrolled, or through a stage of MR×NR floats row by row when the
 * activation is long (gemm_epi_staged). */
bool gemm_has_scale(const kiln_gemm_epilogue *e);
bool gemm_epi_trivial(const kiln_gemm_epilogue *e);
void gemm_epi_code(const kiln_gemm_epilogue *e, char *buf, size_t size);
void gemm_write_epilogue(gen *g, const kiln_gemm_epilogue *e, LLVMValueRef sum[][NV], const epi_ptrs *at_,
                         LLVMValueRef rows, LLVMValueRef cols, bool masked);
bool gemm_epi_staged(const kiln_gemm_epilogue *e);
void gemm_write_epilogue_staged(gen *g, const kiln_gemm_epilogue *e, LLVMValueRef sum[][NV], LLVMValueRef stage,
                                const epi_ptrs *at_, LLVMValueRef rows, LLVMValueRef cols, bool masked);

/* gemm.c: starts a product's function void name(const float *a, const float *b,
 * float *c, float *scratch, [bias], [pre_out], [residual]) — the epilogue steps e has, in
 * that order; a, b, bias and residual readonly — and sets ops to a, b, c, scratch, bias,
 * pre_out, residual (NULL constants for the absent ones). As function_begin, for a name
 * the module does not have yet. */
void gemm_function_begin(gen *g, const char *name, const kiln_gemm_epilogue *e, LLVMValueRef ops[7]);
/* gemm.c: a kiln_parallel_for call. */
void gemm_parallel_for_call(gen *g, LLVMValueRef part, LLVMValueRef ctx, int64_t parts);

/* ---- shared with gemm_group.c (sibling products sharing A) ------------------------ */

/* Floats of a thread's scratch slot (gemm.c's "Scratch"): the packed A block, the packed
 * B block, and the slot, Ap then Bp, rounded so every slot stays aligned. */
static inline int64_t packed_a_floats(gemm_blocks bl) { return round_up(bl.mc * bl.kc, 16); }
static inline int64_t packed_b_floats(gemm_blocks bl) { return bl.nc * bl.kc; }
static inline int64_t slot_floats(gemm_blocks bl) { return round_up(packed_a_floats(bl) + packed_b_floats(bl), 16); }

/* The epilogue's operands as the loop nest passes them on: each matrix at its first
 * element, x the partial sums (with accumulate over several k blocks, else NULL). */
typedef struct epi_args {
    LLVMValueRef x, ldx, bias, p, ldp, r, ldr, scale;
} epi_args;

/* The loop nest's last eight arguments (gemm_loops_function). */
static inline void epi_args_list(const epi_args *ea, LLVMValueRef *out) {
    LLVMValueRef list[] = {ea->x, ea->ldx, ea->bias, ea->p, ea->ldp, ea->r, ea->ldr, ea->scale};
    memcpy(out, list, sizeof list);
}

/* &base[i·ld + j], or NULL for an operand that is not there */
static inline LLVMValueRef at_ij(gen *g, LLVMValueRef base, LLVMValueRef i, LLVMValueRef j, LLVMValueRef ld) {
    if (LLVMIsNull(base)) return base;
    return at(g, base, add(g, mul(g, i, ld), j));
}

/* The first tile of part i of `count` equal parts (count a run-time value): i·tiles/count. */
static inline LLVMValueRef even_first_tile(gen *g, LLVMValueRef i, LLVMValueRef count, int64_t tiles) {
    return LLVMBuildSDiv(g->b, mul(g, i, k64(g, tiles)), count, "");
}

/* gemm.c: the emitter state for cg's module; a product's function name (prefix, shape,
 * epilogue); the loop nest for one combination of transposes, with shared_a the "_sa" nest
 * reading an A packed beforehand; the threads a product's parts are laid out for at run
 * time (the pool's, at most sp.parts); the shape's epilogue operands as values of the
 * function being built. */
gen gemm_gen_init(kiln_cg *cg);

/* The last A sliver of a product of m rows holds m mod MR of them, and the whole tile's
 * fmas compute the rest as rows of zeros. The loop nests of a shape whose remainder
 * rounds up to 4 or 8 rows below MR call, for that sliver, a tile of 4 or 8 rows reading
 * the same packed sliver (edge_gen): the same fmas for its real rows, so the same bits.
 * Returns those rows, or 0 — also when they save under 1/200 of the fmas, not worth a
 * function more to compile: m = 256 (22 tiles of 12 rows for 21.3) saves 3 %, m = 16 or
 * 64 (prefill buckets) a third or 11 %, 1024 and 512 0.8 %; 2048 (0.2 %) keeps the whole
 * tile, and so does every GEMM of char_gpt's training step. The short tile is built
 * small (one k loop, masked writes only: emit_k_loop_split, write_tile_4), as it runs
 * once per sweep of B. KILN_GEMM_TUNE=edge=0 turns it off (gemm.c). */
int gemm_edge_rows(gemm_tile t, const kiln_gemm_shape *s);

/* The generator of a loop nest's short tile: g.edge_rows rows of g's slivers. */
static inline gen edge_gen(gen g) {
    gen e = g;
    e.sliver_mr = g.t.mr;
    e.t.mr = g.edge_rows;
    e.edge_rows = 0;
    return e;
}
void gemm_name(const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, const char *prefix, char *name, size_t size);
LLVMValueRef gemm_loops_function(gen g, bool trans_a, bool trans_b, const kiln_gemm_epilogue *e, bool shared_a);
LLVMValueRef gemm_part_threads(gen *g, gemm_split sp);
epi_args gemm_shape_epi_args(gen *g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, LLVMValueRef scratch,
                             LLVMValueRef bias, LLVMValueRef p, LLVMValueRef r);

/* ---- packing (gemm_pack.c) ---------------------------------------------------------- */

/* One operand's packing: lane x at depth q is src[x·sw + q·sk] (lanes are rows of op(A)
 * or columns of op(B)); copied when the lanes are contiguous (sw = 1, sk = ld), else
 * transposed (sw = ld, sk = 1). */
typedef struct operand {
    LLVMValueRef src, ld, lim;  /* lim: m or n */
    bool lanes_contiguous;
    int width;                  /* MR or NR */
    LLVMValueRef packer;
    /* with sum_a: the copier that also adds each lane into sums[lane] (pack_copy_function
     * with sum), and the sums of lane 0 of the whole operand, or a null pointer at run
     * time when this call of the nest leaves the sums to another */
    LLVMValueRef sum_packer, sums;
} operand;

/* lanes contiguous: a copy; with sum, the copy also adds every lane's values, depth by
 * depth, into a float per lane (sums, its 7th argument) */
LLVMValueRef pack_copy_function(gen g, int width, bool sum);
LLVMValueRef pack_transpose_function(gen g, int width);  /* k contiguous: a transpose */
/* Packs the slivers of one block: lanes [w0, w0 + nw), depths [p, p + kc), into dst. */
void emit_pack(gen *g, const operand *o, LLVMValueRef w0, LLVMValueRef nw, LLVMValueRef p, LLVMValueRef kc,
               LLVMValueRef dst);

/* gemm_tile.c: the micro-kernels (gemm.c's comment, "Micro-kernel"). tile_function:
 * the plain tile; epi_tile_function: the tile with epilogue e; pack_b: it also packs the
 * B sliver it reads from op(B) (_pb); a_rows: it reads op(A) from A's rows (_ab). */
LLVMValueRef tile_function(gen g, bool pack_b, bool a_rows);
LLVMValueRef epi_tile_function(gen g, const kiln_gemm_epilogue *e, bool pack_b, bool a_rows);

/* gemm_small.c: the shape's function `name` on the small-m path (gemm_use_small). */
LLVMValueRef gemm_small(gen g, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, const char *name);

#endif
