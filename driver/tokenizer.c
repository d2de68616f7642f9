/* tokenizer.c — byte, char and byte-level BPE tokenizers (see tokenizer.h).
 *
 * Design. A tokenizer is a base vocabulary plus a table of the bytes each base id
 * stands for (tok_off/tok_bytes), which decoding reads for every kind. Encoding is per
 * kind: bytes map to themselves; code points are found by binary search in the sorted
 * code point list; BPE cuts text into chunks and, inside each chunk, repeatedly merges
 * the adjacent pair with the lowest merge rank (a hash map (left, right) → rank), which
 * reproduces exactly the segmentation training produced.
 *
 * BPE training (bpe_train) works on a word table, not on the corpus: every distinct
 * chunk once, with its count. Pair counts are kept for the whole table and updated
 * incrementally: each pair has a list of the words that contain it, so a merge only
 * rewrites those words (subtracting their old pairs, adding their new ones). The best
 * pair comes from a max-heap with lazy deletion: entries may hold stale, larger counts;
 * a popped entry whose count is stale is pushed back with the current count. Counts of
 * existing pairs only ever fall (a merge creates new pairs only with the new id), so
 * a valid top entry is the true maximum. Ties go to the smallest (left, right).
 *
 * Streaming: the trainers keep a small pending buffer and consume only the stable
 * prefix of what they were fed, so feeding a file in blocks of any size gives the same
 * tokenizer as feeding it whole.
 */
#include "tokenizer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const special_names[KILN_N_SPECIALS] = {"<pad>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>"};

#define REPLACEMENT 0xFFFDu

/* ---- small helpers -------------------------------------------------------------------- */

bool kiln_ids_push(kiln_ids *a, int32_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        if (cap > SIZE_MAX / sizeof *a->v) return false;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return false;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return true;
}

void kiln_ids_free(kiln_ids *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* Grows *p (elements of `size` bytes) so that it holds at least `need`; false when out
 * of memory. The capacity doubles so repeated growth costs amortised O(1). */
static bool grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / size) return false;
        c *= 2;
    }
    void *q = realloc(*p, c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* Decodes the sequence at s[0..n), n >= 1. Returns the bytes consumed with *cp set;
 * an invalid byte consumes one byte and gives U+FFFD. Returns 0 when s is a proper
 * prefix of a valid sequence and more text may follow (!final): the caller must wait.
 * The rules are Unicode's Table 3-7: no overlongs, no surrogates, nothing past U+10FFFF. */
static size_t utf8_decode(const unsigned char *s, size_t n, bool final, uint32_t *cp)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        need = 2, v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3, v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4, v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *cp = REPLACEMENT;
        return 1;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            if (final) break;
            return 0;
        }
        unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) break;
        v = v << 6 | (b & 0x3F);
        if (i == need - 1) {
            *cp = v;
            return need;
        }
    }
    *cp = REPLACEMENT;
    return 1;
}

static size_t utf8_encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool is_scalar_value(uint32_t cp) { return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF); }

/* Length of the stable prefix for char decoding: everything but a trailing partial
 * sequence (at most 3 bytes). */
static size_t utf8_stable_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_decode(s + i, n - i, false, &cp);
        if (k == 0) break;
        i += k;
    }
    return i;
}

bool kiln_utf8_valid(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_decode(s + i, len - i, true, &cp);
        if (cp == REPLACEMENT && k == 1) return false; /* U+FFFD itself takes 3 bytes */
        i += k;
    }
    return true;
}

/* ---- BPE chunks --------------------------------------------------------------------------- */

enum { C_SPACE, C_WS, C_LETTER, C_DIGIT, C_OTHER };

