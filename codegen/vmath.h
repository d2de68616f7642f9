/* vmath.h — elementary functions emitted as LLVM IR (vmath.c), private to codegen/.
 *
 * Each emitter takes a value x of type float or <N x float> and returns f(x) of the same
 * type, built at cg->b as straight-line IR: float and integer arithmetic, llvm.fma,
 * llvm.fabs, llvm.copysign, selects and bitcasts, with no branch, no call and no
 * fast-math flag. So the same code serves scalar loop bodies (the loop vectoriser widens
 * it like any other arithmetic) and explicit vector kernels, and it gives the same bits
 * on every target with FMA (AVX-512, AVX2: IEEE operations and fused multiply-adds
 * only); targets without FMA get a multiply and an add instead, within the same bounds.
 *
 * Accuracy against double-precision libm rounded to float, over every float input
 * (tests/unit/test_vmath.c measures it; docs/codegen.md "Accuracy contract"):
 *
 *     exp, expm1, log, tanh ≤ 1 ulp;  sigmoid, erf ≤ 2 ulp;  erfc ≤ 3 ulp;  pow ≤ 1 ulp
 *     gelu_tanh ≤ 2 ulp for x ≥ −1; below, ≤ 9.7e-6 relative (8e-6 without FMA: the
 *     rounding of −2u in float, magnified by e^−2u), against x·σ(2u) in double
 *
 * and exactly libm's special values (gelu_tanh: NaN → NaN, ±0 → ±0, +inf → +inf,
 * −inf → NaN as ½·x·(1 + tanh u) gives in float, and results below 4·FLT_MIN in magnitude
 * may come out as ±0); the others: NaN in → NaN out, ±0, ±inf, overflow to +inf,
 * gradual underflow through the denormals to 0, log(0) = −inf, log(x < 0) = NaN, the
 * C99 Annex F cases of pow.
 */
#ifndef KILN_VMATH_H
#define KILN_VMATH_H

#include "codegen.h"

LLVMValueRef vm_exp(kiln_cg *cg, LLVMValueRef x);
LLVMValueRef vm_expm1(kiln_cg *cg, LLVMValueRef x);  /* e^x − 1, accurate near 0 */
LLVMValueRef vm_log(kiln_cg *cg, LLVMValueRef x);
LLVMValueRef vm_tanh(kiln_cg *cg, LLVMValueRef x);
LLVMValueRef vm_sigmoid(kiln_cg *cg, LLVMValueRef x); /* 1/(1 + e^−x), never overflows */
/* gelu with the tanh approximation, ½·x·(1 + tanh u) with u = √(2/π)·(x + 0.044715·x³),
 * computed as x/(1 + 2^(−2u/ln2)) (one exponential, one division): the one formula of the elementwise
 * kernel and the GEMM epilogue, so fused and separate results are the same bits. */
LLVMValueRef vm_gelu_tanh(kiln_cg *cg, LLVMValueRef x);
LLVMValueRef vm_erf(kiln_cg *cg, LLVMValueRef x);
LLVMValueRef vm_erfc(kiln_cg *cg, LLVMValueRef x);   /* 1 − erf(x), relative accuracy out to the tail */
/* x^y for float x, y of the same type; computed through double-precision log and exp
 * (a float log would cost ~|y·log x| ulp), so twice as expensive per element. */
LLVMValueRef vm_pow(kiln_cg *cg, LLVMValueRef x, LLVMValueRef y);

#endif
