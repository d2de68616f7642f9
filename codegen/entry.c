/* entry.c — the entry function of a compiled model:
 *
 *     int NAME_forward(const float *params, void *workspace, <inputs…>, <outputs…>)
 *
 * Design: external linkage (everything else in the module is internal), arguments in
 * the SPEC's order (inputs as the request lists them, outputs as g->outputs). It calls
 * one kernel per node that needs one, in node order, passing each value's address from
 * the memory plan: the parameter blob or the workspace plus a constant offset, a caller
 * buffer, a constant global, or — for a view — the address of the value it views. A
 * kernel that can fail returns a status; a non-zero one is returned at once (later
 * kernels would read garbage). Outputs whose node lives elsewhere are copied last.
 * Nodes whose kernels would be identical call one shared function.
 * The JIT and the AOT writer share this function; it allocates nothing.
 *
 * The training step (request->train) is the same function with another signature,
 *
 *     int NAME_train_step(float *params, float *optim, void *workspace, <inputs…>,
 *                         float lr, <outputs…>)
 *
 * STATE nodes live in the optimizer blob, lr (passed by value) gets a stack slot so that
 * kernels read it like any value, and the graph's updates land in the blobs: computed
 * in place where the plan says so (KILN_HOME_UPDATE), else copied after the outputs.
 * Dropout nodes drop (lower_dropout.c), seeded from the step counter.
 *
 * A stateful request (generation's KV cache) has the state blob without lr:
 *
 *     int NAME_SUFFIX(const float *params, float *state, void *workspace, <inputs…>, <outputs…>)
 * With request->n_ready the entry takes (ready, ctx) after its outputs and calls
 * ready(ctx, i) once each ready state is done (entry_ready.c): the split step's
 * NAME_train_grad hands over each gradient as soon as the backward pass has finished it.
 * With request->profile the entry calls kiln_profile_mark (runtime/profile.c) before each
 * kernel, before the copies and before returning: `kiln bench --per-kernel`.
 * With request->check_args (exported code) it first checks the caller's pointers
 * (check_args below): a few compares, then the same code as the JIT's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

typedef struct entry_ctx {
    kiln_cg *cg;
    const kiln_graph *g;
    const kiln_memplan *p;
    LLVMValueRef fn;
    uint32_t n_inputs;
    /* argument numbers: forward (params, workspace, inputs…, outputs…); train step
     * (params, optim, workspace, inputs…, lr, outputs…) */
    unsigned a_optim, a_workspace, a_inputs, a_outputs;
    LLVMValueRef lr_slot;   /* train: a stack slot holding the by-value lr (input n_inputs) */
    unsigned a_ready;       /* req->n_ready: the ready callback, then its context */
    LLVMValueRef workspace; /* the workspace argument, or (check_args) it rounded up to 64 bytes */
} entry_ctx;

/* The address of node id's value. */
static LLVMValueRef value_ptr(entry_ctx *e, uint32_t id)
{
    const kiln_home *h = &e->p->homes[id];
    switch (h->kind) {
    case KILN_HOME_PARAM: return cg_byte_offset(e->cg, LLVMGetParam(e->fn, 0), h->offset);
    case KILN_HOME_STATE: return cg_byte_offset(e->cg, LLVMGetParam(e->fn, e->a_optim), h->offset);
    case KILN_HOME_WORKSPACE: return cg_byte_offset(e->cg, e->workspace, h->offset);
    case KILN_HOME_INPUT:
        if (h->index == e->n_inputs && e->lr_slot) return e->lr_slot;
        return LLVMGetParam(e->fn, e->a_inputs + h->index);
    case KILN_HOME_OUTPUT: return LLVMGetParam(e->fn, e->a_outputs + h->index);
    case KILN_HOME_CONST: return lower_constant_global(e->cg, e->g, id);
    case KILN_HOME_ALIAS:
    case KILN_HOME_UPDATE: return value_ptr(e, h->index);
    case KILN_HOME_NONE:
    case KILN_HOME_FUSED: break;
    }
    KILN_ASSERT(!"a kernel reads a value that has no home");
    return NULL;
}

