/* rng.c — xoshiro256** with splitmix64 seeding (see kiln/rng.h for why). */
#include "kiln/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void kiln_rng_seed(kiln_rng *r, uint64_t seed, const char *name)
{
    /* FNV-1a of the name folded into the seed */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; p && *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    uint64_t x = seed ^ (name ? h : 0);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kiln_rng_next(kiln_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double kiln_rng_uniform(kiln_rng *r) { return (double)(kiln_rng_next(r) >> 11) * 0x1.0p-53; }

double kiln_rng_normal(kiln_rng *r)
{
    double u1 = kiln_rng_uniform(r), u2 = kiln_rng_uniform(r);
    if (u1 < 0x1.0p-60) u1 = 0x1.0p-60; /* log(0) guard */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
