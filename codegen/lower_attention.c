/* lower_attention.c — attention and its gradients as flash-style kernels: blocks of
 * queries against blocks of keys with an online softmax, never a T×S score matrix.
 *
 * Notation: per (batch…, head) item, q (T,dh), k (S,dh), v (S,dv), g = dO (T,dv);
 * W = target->vector_floats; a query block is BQ = 2W queries (NQ = 2 vectors), a key
 * block BK = BQ keys. Scores are kept TRANSPOSED, St[j][i] with the BQ queries of the
 * block as vector lanes, so that every per-query statistic (running max m, sum l, D) is
 * a lane of NQ vectors and the softmax needs no horizontal reduction.
 *
 * Products, each a register-blocked micro-kernel in explicit <W x float> + llvm.fma:
 *   score tile    St[j][i] = Σ_d K[j][d]·Qt[d][i]: RJ keys × NQ query vectors of
 *                 accumulators; per d, NQ vector loads of the packed Qt (q of the block
 *                 transposed once per block: W×W blocks of rows transposed in
 *                 registers) and RJ broadcasts of K
 *                 elements straight from k. dP = dO·Vᵀ is the same tile over dOt and v.
 *   update tile   C[r][e] (+)= Σ_κ a(r,κ)·B[κ][e] with e as vector lanes: h rows × nv
 *                 vectors of accumulators; per κ, nv vector loads of a B row (v, dO, q
 *                 or k, read in place, the last vector masked when the width is not a
 *                 multiple of W) and h broadcasts of a from the score block. P·V, dV,
 *                 dK and dQ are all this tile with different operands.
 * Neither relies on the loop vectoriser: the emitted IR is already vector code.
 *
 * Forward, per item (batch·head, query block):
 *   pack Qt; m = −∞, l = 0, O = 0 (BQ × dv in scratch)
 *   for each key block up to the diagonal (causal: keys j ≤ last query; later blocks are
 *   never visited):
 *     St = scale·Q·Kᵀ + bias (gathered), masked keys −∞       (score tile)
 *     diagonal block only: j > i → −∞; block max
 *     m' = max(m, block max); α = exp(m − m'); P = exp(St − m'); l = α·l + Σ P
 *     O = α·O + P·V                                             (update tile, α on load)
 *   out = O / l, or 0 where l = 0 (every key excluded: the interpreter's rule).
 * m' = −∞ is replaced by 0 in the exponents, so a row with nothing kept yet gives
 * exp(−∞) = 0, never NaN. Items of one query (T = 1: a decode step) use no tiles:
 * decode_item, in lower_attention_decode.c.
 *
 * Backward, per (batch…, head), for each query block (FlashAttention-2's recomputation;
 * the forward's log-sum-exp is not an IR value, so pass 1 recomputes it):
 *   pass 1, over key blocks: m, l as the forward, and D = Σ_j P_ij·dP_ij online
 *           (rescaled by α like l), dP = dO·Vᵀ by the score tile — only when some
 *           gradient needs dS.
 *   pass 2, over key blocks: P = exp(St − m)/l, dP, dS = P∘(dP − D); then
 *           dV += Pᵀ·dO, dK += scale·dSᵀ·Q, dQ += scale·dS·K, dscores = dS,
 *           each only when asked for.
 * The two passes are one runtime loop around the key blocks (the score tiles are emitted
 * once). dQ rows belong to the current query block and dK, dV rows to the item, so one thread
 * owns every output element it writes; results accumulate in the outputs, zeroed by
 * the same thread first.
 *
 * Threads: the items (forward: batch·head·query block, causal ones in zig-zag order
 * 0, n−1, 1, n−2, … so that contiguous ranges carry equal work; backward: batch·head)
 * are cut into P = min(items, KILN_MAX_THREADS) contiguous parts, run through
 * cg_parallel_for; each part has its own scratch slot (the packed block, the score
 * blocks, the forward's O accumulator). An element is computed by the same code in the
 * same order whichever part and thread runs it, so results are bit-identical for any
 * thread count.
 *
 * Edges: the last query block pads its lanes (Qt and dOt zero-filled by masked
 * row loads), key rows past the end are read clamped and scored −∞, and update tiles
 * whose rows run past the last query or key write those rows to a dummy scratch row, so
 * every tile is whole. Operand strides are parameters (attn_layout), so a fusion pass
 * can fold a (B,T,H,d) ↔ (B,H,T,d) transpose into the kernel.
 *
 * Files: this one has the forward kernel, the emitters both directions use and the
 * threads; lower_attention_decode.c the forward of one query per item (a decode step);
 * lower_attention_backward.c the backward kernel and its entry points; attn_gen.h what
 * they share (the emitter state `ak`, geometry, small IR builders).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/runtime.h" /* KILN_MAX_THREADS */
#include "attn_gen.h"

/* ---- geometry -------------------------------------------------------------------------- */

/* Row-major strides of every dim but the last of a type like `t` with the last two dims
 * replaced by (rows, cols). */
static void default_strides(const kiln_type *t, int64_t rows, int64_t cols, int64_t *st)
{
    kiln_type u = *t;
    u.dims[u.rank - 2] = rows;
    u.dims[u.rank - 1] = cols;
    int64_t s[KILN_MAX_RANK];
    cg_row_major_strides(&u, s);
    for (int d = 0; d < u.rank - 1; d++) st[d] = s[d];
}

/* n: an attention node, or an attention_grad node (whose last input, g, is ignored). */
void geom_init(attn_geom *G, const kiln_graph *g, const kiln_node *n, const attn_layout *lay)
{
    memset(G, 0, sizeof *G);
    const kiln_type *qt = &g->nodes[n->in[0]].type, *kt = &g->nodes[n->in[1]].type, *vt = &g->nodes[n->in[2]].type;
    int r = G->r = qt->rank;
    G->nb = r - 2;
    G->n_bh = 1;
    for (int d = 0; d < G->nb; d++) {
        G->bdims[d] = qt->dims[d];
        G->n_bh *= qt->dims[d];
    }
    G->T = qt->dims[r - 2], G->dh = qt->dims[r - 1], G->S = kt->dims[r - 2], G->dv = vt->dims[r - 1];
    const kiln_attrs *a = &n->attrs;
    G->scale = a->scalar;
    G->causal = a->causal, G->has_mask = a->has_mask, G->has_bias = a->has_bias, G->alibi = a->alibi;
    G->mask_dt = KILN_F32;
    uint32_t next = 3;
    if (a->has_mask) {
        const kiln_type *mt = &g->nodes[n->in[next++]].type;
        G->mask_dt = mt->dtype;
        int64_t s[KILN_MAX_RANK];
        cg_row_major_strides(mt, s);
        for (int d = 0; d < mt->rank - 1; d++) G->st[ATTN_MASK][d] = s[d];
    }
    if (a->has_bias && a->relative) {
        G->relative = true;
        G->nbuckets = g->nodes[n->in[next++]].type.dims[0];
        G->rel_len = G->T + G->S - 1 > 0 ? G->T + G->S - 1 : 0;
    } else if (a->has_bias) cg_bcast_strides(&g->nodes[n->in[next++]].type, r, G->bstride);
    G->has_stats = n->op == KILN_OP_ATTENTION_GRAD && n->n_in == next + 3;
    G->want = (attn_fwd_want){n->op == KILN_OP_ATTENTION, false, n->op == KILN_OP_ATTENTION_LSE};

    default_strides(qt, G->T, G->dh, G->st[ATTN_Q]);
    default_strides(qt, G->S, G->dh, G->st[ATTN_K]);
    default_strides(qt, G->S, G->dv, G->st[ATTN_V]);
    default_strides(qt, G->T, G->dv, G->st[ATTN_OUT]);
    default_strides(qt, G->T, G->dv, G->st[ATTN_G]);
    default_strides(qt, G->T, G->dh, G->st[ATTN_DQ]);
    default_strides(qt, G->S, G->dh, G->st[ATTN_DK]);
    default_strides(qt, G->S, G->dv, G->st[ATTN_DV]);
    if (G->relative) default_strides(qt, 1, G->rel_len, G->st[ATTN_DSCORES]); /* (…, H, L) */
    else default_strides(qt, G->T, G->S, G->st[ATTN_DSCORES]);
    default_strides(qt, G->T, G->dv, G->st[ATTN_O]);
    default_strides(qt, G->T, 1, G->st[ATTN_LSE]); /* (…, T): rows of one element */
    if (!lay) return;
    G->rope_q = lay->rope_q, G->rope_k = lay->rope_k;
    G->unrope_q = lay->rope_q && lay->unrope_q, G->unrope_k = lay->rope_k && lay->unrope_k;
    if (lay->train_dropout && a->attn_dropout > 0) {
        G->dropping = true;
        G->drop = a->attn_dropout;
        G->stream = (uint32_t)a->stream;
        G->drop_seed = lay->dropout_seed;
    }
    for (int op = 0; op < ATTN_N_OPERANDS; op++) {
        if (!lay->stride[op]) continue;
        int count = op == ATTN_MASK ? r - 3 : r - 1;
        for (int d = 0; d < count; d++) G->st[op][d] = lay->stride[op][d];
    }
}

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

