/* bpe_train.c — training a tokenizer from text (see tokenizer.h): the streaming trainer,
 * which for BPE builds the word table and runs the merge loop, and for char collects the
 * set of code points. Split from tokenizer.c, whose opening comment describes BPE
 * training ("BPE training (bpe_train) works on a word table") and the streaming rule;
 * the helpers both files use are in tokenizer_impl.h. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_impl.h"

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
            size_t k = tok_utf8_decode(s + used, n - used, final, &cp);
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
        if (!tok_build_token_table(out)) goto oom;
        return true;
    }
    int64_t want = tr->cfg.vocab - 256, done;
    if (!(out->merges = malloc((size_t)(want > 0 ? want : 1) * 2 * sizeof *out->merges))) goto oom;
    if (!bpe_train(&tr->words, out->merges, want, &done)) goto oom;
    out->base = (int32_t)(256 + done);
    bool dup;
    if (!tok_build_token_table(out) || !tok_build_pair_map(out, &dup)) goto oom;
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
