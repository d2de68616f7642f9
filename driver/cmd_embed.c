/* cmd_embed.c — `kiln embed MODEL.json --weights W --input FILE --out E.safetensors`: one
 * pooled embedding per line of a text file, e.g. from a model trained with `--task pairs`
 * (an infonce loss on two pooled towers) or `classify`.
 *
 * Each line (without its newline; a trailing '\r' dropped; an empty line is an item too,
 * so row i is line i + 1) is tokenised as in training (the checkpoint's tokenizer, else a
 * byte tokenizer) and laid out as the classify and pairs tasks lay out a side: <cls>
 * first, then the line's tokens, cut at the input's length, <pad> after, and a mask of 1s
 * over <cls> and the tokens. Every token input the model has (tokens, tokens_a,
 * tokens_b, src) gets the line, every mask input (mask, mask_a, mask_b, src_mask) its
 * mask, so either tower of a two-tower model can be read; inputs the embedding does not
 * depend on (a classifier's labels) get zeros. The embedding is --output's value (a model
 * output or any layer, e.g. a pool layer, of shape (batch, D)), else the value of the
 * model's pool layer when it has one, else its first (batch, D) output; it is compiled as
 * the graph's only output.
 * Batches are as wide as the batch dim (--batch, else train.batch, else the dim's
 * default); the last one is padded with empty lines that are not written.
 *
 * The output file holds "embeddings" (lines, D), float32, L2-normalised per row with
 * --normalize (as infonce normalises: x / max(‖x‖, 1e-12)); metadata names the output.
 * It is written atomically, after every line has been embedded.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* sysconf */

#include "cli.h"
#include "train.h"
#include "memlimit.h"

/* What an input of the model receives: the line's tokens or its mask, laid out as
 * training lays out that input — after <cls> for the classify and pairs inputs, bare for
 * seq2seq's src (docs/data.md). */
typedef enum { FILL_NONE, FILL_TOKENS, FILL_MASK } fill_kind;

static fill_kind fill_of(const char *name, bool *cls)
{
    static const char *const tokens[] = {"tokens", "tokens_a", "tokens_b", "src"};
    static const char *const masks[] = {"mask", "mask_a", "mask_b", "src_mask"};
    *cls = strcmp(name, "src") != 0 && strcmp(name, "src_mask") != 0;
    for (size_t i = 0; i < sizeof tokens / sizeof *tokens; i++)
        if (strcmp(name, tokens[i]) == 0) return FILL_TOKENS;
    for (size_t i = 0; i < sizeof masks / sizeof *masks; i++)
        if (strcmp(name, masks[i]) == 0) return FILL_MASK;
    return FILL_NONE;
}

typedef struct embedder {
    kiln_model model;
    bool loaded;
    kiln_compiled c;
    bool compiled;
    void *params, *workspace;
    void **bufs;       /* per model input, 64-byte aligned */
    fill_kind *fills;  /* per model input: what fill_row writes (FILL_NONE: zeros, unread) */
    bool *with_cls;    /* per model input: the line follows <cls> (not for src) */
    float *out;        /* the embedding, the graph's one output */
    pointer_call call;
    int64_t batch;     /* rows per call */
    int64_t dim;       /* the embedding's width */
} embedder;

static void embedder_free(embedder *e)
{
    for (int i = 0; e->bufs && i < e->model.n_inputs; i++) kiln_aligned_free(e->bufs[i]);
    free(e->bufs);
    free(e->fills);
    free(e->with_cls);
    kiln_aligned_free(e->out);
    kiln_aligned_free(e->params);
    kiln_aligned_free(e->workspace);
    pointer_call_free(&e->call);
    if (e->compiled) kiln_compiled_free(&e->c);
    if (e->loaded) kiln_model_free(&e->model);
    memset(e, 0, sizeof *e);
}

/* The node a name denotes: a model output's, else the value of the layer (or input)
 * of that name (its label), the last node carrying it. KILN_NONE when there is none. */
