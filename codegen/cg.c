/* cg.c — one LLVM module being built, and the small IR-building helpers every
 * lowering uses: constants, element addressing, counted loops, loop nests with strided
 * offsets, intrinsic calls (exp, log and pow go to vmath.c).
 *
 * Design: kernels are emitted as scalar code over i64 offsets. Loops are top-tested
 * (`head: i = phi [begin, pre], [i+1, latch]; br i < end, body, exit`) with nuw/nsw
 * increments and inbounds addressing, which is the shape LLVM's loop passes expect;
 * accumulators are allocas in the entry block that SROA turns into phis. Float
 * operations carry only `contract` (and `reassoc` for reductions), see lower.h.
 */
#include <llvm-c/DebugInfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"
#include "vmath.h"

void kiln_llvm_internal_error(const char *reason)
{
    kiln_aot_abandon();
    fprintf(stderr, "kiln: internal error in LLVM: %s\n", reason);
    abort();
}

/* Without a handler, LLVM prints an error diagnostic (an inline-asm error, a backend's
 * "unsupported") and calls exit(1) behind kiln's back, leaving a half-built library's
 * directory. kiln checks its input before LLVM sees it, so such an error is kiln's bug
 * and ends as LLVM's fatal errors do. Warnings are printed as LLVM would; remarks and
 * notes are not asked for. */
static void llvm_diagnostic(LLVMDiagnosticInfoRef info, void *unused)
{
    (void)unused;
    LLVMDiagnosticSeverity severity = LLVMGetDiagInfoSeverity(info);
    if (severity != LLVMDSError && severity != LLVMDSWarning) return;
    char *text = LLVMGetDiagInfoDescription(info);
    if (severity == LLVMDSError) kiln_llvm_internal_error(text);
    fprintf(stderr, "kiln: warning from LLVM: %s\n", text);
    LLVMDisposeMessage(text);
}

void cg_init_in_context(kiln_cg *cg, const kiln_target *t, LLVMContextRef ctx, const char *module_name)
{
    memset(cg, 0, sizeof *cg);
    LLVMContextSetDiagnosticHandler(ctx, llvm_diagnostic, NULL);
    cg->ctx = ctx;
    cg->mod = LLVMModuleCreateWithNameInContext(module_name, ctx);
    cg->b = LLVMCreateBuilderInContext(ctx);
    cg->target = t;
    cg->t_void = LLVMVoidTypeInContext(ctx);
    cg->t_i1 = LLVMInt1TypeInContext(ctx);
    cg->t_i32 = LLVMInt32TypeInContext(ctx);
    cg->t_i64 = LLVMInt64TypeInContext(ctx);
    cg->t_f32 = LLVMFloatTypeInContext(ctx);
    cg->t_f64 = LLVMDoubleTypeInContext(ctx);
    cg->t_ptr = LLVMPointerTypeInContext(ctx, 0);
    LLVMSetTarget(cg->mod, t->triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(t->tm);
    LLVMSetModuleDataLayout(cg->mod, layout);
    LLVMDisposeTargetData(layout);
}

void kiln_cg_init(kiln_cg *cg, const kiln_target *t, const char *module_name)
{
    cg_init_in_context(cg, t, LLVMContextCreate(), module_name);
}

void kiln_cg_dispose(kiln_cg *cg)
{
    if (cg->b) LLVMDisposeBuilder(cg->b);
    if (cg->mod) LLVMDisposeModule(cg->mod);
    if (cg->ctx) LLVMContextDispose(cg->ctx);
    memset(cg, 0, sizeof *cg);
}

char *kiln_cg_text(kiln_cg *cg, bool assembly, kiln_diags *d)
{
    char *text = NULL;
    if (!assembly) {
        char *s = LLVMPrintModuleToString(cg->mod);
        text = strdup(s);
        KILN_ASSERT(text != NULL);
        LLVMDisposeMessage(s);
        return text;
    }
    LLVMModuleRef clone = LLVMCloneModule(cg->mod);
    char *err = NULL;
    LLVMMemoryBufferRef buf = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(cg->target->tm, clone, LLVMAssemblyFile, &err, &buf)) {
        kiln_diags_add(d, NULL, 0, 0, "codegen", "assembly emission failed: %s", err ? err : "?");
        LLVMDisposeMessage(err);
    } else {
        size_t n = LLVMGetBufferSize(buf);
        text = malloc(n + 1);
        KILN_ASSERT(text != NULL);
        memcpy(text, LLVMGetBufferStart(buf), n);
        text[n] = '\0';
        LLVMDisposeMemoryBuffer(buf);
    }
    LLVMDisposeModule(clone);
    return text;
}

