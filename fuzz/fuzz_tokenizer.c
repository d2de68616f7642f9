/* fuzz_tokenizer.c — tokenizer loading (kiln_tokenizer_deserialize, the checkpoint
 * form), labels loading, and training char and BPE tokenizers.
 *
 * The first byte picks the mode, the rest is the text:
 *   0: deserialize the text as a tokenizer; if it loads, check it below;
 *   1: deserialize the text as labels; if they load, serialize → deserialize again;
 *   2: train a char tokenizer on the text;  3+: train BPE (vocab 256 + the second byte).
 * Properties of every tokenizer that loads or trains: serialize → deserialize →
 * serialize gives the same line; encoding the text in pieces (kiln_tokenizer_stable_prefix
 * as data.c does) gives the ids of encoding it whole; the offsets of `ends` rise to the
 * text's length; and decoding gives the text back — always for byte and BPE, and for a
 * char tokenizer trained on valid UTF-8 text (every code point was seen).
 */
#include <string.h>

#include "data.h"
#include "fuzz.h"
#include "tokenizer.h"

static void check_tokenizer(const kiln_tokenizer *t, const char *text, size_t len, bool exact)
{
    kiln_diags d;
    kiln_diags_init(&d);
    char *line = kiln_tokenizer_serialize(t);
    FUZZ_CHECK(line != NULL);
    kiln_tokenizer u;
    bool back = kiln_tokenizer_deserialize(&u, line, "fuzz", NULL, &d);
    if (!back) kiln_diags_print(&d, stderr);
    FUZZ_CHECK(back);
    char *again = kiln_tokenizer_serialize(&u);
    FUZZ_CHECK(again && strcmp(line, again) == 0);
    free(again);
    kiln_tokenizer_free(&u);
    free(line);

    kiln_ids ids = {0}, ends = {0}, pieces = {0};
    FUZZ_CHECK(kiln_tokenizer_encode(t, text, len, &ids, &ends));
    FUZZ_CHECK(ids.n == ends.n);
    for (size_t i = 0; i < ids.n; i++) {
        FUZZ_CHECK(ids.v[i] >= 0 && ids.v[i] < kiln_tokenizer_vocab(t));
        FUZZ_CHECK(ends.v[i] > (i ? ends.v[i - 1] : 0) && (size_t)ends.v[i] <= len);
    }
    FUZZ_CHECK(ids.n == 0 ? len == 0 : (size_t)ends.v[ids.n - 1] == len);
    /* in pieces of 7 bytes, carrying the unstable tail over */
    size_t done = 0;
    while (done < len) {
        size_t avail = len - done, take = avail < 7 ? avail : 7;
        size_t more = done + take < len ? kiln_tokenizer_stable_prefix(t, text + done, take) : take;
        while (more == 0 && take < avail) { /* nothing stable yet: look further */
            take = take * 2 < avail ? take * 2 : avail;
            more = done + take < len ? kiln_tokenizer_stable_prefix(t, text + done, take) : take;
        }
        FUZZ_CHECK(more > 0);
        FUZZ_CHECK(kiln_tokenizer_encode(t, text + done, more, &pieces, NULL));
        done += more;
    }
    FUZZ_CHECK(pieces.n == ids.n && (ids.n == 0 || memcmp(pieces.v, ids.v, ids.n * sizeof *ids.v) == 0));
    size_t out_len;
    char *out = kiln_tokenizer_decode(t, ids.v, ids.n, false, &out_len);
    FUZZ_CHECK(out != NULL);
    if (exact) FUZZ_CHECK(out_len == len && memcmp(out, text, len) == 0);
    free(out);
    kiln_ids_free(&ids);
    kiln_ids_free(&ends);
    kiln_ids_free(&pieces);
    kiln_diags_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 4096) return 0; /* BPE training is quadratic in the worst case */
    int mode = data[0] > 3 ? 3 : data[0];
    int extra = data[1];
    const char *text = (const char *)data + 2;
    size_t len = size - 2;
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer t;
    if (mode == 0) {
        char *line = fuzz_text((const uint8_t *)text, len);
        if (kiln_tokenizer_deserialize(&t, line, "fuzz", "tokenizer", &d)) {
            check_tokenizer(&t, line, strlen(line), t.kind != KILN_TOK_CHAR);
            kiln_tokenizer_free(&t);
        }
        free(line);
    } else if (mode == 1) {
        char *line = fuzz_text((const uint8_t *)text, len);
        kiln_labels l;
        if (kiln_labels_deserialize(&l, line, "fuzz", "labels", &d)) {
            char *s = kiln_labels_serialize(&l);
            FUZZ_CHECK(s != NULL);
            kiln_labels m;
            FUZZ_CHECK(kiln_labels_deserialize(&m, s, "fuzz", "labels", &d));
            char *s2 = kiln_labels_serialize(&m);
            FUZZ_CHECK(s2 && strcmp(s, s2) == 0);
            free(s2);
            free(s);
            kiln_labels_free(&m);
            kiln_labels_free(&l);
        }
        free(line);
    } else {
        kiln_tokenizer_config cfg = {mode == 2 ? KILN_TOK_CHAR : KILN_TOK_BPE, 256 + extra};
        if (kiln_tokenizer_train(&t, &cfg, text, len, &d)) {
            check_tokenizer(&t, text, len, mode != 2 || kiln_utf8_valid(text, len));
            kiln_tokenizer_free(&t);
        }
    }
    kiln_diags_free(&d);
    return 0;
}
