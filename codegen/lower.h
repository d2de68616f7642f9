/* lower.h — private to codegen/: IR-building helpers (cg.c) and the per-op lowering
 * interface (lower*.c, entry.c, jit.c).
 *
 * A kernel is one internal LLVM function per IR node,
 *     void k<id>_<op>(ptr noalias out, ptr noalias in0, …, ptr noalias scratch)
 * (returning i32 instead of void when the op can fail on bad data: 0 = fine), with every
 * shape a constant. Kernels are written as plain scalar loop nests over i64 induction
 * variables; the O3 pipeline's loop vectoriser turns the innermost contiguous loops into
 * <vector_floats x float> code. That is why the helpers here are about loops, element
 * offsets and strides, never about vectors. Nodes whose kernels would be identical share
 * one function (lower_kernel_key).
 */
#ifndef KILN_LOWER_H
#define KILN_LOWER_H

#include "codegen.h"
#include "passes.h"

/* ---- cg.c: building blocks ------------------------------------------------------- */

/* Sets up cg around an existing context (the JIT's thread-safe context); kiln_cg_init
 * is this with a fresh context. */
void cg_init_in_context(kiln_cg *cg, const kiln_target *t, LLVMContextRef ctx, const char *module_name);

LLVMValueRef cg_i64(kiln_cg *cg, int64_t v);
LLVMValueRef cg_i32(kiln_cg *cg, int32_t v);
LLVMValueRef cg_f32(kiln_cg *cg, double v);

/* An internal function `name` returning `ret` (t_void or t_i32) with n_ptrs pointer
 * parameters, all noalias + nocapture, nounwind, noinline, tagged with the target; the
 * builder is left at the start of its body. */
LLVMValueRef cg_kernel_begin(kiln_cg *cg, const char *name, LLVMTypeRef ret, unsigned n_ptrs);

/* Element `off` (an i64 value) of an array of dtype at ptr: address, load, store. */
LLVMValueRef cg_gep(kiln_cg *cg, kiln_dtype dt, LLVMValueRef ptr, LLVMValueRef off);
LLVMValueRef cg_load(kiln_cg *cg, kiln_dtype dt, LLVMValueRef ptr, LLVMValueRef off);
void cg_store(kiln_cg *cg, kiln_dtype dt, LLVMValueRef ptr, LLVMValueRef off, LLVMValueRef v);
/* Byte offset `bytes` from ptr. */
LLVMValueRef cg_byte_offset(kiln_cg *cg, LLVMValueRef ptr, int64_t bytes);

/* A stack slot in the function's entry block (SROA turns it into SSA values). */
LLVMValueRef cg_local(kiln_cg *cg, LLVMTypeRef ty, const char *name);

/* Float arithmetic with the `contract` fast-math flag (an fmul feeding an fadd may
 * become an FMA; nothing else is relaxed, so results stay within ~1 ulp of the
 * interpreter). cg_fadd_reduce also allows reassociation: it is for accumulators, so the
 * vectoriser may keep partial sums per lane. */
