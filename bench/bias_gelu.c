/* bias_gelu.c — the separate bias + gelu pass a library GEMM needs where kiln fuses it.
 *
 * gemm_bench times "library GEMM, then this pass" against kiln's GEMM with the bias and
 * gelu_tanh applied in the store of each C tile. To make that a fair baseline the pass
 * is what a careful C programmer would write: one sweep over C, compiled with -O3
 * -march=native -ffast-math (bench/CMakeLists.txt) so that GCC vectorises the loop and
 * calls glibc's vector expf (libmvec), threaded with OpenMP over rows with the GEMM's
 * thread count and a static split. gelu_tanh(x) = 0.5·x·(1 + tanh(u)) with
 * u = √(2/π)·(x + 0.044715·x³), written as x·σ(2u) (the form kiln uses: one exp, no
 * tanh) with σ(z) = 1 / (1 + e^−|z|) or e^−|z| / (1 + e^−|z|) by the sign of z, so the
 * exponential never overflows (-ffast-math assumes no infinities, and GCC's vector
 * division turns x / inf into NaN).
 */
#include <math.h>
#include <stdint.h>

#include "bias_gelu.h"

void bench_bias_gelu(float *c, const float *bias, int64_t m, int64_t n, int64_t ldc, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *row = c + i * ldc;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float x = row[j] + bias[j];
            float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
            float z = 2.0f * u, e = expf(-fabsf(z));
            float sigma = (z >= 0 ? 1.0f : e) / (1.0f + e);
            row[j] = x * sigma;
        }
    }
}

int bench_bias_gelu_threaded(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
