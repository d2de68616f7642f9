/* evaluate.c — the loss (and classify's accuracy) of a model over a batcher: `kiln eval`
 * and the validation of `kiln train`.
 *
 * The evaluation graph (trainstep.c) is compiled once into NAME_forward with outputs
 * "loss" and, for classify, "logits"; the call's argument list is prepared once for
 * libffi and reused for every batch. Batch losses are means over their counted
 * targets, so the pass's loss is their mean weighted by those counts (feed_weight):
 * the last, partly filled batch of a pass counts for what it holds.
 *
 * The partial last batch. The batcher fills the rows after the pass's last example with
 * filler (<pad>, mask 0, targets and labels ignore_index). cross_entropy on the task's
 * targets ignores those rows, but no other loss can: infonce would take the filler rows
 * as extra negatives of the real ones and add their own terms to its mean, and mse and
 * bce_logits average over every row (a filler label is −100 cast to f32). A batch of
 * R < B real rows therefore runs through a second NAME_forward, compiled from the same
 * model text with the batch dim bound to R, over the first R rows of the same buffers
 * (rows are contiguous: each buffer is row-major with the batch first) and the same
 * parameter blob (parameter shapes do not follow the batch; checked). Its loss is the
 * model's loss over exactly the R examples — what PyTorch gives for the pass split into
 * batches of B and a last one of R (a DataLoader with drop_last=False) — whatever the
 * losses are and whatever the layers compute across rows, so the pass's loss is exact
 * for every loss; replicating real rows into the filler could not be (infonce couples
 * rows). It costs one more compile, of the forward graph only, done before the pass
 * (evaluator_prepare, so that `kiln train` compiles it before allocating its blobs) or
 * else when the batch comes; it is kept for later passes of the same length.
 *
 * When the batch dim cannot be rebound (the inputs' first dims are numbers or disagree)
 * or the model does not build for R rows, the full entry is used with the filler, but
 * only if the loss is provably blind to it: a sum (scaled or not) of cross_entropy terms
 * whose targets are task inputs the filler sets to ignore_index, with that ignore_index.
 * Otherwise the evaluation stops with an error rather than print a wrong loss.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"
#include "memlimit.h"

/* Loads the model at `batch` rows (0: the model's own binding) as the evaluation graph. */
static bool load_forward(const evaluator *e, int64_t batch, kiln_model *m, bool *loaded, kiln_diags *d)
{
    if (!train_load_model(m, e->text, e->len, e->path, e->defines, e->n_defines, e->batch_dim, batch, d)) return false;
    *loaded = true;
    return eval_graph_build(m, d);
}

static bool compile_forward(const kiln_model *m, kiln_compiled *c, kiln_diags *d)
{
    kiln_compile_request req = {.g = &m->graph, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = m->name};
    return kiln_compile_graph(&req, c, d);
}

/* A workspace of at least `bytes` (both entries share one). */
static bool ensure_workspace(evaluator *e, int64_t bytes, kiln_diags *d)
{
    if (bytes <= e->workspace_bytes) return true;
    if (!limits_check_blobs(&e->model.graph, e->c.params_bytes, 0, bytes, 0, "eval", d)) return false;
    kiln_aligned_free(e->workspace);
    e->workspace = kiln_aligned_alloc((size_t)bytes);
    KILN_ASSERT(e->workspace != NULL);
    e->workspace_bytes = bytes;
    return true;
}

bool evaluator_init(evaluator *e, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                    int n_defines, const char *batch_dim, int64_t batch, kiln_task task, kiln_diags *d)
{
    memset(e, 0, sizeof *e);
    /* kept to compile the partial last batch's entry later */
    e->text = malloc(len + 1);
    e->path = strdup(path ? path : "");
    e->batch_dim = batch_dim ? strdup(batch_dim) : NULL;
    e->defines = calloc((size_t)n_defines + 1, sizeof *e->defines);
    KILN_ASSERT(e->text && e->path && (e->batch_dim || !batch_dim) && e->defines);
    memcpy(e->text, text, len);
    e->text[len] = 0;
    e->len = len;
    for (int i = 0; i < n_defines; i++) {
        e->defines[i] = (kiln_dim_binding){strdup(defines[i].name), defines[i].value};
        KILN_ASSERT(e->defines[i].name != NULL);
    }
    e->n_defines = n_defines;

    bool ok = load_forward(e, batch, &e->model, &e->loaded, d) && feed_init(&e->feed, &e->model, task, d) &&
              compile_forward(&e->model, &e->c, d);
    if (!ok) {
        evaluator_free(e);
        return false;
    }
    const kiln_model *m = &e->model;
    e->ignore_index = train_ignore_index(m);
    int64_t logits_bytes = m->graph.n_outputs > 1
                               ? kiln_type_numel(&m->graph.nodes[m->graph.outputs[1].node].type) * KILN_ELEM_BYTES : 0;
    if (!limits_check_blobs(&m->graph, e->c.params_bytes, 0, e->c.workspace_bytes, logits_bytes, "eval", d)) {
        evaluator_free(e);
        return false;
    }
    e->workspace = kiln_aligned_alloc((size_t)e->c.workspace_bytes);
    KILN_ASSERT(e->workspace != NULL);
    e->workspace_bytes = e->c.workspace_bytes;
    const kiln_graph *g = &m->graph;
    if (g->n_outputs > 1) {
        e->logits = kiln_aligned_alloc((size_t)kiln_type_numel(&g->nodes[g->outputs[1].node].type) * sizeof(float));
        KILN_ASSERT(e->logits != NULL);
    }
    pointer_call_init(&e->call, e->c.n_args);
    return true;
}