static uint32_t named_value(const kiln_graph *g, const char *name)
{
    for (uint32_t o = 0; o < g->n_outputs; o++)
        if (strcmp(g->outputs[o].name, name) == 0) return g->outputs[o].node;
    for (uint32_t id = g->n_nodes; id-- > 0;)
        if (g->nodes[id].label && strcmp(g->nodes[id].label, name) == 0) return id;
    return KILN_NONE;
}

/* The names of the model file's `pool` layers, in order (at most cap). */
static int pool_layers(const char *text, size_t len, const char **names, int cap, cJSON **tree)
{
    jm_error err;
    *tree = kiln_json_tree(text, len, &err);
    const cJSON *layers = *tree ? cJSON_GetObjectItemCaseSensitive(*tree, "layers") : NULL;
    int n = 0;
    for (const cJSON *l = cJSON_IsArray(layers) ? layers->child : NULL; l && n < cap; l = l->next) {
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(l, "op"), *name = cJSON_GetObjectItemCaseSensitive(l, "name");
        if (cJSON_IsString(op) && strcmp(op->valuestring, "pool") == 0 && cJSON_IsString(name))
            names[n++] = name->valuestring;
    }
    return n;
}

static bool is_pooled(const kiln_type *t) { return t->rank == 2 && t->dtype == KILN_F32; }

/* Picks the embedding — --output's value, else the one pool layer's value, else the first
 * (batch, D) output — makes it the graph's only output, and checks that every input it
 * depends on is one embed fills, with one batch dim. Inputs it does not depend on (a
 * classifier's labels) get zeros. */
static bool embedder_check(embedder *e, const char *text, size_t len, const char *output, kiln_diags *d)
{
    kiln_model *m = &e->model;
    kiln_graph *g = &m->graph;
    uint32_t node = KILN_NONE;
    const char *name = output;
    if (output) {
        node = named_value(g, output);
        if (node == KILN_NONE) {
            kiln_diags_add(d, m->file, 0, 0, "--output", "the model has no output or layer named '%s'", output);
            return false;
        }
        if (!is_pooled(&g->nodes[node].type)) {
            kiln_diags_add(d, m->file, 0, 0, output, "is not a (batch, D) float value: one embedding per line needs "
                           "a pooled value (a pool layer's, or a projection of it)");
            return false;
        }
    } else {
        const char *pools[8];
        cJSON *tree;
        int n_pools = pool_layers(text, len, pools, 8, &tree);
        uint32_t pooled = n_pools == 1 ? named_value(g, pools[0]) : KILN_NONE;
        if (pooled != KILN_NONE && is_pooled(&g->nodes[pooled].type)) {
            node = pooled;
            name = kiln_arena_strdup(&g->arena, pools[0]);
        }
        cJSON_Delete(tree);
        for (uint32_t o = 0; o < g->n_outputs && node == KILN_NONE; o++)
            if (is_pooled(&g->nodes[g->outputs[o].node].type)) node = g->outputs[o].node, name = g->outputs[o].name;
        if (node == KILN_NONE) {
            kiln_diags_add(d, m->file, 0, 0, "outputs", "no pool layer and no (batch, D) output: embed reads a pooled "
                           "value (name one with --output)");
            return false;
        }
    }
    const kiln_type *t = &g->nodes[node].type;
    e->batch = t->dims[0];
    e->dim = t->dims[1];
    g->n_outputs = 0; /* the embedding alone: nothing else is computed */
    kiln_graph_add_output(g, name, node);

    unsigned char *needed = malloc(g->n_nodes);
    e->fills = calloc((size_t)m->n_inputs + 1, sizeof *e->fills); /* FILL_NONE */
    e->with_cls = calloc((size_t)m->n_inputs + 1, sizeof *e->with_cls);
    KILN_ASSERT(needed && e->fills && e->with_cls);
    kiln_graph_live(g, 0, needed);
    bool ok = true, any_tokens = false;
    for (int i = 0; i < m->n_inputs; i++) {
        const kiln_node *n = &g->nodes[m->inputs[i]];
        fill_kind k = fill_of(n->attrs.name, &e->with_cls[i]);
        if (!needed[m->inputs[i]]) continue;
        if (k == FILL_NONE || n->type.rank != 2 || (k == FILL_TOKENS && n->type.dtype != KILN_I32)) {
            kiln_diags_add(d, m->file, 0, 0, n->attrs.name,
                           "'%s' depends on this input, but embed fills only (batch, length) inputs named tokens, "
                           "tokens_a, tokens_b or src (i32) and mask, mask_a, mask_b or src_mask", name);
            ok = false;
            continue;
        }
        any_tokens |= k == FILL_TOKENS;
        e->fills[i] = k;
        if (n->type.dims[0] != e->batch) {
            kiln_diags_add(d, m->file, 0, 0, n->attrs.name, "its batch dim is %lld but '%s' has %lld rows",
                           (long long)n->type.dims[0], name, (long long)e->batch);
            ok = false;
        }
    }
    free(needed);
    if (ok && !any_tokens) {
        kiln_diags_add(d, m->file, 0, 0, name, "does not depend on a token input (tokens, tokens_a, tokens_b or src)");
        ok = false;
    }
    return ok;
}

