/* AVX-512 VNNI kernel: vpdpbusd multiplies 4 unsigned codes by 4 signed
 * weights and adds the 4 products to an int32 lane, exactly (the products
 * are summed in 32 bits, so no intermediate saturates). TSQ's codes are
 * unsigned and its weights signed, so they go straight into the two operands
 * with no offset correction.
 *
 * Tile: up to 8 rows x 2 panels (32 columns). Per group of 4 k: one dword
 * of each row broadcast, two 64-byte weight rows loaded, 16 vpdpbusd.
 * Also here: the AVX-512 decoder from bit planes to panels. Compiled with
 * -mavx512vnni; called only when the CPU has it. */
#include "kernels_internal.h"
#include "transpose_avx512.h"

#include <immintrin.h>
#include <string.h>

#define TILE_ROWS 8
#define TILE_PANELS 2

#define INLINE static inline __attribute__((always_inline))

INLINE __m512i bcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* The last, partial group of 4 codes (k % 4 of them), zero-filled. */
INLINE __m512i bcast_tail(const uint8_t *p, int64_t n)
{
    uint8_t b[4] = {0, 0, 0, 0};
    memcpy(b, p, (size_t)n);
    return bcast4(b);
}

/* The R x C accumulators of a tile into acc (ncols columns of the tile's
 * 16 C, the last panel masked). */
INLINE void store_tile(__m512i a[TILE_ROWS][TILE_PANELS], int64_t ncols, int32_t *acc,
                       int64_t ldacc, const int R, const int C)
{
    int r, c;
#pragma GCC unroll 8
    for (r = 0; r < R; r++)
#pragma GCC unroll 2
        for (c = 0; c < C; c++) {
            int64_t left = ncols - 16 * c;
            int32_t *dst = acc + r * ldacc + 16 * c;
            if (left >= 16)
                _mm512_storeu_si512((void *)dst, a[r][c]);
            else
                _mm512_mask_storeu_epi32(dst, (__mmask16)((1u << left) - 1u), a[r][c]);
        }
}

INLINE void zero_tile(__m512i a[TILE_ROWS][TILE_PANELS], const int R, const int C)
{
    int i;
#pragma GCC unroll 16
    for (i = 0; i < R * C; i++)
        a[i / C][i % C] = _mm512_setzero_si512();
}

/* One group of 4 k into an in-place tile (itile): row r's 4 codes at
 * p[r] + off broadcast, times the C panels' 64-byte rows at w. */
INLINE void step4(__m512i a[TILE_ROWS][TILE_PANELS], const uint8_t *const *p, int64_t off,
                  const int8_t *w, int64_t panel_stride, const int R, const int C)
{
    __m512i wv[TILE_PANELS];
    int r, c;
#pragma GCC unroll 2
    for (c = 0; c < C; c++)
        wv[c] = _mm512_loadu_si512((const void *)(w + c * panel_stride));
#pragma GCC unroll 8
    for (r = 0; r < R; r++) {
        __m512i xb = bcast4(p[r] + off);
#pragma GCC unroll 2
        for (c = 0; c < C; c++)
            a[r][c] = _mm512_dpbusd_epi32(a[r][c], xb, wv[c]);
    }
}

/* S independent sets of accumulators, summed at the end: with one or two
 * rows there are too few vpdpbusd chains to hide its latency otherwise. */
