/* passes.h — the graph passes and analyses, one file and one entry point each.
 * Depends on: ir. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include <stdio.h>
#include "ir.h"

/* Floating-point operations of one node / of every node reachable by the graph's
 * outputs (one forward pass). A multiply-add counts as 2; exp, log, tanh… as 1;
 * layout ops as 0. */
int64_t kiln_node_flops(const kiln_graph *g, uint32_t id);
int64_t kiln_graph_flops(const kiln_graph *g);

/* ---- live.c ------------------------------------------------------------------------------
 *
 * live[id] = 1 for every node the graph's outputs need, plus (by the root bits) its loss
 * and its updates' new values; g->n_nodes bytes. */
enum { KILN_LIVE_LOSS = 1, KILN_LIVE_UPDATES = 2 };
void kiln_graph_live(const kiln_graph *g, unsigned roots, unsigned char *live);

/* ---- simplify.c: CSE, dead code, constant folding, algebraic identities ---------------
 *
 * Rebuilds `in` into the empty, initialised graph `out` (which takes in's name) with
 * fewer or cheaper nodes computing the same outputs, loss and updates, in the same order
 * (see docs/passes.md for the rewrites):
 *   - dead code: nodes that no output, update or the loss needs are dropped;
 *   - common subexpressions: a node equal to an earlier one (same op, inputs, type and
 *     attributes; constants compared bytewise) is that node;
 *   - constant folding: a node whose inputs are all constants (CONSTANT, IOTA or folded)
 *     is computed now by the reference interpreter and becomes a CONSTANT, unless it is
 *     a dropout, its result is over fold_max_bytes, or it costs over 2^26 FLOPs;
 *   - algebraic identities: x·1, 1·x, x+0, 0+x, x−0, x/1, scale by 1, dropout p=0,
 *     neg(neg x), transpose∘transpose (one transpose, or none), reshape∘reshape,
 *     broadcast∘broadcast, reshape/broadcast/cast to the operand's own type, and a
 *     transpose of a matmul operand's last two dims folded into transpose_a/transpose_b;
 *     a node is only ever replaced by one of exactly its type.
 * map[id] (in->n_nodes entries) is the node of `out` that holds in-node id's value, or
 * KILN_NONE when nothing in `out` needs it any more. INPUT, PARAM and STATE nodes are
 * always kept, in their order, with their names (callers bind them by id through map).
 * An update whose value becomes its own target is dropped (it would change nothing); a
 * value that becomes another update's target is read through a copy (scale by 1), since
 * updates must not chain. A removed node's label moves to its replacement when that has
 * none. Running it on its own result changes nothing. Returns false only on an internal
 * error (a rebuilt node the builder refuses), with a diagnostic. */

typedef struct kiln_simplify_stats {
    uint32_t removed;      /* in-nodes with no node in out (dead or made dead) */
    uint32_t merged;       /* nodes found equal to an earlier node */
    uint32_t folded;       /* nodes computed into constants */
    uint32_t rewritten;    /* algebraic identities applied */
} kiln_simplify_stats;

typedef struct kiln_simplify_options {
    /* everything is on in a zeroed struct (or opt = NULL); these turn rewrites off */
    bool no_dce, no_cse, no_fold, no_identities;
    int64_t fold_max_bytes;        /* largest folded constant; 0 = 16 MiB */
    /* in-nodes from this id on are recomputations of earlier values made on purpose
     * (activation checkpointing): CSE never merges one of them into a node built from an
     * earlier in-node, except a CONSTANT (0 = no such nodes) */
    uint32_t recompute_from;
    kiln_simplify_stats *stats;    /* optional: filled with what was done */
} kiln_simplify_options;

bool kiln_simplify(const kiln_graph *in, kiln_graph *out, uint32_t *map, const kiln_simplify_options *opt,
                   kiln_diags *d);

/* ---- fuse.c: the kernel schedule ---------------------------------------------------------
 *
 * Groups the live nodes of a graph into kernels (see fuse.c): an ordered list, each
 * kernel a kind and its member nodes in node order. The graph is not changed. */

