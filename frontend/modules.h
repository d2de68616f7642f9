/* modules.h — small helpers the module expanders share (private to frontend/).
 *
 * The module files (dense.c, norm.c, position.c, attention.c, layers.c, pool.c) read
 * attributes through fe.h and build nodes with fe_add; what they have in common beyond
 * that — validating sizes and dropout rates, checking masks, the residual init scale,
 * bounded scratch tables for constants computed at expansion time — lives here so the
 * rules are stated once. Helpers are defined in the file named next to them.
 */
#ifndef KILN_FE_MODULES_H
#define KILN_FE_MODULES_H

#include "fe.h"

/* Choice lists for fe_get_enum, in the index order fe.h's builders use. */
extern const char *const fe_activation_names[]; /* relu gelu gelu_tanh silu (dense.c) */
extern const char *const fe_position_names[];   /* none relative rope alibi (attention.c) */
enum { FE_POS_NONE, FE_POS_RELATIVE, FE_POS_ROPE, FE_POS_ALIBI };

/* dense.c ---------------------------------------------------------------------------- */

/* A required size attribute (heads, hidden, vocab…): an integer >= 1. */
bool fe_need_size(fe_ctx *c, fe_node *n, const char *key, int64_t *out);
/* `dropout` (default 0), checked to lie in [0, 1). */
bool fe_get_dropout(fe_ctx *c, fe_node *n, double *p);
/* How many layers a module's stack has: n->repeat when it has `repeat` (its parameters
 * are then named NAME.i.…), else 0: not a stack. */
int fe_layer_count(const fe_node *n);
/* The init std of a residual output projection (.o, .fc2) in a stack of n_layers:
 * init.std/√(2·n_layers) when n_layers ≥ 1 (GPT-2), init.std when 0 (not a stack). */
double fe_residual_std(fe_ctx *c, int n_layers);
/* True when every resolved input exists (an earlier error gives KILN_NONE). */
bool fe_inputs_ok(const fe_node *n);

/* attention.c ------------------------------------------------------------------------ */

/* Checks that the mask named by `key` is (B, S) (i32 or f32) and returns it as f32, or
 * KILN_NONE after reporting. */
uint32_t fe_mask_for(fe_ctx *c, fe_node *n, const char *key, uint32_t mask, int64_t B, int64_t S);
/* Checks that x is f32 (B, T, D); reports at `key` naming `what` otherwise. */
bool fe_check_seq(fe_ctx *c, fe_node *n, const char *key, uint32_t x, const char *what);
/* malloc for a constant table computed at expansion time (count elements of 4 bytes),
 * refusing tables over the IR's tensor limit; NULL after reporting. */
void *fe_table_alloc(fe_ctx *c, const fe_node *n, const char *what, int64_t count);

#endif
