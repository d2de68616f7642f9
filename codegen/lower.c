/* lower.c — IR node → one LLVM kernel function: the op table and the kernel frame.
 *
 * Design: `kiln_lower_table` is an array indexed by kiln_op (designated initialisers;
 * a row left out is caught at the first compile), naming each op's lowering function,
 * whether its kernel can fail on bad data (it then returns an i32 status, see
 * KILN_RC_* in codegen.h) and how much workspace scratch it needs. lower_kernel builds
 * the frame every kernel shares —
 *     k<id>_<op>(ptr noalias out, ptr noalias in0, …, [ptr noalias scratch])
 * with the parameters named — and hands it to the row's function, which emits the body
 * with every shape, stride and attribute baked in as constants. The lowering functions
 * live in one file per family: lower_elementwise.c, lower_reduce.c, lower_layout.c,
 * lower_nn.c, and lower_grad.c for the ops autodiff emits.
 *
 * Which nodes get a kernel follows from the memory plan: nothing for inputs, parameters,
 * constant data (a global) and views (an alias); a kernel for everything else,
 * including a reshape or a constant that must land in an output buffer.
 *
 * A kernel depends only on its node's op, attributes and operand types, so nodes that
 * agree on those share one function (lower_kernel_key): the layers of a transformer
 * compile once, not once per layer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lower.h"

const lower_row kiln_lower_table[KILN_OP_COUNT] = {
    [KILN_OP_INPUT] = {NULL},
    [KILN_OP_PARAM] = {NULL},
    [KILN_OP_STATE] = {NULL},
    [KILN_OP_CONSTANT] = {lower_constant},
    [KILN_OP_IOTA] = {lower_iota},

    [KILN_OP_ADD] = {lower_elementwise},
    [KILN_OP_SUB] = {lower_elementwise},
    [KILN_OP_MUL] = {lower_elementwise},
    [KILN_OP_DIV] = {lower_elementwise},
    [KILN_OP_MAXIMUM] = {lower_elementwise},
    [KILN_OP_MINIMUM] = {lower_elementwise},
    [KILN_OP_POW] = {lower_elementwise},
    [KILN_OP_LT] = {lower_elementwise},
    [KILN_OP_GT] = {lower_elementwise},
    [KILN_OP_EQ] = {lower_elementwise},
    [KILN_OP_WHERE] = {lower_elementwise},
    [KILN_OP_NEG] = {lower_elementwise},
    [KILN_OP_EXP] = {lower_elementwise},
    [KILN_OP_LOG] = {lower_elementwise},
    [KILN_OP_SQRT] = {lower_elementwise},
    [KILN_OP_RSQRT] = {lower_elementwise},
    [KILN_OP_ABS] = {lower_elementwise},
    [KILN_OP_SQUARE] = {lower_elementwise},
    [KILN_OP_RECIP] = {lower_elementwise},
    [KILN_OP_TANH] = {lower_elementwise},
    [KILN_OP_SIGMOID] = {lower_elementwise},
    [KILN_OP_RELU] = {lower_elementwise},
    [KILN_OP_SILU] = {lower_elementwise},
    [KILN_OP_GELU] = {lower_elementwise},
    [KILN_OP_GELU_TANH] = {lower_elementwise},
    [KILN_OP_ERF] = {lower_elementwise},
    [KILN_OP_SCALE] = {lower_elementwise},
    [KILN_OP_CAST] = {lower_elementwise},
    [KILN_OP_DROPOUT] = {lower_elementwise},

    [KILN_OP_SUM] = {lower_reduce, false, reduce_scratch_bytes},
    [KILN_OP_MEAN] = {lower_reduce, false, reduce_scratch_bytes},
    [KILN_OP_MAX] = {lower_reduce, false, reduce_scratch_bytes},

    [KILN_OP_MATMUL] = {lower_matmul, false, matmul_scratch_bytes},

    [KILN_OP_RESHAPE] = {lower_copy},
    [KILN_OP_TRANSPOSE] = {lower_transpose},
    [KILN_OP_SLICE] = {lower_slice},
    [KILN_OP_CONCAT] = {lower_concat},
    [KILN_OP_BROADCAST] = {lower_broadcast},
    [KILN_OP_GATHER] = {lower_gather, true},
    [KILN_OP_UPDATE_SLICE] = {lower_update_slice, true},

    [KILN_OP_SOFTMAX] = {lower_softmax},
    [KILN_OP_LOG_SOFTMAX] = {lower_softmax},
    [KILN_OP_LAYERNORM] = {lower_layernorm},
    [KILN_OP_ATTENTION] = {lower_attention, false, attention_scratch_bytes},
    [KILN_OP_ATTENTION_LSE] = {lower_attention_lse, false, attention_scratch_bytes},
    [KILN_OP_CROSS_ENTROPY] = {lower_cross_entropy, true, cross_entropy_scratch_bytes},

    [KILN_OP_UNSLICE] = {lower_unslice},
    [KILN_OP_SCATTER_ADD] = {lower_scatter_add, true},
    [KILN_OP_LAYERNORM_GRAD] = {lower_layernorm_grad},
    [KILN_OP_ATTENTION_GRAD] = {lower_attention_grad, false, attention_grad_scratch_bytes},
    [KILN_OP_CROSS_ENTROPY_GRAD] = {lower_cross_entropy_grad, true},
};

void lower_scratch_sizes(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_target *t, int64_t *bytes)
{
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        const lower_row *row = &kiln_lower_table[g->nodes[id].op];
        bytes[id] = row->scratch ? row->scratch(g, &g->nodes[id], t) : 0;
    }
    /* a GEMM kernel of several parts runs them one after another in its first part's
     * scratch (the parts have one shape); a bias gradient in it needs none */
    for (uint32_t k = 0; s && k < s->n_kernels; k++) {
        const kiln_kernel *kn = &s->kernels[k];
        if (kn->kind != KILN_KERNEL_GEMM) continue;
        gemm_kernel gks[8];
        KILN_ASSERT(kn->parts >= 1 && kn->parts <= 8);
        for (uint32_t q = 0; q < kn->parts; q++) {
            gemm_kernel_describe_part(g, s, k, q, &gks[q]);
            if (gks[q].colsum != KILN_NONE) bytes[gks[q].colsum] = 0;
            if (q > 0) bytes[gks[q].mm] = 0;
        }
        /* parts run as one job (kiln_cg_gemm_group) need the group's scratch */
        if (kn->parts > 1 && bytes[gks[0].mm] > 0) {
            int64_t group = gemm_kernel_parts_scratch_bytes(t, gks, kn->parts);
            if (group > bytes[gks[0].mm]) bytes[gks[0].mm] = group;
        }
    }
    /* a ROW kernel's row buffers: on its first reduction (a row reduction needs none) */
    for (uint32_t k = 0; s && k < s->n_kernels; k++) {
        if (s->kernels[k].kind != KILN_KERNEL_ROW) continue;
        int64_t b;
        uint32_t at = lower_row_scratch(g, s, k, &b);
        bytes[at] = b;
    }
    /* an attention kernel needs its group's scratch, once: on its first node */
    for (uint32_t k = 0; s && k < s->n_kernels; k++) {
        if (s->kernels[k].kind == KILN_KERNEL_ATTENTION) { /* attention and attention_lse: one forward */
            for (uint32_t i = 0; i < s->kernels[k].n; i++) {
                uint32_t m = s->members[s->kernels[k].first + i];
                if (g->nodes[m].op == KILN_OP_ATTENTION_LSE) bytes[m] = 0;
            }
            attention_kernel ak;
            attention_kernel_describe(g, s, k, &ak);
            bytes[ak.first] = attention_forward_scratch_bytes(g, &g->nodes[ak.first], t, &ak.layout);
        }
        if (s->kernels[k].kind != KILN_KERNEL_ATTENTION_GRAD) continue;
        attention_kernel ak;
        attention_kernel_describe(g, s, k, &ak);
        for (int w = 0; w < KILN_WRT_COUNT; w++)
            if (ak.node_of_wrt[w] != KILN_NONE) bytes[ak.node_of_wrt[w]] = 0;
        bytes[ak.first] = attention_grad_group_scratch_bytes(g, ak.node_of_wrt, t, &ak.layout);
    }
}