/* Bytes >= 0x80 count as letters so that a word in any script stays one chunk. */
static int byte_class(unsigned char c)
{
    if (c == ' ') return C_SPACE;
    if (c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') return C_WS;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return C_LETTER;
    if (c >= '0' && c <= '9') return C_DIGIT;
    return C_OTHER;
}

static bool is_ws(int cls) { return cls == C_SPACE || cls == C_WS; }

/* The rules, GPT-2's pre-tokeniser in spirit:
 *  - a run of letters, of digits or of other symbols is a chunk, and takes one space in
 *    front of it when there is one (" world", " 42", " ...");
 *  - a run of whitespace is a chunk, except that its last byte is left to the next word
 *    when it is a space ("\n  x" → "\n ", " x");
 *  - no chunk is longer than KILN_BPE_MAX_CHUNK bytes.
 * Each decision looks at most one byte past the chunk, which is what makes
 * kiln_tokenizer_stable_prefix simple. */
size_t kiln_tokenizer_chunk_len(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t max = len < KILN_BPE_MAX_CHUNK ? len : KILN_BPE_MAX_CHUNK;
    if (max == 0) return 0;
    size_t i = 0;
    if (is_ws(byte_class(s[0]))) {
        while (i < max && is_ws(byte_class(s[i]))) i++;
        bool word_follows = i < len && !is_ws(byte_class(s[i]));
        if (!word_follows || s[i - 1] != ' ') return i;
        if (i > 1) return i - 1;
        /* a single space before a word: it becomes the word's prefix */
    }
    size_t start = i;
    if (start >= max) return max;
    int cls = byte_class(s[start]);
    while (i < max && byte_class(s[i]) == cls) i++;
    return i;
}

size_t kiln_tokenizer_stable_prefix(const kiln_tokenizer *t, const char *text, size_t len)
{
    if (t->kind == KILN_TOK_CHAR) return utf8_stable_prefix((const unsigned char *)text, len);
    if (t->kind != KILN_TOK_BPE) return len;
    /* every chunk that ends before the end of text is final; the last one may grow */
    size_t p = 0;
    for (;;) {
        size_t k = kiln_tokenizer_chunk_len(text + p, len - p);
        if (k == 0 || p + k == len) return p;
        p += k;
    }
}

/* ---- the tokenizer object ---------------------------------------------------------------------- */

void kiln_tokenizer_free(kiln_tokenizer *t)
{
    free(t->codepoints);
    free(t->merges);
    free(t->tok_off);
    free(t->tok_bytes);
    free(t->pair_key);
    free(t->pair_rank);
    memset(t, 0, sizeof *t);
}

int32_t kiln_tokenizer_vocab(const kiln_tokenizer *t) { return t->base + KILN_N_SPECIALS; }

int32_t kiln_tokenizer_special(const kiln_tokenizer *t, kiln_special s) { return t->base + (int32_t)s; }

const char *kiln_special_name(kiln_special s)
{
    return s >= 0 && s < KILN_N_SPECIALS ? special_names[s] : "<?>";
}

/* Builds tok_off/tok_bytes for every base id from the kind's data. For BPE the bytes
 * of 256 + i are those of merges[2i] followed by merges[2i+1], both earlier ids. */
static bool build_token_table(kiln_tokenizer *t)
{
    size_t n = (size_t)t->base;
    t->tok_off = malloc((n + 1) * sizeof *t->tok_off);
    size_t total = 0;
    if (!t->tok_off) return false;
    t->tok_off[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        if (t->kind == KILN_TOK_CHAR) {
            unsigned char tmp[4];
            len = utf8_encode(t->codepoints[i], tmp);
        } else if (i < 256) {
            len = 1;
        } else {
            const int32_t *m = &t->merges[2 * (i - 256)];
            len = (t->tok_off[m[0] + 1] - t->tok_off[m[0]]) + (t->tok_off[m[1] + 1] - t->tok_off[m[1]]);
        }
        total += len;
        if (total > UINT32_MAX) return false;
        t->tok_off[i + 1] = (uint32_t)total;
    }
    t->tok_bytes = malloc(total ? total : 1);
    if (!t->tok_bytes) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char *dst = t->tok_bytes + t->tok_off[i];
        if (t->kind == KILN_TOK_CHAR) {
            utf8_encode(t->codepoints[i], dst);
        } else if (i < 256) {
            dst[0] = (unsigned char)i;
        } else {
            const int32_t *m = &t->merges[2 * (i - 256)];
            size_t la = t->tok_off[m[0] + 1] - t->tok_off[m[0]];
            memcpy(dst, t->tok_bytes + t->tok_off[m[0]], la);
            memcpy(dst + la, t->tok_bytes + t->tok_off[m[1]], t->tok_off[m[1] + 1] - t->tok_off[m[1]]);
        }
    }
    return true;
}

/* The merge rank of (a, b), or -1. */
static int32_t pair_rank_of(const kiln_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->pair_cap) return -1;
    uint64_t key = pair_key(a, b);
    size_t mask = t->pair_cap - 1;
    for (size_t i = hash64(key) & mask;; i = (i + 1) & mask) {
        if (t->pair_rank[i] < 0) return -1;
        if (t->pair_key[i] == key) return t->pair_rank[i];
    }
}

/* Fills the merge-rank map; false if out of memory or a merge repeats (*dup set). */
static bool build_pair_map(kiln_tokenizer *t, bool *dup)
{
    size_t m = (size_t)(t->base - 256);
    *dup = false;
    if (m == 0) return true;
    size_t cap = 16;
    while (cap < 2 * m) cap *= 2;
    t->pair_key = malloc(cap * sizeof *t->pair_key);
    t->pair_rank = malloc(cap * sizeof *t->pair_rank);
    if (!t->pair_key || !t->pair_rank) return false;
    for (size_t i = 0; i < cap; i++) t->pair_rank[i] = -1;
    t->pair_cap = cap;
    for (size_t r = 0; r < m; r++) {
        uint64_t key = pair_key(t->merges[2 * r], t->merges[2 * r + 1]);
        size_t i = hash64(key) & (cap - 1);
        while (t->pair_rank[i] >= 0) {
            if (t->pair_key[i] == key) {
                *dup = true;
                return false;
            }
            i = (i + 1) & (cap - 1);
        }
        t->pair_key[i] = key;
        t->pair_rank[i] = (int32_t)r;
    }
    return true;
}

