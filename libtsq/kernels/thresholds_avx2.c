/* AVX2 threshold comparisons: 16 channels per step, two vectors of 8
 * (thresholds_avx2.h has the comparison). Same result as
 * tsq__thresholds_apply_ref. Compiled with -mavx2. */
#include "kernels/thresholds_avx2.h"

#include <string.h>

void tsq__thresholds_apply_avx2(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                int64_t rows, int64_t c0, int64_t c1, uint8_t *out,
                                int64_t ldo)
{
    int64_t r, c;
    for (r = 0; r < rows; r++)
        for (c = c0; c < c1; c += 16) {
            /* c0 is a multiple of 16 (the kernels' column ranges) or 0 */
            int64_t n = c1 - c < 16 ? c1 - c : 16;
            const int32_t *a = acc + r * ldacc + c;
            __m256i blo = tsq__below_avx2(th, tsq__load_acc8_avx2(a, n), c);
            __m256i bhi = tsq__below_avx2(th, tsq__load_acc8_avx2(a + 8, n - 8), c + 8);
            __m256i lo = tsq__code_of_below_avx2(th, blo, c);
            __m256i hi = tsq__code_of_below_avx2(th, bhi, c + 8);
            __m128i b = tsq__codes_to_bytes_avx2(lo, hi);
            if (n == 16)
                _mm_storeu_si128((__m128i *)(void *)(out + r * ldo + c), b);
            else
                tsq__store_bytes_avx2(out + r * ldo + c, b, n);
        }
}
