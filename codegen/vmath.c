/* vmath.c — exp, expm1, log, tanh, sigmoid, gelu_tanh, erf, erfc and pow as branch-free LLVM IR
 * on float or <N x float> values (vmath.h states the contract and the measured errors).
 *
 * Design. libm's expf/tanhf/erfcf are scalar calls the loop vectoriser cannot widen
 * (LLVM has no vector library for them here), so every kernel using them ran one element
 * at a time. These emitters produce the same functions as plain arithmetic instead:
 *
 * - exp: x = k·ln2 + r with k = round(x/ln2) found by adding 1.5·2^23 (the sum's low
 *   mantissa bits are k, read back as an integer: no float→int conversion, which would
 *   be poison for NaN), r by a two-constant Cody–Waite reduction through fma (ln2_hi has
 *   15 significant bits, so k·ln2_hi is exact for |k| ≤ 2^8), |r| ≤ ln2/2;
 *   e^r = 1 + r + r²·Q(r) with Q of degree 4. 2^k is applied as two factors 2^(k>>1) and
 *   2^(k−(k>>1)), each a normal float built from its exponent bits: the first product is
 *   exact and the second rounds once, so results in the denormal range round correctly
 *   and k = 128 overflows to +inf as it should. x is clamped to [−104, 89] first
 *   (e^−104 < 2^−150 rounds to 0, e^89 > FLT_MAX), which also maps ±inf; NaN passes the
 *   clamps (ordered compares are false) and propagates through the arithmetic.
 * - expm1: the same reduction (with Q of degree 5); e^x − 1 = 2^k·(e^r − 1) + (2^k − 1)
 *   is one fma, exact in its parts for the k where cancellation could occur; k = 128 uses
 *   2^127 and a final doubling; −0 is returned as is.
 * - log: denormals are scaled by 2^23 first; x = 2^e·m with m ∈ [√½, √2) by subtracting
 *   the bits of √½ (so e and m come from one integer subtraction); f = m − 1 (exact),
 *   s = f/(2 + f), log m = f − f²/2 + s·(f²/2 + R(s²)) (the big term f is exact), then
 *   e·ln2 added in two parts. Special values by selects at the end.
 * - tanh: |x| < 0.55: a + a³·T(a²); else 1 − 2/(e^{2a} + 1) with a clamped to 9.1
 *   (tanh rounds to 1 beyond 9.01); the sign copied from x (−0 stays −0).
 * - sigmoid: e = e^{−|x|} ≤ 1 (never overflows), (x ≥ 0 ? 1 : e)/(1 + e): one division.
 * - gelu_tanh: x/(1 + 2^w), w = −2u/ln2 = x·(c1 + c2·x²): one exponential, one division,
 *   no select (x·σ(2u) through sigmoid took ~38 vector operations, this 16). 1 + 2^w needs
 *   no denormal 2^w (one_plus_exp2): one scaling 2^(k−1) built from the rounding sum's
 *   bits, k clamped so that it comes out 0 or +inf at the ends, and w − k is exact, so
 *   there is no Cody–Waite reduction; 2^w = +inf gives x/inf = ±0 (tails below 4·FLT_MIN
 *   flush to 0), x = −inf gives NaN, as the float formula ½·x·(1 + tanh u) does.
 * - erf, erfc: |x| < 0.5: erf = x + x·E(x²) and erfc = 1 − erf. Otherwise, with
 *   a = min(|x|, 10.3) (erfc(10.06) already rounds to 0),
 *   erfc(a) = e^{−a²}·H(t)/(a + 1), t = (a − 1)/(a + 1), H of degree 10; a² is carried
 *   as hi + lo (lo = fma(a, a, −hi), exact) because e^{−a²} magnifies an error in a² by
 *   a² ≈ 100; lo is folded into exp's reduced argument and H/(a + 1) multiplies exp's
 *   polynomial before scaling, so the path rounds as few times as possible.
 *   erfc(−a) = 2 − erfc(a); erf = ±(1 − erfc(a)).
 * - pow: e^{y·log|x|} in double precision (log and exp as above with Taylor
 *   coefficients of degree 8 in s² and 12 in r, ~1e-15 relative), rounded once to float;
 *   then the C99 Annex F special cases by selects (negative bases with integer
 *   exponents, ±0, ±inf, NaN, pow(x, ±0) = pow(1, y) = 1).
 *
 * Only IEEE operations without fast-math flags are used (the callers' `contract` does
 * not reach in here), so the results are the same bits for every vector width and every
 * CPU with FMA (AVX2, AVX-512). A target without FMA (plain x86-64) gets a multiply and
 * an add for each fma, and Dekker's exact product where erfc needs a² exactly: other
 * bits, within the same bounds (tests/unit/test_vmath.c runs an SSE2 target too).
 * The polynomial coefficients come from codegen/vmath_fit.py (weighted minimax fits,
 * rounded to float one coefficient at a time); each table names its variable and range.
 */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "lower.h"
