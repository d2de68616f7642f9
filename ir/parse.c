/* parse.c — reads the IR's text form (print.c writes it; grammar in docs/ir.md).
 *
 * A hand-written, line-oriented recursive-descent parser over the whole text with a
 * cursor; nothing is tokenised ahead. Each node line is turned into an op, input ids and
 * a kiln_attrs and goes through kiln_graph_add like any other node, so the shape rules
 * re-check everything; the type written after the colon must then equal the inferred
 * one. The text's node ids must count up from %0 in order, so a text id is the graph id.
 *
 * Errors are diagnostics with file, line and column (1-based, in bytes) and a "near
 * <token>" hint. Parsing stops at the first error: the text form is written by kiln or
 * by hand for tests, and one precise error beats a cascade from a guessed recovery.
 * Every read is bounded by the text's terminating NUL, so no input can crash it.
 *
 * Strings decoded from the text live in a scratch arena freed at the end;
 * kiln_graph_add copies what the graph keeps into the graph's arena.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* kiln_graph_add takes at most this many inputs (it keeps their types on its stack). */
enum { MAX_INPUTS = 64 };

typedef struct parser {
    kiln_graph *g;
    const char *file;
    kiln_diags *diags;
    kiln_arena scratch;
    const char *p;          /* cursor; the text ends at a NUL */
    const char *line_start; /* for columns */
    int line;
    bool has_loss;
} parser;

/* ---- errors ------------------------------------------------------------------------------ */

static int column(const parser *ps, const char *at)
{
    size_t col = (size_t)(at - ps->line_start) + 1;
    return col > INT_MAX ? INT_MAX : (int)col;
}

/* Adds "MESSAGE near 'TOKEN'" at `at` (on the current line) and returns false, so that
 * callers can write `return error_at(...)`. */
__attribute__((format(printf, 3, 4))) static bool error_at(parser *ps, const char *at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    /* the token: up to 24 non-blank bytes, unprintable ones shown as '?' */
    char near[32];
    size_t n = 0;
    while (n < 24 && at[n] && at[n] != ' ' && at[n] != '\t' && at[n] != '\r' && at[n] != '\n') {
        unsigned char c = (unsigned char)at[n];
        near[n++] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
    }
    near[n] = 0;
    if (n > 0)
        kiln_diags_add(ps->diags, ps->file, ps->line, column(ps, at), NULL, "%s near '%s'", msg, near);
    else
        kiln_diags_add(ps->diags, ps->file, ps->line, column(ps, at), NULL, "%s at the end of the %s", msg,
                       *at ? "line" : "text");
    return false;
}

/* ---- characters and small tokens ------------------------------------------------------- */

