/* distributed.h — data-parallel training across processes on MPI (docs/distributed.md).
 *
 * `mpirun -np N kiln train …` starts N ranks; each computes the gradients of its own
 * shard of every global batch, the gradients are averaged across ranks, and every rank
 * applies the same update. This is the whole interface the training loop sees: the
 * only file including mpi.h is distributed.c, which also has a build without MPI (CMake
 * found no MPI) where every entry behaves as for a single process, and asking for more
 * than one rank is a clear error.
 */
#ifndef KILN_DISTRIBUTED_H
#define KILN_DISTRIBUTED_H

#include <stdbool.h>
#include <stdint.h>

#include "diag.h"

typedef struct dist {
    int rank, size;        /* 0 and 1 for a single process */
    bool mpi;              /* MPI was initialised here (dist_finalize ends it) */
    double timeout;        /* seconds a rank may wait for the others (MPI_Init, start-up, a step, the end) */
    void *watchdog;        /* private: the watchdog thread's state */
} dist;

/* Joins the job when started by an MPI launcher (or `required`: --distributed): MPI_Init,
 * rank and size, and a watchdog thread (over MPI_Init, which waits for every rank, then
 * over the steps' dist_* collectives). Otherwise a single process (rank 0 of 1). Fails
 * with a diagnostic when more than one rank, or `required`, meets a kiln built without
 * MPI. */
bool dist_init(dist *ds, bool required, double timeout, kiln_diags *d);
/* Ends MPI. When ok, first waits for every rank to arrive (so that no rank leaves while
 * another still needs it), for at most the timeout: false, with a diagnostic naming the
 * ranks that did not come, if one is gone or hung (MPI is then left to the launcher to
 * end). A failed rank (!ok) leaves at once without MPI_Finalize. */
bool dist_finalize(dist *ds, bool ok, kiln_diags *d);

/* 64-bit FNV-1a, to fingerprint what must be equal on every rank. */
uint64_t dist_hash(uint64_t h, const void *p, size_t n);
#define DIST_HASH_INIT 0xcbf29ce484222325ull

/* Start-up check: n fingerprints (what[i] names each: "the model file", …) must be equal
 * on every rank. A mismatch is a diagnostic naming what differs and on which ranks; so
 * is a rank that has not arrived within the timeout (stopped or hung while it loads or
 * compiles): the others do not wait for it without end. */
bool dist_check_same(const dist *ds, const uint64_t *hashes, const char *const *what, int n, kiln_diags *d);

/* One step's status agreed by all ranks: *loss becomes the mean of the ranks' losses,
 * *failed the largest failure code, *stop the largest signal number (so that every rank
 * leaves the loop at the same step), *nonfinite the largest of the ranks' values (the
 * non-finite guard's code: every rank skips or stops at the same step). A collective,
 * under the watchdog. */
void dist_step_status(const dist *ds, int64_t step, float *loss, int *failed, int *stop, int *nonfinite);

/* Averaging n floats x[0 … n) across ranks in place, bucket by bucket: bucket b is
 * x[lo[b] … lo[b] + count[b]), the buckets cover x, and every rank starts them in the
 * same order b = 0, 1, … (one MPI_Iallreduce, MPI_SUM, each), possibly while it still
 * computes the later ones' gradients (dataparallel.c). */
#define DIST_BUCKET_BYTES ((int64_t)4 << 20)
typedef struct dist_average_op {
    float *x;
    int64_t n;
    const int64_t *lo, *count;
    int n_buckets, started;
    void *requests;        /* private: one MPI_Request per bucket */
} dist_average_op;
/* A step's average over these buckets (nothing is sent yet). */
void dist_average_begin(const dist *ds, dist_average_op *op, float *x, int64_t n, const int64_t *lo,
                        const int64_t *count, int n_buckets);
/* Starts the next bucket (op->started), its gradients being final on this rank. */
void dist_average_start(const dist *ds, dist_average_op *op);
/* Lets the library move the started buckets along (MPI_Testall): without calls into MPI
 * nothing progresses between the start and the wait. Cheap; never blocks. */
void dist_average_progress(const dist *ds, dist_average_op *op);
/* Starts the buckets not started yet, waits for all (under the watchdog), then ×1/N. */
void dist_average_end(const dist *ds, int64_t step, dist_average_op *op);
void dist_average_free(dist_average_op *op);

#endif
