/* The threshold epilogue into the byte layout on AVX2 (the same bytes as
 * tsq__bp_epilogue_bytes_ref): 16 channels per step as two vectors of 8.
 * A pooled code is the largest of its window's codes, and the code grows
 * with the flipped accumulator (acc, or ~acc for a negative scale:
 * tsq__flipped_avx2), so the window's flipped accumulators are maxed first
 * and compared with the thresholds once. In the pair layout two codes
 * share a byte (kernels/bitplane.h). Compiled with -mavx2; called
 * only when the CPU has it. */
#include "kernels/bitplane.h"
#include "kernels/thresholds_avx2.h"

#include <string.h>

/* The chunk's per-channel constants, kept in registers across its pixels
 * (L <= 3 levels; more are read from th at every pixel). */
typedef struct {
    __m256i flip, t[3];
} levels8;

static inline __attribute__((always_inline)) levels8 levels_of(const tsq_thresholds *th,
                                                               int64_t c, const int L)
{
    levels8 v;
    int m;
    v.flip = _mm256_loadu_si256((const __m256i *)(const void *)(th->flip + c));
    for (m = 0; m < 3; m++)
        v.t[m] = m < L ? _mm256_loadu_si256((const __m256i *)(const void *)(th->t + m * th->padded + c))
                       : _mm256_setzero_si256();
    return v;
}

/* tsq__below_flipped_avx2 with the constants in registers (L 1 or 3), or
 * from th. */
static inline __attribute__((always_inline)) __m256i below(const tsq_thresholds *th,
                                                           const levels8 *v, __m256i x,
                                                           int64_t c, const int L)
{
    __m256i b;
    int m;
    if (L != 1 && L != 3)
        return tsq__below_flipped_avx2(th, x, c);
    b = _mm256_cmpgt_epi32(v->t[0], x);
    for (m = 1; m < L; m++)
        b = _mm256_add_epi32(b, _mm256_cmpgt_epi32(v->t[m], x));
    return b;
}

/* Output rows first .. last - 1 (of the pooled grid when S is 2), channel
 * chunk c .. c + 15 (n of them valid), L levels (1, 3, or 0: any). */
static inline __attribute__((always_inline)) void
chunk(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc, int64_t y0, int64_t first,
      int64_t last, int64_t ow, const tsq__bp_geom *og, uint8_t *img, int64_t c, int64_t n,
      const int S, const int L)
{
    int64_t wp = og->w + 2 * og->pad, oy, ox;
    const int pairs = og->bytes == 2;
    const levels8 vl = levels_of(th, c, L), vh = levels_of(th, c + 8, L);
    for (oy = first; oy < last; oy++) {
        const int32_t *row = acc + (oy * S - y0) * ow * ldacc + c;
        uint8_t *dst = img + ((oy + og->pad) * wp + og->pad) * og->cb + tsq__bp_byte_of(og, c);
        for (ox = 0; ox < og->w; ox++, dst += og->cb) {
            __m256i lo = _mm256_set1_epi32(INT32_MIN), hi = lo;
            int dy, dx;
            for (dy = 0; dy < S; dy++)
                for (dx = 0; dx < S; dx++) {
                    const int32_t *a = row + (dy * ow + ox * S + dx) * ldacc;
                    lo = _mm256_max_epi32(lo, _mm256_xor_si256(tsq__load_acc8_avx2(a, n), vl.flip));
                    hi = _mm256_max_epi32(
                        hi, _mm256_xor_si256(tsq__load_acc8_avx2(a + 8, n - 8), vh.flip));
                }
            {
                __m128i b =
                    tsq__codes_to_bytes_avx2(tsq__code_of_below_avx2(th, below(th, &vl, lo, c, L), c),
                                             tsq__code_of_below_avx2(th, below(th, &vh, hi, c + 8, L), c + 8));
                if (pairs) { /* 16 a_2j + 64 a_2j+1 in byte j (n is even) */
                    __m128i p = _mm_maddubs_epi16(b, _mm_set1_epi16(0x4010));
                    p = _mm_packus_epi16(p, p);
                    if (n == 16)
                        _mm_storel_epi64((__m128i *)(void *)dst, p);
                    else
                        tsq__store_bytes_avx2(dst, p, n / 2);
                } else if (n == 16)
                    _mm_storeu_si128((__m128i *)(void *)dst, b);
                else
                    tsq__store_bytes_avx2(dst, b, n);
            }
        }
    }
}

void tsq__bp_epilogue_bytes_avx2(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                 int64_t y0, int64_t nrows, int64_t ow, int pool,
                                 const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, first = y0 / s, last = (y0 + nrows) / s, c;
    int L = th->maxcode;
    last = last < og->h ? last : og->h;
    for (c = 0; c < og->c; c += 16) {
        int64_t n = og->c - c < 16 ? og->c - c : 16;
        if (L == 3 && pool)
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 2, 3);
        else if (L == 3)
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 1, 3);
        else if (L == 1 && pool)
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 2, 1);
        else if (L == 1)
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 1, 1);
        else if (pool)
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 2, 0);
        else
            chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, n, 1, 0);
    }
}
