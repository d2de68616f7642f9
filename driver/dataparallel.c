/* dataparallel.c — `kiln train`'s data-parallel step: what the training loop calls
 * instead of the fused NAME_train_step when it runs as one of N > 1 ranks (mpirun).
 * docs/distributed.md is the user's view.
 *
 * The step is the split one (trainsplit.c):
 *     NAME_train_grad   this rank's loss and gradients (into the blob's gradient area);
 *                       it calls on_ready as each gradient is final, and a bucket's
 *                       MPI_Iallreduce starts once all of its gradients are
 *     dist_step_status  every rank learns the mean loss, any failure, any signal, any
 *                       non-finite gradient
 *     dist_average_end  the buckets finish: the gradient area averaged over the ranks
 *     NAME_train_apply  the update, identical on every rank (same parameters, same
 *                       averaged gradients, same optimizer state, same lr)
 * so the parameters stay bit-identical across ranks without ever being sent.
 *
 * Overlap. The backward pass finishes the last layers' gradients first, so the buckets
 * are cut from the gradient area's end (the area is in model order): consecutive
 * gradients until the bucket reaches DIST_BUCKET_BYTES, each bucket a contiguous range
 * (one MPI_Iallreduce). They start in the order their last gradient becomes final (the
 * ready positions the compiler reports, the same on every rank), one after another: a
 * bucket waits for the ones before it, so every rank starts the same collectives in the
 * same order whatever its thread count. Each ready call also lets MPI progress the
 * started buckets (MPI_Testall): MPI moves non-blocking collectives only inside its
 * calls, and the kernels between make none. Each element is still the same sum of the
 * same ranks' values, so the result is bit for bit the serial average's (for N = 2
 * exactly; for more ranks as long as the library's reduction order does not depend on
 * the bucket sizes).
 *
 * Non-finite guard (--on-nonfinite stop or skip). Each gradient is checked for NaN/Inf
 * on its rank when it is final, before its bucket is sent (a scan of the area, ~1% of a
 * step); the first bad one's index travels in the status collective (MPI_MAX of
 * n_grads − index), and a non-finite loss on any rank makes the mean loss non-finite, so
 * every rank knows the same: then none applies the update, and the loop stops or skips
 * on every rank at the same step.
 *
 * Sharding. The batcher's order of examples is a function of the seed alone (batcher.c),
 * the same on every rank. Each step every rank draws the next N·B examples of that
 * global order as N batches of B and keeps batch `rank`: rank r trains on examples
 * [r·B, (r+1)·B) of each global batch. One rank with batch N·B would see exactly the
 * same examples in the same step, and mlm's masking (drawn row by row from the batcher's
 * random state) is the same too, since every rank draws every row. The batcher's state
 * is therefore the same on every rank and is what rank 0's checkpoint stores: a resumed
 * run continues the global order at the same example, for any N (a different N groups
 * the following examples into global batches of the new N·B).
 *
 * Dropout: rank r seeds its masks with --seed + r·2^32 (then + the step, as always), so
 * ranks drop independently; masks are drawn per rank's batch, so with dropout N ranks
 * match one rank in distribution, not bit for bit. Without dropout they match to float
 * rounding (the gradient of a mean over N·B examples is the mean of N means over B,
 * when every row counts alike: ignore_index targets weigh ranks unequally), except for
 * a loss that couples rows: infonce takes each row's negatives from its rank's B rows
 * only (no all-gather of the embeddings, as DistributedDataParallel without one).
 *
 * Drawing the other ranks' rows costs a copy of their tokens (mlm: also their masking),
 * which is small beside a step; it is what makes the order independent of N.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "train.h"

bool dp_init(dp_step *p, bool required, double timeout, kiln_diags *d)
{
    memset(p, 0, sizeof *p);
    if (!dist_init(&p->ds, required, timeout, d)) return false;
    /* rank 0 alone talks; errors still come from every rank (stderr) */
    if (p->ds.rank > 0 && !freopen("/dev/null", "w", stdout)) return false;
    return true;
}

