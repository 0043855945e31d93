/* AVX2 product for codes of at most 2 bits times 2-bit weights, in the
 * pair layout (kernels/bitplane.h): each activation byte holds two codes,
 * A = a0 + 4 a1, stored as 16 A, and each weight byte holds the matching
 * pair of weights of one column as a 4-bit index i = (w0 + 2) + 4 (w1 + 2)
 * (tsq__pair_panels). The 16 possible products a0 w0 + a1 w1 of one
 * activation pair form a 16-byte table, `products[A]`, so one vpshufb of
 * that table by 32 weight indices gives 32 columns' pair sums: 64
 * multiply-adds per shuffle, where vpmaddubsw gives 32 (gemm_avx2.c).
 * The table's address is the activation byte itself (16 A), so a pixel
 * costs one byte load and one 16-byte broadcast per pair of k.
 *
 * Tile: 4 rows x 64 columns (two weight vectors): 8 byte sums, the two
 * weight vectors and a broadcast table fill 11 registers; more rows
 * spilled (gcc) and ran slower. The byte sums take `flush` steps (127 /
 * the largest pair sum: 21 for ternary weights and 2-bit codes) before
 * they are sign-extended into 16-bit sums in memory, which hold the row
 * (the plan takes the path only when k / 2 * that bound fits int16), and
 * are widened into acc at the end. Rows are read from x (ldx apart) or,
 * for a convolution, in place as kh window rows of seg bytes, step apart.
 * Compiled with -mavx2; called only when the CPU has it. */
#include "kernels_internal.h"

#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

enum { ROWS = 4, COLS = TSQ__PAIR_COLS };

/* products[A][i] = a0 w0 + a1 w1 with A = a0 + 4 a1 and i = (w0 + 2) + 4 (w1 + 2). */
#define P(A, i) (int8_t)(((A) % 4) * ((i) % 4 - 2) + ((A) / 4) * ((i) / 4 - 2))
#define ROW(A)                                                                              \
    {                                                                                       \
        P(A, 0), P(A, 1), P(A, 2), P(A, 3), P(A, 4), P(A, 5), P(A, 6), P(A, 7), P(A, 8),     \
            P(A, 9), P(A, 10), P(A, 11), P(A, 12), P(A, 13), P(A, 14), P(A, 15)              \
    }
static const int8_t products[16][16] __attribute__((aligned(16))) = {
    ROW(0), ROW(1), ROW(2),  ROW(3),  ROW(4),  ROW(5),  ROW(6),  ROW(7),
    ROW(8), ROW(9), ROW(10), ROW(11), ROW(12), ROW(13), ROW(14), ROW(15)};
#undef ROW
#undef P

/* n pairs of k for R rows (row r's at p[r]), the panel's 64 indices per
 * pair at w, added into the byte sums. The local copy keeps them in
 * registers through the loop. */
INLINE void steps(const uint8_t *const p[ROWS], const uint8_t *w, int64_t n,
                  __m256i sums[ROWS][2], const int R)
{
    const uint8_t *table = (const uint8_t *)products;
    __m256i s[ROWS][2];
    int64_t q;
    int r;
#pragma GCC unroll 4
    for (r = 0; r < R; r++) {
        s[r][0] = sums[r][0];
        s[r][1] = sums[r][1];
    }
    for (q = 0; q < n; q++, w += COLS) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)w);
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(w + 32));
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            __m256i t = _mm256_broadcastsi128_si256(
                _mm_load_si128((const __m128i *)(const void *)(table + p[r][q])));
            s[r][0] = _mm256_add_epi8(s[r][0], _mm256_shuffle_epi8(t, w0));
            s[r][1] = _mm256_add_epi8(s[r][1], _mm256_shuffle_epi8(t, w1));
        }
    }
#pragma GCC unroll 4
    for (r = 0; r < R; r++) {
        sums[r][0] = s[r][0];
        sums[r][1] = s[r][1];
    }
}

/* The byte sums sign-extended into the 16-bit row sums, and reset. */
INLINE void flush8(__m256i sums[ROWS][2], int16_t wide[ROWS][COLS], const int R)
{
    int r, h;
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        for (h = 0; h < 2; h++) {
            __m256i *d = (__m256i *)(void *)(wide[r] + 32 * h);
            __m256i v = sums[r][h];
            d[0] = _mm256_add_epi16(d[0], _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)));
            d[1] = _mm256_add_epi16(d[1], _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)));
            sums[r][h] = _mm256_setzero_si256();
        }
}