/* ---- values ------------------------------------------------------------------------ */

LLVMValueRef cg_i64(kiln_cg *cg, int64_t v) { return LLVMConstInt(cg->t_i64, (unsigned long long)v, 1); }
LLVMValueRef cg_i32(kiln_cg *cg, int32_t v) { return LLVMConstInt(cg->t_i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef cg_f32(kiln_cg *cg, double v) { return LLVMConstReal(cg->t_f32, (double)(float)v); }
/* f32 or i32 */
static LLVMTypeRef cg_elem_type(kiln_cg *cg, kiln_dtype dt) { return dt == KILN_I32 ? cg->t_i32 : cg->t_f32; }

static void add_enum_attr(kiln_cg *cg, LLVMValueRef fn, LLVMAttributeIndex where, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    KILN_ASSERT(kind != 0);
    LLVMAddAttributeAtIndex(fn, where, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
}

LLVMValueRef cg_kernel_begin(kiln_cg *cg, const char *name, LLVMTypeRef ret, unsigned n_ptrs)
{
    LLVMTypeRef params[80];
    KILN_ASSERT(n_ptrs <= 80);
    for (unsigned i = 0; i < n_ptrs; i++) params[i] = cg->t_ptr;
    LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(ret, params, n_ptrs, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_enum_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    add_enum_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline");
    for (unsigned i = 0; i < n_ptrs; i++) {
        add_enum_attr(cg, fn, i + 1, "noalias");
        add_enum_attr(cg, fn, i + 1, "nocapture");
    }
    kiln_target_tag_function(cg->target, fn);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    return fn;
}

LLVMValueRef cg_gep(kiln_cg *cg, kiln_dtype dt, LLVMValueRef ptr, LLVMValueRef off)
{
    return LLVMBuildInBoundsGEP2(cg->b, cg_elem_type(cg, dt), ptr, &off, 1, "");
}

LLVMValueRef cg_load(kiln_cg *cg, kiln_dtype dt, LLVMValueRef ptr, LLVMValueRef off)
{
    LLVMValueRef v = LLVMBuildLoad2(cg->b, cg_elem_type(cg, dt), cg_gep(cg, dt, ptr, off), "");
    LLVMSetAlignment(v, KILN_ELEM_BYTES);
    return v;
}

void cg_store(kiln_cg *cg, kiln_dtype dt, LLVMValueRef ptr, LLVMValueRef off, LLVMValueRef v)
{
    LLVMValueRef s = LLVMBuildStore(cg->b, v, cg_gep(cg, dt, ptr, off));
    LLVMSetAlignment(s, KILN_ELEM_BYTES);
}

LLVMValueRef cg_byte_offset(kiln_cg *cg, LLVMValueRef ptr, int64_t bytes)
{
    if (bytes == 0) return ptr;
    LLVMValueRef off = cg_i64(cg, bytes);
    return LLVMBuildInBoundsGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), ptr, &off, 1, "");
}

LLVMValueRef cg_local(kiln_cg *cg, LLVMTypeRef ty, const char *name)
{
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(LLVMGetBasicBlockParent(here));
    LLVMBuilderRef b = LLVMCreateBuilderInContext(cg->ctx);
    LLVMValueRef first = LLVMGetFirstInstruction(entry);
    if (first) LLVMPositionBuilderBefore(b, first);
    else LLVMPositionBuilderAtEnd(b, entry);
    LLVMValueRef slot = LLVMBuildAlloca(b, ty, name);
    LLVMDisposeBuilder(b);
    return slot;
}

/* ---- float arithmetic ------------------------------------------------------------------ */

static LLVMValueRef with_flags(LLVMValueRef v, LLVMFastMathFlags f)
{
    if (LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v)) LLVMSetFastMathFlags(v, f);
    return v;
}

LLVMValueRef cg_fadd(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b)
{
    return with_flags(LLVMBuildFAdd(cg->b, a, b, ""), LLVMFastMathAllowContract);
}
LLVMValueRef cg_fsub(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b)
{
    return with_flags(LLVMBuildFSub(cg->b, a, b, ""), LLVMFastMathAllowContract);
}
LLVMValueRef cg_fmul(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b)
{
    return with_flags(LLVMBuildFMul(cg->b, a, b, ""), LLVMFastMathAllowContract);
}
LLVMValueRef cg_fdiv(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(cg->b, a, b, ""); }
/* A node's value inside a kernel of several nodes, made to round as the node's own kernel
 * rounds it (to memory): an fmul, fadd or fsub ending the node's formula is built again
 * without `contract` (LLVMSetFastMathFlags cannot clear a flag; the first one is left
 * dead), so that it cannot become an FMA with an operation of a node that reads it. The
 * node's own formula keeps its FMAs, as in its own kernel. */
LLVMValueRef cg_node_result(kiln_cg *cg, LLVMValueRef v)
{
    if (!LLVMIsAInstruction(v) || !LLVMCanValueUseFastMathFlags(v)) return v;
    LLVMOpcode op = LLVMGetInstructionOpcode(v);
    if (!(LLVMGetFastMathFlags(v) & LLVMFastMathAllowContract) || (op != LLVMFMul && op != LLVMFAdd && op != LLVMFSub))
        return v;
    return LLVMBuildBinOp(cg->b, op, LLVMGetOperand(v, 0), LLVMGetOperand(v, 1), "");
}
LLVMValueRef cg_fadd_reduce(kiln_cg *cg, LLVMValueRef acc, LLVMValueRef v)
{
    return with_flags(LLVMBuildFAdd(cg->b, acc, v, ""), LLVMFastMathAllowContract | LLVMFastMathAllowReassoc);
}

/* ---- calls ------------------------------------------------------------------------------- */

LLVMValueRef cg_intrinsic(kiln_cg *cg, const char *name, LLVMTypeRef *types, unsigned n_types,
                          LLVMValueRef *args, unsigned n_args)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    KILN_ASSERT(id != 0);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, types, n_types);
    LLVMTypeRef fty = LLVMIntrinsicGetType(cg->ctx, id, types, n_types);
    return LLVMBuildCall2(cg->b, fty, fn, args, n_args, "");
}

