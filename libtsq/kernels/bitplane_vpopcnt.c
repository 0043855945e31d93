/* AVX-512 versions of the bit-plane kernels (bitplane.h; the same bytes as
 * bitplane.c). The threshold epilogue works on compare masks: with
 * thresholds non-decreasing in m, "code >= m" is the mask of the m-th
 * compare (and of the channel's top code), nested in m, so the 2 x 2 max of
 * codes is the OR of the window's masks and bit b of the code is the OR of
 * the "code == m" masks over the m with bit b set. No code is ever formed.
 * Compiled with the VPOPCNT kernel's flags (the Makefile's rule for the
 * file name) but uses AVX-512 F/BW/VL only, no popcount: called when the
 * CPU runs the VPOPCNT or the VNNI kernel (both imply those). */
#include "kernels/bitplane.h"
#include "kernels/encode_avx512.h"

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
    int64_t off;     /* load address - plane row base */
    __mmask64 m;     /* bytes loaded */
} gather_op;

/* Ops are sorted by register: register z takes ops zfirst[z] .. zfirst[z+1]-1.
 * Each register is a plain variable (an array indexed by the op's register
 * would live on the stack). */
INLINE __m512i gather_reg(const uint8_t *base, const gather_op *ops, int i0, int i1)
{
    __m512i v = _mm512_setzero_si512();
    int i;
    /* Independent zero-masked loads ORed together (the masks are disjoint):
     * merge-masked loads into v would chain on their latency. */
    for (i = i0; i < i1; i++)
        v = _mm512_or_si512(v, _mm512_maskz_loadu_epi8(ops[i].m, base + ops[i].off));
    return v;
}

