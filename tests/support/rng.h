/* The tests' and benchmarks' one random generator: splitmix64, with
 * uniform, Gaussian (Box-Muller) and bounded-integer draws. Deterministic
 * from the seed; no global state. Needs no Check, so tests/bench/ links it
 * (with reference.c). */
#ifndef TSQ_TEST_RNG_H
#define TSQ_TEST_RNG_H

#include <stdint.h>

typedef struct th_rng {
    uint64_t s;
} th_rng;

uint64_t th_rng_next(th_rng *r);
double th_rng_uniform(th_rng *r);            /* [0, 1) */
double th_rng_normal(th_rng *r);             /* N(0, 1) */
int64_t th_rng_below(th_rng *r, int64_t n);  /* [0, n), n >= 1 */
/* n floats from N(0, 1), malloc'ed (the test frees them); aborts on OOM. */
float *th_gaussian(int64_t n, uint64_t seed);

#endif