/* float or <N x float>: what vmath.c's emitters take */
static bool is_f32(LLVMValueRef x)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    if (LLVMGetTypeKind(t) == LLVMVectorTypeKind) t = LLVMGetElementType(t);
    return LLVMGetTypeKind(t) == LLVMFloatTypeKind;
}

/* The float functions LLVM would lower to scalar libm calls (and so never vectorise)
 * are emitted as vector-friendly IR by vmath.c instead, whoever asks. */
LLVMValueRef cg_intrinsic1(kiln_cg *cg, const char *name, LLVMValueRef x)
{
    if (is_f32(x)) {
        if (!strcmp(name, "llvm.exp")) return vm_exp(cg, x);
        if (!strcmp(name, "llvm.log")) return vm_log(cg, x);
    }
    LLVMTypeRef ty = LLVMTypeOf(x);
    return cg_intrinsic(cg, name, &ty, 1, &x, 1);
}

LLVMValueRef cg_intrinsic2(kiln_cg *cg, const char *name, LLVMValueRef x, LLVMValueRef y)
{
    if (is_f32(x) && !strcmp(name, "llvm.pow")) return vm_pow(cg, x, y);
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef args[2] = {x, y};
    return cg_intrinsic(cg, name, &ty, 1, args, 2);
}