LLVMValueRef cg_fadd(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fsub(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fmul(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fdiv(kiln_cg *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fadd_reduce(kiln_cg *cg, LLVMValueRef acc, LLVMValueRef v);
/* v, one node's result in a kernel of several (LOOP, MULTI), rounded as that node's own
 * kernel would round it: no FMA across two nodes, so fused kernels give unfused bits. */
LLVMValueRef cg_node_result(kiln_cg *cg, LLVMValueRef v);

/* A call of the overloaded intrinsic `name` ("llvm.sqrt") at the given overload types;
 * the 1- and 2-operand forms overload on the type of x: cg_intrinsic1(cg, "llvm.sqrt", x).
 * On float or <N x float>, cg_intrinsic1 "llvm.exp" / "llvm.log" and cg_intrinsic2
 * "llvm.pow" are not calls: they emit vmath.c's inline code (vm_exp, vm_log, vm_pow),
 * which vectorises and never reaches libm. */
LLVMValueRef cg_intrinsic(kiln_cg *cg, const char *name, LLVMTypeRef *types, unsigned n_types,
                          LLVMValueRef *args, unsigned n_args);
LLVMValueRef cg_intrinsic1(kiln_cg *cg, const char *name, LLVMValueRef x);
LLVMValueRef cg_intrinsic2(kiln_cg *cg, const char *name, LLVMValueRef x, LLVMValueRef y);
/* r[0..w) (<w x float> rows, w a power of two ≤ 16) transposed in registers with b. */
void cg_transpose_square(LLVMBuilderRef b, LLVMTypeRef i32, int w, LLVMValueRef *r);
/* llvm.memcpy of `bytes` bytes (nothing when 0). */
void cg_memcpy(kiln_cg *cg, LLVMValueRef dst, LLVMValueRef src, int64_t bytes);

/* for (i = begin; i < end; i++) — a counted loop with an i64 phi. Between begin and end
 * the builder is in the body; cg_loop_end closes it and leaves the builder after it. */
typedef struct cg_loop {
    LLVMValueRef i;                    /* the induction variable, valid in the body */
    LLVMValueRef phi;
    LLVMBasicBlockRef head, body, exit;
} cg_loop;
void cg_loop_begin(kiln_cg *cg, cg_loop *l, LLVMValueRef begin, LLVMValueRef end, const char *name);
void cg_loop_end(kiln_cg *cg, cg_loop *l);
/* cg_loop_end asking the vectoriser to interleave `count` vectors (for short reductions:
 * independent partial sums hide the add latency; the cost model picks 1 for them). */
void cg_loop_end_interleaved(kiln_cg *cg, cg_loop *l, int count);

/* if (cond) { … } — cg_if_end joins. */
typedef struct cg_if {
    LLVMBasicBlockRef then, join;
} cg_if;
void cg_if_begin(kiln_cg *cg, cg_if *f, LLVMValueRef cond);
void cg_if_end(kiln_cg *cg, cg_if *f);
/* if (cond) return code; — for kernels returning an i32 status. */
void cg_return_if(kiln_cg *cg, LLVMValueRef cond, int code);
/* Returns KILN_RC_INDEX_RANGE when any of the n_ids i32 indices at ids is outside [0, n)
 * (sign-extended, compared unsigned: negatives are huge); checked before anything is written. */
void cg_return_if_index_outside(kiln_cg *cg, LLVMValueRef ids, int64_t n_ids, int64_t n);

/* A loop nest over dims[0..rank) (outermost first) that keeps, for each of n_ops
 * operands, the element offset base[k] + Σ_d idx_d·stride[k][d] (base NULL = 0).
 * Inside, off[k] is the innermost offset. */
#define CG_MAX_OPS 64
typedef struct cg_nest {
    int rank, n_ops;
    cg_loop loop[KILN_MAX_RANK];
    LLVMValueRef off[CG_MAX_OPS];
} cg_nest;
void cg_nest_begin(kiln_cg *cg, cg_nest *n, int rank, const int64_t *dims, int n_ops,
                   const int64_t stride[][KILN_MAX_RANK], const LLVMValueRef *base);
void cg_nest_end(kiln_cg *cg, cg_nest *n);

/* Simplifies a loop nest without changing what it visits: drops size-1 dims and merges
 * dim d into d+1 when every operand has stride[d] == stride[d+1]·dims[d+1], so
 * contiguous runs become one long innermost loop. Returns the new rank. */
int cg_collapse_dims(int rank, int64_t *dims, int n_ops, int64_t stride[][KILN_MAX_RANK]);

/* Row-major element strides of a type; broadcast strides of t against a result of
 * `rank` dims (numpy alignment: missing and size-1 dims get 0). */
void cg_row_major_strides(const kiln_type *t, int64_t *stride);
void cg_bcast_strides(const kiln_type *t, int rank, int64_t *stride);
int64_t cg_span(const int64_t *dims, int from, int to);
/* Rows whose f32 variance overflows (lower_reduce.c): whether an f32 variance is
 * finite (false for inf and NaN), and a row's mean and 1/√(var + eps) in double, for the
 * slow path of layernorm and layernorm_grad. */
LLVMValueRef cg_var_fits(kiln_cg *cg, LLVMValueRef var);
void cg_row_stats_f64(kiln_cg *cg, LLVMValueRef x, LLVMValueRef base, int64_t D, double eps, LLVMValueRef *mean,
                      LLVMValueRef *inv);

/* ---- threads (cg.c) ------------------------------------------------------------ */

/* Splitting a kernel's work across the runtime's thread pool (kiln_parallel_for, a
 * static partition of [0, n_items) into contiguous chunks, one per thread). Items must
 * be independent — each written by exactly one thread, computed the same way whatever
 * the chunk — so results are bit-identical for every thread count.
 *
 * cg_parallel_for emits, for the function being built, an internal function
 *     void <caller>.<name>.part(ptr ctx, i64 begin, i64 end)
 * whose body `body` writes for items [begin, end), with vals[] (pointers of the caller,
 * usually its parameters) passed through ctx and given back to body as its own values;
 * the caller gets the call kiln_parallel_for(part, &ctx, n_items) and the builder is
 * left after it. When the work (n_items · work_per_item, in rough element-operations)
 * is too small to be worth waking the pool, body is emitted inline instead, over
 * [0, n_items), with the caller's own values. */
#define KILN_CG_PARALLEL_MIN_WORK 65536
typedef void (*cg_par_body)(kiln_cg *cg, void *user, LLVMValueRef begin, LLVMValueRef end, const LLVMValueRef *vals);
void cg_parallel_for(kiln_cg *cg, const char *name, int64_t n_items, int64_t work_per_item,
                     const LLVMValueRef *vals, unsigned n_vals, cg_par_body body, void *user);

/* A loop nest (as cg_nest_begin) whose outermost dim is split across threads with
 * cg_parallel_for. body emits the innermost statement with vals[] (as in
 * cg_parallel_for) and off[k], operand k's element offset. */
typedef void (*cg_nest_body)(kiln_cg *cg, void *user, const LLVMValueRef *vals, const LLVMValueRef *off);
void cg_parallel_nest(kiln_cg *cg, const char *name, int rank, const int64_t *dims, int n_ops,
                      const int64_t stride[][KILN_MAX_RANK], int64_t work_per_elem, const LLVMValueRef *vals,
                      unsigned n_vals, cg_nest_body body, void *user);

/* ---- lowering: one kernel per node ---------------------------------------------- */

/* What a lowering function sees: the kernel's parameters, already named. */
typedef struct lower_ctx {
    kiln_cg *cg;
    kiln_cg *gemm_cg;                  /* the module GEMM functions go to (see lower_nn.c) */
    const kiln_graph *g;
    uint32_t id;
    const kiln_node *node;
    LLVMValueRef fn;
    LLVMValueRef out;                  /* the result buffer */
    LLVMValueRef in[64];               /* one per node input */
    LLVMValueRef scratch;              /* workspace scratch; NULL when the row asks for none */
} lower_ctx;

static inline const kiln_type *lower_in_type(const lower_ctx *c, uint32_t i)
{
    return &c->g->nodes[c->node->in[i]].type;
}

/* One row per op. lower == NULL: the op never needs a kernel (input, param). can_fail:
 * the kernel returns an i32 status. scratch: workspace bytes the kernel needs (NULL = 0). */
typedef struct lower_row {
    void (*lower)(lower_ctx *c);
    bool can_fail;
    int64_t (*scratch)(const kiln_graph *g, const kiln_node *n, const kiln_target *t);
} lower_row;

extern const lower_row kiln_lower_table[KILN_OP_COUNT];

/* Per-file lowering functions (the table in lower.c points at these). */
void lower_elementwise(lower_ctx *c);   /* lower_elementwise.c: every ELEMENTWISE op */
/* The value of elementwise node n for operand values x[] (scalars of its operands'
 * dtypes): the op's scalar function, as lower_elementwise applies it per element. */
LLVMValueRef lower_scalar_op(kiln_cg *cg, const kiln_node *n, LLVMValueRef *x);
void lower_constant(lower_ctx *c);
void lower_iota(lower_ctx *c);
void lower_reduce(lower_ctx *c);        /* lower_reduce.c */
void lower_softmax(lower_ctx *c);       /* softmax and log_softmax */
void lower_layernorm(lower_ctx *c);
void lower_cross_entropy(lower_ctx *c);
int64_t reduce_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t);
int64_t cross_entropy_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t);
void lower_copy(lower_ctx *c);          /* lower_layout.c: reshape as a copy */
void lower_transpose(lower_ctx *c);
void lower_slice(lower_ctx *c);
void lower_concat(lower_ctx *c);
void lower_broadcast(lower_ctx *c);
void lower_gather(lower_ctx *c);
void lower_update_slice(lower_ctx *c);   /* x with a run-time slice replaced (out may be in0) */
void lower_matmul(lower_ctx *c);        /* lower_nn.c */
int64_t matmul_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t);
/* The GEMM of a matmul that is one GEMM call (kiln_matmul_is_one_gemm): its batch rows
 * flattened into m. */
kiln_gemm_shape lower_one_gemm_shape(const kiln_graph *g, const kiln_node *n);
/* A GEMM function defined in the GEMM module, declared in cg's module (jit.c links them). */
LLVMValueRef lower_gemm_declare(kiln_cg *cg, LLVMValueRef def);
void lower_unslice(lower_ctx *c);       /* lower_grad.c: the ops autodiff emits */
void lower_scatter_add(lower_ctx *c);
void lower_layernorm_grad(lower_ctx *c);
void lower_cross_entropy_grad(lower_ctx *c);

/* ---- attention (lower_attention.c) ------------------------------------------------ */

/* Where an attention's operands live. For each operand, the element strides of every
 * dim of its own shape but the last, which is contiguous: (batch…, head, row) — for the
 * mask (…, S) its batch dims only. NULL: row-major. E.g. q stored as (B, T, H, dh) and
 * read as (B, H, T, dh): {T·H·dh, dh, H·dh}. The bias keeps its broadcast strides. */
typedef enum attn_operand {
    ATTN_Q, ATTN_K, ATTN_V, ATTN_OUT, ATTN_MASK, ATTN_G, ATTN_DQ, ATTN_DK, ATTN_DV, ATTN_DSCORES,
    ATTN_O,   /* the forward output as a row-major copy (forward) or input (backward) */
    ATTN_LSE, /* the row log-sum-exp (…, T): written by the forward, read by the backward */
    ATTN_N_OPERANDS
} attn_operand;
typedef struct attn_layout {
    const int64_t *stride[ATTN_N_OPERANDS];
    /* a training step's attention dropout (the node's attrs.attn_dropout > 0): the kernel
     * drops weights with run seed dropout_seed + the step counter, which it takes as one
     * more pointer after its inputs (as lower_dropout.c's kernel does) */
    bool train_dropout;
    uint64_t dropout_seed;
    /* rotary embeddings folded in (passes/patterns.c, kiln_rope_match): the q (k) input is
     * the rotation's x and the kernel takes its cos and sin tables (L, dh), row p =
     * position p, as two more pointers after its inputs (q's pair first), before the
     * step counter; it rotates q (k) rows as it loads them and works on the result */
    bool rope_q, rope_k;
    /* backward, with rope_q (rope_k): dq (dk) is written as the gradient of the rotation's
     * x — each finished row turned back by the same tables (Rᵀ), in place */
    bool unrope_q, unrope_k;
} attn_layout;

/* The forward kernel (table row: layout NULL) into c's function. */
void lower_attention(lower_ctx *c);
void lower_attention_with_layout(lower_ctx *c, const attn_layout *l);
void lower_attention_lse(lower_ctx *c); /* attention_lse's table row: the forward writing only lse */
/* scratch of a forward kernel for an attention or attention_lse node */
int64_t attention_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t);
/* One forward kernel writing any of: out (the attention's result, with the layout's
 * ATTN_OUT strides), o (a second, row-major copy, for an attention_grad to read when
 * out is written transposed) and lse (attention_lse's result). node: an attention or
 * attention_lse node (they share inputs and attributes). Signature:
 *   void k<node>_attention_<o|-><l|->(ptr out?, ptr o?, ptr lse?, ptr in_0 …, [ptr step], [ptr scratch]) */
