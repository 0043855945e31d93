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
/* zlib's CRC-32, bit by bit. */
uint32_t th_ref_crc32(const void *data, uint64_t n);

#endif
