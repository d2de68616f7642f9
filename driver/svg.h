/* svg.h — the few pieces of SVG and chart arithmetic `kiln plot` needs (svg.c).
 *
 * Output goes to a FILE (an open_memstream buffer in cmd_plot.c, so the file is written
 * whole or not at all). Text is XML-escaped here, so a run name or title holding <, &
 * or quotes still makes a well-formed document. */
#ifndef KILN_SVG_H
#define KILN_SVG_H

#include <stdbool.h>
#include <stdio.h>

/* Writes s with &, <, >, " and ' escaped, and bytes below 0x20 (not allowed in XML 1.0
 * text) dropped. */
void svg_escape(FILE *f, const char *s);

/* <text x y [anchor] [extra attributes]>escaped text</text> */
void svg_text(FILE *f, double x, double y, const char *anchor, const char *attrs, const char *text);

/* Tick values for an axis over [lo, hi] (lo < hi), at most max_ticks of them, all inside
 * the range: multiples of a "nice" step 1, 2 or 5 × 10^k on a linear axis. On a log axis
 * (lo > 0): the powers of ten when the range spans enough decades, else 1, 2, 5 × 10^k,
 * else 1…9 × 10^k, else linear nice values (a loss from 5.5 to 1.5 gets 2, 3, 4, 5).
 * Returns the count; *step_out is the linear step (0 for log ticks), for labels. */
int svg_ticks(double lo, double hi, bool log_scale, int max_ticks, double *ticks, double *step_out);

/* A tick label: just enough decimals for the step (0.25 → "0.25", 1000 → "1000"),
 * 10^k style values compactly ("1e-05"), no "-0". */
void svg_tick_label(double v, double step, char *buf, size_t size);

#endif
