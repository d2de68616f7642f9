/* attrs.c — reading a layer's attributes, and the name table.
 *
 * Every attribute an expander reads goes through one fe_get_* call that (1) records the
 * key as used, so that model.c can report the keys nobody read as unknown, (2) checks
 * the JSON type and, for integers, that the number is exact and fits int64, and (3)
 * reports a problem at the JSON path of the key ("layers[3].heads: expected an integer,
 * got \"six\""). A key is recorded as used even when it is absent: the used list is then
 * the set of keys the op understands, which model.c offers as "did you mean" hints.
 *
 * The name table (fe_declare / fe_define / fe_resolve) maps input and layer names to
 * nodes. All layer names are declared before any layer is expanded, with a "pending"
 * marker, so that a reference to a later layer gets a precise message instead of
 * "unknown name". A layer that failed maps to KILN_NONE: resolving it succeeds silently
 * with KILN_NONE, so its consumers build nothing and report nothing more.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe.h"

/* Declared but not yet expanded (a later layer). Node ids never get this high: the
 * node count is capped far below it (model.c). */
#define FE_PENDING (KILN_NONE - 1)

/* ---- paths and errors ---------------------------------------------------------- */

const char *fe_short(fe_ctx *c, const char *s)
{
    size_t len = strlen(s), cut = 60;
    if (len <= 80) return s;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--; /* not inside a UTF-8 character */
    return fe_fmt(c, "%.*s...", (int)cut, s);
}

/* "path.key" ("path[0]" when key starts with '['; just key when path is empty). */
static const char *fe_path(fe_ctx *c, const fe_node *n, const char *key)
{
    if (!key) return n->path;
    key = fe_short(c, key);
    if (!n->path || !n->path[0]) return key;
    return fe_fmt(c, key[0] == '[' ? "%s%s" : "%s.%s", n->path, key);
}

void fe_error(fe_ctx *c, const fe_node *n, const char *key, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kiln_diags_add(c->diags, c->file, 0, 0, fe_path(c, n, key), "%s", msg);
}

/* A short rendering of a JSON value for "got ..." in messages. */
const char *fe_describe(fe_ctx *c, const cJSON *v)
{
    if (!v) return "nothing";
    if (cJSON_IsString(v)) {
        char buf[48];
        size_t k = 0;
        const unsigned char *s = (const unsigned char *)v->valuestring;
        for (; *s && k < 40; s++) buf[k++] = (*s < 32 || *s == 127) ? '?' : (char)*s;
        buf[k] = 0;
        return fe_fmt(c, "\"%s%s\"", buf, *s ? "..." : "");
    }
    if (cJSON_IsNumber(v)) {
        /* the shortest form that reads back as the same double, so 1.5 stays "1.5" and
         * 12345678901 does not become "1.23457e+10" */
        char buf[40];
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v->valuedouble);
            if (strtod(buf, NULL) == v->valuedouble) break;
        }
        return fe_fmt(c, "%s", buf);
    }
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) ? "true" : "false";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "a list";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* ---- used keys ------------------------------------------------------------------- */

void fe_mark_used(fe_node *n, const char *key)
{
    for (int i = 0; i < n->n_used; i++)
        if (strcmp(n->used[i], key) == 0) return;
    /* No op reads anywhere near FE_MAX_KEYS keys; if one ever did, a key past the limit
     * would be reported unknown, which a test would show at once. */
    if (n->n_used < FE_MAX_KEYS) n->used[n->n_used++] = key;
}

static const cJSON *get(fe_node *n, const char *key)
{
    fe_mark_used(n, key);
    return cJSON_IsObject(n->json) ? cJSON_GetObjectItemCaseSensitive(n->json, key) : NULL;
}

/* ---- scalars ----------------------------------------------------------------------- */

/* An exact integer within int64. The bounds are checked on the double before the
 * conversion (converting an out-of-range double is undefined behaviour). */
bool fe_json_int(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) return false;
    /* cJSON reads numbers as doubles, and INT64_MAX (9223372036854775807: Python's
     * sys.maxsize, ONNX's "slice to the end") rounds to 2^63: read that as INT64_MAX */
    if (d == 9223372036854775808.0) {
        *out = INT64_MAX;
        return true;
    }
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false;
    *out = (int64_t)d;
    return true;
}

