/* generate.c — the KV-cached generator and the sampler (generate.h).
 *
 * The model file is loaded three times: plainly (with batch 1) to learn the context
 * length (the tokens input's second dim), the vocabulary (the logits' last dim) and the
 * embedding's rows; then as the prefill graph over the whole context and as the decode
 * step (the sequence dim bound to 1), both built by the frontend's generation mode
 * (frontend/decode.c). Both are compiled as stateful entries over one KV-cache blob:
 *
 *     int NAME_prefill(params, cache, workspace, tokens[context], n[1], logits[V])
 *     int NAME_decode_step(params, cache, workspace, tokens[1], pos[1], logits[V])
 *
 * The prefill's logits are those of the prompt's last token, row n − 1: the frontend
 * builds its work after the last attention (the last layer's feed-forward, the final
 * norm, the logits product) for that one row (frontend/decode.c, fe_decode_last_row).
 *
 * They lay out parameters and cache alike (the same modules in the same order); that is
 * checked, so one parameter blob and one cache serve both. A prompt shorter than the
 * context runs a prefill compiled for its length bucket (16, 32, 64… positions, each
 * loaded and compiled the first time a prompt needs it: generator_prepare), with the
 * prompt padded by id 0 to the bucket: attention is causal, so the padding changes no row
 * before it, and its cache rows (and the zeros the bucket leaves after it) are
 * overwritten by the steps before any step reads them. A prompt longer than the largest
 * bucket below the context runs the whole context's prefill.
 *
 * Sampling (sampler_pick) works in double on one row of logits: greedy takes the first
 * largest logit; otherwise (logit − max)/temperature (≤ 0, so no temperature overflows it)
 * are ranked (value descending, then id), cut to the top k and every id tied with the
 * k-th (HF's TopKLogitsWarper), turned into probabilities, cut to the smallest prefix
 * holding top_p of the mass, and one uniform draw from the run's RNG picks along that
 * ranking. Without top-k and top-p nothing is sorted: the draw walks the ids in order;
 * top-k selects its k ids with a heap and sorts only those, so a large vocabulary costs
 * O(V log k) per token. A row with a NaN or +inf logit has no distribution (torch's
 * softmax gives NaN there and multinomial refuses it): the caller reports it.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "generate.h"
#include "train.h"
#include "memlimit.h"

/* The name of dim `axis` of input `input` in the model file, or NULL (malloc'd copy).
 * The loaded model keeps dim values, not which name an input's shape used, so the text
 * is read again, through kiln's one strict JSON reader (kiln_json_tree): the frontend
 * has just accepted the same text, so it cannot fail here but would give NULL. */
static char *input_dim_name(const char *text, size_t len, const char *input, int axis)
{
    jm_error err;
    cJSON *root = kiln_json_tree(text, len, &err);
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "inputs"), input);
    const cJSON *dim = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(in, "shape"), axis);
    char *copy = cJSON_IsString(dim) ? strdup(dim->valuestring) : NULL;
    cJSON_Delete(root);
    return copy;
}

/* The token input: "tokens", else "tgt_in" (an encoder–decoder's, as the seq2seq task
 * names it), else the first i32 (B, T) input. */
static uint32_t token_input(const kiln_model *m)
{
    uint32_t id = kiln_model_find_input(m, "tokens");
    if (id == KILN_NONE) id = kiln_model_find_input(m, "tgt_in");
    if (id != KILN_NONE) return id;
    for (int i = 0; i < m->n_inputs; i++) {
        const kiln_type *t = &m->graph.nodes[m->inputs[i]].type;
        if (t->dtype == KILN_I32 && t->rank == 2) return m->inputs[i];
    }
    return KILN_NONE;
}

/* The output holding next-token logits: the first f32 (1, T, V) output. */
static uint32_t logits_output(const kiln_model *m, int64_t T)
{
    const kiln_graph *g = &m->graph;
    for (uint32_t o = 0; o < g->n_outputs; o++) {
        const kiln_type *t = &g->nodes[g->outputs[o].node].type;
        if (t->dtype == KILN_F32 && t->rank == 3 && t->dims[0] == 1 && t->dims[1] == T) return o;
    }
    return KILN_NONE;
}

