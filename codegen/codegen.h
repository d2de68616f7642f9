/* codegen.h — IR graph → LLVM IR → native code (private to codegen/ and the driver).
 *
 * Shapes are static, so every kernel is specialised: loop bounds, strides and
 * broadcasting are constants in the generated code. A compiled model is one LLVM module
 * holding one internal function per kernel and one exported entry function per model
 * that calls them in order with pointers into the parameter blob, the caller's
 * workspace and the caller's input/output buffers. Generated code never allocates.
 *
 * Depends on: ir, passes, the LLVM 19 C API. Nothing here prints.
 */
#ifndef KILN_CODEGEN_H
#define KILN_CODEGEN_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir.h"
#include "passes.h"   /* kiln_memplan */

/* ---- target (target.c) ---------------------------------------------------------- */

typedef struct kiln_target {
    char *triple, *cpu, *features;   /* malloc'd */
    int vector_floats;               /* f32 lanes of the widest vector worth using: 16, 8 or 4 */
    LLVMTargetMachineRef tm;         /* PIC, aggressive */
} kiln_target;

/* The machine kiln runs on (JIT). */
bool kiln_target_host(kiln_target *t, kiln_diags *d);
/* A named CPU for AOT (--target-cpu/--target-features); NULL cpu = the host's CPU, with
 * `features` instead of the host's when given. */
bool kiln_target_for(kiln_target *t, const char *cpu, const char *features, kiln_diags *d);
/* Whether LLVM knows the CPU name on this machine's target (kiln_target_for's check, for
 * a command line to refuse before loading anything); else a diagnostic with the nearest
 * name and all of them. */
bool kiln_target_cpu_known(const char *cpu, kiln_diags *d);
void kiln_target_free(kiln_target *t);
/* Checks an LLVM feature string ("+avx2,-avx512f") for `cpu` (NULL: the host's) before
 * LLVM sees it: its form, and on x86 every name against the features kiln supports,
 * never removing the x86-64 baseline (sse, sse2, x87...), and AVX-512 added to a CPU
 * without it only with avx512vl. kiln_target_for calls it; the driver too, to tell a
 * usage error. */
bool kiln_target_features_check(const char *cpu, const char *features, kiln_diags *d);
/* Sets target-cpu, target-features and prefer-vector-width on a function (every
 * function kiln emits gets them; see ../shared/DESIGN.md, "LLVM facts measured"). */
void kiln_target_tag_function(const kiln_target *t, LLVMValueRef fn);

/* ---- one module being built ------------------------------------------------------ */

typedef struct kiln_cg {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    const kiln_target *target;
    LLVMTypeRef t_void, t_i1, t_i32, t_i64, t_f32, t_f64, t_ptr;
} kiln_cg;

void kiln_cg_init(kiln_cg *cg, const kiln_target *t, const char *module_name);
void kiln_cg_dispose(kiln_cg *cg);  /* disposes builder, module and context unless taken */
/* The module as text, malloc'd: its IR, or (assembly) the target's assembly, emitted from a
 * clone because code generation changes the module it emits; NULL with a diagnostic. */
char *kiln_cg_text(kiln_cg *cg, bool assembly, kiln_diags *d);

/* ---- GEMM (gemm.c) --------------------------------------------------------------- */

/* One matrix product C (m×n, row stride ldc) = op(A)·op(B), op = transpose when the flag
 * is set: A is m×k (row stride lda), or k×m when trans_a; B is k×n (ldb), or n×k when
 * trans_b. All strides in elements. */
typedef struct kiln_gemm_shape {
    int64_t m, n, k;
    bool trans_a, trans_b;
    int64_t lda, ldb, ldc;
} kiln_gemm_shape;

/* Emits (or reuses, for an equal shape) an internal function
 *   void NAME(const float *noalias a, const float *noalias b, float *noalias c,
 *             float *noalias scratch)
 * that overwrites C. scratch holds kiln_gemm_scratch_floats(…) floats, 64-byte aligned
 * (packed panels). Cache-blocked with packed panels and a register-blocked micro-kernel
 * in explicit vector IR (<vector_floats x float>, llvm.fma); correct for every size,
 * including sizes that are not multiples of the tile and k = 0 (C = 0). */
LLVMValueRef kiln_cg_gemm(kiln_cg *cg, const kiln_gemm_shape *s);
int64_t kiln_gemm_scratch_floats(const kiln_target *t, const kiln_gemm_shape *s);