/* (relative: the head's bias by relative position, R[t] = bias of i − j + S − 1 = t, and
 * the backward's diagonal sums of dS, each L + BQ floats: the last lanes of a block read
 * past L.) */
attn_slot slot_layout(const attn_geom *G, attn_blocks B, bool backward, bool need_ds, bool want_dscores)
{
    attn_slot s = {0};
    int64_t at = 0;
    if (G->relative) s.rel = at, at += round16(G->rel_len + B.bq);
    if (G->relative && backward && want_dscores) s.drel = at, at += round16(G->rel_len + B.bq);
    if (G->rope_q) s.qr = at, at += round16(G->dh * B.bq); /* the query block rotated, row-major */
    if (G->rope_k) s.kr = at, at += round16(G->dh * G->S); /* the item's keys rotated */
    s.qt = at, at += round16(G->dh * B.bq);
    if (backward && need_ds) s.dot = at, at += round16(G->dv * B.bq);
    s.st = at, at += round16((int64_t)B.bk * B.bq);
    if (backward && need_ds) s.dpt = at, at += round16((int64_t)B.bk * B.bq);
    if (!backward) s.oacc = at, at += round16(B.bq * ceil_div(G->dv, B.w) * B.w);
    if (!backward) s.rowbuf = at, at += round16(B.bq);
    if (backward) s.dummy = at, at += round16(B.nvmax * B.w);
    if (backward && need_ds && G->has_stats) s.ot = at, at += round16(G->dv * B.bq);
    s.floats = at;
    return s;
}

/* ---- items and blocks ------------------------------------------------------------------------- */

/* Element offsets of item l (a flat batch·head index) for every operand. */
void item_offsets(ak *a, LLVMValueRef l)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    LLVMValueRef idx[KILN_MAX_RANK], rest = l;
    a->item = l;
    for (int d = G->nb - 1; d >= 0; d--) {
        LLVMValueRef n = cg_i64(cg, G->bdims[d]);
        idx[d] = d ? LLVMBuildURem(cg->b, rest, n, "") : rest;
        if (d) rest = LLVMBuildUDiv(cg->b, rest, n, "");
    }
    for (int op = 0; op < ATTN_N_OPERANDS; op++) {
        int count = op == ATTN_MASK ? G->nb - 1 : G->nb; /* the mask has no head dim */
        LLVMValueRef o = cg_i64(cg, 0);
        for (int d = 0; d < count; d++)
            if (G->st[op][d]) o = add(a, o, mulc(a, idx[d], G->st[op][d]));
        a->off[op] = o;
    }
    LLVMValueRef o = cg_i64(cg, 0);
    for (int d = 0; d < G->nb; d++)
        if (G->bstride[d]) o = add(a, o, mulc(a, idx[d], G->bstride[d]));
    a->bias_off = o;
}

void q_block_begin(ak *a, LLVMValueRef qb)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    a->i0 = mulc(a, qb, a->B.bq);
    a->nqv = imin(a, cg_i64(cg, a->B.bq), sub(a, cg_i64(cg, G->T), a->i0));
    LLVMValueRef nq = splat(a, a->nqv);
    int64_t bT = G->bstride[G->r - 2];
    if (G->alibi) a->slope = splat(a, cg_load(cg, KILN_F32, a->bias, a->bias_off));
    LLVMValueRef drow = G->dropping ? splat(a, add(a, mulc(a, a->item, G->T), a->i0)) : NULL;
    for (int v = 0; v < NQ; v++) {
        a->lane_ok[v] = LLVMBuildICmp(cg->b, LLVMIntSLT, iota(a, cg->t_i64, v * a->B.w), nq, "");
        if (G->dropping) /* (l·T + i)·S per lane */
            a->drop_row[v] = LLVMBuildNSWMul(cg->b, add(a, drow, iota(a, cg->t_i64, v * a->B.w)),
                                             splat(a, cg_i64(cg, G->S)), "");
        if (G->alibi)
            a->qpos[v] = LLVMBuildSIToFP(cg->b, add(a, splat(a, a->i0), iota(a, cg->t_i64, v * a->B.w)), a->vt, "");
        else if (G->has_bias && !G->relative) /* the bias element of each lane's query, key 0 */
            a->bias_lanes[v] = add(a, splat(a, add(a, a->bias_off, mulc(a, a->i0, bT))),
                                   LLVMBuildNSWMul(cg->b, iota(a, cg->t_i64, v * a->B.w), splat(a, cg_i64(cg, bT)), ""));
    }
}

/* W rows × W columns of the block into dst, transposed: for each of the block's NQ query
 * vectors, W rows (query i = v·W + x at element first + i·rs, its columns contiguous) are
 * loaded as vectors, transposed in registers (cg_transpose_square) and stored as W packed
 * rows; rows past the last query (nqv) load as 0, from the last query's row, masked.
 * `cols` columns from d0 (< W: the tail). */
static void pack_block_transposed(ak *a, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef first_row, int64_t rs,
                                  LLVMValueRef d0, int cols)
{
    kiln_cg *cg = a->cg;
    const int w = a->B.w;
    LLVMValueRef none = LLVMConstNull(LLVMVectorType(cg->t_i1, (unsigned)w)), some = lane_mask(a, cols);
    LLVMTypeRef tys[2] = {a->vt, cg->t_ptr};
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef r[16];
        for (int x = 0; x < w; x++) {
            LLVMValueRef i = cg_i64(cg, v * w + x);
            LLVMValueRef ok = LLVMBuildICmp(cg->b, LLVMIntSLT, i, a->nqv, "");
            LLVMValueRef row = imin(a, i, sub(a, a->nqv, cg_i64(cg, 1)));
            LLVMValueRef p = cg_gep(cg, KILN_F32, src, add(a, add(a, first_row, mulc(a, row, rs)), d0));
            LLVMValueRef args[4] = {p, cg_i32(cg, KILN_ELEM_BYTES), LLVMBuildSelect(cg->b, ok, some, none, ""),
                                    LLVMConstNull(a->vt)};
            r[x] = cg_intrinsic(cg, "llvm.masked.load", tys, 2, args, 4);
        }
        cg_transpose_square(cg->b, cg->t_i32, w, r);
        for (int d = 0; d < cols; d++)
            vstore(a, dst, add(a, mulc(a, addc(a, d0, d), a->B.bq), cg_i64(cg, v * w)), r[d], w);
    }
}