void kiln_tokenizer_init_byte(kiln_tokenizer *t)
{
    memset(t, 0, sizeof *t);
    t->kind = KILN_TOK_BYTE;
    t->base = 256;
    /* the byte table is 257 offsets and 256 bytes; if even that fails, decoding falls
     * back to id == byte (see kiln_tokenizer_token) */
    if (!build_token_table(t)) {
        free(t->tok_off);
        free(t->tok_bytes);
        t->tok_off = NULL;
        t->tok_bytes = NULL;
    }
}

/* ---- encoding ------------------------------------------------------------------------------ */

static int32_t char_id(const kiln_tokenizer *t, uint32_t cp)
{
    size_t lo = 0, hi = (size_t)t->base;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->codepoints[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo < (size_t)t->base && t->codepoints[lo] == cp) return (int32_t)lo;
    return cp == REPLACEMENT ? 0 : char_id(t, REPLACEMENT); /* U+FFFD is always present */
}

/* Encodes one chunk (at most KILN_BPE_MAX_CHUNK bytes) starting at text offset `at`. */
static bool bpe_encode_chunk(const kiln_tokenizer *t, const unsigned char *s, size_t n, size_t at, kiln_ids *ids,
                             kiln_ids *ends)
{
    int32_t sym[KILN_BPE_MAX_CHUNK];
    size_t end[KILN_BPE_MAX_CHUNK]; /* offset just past each symbol */
    for (size_t i = 0; i < n; i++) {
        sym[i] = s[i];
        end[i] = at + i + 1;
    }
    for (;;) {
        int32_t best = INT32_MAX;
        for (size_t i = 0; i + 1 < n; i++) {
            int32_t r = pair_rank_of(t, sym[i], sym[i + 1]);
            if (r >= 0 && r < best) best = r;
        }
        if (best == INT32_MAX) break;
        int32_t a = t->merges[2 * best], b = t->merges[2 * best + 1];
        size_t j = 0;
        for (size_t i = 0; i < n;) {
            if (i + 1 < n && sym[i] == a && sym[i + 1] == b) {
                sym[j] = 256 + best;
                end[j++] = end[i + 1];
                i += 2;
            } else {
                sym[j] = sym[i];
                end[j++] = end[i++];
            }
        }
        n = j;
    }
    for (size_t i = 0; i < n; i++) {
        if (!kiln_ids_push(ids, sym[i])) return false;
        if (ends && !kiln_ids_push(ends, (int32_t)end[i])) return false;
    }
    return true;
}

bool kiln_tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, kiln_ids *ids, kiln_ids *ends)
{
    const unsigned char *s = (const unsigned char *)text;
    if (ends && len >= INT32_MAX) return false;
    size_t i = 0;
    while (i < len) {
        if (t->kind == KILN_TOK_CHAR) {
            uint32_t cp;
            size_t k = utf8_decode(s + i, len - i, true, &cp);
            i += k;
            if (!kiln_ids_push(ids, char_id(t, cp))) return false;
            if (ends && !kiln_ids_push(ends, (int32_t)i)) return false;
        } else if (t->kind == KILN_TOK_BPE) {
            size_t k = kiln_tokenizer_chunk_len(text + i, len - i);
            if (!bpe_encode_chunk(t, s + i, k, i, ids, ends)) return false;
            i += k;
        } else {
            if (!kiln_ids_push(ids, s[i])) return false;
            i++;
            if (ends && !kiln_ids_push(ends, (int32_t)i)) return false;
        }
    }
    return true;
}

/* ---- decoding ---------------------------------------------------------------------------------- */

const char *kiln_tokenizer_token(const kiln_tokenizer *t, int32_t id, size_t *len)
{
    static const unsigned char all_bytes[256] = {
#define B4(x) x, x + 1, x + 2, x + 3
#define B16(x) B4(x), B4(x + 4), B4(x + 8), B4(x + 12)
#define B64(x) B16(x), B16(x + 16), B16(x + 32), B16(x + 48)
        B64(0), B64(64), B64(128), B64(192)
#undef B4
#undef B16
#undef B64
    };
    *len = 0;
    if (id < 0 || id >= t->base) return NULL;
    if (!t->tok_off) { /* a byte tokenizer whose table could not be allocated */
        *len = 1;
        return (const char *)&all_bytes[id];
    }
    *len = t->tok_off[id + 1] - t->tok_off[id];
    return (const char *)t->tok_bytes + t->tok_off[id];
}

char *kiln_tokenizer_decode(const kiln_tokenizer *t, const int32_t *ids, size_t n, bool show_specials, size_t *len)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    char *out = NULL;
    size_t size = 0, cap = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t k;
        if (i == n) {
            piece = "", k = 1; /* the terminating NUL */
        } else if (ids[i] >= 0 && ids[i] < t->base) {
            piece = kiln_tokenizer_token(t, ids[i], &k);
        } else if (ids[i] >= t->base && ids[i] < kiln_tokenizer_vocab(t)) {
            piece = show_specials ? special_names[ids[i] - t->base] : "";
            k = strlen(piece);
        } else {
            piece = replacement, k = 3;
        }
        if (k == 0) continue;
        if (size + k > cap && !grow((void **)&out, &cap, size + k, 1)) {
            free(out);
            return NULL;
        }
        memcpy(out + size, piece, k);
        size += k;
    }
    if (len) *len = size - 1;
    return out;
}

