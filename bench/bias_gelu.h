/* bias_gelu.h — the baseline's separate epilogue pass (bias_gelu.c). */
#ifndef KILN_BENCH_BIAS_GELU_H
#define KILN_BENCH_BIAS_GELU_H

#include <stdint.h>

/* C[i·ldc + j] = gelu_tanh(C[i·ldc + j] + bias[j]) for the m×n matrix C, on `threads`
 * OpenMP threads (rows split statically). */
void bench_bias_gelu(float *c, const float *bias, int64_t m, int64_t n, int64_t ldc, int threads);

/* 1 when the pass was built with OpenMP (it runs on `threads` threads), else 0 (one). */
int bench_bias_gelu_threaded(void);

#endif
