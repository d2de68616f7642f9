/* generate.c — text generation with a model exported by `kiln compile --generate`, and
 * nothing else: the library's NAME_prefill and NAME_decode_step over a KV cache the
 * program allocates once.
 *
 *   generate WEIGHTS PROMPT MAX_NEW [TEMPERATURE TOP_K SEED]
 *
 * char_gpt's tokenizer is bytes, so the prompt's bytes are its tokens. Without a
 * temperature (or with 0) it decodes greedily; otherwise it samples among the TOP_K most
 * likely tokens (0 = all) exactly as `kiln generate --temperature T --top-k K --seed S`
 * does (docs/generation.md, "Sampling"), with the same random numbers (xoshiro256**
 * seeded through splitmix64 from the seed and the stream name "generate", as kiln/rng.h),
 * so both print the same text. Prints the prompt, then each token as it is produced.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "char_gpt.h"

/* ---- kiln's random numbers (runtime/rng.c): xoshiro256**, splitmix64 seeding ---- */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the stream name, folded into the seed */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    uint64_t x = seed ^ h;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static double rng_uniform(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

/* ---- sampling: greedy, or temperature + top-k ---- */

static const double *key;

static int by_value_desc(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (key[x] != key[y]) return key[x] > key[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* -1 when the row holds a NaN or +inf logit, or only -inf ones: nothing to sample from */
static int32_t pick(const float *logits, double temperature, int top_k, rng *r)
{
    enum { V = CHAR_GPT_VOCAB };
    int32_t best = 0;
    for (int i = 0; i < V; i++) {
        if (isnan(logits[i]) || logits[i] == INFINITY) return -1;
        if (logits[i] > logits[best]) best = i;
    }
    if (logits[best] == -INFINITY) return -1;
    if (temperature <= 0) return best;
    static double p[V];
    static int32_t order[V];
    /* (logit - max)/temperature is at most 0: no temperature overflows it */
    for (int i = 0; i < V; i++) p[i] = ((double)logits[i] - logits[best]) / temperature, order[i] = i;
    int keep = V;
    if (top_k > 0 && top_k < V) { /* rank by value, then id; keep the first K and every id tied with the K-th */
        key = p;
        qsort(order, V, sizeof *order, by_value_desc);
        keep = top_k;
        while (keep < V && p[order[keep]] == p[order[top_k - 1]]) keep++;
    }
    double total = 0;
    for (int k = 0; k < keep; k++) total += (p[order[k]] = exp(p[order[k]]));
    double u = rng_uniform(r) * total, acc = 0;
    for (int k = 0; k < keep; k++) {
        acc += p[order[k]];
        if (u < acc) return order[k];
    }
    return order[keep - 1];
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 7) {
        fprintf(stderr, "usage: %s WEIGHTS PROMPT MAX_NEW [TEMPERATURE TOP_K SEED]\n", argv[0]);
        return 2;
    }
    const char *prompt = argv[2];
    long max_new = strtol(argv[3], NULL, 10);
    double temperature = argc == 7 ? strtod(argv[4], NULL) : 0;
    int top_k = argc == 7 ? atoi(argv[5]) : 0;
    uint64_t seed = argc == 7 ? strtoull(argv[6], NULL, 10) : 0;
    size_t n = strlen(prompt);
    if (n == 0 || n > CHAR_GPT_CONTEXT) {
        fprintf(stderr, "the prompt must hold 1 to %d bytes\n", CHAR_GPT_CONTEXT);
        return 1;
    }

    /* every buffer once: nothing is allocated per token */
    float *params = aligned_alloc(64, CHAR_GPT_PARAMS_BYTES);
    float *cache = aligned_alloc(64, CHAR_GPT_KV_CACHE_BYTES);
    void *work = aligned_alloc(64, CHAR_GPT_GEN_WORKSPACE_BYTES);
    /* one row of logits (a multiple of 64 bytes, as aligned_alloc asks): both entries give the next token's */
    float *logits = aligned_alloc(64, (CHAR_GPT_VOCAB * sizeof(float) + 63) / 64 * 64);
    int32_t tokens[CHAR_GPT_CONTEXT] = {0};
    if (!params || !cache || !work || !logits) return 1;
    int rc = char_gpt_load(params, argv[1]);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot load the weights (status %d)\n", argv[1], rc);
        return 1;
    }
    for (size_t i = 0; i < n; i++) tokens[i] = (unsigned char)prompt[i];
    rng r;
    rng_seed(&r, seed, "generate");

    fputs(prompt, stdout);
    const float *row = NULL;
    if (max_new > 0) {
        int32_t len = (int32_t)n;
        rc = char_gpt_prefill(params, cache, work, tokens, &len, logits); /* the logits after the prompt */
        row = logits;
    }
    int32_t pos = (int32_t)n;
    for (long k = 0; k < max_new && rc == 0; k++) {
        if (k > 0) {
            if (pos >= CHAR_GPT_CONTEXT) break; /* the context is full */
            int32_t last = tokens[pos];
            rc = char_gpt_decode_step(params, cache, work, &last, &pos, logits);
            row = logits;
            pos++;
            if (rc != 0) break;
        }
        int32_t id = pick(row, temperature, top_k, &r);
        if (id < 0) {
            fprintf(stderr, "the logits are not finite: nothing to sample from\n");
            rc = 1;
            break;
        }
        if (pos < CHAR_GPT_CONTEXT) tokens[pos] = id;
        putchar(id);
        fflush(stdout);
    }
    putchar('\n');
    free(params);
    free(cache);
    free(work);
    free(logits);
    if (rc != 0) fprintf(stderr, "generation failed (status %d)\n", rc);
    return rc != 0;
}