typedef enum kiln_kernel_kind {
    KILN_KERNEL_NODE,   /* one node, lowered by its op's own kernel */
    KILN_KERNEL_LOOP,   /* elementwise nodes of one shape in one loop nest */
    KILN_KERNEL_ATTENTION,      /* an attention, [the transpose of its result it writes directly] */
    KILN_KERNEL_ATTENTION_GRAD, /* the attention_grad nodes of one attention, [the rotary
                                   gradients of dq, dk (kiln_rope_grad_match)], [the transposes
                                   of their results] */
    KILN_KERNEL_GEMM,   /* a matmul with its epilogue: [scale] [+ bias] [activation] [+ residual],
                           and [a bias gradient: the column sums of the operand it walks
                           along k (kiln_gemm_sums_operand), often before the matmul in
                           node order]; `parts` such chains of one shape (sibling GEMMs) */
    KILN_KERNEL_MULTI,  /* one elementwise loop [ending in a sum over every element], the same
                           for each of `parts` tensors of any sizes (the optimizer update of
                           every parameter; every gradient's Σg²): one kernel over them all */
    KILN_KERNEL_REDUCE, /* a reduction (sum, mean, max over any axes) with the elementwise
                           nodes that produce its input (a LOOP group of that shape), computed
                           as the reduction walks it; the last member in evaluation order is
                           the reduction, whatever its node id */
    KILN_KERNEL_ROW,    /* row reductions (over the same trailing axes of one shape X) with
                           their elementwise producers and consumers, of X's shape or of the
                           reductions' row shape: each row computed whole by one thread, a
                           pass over its elements per reduction and one for what follows the
                           last (kiln_row_form says which shapes) */
} kiln_kernel_kind;

/* A ROW kernel's geometry: X = the reductions' input shape, cut into rows (the dims before
 * `axis`) and columns (axis…). Every operand's elements must sit at r·rs + c·cs for a
 * row r and a column c (strides that collapse), which kiln_row_strides checks. */
typedef struct kiln_row_form {
    kiln_type x, row;   /* X; the reductions' result type */
    int axis;           /* the first reduced dim */
    int64_t rows, cols;
} kiln_row_form;
/* Whether reduction n is over X's trailing dims (a row reduction) of f32; fills f. */
bool kiln_row_form_of(const kiln_graph *g, const kiln_node *n, kiln_row_form *f);
/* The row and column strides of an operand of type t broadcast into X; false when its
 * elements are not at r·rs + c·cs. */
bool kiln_row_strides(const kiln_row_form *f, const kiln_type *t, int64_t *rs, int64_t *cs);

/* "node", "loop", …, as golden dumps and reports print a kind. */
const char *kiln_kernel_kind_name(kiln_kernel_kind kind);

typedef struct kiln_kernel {
    kiln_kernel_kind kind;
    uint32_t first, n;         /* members: schedule.members[first .. first + n), node order */
    uint32_t parts;            /* MULTI: n / parts members per part, part after part, each in
                                  node order and wired alike; 1 for every other kind */
} kiln_kernel;

typedef struct kiln_kernel_schedule {
    uint32_t n_nodes;
    kiln_kernel *kernels;      /* in execution order (by first member) */
    uint32_t n_kernels;
    uint32_t *members;
    uint32_t n_members;
    uint32_t *kernel_of;       /* per node: the kernel computing it, or KILN_NONE */
    unsigned char *internal;   /* per node: its value never leaves its kernel (no buffer) */
    unsigned char *view;       /* per node: a transpose no kernel computes: the attention
                                  kernels reading it read its input's memory with strides */
    uint32_t *stored_as;       /* per node: KILN_NONE, or the transpose member of its kernel
                                  whose buffer holds it (an attention result written only
                                  transposed; attention_grad reads it there with strides) */
    unsigned char *rope;       /* per node: KILN_ROPE_RESULT, a rotary rotation of q or k that
                                  no kernel computes: the attention kernels reading it rotate
                                  its input on load (kiln_rope_match); KILN_ROPE_INNER, one of
                                  that rotation's inner nodes (computed by nobody); else 0 */
} kiln_kernel_schedule;

enum { KILN_ROPE_RESULT = 1, KILN_ROPE_INNER = 2 };

