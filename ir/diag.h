/* diag.h — user errors as values.
 *
 * Library code never prints and never exits on bad input: it appends a diagnostic that
 * says where (file, line:column and/or JSON path or node name) and what, and returns a
 * failure. Diagnostics accumulate so that one run reports every problem of a model
 * file; only the driver prints them (kiln_diags_print).
 *
 * Internal invariants are not diagnostics: they use KILN_ASSERT, which names file:line.
 */
#ifndef KILN_DIAG_H
#define KILN_DIAG_H

#include <stdio.h>

typedef struct kiln_diag {
    char *file;     /* may be NULL */
    int line, col;  /* 0 when unknown */
    char *where;    /* JSON path ("layers[3].heads") or node/tensor name; may be NULL */
    char *message;
} kiln_diag;

typedef struct kiln_diags {
    kiln_diag *items;
    int n, cap;
    int dropped;    /* diagnostics past KILN_MAX_DIAGS, counted but not kept */
} kiln_diags;

#define KILN_MAX_DIAGS 200

void kiln_diags_init(kiln_diags *d);
void kiln_diags_free(kiln_diags *d);
void kiln_diags_add(kiln_diags *d, const char *file, int line, int col, const char *where,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Prints "file:line:col: where: message" per diagnostic, one per line. */
void kiln_diags_print(const kiln_diags *d, FILE *out);
/* Sets the file of every diagnostic that has none (for errors raised below the layer
 * that knows the file name). */
void kiln_diags_set_file(kiln_diags *d, const char *file);

/* The name in names[0..n) nearest to `name` by edit distance (case-insensitive), if it is
 * near enough to be a likely misspelling (at most a third of its length, at least 1 and
 * at most 3 edits); else NULL. For "did you mean" hints. */
const char *kiln_closest_name(const char *name, const char *const *names, int n);

#define KILN_ASSERT(cond)                                                                   \
    do {                                                                                    \
        if (!(cond)) kiln_internal_error(__FILE__, __LINE__, #cond);                        \
    } while (0)
_Noreturn void kiln_internal_error(const char *file, int line, const char *what);

#endif
