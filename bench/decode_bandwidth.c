/* decode_bandwidth.c — the machine's memory read bandwidth, the limit of batch-1 decoding.
 *
 *   decode_bandwidth [--quick] [--json] [--mb N] [THREADS...]     (default: 1 2)
 *
 * Decoding one token reads every weight once (and the KV cache so far): matrix–vector
 * work, bound by how fast memory streams into the cores. This program measures that rate
 * the way the decode step reads: a buffer much larger than the last-level cache (default
 * 512 MiB; --quick 128 MiB) is cut into slices of 64 MiB (twice the 32 MiB L3 of the
 * development machine, so a slice never comes from cache after the one before it), and
 * each pass sums the next slice with the widest vector loads, split into one contiguous
 * part per thread; the fastest of many passes gives GB/s (10^9 bytes per second). Short
 * passes (a few ms) are what make "fastest" meaningful on a busy machine: one pass can
 * run whole inside a time slice. The sum is printed so the loads cannot be optimised away.
 *
 * decode_bench.py divides the bytes one decode step must read by this figure to get the
 * bandwidth limit in tokens/s. Best of several passes, because on a shared machine a pass
 * can lose its core; the threads start together at a barrier for every pass.
 */
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct part {
    const float *p;
    size_t n;     /* floats, a multiple of 64 */
    size_t stride; /* floats from one slice to the next */
    int slices;
    double sum;
    pthread_barrier_t *start;
    int passes;
    double *seconds; /* [passes]: this thread's end time of each pass (CLOCK_MONOTONIC) */
} part;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Four independent accumulators of the widest vector: the loads, not the adds, limit. */
static double sum_floats(const float *p, size_t n)
{
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    return (double)_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return (double)t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
#else
    double s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
#endif
}

static void *reader(void *arg)
{
    part *pt = arg;
    for (int r = 0; r < pt->passes; r++) {
        pthread_barrier_wait(pt->start);
        pt->sum += sum_floats(pt->p + (size_t)(r % pt->slices) * pt->stride, pt->n);
        double end = now();
        __atomic_store(&pt->seconds[r], &end, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* GB/s of the fastest of `passes` passes over buf[0..n) on `threads` threads. */
static double measure(const float *buf, size_t n, size_t slice, int threads, int passes, double *checksum)
{
    int slices = (int)(n / slice);
    pthread_t tid[64];
    part parts[64];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    size_t chunk = (slice / (size_t)threads) / 64 * 64;
    for (int t = 0; t < threads; t++) {
        parts[t] = (part){buf + (size_t)t * chunk, chunk, slice, slices, 0, &start, passes,
                          calloc((size_t)passes, sizeof(double))};
        pthread_create(&tid[t], NULL, reader, &parts[t]);
    }
    double best = 0;
    double *t0 = calloc((size_t)passes, sizeof *t0);
    for (int r = 0; r < passes; r++) {
        /* the previous pass must be over before this one starts: wait for every end time */
        if (r > 0)
            for (int t = 0; t < threads; t++)
                for (double end = 0; end == 0; sched_yield()) __atomic_load(&parts[t].seconds[r - 1], &end, __ATOMIC_ACQUIRE);
        t0[r] = now();
        pthread_barrier_wait(&start);
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    for (int r = 0; r < passes; r++) {
        double end = 0;
        for (int t = 0; t < threads; t++) end = parts[t].seconds[r] > end ? parts[t].seconds[r] : end;
        double gbs = (double)(chunk * (size_t)threads * sizeof(float)) / (end - t0[r]) / 1e9;
        best = gbs > best ? gbs : best;
    }
    for (int t = 0; t < threads; t++) {
        *checksum += parts[t].sum;
        free(parts[t].seconds);
    }
    free(t0);
    pthread_barrier_destroy(&start);
    return best;
}

int main(int argc, char **argv)
{
    int quick = 0, json = 0, threads[16], n_threads = 0;
    long mb = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atol(argv[++i]);
        else if (atoi(argv[i]) >= 1 && atoi(argv[i]) <= 64 && n_threads < 16) threads[n_threads++] = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: decode_bandwidth [--quick] [--json] [--mb N] [THREADS...]\n");
            return 2;
        }
    }
    if (!n_threads) threads[n_threads++] = 1, threads[n_threads++] = 2;
    if (mb <= 0) mb = quick ? 128 : 512;
    size_t bytes = (size_t)mb << 20, n = bytes / sizeof(float);
    float *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "decode_bandwidth: cannot allocate %ld MiB\n", mb);
        return 1;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f; /* touch every page */
    size_t slice = ((size_t)64 << 20) / sizeof(float);
    if (slice > n / 2) slice = n / 2;
    int passes = quick ? 16 : 64;
    double checksum = 0, gbs[16];
    for (int i = 0; i < n_threads; i++) gbs[i] = measure(buf, n, slice, threads[i], passes, &checksum);
    if (json) {
        printf("{\"mib\": %ld, \"slice_mib\": %zu, \"passes\": %d, \"gbs\": {", mb, (slice * sizeof(float)) >> 20, passes);
        for (int i = 0; i < n_threads; i++) printf("%s\"%d\": %.3f", i ? ", " : "", threads[i], gbs[i]);
        printf("}, \"checksum\": %.6g}\n", checksum);
    } else {
        for (int i = 0; i < n_threads; i++)
            printf("read bandwidth, %d thread%s: %7.2f GB/s  (%ld MiB buffer, best of %d passes over %zu MiB slices)\n",
                   threads[i], threads[i] > 1 ? "s" : " ", gbs[i], mb, passes, (slice * sizeof(float)) >> 20);
        printf("(checksum %.6g)\n", checksum);
    }
    free(buf);
    return 0;
}
