/* layers.c — encoder_layer and decoder_layer: attention, feed-forward and layernorm
 * blocks joined by residual adds, with the norm placed as `norm` says (SPEC 1.2, 1.4).
 *
 *   post (default, torch.nn.Transformer*Layer):  h = LN(h + drop(Sub(h)))   per sublayer
 *   pre  (GPT-2):                                h = h + drop(Sub(LN(h)))   per sublayer
 *
 * A layer is a list of sublayers — encoder: self-attention, FF; decoder: causal
 * self-attention, cross-attention on `memory`, FF — each with its own layernorm, so both
 * expanders build their sublayers and hand them to one residual helper. `drop` is the
 * residual dropout PyTorch calls dropout1/2/3; the same rate also goes to attention and
 * to the FF's inner dropout, as in PyTorch's layers. Layernorm eps is PyTorch's 1e-5.
 *
 * Residual output projections (.o of each attention, .fc2) get the GPT-2 init scale
 * std/√(2·n_layers), n_layers being the layer's `repeat` count (no scaling for a layer
 * without `repeat`, fe_residual_std).
 *
 * decoder_layer's self-attention is always causal (SPEC 1.4): a `causal` key is
 * accepted for symmetry with encoder_layer but does not change that. Cross-attention is
 * never causal, has no position bias, and masks memory keys with `memory_mask`.
 */
#include "modules.h"

static const char *const norm_names[] = {"post", "pre", NULL};
enum { NORM_POST, NORM_PRE };

/* The attributes both layer kinds share. */
typedef struct layer_attrs {
    int64_t heads, hidden;
    int norm, activation, position;
    bool causal;
    double dropout;
    uint32_t mask;   /* the `mask` node as named (shape-checked by the expander), or KILN_NONE */
    bool has_mask;
} layer_attrs;

static bool read_layer_attrs(fe_ctx *c, fe_node *n, layer_attrs *la)
{
    *la = (layer_attrs){.mask = KILN_NONE};
    bool ok = fe_need_size(c, n, "heads", &la->heads);
    ok &= fe_need_size(c, n, "hidden", &la->hidden);
    ok &= fe_get_enum(c, n, "norm", norm_names, NORM_POST, &la->norm);
    ok &= fe_get_bool(c, n, "causal", false, &la->causal);
    ok &= fe_get_enum(c, n, "activation", fe_activation_names, 0, &la->activation); /* relu */
    ok &= fe_get_dropout(c, n, &la->dropout);
    ok &= fe_get_enum(c, n, "position", fe_position_names, FE_POS_NONE, &la->position);
    ok &= fe_get_ref(c, n, "mask", &la->mask, &la->has_mask);
    return ok;
}

static uint32_t dropout(fe_ctx *c, const fe_node *n, uint32_t x, double p)
{
    if (p <= 0) return x;
    kiln_attrs a = {.scalar = p};
    return fe_add(c, n, KILN_OP_DROPOUT, &x, 1, &a, NULL);
}

/* One sublayer: what it computes from its (possibly normalised) input. */
typedef enum { SUB_SELF_ATTN, SUB_CROSS_ATTN, SUB_FF } sub_kind;

typedef struct sublayer {
    sub_kind kind;
    const char *name;      /* parameter prefix of the sublayer, e.g. "blocks.0.attn" */
    const char *ln;        /* its layernorm's prefix, e.g. "blocks.0.ln1" */
    fe_attention_spec attn;
} sublayer;

typedef struct layer_ctx {
    fe_ctx *c;
    const fe_node *n;
    const layer_attrs *la;
    uint32_t memory;       /* (B, S, Dm) for cross-attention */
    int n_layers;
} layer_ctx;

static uint32_t run_sublayer(const layer_ctx *L, const sublayer *s, uint32_t h)
{
    switch (s->kind) {
    case SUB_SELF_ATTN: return fe_build_attention(L->c, L->n, s->name, h, h, &s->attn);
    case SUB_CROSS_ATTN: return fe_build_attention(L->c, L->n, s->name, h, L->memory, &s->attn);
    default:
        return fe_build_feed_forward(L->c, L->n, s->name, h, L->la->hidden, L->la->activation, L->la->dropout,
                                     L->n_layers);
    }
}

