/* lower_nn.c — matmul (attention is in lower_attention.c).
 *
 * matmul: a nest over the broadcast batch dims (strides 0 where an operand broadcasts)
 * around one call per matrix of a 2-D GEMM function `void g(a, b, c, scratch)`, with the
 * GEMM's packing scratch planned in the workspace. `gemm_function` is the one place that
 * chooses the implementation: the packed, register-blocked kiln_cg_gemm of gemm.c.
 */
#include <math.h>
#include <stdio.h>

#include "lower.h"

/* ---- GEMM ---------------------------------------------------------------------------------- */

/* The one switch point between GEMM implementations (see the file comment). The GEMM
 * is defined in the separate GEMM module — it is explicit vector code, which O3 would
 * only make slower to compile (../shared/DESIGN.md) — and declared in the kernel's module; jit.c
 * links the two after optimising them differently and makes it internal again. */
/* A GEMM parameter's or result's type, in cg's context: the JIT builds the GEMM module in
 * a context of its own, to compile it on a second thread (jit.c). */
static LLVMTypeRef type_here(kiln_cg *cg, LLVMTypeRef t)
{
    switch (LLVMGetTypeKind(t)) {
    case LLVMVoidTypeKind: return cg->t_void;
    case LLVMPointerTypeKind: return cg->t_ptr;
    case LLVMFloatTypeKind: return cg->t_f32;
    case LLVMDoubleTypeKind: return cg->t_f64;
    case LLVMIntegerTypeKind: return LLVMIntTypeInContext(cg->ctx, LLVMGetIntTypeWidth(t));
    default: KILN_ASSERT(!"a GEMM function takes only pointers, integers and floats"); return NULL;
    }
}

LLVMValueRef lower_gemm_declare(kiln_cg *cg, LLVMValueRef def)
{
    LLVMSetLinkage(def, LLVMExternalLinkage); /* resolved by name at the link */
    size_t len;
    const char *name = LLVMGetValueName2(def, &len);
    LLVMValueRef decl = LLVMGetNamedFunction(cg->mod, name);
    if (decl) return decl;
    LLVMTypeRef ft = LLVMGlobalGetValueType(def), params[16];
    unsigned n = LLVMCountParamTypes(ft);
    KILN_ASSERT(n <= 16);
    LLVMGetParamTypes(ft, params);
    for (unsigned i = 0; i < n; i++) params[i] = type_here(cg, params[i]);
    LLVMTypeRef here = LLVMFunctionType(type_here(cg, LLVMGetReturnType(ft)), params, n, LLVMIsFunctionVarArg(ft));
    return LLVMAddFunction(cg->mod, name, here);
}

static LLVMValueRef gemm_function(lower_ctx *c, const kiln_gemm_shape *s)
{
    return lower_gemm_declare(c->cg, kiln_cg_gemm(c->gemm_cg, s));
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

/* Whether a batched matmul is one GEMM over all the batch's rows (passes/fuse.c decides,
 * since a GEMM kernel's epilogue depends on it). */
static bool matmul_rows_flatten(const kiln_graph *g, const kiln_node *n)
{
    return n->type.rank > 2 && kiln_matmul_is_one_gemm(g, n);
}

kiln_gemm_shape lower_one_gemm_shape(const kiln_graph *g, const kiln_node *n)
{
    kiln_gemm_shape s = matmul_shape(g, n);
    if (matmul_rows_flatten(g, n))
        for (int d = 0; d < n->type.rank - 2; d++) s.m *= n->type.dims[d];
    return s;
}

int64_t matmul_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t)
{
    kiln_gemm_shape s = lower_one_gemm_shape(g, n);
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
