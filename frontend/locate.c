/* locate.c — the line:column of a JSON path in a model file's text.
 *
 * The frontend reports semantic problems at JSON paths ("layers[3].heads"); a user also
 * wants to jump to the place. cJSON keeps no positions, so after loading, each
 * diagnostic that has a path and no position is located by walking the text once more
 * along that path: a small scanner over the already-validated text that descends into
 * the object key or array element each path component names and skips every other value
 * without recursion (so nesting depth costs nothing). A path whose last component is a
 * key points at the key's opening quote (where an unknown or misspelt key is); an
 * element points at the element. A path the scanner cannot follow (a key with a '.' or
 * escapes in it, text that is not the model) is simply left without a position.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "locate.h"

typedef struct scan {
    const char *s;
    size_t n, i;
} scan;

static void skip_ws(scan *c)
{
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

/* Past a string starting at its quote; false if it does not end. */
static bool skip_string(scan *c)
{
    if (c->i >= c->n || c->s[c->i] != '"') return false;
    for (c->i++; c->i < c->n; c->i++) {
        if (c->s[c->i] == '\\') c->i++;
        else if (c->s[c->i] == '"') {
            c->i++;
            return true;
        }
    }
    return false;
}

/* Past one value of any kind: brackets are counted, strings skipped whole. */
static bool skip_value(scan *c)
{
    skip_ws(c);
    if (c->i >= c->n) return false;
    char ch = c->s[c->i];
    if (ch == '"') return skip_string(c);
    if (ch != '{' && ch != '[') {
        while (c->i < c->n && !strchr(",]} \t\r\n", c->s[c->i])) c->i++;
        return true;
    }
    size_t depth = 0;
    while (c->i < c->n) {
        ch = c->s[c->i];
        if (ch == '"') {
            if (!skip_string(c)) return false;
            continue;
        }
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            if (--depth == 0) {
                c->i++;
                return true;
            }
        }
        c->i++;
    }
    return false;
}

/* One path component: a key (key, klen) or an index (key == NULL). */
typedef struct comp {
    const char *key;
    size_t klen;
    long index;
} comp;

/* The next component of path at *p, advancing it; false at the end or on bad syntax. */
static bool next_comp(const char **p, comp *out)
{
    const char *s = *p;
    if (*s == '.') s++;
    if (*s == 0) return false;
    if (*s == '[') {
        long v = 0;
        s++;
        if (*s < '0' || *s > '9') return false;
        while (*s >= '0' && *s <= '9') {
            if (v > 100000000) return false;
            v = v * 10 + (*s++ - '0');
        }
        if (*s != ']') return false;
        *out = (comp){NULL, 0, v};
        *p = s + 1;
        return true;
    }
    size_t k = strcspn(s, ".[");
    *out = (comp){s, k, 0};
    *p = s + k;
    return true;
}

bool fe_locate(const char *text, size_t len, const char *path, int *line, int *col)
{
    if (!text || !path || !*path) return false;
    scan c = {text, len, 0};
    const char *p = path;
    comp k;
    size_t at = 0;
    bool any = false;
    while (next_comp(&p, &k)) {
        any = true;
        skip_ws(&c);
        if (c.i >= c.n) return false;
        bool found = false;
        if (k.key) {
            if (c.s[c.i] != '{') return false;
            c.i++;
            for (;;) {
                skip_ws(&c);
                if (c.i >= c.n || c.s[c.i] == '}') return false;
                size_t key_at = c.i;
                if (!skip_string(&c)) return false;
                bool match = c.i - key_at - 2 == k.klen && memcmp(c.s + key_at + 1, k.key, k.klen) == 0;
                skip_ws(&c);
                if (c.i >= c.n || c.s[c.i] != ':') return false;
                c.i++;
                if (match) {
                    at = key_at;
                    found = true;
                    break;
                }
                if (!skip_value(&c)) return false;
                skip_ws(&c);
                if (c.i < c.n && c.s[c.i] == ',') c.i++;
            }
        } else {
            if (c.s[c.i] != '[') return false;
            c.i++;
            for (long e = 0;; e++) {
                skip_ws(&c);
                if (c.i >= c.n || c.s[c.i] == ']') return false;
                if (e == k.index) {
                    at = c.i;
                    found = true;
                    break;
                }
                if (!skip_value(&c)) return false;
                skip_ws(&c);
                if (c.i < c.n && c.s[c.i] == ',') c.i++;
            }
        }
        if (!found) return false;
    }
    if (!any) return false;
    /* line and column (in characters: UTF-8 continuation bytes do not count) */
    int l = 1, co = 1;
    for (size_t i = 0; i < at; i++) {
        if (text[i] == '\n') l++, co = 1;
        else if (((unsigned char)text[i] & 0xC0) != 0x80) co++;
    }
    *line = l;
    *col = co;
    return true;
}
