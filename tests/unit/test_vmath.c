/* test_vmath.c — codegen/vmath.c's functions against double-precision libm.
 *
 * Design: for each function, one module per target holds two kernels over arrays,
 *     void loopN(const float *x, const float *y, float *out, i64 n)
 *     void vecN(…)   (n a multiple of the vector width)
 * "loop" is a plain scalar loop calling the emitter on float, optimised with
 * default<O3> — it must come out vectorised (its IR is checked for <W x float>) and
 * call nothing but LLVM intrinsics; "vec" loads <W x float> and calls the emitter on the
 * vector directly, as hand-vectorised kernels do. Both are built for the host (AVX-512
 * here: W = 16), for "haswell" (AVX2 + FMA: W = 8) and for "x86-64" (SSE2, no FMA:
 * W = 4), and run in one LLJIT that has no process symbols, so a libm call left in the
 * code (fmaf included) fails to link.
 *
 * Inputs: a stride over all 2^32 bit patterns (≥ 10^7 points; fewer under a sanitizer;
 * KILN_VMATH_STRIDE overrides, 1 = every float) plus a list of special values — ±0,
 * denormals, FLT_MIN/MAX, ±inf, NaNs, each function's overflow/underflow/saturation
 * thresholds and the one float either side of them. The reference is the double
 * libm function rounded to float. Required: the host loop's result within the function's
 * ulp bound (vmath.h) of the reference; bit-exact where the reference is NaN (any NaN),
 * ±0, ±inf (a limit must be reached exactly); the three other FMA kernels bit-identical
 * to the host loop (vmath's code uses IEEE operations only, so vector width must not
 * matter); the SSE2 loop (a multiply and an add for each fma: other bits) held to the
 * same bound and rules, its vector kernel bit-identical to it. pow takes random pairs
 * and a grid of special pairs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen.h"
#include "lower.h" /* cg_init_in_context, cg_loop */
#include "vmath.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* ---- the functions ------------------------------------------------------------------- */

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
/* ½·x·(1 + tanh u) as x·σ(2u), which does not cancel for negative x in double either */
static double ref_gelu_tanh(double x)
{
    const double k = sqrt(2.0 / 3.14159265358979323846);
    return x * ref_sigmoid(2.0 * k * (x + 0.044715 * x * x * x));
}

typedef struct fn_case {
    const char *name;
    LLVMValueRef (*emit1)(kiln_cg *, LLVMValueRef);            /* unary */
    LLVMValueRef (*emit2)(kiln_cg *, LLVMValueRef, LLVMValueRef); /* pow */
    double (*ref1)(double);
    int max_ulp;  /* the bound vmath.h documents */
    /* gelu_tanh: the ulp bound holds for x ≥ tail_below; below, where the rounding of −2u
     * (up to 87) is magnified by e^−2u, a relative bound tail_rel, and results of
     * magnitude below flush_below may come out as ±0 (0 when all three are 0) */
    float tail_below, flush_below;
    double tail_rel;
} fn_case;

static const fn_case CASES[] = {
    {"exp", vm_exp, NULL, exp, 1, 0, 0, 0},
    {"expm1", vm_expm1, NULL, expm1, 1, 0, 0, 0},
    {"log", vm_log, NULL, log, 1, 0, 0, 0},
    {"tanh", vm_tanh, NULL, tanh, 1, 0, 0, 0},
    {"sigmoid", vm_sigmoid, NULL, ref_sigmoid, 2, 0, 0, 0},
    {"erf", vm_erf, NULL, erf, 2, 0, 0, 0},
    {"erfc", vm_erfc, NULL, erfc, 3, 0, 0, 0},
    {"pow", NULL, vm_pow, NULL, 1, 0, 0, 0},
    {"gelu_tanh", vm_gelu_tanh, NULL, ref_gelu_tanh, 2, -1.0f, 4 * FLT_MIN, 2e-5},
};
enum { N_CASES = sizeof CASES / sizeof *CASES };

/* ---- a small JIT harness -------------------------------------------------------------- */

typedef void (*map_fn)(const float *x, const float *y, float *out, int64_t n);

