/* ir.h — kiln's tensor IR.
 *
 * A graph is an array of nodes in topological order. Each node is one SSA value with a
 * static type (dtype + shape) and refers to its inputs by uint32_t node id. Ops are
 * described once, in ops.def; the enum, names, arities, kinds and attribute sets below
 * are generated from it. Building a node (kiln_graph_add) runs the op's shape rule, so a
 * graph that was built is well typed; errors from building are values in a kiln_diags
 * carrying the JSON path the node came from.
 *
 * Memory: a graph owns an arena; names, input lists and constant data live there and are
 * freed with the graph in one call.
 *
 * Depends on: libc only.
 */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/types.h"
#include "arena.h"
#include "diag.h"

/* ---- the op table ---------------------------------------------------------------- */

/* Attribute bits: which fields of kiln_attrs an op uses (and prints). */
enum {
    KILN_A_TYPE = 1 << 0,      /* result dtype+shape given by attrs.dtype/rank/shape */
    KILN_A_NAME = 1 << 1,      /* attrs.name: input or parameter name */
    KILN_A_INIT = 1 << 2,      /* attrs.init, attrs.init_arg: parameter initialiser */
    KILN_A_VALUES = 1 << 3,    /* attrs.values/n_values: constant data */
    KILN_A_AXIS = 1 << 4,      /* attrs.axis, non-negative */
    KILN_A_AXES = 1 << 5,      /* attrs.axes/n_axes: sorted, distinct, non-negative */
    KILN_A_KEEPDIMS = 1 << 6,  /* attrs.keepdims */
    KILN_A_PERM = 1 << 7,      /* attrs.perm (length = rank) */
    KILN_A_SLICE = 1 << 8,     /* attrs.start/end/step, normalised as python's slice.indices */
    KILN_A_SCALAR = 1 << 9,    /* attrs.scalar, named by the op table's scalar_name */
    KILN_A_TRANSPOSE = 1 << 10,/* attrs.transpose_a, attrs.transpose_b */
    KILN_A_ATTN = 1 << 11,     /* attrs.causal, has_mask, has_bias */
    KILN_A_IGNORE = 1 << 12,   /* attrs.ignore_index */
    KILN_A_STREAM = 1 << 13,   /* attrs.stream: dropout's mask stream */
    KILN_A_WRT = 1 << 14,      /* attrs.wrt: which input attention_grad differentiates */
};

typedef enum kiln_op_kind {
    KILN_KIND_SOURCE,
    KILN_KIND_ELEMENTWISE,
    KILN_KIND_REDUCTION,
    KILN_KIND_MATMUL,
    KILN_KIND_LAYOUT,
    KILN_KIND_COMPOSITE,
} kiln_op_kind;

typedef enum kiln_op {
#define OP(id, text, arity, kind, attrs, scalar_name) KILN_OP_##id,
#include "ops.def"
#undef OP
    KILN_OP_COUNT
} kiln_op;

typedef struct kiln_op_info {
    const char *name;
    int arity;                 /* -1: variable */
    kiln_op_kind kind;
    unsigned attrs;            /* KILN_A_* bits */
    const char *scalar_name;   /* text name of attrs.scalar, or NULL */
} kiln_op_info;

extern const kiln_op_info kiln_op_table[KILN_OP_COUNT];

/* Checks the op table's rows: a unique name each, sources exactly the ops without
 * inputs, a scalar attribute exactly when it has a name, a shape rule each
 * (kiln_shape_rule_exists). On failure writes why. */
bool kiln_op_table_check(char *msg, size_t size);

/* The op whose text name is `name`, or KILN_OP_COUNT. */
kiln_op kiln_op_from_name(const char *name);

/* ---- types ------------------------------------------------------------------------ */

typedef struct kiln_type {
    kiln_dtype dtype;
    int rank;
    int64_t dims[KILN_MAX_RANK];
} kiln_type;

/* Element count of a type (1 for a scalar). Shapes are checked at build time so that
 * this and the byte size fit in int64 and under KILN_MAX_TENSOR_BYTES. */
int64_t kiln_type_numel(const kiln_type *t);
bool kiln_type_equal(const kiln_type *a, const kiln_type *b);
/* Writes "f32[2,3]" (or "f32[]") into buf; returns buf. */
char *kiln_type_str(const kiln_type *t, char *buf, size_t size);

/* Largest single tensor kiln accepts (bytes). Larger shapes are refused before any
 * allocation with an error naming the node. */
#define KILN_MAX_TENSOR_BYTES ((int64_t)1 << 36)

/* ---- nodes ------------------------------------------------------------------------ */

typedef enum kiln_init {
    KILN_INIT_NORMAL,   /* init_arg = std */
    KILN_INIT_ZEROS,
    KILN_INIT_ONES,
    KILN_INIT_UNIFORM,  /* init_arg = bound: U(-bound, bound) */
} kiln_init;