/* Runs the sublayers in order with their residuals and norms; h (B, T, D) throughout. */
static uint32_t run_layer(const layer_ctx *L, const sublayer *subs, int n_subs, uint32_t x)
{
    fe_ctx *c = L->c;
    const fe_node *n = L->n;
    double eps = 1e-5;
    uint32_t h = x; /* (B, T, D) */
    for (int i = 0; i < n_subs && h != KILN_NONE; i++) {
        if (L->la->norm == NORM_PRE) {
            uint32_t y = run_sublayer(L, &subs[i], fe_build_layernorm(c, n, subs[i].ln, h, eps));
            h = fe_binary(c, n, KILN_OP_ADD, h, dropout(c, n, y, L->la->dropout));
        } else {
            uint32_t y = run_sublayer(L, &subs[i], h);
            h = fe_build_layernorm(c, n, subs[i].ln, fe_binary(c, n, KILN_OP_ADD, h, dropout(c, n, y, L->la->dropout)),
                                   eps);
        }
    }
    return h;
}

static fe_attention_spec attn_spec(const layer_attrs *la, bool causal, int position, uint32_t mask, int n_layers)
{
    return (fe_attention_spec){
        .heads = la->heads,
        .causal = causal,
        .bias = true,
        .dropout = la->dropout,
        .position = position,
        .mask = mask,
        .n_layers = n_layers,
    };
}

uint32_t fe_expand_encoder_layer(fe_ctx *c, fe_node *n)
{
    layer_attrs la;
    if (!read_layer_attrs(c, n, &la) || !fe_inputs_ok(n)) return KILN_NONE;
    uint32_t x = n->in[0]; /* (B, T, D) */
    if (!fe_check_seq(c, n, "in", x, "the encoder_layer input")) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x);
    uint32_t mask = KILN_NONE;
    if (la.has_mask && (mask = fe_mask_for(c, n, "mask", la.mask, xt->dims[0], xt->dims[1])) == KILN_NONE)
        return KILN_NONE;

    const char *p = fe_prefix(c, n);
    layer_ctx L = {c, n, &la, KILN_NONE, fe_layer_count(n)};
    sublayer subs[2] = {
        {SUB_SELF_ATTN, fe_fmt(c, "%s.attn", p), fe_fmt(c, "%s.ln1", p),
         attn_spec(&la, la.causal, la.position, mask, L.n_layers)},
        {SUB_FF, fe_fmt(c, "%s.ff", p), fe_fmt(c, "%s.ln2", p), {0}},
    };
    return run_layer(&L, subs, 2, x);
}

uint32_t fe_expand_decoder_layer(fe_ctx *c, fe_node *n)
{
    layer_attrs la;
    uint32_t memory = KILN_NONE, memory_mask = KILN_NONE;
    bool has_memory = false, has_memory_mask = false;
    bool ok = read_layer_attrs(c, n, &la);
    ok &= fe_get_ref(c, n, "memory", &memory, &has_memory);
    ok &= fe_get_ref(c, n, "memory_mask", &memory_mask, &has_memory_mask);
    if (!has_memory) {
        fe_error(c, n, "memory", "required key is missing (the name of the node to attend to, e.g. the encoder output)");
        ok = false;
    }
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;

    uint32_t x = n->in[0]; /* (B, T, D) */
    if (!fe_check_seq(c, n, "in", x, "the decoder_layer input")) return KILN_NONE;
    if (!fe_check_seq(c, n, "memory", memory, "the memory")) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x), *mt = fe_type(c, memory);
    int64_t B = xt->dims[0], T = xt->dims[1], S = mt->dims[1];
    if (mt->dims[0] != B) {
        fe_error(c, n, "memory", "the memory's batch dim %lld differs from the input's %lld", (long long)mt->dims[0],
                 (long long)B);
        return KILN_NONE;
    }
    uint32_t mask = KILN_NONE, mmask = KILN_NONE;
    if (la.has_mask && (mask = fe_mask_for(c, n, "mask", la.mask, B, T)) == KILN_NONE) return KILN_NONE;
    if (has_memory_mask && (mmask = fe_mask_for(c, n, "memory_mask", memory_mask, B, S)) == KILN_NONE)
        return KILN_NONE;

    const char *p = fe_prefix(c, n);
    layer_ctx L = {c, n, &la, memory, fe_layer_count(n)};
    sublayer subs[3] = {
        {SUB_SELF_ATTN, fe_fmt(c, "%s.self_attn", p), fe_fmt(c, "%s.ln1", p),
         attn_spec(&la, true, la.position, mask, L.n_layers)},
        {SUB_CROSS_ATTN, fe_fmt(c, "%s.cross_attn", p), fe_fmt(c, "%s.ln2", p),
         attn_spec(&la, false, FE_POS_NONE, mmask, L.n_layers)},
        {SUB_FF, fe_fmt(c, "%s.ff", p), fe_fmt(c, "%s.ln3", p), {0}},
    };
    return run_layer(&L, subs, 3, x);
}
