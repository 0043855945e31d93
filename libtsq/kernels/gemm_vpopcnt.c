/* Bit-serial AVX-512 VPOPCNTDQ kernel. With activation bit planes x_b
 * (code = sum_b 2^b x_b) and two's-complement weight planes w_j
 * (w = sum_{j<B-1} 2^j w_j - 2^(B-1) w_{B-1}), a dot product over 64 k is
 *
 *     sum_b sum_j sign_j 2^(b+j) popcount(x_b AND w_j)
 *
 * (ternary weights: popcount(x_b AND nonzero) - 2 popcount(x_b AND negative)).
 * A 512-bit vector holds one k-word of 8 columns (one 64-bit lane each), so
 * a row's k-word is broadcast, ANDed with the planes of 8 columns,
 * popcounted and added into 8 int64 lanes: no horizontal sums are needed.
 * The powers of two are applied by Horner's rule over s = b + j, from the
 * largest down: acc = 2 acc + sum_{b+j=s} sign_j popcounts.
 *
 * Tile: up to 6 rows x 4 column groups (32 columns), 24 accumulators; one
 * row (GEMV) uses 8 groups. Also here: the bit-plane packer for codes.
 * Compiled with -mavx512vpopcntdq; called only when the CPU has it. */
#include "kernels_internal.h"

#include <immintrin.h>

#define TILE_ROWS 6
#define TILE_GROUPS 8
#define INLINE static inline __attribute__((always_inline))

void tsq__bitplanes_avx512(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, int32_t nb,
                           int64_t kwords, uint64_t *xp)
{
    int64_t r, kw;
    int32_t b;
    for (r = 0; r < m; r++) {
        const uint8_t *row = x + r * ldx;
        uint64_t *dst = xp + r * nb * kwords;
        for (kw = 0; kw < kwords; kw++) {
            int64_t left = k - kw * 64;
            __mmask64 valid = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
            __m512i v = _mm512_maskz_loadu_epi8(valid, row + kw * 64);
            for (b = 0; b < nb; b++)
                dst[b * kwords + kw] =
                    _mm512_test_epi8_mask(v, _mm512_set1_epi8((char)(1 << b)));
        }
    }
}

/* One Horner term: acc[r][g] +/-= popcount(x_b[r] AND w_j[g]) over all k. */
INLINE void term(__m512i a[TILE_ROWS][TILE_GROUPS], const uint64_t *xrow, int64_t xstride,
                 const uint64_t *wplane, int64_t wstride, int64_t kwords, const int R,
                 const int G, const int negative)
{
    int64_t kw;
    int r, g;
    for (kw = 0; kw < kwords; kw++) {
        __m512i wv[TILE_GROUPS];
#pragma GCC unroll 8
        for (g = 0; g < G; g++)
            wv[g] = _mm512_loadu_si512((const void *)(wplane + g * wstride + kw * 8));
#pragma GCC unroll 6
        for (r = 0; r < R; r++) {
            __m512i xb = _mm512_set1_epi64((long long)xrow[r * xstride + kw]);
#pragma GCC unroll 8
            for (g = 0; g < G; g++) {
                __m512i cnt = _mm512_popcnt_epi64(_mm512_and_si512(xb, wv[g]));
                a[r][g] = negative ? _mm512_sub_epi64(a[r][g], cnt)
                                   : _mm512_add_epi64(a[r][g], cnt);
            }
        }
    }
}