typedef struct attn_fwd_want {
    bool out, o, lse;
} attn_fwd_want;
LLVMValueRef lower_attention_forward_group(kiln_cg *cg, const kiln_graph *g, uint32_t node, attn_fwd_want want,
                                           bool has_scratch, const attn_layout *l);

/* One kernel computing the gradients of one attention w.r.t. every wrt whose node is
 * given (node_of_wrt[w] = an ATTENTION_GRAD node id with attrs.wrt == w, or KILN_NONE);
 * the given nodes have identical inputs and attributes apart from wrt. Signature:
 *   void k<first id>_attention_grad_<qkvs letters>(ptr out_<w>… for each present w in
 *        kiln_wrt order, ptr in_0 … in_{n-1} (the nodes' shared inputs), [ptr step], [ptr scratch])
 * with attention_grad_group_scratch_bytes of scratch when has_scratch (it must be when
 * that is > 0), operands laid out as l says (NULL: row-major, the table row's). The
 * builder is left where it was. The table row for ATTENTION_GRAD is this with one wrt
 * present. */
LLVMValueRef lower_attention_grad_group_with_layout(kiln_cg *cg, const kiln_graph *g,
                                                    const uint32_t node_of_wrt[KILN_WRT_COUNT], bool has_scratch,
                                                    const attn_layout *l);