INLINE void gather_rows(const tsq__bp_geom *g, const tsq__bp_window *win, const uint8_t *img,
                        int64_t q0, int64_t rows, uint64_t *xp, const gather_op *ops,
                        const int *zfirst, const int NZ)
{
    int64_t r, oy = q0 / win->ow, ox = q0 % win->ow, bytes = win->kwords * 8;
    int64_t step = win->stride * g->cb, plane = g->plane, kwords = win->kwords;
    __mmask64 last = low_bytes(bytes - (NZ - 1) * 64);
    int32_t b, nb = g->planes;
    int z;
    const uint8_t *src = img + oy * win->stride * g->row + ox * step;
    for (r = 0; r < rows; r++) {
        for (b = 0; b < nb; b++) {
            uint8_t *dst = (uint8_t *)(xp + (r * nb + b) * kwords);
            const uint8_t *base = src + b * plane;
            for (z = 0; z < NZ - 1; z++)
                _mm512_storeu_si512((void *)(dst + 64 * z),
                                    gather_reg(base, ops, zfirst[z], zfirst[z + 1]));
            _mm512_mask_storeu_epi8(dst + 64 * (NZ - 1), last,
                                    gather_reg(base, ops, zfirst[NZ - 1], zfirst[NZ]));
        }
        src += step;
        if (++ox == win->ow) {
            ox = 0;
            oy++;
            src = img + oy * win->stride * g->row;
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
        for (b = 0; b < g->planes; b++) {
            uint8_t *dst = (uint8_t *)(xp + (r * g->planes + b) * win->kwords);
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

/* Window rows of at most 16 bytes (up to 42 channels at width 3), or of
 * up to 256 in 32-byte pieces (the byte layout's rows): plain vector loads
 * and stores, the stores overlapping (each row's spill is overwritten by the next, in address
 * order), then a zero store for the k-word tail. Reads up to W bytes past
 * a window row and writes up to W bytes past the last im2col row: the
 * callers' slack (bitplane.h). */
INLINE void gather_narrow(const tsq__bp_geom *g, const tsq__bp_window *win, const uint8_t *img,
                          int64_t q0, int64_t rows, uint64_t *xp, const int W)
{
    int64_t r, ky, seg = win->kw * g->cb, used = win->kh * seg, oy = q0 / win->ow,
                   ox = q0 % win->ow, step = win->stride * g->cb;
    int32_t b;
    const uint8_t *src = img + oy * win->stride * g->row + ox * step;
    for (r = 0; r < rows; r++) {
        for (b = 0; b < g->planes; b++) {
            uint8_t *dst = (uint8_t *)(xp + (r * g->planes + b) * win->kwords);
            const uint8_t *base = src + b * g->plane;
            for (ky = 0; ky < win->kh; ky++) {
                int64_t o;
                if (W == 16)
                    _mm_storeu_si128((__m128i *)(dst + ky * seg),
                                     _mm_loadu_si128((const __m128i *)(base + ky * g->row)));
                else /* 32-byte pieces; the last one spills into the next row */
                    for (o = 0; o < seg; o += 32)
                        _mm256_storeu_si256(
                            (__m256i *)(dst + ky * seg + o),
                            _mm256_loadu_si256((const __m256i *)(base + ky * g->row + o)));
            }
            _mm_storeu_si128((__m128i *)(dst + used), _mm_setzero_si128());
        }
        src += step;
        if (++ox == win->ow) {
            ox = 0;
            oy++;
            src = img + oy * win->stride * g->row;
        }
    }
}

void tsq__bp_gather_avx512(const tsq__bp_geom *g, const tsq__bp_window *win,
                           const uint8_t *img, int64_t q0, int64_t rows, uint64_t *xp)
{
    gather_op ops[GATHER_OPS];
    int zfirst[GATHER_ZMM + 1];
    int64_t seg = win->kw * g->cb, ky, nz = (win->kwords * 8 + 63) / 64, z;
    int nops = 0;
    if (seg <= 16) {
        gather_narrow(g, win, img, q0, rows, xp, 16);
        return;
    }
    if (seg <= 256) {
        gather_narrow(g, win, img, q0, rows, xp, 32);
        return;
    }
    if (nz > GATHER_ZMM || win->kh * 2 > GATHER_OPS || seg > 64) {
        gather_simple(g, win, img, q0, rows, xp);
        return;
    }
    for (z = 0; z < nz; z++) { /* the window rows overlapping register z */
        zfirst[z] = nops;
        for (ky = 0; ky < win->kh; ky++) {
            int64_t start = ky * seg, end = start + seg;
            int64_t lo = start > 64 * z ? start : 64 * z, hi = end < 64 * z + 64 ? end : 64 * z + 64;
            if (lo >= hi)
                continue;
            ops[nops].off = ky * g->row + 64 * z - start;
            ops[nops].m = low_bytes(hi - 64 * z) & ~low_bytes(lo - 64 * z);
            nops++;
        }
    }
    zfirst[nz] = nops;
    switch (nz) {
    case 1: gather_rows(g, win, img, q0, rows, xp, ops, zfirst, 1); break;
    case 2: gather_rows(g, win, img, q0, rows, xp, ops, zfirst, 2); break;
    case 3: gather_rows(g, win, img, q0, rows, xp, ops, zfirst, 3); break;
    default: gather_rows(g, win, img, q0, rows, xp, ops, zfirst, 4); break;
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
                if (nbytes == 2) /* fixed sizes: a variable memcpy is a byte loop */
                    memcpy(dst + b * og->plane, &bits, 2);
                else
                    dst[b * og->plane] = (uint8_t)bits;
            }
        }
}

/* The same for codes of 1 or 2 bits (L = 1 or 3 levels), with every mask
 * a variable: arrays of masks were spilled to the stack. */
INLINE void epilogue_small(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                           int64_t y0, int64_t first, int64_t last, int64_t ow,
                           const tsq__bp_geom *og, uint8_t *img, int64_t c, const int L,
                           const int S)
{
    __mmask16 valid = (__mmask16)(og->c - c >= 16 ? 0xFFFF : (1u << (og->c - c)) - 1u);
    __m512i flip = _mm512_loadu_si512((const void *)(th->flip + c));
    __m512i top = _mm512_loadu_si512((const void *)(th->top + c));
    __m512i t1 = _mm512_loadu_si512((const void *)(th->t + c)), t2 = t1, t3 = t1;
    __mmask16 bt1 = _mm512_mask_cmpge_epi32_mask(valid, top, _mm512_set1_epi32(1)), bt2 = 0,
              bt3 = 0;
    int64_t nbytes = og->cb - c / 8 < 2 ? og->cb - c / 8 : 2, wp = og->w + 2 * og->pad, oy, ox;
    if (L == 3) {
        t2 = _mm512_loadu_si512((const void *)(th->t + th->padded + c));
        t3 = _mm512_loadu_si512((const void *)(th->t + 2 * th->padded + c));
        bt2 = _mm512_mask_cmpge_epi32_mask(valid, top, _mm512_set1_epi32(2));
        bt3 = _mm512_mask_cmpge_epi32_mask(valid, top, _mm512_set1_epi32(3));
    }
    for (oy = first; oy < last; oy++) {
        const int32_t *row = acc + (oy * S - y0) * ow * ldacc + c;
        uint8_t *dst = img + ((oy + og->pad) * wp + og->pad) * og->cb + c / 8;
        for (ox = 0; ox < og->w; ox++, dst += og->cb) {
            __mmask16 g1 = 0, g2 = 0, g3 = 0;
            uint16_t p0, p1;
            int dy, dx;
            for (dy = 0; dy < S; dy++)
                for (dx = 0; dx < S; dx++) {
                    __m512i a = _mm512_xor_si512(
                        _mm512_maskz_loadu_epi32(valid, row + (dy * ow + ox * S + dx) * ldacc),
                        flip);
                    g1 |= _mm512_mask_cmpge_epi32_mask(bt1, a, t1);
                    if (L == 3) {
                        g2 |= _mm512_mask_cmpge_epi32_mask(bt2, a, t2);
                        g3 |= _mm512_mask_cmpge_epi32_mask(bt3, a, t3);
                    }
                }
            /* code >= 1, 2, 3 nested: bit 0 = (1 and not 2) or 3, bit 1 = 2 */
            p0 = (uint16_t)(L == 3 ? (g1 & ~g2) | g3 : g1);
            p1 = (uint16_t)g2;
            if (nbytes == 2) {
                memcpy(dst, &p0, 2);
                if (L == 3)
                    memcpy(dst + og->plane, &p1, 2);
            } else {
                dst[0] = (uint8_t)p0;
                if (L == 3)
                    dst[og->plane] = (uint8_t)p1;
            }
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
        if (L == 3 && pool && og->nb == 2)
            epilogue_small(th, acc, ldacc, y0, first, last, ow, og, img, c, 3, 2);
        else if (L == 3 && og->nb == 2)
            epilogue_small(th, acc, ldacc, y0, first, last, ow, og, img, c, 3, 1);
        else if (L == 1 && pool && og->nb == 1)
            epilogue_small(th, acc, ldacc, y0, first, last, ow, og, img, c, 1, 2);
        else if (L == 1 && og->nb == 1)
            epilogue_small(th, acc, ldacc, y0, first, last, ow, og, img, c, 1, 1);
        else if (pool)
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, L, 2);
        else
            epilogue_chunk(th, acc, ldacc, y0, first, last, ow, og, img, c, L, 1);
    }
}

/* 16 pixels of one channel: the masks "code >= m" for m = 1..3, each the
 * float operations of the separate stages (product and sum apart, relu as
 * a select, tsq__quant_code's compare, floor and clamp). */
INLINE void encode_masks(__m512 v, __mmask16 vm, float a, float b, int affine, int relu,
                         float eps, float inv, int32_t maxcode, __mmask16 *ge1, __mmask16 *ge2,
                         __mmask16 *ge3)
{
    __m512 k;
    v = tsq__front_v(v, _mm512_set1_ps(a), _mm512_set1_ps(b), affine, relu);
    *ge1 = _mm512_mask_cmp_ps_mask(vm, v, _mm512_set1_ps(eps), _CMP_GT_OQ);
    k = _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(inv)),
                                           _mm512_set1_ps(0.5f)),
                             _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    /* code = clamp(k, 1, maxcode) where ge1: code >= m <=> k >= m, m <= maxcode */
    *ge2 = maxcode >= 2 ? _mm512_mask_cmp_ps_mask(*ge1, k, _mm512_set1_ps(2.0f), _CMP_GE_OQ) : 0;
    *ge3 = maxcode >= 3 ? _mm512_mask_cmp_ps_mask(*ge1, k, _mm512_set1_ps(3.0f), _CMP_GE_OQ) : 0;
}

INLINE void store_group(uint8_t *dst, int64_t cb, int64_t grp, __mmask16 vm, __m512i v,
                        __m512i idx)
{
    int64_t nbytes = cb - 4 * grp < 4 ? cb - 4 * grp : 4, p;
    uint32_t tmp[16];
    if (cb == 4) {
        _mm512_mask_storeu_epi32(dst, vm, v);
    } else if (nbytes == 4) {
        _mm512_mask_i32scatter_epi32(dst + 4 * grp, vm, idx, v, 1);
    } else {
        _mm512_storeu_si512((void *)tmp, v);
        for (p = 0; p < 16; p++)
            if ((vm >> p) & 1)
                memcpy(dst + p * cb + 4 * grp, &tmp[p], (size_t)nbytes);
    }
}

INLINE void encode_image(const tsq__bp_geom *g, const float *x, const float *a, const float *b,
                         int relu, const float *eps, const float *inv, const int32_t *maxcode,
                         uint8_t *img, const int NB)
{
    int64_t y, x0, c, hw = g->h * g->w, wp = g->w + 2 * g->pad;
    __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                       12, 13, 14, 15),
                                     _mm512_set1_epi32((int)g->cb));
    memset(img, 0, (size_t)g->image);
    for (y = 0; y < g->h; y++)
        for (x0 = 0; x0 < g->w; x0 += 16) {
            __mmask16 vm = (__mmask16)(g->w - x0 >= 16 ? 0xFFFF : (1u << (g->w - x0)) - 1u);
            uint8_t *dst = img + ((y + g->pad) * wp + x0 + g->pad) * g->cb;
            int64_t grp;
            for (grp = 0; grp * 32 < g->c; grp++) {
                __m512i p0 = _mm512_setzero_si512(), p1 = _mm512_setzero_si512();
                int64_t cend = g->c < grp * 32 + 32 ? g->c : grp * 32 + 32;
                for (c = grp * 32; c < cend; c++) {
                    __m512 v = _mm512_maskz_loadu_ps(vm, x + c * hw + y * g->w + x0);
                    __m512i bit = _mm512_set1_epi32((int)(1u << (c % 32)));
                    __mmask16 ge1, ge2, ge3;
                    encode_masks(v, vm, a ? a[c] : 0.0f, a ? b[c] : 0.0f, a != NULL, relu, eps[c],
                                 inv[c], maxcode[c], &ge1, &ge2, &ge3);
                    if (NB == 1) {
                        p0 = _mm512_mask_or_epi32(p0, ge1, p0, bit);
                    } else {
                        p0 = _mm512_mask_or_epi32(p0, (__mmask16)((ge1 & ~ge2) | ge3), p0, bit);
                        p1 = _mm512_mask_or_epi32(p1, ge2, p1, bit);
                    }
                }
                store_group(dst, g->cb, grp, vm, p0, idx);
                if (NB == 2)
                    store_group(dst + g->plane, g->cb, grp, vm, p1, idx);
            }
        }
}