static void skip_blanks(parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r') ps->p++;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_ident_char(int c) { return is_ident_start(c) || is_digit(c); }

/* Characters of a number word: digits, letters (exponents, inf, nan, hex), '.', signs.
 * The word is then handed whole to strtoll/strtod, which must consume all of it. */
static bool is_number_char(int c) { return is_ident_char(c) || c == '.' || c == '+' || c == '-'; }

/* Same set as print.c's: names printed without quotes. */
static bool is_bare_char(int c)
{
    return is_ident_char(c) || c == '.' || c == '-' || c == '[' || c == ']';
}

/* A span of the text. */
typedef struct span {
    const char *s;
    size_t n;
} span;

static bool span_is(span t, const char *word) { return t.n == strlen(word) && memcmp(t.s, word, t.n) == 0; }

/* Reads an identifier ([A-Za-z_][A-Za-z0-9_]*); an empty span if there is none. */
static span read_ident(parser *ps)
{
    skip_blanks(ps);
    span t = {ps->p, 0};
    if (is_ident_start((unsigned char)*ps->p))
        while (is_ident_char((unsigned char)ps->p[t.n])) t.n++;
    ps->p += t.n;
    return t;
}

static bool expect_char(parser *ps, char c, const char *what)
{
    skip_blanks(ps);
    if (*ps->p != c) return error_at(ps, ps->p, "expected '%c' %s", c, what);
    ps->p++;
    return true;
}

static bool peek_char(parser *ps, char c)
{
    skip_blanks(ps);
    return *ps->p == c;
}

/* ---- numbers ----------------------------------------------------------------------------- */

/* Copies the number word at the cursor into buf (NUL-terminated) and advances. */
static bool read_number_word(parser *ps, char *buf, size_t size, const char **at)
{
    skip_blanks(ps);
    *at = ps->p;
    size_t n = 0;
    while (is_number_char((unsigned char)ps->p[n])) n++;
    if (n == 0) return error_at(ps, ps->p, "expected a number");
    if (n >= size) return error_at(ps, ps->p, "number is too long");
    memcpy(buf, ps->p, n);
    buf[n] = 0;
    ps->p += n;
    return true;
}

static bool parse_i64(parser *ps, int64_t *out)
{
    char buf[64], *end;
    const char *at;
    if (!read_number_word(ps, buf, sizeof buf, &at)) return false;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (end == buf || *end) return error_at(ps, at, "bad integer");
    if (errno == ERANGE) return error_at(ps, at, "integer is out of range");
    *out = v;
    return true;
}

static bool parse_f64(parser *ps, double *out)
{
    char buf[64], *end;
    const char *at;
    if (!read_number_word(ps, buf, sizeof buf, &at)) return false;
    errno = 0;
    double v = strtod(buf, &end);
    if (end == buf || *end) return error_at(ps, at, "bad number");
    /* ERANGE also flags subnormal results, which are exact enough; only overflow is bad */
    if (errno == ERANGE && isinf(v)) return error_at(ps, at, "number is out of range");
    *out = v;
    return true;
}

/* [a,b,...] of at most `max` integers. */
static bool parse_int_list(parser *ps, int64_t *out, int max, int *n, const char *what)
{
    if (!expect_char(ps, '[', what)) return false;
    *n = 0;
    if (peek_char(ps, ']')) {
        ps->p++;
        return true;
    }
    for (;;) {
        skip_blanks(ps);
        if (*n == max) return error_at(ps, ps->p, "more than %d entries in %s", max, what);
        if (!parse_i64(ps, &out[(*n)++])) return false;
        if (peek_char(ps, ']')) break;
        if (!expect_char(ps, ',', "or ']' in a list")) return false;
    }
    ps->p++;
    return true;
}

/* ---- strings and names ------------------------------------------------------------------- */

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A quoted string with the escapes print.c writes (\" \\ \n \t \xHH). Raw control
 * characters are refused so that a missing quote is reported on its own line. */
static bool parse_string(parser *ps, const char **out)
{
    if (!expect_char(ps, '"', "to open a string")) return false;
    const char *start = ps->p;
    size_t raw = 0;
    while (start[raw] && start[raw] != '\n' && start[raw] != '"')
        raw += start[raw] == '\\' && start[raw + 1] ? 2 : 1;
    char *s = kiln_arena_alloc(&ps->scratch, raw + 1); /* decoding never lengthens */
    size_t n = 0;
    for (;;) {
        const char *at = ps->p;
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') break;
        if (c == 0 || c == '\n') return error_at(ps, at, "unterminated string");
        if (c < 0x20 || c == 0x7f) return error_at(ps, at, "control character in a string (write \\x%02x)", c);
        ps->p++;
        if (c != '\\') {
            s[n++] = (char)c;
            continue;
        }
        c = (unsigned char)*ps->p++;
        if (c == '"' || c == '\\') s[n++] = (char)c;
        else if (c == 'n') s[n++] = '\n';
        else if (c == 't') s[n++] = '\t';
        else if (c == 'x' && hex_value((unsigned char)ps->p[0]) >= 0 && hex_value((unsigned char)ps->p[1]) >= 0) {
            int v = hex_value((unsigned char)ps->p[0]) * 16 + hex_value((unsigned char)ps->p[1]);
            if (v == 0) return error_at(ps, at, "a string cannot hold \\x00");
            s[n++] = (char)v;
            ps->p += 2;
        } else {
            if (c == 0) ps->p--; /* never step past the end of the text */
            return error_at(ps, at, "unknown escape in a string");
        }
    }
    ps->p++;
    s[n] = 0;
    *out = s;
    return true;
}

/* A graph name or origin: bare path characters, or a quoted string. */
static bool parse_name(parser *ps, const char **out, const char *what)
{
    skip_blanks(ps);
    if (*ps->p == '"') return parse_string(ps, out);
    size_t n = 0;
    while (is_bare_char((unsigned char)ps->p[n])) n++;
    if (n == 0) return error_at(ps, ps->p, "expected %s", what);
    char *s = kiln_arena_alloc(&ps->scratch, n + 1);
    memcpy(s, ps->p, n);
    ps->p += n;
    *out = s;
    return true;
}

/* %N, which must name a node defined on an earlier line. */
static bool parse_ref(parser *ps, uint32_t *id)
{
    skip_blanks(ps);
    const char *at = ps->p;
    if (*ps->p != '%') return error_at(ps, at, "expected a node reference like %%3");
    ps->p++;
    if (!is_digit((unsigned char)*ps->p)) return error_at(ps, at, "expected a node id after '%%'");
    uint64_t v = 0;
    while (is_digit((unsigned char)*ps->p)) {
        if (v <= UINT32_MAX) v = v * 10 + (uint64_t)(*ps->p - '0');
        ps->p++;
    }
    /* the id as written (v stops growing past UINT32_MAX), up to 40 digits */
    int digits = (int)(ps->p - at - 1);
    if (v >= ps->g->n_nodes)
        return error_at(ps, at, "node %%%.*s%s is not defined before this line", digits < 40 ? digits : 40, at + 1,
                        digits > 40 ? "..." : "");
    *id = (uint32_t)v;
    return true;
}

/* ---- types ----------------------------------------------------------------------------- */

static bool parse_type(parser *ps, kiln_type *t)
{
    span dt = read_ident(ps);
    if (span_is(dt, "f32")) t->dtype = KILN_F32;
    else if (span_is(dt, "i32")) t->dtype = KILN_I32;
    else return error_at(ps, dt.s, "expected a dtype (f32 or i32)");
    const char *dims_at = ps->p;
    if (!parse_int_list(ps, t->dims, KILN_MAX_RANK, &t->rank, "the shape")) return false;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] < 0) return error_at(ps, dims_at, "dim %d of the type is negative", i);
    return true;
}

