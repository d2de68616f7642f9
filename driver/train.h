/* train.h — what `kiln train` and `kiln eval` share, one section per file:
 *
 *   trainstep.c   a model file → the training-step graph (forward, autodiff, optimizer)
 *                 and the evaluation graph (forward + loss)
 *   feed.c        a task's batches → the model's input buffers
 *   checkpoint.c  parameter and optimizer blobs ↔ safetensors checkpoints
 *   evaluate.c    a compiled forward+loss entry run over a batcher (eval, validation)
 *   progress.c    the terminal progress bar and the --log metrics lines
 *   trainsplit.c  the step split as gradients + update (NAME_train_grad, NAME_train_apply)
 *   dataparallel.c one rank's step among N: shard, gradients, average, update
 *   nonfinite.c   the guard that keeps a NaN/Inf step out of the parameters
 *
 * docs/training.md describes the behaviour; SPEC sections 2–6 are the contract. */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "codegen.h"
#include "data.h"
#include "driver.h"
#include "distributed.h"
#include "pointer_call.h"

/* ---- trainstep.c ------------------------------------------------------------------------- */

/* The model file's text (read once: it is also stored in checkpoints). NULL with a
 * diagnostic on failure; free() it. */
char *train_read_model_text(const char *path, size_t *len, kiln_diags *d);

/* The name of the dim that leads the model's inputs (the batch dim), or NULL when the
 * inputs start with a number or disagree (then nothing can rebind it). Arena-free:
 * the result is a malloc'd copy. */
char *train_batch_dim(const char *text, size_t len);

/* Loads the model with the user's -D definitions and, when batch > 0, its batch dim
 * bound to batch (after them, so it wins). */
bool train_load_model(kiln_model *m, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                      int n_defines, const char *batch_dim, int64_t batch, kiln_diags *d);
/* For the commands that read a data file with trained weights (eval, embed): the model's
 * tokenizer, the batch to bind when --batch was not given — train.batch, unless a -D
 * binds the batch dim (then 0: the model's own binding) — and, when max_id is not NULL,
 * train_data_max_id. */
bool train_model_defaults(const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                          int n_defines, const char *batch_dim, bool batch_given, int64_t *batch,
                          kiln_tokenizer_config *tc, int64_t *max_id, kiln_diags *d);

typedef struct train_step {
    uint32_t lr;           /* the "lr" input */
    uint32_t *states;      /* STATE nodes in optimizer-blob order (malloc'd) */
    uint32_t n_states;
    uint32_t n_trained;    /* parameters the optimizer updates */
    uint32_t step_state;   /* optim.step: also seeds dropout (lower_dropout.c) */
    uint64_t dropout_seed; /* the run's --seed, set by the caller */
    uint32_t n_forward;    /* the forward graph and loss: node ids below it */
    uint32_t recompute_from; /* checkpointed: n_forward (the compile request's), else 0 */
    uint32_t *grads;       /* per parameter (m->params order): its gradient node (malloc'd) */
} train_step;

/* Turns m's graph into one training step: its outputs become just "loss", then the
 * pipeline's training stages (kiln_pipeline_train) append the gradients of the loss
 * w.r.t. every parameter (autodiff) and the optimizer update from m->train (optimizer);
 * prints their --dump-after text. */
bool train_step_build(kiln_model *m, train_step *ts, kiln_diags *d);
void train_step_free(train_step *ts);
/* --checkpoint-activations: rebuilds the step so that each repeated block's backward pass
 * recomputes the block's activations (kiln_checkpoint, passes/checkpoint.c) and maps the
 * ids ts keeps; m's inputs and parameters keep theirs. *res says what was found. */
bool train_step_checkpoint(kiln_model *m, train_step *ts, kiln_checkpoint_result *res, kiln_diags *d);
/* Keeps only the loss as m's output; an error when the model has no losses. */
bool train_only_loss(kiln_model *m, kiln_diags *d);
/* The request compiling it: int NAME_train_step(params, optim, workspace, inputs…, lr, loss). */
kiln_compile_request train_step_request(const kiln_model *m, const train_step *ts);
/* FLOPs of one training step: every node the loss or an update needs. */
int64_t train_step_flops(const kiln_graph *g);

/* The optimizer settings of a model's train section; *groups is malloc'd (free it). */
kiln_optim_config train_optim_config(const kiln_train_config *t, kiln_optim_group **groups);

