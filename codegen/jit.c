/* jit.c — compile a graph: plan, build, verify, optimise, and hand to ORC LLJIT.
 *
 * Design (../shared/DESIGN.md, "LLVM facts measured"):
 *   plan (memplan with kernel scratch) → build the kernels and the entry in one module,
 *   the GEMM functions they call in a second one →
 *   LLVMVerifyModule (an invalid module is an internal error: codegen would crash on
 *   it rather than fail) → LLVMRunPasses "default<O3>" with the target's machine on
 *   the kernels, a light clean-up on the GEMMs (explicit vector code: O3 would only cost
 *   compile time) → link them into one module, everything internal but the entry →
 *   optionally print it / emit assembly from a clone (codegen mutates a module) →
 *   LLJIT built from the same CPU and features, with a process-symbol generator so the
 *   code can call libm → look the entry up (machine code is produced at lookup).
 * In the JIT the GEMM module is not linked in: it is built in a context of its own and
 * optimised and compiled to an object on a second thread meanwhile (gemm_job), and the
 * LLJIT links that object with the kernels' object, compiled on this thread — about a
 * third less machine code on the compiling thread (docs/performance.md, "JIT compile
 * time"). The two objects are what the compile cache keeps (objcache.c): a compile whose
 * modules were compiled before loads them instead. `--emit llvm/asm` and AOT link the one
 * module as above.
 * The kernels' module is built inside an ORC ThreadSafeContext from the start, so the JIT takes
 * it without a copy; kiln_codegen_module (AOT, --emit) builds the same module in a plain
 * context instead and hands it over finished. With KILN_PERF=1 the JIT links through
 * RuntimeDyld with LLVM's perf listener attached, so `perf report` names the kernels.
 */
#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/Linker.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/OrcEE.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/runtime.h" /* kiln_parallel_for, kiln_profile_mark */

#include "lower.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of the calling thread (kiln_compiled.cpu): LLJIT compiles on the looking-up
 * thread, so every stage of a compile is on this one. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Adds "what: <LLVM's message>" and consumes the error. Always returns false. */
