/* lower_attention_backward.c — the attention backward kernel (FlashAttention-2's
 * recomputation: one kernel for any subset of dq, dk, dv, dscores, one pass over the key
 * blocks per query block) and its entry points, split from lower_attention.c, whose
 * opening comment describes the algorithm ("Backward, per (batch…, head)"), the tiles it
 * shares with the forward, its threads and edges. The emitter state and the shared
 * emitters are declared in attn_gen.h. */
#include <stdio.h>
#include <string.h>

#include "attn_gen.h"

/* ---- backward ------------------------------------------------------------------------------------------ */

/* With the forward's statistics (G->has_stats), for the current query block: the
 * exponent offset is the forward's lse (−∞, a query with no key kept, → 0: every score
 * of that row is −∞ and exp gives 0), P needs no 1/l (inv = 1), and Dn = Σ_e dO·O per
 * query (FlashAttention-2's D: Σ_j P·dP = dO·(P·V) = dO·O), from the packed dOt and
 * the forward output's block packed the same way (Ot). */
static void stats_from_forward(ak *a, LLVMValueRef *msafe, LLVMValueRef *inv, LLVMValueRef *Dn)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    int w = a->B.w, bq = a->B.bq;
    LLVMValueRef rows = splat(a, add(a, a->off[ATTN_LSE], a->i0));
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef lse = vgather(a, a->lse, add(a, rows, iota(a, cg->t_i64, v * w)), a->lane_ok[v]);
        st(a, msafe[v], safe_max(a, lse));
        st(a, inv[v], vconst(a, 1.0));
    }
    if (!Dn) return;
    /* O's block transposed first, as dOt is: W×W register transposes instead of a gather
     * per lane and column, which took ~9 % of the char_gpt backward kernel's samples */
    pack_transposed(a, a->Ot, a->o, ATTN_O, G->dv);
    LLVMValueRef acc[NQ];
    for (int v = 0; v < NQ; v++) acc[v] = vlocal(a, "D", vconst(a, 0.0));
    if (G->dv > 0) {
        cg_loop e;
        cg_loop_begin(cg, &e, cg_i64(cg, 0), cg_i64(cg, G->dv), "e");
        for (int v = 0; v < NQ; v++) {
            LLVMValueRef at_e = addc(a, mulc(a, e.i, bq), v * w);
            LLVMValueRef o = vload(a, a->Ot, at_e, w), dO = vload(a, a->dOt, at_e, w);
            st(a, acc[v], fma_v(a, dO, o, ld(a, acc[v])));
        }
        cg_loop_end(cg, &e);
    }
    for (int v = 0; v < NQ; v++) st(a, Dn[v], ld(a, acc[v]));
}

/* relative: the item's diagonal sums dRel[0, L) → its row of dscores (…, H, L) */
static void rel_out(ak *a)
{
    kiln_cg *cg = a->cg;
    int64_t L = a->G->rel_len;
    for (int64_t t = 0; t < L; t += a->B.w)
        vstore(a, a->ds, addc(a, a->off[ATTN_DSCORES], t), vload(a, a->dRel, cg_i64(cg, t), a->B.w), lanes_of(a, L, t));
}

