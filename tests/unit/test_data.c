/* test_data.c — datasets and batchers (driver/data.c, driver/batcher.c).
 *
 * Design: every test writes its data files into one fresh temporary directory (group
 * setup/teardown). Batches are checked cell by cell against what the task's layout
 * (docs/data.md) says they must hold, usually with the byte tokenizer so that expected
 * ids are just characters. Token streams come from .bin files of known ids, so a
 * window's position in the stream can be read off its first token. Randomness is
 * checked statistically where the rule is a proportion (mlm) and exactly where it is a
 * promise (every example once per epoch, same seed → same batches, a restored state →
 * the same continuation). Hostile inputs must fail with a diagnostic naming file:line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

static char g_dir[64];

static int setup_dir(void **state)
{
    strcpy(g_dir, "/tmp/kiln_data_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    return rmdir(g_dir);
}

/* Writes bytes to NAME in the test directory; returns its path (static, 4 in rotation). */
static const char *write_file(const char *name, const void *data, size_t len)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return p;
}

static const char *write_text(const char *name, const char *text) { return write_file(name, text, strlen(text)); }

/* A .bin file of the given ids (little-endian uint16). */
static const char *write_bin(const char *name, const int32_t *ids, size_t n)
{
    unsigned char *b = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        b[2 * i] = (unsigned char)(ids[i] & 0xff);
        b[2 * i + 1] = (unsigned char)(ids[i] >> 8);
    }
    const char *p = write_file(name, b, 2 * n);
    free(b);
    return p;
}

static kiln_dataset load(kiln_task task, const char *path, const kiln_tokenizer *tok, const kiln_data_options *opt)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_dataset ds;
    bool ok = kiln_dataset_load(&ds, task, path, tok, opt, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    assert_true(ok);
    assert_int_equal(d.n, 0);
    kiln_diags_free(&d);
    return ds;
}

/* Loading must fail; returns the diagnostics for the caller to inspect (and free). */
static kiln_diags load_fails(kiln_task task, const char *path, const kiln_tokenizer *tok,
                             const kiln_data_options *opt)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_dataset ds;
    assert_false(kiln_dataset_load(&ds, task, path, tok, opt, &d));
    assert_true(d.n > 0);
    assert_null(ds.tokens);
    assert_null(ds.examples);
    return d;
}

/* Whether some diagnostic is at `line` (0: any) and contains `fragment`. */
static bool has_diag(const kiln_diags *d, int line, const char *fragment)
{
    for (int i = 0; i < d->n; i++)
        if ((line == 0 || d->items[i].line == line) && strstr(d->items[i].message, fragment)) return true;
    kiln_diags_print(d, stderr);
    return false;
}

static kiln_batch_options eval_options(void)
{
    kiln_batch_options o = kiln_batch_options_default();
    o.shuffle = false;
    return o;
}

static void batcher(kiln_batcher *bt, const kiln_dataset *ds, const kiln_tokenizer *tok, int64_t B,
                    const int64_t *cols, const kiln_batch_options *opt)
{
    kiln_diags d;
    kiln_diags_init(&d);
    bool ok = kiln_batcher_init(bt, ds, tok, B, cols, opt, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    assert_true(ok);
    kiln_diags_free(&d);
}

/* Buffers for one batch of a task: bufs[i] holds B × cols[i] ints. */
typedef struct batch_bufs {
    int32_t *b[KILN_TASK_MAX_INPUTS];
    size_t size[KILN_TASK_MAX_INPUTS];
    int n;
} batch_bufs;

static batch_bufs alloc_bufs(kiln_task task, int64_t B, const int64_t *cols)
{
    const int *ranks;
    batch_bufs bb = {.n = kiln_task_inputs(task, NULL, &ranks)};
    for (int i = 0; i < bb.n; i++) {
        bb.size[i] = (size_t)B * (size_t)(ranks[i] == 2 ? cols[i] : 1);
        bb.b[i] = malloc(bb.size[i] * sizeof(int32_t));
        memset(bb.b[i], 0x7f, bb.size[i] * sizeof(int32_t)); /* garbage the batcher must overwrite */
    }
    return bb;
}

static void free_bufs(batch_bufs *bb)
{
    for (int i = 0; i < bb->n; i++) free(bb->b[i]);
}

static bool bufs_equal(const batch_bufs *x, const batch_bufs *y)
{
    for (int i = 0; i < x->n; i++)
        if (memcmp(x->b[i], y->b[i], x->size[i] * sizeof(int32_t)) != 0) return false;
    return true;
}

/* Ids of a short ASCII string under the byte tokenizer, written into want[]. */
static void expect_row(const int32_t *row, const int32_t *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (row[i] != want[i]) fprintf(stderr, "column %lld: got %d, want %d\n", (long long)i, row[i], want[i]);
        assert_int_equal(row[i], want[i]);
    }
}

enum { PAD = 256, BOS = 257, EOS = 258, MASK = 259, CLS = 260, SEP = 261, IGN = -100 };

/* ---- tasks and files ------------------------------------------------------------------------------ */

static void test_task_table(void **state)
{
    kiln_task t;
    assert_true(kiln_task_parse("seq2seq", &t));
    assert_int_equal(t, KILN_TASK_SEQ2SEQ);
    assert_false(kiln_task_parse("regress", &t));
    assert_false(kiln_task_parse(NULL, &t));
    assert_string_equal(kiln_task_name(KILN_TASK_SPAN), "span");
    const char *const *names;
    const int *ranks;
    assert_int_equal(kiln_task_inputs(KILN_TASK_CLASSIFY, &names, &ranks), 3);
    assert_string_equal(names[2], "labels");
    assert_int_equal(ranks[2], 1);
    assert_int_equal(kiln_task_inputs(KILN_TASK_PAIRS, &names, &ranks), 4);
    assert_string_equal(names[3], "mask_b");
    assert_int_equal(kiln_task_inputs(KILN_TASK_SPAN, &names, &ranks), 4);
    assert_string_equal(names[2], "start");
    assert_int_equal(ranks[3], 1);
}