/* dst[d][i] = src row i at element first + i·rs, column d, for D columns; lanes past the
 * last query are 0. By W×W blocks transposed in registers: the masked gathers that did
 * it before (one per query vector and column) took ~11 % of the forward attention
 * kernel's samples in char_gpt's forward pass (perf, 2026-12-07). */
static void pack_rows_transposed(ak *a, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef first_row, int64_t rs,
                                 int64_t D)
{
    kiln_cg *cg = a->cg;
    const int w = a->B.w;
    if (D >= w) {
        cg_loop d;
        cg_loop_begin(cg, &d, cg_i64(cg, 0), cg_i64(cg, D / w), "pack");
        pack_block_transposed(a, dst, src, first_row, rs, mulc(a, d.i, w), w);
        cg_loop_end(cg, &d);
    }
    if (D % w) pack_block_transposed(a, dst, src, first_row, rs, cg_i64(cg, D / w * w), (int)(D % w));
}

/* dst[d][i] = src row (i0 + i), column d, for the D columns of operand op. */
void pack_transposed(ak *a, LLVMValueRef dst, LLVMValueRef src, int op, int64_t D)
{
    int64_t rs = row_stride(a, op);
    pack_rows_transposed(a, dst, src, add(a, a->off[op], mulc(a, a->i0, rs)), rs, D);
}

/* Rows p = p0 + r, r < n, of operand op in src turned by the tables' row p, h = dh/2,
 * x1 = x[:h], x2 = x[h:]:
 *   rotation (RoPE on load, into dst row r, row-major, dh floats):
 *     dst[:h] = x1·cos[:h] − x2·sin[:h],   dst[h:] = x2·cos[h:] + x1·sin[h:]
 *   — x·cos + concat(−x2, x1)·sin, the graph's rotation (passes/patterns.c, kiln_rope_match),
 *   in its order of operations;
 *   inverse (the gradient through the rotation, in place: x is a finished dq or dk, the
 *   cotangent G of the rotated rows, and becomes Rᵀ·G, the gradient before rotation):
 *     dx[:h] = G1·cos[:h] + G2·sin[h:],   dx[h:] = G2·cos[h:] − G1·sin[:h]
 *   — autodiff's G·cos + unslice((G·sin)[h:]) − unslice((G·sin)[:h]) (kiln_rope_grad_match). */
static void turn_rows(ak *a, LLVMValueRef dst, LLVMValueRef src, int op, LLVMValueRef cs, LLVMValueRef sn,
                      LLVMValueRef p0, LLVMValueRef n, bool inverse)
{
    kiln_cg *cg = a->cg;
    int64_t dh = a->G->dh, h = dh / 2, rs = row_stride(a, op);
    if (dh == 0) return;
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), n, inverse ? "unrope" : "rope");
    LLVMValueRef p = add(a, p0, r.i);
    LLVMValueRef srow = add(a, a->off[op], mulc(a, p, rs)), trow = mulc(a, p, dh);
    LLVMValueRef drow = inverse ? srow : mulc(a, r.i, dh);
    for (int64_t e = 0; e < h; e += a->B.w) {
        int lanes = lanes_of(a, h, e);
        LLVMValueRef x1 = vload(a, src, addc(a, srow, e), lanes), x2 = vload(a, src, addc(a, srow, h + e), lanes);
        LLVMValueRef c1 = vload(a, cs, addc(a, trow, e), lanes), s1 = vload(a, sn, addc(a, trow, e), lanes);
        LLVMValueRef c2 = vload(a, cs, addc(a, trow, h + e), lanes), s2 = vload(a, sn, addc(a, trow, h + e), lanes);
        vstore(a, dst, addc(a, drow, e),
               inverse ? cg_fadd(cg, cg_fmul(cg, x1, c1), cg_fmul(cg, x2, s2))
                       : cg_fsub(cg, cg_fmul(cg, x1, c1), cg_fmul(cg, x2, s1)),
               lanes);
        vstore(a, dst, addc(a, drow, h + e),
               inverse ? cg_fsub(cg, cg_fmul(cg, x2, c2), cg_fmul(cg, x1, s1))
                       : cg_fadd(cg, cg_fmul(cg, x2, c2), cg_fmul(cg, x1, s2)),
               lanes);
    }
    cg_loop_end(cg, &r);
}

/* RoPE on load: rows p0 + r, r < n, of operand op rotated into dst row r. */
void rotate_rows(ak *a, LLVMValueRef dst, LLVMValueRef src, int op, LLVMValueRef cs, LLVMValueRef sn,
                 LLVMValueRef p0, LLVMValueRef n)
{
    turn_rows(a, dst, src, op, cs, sn, p0, n, false);
}

/* The gradient through the rotation, in place in ptr (a finished dq or dk). */
void unrotate_rows(ak *a, LLVMValueRef ptr, int op, LLVMValueRef cs, LLVMValueRef sn, LLVMValueRef p0,
                   LLVMValueRef n)
{
    turn_rows(a, ptr, ptr, op, cs, sn, p0, n, true);
}

/* The current query block into Qt (packed transposed), rotated first into Qr with rope. */
void pack_queries(ak *a)
{
    const attn_geom *G = a->G;
    if (!G->rope_q) {
        pack_transposed(a, a->Qt, a->q, ATTN_Q, G->dh);
        return;
    }
    rotate_rows(a, a->Qr, a->q, ATTN_Q, a->qcos, a->qsin, a->i0, a->nqv);
    pack_rows_transposed(a, a->Qt, a->Qr, cg_i64(a->cg, 0), G->dh, G->dh);
}

/* With rope on k, Kr (S × dh in the part's scratch) holds the current item's keys
 * rotated: the backward rotates all S rows when an item starts; the forward, whose items
 * are query blocks, rotates the rows [0, need) its key blocks read and keeps them for the
 * part's next item of the same (batch…, head) — consecutive items mostly are — so each
 * key row is rotated about once per part, not once per query block. */
void rotate_keys_upto(ak *a, LLVMValueRef need)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef same = LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildLoad2(cg->b, cg->t_i64, a->kr_item, ""), a->item, "");
    LLVMValueRef done = LLVMBuildSelect(cg->b, same, LLVMBuildLoad2(cg->b, cg->t_i64, a->kr_done, ""), cg_i64(cg, 0), "");
    LLVMBuildStore(cg->b, a->item, a->kr_item);
    LLVMValueRef more = LLVMBuildICmp(cg->b, LLVMIntSGT, need, done, "");
    LLVMValueRef n = LLVMBuildSelect(cg->b, more, sub(a, need, done), cg_i64(cg, 0), "");
    rotate_rows(a, cg_gep(cg, KILN_F32, a->Kr, mulc(a, done, a->G->dh)), a->k, ATTN_K, a->kcos, a->ksin, done, n);
    LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, more, need, done, ""), a->kr_done);
}

/* Rows [0, n) of E floats at ptr + off + row·rs set to 0. */
void zero_rows(ak *a, LLVMValueRef ptr, LLVMValueRef off, LLVMValueRef n, int64_t rs, int64_t E)
{
    kiln_cg *cg = a->cg;
    if (E == 0) return;
    cg_loop i;
    cg_loop_begin(cg, &i, cg_i64(cg, 0), n, "zero");
    LLVMValueRef row = add(a, off, mulc(a, i.i, rs));
    for (int64_t e = 0; e < E; e += a->B.w) vstore(a, ptr, addc(a, row, e), vconst(a, 0.0), lanes_of(a, E, e));
    cg_loop_end(cg, &i);
}

/* ---- T5 relative bias ------------------------------------------------------------------------------- */