void backward_item(ak *a, LLVMValueRef l, grad_want gw)
{
    kiln_cg *cg = a->cg;
    const attn_geom *G = a->G;
    int w = a->B.w, bq = a->B.bq;
    bool need_ds = want_ds(gw);
    item_offsets(a, l);
    LLVMValueRef S = cg_i64(cg, G->S), T = cg_i64(cg, G->T);
    if (G->rope_k) rotate_rows(a, a->Kr, a->k, ATTN_K, a->kcos, a->ksin, cg_i64(cg, 0), S); /* the item's keys */
    if (gw.dk) zero_rows(a, a->dk, a->off[ATTN_DK], S, row_stride(a, ATTN_DK), G->dh);
    if (gw.dv) zero_rows(a, a->dv, a->off[ATTN_DV], S, row_stride(a, ATTN_DV), G->dv);
    if (G->relative) rel_table(a);
    if (gw.ds && G->relative) /* the diagonal sums accumulate in scratch */
        LLVMBuildMemSet(cg->b, a->dRel, LLVMConstInt(LLVMInt8TypeInContext(cg->ctx), 0, 0),
                        cg_i64(cg, (G->rel_len + a->B.bq) * KILN_ELEM_BYTES), KILN_ELEM_BYTES);
    else if (gw.ds) zero_rows(a, a->ds, a->off[ATTN_DSCORES], T, row_stride(a, ATTN_DSCORES), G->S);

    cg_loop qb;
    cg_loop_begin(cg, &qb, cg_i64(cg, 0), cg_i64(cg, ceil_div(G->T, bq)), "qblock");
    q_block_begin(a, qb.i);
    pack_queries(a);
    if (need_ds) pack_transposed(a, a->dOt, a->g, ATTN_G, G->dv);
    if (gw.dq)
        zero_rows(a, a->dq, add(a, a->off[ATTN_DQ], mulc(a, a->i0, row_stride(a, ATTN_DQ))), a->nqv,
                  row_stride(a, ATTN_DQ), G->dh);
    LLVMValueRef kend = key_end(a);

    /* Two passes over the key blocks, one loop (the score tiles are emitted once):
     * pass 1 (pass.i = 0) computes the row statistics m, l and D = Σ_j P·dP, pass 2 the
     * gradients. */
    LLVMValueRef m[NQ], s[NQ], D[NQ], msafe[NQ], inv[NQ], Dn[NQ];
    for (int v = 0; v < NQ; v++) {
        m[v] = vlocal(a, "m", vneg_inf(a));
        s[v] = vlocal(a, "l", vconst(a, 0.0));
        D[v] = vlocal(a, "D", vconst(a, 0.0));
        msafe[v] = cg_local(cg, a->vt, "msafe");
        inv[v] = cg_local(cg, a->vt, "inv");
        Dn[v] = cg_local(cg, a->vt, "Dn");
    }
    if (G->has_stats) stats_from_forward(a, msafe, inv, need_ds ? Dn : NULL);
    cg_loop pass, kb;
    LLVMValueRef first = NULL;
    if (!G->has_stats) {
        cg_loop_begin(cg, &pass, cg_i64(cg, 0), cg_i64(cg, 2), "pass");
        first = LLVMBuildICmp(cg->b, LLVMIntEQ, pass.i, cg_i64(cg, 0), "");
    }
    LLVMValueRef j0, nk;
    key_blocks_begin(a, &kb, kend, &j0, &nk);
    cg_if live; /* padding-only key blocks contribute nothing: skipped */
    if (G->has_mask) cg_if_begin(cg, &live, block_has_key(a, j0, nk));
    score_block(a, a->k, ATTN_K, G->dh, a->Qt, a->St, j0, nk, true);
    LLVMValueRef bmax[NQ];
    for (int v = 0; v < NQ; v++) bmax[v] = G->has_stats ? NULL : vlocal(a, "bmax", vneg_inf(a));
    block_mask_max(a, j0, nk, G->has_stats ? NULL : bmax);
    if (need_ds) score_block(a, a->v, ATTN_V, G->dv, a->dOt, a->dPt, j0, nk, false);
    LLVMBasicBlockRef next = NULL;
    if (!G->has_stats) {
        LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
        LLVMBasicBlockRef stats = LLVMAppendBasicBlockInContext(cg->ctx, fn, "stats");
        LLVMBasicBlockRef grads = LLVMAppendBasicBlockInContext(cg->ctx, fn, "grads");
        next = LLVMAppendBasicBlockInContext(cg->ctx, fn, "next");
        LLVMBuildCondBr(cg->b, first, stats, grads);
        LLVMPositionBuilderAtEnd(cg->b, stats);
        online_step(a, j0, nk, bmax, m, s, need_ds ? D : NULL, false);
        LLVMBuildBr(cg->b, next);
        LLVMPositionBuilderAtEnd(cg->b, grads);
    }

    /* pass 2 (the only one with the forward's statistics): P, dS and the products, block
     * by block */
    LLVMValueRef scale = vconst(a, G->scale);
    cg_loop r;
    cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "row");
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef off = addc(a, mulc(a, r.i, bq), v * w);
        LLVMValueRef p = cg_fmul(cg, att_exp(cg, cg_fsub(cg, vload(a, a->St, off, w), ld(a, msafe[v]))), ld(a, inv[v]));
        /* dropout: the forward used P·M, so dV takes P·M and the softmax sees M·dP */
        LLVMValueRef M = G->dropping ? drop_scale(a, add(a, j0, r.i), v) : NULL;
        vstore(a, a->St, off, M ? cg_fmul(cg, p, M) : p, w);
        if (need_ds) {
            LLVMValueRef dP = vload(a, a->dPt, off, w);
            if (M) dP = cg_fmul(cg, dP, M);
            LLVMValueRef dS = cg_fmul(cg, p, cg_fsub(cg, dP, ld(a, Dn[v])));
            vstore(a, a->dPt, off, gw.ds ? dS : cg_fmul(cg, dS, scale), w); /* dq, dk want scale·dS */
        }
    }
    cg_loop_end(cg, &r);
    if (gw.ds && G->relative) { /* dRel[i − j + S − 1] += dS[κ][i], key row by key row */
        cg_loop kk;
        cg_loop_begin(cg, &kk, cg_i64(cg, 0), nk, "j");
        for (int v = 0; v < NQ; v++) {
            LLVMValueRef dS = vload(a, a->dPt, addc(a, mulc(a, kk.i, bq), v * w), w);
            dS = LLVMBuildSelect(cg->b, a->lane_ok[v], dS, vconst(a, 0.0), ""); /* lanes past T add nothing */
            LLVMValueRef t0 = addc(a, sub(a, a->i0, add(a, j0, kk.i)), v * w + G->S - 1);
            vstore(a, a->dRel, t0, cg_fadd(cg, vload(a, a->dRel, t0, w), dS), w);
        }
        cg_loop_end(cg, &kk);
    }
    if (gw.ds) { /* dscores[i0 + i][j0 + κ] = dS[κ][i] (relative: above), then scale for dq, dk */
        cg_loop i, kk;
        if (!G->relative) {
            cg_loop_begin(cg, &i, cg_i64(cg, 0), a->nqv, "i");
            LLVMValueRef drow = add(a, a->off[ATTN_DSCORES], add(a, mulc(a, add(a, a->i0, i.i), row_stride(a, ATTN_DSCORES)), j0));
            cg_loop_begin(cg, &kk, cg_i64(cg, 0), nk, "j");
            cg_store(cg, KILN_F32, a->ds, add(a, drow, kk.i), cg_load(cg, KILN_F32, a->dPt, add(a, mulc(a, kk.i, bq), i.i)));
            cg_loop_end(cg, &kk);
            cg_loop_end(cg, &i);
        }
        if (gw.dq || gw.dk) {
            cg_loop_begin(cg, &r, cg_i64(cg, 0), nk, "row");
            for (int v = 0; v < NQ; v++) {
                LLVMValueRef off = addc(a, mulc(a, r.i, bq), v * w);
                vstore(a, a->dPt, off, cg_fmul(cg, vload(a, a->dPt, off, w), scale), w);
            }
            cg_loop_end(cg, &r);
        }
    }
    if (gw.dv) { /* dV[j0 + κ] += Σ_i P[κ][i]·dO[i0 + i] */
        upd u = {.Cp = a->dv, .coff = add(a, a->off[ATTN_DV], mulc(a, j0, row_stride(a, ATTN_DV))),
                 .cs = row_stride(a, ATTN_DV), .rows = a->B.bk, .nrows = nk, .dummy_tail = true, .A = a->St, .ar = bq, .ak = 1,
                 .Bp = a->g, .boff = add(a, a->off[ATTN_G], mulc(a, a->i0, row_stride(a, ATTN_G))),
                 .bs = row_stride(a, ATTN_G), .nk = a->nqv, .E = G->dv};
        update(a, &u);
    }
    if (gw.dk) { /* dK[j0 + κ] += Σ_i scale·dS[κ][i]·Q[i0 + i] */
        upd u = {.Cp = a->dk, .coff = add(a, a->off[ATTN_DK], mulc(a, j0, row_stride(a, ATTN_DK))),
                 .cs = row_stride(a, ATTN_DK), .rows = a->B.bk, .nrows = nk, .dummy_tail = true, .A = a->dPt, .ar = bq, .ak = 1,
                 .Bp = a->q, .boff = add(a, a->off[ATTN_Q], mulc(a, a->i0, row_stride(a, ATTN_Q))),
                 .bs = row_stride(a, ATTN_Q), .nk = a->nqv, .E = G->dh};
        if (G->rope_q) u.Bp = a->Qr, u.boff = cg_i64(cg, 0), u.bs = G->dh; /* the rotated queries */
        update(a, &u);
    }
    if (gw.dq) { /* dQ[i0 + i] += Σ_κ scale·dS[κ][i]·K[j0 + κ] */
        upd u = {.Cp = a->dq, .coff = add(a, a->off[ATTN_DQ], mulc(a, a->i0, row_stride(a, ATTN_DQ))),
                 .cs = row_stride(a, ATTN_DQ), .rows = bq, .nrows = a->nqv, .dummy_tail = true, .A = a->dPt, .ar = 1, .ak = bq,
                 .Bp = a->k, .boff = add(a, a->off[ATTN_K], mulc(a, j0, row_stride(a, ATTN_K))),
                 .bs = row_stride(a, ATTN_K), .nk = nk, .E = G->dh};
        if (G->rope_k) u.Bp = a->Kr, u.boff = mulc(a, j0, G->dh), u.bs = G->dh; /* the rotated keys */
        update(a, &u);
    }
    if (G->has_stats) {
        if (G->has_mask) cg_if_end(cg, &live);
        cg_loop_end(cg, &kb);
        if (gw.dq && G->unrope_q) unrotate_rows(a, a->dq, ATTN_DQ, a->qcos, a->qsin, a->i0, a->nqv); /* rows done */
        cg_loop_end(cg, &qb);
        if (gw.dk && G->unrope_k) unrotate_rows(a, a->dk, ATTN_DK, a->kcos, a->ksin, cg_i64(cg, 0), S);
        if (gw.ds && G->relative) rel_out(a);
        return;
    }
    LLVMBuildBr(cg->b, next);
    LLVMPositionBuilderAtEnd(cg->b, next);
    if (G->has_mask) cg_if_end(cg, &live);
    cg_loop_end(cg, &kb);
    /* after pass 1: the exponent offsets, 1/l and D = Σ_j P·dP with P normalised */
    cg_if after_stats;
    cg_if_begin(cg, &after_stats, first);
    for (int v = 0; v < NQ; v++) {
        LLVMValueRef iv = inv_sum(a, ld(a, s[v]));
        st(a, msafe[v], safe_max(a, ld(a, m[v])));
        st(a, inv[v], iv);
        st(a, Dn[v], cg_fmul(cg, ld(a, D[v]), iv));
    }
    cg_if_end(cg, &after_stats);
    cg_loop_end(cg, &pass);
    if (gw.dq && G->unrope_q) unrotate_rows(a, a->dq, ATTN_DQ, a->qcos, a->qsin, a->i0, a->nqv); /* rows done */
    cg_loop_end(cg, &qb);
    if (gw.dk && G->unrope_k) unrotate_rows(a, a->dk, ATTN_DK, a->kcos, a->ksin, cg_i64(cg, 0), S);
    if (gw.ds && G->relative) rel_out(a);
}