/* Loads one generation graph, keeps only its logits output and prepares its request. */
static bool entry_init(gen_entry *e, const char *text, size_t len, const char *path, const kiln_dim_binding *defs,
                       int n_defs, kiln_decode_mode mode, int64_t context, const char *tokens_name, const char *suffix,
                       kiln_diags *d)
{
    kiln_load_options opt = {defs, n_defs, NULL, 0, NULL};
    kiln_decode_options dec = {mode, context, tokens_name};
    if (!kiln_model_load_decode(&e->m, text, len, path, &opt, &dec, d)) return false;
    e->loaded = true;
    kiln_model *m = &e->m;
    kiln_graph *g = &m->graph;
    uint32_t tok = token_input(m);
    /* one position: the step's, or the prefill's last prompt row */
    uint32_t o = tok == KILN_NONE ? KILN_NONE : logits_output(m, 1);
    /* the prefill keeps its logits over every row when they mix the positions */
    uint32_t whole = tok == KILN_NONE || o != KILN_NONE ? KILN_NONE : logits_output(m, g->nodes[tok].type.dims[1]);
    uint32_t mixing = whole == KILN_NONE ? KILN_NONE : kiln_decode_mixing_node(m, g->outputs[whole].node, tokens_name);
    if (mixing != KILN_NONE) {
        const kiln_node *nd = &g->nodes[mixing];
        kiln_diags_add(d, m->file, 0, 0, nd->origin,
                       "%s mixes the token positions outside attention (%s): generation computes one position at a "
                       "time over a cache of attention's keys and values, so each position may depend on earlier "
                       "ones only through causal attention, and generation cannot run this model",
                       nd->label ? nd->label : "this layer", kiln_op_table[nd->op].name);
        return false;
    }
    if (tok == KILN_NONE || o == KILN_NONE) {
        kiln_diags_add(d, m->file, 0, 0, NULL, "internal error: the generation graph lost its tokens or logits");
        return false;
    }
    e->logits = g->outputs[o].node;
    g->outputs[0] = g->outputs[o];
    g->n_outputs = 1;
    uint32_t n_inputs = 0;
    e->inputs[n_inputs++] = tok;
    /* a model with neither attention nor positions (a bigram model) has no cache and its
     * step needs no position */
    if (mode == KILN_DECODE_STEP && m->decode_pos != KILN_NONE) e->inputs[n_inputs++] = m->decode_pos;
    /* the prefill's prompt length: which row's logits it computes */
    if (mode == KILN_DECODE_PREFILL && m->decode_len != KILN_NONE) e->inputs[n_inputs++] = m->decode_len;
    /* generation feeds the tokens, the position, and an encoder–decoder's source */
    unsigned char *live = calloc(g->n_nodes, 1);
    KILN_ASSERT(live != NULL);
    kiln_graph_live(g, KILN_LIVE_UPDATES, live);
    bool ok = true;
    for (int i = 0; i < m->n_inputs; i++) {
        uint32_t id = m->inputs[i];
        if (id == tok || !live[id]) continue;
        const char *name = g->nodes[id].attrs.name;
        if (!strcmp(name, "src") || !strcmp(name, "src_mask")) {
            e->inputs[n_inputs++] = id;
            continue;
        }
        kiln_diags_add(d, m->file, 0, 0, name,
                       "the model's logits depend on this input, but generation feeds only '%s' (and an "
                       "encoder-decoder's 'src' and 'src_mask')", g->nodes[tok].attrs.name);
        ok = false;
    }
    free(live);
    if (!ok) return false;
    snprintf(e->suffix, sizeof e->suffix, "%s", suffix);
    e->req = (kiln_compile_request){.g = g,
                                    .inputs = e->inputs,
                                    .n_inputs = n_inputs,
                                    .params = m->params,
                                    .n_params = (uint32_t)m->n_params,
                                    .name = m->name,
                                    .stateful = true,
                                    .states = m->kv_states,
                                    .n_states = (uint32_t)m->n_kv_states,
                                    .suffix = e->suffix,
                                    .pipeline = &cli_pipeline};
    return true;
}

/* Compiles the entry and prepares its libffi call. */
static bool entry_compile(gen_entry *e, kiln_diags *d)
{
    if (!kiln_compile_graph(&e->req, &e->c, d)) return false;
    pointer_call_init(&e->call, e->c.n_args);
    return true;
}

