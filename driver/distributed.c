/* distributed.c — the MPI side of data-parallel training (distributed.h,
 * docs/distributed.md). The only file that includes mpi.h; built without
 * KILN_HAVE_MPI it keeps the interface and is a single process.
 *
 * Collectives. A step makes two kinds: the gradient average, the gradient area in
 * buckets of about DIST_BUCKET_BYTES, one MPI_Iallreduce each, started one by one while
 * the backward pass still computes later buckets' gradients (dataparallel.c) and all
 * waited for at the end (the library pipelines them; one huge message would be one long
 * dependency chain), then scaled by 1/N in place; and a small MPI_Allreduce of the
 * step's status (loss, failure, signal, non-finite gradients), so that every rank leaves
 * the loop, or skips the update, at the same step whatever happened on one of them.
 * Non-blocking collectives progress only inside MPI calls: dist_average_progress
 * (MPI_Testall) is called between kernels to keep the started buckets moving.
 *
 * Faults. Open MPI's default error handler (errors are fatal) and mpirun, which kills
 * the job when a rank exits without MPI_Finalize, cover a rank that dies. A rank that
 * hangs (or a network that stalls without an error) would leave the others waiting in
 * a collective forever, so a watchdog thread stops the process when one of the step's
 * collectives has waited longer than --dist-timeout seconds: it prints which step and
 * which collective, then _exit(1) (no MPI call: the thread is not MPI's), and mpirun
 * takes the rest of the job down. Checkpoints are written atomically by rank 0 between
 * collectives, so the last one stays valid.
 *
 * Start and end. The start-up check and the end of the run are meetings (meet): every
 * rank sends a few words to every other with point-to-point messages and polls for
 * theirs, for at most --dist-timeout seconds. Unlike an MPI_Allgather or MPI_Barrier,
 * which would wait forever for a rank stopped while it loads or compiles (or hung while
 * rank 0 saves the last checkpoint), it knows whose message is missing, so the error
 * names the ranks that did not arrive. N·(N−1) small messages, once each. MPI_Init,
 * which also waits for every rank, is under the watchdog thread (started before it).
 *
 * Threads: MPI_THREAD_FUNNELED — only the main thread calls MPI; the runtime's pool
 * threads run kernels and the watchdog only reads the clock.
 */
#include "distributed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/runtime.h"

uint64_t dist_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The world size the MPI launcher announced in the environment (OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE, PMIX… as Open MPI, MPICH and Slurm set them), or 0 when not launched. */
static int dist_launched_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    /* Open MPI 4 under PMIx sets OMPI_COMM_WORLD_SIZE; a bare PMIx launcher sets PMIX_RANK */
    return getenv("PMIX_RANK") ? 1 : 0;
}

#ifdef KILN_HAVE_MPI

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

typedef struct watchdog {
    pthread_t thread;
    atomic_llong since_ms;     /* when the current collective started (0: none) */
    atomic_llong step;
    atomic_int what;           /* 0 status, 1 gradients, 2 MPI_Init */
    atomic_bool quit;
    double timeout;
    atomic_int rank;           /* before MPI_Init: the launcher's word for it */
} watchdog;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watch(void *arg)
{
    watchdog *w = arg;
    while (!atomic_load(&w->quit)) {
        struct timespec nap = {0, 200 * 1000000};
        nanosleep(&nap, NULL);
        long long since = atomic_load(&w->since_ms);
        if (since && (double)(now_ms() - since) > w->timeout * 1000) {
            int what = atomic_load(&w->what);
            if (what == 2)
                fprintf(stderr,
                        "kiln train: rank %d: joining the job (MPI_Init) has waited %.0f s for the other ranks "
                        "(--dist-timeout): a rank is gone or hung; stopping.\n",
                        atomic_load(&w->rank), w->timeout);
            else
                fprintf(stderr,
                        "kiln train: rank %d: the %s of step %lld has waited %.0f s for the other ranks "
                        "(--dist-timeout): a rank is gone or hung; stopping. The last checkpoint is intact.\n",
                        atomic_load(&w->rank), what ? "gradient average" : "step status",
                        (long long)atomic_load(&w->step), w->timeout);
            fflush(stderr);
            _exit(1); /* mpirun then ends the other ranks */
        }
    }
    return NULL;
}

