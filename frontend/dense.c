/* dense.c — the dense modules: linear, embedding, feed_forward.
 *
 * linear is one matmul against W (out, in) with transpose_b — the layout PyTorch stores,
 * so weights load unchanged — plus a broadcast bias add. `tie` points W at an existing
 * parameter instead of creating one (GPT-2's head shares the token embedding); the
 * autodiff pass then sums both uses' gradients because both read the same PARAM node.
 * embedding is a gather of rows. feed_forward is fc2(dropout(act(fc1(x)))) as in
 * PyTorch's TransformerEncoderLayer, with fc2 as a residual output projection for the
 * GPT-2 init scale.
 *
 * The helpers of modules.h that are not tied to one module family live here too.
 */
#include <math.h>
#include <string.h>

#include "modules.h"

const char *const fe_activation_names[] = {"relu", "gelu", "gelu_tanh", "silu", NULL};

/* ---- shared helpers ---------------------------------------------------------------- */

bool fe_need_size(fe_ctx *c, fe_node *n, const char *key, int64_t *out)
{
    if (!fe_need_int(c, n, key, out)) return false;
    if (*out < 1) {
        fe_error(c, n, key, "must be a positive integer, got %lld", (long long)*out);
        return false;
    }
    return true;
}

bool fe_get_dropout(fe_ctx *c, fe_node *n, double *p)
{
    if (!fe_get_num(c, n, "dropout", 0.0, p)) return false;
    if (!(*p >= 0 && *p < 1)) {
        fe_error(c, n, "dropout", "must lie in [0, 1), got %g", *p);
        return false;
    }
    return true;
}

int fe_layer_count(const fe_node *n)
{
    return n->has_repeat ? n->repeat : 0;
}

double fe_residual_std(fe_ctx *c, int n_layers)
{
    double std = c->m->init_std;
    /* A stack of N (a layer with `repeat`, even `"repeat": 1`, as GPT-2 and nanoGPT scale
     * a one-layer model too) scales its residual projections so the variance of the
     * residual stream does not grow with depth; a layer without `repeat` keeps the std. */
    return n_layers > 0 ? std / sqrt(2.0 * n_layers) : std;
}

bool fe_inputs_ok(const fe_node *n)
{
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] == KILN_NONE) return false;
    return true;
}

/* x (…, in) · Wᵀ + b with W (out, in) and b (out) or KILN_NONE → (…, out). */
static uint32_t fe_linear_apply(fe_ctx *c, const fe_node *n, uint32_t x, uint32_t w, uint32_t b)
{
    if (x == KILN_NONE || w == KILN_NONE) return KILN_NONE;
    kiln_type xt = *fe_type(c, x);
    int64_t out = fe_type(c, w)->dims[0];
    /* matmul wants rank >= 2: a single vector (in) goes through as a (1, in) matrix. */
    uint32_t x2 = x;
    if (xt.rank == 1) x2 = fe_reshape(c, n, x, 2, (int64_t[]){1, xt.dims[0]});
    kiln_attrs a = {.transpose_b = true};
    uint32_t in[2] = {x2, w};
    uint32_t y = fe_add(c, n, KILN_OP_MATMUL, in, 2, &a, NULL); /* (…, out) */
    if (xt.rank == 1) y = fe_reshape(c, n, y, 1, &out);
    if (b != KILN_NONE) y = fe_binary(c, n, KILN_OP_ADD, y, b);
    return y;
}

/* ---- linear ------------------------------------------------------------------------ */

uint32_t fe_build_linear(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, int64_t out, bool bias,
                         double weight_std)
{
    if (x == KILN_NONE) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x);
    if (xt->rank < 1) {
        fe_error(c, n, NULL, "a linear layer needs an input with a last dim, got a scalar");
        return KILN_NONE;
    }
    int64_t in = xt->dims[xt->rank - 1];
    uint32_t w = fe_param(c, n, fe_fmt(c, "%s.weight", prefix), 2, (int64_t[]){out, in}, KILN_INIT_NORMAL,
                          weight_std); /* (out, in) */
    uint32_t b = KILN_NONE;
    if (bias) b = fe_param(c, n, fe_fmt(c, "%s.bias", prefix), 1, &out, KILN_INIT_ZEROS, 0); /* (out) */
    if (w == KILN_NONE || (bias && b == KILN_NONE)) return KILN_NONE;
    return fe_linear_apply(c, n, x, w, b);
}

