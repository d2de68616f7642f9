/* gemm_bench.c — kiln's generated GEMM against OpenBLAS and oneDNN, at 1 and 2 threads,
 * plain and with a bias + gelu_tanh epilogue.
 *
 *   gemm_bench [--quick] [--threads 1,2] [--peak T:GFLOPS,...] [--json FILE]
 *              [--compile-times] [--cpu-clock] [--work-clock] [--best] [--plain] [--kiln-only]
 *              [--libs openblas,onednn|none] [--settle S] [--pool-stats] [--task-stats]
 *              [--variants V1;V2;...] [--rounds N] [--cold a|b|ab] [M N K [nn|nt|tn|tt]]
 *
 * --quick: small shapes and one short round (a smoke test: it checks that everything
 * runs and agrees, not speed). --peak: the FMA peak per thread count (bench/fma_peak),
 * to print every figure as a fraction of it. --json: the results as one JSON document
 * (bench/all.py reads it). --compile-times: also the compile-time table of a module with
 * one and with all GEMMs, per LLVM pipeline. --cpu-clock: time the 1-thread runs by the
 * calling thread's CPU time instead of the wall clock (robust on an overloaded machine;
 * the 2-thread runs stay on the wall clock). --work-clock: time the runs on more than one
 * thread by the process's CPU time divided by the thread count: the work each contender
 * does, which an overloaded machine does not inflate, but blind to idle waiting (a
 * sleeping thread costs no CPU time; a spinning one does) — a diagnostic, not the
 * wall-clock figure. --best: report each contender's fastest call instead of the median
 * (the figures labelled "median" are then minima; for comparing code versions on a busy
 * machine). --plain: the plain GEMM table only. --kiln-only: time kiln alone (no library
 * contenders: nothing else's threads spin or sleep between kiln's calls); --libs: only
 * these libraries (to see which one's presence changes kiln's figures); --settle S: the
 * sleep after a library block on several threads (default 0.12 s; 0 = none). --pool-stats:
 * after each kiln row, the thread pool's counters per timed call (kiln_threads_stats:
 * hand-offs, chunks run by the caller and by the workers, worker and caller sleeps, µs
 * from publishing a hand-off to a worker's look at it, µs the caller waited after its
 * own share, how often a worker's first look at a job was on the caller's CPU).
 * --task-stats: after every block, each thread of the process that ran in it (labelled
 * main, kiln, openblas, omp or lib-init by who started it): ms on a CPU, ms runnable but
 * waiting for one, voluntary + involuntary switches, migrations, last CPU — which thread
 * shared a CPU with which (it found the cause of the 2026-12-06 anomaly: see the timing
 * notes below and docs/performance.md).
 * --variants: more kiln contenders in the same interleaved rounds, one per
 * semicolon-separated value, each compiled with KILN_GEMM_TUNE set to it (codegen/gemm.c:
 * e.g. "split=n;parts=2"), each printed on a line of its own below the row, as
 * a ratio to the default kiln — partitions compared side by side, not run by run.
 * --rounds N: N interleaved rounds instead of 5 (1 with --quick): more rounds for the
 * medians of a comparison on a machine that others load now and then.
 * --cold a|b|ab: before every timed call, flush that operand's lines from every cache
 * (clflush, untimed): a model's weights, which a forward pass reads from memory once
 * per call, against the usual rounds where every operand stays in cache.
 * M N K: that one shape instead of the list.
 *
 * Contenders, for each shape and thread count:
 *   - kiln: one module per shape holding kiln_cg_gemm's function (and, when this build
 *     has the fused-epilogue API, kiln_cg_gemm_epi's with bias and gelu_tanh), optimised
 *     with the light pipeline codegen/jit.c gives GEMMs and JIT-compiled; threads by
 *     kiln_threads_set (the runtime pool the driver uses).
 *   - OpenBLAS cblas_sgemm, threads by openblas_set_num_threads, once per core type. A
 *     DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels when loaded, from
 *     OPENBLAS_CORETYPE or the CPU it detects, and on CPUs newer than it knows it falls
 *     back to slower ones (0.3.21 on AMD Zen 5: AVX2 Haswell kernels, half the speed of
 *     its AVX-512 ones, when OPENBLAS_CORETYPE=Haswell is set as it is here). Its exported
 *     gotoblas_dynamic_quit/gotoblas_dynamic_init redo that choice, so the bench tries,
 *     in one process, the environment's core type, the detected one (variable unset),
 *     SkylakeX and Haswell (the same kernels counted once, by openblas_get_corename),
 *     and compares against the fastest per shape. Without those symbols (a build for
 *     one CPU) it times the one core it has.
 *   - oneDNN dnnl_sgemm (row-major), threads by omp_set_num_threads: Debian's libdnnl
 *     runs on OpenMP and reads omp_get_max_threads() at each call; its ISA is its own
 *     choice (dnnl_get_effective_cpu_isa, printed).
 * With the epilogue, each library's GEMM is followed by bench_bias_gelu (bias_gelu.c:
 * plain C, vectorised, on the same thread count); OpenBLAS there uses the core type that
 * won the plain GEMM of that shape and thread count.
 *
 * Timing: interleaved rounds. In each round every contender in turn makes one untimed
 * call (warm caches, pages, the libraries' JIT) and then timed calls for 50 ms of wall
 * clock (at least 1, at most MAX_PER_BLOCK); the figure is the median of all its timed
 * calls. (Until 2026-12-06 the block's count came from the first call of the first round,
 * so a slow first call gave blocks of 1–4 calls, all at the start of a block.) After a
 * library block on several threads the bench sleeps 0.12 s before the next contender:
 * OpenBLAS's idle workers spin (sched_yield) for up to ~2^28 cycles after a call, and
 * libgomp's (oneDNN's OpenMP) spin for a few ms: --task-stats showed the libgomp worker
 * running 2–5 ms into kiln's next block on the other CPU, so that kiln's woken worker was
 * placed on the caller's CPU and the two took turns on it for the rest of the block. Every contender's C is compared with the first contender's (kiln's; in
 * the epilogue table of a build without the fused API, OpenBLAS + pass's) as max |Δ| /
 * max |C|, so a fast wrong result cannot pass; a difference above 1e-4 fails the run.
 *
 * Ratios are speed-ups: baseline time / kiln time, so > 1 means kiln is faster.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <immintrin.h> /* _mm_clflush, _mm_mfence: --cold */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h> /* LLVMCreatePerfJITEventListener */
