/* arena.h — bump allocation for things that live and die together (a graph, a model).
 *
 * Blocks are malloc'd as needed and all freed by kiln_arena_free. Allocation failure is
 * an internal error here (sizes reaching the arena were bounded by the builders), so
 * kiln_arena_alloc aborts with file:line rather than returning NULL.
 */
#ifndef KILN_ARENA_H
#define KILN_ARENA_H

#include <stddef.h>

typedef struct kiln_arena_block kiln_arena_block;

typedef struct kiln_arena {
    kiln_arena_block *head;
} kiln_arena;

void kiln_arena_init(kiln_arena *a);
void kiln_arena_free(kiln_arena *a);
/* Zeroed, 16-byte aligned. */
void *kiln_arena_alloc(kiln_arena *a, size_t size);
char *kiln_arena_strdup(kiln_arena *a, const char *s);
char *kiln_arena_printf(kiln_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
