/* AVX2 kernel: vpmaddubsw multiplies 32 unsigned codes by 32 signed
 * weights and adds adjacent pairs into 16-bit lanes, saturating. A pair
 * sum is at most 2 * maxcode * maxweight in magnitude (6 for 2-bit codes
 * and ternary weights), so the 16-bit sums are added up for L steps with
 * vpaddw, L = 32767 / (2 * maxprod), before vpmaddwd with ones widens them
 * into int32 (adding the two halves of each column's dword). When even one
 * pair can saturate (8-bit codes with 8-bit weights) the codes are split
 * into nibbles, each multiplied separately and widened at every step.
 *
 * Tile: up to 5 rows x 1 panel (16 columns, two 8-column halves of the
 * 64-byte panel row): 10 16-bit sums, the two weight vectors, a broadcast
 * and a product take 14 of the 16 registers (6 rows spilled two sums to
 * the stack and ran slower), and the 32-bit sums wait in memory (with
 * 2-bit codes and ternary weights L is 2730 groups of 4 k, so a layer of
 * k < 10920 widens once, at the end, straight into acc). Rows are read from x (ldx
 * apart) or, for a convolution in the byte layout, in place as window rows
 * (tsq__conv_avx2). Also here: the AVX2 decoder from bit planes to panels.
 * Compiled with -mavx2; called only when the CPU has it. */
#include "kernels_internal.h"
#include "kernels/transpose_avx2.h"

#include <immintrin.h>
#include <string.h>

#define TILE_ROWS 5
#define NIB_ROWS 4
#define INLINE static inline __attribute__((always_inline))

INLINE __m256i bcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Codes k .. k+3 of a row, zero beyond the row's end (k + n). */
INLINE __m256i bcast_codes(const uint8_t *row, int64_t q, int64_t k)
{
    uint8_t b[4] = {0, 0, 0, 0};
    if (4 * q + 4 <= k)
        return bcast4(row + 4 * q);
    memcpy(b, row + 4 * q, (size_t)(k - 4 * q));
    return bcast4(b);
}

/* R rows of 16 columns in int32 (rows 16 apart) into acc, ncols (<= 16)
 * columns each: a partial last panel must not write past column c1. */
INLINE void store_rows(const int32_t *wide, int R, int64_t ncols, int32_t *acc, int64_t ldacc)
{
    int r;
    for (r = 0; r < R; r++)
        memcpy(acc + r * ldacc, wide + 16 * r, (size_t)ncols * sizeof(int32_t));
}

/* The 16-bit sums of R rows widened and added to their int32 rows (16
 * apart), and reset. */
INLINE void widen(__m256i s16[TILE_ROWS][2], int32_t *wide, const int R)
{
    const __m256i ones = _mm256_set1_epi16(1);
    int r, h;
#pragma GCC unroll 5
    for (r = 0; r < R; r++)
        for (h = 0; h < 2; h++) {
            __m256i *dst = (__m256i *)(void *)(wide + 16 * r + 8 * h);
            __m256i v = _mm256_madd_epi16(s16[r][h], ones);
            _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), v));
            s16[r][h] = _mm256_setzero_si256();
        }
}

/* The last 16-bit sums widened, plus the int32 rows when there are any,
 * into acc (ncols columns of each row). */
INLINE void finish(__m256i s16[TILE_ROWS][2], int32_t *wide, int widened, int64_t ncols,
                   int32_t *acc, int64_t ldacc, const int R)
{
    const __m256i ones = _mm256_set1_epi16(1);
    int r, h;
    if (widened || ncols < 16) {
        if (!widened)
            memset(wide, 0, (size_t)R * 16 * sizeof(int32_t));
        widen(s16, wide, R);
        store_rows(wide, R, ncols, acc, ldacc);
        return;
    }
#pragma GCC unroll 5
    for (r = 0; r < R; r++)
        for (h = 0; h < 2; h++)
            _mm256_storeu_si256((__m256i *)(void *)(acc + r * ldacc + 8 * h),
                                _mm256_madd_epi16(s16[r][h], ones));
}

/* One group of 4 k for R rows: the codes at p[r] + off times the panel row w. */
INLINE void group(__m256i s16[TILE_ROWS][2], const uint8_t *const *p, int64_t off,
                  const int8_t *w, const int R)
{
    __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)w);
    __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(w + 32));
    int r;
#pragma GCC unroll 5
    for (r = 0; r < R; r++) {
        __m256i xb = bcast4(p[r] + off);
        s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_maddubs_epi16(xb, w0));
        s16[r][1] = _mm256_add_epi16(s16[r][1], _mm256_maddubs_epi16(xb, w1));
    }
}

/* R rows, each kh segments of sq groups of 4 codes (segment ky at rows[r]
 * + ky * step), then, when kh is 1, `tail` (0..3) codes more; 16-bit sums
 * widened every `flush` groups. */
