/* AVX-512 versions of the bit-plane kernels (bitplane.h; the same bytes as
 * bitplane.c). The threshold epilogue works on compare masks: with
 * thresholds non-decreasing in m, "code >= m" is the mask of the m-th
 * compare (and of the channel's top code), nested in m, so the 2 x 2 max of
 * codes is the OR of the window's masks and bit b of the code is the OR of
 * the "code == m" masks over the m with bit b set. No code is ever formed.
 * Compiled with -mavx512vpopcntdq (and BW); called only when the CPU has
 * the VPOPCNT kernel's features. */
#include "kernels/bitplane.h"

#include <immintrin.h>
#include <string.h>

static inline __mmask64 low_bytes(int64_t n)
{
    return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
}

/* n bytes src -> dst, exact (masked: no byte outside is read or written). */
static inline void copy_bytes(uint8_t *dst, const uint8_t *src, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i += 64) {
        __mmask64 m = low_bytes(n - i);
        _mm512_mask_storeu_epi8(dst + i, m, _mm512_maskz_loadu_epi8(m, src + i));
    }
}

void tsq__bp_gather_avx512(const tsq__bp_geom *g, const tsq__bp_window *win,
                           const uint8_t *img, int64_t q0, int64_t rows, uint64_t *xp)
{
    int64_t r, ky, seg = win->kw * g->cb, used = win->kh * seg, oy = q0 / win->ow,
                   ox = q0 % win->ow;
    int32_t b;
    for (r = 0; r < rows; r++) {
        const uint8_t *src = img + oy * win->stride * g->row + ox * win->stride * g->cb;
        for (b = 0; b < g->nb; b++) {
            uint8_t *dst = (uint8_t *)(xp + (r * g->nb + b) * win->kwords);
            for (ky = 0; ky < win->kh; ky++)
                copy_bytes(dst + ky * seg, src + b * g->plane + ky * g->row, seg);
            if (win->kwords * 8 > used) /* at most 7 bytes of k-word tail */
                _mm_mask_storeu_epi8(dst + used, (__mmask16)low_bytes(win->kwords * 8 - used),
                                     _mm_setzero_si128());
        }
        if (++ox == win->ow) {
            ox = 0;
            oy++;
        }
    }
}

void tsq__bp_from_codes_avx512(const tsq__bp_geom *g, const uint8_t *codes, uint8_t *img)
{
    int64_t y, x, c, wp = g->w + 2 * g->pad;
    int32_t b;
    memset(img, 0, (size_t)g->image);
    for (y = 0; y < g->h; y++)
        for (x = 0; x < g->w; x++) {
            const uint8_t *px = codes + (y * g->w + x) * g->c;
            uint8_t *dst = img + ((y + g->pad) * wp + x + g->pad) * g->cb;
            for (c = 0; c < g->c; c += 64) {
                __m512i v = _mm512_maskz_loadu_epi8(low_bytes(g->c - c), px + c);
                int64_t nbytes = g->cb - c / 8 < 8 ? g->cb - c / 8 : 8;
                for (b = 0; b < g->nb; b++) {
                    uint64_t m = _mm512_test_epi8_mask(v, _mm512_set1_epi8((char)(1 << b)));
                    memcpy(dst + b * g->plane + c / 8, &m, (size_t)nbytes);
                }
            }
        }
}

#define MAX_LEVELS 255

void tsq__bp_epilogue_avx512(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                             int64_t y0, int64_t nrows, int64_t ow, int pool,
                             const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, wp = og->w + 2 * og->pad, oy, ox, c;
    int64_t first = y0 / s, last = (y0 + nrows) / s;
    int32_t m, b, levels = th->maxcode;
    __mmask16 ge[MAX_LEVELS + 2];
    for (c = 0; c < og->c; c += 16) {
        __mmask16 valid = (__mmask16)(og->c - c >= 16 ? 0xFFFF : (1u << (og->c - c)) - 1u);
        __m512i flip = _mm512_loadu_si512((const void *)(th->flip + c));
        __m512i top = _mm512_loadu_si512((const void *)(th->top + c));
        int64_t nbytes = og->cb - c / 8 < 2 ? og->cb - c / 8 : 2;
        __mmask16 below_top[MAX_LEVELS + 1];
        for (m = 1; m <= levels; m++)
            below_top[m] = _mm512_mask_cmpge_epi32_mask(valid, top, _mm512_set1_epi32(m));
        for (oy = first; oy < last && oy < og->h; oy++)
            for (ox = 0; ox < og->w; ox++) {
                uint8_t *dst = img + ((oy + og->pad) * wp + ox + og->pad) * og->cb + c / 8;
                int64_t dy, dx;
                for (m = 1; m <= levels + 1; m++)
                    ge[m] = 0;
                for (dy = 0; dy < s; dy++)
                    for (dx = 0; dx < s; dx++) {
                        int64_t q = (oy * s + dy - y0) * ow + ox * s + dx;
                        __m512i a = _mm512_xor_si512(
                            _mm512_maskz_loadu_epi32(valid, acc + q * ldacc + c), flip);
                        for (m = 1; m <= levels; m++)
                            ge[m] |= _mm512_mask_cmpge_epi32_mask(
                                below_top[m], a,
                                _mm512_loadu_si512((const void *)(th->t + (m - 1) * th->padded + c)));
                    }
                for (b = 0; b < og->nb; b++) {
                    uint16_t bits = 0;
                    for (m = 1; m <= levels; m++)
                        if ((m >> b) & 1)
                            bits |= (uint16_t)(ge[m] & ~ge[m + 1]);
                    memcpy(dst + b * og->plane, &bits, (size_t)nbytes);
                }
            }
    }
}