/* What happens to each C element when its tile is stored for the last time, in this
 * order: v = Σ_q op(A)(i,q)·op(B)(q,j) (0 when k = 0); v = v·scale; v = v + bias[j];
 * P[i·ldp + j] = v; v = act(v); v = v + R[i·ldr + j]; then C = v, or C = C + v. Each
 * step is its own f32 operation rounded as the unfused kernel of its IR op rounds (scale
 * as `scale`, in double; the activations as lower_elementwise.c writes them; no
 * contraction across steps), so the result equals matmul → scale → add(bias) → act →
 * add(R) → add(C, ·) computed by separate kiln kernels, bit for bit. */
typedef enum kiln_gemm_act {
    KILN_GEMM_ACT_NONE,
    KILN_GEMM_ACT_RELU,
    KILN_GEMM_ACT_GELU,
    KILN_GEMM_ACT_GELU_TANH,
    KILN_GEMM_ACT_SILU,
} kiln_gemm_act;

typedef struct kiln_gemm_epilogue {
    bool accumulate;    /* C += result instead of C = result (gradient accumulation) */
    double scale;       /* result = acc·scale first, as the `scale` op rounds (0 or 1 = none) */
    bool bias;          /* then + bias[j]: a row of n floats broadcast over the m rows */
    bool pre_out;       /* then store that value (before the activation) into P, m×n, row stride ldp */
    kiln_gemm_act act;  /* then the activation */
    bool residual;      /* then + R[i·ldr + j] */
    int64_t ldp, ldr;   /* row strides of P and R (≥ n when used) */
} kiln_gemm_epilogue;

/* kiln_cg_gemm with an epilogue (NULL or all-default: exactly kiln_cg_gemm's function):
 *   void NAME(const float *a, const float *b, float *c, float *scratch,
 *             [const float *bias], [float *pre_out], [const float *residual])
 * the optional pointers present, in that order, when their flag is set. No two of the
 * pointers overlap (C is read only with accumulate, R and bias are only read). The
 * scratch holds kiln_gemm_epi_scratch_floats(…) floats, 64-byte aligned: more than
 * kiln_gemm_scratch_floats only with accumulate when k spans several blocks (the partial
 * sums then wait in scratch, m·n floats, since C holds the old values). Threads and
 * results as kiln_cg_gemm: identical for any thread count. */
LLVMValueRef kiln_cg_gemm_epi(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e);

/* kiln_cg_gemm_epi's product that also sums the lanes of op(A) along k, a bias gradient
 * riding on the packing of A instead of reading it once more:
 *   void NAME(…kiln_cg_gemm_epi's arguments…, float *sums)
 * sums[i] = Σ_q op(A)(i, q), m floats, each added up q = 0, 1, …, k−1 from 0 in f32 — the
 * bits of a column sum of A (k×m) in row order, for any thread count. Only when
 * kiln_gemm_can_sum_a: op(A) transposed (its lanes contiguous, so its copier packs it), not
 * a product that packs nothing (n = 0, or so few rows that the small path takes it), and
 * an A sliver of one vector (AVX2, AVX-512; not SSE's 6 lanes of 4). */
bool kiln_gemm_can_sum_a(const kiln_target *t, const kiln_gemm_shape *s);
LLVMValueRef kiln_cg_gemm_sum(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e);
int64_t kiln_gemm_epi_scratch_floats(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e);

/* `count` products of one shape and epilogue reading the same op(A) (a QKV kernel's
 * three), as one job: A packed once, one hand-off (codegen/gemm.c, "sibling products"):
 *   void NAME(const float *a, float *scratch, void *const *ops)
 * ops holds count × {b, c, bias, pre_out, residual} (NULL for absent steps); scratch
 * kiln_gemm_group_scratch_floats(…) floats, 64-byte aligned. Each C gets the bits
 * kiln_cg_gemm_epi's function would give it, for any thread count. Only when
 * kiln_gemm_group_ok (2…8 products, A small enough to be one shared block, no
 * accumulation over several k blocks); the scratch size is 0 otherwise. */
bool kiln_gemm_group_ok(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, int count);
LLVMValueRef kiln_cg_gemm_group(kiln_cg *cg, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e, int count);
int64_t kiln_gemm_group_scratch_floats(const kiln_target *t, const kiln_gemm_shape *s, const kiln_gemm_epilogue *e,
                                       int count);

/* ---- compiling a graph (lower.c, entry.c, jit.c) --------------------------------- */

