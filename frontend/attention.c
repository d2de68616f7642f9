/* attention.c — multi-head attention (SPEC 1.2, 1.4).
 *
 * The module is built around one composite IR op, KILN_OP_ATTENTION, which takes the
 * per-head q (B,H,T,dh), k (B,H,S,dh), v (B,H,S,dh), an optional (B,S) f32 key mask and
 * an optional additive bias broadcastable to (B,H,T,S), and computes
 * softmax(q·kᵀ·scale + bias, masked)·v. Keeping it one op lets the codegen use a
 * flash-style kernel that never materialises the T×S scores. Around it, this file
 * builds the projections (PyTorch's (out, in) weights), the head split and merge
 * (reshape + transpose), and the position schemes:
 *
 *   rope      rotates q and k after their projections (bias included), before the
 *             scaling: x·cos + rotate_half(x)·sin, rotate_half(x) = concat(−x2, x1),
 *             pair (i, i + dh/2) turned by pos·10000^(−2i/dh); cos/sin are (L, dh)
 *             constants computed in double.
 *   alibi     bias −m_h·|i − j|, m_h = 2^(−8(h+1)/H): the op's bias input is the (H,1,1)
 *             slope constant −m_h and its `alibi` attribute says the bias is slope·|i − j|,
 *             which the attention kernel computes per block: no (H,T,S) table exists.
 *   relative  T5's bucketed bias: the op's bias input is the learned table
 *             .rel_bias.weight (32, H) and its `relative` attribute says the bias of
 *             (i, j) is row kiln_t5_bucket(j − i) (key minus query): the kernel picks it,
 *             no (H,T,S) table exists.
 *
 * Position biases enter through the op's bias input, which is added after the 1/√dh
 * scaling. Cross-attention accepts every position kind: queries take positions 0…T−1
 * and keys 0…S−1, which is what rope, alibi and the T5 bias mean when the memory is a
 * second sequence aligned at its start (decoder layers never ask for it).
 *
 * Dropout: the op's attn_dropout attribute drops attention weights after the softmax,
 * as PyTorch does, inside the kernel (and only in a training step; ir.h).
 */
#include <math.h>
#include <stdlib.h>

#include "modules.h"

const char *const fe_position_names[] = {"none", "relative", "rope", "alibi", NULL};

/* T5: 32 buckets, distances from KILN_T5_MAX_DISTANCE (128) on share the last bucket. */
enum { T5_BUCKETS = 32 };

/* ---- shared helpers (modules.h) --------------------------------------------------- */

/* Tables computed while loading (sinusoidal, rope, buckets) are filled element by element
 * before anything runs, so their size bounds load time: 2^27 elements (512 MiB) is far
 * above any real sequence length × width and still fills in about a second. */
#define FE_MAX_TABLE_ELEMS ((int64_t)1 << 27)

void *fe_table_alloc(fe_ctx *c, const fe_node *n, const char *what, int64_t count)
{
    if (count < 0 || count > FE_MAX_TABLE_ELEMS) {
        fe_error(c, n, NULL, "the %s would hold %lld elements, over kiln's limit of %lld for tables built at load time",
                 what, (long long)count, (long long)FE_MAX_TABLE_ELEMS);
        return NULL;
    }
    void *p = malloc(count > 0 ? (size_t)count * KILN_ELEM_BYTES : 1);
    if (!p) fe_error(c, n, NULL, "out of memory building the %s (%lld elements)", what, (long long)count);
    return p;
}

uint32_t fe_mask_for(fe_ctx *c, fe_node *n, const char *key, uint32_t mask, int64_t B, int64_t S)
{
    if (mask == KILN_NONE) return KILN_NONE;
    const kiln_type *t = fe_type(c, mask);
    if (t->rank != 2 || t->dims[0] != B || t->dims[1] != S) {
        char have[160];
        fe_error(c, n, key, "the mask is %s but must be (B, S) = [%lld,%lld] (1 = keep, 0 = pad)",
                 kiln_type_str(t, have, sizeof have), (long long)B, (long long)S);
        return KILN_NONE;
    }
    return fe_to_f32(c, n, mask); /* (B, S) f32 */
}

