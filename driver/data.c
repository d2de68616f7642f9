/* data.c — tasks and datasets (see data.h; the conventions are in docs/data.md): what
 * each task's inputs are, label lists, and loading a file into tokens. The batchers over
 * a loaded dataset are in batcher.c.
 *
 * Design. Loading turns a file into int32 tokens once: a token stream for clm/mlm, or
 * examples whose fields point into one shared token array for the labelled tasks.
 * Files are read in fixed-size blocks (text: the tokenizer's stable prefix of each
 * block is encoded and the rest carried over; TSV: a line reader with a length limit),
 * so a hostile file costs at most the tokens it holds. Every bad line is reported with
 * its number before the load fails, like the model loader does for a model file.
 */
#include "data.h"
#include "data_impl.h"
#include "kiln/runtime.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest TSV line (bytes); longer lines are reported and skipped. */
#define MAX_LINE (1u << 20)
/* Bytes read at a time from text and .bin files. */
#define BLOCK (1u << 20)

/* ---- tasks -------------------------------------------------------------------------------- */

static const char *const task_names[KILN_N_TASKS] = {"clm", "mlm", "classify", "pairs", "seq2seq", "span"};

const struct task_info data_task_info[KILN_N_TASKS] = {
    [KILN_TASK_CLM] = {2, {"tokens", "targets"}, {2, 2}, {S_TOKENS, S_TARGET}, 0, NULL},
    [KILN_TASK_MLM] = {2, {"tokens", "targets"}, {2, 2}, {S_TOKENS, S_TARGET}, 0, NULL},
    [KILN_TASK_CLASSIFY] = {3, {"tokens", "mask", "labels"}, {2, 2, 1}, {S_TOKENS, S_MASK, S_LABEL}, 2,
                            "label, text"},
    [KILN_TASK_PAIRS] = {4, {"tokens_a", "mask_a", "tokens_b", "mask_b"}, {2, 2, 2, 2},
                         {S_TOKENS, S_MASK, S_TOKENS, S_MASK}, 2, "text_a, text_b"},
    [KILN_TASK_SEQ2SEQ] = {4, {"src", "src_mask", "tgt_in", "tgt_out"}, {2, 2, 2, 2},
                           {S_TOKENS, S_MASK, S_TOKENS, S_TARGET}, 2, "source, target"},
    [KILN_TASK_SPAN] = {4, {"tokens", "mask", "start", "end"}, {2, 2, 1, 1}, {S_TOKENS, S_MASK, S_LABEL, S_LABEL}, 3,
                        "context, question, answer"},
};

bool kiln_task_parse(const char *name, kiln_task *out)
{
    for (int t = 0; t < KILN_N_TASKS; t++)
        if (name && strcmp(name, task_names[t]) == 0) {
            *out = (kiln_task)t;
            return true;
        }
    return false;
}

const char *kiln_task_name(kiln_task t) { return t >= 0 && t < KILN_N_TASKS ? task_names[t] : "?"; }

int kiln_task_inputs(kiln_task t, const char *const **names, const int **ranks)
{
    if (t < 0 || t >= KILN_N_TASKS) return 0;
    if (names) *names = data_task_info[t].names;
    if (ranks) *ranks = data_task_info[t].ranks;
    return data_task_info[t].n;
}

static bool is_bin_path(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && strcmp(path + n - 4, ".bin") == 0;
}

/* diagnostics take an int line */
static int line_int(uint64_t line) { return line > INT_MAX ? INT_MAX : (int)line; }

/* ---- labels ----------------------------------------------------------------------------------- */

