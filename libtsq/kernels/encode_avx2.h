/*
 * The quantizer's float operations on 8 lanes (AVX2), in the one place the
 * AVX2 kernels that write codes from floats take them from (encode_avx2.c,
 * conv_front_avx2.c): the per-channel affine a x + b (product and sum
 * apart, as the batch-norm stage computes it), relu as a select (+0 for -0
 * and NaN, as the C select), then tsq__quant_code (kernels/encode.h):
 * compare with eps, floor of x / delta + 1/2, clamp to 1 .. maxcode, 0
 * where !(x > eps). No FMA: the codes are the C kernels' bits. Include
 * only from files compiled with -mavx2.
 */
#ifndef TSQ_KERNELS_ENCODE_AVX2_H
#define TSQ_KERNELS_ENCODE_AVX2_H

#include <immintrin.h>

#define TSQ__AVX2_INLINE static inline __attribute__((always_inline))

/* Eight codes as floats (0.0f or k), before the conversion to integers.
 * `floor1` 0 drops the clamp at 1 (tsq__front_short_form says when no
 * code changes). */
TSQ__AVX2_INLINE __m256 tsq__levels8_avx2(__m256 x, __m256 eps, __m256 inv, __m256 top,
                                          int floor1)
{
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256 k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, inv), half));
    __m256 pos = _mm256_cmp_ps(x, eps, _CMP_GT_OQ); /* false for NaN, as !(x > eps) */
    if (floor1)
        k = _mm256_max_ps(k, one);
    k = _mm256_min_ps(k, top);
    return _mm256_and_ps(k, pos);
}

/* The value the quantizer sees: [a v + b] [relu]. */
TSQ__AVX2_INLINE __m256 tsq__front_v8_avx2(__m256 v, __m256 a, __m256 b, int affine, int relu)
{
    if (affine)
        v = _mm256_add_ps(_mm256_mul_ps(a, v), b);
    if (relu)
        v = _mm256_and_ps(v, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ));
    return v;
}

/* Packs 4 x 8 int32 codes (each 0..255) into 32 bytes in order. */
TSQ__AVX2_INLINE __m256i tsq__pack32_avx2(__m256i c0, __m256i c1, __m256i c2, __m256i c3)
{
    /* packus works within 128-bit lanes: the 4-byte groups come out as
     * c0lo c1lo c2lo c3lo | c0hi c1hi c2hi c3hi, and the permute restores
     * c0lo c0hi c1lo c1hi ... */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
    return _mm256_permutevar8x32_epi32(b, order);
}

#endif /* TSQ_KERNELS_ENCODE_AVX2_H */
