/* lower_elementwise.c — elementwise ops, cast, constant and iota.
 *
 * Design: one loop nest over the result with a constant stride per operand (0 on the
 * dims an operand broadcasts along), simplified by cg_collapse_dims so that the
 * innermost loop is as long and as contiguous as the shapes allow; the vectoriser then
 * makes it <vector_floats x float> code. The body loads each operand, applies the op's
 * scalar function from `f32_ops` / `i32_ops` (arrays indexed by kiln_op), and stores.
 *
 * Accuracy contract: results stay within a few ulp of the interpreter (which computes
 * in double and rounds once). So only `contract` is allowed; exp, log, pow, tanh,
 * sigmoid, erf and erfc are vmath.c's inline code with a stated bound of 1–3 ulp each
 * (vmath.h), which the loop vectoriser widens; and functions are written in the forms
 * that do not cancel: gelu as ½·x·erfc(−x/√2), gelu_tanh as x/(1 + e^−2u) (= ½·x·(1 + tanh u)).
 * i32 arithmetic wraps (plain add/sub/mul without nsw); f32 → i32 is llvm.fptosi.sat
 * (truncation toward zero, NaN → 0, saturating), exactly the interpreter's rule.
 * maximum/minimum propagate NaN, as numpy and the interpreter do.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"
#include "vmath.h"

typedef LLVMValueRef (*scalar_fn)(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x);

/* ---- f32 --------------------------------------------------------------------------------- */

static LLVMValueRef f_add(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fadd(cg, x[0], x[1]); }
static LLVMValueRef f_sub(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fsub(cg, x[0], x[1]); }
static LLVMValueRef f_mul(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fmul(cg, x[0], x[1]); }
static LLVMValueRef f_div(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fdiv(cg, x[0], x[1]); }

/* x > y ? x : y, but a NaN in either operand wins (x's first) */
static LLVMValueRef nan_or(kiln_cg *cg, LLVMValueRef x, LLVMValueRef y, LLVMValueRef r)
{
    r = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealUNO, y, y, ""), y, r, "");
    return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealUNO, x, x, ""), x, r, "");
}
static LLVMValueRef f_maximum(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    LLVMValueRef r = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOGT, x[0], x[1], ""), x[0], x[1], "");
    return nan_or(cg, x[0], x[1], r);
}
static LLVMValueRef f_minimum(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    LLVMValueRef r = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOLT, x[0], x[1], ""), x[0], x[1], "");
    return nan_or(cg, x[0], x[1], r);
}
static LLVMValueRef f_pow(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_pow(cg, x[0], x[1]); }

static LLVMValueRef compare(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x, LLVMRealPredicate fp, LLVMIntPredicate ip)
{
    LLVMValueRef c = LLVMGetTypeKind(LLVMTypeOf(x[0])) == LLVMFloatTypeKind ? LLVMBuildFCmp(cg->b, fp, x[0], x[1], "")
                                                                            : LLVMBuildICmp(cg->b, ip, x[0], x[1], "");
    return LLVMBuildSelect(cg->b, c, cg_f32(cg, 1.0), cg_f32(cg, 0.0), "");
}
static LLVMValueRef f_lt(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return compare(cg, n, x, LLVMRealOLT, LLVMIntSLT); }
static LLVMValueRef f_gt(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return compare(cg, n, x, LLVMRealOGT, LLVMIntSGT); }
static LLVMValueRef f_eq(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return compare(cg, n, x, LLVMRealOEQ, LLVMIntEQ); }

/* cond ≠ 0 (NaN counts as true, as in numpy); either dtype, either branch dtype */
static LLVMValueRef f_where(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    LLVMValueRef c = LLVMGetTypeKind(LLVMTypeOf(x[0])) == LLVMFloatTypeKind
                         ? LLVMBuildFCmp(cg->b, LLVMRealUNE, x[0], cg_f32(cg, 0.0), "")
                         : LLVMBuildICmp(cg->b, LLVMIntNE, x[0], cg_i32(cg, 0), "");
    return LLVMBuildSelect(cg->b, c, x[1], x[2], "");
}