bool dp_free(dp_step *p, bool ok, kiln_diags *d)
{
    if (p->comm_steps)
        printf("data-parallel: per step %.3f s in the status collective (waiting for the slowest rank), %.3f s "
               "averaging %.1f MiB of gradients (%lld steps)\n",
               p->wait_seconds / (double)p->comm_steps, p->average_seconds / (double)p->comm_steps,
               p->area.grad_bytes / 1048576.0, (long long)p->comm_steps);
    for (int i = 0; i < KILN_TASK_MAX_INPUTS; i++) free(p->skip_bufs[i]);
    free(p->grad_at), free(p->grad_floats), free(p->grad_names), free(p->announce), free(p->bucket_of);
    free(p->bucket_grads), free(p->remaining), free(p->bucket_lo), free(p->bucket_count);
    dist_average_free(&p->avg);
    pointer_call_free(&p->grad_call);
    kiln_compiled_free(&p->grad);
    if (p->have_split) train_split_free(&p->split);
    if (p->have_models) {
        kiln_model_free(&p->grad_model);
        kiln_model_free(&p->apply_model);
    }
    bool ended = dist_finalize(&p->ds, ok, d);
    memset(p, 0, sizeof *p);
    return ended;
}

/* A gradient's announcement, from NAME_train_grad between kernels (or after it returns,
 * --dist-serial): check it, count it off its bucket, start the buckets now complete in
 * order, and let MPI progress the started ones. */
static void on_ready(void *ctx, int32_t i)
{
    dp_step *p = ctx;
    if (p->check_nonfinite && (p->bad_grad < 0 || i < p->bad_grad)) {
        /* NaN or ±Inf: all exponent bits set (an OR over the area: vectorises) */
        const uint32_t *u = (const uint32_t *)(p->grad_area + p->grad_at[i]);
        uint32_t bad = 0;
        for (int64_t j = 0; j < p->grad_floats[i]; j++) bad |= (u[j] & 0x7f800000u) == 0x7f800000u;
        if (bad) p->bad_grad = i;
    }
    p->remaining[p->bucket_of[i]]--;
    while (p->avg.started < p->n_buckets && p->remaining[p->avg.started] == 0) dist_average_start(&p->ds, &p->avg);
    dist_average_progress(&p->ds, &p->avg);
}