int64_t attention_grad_group_scratch_bytes(const kiln_graph *g, const uint32_t node_of_wrt[KILN_WRT_COUNT],
                                           const kiln_target *t, const attn_layout *l);
/* scratch of a forward kernel with operand layout l (NULL: the table row's) */
int64_t attention_forward_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t,
                                        const attn_layout *l);
void lower_attention_grad(lower_ctx *c);
int64_t attention_grad_scratch_bytes(const kiln_graph *g, const kiln_node *n, const kiln_target *t);

/* A training step's dropout kernel, (out, x, step) → out (lower_dropout.c). */
LLVMValueRef lower_dropout_train(kiln_cg *cg, const kiln_graph *g, uint32_t id, uint64_t dropout_seed);
/* splitmix64's output function (kiln_interp_dropout_keep's mix64) on an i64 value or a
 * vector of them: the hash of every dropout mask, the dropout kernel's and attention's. */
LLVMValueRef cg_dropout_mix64(kiln_cg *cg, LLVMValueRef z);


/* The global holding a constant node's values ([bytes x i8], 64-byte aligned,
 * internal), created on first use. */
LLVMValueRef lower_constant_global(kiln_cg *cg, const kiln_graph *g, uint32_t id);

/* Emits node id's kernel into cg and returns it (lower.c); GEMM functions go into
 * gemm_cg, a second module in the same context. */