static bool llvm_fail(kiln_diags *d, const char *what, LLVMErrorRef err)
{
    char *msg = LLVMGetErrorMessage(err);
    kiln_diags_add(d, NULL, 0, 0, "codegen", "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return false;
}

/* ---- planning ---------------------------------------------------------------------------- */

static void scratch_sizes(const kiln_graph *g, const kiln_kernel_schedule *s, void *ctx, int64_t *bytes)
{
    lower_scratch_sizes(g, s, ctx, bytes);
}

/* The request through the pipeline (passes/pipeline.c): schedule and memory plan. */
static bool plan(const kiln_compile_request *req, const kiln_target *t, kiln_program *prog, kiln_diags *d)
{
    /* the training step's lr is one more input, after the others (entry.c) */
    uint32_t *inputs = calloc(req->n_inputs + 1, sizeof *inputs);
    KILN_ASSERT(inputs != NULL);
    if (req->n_inputs) memcpy(inputs, req->inputs, req->n_inputs * sizeof *inputs);
    if (req->train) inputs[req->n_inputs] = req->lr;
    kiln_pipeline_options opt = req->pipeline ? *req->pipeline : (kiln_pipeline_options){0};
    char disable[256];
    if (req->no_fuse) { /* the request's list, and fuse */
        snprintf(disable, sizeof disable, "%s%sfuse", opt.disable ? opt.disable : "", opt.disable ? "," : "");
        opt.disable = disable;
    }
    kiln_pipeline_request pr = {.g = req->g,
                                .inputs = inputs,
                                .n_inputs = req->n_inputs + (req->train ? 1 : 0),
                                .params = req->params,
                                .n_params = req->n_params,
                                .states = req->train || req->stateful ? req->states : NULL,
                                .n_states = req->train || req->stateful ? req->n_states : 0,
                                .dropout_alone = (req->train || req->stateful) && req->dropout,
                                .recompute_from = req->recompute_from,
                                .scratch_sizes = scratch_sizes,
                                .scratch_ctx = (void *)t,
                                .options = &opt};
    bool ok = kiln_pipeline_run(&pr, prog, d);
    free(inputs);
    return ok;
}

/* The request as the program compiles it: the program's graph (simplify rebuilds it) and
 * every id of the request translated into it. Lists keep their order, so per-input,
 * per-parameter and per-state results still line up with the caller's request. */
static kiln_compile_request program_request(const kiln_compile_request *req, const kiln_program *prog)
{
    kiln_compile_request r = *req;
    r.g = prog->g;
    r.inputs = prog->inputs;
    r.params = prog->params;
    if (prog->n_states) r.states = prog->states; /* the states the pipeline was given */
    if (req->train) r.lr = prog->inputs[req->n_inputs];
    if ((req->train || req->stateful) && req->dropout) r.dropout_step = kiln_program_node(prog, req->dropout_step);
    return r;
}

bool kiln_codegen_program(const kiln_compile_request *req, kiln_program *prog, kiln_diags *d)
{
    kiln_target host;
    const kiln_target *t = req->target;
    if (!t) {
        if (!kiln_target_host(&host, d)) return false;
        t = &host;
    }
    bool ok = plan(req, t, prog, d);
    if (t == &host) kiln_target_free(&host);
    return ok;
}

bool kiln_codegen_plan(const kiln_compile_request *req, kiln_memplan *p, int *n_kernels, kiln_diags *d)
{
    kiln_program prog;
    if (!kiln_codegen_program(req, &prog, d)) return false;
    *n_kernels = (int)prog.sched.n_kernels;
    *p = prog.plan; /* the caller frees the plan */
    prog.plan = (kiln_memplan){0};
    kiln_program_free(&prog);
    return true;
}

char *kiln_codegen_dump(const kiln_compile_request *req, kiln_diags *d)
{
    kiln_target host;
    const kiln_target *t = req->target;
    if (!t) {
        if (!kiln_target_host(&host, d)) return NULL;
        t = &host;
    }
    kiln_program prog;
    char *text = NULL;
    if (plan(req, t, &prog, d)) {
        text = prog.dump ? prog.dump : strdup("");
        KILN_ASSERT(text != NULL);
        prog.dump = NULL;
        kiln_program_free(&prog);
    }
    if (t == &host) kiln_target_free(&host);
    return text;
}

/* ---- building and optimising ----------------------------------------------------------- */

static void entry_name(const kiln_compile_request *req, char *buf, size_t size)
{
    snprintf(buf, size, "%s_%s", req->name ? req->name : req->g->name,
             req->suffix ? req->suffix : req->train ? "train_step" : "forward");
}

static bool verify(LLVMModuleRef mod, kiln_diags *d)
{
    char *msg = NULL;
    bool bad = LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg);
    if (bad)
        kiln_diags_add(d, NULL, 0, 0, "codegen", "internal error: the generated LLVM module is invalid: %s",
                       msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return !bad;
}

static bool run_passes(LLVMModuleRef mod, const char *pipeline, LLVMTargetMachineRef tm, kiln_diags *d)
{
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMErrorRef err = LLVMRunPasses(mod, pipeline, tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    return err ? llvm_fail(d, "optimisation failed", err) : true;
}

/* The two modules of one compilation, in one context: the kernels and the entry
 * function, and the GEMM functions they call (see lower_nn.c). */
typedef struct unit {
    kiln_cg cg, gemm;
    int n_kernels, n_functions;
} unit;

/* ctx holds the kernels' module, gemm_ctx the GEMMs' (the same context when they are to
 * be linked into one module; another one when a second thread compiles them). */
static void unit_build(unit *u, const kiln_compile_request *req, const kiln_target *t, LLVMContextRef ctx,
                       LLVMContextRef gemm_ctx, const kiln_memplan *p, const kiln_kernel_schedule *sched,
                       const char *name, int32_t *ready_after)
{
    cg_init_in_context(&u->cg, t, ctx, name);
    cg_init_in_context(&u->gemm, t, gemm_ctx, "gemm");
    u->n_kernels = entry_emit(&u->cg, &u->gemm, req->g, req, p, sched, name, &u->n_functions, ready_after);
}

/* Profiled entries (req->profile): the function each kernel call calls, read off the
 * entry before optimisation. Every call is preceded by kiln_profile_mark(k); identical
 * kernels share one function, named after the first of them, and that name is what
 * `perf report` shows (KILN_PERF=1). */
static char **kernel_functions(LLVMModuleRef mod, const char *entry, uint32_t n_kernels)
{
    char **names = calloc(n_kernels ? n_kernels : 1, sizeof *names);
    KILN_ASSERT(names != NULL);
    LLVMValueRef fn = LLVMGetNamedFunction(mod, entry);
    long pending = -1; /* the slot whose mark was the last call seen */
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb)) {
        for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) {
            if (LLVMGetInstructionOpcode(in) != LLVMCall) continue;
            LLVMValueRef callee = LLVMGetCalledValue(in);
            size_t len;
            const char *name = LLVMGetValueName2(callee, &len);
            if (strcmp(name, "kiln_profile_mark") == 0) {
                pending = (long)LLVMConstIntGetSExtValue(LLVMGetOperand(in, 0));
            } else if (pending >= 0 && pending < (long)n_kernels && len) {
                names[pending] = strdup(name);
                KILN_ASSERT(names[pending] != NULL);
                pending = -1;
            }
        }
    }
    return names;
}