/* The buckets (see the top): cut from the area's end, started in order of readiness. */
static void plan_buckets(dp_step *p, const kiln_compiled *apply)
{
    uint32_t n = p->split.n_grads;
    const kiln_graph *g = &p->grad_model.graph;
    p->grad_at = calloc(n + 1, sizeof *p->grad_at);
    p->grad_floats = calloc(n + 1, sizeof *p->grad_floats);
    p->grad_names = calloc(n + 1, sizeof *p->grad_names);
    p->announce = calloc(n + 1, sizeof *p->announce);
    p->bucket_of = calloc(n + 1, sizeof *p->bucket_of);
    int32_t *first = calloc(n + 1, sizeof *first), *pos = calloc(n + 1, sizeof *pos), *order = calloc(n + 1, sizeof *order);
    int64_t *lo = calloc(n + 1, sizeof *lo), *count = calloc(n + 1, sizeof *count);
    p->bucket_grads = calloc(n + 1, sizeof *p->bucket_grads);
    p->remaining = calloc(n + 1, sizeof *p->remaining);
    p->bucket_lo = calloc(n + 1, sizeof *p->bucket_lo);
    p->bucket_count = calloc(n + 1, sizeof *p->bucket_count);
    KILN_ASSERT(p->grad_at && p->grad_floats && p->grad_names && p->announce && p->bucket_of && first && pos && order &&
                lo && count && p->bucket_grads && p->remaining && p->bucket_lo && p->bucket_count);
    for (uint32_t i = 0, k = 0; i < (uint32_t)p->grad_model.n_params; i++) {
        if (!p->split.trained[i]) continue;
        const kiln_node *prm = &g->nodes[p->grad_model.params[i]];
        p->grad_at[k] = (apply->state_offsets[p->split.n_optim_states + k] - p->area.grad_offset) / 4;
        p->grad_floats[k] = kiln_type_numel(&prm->type);
        p->grad_names[k++] = prm->attrs.name;
    }
    /* cut: from the last gradient back, a bucket closes once it spans DIST_BUCKET_BYTES */
    int64_t hi = p->area.grad_bytes / 4;
    int nb = 0;
    for (int32_t i = (int32_t)n - 1; i >= 0; i--) {
        p->bucket_of[i] = nb; /* its cut number for now */
        int64_t at = i == 0 ? 0 : p->grad_at[i];
        if ((hi - at) * 4 >= DIST_BUCKET_BYTES || i == 0) {
            lo[nb] = at, count[nb] = hi - at, first[nb] = i;
            pos[nb] = -1;
            for (int32_t j = i; j < (int32_t)n && p->bucket_of[j] == nb; j++) {
                if (p->grad.ready_after[j] > pos[nb]) pos[nb] = p->grad.ready_after[j];
                p->bucket_grads[nb]++;
            }
            nb++;
            hi = at;
        }
    }
    /* start order: by ready position (stable: ties keep the cut order, the area's end first) */
    for (int b = 0; b < nb; b++) order[b] = b;
    for (int b = 1; b < nb; b++)
        for (int c = b; c > 0 && pos[order[c - 1]] > pos[order[c]]; c--) {
            int32_t t = order[c];
            order[c] = order[c - 1], order[c - 1] = t;
        }
    int *grads = calloc((size_t)nb + 1, sizeof *grads), *rank_of = calloc((size_t)nb + 1, sizeof *rank_of);
    KILN_ASSERT(grads && rank_of);
    for (int b = 0; b < nb; b++) {
        rank_of[order[b]] = b;
        p->bucket_lo[b] = lo[order[b]];
        p->bucket_count[b] = count[order[b]];
        grads[b] = p->bucket_grads[order[b]];
    }
    memcpy(p->bucket_grads, grads, (size_t)nb * sizeof *grads);
    for (uint32_t i = 0; i < n; i++) p->bucket_of[i] = rank_of[p->bucket_of[i]];
    /* --dist-serial announces the gradients in the entry's own order after it returns */
    for (uint32_t i = 0; i < n; i++) p->announce[i] = (int32_t)i;
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t c = i; c > 0 && p->grad.ready_after[p->announce[c - 1]] > p->grad.ready_after[p->announce[c]]; c--) {
            int32_t t = p->announce[c];
            p->announce[c] = p->announce[c - 1], p->announce[c - 1] = t;
        }
    p->n_buckets = nb;
    free(grads), free(rank_of), free(first), free(pos), free(order), free(lo), free(count);
}

