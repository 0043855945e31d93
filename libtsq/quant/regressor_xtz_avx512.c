/*
 * X^T z of u8 code rows with AVX-512 (tsq__reg_xtz_rows_avx512): the same
 * multiplications and additions, in the same order, as the plain C loop
 * tsq__reg_xtz_rows (regressor_products.c), sixteen channels at a time, so
 * the two are bit-identical. Compiled with -mavx512f etc.; called only
 * when the CPU has AVX-512 F.
 */
#include "regressor_internal.h"

#include <immintrin.h>
#include <string.h>

void tsq__reg_xtz_rows_avx512(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                              const float *z, int64_t C, float *g)
{
    int64_t i, j, c, tail = C % 16, main = C - tail;
    __mmask16 m = (__mmask16)((1u << tail) - 1u);
    memset(g, 0, (size_t)((j1 - j0) * C) * sizeof *g);
    for (i = 0; i < rows; i++) {
        const uint8_t *xi = x + i * ldx;
        const float *zi = z + i * C;
        for (j = j0; j < j1; j++) {
            __m512 xv;
            float *gj;
            if (!xi[j])
                continue; /* codes are mostly 0: their products add nothing */
            xv = _mm512_set1_ps((float)xi[j]);
            gj = g + (j - j0) * C;
            for (c = 0; c < main; c += 16) /* mul then add, as the C loop (no FMA) */
                _mm512_storeu_ps(gj + c, _mm512_add_ps(_mm512_loadu_ps(gj + c),
                                                       _mm512_mul_ps(xv, _mm512_loadu_ps(zi + c))));
            if (tail)
                _mm512_mask_storeu_ps(
                    gj + main, m,
                    _mm512_add_ps(_mm512_maskz_loadu_ps(m, gj + main),
                                  _mm512_mul_ps(xv, _mm512_maskz_loadu_ps(m, zi + main))));
        }
    }
}
