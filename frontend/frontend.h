/* frontend.h — model file (kiln/1 JSON, SPEC section 1) → IR graph.
 *
 * kiln_model_load reads and validates a whole model file, binds its dims and expands
 * every layer, module and loss into IR nodes with the SPEC's parameter names. Every
 * problem found is added to the diagnostics (JSON syntax errors with line:column,
 * semantic errors with the JSON path such as "layers[3].heads"), so one run reports them
 * all. Depends on: ir, runtime (the JSON reader), cJSON (the JSON tree).
 */
#ifndef KILN_FRONTEND_H
#define KILN_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>

#include "ir.h"
#include "json_min.h"

/* A named size, from -D NAME=N or from the shape of a given input tensor. */
typedef struct kiln_dim_binding {
    const char *name;
    int64_t value;
} kiln_dim_binding;

/* The shape of a tensor the user supplies for an input (kiln run --inputs). */
typedef struct kiln_given_input {
    const char *name;
    int rank;
    int64_t dims[KILN_MAX_RANK];
} kiln_given_input;

/* Generation with a KV cache (docs/generation.md): the frontend can build, instead of the
 * plain forward graph, one of the two graphs of a cached decoder. Both need a batch of
 * one and causal self-attention; attention masks given in the model file are dropped
 * (a generated sequence has no padding) and dropout is the identity.
 *
 *   PREFILL  the forward pass over `context` positions (the tokens input is (1, context)),
 *            which also stores every self-attention's keys and values, after rope, into
 *            the cache: graph updates kv.NAME.k / kv.NAME.v ← k / v. Its outputs are
 *            those of the prompt's last row only, (1, 1, …): the extra INPUT node
 *            "kv.len" (i32 [1]) holds the prompt's length n, and the work after the last
 *            attention runs for row n − 1 alone.
 *   STEP     one position (tokens (1, 1)) at the position held by the extra INPUT node
 *            "kv.pos" (i32 [1]): positional encodings, rope angles and alibi / relative
 *            biases are those of that position; the new key and value row is written
 *            into the cache at it (an update computed in place), and attention reads
 *            cache rows 0..pos (the rest are masked).
 *
 * The cache is one STATE node per self-attention and per k / v, "kv.NAME.k" (1, H,
 * context, dh) f32, in kiln_model.kv_states order; compiled as a stateful request, the
 * states are one blob (codegen.h). Only the side of the graph that depends on the
 * generated token input is cached: an encoder–decoder's encoder runs as usual in the
 * prefill (and is dead in the step), and its decoder's cross-attention keys and values
 * (1, H, S, dh) are stored by the prefill and read by the step. */
typedef enum kiln_decode_mode { KILN_DECODE_OFF, KILN_DECODE_PREFILL, KILN_DECODE_STEP } kiln_decode_mode;

typedef struct kiln_load_options {
    const kiln_dim_binding *defines;   /* -D: highest precedence */
    int n_defines;
    const kiln_given_input *given;     /* then dims read off these shapes */
    int n_given;
    const char *given_file;            /* optional: the file `given` came from, named in
                                        * messages about those tensors ("x.safetensors:
                                        * tokens: error: ...") instead of the model file */
} kiln_load_options;

typedef struct kiln_decode_options {
    kiln_decode_mode mode;
    int64_t context;                   /* the cache length (positions) */
    const char *tokens;                /* the generated token input ("tokens", "tgt_in"…) */
} kiln_decode_options;

typedef struct kiln_dim {
    const char *name;
    int64_t value;
} kiln_dim;

typedef enum kiln_optimizer { KILN_OPT_ADAMW, KILN_OPT_SGD } kiln_optimizer;
typedef enum kiln_schedule { KILN_SCHED_CONSTANT, KILN_SCHED_COSINE, KILN_SCHED_LINEAR } kiln_schedule;

typedef struct kiln_param_group {
    const char *match;      /* glob */
    double lr_scale;        /* default 1 */
    double weight_decay;    /* default: the train section's */
} kiln_param_group;