void tsq__bp_encode_avx512(const tsq__bp_geom *g, const float *x, const float *a,
                           const float *b, int relu, const float *eps, const float *inv_delta,
                           const int32_t *maxcode, uint8_t *img)
{
    if (g->nb == 1)
        encode_image(g, x, a, b, relu, eps, inv_delta, maxcode, img, 1);
    else if (g->nb == 2)
        encode_image(g, x, a, b, relu, eps, inv_delta, maxcode, img, 2);
    else
        tsq__bp_encode_ref(g, x, a, b, relu, eps, inv_delta, maxcode, img);
}

/* One 16-channel chunk c into the byte layout: the thresholds of up to 3
 * levels stay in registers across the pixels (more levels reload them).
 * Past the compares (int32, into masks) the codes are counted, pooled and
 * clipped as the 16 bytes they are stored as: the same values (a code is
 * at most maxcode <= 255), with no int32 -> byte narrowing per pixel. */
INLINE void epilogue_bytes(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                           int64_t y0, int64_t first, int64_t last, int64_t ow,
                           const tsq__bp_geom *og, uint8_t *img, int64_t c, const int L,
                           const int S)
{
    int64_t wp = og->w + 2 * og->pad, oy, ox;
    __mmask16 valid = (__mmask16)(og->c - c >= 16 ? 0xFFFF : (1u << (og->c - c)) - 1u);
    __m512i flip = _mm512_loadu_si512((const void *)(th->flip + c));
    __m128i top = _mm512_cvtepi32_epi8(_mm512_loadu_si512((const void *)(th->top + c)));
    __m512i t1 = _mm512_loadu_si512((const void *)(th->t + c)), t2 = t1, t3 = t1;
    const __m128i one = _mm_set1_epi8(1);
    if (L == 3) {
        t2 = _mm512_loadu_si512((const void *)(th->t + th->padded + c));
        t3 = _mm512_loadu_si512((const void *)(th->t + 2 * th->padded + c));
    }
    for (oy = first; oy < last; oy++) {
        const int32_t *row = acc + (oy * S - y0) * ow * ldacc + c;
        uint8_t *dst = img + ((oy + og->pad) * wp + og->pad) * og->cb + c;
        for (ox = 0; ox < og->w; ox++, dst += og->cb) {
            __m128i code = _mm_setzero_si128();
            int dy, dx, m;
            for (dy = 0; dy < S; dy++)
                for (dx = 0; dx < S; dx++) {
                    __m512i a = _mm512_xor_si512(
                        _mm512_maskz_loadu_epi32(valid, row + (dy * ow + ox * S + dx) * ldacc),
                        flip);
                    __m128i n = _mm_maskz_mov_epi8(_mm512_cmpge_epi32_mask(a, t1), one);
                    if (L == 3) {
                        n = _mm_mask_add_epi8(n, _mm512_cmpge_epi32_mask(a, t2), n, one);
                        n = _mm_mask_add_epi8(n, _mm512_cmpge_epi32_mask(a, t3), n, one);
                    } else if (L != 1) {
                        for (m = 1; m < L; m++)
                            n = _mm_mask_add_epi8(
                                n,
                                _mm512_cmpge_epi32_mask(
                                    a, _mm512_loadu_si512((const void *)(th->t + m * th->padded + c))),
                                n, one);
                    }
                    code = _mm_max_epu8(code, n);
                }
            code = _mm_min_epu8(code, top);
            _mm_mask_storeu_epi8(dst, valid, code);
        }
    }
}

