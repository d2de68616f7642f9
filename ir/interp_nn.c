/* interp_nn.c — the reference interpreter's composite ops and dropout.
 *
 * Design: each composite is written the way a textbook states it, one row (or one
 * query) at a time, with every sum, max-shifted exponential and normaliser in double
 * and one rounding to f32 per result element. That is what makes these the oracle for
 * the fused kernels (a flash-style attention, a one-pass layernorm): they may reorder
 * work, this file never does anything clever. The ops' contracts are in ir.h (the
 * attention inputs) and SPEC sections 1.1–1.4.
 *
 * Dropout's random numbers come from a counter-based hash of (seed, mask stream, element
 * index), so a result does not depend on evaluation order and needs no state; the ir
 * library depends on libc only, so it does not use the runtime's RNG.
 */
#include <math.h>
#include <string.h>
#include <stdlib.h>

#include "interp_impl.h"

/* ---- softmax, log_softmax -------------------------------------------------------------- */

/* Rows along `axis`: element j of row (o, i) is at (o·n + j)·inner + i. Subtracting the
 * row's max keeps exp from overflowing; a NaN anywhere in a row makes the row NaN. */
static bool softmax_rows(const interp_call *c, bool log_form)
{
    const kiln_type *t = &c->node->type;
    const float *x = interp_in(c, 0);
    float *y = c->out;
    int ax = (int)c->node->attrs.axis;
    int64_t outer = kiln_interp_span(t->dims, 0, ax), n = t->dims[ax];
    int64_t inner = kiln_interp_span(t->dims, ax + 1, t->rank);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            double max = -INFINITY;
            for (int64_t j = 0; j < n; j++)
                if (x[base + j * inner] > max) max = x[base + j * inner];
            double sum = 0;
            for (int64_t j = 0; j < n; j++) sum += exp(x[base + j * inner] - max);
            double log_sum = log(sum);
            for (int64_t j = 0; j < n; j++) {
                double z = x[base + j * inner] - max;
                y[base + j * inner] = (float)(log_form ? z - log_sum : exp(z) / sum);
            }
        }
    return true;
}

bool kiln_interp_softmax(const interp_call *c) { return softmax_rows(c, false); }
bool kiln_interp_log_softmax(const interp_call *c) { return softmax_rows(c, true); }

/* ---- layernorm ---------------------------------------------------------------------------- */

/* y = (x − mean) / √(var + eps) · w + b over the last axis, with the biased variance
 * (divided by D, as torch.nn.LayerNorm), computed in two passes. */
bool kiln_interp_layernorm(const interp_call *c)
{
    const kiln_type *t = &c->node->type;
    const float *x = interp_in(c, 0), *w = interp_in(c, 1), *b = interp_in(c, 2);
    float *y = c->out;
    double eps = c->node->attrs.scalar;
    int64_t D = t->dims[t->rank - 1], rows = kiln_interp_span(t->dims, 0, t->rank - 1);
    if (D == 0) return true; /* nothing to write */
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = r * D;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < D; j++) mean += x[base + j];
        mean /= (double)D;
        for (int64_t j = 0; j < D; j++) var += (x[base + j] - mean) * (x[base + j] - mean);
        var /= (double)D;
        double inv = 1.0 / sqrt(var + eps);
        for (int64_t j = 0; j < D; j++) y[base + j] = (float)((x[base + j] - mean) * inv * w[j] + b[j]);
    }
    return true;
}

/* ---- attention ------------------------------------------------------------------------------ */

/* q (…,H,T,dh), k (…,H,S,dh), v (…,H,S,dv) [, mask (…,S)] [, bias → (…,H,T,S)].
 * For query i of batch-head l: score_j = q_i·k_j·scale + bias[l,i,j] for each key j that
 * is kept (mask ≠ 0 and, when causal, j ≤ i — top-left aligned when T ≠ S, like
 * PyTorch's is_causal); excluded keys count as −∞. p = softmax over the kept keys;
 * out_i = Σ_j p_j v_j. A row whose scores are all −∞ (no key left) gets zero weights,
 * so its output is 0 rather than NaN. Attention dropout (training only) multiplies each
 * p_j by its kiln_interp_attn_drop_scale after the softmax. */
