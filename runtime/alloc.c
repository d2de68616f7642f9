/* alloc.c — 64-byte aligned, zeroed allocation for tensors and workspaces.
 *
 * Design: a thin wrapper over C11 aligned_alloc. The size is rounded up to a whole
 * number of 64-byte lines (aligned_alloc requires a multiple of the alignment, and it
 * lets vector loops read a full last vector), the rounding is overflow-checked, and the
 * memory is zeroed so that a fresh optimizer state or a padded tail is never garbage.
 * Memory from here is released with plain free(), wrapped for symmetry.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/runtime.h"

enum { KILN_ALIGN = 64 };

void *kiln_aligned_alloc(size_t size) {
    /* Size 0 still gets one line, so NULL can only mean failure. */
    if (size == 0) size = 1;
    if (size > SIZE_MAX - (KILN_ALIGN - 1)) return NULL;
    size_t rounded = (size + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
    void *p = aligned_alloc(KILN_ALIGN, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void kiln_aligned_free(void *p) { free(p); }
