/* lower_nn.c — matmul and attention.
 *
 * matmul: a nest over the broadcast batch dims (strides 0 where an operand broadcasts)
 * around one call per matrix of a 2-D GEMM function `void g(a, b, c, scratch)`, with the
 * GEMM's packing scratch planned in the workspace. `gemm_function` is the one place that
 * chooses the implementation: the packed, register-blocked kiln_cg_gemm of gemm.c.
 *
 * attention: per (batch…, head) and per query i, one row of scores over the kept keys
 * in workspace scratch (S floats; no T×S matrix): s_j = q_i·k_j·scale + bias, −inf for
 * a masked key; m = max; p_j = exp(s_j − m); out_i = Σ p_j·v_j / Σ p_j. With `causal`
 * only keys j ≤ i are visited. A row whose keys are all masked (m = −inf) gets zero
 * weights, so its output is 0 — the interpreter's rule (ir.h, KILN_A_ATTN).
 */
#include <math.h>
#include <stdio.h>

#include "lower.h"

/* ---- GEMM ---------------------------------------------------------------------------------- */

/* The one switch point between GEMM implementations (see the file comment). The GEMM
 * is defined in the separate GEMM module — it is explicit vector code, which O3 would
 * only make slower to compile (DESIGN.md) — and declared in the kernel's module; jit.c
 * links the two after optimising them differently and makes it internal again. */
static LLVMValueRef gemm_function(lower_ctx *c, const kiln_gemm_shape *s)
{
    LLVMValueRef def = kiln_cg_gemm(c->gemm_cg, s);
    LLVMSetLinkage(def, LLVMExternalLinkage); /* resolved by name at the link */
    size_t len;
    const char *name = LLVMGetValueName2(def, &len);
    LLVMValueRef decl = LLVMGetNamedFunction(c->cg->mod, name);
    return decl ? decl : LLVMAddFunction(c->cg->mod, name, LLVMGlobalGetValueType(def));
}
static int64_t gemm_scratch_floats(const kiln_target *t, const kiln_gemm_shape *s)
{
    return kiln_gemm_scratch_floats(t, s);
}

/* The 2-D problem of a matmul node (one batch element). */
static kiln_gemm_shape matmul_shape(const kiln_graph *g, const kiln_node *n)
{
    const kiln_type *at = &g->nodes[n->in[0]].type, *ot = &n->type;
    bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
    int64_t M = ot->dims[ot->rank - 2], N = ot->dims[ot->rank - 1];
    int64_t K = ta ? at->dims[at->rank - 2] : at->dims[at->rank - 1];
    return (kiln_gemm_shape){M, N, K, ta, tb, ta ? M : K, tb ? K : N, N};
}

/* Whether a batched matmul is one GEMM over all the batch's rows: A not transposed with
 * every batch dim of its own (rows of consecutive batch elements are consecutive rows),
 * B a single matrix shared by the whole batch (x·Wᵀ of a linear layer). */
static bool matmul_rows_flatten(const kiln_graph *g, const kiln_node *n)
{
    const kiln_type *at = &g->nodes[n->in[0]].type, *bt = &g->nodes[n->in[1]].type;
    if (n->type.rank <= 2 || n->attrs.transpose_a || at->rank != n->type.rank) return false;
    for (int d = 0; d < bt->rank - 2; d++)
        if (bt->dims[d] != 1) return false;
    return true;
}

int64_t matmul_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    kiln_gemm_shape s = matmul_shape(g, n);
    if (matmul_rows_flatten(g, n))
        for (int d = 0; d < n->type.rank - 2; d++) s.m *= n->type.dims[d];
    return gemm_scratch_floats(t, &s) * KILN_ELEM_BYTES;
}

void lower_matmul(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_node *n = c->node;
    const kiln_type *ot = &n->type;
    if (kiln_type_numel(ot) == 0) return;
    kiln_gemm_shape s = matmul_shape(c->g, n);
    int br = ot->rank - 2;
    if (matmul_rows_flatten(c->g, n)) { /* one GEMM over every row of the batch */
        for (int d = 0; d < br; d++) s.m *= ot->dims[d];
        LLVMValueRef gemm = gemm_function(c, &s);
        LLVMValueRef args[4] = {c->in[0], c->in[1], c->out, c->scratch ? c->scratch : LLVMConstPointerNull(cg->t_ptr)};
        LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(gemm), gemm, args, 4, "");
        return;
    }
    LLVMValueRef gemm = gemm_function(c, &s);

    /* batch dims: operand 0 = C, 1 = A, 2 = B, element strides of whole matrices */
    kiln_type abatch = *lower_in_type(c, 0), bbatch = *lower_in_type(c, 1);
    abatch.rank -= 2;
    bbatch.rank -= 2;
    int64_t dims[KILN_MAX_RANK], stride[3][KILN_MAX_RANK];
    for (int d = 0; d < br; d++) dims[d] = ot->dims[d];
    kiln_type cbatch = *ot;
    cbatch.rank = br;
    cg_row_major_strides(&cbatch, stride[0]);
    cg_bcast_strides(&abatch, br, stride[1]);
    cg_bcast_strides(&bbatch, br, stride[2]);
    for (int d = 0; d < br; d++) {
        stride[0][d] *= s.m * s.n;
        stride[1][d] *= s.m * s.k;
        stride[2][d] *= s.k * s.n;
    }
    int rank = cg_collapse_dims(br, dims, 3, stride);
    cg_nest nest;
    cg_nest_begin(cg, &nest, rank, dims, 3, stride, NULL);
    LLVMValueRef args[4] = {
        cg_gep(cg, KILN_F32, c->in[0], nest.off[1]),
        cg_gep(cg, KILN_F32, c->in[1], nest.off[2]),
        cg_gep(cg, KILN_F32, c->out, nest.off[0]),
        c->scratch ? c->scratch : LLVMConstPointerNull(cg->t_ptr),
    };
    LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(gemm), gemm, args, 4, "");
    cg_nest_end(cg, &nest);
}