bool fe_check_seq(fe_ctx *c, fe_node *n, const char *key, uint32_t x, const char *what)
{
    const kiln_type *t = fe_type(c, x);
    if (t->rank == 3 && t->dtype == KILN_F32) return true;
    char have[160];
    fe_error(c, n, key, "%s must be f32 of shape (B, T, D), got %s", what, kiln_type_str(t, have, sizeof have));
    return false;
}

/* ---- heads --------------------------------------------------------------------------- */

/* (B, L, H·dh) → (B, H, L, dh) */
static uint32_t split_heads(fe_ctx *c, const fe_node *n, uint32_t x, int64_t H, int64_t dh)
{
    if (x == KILN_NONE) return KILN_NONE;
    const kiln_type *t = fe_type(c, x);
    uint32_t r = fe_reshape(c, n, x, 4, (int64_t[]){t->dims[0], t->dims[1], H, dh}); /* (B, L, H, dh) */
    return fe_transpose(c, n, r, (int64_t[]){0, 2, 1, 3});
}

/* (B, H, T, dh) → (B, T, H·dh) */
static uint32_t merge_heads(fe_ctx *c, const fe_node *n, uint32_t y)
{
    if (y == KILN_NONE) return KILN_NONE;
    const kiln_type *t = fe_type(c, y);
    int64_t B = t->dims[0], H = t->dims[1], T = t->dims[2], dh = t->dims[3];
    uint32_t tr = fe_transpose(c, n, y, (int64_t[]){0, 2, 1, 3}); /* (B, T, H, dh) */
    return fe_reshape(c, n, tr, 3, (int64_t[]){B, T, H * dh});
}

/* ---- rope ---------------------------------------------------------------------------- */

static uint32_t slice_last(fe_ctx *c, const fe_node *n, uint32_t x, int64_t start, int64_t end)
{
    kiln_attrs a = {.axis = fe_type(c, x)->rank - 1, .start = start, .end = end, .step = 1};
    return fe_add(c, n, KILN_OP_SLICE, &x, 1, &a, NULL);
}

/* x (B, H, L, dh) with positions 0…L−1 → x·cos + rotate_half(x)·sin. In a generation
 * step (L = 1) the position is kv.pos: the tables span the context and one row of each
 * is read at it. */
static uint32_t apply_rope(fe_ctx *c, const fe_node *n, uint32_t x, int64_t L, int64_t dh, bool step)
{
    if (x == KILN_NONE) return KILN_NONE;
    if (step) L = c->context;
    int64_t half = dh / 2;
    float *cs = fe_table_alloc(c, n, "rope table", 2 * L * dh);
    if (!cs) return KILN_NONE;
    float *sn = cs + L * dh;
    for (int64_t p = 0; p < L; p++) {
        for (int64_t j = 0; j < dh; j++) {
            int64_t i = j % half; /* columns i and i + dh/2 share the angle of pair i */
            double angle = (double)p * pow(10000.0, -2.0 * (double)i / (double)dh);
            cs[p * dh + j] = (float)cos(angle);
            sn[p * dh + j] = (float)sin(angle);
        }
    }
    uint32_t cos_t = fe_const_f32(c, n, 2, (int64_t[]){L, dh}, cs, L * dh); /* (L, dh) */
    uint32_t sin_t = fe_const_f32(c, n, 2, (int64_t[]){L, dh}, sn, L * dh); /* (L, dh) */
    free(cs);
    if (step) {
        cos_t = fe_decode_row(c, n, cos_t, "rope table"); /* (1, dh) */
        sin_t = fe_decode_row(c, n, sin_t, "rope table");
    }

    uint32_t x1 = slice_last(c, n, x, 0, half);  /* (B, H, L, dh/2) */
    uint32_t x2 = slice_last(c, n, x, half, dh); /* (B, H, L, dh/2) */
    kiln_attrs cat = {.axis = 3};
    uint32_t parts[2] = {fe_unary(c, n, KILN_OP_NEG, x2), x1};
    uint32_t rot = fe_add(c, n, KILN_OP_CONCAT, parts, 2, &cat, NULL); /* (B, H, L, dh) */
    return fe_binary(c, n, KILN_OP_ADD, fe_binary(c, n, KILN_OP_MUL, x, cos_t),
                     fe_binary(c, n, KILN_OP_MUL, rot, sin_t));
}

