/* AVX-512 threshold comparisons: 16 channels per vector; each threshold
 * level is one compare into a mask and one masked increment. Same result
 * as tsq__thresholds_apply_ref (thresholds.c explains the form).
 * Compiled with -mavx512bw; called only when the CPU has it. */
#include "kernels_internal.h"

#include <immintrin.h>

void tsq__thresholds_apply_avx512(const tsq_thresholds *th, const int32_t *acc,
                                  int64_t ldacc, int64_t rows, int64_t c0, int64_t c1,
                                  uint8_t *out, int64_t ldo)
{
    const __m512i one = _mm512_set1_epi32(1);
    int64_t r, c;
    int32_t m;
    for (r = 0; r < rows; r++)
        for (c = c0; c < c1; c += 16) {
            /* c is a multiple of 16 and the arrays are padded to 16. */
            __mmask16 valid = c1 - c >= 16 ? (__mmask16)0xFFFF
                                           : (__mmask16)((1u << (c1 - c)) - 1u);
            __m512i a = _mm512_maskz_loadu_epi32(valid, acc + r * ldacc + c);
            __m512i count = _mm512_setzero_si512();
            a = _mm512_xor_si512(a, _mm512_loadu_si512((const void *)(th->flip + c)));
            for (m = 0; m < th->maxcode; m++) {
                __m512i t = _mm512_loadu_si512((const void *)(th->t + m * th->padded + c));
                count = _mm512_mask_add_epi32(count, _mm512_cmpge_epi32_mask(a, t), count, one);
            }
            count = _mm512_min_epi32(count, _mm512_loadu_si512((const void *)(th->top + c)));
            _mm_mask_storeu_epi8(out + r * ldo + c, valid, _mm512_cvtepi32_epi8(count));
        }
}
