/* data.h — training data (SPEC sections 3–4): loading files into datasets, and
 * batchers that fill a model's i32 inputs for each task.
 *
 * A dataset is what one --data or --val file holds, tokenised once:
 *   clm, mlm       one token stream: a UTF-8 text file (tokenised by the tokenizer) or a
 *                  .bin file of little-endian uint16 token ids;
 *   classify       TSV lines  label<TAB>text
 *   pairs          TSV lines  text_a<TAB>text_b
 *   seq2seq        TSV lines  source<TAB>target
 *   span           TSV lines  context<TAB>question<TAB>answer  (answer inside context)
 * Files are read in blocks and lines have a length limit, so memory is bounded by the
 * tokens kept, whatever the file holds. Problems are diagnostics naming file:line.
 *
 * A batcher draws examples from a dataset and fills caller-provided buffers shaped as
 * the model's inputs. Its position is a kiln_batch_state, plain data that a checkpoint
 * keeps, so `--resume` continues with exactly the same batches. docs/data.md describes
 * every task's layout and the conventions chosen.
 */
#ifndef KILN_DATA_H
#define KILN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "kiln/rng.h"
#include "tokenizer.h"

typedef enum kiln_task {
    KILN_TASK_CLM,
    KILN_TASK_MLM,
    KILN_TASK_CLASSIFY,
    KILN_TASK_PAIRS,
    KILN_TASK_SEQ2SEQ,
    KILN_TASK_SPAN,
    KILN_N_TASKS
} kiln_task;

bool kiln_task_parse(const char *name, kiln_task *out); /* "clm", "mlm", … */
const char *kiln_task_name(kiln_task t);

/* The model inputs a task fills, in the order kiln_batcher_next takes their buffers,
 * with their ranks: 2 for (B, cols), 1 for (B). Returns how many (at most
 * KILN_TASK_MAX_INPUTS).
 *   clm, mlm   tokens targets            classify  tokens mask labels
 *   pairs      tokens_a mask_a tokens_b mask_b
 *   seq2seq    src src_mask tgt_in tgt_out
 *   span       tokens mask start end */
#define KILN_TASK_MAX_INPUTS 4
int kiln_task_inputs(kiln_task t, const char *const **names, const int **ranks);

/* ---- classes of the classify task ------------------------------------------------------------ */

/* If every label of the training file is a decimal number below 10^9, labels are class
 * numbers used as they are (numeric). Otherwise class i is the i-th distinct label in
 * order of first appearance. Evaluation data must use the training file's classes, so
 * they are stored in the checkpoint like the tokenizer. */
typedef struct kiln_labels {
    bool numeric;
    int32_t n;      /* number of classes (numeric: the largest label + 1) */
    char **names;   /* [n] when not numeric */
} kiln_labels;

void kiln_labels_free(kiln_labels *l);
/* "kiln-labels/1 numeric N" or "kiln-labels/1 names N<TAB>name0<TAB>name1…" (malloc'ed). */
char *kiln_labels_serialize(const kiln_labels *l);
bool kiln_labels_deserialize(kiln_labels *l, const char *text, const char *file, const char *where, kiln_diags *d);

/* ---- datasets ------------------------------------------------------------------------------------- */

/* One labelled example. Token fields live in the dataset's `tokens`:
 *   classify  field 0 text          pairs  field 0 text_a, field 1 text_b
 *   seq2seq   field 0 source, 1 target      span  field 0 question, field 1 context */
typedef struct kiln_example {
    uint32_t line;       /* in the file, from 1 */
    int32_t label;       /* classify: the class */
    int32_t start, end;  /* span: the answer's first and last token within the context */
    size_t field[2];     /* offsets into the dataset's tokens */
    int32_t len[2];
} kiln_example;

typedef struct kiln_dataset {
    kiln_task task;
    char *path;
    int32_t *tokens;       /* clm, mlm: the stream; labelled tasks: the examples' fields */
    size_t n_tokens;
    kiln_example *examples;
    size_t n_examples;
    kiln_labels labels;    /* classify: the classes used (a copy of the given ones, or derived) */
} kiln_dataset;

typedef struct kiln_data_options {
    int64_t max_id;              /* .bin: ids must be below this; 0 = the tokenizer's vocab */
    const kiln_labels *labels;   /* classify: the training set's classes; NULL = derive them */
} kiln_data_options;

/* Loads `path` for `task`. A path ending in ".bin" is a token file (clm and mlm only);
 * other files are text (clm, mlm) or TSV (the labelled tasks). Reads every line, reports
 * the first five bad ones and counts the rest, and then fails; on failure *ds is empty.
 * opt may be NULL. */
bool kiln_dataset_load(kiln_dataset *ds, kiln_task task, const char *path, const kiln_tokenizer *tok,
                       const kiln_data_options *opt, kiln_diags *d);