/* ---- training ------------------------------------------------------------------------------------ */

/* The distinct chunks of the training text with their counts. */
typedef struct word_table {
    unsigned char *bytes;  /* every word's bytes back to back */
    size_t n_bytes, cap_bytes;
    size_t *off;           /* [n] */
    uint8_t *len;          /* [n], at most KILN_BPE_MAX_CHUNK */
    uint64_t *count;       /* [n] */
    size_t n, cap;
    uint32_t *slot;        /* hash: word index + 1, 0 = empty; n_slot a power of two */
    size_t n_slot;
} word_table;

struct kiln_tok_trainer {
    kiln_tokenizer_config cfg;
    unsigned char *pending; /* fed text not yet consumed (a partial chunk or sequence) */
    size_t n_pending, cap_pending;
    unsigned char *seen;    /* char: bitmap over code points 0 .. 0x10FFFF */
    word_table words;       /* bpe */
    bool oom;
};

static uint64_t hash_bytes(const unsigned char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return hash64(h);
}

static bool words_rehash(word_table *w, size_t n_slot)
{
    uint32_t *slot = calloc(n_slot, sizeof *slot);
    if (!slot) return false;
    for (size_t i = 0; i < w->n; i++) {
        size_t j = hash_bytes(w->bytes + w->off[i], w->len[i]) & (n_slot - 1);
        while (slot[j]) j = (j + 1) & (n_slot - 1);
        slot[j] = (uint32_t)(i + 1);
    }
    free(w->slot);
    w->slot = slot;
    w->n_slot = n_slot;
    return true;
}

static bool words_add(word_table *w, const unsigned char *s, size_t n)
{
    if (2 * (w->n + 1) > w->n_slot && !words_rehash(w, w->n_slot ? 2 * w->n_slot : 1024)) return false;
    size_t j = hash_bytes(s, n) & (w->n_slot - 1);
    for (; w->slot[j]; j = (j + 1) & (w->n_slot - 1)) {
        size_t i = w->slot[j] - 1;
        if (w->len[i] == n && memcmp(w->bytes + w->off[i], s, n) == 0) {
            w->count[i]++;
            return true;
        }
    }
    if (w->n >= UINT32_MAX - 1) return false; /* word indices are 32-bit */
    if (!grow((void **)&w->bytes, &w->cap_bytes, w->n_bytes + n, 1)) return false;
    size_t cap = w->cap;
    if (w->n == cap) {
        size_t c2 = cap;
        if (!grow((void **)&w->off, &c2, w->n + 1, sizeof *w->off)) return false;
        c2 = cap;
        if (!grow((void **)&w->len, &c2, w->n + 1, sizeof *w->len)) return false;
        c2 = cap;
        if (!grow((void **)&w->count, &c2, w->n + 1, sizeof *w->count)) return false;
        w->cap = c2;
    }
    memcpy(w->bytes + w->n_bytes, s, n);
    w->off[w->n] = w->n_bytes;
    w->len[w->n] = (uint8_t)n;
    w->count[w->n] = 1;
    w->n_bytes += n;
    w->slot[j] = (uint32_t)(++w->n);
    return true;
}

static void words_free(word_table *w)
{
    free(w->bytes);
    free(w->off);
    free(w->len);
    free(w->count);
    free(w->slot);
    memset(w, 0, sizeof *w);
}

kiln_tok_trainer *kiln_tok_trainer_new(const kiln_tokenizer_config *cfg, kiln_diags *d)
{
    if (cfg->kind != KILN_TOK_BYTE && cfg->kind != KILN_TOK_CHAR && cfg->kind != KILN_TOK_BPE) {
        kiln_diags_add(d, NULL, 0, 0, "tokenizer", "no tokenizer kind to train");
        return NULL;
    }
    if (cfg->kind == KILN_TOK_BPE && (cfg->vocab < 256 || cfg->vocab > KILN_TOKENIZER_MAX_BASE)) {
        kiln_diags_add(d, NULL, 0, 0, "tokenizer.vocab", "%lld must be in [256, %d]", (long long)cfg->vocab,
                       KILN_TOKENIZER_MAX_BASE);
        return NULL;
    }
    kiln_tok_trainer *tr = calloc(1, sizeof *tr);
    if (tr && cfg->kind == KILN_TOK_CHAR && !(tr->seen = calloc(0x110000 / 8, 1))) {
        free(tr);
        tr = NULL;
    }
    if (!tr) {
        kiln_diags_add(d, NULL, 0, 0, "tokenizer", "out of memory");
        return NULL;
    }
    tr->cfg = *cfg;
    return tr;
}

void kiln_tok_trainer_free(kiln_tok_trainer *tr)
{
    if (!tr) return;
    free(tr->pending);
    free(tr->seen);
    words_free(&tr->words);
    free(tr);
}