/* The address of node id's value as (base, byte offset): base is one of the entry's
 * parameters, the lr slot or a constant global. */
static void value_base(entry_ctx *e, uint32_t id, LLVMValueRef *base, int64_t *offset)
{
    const kiln_home *h = &e->p->homes[id];
    *offset = 0;
    switch (h->kind) {
    case KILN_HOME_PARAM: *base = LLVMGetParam(e->fn, 0), *offset = h->offset; return;
    case KILN_HOME_STATE: *base = LLVMGetParam(e->fn, e->a_optim), *offset = h->offset; return;
    case KILN_HOME_WORKSPACE: *base = e->workspace, *offset = h->offset; return;
    case KILN_HOME_ALIAS:
    case KILN_HOME_UPDATE: value_base(e, h->index, base, offset); return;
    default: *base = value_ptr(e, id); return;
    }
}

/* A kernel function already emitted, by key (lower_kernel_key). */
typedef struct kernel_key {
    char *text;
    uint64_t hash;
    LLVMValueRef fn;
} kernel_key;

static uint64_t hash_string(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The function already emitted for `key`, if the kernel may share one: true with *fn set. */
static bool find_kernel(const kernel_key *keys, int n_keys, bool shareable, const char *key, LLVMValueRef *fn)
{
    if (!shareable) return false;
    uint64_t h = hash_string(key);
    for (int i = 0; i < n_keys; i++)
        if (keys[i].hash == h && strcmp(keys[i].text, key) == 0) {
            *fn = keys[i].fn;
            return true;
        }
    return false;
}

static void add_kernel(kernel_key *keys, int *n_keys, bool shareable, const char *key, LLVMValueRef fn)
{
    if (!shareable) return;
    keys[*n_keys].text = strdup(key);
    KILN_ASSERT(keys[*n_keys].text != NULL);
    keys[*n_keys].hash = hash_string(key);
    keys[(*n_keys)++].fn = fn;
}

/* Whether node id is a dropout that drops: in a training step with dropout on (or a
 * stateful entry asking for it: the split step's NAME_train_grad, driver/trainsplit.c). */
static bool train_dropout(const kiln_compile_request *req, const kiln_graph *g, uint32_t id)
{
    return (req->train || req->stateful) && req->dropout && g->nodes[id].op == KILN_OP_DROPOUT;
}

/* One kernel of the schedule, ready to call: its function and its operands' nodes (the
 * value each argument points at), in parameter order. */
typedef struct kernel_call {
    LLVMValueRef fn;
    uint32_t args[CG_MAX_OPS + 2];
    int n_args;
    bool dropout_step;   /* a training dropout: the step counter follows the operands */
    int64_t scratch_at;  /* workspace offset of the scratch argument, or -1 */
    bool can_fail;
    uint32_t *table;     /* a MULTI kernel: its one argument is a stack array of the
                            addresses of these n_table nodes (malloc'd) */
    uint32_t n_table;
} kernel_call;

/* The arguments of a MULTI kernel call: its table of operand addresses as a constant
 * array of (base number, byte offset) pairs, and the few distinct bases in a stack
 * array. (Storing each address into a stack table instead puts hundreds of stores in
 * one block of the entry function, which the machine scheduler takes seconds over.) */
static void multi_args(entry_ctx *e, const kernel_call *c, uint32_t k, LLVMValueRef *args, unsigned *n)
{
    kiln_cg *cg = e->cg;
    LLVMValueRef *bases = calloc((size_t)c->n_table + 1, sizeof *bases);
    unsigned n_bases = 0;
    LLVMValueRef *pairs = calloc(2 * (size_t)c->n_table + 1, sizeof *pairs);
    KILN_ASSERT(pairs != NULL && bases != NULL);
    for (uint32_t i = 0; i < c->n_table; i++) {
        LLVMValueRef base;
        int64_t offset;
        value_base(e, c->table[i], &base, &offset);
        unsigned b = 0;
        while (b < n_bases && bases[b] != base) b++;
        if (b == n_bases) bases[n_bases++] = base;
        pairs[2 * i] = cg_i64(cg, b);
        pairs[2 * i + 1] = cg_i64(cg, offset);
    }
    char name[64];
    snprintf(name, sizeof name, "multi_table%u", k);
    LLVMTypeRef ty = LLVMArrayType2(cg->t_i64, 2 * (uint64_t)c->n_table);
    LLVMValueRef table = LLVMAddGlobal(cg->mod, ty, name);
    LLVMSetInitializer(table, LLVMConstArray2(cg->t_i64, pairs, 2 * (uint64_t)c->n_table));
    LLVMSetGlobalConstant(table, 1);
    LLVMSetLinkage(table, LLVMInternalLinkage);
    free(pairs);
    LLVMValueRef slots = cg_local(cg, LLVMArrayType2(cg->t_ptr, n_bases), "bases");
    for (unsigned b = 0; b < n_bases; b++) {
        LLVMValueRef at = cg_i64(cg, b);
        LLVMBuildStore(cg->b, bases[b], LLVMBuildInBoundsGEP2(cg->b, cg->t_ptr, slots, &at, 1, ""));
    }
    free(bases);
    args[(*n)++] = slots;
    args[(*n)++] = table;
}

/* Finds or emits the function of kernel k and records how to call it. */
static void prepare_kernel(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const kiln_compile_request *req,
                           const kiln_memplan *p, const kiln_kernel_schedule *s, uint32_t k, kernel_key *keys, int *n_keys,
                           kernel_call *call)
{
    const kiln_kernel *kn = &s->kernels[k];
    char key[8192];
    call->scratch_at = -1;
    if (kn->kind == KILN_KERNEL_LOOP || kn->kind == KILN_KERNEL_ROW || kn->kind == KILN_KERNEL_REDUCE) {
        loop_operand ops[CG_MAX_OPS];
        int n_ops = loop_operands(g, s, p, k, ops);
        for (int o = 0; o < n_ops; o++) call->args[o] = ops[o].node;
        call->n_args = n_ops;
        /* scratch: a ROW kernel's row buffers, a REDUCE kernel's reduction's chunks; both
         * planned on the first reduction */
        uint32_t r = lower_first_reduction(g, s, k);
        bool has_scratch = r != KILN_NONE && p->scratch_bytes[r] > 0;
        if (has_scratch) call->scratch_at = p->scratch_offset[r];
        bool shareable = lower_loop_key(g, s, k, ops, n_ops, key, sizeof key - 16);
        if (has_scratch) strcat(key, " |scratch");
        if (find_kernel(keys, *n_keys, shareable, key, &call->fn)) return;
        if (kn->kind == KILN_KERNEL_ROW) call->fn = lower_row_kernel(cg, g, s, k, ops, n_ops, has_scratch);
        else if (kn->kind == KILN_KERNEL_REDUCE) call->fn = lower_reduce_kernel(cg, g, s, k, ops, n_ops, has_scratch);
        else call->fn = lower_loop_kernel(cg, g, s, k, ops, n_ops);
        add_kernel(keys, n_keys, shareable, key, call->fn);
        return;
    }
    if (kn->kind == KILN_KERNEL_MULTI) { /* one of its kind: never shared */
        multi_kernel mk;
        multi_kernel_describe(g, s, p, k, &mk);
        call->table = mk.table;
        call->n_table = mk.parts * (uint32_t)mk.n_slots;
        call->n_args = 0;
        call->fn = lower_multi_kernel(cg, g, s, &mk);
        return;
    }
    if (kn->kind == KILN_KERNEL_GEMM) {
        gemm_kernel gks[8];
        KILN_ASSERT(kn->parts >= 1 && kn->parts <= 8);
        call->n_args = 0;
        size_t len = 0;
        bool shareable = true;
        for (uint32_t q = 0; q < kn->parts; q++) {
            gemm_kernel_describe_part(g, s, k, q, &gks[q]);
            for (int i = 0; i < gks[q].n_args; i++) call->args[call->n_args++] = gks[q].args[i];
        }
        bool has_scratch = p->scratch_bytes[gks[0].mm] > 0;
        if (has_scratch) call->scratch_at = p->scratch_offset[gks[0].mm];
        for (uint32_t q = 0; q < kn->parts && shareable; q++) {
            shareable = gemm_kernel_key(g, &gks[q], has_scratch, key + len, sizeof key - len);
            len += strlen(key + len);
        }
        if (find_kernel(keys, *n_keys, shareable, key, &call->fn)) return;
        call->fn = lower_gemm_kernel_parts(cg, gemm_cg, g, gks, kn->parts, has_scratch);
        add_kernel(keys, n_keys, shareable, key, call->fn);
        return;
    }
    if (kn->kind == KILN_KERNEL_ATTENTION || kn->kind == KILN_KERNEL_ATTENTION_GRAD) {
        attention_kernel ak;
        attention_kernel_describe(g, s, k, &ak);
        if (req->train && req->dropout && g->nodes[ak.first].attrs.attn_dropout > 0) { /* drops weights */
            ak.layout.train_dropout = true;
            ak.layout.dropout_seed = req->dropout_seed;
            call->dropout_step = true;
        }
        for (int i = 0; i < ak.n_args; i++) call->args[i] = ak.args[i];
        call->n_args = ak.n_args;
        bool has_scratch = p->scratch_bytes[ak.first] > 0;
        if (has_scratch) call->scratch_at = p->scratch_offset[ak.first];
        bool shareable = attention_kernel_key(g, &ak, has_scratch, key, sizeof key);
        if (find_kernel(keys, *n_keys, shareable, key, &call->fn)) return;
        call->fn = lower_attention_kernel(cg, gemm_cg, g, &ak, has_scratch);
        add_kernel(keys, n_keys, shareable, key, call->fn);
        return;
    }
    uint32_t id = s->members[kn->first];
    const kiln_node *n = &g->nodes[id];
    call->args[0] = id;
    for (uint32_t i = 0; i < n->n_in; i++) call->args[1 + i] = n->in[i];
    call->n_args = 1 + (int)n->n_in;
    call->can_fail = kiln_lower_table[n->op].can_fail;
    if (p->scratch_bytes[id] > 0) call->scratch_at = p->scratch_offset[id];
    if (train_dropout(req, g, id)) { /* its stream is its own: never shared */
        call->fn = lower_dropout_train(cg, g, id, req->dropout_seed);
        call->dropout_step = true;
        return;
    }
    bool has_scratch = p->scratch_bytes[id] > 0;
    bool shareable = lower_kernel_key(g, id, has_scratch, key, sizeof key);
    if (find_kernel(keys, *n_keys, shareable, key, &call->fn)) return;
    call->fn = lower_kernel(cg, gemm_cg, g, id, has_scratch);
    add_kernel(keys, n_keys, shareable, key, call->fn);
}

/* Profiling (req->profile): a call kiln_profile_mark(slot) (runtime/profile.c) at the
 * builder's position. The external call also keeps kernels from moving across it. */
static void profile_mark(kiln_cg *cg, int slot)
{
    LLVMTypeRef i32 = cg->t_i32;
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, &i32, 1, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, "kiln_profile_mark");
    if (!fn) fn = LLVMAddFunction(cg->mod, "kiln_profile_mark", ty);
    LLVMValueRef arg = cg_i32(cg, slot);
    LLVMBuildCall2(cg->b, ty, fn, &arg, 1, "");
}

