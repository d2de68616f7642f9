/* batcher.c — batchers over a loaded dataset (see data.h; the conventions are in
 * docs/data.md), split from data.c, which loads the datasets.
 *
 * Design. A batcher is a pure function of its kiln_batch_state: the epoch's order comes
 * from (seed, epoch) alone and is rebuilt whenever the epoch changes, and mlm's masking
 * draws from the state's rng. Saving the state and restoring it therefore continues
 * with identical batches. The stream tasks treat the windows of an epoch as its
 * examples: windows of T tokens placed back to back from a random shift in [0, T), so
 * every token is a target once per epoch and the window boundaries differ between
 * epochs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "data_impl.h"
#include "kiln/runtime.h"

/* ---- batchers ---------------------------------------------------------------------------------- */

kiln_batch_options kiln_batch_options_default(void)
{
    return (kiln_batch_options){.shuffle = true, .add_cls = true, .ignore_index = -100, .seed = 0};
}

/* Uniform in [0, n), n >= 1, without modulo bias: draws at or above the largest
 * multiple of n are rejected. */
static uint64_t rand_below(kiln_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = kiln_rng_next(r);
    while (x >= limit);
    return x % n;
}

/* Window length and stride of the stream tasks: clm reads T+1 tokens (inputs and the
 * next tokens), mlm T; consecutive windows start T apart. */
static size_t window_len(const kiln_batcher *bt) { return (size_t)bt->cols[0] + (bt->task == KILN_TASK_CLM); }

/* Rebuilds order/shift for st.epoch: a pure function of (seed, epoch). */
static void build_epoch(kiln_batcher *bt)
{
    kiln_rng r;
    char name[48];
    snprintf(name, sizeof name, "kiln.data.epoch.%llu", (unsigned long long)bt->st.epoch);
    kiln_rng_seed(&r, bt->st.seed, name);
    if (is_stream_task(bt->task)) {
        size_t T = (size_t)bt->cols[0], L = window_len(bt), n = bt->ds->n_tokens;
        size_t max_shift = n - L < T - 1 ? n - L : T - 1;
        bt->shift = bt->opt.shuffle && max_shift > 0 ? (size_t)rand_below(&r, max_shift + 1) : 0;
        bt->n_order = (n - L - bt->shift) / T + 1;
        for (size_t i = 0; i < bt->n_order; i++) bt->order[i] = (uint32_t)i;
    } else {
        bt->n_order = bt->n_usable;
        memcpy(bt->order, bt->usable, bt->n_usable * sizeof *bt->order);
    }
    if (bt->opt.shuffle)
        for (size_t i = bt->n_order; i > 1; i--) { /* Fisher–Yates */
            size_t j = (size_t)rand_below(&r, i);
            uint32_t t = bt->order[i - 1];
            bt->order[i - 1] = bt->order[j];
            bt->order[j] = t;
        }
}

static void initial_state(kiln_batcher *bt)
{
    bt->st.seed = bt->opt.seed;
    bt->st.epoch = 0;
    bt->st.pos = 0;
    kiln_rng_seed(&bt->st.rng, bt->opt.seed, "kiln.data.mlm");
}

void kiln_batcher_free(kiln_batcher *bt)
{
    free(bt->order);
    free(bt->usable);
    free(bt->scratch);
    memset(bt, 0, sizeof *bt);
}