static void entry_free(gen_entry *e)
{
    pointer_call_free(&e->call);
    kiln_compiled_free(&e->c);
    if (e->loaded) kiln_model_free(&e->m);
    memset(e, 0, sizeof *e);
}

/* Whether both entries place every parameter and cache tensor at the same offset. */
static bool same_layout(const gen_entry *a, const gen_entry *b)
{
    if (a->m.n_params != b->m.n_params || a->m.n_kv_states != b->m.n_kv_states) return false;
    if (a->c.params_bytes != b->c.params_bytes || a->c.optim_bytes != b->c.optim_bytes) return false;
    for (int i = 0; i < a->m.n_params; i++) {
        if (a->c.param_offsets[i] != b->c.param_offsets[i]) return false;
        if (strcmp(a->m.graph.nodes[a->m.params[i]].attrs.name, b->m.graph.nodes[b->m.params[i]].attrs.name)) return false;
    }
    for (int i = 0; i < a->m.n_kv_states; i++)
        if (a->c.state_offsets[i] != b->c.state_offsets[i]) return false;
    return true;
}

/* Every parameter has one shape in the prefill (the context's positions) and in the
 * decode step (one position): the weights are bound once for both. A shape written with
 * the sequence dim (a `param` of shape ["T", "D"]) is not. */
static bool fixed_param_shapes(const kiln_model *prefill, const kiln_model *step, const char *seq_dim, kiln_diags *d)
{
    for (int i = 0; i < prefill->n_params && i < step->n_params; i++) {
        const kiln_node *a = &prefill->graph.nodes[prefill->params[i]], *b = &step->graph.nodes[step->params[i]];
        if (kiln_type_equal(&a->type, &b->type)) continue;
        char ta[160], tb[160];
        kiln_diags_add(d, prefill->file, 0, 0, a->origin,
                       "parameter '%s' is %s over the whole context but %s in the decode step: its shape depends on the "
                       "sequence dim %s, which generation binds to each length, and the weights have one shape (a "
                       "learned position table is a pos_encoding with kind \"learned\" and max_len rows)",
                       a->attrs.name, kiln_type_str(&a->type, ta, sizeof ta), kiln_type_str(&b->type, tb, sizeof tb),
                       seq_dim ? seq_dim : "T");
        return false;
    }
    return true;
}

