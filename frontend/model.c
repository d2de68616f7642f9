/* model.c — loading a model file: JSON text → validated kiln_model with its IR graph.
 *
 * The order of work, and why:
 *   1. Read the file (bounded: 64 MiB, regular files only) and parse it with the
 *      runtime's strict JSON reader (runtime/json_min.c: bounded depth and value count,
 *      so a hostile file cannot exhaust the stack or memory; errors with line:column),
 *      then build the cJSON tree the frontend walks. Duplicate keys, valid JSON but
 *      a silently dropped setting here, are errors with their JSON path.
 *   2. Top-level keys in dependency order: format, name, dims (bound from -D, then the
 *      shapes of given inputs, then defaults), init (layers need init.std), inputs,
 *      layers, outputs, losses, then train and tokenizer.
 *   3. Layers: every name is declared first, so that `in` naming a later layer is
 *      reported as such. Each layer resolves `in`, then its expander (expanders.c) runs
 *      once per `repeat` copy; afterwards every key the expander did not read is
 *      reported unknown (a misspelt "casual" must not pass).
 *
 * Every problem becomes a diagnostic and loading goes on: a layer that failed maps to
 * KILN_NONE, and builders given KILN_NONE build nothing and say nothing, so one run
 * reports every independent problem without cascades. Strings the model keeps live in
 * the graph's arena; the JSON tree is deleted before returning.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fe.h"
#include "kiln/runtime.h"
#include "json_min.h"
#include "locate.h"

#define FE_MAX_FILE_BYTES ((size_t)64 << 20)
#define FE_MAX_REPEAT 10000
#define FE_MAX_NODES 200000u /* ~85 MB of nodes; real models need a few thousand */

/* ---- reading and parsing -------------------------------------------------------------- */

static cJSON *parse_text(fe_ctx *c, const char *text, size_t len)
{
    size_t first = 0;
    while (first < len && strchr(" \t\n\r", text[first]) && text[first]) first++;
    if (first == len) {
        kiln_diags_add(c->diags, c->file, 1, 1, NULL, "the file is empty (expected a JSON object)");
        return NULL;
    }
    jm_error err;
    cJSON *root = kiln_json_tree(text, len, &err);
    if (!root) kiln_diags_add(c->diags, c->file, err.line, err.col, NULL, "%s", err.msg);
    return root;
}

/* The path of a JSON value for messages, kept as a chain on the stack while walking so
 * that nothing is allocated for the (usually) millions of values without a problem. */
typedef struct json_path {
    const struct json_path *up;
    const char *key; /* or NULL: index */
    int index;
} json_path;

static const char *render_path(fe_ctx *c, const json_path *p)
{
    if (!p) return "";
    const char *up = render_path(c, p->up);
    if (!p->key) return fe_fmt(c, "%s[%d]", up, p->index);
    const char *key = fe_short(c, p->key);
    return up[0] ? fe_fmt(c, "%s.%s", up, key) : key;
}

static int cmp_key(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

/* cJSON keeps both values of a repeated key and lookups see the first: for a model file
 * that silently drops a setting, so every object is checked (sorting: n log n). */
static void check_duplicates(fe_ctx *c, const cJSON *v, const json_path *path)
{
    if (cJSON_IsObject(v) && v->child) {
        int n = cJSON_GetArraySize(v);
        const cJSON **kids = malloc((size_t)n * sizeof *kids);
        KILN_ASSERT(kids != NULL);
        int k = 0;
        for (const cJSON *e = v->child; e; e = e->next) kids[k++] = e;
        qsort(kids, (size_t)n, sizeof *kids, cmp_key);
        for (int i = 1; i < n; i++)
            if (strcmp(kids[i]->string, kids[i - 1]->string) == 0 &&
                (i == 1 || strcmp(kids[i]->string, kids[i - 2]->string) != 0)) {
                json_path at = {path, kids[i]->string, 0};
                kiln_diags_add(c->diags, c->file, 0, 0, render_path(c, &at), "duplicate key '%s' in one object",
                               fe_short(c, kids[i]->string));
            }
        free(kids);
    }
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        json_path at = {path, cJSON_IsObject(v) ? e->string : NULL, i};
        check_duplicates(c, e, &at);
    }
}

/* ---- small helpers ------------------------------------------------------------------------ */

/* [A-Za-z_][A-Za-z0-9_]*, or with lower_only [a-z_][a-z0-9_]* */
bool fe_valid_name(const char *s, bool lower_only)
{
    if (!s || !s[0] || isdigit((unsigned char)s[0])) return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool ok = ch == '_' || (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                  (!lower_only && ch >= 'A' && ch <= 'Z');
        if (!ok) return false;
    }
    return true;
}

