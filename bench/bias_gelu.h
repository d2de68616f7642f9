/* bias_gelu.h — the baseline's separate epilogue pass (bias_gelu.c). */
#ifndef KILN_BENCH_BIAS_GELU_H
#define KILN_BENCH_BIAS_GELU_H

#include <stdint.h>

/* C[i·ldc + j] = gelu_tanh(C[i·ldc + j] + bias[j]) for the m×n matrix C, rows split over
 * kiln's runtime pool (as many threads as kiln_threads_set gave it). */
void bench_bias_gelu(float *c, const float *bias, int64_t m, int64_t n, int64_t ldc);

#endif
