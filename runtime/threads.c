/* threads.c — the persistent thread pool behind kiln_parallel_for.
 *
 * Design. kiln_threads_set(n) starts n − 1 workers once; kiln_parallel_for then splits
 * [0, n_items) into n contiguous chunks fixed by (n_items, n) alone — chunk i is
 * [n_items·i/n, n_items·(i+1)/n) — so which items a call sees never depends on timing.
 * The calling thread runs chunk 0 and worker i−1 runs chunk i. A call allocates nothing:
 * the job (fn, ctx, n_items) sits in the pool's one static record.
 *
 * Hand-off. The caller publishes the job and bumps `generation`; workers wait for a new
 * generation, run their chunk, and decrement `pending`; the caller waits for pending = 0.
 * Both waits spin briefly first (a GEMM is microseconds to milliseconds, and a sleeping
 * worker takes tens of microseconds to wake) and then sleep on a condition variable, so
 * idle workers cost no CPU. Both counters change under the mutex only where a sleeper may
 * depend on them, so no wake-up is lost: generation is bumped under it, and a worker that
 * brings pending to 0 signals under it.
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
    pthread_cond_t start, done;
    int n;  /* threads taking part, the caller included; 1 = no workers */
    pthread_t workers[KILN_MAX_THREADS - 1];
    bool quit;
    uint_fast64_t created_at;  /* generation when the workers started */
    /* the current job, written before generation is bumped */
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
    int64_t n_items;
    atomic_uint_fast64_t generation;
    atomic_int pending;  /* workers yet to finish the current job */
    atomic_bool busy;    /* a job is running: further calls run inline */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER, .n = 1};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_chunk(int i, int parts) {
    int64_t begin = pool.n_items * i / parts, end = pool.n_items * (i + 1) / parts;
    if (begin < end) pool.fn(pool.ctx, begin, end);
}

static void *worker_main(void *arg) {
    int index = (int)(intptr_t)arg;  /* chunk index, 1 .. n-1 */
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
        run_chunk(index, pool.n);
        if (atomic_fetch_sub(&pool.pending, 1) == 1) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
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
    atomic_store(&pool.pending, pool.n - 1);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.mu);

    run_chunk(0, pool.n);

    for (int s = 0; s < SPIN_ROUNDS && atomic_load(&pool.pending) != 0; s++) cpu_relax();
    if (atomic_load(&pool.pending) != 0) {
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.pending) != 0) pthread_cond_wait(&pool.done, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
    atomic_store(&pool.busy, false);
}