static LLVMValueRef f_neg(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return LLVMBuildFNeg(cg->b, x[0], ""); }
static LLVMValueRef f_exp(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_exp(cg, x[0]); }
static LLVMValueRef f_log(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_log(cg, x[0]); }
static LLVMValueRef f_sqrt(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_intrinsic1(cg, "llvm.sqrt", x[0]); }
static LLVMValueRef f_rsqrt(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    return cg_fdiv(cg, cg_f32(cg, 1.0), cg_intrinsic1(cg, "llvm.sqrt", x[0]));
}
static LLVMValueRef f_abs(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_intrinsic1(cg, "llvm.fabs", x[0]); }
static LLVMValueRef f_square(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fmul(cg, x[0], x[0]); }
static LLVMValueRef f_recip(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fdiv(cg, cg_f32(cg, 1.0), x[0]); }
static LLVMValueRef f_tanh(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_tanh(cg, x[0]); }

/* σ(x) from e = exp(−|x|) ≤ 1, so nothing overflows (vm_sigmoid) */
static LLVMValueRef f_sigmoid(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_sigmoid(cg, x[0]); }
static LLVMValueRef f_silu(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_fmul(cg, x[0], vm_sigmoid(cg, x[0])); }

/* x < 0 ? 0 : x — NaN passes through */
static LLVMValueRef f_relu(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    LLVMValueRef neg = LLVMBuildFCmp(cg->b, LLVMRealOLT, x[0], cg_f32(cg, 0.0), "");
    return LLVMBuildSelect(cg->b, neg, cg_f32(cg, 0.0), x[0], "");
}

/* ½·x·(1 + erf(x/√2)) = ½·x·erfc(−x/√2): no cancellation for negative x */
static LLVMValueRef f_gelu(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    LLVMValueRef t = vm_erfc(cg, cg_fmul(cg, x[0], cg_f32(cg, -M_SQRT1_2)));
    return cg_fmul(cg, cg_fmul(cg, cg_f32(cg, 0.5), x[0]), t);
}

/* ½·x·(1 + tanh u) with u = √(2/π)·(x + 0.044715·x³), as x/(1 + e^−2u) (vm_gelu_tanh:
 * the GEMM epilogue's formula too) */
static LLVMValueRef f_gelu_tanh(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_gelu_tanh(cg, x[0]); }

static LLVMValueRef f_erf(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return vm_erf(cg, x[0]); }

/* x·by in double, rounded once: `by` (a double attribute) is often not an f32 */
static LLVMValueRef f_scale(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    LLVMValueRef wide = LLVMBuildFPExt(cg->b, x[0], cg->t_f64, "");
    LLVMValueRef prod = LLVMBuildFMul(cg->b, wide, LLVMConstReal(cg->t_f64, n->attrs.scalar), "");
    return LLVMBuildFPTrunc(cg->b, prod, cg->t_f32, "");
}

/* inference: dropout is the identity (a training step's dropout drops, with the masks
 * of kiln_interp_dropout_keep: lower_dropout.c) */
static LLVMValueRef f_identity(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return x[0]; }

static LLVMValueRef f_cast(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    bool from_f32 = LLVMGetTypeKind(LLVMTypeOf(x[0])) == LLVMFloatTypeKind;
    if (from_f32 == (n->type.dtype == KILN_F32)) return x[0];
    if (!from_f32) return LLVMBuildSIToFP(cg->b, x[0], cg->t_f32, "");
    LLVMTypeRef types[2] = {cg->t_i32, cg->t_f32};
    return cg_intrinsic(cg, "llvm.fptosi.sat", types, 2, x, 1);
}

/* ---- i32: wrapping two's complement ------------------------------------------------------- */

static LLVMValueRef i_add(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return LLVMBuildAdd(cg->b, x[0], x[1], ""); }
static LLVMValueRef i_sub(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return LLVMBuildSub(cg->b, x[0], x[1], ""); }
static LLVMValueRef i_mul(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return LLVMBuildMul(cg->b, x[0], x[1], ""); }
static LLVMValueRef i_maximum(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_intrinsic2(cg, "llvm.smax", x[0], x[1]); }
static LLVMValueRef i_minimum(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return cg_intrinsic2(cg, "llvm.smin", x[0], x[1]); }
static LLVMValueRef i_neg(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x) { return LLVMBuildSub(cg->b, cg_i32(cg, 0), x[0], ""); }
static LLVMValueRef i_abs(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    /* llvm.abs with is_int_min_poison = false: |INT32_MIN| wraps to itself */
    LLVMValueRef args[2] = {x[0], LLVMConstInt(cg->t_i1, 0, 0)};
    return cg_intrinsic(cg, "llvm.abs", &cg->t_i32, 1, args, 2);
}