#include "vmath.h"

/* ---- coefficients (codegen/vmath_fit.py) --------------------------------------------- */

/* Q(r) = (e^r − 1 − r)/r², |r| ≤ ln2/2: degree 4 for exp, 5 for expm1 (whose relative
 * error near 0 sees Q's error times r rather than r²) */
static const double EXP_Q[5] = {0x1p-1, 0x1.5554dep-3, 0x1.5554e2p-5, 0x1.120acap-7, 0x1.6d55a8p-10};
static const double EXPM1_Q[6] = {0x1p-1, 0x1.555556p-3, 0x1.555508p-5, 0x1.110ff4p-7, 0x1.6d26dep-10, 0x1.a2649cp-13};
/* R(z)/z, z = s² ≤ 0.0295 (log) */
static const double LOG_P[3] = {0x1.555588p-1, 0x1.99541cp-2, 0x1.32d56cp-2};
/* (tanh a − a)/a³ in w = a², a ≤ 0.55 */
static const double TANH_P[5] = {-0x1.55554ap-2, 0x1.110ceap-3, -0x1.b91d46p-5, 0x1.58d706p-6, -0x1.98bdfcp-8};
/* erf(x)/x − 1 in w = x², |x| ≤ 0.5 */
static const double ERF_P[5] = {0x1.06eba8p-3, -0x1.812734p-2, 0x1.ce253ep-4, -0x1.b666fep-6, 0x1.353686p-8};
/* erfc(a)·e^{a²}·(a + 1) in t = (a − 1)/(a + 1), 0.5 ≤ a ≤ 10.3 */
static const double ERFC_H[11] = {0x1.b5d878p-1, -0x1.e6c54p-3, -0x1.87660ap-4, 0x1.c7c77cp-7, 0x1.a0127ap-6, 0x1.38659p-7,
                                  -0x1.43b0b4p-10, -0x1.c9e538p-9, -0x1.3d4666p-9, -0x1.5fca02p-10, 0x1.f71ddcp-10};

#define LOG2E 0x1.715476p+0        /* 1/ln2 rounded to float */
#define LN2_HI 0x1.62e4p-1         /* ln2 to 15 bits: k·LN2_HI exact for |k| < 2^9 */
#define LN2_LO 0x1.7f7d1cp-20      /* ln2 − LN2_HI, to float */
#define ROUND_MAGIC 0x1.8p23       /* x + 1.5·2^23 rounds x to an integer, kept in the low bits */
#define SQRT_HALF_BITS 0x3f3504f3  /* the bits of √½ as a float */

/* ---- one value's types and the IR helpers over them ---------------------------------- */

/* The types of a value being worked on: float or double, scalar or <n x …>, and the
 * integer type of the same width and shape (for bit manipulation). */
typedef struct vm {
    kiln_cg *cg;
    LLVMBuilderRef b;
    unsigned n;        /* lanes; 0 for a scalar */
    bool dbl;          /* element is double (pow's inner computation) */
    bool fma;          /* the target has FMA instructions */
    LLVMTypeRef ft, it; /* float/double type and i32/i64 type of this shape */
} vm;

/* Whether the target's features name FMA. Without it llvm.fma would become a libm call
 * (fmaf) per lane, so such targets get llvm.fmuladd — a multiply and an add there, still
 * one fused instruction on a CPU named without features that has FMA. */