#include <llvm-c/LLJIT.h>
#include <llvm-c/OrcEE.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "bias_gelu.h"
#include "codegen.h"
#include "kiln/runtime.h" /* kiln_threads_set */
#include "lower.h"        /* cg_init_in_context: a kiln_cg in the JIT's context */

#ifdef KILN_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef KILN_HAVE_ONEDNN
#include <dnnl.h>
#include <omp.h>
#endif

/* The pipeline codegen/jit.c gives the GEMM module: fold the address arithmetic and
 * branches the emitter leaves behind, nothing that rewrites loops. */
static const char *const LIGHT = "function(instcombine<no-verify-fixpoint>,simplifycfg)";

static double g_settle_s = 0.12;  /* after a library block on > 1 thread (--quick: 0.01) */
enum { MAX_PER_BLOCK = 400 };      /* timed calls per block at most */
static const double MAX_REL_DIFF = 1e-4;

/* Every compiled function is called as f(a, b, c, scratch, bias); the plain GEMM ignores
 * bias. */
typedef void (*gemm_fn)(const float *a, const float *b, float *c, float *scratch, const float *bias);

static kiln_target g_target;
static LLVMOrcLLJITRef g_jit;
static int g_next;

static double clock_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* Kernels are timed by the wall clock (g_clock), or with --cpu-clock on one thread by the
 * calling thread's CPU time, which a machine with more runnable threads than cores does
 * not inflate (every contender runs on the calling thread then); compilation by CPU
 * time, which a busy machine disturbs less (LLJIT compiles on the calling thread). */
static clockid_t g_clock = CLOCK_MONOTONIC;
static double g_clock_threads = 1;
static bool g_cold_a, g_cold_b;  /* --cold: flush A / B before every timed call */
static bool g_best;  /* --best: the fastest call instead of the median (a diagnostic) */  /* --work-clock: the process's CPU time over the threads */
static bool g_pool_stats;  /* --pool-stats */
static bool g_task_stats;  /* --task-stats */
enum { MAX_VARIANTS = 4 };
static char *g_variants[MAX_VARIANTS];  /* --variants: KILN_GEMM_TUNE values */
static int g_n_variants;
enum { LIB_OPENBLAS = 1, LIB_ONEDNN = 2 };
static unsigned g_libs = LIB_OPENBLAS | LIB_ONEDNN;  /* --libs / --kiln-only */
static double now(void) { return clock_seconds(g_clock) / g_clock_threads; }
static double cpu_now(void) { return clock_seconds(CLOCK_PROCESS_CPUTIME_ID); }

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void die_on(LLVMErrorRef e, const char *what) {
    if (!e) return;
    char *msg = LLVMGetErrorMessage(e);
    fprintf(stderr, "gemm_bench: %s: %s\n", what, msg);
    LLVMDisposeErrorMessage(msg);
    exit(1);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* ---- kiln: compiling GEMM functions --------------------------------------------------- */

typedef struct compile_times {
    double emit, passes, machine;  /* seconds */
} compile_times;

#ifdef KILN_HAVE_GEMM_EPI
static const kiln_gemm_epilogue BIAS_GELU = {.bias = true, .act = KILN_GEMM_ACT_GELU_TANH};
#endif

/* Adds an exported wrapper NAME(a, b, c, scratch, bias) calling `gemm`, which takes
 * (a, b, c, scratch) and, with `with_bias`, bias after them. */
static void add_wrapper(kiln_cg *cg, LLVMValueRef gemm, const char *name, bool with_bias) {
    LLVMTypeRef params[] = {cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_ptr};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, 5, 0));
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    LLVMValueRef args[5];
    for (unsigned j = 0; j < 5; j++) args[j] = LLVMGetParam(fn, j);
    LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(gemm), gemm, args, with_bias ? 5 : 4, "");
    LLVMBuildRetVoid(cg->b);
}

/* One module with a plain GEMM function per shape in s[0..n) (and, when `epi`, a fused
 * bias + gelu_tanh one), each behind an exported wrapper, optimised with `passes` (NULL:
 * none) and JIT-compiled. Returns s[0]'s plain function, and its fused one in *epi_fn
 * (NULL without the API). */
static gemm_fn compile_module(const kiln_gemm_shape *s, int n, bool epi, const char *passes, compile_times *ct,
                              gemm_fn *epi_fn) {
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    kiln_cg cg;
    cg_init_in_context(&cg, &g_target, ctx, "gemm_bench");

    double t0 = cpu_now();
    int id = g_next++;
    char plain_name[48], epi_name[48];
    snprintf(plain_name, sizeof plain_name, "plain%d", id);
    snprintf(epi_name, sizeof epi_name, "epi%d", id);
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s_%d", plain_name, i);
        add_wrapper(&cg, kiln_cg_gemm(&cg, &s[i]), i ? name : plain_name, false);
#ifdef KILN_HAVE_GEMM_EPI
        if (epi) {
            snprintf(name, sizeof name, "%s_%d", epi_name, i);
            add_wrapper(&cg, kiln_cg_gemm_epi(&cg, &s[i], &BIAS_GELU), i ? name : epi_name, true);
        }
#else
        (void)epi;
#endif
    }
    LLVMDisposeBuilder(cg.b);
    /* only the wrappers are exported: the variants of one shape (--variants) define the
     * same GEMM function names in their own modules */
    for (LLVMValueRef f = LLVMGetFirstFunction(cg.mod); f; f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f) && strncmp(LLVMGetValueName(f), plain_name, strlen(plain_name)) != 0 &&
            strncmp(LLVMGetValueName(f), epi_name, strlen(epi_name)) != 0)
            LLVMSetLinkage(f, LLVMInternalLinkage);
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
    LLVMOrcExecutorAddress addr = 0, epi_addr = 0;
    die_on(LLVMOrcLLJITLookup(g_jit, &addr, plain_name), "lookup");  /* compiles the whole module */
