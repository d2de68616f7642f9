/* threads.c — the persistent thread pool behind kiln_parallel_for.
 *
 * Design. kiln_threads_set(n) starts n − 1 workers once. kiln_parallel_for cuts
 * [0, n_items) into up to 4·n contiguous chunks and every thread — the caller and each
 * worker that is awake — claims chunks from an atomic counter until none is left. Which
 * thread runs a chunk depends on timing, but never what is computed: compiled kernels
 * hand over items that are independent and computed the same way in any chunk (see
 * cg_parallel_for in codegen/lower.h), so results are bit-identical whatever the thread
 * count and timing. Claiming matters on a busy machine: a worker that sleeps takes about
 * 100 µs to wake, and the caller no longer waits for it when it can run the chunks itself.
 * A call allocates nothing: the job (fn, ctx, n_items, chunks) sits in the pool's one
 * static record.
 *
 * Hand-off. The caller publishes the job, resets the claim and done counters, and bumps
 * `generation`; workers wait for a new generation (spinning briefly, then sleeping on a
 * condition variable), then claim chunks. The caller returns when every chunk is done
 * (`done` = chunks), waiting the same way. A worker that wakes after its job is over
 * finds no chunk left, or claims a chunk of the next job, which it then runs with that
 * job's record: the counters are reset only after the record is written, and a job's
 * record is not replaced until all its chunks are done. generation is bumped under the
 * mutex, and the worker that completes the last chunk signals under it, so no wake-up is
 * lost.
 *
 * Nesting. A kiln_parallel_for made while a job is running (from inside fn, or from
 * another thread) runs inline on the calling thread: the workers are busy, and waiting
 * for them would deadlock. A flag, not thread-local storage: TLS in an exported library
 * would need __tls_get_addr from the dynamic loader, and exported libraries promise
 * libc, libm and pthreads only.
 *
 * kiln_threads_set must not race with kiln_parallel_for; the driver and exported
 * libraries call it between runs. libc and pthreads only (it is in exported libraries).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "kiln/runtime.h"

enum { SPIN_ROUNDS = 1 << 11 };  /* ~0.1 ms of pause: longer than a hand-off, shorter than a GEMM step */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t start, done_cv;
    int n;  /* threads taking part, the caller included; 1 = no workers */
    pthread_t workers[KILN_MAX_THREADS - 1];
    bool quit;
    uint_fast64_t created_at;  /* generation when the workers started */
    /* the current job, written before generation is bumped */
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
    int64_t n_items;
    int chunks;
    atomic_uint_fast64_t generation;
    /* the claim word: (chunks << 32) | next chunk to claim, replaced whole for each job,
     * so a claim can never mix one job's count with another's */
    atomic_uint_fast64_t claim;
    atomic_int done;     /* chunks finished */
    atomic_bool busy;    /* a job is running: further calls run inline */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER, .done_cv = PTHREAD_COND_INITIALIZER, .n = 1};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Claims and runs chunks of the current job until none is left. A successful claim is
 * of the job whose record is in the pool, and that record stays until the chunk is done. */
static void run_chunks(void) {
    uint_fast64_t c = atomic_load(&pool.claim);
    for (;;) {
        int i = (int)(c & 0xffffffffu), chunks = (int)(c >> 32);
        if (i >= chunks) return;
        if (!atomic_compare_exchange_weak(&pool.claim, &c, c + 1)) continue;  /* c reloaded */
        int64_t begin = pool.n_items * i / chunks, end = pool.n_items * (i + 1) / chunks;
        if (begin < end) pool.fn(pool.ctx, begin, end);
        if (atomic_fetch_add(&pool.done, 1) == chunks - 1) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done_cv);
            pthread_mutex_unlock(&pool.mu);
        }
        c = atomic_load(&pool.claim);
    }
}

static void *worker_main(void *arg) {
    (void)arg;
    uint_fast64_t seen = pool.created_at;  /* not a fresh load: a job may already be out */
    for (;;) {
        uint_fast64_t g = seen;
        for (int s = 0; s < SPIN_ROUNDS && (g = atomic_load(&pool.generation)) == seen; s++) cpu_relax();
        if (g == seen) {
            pthread_mutex_lock(&pool.mu);
            while ((g = atomic_load(&pool.generation)) == seen && !pool.quit) pthread_cond_wait(&pool.start, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
        if (g == seen) return NULL;  /* quit, no job */
        seen = g;
        run_chunks();
    }
}

static void stop_workers(void) {
    pthread_mutex_lock(&pool.mu);
    pool.quit = true;
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.n - 1; i++) pthread_join(pool.workers[i], NULL);
    pool.quit = false;
    pool.n = 1;
}

int kiln_threads_set(int n) {
    if (n < 1) return 1;
    if (n > KILN_MAX_THREADS) n = KILN_MAX_THREADS;
    if (n == pool.n) return 0;
    stop_workers();
    int started = 0;
    pool.created_at = atomic_load(&pool.generation);
    for (; started < n - 1; started++) {
        /* workers read pool.n only inside a job, so it may be set after they start */
        if (pthread_create(&pool.workers[started], NULL, worker_main, (void *)(intptr_t)(started + 1)) != 0) break;
    }
    pool.n = started + 1;
    if (started == n - 1) return 0;
    stop_workers();  /* a worker could not be created: fall back to running inline */
    return 1;
}

int kiln_threads_get(void) { return pool.n; }

void kiln_parallel_for(void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx, int64_t n_items) {
    if (n_items <= 0) return;
    if (pool.n == 1 || n_items == 1 || atomic_exchange(&pool.busy, true)) {
        fn(ctx, 0, n_items);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n_items = n_items;
    pool.chunks = (int)(n_items < 4 * pool.n ? n_items : 4 * pool.n);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.claim, (uint_fast64_t)pool.chunks << 32);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.mu);

    run_chunks();

    for (int s = 0; s < SPIN_ROUNDS && atomic_load(&pool.done) != pool.chunks; s++) cpu_relax();
    if (atomic_load(&pool.done) != pool.chunks) {
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.done) != pool.chunks) pthread_cond_wait(&pool.done_cv, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
    atomic_store(&pool.busy, false);
}
