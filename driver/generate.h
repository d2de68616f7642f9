/* generate.h — text generation with a KV cache (`kiln generate`, docs/generation.md).
 *
 *   generate.c   the generator: a model file → compiled entries sharing one parameter
 *                blob and one KV-cache blob — the prefill over the whole context (and
 *                over shorter prompt-length buckets, compiled when first needed) and
 *                the one-token decode step (frontend.h, kiln_decode_mode) — and the
 *                sampler (greedy, temperature, top-k, top-p).
 *   cmd_generate.c  the command: prompt → tokens → prefill → steps, printing each token.
 *
 * Nothing here allocates per token: every buffer, and the libffi call of each entry, is
 * prepared once. */
#ifndef KILN_GENERATE_H
#define KILN_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "codegen.h"
#include "driver.h"
#include "pointer_call.h"
#include "kiln/rng.h"

/* One compiled entry and its prepared call. */
typedef struct gen_entry {
    kiln_model m;
    bool loaded;
    kiln_compiled c;
    uint32_t logits;          /* the output node read */
    uint32_t inputs[4];       /* tokens, [kv.pos or kv.len], [src], [src_mask]: what it reads */
    kiln_compile_request req; /* what is compiled (kiln compile --generate exports it) */
    char suffix[32];          /* the entry's name after the model's: prefill, decode_step, prefill_16… */
    pointer_call call;         /* the entry's prepared libffi call */
} gen_entry;

/* Prefills over shorter prompts: one per length bucket below the context (16, 32, 64…),
 * each loaded and compiled the first time a prompt needs it (generator_prepare). */
enum { GEN_MAX_BUCKETS = 24, GEN_MIN_BUCKET = 16 };

typedef struct generator {
    gen_entry prefill, step;  /* prefill: over the whole context (what compile --generate exports) */
    gen_entry *bucket[GEN_MAX_BUCKETS]; /* bucket[i]: positions GEN_MIN_BUCKET << i, NULL until compiled */
    int64_t workspace_bytes;  /* of g->workspace: the largest any compiled entry needs */
    bool whole_context;       /* every prefill over the whole context, no buckets (--no-cache: the reference) */
    /* what loading a bucket needs: the model file's text and the dims bound */
    char *text;
    size_t text_len;
    char *path, *batch_dim, *seq_dim;
    kiln_dim_binding *defs;   /* the user's, then the batch dim's (1): n_defs; one spare */
    int n_defs;
    int64_t context;          /* positions in the cache: the model's sequence length */
    int64_t vocab;            /* logits per position */
    int64_t table_rows;       /* rows of the token embedding (ids must stay below) */
    void *params;             /* the parameter blob (both entries lay it out alike) */
    void *cache;              /* the KV-cache blob (zeroed at start) */
    int64_t cache_bytes;
    void *workspace;          /* max of both entries' workspaces */
    int32_t *tokens;          /* [context]: the prefill's input */
    int32_t step_token[1], step_pos[1];
    int32_t prefill_len[1];   /* the prefill's n: the prompt's length */
    float *prefill_logits;    /* (vocab): the prompt's last row's */
    float *step_logits;       /* (vocab) */
    /* an encoder–decoder (inputs "src", optionally "src_mask", as the seq2seq task
     * names them): the source the encoder reads, padded to src_len */
    bool has_source;
    int64_t src_len;
    int32_t *src;             /* [src_len] */
    void *src_mask;           /* [src_len] i32 or f32 0/1 */
    kiln_dtype src_mask_dtype;
    const char *tokens_name;  /* the generated token input ("tokens", "tgt_in"…) */
} generator;

/* Loads the model three ways (plain, prefill, step) with the user's -D definitions,
 * checks that it is a decoder generation can drive, compiles both entries and
 * allocates every buffer. The parameters are then read with generator_load. */
bool generator_init(generator *g, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                    int n_defines, kiln_diags *d);
/* The same checks and graphs, nothing compiled or allocated: g->prefill.req and
 * g->step.req are ready for kiln_aot_write (kiln compile --generate). */
bool generator_graphs(generator *g, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                      int n_defines, kiln_diags *d);
/* Fills the parameter blob from a weights file or checkpoint. */
bool generator_load(generator *g, const kiln_tensor_file *f, const char *path, kiln_diags *d);
void generator_free(generator *g);

/* An encoder–decoder's source: ids[0..n), n <= src_len (padded, masked). */
void generator_set_source(generator *g, const int32_t *ids, int64_t n);
/* Compiles the prefill a prompt of n tokens runs (its length bucket, once): before timing
 * a prefill. generator_prefill does it too when needed. */
bool generator_prepare(generator *g, int64_t n, kiln_diags *d);
/* Runs the prefill over ids[0..n) (1 <= n <= context): the smallest bucket holding n
 * positions (or the whole context), the prompt padded with 0; returns the logits of position
 * n − 1 and leaves keys and values of positions 0..n−1 in the cache. NULL with a
 * diagnostic when an id is outside the embedding. */
const float *generator_prefill(generator *g, const int32_t *ids, int64_t n, kiln_diags *d);
/* The decode step: token `id` at position pos (pos < context), reading the cache rows
 * 0..pos−1 and writing row pos. Returns the logits of the next token. */
const float *generator_step(generator *g, int32_t id, int64_t pos, kiln_diags *d);

/* ---- sampling ---------------------------------------------------------------------- */

typedef struct sampler {
    double temperature;       /* 0: greedy */
    int64_t top_k;            /* 0: off */
    double top_p;             /* 1: off */
    kiln_rng rng;
    int64_t vocab;
    int32_t *order;           /* [vocab] scratch */
    double *prob;             /* [vocab] scratch */
} sampler;

void sampler_init(sampler *s, int64_t vocab, double temperature, int64_t top_k, double top_p, uint64_t seed);
void sampler_free(sampler *s);
/* Picks the next id from one row of logits; *logprob = its log-probability under the
 * model (log-softmax of the raw logits, before temperature and filtering). −1 when the
 * row has no distribution to pick from — a NaN or +inf logit, or every logit −inf —
 * with *bad the first such id (0 when all are −inf). */
int32_t sampler_pick(sampler *s, const float *logits, double *logprob, int64_t *bad);

#endif
