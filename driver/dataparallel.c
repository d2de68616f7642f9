/* dataparallel.c — `kiln train`'s data-parallel step: what the training loop calls
 * instead of the fused NAME_train_step when it runs as one of N > 1 ranks (mpirun).
 * docs/distributed.md is the user's view.
 *
 * The step is the split one (trainsplit.c):
 *     NAME_train_grad   this rank's loss and gradients (into the blob's gradient area)
 *     dist_step_status  every rank learns the mean loss, any failure, any signal
 *     dist_average      the gradient area averaged over the ranks (MPI_Allreduce, buckets)
 *     NAME_train_apply  the update, identical on every rank (same parameters, same
 *                       averaged gradients, same optimizer state, same lr)
 * so the parameters stay bit-identical across ranks without ever being sent.
 *
 * Sharding. The batcher's order of examples is a function of the seed alone (data.c),
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
 * when every row counts alike: ignore_index targets weigh ranks unequally).
 *
 * Drawing the other ranks' rows costs a copy of their tokens (mlm: also their masking),
 * which is small beside a step; it is what makes the order independent of N.
 */
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

void dp_free(dp_step *p, bool ok)
{
    if (p->comm_steps)
        printf("data-parallel: per step %.3f s in the status collective (waiting for the slowest rank), %.3f s "
               "averaging %.1f MiB of gradients (%lld steps)\n",
               p->wait_seconds / (double)p->comm_steps, p->average_seconds / (double)p->comm_steps,
               p->area.grad_bytes / 1048576.0, (long long)p->comm_steps);
    for (int i = 0; i < KILN_TASK_MAX_INPUTS; i++) free(p->skip_bufs[i]);
    pointer_call_free(&p->grad_call);
    kiln_compiled_free(&p->grad);
    if (p->have_split) train_split_free(&p->split);
    if (p->have_models) {
        kiln_model_free(&p->grad_model);
        kiln_model_free(&p->apply_model);
    }
    dist_finalize(&p->ds, ok);
    memset(p, 0, sizeof *p);
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
    apply->n_args = p->grad.n_args + 1;
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
    int64_t per = DIST_BUCKET_BYTES;
    printf("data-parallel over %d ranks: batch %lld per rank, %lld per step; gradients %.1f MiB, averaged in %lld "
           "bucket%s\n",
           p->ds.size, (long long)f->batch, (long long)f->batch * p->ds.size, p->area.grad_bytes / 1048576.0,
           (long long)((p->area.grad_bytes + per - 1) / per), p->area.grad_bytes > per ? "s" : "");
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
    uint32_t k = 0;
    void **a = p->grad_call.args;
    a[k++] = params;
    a[k++] = optim;
    a[k++] = workspace;
    for (int i = 0; i < f->n_model; i++) a[k++] = f->model_bufs[i];
    a[k++] = loss;
    KILN_ASSERT(k == p->grad.n_args);
    int rc = pointer_call_run(&p->grad_call, p->grad.entry);
    if (rc != KILN_RC_OK) *loss = 0;
    double t0 = progress_now();
    dist_step_status(&p->ds, step, loss, &rc, stop);
    if (rc != KILN_RC_OK) return rc; /* every rank stops here, before any update */
    double t1 = progress_now();
    dist_average(&p->ds, step, (float *)((char *)optim + p->area.grad_offset), p->area.grad_bytes / 4);
    p->wait_seconds += t1 - t0;
    p->average_seconds += progress_now() - t1;
    p->comm_steps++;
    /* int NAME_train_apply(float *params, float *optim, void *workspace, float lr) */
    void *vals[4] = {&params, &optim, &workspace, &lr};
    ffi_arg out = 0;
    ffi_call(&p->apply_cif, FFI_FN(p->apply_entry), &out, vals);
    return (int)out;
}

bool dp_check_same(const dp_step *p, const char *text, size_t len, const char *settings, const kiln_dataset *ds,
                   const void *params, int64_t params_bytes, const void *optim, int64_t optim_bytes, kiln_diags *d)
{
    if (p->ds.size < 2) return true;
    uint64_t h[4];
    h[0] = dist_hash(DIST_HASH_INIT, text, len);
    h[1] = dist_hash(DIST_HASH_INIT, settings, strlen(settings));
    h[2] = dist_hash(DIST_HASH_INIT, &ds->n_tokens, sizeof ds->n_tokens);
    h[2] = dist_hash(h[2], &ds->n_examples, sizeof ds->n_examples);
    h[2] = dist_hash(h[2], ds->tokens, ds->n_tokens * sizeof *ds->tokens);
    h[3] = dist_hash(DIST_HASH_INIT, params, (size_t)params_bytes);
    h[3] = dist_hash(h[3], optim, (size_t)optim_bytes);
    static const char *const what[4] = {"the model file", "the training flags (steps, batch, seed, task, -D, …)",
                                        "the training data (--data, or its tokenizer)",
                                        "the starting parameters (--init or --resume)"};
    return dist_check_same(&p->ds, h, what, 4, d);
}