/* ---- attributes ------------------------------------------------------------------------ */

/* The keyed attributes and the KILN_A_* bit that allows each; names as print.c writes
 * them. SLOT_SCALAR's key is the op's scalar_name. */
typedef enum slot {
    SLOT_INIT, SLOT_STD, SLOT_BOUND, SLOT_AXIS, SLOT_AXES, SLOT_KEEPDIMS, SLOT_PERM, SLOT_START, SLOT_END,
    SLOT_STEP, SLOT_SCALAR, SLOT_TRANSPOSE_A, SLOT_TRANSPOSE_B, SLOT_CAUSAL, SLOT_HAS_MASK, SLOT_HAS_BIAS, SLOT_ALIBI, SLOT_RELATIVE,
    SLOT_ATTN_DROPOUT, SLOT_ATTN_STREAM, SLOT_IGNORE, SLOT_STREAM, SLOT_WRT, SLOT_COUNT
} slot;

static const struct {
    const char *key;
    unsigned bit;
    bool flag; /* boolean: a bare word, or key=true / key=false */
} slots[SLOT_COUNT] = {
    [SLOT_INIT] = {"init", KILN_A_INIT, false},
    [SLOT_STD] = {"std", KILN_A_INIT, false},
    [SLOT_BOUND] = {"bound", KILN_A_INIT, false},
    [SLOT_AXIS] = {"axis", KILN_A_AXIS, false},
    [SLOT_AXES] = {"axes", KILN_A_AXES, false},
    [SLOT_KEEPDIMS] = {"keepdims", KILN_A_KEEPDIMS, true},
    [SLOT_PERM] = {"perm", KILN_A_PERM, false},
    [SLOT_START] = {"start", KILN_A_SLICE, false},
    [SLOT_END] = {"end", KILN_A_SLICE, false},
    [SLOT_STEP] = {"step", KILN_A_SLICE, false},
    [SLOT_SCALAR] = {NULL, KILN_A_SCALAR, false},
    [SLOT_TRANSPOSE_A] = {"transpose_a", KILN_A_TRANSPOSE, true},
    [SLOT_TRANSPOSE_B] = {"transpose_b", KILN_A_TRANSPOSE, true},
    [SLOT_CAUSAL] = {"causal", KILN_A_ATTN, true},
    [SLOT_HAS_MASK] = {"has_mask", KILN_A_ATTN, true},
    [SLOT_HAS_BIAS] = {"has_bias", KILN_A_ATTN, true},
    [SLOT_ALIBI] = {"alibi", KILN_A_ATTN, true},
    [SLOT_RELATIVE] = {"relative", KILN_A_ATTN, true},
    [SLOT_ATTN_DROPOUT] = {"dropout", KILN_A_ATTN, false}, /* optional, with its stream */
    [SLOT_ATTN_STREAM] = {"stream", KILN_A_ATTN, false},
    [SLOT_IGNORE] = {"ignore_index", KILN_A_IGNORE, false},
    [SLOT_STREAM] = {"stream", KILN_A_STREAM, false},
    [SLOT_WRT] = {"wrt", KILN_A_WRT, false},
};

