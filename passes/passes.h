/* passes.h — the graph passes and analyses, one file and one entry point each.
 * Depends on: ir. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "ir.h"

/* Floating-point operations of one node / of every node reachable by the graph's
 * outputs (one forward pass). A multiply-add counts as 2; exp, log, tanh… as 1;
 * layout ops as 0. */
int64_t kiln_node_flops(const kiln_graph *g, uint32_t id);
int64_t kiln_graph_flops(const kiln_graph *g);

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
} kiln_home_kind;

typedef struct kiln_home {
    kiln_home_kind kind;
    uint32_t index;
    int64_t offset;        /* bytes */
    int64_t bytes;         /* the value's size (numel · 4) */
    uint32_t first, last;  /* WORKSPACE: live from node first to node last (inclusive);
                              last = n_nodes when the value is copied to an output */
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
    int64_t params_bytes;      /* the parameter blob: every parameter, offsets 64-aligned */
    int64_t workspace_bytes;   /* the plan */
    int64_t unplanned_bytes;   /* every workspace buffer (64-rounded) without reuse */
    int64_t lower_bound_bytes; /* the largest set of workspace bytes live at one time */
} kiln_memplan;

typedef struct kiln_plan_request {
    const unsigned char *needed;   /* per node: compute it; NULL = every node */
    const int64_t *scratch_bytes;  /* per node kernel scratch; NULL = none */
    const uint32_t *inputs;        /* INPUT nodes in argument order */
    uint32_t n_inputs;
    const uint32_t *params;        /* PARAM nodes in blob order */
    uint32_t n_params;
    /* outputs: g->outputs, in order */
} kiln_plan_request;

#define KILN_PLAN_ALIGN 64

bool kiln_plan_memory(const kiln_graph *g, const kiln_plan_request *req, kiln_memplan *plan, kiln_diags *d);
void kiln_memplan_free(kiln_memplan *p);
/* The debug check: every workspace buffer and scratch lies inside the workspace, is
 * aligned, and no two whose live intervals meet overlap. On failure writes why into
 * msg and returns false. */
bool kiln_memplan_check(const kiln_memplan *p, char *msg, size_t msg_size);

#endif