/* Keyed by op; an i32-result op uses i32_ops (the shape rules decide which exist).
 * Comparisons, where and cast handle both operand dtypes and sit in f32_ops. */
static const scalar_fn f32_ops[KILN_OP_COUNT] = {
    [KILN_OP_ADD] = f_add,         [KILN_OP_SUB] = f_sub,       [KILN_OP_MUL] = f_mul,
    [KILN_OP_DIV] = f_div,         [KILN_OP_MAXIMUM] = f_maximum, [KILN_OP_MINIMUM] = f_minimum,
    [KILN_OP_POW] = f_pow,         [KILN_OP_LT] = f_lt,         [KILN_OP_GT] = f_gt,
    [KILN_OP_EQ] = f_eq,           [KILN_OP_WHERE] = f_where,   [KILN_OP_NEG] = f_neg,
    [KILN_OP_EXP] = f_exp,         [KILN_OP_LOG] = f_log,       [KILN_OP_SQRT] = f_sqrt,
    [KILN_OP_RSQRT] = f_rsqrt,     [KILN_OP_ABS] = f_abs,       [KILN_OP_SQUARE] = f_square,
    [KILN_OP_RECIP] = f_recip,     [KILN_OP_TANH] = f_tanh,     [KILN_OP_SIGMOID] = f_sigmoid,
    [KILN_OP_RELU] = f_relu,       [KILN_OP_SILU] = f_silu,     [KILN_OP_GELU] = f_gelu,
    [KILN_OP_GELU_TANH] = f_gelu_tanh, [KILN_OP_SCALE] = f_scale, [KILN_OP_CAST] = f_cast,
    [KILN_OP_DROPOUT] = f_identity, [KILN_OP_ERF] = f_erf,
};

static const scalar_fn i32_ops[KILN_OP_COUNT] = {
    [KILN_OP_ADD] = i_add,         [KILN_OP_SUB] = i_sub,       [KILN_OP_MUL] = i_mul,
    [KILN_OP_MAXIMUM] = i_maximum, [KILN_OP_MINIMUM] = i_minimum, [KILN_OP_NEG] = i_neg,
    [KILN_OP_ABS] = i_abs,         [KILN_OP_WHERE] = f_where,   [KILN_OP_CAST] = f_cast,
};

typedef struct elementwise_body {
    lower_ctx *c;
    scalar_fn f;
} elementwise_body;

/* out[off0] = f(in0[off1], …): vals are out, in0, … */
static void emit_elementwise(kiln_cg *cg, void *user, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    elementwise_body *eb = user;
    const kiln_node *n = eb->c->node;
    LLVMValueRef x[3];
    for (uint32_t i = 0; i < n->n_in; i++) x[i] = cg_load(cg, lower_in_type(eb->c, i)->dtype, vals[1 + i], off[1 + i]);
    cg_store(cg, n->type.dtype, vals[0], off[0], eb->f(cg, n, x));
}

LLVMValueRef lower_scalar_op(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x)
{
    bool i32_math = n->type.dtype == KILN_I32 && n->op != KILN_OP_CAST;
    scalar_fn f = i32_math ? i32_ops[n->op] : f32_ops[n->op];
    KILN_ASSERT(f != NULL);
    return f(cg, n, x);
}

void lower_elementwise(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_node *n = c->node;
    const kiln_type *ot = &n->type;
    if (kiln_type_numel(ot) == 0) return;
    /* operand 0 is the result, 1.. the inputs */
    int n_ops = 1 + (int)n->n_in;
    KILN_ASSERT(n_ops <= CG_MAX_OPS);
    int64_t dims[KILN_MAX_RANK], stride[CG_MAX_OPS][KILN_MAX_RANK];
    for (int d = 0; d < ot->rank; d++) dims[d] = ot->dims[d];
    cg_row_major_strides(ot, stride[0]);
    for (uint32_t i = 0; i < n->n_in; i++) cg_bcast_strides(lower_in_type(c, i), ot->rank, stride[1 + i]);
    int rank = cg_collapse_dims(ot->rank, dims, n_ops, stride);

    /* an i32 result takes the i32 function, except cast, which reads its own operand */
    bool i32_math = ot->dtype == KILN_I32 && n->op != KILN_OP_CAST;
    scalar_fn f = i32_math ? i32_ops[n->op] : f32_ops[n->op];
    KILN_ASSERT(f != NULL);

    LLVMValueRef vals[CG_MAX_OPS] = {c->out};
    for (uint32_t i = 0; i < n->n_in; i++) vals[1 + i] = c->in[i];
    elementwise_body eb = {c, f};
    cg_parallel_nest(cg, "ew", rank, dims, n_ops, stride, 1, vals, (unsigned)n_ops, emit_elementwise, &eb);
}