bool kiln_batcher_init(kiln_batcher *bt, const kiln_dataset *ds, const kiln_tokenizer *tok, int64_t batch,
                       const int64_t *cols, const kiln_batch_options *opt, kiln_diags *d)
{
    memset(bt, 0, sizeof *bt);
    const struct task_info *ti = &data_task_info[ds->task];
    bt->ds = ds;
    bt->task = ds->task;
    bt->batch = batch;
    bt->opt = opt ? *opt : kiln_batch_options_default();
    for (int s = 0; s < KILN_N_SPECIALS; s++) bt->special[s] = kiln_tokenizer_special(tok, (kiln_special)s);
    bt->n_plain = tok->base;
    int errors = d->n;
    if (batch < 1 || batch > INT32_MAX)
        kiln_diags_add(d, ds->path, 0, 0, NULL, "batch size %lld must be in [1, %d]", (long long)batch, INT32_MAX);
    for (int i = 0; i < ti->n; i++) {
        bt->cols[i] = ti->ranks[i] == 1 ? 1 : cols[i];
        if (bt->cols[i] < 1 || bt->cols[i] > INT32_MAX)
            kiln_diags_add(d, ds->path, 0, 0, ti->names[i], "%lld columns: a sequence input needs at least 1",
                           (long long)bt->cols[i]);
    }
    /* a mask or target is as wide as the tokens it goes with */
    static const int partner[KILN_N_TASKS][KILN_TASK_MAX_INPUTS] = {
        [KILN_TASK_CLM] = {-1, 0}, [KILN_TASK_MLM] = {-1, 0}, [KILN_TASK_CLASSIFY] = {-1, 0, -1},
        [KILN_TASK_PAIRS] = {-1, 0, -1, 2}, [KILN_TASK_SEQ2SEQ] = {-1, 0, -1, 2}, [KILN_TASK_SPAN] = {-1, 0, -1, -1},
    };
    for (int i = 0; i < ti->n; i++) {
        int p = partner[ds->task][i];
        if (p >= 0 && bt->cols[i] != bt->cols[p])
            kiln_diags_add(d, ds->path, 0, 0, ti->names[i], "%lld columns, but '%s' has %lld", (long long)bt->cols[i],
                           ti->names[p], (long long)bt->cols[p]);
    }
    if (d->n > errors) return false;

    size_t n_order;
    if (is_stream_task(ds->task)) {
        size_t L = window_len(bt);
        if (ds->n_tokens < L) {
            kiln_diags_add(d, ds->path, 0, 0, NULL, "%zu tokens: task %s with sequences of %lld needs at least %zu",
                           ds->n_tokens, kiln_task_name(ds->task), (long long)bt->cols[0], L);
            return false;
        }
        n_order = (ds->n_tokens - L) / (size_t)bt->cols[0] + 1; /* the most windows, at shift 0 */
        if (n_order > UINT32_MAX) {
            kiln_diags_add(d, ds->path, 0, 0, NULL, "too many windows for one epoch");
            return false;
        }
    } else {
        if (!(bt->usable = malloc((ds->n_examples ? ds->n_examples : 1) * sizeof *bt->usable))) goto oom;
        for (size_t i = 0; i < ds->n_examples; i++) {
            const kiln_example *ex = &ds->examples[i];
            /* span: question, <sep>, context — the answer's last token must fit */
            if (ds->task == KILN_TASK_SPAN && (int64_t)ex->len[0] + 1 + ex->end >= bt->cols[0]) {
                bt->n_skipped++;
                continue;
            }
            bt->usable[bt->n_usable++] = (uint32_t)i;
        }
        if (bt->n_usable == 0) {
            kiln_diags_add(d, ds->path, 0, 0, NULL, "no example fits %lld tokens (%zu answers would be cut off)",
                           (long long)bt->cols[0], bt->n_skipped);
            kiln_batcher_free(bt);
            return false;
        }
        n_order = bt->n_usable;
    }
    bt->order = malloc(n_order * sizeof *bt->order);
    if (!bt->order) goto oom;
    if (ds->task == KILN_TASK_MLM && !(bt->scratch = malloc((size_t)bt->cols[0] * sizeof *bt->scratch))) goto oom;
    initial_state(bt);
    build_epoch(bt);
    return true;
oom:
    kiln_diags_add(d, ds->path, 0, 0, NULL, "out of memory");
    kiln_batcher_free(bt);
    return false;
}

/* ---- filling rows ---------------------------------------------------------------------------------- */

/* Writes [first] + src[0..n) into row[0..T), truncating, then <pad>; the mask (may be
 * NULL) is 1 on real tokens. first < 0 means none. */
static void fill_seq(int32_t *row, int32_t *mask, int64_t T, int32_t first, const int32_t *src, int32_t n,
                     int32_t pad)
{
    int64_t k = 0;
    if (first >= 0 && k < T) row[k++] = first;
    for (int32_t i = 0; i < n && k < T; i++) row[k++] = src[i];
    if (mask)
        for (int64_t i = 0; i < T; i++) mask[i] = i < k;
    for (; k < T; k++) row[k] = pad;
}

