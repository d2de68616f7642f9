/* tokenizer.h — text ↔ token ids (SPEC section 5): byte, char and byte-level BPE.
 *
 * Every tokenizer has a base vocabulary, ids [0, base), followed by six special tokens
 * <pad> <bos> <eos> <mask> <cls> <sep> with ids base .. base+5 (kiln_tokenizer_special).
 * Specials are only ever inserted by code (the data tasks); the text "<mask>" in the
 * input is ordinary text.
 *
 *   byte  base 256: id = byte value.
 *   char  one id per Unicode code point seen in the training data, ascending by code
 *         point, plus U+FFFD always. Invalid UTF-8 decodes one byte at a time to U+FFFD,
 *         and a code point the training data lacked also encodes as U+FFFD.
 *   bpe   base N (the model file's `vocab`): the 256 bytes, then N−256 merges learned
 *         from the data (fewer if the data runs out of pairs seen at least twice).
 *
 * BPE first splits text into chunks (kiln_tokenizer_chunk_len, GPT-2 style: a word
 * keeps one leading space, letters / digits / punctuation / whitespace runs are
 * separate chunks, at most KILN_BPE_MAX_CHUNK bytes), and merges never cross chunks.
 *
 * Training and encoding may be fed a file in pieces: the result is the same as for the
 * whole text, because only kiln_tokenizer_stable_prefix of a piece is consumed and the
 * rest (at most one chunk or one partial UTF-8 sequence) is carried to the next piece.
 *
 * A tokenizer serialises to one line of text (kiln_tokenizer_serialize) that a
 * checkpoint keeps in its __metadata__; kiln_tokenizer_deserialize validates all of it.
 */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "frontend.h"

typedef enum kiln_special {
    KILN_SPECIAL_PAD,
    KILN_SPECIAL_BOS,
    KILN_SPECIAL_EOS,
    KILN_SPECIAL_MASK,
    KILN_SPECIAL_CLS,
    KILN_SPECIAL_SEP,
    KILN_N_SPECIALS
} kiln_special;

/* Longest BPE chunk in bytes; also the longest BPE token. */
#define KILN_BPE_MAX_CHUNK 64
/* Largest base vocabulary kiln_tokenizer_deserialize and the trainer accept. */
#define KILN_TOKENIZER_MAX_BASE (1 << 24)

/* A growable array of int32 (token ids, or byte offsets). */
typedef struct kiln_ids {
    int32_t *v;
    size_t n, cap;
} kiln_ids;

bool kiln_ids_push(kiln_ids *a, int32_t x); /* false when out of memory */
void kiln_ids_free(kiln_ids *a);

/* The fields below `base` are private: use the functions. */
typedef struct kiln_tokenizer {
    kiln_tokenizer_kind kind;
    int32_t base;           /* ordinary ids [0, base); specials follow */
    uint32_t *codepoints;   /* char: [base] ascending */
    int32_t *merges;        /* bpe: [2 * (base - 256)], merge i makes id 256 + i */
    uint32_t *tok_off;      /* [base + 1]: the bytes of id i are tok_bytes[tok_off[i] .. tok_off[i+1]) */
    unsigned char *tok_bytes;
    uint64_t *pair_key;     /* bpe: open-addressing map (left, right) → merge rank */
    int32_t *pair_rank;
    size_t pair_cap;        /* a power of two, or 0 */
} kiln_tokenizer;

/* The byte tokenizer (cannot fail). */
void kiln_tokenizer_init_byte(kiln_tokenizer *t);
void kiln_tokenizer_free(kiln_tokenizer *t);

/* base + KILN_N_SPECIALS: every id encode, decode and the data tasks may produce. */
int32_t kiln_tokenizer_vocab(const kiln_tokenizer *t);
int32_t kiln_tokenizer_special(const kiln_tokenizer *t, kiln_special s);
const char *kiln_special_name(kiln_special s); /* "<pad>", "<bos>", … */

/* ---- training ----------------------------------------------------------------------- */

