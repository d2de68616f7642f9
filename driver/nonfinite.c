/* nonfinite.c — a training step that refuses to poison the parameters.
 *
 * When the loss or a gradient becomes NaN or ±Inf (a learning rate too high, an
 * overflowing activation), one optimizer update writes NaN into the parameters and the
 * optimizer's moments, and every later step and checkpoint is garbage. So the training
 * step `kiln train` compiles is guarded, in the graph itself:
 *
 *   s_p   = Σ g_p²                 per trained parameter p (the reduction gradient
 *                                  clipping already computes: the builder deduplicates
 *                                  it, so with grad_clip the check costs no extra pass)
 *   ok    = |loss| < FLT_MAX  ∧  Σ_p s_p < FLT_MAX       (false for NaN and ±Inf)
 *   new_x = where(ok, new_x, x)    for every update (parameters, moments, step counter)
 *
 * A non-finite step thus leaves the parameter and optimizer blobs exactly as they were:
 * the where is one more select in the elementwise update kernels, which still compute
 * in place (passes/memplan.c reads_in_step), so the step needs no extra memory and no
 * copy of the blobs. The per-parameter sums are the step's second output ("nonfinite",
 * [n]), so that the driver names the first non-finite gradient without another pass.
 * A squared sum overflowing f32 (a gradient norm above about 1.8e19) counts as
 * non-finite: no optimizer step with such a gradient would be useful.
 *
 * The driver then stops (--on-nonfinite stop, the default: nothing more is saved, so
 * the last checkpoint on disk is the last good one) or goes on with the next batch
 * (skip: the step counts in the schedule but not in the optimizer's step counter).
 *
 * Cost: with train.grad_clip the sums are shared with clipping, and the step has the
 * same kernels and workspace as without the check (char_gpt, T=64, batch 8: 253
 * kernels, 93.6 MiB either way; step times equal within the noise of a shared
 * machine). Without clipping the check adds one reduction per parameter, and since no
 * update may run before every gradient is known (as with clipping), the gradients stay
 * live until the end: char_gpt without grad_clip 244 → 255 kernels, workspace 93.6 →
 * 167.2 MiB. --on-nonfinite off compiles no check for memory-tight runs (then a
 * non-finite loss stops the run after its step was applied, and nothing is saved).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

#define ORIGIN "train"
#define MAX_CONCAT 64 /* ir/graph.c: a node has at most 64 inputs */

static uint32_t add(kiln_graph *g, kiln_op op, const uint32_t *in, uint32_t n, const kiln_attrs *a, kiln_diags *d)
{
    return kiln_graph_add(g, op, in, n, a, NULL, ORIGIN, d);
}

static uint32_t op2(kiln_graph *g, kiln_op op, uint32_t x, uint32_t y, kiln_diags *d)
{
    uint32_t in[2] = {x, y};
    return add(g, op, in, 2, NULL, d);
}

static uint32_t constant(kiln_graph *g, float v, kiln_diags *d)
{
    kiln_attrs a = {0};
    a.dtype = KILN_F32;
    a.values = &v;
    a.n_values = 1;
    return add(g, KILN_OP_CONSTANT, NULL, 0, &a, d);
}

/* Σ x² over every axis, built exactly as passes/optimizer.c's clipping builds it, so
 * that the graph's deduplication shares the node. */
static uint32_t sum_squares(kiln_graph *g, uint32_t x, kiln_diags *d)
{
    uint32_t sq = add(g, KILN_OP_SQUARE, &x, 1, NULL, d);
    if (sq == KILN_NONE) return KILN_NONE;
    kiln_attrs a = {0};
    a.n_axes = g->nodes[sq].type.rank;
    for (int i = 0; i < a.n_axes; i++) a.axes[i] = i;
    return add(g, KILN_OP_SUM, &sq, 1, &a, d);
}

bool nonfinite_parse_mode(const char *s, nonfinite_mode *out)
{
    if (strcmp(s, "stop") == 0) *out = NONFINITE_STOP;
    else if (strcmp(s, "skip") == 0) *out = NONFINITE_SKIP;
    else if (strcmp(s, "off") == 0) *out = NONFINITE_OFF;
    else return false;
    return true;
}

