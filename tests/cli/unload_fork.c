/* unload_fork.c SO WEIGHTS — an exported .so's thread pool where a plugin host or a
 * forking program would trip over it (tests/cli/test_reentrancy.sh):
 *   - four rounds of dlopen, NAME_set_threads(3), forward passes, dlclose: the pool's
 *     workers must be gone when the code they run is unmapped (they used to run on in
 *     it, and the next round crashed or hung);
 *   - fork after NAME_set_threads(2): the child, which has none of the parent's workers,
 *     runs forward passes, resizes the pool and exits normally (running the library's
 *     destructor), all without waiting for threads that are not there.
 * Every forward pass must give round 0's logits bit for bit. Exit 0 when all is well. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reent.h"

typedef struct library {
    void *handle;
    int (*load)(float *, const char *);
    int (*set_threads)(int);
    int (*forward)(const float *, void *, const int32_t *, float *);
} library;

static library open_library(const char *path)
{
    library l = {dlopen(path, RTLD_NOW | RTLD_LOCAL), NULL, NULL, NULL};
    if (!l.handle) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        exit(1);
    }
    *(void **)&l.load = dlsym(l.handle, "reent_load");
    *(void **)&l.set_threads = dlsym(l.handle, "reent_set_threads");
    *(void **)&l.forward = dlsym(l.handle, "reent_forward");
    if (!l.load || !l.set_threads || !l.forward) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        exit(1);
    }
    return l;
}

static int32_t tokens[REENT_IN_TOKENS_COUNT];
static float want[REENT_OUT_LOGITS_COUNT], got[REENT_OUT_LOGITS_COUNT];

/* n forward passes, each compared with want (filled by the first pass when first) */
static int passes(const library *l, const float *params, void *ws, int n, int first)
{
    for (int i = 0; i < n; i++) {
        if (l->forward(params, ws, tokens, first && i == 0 ? want : got) != 0) return 1;
        if (!(first && i == 0) && memcmp(want, got, sizeof got) != 0) return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) return 1;
    for (int i = 0; i < REENT_IN_TOKENS_COUNT; i++) tokens[i] = (i * 37) % 256;
    float *params = aligned_alloc(64, REENT_PARAMS_BYTES);
    void *ws = aligned_alloc(64, (REENT_WORKSPACE_BYTES + 63) / 64 * 64);
    for (int round = 0; round < 4; round++) {
        library l = open_library(argv[1]);
        if (l.load(params, argv[2]) != 0 || l.set_threads(3) != 0) return 1;
        int rc = passes(&l, params, ws, 3, round == 0);
        if (rc) {
            fprintf(stderr, "round %d: forward pass %s\n", round, rc == 1 ? "failed" : "differs");
            return 1;
        }
        if (dlclose(l.handle) != 0) return 1;
    }

    library l = open_library(argv[1]);
    if (l.load(params, argv[2]) != 0 || l.set_threads(2) != 0 || passes(&l, params, ws, 1, 0)) return 1;
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        if (passes(&l, params, ws, 2, 0) || l.set_threads(3) != 0 || passes(&l, params, ws, 2, 0)) return 3;
        return 0; /* exit(), not _exit(): the library's destructor runs in the child too */
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the forked child failed (status %d)\n", status);
        return 1;
    }
    if (passes(&l, params, ws, 2, 0) || dlclose(l.handle) != 0) return 1;
    free(params), free(ws);
    puts("ok");
    return 0;
}
