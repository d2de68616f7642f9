/* cmd_train.c — `kiln train`: fit a model to data (SPEC sections 2–5).
 *
 * Order of work, so that every problem that can be found before training is found
 * before the (slow) compile and long before the first step:
 *   1. flags; the model file's text; the checkpoint (--resume) or weights (--init);
 *   2. settings: command-line flags override the model file's `train` values, and a
 *      resumed run keeps what its checkpoint recorded (steps, seed, task; a --seed,
 *      --task or --batch that differs from the checkpoint's is refused);
 *   3. the tokenizer (checkpoint's, then --init file's, then the model's, trained on
 *      --data for char/bpe), the datasets, the vocabulary check;
 *   4. the training step (trainstep.c) compiled once by the JIT, and the evaluation
 *      entry for --val; the blobs: parameters from the checkpoint, --init or fresh,
 *      optimizer state from the checkpoint or zeros; the batcher, restored on resume;
 *   5. the loop: batch → lr(step) → NAME_train_step → loss, progress and --log,
 *      validation every --val-every steps, checkpoints every --save-every steps and at
 *      the end. --stop-at S ends this run after step S as if it were the end (the
 *      schedule still runs to --steps), for training in chunks with --resume.
 *
 * Resuming is exact: the checkpoint holds the parameters, the whole optimizer blob
 * (moments, step counter, bias corrections), the batcher's state, the step and the dims
 * the step was compiled with (resume_shape), and the schedule is a function of the
 * step, so 10 steps + --resume + 10 steps gives the same bits as 20 steps. Before the
 * first step, prepare_files removes the temporaries of killed saves and cuts a resumed
 * --log back to the checkpoint's step; a failed save names the checkpoint that is kept.
 *
 * SIGINT and SIGTERM finish the current step, save (with --save) and exit with 128 + the
 * signal's number (130 for Ctrl-C), as a shell reports a killed program; the
 * interruption is reported as such on stderr, not as an error. A second signal kills at
 * once. Checkpoints are written atomically (checkpoint.c), so
 * even kill -9 during a save leaves a loadable file.
 *
 * --threads N (default: the online CPUs, at most KILN_MAX_THREADS) sizes the runtime's pool;
 * the step gives the same bits for any N.
 *
 * Under mpirun (N > 1 ranks) the step is data-parallel (dataparallel.c,
 * docs/distributed.md): build_step compiles the split step instead, the loop's batch
 * and step calls go through dp_feed / dist_step, and ranks above 0 neither save, log
 * nor validate.
 */
#include <ffi.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "cli.h"
#include "kiln/runtime.h"
#include "schedule.h"
#include "train.h"
#include "memlimit.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
    signal(sig, SIG_DFL); /* a second one stops at once */
}

/* Everything one run holds; freed by run_free. */
typedef struct run {
    /* settings */
    const char *model_path, *data, *val, *init, *save, *resume, *log_path;
    kiln_task task;
    int64_t steps, batch, seed, threads, val_every, val_batches, save_every, start, stop_at, log_every;
    int64_t max_id;               /* a .bin file's ids must be below it (train_data_max_id) */
    bool checkpoint;              /* --checkpoint-activations */
    char *text;
    size_t text_len;
    char *batch_dim;
    kiln_tokenizer_config tok_cfg;  /* the model file's */
    kiln_tensor_file ckpt;        /* --resume */
    char *ckpt_dims;              /* its "dims", parsed in place: -D bindings point into it */
    int64_t saved_step;           /* the newest checkpoint this run wrote or resumed, or −1 */
    kiln_tensor_file init_file;   /* --init */
    /* data */
    kiln_tokenizer tok;
    bool have_tok;
    kiln_dataset ds, val_ds;
    bool have_ds, have_val_ds;
    kiln_labels labels;           /* from a checkpoint, for classify */
    bool have_labels;
    /* the step */
    kiln_model model;
    bool have_model;
    train_step ts;
    kiln_compiled c;
    void *params, *optim, *workspace;
    feed feed;
    kiln_batcher bt, val_bt;
    bool have_bt, have_val_bt;
    evaluator ev;
    FILE *log;
    /* data-parallel (mpirun; dataparallel.c, docs/distributed.md) */
    dp_step dp;
    bool distributed;             /* --distributed */
    int64_t dist_timeout;         /* --dist-timeout */
    int dist_stop;                /* the signal every rank agreed to stop on */
    nonfinite_guard guard;        /* nonfinite.c: NaN/Inf steps change nothing */
    nonfinite_mode on_nonfinite;
    int64_t skipped;              /* --on-nonfinite skip: steps skipped */
} run;

static void run_free(run *r)
{
    if (r->log) fclose(r->log);
    nonfinite_guard_free(&r->guard);
    evaluator_free(&r->ev);
    if (r->have_val_bt) kiln_batcher_free(&r->val_bt);
    if (r->have_bt) kiln_batcher_free(&r->bt);
    feed_free(&r->feed);
    kiln_aligned_free(r->params);
    kiln_aligned_free(r->optim);
    kiln_aligned_free(r->workspace);
    kiln_compiled_free(&r->c);
    train_step_free(&r->ts);
    if (r->have_model) kiln_model_free(&r->model);
    if (r->have_val_ds) kiln_dataset_free(&r->val_ds);
    if (r->have_ds) kiln_dataset_free(&r->ds);
    if (r->have_labels) kiln_labels_free(&r->labels);
    if (r->have_tok) kiln_tokenizer_free(&r->tok);
    kiln_tensor_file_free(&r->ckpt);
    kiln_tensor_file_free(&r->init_file);
    free(r->batch_dim);
    free(r->ckpt_dims);
    free(r->text);
}

/* An integer from a checkpoint's metadata, or false. */
static bool meta_int(const kiln_tensor_file *f, const char *key, int64_t *out)
{
    const char *v = kiln_tensor_file_meta(f, key);
    return v && cli_parse_int(v, out);
}

static bool defines_dim(const cli_args *a, const char *name)
{
    for (int i = 0; name && i < a->n_defines; i++)
        if (strcmp(a->defines[i].name, name) == 0) return true;
    return false;
}

/* ---- step 2: settings ---------------------------------------------------------------------- */

