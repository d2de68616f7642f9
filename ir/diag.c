/* diag.c — collecting and printing user diagnostics (see diag.h). */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void kiln_diags_init(kiln_diags *d) { memset(d, 0, sizeof *d); }

void kiln_diags_free(kiln_diags *d)
{
    for (int i = 0; i < d->n; i++) {
        free(d->items[i].file);
        free(d->items[i].where);
        free(d->items[i].message);
    }
    free(d->items);
    memset(d, 0, sizeof *d);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

void kiln_diags_add(kiln_diags *d, const char *file, int line, int col, const char *where,
                    const char *fmt, ...)
{
    if (d->n >= KILN_MAX_DIAGS) {
        d->dropped++;
        return;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        kiln_diag *items = realloc(d->items, (size_t)cap * sizeof *items);
        KILN_ASSERT(items != NULL);
        d->items = items;
        d->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    KILN_ASSERT(n >= 0);
    char *msg = malloc((size_t)n + 1);
    KILN_ASSERT(msg != NULL);
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    d->items[d->n++] = (kiln_diag){dup_or_null(file), line, col, dup_or_null(where), msg};
}

void kiln_diags_set_file(kiln_diags *d, const char *file)
{
    for (int i = 0; i < d->n; i++)
        if (!d->items[i].file) d->items[i].file = dup_or_null(file);
}

void kiln_diags_print(const kiln_diags *d, FILE *out)
{
    for (int i = 0; i < d->n; i++) {
        const kiln_diag *e = &d->items[i];
        if (e->file) fprintf(out, "%s:", e->file);
        if (e->line > 0) fprintf(out, "%d:%d:", e->line, e->col);
        if (e->file || e->line > 0) fputc(' ', out);
        if (e->where) fprintf(out, "%s: ", e->where);
        fprintf(out, "error: %s\n", e->message);
    }
    if (d->dropped) fprintf(out, "... and %d more errors\n", d->dropped);
}

_Noreturn void kiln_internal_error(const char *file, int line, const char *what)
{
    fprintf(stderr, "kiln: internal error at %s:%d: %s\n", file, line, what);
    abort();
}
