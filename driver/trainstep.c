/* trainstep.c — a model file's training step and evaluation graphs.
 *
 * The training step is one graph (../shared/DESIGN.md): the model's forward graph and weighted
 * loss as the frontend builds them, then kiln_autodiff's backward nodes for every
 * parameter, then kiln_optim_build's update (the pipeline's training stages,
 * kiln_pipeline_train). Its only output is "loss"; the rest of
 * what it does is the graph's updates, which the compiled NAME_train_step writes into
 * the parameter and optimizer blobs. Dropout drops in it, seeded by the run's --seed
 * and the step counter (codegen/lower_dropout.c). `kiln train` compiles it; so can
 * `kiln check --train` and `kiln compile --train`.
 *
 * The model is loaded from text the driver read once, because the same text goes into
 * every checkpoint; the batch dim is found in that text (the name leading the inputs'
 * shapes) so that --batch can bind it like a -D.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "cli.h"
#include "train.h"

#define MAX_MODEL_BYTES ((size_t)64 << 20) /* the frontend's limit too */

char *train_read_model_text(const char *path, size_t *len, kiln_diags *d)
{
    if (kiln_model_path_is_ir(path)) { /* the text is kept in checkpoints, or read again as JSON */
        kiln_diags_add(d, path, 0, 0, NULL,
                       "IR text (.kir) is read by check, compile, init, run and bench; this needs the model file");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        kiln_diags_add(d, path, 0, 0, NULL, "cannot open the model file: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    KILN_ASSERT(buf != NULL);
    for (;;) {
        if (n == cap) {
            if (cap > MAX_MODEL_BYTES) break;
            cap *= 2;
            buf = realloc(buf, cap + 1);
            KILN_ASSERT(buf != NULL);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad || n > MAX_MODEL_BYTES) {
        kiln_diags_add(d, path, 0, 0, NULL, "%s",
                       bad ? "cannot read the model file" : "the model file is over the 64 MiB limit");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

char *train_batch_dim(const char *text, size_t len)
{
    jm_error err;
    cJSON *root = kiln_json_tree(text, len, &err); /* NULL when not JSON: no batch dim */
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    const char *name = NULL;
    bool agree = cJSON_IsObject(inputs);
    for (const cJSON *in = inputs ? inputs->child : NULL; in && agree; in = in->next) {
        const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(in, "shape"), 0);
        if (!cJSON_IsString(first)) agree = false;
        else if (!name) name = first->valuestring;
        else agree = strcmp(name, first->valuestring) == 0;
    }
    char *copy = agree && name ? strdup(name) : NULL;
    cJSON_Delete(root);
    return copy;
}

bool train_load_model(kiln_model *m, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                      int n_defines, const char *batch_dim, int64_t batch, kiln_diags *d)
{
    kiln_dim_binding *defs = calloc((size_t)n_defines + 1, sizeof *defs);
    KILN_ASSERT(defs != NULL);
    if (n_defines) memcpy(defs, defines, (size_t)n_defines * sizeof *defs);
    int n = n_defines;
    if (batch > 0 && batch_dim) defs[n++] = (kiln_dim_binding){batch_dim, batch};
    kiln_load_options opt = {defs, n, NULL, 0, NULL};
    bool ok = kiln_model_load_text(m, text, len, path, &opt, d);
    free(defs);
    return ok;
}

bool train_model_defaults(const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                          int n_defines, const char *batch_dim, bool batch_given, int64_t *batch,
                          kiln_tokenizer_config *tc, int64_t *max_id, kiln_diags *d)
{
    kiln_model m;
    if (!train_load_model(&m, text, len, path, defines, n_defines, NULL, 0, d)) return false;
    *tc = m.tokenizer;
    if (max_id) *max_id = train_data_max_id(&m);
    if (!batch_given) {
        bool defined = false;
        for (int i = 0; batch_dim && i < n_defines; i++) defined |= strcmp(defines[i].name, batch_dim) == 0;
        *batch = defined ? 0 : m.train.batch;
    }
    kiln_model_free(&m);
    return true;
}

/* Keeps only the loss as the graph's output (train.h). */
bool train_only_loss(kiln_model *m, kiln_diags *d)
{
    kiln_graph *g = &m->graph;
    if (g->loss == KILN_NONE) {
        kiln_diags_add(d, m->file, 0, 0, "losses", "the model has no losses: there is nothing to train or evaluate");
        return false;
    }
    g->n_outputs = 0;
    kiln_graph_add_output(g, "loss", g->loss);
    return true;
}

kiln_optim_config train_optim_config(const kiln_train_config *t, kiln_optim_group **groups_out)
{
    kiln_optim_group *groups = calloc(t->n_groups ? (size_t)t->n_groups : 1, sizeof *groups);
    KILN_ASSERT(groups != NULL);
    for (int i = 0; i < t->n_groups; i++)
        groups[i] = (kiln_optim_group){t->groups[i].match, t->groups[i].lr_scale, t->groups[i].weight_decay};
    *groups_out = groups;
    return (kiln_optim_config){
        .kind = t->optimizer == KILN_OPT_SGD ? KILN_OPTIM_SGD : KILN_OPTIM_ADAMW,
        .beta1 = t->beta1,
        .beta2 = t->beta2,
        .eps = t->eps,
        .momentum = t->momentum,
        .weight_decay = t->weight_decay,
        .grad_clip = t->grad_clip,
        .freeze = t->freeze,
        .n_freeze = t->n_freeze,
        .groups = groups,
        .n_groups = t->n_groups,
    };
}

static bool recompute_light(kiln_model *m, train_step *ts, kiln_diags *d);

bool train_step_build(kiln_model *m, train_step *ts, kiln_diags *d)
{
    memset(ts, 0, sizeof *ts);
    if (!train_only_loss(m, d)) return false;
    kiln_graph *g = &m->graph;
    /* the pipeline's training stages: autodiff, optimizer (passes/pipeline.c) */
    kiln_optim_group *groups = NULL;
    kiln_optim_config cfg = train_optim_config(&m->train, &groups);
    kiln_train_request tr = {.loss = g->loss, .params = m->params, .n_params = (uint32_t)m->n_params, .optim = &cfg,
                             .options = &cli_pipeline};
    kiln_train_result res;
    bool ok = kiln_pipeline_train(g, &tr, &res, d);
    free(groups);
    ts->n_forward = res.n_forward;
    ts->grads = res.grads; /* nonfinite.c checks them */
    res.grads = NULL;
    cli_print_dump(res.dump); /* --dump-after autodiff / optimizer */
    kiln_optim_result opt = res.optim;
    kiln_train_result_free(&res);
    if (!ok) {
        kiln_diags_set_file(d, m->file);
        return false;
    }
    ts->lr = opt.lr;
    ts->n_trained = opt.n_trained;
    ts->states = calloc(opt.n_states ? opt.n_states : 1, sizeof *ts->states);
    KILN_ASSERT(ts->states != NULL);
    ts->step_state = KILN_NONE;
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        if (g->nodes[id].op != KILN_OP_STATE) continue;
        ts->states[ts->n_states++] = id;
        if (strcmp(g->nodes[id].attrs.name, "optim.step") == 0) ts->step_state = id;
    }
    return recompute_light(m, ts, d);
}

/* The ids the step keeps, after a rebuild that moved them (map: old id → new id). */
static void remap(const kiln_model *m, train_step *ts, const uint32_t *map)
{
    ts->lr = map[ts->lr];
    for (uint32_t i = 0; i < ts->n_states; i++) ts->states[i] = map[ts->states[i]];
    if (ts->step_state != KILN_NONE) ts->step_state = map[ts->step_state];
    for (int i = 0; ts->grads && i < m->n_params; i++) ts->grads[i] = map[ts->grads[i]];
    ts->recompute_from = ts->n_forward; /* the forward nodes kept their ids */
}

/* Light recomputation (passes/checkpoint.c, kiln_recompute_light): the backward pass
 * computes the activation functions' and layernorms' results again from their stored
 * inputs, so those results die after the forward pass. Stage "recompute" of
 * --disable-pass. */
static bool recompute_light(kiln_model *m, train_step *ts, kiln_diags *d)
{
    if (kiln_pass_disabled(&cli_pipeline, "recompute")) return true;
    uint32_t *map = malloc((m->graph.n_nodes ? m->graph.n_nodes : 1) * sizeof *map);
    KILN_ASSERT(map != NULL);
    kiln_checkpoint_result res;
    bool ok = kiln_recompute_light(&m->graph, ts->n_forward, map, &res, d);
    if (ok && res.n_recomputed) remap(m, ts, map);
    free(map);
    if (ok && cli_pipeline.dump_after && strcmp(cli_pipeline.dump_after, "recompute") == 0) {
        char *text = kiln_graph_print(&m->graph);
        cli_print_dump(text);
        free(text);
    }
    return ok;
}

bool train_step_checkpoint(kiln_model *m, train_step *ts, kiln_checkpoint_result *res, kiln_diags *d)
{
    uint32_t *map = malloc((m->graph.n_nodes ? m->graph.n_nodes : 1) * sizeof *map);
    KILN_ASSERT(map != NULL);
    bool ok = kiln_checkpoint(&m->graph, ts->n_forward, map, res, d);
    if (ok) remap(m, ts, map);
    free(map);
    return ok;
}

void train_step_free(train_step *ts)
{
    free(ts->states);
    free(ts->grads);
    memset(ts, 0, sizeof *ts);
}

kiln_compile_request train_step_request(const kiln_model *m, const train_step *ts)
{
    return (kiln_compile_request){.g = &m->graph,
                                  .inputs = m->inputs,
                                  .n_inputs = (uint32_t)m->n_inputs,
                                  .params = m->params,
                                  .n_params = (uint32_t)m->n_params,
                                  .name = m->name,
                                  .train = true,
                                  .states = ts->states,
                                  .n_states = ts->n_states,
                                  .lr = ts->lr,
                                  .dropout = ts->step_state != KILN_NONE,
                                  .dropout_step = ts->step_state,
                                  .dropout_seed = ts->dropout_seed,
                                  .recompute_from = ts->recompute_from,
                                  .pipeline = &cli_pipeline};
}

int64_t train_step_flops(const kiln_graph *g)
{
    unsigned char *needed = calloc(g->n_nodes ? g->n_nodes : 1, 1);
    KILN_ASSERT(needed != NULL);
    for (uint32_t i = 0; i < g->n_outputs; i++) needed[g->outputs[i].node] = 1;
    for (uint32_t i = 0; i < g->n_updates; i++) needed[g->updates[i].value] = 1;
    int64_t flops = 0;
    for (uint32_t id = g->n_nodes; id-- > 0;) {
        if (!needed[id]) continue;
        flops += kiln_node_flops(g, id);
        for (uint32_t j = 0; j < g->nodes[id].n_in; j++) needed[g->nodes[id].in[j]] = 1;
    }
    free(needed);
    return flops;
}

/* The INPUT node behind a value read through views, or KILN_NONE. */
static uint32_t input_behind(const kiln_graph *g, uint32_t id)
{
    while (g->nodes[id].op == KILN_OP_RESHAPE || g->nodes[id].op == KILN_OP_CAST) id = g->nodes[id].in[0];
    return g->nodes[id].op == KILN_OP_INPUT ? id : KILN_NONE;
}

static bool input_named(const kiln_graph *g, uint32_t id, const char *name)
{
    uint32_t in = input_behind(g, id);
    return in != KILN_NONE && strcmp(g->nodes[in].attrs.name, name) == 0;
}

bool eval_graph_build(kiln_model *m, kiln_diags *d)
{
    kiln_graph *g = &m->graph;
    uint32_t logits = KILN_NONE;
    for (uint32_t id = 0; id < g->n_nodes && logits == KILN_NONE; id++)
        if (g->nodes[id].op == KILN_OP_CROSS_ENTROPY && input_named(g, g->nodes[id].in[1], "labels"))
            logits = g->nodes[id].in[0];
    if (!train_only_loss(m, d)) return false;
    if (logits != KILN_NONE && g->nodes[logits].type.rank == 2) kiln_graph_add_output(g, "logits", logits);
    return true;
}

int32_t train_ignore_index(const kiln_model *m)
{
    for (uint32_t id = 0; id < m->graph.n_nodes; id++)
        if (m->graph.nodes[id].op == KILN_OP_CROSS_ENTROPY) return (int32_t)m->graph.nodes[id].attrs.ignore_index;
    return -100;
}

bool train_is_token_input(const char *name)
{
    return strncmp(name, "tokens", 6) == 0 || strcmp(name, "src") == 0 || strcmp(name, "tgt_in") == 0;
}

static bool is_target_slot(const char *name) { return !strcmp(name, "targets") || !strcmp(name, "tgt_out"); }

/* The next gather or cross_entropy at or after *id whose ids (indices, targets) come
 * straight from a model input, that input in *in; false when there is none. */
static bool next_id_reader(const kiln_graph *g, uint32_t *id, uint32_t *in)
{
    for (; *id < g->n_nodes; (*id)++) {
        const kiln_node *n = &g->nodes[*id];
        if (n->op != KILN_OP_GATHER && n->op != KILN_OP_CROSS_ENTROPY) continue;
        *in = input_behind(g, n->in[1]);
        if (*in != KILN_NONE) return true;
    }
    return false;
}

int64_t train_data_max_id(const kiln_model *m)
{
    const kiln_graph *g = &m->graph;
    int64_t max_id = 0;
    uint32_t in;
    for (uint32_t id = 0; next_id_reader(g, &id, &in); id++) {
        const kiln_node *n = &g->nodes[id];
        const char *name = g->nodes[in].attrs.name;
        const kiln_type *table = &g->nodes[n->in[0]].type;
        int64_t ids = n->op == KILN_OP_GATHER ? (train_is_token_input(name) ? table->dims[n->attrs.axis] : 0)
                                              : (is_target_slot(name) ? table->dims[table->rank - 1] : 0);
        if (ids > 0 && (max_id == 0 || ids < max_id)) max_id = ids;
    }
    return max_id;
}

bool train_check_vocab(const kiln_model *m, kiln_task task, const kiln_tokenizer *tok, const kiln_labels *labels,
                       kiln_diags *d)
{
    const kiln_graph *g = &m->graph;
    /* clm feeds only ordinary ids; the other tasks add specials (<mask>, <cls>, …) */
    int64_t need_ids = task == KILN_TASK_CLM ? tok->base : kiln_tokenizer_vocab(tok);
    int64_t need_targets = tok->base; /* clm and mlm targets are ordinary tokens */
    if (task == KILN_TASK_SEQ2SEQ) need_targets = kiln_tokenizer_vocab(tok); /* <eos>, <pad> */
    bool ok = true;
    uint32_t in;
    for (uint32_t id = 0; next_id_reader(g, &id, &in); id++) {
        const kiln_node *n = &g->nodes[id];
        const char *name = g->nodes[in].attrs.name;
        const kiln_type *table = &g->nodes[n->in[0]].type;
        const char *where = n->label ? n->label : n->origin;
        if (n->op == KILN_OP_GATHER && train_is_token_input(name) && table->dims[n->attrs.axis] < need_ids) {
            kiln_diags_add(d, m->file, 0, 0, where,
                           "has %lld rows but the %s tokenizer with task %s feeds ids up to %lld through '%s' "
                           "(make the vocab at least %lld)",
                           (long long)table->dims[n->attrs.axis], tok->kind == KILN_TOK_CHAR ? "char"
                           : tok->kind == KILN_TOK_BPE ? "bpe" : "byte",
                           kiln_task_name(task), (long long)need_ids - 1, name, (long long)need_ids);
            ok = false;
        }
        if (n->op != KILN_OP_CROSS_ENTROPY) continue;
        int64_t classes = table->dims[table->rank - 1];
        int64_t need = is_target_slot(name) ? need_targets : !strcmp(name, "labels") && labels ? labels->n : 0;
        if (classes < need) {
            kiln_diags_add(d, m->file, 0, 0, where,
                           "the cross_entropy has %lld classes but '%s' holds values up to %lld", (long long)classes,
                           name, (long long)need - 1);
            ok = false;
        }
    }
    return ok;
}