bool nonfinite_guard_build(kiln_model *m, const train_step *ts, nonfinite_guard *gd, kiln_diags *d)
{
    memset(gd, 0, sizeof *gd);
    kiln_graph *g = &m->graph;
    gd->params = calloc((size_t)m->n_params + 1, sizeof *gd->params);
    uint32_t *sums = calloc((size_t)m->n_params + 1, sizeof *sums);
    KILN_ASSERT(gd->params && sums);
    /* the trained parameters, in the model's order: those the optimizer updates */
    for (int i = 0; i < m->n_params; i++) {
        bool updated = false;
        for (uint32_t u = 0; u < g->n_updates && !updated; u++) updated = g->updates[u].target == m->params[i];
        if (!updated || !ts->grads || ts->grads[i] == KILN_NONE) continue;
        uint32_t s = sum_squares(g, ts->grads[i], d);
        if (s == KILN_NONE) goto fail;
        gd->params[gd->n] = m->params[i];
        sums[gd->n++] = s;
    }
    if (gd->n == 0) { /* nothing trained: only the loss can be checked, by the driver */
        free(sums);
        return true;
    }
    kiln_attrs one = {0};
    one.dtype = KILN_F32;
    one.rank = 1;
    one.shape[0] = 1;
    uint32_t total = KILN_NONE;
    for (uint32_t i = 0; i < gd->n; i++) {
        total = total == KILN_NONE ? sums[i] : op2(g, KILN_OP_ADD, total, sums[i], d);
        sums[i] = add(g, KILN_OP_RESHAPE, &sums[i], 1, &one, d); /* for the output vector */
    }
    uint32_t big = constant(g, FLT_MAX, d);
    uint32_t loss_abs = add(g, KILN_OP_ABS, &g->loss, 1, NULL, d);
    uint32_t ok = op2(g, KILN_OP_MUL, op2(g, KILN_OP_LT, loss_abs, big, d), op2(g, KILN_OP_LT, total, big, d), d);
    /* the output vector: concats of at most MAX_CONCAT operands (the builder's limit),
     * nested as needed */
    kiln_attrs cat = {0};
    cat.axis = 0;
    uint32_t left = gd->n;
    while (left > 1) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < left; i += MAX_CONCAT) {
            uint32_t take = left - i < MAX_CONCAT ? left - i : MAX_CONCAT;
            sums[k++] = take == 1 ? sums[i] : add(g, KILN_OP_CONCAT, &sums[i], take, &cat, d);
        }
        left = k;
    }
    uint32_t vec = sums[0];
    if (ok == KILN_NONE || vec == KILN_NONE) goto fail;
    for (uint32_t u = 0; u < g->n_updates; u++) {
        uint32_t in[3] = {ok, g->updates[u].value, g->updates[u].target};
        uint32_t kept = add(g, KILN_OP_WHERE, in, 3, NULL, d);
        if (kept == KILN_NONE) goto fail;
        g->updates[u].value = kept;
    }
    kiln_graph_add_output(g, "nonfinite", vec);
    gd->output = g->n_outputs - 1;
    gd->sums = calloc(gd->n, sizeof *gd->sums);
    KILN_ASSERT(gd->sums != NULL);
    free(sums);
    return true;
fail:
    free(sums);
    kiln_diags_add(d, m->file, 0, 0, ORIGIN, "internal error: cannot build the non-finite check of the step");
    return false;
}

void nonfinite_guard_free(nonfinite_guard *gd)
{
    free(gd->params);
    free(gd->sums);
    memset(gd, 0, sizeof *gd);
}

const char *nonfinite_mode_name(nonfinite_mode mode)
{
    return mode == NONFINITE_SKIP ? "skip" : mode == NONFINITE_OFF ? "off" : "stop";
}

bool nonfinite_step_ok(const nonfinite_guard *gd, const kiln_graph *g, float loss, char *what, size_t cap)
{
    char loss_s[40] = "";
    if (!isfinite(loss)) snprintf(loss_s, sizeof loss_s, "the loss is %s", isnan(loss) ? "NaN" : "infinite");
    for (uint32_t i = 0; i < gd->n; i++) {
        if (isfinite(gd->sums[i]) && gd->sums[i] < FLT_MAX) continue;
        snprintf(what, cap, "the gradient of %s %s%s%s", g->nodes[gd->params[i]].attrs.name,
                 isnan(gd->sums[i]) ? "holds NaN" : "holds Inf (or its squared norm overflows f32)",
                 loss_s[0] ? " and " : "", loss_s);
        return false;
    }
    snprintf(what, cap, "%s", loss_s);
    return loss_s[0] == 0;
}

void nonfinite_log(FILE *log, int64_t step, const char *what)
{
    if (!log) return;
    fprintf(log, "{\"step\": %lld, \"loss\": null, \"skipped\": \"", (long long)step);
    for (const char *c = what; *c; c++) /* names are plain, but keep the line JSON */
        if (*c == '"' || *c == '\\') fprintf(log, "\\%c", *c);
        else if ((unsigned char)*c >= 0x20) fputc(*c, log);
    fprintf(log, "\"}\n");
    fflush(log);
}