/* What to compile. Codegen does not know model files: the caller names the graph's
 * INPUT nodes in argument order and its PARAM nodes in parameter-blob order; the
 * outputs are g->outputs in order. Only the nodes the outputs need are compiled. */
typedef struct kiln_compile_request {
    const kiln_graph *g;
    const uint32_t *inputs;
    uint32_t n_inputs;
    const uint32_t *params;
    uint32_t n_params;
    const char *name;              /* entry symbol prefix: NAME_forward (NULL: g->name) */
    const kiln_target *target;     /* NULL: the host */
    bool emit_llvm, emit_asm;      /* keep the optimised module's text / assembly */
    /* The training step (SPEC section 6) instead of the forward entry: when `train` is
     * set the entry is NAME_train_step (below), `states` lists the graph's STATE nodes in
     * optimizer-blob order, `lr` is a rank-0 f32 INPUT node (not in `inputs`) passed by
     * value after the inputs, and the graph's updates are compiled too. */
    bool train;
    const uint32_t *states;
    uint32_t n_states;
    uint32_t lr;
    /* train: with `dropout` set, DROPOUT nodes drop (inverted dropout) with the masks of
     * kiln_interp_dropout_keep, run seed = dropout_seed + the value of `dropout_step`,
     * the rank-0 STATE node counting steps (lower_dropout.c); without, they stay the
     * identity. */
    bool dropout;
    uint32_t dropout_step;
    uint64_t dropout_seed;
    /* A stateful entry without training (generation's KV cache, frontend.h): `states`
     * lists the graph's STATE nodes in state-blob order and the graph's updates are
     * compiled, as for `train`, but there is no lr and dropout stays the identity:
     *     int NAME_SUFFIX(const float *params, float *state, void *workspace, inputs…, outputs…)
     * With `dropout` set a stateful entry drops as a training step does, seeded from
     * `dropout_step` in the state blob (the split step's NAME_train_grad). */
    bool stateful;
    /* A stateful entry that says when some of its states are final (the split step's
     * gradients, so that averaging them overlaps the backward pass: docs/distributed.md).
     * With n_ready > 0 the entry takes two more arguments after its outputs,
     *     void (*ready)(void *ctx, int32_t i), void *ctx
     * and, when ready is not NULL, calls ready(ctx, i) once per call for each of the states
     * states[ready_first + i], i < n_ready, right after the last kernel that writes or reads
     * it (or after the final copies): from then on the entry no longer touches that state,
     * so the caller may read or change it (from the callback, or another thread) while the
     * entry goes on. The calls come in kernel order (kiln_ready_after), the same in every
     * call; none after a failing kernel. */
    uint32_t ready_first, n_ready;
    const char *suffix;            /* the entry's name after NAME_: NULL = "forward" / "train_step" */
    /* train with activation checkpointing (passes/checkpoint.c): nodes from this id on
     * are the recomputed copies' part of the graph, which simplify keeps apart (0 = none) */
    uint32_t recompute_from;
    bool no_fuse;                  /* every node its own kernel (as --disable-pass fuse) */
    const kiln_pipeline_options *pipeline;  /* --disable-pass, --dump-after; NULL: defaults */
    /* The entry times its kernels: kiln_profile_mark (kiln/runtime.h) before kernel k of
     * the schedule (slot k), before the final copies (slot n_kernels) and before it
     * returns (-1). JIT only (`kiln bench --per-kernel`): never set for exported code. */
    bool profile;
    /* The entry checks its pointer arguments before anything else: a NULL blob,
     * workspace, input or output (of a non-zero size) returns KILN_RC_NULL_ARG, a
     * parameter or optimizer/state blob that is not float-aligned KILN_RC_MISALIGNED;
     * and it rounds the workspace up to 64 bytes within KILN_WORKSPACE_SLACK. Set by
     * kiln_codegen_module for exported code, whose callers are users' programs (malloc
     * gives 16 bytes); the JIT's caller is the driver, which allocates them itself. */
    bool check_args;
} kiln_compile_request;

/* The bytes an exported entry may skip to round its workspace up to 64 (check_args):
 * every workspace size in an exported header includes them. */
#define KILN_WORKSPACE_SLACK 64