void kiln_dataset_free(kiln_dataset *ds);

/* Opens a data file for reading (--data, --val, embed's --input, plot's logs), or adds a
 * diagnostic: it must exist and be a regular file, since /dev/zero or a pipe would be
 * read without end (the model and weights loaders refuse them too). */
FILE *kiln_data_open(const char *path, kiln_diags *d);

/* Trains a tokenizer of kind cfg->kind on the text `task` reads from `path`: the whole
 * file for clm/mlm, the text fields of each TSV line otherwise (labels excluded; lines
 * with the wrong number of fields are left to kiln_dataset_load to report). A byte
 * tokenizer needs no data; char and bpe cannot be trained from a .bin file. */
bool kiln_data_train_tokenizer(kiln_tokenizer *tok, const kiln_tokenizer_config *cfg, kiln_task task,
                               const char *path, kiln_diags *d);

/* ---- batchers ----------------------------------------------------------------------------------- */

typedef struct kiln_batch_options {
    bool shuffle;          /* true (training): every epoch a new order; false (evaluation): file order, one pass */
    bool add_cls;          /* classify, pairs: <cls> before the text */
    int32_t ignore_index;  /* written where a target must not count (cross_entropy's ignore_index) */
    uint64_t seed;         /* data order and mlm masking */
} kiln_batch_options;

/* shuffle true, add_cls true, ignore_index −100, seed 0. */
kiln_batch_options kiln_batch_options_default(void);

/* Everything that decides the next batch. The epoch's order is derived from
 * (seed, epoch); rng drives mlm's choices. */
typedef struct kiln_batch_state {
    uint64_t seed;
    uint64_t epoch;   /* epochs finished */
    uint64_t pos;     /* examples of the current epoch already used */
    kiln_rng rng;
} kiln_batch_state;

typedef struct kiln_batcher {
    const kiln_dataset *ds;   /* borrowed: must outlive the batcher */
    kiln_task task;
    int64_t batch;                       /* B */
    int64_t cols[KILN_TASK_MAX_INPUTS];  /* per input; 1 for rank-1 inputs */
    kiln_batch_options opt;
    int32_t special[KILN_N_SPECIALS];    /* the tokenizer's special ids */
    int32_t n_plain;                     /* mlm random tokens come from [0, n_plain) */
    kiln_batch_state st;
    /* derived from st by build_epoch */
    uint32_t *order;     /* this epoch's examples (or windows) in the order used */
    size_t n_order;
    size_t shift;        /* clm, mlm: first token of this epoch's first window */
    uint32_t *usable;    /* labelled tasks: the examples that fit the shapes */
    size_t n_usable;
    size_t n_skipped;    /* span: examples whose answer the truncation would cut */
    int32_t *scratch;    /* mlm: [cols] */
} kiln_batcher;

/* Prepares a batcher for B = batch rows and the given columns per input (in
 * kiln_task_inputs order; ignored for rank-1 inputs). Checks that the shapes agree
 * (a mask as wide as its tokens…) and that the data holds at least one example: clm
 * needs T+1 tokens, mlm T tokens; span drops examples whose answer would be cut by
 * truncation (counted in n_skipped). opt may be NULL (the defaults). */
bool kiln_batcher_init(kiln_batcher *bt, const kiln_dataset *ds, const kiln_tokenizer *tok, int64_t batch,
                       const int64_t *cols, const kiln_batch_options *opt, kiln_diags *d);
void kiln_batcher_free(kiln_batcher *bt);

/* Fills one batch: bufs[i] is the i-th input's int32 buffer of batch × cols[i]
 * (batch for rank 1), row-major. Returns the number of rows that hold examples: always
 * B when shuffling (epochs follow each other); without shuffling, fewer on the last
 * batch of the pass and 0 after it. Rows past that are filler that no loss counts:
 * <pad> tokens, mask 0, targets and labels ignore_index. */
int64_t kiln_batcher_next(kiln_batcher *bt, int32_t *const *bufs);

/* Examples (windows for clm/mlm) in the current epoch. */
size_t kiln_batcher_epoch_size(const kiln_batcher *bt);

/* Back to the start of the first epoch with the initial rng (evaluation passes). */
void kiln_batcher_rewind(kiln_batcher *bt);

kiln_batch_state kiln_batcher_state(const kiln_batcher *bt);
/* Continues from a saved state; false with a diagnostic if it does not fit this data. */
bool kiln_batcher_restore(kiln_batcher *bt, const kiln_batch_state *st, kiln_diags *d);

/* "kiln-batch/1 SEED EPOCH POS S0 S1 S2 S3" (decimal), for checkpoint metadata. */
void kiln_batch_state_format(const kiln_batch_state *st, char *buf, size_t size);
bool kiln_batch_state_parse(kiln_batch_state *st, const char *text);

#endif