/* --resume compiles the step the checkpoint was trained with: its "dims" (every dim as
 * -D and --batch bound it) become -D bindings for the dims the command line leaves
 * out, and a -D or --batch that disagrees is refused, since the batcher's position
 * and the data order count in batches of that shape. Checkpoints older than "dims"
 * resume as before, with the user's flags.
 *
 * The batch is the global one: "batch" holds N·B of the N ranks that saved it (B per
 * rank, as "dims" records it), and a resume on M ranks takes N·B / M per rank, so that
 * any number of ranks that divides the global batch continues the same run (docs/
 * distributed.md); a --batch or -D of the batch dim whose M·B differs from it is
 * refused (both give the per-rank batch, as on a fresh run). */
static bool resume_shape(run *r, cli_args *a, bool batch_given, kiln_diags *d)
{
    const char *text = kiln_tensor_file_meta(&r->ckpt, "dims");
    if (!text) return true;
    r->ckpt_dims = strdup(text);
    KILN_ASSERT(r->ckpt_dims != NULL);
    kiln_dim_binding dims[64];
    int n = ckpt_dims_parse(r->ckpt_dims, dims, 64);
    if (n < 0) {
        kiln_diags_add(d, r->resume, 0, 0, "__metadata__.dims", "malformed: '%.60s'", text);
        return false;
    }
    int before = d->n, n_user = a->n_defines;
    for (int i = 0; i < n; i++) {
        const kiln_dim_binding *user = NULL; /* the last -D of this dim wins, as in the frontend */
        for (int k = 0; k < n_user; k++)
            if (strcmp(a->defines[k].name, dims[i].name) == 0) user = &a->defines[k];
        bool is_batch = r->batch_dim && strcmp(r->batch_dim, dims[i].name) == 0;
        if (is_batch) {
            /* --batch B or -D B=…: the same rule (--batch wins over -D, as in train_load_model) */
            bool given = batch_given || user;
            int64_t want = batch_given ? r->batch : user ? user->value : 0;
            int64_t ranks = r->dp.ds.size > 1 ? r->dp.ds.size : 1, global = dims[i].value;
            if (!meta_int(&r->ckpt, "batch", &global) || global < 1) global = dims[i].value;
            char flag[80], was[96]; /* the flag given, and the checkpoint's batch in its terms */
            if (user && !batch_given) {
                snprintf(flag, sizeof flag, "-D %s", dims[i].name);
                snprintf(was, sizeof was, "%s=%lld", dims[i].name, (long long)global);
            } else {
                snprintf(flag, sizeof flag, "--batch");
                snprintf(was, sizeof was, "--batch %lld", (long long)global);
            }
            if (given && want * ranks != global && ranks == 1)
                kiln_diags_add(d, r->resume, 0, 0, flag, "the checkpoint was trained with %s, not %lld; resume "
                               "needs the same batch (leave %s out to reuse it)", was, (long long)want, flag);
            else if (given && want * ranks != global)
                kiln_diags_add(d, r->resume, 0, 0, flag, "the checkpoint was trained with a global batch of "
                               "%lld, not %lld × %lld rank(s); resume needs the same global batch (leave %s out "
                               "to reuse it)", (long long)global, (long long)want, (long long)ranks, flag);
            else if (global % ranks != 0)
                kiln_diags_add(d, r->resume, 0, 0, flag, "the checkpoint's global batch of %lld cannot be split "
                               "evenly over %lld ranks; resume on a number of ranks that divides it", (long long)global,
                               (long long)ranks);
            else if (!given && a->n_defines < (int)(sizeof a->defines / sizeof a->defines[0]))
                a->defines[a->n_defines++] = (kiln_dim_binding){dims[i].name, global / ranks};
            continue;
        }
        if (user && user->value != dims[i].value)
            kiln_diags_add(d, r->resume, 0, 0, "-D", "the checkpoint was trained with %s=%lld, not %lld; resume "
                           "needs the same dims (leave -D %s out to reuse them)", dims[i].name,
                           (long long)dims[i].value, (long long)user->value, dims[i].name);
        else if (!user && a->n_defines < (int)(sizeof a->defines / sizeof a->defines[0]))
            a->defines[a->n_defines++] = dims[i];
    }
    return d->n == before;
}

/* The checkpoint's "optimizer" metadata for the model file's train.optimizer. */
static const char *optimizer_name(const kiln_train_config *t) { return t->optimizer == KILN_OPT_SGD ? "sgd" : "adamw"; }

