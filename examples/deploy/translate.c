/* translate.c — an encoder–decoder generating with a library exported by `kiln compile
 * --generate` (examples/translator.json), and nothing else: translator_prefill encodes
 * the source once (its cross-attention keys and values go into the KV cache with the
 * decoder's own), translator_decode_step then adds one token at a time.
 *
 *   translate WEIGHTS SOURCE MAX_NEW [PROMPT]
 *
 * The model's tokenizer is bytes (docs/data.md): a byte's id is its value, and the
 * special tokens follow the 256 bytes, <pad> <bos> <eos> <mask> <cls> <sep> = 256…261.
 * The decoder starts from <bos> and PROMPT's bytes; each step takes the most likely next
 * token (greedy: the first largest logit, as `kiln generate --greedy`), printed as it is
 * picked, until <eos>, MAX_NEW tokens or a full context. So it prints exactly what
 *   kiln generate examples/translator.json --weights WEIGHTS --source SOURCE --prompt PROMPT
 *       --max-new MAX_NEW --greedy
 * prints (with the same -D dims the library was compiled with).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translator.h"

enum { BYTES = 256, BOS = BYTES + 1, EOS = BYTES + 2 };
static const char *const specials[] = {"<pad>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>"};

static int32_t greedy(const float *logits)
{
    int32_t best = 0;
    for (int32_t i = 1; i < TRANSLATOR_VOCAB; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static void print_token(int32_t id)
{
    if (id < BYTES) putchar(id);
    else if (id - BYTES < (int32_t)(sizeof specials / sizeof specials[0])) fputs(specials[id - BYTES], stdout);
    else fputs("\xEF\xBF\xBD", stdout); /* an id no tokenizer gives: U+FFFD, as kiln prints it */
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s WEIGHTS SOURCE MAX_NEW [PROMPT]\n", argv[0]);
        return 2;
    }
    const char *source = argv[2], *prompt = argc == 5 ? argv[4] : "";
    long max_new = strtol(argv[3], NULL, 10);
    size_t ns = strlen(source), np = strlen(prompt);
    if (ns > TRANSLATOR_SOURCE_LEN || np + 1 > TRANSLATOR_CONTEXT) {
        fprintf(stderr, "the source holds at most %d bytes, the prompt %d\n", TRANSLATOR_SOURCE_LEN,
                TRANSLATOR_CONTEXT - 1);
        return 1;
    }

    /* every buffer once: nothing is allocated per token */
    float *params = aligned_alloc(64, TRANSLATOR_PARAMS_BYTES);
    float *cache = aligned_alloc(64, TRANSLATOR_KV_CACHE_BYTES);
    void *work = aligned_alloc(64, TRANSLATOR_GEN_WORKSPACE_BYTES);
    /* one row of logits (a multiple of 64 bytes, as aligned_alloc asks): both entries give the next token's */
    float *logits = aligned_alloc(64, (TRANSLATOR_VOCAB * sizeof(float) + 63) / 64 * 64);
    int32_t tokens[TRANSLATOR_CONTEXT] = {0}, src[TRANSLATOR_SOURCE_LEN] = {0}, src_mask[TRANSLATOR_SOURCE_LEN] = {0};
    if (!params || !cache || !work || !logits) return 1;
    int rc = translator_load(params, argv[1]);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot load the weights (status %d)\n", argv[1], rc);
        return 1;
    }
    for (size_t i = 0; i < ns; i++) src[i] = (unsigned char)source[i], src_mask[i] = 1;
    int32_t n = 0;
    tokens[n++] = BOS;
    for (size_t i = 0; i < np; i++) tokens[n++] = (unsigned char)prompt[i];

    fputs(prompt, stdout);
    const float *row = NULL;
    if (max_new > 0) { /* the encoder, once, and the decoder over <bos> + prompt */
        rc = translator_prefill(params, cache, work, tokens, &n, src, src_mask, logits);
        row = logits;
    }
    int32_t pos = n;
    for (long k = 0; k < max_new && rc == 0; k++) {
        if (k > 0) {
            if (pos >= TRANSLATOR_CONTEXT) break; /* the context is full */
            int32_t last = tokens[pos];
            rc = translator_decode_step(params, cache, work, &last, &pos, src_mask, logits);
            row = logits;
            pos++;
            if (rc != 0) break;
        }
        int32_t id = greedy(row);
        if (id == EOS) break;
        if (pos < TRANSLATOR_CONTEXT) tokens[pos] = id;
        print_token(id);
    }
    putchar('\n');
    free(params);
    free(cache);
    free(work);
    free(logits);
    if (rc != 0) fprintf(stderr, "generation failed (status %d)\n", rc);
    return rc != 0;
}
