/*
 * The per-sample work of a pass (tsq__zrows, regressor_levels.c) sixteen
 * channels at a time with AVX-512: the same float operations in the same
 * order as zrows_one and the SSE2 zrows_four there, so all three are
 * bit-identical (see the argument at zrows_four); lanes off the own-bin
 * fast path go through the scalar tsq__zstep_coded, and the double sums
 * are added per channel in row order. Compiled with -mavx512f etc.;
 * called only when the CPU has AVX-512 F/BW/VL.
 */
#include "regressor_internal.h"

#include <immintrin.h>

/* Lanes 8..15 (AVX-512 F only: no DQ needed). */
static inline __m256 upper8(__m512 x)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}

void tsq__zrows_sixteen_avx512(const tsq__zrows *a, int64_t i, int64_t c)
{
    const int64_t at = i * a->C + c;
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(a->alpha + c),
                                           _mm512_loadu_ps(a->xw + at)),
                             _mm512_loadu_ps(a->b + c));
    __m512 t = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(a->inv_delta + c)),
                             _mm512_set1_ps(0.5f));
    __mmask16 above = _mm512_cmp_ps_mask(v, _mm512_loadu_ps(a->eps + c), _CMP_GT_OQ);
    __m512i k, y, e;
    __m512 ef;
    t = _mm512_max_ps(_mm512_min_ps(t, _mm512_loadu_ps(a->top + c)), _mm512_set1_ps(1.0f));
    k = _mm512_maskz_mov_epi32(above, _mm512_cvttps_epi32(t));
    y = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(a->y + at)));
    e = _mm512_sub_epi32(y, k);
    ef = _mm512_cvtepi32_ps(e);
    ef = _mm512_mul_ps(ef, ef); /* exact: |e| <= 255 */
    _mm512_storeu_pd(a->err + c, _mm512_add_pd(_mm512_loadu_pd(a->err + c),
                                               _mm512_cvtps_pd(_mm512_castps512_ps256(ef))));
    _mm512_storeu_pd(a->err + c + 8,
                     _mm512_add_pd(_mm512_loadu_pd(a->err + c + 8),
                                   _mm512_cvtps_pd(upper8(ef))));
    if (!a->zstep)
        return;
    {
        const int32_t nb = a->nbins;
        __m512i idx = _mm512_add_epi32(
            _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                               _mm512_set1_epi32(nb)),
            k);
        __m512 lo = _mm512_i32gather_ps(idx, a->lo + c * nb, 4);
        __m512 hi = _mm512_i32gather_ps(idx, a->hi + c * nb, 4);
        __mmask16 below_lo = _mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ);
        __mmask16 above_hi = _mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ);
        /* z = v < lo ? lo : v > hi ? hi : v */
        __m512 z = _mm512_mask_mov_ps(_mm512_mask_mov_ps(v, above_hi, hi), below_lo, lo);
        __m512 dz = _mm512_sub_ps(z, v);
        __m512 cost = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(a->lambda), dz), dz);
        __mmask16 fast = _mm512_cmpeq_epi32_mask(k, y) &
                         _mm512_cmp_ps_mask(cost, _mm512_loadu_ps(a->delta2 + c), _CMP_LT_OQ);
        if (fast != 0xFFFF) {
            float zz[16], vv[16];
            int32_t kk[16], yy[16];
            int lane;
            _mm512_storeu_ps(zz, z);
            _mm512_storeu_ps(vv, v);
            _mm512_storeu_si512((void *)kk, k);
            _mm512_storeu_si512((void *)yy, y);
            for (lane = 0; lane < 16; lane++)
                if (!((fast >> lane) & 1))
                    zz[lane] = tsq__zstep_coded(&a->q[c + lane], a->lo + (c + lane) * nb,
                                                a->hi + (c + lane) * nb, vv[lane], kk[lane],
                                                yy[lane], a->lambda, &a->zcost[c + lane]);
            z = _mm512_loadu_ps(zz);
        }
        _mm512_storeu_ps(a->z + at, z);
        {
            __m512d z0 = _mm512_cvtps_pd(_mm512_castps512_ps256(z));
            __m512d z1 = _mm512_cvtps_pd(upper8(z));
            _mm512_storeu_pd(a->zsum + c, _mm512_add_pd(_mm512_loadu_pd(a->zsum + c), z0));
            _mm512_storeu_pd(a->zsum + c + 8, _mm512_add_pd(_mm512_loadu_pd(a->zsum + c + 8), z1));
            _mm512_storeu_pd(a->zsq + c,
                             _mm512_add_pd(_mm512_loadu_pd(a->zsq + c), _mm512_mul_pd(z0, z0)));
            _mm512_storeu_pd(a->zsq + c + 8, _mm512_add_pd(_mm512_loadu_pd(a->zsq + c + 8),
                                                           _mm512_mul_pd(z1, z1)));
        }
    }
}
