/* cmd_plot.c — `kiln plot METRICS.jsonl… -o CURVE.svg`: loss curves from the --log
 * files of `kiln train` (one JSON object per line: "step", "loss", "val_loss" on
 * validation steps, "lr", "tokens_per_s", "elapsed_s"; progress.c writes them).
 *
 * Every file is a run, named after the file (its base name less ".jsonl"; the whole
 * path when two base names clash). The series drawn are "loss" and "val_loss" by
 * default, or the names --y gives (repeatable, or comma lists), each against "step".
 * One run: a colour per series; several: a colour per run and a dash pattern per
 * series. The legend lists what is drawn. --log-scale makes the y axis logarithmic
 * (non-positive values are left out); --smooth N draws each series' centred mean over
 * N points, with the raw series faint behind it (series of at most 2N points, such as
 * a few validations, are drawn as they are).
 *
 * A log appended to by --resume may repeat steps (a run resumed from an earlier
 * checkpoint redoes them): a step not after the previous one drops the points from that
 * step on, so the curve shows the run that continued. A null value (a diverged loss) is
 * a gap, not a point.
 *
 * The SVG is self-contained (no script, font or image it links to), with a white
 * background, so a browser, an image viewer or a README shows it as is. Series whose
 * points would share a pixel column are thinned to that column's first, lowest,
 * highest and last points, so a long run's file stays small and its noise band stays
 * visible. The file is built in memory and written atomically (runtime/atomic_file.c:
 * temporary file, fsync, rename), like kiln's other outputs. */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "atomic_file.h"
#include "cli.h"
#include "data.h"
#include "driver.h"
#include "svg.h"

enum { MAX_Y = 8, MAX_TICKS = 8 };

typedef struct series {
    double *x, *y;
    int n, cap;
} series;

typedef struct plot_run {
    const char *path;
    char label[256];
    series s[MAX_Y];
} plot_run;

typedef struct plot {
    const char *names[MAX_Y];
    int n_names;
    bool explicit_names;   /* --y given: each name must be found */
    plot_run *runs;
    int n_runs;
    char seen[512];        /* numeric keys found, for the message when a name is not */
} plot;