#ifdef KILN_HAVE_GEMM_EPI
    if (epi) die_on(LLVMOrcLLJITLookup(g_jit, &epi_addr, epi_name), "lookup");
#endif
    double t3 = cpu_now();
    if (ct) *ct = (compile_times){t1 - t0, t2 - t1, t3 - t2};
    if (epi_fn) *epi_fn = epi_addr ? (gemm_fn)(uintptr_t)epi_addr : NULL;
    return (gemm_fn)(uintptr_t)addr;
}

/* ---- OpenBLAS core types ---------------------------------------------------------------- */

#ifdef KILN_HAVE_OPENBLAS
enum { MAX_CORES = 4 };
typedef struct blas_core {
    const char *request;  /* OPENBLAS_CORETYPE, or NULL: unset (detected) */
    char name[32];        /* openblas_get_corename() */
    const char *how;      /* how it was asked for, for the header */
} blas_core;
static blas_core g_cores[MAX_CORES];
static int g_n_cores, g_core_now = -1;
static void (*g_blas_quit)(void), (*g_blas_init)(void);

static void openblas_use(int i) {
    if (i == g_core_now || !g_blas_init) return;
    if (g_cores[i].request) setenv("OPENBLAS_CORETYPE", g_cores[i].request, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    g_blas_quit();
    g_blas_init();
    g_core_now = i;
}

/* The distinct core types to try: the environment's, the detected one, SkylakeX,
 * Haswell. Leaves OPENBLAS_CORETYPE as it found it (OpenBLAS reads it only at init). */
static void openblas_find_cores(void) {
    g_blas_quit = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    g_blas_init = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!g_blas_quit || !g_blas_init) {
        g_blas_quit = g_blas_init = NULL;
        g_cores[0] = (blas_core){NULL, "", "the only one in this OpenBLAS build"};
        snprintf(g_cores[0].name, sizeof g_cores[0].name, "%s", openblas_get_corename());
        g_n_cores = 1;
        g_core_now = 0;
        return;
    }
    const char *env = getenv("OPENBLAS_CORETYPE");
    char *saved = env ? strdup(env) : NULL;
    blas_core candidates[] = {
        {saved, "", "the environment's OPENBLAS_CORETYPE"},
        {NULL, "", "OPENBLAS_CORETYPE unset: detected"},
        {"SkylakeX", "", "OPENBLAS_CORETYPE=SkylakeX"},
        {"Haswell", "", "OPENBLAS_CORETYPE=Haswell"},
    };
    for (int c = saved ? 0 : 1; c < 4; c++) {
        g_cores[g_n_cores] = candidates[c];
        g_core_now = -1;
        openblas_use(g_n_cores);
        snprintf(g_cores[g_n_cores].name, sizeof g_cores[g_n_cores].name, "%s", openblas_get_corename());
        bool seen = false;
        for (int i = 0; i < g_n_cores; i++) seen |= strcmp(g_cores[i].name, g_cores[g_n_cores].name) == 0;
        if (!seen) g_n_cores++;
    }
    if (saved) setenv("OPENBLAS_CORETYPE", saved, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    g_core_now = -1;
}
#endif

#ifdef KILN_HAVE_ONEDNN
static const char *onednn_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}
#endif

/* ---- one shape ------------------------------------------------------------------------ */

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
    float *a, *b, *c, *bias, *scratch, *ref;  /* ref: the reference C of the current mode */
    int threads;
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

/* max |x - y| / max |y| over the m×n results */
static double rel_diff(const float *x, const float *y, int64_t n) {
    double d = 0, mag = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double e = x[i] > y[i] ? x[i] - y[i] : y[i] - x[i], a = y[i] < 0 ? -y[i] : y[i];
        if (e != e) e = 1e30;  /* NaN in either */
        if (e > d) d = e;
        if (a > mag) mag = a;
    }
    return d / mag;
}

/* ---- --task-stats: what every thread of the process did during a block -------------------
 * From /proc/self/task/TID: schedstat (ns on a CPU, ns runnable but waiting for one),
 * status (voluntary and involuntary context switches), stat (the CPU it last ran on) and
 * sched (migrations between CPUs). Each thread is labelled by who started it: the
 * snapshot taken right after a contender's first call names the threads that call
 * created (kiln's pool workers appear in set_threads). */

enum { MAX_TASKS = 64 };
typedef struct task_stat {
    int tid;
    char who[16];
    double run_ms, wait_ms;
    long vol, invol, migr;
    int cpu;
} task_stat;
static task_stat g_tasks[MAX_TASKS];  /* the labels and the last snapshot */
static int g_n_tasks;

static long status_field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) {
            char *p = line + kl;
            while (*p == ' ' || *p == '\t' || *p == ':') p++;
            v = strtol(p, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static void read_task(int tid, task_stat *t) {
    char path[96];
    unsigned long long run = 0, wait = 0;
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &run, &wait) != 2) run = wait = 0;
        fclose(f);
    }
    t->run_ms = run * 1e-6, t->wait_ms = wait * 1e-6;
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    t->vol = status_field(path, "voluntary_ctxt_switches");
    t->invol = status_field(path, "nonvoluntary_ctxt_switches");
    snprintf(path, sizeof path, "/proc/self/task/%d/sched", tid);
    t->migr = status_field(path, "se.nr_migrations");
    t->cpu = -1;
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    f = fopen(path, "r");
    if (f) {
        char buf[1024];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        buf[len] = 0;
        char *p = strrchr(buf, ')');  /* the fields after comm; processor is field 39 */
        for (int field = 2; p && field < 39; field++) p = strchr(p + 1, ' ');
        if (p) t->cpu = atoi(p + 1);
        fclose(f);
    }
}

/* Takes a snapshot of every thread into cur (returns how many); threads not seen before
 * get the label `who`. */