/* ---- backward entry points -------------------------------------------------------------------------------- */

/* The first node given, and which gradients are asked for. */
static const kiln_node *group_node(const kiln_graph *g, const uint32_t node_of_wrt[KILN_WRT_COUNT], grad_want *gw)
{
    const kiln_node *n = NULL;
    *gw = (grad_want){node_of_wrt[KILN_WRT_Q] != KILN_NONE, node_of_wrt[KILN_WRT_K] != KILN_NONE,
                      node_of_wrt[KILN_WRT_V] != KILN_NONE, node_of_wrt[KILN_WRT_SCORES] != KILN_NONE};
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        if (node_of_wrt[w] == KILN_NONE) continue;
        const kiln_node *m = &g->nodes[node_of_wrt[w]];
        KILN_ASSERT(m->op == KILN_OP_ATTENTION_GRAD && m->attrs.wrt == w);
        if (!n) n = m;
        else KILN_ASSERT(m->n_in == n->n_in && !memcmp(m->in, n->in, n->n_in * sizeof *m->in));
    }
    KILN_ASSERT(n != NULL);
    return n;
}

int64_t attention_grad_group_scratch_bytes(const kiln_graph *g, const uint32_t node_of_wrt[KILN_WRT_COUNT],
                                           const kiln_target *t, const attn_layout *lay)
{
    grad_want gw;
    const kiln_node *n = group_node(g, node_of_wrt, &gw);
    attn_geom G;
    geom_init(&G, g, n, lay);
    if (G.n_bh == 0 || G.T == 0 || G.S == 0) return 0;
    attn_blocks B = blocks_for(t);
    return parts_for(G.n_bh) * slot_layout(&G, B, true, want_ds(gw), gw.ds).floats * KILN_ELEM_BYTES;
}