/* ---- trainsplit.c: the step as gradient + update (data-parallel training) ------------------ */

typedef struct train_split {
    kiln_model *grad_model, *apply_model; /* borrowed: loaded by the caller, rewritten here */
    bool *trained;             /* per parameter: has a gradient in the blob's gradient area */
    uint32_t n_grads;          /* gradient tensors (trained parameters) */
    uint32_t n_optim_states;   /* the optimizer's states, as the fused step has them */
    uint32_t *grad_states;     /* gradient graph: placeholders of the optimizer's states, then grad.… */
    uint32_t grad_step;        /* its optim.step (dropout's seed) */
    uint32_t *apply_states;    /* update graph: optim.step, optim.…, then grad.… */
    uint32_t lr;               /* the update graph's "lr" input */
    uint64_t dropout_seed;     /* the run's --seed, set by the caller */
    uint32_t n_forward;        /* the gradient graph's forward nodes */
    uint32_t recompute_from;   /* activation checkpointing: as train_step.recompute_from */
} train_split;

/* Where the gradients are in the split optimizer blob (bytes). */
typedef struct train_split_area {
    int64_t grad_offset, grad_bytes; /* [offset, offset + bytes) to the blob's end: floats, zero padding between tensors */
    int64_t optim_bytes;             /* the whole blob */
} train_split_area;

/* Builds both graphs from two loads of the same model (checkpoint: the gradient graph
 * recomputes block activations, as --checkpoint-activations). */
bool train_split_build(kiln_model *grad_model, kiln_model *apply_model, bool checkpoint, train_split *s,
                       kiln_diags *d);
void train_split_free(train_split *s);
/* int NAME_train_grad(const float *params, float *optim, void *workspace, inputs…, float *loss) */
kiln_compile_request train_split_grad_request(const train_split *s);
/* int NAME_train_apply(float *params, float *optim, void *workspace, float lr) */
kiln_compile_request train_split_apply_request(const train_split *s);
/* After compiling both: checks that they lay out the blobs alike and says where the
 * gradients are; false = an internal error. */
bool train_split_check(const train_split *s, const kiln_compiled *grad, const kiln_compiled *apply,
                       train_split_area *out);

/* Turns m's graph into the evaluation graph: output 0 is "loss"; when a cross_entropy
 * takes the input "labels" (classify), output 1 is "logits", its first operand. */
bool eval_graph_build(kiln_model *m, kiln_diags *d);

/* Whether a task input holds token ids (tokens…, src, tgt_in), not masks or targets. */
bool train_is_token_input(const char *name);

/* The ignore_index of the model's first cross_entropy (−100 when it has none). */
int32_t train_ignore_index(const kiln_model *m);

/* The ids a .bin token file may hold for this model (kiln_data_options.max_id): the
 * fewest rows of an embedding (gather) reading a token input and classes of a
 * cross_entropy reading the targets, since clm and mlm feed the file's ids to both;
 * 0 when no such node reads them (the tokenizer's vocabulary is used then). */
int64_t train_data_max_id(const kiln_model *m);

/* Checks, before anything runs, that the ids the task will feed fit the model: the rows
 * of every embedding (gather) and the classes of every cross_entropy that read a task
 * input. One diagnostic per problem. */
bool train_check_vocab(const kiln_model *m, kiln_task task, const kiln_tokenizer *tok, const kiln_labels *labels,
                       kiln_diags *d);

/* ---- feed.c ------------------------------------------------------------------------------ */

/* The buffers between a batcher and a compiled entry. The task's inputs are matched to
 * the model's inputs by name; an f32 model input gets the batcher's 0/1 or ids
 * converted; a task input the model lacks is filled and ignored; a model input the task
 * does not fill is an error. */
typedef struct feed {
    kiln_task task;
    int64_t batch;
    int n;                                      /* task inputs */
    const char *const *names;
    int32_t *bufs[KILN_TASK_MAX_INPUTS];        /* what the batcher fills */
    int64_t cols[KILN_TASK_MAX_INPUTS];
    int model_index[KILN_TASK_MAX_INPUTS];      /* into m->inputs, or −1 */
    int n_model;
    void **model_bufs;                          /* per model input: the entry's argument */
    bool *converted;                            /* per model input: an f32 copy we own */
    int64_t tokens_per_batch;                   /* elements of the first task input */
} feed;