static bool settle(run *r, const cli_args *a, bool steps_given, bool batch_given, bool seed_given, bool task_given,
                   kiln_diags *d)
{
    kiln_model m;
    if (!train_load_model(&m, r->text, r->text_len, r->model_path, a->defines, a->n_defines, NULL, 0, d)) return false;
    const kiln_train_config *t = &m.train;
    const kiln_tensor_file *ck = r->resume ? &r->ckpt : NULL;
    int64_t v;
    if (ck) {
        const char *task = kiln_tensor_file_meta(ck, "task");
        if (!task || !kiln_tensor_file_meta(ck, "data_state") || !meta_int(ck, "step", &r->start))
            kiln_diags_add(d, r->resume, 0, 0, NULL, "not a checkpoint of kiln train (no step, task or data_state "
                           "in its metadata); use --init to start from its weights");
        /* without --task the run goes on with the checkpoint's; given again, it must agree */
        else if (!task_given && !kiln_task_parse(task, &r->task))
            kiln_diags_add(d, r->resume, 0, 0, "__metadata__.task", "unknown task '%.40s'", task);
        else if (strcmp(task, kiln_task_name(r->task)) != 0)
            kiln_diags_add(d, r->resume, 0, 0, "task", "the checkpoint was trained with --task %s, not %s; resume "
                           "needs the same task (leave --task out to reuse it)", task, kiln_task_name(r->task));
        else if (r->start < 0)
            kiln_diags_add(d, r->resume, 0, 0, "__metadata__.step", "is negative (%lld)", (long long)r->start);
        /* resuming continues the run: another optimizer would silently drop its state (AdamW's
         * moments into plain SGD) or mistake it for its own */
        const char *opt = kiln_tensor_file_meta(ck, "optimizer");
        if (opt && strcmp(opt, optimizer_name(t)) != 0)
            kiln_diags_add(d, r->resume, 0, 0, "__metadata__.optimizer",
                           "the checkpoint was trained with %.20s, the model file asks for %s; --resume continues "
                           "a run with its optimizer state (to train these weights with %s, start a new run from "
                           "them with --init)", opt, optimizer_name(t), optimizer_name(t));
    }
    if (r->save) {
        /* find an unwritable --save now, not after hours of training */
        struct stat st;
        char *dir = strdup(r->save), *slash = strrchr(dir, '/');
        KILN_ASSERT(dir != NULL);
        if (slash) slash[slash == dir ? 1 : 0] = 0;
        if (stat(r->save, &st) == 0 && S_ISDIR(st.st_mode))
            kiln_diags_add(d, r->save, 0, 0, "--save", "is a directory");
        else if (access(slash ? dir : ".", W_OK) != 0)
            kiln_diags_add(d, r->save, 0, 0, "--save", "its directory is missing or not writable");
        free(dir);
    }
    if (!steps_given) r->steps = ck && meta_int(ck, "steps", &v) ? v : t->steps;
    if (r->steps <= 0)
        kiln_diags_add(d, NULL, 0, 0, "--steps",
                       "how many steps? give --steps N or \"steps\" in the model's train section");
    if (!seed_given) r->seed = ck && meta_int(ck, "seed", &v) ? v : (int64_t)m.init_seed;
    /* the seed fixes the data order and the dropout masks of every step: another one
     * would not continue the run (as --batch, refused rather than silently used) */
    else if (ck && meta_int(ck, "seed", &v) && v != r->seed)
        kiln_diags_add(d, r->resume, 0, 0, "--seed", "the checkpoint was trained with --seed %lld, not %lld; resume "
                       "needs the same seed (leave --seed out to reuse it)", (long long)v, (long long)r->seed);
    if (!batch_given && !defines_dim(a, r->batch_dim)) r->batch = t->batch;
    if (!batch_given && defines_dim(a, r->batch_dim)) r->batch = 0; /* -D already binds it */
    if (r->batch > 0 && !r->batch_dim)
        kiln_diags_add(d, r->model_path, 0, 0, "inputs",
                       "the inputs do not all start with the same named dim, so --batch / train.batch cannot bind it");
    if (!kiln_utf8_valid(r->text, r->text_len))
        kiln_diags_add(d, r->model_path, 0, 0, NULL, "is not valid UTF-8, so checkpoints could not keep it");
    /* defaults that follow the run's length: ten validations and ten checkpoints */
    int64_t tenth = r->steps / 10 > 0 ? r->steps / 10 : 1;
    if (r->val_every == 0) r->val_every = tenth;
    if (r->save_every == 0) r->save_every = tenth;
    if (r->log_every == 0) r->log_every = tenth;
    /* mistakes that waste a run without being errors */
    if (d->n == 0 && t->warmup_steps > r->steps)
        fprintf(stderr,
                "kiln train: warning: the model's warmup_steps (%lld) exceeds the run's steps (%lld): the learning rate "
                "never reaches its peak %g (it ends at %g)\n",
                (long long)t->warmup_steps, (long long)r->steps, t->lr,
                t->lr * (double)r->steps / (double)t->warmup_steps);
    if (d->n == 0 && !r->save)
        fprintf(stderr, "kiln train: warning: no --save: the trained weights will not be kept\n");
    r->tok_cfg = m.tokenizer;
    r->max_id = train_data_max_id(&m);
    kiln_model_free(&m);
    return d->n == 0;
}

/* ---- step 3: tokenizer and data ------------------------------------------------------------ */

static bool load_data(run *r, kiln_diags *d)
{
    int before = d->n;
    /* the tokenizer: a run's own (resume), a pretrained model's (init), or a new one */
    if (r->resume && ckpt_tokenizer(&r->ckpt, r->resume, &r->tok, d)) r->have_tok = true;
    else if (d->n == before && r->init && ckpt_tokenizer(&r->init_file, r->init, &r->tok, d)) {
        r->have_tok = true;
        /* the pretrained model's ids are what its embedding learned: its tokenizer wins,
         * but a model file asking for another kind should hear so */
        static const char *const kinds[] = {"none", "byte", "char", "bpe"}; /* kiln_tokenizer_kind order */
        if (r->tok_cfg.kind != KILN_TOK_NONE && r->tok_cfg.kind != r->tok.kind && r->dp.ds.rank == 0)
            fprintf(stderr, "kiln train: warning: the model file asks for a %s tokenizer; training goes on with the %s "
                    "tokenizer %s was trained with, whose ids its weights know\n",
                    kinds[r->tok_cfg.kind], kinds[r->tok.kind], r->init);
    }
    if (d->n > before) return false;
    if (!r->have_tok) {
        kiln_tokenizer_config cfg = r->tok_cfg;
        if (cfg.kind == KILN_TOK_NONE) cfg.kind = KILN_TOK_BYTE;
        if (!kiln_data_train_tokenizer(&r->tok, &cfg, r->task, r->data, d)) return false;
        r->have_tok = true;
    }
    /* classify's classes: the checkpoint's, so evaluation and resumed runs agree */
    const kiln_tensor_file *src = r->resume ? &r->ckpt : r->init ? &r->init_file : NULL;
    const char *lt = src ? kiln_tensor_file_meta(src, "labels") : NULL;
    if (lt && r->task == KILN_TASK_CLASSIFY) {
        if (!kiln_labels_deserialize(&r->labels, lt, r->resume ? r->resume : r->init, "__metadata__.labels", d))
            return false;
        r->have_labels = true;
    }
    kiln_data_options opt = {r->max_id, r->have_labels ? &r->labels : NULL};
    if (!kiln_dataset_load(&r->ds, r->task, r->data, &r->tok, &opt, d)) return false;
    r->have_ds = true;
    if (r->val) {
        kiln_data_options vopt = {r->max_id, r->task == KILN_TASK_CLASSIFY ? &r->ds.labels : NULL};
        if (!kiln_dataset_load(&r->val_ds, r->task, r->val, &r->tok, &vopt, d)) return false;
        r->have_val_ds = true;
    }
    return true;
}

/* ---- step 4: the compiled step and its memory ------------------------------------------------ */

static bool make_batchers(run *r, kiln_diags *d);