bool generator_graphs(generator *g, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                      int n_defines, kiln_diags *d)
{
    memset(g, 0, sizeof *g);
    bool ok = false;
    /* kept for the prompt-length buckets, loaded later (generator_prepare) */
    g->text = malloc(len + 1);
    g->path = strdup(path);
    KILN_ASSERT(g->text && g->path);
    memcpy(g->text, text, len);
    g->text[len] = 0;
    g->text_len = len;
    char *batch_dim = g->batch_dim = train_batch_dim(text, len), *seq_dim = NULL;
    kiln_dim_binding *defs = g->defs = calloc((size_t)n_defines + 2, sizeof *defs);
    KILN_ASSERT(defs != NULL);
    if (n_defines) memcpy(defs, defines, (size_t)n_defines * sizeof *defs);
    int n = n_defines;
    if (batch_dim) defs[n++] = (kiln_dim_binding){batch_dim, 1}; /* later definitions win */
    g->n_defs = n;

    /* 1. the plain model: context, vocab, tokens */
    kiln_model m;
    kiln_load_options opt = {defs, n, NULL, 0, NULL};
    if (!kiln_model_load_text(&m, text, len, path, &opt, d)) goto out;
    uint32_t tok = token_input(&m);
    if (tok == KILN_NONE) {
        kiln_diags_add(d, m.file, 0, 0, "inputs",
                       "generation needs an i32 token input of shape (B, T) (named 'tokens', or the first i32 input)");
        kiln_model_free(&m);
        goto out;
    }
    const kiln_type *tt = &m.graph.nodes[tok].type;
    const char *tok_name = m.graph.nodes[tok].attrs.name;
    g->tokens_name = strdup(tok_name);
    KILN_ASSERT(g->tokens_name != NULL);
    g->context = tt->dims[1];
    seq_dim = g->seq_dim = input_dim_name(text, len, tok_name, 1);
    uint32_t o = logits_output(&m, g->context);
    bool good = true;
    /* an attention over the generated tokens that is not causal sees later positions:
     * the model is an encoder. (An encoder-decoder's encoder and cross-attention do not
     * attend over the generated tokens' keys: queries only.) */
    unsigned char *dep = calloc(m.graph.n_nodes ? m.graph.n_nodes : 1, 1);
    KILN_ASSERT(dep != NULL);
    for (uint32_t id = 0; id < m.graph.n_nodes; id++) {
        const kiln_node *nd = &m.graph.nodes[id];
        dep[id] = id == tok;
        for (uint32_t j = 0; j < nd->n_in && !dep[id]; j++) dep[id] = dep[nd->in[j]];
    }
    for (uint32_t id = 0; id < m.graph.n_nodes && good; id++) {
        const kiln_node *nd = &m.graph.nodes[id];
        if (nd->op != KILN_OP_ATTENTION || nd->attrs.causal || !dep[nd->in[1]]) continue;
        kiln_diags_add(d, m.file, 0, 0, nd->origin,
                       "this attention over the tokens is not causal: the model is an encoder, and generation "
                       "needs a decoder (causal self-attention over the generated tokens)");
        good = false;
    }
    free(dep);
    uint32_t src = kiln_model_find_input(&m, "src"), src_mask = kiln_model_find_input(&m, "src_mask");
    if (src != KILN_NONE && m.graph.nodes[src].type.rank == 2) {
        g->has_source = true;
        g->src_len = m.graph.nodes[src].type.dims[1];
        g->src_mask_dtype = src_mask != KILN_NONE ? m.graph.nodes[src_mask].type.dtype : KILN_I32;
    }
    if (!good) {
        kiln_model_free(&m);
        goto out;
    }
    if (tt->dims[0] != 1) {
        kiln_diags_add(d, m.file, 0, 0, tok_name, "generation needs a batch of 1, but the batch dim is fixed at %lld",
                       (long long)tt->dims[0]);
        good = false;
    }
    if (!seq_dim) {
        kiln_diags_add(d, m.file, 0, 0, tok_name,
                       "the sequence length must be a named dim (such as \"T\") so that the decode step can bind it to 1");
        good = false;
    }
    if (o == KILN_NONE) {
        kiln_diags_add(d, m.file, 0, 0, "outputs",
                       "generation needs an output of next-token logits of shape (B, T, vocab), and none has it");
        good = false;
    }
    if (g->context < 1) {
        kiln_diags_add(d, m.file, 0, 0, tok_name, "the sequence length is 0: there is no context to generate in");
        good = false;
    }
    if (good) {
        g->vocab = m.graph.nodes[m.graph.outputs[o].node].type.dims[2];
        /* the rows of the embedding the tokens index */
        g->table_rows = INT64_MAX;
        for (uint32_t id = 0; id < m.graph.n_nodes; id++) {
            const kiln_node *nd = &m.graph.nodes[id];
            if (nd->op == KILN_OP_GATHER && nd->in[1] == tok && nd->type.dims[0] >= 0)
                g->table_rows = m.graph.nodes[nd->in[0]].type.dims[nd->attrs.axis];
        }
    }
    kiln_model_free(&m);
    if (!good) goto out;

    /* 2. the two entries */
    if (!entry_init(&g->prefill, text, len, path, defs, n, KILN_DECODE_PREFILL, g->context, g->tokens_name,
                    "prefill", d))
        goto out;
    defs[n] = (kiln_dim_binding){seq_dim, 1};
    if (!entry_init(&g->step, text, len, path, defs, n + 1, KILN_DECODE_STEP, g->context, g->tokens_name,
                    "decode_step", d) ||
        !fixed_param_shapes(&g->prefill.m, &g->step.m, seq_dim, d))
        goto out;
    ok = true;
out:
    if (!ok) generator_free(g);
    return ok;
}

/* The entry's call arguments: (params, cache, workspace, inputs in request order, logits). */
static void entry_bind(generator *g, gen_entry *e, bool step)
{
    void **a = e->call.args;
    a[0] = g->params, a[1] = g->cache, a[2] = g->workspace;
    for (uint32_t i = 0; i < e->req.n_inputs; i++) {
        const char *in = e->m.graph.nodes[e->inputs[i]].attrs.name;
        a[3 + i] = e->inputs[i] == e->m.decode_pos ? (void *)g->step_pos
                   : e->inputs[i] == e->m.decode_len ? (void *)g->prefill_len
                   : !strcmp(in, "src")           ? (void *)g->src
                   : !strcmp(in, "src_mask")      ? g->src_mask
                   : !step                        ? (void *)g->tokens
                                                  : (void *)g->step_token;
    }
    a[3 + e->req.n_inputs] = step ? g->step_logits : g->prefill_logits;
    KILN_ASSERT(e->c.n_args == 4 + e->req.n_inputs);
}