static void series_add(series *s, double x, double y)
{
    while (s->n > 0 && s->x[s->n - 1] >= x) s->n--; /* a resumed run redid these steps */
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = realloc(s->x, (size_t)s->cap * sizeof *s->x);
        s->y = realloc(s->y, (size_t)s->cap * sizeof *s->y);
        KILN_ASSERT(s->x && s->y);
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static void note_key(plot *p, const char *key)
{
    size_t klen = strlen(key);
    for (const char *q = p->seen; *q;) {
        size_t n = strcspn(q, ",");
        if (n == klen && strncmp(q, key, klen) == 0) return;
        q += n;
        while (*q == ',' || *q == ' ') q++;
    }
    size_t len = strlen(p->seen);
    if (len + klen + 3 < sizeof p->seen) snprintf(p->seen + len, sizeof p->seen - len, "%s%s", len ? ", " : "", key);
}

/* Splits the --y values at commas into p->names, without duplicates. */
static bool parse_names(plot *p, const cli_strs *ys, kiln_diags *d)
{
    static char buf[16][256];
    for (int i = 0; i < ys->n; i++) {
        snprintf(buf[i], sizeof buf[i], "%s", ys->v[i]);
        for (char *tok = buf[i], *next; tok; tok = next) {
            next = strchr(tok, ',');
            if (next) *next++ = 0;
            if (!*tok) {
                kiln_diags_add(d, NULL, 0, 0, "--y", "an empty series name in '%s'", ys->v[i]);
                return false;
            }
            bool dup = false;
            for (int j = 0; j < p->n_names; j++) dup |= strcmp(p->names[j], tok) == 0;
            if (dup) continue;
            if (p->n_names == MAX_Y) {
                kiln_diags_add(d, NULL, 0, 0, "--y", "at most %d series", MAX_Y);
                return false;
            }
            p->names[p->n_names++] = tok;
        }
    }
    return true;
}

/* Reads one --log file into r; one diagnostic for the first problem. */
static bool read_run(plot *p, plot_run *r, kiln_diags *d)
{
    FILE *f = kiln_data_open(r->path, d); /* a regular file: /dev/zero would never end */
    if (!f) return false;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, objects = 0;
    bool ok = true;
    while (ok && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
        if (len == 0) continue;
        jm_error jerr;
        cJSON *obj = kiln_json_tree(line, (size_t)len, &jerr);
        const cJSON *step = obj ? cJSON_GetObjectItemCaseSensitive(obj, "step") : NULL;
        if (!obj) {
            kiln_diags_add(d, r->path, lineno, 1, NULL,
                           "not a JSON object: expected one per line, as kiln train --log writes (column %d: %s)",
                           jerr.col, jerr.msg);
            ok = false;
        } else if (!cJSON_IsObject(obj)) {
            kiln_diags_add(d, r->path, lineno, 1, NULL,
                           "not a JSON object: expected one per line, as kiln train --log writes");
            ok = false;
        } else if (!cJSON_IsNumber(step) || !isfinite(step->valuedouble)) {
            kiln_diags_add(d, r->path, lineno, 1, "step", "missing or not a number");
            ok = false;
        } else {
            objects++;
            for (const cJSON *it = obj->child; it; it = it->next)
                if (cJSON_IsNumber(it) && strcmp(it->string, "step") != 0) note_key(p, it->string);
            for (int i = 0; i < p->n_names; i++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, p->names[i]);
                if (cJSON_IsNumber(v) && isfinite(v->valuedouble))
                    series_add(&r->s[i], step->valuedouble, v->valuedouble);
            }
        }
        cJSON_Delete(obj);
    }
    if (ok && ferror(f)) {
        kiln_diags_add(d, r->path, 0, 0, NULL, "read error: %s", strerror(errno));
        ok = false;
    }
    if (ok && objects == 0) {
        kiln_diags_add(d, r->path, 0, 0, NULL, "is empty: no metrics to plot");
        ok = false;
    }
    free(line);
    fclose(f);
    return ok;
}

static void base_label(const char *path, bool whole, char *buf, size_t size)
{
    const char *b = whole ? path : strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t n = strlen(b);
    if (n > 6 && strcmp(b + n - 6, ".jsonl") == 0) n -= 6;
    snprintf(buf, size, "%.*s", (int)n, b);
}

/* ---- drawing ------------------------------------------------------------------------------- */

static const char *const colours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
static const char *const dashes[] = {NULL, "7 4", "2 3", "9 3 2 3", "4 2", "12 4", "1 2", "6 2 2 2"};

typedef struct frame {
    double left, top, right, bottom; /* the plot area, pixels */
    double xlo, xhi, ylo, yhi;       /* data range shown */
    double first, last;              /* the steps of the data */
    bool log_y;
} frame;

/* Where v falls in [lo, hi], 0..1. Halves first: hi − lo of values near ±1.8e308
 * overflows, and halving is exact, so the result is the same wherever it does not. */
static double fraction(double v, double lo, double hi) { return (v / 2 - lo / 2) / (hi / 2 - lo / 2); }

static double px(const frame *fr, double x) { return fr->left + fraction(x, fr->xlo, fr->xhi) * (fr->right - fr->left); }

static double py(const frame *fr, double y)
{
    double t = fr->log_y ? (log10(y) - log10(fr->ylo)) / (log10(fr->yhi) - log10(fr->ylo))
                         : fraction(y, fr->ylo, fr->yhi);
    return fr->bottom - t * (fr->bottom - fr->top);
}

static bool usable(const frame *fr, double y) { return !fr->log_y || y > 0; }

/* Whether a point can be drawn: on the axis's scale, and with finite coordinates (a
 * smoothed mean of values near the float limit can overflow; nan or inf must never
 * reach the SVG). */
static bool drawable(const frame *fr, double x, double y)
{
    return usable(fr, y) && isfinite(px(fr, x)) && isfinite(py(fr, y));
}

/* The polyline of one series, thinned per half-pixel column to its first, lowest,
 * highest and last points. */