static bool target_fma(const kiln_target *t)
{
    for (const char *p = t->features; p && (p = strstr(p, "+fma")); p += 4)
        if (p[4] == ',' || p[4] == 0) return true;
    return false;
}

static LLVMTypeRef shaped(LLVMTypeRef elem, unsigned n) { return n ? LLVMVectorType(elem, n) : elem; }

static vm vm_shape(kiln_cg *cg, unsigned n, bool dbl)
{
    vm v = {.cg = cg, .b = cg->b, .n = n, .dbl = dbl, .fma = target_fma(cg->target)};
    v.ft = shaped(dbl ? cg->t_f64 : cg->t_f32, n);
    v.it = shaped(dbl ? cg->t_i64 : cg->t_i32, n);
    return v;
}

/* the shape of x, which must be float or a fixed vector of float */
static vm vm_of(kiln_cg *cg, LLVMValueRef x)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    unsigned n = 0;
    if (LLVMGetTypeKind(t) == LLVMVectorTypeKind) {
        n = LLVMGetVectorSize(t);
        t = LLVMGetElementType(t);
    }
    KILN_ASSERT(LLVMGetTypeKind(t) == LLVMFloatTypeKind);
    return vm_shape(cg, n, false);
}

static LLVMValueRef splat(const vm *v, LLVMValueRef c)
{
    if (!v->n) return c;
    LLVMValueRef lanes[64];
    KILN_ASSERT(v->n <= 64);
    for (unsigned i = 0; i < v->n; i++) lanes[i] = c;
    return LLVMConstVector(lanes, v->n);
}
/* a float constant (rounded to the element type) / an integer constant, splat */
static LLVMValueRef kf(const vm *v, double c)
{
    return splat(v, LLVMConstReal(v->dbl ? v->cg->t_f64 : v->cg->t_f32, v->dbl ? c : (double)(float)c));
}
static LLVMValueRef ki(const vm *v, int64_t c)
{
    return splat(v, LLVMConstInt(v->dbl ? v->cg->t_i64 : v->cg->t_i32, (unsigned long long)c, 1));
}

/* plain IEEE arithmetic: no fast-math flags */
static LLVMValueRef add(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(v->b, a, b, ""); }
static LLVMValueRef sub(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(v->b, a, b, ""); }
static LLVMValueRef mul(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(v->b, a, b, ""); }
static LLVMValueRef quo(const vm *v, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(v->b, a, b, ""); }
static LLVMValueRef neg(const vm *v, LLVMValueRef a) { return LLVMBuildFNeg(v->b, a, ""); }
static LLVMValueRef fma3(const vm *v, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
    LLVMTypeRef t = v->ft;
    LLVMValueRef args[3] = {a, b, c};
    return cg_intrinsic(v->cg, v->fma ? "llvm.fma" : "llvm.fmuladd", &t, 1, args, 3);
}
static LLVMValueRef fabs1(const vm *v, LLVMValueRef a)
{
    LLVMTypeRef t = v->ft;
    return cg_intrinsic(v->cg, "llvm.fabs", &t, 1, &a, 1);
}
/* |mag| with the sign bit of sgn */
static LLVMValueRef copysign2(const vm *v, LLVMValueRef mag, LLVMValueRef sgn)
{
    LLVMTypeRef t = v->ft;
    LLVMValueRef args[2] = {mag, sgn};
    return cg_intrinsic(v->cg, "llvm.copysign", &t, 1, args, 2);
}
static LLVMValueRef fcmp(const vm *v, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(v->b, p, a, b, "");
}
static LLVMValueRef sel(const vm *v, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(v->b, c, a, b, "");
}
static LLVMValueRef as_int(const vm *v, LLVMValueRef a) { return LLVMBuildBitCast(v->b, a, v->it, ""); }
static LLVMValueRef as_float(const vm *v, LLVMValueRef a) { return LLVMBuildBitCast(v->b, a, v->ft, ""); }

