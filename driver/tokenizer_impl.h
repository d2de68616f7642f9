/* tokenizer_impl.h — private to tokenizer.c and bpe_train.c: the small helpers both use
 * (static inline), and the pieces of tokenizer.c that training calls to turn what it
 * learned into a tokenizer. */
#ifndef KILN_TOKENIZER_IMPL_H
#define KILN_TOKENIZER_IMPL_H

#include <stdlib.h>

#include "tokenizer.h"

/* U+FFFD: what an invalid byte decodes to, and a char vocabulary always holds */
#define REPLACEMENT 0xFFFDu

/* Grows *p (elements of `size` bytes) so that it holds at least `need`; false when out
 * of memory. The capacity doubles so repeated growth costs amortised O(1). */
static inline bool grow(void **p, size_t *cap, size_t need, size_t size)
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

static inline uint64_t hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* tokenizer.c */
size_t tok_utf8_decode(const unsigned char *s, size_t n, bool final, uint32_t *cp);
bool tok_build_token_table(kiln_tokenizer *t);
bool tok_build_pair_map(kiln_tokenizer *t, bool *dup);

#endif