static bool build_step(run *r, const cli_args *a, kiln_diags *d)
{
    if (!train_load_model(&r->model, r->text, r->text_len, r->model_path, a->defines, a->n_defines, r->batch_dim,
                          r->batch, d))
        return false;
    r->have_model = true;
    kiln_model *m = &r->model;
    if (!feed_init(&r->feed, m, r->task, d)) return false;
    if (!train_check_vocab(m, r->task, &r->tok, r->task == KILN_TASK_CLASSIFY ? &r->ds.labels : NULL, d)) return false;
    /* the batchers before the compile: data too short for the shapes fails fast */
    if (!make_batchers(r, d)) return false;
    double t0 = progress_now();
    if (!train_step_build(m, &r->ts, d)) return false;
    kiln_checkpoint_result ck = {0};
    if (r->checkpoint && !train_step_checkpoint(m, &r->ts, &ck, d)) return false;
    /* the data-parallel step checks in its own way (dataparallel.c: every rank agrees) */
    if (r->on_nonfinite != NONFINITE_OFF && r->dp.ds.size <= 1 && !nonfinite_guard_build(m, &r->ts, &r->guard, d))
        return false;
    r->dp.check_nonfinite = r->on_nonfinite != NONFINITE_OFF;
    r->ts.dropout_seed = (uint64_t)r->seed;
    kiln_compile_request req = train_step_request(m, &r->ts);
    /* one of N ranks: the step split around the gradient average (dataparallel.c) */
    bool compiled = r->dp.ds.size > 1 ? dp_compile(&r->dp, r->text, r->text_len, r->model_path, a->defines,
                                                   a->n_defines, r->batch_dim, r->batch, r->checkpoint,
                                                   (uint64_t)r->seed, &r->feed, &r->c, d)
                                      : kiln_compile_graph(&req, &r->c, d);
    if (!compiled) return false;
    cli_print_dump(r->c.dump);
    double t1 = progress_now();
    int64_t n_params = 0;
    for (int i = 0; i < m->n_params; i++) n_params += kiln_type_numel(&m->graph.nodes[m->params[i]].type);
    printf("model %s: %lld parameters in %d tensors (%u trained), %s, batch %lld, %lld tokens per step\n", m->name,
           (long long)n_params, m->n_params, r->ts.n_trained, m->train.optimizer == KILN_OPT_SGD ? "sgd" : "adamw",
           (long long)r->feed.batch, (long long)r->feed.tokens_per_batch);
    printf("compiled the training step in %.1f s: %d kernels, workspace %.1f MiB, optimizer state %.1f MiB\n", t1 - t0,
           r->c.n_kernels, r->c.workspace_bytes / 1048576.0, r->c.optim_bytes / 1048576.0);
    if (r->checkpoint)
        printf("checkpointed activations: %u blocks, %u nodes recomputed in the backward pass\n", ck.n_blocks,
               ck.n_recomputed);
    /* the step's bits do not depend on the thread count (GEMMs are split, never along k) */
    cli_threads_use(r->threads);
    if (!limits_check_blobs(&m->graph, r->c.params_bytes, r->c.optim_bytes, r->c.workspace_bytes, 0, "train", d))
        return false;
    if (r->val) {
        if (!evaluator_init(&r->ev, r->text, r->text_len, r->model_path, a->defines, a->n_defines, r->batch_dim,
                            r->batch, r->task, d))
            return false;
        /* validation reads the training blob: the layouts must agree */
        for (int i = 0; i < m->n_params; i++) KILN_ASSERT(r->ev.c.param_offsets[i] == r->c.param_offsets[i]);
        /* a partial last validation batch has its own entry: compiled now, before the blobs */
        if (!evaluator_prepare(&r->ev, &r->val_bt, r->val_batches, d)) return false;
    }
    /* the compiles are done: what they left resident need not stay under the blobs */
    train_release_compiler_memory();
    r->params = kiln_aligned_alloc((size_t)r->c.params_bytes);
    r->optim = kiln_aligned_alloc((size_t)r->c.optim_bytes);
    r->workspace = kiln_aligned_alloc((size_t)r->c.workspace_bytes);
    if (!r->params || !r->optim || !r->workspace) {
        kiln_diags_add(d, NULL, 0, 0, "train", "out of memory for the parameter, optimizer and workspace blobs");
        return false;
    }
    return true;
}

/* Parameters: the checkpoint's (resume), else fresh ones overwritten by those --init
 * has, listing what was initialised and what the file has that the model lacks. */
static bool fill_blobs(run *r, kiln_diags *d)
{
    kiln_model *m = &r->model;
    const kiln_graph *g = &m->graph;
    if (r->resume) {
        bool ok = ckpt_restore(g, m->params, (uint32_t)m->n_params, r->c.param_offsets, r->params, &r->ckpt, r->resume,
                               NULL, d);
        return ckpt_restore(g, r->ts.states, r->ts.n_states, r->c.state_offsets, r->optim, &r->ckpt, r->resume, NULL,
                            d) && ok;
    }
    float **at = calloc((size_t)m->n_params + 1, sizeof *at);
    KILN_ASSERT(at != NULL);
    for (int i = 0; i < m->n_params; i++) at[i] = (float *)((char *)r->params + r->c.param_offsets[i]);
    init_params(m, (uint64_t)r->seed, at);
    free(at);
    if (!r->init) return true;

    bool *found = calloc((size_t)m->n_params + 1, sizeof *found);
    KILN_ASSERT(found != NULL);
    bool ok = ckpt_restore(g, m->params, (uint32_t)m->n_params, r->c.param_offsets, r->params, &r->init_file, r->init,
                           found, d);
    int loaded = 0;
    for (int i = 0; i < m->n_params; i++) loaded += found[i];
    printf("--init %s: loaded %d of %d parameters\n", r->init, loaded, m->n_params);
    for (int i = 0; ok && i < m->n_params; i++) {
        if (found[i]) continue;
        char t[160];
        printf("  initialised %s %s (not in the file)\n", g->nodes[m->params[i]].attrs.name,
               kiln_type_str(&g->nodes[m->params[i]].type, t, sizeof t));
    }
    int optim_tensors = 0;
    for (int j = 0; ok && j < r->init_file.n; j++) {
        const char *name = r->init_file.tensors[j].name;
        if (strncmp(name, "optim.", 6) == 0) optim_tensors++;
        else if (kiln_model_find_param(m, name) == KILN_NONE)
            printf("  ignored %s (the model has no such parameter)\n", name);
    }
    if (ok && optim_tensors)
        printf("  (its %d optimizer tensors are not used: the optimizer starts afresh)\n", optim_tensors);
    free(found);
    return ok;
}