INLINE void tile(const uint8_t *x, int64_t ldx, int64_t k, const int8_t *w,
                 int64_t panel_stride, int64_t ncols, int32_t *acc, int64_t ldacc,
                 const int R, const int C, const int S)
{
    __m512i a[4][TILE_ROWS][TILE_PANELS];
    int64_t q, kq = k / 4, kmain = kq / S * S;
    int r, c, u;
#pragma GCC unroll 4
    for (u = 0; u < S; u++)
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
#pragma GCC unroll 2
            for (c = 0; c < C; c++)
                a[u][r][c] = _mm512_setzero_si512();
    for (q = 0; q < kmain; q += S) {
#pragma GCC unroll 4
        for (u = 0; u < S; u++) {
            __m512i wv[TILE_PANELS];
#pragma GCC unroll 2
            for (c = 0; c < C; c++)
                wv[c] = _mm512_loadu_si512((const void *)(w + c * panel_stride + (q + u) * 64));
#pragma GCC unroll 8
            for (r = 0; r < R; r++) {
                __m512i xb = bcast4(x + r * ldx + (q + u) * 4);
#pragma GCC unroll 2
                for (c = 0; c < C; c++)
                    a[u][r][c] = _mm512_dpbusd_epi32(a[u][r][c], xb, wv[c]);
            }
        }
    }
    for (; q <= kq; q++) {
        /* The groups left over by the unrolling, then the partial group of
         * k % 4 codes (q == kq), if any. */
        __m512i wv[TILE_PANELS];
        if (q == kq && k % 4 == 0)
            break;
#pragma GCC unroll 2
        for (c = 0; c < C; c++)
            wv[c] = _mm512_loadu_si512((const void *)(w + c * panel_stride + q * 64));
#pragma GCC unroll 8
        for (r = 0; r < R; r++) {
            __m512i xb = q < kq ? bcast4(x + r * ldx + q * 4)
                                : bcast_tail(x + r * ldx + kq * 4, k % 4);
#pragma GCC unroll 2
            for (c = 0; c < C; c++)
                a[0][r][c] = _mm512_dpbusd_epi32(a[0][r][c], xb, wv[c]);
        }
    }
#pragma GCC unroll 8
    for (r = 0; r < R; r++)
#pragma GCC unroll 2
        for (c = 0; c < C; c++)
#pragma GCC unroll 4
            for (u = 1; u < S; u++)
                a[0][r][c] = _mm512_add_epi32(a[0][r][c], a[u][r][c]);
    store_tile(a[0], ncols, acc, ldacc, R, C);
}

typedef void (*tile_fn)(const uint8_t *, int64_t, int64_t, const int8_t *, int64_t, int64_t,
                        int32_t *, int64_t);

#define TILE(R, C)                                                                        \
    static void tile_##R##_##C(const uint8_t *x, int64_t ldx, int64_t k, const int8_t *w, \
                               int64_t ps, int64_t nc, int32_t *acc, int64_t ldacc)       \
    {                                                                                     \
        tile(x, ldx, k, w, ps, nc, acc, ldacc, R, C, R <= 2 ? 4 : 1);                     \
    }
/* Every tile size, and the table of a tile kind by rows and panels. */
#define EACH_TILE(T)                                                                        \
    T(1, 1) T(2, 1) T(3, 1) T(4, 1) T(5, 1) T(6, 1) T(7, 1) T(8, 1)                           \
    T(1, 2) T(2, 2) T(3, 2) T(4, 2) T(5, 2) T(6, 2) T(7, 2) T(8, 2)