LLVMValueRef lower_kernel(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, uint32_t id, bool has_scratch);

/* A text key that equals another node's exactly when the two kernels would be the same
 * function (op, attributes, operand types, scratch). False: never share this one. */
bool lower_kernel_key(const kiln_graph *g, uint32_t id, bool has_scratch, char *buf, size_t size);

/* Scratch bytes of every node (0 for nodes without), for the memory planner. */
void lower_scratch_sizes(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_target *t, int64_t *bytes);

/* ---- lower_attention_kernel.c: the schedule's attention kernels ------------------- */

/* An attention kernel of the schedule: its attention node(s), the nodes whose memory its
 * arguments point at (results first — a result's transpose member when it writes that
 * layout — then the attention's inputs), and the operand strides that fold transposes. */
typedef struct attention_kernel {
    bool grad;                              /* attention_grad group, else forward */
    uint32_t first;                         /* the first attention node */
    uint32_t node_of_wrt[KILN_WRT_COUNT];   /* grad: the node per wrt, or KILN_NONE */
    attn_fwd_want want;                     /* forward: the results it writes */
    uint32_t args[20];
    int n_args;
    attn_layout layout;
    int64_t strides[ATTN_N_OPERANDS][KILN_MAX_RANK];
} attention_kernel;

void attention_kernel_describe(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, attention_kernel *ak);
LLVMValueRef lower_attention_kernel(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const attention_kernel *ak,
                                    bool has_scratch);
