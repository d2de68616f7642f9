/* svg.c — see svg.h. */
#include "svg.h"

#include <math.h>
#include <string.h>

void svg_escape(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
    }
}

void svg_text(FILE *f, double x, double y, const char *anchor, const char *attrs, const char *text)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\"", x, y);
    if (anchor) fprintf(f, " text-anchor=\"%s\"", anchor);
    if (attrs) fprintf(f, " %s", attrs);
    fputc('>', f);
    svg_escape(f, text);
    fputs("</text>\n", f);
}

/* The smallest step 1, 2 or 5 × 10^k giving at most max_ticks multiples in [lo, hi]. */
static double nice_step(double lo, double hi, int max_ticks)
{
    int parts = max_ticks > 1 ? max_ticks - 1 : 1;
    double raw = (hi - lo) / parts;
    if (!isfinite(raw)) raw = (hi / 2 - lo / 2) / parts * 2; /* hi - lo overflowed near the float limit */
    double mag = pow(10, floor(log10(raw)));
    static const double m[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (m[i] * mag >= raw) return m[i] * mag;
    return 10 * mag;
}

static int linear_ticks(double lo, double hi, int max_ticks, double *ticks, double *step_out)
{
    double step = nice_step(lo, hi, max_ticks);
    int n = 0;
    for (double k = ceil(lo / step - 1e-9); n < max_ticks; k++) {
        double v = k * step;
        if (!isfinite(v) || v > hi + step * 1e-9) break; /* hi + … overflows near the float limit */
        ticks[n++] = fabs(v) < step * 1e-9 ? 0 : v;
    }
    *step_out = step;
    return n;
}

/* Values m × 10^k in [lo, hi] for the mantissas given. */
static int log_ticks(double lo, double hi, const int *mant, int n_mant, int max_ticks, double *ticks)
{
    int n = 0;
    for (int e = (int)floor(log10(lo)); e <= (int)ceil(log10(hi)); e++)
        for (int i = 0; i < n_mant; i++) {
            double v = mant[i] * pow(10, e);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
            if (n == max_ticks) return max_ticks + 1; /* too many */
            ticks[n++] = v;
        }
    return n;
}

int svg_ticks(double lo, double hi, bool log_scale, int max_ticks, double *ticks, double *step_out)
{
    *step_out = 0;
    if (!(hi > lo) || max_ticks < 2) return 0;
    if (log_scale && lo > 0) {
        static const int decades[] = {1}, tens[] = {1, 2, 5}, all[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        const int *sets[] = {decades, tens, all};
        const int sizes[] = {1, 3, 9};
        int e0 = (int)ceil(log10(lo) - 1e-9), e1 = (int)floor(log10(hi) + 1e-9);
        if (e1 - e0 + 1 > max_ticks) { /* many decades: every stride-th power of ten */
            int stride = (e1 - e0 + max_ticks) / max_ticks, n = 0;
            for (int e = e0; e <= e1 && n < max_ticks; e += stride) ticks[n++] = pow(10, e);
            return n;
        }
        for (int s = 0; s < 3; s++) {
            int n = log_ticks(lo, hi, sets[s], sizes[s], max_ticks, ticks);
            if (n >= 3 && n <= max_ticks) return n;
            if (n > max_ticks && s > 0) return log_ticks(lo, hi, sets[s - 1], sizes[s - 1], max_ticks, ticks);
        }
    }
    return linear_ticks(lo, hi, max_ticks, ticks, step_out);
}

void svg_tick_label(double v, double step, char *buf, size_t size)
{
    if (v == 0) {
        snprintf(buf, size, "0");
        return;
    }
    double a = fabs(v);
    if (step > 0 && a < 1e6 && a >= 1e-4) {
        int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        /* a step like 0.25 needs one more than its magnitude says */
        if (decimals < 10 && fabs(round(step * pow(10, decimals)) - step * pow(10, decimals)) > 1e-6) decimals++;
        snprintf(buf, size, "%.*f", decimals, v);
    } else {
        snprintf(buf, size, "%g", v);
    }
}