/* The GEMM functions' pipeline: a light clean-up (they are explicit vector code already).
 * no-verify-fixpoint: a bare `instcombine` in LLVM 19 aborts the process when it needs a
 * second round; the default pipelines use this form too. */
static const char gemm_pipeline[] = "function(instcombine<no-verify-fixpoint>,simplifycfg)";

/* Makes every function of mod but the entry internal (declarations stay). */
static void internalise(LLVMModuleRef mod, const char *entry)
{
    for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn)) {
        size_t len;
        if (LLVMIsDeclaration(fn) || strcmp(LLVMGetValueName2(fn, &len), entry) == 0) continue;
        LLVMSetLinkage(fn, LLVMInternalLinkage);
    }
}

/* Verifies both modules; optimises the kernels with default<O3> and the GEMM functions
 * with gemm_pipeline; links the GEMMs into the kernels' module; and makes every function
 * but the entry internal again. */
static bool unit_finish(unit *u, const char *entry, kiln_diags *d)
{
    LLVMTargetMachineRef tm = u->cg.target->tm;
    if (!verify(u->cg.mod, d) || !verify(u->gemm.mod, d)) return false;
    if (!run_passes(u->cg.mod, "default<O3>", tm, d)) return false;
    if (!run_passes(u->gemm.mod, gemm_pipeline, tm, d)) return false;
    bool failed = LLVMLinkModules2(u->cg.mod, u->gemm.mod); /* destroys the GEMM module */
    u->gemm.mod = NULL;
    if (failed) {
        kiln_diags_add(d, NULL, 0, 0, "codegen", "internal error: linking the GEMM functions failed");
        return false;
    }
    internalise(u->cg.mod, entry);
    return true;
}

/* Disposes the unit's builders and modules, never the context. */
static void unit_dispose(unit *u)
{
    u->cg.ctx = NULL;
    u->gemm.ctx = NULL;
    kiln_cg_dispose(&u->gemm); /* gemm first: the kernels' module may refer to nothing in it */
    kiln_cg_dispose(&u->cg);
}

bool kiln_codegen_module(const kiln_compile_request *req, kiln_module *out, kiln_diags *d)
{
    KILN_ASSERT(req->target != NULL);
    KILN_ASSERT(!req->profile); /* profile marks call the driver's runtime/profile.c: JIT only */
    memset(out, 0, sizeof *out);
    if (!plan(req, req->target, &out->prog, d)) return false;
    char name[256];
    entry_name(req, name, sizeof name);
    kiln_compile_request r = program_request(req, &out->prog);
    r.check_args = true; /* exported code: its entry checks the caller's pointers */
    LLVMContextRef ctx = LLVMContextCreate();
    unit u;
    if (req->n_ready) {
        out->ready_after = calloc(req->n_ready, sizeof *out->ready_after);
        KILN_ASSERT(out->ready_after != NULL);
    }
    unit_build(&u, &r, req->target, ctx, ctx, &out->prog.plan, &out->prog.sched, name, out->ready_after);
    out->n_kernels = u.n_kernels;
    out->n_functions = u.n_functions;
    bool ok = unit_finish(&u, name, d);
    if (ok) { /* keep the kernels' module (the GEMMs are linked into it) and the context */
        out->cg = u.cg;
        u.cg.mod = NULL;
        u.cg.b = NULL;
    }
    unit_dispose(&u);
    if (!ok) {
        LLVMContextDispose(ctx);
        kiln_program_free(&out->prog);
        free(out->ready_after);
        memset(out, 0, sizeof *out);
    }
    return ok;
}

