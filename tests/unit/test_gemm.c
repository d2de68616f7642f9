/* test_gemm.c — the generated GEMM (codegen/gemm.c) against a float64 triple loop.
 *
 * Design: every case builds a module holding one gemm function plus an exported wrapper
 * "entryN" that calls it, verifies it, runs a pass pipeline and adds it to one LLJIT
 * shared by the whole run. Most cases use "default<O3>", the most the optimiser can do to
 * the emitted IR; some use the light pipeline jit.c gives GEMMs, some none at all. The matrices are
 * random in [-1, 1] and sit at the very end of an mmap'd region followed by a PROT_NONE
 * page, so a read or write one element past A, B or C faults; everything of C outside the
 * m×n result (row padding when ldc > n) and a guard zone after the scratch must keep its
 * sentinel. Results must match Σ a·b in float64 within (k+2)·FLT_EPSILON·Σ|a·b| per
 * element: an omitted or doubled term is far larger than that.
 *
 * Three targets: the host (AVX-512 here: 16 lanes, 12×32 tiles), "haswell" (AVX2 + FMA:
 * 8 lanes, 6×16 tiles) and "x86-64" (SSE2: 4 lanes, 6×8 tiles), whose functions all run
 * in the same JIT because the target attributes live on each function. One test checks
 * that the assembly of each target uses the vector registers it should. Each shape is one
 * cmocka test (see main).
 *
 * Epilogues (kiln_cg_gemm_epi, see "epilogues" below) are checked against a float64
 * reference, across thread counts, and bit for bit against the same computation compiled
 * as separate kiln kernels.
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
#include <sys/mman.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen.h"
#include "kiln/runtime.h" /* the thread pool */
#include "lower.h" /* cg_init_in_context: a kiln_cg in the JIT's context */

/* ---- a small JIT harness --------------------------------------------------------- */

typedef void (*gemm_fn)(const float *a, const float *b, float *c, float *scratch);

static kiln_target g_host, g_haswell, g_sse;
static LLVMOrcLLJITRef g_jit;
static int g_next_entry;

static void check_error(LLVMErrorRef e) {
    if (!e) return;
    char *msg = LLVMGetErrorMessage(e);
    fail_msg("LLVM: %s", msg);
    LLVMDisposeErrorMessage(msg);
}

static int setup_jit(void **state) {
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_target_host(&g_host, &d) && kiln_target_for(&g_haswell, "haswell", "+avx2,+fma", &d) &&
              kiln_target_for(&g_sse, "x86-64", "+sse2", &d);
    kiln_diags_free(&d);
    if (!ok || g_haswell.vector_floats != 8 || g_sse.vector_floats != 4) return -1;
    if (LLVMOrcCreateLLJIT(&g_jit, NULL)) return -1;
    LLVMOrcDefinitionGeneratorRef gen;
    if (LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(g_jit), NULL, NULL))
        return -1;
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(g_jit), gen);
    LLVMErrorRef err = kiln_jit_define_runtime(g_jit);  /* kiln_parallel_for */
    if (err) {
        LLVMConsumeError(err);
        return -1;
    }
    return 0;
}

static int teardown_jit(void **state) {
    LLVMOrcDisposeLLJIT(g_jit);
    kiln_target_free(&g_host);
    kiln_target_free(&g_haswell);
    kiln_target_free(&g_sse);
    return 0;
}

/* Ends the wrapper being built in cg, checks the module, optimises it (passes = NULL:
 * none) and hands it to the JIT (which takes the module; the context belongs to tsc);
 * returns the wrapper's address. */
static void *finish_entry(kiln_cg *cg, LLVMOrcThreadSafeContextRef tsc, const kiln_target *t, const char *passes,
                          const char *name) {
    LLVMBuildRetVoid(cg->b);
    LLVMDisposeBuilder(cg->b);
    char *msg = NULL;
    if (LLVMVerifyModule(cg->mod, LLVMReturnStatusAction, &msg)) fail_msg("invalid module: %s", msg);
    LLVMDisposeMessage(msg);
    if (passes) {
        LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
        check_error(LLVMRunPasses(cg->mod, passes, t->tm, opts));
        LLVMDisposePassBuilderOptions(opts);
    }
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(cg->mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    check_error(LLVMOrcLLJITAddLLVMIRModule(g_jit, LLVMOrcLLJITGetMainJITDylib(g_jit), tsm));
    LLVMOrcExecutorAddress addr = 0;
    check_error(LLVMOrcLLJITLookup(g_jit, &addr, name));
    return (void *)(uintptr_t)addr;
}

/* Builds, checks, optimises (passes = NULL: none) and JITs one gemm function behind an
 * exported wrapper "entryN" with the gemm's own four pointers, or, with an epilogue
 * (e not NULL), with all seven (a, b, c, scratch, bias, pre_out, residual) of which it
 * passes those the epilogue has. The wrapper is begun before the GEMM is emitted and
 * finished after, with cg.b: the GEMM must leave the caller's builder where it was. */
static void *compile_epi(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                         const char *passes) {
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    kiln_cg cg;
    cg_init_in_context(&cg, t, LLVMOrcThreadSafeContextGetContext(tsc), "test_gemm");
    char name[32];
    snprintf(name, sizeof name, "entry%d", g_next_entry++);
    unsigned n_wrapper = e ? 7 : 4;
    LLVMTypeRef params[] = {cg.t_ptr, cg.t_ptr, cg.t_ptr, cg.t_ptr, cg.t_ptr, cg.t_ptr, cg.t_ptr};
    LLVMValueRef entry = LLVMAddFunction(cg.mod, name, LLVMFunctionType(cg.t_void, params, n_wrapper, 0));
    LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, entry, "entry"));

    LLVMValueRef gemm = e ? kiln_cg_gemm_epi(&cg, s, e) : kiln_cg_gemm(&cg, s);
    assert_ptr_equal(e ? kiln_cg_gemm_epi(&cg, s, e) : kiln_cg_gemm(&cg, s), gemm);  /* an equal shape reuses it */

    LLVMValueRef args[7];
    unsigned n = 0;
    for (unsigned i = 0; i < n_wrapper; i++) {
        bool present = i < 4 || (i == 4 && e->bias) || (i == 5 && e->pre_out) || (i == 6 && e->residual);
        if (present) args[n++] = LLVMGetParam(entry, i);
    }
    assert_int_equal(LLVMCountParams(gemm), n);
    LLVMBuildCall2(cg.b, LLVMGlobalGetValueType(gemm), gemm, args, n, "");
    return finish_entry(&cg, tsc, t, passes, name);
}

static gemm_fn compile(const kiln_target *t, const kiln_gemm_shape *s, const char *passes) {
    return (gemm_fn)compile_epi(t, s, NULL, passes);
}

/* ---- guarded matrices ------------------------------------------------------------ */

/* `n` floats ending exactly where a PROT_NONE page begins. */
typedef struct guarded {
    float *p;
    void *base;
    size_t len;
} guarded;

static guarded guarded_alloc(size_t n) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = n * sizeof(float), data = (bytes + page - 1) / page * page;
    guarded g = {.len = data + page};
    g.base = mmap(NULL, g.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g.base != MAP_FAILED);
    assert_int_equal(mprotect((char *)g.base + data, page, PROT_NONE), 0);
    g.p = (float *)((char *)g.base + data - bytes);
    return g;
}

static void guarded_free(guarded *g) { munmap(g->base, g->len); }

/* n floats, 64-byte aligned (aligned_alloc wants a size that is a multiple of 64) */
static float *alloc64(int64_t n) { return aligned_alloc(64, (size_t)(n + 16) / 16 * 64); }

static uint64_t g_rng = 0x9e3779b97f4a7c15u;
static float rand_pm1(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

/* ---- one case ---------------------------------------------------------------------- */

typedef struct gemm_case {
    int64_t m, n, k;
    bool ta, tb;
    int64_t pad_a, pad_b, pad_c;  /* extra elements per row beyond the minimal stride */
    int target;                   /* 0: host, 1: haswell (AVX2), 2: x86-64 (SSE2) */
    const char *passes;           /* NULL: no IR optimisation */
    char name[96];
} gemm_case;

static const float SENTINEL = -7777.0f;
enum { GUARD = 256 };

static void run_case(void **state) {
    const gemm_case *cs = *state;
    const kiln_target *t = cs->target == 1 ? &g_haswell : cs->target == 2 ? &g_sse : &g_host;
    kiln_gemm_shape s = {.m = cs->m, .n = cs->n, .k = cs->k, .trans_a = cs->ta, .trans_b = cs->tb};
    int64_t a_rows = cs->ta ? cs->k : cs->m, a_cols = cs->ta ? cs->m : cs->k;
    int64_t b_rows = cs->tb ? cs->n : cs->k, b_cols = cs->tb ? cs->k : cs->n;
    s.lda = a_cols + cs->pad_a;
    s.ldb = b_cols + cs->pad_b;
    s.ldc = cs->n + cs->pad_c;

    gemm_fn fn = compile(t, &s, cs->passes);
    guarded a = guarded_alloc((size_t)(a_rows * s.lda + 1));
    guarded b = guarded_alloc((size_t)(b_rows * s.ldb + 1));
    guarded c = guarded_alloc((size_t)(cs->m * s.ldc + 1));
    /* +1: a zero-sized matrix still gets a valid pointer; the extra element is the last
     * one before the guard page and must stay untouched for C. */
    for (int64_t i = 0; i < a_rows * s.lda; i++) a.p[i] = rand_pm1();
    for (int64_t i = 0; i < b_rows * s.ldb; i++) b.p[i] = rand_pm1();
    for (int64_t i = 0; i <= cs->m * s.ldc; i++) c.p[i] = SENTINEL;
    int64_t scratch_n = kiln_gemm_scratch_floats(t, &s);
    assert_true(scratch_n >= 0);
    float *scratch = alloc64(scratch_n + GUARD);
    for (int64_t i = 0; i < scratch_n + GUARD; i++) scratch[i] = SENTINEL;

    fn(a.p, b.p, c.p, scratch);

    int bad = 0;
    for (int64_t i = 0; i < cs->m; i++) {
        for (int64_t j = 0; j < s.ldc; j++) {
            float got = c.p[i * s.ldc + j];
            if (j >= cs->n) {
                if (got != SENTINEL && bad++ < 5) print_error("C[%ld][%ld] past n was written\n", (long)i, (long)j);
                continue;
            }
            double sum = 0, mag = 0;
            for (int64_t q = 0; q < cs->k; q++) {
                double x = cs->ta ? a.p[q * s.lda + i] : a.p[i * s.lda + q];
                double y = cs->tb ? b.p[j * s.ldb + q] : b.p[q * s.ldb + j];
                sum += x * y;
                mag += fabs(x * y);
            }
            double tol = (double)(cs->k + 2) * FLT_EPSILON * mag;
            if (!(fabs(got - sum) <= tol) && bad++ < 5)
                print_error("C[%ld][%ld] = %.9g, want %.9g (tol %.3g)\n", (long)i, (long)j, got, sum, tol);
        }
    }
    if (c.p[cs->m * s.ldc] != SENTINEL && bad++ < 5) print_error("the element after C was written\n");
    for (int64_t i = scratch_n; i < scratch_n + GUARD; i++)
        if (scratch[i] != SENTINEL && bad++ < 5) print_error("scratch[%ld] past its size was written\n", (long)i);
    free(scratch);
    guarded_free(&a);
    guarded_free(&b);
    guarded_free(&c);
    assert_int_equal(bad, 0);
}

/* ---- tests that are not one shape ------------------------------------------------- */

/* Functions are shared per shape, and named by it; the micro-kernel and packers are
 * shared by every shape of a module. */
static void test_reuse_and_names(void **state) {
    kiln_cg cg;
    kiln_cg_init(&cg, &g_host, "test_gemm");
    kiln_gemm_shape s1 = {64, 32, 48, false, true, 48, 48, 32};
    kiln_gemm_shape s2 = s1, s3 = s1;
    s2.ldc = 40;
    s3.trans_a = true, s3.lda = 64;
    LLVMValueRef f1 = kiln_cg_gemm(&cg, &s1), f2 = kiln_cg_gemm(&cg, &s2), f3 = kiln_cg_gemm(&cg, &s3);
    assert_ptr_equal(kiln_cg_gemm(&cg, &s1), f1);
    assert_ptr_not_equal(f1, f2);
    assert_ptr_not_equal(f1, f3);
    assert_ptr_not_equal(f2, f3);
    size_t len;
    assert_non_null(strstr(LLVMGetValueName2(f1, &len), "m64_n32_k48_nt"));
    assert_int_equal(LLVMGetLinkage(f1), LLVMInternalLinkage);
    int tiles = 0, packers = 0, nests = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(cg.mod); f; f = LLVMGetNextFunction(f)) {
        const char *name = LLVMGetValueName2(f, &len);
        tiles += strncmp(name, "kiln_gemm_tile_", 15) == 0;
        packers += strncmp(name, "kiln_gemm_pack_", 15) == 0;
        nests += strncmp(name, "kiln_gemm_loops_", 16) == 0;
        if (strncmp(name, "kiln_gemm_", 10) == 0) assert_int_equal(LLVMGetLinkage(f), LLVMInternalLinkage);
    }
    assert_int_equal(tiles, 2);    /* and the 4-row tile of the last sliver (64 = 5·12 + 4, 10·6 + 4) */
    assert_int_equal(packers, 3);  /* A plain (transpose) and transposed (copy), B transposed */
    assert_int_equal(nests, 2);    /* nt, tt */
    if (g_host.vector_floats == 16) {
        assert_non_null(LLVMGetNamedFunction(cg.mod, "kiln_gemm_tile_w16_12x32"));
        assert_non_null(LLVMGetNamedFunction(cg.mod, "kiln_gemm_tile_w16_4of12x32"));
        assert_non_null(LLVMGetNamedFunction(cg.mod, "kiln_gemm_loops_w16_nt_e4"));
    }
    char *msg = NULL;
    assert_int_equal(LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg), 0);
    LLVMDisposeMessage(msg);
    kiln_cg_dispose(&cg);
}

