/* test_tokenizer.c — byte, char and BPE tokenizers (driver/tokenizer.c, driver/bpe_train.c).
 *
 * Design: round trips (decode(encode(x)) == x) on ASCII, multi-byte UTF-8 and invalid
 * bytes for each kind; the BPE trainer against merges worked out by hand on a tiny
 * corpus (including the tie-break and the early stop), against its own streaming
 * (any split of the input gives the same tokenizer and the same ids), and for speed on
 * about 2 MB of real text (/usr/share/games/fortunes, or generated text when that is
 * missing). Serialised tokenizers must rebuild identically, and hostile serialised text
 * — hand-written cases plus seeded random mutations — must fail with a diagnostic and
 * never crash (the suite also runs under ASan+UBSan).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/rng.h"
#include "tokenizer.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static kiln_tokenizer train(kiln_tokenizer_kind kind, int64_t vocab, const char *text, size_t len)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer t;
    kiln_tokenizer_config cfg = {kind, vocab};
    bool ok = kiln_tokenizer_train(&t, &cfg, text, len, &d);
    if (!ok) kiln_diags_print(&d, stderr);
    assert_true(ok);
    kiln_diags_free(&d);
    return t;
}

static kiln_ids encode(const kiln_tokenizer *t, const char *text, size_t len)
{
    kiln_ids ids = {0};
    assert_true(kiln_tokenizer_encode(t, text, len, &ids, NULL));
    return ids;
}

/* decode(encode(text)) == text */
static void check_round_trip(const kiln_tokenizer *t, const char *text, size_t len)
{
    kiln_ids ids = encode(t, text, len);
    for (size_t i = 0; i < ids.n; i++) {
        assert_true(ids.v[i] >= 0);
        assert_true(ids.v[i] < t->base);
    }
    size_t n;
    char *back = kiln_tokenizer_decode(t, ids.v, ids.n, false, &n);
    assert_non_null(back);
    assert_int_equal(n, len);
    assert_memory_equal(back, text, len);
    assert_int_equal(back[n], 0);
    free(back);
    kiln_ids_free(&ids);
}

static const char utf8_text[] = "Grüße, 世界! naïve café — 😀 ok\n\tnew line 123 4567";
/* stray continuation bytes, a truncated sequence, a code point past U+10FFFF */
static const char broken_text[] = "\x80\xC3(\xF4\x90\x80\x80 broken \xE2\x82";

