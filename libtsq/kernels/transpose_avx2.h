/*
 * The 8 x 8 transpose of 32-bit elements on AVX2, shared by the kernels
 * that turn channel-major data position-major and back (the AVX2 panels'
 * decoder, the direct backward's dy and dx). Include only from files
 * compiled with -mavx2.
 */
#ifndef TSQ_KERNELS_TRANSPOSE_AVX2_H
#define TSQ_KERNELS_TRANSPOSE_AVX2_H

#include <immintrin.h>

/* v[r] holds row r's 8 dwords (ints or floats alike); afterwards v[i]
 * holds dword i of every row. */
static inline void tsq__transpose8_avx2(__m256i v[8])
{
    __m256i t[8], u[8];
    int i;
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* u[4b + e], 128-bit lane L, holds element 4L + e of rows 4b .. 4b+3. */
    for (i = 0; i < 4; i++) {
        v[i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x20);
        v[4 + i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x31);
    }
}

/* The same on 8 float vectors. */
static inline void tsq__transpose8_ps_avx2(__m256 r[8])
{
    __m256i v[8];
    int i;
    for (i = 0; i < 8; i++)
        v[i] = _mm256_castps_si256(r[i]);
    tsq__transpose8_avx2(v);
    for (i = 0; i < 8; i++)
        r[i] = _mm256_castsi256_ps(v[i]);
}

#endif /* TSQ_KERNELS_TRANSPOSE_AVX2_H */