/* The bucket of each relative position t (key − query = S − 1 − t, t < L): an i32
 * constant computed here with kiln_t5_bucket, one global per shape. */
static LLVMValueRef bucket_global(ak *a)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    char name[96];
    snprintf(name, sizeof name, "t5_buckets.%lld.%lld.%lld.%d", (long long)G->nbuckets, (long long)G->S,
             (long long)G->rel_len, G->causal);
    LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
    if (gv) return gv;
    LLVMValueRef *vals = malloc((size_t)G->rel_len * sizeof *vals);
    KILN_ASSERT(vals != NULL);
    for (int64_t t = 0; t < G->rel_len; t++)
        vals[t] = cg_i32(cg, kiln_t5_bucket(G->S - 1 - t, !G->causal, (int)G->nbuckets, KILN_T5_MAX_DISTANCE));
    LLVMTypeRef ty = LLVMArrayType2(cg->t_i32, (uint64_t)G->rel_len);
    gv = LLVMAddGlobal(cg->mod, ty, name);
    LLVMSetInitializer(gv, LLVMConstArray2(cg->t_i32, vals, (uint64_t)G->rel_len));
    free(vals);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMInternalLinkage);
    return gv;
}

/* The current item's head's bias by relative position: Rel[t] = bias[bucket(t)][h] for
 * t < L, then BQ zeros (read by lanes past the last query). */
void rel_table(ak *a)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    int64_t H = G->bdims[G->nb - 1];
    LLVMValueRef h = LLVMBuildURem(cg->b, a->item, cg_i64(cg, H), "head");
    LLVMValueRef buckets = bucket_global(a);
    cg_loop t;
    cg_loop_begin(cg, &t, cg_i64(cg, 0), cg_i64(cg, G->rel_len), "rel");
    LLVMValueRef b = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, buckets, t.i), cg->t_i64, "");
    cg_store(cg, KILN_F32, a->Rel, t.i, cg_load(cg, KILN_F32, a->bias, add(a, mulc(a, b, H), h)));
    cg_loop_end(cg, &t);
    for (int64_t t0 = 0; t0 < a->B.bq; t0 += a->B.w) vstore(a, a->Rel, cg_i64(cg, G->rel_len + t0), vconst(a, 0.0), a->B.w);
}

/* ---- attention dropout ------------------------------------------------------------------------------ */

/* The part's hash key mix64(mix64(seed) ^ stream), seed = the compile-time dropout seed
 * plus the step counter (lower_dropout.c's per-node value). */
static void drop_key_init(ak *a)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef steps = LLVMBuildFPToUI(cg->b, cg_load(cg, KILN_F32, a->step, cg_i64(cg, 0)), cg->t_i64, "steps");
    LLVMValueRef seed = LLVMBuildAdd(cg->b, LLVMConstInt(cg->t_i64, a->G->drop_seed, 0), steps, "seed");
    LLVMValueRef stream = LLVMConstInt(cg->t_i64, a->G->stream, 0);
    a->drop_key = cg_dropout_mix64(cg, LLVMBuildXor(cg->b, cg_dropout_mix64(cg, seed), stream, ""));
}

/* The dropout multipliers of key j (i64) for query vector v of the block: 1/(1 − p)
 * where kiln_interp_dropout_keep keeps weight (l·T + i)·S + j, else 0. Its test
 * u = (h >> 11)·2⁻⁵³ ≥ p is done exactly in integers: h >> 11 ≥ ⌈p·2⁵³⌉. */
LLVMValueRef drop_scale(ak *a, LLVMValueRef j, int v)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    LLVMValueRef idx = add(a, a->drop_row[v], splat(a, j));
    LLVMValueRef h = cg_dropout_mix64(cg, LLVMBuildXor(cg->b, splat(a, a->drop_key), idx, ""));
    uint64_t thr = (uint64_t)ceil(G->drop * 0x1.0p53);
    LLVMValueRef u = LLVMBuildLShr(cg->b, h, splat(a, cg_i64(cg, 11)), "");
    LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntUGE, u, splat(a, LLVMConstInt(cg->t_i64, thr, 0)), "keep");
    return LLVMBuildSelect(cg->b, keep, vconst(a, 1.0 / (1.0 - G->drop)), vconst(a, 0.0), "");
}

/* The nk rows of St (probabilities) times their dropout multipliers. */
static void drop_block(ak *a, LLVMValueRef j0, LLVMValueRef nk)
{
    kiln_cg *cg = a->cg;
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "drop");
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef off = addc(a, mulc(a, r.i, a->B.bq), v * a->B.w);
        vstore(a, a->St, off, cg_fmul(cg, vload(a, a->St, off, a->B.w), drop_scale(a, add(a, j0, r.i), v)), a->B.w);
    }
    cg_loop_end(cg, &r);
}

/* ---- the score tile ------------------------------------------------------------------------------ */

/* out[r][i] for the rows r < nk of the key block at j0, in whole tiles of RJ rows:
 *   Σ_d X[j0 + r][d]·Yt[d][i] over the D columns of operand xop,
 * and, with `finish` (the scores): ·scale, + bias, masked keys and rows r ≥ nk → −∞.
 * The last tile's rows past the last key are read clamped to it (valid memory; their
 * scores are −∞ and never used). */
void score_block(ak *a, LLVMValueRef X, int xop, int64_t D, LLVMValueRef Yt, LLVMValueRef out,
                 LLVMValueRef j0, LLVMValueRef nk, bool finish)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    int RJ = a->B.rj, w = a->B.w, bq = a->B.bq;
    int64_t xs = row_stride(a, xop);
    cg_loop rg;
    cg_loop_begin(cg, &rg, cg_i64(cg, 0), groups(a, nk, RJ), "rows");
    LLVMValueRef r0 = mulc(a, rg.i, RJ);
    LLVMValueRef j[16], xrow[16], acc[16][NQ];
    bool kr = xop == ATTN_K && G->rope_k; /* the rotated keys (rotate_keys_upto) */
    if (kr) X = a->Kr;
    for (int r = 0; r < RJ; r++) {
        j[r] = imin(a, add(a, j0, addc(a, r0, r)), cg_i64(cg, G->S - 1));
        xrow[r] = kr ? mulc(a, j[r], G->dh) : add(a, a->off[xop], mulc(a, j[r], xs));
        for (int v = 0; v < NQ; v++) acc[r][v] = vlocal(a, "acc", vconst(a, 0.0));
    }
    if (D > 0) {
        cg_loop d;
        cg_loop_begin(cg, &d, cg_i64(cg, 0), cg_i64(cg, D), "d");
        LLVMValueRef y[NQ];
        for (int v = 0; v < NQ; v++) y[v] = vload(a, Yt, addc(a, mulc(a, d.i, bq), v * w), w);
        for (int r = 0; r < RJ; r++) {
            LLVMValueRef x = splat(a, cg_load(cg, KILN_F32, X, add(a, xrow[r], d.i)));
            for (int v = 0; v < NQ; v++) st(a, acc[r][v], fma_v(a, x, y[v], ld(a, acc[r][v])));
        }
        cg_loop_end(cg, &d);
    }
    LLVMValueRef scale = vconst(a, G->scale), ninf = vneg_inf(a);
    for (int r = 0; r < RJ; r++) {
        LLVMValueRef row = addc(a, r0, r), keep = NULL;
        if (finish) {
            keep = LLVMBuildICmp(cg->b, LLVMIntSLT, row, nk, "");
            if (G->has_mask) {
                LLVMValueRef m = cg_load(cg, G->mask_dt, a->mask, add(a, a->off[ATTN_MASK], j[r]));
                LLVMValueRef kept = G->mask_dt == KILN_F32 ? LLVMBuildFCmp(cg->b, LLVMRealUNE, m, cg_f32(cg, 0.0), "")
                                                           : LLVMBuildICmp(cg->b, LLVMIntNE, m, cg_i32(cg, 0), "");
                keep = LLVMBuildAnd(cg->b, keep, kept, "");
            }
        }
        for (int v = 0; v < NQ; v++) {
            LLVMValueRef s = ld(a, acc[r][v]);
            if (finish) {
                s = cg_fmul(cg, s, scale);
                if (G->alibi) { /* + slope·|j − i|, nothing gathered */
                    LLVMValueRef jf = splat(a, LLVMBuildSIToFP(cg->b, j[r], cg->t_f32, ""));
                    LLVMValueRef dist = cg_intrinsic1(cg, "llvm.fabs", cg_fsub(cg, jf, a->qpos[v]));
                    s = fma_v(a, a->slope, dist, s);
                } else if (G->relative) { /* Rel[i − j + S − 1], lanes i contiguous */
                    LLVMValueRef t0 = addc(a, sub(a, a->i0, j[r]), v * w + G->S - 1);
                    s = cg_fadd(cg, s, vload(a, a->Rel, t0, w));
                } else if (G->has_bias) {
                    LLVMValueRef bj = splat(a, mulc(a, j[r], G->bstride[G->r - 1]));
                    s = cg_fadd(cg, s, vgather(a, a->bias, add(a, a->bias_lanes[v], bj), a->lane_ok[v]));
                }
                s = LLVMBuildSelect(cg->b, keep, s, ninf, "");
            }
            vstore(a, out, addc(a, mulc(a, row, bq), v * w), s, w);
        }
    }
    cg_loop_end(cg, &rg);
}