LLVMValueRef lower_kernel(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, uint32_t id, bool has_scratch)
{
    const kiln_node *n = &g->nodes[id];
    const lower_row *row = &kiln_lower_table[n->op];
    KILN_ASSERT(row->lower != NULL);
    KILN_ASSERT(n->n_in <= 64);
    char name[64];
    snprintf(name, sizeof name, "k%u_%s", id, kiln_op_table[n->op].name);
    unsigned n_ptrs = 1 + n->n_in + (has_scratch ? 1 : 0);
    lower_ctx c = {.cg = cg, .gemm_cg = gemm_cg, .g = g, .id = id, .node = n};
    c.fn = cg_kernel_begin(cg, name, row->can_fail ? cg->t_i32 : cg->t_void, n_ptrs);
    c.out = LLVMGetParam(c.fn, 0);
    LLVMSetValueName2(c.out, "out", 3);
    for (uint32_t i = 0; i < n->n_in; i++) {
        c.in[i] = LLVMGetParam(c.fn, 1 + i);
        char pname[16];
        snprintf(pname, sizeof pname, "in%u", i);
        LLVMSetValueName2(c.in[i], pname, strlen(pname));
    }
    if (has_scratch) {
        c.scratch = LLVMGetParam(c.fn, n_ptrs - 1);
        LLVMSetValueName2(c.scratch, "scratch", 7);
    }
    row->lower(&c);
    /* every lowering leaves the builder at the end of its body: close the function */
    if (row->can_fail) LLVMBuildRet(cg->b, cg_i32(cg, KILN_RC_OK));
    else LLVMBuildRetVoid(cg->b);
    return c.fn;
}