/* ---- alibi --------------------------------------------------------------------------- */

static uint32_t iota_f32(fe_ctx *c, const fe_node *n, int64_t d0, int64_t d1, int axis)
{
    kiln_attrs a = {.dtype = KILN_F32, .rank = 2, .shape = {d0, d1}, .axis = axis};
    return fe_add(c, n, KILN_OP_IOTA, NULL, 0, &a, NULL);
}

/* The slopes −m_h as (H, 1, 1): the attention op's bias with `alibi` (the kernel adds
 * −m_h·|i − j| itself), or, in a generation step, whose one query sits at kv.pos and not
 * at row 0, the whole bias −m_h·|pos − j| as (H, 1, S). */
static uint32_t alibi_bias(fe_ctx *c, const fe_node *n, int64_t H, int64_t S, bool step)
{
    float *slopes = fe_table_alloc(c, n, "alibi slopes", H);
    if (!slopes) return KILN_NONE;
    for (int64_t h = 0; h < H; h++) slopes[h] = (float)-pow(2.0, -8.0 * (double)(h + 1) / (double)H);
    uint32_t m = fe_const_f32(c, n, 3, (int64_t[]){H, 1, 1}, slopes, H); /* (H, 1, 1) */
    free(slopes);
    if (!step) return m;
    uint32_t i = fe_decode_pos_f32(c, n);  /* the one query's position */
    uint32_t j = iota_f32(c, n, 1, S, 1);  /* (1, S): key positions */
    uint32_t dist = fe_unary(c, n, KILN_OP_ABS, fe_binary(c, n, KILN_OP_SUB, i, j));
    return fe_binary(c, n, KILN_OP_MUL, m, dist); /* (H, 1, S) */
}

/* ---- T5 relative bias ---------------------------------------------------------------- */

/* A generation step: the query is at kv.pos and the keys at 0…S−1, so the bucket of key
 * j is that of rel = j − pos ∈ [−(S−1), S−1]: a (2S−1) table of buckets indexed by
 * j − pos + S − 1, computed at run time with i32 ops, then the weight rows → (H, 1, S). */
static uint32_t relative_bias_step(fe_ctx *c, const fe_node *n, uint32_t w, int64_t H, int64_t S, bool causal)
{
    int32_t *bk = fe_table_alloc(c, n, "relative position buckets", 2 * S - 1);
    if (!bk) return KILN_NONE;
    for (int64_t r = 0; r < 2 * S - 1; r++)
        bk[r] = kiln_t5_bucket(r - (S - 1), !causal, T5_BUCKETS, KILN_T5_MAX_DISTANCE);
    uint32_t table = fe_const_i32(c, n, 1, (int64_t[]){2 * S - 1}, bk, 2 * S - 1); /* (2S−1) i32 */
    free(bk);
    kiln_attrs ia = {.dtype = KILN_I32, .rank = 1, .shape = {S}, .axis = 0};
    uint32_t j = fe_add(c, n, KILN_OP_IOTA, NULL, 0, &ia, NULL); /* (S) */
    uint32_t shift = fe_const_i32(c, n, 1, (int64_t[]){1}, (int32_t[]){(int32_t)(S - 1)}, 1);
    uint32_t rel = fe_binary(c, n, KILN_OP_ADD, fe_binary(c, n, KILN_OP_SUB, j, fe_decode_pos(c, n)), shift);
    kiln_attrs g = {.axis = 0};
    uint32_t idx = fe_add(c, n, KILN_OP_GATHER, (uint32_t[]){table, rel}, 2, &g, NULL); /* (S) i32 buckets */
    idx = fe_reshape(c, n, idx, 2, (int64_t[]){1, S});
    uint32_t tsh = fe_add(c, n, KILN_OP_GATHER, (uint32_t[]){w, idx}, 2, &g, NULL); /* (1, S, H) */
    return fe_transpose(c, n, tsh, (int64_t[]){2, 0, 1});                         /* (H, 1, S) */
}