/* The entry point, int NAME_forward(const float *params, void *workspace, inputs…,
 * outputs…): the parameter blob, the workspace (workspace_bytes, 64-byte aligned), then
 * one pointer per input (argument order) and per output (g->outputs order); inputs and
 * outputs must not overlap. With `train`:
 *     int NAME_train_step(float *params, float *optim, void *workspace, inputs…,
 *                         float lr, outputs…)
 * where optim is the optimizer blob (optim_bytes, zeroed before the first step) and the
 * graph's updates are written into params and optim before it returns (in place, or
 * copied after the last kernel). A failing kernel returns at once; in a training step
 * the kernels that can fail (gather, cross_entropy) run before every optimizer node, so
 * the blobs are then unchanged. It never allocates and returns one of these: */
enum {
    KILN_RC_OK = 0,
    KILN_RC_INDEX_RANGE = 1,   /* a gather index (token id) outside its table */
    KILN_RC_TARGET_RANGE = 2,  /* a cross_entropy target outside [0, classes) */
    KILN_RC_NULL_ARG = 3,      /* check_args: a NULL blob, workspace, input or output */
    KILN_RC_MISALIGNED = 4,    /* check_args: a blob not float-aligned */
};

/* CPU time of the compiling thread in each stage of kiln_compile_graph, ms: what the
 * compile costs on a quiet machine, where the wall clock of a busy one overstates it
 * (`kiln bench` prints them; docs/performance.md, "Compile time"). */
typedef struct kiln_compile_cpu {
    double plan;         /* the pass pipeline: simplify, fuse, memory plan (passes/pipeline.c) */
    double build;        /* LLVM IR of the kernels, the GEMMs and the entry (entry.c) */
    double optimize;     /* verifying, LLVM's optimisation pipelines, linking the two modules */
    double jit_setup;    /* the LLJIT, its symbol generators, adding the objects (or module) */
    double machine_code; /* the kernels' machine code (instruction selection, registers) and
                            the lookup that links it; a compile-cache hit: linking only */
    double gemm_thread;  /* the GEMM functions, optimised and compiled on a second thread
                            meanwhile (not in the stages above; jit.c) */
} kiln_compile_cpu;

/* ---- the compile cache (objcache.c) ------------------------------------------------ */

/* Turns the JIT's cache of machine code on, in directory dir (created with mode 0700 if
 * missing), or off (dir NULL), for the whole process; off until called. A compile whose
 * LLVM IR this kiln and this libLLVM compiled before for the same CPU then links the saved
 * objects instead of optimising and compiling (kiln_compiled.cached). Returns false with a
 * diagnostic, the cache off, when dir cannot be created, belongs to another user or is
 * writable by others, or kiln or libLLVM has no build ID. Call before any compile starts:
 * the setting is not synchronised. */
bool kiln_objcache_open(const char *dir, kiln_diags *d);
/* The directory in use, or NULL when the cache is off. */
const char *kiln_objcache_dir(void);

typedef struct kiln_compiled {
    void *jit;                     /* LLVMOrcLLJITRef, owns the machine code */
    void *entry;                   /* int NAME_forward(…), called through libffi */
    uint32_t n_args;               /* 2 + inputs + outputs; train: 4 + …; stateful: 3 + … */
    int n_kernels;                 /* kernel calls (the schedule's kernels, passes/fuse.c) */
    int n_functions;               /* distinct kernel functions (equal kernels are shared) */
    int64_t params_bytes;          /* the blob */
    int64_t *param_offsets;        /* per request parameter: byte offset in the blob */
    int64_t optim_bytes;           /* the optimizer blob (train), the state blob (stateful) */
    int64_t *state_offsets;        /* per request state: byte offset in the optimizer blob */
    int64_t workspace_bytes, unplanned_bytes, lower_bound_bytes;
    char *llvm_ir, *asm_text;      /* when asked for, else NULL (malloc'd) */
    char *dump;                    /* the pipeline's --dump-after text, or NULL (malloc'd) */
    double ms_build, ms_optimize, ms_jit;  /* compile time, by stage */
    kiln_compile_cpu cpu;          /* compile CPU time, by stage */
    bool cached;                   /* the machine code came from the compile cache */
    kiln_kernel_schedule sched;    /* the kernels, in call order (profile slot k = kernel k) */
    const kiln_graph *g;           /* the graph sched's node ids are in: req->g, or simplify's */
    kiln_graph *g_owned;           /* simplify's rebuilt graph (malloc'd), or NULL */
    char **kernel_fns;             /* with req->profile: per kernel, the LLVM function it calls */
    int32_t *ready_after;          /* with req->n_ready: per ready state, kiln_ready_after's position */
} kiln_compiled;