INLINE void tile16(const uint8_t *const *rows, int64_t kh, int64_t sq, int64_t step,
                   int64_t tail, const int8_t *w, int64_t flush, int64_t ncols, int32_t *acc,
                   int64_t ldacc, const int R)
{
    __m256i s16[TILE_ROWS][2];
    int32_t wide[TILE_ROWS * 16];
    const uint8_t *p[TILE_ROWS];
    int64_t ky, q, left = flush;
    int r, widened = 0;
#pragma GCC unroll 5
    for (r = 0; r < R; r++)
        s16[r][0] = s16[r][1] = _mm256_setzero_si256();
    for (ky = 0; ky < kh; ky++) {
#pragma GCC unroll 5
        for (r = 0; r < R; r++)
            p[r] = rows[r] + ky * step;
        for (q = 0; q < sq; q++, w += 64) {
            group(s16, p, 4 * q, w, R);
            if (--left == 0) {
                if (!widened)
                    memset(wide, 0, sizeof wide);
                widened = 1;
                widen(s16, wide, R);
                left = flush;
            }
        }
    }
    if (tail) { /* the partial last group of k % 4 codes */
        uint8_t b[TILE_ROWS][4];
        const uint8_t *pb[TILE_ROWS];
        memset(b, 0, sizeof b);
#pragma GCC unroll 5
        for (r = 0; r < R; r++) {
            memcpy(b[r], rows[r] + 4 * sq, (size_t)tail); /* kh is 1 */
            pb[r] = b[r];
        }
        group(s16, pb, 0, w, R);
    }
    finish(s16, wide, widened, ncols, acc, ldacc, R);
}

/* Nibble split for codes whose pair products could saturate 16 bits:
 * x = 16 * hi + lo, each nibble times a weight stays far inside int16. */
INLINE void tile_nibbles(const uint8_t *x, int64_t ldx, int64_t k, const int8_t *w,
                         int64_t ncols, int32_t *acc, int64_t ldacc, const int R)
{
    const __m256i ones = _mm256_set1_epi16(1), sixteens = _mm256_set1_epi16(16);
    const __m256i low4 = _mm256_set1_epi8(15);
    __m256i s32[NIB_ROWS][2];
    int32_t wide[NIB_ROWS * 16];
    int64_t q, k4n = tsq__k4n(k);
    int r, h;
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        s32[r][0] = s32[r][1] = _mm256_setzero_si256();
    for (q = 0; q < k4n; q++) {
        __m256i wv[2];
        wv[0] = _mm256_loadu_si256((const __m256i *)(const void *)(w + q * 64));
        wv[1] = _mm256_loadu_si256((const __m256i *)(const void *)(w + q * 64 + 32));
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            __m256i xb = bcast_codes(x + r * ldx, q, k);
            __m256i lo = _mm256_and_si256(xb, low4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(xb, 4), low4);
            for (h = 0; h < 2; h++) {
                __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, wv[h]), ones);
                __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, wv[h]), sixteens);
                s32[r][h] = _mm256_add_epi32(s32[r][h], _mm256_add_epi32(pl, ph));
            }
        }
    }
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        for (h = 0; h < 2; h++)
            _mm256_storeu_si256((__m256i *)(void *)(wide + 16 * r + 8 * h), s32[r][h]);
    store_rows(wide, R, ncols, acc, ldacc);
}

typedef void (*tile_fn)(const uint8_t *const *, int64_t, int64_t, int64_t, int64_t,
                        const int8_t *, int64_t, int64_t, int32_t *, int64_t);
typedef void (*nib_fn)(const uint8_t *, int64_t, int64_t, const int8_t *, int64_t, int32_t *,
                       int64_t);

#define TILE(R)                                                                             \
    static void tile16_##R(const uint8_t *const *rows, int64_t kh, int64_t sq, int64_t step, \
                           int64_t tail, const int8_t *w, int64_t flush, int64_t nc,        \
                           int32_t *acc, int64_t ldacc)                                     \
    {                                                                                       \
        tile16(rows, kh, sq, step, tail, w, flush, nc, acc, ldacc, R);                      \
    }
#define NIB(R)                                                                              \
    static void tilenib_##R(const uint8_t *x, int64_t ldx, int64_t k, const int8_t *w,      \
                            int64_t nc, int32_t *acc, int64_t ldacc)                        \
    {                                                                                       \
        tile_nibbles(x, ldx, k, w, nc, acc, ldacc, R);                                      \
    }
TILE(1) TILE(2) TILE(3) TILE(4) TILE(5)
NIB(1) NIB(2) NIB(3) NIB(4)

static const tile_fn tiles16[TILE_ROWS + 1] = {NULL,     tile16_1, tile16_2,
                                               tile16_3, tile16_4, tile16_5};
static const nib_fn tilesnib[NIB_ROWS + 1] = {NULL, tilenib_1, tilenib_2, tilenib_3,
                                              tilenib_4};