/* Appends to a key; false once it no longer fits. */
static bool key_add(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *len) return false;
    *len += (size_t)n;
    return true;
}

bool lower_kernel_key(const kiln_graph *g, uint32_t id, bool has_scratch, char *buf, size_t size)
{
    const kiln_node *n = &g->nodes[id];
    if (n->op == KILN_OP_CONSTANT) return false; /* its kernel reads its own global */
    const kiln_attrs *a = &n->attrs;
    unsigned bits = kiln_op_table[n->op].attrs;
    char t[160];
    size_t len = 0;
    bool ok = key_add(buf, size, &len, "%s%s %s(", kiln_op_table[n->op].name, has_scratch ? "+s" : "",
                      kiln_type_str(&n->type, t, sizeof t));
    for (uint32_t i = 0; i < n->n_in && ok; i++)
        ok = key_add(buf, size, &len, "%s ", kiln_type_str(&g->nodes[n->in[i]].type, t, sizeof t));
    ok = ok && key_add(buf, size, &len, ")");
    if (bits & KILN_A_AXIS) ok = ok && key_add(buf, size, &len, " axis=%lld", (long long)a->axis);
    if (bits & KILN_A_AXES) {
        ok = ok && key_add(buf, size, &len, " axes=");
        for (int i = 0; i < a->n_axes && ok; i++) ok = key_add(buf, size, &len, "%lld,", (long long)a->axes[i]);
    }
    if (bits & KILN_A_KEEPDIMS) ok = ok && key_add(buf, size, &len, " keep=%d", a->keepdims);
    if (bits & KILN_A_PERM) {
        ok = ok && key_add(buf, size, &len, " perm=");
        for (int i = 0; i < n->type.rank && ok; i++) ok = key_add(buf, size, &len, "%lld,", (long long)a->perm[i]);
    }
    if (bits & KILN_A_SLICE)
        ok = ok && key_add(buf, size, &len, " slice=%lld:%lld:%lld", (long long)a->start, (long long)a->end,
                           (long long)a->step);
    if (bits & KILN_A_SCALAR) ok = ok && key_add(buf, size, &len, " scalar=%a", a->scalar);
    if (bits & KILN_A_TRANSPOSE) ok = ok && key_add(buf, size, &len, " t=%d%d", a->transpose_a, a->transpose_b);
    if (bits & KILN_A_ATTN)
        ok = ok && key_add(buf, size, &len, " attn=%d%d%d%d%d drop=%a/%lld", a->causal, a->has_mask, a->has_bias,
                           a->alibi, a->relative, a->attn_dropout, (long long)(a->attn_dropout != 0 ? a->stream : 0));
    if (bits & KILN_A_IGNORE) ok = ok && key_add(buf, size, &len, " ignore=%lld", (long long)a->ignore_index);
    if (bits & KILN_A_STREAM) ok = ok && key_add(buf, size, &len, " stream=%lld", (long long)a->stream);
    if (bits & KILN_A_WRT) ok = ok && key_add(buf, size, &len, " wrt=%d", a->wrt);
    return ok;
}
