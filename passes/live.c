/* live.c — which nodes a computation needs: one backward sweep from the roots.
 *
 * The roots are the graph's outputs, and optionally its loss and its updates' new values;
 * nodes are in topological order, so one pass from the last node down marks everything a
 * root reads, directly or not. The pipeline (what to compile), the FLOP count (what one
 * forward pass computes) and the driver (which inputs `run` must be given) all ask this
 * one question with different roots. */
#include <string.h>

#include "passes.h"

void kiln_graph_live(const kiln_graph *g, unsigned roots, unsigned char *live)
{
    memset(live, 0, g->n_nodes);
    for (uint32_t i = 0; i < g->n_outputs; i++) live[g->outputs[i].node] = 1;
    if ((roots & KILN_LIVE_LOSS) && g->loss != KILN_NONE) live[g->loss] = 1;
    for (uint32_t u = 0; (roots & KILN_LIVE_UPDATES) && u < g->n_updates; u++) live[g->updates[u].value] = 1;
    for (uint32_t id = g->n_nodes; id-- > 0;)
        if (live[id])
            for (uint32_t j = 0; j < g->nodes[id].n_in; j++) live[g->nodes[id].in[j]] = 1;
}