typedef struct kiln_fuse_request {
    const unsigned char *live; /* per node: computed */
    bool enable_loop;          /* fuse elementwise chains and attention layouts (else every node is its own kernel) */
    bool enable_gemm;          /* fold epilogues into GEMMs */
    bool dropout_alone;        /* dropout nodes keep a kernel of their own (a training step's) */
} kiln_fuse_request;

bool kiln_fuse(const kiln_graph *g, const kiln_fuse_request *req, kiln_kernel_schedule *s, kiln_diags *d);
void kiln_schedule_free(kiln_kernel_schedule *s);

/* ---- patterns.c: what the fuser and codegen both recognise ------------------------------
 *
 * Predicates and matchers over the graph, written once so that codegen finds in a kernel
 * exactly the pattern the fuser grouped. */

/* The ops an attention kernel computes (attention, attention_lse, attention_grad), and
 * the activations a GEMM epilogue applies. */
bool kiln_is_attention_op(kiln_op op);
bool kiln_is_gemm_activation(kiln_op op);

/* Whether a CONSTANT node lives in the compiled module as data (a global) rather than
 * being filled by a kernel: constants given in full, and splats (one value repeated)
 * small enough that their data costs less than a kernel call per run. */
#define KILN_SPLAT_GLOBAL_MAX 16384
bool kiln_constant_is_global(const kiln_node *n);

/* A rotary position embedding as the frontend writes it with primitive ops
 * (frontend/attention.c, apply_rope), on x (…, L, dh), dh even, h = dh/2:
 *   y = x·cos + concat(−x[…, h:], x[…, :h])·sin
 * with cos, sin (…, L, dh) tables whose other dims are 1 (row p = position p). Either
 * operand order of the add and of each mul matches. kiln_rope_match says whether node y
 * is one, and fills its pieces. */
typedef struct kiln_rope {
    uint32_t x, cos, sin;
    uint32_t inner[6];         /* x·cos, rot·sin, rot (concat), −x2 (neg), x1, x2 (slices) */
} kiln_rope;
bool kiln_rope_match(const kiln_graph *g, uint32_t y, kiln_rope *r);
/* The memory nodes a kernel of schedule s reads for its member's input x: x itself, or,
 * for a rotation no kernel computes (s->rope[x] == KILN_ROPE_RESULT), the x and the tables
 * the kernel rotates on load. Returns how many (1 or 3). */
uint32_t kiln_schedule_reads(const kiln_graph *g, const kiln_kernel_schedule *s, uint32_t x, uint32_t src[3]);

/* The gradient of that rotation as autodiff writes it (grad_rules.c: mul, concat, neg,
 * slice), from the cotangent G of y to the one of x, Rᵀ·G:
 *   dx = G·cos + unslice(−(G·sin)[…, :h] at h:) + unslice((G·sin)[…, h:] at :h)
 * (the three terms added in any order and nesting). kiln_rope_grad_match says whether
 * node dx is one. An attention_grad kernel whose dq or dk result is such a G writes dx
 * (un-rotates on store) when the tables are those its q or k is rotated with. */
typedef struct kiln_rope_grad {
    uint32_t G, cos, sin;
    uint32_t inner[8];         /* G·cos, G·sin, its two slices, the neg, the two unslices, the inner add */
} kiln_rope_grad;
bool kiln_rope_grad_match(const kiln_graph *g, uint32_t dx, kiln_rope_grad *r);

/* Whether a matmul is one GEMM call (2-D, or a batch of rows sharing one 2-D B). */
bool kiln_matmul_is_one_gemm(const kiln_graph *g, const kiln_node *n);
/* Whether the 2-D matmul mm reads the memory of y (through reshapes), as a (K, n) matrix
 * of rows, as the operand it walks along k — op(A) = Yᵀ (*operand = 0) or op(B) = Y
 * (*operand = 1) — so that a kernel running the GEMM can also give Y's column sums (a
 * bias gradient, which fuse.c then puts into the GEMM's kernel). */
bool kiln_gemm_sums_operand(const kiln_graph *g, const kiln_node *mm, uint32_t y, int64_t n, int *operand);

