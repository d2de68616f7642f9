/* tile_ceiling.c — how fast a GEMM built on kiln's register tile can be on this core, at
 * most: the tile's k loop written with intrinsics (the instruction mix kiln emits for
 * AVX-512: per k step two B vectors, twelve broadcasts of A, 24 FMAs into 12×32
 * accumulators) timed where its operands live in L1, in L2, and over a whole block of
 * packed operands with C in memory, each as a share of the FMA peak measured in the same
 * process, interleaved.
 *
 *   tile_ceiling [--quick]
 *
 * Why: at one thread kiln's GEMM and oneDNN's both run at 85–92 % of the FMA peak
 * (docs/performance.md), and issue 9 asks kiln's fused GEMM to beat oneDNN's plus a
 * separate pass by 10 %, which on large k means a plain GEMM ~5 % faster than oneDNN's.
 * This program says how much room the tile leaves: a GEMM cannot beat its k loop over
 * packed operands, and packing and C only add to that.
 *
 * Each figure is the best of many short runs (~1–3 ms), as in fma_peak.c: other work on a
 * shared machine can only slow a run down. The cases run in turn, round after round, so
 * the machine's speed drifts alike for all. AVX-512 only (the tile kiln uses there); on
 * other machines it says so and exits 77 (skipped).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__AVX512F__)
#include <immintrin.h>

enum { MR = 12, NR = 32, CHAINS = 16 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The peak: independent FMA chains in registers (fma_peak.c's loop, one thread). */
static __attribute__((noinline)) float fma_chains(long iters) {
    __m512 acc[CHAINS], m = _mm512_set1_ps(0.5f), c = _mm512_set1_ps(1.0f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

/* One tile: C[12×32] += A sliver (kc × 12, packed) · B sliver (kc × 32, packed), C's
 * rows ldc apart, prefetched for writing before the k loop as kiln's tile does. The 24
 * accumulators are named variables, not an array: GCC 12 kept an array __m512 acc[12][2]
 * on the stack and copied registers inside the k loop, and the tile then read 2–3 % of the
 * peak lower than the same loop written in assembly or compiled by clang (2026-12-07,
 * AMD Zen 4), so the "ceiling" measured GCC instead of the tile. */
#define ACC_ROW(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
#define ACC_STEP(i)                                                                                    \
    {                                                                                                  \
        __m512 av = _mm512_set1_ps(a[MR * q + i]);                                                      \
        c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);                                                    \
        c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);                                                    \
    }
