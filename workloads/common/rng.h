/* Deterministic random numbers: xoshiro256** seeded through splitmix64.
 * Every workload draws from generators seeded by (--seed, stream), never
 * from time or addresses, so a run repeats exactly under any allocator. */
#ifndef WL_RNG_H
#define WL_RNG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} wl_rng_t;

static inline uint64_t wl_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Distinct streams of one seed are independent: each thread or lineage of
 * a workload takes its own stream so that its draws do not depend on how
 * the threads interleave. */
static inline void wl_rng_seed(wl_rng_t *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++)
        r->s[i] = wl_splitmix64(&x);
}

static inline uint64_t wl_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t wl_rng_next(wl_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = wl_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = wl_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n) by multiply-shift; the bias (at most n / 2^64) is far
 * below anything a workload could notice. */
static inline uint64_t wl_rng_below(wl_rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)wl_rng_next(r) * n) >> 64);
}

/* Uniform in [lo, hi], inclusive. */
static inline uint64_t wl_rng_range(wl_rng_t *r, uint64_t lo, uint64_t hi)
{
    return lo + wl_rng_below(r, hi - lo + 1);
}

/* Uniform in [0, 1) with 53 bits. */
static inline double wl_rng_unit(wl_rng_t *r)
{
    return (double)(wl_rng_next(r) >> 11) * 0x1.0p-53;
}

static inline bool wl_rng_chance(wl_rng_t *r, double p)
{
    return wl_rng_unit(r) < p;
}

#endif