/* c[0] + x·(c[1] + x·(…)) */
static LLVMValueRef horner(const vm *v, const double *c, int n, LLVMValueRef x)
{
    LLVMValueRef p = kf(v, c[n - 1]);
    for (int i = n - 2; i >= 0; i--) p = fma3(v, p, x, kf(v, c[i]));
    return p;
}

/* x clamped to [lo, hi]; NaN stays NaN (ordered compares are false for it) */
static LLVMValueRef clamp(const vm *v, LLVMValueRef x, double lo, double hi)
{
    x = sel(v, fcmp(v, LLVMRealOGT, x, kf(v, hi)), kf(v, hi), x);
    return sel(v, fcmp(v, LLVMRealOLT, x, kf(v, lo)), kf(v, lo), x);
}

/* 2^k for an integer k of the element's exponent range (a normal number) */
static LLVMValueRef pow2i(const vm *v, LLVMValueRef k)
{
    int bias = v->dbl ? 1023 : 127, shift = v->dbl ? 52 : 23;
    return as_float(v, LLVMBuildShl(v->b, LLVMBuildAdd(v->b, k, ki(v, bias), ""), ki(v, shift), ""));
}

/* ---- float exp and expm1 ----------------------------------------------------------- */

/* The reduction x = k·ln2 + r − lo (lo may be NULL) of a clamped x: r and k as an
 * integer. */
typedef struct reduced {
    LLVMValueRef r, k;
} reduced;

static reduced reduce_ln2(const vm *v, LLVMValueRef x, LLVMValueRef lo)
{
    LLVMValueRef t = fma3(v, x, kf(v, LOG2E), kf(v, ROUND_MAGIC));
    LLVMValueRef kfl = sub(v, t, kf(v, ROUND_MAGIC));
    LLVMValueRef k = LLVMBuildSub(v->b, as_int(v, t), as_int(v, kf(v, ROUND_MAGIC)), "");
    LLVMValueRef r = fma3(v, neg(v, kfl), kf(v, LN2_HI), x); /* exact */
    if (lo) r = sub(v, r, fma3(v, kfl, kf(v, LN2_LO), lo));
    else r = fma3(v, neg(v, kfl), kf(v, LN2_LO), r);
    return (reduced){r, k};
}

/* g·e^(x − lo): g and lo may be NULL (1 and 0). */
static LLVMValueRef exp_scaled(const vm *v, LLVMValueRef x, LLVMValueRef lo, LLVMValueRef g)
{
    x = clamp(v, x, -104.0, 89.0);
    reduced rd = reduce_ln2(v, x, lo);
    LLVMValueRef pm = fma3(v, mul(v, rd.r, rd.r), horner(v, EXP_Q, 5, rd.r), rd.r); /* e^r − 1 */
    LLVMValueRef p = g ? fma3(v, pm, g, g) : add(v, kf(v, 1.0), pm);
    LLVMValueRef k1 = LLVMBuildAShr(v->b, rd.k, ki(v, 1), "");
    LLVMValueRef k2 = LLVMBuildSub(v->b, rd.k, k1, "");
    return mul(v, mul(v, p, pow2i(v, k1)), pow2i(v, k2));
}

LLVMValueRef vm_exp(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    return exp_scaled(&v, x, NULL, NULL);
}

LLVMValueRef vm_expm1(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    /* below −26 the result rounds to −1 (2^k − 1 does, with 2^k still normal) */
    LLVMValueRef xc = clamp(&v, x, -26.0, 89.0);
    reduced rd = reduce_ln2(&v, xc, NULL);
    LLVMValueRef pm = fma3(&v, mul(&v, rd.r, rd.r), horner(&v, EXPM1_Q, 6, rd.r), rd.r);
    /* 2^k·pm + (2^k − 1); 2^128 is not a float: 2^127 and a doubling */
    LLVMValueRef big = LLVMBuildICmp(v.b, LLVMIntSGT, rd.k, ki(&v, 127), "");
    LLVMValueRef s = pow2i(&v, sel(&v, big, ki(&v, 127), rd.k));
    LLVMValueRef y = fma3(&v, pm, s, sub(&v, s, kf(&v, 1.0)));
    y = mul(&v, y, sel(&v, big, kf(&v, 2.0), kf(&v, 1.0)));
    /* ±0 → ±0 (the sum above gives +0 for −0) */
    return sel(&v, fcmp(&v, LLVMRealOEQ, x, kf(&v, 0.0)), x, y);
}

