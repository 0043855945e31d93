/* tests/support/rng.h */
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

uint64_t th_rng_next(th_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double th_rng_uniform(th_rng *r)
{
    return (double)(th_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

double th_rng_normal(th_rng *r)
{
    double u = 1.0 - th_rng_uniform(r), v = th_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

int64_t th_rng_below(th_rng *r, int64_t n)
{
    return (int64_t)(th_rng_next(r) % (uint64_t)n);
}

float *th_gaussian(int64_t n, uint64_t seed)
{
    th_rng r = {seed};
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    int64_t i;
    if (!x) { /* no Check here: the benchmarks link this file too */
        fprintf(stderr, "th_gaussian: out of memory for %lld floats\n", (long long)n);
        abort();
    }
    for (i = 0; i < n; i++)
        x[i] = (float)th_rng_normal(&r);
    return x;
}