static int snapshot_tasks(task_stat *cur, const char *who) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) && n < MAX_TASKS;) {
        int tid = atoi(e->d_name);
        if (tid <= 0) continue;
        task_stat *t = &cur[n++];
        t->tid = tid;
        read_task(tid, t);
        int j = 0;
        while (j < g_n_tasks && g_tasks[j].tid != tid) j++;
        if (j == g_n_tasks && g_n_tasks < MAX_TASKS) {
            g_tasks[g_n_tasks] = (task_stat){.tid = tid};
            snprintf(g_tasks[g_n_tasks].who, sizeof g_tasks[j].who, "%s", tid == (int)getpid() ? "main" : who);
            g_n_tasks++;
        }
        snprintf(t->who, sizeof t->who, "%s", j < MAX_TASKS ? g_tasks[j].who : "?");
    }
    if (d) closedir(d);
    return n;
}

/* Prints what each thread did between snapshots a and b (threads with no CPU time and
 * no switches are left out). */
static void print_task_deltas(const char *block, int calls, const task_stat *a, int na, const task_stat *b, int nb) {
    printf("    %-12s %3d calls:", block, calls);
    for (int i = 0; i < nb; i++) {
        const task_stat *y = &b[i], *x = NULL;
        for (int j = 0; j < na; j++)
            if (a[j].tid == y->tid) x = &a[j];
        task_stat z = x ? *x : (task_stat){0};
        double run = y->run_ms - z.run_ms, wait = y->wait_ms - z.wait_ms;
        long vol = y->vol - z.vol, invol = y->invol - z.invol, migr = y->migr - z.migr;
        if (run < 0.05 && vol == 0 && invol == 0) continue;
        printf("  [%s %d: run %.1f wait %.1f ms, sw %ld+%ld, migr %ld, cpu %d]", y->who, y->tid, run, wait, vol, invol,
               migr, y->cpu);
    }
    printf("\n");
}

typedef enum lib { KILN, OPENBLAS, ONEDNN } lib;

typedef struct contender {
    char name[48];
    lib kind;
    int core;      /* OPENBLAS: index into g_cores */
    bool epi;      /* kiln: the fused function; libraries: GEMM + bench_bias_gelu */
    gemm_fn fn;    /* KILN */
    int per_block; /* timed calls in the last block */
    int64_t pool[KILN_THREADS_STATS];  /* --pool-stats: kiln_threads_stats summed over the timed calls */
    double *times;
    int n_times;
    double median, diff;  /* seconds; max rel. difference to the reference */
} contender;

static void call(contender *ct, operands *op) {
    const kiln_gemm_shape *s = &op->s;
    switch (ct->kind) {
    case KILN:
        ct->fn(op->a, op->b, op->c, op->scratch, op->bias);
        return;
    case OPENBLAS:
#ifdef KILN_HAVE_OPENBLAS
        openblas_use(ct->core);
        cblas_sgemm(CblasRowMajor, s->trans_a ? CblasTrans : CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans,
                    (int)s->m, (int)s->n, (int)s->k, 1.0f, op->a, (int)s->lda, op->b, (int)s->ldb, 0.0f, op->c,
                    (int)s->ldc);
#endif
        break;
    case ONEDNN:
#ifdef KILN_HAVE_ONEDNN
        if (dnnl_sgemm(s->trans_a ? 'T' : 'N', s->trans_b ? 'T' : 'N', s->m, s->n, s->k, 1.0f, op->a, s->lda, op->b,
                       s->ldb, 0.0f, op->c, s->ldc) != dnnl_success) {
            fprintf(stderr, "gemm_bench: dnnl_sgemm failed\n");
            exit(1);
        }
#endif
        break;
    }
    if (ct->epi) bench_bias_gelu(op->c, op->bias, s->m, s->n, s->ldc);
}

static void set_threads(int t) {
    static task_stat scratch[MAX_TASKS];
    if (g_task_stats) snapshot_tasks(scratch, "lib-init");  /* threads the libraries started when loaded */
    kiln_threads_set(t);
    if (g_task_stats) snapshot_tasks(scratch, "kiln");  /* the pool's new workers */
#ifdef KILN_HAVE_OPENBLAS
    openblas_set_num_threads(t);
    if (g_task_stats) snapshot_tasks(scratch, "openblas");
#endif
#ifdef KILN_HAVE_ONEDNN
    omp_set_num_threads(t);
#endif
}

/* Every line of the n floats at p out of every cache level (--cold). */
static void flush_lines(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) _mm_clflush(p + i);
    _mm_clflush(p + n - 1);
    _mm_mfence();
}

/* The floats op(A) or op(B) spans: rows × ld. */
static void flush_operands(const operands *op) {
    const kiln_gemm_shape *s = &op->s;
    if (g_cold_a) flush_lines(op->a, (s->trans_a ? s->k : s->m) * s->lda);
    if (g_cold_b) flush_lines(op->b, (s->trans_b ? s->n : s->k) * s->ldb);
}

/* Interleaved rounds over the contenders (see the file comment); fills median and diff.
 * The first contender's result of the first round is the reference. */
static void measure(contender *cs, int n, operands *op, int rounds, double block_s) {
    int64_t mn = op->s.m * op->s.n;
    for (int i = 0; i < n; i++) {
        cs[i].n_times = 0, cs[i].per_block = 0;
        memset(cs[i].pool, 0, sizeof cs[i].pool);
    }
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++) {
            contender *ct = &cs[i];
            call(ct, op);  /* untimed */
            if (r == 0) {
                if (i == 0) memcpy(op->ref, op->c, (size_t)mn * sizeof(float));
                ct->diff = rel_diff(op->c, op->ref, mn);
                ct->times = malloc((size_t)(rounds * MAX_PER_BLOCK) * sizeof(double));
            }
            bool counting = g_pool_stats && ct->kind == KILN;
            if (counting) kiln_threads_stats(NULL, 1);
            static task_stat before[MAX_TASKS], after[MAX_TASKS];
            int n_before = 0;
            if (g_task_stats) n_before = snapshot_tasks(before, ct->kind == ONEDNN ? "omp" : ct->kind == OPENBLAS ? "openblas" : "kiln?");
            /* calls until block_s of wall clock (at least 1, at most MAX_PER_BLOCK): a count
             * taken from the first call made blocks of 1–4 calls whenever that call was slow
             * (first touch of C, a sleeping pool to wake), all of them at the block's start */
            double block_end = clock_seconds(CLOCK_MONOTONIC) + block_s;
            ct->per_block = 0;
            do {
                flush_operands(op);
                double t0 = now();
                call(ct, op);
                ct->times[ct->n_times++] = now() - t0;
            } while (++ct->per_block < MAX_PER_BLOCK && clock_seconds(CLOCK_MONOTONIC) < block_end);
            if (counting) {
                int64_t st[KILN_THREADS_STATS];
                kiln_threads_stats(st, 0);
                for (int j = 0; j < KILN_THREADS_STATS; j++) ct->pool[j] += st[j];
            }
            if (g_task_stats) {
                int n_after = snapshot_tasks(after, "?");
                print_task_deltas(ct->name, ct->per_block, before, n_before, after, n_after);
            }
            if (ct->kind != KILN && op->threads > 1) sleep_s(g_settle_s);
        }
    }
    for (int i = 0; i < n; i++) {
        qsort(cs[i].times, (size_t)cs[i].n_times, sizeof(double), cmp_double);
        cs[i].median = cs[i].times[g_best ? 0 : cs[i].n_times / 2];
        free(cs[i].times);
        cs[i].times = NULL;
    }
}

