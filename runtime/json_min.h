/* json_min.h — a small, strict, bounded JSON parser, private to the runtime.
 *
 * Why it exists: the runtime is linked into exported libraries that may depend on libc
 * only, so it cannot use cJSON, yet it must read safetensors headers written by
 * anyone. This parser accepts exactly RFC 8259 JSON and nothing more (no comments, no
 * trailing commas, no NaN, no leading zeros, strict UTF-8, no lone surrogates), and it
 * is bounded: nesting depth and the number of values have fixed limits and the caller
 * bounds the input length, so a hostile header costs at most a known amount of memory
 * and stack.
 *
 * Design: the document is a flat array of values; containers point to their first
 * child by index and children to their next sibling, so growing the array (realloc)
 * never invalidates links. Strings are decoded in place inside the caller's text
 * buffer (a decoded string is never longer than its JSON spelling), so parsing makes
 * no allocation per string. A number carries a value only when it is an exact int64
 * integer: a safetensors header never needs a fraction, so other numbers are checked
 * for syntax and then left for the caller to refuse, which is simpler and safer than
 * converting them.
 */
#ifndef KILN_JSON_MIN_H
#define KILN_JSON_MIN_H

#include <stddef.h>
#include <stdint.h>

/* Limits. Depth: safetensors needs 3 levels. Values: a header entry takes about 8
 * values, so this allows about 250k tensors while capping the value array at 80 MB. */
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
    int64_t num;     /* JM_NUMBER when is_int; JM_BOOL: 0 or 1 */
    int32_t first;   /* JM_ARRAY / JM_OBJECT: index of the first child, -1 if empty */
    int32_t next;    /* index of the next sibling, -1 for the last */
    int32_t count;   /* JM_ARRAY / JM_OBJECT: number of children */
    uint8_t kind;    /* jm_kind */
    uint8_t is_int;  /* JM_NUMBER: written without fraction or exponent and fits int64 */
} jm_value;

typedef struct jm_doc {
    jm_value *v; /* v[0] is the root value */
    int32_t n, cap;
} jm_doc;

/* Parses text[0..len) as one JSON value (surrounding whitespace allowed, nothing
 * else). Modifies text: strings are decoded in place, and the doc's string pointers
 * point into it, so text must outlive doc. Returns 0 on success; on failure doc is
 * empty and err holds "byte N: what went wrong". */
int jm_parse(char *text, size_t len, jm_doc *doc, char *err, size_t err_size);

void jm_free(jm_doc *doc);

/* Length of the well-formed UTF-8 sequence starting at s (at most n bytes available),
 * or 0 if it is malformed (overlong, surrogate, beyond U+10FFFF, truncated). Shared
 * with the writer, which must not emit a header it would itself refuse to read. */
size_t jm_utf8_len(const unsigned char *s, size_t n);

#endif