/* ---- sources ----------------------------------------------------------------------------- */

LLVMValueRef lower_constant_global(kiln_cg *cg, const kiln_graph *g, uint32_t id)
{
    char name[32];
    snprintf(name, sizeof name, "c%u", id);
    LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
    if (gv) return gv;
    const kiln_node *n = &g->nodes[id];
    int64_t numel = kiln_type_numel(&n->type), bytes = numel * KILN_ELEM_BYTES;
    KILN_ASSERT(n->attrs.n_values == numel || n->attrs.n_values == 1);
    /* raw bytes: one ConstantDataArray, cheap even for large constants; a small splat
     * (passes.h, kiln_constant_is_global) is spelled out */
    const void *data = n->attrs.values;
    char *spelled = NULL;
    if (n->attrs.n_values != numel) {
        spelled = malloc((size_t)(bytes ? bytes : 1));
        KILN_ASSERT(spelled != NULL);
        for (int64_t i = 0; i < numel; i++) memcpy(spelled + i * KILN_ELEM_BYTES, n->attrs.values, KILN_ELEM_BYTES);
        data = spelled;
    }
    LLVMValueRef init = bytes ? LLVMConstStringInContext2(cg->ctx, data, (size_t)bytes, 1)
                              : LLVMConstNull(LLVMArrayType2(LLVMInt8TypeInContext(cg->ctx), 0));
    free(spelled);
    gv = LLVMAddGlobal(cg->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMInternalLinkage);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    LLVMSetAlignment(gv, 64);
    return gv;
}

/* A constant that needs a kernel: a splat (filled in place) or full data that must land
 * in an output buffer (copied from its global). */
void lower_constant(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_node *n = c->node;
    int64_t numel = kiln_type_numel(&n->type);
    if (numel == 0) return;
    if (n->attrs.n_values == numel) {
        cg_memcpy(cg, c->out, lower_constant_global(cg, c->g, c->id), numel * KILN_ELEM_BYTES);
        return;
    }
    KILN_ASSERT(n->attrs.n_values == 1);
    LLVMValueRef v = n->type.dtype == KILN_I32 ? cg_i32(cg, *(const int32_t *)n->attrs.values)
                                               : LLVMConstReal(cg->t_f32, *(const float *)n->attrs.values);
    cg_loop l;
    cg_loop_begin(cg, &l, cg_i64(cg, 0), cg_i64(cg, numel), "i");
    cg_store(cg, n->type.dtype, c->out, l.i, v);
    cg_loop_end(cg, &l);
}

/* out[…, j, …] = j along the axis: a second "operand" whose stride is 1 on the axis and
 * 0 elsewhere carries j through the (collapsed) nest. */
void lower_iota(lower_ctx *c)
{
    kiln_cg *cg = c->cg;
    const kiln_type *t = &c->node->type;
    if (kiln_type_numel(t) == 0) return;
    int64_t dims[KILN_MAX_RANK], stride[2][KILN_MAX_RANK] = {{0}};
    for (int d = 0; d < t->rank; d++) dims[d] = t->dims[d];
    cg_row_major_strides(t, stride[0]);
    stride[1][c->node->attrs.axis] = 1;
    int rank = cg_collapse_dims(t->rank, dims, 2, stride);
    cg_nest nest;
    cg_nest_begin(cg, &nest, rank, dims, 2, stride, NULL);
    LLVMValueRef j = nest.off[1];
    LLVMValueRef v = t->dtype == KILN_I32 ? LLVMBuildTrunc(cg->b, j, cg->t_i32, "") : LLVMBuildSIToFP(cg->b, j, cg->t_f32, "");
    cg_store(cg, t->dtype, c->out, nest.off[0], v);
    cg_nest_end(cg, &nest);
}