/* Transposes the w×w block r[0..w) of <w x float> rows in registers: afterwards r[q][x]
 * is the old r[x][q] (w a power of two ≤ 16). The stage for h swaps bit h of the row
 * index with bit h of the lane index by trading h-wide lane blocks between rows x and x+h
 * (rows x with bit h clear); the log2(w) stages commute and together swap the whole
 * index. (The GEMM's transposing packer and attention's packing of queries use it.) */
void cg_transpose_square(LLVMBuilderRef b, LLVMTypeRef i32, int w, LLVMValueRef *r)
{
    for (int h = w / 2; h >= 1; h /= 2) {
        LLVMValueRef lo[16], hi[16]; /* lane masks into the pair (r[x], r[x+h]) */
        for (int l = 0; l < w; l++) {
            lo[l] = LLVMConstInt(i32, (unsigned long long)((l & h) ? w + l - h : l), 0);
            hi[l] = LLVMConstInt(i32, (unsigned long long)((l & h) ? w + l : l + h), 0);
        }
        LLVMValueRef mlo = LLVMConstVector(lo, (unsigned)w), mhi = LLVMConstVector(hi, (unsigned)w);
        for (int x = 0; x < w; x++) {
            if (x & h) continue;
            LLVMValueRef a = r[x], c = r[x + h];
            r[x] = LLVMBuildShuffleVector(b, a, c, mlo, "");
            r[x + h] = LLVMBuildShuffleVector(b, a, c, mhi, "");
        }
    }
}

void cg_memcpy(kiln_cg *cg, LLVMValueRef dst, LLVMValueRef src, int64_t bytes)
{
    if (bytes == 0) return;
    LLVMBuildMemCpy(cg->b, dst, KILN_ELEM_BYTES, src, KILN_ELEM_BYTES, cg_i64(cg, bytes));
}

/* ---- control flow ----------------------------------------------------------------------- */

static LLVMValueRef current_fn(kiln_cg *cg) { return LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b)); }

void cg_loop_begin(kiln_cg *cg, cg_loop *l, LLVMValueRef begin, LLVMValueRef end, const char *name)
{
    LLVMValueRef fn = current_fn(cg);
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    l->head = LLVMAppendBasicBlockInContext(cg->ctx, fn, name);
    l->body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "body");
    l->exit = LLVMAppendBasicBlockInContext(cg->ctx, fn, "exit");
    LLVMBuildBr(cg->b, l->head);
    LLVMPositionBuilderAtEnd(cg->b, l->head);
    l->phi = LLVMBuildPhi(cg->b, cg->t_i64, name);
    LLVMAddIncoming(l->phi, &begin, &pre, 1);
    l->i = l->phi;
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, l->phi, end, ""), l->body, l->exit);
    LLVMPositionBuilderAtEnd(cg->b, l->body);
}

/* !llvm.loop !{self, !{"llvm.loop.unroll.disable"}} on a back edge. Why: shapes are
 * constants, so O3 would fully unroll every short loop (and the vectorised ones after
 * vectorisation), multiplying code size and compile time for little gain on loops that
 * are memory-bound; vectorisation and interleaving are unaffected. */
static void no_unroll(kiln_cg *cg, LLVMValueRef branch)
{
    LLVMMetadataRef tmp = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef disable = LLVMMDStringInContext2(cg->ctx, "llvm.loop.unroll.disable", 24);
    LLVMMetadataRef ops[2] = {tmp, LLVMMDNodeInContext2(cg->ctx, &disable, 1)};
    LLVMMetadataRef id = LLVMMDNodeInContext2(cg->ctx, ops, 2);
    LLVMMetadataReplaceAllUsesWith(tmp, id); /* the loop id refers to itself */
    LLVMSetMetadata(branch, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), LLVMMetadataAsValue(cg->ctx, id));
}