void kiln_interp_attn_init(const interp_call *c, interp_attn *at)
{
    memset(at, 0, sizeof *at);
    at->a = &c->node->attrs;
    at->qt = interp_in_type(c, 0);
    at->q = interp_in(c, 0);
    at->k = interp_in(c, 1);
    at->v = interp_in(c, 2);
    int r = at->r = at->qt->rank;
    at->H = at->qt->dims[r - 3];
    at->T = at->qt->dims[r - 2];
    at->dh = at->qt->dims[r - 1];
    at->S = interp_in_type(c, 1)->dims[r - 2];
    at->dv = interp_in_type(c, 2)->dims[r - 1];
    at->n_batch = kiln_interp_span(at->qt->dims, 0, r - 2);
    uint32_t next = 3;
    at->mask_dt = KILN_F32;
    if (at->a->has_mask) {
        at->mask_dt = interp_in_type(c, next)->dtype;
        at->mask = interp_in(c, next++);
    }
    if (at->a->has_bias) {
        const kiln_type *bt = interp_in_type(c, next);
        if (at->a->relative) at->bias_rows = bt->dims[0]; /* (NB, H) */
        else kiln_interp_bcast_strides(bt, r, at->bstride); /* over (…,H,T,S) */
        at->bias = interp_in(c, next++);
    }
    if (c->training && at->a->attn_dropout > 0) {
        at->drop = at->a->attn_dropout;
        at->stream = (uint32_t)at->a->stream;
        at->seed = c->seed;
    }
}

void kiln_interp_attn_drop_scale(const interp_attn *at, int64_t l, int64_t i, double *m)
{
    int64_t row = (l * at->T + i) * at->S; /* the weight's index over (…,H,T,S) */
    for (int64_t j = 0; j < at->S; j++)
        m[j] = at->drop == 0 ? 1.0 : kiln_interp_dropout_keep(at->seed, at->stream, row + j, at->drop) ? 1.0 / (1.0 - at->drop) : 0.0;
}

bool kiln_interp_attn_probs(const interp_attn *at, int64_t l, int64_t i, int64_t *idx, double *p, double *lse)
{
    const kiln_attrs *a = at->a;
    int64_t S = at->S, dh = at->dh, r = at->r;
    int64_t q0 = l * at->T * dh, k0 = l * S * dh;
    int64_t m0 = (l / at->H) * S; /* the mask has no head dim; H > 0 here */
    double max = -INFINITY;
    bool any_nan = false;
    for (int64_t j = 0; j < S; j++) {
        bool kept = !(at->mask && interp_load(at->mask, at->mask_dt, m0 + j) == 0) && !(a->causal && j > i);
        if (!kept) {
            p[j] = -INFINITY;
            continue;
        }
        double s = 0;
        for (int64_t d = 0; d < dh; d++) s += (double)at->q[q0 + i * dh + d] * at->k[k0 + j * dh + d];
        s *= a->scalar;
        if (at->bias && a->relative) { /* the head's column of the bucket embedding */
            int64_t NB = at->bias_rows, h = l % at->H;
            s += at->bias[(int64_t)kiln_t5_bucket(j - i, !a->causal, (int)NB, KILN_T5_MAX_DISTANCE) * at->H + h];
        } else if (at->bias) {
            idx[r - 2] = i;
            idx[r - 1] = j;
            double b = at->bias[kiln_interp_offset(idx, at->bstride, (int)r)];
            s += a->alibi ? b * (double)(i > j ? i - j : j - i) : b; /* alibi: a slope per head */
        }
        p[j] = s;
        if (isnan(s)) any_nan = true;
        else if (s > max) max = s;
    }
    if (lse) *lse = -INFINITY;
    if (max == -INFINITY && !any_nan) return false; /* no key left */
    double sum = 0;
    for (int64_t j = 0; j < S; j++) {
        p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - max);
        sum += p[j];
    }
    for (int64_t j = 0; j < S; j++) p[j] /= sum;
    if (lse) *lse = max + log(sum);
    return true;
}