static const char *slot_key(slot s, const kiln_op_info *info)
{
    return s == SLOT_SCALAR ? info->scalar_name : slots[s].key;
}

/* The attributes of one node line, before they go to kiln_graph_add. */
typedef struct node_text {
    kiln_op op;
    const char *op_at;
    kiln_attrs a;
    bool seen[SLOT_COUNT];
    int n_perm;
} node_text;

static bool parse_flag_value(parser *ps, bool *out)
{
    if (!peek_char(ps, '=')) {
        *out = true;
        return true;
    }
    ps->p++;
    span v = read_ident(ps);
    if (span_is(v, "true")) *out = true;
    else if (span_is(v, "false")) *out = false;
    else return error_at(ps, v.s, "expected true or false");
    return true;
}

static bool parse_attr(parser *ps, node_text *nt)
{
    const kiln_op_info *info = &kiln_op_table[nt->op];
    span key = read_ident(ps);
    if (key.n == 0) return error_at(ps, key.s, "expected an attribute or ':' before the type");
    slot s = SLOT_COUNT;
    for (int i = 0; i < SLOT_COUNT; i++) {
        const char *k = slot_key((slot)i, info);
        if (k && (info->attrs & slots[i].bit) && span_is(key, k)) s = (slot)i;
    }
    if (s == SLOT_COUNT) return error_at(ps, key.s, "%s has no attribute '%.*s'", info->name, (int)key.n, key.s);
    if (nt->seen[s]) return error_at(ps, key.s, "attribute '%.*s' is given twice", (int)key.n, key.s);
    nt->seen[s] = true;

    kiln_attrs *a = &nt->a;
    switch (s) {
    case SLOT_KEEPDIMS: return parse_flag_value(ps, &a->keepdims);
    case SLOT_TRANSPOSE_A: return parse_flag_value(ps, &a->transpose_a);
    case SLOT_TRANSPOSE_B: return parse_flag_value(ps, &a->transpose_b);
    case SLOT_CAUSAL: return parse_flag_value(ps, &a->causal);
    case SLOT_HAS_MASK: return parse_flag_value(ps, &a->has_mask);
    case SLOT_HAS_BIAS: return parse_flag_value(ps, &a->has_bias);
    case SLOT_ALIBI: return parse_flag_value(ps, &a->alibi);
    case SLOT_RELATIVE: return parse_flag_value(ps, &a->relative);
    default: break;
    }
    if (!expect_char(ps, '=', "after the attribute name")) return false;
    switch (s) {
    case SLOT_INIT: {
        span v = read_ident(ps);
        if (span_is(v, "normal")) a->init = KILN_INIT_NORMAL;
        else if (span_is(v, "zeros")) a->init = KILN_INIT_ZEROS;
        else if (span_is(v, "ones")) a->init = KILN_INIT_ONES;
        else if (span_is(v, "uniform")) a->init = KILN_INIT_UNIFORM;
        else return error_at(ps, v.s, "expected normal, zeros, ones or uniform");
        return true;
    }
    case SLOT_STD:
    case SLOT_BOUND: return parse_f64(ps, &a->init_arg);
    case SLOT_SCALAR: return parse_f64(ps, &a->scalar);
    case SLOT_AXIS: return parse_i64(ps, &a->axis);
    case SLOT_START: return parse_i64(ps, &a->start);
    case SLOT_END: return parse_i64(ps, &a->end);
    case SLOT_STEP: return parse_i64(ps, &a->step);
    case SLOT_IGNORE: return parse_i64(ps, &a->ignore_index);
    case SLOT_STREAM:
    case SLOT_ATTN_STREAM: return parse_i64(ps, &a->stream);
    case SLOT_ATTN_DROPOUT: return parse_f64(ps, &a->attn_dropout);
    case SLOT_WRT: {
        span v = read_ident(ps);
        for (int w = 0; w < KILN_WRT_COUNT; w++)
            if (span_is(v, kiln_wrt_names[w])) {
                a->wrt = w;
                return true;
            }
        return error_at(ps, v.s, "expected q, k, v or scores");
    }
    case SLOT_AXES: return parse_int_list(ps, a->axes, KILN_MAX_RANK, &a->n_axes, "axes");
    case SLOT_PERM: return parse_int_list(ps, a->perm, KILN_MAX_RANK, &nt->n_perm, "perm");
    default: return false; /* flags were handled above */
    }
}

