/*
 * X^T z of u8 code rows with AVX-512 (tsq__reg_xtz_rows_avx512). Each
 * element of g is the float sum, in row order, of the products code * z
 * over the rows whose code is not zero (one multiplication and one
 * addition each, no FMA), exactly as the plain C loop tsq__reg_xtz_rows
 * (regressor_products.c) computes it, so the two are bit-identical.
 *
 * Codes are mostly zero (a sparse quantizer's output: 50-70% in the
 * layers we fit), so the loop goes the way the C one does: row by row,
 * finding the nonzero codes of 64 columns at once with a byte mask, and
 * adding code * z_i into those columns' rows of g only. g (the task's
 * columns times C floats) stays in cache; a dense register-blocked loop
 * did every column's work, zero or not, and was 2-3x slower on codes with
 * 60% zeros. Compiled with -mavx512f etc.; called only when the CPU has
 * AVX-512 F/BW/VL.
 */
#include "regressor_internal.h"

#include <immintrin.h>
#include <string.h>

/* g_j += x * z_i over C channels: full vectors, then a masked tail. */
static inline void add_row(float *gj, const float *zi, float x, int64_t C, __mmask16 tail)
{
    const __m512 xv = _mm512_set1_ps(x);
    int64_t c;
    for (c = 0; c + 16 <= C; c += 16)
        _mm512_storeu_ps(gj + c, _mm512_add_ps(_mm512_loadu_ps(gj + c),
                                               _mm512_mul_ps(xv, _mm512_loadu_ps(zi + c))));
    if (tail)
        _mm512_mask_storeu_ps(gj + c, tail,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(tail, gj + c),
                                            _mm512_mul_ps(xv, _mm512_maskz_loadu_ps(tail, zi + c))));
}

/* The bits of the nonzero codes among columns jb .. min(jb + 64, j1) - 1. */
static inline uint64_t nonzero(const uint8_t *xi, int64_t jb, int64_t j1)
{
    int64_t left = j1 - jb;
    __mmask64 in = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
    __m512i bytes = _mm512_maskz_loadu_epi8(in, xi + jb);
    return (uint64_t)_mm512_test_epi8_mask(bytes, bytes);
}

/* C <= 64: the row of z stays in four registers (masked: lanes past C are
 * neither loaded nor stored). */
static void narrow(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                   const float *z, int64_t C, float *g)
{
    __mmask16 m[4];
    int64_t i, jb;
    int v;
    for (v = 0; v < 4; v++) {
        int64_t left = C - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xFFFF
                          : left > 0 ? (__mmask16)((1u << left) - 1u) : (__mmask16)0;
    }
    for (i = 0; i < rows; i++) {
        const uint8_t *xi = x + i * ldx;
        __m512 zv[4];
        for (v = 0; v < 4; v++)
            zv[v] = _mm512_maskz_loadu_ps(m[v], z + i * C + 16 * v);
        for (jb = j0; jb < j1; jb += 64) {
            uint64_t nz = nonzero(xi, jb, j1);
            while (nz) {
                int64_t j = jb + __builtin_ctzll(nz);
                const __m512 xv = _mm512_set1_ps((float)xi[j]);
                float *gj = g + (j - j0) * C;
                for (v = 0; v < 4; v++)
                    _mm512_mask_storeu_ps(gj + 16 * v, m[v],
                                          _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], gj + 16 * v),
                                                        _mm512_mul_ps(xv, zv[v])));
                nz &= nz - 1;
            }
        }
    }
}

void tsq__reg_xtz_rows_avx512(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                              const float *z, int64_t C, float *g)
{
    const __mmask16 tail = (__mmask16)((1u << (C % 16)) - 1u);
    int64_t i, jb;
    memset(g, 0, (size_t)((j1 - j0) * C) * sizeof *g);
    if (C <= 64) {
        narrow(x, ldx, rows, j0, j1, z, C, g);
        return;
    }
    for (i = 0; i < rows; i++) {
        const uint8_t *xi = x + i * ldx;
        const float *zi = z + i * C;
        for (jb = j0; jb < j1; jb += 64) {
            uint64_t nz = nonzero(xi, jb, j1);
            while (nz) {
                int64_t j = jb + __builtin_ctzll(nz);
                add_row(g + (j - j0) * C, zi, (float)xi[j], C, tail);
                nz &= nz - 1;
            }
        }
    }
}
