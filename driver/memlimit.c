/* memlimit.c — a model too large for this machine is refused, with reasons, before kiln
 * allocates its buffers.
 *
 * Sizes are static (../shared/DESIGN.md): once a graph is compiled, its parameter blob, optimizer
 * blob and planned workspace are known to the byte, so the driver can compare them with
 * what the machine has before asking for them. Without the check a model too large
 * either fails in malloc with a bare "out of memory" (or an assertion) or — with
 * overcommit, the Linux default — is allocated and later killed by the OOM killer while
 * touching the pages.
 *
 * The budget is --max-memory when given, else what the kernel says is available:
 * MemAvailable from /proc/meminfo, lowered to a cgroup v2 limit (memory.max minus
 * memory.current) when the process runs in one (containers, CI). Unknown (no /proc) means
 * no check. The refusal names the figure, its parts and the three largest tensors of the
 * graph, which is where a user looks first (a vocabulary too large, a T×T score matrix, a
 * dim bound to the wrong value).
 *
 * Each tensor's size was bounded when its shape was inferred (ir/shape.c: overflow-
 * checked products, at most KILN_MAX_TENSOR_BYTES), so the sums here cannot overflow.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "memlimit.h"

const char *limits_max_memory;

/* "4096", "512K", "512M", "1.5G", "2T" (binary multiples; an optional trailing B or iB):
 * false for anything else, zero, or a value over 2^62. */
static bool limits_parse_bytes(const char *s, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s) || *s == '-' || *s == '+') return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v <= 0) return false;
    double mult = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mult = 1024.0, end++; break;
    case 'M': mult = 1048576.0, end++; break;
    case 'G': mult = 1073741824.0, end++; break;
    case 'T': mult = 1099511627776.0, end++; break;
    default: break;
    }
    if (mult > 1 && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return false;
    v *= mult;
    if (v < 1 || v > 4611686018427387904.0) return false; /* 2^62 */
    *out = (int64_t)v;
    return true;
}

bool limits_valid(kiln_diags *d)
{
    int64_t v;
    if (!limits_max_memory || limits_parse_bytes(limits_max_memory, &v)) return true;
    kiln_diags_add(d, NULL, 0, 0, "--max-memory", "expected a size in bytes such as 1000000, 512M or 4G, got '%s'",
                   limits_max_memory);
    return false;
}

/* A number from the first line of a file, or −1 ("max" and unreadable files too). */
static int64_t read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[64] = "";
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    char *end;
    long long v = got ? strtoll(line, &end, 10) : -1;
    return got && end != line && v >= 0 ? (int64_t)v : -1;
}

/* The cgroup v2 headroom of this process, or −1: /proc/self/cgroup's "0::/PATH". */
static int64_t cgroup_headroom(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[512], path[520] = "";
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(path, sizeof path, "%s", strcmp(line + 3, "/") == 0 ? "" : line + 3);
        }
    fclose(f);
    char file[600];
    snprintf(file, sizeof file, "/sys/fs/cgroup%s/memory.max", path);
    int64_t max = read_number(file);
    snprintf(file, sizeof file, "/sys/fs/cgroup%s/memory.current", path);
    int64_t cur = read_number(file);
    if (max < 0 || cur < 0) return -1;
    return max > cur ? max - cur : 0;
}

/* The bytes kiln may allocate: --max-memory when given, else the memory available to
 * this process (MemAvailable in /proc/meminfo, lowered by a cgroup v2 memory.max), or
 * −1 when unknown. *source says which. */
static int64_t limits_budget(const char **source)
{
    int64_t v;
    if (limits_max_memory && limits_parse_bytes(limits_max_memory, &v)) {
        *source = "--max-memory";
        return v;
    }
    int64_t avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = (int64_t)kb * 1024;
        fclose(f);
    }
    *source = "the available memory (MemAvailable)";
    int64_t cg = cgroup_headroom();
    if (cg >= 0 && (avail < 0 || cg < avail)) {
        avail = cg;
        *source = "what this cgroup may still use (memory.max)";
    }
    return avail;
}