#define ACC_OUT(i)                                                                                     \
    _mm512_storeu_ps(c + ldc * i, _mm512_add_ps(_mm512_loadu_ps(c + ldc * i), c##i##0));             \
    _mm512_storeu_ps(c + ldc * i + 16, _mm512_add_ps(_mm512_loadu_ps(c + ldc * i + 16), c##i##1));
#define ACC_ROWS(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)

static __attribute__((noinline)) void tile(const float *a, const float *b, float *c, long ldc, long kc) {
    _Static_assert(MR == 12 && NR == 32, "ACC_ROWS names 12 rows of 2 vectors");
    ACC_ROWS(ACC_ROW)
    for (int i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + ldc * i), _MM_HINT_ET0);
        _mm_prefetch((const char *)(c + ldc * i + 16), _MM_HINT_ET0);
    }
    for (long q = 0; q < kc; q++) {
        __m512 b0 = _mm512_load_ps(b + NR * q), b1 = _mm512_load_ps(b + NR * q + 16);
        ACC_ROWS(ACC_STEP)
    }
    ACC_ROWS(ACC_OUT)
}

/* A block walk as kiln's loop nest runs it (gemm.c): for each A sliver (held in L1 while
 * it lasts), every B sliver of the block (streamed from L2). mc × nc × kc, C mc × ldc. */
static void block(const float *a, const float *b, float *c, long ldc, long mc, long nc, long kc) {
    for (long ir = 0; ir < mc; ir += MR)
        for (long jr = 0; jr < nc; jr += NR) tile(a + ir * kc, b + jr * kc, c + ir * ldc + jr, ldc, kc);
}

typedef struct ceiling_case {
    const char *name, *what;
    long mc, nc, kc, cols;  /* block; C's columns (its row stride); 0 mc: the FMA chains */
    long blocks;            /* distinct C blocks written in turn (C in memory when large) */
    double best;            /* GFLOP/s */
    float *a, *b, *c;
} ceiling_case;

static float *filled(long n, float scale) {
    float *p = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
    if (!p) {
        fprintf(stderr, "tile_ceiling: out of memory\n");
        exit(1);
    }
    for (long i = 0; i < n; i++) p[i] = scale * (float)(i % 7 - 3);
    return p;
}

/* One timed run of a case; returns GFLOP/s. `next` rotates over its C blocks. */
static double run(ceiling_case *cc, long *next) {
    double t0, t, flops;
    if (cc->mc == 0) {
        long iters = 1 << 18; /* ~0.6 ms */
        t0 = now();
        volatile float sink = fma_chains(iters);
        (void)sink;
        t = now() - t0;
        flops = 2.0 * 16 * CHAINS * (double)iters;
    } else {
        double per_block = 2.0 * (double)(cc->mc * cc->nc * cc->kc);
        long reps = (long)(2e8 / per_block) + 1; /* ~1 ms */
        t0 = now();
        for (long r = 0; r < reps; r++) {
            float *c = cc->c + *next * cc->mc * cc->cols;
            *next = (*next + 1) % cc->blocks;
            block(cc->a, cc->b, c, cc->cols, cc->mc, cc->nc, cc->kc);
        }
        t = now() - t0;
        flops = per_block * (double)reps;
    }
    return flops / t * 1e-9;
}

int main(int argc, char **argv) {
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    ceiling_case cases[] = {
        {"FMA chains", "16 independent chains in registers: the peak", 0, 0, 0, 0, 1, 0, NULL, NULL, NULL},
        {"tile, L1", "12x32 tile, kc=192: A sliver 9 KiB and B sliver 24 KiB stay in L1", 12, 32, 192, 32, 1, 0,
         NULL, NULL, NULL},
        {"tile walk, L2", "96 x 320 x 384 block: A slivers held, ten B slivers (480 KiB) streamed from L2, C 120 KiB",
         96, 320, 384, 320, 1, 0, NULL, NULL, NULL},
        {"block walk, C in memory", "960 x 320 x 384 blocks (kiln's GEMM_MC/NC/KC), C blocks of 1.2 MiB in turn over 48 MiB",
         960, 320, 384, 320, 40, 0, NULL, NULL, NULL},
    };
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 1; i < ncases; i++) {
        ceiling_case *cc = &cases[i];
        cc->a = filled(cc->mc * cc->kc, 1e-3f);
        cc->b = filled(cc->nc * cc->kc, 1e-3f);
        cc->c = filled(cc->blocks * cc->mc * cc->cols, 0.0f);
        cc->best = 0;
    }
    int rounds = quick ? 3 : 200;
    long next[8] = {0};
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < ncases; i++) {
            double g = run(&cases[i], &next[i]);
            if (g > cases[i].best) cases[i].best = g;
        }
    printf("tile_ceiling: kiln's AVX-512 register tile (12x32, 2 B vectors + 12 broadcasts per k step), 1 thread,\n"
           "best of %d interleaved rounds; share = of the FMA chains' rate measured in the same rounds\n",
           rounds);
    for (int i = 0; i < ncases; i++)
        printf("  %-24s %7.1f GFLOP/s  %5.1f %% of the peak  (%s)\n", cases[i].name, cases[i].best,
               100.0 * cases[i].best / cases[0].best, cases[i].what);
    for (int i = 1; i < ncases; i++) {
        free(cases[i].a);
        free(cases[i].b);
        free(cases[i].c);
    }
    return 0;
}
#else
int main(void) {
    printf("tile_ceiling: measures kiln's AVX-512 tile; this build has no AVX-512: skipped\n");
    return 77;
}
#endif