void kiln_labels_free(kiln_labels *l)
{
    if (l->names)
        for (int32_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* A decimal class number: 1 to 9 digits. */
static bool parse_class_number(const char *s, size_t n, int32_t *out)
{
    if (n == 0 || n > 9) return false;
    int32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

char *kiln_labels_serialize(const kiln_labels *l)
{
    size_t cap = 64;
    if (!l->numeric)
        for (int32_t i = 0; i < l->n; i++) cap += strlen(l->names[i]) + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t n = (size_t)snprintf(s, cap, "kiln-labels/1 %s %d", l->numeric ? "numeric" : "names", (int)l->n);
    if (!l->numeric)
        for (int32_t i = 0; i < l->n; i++) n += (size_t)snprintf(s + n, cap - n, "\t%s", l->names[i]);
    return s;
}

bool kiln_labels_deserialize(kiln_labels *l, const char *text, const char *file, const char *where, kiln_diags *d)
{
    memset(l, 0, sizeof *l);
    const char *p = text ? text : "", *why = NULL;
    bool numeric;
    if (strncmp(p, "kiln-labels/1 numeric ", 22) == 0) numeric = true, p += 22;
    else if (strncmp(p, "kiln-labels/1 names ", 20) == 0) numeric = false, p += 20;
    else {
        why = "does not start with 'kiln-labels/1 numeric' or 'kiln-labels/1 names'";
        goto bad;
    }
    size_t digits = strspn(p, "0123456789");
    int32_t n;
    if (!parse_class_number(p, digits, &n) || n == 0) {
        why = "bad class count";
        goto bad;
    }
    p += digits;
    l->numeric = numeric;
    l->n = n;
    if (numeric) {
        if (*p) why = "unexpected text after the class count";
        if (why) goto bad;
        return true;
    }
    if (strlen(p) < 2 * (size_t)n) { /* each name takes at least a tab and a byte */
        why = "fewer names than the class count";
        goto bad;
    }
    if (!(l->names = calloc((size_t)n, sizeof *l->names))) goto oom;
    for (int32_t i = 0; i < n; i++) {
        if (*p != '\t') {
            why = "fewer names than the class count";
            goto bad;
        }
        p++;
        size_t len = strcspn(p, "\t\n");
        if (len == 0 || p[len] == '\n' || !kiln_utf8_valid(p, len)) {
            why = "a class name is empty or not valid UTF-8";
            goto bad;
        }
        if (!(l->names[i] = strndup(p, len))) goto oom;
        for (int32_t j = 0; j < i; j++)
            if (strcmp(l->names[j], l->names[i]) == 0) {
                why = "a class name appears twice";
                goto bad;
            }
        p += len;
    }
    if (*p) {
        why = "more names than the class count";
        goto bad;
    }
    return true;
bad:
    kiln_labels_free(l);
    kiln_diags_add(d, file, 0, 0, where, "invalid class list: %s", why);
    return false;
oom:
    kiln_labels_free(l);
    kiln_diags_add(d, file, 0, 0, where, "out of memory");
    return false;
}

/* A set of strings numbered in order of insertion (label names). */
typedef struct strset {
    char **s;
    size_t n, cap;
    int32_t *slot; /* index + 1, 0 = empty */
    size_t n_slot;
} strset;

static uint64_t str_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static bool strset_rehash(strset *set, size_t n_slot)
{
    int32_t *slot = calloc(n_slot, sizeof *slot);
    if (!slot) return false;
    for (size_t i = 0; i < set->n; i++) {
        size_t j = str_hash(set->s[i], strlen(set->s[i])) & (n_slot - 1);
        while (slot[j]) j = (j + 1) & (n_slot - 1);
        slot[j] = (int32_t)(i + 1);
    }
    free(set->slot);
    set->slot = slot;
    set->n_slot = n_slot;
    return true;
}

/* The number of s[0..n) in the set, adding it when `add`; -1 if absent (or out of memory
 * or full, *oom set). */
static int32_t strset_find(strset *set, const char *s, size_t n, bool add, bool *oom)
{
    if (set->n_slot) {
        for (size_t j = str_hash(s, n) & (set->n_slot - 1); set->slot[j]; j = (j + 1) & (set->n_slot - 1)) {
            const char *t = set->s[set->slot[j] - 1];
            if (strnlen(t, n + 1) == n && memcmp(t, s, n) == 0) return set->slot[j] - 1;
        }
    }
    if (!add) return -1;
    if (set->n >= INT32_MAX / 2) return *oom = true, -1;
    if (2 * (set->n + 1) > set->n_slot && !strset_rehash(set, set->n_slot ? 2 * set->n_slot : 64))
        return *oom = true, -1;
    if (set->n == set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 16;
        char **v = realloc(set->s, cap * sizeof *v);
        if (!v) return *oom = true, -1;
        set->s = v;
        set->cap = cap;
    }
    char *copy = strndup(s, n);
    if (!copy) return *oom = true, -1;
    size_t j = str_hash(s, n) & (set->n_slot - 1);
    while (set->slot[j]) j = (j + 1) & (set->n_slot - 1);
    set->s[set->n] = copy;
    set->slot[j] = (int32_t)(++set->n);
    return (int32_t)(set->n - 1);
}

static void strset_free(strset *set)
{
    for (size_t i = 0; i < set->n; i++) free(set->s[i]);
    free(set->s);
    free(set->slot);
    memset(set, 0, sizeof *set);
}

/* ---- reading files -------------------------------------------------------------------------- */

FILE *kiln_data_open(const char *path, kiln_diags *d)
{
    struct stat st;
    int fd = kiln_open_regular(path, &st);
    if (fd == -1) kiln_diags_add(d, path, 0, 0, NULL, "cannot open: %s", strerror(errno));
    /* /dev/zero, a pipe or a terminal never ends (or is read once): the readers would
     * grow without bound or wait, as the model and weights loaders refuse */
    if (fd == -2) kiln_diags_add(d, path, 0, 0, NULL, "not a regular file");
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        kiln_diags_add(d, path, 0, 0, NULL, "cannot open: %s", strerror(errno));
        close(fd);
    }
    return f;
}

/* Lines of a file, each at most MAX_LINE bytes, read through one buffer. */
typedef struct line_reader {
    FILE *f;
    char *buf;       /* [MAX_LINE + 1]: room for a NUL after a full line */
    size_t start, end;
    bool eof;
    uint64_t line;   /* number of the line last returned */
} line_reader;

enum { LINE_END, LINE_OK, LINE_TOO_LONG, LINE_READ_ERROR };

/* The next line without "\n" or "\r\n", NUL-terminated in the buffer. */
static int next_line(line_reader *r, char **text, size_t *len)
{
    for (;;) {
        char *s = r->buf + r->start;
        char *nl = memchr(s, '\n', r->end - r->start);
        if (nl || (r->eof && r->end > r->start)) {
            size_t n = nl ? (size_t)(nl - s) : r->end - r->start;
            r->start += n + (nl != NULL);
            r->line++;
            if (n > 0 && s[n - 1] == '\r') n--;
            s[n] = 0;
            *text = s;
            *len = n;
            return LINE_OK;
        }
        if (r->eof) return LINE_END;
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        if (r->end == MAX_LINE) { /* no newline in a full buffer: skip to the end of the line */
            r->line++;
            for (;;) {
                size_t k = fread(r->buf, 1, MAX_LINE, r->f);
                if (k == 0) {
                    r->start = r->end = 0;
                    r->eof = true;
                    return ferror(r->f) ? LINE_READ_ERROR : LINE_TOO_LONG;
                }
                char *e = memchr(r->buf, '\n', k);
                if (e) {
                    r->start = (size_t)(e - r->buf) + 1;
                    r->end = k;
                    return LINE_TOO_LONG;
                }
            }
        }
        size_t k = fread(r->buf + r->end, 1, MAX_LINE - r->end, r->f);
        r->end += k;
        if (k == 0) {
            if (ferror(r->f)) return LINE_READ_ERROR;
            r->eof = true;
        }
    }
}

/* Splits line[0..n) at tabs into at most max fields (NUL-terminating each); returns the
 * number of fields found, which may exceed max (the extra ones are not stored). */
static int split_fields(char *line, size_t n, int max, char **field, size_t *len)
{
    int count = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && line[i] != '\t') continue;
        if (count < max) {
            field[count] = line + start;
            len[count] = i - start;
            line[i] = 0;
        }
        count++;
        start = i + 1;
    }
    return count;
}