/* Over the nk rows of St: with `causal`, keys after a lane's query → −∞ (the diagonal
 * block only); with bmax, the lanes' maxima into it. */
static void block_rows(ak *a, LLVMValueRef j0, LLVMValueRef nk, LLVMValueRef *bmax, bool causal)
{
    kiln_cg *cg = a->cg;
    if (!causal && !bmax) return;
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "row");
    LLVMValueRef after = NULL;
    if (causal) /* lane i is masked when j0 + r > i0 + i, i.e. i < j0 + r − i0 */
        after = splat(a, LLVMBuildTrunc(cg->b, sub(a, add(a, j0, r.i), a->i0), cg->t_i32, ""));
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef off = addc(a, mulc(a, r.i, a->B.bq), v * a->B.w);
        LLVMValueRef s = vload(a, a->St, off, a->B.w);
        if (causal) {
            LLVMValueRef masked = LLVMBuildICmp(cg->b, LLVMIntSLT, iota(a, cg->t_i32, v * a->B.w), after, "");
            s = LLVMBuildSelect(cg->b, masked, vneg_inf(a), s, "");
            vstore(a, a->St, off, s, a->B.w);
        }
        if (bmax) st(a, bmax[v], vmax(a, ld(a, bmax[v]), s));
    }
    cg_loop_end(cg, &r);
}

/* block_rows with the causal mask applied in the diagonal block only (the one holding a
 * key after some query of the block). */
void block_mask_max(ak *a, LLVMValueRef j0, LLVMValueRef nk, LLVMValueRef *bmax)
{
    kiln_cg *cg = a->cg;
    if (!a->G->causal) {
        block_rows(a, j0, nk, bmax, false);
        return;
    }
    LLVMValueRef last = sub(a, add(a, j0, nk), cg_i64(cg, 1));
    LLVMValueRef diag = LLVMBuildICmp(cg->b, LLVMIntSGT, last, a->i0, "");
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
    LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(cg->ctx, fn, "diag");
    LLVMBasicBlockRef other = LLVMAppendBasicBlockInContext(cg->ctx, fn, "below");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(cg->ctx, fn, "joined");
    LLVMBuildCondBr(cg->b, diag, then, other);
    LLVMPositionBuilderAtEnd(cg->b, then);
    block_rows(a, j0, nk, bmax, true);
    LLVMBuildBr(cg->b, join);
    LLVMPositionBuilderAtEnd(cg->b, other);
    block_rows(a, j0, nk, bmax, false);
    LLVMBuildBr(cg->b, join);
    LLVMPositionBuilderAtEnd(cg->b, join);
}

/* ---- the update tile --------------------------------------------------------------------------- */

void update(ak *a, const upd *u)
{
    kiln_cg *cg = a->cg;
    int w = a->B.w;
    for (int64_t e0 = 0; e0 < u->E; e0 += (int64_t)a->B.nvmax * w) {
        int nv = (int)ceil_div(u->E - e0, w);
        if (nv > a->B.nvmax) nv = a->B.nvmax;
        int lanes[4];
        for (int v = 0; v < nv; v++) lanes[v] = lanes_of(a, u->E, e0 + (int64_t)v * w);
        /* h rows per tile: the largest power of two dividing `rows` within the budget */
        int h = 1;
        while (h * 2 * nv <= a->B.acc && u->rows % (h * 2) == 0) h *= 2;

        cg_loop rg;
        cg_loop_begin(cg, &rg, cg_i64(cg, 0), groups(a, u->nrows, h), "tile");
        LLVMValueRef r0 = mulc(a, rg.i, h);
        LLVMValueRef cptr[32], acc[32][4], arow[32];
        for (int r = 0; r < h; r++) {
            LLVMValueRef row = addc(a, r0, r);
            cptr[r] = cg_gep(cg, KILN_F32, u->Cp, add(a, u->coff, addc(a, mulc(a, row, u->cs), e0)));
            if (u->dummy_tail)
                cptr[r] = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, row, u->nrows, ""), cptr[r], a->dummy, "");
            arow[r] = mulc(a, row, u->ar);
            LLVMValueRef scale = u->row_scale ? splat(a, cg_load(cg, KILN_F32, u->row_scale, row)) : NULL;
            for (int v = 0; v < nv; v++) {
                LLVMValueRef c = vload(a, cptr[r], cg_i64(cg, (int64_t)v * w), lanes[v]);
                if (scale) c = cg_fmul(cg, c, scale);
                acc[r][v] = vlocal(a, "acc", c);
            }
        }
        cg_loop k;
        cg_loop_begin(cg, &k, cg_i64(cg, 0), u->nk, "k");
        LLVMValueRef brow = add(a, u->boff, addc(a, mulc(a, k.i, u->bs), e0)), b[4];
        for (int v = 0; v < nv; v++) b[v] = vload(a, u->Bp, addc(a, brow, (int64_t)v * w), lanes[v]);
        LLVMValueRef kk = mulc(a, k.i, u->ak);
        for (int r = 0; r < h; r++) {
            LLVMValueRef x = splat(a, cg_load(cg, KILN_F32, u->A, add(a, arow[r], kk)));
            for (int v = 0; v < nv; v++) st(a, acc[r][v], fma_v(a, x, b[v], ld(a, acc[r][v])));
        }
        cg_loop_end(cg, &k);
        for (int r = 0; r < h; r++)
            for (int v = 0; v < nv; v++) vstore(a, cptr[r], cg_i64(cg, (int64_t)v * w), ld(a, acc[r][v]), lanes[v]);
        cg_loop_end(cg, &rg);
    }
}

/* ---- the online softmax step ------------------------------------------------------------------------ */

/* max over lanes that may be −∞, as an exponent offset: −∞ → 0 (exp(−∞ − 0) = 0). */
LLVMValueRef safe_max(ak *a, LLVMValueRef m)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef none = LLVMBuildFCmp(cg->b, LLVMRealOEQ, m, vneg_inf(a), "");
    return LLVMBuildSelect(cg->b, none, vconst(a, 0.0), m, "");
}

