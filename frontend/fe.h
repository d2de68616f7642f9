/* fe.h — what the frontend's files share (private to frontend/).
 *
 * model.c walks the model file; for each layer it resolves `in` (default: the previous
 * layer's output), handles `repeat`, and calls the expander registered for the layer's
 * op in the expander table (expanders.c). An expander reads its attributes through the
 * fe_get_* functions below, which type-check each value and record the key as used;
 * after the expander returns, model.c reports every key nobody read as unknown. Nodes
 * are built with fe_add (a thin wrapper over kiln_graph_add that supplies the location)
 * and parameters with fe_param, which applies the SPEC's names and init scheme.
 */
#ifndef KILN_FE_H
#define KILN_FE_H

#include <cjson/cJSON.h>

#include "frontend.h"

#define FE_MAX_KEYS 32

/* A string → uint32 hash index in the graph's arena (attrs.c), so that looking up names
 * stays linear overall even for a hostile model with many thousands of layers. */
typedef struct fe_index {
    const char **keys;
    uint32_t *vals;
    uint32_t cap, n;
} fe_index;

typedef struct fe_ctx {
    kiln_model *m;
    kiln_graph *g;
    kiln_diags *diags;
    const char *file;
    /* name → node for inputs and layer outputs (arena arrays, linear search is fine at
     * model-file sizes) */
    const char **sym_names;
    uint32_t *sym_nodes;
    int n_syms, cap_syms;
    int n_params_cap;
    fe_index sym_index;        /* name → index into sym_names (added by the frontend core) */
    fe_index param_index;      /* parameter name → PARAM node */
    fe_index dim_index;        /* dim name → index into m->dims */
    /* A broken `dims` section, or an input/layer whose name could not be read: unknown
     * dim or node names are then not reported (they would only echo that problem). */
    bool dims_incomplete, names_incomplete;
    /* generation graphs (frontend.h, kiln_decode_mode): the mode, the cache length, and
     * nodes built once per graph on first use (KILN_NONE until then) */
    kiln_decode_mode decode;
    int64_t context;
    uint32_t dec_pos_f32;      /* STEP: kv.pos as f32 (1, 1) */
    uint32_t dec_mask;         /* STEP: (1, context) f32, 1 for cache rows 0..pos */
    int cap_kv_states;
    const char *dec_tokens;    /* the generated token input's name */
    unsigned char *dec_dep;    /* per node: depends on that input (malloc'd, grown lazily) */
    uint32_t n_dec_dep;
} fe_ctx;

/* One JSON object being expanded (a layer, a loss): its path for messages and the keys
 * read so far. */
typedef struct fe_node {
    const cJSON *json;
    const char *path;          /* "layers[3]" */
    const char *name;          /* the layer's `name` (NULL for losses) */
    const char *op;            /* its `op` */
    const char *used[FE_MAX_KEYS];
    int n_used;
    uint32_t in[16];           /* resolved `in` (for a repeated layer: the previous copy's output) */
    int n_in;
    int repeat;                /* the layer's `repeat` (1 when absent) */
    bool has_repeat;
    int copy;                  /* which copy of a repeated layer is being expanded */
} fe_node;

/* ---- reading attributes (each marks the key as used; errors name path.key) ---- */

/* Optional keys return true and leave *out = def when absent; false on a type error
 * (already reported). Required ones (fe_need_*) report a missing key. */
bool fe_get_int(fe_ctx *c, fe_node *n, const char *key, int64_t def, int64_t *out);
bool fe_need_int(fe_ctx *c, fe_node *n, const char *key, int64_t *out);
bool fe_get_num(fe_ctx *c, fe_node *n, const char *key, double def, double *out);
bool fe_get_bool(fe_ctx *c, fe_node *n, const char *key, bool def, bool *out);
/* A string; *out = def (may be NULL) when absent. */
bool fe_get_str(fe_ctx *c, fe_node *n, const char *key, const char *def, const char **out);
/* One of `choices` (NULL-terminated); *out = index of def when absent. */
bool fe_get_enum(fe_ctx *c, fe_node *n, const char *key, const char *const *choices, int def, int *out);
/* A shape: a list of ints or dim names (SPEC 1.4). allow_minus_one for reshape. */
bool fe_get_shape(fe_ctx *c, fe_node *n, const char *key, bool required, bool allow_minus_one,
                  int *rank, int64_t *dims);
/* A list of ints (axes, perm). *present tells whether the key was there. */
bool fe_get_int_list(fe_ctx *c, fe_node *n, const char *key, int max, int *count, int64_t *vals, bool *present);
/* A flat list of numbers (constant.values), malloc'd into *vals. */
bool fe_get_num_list(fe_ctx *c, fe_node *n, const char *key, double **vals, int64_t *count, bool *present);
/* Marks a key as read without reading it (for keys model.c handles: name, op, in, repeat). */
void fe_mark_used(fe_node *n, const char *key);
/* A key naming a node or input (mask, memory, memory_mask): KILN_NONE with *present false
 * when absent; reports unknown names. */
