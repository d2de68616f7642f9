/* train_split.c — the exported training step in two halves, averaging gradients in between
 * as a data-parallel program does (docs/distributed.md).
 *
 * `kiln compile gpt_tiny.json --train` also exports gpt_tiny_train_grad (this process's
 * loss and gradients, written into the gradient area of a "split" optimizer blob) and
 * gpt_tiny_train_apply (the optimizer update from that area). Between the two a program
 * averages the gradient area over its processes; with MPI that is
 *
 *     MPI_Allreduce(MPI_IN_PLACE, optim + GPT_TINY_GRAD_OFFSET / 4, GPT_TINY_GRAD_FLOATS,
 *                   MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);   then ×1/N
 *
 * To stay a plain C program this one simulates two "ranks" in one process: each has its
 * own parameters and optimizer blob, both train on the same fixed batch, their gradient
 * areas are averaged by a loop where MPI_Allreduce would be, and both apply the update.
 * The ranks must stay bit-identical (the same update everywhere), and the losses are
 * those of gpt_tiny_train_step on that batch (train_step.c) to float rounding.
 *
 * A real program would start averaging each gradient as soon as gpt_tiny_train_grad
 * announces it through its `ready` callback (the backward pass finishes the last layers
 * first), overlapping the communication with the rest of the backward pass. Here the
 * callback only records the announcements, and the program checks that each gradient
 * comes exactly once, in the header's GPT_TINY_GRAD_READY_ORDER.
 *
 *     train_split WEIGHTS.safetensors OUT.safetensors [STEPS [LR]]   (defaults 5, 0.01)
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

#define RANKS 2

/* The ready callback's context: the gradients announced so far in this call. */
typedef struct announced {
    int n;
    int32_t order[GPT_TINY_N_GRADS];
} announced;

static void on_ready(void *ctx, int32_t i)
{
    announced *a = ctx;
    if (a->n < GPT_TINY_N_GRADS) a->order[a->n] = i;
    a->n++;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s WEIGHTS.safetensors OUT.safetensors [STEPS [LR]]\n", argv[0]);
        return 2;
    }
    int steps = argc > 3 ? atoi(argv[3]) : 5;
    float lr = argc > 4 ? strtof(argv[4], NULL) : 0.01f;

    float *params[RANKS], *optim[RANKS];
    void *workspace = alloc64(GPT_TINY_SPLIT_WORKSPACE_BYTES); /* the ranks take turns here */
    for (int r = 0; r < RANKS; r++) {
        params[r] = alloc64(GPT_TINY_PARAMS_BYTES);
        optim[r] = alloc64(GPT_TINY_SPLIT_OPTIM_BYTES);
        if (!params[r] || !optim[r] || !workspace) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        memset(optim[r], 0, GPT_TINY_SPLIT_OPTIM_BYTES);
        int rc = gpt_tiny_load(params[r], argv[1]);
        if (rc != KILN_LOAD_OK) {
            fprintf(stderr, "%s: cannot load the weights (KILN_LOAD_* code %d)\n", argv[1], rc);
            return 1;
        }
    }

    static int32_t tokens[GPT_TINY_IN_TOKENS_COUNT], targets[GPT_TINY_IN_TARGETS_COUNT];
    for (int i = 0; i < GPT_TINY_IN_TOKENS_COUNT; i++) {
        tokens[i] = (7 * i + 3) % 17;
        targets[i] = (7 * (i + 1) + 3) % 17;
    }
    for (int s = 1; s <= steps; s++) {
        float loss[RANKS];
        for (int r = 0; r < RANKS; r++) {
            announced got = {0};
            int rc = gpt_tiny_train_grad(params[r], optim[r], workspace, tokens, targets, &loss[r], on_ready, &got);
            if (rc != KILN_FORWARD_OK) {
                fprintf(stderr, "step %d failed (KILN_FORWARD_* code %d)\n", s, rc);
                return 1;
            }
            static const int64_t want[GPT_TINY_N_GRADS] = GPT_TINY_GRAD_READY_ORDER;
            if (got.n != GPT_TINY_N_GRADS) {
                fprintf(stderr, "step %d: %d gradients announced, expected %d\n", s, got.n, GPT_TINY_N_GRADS);
                return 1;
            }
            for (int i = 0; i < GPT_TINY_N_GRADS; i++)
                if (got.order[i] != want[i]) {
                    fprintf(stderr, "step %d: announcement %d is gradient %d, the header says %lld\n", s, i,
                            (int)got.order[i], (long long)want[i]);
                    return 1;
                }
        }
        /* the allreduce: sum the gradient areas, then ×1/N (exact for a power of two) */
        float *g0 = optim[0] + GPT_TINY_GRAD_OFFSET / 4;
        for (long i = 0; i < GPT_TINY_GRAD_FLOATS; i++) {
            float sum = 0;
            for (int r = 0; r < RANKS; r++) sum += optim[r][GPT_TINY_GRAD_OFFSET / 4 + i];
            g0[i] = sum * (1.0f / RANKS);
        }
        for (int r = 1; r < RANKS; r++) memcpy(optim[r] + GPT_TINY_GRAD_OFFSET / 4, g0, GPT_TINY_GRAD_FLOATS * 4);
        for (int r = 0; r < RANKS; r++) gpt_tiny_train_apply(params[r], optim[r], workspace, lr);
        printf("step %d loss %.9g\n", s, (loss[0] + loss[1]) / 2);
    }
    for (int r = 1; r < RANKS; r++)
        if (memcmp(params[0], params[r], GPT_TINY_PARAMS_BYTES) != 0 ||
            memcmp(optim[0], optim[r], GPT_TINY_SPLIT_OPTIM_BYTES) != 0) {
            fprintf(stderr, "rank %d's parameters or optimizer state differ from rank 0's\n", r);
            return 1;
        }
    if (write_safetensors(argv[2], params[0])) {
        fprintf(stderr, "%s: cannot write\n", argv[2]);
        return 1;
    }
    for (int r = 0; r < RANKS; r++) free(params[r]), free(optim[r]);
    free(workspace);
    return 0;
}