void tsq__bp_epilogue_bytes_avx512(const tsq_thresholds *th, const int32_t *acc,
                                   int64_t ldacc, int64_t y0, int64_t nrows, int64_t ow,
                                   int pool, const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, first = y0 / s, last = (y0 + nrows) / s, c;
    int L = th->maxcode;
    last = last < og->h ? last : og->h;
    for (c = 0; c < og->c; c += 16) {
        if (L == 3 && pool)
            epilogue_bytes(th, acc, ldacc, y0, first, last, ow, og, img, c, 3, 2);
        else if (L == 3)
            epilogue_bytes(th, acc, ldacc, y0, first, last, ow, og, img, c, 3, 1);
        else if (L == 1 && pool)
            epilogue_bytes(th, acc, ldacc, y0, first, last, ow, og, img, c, 1, 2);
        else if (L == 1)
            epilogue_bytes(th, acc, ldacc, y0, first, last, ow, og, img, c, 1, 1);
        else if (pool)
            epilogue_bytes(th, acc, ldacc, y0, first, last, ow, og, img, c, L, 2);
        else
            epilogue_bytes(th, acc, ldacc, y0, first, last, ow, og, img, c, L, 1);
    }
}

/* 16 pixels of channel c as int32 codes (kernels/encode_avx512.h). */
INLINE __m512i encode_codes(__m512 v, float a, float b, int affine, int relu, float eps,
                            float inv, int32_t maxcode)
{
    return tsq__encode_codes_v(v, _mm512_set1_ps(a), _mm512_set1_ps(b), affine, relu,
                               _mm512_set1_ps(eps), _mm512_set1_ps(inv),
                               _mm512_set1_ps((float)maxcode), 1);
}