/* ---- float log --------------------------------------------------------------------- */

LLVMValueRef vm_log(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    LLVMBuilderRef b = v.b;
    /* denormals: scale into the normal range, remember the 23 */
    LLVMValueRef den = fcmp(&v, LLVMRealOLT, x, kf(&v, 0x1p-126));
    LLVMValueRef xs = sel(&v, den, mul(&v, x, kf(&v, 0x1p23)), x);
    /* i = bits − bits(√½): e = i >> 23, m = 2^−e·x ∈ [√½, √2) */
    LLVMValueRef i = LLVMBuildSub(b, as_int(&v, xs), ki(&v, SQRT_HALF_BITS), "");
    LLVMValueRef e = LLVMBuildAdd(b, LLVMBuildAShr(b, i, ki(&v, 23), ""), sel(&v, den, ki(&v, -23), ki(&v, 0)), "");
    LLVMValueRef m = as_float(&v, LLVMBuildAdd(b, LLVMBuildAnd(b, i, ki(&v, 0x7fffff), ""), ki(&v, SQRT_HALF_BITS), ""));
    LLVMValueRef f = sub(&v, m, kf(&v, 1.0));
    LLVMValueRef s = quo(&v, f, add(&v, kf(&v, 2.0), f));
    LLVMValueRef z = mul(&v, s, s);
    LLVMValueRef R = mul(&v, horner(&v, LOG_P, 3, z), z);
    LLVMValueRef hfsq = mul(&v, mul(&v, kf(&v, 0.5), f), f);
    LLVMValueRef lm = sub(&v, f, fma3(&v, neg(&v, s), add(&v, hfsq, R), hfsq)); /* log m */
    LLVMValueRef ef = LLVMBuildSIToFP(b, e, v.ft, "");
    LLVMValueRef y = fma3(&v, ef, kf(&v, LN2_HI), fma3(&v, ef, kf(&v, LN2_LO), lm));
    y = sel(&v, fcmp(&v, LLVMRealOEQ, x, kf(&v, INFINITY)), x, y);
    y = sel(&v, fcmp(&v, LLVMRealOEQ, x, kf(&v, 0.0)), kf(&v, -INFINITY), y);
    y = sel(&v, fcmp(&v, LLVMRealOLT, x, kf(&v, 0.0)), kf(&v, NAN), y);
    return sel(&v, fcmp(&v, LLVMRealUNO, x, x), x, y);
}

/* ---- tanh and sigmoid -------------------------------------------------------------- */

LLVMValueRef vm_tanh(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    LLVMValueRef a = fabs1(&v, x), w = mul(&v, a, a);
    LLVMValueRef small = fma3(&v, mul(&v, a, w), horner(&v, TANH_P, 5, w), a);
    LLVMValueRef e = exp_scaled(&v, mul(&v, kf(&v, 2.0), clamp(&v, a, 0.0, 9.1)), NULL, NULL);
    LLVMValueRef large = sub(&v, kf(&v, 1.0), quo(&v, kf(&v, 2.0), add(&v, e, kf(&v, 1.0))));
    LLVMValueRef t = sel(&v, fcmp(&v, LLVMRealOLT, a, kf(&v, 0.55)), small, large);
    return copysign2(&v, t, x);
}

LLVMValueRef vm_sigmoid(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    LLVMValueRef e = exp_scaled(&v, neg(&v, fabs1(&v, x)), NULL, NULL);
    LLVMValueRef num = sel(&v, fcmp(&v, LLVMRealOGE, x, kf(&v, 0.0)), kf(&v, 1.0), e);
    return quo(&v, num, add(&v, kf(&v, 1.0), e));
}

/* ---- gelu_tanh ---------------------------------------------------------------------- */

