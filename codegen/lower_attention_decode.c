/* lower_attention_decode.c — the forward attention of one query per item (T = 1: a
 * decode step), split from lower_attention.c, whose opening comment describes the tiled
 * forward this path stands in for, its online softmax and its threads; part_body there
 * picks this path when decode_path says so. The emitter state and the shared emitters
 * are declared in attn_gen.h. */
#include "attn_gen.h"

/* ---- forward, one query per item (a decode step) ------------------------------------------------------ */

/* With one query (T = 1: a decode step) the tiles' BQ query lanes are one real lane and
 * the score tile broadcasts every key element: most of its work is padding. decode_item
 * instead keeps the query's dh floats and the output's dv floats in registers and walks
 * the keys, up to the last one the mask keeps, in blocks of St's size: a key's score is
 * a dot product along its contiguous row (vector FMAs, then a fixed tree across the
 * lanes), P·V adds p·V row by row. Keys the mask drops are not read at all (neither K nor
 * V rows, nor rotated with rope: in a decode step every cache row after the position).
 * Same online softmax, same −∞ and l = 0 rules as
 * forward_item; the sums run in another order, so the results agree with the tiles' to
 * rounding, and do not depend on the thread split. T5's relative bias and dropout stay on
 * the tiles (decode_path). */
enum { DEC_MAXV = 8 }; /* vectors of a query or output row kept in registers */

bool decode_path(const attn_geom *G, attn_blocks B)
{
    return G->T == 1 && !G->relative && !G->dropping && ceil_div(G->dh, B.w) <= DEC_MAXV &&
           ceil_div(G->dv, B.w) <= DEC_MAXV;
}

/* The sum of x's lanes: halves added until one is left (a fixed order). */
static LLVMValueRef lane_sum(ak *a, LLVMValueRef x)
{
    kiln_cg *cg = a->cg;
    for (int half = a->B.w / 2; half >= 1; half /= 2) {
        LLVMValueRef lo[16], hi[16];
        for (int i = 0; i < half; i++) lo[i] = cg_i32(cg, i), hi[i] = cg_i32(cg, half + i);
        LLVMValueRef p = LLVMGetPoison(LLVMTypeOf(x));
        LLVMValueRef l = LLVMBuildShuffleVector(cg->b, x, p, LLVMConstVector(lo, (unsigned)half), "");
        LLVMValueRef h = LLVMBuildShuffleVector(cg->b, x, p, LLVMConstVector(hi, (unsigned)half), "");
        x = LLVMBuildFAdd(cg->b, l, h, "");
    }
    return LLVMBuildExtractElement(cg->b, x, cg_i32(cg, 0), "");
}

/* Whether the key mask keeps key j (true without a mask). */
static LLVMValueRef key_kept(ak *a, LLVMValueRef j)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    if (!G->has_mask) return LLVMConstInt(cg->t_i1, 1, 0);
    LLVMValueRef m = cg_load(cg, G->mask_dt, a->mask, add(a, a->off[ATTN_MASK], j));
    return G->mask_dt == KILN_F32 ? LLVMBuildFCmp(cg->b, LLVMRealUNE, m, cg_f32(cg, 0.0), "")
                                  : LLVMBuildICmp(cg->b, LLVMIntNE, m, cg_i32(cg, 0), "");
}