/* ---- memplan.c: static memory planning ---------------------------------------------
 *
 * Decides where every value of a compiled graph lives (its "home") and lays the
 * workspace out: liveness intervals over node order, greedy best-fit placement by size,
 * 64-byte aligned offsets. Kernel scratch (GEMM packing, attention score rows) is
 * planned in the same workspace, live only while its kernel runs. */

typedef enum kiln_home_kind {
    KILN_HOME_NONE,        /* not computed (no output needs it) */
    KILN_HOME_PARAM,       /* the parameter blob at `offset` (index = parameter number) */
    KILN_HOME_INPUT,       /* the caller's input buffer number `index` */
    KILN_HOME_OUTPUT,      /* computed straight into the caller's output buffer `index` */
    KILN_HOME_CONST,       /* constant data: a global in the compiled module */
    KILN_HOME_ALIAS,       /* a view (reshape): the memory of node `index`, never an alias */
    KILN_HOME_WORKSPACE,   /* the workspace at `offset` */
    KILN_HOME_STATE,       /* the optimizer blob at `offset` (index = state number) */
    KILN_HOME_UPDATE,      /* an update's new value computed straight into the storage of its
                              target, node `index` (a PARAM or STATE, same `offset`): every
                              reader of the target's old value runs before this node's
                              kernel, or is this same elementwise kernel reading the target at
                              the element it writes */
    KILN_HOME_FUSED,       /* lives only inside its kernel (registers): no memory */
} kiln_home_kind;

typedef struct kiln_home {
    kiln_home_kind kind;
    uint32_t index;
    int64_t offset;        /* bytes */
    int64_t bytes;         /* the value's size (numel · 4) */
    uint32_t first, last;  /* WORKSPACE: live from kernel position first to last (inclusive);
                              last = the number of positions when the value is copied out.
                              Positions are the schedule's kernels, or node ids without one */
    uint32_t over;         /* WORKSPACE: 1 + the input whose buffer this value takes over (an
                              elementwise kernel writing over an input that dies there; same
                              offset, its life ends at this value's first), or 0 */
} kiln_home;

/* An output whose node already lives elsewhere (an input, a parameter, a constant, a
 * view, or another output): the entry function copies it after the last kernel. */
typedef struct kiln_out_copy {
    uint32_t node, output;
} kiln_out_copy;

typedef struct kiln_memplan {
    uint32_t n_nodes;
    kiln_home *homes;          /* one per node */
    int64_t *scratch_offset;   /* one per node: workspace offset of its scratch, or -1 */
    int64_t *scratch_bytes;    /* one per node: its scratch size (0 = none) */
    kiln_out_copy *copies;
    uint32_t n_copies;
    uint32_t *update_copies;   /* indices into g->updates whose new value is not computed in
                                  place: the entry copies it into the target after the
                                  output copies */
    uint32_t n_update_copies;
    int64_t params_bytes;      /* the parameter blob: every parameter, offsets 64-aligned */
    int64_t optim_bytes;       /* the optimizer blob: every STATE node, offsets 64-aligned */
    int64_t workspace_bytes;   /* the plan */
    int64_t unplanned_bytes;   /* every workspace buffer (64-rounded) without reuse */
    int64_t lower_bound_bytes; /* the largest set of workspace bytes live at one time */
    /* a value some kernel reads before the kernel computing it has run, and that reader
     * (KILN_NONE: none): a schedule out of order, which kiln_memplan_check reports */
    uint32_t read_early, read_early_by;
} kiln_memplan;

typedef struct kiln_plan_request {
    const unsigned char *needed;   /* per node: compute it; NULL = every node */
    const int64_t *scratch_bytes;  /* per node kernel scratch; NULL = none */
    const uint32_t *inputs;        /* INPUT nodes in argument order */
    uint32_t n_inputs;
    const uint32_t *params;        /* PARAM nodes in blob order */
    uint32_t n_params;
    /* outputs: g->outputs, in order */
    const uint32_t *states;        /* STATE nodes in optimizer-blob order */
    uint32_t n_states;
    const kiln_kernel_schedule *schedule; /* the kernels (liveness over their order; internal values
                                      get no memory), or NULL: one kernel per node */
    /* updates: g->updates; their values must be needed */
} kiln_plan_request;

#define KILN_PLAN_ALIGN 64