static void tail_free(evaluator *e)
{
    if (e->tail_rows) pointer_call_free(&e->tail_call);
    kiln_compiled_free(&e->tail);
    if (e->tail_loaded) kiln_model_free(&e->tail_model);
    e->tail_loaded = false;
    e->tail_rows = 0;
    memset(&e->tail, 0, sizeof e->tail);
}

void evaluator_free(evaluator *e)
{
    tail_free(e);
    kiln_aligned_free(e->workspace);
    kiln_aligned_free(e->logits);
    pointer_call_free(&e->call);
    feed_free(&e->feed);
    kiln_compiled_free(&e->c);
    if (e->loaded) kiln_model_free(&e->model);
    for (int i = 0; i < e->n_defines; i++) free((char *)e->defines[i].name);
    free(e->defines);
    free(e->text);
    free(e->path);
    free(e->batch_dim);
    memset(e, 0, sizeof *e);
}

/* Whether the value `id` of the loss cannot see filler rows: a sum of scaled
 * cross_entropy terms whose targets are task inputs that filler sets to ignore_index
 * (targets, tgt_out, labels, start, end), with that ignore_index. */
static bool blind_to_filler(const kiln_graph *g, uint32_t id, int32_t ignore_index)
{
    const kiln_node *n = &g->nodes[id];
    if (n->op == KILN_OP_ADD)
        return blind_to_filler(g, n->in[0], ignore_index) && blind_to_filler(g, n->in[1], ignore_index);
    if (n->op == KILN_OP_SCALE) return blind_to_filler(g, n->in[0], ignore_index);
    if (n->op != KILN_OP_CROSS_ENTROPY || n->attrs.ignore_index != ignore_index) return false;
    uint32_t t = n->in[1];
    while (g->nodes[t].op == KILN_OP_RESHAPE) t = g->nodes[t].in[0];
    if (g->nodes[t].op != KILN_OP_INPUT) return false;
    static const char *const filled[] = {"targets", "tgt_out", "labels", "start", "end"};
    for (size_t i = 0; i < sizeof filled / sizeof *filled; i++)
        if (strcmp(g->nodes[t].attrs.name, filled[i]) == 0) return true;
    return false;
}

/* Makes a batch of `rows` < B real rows evaluable exactly: the tail entry compiled for
 * them, else (see the top) the full entry when the loss is blind to filler. */
static bool tail_ready(evaluator *e, int64_t rows, kiln_diags *d)
{
    if (e->tail_rows == rows || e->tail_padded) return true;
    tail_free(e);
    kiln_diags local;
    kiln_diags_init(&local);
    bool ok = e->batch_dim != NULL;
    if (!ok)
        kiln_diags_add(&local, e->path, 0, 0, NULL, "the batch dim cannot be rebound: the inputs do not all start "
                       "with the same named dim");
    ok = ok && load_forward(e, rows, &e->tail_model, &e->tail_loaded, &local);
    const kiln_model *m = &e->model, *t = &e->tail_model;
    /* the same inputs with R rows, the same parameter blob */
    ok = ok && t->n_inputs == m->n_inputs && t->n_params == m->n_params && t->graph.n_outputs == m->graph.n_outputs;
    for (int i = 0; ok && i < m->n_inputs; i++) {
        const kiln_type *a = &m->graph.nodes[m->inputs[i]].type, *b = &t->graph.nodes[t->inputs[i]].type;
        ok = a->rank == b->rank && a->rank >= 1 && b->dims[0] == rows &&
             memcmp(a->dims + 1, b->dims + 1, (size_t)(a->rank - 1) * sizeof *a->dims) == 0;
    }
    if (!ok && !local.n)
        kiln_diags_add(&local, e->path, 0, 0, "inputs", "bound to a batch of %lld, the model's inputs or outputs "
                       "change otherwise than in their first dim", (long long)rows);
    ok = ok && compile_forward(t, &e->tail, &local);
    for (int i = 0; ok && i < m->n_params; i++) ok = e->tail.param_offsets[i] == e->c.param_offsets[i];
    if (ok && e->tail.params_bytes != e->c.params_bytes) ok = false;
    if (!ok && !local.n)
        kiln_diags_add(&local, e->path, 0, 0, "params", "a parameter's shape follows the batch dim");
    if (ok) {
        kiln_diags_free(&local);
        if (!ensure_workspace(e, e->tail.workspace_bytes, d)) {
            tail_free(e);
            return false;
        }
        KILN_ASSERT(e->tail.n_args == e->c.n_args);
        pointer_call_init(&e->tail_call, e->tail.n_args);
        e->tail_rows = rows;
        return true;
    }
    tail_free(e);
    if (blind_to_filler(&m->graph, m->graph.loss, e->ignore_index)) {
        kiln_diags_free(&local);
        e->tail_padded = true;
        return true;
    }
    KILN_ASSERT(local.n > 0);
    const kiln_diag *why = &local.items[0];
    kiln_diags_add(d, e->path, 0, 0, NULL,
                   "the last batch holds %lld of %lld rows, and its loss cannot be computed over those rows alone: "
                   "the model does not build for a batch of %lld (%s%s%s), and its loss is not only cross_entropy "
                   "on the task's targets, which would ignore the filler rows; give the data a multiple of %lld "
                   "examples or name the batch dim",
                   (long long)rows, (long long)e->feed.batch, (long long)rows, why->where ? why->where : "",
                   why->where ? ": " : "", why->message, (long long)e->feed.batch);
    kiln_diags_free(&local);
    return false;
}

