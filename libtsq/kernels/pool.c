/* Max-pooling kernels: float NCHW planes (the layer and the plan's float
 * stages) and uint8 NHWC codes (the plan's code stages). */
#include "kernels/vec.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h> /* part of every x86-64 target: no run-time check */
#endif

/* y[i] = max(y[i], x[i]) over n bytes: the per-pixel step of the code
 * max-pool, 16 channels at a time where SSE2 is there (the same bytes). */
static void max_bytes(uint8_t *y, const uint8_t *x, int64_t n)
{
    int64_t i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(void *)(y + i),
                         _mm_max_epu8(_mm_loadu_si128((const __m128i *)(const void *)(y + i)),
                                      _mm_loadu_si128((const __m128i *)(const void *)(x + i))));
#endif
    for (; i < n; i++)
        y[i] = x[i] > y[i] ? x[i] : y[i];
}

/* One output of a k x k window at (oy, ox): the first maximum in window
 * order (a later value replaces the best only when greater, so a NaN never
 * does). */
static void pool_one(const float *xp, float *yp, int32_t *ip, int64_t w, int64_t ow, int64_t k,
                     int64_t s, int64_t oy, int64_t ox)
{
    int64_t best = oy * s * w + ox * s, a, b;
    for (a = 0; a < k; a++)
        for (b = 0; b < k; b++) {
            int64_t idx = (oy * s + a) * w + ox * s + b;
            if (xp[idx] > xp[best])
                best = idx;
        }
    yp[oy * ow + ox] = xp[best];
    if (ip)
        ip[oy * ow + ox] = (int32_t)best;
}

#if defined(__SSE2__)
/* The 2 x 2, stride 2 window, 4 outputs of row oy at a time from ox: the
 * same sequence of strict comparisons as pool_one, as selects (no
 * branches to mispredict on data). Returns the first output not done. */
static int64_t pool_2x2_row(const float *xp, float *yp, int32_t *ip, int64_t w, int64_t ow,
                            int64_t oy)
{
    const float *r0 = xp + 2 * oy * w, *r1 = r0 + w;
    int64_t ox = 0;
    for (; 2 * (ox + 4) <= w; ox += 4) {
        __m128 a0 = _mm_loadu_ps(r0 + 2 * ox), a1 = _mm_loadu_ps(r0 + 2 * ox + 4);
        __m128 b0 = _mm_loadu_ps(r1 + 2 * ox), b1 = _mm_loadu_ps(r1 + 2 * ox + 4);
        __m128 v[4], best;
        __m128i at = _mm_add_epi32(_mm_set1_epi32((int)(2 * oy * w + 2 * ox)),
                                   _mm_setr_epi32(0, 2, 4, 6));
        __m128i off[4], idx;
        int q;
        v[0] = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
        v[1] = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1));
        v[2] = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0));
        v[3] = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
        off[1] = _mm_set1_epi32(1);
        off[2] = _mm_set1_epi32((int)w);
        off[3] = _mm_set1_epi32((int)w + 1);
        best = v[0];
        idx = at;
        for (q = 1; q < 4; q++) {
            __m128 m = _mm_cmpgt_ps(v[q], best);
            __m128i mi = _mm_castps_si128(m);
            best = _mm_or_ps(_mm_and_ps(m, v[q]), _mm_andnot_ps(m, best));
            idx = _mm_or_si128(_mm_and_si128(mi, _mm_add_epi32(at, off[q])),
                               _mm_andnot_si128(mi, idx));
        }
        _mm_storeu_ps(yp + oy * ow + ox, best);
        if (ip)
            _mm_storeu_si128((__m128i *)(void *)(ip + oy * ow + ox), idx);
    }
    return ox;
}
#endif

void tsq__maxpool_f32(const float *x, float *y, int32_t *argmax, int64_t lo, int64_t hi,
                      int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s)
{
    int64_t pl, oy, ox;
    for (pl = lo; pl < hi; pl++) {
        const float *xp = x + pl * h * w;
        float *yp = y + pl * oh * ow;
        int32_t *ip = argmax ? argmax + pl * oh * ow : NULL;
        for (oy = 0; oy < oh; oy++) {
            ox = 0;
#if defined(__SSE2__)
            if (k == 2 && s == 2 && h * w <= INT32_MAX)
                ox = pool_2x2_row(xp, yp, ip, w, ow, oy);
#endif
            for (; ox < ow; ox++)
                pool_one(xp, yp, ip, w, ow, k, s, oy, ox);
        }
    }
}

void tsq__maxpool_u8_nhwc(const uint8_t *x, uint8_t *y, int64_t lo, int64_t hi, int64_t h,
                          int64_t w, int64_t c, int64_t oh, int64_t ow, int64_t k, int64_t s)
{
    int64_t b, oy, ox, a, d;
    for (b = lo; b < hi; b++) {
        const uint8_t *xb = x + b * h * w * c;
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++) {
                uint8_t *yp = y + ((b * oh + oy) * ow + ox) * c;
                memcpy(yp, xb + (oy * s * w + ox * s) * c, (size_t)c);
                for (a = 0; a < k; a++)
                    for (d = 0; d < k; d++)
                        max_bytes(yp, xb + ((oy * s + a) * w + ox * s + d) * c, c);
            }
    }
}
