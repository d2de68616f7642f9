/* reentrant_forward.c — an exported library called from several threads at once (built
 * by tests/cli/test_reentrancy.sh with -fsanitize=thread against `kiln compile`'s
 * reent.h / libreent.a).
 *
 * The promise (docs/reliability.md, "Determinism"): NAME_forward keeps no state of its
 * own between calls — parameters are read-only, everything it writes is in the
 * caller's workspace and outputs — so threads that each bring their own workspace may
 * call it at the same time, while the library's pool runs one caller's kernels and
 * the others' inline, and every call gives the bits a sequential call gives.
 *
 *     reentrant_forward WEIGHTS.safetensors CALLERS ROUNDS LIB_THREADS
 *
 * First, one thread computes every caller's logits in turn (the reference); then
 * CALLERS threads each run ROUNDS forward passes on their own tokens at once, all
 * released together by a barrier, and compare each result with the reference bit for
 * bit. Prints "ok CALLERS×ROUNDS calls" or the first mismatches; exit 0 or 1.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reent.h"

enum { MAX_CALLERS = 16 };

static float *params;
static pthread_barrier_t start;

typedef struct caller {
    int index, rounds;
    int32_t tokens[REENT_IN_TOKENS_COUNT];
    float *expected, *got;
    void *workspace;
    int mismatches, failures;
} caller;

static void *alloc64(size_t size) { return aligned_alloc(64, (size + 63) / 64 * 64); }

static void *run_caller(void *arg)
{
    caller *c = arg;
    pthread_barrier_wait(&start);
    for (int r = 0; r < c->rounds; r++) {
        memset(c->got, 0xff, REENT_OUT_LOGITS_COUNT * sizeof(float)); /* NaNs if a call writes nothing */
        if (reent_forward(params, c->workspace, c->tokens, c->got) != KILN_FORWARD_OK) c->failures++;
        else if (memcmp(c->got, c->expected, REENT_OUT_LOGITS_COUNT * sizeof(float)) != 0) c->mismatches++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s WEIGHTS CALLERS ROUNDS LIB_THREADS\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]), rounds = atoi(argv[3]), lib_threads = atoi(argv[4]);
    if (n < 1 || n > MAX_CALLERS || rounds < 1) return 2;
    params = alloc64(REENT_PARAMS_BYTES);
    if (!params || reent_load(params, argv[1]) != 0) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    if (reent_set_threads(lib_threads) != 0) return 1;

    caller cs[MAX_CALLERS];
    for (int i = 0; i < n; i++) {
        caller *c = &cs[i];
        *c = (caller){.index = i, .rounds = rounds};
        uint32_t x = 2654435761u * (uint32_t)(i + 1); /* different tokens per caller */
        for (int k = 0; k < REENT_IN_TOKENS_COUNT; k++) {
            x = x * 1664525u + 1013904223u;
            c->tokens[k] = (int32_t)(x >> 24);
        }
        c->expected = alloc64(REENT_OUT_LOGITS_COUNT * sizeof(float));
        c->got = alloc64(REENT_OUT_LOGITS_COUNT * sizeof(float));
        c->workspace = alloc64(REENT_WORKSPACE_BYTES);
        if (!c->expected || !c->got || !c->workspace) return 1;
        /* the reference: this caller's input, one call at a time */
        if (reent_forward(params, c->workspace, c->tokens, c->expected) != KILN_FORWARD_OK) return 1;
    }
    if (n > 1 && memcmp(cs[0].expected, cs[1].expected, REENT_OUT_LOGITS_COUNT * sizeof(float)) == 0) {
        fprintf(stderr, "callers 0 and 1 have the same logits: the test could not see cross-talk\n");
        return 1;
    }

    pthread_barrier_init(&start, NULL, (unsigned)n);
    pthread_t threads[MAX_CALLERS];
    for (int i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, run_caller, &cs[i]) != 0) return 1;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        if (cs[i].failures || cs[i].mismatches)
            printf("caller %d: %d failed calls, %d results differ from the sequential call's\n", i, cs[i].failures,
                   cs[i].mismatches);
        bad += cs[i].failures + cs[i].mismatches;
    }
    pthread_barrier_destroy(&start);
    for (int i = 0; i < n; i++) free(cs[i].expected), free(cs[i].got), free(cs[i].workspace);
    free(params);
    if (bad) return 1;
    printf("ok %dx%d calls\n", n, rounds);
    return 0;
}
