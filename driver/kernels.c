/* kernels.c — kernels described for people (kernels.h).
 *
 * Design: everything is read off the schedule and the graph, nothing is stored; a
 * kernel's members are its nodes in node order, and the value a kernel "writes last" is
 * its last member that is not internal (internal values never leave the kernel, so
 * they are not what a reader of the table is looking for). Names come from the model
 * file (node origin and label) so a row can be traced back to the layer it came from.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"

static uint32_t member(const kiln_kernel_schedule *s, uint32_t k, uint32_t i)
{
    return s->members[s->kernels[k].first + i];
}

/* The last member that leaves the kernel (some member always does), and how many do. */
static uint32_t last_output(const kiln_kernel_schedule *s, uint32_t k, uint32_t *n_out)
{
    const kiln_kernel *kn = &s->kernels[k];
    uint32_t last = member(s, k, kn->n - 1), n = 0;
    for (uint32_t i = 0; i < kn->n; i++) {
        uint32_t id = member(s, k, i);
        if (s->internal[id]) continue;
        last = id;
        n++;
    }
    if (n_out) *n_out = n ? n : 1;
    return last;
}

/* Appends to buf (keeping it NUL-terminated and within size). */
__attribute__((format(printf, 4, 5)))
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    if (*len >= size) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (w > 0) *len = *len + (size_t)w < size ? *len + (size_t)w : size - 1;
}

void kernel_kind(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size)
{
    const kiln_kernel *kn = &s->kernels[k];
    size_t len = 0;
    buf[0] = '\0';
    switch (kn->kind) {
    case KILN_KERNEL_MULTI: append(buf, size, &len, "multi(%u tensors)", kn->parts); break;
    case KILN_KERNEL_REDUCE: /* the reduction, then its producers: "sum+loop" */
        for (uint32_t i = 0; i < kn->n; i++) {
            kiln_op op = g->nodes[member(s, k, i)].op;
            if (kiln_op_table[op].kind == KILN_KIND_REDUCTION) append(buf, size, &len, "%s", kiln_op_table[op].name);
        }
        append(buf, size, &len, kn->n > 2 ? "+loop" : "+%s", kiln_op_table[g->nodes[member(s, k, 0)].op].name);
        break;
    case KILN_KERNEL_NODE: append(buf, size, &len, "%s", kiln_op_table[g->nodes[member(s, k, 0)].op].name); break;
    case KILN_KERNEL_GEMM:
        append(buf, size, &len, "gemm");
        for (uint32_t i = 0; i < kn->n; i++) {
            kiln_op op = g->nodes[member(s, k, i)].op;
            if (op != KILN_OP_MATMUL) append(buf, size, &len, "+%s", kiln_op_table[op].name);
        }
        break;
    default: append(buf, size, &len, "%s", kiln_kernel_kind_name(kn->kind)); break; /* loop, row, attention… */
    }
}

void kernel_ops(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size)
{
    const kiln_kernel *kn = &s->kernels[k];
    size_t len = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < kn->n; i++) {
        kiln_op op = g->nodes[member(s, k, i)].op;
        bool seen = false;
        for (uint32_t j = 0; j < i && !seen; j++) seen = g->nodes[member(s, k, j)].op == op;
        if (seen) continue;
        int count = 0;
        for (uint32_t j = i; j < kn->n; j++) count += g->nodes[member(s, k, j)].op == op;
        append(buf, size, &len, "%s%s", len ? " " : "", kiln_op_table[op].name);
        if (count > 1) append(buf, size, &len, "×%d", count);
    }
}

void kernel_type(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size)
{
    uint32_t n_out;
    uint32_t id = last_output(s, k, &n_out);
    char t[160];
    snprintf(buf, size, "%s", kiln_type_str(&g->nodes[id].type, t, sizeof t));
    size_t len = strlen(buf);
    if (n_out > 1) append(buf, size, &len, "+%u", n_out - 1);
}

void kernel_where(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size)
{
    uint32_t id = last_output(s, k, NULL);
    const kiln_node *n = &g->nodes[id];
    const char *origin = n->origin, *label = n->label;
    /* a fused kernel's last value may be anonymous: take the nearest member that is not */
    const kiln_kernel *kn = &s->kernels[k];
    for (uint32_t i = kn->n; i-- > 0 && (!origin || !label);) {
        const kiln_node *m = &g->nodes[member(s, k, i)];
        if (!origin) origin = m->origin;
        if (!label) label = m->label;
    }
    size_t len = 0;
    buf[0] = '\0';
    if (origin) append(buf, size, &len, "%s", origin);
    if (label) append(buf, size, &len, "%s%s", len ? " " : "", label);
    /* anonymous values (a projection, a gradient) are told apart by the parameter they read */
    uint32_t param = KILN_NONE;
    for (uint32_t i = 0; i < kn->n && param == KILN_NONE; i++) {
        const kiln_node *m = &g->nodes[member(s, k, i)];
        for (uint32_t j = 0; j < m->n_in && param == KILN_NONE; j++) {
            uint32_t in = m->in[j];
            while (s->kernel_of[in] == KILN_NONE && g->nodes[in].n_in > 0) in = g->nodes[in].in[0];
            if (g->nodes[in].op == KILN_OP_PARAM) param = in;
        }
    }
    if (param != KILN_NONE && g->nodes[param].attrs.name)
        append(buf, size, &len, "%s(%s)", len ? " " : "", g->nodes[param].attrs.name);
    append(buf, size, &len, "%s%%%u", len ? " " : "", id);
}

void kernel_describe(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k, char *buf, size_t size)
{
    char kind[128], ops[256], type[192], where[256];
    kernel_kind(g, s, k, kind, sizeof kind);
    kernel_ops(g, s, k, ops, sizeof ops);
    kernel_type(g, s, k, type, sizeof type);
    kernel_where(g, s, k, where, sizeof where);
    uint32_t n = s->kernels[k].n;
    snprintf(buf, size, "%s  %u op%s [%s] %s  %s", kind, n, n == 1 ? "" : "s", ops, type, where);
}

int64_t kernel_flops(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t k)
{
    int64_t total = 0;
    for (uint32_t i = 0; i < s->kernels[k].n; i++) total += kiln_node_flops(g, member(s, k, i));
    return total;
}