/* the kernels of one function: a loop and an explicit vector kernel per target */
enum { HOST_LOOP, HOST_VEC, HSW_LOOP, HSW_VEC, SSE_LOOP, SSE_VEC, N_KERNELS };
static const char *KERNEL_NAMES[N_KERNELS] = {"host loop",           "host <16 x float>",
                                              "haswell loop",        "haswell <8 x float>",
                                              "x86-64 (no FMA) loop", "x86-64 <4 x float>"};

static kiln_target g_host, g_haswell, g_sse;
static LLVMOrcLLJITRef g_jit;
static int g_next;

static void check_error(LLVMErrorRef e)
{
    if (!e) return;
    char *msg = LLVMGetErrorMessage(e);
    fail_msg("LLVM: %s", msg);
    LLVMDisposeErrorMessage(msg);
}

static int setup(void **state)
{
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_target_host(&g_host, &d) && kiln_target_for(&g_haswell, "haswell", "+avx2,+fma", &d) &&
              kiln_target_for(&g_sse, "x86-64", "+sse2", &d);
    kiln_diags_free(&d);
    if (!ok || g_haswell.vector_floats != 8 || g_sse.vector_floats != 4) return -1;
    /* no process-symbol generator: generated code must not need libm (or anything) */
    return LLVMOrcCreateLLJIT(&g_jit, NULL) ? -1 : 0;
}

static int teardown(void **state)
{
    LLVMOrcDisposeLLJIT(g_jit);
    kiln_target_free(&g_host);
    kiln_target_free(&g_haswell);
    kiln_target_free(&g_sse);
    return 0;
}

static LLVMValueRef apply(kiln_cg *cg, const fn_case *fc, LLVMValueRef x, LLVMValueRef y)
{
    return fc->emit1 ? fc->emit1(cg, x) : fc->emit2(cg, x, y);
}

static LLVMValueRef begin_kernel(kiln_cg *cg, const char *name)
{
    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_i64};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, 4, 0));
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    for (unsigned i = 1; i <= 3; i++) LLVMAddAttributeAtIndex(fn, i, LLVMCreateEnumAttribute(cg->ctx, noalias, 0));
    kiln_target_tag_function(cg->target, fn);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    return fn;
}

/* out[i] = f(x[i], y[i]) one float at a time */
static LLVMValueRef build_loop(kiln_cg *cg, const fn_case *fc, const char *name)
{
    LLVMValueRef fn = begin_kernel(cg, name);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), LLVMGetParam(fn, 3), "i");
    LLVMValueRef x = cg_load(cg, KILN_F32, LLVMGetParam(fn, 0), l.i);
    LLVMValueRef y = fc->emit2 ? cg_load(cg, KILN_F32, LLVMGetParam(fn, 1), l.i) : NULL;
    cg_store(cg, KILN_F32, LLVMGetParam(fn, 2), l.i, apply(cg, fc, x, y));
    cg_loop_end(cg, &l);
    LLVMBuildRetVoid(cg->b);
    return fn;
}

/* the same with explicit <w x float> values */
static LLVMValueRef build_vec(kiln_cg *cg, const fn_case *fc, const char *name, unsigned w)
{
    LLVMValueRef fn = begin_kernel(cg, name);
    LLVMTypeRef vt = LLVMVectorType(cg->t_f32, w);
    LLVMValueRef blocks = LLVMBuildSDiv(cg->b, LLVMGetParam(fn, 3), cg_i64(cg, w), "");
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), blocks, "j");
    LLVMValueRef off = LLVMBuildNSWMul(cg->b, l.i, cg_i64(cg, w), "");
    LLVMValueRef v[3];
    for (unsigned k = 0; k < 3; k++) v[k] = cg_gep(cg, KILN_F32, LLVMGetParam(fn, k), off);
    LLVMValueRef x = LLVMBuildLoad2(cg->b, vt, v[0], "");
    LLVMSetAlignment(x, 4);
    LLVMValueRef y = NULL;
    if (fc->emit2) {
        y = LLVMBuildLoad2(cg->b, vt, v[1], "");
        LLVMSetAlignment(y, 4);
    }
    LLVMValueRef s = LLVMBuildStore(cg->b, apply(cg, fc, x, y), v[2]);
    LLVMSetAlignment(s, 4);
    cg_loop_end(cg, &l);
    LLVMBuildRetVoid(cg->b);
    return fn;
}