/* Scratch is zero when there is nothing to pack, and covers both packed regions. Only
 * the vector width of the target matters, so these use fixed widths, not the host's. */
static void test_scratch_sizes(void **state) {
    const kiln_target avx512 = {.vector_floats = 16}, avx2 = {.vector_floats = 8};
    kiln_gemm_shape s0 = {0, 5, 5, false, false, 5, 5, 5}, k0 = {5, 5, 0, false, false, 0, 5, 5};
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &s0), 0);
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &k0), 0);
    kiln_gemm_shape one = {1, 1, 1, true, true, 1, 1, 1}; /* both transposed: the packed path */
    /* one 12-row A sliver (rounded to 16 floats) + one 32-column B sliver, depth 1 */
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &one), 16 + 32);
    assert_int_equal(kiln_gemm_scratch_floats(&avx2, &one), 16 + 16);
    /* a few rows of A and B plain: the small-m path packs nothing (up to 8 rows, and no
     * more than a tile has) */
    kiln_gemm_shape few = {8, 100, 1000, true, false, 8, 100, 100}, seven = {7, 100, 1000, false, false, 1000, 100, 100};
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &few), 0);
    assert_true(kiln_gemm_scratch_floats(&avx2, &few) > 0);
    assert_int_equal(kiln_gemm_scratch_floats(&avx2, &(kiln_gemm_shape){6, 100, 1000, false, false, 1000, 100, 100}), 0);
    assert_true(kiln_gemm_scratch_floats(&avx512, &(kiln_gemm_shape){9, 100, 1000, false, false, 1000, 100, 100}) > 0);
    /* … but its partial sums with accumulate over several k blocks */
    kiln_gemm_epilogue acc = {.accumulate = true};
    assert_int_equal(kiln_gemm_epi_scratch_floats(&avx512, &seven, &acc), 7 * 100 / 16 * 16 + 16);
    /* blocks are balanced: m 1000 = 504 + 496, k 400 = 208 + 192, n 700 = 256 + 256 + 188;
     * m·n·k ≥ 2^18 gives one part per thread, up to 8 scratch slots, each packing its
     * own A block and B block (nothing is shared between parts) */
    kiln_gemm_shape mid = {1000, 700, 400, false, false, 400, 700, 700};
    /* … but a part of mid (504 rows on 2 threads, n ≤ 1152) runs B outer (gemm.c,
     * part_plan_for): A blocks of 84 rows and a whole k block of B, 704 columns */
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &mid), 8 * (84 * 208 + 704 * 208));
    kiln_gemm_shape wide = {2000, 3000, 400, false, false, 400, 3000, 3000};  /* m 2000 = 3 × 672, n 10 × 320 */
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &wide), 8 * (672 * 208 + 320 * 208));
    /* cut along m: a part of 2 threads has 10008 rows, in A blocks of its own (gemm.c,
     * part_plan_for: at most 1032 rows), 10 × 1008, which is what its slot holds */
    kiln_gemm_shape wider = {20000, 12000, 400, false, false, 400, 12000, 12000};
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &wider), 8 * (1008 * 208 + 320 * 208));
    kiln_gemm_shape flat = {100, 700, 400, false, false, 400, 700, 700};  /* A one block of 108 rows */
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &flat), 8 * (108 * 208 + 256 * 208));
    kiln_gemm_shape small = {40, 40, 40, false, false, 40, 40, 40};  /* 64000 < 2^18: one slot */
    assert_int_equal(kiln_gemm_scratch_floats(&avx512, &small), 48 * 40 + 64 * 40);
    /* large shapes are bounded by the blocks (× the parts), not the matrices */
    kiln_gemm_shape big = {4096, 4096, 4096, false, false, 4096, 4096, 4096};
    assert_true(kiln_gemm_scratch_floats(&avx512, &big) < KILN_MAX_THREADS << 20);
}

/* The assembly uses zmm on the host (prefer-vector-width=512 even on Intel), only ymm for
 * haswell and only xmm for x86-64: the AVX2 and SSE cases really ran narrower code. */
static void check_asm(const kiln_target *t, const char *want, const char *forbid) {
    kiln_cg cg;
    kiln_cg_init(&cg, t, "test_gemm");
    kiln_gemm_shape s = {37, 45, 29, false, false, 29, 45, 45};
    LLVMValueRef fn = kiln_cg_gemm(&cg, &s);
    LLVMSetLinkage(fn, LLVMExternalLinkage);  /* keep it through codegen */
    char *err = NULL;
    LLVMMemoryBufferRef buf = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(t->tm, cg.mod, LLVMAssemblyFile, &err, &buf)) fail_msg("%s", err);
    size_t n = LLVMGetBufferSize(buf);
    char *text = malloc(n + 1);
    memcpy(text, LLVMGetBufferStart(buf), n);
    text[n] = 0;
    assert_non_null(strstr(text, want));
    if (t->vector_floats >= 8) assert_non_null(strstr(text, "vfmadd"));  /* SSE2 has no FMA: a libcall */
    if (forbid) assert_null(strstr(text, forbid));
    free(text);
    LLVMDisposeMemoryBuffer(buf);
    kiln_cg_dispose(&cg);
}

static void test_asm_vector_registers(void **state) {
    if (g_host.vector_floats == 16) check_asm(&g_host, "zmm", NULL);
    check_asm(&g_haswell, "ymm", "zmm");
    check_asm(&g_sse, "xmm", "ymm");
}

/* With llvm.fma every C element sums its k terms in the same order whatever the tile, so
 * the AVX-512 and AVX2 functions agree bit for bit (a property kiln's tests may rely on). */
static void test_targets_agree(void **state) {
    kiln_gemm_shape s = {37, 45, 800, false, true, 801, 803, 47};
    gemm_fn wide = compile(&g_host, &s, "default<O3>"), narrow = compile(&g_haswell, &s, NULL);
    float *a = malloc(sizeof(float) * 37 * 801), *b = malloc(sizeof(float) * 45 * 803);
    float *c1 = calloc(37 * 47, sizeof(float)), *c2 = calloc(37 * 47, sizeof(float));
    for (int i = 0; i < 37 * 801; i++) a[i] = rand_pm1();
    for (int i = 0; i < 45 * 803; i++) b[i] = rand_pm1();
    int64_t n1 = kiln_gemm_scratch_floats(&g_host, &s), n2 = kiln_gemm_scratch_floats(&g_haswell, &s);
    float *scratch = alloc64(n1 > n2 ? n1 : n2);
    wide(a, b, c1, scratch);
    narrow(a, b, c2, scratch);
    assert_memory_equal(c1, c2, sizeof(float) * 37 * 47);
    free(a);
    free(b);
    free(c1);
    free(c2);
    free(scratch);
}

/* Products big enough to be split across threads give the same bits for 1, 2, 3, 5 and
 * 8 threads (one part per thread, tiles shared out unevenly when they do not divide,
 * fewer parts than threads when the slots run out): parts along m and along n, all four
 * transposes, padded strides, partial last parts and tiles. */
