/* lower_loop.c — a LOOP kernel: elementwise nodes of one shape as one loop nest.
 *
 * Design. passes/fuse.c groups elementwise nodes whose results share one shape S; this
 * file emits them as one function over S. Its parameters are the kernel's operands (see
 * loop_operands): each outside input once, and each member whose value leaves the kernel
 * (an output, an update, a value read by another kernel). Inside, one loop nest walks S
 * with a constant stride per operand (row-major for results, numpy broadcast strides for
 * inputs), collapsed like an elementwise kernel's (cg_collapse_dims) and split across
 * threads (cg_parallel_nest); the body loads each input once, computes every member with
 * the same scalar function a one-node kernel applies (lower_scalar_op), rounded as that
 * kernel rounds it (cg_node_result: no FMA of one member's fmul with the next one's fadd),
 * so a fused kernel gives the bits the unfused kernels gave, and stores the results that
 * leave. Values that
 * stay inside never touch memory.
 *
 * An update computed in place (the training step's new parameter written over the old
 * one, memplan.c) is one operand read and written at the same element: one pointer, so
 * the noalias promise holds.
 */
#include <stdio.h>
#include <string.h>

#include "lower.h"

static const kiln_kernel *kernel(const kiln_kernel_schedule *s, uint32_t k) { return &s->kernels[k]; }
static uint32_t member(const kiln_kernel_schedule *s, const kiln_kernel *kn, uint32_t i) { return s->members[kn->first + i]; }

static int find_reads(const loop_operand *ops, int n, uint32_t node)
{
    for (int i = 0; i < n; i++)
        if (ops[i].reads == node) return i;
    return -1;
}

int loop_operands(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p, uint32_t k, loop_operand *ops)
{
    const kiln_kernel *kn = kernel(s, k);
    return loop_operands_of(g, s, p, k, &s->members[kn->first], kn->n, ops);
}

int loop_operands_of(const kiln_graph *g, const kiln_kernel_schedule *s, const kiln_memplan *p, uint32_t k,
                     const uint32_t *members, uint32_t n_members, loop_operand *ops)
{
    int n = 0;
    for (uint32_t i = 0; i < n_members; i++) { /* results */
        uint32_t m = members[i];
        if (s->internal[m]) continue;
        KILN_ASSERT(n < CG_MAX_OPS);
        ops[n++] = (loop_operand){m, KILN_NONE, true};
    }
    int n_results = n;
    for (uint32_t i = 0; i < n_members; i++) { /* inputs from outside */
        const kiln_node *mn = &g->nodes[members[i]];
        for (uint32_t j = 0; j < mn->n_in; j++) {
            uint32_t x = mn->in[j];
            if (s->kernel_of[x] == k || find_reads(ops, n, x) >= 0) continue;
            /* a result written in place over this input reads it through its own pointer */
            int inplace = -1;
            for (int r = 0; r < n_results && inplace < 0; r++) {
                const kiln_home *h = &p->homes[ops[r].node];
                if (h->kind == KILN_HOME_UPDATE && h->index == x && ops[r].reads == KILN_NONE) inplace = r;
            }
            if (inplace >= 0) {
                ops[inplace].reads = x;
                continue;
            }
            KILN_ASSERT(n < CG_MAX_OPS);
            ops[n++] = (loop_operand){x, x, false};
        }
    }
    return n;
}

/* ---- the kernel ------------------------------------------------------------------------------ */

LLVMValueRef lower_loop_elements(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                                 const loop_operand *ops, int n_ops, const LLVMValueRef *vals, const LLVMValueRef *off,
                                 uint32_t want)
{
    const kiln_kernel *kn = kernel(s, k);
    LLVMValueRef loaded[CG_MAX_OPS] = {0};
    LLVMValueRef value[64] = {0}; /* per member */
    KILN_ASSERT(kn->n <= 64);
    LLVMValueRef wanted = NULL;
    for (uint32_t i = 0; i < kn->n; i++) {
        uint32_t id = member(s, kn, i);
        const kiln_node *n = &g->nodes[id];
        if (kiln_op_table[n->op].kind != KILN_KIND_ELEMENTWISE) continue; /* a REDUCE kernel's reduction */
        LLVMValueRef x[3];
        KILN_ASSERT(n->n_in <= 3);
        for (uint32_t j = 0; j < n->n_in; j++) {
            uint32_t in = n->in[j];
            if (s->kernel_of[in] == k) { /* a member before this one */
                uint32_t mi = 0;
                while (member(s, kn, mi) != in) mi++;
                KILN_ASSERT(value[mi] != NULL);
                x[j] = value[mi];
                continue;
            }
            int o = find_reads(ops, n_ops, in);
            KILN_ASSERT(o >= 0);
            if (!loaded[o]) loaded[o] = cg_load(cg, g->nodes[in].type.dtype, vals[o], off[o]);
            x[j] = loaded[o];
        }
        value[i] = cg_node_result(cg, lower_scalar_op(cg, n, x)); /* no FMA with a later member */
        if (id == want) wanted = value[i];
    }
    for (int o = 0; o < n_ops; o++) {
        if (!ops[o].writes) continue;
        uint32_t mi = 0;
        while (member(s, kn, mi) != ops[o].node) mi++;
        KILN_ASSERT(value[mi] != NULL);
        cg_store(cg, g->nodes[ops[o].node].type.dtype, vals[o], off[o], value[mi]);
    }
    return wanted;
}