/* The key block's rows of St become p = exp(St − m'), with m' = max(m, bmax) (bmax: the
 * block's maxima, block_mask_max); l and (with dP) D absorb them after scaling by
 * α = exp(m − m'); α goes to rowbuf when asked. j0: the block's first key. */
void online_step(ak *a, LLVMValueRef j0, LLVMValueRef nk, const LLVMValueRef *bmax, LLVMValueRef *m,
                 LLVMValueRef *l, LLVMValueRef *D, bool alpha_to_rowbuf)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef msafe[NQ], alpha[NQ], lsum[NQ], dsum[NQ];
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef mnew = vmax(a, ld(a, m[v]), ld(a, bmax[v]));
        msafe[v] = safe_max(a, mnew);
        alpha[v] = att_exp(cg, cg_fsub(cg, ld(a, m[v]), msafe[v]));
        st(a, m[v], mnew);
        lsum[v] = vlocal(a, "lsum", vconst(a, 0.0));
        if (D) dsum[v] = vlocal(a, "dsum", vconst(a, 0.0));
        if (alpha_to_rowbuf) vstore(a, a->rowbuf, cg_i64(cg, v * a->B.w), alpha[v], a->B.w);
    }
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "row");
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef off = addc(a, mulc(a, r.i, a->B.bq), v * a->B.w);
        LLVMValueRef p = att_exp(cg, cg_fsub(cg, vload(a, a->St, off, a->B.w), msafe[v]));
        vstore(a, a->St, off, p, a->B.w);
        st(a, lsum[v], cg_fadd(cg, ld(a, lsum[v]), p));
        if (D) { /* with dropout D = Σ P·M·dP (M: the multipliers) */
            LLVMValueRef dP = vload(a, a->dPt, off, a->B.w);
            if (a->G->dropping) dP = cg_fmul(cg, dP, drop_scale(a, add(a, j0, r.i), v));
            st(a, dsum[v], fma_v(a, p, dP, ld(a, dsum[v])));
        }
    }
    cg_loop_end(cg, &r);
    for (int v = 0; v < NQ; v++) {
        st(a, l[v], fma_v(a, ld(a, l[v]), alpha[v], ld(a, lsum[v])));
        if (D) st(a, D[v], fma_v(a, ld(a, D[v]), alpha[v], ld(a, dsum[v])));
    }
}

/* 1/l, or 0 where l = 0 (no key kept: zero weights); NaN stays NaN. */
LLVMValueRef inv_sum(ak *a, LLVMValueRef l)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef zero = LLVMBuildFCmp(cg->b, LLVMRealOEQ, l, vconst(a, 0.0), "");
    return LLVMBuildSelect(cg->b, zero, vconst(a, 0.0), cg_fdiv(cg, vconst(a, 1.0), l), "");
}

/* Keys visited by the current query block: [0, S), or up to its last query when causal. */
LLVMValueRef key_end(ak *a)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef S = cg_i64(cg, a->G->S);
    return a->G->causal ? imin(a, S, add(a, a->i0, a->nqv)) : S;
}

/* for (kb = 0; kb·BK < kend; kb++): *j0 = kb·BK, *nk = min(BK, kend − j0) */
void key_blocks_begin(ak *a, cg_loop *kb, LLVMValueRef kend, LLVMValueRef *j0, LLVMValueRef *nk)
{
    kiln_cg *cg = a->cg;
    LLVMValueRef nkb = LLVMBuildUDiv(cg->b, addc(a, kend, a->B.bk - 1), cg_i64(cg, a->B.bk), "");
    cg_loop_begin(cg, kb, cg_i64(cg, 0), nkb, "kblock");
    *j0 = mulc(a, kb->i, a->B.bk);
    *nk = imin(a, cg_i64(cg, a->B.bk), sub(a, kend, *j0));
}

/* Whether the key mask keeps some key of the block [j0, j0 + nk): a block whose keys
 * are all padding changes nothing (its scores are −∞: P = 0, α = 1) and is skipped. */
LLVMValueRef block_has_key(ak *a, LLVMValueRef j0, LLVMValueRef nk)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    LLVMValueRef any = cg_local(cg, cg->t_i1, "any");
    LLVMBuildStore(cg->b, LLVMConstInt(cg->t_i1, 0, 0), any);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "key");
    LLVMValueRef m = cg_load(cg, G->mask_dt, a->mask, add(a, a->off[ATTN_MASK], add(a, j0, r.i)));
    LLVMValueRef kept = G->mask_dt == KILN_F32 ? LLVMBuildFCmp(cg->b, LLVMRealUNE, m, cg_f32(cg, 0.0), "")
                                               : LLVMBuildICmp(cg->b, LLVMIntNE, m, cg_i32(cg, 0), "");
    LLVMBuildStore(cg->b, LLVMBuildOr(cg->b, LLVMBuildLoad2(cg->b, cg->t_i1, any, ""), kept, ""), any);
    cg_loop_end(cg, &r);
    return LLVMBuildLoad2(cg->b, cg->t_i1, any, "");
}

/* ---- forward ------------------------------------------------------------------------------------------ */