/* The body of a gradient kernel: outs[w] for the wanted w, ins[] the shared inputs. */
static void emit_grad(kiln_cg *cg, const kiln_graph *g, const uint32_t node_of_wrt[KILN_WRT_COUNT],
                      const LLVMValueRef outs[KILN_WRT_COUNT], const LLVMValueRef *ins, LLVMValueRef step,
                      LLVMValueRef scratch, const attn_layout *lay)
{
    grad_want gw;
    const kiln_node *n = group_node(g, node_of_wrt, &gw);
    attn_geom G;
    geom_init(&G, g, n, lay);
    if (G.n_bh == 0) return;
    if (G.T == 0 || G.S == 0) { /* nothing flows: whatever exists is 0 */
        if (gw.dq) zero_operand(cg, &G, outs[KILN_WRT_Q], ATTN_DQ, G.T, G.dh);
        if (gw.dk) zero_operand(cg, &G, outs[KILN_WRT_K], ATTN_DK, G.S, G.dh);
        if (gw.dv) zero_operand(cg, &G, outs[KILN_WRT_V], ATTN_DV, G.S, G.dv);
        if (gw.ds) zero_operand(cg, &G, outs[KILN_WRT_SCORES], ATTN_DSCORES, G.relative ? 1 : G.T,
                                G.relative ? G.rel_len : G.S);
        return;
    }
    KILN_ASSERT(scratch != NULL);
    par pp = {.G = &G, .B = blocks_for(cg->target), .backward = true, .gw = gw};
    pp.slot = slot_layout(&G, pp.B, true, want_ds(gw), gw.ds);
    pp.items = G.n_bh;
    pp.parts = parts_for(pp.items);
    LLVMValueRef vals[V_COUNT] = {0};
    uint32_t next = 3;
    vals[V_Q] = ins[0], vals[V_K] = ins[1], vals[V_V] = ins[2];
    if (G.has_mask) vals[V_MASK] = ins[next++];
    if (G.has_bias) vals[V_BIAS] = ins[next++];
    if (G.has_stats) vals[V_O] = ins[next++], vals[V_LSE] = ins[next++];
    vals[V_G] = ins[n->n_in - 1];
    vals[V_DQ] = outs[KILN_WRT_Q], vals[V_DK] = outs[KILN_WRT_K], vals[V_DV] = outs[KILN_WRT_V];
    vals[V_DS] = outs[KILN_WRT_SCORES];
    rope_tables(&G, ins + n->n_in, vals);
    vals[V_STEP] = step;
    vals[V_SCRATCH] = scratch;
    emit_parallel(cg, "attn_grad", &pp, vals);
}

