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
 * Two phases (kiln_parallel_for2). One hand-off for two jobs where the second needs the
 * first done (a GEMM: pack the shared operand by slivers, then the parts that read it).
 * The claim word counts the first job's chunks and then the second's, so a thread claims
 * all of phase 1 before any of phase 2; a thread with a phase-2 chunk waits until `done`
 * reaches phase 1's chunk count — which only phase-1 completions can reach, since no
 * phase-2 chunk completes before it — so it waits only for chunks that are claimed and
 * running. A late worker finds everything claimed, as with one job: nothing waits for a
 * thread that has not started (a fixed team with a barrier did, and on an oversubscribed
 * machine a GEMM then waited for its descheduled worker: docs/performance.md).
 *
 * Statistics (kiln_threads_stats): off by default; when on, every call counts its
 * chunks by who ran them, the workers' and the caller's sleeps, and the nanoseconds from
 * publishing a job to a worker's first look at it and from the caller's last chunk to the
 * job's end, and the workers' first looks made on the CPU the caller published from (the
 * two threads then take turns on one CPU), the ns from publishing to the end of phase 1,
 * and the CPU ns (the thread's CPU clock: preemption does not count) spent in phase 1's
 * chunks (a GEMM's packing of its shared operand) and by the caller and the workers in
 * all chunks, the wall ns of the same, and the wall ns phase-2 chunks waited for phase 1
 * — what gemm_bench --pool-stats prints per GEMM call.
 *
 * kiln_threads_set must not race with kiln_parallel_for; the driver and exported
 * libraries call it between runs. The workers are joined at exit and when an exported
 * .so is unloaded (a destructor), and a forked child forgets its parent's (pthread_atfork).
 * libc and pthreads only (it is in exported libraries).
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE  /* sched_getcpu (statistics only) */
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "kiln/runtime.h"

/* ~37 µs of pause here: longer than a hand-off, shorter than a GEMM step. Longer spins
 * were tried on 2026-12-06 (2 ms after every job; while the job runs plus 200 µs; the
 * same, cut short when a spinner found it had been descheduled): at load 6–8 each made the
 * char_gpt forward pass 1.3–2.5× slower than this (a spinning worker holds a share of a
 * CPU that the job's other thread, or another process, needs), and no quiet machine was
 * available to measure what they gain there (docs/performance.md). */
enum { SPIN_ROUNDS = 1 << 11 };

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
    /* phase 2 of a kiln_parallel_for2 (chunks2 = 0 otherwise): chunks [chunks1, chunks) */
    void (*fn2)(void *ctx, int64_t begin, int64_t end);
    int64_t n_items2;
    int chunks1;
    /* statistics (kiln_threads_stats) */
    atomic_bool stats_on;
    atomic_uint_fast64_t publish_ns;  /* when the current job was published (stats only) */
    atomic_int caller_cpu;            /* the CPU it was published from (stats only) */
    atomic_uint_fast64_t st[KILN_THREADS_STATS];
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER, .done_cv = PTHREAD_COND_INITIALIZER, .n = 1};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

enum { ST_CALLS, ST_CALLER_CHUNKS, ST_WORKER_CHUNKS, ST_WORKER_SLEEPS, ST_CALLER_SLEEPS, ST_START_NS, ST_TAIL_NS,
       ST_SAME_CPU, ST_PHASE1_NS, ST_PHASE1_RUN_NS, ST_CALLER_RUN_NS, ST_WORKER_RUN_NS, ST_CALLER_WALL_NS,
       ST_WORKER_WALL_NS, ST_PHASE_WAIT_NS };

static inline int current_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/* CPU time of the calling thread: what a chunk's work cost, which preemption on a busy
 * machine does not inflate (statistics only) */
static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline bool stats_on(void) { return atomic_load_explicit(&pool.stats_on, memory_order_relaxed); }
static inline void stat_add(int i, uint64_t v) { atomic_fetch_add_explicit(&pool.st[i], v, memory_order_relaxed); }

static int finish_one(int count);

/* Claims and runs chunks of the current job until none is left. A successful claim is
 * of the job whose record is in the pool, and that record stays until the chunk is done.
 * Chunks past chunks1 are phase 2's: they wait for phase 1's to be done (see the top). */
static void run_chunks(bool caller) {
    uint_fast64_t c = atomic_load(&pool.claim);
    for (;;) {
        int i = (int)(c & 0xffffffffu), chunks = (int)(c >> 32);
        if (i >= chunks) return;
        if (!atomic_compare_exchange_weak(&pool.claim, &c, c + 1)) continue;  /* c reloaded */
        int c1 = pool.chunks1;
        uint64_t t0 = stats_on() ? cpu_ns() : 0, w0 = stats_on() ? now_ns() : 0;
        if (i < c1) {
            int64_t begin = pool.n_items * i / c1, end = pool.n_items * (i + 1) / c1;
            if (begin < end) pool.fn(pool.ctx, begin, end);
            if (stats_on()) stat_add(ST_PHASE1_RUN_NS, cpu_ns() - t0);
        } else {
            for (int s = 0; atomic_load(&pool.done) < c1; s++) {
                if (s < SPIN_ROUNDS) cpu_relax();
                else sched_yield();  /* the thread finishing phase 1 was descheduled */
            }
            if (stats_on()) {  /* the wait for phase 1 is not the chunk's work */
                uint64_t w = now_ns();
                stat_add(ST_PHASE_WAIT_NS, w - w0);
                t0 = cpu_ns(), w0 = w;
            }
            int j = i - c1, c2 = chunks - c1;
            int64_t begin = pool.n_items2 * j / c2, end = pool.n_items2 * (j + 1) / c2;
            if (begin < end) pool.fn2(pool.ctx, begin, end);
        }
        if (stats_on()) {
            uint64_t t1 = now_ns(), published = atomic_load_explicit(&pool.publish_ns, memory_order_relaxed);
            stat_add(caller ? ST_CALLER_CHUNKS : ST_WORKER_CHUNKS, 1);
            stat_add(caller ? ST_CALLER_RUN_NS : ST_WORKER_RUN_NS, cpu_ns() - t0);
            stat_add(caller ? ST_CALLER_WALL_NS : ST_WORKER_WALL_NS, t1 - w0);
            if (finish_one(chunks) == c1 - 1 && i < c1 && c1 < chunks)  /* phase 1's last chunk */
                stat_add(ST_PHASE1_NS, t1 - published);
        } else {
            finish_one(chunks);
        }
        c = atomic_load(&pool.claim);
    }
}

/* A job is over when `done` reaches its count; the thread that gets it there wakes the
 * caller in case it sleeps. Returns the count of chunks done before this one. */
static int finish_one(int count) {
    int before = atomic_fetch_add(&pool.done, 1);
    if (before == count - 1) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_signal(&pool.done_cv);
        pthread_mutex_unlock(&pool.mu);
    }
    return before;  /* chunks done before this one */
}