INLINE void tile(const uint64_t *xp, int32_t nb, const tsq_packed_weights *pw, int64_t g0,
                 int64_t ncols, int32_t *acc, int64_t ldacc, const int R, const int G)
{
    __m512i a[TILE_ROWS][TILE_GROUPS];
    int64_t kwords = pw->kwords, wstride = pw->bits * kwords * 8;
    int32_t bits = pw->bits, s, b;
    int r, g;
#pragma GCC unroll 6
    for (r = 0; r < R; r++)
#pragma GCC unroll 8
        for (g = 0; g < G; g++)
            a[r][g] = _mm512_setzero_si512();
    for (s = nb + bits - 2; s >= 0; s--) {
        if (s != nb + bits - 2) {
#pragma GCC unroll 6
            for (r = 0; r < R; r++)
#pragma GCC unroll 8
                for (g = 0; g < G; g++)
                    a[r][g] = _mm512_slli_epi64(a[r][g], 1);
        }
        for (b = s - bits + 1 > 0 ? s - bits + 1 : 0; b <= s && b < nb; b++) {
            int32_t j = s - b;
            const uint64_t *xrow = xp + b * kwords;
            const uint64_t *wplane = pw->planes + (size_t)((g0 * bits + j) * kwords) * 8;
            if (j == bits - 1)
                term(a, xrow, nb * kwords, wplane, wstride, kwords, R, G, 1);
            else
                term(a, xrow, nb * kwords, wplane, wstride, kwords, R, G, 0);
        }
    }
#pragma GCC unroll 6
    for (r = 0; r < R; r++)
#pragma GCC unroll 8
        for (g = 0; g < G; g++) {
            int64_t left = ncols - 8 * g;
            __m256i v = _mm512_cvtepi64_epi32(a[r][g]);
            int32_t *dst = acc + r * ldacc + 8 * g;
            if (left >= 8)
                _mm256_storeu_si256((__m256i *)dst, v);
            else
                _mm256_mask_storeu_epi32(dst, (__mmask8)((1u << left) - 1u), v);
        }
}

typedef void (*tile_fn)(const uint64_t *, int32_t, const tsq_packed_weights *, int64_t,
                        int64_t, int32_t *, int64_t);

#define TILE(R, G)                                                                        \
    static void tile_##R##_##G(const uint64_t *xp, int32_t nb,                            \
                               const tsq_packed_weights *pw, int64_t g0, int64_t nc,      \
                               int32_t *acc, int64_t ldacc)                               \
    {                                                                                     \
        tile(xp, nb, pw, g0, nc, acc, ldacc, R, G);                                       \
    }
TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(1, 4) TILE(1, 5) TILE(1, 6) TILE(1, 7) TILE(1, 8)
TILE(2, 1) TILE(2, 2) TILE(2, 3) TILE(2, 4)
TILE(3, 1) TILE(3, 2) TILE(3, 3) TILE(3, 4)
TILE(4, 1) TILE(4, 2) TILE(4, 3) TILE(4, 4)
TILE(5, 1) TILE(5, 2) TILE(5, 3) TILE(5, 4)
TILE(6, 1) TILE(6, 2) TILE(6, 3) TILE(6, 4)

static const tile_fn tiles[TILE_ROWS + 1][TILE_GROUPS + 1] = {
    {NULL},
    {NULL, tile_1_1, tile_1_2, tile_1_3, tile_1_4, tile_1_5, tile_1_6, tile_1_7, tile_1_8},
    {NULL, tile_2_1, tile_2_2, tile_2_3, tile_2_4},
    {NULL, tile_3_1, tile_3_2, tile_3_3, tile_3_4},
    {NULL, tile_4_1, tile_4_2, tile_4_3, tile_4_4},
    {NULL, tile_5_1, tile_5_2, tile_5_3, tile_5_4},
    {NULL, tile_6_1, tile_6_2, tile_6_3, tile_6_4},
};

void tsq__gemm_vpopcnt(const uint64_t *xp, int64_t m, int32_t nb,
                       const tsq_packed_weights *pw, int64_t c0, int64_t c1, int32_t *acc,
                       int64_t ldacc)
{
    int64_t xstride = nb * pw->kwords, c, r;
    /* One row: all 8 groups per tile, more independent sums per load. */
    int gmax = m == 1 ? 8 : 4;
    for (c = c0; c < c1; c += 8 * gmax) {
        int64_t ncols = c1 - c < 8 * gmax ? c1 - c : 8 * gmax;
        int ng = (int)((ncols + 7) / 8);
        for (r = 0; r < m; r += TILE_ROWS) {
            int nr = m - r < TILE_ROWS ? (int)(m - r) : TILE_ROWS;
            tiles[nr][ng](xp + r * xstride, nb, pw, c / 8, ncols, acc + r * ldacc + c, ldacc);
        }
    }
}