/* The ready calls due at position k (req->n_ready; entry_ready.c): if (ready) ready(ctx, i)
 * for each state i whose position is k, in order of i. */
static void ready_calls(entry_ctx *e, const kiln_compile_request *req, const int32_t *after, int32_t k)
{
    kiln_cg *cg = e->cg;
    bool any = false;
    for (uint32_t i = 0; i < req->n_ready && !any; i++) any = after[i] == k;
    if (!any) return;
    LLVMValueRef ready = LLVMGetParam(e->fn, e->a_ready), ctx = LLVMGetParam(e->fn, e->a_ready + 1);
    LLVMBasicBlockRef call = LLVMAppendBasicBlockInContext(cg->ctx, e->fn, "ready");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(cg->ctx, e->fn, "ready.next");
    LLVMBuildCondBr(cg->b, LLVMBuildIsNotNull(cg->b, ready, ""), call, next);
    LLVMPositionBuilderAtEnd(cg->b, call);
    LLVMTypeRef params[2] = {cg->t_ptr, cg->t_i32};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 2, 0);
    for (uint32_t i = 0; i < req->n_ready; i++) {
        if (after[i] != k) continue;
        LLVMValueRef args[2] = {ctx, cg_i32(cg, (int32_t)i)};
        LLVMBuildCall2(cg->b, ty, ready, args, 2, "");
    }
    LLVMBuildBr(cg->b, next);
    LLVMPositionBuilderAtEnd(cg->b, next);
}

