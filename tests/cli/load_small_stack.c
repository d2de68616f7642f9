/* load_small_stack.c WEIGHTS MAX_BYTES — NAME_load on a thread with a 16 KiB stack
 * (tests/cli/test_export_abi.sh): the loader must not need a big stack buffer, since a
 * program may load weights from any thread, small-stacked ones included (docs/cli.md).
 * The thread runs on 16 KiB of our own, painted, with an inaccessible page below it so
 * that an overflow crashes instead of writing past it. The bytes a thread changed are its
 * high-water mark; glibc's own part (the thread descriptor and TLS at the top, the start
 * routine) is measured first with a thread that does nothing, and what gen_rope_load
 * uses beyond it must stay under MAX_BYTES. Built against gen_rope (tests/cli/generate);
 * run with LD_BIND_NOW=1, since a lazily bound libc call saves the vector registers on
 * the caller's stack (up to 11 KiB on CPUs with AMX): the dynamic linker's cost, not the
 * loader's. Exit 0 when gen_rope_load returned 0 within the budget. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gen_rope.h"

enum { STACK = 16384, PAINT = 0xA5 };

static float *params;
static const char *path;
static int rc = -1;

static void *nothing(void *arg) { return arg; }

static void *load(void *arg)
{
    rc = gen_rope_load(params, path);
    return arg;
}

/* The bytes of a painted STACK-byte stack that a thread running fn changed, or -1. */
static long stack_used(unsigned char *stack, void *(*fn)(void *))
{
    memset(stack, PAINT, STACK);
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) || pthread_attr_setstack(&attr, stack, STACK) || pthread_create(&t, &attr, fn, NULL) ||
        pthread_join(t, NULL))
        return -1;
    pthread_attr_destroy(&attr);
    long untouched = 0;
    while (untouched < STACK && stack[untouched] == PAINT) untouched++;
    return STACK - untouched;
}

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    path = argv[1];
    long max_bytes = atol(argv[2]), page = sysconf(_SC_PAGESIZE);
    params = aligned_alloc(64, (GEN_ROPE_PARAMS_BYTES + 63) / 64 * 64);
    /* a guard page, then the stack */
    unsigned char *region = mmap(NULL, (size_t)page + STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!params || region == MAP_FAILED || mprotect(region, (size_t)page, PROT_NONE) != 0) return 2;
    long base = stack_used(region + page, nothing), used = stack_used(region + page, load);
    if (base < 0 || used < 0) {
        printf("cannot run a thread on a %d-byte stack\n", STACK);
        return 2;
    }
    printf("gen_rope_load on a %d-byte stack: returned %d, used %ld bytes of it beyond the %ld an empty thread "
           "uses (at most %ld allowed)\n", STACK, rc, used - base, base, max_bytes);
    free(params);
    munmap(region, (size_t)page + STACK);
    return rc != 0 || used - base > max_bytes;
}
