/*
 * The front's float operations on 16 lanes (AVX-512), in the one place the
 * AVX-512 kernels that write codes from floats take them from: the
 * per-channel affine a x + b (product and sum apart, as the batch-norm
 * stage computes it), relu as a select (+0 for -0 and NaN, as the C
 * select), then tsq__quant_code (kernels/encode.h): compare with eps, floor
 * of x / delta + 1/2, clamp to 1 .. maxcode. Include only from files
 * compiled with the AVX-512 flags.
 */
#ifndef TSQ_KERNELS_ENCODE_AVX512_H
#define TSQ_KERNELS_ENCODE_AVX512_H

#include <immintrin.h>

/* The value the quantizer sees: [a v + b] [relu]. */
static inline __attribute__((always_inline)) __m512 tsq__front_v(__m512 v, __m512 a, __m512 b,
                                                                 int affine, int relu)
{
    if (affine)
        v = _mm512_add_ps(_mm512_mul_ps(a, v), b);
    if (relu)
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), v);
    return v;
}

/* The codes, each lane with its own channel's parameters (maxcode as a
 * float). `floor1` 0 drops the clamp at 1, which a caller may do only when
 * every lane's floor(eps inv + 1/2) >= 1 with inv > 0 (then every value
 * above eps rounds to a code >= 1 already, rounding being monotone). */
static inline __attribute__((always_inline)) __m512i
tsq__encode_codes_v(__m512 v, __m512 a, __m512 b, int affine, int relu, __m512 eps, __m512 inv,
                    __m512 maxcode, int floor1)
{
    __m512 k;
    __mmask16 pos;
    v = tsq__front_v(v, a, b, affine, relu);
    pos = _mm512_cmp_ps_mask(v, eps, _CMP_GT_OQ);
    k = _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(v, inv), _mm512_set1_ps(0.5f)),
                             _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    if (floor1)
        k = _mm512_max_ps(k, _mm512_set1_ps(1.0f));
    k = _mm512_min_ps(k, maxcode);
    return _mm512_maskz_cvttps_epi32(pos, k);
}

#endif /* TSQ_KERNELS_ENCODE_AVX512_H */