/* Every call in the function's IR is to an LLVM intrinsic. */
static void check_calls(const char *ir, const char *what)
{
    for (const char *p = strstr(ir, "call "); p; p = strstr(p + 5, "call ")) {
        const char *at = strchr(p, '@'), *eol = strchr(p, '\n');
        if (!at || (eol && at > eol) || strncmp(at, "@llvm.", 6) != 0) {
            int len = eol ? (int)(eol - p) : 60;
            fail_msg("%s calls something other than an intrinsic: %.*s", what, len, p);
        }
    }
}

/* Builds both kernels of fc for target t, optimises, checks the loop got vectorised to
 * t's width and calls nothing, and JITs them. */
static void compile_pair(const kiln_target *t, const fn_case *fc, map_fn *loop, map_fn *vec)
{
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    kiln_cg cg;
    cg_init_in_context(&cg, t, LLVMOrcThreadSafeContextGetContext(tsc), "test_vmath");
    char loop_name[32], vec_name[32];
    snprintf(loop_name, sizeof loop_name, "loop%d", g_next);
    snprintf(vec_name, sizeof vec_name, "vec%d", g_next++);
    LLVMValueRef lf = build_loop(&cg, fc, loop_name);
    build_vec(&cg, fc, vec_name, (unsigned)t->vector_floats);
    LLVMDisposeBuilder(cg.b);
    char *msg = NULL;
    if (LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg)) fail_msg("invalid module: %s", msg);
    LLVMDisposeMessage(msg);
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    check_error(LLVMRunPasses(cg.mod, "default<O3>", t->tm, opts));
    LLVMDisposePassBuilderOptions(opts);

    /* pow works in double: the vectoriser picks half the float width (and leaves it
     * scalar on SSE2, where it finds the conversions too dear) */
    char *ir = LLVMPrintValueToString(lf), want[32];
    snprintf(want, sizeof want, "<%d x %s>", fc->emit2 ? t->vector_floats / 2 : t->vector_floats,
             fc->emit2 ? "double" : "float");
    if (!strstr(ir, want) && !(fc->emit2 && t == &g_sse))
        fail_msg("%s: the %s loop was not vectorised to %s", fc->name, t->cpu, want);
    LLVMDisposeMessage(ir);
    ir = LLVMPrintModuleToString(cg.mod);
    check_calls(ir, fc->name);
    LLVMDisposeMessage(ir);

    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(cg.mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    check_error(LLVMOrcLLJITAddLLVMIRModule(g_jit, LLVMOrcLLJITGetMainJITDylib(g_jit), tsm));
    LLVMOrcExecutorAddress a = 0, b = 0;
    check_error(LLVMOrcLLJITLookup(g_jit, &a, loop_name));
    check_error(LLVMOrcLLJITLookup(g_jit, &b, vec_name));
    *loop = (map_fn)(uintptr_t)a;
    *vec = (map_fn)(uintptr_t)b;
}

static void compile_all(const fn_case *fc, map_fn k[N_KERNELS])
{
    compile_pair(&g_host, fc, &k[HOST_LOOP], &k[HOST_VEC]);
    compile_pair(&g_haswell, fc, &k[HSW_LOOP], &k[HSW_VEC]);
    compile_pair(&g_sse, fc, &k[SSE_LOOP], &k[SSE_VEC]);
}

/* ---- comparing ------------------------------------------------------------------------ */

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* floats in order as integers: the ulp distance of a and b is |ord(a) − ord(b)| */
static int64_t ord(float f)
{
    int32_t i = (int32_t)bits(f);
    return i < 0 ? (int64_t)INT32_MIN - i : i;
}

typedef struct tally {
    int64_t max_ulp;
    float worst_x, worst_y;
    int64_t points;
    double max_rel;  /* in a tail (fn_case.tail_below) */
    float worst_rel_x;
} tally;