static bool embedder_init(embedder *e, const char *text, size_t len, const char *path, const cli_args *a,
                          const char *batch_dim, int64_t batch, const char *output, const kiln_tensor_file *wf,
                          const char *weights, const kiln_tokenizer *tok, kiln_diags *d)
{
    memset(e, 0, sizeof *e);
    if (!train_load_model(&e->model, text, len, path, a->defines, a->n_defines, batch_dim, batch, d)) return false;
    e->loaded = true;
    if (!embedder_check(e, text, len, output, d) || !train_check_vocab(&e->model, KILN_TASK_PAIRS, tok, NULL, d)) return false;
    const kiln_model *m = &e->model;
    const kiln_graph *g = &m->graph;
    kiln_compile_request req = {.g = g, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = m->name};
    if (!kiln_compile_graph(&req, &e->c, d)) return false;
    e->compiled = true;
    int64_t io = e->batch * e->dim * KILN_ELEM_BYTES;
    for (int i = 0; i < m->n_inputs; i++) io += kiln_type_numel(&g->nodes[m->inputs[i]].type) * KILN_ELEM_BYTES;
    if (!limits_check_blobs(g, e->c.params_bytes, 0, e->c.workspace_bytes, io, "embed", d)) return false;
    e->params = kiln_aligned_alloc((size_t)e->c.params_bytes);
    e->workspace = kiln_aligned_alloc((size_t)e->c.workspace_bytes);
    e->bufs = calloc((size_t)m->n_inputs + 1, sizeof *e->bufs);
    e->out = kiln_aligned_alloc((size_t)(e->batch * e->dim + 1) * sizeof(float));
    KILN_ASSERT(e->params && e->workspace && e->bufs && e->out);
    for (int i = 0; i < m->n_inputs; i++) {
        size_t bytes = (size_t)kiln_type_numel(&g->nodes[m->inputs[i]].type) * KILN_ELEM_BYTES;
        e->bufs[i] = kiln_aligned_alloc(bytes ? bytes : 1);
        KILN_ASSERT(e->bufs[i] != NULL);
        memset(e->bufs[i], 0, bytes);
    }
    if (!ckpt_restore(g, m->params, (uint32_t)m->n_params, e->c.param_offsets, e->params, wf, weights, NULL, d))
        return false;
    pointer_call_init(&e->call, e->c.n_args);
    uint32_t k = 0;
    e->call.args[k++] = e->params;
    e->call.args[k++] = e->workspace;
    for (int i = 0; i < m->n_inputs; i++) e->call.args[k++] = e->bufs[i];
    e->call.args[k++] = e->out;
    KILN_ASSERT(k == e->c.n_args);
    return true;
}

/* Row r of every input from ids[0..n) (a line's tokens; <cls> first). */
static void fill_row(embedder *e, int64_t r, const int32_t *ids, size_t n, int32_t cls, int32_t pad)
{
    const kiln_model *m = &e->model;
    for (int i = 0; i < m->n_inputs; i++) {
        if (e->fills[i] == FILL_NONE) continue;
        const kiln_node *node = &m->graph.nodes[m->inputs[i]];
        int64_t T = node->type.dims[1], lead = e->with_cls[i] ? 1 : 0;
        int64_t used = T < 1 ? 0 : (int64_t)n + lead < T ? (int64_t)n + lead : T;
        bool tokens = e->fills[i] == FILL_TOKENS;
        for (int64_t t = 0; t < T; t++) {
            int32_t v = tokens ? (t < lead ? cls : t < used ? ids[t - lead] : pad) : t < used;
            if (node->type.dtype == KILN_F32) ((float *)e->bufs[i])[r * T + t] = (float)v;
            else ((int32_t *)e->bufs[i])[r * T + t] = v;
        }
    }
}

