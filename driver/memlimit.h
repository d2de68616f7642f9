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

/* "4096", "512K", "512M", "1.5G", "2T" (binary multiples; an optional trailing B or iB):
 * false for anything else, zero, or a value over 2^62. */
bool limits_parse_bytes(const char *s, int64_t *out);

/* Checks --max-memory's text once (a usage error when malformed). */
bool limits_valid(kiln_diags *d);

/* The bytes kiln may allocate: --max-memory when given, else the memory available to
 * this process (MemAvailable in /proc/meminfo, lowered by a cgroup v2 memory.max), or
 * −1 when unknown. *source says which. */
int64_t limits_budget(const char **source);

/* Refuses (one diagnostic, false) a plan needing `need` bytes over the budget, naming the
 * figure, its parts and the three largest tensors of g — so a model too large fails with
 * an explanation before the allocation, not with an OOM kill. `parts` is e.g.
 * "parameters 40.0 MiB + workspace 1.2 GiB". */
bool limits_check(const kiln_graph *g, int64_t need, const char *parts, const char *what, kiln_diags *d);

/* limits_check of a compiled entry's buffers: the parameter blob, the optimizer blob (the
 * KV cache for generate), the workspace and the caller's input/output buffers. */
bool limits_check_blobs(const kiln_graph *g, int64_t params, int64_t optim, int64_t workspace, int64_t io,
                        const char *what, kiln_diags *d);

/* "1.5 GiB"-style text of n bytes into buf. */
const char *limits_format(int64_t n, char *buf, size_t cap);

#endif