bool kiln_interp_attention(const interp_call *c)
{
    interp_attn at;
    kiln_interp_attn_init(c, &at);
    int64_t T = at.T, S = at.S, dv = at.dv;
    double *p = kiln_interp_alloc(c, (size_t)(2 * S) * sizeof *p, "attention probabilities");
    if (!p) return false;
    double *m = p + S; /* the dropout multipliers */

    int64_t idx[KILN_MAX_RANK] = {0}; /* (batch…, head, i, j) for the bias */
    for (int64_t l = 0; l < at.n_batch; l++) {
        int64_t v0 = l * S * dv, o0 = l * T * dv;
        for (int64_t i = 0; i < T; i++) {
            float *row = (float *)c->out + o0 + i * dv;
            if (!kiln_interp_attn_probs(&at, l, i, idx, p, NULL)) { /* no key left: zero weights */
                for (int64_t e = 0; e < dv; e++) row[e] = 0.0f;
                continue;
            }
            kiln_interp_attn_drop_scale(&at, l, i, m);
            for (int64_t j = 0; j < S; j++) p[j] *= m[j];
            for (int64_t e = 0; e < dv; e++) {
                double acc = 0;
                for (int64_t j = 0; j < S; j++) acc += p[j] * at.v[v0 + j * dv + e];
                row[e] = (float)acc;
            }
        }
        /* advance the batch and head part of the bias index */
        kiln_interp_next_index(idx, at.qt->dims, at.r - 2);
    }
    free(p);
    return true;
}

/* The log-sum-exp of each query's kept scores, max + log Σ exp(s − max) as
 * kiln_interp_attn_probs computes them; −∞ for a query with no key left. */
bool kiln_interp_attention_lse(const interp_call *c)
{
    interp_attn at;
    kiln_interp_attn_init(c, &at);
    double *p = kiln_interp_alloc(c, (size_t)at.S * sizeof *p, "attention probabilities");
    if (!p) return false;
    int64_t idx[KILN_MAX_RANK] = {0};
    float *out = c->out;
    for (int64_t l = 0; l < at.n_batch; l++) {
        for (int64_t i = 0; i < at.T; i++) {
            double lse;
            kiln_interp_attn_probs(&at, l, i, idx, p, &lse);
            out[l * at.T + i] = (float)lse;
        }
        kiln_interp_next_index(idx, at.qt->dims, at.r - 2);
    }
    free(p);
    return true;
}

/* ---- cross_entropy -------------------------------------------------------------------------- */

/* logits (…, C), targets i32 (…). For each row whose target is not ignore_index, with
 * lse = log Σ_c exp(x_c) = max + log Σ_c exp(x_c − max): nll = lse − x_t and
 * smooth = Σ_c (lse − x_c), each summed as (max − x) + log Σ. Following
 * torch.nn.functional.cross_entropy with mean reduction and label smoothing ε:
 * loss = (1 − ε)·Σ nll / n + (ε / C)·Σ smooth / n over the n kept rows — each row's
 * (1 − ε)·nll + ε·mean_c(−log p_c), averaged. All rows ignored gives 0/0 = NaN. */