static void forward_item(ak *a, LLVMValueRef item)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    int w = a->B.w, bq = a->B.bq;
    int64_t n_qb = ceil_div(G->T, bq), dvp = ceil_div(G->dv, w) * w;
    LLVMValueRef l = LLVMBuildUDiv(cg->b, item, cg_i64(cg, n_qb), "");
    LLVMValueRef t = LLVMBuildURem(cg->b, item, cg_i64(cg, n_qb), "");
    LLVMValueRef qb = t;
    if (G->causal) { /* zig-zag: 0, n−1, 1, n−2, … so that contiguous parts weigh the same */
        LLVMValueRef half = LLVMBuildLShr(cg->b, t, cg_i64(cg, 1), "");
        LLVMValueRef odd = LLVMBuildTrunc(cg->b, t, cg->t_i1, "");
        qb = LLVMBuildSelect(cg->b, odd, sub(a, cg_i64(cg, n_qb - 1), half), half, "");
    }
    item_offsets(a, l);
    if (G->relative) rel_table(a);
    q_block_begin(a, qb);
    pack_queries(a);

    LLVMValueRef m[NQ], s[NQ];
    for (int v = 0; v < NQ; v++) {
        m[v] = vlocal(a, "m", vneg_inf(a));
        s[v] = vlocal(a, "l", vconst(a, 0.0));
    }
    LLVMBuildMemSet(cg->b, a->Oacc, LLVMConstInt(LLVMInt8TypeInContext(cg->ctx), 0, 0),
                    cg_i64(cg, bq * dvp * KILN_ELEM_BYTES), KILN_ELEM_BYTES);

    cg_loop kb;
    LLVMValueRef j0, nk, kend = key_end(a);
    if (G->rope_k) { /* the key blocks' rows, whole blocks (tiles read rows clamped to S − 1) */
        LLVMValueRef nkb = LLVMBuildUDiv(cg->b, addc(a, kend, a->B.bk - 1), cg_i64(cg, a->B.bk), "");
        rotate_keys_upto(a, imin(a, mulc(a, nkb, a->B.bk), cg_i64(cg, G->S)));
    }
    key_blocks_begin(a, &kb, kend, &j0, &nk);
    cg_if live;
    if (G->has_mask) cg_if_begin(cg, &live, block_has_key(a, j0, nk));
    score_block(a, a->k, ATTN_K, G->dh, a->Qt, a->St, j0, nk, true);
    LLVMValueRef bmax[NQ];
    for (int v = 0; v < NQ; v++) bmax[v] = vlocal(a, "bmax", vneg_inf(a));
    block_mask_max(a, j0, nk, bmax);
    online_step(a, j0, nk, bmax, m, s, NULL, true);
    if (G->dropping) drop_block(a, j0, nk); /* l keeps the undropped sum: PyTorch's order */
    /* O = α·O + P·V: a(i, κ) = P[κ][i] */
    upd pv = {.Cp = a->Oacc, .coff = cg_i64(cg, 0), .cs = dvp, .rows = bq, .nrows = a->nqv, .A = a->St, .ar = 1, .ak = bq,
              .Bp = a->v, .boff = add(a, a->off[ATTN_V], mulc(a, j0, row_stride(a, ATTN_V))), .bs = row_stride(a, ATTN_V),
              .nk = nk, .E = G->dv, .row_scale = a->rowbuf};
    update(a, &pv);
    if (G->has_mask) cg_if_end(cg, &live);
    cg_loop_end(cg, &kb);

    /* out (and its row-major copy o) = O / l */
    if (G->want.out || G->want.o) {
        for (int v = 0; v < NQ; v++) vstore(a, a->rowbuf, cg_i64(cg, v * w), inv_sum(a, ld(a, s[v])), w);
        cg_loop i;
        cg_loop_begin(cg, &i, cg_i64(cg, 0), a->nqv, "row");
        LLVMValueRef inv = splat(a, cg_load(cg, KILN_F32, a->rowbuf, i.i));
        LLVMValueRef orow = add(a, a->off[ATTN_OUT], mulc(a, add(a, a->i0, i.i), row_stride(a, ATTN_OUT)));
        LLVMValueRef crow = add(a, a->off[ATTN_O], mulc(a, add(a, a->i0, i.i), row_stride(a, ATTN_O)));
        for (int64_t e = 0; e < G->dv; e += w) {
            LLVMValueRef y = cg_fmul(cg, vload(a, a->Oacc, addc(a, mulc(a, i.i, dvp), e), w), inv);
            if (G->want.out) vstore(a, a->out, addc(a, orow, e), y, lanes_of(a, G->dv, e));
            if (G->want.o) vstore(a, a->o, addc(a, crow, e), y, lanes_of(a, G->dv, e));
        }
        cg_loop_end(cg, &i);
    }
    /* lse = m + log l per query, −∞ where no key was kept (l = 0) */
    if (G->want.lse)
        for (int v = 0; v < NQ; v++) {
            LLVMValueRef lv = ld(a, s[v]);
            LLVMValueRef none = LLVMBuildFCmp(cg->b, LLVMRealOEQ, lv, vconst(a, 0.0), "");
            LLVMValueRef lse = cg_fadd(cg, safe_max(a, ld(a, m[v])), cg_intrinsic1(cg, "llvm.log", lv));
            lse = LLVMBuildSelect(cg->b, none, vneg_inf(a), lse, "");
            LLVMValueRef p = cg_gep(cg, KILN_F32, a->lse, add(a, a->off[ATTN_LSE], addc(a, a->i0, v * w)));
            LLVMTypeRef tys[2] = {a->vt, cg->t_ptr};
            LLVMValueRef args[4] = {lse, p, cg_i32(cg, KILN_ELEM_BYTES), a->lane_ok[v]};
            cg_intrinsic(cg, "llvm.masked.store", tys, 2, args, 4);
        }
}

/* ---- threads -------------------------------------------------------------------------------------------- */

static void bind(ak *a, const LLVMValueRef *vals)
{
    a->q = vals[V_Q], a->k = vals[V_K], a->v = vals[V_V], a->mask = vals[V_MASK], a->bias = vals[V_BIAS];
    a->g = vals[V_G], a->out = vals[V_OUT], a->dq = vals[V_DQ], a->dk = vals[V_DK], a->dv = vals[V_DV];
    a->ds = vals[V_DS], a->o = vals[V_O], a->lse = vals[V_LSE], a->step = vals[V_STEP];
    a->qcos = vals[V_QCOS], a->qsin = vals[V_QSIN], a->kcos = vals[V_KCOS], a->ksin = vals[V_KSIN];
}

/* Parts [begin, end): each with its scratch slot, its items [n·p/P, n·(p+1)/P). */
static void part_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    par *pp = user;
    ak a = {.cg = cg, .G = pp->G, .B = pp->B};
    a.vt = LLVMVectorType(cg->t_f32, (unsigned)pp->B.w);
    a.vt_i32 = LLVMVectorType(cg->t_i32, (unsigned)pp->B.w);
    bind(&a, vals);
    if (pp->G->dropping) drop_key_init(&a);
    cg_loop p;
    cg_loop_begin(cg, &p, begin, end, "part");
    LLVMValueRef base = cg_gep(cg, KILN_F32, vals[V_SCRATCH], mulc(&a, p.i, pp->slot.floats));
    a.Qt = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.qt));
    a.dOt = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.dot));
    a.St = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.st));
    a.dPt = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.dpt));
    a.Ot = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.ot));
    a.Oacc = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.oacc));
    a.rowbuf = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.rowbuf));
    a.dummy = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.dummy));
    a.Rel = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.rel));
    a.dRel = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.drel));
    a.Qr = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.qr));
    a.Kr = cg_gep(cg, KILN_F32, base, cg_i64(cg, pp->slot.kr));
    if (!pp->backward && pp->G->rope_k) { /* nothing rotated yet in this part's Kr */
        a.kr_item = cg_local(cg, cg->t_i64, "kr_item");
        a.kr_done = cg_local(cg, cg->t_i64, "kr_done");
        LLVMBuildStore(cg->b, cg_i64(cg, -1), a.kr_item);
        LLVMBuildStore(cg->b, cg_i64(cg, 0), a.kr_done);
    }
    LLVMValueRef lo = LLVMBuildUDiv(cg->b, mulc(&a, p.i, pp->items), cg_i64(cg, pp->parts), "");
    LLVMValueRef hi = LLVMBuildUDiv(cg->b, mulc(&a, addc(&a, p.i, 1), pp->items), cg_i64(cg, pp->parts), "");
    cg_loop it;
    cg_loop_begin(cg, &it, lo, hi, "item");
    if (pp->backward) backward_item(&a, it.i, pp->gw);
    else if (decode_path(pp->G, pp->B)) decode_item(&a, it.i);
    else forward_item(&a, it.i);
    cg_loop_end(cg, &it);
    cg_loop_end(cg, &p);
}

/* Rough element-operations of the whole kernel, for cg_parallel_for's cut-off. */
static int64_t total_work(const attn_geom *G, bool backward)
{
    int64_t pairs = G->n_bh * G->T * G->S / (G->causal ? 2 : 1);
    return pairs * (G->dh + G->dv + 8) * (backward ? 3 : 1);
}

void emit_parallel(kiln_cg *cg, const char *name, par *pp, LLVMValueRef *vals)
{
    LLVMValueRef null = LLVMConstPointerNull(cg->t_ptr);
    for (int i = 0; i < V_COUNT; i++)
        if (!vals[i]) vals[i] = null;
    int64_t work = total_work(pp->G, pp->backward);
    cg_parallel_for(cg, name, pp->parts, work / pp->parts + 1, vals, V_COUNT, part_body, pp);
}

/* ---- zero fills for the degenerate shapes ----------------------------------------------------------------- */

/* Every (batch…, head) matrix of rows × E of operand op at ptr set to 0. */
void zero_operand(kiln_cg *cg, const attn_geom *G, LLVMValueRef ptr, int op, int64_t rows, int64_t E)
{
    if (G->n_bh == 0 || rows == 0 || E == 0) return;
    attn_blocks B = blocks_for(cg->target);
    ak a = {.cg = cg, .G = G, .B = B};
    a.vt = LLVMVectorType(cg->t_f32, (unsigned)B.w);
    a.vt_i32 = LLVMVectorType(cg->t_i32, (unsigned)B.w);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, G->n_bh), "item");
    item_offsets(&a, l.i);
    zero_rows(&a, ptr, a.off[op], cg_i64(cg, rows), row_stride(&a, op), E);
    cg_loop_end(cg, &l);
}