/* The bucket of a prompt of n tokens: the smallest GEN_MIN_BUCKET << i holding n and
 * shorter than the context, or −1 (the whole context's prefill). */
static int bucket_of(const generator *g, int64_t n)
{
    if (g->whole_context) return -1;
    for (int i = 0; i < GEN_MAX_BUCKETS && ((int64_t)GEN_MIN_BUCKET << i) < g->context; i++)
        if (n <= ((int64_t)GEN_MIN_BUCKET << i)) return i;
    return -1;
}

bool generator_prepare(generator *g, int64_t n, kiln_diags *d)
{
    int i = bucket_of(g, n);
    if (i < 0 || g->bucket[i]) return true;
    gen_entry *e = calloc(1, sizeof *e);
    KILN_ASSERT(e != NULL);
    char suffix[32];
    int64_t T = (int64_t)GEN_MIN_BUCKET << i;
    snprintf(suffix, sizeof suffix, "prefill_%lld", (long long)T);
    g->defs[g->n_defs] = (kiln_dim_binding){g->seq_dim, T};
    bool ok = entry_init(e, g->text, g->text_len, g->path, g->defs, g->n_defs + 1, KILN_DECODE_PREFILL, g->context,
                         g->tokens_name, suffix, d) &&
              entry_compile(e, d);
    if (ok && !same_layout(&g->prefill, e)) {
        kiln_diags_add(d, g->prefill.m.file, 0, 0, NULL,
                       "internal error: the prefill over %lld positions lays out memory unlike the others", (long long)T);
        ok = false;
    }
    if (!ok) {
        entry_free(e);
        free(e);
        return false;
    }
    if (e->c.workspace_bytes > g->workspace_bytes) { /* a larger workspace: every call points at it */
        kiln_aligned_free(g->workspace);
        g->workspace_bytes = e->c.workspace_bytes;
        g->workspace = kiln_aligned_alloc((size_t)g->workspace_bytes);
        KILN_ASSERT(g->workspace != NULL);
        g->prefill.call.args[2] = g->step.call.args[2] = g->workspace;
        for (int k = 0; k < GEN_MAX_BUCKETS; k++)
            if (g->bucket[k]) g->bucket[k]->call.args[2] = g->workspace;
    }
    entry_bind(g, e, false);
    g->bucket[i] = e;
    return true;
}

bool generator_init(generator *g, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                    int n_defines, kiln_diags *d)
{
    if (!generator_graphs(g, text, len, path, defines, n_defines, d)) return false;
    bool ok = false;
    if (!entry_compile(&g->prefill, d) || !entry_compile(&g->step, d)) goto out;
    if (!same_layout(&g->prefill, &g->step)) {
        kiln_diags_add(d, g->prefill.m.file, 0, 0, NULL,
                       "internal error: the prefill and the decode step lay out memory differently");
        goto out;
    }

    /* 3. buffers, when they fit */
    int64_t ws_need = g->prefill.c.workspace_bytes > g->step.c.workspace_bytes ? g->prefill.c.workspace_bytes
                                                                               : g->step.c.workspace_bytes;
    if (!limits_check_blobs(&g->prefill.m.graph, g->prefill.c.params_bytes, g->prefill.c.optim_bytes, ws_need,
                            2 * g->vocab * (int64_t)sizeof(float), "generate", d))
        goto out;
    g->params = kiln_aligned_alloc((size_t)g->prefill.c.params_bytes);
    g->cache_bytes = g->prefill.c.optim_bytes;
    g->cache = kiln_aligned_alloc((size_t)g->cache_bytes);
    int64_t ws = g->prefill.c.workspace_bytes > g->step.c.workspace_bytes ? g->prefill.c.workspace_bytes
                                                                          : g->step.c.workspace_bytes;
    g->workspace = kiln_aligned_alloc((size_t)ws);
    g->workspace_bytes = ws;
    g->tokens = calloc((size_t)g->context, sizeof *g->tokens);
    g->prefill_logits = kiln_aligned_alloc((size_t)g->vocab * sizeof(float));
    g->step_logits = kiln_aligned_alloc((size_t)g->vocab * sizeof(float));
    /* zeroed by kiln_aligned_alloc: the parameters until loaded, the cache until a prefill */
    KILN_ASSERT(g->params && g->cache && g->workspace && g->tokens && g->prefill_logits && g->step_logits);

    if (g->has_source) {
        g->src = calloc((size_t)g->src_len, sizeof *g->src);
        g->src_mask = calloc((size_t)g->src_len, 4);
        KILN_ASSERT(g->src && g->src_mask);
    }
    entry_bind(g, &g->prefill, false);
    entry_bind(g, &g->step, true);
    ok = true;
out:
    if (!ok) generator_free(g);
    return ok;
}