LLVMValueRef lower_attention_grad_group_with_layout(kiln_cg *cg, const kiln_graph *g,
                                                    const uint32_t node_of_wrt[KILN_WRT_COUNT], bool has_scratch,
                                                    const attn_layout *lay)
{
    grad_want gw;
    const kiln_node *n = group_node(g, node_of_wrt, &gw);
    uint32_t first = KILN_NONE;
    char name[64], wrts[KILN_WRT_COUNT + 1] = {0};
    int n_out = 0;
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        if (node_of_wrt[w] == KILN_NONE) continue;
        if (first == KILN_NONE) first = node_of_wrt[w];
        wrts[n_out++] = "qkvs"[w];
    }
    snprintf(name, sizeof name, "k%u_attention_grad_%s", first, wrts);
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b); /* the caller's builder position, restored below */
    bool takes_step = lay && lay->train_dropout && n->attrs.attn_dropout > 0;
    unsigned n_ptrs = (unsigned)n_out + n->n_in + n_rope_tables(lay) + (takes_step ? 1 : 0) + (has_scratch ? 1 : 0);
    LLVMValueRef fn = cg_kernel_begin(cg, name, cg->t_void, n_ptrs);
    LLVMValueRef outs[KILN_WRT_COUNT] = {0}, ins[64];
    KILN_ASSERT(n->n_in + n_rope_tables(lay) <= 64);
    unsigned p = 0;
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        if (node_of_wrt[w] == KILN_NONE) continue;
        outs[w] = LLVMGetParam(fn, p++);
        char pname[16];
        snprintf(pname, sizeof pname, "d%s", kiln_wrt_names[w]);
        LLVMSetValueName2(outs[w], pname, strlen(pname));
    }
    LLVMValueRef step, scratch;
    kernel_inputs(fn, p, n, lay, takes_step, has_scratch, ins, &step, &scratch);
    emit_grad(cg, g, node_of_wrt, outs, ins, step, scratch, lay);
    LLVMBuildRetVoid(cg->b);
    if (here) LLVMPositionBuilderAtEnd(cg->b, here);
    return fn;
}

/* The per-node kernel: the group with one gradient. */
static void single(const kiln_node *n, uint32_t id, uint32_t node_of_wrt[KILN_WRT_COUNT])
{
    for (int w = 0; w < KILN_WRT_COUNT; w++) node_of_wrt[w] = KILN_NONE;
    node_of_wrt[n->attrs.wrt] = id;
}

int64_t attention_grad_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    uint32_t node_of_wrt[KILN_WRT_COUNT];
    single(n, (uint32_t)(n - g->nodes), node_of_wrt);
    return attention_grad_group_scratch_bytes(g, node_of_wrt, t, NULL);
}

void lower_attention_grad(lower_ctx *c)
{
    uint32_t node_of_wrt[KILN_WRT_COUNT];
    single(c->node, c->id, node_of_wrt);
    LLVMValueRef outs[KILN_WRT_COUNT] = {0};
    outs[c->node->attrs.wrt] = c->out;
    emit_grad(c->cg, c->g, node_of_wrt, outs, c->in, NULL, c->scratch, NULL);
}