static void polyline(FILE *f, const frame *fr, const double *x, const double *y, int n, const char *style)
{
    fprintf(f, "<polyline fill=\"none\" %s points=\"", style);
    int i = 0;
    bool first = true;
    while (i < n) {
        if (!drawable(fr, x[i], y[i])) {
            i++;
            continue;
        }
        long col = lround(px(fr, x[i]) * 2);
        int j = i, lo = i, hi = i, last = i;
        for (; j < n && lround(px(fr, x[j]) * 2) == col; j++) {
            if (!drawable(fr, x[j], y[j])) continue;
            if (y[j] < y[lo]) lo = j;
            if (y[j] > y[hi]) hi = j;
            last = j;
        }
        int keep[4] = {i, lo < hi ? lo : hi, lo < hi ? hi : lo, last};
        for (int k = 0; k < 4; k++) {
            if (k > 0 && keep[k] == keep[k - 1]) continue;
            fprintf(f, "%s%.1f,%.1f", first ? "" : " ", px(fr, x[keep[k]]), py(fr, y[keep[k]]));
            first = false;
        }
        i = j;
    }
    fputs("\"/>\n", f);
}

static void series_style(char *buf, size_t size, const char *colour, const char *dash, double width, double opacity)
{
    int n = snprintf(buf, size, "stroke=\"%s\" stroke-width=\"%.1f\" stroke-linejoin=\"round\"", colour, width);
    if (dash) n += snprintf(buf + n, size - (size_t)n, " stroke-dasharray=\"%s\"", dash);
    if (opacity < 1) snprintf(buf + n, size - (size_t)n, " stroke-opacity=\"%.2f\"", opacity);
}

static void axes(FILE *f, const frame *fr, const char *x_label, const char *y_label)
{
    double ticks[MAX_TICKS + 2], step;
    char label[64];
    /* x: steps are whole numbers */
    int n = svg_ticks(fr->xlo, fr->xhi, false, MAX_TICKS, ticks, &step);
    for (int i = 0; i < n; i++) {
        if (ticks[i] != floor(ticks[i]) || !isfinite(px(fr, ticks[i]))) continue;
        double x = px(fr, ticks[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", x, fr->top, x,
                fr->bottom);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x, fr->bottom, x,
                fr->bottom + 5);
        svg_tick_label(ticks[i], step < 1 ? 1 : step, label, sizeof label);
        svg_text(f, x, fr->bottom + 19, "middle", "class=\"tick\"", label);
    }
    n = svg_ticks(fr->ylo, fr->yhi, fr->log_y, MAX_TICKS, ticks, &step);
    for (int i = 0; i < n; i++) {
        double y = py(fr, ticks[i]);
        if (!isfinite(y)) continue;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", fr->left, y,
                fr->right, y);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", fr->left - 5, y,
                fr->left, y);
        svg_tick_label(ticks[i], step, label, sizeof label);
        svg_text(f, fr->left - 8, y + 4, "end", "class=\"tick\"", label);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", fr->left,
            fr->top, fr->right - fr->left, fr->bottom - fr->top);
    svg_text(f, (fr->left + fr->right) / 2, fr->bottom + 42, "middle", "class=\"axis\"", x_label);
    char rot[96];
    double yc = (fr->top + fr->bottom) / 2;
    snprintf(rot, sizeof rot, "class=\"axis\" transform=\"rotate(-90 %.1f %.1f)\"", 18.0, yc);
    svg_text(f, 18, yc, "middle", rot, y_label);
}

