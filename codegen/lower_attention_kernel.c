/* lower_attention_kernel.c — the schedule's attention kernels: layouts folded in.
 *
 * Design. passes/fuse.c makes two kinds of attention kernel: a forward attention, and the
 * attention_grad nodes of one attention computed together; either may carry, as members,
 * the transposes that read its results (so it writes the transposed layout itself), and
 * its q, k, v, g inputs may be strided views (transposes no kernel computes). The
 * multi-head attention of the frontend is exactly that: (B,T,D) projections reshaped to
 * (B,T,H,dh) and transposed to (B,H,T,dh) for the kernel, and back after it. Here those
 * transposes become operand strides (attn_layout) of lower_attention.c's kernels, so no
 * transpose runs and no transposed copy is stored, forward or backward.
 *
 * A q or k input that is a rotary embedding no kernel computes (the schedule's `rope`)
 * is passed as the rotation's x, with its cos and sin tables after the inputs
 * (attn_layout.rope_q/rope_k): the kernel rotates rows as it loads them. A gradient
 * kernel whose members include the rotation's gradient of dq or dk (fuse.c) writes that
 * gradient, dx = Rᵀ·dq, instead (attn_layout.unrope_q/unrope_k: un-rotated on store).
 *
 * A forward kernel also computes the attention_lse node of its attention (the row
 * log-sum-exp the backward reads); and when an attention_grad reads the forward output
 * while the kernel writes it transposed, the kernel writes a row-major copy too (ATTN_O).
 */
#include <stdio.h>
#include <string.h>

#include "lower.h"

/* Strides of every dim but the last of transpose x (whose input is row-major memory, a
 * view of it, or the input's own buffer) as read from that memory. */
static void view_strides(const kiln_graph *g, uint32_t x, int64_t *st)
{
    const kiln_node *n = &g->nodes[x];
    int64_t src[KILN_MAX_RANK];
    cg_row_major_strides(&g->nodes[n->in[0]].type, src);
    for (int d = 0; d < n->type.rank - 1; d++) st[d] = src[n->attrs.perm[d]];
}

/* Strides of every dim but the last of value a, written through transpose y = a^perm
 * (row-major in y's memory). */
static void written_strides(const kiln_graph *g, uint32_t y, int64_t *st)
{
    const kiln_node *n = &g->nodes[y];
    int64_t dst[KILN_MAX_RANK];
    cg_row_major_strides(&n->type, dst);
    for (int e = 0; e < n->type.rank; e++)
        if (n->attrs.perm[e] < n->type.rank - 1) st[n->attrs.perm[e]] = dst[e];
}

/* The transpose member reading result a, or KILN_NONE. */
static uint32_t transpose_of(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, uint32_t a)
{
    const kiln_kernel *kn = &s->kernels[k];
    for (uint32_t i = 0; i < kn->n; i++) {
        uint32_t m = s->members[kn->first + i];
        if (g->nodes[m].op == KILN_OP_TRANSPOSE && g->nodes[m].in[0] == a) return m;
    }
    return KILN_NONE;
}

/* The member of kernel k that is the rotation gradient of result a (fuse.c), or KILN_NONE. */
static uint32_t rope_grad_member(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, uint32_t a)
{
    const kiln_kernel *kn = &s->kernels[k];
    for (uint32_t i = 0; i < kn->n; i++) {
        uint32_t m = s->members[kn->first + i];
        kiln_rope_grad rg;
        if (g->nodes[m].op == KILN_OP_ADD && kiln_rope_grad_match(g, m, &rg) && rg.G == a) return m;
    }
    return KILN_NONE;
}

/* The inputs of attention node n as arguments: q, k, v, [mask], [bias], [o, lse], [g] —
 * strided views read in place. */
static void read_inputs(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_node *n, attention_kernel *ak)
{
    uint32_t tables[4], n_tables = 0;
    for (uint32_t j = 0; j < n->n_in; j++) {
        uint32_t x = n->in[j];
        kiln_rope rope;
        if (j < 2 && s->rope && s->rope[x] == KILN_ROPE_RESULT && kiln_rope_match(g, x, &rope)) {
            /* q or k rotated on load: the kernel reads the rotation's x and its tables */
            x = rope.x;
            if (j == 0) ak->layout.rope_q = true;
            else ak->layout.rope_k = true;
            tables[n_tables++] = rope.cos;
            tables[n_tables++] = rope.sin;
        }
        ak->args[ak->n_args++] = x;
        attn_operand op = j == 0 ? ATTN_Q : j == 1 ? ATTN_K : j == 2 ? ATTN_V : ATTN_G;
        bool slot = j < 3 || (ak->grad && j == n->n_in - 1);
        if (ak->grad && s->stored_as && s->stored_as[x] != KILN_NONE) { /* o, in its transpose's buffer */
            written_strides(g, s->stored_as[x], ak->strides[ATTN_O]);
            ak->layout.stride[ATTN_O] = ak->strides[ATTN_O];
        }
        if (slot && s->view[x]) {
            view_strides(g, x, ak->strides[op]);
            ak->layout.stride[op] = ak->strides[op];
        }
    }
    for (uint32_t i = 0; i < n_tables; i++) ak->args[ak->n_args++] = tables[i];
}