static void fill_filler(kiln_batcher *bt, int32_t *const *bufs, int64_t b)
{
    const struct task_info *ti = &data_task_info[bt->task];
    for (int i = 0; i < ti->n; i++) {
        int32_t v = ti->kinds[i] == S_TOKENS ? bt->special[KILN_SPECIAL_PAD]
                    : ti->kinds[i] == S_MASK ? 0
                                             : bt->opt.ignore_index;
        for (int64_t c = 0; c < bt->cols[i]; c++) bufs[i][b * bt->cols[i] + c] = v;
    }
}

/* mlm: choose 15% of the positions that hold an ordinary token (at least one); of
 * those, 80% become <mask>, 10% a random ordinary token, 10% stay. 15% of n is rarely
 * whole: the fraction is rounded up with its own probability, so that the rate is 15%
 * on average instead of drifting low on short rows. */
static void mask_row(kiln_batcher *bt, int32_t *tokens, int32_t *targets)
{
    int64_t T = bt->cols[0];
    int32_t n = 0;
    for (int64_t i = 0; i < T; i++) {
        targets[i] = bt->opt.ignore_index;
        bool special = tokens[i] >= bt->special[0] && tokens[i] <= bt->special[KILN_N_SPECIALS - 1];
        if (!special) bt->scratch[n++] = (int32_t)i;
    }
    int32_t k = (int32_t)((int64_t)n * 15 / 100);
    if ((int64_t)rand_below(&bt->st.rng, 100) < (int64_t)n * 15 % 100) k++;
    if (k == 0 && n > 0) k = 1;
    for (int32_t i = 0; i < k; i++) { /* a partial Fisher–Yates picks k distinct positions */
        int32_t j = i + (int32_t)rand_below(&bt->st.rng, (uint64_t)(n - i));
        int32_t p = bt->scratch[j];
        bt->scratch[j] = bt->scratch[i];
        bt->scratch[i] = p;
        targets[p] = tokens[p];
        uint64_t roll = rand_below(&bt->st.rng, 10);
        if (roll < 8) tokens[p] = bt->special[KILN_SPECIAL_MASK];
        else if (roll == 8) tokens[p] = (int32_t)rand_below(&bt->st.rng, (uint64_t)bt->n_plain);
    }
}

static void fill_row(kiln_batcher *bt, int32_t *const *bufs, int64_t b, uint32_t idx)
{
    const kiln_dataset *ds = bt->ds;
    const int64_t *cols = bt->cols;
    int32_t pad = bt->special[KILN_SPECIAL_PAD];
    int32_t cls = bt->opt.add_cls ? bt->special[KILN_SPECIAL_CLS] : -1;
    int32_t *row[KILN_TASK_MAX_INPUTS];
    for (int i = 0; i < data_task_info[bt->task].n; i++) row[i] = bufs[i] + b * cols[i];
    if (is_stream_task(bt->task)) {
        const int32_t *w = ds->tokens + bt->shift + (size_t)idx * (size_t)cols[0];
        if (bt->task == KILN_TASK_CLM) {
            memcpy(row[0], w, (size_t)cols[0] * sizeof *w);
            memcpy(row[1], w + 1, (size_t)cols[0] * sizeof *w);
        } else {
            memcpy(row[0], w, (size_t)cols[0] * sizeof *w);
            mask_row(bt, row[0], row[1]);
        }
        return;
    }
    const kiln_example *ex = &ds->examples[idx];
    /* a dataset whose fields are all empty has no token array at all (NULL + 0 is UB) */
    const int32_t *f0 = ds->tokens ? ds->tokens + ex->field[0] : NULL;
    const int32_t *f1 = ds->tokens ? ds->tokens + ex->field[1] : NULL;
    switch (bt->task) {
    case KILN_TASK_CLASSIFY:
        fill_seq(row[0], row[1], cols[0], cls, f0, ex->len[0], pad);
        row[2][0] = ex->label;
        break;
    case KILN_TASK_PAIRS:
        fill_seq(row[0], row[1], cols[0], cls, f0, ex->len[0], pad);
        fill_seq(row[2], row[3], cols[2], cls, f1, ex->len[1], pad);
        break;
    case KILN_TASK_SEQ2SEQ: {
        /* tgt_in = <bos> target, tgt_out = target <eos>: tgt_out[t] is what follows
         * tgt_in[0..t]; positions past the end are ignored */
        int64_t T = cols[2];
        fill_seq(row[0], row[1], cols[0], -1, f0, ex->len[0], pad);
        fill_seq(row[2], NULL, T, bt->special[KILN_SPECIAL_BOS], f1, ex->len[1], pad);
        for (int64_t t = 0; t < T; t++)
            row[3][t] = t < ex->len[1] ? f1[t] : t == ex->len[1] ? bt->special[KILN_SPECIAL_EOS] : bt->opt.ignore_index;
        break;
    }
    case KILN_TASK_SPAN: {
        /* question, <sep>, context; init kept only examples whose answer fits */
        int64_t T = cols[0], k = 0;
        for (int32_t i = 0; i < ex->len[0] && k < T; i++) row[0][k++] = f0[i];
        if (k < T) row[0][k++] = bt->special[KILN_SPECIAL_SEP];
        for (int32_t i = 0; i < ex->len[1] && k < T; i++) row[0][k++] = f1[i];
        for (int64_t i = 0; i < T; i++) row[1][i] = i < k;
        for (; k < T; k++) row[0][k] = pad;
        row[2][0] = ex->len[0] + 1 + ex->start;
        row[3][0] = ex->len[0] + 1 + ex->end;
        break;
    }
    default: break;
    }
}

