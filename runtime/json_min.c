/* json_min.c — recursive-descent parser for the strict JSON of json_min.h.
 *
 * One function per grammar rule. The first error wins and stops the parse: every rule
 * checks p->failed after calling another, so an error unwinds without longjmp. Depth
 * is counted on the way down, so the C stack is bounded by JM_MAX_DEPTH frames; the
 * positions of the open brackets are kept so that a truncated text can say which one
 * is never closed.
 */
#include "json_min.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char *s;
    size_t len, i;  /* length and read position */
    jm_doc *doc;
    int32_t max_values;
    char *out;      /* doc->strings: where the next decoded string goes */
    jm_error *err;
    int failed;
    size_t open_at[JM_MAX_DEPTH + 2]; /* the brackets still open */
    int n_open;
} parser;

static int32_t parse_value(parser *p, int depth);

/* 1-based line and column (in code points) of byte `at` of text. */
static void jm_line_col(const char *text, size_t at, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at; i++) {
        if (text[i] == '\n') {
            ++*line;
            *col = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            ++*col; /* UTF-8 continuation bytes do not start a new column */
        }
    }
}

static void fail_at(parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail_at(parser *p, size_t at, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = 1;
    p->err->at = at;
    jm_line_col(p->s, at, &p->err->line, &p->err->col);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
}

/* Up to 24 bytes from `at` to the end of its line, for "near '...'". */
static const char *excerpt(const parser *p, size_t at, char buf[32])
{
    size_t k = 0;
    for (size_t i = at; i < p->len && k < 24 && p->s[i] != '\n' && p->s[i] != '\r'; i++)
        buf[k++] = (unsigned char)p->s[i] < 32 ? '?' : p->s[i];
    buf[k] = 0;
    return buf;
}

/* The text ended where more was needed: say which string or bracket is left open. */
static void fail_eof(parser *p, size_t string_at)
{
    int line, col;
    if (string_at != SIZE_MAX) {
        jm_line_col(p->s, string_at, &line, &col);
        fail_at(p, p->len, "JSON syntax error: unexpected end of file (the string opened at %d:%d is never closed)",
                line, col);
    } else if (p->n_open > 0) {
        size_t at = p->open_at[p->n_open - 1];
        jm_line_col(p->s, at, &line, &col);
        fail_at(p, p->len, "JSON syntax error: unexpected end of file (the '%c' at %d:%d is never closed)", p->s[at],
                line, col);
    } else {
        fail_at(p, p->len, "JSON syntax error: unexpected end of file");
    }
}

/* Something other than what the grammar allows at p->i, outside strings. */
static void fail_unexpected(parser *p)
{
    if (p->i >= p->len) {
        fail_eof(p, SIZE_MAX);
        return;
    }
    unsigned char c = (unsigned char)p->s[p->i];
    char buf[32];
    if (c < 0x20) fail_at(p, p->i, "JSON syntax error: control character 0x%02x", c);
    else if (c >= 0x80 && !jm_utf8_len((const unsigned char *)p->s + p->i, p->len - p->i))
        fail_at(p, p->i, "invalid UTF-8 (byte 0x%02x)", c);
    else if (c == '\'')
        fail_at(p, p->i, "JSON syntax error near '%s' (JSON strings take double quotes)", excerpt(p, p->i, buf));
    else fail_at(p, p->i, "JSON syntax error near '%s'", excerpt(p, p->i, buf));
}

static void skip_ws(parser *p)
{
    while (p->i < p->len) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

/* Appends a value of the given kind at p->i and returns its index, or -1 on failure. */
static int32_t new_value(parser *p, jm_kind kind)
{
    jm_doc *d = p->doc;
    if (d->n >= p->max_values) {
        fail_at(p, p->i, "the file holds more than %d JSON values", p->max_values);
        return -1;
    }
    if (d->n == d->cap) {
        int32_t cap = d->cap ? d->cap * 2 : 64;
        if (cap > p->max_values) cap = p->max_values;
        jm_value *v = realloc(d->v, (size_t)cap * sizeof *v);
        if (!v) {
            fail_at(p, p->i, "out of memory");
            return -1;
        }
        d->v = v;
        d->cap = cap;
    }
    jm_value *v = &d->v[d->n];
    memset(v, 0, sizeof *v);
    v->kind = (uint8_t)kind;
    v->first = v->next = -1;
    v->at = p->i;
    return d->n++;
}

size_t jm_utf8_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    /* For each lead byte: sequence length and the allowed range of the second byte,
     * which is where overlongs, surrogates and > U+10FFFF are excluded. */
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xBF) return 0;
    return len;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads a \uXXXX escape (p->i at the backslash), joining a surrogate pair. Returns the
 * code point, or 0 after failing (U+0000 itself is refused: strings are C strings). */
static unsigned parse_u_escape(parser *p)
{
    unsigned cp, lo;
    size_t at = p->i;
    if (p->len - p->i < 6 || !hex4(p->s + p->i + 2, &cp)) {
        fail_at(p, at, "JSON syntax error: \\u must be followed by 4 hex digits");
        return 0;
    }
    p->i += 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        fail_at(p, at, "JSON syntax error: lone low surrogate \\u%04X", cp);
        return 0;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p->len - p->i < 6 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' || !hex4(p->s + p->i + 2, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF) {
            fail_at(p, at, "JSON syntax error: high surrogate \\u%04X not followed by a low surrogate", cp);
            return 0;
        }
        p->i += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0) fail_at(p, at, "JSON syntax error: \\u0000 (NUL) is not allowed in a string");
    return cp;
}