/* ---- reporting -------------------------------------------------------------------------- */

typedef struct options {
    bool quick, compile_times, cpu_clock, work_clock, plain_only, settle_given;
    int rounds;  /* --rounds; 0: the default */
    int threads[8], n_threads;
    double peak[65];  /* GFLOP/s by thread count, 0 = unknown */
    FILE *json;
    int n_json;
    bool failed;
} options;

static double gflops(const shape *sh, double seconds) { return 2.0 * sh->m * sh->n * sh->k / seconds * 1e-9; }

static void json_string(FILE *f, const char *key, const char *value, bool comma) {
    fprintf(f, "\"%s\": \"%s\"%s", key, value, comma ? ", " : "");
}

/* One row: kiln and the libraries for one shape, thread count and mode. */
static void report(const shape *sh, int threads, bool epi, contender *cs, int n, options *o) {
    char label[64];
    snprintf(label, sizeof label, "%ldx%ldx%ld %c%c", (long)sh->m, (long)sh->n, (long)sh->k, sh->ta ? 't' : 'n',
             sh->tb ? 't' : 'n');
    const contender *kiln = NULL, *best = NULL;
    double worst_diff = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i].kind == KILN) {
            if (!kiln) kiln = &cs[i];  /* the default; --variants follow it */
        } else if (!best || cs[i].median < best->median) best = &cs[i];
        if (cs[i].diff > worst_diff) worst_diff = cs[i].diff;
    }
    double peak = o->peak[threads];
    printf("%-19s %-15s %2d ", label, sh->what, threads);
    if (kiln) {
        printf("%7.1f", gflops(sh, kiln->median));
        if (peak > 0) printf(" %4.0f%%", 100 * gflops(sh, kiln->median) / peak);
        else printf("      ");
    } else {
        printf("%7s %5s", "n/a", "");
    }
    for (int i = 0; i < n; i++)
        if (cs[i].kind != KILN) printf(" %10.1f", gflops(sh, cs[i].median));
    if (kiln && best) printf("   %5.2fx %-14s", best->median / kiln->median, best->name);
    else printf("   %6s %-14s", "", best ? best->name : "");
    printf(" %8.1e%s\n", worst_diff, worst_diff > MAX_REL_DIFF ? "  MISMATCH" : "");
    if (worst_diff > MAX_REL_DIFF) o->failed = true;
    for (int i = 0; i < n; i++) {
        const contender *k = &cs[i];
        if (k->kind != KILN) continue;
        if (k != kiln)
            printf("  %-40s %7.1f GFLOP/s  %5.2fx the default kiln%s", k->name, gflops(sh, k->median),
                   kiln->median / k->median, best ? "" : "\n");
        if (k != kiln && best) printf(", %5.2fx %s\n", best->median / k->median, best->name);
        if (g_pool_stats && k->n_times > 0) {
            double c = k->n_times;
            const int64_t *p = k->pool;
            printf("    pool per call: %.2f hand-offs, chunks %.2f caller / %.2f workers, sleeps %.3f worker / %.3f "
                   "caller, workers' start %.1f us, caller's tail %.1f us, worker on the caller's CPU %.3f\n"
                   "    call %.1f us (median); phase 1 (packing) over %.1f us after publishing, %.1f us of CPU in it; "
                   "in chunks, CPU (wall): caller %.1f (%.1f) us, workers %.1f (%.1f) us; phase-2 chunks waited %.1f us "
                   "for phase 1\n",
                   p[0] / c, p[1] / c, p[2] / c, p[3] / c, p[4] / c, p[5] * 1e-3 / c, p[6] * 1e-3 / c, p[7] / c,
                   k->median * 1e6, p[8] * 1e-3 / c, p[9] * 1e-3 / c, p[10] * 1e-3 / c, p[12] * 1e-3 / c,
                   p[11] * 1e-3 / c, p[13] * 1e-3 / c, p[14] * 1e-3 / c);
        }
    }

    if (!o->json) return;
    FILE *f = o->json;
    fprintf(f, "%s\n  {", o->n_json++ ? "," : "");
    json_string(f, "what", sh->what, true);
    fprintf(f, "\"m\": %ld, \"n\": %ld, \"k\": %ld, ", (long)sh->m, (long)sh->n, (long)sh->k);
    fprintf(f, "\"layout\": \"%c%c\", \"threads\": %d, ", sh->ta ? 't' : 'n', sh->tb ? 't' : 'n', threads);
    json_string(f, "mode", epi ? "bias_gelu" : "plain", true);
    fprintf(f, "\"gflops\": {");
    for (int i = 0; i < n; i++) fprintf(f, "%s\"%s\": %.3f", i ? ", " : "", cs[i].name, gflops(sh, cs[i].median));
    fprintf(f, "}, ");
    if (kiln) fprintf(f, "\"kiln_gflops\": %.3f, ", gflops(sh, kiln->median));
    if (best) {
        json_string(f, "best_lib", best->name, true);
        fprintf(f, "\"best_lib_gflops\": %.3f, ", gflops(sh, best->median));
    }
    if (kiln && best) fprintf(f, "\"speedup\": %.4f, ", best->median / kiln->median);
    if (kiln && peak > 0) fprintf(f, "\"kiln_peak_fraction\": %.4f, ", gflops(sh, kiln->median) / peak);
