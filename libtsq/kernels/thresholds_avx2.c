/* AVX2 threshold comparisons: 8 channels per vector. AVX2 has only a
 * "greater than" compare, so the levels a does NOT reach are counted
 * (T_m > a gives -1) and subtracted from 2^n - 1; this never forms T_m - 1,
 * which would overflow at INT32_MIN. Same result as
 * tsq__thresholds_apply_ref. Compiled with -mavx2. */
#include "kernels_internal.h"

#include <immintrin.h>
#include <string.h>

void tsq__thresholds_apply_avx2(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                int64_t rows, int64_t c0, int64_t c1, uint8_t *out,
                                int64_t ldo)
{
    const __m256i maxcode = _mm256_set1_epi32(th->maxcode);
    int64_t r, c;
    int32_t m;
    for (r = 0; r < rows; r++)
        for (c = c0; c < c1; c += 8) {
            int64_t n = c1 - c < 8 ? c1 - c : 8;
            int32_t in[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            uint8_t codes[32];
            __m256i a, below = _mm256_setzero_si256(), count, packed;
            memcpy(in, acc + r * ldacc + c, (size_t)n * sizeof(int32_t));
            a = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)in),
                                 _mm256_loadu_si256((const __m256i *)(th->flip + c)));
            for (m = 0; m < th->maxcode; m++) {
                __m256i t = _mm256_loadu_si256((const __m256i *)(th->t + m * th->padded + c));
                below = _mm256_add_epi32(below, _mm256_cmpgt_epi32(t, a));
            }
            count = _mm256_add_epi32(maxcode, below);
            count = _mm256_min_epi32(count, _mm256_loadu_si256((const __m256i *)(th->top + c)));
            /* 0..255 in each lane: two saturating packs bring them to bytes,
             * channels 0-3 in the low 128-bit lane, 4-7 in the high one. */
            packed = _mm256_packus_epi16(_mm256_packus_epi32(count, count),
                                         _mm256_setzero_si256());
            _mm256_storeu_si256((__m256i *)codes, packed);
            memcpy(codes + 4, codes + 16, 4);
            memcpy(out + r * ldo + c, codes, (size_t)n);
        }
}