bool generator_load(generator *g, const kiln_tensor_file *f, const char *path, kiln_diags *d)
{
    const kiln_model *m = &g->prefill.m;
    return ckpt_restore(&m->graph, m->params, (uint32_t)m->n_params, g->prefill.c.param_offsets, g->params, f, path,
                        NULL, d);
}

void generator_free(generator *g)
{
    entry_free(&g->prefill);
    entry_free(&g->step);
    for (int i = 0; i < GEN_MAX_BUCKETS; i++)
        if (g->bucket[i]) {
            entry_free(g->bucket[i]);
            free(g->bucket[i]);
        }
    free(g->text);
    free(g->path);
    free(g->defs);
    free(g->batch_dim);
    free(g->seq_dim);
    kiln_aligned_free(g->params);
    kiln_aligned_free(g->cache);
    kiln_aligned_free(g->workspace);
    kiln_aligned_free(g->prefill_logits);
    kiln_aligned_free(g->step_logits);
    free(g->tokens);
    free(g->src);
    free(g->src_mask);
    free((char *)g->tokens_name);
    memset(g, 0, sizeof *g);
}

static bool call(gen_entry *e, kiln_diags *d)
{
    int rc = pointer_call_run(&e->call, e->c.entry);
    if (rc == KILN_RC_OK) return true;
    kiln_diags_add(d, NULL, 0, 0, "generate", "%s",
                   rc == KILN_RC_INDEX_RANGE ? "a token id or position is out of range of the model's tables"
                                                  : "the compiled model failed");
    return false;
}

void generator_set_source(generator *g, const int32_t *ids, int64_t n)
{
    KILN_ASSERT(g->has_source && n >= 0 && n <= g->src_len);
    for (int64_t i = 0; i < g->src_len; i++) {
        g->src[i] = i < n ? ids[i] : 0;
        if (g->src_mask_dtype == KILN_F32) ((float *)g->src_mask)[i] = i < n ? 1.0f : 0.0f;
        else ((int32_t *)g->src_mask)[i] = i < n;
    }
}

const float *generator_prefill(generator *g, const int32_t *ids, int64_t n, kiln_diags *d)
{
    KILN_ASSERT(n >= 1 && n <= g->context);
    if (!generator_prepare(g, n, d)) return NULL;
    int i = bucket_of(g, n);
    memcpy(g->tokens, ids, (size_t)n * sizeof *ids);
    memset(g->tokens + n, 0, (size_t)(g->context - n) * sizeof *ids);
    g->prefill_len[0] = (int32_t)n;
    if (!call(i < 0 ? &g->prefill : g->bucket[i], d)) return NULL;
    return g->prefill_logits;
}

const float *generator_step(generator *g, int32_t id, int64_t pos, kiln_diags *d)
{
    KILN_ASSERT(pos >= 0 && pos < g->context);
    g->step_token[0] = id;
    g->step_pos[0] = (int32_t)pos;
    if (!call(&g->step, d)) return NULL;
    return g->step_logits;
}

/* ---- sampling ------------------------------------------------------------------------ */

void sampler_init(sampler *s, int64_t vocab, double temperature, int64_t top_k, double top_p, uint64_t seed)
{
    *s = (sampler){.temperature = temperature, .top_k = top_k, .top_p = top_p, .vocab = vocab};
    kiln_rng_seed(&s->rng, seed, "generate");
    s->order = calloc((size_t)vocab, sizeof *s->order);
    s->prob = calloc((size_t)vocab, sizeof *s->prob);
    KILN_ASSERT(s->order && s->prob);
}