static void test_bin_files(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    int32_t ids[] = {0, 1, 255, 261, 7};
    kiln_dataset ds = load(KILN_TASK_CLM, write_bin("ok.bin", ids, 5), &byte, NULL);
    assert_int_equal(ds.n_tokens, 5);
    assert_memory_equal(ds.tokens, ids, sizeof ids);
    kiln_dataset_free(&ds);

    /* ids up to the model's vocabulary when it is given (here a GPT-2-sized one) */
    int32_t big[] = {50000, 65535, 3};
    kiln_data_options wide = {.max_id = 65536};
    ds = load(KILN_TASK_MLM, write_bin("big.bin", big, 3), &byte, &wide);
    assert_int_equal(ds.tokens[1], 65535);
    kiln_dataset_free(&ds);

    /* an id past the vocabulary (byte: 262 ids) */
    kiln_diags d = load_fails(KILN_TASK_CLM, write_bin("big2.bin", big, 3), &byte, NULL);
    assert_true(has_diag(&d, 0, "token 50000 at index 0 is outside the vocabulary (262 ids)"));
    assert_non_null(strstr(d.items[0].file, "big2.bin"));
    kiln_diags_free(&d);

    /* an odd number of bytes */
    const char *odd = write_file("odd.bin", "\x01\x00\x02", 3);
    d = load_fails(KILN_TASK_CLM, odd, &byte, NULL);
    assert_string_equal(d.items[0].file, odd);
    assert_true(has_diag(&d, 0, "3 bytes"));
    assert_true(has_diag(&d, 0, "must be even"));
    kiln_diags_free(&d);

    /* an empty file loads (0 tokens) but cannot make a batch */
    ds = load(KILN_TASK_CLM, write_file("empty.bin", "", 0), &byte, NULL);
    assert_int_equal(ds.n_tokens, 0);
    kiln_batcher bt;
    kiln_diags_init(&d);
    int64_t cols[] = {4, 4};
    assert_false(kiln_batcher_init(&bt, &ds, &byte, 2, cols, NULL, &d));
    assert_true(has_diag(&d, 0, "0 tokens: task clm with sequences of 4 needs at least 5"));
    kiln_diags_free(&d);
    kiln_dataset_free(&ds);

    /* labelled tasks do not read .bin, a missing file is named */
    d = load_fails(KILN_TASK_CLASSIFY, write_bin("x.bin", ids, 5), &byte, NULL);
    assert_true(has_diag(&d, 0, "reads TSV lines"));
    kiln_diags_free(&d);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope.txt", g_dir);
    d = load_fails(KILN_TASK_CLM, missing, &byte, NULL);
    assert_true(has_diag(&d, 0, "cannot open"));
    assert_string_equal(d.items[0].file, missing);
    kiln_diags_free(&d);
    kiln_tokenizer_free(&byte);
}

/* Text bigger than the loader's 1 MiB block: tokens must equal encoding it whole,
 * whatever a block boundary cuts (a BPE chunk, a UTF-8 sequence). */
static void test_text_files_across_blocks(void **state)
{
    size_t len = 0, cap = (3u << 20) / 2;
    char *text = malloc(cap + 64);
    static const char *const words[] = {"le ", "café ", "世界 ", "naïve\n", "x", "  ", "42, ", "😀"};
    for (unsigned i = 0; len < cap; i = i * 1103515245u + 12345u) {
        const char *w = words[(i >> 16) % 8];
        memcpy(text + len, w, strlen(w));
        len += strlen(w);
    }
    const char *path = write_file("big.txt", text, len);
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer_config cfgs[] = {{KILN_TOK_BPE, 400}, {KILN_TOK_CHAR, 0}, {KILN_TOK_BYTE, 0}};
    for (int k = 0; k < 3; k++) {
        kiln_tokenizer tok;
        assert_true(kiln_data_train_tokenizer(&tok, &cfgs[k], KILN_TASK_CLM, path, &d));
        kiln_dataset ds = load(KILN_TASK_CLM, path, &tok, NULL);
        kiln_ids whole = {0};
        assert_true(kiln_tokenizer_encode(&tok, text, len, &whole, NULL));
        assert_int_equal(ds.n_tokens, whole.n);
        assert_memory_equal(ds.tokens, whole.v, whole.n * sizeof *whole.v);
        if (cfgs[k].kind == KILN_TOK_CHAR) assert_int_equal(tok.base, 19); /* 18 distinct code points + U+FFFD */
        kiln_ids_free(&whole);
        kiln_dataset_free(&ds);
        kiln_tokenizer_free(&tok);
    }
    assert_int_equal(d.n, 0);
    kiln_diags_free(&d);
    free(text);
}