static bool make_batchers(run *r, kiln_diags *d)
{
    kiln_batch_options opt = kiln_batch_options_default();
    opt.seed = (uint64_t)r->seed;
    opt.ignore_index = train_ignore_index(&r->model);
    if (!kiln_batcher_init(&r->bt, &r->ds, &r->tok, r->feed.batch, r->feed.cols, &opt, d)) return false;
    r->have_bt = true;
    if (r->dp.ds.rank == 0) feed_warn_skipped("train", &r->bt, &r->ds);
    if (r->resume) {
        kiln_batch_state st;
        const char *text = kiln_tensor_file_meta(&r->ckpt, "data_state");
        if (!kiln_batch_state_parse(&st, text)) {
            kiln_diags_add(d, r->resume, 0, 0, "__metadata__.data_state", "malformed: '%.60s'", text);
            return false;
        }
        if (!kiln_batcher_restore(&r->bt, &st, d)) {
            kiln_diags_set_file(d, r->resume);
            if (!r->ckpt_dims)
                kiln_diags_add(d, r->resume, 0, 0, NULL, "the checkpoint predates recorded dims: resume with the -D "
                               "and --batch it was trained with");
            return false;
        }
    }
    if (r->val) {
        opt.shuffle = false;
        /* the evaluation graph has the training graph's inputs */
        if (!kiln_batcher_init(&r->val_bt, &r->val_ds, &r->tok, r->feed.batch, r->feed.cols, &opt, d))
            return false;
        r->have_val_bt = true;
        if (r->dp.ds.rank == 0) feed_warn_skipped("train", &r->val_bt, &r->val_ds);
    }
    return true;
}

/* ---- step 5: the loop ------------------------------------------------------------------------ */

static bool save(run *r, int64_t step, kiln_diags *d)
{
    char step_s[32], steps_s[32], seed_s[32], threads_s[32], data_state[160];
    snprintf(step_s, sizeof step_s, "%lld", (long long)step);
    snprintf(steps_s, sizeof steps_s, "%lld", (long long)r->steps);
    snprintf(seed_s, sizeof seed_s, "%lld", (long long)r->seed);
    snprintf(threads_s, sizeof threads_s, "%lld", (long long)r->threads);
    kiln_batch_state st = kiln_batcher_state(&r->bt);
    kiln_batch_state_format(&st, data_state, sizeof data_state);
    char *tok = kiln_tokenizer_serialize(&r->tok);
    char *labels = r->task == KILN_TASK_CLASSIFY ? kiln_labels_serialize(&r->ds.labels) : NULL;
    char *dims = ckpt_dims_format(&r->model), batch_s[32];
    /* the global batch: every rank's share (dims holds one rank's) */
    snprintf(batch_s, sizeof batch_s, "%lld", (long long)r->feed.batch * (r->dp.ds.size > 1 ? r->dp.ds.size : 1));
    const char *keys[14], *values[14];
    int n = 0;
    keys[n] = "format", values[n++] = "kiln-checkpoint/1";
    keys[n] = "step", values[n++] = step_s;
    keys[n] = "steps", values[n++] = steps_s;
    keys[n] = "task", values[n++] = kiln_task_name(r->task);
    keys[n] = "seed", values[n++] = seed_s;
    keys[n] = "threads", values[n++] = threads_s;
    keys[n] = "optimizer", values[n++] = optimizer_name(&r->model.train);
    keys[n] = "data_state", values[n++] = data_state;
    keys[n] = "dims", values[n++] = dims;
    keys[n] = "batch", values[n++] = batch_s;
    keys[n] = "tokenizer", values[n++] = tok ? tok : "";
    if (labels) keys[n] = "labels", values[n++] = labels;
    keys[n] = "model", values[n++] = r->text;
    bool ok = tok && (r->task != KILN_TASK_CLASSIFY || labels);
    if (!ok) kiln_diags_add(d, r->save, 0, 0, NULL, "out of memory writing the checkpoint's metadata");
    const kiln_model *m = &r->model;
    ok = ok && ckpt_save(r->save, &m->graph, m->params, (uint32_t)m->n_params, r->c.param_offsets, r->params,
                         r->ts.states, r->ts.n_states, r->c.state_offsets, r->optim, keys, values, n, d);
    free(tok);
    free(labels);
    free(dims);
    return ok;
}

/* save(), and when it fails (disk full, permissions), what is kept and how to go on:
 * the previous checkpoint is untouched (kiln_tensor_file_write replaces it only by a
 * complete file) and the run stops, since going on would train steps it cannot keep. */
static bool save_or_explain(run *r, int64_t step, kiln_diags *d)
{
    if (save(r, step, d)) {
        r->saved_step = step;
        return true;
    }
    if (r->saved_step >= 0)
        kiln_diags_add(d, r->save, 0, 0, NULL, "step %lld was not saved; the checkpoint of step %lld is kept: free "
                       "space or fix the permissions, then continue with --resume %s", (long long)step,
                       (long long)r->saved_step, r->save);
    else
        kiln_diags_add(d, r->save, 0, 0, NULL, "step %lld was not saved (no earlier checkpoint of this run)",
                       (long long)step);
    return false;
}

/* Before the first step: the temporaries of killed saves go, and --log is opened (cut
 * back to the checkpoint's step on --resume). */
static bool prepare_files(run *r, kiln_diags *d)
{
    int stale = 0;
    if (r->save) stale += kiln_atomic_clean(r->save);
    if (r->resume && (!r->save || strcmp(r->resume, r->save) != 0)) stale += kiln_atomic_clean(r->resume);
    if (stale) printf("removed %d temporary file%s left by a killed save\n", stale, stale == 1 ? "" : "s");
    if (r->resume && r->save && strcmp(r->resume, r->save) == 0) r->saved_step = r->start;
    if (r->log_path && !(r->log = ckpt_log_open(r->log_path, r->resume ? r->start : -1, d))) return false;
    return true;
}

/* The loss over the first --val-batches global batches of --val. Under N ranks, rank 0
 * validates alone with its per-rank batch B, so it runs N·K batches of B: the N·B·K
 * examples one rank with batch N·B validates on (batch losses are weighted by their
 * counted targets, so the grouping does not change the mean; docs/distributed.md). */