/* Runs the rows filled so far (the rest padded with empty lines) and appends `rows`
 * embeddings to out. */
static bool run_batch(embedder *e, int64_t rows, int32_t cls, int32_t pad, float *out, int64_t first_line,
                      const char *input, kiln_diags *d)
{
    for (int64_t r = rows; r < e->batch; r++) fill_row(e, r, NULL, 0, cls, pad);
    int rc = pointer_call_run(&e->call, e->c.entry);
    if (rc != KILN_RC_OK) {
        kiln_diags_add(d, input, first_line, 0, NULL, "lines %lld–%lld: %s", (long long)first_line,
                       (long long)(first_line + rows - 1),
                       rc == KILN_RC_INDEX_RANGE ? "a token id is out of range of the model's embedding"
                                                 : "the compiled model failed");
        return false;
    }
    memcpy(out, e->out, (size_t)(rows * e->dim) * sizeof(float));
    return true;
}

int cmd_embed(int argc, char **argv, kiln_diags *diags)
{
    const char *weights = NULL, *input = NULL, *out = NULL, *output = NULL;
    int64_t batch = 0;
    bool batch_given = false, normalize = false;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN); /* a bulk job, as train: the online CPUs by default */
    int64_t threads = cpus < 1 ? 1 : cpus < KILN_MAX_THREADS ? cpus : KILN_MAX_THREADS;
    cli_flag flags[] = {
        LIMITS_FLAG,
        {"--weights", CLI_STR, &weights, NULL, "the parameters or a kiln train checkpoint (required)"},
        {"--input", CLI_STR, &input, NULL, "a text file, one item per line (required)"},
        {"--out", CLI_STR, &out, NULL, "the safetensors file to write: \"embeddings\" (lines, D) (required)"},
        {"--output", CLI_STR, &output, NULL,
         "the model output or layer to read, of shape (batch, D) (default: the pool layer, else the first such output)"},
        {"--normalize", CLI_BOOL, &normalize, NULL, "L2-normalise each embedding, as infonce does (default: off)"},
        {"--batch", CLI_INT, &batch, &batch_given,
         "binds the batch dim: lines per call (default: train.batch, else the dim's default)"},
        THREADS_FLAG(threads,
                     "threads for every kernel with enough work; same bits for any N (default: online CPUs, at most 8)"),
    };
    cli_args a;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &a, diags)) return EXIT_USAGE;
    if (!limits_valid(diags)) return EXIT_USAGE;
    if (a.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "embed", "expects one MODEL.json");
    if (!weights) kiln_diags_add(diags, NULL, 0, 0, "embed", "--weights W.safetensors is required");
    if (!input) kiln_diags_add(diags, NULL, 0, 0, "embed", "--input FILE is required");
    if (!out) kiln_diags_add(diags, NULL, 0, 0, "embed", "--out E.safetensors is required");
    if (batch_given && batch < 1) kiln_diags_add(diags, NULL, 0, 0, "--batch", "expected at least 1");
    cli_threads_check(threads, diags);
    const cli_file files[] = {{"MODEL.json", a.positional[0], false, NULL},
                              {"--weights", weights, false, NULL},
                              {"--input", input, false, NULL},
                              {"--out", out, true, NULL}};
    cli_files_distinct(files, 4, diags);
    if (diags->n) return EXIT_USAGE;
    cli_threads_use(threads);
    const char *path = a.positional[0];

    int status = EXIT_FAIL;
    size_t len = 0;
    char *text = NULL, *batch_dim = NULL, *line = NULL;
    size_t line_cap = 0;
    float *emb = NULL;
    FILE *in = NULL;
    kiln_tensor_file wf = {0};
    kiln_tokenizer tok;
    bool have_tok = false;
    embedder e;
    memset(&e, 0, sizeof e);
    kiln_ids ids = {0};
    kiln_rt_error err = {{0}};

    if (!(text = train_read_model_text(path, &len, diags))) goto done;
    batch_dim = train_batch_dim(text, len);
    if (kiln_tensor_file_read(weights, &wf, &err) != 0) {
        bind_rt_error(diags, weights, &err);
        goto done;
    }
    kiln_tokenizer_config tc;
    if (!train_model_defaults(text, len, path, a.defines, a.n_defines, batch_dim, batch_given, &batch, &tc, NULL, diags))
        goto done;
    if (!ckpt_or_model_tokenizer(&wf, weights, tc.kind, "embed with", &tok, diags)) goto done;
    have_tok = true;
    if (!(in = kiln_data_open(input, diags))) goto done;
    if (!embedder_init(&e, text, len, path, &a, batch_dim, batch, output, &wf, weights, &tok, diags)) goto done;

    int32_t cls = kiln_tokenizer_special(&tok, KILN_SPECIAL_CLS), pad = kiln_tokenizer_special(&tok, KILN_SPECIAL_PAD);
    int64_t lines = 0, cap = 0, rows = 0;
    for (;;) {
        ssize_t got = getline(&line, &line_cap, in);
        if (got < 0) break;
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n') n--;
        if (n && line[n - 1] == '\r') n--;
        if (n >= INT32_MAX) {
            kiln_diags_add(diags, input, lines + 1, 0, NULL, "the line is over 2 GiB");
            goto done;
        }
        ids.n = 0;
        KILN_ASSERT(kiln_tokenizer_encode(&tok, line, n, &ids, NULL));
        fill_row(&e, rows++, ids.v, ids.n, cls, pad);
        if (++lines > cap) { /* room for this line's embedding */
            cap = 2 * cap + e.batch;
            emb = realloc(emb, (size_t)(cap * e.dim) * sizeof(float));
            KILN_ASSERT(emb != NULL);
        }
        if (rows == e.batch) {
            if (!run_batch(&e, rows, cls, pad, emb + (lines - rows) * e.dim, lines - rows + 1, input, diags)) goto done;
            rows = 0;
        }
    }
    if (ferror(in)) {
        kiln_diags_add(diags, input, 0, 0, NULL, "cannot read the input");
        goto done;
    }
    if (rows > 0 && !run_batch(&e, rows, cls, pad, emb + (lines - rows) * e.dim, lines - rows + 1, input, diags))
        goto done;
    if (!emb) { /* no lines: an empty (0, D) tensor */
        emb = malloc(sizeof(float));
        KILN_ASSERT(emb != NULL);
    }
    if (normalize)
        for (int64_t r = 0; r < lines; r++) {
            float *v = emb + r * e.dim;
            double s = 0;
            for (int64_t j = 0; j < e.dim; j++) s += (double)v[j] * v[j];
            double norm = sqrt(s) > 1e-12 ? sqrt(s) : 1e-12;
            for (int64_t j = 0; j < e.dim; j++) v[j] = (float)(v[j] / norm);
        }

    const char *name = e.model.graph.outputs[0].name;
    kiln_tensor t = {.name = "embeddings", .dtype = KILN_F32, .rank = 2, .shape = {lines, e.dim}, .data = emb};
    const char *keys[] = {"output", "normalized"}, *values[] = {name, normalize ? "true" : "false"};
    if (kiln_tensor_file_write(out, &t, 1, keys, values, 2, &err) != 0) {
        bind_rt_error(diags, out, &err);
        goto done;
    }
    printf("%s: %lld lines, %lld-dimensional embeddings from output '%s'%s\n", out, (long long)lines,
           (long long)e.dim, name, normalize ? ", L2-normalised" : "");
    status = EXIT_OK;
done:
    if (in) fclose(in);
    free(line);
    free(ids.v);
    free(emb);
    embedder_free(&e);
    if (have_tok) kiln_tokenizer_free(&tok);
    kiln_tensor_file_free(&wf);
    free(batch_dim);
    free(text);
    return status;
}
