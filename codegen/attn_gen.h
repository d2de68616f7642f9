/* attn_gen.h — private to lower_attention.c, lower_attention_decode.c and
 * lower_attention_backward.c: the attention emitter's state (geometry, blocks, scratch
 * slots, the per-kernel `ak`), the small IR builders the three files use (static inline:
 * a line or a few each), and the functions of lower_attention.c the other two call (the
 * score and update tiles, the online softmax step, packing, rope, threads). See
 * lower_attention.c's comment for the design. */
#ifndef KILN_ATTN_GEN_H
#define KILN_ATTN_GEN_H

#include <math.h> /* INFINITY */

#include "kiln/runtime.h" /* KILN_MAX_THREADS */
#include "lower.h"

/* The exponential of a vector: cg_intrinsic1 emits vm_exp (codegen/vmath.h), no libm call. */
static inline LLVMValueRef att_exp(kiln_cg *cg, LLVMValueRef x) { return cg_intrinsic1(cg, "llvm.exp", x); }

enum { NQ = 2 }; /* query vectors per block */

/* ---- geometry ---------------------------------------------------------------------------- */

typedef struct attn_blocks {
    int w;      /* floats per vector */
    int bq, bk; /* queries (NQ vectors) and keys per block */
    int rj;     /* key rows per score tile: rj × NQ accumulators */
    int acc;    /* accumulators an update tile may use */
    int nvmax;  /* vectors per update-tile row */
} attn_blocks;

static inline attn_blocks blocks_for(const kiln_target *t)
{
    int w = t->vector_floats >= 16 ? 16 : t->vector_floats >= 8 ? 8 : 4;
    bool wide = w >= 16; /* 32 vector registers (AVX-512) rather than 16 */
    return (attn_blocks){w, NQ * w, NQ * w, wide ? 8 : 4, wide ? 24 : 12, wide ? 4 : 2};
}

/* One attention (or its gradient): shapes, attributes, every operand's strides. */
typedef struct attn_geom {
    int r, nb;                       /* rank of q; batch dims (…, H) = r − 2 */
    int64_t bdims[KILN_MAX_RANK];
    int64_t n_bh, T, S, dh, dv;
    double scale;
    bool causal, has_mask, has_bias;
    bool alibi;                      /* the bias is a slope per head, times |i − j| */
    bool relative;                   /* the bias is T5's (NB, H) bucket embedding */
    int64_t nbuckets, rel_len;       /* relative: NB, and L = T + S − 1 relative positions */
    bool has_stats;                  /* backward: o and lse are inputs (ATTN_O, ATTN_LSE) */
    /* attention dropout in a training step (attn_layout.train_dropout): drop probability,
     * mask stream, compile-time part of the run seed */
    bool dropping;
    double drop;
    uint32_t stream;
    uint64_t drop_seed;
    attn_fwd_want want;              /* forward: the results written */
    bool rope_q, rope_k;             /* q / k rotated on load (attn_layout.rope_q/rope_k) */
    bool unrope_q, unrope_k;         /* dq / dk turned back on store (attn_layout.unrope_q/unrope_k) */
    kiln_dtype mask_dt;
    int64_t bstride[KILN_MAX_RANK];  /* the bias's broadcast strides over (…, H, T, S) */
    /* element strides of every dim but the last (contiguous) one: (batch…, head, row);
     * the mask's are its batch dims only (it has no head dim) */
    int64_t st[ATTN_N_OPERANDS][KILN_MAX_RANK];
} attn_geom;

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t parts_for(int64_t items) { return items < KILN_MAX_THREADS ? items : KILN_MAX_THREADS; }

/* Scratch of one part, in floats, and where each region starts: the packed block (Qt,
 * and dOt when dS is needed), the score block St (and dP/dS), the forward's O
 * accumulator and per-query row (α, then 1/l), the backward's dummy row, and the
 * forward output's block transposed (Ot) when the backward takes D from it. */
typedef struct attn_slot {
    int64_t qt, dot, st, dpt, oacc, rowbuf, dummy, rel, drel, qr, kr, ot, floats;
} attn_slot;

/* ---- the emitter's state --------------------------------------------------------------------- */