/* Every attribute that is not a flag must be given; std/bound go with their init. */
static bool check_required(parser *ps, const node_text *nt)
{
    const kiln_op_info *info = &kiln_op_table[nt->op];
    for (int i = 0; i < SLOT_COUNT; i++) {
        if (!(info->attrs & slots[i].bit) || slots[i].flag) continue;
        bool needed = true;
        if (i == SLOT_STD) needed = nt->seen[SLOT_INIT] && nt->a.init == KILN_INIT_NORMAL;
        if (i == SLOT_BOUND) needed = nt->seen[SLOT_INIT] && nt->a.init == KILN_INIT_UNIFORM;
        if (i == SLOT_ATTN_DROPOUT) needed = false;
        if (i == SLOT_ATTN_STREAM) needed = nt->seen[SLOT_ATTN_DROPOUT];
        if (needed && !nt->seen[i])
            return error_at(ps, nt->op_at, "%s needs the attribute '%s'", info->name, slot_key((slot)i, info));
        if (!needed && nt->seen[i] && (i == SLOT_STD || i == SLOT_BOUND))
            return error_at(ps, nt->op_at, "'%s' does not go with this init", slots[i].key);
    }
    return true;
}

/* ---- constant values ----------------------------------------------------------------- */

/* The values come before the type that gives their dtype, so they are read twice: once
 * for the syntax and the count, and again (from `at`) once the dtype is known. */
static bool scan_values(parser *ps, int64_t *count)
{
    if (!expect_char(ps, '[', "to open the constant's values")) return false;
    *count = 0;
    if (peek_char(ps, ']')) {
        ps->p++;
        return true;
    }
    for (;;) {
        skip_blanks(ps);
        size_t n = 0;
        while (is_number_char((unsigned char)ps->p[n])) n++;
        if (n == 0) return error_at(ps, ps->p, "expected a number");
        ps->p += n;
        ++*count;
        if (peek_char(ps, ']')) break;
        if (!expect_char(ps, ',', "or ']' in the values")) return false;
    }
    ps->p++;
    return true;
}