bool dp_compile(dp_step *p, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                int n_defines, const char *batch_dim, int64_t batch, bool checkpoint, uint64_t seed, feed *f,
                kiln_compiled *apply, kiln_diags *d)
{
    if (!train_load_model(&p->grad_model, text, len, path, defines, n_defines, batch_dim, batch, d)) return false;
    if (!train_load_model(&p->apply_model, text, len, path, defines, n_defines, batch_dim, batch, d)) {
        kiln_model_free(&p->grad_model);
        return false;
    }
    p->have_models = true;
    if (!train_split_build(&p->grad_model, &p->apply_model, checkpoint, &p->split, d)) return false;
    p->have_split = true;
    /* each rank its own dropout masks (a rank's masks are indexed within its own batch,
     * so equal seeds would drop the same elements on every rank) */
    p->split.dropout_seed = seed + ((uint64_t)p->ds.rank << 32);
    kiln_compile_request greq = train_split_grad_request(&p->split), areq = train_split_apply_request(&p->split);
    if (!kiln_compile_graph(&greq, &p->grad, d)) return false;
    cli_print_dump(p->grad.dump);
    if (!kiln_compile_graph(&areq, apply, d)) return false;
    if (!train_split_check(&p->split, &p->grad, apply, &p->area)) {
        kiln_diags_add(d, NULL, 0, 0, "distributed",
                       "internal error: the gradient and update entries lay out the blobs differently");
        return false;
    }
    /* the caller's blobs and workspace serve both entries */
    if (p->grad.workspace_bytes > apply->workspace_bytes) apply->workspace_bytes = p->grad.workspace_bytes;
    apply->n_kernels += p->grad.n_kernels;
    /* the loop prepares its (unused) call of the fused signature from n_args: the
     * gradient entry's arguments plus lr */
    apply->n_args = p->grad.n_args + 1 - (p->split.n_grads ? 2 : 0); /* not the ready callback and its context */
    pointer_call_init(&p->grad_call, p->grad.n_args);
    p->apply_entry = apply->entry;
    p->apply_types[0] = p->apply_types[1] = p->apply_types[2] = &ffi_type_pointer;
    p->apply_types[3] = &ffi_type_float;
    KILN_ASSERT(ffi_prep_cif(&p->apply_cif, FFI_DEFAULT_ABI, 4, &ffi_type_sint, p->apply_types) == FFI_OK);
    /* the other ranks' rows are drawn into these and dropped */
    for (int i = 0; i < f->n; i++) {
        p->skip_bufs[i] = calloc((size_t)(f->batch * f->cols[i]), sizeof *p->skip_bufs[i]);
        KILN_ASSERT(p->skip_bufs[i] != NULL);
    }
    plan_buckets(p, apply);
    int early = 0; /* buckets that can start before the backward pass ends */
    for (int b = 0; b < p->n_buckets; b++) {
        int32_t last = -1;
        for (uint32_t i = 0; i < p->split.n_grads; i++)
            if (p->bucket_of[i] == b && p->grad.ready_after[i] > last) last = p->grad.ready_after[i];
        early += last < p->grad.n_kernels - 1;
    }
    printf("data-parallel over %d ranks: batch %lld per rank, %lld per step; gradients %.1f MiB, averaged in %d "
           "bucket%s, ",
           p->ds.size, (long long)f->batch, (long long)f->batch * p->ds.size, p->area.grad_bytes / 1048576.0,
           p->n_buckets, p->n_buckets == 1 ? "" : "s");
    if (p->serial) printf("after the backward pass (--dist-serial)\n");
    else printf("%d started during the backward pass\n", early);
    f->tokens_per_batch *= p->ds.size; /* progress counts the global batch */
    return true;
}

void dp_feed(dp_step *p, feed *f, kiln_batcher *bt)
{
    for (int r = 0; r < p->ds.size; r++) {
        if (r == p->ds.rank) feed_next(f, bt);
        else kiln_batcher_next(bt, p->skip_bufs);
    }
}

int dp_run(dp_step *p, int64_t step, void *params, void *optim, void *workspace, const feed *f, float lr,
           float *loss, int *stop)
{
    p->grad_area = (float *)((char *)optim + p->area.grad_offset);
    p->bad_grad = -1;
    for (int b = 0; b < p->n_buckets; b++) p->remaining[b] = p->bucket_grads[b];
    dist_average_begin(&p->ds, &p->avg, p->grad_area, p->area.grad_bytes / 4, p->bucket_lo, p->bucket_count, p->n_buckets);
    uint32_t k = 0;
    void **a = p->grad_call.args;
    a[k++] = params;
    a[k++] = optim;
    a[k++] = workspace;
    for (int i = 0; i < f->n_model; i++) a[k++] = f->model_bufs[i];
    a[k++] = loss;
    if (p->split.n_grads) { /* void (*ready)(void *ctx, int32_t i), ctx */
        a[k++] = p->serial ? NULL : (void *)on_ready;
        a[k++] = p;
    }
    KILN_ASSERT(k == p->grad.n_args);
    int rc = pointer_call_run(&p->grad_call, p->grad.entry);
    if (rc != KILN_RC_OK) *loss = 0;
    else if (p->serial)
        for (uint32_t i = 0; i < p->split.n_grads; i++) on_ready(p, p->announce[i]);
    double t0 = progress_now();
    int nonfinite = p->bad_grad >= 0 ? (int)p->split.n_grads - p->bad_grad : 0;
    /* after the buckets (every rank starts collectives in the same order): a failed
     * rank's remaining buckets start here, the others' have started */
    while (p->avg.started < p->n_buckets) dist_average_start(&p->ds, &p->avg);
    dist_step_status(&p->ds, step, loss, &rc, stop, &nonfinite);
    double t1 = progress_now();
    dist_average_end(&p->ds, step, &p->avg); /* also when the step failed: no collective left open */
    p->wait_seconds += t1 - t0;
    p->average_seconds += progress_now() - t1;
    p->comm_steps++;
    p->nonfinite = nonfinite;
    if (rc != KILN_RC_OK) return rc; /* every rank stops here, before any update */
    if (p->check_nonfinite && (nonfinite || !isfinite(*loss))) return KILN_RC_OK; /* no update anywhere */
    /* int NAME_train_apply(float *params, float *optim, void *workspace, float lr) */
    void *vals[4] = {&params, &optim, &workspace, &lr};
    ffi_arg out = 0;
    ffi_call(&p->apply_cif, FFI_FN(p->apply_entry), &out, vals);
    return (int)out;
}