static void test_threads_bit_identical(void **state) {
    static const kiln_gemm_shape shapes[] = {
        {300, 200, 150, false, false, 150, 200, 200},   /* split along m */
        {20, 700, 100, false, true, 103, 101, 705},     /* split along n */
        {97, 61, 1000, true, true, 99, 1003, 64},       /* 9 row tiles: parts of 2, the last short */
        {130, 500, 431, true, false, 131, 502, 500},
        {1000, 45, 400, false, false, 400, 45, 45},      /* one thread: the bo nest, */
        {1000, 400, 400, true, true, 1003, 403, 401},    /* B by the transposer */
        {256, 300, 200, false, false, 200, 300, 300},   /* A the smaller operand: along n */
        {64, 48, 44000, false, false, 44000, 48, 48},    /* k·n ≥ 2^21: the parts' own A blocks */
        {980, 1160, 1808, false, false, 1808, 1160, 1160}, /* one thread: the bo nest for B > 8 MiB */
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const kiln_gemm_shape *s = &shapes[si];
        gemm_fn fn = compile(&g_host, s, "default<O3>");
        int64_t na = (s->trans_a ? s->k : s->m) * s->lda, nb = (s->trans_b ? s->n : s->k) * s->ldb, nc = s->m * s->ldc;
        float *a = alloc64(na), *b = alloc64(nb), *want = alloc64(nc), *got = alloc64(nc);
        for (int64_t i = 0; i < na; i++) a[i] = rand_pm1();
        for (int64_t i = 0; i < nb; i++) b[i] = rand_pm1();
        float *scratch = alloc64(kiln_gemm_scratch_floats(&g_host, s));
        memset(want, 0, sizeof(float) * (size_t)nc);
        assert_int_equal(kiln_threads_set(1), 0);
        fn(a, b, want, scratch);
        static const int thread_counts[] = {2, 3, 5, 8};
        for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++) {
            assert_int_equal(kiln_threads_set(thread_counts[ti]), 0);
            memset(got, 0, sizeof(float) * (size_t)nc);
            fn(a, b, got, scratch);
            assert_memory_equal(want, got, sizeof(float) * (size_t)nc);
        }
        assert_int_equal(kiln_threads_set(1), 0);
        free(a);
        free(b);
        free(want);
        free(got);
        free(scratch);
    }
}

/* ---- epilogues ----------------------------------------------------------------------- */

/* kiln_cg_gemm_epi: each case runs the fused function once on one thread and checks C (and
 * P) against a float64 reference; with `threads` again on two threads, which must give
 * the same bits; with `unfused` it also compiles the same computation as separate IR
 * nodes (matmul → scale → add bias → act → add R → add to C) through kiln_compile_graph,
 * whose kernels must give the same bits too. Every operand is guarded as in run_case,
 * every stride can be padded, and padding must keep its sentinel. */

typedef void (*epi_fn)(const float *a, const float *b, float *c, float *scratch, const float *bias, float *p,
                       const float *r);

enum { EPI_ACC = 1, EPI_SCALE = 2, EPI_BIAS = 4, EPI_PRE = 8, EPI_RES = 16, EPI_ALL = 31 };

typedef struct epi_case {
    int64_t m, n, k;
    bool ta, tb;
    int64_t pad;             /* 0: minimal strides; else every stride padded by a different amount */
    unsigned flags;          /* EPI_* */
    kiln_gemm_act act;
    int target;              /* 0: host, 1: haswell (AVX2) */
    bool unfused, threads;
    char name[128];
} epi_case;

static const char *const epi_act_names[] = {"none", "relu", "gelu", "gelu_tanh", "silu"};

/* the scale of the cases: not an f32, so the double product and its rounding show */
static double epi_scale(void) { return 1.0 / sqrt(40.0); }

static double ref_act(kiln_gemm_act act, double x) {
    switch (act) {
    case KILN_GEMM_ACT_NONE: return x;
    case KILN_GEMM_ACT_RELU: return x < 0 ? 0 : x;
    case KILN_GEMM_ACT_GELU: return 0.5 * x * erfc(-x / sqrt(2.0));
    case KILN_GEMM_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case KILN_GEMM_ACT_SILU: return x / (1.0 + exp(-x));
    }
    return NAN;
}

