/* memlimit.h — refusing, before anything is allocated, a model that cannot fit in memory
 * (memlimit.c). Every command that allocates a workspace takes --max-memory BYTES. */
#ifndef KILN_MEMLIMIT_H
#define KILN_MEMLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "driver.h"

/* --max-memory's text, or NULL: the flag's entry for a command's cli_flag table. */
extern const char *limits_max_memory;
#define LIMITS_FLAG                                                                                           \
    {"--max-memory", CLI_STR, &limits_max_memory, NULL,                                                       \
     "refuse, before allocating, a model whose buffers need more, e.g. 512M, 4G (default: the available memory)"}

/* Checks --max-memory's text once (a usage error when malformed). */
bool limits_valid(kiln_diags *d);

/* Refuses (one diagnostic, false) a compiled entry whose buffers — the parameter blob,
 * the optimizer blob (the KV cache for generate), the workspace and the caller's
 * input/output buffers — need more bytes than kiln may allocate (--max-memory when given,
 * else the memory available to this process), naming the figure, its parts and the three
 * largest tensors of g: a model too large fails with an explanation before the
 * allocation, not with an OOM kill. */
bool limits_check_blobs(const kiln_graph *g, int64_t params, int64_t optim, int64_t workspace, int64_t io,
                        const char *what, kiln_diags *d);

#endif
