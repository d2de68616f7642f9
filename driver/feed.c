/* feed.c — a task's batches into a model's input buffers (see train.h).
 *
 * The batcher fills int32 buffers in kiln_task_inputs order; the compiled entry wants
 * one buffer per model input in the model file's order. Matching is by name. Widths
 * (the columns of rank-2 inputs) come from the model's shapes; a task input the model
 * does not have still needs a buffer, as wide as the token input before it (a mask is
 * as wide as its tokens), and is then ignored. An f32 model input (a mask declared f32)
 * gets the same values converted after each batch. Every buffer is 64-byte aligned,
 * as compiled code expects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

bool feed_init(feed *f, const kiln_model *m, kiln_task task, kiln_diags *d)
{
    memset(f, 0, sizeof *f);
    f->task = task;
    const int *ranks;
    f->n = kiln_task_inputs(task, &f->names, &ranks);
    f->n_model = m->n_inputs;
    f->model_bufs = calloc((size_t)m->n_inputs + 1, sizeof *f->model_bufs);
    f->converted = calloc((size_t)m->n_inputs + 1, sizeof *f->converted);
    KILN_ASSERT(f->model_bufs && f->converted);
    const kiln_graph *g = &m->graph;
    bool ok = true;

    f->batch = -1;
    for (int i = 0; i < f->n; i++) {
        f->model_index[i] = -1;
        for (int k = 0; k < m->n_inputs; k++)
            if (strcmp(g->nodes[m->inputs[k]].attrs.name, f->names[i]) == 0) f->model_index[i] = k;
        if (f->model_index[i] < 0) continue;
        const kiln_type *t = &g->nodes[m->inputs[f->model_index[i]]].type;
        if (t->rank != ranks[i]) {
            kiln_diags_add(d, m->file, 0, 0, f->names[i], "task %s fills this input with shape %s, but it has rank %d",
                           kiln_task_name(task), ranks[i] == 2 ? "(batch, length)" : "(batch)", t->rank);
            ok = false;
            continue;
        }
        if (f->batch < 0) f->batch = t->dims[0];
        else if (t->dims[0] != f->batch) {
            kiln_diags_add(d, m->file, 0, 0, f->names[i], "its batch dim is %lld but another input's is %lld",
                           (long long)t->dims[0], (long long)f->batch);
            ok = false;
        }
        f->cols[i] = ranks[i] == 2 ? t->dims[1] : 1;
    }
    for (int k = 0; k < m->n_inputs; k++) {
        bool filled = false;
        for (int i = 0; i < f->n; i++) filled |= f->model_index[i] == k;
        if (!filled) {
            char list[256] = "";
            for (int i = 0; i < f->n; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, f->names[i], sizeof list - strlen(list) - 1);
            }
            kiln_diags_add(d, m->file, 0, 0, g->nodes[m->inputs[k]].attrs.name,
                           "task %s does not fill this input (it fills %s); choose another --task",
                           kiln_task_name(task), list);
            ok = false;
        }
    }
    if (f->batch < 0) {
        kiln_diags_add(d, m->file, 0, 0, "inputs", "the model has none of the inputs task %s fills",
                       kiln_task_name(task));
        ok = false;
    }
    if (!ok) {
        feed_free(f);
        return false;
    }
    /* widths of the inputs the model lacks: a mask follows its tokens */
    for (int i = 0; i < f->n; i++)
        if (f->model_index[i] < 0) f->cols[i] = ranks[i] == 2 ? (i > 0 ? f->cols[i - 1] : 1) : 1;

    for (int i = 0; i < f->n; i++) {
        size_t count = (size_t)(f->batch * f->cols[i]);
        f->bufs[i] = kiln_aligned_alloc(count * sizeof(int32_t));
        KILN_ASSERT(f->bufs[i] != NULL);
        int k = f->model_index[i];
        if (k < 0) continue;
        if (g->nodes[m->inputs[k]].type.dtype == KILN_F32) {
            f->model_bufs[k] = kiln_aligned_alloc(count * sizeof(float));
            KILN_ASSERT(f->model_bufs[k] != NULL);
            f->converted[k] = true;
        } else {
            f->model_bufs[k] = f->bufs[i];
        }
    }
    f->tokens_per_batch = f->batch * f->cols[0];
    return true;
}

void feed_free(feed *f)
{
    for (int i = 0; i < f->n; i++) kiln_aligned_free(f->bufs[i]);
    for (int k = 0; k < f->n_model && f->model_bufs; k++)
        if (f->converted[k]) kiln_aligned_free(f->model_bufs[k]);
    free(f->model_bufs);
    free(f->converted);
    memset(f, 0, sizeof *f);
}

int64_t feed_next(feed *f, kiln_batcher *bt)
{
    int64_t rows = kiln_batcher_next(bt, f->bufs);
    /* Filler rows (the end of an evaluation pass) hold <pad>, which a model without the
     * specials (a byte-level GPT with 256 rows) cannot embed. Their targets and labels
     * are ignore_index, so any id does: use 0. */
    for (int i = 0; i < f->n && rows < f->batch; i++)
        if (train_is_token_input(f->names[i]))
            memset(f->bufs[i] + rows * f->cols[i], 0, (size_t)((f->batch - rows) * f->cols[i]) * sizeof(int32_t));
    for (int i = 0; i < f->n; i++) {
        int k = f->model_index[i];
        if (k < 0 || !f->converted[k]) continue;
        float *dst = f->model_bufs[k];
        for (int64_t j = 0; j < f->batch * f->cols[i]; j++) dst[j] = (float)f->bufs[i][j];
    }
    return rows;
}

const int32_t *feed_task_buf(const feed *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) return f->bufs[i];
    return NULL;
}

int64_t feed_weight(const feed *f, int64_t rows, int32_t ignore_index)
{
    static const char *const targets[] = {"targets", "tgt_out", "labels"};
    for (size_t t = 0; t < sizeof targets / sizeof *targets; t++)
        for (int i = 0; i < f->n; i++) {
            if (strcmp(f->names[i], targets[t]) != 0) continue;
            int64_t count = 0;
            for (int64_t j = 0; j < f->batch * f->cols[i]; j++) count += f->bufs[i][j] != ignore_index;
            return count;
        }
    return rows;
}

void feed_warn_skipped(const char *command, const kiln_batcher *bt, const kiln_dataset *ds)
{
    if (bt->n_skipped == 0) return;
    /* the examples are skipped rather than cut (docs/data.md), but a loss over a subset
     * that leaves out the long contexts must not pass unremarked */
    fprintf(stderr,
            "kiln %s: warning: %s: %zu of %zu examples are left out: their answers end past the %lld positions "
            "the question, <sep> and the context get (a larger T keeps them)\n",
            command, ds->path ? ds->path : "the data", bt->n_skipped, ds->n_examples, (long long)bt->cols[0]);
}