/* Consumes pending[0..n) (all of it when final, else its stable prefix). */
static bool trainer_consume(kiln_tok_trainer *tr, bool final)
{
    const unsigned char *s = tr->pending;
    size_t n = tr->n_pending, used = 0;
    if (tr->cfg.kind == KILN_TOK_CHAR) {
        while (used < n) {
            uint32_t cp;
            size_t k = utf8_decode(s + used, n - used, final, &cp);
            if (k == 0) break;
            tr->seen[cp >> 3] |= (unsigned char)(1u << (cp & 7));
            used += k;
        }
    } else if (tr->cfg.kind == KILN_TOK_BPE) {
        while (used < n) {
            size_t k = kiln_tokenizer_chunk_len((const char *)s + used, n - used);
            if (!final && used + k == n) break; /* the last chunk may continue */
            if (!words_add(&tr->words, s + used, k)) return false;
            used += k;
        }
    } else {
        used = n;
    }
    if (used > 0 && used < n) memmove(tr->pending, tr->pending + used, n - used);
    tr->n_pending = n - used;
    return true;
}

bool kiln_tok_trainer_feed(kiln_tok_trainer *tr, const char *text, size_t len)
{
    if (tr->oom) return false;
    if (tr->cfg.kind == KILN_TOK_BYTE) return true;
    /* in slices, so that pending stays small even when fed a whole file at once */
    const size_t slice = 1 << 16;
    for (size_t at = 0; at < len; at += slice) {
        size_t k = len - at < slice ? len - at : slice;
        if (!grow((void **)&tr->pending, &tr->cap_pending, tr->n_pending + k, 1)) return !(tr->oom = true);
        memcpy(tr->pending + tr->n_pending, text + at, k);
        tr->n_pending += k;
        if (!trainer_consume(tr, false)) return !(tr->oom = true);
    }
    return true;
}

bool kiln_tok_trainer_end_document(kiln_tok_trainer *tr)
{
    if (tr->oom) return false;
    if (!trainer_consume(tr, true)) return !(tr->oom = true);
    return true;
}

/* --- the BPE merge loop --- */

typedef struct pair_stat {
    int32_t a, b;
    int64_t count;   /* occurrences in the corpus (word count × positions) */
    int64_t head;    /* first entry of this pair's word list in bpe.links, or -1 */
    int64_t pushed;  /* the merge after which it was last queued, +1 */
} pair_stat;

typedef struct heap_entry {
    int64_t count;
    int32_t a, b;
} heap_entry;

typedef struct bpe_state {
    const word_table *w;
    int32_t *sym;          /* every word's symbols, word i at w->off[i] (symbols ≤ bytes) */
    uint8_t *n_sym;        /* [n words] */
    uint32_t *stamp;       /* [n words]: last merge that visited the word, +1 */
    pair_stat *pairs;
    size_t n_pairs, cap_pairs;
    uint64_t *map_key;     /* pair key → index in pairs (map_val, -1 = empty) */
    int64_t *map_val;
    size_t map_cap;
    struct { uint32_t word; int64_t next; } *links; /* word lists, one pool for all pairs */
    size_t n_links, cap_links;
    heap_entry *heap;
    size_t n_heap, cap_heap;
    int64_t *touched;      /* pairs with the new id, pushed after each merge */
    size_t n_touched, cap_touched;
} bpe_state;

static bool map_rehash(bpe_state *s, size_t cap)
{
    uint64_t *key = malloc(cap * sizeof *key);
    int64_t *val = malloc(cap * sizeof *val);
    if (!key || !val) {
        free(key);
        free(val);
        return false;
    }
    for (size_t i = 0; i < cap; i++) val[i] = -1;
    for (size_t p = 0; p < s->n_pairs; p++) {
        uint64_t k = pair_key(s->pairs[p].a, s->pairs[p].b);
        size_t j = hash64(k) & (cap - 1);
        while (val[j] >= 0) j = (j + 1) & (cap - 1);
        key[j] = k;
        val[j] = (int64_t)p;
    }
    free(s->map_key);
    free(s->map_val);
    s->map_key = key;
    s->map_val = val;
    s->map_cap = cap;
    return true;
}

/* The index of pair (a, b), created with count 0 if new; -1 when out of memory. */
static int64_t pair_get(bpe_state *s, int32_t a, int32_t b)
{
    uint64_t k = pair_key(a, b);
    if (2 * (s->n_pairs + 1) > s->map_cap && !map_rehash(s, s->map_cap ? 2 * s->map_cap : 4096)) return -1;
    size_t j = hash64(k) & (s->map_cap - 1);
    for (; s->map_val[j] >= 0; j = (j + 1) & (s->map_cap - 1))
        if (s->map_key[j] == k) return s->map_val[j];
    if (!grow((void **)&s->pairs, &s->cap_pairs, s->n_pairs + 1, sizeof *s->pairs)) return -1;
    s->pairs[s->n_pairs] = (pair_stat){a, b, 0, -1, 0};
    s->map_key[j] = k;
    s->map_val[j] = (int64_t)s->n_pairs;
    return (int64_t)s->n_pairs++;
}

/* Records that word w contains pair p (once: the lists are built word by word, so a
 * repeat is always at the head). */