bool feed_init(feed *f, const kiln_model *m, kiln_task task, kiln_diags *d);
void feed_free(feed *f);
/* The next batch into the buffers; returns the rows holding examples (kiln_batcher_next). */
int64_t feed_next(feed *f, kiln_batcher *bt);
/* How much the batch counts in an average of per-batch losses: its targets (or labels)
 * other than ignore_index, else its rows with examples. */
int64_t feed_weight(const feed *f, int64_t rows, int32_t ignore_index);
/* The task input called name, or NULL. */
const int32_t *feed_task_buf(const feed *f, const char *name);
/* A warning on stderr ("kiln COMMAND: warning: …") when the batcher leaves span examples
 * out (their answers lie past the window): the loss is then over the others only. */
void feed_warn_skipped(const char *command, const kiln_batcher *bt, const kiln_dataset *ds);

/* ---- dataparallel.c: the step of one rank among N (mpirun; docs/distributed.md) ----------- */

typedef struct dp_step {
    dist ds;                    /* rank and size (distributed.c); size 1 = the fused step */
    kiln_model grad_model, apply_model;
    bool have_models, have_split;
    train_split split;
    kiln_compiled grad;         /* NAME_train_grad; the caller's kiln_compiled holds NAME_train_apply */
    train_split_area area;
    pointer_call grad_call;
    void *apply_entry;
    ffi_cif apply_cif;
    ffi_type *apply_types[4];
    int32_t *skip_bufs[KILN_TASK_MAX_INPUTS]; /* the other ranks' rows, drawn and dropped */
    /* the average overlapped with the backward pass: NAME_train_grad calls back as each
     * gradient is final (codegen.h ready states); a bucket starts once all of its are */
    bool serial;                /* --dist-serial: start the buckets only after the backward pass */
    bool check_nonfinite;       /* --on-nonfinite stop or skip: the guard below */
    int64_t *grad_at, *grad_floats; /* per gradient: its first float in the area, its floats */
    const char **grad_names;    /* per gradient: its parameter's name */
    int32_t *announce;          /* gradients in the order the entry announces them (--dist-serial) */
    int32_t *bucket_of;         /* per gradient: its bucket (in start order) */
    int *bucket_grads, *remaining; /* per bucket: its gradients; this step, those not yet final */
    int64_t *bucket_lo, *bucket_count; /* per bucket, in start order: its floats in the area */
    int n_buckets;
    dist_average_op avg;
    float *grad_area;           /* this step's gradient area (in the optimizer blob) */
    int32_t bad_grad;           /* this step: the first gradient (area order) holding NaN/Inf here, or −1 */
    int nonfinite;              /* after dp_run: the ranks' agreed guard code (0: all finite) */
    double wait_seconds;        /* in dist_step_status (mostly waiting for the slowest rank), summed */
    double average_seconds;     /* waiting for the gradient average after the step's status, summed */
    int64_t comm_steps;
} dp_step;

/* Joins the MPI job if there is one (dist_init); ranks above 0 send stdout to /dev/null. */
bool dp_init(dp_step *p, bool required, double timeout, kiln_diags *d);
/* Prints the time spent in collectives (rank 0), ends MPI (dist_finalize), frees
 * everything. False (a diagnostic) when ok and a rank did not reach the end in time. */
bool dp_free(dp_step *p, bool ok, kiln_diags *d);
/* Builds and compiles the split step from the model's text (as build_step loads it):
 * NAME_train_grad kept here, NAME_train_apply into *apply with the workspace size of
 * both and the optimizer blob of the split layout (the fused step's, then the
 * gradients), so the caller's blobs, checkpoints and restore work unchanged. Scales
 * f->tokens_per_batch to the global batch (progress reports). */
bool dp_compile(dp_step *p, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                int n_defines, const char *batch_dim, int64_t batch, bool checkpoint, uint64_t seed, feed *f,
                kiln_compiled *apply, kiln_diags *d);
/* The next batch of this rank: its shard of the next global batch. */
void dp_feed(dp_step *p, feed *f, kiln_batcher *bt);
/* One step: gradients (their average started as each bucket's are final), status (mean
 * loss into *loss; *stop: any rank's signal; any rank's non-finite gradient), the end of
 * the average, update — skipped when the guard (check_nonfinite) found a NaN or Inf on
 * any rank, or the mean loss is not finite. Returns the step's status, the same on every
 * rank (non-zero: no update made). */
int dp_run(dp_step *p, int64_t step, void *params, void *optim, void *workspace, const feed *f, float lr,
           float *loss, int *stop);