void sampler_free(sampler *s)
{
    free(s->order);
    free(s->prob);
    memset(s, 0, sizeof *s);
}

static const double *sort_key; /* qsort has no context argument */

static int by_value_desc(const void *a, const void *b);

static int by_value_desc(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (sort_key[x] != sort_key[y]) return sort_key[x] > sort_key[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* The ranking's order: a before b. */
static bool better(const double *p, int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); }

/* heap[0..n) is a heap with the worst kept id at the root; restores it below i. */
static void sift_down(const double *p, int32_t *heap, int64_t n, int64_t i)
{
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(p, heap[w], heap[l])) w = l;
        if (r < n && better(p, heap[w], heap[r])) w = r;
        if (w == i) return;
        int32_t t = heap[i];
        heap[i] = heap[w], heap[w] = t;
        i = w;
    }
}

/* ord[0..k) = the k first ids of the ranking, in ranking order: a heap of the best k
 * seen (O(V log k)), then a sort of those k only — the same order a full sort gives. */
static void top_k_ids(const double *p, int64_t V, int64_t k, int32_t *ord)
{
    for (int64_t i = 0; i < k; i++) ord[i] = (int32_t)i;
    for (int64_t i = k / 2; i-- > 0;) sift_down(p, ord, k, i);
    for (int64_t i = k; i < V; i++) {
        if (!better(p, (int32_t)i, ord[0])) continue;
        ord[0] = (int32_t)i;
        sift_down(p, ord, k, 0);
    }
    sort_key = p;
    qsort(ord, (size_t)k, sizeof *ord, by_value_desc);
}

int32_t sampler_pick(sampler *s, const float *logits, double *logprob, int64_t *bad)
{
    int64_t V = s->vocab;
    /* the model's log-probabilities: log-softmax of the raw logits, in double */
    double mx = -INFINITY;
    int32_t best = 0;
    for (int64_t i = 0; i < V; i++) {
        if (isnan(logits[i]) || logits[i] == INFINITY) {
            *bad = i;
            return -1;
        }
        if (logits[i] > mx) mx = logits[i], best = (int32_t)i;
    }
    if (mx == -INFINITY) {
        *bad = 0;
        return -1;
    }
    double z = 0;
    for (int64_t i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    double logz = mx + log(z);
    int32_t pick = best;
    if (s->temperature > 0) {
        double *p = s->prob;
        int32_t *ord = s->order;
        for (int64_t i = 0; i < V; i++) p[i] = ((double)logits[i] - mx) / s->temperature, ord[i] = (int32_t)i;
        int64_t keep = V;
        bool ranked = (s->top_k > 0 && s->top_k < V) || s->top_p < 1;
        if (s->top_k > 0 && s->top_k < V) {
            keep = s->top_k;
            top_k_ids(p, V, keep, ord);
            /* ids tied with the k-th stay too, as HF keeps every score ≥ the k-th; they
             * come after it in the ranking (same value, larger ids) */
            double kth = p[ord[keep - 1]];
            int32_t last = ord[keep - 1];
            for (int64_t i = last + 1; i < V; i++)
                if (p[i] == kth) ord[keep++] = (int32_t)i;
        } else if (ranked) { /* top-p alone ranks everything */
            sort_key = p;
            qsort(ord, (size_t)V, sizeof *ord, by_value_desc);
        }
        /* probabilities of the kept ids, in ranking order, into p (unnormalised: the
         * largest is exp(0) = 1) */
        double total = 0;
        for (int64_t r = 0; r < keep; r++) total += (p[ord[r]] = exp(p[ord[r]]));
        if (s->top_p < 1) {
            double cum = 0;
            int64_t r = 0;
            while (r < keep && cum < s->top_p * total) cum += p[ord[r++]];
            keep = r > 0 ? r : 1;
            total = cum > 0 ? cum : p[ord[0]];
        }
        double u = kiln_rng_uniform(&s->rng) * total, acc = 0;
        pick = ord[keep - 1];
        for (int64_t r = 0; r < keep; r++) {
            acc += p[ord[r]];
            if (u < acc) {
                pick = ord[r];
                break;
            }
        }
    }
    *logprob = (double)logits[pick] - logz;
    return pick;
}
