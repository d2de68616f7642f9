/* fma_peak.c — the machine's measured floating-point peak: independent FMA chains on the
 * widest vectors the compiler was told about (-march=native), on 1 and on N threads.
 *
 *   fma_peak [--quick] [--json] [THREADS...]      (default threads: 1 and 2)
 *
 * Design: each thread runs CHAINS independent accumulators a = a·m + c (one FMA each per
 * iteration) for a fixed number of iterations; with more chains than FMA latency ×
 * FMA ports (4 × 2 on current x86 cores) the FMA units never wait for a result, so the
 * loop runs at the FMA throughput and nothing else (no memory traffic: everything is in
 * registers). m < 1 and c > 0 keep the values at a fixed point near c / (1 − m), far from
 * overflow and denormals. A run (~2 ms) is timed by the wall clock from its first thread's
 * start to its last thread's end, all threads released together; the best of many
 * runs is the peak. Runs are short so that on a shared machine some of them run
 * uninterrupted (a 0.2 s run is cut by other processes' time slices and measured half
 * the peak here); other work can only make a run slower, so the best is the machine's.
 * GFLOP/s counts 2 FLOPs per lane per FMA.
 *
 * This is the ceiling every other figure in bench/ is a fraction of: a GEMM micro-kernel
 * at this rate is at the FMA limit, and no kernel can beat it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CHAINS = 16, MAX_THREADS = 64 };

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#if defined(__AVX512F__)
typedef __m512 vec;
#define VEC_LANES 16
#define VEC_NAME "AVX-512 (zmm)"
#define vset1(x) _mm512_set1_ps(x)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vadd(a, b) _mm512_add_ps(a, b)
static float vsum(vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vec;
#define VEC_LANES 8
#define VEC_NAME "AVX2 (ymm)"
#define vset1(x) _mm256_set1_ps(x)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vadd(a, b) _mm256_add_ps(a, b)
static float vsum(vec v) {
    float f[8];
    _mm256_storeu_ps(f, v);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#else
/* No FMA instructions known to the compiler: a multiply and an add per chain step. */
typedef float vec;
#define VEC_LANES 1
#define VEC_NAME "scalar (no FMA)"
#define vset1(x) (x)
#define vfma(a, b, c) ((a) * (b) + (c))
#define vadd(a, b) ((a) + (b))
static float vsum(vec v) { return v; }
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CHAINS independent FMA chains for `iters` iterations; the sum keeps them alive. */
static __attribute__((noinline)) float fma_chains(long iters, float seed) {
    vec a[CHAINS];
    for (int j = 0; j < CHAINS; j++) a[j] = vset1(seed + (float)j);
    const vec m = vset1(0.999f), c = vset1(1e-3f);
    for (long i = 0; i < iters; i++) {
        /* written out so that every accumulator stays in a register */
        a[0] = vfma(a[0], m, c), a[1] = vfma(a[1], m, c), a[2] = vfma(a[2], m, c), a[3] = vfma(a[3], m, c);
        a[4] = vfma(a[4], m, c), a[5] = vfma(a[5], m, c), a[6] = vfma(a[6], m, c), a[7] = vfma(a[7], m, c);
        a[8] = vfma(a[8], m, c), a[9] = vfma(a[9], m, c), a[10] = vfma(a[10], m, c), a[11] = vfma(a[11], m, c);
        a[12] = vfma(a[12], m, c), a[13] = vfma(a[13], m, c), a[14] = vfma(a[14], m, c), a[15] = vfma(a[15], m, c);
    }
    vec s = a[0];
    for (int j = 1; j < CHAINS; j++) s = vadd(s, a[j]);
    return vsum(s);
}

/* The threads of one measurement. Thread 0 starts each run by bumping `go`; the others
 * spin on it (a sleeping thread takes tens of microseconds to wake, which would be
 * counted) and report their end through `finished`. Each thread notes when its chains
 * started and ended; the run's time is last end − first start. */
typedef struct team {
    atomic_int go, finished;
    int threads, runs;
    long iters;
    double t0[MAX_THREADS], t1[MAX_THREADS], best;  /* best: GFLOP/s */
    float result[MAX_THREADS];
} team;

typedef struct member {
    team *tm;
    int t;
} member;

static void run_chains(team *tm, int t) {
    tm->t0[t] = now();
    tm->result[t] = fma_chains(tm->iters, 1.0f + (float)t);
    tm->t1[t] = now();
}

static void *helper(void *p) {
    member *me = p;
    team *tm = me->tm;
    for (int r = 1; r <= tm->runs; r++) {
        while (atomic_load_explicit(&tm->go, memory_order_acquire) < r) cpu_relax();
        run_chains(tm, me->t);
        atomic_fetch_add_explicit(&tm->finished, 1, memory_order_release);
    }
    return NULL;
}

/* Best GFLOP/s over `runs` runs of `threads` threads, `iters` iterations each. */
static double peak(int threads, long iters, int runs) {
    team tm = {.threads = threads, .runs = runs, .iters = iters};
    pthread_t tid[MAX_THREADS];
    member members[MAX_THREADS];
    for (int t = 1; t < threads; t++) {
        members[t] = (member){&tm, t};
        pthread_create(&tid[t], NULL, helper, &members[t]);
    }
    for (int r = 1; r <= runs; r++) {
        atomic_store_explicit(&tm.go, r, memory_order_release);
        run_chains(&tm, 0);
        while (atomic_load_explicit(&tm.finished, memory_order_acquire) < r * (threads - 1)) cpu_relax();
        double first = tm.t0[0], last = tm.t1[0];
        for (int t = 1; t < threads; t++) {
            if (tm.t0[t] < first) first = tm.t0[t];
            if (tm.t1[t] > last) last = tm.t1[t];
        }
        for (int t = 0; t < threads; t++)
            if (!(tm.result[t] > 0)) {  /* a broken loop, not a slow one */
                fprintf(stderr, "fma_peak: unexpected result %g\n", tm.result[t]);
                exit(1);
            }
        double g = 2.0 * VEC_LANES * CHAINS * (double)iters * threads / (last - first) * 1e-9;
        if (g > tm.best) tm.best = g;
    }
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    return tm.best;
}

int main(int argc, char **argv) {
    bool quick = false, json = false;
    int threads[16], n_threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (strcmp(argv[i], "--json") == 0) json = true;
        else if (n_threads < 16 && atoi(argv[i]) >= 1 && atoi(argv[i]) <= MAX_THREADS) threads[n_threads++] = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: fma_peak [--quick] [--json] [THREADS...]\n");
            return 2;
        }
    }
    if (n_threads == 0) threads[n_threads++] = 1, threads[n_threads++] = 2;
    /* Runs of ~2 ms (at 4 GHz and 2 FMAs per cycle): shorter than a scheduler time slice,
     * so on a shared machine some runs are not interrupted; the best of many is kept. */
    long iters = 1L << 20;
    int repeats = quick ? 20 : 150;
    if (json) printf("{\"vector\": \"%s\", \"lanes\": %d, \"gflops\": {", VEC_NAME, VEC_LANES);
    else printf("FMA peak: %d independent FMA chains of %s, float32, best of %d runs\n", CHAINS, VEC_NAME, repeats);
    for (int i = 0; i < n_threads; i++) {
        double g = peak(threads[i], iters, repeats);
        if (json) printf("%s\"%d\": %.2f", i ? ", " : "", threads[i], g);
        else printf("  %d thread%s: %8.1f GFLOP/s\n", threads[i], threads[i] > 1 ? "s" : " ", g);
    }
    if (json) printf("}}\n");
    return 0;
}
