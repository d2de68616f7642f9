/* evaluate.c — the loss (and classify's accuracy) of a model over a batcher: `kiln eval`
 * and the validation of `kiln train`.
 *
 * The evaluation graph (trainstep.c) is compiled once into NAME_forward with outputs
 * "loss" and, for classify, "logits"; the call's argument list is prepared once for
 * libffi and reused for every batch. Batch losses are means over their counted
 * targets, so the pass's loss is their mean weighted by those counts (feed_weight):
 * the last, partly filled batch of a pass counts for what it holds.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"
#include "memlimit.h"

bool evaluator_init(evaluator *e, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                    int n_defines, const char *batch_dim, int64_t batch, kiln_task task, kiln_diags *d)
{
    memset(e, 0, sizeof *e);
    if (!train_load_model(&e->model, text, len, path, defines, n_defines, batch_dim, batch, d)) return false;
    e->loaded = true;
    bool ok = eval_graph_build(&e->model, d) && feed_init(&e->feed, &e->model, task, d);
    const kiln_model *m = &e->model;
    kiln_compile_request req = {.g = &m->graph, .inputs = m->inputs, .n_inputs = (uint32_t)m->n_inputs,
                                .params = m->params, .n_params = (uint32_t)m->n_params, .name = m->name};
    ok = ok && kiln_compile_graph(&req, &e->c, d);
    if (!ok) {
        evaluator_free(e);
        return false;
    }
    e->ignore_index = train_ignore_index(m);
    int64_t logits_bytes = m->graph.n_outputs > 1
                               ? kiln_type_numel(&m->graph.nodes[m->graph.outputs[1].node].type) * KILN_ELEM_BYTES : 0;
    if (!limits_check_blobs(&m->graph, e->c.params_bytes, 0, e->c.workspace_bytes, logits_bytes, "eval", d)) {
        evaluator_free(e);
        return false;
    }
    e->workspace = kiln_aligned_alloc((size_t)e->c.workspace_bytes);
    KILN_ASSERT(e->workspace != NULL);
    const kiln_graph *g = &m->graph;
    if (g->n_outputs > 1) {
        e->logits = kiln_aligned_alloc((size_t)kiln_type_numel(&g->nodes[g->outputs[1].node].type) * sizeof(float));
        KILN_ASSERT(e->logits != NULL);
    }
    pointer_call_init(&e->call, e->c.n_args);
    return true;
}

void evaluator_free(evaluator *e)
{
    kiln_aligned_free(e->workspace);
    kiln_aligned_free(e->logits);
    pointer_call_free(&e->call);
    feed_free(&e->feed);
    kiln_compiled_free(&e->c);
    if (e->loaded) kiln_model_free(&e->model);
    memset(e, 0, sizeof *e);
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
        int rc = pointer_call_run(&e->call, e->c.entry);
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