#ifdef KILN_HAVE_OPENBLAS
    for (int i = 0; i < n; i++)
        if (cs[i].kind == OPENBLAS && epi) json_string(f, "openblas_core", g_cores[cs[i].core].name, true);
#endif
    fprintf(f, "\"rel_diff\": %.3e}", worst_diff);
}

static void header(bool epi, const contender *cs, int n) {
    printf("\n%s\n", epi ? "GEMM + bias + gelu_tanh epilogue: kiln fused vs library GEMM then a separate pass "
                           "(bias_gelu.c); GFLOP/s of the product (2mnk / median time);\n"
                           "OB+pass: OpenBLAS with the core type fastest in the plain GEMM of that shape and threads"
                         : "GEMM: GFLOP/s (2mnk / median time); OB = OpenBLAS with that core type");
    printf("%-19s %-15s %2s %7s %5s", "m x n x k", "", "th", epi ? "kiln+ep" : "kiln", "%pk");
    for (int i = 0; i < n; i++)
        if (cs[i].kind != KILN) printf(" %10.10s", cs[i].name);
    printf("   %6s %-14s %8s\n", "speedup", "vs fastest lib", "rel diff");
}

/* ---- the benchmark ------------------------------------------------------------------ */

/* The library contenders of a mode: every OpenBLAS core for the plain GEMM, best_core
 * (the plain GEMM's fastest) with the epilogue; oneDNN. Returns how many. */
static int library_contenders(contender *cs, bool epi, int best_core) {
    int n = 0;
#ifdef KILN_HAVE_OPENBLAS
    for (int c = 0; c < g_n_cores && (g_libs & LIB_OPENBLAS); c++) {
        if (epi && c != best_core) continue;
        cs[n] = (contender){.kind = OPENBLAS, .core = c, .epi = epi};
        if (epi) snprintf(cs[n].name, sizeof cs[n].name, "OB+pass");
        else snprintf(cs[n].name, sizeof cs[n].name, "OB %s", g_cores[c].name);
        n++;
    }
#else
    (void)epi, (void)best_core;
#endif
#ifdef KILN_HAVE_ONEDNN
    if (g_libs & LIB_ONEDNN) {
        cs[n] = (contender){.kind = ONEDNN, .epi = epi};
        snprintf(cs[n].name, sizeof cs[n].name, "%s", epi ? "oneDNN+pass" : "oneDNN");
        n++;
    }
#endif
    return n;
}

typedef struct shape_result {
    int blas_core[65];  /* per thread count: the fastest OpenBLAS core of the plain GEMM */
} shape_result;

static void bench_shape(const shape *sh, bool epi_mode, options *o, shape_result *res) {
    operands op = {.s = gemm_shape(sh)};
    uint64_t seed = 42;
    op.a = random_floats(sh->m * sh->k, &seed);
    op.b = random_floats(sh->k * sh->n, &seed);
    op.bias = random_floats(sh->n, &seed);
    op.c = alloc64(sh->m * sh->n);
    op.ref = alloc64(sh->m * sh->n);
    /* the default kiln and each --variants value (KILN_GEMM_TUNE while it compiles) */
    gemm_fn plain_fns[1 + MAX_VARIANTS], epi_fns[1 + MAX_VARIANTS];
    int64_t scratch = 0;
    for (int v = 0; v <= g_n_variants; v++) {
        if (v > 0) setenv("KILN_GEMM_TUNE", g_variants[v - 1], 1);
        int64_t sf = kiln_gemm_scratch_floats(&g_target, &op.s);
#ifdef KILN_HAVE_GEMM_EPI
        int64_t es = kiln_gemm_epi_scratch_floats(&g_target, &op.s, &BIAS_GELU);
        if (es > sf) sf = es;
#endif
        if (sf > scratch) scratch = sf;
        epi_fns[v] = NULL;
        plain_fns[v] = compile_module(&op.s, 1, epi_mode, LIGHT, NULL, &epi_fns[v]);
        if (v > 0) unsetenv("KILN_GEMM_TUNE");
    }
    op.scratch = alloc64(scratch);
    gemm_fn epi_fn = epi_fns[0], plain_fn = plain_fns[0];
    int rounds = o->rounds > 0 ? o->rounds : o->quick ? 1 : 5;
    double block_s = o->quick ? 0.002 : 0.05;
    for (int ti = 0; ti < o->n_threads; ti++) {
        int t = o->threads[ti];
        set_threads(t);
        op.threads = t;
        g_clock = o->cpu_clock && t == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
        g_clock_threads = 1;
        if (o->work_clock && t > 1) g_clock = CLOCK_PROCESS_CPUTIME_ID, g_clock_threads = t;
        contender cs[8 + MAX_VARIANTS];
        int n = 0;
        if (!epi_mode || epi_fn) {
            cs[n] = (contender){.kind = KILN, .epi = epi_mode, .fn = epi_mode ? epi_fn : plain_fn};
            snprintf(cs[n].name, sizeof cs[n].name, "%s", epi_mode ? "kiln fused" : "kiln");
            n++;
            for (int v = 1; v <= g_n_variants; v++) {
                cs[n] = (contender){.kind = KILN, .epi = epi_mode, .fn = epi_mode ? epi_fns[v] : plain_fns[v]};
                snprintf(cs[n].name, sizeof cs[n].name, "kiln[%.40s]", g_variants[v - 1]);
                n++;
            }
        }
        n += library_contenders(cs + n, epi_mode, res->blas_core[t]);
        if (n == 0) continue;
        measure(cs, n, &op, rounds, block_s);
        if (!epi_mode) {  /* remember the fastest OpenBLAS core for the epilogue */
            double best = 1e30;
            for (int i = 0; i < n; i++)
                if (cs[i].kind == OPENBLAS && cs[i].median < best) best = cs[i].median, res->blas_core[t] = cs[i].core;
        }
        report(sh, t, epi_mode, cs, n, o);
    }
    free(op.a);
    free(op.b);
    free(op.bias);
    free(op.c);
    free(op.ref);
    free(op.scratch);
}