/* Checks one result against its reference (want = libm in double, rounded). */
static void check_one(const fn_case *fc, tally *t, float x, float y, float got, float want)
{
    t->points++;
    if (isnan(want) || isnan(got)) {
        if (isnan(want) != isnan(got))
            fail_msg("%s(%a, %a) = %a, want %a", fc->name, x, y, got, want);
        return;
    }
    /* a tail flushed to zero, with the right sign */
    if (got == 0 && fabsf(want) < fc->flush_below) {
        if (signbit(got) != signbit(want)) fail_msg("%s(%a, %a) = %a, want %a", fc->name, x, y, got, want);
        return;
    }
    /* limits are exact: ±0, ±inf, and never one of them where libm has a finite value */
    if (want == 0 || isinf(want) || got == 0 || isinf(got)) {
        if (bits(got) != bits(want)) fail_msg("%s(%a, %a) = %a, want exactly %a", fc->name, x, y, got, want);
        return;
    }
    if (fc->tail_rel > 0 && x < fc->tail_below) {
        double ref = fc->ref1((double)x), rel = fabs(((double)got - ref) / ref);
        if (rel > t->max_rel) {
            t->max_rel = rel;
            t->worst_rel_x = x;
        }
        if (!(rel <= fc->tail_rel))
            fail_msg("%s(%a) = %a, want %a: relative error %.3g > %.3g", fc->name, x, got, want, rel, fc->tail_rel);
        return;
    }
    int64_t d = llabs(ord(got) - ord(want));
    if (d > t->max_ulp) {
        t->max_ulp = d;
        t->worst_x = x;
        t->worst_y = y;
    }
    if (d > fc->max_ulp)
        fail_msg("%s(%a, %a) = %a, want %a: %lld ulp > %d", fc->name, x, y, got, want, (long long)d, fc->max_ulp);
}

/* Runs all kernels over n inputs; checks the host loop and the SSE2 loop against the
 * reference (tallies t[0] and t[1]), the other FMA kernels against the host loop and
 * the SSE2 vector kernel against the SSE2 loop, bit for bit. */
static void run_chunk(const fn_case *fc, map_fn k[N_KERNELS], tally t[2], const float *x, const float *y,
                      float *out[N_KERNELS], int64_t n)
{
    for (int i = 0; i < N_KERNELS; i++) k[i](x, y, out[i], n);
    for (int64_t j = 0; j < n; j++) {
        float yj = y ? y[j] : 0.0f;
        float want = fc->ref1 ? (float)fc->ref1((double)x[j]) : (float)pow((double)x[j], (double)yj);
        check_one(fc, &t[0], x[j], yj, out[HOST_LOOP][j], want);
        check_one(fc, &t[1], x[j], yj, out[SSE_LOOP][j], want);
        for (int i = 1; i < N_KERNELS; i++) {
            int same_as = i < SSE_LOOP ? HOST_LOOP : SSE_LOOP;
            if (i != SSE_LOOP && bits(out[i][j]) != bits(out[same_as][j]))
                fail_msg("%s(%a, %a): %s gives %a, %s %a", fc->name, x[j], yj, KERNEL_NAMES[i], out[i][j],
                         KERNEL_NAMES[same_as], out[same_as][j]);
        }
    }
}

static void report(const fn_case *fc, const tally t[2])
{
    for (int i = 0; i < 2; i++) {
        print_message("%-8s %-7s max %lld ulp (bound %d) over %lld points, at (%a, %a)\n", fc->name,
                      i ? "no FMA" : "FMA", (long long)t[i].max_ulp, fc->max_ulp, (long long)t[i].points,
                      t[i].worst_x, t[i].worst_y);
        if (fc->tail_rel > 0)
            print_message("%-8s %-7s below x = %g: max relative error %.3g (bound %.3g), at %a\n", fc->name,
                          i ? "no FMA" : "FMA", (double)fc->tail_below, t[i].max_rel, fc->tail_rel, t[i].worst_rel_x);
    }
}

#define CHUNK 65536 /* a multiple of every vector width */

typedef struct buffers {
    float *x, *y, *out[N_KERNELS];
} buffers;

static buffers buffers_alloc(void)
{
    buffers b;
    b.x = aligned_alloc(64, CHUNK * sizeof(float));
    b.y = aligned_alloc(64, CHUNK * sizeof(float));
    for (int i = 0; i < N_KERNELS; i++) b.out[i] = aligned_alloc(64, CHUNK * sizeof(float));
    return b;
}