bool dp_step_ok(const dp_step *p, float loss, char *what, size_t cap)
{
    char loss_s[40] = "";
    if (!isfinite(loss)) snprintf(loss_s, sizeof loss_s, "the loss is %s", isnan(loss) ? "NaN" : "infinite");
    if (p->nonfinite > 0) {
        snprintf(what, cap, "the gradient of %s holds NaN or Inf%s%s",
                 p->grad_names[p->split.n_grads - (uint32_t)p->nonfinite], loss_s[0] ? " and " : "", loss_s);
        return false;
    }
    snprintf(what, cap, "%s", loss_s);
    return loss_s[0] == 0;
}

/* The whole dataset as the batcher reads it: the tokens, and for the labelled tasks every
 * example's label, answer span and fields (where each starts in the tokens and how long
 * it is: the same bytes split at another tab are other examples), and classify's class
 * list (the order of first appearance numbers the classes). Line numbers are left out:
 * they only name an example in messages. */
static uint64_t hash_dataset(const kiln_dataset *ds)
{
    uint64_t h = dist_hash(DIST_HASH_INIT, &ds->n_tokens, sizeof ds->n_tokens);
    h = dist_hash(h, &ds->n_examples, sizeof ds->n_examples);
    h = dist_hash(h, ds->tokens, ds->n_tokens * sizeof *ds->tokens);
    for (size_t i = 0; i < ds->n_examples; i++) {
        const kiln_example *e = &ds->examples[i];
        int64_t v[7] = {e->label, e->start, e->end, (int64_t)e->field[0], e->len[0], (int64_t)e->field[1], e->len[1]};
        h = dist_hash(h, v, sizeof v);
    }
    if (ds->task == KILN_TASK_CLASSIFY) {
        char *labels = kiln_labels_serialize(&ds->labels);
        KILN_ASSERT(labels != NULL);
        h = dist_hash(h, labels, strlen(labels));
        free(labels);
    }
    return h;
}

bool dp_check_same(const dp_step *p, const char *text, size_t len, const char *settings, const kiln_dataset *ds,
                   const void *params, int64_t params_bytes, const void *optim, int64_t optim_bytes, kiln_diags *d)
{
    if (p->ds.size < 2) return true;
    uint64_t h[4];
    h[0] = dist_hash(DIST_HASH_INIT, text, len);
    h[1] = dist_hash(DIST_HASH_INIT, settings, strlen(settings));
    h[2] = hash_dataset(ds);
    h[3] = dist_hash(DIST_HASH_INIT, params, (size_t)params_bytes);
    h[3] = dist_hash(h[3], optim, (size_t)optim_bytes);
    static const char *const what[4] = {"the model file",
                                        "the training flags (steps, batch, seed, task, -D, --disable-pass, …)",
                                        "the training data (--data, or its tokenizer)",
                                        "the starting parameters (--init or --resume)"};
    return dist_check_same(&p->ds, h, what, 4, d);
}
