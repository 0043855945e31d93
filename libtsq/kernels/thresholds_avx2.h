/* The threshold comparison of 8 channels on AVX2, shared by the plain
 * epilogue (thresholds_avx2.c) and the byte-layout one (bitplane_avx2.c);
 * included only by files compiled with -mavx2.
 *
 * AVX2 has only a "greater than" compare, so the levels a does NOT reach
 * are counted (T_m > a gives -1); the code is 2^n - 1 plus that count,
 * never forming T_m - 1, which would overflow at INT32_MIN. The arrays of
 * th are padded to 16 channels, so 8 channels from a multiple of 8 read
 * inside them. */
#ifndef TSQ_KERNELS_THRESHOLDS_AVX2_H
#define TSQ_KERNELS_THRESHOLDS_AVX2_H

#include "kernels_internal.h"

#include <immintrin.h>
#include <string.h>

/* Eight accumulators from a, n of them (lanes past n read as 0: a row of
 * accumulators may end there). */
static inline __m256i tsq__load_acc8_avx2(const int32_t *a, int64_t n)
{
    int32_t in[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (n >= 8)
        return _mm256_loadu_si256((const __m256i *)(const void *)a);
    if (n > 0)
        memcpy(in, a, (size_t)n * sizeof(int32_t));
    return _mm256_loadu_si256((const __m256i *)(const void *)in);
}

/* The accumulators of channels c .. c+7 in the order the thresholds
 * compare: acc, or ~acc where the channel's scale is negative. Codes grow
 * with it, so a pool's largest code is the code of its largest one. */
static inline __m256i tsq__flipped_avx2(const tsq_thresholds *th, __m256i a, int64_t c)
{
    return _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(const void *)(th->flip + c)));
}

/* Minus the number of levels that flipped accumulators x of channels
 * c .. c+7 do not reach (0 .. -maxcode per lane). */
static inline __m256i tsq__below_flipped_avx2(const tsq_thresholds *th, __m256i a, int64_t c)
{
    __m256i below = _mm256_setzero_si256();
    int32_t m;
    for (m = 0; m < th->maxcode; m++) {
        __m256i t = _mm256_loadu_si256((const __m256i *)(const void *)(th->t + m * th->padded + c));
        below = _mm256_add_epi32(below, _mm256_cmpgt_epi32(t, a));
    }
    return below;
}

/* The same from the accumulators themselves. */
static inline __m256i tsq__below_avx2(const tsq_thresholds *th, __m256i a, int64_t c)
{
    return tsq__below_flipped_avx2(th, tsq__flipped_avx2(th, a, c), c);
}

/* The codes of channels c .. c+7 from `below` (the largest over a pooling
 * window, if pooled: the code is monotone in it): 2^n - 1 + below, at most
 * the channel's top code. */
static inline __m256i tsq__code_of_below_avx2(const tsq_thresholds *th, __m256i below,
                                              int64_t c)
{
    __m256i count = _mm256_add_epi32(_mm256_set1_epi32(th->maxcode), below);
    return _mm256_min_epi32(count,
                            _mm256_loadu_si256((const __m256i *)(const void *)(th->top + c)));
}

/* 16 int32 codes (0..255; channels 0-7 in lo, 8-15 in hi) as 16 bytes in
 * channel order. */
static inline __m128i tsq__codes_to_bytes_avx2(__m256i lo, __m256i hi)
{
    /* packus_epi32 interleaves the 128-bit lanes: [lo 0-3, hi 0-3 | lo 4-7,
     * hi 4-7]; the permute puts lo's halves first. */
    __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
    return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

/* The first n (< 16) bytes of v to dst. */
static inline void tsq__store_bytes_avx2(uint8_t *dst, __m128i v, int64_t n)
{
    uint8_t b[16];
    _mm_storeu_si128((__m128i *)(void *)b, v);
    memcpy(dst, b, (size_t)n);
}

#endif /* TSQ_KERNELS_THRESHOLDS_AVX2_H */