static bool convert_values(parser *ps, const char *at, int64_t count, kiln_attrs *a)
{
    if (count == 0) return true;
    const char *saved = ps->p;
    ps->p = at;
    ps->p++; /* '[' (scan_values checked the syntax) */
    void *values = kiln_arena_alloc(&ps->scratch, (size_t)count * KILN_ELEM_BYTES);
    for (int64_t i = 0; i < count; i++) {
        char buf[64], *end;
        const char *word;
        if (!read_number_word(ps, buf, sizeof buf, &word)) return false;
        errno = 0;
        if (a->dtype == KILN_I32) {
            long long v = strtoll(buf, &end, 10);
            if (end == buf || *end) return error_at(ps, word, "bad i32 value");
            if (errno == ERANGE || v < INT32_MIN || v > INT32_MAX)
                return error_at(ps, word, "value is out of the i32 range");
            ((int32_t *)values)[i] = (int32_t)v;
        } else {
            float v = strtof(buf, &end);
            if (end == buf || *end) return error_at(ps, word, "bad f32 value");
            if (errno == ERANGE && isinf(v)) return error_at(ps, word, "value is out of the f32 range");
            ((float *)values)[i] = v;
        }
        skip_blanks(ps);
        ps->p++; /* ',' or ']' */
    }
    ps->p = saved;
    a->values = values;
    a->n_values = count;
    return true;
}

/* ---- lines ------------------------------------------------------------------------------- */

/* After a statement: only blanks and a comment may remain on the line. */
static bool end_of_line(parser *ps)
{
    skip_blanks(ps);
    if (*ps->p == '#')
        while (*ps->p && *ps->p != '\n') ps->p++;
    if (*ps->p && *ps->p != '\n') return error_at(ps, ps->p, "unexpected text at the end of the line");
    return true;
}

/* Skips blank and comment lines; stops at the start of a statement or the end. */
static void skip_empty_lines(parser *ps)
{
    for (;;) {
        skip_blanks(ps);
        if (*ps->p == '#')
            while (*ps->p && *ps->p != '\n') ps->p++;
        if (*ps->p != '\n') return;
        ps->p++;
        if (ps->line < INT_MAX) ps->line++;
        ps->line_start = ps->p;
    }
}

static bool name_taken(const kiln_graph *g, kiln_op op, const char *name, uint32_t *other)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == op && g->nodes[i].attrs.name && strcmp(g->nodes[i].attrs.name, name) == 0) {
            *other = i;
            return true;
        }
    return false;
}

