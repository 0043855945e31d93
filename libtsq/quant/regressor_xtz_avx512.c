/*
 * X^T z of u8 code rows with AVX-512 (tsq__reg_xtz_rows_avx512). Each
 * element of g is the float sum, in row order, of the products code * z
 * (one multiplication and one addition each, no FMA), exactly as the plain
 * C loop tsq__reg_xtz_rows (regressor_products.c) computes it, so the two
 * are bit-identical: the plain loop skips zero codes, whose products (+0
 * or -0) leave a sum that started at +0 unchanged. Here the sums of 4
 * columns of X times 64 channels stay in 16 registers over all rows, so z
 * is loaded once per 4 columns and g written once. Compiled with
 * -mavx512f etc.; called only when the CPU has AVX-512 F/BW/VL.
 */
#include "regressor_internal.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

/* Columns [j, j + J) of g, channels [c, c + 64) (masks m[v] for the 4
 * vectors of 16; a zero mask skips nothing but loads zeros). */
INLINE void block(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j, const float *z,
                  int64_t C, int64_t c, const __mmask16 m[4], float *g, int64_t j0, const int J)
{
    __m512 acc[4][4];
    int64_t i;
    int u, v;
#pragma GCC unroll 4
    for (u = 0; u < J; u++)
#pragma GCC unroll 4
        for (v = 0; v < 4; v++)
            acc[u][v] = _mm512_setzero_ps();
    for (i = 0; i < rows; i++) {
        const uint8_t *xi = x + i * ldx + j;
        const float *zi = z + i * C + c;
        __m512 zv[4];
#pragma GCC unroll 4
        for (v = 0; v < 4; v++)
            zv[v] = _mm512_maskz_loadu_ps(m[v], zi + 16 * v);
#pragma GCC unroll 4
        for (u = 0; u < J; u++) {
            __m512 xv = _mm512_set1_ps((float)xi[u]);
#pragma GCC unroll 4
            for (v = 0; v < 4; v++)
                acc[u][v] = _mm512_add_ps(acc[u][v], _mm512_mul_ps(xv, zv[v]));
        }
    }
#pragma GCC unroll 4
    for (u = 0; u < J; u++)
#pragma GCC unroll 4
        for (v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(g + (j + u - j0) * C + c + 16 * v, m[v], acc[u][v]);
}

void tsq__reg_xtz_rows_avx512(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                              const float *z, int64_t C, float *g)
{
    int64_t c, j;
    for (c = 0; c < C; c += 64) {
        __mmask16 m[4];
        int v;
        for (v = 0; v < 4; v++) {
            int64_t left = C - c - 16 * v;
            m[v] = left >= 16 ? (__mmask16)0xFFFF
                              : left > 0 ? (__mmask16)((1u << left) - 1u) : (__mmask16)0;
        }
        for (j = j0; j + 4 <= j1; j += 4)
            block(x, ldx, rows, j, z, C, c, m, g, j0, 4);
        for (; j < j1; j++)
            block(x, ldx, rows, j, z, C, c, m, g, j0, 1);
    }
}