/* p->i at the opening quote. Decodes into the document's string buffer: a decoded
 * string plus its NUL is never longer than its spelling with both quotes. */
static const char *parse_string(parser *p)
{
    size_t start = p->i++;
    char *out = p->out, *w = out;
    for (;;) {
        if (p->i >= p->len) {
            fail_eof(p, start);
            return NULL;
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            *w++ = '\0';
            p->out = w;
            p->i++;
            return out;
        }
        if (c == '\n' || c == '\r') {
            fail_at(p, start, "JSON syntax error: this string is not closed on its line");
            return NULL;
        }
        if (c < 0x20) {
            fail_at(p, p->i, "JSON syntax error: control character 0x%02x inside a string (escape it)", c);
            return NULL;
        }
        if (c == '\\') {
            if (p->i + 1 >= p->len) {
                fail_eof(p, start);
                return NULL;
            }
            char e = p->s[p->i + 1];
            const char *simple = e ? strchr("\"\\/bfnrt", e) : NULL;
            if (simple) {
                static const char decoded[] = "\"\\/\b\f\n\r\t";
                *w++ = decoded[simple - "\"\\/bfnrt"];
                p->i += 2;
            } else if (e == 'u') {
                unsigned cp = parse_u_escape(p);
                if (p->failed) return NULL;
                w += put_utf8(w, cp);
            } else {
                fail_at(p, p->i, "JSON syntax error: invalid escape in a string (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)");
                return NULL;
            }
        } else if (c < 0x80) {
            *w++ = (char)c;
            p->i++;
        } else {
            size_t k = jm_utf8_len((const unsigned char *)p->s + p->i, p->len - p->i);
            if (k == 0) {
                fail_at(p, p->i, "invalid UTF-8 (byte 0x%02x)", c);
                return NULL;
            }
            memcpy(w, p->s + p->i, k);
            w += k;
            p->i += k;
        }
    }
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* JSON number grammar; the double value always, the int64 one when exact. */
static void parse_number(parser *p, int32_t idx)
{
    const char *s = p->s;
    size_t start = p->i, i = p->i;
    int neg = 0, overflow = 0, is_int = 1;
    uint64_t mag = 0;
    if (s[i] == '-') neg = 1, i++;
    if (i >= p->len || !is_digit(s[i])) {
        p->i = i;
        fail_unexpected(p);
        return;
    }
    if (s[i] == '0') {
        i++;
        if (i < p->len && is_digit(s[i])) {
            fail_at(p, start, "JSON syntax error: a number may not have leading zeros");
            return;
        }
    } else {
        for (; i < p->len && is_digit(s[i]); i++) {
            unsigned d = (unsigned)(s[i] - '0');
            if (mag > (UINT64_MAX - d) / 10) overflow = 1;
            else mag = mag * 10 + d;
        }
    }
    if (i < p->len && s[i] == '.') {
        i++;
        is_int = 0;
        if (i >= p->len || !is_digit(s[i])) {
            p->i = i;
            fail_at(p, i, "JSON syntax error: expected a digit after '.'");
            return;
        }
        while (i < p->len && is_digit(s[i])) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        is_int = 0;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !is_digit(s[i])) {
            p->i = i;
            fail_at(p, i, "JSON syntax error: expected a digit in the exponent");
            return;
        }
        while (i < p->len && is_digit(s[i])) i++;
    }
    p->i = i;
    /* strtod needs a terminated copy: the text need not be terminated */
    char small[64], *copy = i - start < sizeof small ? small : malloc(i - start + 1);
    if (!copy) {
        fail_at(p, start, "out of memory");
        return;
    }
    memcpy(copy, s + start, i - start);
    copy[i - start] = 0;
    jm_value *v = &p->doc->v[idx];
    v->dbl = strtod(copy, NULL);
    if (copy != small) free(copy);
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (is_int && !overflow && mag <= limit) {
        v->is_int = 1;
        /* -(2^63) cannot be formed by negating an int64, so go through unsigned. */
        v->num = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    }
}