/* The positions of the ready calls: kiln_ready_after's, or later where a kernel is passed
 * an address in the state's memory (what it really touches). */
static void ready_positions(const kiln_graph *g, const kiln_compile_request *req, const kiln_memplan *p,
                            const kiln_kernel_schedule *s, const kernel_call *calls, int32_t *after)
{
    kiln_ready_after(g, req, p, s, after);
    int32_t *ready_of = entry_ready_index(g, req);
    for (uint32_t k = 0; k < s->n_kernels; k++) {
        const kernel_call *c = &calls[k];
        for (int i = 0; i < c->n_args + (int)c->n_table; i++) {
            uint32_t id = i < c->n_args ? c->args[i] : c->table[i - c->n_args];
            int32_t r = entry_ready_state(g, p, ready_of, id);
            if (r >= 0 && after[r] < (int32_t)k) after[r] = (int32_t)k;
        }
    }
    free(ready_of);
}

/* The exported entry's first instructions: every pointer argument to memory of a non-zero
 * size must be non-NULL (else KILN_RC_NULL_ARG) and the blobs float-aligned (else
 * KILN_RC_MISALIGNED), so that a bad call returns a status instead of crashing in some
 * kernel. The SPEC's signatures take plain pointers, and malloc gives 16 bytes: the
 * kernels read the blobs at any float alignment (64 bytes is only faster), and the
 * workspace, whose packed GEMM operands want 64, is rounded up inside itself
 * (KILN_WORKSPACE_SLACK, counted in the header's sizes). The ready callback and its
 * context may be NULL; inputs and outputs need only their elements' alignment. */