static void test_tsv_errors(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    const char *path = write_text("bad.tsv", "pos\tgood\n"
                                             "\n"
                                             "no tab here\n"
                                             "\tempty label\n"
                                             "neg\tfine\r\n"
                                             "a\tb\tc\n"
                                             "bad\xff\tlabel\n");
    kiln_diags d = load_fails(KILN_TASK_CLASSIFY, path, &byte, NULL);
    assert_int_equal(d.n, 4);
    assert_true(has_diag(&d, 3, "expected 2 tab-separated fields (label, text), found 1"));
    assert_true(has_diag(&d, 4, "empty label"));
    assert_true(has_diag(&d, 6, "found 3"));
    assert_true(has_diag(&d, 7, "not valid UTF-8"));
    for (int i = 0; i < d.n; i++) assert_string_equal(d.items[i].file, path);
    kiln_diags_free(&d);

    /* span: the answer must be in the context; the column points at the answer */
    path = write_text("bad_span.tsv", "the cat sat\twho sat\tcat\n"
                                      "the cat sat\twho sat\tdog\n"
                                      "the cat sat\twho\t\n"
                                      "only two\tfields\n");
    d = load_fails(KILN_TASK_SPAN, path, &byte, NULL);
    assert_int_equal(d.n, 3);
    assert_true(has_diag(&d, 2, "the answer 'dog' does not appear in the context"));
    assert_int_equal(d.items[0].col, 21);
    assert_true(has_diag(&d, 3, "empty answer"));
    assert_true(has_diag(&d, 4, "expected 3 tab-separated fields (context, question, answer), found 2"));
    kiln_diags_free(&d);

    /* a line over the 1 MiB limit is reported and skipped; later lines keep their numbers */
    size_t big = (1u << 20) + 100;
    char *text = malloc(big + 100);
    strcpy(text, "a\tb\n");
    memset(text + 4, 'x', big);
    strcpy(text + 4 + big, "\nc\td\nbroken\n");
    path = write_text("long.tsv", text);
    d = load_fails(KILN_TASK_SEQ2SEQ, path, &byte, NULL);
    assert_int_equal(d.n, 2);
    assert_true(has_diag(&d, 2, "line longer than 1048576 bytes"));
    assert_true(has_diag(&d, 4, "found 1"));
    kiln_diags_free(&d);
    free(text);

    /* nothing usable at all */
    d = load_fails(KILN_TASK_PAIRS, write_text("blank.tsv", "\n\r\n\n"), &byte, NULL);
    assert_true(has_diag(&d, 0, "no examples"));
    kiln_diags_free(&d);
    kiln_tokenizer_free(&byte);
}

/* ---- classify ------------------------------------------------------------------------------------ */

static void test_classify_labels(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_dataset ds = load(KILN_TASK_CLASSIFY, write_text("names.tsv", "pos\ta\nneg\tb\npos\tc\nmeh\td\n"), &byte, NULL);
    assert_false(ds.labels.numeric);
    assert_int_equal(ds.labels.n, 3);
    assert_string_equal(ds.labels.names[0], "pos");
    assert_string_equal(ds.labels.names[1], "neg");
    assert_string_equal(ds.labels.names[2], "meh");
    int32_t want[] = {0, 1, 0, 2};
    for (int i = 0; i < 4; i++) assert_int_equal(ds.examples[i].label, want[i]);
    assert_int_equal(ds.examples[3].line, 4);

    /* the classes travel through a checkpoint as text */
    char *s = kiln_labels_serialize(&ds.labels);
    assert_string_equal(s, "kiln-labels/1 names 3\tpos\tneg\tmeh");
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_labels back;
    assert_true(kiln_labels_deserialize(&back, s, NULL, NULL, &d));
    free(s);

    /* validation data uses the training classes, whatever order it lists them in */
    kiln_data_options opt = {.labels = &back};
    kiln_dataset val = load(KILN_TASK_CLASSIFY, write_text("val.tsv", "meh\tx\npos\ty\n"), &byte, &opt);
    assert_int_equal(val.examples[0].label, 2);
    assert_int_equal(val.examples[1].label, 0);
    assert_int_equal(val.labels.n, 3);
    kiln_dataset_free(&val);
    kiln_diags_free(&d);
    d = load_fails(KILN_TASK_CLASSIFY, write_text("val2.tsv", "pos\tx\nwow\ty\n"), &byte, &opt);
    assert_true(has_diag(&d, 2, "label 'wow' is not one of the training set's classes"));
    kiln_diags_free(&d);
    kiln_labels_free(&back);
    kiln_dataset_free(&ds);

    /* numeric labels are used as they are */
    ds = load(KILN_TASK_CLASSIFY, write_text("num.tsv", "2\ta\n0\tb\n7\tc\n"), &byte, NULL);
    assert_true(ds.labels.numeric);
    assert_int_equal(ds.labels.n, 8);
    assert_int_equal(ds.examples[0].label, 2);
    assert_int_equal(ds.examples[2].label, 7);
    s = kiln_labels_serialize(&ds.labels);
    assert_string_equal(s, "kiln-labels/1 numeric 8");
    kiln_diags_init(&d);
    assert_true(kiln_labels_deserialize(&back, s, NULL, NULL, &d));
    free(s);
    opt.labels = &back;
    kiln_diags_free(&d);
    d = load_fails(KILN_TASK_CLASSIFY, write_text("num2.tsv", "1\tx\none\ty\n"), &byte, &opt);
    assert_true(has_diag(&d, 2, "not a class number"));
    kiln_diags_free(&d);
    /* a class number past the training set's classes (0 to 7) is refused on its line, as a name is */
    d = load_fails(KILN_TASK_CLASSIFY, write_text("num3.tsv", "7\tx\n8\ty\n"), &byte, &opt);
    assert_true(has_diag(&d, 2, "label 8 is not one of the training set's classes (0 to 7)"));
    kiln_diags_free(&d);
    kiln_labels_free(&back);
    kiln_dataset_free(&ds);

    /* hostile class lists */
    const char *bad[] = {NULL, "", "kiln-labels/1 numeric", "kiln-labels/1 numeric 0", "kiln-labels/1 numeric 3 x",
                         "kiln-labels/1 numeric 9999999999", "kiln-labels/1 names 2\ta", "kiln-labels/1 names 1\ta\tb",
                         "kiln-labels/1 names 2\ta\ta", "kiln-labels/1 names 2\ta\t", "kiln-labels/1 names 1\t\xff",
                         "kiln-labels/1 names 1\ta\nb", "kiln-labels/1 names 99999999\ta", "kiln-labels/2 numeric 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_diags_init(&d);
        assert_false(kiln_labels_deserialize(&back, bad[i], "ck", "labels", &d));
        assert_int_equal(d.n, 1);
        assert_non_null(strstr(d.items[0].message, "invalid class list"));
        assert_null(back.names);
        kiln_diags_free(&d);
    }
    kiln_tokenizer_free(&byte);
}