static bool pair_link(bpe_state *s, int64_t p, uint32_t w)
{
    int64_t h = s->pairs[p].head;
    if (h >= 0 && s->links[h].word == w) return true;
    if (!grow((void **)&s->links, &s->cap_links, s->n_links + 1, sizeof *s->links)) return false;
    s->links[s->n_links].word = w;
    s->links[s->n_links].next = h;
    s->pairs[p].head = (int64_t)s->n_links++;
    return true;
}

/* Heap order: larger count first, then smaller (a, b). */
static bool heap_before(const heap_entry *x, const heap_entry *y)
{
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static bool heap_push(bpe_state *s, heap_entry e)
{
    if (!grow((void **)&s->heap, &s->cap_heap, s->n_heap + 1, sizeof *s->heap)) return false;
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_before(&e, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
    return true;
}

static heap_entry heap_pop(bpe_state *s)
{
    heap_entry top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!heap_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

/* Adds `delta` occurrences of every adjacent pair of word w; when link_id >= 0, links
 * the pairs that contain link_id to w and remembers them as touched. */
static bool word_pairs(bpe_state *s, uint32_t w, int64_t delta, int32_t link_id)
{
    const int32_t *sym = s->sym + s->w->off[w];
    for (size_t i = 0; i + 1 < s->n_sym[w]; i++) {
        int64_t p = pair_get(s, sym[i], sym[i + 1]);
        if (p < 0) return false;
        s->pairs[p].count += delta;
        if (link_id >= 0 && (sym[i] == link_id || sym[i + 1] == link_id)) {
            if (!pair_link(s, p, w)) return false;
            if (!grow((void **)&s->touched, &s->cap_touched, s->n_touched + 1, sizeof *s->touched)) return false;
            s->touched[s->n_touched++] = p;
        }
    }
    return true;
}

static void bpe_free(bpe_state *s)
{
    free(s->sym);
    free(s->n_sym);
    free(s->stamp);
    free(s->pairs);
    free(s->map_key);
    free(s->map_val);
    free(s->links);
    free(s->heap);
    free(s->touched);
}

/* Learns up to n_merges merges into merges[2 * n_merges]; *done gets how many. */
static bool bpe_train(const word_table *w, int32_t *merges, int64_t n_merges, int64_t *done)
{
    bpe_state s = {.w = w};
    bool ok = false;
    *done = 0;
    s.sym = malloc((w->n_bytes ? w->n_bytes : 1) * sizeof *s.sym);
    s.n_sym = malloc(w->n ? w->n : 1);
    s.stamp = calloc(w->n ? w->n : 1, sizeof *s.stamp);
    if (!s.sym || !s.n_sym || !s.stamp) goto out;
    for (size_t i = 0; i < w->n_bytes; i++) s.sym[i] = w->bytes[i];
    for (size_t i = 0; i < w->n; i++) {
        s.n_sym[i] = w->len[i];
        const int32_t *sym = s.sym + w->off[i];
        for (size_t k = 0; k + 1 < w->len[i]; k++) {
            int64_t p = pair_get(&s, sym[k], sym[k + 1]);
            if (p < 0 || !pair_link(&s, p, (uint32_t)i)) goto out;
            s.pairs[p].count += (int64_t)w->count[i];
        }
    }
    for (size_t p = 0; p < s.n_pairs; p++)
        if (!heap_push(&s, (heap_entry){s.pairs[p].count, s.pairs[p].a, s.pairs[p].b})) goto out;

    while (*done < n_merges && s.n_heap > 0) {
        heap_entry top = heap_pop(&s);
        int64_t p = pair_get(&s, top.a, top.b);
        if (p < 0) goto out;
        int64_t current = s.pairs[p].count;
        if (top.count != current) { /* stale: counts only fall, so re-queue the real one */
            if (current > 0 && !heap_push(&s, (heap_entry){current, top.a, top.b})) goto out;
            continue;
        }
        if (current < 2) break; /* a pair seen once teaches nothing */
        int32_t a = top.a, b = top.b, z = (int32_t)(256 + *done);
        uint32_t stamp = (uint32_t)(*done + 1);
        s.n_touched = 0;
        for (int64_t l = s.pairs[p].head; l >= 0; l = s.links[l].next) {
            uint32_t wi = s.links[l].word;
            if (s.stamp[wi] == stamp) continue;
            s.stamp[wi] = stamp;
            int32_t *sym = s.sym + w->off[wi];
            size_t n = s.n_sym[wi], j = 0;
            bool has = false;
            for (size_t i = 0; i + 1 < n && !has; i++) has = sym[i] == a && sym[i + 1] == b;
            if (!has) continue; /* an older entry: the word lost this pair to another merge */
            int64_t f = (int64_t)w->count[wi];
            if (!word_pairs(&s, wi, -f, -1)) goto out;
            for (size_t i = 0; i < n;) {
                if (i + 1 < n && sym[i] == a && sym[i + 1] == b) {
                    sym[j++] = z;
                    i += 2;
                } else {
                    sym[j++] = sym[i++];
                }
            }
            s.n_sym[wi] = (uint8_t)j;
            if (!word_pairs(&s, wi, f, z)) goto out;
        }
        merges[2 * *done] = a;
        merges[2 * *done + 1] = b;
        ++*done;
        /* the new pairs (all contain z) enter the heap once, with their final counts */
        for (size_t i = 0; i < s.n_touched; i++) {
            pair_stat *ps = &s.pairs[s.touched[i]];
            if (ps->count <= 0 || ps->pushed == *done) continue;
            ps->pushed = *done;
            if (!heap_push(&s, (heap_entry){ps->count, ps->a, ps->b})) goto out;
        }
    }
    ok = true;
out:
    bpe_free(&s);
    return ok;
}

bool kiln_tok_trainer_finish(kiln_tok_trainer *tr, kiln_tokenizer *out, kiln_diags *d)
{
    memset(out, 0, sizeof *out);
    out->kind = tr->cfg.kind;
    if (!kiln_tok_trainer_end_document(tr)) goto oom;
    if (tr->cfg.kind == KILN_TOK_BYTE) {
        kiln_tokenizer_init_byte(out);
        return true;
    }
    if (tr->cfg.kind == KILN_TOK_CHAR) {
        tr->seen[REPLACEMENT >> 3] |= (unsigned char)(1u << (REPLACEMENT & 7));
        /* 64 code points at a time, skipping empty words: almost all of them are */
        size_t n = 0;
        for (uint32_t w = 0; w < 0x110000 / 64; w++) {
            uint64_t bits;
            memcpy(&bits, tr->seen + 8 * w, 8);
            if (bits) n += (size_t)__builtin_popcountll(bits);
        }
        if (!(out->codepoints = malloc(n * sizeof *out->codepoints))) goto oom;
        n = 0;
        for (uint32_t w = 0; w < 0x110000 / 64; w++) {
            uint64_t bits;
            memcpy(&bits, tr->seen + 8 * w, 8);
            for (uint32_t b = 8 * w; bits && b < 8 * w + 8; b++)
                for (uint32_t k = 0; k < 8; k++)
                    if (tr->seen[b] >> k & 1) out->codepoints[n++] = 8 * b + k;
        }
        out->base = (int32_t)n;
        if (!build_token_table(out)) goto oom;
        return true;
    }
    int64_t want = tr->cfg.vocab - 256, done;
    if (!(out->merges = malloc((size_t)(want > 0 ? want : 1) * 2 * sizeof *out->merges))) goto oom;
    if (!bpe_train(&tr->words, out->merges, want, &done)) goto oom;
    out->base = (int32_t)(256 + done);
    bool dup;
    if (!build_token_table(out) || !build_pair_map(out, &dup)) goto oom;
    return true;
oom:
    kiln_tokenizer_free(out);
    kiln_diags_add(d, NULL, 0, 0, "tokenizer", "out of memory while training the tokenizer");
    return false;
}

bool kiln_tokenizer_train(kiln_tokenizer *t, const kiln_tokenizer_config *cfg, const char *text, size_t len,
                          kiln_diags *d)
{
    memset(t, 0, sizeof *t);
    kiln_tok_trainer *tr = kiln_tok_trainer_new(cfg, d);
    if (!tr) return false;
    int errors = d->n;
    bool ok = kiln_tok_trainer_feed(tr, text, len) && kiln_tok_trainer_finish(tr, t, d);
    if (!ok && d->n == errors) kiln_diags_add(d, NULL, 0, 0, "tokenizer", "out of memory while training the tokenizer");
    kiln_tok_trainer_free(tr);
    return ok;
}

/* ---- serialisation ------------------------------------------------------------------------------ */

char *kiln_tokenizer_serialize(const kiln_tokenizer *t)
{
    const char *kind = t->kind == KILN_TOK_CHAR ? "char" : t->kind == KILN_TOK_BPE ? "bpe" : "byte";
    size_t n_nums = t->kind == KILN_TOK_CHAR  ? (size_t)t->base
                    : t->kind == KILN_TOK_BPE ? 2 * (size_t)(t->base - 256)
                                              : 0;
    size_t cap = 64 + 12 * n_nums; /* each number ≤ 10 digits and a space */
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t n = (size_t)snprintf(s, cap, "kiln-tokenizer/1 %s", kind);
    if (t->kind == KILN_TOK_CHAR) {
        n += (size_t)snprintf(s + n, cap - n, " %d", (int)t->base);
        for (int32_t i = 0; i < t->base; i++) n += (size_t)snprintf(s + n, cap - n, " %u", (unsigned)t->codepoints[i]);
    } else if (t->kind == KILN_TOK_BPE) {
        n += (size_t)snprintf(s + n, cap - n, " %d", (int)(t->base - 256));
        for (size_t i = 0; i < n_nums; i++) n += (size_t)snprintf(s + n, cap - n, " %d", (int)t->merges[i]);
    }
    return s;
}

/* A strict cursor over the serialised text: words separated by exactly one space. */
typedef struct cursor {
    const char *p;
    const char *why; /* the first problem found */
} cursor;

static bool expect_word(cursor *c, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(c->p, word, n) != 0 || (c->p[n] != ' ' && c->p[n] != 0)) return false;
    c->p += n;
    return true;
}

/* " N" with N decimal in [0, max]. */
static bool read_num(cursor *c, uint64_t max, uint64_t *out, const char *what)
{
    if (c->why) return false;
    if (c->p[0] != ' ' || c->p[1] < '0' || c->p[1] > '9') {
        c->why = what;
        return false;
    }
    c->p++;
    uint64_t v = 0;
    int digits = 0;
    while (*c->p >= '0' && *c->p <= '9') {
        v = v * 10 + (uint64_t)(*c->p++ - '0');
        if (++digits > 10 || v > max) {
            c->why = what;
            return false;
        }
    }
    *out = v;
    return true;
}

bool kiln_tokenizer_deserialize(kiln_tokenizer *t, const char *text, const char *file, const char *where,
                                kiln_diags *d)
{
    memset(t, 0, sizeof *t);
    cursor c = {text ? text : "", NULL};
    const char *why = NULL;
    char buf[96];
    if (!expect_word(&c, "kiln-tokenizer/1") || *c.p++ != ' ') {
        why = "does not start with 'kiln-tokenizer/1 KIND'";
        goto bad;
    }
    size_t rest = strlen(c.p);
    if (expect_word(&c, "byte")) {
        kiln_tokenizer_init_byte(t);
    } else if (expect_word(&c, "char")) {
        t->kind = KILN_TOK_CHAR;
        uint64_t n;
        if (!read_num(&c, 0x110000, &n, "char: bad code point count")) goto cursor_bad;
        if (n == 0 || n * 2 > rest) { /* each code point takes at least 2 characters */
            why = "char: the code point count does not match the list";
            goto bad;
        }
        if (!(t->codepoints = malloc(n * sizeof *t->codepoints))) goto oom;
        bool has_replacement = false;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t cp;
            if (!read_num(&c, 0x10FFFF, &cp, "char: bad code point")) goto cursor_bad;
            if (!is_scalar_value((uint32_t)cp) || (i > 0 && cp <= t->codepoints[i - 1])) {
                snprintf(buf, sizeof buf, "char: code point %llu is a surrogate or out of order",
                         (unsigned long long)cp);
                why = buf;
                goto bad;
            }
            t->codepoints[i] = (uint32_t)cp;
            has_replacement |= cp == REPLACEMENT;
        }
        if (!has_replacement) {
            why = "char: U+FFFD (65533), the unknown-character token, is missing";
            goto bad;
        }
        t->base = (int32_t)n;
        if (!build_token_table(t)) goto oom;
    } else if (expect_word(&c, "bpe")) {
        t->kind = KILN_TOK_BPE;
        uint64_t m;
        if (!read_num(&c, KILN_TOKENIZER_MAX_BASE - 256, &m, "bpe: bad merge count")) goto cursor_bad;
        if (m * 4 > rest) { /* each merge takes at least 4 characters */
            why = "bpe: the merge count does not match the list";
            goto bad;
        }
        if (!(t->merges = malloc((m ? m : 1) * 2 * sizeof *t->merges))) goto oom;
        for (uint64_t i = 0; i < m; i++) {
            for (int k = 0; k < 2; k++) {
                uint64_t id;
                if (!read_num(&c, INT32_MAX, &id, "bpe: bad merge")) goto cursor_bad;
                if (id >= 256 + i) {
                    snprintf(buf, sizeof buf, "bpe: merge %llu uses id %llu, not defined before it",
                             (unsigned long long)i, (unsigned long long)id);
                    why = buf;
                    goto bad;
                }
                t->merges[2 * i + k] = (int32_t)id;
            }
        }
        t->base = (int32_t)(256 + m);
        /* check token lengths before building the byte table: without the limit,
         * merges of a token with itself would double its length each time */
        uint32_t *len = malloc((size_t)t->base * sizeof *len);
        if (!len) goto oom;
        for (int32_t i = 0; i < t->base; i++) {
            len[i] = i < 256 ? 1 : len[t->merges[2 * (i - 256)]] + len[t->merges[2 * (i - 256) + 1]];
            if (len[i] > KILN_BPE_MAX_CHUNK) {
                snprintf(buf, sizeof buf, "bpe: merge %d makes a token longer than %d bytes", (int)(i - 256),
                         KILN_BPE_MAX_CHUNK);
                free(len);
                why = buf;
                goto bad;
            }
        }
        free(len);
        bool dup;
        if (!build_pair_map(t, &dup)) {
            if (!dup) goto oom;
            why = "bpe: a merge appears twice";
            goto bad;
        }
        if (!build_token_table(t)) goto oom;
    } else {
        why = "unknown kind (expected byte, char or bpe)";
        goto bad;
    }
    if (*c.p != 0) {
        why = "unexpected text after the end";
        goto bad;
    }
    return true;
cursor_bad:
    why = c.why;
bad:
    kiln_tokenizer_free(t);
    kiln_diags_add(d, file, 0, 0, where, "invalid tokenizer: %s", why);
    return false;
oom:
    kiln_tokenizer_free(t);
    kiln_diags_add(d, file, 0, 0, where, "out of memory while loading the tokenizer");
    return false;
}