void decode_item(ak *a, LLVMValueRef item)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    int w = a->B.w, nq = (int)ceil_div(G->dh, w), no = (int)ceil_div(G->dv, w);
    /* St holds a block's scores, padded with −∞ to whole vectors: `keys` + W ≤ its size */
    const int64_t keys = (int64_t)a->B.bk * a->B.bq - w;
    item_offsets(a, item);
    q_block_begin(a, cg_i64(cg, 0));
    LLVMValueRef Q = a->q, qoff = a->off[ATTN_Q];
    if (G->rope_q) { /* the query rotated into Qr */
        rotate_rows(a, a->Qr, a->q, ATTN_Q, a->qcos, a->qsin, cg_i64(cg, 0), cg_i64(cg, 1));
        Q = a->Qr, qoff = cg_i64(cg, 0);
    }
    LLVMValueRef qv[DEC_MAXV], O[DEC_MAXV];
    for (int v = 0; v < nq; v++) qv[v] = vload(a, Q, addc(a, qoff, (int64_t)v * w), lanes_of(a, G->dh, (int64_t)v * w));
    for (int v = 0; v < no; v++) O[v] = vlocal(a, "o", vconst(a, 0.0));
    LLVMValueRef m = vlocal(a, "m", vneg_inf(a)), l = vlocal(a, "l", vconst(a, 0.0));
    LLVMValueRef kend = key_end(a), K = a->k, koff = a->off[ATTN_K];
    int64_t ks = row_stride(a, ATTN_K), vs = row_stride(a, ATTN_V);
    if (G->has_mask) { /* keys up to the last one kept (a decode step: its position) */
        LLVMValueRef last = cg_local(cg, cg->t_i64, "kept_end");
        LLVMBuildStore(cg->b, cg_i64(cg, 0), last);
        cg_loop r;
        cg_loop_begin(cg, &r, cg_i64(cg, 0), kend, "kept");
        LLVMValueRef old = LLVMBuildLoad2(cg->b, cg->t_i64, last, "");
        LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, key_kept(a, r.i), addc(a, r.i, 1), old, ""), last);
        cg_loop_end(cg, &r);
        kend = LLVMBuildLoad2(cg->b, cg->t_i64, last, "");
    }
    if (G->rope_k) { /* the keys rotated into Kr, row-major */
        rotate_keys_upto(a, kend);
        K = a->Kr, koff = cg_i64(cg, 0), ks = G->dh;
    }
    LLVMValueRef scale = cg_f32(cg, G->scale), ninf = LLVMConstReal(cg->t_f32, -INFINITY);
    LLVMValueRef bmax = cg_local(cg, cg->t_f32, "bmax");

    cg_loop kb;
    cg_loop_begin(cg, &kb, cg_i64(cg, 0), LLVMBuildUDiv(cg->b, addc(a, kend, keys - 1), cg_i64(cg, keys), ""), "kblock");
    LLVMValueRef j0 = mulc(a, kb.i, keys), nk = imin(a, cg_i64(cg, keys), sub(a, kend, j0));
    /* scores: St[r] = scale·q·k_j (+ bias), −∞ for a dropped key */
    LLVMBuildStore(cg->b, ninf, bmax);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "key");
    LLVMValueRef j = add(a, j0, r.i), sp = cg_gep(cg, KILN_F32, a->St, r.i);
    LLVMBuildStore(cg->b, ninf, sp);
    cg_if kept;
    cg_if_begin(cg, &kept, key_kept(a, j));
    LLVMValueRef krow = add(a, koff, mulc(a, j, ks)), acc = NULL;
    for (int v = 0; v < nq; v++) {
        LLVMValueRef kv = vload(a, K, addc(a, krow, (int64_t)v * w), lanes_of(a, G->dh, (int64_t)v * w));
        acc = acc ? fma_v(a, qv[v], kv, acc) : cg_fmul(cg, qv[v], kv);
    }
    LLVMValueRef s = acc ? cg_fmul(cg, lane_sum(a, acc), scale) : cg_f32(cg, 0.0);
    if (G->alibi) { /* + slope·|j − i|, i = 0 as forward_item's lanes */
        LLVMValueRef slope = cg_load(cg, KILN_F32, a->bias, a->bias_off);
        LLVMValueRef dist = cg_intrinsic1(cg, "llvm.fabs", LLVMBuildSIToFP(cg->b, j, cg->t_f32, ""));
        LLVMTypeRef f = cg->t_f32;
        s = cg_intrinsic(cg, "llvm.fma", &f, 1, (LLVMValueRef[]){slope, dist, s}, 3);
    } else if (G->has_bias) {
        s = cg_fadd(cg, s, cg_load(cg, KILN_F32, a->bias, add(a, a->bias_off, mulc(a, j, G->bstride[G->r - 1]))));
    }
    LLVMBuildStore(cg->b, s, sp);
    LLVMBuildStore(cg->b, cg_intrinsic2(cg, "llvm.maximum", LLVMBuildLoad2(cg->b, cg->t_f32, bmax, ""), s), bmax);
    cg_if_end(cg, &kept);
    cg_loop_end(cg, &r);
    vstore(a, a->St, nk, vneg_inf(a), w); /* the last vector's lanes past nk */

    /* m' = max(m, block max); α = exp(m − m'); P = exp(St − m'); l = α·l + Σ P */
    LLVMValueRef mold = ld(a, m), mnew = vmax(a, mold, splat(a, LLVMBuildLoad2(cg->b, cg->t_f32, bmax, "")));
    LLVMValueRef msafe = safe_max(a, mnew), alpha = att_exp(cg, cg_fsub(cg, mold, msafe));
    st(a, m, mnew);
    LLVMValueRef lsum = vlocal(a, "lsum", vconst(a, 0.0));
    cg_loop c;
    cg_loop_begin(cg, &c, cg_i64(cg, 0), groups(a, nk, w), "exp");
    LLVMValueRef off = mulc(a, c.i, w), p = att_exp(cg, cg_fsub(cg, vload(a, a->St, off, w), msafe));
    vstore(a, a->St, off, p, w);
    st(a, lsum, cg_fadd(cg, ld(a, lsum), p));
    cg_loop_end(cg, &c);
    st(a, l, fma_v(a, ld(a, l), alpha, splat(a, lane_sum(a, ld(a, lsum)))));
    /* O = α·O + Σ p_j·v_j over the kept keys */
    for (int v = 0; v < no; v++) st(a, O[v], cg_fmul(cg, ld(a, O[v]), alpha));
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "pv");
    j = add(a, j0, r.i);
    cg_if_begin(cg, &kept, key_kept(a, j));
    LLVMValueRef pj = splat(a, cg_load(cg, KILN_F32, a->St, r.i)), vrow = add(a, a->off[ATTN_V], mulc(a, j, vs));
    for (int v = 0; v < no; v++)
        st(a, O[v], fma_v(a, pj, vload(a, a->v, addc(a, vrow, (int64_t)v * w), lanes_of(a, G->dv, (int64_t)v * w)),
                          ld(a, O[v])));
    cg_if_end(cg, &kept);
    cg_loop_end(cg, &r);
    cg_loop_end(cg, &kb);

    /* out (and o) = O / l; lse = m + log l, −∞ where no key was kept */
    LLVMValueRef lv = ld(a, l), inv = inv_sum(a, lv);
    for (int v = 0; v < no; v++) {
        LLVMValueRef y = cg_fmul(cg, ld(a, O[v]), inv);
        int lanes = lanes_of(a, G->dv, (int64_t)v * w);
        if (G->want.out) vstore(a, a->out, addc(a, a->off[ATTN_OUT], (int64_t)v * w), y, lanes);
        if (G->want.o) vstore(a, a->o, addc(a, a->off[ATTN_O], (int64_t)v * w), y, lanes);
    }
    if (G->want.lse) {
        LLVMValueRef none = LLVMBuildFCmp(cg->b, LLVMRealOEQ, lv, vconst(a, 0.0), "");
        LLVMValueRef lse = cg_fadd(cg, safe_max(a, ld(a, m)), cg_intrinsic1(cg, "llvm.log", lv));
        vstore(a, a->lse, a->off[ATTN_LSE], LLVMBuildSelect(cg->b, none, vneg_inf(a), lse, ""), 1);
    }
}