/* ---- attention ------------------------------------------------------------------------------ */

int64_t attention_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    const kiln_type *kt = &g->nodes[n->in[1]].type;
    return kt->dims[kt->rank - 2] * KILN_ELEM_BYTES; /* one row of S scores */
}

void lower_attention(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_node *n = c->node;
    const kiln_attrs *a = &n->attrs;
    const kiln_type *qt = lower_in_type(c, 0), *kt = lower_in_type(c, 1), *vt = lower_in_type(c, 2);
    int r = qt->rank;
    int64_t T = qt->dims[r - 2], dh = qt->dims[r - 1], S = kt->dims[r - 2], dv = vt->dims[r - 1];
    if (kiln_type_numel(&n->type) == 0) return;
    if (S == 0) { /* no keys at all: every row is fully masked */
        cg_loop z;
        cg_loop_begin(cg, &z, cg_i64(cg, 0), cg_i64(cg, kiln_type_numel(&n->type)), "i");
        cg_store(cg, KILN_F32, c->out, z.i, cg_f32(cg, 0.0));
        cg_loop_end(cg, &z);
        return;
    }

    uint32_t next = 3;
    LLVMValueRef mask = NULL, bias = NULL;
    kiln_dtype mask_dt = KILN_F32;
    const kiln_type *mt = NULL;
    if (a->has_mask) {
        mt = lower_in_type(c, next);
        mask_dt = mt->dtype;
        mask = c->in[next++];
    }
    int64_t bstride[KILN_MAX_RANK] = {0};
    if (a->has_bias) {
        cg_bcast_strides(lower_in_type(c, next), r, bstride); /* over (…, H, T, S) */
        bias = c->in[next++];
    }

    /* the batch nest over (…, H): operands q, k, v, out, mask (no head dim), bias */
    enum { Q, K, V, O, M, B };
    int nb = r - 2;
    int64_t dims[KILN_MAX_RANK], stride[6][KILN_MAX_RANK] = {{0}};
    for (int d = 0; d < nb; d++) dims[d] = qt->dims[d];
    int64_t sq = T * dh, sk = S * dh, sv = S * dv, so = T * dv, sm = S;
    for (int d = nb - 1; d >= 0; d--) {
        stride[Q][d] = sq, stride[K][d] = sk, stride[V][d] = sv, stride[O][d] = so;
        sq *= dims[d], sk *= dims[d], sv *= dims[d], so *= dims[d];
        if (d < nb - 1) { /* the mask has the batch dims but not H (the last of them) */
            stride[M][d] = sm;
            sm *= dims[d];
        }
        stride[B][d] = bstride[d];
    }
    cg_nest batch;
    cg_nest_begin(cg, &batch, nb, dims, 6, stride, NULL);
    LLVMValueRef q0 = batch.off[Q], k0 = batch.off[K], v0 = batch.off[V], o0 = batch.off[O];
    LLVMValueRef m0 = batch.off[M], b0 = batch.off[B];

    cg_loop qi;
    cg_loop_begin(cg, &qi, cg_i64(cg, 0), cg_i64(cg, T), "query");
    LLVMValueRef i = qi.i;
    /* keys visited: [0, S), or [0, min(i + 1, S)) when causal */
    LLVMValueRef jend = cg_i64(cg, S);
    if (a->causal) {
        LLVMValueRef i1 = LLVMBuildNSWAdd(cg->b, i, cg_i64(cg, 1), "");
        jend = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, i1, jend, ""), i1, jend, "");
    }
    LLVMValueRef qrow = LLVMBuildNSWAdd(cg->b, q0, LLVMBuildNSWMul(cg->b, i, cg_i64(cg, dh), ""), "");
    LLVMValueRef orow = LLVMBuildNSWAdd(cg->b, o0, LLVMBuildNSWMul(cg->b, i, cg_i64(cg, dv), ""), "");
    LLVMValueRef brow = LLVMBuildNSWAdd(cg->b, b0, LLVMBuildNSWMul(cg->b, i, cg_i64(cg, bstride[r - 2]), ""), "");

    /* 1. scores s_j and their max */
    LLVMValueRef max = cg_local(cg, cg->t_f32, "max");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->t_f32, -INFINITY), max);
    cg_loop kj;
    cg_loop_begin(cg, &kj, cg_i64(cg, 0), jend, "key");
    LLVMValueRef j = kj.i;
    LLVMValueRef krow = LLVMBuildNSWAdd(cg->b, k0, LLVMBuildNSWMul(cg->b, j, cg_i64(cg, dh), ""), "");
    LLVMValueRef dot = cg_local(cg, cg->t_f32, "dot");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), dot);
    cg_loop d;
    cg_loop_begin(cg, &d, cg_i64(cg, 0), cg_i64(cg, dh), "d");
    LLVMValueRef prod = cg_fmul(cg, cg_load(cg, KILN_F32, c->in[0], LLVMBuildNSWAdd(cg->b, qrow, d.i, "")),
                                cg_load(cg, KILN_F32, c->in[1], LLVMBuildNSWAdd(cg->b, krow, d.i, "")));
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, dot, ""), prod), dot);
    cg_loop_end(cg, &d);
    LLVMValueRef s = cg_fmul(cg, LLVMBuildLoad2(cg->b, cg->t_f32, dot, ""), cg_f32(cg, a->scalar));
    if (bias) {
        LLVMValueRef boff = LLVMBuildNSWAdd(cg->b, brow, LLVMBuildNSWMul(cg->b, j, cg_i64(cg, bstride[r - 1]), ""), "");
        s = cg_fadd(cg, s, cg_load(cg, KILN_F32, bias, boff));
    }
    if (mask) {
        LLVMValueRef mv = cg_load(cg, mask_dt, mask, LLVMBuildNSWAdd(cg->b, m0, j, ""));
        LLVMValueRef masked = mask_dt == KILN_F32 ? LLVMBuildFCmp(cg->b, LLVMRealOEQ, mv, cg_f32(cg, 0.0), "")
                                                  : LLVMBuildICmp(cg->b, LLVMIntEQ, mv, cg_i32(cg, 0), "");
        s = LLVMBuildSelect(cg->b, masked, LLVMConstReal(cg->t_f32, -INFINITY), s, "");
    }
    cg_store(cg, KILN_F32, c->scratch, j, s);
    LLVMBuildStore(cg->b, cg_intrinsic2(cg, "llvm.maximum", LLVMBuildLoad2(cg->b, cg->t_f32, max, ""), s), max);
    cg_loop_end(cg, &kj);

    /* 2. out_i = 0; unless every key is masked: p_j = exp(s_j − m), out_i += p_j·v_j, /Σ */
    cg_loop e;
    cg_loop_begin(cg, &e, cg_i64(cg, 0), cg_i64(cg, dv), "e");
    cg_store(cg, KILN_F32, c->out, LLVMBuildNSWAdd(cg->b, orow, e.i, ""), cg_f32(cg, 0.0));
    cg_loop_end(cg, &e);
    LLVMValueRef m = LLVMBuildLoad2(cg->b, cg->t_f32, max, "");
    cg_if any;
    cg_if_begin(cg, &any, LLVMBuildFCmp(cg->b, LLVMRealUNE, m, LLVMConstReal(cg->t_f32, -INFINITY), ""));
    LLVMValueRef sum = cg_local(cg, cg->t_f32, "sum");
    LLVMBuildStore(cg->b, cg_f32(cg, 0.0), sum);
    cg_loop_begin(cg, &kj, cg_i64(cg, 0), jend, "key");
    LLVMValueRef p = cg_intrinsic1(cg, "llvm.exp", cg_fsub(cg, cg_load(cg, KILN_F32, c->scratch, kj.i), m));
    LLVMBuildStore(cg->b, cg_fadd_reduce(cg, LLVMBuildLoad2(cg->b, cg->t_f32, sum, ""), p), sum);
    LLVMValueRef vrow = LLVMBuildNSWAdd(cg->b, v0, LLVMBuildNSWMul(cg->b, kj.i, cg_i64(cg, dv), ""), "");
    cg_loop_begin(cg, &e, cg_i64(cg, 0), cg_i64(cg, dv), "e");
    LLVMValueRef ooff = LLVMBuildNSWAdd(cg->b, orow, e.i, "");
    LLVMValueRef acc = cg_fadd(cg, cg_load(cg, KILN_F32, c->out, ooff),
                               cg_fmul(cg, p, cg_load(cg, KILN_F32, c->in[2], LLVMBuildNSWAdd(cg->b, vrow, e.i, ""))));
    cg_store(cg, KILN_F32, c->out, ooff, acc);
    cg_loop_end(cg, &e);
    cg_loop_end(cg, &kj);
    LLVMValueRef total = LLVMBuildLoad2(cg->b, cg->t_f32, sum, "");
    cg_loop_begin(cg, &e, cg_i64(cg, 0), cg_i64(cg, dv), "e");
    ooff = LLVMBuildNSWAdd(cg->b, orow, e.i, "");
    cg_store(cg, KILN_F32, c->out, ooff, cg_fdiv(cg, cg_load(cg, KILN_F32, c->out, ooff), total));
    cg_loop_end(cg, &e);
    cg_if_end(cg, &any);

    cg_loop_end(cg, &qi);
    cg_nest_end(cg, &batch);
}
