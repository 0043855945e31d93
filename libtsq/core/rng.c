/* Random numbers: xoshiro256** (Blackman & Vigna, 2018), seeded through
 * splitmix64 so that any 64-bit seed gives a well-mixed state. Each object
 * takes its own stream from its context, so results depend only on the seed
 * and the order in which objects are created, never on timing. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tsq__rng_seed(tsq__rng *rng, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
    int i;
    for (i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

void tsq__rng_from_context(tsq_context *ctx, tsq__rng *rng)
{
    tsq__rng_seed(rng, ctx->seed, ++ctx->streams);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tsq__rng_next(tsq__rng *rng)
{
    uint64_t *s = rng->s;
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

double tsq__rng_uniform(tsq__rng *rng)
{
    /* The top 53 bits give every double in [0, 1) with spacing 2^-53. */
    return (double)(tsq__rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

double tsq__rng_normal(tsq__rng *rng)
{
    /* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1]. */
    double u = 1.0 - tsq__rng_uniform(rng);
    double v = tsq__rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

uint64_t tsq__rng_below(tsq__rng *rng, uint64_t n)
{
    /* Rejection sampling removes the modulo bias. */
    uint64_t limit, x;
    if (n <= 1)
        return 0;
    limit = UINT64_MAX - UINT64_MAX % n;
    do
        x = tsq__rng_next(rng);
    while (x >= limit);
    return x % n;
}