static void *worker_main(void *arg) {
    (void)arg;
    uint_fast64_t seen = pool.created_at;  /* not a fresh load: a job may already be out */
    for (;;) {
        uint_fast64_t g = seen;
        for (int s = 0; s < SPIN_ROUNDS && (g = atomic_load(&pool.generation)) == seen; s++) cpu_relax();
        if (g == seen) {
            if (stats_on()) stat_add(ST_WORKER_SLEEPS, 1);
            pthread_mutex_lock(&pool.mu);
            while ((g = atomic_load(&pool.generation)) == seen && !pool.quit) pthread_cond_wait(&pool.start, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
        if (g == seen) return NULL;  /* quit, no job */
        seen = g;
        if (stats_on()) {
            stat_add(ST_START_NS, now_ns() - atomic_load_explicit(&pool.publish_ns, memory_order_relaxed));
            int cpu = atomic_load_explicit(&pool.caller_cpu, memory_order_relaxed);
            if (cpu >= 0 && cpu == current_cpu()) stat_add(ST_SAME_CPU, 1);  /* sharing the caller's CPU */
        }
        run_chunks(false);
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

/* A forked child has only the thread that forked: the pool's workers stay in the parent.
 * Without this the child would wait forever to join them (kiln_threads_set, or
 * unload_pool at its exit). The mutex and condition variables start over too, since a
 * parent thread may have held the mutex at the fork. */
static void forget_workers_in_child(void) {
    pool.n = 1;
    pool.quit = false;
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.start, NULL);
    pthread_cond_init(&pool.done_cv, NULL);
}

/* Workers are stopped when the code holding them goes away: at exit, and when a program
 * dlclose()s an exported .so (its workers would otherwise run on in unmapped code and
 * crash or hang the program). Idle workers leave at once; a worker inside a chunk
 * finishes it first. */
__attribute__((destructor)) static void unload_pool(void) {
    if (pool.n > 1) stop_workers();
}

int kiln_threads_set(int n) {
    if (n < 1) return 1;
    if (n > KILN_MAX_THREADS) n = KILN_MAX_THREADS;
    if (n == pool.n) return 0;
    static bool fork_handled;
    if (!fork_handled) fork_handled = pthread_atfork(NULL, NULL, forget_workers_in_child) == 0;
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

/* Publishes the job whose record the caller has written: generation bumped under the
 * mutex so that no sleeping worker misses it. */
static void publish(void) {
    if (stats_on()) {
        stat_add(ST_CALLS, 1);
        atomic_store_explicit(&pool.publish_ns, now_ns(), memory_order_relaxed);
        atomic_store_explicit(&pool.caller_cpu, current_cpu(), memory_order_relaxed);
    }
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.mu);
}

/* The caller, its own share done, waits until `done` reaches count. */
static void wait_done(int count) {
    uint64_t t0 = stats_on() ? now_ns() : 0;
    for (int s = 0; s < SPIN_ROUNDS && atomic_load(&pool.done) != count; s++) cpu_relax();
    if (atomic_load(&pool.done) != count) {
        if (stats_on()) stat_add(ST_CALLER_SLEEPS, 1);
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.done) != count) pthread_cond_wait(&pool.done_cv, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
    if (stats_on()) stat_add(ST_TAIL_NS, now_ns() - t0);
    atomic_store(&pool.busy, false);
}

static int chunks_for(int64_t n_items) { return (int)(n_items < 4 * pool.n ? n_items : 4 * pool.n); }

void kiln_parallel_for(void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx, int64_t n_items) {
    kiln_parallel_for2(fn, n_items, NULL, 0, ctx);
}

void kiln_parallel_for2(void (*fn1)(void *ctx, int64_t begin, int64_t end), int64_t n1,
                        void (*fn2)(void *ctx, int64_t begin, int64_t end), int64_t n2, void *ctx) {
    if (n1 < 0) n1 = 0;
    if (!fn2 || n2 < 0) n2 = 0;
    if (n1 + n2 == 0) return;
    if (pool.n == 1 || (n1 <= 1 && n2 <= 1) || atomic_exchange(&pool.busy, true)) {
        if (n1 > 0) fn1(ctx, 0, n1);
        if (n2 > 0) fn2(ctx, 0, n2);
        return;
    }
    pool.fn = fn1;
    pool.ctx = ctx;
    pool.n_items = n1;
    pool.chunks1 = n1 > 0 ? chunks_for(n1) : 0;
    pool.fn2 = fn2;
    pool.n_items2 = n2;
    int chunks = pool.chunks1 + (n2 > 0 ? chunks_for(n2) : 0);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.claim, (uint_fast64_t)chunks << 32);
    publish();
    run_chunks(true);
    wait_done(chunks);
}

void kiln_threads_stats(int64_t out[KILN_THREADS_STATS], int enable) {
    if (out)
        for (int i = 0; i < KILN_THREADS_STATS; i++) out[i] = (int64_t)atomic_exchange(&pool.st[i], 0);
    atomic_store(&pool.stats_on, enable != 0);
}