bool fe_get_ref(fe_ctx *c, fe_node *n, const char *key, uint32_t *out, bool *present);

/* Reports an error at path[.key]. */
void fe_error(fe_ctx *c, const fe_node *n, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Added by the frontend core (attrs.c). */
/* A required finite number. */
bool fe_need_num(fe_ctx *c, fe_node *n, const char *key, double *out);
/* `s` itself, or its first 60 bytes and "..." when it is longer than 80: a 1 MB key or
 * name in a hostile file must not make a 1 MB message. */
const char *fe_short(fe_ctx *c, const char *s);
/* A short rendering of a JSON value for messages: "\"six\"", "1.5", "a list". */
const char *fe_describe(fe_ctx *c, const cJSON *v);
/* An exact integer within int64 (false for 1.5, 1e300, strings). */
bool fe_json_int(const cJSON *v, int64_t *out);
/* The name table of inputs and layers. fe_declare adds a name not yet usable (false if
 * it exists); fe_define gives it its node (KILN_NONE for a layer that failed). */
bool fe_declare(fe_ctx *c, const char *name);
void fe_define(fe_ctx *c, const char *name, uint32_t node);
/* The node called `name`, reporting at path.key when it is unknown or a later layer.
 * false also (silently) for a layer that failed. */
bool fe_resolve(fe_ctx *c, const fe_node *n, const char *key, const char *name, uint32_t *out);
/* The candidate within two edits of `word` (for "did you mean"), or NULL. */
const char *fe_closest(const char *word, const char *const *cands, int n);
/* fe_index: the value for key, or false. fe_index_put adds or replaces. */
bool fe_index_get(const fe_index *ix, const char *key, uint32_t *val);
void fe_index_put(fe_ctx *c, fe_index *ix, const char *key, uint32_t val);

/* ---- building ---- */

/* kiln_graph_add with the node's path as origin. `label` may be NULL. */
uint32_t fe_add(fe_ctx *c, const fe_node *n, kiln_op op, const uint32_t *in, uint32_t n_in, const kiln_attrs *a,
                const char *label);
/* Shorthands. */
uint32_t fe_unary(fe_ctx *c, const fe_node *n, kiln_op op, uint32_t x);
uint32_t fe_binary(fe_ctx *c, const fe_node *n, kiln_op op, uint32_t x, uint32_t y);
uint32_t fe_scale(fe_ctx *c, const fe_node *n, uint32_t x, double by);
uint32_t fe_reshape(fe_ctx *c, const fe_node *n, uint32_t x, int rank, const int64_t *dims);
uint32_t fe_transpose(fe_ctx *c, const fe_node *n, uint32_t x, const int64_t *perm);
/* f32 constant of the given shape from `values` (numel of them, or 1 to fill). */
uint32_t fe_const_f32(fe_ctx *c, const fe_node *n, int rank, const int64_t *dims, const float *values, int64_t n_values);
uint32_t fe_const_i32(fe_ctx *c, const fe_node *n, int rank, const int64_t *dims, const int32_t *values, int64_t n_values);
/* Converts an i32 or f32 0/1 mask to f32. */
uint32_t fe_to_f32(fe_ctx *c, const fe_node *n, uint32_t x);

/* A parameter named `name` (the full SPEC name, e.g. "blocks.0.attn.q.weight").
 * Fails (reported) on a duplicate name. */
uint32_t fe_param(fe_ctx *c, const fe_node *n, const char *name, int rank, const int64_t *dims, kiln_init init,
                  double init_arg);
/* An existing parameter by name (for `tie`), KILN_NONE if there is none. */
uint32_t fe_find_param(fe_ctx *c, const char *name);

/* The parameter name prefix of the copy being expanded: "NAME" or "NAME.i". */
const char *fe_prefix(fe_ctx *c, const fe_node *n);
/* Arena printf (names, paths). */
#define fe_fmt(c, ...) kiln_arena_printf(&(c)->g->arena, __VA_ARGS__)

static inline const kiln_type *fe_type(fe_ctx *c, uint32_t id) { return &c->g->nodes[id].type; }

/* ---- generation (decode.c) ---- */

/* STEP: the position input, i32 [1] (created on first use). */
uint32_t fe_decode_pos(fe_ctx *c, const fe_node *n);
/* STEP: row `pos` of a (rows, cols) table (constant or parameter) → (1, cols); reports
 * when the table has fewer than context rows (`what` names it). */
uint32_t fe_decode_row(fe_ctx *c, const fe_node *n, uint32_t table, const char *what);
/* PREFILL and STEP: self-attention over the cache; q (1,H,T,dh) and k, v (1,H,T,dh) after
 * rope (STEP: rope at pos). PREFILL records k, v as the cache's new value and returns
 * KILN_NONE-free attention inputs unchanged; STEP returns the cache with row pos
 * replaced. `name` is the attention's parameter prefix. *k and *v are replaced by what
 * attention must read. */
bool fe_decode_cache(fe_ctx *c, const fe_node *n, const char *name, uint32_t *k, uint32_t *v);
/* Whether node id depends on the generated token input: the decoder's side of the
 * graph, which generation caches (an encoder's side runs as usual). False when not
 * generating. */
bool fe_decode_depends(fe_ctx *c, uint32_t id);
/* PREFILL and STEP: a decoder's cross-attention over the encoder's memory; k, v
 * (1,H,S,dh) are computed once by the prefill and stored; the step reads them. */
bool fe_decode_cross(fe_ctx *c, const fe_node *n, const char *name, uint32_t *k, uint32_t *v);
/* STEP: the (1, context) f32 mask of the cache rows 0..pos. */
uint32_t fe_decode_mask(fe_ctx *c, const fe_node *n);
/* STEP: kv.pos as f32 (1, 1). */
uint32_t fe_decode_pos_f32(fe_ctx *c, const fe_node *n);
/* PREFILL, after the outputs are known: every output over the token rows becomes its
 * value at the prompt's last row only, row kv.len − 1 (the INPUT m->decode_len): the
 * row-wise tail after the last attention is rebuilt over that one row. */
void fe_decode_last_row(fe_ctx *c);

/* ---- expanders ---- */

/* Expands one layer (or one copy of a repeated one) whose inputs are n->in and returns
 * its output node, or KILN_NONE after reporting. An expander reads all its attributes
 * before it looks at n->in, and returns KILN_NONE without building anything when an
 * input is KILN_NONE: model.c relies on this to check the attributes of a layer whose
 * inputs failed (the same holds for fe_expand_loss). */
typedef uint32_t (*fe_expand_fn)(fe_ctx *c, fe_node *n);

typedef struct fe_expander {
    const char *op;
    fe_expand_fn expand;
    int min_in, max_in;        /* how many `in` entries it takes */
    bool takes_prev;           /* false for sources (constant, iota, param): no default `in` */
} fe_expander;

/* The expander for a layer op, or NULL. Primitive ops are expanded by primitives.c. */
const fe_expander *fe_find_expander(const char *op);
/* Fills names[] with up to max layer op names (for "did you mean"); returns the count. */
int fe_expander_names(const char **names, int max);

/* Losses: expands one entry of `losses` into a scalar node, or KILN_NONE. */
uint32_t fe_expand_loss(fe_ctx *c, fe_node *n);

/* Module expanders (one file per family). */
uint32_t fe_expand_primitive(fe_ctx *c, fe_node *n);   /* primitives.c */
uint32_t fe_expand_linear(fe_ctx *c, fe_node *n);      /* dense.c */
uint32_t fe_expand_embedding(fe_ctx *c, fe_node *n);   /* dense.c */
uint32_t fe_expand_feed_forward(fe_ctx *c, fe_node *n);/* dense.c */
uint32_t fe_expand_layernorm(fe_ctx *c, fe_node *n);   /* norm.c */
uint32_t fe_expand_rmsnorm(fe_ctx *c, fe_node *n);     /* norm.c */
uint32_t fe_expand_pos_encoding(fe_ctx *c, fe_node *n);/* position.c */
uint32_t fe_expand_attention(fe_ctx *c, fe_node *n);   /* attention.c */
uint32_t fe_expand_encoder_layer(fe_ctx *c, fe_node *n);/* layers.c */
uint32_t fe_expand_decoder_layer(fe_ctx *c, fe_node *n);/* layers.c */
uint32_t fe_expand_pool(fe_ctx *c, fe_node *n);        /* pool.c */

/* Building blocks the modules share, parameterised by a parameter name prefix so that
 * encoder/decoder layers can reuse them ("blocks.0.attn"). Each reads no attributes. */
typedef struct fe_attention_spec {
    int64_t heads;
    bool causal, bias;
    double dropout;
    int position;              /* 0 none, 1 relative, 2 rope, 3 alibi */
    uint32_t mask;             /* (B, S) key mask node or KILN_NONE */
    int n_layers;              /* for the residual-projection init scale (0 if not repeated) */
} fe_attention_spec;
/* x (B,T,D), memory (B,S,Dm) (== x for self-attention) → (B,T,D). */
uint32_t fe_build_attention(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, uint32_t memory,
                            const fe_attention_spec *spec);
uint32_t fe_build_linear(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, int64_t out, bool bias,
                         double weight_std);
uint32_t fe_build_layernorm(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, double eps);
/* activation: 0 relu, 1 gelu, 2 gelu_tanh, 3 silu */
uint32_t fe_build_feed_forward(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, int64_t hidden,
                               int activation, double dropout, int n_layers);

/* model.c: the SPEC's defaults of the train and init sections (ir_model.c too). */
void kiln_model_defaults(kiln_model *m);
/* model.c: a name of [a-z_][a-z0-9_]* ([A-Za-z_][A-Za-z0-9_]* unless lower_only): a model's
 * (it prefixes exported C symbols; ir_model.c too), an input's, a layer's. */
bool fe_valid_name(const char *s, bool lower_only);

#endif
