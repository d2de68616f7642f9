/* profile.c — per-kernel times for `kiln bench --per-kernel`.
 *
 * Design. An entry compiled with kiln_compile_request.profile calls kiln_profile_mark(k)
 * just before it calls kernel k, kiln_profile_mark(n_kernels) before its final copies and
 * kiln_profile_mark(-1) before it returns. A mark closes the slot the previous mark
 * opened (adding the monotonic time between them, in nanoseconds, and counting one call)
 * and opens its own. Kernels are synchronous — a kernel that splits its work over the
 * thread pool returns only when every chunk is done — so the wall time between two marks
 * on the calling thread is the kernel's time, whatever the thread count. A mark costs one
 * vDSO clock read (tens of nanoseconds): a few microseconds per step of ~300 kernels.
 *
 * One static record, no locking: one profiled entry runs at a time, marks come from the
 * thread that called the entry. The driver links this file; exported libraries do not
 * (CMakeLists.txt's kiln_export_runtime lists its files), and codegen never emits a mark
 * for them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/runtime.h"

static struct {
    int64_t *ns, *calls;  /* per slot: summed nanoseconds and the number of times it closed */
    int n;
    int open;             /* the slot the last mark opened, or -1 */
    int64_t since;        /* when it opened */
} prof = {NULL, NULL, 0, -1, 0};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int kiln_profile_start(int n_slots)
{
    kiln_profile_stop();
    if (n_slots < 1) return 1;
    prof.ns = calloc((size_t)n_slots, sizeof *prof.ns);
    prof.calls = calloc((size_t)n_slots, sizeof *prof.calls);
    if (!prof.ns || !prof.calls) {
        kiln_profile_stop();
        return 1;
    }
    prof.n = n_slots;
    return 0;
}

void kiln_profile_reset(void)
{
    if (prof.ns) memset(prof.ns, 0, (size_t)prof.n * sizeof *prof.ns);
    if (prof.calls) memset(prof.calls, 0, (size_t)prof.n * sizeof *prof.calls);
    prof.open = -1;
}

void kiln_profile_mark(int slot)
{
    int64_t t = now_ns();
    if (prof.open >= 0 && prof.open < prof.n) {
        prof.ns[prof.open] += t - prof.since;
        prof.calls[prof.open]++;
    }
    prof.open = slot;
    prof.since = t;
}

const int64_t *kiln_profile_ns(void) { return prof.ns; }

const int64_t *kiln_profile_calls(void) { return prof.calls; }

void kiln_profile_stop(void)
{
    free(prof.ns);
    free(prof.calls);
    prof.ns = prof.calls = NULL;
    prof.n = 0;
    prof.open = -1;
}