/* %ID = OP[(%a, ...)] ["name"] [[values]] attrs : TYPE [@ORIGIN] ["LABEL"] */
static bool parse_node(parser *ps)
{
    kiln_graph *g = ps->g;
    const char *id_at = ps->p;
    ps->p++; /* '%' */
    uint64_t id = 0;
    size_t digits = 0;
    while (is_digit((unsigned char)*ps->p)) {
        if (id <= UINT32_MAX) id = id * 10 + (uint64_t)(*ps->p - '0');
        ps->p++;
        digits++;
    }
    if (digits == 0) return error_at(ps, id_at, "expected a node id after '%%'");
    if (id != g->n_nodes)
        return error_at(ps, id_at, "expected node %%%u here (ids count up from %%0 in order)", g->n_nodes);
    if (!expect_char(ps, '=', "after the node id")) return false;

    node_text nt;
    memset(&nt, 0, sizeof nt);
    span name = read_ident(ps);
    nt.op_at = name.s;
    nt.op = KILN_OP_COUNT;
    for (int i = 0; i < KILN_OP_COUNT; i++)
        if (span_is(name, kiln_op_table[i].name)) nt.op = (kiln_op)i;
    if (name.n == 0) return error_at(ps, name.s, "expected an op name");
    if (nt.op == KILN_OP_COUNT) return error_at(ps, name.s, "unknown op '%.*s'", (int)name.n, name.s);
    const kiln_op_info *info = &kiln_op_table[nt.op];

    uint32_t in[MAX_INPUTS];
    uint32_t n_in = 0;
    if (peek_char(ps, '(')) {
        ps->p++;
        if (peek_char(ps, ')')) {
            ps->p++;
        } else {
            for (;;) {
                skip_blanks(ps);
                if (n_in == MAX_INPUTS) return error_at(ps, ps->p, "more than %d inputs", MAX_INPUTS);
                if (!parse_ref(ps, &in[n_in++])) return false;
                if (peek_char(ps, ')')) break;
                if (!expect_char(ps, ',', "or ')' between inputs")) return false;
            }
            ps->p++;
        }
    }

    const char *input_name = NULL, *name_at = NULL;
    if (info->attrs & KILN_A_NAME) {
        skip_blanks(ps);
        name_at = ps->p;
        if (!parse_string(ps, &input_name)) return false;
    }
    const char *values_at = NULL;
    int64_t n_values = 0;
    if (info->attrs & KILN_A_VALUES) {
        skip_blanks(ps);
        values_at = ps->p;
        if (!scan_values(ps, &n_values)) return false;
    }
    while (!peek_char(ps, ':')) {
        if (*ps->p == 0 || *ps->p == '\n' || *ps->p == '#')
            return error_at(ps, ps->p, "expected ':' and the node's type");
        if (!parse_attr(ps, &nt)) return false;
    }
    ps->p++;
    skip_blanks(ps);
    const char *type_at = ps->p;
    kiln_type type;
    memset(&type, 0, sizeof type);
    if (!parse_type(ps, &type)) return false;

    const char *origin = NULL, *label = NULL;
    if (peek_char(ps, '@')) {
        ps->p++;
        if (!parse_name(ps, &origin, "an origin after '@'")) return false;
    }
    if (peek_char(ps, '"') && !parse_string(ps, &label)) return false;
    if (!end_of_line(ps)) return false;

    /* The line is read; now the meaning. */
    if (!check_required(ps, &nt)) return false;
    kiln_attrs *a = &nt.a;
    a->name = input_name;
    if (info->attrs & KILN_A_TYPE) {
        a->dtype = type.dtype;
        a->rank = type.rank;
        memcpy(a->shape, type.dims, sizeof a->shape);
    }
    if ((info->attrs & KILN_A_VALUES) && !convert_values(ps, values_at, n_values, a)) return false;
    if ((info->attrs & KILN_A_PERM) && n_in >= 1 && nt.n_perm != g->nodes[in[0]].type.rank)
        return error_at(ps, nt.op_at, "perm has %d entries but the input has rank %d", nt.n_perm,
                        g->nodes[in[0]].type.rank);
    uint32_t other;
    if (input_name && name_taken(g, nt.op, input_name, &other))
        return error_at(ps, name_at, "%s name \"%s\" is already used by %%%u", info->name, input_name, other);

    kiln_diags local;
    kiln_diags_init(&local);
    uint32_t node = kiln_graph_add(g, nt.op, in, n_in, a, label, origin, &local);
    if (node == KILN_NONE) {
        /* the builder knows no location; give its messages this line's */
        for (int i = 0; i < local.n; i++)
            kiln_diags_add(ps->diags, ps->file, ps->line, column(ps, nt.op_at), local.items[i].where, "%s",
                           local.items[i].message);
        if (local.n == 0) error_at(ps, nt.op_at, "%s: the node was refused", info->name);
        kiln_diags_free(&local);
        return false;
    }
    kiln_diags_free(&local);
    if (!kiln_type_equal(&g->nodes[node].type, &type)) {
        char want[160], got[160];
        return error_at(ps, type_at, "the type %s differs from %s given by the shape rule of %s",
                        kiln_type_str(&type, want, sizeof want), kiln_type_str(&g->nodes[node].type, got, sizeof got),
                        info->name);
    }
    return true;
}