bool fe_get_int(fe_ctx *c, fe_node *n, const char *key, int64_t def, int64_t *out)
{
    const cJSON *v = get(n, key);
    *out = def;
    if (!v) return true;
    if (!fe_json_int(v, out)) {
        fe_error(c, n, key, "expected an integer, got %s", fe_describe(c, v));
        *out = def;
        return false;
    }
    return true;
}

bool fe_need_int(fe_ctx *c, fe_node *n, const char *key, int64_t *out)
{
    *out = 0;
    if (!get(n, key)) {
        fe_error(c, n, key, "required key is missing (an integer)");
        return false;
    }
    return fe_get_int(c, n, key, 0, out);
}

bool fe_get_num(fe_ctx *c, fe_node *n, const char *key, double def, double *out)
{
    const cJSON *v = get(n, key);
    *out = def;
    if (!v) return true;
    /* cJSON turns 1e999 into inf: a number nobody meant, so refuse it here */
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        fe_error(c, n, key, "expected a finite number, got %s", fe_describe(c, v));
        return false;
    }
    *out = v->valuedouble;
    return true;
}

bool fe_need_num(fe_ctx *c, fe_node *n, const char *key, double *out)
{
    *out = 0;
    if (!get(n, key)) {
        fe_error(c, n, key, "required key is missing (a number)");
        return false;
    }
    return fe_get_num(c, n, key, 0, out);
}

bool fe_get_bool(fe_ctx *c, fe_node *n, const char *key, bool def, bool *out)
{
    const cJSON *v = get(n, key);
    *out = def;
    if (!v) return true;
    if (!cJSON_IsBool(v)) {
        fe_error(c, n, key, "expected true or false, got %s", fe_describe(c, v));
        return false;
    }
    *out = cJSON_IsTrue(v);
    return true;
}

bool fe_get_str(fe_ctx *c, fe_node *n, const char *key, const char *def, const char **out)
{
    const cJSON *v = get(n, key);
    *out = def;
    if (!v) return true;
    if (!cJSON_IsString(v)) {
        fe_error(c, n, key, "expected a string, got %s", fe_describe(c, v));
        return false;
    }
    /* the JSON tree dies when loading ends; callers may keep the string */
    *out = kiln_arena_strdup(&c->g->arena, v->valuestring);
    return true;
}

bool fe_get_enum(fe_ctx *c, fe_node *n, const char *key, const char *const *choices, int def, int *out)
{
    const cJSON *v = get(n, key);
    *out = def;
    if (!v) return true;
    if (cJSON_IsString(v))
        for (int i = 0; choices[i]; i++)
            if (strcmp(v->valuestring, choices[i]) == 0) {
                *out = i;
                return true;
            }
    char list[512];
    size_t k = 0;
    list[0] = 0;
    for (int i = 0; choices[i] && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s\"%s\"", i ? ", " : "", choices[i]);
    fe_error(c, n, key, "expected one of %s, got %s", list, fe_describe(c, v));
    return false;
}

/* ---- lists --------------------------------------------------------------------------- */

static const kiln_dim *find_dim(fe_ctx *c, const char *name)
{
    uint32_t i;
    return fe_index_get(&c->dim_index, name, &i) ? &c->m->dims[i] : NULL;
}

bool fe_get_shape(fe_ctx *c, fe_node *n, const char *key, bool required, bool allow_minus_one, int *rank,
                  int64_t *dims)
{
    const cJSON *v = get(n, key);
    *rank = 0;
    if (!v) {
        if (required) fe_error(c, n, key, "required key is missing (a shape: a list of integers or dim names)");
        return !required;
    }
    if (!cJSON_IsArray(v)) {
        fe_error(c, n, key, "expected a shape (a list of integers or dim names), got %s", fe_describe(c, v));
        return false;
    }
    int count = cJSON_GetArraySize(v);
    if (count > KILN_MAX_RANK) {
        fe_error(c, n, key, "rank %d is over the limit of %d", count, KILN_MAX_RANK);
        return false;
    }
    bool ok = true;
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        const char *at = fe_fmt(c, "%s[%d]", key, i);
        int64_t d = 0;
        dims[i] = 0;
        if (cJSON_IsString(e)) {
            const kiln_dim *dim = find_dim(c, e->valuestring);
            if (!dim) {
                if (!c->dims_incomplete)
                    fe_error(c, n, at, "unknown dim '%s' (declare it in \"dims\")", fe_short(c, e->valuestring));
                ok = false;
                continue;
            }
            d = dim->value;
        } else if (!fe_json_int(e, &d)) {
            fe_error(c, n, at, "expected an integer or a dim name, got %s", fe_describe(c, e));
            ok = false;
            continue;
        } else if (d < 0 && !(allow_minus_one && d == -1)) {
            fe_error(c, n, at, "%s is negative%s", fe_describe(c, e), allow_minus_one ? " (only -1 is allowed)" : "");
            ok = false;
            continue;
        }
        dims[i] = d;
    }
    *rank = count;
    return ok;
}