/* An op's attributes. Only the fields named by the op's KILN_A_* bits are meaningful. */
typedef struct kiln_attrs {
    /* KILN_A_TYPE: the result type of input/param/constant/iota/cast/reshape/broadcast.
     * reshape may hold one -1 dim, resolved by the shape rule. */
    kiln_dtype dtype;
    int rank;
    int64_t shape[KILN_MAX_RANK];

    const char *name;            /* KILN_A_NAME (arena-owned) */
    kiln_init init;              /* KILN_A_INIT */
    double init_arg;

    const void *values;          /* KILN_A_VALUES: f32 or i32 per dtype, arena-owned */
    int64_t n_values;            /* 1 = fill every element with values[0]; else numel */

    int64_t axis;                /* KILN_A_AXIS */
    int n_axes;                  /* KILN_A_AXES */
    int64_t axes[KILN_MAX_RANK];
    bool keepdims;               /* KILN_A_KEEPDIMS */
    int64_t perm[KILN_MAX_RANK]; /* KILN_A_PERM, length = input rank */
    int64_t start, end, step;    /* KILN_A_SLICE */
    double scalar;               /* KILN_A_SCALAR */
    bool transpose_a, transpose_b;  /* KILN_A_TRANSPOSE */
    /* KILN_A_ATTN. Inputs: q (…,H,T,dh), k (…,H,S,dh), v (…,H,S,dv), then the key mask
     * (…,S) f32 0/1 if has_mask, then an additive bias broadcastable to (…,H,T,S) if
     * has_bias. scores = q·kᵀ·scalar + bias; masked keys and (causal) keys j > i are
     * excluded; a row with no key left gets zero weights. With alibi the bias input b is
     * broadcastable to (…,H,1,1) (per-head slopes) and the additive bias is
     * b·|i − j| (ALiBi, computed in the kernel: no (H,T,S) table).
     * attn_dropout: in a training run, each attention weight p_ij (after the softmax) is
     * kept with probability 1 − attn_dropout and then divided by it, else 0 (PyTorch's
     * attention dropout); the mask is dropout's hash (kiln_interp_dropout_keep) of the
     * node's `stream` and the weight's index ((batch…·H + h)·T + i)·S + j over
     * (…,H,T,S). 0: no dropout (and then no stream). attention_lse ignores it; the
     * attention_grad of an attention carries the same two, so it drops the same weights. */
    bool causal, has_mask, has_bias, alibi;
    /* relative: T5's bucketed relative-position bias computed in the kernel. The bias
     * input is the bucket embedding (NB, H), NB even; the bias of query i, key j in head
     * h is bias[kiln_t5_bucket(j − i, !causal, NB, KILN_T5_MAX_DISTANCE)][h]. The
     * gradient wrt=scores is then the scores' gradient summed along diagonals,
     * (…, H, T + S − 1), element t = Σ over i − j + S − 1 = t (autodiff scatters it into
     * the buckets). */
    bool relative;
    double attn_dropout;
    int64_t ignore_index;        /* KILN_A_IGNORE */
    /* KILN_A_STREAM: dropout's mask is a hash of (run seed, stream, element index). The
     * builder sets a stream of 0 to the node's id, so every dropout node has its own mask
     * and keeps it when the graph grows; autodiff gives the backward dropout of a
     * cotangent the forward's stream, so it drops exactly the same elements. */
    int64_t stream;
    int wrt;                     /* KILN_A_WRT: a kiln_wrt */
} kiln_attrs;

/* attention_grad computes the gradient of one attention input (KILN_A_WRT): q, k, v, or
 * the scores q·kᵀ·scale + bias, whose gradient autodiff reduces to the bias's shape. */
typedef enum kiln_wrt { KILN_WRT_Q, KILN_WRT_K, KILN_WRT_V, KILN_WRT_SCORES, KILN_WRT_COUNT } kiln_wrt;
extern const char *const kiln_wrt_names[KILN_WRT_COUNT];   /* "q", "k", "v", "scores" */

#define KILN_NONE UINT32_MAX

/* T5's bucket of relative position rel = key − query (HF's _relative_position_bucket):
 * bidirectional uses half the buckets per direction (keys after the query in the upper
 * half); otherwise only keys before the query are told apart (later ones share bucket
 * 0). Distances below buckets/4 (bidirectional) or buckets/2 get a bucket each; longer
 * ones are log-spaced up to max_distance, beyond which they share the last bucket
 * (ir/interp_nn.c). */
#define KILN_T5_MAX_DISTANCE 128
int32_t kiln_t5_bucket(int64_t rel, bool bidirectional, int buckets, int max_distance);

typedef struct kiln_node {
    kiln_op op;
    kiln_type type;         /* the result */
    uint32_t n_in;
    const uint32_t *in;     /* ids of earlier nodes (arena-owned) */
    kiln_attrs attrs;
    const char *label;      /* the model-file name of the value this node produces, or NULL */
    const char *origin;     /* where it came from, e.g. "layers[3]" or "losses[0]", or NULL */
} kiln_node;