/* ~2 MB of text: the fortunes files when installed, else generated words. */
static char *corpus(size_t want, size_t *len)
{
    char *buf = malloc(want + 1);
    size_t n = 0;
    assert_non_null(buf);
    DIR *dir = opendir("/usr/share/games/fortunes");
    if (dir) {
        /* in name order so that the corpus is the same on every machine */
        struct dirent **names;
        closedir(dir);
        int k = scandir("/usr/share/games/fortunes", &names, NULL, alphasort);
        for (int i = 0; i < k; i++) {
            const char *nm = names[i]->d_name;
            size_t l = strlen(nm);
            bool skip = nm[0] == '.' || (l > 4 && (!strcmp(nm + l - 4, ".dat") || !strcmp(nm + l - 3, ".u8")));
            char path[512];
            snprintf(path, sizeof path, "/usr/share/games/fortunes/%s", nm);
            FILE *f = skip ? NULL : fopen(path, "rb");
            if (f) {
                n += fread(buf + n, 1, want - n, f);
                fclose(f);
            }
            free(names[i]);
        }
        free(names);
    }
    if (n < want / 2) { /* no fortunes: pseudo-English from a seeded generator */
        static const char *const words[] = {"the", "of", "and", "to", "in", "is", "that", "it", "was", "for",
                                            "on", "are", "with", "as", "his", "they", "be", "at", "one", "have",
                                            "this", "from", "or", "had", "by", "word", "but", "what", "some", "we",
                                            "can", "out", "other", "were", "all", "there", "when", "up", "use", "your"};
        kiln_rng r;
        kiln_rng_seed(&r, 7, "corpus");
        n = 0;
        while (n + 16 < want) {
            const char *w = words[kiln_rng_next(&r) % 40];
            size_t l = strlen(w);
            memcpy(buf + n, w, l);
            n += l;
            uint64_t x = kiln_rng_next(&r) % 12;
            buf[n++] = x == 0 ? '\n' : x == 1 ? ',' : ' ';
            if (x == 1) buf[n++] = ' ';
        }
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* CPU time of the process, not wall time: the limit below guards against an algorithmic
 * regression (a quadratic merge loop), and must not trip because a shared machine is busy. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- byte ------------------------------------------------------------------------------------ */

static void test_byte_round_trip(void **state)
{
    kiln_tokenizer t;
    kiln_tokenizer_init_byte(&t);
    assert_int_equal(t.base, 256);
    assert_int_equal(kiln_tokenizer_vocab(&t), 262);
    assert_int_equal(kiln_tokenizer_special(&t, KILN_SPECIAL_PAD), 256);
    assert_int_equal(kiln_tokenizer_special(&t, KILN_SPECIAL_SEP), 261);
    kiln_ids ids = encode(&t, "A\xff\x00z", 4);
    assert_int_equal(ids.n, 4);
    assert_int_equal(ids.v[0], 'A');
    assert_int_equal(ids.v[1], 255);
    assert_int_equal(ids.v[2], 0);
    kiln_ids_free(&ids);
    check_round_trip(&t, "hello, world", 12);
    check_round_trip(&t, utf8_text, strlen(utf8_text));
    check_round_trip(&t, broken_text, sizeof broken_text - 1);
    kiln_tokenizer_free(&t);
}

static void test_specials_are_not_parsed(void **state)
{
    kiln_tokenizer t;
    kiln_tokenizer_init_byte(&t);
    kiln_ids ids = encode(&t, "<mask>", 6);
    assert_int_equal(ids.n, 6); /* six bytes, not the special */
    for (size_t i = 0; i < ids.n; i++) assert_true(ids.v[i] < 256);
    kiln_ids_free(&ids);

    int32_t seq[] = {'h', 'i', 256 + KILN_SPECIAL_EOS, 256 + KILN_SPECIAL_PAD, -5, 9999, '!'};
    size_t n;
    char *s = kiln_tokenizer_decode(&t, seq, 7, true, &n);
    assert_string_equal(s, "hi<eos><pad>\xEF\xBF\xBD\xEF\xBF\xBD!");
    free(s);
    s = kiln_tokenizer_decode(&t, seq, 7, false, &n);
    assert_string_equal(s, "hi\xEF\xBF\xBD\xEF\xBF\xBD!");
    assert_int_equal(n, strlen(s));
    free(s);
    s = kiln_tokenizer_decode(&t, NULL, 0, false, &n);
    assert_string_equal(s, "");
    free(s);
    assert_string_equal(kiln_special_name(KILN_SPECIAL_MASK), "<mask>");
    kiln_tokenizer_free(&t);
}

/* ---- char ------------------------------------------------------------------------------------ */

static void test_char_vocabulary(void **state)
{
    const char *text = "bab€a😀";
    kiln_tokenizer t = train(KILN_TOK_CHAR, 0, text, strlen(text));
    /* a b € U+FFFD 😀, ascending by code point */
    assert_int_equal(t.base, 5);
    assert_int_equal(t.codepoints[0], 'a');
    assert_int_equal(t.codepoints[1], 'b');
    assert_int_equal(t.codepoints[2], 0x20AC);
    assert_int_equal(t.codepoints[3], 0xFFFD);
    assert_int_equal(t.codepoints[4], 0x1F600);
    assert_int_equal(kiln_tokenizer_special(&t, KILN_SPECIAL_PAD), 5);
    kiln_ids ids = encode(&t, text, strlen(text));
    int32_t want[] = {1, 0, 1, 2, 0, 4};
    assert_int_equal(ids.n, 6);
    assert_memory_equal(ids.v, want, sizeof want);
    kiln_ids_free(&ids);
    check_round_trip(&t, text, strlen(text));

    /* unseen code points and invalid bytes become U+FFFD, one per bad byte */
    ids = encode(&t, "aZ\xff\xE2\x82", 5);
    int32_t want2[] = {0, 3, 3, 3, 3};
    assert_int_equal(ids.n, 5);
    assert_memory_equal(ids.v, want2, sizeof want2);
    kiln_ids_free(&ids);
    kiln_tokenizer_free(&t);
}

static void test_char_round_trip_utf8(void **state)
{
    kiln_tokenizer t = train(KILN_TOK_CHAR, 0, utf8_text, strlen(utf8_text));
    check_round_trip(&t, utf8_text, strlen(utf8_text));
    check_round_trip(&t, "café 世界", strlen("café 世界"));
    /* invalid UTF-8 in the training data is deterministic: only U+FFFD is added */
    kiln_tokenizer u = train(KILN_TOK_CHAR, 0, "a\xC0\xAF\xED\xA0\x80", 6);
    assert_int_equal(u.base, 2);
    kiln_tokenizer_free(&u);
    kiln_tokenizer_free(&t);
}

static void test_utf8_valid(void **state)
{
    assert_true(kiln_utf8_valid("", 0));
    assert_true(kiln_utf8_valid(utf8_text, strlen(utf8_text)));
    assert_true(kiln_utf8_valid("\xEF\xBF\xBD", 3)); /* U+FFFD itself */
    assert_false(kiln_utf8_valid("\xC0\xAF", 2));   /* overlong */
    assert_false(kiln_utf8_valid("\xED\xA0\x80", 3)); /* surrogate */
    assert_false(kiln_utf8_valid("\xF4\x90\x80\x80", 4)); /* past U+10FFFF */
    assert_false(kiln_utf8_valid("\xE2\x82", 2));   /* truncated */
}

/* ---- BPE ------------------------------------------------------------------------------------- */

static void test_chunks(void **state)
{
    struct { const char *text; const char *chunks[8]; } cases[] = {
        {"Hello world", {"Hello", " world"}},
        {"a  b", {"a", " ", " b"}},
        {"x\n\ny", {"x", "\n\n", "y"}},
        {"x\n  y", {"x", "\n ", " y"}},
        {"abc123!! ok", {"abc", "123", "!!", " ok"}},
        {"it's", {"it", "'", "s"}},
        {"end  ", {"end", "  "}},
        {"né 世界", {"né", " 世界"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *s = cases[c].text;
        size_t len = strlen(s), at = 0;
        for (int k = 0; cases[c].chunks[k]; k++) {
            size_t n = kiln_tokenizer_chunk_len(s + at, len - at);
            assert_int_equal(n, strlen(cases[c].chunks[k]));
            assert_memory_equal(s + at, cases[c].chunks[k], n);
            at += n;
        }
        assert_int_equal(at, len);
    }
    char longword[200];
    memset(longword, 'q', sizeof longword);
    assert_int_equal(kiln_tokenizer_chunk_len(longword, sizeof longword), KILN_BPE_MAX_CHUNK);
    assert_int_equal(kiln_tokenizer_chunk_len("", 0), 0);
}

/* Worked by hand. Chunks: "ab" " ab" " ab" " cd" " cd". Pair counts: (a,b) 3,
 * (' ',a) 2, (' ',c) 2, (c,d) 2 → merge (a,b) = 256. Then (' ',256) 2, (' ',c) 2,
 * (c,d) 2 tie: the smallest pair (32,99) = " c" is 257. Then (32,256) 2 and (257,100)
 * 2 tie: " ab" = 258 before " cd" = 259. Nothing occurs twice after that, so training
 * stops at base 260 though 300 was asked for. */
static void test_bpe_first_merges(void **state)
{
    const char *text = "ab ab ab cd cd";
    kiln_tokenizer t = train(KILN_TOK_BPE, 300, text, strlen(text));
    assert_int_equal(t.base, 260);
    int32_t want[] = {'a', 'b', ' ', 'c', ' ', 256, 257, 'd'};
    assert_memory_equal(t.merges, want, sizeof want);
    size_t n;
    const char *tok = kiln_tokenizer_token(&t, 258, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(tok, " ab", 3);
    kiln_ids ids = encode(&t, "ab cd abcd", 10);
    /* "ab" | " cd" → " c" d → " cd" | " abcd" → " " ab c d → " ab" c d */
    int32_t want_ids[] = {256, 259, 258, 'c', 'd'};
    assert_int_equal(ids.n, 5);
    assert_memory_equal(ids.v, want_ids, sizeof want_ids);
    kiln_ids_free(&ids);
    char *s = kiln_tokenizer_serialize(&t);
    assert_string_equal(s, "kiln-tokenizer/1 bpe 4 97 98 32 99 32 256 257 100");
    free(s);
    kiln_tokenizer_free(&t);

    /* vocab 256 means no merges at all: BPE is then the byte tokenizer */
    t = train(KILN_TOK_BPE, 256, text, strlen(text));
    assert_int_equal(t.base, 256);
    check_round_trip(&t, text, strlen(text));
    kiln_tokenizer_free(&t);
}

static void test_bpe_round_trip_and_boundaries(void **state)
{
    size_t len;
    char *text = corpus(300000, &len);
    kiln_tokenizer t = train(KILN_TOK_BPE, 800, text, len);
    assert_int_equal(t.base, 800);
    check_round_trip(&t, text, len);
    check_round_trip(&t, utf8_text, strlen(utf8_text));
    check_round_trip(&t, broken_text, sizeof broken_text - 1);
    check_round_trip(&t, "<mask> unseen ZZZQQQ", 20);
    /* merges never cross whitespace: a token is all whitespace, or at most one leading
     * space followed by no whitespace */
    for (int32_t id = 256; id < t.base; id++) {
        size_t n;
        const unsigned char *s = (const unsigned char *)kiln_tokenizer_token(&t, id, &n);
        bool all_ws = true;
        for (size_t i = 0; i < n; i++) all_ws &= s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r';
        if (all_ws) continue;
        for (size_t i = 1; i < n; i++) assert_false(s[i] == ' ' || s[i] == '\n' || s[i] == '\t');
    }
    free(text);
    kiln_tokenizer_free(&t);
}

static void test_bpe_deterministic_and_streaming(void **state)
{
    size_t len;
    char *text = corpus(200000, &len);
    kiln_tokenizer a = train(KILN_TOK_BPE, 600, text, len);
    kiln_tokenizer b = train(KILN_TOK_BPE, 600, text, len);
    char *sa = kiln_tokenizer_serialize(&a), *sb = kiln_tokenizer_serialize(&b);
    assert_string_equal(sa, sb);

    /* fed in random pieces (1 byte to 5000), the trainer learns the same merges */
    kiln_rng r;
    kiln_rng_seed(&r, 3, "pieces");
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer_config cfg = {KILN_TOK_BPE, 600};
    kiln_tok_trainer *tr = kiln_tok_trainer_new(&cfg, &d);
    assert_non_null(tr);
    for (size_t at = 0; at < len;) {
        size_t k = 1 + kiln_rng_next(&r) % 5000;
        if (k > len - at) k = len - at;
        assert_true(kiln_tok_trainer_feed(tr, text + at, k));
        at += k;
    }
    kiln_tokenizer c;
    assert_true(kiln_tok_trainer_finish(tr, &c, &d));
    kiln_tok_trainer_free(tr);
    char *sc = kiln_tokenizer_serialize(&c);
    assert_string_equal(sa, sc);

    /* encoding piece by piece through the stable prefix gives the same ids, for BPE
     * and for char (whose pieces may end inside a UTF-8 sequence) */
    kiln_tokenizer ch = train(KILN_TOK_CHAR, 0, utf8_text, strlen(utf8_text));
    const kiln_tokenizer *toks[] = {&a, &ch};
    const char *texts[] = {text, utf8_text};
    size_t lens[] = {len < 50000 ? len : 50000, strlen(utf8_text)};
    for (int k = 0; k < 2; k++) {
        kiln_ids whole = encode(toks[k], texts[k], lens[k]), parts = {0};
        char *pending = malloc(lens[k] + 1);
        size_t n_pending = 0;
        for (size_t at = 0; at < lens[k];) {
            size_t step = 1 + kiln_rng_next(&r) % 97;
            if (step > lens[k] - at) step = lens[k] - at;
            memcpy(pending + n_pending, texts[k] + at, step);
            n_pending += step;
            at += step;
            size_t p = kiln_tokenizer_stable_prefix(toks[k], pending, n_pending);
            assert_true(kiln_tokenizer_encode(toks[k], pending, p, &parts, NULL));
            memmove(pending, pending + p, n_pending - p);
            n_pending -= p;
        }
        assert_true(kiln_tokenizer_encode(toks[k], pending, n_pending, &parts, NULL));
        assert_int_equal(parts.n, whole.n);
        assert_memory_equal(parts.v, whole.v, whole.n * sizeof *whole.v);
        free(pending);
        kiln_ids_free(&whole);
        kiln_ids_free(&parts);
    }
    free(sa);
    free(sb);
    free(sc);
    free(text);
    kiln_diags_free(&d);
    kiln_tokenizer_free(&a);
    kiln_tokenizer_free(&b);
    kiln_tokenizer_free(&c);
    kiln_tokenizer_free(&ch);
}

static void test_bpe_training_speed(void **state)
{
    size_t len;
    char *text = corpus(2 << 20, &len);
    assert_true(len > (1 << 20));
    double t0 = now();
    kiln_tokenizer t = train(KILN_TOK_BPE, 1024, text, len);
    double t1 = now();
    kiln_ids ids = encode(&t, text, len);
    double t2 = now();
    print_message("bpe: trained vocab %d on %zu bytes in %.2f s; encoded to %zu ids in %.2f s\n", (int)t.base, len,
                  t1 - t0, ids.n, t2 - t1);
    assert_int_equal(t.base, 1024);
#if defined(__SANITIZE_ADDRESS__)
    double limit = 60; /* ASan+UBSan builds run several times slower */
#else
    double limit = 5;
#endif
    assert_true(t1 - t0 < limit);
    assert_true(ids.n < len / 2); /* BPE compresses English text well below one id per byte */
    kiln_ids_free(&ids);
    kiln_tokenizer_free(&t);
    free(text);
}

static void test_encode_offsets(void **state)
{
    const char *text = "héllo wörld";
    kiln_tokenizer ch = train(KILN_TOK_CHAR, 0, text, strlen(text));
    kiln_ids ids = {0}, ends = {0};
    assert_true(kiln_tokenizer_encode(&ch, "h\xffé", 4, &ids, &ends));
    int32_t want[] = {1, 2, 4}; /* h, the invalid byte, é (2 bytes) */
    assert_int_equal(ends.n, 3);
    assert_memory_equal(ends.v, want, sizeof want);
    kiln_ids_free(&ids);
    kiln_ids_free(&ends);

    kiln_tokenizer bpe = train(KILN_TOK_BPE, 300, "low low low lower lowest", 24);
    assert_true(kiln_tokenizer_encode(&bpe, "low lowest", 10, &ids, &ends));
    assert_int_equal(ids.n, ends.n);
    size_t at = 0;
    for (size_t i = 0; i < ids.n; i++) { /* each id covers exactly its token's bytes */
        size_t n;
        const char *tok = kiln_tokenizer_token(&bpe, ids.v[i], &n);
        assert_int_equal((size_t)ends.v[i] - at, n);
        assert_memory_equal("low lowest" + at, tok, n);
        at = (size_t)ends.v[i];
    }
    assert_int_equal(at, 10);
    kiln_ids_free(&ids);
    kiln_ids_free(&ends);
    kiln_tokenizer_free(&ch);
    kiln_tokenizer_free(&bpe);
}

/* ---- serialisation ----------------------------------------------------------------------------- */

static void check_serial_identity(const kiln_tokenizer *t, const char *probe)
{
    kiln_diags d;
    kiln_diags_init(&d);
    char *s = kiln_tokenizer_serialize(t);
    assert_non_null(s);
    kiln_tokenizer u;
    assert_true(kiln_tokenizer_deserialize(&u, s, "ckpt.safetensors", "tokenizer", &d));
    assert_int_equal(d.n, 0);
    assert_int_equal(u.kind, t->kind);
    assert_int_equal(u.base, t->base);
    char *s2 = kiln_tokenizer_serialize(&u);
    assert_string_equal(s, s2);
    kiln_ids a = encode(t, probe, strlen(probe)), b = encode(&u, probe, strlen(probe));
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.v, b.v, a.n * sizeof *a.v);
    kiln_ids_free(&a);
    kiln_ids_free(&b);
    free(s);
    free(s2);
    kiln_tokenizer_free(&u);
    kiln_diags_free(&d);
}

static void test_serialize_identity(void **state)
{
    size_t len;
    char *text = corpus(100000, &len);
    kiln_tokenizer byte, ch, bpe;
    kiln_tokenizer_init_byte(&byte);
    ch = train(KILN_TOK_CHAR, 0, utf8_text, strlen(utf8_text));
    bpe = train(KILN_TOK_BPE, 700, text, len);
    check_serial_identity(&byte, utf8_text);
    check_serial_identity(&ch, utf8_text);
    check_serial_identity(&bpe, text);
    char *s = kiln_tokenizer_serialize(&byte);
    assert_string_equal(s, "kiln-tokenizer/1 byte");
    free(s);
    kiln_tokenizer_free(&byte);
    kiln_tokenizer_free(&ch);
    kiln_tokenizer_free(&bpe);
    free(text);
}

static void expect_rejected(const char *text, const char *fragment)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer t;
    memset(&t, 0x5a, sizeof t);
    bool ok = kiln_tokenizer_deserialize(&t, text, "w.safetensors", "tokenizer", &d);
    if (ok || d.n != 1 || !strstr(d.items[0].message, fragment)) {
        fprintf(stderr, "input: %s\n", text ? text : "(null)");
        kiln_diags_print(&d, stderr);
    }
    assert_false(ok);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.items[0].file, "w.safetensors");
    assert_non_null(strstr(d.items[0].message, fragment));
    assert_null(t.codepoints);
    assert_null(t.merges);
    assert_null(t.tok_off);
    assert_int_equal(t.base, 0);
    kiln_diags_free(&d);
}

static void test_hostile_metadata(void **state)
{
    expect_rejected(NULL, "does not start");
    expect_rejected("", "does not start");
    expect_rejected("kiln-tokenizer/2 byte", "does not start");
    expect_rejected("kiln-tokenizer/1", "does not start");
    expect_rejected("kiln-tokenizer/1 ", "unknown kind");
    expect_rejected("kiln-tokenizer/1 word", "unknown kind");
    expect_rejected("kiln-tokenizer/1 bytes", "unknown kind");
    expect_rejected("kiln-tokenizer/1 byte ", "after the end");
    expect_rejected("kiln-tokenizer/1 byte\n", "unknown kind");
    expect_rejected("kiln-tokenizer/1 char", "count");
    expect_rejected("kiln-tokenizer/1 char 0", "count");
    expect_rejected("kiln-tokenizer/1 char -1 65", "count");
    expect_rejected("kiln-tokenizer/1 char 2 65533", "bad code point");
    expect_rejected("kiln-tokenizer/1 char 99999999999999999999 1", "count");
    expect_rejected("kiln-tokenizer/1 char 1114112 1", "count");
    expect_rejected("kiln-tokenizer/1 char 2 65 66", "U+FFFD");
    expect_rejected("kiln-tokenizer/1 char 2 66 65", "out of order");
    expect_rejected("kiln-tokenizer/1 char 3 65 65 65533", "out of order");
    expect_rejected("kiln-tokenizer/1 char 2 55296 65533", "surrogate");
    expect_rejected("kiln-tokenizer/1 char 2 65533 1114112", "bad code point");
    expect_rejected("kiln-tokenizer/1 char 2 65 +65533", "bad code point");
    expect_rejected("kiln-tokenizer/1 char 1 65533 ", "after the end");
    expect_rejected("kiln-tokenizer/1 char 1  65533", "bad code point");
    expect_rejected("kiln-tokenizer/1 bpe", "merge count");
    expect_rejected("kiln-tokenizer/1 bpe 1 97", "merge");
    expect_rejected("kiln-tokenizer/1 bpe 1 97 98 99", "after the end");
    expect_rejected("kiln-tokenizer/1 bpe 1 256 97", "not defined before");
    expect_rejected("kiln-tokenizer/1 bpe 2 97 98 97 98", "twice");
    expect_rejected("kiln-tokenizer/1 bpe 99999999 1 2", "merge count");
    expect_rejected("kiln-tokenizer/1 bpe 4294967296 1 2", "merge count");
    expect_rejected("kiln-tokenizer/1 bpe 1 97 -98", "bad merge");
    expect_rejected("kiln-tokenizer/1 bpe 1 97 4294967295", "bad merge");
    /* doubling merges: 2, 4, … 128 bytes — refused before anything that large is built */
    expect_rejected("kiln-tokenizer/1 bpe 7 97 97 256 256 257 257 258 258 259 259 260 260 261 261", "longer than");
    /* the same at 64 bytes is fine */
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer t;
    assert_true(kiln_tokenizer_deserialize(&t, "kiln-tokenizer/1 bpe 6 97 97 256 256 257 257 258 258 259 259 260 260",
                                           NULL, NULL, &d));
    kiln_ids ids = encode(&t, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 65);
    assert_int_equal(ids.n, 2); /* a 64-byte chunk, one token, then "a" */
    assert_int_equal(ids.v[0], 261);
    assert_int_equal(ids.v[1], 'a');
    kiln_ids_free(&ids);
    kiln_tokenizer_free(&t);
    kiln_diags_free(&d);
}

/* Seeded random edits of valid serialised text: every result is either rejected with
 * one diagnostic or a working tokenizer. Run under ASan this is a small fuzzer. */
static void test_hostile_mutations(void **state)
{
    const char *seeds[] = {"kiln-tokenizer/1 bpe 4 97 98 32 99 32 256 257 100", "kiln-tokenizer/1 char 3 97 98 65533",
                           "kiln-tokenizer/1 byte"};
    const char alphabet[] = "0123456789 -+abcdeiklnoprstuyz/\n\t\xff";
    kiln_rng r;
    kiln_rng_seed(&r, 11, "mutations");
    int accepted = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char buf[128];
        const char *seed = seeds[iter % 3];
        size_t n = strlen(seed);
        memcpy(buf, seed, n + 1);
        int edits = 1 + (int)(kiln_rng_next(&r) % 3);
        for (int e = 0; e < edits && n > 0; e++) {
            size_t at = kiln_rng_next(&r) % n;
            char c = alphabet[kiln_rng_next(&r) % (sizeof alphabet - 1)];
            switch (kiln_rng_next(&r) % 3) {
            case 0: buf[at] = c; break;                                           /* replace */
            case 1: memmove(buf + at, buf + at + 1, n - at), n--; break;          /* delete */
            default:
                if (n + 2 < sizeof buf) memmove(buf + at + 1, buf + at, n - at + 1), buf[at] = c, n++; /* insert */
            }
        }
        kiln_diags d;
        kiln_diags_init(&d);
        kiln_tokenizer t;
        if (kiln_tokenizer_deserialize(&t, buf, NULL, NULL, &d)) {
            accepted++;
            assert_int_equal(d.n, 0);
            kiln_ids ids = encode(&t, "abc abd 123", 11);
            size_t len;
            char *back = kiln_tokenizer_decode(&t, ids.v, ids.n, true, &len);
            if (t.kind != KILN_TOK_CHAR) assert_string_equal(back, "abc abd 123");
            free(back);
            kiln_ids_free(&ids);
            kiln_tokenizer_free(&t);
        } else {
            assert_int_equal(d.n, 1);
        }
        kiln_diags_free(&d);
    }
    assert_true(accepted > 0);
}

static void test_trainer_bad_config(void **state)
{
    kiln_diags d;
    kiln_diags_init(&d);
    kiln_tokenizer_config none = {KILN_TOK_NONE, 0}, small = {KILN_TOK_BPE, 100}, huge = {KILN_TOK_BPE, 1LL << 40};
    assert_null(kiln_tok_trainer_new(&none, &d));
    assert_null(kiln_tok_trainer_new(&small, &d));
    assert_null(kiln_tok_trainer_new(&huge, &d));
    assert_int_equal(d.n, 3);
    assert_non_null(strstr(d.items[1].message, "must be in [256"));
    kiln_diags_free(&d);
    /* an empty corpus trains fine: no merges, no code points but U+FFFD */
    kiln_tokenizer t = train(KILN_TOK_BPE, 512, "", 0);
    assert_int_equal(t.base, 256);
    kiln_tokenizer_free(&t);
    t = train(KILN_TOK_CHAR, 0, "", 0);
    assert_int_equal(t.base, 1);
    kiln_tokenizer_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_round_trip),
        cmocka_unit_test(test_specials_are_not_parsed),
        cmocka_unit_test(test_char_vocabulary),
        cmocka_unit_test(test_char_round_trip_utf8),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_bpe_first_merges),
        cmocka_unit_test(test_bpe_round_trip_and_boundaries),
        cmocka_unit_test(test_bpe_deterministic_and_streaming),
        cmocka_unit_test(test_bpe_training_speed),
        cmocka_unit_test(test_encode_offsets),
        cmocka_unit_test(test_serialize_identity),
        cmocka_unit_test(test_hostile_metadata),
        cmocka_unit_test(test_hostile_mutations),
        cmocka_unit_test(test_trainer_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