static void arm(const dist *ds, int64_t step, int what)
{
    watchdog *w = ds->watchdog;
    if (!w) return;
    atomic_store(&w->step, step);
    atomic_store(&w->what, what);
    atomic_store(&w->since_ms, now_ms());
}

static void disarm(const dist *ds)
{
    watchdog *w = ds->watchdog;
    if (w) atomic_store(&w->since_ms, 0);
}

/* Every rank sends mine[0 … n) to every other and receives theirs into all[r·n …] (its
 * own included), polling until all have arrived or ds->timeout seconds have passed;
 * then a diagnostic names the ranks missing `what`. The messages are sent eagerly (a
 * few words), so a rank that arrived and left does not need the others to progress. */
static bool meet(const dist *ds, int tag, const char *what, const uint64_t *mine, int n, uint64_t *all,
                 kiln_diags *d)
{
    int size = ds->size, k = 0;
    MPI_Request *req = malloc(2 * (size_t)size * sizeof *req);
    KILN_ASSERT(req != NULL);
    memcpy(all + (size_t)ds->rank * n, mine, (size_t)n * sizeof *all);
    for (int r = 0; r < size; r++)
        if (r != ds->rank) MPI_Irecv(all + (size_t)r * n, n, MPI_UINT64_T, r, tag, MPI_COMM_WORLD, &req[k++]);
    int n_recv = k;
    for (int r = 0; r < size; r++)
        if (r != ds->rank) MPI_Isend(mine, n, MPI_UINT64_T, r, tag, MPI_COMM_WORLD, &req[k++]);
    long long start = now_ms();
    for (;;) {
        int pending = 0; /* MPI_Test frees a finished request (MPI_REQUEST_NULL then tests as done) */
        for (int i = 0; i < k; i++) {
            int done = 0;
            MPI_Test(&req[i], &done, MPI_STATUS_IGNORE);
            pending += !done;
        }
        if (!pending) break;
        if ((double)(now_ms() - start) > ds->timeout * 1000) {
            char ranks[200] = "";
            size_t len = 0;
            int missing = 0;
            for (int i = 0; i < n_recv; i++) {
                int r = i < ds->rank ? i : i + 1; /* receive i is from rank r */
                if (req[i] == MPI_REQUEST_NULL) continue;
                if (missing++ < 8 && len < sizeof ranks - 16)
                    len += (size_t)snprintf(ranks + len, sizeof ranks - len, "%s%d", missing > 1 ? ", " : "", r);
            }
            if (missing > 8) snprintf(ranks + len, sizeof ranks - len, ", …");
            kiln_diags_add(d, NULL, 0, 0, "distributed",
                           "rank %d: %s %s %s not reached %s after %.0f s (--dist-timeout): %s gone or hung; "
                           "stopping", ds->rank, missing > 1 ? "ranks" : "rank", missing ? ranks : "another",
                           missing > 1 ? "have" : "has", what, ds->timeout, missing > 1 ? "they are" : "it is");
            free(req); /* the job ends: the requests are left to it */
            return false;
        }
        struct timespec nap = {0, 2 * 1000000};
        nanosleep(&nap, NULL);
    }
    free(req);
    return true;
}

static void stop_watchdog(dist *ds)
{
    watchdog *w = ds->watchdog;
    if (!w) return;
    atomic_store(&w->quit, true);
    pthread_join(w->thread, NULL);
    free(w);
    ds->watchdog = NULL;
}

/* The rank the launcher announced (before MPI_Init can say it), or 0. */
static int launched_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return atoi(getenv(vars[i]));
    return 0;
}