static void test_classify_batch(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_dataset ds = load(KILN_TASK_CLASSIFY, write_text("c.tsv", "1\thi\n0\tabcdefgh\n1\t\n"), &byte, NULL);
    int64_t cols[] = {6, 6, 1};
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, 3, cols, &opt);
    batch_bufs bb = alloc_bufs(KILN_TASK_CLASSIFY, 3, cols);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 3);
    /* <cls> first, truncated to T, padded with <pad>; mask 1 on real tokens */
    expect_row(bb.b[0], (int32_t[]){CLS, 'h', 'i', PAD, PAD, PAD}, 6);
    expect_row(bb.b[1], (int32_t[]){1, 1, 1, 0, 0, 0}, 6);
    expect_row(bb.b[0] + 6, (int32_t[]){CLS, 'a', 'b', 'c', 'd', 'e'}, 6);
    expect_row(bb.b[1] + 6, (int32_t[]){1, 1, 1, 1, 1, 1}, 6);
    expect_row(bb.b[0] + 12, (int32_t[]){CLS, PAD, PAD, PAD, PAD, PAD}, 6);
    expect_row(bb.b[2], (int32_t[]){1, 0, 1}, 3);
    kiln_batcher_free(&bt);

    opt.add_cls = false;
    batcher(&bt, &ds, &byte, 3, cols, &opt);
    kiln_batcher_next(&bt, bb.b);
    expect_row(bb.b[0], (int32_t[]){'h', 'i', PAD, PAD, PAD, PAD}, 6);
    expect_row(bb.b[1], (int32_t[]){1, 1, 0, 0, 0, 0}, 6);
    expect_row(bb.b[1] + 12, (int32_t[]){0, 0, 0, 0, 0, 0}, 6);
    kiln_batcher_free(&bt);
    free_bufs(&bb);

    /* a mask narrower than its tokens is refused, naming the input */
    kiln_diags d;
    kiln_diags_init(&d);
    int64_t wrong[] = {6, 5, 1};
    assert_false(kiln_batcher_init(&bt, &ds, &byte, 3, wrong, NULL, &d));
    assert_string_equal(d.items[0].where, "mask");
    assert_true(has_diag(&d, 0, "5 columns, but 'tokens' has 6"));
    kiln_diags_free(&d);
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&byte);
}

/* Without shuffling the pass ends: the last batch is partly filler, then all filler. */
static void test_eval_pass_and_filler(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_dataset ds = load(KILN_TASK_CLASSIFY, write_text("five.tsv", "0\ta\n1\tb\n2\tc\n3\td\n4\te\n"), &byte, NULL);
    int64_t cols[] = {3, 3, 1};
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, 4, cols, &opt);
    assert_int_equal(kiln_batcher_epoch_size(&bt), 5);
    batch_bufs bb = alloc_bufs(KILN_TASK_CLASSIFY, 4, cols), first = alloc_bufs(KILN_TASK_CLASSIFY, 4, cols);
    assert_int_equal(kiln_batcher_next(&bt, first.b), 4);
    expect_row(first.b[2], (int32_t[]){0, 1, 2, 3}, 4);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 1);
    expect_row(bb.b[2], (int32_t[]){4, IGN, IGN, IGN}, 4);
    expect_row(bb.b[0] + 3, (int32_t[]){PAD, PAD, PAD}, 3);
    expect_row(bb.b[1] + 9, (int32_t[]){0, 0, 0}, 3);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 0);
    expect_row(bb.b[2], (int32_t[]){IGN, IGN, IGN, IGN}, 4);
    kiln_batcher_rewind(&bt);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 4);
    assert_true(bufs_equal(&bb, &first));
    free_bufs(&bb);
    free_bufs(&first);
    kiln_batcher_free(&bt);
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&byte);
}

/* ---- pairs, seq2seq, span ------------------------------------------------------------------------- */

static void test_pairs_batch(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_dataset ds = load(KILN_TASK_PAIRS, write_text("p.tsv", "ab\twxyz\n"), &byte, NULL);
    int64_t cols[] = {4, 4, 3, 3};
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, 1, cols, &opt);
    batch_bufs bb = alloc_bufs(KILN_TASK_PAIRS, 1, cols);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 1);
    expect_row(bb.b[0], (int32_t[]){CLS, 'a', 'b', PAD}, 4);
    expect_row(bb.b[1], (int32_t[]){1, 1, 1, 0}, 4);
    expect_row(bb.b[2], (int32_t[]){CLS, 'w', 'x'}, 3);
    expect_row(bb.b[3], (int32_t[]){1, 1, 1}, 3);
    free_bufs(&bb);
    kiln_batcher_free(&bt);
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&byte);
}

static void test_seq2seq_batch(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_dataset ds = load(KILN_TASK_SEQ2SEQ, write_text("s.tsv", "abc\txy\nlonger source\tpqrstu\n"), &byte, NULL);
    int64_t cols[] = {5, 5, 4, 4};
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, 2, cols, &opt);
    batch_bufs bb = alloc_bufs(KILN_TASK_SEQ2SEQ, 2, cols);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 2);
    expect_row(bb.b[0], (int32_t[]){'a', 'b', 'c', PAD, PAD}, 5);
    expect_row(bb.b[1], (int32_t[]){1, 1, 1, 0, 0}, 5);
    /* tgt_in = <bos> target, tgt_out = target <eos>, the rest ignored */
    expect_row(bb.b[2], (int32_t[]){BOS, 'x', 'y', PAD}, 4);
    expect_row(bb.b[3], (int32_t[]){'x', 'y', EOS, IGN}, 4);
    /* truncated: no <eos>, but still shifted by one */
    expect_row(bb.b[0] + 5, (int32_t[]){'l', 'o', 'n', 'g', 'e'}, 5);
    expect_row(bb.b[1] + 5, (int32_t[]){1, 1, 1, 1, 1}, 5);
    expect_row(bb.b[2] + 4, (int32_t[]){BOS, 'p', 'q', 'r'}, 4);
    expect_row(bb.b[3] + 4, (int32_t[]){'p', 'q', 'r', 's'}, 4);
    kiln_batcher_free(&bt);

    /* a model whose loss ignores <pad> (ignore_index 256) gets <pad> there instead */
    opt.ignore_index = PAD;
    batcher(&bt, &ds, &byte, 2, cols, &opt);
    kiln_batcher_next(&bt, bb.b);
    expect_row(bb.b[3], (int32_t[]){'x', 'y', EOS, PAD}, 4);
    free_bufs(&bb);
    kiln_batcher_free(&bt);
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&byte);
}