/* Where a request's ready states (req->ready_first, n_ready) are announced: after[i] is the
 * schedule position k after whose kernel the entry calls ready(ctx, i) — the last kernel
 * whose members or operands live in state i's memory — or n_kernels when its new value is
 * copied in after the last kernel (or nothing touches it). The entry calls them in order
 * of position, then of i. req is over the program's graph (states translated); entry.c,
 * kiln_compiled.ready_after and the exported header (header_split.c) use it. */
void kiln_ready_after(const kiln_graph *g, const kiln_compile_request *req, const kiln_memplan *p,
                      const kiln_kernel_schedule *s, int32_t *after);

/* With KILN_PERF=1 in the environment, the JIT links code through RuntimeDyld with LLVM's
 * perf JIT event listener, which writes jit-PID.dump (in $JITDUMPDIR, else
 * ~/.debug/jit/) so that `perf inject --jit` can name the kernels (docs/performance.md). */
bool kiln_compile_graph(const kiln_compile_request *req, kiln_compiled *out, kiln_diags *d);

/* Defines the runtime functions generated code calls (kiln_parallel_for,
 * kiln_profile_mark) in an LLJIT's main dylib, at their addresses in this process: the
 * process-symbol generator sees only
 * what the executable exports dynamically, which it does not. Takes an LLVMOrcLLJITRef;
 * returns an LLVMErrorRef (NULL on success). */
void *kiln_jit_define_runtime(void *jit);
void kiln_compiled_free(kiln_compiled *c);

/* The program compile would build (passes/pipeline.c: graph, id map, schedule, memory
 * plan), without building code. Free it with kiln_program_free. */
bool kiln_codegen_program(const kiln_compile_request *req, kiln_program *prog, kiln_diags *d);

/* Its memory plan and kernel count alone (`kiln check`). The plan's homes are indexed by
 * the program graph's ids (kiln_codegen_program to translate the request's). Free the
 * plan with kiln_memplan_free. */
bool kiln_codegen_plan(const kiln_compile_request *req, kiln_memplan *plan, int *n_kernels, kiln_diags *d);

/* The pipeline's --dump-after text for a request (req->pipeline), malloc'd; NULL with a
 * diagnostic when planning fails. */
char *kiln_codegen_dump(const kiln_compile_request *req, kiln_diags *d);

/* The optimised module of a request as LLVM IR text or assembly, malloc'd (--emit). */
char *kiln_codegen_emit(const kiln_compile_request *req, bool assembly, kiln_diags *d);

/* ---- one finished module (jit.c): where AOT and --emit start ------------------------ */

/* The optimised, linked module of a request (req->target required), in an LLVM context
 * of its own, with the program it was built for (its plan's node ids are the program's
 * graph's: translate the request's with prog.inputs/params/states or kiln_program_node).
 * Everything but the entry function is internal. kiln_module_free disposes module,
 * context and program. */
typedef struct kiln_module {
    kiln_cg cg;
    kiln_program prog;             /* schedule, plan and --dump-after text (passes/pipeline.c) */
    int n_kernels, n_functions;
    int32_t *ready_after;          /* with req->n_ready: per ready state, its ready call's position (malloc'd) */
} kiln_module;

bool kiln_codegen_module(const kiln_compile_request *req, kiln_module *out, kiln_diags *d);
void kiln_module_free(kiln_module *m);

/* ---- exported libraries: `kiln compile` (aot.c, header.c) --------------------------- */

typedef enum kiln_artifact { KILN_ARTIFACT_SO, KILN_ARTIFACT_OBJECT, KILN_ARTIFACT_ARCHIVE } kiln_artifact;

typedef struct kiln_aot_options {
    const char *out;              /* the artifact: OUT.so, OUT.o or OUT.a */
    kiln_artifact kind;
    const char *header;           /* OUT.h, or NULL for none */
    const char *source;           /* the model file, named in the header's comment */
    const char *runtime_archive;  /* the PIC archive defining kiln_params_load (kiln/params.h) */
    const char *cc, *objcopy, *ar;/* the tools: "cc", "objcopy", "ar" */
    /* `--train`: the training step to export beside the forward entry, or NULL. Its
     * graph is another one (forward + autodiff + optimizer) over the same parameters,
     * in the same blob order; it becomes a module of its own, merged into the artifact. */
    const kiln_compile_request *train;
    /* `--generate`: generation's two stateful entries (frontend.h kiln_decode_mode), both
     * or neither, over the same parameter blob and one KV-cache blob; each becomes a module
     * of its own, as the training step does. */
    const kiln_compile_request *prefill, *decode_step;
    /* `--train` too: the split step (driver/trainsplit.c), NAME_train_grad (a stateful
     * entry) and NAME_train_apply, both or neither, over the same parameter blob and one
     * split optimizer blob; its gradient area starts at state `first_grad` of
     * train_apply's list (or at the blob's end when there is none). */
    const kiln_compile_request *train_grad, *train_apply;
    uint32_t first_grad;
} kiln_aot_options;