/* Compile time of a module with the first n shapes, best of 5. */
static void compile_row(const shape *shapes, int n, const char *pipeline_name, const char *passes) {
    kiln_gemm_shape s[16];
    for (int i = 0; i < n; i++) s[i] = gemm_shape(&shapes[i]);
    compile_times best = {1e30, 1e30, 1e30};
    for (int rep = 0; rep < 5; rep++) {
        compile_times ct;
        compile_module(s, n, false, passes, &ct, NULL);
        if (ct.emit + ct.passes + ct.machine < best.emit + best.passes + best.machine) best = ct;
    }
    printf("%d GEMM%s  %-14s %8.1f %8.1f %8.1f %8.1f\n", n, n > 1 ? "s" : " ", pipeline_name, best.emit * 1e3,
           best.passes * 1e3, best.machine * 1e3, (best.emit + best.passes + best.machine) * 1e3);
}

static void usage(void) {
    fprintf(stderr, "usage: gemm_bench [--quick] [--threads 1,2] [--peak T:GFLOPS,...] [--json FILE] "
                    "[--compile-times] [--cpu-clock] [--work-clock] [--best] [--plain] [--kiln-only] "
                    "[--libs openblas,onednn|none] [--settle S] [--pool-stats] [--task-stats] [--variants V1;V2] [--rounds N] [--cold a|b|ab] [M N K [nn|nt|tn|tt]]\n");
    exit(2);
}

static void parse_args(int argc, char **argv, options *o, shape *one) {
    o->threads[0] = 1, o->threads[1] = 2, o->n_threads = 2;
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quick") == 0) o->quick = true;
        else if (strcmp(a, "--cpu-clock") == 0) o->cpu_clock = true;
        else if (strcmp(a, "--work-clock") == 0) o->work_clock = true;
        else if (strcmp(a, "--best") == 0) g_best = true;
        else if (strcmp(a, "--cold") == 0 && i + 1 < argc) {
            const char *w = argv[++i];
            g_cold_a = strchr(w, 'a') != NULL, g_cold_b = strchr(w, 'b') != NULL;
        }
        else if (strcmp(a, "--plain") == 0) o->plain_only = true;
        else if (strcmp(a, "--kiln-only") == 0) g_libs = 0;
        else if (strcmp(a, "--task-stats") == 0) g_task_stats = true;
        else if (strcmp(a, "--settle") == 0 && i + 1 < argc) g_settle_s = atof(argv[++i]), o->settle_given = true;
        else if (strcmp(a, "--libs") == 0 && i + 1 < argc) {
            g_libs = 0;
            for (char *p = strtok(argv[++i], ","); p; p = strtok(NULL, ","))
                if (strcmp(p, "openblas") == 0) g_libs |= LIB_OPENBLAS;
                else if (strcmp(p, "onednn") == 0) g_libs |= LIB_ONEDNN;
                else if (strcmp(p, "none") != 0) usage();
        }
        else if (strcmp(a, "--pool-stats") == 0) g_pool_stats = true;
        else if (strcmp(a, "--variants") == 0 && i + 1 < argc) {
            for (char *p = strtok(argv[++i], ";"); p && g_n_variants < MAX_VARIANTS; p = strtok(NULL, ";"))
                g_variants[g_n_variants++] = p;
        }
        else if (strcmp(a, "--rounds") == 0 && i + 1 < argc) {
            o->rounds = atoi(argv[++i]);
            if (o->rounds < 1 || o->rounds > 100) usage();
        }
        else if (strcmp(a, "--compile-times") == 0) o->compile_times = true;
        else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            o->n_threads = 0;
            for (char *p = argv[++i]; *p && o->n_threads < 8;) {
                long t = strtol(p, &p, 10);
                if (t < 1 || t > KILN_MAX_THREADS) usage();
                o->threads[o->n_threads++] = (int)t;
                if (*p == ',') p++;
                else if (*p) usage();
            }
        } else if (strcmp(a, "--peak") == 0 && i + 1 < argc) {
            for (char *p = argv[++i]; *p;) {
                long t = strtol(p, &p, 10);
                if (*p != ':' || t < 1 || t > 64) usage();
                o->peak[t] = strtod(p + 1, &p);
                if (*p == ',') p++;
                else if (*p) usage();
            }
        } else if (strcmp(a, "--json") == 0 && i + 1 < argc) {
            o->json = fopen(argv[++i], "w");
            if (!o->json) {
                perror(argv[i]);
                exit(1);
            }
        } else if (a[0] != '-' && pos < 3) {
            int64_t v = atoll(a);
            if (v <= 0) usage();
            if (pos == 0) one->m = v;
            else if (pos == 1) one->n = v;
            else one->k = v;
            pos++;
        } else if (a[0] != '-' && pos == 3 && strlen(a) == 2) {
            one->ta = a[0] == 't', one->tb = a[1] == 't';
            pos++;
        } else {
            usage();
        }
    }
    if (pos != 0 && pos < 3) usage();
}

/* With KILN_PERF=1: RuntimeDyld with LLVM's perf listener, which writes jit-PID.dump for
 * `perf inject --jit` (docs/performance.md), so a profile names kiln's GEMM functions. */
static LLVMOrcObjectLayerRef perf_layer(void *ctx, LLVMOrcExecutionSessionRef es, const char *triple) {
    (void)ctx;
    (void)triple;
    LLVMOrcObjectLayerRef layer = LLVMOrcCreateRTDyldObjectLinkingLayerWithSectionMemoryManager(es);
    LLVMJITEventListenerRef listener = LLVMCreatePerfJITEventListener();
    if (listener) LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(layer, listener);
    return layer;
}