void tsq__gemm_avx2(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, const int8_t *dec,
                    int32_t maxprod, int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    int64_t panel_stride = tsq__k4n(k) * 64, flush = tsq__avx2_flush_steps(maxprod), c, r;
    for (c = c0; c < c1; c += 16) {
        int64_t ncols = c1 - c < 16 ? c1 - c : 16;
        const int8_t *w = dec + (c - c0) / 16 * panel_stride;
        if (flush < 1) {
            for (r = 0; r < m; r += NIB_ROWS) {
                int nr = m - r < NIB_ROWS ? (int)(m - r) : NIB_ROWS;
                tilesnib[nr](x + r * ldx, ldx, k, w, ncols, acc + r * ldacc + c, ldacc);
            }
            continue;
        }
        for (r = 0; r < m; r += TILE_ROWS) {
            int nr = m - r < TILE_ROWS ? (int)(m - r) : TILE_ROWS, i;
            const uint8_t *rows[TILE_ROWS];
            for (i = 0; i < nr; i++)
                rows[i] = x + (r + i) * ldx;
            tiles16[nr](rows, 1, k / 4, 0, k % 4, w, flush, ncols, acc + r * ldacc + c, ldacc);
        }
    }
}

void tsq__conv_avx2(const uint8_t *const *rows, int64_t m, int64_t kh, int64_t seg,
                    int64_t step, int64_t k, const int8_t *dec, int32_t maxprod, int64_t c0,
                    int64_t c1, int32_t *acc, int64_t ldacc)
{
    int64_t panel_stride = tsq__k4n(k) * 64, flush = tsq__avx2_flush_steps(maxprod), c, r;
    for (c = c0; c < c1; c += 16) {
        int64_t ncols = c1 - c < 16 ? c1 - c : 16;
        const int8_t *w = dec + (c - c0) / 16 * panel_stride;
        for (r = 0; r < m; r += TILE_ROWS) {
            int nr = m - r < TILE_ROWS ? (int)(m - r) : TILE_ROWS;
            tiles16[nr](rows + r, kh, seg / 4, step, 0, w, flush, ncols, acc + r * ldacc + c,
                        ldacc);
        }
    }
}

uint8_t tsq__or_bytes_avx2(const uint8_t *x, int64_t n)
{
    __m256i v = _mm256_setzero_si256();
    uint8_t lanes[32], o = 0;
    int64_t i = 0;
    int j;
    for (; i + 32 <= n; i += 32)
        v = _mm256_or_si256(v, _mm256_loadu_si256((const __m256i *)(x + i)));
    _mm256_storeu_si256((__m256i *)lanes, v);
    for (j = 0; j < 32; j++)
        o |= lanes[j];
    for (; i < n; i++)
        o |= x[i];
    return o;
}

/* ---- decoder: bit planes -> panels ------------------------------------ */

/* 32 weights of one column (k = 32h .. 32h+31 of a k-word) as int8 bytes:
 * each plane's 32 mask bits are spread to bytes (vpshufb copies mask byte
 * i/8 into byte i, the AND/compare with 1 << (i % 8) tests its bit) and
 * select the plane's coefficient, 2^j or -2^(b-1) for the sign plane. */
static __m256i column_bytes(const uint64_t *word, int64_t plane_stride, int32_t bits,
                            int half)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_setzero_si256();
    int32_t j;
    for (j = 0; j < bits; j++) {
        uint32_t m = (uint32_t)(word[j * plane_stride] >> (32 * half));
        __m256i sel = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), spread);
        __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(sel, bit), bit);
        int8_t coef = (int8_t)(j == bits - 1 ? -(1 << j) : 1 << j);
        v = _mm256_add_epi8(v, _mm256_and_si256(set, _mm256_set1_epi8(coef)));
    }
    return v;
}

void tsq__decode_panels_avx2(const tsq_packed_weights *pw, int64_t p0, int64_t p1,
                             int8_t *dec)
{
    int64_t k4n = tsq__k4n(pw->k), plane_stride = pw->kwords * TSQ__GROUP_COLS, p, kw;
    int half, side, i;
    for (p = p0; p < p1; p++) {
        int8_t *panel = dec + (p - p0) * k4n * 64;
        for (kw = 0; kw < pw->kwords; kw++)
            for (half = 0; half < 2; half++) {
                int64_t q0 = kw * 16 + half * 8; /* first group of 4 k */
                if (q0 >= k4n)
                    break;
                for (side = 0; side < 2; side++) {
                    __m256i v[8];
                    for (i = 0; i < 8; i++) {
                        int64_t c = p * TSQ__PANEL_COLS + side * 8 + i;
                        const uint64_t *word = pw->planes +
                            (size_t)((c / TSQ__GROUP_COLS) * pw->bits * plane_stride +
                                     kw * TSQ__GROUP_COLS + c % TSQ__GROUP_COLS);
                        v[i] = c < pw->n ? column_bytes(word, plane_stride, pw->bits, half)
                                         : _mm256_setzero_si256();
                    }
                    tsq__transpose8_avx2(v);
                    for (i = 0; i < 8 && q0 + i < k4n; i++)
                        _mm256_storeu_si256((__m256i *)(panel + (q0 + i) * 64 + side * 32),
                                            v[i]);
                }
            }
    }
}
