/* kiln/rng.h — the random numbers kiln uses everywhere (parameter init, dropout, data
 * order, sampling): xoshiro256** seeded through splitmix64, so that a seed gives the
 * same numbers on every machine and in exported code. The state is plain data and can
 * be saved in a checkpoint and restored exactly. */
#ifndef KILN_RNG_H
#define KILN_RNG_H

#include <stdint.h>

typedef struct kiln_rng {
    uint64_t s[4];
} kiln_rng;

/* A stream for (seed, name): different names give independent streams, so adding a
 * parameter to a model does not change the initial values of the others. name may be
 * NULL. */
void kiln_rng_seed(kiln_rng *r, uint64_t seed, const char *name);
uint64_t kiln_rng_next(kiln_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double kiln_rng_uniform(kiln_rng *r);
/* Standard normal (Box–Muller; consumes two uniforms per call, no cached spare so the
 * state alone determines the sequence). */
double kiln_rng_normal(kiln_rng *r);

#endif
