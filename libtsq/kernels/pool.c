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

void tsq__maxpool_f32(const float *x, float *y, int32_t *argmax, int64_t lo, int64_t hi,
                      int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s)
{
    int64_t pl, oy, ox, a, b;
    for (pl = lo; pl < hi; pl++) {
        const float *xp = x + pl * h * w;
        float *yp = y + pl * oh * ow;
        int32_t *ip = argmax ? argmax + pl * oh * ow : NULL;
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++) {
                int64_t best = oy * s * w + ox * s;
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