/* The data range over every point drawn, padded so no curve touches the frame. */
static bool data_range(const plot *p, frame *fr, kiln_diags *d)
{
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int r = 0; r < p->n_runs; r++)
        for (int i = 0; i < p->n_names; i++) {
            const series *s = &p->runs[r].s[i];
            for (int k = 0; k < s->n; k++) {
                if (!usable(fr, s->y[k])) continue;
                xlo = fmin(xlo, s->x[k]), xhi = fmax(xhi, s->x[k]);
                ylo = fmin(ylo, s->y[k]), yhi = fmax(yhi, s->y[k]);
            }
        }
    if (!isfinite(xlo)) {
        kiln_diags_add(d, NULL, 0, 0, "--log-scale", "no value above 0 to draw on a log scale");
        return false;
    }
    fr->first = xlo, fr->last = xhi;
    if (xhi - xlo < 1) xlo -= 1, xhi += 1;
    if (xlo > 0 && xlo < 0.1 * xhi) xlo = 0; /* a run from its start: the axis starts at 0 */
    /* the padding stays inside the float range: values near ±1.8e308 (or a log range
     * wider than it) give a frame of finite bounds, never inf */
    if (fr->log_y) {
        double pad = yhi > ylo ? pow(yhi / ylo, 0.04) : 1.25, lo = ylo / pad;
        ylo = lo > 0 ? lo : ylo, yhi = fmin(yhi * pad, DBL_MAX);
    } else {
        double pad = yhi > ylo ? (yhi / 2 - ylo / 2) * 0.08 : fabs(yhi) > 0 ? fabs(yhi) * 0.1 : 1;
        ylo = fmax(ylo - pad, -DBL_MAX), yhi = fmin(yhi + pad, DBL_MAX);
    }
    fr->xlo = xlo, fr->xhi = xhi, fr->ylo = ylo, fr->yhi = yhi;
    return true;
}

static void draw(FILE *f, const plot *p, frame *fr, const char *title, int64_t smooth)
{
    enum { W = 900, H = 540 };
    /* the legend's entries: every (run, series) with points */
    char labels[64][300];
    int entry_run[64], entry_series[64], n_entries = 0;
    size_t widest = 0;
    for (int r = 0; r < p->n_runs; r++)
        for (int i = 0; i < p->n_names && n_entries < 64; i++) {
            if (p->runs[r].s[i].n == 0) continue;
            if (p->n_runs == 1) snprintf(labels[n_entries], sizeof labels[0], "%s", p->names[i]);
            else if (p->n_names == 1) snprintf(labels[n_entries], sizeof labels[0], "%s", p->runs[r].label);
            else snprintf(labels[n_entries], sizeof labels[0], "%s %s", p->runs[r].label, p->names[i]);
            size_t len = strlen(labels[n_entries]);
            widest = len > widest ? len : widest;
            entry_run[n_entries] = r, entry_series[n_entries++] = i;
        }
    double legend_w = 44 + 7.2 * (double)(widest < 40 ? widest : 40);
    fr->left = 78, fr->top = 48, fr->right = W - legend_w - 28, fr->bottom = H - 62;

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\">\n", W, H, W, H);
    fprintf(f, "<style>.tick{fill:#444;font-size:12px}.axis{fill:#222;font-size:14px}"
               ".title{fill:#111;font-size:17px;font-weight:bold}.legend{fill:#222;font-size:13px}</style>\n");
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    svg_text(f, (fr->left + fr->right) / 2, 30, "middle", "class=\"title\"", title);

    char y_label[256] = "";
    bool all_loss = true;
    for (int i = 0; i < p->n_names; i++) all_loss &= strstr(p->names[i], "loss") != NULL;
    if (all_loss) snprintf(y_label, sizeof y_label, "loss");
    else
        for (int i = 0; i < p->n_names; i++)
            snprintf(y_label + strlen(y_label), sizeof y_label - strlen(y_label), "%s%s", i ? ", " : "", p->names[i]);
    if (fr->log_y) snprintf(y_label + strlen(y_label), sizeof y_label - strlen(y_label), " (log scale)");
    axes(f, fr, "step", y_label);

    fprintf(f, "<clipPath id=\"plot-area\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n",
            fr->left, fr->top, fr->right - fr->left, fr->bottom - fr->top);
    fprintf(f, "<g clip-path=\"url(#plot-area)\">\n");
    double *mean = NULL;
    int max_points = 0;
    for (int e = 0; e < n_entries; e++)
        if (p->runs[entry_run[e]].s[entry_series[e]].n > max_points) max_points = p->runs[entry_run[e]].s[entry_series[e]].n;
    for (int e = 0; e < n_entries; e++) {
        const plot_run *r = &p->runs[entry_run[e]];
        int si = entry_series[e];
        const series *s = &r->s[si];
        const char *colour = colours[(p->n_runs > 1 ? entry_run[e] : si) % 10];
        const char *dash = p->n_runs > 1 ? dashes[si % 8] : si > 0 ? dashes[1] : NULL;
        char style[200];
        fprintf(f, "<g class=\"series\" data-run=\"");
        svg_escape(f, r->label);
        fprintf(f, "\" data-series=\"");
        svg_escape(f, p->names[si]);
        fprintf(f, "\"><title>");
        svg_escape(f, labels[e]);
        fprintf(f, "</title>\n");
        const double *ys = s->y;
        if (smooth > 1 && s->n > 2 * smooth) {
            series_style(style, sizeof style, colour, dash, 1.0, 0.3);
            polyline(f, fr, s->x, s->y, s->n, style);
            /* centred, so the curve does not lag behind the data; the window narrows
             * symmetrically at the ends */
            mean = realloc(mean, (size_t)s->n * sizeof *mean);
            KILN_ASSERT(mean != NULL);
            int64_t h = smooth / 2;
            for (int k = 0; k < s->n; k++) {
                int64_t w = h < k ? h : k;
                if (w > s->n - 1 - k) w = s->n - 1 - k;
                double sum = 0;
                for (int64_t j = k - w; j <= k + w; j++) sum += s->y[j];
                mean[k] = sum / (double)(2 * w + 1);
            }
            ys = mean;
        }
        series_style(style, sizeof style, colour, dash, 1.8, 1);
        polyline(f, fr, s->x, ys, s->n, style);
        if (s->n <= 12 || (s->n <= 40 && 2 * s->n <= max_points)) /* sparse (validation): mark the points */
            for (int k = 0; k < s->n; k++)
                if (drawable(fr, s->x[k], ys[k]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.8\" fill=\"%s\"/>\n", px(fr, s->x[k]),
                            py(fr, ys[k]), colour);
        fprintf(f, "</g>\n");
    }
    free(mean);
    fprintf(f, "</g>\n");

    /* the legend, right of the plot */
    double lx = fr->right + 16, ly = fr->top;
    fprintf(f, "<g class=\"legend\">\n");
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" stroke=\"#bbb\"/>\n", lx, ly,
            legend_w, 12.0 + 20.0 * n_entries);
    for (int e = 0; e < n_entries; e++) {
        int si = entry_series[e];
        const char *colour = colours[(p->n_runs > 1 ? entry_run[e] : si) % 10];
        const char *dash = p->n_runs > 1 ? dashes[si % 8] : si > 0 ? dashes[1] : NULL;
        double y = ly + 16 + 20.0 * e;
        char style[200];
        series_style(style, sizeof style, colour, dash, 2.2, 1);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" %s/>\n", lx + 8, y, lx + 34, y, style);
        svg_text(f, lx + 40, y + 4.5, NULL, "class=\"legend\"", labels[e]);
    }
    fprintf(f, "</g>\n</svg>\n");
}

