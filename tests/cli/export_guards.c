/* export_guards.c WEIGHTS — the exported library's entry points refuse bad pointers with
 * a status instead of crashing, and take what malloc gives (tests/cli/test_export_abi.sh;
 * docs/cli.md): built against tests/cli/generate/gen_rope.json compiled with --train
 * --generate, it calls NAME_load, NAME_forward, NAME_train_step, NAME_prefill,
 * NAME_decode_step, NAME_train_grad and NAME_train_apply with each pointer NULL in turn
 * (KILN_FORWARD_NULL_ARG, KILN_LOAD_NULL_ARG) and each blob 2 bytes off a float's
 * alignment (KILN_FORWARD_MISALIGNED, KILN_LOAD_MISALIGNED), and checks that a refused
 * call wrote nothing and the good calls after it still work; then that blobs 16 bytes
 * off 64 (malloc's alignment) and a workspace at any byte give the same bits as 64-byte
 * aligned ones. Prints every mismatch; exit 0 when there is none. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_rope.h"

static int failures;

static void expect(const char *what, int got, int want)
{
    if (got == want) return;
    printf("%s: returned %d, expected %d\n", what, got, want);
    failures++;
}

/* 64-byte aligned, zeroed, with 64 spare bytes so that p + 4 bytes still holds the size */
static void *blob(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 64 + 63) / 64 * 64);
    if (!p) exit(2);
    memset(p, 0, (bytes + 64 + 63) / 64 * 64);
    return p;
}

