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

#endif