void kiln_module_free(kiln_module *m)
{
    kiln_cg_dispose(&m->cg);
    kiln_program_free(&m->prog);
    free(m->ready_after);
    memset(m, 0, sizeof *m);
}

char *kiln_codegen_emit(const kiln_compile_request *req, bool assembly, kiln_diags *d)
{
    kiln_compile_request r = *req;
    kiln_target host;
    if (!r.target) {
        if (!kiln_target_host(&host, d)) return NULL;
        r.target = &host;
    }
    char *text = NULL;
    kiln_module m;
    if (kiln_codegen_module(&r, &m, d)) {
        text = kiln_cg_text(&m.cg, assembly, d);
        kiln_module_free(&m);
    }
    if (!req->target) kiln_target_free(&host);
    return text;
}

/* ---- the JIT --------------------------------------------------------------------------- */

/* A target machine for LLJIT (which takes ownership) with the target's CPU and features. */
static LLVMTargetMachineRef jit_machine(const kiln_target *t)
{
    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(t->triple, &target, &err)) {
        LLVMDisposeMessage(err);
        return NULL;
    }
    return LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features, LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                   LLVMCodeModelJITDefault);
}

/* Hands the module (and its context) to a new LLJIT and looks up the entry. */
void *kiln_jit_define_runtime(void *jit_ref)
{
    LLVMOrcLLJITRef jit = jit_ref;
    LLVMJITSymbolFlags flags = {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable, 0};
    LLVMOrcCSymbolMapPair syms[] = {
        {LLVMOrcLLJITMangleAndIntern(jit, "kiln_parallel_for"),
         {(LLVMOrcExecutorAddress)(uintptr_t)&kiln_parallel_for, flags}},
        {LLVMOrcLLJITMangleAndIntern(jit, "kiln_profile_mark"),
         {(LLVMOrcExecutorAddress)(uintptr_t)&kiln_profile_mark, flags}},
        {LLVMOrcLLJITMangleAndIntern(jit, "kiln_threads_get"),  /* GEMM parts per thread */
         {(LLVMOrcExecutorAddress)(uintptr_t)&kiln_threads_get, flags}},
        {LLVMOrcLLJITMangleAndIntern(jit, "kiln_parallel_for2"),  /* a GEMM's one hand-off */
         {(LLVMOrcExecutorAddress)(uintptr_t)&kiln_parallel_for2, flags}},
    };
    return LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit), LLVMOrcAbsoluteSymbols(syms, 4));
}

/* perf: with KILN_PERF=1 (not "0" or empty), objects are linked by RuntimeDyld with LLVM's
 * perf JIT event listener attached, which records every function's name and address in
 * a jit-PID.dump file for `perf inject --jit` (docs/performance.md). Opt-in because it
 * writes files and replaces the default JITLink linker; the listener is a process-wide
 * singleton that LLVM owns (NULL when LLVM was built without perf support). */
static bool perf_wanted(void)
{
    const char *v = getenv("KILN_PERF");
    return v && *v && strcmp(v, "0") != 0;
}

static LLVMOrcObjectLayerRef perf_object_layer(void *ctx, LLVMOrcExecutionSessionRef es, const char *triple)
{
    (void)ctx;
    (void)triple;
    LLVMOrcObjectLayerRef layer = LLVMOrcCreateRTDyldObjectLinkingLayerWithSectionMemoryManager(es);
    LLVMJITEventListenerRef perf = LLVMCreatePerfJITEventListener();
    if (perf) LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(layer, perf);
    return layer;
}

/* mod as an object file made by tm, or NULL with "machine code for WHAT failed: …" in
 * error (the GEMM job's thread has no diagnostics of its own). */
static LLVMMemoryBufferRef object_file(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *what, char *error,
                                       size_t size)
{
    char *err = NULL;
    LLVMMemoryBufferRef obj = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &err, &obj)) {
        snprintf(error, size, "machine code for %s failed: %s", what, err ? err : "?");
        obj = NULL;
    }
    LLVMDisposeMessage(err);
    return obj;
}

/* ---- the GEMM module on a second thread ---------------------------------------------------- */

/* The JIT compiles the GEMM functions (about a third of the machine code of a training
 * step: explicit vector tiles) on a thread of their own while this one optimises the
 * kernels and compiles them: the GEMM module is built in a context of its own (contexts
 * are not shared between threads), optimised with gemm_pipeline and emitted as an object
 * file by a target machine of its own, which the LLJIT links with the kernels' code.
 * Each module's machine code is what one thread would make of it, so the result does not
 * depend on the timing. */