/* The model file's `train` section with SPEC section 4 defaults filled in. */
typedef struct kiln_train_config {
    kiln_optimizer optimizer;  /* adamw */
    double lr;                 /* 3e-4 when absent */
    double beta1, beta2;       /* 0.9, 0.999 */
    double eps;                /* 1e-8 */
    double weight_decay;       /* 0 */
    double momentum;           /* 0 (sgd) */
    int64_t warmup_steps;      /* 0 */
    kiln_schedule schedule;    /* constant */
    double min_lr;             /* 0 */
    int64_t steps;             /* 0 = not given */
    int64_t batch;             /* 0 = not given */
    double grad_clip;          /* 0 = off */
    const char **freeze;       /* globs */
    int n_freeze;
    kiln_param_group *groups;
    int n_groups;
} kiln_train_config;

typedef enum kiln_tokenizer_kind { KILN_TOK_NONE, KILN_TOK_BYTE, KILN_TOK_CHAR, KILN_TOK_BPE } kiln_tokenizer_kind;

typedef struct kiln_tokenizer_config {
    kiln_tokenizer_kind kind;
    int64_t vocab;             /* bpe only */
} kiln_tokenizer_config;

typedef struct kiln_model {
    kiln_graph graph;          /* forward graph + the weighted loss (graph.loss) if `losses` */
    const char *file;          /* arena-owned copies of everything below */
    const char *name;
    kiln_dim *dims;            /* every dim, bound */
    int n_dims;
    uint32_t *inputs;          /* INPUT nodes in the model file's `inputs` order */
    int n_inputs;
    uint32_t *params;          /* PARAM nodes in creation order (the parameter blob order) */
    int n_params;
    kiln_train_config train;
    kiln_tokenizer_config tokenizer;
    uint32_t decode_pos;       /* STEP: the "kv.pos" INPUT node (i32 [1]), else KILN_NONE */
    uint32_t decode_len;       /* PREFILL: the "kv.len" INPUT node (i32 [1]): the prompt's
                                * length n; the outputs are row n − 1's. Else KILN_NONE */
    uint32_t *kv_states;       /* PREFILL/STEP: the KV cache STATE nodes (arena-owned) */
    int n_kv_states;
    uint64_t init_seed;        /* `init.seed`, default 0 */
    double init_std;           /* `init.std`, default 0.02 */
} kiln_model;

/* Loads `path`. On failure returns false with every problem in diags (each naming the
 * file); the model is then freed already. */
bool kiln_model_load(kiln_model *m, const char *path, const kiln_load_options *opt, kiln_diags *diags);
/* Any JSON text kiln reads, through its one strict reader (runtime/json_min.h) into a
 * cJSON tree (free it with cJSON_Delete); NULL with *err (line:column and message) when
 * the text is not strict JSON. */
struct cJSON *kiln_json_tree(const char *text, size_t len, jm_error *err);
/* Whether kiln_model_load reads `path` as IR text: it ends in ".kir". */
bool kiln_model_path_is_ir(const char *path);
/* A model from IR text (docs/ir.md), NUL-terminated: the graph as written, its inputs and
 * params in node order, default train/tokenizer/init sections (ir_model.c).
 * kiln_model_load reads a path ending in ".kir" with it. */
bool kiln_model_load_ir(kiln_model *m, const char *text, const char *file, const kiln_load_options *opt,
                        kiln_diags *diags);
/* Same from text in memory; `file` names it in messages. */
bool kiln_model_load_text(kiln_model *m, const char *text, size_t len, const char *file,
                          const kiln_load_options *opt, kiln_diags *diags);
/* kiln_model_load_text building a generation graph (dec NULL or OFF: the same). */
bool kiln_model_load_decode(kiln_model *m, const char *text, size_t len, const char *file,
                            const kiln_load_options *opt, const kiln_decode_options *dec, kiln_diags *diags);
void kiln_model_free(kiln_model *m);
/* In a generation graph: the first node on the way to `node` that mixes the token
 * positions outside attention (a concat or a reduction along them, say), which a KV
 * cache cannot run one position at a time; KILN_NONE when `node` keeps its rows. */
uint32_t kiln_decode_mixing_node(const kiln_model *m, uint32_t node, const char *tokens);

/* The PARAM node named `name`, or KILN_NONE. */
uint32_t kiln_model_find_param(const kiln_model *m, const char *name);
/* The INPUT node named `name`, or KILN_NONE. */
uint32_t kiln_model_find_input(const kiln_model *m, const char *name);

#endif