bool fe_get_int_list(fe_ctx *c, fe_node *n, const char *key, int max, int *count, int64_t *vals, bool *present)
{
    const cJSON *v = get(n, key);
    *count = 0;
    *present = v != NULL;
    if (!v) return true;
    if (!cJSON_IsArray(v)) {
        fe_error(c, n, key, "expected a list of integers, got %s", fe_describe(c, v));
        return false;
    }
    int size = cJSON_GetArraySize(v);
    if (size > max) {
        fe_error(c, n, key, "has %d entries, at most %d are allowed", size, max);
        return false;
    }
    bool ok = true;
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!fe_json_int(e, &vals[i])) {
            fe_error(c, n, fe_fmt(c, "%s[%d]", key, i), "expected an integer, got %s", fe_describe(c, e));
            ok = false;
        }
    }
    *count = size;
    return ok;
}

bool fe_get_num_list(fe_ctx *c, fe_node *n, const char *key, double **vals, int64_t *count, bool *present)
{
    const cJSON *v = get(n, key);
    *vals = NULL;
    *count = 0;
    *present = v != NULL;
    if (!v) return true;
    if (!cJSON_IsArray(v)) {
        fe_error(c, n, key, "expected a flat list of numbers, got %s", fe_describe(c, v));
        return false;
    }
    int64_t size = cJSON_GetArraySize(v);
    double *out = malloc((size_t)(size ? size : 1) * sizeof *out);
    KILN_ASSERT(out != NULL);
    int64_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) {
            /* one message is enough: a list of a million strings must not give a million */
            fe_error(c, n, fe_fmt(c, "%s[%lld]", key, (long long)i), "expected a finite number, got %s%s",
                     fe_describe(c, e), cJSON_IsArray(e) ? " (values is a flat row-major list)" : "");
            free(out);
            return false;
        }
        out[i] = e->valuedouble;
    }
    *vals = out;
    *count = size;
    return true;
}

/* ---- a string index -------------------------------------------------------------- */

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

bool fe_index_get(const fe_index *ix, const char *key, uint32_t *val)
{
    if (!ix->cap) return false;
    for (uint32_t i = hash(key) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
        if (!ix->keys[i]) return false;
        if (strcmp(ix->keys[i], key) == 0) {
            *val = ix->vals[i];
            return true;
        }
    }
}

void fe_index_put(fe_ctx *c, fe_index *ix, const char *key, uint32_t val)
{
    if (2 * (ix->n + 1) > ix->cap) {
        /* grow to keep the load under one half; the old arrays stay in the arena */
        fe_index old = *ix;
        ix->cap = old.cap ? 2 * old.cap : 64;
        ix->keys = kiln_arena_alloc(&c->g->arena, ix->cap * sizeof *ix->keys);
        ix->vals = kiln_arena_alloc(&c->g->arena, ix->cap * sizeof *ix->vals);
        ix->n = 0;
        for (uint32_t i = 0; i < old.cap; i++)
            if (old.keys[i]) fe_index_put(c, ix, old.keys[i], old.vals[i]);
    }
    uint32_t i = hash(key) & (ix->cap - 1);
    while (ix->keys[i] && strcmp(ix->keys[i], key) != 0) i = (i + 1) & (ix->cap - 1);
    if (!ix->keys[i]) {
        ix->keys[i] = key; /* callers pass arena strings */
        ix->n++;
    }
    ix->vals[i] = val;
}

/* ---- the name table ------------------------------------------------------------------ */

static int find_sym(const fe_ctx *c, const char *name)
{
    uint32_t i;
    return fe_index_get(&c->sym_index, name, &i) ? (int)i : -1;
}

