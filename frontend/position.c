/* position.c — pos_encoding: x (…, T, D) + PE[0:T].
 *
 * Shapes are static, so the sinusoidal table is computed here, in double (angles reach
 * max_len radians, where f32 arguments would lose digits), and enters the graph as a
 * (T, D) constant that broadcasts over the batch. The learned kind is a (max_len, D)
 * parameter whose first T rows are sliced off, so one set of weights serves every
 * sequence length up to max_len.
 *
 * Choices where the SPEC is silent: `kind` has no default (the two kinds differ in their
 * parameters, so guessing would silently change the weight file); `max_len` is required
 * for `learned` (it sizes the weight) and optional for `sinusoidal`, where it only
 * bounds T.
 */
#include <math.h>
#include <stdlib.h>

#include "modules.h"

static const char *const kinds[] = {"sinusoidal", "learned", NULL};
enum { KIND_SINUSOIDAL, KIND_LEARNED };

/* PE(p, 2i) = sin(p / 10000^(2i/D)), PE(p, 2i+1) = cos(same); an odd D ends with the
 * sine column of its last pair. */
static uint32_t sinusoid_table(fe_ctx *c, const fe_node *n, int64_t T, int64_t D)
{
    float *pe = fe_table_alloc(c, n, "sinusoidal table", T * D); /* (T, D) */
    if (!pe) return KILN_NONE;
    for (int64_t p = 0; p < T; p++) {
        for (int64_t j = 0; j < D; j++) {
            int64_t i2 = j - j % 2; /* 2i */
            double angle = (double)p / pow(10000.0, (double)i2 / (double)D);
            pe[p * D + j] = (float)(j % 2 == 0 ? sin(angle) : cos(angle));
        }
    }
    uint32_t t = fe_const_f32(c, n, 2, (int64_t[]){T, D}, pe, T * D);
    free(pe);
    return t;
}

uint32_t fe_expand_pos_encoding(fe_ctx *c, fe_node *n)
{
    int kind = KIND_SINUSOIDAL;
    int64_t max_len = -1;
    bool ok = true;
    if (!cJSON_GetObjectItemCaseSensitive(n->json, "kind")) {
        fe_error(c, n, "kind", "required key is missing (\"sinusoidal\" or \"learned\")");
        ok = false;
    } else {
        ok &= fe_get_enum(c, n, "kind", kinds, KIND_SINUSOIDAL, &kind);
    }
    if (ok && kind == KIND_LEARNED) {
        ok &= fe_need_size(c, n, "max_len", &max_len);
    } else if (fe_get_int(c, n, "max_len", -1, &max_len)) {
        if (max_len != -1 && max_len < 1) {
            fe_error(c, n, "max_len", "must be a positive integer, got %lld", (long long)max_len);
            ok = false;
        }
    } else {
        ok = false;
    }
    if (!ok || !fe_inputs_ok(n)) return KILN_NONE;

    uint32_t x = n->in[0]; /* (…, T, D) */
    const kiln_type *xt = fe_type(c, x);
    if (xt->rank < 2 || xt->dtype != KILN_F32) {
        char have[160];
        fe_error(c, n, "in", "pos_encoding needs an f32 input of shape (…, T, D), got %s",
                 kiln_type_str(xt, have, sizeof have));
        return KILN_NONE;
    }
    int64_t T = xt->dims[xt->rank - 2], D = xt->dims[xt->rank - 1];
    if (max_len != -1 && T > max_len) {
        fe_error(c, n, "max_len", "the sequence length T = %lld is longer than max_len = %lld", (long long)T,
                 (long long)max_len);
        return KILN_NONE;
    }

    /* a generation step (decode.c) reads the row of position kv.pos */
    bool step = c->decode == KILN_DECODE_STEP && fe_decode_depends(c, x); /* not an encoder's */
    uint32_t pe; /* (T, D) */
    if (kind == KIND_SINUSOIDAL) {
        pe = sinusoid_table(c, n, step ? c->context : T, D);
        if (step) pe = fe_decode_row(c, n, pe, "sinusoidal table");
    } else {
        uint32_t w = fe_param(c, n, fe_fmt(c, "%s.weight", fe_prefix(c, n)), 2, (int64_t[]){max_len, D},
                              KILN_INIT_NORMAL, c->m->init_std); /* (max_len, D) */
        kiln_attrs a = {.axis = 0, .start = 0, .end = T, .step = 1};
        pe = step ? fe_decode_row(c, n, w, "learned position table (max_len)") : fe_add(c, n, KILN_OP_SLICE, &w, 1, &a, NULL);
    }
    return fe_binary(c, n, KILN_OP_ADD, x, pe); /* (…, T, D) */
}