/* R rows x ncols (<= 64) columns: kh segments of seg pairs each (segment ky
 * of row r at rows[r] + ky * step), the panel's pairs in the same order. */
INLINE void tile(const uint8_t *const *rows, int64_t kh, int64_t seg, int64_t step,
                 const uint8_t *w, int64_t flush, int64_t ncols, int32_t *acc, int64_t ldacc,
                 const int R)
{
    __m256i sums[ROWS][2];
    int16_t wide[ROWS][COLS] __attribute__((aligned(32)));
    const uint8_t *p[ROWS];
    int64_t ky, j, n, left = flush, c;
    int r;
    memset(wide, 0, sizeof wide);
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        sums[r][0] = sums[r][1] = _mm256_setzero_si256();
    for (ky = 0; ky < kh; ky++)
        for (j = 0; j < seg; j += n, w += n * COLS) {
            n = seg - j < left ? seg - j : left;
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                p[r] = rows[r] + ky * step + j;
            steps(p, w, n, sums, R);
            left -= n;
            if (left == 0) {
                flush8(sums, wide, R);
                left = flush;
            }
        }
    flush8(sums, wide, R);
    for (r = 0; r < R; r++) {
        int32_t *dst = acc + r * ldacc, tmp[COLS];
        int32_t *out = ncols == COLS ? dst : tmp;
        for (c = 0; c < COLS; c += 8)
            _mm256_storeu_si256(
                (__m256i *)(void *)(out + c),
                _mm256_cvtepi16_epi32(_mm_load_si128((const __m128i *)(const void *)(wide[r] + c))));
        if (out == tmp)
            memcpy(dst, tmp, (size_t)ncols * sizeof(int32_t));
    }
}

typedef void (*tile_fn)(const uint8_t *const *, int64_t, int64_t, int64_t, const uint8_t *,
                        int64_t, int64_t, int32_t *, int64_t);
#define TILE(R)                                                                             \
    static void tile_##R(const uint8_t *const *rows, int64_t kh, int64_t seg, int64_t step,  \
                         const uint8_t *w, int64_t flush, int64_t ncols, int32_t *acc,      \
                         int64_t ldacc)                                                     \
    {                                                                                       \
        tile(rows, kh, seg, step, w, flush, ncols, acc, ldacc, R);                          \
    }
TILE(1) TILE(2) TILE(3) TILE(4)
static const tile_fn tiles[ROWS + 1] = {NULL, tile_1, tile_2, tile_3, tile_4};

void tsq__conv_pairs_avx2(const uint8_t *const *rows, int64_t m, int64_t kh, int64_t seg,
                          int64_t step, int64_t kpairs, const uint8_t *panels, int32_t flush,
                          int64_t n, int32_t *acc, int64_t ldacc)
{
    int64_t c, r;
    for (c = 0; c < n; c += COLS) {
        int64_t ncols = n - c < COLS ? n - c : COLS;
        const uint8_t *w = panels + c / COLS * kpairs * COLS;
        for (r = 0; r < m; r += ROWS) {
            int nr = m - r < ROWS ? (int)(m - r) : ROWS;
            tiles[nr](rows + r, kh, seg, step, w, flush, ncols, acc + r * ldacc + c, ldacc);
        }
    }
}

void tsq__gemm_pairs_avx2(const uint8_t *x, int64_t ldx, int64_t m, int64_t kpairs,
                          const uint8_t *panels, int32_t flush, int64_t n, int32_t *acc,
                          int64_t ldacc)
{
    int64_t r;
    for (r = 0; r < m; r += ROWS) { /* each row one segment of kpairs */
        const uint8_t *rows[ROWS];
        int64_t nr = m - r < ROWS ? m - r : ROWS, i;
        for (i = 0; i < nr; i++)
            rows[i] = x + (r + i) * ldx;
        tsq__conv_pairs_avx2(rows, nr, 1, kpairs, 0, kpairs, panels, flush, n,
                             acc + r * ldacc, ldacc);
    }
}