void cg_loop_end(kiln_cg *cg, cg_loop *l)
{
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->phi, cg_i64(cg, 1), "");
    no_unroll(cg, LLVMBuildBr(cg->b, l->head));
    LLVMAddIncoming(l->phi, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

void cg_loop_end_interleaved(kiln_cg *cg, cg_loop *l, int count)
{
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->phi, cg_i64(cg, 1), "");
    LLVMValueRef br = LLVMBuildBr(cg->b, l->head);
    /* !llvm.loop !{self, unroll.disable, !{"llvm.loop.interleave.count", i32 count}} */
    LLVMMetadataRef tmp = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef disable = LLVMMDStringInContext2(cg->ctx, "llvm.loop.unroll.disable", 24);
    LLVMMetadataRef il[2] = {LLVMMDStringInContext2(cg->ctx, "llvm.loop.interleave.count", 26),
                             LLVMValueAsMetadata(cg_i32(cg, count))};
    LLVMMetadataRef ops[3] = {tmp, LLVMMDNodeInContext2(cg->ctx, &disable, 1), LLVMMDNodeInContext2(cg->ctx, il, 2)};
    LLVMMetadataRef id = LLVMMDNodeInContext2(cg->ctx, ops, 3);
    LLVMMetadataReplaceAllUsesWith(tmp, id);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), LLVMMetadataAsValue(cg->ctx, id));
    LLVMAddIncoming(l->phi, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

void cg_if_begin(kiln_cg *cg, cg_if *f, LLVMValueRef cond)
{
    LLVMValueRef fn = current_fn(cg);
    f->then = LLVMAppendBasicBlockInContext(cg->ctx, fn, "then");
    f->join = LLVMAppendBasicBlockInContext(cg->ctx, fn, "join");
    LLVMBuildCondBr(cg->b, cond, f->then, f->join);
    LLVMPositionBuilderAtEnd(cg->b, f->then);
}

void cg_if_end(kiln_cg *cg, cg_if *f)
{
    LLVMBuildBr(cg->b, f->join);
    LLVMPositionBuilderAtEnd(cg->b, f->join);
}

void cg_return_if(kiln_cg *cg, LLVMValueRef cond, int code)
{
    LLVMValueRef fn = current_fn(cg);
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(cg->ctx, fn, "fail");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(cg->ctx, fn, "ok");
    LLVMBuildCondBr(cg->b, cond, fail, next);
    LLVMPositionBuilderAtEnd(cg->b, fail);
    LLVMBuildRet(cg->b, cg_i32(cg, code));
    LLVMPositionBuilderAtEnd(cg->b, next);
}

void cg_return_if_index_outside(kiln_cg *cg, LLVMValueRef ids, int64_t n_ids, int64_t n)
{
    LLVMValueRef bad = cg_local(cg, cg->t_i1, "bad");
    LLVMBuildStore(cg->b, LLVMConstInt(cg->t_i1, 0, 0), bad);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, n_ids), "j");
    LLVMValueRef id = LLVMBuildSExt(cg->b, cg_load(cg, KILN_I32, ids, l.i), cg->t_i64, "");
    LLVMValueRef out_of_range = LLVMBuildICmp(cg->b, LLVMIntUGE, id, cg_i64(cg, n), "");
    LLVMBuildStore(cg->b, LLVMBuildOr(cg->b, LLVMBuildLoad2(cg->b, cg->t_i1, bad, ""), out_of_range, ""), bad);
    cg_loop_end(cg, &l);
    cg_return_if(cg, LLVMBuildLoad2(cg->b, cg->t_i1, bad, ""), KILN_RC_INDEX_RANGE);
}

/* ---- loop nests ------------------------------------------------------------------------- */