/* After dp_run: whether the step was finite everywhere (and so applied, with the guard
 * on); else false with `what` naming the first non-finite gradient and/or the loss, as
 * nonfinite_step_ok does. The same answer on every rank. */
bool dp_step_ok(const dp_step *p, float loss, char *what, size_t cap);
/* The start-up check: the model text, the settings string, the data and the starting
 * blobs must be the same on every rank. */
bool dp_check_same(const dp_step *p, const char *text, size_t len, const char *settings, const kiln_dataset *ds,
                   const void *params, int64_t params_bytes, const void *optim, int64_t optim_bytes, kiln_diags *d);

/* ---- checkpoint.c ------------------------------------------------------------------------ */

/* Copies the tensors of f named like the nodes into the blob, checking shapes. With
 * found == NULL a missing tensor is an error; otherwise found[i] says whether node i
 * was in the file. */
bool ckpt_restore(const kiln_graph *g, const uint32_t *nodes, uint32_t n, const int64_t *offsets, void *blob,
                  const kiln_tensor_file *f, const char *path, bool *found, kiln_diags *d);

/* Writes parameters, optimizer state and metadata atomically. */
bool ckpt_save(const char *path, const kiln_graph *g, const uint32_t *params, uint32_t n_params,
               const int64_t *param_offsets, void *params_blob, const uint32_t *states, uint32_t n_states,
               const int64_t *state_offsets, void *optim_blob, const char *const *keys, const char *const *values,
               int n_meta, kiln_diags *d);

/* The model's bound dims as checkpoint metadata: "B=8,T=32" (malloc'd). */
char *ckpt_dims_format(const kiln_model *m);
/* Parses that text in place into at most cap bindings naming into it; the count, or −1
 * when it is malformed. */
int ckpt_dims_parse(char *text, kiln_dim_binding *out, int cap);

/* Opens the --log file: truncated for a fresh run (resume_step < 0); for a run resumed
 * at resume_step, kept up to that step's line and appended to, so that lines a killed
 * run wrote after its last checkpoint, and a torn last line, are dropped. NULL with a
 * diagnostic on failure. */
FILE *ckpt_log_open(const char *path, int64_t resume_step, kiln_diags *d);

/* The tokenizer stored in a checkpoint's metadata: true with *t set when there is one,
 * false when there is none (nothing added) or it is bad (a diagnostic added). */
bool ckpt_tokenizer(const kiln_tensor_file *f, const char *path, kiln_tokenizer *t, kiln_diags *d);

/* The tokenizer to read or write text with a trained model: the checkpoint's, else the
 * byte tokenizer when the model's (kind) needs no training data. false with a diagnostic
 * when neither applies; `command` ("generate", "evaluate") completes its advice. */
bool ckpt_or_model_tokenizer(const kiln_tensor_file *f, const char *path, kiln_tokenizer_kind kind,
                             const char *command, kiln_tokenizer *t, kiln_diags *d);

/* ---- evaluate.c -------------------------------------------------------------------------- */

typedef struct evaluator {
    bool loaded;
    kiln_model model;          /* the evaluation graph */
    kiln_compiled c;           /* NAME_forward: (params, workspace, inputs…, loss[, logits]) */
    void *workspace;
    int64_t workspace_bytes;   /* allocated: the larger of the two entries' */
    feed feed;
    int32_t ignore_index;
    float *logits;             /* output 1, when the graph has it */
    pointer_call call;         /* the entry's prepared libffi call */
    /* A pass's partial last batch of R rows (evaluate.c): NAME_forward compiled again with
     * the batch dim bound to R, run over the first R rows of the same buffers. */
    char *text, *path, *batch_dim;  /* what the model is reloaded from (copies) */
    size_t len;
    kiln_dim_binding *defines;      /* copies, names included */
    int n_defines;
    int64_t tail_rows;         /* the rows `tail` is compiled for; 0 = none */
    bool tail_loaded;
    kiln_model tail_model;
    kiln_compiled tail;
    pointer_call tail_call;
    bool tail_padded;          /* no tail entry: the full entry, whose loss provably ignores filler */
} evaluator;

typedef struct eval_result {
    double loss;               /* weighted mean over the batches */
    bool has_accuracy;
    double accuracy;           /* classify: argmax(logits) == label over real rows */
    int64_t batches, examples;
} eval_result;