bool dist_init(dist *ds, bool required, double timeout, kiln_diags *d)
{
    memset(ds, 0, sizeof *ds);
    ds->size = 1;
    ds->timeout = timeout;
    if (!required && dist_launched_size() == 0) return true;
    /* the watchdog first: MPI_Init waits for every rank of the job, and one stopped in
     * its own start would keep the others in it for ever */
    if (dist_launched_size() > 1 && timeout > 0) {
        watchdog *w = calloc(1, sizeof *w);
        KILN_ASSERT(w != NULL);
        w->timeout = timeout;
        atomic_store(&w->rank, launched_rank());
        if (pthread_create(&w->thread, NULL, watch, w) != 0) {
            free(w);
            kiln_diags_add(d, NULL, 0, 0, "distributed", "cannot start the watchdog thread");
            return false;
        }
        ds->watchdog = w;
        arm(ds, 0, 2);
    }
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        stop_watchdog(ds);
        kiln_diags_add(d, NULL, 0, 0, "distributed", "MPI_Init failed");
        return false;
    }
    disarm(ds);
    ds->mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &ds->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ds->size);
    if (ds->watchdog) atomic_store(&((watchdog *)ds->watchdog)->rank, ds->rank);
    return true;
}

enum { TAG_START = 1, TAG_END = 2 };

bool dist_finalize(dist *ds, bool ok, kiln_diags *d)
{
    stop_watchdog(ds);
    if (!ds->mpi) return true;
    /* A failed rank leaves without MPI_Finalize: finalizing waits for every rank, which
     * may be blocked in a collective waiting for this one. Exiting (non-zero) without it
     * makes mpirun end the whole job with a message naming the rank. */
    if (!ok) return true;
    /* every rank here (MPI_Finalize would wait for a hung one without end) */
    if (ds->size > 1) {
        uint64_t here = 1, *all = malloc((size_t)ds->size * sizeof *all);
        KILN_ASSERT(all != NULL);
        bool met = meet(ds, TAG_END, "the end of the run", &here, 1, all, d);
        free(all);
        if (!met) return false;
    }
    MPI_Finalize();
    ds->mpi = false;
    return true;
}

bool dist_check_same(const dist *ds, const uint64_t *hashes, const char *const *what, int n, kiln_diags *d)
{
    if (ds->size < 2) return true;
    uint64_t *all = malloc((size_t)ds->size * (size_t)n * sizeof *all);
    KILN_ASSERT(all != NULL);
    if (!meet(ds, TAG_START, "the start-up check", hashes, n, all, d)) {
        free(all);
        return false;
    }
    bool same = true;
    for (int i = 0; i < n; i++) {
        char ranks[200] = "";
        size_t len = 0;
        int differ = 0;
        for (int r = 1; r < ds->size; r++) {
            if (all[(size_t)r * n + i] == all[i]) continue;
            if (differ++ < 8 && len < sizeof ranks - 16)
                len += (size_t)snprintf(ranks + len, sizeof ranks - len, "%s%d", differ > 1 ? ", " : "", r);
        }
        if (!differ) continue;
        same = false;
        if (differ > 8) snprintf(ranks + len, sizeof ranks - len, ", …");
        kiln_diags_add(d, NULL, 0, 0, "distributed",
                       "%s differs between ranks: rank%s %s disagree%s with rank 0 (every rank must be started with "
                       "the same model file, data and flags)",
                       what[i], differ > 1 ? "s" : "", ranks, differ > 1 ? "" : "s");
    }
    free(all);
    return same;
}

void dist_step_status(const dist *ds, int64_t step, float *loss, int *failed, int *stop, int *nonfinite)
{
    if (ds->size < 2) return;
    double sum[1] = {*loss}, out_sum[1];
    int mx[3] = {*failed, *stop, *nonfinite}, out_mx[3];
    arm(ds, step, 0);
    MPI_Request req[2];
    MPI_Iallreduce(sum, out_sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req[0]);
    MPI_Iallreduce(mx, out_mx, 3, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &req[1]);
    MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
    disarm(ds);
    *loss = (float)(out_sum[0] / ds->size);
    *failed = out_mx[0];
    *stop = out_mx[1];
    *nonfinite = out_mx[2];
}