/* Builds the exported library of a forward request (req->name: the symbol prefix NAME,
 * a C identifier; req->target required): NAME_forward, NAME_load, NAME_set_threads and
 * the table NAME_params (with opt->train, NAME_train_step too), nothing else global.
 * Every output appears complete or not at all (built beside its target, then renamed);
 * a failing tool is a diagnostic with its output. */
bool kiln_aot_write(const kiln_compile_request *req, const kiln_aot_options *opt, kiln_diags *d);
/* Removes the files and the temporary directory of the kiln_aot_write running on this
 * thread, if any: for the LLVM fatal-error handler (kiln_codegen_install_fatal_handler),
 * which ends the process while LLVM emits an object. Frees nothing. */
void kiln_aot_abandon(void);
/* An error inside LLVM (a fatal error, or an error diagnostic of a context kiln made):
 * kiln's bug. Removes what kiln_aot_abandon removes, prints reason as kiln's internal
 * error and aborts. */
_Noreturn void kiln_llvm_internal_error(const char *reason);

/* ---- libLLVM in the process (llvm_lib.c) -------------------------------------------- */

/* LLVM's version (`kiln --version`). */
void kiln_codegen_version(unsigned *major, unsigned *minor, unsigned *patch);
/* Makes LLVM's fatal errors kiln_llvm_internal_error; main calls it first. */
void kiln_codegen_install_fatal_handler(void);
/* An address inside LLVM's machine code: dladdr on it names the object holding that code
 * (libLLVM, or kiln itself when LLVM is linked in statically). */
const void *kiln_codegen_text_address(void);

/* The exported module as LLVM IR text or assembly, malloc'd (`kiln compile --emit`). */
char *kiln_aot_emit(const kiln_compile_request *req, bool assembly, kiln_diags *d);

/* The C header of an exported library (SPEC section 6), malloc'd. train/train_plan:
 * the exported training step and its plan, or NULL (then nothing about training). */
char *kiln_header_text(const kiln_compile_request *req, const kiln_memplan *plan, const kiln_compile_request *train,
                       const kiln_memplan *train_plan, const char *source);

/* text with a preprocessor check before its first NAME_ macro that stops the compile if
 * another header already defined one of them (model names whose macros collide); takes
 * ownership of text. */
char *kiln_header_with_clash_check(char *text, const char *name);

/* Appends printf-formatted text to the malloc'd string *s of *len bytes (header.c; the
 * header's parts build their text with it). */
void kiln_header_add(char **s, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* s upper-cased into out (at most size − 1 bytes, then '\0'): the macro prefix NAME_ of
 * every part of a header, and argument names in macros. ASCII letters only, whatever the
 * locale, so the parts always agree on the prefix. */
void kiln_header_upper(const char *s, char *out, size_t size);

/* The header's generation part (header_generate.c): sizes and prototypes of NAME_prefill
 * and NAME_decode_step, malloc'd. */
char *kiln_header_generate_text(const kiln_compile_request *prefill, const kiln_memplan *prefill_plan,
                                const kiln_compile_request *step, const kiln_memplan *step_plan);

/* The split step's gradients, for its header: per gradient (the area's order) its byte
 * offset in the optimizer blob and its floats; `order`, the gradients in the order
 * NAME_train_grad announces them (aot.c fills it from kiln_module.ready_after). */
typedef struct kiln_split_grads {
    uint32_t n;
    int64_t *offsets, *floats, *order;
} kiln_split_grads;

/* The header's split-step part (header_split.c): NAME_train_grad and NAME_train_apply,
 * the split optimizer blob, its gradient area and the gradients' ready order, malloc'd. */
char *kiln_header_split_text(const kiln_compile_request *grad, const kiln_memplan *grad_plan,
                             const kiln_compile_request *apply, const kiln_memplan *apply_plan,
                             int64_t grad_offset, const kiln_split_grads *grads);

/* Writes bytes to path atomically: a temporary beside it, then rename. */
bool kiln_write_file_atomic(const char *path, const void *data, size_t size, kiln_diags *d);

#endif