/* The text fields of a TSV line that tokenizer training reads, per task. */
static int text_fields(kiln_task t, int *which)
{
    switch (t) {
    case KILN_TASK_CLASSIFY: which[0] = 1; return 1;
    case KILN_TASK_SPAN: which[0] = 0, which[1] = 1; return 2;
    default: which[0] = 0, which[1] = 1; return 2;
    }
}

/* ---- loading ------------------------------------------------------------------------------------ */

void kiln_dataset_free(kiln_dataset *ds)
{
    free(ds->path);
    free(ds->tokens);
    free(ds->examples);
    kiln_labels_free(&ds->labels);
    memset(ds, 0, sizeof *ds);
}

static bool load_bin(kiln_dataset *ds, FILE *f, const char *path, int64_t max_id, kiln_diags *d)
{
    struct stat st; /* f is a regular file (kiln_data_open) */
    if (fstat(fileno(f), &st) != 0) {
        kiln_diags_add(d, path, 0, 0, NULL, "cannot read: %s", strerror(errno));
        return false;
    }
    if (st.st_size % 2 != 0) {
        kiln_diags_add(d, path, 0, 0, NULL,
                       "%lld bytes: a .bin token file holds 2 bytes (little-endian uint16) per token, so its size "
                       "must be even",
                       (long long)st.st_size);
        return false;
    }
    size_t n = (size_t)st.st_size / 2;
    ds->tokens = malloc((n ? n : 1) * sizeof *ds->tokens);
    unsigned char *buf = malloc(BLOCK);
    bool ok = ds->tokens && buf;
    if (!ok) kiln_diags_add(d, path, 0, 0, NULL, "out of memory for %zu tokens", n);
    for (size_t i = 0; ok && i < n;) {
        size_t want = n - i < BLOCK / 2 ? n - i : BLOCK / 2;
        if (fread(buf, 2, want, f) != want) {
            kiln_diags_add(d, path, 0, 0, NULL, "read error or file shortened while reading");
            ok = false;
            break;
        }
        for (size_t k = 0; k < want; k++, i++) {
            int32_t id = buf[2 * k] | buf[2 * k + 1] << 8;
            if (id >= max_id) {
                kiln_diags_add(d, path, 0, 0, NULL, "token %d at index %zu is outside the vocabulary (%lld ids)", id, i,
                               (long long)max_id);
                ok = false;
                break;
            }
            ds->tokens[i] = id;
        }
    }
    free(buf);
    ds->n_tokens = n;
    return ok;
}