static const cJSON *item(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

/* Reports every key of n->json that nobody read. `what` says whose keys they are. With
 * misspelt_only (the layer had an attribute error, so its expander may not have read
 * every key it knows) only keys that are near a key it did read are reported: "casual"
 * next to "causal" is a misspelling whatever else is wrong with the layer. */
static void check_keys_where(fe_ctx *c, fe_node *n, const char *what, bool misspelt_only)
{
    if (!cJSON_IsObject(n->json)) return;
    for (const cJSON *e = n->json->child; e; e = e->next) {
        bool used = false;
        for (int i = 0; i < n->n_used && !used; i++) used = strcmp(n->used[i], e->string) == 0;
        if (used) continue;
        const char *hint = fe_closest(e->string, n->used, n->n_used);
        if (hint) fe_error(c, n, e->string, "unknown key %s (did you mean \"%s\"?)", what, hint);
        else if (!misspelt_only) fe_error(c, n, e->string, "unknown key %s", what);
    }
}

static void check_keys(fe_ctx *c, fe_node *n, const char *what) { check_keys_where(c, n, what, false); }

/* Whether a diagnostic added since index `from` is about one attribute of n (its path is
 * "n.path.something"): then the expander may have stopped before reading the rest of
 * its keys, and reporting those as unknown would be wrong. */
static bool attribute_error_since(const fe_ctx *c, const fe_node *n, int from)
{
    size_t len = strlen(n->path);
    for (int i = from; i < c->diags->n; i++) {
        const char *w = c->diags->items[i].where;
        if (w && strncmp(w, n->path, len) == 0 && (w[len] == '.' || w[len] == '[')) return true;
    }
    return c->diags->dropped > 0;
}

static int n_errors(const fe_ctx *c) { return c->diags->n + c->diags->dropped; }

/* An object-valued section, or NULL (reported when present and not an object). */
static const cJSON *section(fe_ctx *c, fe_node *top, const char *key)
{
    const cJSON *v = item(top->json, key);
    if (v && !cJSON_IsObject(v)) {
        fe_error(c, top, key, "expected an object, got %s", fe_describe(c, v));
        return NULL;
    }
    return v;
}

/* ---- dims ---------------------------------------------------------------------------------- */

typedef struct dim_state {
    const char *name;
    bool has_default, bad_default;
    int64_t def;
    bool bound;
    int64_t value;
    const char *from; /* NULL: -D; else the given input that bound it */
} dim_state;

static dim_state *find_dim(fe_ctx *c, dim_state *d, const char *name)
{
    uint32_t i;
    return fe_index_get(&c->dim_index, name, &i) ? &d[i] : NULL;
}

/* A problem with a given tensor: named in its own file when the caller said which. */
static void given_error(fe_ctx *c, const kiln_load_options *opt, const kiln_given_input *gi, const char *model_path,
                        const char *message)
{
    if (opt->given_file) kiln_diags_add(c->diags, opt->given_file, 0, 0, fe_short(c, gi->name), "%s", message);
    else kiln_diags_add(c->diags, c->file, 0, 0, model_path, "%s", message);
}

/* Binds dims from given tensor shapes: each declared shape entry that is a dim name and
 * not set by -D takes the size of the given tensor at that position. */
static void bind_given(fe_ctx *c, const cJSON *inputs, const kiln_load_options *opt, dim_state *d)
{
    for (int g = 0; g < opt->n_given; g++) {
        const kiln_given_input *gi = &opt->given[g];
        const cJSON *decl = item(inputs, gi->name);
        const cJSON *shape = item(decl, "shape");
        if (!cJSON_IsArray(shape)) continue; /* unknown input, or a bad shape reported later */
        const char *name = fe_short(c, gi->name);
        int rank = cJSON_GetArraySize(shape);
        if (rank != gi->rank) {
            given_error(c, opt, gi, fe_fmt(c, "inputs.%s.shape", name),
                        fe_fmt(c, "the given tensor '%s' has rank %d but the model declares rank %d (inputs.%s.shape)",
                               name, gi->rank, rank, name));
            continue;
        }
        int k = 0;
        for (const cJSON *e = shape->child; e; e = e->next, k++) {
            dim_state *dim = cJSON_IsString(e) ? find_dim(c, d, e->valuestring) : NULL;
            if (!dim || (dim->bound && !dim->from)) continue; /* literal, unknown, or set by -D */
            if (dim->bound && dim->value != gi->dims[k]) {
                given_error(c, opt, gi, fe_fmt(c, "inputs.%s.shape[%d]", name, k),
                            fe_fmt(c, "dim '%s' is %lld in the given tensor '%s' but %lld in the given tensor '%s'",
                                   fe_short(c, dim->name), (long long)gi->dims[k], name, (long long)dim->value,
                                   fe_short(c, dim->from)));
                continue;
            }
            dim->bound = true;
            dim->value = gi->dims[k];
            dim->from = gi->name;
        }
    }
}

static void load_dims(fe_ctx *c, fe_node *top, const kiln_load_options *opt)
{
    const cJSON *dims = section(c, top, "dims");
    c->dims_incomplete = item(top->json, "dims") && !dims;
    const cJSON *inputs = item(top->json, "inputs");
    int nd = dims ? cJSON_GetArraySize(dims) : 0;
    dim_state *d = calloc((size_t)(nd ? nd : 1), sizeof *d);
    KILN_ASSERT(d != NULL);
    fe_node dn = {.json = dims, .path = "dims"};

    int i = 0;
    for (const cJSON *e = dims ? dims->child : NULL; e; e = e->next, i++) {
        d[i].name = kiln_arena_strdup(&c->g->arena, e->string);
        fe_index_put(c, &c->dim_index, d[i].name, (uint32_t)i); /* keys are unique: checked before */
        if (!fe_valid_name(e->string, false))
            fe_error(c, &dn, e->string, "dim names must match [A-Za-z_][A-Za-z0-9_]*");
        if (cJSON_IsNull(e)) continue; /* no default: must be bound */
        if (!fe_json_int(e, &d[i].def)) {
            fe_error(c, &dn, e->string, "expected an integer (the default size) or null, got %s", fe_describe(c, e));
            d[i].bad_default = true;
        } else {
            d[i].has_default = true;
        }
    }

    for (int k = 0; opt && k < opt->n_defines; k++) {
        const kiln_dim_binding *b = &opt->defines[k];
        dim_state *dim = find_dim(c, d, b->name);
        const char *where = fe_fmt(c, "-D %s", fe_short(c, b->name));
        if (!dim) kiln_diags_add(c->diags, c->file, 0, 0, where, "the model declares no dim '%s'", fe_short(c, b->name));
        else if (b->value < 0) kiln_diags_add(c->diags, c->file, 0, 0, where, "%lld is negative", (long long)b->value);
        else {
            dim->bound = true; /* a later -D of the same dim wins, as with cc -D */
            dim->value = b->value;
            dim->from = NULL;
        }
    }
    if (opt && cJSON_IsObject(inputs)) bind_given(c, inputs, opt, d);

    kiln_model *m = c->m;
    m->dims = kiln_arena_alloc(&c->g->arena, (size_t)(nd ? nd : 1) * sizeof *m->dims);
    m->n_dims = nd;
    for (i = 0; i < nd; i++) {
        if (!d[i].bound && d[i].has_default) {
            d[i].value = d[i].def;
            if (d[i].value < 0) fe_error(c, &dn, d[i].name, "%lld is negative; sizes must be >= 0", (long long)d[i].value);
        } else if (!d[i].bound && !d[i].bad_default) {
            fe_error(c, &dn, d[i].name, "has no default and is not bound (give -D %s=N or an input tensor)",
                     fe_short(c, d[i].name));
        }
        m->dims[i] = (kiln_dim){d[i].name, d[i].value >= 0 ? d[i].value : 0};
    }
    free(d);
}

/* ---- init, train, tokenizer -------------------------------------------------------------- */

static void load_init(fe_ctx *c, fe_node *top)
{
    fe_node n = {.json = section(c, top, "init"), .path = "init"};
    if (!n.json) return;
    int64_t seed;
    double std;
    if (fe_get_int(c, &n, "seed", 0, &seed)) {
        if (seed < 0) fe_error(c, &n, "seed", "%lld is negative", (long long)seed);
        else c->m->init_seed = (uint64_t)seed;
    }
    if (fe_get_num(c, &n, "std", 0.02, &std)) {
        if (std < 0) fe_error(c, &n, "std", "%g is negative", std);
        else if (std > FLT_MAX) fe_error(c, &n, "std", "%g does not fit in f32", std); /* else ±inf weights */
        else c->m->init_std = std;
    }
    check_keys(c, &n, "in init (expected seed, std)");
}

/* A number in [lo, hi] (hi_open: [lo, hi)), or > lo when lo_open. */
static void get_range(fe_ctx *c, fe_node *n, const char *key, double def, double lo, bool lo_open, double hi,
                      bool hi_open, double *out)
{
    double v;
    if (!fe_get_num(c, n, key, def, &v)) return;
    bool ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    if (!ok) {
        const char *range = hi >= 1e300 ? fe_fmt(c, lo_open ? "> %g" : ">= %g", lo)
                                        : fe_fmt(c, "in %s%g, %g%s", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
        fe_error(c, n, key, "%g must be %s", v, range);
        return;
    }
    *out = v;
}

static void get_count(fe_ctx *c, fe_node *n, const char *key, int64_t min, int64_t *out)
{
    int64_t v;
    bool present = item(n->json, key) != NULL;
    if (!fe_get_int(c, n, key, *out, &v) || !present) return;
    if (v < min) fe_error(c, n, key, "%lld must be >= %lld", (long long)v, (long long)min);
    else *out = v;
}

/* A freeze or group pattern that matches no parameter is a typo that would silently
 * freeze (or regroup) nothing, as a misspelt key would silently do nothing: an error,
 * unless the layers already failed (their parameters are then incomplete). */
static void check_pattern_matches(fe_ctx *c, fe_node *n, const char *key, const char *pattern, bool params_complete)
{
    if (!params_complete) return;
    for (int i = 0; i < c->m->n_params; i++)
        if (fnmatch(pattern, c->g->nodes[c->m->params[i]].attrs.name, 0) == 0) return;
    fe_error(c, n, key, "'%s' matches no parameter of the model (kiln check lists them)", pattern);
}

static void load_groups(fe_ctx *c, fe_node *tn, bool params_complete)
{
    kiln_train_config *t = &c->m->train;
    const cJSON *groups = item(tn->json, "groups");
    fe_mark_used(tn, "groups");
    if (!groups) return;
    if (!cJSON_IsArray(groups)) {
        fe_error(c, tn, "groups", "expected a list of {\"match\", \"lr_scale\", \"weight_decay\"}, got %s",
                 fe_describe(c, groups));
        return;
    }
    int ng = cJSON_GetArraySize(groups);
    t->groups = kiln_arena_alloc(&c->g->arena, (size_t)(ng ? ng : 1) * sizeof *t->groups);
    int i = 0;
    for (const cJSON *e = groups->child; e; e = e->next, i++) {
        fe_node g = {.json = e, .path = fe_fmt(c, "train.groups[%d]", i)};
        if (!cJSON_IsObject(e)) {
            fe_error(c, &g, NULL, "expected an object, got %s", fe_describe(c, e));
            continue;
        }
        kiln_param_group *pg = &t->groups[t->n_groups++];
        *pg = (kiln_param_group){NULL, 1.0, t->weight_decay};
        if (fe_get_str(c, &g, "match", NULL, &pg->match) && !pg->match)
            fe_error(c, &g, "match", "required key is missing (a glob of parameter names)");
        else if (pg->match) check_pattern_matches(c, &g, "match", pg->match, params_complete);
        get_range(c, &g, "lr_scale", 1.0, 0, false, 1e308, false, &pg->lr_scale);
        get_range(c, &g, "weight_decay", t->weight_decay, 0, false, 1e308, false, &pg->weight_decay);
        check_keys(c, &g, "in a parameter group (expected match, lr_scale, weight_decay)");
    }
}

static void load_train(fe_ctx *c, fe_node *top)
{
    bool params_complete = c->diags->n == 0; /* the layers, loaded before, made every parameter */
    static const char *const optimizers[] = {"adamw", "sgd", NULL};
    static const char *const schedules[] = {"constant", "cosine", "linear", NULL};
    kiln_train_config *t = &c->m->train;
    fe_node n = {.json = section(c, top, "train"), .path = "train"};
    if (!n.json) return;
    int e;
    if (fe_get_enum(c, &n, "optimizer", optimizers, KILN_OPT_ADAMW, &e)) t->optimizer = (kiln_optimizer)e;
    if (fe_get_enum(c, &n, "schedule", schedules, KILN_SCHED_CONSTANT, &e)) t->schedule = (kiln_schedule)e;
    get_range(c, &n, "lr", t->lr, 0, true, 1e308, false, &t->lr);
    get_range(c, &n, "eps", t->eps, 0, false, 1e308, false, &t->eps);
    get_range(c, &n, "weight_decay", 0, 0, false, 1e308, false, &t->weight_decay);
    get_range(c, &n, "momentum", 0, 0, false, 1, true, &t->momentum);
    get_range(c, &n, "min_lr", 0, 0, false, 1e308, false, &t->min_lr);
    get_range(c, &n, "grad_clip", 0, 0, false, 1e308, false, &t->grad_clip);
    get_count(c, &n, "warmup_steps", 0, &t->warmup_steps);
    get_count(c, &n, "steps", 1, &t->steps);
    get_count(c, &n, "batch", 1, &t->batch);

    double *betas;
    int64_t nb;
    bool present;
    if (fe_get_num_list(c, &n, "betas", &betas, &nb, &present) && present) {
        if (nb != 2) fe_error(c, &n, "betas", "expected two numbers [beta1, beta2], got %lld", (long long)nb);
        for (int i = 0; i < nb && nb == 2; i++)
            if (!(betas[i] >= 0 && betas[i] < 1))
                fe_error(c, &n, fe_fmt(c, "betas[%d]", i), "%g must be in [0, 1)", betas[i]);
        if (nb == 2 && betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1) {
            t->beta1 = betas[0];
            t->beta2 = betas[1];
        }
    }
    free(betas);

    const cJSON *freeze = item(n.json, "freeze");
    fe_mark_used(&n, "freeze");
    if (freeze && !cJSON_IsArray(freeze)) {
        fe_error(c, &n, "freeze", "expected a list of glob patterns, got %s", fe_describe(c, freeze));
    } else if (freeze) {
        int nf = cJSON_GetArraySize(freeze);
        t->freeze = kiln_arena_alloc(&c->g->arena, (size_t)(nf ? nf : 1) * sizeof *t->freeze);
        int i = 0;
        for (const cJSON *f = freeze->child; f; f = f->next, i++) {
            if (!cJSON_IsString(f) || !f->valuestring[0])
                fe_error(c, &n, fe_fmt(c, "freeze[%d]", i), "expected a glob of parameter names, got %s",
                         fe_describe(c, f));
            else {
                check_pattern_matches(c, &n, fe_fmt(c, "freeze[%d]", i), f->valuestring, params_complete);
                t->freeze[t->n_freeze++] = kiln_arena_strdup(&c->g->arena, f->valuestring);
            }
        }
    }
    load_groups(c, &n, params_complete); /* after weight_decay: groups default to it */
    check_keys(c, &n, "in train");
}

static void load_tokenizer(fe_ctx *c, fe_node *top)
{
    static const char *const kinds[] = {"none", "byte", "char", "bpe", NULL}; /* kiln_tokenizer_kind order */
    fe_node n = {.json = section(c, top, "tokenizer"), .path = "tokenizer"};
    if (!n.json) return;
    int kind;
    bool has_vocab = item(n.json, "vocab") != NULL;
    if (!fe_get_enum(c, &n, "kind", kinds + 1, -1, &kind)) return;
    if (kind < 0) {
        fe_error(c, &n, "kind", "required key is missing (\"byte\", \"char\" or \"bpe\")");
        return;
    }
    c->m->tokenizer.kind = (kiln_tokenizer_kind)(kind + 1);
    int64_t vocab = 0;
    if (c->m->tokenizer.kind == KILN_TOK_BPE) {
        if (fe_need_int(c, &n, "vocab", &vocab)) {
            if (vocab < 256 || vocab > (1 << 24))
                fe_error(c, &n, "vocab", "%lld must be in [256, 16777216] (256 byte tokens plus merges)",
                         (long long)vocab);
            else c->m->tokenizer.vocab = vocab;
        }
    } else if (has_vocab) {
        fe_mark_used(&n, "vocab");
        fe_error(c, &n, "vocab", "applies only to kind \"bpe\"");
    }
    check_keys(c, &n, "in tokenizer");
}

/* ---- inputs ---------------------------------------------------------------------------------- */

static void load_inputs(fe_ctx *c, fe_node *top)
{
    static const char *const dtypes[] = {"f32", "i32", NULL};
    const cJSON *inputs = section(c, top, "inputs");
    kiln_model *m = c->m;
    c->names_incomplete |= item(top->json, "inputs") && !inputs;
    int ni = inputs ? cJSON_GetArraySize(inputs) : 0;
    m->inputs = kiln_arena_alloc(&c->g->arena, (size_t)(ni ? ni : 1) * sizeof *m->inputs);
    for (const cJSON *e = inputs ? inputs->child : NULL; e; e = e->next) {
        fe_node n = {.json = e, .path = fe_fmt(c, "inputs.%s", fe_short(c, e->string)), .name = e->string};
        uint32_t id = KILN_NONE;
        fe_declare(c, e->string); /* even when invalid: references to it stay quiet */
        if (!fe_valid_name(e->string, false)) {
            fe_error(c, &n, NULL, "input names must match [A-Za-z_][A-Za-z0-9_]*");
        } else if (!cJSON_IsObject(e)) {
            fe_error(c, &n, NULL, "expected {\"shape\": [...], \"dtype\": \"f32\" | \"i32\"}, got %s", fe_describe(c, e));
        } else {
            kiln_attrs a = {0};
            int dtype;
            bool ok = fe_get_shape(c, &n, "shape", true, false, &a.rank, a.shape);
            ok &= fe_get_enum(c, &n, "dtype", dtypes, KILN_F32, &dtype);
            check_keys(c, &n, "in an input (expected shape, dtype)");
            a.dtype = (kiln_dtype)dtype;
            a.name = e->string;
            if (ok) id = fe_add(c, &n, KILN_OP_INPUT, NULL, 0, &a, e->string);
        }
        fe_define(c, e->string, id); /* keys of one object are unique: declared just above */
        m->inputs[m->n_inputs++] = id;
    }
}

/* ---- layers ---------------------------------------------------------------------------------- */

static bool is_loss_op(const char *op)
{
    return !strcmp(op, "cross_entropy") || !strcmp(op, "infonce") || !strcmp(op, "mse") || !strcmp(op, "bce_logits");
}

/* Resolves a layer's or loss's `in` into n->in. Returns false if anything is wrong
 * (reported, or silently when it names a layer that failed). */
static bool resolve_in(fe_ctx *c, fe_node *n, const cJSON *in)
{
    fe_mark_used(n, "in");
    if (cJSON_IsString(in)) {
        n->n_in = 1;
        return fe_resolve(c, n, "in", in->valuestring, &n->in[0]);
    }
    if (!cJSON_IsArray(in)) {
        fe_error(c, n, "in", "expected a name or a list of names, got %s", fe_describe(c, in));
        return false;
    }
    int count = cJSON_GetArraySize(in);
    if (count > (int)(sizeof n->in / sizeof n->in[0])) {
        fe_error(c, n, "in", "%d inputs; at most %d are allowed", count, (int)(sizeof n->in / sizeof n->in[0]));
        return false;
    }
    bool ok = true;
    int k = 0;
    for (const cJSON *e = in->child; e; e = e->next, k++) {
        const char *key = fe_fmt(c, "in[%d]", k);
        if (!cJSON_IsString(e)) {
            fe_error(c, n, key, "expected the name of an input or layer, got %s", fe_describe(c, e));
            ok = false;
        } else {
            ok &= fe_resolve(c, n, key, e->valuestring, &n->in[k]);
        }
    }
    n->n_in = count;
    return ok;
}

static uint32_t expand_layer(fe_ctx *c, const cJSON *layer, int index, const char *name, uint32_t prev,
                             bool have_prev)
{
    fe_node n = {.json = layer, .path = fe_fmt(c, "layers[%d]", index), .name = name, .repeat = 1};
    fe_mark_used(&n, "name");
    const char *op;
    if (!fe_get_str(c, &n, "op", NULL, &op)) return KILN_NONE;
    if (!op) {
        fe_error(c, &n, "op", "required key is missing (the layer's op, e.g. \"linear\")");
        return KILN_NONE;
    }
    n.op = op;
    const fe_expander *exp = fe_find_expander(op);
    op = fe_short(c, op); /* for messages */
    if (!exp) {
        const char *ops[128];
        int n_ops = fe_expander_names(ops, 128);
        const char *hint = fe_closest(op, ops, n_ops);
        if (is_loss_op(op)) fe_error(c, &n, "op", "'%s' is a loss: list it under \"losses\"", op);
        else if (!strcmp(op, "input")) fe_error(c, &n, "op", "inputs are declared under \"inputs\", not as layers");
        else if (hint) fe_error(c, &n, "op", "unknown op '%s' (did you mean '%s'?)", op, hint);
        else fe_error(c, &n, "op", "unknown op '%s'", op);
        return KILN_NONE;
    }

    bool ok = true, failed_input = false;
    const cJSON *in = item(layer, "in");
    if (in) {
        int before = n_errors(c);
        ok = resolve_in(c, &n, in);
        if (!ok && n_errors(c) == before) failed_input = true; /* an earlier layer failed */
    } else if (exp->takes_prev) {
        fe_mark_used(&n, "in");
        if (!have_prev) {
            fe_error(c, &n, NULL, "has no \"in\" and no previous layer to take its input from");
            return KILN_NONE;
        }
        n.in[0] = prev;
        n.n_in = 1;
        failed_input = prev == KILN_NONE;
    }
    if (ok && (n.n_in < exp->min_in || n.n_in > exp->max_in)) {
        if (exp->max_in == 0)
            fe_error(c, &n, "in", "'%s' takes no inputs", op);
        else if (exp->min_in == exp->max_in)
            fe_error(c, &n, in ? "in" : NULL, "'%s' takes %d input%s, got %d%s", op, exp->min_in,
                     exp->min_in == 1 ? "" : "s", n.n_in, in ? "" : " (without \"in\" a layer takes the previous layer's output)");
        else
            fe_error(c, &n, in ? "in" : NULL, "'%s' takes %d to %d inputs, got %d", op, exp->min_in, exp->max_in, n.n_in);
        ok = false;
    }

    fe_mark_used(&n, "repeat");
    const cJSON *rep = item(layer, "repeat");
    if (rep) {
        int64_t r;
        n.has_repeat = true;
        if (!fe_json_int(rep, &r)) {
            fe_error(c, &n, "repeat", "expected an integer, got %s", fe_describe(c, rep));
            ok = false;
        } else if (r < 1 || r > FE_MAX_REPEAT) {
            fe_error(c, &n, "repeat", "%lld is out of range (1..%d)", (long long)r, FE_MAX_REPEAT);
            ok = false;
        } else if (!exp->takes_prev) {
            fe_error(c, &n, "repeat", "'%s' has no input to repeat on", op);
            ok = false;
        } else {
            n.repeat = (int)r;
        }
    }
    if (!ok || failed_input) {
        /* The layer's inputs are unusable (reported here, or an earlier layer failed), but
         * its attributes are still worth checking: expanders read all of them before they
         * look at their inputs (fe.h), so one expansion with every input failed checks
         * them and fills n.used without building anything. */
        if (n.n_in < exp->min_in) n.n_in = exp->min_in;
        if (n.n_in > exp->max_in) n.n_in = exp->max_in;
        for (int k = 0; k < n.n_in; k++) n.in[k] = KILN_NONE;
        int first_error = c->diags->n;
        exp->expand(c, &n);
        check_keys_where(c, &n, fe_fmt(c, "for op '%s'", op), attribute_error_since(c, &n, first_error));
        return KILN_NONE;
    }

    int first_error = c->diags->n;
    uint32_t out = KILN_NONE;
    for (int copy = 0; copy < n.repeat; copy++) {
        if (c->g->n_nodes > FE_MAX_NODES) {
            fe_error(c, &n, n.has_repeat ? "repeat" : NULL, "the model expands to more than %u IR nodes", FE_MAX_NODES);
            out = KILN_NONE;
            break;
        }
        n.copy = copy;
        uint32_t first_node = c->g->n_nodes;
        out = exp->expand(c, &n);
        if (out == KILN_NONE) break;
        kiln_node *node = &c->g->nodes[out];
        if (out >= first_node && !node->label)
            node->label = n.has_repeat ? fe_fmt(c, "%s.%d", name, copy) : name;
        if (n.repeat > 1 && !kiln_type_equal(&node->type, fe_type(c, n.in[0]))) {
            char a[160], b[160];
            fe_error(c, &n, "repeat", "copies feed each other, so the output must keep the input's type: %s becomes %s",
                     kiln_type_str(fe_type(c, n.in[0]), a, sizeof a), kiln_type_str(&node->type, b, sizeof b));
            out = KILN_NONE;
            break;
        }
        n.in[0] = out;
    }
    check_keys_where(c, &n, fe_fmt(c, "for op '%s'", op),
                     out == KILN_NONE && attribute_error_since(c, &n, first_error));
    return out;
}

static void load_layers(fe_ctx *c, fe_node *top)
{
    const cJSON *layers = item(top->json, "layers");
    fe_mark_used(top, "layers");
    if (!layers) {
        fe_error(c, top, "layers", "required key is missing (a list of layers)");
        c->names_incomplete = true;
        return;
    }
    if (!cJSON_IsArray(layers)) {
        fe_error(c, top, "layers", "expected a list of layers, got %s", fe_describe(c, layers));
        c->names_incomplete = true;
        return;
    }
    int nl = cJSON_GetArraySize(layers);
    const char **names = calloc((size_t)(nl ? nl : 1), sizeof *names);
    KILN_ASSERT(names != NULL);
    fe_index where = {0}; /* layer name → its index, for "already used by layers[j]" */

    /* first pass: names, so that later layers are known (and reported as later) */
    int i = 0;
    for (const cJSON *e = layers->child; e; e = e->next, i++) {
        fe_node n = {.json = e, .path = fe_fmt(c, "layers[%d]", i)};
        if (!cJSON_IsObject(e)) {
            fe_error(c, &n, NULL, "expected a layer object, got %s", fe_describe(c, e));
            c->names_incomplete = true;
            continue;
        }
        const cJSON *name = item(e, "name");
        uint32_t j;
        if (!name || !cJSON_IsString(name)) c->names_incomplete = true;
        if (!name) fe_error(c, &n, "name", "required key is missing (every layer has a unique name)");
        else if (!cJSON_IsString(name)) fe_error(c, &n, "name", "expected a string, got %s", fe_describe(c, name));
        else if (!fe_valid_name(name->valuestring, false)) {
            fe_error(c, &n, "name", "'%s' must match [A-Za-z_][A-Za-z0-9_]*", fe_short(c, name->valuestring));
            if (fe_declare(c, name->valuestring)) fe_define(c, name->valuestring, KILN_NONE); /* quiet references */
        } else if (fe_index_get(&where, name->valuestring, &j))
            fe_error(c, &n, "name", "'%s' is already the name of layers[%u]", fe_short(c, name->valuestring), j);
        else if (!fe_declare(c, name->valuestring))
            fe_error(c, &n, "name", "'%s' is already the name of an input", fe_short(c, name->valuestring));
        else {
            names[i] = kiln_arena_strdup(&c->g->arena, name->valuestring);
            fe_index_put(c, &where, names[i], (uint32_t)i);
        }
    }

    /* second pass: expand in order; `prev` is the previous layer's output */
    uint32_t prev = KILN_NONE;
    i = 0;
    for (const cJSON *e = layers->child; e; e = e->next, i++) {
        uint32_t out = names[i] ? expand_layer(c, e, i, names[i], prev, i > 0) : KILN_NONE;
        if (names[i]) fe_define(c, names[i], out);
        prev = out;
    }
    free(names);
}

/* ---- outputs and losses -------------------------------------------------------------------- */

static void load_outputs(fe_ctx *c, fe_node *top)
{
    const cJSON *outs = item(top->json, "outputs");
    fe_mark_used(top, "outputs");
    fe_node n = {.json = outs, .path = "outputs"};
    if (!outs) {
        fe_error(c, top, "outputs", "required key is missing (a list of layer or input names)");
        return;
    }
    if (!cJSON_IsArray(outs) || !outs->child) {
        fe_error(c, top, "outputs", "expected a non-empty list of layer or input names, got %s", fe_describe(c, outs));
        return;
    }
    fe_index seen = {0};
    int k = 0;
    for (const cJSON *e = outs->child; e; e = e->next, k++) {
        const char *key = fe_fmt(c, "[%d]", k);
        uint32_t id, j;
        if (!cJSON_IsString(e)) {
            fe_error(c, &n, key, "expected the name of a layer or input, got %s", fe_describe(c, e));
        } else if (fe_index_get(&seen, e->valuestring, &j)) {
            fe_error(c, &n, key, "'%s' is already listed as outputs[%u]", fe_short(c, e->valuestring), j);
        } else {
            fe_index_put(c, &seen, kiln_arena_strdup(&c->g->arena, e->valuestring), (uint32_t)k);
            if (fe_resolve(c, &n, key, e->valuestring, &id)) kiln_graph_add_output(c->g, e->valuestring, id);
        }
    }
}

static void load_losses(fe_ctx *c, fe_node *top)
{
    const cJSON *losses = item(top->json, "losses");
    fe_mark_used(top, "losses");
    if (!losses) return;
    if (!cJSON_IsArray(losses)) {
        fe_error(c, top, "losses", "expected a list of losses, got %s", fe_describe(c, losses));
        return;
    }
    uint32_t total = KILN_NONE;
    int n_built = 0;
    int i = 0;
    for (const cJSON *e = losses->child; e; e = e->next, i++) {
        fe_node n = {.json = e, .path = fe_fmt(c, "losses[%d]", i), .repeat = 1};
        if (!cJSON_IsObject(e)) {
            fe_error(c, &n, NULL, "expected a loss object, got %s", fe_describe(c, e));
            continue;
        }
        if (item(e, "name")) {
            fe_mark_used(&n, "name");
            fe_error(c, &n, "name", "losses have no name");
        }
        const char *op;
        double weight;
        bool ok = fe_get_str(c, &n, "op", NULL, &op);
        if (ok && !op) {
            fe_error(c, &n, "op", "required key is missing (cross_entropy, infonce, mse or bce_logits)");
            ok = false;
        }
        ok &= fe_get_num(c, &n, "weight", 1.0, &weight);
        const cJSON *in = item(e, "in");
        if (!in) {
            fe_mark_used(&n, "in");
            fe_error(c, &n, "in", "required key is missing (the loss's operands)");
            ok = false;
        } else {
            ok &= resolve_in(c, &n, in);
        }
        if (!op) continue; /* without an op its keys mean nothing */
        if (!ok) {
            /* expand with failed operands: the loss checks its attributes, builds nothing */
            if (n.n_in == 0) n.n_in = 2; /* `in` missing or unreadable: reported already */
            for (int k = 0; k < n.n_in; k++) n.in[k] = KILN_NONE;
        }
        n.op = op;
        int first_error = c->diags->n;
        uint32_t loss = fe_expand_loss(c, &n);
        if (loss != KILN_NONE || !attribute_error_since(c, &n, first_error))
            check_keys(c, &n, fe_fmt(c, "for loss '%s'", fe_short(c, op)));
        if (loss == KILN_NONE) continue;
        n_built++;
        if (weight != 1.0) loss = fe_scale(c, &n, loss, weight);
        total = total == KILN_NONE ? loss : fe_binary(c, &n, KILN_OP_ADD, total, loss);
    }
    /* a partial sum would be a wrong loss; the load fails anyway when one is missing */
    c->g->loss = n_built == i ? total : KILN_NONE;
    if (c->g->loss != KILN_NONE && !c->g->nodes[c->g->loss].label) c->g->nodes[c->g->loss].label = fe_fmt(c, "loss");
}

/* ---- the whole file -------------------------------------------------------------------------- */

static void load_root(fe_ctx *c, const cJSON *root, const kiln_load_options *opt)
{
    int before = n_errors(c);
    static const char *const top_keys[] = {"format", "name",  "dims",      "inputs", "layers",
                                           "outputs", "losses", "tokenizer", "train",  "init"};
    fe_node top = {.json = root, .path = ""};
    if (!cJSON_IsObject(root)) {
        kiln_diags_add(c->diags, c->file, 0, 0, NULL, "the top level must be a JSON object, got %s",
                       fe_describe(c, root));
        return;
    }
    for (size_t i = 0; i < sizeof top_keys / sizeof top_keys[0]; i++) fe_mark_used(&top, top_keys[i]);
    check_keys(c, &top, "at the top level");

    const char *format, *name;
    if (fe_get_str(c, &top, "format", NULL, &format)) {
        if (!format) {
            fe_error(c, &top, "format", "required key is missing (\"kiln/1\")");
        } else if (strcmp(format, "kiln/1") != 0) {
            /* another format version means nothing below can be read with these rules */
            fe_error(c, &top, "format", "expected \"kiln/1\", got %s", fe_describe(c, item(root, "format")));
            return;
        }
    }
    if (fe_get_str(c, &top, "name", NULL, &name)) {
        if (!name) fe_error(c, &top, "name", "required key is missing (the model's name)");
        else if (!fe_valid_name(name, true))
            fe_error(c, &top, "name", "'%s' must match [a-z_][a-z0-9_]* (it prefixes exported C symbols)",
                     fe_short(c, name));
        /* codegen/aot.c's limit for exported symbols, here so that every command reports
         * it with its place in the file */
        else if (strlen(name) >= 200)
            fe_error(c, &top, "name", "'%s' is %zu characters long: a model's name has fewer than 200 (it "
                     "prefixes exported C symbols)", fe_short(c, name), strlen(name));
        else c->m->name = c->g->name = name;
    }
    load_dims(c, &top, opt);
    load_init(c, &top); /* before the layers: parameters default to init.std */
    load_inputs(c, &top);
    load_layers(c, &top);
    load_outputs(c, &top);
    if (c->decode == KILN_DECODE_PREFILL && n_errors(c) == before) fe_decode_last_row(c); /* decode.c */
    load_losses(c, &top);
    load_train(c, &top); /* last, as in most files, so messages come in file order */
    load_tokenizer(c, &top);
}

void kiln_model_defaults(kiln_model *m)
{
    m->init_std = 0.02;
    m->train = (kiln_train_config){
        .optimizer = KILN_OPT_ADAMW,
        .lr = 3e-4,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .eps = 1e-8,
        .schedule = KILN_SCHED_CONSTANT,
    };
}

bool kiln_model_load_text(kiln_model *m, const char *text, size_t len, const char *file,
                          const kiln_load_options *opt, kiln_diags *diags)
{
    return kiln_model_load_decode(m, text, len, file, opt, NULL, diags);
}

bool kiln_model_load_decode(kiln_model *m, const char *text, size_t len, const char *file,
                            const kiln_load_options *opt, const kiln_decode_options *dec, kiln_diags *diags)
{
    memset(m, 0, sizeof *m);
    kiln_graph_init(&m->graph, "model");
    m->file = kiln_arena_strdup(&m->graph.arena, file ? file : "<model>");
    kiln_model_defaults(m);
    fe_ctx c = {.m = m, .g = &m->graph, .diags = diags, .file = m->file};
    m->decode_pos = m->decode_len = KILN_NONE;
    c.dec_pos_f32 = c.dec_mask = KILN_NONE;
    if (dec && dec->mode != KILN_DECODE_OFF) {
        c.decode = dec->mode;
        c.context = dec->context;
        c.dec_tokens = dec->tokens ? dec->tokens : "tokens";
    }
    int before = n_errors(&c), first_diag = diags->n;

    cJSON *root = parse_text(&c, text, len);
    if (root) {
        check_duplicates(&c, root, NULL);
        if (n_errors(&c) == before) load_root(&c, root, opt);
        cJSON_Delete(root);
    }
    bool ok = n_errors(&c) == before;
    free(c.dec_dep);
    /* every problem found at a JSON path also gets its line:column (locate.c) */
    for (int i = first_diag; i < diags->n; i++) {
        kiln_diag *e = &diags->items[i];
        if (e->line == 0 && e->where && (!e->file || strcmp(e->file, m->file) == 0))
            fe_locate(text, len, e->where, &e->line, &e->col);
    }
    kiln_diags_set_file(diags, m->file);
    if (!ok) kiln_model_free(m);
    return ok;
}

bool kiln_model_load(kiln_model *m, const char *path, const kiln_load_options *opt, kiln_diags *diags)
{
    memset(m, 0, sizeof *m);
    m->graph.loss = KILN_NONE;
    struct stat st;
    int fd = kiln_open_regular(path, &st);
    if (fd == -1) kiln_diags_add(diags, path, 0, 0, NULL, "cannot open the model file: %s", strerror(errno));
    if (fd == -2) kiln_diags_add(diags, path, 0, 0, NULL, "not a regular file");
    if (fd < 0) return false;
    if ((uint64_t)st.st_size > FE_MAX_FILE_BYTES) {
        kiln_diags_add(diags, path, 0, 0, NULL, "the model file is %lld bytes; the limit is 64 MiB",
                       (long long)st.st_size);
        close(fd);
        return false;
    }
    /* read to the end, not to st_size: the file may change while we read it */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    KILN_ASSERT(buf != NULL);
    for (;;) {
        if (len == cap) {
            if (cap > FE_MAX_FILE_BYTES) break;
            cap *= 2;
            char *grown = realloc(buf, cap);
            KILN_ASSERT(grown != NULL);
            buf = grown;
        }
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            kiln_diags_add(diags, path, 0, 0, NULL, "cannot read the model file: %s", strerror(errno));
            free(buf);
            close(fd);
            return false;
        }
        if (got == 0) break;
        len += (size_t)got;
    }
    close(fd);
    if (len > FE_MAX_FILE_BYTES) {
        kiln_diags_add(diags, path, 0, 0, NULL, "the model file is over the 64 MiB limit");
        free(buf);
        return false;
    }
    /* IR text (docs/ir.md: `check --dump-ir`) by its extension: ir_model.c */
    bool ir = kiln_model_path_is_ir(path);
    if (ir && memchr(buf, 0, len)) { /* the parser reads up to a NUL */
        kiln_diags_add(diags, path, 0, 0, NULL, "IR text holds a NUL byte");
        free(buf);
        return false;
    }
    if (ir) buf[len] = 0; /* cap > len: the loop stops at the end or past the limit */
    bool ok = ir ? kiln_model_load_ir(m, buf, path, opt, diags) : kiln_model_load_text(m, buf, len, path, opt, diags);
    free(buf);
    return ok;
}

void kiln_model_free(kiln_model *m)
{
    kiln_graph_free(&m->graph);
    memset(m, 0, sizeof *m);
    m->graph.loss = KILN_NONE;
}

uint32_t kiln_model_find_param(const kiln_model *m, const char *name)
{
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->graph.nodes[m->params[i]].attrs.name, name) == 0) return m->params[i];
    return KILN_NONE;
}

uint32_t kiln_model_find_input(const kiln_model *m, const char *name)
{
    for (int i = 0; i < m->n_inputs; i++) {
        uint32_t id = m->inputs[i];
        if (id != KILN_NONE && strcmp(m->graph.nodes[id].attrs.name, name) == 0) return id;
    }
    return KILN_NONE;
}
