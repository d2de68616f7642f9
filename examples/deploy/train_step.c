/* train_step.c — training a model exported by `kiln compile --train` from a plain C program.
 *
 * Built against the header and the library `kiln compile gpt_tiny.json --train
 * -o libgpt_tiny.so --header gpt_tiny.h` writes (or the .a / .o), with nothing else. The
 * model is a tiny GPT whose inputs are `tokens` and `targets` (README.md shows how it is
 * made). The program loads the weights with gpt_tiny_load, zeroes an optimizer blob,
 * runs STEPS training steps at a constant learning rate on one fixed batch, prints each
 * step's loss with %.9g (enough digits to give each f32 back exactly), and writes the
 * trained parameters as a safetensors file, so both can be compared bit for bit with
 * `kiln train`'s log and checkpoint.
 *
 *     train_step WEIGHTS.safetensors OUT.safetensors [STEPS [LR]]   (defaults 5, 0.01)
 *
 * The batch comes from the stream w[i] = (7·i + 3) mod 17: tokens[i] = w[i] and
 * targets[i] = w[i + 1] over the whole (flattened) batch. At batch 1 that is the one
 * window `kiln train --task clm` reads from a .bin file of exactly those T+1 ids.
 *
 * The memory is ours: the parameter blob, the optimizer blob (zeroed: that is the state
 * before the first step, step counter included) and the training workspace, each 64-byte
 * aligned and sized by the header's macros; the library allocates nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt_tiny.h"

/* aligned_alloc wants a size that is a multiple of the alignment */
static void *alloc64(size_t size) { return aligned_alloc(64, (size + 63) / 64 * 64); }

static size_t numel(const kiln_param_info *p)
{
    size_t n = 1;
    for (int d = 0; d < p->rank; d++) n *= (size_t)p->shape[d];
    return n;
}

/* The parameters as a safetensors file: an 8-byte little-endian header length, a JSON
 * header naming each tensor's dtype, shape and byte range, then the data back to back.
 * Assumes a little-endian host, like the blob itself. */
static int write_safetensors(const char *path, const float *params)
{
    static char header[1 << 16];
    size_t len = 0, at = 0;
    len += (size_t)snprintf(header + len, sizeof header - len, "{");
    for (int i = 0; i < GPT_TINY_NUM_PARAMS && len < sizeof header; i++) {
        const kiln_param_info *p = &gpt_tiny_params[i];
        size_t bytes = numel(p) * sizeof(float);
        len += (size_t)snprintf(header + len, sizeof header - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
                                i ? "," : "", p->name);
        for (int d = 0; d < p->rank && len < sizeof header; d++)
            len += (size_t)snprintf(header + len, sizeof header - len, "%s%lld", d ? "," : "", (long long)p->shape[d]);
        if (len < sizeof header)
            len += (size_t)snprintf(header + len, sizeof header - len, "],\"data_offsets\":[%zu,%zu]}", at, at + bytes);
        at += bytes;
    }
    if (len < sizeof header) len += (size_t)snprintf(header + len, sizeof header - len, "}");
    if (len >= sizeof header) return 1;
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    unsigned char size[8];
    for (int b = 0; b < 8; b++) size[b] = (unsigned char)((uint64_t)len >> (8 * b));
    int bad = fwrite(size, 1, 8, f) != 8 || fwrite(header, 1, len, f) != len;
    for (int i = 0; i < GPT_TINY_NUM_PARAMS && !bad; i++) {
        const kiln_param_info *p = &gpt_tiny_params[i];
        bad = fwrite((const char *)params + p->offset, sizeof(float), numel(p), f) != numel(p);
    }
    if (fclose(f) != 0) bad = 1;
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s WEIGHTS.safetensors OUT.safetensors [STEPS [LR]]\n", argv[0]);
        return 2;
    }
    int steps = argc > 3 ? atoi(argv[3]) : 5;
    float lr = argc > 4 ? strtof(argv[4], NULL) : 0.01f;

    float *params = alloc64(GPT_TINY_PARAMS_BYTES);
    float *optim = alloc64(GPT_TINY_OPTIM_BYTES);
    void *workspace = alloc64(GPT_TINY_TRAIN_WORKSPACE_BYTES);
    if (!params || !optim || !workspace) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    memset(optim, 0, GPT_TINY_OPTIM_BYTES);
    int rc = gpt_tiny_load(params, argv[1]);
    if (rc != KILN_LOAD_OK) {
        fprintf(stderr, "%s: cannot load the weights (KILN_LOAD_* code %d)\n", argv[1], rc);
        return 1;
    }

    static int32_t tokens[GPT_TINY_IN_TOKENS_COUNT], targets[GPT_TINY_IN_TARGETS_COUNT];
    for (int i = 0; i < GPT_TINY_IN_TOKENS_COUNT; i++) {
        tokens[i] = (7 * i + 3) % 17;
        targets[i] = (7 * (i + 1) + 3) % 17;
    }
    for (int s = 1; s <= steps; s++) {
        float loss;
        rc = gpt_tiny_train_step(params, optim, workspace, tokens, targets, lr, &loss);
        if (rc != KILN_FORWARD_OK) {
            fprintf(stderr, "step %d failed (KILN_FORWARD_* code %d)\n", s, rc);
            return 1;
        }
        printf("step %d loss %.9g\n", s, loss);
    }
    if (write_safetensors(argv[2], params)) {
        fprintf(stderr, "%s: cannot write\n", argv[2]);
        return 1;
    }
    free(params);
    free(optim);
    free(workspace);
    return 0;
}