void attention_kernel_describe(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, attention_kernel *ak)
{
    memset(ak, 0, sizeof *ak);
    const kiln_kernel *kn = &s->kernels[k];
    for (int w = 0; w < KILN_WRT_COUNT; w++) ak->node_of_wrt[w] = KILN_NONE;
    ak->grad = kn->kind == KILN_KERNEL_ATTENTION_GRAD;
    ak->first = KILN_NONE;
    uint32_t att = KILN_NONE, lse = KILN_NONE;
    for (uint32_t i = 0; i < kn->n; i++) {
        uint32_t m = s->members[kn->first + i];
        const kiln_node *n = &g->nodes[m];
        if (!kiln_is_attention_op(n->op)) continue;
        if (n->op == KILN_OP_ATTENTION) att = m;
        if (n->op == KILN_OP_ATTENTION_LSE) lse = m;
        if (ak->grad) {
            if (ak->first == KILN_NONE) ak->first = m;
            ak->node_of_wrt[n->attrs.wrt] = m;
        }
    }
    if (!ak->grad) { /* the attention node (its scratch and key) when there is one */
        ak->first = att != KILN_NONE ? att : lse;
        KILN_ASSERT(ak->first != KILN_NONE);
        const kiln_node *n = &g->nodes[ak->first];
        uint32_t y = att != KILN_NONE ? transpose_of(g, s, k, att) : KILN_NONE;
        bool in_y = s->stored_as && att != KILN_NONE && s->stored_as[att] != KILN_NONE; /* no copy needed */
        ak->want = (attn_fwd_want){att != KILN_NONE, y != KILN_NONE && !s->internal[att] && !in_y, lse != KILN_NONE};
        if (ak->want.out) {
            ak->args[ak->n_args++] = y != KILN_NONE ? y : att;
            if (y != KILN_NONE) {
                written_strides(g, y, ak->strides[ATTN_OUT]);
                ak->layout.stride[ATTN_OUT] = ak->strides[ATTN_OUT];
            }
        }
        if (ak->want.o) ak->args[ak->n_args++] = att;
        if (ak->want.lse) ak->args[ak->n_args++] = lse;
        read_inputs(g, s, n, ak);
        return;
    }
    KILN_ASSERT(ak->first != KILN_NONE);
    const kiln_node *n = &g->nodes[ak->first];
    /* results, in the kernel's parameter order */
    static const attn_operand grad_operand[KILN_WRT_COUNT] = {ATTN_DQ, ATTN_DK, ATTN_DV, ATTN_DSCORES};
    for (int w = 0; w < KILN_WRT_COUNT; w++) {
        uint32_t a = ak->node_of_wrt[w];
        if (a == KILN_NONE) continue;
        uint32_t dx = rope_grad_member(g, s, k, a);
        if (dx != KILN_NONE) { /* written un-rotated: the rotation's gradient */
            a = dx;
            if (w == KILN_WRT_Q) ak->layout.unrope_q = true;
            else ak->layout.unrope_k = true;
        }
        uint32_t y = transpose_of(g, s, k, a);
        attn_operand op = grad_operand[w];
        ak->args[ak->n_args++] = y != KILN_NONE ? y : a;
        if (y != KILN_NONE) {
            written_strides(g, y, ak->strides[op]);
            ak->layout.stride[op] = ak->strides[op];
        }
    }
    read_inputs(g, s, n, ak);
}

LLVMValueRef lower_attention_kernel(kiln_cg *cg, kiln_cg *gemm_cg, const kiln_graph *g, const attention_kernel *ak,
                                    bool has_scratch)
{
    if (ak->grad) return lower_attention_grad_group_with_layout(cg, g, ak->node_of_wrt, has_scratch, &ak->layout);
    return lower_attention_forward_group(cg, g, ak->first, ak->want, has_scratch, &ak->layout);
}

bool attention_kernel_key(const kiln_graph *g, const attention_kernel *ak, bool has_scratch, char *buf, size_t size)
{
    if (!lower_kernel_key(g, ak->first, has_scratch, buf, size)) return false;
    size_t len = strlen(buf);
    if (ak->layout.train_dropout) { /* the node's stream is in the key: never shared across layers */
        int n = snprintf(buf + len, size - len, " dropseed=%llu", (unsigned long long)ak->layout.dropout_seed);
        if (n < 0 || (size_t)n >= size - len) return false;
        len += (size_t)n;
    }
    if (ak->layout.rope_q || ak->layout.rope_k) {
        int n = snprintf(buf + len, size - len, " rope=%d%d%d%d", ak->layout.rope_q, ak->layout.rope_k,
                         ak->layout.unrope_q, ak->layout.unrope_k);
        if (n < 0 || (size_t)n >= size - len) return false;
        len += (size_t)n;
    }
    if (!ak->grad) {
        int n = snprintf(buf + len, size - len, " want=%d%d%d", ak->want.out, ak->want.o, ak->want.lse);
        if (n < 0 || (size_t)n >= size - len) return false;
        len += (size_t)n;
    }
    for (int w = 0; w < KILN_WRT_COUNT && ak->grad; w++) {
        int n = snprintf(buf + len, size - len, "%c", ak->node_of_wrt[w] != KILN_NONE ? "qkvs"[w] : '-');
        if (n < 0 || (size_t)n >= size - len) return false;
        len += (size_t)n;
    }
    int rank = g->nodes[g->nodes[ak->first].in[0]].type.rank;
    for (int op = 0; op < ATTN_N_OPERANDS; op++) {
        if (!ak->layout.stride[op]) continue;
        int n = snprintf(buf + len, size - len, " L%d:", op);
        if (n < 0 || (size_t)n >= size - len) return false;
        len += (size_t)n;
        for (int d = 0; d < rank - 1; d++) {
            n = snprintf(buf + len, size - len, "%lld,", (long long)ak->strides[op][d]);
            if (n < 0 || (size_t)n >= size - len) return false;
            len += (size_t)n;
        }
    }
    return true;
}