typedef struct gemm_job {
    kiln_cg *gemm;              /* its module and context, used by the job's thread only */
    LLVMMemoryBufferRef object; /* the result, or NULL */
    char error[256];
    double cpu;                 /* the job's CPU time, ms */
    pthread_t thread;
    bool started;
} gemm_job;

static void *gemm_job_run(void *arg)
{
    gemm_job *job = arg;
    double c0 = cpu_ms();
    LLVMModuleRef mod = job->gemm->mod;
    char *msg = NULL;
    LLVMTargetMachineRef tm = jit_machine(job->gemm->target);
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        snprintf(job->error, sizeof job->error, "internal error: the generated GEMM module is invalid: %s",
                 msg ? msg : "?");
    } else if (!tm) {
        snprintf(job->error, sizeof job->error, "cannot create a target machine for the GEMM functions");
    } else {
        LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
        LLVMErrorRef perr = LLVMRunPasses(mod, gemm_pipeline, tm, opts);
        LLVMDisposePassBuilderOptions(opts);
        if (perr) {
            char *m = LLVMGetErrorMessage(perr);
            snprintf(job->error, sizeof job->error, "optimisation of the GEMM functions failed: %s", m);
            LLVMDisposeErrorMessage(m);
        } else {
            job->object = object_file(tm, mod, "the GEMM functions", job->error, sizeof job->error);
        }
    }
    LLVMDisposeMessage(msg);
    if (tm) LLVMDisposeTargetMachine(tm);
    job->cpu = cpu_ms() - c0;
    return NULL;
}

static void gemm_job_start(gemm_job *job, kiln_cg *gemm)
{
    memset(job, 0, sizeof *job);
    job->gemm = gemm;
    job->started = pthread_create(&job->thread, NULL, gemm_job_run, job) == 0;
    if (!job->started) gemm_job_run(job); /* no thread to be had: on this one */
}

/* Waits for the job; its object (or its error, false) is the caller's. */
static bool gemm_job_finish(gemm_job *job, kiln_diags *d)
{
    if (job->started) pthread_join(job->thread, NULL);
    job->started = false;
    if (job->object) return true;
    kiln_diags_add(d, NULL, 0, 0, "codegen", "%s", job->error);
    return false;
}

/* The kernels' module, optimised, as an object file made by a target machine like the
 * LLJIT's own (what the LLJIT would make of the module at the lookup). */
static bool emit_object(kiln_cg *cg, LLVMMemoryBufferRef *obj, kiln_diags *d)
{
    LLVMTargetMachineRef tm = jit_machine(cg->target);
    if (!tm) {
        kiln_diags_add(d, NULL, 0, 0, "codegen", "cannot create the JIT's target machine");
        return false;
    }
    char error[256];
    *obj = object_file(tm, cg->mod, "the kernels", error, sizeof error);
    LLVMDisposeTargetMachine(tm);
    if (!*obj) kiln_diags_add(d, NULL, 0, 0, "codegen", "%s", error);
    return *obj != NULL;
}

/* Links into a new LLJIT either the module cg (compiled at the lookup; --emit llvm/asm)
 * or the objects (the kernels' and the GEMMs'; consumed), and looks up the entry.
 * *lookup_cpu: cpu_ms() when everything was added, before the lookup. */