static int parse_literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->i < n || memcmp(p->s + p->i, word, n) != 0) {
        fail_unexpected(p);
        return 0;
    }
    p->i += n;
    return 1;
}

/* Parses children until the closing bracket; for objects each child carries its key. */
static void parse_container(parser *p, int32_t idx, int depth, char close)
{
    int is_object = close == '}';
    int32_t last = -1;
    p->open_at[p->n_open++] = p->i;
    p->i++; /* the opening bracket */
    skip_ws(p);
    if (p->i < p->len && p->s[p->i] == close) {
        p->i++;
        p->n_open--;
        return;
    }
    for (;;) {
        const char *key = NULL;
        if (is_object) {
            skip_ws(p);
            if (p->i >= p->len || p->s[p->i] != '"') {
                fail_unexpected(p);
                return;
            }
            key = parse_string(p);
            if (p->failed) return;
            skip_ws(p);
            if (p->i >= p->len || p->s[p->i] != ':') {
                fail_unexpected(p);
                return;
            }
            p->i++;
        }
        int32_t child = parse_value(p, depth + 1);
        if (p->failed) return;
        jm_value *v = p->doc->v; /* re-read: parse_value may have moved the array */
        v[child].key = key;
        if (last < 0) v[idx].first = child;
        else v[last].next = child;
        last = child;
        v[idx].count++;
        skip_ws(p);
        if (p->i < p->len && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->i < p->len && p->s[p->i] == close) {
            p->i++;
            p->n_open--;
            return;
        }
        fail_unexpected(p);
        return;
    }
}

static int32_t parse_value(parser *p, int depth)
{
    skip_ws(p);
    if (p->i >= p->len) {
        fail_eof(p, SIZE_MAX);
        return -1;
    }
    char c = p->s[p->i];
    int32_t idx;
    switch (c) {
    case '{':
    case '[':
        if (depth > JM_MAX_DEPTH) {
            fail_at(p, p->i, "JSON nesting is deeper than %d levels", JM_MAX_DEPTH);
            return -1;
        }
        idx = new_value(p, c == '{' ? JM_OBJECT : JM_ARRAY);
        if (idx >= 0) parse_container(p, idx, depth, c == '{' ? '}' : ']');
        break;
    case '"':
        idx = new_value(p, JM_STRING);
        if (idx >= 0) {
            const char *s = parse_string(p);
            p->doc->v[idx].str = s;
        }
        break;
    case 't':
    case 'f':
        idx = new_value(p, JM_BOOL);
        if (idx >= 0 && parse_literal(p, c == 't' ? "true" : "false")) p->doc->v[idx].num = c == 't';
        break;
    case 'n':
        idx = new_value(p, JM_NULL);
        if (idx >= 0) parse_literal(p, "null");
        break;
    default:
        if (c != '-' && !is_digit(c)) {
            fail_unexpected(p);
            return -1;
        }
        idx = new_value(p, JM_NUMBER);
        if (idx >= 0) parse_number(p, idx);
        break;
    }
    return p->failed ? -1 : idx;
}

int jm_parse(const char *text, size_t len, int32_t max_values, jm_doc *doc, jm_error *err)
{
    memset(doc, 0, sizeof *doc);
    memset(err, 0, sizeof *err);
    parser p = {.s = text, .len = len, .doc = doc, .err = err,
                .max_values = max_values > 0 ? max_values : JM_MAX_VALUES};
    doc->strings = p.out = malloc(len + 1);
    if (!p.out) fail_at(&p, 0, "out of memory");
    else parse_value(&p, 1);
    if (!p.failed) {
        skip_ws(&p);
        char buf[32];
        unsigned char c = p.i < p.len ? (unsigned char)text[p.i] : 0;
        if (p.i != p.len && (c < 0x20 || c >= 0x80)) fail_unexpected(&p); /* a control byte or bad UTF-8 */
        else if (p.i != p.len)
            fail_at(&p, p.i, "JSON syntax error: unexpected text after the top-level value: '%s'", excerpt(&p, p.i, buf));
    }
    if (p.failed) {
        jm_free(doc);
        return -1;
    }
    return 0;
}

void jm_free(jm_doc *doc)
{
    free(doc->v);
    free(doc->strings);
    memset(doc, 0, sizeof *doc);
}
