/*
 * The 16 x 16 transpose of 32-bit elements on AVX-512, shared by the
 * kernels that turn channel-major data position-major (the VNNI panels'
 * decoder, the weight gradient's dy). Include only from files compiled
 * with the AVX-512 flags.
 */
#ifndef TSQ_KERNELS_TRANSPOSE_AVX512_H
#define TSQ_KERNELS_TRANSPOSE_AVX512_H

#include <immintrin.h>

/* 16 x 16 transpose of 32-bit elements (ints or floats alike): v[r] holds
 * row r's 16 dwords; afterwards v[i] holds dword i of every row. */
static inline void tsq__transpose16_avx512(__m512i v[16])
{
    __m512i t[16], u[16];
    int i;
    for (i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* u[4b + e], 128-bit lane L, holds element 4L + e of rows 4b .. 4b+3:
     * a 4 x 4 transpose of 128-bit lanes finishes the job. */
    for (i = 0; i < 4; i++) {
        __m512i a0 = _mm512_shuffle_i32x4(u[i], u[4 + i], 0x44);
        __m512i a1 = _mm512_shuffle_i32x4(u[i], u[4 + i], 0xEE);
        __m512i a2 = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0x44);
        __m512i a3 = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0xEE);
        v[i] = _mm512_shuffle_i32x4(a0, a2, 0x88);
        v[4 + i] = _mm512_shuffle_i32x4(a0, a2, 0xDD);
        v[8 + i] = _mm512_shuffle_i32x4(a1, a3, 0x88);
        v[12 + i] = _mm512_shuffle_i32x4(a1, a3, 0xDD);
    }
}

#endif /* TSQ_KERNELS_TRANSPOSE_AVX512_H */