/* The attention's bias input: the learned table .rel_bias.weight (32, H) itself, whose
 * rows the kernel picks by bucket (the op's `relative` attribute); in a generation step
 * (one query at kv.pos) the gathered (H, 1, S) bias. */
static uint32_t relative_bias(fe_ctx *c, const fe_node *n, const char *prefix, int64_t H, int64_t S, bool causal,
                              bool step)
{
    int64_t wdims[2] = {T5_BUCKETS, H};
    uint32_t w = fe_param(c, n, fe_fmt(c, "%s.rel_bias.weight", prefix), 2, wdims, KILN_INIT_ZEROS, 0);
    return step ? relative_bias_step(c, n, w, H, S, causal) : w;
}

/* ---- the module ---------------------------------------------------------------------- */

uint32_t fe_build_attention(fe_ctx *c, const fe_node *n, const char *prefix, uint32_t x, uint32_t memory,
                            const fe_attention_spec *spec)
{
    if (x == KILN_NONE || memory == KILN_NONE) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x), *mt = fe_type(c, memory);
    KILN_ASSERT(xt->rank == 3 && mt->rank == 3); /* the expanders check shapes first */
    int64_t B = xt->dims[0], T = xt->dims[1], D = xt->dims[2], S = mt->dims[1];
    int64_t H = spec->heads;
    if (D % H != 0) {
        fe_error(c, n, "heads", "%lld is not divisible by %lld", (long long)D, (long long)H);
        return KILN_NONE;
    }
    int64_t dh = D / H;
    if (spec->position == FE_POS_ROPE && dh % 2 != 0) {
        fe_error(c, n, "position", "rope needs an even head dim, but dim %lld / %lld heads = %lld", (long long)D,
                 (long long)H, (long long)dh);
        return KILN_NONE;
    }
    (void)B;

    double std = c->m->init_std;
    uint32_t q = fe_build_linear(c, n, fe_fmt(c, "%s.q", prefix), x, D, spec->bias, std);      /* (B, T, D) */
    uint32_t k = fe_build_linear(c, n, fe_fmt(c, "%s.k", prefix), memory, D, spec->bias, std); /* (B, S, D) */
    uint32_t v = fe_build_linear(c, n, fe_fmt(c, "%s.v", prefix), memory, D, spec->bias, std); /* (B, S, D) */
    q = split_heads(c, n, q, H, dh); /* (B, H, T, dh) */
    k = split_heads(c, n, k, H, dh); /* (B, H, S, dh) */
    v = split_heads(c, n, v, H, dh); /* (B, H, S, dh) */
    /* generation (decode.c): on the decoder's side (what depends on the generated tokens)
     * self-attention keeps its keys and values in the cache and a step attends from
     * kv.pos over cache rows 0…pos; cross-attention keys and values are stored once */
    bool dec = fe_decode_depends(c, x), cross = memory != x;
    bool step = dec && c->decode == KILN_DECODE_STEP && !cross;
    if (spec->position == FE_POS_ROPE) {
        q = apply_rope(c, n, q, T, dh, dec && c->decode == KILN_DECODE_STEP);
        k = apply_rope(c, n, k, S, dh, step);
    }
    uint32_t mask = spec->mask;
    if (dec && cross) {
        if (spec->position != FE_POS_NONE) {
            fe_error(c, n, "position", "generation with a position scheme on cross-attention is not built yet");
            return KILN_NONE;
        }
        if (!fe_decode_cross(c, n, prefix, &k, &v)) return KILN_NONE;
    } else if (dec) {
        if (!spec->causal) {
            fe_error(c, n, NULL,
                     "this self-attention is not causal, so the model is an encoder: generation needs a decoder "
                     "(causal self-attention in every layer)");
            return KILN_NONE;
        }
        if (!fe_decode_cache(c, n, prefix, &k, &v)) return KILN_NONE;
        mask = step ? fe_decode_mask(c, n) : KILN_NONE; /* no padding in a generated sequence */
        if (step) S = c->context;
    }

    uint32_t in[5] = {q, k, v};
    uint32_t n_in = 3;
    /* dh = 0 (a zero-width input) has nothing to scale; keep the attribute finite. */
    kiln_attrs a = {.scalar = dh > 0 ? 1.0 / sqrt((double)dh) : 1.0, .causal = spec->causal && !step};
    if (mask != KILN_NONE) {
        in[n_in++] = mask; /* (B, S) f32 */
        a.has_mask = true;
    }
    uint32_t bias = KILN_NONE;
    if (spec->position == FE_POS_ALIBI) {
        bias = alibi_bias(c, n, H, S, step);
        a.alibi = !step;
    } else if (spec->position == FE_POS_RELATIVE) {
        bias = relative_bias(c, n, prefix, H, S, spec->causal, step);
        a.relative = !step; /* bidirectional unless causal, as the kernel's buckets are */
    }
    if (spec->position == FE_POS_ALIBI || spec->position == FE_POS_RELATIVE) {
        if (bias == KILN_NONE) return KILN_NONE;
        in[n_in++] = bias; /* relative's (32, H) table or alibi's (H, 1, 1) slopes; (H, 1, S) in a step */
        a.has_bias = true;
    }
    a.attn_dropout = spec->dropout; /* the builder gives it its own mask stream */
    uint32_t y = fe_add(c, n, KILN_OP_ATTENTION, in, n_in, &a, NULL); /* (B, H, T, dh) */
    y = merge_heads(c, n, y); /* (B, T, D) */
    return fe_build_linear(c, n, fe_fmt(c, "%s.o", prefix), y, D, spec->bias,
                           fe_residual_std(c, spec->n_layers)); /* (B, T, D) */
}