/* The rope tables, the pointers after the node's inputs: q's cos and sin, then k's. */
void rope_tables(const attn_geom *G, const LLVMValueRef *t, LLVMValueRef *vals)
{
    int i = 0;
    if (G->rope_q) vals[V_QCOS] = t[i++], vals[V_QSIN] = t[i++];
    if (G->rope_k) vals[V_KCOS] = t[i++], vals[V_KSIN] = t[i++];
}

/* The number of rope table pointers a kernel with layout l takes. */
unsigned n_rope_tables(const attn_layout *l) { return l ? 2u * l->rope_q + 2u * l->rope_k : 0; }

/* ---- forward entry points ------------------------------------------------------------------------------- */

int64_t attention_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    return attention_forward_scratch_bytes(g, n, t, NULL);
}

int64_t attention_forward_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t,
                                        const attn_layout *lay)
{
    attn_geom G;
    geom_init(&G, g, n, lay);
    if (G.n_bh * G.T == 0 || G.S == 0) return 0;
    attn_blocks B = blocks_for(t);
    int64_t items = G.n_bh * ceil_div(G.T, B.bq);
    return parts_for(items) * slot_layout(&G, B, false, false, false).floats * KILN_ELEM_BYTES;
}

/* The forward kernel's body: results outs[ATTN_OUT], [ATTN_O], [ATTN_LSE] as `want`
 * says, ins[] the node's inputs. */
static void emit_forward(kiln_cg *cg, const kiln_graph *g, const kiln_node *n, attn_fwd_want want,
                         const LLVMValueRef *outs, const LLVMValueRef *ins, LLVMValueRef step, LLVMValueRef scratch,
                         const attn_layout *lay)
{
    attn_geom G;
    geom_init(&G, g, n, lay);
    G.want = want;
    if (G.n_bh * G.T == 0 || (!want.lse && G.dv == 0)) return;
    if (G.S == 0) { /* no keys at all: every row is fully masked */
        if (want.out) zero_operand(cg, &G, outs[ATTN_OUT], ATTN_OUT, G.T, G.dv);
        if (want.o) zero_operand(cg, &G, outs[ATTN_O], ATTN_O, G.T, G.dv);
        if (want.lse) { /* −∞ per query */
            cg_loop i;
            cg_loop_begin(cg, &i, cg_i64(cg, 0), cg_i64(cg, G.n_bh * G.T), "row");
            cg_store(cg, KILN_F32, outs[ATTN_LSE], i.i, LLVMConstReal(cg->t_f32, -INFINITY));
            cg_loop_end(cg, &i);
        }
        return;
    }
    KILN_ASSERT(scratch != NULL);
    par pp = {.G = &G, .B = blocks_for(cg->target), .backward = false};
    pp.slot = slot_layout(&G, pp.B, false, false, false);
    pp.items = G.n_bh * ceil_div(G.T, pp.B.bq);
    pp.parts = parts_for(pp.items);
    LLVMValueRef vals[V_COUNT] = {0};
    uint32_t next = 3;
    vals[V_Q] = ins[0], vals[V_K] = ins[1], vals[V_V] = ins[2];
    if (G.has_mask) vals[V_MASK] = ins[next++];
    if (G.has_bias) vals[V_BIAS] = ins[next++];
    if (want.out) vals[V_OUT] = outs[ATTN_OUT];
    if (want.o) vals[V_O] = outs[ATTN_O];
    if (want.lse) vals[V_LSE] = outs[ATTN_LSE];
    rope_tables(&G, ins + n->n_in, vals);
    vals[V_STEP] = step;
    vals[V_SCRATCH] = scratch;
    emit_parallel(cg, "attn", &pp, vals);
}

void lower_attention_with_layout(lower_ctx *c, const attn_layout *lay)
{
    LLVMValueRef outs[ATTN_N_OPERANDS] = {0};
    outs[ATTN_OUT] = c->out;
    KILN_ASSERT(!lay || !lay->train_dropout); /* the table's kernels take no step counter */
    emit_forward(c->cg, c->g, c->node, (attn_fwd_want){true, false, false}, outs, c->in, NULL, c->scratch, lay);
}

void lower_attention_lse(lower_ctx *c)
{
    LLVMValueRef outs[ATTN_N_OPERANDS] = {0};
    outs[ATTN_LSE] = c->out;
    emit_forward(c->cg, c->g, c->node, (attn_fwd_want){false, false, true}, outs, c->in, NULL, c->scratch, NULL);
}

/* A kernel's parameters from p on, after its results: the node's inputs (in0, in1, …),
 * the rope tables (rope0, …), then the step counter and the scratch where taken. */
void kernel_inputs(LLVMValueRef fn, unsigned p, const kiln_node *n, const attn_layout *lay, bool takes_step,
                   bool has_scratch, LLVMValueRef *ins, LLVMValueRef *step, LLVMValueRef *scratch)
{
    for (uint32_t i = 0; i < n->n_in + n_rope_tables(lay); i++) {
        ins[i] = LLVMGetParam(fn, p++);
        char pname[16];
        if (i < n->n_in) snprintf(pname, sizeof pname, "in%u", i);
        else snprintf(pname, sizeof pname, "rope%u", i - n->n_in);
        LLVMSetValueName2(ins[i], pname, strlen(pname));
    }
    *step = takes_step ? LLVMGetParam(fn, p++) : NULL;
    *scratch = has_scratch ? LLVMGetParam(fn, p) : NULL;
}

LLVMValueRef lower_attention_forward_group(kiln_cg *cg, const kiln_graph *g, uint32_t node, attn_fwd_want want,
                                           bool has_scratch, const attn_layout *lay)
{
    const kiln_node *n = &g->nodes[node];
    char name[64];
    snprintf(name, sizeof name, "k%u_attention_%s%s%s", node, want.out ? "y" : "", want.o ? "o" : "", want.lse ? "l" : "");
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b); /* the caller's builder position, restored below */
    unsigned n_out = (unsigned)want.out + want.o + want.lse;
    bool takes_step = lay && lay->train_dropout && n->attrs.attn_dropout > 0;
    unsigned n_ptrs = n_out + n->n_in + n_rope_tables(lay) + (takes_step ? 1 : 0) + (has_scratch ? 1 : 0);
    LLVMValueRef fn = cg_kernel_begin(cg, name, cg->t_void, n_ptrs);
    LLVMValueRef outs[ATTN_N_OPERANDS] = {0}, ins[64];
    KILN_ASSERT(n->n_in + n_rope_tables(lay) <= 64);
    unsigned p = 0;
    static const char *const names[3] = {"out", "o", "lse"};
    static const attn_operand ops[3] = {ATTN_OUT, ATTN_O, ATTN_LSE};
    bool wanted[3] = {want.out, want.o, want.lse};
    for (int r = 0; r < 3; r++) {
        if (!wanted[r]) continue;
        outs[ops[r]] = LLVMGetParam(fn, p++);
        LLVMSetValueName2(outs[ops[r]], names[r], strlen(names[r]));
    }
    LLVMValueRef step, scratch;
    kernel_inputs(fn, p, n, lay, takes_step, has_scratch, ins, &step, &scratch);
    emit_forward(cg, g, n, want, outs, ins, step, scratch, lay);
    LLVMBuildRetVoid(cg->b);
    if (here) LLVMPositionBuilderAtEnd(cg->b, here);
    return fn;
}

void lower_attention(lower_ctx *c) { lower_attention_with_layout(c, NULL); }