static void check_args(entry_ctx *e, const kiln_compile_request *req)
{
    kiln_cg *cg = e->cg;
    const kiln_graph *g = e->g;
    LLVMValueRef null = LLVMConstInt(cg->t_i1, 0, 0), misaligned = null;
    /* the blobs and the workspace first (the optimizer or state blob only where there is
     * one), then the inputs and the outputs: (argument, bytes behind it) */
    bool blob3 = req->train || req->stateful;
    uint32_t n_blobs = blob3 ? 3 : 2, n = n_blobs + req->n_inputs + g->n_outputs;
    for (uint32_t i = 0; i < n; i++) {
        unsigned arg;
        int64_t bytes;
        if (i == 0) arg = 0, bytes = e->p->params_bytes;
        else if (i == 1) arg = e->a_workspace, bytes = e->p->workspace_bytes;
        else if (i < n_blobs) arg = e->a_optim, bytes = e->p->optim_bytes;
        else if (i < n_blobs + req->n_inputs)
            arg = e->a_inputs + (i - n_blobs),
            bytes = kiln_type_numel(&g->nodes[req->inputs[i - n_blobs]].type) * KILN_ELEM_BYTES;
        else
            arg = e->a_outputs + (i - n_blobs - req->n_inputs),
            bytes = kiln_type_numel(&g->nodes[g->outputs[i - n_blobs - req->n_inputs].node].type) * KILN_ELEM_BYTES;
        if (bytes == 0) continue; /* nothing is read or written through it: NULL will do */
        LLVMValueRef ptr = LLVMGetParam(e->fn, arg);
        null = LLVMBuildOr(cg->b, null, LLVMBuildIsNull(cg->b, ptr, ""), "");
        if (i >= n_blobs || i == 1) continue;
        LLVMValueRef low = LLVMBuildAnd(cg->b, LLVMBuildPtrToInt(cg->b, ptr, cg->t_i64, ""), cg_i64(cg, KILN_ELEM_BYTES - 1), "");
        misaligned = LLVMBuildOr(cg->b, misaligned, LLVMBuildICmp(cg->b, LLVMIntNE, low, cg_i64(cg, 0), ""), "");
    }
    cg_return_if(cg, null, KILN_RC_NULL_ARG);
    cg_return_if(cg, misaligned, KILN_RC_MISALIGNED);
    /* workspace + (−workspace mod 64): within the slack the header adds */
    LLVMValueRef ws = e->workspace;
    LLVMValueRef up = LLVMBuildAnd(cg->b, LLVMBuildNeg(cg->b, LLVMBuildPtrToInt(cg->b, ws, cg->t_i64, ""), ""),
                                   cg_i64(cg, KILN_WORKSPACE_SLACK - 1), "");
    e->workspace = LLVMBuildGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), ws, &up, 1, "workspace.64");
}