/* 16 x 16 bytes: r[i] byte j -> r[j] byte i. */
static inline void transpose16x16(__m128i r[16])
{
    __m128i t[16];
    int i;
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; i++) {
        r[4 * i] = _mm_unpacklo_epi16(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm_unpackhi_epi16(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm_unpacklo_epi16(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm_unpackhi_epi16(t[4 * i + 1], t[4 * i + 3]);
    }
    for (i = 0; i < 2; i++) {
        int j;
        for (j = 0; j < 4; j++) {
            t[8 * i + 2 * j] = _mm_unpacklo_epi32(r[8 * i + j], r[8 * i + 4 + j]);
            t[8 * i + 2 * j + 1] = _mm_unpackhi_epi32(r[8 * i + j], r[8 * i + 4 + j]);
        }
    }
    for (i = 0; i < 8; i++) {
        r[2 * i] = _mm_unpacklo_epi64(t[i], t[8 + i]);
        r[2 * i + 1] = _mm_unpackhi_epi64(t[i], t[8 + i]);
    }
}

void tsq__bp_encode_bytes_avx512(const tsq__bp_geom *g, const float *x, const float *a,
                                 const float *b, int relu, const float *eps,
                                 const float *inv_delta, const int32_t *maxcode, uint8_t *img)
{
    int64_t y, x0, c0, hw = g->h * g->w, wp = g->w + 2 * g->pad;
    memset(img, 0, (size_t)g->image);
    for (y = 0; y < g->h; y++)
        for (x0 = 0; x0 < g->w; x0 += 16) {
            int64_t np = g->w - x0 < 16 ? g->w - x0 : 16, p;
            __mmask16 vm = (__mmask16)((1u << np) - 1u);
            uint8_t *dst = img + ((y + g->pad) * wp + x0 + g->pad) * g->cb;
            for (c0 = 0; c0 < g->c; c0 += 16) {
                int64_t nc = g->c - c0 < 16 ? g->c - c0 : 16, j;
                __m128i r[16];
                for (j = 0; j < 16; j++) {
                    int64_t c = c0 + j;
                    r[j] = _mm_setzero_si128();
                    if (j < nc)
                        r[j] = _mm512_cvtepi32_epi8(encode_codes(
                            _mm512_maskz_loadu_ps(vm, x + c * hw + y * g->w + x0),
                            a ? a[c] : 0.0f, a ? b[c] : 0.0f, a != NULL, relu, eps[c],
                            inv_delta[c], maxcode[c]));
                }
                transpose16x16(r); /* r[p]: channels c0 .. c0 + 15 of pixel x0 + p */
                for (p = 0; p < np; p++)
                    _mm_mask_storeu_epi8(dst + p * g->cb + c0, (__mmask16)((1u << nc) - 1u), r[p]);
            }
        }
}