bool fe_declare(fe_ctx *c, const char *name)
{
    if (find_sym(c, name) >= 0) return false;
    if (c->n_syms == c->cap_syms) {
        /* arena arrays: the old ones are simply abandoned (they die with the graph) */
        int cap = c->cap_syms ? 2 * c->cap_syms : 64;
        const char **names = kiln_arena_alloc(&c->g->arena, (size_t)cap * sizeof *names);
        uint32_t *nodes = kiln_arena_alloc(&c->g->arena, (size_t)cap * sizeof *nodes);
        if (c->n_syms) {
            memcpy(names, c->sym_names, (size_t)c->n_syms * sizeof *names);
            memcpy(nodes, c->sym_nodes, (size_t)c->n_syms * sizeof *nodes);
        }
        c->sym_names = names;
        c->sym_nodes = nodes;
        c->cap_syms = cap;
    }
    c->sym_names[c->n_syms] = kiln_arena_strdup(&c->g->arena, name);
    c->sym_nodes[c->n_syms] = FE_PENDING;
    fe_index_put(c, &c->sym_index, c->sym_names[c->n_syms], (uint32_t)c->n_syms);
    c->n_syms++;
    return true;
}

void fe_define(fe_ctx *c, const char *name, uint32_t node)
{
    int i = find_sym(c, name);
    KILN_ASSERT(i >= 0);
    c->sym_nodes[i] = node;
}

bool fe_resolve(fe_ctx *c, const fe_node *n, const char *key, const char *name, uint32_t *out)
{
    *out = KILN_NONE;
    int i = find_sym(c, name);
    if (i < 0 && c->names_incomplete) return false;
    if (i < 0) {
        /* hints cost a scan of every name: skip them once messages are being dropped */
        const char *hint = c->diags->n < KILN_MAX_DIAGS ? fe_closest(name, c->sym_names, c->n_syms) : NULL;
        if (hint) fe_error(c, n, key, "'%s' is not an input or layer (did you mean '%s'?)", fe_short(c, name), hint);
        else fe_error(c, n, key, "'%s' is not an input or layer", fe_short(c, name));
        return false;
    }
    if (c->sym_nodes[i] == FE_PENDING) {
        fe_error(c, n, key, "'%s' is not defined before this layer", fe_short(c, name));
        return false;
    }
    *out = c->sym_nodes[i];
    /* a layer that failed was reported already; its consumers stay silent */
    return *out != KILN_NONE;
}

bool fe_get_ref(fe_ctx *c, fe_node *n, const char *key, uint32_t *out, bool *present)
{
    const cJSON *v = get(n, key);
    *out = KILN_NONE;
    *present = v != NULL;
    if (!v) return true;
    if (!cJSON_IsString(v)) {
        fe_error(c, n, key, "expected the name of an input or layer, got %s", fe_describe(c, v));
        return false;
    }
    return fe_resolve(c, n, key, v->valuestring, out);
}

/* ---- hints ------------------------------------------------------------------------------ */

/* Edit distance with a cutoff: names are short, so the plain O(len²) table is fine;
 * longer strings are not worth a hint. */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) return 99;
    int r2[41], r1[41], r0[41]; /* rows i-2, i-1, i */
    for (size_t j = 0; j <= lb; j++) r1[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        r0[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int best = r1[j - 1] + (a[i - 1] != b[j - 1]);
            if (r1[j] + 1 < best) best = r1[j] + 1;
            if (r0[j - 1] + 1 < best) best = r0[j - 1] + 1;
            /* a swap of two neighbours ("casual" for "causal") counts as one edit */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && r2[j - 2] + 1 < best)
                best = r2[j - 2] + 1;
            r0[j] = best;
        }
        memcpy(r2, r1, sizeof r1);
        memcpy(r1, r0, sizeof r0);
    }
    return r1[lb];
}

const char *fe_closest(const char *word, const char *const *cands, int n)
{
    const char *best = NULL;
    int best_d = 3; /* at most two edits, and at most half of the longer word */
    int lw = (int)strlen(word);
    for (int i = 0; i < n; i++) {
        int d = distance(word, cands[i]);
        int lc = (int)strlen(cands[i]);
        if (d < best_d && 2 * d <= (lw > lc ? lw : lc)) {
            best = cands[i];
            best_d = d;
        }
    }
    return best;
}