int entry_emit(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const kiln_compile_request *req,
               const kiln_memplan *p, const kiln_kernel_schedule *s, const char *entry_name, int *n_functions,
               int32_t *ready_after)
{
    /* kernels first (each one moves the builder into its own body), one function per
     * distinct key: identical layers share their kernels */
    uint32_t nk = s->n_kernels;
    kernel_call *calls = calloc(nk ? nk : 1, sizeof *calls);
    kernel_key *keys = calloc(nk ? nk : 1, sizeof *keys);
    KILN_ASSERT(calls && keys);
    int n_keys = 0;
    for (uint32_t k = 0; k < nk; k++) prepare_kernel(cg, gemm_cg, g, req, p, s, k, keys, &n_keys, &calls[k]);
    if (n_functions) *n_functions = n_keys;
    for (int k = 0; k < n_keys; k++) free(keys[k].text);
    free(keys);

    entry_ctx e = {cg, g, p, NULL, req->n_inputs, 0, 1, 2, 2 + req->n_inputs, NULL, 0, NULL};
    if (req->train) e = (entry_ctx){cg, g, p, NULL, req->n_inputs, 1, 2, 3, 4 + req->n_inputs, NULL, 0, NULL};
    else if (req->stateful) e = (entry_ctx){cg, g, p, NULL, req->n_inputs, 1, 2, 3, 3 + req->n_inputs, NULL, 0, NULL};
    e.a_ready = e.a_outputs + g->n_outputs;
    unsigned n_args = e.a_ready + (req->n_ready ? 2 : 0);
    int32_t *after = calloc(req->n_ready ? req->n_ready : 1, sizeof *after);
    KILN_ASSERT(after != NULL);
    if (req->n_ready) ready_positions(g, req, p, s, calls, after);
    if (ready_after) memcpy(ready_after, after, req->n_ready * sizeof *after);
    LLVMTypeRef *params = calloc(n_args, sizeof *params);
    KILN_ASSERT(params != NULL);
    for (unsigned i = 0; i < n_args; i++) params[i] = cg->t_ptr;
    if (req->train) params[e.a_outputs - 1] = cg->t_f32; /* float lr, by value */
    LLVMValueRef fn = LLVMAddFunction(cg->mod, entry_name, LLVMFunctionType(cg->t_i32, params, n_args, 0));
    free(params);
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(cg->ctx, nounwind, 0));
    kiln_target_tag_function(cg->target, fn);
    e.fn = fn;
    LLVMSetValueName2(LLVMGetParam(fn, 0), "params", 6);
    if (req->train) LLVMSetValueName2(LLVMGetParam(fn, e.a_optim), "optim", 5);
    else if (req->stateful) LLVMSetValueName2(LLVMGetParam(fn, e.a_optim), "state", 5);
    LLVMSetValueName2(LLVMGetParam(fn, e.a_workspace), "workspace", 9);
    char arg[160];
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        const char *name = g->nodes[req->inputs[i]].attrs.name;
        snprintf(arg, sizeof arg, "in_%s", name ? name : "");
        LLVMSetValueName2(LLVMGetParam(fn, e.a_inputs + i), arg, strlen(arg));
    }
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        snprintf(arg, sizeof arg, "out_%s", g->outputs[o].name);
        LLVMSetValueName2(LLVMGetParam(fn, e.a_outputs + o), arg, strlen(arg));
    }
    if (req->n_ready) {
        LLVMSetValueName2(LLVMGetParam(fn, e.a_ready), "ready", 5);
        LLVMSetValueName2(LLVMGetParam(fn, e.a_ready + 1), "ready_ctx", 9);
    }
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    e.workspace = LLVMGetParam(fn, e.a_workspace);
    KILN_ASSERT(!(req->check_args && req->profile));
    if (req->check_args) check_args(&e, req);
    if (req->train) {
        /* kernels read every value through a pointer: give lr an address */
        LLVMValueRef lr = LLVMGetParam(fn, e.a_outputs - 1);
        LLVMSetValueName2(lr, "lr", 2);
        e.lr_slot = cg_local(cg, cg->t_f32, "lr.slot");
        LLVMBuildStore(cg->b, lr, e.lr_slot);
    }

    for (uint32_t k = 0; k < nk; k++) {
        const kernel_call *c = &calls[k];
        LLVMValueRef args[CG_MAX_OPS + 4];
        unsigned n = 0;
        if (req->profile) profile_mark(cg, (int)k);
        for (int i = 0; i < c->n_args; i++) args[n++] = value_ptr(&e, c->args[i]);
        if (c->table) multi_args(&e, c, k, args, &n);
        if (c->dropout_step) args[n++] = value_ptr(&e, req->dropout_step);
        if (c->scratch_at >= 0) args[n++] = cg_byte_offset(cg, e.workspace, c->scratch_at);
        LLVMValueRef rc = LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(c->fn), c->fn, args, n, "");
        if (c->can_fail) {
            LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(cg->ctx, fn, "fail");
            LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(cg->ctx, fn, "next");
            LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntNE, rc, cg_i32(cg, 0), ""), fail, next);
            LLVMPositionBuilderAtEnd(cg->b, fail);
            if (req->profile) profile_mark(cg, -1);
            LLVMBuildRet(cg->b, rc);
            LLVMPositionBuilderAtEnd(cg->b, next);
        }
        if (req->n_ready) ready_calls(&e, req, after, (int32_t)k);
    }
    if (req->profile) profile_mark(cg, (int)nk);
    for (uint32_t i = 0; i < p->n_copies; i++) {
        const kiln_out_copy *c = &p->copies[i];
        int64_t bytes = kiln_type_numel(&g->nodes[c->node].type) * KILN_ELEM_BYTES;
        cg_memcpy(cg, LLVMGetParam(fn, e.a_outputs + c->output), value_ptr(&e, c->node), bytes);
    }
    /* new values that could not be computed in place, after every kernel has read the
     * old ones (each target is a parameter or a state, never a value copied from) */
    for (uint32_t i = 0; i < p->n_update_copies; i++) {
        const kiln_update *u = &g->updates[p->update_copies[i]];
        int64_t bytes = kiln_type_numel(&g->nodes[u->target].type) * KILN_ELEM_BYTES;
        cg_memcpy(cg, value_ptr(&e, u->target), value_ptr(&e, u->value), bytes);
    }
    if (req->n_ready) ready_calls(&e, req, after, (int32_t)nk);
    free(after);
    if (req->profile) profile_mark(cg, -1);
    LLVMBuildRet(cg->b, cg_i32(cg, KILN_RC_OK));
    for (uint32_t k = 0; k < nk; k++) free(calls[k].table);
    free(calls);
    return (int)nk;
}
