/* The threshold epilogue into the byte layout on AVX2 (the same bytes as
 * tsq__bp_epilogue_bytes_ref): 16 channels per step as two vectors of 8.
 * A pooled code is the largest of its window's codes, and the code is
 * monotone in the count of levels reached, so the window's counts are
 * maxed first and turned into a code once. Compiled with -mavx2; called
 * only when the CPU has it. */
#include "kernels/bitplane.h"
#include "kernels/thresholds_avx2.h"

#include <string.h>

/* Channels c .. c+7 of one pixel's accumulators, n of them valid (n < 8:
 * the row may end there). */
static inline __m256i load8(const int32_t *a, int64_t n)
{
    int32_t in[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (n >= 8)
        return _mm256_loadu_si256((const __m256i *)(const void *)a);
    if (n > 0)
        memcpy(in, a, (size_t)n * sizeof(int32_t));
    return _mm256_loadu_si256((const __m256i *)(const void *)in);
}

/* Output rows first .. last - 1 (of the pooled grid when S is 2), channel
 * chunk c .. c + 15 (n of them valid). */
static inline __attribute__((always_inline)) void
chunk(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc, int64_t y0, int64_t first,
      int64_t last, int64_t ow, const tsq__bp_geom *og, uint8_t *img, int64_t c, int64_t n,
      const int S)
{
    int64_t wp = og->w + 2 * og->pad, oy, ox;
    for (oy = first; oy < last; oy++) {
        const int32_t *row = acc + (oy * S - y0) * ow * ldacc + c;
        uint8_t *dst = img + ((oy + og->pad) * wp + og->pad) * og->cb + c;
        for (ox = 0; ox < og->w; ox++, dst += og->cb) {
            __m256i lo = _mm256_set1_epi32(INT32_MIN), hi = lo;
            int dy, dx;
            for (dy = 0; dy < S; dy++)
                for (dx = 0; dx < S; dx++) {
                    const int32_t *a = row + (dy * ow + ox * S + dx) * ldacc;
                    lo = _mm256_max_epi32(lo, tsq__below_avx2(th, load8(a, n), c));
                    hi = _mm256_max_epi32(hi, tsq__below_avx2(th, load8(a + 8, n - 8), c + 8));
                }
            {
                __m128i b = tsq__codes_to_bytes_avx2(tsq__code_of_below_avx2(th, lo, c),
                                                     tsq__code_of_below_avx2(th, hi, c + 8));
                if (n == 16)
                    _mm_storeu_si128((__m128i *)(void *)dst, b);
                else
                    tsq__store_bytes_avx2(dst, b, n);
            }
        }
    }
}

void tsq__bp_epilogue_bytes_avx2(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                 int64_t y0, int64_t nrows, int64_t ow, int pool,
                                 const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, first = y0 / s, last = (y0 + nrows) / s, c;
    last = last < og->h ? last : og->h;
    for (c = 0; c < og->c; c += 16) {
        int64_t n = og->c - c < 16 ? og->c - c : 16;
        if (pool)
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 2);
        else
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 1);
    }
}
