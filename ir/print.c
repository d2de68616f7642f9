/* print.c — the IR's text form (grammar in docs/ir.md).
 *
 * One line per node, in id order:
 *
 *   %ID = OP[(%a, %b, ...)] ["name"] [[values]] key=value... : TYPE [@ORIGIN] ["LABEL"]
 *
 * followed by the graph's outputs, loss and updates ("update %TARGET = %VALUE"). The output is a pure function of the graph:
 * attributes appear only when the op's KILN_A_* bits select them, always in the order of
 * those bits; boolean attributes appear as a bare word when true and not at all when
 * false. Attributes that ops with KILN_A_TYPE carry (dtype and shape) are the result
 * type after the colon, so they are not repeated.
 *
 * Numbers are printed in the shortest decimal form that reads back to the same bits
 * (doubles need at most 17 digits, floats 9), so print → parse → print is byte-identical
 * and the text stays readable ("0.02", not "0.020000000000000000416").
 *
 * The printer trusts the graph (run kiln_graph_verify on one you doubt) but never reads
 * outside it: ranks are clamped and unknown op or init codes print as "?".
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ---- a growing output buffer ---------------------------------------------------------- */

typedef struct outbuf {
    char *s;
    size_t len, cap;
} outbuf;

static void out_reserve(outbuf *o, size_t extra)
{
    if (o->len + extra + 1 <= o->cap) return;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + extra + 1) cap *= 2;
    char *s = realloc(o->s, cap);
    KILN_ASSERT(s != NULL);
    o->s = s;
    o->cap = cap;
}

static void out_str(outbuf *o, const char *s)
{
    size_t n = strlen(s);
    out_reserve(o, n);
    memcpy(o->s + o->len, s, n + 1);
    o->len += n;
}

__attribute__((format(printf, 2, 3))) static void out_fmt(outbuf *o, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    KILN_ASSERT(n >= 0);
    if ((size_t)n < sizeof small) {
        out_str(o, small);
        return;
    }
    out_reserve(o, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(o->s + o->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->len += (size_t)n;
}

/* ---- numbers ----------------------------------------------------------------------------- */

/* Shortest "%.Ng" that strtod reads back to the same bits. Starting at 15 digits (every
 * decimal with 15 significant digits survives a trip through double) keeps "%g" from
 * choosing exponent form for ordinary numbers like 100. */
static void out_double(outbuf *o, double v)
{
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (memcmp(&back, &v, sizeof v) == 0) break;
    }
    out_str(o, buf);
}

/* The same for f32 constant values, read back with strtof (6 to 9 digits). */
static void out_float(outbuf *o, float v)
{
    char buf[40];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        float back = strtof(buf, NULL);
        if (memcmp(&back, &v, sizeof v) == 0) break;
    }
    out_str(o, buf);
}

static void out_int_list(outbuf *o, const int64_t *v, int n)
{
    out_str(o, "[");
    for (int i = 0; i < n; i++) out_fmt(o, i ? ",%lld" : "%lld", (long long)v[i]);
    out_str(o, "]");
}

static int clamp_rank(int rank) { return rank < 0 ? 0 : rank > KILN_MAX_RANK ? KILN_MAX_RANK : rank; }

static void out_type(outbuf *o, const kiln_type *t)
{
    out_str(o, kiln_dtype_name(t->dtype));
    out_int_list(o, t->dims, clamp_rank(t->rank));
}

/* ---- strings ----------------------------------------------------------------------------- */

/* A C-like quoted string: \" \\ \n \t, other control bytes as \xHH; bytes >= 0x80 (UTF-8)
 * pass through unchanged. */
static void out_quoted(outbuf *o, const char *s)
{
    out_str(o, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') out_str(o, "\\\"");
        else if (*p == '\\') out_str(o, "\\\\");
        else if (*p == '\n') out_str(o, "\\n");
        else if (*p == '\t') out_str(o, "\\t");
        else if (*p < 0x20 || *p == 0x7f) out_fmt(o, "\\x%02x", *p);
        else {
            char c[2] = {(char)*p, 0};
            out_str(o, c);
        }
    }
    out_str(o, "\"");
}

/* Graph names and origins (JSON paths such as layers[3].heads) print bare when they
 * consist of path characters only, which is nearly always, and quoted otherwise. The
 * parser accepts exactly this character set bare. */
static bool is_bare_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-' || c == '[' || c == ']';
}

static void out_name(outbuf *o, const char *s)
{
    bool bare = *s != 0;
    for (const char *p = s; *p && bare; p++) bare = is_bare_char((unsigned char)*p);
    if (bare) out_str(o, s);
    else out_quoted(o, s);
}

/* ---- nodes -------------------------------------------------------------------------------- */

static const char *init_name(kiln_init init)
{
    switch (init) {
    case KILN_INIT_NORMAL: return "normal";
    case KILN_INIT_ZEROS: return "zeros";
    case KILN_INIT_ONES: return "ones";
    case KILN_INIT_UNIFORM: return "uniform";
    }
    return "?";
}