/* Learns a tokenizer of kind cfg->kind from text fed in any number of pieces. A
 * document is one continuous text (a file, or one TSV field); nothing spans two.
 * The feed functions return false only when out of memory. */
typedef struct kiln_tok_trainer kiln_tok_trainer;

/* NULL when out of memory or cfg is invalid (kind none, or a bpe vocab outside
 * [256, KILN_TOKENIZER_MAX_BASE]); *d says which. */
kiln_tok_trainer *kiln_tok_trainer_new(const kiln_tokenizer_config *cfg, kiln_diags *d);
bool kiln_tok_trainer_feed(kiln_tok_trainer *tr, const char *text, size_t len);
bool kiln_tok_trainer_end_document(kiln_tok_trainer *tr);
/* Ends the last document and builds the tokenizer. */
bool kiln_tok_trainer_finish(kiln_tok_trainer *tr, kiln_tokenizer *out, kiln_diags *d);
void kiln_tok_trainer_free(kiln_tok_trainer *tr);

/* Everything above for one document in memory. */
bool kiln_tokenizer_train(kiln_tokenizer *t, const kiln_tokenizer_config *cfg, const char *text, size_t len,
                          kiln_diags *d);

/* ---- encoding and decoding ------------------------------------------------------------ */

/* Appends the ids of text[0..len) to *ids. When ends is not NULL it also receives, per
 * id, the offset in text just past the bytes that id came from (so id i covers
 * text[ends[i-1] .. ends[i]) ); len must then be below INT32_MAX. False when out of
 * memory (or len too large for ends). */
bool kiln_tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, kiln_ids *ids, kiln_ids *ends);

/* The longest prefix of text[0..len) that encodes the same whatever text follows it
 * (see the file comment): encode that much and keep the rest for the next piece. */
size_t kiln_tokenizer_stable_prefix(const kiln_tokenizer *t, const char *text, size_t len);

/* The length of the BPE chunk starting at text[0] (0 only when len is 0). It may grow
 * if text continues past len; kiln_tokenizer_stable_prefix accounts for that. */
size_t kiln_tokenizer_chunk_len(const char *text, size_t len);

/* The bytes of one ordinary id (NULL with *len 0 for a special or out-of-range id),
 * for printing generated text token by token. */
const char *kiln_tokenizer_token(const kiln_tokenizer *t, int32_t id, size_t *len);

/* The bytes of ids[0..n), NUL-terminated (malloc'ed; NULL when out of memory). Specials
 * decode to their names ("<eos>") when show_specials, else to nothing; ids outside
 * [0, vocab) decode to U+FFFD so that decoding never fails. */
char *kiln_tokenizer_decode(const kiln_tokenizer *t, const int32_t *ids, size_t n, bool show_specials, size_t *len);

/* Whether text[0..len) is well-formed UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF): labels must be, because checkpoint metadata is JSON. */
bool kiln_utf8_valid(const char *text, size_t len);

/* ---- storing in a checkpoint -------------------------------------------------------- */

/* One line of ASCII (malloc'ed; NULL when out of memory):
 *   "kiln-tokenizer/1 byte"
 *   "kiln-tokenizer/1 char N cp1 cp2 … cpN"              (decimal code points, ascending)
 *   "kiln-tokenizer/1 bpe M l1 r1 l2 r2 … lM rM"          (merge i makes id 256 + i) */
char *kiln_tokenizer_serialize(const kiln_tokenizer *t);

/* Rebuilds a tokenizer from kiln_tokenizer_serialize's text, checking everything:
 * syntax, counts, ranges, ascending code points that are Unicode scalar values with
 * U+FFFD present, merges that refer only to earlier ids, no repeated merge, tokens no
 * longer than KILN_BPE_MAX_CHUNK bytes. On failure returns false with one diagnostic
 * (file and where as given; either may be NULL) and *t left empty. */
bool kiln_tokenizer_deserialize(kiln_tokenizer *t, const char *text, const char *file, const char *where,
                                kiln_diags *d);

#endif
