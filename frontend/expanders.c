/* expanders.c — the table of layer ops: op name → expander and how many `in` it takes.
 *
 * Adding a layer op means one expander function and one row here. Primitive ops all go
 * to fe_expand_primitive, which maps the name onto the IR op of the same name; modules
 * go to their family's file. `takes_prev` is false only for the sources (constant, iota,
 * param), which never take the previous layer's output (SPEC 1.4).
 */
#include <string.h>

#include "fe.h"

#define PRIM(name, lo, hi) {name, fe_expand_primitive, lo, hi, true}
#define SOURCE(name) {name, fe_expand_primitive, 0, 0, false}

static const fe_expander table[] = {
    /* binary elementwise, numpy broadcasting */
    PRIM("add", 2, 2), PRIM("sub", 2, 2), PRIM("mul", 2, 2), PRIM("div", 2, 2),
    PRIM("maximum", 2, 2), PRIM("minimum", 2, 2), PRIM("pow", 2, 2),
    PRIM("lt", 2, 2), PRIM("gt", 2, 2), PRIM("eq", 2, 2),
    PRIM("where", 3, 3),
    /* unary elementwise */
    PRIM("neg", 1, 1), PRIM("exp", 1, 1), PRIM("log", 1, 1), PRIM("sqrt", 1, 1), PRIM("rsqrt", 1, 1),
    PRIM("abs", 1, 1), PRIM("square", 1, 1), PRIM("recip", 1, 1), PRIM("tanh", 1, 1),
    PRIM("sigmoid", 1, 1), PRIM("relu", 1, 1), PRIM("silu", 1, 1), PRIM("gelu", 1, 1),
    PRIM("gelu_tanh", 1, 1), PRIM("scale", 1, 1), PRIM("cast", 1, 1), PRIM("dropout", 1, 1),
    /* reductions and composites */
    PRIM("sum", 1, 1), PRIM("mean", 1, 1), PRIM("max", 1, 1),
    PRIM("softmax", 1, 1), PRIM("log_softmax", 1, 1),
    PRIM("matmul", 2, 2),
    /* layout */
    PRIM("reshape", 1, 1), PRIM("transpose", 1, 1), PRIM("slice", 1, 1), PRIM("concat", 1, 16),
    PRIM("broadcast", 1, 1), PRIM("gather", 2, 2),
    /* sources */
    SOURCE("constant"), SOURCE("iota"), SOURCE("param"),

    /* modules (SPEC 1.2) */
    {"linear", fe_expand_linear, 1, 1, true},
    {"embedding", fe_expand_embedding, 1, 1, true},
    {"feed_forward", fe_expand_feed_forward, 1, 1, true},
    {"layernorm", fe_expand_layernorm, 1, 1, true},
    {"rmsnorm", fe_expand_rmsnorm, 1, 1, true},
    {"pos_encoding", fe_expand_pos_encoding, 1, 1, true},
    {"attention", fe_expand_attention, 1, 2, true}, /* x, or [x, memory] */
    {"encoder_layer", fe_expand_encoder_layer, 1, 1, true},
    {"decoder_layer", fe_expand_decoder_layer, 1, 1, true},
    {"pool", fe_expand_pool, 1, 1, true},
};

const fe_expander *fe_find_expander(const char *op)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].op, op) == 0) return &table[i];
    return NULL;
}

int fe_expander_names(const char **names, int max)
{
    int n = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0] && n < max; i++) names[n++] = table[i].op;
    return n;
}
