/* Brute-force references the tests compare libtsq against, written from
 * the documented formulas and not from the library's code. */
#ifndef TSQ_TEST_REFERENCE_H
#define TSQ_TEST_REFERENCE_H

#include <stdint.h>

/* The quantizer's code, as quantizer.h states it: 0 if !(x > eps), else
 * clamp(floor(x * (1.0f / delta) + 0.5f), 1, maxcode), every operation in
 * float (volatile, so that no compiler contracts or widens them). */
int32_t th_ref_code(float x, float eps, float delta, int32_t maxcode);
/* The straight-through window: 1 where 0 < x < (float)maxcode * delta. */
int th_ref_ste_passes(float x, float delta, int32_t maxcode);
/* The best ||t_c - alpha X w - b||^2 over every w in {-1,0,1}^d (d <= 9)
 * with alpha and b in closed form given w: x is n x d (u8), t is n x C and
 * column c is the target (the regressor's linear loss, by brute force). */
double th_ref_best_ternary(const uint8_t *x, const float *t, int64_t n, int d, int64_t C,
                           int64_t c);
/* zlib's CRC-32, bit by bit. */
uint32_t th_ref_crc32(const void *data, uint64_t n);

#endif