/* 1 + 2^w, for uses that need only that sum (so no denormal 2^w): w clamped to
 * [−126, 129] and split exactly as w = k + f, k = round(w) by the rounding sum
 * t = w + 1.5·2^23 + 126 (whose low bits are then k + 126), f = w − k ∈ [−½, ½] (exact:
 * no ln2 constant, no fma); 2·2^f = 2e^r at r = f·ln2 as one Horner polynomial of
 * degree 6 in f (EXP_Q's coefficients, doubled and scaled by powers of ln2); 2^(k−1) is
 * the bits (k + 126) << 23, so k = −126 gives 0 and k = 129 +inf, and 1 + 2·2^f·2^(k−1)
 * is one fma, which overflows to +inf where 2^w does (2·2^f > 0, so 0 and +inf stay so:
 * no 0·inf, no inf − inf). 12 operations, of which 7 multiply (the k loop of a GEMM
 * keeps the multiply-add pipes busy; the clamp, t, k and f go to the adders), against
 * exp_scaled's 21 and an add. */
static LLVMValueRef one_plus_exp2(const vm *v, LLVMValueRef w)
{
    w = clamp(v, w, -126.0, 129.0);
    LLVMValueRef t = add(v, w, kf(v, ROUND_MAGIC + 126));
    LLVMValueRef f = sub(v, w, sub(v, t, kf(v, ROUND_MAGIC + 126)));
    double c[7] = {2.0, 2.0 * M_LN2}, ln2i = M_LN2 * M_LN2;
    for (int i = 0; i < 5; i++, ln2i *= M_LN2) c[i + 2] = 2.0 * EXP_Q[i] * ln2i;
    LLVMValueRef p = horner(v, c, 7, f);                                           /* 2·2^f */
    LLVMValueRef s = as_float(v, LLVMBuildShl(v->b, as_int(v, t), ki(v, 23), "")); /* 2^(k−1), 0 or +inf */
    return fma3(v, p, s, kf(v, 1.0));
}

LLVMValueRef vm_gelu_tanh(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    const double k = 0.79788456080286535588, l2e = 1.4426950408889634; /* √(2/π), 1/ln2 */
    /* w = −2u/ln2 = x·(−2k − 2k·0.044715·x²)/ln2, the constants rounded once */
    LLVMValueRef w = mul(&v, x, fma3(&v, mul(&v, x, x), kf(&v, -2.0 * k * 0.044715 * l2e), kf(&v, -2.0 * k * l2e)));
    return quo(&v, x, one_plus_exp2(&v, w));
}

/* ---- erf and erfc ------------------------------------------------------------------ */

/* erf(x) for |x| < 0.5 */
static LLVMValueRef erf_small(const vm *v, LLVMValueRef x)
{
    return fma3(v, x, horner(v, ERF_P, 5, mul(v, x, x)), x);
}

/* erfc(a) for a = |x| ≥ 0.5 */
static LLVMValueRef erfc_large(const vm *v, LLVMValueRef a)
{
    LLVMValueRef ac = clamp(v, a, 0.0, 10.3);
    LLVMValueRef den = add(v, ac, kf(v, 1.0));
    LLVMValueRef t = quo(v, sub(v, ac, kf(v, 1.0)), den);
    LLVMValueRef g = quo(v, horner(v, ERFC_H, 11, t), den);
    LLVMValueRef hi = mul(v, ac, ac), lo;
    if (v->fma) {
        lo = fma3(v, ac, ac, neg(v, hi)); /* a² = hi + lo exactly */
    } else {
        /* the same lo by Dekker's product: a = ah + al with 12 bits each, so every
         * partial product is exact (checked for every float in [0.5, 11]) */
        LLVMValueRef ah = as_float(v, LLVMBuildAnd(v->b, as_int(v, ac), ki(v, (int32_t)0xfffff000u), ""));
        LLVMValueRef al = sub(v, ac, ah);
        lo = add(v, sub(v, mul(v, ah, ah), hi), mul(v, mul(v, kf(v, 2.0), ah), al));
        lo = add(v, lo, mul(v, al, al));
    }
    return exp_scaled(v, neg(v, hi), lo, g);
}