#define OFF(p) ((void *)((char *)(p) + 2)) /* not even float-aligned */
#define AT(p, k) ((void *)((char *)(p) + (k)))

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    const char *w = argv[1];
    float *params = blob(GEN_ROPE_PARAMS_BYTES);
    void *ws = blob(GEN_ROPE_TRAIN_WORKSPACE_BYTES > GEN_ROPE_SPLIT_WORKSPACE_BYTES ? GEN_ROPE_TRAIN_WORKSPACE_BYTES
                                                                                 : GEN_ROPE_SPLIT_WORKSPACE_BYTES);
    float *optim = blob(GEN_ROPE_SPLIT_OPTIM_BYTES), *cache = blob(GEN_ROPE_KV_CACHE_BYTES);
    static int32_t tokens[GEN_ROPE_IN_TOKENS_COUNT], targets[GEN_ROPE_IN_TARGETS_COUNT];
    static float logits[GEN_ROPE_OUT_LOGITS_COUNT], row[GEN_ROPE_VOCAB];
    float loss = -1;
    int32_t n = 4, pos = 4, token = 7;
    for (int i = 0; i < GEN_ROPE_IN_TOKENS_COUNT; i++) tokens[i] = (i * 37) % 256, targets[i] = (i * 11) % 256;

    /* NAME_load */
    expect("load(NULL, path)", gen_rope_load(NULL, w), KILN_LOAD_NULL_ARG);
    expect("load(params, NULL)", gen_rope_load(params, NULL), KILN_LOAD_NULL_ARG);
    expect("load(params + 2 bytes, path)", gen_rope_load(OFF(params), w), KILN_LOAD_MISALIGNED);
    expect("load(params, path)", gen_rope_load(params, w), KILN_LOAD_OK);

    /* NAME_forward: each pointer NULL, each blob off; the outputs untouched */
    logits[0] = 12345;
    expect("forward(NULL params)", gen_rope_forward(NULL, ws, tokens, logits), KILN_FORWARD_NULL_ARG);
    expect("forward(NULL workspace)", gen_rope_forward(params, NULL, tokens, logits), KILN_FORWARD_NULL_ARG);
    expect("forward(NULL tokens)", gen_rope_forward(params, ws, NULL, logits), KILN_FORWARD_NULL_ARG);
    expect("forward(NULL logits)", gen_rope_forward(params, ws, tokens, NULL), KILN_FORWARD_NULL_ARG);
    expect("forward(params + 2 bytes)", gen_rope_forward(OFF(params), ws, tokens, logits), KILN_FORWARD_MISALIGNED);
    expect("refused forward calls left the logits alone", logits[0] == 12345, 1);
    expect("forward", gen_rope_forward(params, ws, tokens, logits), KILN_FORWARD_OK);
    expect("forward wrote the logits", logits[0] != 12345, 1);

    /* NAME_train_step: the optimizer blob too; nothing updated by a refused step */
    float p0 = params[0];
    expect("train_step(NULL params)", gen_rope_train_step(NULL, optim, ws, tokens, targets, 0.1f, &loss), KILN_FORWARD_NULL_ARG);
    expect("train_step(NULL optim)", gen_rope_train_step(params, NULL, ws, tokens, targets, 0.1f, &loss), KILN_FORWARD_NULL_ARG);
    expect("train_step(NULL workspace)", gen_rope_train_step(params, optim, NULL, tokens, targets, 0.1f, &loss),
           KILN_FORWARD_NULL_ARG);
    expect("train_step(NULL targets)", gen_rope_train_step(params, optim, ws, tokens, NULL, 0.1f, &loss), KILN_FORWARD_NULL_ARG);
    expect("train_step(NULL loss)", gen_rope_train_step(params, optim, ws, tokens, targets, 0.1f, NULL), KILN_FORWARD_NULL_ARG);
    expect("train_step(optim + 2 bytes)", gen_rope_train_step(params, OFF(optim), ws, tokens, targets, 0.1f, &loss),
           KILN_FORWARD_MISALIGNED);
    expect("train_step(params + 2 bytes)", gen_rope_train_step(OFF(params), optim, ws, tokens, targets, 0.1f, &loss),
           KILN_FORWARD_MISALIGNED);
    expect("refused steps left the parameters and the loss alone", params[0] == p0 && loss == -1, 1);
    expect("train_step", gen_rope_train_step(params, optim, ws, tokens, targets, 0.1f, &loss), KILN_FORWARD_OK);
    expect("train_step gave a loss", loss > 0, 1);

    /* generation: the KV cache is a blob as well */
    expect("prefill(NULL kv_cache)", gen_rope_prefill(params, NULL, ws, tokens, &n, row), KILN_FORWARD_NULL_ARG);
    expect("prefill(NULL n)", gen_rope_prefill(params, cache, ws, tokens, NULL, row), KILN_FORWARD_NULL_ARG);
    expect("prefill(kv_cache + 2 bytes)", gen_rope_prefill(params, OFF(cache), ws, tokens, &n, row), KILN_FORWARD_MISALIGNED);
    expect("prefill", gen_rope_prefill(params, cache, ws, tokens, &n, row), KILN_FORWARD_OK);
    expect("decode_step(NULL token)", gen_rope_decode_step(params, cache, ws, NULL, &pos, row), KILN_FORWARD_NULL_ARG);
    expect("decode_step(NULL logits)", gen_rope_decode_step(params, cache, ws, &token, &pos, NULL), KILN_FORWARD_NULL_ARG);
    expect("decode_step", gen_rope_decode_step(params, cache, ws, &token, &pos, row), KILN_FORWARD_OK);

    /* the split step: NULL ready and ctx are allowed (no callback) */
    memset(optim, 0, GEN_ROPE_SPLIT_OPTIM_BYTES);
    expect("train_grad(NULL optim)", gen_rope_train_grad(params, NULL, ws, tokens, targets, &loss, NULL, NULL),
           KILN_FORWARD_NULL_ARG);
    expect("train_grad(optim + 2 bytes)", gen_rope_train_grad(params, OFF(optim), ws, tokens, targets, &loss, NULL, NULL),
           KILN_FORWARD_MISALIGNED);
    expect("train_grad", gen_rope_train_grad(params, optim, ws, tokens, targets, &loss, NULL, NULL), KILN_FORWARD_OK);
    expect("train_apply(NULL workspace)", gen_rope_train_apply(params, optim, NULL, 0.1f), KILN_FORWARD_NULL_ARG);
    expect("train_apply(NULL params)", gen_rope_train_apply(NULL, optim, ws, 0.1f), KILN_FORWARD_NULL_ARG);
    expect("train_apply(params + 2 bytes)", gen_rope_train_apply(OFF(params), optim, ws, 0.1f), KILN_FORWARD_MISALIGNED);
    expect("train_apply", gen_rope_train_apply(params, optim, ws, 0.1f), KILN_FORWARD_OK);

    /* malloc's 16-byte alignment for the blobs, any byte for the workspace: the same bits */
    static float logits16[GEN_ROPE_OUT_LOGITS_COUNT];
    float *params16 = AT(blob(GEN_ROPE_PARAMS_BYTES + 16), 16), *optim16 = AT(blob(GEN_ROPE_OPTIM_BYTES + 16), 16);
    memcpy(params16, params, GEN_ROPE_PARAMS_BYTES);
    expect("forward", gen_rope_forward(params, ws, tokens, logits), KILN_FORWARD_OK);
    for (int k = 1; k < 64; k += 7) {
        expect("forward(params + 16 bytes, workspace + k bytes)", gen_rope_forward(params16, AT(ws, k), tokens, logits16),
               KILN_FORWARD_OK);
        expect("forward at malloc's alignment gives the same logits", !memcmp(logits, logits16, sizeof logits), 1);
    }
    memset(optim, 0, GEN_ROPE_OPTIM_BYTES), memset(optim16, 0, GEN_ROPE_OPTIM_BYTES);
    float loss16 = -2;
    for (int step = 0; step < 2; step++) {
        expect("train_step", gen_rope_train_step(params, optim, ws, tokens, targets, 0.1f, &loss), KILN_FORWARD_OK);
        expect("train_step(params, optim + 16 bytes, workspace + 5 bytes)",
               gen_rope_train_step(params16, optim16, AT(ws, 5), tokens, targets, 0.1f, &loss16), KILN_FORWARD_OK);
    }
    expect("train steps at malloc's alignment give the same bits",
           loss == loss16 && !memcmp(params, params16, GEN_ROPE_PARAMS_BYTES) &&
               !memcmp(optim, optim16, GEN_ROPE_OPTIM_BYTES), 1);
    float *cache16 = AT(blob(GEN_ROPE_KV_CACHE_BYTES + 16), 16);
    static float row16[GEN_ROPE_VOCAB];
    n = 4, pos = 4;
    expect("prefill", gen_rope_prefill(params, cache, ws, tokens, &n, row), KILN_FORWARD_OK);
    expect("prefill(kv_cache + 16 bytes, workspace + 3 bytes)", gen_rope_prefill(params16, cache16, AT(ws, 3), tokens, &n, row16),
           KILN_FORWARD_OK);
    expect("decode_step", gen_rope_decode_step(params, cache, ws, &token, &pos, row), KILN_FORWARD_OK);
    expect("decode_step(kv_cache + 16 bytes, workspace + 9 bytes)",
           gen_rope_decode_step(params16, cache16, AT(ws, 9), &token, &pos, row16), KILN_FORWARD_OK);
    expect("generation at malloc's alignment gives the same logits", !memcmp(row, row16, sizeof row), 1);

    free(params), free(ws), free(optim), free(cache);
    if (failures) printf("%d failure(s)\n", failures);
    return failures != 0;
}