/* "1.5 GiB"-style text of n bytes into buf. */
static const char *limits_format(int64_t n, char *buf, size_t cap)
{
    static const char *unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, u++;
    if (u == 0) snprintf(buf, cap, "%lld bytes", (long long)n);
    else snprintf(buf, cap, "%.1f %s", v, unit[u]);
    return buf;
}

/* What to call node id in a message: a parameter's or input's name, else its label, else
 * its op and origin. */
static void describe(const kiln_graph *g, uint32_t id, char *buf, size_t cap)
{
    const kiln_node *n = &g->nodes[id];
    char t[160];
    kiln_type_str(&n->type, t, sizeof t);
    bool named = n->op == KILN_OP_PARAM || n->op == KILN_OP_INPUT || n->op == KILN_OP_STATE;
    const char *name = named ? n->attrs.name : n->label;
    if (name) snprintf(buf, cap, "%s %s", name, t);
    else snprintf(buf, cap, "%s %s in %s", kiln_op_table[n->op].name, t, n->origin ? n->origin : "the step");
}

/* Refuses (one diagnostic, false) a plan needing `need` bytes over the budget, naming the
 * figure, its parts and the three largest tensors of g. `parts` is e.g.
 * "parameters 40.0 MiB + workspace 1.2 GiB". */
static bool limits_check(const kiln_graph *g, int64_t need, const char *parts, const char *what, kiln_diags *d)
{
    const char *source;
    int64_t budget = limits_budget(&source);
    if (budget < 0 || need <= budget) return true;
    /* the three largest tensors (a reshape shares its source's bytes: skipped) */
    uint32_t top[3] = {KILN_NONE, KILN_NONE, KILN_NONE};
    for (uint32_t id = 0; id < g->n_nodes; id++) {
        if (g->nodes[id].op == KILN_OP_RESHAPE) continue;
        int64_t sz = kiln_type_numel(&g->nodes[id].type);
        for (int k = 0; k < 3; k++) {
            if (top[k] != KILN_NONE && sz <= kiln_type_numel(&g->nodes[top[k]].type)) continue;
            for (int j = 2; j > k; j--) top[j] = top[j - 1];
            top[k] = id;
            break;
        }
    }
    char need_s[32], budget_s[32], list[800] = "";
    size_t at = 0;
    for (int k = 0; k < 3 && top[k] != KILN_NONE; k++) {
        char big[240], sz[32];
        describe(g, top[k], big, sizeof big);
        limits_format(kiln_type_numel(&g->nodes[top[k]].type) * KILN_ELEM_BYTES, sz, sizeof sz);
        int w = snprintf(list + at, sizeof list - at, "%s%s (%s)", k ? ", " : "", big, sz);
        if (w > 0 && (size_t)w < sizeof list - at) at += (size_t)w;
    }
    kiln_diags_add(d, NULL, 0, 0, what,
                   "needs %s (%s) but %s is %s: refused before allocating. The largest tensors: %s. A smaller batch, "
                   "a shorter sequence (-D), or --checkpoint-activations when training shrink what is planned",
                   limits_format(need, need_s, sizeof need_s), parts, source,
                   limits_format(budget, budget_s, sizeof budget_s), list);
    return false;
}

bool limits_check_blobs(const kiln_graph *g, int64_t params, int64_t optim, int64_t workspace, int64_t io,
                        const char *what, kiln_diags *d)
{
    char parts[240], a[32], b[32], c[32], e[32];
    int n = snprintf(parts, sizeof parts, "parameters %s", limits_format(params, a, sizeof a));
    if (optim > 0)
        n += snprintf(parts + n, sizeof parts - (size_t)n, " + %s %s",
                      what && strcmp(what, "generate") == 0 ? "KV cache" : "optimizer state",
                      limits_format(optim, b, sizeof b));
    if (workspace > 0)
        n += snprintf(parts + n, sizeof parts - (size_t)n, " + workspace %s", limits_format(workspace, c, sizeof c));
    if (io > 0)
        snprintf(parts + n, sizeof parts - (size_t)n, " + inputs and outputs %s", limits_format(io, e, sizeof e));
    return limits_check(g, params + optim + workspace + io, parts, what, d);
}