static bool load_text(kiln_dataset *ds, FILE *f, const char *path, const kiln_tokenizer *tok, kiln_diags *d)
{
    /* the carried tail is at most one BPE chunk or one partial UTF-8 sequence */
    char *buf = malloc(BLOCK + 2 * KILN_BPE_MAX_CHUNK);
    kiln_ids ids = {0};
    size_t carry = 0;
    int errors = d->n;
    bool ok = buf != NULL;
    while (ok) {
        size_t k = fread(buf + carry, 1, BLOCK, f);
        size_t total = carry + k;
        if (k == 0) {
            if (ferror(f)) {
                kiln_diags_add(d, path, 0, 0, NULL, "read error");
                ok = false;
            } else if (!kiln_tokenizer_encode(tok, buf, total, &ids, NULL)) {
                ok = false;
            }
            break;
        }
        size_t p = kiln_tokenizer_stable_prefix(tok, buf, total);
        if (!kiln_tokenizer_encode(tok, buf, p, &ids, NULL)) ok = false;
        memmove(buf, buf + p, total - p);
        carry = total - p;
    }
    if (!ok && d->n == errors) kiln_diags_add(d, path, 0, 0, NULL, "out of memory while tokenising");
    free(buf);
    ds->tokens = ids.v;
    ds->n_tokens = ids.n;
    return ok;
}

