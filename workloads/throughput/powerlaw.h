/* Object sizes with a power-law spread: the density of size s falls as
 * s^-alpha between --min and --max, so small objects are common and large
 * ones rare, as in the heaps of most programs (alpha 1 is log-uniform:
 * as many objects of 8-16 bytes as of 512-1024).
 *
 * Sizes come from a table of quantiles filled once, so that a draw costs a
 * random number and one load instead of a pow(): the replacement loops
 * that use it measure the allocator, and pow() would take about as long as
 * malloc itself. 4096 quantiles are finer than any size-class boundary
 * below 64 KiB is coarse, so the table changes no class frequencies
 * measurably. */
#ifndef WL_POWERLAW_H
#define WL_POWERLAW_H

#include <math.h>
#include <stdint.h>

#include "rng.h"

#define WL_POWERLAW_QUANTILES 4096
_Static_assert(WL_POWERLAW_QUANTILES == 1 << 12, "wl_powerlaw_draw takes 12 bits");

typedef struct {
    uint32_t size[WL_POWERLAW_QUANTILES];
} wl_powerlaw_t;

/* Quantile k is the inverse distribution function at the middle of the
 * k-th of QUANTILES equal slices of probability. Requires 1 <= lo <= hi. */
static inline void wl_powerlaw_init(wl_powerlaw_t *t, uint32_t lo, uint32_t hi, double alpha)
{
    double a = 1 - alpha;
    for (int k = 0; k < WL_POWERLAW_QUANTILES; k++) {
        double u = (k + 0.5) / WL_POWERLAW_QUANTILES;
        double s;
        if (fabs(a) < 1e-9)
            s = lo * pow((double)hi / lo, u);
        else
            s = pow(pow(lo, a) + u * (pow(hi, a) - pow(lo, a)), 1 / a);
        s = floor(s + 0.5);
        t->size[k] = s < lo ? lo : s > hi ? hi : (uint32_t)s;
    }
}

static inline uint32_t wl_powerlaw_draw(const wl_powerlaw_t *t, wl_rng_t *rng)
{
    return t->size[wl_rng_next(rng) >> (64 - 12)];
}

/* The mean of the table: the expected object size. */
static inline double wl_powerlaw_mean(const wl_powerlaw_t *t)
{
    double sum = 0;
    for (int k = 0; k < WL_POWERLAW_QUANTILES; k++)
        sum += t->size[k];
    return sum / WL_POWERLAW_QUANTILES;
}

#endif