uint32_t fe_expand_attention(fe_ctx *c, fe_node *n)
{
    fe_attention_spec spec = {.mask = KILN_NONE, .n_layers = fe_layer_count(n)};
    uint32_t mask = KILN_NONE;
    bool has_mask = false;
    bool ok = fe_need_size(c, n, "heads", &spec.heads);
    ok &= fe_get_bool(c, n, "causal", false, &spec.causal);
    ok &= fe_get_bool(c, n, "bias", true, &spec.bias);
    ok &= fe_get_dropout(c, n, &spec.dropout);
    ok &= fe_get_enum(c, n, "position", fe_position_names, FE_POS_NONE, &spec.position);
    ok &= fe_get_ref(c, n, "mask", &mask, &has_mask);
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;

    uint32_t x = n->in[0];                            /* (B, T, D) */
    uint32_t memory = n->n_in > 1 ? n->in[1] : x;     /* (B, S, Dm) */
    if (!fe_check_seq(c, n, "in", x, "the attention input")) return KILN_NONE;
    if (memory != x && !fe_check_seq(c, n, "in", memory, "the attention memory")) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x), *mt = fe_type(c, memory);
    if (mt->dims[0] != xt->dims[0]) {
        fe_error(c, n, "in", "the memory's batch dim %lld differs from the input's %lld", (long long)mt->dims[0],
                 (long long)xt->dims[0]);
        return KILN_NONE;
    }
    if (has_mask) {
        spec.mask = fe_mask_for(c, n, "mask", mask, xt->dims[0], mt->dims[1]);
        if (spec.mask == KILN_NONE) return KILN_NONE;
    }
    return fe_build_attention(c, n, fe_prefix(c, n), x, memory, &spec);
}