uint32_t fe_expand_linear(fe_ctx *c, fe_node *n)
{
    const char *tie = NULL;
    int64_t out = -1;
    bool bias = true;
    bool ok = fe_get_str(c, n, "tie", NULL, &tie);
    /* With `tie` the tied parameter fixes the output size, so `out` may be left out. */
    if (tie) {
        ok &= fe_get_int(c, n, "out", -1, &out);
        if (ok && out != -1 && out < 1) {
            fe_error(c, n, "out", "must be a positive integer, got %lld", (long long)out);
            ok = false;
        }
    } else {
        ok &= fe_need_size(c, n, "out", &out);
    }
    ok &= fe_get_bool(c, n, "bias", true, &bias);
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;

    uint32_t x = n->in[0];
    const kiln_type *xt = fe_type(c, x);
    if (xt->rank < 1) {
        fe_error(c, n, "in", "a linear layer needs an input with a last dim, got a scalar");
        return KILN_NONE;
    }
    int64_t in = xt->dims[xt->rank - 1];
    const char *prefix = fe_prefix(c, n);
    if (!tie) return fe_build_linear(c, n, prefix, x, out, bias, c->m->init_std);

    uint32_t w = fe_find_param(c, tie);
    if (w == KILN_NONE) {
        fe_error(c, n, "tie", "no parameter named '%s' (a tied parameter must come from an earlier layer)", tie);
        return KILN_NONE;
    }
    const kiln_type *wt = fe_type(c, w);
    if (out == -1 && wt->rank == 2) out = wt->dims[0];
    if (wt->rank != 2 || wt->dims[0] != out || wt->dims[1] != in) {
        char have[160];
        fe_error(c, n, "tie", "parameter '%s' is %s but this layer needs its weight as (out, in) = [%lld,%lld]",
                 tie, kiln_type_str(wt, have, sizeof have), (long long)out, (long long)in);
        return KILN_NONE;
    }
    uint32_t b = KILN_NONE;
    if (bias) {
        b = fe_param(c, n, fe_fmt(c, "%s.bias", prefix), 1, &out, KILN_INIT_ZEROS, 0); /* (out) */
        if (b == KILN_NONE) return KILN_NONE;
    }
    return fe_linear_apply(c, n, x, w, b);
}

/* ---- embedding --------------------------------------------------------------------- */

uint32_t fe_expand_embedding(fe_ctx *c, fe_node *n)
{
    int64_t vocab = 0, dim = 0;
    bool ok = fe_need_size(c, n, "vocab", &vocab);
    ok &= fe_need_size(c, n, "dim", &dim);
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;

    uint32_t ids = n->in[0]; /* (…) i32 */
    const kiln_type *it = fe_type(c, ids);
    if (it->dtype != KILN_I32) {
        char have[160];
        fe_error(c, n, "in", "token ids must be i32, got %s", kiln_type_str(it, have, sizeof have));
        return KILN_NONE;
    }
    uint32_t w = fe_param(c, n, fe_fmt(c, "%s.weight", fe_prefix(c, n)), 2, (int64_t[]){vocab, dim},
                          KILN_INIT_NORMAL, c->m->init_std); /* (vocab, dim) */
    if (w == KILN_NONE) return KILN_NONE;
    kiln_attrs a = {.axis = 0};
    /* An id outside [0, vocab) is a run-time error of gather, never a wild read. */
    return fe_add(c, n, KILN_OP_GATHER, (uint32_t[]){w, ids}, 2, &a, NULL); /* (…, dim) */
}

/* ---- feed_forward ------------------------------------------------------------------ */

uint32_t fe_build_feed_forward(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, int64_t hidden,
                               int activation, double dropout, int n_layers)
{
    if (x == KILN_NONE) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x);
    if (xt->rank < 1) {
        fe_error(c, n, NULL, "feed_forward needs an input with a last dim, got a scalar");
        return KILN_NONE;
    }
    int64_t dim = xt->dims[xt->rank - 1];
    static const kiln_op act_ops[] = {KILN_OP_RELU, KILN_OP_GELU, KILN_OP_GELU_TANH, KILN_OP_SILU};

    uint32_t h = fe_build_linear(c, n, fe_fmt(c, "%s.fc1", prefix), x, hidden, true,
                                 c->m->init_std); /* (…, hidden) */
    if (h == KILN_NONE) return KILN_NONE;
    h = fe_unary(c, n, act_ops[activation], h);
    /* Dropout sits between the activation and fc2, as in PyTorch's Transformer layers. */
    if (dropout > 0) {
        kiln_attrs a = {.scalar = dropout};
        h = fe_add(c, n, KILN_OP_DROPOUT, &h, 1, &a, NULL);
    }
    return fe_build_linear(c, n, fe_fmt(c, "%s.fc2", prefix), h, dim, true,
                           fe_residual_std(c, n_layers)); /* (…, dim) */
}

uint32_t fe_expand_feed_forward(fe_ctx *c, fe_node *n)
{
    int64_t hidden = 0;
    int activation = 0;
    double dropout = 0;
    bool ok = fe_need_size(c, n, "hidden", &hidden);
    ok &= fe_get_enum(c, n, "activation", fe_activation_names, 0, &activation); /* relu: SPEC 1.4 */
    ok &= fe_get_dropout(c, n, &dropout);
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;
    return fe_build_feed_forward(c, n, fe_prefix(c, n), n->in[0], hidden, activation, dropout,
                                 fe_layer_count(n));
}
