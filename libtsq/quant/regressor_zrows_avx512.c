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

/* Quantizers of up to 4 bits take the vector slow path below; wider ones
 * the scalar function lane by lane. */
#define SLOW_BINS_MAX 15

/* z = v < lo ? lo : v > hi ? hi : v */
static inline __m512 clamp_bin(__m512 v, __m512 lo, __m512 hi)
{
    return _mm512_mask_mov_ps(_mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), hi),
                              _mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), lo);
}

/* delta^2 (y - m)^2 + lambda (z - v)^2, in tsq__zstep_coded's order. */
static inline __m512 bin_cost(__m512 d2, __m512i y, __m512i m, __m512 lambda, __m512 dz)
{
    __m512i e = _mm512_sub_epi32(y, m);
    __m512 e2 = _mm512_cvtepi32_ps(_mm512_mullo_epi32(e, e));
    return _mm512_add_ps(_mm512_mul_ps(d2, e2), _mm512_mul_ps(_mm512_mul_ps(lambda, dz), dz));
}

/* tsq__zstep_coded for the lanes in `slow`, all sixteen at once: the same
 * candidates (bins first .. last but the own bin k, non-empty, first moved
 * down past empty bins to the nearest non-empty one >= 1, else 0) visited
 * in the same ascending order with the same strict "cheaper" test, and
 * the same float operations, so the chosen bin and z are the scalar
 * ones. Adds (y - m)^2 of the chosen bin to zcost in each slow lane.
 * top: the largest lane of maxcode, which the caller has already taken. */
static __m512 slow_lanes(const tsq__zrows *a, int64_t c, __mmask16 slow, __m512 v, __m512i k,
                         __m512i y, __m512 z, __m512 dz, __m512i maxcode, int32_t top)
{
    const int32_t nb = a->nbins;
    const float *lo = a->lo + c * nb, *hi = a->hi + c * nb;
    const __m512i base = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(nb));
    const __m512 d2 = _mm512_loadu_ps(a->delta2 + c), lambda = _mm512_set1_ps(a->lambda);
    __m512i first = _mm512_setzero_si512(), bestm = k;
    __m512i first0 = _mm512_sub_epi32(_mm512_min_epi32(k, y), _mm512_set1_epi32(1));
    __m512i last = _mm512_min_epi32(_mm512_add_epi32(_mm512_max_epi32(k, y), _mm512_set1_epi32(1)),
                                    maxcode);
    __m512 best = bin_cost(d2, y, k, lambda, dz);
    __mmask16 filled[SLOW_BINS_MAX + 1];
    __m512 los[SLOW_BINS_MAX + 1], his[SLOW_BINS_MAX + 1];
    __m512d e0, e1;
    __m512i e;
    int32_t m;
    for (m = 0; m <= top; m++) {
        __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(m));
        __mmask16 valid = _mm512_cmple_epi32_mask(_mm512_set1_epi32(m), maxcode);
        los[m] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, idx, lo, 4);
        his[m] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, idx, hi, 4);
        filled[m] = valid & ~_mm512_cmp_ps_mask(los[m], his[m], _CMP_GT_OQ);
        if (m >= 1) /* ascending: ends at the largest non-empty m <= first0 */
            first = _mm512_mask_mov_epi32(
                first, filled[m] & _mm512_cmple_epi32_mask(_mm512_set1_epi32(m), first0),
                _mm512_set1_epi32(m));
    }
    for (m = 0; m <= top; m++) {
        __m512i mv = _mm512_set1_epi32(m);
        __mmask16 cand = slow & filled[m] & _mm512_cmple_epi32_mask(first, mv) &
                         _mm512_cmple_epi32_mask(mv, last) & _mm512_cmpneq_epi32_mask(mv, k);
        __m512 zz = clamp_bin(v, los[m], his[m]);
        __m512 cost = bin_cost(d2, y, mv, lambda, _mm512_sub_ps(zz, v));
        __mmask16 better = cand & _mm512_cmp_ps_mask(cost, best, _CMP_LT_OQ);
        best = _mm512_mask_mov_ps(best, better, cost);
        bestm = _mm512_mask_mov_epi32(bestm, better, mv);
        z = _mm512_mask_mov_ps(z, better, zz);
    }
    e = _mm512_maskz_sub_epi32(slow, y, bestm);
    e = _mm512_mullo_epi32(e, e);
    e0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(e));
    e1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(e, 1));
    _mm512_mask_storeu_pd(a->zcost + c, (__mmask8)slow,
                          _mm512_add_pd(_mm512_loadu_pd(a->zcost + c), e0));
    _mm512_mask_storeu_pd(a->zcost + c + 8, (__mmask8)(slow >> 8),
                          _mm512_add_pd(_mm512_loadu_pd(a->zcost + c + 8), e1));
    return z;
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
            __m512i maxcode = _mm512_cvttps_epi32(_mm512_loadu_ps(a->top + c));
            int32_t top = _mm512_reduce_max_epi32(maxcode); /* the widest lane's top code */
            if (top <= SLOW_BINS_MAX) {
                z = slow_lanes(a, c, (__mmask16)~fast, v, k, y, z, dz, maxcode, top);
            } else {
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