void cg_nest_begin(kiln_cg *cg, cg_nest *n, int rank, const int64_t *dims, int n_ops,
                   const int64_t stride[][KILN_MAX_RANK], const LLVMValueRef *base)
{
    KILN_ASSERT(rank >= 0 && rank <= KILN_MAX_RANK && n_ops <= CG_MAX_OPS);
    n->rank = rank;
    n->n_ops = n_ops;
    for (int k = 0; k < n_ops; k++) n->off[k] = base ? base[k] : cg_i64(cg, 0);
    for (int d = 0; d < rank; d++) {
        cg_loop_begin(cg, &n->loop[d], cg_i64(cg, 0), cg_i64(cg, dims[d]), "i");
        for (int k = 0; k < n_ops; k++) {
            if (stride[k][d] == 0) continue;
            LLVMValueRef step = LLVMBuildNSWMul(cg->b, n->loop[d].i, cg_i64(cg, stride[k][d]), "");
            n->off[k] = LLVMBuildNSWAdd(cg->b, n->off[k], step, "");
        }
    }
}

void cg_nest_end(kiln_cg *cg, cg_nest *n)
{
    for (int d = n->rank - 1; d >= 0; d--) cg_loop_end(cg, &n->loop[d]);
}

int cg_collapse_dims(int rank, int64_t *dims, int n_ops, int64_t stride[][KILN_MAX_RANK])
{
    /* drop size-1 dims (their index is always 0) */
    int r = 0;
    for (int d = 0; d < rank; d++) {
        if (dims[d] == 1) continue;
        dims[r] = dims[d];
        for (int k = 0; k < n_ops; k++) stride[k][r] = stride[k][d];
        r++;
    }
    /* merge d into d+1 where every operand is contiguous across the two */
    int out = 0;
    for (int d = 0; d < r; d++) {
        if (out > 0) {
            bool merge = true;
            for (int k = 0; k < n_ops && merge; k++) merge = stride[k][out - 1] == stride[k][d] * dims[d];
            if (merge) {
                dims[out - 1] *= dims[d];
                for (int k = 0; k < n_ops; k++) stride[k][out - 1] = stride[k][d];
                continue;
            }
        }
        dims[out] = dims[d];
        for (int k = 0; k < n_ops; k++) stride[k][out] = stride[k][d];
        out++;
    }
    return out;
}

void cg_row_major_strides(const kiln_type *t, int64_t *stride)
{
    int64_t s = 1;
    for (int d = t->rank - 1; d >= 0; d--) {
        stride[d] = s;
        s *= t->dims[d];
    }
}

void cg_bcast_strides(const kiln_type *t, int rank, int64_t *stride)
{
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int k = d - (rank - t->rank);
        stride[d] = (k < 0 || t->dims[k] == 1) ? 0 : s;
        if (k >= 0) s *= t->dims[k];
    }
}

int64_t cg_span(const int64_t *dims, int from, int to)
{
    int64_t n = 1;
    for (int d = from; d < to; d++) n *= dims[d];
    return n;
}

/* ---- threads -------------------------------------------------------------------------- */

/* How many parts cg_parallel_for splits into: 1 (inline) or n_items. */
static int64_t cg_parallel_parts(int64_t n_items, int64_t work_per_item)
{
    /* below ~64k element-operations a kernel is cheaper than waking the pool (a few
     * microseconds); above it, split into at most KILN_CG_MAX_PARTS items so that every
     * thread count up to that divides the work evenly enough */
    if (n_items <= 1 || n_items * (work_per_item > 0 ? work_per_item : 1) < KILN_CG_PARALLEL_MIN_WORK) return 1;
    return n_items;
}