bool evaluator_prepare(evaluator *e, const kiln_batcher *bt, int64_t max_batches, kiln_diags *d)
{
    int64_t n = (int64_t)kiln_batcher_epoch_size(bt), B = e->feed.batch;
    if (n % B == 0 || (max_batches > 0 && n / B >= max_batches)) return true; /* every batch full */
    return tail_ready(e, n % B, d);
}

/* Rows of the batch whose argmax over the logits equals their label. */
static int64_t correct_rows(const evaluator *e, int64_t rows)
{
    const int32_t *labels = feed_task_buf(&e->feed, "labels");
    const kiln_type *t = &e->model.graph.nodes[e->model.graph.outputs[1].node].type;
    int64_t classes = t->dims[1], hits = 0;
    for (int64_t r = 0; r < rows && labels; r++) {
        const float *row = e->logits + r * classes;
        int64_t best = 0;
        for (int64_t c = 1; c < classes; c++)
            if (row[c] > row[best]) best = c;
        hits += best == labels[r];
    }
    return hits;
}

bool evaluator_run(evaluator *e, void *params_blob, kiln_batcher *bt, int64_t max_batches, eval_result *r,
                   kiln_diags *d)
{
    memset(r, 0, sizeof *r);
    const kiln_model *m = &e->model;
    float loss = 0;
    uint32_t k = 0;
    e->call.args[k++] = params_blob;
    e->call.args[k++] = e->workspace;
    for (int i = 0; i < m->n_inputs; i++) e->call.args[k++] = e->feed.model_bufs[i];
    e->call.args[k++] = &loss;
    if (e->logits) e->call.args[k++] = e->logits;
    KILN_ASSERT(k == e->c.n_args);

    double sum = 0, weight = 0;
    int64_t hits = 0;
    while (max_batches == 0 || r->batches < max_batches) {
        int64_t rows = feed_next(&e->feed, bt);
        if (rows == 0) break;
        pointer_call *call = &e->call;
        void *entry = e->c.entry;
        if (rows < e->feed.batch) { /* the partial last batch (see the top) */
            if (!tail_ready(e, rows, d)) return false;
            if (e->tail_rows == rows) { /* the same arguments: its inputs are the buffers' first rows */
                e->call.args[1] = e->workspace; /* tail_ready may have grown it */
                memcpy(e->tail_call.args, e->call.args, (size_t)k * sizeof *e->call.args);
                call = &e->tail_call;
                entry = e->tail.entry;
            }
        }
        int rc = pointer_call_run(call, entry);
        if (rc != KILN_RC_OK) {
            kiln_diags_add(d, bt->ds->path, 0, 0, NULL,
                           "evaluation batch %lld: %s", (long long)r->batches + 1,
                           rc == KILN_RC_INDEX_RANGE ? "a token id is out of range of the model's embedding"
                                                          : "a target is out of range of the model's classes");
            return false;
        }
        int64_t w = feed_weight(&e->feed, rows, e->ignore_index);
        if (w > 0 && isfinite(loss)) {
            sum += (double)loss * (double)w;
            weight += (double)w;
        } else if (w > 0) {
            sum = NAN;
        }
        if (e->logits) hits += correct_rows(e, rows);
        r->batches++;
        r->examples += rows;
    }
    r->loss = weight > 0 ? sum / weight : NAN;
    r->has_accuracy = e->logits != NULL;
    r->accuracy = r->examples ? (double)hits / (double)r->examples : NAN;
    return true;
}
