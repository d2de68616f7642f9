/* gemm_epilogue.c — the GEMM's fused epilogue steps (codegen.h's order: scale, bias,
 * pre-activation output, activation, residual, accumulate), applied to a C tile's sums in
 * its last write, unrolled in registers or row by row through a stack stage; the "_e…"
 * part of function names. gemm.c's top comment, "Epilogues", says why the bits equal the
 * separate kernels'. Depends on gemm_gen.h and vmath.h only. */
#include <assert.h>
#include <math.h>
#include <stdio.h>

#include "gemm_gen.h"
#include "vmath.h" /* vm_sigmoid, vm_erfc, vm_gelu_tanh: the activations, as lower_elementwise.c */

bool gemm_has_scale(const kiln_gemm_epilogue *e) { return e->scale != 0 && e->scale != 1; }

/* An epilogue that changes nothing: the plain GEMM, today's functions exactly. */
bool gemm_epi_trivial(const kiln_gemm_epilogue *e) {
    return !e || (!e->accumulate && !gemm_has_scale(e) && !e->bias && !e->pre_out && e->act == KILN_GEMM_ACT_NONE &&
                  !e->residual);
}

static const char *const act_name[] = {"", "relu", "gelu", "gelu_tanh", "silu"};

/* "_e" + a letter per step present + the activation: the part of a function's name that
 * tells epilogues apart ("_ebr_gelu_tanh": bias, residual, gelu_tanh). The scale's value
 * and the strides are arguments of the shared functions, so they are not in it. */
void gemm_epi_code(const kiln_gemm_epilogue *e, char *buf, size_t size) {
    snprintf(buf, size, "_e%s%s%s%s%s%s%s", e->accumulate ? "a" : "", gemm_has_scale(e) ? "s" : "", e->bias ? "b" : "",
             e->pre_out ? "p" : "", e->residual ? "r" : "", e->act ? "_" : "", act_name[e->act]);
}

/* The activations, for a float or a <N x float>: lower_elementwise.c's f_relu, f_gelu,
 * f_gelu_tanh, f_silu operation for operation, with the same fast-math flags (cg_fmul
 * and cg_fadd carry `contract`, cg_fdiv nothing), so that the backend forms the same
 * FMAs inside a formula and the fused epilogue rounds like the separate kernel. */
static LLVMValueRef fconst(kiln_cg *cg, LLVMTypeRef ty, double v) {
    LLVMValueRef x = cg_f32(cg, v);
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind) return x;
    LLVMValueRef lanes[64];
    unsigned n = LLVMGetVectorSize(ty);
    assert(n <= 64);
    for (unsigned i = 0; i < n; i++) lanes[i] = x;
    return LLVMConstVector(lanes, n);
}

static LLVMValueRef epi_activation(kiln_cg *cg, kiln_gemm_act act, LLVMValueRef x) {
    LLVMTypeRef ty = LLVMTypeOf(x);
    switch (act) {
    case KILN_GEMM_ACT_NONE:
        return x;
    case KILN_GEMM_ACT_RELU: {  /* x < 0 ? 0 : x — NaN passes through */
        LLVMValueRef neg = LLVMBuildFCmp(cg->b, LLVMRealOLT, x, fconst(cg, ty, 0.0), "");
        return LLVMBuildSelect(cg->b, neg, fconst(cg, ty, 0.0), x, "");
    }
    case KILN_GEMM_ACT_GELU: {  /* ½·x·erfc(−x/√2) */
        LLVMValueRef t = vm_erfc(cg, cg_fmul(cg, x, fconst(cg, ty, -M_SQRT1_2)));
        return cg_fmul(cg, cg_fmul(cg, fconst(cg, ty, 0.5), x), t);
    }
    case KILN_GEMM_ACT_GELU_TANH:  /* x/(1 + e^−2u), u = √(2/π)·(x + 0.044715·x³) */
        return vm_gelu_tanh(cg, x);
    case KILN_GEMM_ACT_SILU:
        return cg_fmul(cg, x, vm_sigmoid(cg, x));
    }
    assert(0 && "unknown activation");
    return x;
}


/* What every row of an epilogue needs: the column masks (masked tiles), the bias vectors
 * and the scale, built once per tile. */
typedef struct epi_consts {
    LLVMValueRef colmask[NV], bias[NV], scale;
} epi_consts;

static epi_consts epi_consts_for(gen *g, const kiln_gemm_epilogue *e, const epi_ptrs *at_, LLVMValueRef cols,
                                 bool masked) {
    const int w = g->t.w;
    epi_consts k = {.scale = gemm_has_scale(e) ? splat(g, at_->scale, g->vd) : NULL};
    for (int v = 0; v < NV; v++) {
        k.colmask[v] = masked ? lanes_below(g, sub(g, cols, k64(g, v * w))) : NULL;
        k.bias[v] = NULL;
        if (!e->bias) continue;
        k.bias[v] = masked ? masked_load(g, at_any(g, at_->bias, k64(g, v * w)), k.colmask[v])
                           : load_aligned(g, g->vf, at(g, at_->bias, k64(g, v * w)), 4);
    }
    return k;
}