typedef struct ak {
    kiln_cg *cg;
    const attn_geom *G;
    attn_blocks B;
    LLVMTypeRef vt, vt_i32;
    /* operands: the kernel's pointers (in a part function: its own copies) */
    LLVMValueRef q, k, v, mask, bias, g, out, dq, dk, dv, ds, o, lse;
    /* the current item's element offsets */
    LLVMValueRef off[ATTN_N_OPERANDS], bias_off;
    /* the part's scratch regions */
    LLVMValueRef Qt, dOt, St, dPt, Oacc, rowbuf, dummy, Rel, dRel, Qr, Kr, Ot;
    LLVMValueRef qcos, qsin, kcos, ksin; /* rope tables (L, dh) */
    LLVMValueRef kr_item, kr_done;   /* forward, rope on k: Kr's item, and its rows rotated so far */
    /* the current query block: first query, valid queries, lanes that are real queries */
    LLVMValueRef i0, nqv, lane_ok[NQ], bias_lanes[NQ];
    LLVMValueRef slope, qpos[NQ]; /* alibi: the head's slope, the lanes' query positions */
    /* dropout: the per-node hash key (part-wide), the current item, and each lane's
     * weight index of key 0, ((l·T) + i)·S */
    LLVMValueRef drop_key, item, drop_row[NQ];
    LLVMValueRef step;               /* the step counter (dropout only) */
} ak;

static inline LLVMValueRef add(ak *a, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWAdd(a->cg->b, x, y, ""); }
static inline LLVMValueRef sub(ak *a, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildNSWSub(a->cg->b, x, y, ""); }
static inline LLVMValueRef mulc(ak *a, LLVMValueRef x, int64_t c) { return LLVMBuildNSWMul(a->cg->b, x, cg_i64(a->cg, c), ""); }
static inline LLVMValueRef addc(ak *a, LLVMValueRef x, int64_t c) { return add(a, x, cg_i64(a->cg, c)); }
static inline LLVMValueRef imin(ak *a, LLVMValueRef x, LLVMValueRef y)
{
    return LLVMBuildSelect(a->cg->b, LLVMBuildICmp(a->cg->b, LLVMIntSLT, x, y, ""), x, y, "");
}

/* Tiles of h rows that cover n rows: ⌈n / h⌉. */
static inline LLVMValueRef groups(ak *a, LLVMValueRef n, int h)
{
    return LLVMBuildUDiv(a->cg->b, addc(a, n, h - 1), cg_i64(a->cg, h), "");
}

static inline LLVMValueRef splat(ak *a, LLVMValueRef x)
{
    kiln_cg *cg = a->cg;
    LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(x), (unsigned)a->B.w);
    LLVMValueRef p = LLVMGetPoison(vt);
    LLVMValueRef one = LLVMBuildInsertElement(cg->b, p, x, cg_i32(cg, 0), "");
    return LLVMBuildShuffleVector(cg->b, one, p, LLVMConstNull(a->vt_i32), "");
}
static inline LLVMValueRef vconst(ak *a, double x) { return splat(a, cg_f32(a->cg, x)); }
static inline LLVMValueRef vneg_inf(ak *a) { return splat(a, LLVMConstReal(a->cg->t_f32, -INFINITY)); }

/* <first, first+1, …> as i32 or i64 lanes */
static inline LLVMValueRef iota(ak *a, LLVMTypeRef elem, int64_t first)
{
    LLVMValueRef lanes[16];
    for (int i = 0; i < a->B.w; i++) lanes[i] = LLVMConstInt(elem, (unsigned long long)(first + i), 1);
    return LLVMConstVector(lanes, (unsigned)a->B.w);
}

/* the first n lanes set */
static inline LLVMValueRef lane_mask(ak *a, int n)
{
    LLVMValueRef lanes[16];
    for (int i = 0; i < a->B.w; i++) lanes[i] = LLVMConstInt(a->cg->t_i1, i < n, 0);
    return LLVMConstVector(lanes, (unsigned)a->B.w);
}

static inline LLVMValueRef fma_v(ak *a, LLVMValueRef x, LLVMValueRef y, LLVMValueRef z)
{
    LLVMValueRef args[3] = {x, y, z};
    return cg_intrinsic(a->cg, "llvm.fma", &a->vt, 1, args, 3);
}
static inline LLVMValueRef vmax(ak *a, LLVMValueRef x, LLVMValueRef y) { return cg_intrinsic2(a->cg, "llvm.maximum", x, y); }