bool kiln_interp_cross_entropy(const interp_call *c)
{
    const kiln_type *xt = interp_in_type(c, 0);
    const float *x = interp_in(c, 0);
    const int32_t *target = interp_in(c, 1);
    int64_t C = xt->dims[xt->rank - 1];
    int64_t rows = kiln_type_numel(interp_in_type(c, 1));
    double eps = c->node->attrs.scalar;
    double nll_sum = 0, smooth_sum = 0;
    int64_t kept = 0;
    for (int64_t n = 0; n < rows; n++) {
        int64_t t = target[n];
        if (t == c->node->attrs.ignore_index) continue;
        if (t < 0 || t >= C)
            return kiln_interp_fail(c, "target %lld (element %lld of the targets) is out of range [0, %lld)",
                                    (long long)t, (long long)n, (long long)C);
        const float *row = x + n * C; /* C > 0 here, so x is a real buffer */
        double max = -INFINITY;
        for (int64_t j = 0; j < C; j++)
            if (row[j] > max) max = row[j];
        double sum = 0;
        for (int64_t j = 0; j < C; j++) sum += exp(row[j] - max);
        /* (max − x) + log Σ rather than lse − x: with logits near 1e7 the log term is below
         * lse's rounding, and torch's loss does not move with a constant added to a row */
        double log_sum = log(sum);
        nll_sum += (max - row[t]) + log_sum;
        for (int64_t j = 0; j < C; j++) smooth_sum += (max - row[j]) + log_sum;
        kept++;
    }
    double loss = (1.0 - eps) * (nll_sum / (double)kept);
    if (eps != 0) loss += eps / (double)C * (smooth_sum / (double)kept);
    *(float *)c->out = (float)loss;
    return true;
}

/* ---- T5 buckets ------------------------------------------------------------------------------- */

/* Computed in double: over every distance up to 10^5 it truncates to the same bucket as
 * T5's f32 arithmetic. */
int32_t kiln_t5_bucket(int64_t rel, bool bidirectional, int buckets, int max_distance)
{
    int32_t base = 0;
    int64_t dist;
    if (bidirectional) {
        buckets /= 2;
        if (rel > 0) base = buckets;
        dist = rel < 0 ? -rel : rel;
    } else {
        dist = rel < 0 ? -rel : 0;
    }
    int max_exact = buckets / 2;
    if (dist < max_exact) return base + (int32_t)dist;
    double scaled = log((double)dist / max_exact) / log((double)max_distance / max_exact) * (buckets - max_exact);
    int64_t b = max_exact + (int64_t)scaled;
    if (b > buckets - 1) b = buckets - 1;
    return base + (int32_t)b;
}

/* ---- dropout -------------------------------------------------------------------------------- */

/* splitmix64's output function: a bijective 64-bit mix. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* u = the top 53 bits of mix64(mix64(mix64(seed) ^ stream) ^ i) as a double in [0, 1);
 * the element is kept when u >= p, so p = 0 keeps everything. */
bool kiln_interp_dropout_keep(uint64_t seed, uint32_t stream, int64_t i, double p)
{
    uint64_t h = mix64(mix64(mix64(seed) ^ stream) ^ (uint64_t)i);
    double u = (double)(h >> 11) * 0x1.0p-53;
    return u >= p;
}

/* Identity outside training; inverted dropout in training: kept elements are scaled by
 * 1/(1 − p) so the expectation is unchanged. The mask depends on the node's stream, not
 * its id, so the backward dropout autodiff applies to the cotangent (same stream, same
 * shape) keeps exactly the elements the forward kept. */
bool kiln_interp_dropout(const interp_call *c)
{
    const float *x = interp_in(c, 0);
    float *y = c->out;
    double p = c->node->attrs.scalar;
    uint32_t stream = (uint32_t)c->node->attrs.stream;
    int64_t n = kiln_type_numel(&c->node->type);
    for (int64_t i = 0; i < n; i++) {
        if (!c->training) y[i] = x[i];
        else y[i] = kiln_interp_dropout_keep(c->seed, stream, i, p) ? (float)(x[i] / (1.0 - p)) : 0.0f;
    }
    return true;
}