bool attention_kernel_key(const kiln_graph *g, const attention_kernel *ak, bool has_scratch, char *buf, size_t size);

/* ---- lower_gemm_kernel.c: the schedule's GEMM kernels ----------------------------- */

/* A GEMM kernel of the schedule: the matmul, its GEMM, the epilogue its other members
 * make, and the nodes its arguments point at: C (the last member), [P (the value before
 * the activation)], A, B, [bias], [residual], [the bias gradient's result]. */
typedef struct gemm_kernel {
    uint32_t mm, last;
    kiln_gemm_shape shape;
    kiln_gemm_epilogue epi;
    uint32_t colsum;       /* a bias gradient member (the last argument), or KILN_NONE */
    int colsum_operand;    /* with colsum: 0 sums the lanes of op(A), 1 of op(B), along k */
    uint32_t args[8];
    int n_args;
} gemm_kernel;

/* Part `part` of a GEMM kernel of several parts (sibling GEMMs, fuse.c): each a chain. */
void gemm_kernel_describe_part(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, uint32_t part,
                               gemm_kernel *gk);
/* One kernel running the GEMMs of gks[0..parts) one after another, with the scratch of
 * the first (the parts have one shape): arguments each part's, in order, [scratch]. */
LLVMValueRef lower_gemm_kernel_parts(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const gemm_kernel *gks,
                                     uint32_t parts, bool has_scratch);
bool gemm_kernel_key(const kiln_graph *g, const gemm_kernel *gk, bool has_scratch, char *buf, size_t size);
/* The scratch bytes such a kernel needs (its first part's GEMM's, or its group job's when
 * its parts run as one: kiln_cg_gemm_group). */
int64_t gemm_kernel_parts_scratch_bytes(const kiln_target *t, const gemm_kernel *gks, uint32_t parts);

/* ---- lower_loop.c: a LOOP kernel of the schedule ----------------------------------- */

/* An operand of a LOOP kernel: a buffer it reads (an outside input), writes (a member
 * whose value leaves the kernel), or both (an update computed in place over a value it
 * reads: `node` is the member, `reads` the target node). */
typedef struct loop_operand {
    uint32_t node;       /* the value at this operand: an outside input, or a member */
    uint32_t reads;      /* the node read from it: node itself for an input, the target
                            for an in-place member, KILN_NONE for a written-only member */
    bool writes;
} loop_operand;

/* The operands of kernel k (results first, member order; then inputs, first use); at most
 * CG_MAX_OPS. Returns their number. */
int loop_operands(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p, uint32_t k, loop_operand *ops);
/* The same for the members[0..n_members) of kernel k (one part of a MULTI kernel). */
int loop_operands_of(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p, uint32_t k,
                     const uint32_t *members, uint32_t n_members, loop_operand *ops);
/* Begins the kernel function void NAME(ptr noalias op0, …, [extra more pointers]) over
 * ops, its parameters named after their nodes (in12, out15) in vals[0 .. n_ops). */
LLVMValueRef lower_operands_function(kiln_cg *cg, const char *name, const loop_operand *ops, int n_ops,
                                     unsigned extra, LLVMValueRef *vals);
/* Emits kernel k as void NAME(ptr noalias op0, …) over its operands. */
LLVMValueRef lower_loop_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                               const loop_operand *ops, int n_ops);
/* The members of LOOP or REDUCE kernel k at one element: vals[o] + off[o] is operand
 * ops[o]'s element; loads the inputs, computes every elementwise member (as its
 * one-node kernel rounds it), stores those that leave, and returns the value of member
 * `want` (NULL for KILN_NONE). */