#define TILE_TABLE(p)                                                                       \
    {                                                                                       \
        {NULL, NULL, NULL}, {NULL, p##_1_1, p##_1_2}, {NULL, p##_2_1, p##_2_2},             \
            {NULL, p##_3_1, p##_3_2}, {NULL, p##_4_1, p##_4_2}, {NULL, p##_5_1, p##_5_2},   \
            {NULL, p##_6_1, p##_6_2}, {NULL, p##_7_1, p##_7_2}, {NULL, p##_8_1, p##_8_2}    \
    }
EACH_TILE(TILE)

static const tile_fn tiles[TILE_ROWS + 1][TILE_PANELS + 1] = TILE_TABLE(tile);

/* ---- the indirect form: a convolution read in place ---------------- */

/* Row r of the product is kh segments of seg bytes (seg % 4 == 0), segment
 * ky at rows[r] + ky * step: the k order of the panels, read where the
 * image holds it instead of copied into an im2col row. Weights past
 * kh * seg are the panels' zero padding and are skipped. */
INLINE void itile(const uint8_t *const *rows, int64_t kh, int64_t seg, int64_t step,
                  const int8_t *w, int64_t panel_stride, int64_t ncols, int32_t *acc,
                  int64_t ldacc, const int R, const int C)
{
    __m512i a[TILE_ROWS][TILE_PANELS];
    int64_t ky, q, sq = seg / 4;
    int r;
    zero_tile(a, R, C);
    for (ky = 0; ky < kh; ky++) {
        const uint8_t *p[TILE_ROWS];
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
            p[r] = rows[r] + ky * step;
        for (q = 0; q < sq; q++)
            step4(a, p, q * 4, w + (ky * sq + q) * 64, panel_stride, R, C);
    }
    store_tile(a, ncols, acc, ldacc, R, C);
}

typedef void (*itile_fn)(const uint8_t *const *, int64_t, int64_t, int64_t, const int8_t *,
                         int64_t, int64_t, int32_t *, int64_t);

#define ITILE(R, C)                                                                          \
    static void itile_##R##_##C(const uint8_t *const *rows, int64_t kh, int64_t seg,        \
                                int64_t step, const int8_t *w, int64_t ps, int64_t nc,      \
                                int32_t *acc, int64_t ldacc)                                \
    {                                                                                        \
        itile(rows, kh, seg, step, w, ps, nc, acc, ldacc, R, C);                             \
    }
EACH_TILE(ITILE)

static const itile_fn itiles[TILE_ROWS + 1][TILE_PANELS + 1] = TILE_TABLE(itile);

/* Over panels of 32 columns and tiles of 8 rows: the rows of x (ldx apart),
 * or, with rows not NULL, read in place (itile). */
static void drive(const uint8_t *x, int64_t ldx, const uint8_t *const *rows, int64_t kh,
                  int64_t seg, int64_t step, int64_t m, int64_t k, const int8_t *dec,
                  int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    int64_t panel_stride = tsq__k4n(k) * 64, c, r;
    for (c = c0; c < c1; c += 16 * TILE_PANELS) {
        int64_t ncols = c1 - c < 16 * TILE_PANELS ? c1 - c : 16 * TILE_PANELS;
        int np = (int)((ncols + 15) / 16);
        const int8_t *w = dec + (c - c0) / 16 * panel_stride;
        for (r = 0; r < m; r += TILE_ROWS) {
            int nr = m - r < TILE_ROWS ? (int)(m - r) : TILE_ROWS;
            int32_t *out = acc + r * ldacc + c;
            if (rows)
                itiles[nr][np](rows + r, kh, seg, step, w, panel_stride, ncols, out, ldacc);
            else
                tiles[nr][np](x + r * ldx, ldx, k, w, panel_stride, ncols, out, ldacc);
        }
    }
}

void tsq__gemm_vnni(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, const int8_t *dec,
                    int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    drive(x, ldx, NULL, 0, 0, 0, m, k, dec, c0, c1, acc, ldacc);
}

void tsq__conv_vnni(const uint8_t *const *rows, int64_t m, int64_t kh, int64_t seg,
                    int64_t step, int64_t k, const int8_t *dec, int64_t c0, int64_t c1,
                    int32_t *acc, int64_t ldacc)
{
    drive(NULL, 0, rows, kh, seg, step, m, k, dec, c0, c1, acc, ldacc);
}

/* ---- decoder: bit planes -> panels ------------------------------------ */

/* 64 weights of column c at k-word kw as int8 bytes: each plane's mask
 * selects its coefficient, 2^j or, for the sign plane, -2^(b-1). */
static __m512i column_bytes(const tsq_packed_weights *pw, int64_t c, int64_t kw)
{
    const uint64_t *base;
    __m512i v = _mm512_setzero_si512();
    int32_t j;
    if (c >= pw->n)
        return v;
    base = pw->planes + (size_t)((c / TSQ__GROUP_COLS) * pw->bits * pw->kwords + kw) *
                            TSQ__GROUP_COLS + c % TSQ__GROUP_COLS;
    for (j = 0; j < pw->bits; j++) {
        __mmask64 mk = base[(size_t)(j * pw->kwords) * TSQ__GROUP_COLS];
        int8_t coef = (int8_t)(j == pw->bits - 1 ? -(1 << j) : 1 << j);
        v = _mm512_add_epi8(v, _mm512_maskz_mov_epi8(mk, _mm512_set1_epi8(coef)));
    }
    return v;
}

void tsq__decode_panels_avx512(const tsq_packed_weights *pw, int64_t p0, int64_t p1,
                               int8_t *dec)
{
    int64_t k4n = tsq__k4n(pw->k), p, kw;
    int i;
    for (p = p0; p < p1; p++) {
        int8_t *panel = dec + (p - p0) * k4n * 64;
        for (kw = 0; kw < pw->kwords; kw++) {
            __m512i v[16];
            for (i = 0; i < 16; i++)
                v[i] = column_bytes(pw, p * TSQ__PANEL_COLS + i, kw);
            tsq__transpose16_avx512(v);
            for (i = 0; i < 16 && kw * 16 + i < k4n; i++)
                _mm512_storeu_si512((void *)(panel + (kw * 16 + i) * 64), v[i]);
        }
    }
}