static bool validate(run *r, double *val_loss, kiln_diags *d)
{
    kiln_batcher_rewind(&r->val_bt);
    eval_result er;
    int64_t ranks = r->dp.ds.size > 1 ? r->dp.ds.size : 1;
    int64_t batches = r->val_batches > INT64_MAX / ranks ? 0 : r->val_batches * ranks; /* 0: the whole file */
    if (!evaluator_run(&r->ev, r->params, &r->val_bt, batches, &er, d)) return false;
    *val_loss = er.loss;
    return true;
}

/* What a failed step means (the blobs are unchanged: see codegen.h). */
static void step_failed(run *r, int64_t step, int rc, kiln_diags *d)
{
    kiln_diags_add(d, r->data, 0, 0, NULL, "step %lld: %s", (long long)step,
                   rc == KILN_RC_INDEX_RANGE    ? "a token id is out of range of the model's embedding"
                   : rc == KILN_RC_TARGET_RANGE ? "a target is out of range of the model's classes"
                                                : "the compiled training step failed");
}

/* One data-parallel step: every rank leaves the loop at the step they agree on. */
static void dist_step(run *r, int64_t step, float lr, float *loss, ffi_arg *rc)
{
    int stop = interrupted;
    *rc = (ffi_arg)dp_run(&r->dp, step, r->params, r->optim, r->workspace, &r->feed, lr, loss, &stop);
    r->dist_stop = stop;
    if (stop) interrupted = stop;
}

/* Data-parallel start-up check: what must be equal on every rank (dp_check_same). The
 * dims are the ones the step was compiled with (after -D, --batch, the model's defaults
 * and resume_shape), not the -D flags as typed: -D T=16 -D B=4 and -D B=4 -D T=16, or a
 * -D equal to the model's default, compile the same step. */
static bool dist_same(run *r, kiln_diags *d)
{
    char *dims = ckpt_dims_format(&r->model), stages[256];
    size_t cap = strlen(dims) + 2 * sizeof stages + 512;
    char *settings = malloc(cap);
    KILN_ASSERT(settings != NULL);
    int n = snprintf(settings, cap,
                     "steps %lld batch %lld seed %lld task %s start %lld stop %lld ckpt %d nonfinite %s dims %s off",
                     (long long)r->steps, (long long)r->feed.batch, (long long)r->seed, kiln_task_name(r->task),
                     (long long)r->start, (long long)r->stop_at, r->checkpoint, nonfinite_mode_name(r->on_nonfinite),
                     dims);
    /* --disable-pass: other kernels round differently, and the ranks' parameters would
     * drift apart (verify only checks: it may differ) */
    kiln_pass_list(stages, sizeof stages, true, ", ");
    for (char *name = strtok(stages, ", "); name; name = strtok(NULL, ", "))
        if (strcmp(name, "verify") != 0 && kiln_pass_disabled(&cli_pipeline, name))
            n += snprintf(settings + n, cap - (size_t)n, " %s", name);
    bool ok = dp_check_same(&r->dp, r->text, r->text_len, settings, &r->ds, r->params, r->c.params_bytes, r->optim,
                            r->dp.area.grad_offset ? r->dp.area.grad_offset : r->c.optim_bytes, d);
    free(settings);
    free(dims);
    return ok;
}

