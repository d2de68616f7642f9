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
/* A named CPU for AOT (--target-cpu/--target-features); NULL cpu = host. */
bool kiln_target_for(kiln_target *t, const char *cpu, const char *features, kiln_diags *d);
void kiln_target_free(kiln_target *t);
/* Sets target-cpu, target-features and prefer-vector-width on a function (every
 * function kiln emits gets them; see DESIGN.md "LLVM facts"). */
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
} kiln_compile_request;

/* The entry point, int NAME_forward(const float *params, void *workspace, inputs…,
 * outputs…): the parameter blob, the workspace (workspace_bytes, 64-byte aligned), then
 * one pointer per input (argument order) and per output (g->outputs order); inputs and
 * outputs must not overlap. It never allocates and returns one of these: */
enum {
    KILN_RC_OK = 0,
    KILN_RC_INDEX_RANGE = 1,   /* a gather index (token id) outside its table */
    KILN_RC_TARGET_RANGE = 2,  /* a cross_entropy target outside [0, classes) */
};

typedef struct kiln_compiled {
    void *jit;                     /* LLVMOrcLLJITRef, owns the machine code */
    void *entry;                   /* int NAME_forward(…), called through libffi */
    uint32_t n_args;               /* 2 + inputs + outputs */
    int n_kernels;                 /* kernel calls (one per computed node) */
    int n_functions;               /* distinct kernel functions (equal kernels are shared) */
    int64_t params_bytes;          /* the blob */
    int64_t *param_offsets;        /* per request parameter: byte offset in the blob */
    int64_t workspace_bytes, unplanned_bytes, lower_bound_bytes;
    char *llvm_ir, *asm_text;      /* when asked for, else NULL (malloc'd) */
    double ms_build, ms_optimize, ms_jit;  /* compile time, by stage */
} kiln_compiled;

bool kiln_compile_graph(const kiln_compile_request *req, kiln_compiled *out, kiln_diags *d);
void kiln_compiled_free(kiln_compiled *c);

/* The memory plan compile would use and its kernel count, without building code
 * (`kiln check`). Free the plan with kiln_memplan_free. */
bool kiln_codegen_plan(const kiln_compile_request *req, kiln_memplan *plan, int *n_kernels, kiln_diags *d);

/* The optimised module of a request as LLVM IR text or assembly, malloc'd (--emit). */
char *kiln_codegen_emit(const kiln_compile_request *req, bool assembly, kiln_diags *d);

#endif