/* One row of a tile's last write: x[v] the row's sums, then the epilogue's steps
 * (codegen.h's order) and the stores into C (and P). Each step is a separate instruction
 * without fast-math flags (the activation aside, see epi_activation), so nothing
 * contracts across steps. row is the row's index in the tile; on (NULL: yes) whether it
 * is inside C, for a masked tile (see write_tile: a row past the end has its address
 * clamped to a valid row and all lanes off). */
static void epi_row(gen *g, const kiln_gemm_epilogue *e, const epi_consts *k, const epi_ptrs *at_,
                    const LLVMValueRef *x_in, LLVMValueRef row, LLVMValueRef on, bool masked) {
    const int w = g->t.w;
    kiln_cg cg = *g->cg;
    cg.b = g->b;
    LLVMValueRef none = LLVMConstNull(g->vmask);
    LLVMValueRef crow = at(g, at_->c, mul(g, row, at_->ldc));
    LLVMValueRef prow = e->pre_out ? at(g, at_->p, mul(g, row, at_->ldp)) : NULL;
    LLVMValueRef rrow = e->residual ? at(g, at_->r, mul(g, row, at_->ldr)) : NULL;
    for (int v = 0; v < NV; v++) {
        LLVMValueRef mask = !masked ? NULL : on ? LLVMBuildSelect(g->b, on, k->colmask[v], none, "") : k->colmask[v];
        LLVMValueRef off = k64(g, v * w);
        LLVMValueRef x = x_in[v];
        if (k->scale)  /* as the `scale` op: x·by in double, rounded once to f32 */
            x = LLVMBuildFPTrunc(g->b, LLVMBuildFMul(g->b, LLVMBuildFPExt(g->b, x, g->vd, ""), k->scale, ""), g->vf,
                                 "");
        if (e->bias) x = LLVMBuildFAdd(g->b, x, k->bias[v], "");
        if (e->pre_out) row_store(g, x, prow, off, mask);
        x = epi_activation(&cg, e->act, x);
        if (e->residual) x = LLVMBuildFAdd(g->b, x, row_load(g, rrow, off, mask), "");
        if (e->accumulate) x = LLVMBuildFAdd(g->b, row_load(g, crow, off, mask), x, "");
        row_store(g, x, crow, off, mask);
    }
}

/* The last write of a tile: epi_row on each of its MR rows, unrolled (sum[r][v] stay in
 * registers). masked as in write_tile. */
void gemm_write_epilogue(gen *g, const kiln_gemm_epilogue *e, LLVMValueRef sum[][NV], const epi_ptrs *at_,
                           LLVMValueRef rows, LLVMValueRef cols, bool masked) {
    epi_consts k = epi_consts_for(g, e, at_, cols, masked);
    for (int r = 0; r < g->t.mr; r++) {
        LLVMValueRef on = masked ? lt(g, k64(g, r), rows) : NULL;
        LLVMValueRef row = masked ? smin(g, k64(g, r), sub(g, rows, k64(g, 1))) : k64(g, r);
        epi_row(g, e, &k, at_, sum[r], row, on, masked);
    }
}

/* Whether a tile's epilogue goes through a row loop (gemm_write_epilogue_staged): the
 * activations built on exp, ~16–60 vector operations per vector of C. Unrolled over the
 * 24 accumulators of a 12×32 tile, LLVM's scheduler interleaved the 24 computations and
 * spilled their temporaries (even vm_gelu_tanh's 16 operations: 228 stack accesses in the
 * tile, and 1–2 % slower than the loop). */
bool gemm_epi_staged(const kiln_gemm_epilogue *e) {
    return e->act == KILN_GEMM_ACT_GELU || e->act == KILN_GEMM_ACT_GELU_TANH || e->act == KILN_GEMM_ACT_SILU;
}

/* The last write of a tile through `stage` (MR×NR floats on the stack, 64-byte aligned,
 * L1-resident): the sums are stored there, then one loop over the tile's rows (those
 * inside C) loads each row back and runs epi_row on it — one row's computation at a time,
 * so its temporaries and constants fit in registers and the code is one row long. The
 * same operations in the same order as gemm_write_epilogue: the same bits. */
void gemm_write_epilogue_staged(gen *g, const kiln_gemm_epilogue *e, LLVMValueRef sum[][NV], LLVMValueRef stage,
                                 const epi_ptrs *at_, LLVMValueRef rows, LLVMValueRef cols, bool masked) {
    const int w = g->t.w, mr = g->t.mr, nr = g->t.nr;
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV; v++) store_aligned(g, sum[r][v], at(g, stage, k64(g, r * nr + v * w)), 64);
    epi_consts k = epi_consts_for(g, e, at_, cols, masked);
    loop lr = loop_begin(g, k64(g, 0), masked ? smin(g, rows, k64(g, mr)) : k64(g, mr), 1, "epi.row");
    LLVMValueRef srow = at(g, stage, mul(g, lr.iv, k64(g, nr))), x[NV];
    for (int v = 0; v < NV; v++) x[v] = load_aligned(g, g->vf, at(g, srow, k64(g, v * w)), 64);
    epi_row(g, e, &k, at_, x, lr.iv, NULL, masked);
    loop_end(g, &lr);
}