static void test_span_batch(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    const char *path = write_text("q.tsv", "the cat sat\twho\tcat\n"
                                           "a long context where the answer comes late\tq\tlate\n");
    kiln_dataset ds = load(KILN_TASK_SPAN, path, &byte, NULL);
    assert_int_equal(ds.examples[0].start, 4);
    assert_int_equal(ds.examples[0].end, 6);
    int64_t cols[] = {20, 20, 1, 1};
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, 1, cols, &opt);
    /* the second answer ends at 2 + 42 = 44 ≥ 20: dropped, counted */
    assert_int_equal(bt.n_skipped, 1);
    assert_int_equal(kiln_batcher_epoch_size(&bt), 1);
    batch_bufs bb = alloc_bufs(KILN_TASK_SPAN, 1, cols);
    assert_int_equal(kiln_batcher_next(&bt, bb.b), 1);
    /* question, <sep>, context */
    expect_row(bb.b[0], (int32_t[]){'w', 'h', 'o', SEP, 't', 'h', 'e', ' ', 'c', 'a', 't', ' ', 's', 'a', 't', PAD}, 16);
    assert_int_equal(bb.b[1][14], 1);
    assert_int_equal(bb.b[1][15], 0);
    assert_int_equal(bb.b[2][0], 8);
    assert_int_equal(bb.b[3][0], 10);
    expect_row(bb.b[0] + 8, (int32_t[]){'c', 'a', 't'}, 3);
    free_bufs(&bb);
    kiln_batcher_free(&bt);

    /* nothing fits at all */
    kiln_diags d;
    kiln_diags_init(&d);
    int64_t tiny[] = {6, 6, 1, 1};
    assert_false(kiln_batcher_init(&bt, &ds, &byte, 1, tiny, NULL, &d));
    assert_true(has_diag(&d, 0, "no example fits 6 tokens (2 answers would be cut off)"));
    kiln_diags_free(&d);
    kiln_dataset_free(&ds);

    /* with BPE the answer may start or end inside a token: start/end are the tokens
     * that hold its first and last byte, so they always cover it */
    kiln_tokenizer_config cfg = {KILN_TOK_BPE, 320};
    path = write_text("q2.tsv", "the cat sat on the mat\twhere\tat on\n"
                                "the cat sat on the mat\twho\tcat\n"
                                "the cat sat on the mat\twhat\the mat\n");
    kiln_tokenizer bpe;
    kiln_diags_init(&d);
    assert_true(kiln_data_train_tokenizer(&bpe, &cfg, KILN_TASK_SPAN, path, &d));
    ds = load(KILN_TASK_SPAN, path, &bpe, NULL);
    const char *answers[] = {"at on", "cat", "he mat"};
    for (int i = 0; i < 3; i++) {
        const kiln_example *ex = &ds.examples[i];
        const int32_t *ctx = ds.tokens + ex->field[1];
        size_t n;
        char *covered = kiln_tokenizer_decode(&bpe, ctx + ex->start, (size_t)(ex->end - ex->start + 1), false, &n);
        char *before = kiln_tokenizer_decode(&bpe, ctx, (size_t)ex->start, false, &n);
        assert_non_null(strstr(covered, answers[i]));
        /* minimal: the first and last token each hold part of the answer */
        const char *ctx_text = "the cat sat on the mat";
        size_t a0 = (size_t)(strstr(ctx_text, answers[i]) - ctx_text);
        assert_true(strlen(before) <= a0);
        size_t first_len;
        kiln_tokenizer_token(&bpe, ctx[ex->start], &first_len);
        assert_true(strlen(before) + first_len > a0);
        free(covered);
        free(before);
    }
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&bpe);
    kiln_diags_free(&d);
    kiln_tokenizer_free(&byte);
}

/* ---- clm, mlm ---------------------------------------------------------------------------------------- */

/* A stream 0, 1, 2, …: every window's position is its first token. */
static const char *counting_bin(const char *name, size_t n, int32_t modulo)
{
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(i % (size_t)modulo);
    const char *p = write_bin(name, ids, n);
    free(ids);
    return p;
}

static void test_clm_batches(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_data_options wide = {.max_id = 1000};
    kiln_dataset ds = load(KILN_TASK_CLM, counting_bin("count.bin", 1000, 1000), &byte, &wide);
    int64_t T = 8, B = 4, cols[] = {8, 8};

    /* evaluation: windows from 0, back to back, targets the next tokens */
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, B, cols, &opt);
    assert_int_equal(kiln_batcher_epoch_size(&bt), (1000 - 9) / 8 + 1);
    batch_bufs bb = alloc_bufs(KILN_TASK_CLM, B, cols);
    kiln_batcher_next(&bt, bb.b);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            assert_int_equal(bb.b[0][b * T + t], b * T + t);
            assert_int_equal(bb.b[1][b * T + t], b * T + t + 1);
        }
    kiln_batcher_free(&bt);

    /* training: each epoch uses every window once, from a random shift in [0, T); one
     * row per batch so that no batch straddles two epochs */
    opt = kiln_batch_options_default();
    opt.seed = 5;
    batcher(&bt, &ds, &byte, 1, cols, &opt);
    int shifts_seen[8] = {0};
    for (int epoch = 0; epoch < 6; epoch++) {
        unsigned char seen[1000] = {0};
        size_t n = 0, shift = 0;
        for (size_t k = 0; k == 0 || k < n; k++) {
            assert_int_equal(kiln_batcher_next(&bt, bb.b), 1);
            assert_int_equal(kiln_batcher_state(&bt).epoch, (uint64_t)epoch);
            int32_t first = bb.b[0][0];
            if (k == 0) { /* the epoch has begun: its size and shift are known now */
                n = kiln_batcher_epoch_size(&bt);
                shift = (size_t)first % (size_t)T;
                assert_int_equal(n, (1000 - 9 - shift) / 8 + 1);
                shifts_seen[shift]++;
            }
            assert_int_equal((size_t)first % (size_t)T, shift);
            assert_false(seen[first]);
            seen[first] = 1;
            for (int64_t t = 0; t < T; t++) {
                assert_int_equal(bb.b[0][t], first + t);
                assert_int_equal(bb.b[1][t], first + t + 1);
            }
        }
    }
    int distinct = 0;
    for (int s = 0; s < 8; s++) distinct += shifts_seen[s] > 0;
    assert_true(distinct >= 2); /* the boundaries move between epochs */
    free_bufs(&bb);
    kiln_batcher_free(&bt);

    /* too little data for one window */
    kiln_diags d;
    kiln_diags_init(&d);
    int64_t wide_cols[] = {1000, 1000};
    assert_false(kiln_batcher_init(&bt, &ds, &byte, 1, wide_cols, NULL, &d));
    assert_true(has_diag(&d, 0, "1000 tokens: task clm with sequences of 1000 needs at least 1001"));
    kiln_diags_free(&d);
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&byte);
}

