/* json_min.h — kiln's one JSON reader: strict, bounded, with line:column positions.
 *
 * Every JSON text kiln reads goes through here: model files (frontend/model.c turns the
 * document into the tree the frontend walks), safetensors headers (safetensors.c), and
 * the driver's other JSON inputs (training logs for `kiln plot`). It lives in the
 * runtime because the runtime's safetensors reader needs it and the runtime may depend
 * on nothing above libc; it is not part of exported libraries (their loader, params.c,
 * streams the header without a document and without allocating).
 *
 * Strict: exactly RFC 8259 JSON (no comments, no trailing commas, no NaN, no leading
 * zeros, no single quotes, no raw control characters in strings, strict UTF-8 everywhere,
 * no lone surrogates, no \u0000 since strings become C strings). Duplicate keys are
 * valid JSON and kept in order; callers that need unique keys check them with the JSON
 * path in hand (the frontend reports them, safetensors.c refuses them).
 *
 * Bounded: nesting depth and the number of values have limits, and the caller bounds the
 * input length, so a hostile text costs at most a known amount of memory and stack.
 *
 * Errors carry a byte offset, its line:column (1-based, columns in code points) and a
 * message meant for the user ("JSON syntax error near '\"dims\": {}'", "unexpected end
 * of file (the '{' at 2:13 is never closed)"): the first problem in text order.
 *
 * Design: the document is a flat array of values; containers point to their first
 * child by index and children to their next sibling, so growing the array (realloc)
 * never invalidates links. The text is not modified: decoded strings go to one buffer
 * the document owns (never longer than the text), so positions stay meaningful. A
 * number keeps its double value, and an exact int64 value when it is written as an
 * integer that fits (a safetensors header needs nothing else).
 */
#ifndef KILN_JSON_MIN_H
#define KILN_JSON_MIN_H

#include <stddef.h>
#include <stdint.h>

/* Limits. Depth: a model file nests about 5 levels, safetensors 3. Values: callers
 * choose (jm_parse's max_values); this is the default, about 80 MB of values. */
#define JM_MAX_DEPTH 64
#define JM_MAX_VALUES (1 << 21)

typedef enum jm_kind {
    JM_NULL,
    JM_BOOL,
    JM_NUMBER,
    JM_STRING,
    JM_ARRAY,
    JM_OBJECT,
} jm_kind;

typedef struct jm_value {
    const char *key; /* member name when the parent is an object, else NULL */
    const char *str; /* JM_STRING: decoded UTF-8, NUL-terminated */
    double dbl;      /* JM_NUMBER: the value (±inf when out of range, as strtod gives) */
    int64_t num;     /* JM_NUMBER when is_int; JM_BOOL: 0 or 1 */
    size_t at;       /* byte offset of the value's first character in the text */
    int32_t first;   /* JM_ARRAY / JM_OBJECT: index of the first child, -1 if empty */
    int32_t next;    /* index of the next sibling, -1 for the last */
    int32_t count;   /* JM_ARRAY / JM_OBJECT: number of children */
    uint8_t kind;    /* jm_kind */
    uint8_t is_int;  /* JM_NUMBER: written without fraction or exponent and fits int64 */
} jm_value;

typedef struct jm_doc {
    jm_value *v; /* v[0] is the root value */
    int32_t n, cap;
    char *strings; /* decoded keys and strings */
} jm_doc;

typedef struct jm_error {
    size_t at;     /* byte offset of the problem */
    int line, col; /* its 1-based line and column (code points) */
    char msg[200];
} jm_error;

/* Parses text[0..len) as one JSON value (surrounding whitespace allowed, nothing else),
 * with at most max_values values (0: JM_MAX_VALUES). The text is only read and need not
 * be NUL-terminated. Returns 0 on success; on failure doc is empty and *err says where
 * and what. */
int jm_parse(const char *text, size_t len, int32_t max_values, jm_doc *doc, jm_error *err);

void jm_free(jm_doc *doc);

/* Length of the well-formed UTF-8 sequence starting at s (at most n bytes available),
 * or 0 if it is malformed (overlong, surrogate, beyond U+10FFFF, truncated). Shared
 * with the writer, which must not emit a header it would itself refuse to read. */
size_t jm_utf8_len(const unsigned char *s, size_t n);

#endif