static bool jit_link(kiln_cg *cg, LLVMOrcThreadSafeContextRef tsc, LLVMMemoryBufferRef obj[OBJCACHE_OBJECTS],
                     const kiln_target *t, const char *name, kiln_compiled *out, double *lookup_cpu, kiln_diags *d)
{
    LLVMOrcThreadSafeModuleRef tsm = NULL;
    if (cg) {
        LLVMDisposeBuilder(cg->b);
        cg->b = NULL;
        tsm = LLVMOrcCreateNewThreadSafeModule(cg->mod, tsc);
        cg->mod = NULL; /* owned by tsm, and the context by tsc */
        cg->ctx = NULL;
    }
    bool ok = false;
    LLVMTargetMachineRef tm = jit_machine(t);
    if (!tm) {
        kiln_diags_add(d, NULL, 0, 0, "codegen", "cannot create the JIT's target machine");
        goto done;
    }
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
    if (perf_wanted()) LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, perf_object_layer, NULL);
    LLVMOrcLLJITRef jit;
    LLVMErrorRef err = LLVMOrcCreateLLJIT(&jit, builder); /* consumes builder */
    if (err) {
        llvm_fail(d, "cannot create the JIT", err);
        goto done;
    }
    out->jit = jit;
    LLVMOrcDefinitionGeneratorRef gen;
    err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (err) {
        llvm_fail(d, "cannot expose process symbols to the JIT", err);
        goto done;
    }
    LLVMOrcJITDylibRef main_jd = LLVMOrcLLJITGetMainJITDylib(jit);
    LLVMOrcJITDylibAddGenerator(main_jd, gen);
    err = kiln_jit_define_runtime(jit);
    if (err) {
        llvm_fail(d, "cannot expose the runtime to the JIT", err);
        goto done;
    }
    if (tsm) {
        err = LLVMOrcLLJITAddLLVMIRModule(jit, main_jd, tsm); /* consumes tsm, even on error */
        tsm = NULL;
        if (err) {
            llvm_fail(d, "cannot add the module to the JIT", err);
            goto done;
        }
    }
    for (int i = 0; obj && i < OBJCACHE_OBJECTS; i++) {
        err = LLVMOrcLLJITAddObjectFile(jit, main_jd, obj[i]); /* consumes the buffer */
        obj[i] = NULL;
        if (err) {
            llvm_fail(d, "cannot add the machine code to the JIT", err);
            goto done;
        }
    }
    *lookup_cpu = cpu_ms(); /* a module's machine code is produced at the lookup */
    LLVMOrcExecutorAddress addr = 0;
    err = LLVMOrcLLJITLookup(jit, &addr, name);
    if (err) {
        llvm_fail(d, "cannot compile the module", err);
        goto done;
    }
    out->entry = (void *)(uintptr_t)addr;
    ok = true;
done:
    if (tsm) LLVMOrcDisposeThreadSafeModule(tsm);
    for (int i = 0; obj && i < OBJCACHE_OBJECTS; i++)
        if (obj[i]) LLVMDisposeMemoryBuffer(obj[i]);
    return ok;
}