int cmd_plot(int argc, char **argv, kiln_diags *diags)
{
    const char *out = NULL, *title = NULL;
    cli_strs ys = {{0}, 0};
    bool log_scale = false;
    int64_t smooth = 0;
    cli_flag flags[] = {
        {"-o", CLI_STR, &out, NULL, "the SVG file to write (required)"},
        {"--y", CLI_STRS, &ys, NULL,
         "the series to draw against step, repeatable or a comma list, e.g. lr (default: loss,val_loss)"},
        {"--log-scale", CLI_BOOL, &log_scale, NULL, "logarithmic y axis; values <= 0 are left out (default: linear)"},
        {"--smooth", CLI_INT, &smooth, NULL,
         "draw each series' centred mean over N points, the raw series faint behind (default: off)"},
        {"--title", CLI_STR, &title, NULL, "the chart's title (default: the series' names)"},
    };
    cli_args a;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &a, diags)) return EXIT_USAGE;
    if (a.n_positional < 1) kiln_diags_add(diags, NULL, 0, 0, "plot", "expects one or more METRICS.jsonl files");
    if (!out) kiln_diags_add(diags, NULL, 0, 0, "plot", "-o CURVE.svg is required");
    if (a.n_defines) kiln_diags_add(diags, NULL, 0, 0, "-D", "plot takes no dims");
    if (smooth < 0 || smooth > 100000) kiln_diags_add(diags, NULL, 0, 0, "--smooth", "expected 0..100000 points");
    cli_file files[33] = {{"-o", out, true, NULL}};
    for (int i = 0; i < a.n_positional && i < 32; i++)
        files[1 + i] = (cli_file){"METRICS.jsonl", a.positional[i], false, NULL};
    cli_files_distinct(files, 1 + a.n_positional, diags);
    plot p = {0};
    static const cli_strs defaults = {{"loss,val_loss"}, 1};
    p.explicit_names = ys.n > 0;
    if (!parse_names(&p, ys.n ? &ys : &defaults, diags) || diags->n) return EXIT_USAGE;

    p.n_runs = a.n_positional;
    p.runs = calloc((size_t)p.n_runs, sizeof *p.runs);
    KILN_ASSERT(p.runs != NULL);
    bool clash = false;
    for (int r = 0; r < p.n_runs; r++) {
        p.runs[r].path = a.positional[r];
        base_label(a.positional[r], false, p.runs[r].label, sizeof p.runs[r].label);
        for (int q = 0; q < r; q++) clash |= strcmp(p.runs[q].label, p.runs[r].label) == 0;
    }
    for (int r = 0; r < p.n_runs; r++) {
        if (clash) base_label(a.positional[r], true, p.runs[r].label, sizeof p.runs[r].label);
        read_run(&p, &p.runs[r], diags);
    }
    int status = EXIT_FAIL;
    char *svg = NULL;
    size_t svg_len = 0;
    if (diags->n) goto done;
    /* every series asked for by name must exist somewhere; by default one of them */
    int drawn = 0;
    for (int i = 0; i < p.n_names; i++) {
        int points = 0;
        for (int r = 0; r < p.n_runs; r++) points += p.runs[r].s[i].n;
        drawn += points > 0;
        if (points == 0 && p.explicit_names)
            kiln_diags_add(diags, NULL, 0, 0, "--y", "no numeric values named '%s' in %s (numeric values there: %s)",
                           p.names[i], p.n_runs == 1 ? p.runs[0].path : "any file", p.seen[0] ? p.seen : "none");
    }
    if (!drawn && !diags->n)
        kiln_diags_add(diags, p.n_runs == 1 ? p.runs[0].path : NULL, 0, 0, NULL,
                       "no numeric loss or val_loss to plot (numeric values there: %s); name others with --y",
                       p.seen[0] ? p.seen : "none");
    if (diags->n) goto done;

    frame fr = {.log_y = log_scale};
    if (!data_range(&p, &fr, diags)) goto done;
    char default_title[300] = "";
    for (int i = 0; i < p.n_names; i++)
        snprintf(default_title + strlen(default_title), sizeof default_title - strlen(default_title), "%s%s",
                 i == 0 ? "" : i == p.n_names - 1 ? " and " : ", ", p.names[i]);
    if (p.n_runs == 1)
        snprintf(default_title + strlen(default_title), sizeof default_title - strlen(default_title), " of %s",
                 p.runs[0].label);
    FILE *f = open_memstream(&svg, &svg_len);
    KILN_ASSERT(f != NULL);
    draw(f, &p, &fr, title ? title : default_title, smooth);
    fclose(f);
    kiln_rt_error err;
    if (kiln_atomic_write_file(out, svg, svg_len, &err)) { /* runtime/atomic_file.c */
        kiln_diags_add(diags, NULL, 0, 0, "-o", "cannot write: %s", err.msg);
        goto done;
    }
    printf("wrote %s: %d run%s, %d series, steps %.0f to %.0f\n", out, p.n_runs, p.n_runs == 1 ? "" : "s", drawn,
           fr.first, fr.last);
    status = EXIT_OK;
done:
    free(svg);
    for (int r = 0; r < p.n_runs; r++)
        for (int i = 0; i < MAX_Y; i++) free(p.runs[r].s[i].x), free(p.runs[r].s[i].y);
    free(p.runs);
    return status;
}
