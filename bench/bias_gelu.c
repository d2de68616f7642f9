/* bias_gelu.c — the separate bias + gelu pass a library GEMM needs where kiln fuses it.
 *
 * gemm_bench times "library GEMM, then this pass" against kiln's GEMM with the bias and
 * gelu_tanh applied in the store of each C tile. To make that a fair baseline the pass
 * is what a careful C programmer would write: one sweep over C, compiled with -O3
 * -march=native -ffast-math (bench/CMakeLists.txt) so that GCC vectorises the loop and
 * calls glibc's vector expf (libmvec). gelu_tanh(x) = 0.5·x·(1 + tanh(u)) with
 * u = √(2/π)·(x + 0.044715·x³), written as x·σ(2u) (the form kiln uses: one exp, no
 * tanh) with σ(z) = 1 / (1 + e^−|z|) or e^−|z| / (1 + e^−|z|) by the sign of z, so the
 * exponential never overflows (-ffast-math assumes no infinities, and GCC's vector
 * division turns x / inf into NaN).
 *
 * Threads: the rows are split over kiln's runtime pool (kiln_parallel_for), on as many
 * threads as the GEMM, rather than OpenMP. The pool lets the calling thread run the
 * chunks of a worker that is still asleep, while an OpenMP team (and OpenBLAS's own
 * pthreads, spinning after its GEMM) waits for every thread; on a shared 2-core machine
 * that wait, not the pass, dominated the measured time (an OpenMP pass made the
 * libraries' 2-thread figures 5–10× slower). The pass should cost what its work costs.
 */
#include <math.h>
#include <stdint.h>

#include "bias_gelu.h"
#include "kiln/runtime.h"

typedef struct pass {
    float *c;
    const float *bias;
    int64_t n, ldc;
} pass;

static void rows(void *ctx, int64_t begin, int64_t end) {
    const pass *p = ctx;
    for (int64_t i = begin; i < end; i++) {
        float *row = p->c + i * p->ldc;
        const float *bias = p->bias;
        for (int64_t j = 0; j < p->n; j++) {
            float x = row[j] + bias[j];
            float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
            float z = 2.0f * u, e = expf(-fabsf(z));
            float sigma = (z >= 0 ? 1.0f : e) / (1.0f + e);
            row[j] = x * sigma;
        }
    }
}

void bench_bias_gelu(float *c, const float *bias, int64_t m, int64_t n, int64_t ldc) {
    pass p = {c, bias, n, ldc};
    kiln_parallel_for(rows, &p, m);
}