static void buffers_free(buffers *b)
{
    free(b->x);
    free(b->y);
    for (int i = 0; i < N_KERNELS; i++) free(b->out[i]);
}

/* ---- inputs ----------------------------------------------------------------------------- */

/* Every input that sits on an edge of some function, and one float either side. */
static int special_values(float *v)
{
    const float base[] = {
        0.0f, 1.0f, 0.5f, 2.0f, 0x1p-149f, 0x1.fffffcp-127f, FLT_MIN, FLT_MAX, 1e-20f, 1e-10f, 20.0f, 100.0f, 1e10f,
        0.55f,                                 /* tanh: polynomial / exp boundary */
        88.7228390f, 88.7228393f,              /* exp, expm1: ln FLT_MAX, the overflow edge */
        87.3365448f,                           /* exp(−x): FLT_MIN */
        103.972076f, 103.278931f,              /* exp(−x): the smallest denormal, half of it */
        17.3286800f, 26.0f,                    /* expm1(−x) rounds to −1 */
        9.01091290f, 9.1f,                     /* tanh rounds to ±1 */
        3.91920590f, 3.8325f,                  /* erf rounds to ±1 */
        9.19464f, 10.0554f, 10.3f,             /* erfc: denormal results, 0 */
        0.693147182f, 0.346573591f,            /* ln2, ln2/2: exp's reduction */
        0.707106769f, 1.41421354f,             /* √½, √2: log's reduction */
        10.0609663f, 10.0758432f, 10.0906793f, /* gelu_tanh(−x): 2^w at w = 128, 128.5 (overflow), 129 (the clamp) */
        10.0010449f,                           /* gelu_tanh(x): w = −126, where 2^(k−1) becomes 0 */
    };
    int n = 0;
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        for (int s = 0; s < 2; s++) {
            float b = s ? -base[i] : base[i];
            v[n++] = b;
            v[n++] = nextafterf(b, INFINITY);
            v[n++] = nextafterf(b, -INFINITY);
        }
    v[n++] = INFINITY;
    v[n++] = -INFINITY;
    v[n++] = NAN;
    v[n++] = -NAN;
    v[n++] = from_bits(0x7f800001u); /* a signalling NaN */
    v[n++] = from_bits(0xffc12345u); /* a negative NaN with a payload */
    return n;
}

static uint32_t sweep_stride(void)
{
    const char *s = getenv("KILN_VMATH_STRIDE");
    if (s && atoi(s) > 0) return (uint32_t)atoi(s);
    /* 2^32 / 257 ≈ 1.7·10^7 points; a sanitizer's build runs 1.05·10^6 */
    return SANITIZED ? 4093u : 257u;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_unary(const fn_case *fc)
{
    map_fn k[N_KERNELS];
    compile_all(fc, k);
    buffers b = buffers_alloc();
    tally t[2] = {{0}};

    float specials[256];
    int ns = special_values(specials);
    memcpy(b.x, specials, (size_t)ns * sizeof(float));
    for (int i = ns; i < CHUNK; i++) b.x[i] = 0.0f;
    run_chunk(fc, k, t, b.x, NULL, b.out, CHUNK);

    uint32_t stride = sweep_stride();
    int64_t n = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += stride) {
        b.x[n++] = from_bits((uint32_t)u);
        if (n == CHUNK) {
            run_chunk(fc, k, t, b.x, NULL, b.out, n);
            n = 0;
        }
    }
    if (n) {
        int64_t padded = (n + 15) / 16 * 16;
        for (int64_t i = n; i < padded; i++) b.x[i] = 0.0f;
        run_chunk(fc, k, t, b.x, NULL, b.out, padded);
    }
    report(fc, t);
    buffers_free(&b);
}

static void test_exp(void **state) { test_unary(&CASES[0]); }
static void test_expm1(void **state) { test_unary(&CASES[1]); }
static void test_log(void **state) { test_unary(&CASES[2]); }
static void test_tanh(void **state) { test_unary(&CASES[3]); }
static void test_sigmoid(void **state) { test_unary(&CASES[4]); }
static void test_erf(void **state) { test_unary(&CASES[5]); }
static void test_erfc(void **state) { test_unary(&CASES[6]); }
static void test_gelu_tanh(void **state) { test_unary(&CASES[8]); }