/* Loading state shared by the TSV tasks. */
typedef struct tsv_ctx {
    kiln_dataset *ds;
    const kiln_tokenizer *tok;
    const char *path;
    kiln_diags *d;
    kiln_ids tokens;
    size_t cap_examples;
    strset fixed;        /* classify with given names: name → class */
    strset seen;         /* classify deriving classes: labels in order of first appearance */
    const kiln_labels *given; /* classify: the training set's classes, or NULL */
    bool oom;
    int errors;
    /* lines with the wrong number of fields: the first few, reported at the end, and
     * how many; when no line had the right number the file is not this task's TSV,
     * and one line says so instead of one per line */
    uint64_t bad_lines, lines;
    uint64_t bad_at[5];
    int bad_count[5];
    /* bad lines of any kind: the first MAX_LISTED are listed, the others counted */
    int listed;
    uint64_t unlisted;
} tsv_ctx;

enum { MAX_LISTED = 5 };

static void line_error(tsv_ctx *c, uint64_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void line_error(tsv_ctx *c, uint64_t line, size_t col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->errors++;
    if (c->listed == MAX_LISTED) {
        c->unlisted++;
        return;
    }
    kiln_diags_add(c->d, c->path, line_int(line), (int)col + 1, NULL, "%s", msg);
    c->listed++;
}

/* Tokenises one field into c->tokens; its offset and length go to the example. */
static bool add_field(tsv_ctx *c, kiln_example *ex, int k, const char *s, size_t n, kiln_ids *ends)
{
    size_t before = c->tokens.n;
    if (!kiln_tokenizer_encode(c->tok, s, n, &c->tokens, ends)) return !(c->oom = true);
    if (c->tokens.n - before > INT32_MAX) return !(c->oom = true);
    ex->field[k] = before;
    ex->len[k] = (int32_t)(c->tokens.n - before);
    return true;
}

/* The class of a classify label, or -1 after reporting why not. */
static int32_t label_class(tsv_ctx *c, uint64_t line, const char *s, size_t n)
{
    const kiln_labels *given = c->given;
    int32_t v;
    if (n == 0) {
        line_error(c, line, 0, "empty label");
        return -1;
    }
    if (!kiln_utf8_valid(s, n)) {
        line_error(c, line, 0, "the label is not valid UTF-8");
        return -1;
    }
    if (memchr(s, 0, n)) { /* labels are C strings in the checkpoint's metadata */
        line_error(c, line, 0, "the label contains a NUL byte");
        return -1;
    }
    if (given && given->numeric) {
        if (!parse_class_number(s, n, &v)) {
            line_error(c, line, 0, "label '%s' is not a class number, as the training labels were", s);
            return -1;
        }
        if (v >= given->n) {
            line_error(c, line, 0, "label %d is not one of the training set's classes (0 to %d)", (int)v,
                       (int)given->n - 1);
            return -1;
        }
        return v;
    }
    if (given) {
        v = strset_find(&c->fixed, s, n, false, &c->oom);
        if (v < 0) line_error(c, line, 0, "label '%s' is not one of the training set's classes", s);
        return v;
    }
    return strset_find(&c->seen, s, n, true, &c->oom);
}

/* Parses one non-empty TSV line into an example (or reports it). */
static void tsv_line(tsv_ctx *c, uint64_t line, char *text, size_t n)
{
    const struct task_info *ti = &data_task_info[c->ds->task];
    char *f[3];
    size_t len[3];
    int count = split_fields(text, n, 3, f, len);
    c->lines++;
    if (count != ti->fields) {
        if (c->bad_lines < 5) c->bad_at[c->bad_lines] = line, c->bad_count[c->bad_lines] = count;
        c->bad_lines++;
        c->errors++;
        return;
    }
    kiln_example ex = {.line = (uint32_t)(line > UINT32_MAX ? UINT32_MAX : line)};
    switch (c->ds->task) {
    case KILN_TASK_CLASSIFY:
        ex.label = label_class(c, line, f[0], len[0]);
        if (ex.label < 0 || !add_field(c, &ex, 0, f[1], len[1], NULL)) return;
        break;
    case KILN_TASK_PAIRS:
    case KILN_TASK_SEQ2SEQ:
        if (!add_field(c, &ex, 0, f[0], len[0], NULL) || !add_field(c, &ex, 1, f[1], len[1], NULL)) return;
        break;
    case KILN_TASK_SPAN: {
        size_t answer_col = (size_t)(f[2] - text);
        if (len[2] == 0) {
            line_error(c, line, answer_col, "empty answer");
            return;
        }
        const char *at = memmem(f[0], len[0], f[2], len[2]);
        if (!at) {
            line_error(c, line, answer_col, "the answer '%s' does not appear in the context", f[2]);
            return;
        }
        size_t a0 = (size_t)(at - f[0]), a1 = a0 + len[2];
        kiln_ids ends = {0};
        bool ok = add_field(c, &ex, 0, f[1], len[1], NULL) && add_field(c, &ex, 1, f[0], len[0], &ends);
        if (ok) { /* the answer's tokens: from the one holding its first byte to the one holding its last */
            int32_t i = 0;
            while ((size_t)ends.v[i] <= a0) i++;
            ex.start = i;
            while ((size_t)ends.v[i] < a1) i++;
            ex.end = i;
        }
        kiln_ids_free(&ends);
        if (!ok) return;
        break;
    }
    default: return;
    }
    if (c->ds->n_examples >= UINT32_MAX - 1) { /* batchers index examples with 32 bits */
        line_error(c, line, 0, "too many examples");
        return;
    }
    if (c->ds->n_examples == c->cap_examples) {
        size_t cap = c->cap_examples ? 2 * c->cap_examples : 256;
        kiln_example *v = realloc(c->ds->examples, cap * sizeof *v);
        if (!v) {
            c->oom = true;
            return;
        }
        c->ds->examples = v;
        c->cap_examples = cap;
    }
    c->ds->examples[c->ds->n_examples++] = ex;
}

/* After a classify file without given classes: numeric labels or names. */
static bool finish_classes(tsv_ctx *c)
{
    kiln_labels *l = &c->ds->labels;
    bool numeric = c->seen.n > 0;
    int32_t v, max = -1;
    for (size_t i = 0; i < c->seen.n && numeric; i++) {
        numeric = parse_class_number(c->seen.s[i], strlen(c->seen.s[i]), &v);
        if (numeric && v > max) max = v;
    }
    if (numeric) {
        for (size_t i = 0; i < c->ds->n_examples; i++) {
            kiln_example *ex = &c->ds->examples[i];
            parse_class_number(c->seen.s[ex->label], strlen(c->seen.s[ex->label]), &ex->label);
        }
        l->numeric = true;
        l->n = max + 1;
        return true;
    }
    /* the examples already hold first-appearance numbers: hand the names over */
    l->numeric = false;
    l->n = (int32_t)c->seen.n;
    l->names = c->seen.s;
    c->seen.s = NULL;
    c->seen.n = 0;
    return true;
}

static bool copy_labels(kiln_labels *dst, const kiln_labels *src)
{
    *dst = (kiln_labels){src->numeric, src->n, NULL};
    if (src->numeric) return true;
    if (!(dst->names = calloc((size_t)src->n, sizeof *dst->names))) return false;
    for (int32_t i = 0; i < src->n; i++)
        if (!(dst->names[i] = strdup(src->names[i]))) return false;
    return true;
}

/* The lines with the wrong number of fields: one summary when no line had the right
 * number (a plain-text file given to a TSV task: "classify expects label<TAB>text"), else
 * the first of them while fewer than five bad lines are listed, and a count of the rest. */
static void report_bad_lines(tsv_ctx *c)
{
    const struct task_info *ti = &data_task_info[c->ds->task];
    char form[64];
    size_t k = 0;
    for (const char *p = ti->field_names; *p && k + 6 < sizeof form; p++) {
        if (p[0] == ',' && p[1] == ' ') {
            memcpy(form + k, "<TAB>", 5), k += 5, p++;
            continue;
        }
        form[k++] = *p;
    }
    form[k] = 0;
    if (c->bad_lines == c->lines && c->lines > 1) {
        kiln_diags_add(c->d, c->path, 0, 0, NULL,
                       "%s expects %s on each line, but none of the %llu lines has %d tab-separated fields (line "
                       "%llu has %d)%s",
                       task_names[c->ds->task], form, (unsigned long long)c->lines, ti->fields,
                       (unsigned long long)c->bad_at[0], c->bad_count[0],
                       c->bad_count[0] == 1 ? "; plain text is read by --task clm or mlm" : "");
        return;
    }
    uint64_t shown = 0;
    for (; shown < c->bad_lines && shown < 5 && c->listed < MAX_LISTED; shown++, c->listed++)
        kiln_diags_add(c->d, c->path, line_int(c->bad_at[shown]), 1, NULL,
                       "expected %d tab-separated fields (%s), found %d", ti->fields, ti->field_names,
                       c->bad_count[shown]);
    if (c->bad_lines > shown)
        kiln_diags_add(c->d, c->path, 0, 0, NULL, "and %llu more lines without %d tab-separated fields (%s)",
                       (unsigned long long)(c->bad_lines - shown), ti->fields, form);
}

static bool load_tsv(kiln_dataset *ds, FILE *f, const char *path, const kiln_tokenizer *tok,
                     const kiln_labels *given, kiln_diags *d)
{
    tsv_ctx c = {.ds = ds, .tok = tok, .path = path, .d = d};
    if (ds->task == KILN_TASK_CLASSIFY) c.given = given;
    line_reader r = {.f = f, .buf = malloc(MAX_LINE + 1)};
    bool ok = r.buf != NULL;
    if (ok && given && ds->task == KILN_TASK_CLASSIFY) {
        ok = copy_labels(&ds->labels, given);
        for (int32_t i = 0; ok && !given->numeric && i < given->n; i++)
            ok = strset_find(&c.fixed, given->names[i], strlen(given->names[i]), true, &c.oom) == i;
    }
    if (!ok) c.oom = true;
    while (!c.oom) {
        char *text;
        size_t n;
        int got = next_line(&r, &text, &n);
        if (got == LINE_END) break;
        if (got == LINE_READ_ERROR) {
            kiln_diags_add(d, path, 0, 0, NULL, "read error");
            c.errors++;
            break;
        }
        if (got == LINE_TOO_LONG) {
            line_error(&c, r.line, 0, "line longer than %u bytes", MAX_LINE);
            continue;
        }
        if (n > 0) tsv_line(&c, r.line, text, n);
    }
    if (c.bad_lines) report_bad_lines(&c);
    if (c.unlisted)
        kiln_diags_add(d, path, 0, 0, NULL, "and %llu more bad line%s", (unsigned long long)c.unlisted,
                       c.unlisted == 1 ? "" : "s");
    if (!c.oom && c.errors == 0 && ds->n_examples == 0) {
        kiln_diags_add(d, path, 0, 0, NULL, "no examples (expected lines of %s separated by tabs)",
                       data_task_info[ds->task].field_names);
        c.errors++;
    }
    if (!c.oom && c.errors == 0 && ds->task == KILN_TASK_CLASSIFY && !given && !finish_classes(&c)) c.oom = true;
    if (c.oom) kiln_diags_add(d, path, 0, 0, NULL, "out of memory while loading");
    free(r.buf);
    strset_free(&c.fixed);
    strset_free(&c.seen);
    ds->tokens = c.tokens.v;
    ds->n_tokens = c.tokens.n;
    return !c.oom && c.errors == 0;
}

bool kiln_dataset_load(kiln_dataset *ds, kiln_task task, const char *path, const kiln_tokenizer *tok,
                       const kiln_data_options *opt, kiln_diags *d)
{
    memset(ds, 0, sizeof *ds);
    if (task < 0 || task >= KILN_N_TASKS) {
        kiln_diags_add(d, path, 0, 0, NULL, "unknown task");
        return false;
    }
    ds->task = task;
    bool bin = is_bin_path(path);
    if (bin && !is_stream_task(task)) {
        kiln_diags_add(d, path, 0, 0, NULL, "task %s reads TSV lines (%s), not a .bin token file", task_names[task],
                       data_task_info[task].field_names);
        return false;
    }
    if (!(ds->path = strdup(path))) {
        kiln_diags_add(d, path, 0, 0, NULL, "out of memory");
        return false;
    }
    FILE *f = kiln_data_open(path, d);
    if (!f) {
        kiln_dataset_free(ds);
        return false;
    }
    int64_t max_id = opt && opt->max_id > 0 ? opt->max_id : kiln_tokenizer_vocab(tok);
    bool ok = bin ? load_bin(ds, f, path, max_id, d)
              : is_stream_task(task) ? load_text(ds, f, path, tok, d)
                                     : load_tsv(ds, f, path, tok, opt ? opt->labels : NULL, d);
    fclose(f);
    if (!ok) kiln_dataset_free(ds);
    return ok;
}

bool kiln_data_train_tokenizer(kiln_tokenizer *tok, const kiln_tokenizer_config *cfg, kiln_task task,
                               const char *path, kiln_diags *d)
{
    memset(tok, 0, sizeof *tok);
    if (cfg->kind == KILN_TOK_BYTE) {
        kiln_tokenizer_init_byte(tok);
        return true;
    }
    if (is_bin_path(path)) {
        kiln_diags_add(d, path, 0, 0, NULL,
                       "a .bin file holds token ids already: a %s tokenizer cannot be trained on it",
                       cfg->kind == KILN_TOK_CHAR ? "char" : "bpe");
        return false;
    }
    kiln_tok_trainer *tr = kiln_tok_trainer_new(cfg, d);
    if (!tr) return false;
    FILE *f = kiln_data_open(path, d);
    char *buf = malloc(is_stream_task(task) ? BLOCK : MAX_LINE + 1);
    bool ok = f && buf;
    if (f && !buf) kiln_diags_add(d, path, 0, 0, NULL, "out of memory");
    if (ok && is_stream_task(task)) {
        size_t k;
        while (ok && (k = fread(buf, 1, BLOCK, f)) > 0) ok = kiln_tok_trainer_feed(tr, buf, k);
    } else if (ok) {
        line_reader r = {.f = f, .buf = buf};
        int got, which[2], nw = text_fields(task, which);
        char *text, *field[3];
        size_t n, len[3];
        while (ok && (got = next_line(&r, &text, &n)) != LINE_END && got != LINE_READ_ERROR) {
            if (got != LINE_OK || split_fields(text, n, 3, field, len) != data_task_info[task].fields) continue;
            for (int i = 0; i < nw && ok; i++)
                ok = kiln_tok_trainer_feed(tr, field[which[i]], len[which[i]]) && kiln_tok_trainer_end_document(tr);
        }
    }
    if (f && ferror(f)) {
        kiln_diags_add(d, path, 0, 0, NULL, "read error");
        ok = false;
    } else if (f && buf && !ok) {
        kiln_diags_add(d, path, 0, 0, NULL, "out of memory while training the tokenizer");
    }
    if (ok) ok = kiln_tok_trainer_finish(tr, tok, d);
    free(buf);
    if (f) fclose(f);
    kiln_tok_trainer_free(tr);
    return ok;
}