void cg_parallel_for(kiln_cg *cg, const char *name, int64_t n_items, int64_t work_per_item,
                     const LLVMValueRef *vals, unsigned n_vals, cg_par_body body, void *user)
{
    KILN_ASSERT(n_vals <= 64);
    if (n_items <= 0) return;
    if (cg_parallel_parts(n_items, work_per_item) <= 1) {
        body(cg, user, cg_i64(cg, 0), cg_i64(cg, n_items), vals);
        return;
    }
    /* the caller's function and position, to come back to */
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
    LLVMValueRef caller = LLVMGetBasicBlockParent(here);

    /* void NAME(ptr ctx, i64 begin, i64 end): the values reloaded from ctx, then the body */
    char fname[256];
    snprintf(fname, sizeof fname, "%s.%s.part", LLVMGetValueName2(caller, &(size_t){0}), name);
    LLVMTypeRef params[3] = {cg->t_ptr, cg->t_i64, cg->t_i64};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, fname, LLVMFunctionType(cg->t_void, params, 3, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_enum_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
    add_enum_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline");
    kiln_target_tag_function(cg->target, fn);
    /* The body goes into void NAME.body(ptr noalias v0, …, i64 begin, i64 end),
     * always inlined into the part: pointers loaded from ctx would carry no alias facts,
     * while noalias parameters (true: the values are the kernel's own noalias
     * parameters or buffers it owns) become scoped alias metadata on inlining, so loops
     * vectorise without runtime overlap checks and accumulators stay in registers. */
    char bname[256];
    snprintf(bname, sizeof bname, "%s.%s.body", LLVMGetValueName2(caller, &(size_t){0}), name);
    LLVMTypeRef bparams[66];
    for (unsigned i = 0; i < n_vals; i++) bparams[i] = cg->t_ptr;
    bparams[n_vals] = bparams[n_vals + 1] = cg->t_i64;
    LLVMValueRef bfn = LLVMAddFunction(cg->mod, bname, LLVMFunctionType(cg->t_void, bparams, n_vals + 2, 0));
    LLVMSetLinkage(bfn, LLVMInternalLinkage);
    add_enum_attr(cg, bfn, LLVMAttributeFunctionIndex, "nounwind");
    add_enum_attr(cg, bfn, LLVMAttributeFunctionIndex, "alwaysinline");
    for (unsigned i = 0; i < n_vals; i++) {
        add_enum_attr(cg, bfn, i + 1, "noalias");
        add_enum_attr(cg, bfn, i + 1, "nocapture");
    }
    kiln_target_tag_function(cg->target, bfn);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, bfn, "entry"));
    LLVMValueRef inner[66];
    for (unsigned i = 0; i < n_vals; i++) inner[i] = LLVMGetParam(bfn, i);
    body(cg, user, LLVMGetParam(bfn, n_vals), LLVMGetParam(bfn, n_vals + 1), inner);
    LLVMBuildRetVoid(cg->b);

    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    LLVMTypeRef ctx_ty = LLVMArrayType2(cg->t_ptr, n_vals ? n_vals : 1);
    for (unsigned i = 0; i < n_vals; i++) {
        LLVMValueRef idx[2] = {cg_i64(cg, 0), cg_i64(cg, i)};
        LLVMValueRef slot = LLVMBuildInBoundsGEP2(cg->b, ctx_ty, LLVMGetParam(fn, 0), idx, 2, "");
        inner[i] = LLVMBuildLoad2(cg->b, cg->t_ptr, slot, "");
    }
    inner[n_vals] = LLVMGetParam(fn, 1);
    inner[n_vals + 1] = LLVMGetParam(fn, 2);
    LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(bfn), bfn, inner, n_vals + 2, "");
    LLVMBuildRetVoid(cg->b);

    /* back in the caller: kiln_parallel_for(NAME, &{vals…}, n_items) */
    LLVMPositionBuilderAtEnd(cg->b, here);
    LLVMValueRef ctx = cg_local(cg, ctx_ty, "par.ctx");
    for (unsigned i = 0; i < n_vals; i++) {
        LLVMValueRef idx[2] = {cg_i64(cg, 0), cg_i64(cg, i)};
        LLVMBuildStore(cg->b, vals[i], LLVMBuildInBoundsGEP2(cg->b, ctx_ty, ctx, idx, 2, ""));
    }
    LLVMTypeRef pf_params[3] = {cg->t_ptr, cg->t_ptr, cg->t_i64};
    LLVMTypeRef pf_ty = LLVMFunctionType(cg->t_void, pf_params, 3, 0);
    LLVMValueRef pf = LLVMGetNamedFunction(cg->mod, "kiln_parallel_for");
    if (!pf) pf = LLVMAddFunction(cg->mod, "kiln_parallel_for", pf_ty);
    LLVMValueRef args[3] = {fn, ctx, cg_i64(cg, n_items)};
    LLVMBuildCall2(cg->b, pf_ty, pf, args, 3, "");
}

