/* gemm_bench.c — GFLOP/s of kiln's generated GEMM against OpenBLAS, single-threaded.
 *
 *   gemm_bench [--quick] [M N K [nn|nt|tn|tt]]
 *
 * (--quick: shorter timing; M N K: that one shape instead of the list, timed 3 times.)
 *
 * Design: for each shape, one module with one gemm function (codegen/gemm.c) and an
 * exported wrapper is JIT-compiled for the host, once after "default<O3>" and once after
 * LIGHT (below, the pipeline codegen/jit.c gives the GEMM module). Both and, when built
 * with OpenBLAS, cblas_sgemm with openblas_set_num_threads(1) are timed on the same
 * random matrices in interleaved rounds (one call of each per round, each keeping its
 * best call), so that a change in machine load hits all of them alike. The results are
 * compared element-wise with OpenBLAS's (max |difference| relative to max |C|), so a fast
 * wrong kernel cannot pass unnoticed. A second table gives compile times per stage (IR
 * emission, pass pipeline, machine code at LLJIT lookup) for a module with one GEMM and
 * one with all of them.
 *
 * Shapes: squares 256/512/1024, and char_gpt's matrix products at T·B = 2048 tokens,
 * d = 384: QKV (N = 1152), attention output (384), MLP up (1536), MLP down (K = 1536),
 * plus two backward-pass layouts (x·Wᵀ and the weight gradient xᵀ·dy).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen.h"
#include "lower.h" /* cg_init_in_context: a kiln_cg in the JIT's context */

#ifdef KILN_HAVE_OPENBLAS
#include <cblas.h>
#endif

/* The light pipeline for already-vectorised kernels (codegen/jit.c uses the same): fold
 * the address arithmetic and branches the emitter leaves behind, nothing that rewrites
 * loops. */
static const char *const LIGHT = "function(instcombine<no-verify-fixpoint>,simplifycfg)";

typedef void (*gemm_fn)(const float *a, const float *b, float *c, float *scratch);

static kiln_target g_target;
static LLVMOrcLLJITRef g_jit;
static int g_next;

static double clock_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* Kernels are timed by the wall clock; compilation by CPU time, which a busy machine
 * disturbs less (LLJIT compiles on the calling thread). */
static double now(void) { return clock_seconds(CLOCK_MONOTONIC); }
static double cpu_now(void) { return clock_seconds(CLOCK_PROCESS_CPUTIME_ID); }

static void die_on(LLVMErrorRef e, const char *what) {
    if (!e) return;
    char *msg = LLVMGetErrorMessage(e);
    fprintf(stderr, "gemm_bench: %s: %s\n", what, msg);
    LLVMDisposeErrorMessage(msg);
    exit(1);
}

typedef struct compile_times {
    double emit, passes, machine;  /* seconds */
} compile_times;

/* One module holding a gemm function per shape in s[0..n), each called by an exported
 * wrapper (so O3 cannot drop any), optimised with `passes` (NULL: none) and
 * JIT-compiled; returns the wrapper of s[0], "benchN". */
static gemm_fn compile_module(const kiln_gemm_shape *s, int n, const char *passes, compile_times *ct) {
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    kiln_cg cg;
    cg_init_in_context(&cg, &g_target, ctx, "gemm_bench");

    double t0 = cpu_now();
    int id = g_next++;
    char name[48];
    for (int i = n - 1; i >= 0; i--) {  /* the first shape's wrapper is "benchN" */
        LLVMValueRef gemm = kiln_cg_gemm(&cg, &s[i]);
        /* exported wrapper: void benchN(a, b, c, scratch) { gemm(a, b, c, scratch); } */
        if (i == 0) snprintf(name, sizeof name, "bench%d", id);
        else snprintf(name, sizeof name, "bench%d_%d", id, i);
        LLVMTypeRef params[] = {cg.t_ptr, cg.t_ptr, cg.t_ptr, cg.t_ptr};
        LLVMValueRef fn = LLVMAddFunction(cg.mod, name, LLVMFunctionType(cg.t_void, params, 4, 0));
        LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
        LLVMValueRef args[4];
        for (unsigned j = 0; j < 4; j++) args[j] = LLVMGetParam(fn, j);
        LLVMBuildCall2(cg.b, LLVMGlobalGetValueType(gemm), gemm, args, 4, "");
        LLVMBuildRetVoid(cg.b);
    }
    LLVMDisposeBuilder(cg.b);
    char *msg = NULL;
    if (LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg)) {
        fprintf(stderr, "gemm_bench: invalid module: %s\n", msg);
        exit(1);
    }
    LLVMDisposeMessage(msg);
    double t1 = cpu_now();
    if (passes) {
        LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
        die_on(LLVMRunPasses(cg.mod, passes, g_target.tm, opts), passes);
        LLVMDisposePassBuilderOptions(opts);
    }
    double t2 = cpu_now();
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(cg.mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    die_on(LLVMOrcLLJITAddLLVMIRModule(g_jit, LLVMOrcLLJITGetMainJITDylib(g_jit), tsm), "add module");
    LLVMOrcExecutorAddress addr = 0;
    die_on(LLVMOrcLLJITLookup(g_jit, &addr, name), "lookup");  /* compiles the whole module */
    double t3 = cpu_now();
    if (ct) *ct = (compile_times){t1 - t0, t2 - t1, t3 - t2};
    return (gemm_fn)(uintptr_t)addr;
}