/* mlm over a long random stream with <pad> at every 7th position, in evaluation order
 * so that each window's original tokens are known: 15% of the non-pad positions are
 * chosen; of those 80% <mask>, 10% random, 10% unchanged; pads are never chosen. The
 * tolerances are about 5 standard deviations at 25,000 chosen positions. */
static void test_mlm_masking(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    size_t n = 200000;
    int32_t *ids = malloc(n * sizeof *ids);
    kiln_rng r;
    kiln_rng_seed(&r, 1, "stream");
    for (size_t i = 0; i < n; i++) ids[i] = i % 7 == 3 ? PAD : (int32_t)(kiln_rng_next(&r) % 256);
    kiln_dataset ds = load(KILN_TASK_MLM, write_bin("mlm.bin", ids, n), &byte, NULL);
    int64_t T = 64, B = 25, cols[] = {64, 64};
    kiln_batch_options opt = eval_options();
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, B, cols, &opt);
    batch_bufs bb = alloc_bufs(KILN_TASK_MLM, B, cols);
    size_t eligible = 0, chosen = 0, masked = 0, random = 0, same = 0, window = 0, rows_without = 0;
    int64_t real;
    while ((real = kiln_batcher_next(&bt, bb.b)) > 0) {
        for (int64_t b = 0; b < real; b++, window++) {
            const int32_t *orig = ids + window * (size_t)T, *tok = bb.b[0] + b * T, *tgt = bb.b[1] + b * T;
            size_t row_chosen = 0, row_eligible = 0;
            for (int64_t t = 0; t < T; t++) {
                if (orig[t] == PAD) {
                    assert_int_equal(tok[t], PAD); /* never chosen */
                    assert_int_equal(tgt[t], IGN);
                    continue;
                }
                row_eligible++;
                if (tgt[t] == IGN) {
                    assert_int_equal(tok[t], orig[t]);
                    continue;
                }
                row_chosen++;
                assert_int_equal(tgt[t], orig[t]);
                if (tok[t] == MASK) masked++;
                else if (tok[t] == orig[t]) same++;
                else {
                    assert_true(tok[t] >= 0 && tok[t] < 256); /* random ordinary tokens */
                    random++;
                }
            }
            /* 15% per row, rounded down or up */
            assert_true(row_chosen == row_eligible * 15 / 100 || row_chosen == row_eligible * 15 / 100 + 1);
            rows_without += row_chosen == 0;
            eligible += row_eligible;
            chosen += row_chosen;
        }
    }
    assert_int_equal(window, n / (size_t)T);
    assert_int_equal(rows_without, 0);
    double fc = (double)chosen / (double)eligible, fm = (double)masked / (double)chosen,
           fr = (double)random / (double)chosen, fs = (double)same / (double)chosen;
    print_message("mlm: chosen %.4f, of those <mask> %.4f, random %.4f, unchanged %.4f (%zu chosen)\n", fc, fm, fr,
                  fs, chosen);
    assert_true(fabs(fc - 0.15) < 0.003);
    assert_true(fabs(fm - 0.80) < 0.02);
    assert_true(fabs(fr - 0.10 * 255.0 / 256.0) < 0.015);  /* a random token can equal the original */
    assert_true(fabs(fs - (0.10 + 0.10 / 256.0)) < 0.015);

    /* evaluation passes are repeatable */
    batch_bufs a = alloc_bufs(KILN_TASK_MLM, B, cols);
    kiln_batcher_rewind(&bt);
    kiln_batcher_next(&bt, a.b);
    kiln_batcher_rewind(&bt);
    kiln_batcher_next(&bt, bb.b);
    assert_true(bufs_equal(&a, &bb));
    free_bufs(&a);
    free_bufs(&bb);
    kiln_batcher_free(&bt);
    kiln_dataset_free(&ds);
    free(ids);
    kiln_tokenizer_free(&byte);
}

/* ---- order, seeds, resume ------------------------------------------------------------------------- */