int64_t kiln_batcher_next(kiln_batcher *bt, int32_t *const *bufs)
{
    int64_t real = 0;
    for (int64_t b = 0; b < bt->batch; b++) {
        if (bt->st.pos >= bt->n_order) {
            if (!bt->opt.shuffle) { /* one pass: the rest of the batch is filler */
                fill_filler(bt, bufs, b);
                continue;
            }
            bt->st.epoch++;
            bt->st.pos = 0;
            build_epoch(bt);
        }
        fill_row(bt, bufs, b, bt->order[bt->st.pos++]);
        real++;
    }
    return real;
}

size_t kiln_batcher_epoch_size(const kiln_batcher *bt) { return bt->n_order; }

void kiln_batcher_rewind(kiln_batcher *bt)
{
    initial_state(bt);
    build_epoch(bt);
}

kiln_batch_state kiln_batcher_state(const kiln_batcher *bt) { return bt->st; }

bool kiln_batcher_restore(kiln_batcher *bt, const kiln_batch_state *st, kiln_diags *d)
{
    kiln_batch_state old = bt->st;
    bool rng_ok = st->rng.s[0] | st->rng.s[1] | st->rng.s[2] | st->rng.s[3];
    bt->st = *st;
    build_epoch(bt);
    if (rng_ok && st->pos <= bt->n_order) return true;
    kiln_diags_add(d, bt->ds->path, 0, 0, NULL,
                   rng_ok ? "the saved data position (example %llu of an epoch of %zu) does not fit this data"
                          : "the saved data state has an all-zero random state (example %llu of %zu)",
                   (unsigned long long)st->pos, bt->n_order);
    bt->st = old;
    build_epoch(bt);
    return false;
}

void kiln_batch_state_format(const kiln_batch_state *st, char *buf, size_t size)
{
    snprintf(buf, size, "kiln-batch/1 %llu %llu %llu %llu %llu %llu %llu", (unsigned long long)st->seed,
             (unsigned long long)st->epoch, (unsigned long long)st->pos, (unsigned long long)st->rng.s[0],
             (unsigned long long)st->rng.s[1], (unsigned long long)st->rng.s[2], (unsigned long long)st->rng.s[3]);
}

bool kiln_batch_state_parse(kiln_batch_state *st, const char *text)
{
    const char *p = text ? text : "";
    if (strncmp(p, "kiln-batch/1", 12) != 0) return false;
    p += 12;
    uint64_t v[7];
    for (int i = 0; i < 7; i++) {
        if (*p++ != ' ' || *p < '0' || *p > '9') return false;
        uint64_t x = 0;
        while (*p >= '0' && *p <= '9') {
            uint64_t digit = (uint64_t)(*p++ - '0');
            if (x > (UINT64_MAX - digit) / 10) return false;
            x = x * 10 + digit;
        }
        v[i] = x;
    }
    if (*p) return false;
    *st = (kiln_batch_state){v[0], v[1], v[2], {{v[3], v[4], v[5], v[6]}}};
    return true;
}
