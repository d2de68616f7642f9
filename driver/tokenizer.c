/* tokenizer.c — byte, char and byte-level BPE tokenizers (see tokenizer.h).
 *
 * Design. A tokenizer is a base vocabulary plus a table of the bytes each base id
 * stands for (tok_off/tok_bytes), which decoding reads for every kind. Encoding is per
 * kind: bytes map to themselves; code points are found by binary search in the sorted
 * code point list; BPE cuts text into chunks and, inside each chunk, repeatedly merges
 * the adjacent pair with the lowest merge rank (a hash map (left, right) → rank), which
 * reproduces exactly the segmentation training produced.
 *
 * BPE training (bpe_train.c) works on a word table, not on the corpus: every distinct
 * chunk once, with its count. Pair counts are kept for the whole table and updated
 * incrementally: each pair has a list of the words that contain it, so a merge only
 * rewrites those words (subtracting their old pairs, adding their new ones). The best
 * pair comes from a max-heap with lazy deletion: entries may hold stale, larger counts;
 * a popped entry whose count is stale is pushed back with the current count. Counts of
 * existing pairs only ever fall (a merge creates new pairs only with the new id), so a
 * valid top entry is the true maximum. Ties go to the smallest (left, right).
 *
 * Streaming: the trainers keep a small pending buffer and consume only the stable
 * prefix of what they were fed, so feeding a file in blocks of any size gives the same
 * tokenizer as feeding it whole.
 */
#include "tokenizer.h"
#include "tokenizer_impl.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const special_names[KILN_N_SPECIALS] = {"<pad>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>"};

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

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* Decodes the sequence at s[0..n), n >= 1. Returns the bytes consumed with *cp set;
 * an invalid byte consumes one byte and gives U+FFFD. Returns 0 when s is a proper
 * prefix of a valid sequence and more text may follow (!final): the caller must wait.
 * The rules are Unicode's Table 3-7: no overlongs, no surrogates, nothing past U+10FFFF. */
size_t tok_utf8_decode(const unsigned char *s, size_t n, bool final, uint32_t *cp)
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
        size_t k = tok_utf8_decode(s + i, n - i, false, &cp);
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
        size_t k = tok_utf8_decode(s + i, len - i, true, &cp);
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
bool tok_build_token_table(kiln_tokenizer *t)
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
bool tok_build_pair_map(kiln_tokenizer *t, bool *dup)
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
    if (!tok_build_token_table(t)) {
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
            size_t k = tok_utf8_decode(s + i, len - i, true, &cp);
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
        if (!tok_build_token_table(t)) goto oom;
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
        if (!tok_build_pair_map(t, &dup)) {
            if (!dup) goto oom;
            why = "bpe: a merge appears twice";
            goto bad;
        }
        if (!tok_build_token_table(t)) goto oom;
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