/* W floats at element `off` of ptr; only the first `n` lanes (n < W: a masked load that
 * touches nothing past them, the rest 0). */
static inline LLVMValueRef vload(ak *a, LLVMValueRef ptr, LLVMValueRef off, int n)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef p = cg_gep(cg, KILN_F32, ptr, off);
    if (n >= a->B.w) {
        LLVMValueRef l = LLVMBuildLoad2(cg->b, a->vt, p, "");
        LLVMSetAlignment(l, KILN_ELEM_BYTES);
        return l;
    }
    LLVMTypeRef tys[2] = {a->vt, cg->t_ptr};
    LLVMValueRef args[4] = {p, cg_i32(cg, KILN_ELEM_BYTES), lane_mask(a, n), LLVMConstNull(a->vt)};
    return cg_intrinsic(cg, "llvm.masked.load", tys, 2, args, 4);
}

static inline void vstore(ak *a, LLVMValueRef ptr, LLVMValueRef off, LLVMValueRef x, int n)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef p = cg_gep(cg, KILN_F32, ptr, off);
    if (n >= a->B.w) {
        LLVMSetAlignment(LLVMBuildStore(cg->b, x, p), KILN_ELEM_BYTES);
        return;
    }
    LLVMTypeRef tys[2] = {a->vt, cg->t_ptr};
    LLVMValueRef args[4] = {x, p, cg_i32(cg, KILN_ELEM_BYTES), lane_mask(a, n)};
    cg_intrinsic(cg, "llvm.masked.store", tys, 2, args, 4);
}

/* Lanes where `ok`: ptr[idx lane], else 0 (i64 lane indices). */
static inline LLVMValueRef vgather(ak *a, LLVMValueRef ptr, LLVMValueRef idx, LLVMValueRef ok)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef ptrs = LLVMBuildInBoundsGEP2(cg->b, cg->t_f32, ptr, &idx, 1, "");
    LLVMTypeRef tys[2] = {a->vt, LLVMVectorType(cg->t_ptr, (unsigned)a->B.w)};
    LLVMValueRef args[4] = {ptrs, cg_i32(cg, KILN_ELEM_BYTES), ok, LLVMConstNull(a->vt)};
    return cg_intrinsic(cg, "llvm.masked.gather", tys, 2, args, 4);
}

/* A vector-typed local (SROA keeps it in a register). */
static inline LLVMValueRef vlocal(ak *a, const char *name, LLVMValueRef init)
{
    LLVMValueRef slot = cg_local(a->cg, a->vt, name);
    LLVMBuildStore(a->cg->b, init, slot);
    return slot;
}
static inline LLVMValueRef ld(ak *a, LLVMValueRef slot) { return LLVMBuildLoad2(a->cg->b, a->vt, slot, ""); }
static inline void st(ak *a, LLVMValueRef slot, LLVMValueRef x) { LLVMBuildStore(a->cg->b, x, slot); }

/* Lanes of the last vector of a row of E floats chunked by vectors: W or E mod W. */
static inline int lanes_of(const ak *a, int64_t E, int64_t e) { return E - e >= a->B.w ? a->B.w : (int)(E - e); }

/* The row stride of operand op (its second-to-last dim). */
static inline int64_t row_stride(const ak *a, int op) { return a->G->st[op][a->G->nb]; }

/* ---- the update tile (update) ------------------------------------------------------------- */

/* C[r][e] (+)= Σ_{κ < nk} a(r, κ)·B[κ][e] for the rows r < nrows of C and its E
 * columns, in whole tiles (`rows`, a multiple of every tile height, bounds them):
 *   C row r at Cp + coff + r·cs; with `dummy_tail`, the last tile's rows r ≥ nrows go to
 *   the dummy row (C has only nrows rows), else C has `rows` rows and they are computed;
 *   a(r, κ) = A[r·ar + κ·ak] (a scratch block); B row κ at Bp + boff + κ·bs;
 *   row_scale: C row r is multiplied by row_scale[r] before it accumulates. */
typedef struct upd {
    LLVMValueRef Cp, coff;
    int64_t cs, rows;
    LLVMValueRef nrows;
    bool dummy_tail;
    LLVMValueRef A;
    int64_t ar, ak;
    LLVMValueRef Bp, boff;
    int64_t bs;
    LLVMValueRef nk;
    int64_t E;
    LLVMValueRef row_scale;
} upd;