/* A named graph output (the model file's `outputs`). */
typedef struct kiln_output {
    const char *name;
    uint32_t node;
} kiln_output;

/* A state change the graph makes when it runs (the training step's parameter and
 * optimizer updates): after every node has been evaluated, source `target` (a PARAM or
 * a STATE) takes the value of node `value`. Every node reads the old value, whatever
 * the order of the nodes. */
typedef struct kiln_update {
    uint32_t target, value;
} kiln_update;

typedef struct kiln_graph {
    kiln_arena arena;
    const char *name;
    kiln_node *nodes;       /* malloc'd, grows; everything the nodes point to is in arena */
    uint32_t n_nodes, cap_nodes;
    kiln_output *outputs;   /* malloc'd */
    uint32_t n_outputs, cap_outputs;
    uint32_t loss;          /* scalar training loss, or KILN_NONE */
    kiln_update *updates;   /* malloc'd; at most one per target */
    uint32_t n_updates, cap_updates;
} kiln_graph;

void kiln_graph_init(kiln_graph *g, const char *name);
void kiln_graph_free(kiln_graph *g);

/* Appends a node after checking arity, dtypes, attributes and shapes and inferring the
 * result type. On a user error it adds one diagnostic at `origin` (naming the op, the
 * label and the shapes involved) and returns KILN_NONE; inputs that are KILN_NONE
 * (from an earlier error) make it return KILN_NONE silently, so one run reports every
 * independent problem. `attrs` may be NULL for ops without attributes; strings and
 * constant data it points to are copied into the graph's arena. */
uint32_t kiln_graph_add(kiln_graph *g, kiln_op op, const uint32_t *in, uint32_t n_in,
                        const kiln_attrs *attrs, const char *label, const char *origin,
                        kiln_diags *diags);

/* Records a named output. */
void kiln_graph_add_output(kiln_graph *g, const char *name, uint32_t node);
/* Records an update: `target` (PARAM or STATE) becomes `value` (same type) after a run.
 * The verifier checks the pair; callers pass nodes they built. */
void kiln_graph_add_update(kiln_graph *g, uint32_t target, uint32_t value);

static inline const kiln_node *kiln_graph_node(const kiln_graph *g, uint32_t id) { return &g->nodes[id]; }

/* Runs the shape rule of `op` on the given input types: fills *out and returns true, or
 * writes a message (without location) into msg and returns false. Used by the builder,
 * the verifier and the parser. */
bool kiln_infer_type(kiln_op op, const kiln_type *const *in, uint32_t n_in, kiln_attrs *attrs,
                     kiln_type *out, char *msg, size_t msg_size);
/* Whether shape.c's table has a rule for op (kiln_op_table_check asks for every op). */
bool kiln_shape_rule_exists(kiln_op op);

/* Python's slice.indices for a dim of length `len`: turns user start/end (either may be
 * absent) and step into the IR's non-wrapping form (0 <= start <= end <= len for
 * step > 0; -1 <= end <= start < len for step < 0). Returns false if step is 0. */
bool kiln_slice_normalize(int64_t len, bool has_start, int64_t start, bool has_end, int64_t end,
                          int64_t step, int64_t *out_start, int64_t *out_end);
/* Number of elements an IR-form slice selects. */
int64_t kiln_slice_count(int64_t start, int64_t end, int64_t step);

/* ---- text form, verifier, interpreter ---------------------------------------------- */

/* Deterministic text form (see docs/ir.md). Returns a malloc'd string. */
char *kiln_graph_print(const kiln_graph *g);
/* Parses the text form into an initialised, empty graph; errors carry line:column. */
bool kiln_graph_parse(kiln_graph *g, const char *text, const char *file, kiln_diags *diags);
/* Checks the internal invariants (topological order, arity, types equal to what the
 * shape rules give, attributes in range). Problems go to diags; returns true if none. */
bool kiln_graph_verify(const kiln_graph *g, kiln_diags *diags);

/* Reference interpreter: plain loops, never optimised. `values` has g->n_nodes slots;
 * the caller fills the slots of INPUT, PARAM and STATE nodes with buffers of the node's
 * type (f32 or i32, row-major). The interpreter allocates every other slot with malloc;
 * kiln_interp_free_values frees those (not the caller's). Run-time errors (a gather
 * index out of range) go to diags with the node's label and origin. `training`
 * enables dropout (with `seed`). After a successful run the graph's updates are applied:
 * each target's caller buffer receives its new value (so one call is one training step). */
bool kiln_interp_run(const kiln_graph *g, void **values, bool training, uint64_t seed,
                     kiln_diags *diags);
void kiln_interp_free_values(const kiln_graph *g, void **values);

#endif