static void test_shuffle_every_example_once(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    char text[400] = "";
    for (int i = 0; i < 10; i++) sprintf(text + strlen(text), "%d\tex%d\n", i, i);
    kiln_dataset ds = load(KILN_TASK_CLASSIFY, write_text("ten.tsv", text), &byte, NULL);
    int64_t cols[] = {4, 4, 1};
    kiln_batch_options opt = kiln_batch_options_default();
    opt.seed = 42;
    kiln_batcher bt;
    batcher(&bt, &ds, &byte, 5, cols, &opt);
    batch_bufs bb = alloc_bufs(KILN_TASK_CLASSIFY, 5, cols);
    int order[3][10];
    for (int epoch = 0; epoch < 3; epoch++) {
        int count[10] = {0};
        for (int half = 0; half < 2; half++) {
            assert_int_equal(kiln_batcher_next(&bt, bb.b), 5);
            for (int b = 0; b < 5; b++) {
                count[bb.b[2][b]]++;
                order[epoch][half * 5 + b] = bb.b[2][b];
            }
        }
        for (int i = 0; i < 10; i++) assert_int_equal(count[i], 1);
    }
    assert_true(memcmp(order[0], order[1], sizeof order[0]) != 0 || memcmp(order[1], order[2], sizeof order[0]) != 0);
    kiln_batcher_free(&bt);

    /* same seed, same order; another seed, another order */
    batcher(&bt, &ds, &byte, 5, cols, &opt);
    kiln_batcher_next(&bt, bb.b);
    for (int b = 0; b < 5; b++) assert_int_equal(bb.b[2][b], order[0][b]);
    kiln_batcher_free(&bt);
    opt.seed = 43;
    batcher(&bt, &ds, &byte, 5, cols, &opt);
    int differ = 0;
    for (int k = 0; k < 2; k++) {
        kiln_batcher_next(&bt, bb.b);
        for (int b = 0; b < 5; b++) differ += bb.b[2][b] != order[0][k * 5 + b];
    }
    assert_true(differ > 0);
    free_bufs(&bb);
    kiln_batcher_free(&bt);
    kiln_dataset_free(&ds);
    kiln_tokenizer_free(&byte);
}

/* Saving the state after k batches and restoring it in a fresh batcher continues with
 * exactly the batches the first one produces, for a stream task with random masking
 * and for a labelled one, across epoch boundaries. */
static void check_resume(kiln_task task, const char *path, const kiln_tokenizer *tok, const int64_t *cols, int64_t B)
{
    kiln_dataset ds = load(task, path, tok, NULL);
    kiln_batch_options opt = kiln_batch_options_default();
    opt.seed = 9;
    kiln_batcher a, b;
    batcher(&a, &ds, tok, B, cols, &opt);
    batch_bufs x = alloc_bufs(task, B, cols), y = alloc_bufs(task, B, cols);
    for (int i = 0; i < 7; i++) kiln_batcher_next(&a, x.b);
    char text[256];
    kiln_batch_state st = kiln_batcher_state(&a), parsed;
    kiln_batch_state_format(&st, text, sizeof text);
    assert_true(kiln_batch_state_parse(&parsed, text));
    assert_memory_equal(&parsed, &st, sizeof st);

    kiln_batch_options other = opt;
    other.seed = 1234; /* the state carries the seed */
    batcher(&b, &ds, tok, B, cols, &other);
    kiln_diags d;
    kiln_diags_init(&d);
    assert_true(kiln_batcher_restore(&b, &parsed, &d));
    for (int i = 0; i < 25; i++) {
        assert_int_equal(kiln_batcher_next(&a, x.b), B);
        assert_int_equal(kiln_batcher_next(&b, y.b), B);
        assert_true(bufs_equal(&x, &y));
    }
    assert_true(kiln_batcher_state(&a).epoch >= 1);

    /* a state that does not fit this data is refused and changes nothing */
    kiln_batch_state bad = kiln_batcher_state(&b);
    bad.pos = 1u << 30;
    assert_false(kiln_batcher_restore(&b, &bad, &d));
    assert_true(has_diag(&d, 0, "does not fit this data"));
    bad = kiln_batcher_state(&b);
    memset(&bad.rng, 0, sizeof bad.rng);
    assert_false(kiln_batcher_restore(&b, &bad, &d));
    kiln_batcher_next(&a, x.b);
    kiln_batcher_next(&b, y.b);
    assert_true(bufs_equal(&x, &y));
    kiln_diags_free(&d);
    free_bufs(&x);
    free_bufs(&y);
    kiln_batcher_free(&a);
    kiln_batcher_free(&b);
    kiln_dataset_free(&ds);
}