/* calls an entry point of n pointer arguments */
static int call_ptrs(void *fn, void **a, int n) {
    typedef void *P;
    switch (n) {
    case 4: return ((int (*)(P, P, P, P))fn)(a[0], a[1], a[2], a[3]);
    case 5: return ((int (*)(P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4]);
    case 6: return ((int (*)(P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5]);
    case 7: return ((int (*)(P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
    case 8: return ((int (*)(P, P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    case 9: return ((int (*)(P, P, P, P, P, P, P, P, P))fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
    }
    fail_msg("%d arguments", n);
    return -1;
}

/* rows×cols of a matrix with row stride ld, copied to minimal stride (malloc'd) */
static float *compact(const float *x, int64_t rows, int64_t cols, int64_t ld) {
    float *y = malloc(sizeof(float) * (size_t)(rows * cols + 1));
    for (int64_t i = 0; i < rows; i++) memcpy(y + i * cols, x + i * ld, sizeof(float) * (size_t)cols);
    return y;
}

/* An INPUT node of d0 (rank 1) or d0×d1 floats, its data compacted from src (row stride ld). */
typedef struct unfused_inputs {
    uint32_t id[5];
    void *data[5];
    int n;
} unfused_inputs;

static uint32_t unfused_input(kiln_graph *g, kiln_diags *d, unfused_inputs *in, const char *name, int rank,
                              int64_t d0, int64_t d1, const float *src, int64_t ld) {
    kiln_attrs at = {.dtype = KILN_F32, .rank = rank, .shape = {d0, d1}, .name = name};
    in->id[in->n] = kiln_graph_add(g, KILN_OP_INPUT, NULL, 0, &at, NULL, "test", d);
    in->data[in->n] = compact(src, rank == 1 ? 1 : d0, rank == 1 ? d0 : d1, ld);
    return in->id[in->n++];
}

typedef struct epi_data {
    const float *a, *b, *bias, *r, *c0;  /* c0: C before the call (accumulate) */
    const float *c, *p;                  /* the fused results */
} epi_data;

/* The same computation as separate kiln kernels (kiln_compile_graph): C and P must match
 * the fused results bit for bit. */
static void check_unfused(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                          const epi_data *x) {
    kiln_graph g;
    kiln_diags d;
    kiln_graph_init(&g, "unfused");
    kiln_diags_init(&d);
    unfused_inputs in = {0};
    int64_t m = s->m, n = s->n, k = s->k;
    int64_t a_rows = s->trans_a ? k : m, a_cols = s->trans_a ? m : k, b_rows = s->trans_b ? n : k,
            b_cols = s->trans_b ? k : n;
    unfused_input(&g, &d, &in, "a", 2, a_rows, a_cols, x->a, s->lda);
    unfused_input(&g, &d, &in, "b", 2, b_rows, b_cols, x->b, s->ldb);
    kiln_attrs tr = {.transpose_a = s->trans_a, .transpose_b = s->trans_b};
    uint32_t v = kiln_graph_add(&g, KILN_OP_MATMUL, in.id, 2, &tr, NULL, "test", &d);
    if (e->scale != 0 && e->scale != 1) {
        kiln_attrs sc = {.scalar = e->scale};
        v = kiln_graph_add(&g, KILN_OP_SCALE, &v, 1, &sc, NULL, "test", &d);
    }
    if (e->bias) {
        uint32_t two[2] = {v, unfused_input(&g, &d, &in, "bias", 1, n, 0, x->bias, n)};
        v = kiln_graph_add(&g, KILN_OP_ADD, two, 2, NULL, NULL, "test", &d);
    }
    uint32_t pre = v;
    static const kiln_op act_op[] = {KILN_OP_COUNT, KILN_OP_RELU, KILN_OP_GELU, KILN_OP_GELU_TANH, KILN_OP_SILU};
    if (e->act) v = kiln_graph_add(&g, act_op[e->act], &v, 1, NULL, NULL, "test", &d);
    if (e->residual) {
        uint32_t two[2] = {v, unfused_input(&g, &d, &in, "r", 2, m, n, x->r, e->ldr)};
        v = kiln_graph_add(&g, KILN_OP_ADD, two, 2, NULL, NULL, "test", &d);
    }
    if (e->accumulate) {
        uint32_t two[2] = {unfused_input(&g, &d, &in, "c0", 2, m, n, x->c0, s->ldc), v};
        v = kiln_graph_add(&g, KILN_OP_ADD, two, 2, NULL, NULL, "test", &d);
    }
    for (int i = 0; i < d.n; i++) print_error("graph: %s\n", d.items[i].message);
    assert_int_equal(d.n, 0);
    kiln_graph_add_output(&g, "y", v);
    if (e->pre_out) kiln_graph_add_output(&g, "pre", pre);

    kiln_compile_request req = {.g = &g, .inputs = in.id, .n_inputs = (uint32_t)in.n, .name = "unfused", .target = t,
                                .no_fuse = true};  /* really separate kernels: no GEMM epilogue fusion */
    kiln_compiled cc;
    if (!kiln_compile_graph(&req, &cc, &d)) {
        for (int i = 0; i < d.n; i++) print_error("compile: %s\n", d.items[i].message);
        fail();
    }
    void *ws = kiln_aligned_alloc((size_t)cc.workspace_bytes + 64), *params = kiln_aligned_alloc(64);
    float *y = malloc(sizeof(float) * (size_t)(m * n + 1)), *py = malloc(sizeof(float) * (size_t)(m * n + 1));
    void *args[9] = {params, ws};
    int na = 2;
    for (int i = 0; i < in.n; i++) args[na++] = in.data[i];
    args[na++] = y;
    if (e->pre_out) args[na++] = py;
    assert_int_equal(na, (int)cc.n_args);
    assert_int_equal(call_ptrs(cc.entry, args, na), 0);

    int bad = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float fy = x->c[i * s->ldc + j], uy = y[i * n + j];
            if (memcmp(&fy, &uy, 4) != 0 && bad++ < 5)
                print_error("C[%ld][%ld] fused %.9g, unfused %.9g\n", (long)i, (long)j, fy, uy);
            if (!e->pre_out) continue;
            float fp = x->p[i * e->ldp + j], up = py[i * n + j];
            if (memcmp(&fp, &up, 4) != 0 && bad++ < 5)
                print_error("P[%ld][%ld] fused %.9g, unfused %.9g\n", (long)i, (long)j, fp, up);
        }
    free(y);
    free(py);
    for (int i = 0; i < in.n; i++) free(in.data[i]);
    kiln_aligned_free(ws);
    kiln_aligned_free(params);
    kiln_compiled_free(&cc);
    kiln_graph_free(&g);
    kiln_diags_free(&d);
    assert_int_equal(bad, 0);
}

/* C (and P) against float64: the product within run_case's bound, then each step's own
 * rounding (and, for the activation, its slope ≤ 1.25 over the error so far, with room
 * for the rounding of its argument); the result must be within twice that. */
static int check_epi_reference(const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, const epi_data *x) {
    const double eps = FLT_EPSILON;
    int bad = 0;
    for (int64_t i = 0; i < s->m; i++)
        for (int64_t j = 0; j < s->n; j++) {
            double sum = 0, mag = 0;
            for (int64_t q = 0; q < s->k; q++) {
                double u = s->trans_a ? x->a[q * s->lda + i] : x->a[i * s->lda + q];
                double w = s->trans_b ? x->b[j * s->ldb + q] : x->b[q * s->ldb + j];
                sum += u * w;
                mag += fabs(u * w);
            }
            double v = sum, err = (double)(s->k + 2) * eps * mag;
            if (e->scale != 0 && e->scale != 1) v *= e->scale, err = err * fabs(e->scale) + eps * fabs(v);
            if (e->bias) v += x->bias[j], err += eps * fabs(v);
            if (e->pre_out) {
                float got = x->p[i * e->ldp + j];
                if (!(fabs(got - v) <= 2 * err + 1e-30) && bad++ < 5)
                    print_error("P[%ld][%ld] = %.9g, want %.9g (tol %.3g)\n", (long)i, (long)j, got, v, 2 * err);
            }
            if (e->act) {
                double y = ref_act(e->act, v);
                err = 1.25 * (err + 4 * eps * fabs(v)) + 8 * eps * fabs(y);
                v = y;
            }
            if (e->residual) v += x->r[i * e->ldr + j], err += eps * fabs(v);
            if (e->accumulate) v += x->c0[i * s->ldc + j], err += eps * fabs(v);
            float got = x->c[i * s->ldc + j];
            if (!(fabs(got - v) <= 2 * err + 1e-30) && bad++ < 5)
                print_error("C[%ld][%ld] = %.9g, want %.9g (tol %.3g)\n", (long)i, (long)j, got, v, 2 * err);
        }
    return bad;
}

/* Sentinels past n in the rows of an m×ld matrix, and in the element after it. */
static int check_padding(const char *what, const float *x, int64_t m, int64_t n, int64_t ld) {
    int bad = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = n; j < ld; j++)
            if (x[i * ld + j] != SENTINEL && bad++ < 3) print_error("%s[%ld][%ld] past n was written\n", what, (long)i, (long)j);
    if (x[m * ld] != SENTINEL && bad++ < 3) print_error("the element after %s was written\n", what);
    return bad;
}

/* One call: C (c_len floats) starts as c0, P (p_len) as sentinels; the pointers of
 * absent steps are passed as NULL. */
static void epi_call(epi_fn fn, const kiln_gemm_epilogue *e, const float *a, const float *b, float *c,
                     const float *c0, int64_t c_len, float *scratch, const float *bias, float *p, int64_t p_len,
                     const float *r) {
    memcpy(c, c0, sizeof(float) * (size_t)c_len);
    for (int64_t i = 0; i < p_len; i++) p[i] = SENTINEL;
    fn(a, b, c, scratch, e->bias ? bias : NULL, e->pre_out ? p : NULL, e->residual ? r : NULL);
}

static void run_epi_case(void **state) {
    const epi_case *cs = *state;
    const kiln_target *t = cs->target == 1 ? &g_haswell : &g_host;
    int64_t m = cs->m, n = cs->n, k = cs->k;
    kiln_gemm_shape s = {.m = m, .n = n, .k = k, .trans_a = cs->ta, .trans_b = cs->tb};
    int64_t a_rows = cs->ta ? k : m, a_cols = cs->ta ? m : k, b_rows = cs->tb ? n : k, b_cols = cs->tb ? k : n;
    s.lda = a_cols + cs->pad;
    s.ldb = b_cols + 2 * cs->pad;
    s.ldc = n + 3 * cs->pad;
    kiln_gemm_epilogue e = {
        .accumulate = cs->flags & EPI_ACC, .scale = cs->flags & EPI_SCALE ? epi_scale() : 0,
        .bias = cs->flags & EPI_BIAS, .pre_out = cs->flags & EPI_PRE, .act = cs->act,
        .residual = cs->flags & EPI_RES, .ldp = n + (cs->pad ? cs->pad + 1 : 0), .ldr = n + 5 * cs->pad,
    };
    epi_fn fn = (epi_fn)compile_epi(t, &s, &e, "function(instcombine<no-verify-fixpoint>,simplifycfg)");

    guarded a = guarded_alloc((size_t)(a_rows * s.lda + 1)), b = guarded_alloc((size_t)(b_rows * s.ldb + 1));
    guarded c = guarded_alloc((size_t)(m * s.ldc + 1)), p = guarded_alloc((size_t)(m * e.ldp + 1));
    guarded r = guarded_alloc((size_t)(m * e.ldr + 1)), bias = guarded_alloc((size_t)n + 1);
    for (int64_t i = 0; i < a_rows * s.lda; i++) a.p[i] = rand_pm1();
    for (int64_t i = 0; i < b_rows * s.ldb; i++) b.p[i] = rand_pm1();
    for (int64_t i = 0; i < m * e.ldr; i++) r.p[i] = rand_pm1();
    for (int64_t i = 0; i < n; i++) bias.p[i] = rand_pm1();
    /* C: the values to add to (accumulate) or sentinels; padding and P: sentinels */
    float *c0 = malloc(sizeof(float) * (size_t)(m * s.ldc + 1));
    for (int64_t i = 0; i <= m * s.ldc; i++)
        c0[i] = e.accumulate && i < m * s.ldc && i % s.ldc < n ? rand_pm1() : SENTINEL;
    int64_t scratch_n = kiln_gemm_epi_scratch_floats(t, &s, &e);
    assert_true(scratch_n >= kiln_gemm_scratch_floats(t, &s));
    float *scratch = alloc64(scratch_n + GUARD);
    for (int64_t i = 0; i < scratch_n + GUARD; i++) scratch[i] = SENTINEL;

    assert_int_equal(kiln_threads_set(1), 0);
    epi_call(fn, &e, a.p, b.p, c.p, c0, m * s.ldc + 1, scratch, bias.p, p.p, m * e.ldp + 1, r.p);
    epi_data x = {a.p, b.p, bias.p, r.p, c0, c.p, p.p};
    int bad = check_epi_reference(&s, &e, &x);
    bad += check_padding("C", c.p, m, n, s.ldc);
    bad += check_padding("P", p.p, e.pre_out ? m : 0, e.pre_out ? n : 0, e.ldp);
    for (int64_t i = scratch_n; i < scratch_n + GUARD; i++)
        if (scratch[i] != SENTINEL && bad++ < 5) print_error("scratch[%ld] past its size was written\n", (long)i);
    assert_int_equal(bad, 0);

    if (cs->threads) {  /* the same bits on two threads */
        float *c1 = compact(c.p, m, s.ldc, s.ldc), *p1 = compact(p.p, m, e.ldp, e.ldp);
        assert_int_equal(kiln_threads_set(2), 0);
        epi_call(fn, &e, a.p, b.p, c.p, c0, m * s.ldc + 1, scratch, bias.p, p.p, m * e.ldp + 1, r.p);
        assert_int_equal(kiln_threads_set(1), 0);
        assert_memory_equal(c1, c.p, sizeof(float) * (size_t)(m * s.ldc));
        assert_memory_equal(p1, p.p, sizeof(float) * (size_t)(m * e.ldp));
        free(c1);
        free(p1);
    }
    if (cs->unfused) check_unfused(t, &s, &e, &x);
    free(c0);
    free(scratch);
    guarded_free(&a);
    guarded_free(&b);
    guarded_free(&c);
    guarded_free(&p);
    guarded_free(&r);
    guarded_free(&bias);
}

/* ---- sibling products: kiln_cg_gemm_group ------------------------------------------- */

typedef void (*group_fn)(const float *a, float *scratch, void *const *ops);

/* A module with kiln_cg_gemm_group's function behind an exported wrapper (a, scratch, ops). */
static group_fn compile_group(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, int count) {
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    kiln_cg cg;
    cg_init_in_context(&cg, t, LLVMOrcThreadSafeContextGetContext(tsc), "test_gemm");
    char name[32];
    snprintf(name, sizeof name, "entry%d", g_next_entry++);
    LLVMTypeRef params[] = {cg.t_ptr, cg.t_ptr, cg.t_ptr};
    LLVMValueRef entry = LLVMAddFunction(cg.mod, name, LLVMFunctionType(cg.t_void, params, 3, 0));
    LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, entry, "entry"));
    LLVMValueRef group = kiln_cg_gemm_group(&cg, s, e, count);
    assert_ptr_equal(kiln_cg_gemm_group(&cg, s, e, count), group);
    LLVMValueRef args[] = {LLVMGetParam(entry, 0), LLVMGetParam(entry, 1), LLVMGetParam(entry, 2)};
    LLVMBuildCall2(cg.b, LLVMGlobalGetValueType(group), group, args, 3, "");
    return (group_fn)finish_entry(&cg, tsc, t, "function(instcombine<no-verify-fixpoint>,simplifycfg)", name);
}

/* `count` products reading one A as one job give every C and P the bits of
 * kiln_cg_gemm_epi's function for each product alone, on 1, 2, 3, 5 and 8 threads
 * (parts that span two products, partial tiles at each product's edge, padded strides);
 * the padding keeps its sentinel and the scratch stays within its size. */
static void test_group_bit_identical(void **state) {
    static const struct {
        kiln_gemm_shape s;
        unsigned flags;
        kiln_gemm_act act;
        int count;
    } cases[] = {
        {{256, 384, 384, false, false, 384, 384, 384}, EPI_BIAS, KILN_GEMM_ACT_NONE, 3},  /* a QKV kernel */
        {{50, 70, 130, false, true, 131, 133, 75}, EPI_BIAS | EPI_PRE | EPI_RES, KILN_GEMM_ACT_GELU_TANH, 3},
        {{100, 40, 300, true, false, 101, 41, 43}, 0, KILN_GEMM_ACT_NONE, 2},  /* plain: B packed by the tiles */
        {{30, 200, 64, false, false, 64, 200, 200}, EPI_SCALE | EPI_BIAS, KILN_GEMM_ACT_RELU, 4},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const kiln_gemm_shape *s = &cases[ci].s;
        int count = cases[ci].count;
        unsigned f = cases[ci].flags;
        kiln_gemm_epilogue e = {.scale = f & EPI_SCALE ? epi_scale() : 0, .bias = f & EPI_BIAS, .pre_out = f & EPI_PRE,
                                .act = cases[ci].act, .residual = f & EPI_RES, .ldp = s->n + 2, .ldr = s->n + 3};
        assert_true(kiln_gemm_group_ok(&g_host, s, &e, count));
        group_fn group = compile_group(&g_host, s, &e, count);
        epi_fn alone = (epi_fn)compile_epi(&g_host, s, &e, "function(instcombine<no-verify-fixpoint>,simplifycfg)");
        int64_t na = (s->trans_a ? s->k : s->m) * s->lda, nb = (s->trans_b ? s->n : s->k) * s->ldb;
        int64_t nc = s->m * s->ldc, np = s->m * e.ldp, nr = s->m * e.ldr;
        float *a = alloc64(na), *b[8], *bias[8], *r[8], *want_c[8], *want_p[8], *c[8], *p[8];
        for (int64_t i = 0; i < na; i++) a[i] = rand_pm1();
        int64_t n_scratch = kiln_gemm_group_scratch_floats(&g_host, s, &e, count);
        int64_t n_alone = kiln_gemm_epi_scratch_floats(&g_host, s, &e);
        float *scratch = alloc64((n_scratch > n_alone ? n_scratch : n_alone) + GUARD);
        void *ops[8 * 5];
        assert_int_equal(kiln_threads_set(1), 0);
        for (int q = 0; q < count; q++) {
            b[q] = alloc64(nb), bias[q] = alloc64(s->n), r[q] = alloc64(nr);
            want_c[q] = alloc64(nc), want_p[q] = alloc64(np), c[q] = alloc64(nc);
            for (int64_t i = 0; i < nb; i++) b[q][i] = rand_pm1();
            for (int64_t i = 0; i < s->n; i++) bias[q][i] = rand_pm1();
            for (int64_t i = 0; i < nr; i++) r[q][i] = rand_pm1();
            for (int64_t i = 0; i < nc; i++) want_c[q][i] = SENTINEL;
            for (int64_t i = 0; i < np; i++) want_p[q][i] = SENTINEL;
            alone(a, b[q], want_c[q], scratch, bias[q], want_p[q], r[q]);
            void *o[5] = {b[q], c[q], e.bias ? bias[q] : NULL, NULL /* P: below */, e.residual ? r[q] : NULL};
            memcpy(&ops[q * 5], o, sizeof o);
        }
        for (int q = 0; q < count; q++) {  /* the group's P, apart from the reference's */
            p[q] = alloc64(np);
            ops[q * 5 + 3] = e.pre_out ? p[q] : NULL;
        }
        static const int thread_counts[] = {1, 2, 3, 5, 8};
        for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++) {
            assert_int_equal(kiln_threads_set(thread_counts[ti]), 0);
            for (int64_t i = 0; i < n_scratch + GUARD; i++) scratch[i] = SENTINEL;
            for (int q = 0; q < count; q++) {
                for (int64_t i = 0; i < nc; i++) c[q][i] = SENTINEL;
                for (int64_t i = 0; i < np; i++) p[q][i] = SENTINEL;
            }
            group(a, scratch, ops);
            for (int q = 0; q < count; q++) {
                assert_memory_equal(want_c[q], c[q], sizeof(float) * (size_t)nc);
                if (e.pre_out) assert_memory_equal(want_p[q], p[q], sizeof(float) * (size_t)np);
            }
            for (int64_t i = n_scratch; i < n_scratch + GUARD; i++) assert_true(scratch[i] == SENTINEL);
        }
        assert_int_equal(kiln_threads_set(1), 0);
        for (int q = 0; q < count; q++) {
            free(b[q]), free(bias[q]), free(r[q]), free(want_c[q]), free(want_p[q]), free(c[q]), free(p[q]);
        }
        free(a);
        free(scratch);
    }
    /* not a group: one product, A more than one block (m or k), accumulation */
    kiln_gemm_shape qkv = {256, 384, 384, false, false, 384, 384, 384}, tall = {2048, 384, 384, false, false, 384, 384, 384};
    kiln_gemm_epilogue plain = {0}, acc = {.accumulate = true};
    assert_false(kiln_gemm_group_ok(&g_host, &qkv, &plain, 1));
    assert_false(kiln_gemm_group_ok(&g_host, &tall, &plain, 3));
    assert_false(kiln_gemm_group_ok(&g_host, &qkv, &acc, 3));
    kiln_gemm_shape deep = {256, 384, 1536, false, false, 1536, 384, 384};
    assert_false(kiln_gemm_group_ok(&g_host, &deep, &plain, 3));
    assert_int_equal(kiln_gemm_group_scratch_floats(&g_host, &tall, &plain, 3), 0);
}

/* An all-default epilogue is the plain GEMM's function; each epilogue its own function,
 * sharing packers but not micro-kernels; equal epilogues share everything; the function
 * takes the optional pointers its flags ask for. */
static void test_epilogue_functions(void **state) {
    kiln_cg cg;
    kiln_cg_init(&cg, &g_host, "test_gemm");
    kiln_gemm_shape s = {64, 32, 48, false, true, 48, 48, 32};
    LLVMValueRef plain = kiln_cg_gemm(&cg, &s);
    kiln_gemm_epilogue none = {.scale = 1}, e1 = {.bias = true, .act = KILN_GEMM_ACT_GELU_TANH};
    kiln_gemm_epilogue e2 = {.scale = 0.5, .bias = true, .pre_out = true, .ldp = 40, .residual = true, .ldr = 32};
    assert_ptr_equal(kiln_cg_gemm_epi(&cg, &s, NULL), plain);
    assert_ptr_equal(kiln_cg_gemm_epi(&cg, &s, &none), plain);
    LLVMValueRef f1 = kiln_cg_gemm_epi(&cg, &s, &e1), f2 = kiln_cg_gemm_epi(&cg, &s, &e2);
    assert_ptr_not_equal(f1, plain);
    assert_ptr_not_equal(f1, f2);
    assert_ptr_equal(kiln_cg_gemm_epi(&cg, &s, &e1), f1);
    kiln_gemm_epilogue e3 = e2;
    e3.scale = 0.25;  /* another scale: another function (the value is a constant of it) */
    assert_ptr_not_equal(kiln_cg_gemm_epi(&cg, &s, &e3), f2);
    assert_int_equal(LLVMCountParams(plain), 4);
    assert_int_equal(LLVMCountParams(f1), 5);  /* bias */
    assert_int_equal(LLVMCountParams(f2), 7);  /* bias, pre_out, residual */
    size_t len;
    assert_non_null(strstr(LLVMGetValueName2(f1, &len), "_eb_gelu_tanh"));
    int tiles = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(cg.mod); f; f = LLVMGetNextFunction(f))
        tiles += strncmp(LLVMGetValueName2(f, &len), "kiln_gemm_tile_", 15) == 0;
    assert_int_equal(tiles, 6);  /* plain, e1, e2 (= e3), each also of 4 rows (m = 64 = 5·12 + 4) */
    /* scratch grows only for accumulate over several k blocks: the partial sums */
    kiln_gemm_epilogue acc = {.accumulate = true};
    kiln_gemm_shape deep = {50, 70, 1000, false, false, 1000, 70, 70};
    assert_int_equal(kiln_gemm_epi_scratch_floats(&g_host, &s, &acc), kiln_gemm_scratch_floats(&g_host, &s));
    assert_int_equal(kiln_gemm_epi_scratch_floats(&g_host, &deep, &e1), kiln_gemm_scratch_floats(&g_host, &deep));
    assert_int_equal(kiln_gemm_epi_scratch_floats(&g_host, &deep, &acc),
                     kiln_gemm_scratch_floats(&g_host, &deep) + (50 * 70 + 15) / 16 * 16);
    char *msg = NULL;
    assert_int_equal(LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg), 0);
    LLVMDisposeMessage(msg);
    kiln_cg_dispose(&cg);
}

/* Whether the module of product s (with epilogue e, or none, whose name code is epi_code)
 * on target t has the loop nest whose name ends in epi_code + tail (codegen/gemm.c's
 * loops_nest: "_bo_ab" reads A's rows, a_rows_for; "_cl" claims its A blocks, "_cn"
 * its B blocks, claims_for). */
static bool has_nest(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                     const char *epi_code, const char *tail) {
    kiln_cg cg;
    kiln_cg_init(&cg, t, "test_gemm");
    kiln_cg_gemm_epi(&cg, s, e);
    char nest[96];
    snprintf(nest, sizeof nest, "kiln_gemm_loops_w%d_%c%c%s%s", t->vector_floats, s->trans_a ? 't' : 'n',
             s->trans_b ? 't' : 'n', epi_code, tail);
    bool has = LLVMGetNamedFunction(cg.mod, nest) != NULL;
    if (!has && strlen(nest) + 3 < sizeof nest) {  /* the same nest with its short last sliver */
        strcat(nest, "_e4");
        has = LLVMGetNamedFunction(cg.mod, nest) != NULL;
    }
    kiln_cg_dispose(&cg);
    return has;
}

static bool has_a_rows_nest(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                            const char *epi_code) {
    return has_nest(t, s, e, epi_code, "_bo_ab") || has_nest(t, s, e, epi_code, "_bo_ab_cl");
}

/* One call of a compiled product, with epilogue e (bias, R) or plain. */
static void gemm_call(void *fn, const kiln_gemm_epilogue *e, const float *a, const float *b, float *c,
                      float *scratch, const float *bias, const float *r) {
    if (e) ((epi_fn)fn)(a, b, c, scratch, bias, NULL, r);
    else ((gemm_fn)fn)(a, b, c, scratch);
}

/* Two codegen variants of one product agree bit for bit: `ref` (compiled with
 * KILN_GEMM_TUNE=ref_tune) on one thread gives the expected C, then both `ref` and `new`
 * (new_tune; NULL: no tuning) give it again at each of the thread counts. A ends where a
 * PROT_NONE page begins, so a row read past m faults; with random_c C starts from random
 * values instead of zeros (an epilogue that adds to C then shows a tile run twice or not
 * at all). */
static void check_variants_agree(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                                 const char *ref_tune, const char *new_tune, bool random_c, const int *threads,
                                 size_t n_threads) {
    setenv("KILN_GEMM_TUNE", ref_tune, 1);
    void *ref = compile_epi(t, s, e, "default<O3>");
    if (new_tune) setenv("KILN_GEMM_TUNE", new_tune, 1);
    else unsetenv("KILN_GEMM_TUNE");
    void *new = compile_epi(t, s, e, "default<O3>");
    unsetenv("KILN_GEMM_TUNE");
    int64_t na = (s->trans_a ? s->k : s->m) * s->lda, nb = (s->trans_b ? s->n : s->k) * s->ldb, nc = s->m * s->ldc;
    guarded ga = guarded_alloc((size_t)na);
    float *b = alloc64(nb), *bias = alloc64(s->n), *r = alloc64(s->m * s->n), *c0 = alloc64(nc);
    float *want = alloc64(nc), *got = alloc64(nc);
    for (int64_t i = 0; i < na; i++) ga.p[i] = rand_pm1();
    for (int64_t i = 0; i < nb; i++) b[i] = rand_pm1();
    for (int64_t i = 0; i < s->n; i++) bias[i] = rand_pm1();
    for (int64_t i = 0; i < s->m * s->n; i++) r[i] = rand_pm1();
    for (int64_t i = 0; i < nc; i++) c0[i] = random_c ? rand_pm1() : 0.0f;
    float *scratch = alloc64(kiln_gemm_epi_scratch_floats(t, s, e));
    size_t bytes = sizeof(float) * (size_t)nc;
    assert_int_equal(kiln_threads_set(1), 0);
    memcpy(want, c0, bytes);
    gemm_call(ref, e, ga.p, b, want, scratch, bias, r);
    for (size_t ci = 0; ci < n_threads; ci++)
        for (int variant = 0; variant < 2; variant++) {
            assert_int_equal(kiln_threads_set(threads[ci]), 0);
            memcpy(got, c0, bytes);
            gemm_call(variant ? new : ref, e, ga.p, b, got, scratch, bias, r);
            assert_memory_equal(want, got, bytes);
        }
    assert_int_equal(kiln_threads_set(1), 0);
    guarded_free(&ga);
    float *bufs[] = {b, bias, r, c0, want, got, scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

/* Calls check(t, s, e, epi_code) for each target (the host's, and AVX2 but under ASan,
 * where the C side is the same for both: docs/testing.md), each shape, and e NULL and
 * epi (its ldr set to n). */
typedef void (*variant_case)(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                             const char *epi_code);

static void each_variant_case(const kiln_gemm_shape *shapes, size_t n_shapes, kiln_gemm_epilogue epi,
                              const char *epi_code, variant_case check) {
#if defined(__SANITIZE_ADDRESS__)
    const size_t n_targets = 1;
#else
    const size_t n_targets = 2;
#endif
    const kiln_target *targets[] = {&g_host, &g_haswell};
    for (size_t i = 0; i < n_targets * n_shapes * 2; i++) {
        kiln_gemm_shape s = shapes[i / 2 % n_shapes];
        epi.ldr = s.n;
        bool with_epi = i % 2;
        check(targets[i / (2 * n_shapes)], &s, with_epi ? &epi : NULL, with_epi ? epi_code : "");
    }
}

/* codegen/gemm.c's a_rows (a_rows_for: by default for n ≤ 512 on AVX-512; forced with
 * KILN_GEMM_TUNE=abcast=1, off with abcast=0): the B-outer nest with A plain reads A's
 * rows in its tiles instead of packing A, and must give the packed path's bits, plain and
 * with an epilogue, on 1, 2, 3, 5 and 8 threads. The shapes take B outer (n ≤ 1152, m
 * over one A block) with a partial last sliver (m = 1001 is 83 tiles of 12 and 5 rows,
 * 166 of 6 and 5), odd strides and two k blocks. */
static void a_broadcast_case(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                             const char *epi_code) {
    setenv("KILN_GEMM_TUNE", "abcast=1", 1); /* the tuned module really has the nest that reads A's rows */
    assert_true(has_a_rows_nest(t, s, e, epi_code));
    unsetenv("KILN_GEMM_TUNE");
    static const int threads[] = {1, 2, 3, 5, 8};
    check_variants_agree(t, s, e, "abcast=0", "abcast=1", false, threads, sizeof threads / sizeof threads[0]);
}

static void test_a_broadcast_bit_identical(void **state) {
    (void)state;
    static const kiln_gemm_shape shapes[] = {
        {1001, 45, 400, false, false, 403, 45, 47},
        {1001, 300, 400, false, true, 401, 403, 301},
    };
    kiln_gemm_epilogue epi = {.bias = true, .act = KILN_GEMM_ACT_GELU_TANH, .residual = true};
    each_variant_case(shapes, 2, epi, "_ebr_gelu_tanh", a_broadcast_case);
}

/* Which B-outer nests read A's rows by default (a_rows_for): n ≤ 512 with op(A) plain on
 * AVX-512 (m = 2048 takes B outer on one thread), not n = 768, not op(A) transposed, not
 * AVX2; abcast=0 turns it off, abcast=1 on for the wider B. */
static void test_a_broadcast_default(void **state) {
    (void)state;
    if (g_host.vector_floats < 16) skip();
    kiln_gemm_shape narrow = {2048, 384, 384, false, false, 384, 384, 384};
    kiln_gemm_shape narrow_nt = {2048, 384, 1536, false, true, 1536, 1536, 384};
    kiln_gemm_shape wide = {2048, 768, 384, false, false, 384, 768, 768};
    kiln_gemm_shape trans_a = {2048, 384, 384, true, false, 2048, 384, 384};
    assert_true(has_a_rows_nest(&g_host, &narrow, NULL, ""));
    assert_true(has_a_rows_nest(&g_host, &narrow_nt, NULL, ""));
    assert_false(has_a_rows_nest(&g_host, &wide, NULL, ""));
    assert_false(has_a_rows_nest(&g_host, &trans_a, NULL, ""));
    assert_false(has_a_rows_nest(&g_haswell, &narrow, NULL, ""));
    setenv("KILN_GEMM_TUNE", "abcast=0", 1);
    assert_false(has_a_rows_nest(&g_host, &narrow, NULL, ""));
    setenv("KILN_GEMM_TUNE", "abcast=1", 1);
    assert_true(has_a_rows_nest(&g_host, &wide, NULL, ""));
    unsetenv("KILN_GEMM_TUNE");
}

/* Whether the module of s has a loop nest with a short last sliver (gemm_edge_rows). */
static bool has_edge_nest(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                          const char *epi_code) {
    static const char *tails[] = {"_e4", "_bo_e4", "_bo_ab_e4", "_cn_e4", "_bo_cl_e4", "_bo_ab_cl_e4",
                                  "_e8", "_bo_e8", "_bo_ab_e8", "_cn_e8", "_bo_cl_e8", "_bo_ab_cl_e8"};
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++)
        if (has_nest(t, s, e, epi_code, tails[i])) return true;
    return false;
}

/* codegen/gemm.c's gemm_edge_rows: a short last A sliver runs a tile of 4 or 8 rows
 * reading the same packed sliver, which must give the whole tile's bits (edge=0), plain
 * and with an epilogue, on one thread and on three parts along m and n. Shapes: m mod 12
 * = 4 (and mod 6), 1 (13: two slivers), 2 (the transposed A of 302 and three k blocks),
 * 5 (17: 8 rows), 4 again (1300 × 1200 claims along n). */
static void edge_case(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                      const char *epi_code) {
    if (t->vector_floats == 16) assert_true(has_edge_nest(t, s, e, epi_code)); /* at W = 8 some save too little */
    static const int threads[] = {1, 3};
    check_variants_agree(t, s, e, "edge=0", NULL, true, threads, sizeof threads / sizeof threads[0]);
}

static void test_edge_tile_bit_identical(void **state) {
    (void)state;
    static const kiln_gemm_shape shapes[] = {
        {256, 384, 384, false, false, 384, 384, 384},
        {13, 200, 70, false, true, 71, 73, 201},
        {302, 500, 1100, true, false, 303, 500, 501},
        {17, 200, 70, false, false, 70, 200, 200},
        {1300, 1200, 300, false, false, 301, 1203, 1201},
    };
    kiln_gemm_epilogue epi = {.bias = true, .act = KILN_GEMM_ACT_GELU_TANH, .residual = true};
#if defined(__SANITIZE_ADDRESS__)
    each_variant_case(shapes, 2, epi, "_ebr_gelu_tanh", edge_case);
#else
    each_variant_case(shapes, sizeof shapes / sizeof shapes[0], epi, "_ebr_gelu_tanh", edge_case);
#endif
    /* no short tile where it saves under 1/200 of the fmas, nor without a short sliver */
    if (g_host.vector_floats < 16) return;
    kiln_gemm_shape large = {2048, 384, 384, false, false, 384, 384, 384}, whole = {384, 384, 384, 0, 0, 384, 384, 384};
    assert_false(has_edge_nest(&g_host, &large, NULL, ""));
    assert_false(has_edge_nest(&g_host, &whole, NULL, ""));
    kiln_gemm_shape quarter = {1024, 384, 384, false, false, 384, 384, 384};
    assert_true(has_edge_nest(&g_host, &quarter, NULL, ""));
    setenv("KILN_GEMM_TUNE", "edge=0", 1);
    assert_false(has_edge_nest(&g_host, &quarter, NULL, ""));
    unsetenv("KILN_GEMM_TUNE");
}

/* codegen/gemm.c's claims (claims_for): the threads claim blocks from shared counters
 * instead of running half of the product each — A blocks when the split is along m and
 * the parts run B outer, B blocks when it is along n with one A block and several k
 * blocks — and, over several k blocks, wait for a block's rounds (rounds_wait) before
 * adding to it. They must give the bits of one thread and of the fixed halves (claims=0)
 * at 2, 3, 5 and 8 threads (more threads than CPUs, so rounds do wait) — plain, and with
 * an epilogue that adds to C, so a block run twice, not at all, or before the k block
 * ahead of it, changes C. m = 1001 (n = 1001) ends in a partial sliver; the shapes read
 * A's rows (n ≤ 512) or pack A, nn, nt and tn, one k block or two and three; the last is
 * cut along n although m ≥ n (claims_n_instead) and claims over two A blocks. */
static bool has_claims_nest(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                            const char *epi_code) {
    return has_nest(t, s, e, epi_code, "_bo_ab_cl") || has_nest(t, s, e, epi_code, "_bo_cl") ||
           has_nest(t, s, e, epi_code, "_cn");
}

static void claims_case(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                        const char *epi_code) {
    assert_true(has_claims_nest(t, s, e, epi_code));
    setenv("KILN_GEMM_TUNE", "claims=0", 1);
    assert_false(has_claims_nest(t, s, e, epi_code));
    unsetenv("KILN_GEMM_TUNE");
    static const int threads[] = {2, 3, 5, 8};
    check_variants_agree(t, s, e, "claims=0", NULL, true, threads, sizeof threads / sizeof threads[0]);
}

static void test_claimed_blocks_bit_identical(void **state) {
    (void)state;
    /* the first three cover the three kinds of claims; the sanitizer build runs only them
     * (its time is CI's limit, and the JIT's code is not instrumented) */
    static const kiln_gemm_shape shapes[] = {
        {1001, 45, 300, false, false, 303, 45, 47},       /* along m, one k block */
        {1001, 700, 1100, false, true, 1100, 1103, 701},  /* along m, three k blocks */
        {300, 1001, 1100, true, false, 301, 1001, 1003},  /* along n, three, op(A) transposed */
        {1001, 300, 384, false, true, 385, 387, 301},
        {1001, 700, 200, false, false, 201, 700, 700},
        {1001, 45, 800, false, false, 803, 45, 47},       /* along m, two k blocks */
        {45, 1001, 800, false, false, 803, 1003, 1001},   /* along n, two */
        {1300, 1200, 300, false, false, 301, 1203, 1201}, /* m ≥ n > 1152: along n, two A blocks */
    };
#if defined(__SANITIZE_ADDRESS__)
    const size_t n_shapes = 3;
#else
    const size_t n_shapes = sizeof shapes / sizeof shapes[0];
#endif
    /* not along n with one k block, nor along m without B outer (n > 1152, B of 1.5 MiB) */
    const kiln_gemm_shape on_n = {45, 1001, 300, false, false, 300, 1001, 1001};
    const kiln_gemm_shape wide = {1001, 1300, 300, false, false, 300, 1300, 1300};
    assert_false(has_claims_nest(&g_host, &on_n, NULL, ""));
    assert_false(has_claims_nest(&g_host, &wide, NULL, ""));
    /* … but a large B (k·n ≥ 2^21 floats) of n ≤ 2048 runs B outer, so claims */
    const kiln_gemm_shape square = {2048, 2048, 2048, false, false, 2048, 2048, 2048};
    assert_true(has_claims_nest(&g_host, &square, NULL, ""));
    kiln_gemm_epilogue epi = {.accumulate = true, .bias = true, .act = KILN_GEMM_ACT_GELU_TANH, .residual = true};
    each_variant_case(shapes, n_shapes, epi, "_eabr_gelu_tanh", claims_case);
}

/* kiln_cg_gemm_sum: the bias gradient rides on the packing of op(A) (codegen/gemm.c,
 * gemm_pack.c's summing copier). sums[i] must be the column sum of A (k×m) added up in
 * row order from 0 in f32 — the bits of lower_gemm_kernel.c's separate pass — and C the
 * bits of kiln_cg_gemm_epi's product, on 1, 2, 3 and 5 threads, with nothing written past
 * sums[m − 1]. The shapes take every nest that packs op(A): B outer on one thread and
 * claimed along m (one k block and three), claimed along n (several k blocks, and
 * m ≥ n > 1152 over two A blocks), cut along n with one k block (only the first part
 * sums), cut along m into parts of their own rows (n > 1152, several k blocks), a last
 * sliver of one lane, and k = 0; plain and with an epilogue that adds to C. */
typedef void (*sum_fn)(const float *a, const float *b, float *c, float *scratch, const float *bias, float *p,
                       const float *r, float *sums);

static sum_fn compile_sum(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e) {
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    kiln_cg cg;
    cg_init_in_context(&cg, t, LLVMOrcThreadSafeContextGetContext(tsc), "test_gemm");
    char name[32];
    snprintf(name, sizeof name, "entry%d", g_next_entry++);
    LLVMTypeRef params[8];
    for (int i = 0; i < 8; i++) params[i] = cg.t_ptr;
    LLVMValueRef entry = LLVMAddFunction(cg.mod, name, LLVMFunctionType(cg.t_void, params, 8, 0));
    LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, entry, "entry"));
    assert_true(kiln_gemm_can_sum_a(t, s));
    LLVMValueRef gemm = kiln_cg_gemm_sum(&cg, s, e);
    assert_ptr_equal(kiln_cg_gemm_sum(&cg, s, e), gemm);
    assert_ptr_not_equal(kiln_cg_gemm_epi(&cg, s, e), gemm);  /* the product without sums is another */
    LLVMValueRef args[8];
    unsigned n = 0;
    for (unsigned i = 0; i < 8; i++) {
        bool present = i < 4 || i == 7 || (e && ((i == 4 && e->bias) || (i == 5 && e->pre_out) || (i == 6 && e->residual)));
        if (present) args[n++] = LLVMGetParam(entry, i);
    }
    assert_int_equal(LLVMCountParams(gemm), n);
    LLVMBuildCall2(cg.b, LLVMGlobalGetValueType(gemm), gemm, args, n, "");
    return (sum_fn)finish_entry(&cg, tsc, t, "default<O3>", name);
}

static void column_sums_case(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                             const char *epi_code) {
    (void)epi_code;
    void *plain = compile_epi(t, s, e ? e : &(kiln_gemm_epilogue){0}, "default<O3>");
    sum_fn summing = compile_sum(t, s, e);
    int64_t na = s->k * s->lda, nb = (s->trans_b ? s->n : s->k) * s->ldb, nc = s->m * s->ldc;
    guarded ga = guarded_alloc((size_t)na);
    float *b = alloc64(nb), *bias = alloc64(s->n), *r = alloc64(s->m * s->n), *c0 = alloc64(nc);
    float *want = alloc64(nc), *got = alloc64(nc), *want_sums = alloc64(s->m), *sums = alloc64(s->m + 16);
    for (int64_t i = 0; i < na; i++) ga.p[i] = rand_pm1();
    for (int64_t i = 0; i < nb; i++) b[i] = rand_pm1();
    for (int64_t i = 0; i < s->n; i++) bias[i] = rand_pm1();
    for (int64_t i = 0; i < s->m * s->n; i++) r[i] = rand_pm1();
    for (int64_t i = 0; i < nc; i++) c0[i] = rand_pm1();
    for (int64_t i = 0; i < s->m; i++) {  /* the separate pass: row order from 0, in f32 */
        float acc = 0.0f;
        for (int64_t q = 0; q < s->k; q++) acc += ga.p[q * s->lda + i];
        want_sums[i] = acc;
    }
    float *scratch = alloc64(kiln_gemm_epi_scratch_floats(t, s, e));
    size_t bytes = sizeof(float) * (size_t)nc;
    assert_int_equal(kiln_threads_set(1), 0);
    memcpy(want, c0, bytes);
    ((epi_fn)plain)(ga.p, b, want, scratch, bias, NULL, r);
    static const int threads[] = {1, 2, 3, 5};
    for (size_t ci = 0; ci < sizeof threads / sizeof threads[0]; ci++) {
        assert_int_equal(kiln_threads_set(threads[ci]), 0);
        memcpy(got, c0, bytes);
        for (int64_t i = 0; i < s->m + 16; i++) sums[i] = SENTINEL;
        summing(ga.p, b, got, scratch, bias, NULL, r, sums);
        assert_memory_equal(want, got, bytes);
        assert_memory_equal(want_sums, sums, sizeof(float) * (size_t)s->m);
        for (int64_t i = s->m; i < s->m + 16; i++) assert_true(sums[i] == SENTINEL);
    }
    assert_int_equal(kiln_threads_set(1), 0);
    guarded_free(&ga);
    float *bufs[] = {b, bias, r, c0, want, got, want_sums, sums, scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void test_column_sums_ride(void **state) {
    (void)state;
    static const kiln_gemm_shape shapes[] = {
        {1001, 45, 300, true, false, 1003, 45, 47},        /* B outer; claimed along m, one k block */
        {300, 1001, 1100, true, false, 301, 1001, 1003},   /* claimed along n, three k blocks */
        {1001, 700, 1100, true, false, 1001, 703, 701},    /* claimed along m, three */
        {45, 1001, 300, true, false, 45, 1001, 1001},      /* cut along n, one k block */
        {1300, 1200, 300, true, false, 1300, 1203, 1201},  /* m ≥ n > 1152: claimed along n, two A blocks */
        {1500, 1200, 800, true, false, 1501, 1200, 1200},  /* cut along m, parts of their own rows */
        {13, 200, 70, true, true, 13, 73, 201},            /* a last sliver of one lane */
        {50, 40, 0, true, false, 50, 40, 40},              /* k = 0: zeros */
    };
#if defined(__SANITIZE_ADDRESS__)
    const size_t n_shapes = 3;
#else
    const size_t n_shapes = sizeof shapes / sizeof shapes[0];
#endif
    kiln_gemm_epilogue epi = {.accumulate = true, .bias = true};
    each_variant_case(shapes, n_shapes, epi, "_eab", column_sums_case);
    /* only op(A) transposed, and not a product that packs nothing (the small path, n = 0) */
    kiln_gemm_shape plain_a = {100, 40, 30, false, false, 30, 40, 40}, few = {8, 40, 30, true, false, 8, 40, 40};
    kiln_gemm_shape no_n = {100, 0, 30, true, false, 100, 1, 1};
    assert_false(kiln_gemm_can_sum_a(&g_host, &plain_a));
    assert_false(kiln_gemm_can_sum_a(&g_host, &few));
    assert_false(kiln_gemm_can_sum_a(&g_host, &no_n));
    /* nor SSE, whose A sliver (6 lanes) spans two vectors of 4: the separate pass sums */
    assert_false(kiln_gemm_can_sum_a(&g_sse, &shapes[0]));
}

/* The small-m path (no packing; up to 8 rows and no more than a tile's, B plain) gives
 * each element the general path's bits: its m rows equal the first m rows of a 20-row
 * product (general path) of the same operands — plain and with an epilogue, with one k
 * block and with several, A plain and transposed, split across two threads or not. */
static void test_small_m_matches_general(void **state) {
    static const struct { int target, m; } rows[] = {{0, 1}, {0, 2}, {0, 3}, {0, 5}, {0, 8}, {1, 1}, {1, 4}, {1, 6}};
    static const int64_t nk[][2] = {{45, 37}, {100, 800}};
    const int64_t big = 20;
    kiln_gemm_epilogue all = {.accumulate = true, .scale = epi_scale(), .bias = true, .pre_out = true,
                              .act = KILN_GEMM_ACT_GELU_TANH, .residual = true};
    for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
        for (int si = 0; si < 2; si++)
            for (int with_e = 0; with_e < 2; with_e++) {
                const kiln_target *t = rows[ri].target ? &g_haswell : &g_host;
                int64_t m = rows[ri].m, n = nk[si][0], k = nk[si][1];
                bool ta = (m + si) % 2;
                kiln_gemm_shape sb = {big, n, k, ta, false, ta ? big : k, n, n}, ss = sb;
                ss.m = m;
                kiln_gemm_epilogue e = all;
                e.ldp = e.ldr = n;
                const kiln_gemm_epilogue *ep = with_e ? &e : NULL;
                assert_int_equal(kiln_gemm_scratch_floats(t, &ss), 0);  /* it is the small path */
                assert_true(kiln_gemm_scratch_floats(t, &sb) > 0);
                epi_fn fs = (epi_fn)compile_epi(t, &ss, ep ? ep : &(kiln_gemm_epilogue){0}, NULL);
                epi_fn fb = (epi_fn)compile_epi(t, &sb, ep ? ep : &(kiln_gemm_epilogue){0}, NULL);
                float *a = alloc64(big * k), *b = alloc64(k * n), *bias = alloc64(n), *r = alloc64(big * n);
                float *c0 = alloc64(big * n), *cs = alloc64(big * n), *cb = alloc64(big * n);
                float *ps = alloc64(big * n), *pb = alloc64(big * n);
                for (int64_t i = 0; i < big * k; i++) a[i] = rand_pm1();
                for (int64_t i = 0; i < k * n; i++) b[i] = rand_pm1();
                for (int64_t i = 0; i < n; i++) bias[i] = rand_pm1();
                for (int64_t i = 0; i < big * n; i++) r[i] = rand_pm1(), c0[i] = rand_pm1();
                kiln_gemm_epilogue none = {0};
                const kiln_gemm_epilogue *call_e = ep ? ep : &none;
                float *ss_scr = alloc64(kiln_gemm_epi_scratch_floats(t, &ss, call_e));
                float *sb_scr = alloc64(kiln_gemm_epi_scratch_floats(t, &sb, call_e));
                assert_int_equal(kiln_threads_set(1 + si), 0);
                epi_call(fs, call_e, a, b, cs, c0, big * n, ss_scr, bias, ps, big * n, r);
                epi_call(fb, call_e, a, b, cb, c0, big * n, sb_scr, bias, pb, big * n, r);
                assert_int_equal(kiln_threads_set(1), 0);
                assert_memory_equal(cs, cb, sizeof(float) * (size_t)(m * n));
                if (ep) assert_memory_equal(ps, pb, sizeof(float) * (size_t)(m * n));
                float *bufs[] = {a, b, bias, r, c0, cs, cb, ps, pb, ss_scr, sb_scr};
                for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
            }
}

enum { MAX_EPI_CASES = 320 };
static epi_case g_epi[MAX_EPI_CASES];
static int g_nepi;

static void add_epi(int64_t m, int64_t n, int64_t k, bool ta, bool tb, int64_t pad, unsigned flags, kiln_gemm_act act,
                    int target, bool unfused, bool threads) {
#if defined(__SANITIZE_ADDRESS__)
    if (m * n * k > 4000000) return; /* the big shapes only in the plain build: minutes under ASan */
#endif
    assert_true(g_nepi < MAX_EPI_CASES);
    epi_case *c = &g_epi[g_nepi++];
    *c = (epi_case){m, n, k, ta, tb, pad, flags, act, target, unfused, threads, ""};
    snprintf(c->name, sizeof c->name, "epilogue %s %ldx%ldx%ld %c%c%s %s%s%s%s%s %s%s%s",
             target ? "avx2" : "host", (long)m, (long)n, (long)k, ta ? 't' : 'n', tb ? 't' : 'n',
             pad ? " strided" : "", flags & EPI_ACC ? "+=" : "=", flags & EPI_SCALE ? " scale" : "",
             flags & EPI_BIAS ? " bias" : "", flags & EPI_PRE ? " pre_out" : "", flags & EPI_RES ? " residual" : "",
             epi_act_names[act], unfused ? " =unfused" : "", threads ? " threads" : "");
}

static void build_epi_cases(void) {
    /* every combination of steps on one small shape with tails in m, n and strides */
    /* (each activation cycles through the combinations, so every pair of a step and an
     * activation is met without compiling all 32 × 5 of them: the suite must stay fast) */
    for (unsigned f = 0; f <= EPI_ALL; f++)
        add_epi(29, 45, 37, false, false, 1, f, (int)(f % 5), 0, f == EPI_ALL || (f & (f - 1)) == 0, false);
    for (int act = 0; act <= KILN_GEMM_ACT_SILU; act++) {
        /* k = 0: the epilogue of zeros */
        add_epi(19, 23, 0, false, false, 3, EPI_ALL, act, 0, true, false);
        add_epi(33, 17, 31, act & 1, act & 2, 5, EPI_ALL, act, act % 2, act == 3, false);
    }
    for (int act = KILN_GEMM_ACT_RELU; act <= KILN_GEMM_ACT_GELU_TANH; act += 2) {
        /* k in three blocks (accumulate: partial sums in scratch), parts along m */
        add_epi(37, 45, 800, false, false, 2, EPI_ALL, act, 0, true, true);
        /* parts along n: the bias moves with the columns */
        add_epi(13, 300, 200, false, true, 1, EPI_ALL, act, 0, true, true);
        /* AVX2: 6×16 tiles */
        add_epi(37, 45, 800, false, false, 2, EPI_ALL, act, 1, true, true);
        add_epi(19, 23, 0, false, false, 0, EPI_ALL, act, 1, false, false);
    }
    /* each step alone where k spans two blocks and m and n several tiles */
    for (unsigned f = 1, i = 0; f <= EPI_RES; f <<= 1, i++)
        add_epi(100, 129, 400, i % 2, !(i % 2), 0, f, i % 2 ? KILN_GEMM_ACT_GELU_TANH : KILN_GEMM_ACT_NONE, (int)(i % 2),
                true, true);
    /* the small-m path: one row of a decoding step, a few rows, k in one and in several
     * blocks, parts along n */
    for (int act = 0; act <= KILN_GEMM_ACT_SILU; act++) {
        add_epi(1, 300, 400, false, false, 1, EPI_ALL, act, 0, true, true);
        add_epi(5, 70, 800, act % 2, false, 2, EPI_ALL, act, 1, true, true);
    }
    add_epi(1, 1536, 384, false, false, 0, EPI_BIAS, KILN_GEMM_ACT_GELU_TANH, 0, true, true);
    /* the small-m path with B transposed (x·Wᵀ, a decoding step's linear layers): dot
     * products along k, several column groups, tails in n and k, parts along n */
    for (int act = 0; act <= KILN_GEMM_ACT_SILU; act += 2) {
        add_epi(1, 300, 400, false, true, 1, EPI_ALL, act, 0, true, true);
        add_epi(3, 70, 1000, false, true, 2, EPI_ALL, act, 1, true, true);
    }
    add_epi(8, 45, 37, false, true, 3, EPI_ALL, KILN_GEMM_ACT_GELU, 0, true, false);
    add_epi(2, 1536, 384, false, true, 0, EPI_BIAS, KILN_GEMM_ACT_GELU_TANH, 0, true, true);
    add_epi(8, 45, 37, true, false, 3, EPI_ALL, KILN_GEMM_ACT_GELU, 0, true, false);
    add_epi(3, 45, 1000, false, false, 0, EPI_ACC, KILN_GEMM_ACT_NONE, 0, true, true);
    add_epi(3, 45, 0, false, false, 1, EPI_ALL, KILN_GEMM_ACT_SILU, 0, true, false);
    /* several blocks of m, n and k */
    add_epi(1000, 700, 400, false, true, 0, EPI_ALL, KILN_GEMM_ACT_GELU_TANH, 0, true, true);
    /* one thread, narrow B over several A blocks (the bo nest), k in two blocks */
    add_epi(1000, 45, 400, false, false, 1, EPI_ALL, KILN_GEMM_ACT_GELU_TANH, 0, true, true);
}

/* ---- the case list ------------------------------------------------------------------ */

enum { MAX_CASES = 160 };
static gemm_case g_cases[MAX_CASES];
static int g_ncases;

static void add_case(int64_t m, int64_t n, int64_t k, bool ta, bool tb, int64_t pa, int64_t pb, int64_t pc,
                     int target, const char *passes) {
    assert_true(g_ncases < MAX_CASES);
    gemm_case *c = &g_cases[g_ncases++];
    *c = (gemm_case){m, n, k, ta, tb, pa, pb, pc, target, passes, ""};
    static const char *const target_name[] = {"host", "avx2", "sse"};
    snprintf(c->name, sizeof c->name, "%s %ldx%ldx%ld %c%c%s%s", target_name[target], (long)m, (long)n, (long)k,
             ta ? 't' : 'n', tb ? 't' : 'n', pa || pb || pc ? " strided" : "",
             !passes ? " unoptimised" : strncmp(passes, "default", 7) ? " light" : "");
}

static void build_cases(void) {
    static const int64_t edge[] = {1, 3, 7, 15, 16, 17, 31, 33, 64, 100, 129};
    const int nedge = (int)(sizeof edge / sizeof edge[0]);
    const char *o3 = "default<O3>";
    add_case(1, 1, 1, false, false, 0, 0, 0, 0, o3);
    /* tails: each dimension through the edge sizes with the others fixed off-tile */
    for (int x = 0; x < nedge; x++) add_case(edge[x], 45, 29, false, false, 0, 0, 0, 0, o3);
    for (int x = 0; x < nedge; x++) add_case(37, edge[x], 29, false, false, 0, 0, 0, 0, o3);
    for (int x = 0; x < nedge; x++) add_case(37, 45, edge[x], false, false, 0, 0, 0, 0, o3);
    for (int x = 0; x < nedge; x++) add_case(edge[x], edge[(x + 4) % nedge], edge[(x + 7) % nedge], x % 2, x % 3 == 0,
                                             0, 0, 0, 0, o3);
    /* the four transposes, minimal and padded strides */
    for (int tr = 0; tr < 4; tr++) {
        add_case(100, 129, 64, tr & 1, tr & 2, 0, 0, 0, 0, o3);
        add_case(33, 17, 31, tr & 1, tr & 2, 5, 3, 7, 0, o3);
    }
    /* several k blocks (accumulating stores, masked and not), several m and n blocks */
    add_case(37, 45, 800, false, false, 0, 0, 0, 0, o3);
    add_case(48, 64, 769, true, true, 1, 2, 3, 0, o3);
    add_case(1000, 700, 400, false, true, 0, 0, 0, 0, o3);
    /* one thread, a narrow B over several A blocks: k blocks outside the A blocks (bo),
     * B packed by the tiles, two blocks of n (more in test_threads_bit_identical) */
    add_case(1000, 400, 200, true, false, 0, 0, 0, 0, o3);
    /* empty and degenerate */
    add_case(19, 23, 0, false, false, 0, 0, 4, 0, o3);
    add_case(0, 23, 19, false, false, 0, 0, 0, 0, o3);
    add_case(19, 0, 19, true, false, 0, 0, 0, 0, o3);
    add_case(1, 1000, 1, false, false, 0, 0, 0, 0, o3);
    add_case(1000, 1, 3, true, true, 0, 0, 0, 0, o3);
    /* large */
    add_case(512, 512, 512, false, false, 0, 0, 0, 0, o3);
    /* the light pipeline of jit.c, and no IR optimisation at all */
    const char *light = "function(instcombine<no-verify-fixpoint>,simplifycfg)";
    add_case(37, 45, 29, false, false, 0, 0, 0, 0, light);
    add_case(129, 100, 401, true, false, 2, 0, 5, 0, light);
    add_case(31, 33, 17, false, true, 0, 0, 0, 1, light);
    add_case(37, 45, 29, false, false, 0, 0, 0, 0, NULL);
    add_case(100, 129, 800, true, true, 3, 1, 2, 0, NULL);
    /* AVX2: 8 lanes, 6×16 tiles */
    add_case(1, 1, 1, false, false, 0, 0, 0, 1, o3);
    for (int x = 0; x < nedge; x += 2) add_case(edge[x], edge[(x + 3) % nedge], edge[(x + 5) % nedge], false, false,
                                                0, 0, 0, 1, o3);
    for (int tr = 0; tr < 4; tr++) add_case(33, 17, 31, tr & 1, tr & 2, 5, 3, 7, 1, o3);
    add_case(37, 45, 800, false, true, 0, 0, 0, 1, o3);
    add_case(19, 23, 0, false, false, 0, 0, 0, 1, o3);
    add_case(100, 129, 64, true, false, 0, 0, 0, 1, NULL);
    add_case(256, 256, 256, false, false, 0, 0, 0, 1, o3);
    /* SSE: 4 lanes, 6×8 tiles (masked loads and stores become scalar code) */
    for (int tr = 0; tr < 4; tr++) add_case(33, 17, 31, tr & 1, tr & 2, 5, 3, 7, 2, o3);
    add_case(37, 45, 800, true, false, 0, 0, 0, 2, o3);
    add_case(100, 129, 64, false, true, 0, 0, 0, 2, NULL);
}

int main(void) {
    build_cases();
    build_epi_cases();
    static struct CMUnitTest tests[MAX_CASES + MAX_EPI_CASES + 16];
    int n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_reuse_and_names);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_scratch_sizes);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_asm_vector_registers);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_targets_agree);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_threads_bit_identical);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_epilogue_functions);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_small_m_matches_general);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_group_bit_identical);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_a_broadcast_bit_identical);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_a_broadcast_default);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_claimed_blocks_bit_identical);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_edge_tile_bit_identical);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_column_sums_ride);
    for (int i = 0; i < g_ncases; i++)
        tests[n++] = (struct CMUnitTest){g_cases[i].name, run_case, NULL, NULL, &g_cases[i]};
    for (int i = 0; i < g_nepi; i++) tests[n++] = (struct CMUnitTest){g_epi[i].name, run_epi_case, NULL, NULL, &g_epi[i]};
    return _cmocka_run_group_tests("gemm", tests, (size_t)n, setup_jit, teardown_jit);
}