bool kiln_plan_memory(const kiln_graph *g, const kiln_plan_request *req, kiln_memplan *plan, kiln_diags *d);
void kiln_memplan_free(kiln_memplan *p);
/* The debug check: every workspace buffer and scratch lies inside the workspace, is
 * aligned, and no two whose live intervals meet overlap; and no kernel reads a value
 * before the kernel computing it has run (read_early). On failure writes why into msg
 * and returns false. */
bool kiln_memplan_check(const kiln_memplan *p, char *msg, size_t msg_size);
/* The position (kernel, or node without a schedule) where the most workspace bytes are
 * live, and that many bytes in *bytes (memplan_report.c). */
uint32_t kiln_memplan_peak(const kiln_memplan *p, int64_t *bytes);
/* Prints what is live at that peak: its `top` largest buffers (<= 0: all) with op, type,
 * label and live interval, then the bytes by op (`kiln check --memory`). s may be NULL. */
void kiln_memplan_report(const kiln_graph *g, const kiln_memplan *p, const kiln_kernel_schedule *s, int top,
                         FILE *f);

/* ---- autodiff.c ---------------------------------------------------------------------- */

/* Reverse-mode autodiff as a graph-to-graph pass: appends to g the nodes computing the
 * gradient of the scalar f32 node `loss` with respect to each node of wrt[] (parameters,
 * f32 inputs, or any f32 node) and stores in grads[i] the node holding d loss / d wrt[i]
 * (the type of wrt[i]; a zeros constant when the loss does not depend on it). One
 * vector-Jacobian rule per op, written with the same builder as the forward graph, so
 * the backward graph is planned and compiled like the forward one. */
bool kiln_autodiff(kiln_graph *g, uint32_t loss, const uint32_t *wrt, uint32_t n_wrt, uint32_t *grads,
                   kiln_diags *d);

/* ---- checkpoint.c: activation checkpointing ---------------------------------------------
 *
 * Rebuilds a training graph whose first n_forward nodes are the forward pass (the rest:
 * autodiff's backward nodes, the optimizer update) so that the backward nodes read
 * recomputed copies of each repeated block's internal activations, emitted just before
 * the first node that needs them, instead of the forward's originals; only block
 * outputs, parameters and values outside blocks stay stored. Blocks are the chains of
 * forward nodes labelled NAME.0, NAME.1, … with one origin (a layer with `repeat`); see
 * checkpoint.c. The forward nodes keep their ids; map[old id] (g->n_nodes entries before
 * the call) receives every node's new id, and the graph's outputs, loss and updates are
 * mapped already. On failure (an internal error, reported) the graph is unusable. */
typedef struct kiln_checkpoint_result {
    uint32_t n_blocks;       /* blocks found */
    uint32_t n_recomputed;   /* forward nodes copied into the backward pass */
} kiln_checkpoint_result;

bool kiln_checkpoint(kiln_graph *g, uint32_t n_forward, uint32_t *map, kiln_checkpoint_result *res, kiln_diags *d);
/* The same rebuild for single cheap activations instead of blocks (on by default in a
 * training step; `--disable-pass recompute`): the backward nodes read copies of each
 * relu/silu/gelu/gelu_tanh/layernorm result whose inputs the backward pass reads anyway,
 * so the result need not be stored until then (checkpoint.c). res->n_blocks is 0; when
 * nothing qualifies the graph is unchanged and map is the identity. */
bool kiln_recompute_light(kiln_graph *g, uint32_t n_forward, uint32_t *map, kiln_checkpoint_result *res,
                          kiln_diags *d);

/* ---- optimizer.c: the optimizer update as IR -------------------------------------------
 *
 * Appends to g the training step's update of the parameters params[0..n_params) given
 * their gradient nodes grads[0..n_params) (from kiln_autodiff): global-norm clipping, then AdamW or
 * SGD with momentum as PyTorch computes them (formulas in optimizer.c and
 * docs/training.md), and records every new value as one of g's updates. The learning
 * rate is a new rank-0 f32 INPUT node named "lr" (the caller computes the schedule);
 * optimizer state is new STATE nodes (optim.step, optim.m.NAME, …) whose blob starts
 * zeroed. Only the parameters kiln_optim_trained accepts are updated: frozen ones and
 * ones with a zeros-constant gradient are left alone. The settings are plain data, so
 * passes need not know model files. */