static gemm_fn compile(const kiln_gemm_shape *s, const char *passes) { return compile_module(s, 1, passes, NULL); }

/* ---- one shape ---------------------------------------------------------------------- */

typedef struct shape {
    const char *what;
    int64_t m, n, k;
    bool ta, tb;
} shape;

static kiln_gemm_shape gemm_shape(const shape *sh) {
    int64_t lda = sh->ta ? sh->m : sh->k, ldb = sh->tb ? sh->k : sh->n;  /* minimal strides */
    return (kiln_gemm_shape){sh->m, sh->n, sh->k, sh->ta, sh->tb, lda, ldb, sh->n};
}

typedef struct operands {
    kiln_gemm_shape s;
    float *a, *b, *c, *scratch;
} operands;

/* n floats, 64-byte aligned (aligned_alloc wants a size that is a multiple of 64) */
static float *alloc64(int64_t n) { return aligned_alloc(64, (size_t)(n + 16) / 16 * 64); }

static float *random_floats(int64_t n, uint64_t *seed) {
    float *p = alloc64(n);
    for (int64_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005u + 1442695040888963407u;
        p[i] = (float)((double)(*seed >> 40) / (double)(1u << 24) - 0.5);
    }
    return p;
}

static void run_kiln(const operands *op, void *fn) {
    gemm_fn f;
    memcpy(&f, &fn, sizeof f);
    f(op->a, op->b, op->c, op->scratch);
}

#ifdef KILN_HAVE_OPENBLAS
static void run_openblas(const operands *op, void *unused) {
    const kiln_gemm_shape *s = &op->s;
    cblas_sgemm(CblasRowMajor, s->trans_a ? CblasTrans : CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans,
                (int)s->m, (int)s->n, (int)s->k, 1.0f, op->a, (int)s->lda, op->b, (int)s->ldb, 0.0f, op->c,
                (int)s->ldc);
}

/* max |x - y| / max |y| over the m×n results */
static double rel_diff(const float *x, const float *y, int64_t n) {
    double d = 0, mag = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double e = x[i] > y[i] ? x[i] - y[i] : y[i] - x[i], a = y[i] < 0 ? -y[i] : y[i];
        if (e > d) d = e;
        if (a > mag) mag = a;
    }
    return d / mag;
}
#endif

/* The contenders for one shape, timed in interleaved rounds (one call of each per round)
 * so that a change in machine load hits all of them alike; each keeps its best call. */
enum { KILN_O3, KILN_LIGHT, OPENBLAS, N_IMPL };

static void time_round(const operands *op, void *fns[], int n_impl, double best[]) {
    for (int i = 0; i < n_impl; i++) {
        double t0 = now();
#ifdef KILN_HAVE_OPENBLAS
        if (i == OPENBLAS) run_openblas(op, NULL);
        else
#endif
            run_kiln(op, fns[i]);
        double t = now() - t0;
        if (t < best[i]) best[i] = t;
    }
}

static void bench_shape(const shape *sh, double budget) {
    operands op = {.s = gemm_shape(sh)};
    uint64_t seed = 42;
    op.a = random_floats(sh->m * sh->k, &seed);
    op.b = random_floats(sh->k * sh->n, &seed);
    op.c = alloc64(sh->m * sh->n);
    op.scratch = alloc64(kiln_gemm_scratch_floats(&g_target, &op.s));
    double flop = 2.0 * (double)sh->m * (double)sh->n * (double)sh->k;

    gemm_fn o3 = compile(&op.s, "default<O3>"), light = compile(&op.s, LIGHT);
    void *fns[N_IMPL] = {0};
    memcpy(&fns[KILN_O3], &o3, sizeof o3);
    memcpy(&fns[KILN_LIGHT], &light, sizeof light);
#ifdef KILN_HAVE_OPENBLAS
    int n_impl = N_IMPL;
#else
    int n_impl = OPENBLAS;
#endif
    double best[N_IMPL] = {1e30, 1e30, 1e30};
    time_round(&op, fns, n_impl, best);  /* warm caches and pages */
    best[0] = best[1] = best[2] = 1e30;
    double start = now();
    for (int round = 0; round < 3 || now() - start < budget; round++) time_round(&op, fns, n_impl, best);

    char label[64];
    snprintf(label, sizeof label, "%ldx%ldx%ld %c%c", (long)sh->m, (long)sh->n, (long)sh->k, sh->ta ? 't' : 'n',
             sh->tb ? 't' : 'n');
    printf("%-22s %-18s %8.1f %8.1f", label, sh->what, flop / best[KILN_O3] * 1e-9, flop / best[KILN_LIGHT] * 1e-9);
#ifdef KILN_HAVE_OPENBLAS
    /* kiln's result against OpenBLAS's */
    float *mine = malloc((size_t)(sh->m * sh->n) * sizeof(float));
    run_kiln(&op, fns[KILN_O3]);
    memcpy(mine, op.c, (size_t)(sh->m * sh->n) * sizeof(float));
    run_openblas(&op, NULL);
    printf(" %8.1f %7.2f %7.2f %9.1e", flop / best[OPENBLAS] * 1e-9, best[OPENBLAS] / best[KILN_O3],
           best[OPENBLAS] / best[KILN_LIGHT], rel_diff(mine, op.c, sh->m * sh->n));
    free(mine);
#endif
    printf("\n");
    free(op.a);
    free(op.b);
    free(op.c);
    free(op.scratch);
}