/* After the last compile of a run: returns glibc's free heap and drops the resident pages
 * of LLVM's machine code (clean text of the shared library, faulted back in if LLVM runs
 * again), so the blobs allocated next do not add to them (train_memory.c). Returns the
 * bytes of text mappings released. */
long train_release_compiler_memory(void);

bool evaluator_init(evaluator *e, const char *text, size_t len, const char *path, const kiln_dim_binding *defines,
                    int n_defines, const char *batch_dim, int64_t batch, kiln_task task, kiln_diags *d);
void evaluator_free(evaluator *e);
/* Compiles, before the blobs are allocated, what the partial last batch of a pass of up
 * to max_batches batches (0 = all) from the start of bt will run (evaluator_run would do
 * it when that batch comes). Nothing when the pass fills its batches; false with a
 * diagnostic when that batch cannot be evaluated exactly (evaluate.c). */
bool evaluator_prepare(evaluator *e, const kiln_batcher *bt, int64_t max_batches, kiln_diags *d);
/* Runs up to max_batches batches (0 = the whole pass) from the batcher's current
 * position over the parameter blob laid out as e->c.param_offsets says. A batch of R
 * real rows counts as the model's loss over those R examples alone, weighted by its
 * targets (feed_weight). */
bool evaluator_run(evaluator *e, void *params_blob, kiln_batcher *bt, int64_t max_batches, eval_result *r,
                   kiln_diags *d);

/* ---- progress.c -------------------------------------------------------------------------- */

typedef struct progress {
    bool tty;                  /* stderr is a terminal: draw the bar */
    bool plain;                /* stdout or stderr is not a terminal: print plain lines */
    FILE *log;                 /* --log, or NULL */
    int64_t total, first;      /* steps: the schedule's last, and the step this run started from */
    int64_t end;               /* the step this run stops after (--stop-at, else total) */
    int64_t every;             /* plain lines: every this many steps */
    double t_start, t_drawn;   /* seconds */
    double t_plain;            /* when the last plain line was printed */
} progress;

double progress_now(void);
void progress_start(progress *p, FILE *log, int64_t first, int64_t total, int64_t end, int64_t every);
/* Whether progress_step prints a plain line after step `step` (so the caller can leave
 * its val_loss to that line). */
bool progress_plain_due(const progress *p, int64_t step);
/* After step `step` (1-based count of steps done): redraws the bar (at most ~10 times
 * a second, and always on the last step), prints a plain line when due, and writes a
 * --log line; val_loss < 0 = none. */
void progress_step(progress *p, int64_t step, double loss, double lr, double tokens_per_s, double val_loss);
/* Ends the bar's line, if one is drawn. */
void progress_end(progress *p);

/* ---- nonfinite.c ------------------------------------------------------------------------- */

/* --on-nonfinite: what a step whose loss or a gradient is NaN or Inf does. With STOP and
 * SKIP the step changes neither parameters nor optimizer state (the guard below); OFF
 * compiles no guard (the step is applied, then the run stops on a non-finite loss). */
typedef enum nonfinite_mode { NONFINITE_STOP, NONFINITE_SKIP, NONFINITE_OFF } nonfinite_mode;

typedef struct nonfinite_guard {
    uint32_t n;          /* trained parameters checked */
    uint32_t *params;    /* their PARAM nodes, in the model's order (for names) */
    uint32_t output;     /* the graph output "nonfinite": [n] sums of squared gradients */
    float *sums;         /* its buffer, filled by each step (NULL when n == 0) */
} nonfinite_guard;

bool nonfinite_parse_mode(const char *s, nonfinite_mode *out);
const char *nonfinite_mode_name(nonfinite_mode mode);
/* Adds the check to a built training step (after train_step_build and, with
 * --checkpoint-activations, train_step_checkpoint): every update keeps the old value
 * unless the loss and all gradients are finite, and the graph gets the output
 * "nonfinite". */
bool nonfinite_guard_build(kiln_model *m, const train_step *ts, nonfinite_guard *gd, kiln_diags *d);
void nonfinite_guard_free(nonfinite_guard *gd);
/* After a step: true when the loss and every gradient were finite; else false with
 * `what` naming the loss or the first parameter (model order) whose gradient was not. */
bool nonfinite_step_ok(const nonfinite_guard *gd, const kiln_graph *g, float loss, char *what, size_t cap);
/* The --log line of a skipped step: {"step": N, "loss": null, "skipped": "WHAT"}. */
void nonfinite_log(FILE *log, int64_t step, const char *what);

#endif