static int train_loop(run *r, kiln_diags *d)
{
    const kiln_model *m = &r->model;
    kiln_lr_schedule sched = {m->train.schedule, m->train.lr, m->train.min_lr, m->train.warmup_steps, r->steps};
    /* int NAME_train_step(params, optim, workspace, inputs…, float lr, float *loss) */
    uint32_t n_args = r->c.n_args;
    ffi_type **types = calloc(n_args, sizeof *types);
    void **args = calloc(n_args, sizeof *args), **ptrs = calloc(n_args, sizeof *ptrs);
    KILN_ASSERT(types && args && ptrs);
    float lr = 0, loss = 0;
    uint32_t k = 0;
    args[k++] = r->params;
    args[k++] = r->optim;
    args[k++] = r->workspace;
    for (int i = 0; i < m->n_inputs; i++) args[k++] = r->feed.model_bufs[i];
    uint32_t lr_arg = k++;
    args[k++] = &loss;
    if (r->guard.n) args[k++] = r->guard.sums; /* output "nonfinite" */
    KILN_ASSERT(k == n_args);
    for (uint32_t i = 0; i < n_args; i++) {
        types[i] = i == lr_arg ? &ffi_type_float : &ffi_type_pointer;
        ptrs[i] = i == lr_arg ? (void *)&lr : (void *)&args[i];
    }
    ffi_cif cif;
    KILN_ASSERT(ffi_prep_cif(&cif, FFI_DEFAULT_ABI, n_args, &ffi_type_sint, types) == FFI_OK);

    if (!prepare_files(r, d)) {
        free(types), free(args), free(ptrs);
        return EXIT_FAIL;
    }
    interrupted = 0;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    int64_t end = r->stop_at > 0 && r->stop_at < r->steps ? r->stop_at : r->steps;
    progress pr;
    progress_start(&pr, r->log, r->start, r->steps, end, r->log_every);
    if (r->start > 0) printf("resuming at step %lld of %lld\n", (long long)r->start, (long long)r->steps);
    double train_seconds = 0, first_loss = NAN, recent[10];
    int64_t step = r->start, good = 0; /* good: steps not skipped */
    int64_t saved_at = -1;             /* the step this run last saved */
    int status = EXIT_OK;
    while (step < end && !(r->dp.ds.size > 1 ? r->dist_stop : interrupted)) {
        double t0 = progress_now();
        dp_feed(&r->dp, &r->feed, &r->bt); /* one process: feed_next */
        lr = (float)kiln_schedule_lr(&sched, step);
        ffi_arg rc = 0;
        if (r->dp.ds.size > 1) dist_step(r, step, lr, &loss, &rc);
        else ffi_call(&cif, FFI_FN(r->c.entry), &rc, ptrs);
        if ((int)rc != KILN_RC_OK) {
            progress_end(&pr);
            step_failed(r, step + 1, (int)rc, d);
            status = EXIT_FAIL;
            break;
        }
        train_seconds += progress_now() - t0;
        step++;
        /* a NaN/Inf step changed nothing (nonfinite.c): skip it, or stop */
        char bad[200];
        bool finite = r->dp.ds.size > 1 ? dp_step_ok(&r->dp, loss, bad, sizeof bad)
                                        : nonfinite_step_ok(&r->guard, &m->graph, loss, bad, sizeof bad);
        bool skip = !finite && r->on_nonfinite == NONFINITE_SKIP;
        if (!finite && !skip) {
            progress_end(&pr);
            char kept[160] = "";
            if (saved_at >= 0) snprintf(kept, sizeof kept, "; %s keeps step %lld", r->save, (long long)saved_at);
            /* stop: the guard kept the blobs as they were; off: no guard, the update went in */
            if (r->on_nonfinite == NONFINITE_OFF)
                kiln_diags_add(d, NULL, 0, 0, "train",
                               "step %lld: %s; stopped after applying the step, so the parameters may hold NaN or "
                               "Inf now (--on-nonfinite off checks nothing before the update: leave it out to keep "
                               "them unchanged, lower the learning rate or set train.grad_clip)%s",
                               (long long)step, bad, kept);
            else
                kiln_diags_add(d, NULL, 0, 0, "train",
                               "step %lld: %s; stopped without applying the step (lower the learning rate, set "
                               "train.grad_clip, or pass --on-nonfinite skip)%s",
                               (long long)step, bad, kept);
            status = EXIT_FAIL;
            break;
        }
        if (skip) {
            r->skipped++;
            if (!pr.tty) printf("step %lld: skipped (%s)\n", (long long)step, bad);
        } else {
            if (isnan(first_loss)) first_loss = loss;
            recent[good++ % 10] = loss; /* the last ten, for the summary */
        }
        double tps = (double)r->feed.tokens_per_batch * (double)(step - r->start) / train_seconds;
        double val_loss = -1;
        bool last = step == end;
        if (r->val && (step % r->val_every == 0 || last)) {
            if (!validate(r, &val_loss, d)) {
                status = EXIT_FAIL;
                break;
            }
            /* off a terminal the plain progress line of this step carries val_loss instead */
            if (!progress_plain_due(&pr, step)) {
                if (pr.tty) fprintf(stderr, "\r\033[K");
                printf("step %lld: loss %.4f  val_loss %.4f\n", (long long)step, loss, val_loss);
                fflush(stdout);
            }
        }
        if (skip) nonfinite_log(r->log, step, bad);
        else progress_step(&pr, step, loss, lr, tps, val_loss);
        if (r->save && !last && step % r->save_every == 0) {
            if (!save_or_explain(r, step, d)) {
                status = EXIT_FAIL;
                break;
            }
            saved_at = step;
        }
    }
    progress_end(&pr);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

    if (status == EXIT_OK && r->save) {
        if (!save_or_explain(r, step, d)) status = EXIT_FAIL;
        else if (!interrupted) printf("saved %s at step %lld\n", r->save, (long long)step);
    }
    int64_t n_recent = good < 10 ? good : 10;
    double mean_recent = 0;
    for (int64_t i = 0; i < n_recent; i++) mean_recent += recent[i] / (double)n_recent;
    if (good > 0 && status == EXIT_OK)
        printf("trained steps %lld–%lld in %.1f s (%.3f s/step, %.0f tokens/s): "
               "loss %.4f → %.4f (mean of the last %lld)\n",
               (long long)r->start + 1, (long long)step, train_seconds, train_seconds / (double)(step - r->start),
               (double)r->feed.tokens_per_batch * (double)(step - r->start) / train_seconds, first_loss,
               mean_recent, (long long)n_recent);
    if (r->skipped)
        printf("skipped %lld step%s with a non-finite loss or gradient (--on-nonfinite skip)\n",
               (long long)r->skipped, r->skipped == 1 ? "" : "s");
    if (interrupted && status == EXIT_OK) {
        /* not an error: the user asked for it, and what --save promised was kept. Rank 0
         * alone reports it (it alone saves: ranks above 0 have no --save) */
        if (r->dp.ds.rank == 0)
            fprintf(stderr, "kiln train: interrupted at step %lld of %lld; %s%s\n", (long long)step,
                    (long long)r->steps, r->save ? "checkpoint saved to " : "nothing kept (no --save)",
                    r->save ? r->save : "");
        if (r->save) fprintf(stderr, "  continue with: --resume %s\n", r->save);
        status = 128 + interrupted;
    }
    free(types);
    free(args);
    free(ptrs);
    return status;
}