typedef enum kiln_optim_kind { KILN_OPTIM_ADAMW, KILN_OPTIM_SGD } kiln_optim_kind;

typedef struct kiln_optim_group {
    const char *match;          /* fnmatch(3) glob over parameter names ('*' crosses '.') */
    double lr_scale;            /* this group's lr = lr · lr_scale */
    double weight_decay;
} kiln_optim_group;

typedef struct kiln_optim_config {
    kiln_optim_kind kind;
    double beta1, beta2, eps;   /* adamw */
    double momentum;            /* sgd; 0 = plain SGD, no state */
    double weight_decay;        /* for parameters no group matches */
    double grad_clip;           /* max global gradient norm; 0 = no clipping */
    const char *const *freeze;  /* globs: matching parameters are not trained */
    int n_freeze;
    const kiln_optim_group *groups;  /* the first matching group wins */
    int n_groups;
} kiln_optim_config;

typedef struct kiln_optim_result {
    uint32_t lr;                /* the "lr" INPUT node */
    uint32_t n_trained;         /* parameters that get an update */
    uint32_t n_states;          /* STATE nodes in g (optimizer-blob order = node order) */
} kiln_optim_result;

bool kiln_optim_build(kiln_graph *g, const uint32_t *params, const uint32_t *grads, uint32_t n_params,
                      const kiln_optim_config *cfg, kiln_optim_result *out, kiln_diags *d);

/* Whether parameter node `param` with gradient node `grad` is trained: no freeze glob of
 * cfg matches its name, and its gradient is not autodiff's zeros constant (the loss does
 * not depend on it: torch's None gradient). The one rule for the fused step
 * (kiln_optim_build) and the split one (driver/trainsplit.c), which must train the same
 * tensors and so keep the same optimizer state. */
bool kiln_optim_trained(const kiln_graph *g, const kiln_optim_config *cfg, uint32_t param, uint32_t grad);

/* ---- pipeline.c: the stages every compilation goes through ---------------------------------
 *
 * verify → live → simplify → fuse → memplan (pipeline.c explains each), after the
 * training stages (kiln_pipeline_train) when it compiles a training step. What comes out
 * is a program: the graph codegen compiles (the request's, or simplify's rebuilt one),
 * the request's ids translated into it, the kernel schedule and the memory plan. */

typedef struct kiln_pipeline_options {
    const char *disable;     /* comma-separated stage names to skip ("fuse"), or NULL */
    const char *dump_after;  /* a stage whose IR text to keep in kiln_program.dump, or NULL */
} kiln_pipeline_options;

typedef struct kiln_pipeline_request {
    const kiln_graph *g;
    const uint32_t *inputs, *params, *states;   /* as kiln_plan_request, ids in g */
    uint32_t n_inputs, n_params, n_states;
    bool dropout_alone;                          /* a training step's dropout keeps its kernel */
    /* nodes from this id on recompute earlier values on purpose (activation
     * checkpointing, checkpoint.c): simplify must not merge them back (0 = none) */
    uint32_t recompute_from;
    /* kernel scratch bytes per node (codegen knows them: they depend on the target and
     * on how nodes are grouped into kernels) */
    void (*scratch_sizes)(const kiln_graph *g, const kiln_kernel_schedule *s, void *ctx, int64_t *bytes);
    void *scratch_ctx;
    const kiln_pipeline_options *options;        /* NULL: every stage, no dump */
} kiln_pipeline_request;

/* Simplify rebuilds the graph, so the program's graph may not be the request's: every
 * id the caller holds (inputs, parameters, states, any other node) is translated with
 * kiln_program_node. Sources (INPUT, PARAM, STATE) always survive, in their order, with
 * their names; the outputs keep their names and order, so g->outputs[i] is still the
 * request graph's output i. */
