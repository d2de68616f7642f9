/* fuzz_data.c — the data readers (driver/data.c): text, .bin token files and TSV, with
 * tokenizer training from a data file and a few batches drawn from what loaded.
 *
 * The first byte picks the task (clm, mlm, classify, pairs, seq2seq, span) and the
 * tokenizer (byte, or char/BPE trained on the file itself, as `kiln train` does), and
 * whether the file is a .bin; the rest is the file. Properties: no crash; a dataset that
 * loads gives batches whose ids are inside the vocabulary (or the ignore index); a
 * batcher state survives format → parse.
 */
#include <string.h>

#include "data.h"
#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384) return 0;
    unsigned pick = data[0] % (KILN_N_TASKS * 3 * 2);
    kiln_task task = (kiln_task)(pick % KILN_N_TASKS);
    int tok_kind = pick / KILN_N_TASKS % 3; /* byte, char, bpe */
    bool bin = pick / (KILN_N_TASKS * 3) == 1;
    const char *path = fuzz_file(bin ? "data.bin" : task <= KILN_TASK_MLM ? "data.txt" : "data.tsv", data + 1, size - 1);

    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer tok;
    kiln_tokenizer_config cfg = {tok_kind == 0 ? KILN_TOK_BYTE : tok_kind == 1 ? KILN_TOK_CHAR : KILN_TOK_BPE, 300};
    if (!kiln_data_train_tokenizer(&tok, &cfg, task, path, &d)) {
        kiln_tokenizer_init_byte(&tok);
    }
    kiln_dataset ds;
    if (kiln_dataset_load(&ds, task, path, &tok, NULL, &d)) {
        const char *const *names;
        const int *ranks;
        int n_in = kiln_task_inputs(task, &names, &ranks);
        int64_t cols[KILN_TASK_MAX_INPUTS];
        for (int i = 0; i < KILN_TASK_MAX_INPUTS; i++) cols[i] = 6;
        kiln_batch_options opt = kiln_batch_options_default();
        kiln_batcher bt;
        kiln_diags bd;
        kiln_diags_init(&bd);
        if (kiln_batcher_init(&bt, &ds, &tok, 2, cols, &opt, &bd)) {
            int32_t *bufs[KILN_TASK_MAX_INPUTS];
            for (int i = 0; i < n_in; i++) bufs[i] = calloc(2 * 6, sizeof(int32_t));
            int32_t vocab = kiln_tokenizer_vocab(&tok);
            for (int step = 0; step < 3; step++) {
                kiln_batcher_next(&bt, bufs);
                for (int i = 0; i < n_in; i++)
                    for (int j = 0; j < (ranks[i] == 1 ? 2 : 12); j++)
                        FUZZ_CHECK(bufs[i][j] == opt.ignore_index || (bufs[i][j] >= 0 && bufs[i][j] < vocab) ||
                                   ranks[i] == 1);
            }
            char buf[512];
            kiln_batch_state st = kiln_batcher_state(&bt), back;
            kiln_batch_state_format(&st, buf, sizeof buf);
            FUZZ_CHECK(kiln_batch_state_parse(&back, buf) && memcmp(&st, &back, sizeof st) == 0);
            FUZZ_CHECK(kiln_batcher_restore(&bt, &back, &bd));
            for (int i = 0; i < n_in; i++) free(bufs[i]);
            kiln_batcher_free(&bt);
        }
        kiln_diags_free(&bd);
        kiln_dataset_free(&ds);
    }
    kiln_tokenizer_free(&tok);
    kiln_diags_free(&d);
    return 0;
}