int main(int argc, char **argv) {
    options o = {0};
    shape one = {"", 0, 0, 0, false, false};
    parse_args(argc, argv, &o, &one);
    if (o.quick && !o.settle_given) g_settle_s = 0.01;

    kiln_diags d;
    kiln_diags_init(&d);
    if (!kiln_target_host(&g_target, &d)) {
        kiln_diags_print(&d, stderr);
        return 1;
    }
    kiln_diags_free(&d);
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    const char *perf = getenv("KILN_PERF");  /* as codegen/jit.c: name the JIT's functions for perf */
    if (perf && *perf && strcmp(perf, "0") != 0) LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, perf_layer, NULL);
    die_on(LLVMOrcCreateLLJIT(&g_jit, builder), "LLJIT");
    LLVMOrcDefinitionGeneratorRef gen;
    die_on(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(g_jit), NULL, NULL),
           "process symbols");
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(g_jit), gen);
    die_on((LLVMErrorRef)kiln_jit_define_runtime(g_jit), "runtime symbols"); /* kiln_parallel_for */

    static const shape full[] = {
        {"gpt qkv", 2048, 1152, 384, false, false},
        {"gpt attn out", 2048, 384, 384, false, false},
        {"gpt mlp up", 2048, 1536, 384, false, false},
        {"gpt mlp down", 2048, 384, 1536, false, false},
        {"gpt x*W^T", 2048, 1152, 384, false, true},
        {"gpt dW=x^T*dy", 384, 1152, 2048, true, false},
        /* the weight gradients of the attention's projections (q, k, v and out: 24 of
         * char_gpt's training step's GEMMs, run as 384×384 each) */
        {"gpt dWo=x^T*dy", 384, 384, 2048, true, false},
        {"square", 512, 512, 512, false, false},
        {"square", 1024, 1024, 1024, false, false},
        {"square", 2048, 2048, 2048, false, false},
    };
    /* --quick: the same layouts, small enough for a smoke test */
    static const shape quick[] = {
        {"gpt qkv /8", 256, 1152, 384, false, false},
        {"gpt mlp down /8", 256, 384, 1536, false, false},
        {"gpt x*W^T /8", 256, 1152, 384, false, true},
        {"gpt dW /8", 384, 1152, 256, true, false},
        {"square", 128, 128, 128, false, false},
    };
    const shape *shapes = o.quick ? quick : full;
    int nshapes = o.quick ? (int)(sizeof quick / sizeof quick[0]) : (int)(sizeof full / sizeof full[0]);
    if (one.m > 0) {
        one.what = "";
        shapes = &one;
        nshapes = 1;
    }

    printf("gemm_bench: kiln GEMM (cpu %s, %d-float vectors, light pipeline) against", g_target.cpu,
           g_target.vector_floats);
#ifdef KILN_HAVE_OPENBLAS
    openblas_find_cores();
    printf("\n  OpenBLAS (%s): core types tried:", openblas_get_config());
    for (int c = 0; c < g_n_cores; c++) printf("%s %s (%s)", c ? "," : "", g_cores[c].name, g_cores[c].how);
#else
    printf("\n  OpenBLAS: not available in this build (libopenblas-dev not found)");
#endif
#ifdef KILN_HAVE_ONEDNN
    const dnnl_version_t *v = dnnl_version();
    printf("\n  oneDNN %d.%d.%d dnnl_sgemm (ISA %s, OpenMP threads)", v->major, v->minor, v->patch, onednn_isa());
#else
    printf("\n  oneDNN: not available in this build (libdnnl-dev not found)");
#endif
    printf("\n  separate bias+gelu pass: C, -O3 -march=native -ffast-math, rows split over kiln's pool\n");
#ifndef KILN_HAVE_GEMM_EPI
    printf("  kiln fused epilogue: not available in this build\n");
#endif
    printf("speedup = fastest library's time / kiln's time (>1: kiln faster); %%pk = kiln's share of the FMA peak "
           "at that thread count; medians of %d interleaved rounds%s\n",
           o.rounds > 0 ? o.rounds : o.quick ? 1 : 5, o.quick ? " (--quick)" : "");
    if (o.cpu_clock) printf("1-thread rows timed by the calling thread's CPU time (--cpu-clock)\n");
    if (o.work_clock) printf("multi-thread rows timed by the process's CPU time / threads (--work-clock)\n");
    if (o.json) fprintf(o.json, "{\"results\": [");

    shape_result *res = calloc((size_t)nshapes, sizeof *res);
    for (int mode = 0; mode < (o.plain_only ? 1 : 2); mode++) {
        bool epi = mode == 1;
        /* the header needs the contenders' names: build them once for it */
        contender hc[8];
        int hn = 0;
#ifdef KILN_HAVE_GEMM_EPI
        bool have_kiln = true;
#else
        bool have_kiln = !epi;
#endif
        if (have_kiln) hc[hn++] = (contender){.kind = KILN};
        hn += library_contenders(hc + hn, epi, 0);
        header(epi, hc, hn);
        if (hn == 0 || (epi && g_libs && hn == (have_kiln ? 1 : 0))) {  /* --kiln-only: kiln fused alone */
            printf("  (nothing to compare: no library in this build)\n");
            continue;
        }
        for (int i = 0; i < nshapes; i++) bench_shape(&shapes[i], epi, &o, &res[i]);
    }
    free(res);
    if (o.json) {
        fprintf(o.json, "\n], \"epilogue_fused\": %s}\n",
#ifdef KILN_HAVE_GEMM_EPI
                "true"
#else
                "false"
#endif
        );
        fclose(o.json);
    }

    if (o.compile_times) {
        printf("\ncompile time, CPU ms (best of 5): a module with the first GEMM of the list, and one\n"
               "with all %d (the micro-kernel and packers are shared by the GEMMs of a module)\n", nshapes);
        printf("light = %s\n", LIGHT);
        printf("%-22s %8s %8s %8s %8s\n", "", "emit IR", "passes", "machine", "total");
        const char *pipeline_names[] = {"default<O3>", "light", "none"}, *pipelines[] = {"default<O3>", LIGHT, NULL};
        for (int p = 0; p < 3; p++) {
            compile_row(shapes, 1, pipeline_names[p], pipelines[p]);
            compile_row(shapes, nshapes, pipeline_names[p], pipelines[p]);
        }
    }
    set_threads(1);
    LLVMOrcDisposeLLJIT(g_jit);
    kiln_target_free(&g_target);
    if (o.failed) {
        fprintf(stderr, "gemm_bench: results differ (MISMATCH above)\n");
        return 1;
    }
    return 0;
}