/* ---- backward and threads ----------------------------------------------------------------- */

/* The gradients a backward kernel writes. */
typedef struct grad_want {
    bool dq, dk, dv, ds;
} grad_want;

static inline bool want_ds(grad_want gw) { return gw.dq || gw.dk || gw.ds; }

/* The kernel's pointers, in the order they travel through cg_parallel_for. */
enum { V_Q, V_K, V_V, V_MASK, V_BIAS, V_G, V_OUT, V_DQ, V_DK, V_DV, V_DS, V_O, V_LSE, V_QCOS, V_QSIN, V_KCOS, V_KSIN,
       V_STEP, V_SCRATCH, V_COUNT };

typedef struct par {
    const attn_geom *G;
    attn_blocks B;
    attn_slot slot;
    bool backward;
    grad_want gw;
    int64_t items, parts;
} par;

/* ---- lower_attention.c, used by lower_attention_backward.c and lower_attention_decode.c -- */

void geom_init(attn_geom *G, const kiln_graph *g, const kiln_node *n, const attn_layout *lay);
attn_slot slot_layout(const attn_geom *G, attn_blocks B, bool backward, bool need_ds, bool want_dscores);
void item_offsets(ak *a, LLVMValueRef l);
void q_block_begin(ak *a, LLVMValueRef qb);
void pack_transposed(ak *a, LLVMValueRef dst, LLVMValueRef src, int op, int64_t D);
void rotate_rows(ak *a, LLVMValueRef dst, LLVMValueRef src, int op, LLVMValueRef cs, LLVMValueRef sn,
                 LLVMValueRef p0, LLVMValueRef n);
void unrotate_rows(ak *a, LLVMValueRef ptr, int op, LLVMValueRef cs, LLVMValueRef sn, LLVMValueRef p0,
                   LLVMValueRef n);
void pack_queries(ak *a);
void rotate_keys_upto(ak *a, LLVMValueRef need);
void zero_rows(ak *a, LLVMValueRef ptr, LLVMValueRef off, LLVMValueRef n, int64_t rs, int64_t E);
void rel_table(ak *a);
LLVMValueRef drop_scale(ak *a, LLVMValueRef j, int v);
void score_block(ak *a, LLVMValueRef X, int xop, int64_t D, LLVMValueRef Yt, LLVMValueRef out,
                 LLVMValueRef j0, LLVMValueRef nk, bool finish);
void block_mask_max(ak *a, LLVMValueRef j0, LLVMValueRef nk, LLVMValueRef *bmax);
void update(ak *a, const upd *u);
LLVMValueRef safe_max(ak *a, LLVMValueRef m);
void online_step(ak *a, LLVMValueRef j0, LLVMValueRef nk, const LLVMValueRef *bmax, LLVMValueRef *m,
                 LLVMValueRef *l, LLVMValueRef *D, bool alpha_to_rowbuf);
LLVMValueRef inv_sum(ak *a, LLVMValueRef l);
LLVMValueRef key_end(ak *a);
void key_blocks_begin(ak *a, cg_loop *kb, LLVMValueRef kend, LLVMValueRef *j0, LLVMValueRef *nk);
LLVMValueRef block_has_key(ak *a, LLVMValueRef j0, LLVMValueRef nk);
void emit_parallel(kiln_cg *cg, const char *name, par *pp, LLVMValueRef *vals);
void zero_operand(kiln_cg *cg, const attn_geom *G, LLVMValueRef ptr, int op, int64_t rows, int64_t E);
void rope_tables(const attn_geom *G, const LLVMValueRef *t, LLVMValueRef *vals);
unsigned n_rope_tables(const attn_layout *l);
void kernel_inputs(LLVMValueRef fn, unsigned p, const kiln_node *n, const attn_layout *lay, bool takes_step,
                   bool has_scratch, LLVMValueRef *ins, LLVMValueRef *step, LLVMValueRef *scratch);
void backward_item(ak *a, LLVMValueRef l, grad_want gw);  /* lower_attention_backward.c */
bool decode_path(const attn_geom *G, attn_blocks B);      /* lower_attention_decode.c */
void decode_item(ak *a, LLVMValueRef item);               /* lower_attention_decode.c */

#endif