LLVMValueRef vm_erf(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    LLVMValueRef a = fabs1(&v, x);
    LLVMValueRef large = copysign2(&v, sub(&v, kf(&v, 1.0), erfc_large(&v, a)), x);
    return sel(&v, fcmp(&v, LLVMRealOLT, a, kf(&v, 0.5)), erf_small(&v, x), large);
}

LLVMValueRef vm_erfc(kiln_cg *cg, LLVMValueRef x)
{
    vm v = vm_of(cg, x);
    LLVMValueRef a = fabs1(&v, x);
    LLVMValueRef ec = erfc_large(&v, a);
    LLVMValueRef large = sel(&v, fcmp(&v, LLVMRealOLT, x, kf(&v, 0.0)), sub(&v, kf(&v, 2.0), ec), ec);
    LLVMValueRef small = sub(&v, kf(&v, 1.0), erf_small(&v, x));
    return sel(&v, fcmp(&v, LLVMRealOLT, a, kf(&v, 0.5)), small, large);
}

/* ---- pow, through double precision -------------------------------------------------- */

/* e^z for double z, relative error ~1e-15; z clamped to ±200 (far outside float's
 * range either way, and inside double's, so the final rounding to float over/underflows
 * correctly). Taylor coefficients 1/n! up to n = 12 (|r| ≤ ln2/2: r^13/13! < 1e-15). */
static LLVMValueRef exp_d(const vm *v, LLVMValueRef z)
{
    z = clamp(v, z, -200.0, 200.0);
    LLVMValueRef t = fma3(v, z, kf(v, 0x1.71547652b82fep+0), kf(v, 0x1.8p52));
    LLVMValueRef kfl = sub(v, t, kf(v, 0x1.8p52));
    LLVMValueRef k = LLVMBuildSub(v->b, as_int(v, t), as_int(v, kf(v, 0x1.8p52)), "");
    LLVMValueRef r = fma3(v, neg(v, kfl), kf(v, 0x1.62e42fefa38p-1), z); /* ln2 to 41 bits: exact product */
    r = fma3(v, neg(v, kfl), kf(v, 0x1.ef35793c7673p-45), r);
    double c[13];
    c[0] = 1.0;
    for (int n = 1; n <= 12; n++) c[n] = c[n - 1] / n;
    return mul(v, horner(v, c, 13, r), pow2i(v, k));
}

/* log X for positive normal finite double X (a float's magnitude widened), relative
 * error ~1e-15: the float log's scheme with R(z) = Σ_{n=1..8} 2z^n/(2n+1). */
static LLVMValueRef log_d(const vm *v, LLVMValueRef X)
{
    LLVMBuilderRef b = v->b;
    const int64_t sqrt_half_bits = 0x3fe6a09e667f3bcdLL;
    LLVMValueRef i = LLVMBuildSub(b, as_int(v, X), ki(v, sqrt_half_bits), "");
    LLVMValueRef e = LLVMBuildAShr(b, i, ki(v, 52), "");
    LLVMValueRef m = as_float(v, LLVMBuildAdd(b, LLVMBuildAnd(b, i, ki(v, 0xfffffffffffffLL), ""), ki(v, sqrt_half_bits), ""));
    LLVMValueRef f = sub(v, m, kf(v, 1.0));
    LLVMValueRef s = quo(v, f, add(v, kf(v, 2.0), f));
    LLVMValueRef z = mul(v, s, s);
    double c[8];
    for (int n = 1; n <= 8; n++) c[n - 1] = 2.0 / (2 * n + 1);
    LLVMValueRef R = mul(v, horner(v, c, 8, z), z);
    LLVMValueRef hfsq = mul(v, mul(v, kf(v, 0.5), f), f);
    LLVMValueRef lm = sub(v, f, fma3(v, neg(v, s), add(v, hfsq, R), hfsq));
    /* e fits in i32; i32 → double converts on every x86 vector unit */
    LLVMTypeRef i32s = shaped(v->cg->t_i32, v->n);
    LLVMValueRef ef = LLVMBuildSIToFP(b, LLVMBuildTrunc(b, e, i32s, ""), v->ft, "");
    return fma3(v, ef, kf(v, 0x1.62e42fefa38p-1), fma3(v, ef, kf(v, 0x1.ef35793c7673p-45), lm));
}