/* cg_parallel_nest: the nest's outermost dim is split across threads (a rank-1 nest in
 * chunks of CG_PAR_CHUNK elements); each part runs the rest of the nest itself. */
#define CG_PAR_CHUNK 4096

typedef struct par_nest {
    int rank, n_ops;
    const int64_t *dims;
    const int64_t (*stride)[KILN_MAX_RANK];
    cg_nest_body body;
    void *user;
} par_nest;

static void par_nest_body(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals)
{
    par_nest *p = user;
    LLVMValueRef off[CG_MAX_OPS];
    cg_loop outer;
    if (p->rank == 1) { /* elements [begin·C, min(end·C, n)) */
        LLVMValueRef lo = LLVMBuildNSWMul(cg->b, begin, cg_i64(cg, CG_PAR_CHUNK), "");
        LLVMValueRef hi = LLVMBuildNSWMul(cg->b, end, cg_i64(cg, CG_PAR_CHUNK), "");
        LLVMValueRef n = cg_i64(cg, p->dims[0]);
        hi = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, hi, n, ""), hi, n, "");
        cg_loop_begin(cg, &outer, lo, hi, "i");
        for (int k = 0; k < p->n_ops; k++)
            off[k] = p->stride[k][0] ? LLVMBuildNSWMul(cg->b, outer.i, cg_i64(cg, p->stride[k][0]), "") : cg_i64(cg, 0);
        p->body(cg, p->user, vals, off);
        cg_loop_end(cg, &outer);
        return;
    }
    cg_loop_begin(cg, &outer, begin, end, "i");
    for (int k = 0; k < p->n_ops; k++)
        off[k] = p->stride[k][0] ? LLVMBuildNSWMul(cg->b, outer.i, cg_i64(cg, p->stride[k][0]), "") : cg_i64(cg, 0);
    int64_t inner_stride[CG_MAX_OPS][KILN_MAX_RANK];
    for (int k = 0; k < p->n_ops; k++)
        for (int d = 1; d < p->rank; d++) inner_stride[k][d - 1] = p->stride[k][d];
    cg_nest nest;
    cg_nest_begin(cg, &nest, p->rank - 1, p->dims + 1, p->n_ops, (const int64_t(*)[KILN_MAX_RANK])inner_stride, off);
    p->body(cg, p->user, vals, nest.off);
    cg_nest_end(cg, &nest);
    cg_loop_end(cg, &outer);
}

void cg_parallel_nest(kiln_cg *cg, const char *name, int rank, const int64_t *dims, int n_ops,
                      const int64_t stride[][KILN_MAX_RANK], int64_t work_per_elem, const LLVMValueRef *vals,
                      unsigned n_vals, cg_nest_body body, void *user)
{
    KILN_ASSERT(n_ops <= CG_MAX_OPS);
    if (rank == 0) {
        LLVMValueRef off[CG_MAX_OPS];
        for (int k = 0; k < n_ops; k++) off[k] = cg_i64(cg, 0);
        body(cg, user, vals, off);
        return;
    }
    int64_t inner = 1;
    for (int d = 1; d < rank; d++) inner *= dims[d];
    if (dims[0] == 0 || inner == 0) return;
    par_nest p = {rank, n_ops, dims, stride, body, user};
    int64_t items = rank == 1 ? (dims[0] + CG_PAR_CHUNK - 1) / CG_PAR_CHUNK : dims[0];
    int64_t per_item = (rank == 1 ? CG_PAR_CHUNK : inner) * (work_per_elem > 0 ? work_per_elem : 1);
    cg_parallel_for(cg, name, items, per_item, vals, n_vals, par_nest_body, &p);
}
