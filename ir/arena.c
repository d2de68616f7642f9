/* arena.c — bump allocator: a linked list of malloc'd blocks, freed together.
 * Large requests get a block of their own so that small ones keep packing densely. */
#include "arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"

enum { ARENA_BLOCK = 64 * 1024, ARENA_ALIGN = 16 };

struct kiln_arena_block {
    kiln_arena_block *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

void kiln_arena_init(kiln_arena *a) { a->head = NULL; }

void kiln_arena_free(kiln_arena *a)
{
    kiln_arena_block *b = a->head;
    while (b) {
        kiln_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

void *kiln_arena_alloc(kiln_arena *a, size_t size)
{
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (size == 0) size = ARENA_ALIGN;
    kiln_arena_block *b = a->head;
    if (!b || b->size - b->used < size) {
        size_t cap = size > ARENA_BLOCK / 4 ? size : ARENA_BLOCK;
        KILN_ASSERT(cap < ((size_t)1 << 40));
        b = malloc(sizeof *b + cap);
        KILN_ASSERT(b != NULL);
        b->used = 0;
        b->size = cap;
        if (cap == size && a->head) {
            /* a dedicated block goes second so the current head keeps serving small ones */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *kiln_arena_strdup(kiln_arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = kiln_arena_alloc(a, n);
    memcpy(p, s, n);
    return p;
}

char *kiln_arena_printf(kiln_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    KILN_ASSERT(n >= 0);
    char *p = kiln_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