LLVMValueRef vm_pow(kiln_cg *cg, LLVMValueRef x, LLVMValueRef y)
{
    vm v = vm_of(cg, x), d = vm_shape(cg, v.n, true);
    LLVMBuilderRef b = v.b;
    LLVMValueRef ax = fabs1(&v, x), ay = fabs1(&v, y);

    /* |x|^y = e^{y·log|x|}; log|x| is −inf at 0 and +inf at inf (the products with y
     * then give 0 or inf as C wants) */
    LLVMValueRef L = log_d(&d, LLVMBuildFPExt(b, ax, d.ft, ""));
    L = sel(&d, fcmp(&v, LLVMRealOEQ, ax, kf(&v, 0.0)), kf(&d, -INFINITY), L);
    L = sel(&d, fcmp(&v, LLVMRealOEQ, ax, kf(&v, INFINITY)), kf(&d, INFINITY), L);
    LLVMValueRef r = LLVMBuildFPTrunc(b, exp_d(&d, mul(&d, LLVMBuildFPExt(b, y, d.ft, ""), L)), v.ft, "");

    /* y an integer, and odd: |y| ≥ 2^24 is an even integer; below, through i32 (clamped
     * first: fptosi of an out-of-range value or NaN would be poison) */
    LLVMValueRef y_small = fcmp(&v, LLVMRealOLT, ay, kf(&v, 0x1p24));
    LLVMValueRef iy = LLVMBuildFPToSI(b, sel(&v, y_small, y, kf(&v, 0.0)), v.it, "");
    LLVMValueRef y_int_small = fcmp(&v, LLVMRealOEQ, LLVMBuildSIToFP(b, iy, v.ft, ""), y);
    LLVMValueRef y_big_finite = LLVMBuildAnd(b, LLVMBuildNot(b, y_small, ""), fcmp(&v, LLVMRealONE, ay, kf(&v, INFINITY)), "");
    LLVMValueRef y_int = LLVMBuildOr(b, y_int_small, y_big_finite, "");
    LLVMValueRef lsb = LLVMBuildTrunc(b, iy, shaped(cg->t_i1, v.n), "");
    LLVMValueRef y_odd = LLVMBuildAnd(b, y_int_small, lsb, "");

    /* a negative base (−0 and −inf included) with an odd integer exponent: −|x|^y */
    LLVMValueRef x_neg = LLVMBuildICmp(b, LLVMIntSLT, as_int(&v, x), ki(&v, 0), "");
    r = sel(&v, LLVMBuildAnd(b, x_neg, y_odd, ""), neg(&v, r), r);
    /* a finite negative base with a finite non-integer exponent: NaN */
    LLVMValueRef x_neg_finite = LLVMBuildAnd(b, fcmp(&v, LLVMRealOLT, x, kf(&v, 0.0)),
                                             fcmp(&v, LLVMRealONE, x, kf(&v, -INFINITY)), "");
    LLVMValueRef y_frac = LLVMBuildAnd(b, LLVMBuildNot(b, y_int, ""), fcmp(&v, LLVMRealOLT, ay, kf(&v, INFINITY)), "");
    r = sel(&v, LLVMBuildAnd(b, x_neg_finite, y_frac, ""), kf(&v, NAN), r);
    /* NaN in either operand: NaN (the exceptions follow) */
    r = sel(&v, fcmp(&v, LLVMRealUNO, x, y), add(&v, x, y), r);
    /* pow(−1, ±inf) = 1; pow(x, ±0) = 1 and pow(1, y) = 1, even for NaN */
    LLVMValueRef one = LLVMBuildAnd(b, fcmp(&v, LLVMRealOEQ, x, kf(&v, -1.0)), fcmp(&v, LLVMRealOEQ, ay, kf(&v, INFINITY)), "");
    one = LLVMBuildOr(b, one, fcmp(&v, LLVMRealOEQ, y, kf(&v, 0.0)), "");
    one = LLVMBuildOr(b, one, fcmp(&v, LLVMRealOEQ, x, kf(&v, 1.0)), "");
    return sel(&v, one, kf(&v, 1.0), r);
}