static uint64_t g_rng = 0x2545f4914f6cdd1du;
static uint64_t next_u64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* pow: every pair of special values (exact: the C99 Annex F cases), then random pairs —
 * random bit patterns, moderate bases with exponents in ±40, negative bases with integer
 * exponents. */
static void test_pow(void **state)
{
    const fn_case *fc = &CASES[7];
    map_fn k[N_KERNELS];
    compile_all(fc, k);
    buffers b = buffers_alloc();
    tally t[2] = {{0}};

    const float sp[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 2.0f, -2.0f, 3.0f, -3.0f, 1.5f, -1.5f, 0x1p-149f,
                        -0x1p-149f, FLT_MIN, FLT_MAX, -FLT_MAX, 0x1p24f, -0x1p24f, 0x1.fffffep23f, -0x1.fffffep23f,
                        0x1p25f, 0x1.000002p0f, 0x1.fffffep-1f, 7.0f, -7.0f, INFINITY, -INFINITY, NAN, -NAN};
    int n = 0, nsp = (int)(sizeof sp / sizeof *sp);
    for (int i = 0; i < nsp; i++)
        for (int j = 0; j < nsp; j++, n++) {
            b.x[n] = sp[i];
            b.y[n] = sp[j];
        }
    for (int i = n; i < CHUNK; i++) b.x[i] = b.y[i] = 1.0f;
    /* the Annex F results (NaN, ±0, ±inf, ±1) exactly, with their signs; run_chunk
     * holds the others to the bound */
    run_chunk(fc, k, t, b.x, b.y, b.out, CHUNK);
    for (int i = 0; i < n; i++)
        for (int kk = HOST_LOOP; kk <= SSE_LOOP; kk += SSE_LOOP - HOST_LOOP) {
            float want = (float)pow((double)b.x[i], (double)b.y[i]), got = b.out[kk][i];
            bool limit = isnan(want) || want == 0 || isinf(want) || fabsf(want) == 1.0f;
            if (limit && !(isnan(want) && isnan(got)) && bits(got) != bits(want))
                fail_msg("pow(%a, %a) = %a (%s), want exactly %a", b.x[i], b.y[i], got, KERNEL_NAMES[kk], want);
        }

    int64_t pairs = SANITIZED ? 1 << 18 : 1 << 21;
    for (int64_t c = 0; c < pairs; c += CHUNK) {
        for (int i = 0; i < CHUNK; i++) {
            uint64_t r = next_u64();
            switch (i & 3) {
            case 0: /* any bits */
                b.x[i] = from_bits((uint32_t)r);
                b.y[i] = from_bits((uint32_t)(r >> 32));
                break;
            case 1: /* a positive base near 1..2^±16, exponent in ±40 */
                b.x[i] = ldexpf(1.0f + (float)(r & 0xffffff) / 0x1p24f, (int)((r >> 24) & 31) - 16);
                b.y[i] = (float)((int32_t)(r >> 32)) / 0x1p31f * 40.0f;
                break;
            case 2: /* a negative base with an integer exponent */
                b.x[i] = -ldexpf(1.0f + (float)(r & 0xffffff) / 0x1p24f, (int)((r >> 24) & 15) - 8);
                b.y[i] = (float)((int32_t)(r >> 32) >> 26);
                break;
            default: /* any base, small exponent */
                b.x[i] = from_bits((uint32_t)r);
                b.y[i] = (float)((int32_t)(r >> 32)) / 0x1p31f * 4.0f;
                break;
            }
        }
        run_chunk(fc, k, t, b.x, b.y, b.out, CHUNK);
    }
    report(fc, t);
    buffers_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp),  cmocka_unit_test(test_expm1), cmocka_unit_test(test_log),
        cmocka_unit_test(test_tanh), cmocka_unit_test(test_sigmoid), cmocka_unit_test(test_erf),
        cmocka_unit_test(test_erfc), cmocka_unit_test(test_pow), cmocka_unit_test(test_gelu_tanh),
    };
    return cmocka_run_group_tests_name("vmath", tests, setup, teardown);
}