bool kiln_compile_graph(const kiln_compile_request *req, kiln_compiled *out, kiln_diags *d)
{
    memset(out, 0, sizeof *out);
    kiln_target host;
    const kiln_target *t = req->target;
    if (!t) {
        if (!kiln_target_host(&host, d)) return false;
        t = &host;
    }
    double t0 = now_ms(), c0 = cpu_ms();
    kiln_program prog;
    bool ok = plan(req, t, &prog, d);
    double c_plan = cpu_ms();
    if (!ok) goto done_target;
    kiln_memplan p = prog.plan;
    kiln_compile_request r = program_request(req, &prog);
    const kiln_graph *g = r.g;
    out->n_args = (req->train ? 4 : req->stateful ? 3 : 2) + req->n_inputs + g->n_outputs + (req->n_ready ? 2 : 0);
    out->optim_bytes = p.optim_bytes;
    out->state_offsets = calloc(req->n_states ? req->n_states : 1, sizeof *out->state_offsets);
    KILN_ASSERT(out->state_offsets != NULL);
    for (uint32_t i = 0; (req->train || req->stateful) && i < req->n_states; i++)
        out->state_offsets[i] = p.homes[r.states[i]].offset;
    out->params_bytes = p.params_bytes;
    out->workspace_bytes = p.workspace_bytes;
    out->unplanned_bytes = p.unplanned_bytes;
    out->lower_bound_bytes = p.lower_bound_bytes;
    out->param_offsets = calloc(req->n_params ? req->n_params : 1, sizeof *out->param_offsets);
    KILN_ASSERT(out->param_offsets != NULL);
    for (uint32_t i = 0; i < req->n_params; i++) out->param_offsets[i] = p.homes[r.params[i]].offset;

    char name[256];
    entry_name(req, name, sizeof name);
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    unit u;
    if (req->n_ready) {
        out->ready_after = calloc(req->n_ready, sizeof *out->ready_after);
        KILN_ASSERT(out->ready_after != NULL);
    }
    /* --emit llvm/asm want one linked module: then the GEMMs share the kernels' context
     * and thread; else they get their own (gemm_job) */
    bool one_module = req->emit_llvm || req->emit_asm;
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMContextRef gemm_ctx = one_module ? ctx : LLVMContextCreate();
    unit_build(&u, &r, t, ctx, gemm_ctx, &prog.plan, &prog.sched, name, out->ready_after);
    out->n_kernels = u.n_kernels;
    out->n_functions = u.n_functions;
    if (req->profile) out->kernel_fns = kernel_functions(u.cg.mod, name, prog.sched.n_kernels);
    double t1 = now_ms(), c1 = cpu_ms();
    /* Without --emit, the kernels and the GEMMs reach the LLJIT as two object files: from
     * the compile cache, or compiled here (the GEMMs on the job's thread) and then saved
     * in it. */
    gemm_job job = {0};
    objcache_key key;
    LLVMMemoryBufferRef obj[OBJCACHE_OBJECTS] = {0};
    bool keyed = !one_module && objcache_key_of(&key, t, u.cg.mod, u.gemm.mod);
    out->cached = keyed && objcache_load(&key, obj);
    if (one_module) {
        ok = unit_finish(&u, name, d);
    } else if (!out->cached) {
        gemm_job_start(&job, &u.gemm);
        ok = verify(u.cg.mod, d) && run_passes(u.cg.mod, "default<O3>", t->tm, d);
        if (ok) internalise(u.cg.mod, name);
    }
    double t2 = now_ms(), c2 = cpu_ms();
    if (ok && req->emit_llvm) out->llvm_ir = kiln_cg_text(&u.cg, false, d);
    if (ok && req->emit_asm) ok = (out->asm_text = kiln_cg_text(&u.cg, true, d)) != NULL;
    if (ok && !one_module && !out->cached) {
        ok = emit_object(&u.cg, &obj[0], d);
        if (gemm_job_finish(&job, d)) {
            obj[1] = job.object;
            job.object = NULL;
        } else {
            ok = false;
        }
        if (ok && keyed) objcache_store(&key, obj);
    }
    double c_emitted = cpu_ms(), c_lookup = c_emitted;
    if (ok) ok = jit_link(one_module ? &u.cg : NULL, tsc, one_module ? NULL : obj, t, name, out, &c_lookup, d);
    for (int i = 0; i < OBJCACHE_OBJECTS; i++)
        if (obj[i]) LLVMDisposeMemoryBuffer(obj[i]);
    if (!one_module) { /* joined above unless compiling stopped early */
        if (job.started) pthread_join(job.thread, NULL);
        if (job.object) LLVMDisposeMemoryBuffer(job.object);
        out->cpu.gemm_thread = job.cpu;
        kiln_cg_dispose(&u.gemm); /* its module and its own context */
    }
    double t3 = now_ms(), c3 = cpu_ms();
    out->ms_build = t1 - t0;
    out->ms_optimize = t2 - t1;
    out->ms_jit = t3 - t2;
    out->cpu.plan = c_plan - c0;
    out->cpu.build = c1 - c_plan;
    out->cpu.optimize = c2 - c1;
    out->cpu.jit_setup = c_lookup - c_emitted;
    out->cpu.machine_code = (c_emitted - c2) + (c3 - c_lookup);

    unit_dispose(&u); /* the thread-safe context owns the context */
    LLVMOrcDisposeThreadSafeContext(tsc);
    out->dump = prog.dump;
    prog.dump = NULL;
    out->sched = prog.sched; /* kept for the caller (profile slots); freed with out */
    prog.sched = (kiln_kernel_schedule){0};
    out->g = prog.g; /* with the graph its ids are in */
    out->g_owned = prog.owned;
    prog.owned = NULL;
    kiln_program_free(&prog);
done_target:
    if (t == &host) kiln_target_free(&host);
    if (!ok) kiln_compiled_free(out);
    return ok;
}

void kiln_compiled_free(kiln_compiled *c)
{
    if (c->jit) {
        LLVMErrorRef err = LLVMOrcDisposeLLJIT(c->jit);
        if (err) LLVMConsumeError(err);
    }
    free(c->param_offsets);
    free(c->state_offsets);
    free(c->llvm_ir);
    free(c->asm_text);
    free(c->dump);
    for (uint32_t k = 0; c->kernel_fns && k < c->sched.n_kernels; k++) free(c->kernel_fns[k]);
    free(c->kernel_fns);
    free(c->ready_after);
    kiln_schedule_free(&c->sched);
    if (c->g_owned) kiln_graph_free(c->g_owned);
    free(c->g_owned);
    memset(c, 0, sizeof *c);
}
