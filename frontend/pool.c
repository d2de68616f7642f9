/* pool.c — pool: (B, T, D) → (B, D), one vector per sequence.
 *
 *   mean   the average over positions; with a mask, over unmasked positions only:
 *          sum_t(x·m) / n, n = sum_t m, with n = 0 replaced by 1: a row with no unmasked
 *          position gives zeros instead of 0/0 = NaN (its sum is 0 anyway).
 *   first  position 0 (the [CLS] token); the mask is not consulted, as SPEC 1.4 says.
 *   last   the last unmasked position (T−1 without a mask). With a mask it is found with
 *          primitive ops so it stays differentiable in x and needs no new IR op:
 *          L = max_t((t+1)·m) is one past the last kept position (0 if none), the one-hot
 *          eq(t+1, L) selects it, and a weighted sum over t picks the row. Counting from
 *          1 makes a fully masked row select nothing and give zeros, like `mean`.
 *
 * `kind` has no default (SPEC gives none, and the three differ in meaning).
 */
#include <string.h>

#include "modules.h"

static const char *const kinds[] = {"mean", "first", "last", NULL};
enum { POOL_MEAN, POOL_FIRST, POOL_LAST };

static uint32_t sum_axis1(fe_ctx *c, const fe_node *n, uint32_t x, bool keepdims)
{
    kiln_attrs a = {.n_axes = 1, .axes = {1}, .keepdims = keepdims};
    return fe_add(c, n, KILN_OP_SUM, &x, 1, &a, NULL);
}

/* x[:, t, :] as (B, D). */
static uint32_t take_position(fe_ctx *c, const fe_node *n, uint32_t x, int64_t t)
{
    const kiln_type *xt = fe_type(c, x);
    int64_t B = xt->dims[0], D = xt->dims[2];
    kiln_attrs a = {.axis = 1, .start = t, .end = t + 1, .step = 1};
    uint32_t row = fe_add(c, n, KILN_OP_SLICE, &x, 1, &a, NULL); /* (B, 1, D) */
    return fe_reshape(c, n, row, 2, (int64_t[]){B, D});
}

uint32_t fe_expand_pool(fe_ctx *c, fe_node *n)
{
    int kind = POOL_MEAN;
    uint32_t mask = KILN_NONE;
    bool has_mask = false, ok = true;
    if (!cJSON_GetObjectItemCaseSensitive(n->json, "kind")) {
        fe_error(c, n, "kind", "required key is missing (\"mean\", \"first\" or \"last\")");
        ok = false;
    } else {
        ok &= fe_get_enum(c, n, "kind", kinds, POOL_MEAN, &kind);
    }
    ok &= fe_get_ref(c, n, "mask", &mask, &has_mask);
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;

    uint32_t x = n->in[0]; /* (B, T, D) */
    if (!fe_check_seq(c, n, "in", x, "the pool input")) return KILN_NONE;
    const kiln_type *xt = fe_type(c, x);
    int64_t B = xt->dims[0], T = xt->dims[1];
    uint32_t m = KILN_NONE; /* (B, T) f32 */
    if (has_mask && (m = fe_mask_for(c, n, "mask", mask, B, T)) == KILN_NONE) return KILN_NONE;
    if (T == 0 && kind != POOL_MEAN) {
        fe_error(c, n, "in", "pool %s needs at least one position, but T = 0", kinds[kind]);
        return KILN_NONE;
    }

    if (kind == POOL_FIRST) return take_position(c, n, x, 0);
    if (kind == POOL_LAST && m == KILN_NONE) return take_position(c, n, x, T - 1);
    if (kind == POOL_MEAN && m == KILN_NONE) {
        kiln_attrs a = {.n_axes = 1, .axes = {1}};
        return fe_add(c, n, KILN_OP_MEAN, &x, 1, &a, NULL); /* (B, D) */
    }

    uint32_t w; /* (B, T) weights of the positions to sum */
    if (kind == POOL_MEAN) {
        float zero = 0;
        uint32_t count = sum_axis1(c, n, m, true); /* (B, 1) */
        uint32_t empty = fe_binary(c, n, KILN_OP_EQ, count, fe_const_f32(c, n, 0, (int64_t[]){0}, &zero, 1));
        count = fe_binary(c, n, KILN_OP_ADD, count, empty); /* 0 → 1; no max, so no tie in the gradient */
        w = fe_binary(c, n, KILN_OP_DIV, m, count);
    } else {
        kiln_attrs io = {.dtype = KILN_F32, .rank = 2, .shape = {1, T}, .axis = 1};
        float one = 1;
        uint32_t pos1 = fe_binary(c, n, KILN_OP_ADD, fe_add(c, n, KILN_OP_IOTA, NULL, 0, &io, NULL),
                                  fe_const_f32(c, n, 0, (int64_t[]){0}, &one, 1)); /* (1, T): 1…T */
        kiln_attrs mx = {.n_axes = 1, .axes = {1}, .keepdims = true};
        uint32_t kept = fe_binary(c, n, KILN_OP_MUL, pos1, m);       /* (B, T) */
        uint32_t last = fe_add(c, n, KILN_OP_MAX, &kept, 1, &mx, NULL); /* (B, 1) */
        w = fe_binary(c, n, KILN_OP_EQ, pos1, last);                 /* (B, T) one-hot or zeros */
    }
    int64_t b_t_1[3] = {B, T, 1};
    uint32_t w3 = fe_reshape(c, n, w, 3, b_t_1);                        /* (B, T, 1) */
    return sum_axis1(c, n, fe_binary(c, n, KILN_OP_MUL, x, w3), false); /* (B, D) */
}
