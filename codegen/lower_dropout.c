/* lower_dropout.c — dropout inside a compiled training step.
 *
 * Outside training dropout is the identity (lower_elementwise.c). In a training step
 * (kiln_compile_request.train with .dropout) each DROPOUT node gets its own kernel
 *
 *     void k<id>_dropout_train(float *out, const float *x, const float *step)
 *
 * computing out[i] = keep(i) ? x[i] / (1 − p) : 0, where keep is exactly the reference
 * interpreter's kiln_interp_dropout_keep(seed, stream, i, p): the top 53 bits of
 * mix64(mix64(mix64(seed) ^ stream) ^ i) as a double u in [0, 1), kept when u ≥ p, with
 * mix64 splitmix64's output function. The run seed is the request's dropout_seed plus
 * the step counter read through `step` (the optimizer's optim.step: the steps taken
 * before this one), so every step draws new masks, a resumed run draws the same ones,
 * and the backward dropout autodiff emits — same stream, same shape — drops exactly the
 * elements the forward one dropped. The division is done in double and rounded once,
 * as the interpreter does, so compiled and interpreted steps agree bit for bit here.
 *
 * The step counter is read through a pointer that is not a graph edge; that is safe
 * because the counter's update (step + 1 reads the old value) is always copied after
 * the last kernel (memplan.c, place_updates), never written in place earlier.
 */
#include <stdio.h>

#include "lower.h"

static LLVMValueRef i64c(kiln_cg *cg, uint64_t v) { return LLVMConstInt(cg->t_i64, v, 0); }

LLVMValueRef cg_dropout_mix64(kiln_cg *cg, LLVMValueRef z)
{
    static const uint64_t k[6] = {0x9E3779B97F4A7C15ull, 30, 0xBF58476D1CE4E5B9ull, 27, 0x94D049BB133111EBull, 31};
    LLVMTypeRef t = LLVMTypeOf(z);
    unsigned lanes = LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetVectorSize(t) : 0;
    KILN_ASSERT(lanes <= 64);
    LLVMValueRef c[6], same[64];
    for (int i = 0; i < 6; i++) {
        c[i] = i64c(cg, k[i]);
        for (unsigned l = 0; l < lanes; l++) same[l] = c[i];
        if (lanes) c[i] = LLVMConstVector(same, lanes);
    }
    LLVMBuilderRef b = cg->b;
    z = LLVMBuildAdd(b, z, c[0], "");
    z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, c[1], ""), "");
    z = LLVMBuildMul(b, z, c[2], "");
    z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, c[3], ""), "");
    z = LLVMBuildMul(b, z, c[4], "");
    return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, c[5], ""), "");
}

LLVMValueRef lower_dropout_train(kiln_cg *cg, const kiln_graph *g, uint32_t id, uint64_t dropout_seed)
{
    const kiln_node *n = &g->nodes[id];
    KILN_ASSERT(n->op == KILN_OP_DROPOUT && n->type.dtype == KILN_F32);
    char name[64];
    snprintf(name, sizeof name, "k%u_dropout_train", id);
    LLVMValueRef fn = cg_kernel_begin(cg, name, cg->t_void, 3);
    LLVMValueRef out = LLVMGetParam(fn, 0), x = LLVMGetParam(fn, 1), step = LLVMGetParam(fn, 2);
    LLVMSetValueName2(out, "out", 3);
    LLVMSetValueName2(x, "in0", 3);
    LLVMSetValueName2(step, "step", 4);
    LLVMBuilderRef b = cg->b;
    double p = n->attrs.scalar;
    int64_t numel = kiln_type_numel(&n->type);
    if (numel > 0) {
        LLVMValueRef steps = LLVMBuildFPToUI(b, cg_load(cg, KILN_F32, step, cg_i64(cg, 0)), cg->t_i64, "steps");
        LLVMValueRef seed = LLVMBuildAdd(b, i64c(cg, dropout_seed), steps, "seed");
        LLVMValueRef stream = i64c(cg, (uint32_t)n->attrs.stream);
        LLVMValueRef per_node = cg_dropout_mix64(cg, LLVMBuildXor(b, cg_dropout_mix64(cg, seed), stream, ""));
        LLVMValueRef keep_scale = LLVMConstReal(cg->t_f64, 1.0 - p);
        cg_loop l;
        cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, numel), "i");
        LLVMValueRef h = cg_dropout_mix64(cg, LLVMBuildXor(b, per_node, l.i, ""));
        LLVMValueRef u = LLVMBuildFMul(b, LLVMBuildUIToFP(b, LLVMBuildLShr(b, h, i64c(cg, 11), ""), cg->t_f64, ""),
                                       LLVMConstReal(cg->t_f64, 0x1.0p-53), "u");
        LLVMValueRef keep = LLVMBuildFCmp(b, LLVMRealOGE, u, LLVMConstReal(cg->t_f64, p), "keep");
        LLVMValueRef wide = LLVMBuildFPExt(b, cg_load(cg, KILN_F32, x, l.i), cg->t_f64, "");
        LLVMValueRef y = LLVMBuildFPTrunc(b, LLVMBuildFDiv(b, wide, keep_scale, ""), cg->t_f32, "");
        cg_store(cg, KILN_F32, out, l.i, LLVMBuildSelect(b, keep, y, cg_f32(cg, 0.0), ""));
        cg_loop_end(cg, &l);
    }
    LLVMBuildRetVoid(b);
    return fn;
}
