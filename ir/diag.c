/* diag.c — collecting and printing user diagnostics (see diag.h). */
#include "diag.h"

#include <ctype.h>
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

/* Levenshtein distance, case-insensitive; stops counting at `cap` + 1. */
static int edit_distance(const char *a, const char *b, int cap)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 64 || nb > 64) return cap + 1;
    int row[65];
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0], best = row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j];
            int same = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
            int v = diag + !same;
            if (up + 1 < v) v = up + 1;
            if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
            row[j] = v;
            diag = up;
            if (v < best) best = v;
        }
        if (best > cap) return cap + 1;
    }
    return row[nb];
}

const char *kiln_closest_name(const char *name, const char *const *names, int n)
{
    int len = (int)strlen(name), cap = len / 3;
    if (cap < 1) cap = 1;
    if (cap > 3) cap = 3;
    const char *best = NULL;
    int best_d = cap + 1;
    for (int i = 0; i < n; i++) {
        int dist = edit_distance(name, names[i], cap);
        if (dist < best_d) best_d = dist, best = names[i];
    }
    return best;
}

_Noreturn void kiln_internal_error(const char *file, int line, const char *what)
{
    fprintf(stderr, "kiln: internal error at %s:%d: %s\n", file, line, what);
    abort();
}