typedef struct kiln_program {
    const kiln_graph *g;     /* the graph the schedule and plan are over: req->g or *owned */
    kiln_graph *owned;       /* simplify's graph (malloc'd), or NULL when the stage was off */
    uint32_t *map;           /* req->g id → g id (KILN_NONE: no longer computed); NULL = same ids */
    uint32_t n_map;          /* req->g->n_nodes */
    uint32_t *inputs, *params, *states;  /* the request's lists, translated (malloc'd) */
    uint32_t n_inputs, n_params, n_states;
    kiln_kernel_schedule sched;
    kiln_memplan plan;
    char *dump;              /* --dump-after's text, malloc'd, or NULL */
} kiln_program;

/* The training stages, the pipeline's first part for a training step (or `run --grads`):
 *   autodiff   (when req->loss is set) appends the gradients of the loss w.r.t. params[]
 *              then extra_wrt[] (autodiff.c); out->grads[i] is each one's gradient node
 *   optimizer  (when req->optim is set) appends the update of params[] (optimizer.c)
 *              from those gradients — or from req->grads when autodiff is not asked for
 *              (the split step's update graph reads them as state); out->optim holds the
 *              "lr" input and the counts, the new STATE nodes are g's from
 *              out->first_optim_node on
 * Each stage extends g in place (the driver keeps binding inputs, parameters and states
 * by id, and may rebuild the step after them — activation checkpointing), is followed by
 * the verifier unless `verify` is disabled, and keeps its IR text for --dump-after
 * (out->dump). The stages kiln_pipeline_run then applies — live, simplify, fuse,
 * memplan — see its comment; the whole list is verify → autodiff → optimizer → live →
 * simplify → fuse → memplan (docs/pipeline.md). */
typedef struct kiln_train_request {
    uint32_t loss;                       /* scalar f32 node; KILN_NONE: no autodiff stage */
    const uint32_t *params;              /* the trained parameters (autodiff's first wrt) */
    uint32_t n_params;
    const uint32_t *extra_wrt;           /* more nodes to differentiate w.r.t. (f32 inputs) */
    uint32_t n_extra_wrt;
    const uint32_t *grads;               /* optimizer without autodiff: per parameter */
    const kiln_optim_config *optim;      /* NULL: no optimizer stage */
    const kiln_pipeline_options *options;
} kiln_train_request;

typedef struct kiln_train_result {
    uint32_t n_forward;                  /* g's node count before the stages */
    uint32_t *grads;                     /* autodiff: n_params + n_extra_wrt nodes (malloc'd) */
    uint32_t first_optim_node;           /* the optimizer's nodes start here */
    kiln_optim_result optim;             /* with the optimizer stage */
    char *dump;                          /* --dump-after autodiff / optimizer text (malloc'd) */
} kiln_train_result;

bool kiln_pipeline_train(kiln_graph *g, const kiln_train_request *req, kiln_train_result *out, kiln_diags *d);
void kiln_train_result_free(kiln_train_result *r);

/* The program graph's node for the request graph's node id (KILN_NONE stays KILN_NONE). */
uint32_t kiln_program_node(const kiln_program *p, uint32_t id);
bool kiln_pipeline_run(const kiln_pipeline_request *req, kiln_program *out, kiln_diags *d);
void kiln_program_free(kiln_program *p);
/* Stage names for --disable-pass / --dump-after, from one table in pipeline.c: whether
 * one exists, and the list ("verify, autodiff, …, memplan"). */
bool kiln_pass_known(const char *name);
const char *kiln_pass_names(void);
bool kiln_pass_disabled(const kiln_pipeline_options *o, const char *name);
/* Whether a stage may be turned off (the others are needed to compile at all). */
bool kiln_pass_optional(const char *name);
/* What a compilation must do for a stage to run: the forward stages run whenever a
 * graph is compiled (not for the interpreter), autodiff when gradients are taken
 * (a training step, run --grads), optimizer and recompute in a whole training step. */
enum { KILN_RUNS_COMPILE = 1, KILN_RUNS_GRADS = 2, KILN_RUNS_STEP = 4 };
/* The KILN_RUNS_* bits a stage needs (0 for an unknown name). */
unsigned kiln_pass_needs(const char *name);
/* The stage names in pipeline order (only the optional ones if asked), separated by
 * ", " and before the last by last_sep (", " or " or "). */
void kiln_pass_list(char *buf, size_t size, bool optional_only, const char *last_sep);

#endif
