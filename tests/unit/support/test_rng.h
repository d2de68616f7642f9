/* test_rng.h — the unit tests' seeded random numbers (splitmix64): the same draws on
 * every machine, so a failing case can be replayed from its seed. */
#ifndef KILN_TEST_RNG_H
#define KILN_TEST_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s;
} rng;

uint64_t rng_next(rng *r);
double rng_uniform(rng *r);               /* [0, 1) */
int rng_int(rng *r, int lo, int hi);      /* [lo, hi] */
double rng_normal(rng *r);                /* N(0, 1), Box–Muller */

#endif