static void out_values(outbuf *o, const kiln_attrs *a)
{
    out_str(o, " [");
    for (int64_t i = 0; a->values && i < a->n_values; i++) {
        if (i) out_str(o, ",");
        if (a->dtype == KILN_I32) out_fmt(o, "%d", (int)((const int32_t *)a->values)[i]);
        else out_float(o, ((const float *)a->values)[i]);
    }
    out_str(o, "]");
}

/* The keyed attributes, in the order of the KILN_A_* bits. */
static void out_attrs(outbuf *o, const kiln_node *n, const kiln_op_info *info)
{
    const kiln_attrs *a = &n->attrs;
    unsigned bits = info->attrs;
    if (bits & KILN_A_INIT) {
        out_fmt(o, " init=%s", init_name(a->init));
        if (a->init == KILN_INIT_NORMAL || a->init == KILN_INIT_UNIFORM) {
            out_str(o, a->init == KILN_INIT_NORMAL ? " std=" : " bound=");
            out_double(o, a->init_arg);
        }
    }
    if (bits & KILN_A_AXIS) out_fmt(o, " axis=%lld", (long long)a->axis);
    if (bits & KILN_A_AXES) {
        out_str(o, " axes=");
        out_int_list(o, a->axes, clamp_rank(a->n_axes));
    }
    if ((bits & KILN_A_KEEPDIMS) && a->keepdims) out_str(o, " keepdims");
    if (bits & KILN_A_PERM) {
        /* perm has one entry per input dim, and transpose keeps the rank */
        out_str(o, " perm=");
        out_int_list(o, a->perm, clamp_rank(n->type.rank));
    }
    if (bits & KILN_A_SLICE)
        out_fmt(o, " start=%lld end=%lld step=%lld", (long long)a->start, (long long)a->end, (long long)a->step);
    if (bits & KILN_A_SCALAR) {
        out_fmt(o, " %s=", info->scalar_name ? info->scalar_name : "scalar");
        out_double(o, a->scalar);
    }
    if (bits & KILN_A_TRANSPOSE) {
        if (a->transpose_a) out_str(o, " transpose_a");
        if (a->transpose_b) out_str(o, " transpose_b");
    }
    if (bits & KILN_A_ATTN) {
        if (a->causal) out_str(o, " causal");
        if (a->has_mask) out_str(o, " has_mask");
        if (a->has_bias) out_str(o, " has_bias");
        if (a->alibi) out_str(o, " alibi");
        if (a->relative) out_str(o, " relative");
        if (a->attn_dropout != 0) { /* only then: attention without dropout prints as before */
            out_str(o, " dropout=");
            out_double(o, a->attn_dropout);
            out_fmt(o, " stream=%lld", (long long)a->stream);
        }
    }
    if (bits & KILN_A_IGNORE) out_fmt(o, " ignore_index=%lld", (long long)a->ignore_index);
    if (bits & KILN_A_STREAM) out_fmt(o, " stream=%lld", (long long)a->stream);
    if (bits & KILN_A_WRT)
        out_fmt(o, " wrt=%s", a->wrt >= 0 && a->wrt < KILN_WRT_COUNT ? kiln_wrt_names[a->wrt] : "?");
}

static void out_node(outbuf *o, uint32_t id, const kiln_node *n)
{
    out_fmt(o, "%%%u = ", id);
    if ((unsigned)n->op >= KILN_OP_COUNT) {
        out_fmt(o, "?%d\n", (int)n->op);
        return;
    }
    const kiln_op_info *info = &kiln_op_table[n->op];
    out_str(o, info->name);
    if (n->n_in > 0 && n->in) {
        out_str(o, "(");
        for (uint32_t i = 0; i < n->n_in; i++) out_fmt(o, i ? ", %%%u" : "%%%u", n->in[i]);
        out_str(o, ")");
    }
    if (info->attrs & KILN_A_NAME) {
        out_str(o, " ");
        out_quoted(o, n->attrs.name ? n->attrs.name : "");
    }
    if (info->attrs & KILN_A_VALUES) out_values(o, &n->attrs);
    out_attrs(o, n, info);
    out_str(o, " : ");
    out_type(o, &n->type);
    if (n->origin) {
        out_str(o, " @");
        out_name(o, n->origin);
    }
    if (n->label) {
        out_str(o, " ");
        out_quoted(o, n->label);
    }
    out_str(o, "\n");
}

char *kiln_graph_print(const kiln_graph *g)
{
    outbuf o = {0};
    out_str(&o, "graph ");
    out_name(&o, g->name ? g->name : "");
    out_str(&o, "\n");
    for (uint32_t i = 0; i < g->n_nodes; i++) out_node(&o, i, &g->nodes[i]);
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        out_str(&o, "output ");
        out_quoted(&o, g->outputs[i].name ? g->outputs[i].name : "");
        out_fmt(&o, " = %%%u\n", g->outputs[i].node);
    }
    if (g->loss != KILN_NONE) out_fmt(&o, "loss = %%%u\n", g->loss);
    for (uint32_t i = 0; i < g->n_updates; i++)
        out_fmt(&o, "update %%%u = %%%u\n", g->updates[i].target, g->updates[i].value);
    return o.s;
}
