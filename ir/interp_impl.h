/* interp_impl.h — what the parts of the reference interpreter share.
 *
 * interp.c holds the driver (allocation, the per-op table, error reporting) and the
 * primitive ops; interp_nn.c holds the composites (softmax, layernorm, attention,
 * cross_entropy) and dropout; interp_grad.c the ops autodiff emits (unslice,
 * scatter_add and the _grad composites). Every op is a function taking one interp_call: the node,
 * its already allocated result buffer, and access to its inputs' buffers and types.
 * Not a public header: only ir/interp*.c include it.
 */
#ifndef KILN_INTERP_IMPL_H
#define KILN_INTERP_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "ir.h"

typedef struct interp_call {
    const kiln_graph *g;
    const kiln_node *node;
    uint32_t id;
    void *const *values;   /* every node's buffer; inputs of `node` are filled */
    void *out;             /* numel(node->type) elements of node->type.dtype */
    bool training;
    uint64_t seed;
    kiln_diags *diags;
} interp_call;

/* The buffer and the type of input i. A buffer may be NULL only when it is empty. */
static inline const void *interp_in(const interp_call *c, uint32_t i) { return c->values[c->node->in[i]]; }
static inline const kiln_type *interp_in_type(const interp_call *c, uint32_t i)
{
    return &c->g->nodes[c->node->in[i]].type;
}

/* Element `off` of a buffer of either dtype, as a double (exact for both f32 and i32). */
static inline double interp_load(const void *buf, kiln_dtype dt, int64_t off)
{
    return dt == KILN_I32 ? (double)((const int32_t *)buf)[off] : (double)((const float *)buf)[off];
}

/* A run-time error at the node: the diagnostic names the op, the node's label and id,
 * at the node's origin. Always returns false. */
bool kiln_interp_fail(const interp_call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* malloc that never returns NULL for a successful request of 0 bytes; on failure adds
 * a diagnostic at the node and returns NULL. */
void *kiln_interp_alloc(const interp_call *c, size_t bytes, const char *what);

/* Broadcast strides: the element stride of each of the `rank` dims of a result shape
 * within a tensor of type t that broadcasts to it (numpy: t's dims align to the right;
 * missing and size-1 dims get stride 0). */
void kiln_interp_bcast_strides(const kiln_type *t, int rank, int64_t *stride);
/* Offset of multi-index idx under the given strides. */
int64_t kiln_interp_offset(const int64_t *idx, const int64_t *stride, int rank);
/* Advances a row-major multi-index over dims (an odometer); wraps to all zeros. */
void kiln_interp_next_index(int64_t *idx, const int64_t *dims, int rank);

/* Product of dims[from..to). */
int64_t kiln_interp_span(const int64_t *dims, int from, int to);

/* The composite ops (interp_nn.c). */
bool kiln_interp_softmax(const interp_call *c);
bool kiln_interp_log_softmax(const interp_call *c);
bool kiln_interp_layernorm(const interp_call *c);
bool kiln_interp_attention(const interp_call *c);

/* What attention and attention_grad both read: the operands of an attention-shaped node
 * and the dims they share. */
typedef struct interp_attn {
    const kiln_attrs *a;
    const kiln_type *qt;
    const float *q, *k, *v;
    const void *mask;          /* (…,S) or NULL */
    kiln_dtype mask_dt;
    const float *bias;         /* broadcast to (…,H,T,S) through bstride, or NULL; with
                                  relative the (NB, H) bucket embedding, NB = bias_rows */
    int64_t bias_rows;
    int64_t bstride[KILN_MAX_RANK];
    int r;
    int64_t H, T, S, dh, dv, n_batch;  /* n_batch = batch × heads */
    /* attention dropout, in a training run with attrs.attn_dropout > 0 (else drop = 0) */
    double drop;
    uint32_t stream;
    uint64_t seed;
} interp_attn;
void kiln_interp_attn_init(const interp_call *c, interp_attn *at);
/* The forward's probabilities p[0..S) of query i in batch-head l (idx holds l's batch and
 * head indices, as kiln_interp_next_index advances them): excluded keys get 0. Returns
 * false, leaving p unspecified, when no key is left (the row then has zero weights). */
bool kiln_interp_attn_probs(const interp_attn *at, int64_t l, int64_t i, int64_t *idx, double *p, double *lse);
/* The multipliers of query i's weights under attention dropout: m[j] = 1/(1 − drop) for a
 * kept weight, 0 for a dropped one; all 1 without dropout. */
void kiln_interp_attn_drop_scale(const interp_attn *at, int64_t l, int64_t i, double *m);
bool kiln_interp_attention_lse(const interp_call *c);
bool kiln_interp_cross_entropy(const interp_call *c);
bool kiln_interp_dropout(const interp_call *c);

/* The keep decision of dropout for element i of the mask stream `stream` (the node's
 * attrs.stream; exposed for tests and for kernels that must reproduce it): see
 * interp_nn.c. */
bool kiln_interp_dropout_keep(uint64_t seed, uint32_t stream, int64_t i, double p);

/* The gradient ops autodiff emits (interp_grad.c). */
bool kiln_interp_unslice(const interp_call *c);
bool kiln_interp_scatter_add(const interp_call *c);
bool kiln_interp_layernorm_grad(const interp_call *c);
bool kiln_interp_attention_grad(const interp_call *c);
bool kiln_interp_cross_entropy_grad(const interp_call *c);

#endif