LLVMValueRef lower_loop_elements(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                                 const loop_operand *ops, int n_ops, const LLVMValueRef *vals, const LLVMValueRef *off,
                                 uint32_t want);
/* The sharing key of kernel k, LOOP or REDUCE (equal keys: identical functions). */
bool lower_loop_key(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, const loop_operand *ops, int n_ops,
                    char *buf, size_t size);

/* The first reduction member of kernel k (a REDUCE or ROW kernel's), or KILN_NONE. */
uint32_t lower_first_reduction(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k);
/* lower_reduce.c: REDUCE kernel k (operands as loop_operands: the reduction's result is
 * one of them) as void NAME(ptr noalias op0, …, [ptr scratch: the reduction's own]). */
LLVMValueRef lower_reduce_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                                 const loop_operand *ops, int n_ops, bool has_scratch);

/* lower_row.c: ROW kernel k (operands as loop_operands) as void NAME(ptr noalias op0, …,
 * [ptr scratch: its row buffers]); lower_row_scratch gives the scratch bytes it needs and
 * the node they are planned for (its first reduction). */
LLVMValueRef lower_row_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                              const loop_operand *ops, int n_ops, bool has_scratch);
uint32_t lower_row_scratch(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, int64_t *bytes);

/* ---- lower_multi.c: a MULTI kernel of the schedule --------------------------------- */

/* A MULTI kernel: one loop, the same for each part, over a table of the parts' operands
 * (`table`: parts × n_slots nodes, part after part, each part's operands in
 * loop_operands order), which the entry function passes as a constant array of (base
 * number, byte offset) pairs and a stack array of the bases. */
typedef struct multi_kernel {
    uint32_t k, parts, per_part;   /* kernel, parts, members per part */
    int n_slots;                   /* operands per part */
    loop_operand ops[CG_MAX_OPS];  /* part 0's operands: the template */
    uint32_t *table;               /* parts × n_slots operand nodes (malloc'd) */
} multi_kernel;

void multi_kernel_describe(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p, uint32_t k,
                           multi_kernel *mk);
/* Emits void NAME(ptr bases, ptr table). */
LLVMValueRef lower_multi_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, const multi_kernel *mk);

/* The entry function (entry.c): int NAME_forward(params, workspace, inputs…, outputs…)
 * calling the kernels in node order. Returns the number of kernel calls; *n_functions
 * (may be NULL) gets the number of distinct kernel functions; ready_after (may be NULL;
 * req->n_ready entries) the positions of the ready calls it emitted (kiln_ready_after's,
 * or later where a kernel's arguments reach the state). */
int entry_emit(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const kiln_compile_request *req,
               const kiln_memplan *p, const kiln_kernel_schedule *s, const char *entry_name, int *n_functions,
               int32_t *ready_after);

/* entry_ready.c: per node of g, its index among req's ready states or −1 (malloc'd); and
 * the ready state whose memory node id's value lives in (through views and in-place
 * updates), or −1. */
int32_t *entry_ready_index(const kiln_graph *g, const kiln_compile_request *req);
int32_t entry_ready_state(const kiln_graph *g, const kiln_memplan *p, const int32_t *ready_of, uint32_t id);

/* objcache.c, the JIT's side of the compile cache (kiln_objcache_open): an entry holds the
 * object files of the kernels' module and of the GEMMs' module, in that order. */
enum { OBJCACHE_OBJECTS = 2 };
typedef struct objcache_key {
    uint64_t h[2];
} objcache_key;
/* The key of the two unoptimised modules for target t; false when the cache is off. */
bool objcache_key_of(objcache_key *k, const kiln_target *t, LLVMModuleRef kernels, LLVMModuleRef gemm);
/* The entry's objects (the caller owns them), or false: none, or one that does not
 * check out. */
bool objcache_load(const objcache_key *k, LLVMMemoryBufferRef obj[OBJCACHE_OBJECTS]);
/* Saves the objects under the key, best effort (a failed store is a later miss). */
void objcache_store(const objcache_key *k, LLVMMemoryBufferRef const obj[OBJCACHE_OBJECTS]);

#endif