static void test_resume_exactly(void **state)
{
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    int64_t stream_cols[] = {16, 16};
    check_resume(KILN_TASK_MLM, counting_bin("resume.bin", 3000, 256), &byte, stream_cols, 8);
    check_resume(KILN_TASK_CLM, counting_bin("resume2.bin", 3000, 256), &byte, stream_cols, 8);
    char text[2000] = "";
    for (int i = 0; i < 37; i++) sprintf(text + strlen(text), "%s\tsentence %d\n", i % 3 ? "yes" : "no", i);
    int64_t cls_cols[] = {12, 12, 1};
    check_resume(KILN_TASK_CLASSIFY, write_text("resume.tsv", text), &byte, cls_cols, 6);

    kiln_batch_state st;
    const char *bad[] = {NULL, "", "kiln-batch/1", "kiln-batch/1 1 2 3 4 5 6", "kiln-batch/1 1 2 3 4 5 6 7 8",
                         "kiln-batch/1 1 2 3 4 5 6 18446744073709551616", "kiln-batch/1 1 2 3 4 5 6 -7",
                         "kiln-batch/1  1 2 3 4 5 6 7", "kiln-batch/2 1 2 3 4 5 6 7", "kiln-batch/1 1 2 3 4 5 6 7 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(kiln_batch_state_parse(&st, bad[i]));
    assert_true(kiln_batch_state_parse(&st, "kiln-batch/1 1 2 3 4 5 6 18446744073709551615"));
    assert_true(st.rng.s[3] == UINT64_MAX);
    kiln_tokenizer_free(&byte);
}

/* ---- tokenizer training from data files ------------------------------------------------------- */

static void test_train_tokenizer_from_data(void **state)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer tok;
    /* labels are not text: Z never reaches the char vocabulary */
    const char *path = write_text("t.tsv", "ZZZ\tabc\nZZZ\tcab\nnot a line\n");
    kiln_tokenizer_config ch = {KILN_TOK_CHAR, 0};
    assert_true(kiln_data_train_tokenizer(&tok, &ch, KILN_TASK_CLASSIFY, path, &d));
    assert_int_equal(tok.base, 4); /* a b c U+FFFD */
    kiln_tokenizer_free(&tok);
    /* span trains on context and question, not the answer (it is inside the context) */
    path = write_text("t2.tsv", "ctx\tq?\tc\n");
    assert_true(kiln_data_train_tokenizer(&tok, &ch, KILN_TASK_SPAN, path, &d));
    assert_int_equal(tok.base, 6); /* ? c q t x U+FFFD */
    kiln_tokenizer_free(&tok);
    /* seq2seq: both sides; a merge never spans two fields */
    path = write_text("t3.tsv", "ab\tab\nab\tab\n");
    kiln_tokenizer_config bpe = {KILN_TOK_BPE, 400};
    assert_true(kiln_data_train_tokenizer(&tok, &bpe, KILN_TASK_SEQ2SEQ, path, &d));
    assert_int_equal(tok.base, 257);
    assert_int_equal(tok.merges[0], 'a');
    assert_int_equal(tok.merges[1], 'b');
    kiln_tokenizer_free(&tok);
    assert_int_equal(d.n, 0);

    /* byte needs no data; char and bpe cannot learn from ids */
    kiln_tokenizer_config byte = {KILN_TOK_BYTE, 0};
    assert_true(kiln_data_train_tokenizer(&tok, &byte, KILN_TASK_CLM, "/nonexistent/file.txt", &d));
    assert_int_equal(tok.base, 256);
    kiln_tokenizer_free(&tok);
    int32_t ids[] = {1, 2};
    assert_false(kiln_data_train_tokenizer(&tok, &bpe, KILN_TASK_CLM, write_bin("t.bin", ids, 2), &d));
    assert_true(has_diag(&d, 0, "cannot be trained"));
    kiln_diags_free(&d);
    kiln_diags_init(&d);
    assert_false(kiln_data_train_tokenizer(&tok, &bpe, KILN_TASK_CLM, "/nonexistent/file.txt", &d));
    assert_true(has_diag(&d, 0, "cannot open"));
    kiln_diags_free(&d);
}

/* Seeded random files (tabs, newlines, CR, invalid UTF-8, digits) through every task:
 * each either loads or fails with diagnostics, and whatever loads either makes batches
 * or is refused by the batcher. Under ASan+UBSan this is a small fuzzer. */
static void test_hostile_files_never_crash(void **state)
{
    static const char alphabet[] = "ab1 \t\t\n\r\xff\xe2\x82\xac" "0";
    kiln_tokenizer byte;
    kiln_tokenizer_init_byte(&byte);
    kiln_rng r;
    kiln_rng_seed(&r, 17, "fuzz");
    int loaded = 0, batched = 0;
    char text[512];
    for (int iter = 0; iter < 600; iter++) {
        size_t n = kiln_rng_next(&r) % sizeof text;
        for (size_t i = 0; i < n; i++) text[i] = alphabet[kiln_rng_next(&r) % (sizeof alphabet - 1)];
        kiln_task task = (kiln_task)(iter % KILN_N_TASKS);
        const char *path = write_file(iter % 7 == 0 && task <= KILN_TASK_MLM ? "fuzz.bin" : "fuzz.tsv", text, n);
        kiln_tokenizer bpe, *tok = &byte;
        kiln_diags d;
        kiln_diags_init(&d);
        kiln_tokenizer_config cfg = {iter % 2 ? KILN_TOK_BPE : KILN_TOK_CHAR, 300};
        if (iter % 3 == 0 && kiln_data_train_tokenizer(&bpe, &cfg, task, path, &d)) tok = &bpe;
        kiln_dataset ds;
        if (kiln_dataset_load(&ds, task, path, tok, NULL, &d)) {
            loaded++;
            int64_t cols[] = {1 + (int64_t)(kiln_rng_next(&r) % 12), 0, 0, 0};
            cols[1] = cols[0];
            cols[2] = cols[3] = 1 + (int64_t)(kiln_rng_next(&r) % 12);
            if (task == KILN_TASK_CLASSIFY) cols[2] = 1;
            kiln_batcher bt;
            kiln_batch_options opt = kiln_batch_options_default();
            opt.shuffle = iter % 2;
            if (kiln_batcher_init(&bt, &ds, tok, 3, cols, &opt, &d)) {
                batched++;
                batch_bufs bb = alloc_bufs(task, 3, cols);
                for (int k = 0; k < 4; k++) kiln_batcher_next(&bt, bb.b);
                free_bufs(&bb);
                kiln_batcher_free(&bt);
            } else {
                assert_true(d.n > 0);
            }
            kiln_dataset_free(&ds);
        } else {
            assert_true(d.n > 0);
        }
        if (tok == &bpe) kiln_tokenizer_free(&bpe);
        kiln_diags_free(&d);
    }
    print_message("fuzz: %d of 600 files loaded, %d made batches\n", loaded, batched);
    assert_true(loaded > 0);
    assert_true(batched > 0);
    kiln_tokenizer_free(&byte);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_table),
        cmocka_unit_test(test_bin_files),
        cmocka_unit_test(test_text_files_across_blocks),
        cmocka_unit_test(test_tsv_errors),
        cmocka_unit_test(test_classify_labels),
        cmocka_unit_test(test_classify_batch),
        cmocka_unit_test(test_eval_pass_and_filler),
        cmocka_unit_test(test_pairs_batch),
        cmocka_unit_test(test_seq2seq_batch),
        cmocka_unit_test(test_span_batch),
        cmocka_unit_test(test_clm_batches),
        cmocka_unit_test(test_mlm_masking),
        cmocka_unit_test(test_shuffle_every_example_once),
        cmocka_unit_test(test_resume_exactly),
        cmocka_unit_test(test_train_tokenizer_from_data),
        cmocka_unit_test(test_hostile_files_never_crash),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
