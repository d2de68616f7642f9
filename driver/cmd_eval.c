/* cmd_eval.c — `kiln eval MODEL.json --weights W --data PATH [--task T] [--batch B]`:
 * the model's loss over a whole file, in file order, one pass; perplexity = exp(loss)
 * for the language-model tasks, accuracy for classify.
 *
 * The text must be tokenised exactly as in training, so the tokenizer (and classify's
 * classes) come from W's metadata when W is a checkpoint of `kiln train`; otherwise the
 * model's tokenizer is used, which only a byte tokenizer can be without its training
 * data. The batch dim defaults like train's (--batch, else train.batch, else the dim's
 * default). The last batch of the pass, when partial, runs through the model compiled for
 * its real rows, so that no loss sees the filler rows (evaluate.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "train.h"
#include "memlimit.h"

int cmd_eval(int argc, char **argv, kiln_diags *diags)
{
    const char *weights = NULL, *data = NULL, *task_name = NULL;
    int64_t batch = 0;
    bool batch_given = false;
    cli_flag flags[] = {
        LIMITS_FLAG,
        {"--weights", CLI_STR, &weights, NULL,
         "the parameters or a kiln train checkpoint (required)"},
        {"--data", CLI_STR, &data, NULL,
         "the data file to measure on (required)"},
        {"--task", CLI_STR, &task_name, NULL,
         "clm, mlm, classify, pairs, seq2seq or span (default: clm)"},
        {"--batch", CLI_INT, &batch, &batch_given,
         "binds the batch dim (default: train.batch, else the dim's default)"},
    };
    cli_args a;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &a, diags)) return EXIT_USAGE;
    if (!limits_valid(diags)) return EXIT_USAGE;
    if (a.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "eval", "expects one MODEL.json");
    if (!weights) kiln_diags_add(diags, NULL, 0, 0, "eval", "--weights W.safetensors is required");
    if (!data) kiln_diags_add(diags, NULL, 0, 0, "eval", "--data PATH is required");
    kiln_task task = KILN_TASK_CLM;
    if (task_name && !kiln_task_parse(task_name, &task))
        kiln_diags_add(diags, NULL, 0, 0, "--task", "expected clm, mlm, classify, pairs, seq2seq or span, got '%s'",
                       task_name);
    if (batch_given && batch < 1) kiln_diags_add(diags, NULL, 0, 0, "--batch", "expected at least 1");
    if (diags->n) return EXIT_USAGE;
    const char *path = a.positional[0];

    int status = EXIT_FAIL;
    size_t len = 0;
    char *text = NULL, *batch_dim = NULL;
    kiln_tensor_file wf = {0};
    kiln_tokenizer tok;
    kiln_labels labels = {0};
    kiln_dataset ds;
    kiln_batcher bt;
    evaluator ev;
    memset(&ev, 0, sizeof ev);
    bool have_tok = false, have_labels = false, have_ds = false, have_bt = false;
    kiln_rt_error err = {{0}};

    if (!(text = train_read_model_text(path, &len, diags))) goto done;
    batch_dim = train_batch_dim(text, len);
    if (kiln_tensor_file_read(weights, &wf, &err) != 0) {
        bind_rt_error(diags, weights, &err);
        goto done;
    }
    /* the task a checkpoint was trained on is the default */
    const char *ck_task = kiln_tensor_file_meta(&wf, "task");
    if (!task_name && ck_task && !kiln_task_parse(ck_task, &task)) task = KILN_TASK_CLM;

    kiln_tokenizer_config tc;
    int64_t max_id = 0; /* a .bin file's ids must fit the model's vocabulary */
    if (!train_model_defaults(text, len, path, a.defines, a.n_defines, batch_dim, batch_given, &batch, &tc, &max_id,
                              diags))
        goto done;

    if (!ckpt_or_model_tokenizer(&wf, weights, tc.kind, "evaluate", &tok, diags)) goto done;
    have_tok = true;
    const char *lt = kiln_tensor_file_meta(&wf, "labels");
    if (task == KILN_TASK_CLASSIFY && lt) {
        if (!kiln_labels_deserialize(&labels, lt, weights, "__metadata__.labels", diags)) goto done;
        have_labels = true;
    }
    kiln_data_options opt = {max_id, have_labels ? &labels : NULL};
    if (!kiln_dataset_load(&ds, task, data, &tok, &opt, diags)) goto done;
    have_ds = true;

    if (!evaluator_init(&ev, text, len, path, a.defines, a.n_defines, batch_dim, batch, task, diags)) goto done;
    if (!train_check_vocab(&ev.model, task, &tok, task == KILN_TASK_CLASSIFY ? &ds.labels : NULL, diags)) goto done;
    kiln_batch_options bo = kiln_batch_options_default();
    bo.shuffle = false;
    bo.ignore_index = ev.ignore_index;
    if (!kiln_batcher_init(&bt, &ds, &tok, ev.feed.batch, ev.feed.cols, &bo, diags)) goto done;
    have_bt = true;
    feed_warn_skipped("eval", &bt, &ds);
    /* a partial last batch gets its own entry, compiled now rather than inside the timing */
    if (!evaluator_prepare(&ev, &bt, 0, diags)) goto done;
    void *params = kiln_aligned_alloc((size_t)ev.c.params_bytes);
    KILN_ASSERT(params != NULL);
    const kiln_model *em = &ev.model;
    bool ok = ckpt_restore(&em->graph, em->params, (uint32_t)em->n_params, ev.c.param_offsets, params, &wf, weights,
                           NULL, diags);
    eval_result res;
    double t0 = progress_now();
    ok = ok && evaluator_run(&ev, params, &bt, 0, &res, diags);
    double t1 = progress_now();
    kiln_aligned_free(params);
    if (!ok) goto done;

    printf("%s: %lld %s in %lld batches of %lld (%.1f s)\n", data, (long long)res.examples,
           task == KILN_TASK_CLM || task == KILN_TASK_MLM ? "windows" : "examples", (long long)res.batches,
           (long long)ev.feed.batch, t1 - t0);
    printf("loss %.4f\n", res.loss);
    if (task == KILN_TASK_CLM || task == KILN_TASK_MLM || task == KILN_TASK_SEQ2SEQ)
        printf("perplexity %.4f\n", exp(res.loss)); /* per target token */
    if (res.has_accuracy) printf("accuracy %.4f\n", res.accuracy);
    status = EXIT_OK;
done:
    evaluator_free(&ev);
    if (have_bt) kiln_batcher_free(&bt);
    if (have_ds) kiln_dataset_free(&ds);
    if (have_labels) kiln_labels_free(&labels);
    if (have_tok) kiln_tokenizer_free(&tok);
    kiln_tensor_file_free(&wf);
    free(batch_dim);
    free(text);
    return status;
}