/* output "NAME" = %N */
static bool parse_output(parser *ps)
{
    skip_blanks(ps);
    const char *name_at = ps->p;
    const char *name;
    uint32_t node;
    if (!parse_string(ps, &name) || !expect_char(ps, '=', "after the output's name") || !parse_ref(ps, &node) ||
        !end_of_line(ps))
        return false;
    for (uint32_t i = 0; i < ps->g->n_outputs; i++)
        if (strcmp(ps->g->outputs[i].name, name) == 0)
            return error_at(ps, name_at, "output \"%s\" is given twice", name);
    kiln_graph_add_output(ps->g, name, node);
    return true;
}

/* loss = %N */
static bool parse_loss(parser *ps, const char *at)
{
    uint32_t node;
    if (!expect_char(ps, '=', "after 'loss'")) return false;
    skip_blanks(ps);
    const char *ref_at = ps->p;
    if (!parse_ref(ps, &node) || !end_of_line(ps)) return false;
    if (ps->has_loss) return error_at(ps, at, "the loss is given twice");
    const kiln_type *t = &ps->g->nodes[node].type;
    if (t->dtype != KILN_F32 || t->rank != 0) {
        char buf[160];
        return error_at(ps, ref_at, "the loss must be a scalar f32, not %s", kiln_type_str(t, buf, sizeof buf));
    }
    ps->g->loss = node;
    ps->has_loss = true;
    return true;
}

/* update %TARGET = %VALUE */
static bool parse_update(parser *ps)
{
    skip_blanks(ps);
    const char *target_at = ps->p;
    uint32_t target, value;
    if (!parse_ref(ps, &target) || !expect_char(ps, '=', "after the update's target")) return false;
    skip_blanks(ps);
    const char *value_at = ps->p;
    if (!parse_ref(ps, &value) || !end_of_line(ps)) return false;
    const kiln_node *t = &ps->g->nodes[target];
    if (t->op != KILN_OP_PARAM && t->op != KILN_OP_STATE)
        return error_at(ps, target_at, "an update's target must be a param or a state, not %s",
                        kiln_op_table[t->op].name);
    for (uint32_t i = 0; i < ps->g->n_updates; i++)
        if (ps->g->updates[i].target == target) return error_at(ps, target_at, "%%%u is updated twice", target);
    if (!kiln_type_equal(&t->type, &ps->g->nodes[value].type)) {
        char a[160], b[160];
        return error_at(ps, value_at, "the new value %s does not have the target's type %s",
                        kiln_type_str(&ps->g->nodes[value].type, b, sizeof b), kiln_type_str(&t->type, a, sizeof a));
    }
    kiln_graph_add_update(ps->g, target, value);
    return true;
}

static bool parse_all(parser *ps)
{
    skip_empty_lines(ps);
    span kw = read_ident(ps);
    if (!span_is(kw, "graph")) return error_at(ps, kw.s, "expected 'graph NAME' on the first line");
    const char *name;
    if (!parse_name(ps, &name, "the graph's name") || !end_of_line(ps)) return false;
    ps->g->name = kiln_arena_strdup(&ps->g->arena, name);

    for (;;) {
        skip_empty_lines(ps);
        if (*ps->p == 0) return true;
        if (*ps->p == '%') {
            if (!parse_node(ps)) return false;
            continue;
        }
        const char *at = ps->p;
        kw = read_ident(ps);
        if (span_is(kw, "output")) {
            if (!parse_output(ps)) return false;
        } else if (span_is(kw, "loss")) {
            if (!parse_loss(ps, at)) return false;
        } else if (span_is(kw, "update")) {
            if (!parse_update(ps)) return false;
        } else {
            return error_at(ps, at, "expected a node (%%N = ...), 'output', 'loss' or 'update'");
        }
    }
}

bool kiln_graph_parse(kiln_graph *g, const char *text, const char *file, kiln_diags *diags)
{
    parser ps = {.g = g, .file = file, .diags = diags, .p = text, .line_start = text, .line = 1};
    if (!text) {
        kiln_diags_add(diags, file, 0, 0, NULL, "no text to parse");
        return false;
    }
    kiln_arena_init(&ps.scratch);
    bool ok = parse_all(&ps);
    kiln_arena_free(&ps.scratch);
    return ok;
}