LLVMValueRef lower_operands_function(kiln_cg *cg, const char *name, const loop_operand *ops, int n_ops,
                                     unsigned extra, LLVMValueRef *vals)
{
    LLVMValueRef fn = cg_kernel_begin(cg, name, cg->t_void, (unsigned)n_ops + extra);
    for (int o = 0; o < n_ops; o++) {
        vals[o] = LLVMGetParam(fn, (unsigned)o);
        char pname[24];
        snprintf(pname, sizeof pname, "%s%u", ops[o].writes ? "out" : "in", ops[o].node);
        LLVMSetValueName2(vals[o], pname, strlen(pname));
    }
    return fn;
}

typedef struct loop_body {
    const kiln_graph *g;
    const kiln_kernel_schedule *s;
    uint32_t k;
    const loop_operand *ops;
    int n_ops;
} loop_body;

static void emit_loop_body(kiln_cg *cg, void *user, const LLVMValueRef *vals, const LLVMValueRef *off)
{
    loop_body *lb = user;
    lower_loop_elements(cg, lb->g, lb->s, lb->k, lb->ops, lb->n_ops, vals, off, KILN_NONE);
}

LLVMValueRef lower_loop_kernel(kiln_cg *cg, const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k,
                               const loop_operand *ops, int n_ops)
{
    const kiln_kernel *kn = kernel(s, k);
    uint32_t first = member(s, kn, 0);
    const kiln_type *shape = &g->nodes[member(s, kn, kn->n - 1)].type;
    char name[64];
    snprintf(name, sizeof name, "k%u_loop%u", first, kn->n);
    LLVMValueRef vals[CG_MAX_OPS];
    LLVMValueRef fn = lower_operands_function(cg, name, ops, n_ops, 0, vals);
    if (kiln_type_numel(shape) > 0) {
        int64_t dims[KILN_MAX_RANK], stride[CG_MAX_OPS][KILN_MAX_RANK];
        for (int d = 0; d < shape->rank; d++) dims[d] = shape->dims[d];
        for (int o = 0; o < n_ops; o++) {
            if (ops[o].writes) cg_row_major_strides(shape, stride[o]);
            else cg_bcast_strides(&g->nodes[ops[o].node].type, shape->rank, stride[o]);
        }
        int rank = cg_collapse_dims(shape->rank, dims, n_ops, stride);
        loop_body lb = {g, s, k, ops, n_ops};
        cg_parallel_nest(cg, "loop", rank, dims, n_ops, stride, kn->n, vals, (unsigned)n_ops, emit_loop_body, &lb);
    }
    LLVMBuildRetVoid(cg->b);
    return fn;
}

bool lower_loop_key(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, const loop_operand *ops, int n_ops,
                    char *buf, size_t size)
{
    const kiln_kernel *kn = kernel(s, k);
    size_t len = 0;
    char t[160], mk[1024];
    int w = snprintf(buf, size, "%s %s |", kiln_kernel_kind_name(kn->kind),
                     kiln_type_str(&g->nodes[member(s, kn, 0)].type, t, sizeof t));
    if (w < 0 || (size_t)w >= size) return false;
    len = (size_t)w;
    for (int o = 0; o < n_ops; o++) { /* operand types and roles */
        w = snprintf(buf + len, size - len, " o%d%s%s:%s", o, ops[o].writes ? "w" : "", ops[o].reads != KILN_NONE ? "r" : "",
                     kiln_type_str(&g->nodes[ops[o].reads != KILN_NONE ? ops[o].reads : ops[o].node].type, t, sizeof t));
        if (w < 0 || (size_t)w >= size - len) return false;
        len += (size_t)w;
    }
    for (uint32_t i = 0; i < kn->n; i++) { /* each member: its op and where its inputs come from */
        uint32_t id = member(s, kn, i);
        const kiln_node *n = &g->nodes[id];
        if (!lower_kernel_key(g, id, false, mk, sizeof mk)) return false;
        w = snprintf(buf + len, size - len, " | %s <-", mk);
        if (w < 0 || (size_t)w >= size - len) return false;
        len += (size_t)w;
        for (uint32_t j = 0; j < n->n_in; j++) {
            uint32_t in = n->in[j];
            int from;
            char kind;
            if (s->kernel_of[in] == k) {
                uint32_t mi = 0;
                while (member(s, kn, mi) != in) mi++;
                from = (int)mi, kind = 'm';
            } else {
                from = find_reads(ops, n_ops, in), kind = 'o';
            }
            w = snprintf(buf + len, size - len, " %c%d", kind, from);
            if (w < 0 || (size_t)w >= size - len) return false;
            len += (size_t)w;
        }
        for (int o = 0; o < n_ops; o++)
            if (ops[o].writes && ops[o].node == id) {
                w = snprintf(buf + len, size - len, " ->o%d", o);
                if (w < 0 || (size_t)w >= size - len) return false;
                len += (size_t)w;
            }
    }
    return true;
}