/* Compile time of a module with the first n shapes, best of 5. */
static void compile_row(const shape *shapes, int n, const char *pipeline_name, const char *passes) {
    kiln_gemm_shape s[16];
    for (int i = 0; i < n; i++) s[i] = gemm_shape(&shapes[i]);
    compile_times best = {1e30, 1e30, 1e30};
    for (int rep = 0; rep < 5; rep++) {
        compile_times ct;
        compile_module(s, n, passes, &ct);
        if (ct.emit + ct.passes + ct.machine < best.emit + best.passes + best.machine) best = ct;
    }
    printf("%d GEMM%s  %-14s %8.1f %8.1f %8.1f %8.1f\n", n, n > 1 ? "s" : " ", pipeline_name, best.emit * 1e3,
           best.passes * 1e3, best.machine * 1e3, (best.emit + best.passes + best.machine) * 1e3);
}

int main(int argc, char **argv) {
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int arg = quick ? 2 : 1;
    shape one = {"", 0, 0, 0, false, false};
    if (argc >= arg + 3) {
        one.m = atoll(argv[arg]), one.n = atoll(argv[arg + 1]), one.k = atoll(argv[arg + 2]);
        one.ta = argc > arg + 3 && argv[arg + 3][0] == 't';
        one.tb = argc > arg + 3 && argv[arg + 3][1] == 't';
        if (one.m <= 0 || one.n <= 0 || one.k <= 0) {
            fprintf(stderr, "usage: gemm_bench [--quick] [M N K [nn|nt|tn|tt]]\n");
            return 2;
        }
    }
    kiln_diags d;
    kiln_diags_init(&d);
    if (!kiln_target_host(&g_target, &d)) {
        kiln_diags_print(&d, stderr);
        return 1;
    }
    kiln_diags_free(&d);
    die_on(LLVMOrcCreateLLJIT(&g_jit, NULL), "LLJIT");
    LLVMOrcDefinitionGeneratorRef gen;
    die_on(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(g_jit), NULL, NULL),
           "process symbols");
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(g_jit), gen);
#ifdef KILN_HAVE_OPENBLAS
    openblas_set_num_threads(1);
#endif

    static const shape shapes[] = {
        {"square", 256, 256, 256, false, false},
        {"square", 512, 512, 512, false, false},
        {"square", 1024, 1024, 1024, false, false},
        {"gpt qkv", 2048, 1152, 384, false, false},
        {"gpt attn out", 2048, 384, 384, false, false},
        {"gpt mlp up", 2048, 1536, 384, false, false},
        {"gpt mlp down", 2048, 384, 1536, false, false},
        {"gpt qkv x*W^T", 2048, 1152, 384, false, true},
        {"gpt dW = x^T*dy", 384, 1152, 2048, true, false},
    };
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    double budget = quick ? 0.3 : 2.0;
    printf("kiln GEMM, one thread, cpu %s, %d-float vectors; GFLOP/s (best of repeats)\n", g_target.cpu,
           g_target.vector_floats);
    printf("%-22s %-18s %8s %8s", "m x n x k", "", "kiln O3", "light");
#ifdef KILN_HAVE_OPENBLAS
    printf(" %8s %7s %7s %9s", "OpenBLAS", "O3/BLAS", "lt/BLAS", "rel diff");
#endif
    printf("\n");
    if (one.m > 0) {
        for (int r = 0; r < 3; r++) bench_shape(&one, budget);
        LLVMOrcDisposeLLJIT(g_jit);
        kiln_target_free(&g_target);
        return 0;
    }
    for (int i = 0; i < nshapes; i++) bench_shape(&shapes[i], budget);

    printf("\ncompile time, CPU ms (best of 5): a module with the first GEMM of the list, and one\n"
           "with all %d (the micro-kernel and packers are shared by the GEMMs of a module)\n", nshapes);
    printf("light = %s\n", LIGHT);
    printf("%-22s %8s %8s %8s %8s\n", "", "emit IR", "passes", "machine", "total");
    const char *pipeline_names[] = {"default<O3>", "light", "none"}, *pipelines[] = {"default<O3>", LIGHT, NULL};
    for (int p = 0; p < 3; p++) {
        compile_row(shapes, 1, pipeline_names[p], pipelines[p]);
        compile_row(shapes, nshapes, pipeline_names[p], pipelines[p]);
    }
    LLVMOrcDisposeLLJIT(g_jit);
    kiln_target_free(&g_target);
    return 0;
}