void dist_average_begin(const dist *ds, dist_average_op *op, float *x, int64_t n, const int64_t *lo,
                        const int64_t *count, int n_buckets)
{
    (void)ds;
    if (!op->requests || op->n_buckets < n_buckets) {
        free(op->requests);
        op->requests = malloc((size_t)(n_buckets ? n_buckets : 1) * sizeof(MPI_Request));
        KILN_ASSERT(op->requests != NULL);
    }
    op->x = x;
    op->n = n;
    op->lo = lo;
    op->count = count;
    op->n_buckets = n_buckets;
    op->started = 0;
}

void dist_average_start(const dist *ds, dist_average_op *op)
{
    KILN_ASSERT(op->started < op->n_buckets);
    int b = op->started++;
    MPI_Request *req = op->requests;
    if (ds->size < 2) {
        req[b] = MPI_REQUEST_NULL;
        return;
    }
    MPI_Iallreduce(MPI_IN_PLACE, op->x + op->lo[b], (int)op->count[b], MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req[b]);
}

void dist_average_progress(const dist *ds, dist_average_op *op)
{
    if (ds->size < 2 || op->started == 0) return;
    int done = 0;
    MPI_Testall(op->started, op->requests, &done, MPI_STATUSES_IGNORE);
}

void dist_average_end(const dist *ds, int64_t step, dist_average_op *op)
{
    while (op->started < op->n_buckets) dist_average_start(ds, op);
    if (ds->size < 2) return;
    arm(ds, step, 1);
    MPI_Waitall(op->n_buckets, op->requests, MPI_STATUSES_IGNORE);
    disarm(ds);
    /* the mean: ×1/N is exact when N is a power of two */
    float inv = 1.0f / (float)ds->size;
    for (int64_t i = 0; i < op->n; i++) op->x[i] *= inv;
}

void dist_average_free(dist_average_op *op)
{
    free(op->requests);
    memset(op, 0, sizeof *op);
}

#else /* no MPI: one process */

bool dist_init(dist *ds, bool required, double timeout, kiln_diags *d)
{
    memset(ds, 0, sizeof *ds);
    ds->size = 1;
    ds->timeout = timeout;
    int launched = dist_launched_size();
    if (required || launched > 1) {
        kiln_diags_add(d, NULL, 0, 0, "distributed",
                       "distributed training is unavailable: this kiln was built without MPI%s (install Open MPI, "
                       "e.g. Debian's libopenmpi-dev and openmpi-bin, and rebuild; docs/distributed.md)",
                       launched > 1 ? ", but mpirun started it as one of several ranks" : "");
        return false;
    }
    return true;
}

bool dist_finalize(dist *ds, bool ok, kiln_diags *d) { return true; }

bool dist_check_same(const dist *ds, const uint64_t *hashes, const char *const *what, int n, kiln_diags *d)
{
    return true;
}

void dist_step_status(const dist *ds, int64_t step, float *loss, int *failed, int *stop, int *nonfinite) {}

void dist_average_begin(const dist *ds, dist_average_op *op, float *x, int64_t n, const int64_t *lo,
                        const int64_t *count, int n_buckets)
{
    op->x = x, op->n = n, op->lo = lo, op->count = count, op->n_buckets = n_buckets, op->started = 0;
}
void dist_average_start(const dist *ds, dist_average_op *op) { op->started++; }
void dist_average_progress(const dist *ds, dist_average_op *op) {}
void dist_average_end(const dist *ds, int64_t step, dist_average_op *op) { op->started = op->n_buckets; }
void dist_average_free(dist_average_op *op) { memset(op, 0, sizeof *op); }

#endif