int cmd_train(int argc, char **argv, kiln_diags *diags)
{
    run r;
    memset(&r, 0, sizeof r);
    const char *task = "clm", *on_nonfinite = "stop";
    bool steps_given = false, batch_given = false, seed_given = false, task_given = false, dist_serial = false;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);  /* default: the online CPUs, at most KILN_MAX_THREADS */
    r.threads = cpus < 1 ? 1 : cpus < KILN_MAX_THREADS ? cpus : KILN_MAX_THREADS;
    r.val_batches = 20;
    r.dist_timeout = 600;
    cli_flag flags[] = {
        CLI_PIPELINE_FLAGS,
        LIMITS_FLAG,
        {"--data", CLI_STR, &r.data, NULL,
         "the training data file (required)"},
        {"--val", CLI_STR, &r.val, NULL,
         "a validation file: val_loss every --val-every steps and at the end (default: none)"},
        {"--task", CLI_STR, &task, &task_given,
         "which inputs the data fills: clm, mlm, classify, pairs, seq2seq, span (default: clm, or the checkpoint's)"},
        {"--steps", CLI_INT, &r.steps, &steps_given,
         "the run's length and the schedule's horizon (default: train.steps, or the checkpoint's)"},
        {"--batch", CLI_INT, &r.batch, &batch_given,
         "binds the batch dim, the name leading every input's shape (default: train.batch, else that dim's value)"},
        {"--init", CLI_STR, &r.init, NULL,
         "start from the parameters this file has, initialise the rest (default: fresh weights)"},
        {"--save", CLI_STR, &r.save, NULL,
         "checkpoint every --save-every steps, at the end and on Ctrl-C (default: none, nothing is kept)"},
        {"--resume", CLI_STR, &r.resume, NULL,
         "continue a run exactly where this checkpoint left it (default: start afresh)"},
        {"--log", CLI_STR, &r.log_path, NULL,
         "write one JSON line of metrics per step, for kiln plot; on --resume cut back to its step and appended to (default: none)"},
        {"--log-every", CLI_INT, &r.log_every, NULL,
         "off a terminal, print a progress line every N steps, and at least once a minute (default: steps/10)"},
        THREADS_FLAG(r.threads,
                     "threads for every kernel with enough work; same bits for any N (default: online CPUs, at most 8)"),
        {"--seed", CLI_INT, &r.seed, &seed_given,
         "seeds fresh parameters, data order and dropout; a resume must keep it (default: init.seed, or the checkpoint's)"},
        {"--val-every", CLI_INT, &r.val_every, NULL,
         "validation interval in steps (default: steps/10)"},
        {"--val-batches", CLI_INT, &r.val_batches, NULL,
         "batches per validation (of the global batch under mpirun), from the file's start each time (default: 20)"},
        {"--save-every", CLI_INT, &r.save_every, NULL,
         "checkpoint interval in steps (default: steps/10)"},
        {"--stop-at", CLI_INT, &r.stop_at, NULL,
         "end this run after step S as if it were the last; the schedule still runs to --steps (default: off)"},
        {"--checkpoint-activations", CLI_BOOL, &r.checkpoint, NULL,
         "recompute block activations in the backward pass: less memory, same bits (default: off)"},
        {"--distributed", CLI_BOOL, &r.distributed, NULL,
         "require data-parallel training under mpirun; fail if kiln has no MPI (default: on by itself under mpirun)"},
        {"--dist-timeout", CLI_INT, &r.dist_timeout, NULL,
         "seconds a rank waits for the others (start-up, each step, the end) before stopping the job (default: 600)"},
        {"--dist-serial", CLI_BOOL, &dist_serial, NULL,
         "under mpirun, average gradients only after the whole backward pass, not overlapped with it (default: off)"},
        {"--on-nonfinite", CLI_STR, &on_nonfinite, NULL,
         "a step with a NaN/Inf loss or gradient changes nothing; then stop, or skip it and go on; off: no check "
         "compiled, stop after such a step (default: stop)"},
    };
    cli_args a;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &a, diags)) return EXIT_USAGE;
    if (!cli_pipeline_valid(diags) || !limits_valid(diags)) return EXIT_USAGE;
    if (a.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "train", "expects one MODEL.json");
    if (!r.data) kiln_diags_add(diags, NULL, 0, 0, "train", "--data PATH is required");
    if (!kiln_task_parse(task, &r.task))
        kiln_diags_add(diags, NULL, 0, 0, "--task", "expected clm, mlm, classify, pairs, seq2seq or span, got '%s'",
                       task);
    if (r.init && r.resume)
        kiln_diags_add(diags, NULL, 0, 0, "--init",
                       "cannot be combined with --resume (a checkpoint has every parameter)");
    if (steps_given && r.steps < 1) kiln_diags_add(diags, NULL, 0, 0, "--steps", "expected at least 1");
    if (batch_given && r.batch < 1) kiln_diags_add(diags, NULL, 0, 0, "--batch", "expected at least 1");
    if (r.stop_at < 0) kiln_diags_add(diags, NULL, 0, 0, "--stop-at", "expected a step number");
    cli_threads_check(r.threads, diags);
    if (r.val_batches < 1) kiln_diags_add(diags, NULL, 0, 0, "--val-batches", "expected at least 1");
    if (r.val_every < 0 || r.save_every < 0 || r.log_every < 0)
        kiln_diags_add(diags, NULL, 0, 0,
                       r.val_every < 0 ? "--val-every" : r.save_every < 0 ? "--save-every" : "--log-every",
                       "expected 0 or more");
    if (r.dist_timeout < 1) kiln_diags_add(diags, NULL, 0, 0, "--dist-timeout", "expected at least 1 second");
    if (!nonfinite_parse_mode(on_nonfinite, &r.on_nonfinite))
        kiln_diags_add(diags, NULL, 0, 0, "--on-nonfinite", "expected stop, skip or off, got '%s'", on_nonfinite);
    /* --save may replace the checkpoint it resumed from: the usual way to train in chunks */
    const cli_file files[] = {{"MODEL.json", a.positional[0], false, NULL},
                              {"--data", r.data, false, NULL},
                              {"--val", r.val, false, NULL},
                              {"--init", r.init, false, "--save"}, /* fine-tuning in place: saves are atomic */
                              {"--resume", r.resume, false, "--save"},
                              {"--save", r.save, true, NULL},
                              {"--log", r.log_path, true, NULL}};
    cli_files_distinct(files, 7, diags);
    if (diags->n) return EXIT_USAGE;
    r.model_path = a.positional[0];
    r.saved_step = -1;
    if (!dp_init(&r.dp, r.distributed, (double)r.dist_timeout, diags)) return EXIT_FAIL;
    r.dp.serial = dist_serial;

    int status = EXIT_FAIL;
    kiln_rt_error err = {{0}};
    if (!(r.text = train_read_model_text(r.model_path, &r.text_len, diags))) goto done;
    r.batch_dim = train_batch_dim(r.text, r.text_len);
    if (r.resume && kiln_tensor_file_read(r.resume, &r.ckpt, &err) != 0) {
        bind_rt_error(diags, r.resume, &err);
        goto done;
    }
    if (r.resume && !resume_shape(&r, &a, batch_given, diags)) goto done;
    if (r.init && kiln_tensor_file_read(r.init, &r.init_file, &err) != 0) {
        bind_rt_error(diags, r.init, &err);
        goto done;
    }
    if (!settle(&r, &a, steps_given, batch_given, seed_given, task_given, diags)) goto done;
    if (r.dp.ds.rank > 0) r.save = r.log_path = r.val = NULL; /* rank 0 alone writes and validates */
    if (!load_data(&r, diags)) goto done;
    if (!build_step(&r, &a, diags) || !fill_blobs(&r, diags) || !dist_same(&r, diags)) goto done;
    if (r.start >= r.steps) {
        printf("the checkpoint is at step %lld of %lld: nothing to do (give a larger --steps to continue)\n",
               (long long)r.start, (long long)r.steps);
        status = EXIT_OK;
        goto done;
    }
    fflush(stdout);
    status = train_loop(&r, diags);
done:
    run_free(&r);
    /* ranks that agree (a finished or interrupted run) leave MPI together; a failed one
     * exits at once and the launcher ends the job, as when a rank does not arrive */
    if (!dp_free(&r.dp, status == EXIT_OK || status >= 128, diags)) status = EXIT_FAIL;
    return status;
}
