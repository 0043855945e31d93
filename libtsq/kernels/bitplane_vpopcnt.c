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

#define INLINE static inline __attribute__((always_inline))

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

/* The gather builds each im2col row in registers: one masked load per
 * window row (two where a row straddles 64 bytes) at the byte offset it has
 * in the row, then one store per 64 bytes, zero tail included. A masked-off
 * byte is never read, so the loads may start before the window row. */
#define GATHER_ZMM 4
#define GATHER_OPS 32

typedef struct {
    int z;           /* register (64-byte part of the row) */
    int64_t off;     /* load address - plane row base */
    __mmask64 m;     /* bytes loaded */
} gather_op;

INLINE void gather_rows(const tsq__bp_geom *g, const tsq__bp_window *win, const uint8_t *img,
                        int64_t q0, int64_t rows, uint64_t *xp, const gather_op *ops, int nops,
                        const int NZ)
{
    int64_t r, oy = q0 / win->ow, ox = q0 % win->ow, bytes = win->kwords * 8;
    __mmask64 last = low_bytes(bytes - (NZ - 1) * 64);
    int32_t b;
    int i, z;
    for (r = 0; r < rows; r++) {
        const uint8_t *src = img + oy * win->stride * g->row + ox * win->stride * g->cb;
        for (b = 0; b < g->nb; b++) {
            uint8_t *dst = (uint8_t *)(xp + (r * g->nb + b) * win->kwords);
            const uint8_t *base = src + b * g->plane;
            __m512i v[GATHER_ZMM];
            for (z = 0; z < NZ; z++)
                v[z] = _mm512_setzero_si512();
            for (i = 0; i < nops; i++)
                v[ops[i].z] = _mm512_mask_loadu_epi8(v[ops[i].z], ops[i].m, base + ops[i].off);
            for (z = 0; z < NZ - 1; z++)
                _mm512_storeu_si512((void *)(dst + 64 * z), v[z]);
            _mm512_mask_storeu_epi8(dst + 64 * (NZ - 1), last, v[NZ - 1]);
        }
        if (++ox == win->ow) {
            ox = 0;
            oy++;
        }
    }
}

static void gather_simple(const tsq__bp_geom *g, const tsq__bp_window *win, const uint8_t *img,
                          int64_t q0, int64_t rows, uint64_t *xp)
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

void tsq__bp_gather_avx512(const tsq__bp_geom *g, const tsq__bp_window *win,
                           const uint8_t *img, int64_t q0, int64_t rows, uint64_t *xp)
{
    gather_op ops[GATHER_OPS];
    int64_t seg = win->kw * g->cb, ky, nz = (win->kwords * 8 + 63) / 64, z;
    int nops = 0;
    if (nz > GATHER_ZMM || win->kh * 2 > GATHER_OPS || seg > 64) {
        gather_simple(g, win, img, q0, rows, xp);
        return;
    }
    for (ky = 0; ky < win->kh; ky++) {
        int64_t start = ky * seg, end = start + seg;
        for (z = start / 64; z <= (end - 1) / 64; z++) {
            int64_t lo = start > 64 * z ? start : 64 * z, hi = end < 64 * z + 64 ? end : 64 * z + 64;
            ops[nops].z = (int)z;
            ops[nops].off = ky * g->row + 64 * z - start;
            ops[nops].m = low_bytes(hi - 64 * z) & ~low_bytes(lo - 64 * z);
            nops++;
        }
    }
    switch (nz) {
    case 1: gather_rows(g, win, img, q0, rows, xp, ops, nops, 1); break;
    case 2: gather_rows(g, win, img, q0, rows, xp, ops, nops, 2); break;
    case 3: gather_rows(g, win, img, q0, rows, xp, ops, nops, 3); break;
    default: gather_rows(g, win, img, q0, rows, xp, ops, nops, 4); break;
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

#define MAX_LEVELS 15 /* the path's codes have at most 4 bits (plan_bits.c) */

/* One 16-channel chunk c of the epilogue, L levels (maxcode), S x S pool. */
INLINE void epilogue_chunk(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                           int64_t y0, int64_t first, int64_t last, int64_t ow,
                           const tsq__bp_geom *og, uint8_t *img, int64_t c, const int L,
                           const int S)
{
    __mmask16 valid = (__mmask16)(og->c - c >= 16 ? 0xFFFF : (1u << (og->c - c)) - 1u);
    __m512i flip = _mm512_loadu_si512((const void *)(th->flip + c));
    __m512i top = _mm512_loadu_si512((const void *)(th->top + c));
    __m512i tv[MAX_LEVELS];
    __mmask16 below_top[MAX_LEVELS];
    int64_t nbytes = og->cb - c / 8 < 2 ? og->cb - c / 8 : 2, wp = og->w + 2 * og->pad, oy, ox;
    int m, b;
    for (m = 0; m < L; m++) {
        tv[m] = _mm512_loadu_si512((const void *)(th->t + m * th->padded + c));
        below_top[m] = _mm512_mask_cmpge_epi32_mask(valid, top, _mm512_set1_epi32(m + 1));
    }
    for (oy = first; oy < last; oy++)
        for (ox = 0; ox < og->w; ox++) {
            uint8_t *dst = img + ((oy + og->pad) * wp + ox + og->pad) * og->cb + c / 8;
            __mmask16 ge[MAX_LEVELS + 1]; /* ge[m]: code >= m + 1 */
            int dy, dx;
            for (m = 0; m <= L; m++)
                ge[m] = 0;
            for (dy = 0; dy < S; dy++)
                for (dx = 0; dx < S; dx++) {
                    int64_t q = (oy * S + dy - y0) * ow + ox * S + dx;
                    __m512i a = _mm512_xor_si512(
                        _mm512_maskz_loadu_epi32(valid, acc + q * ldacc + c), flip);
                    for (m = 0; m < L; m++)
                        ge[m] |= _mm512_mask_cmpge_epi32_mask(below_top[m], a, tv[m]);
                }
            for (b = 0; b < og->nb; b++) {
                uint16_t bits = 0;
                for (m = 1; m <= L; m++)
                    if ((m >> b) & 1)
                        bits |= (uint16_t)(ge[m - 1] & ~ge[m]);
                memcpy(dst + b * og->plane, &bits, (size_t)nbytes);
            }
        }
}

void tsq__bp_epilogue_avx512(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                             int64_t y0, int64_t nrows, int64_t ow, int pool,
                             const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, c, first = y0 / s, last = (y0 + nrows) / s;
    int L = th->maxcode;
    last = last < og->h ? last : og->h;
    for (c = 0; c < og->c; c += 16) {
        if (L == 3 && pool)
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, 3, 2);
        else if (L == 3)
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, 3, 1);
        else if (L == 1 && pool)
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, 1, 2);
        else if (L == 1)
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, 1, 1);
        else if (pool)
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, L, 2);
        else
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, L, 1);
    }
}
