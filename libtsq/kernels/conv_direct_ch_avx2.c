/* The direct convolution (conv_direct.c) on AVX2 + FMA, output channels in
 * the lanes, for the larger patches (k > TSQ__CONV_DIRECT_K) of layers
 * whose channel count fills the lanes (tsq__conv_direct_for). Stride 1.
 *
 * A tile is 6 output pixels, taken in the output plane's order (a tile may
 * cross a row), times 16 output channels (two vectors: one packed block,
 * tsq__conv_direct_pack): per tap, two weight loads and six broadcast
 * input values feed 12 FMA chains, which with the two weight vectors and
 * the broadcast fill 15 of the 16 registers. The pixel-lane kernel
 * (conv_direct_avx2.c) computes the padded grid's columns past each row
 * and, at 32 channels, a sixth tile of 6 channels for 2: about a fifth of
 * its FMAs are dropped at the fmnist net's shapes; here only a plane's
 * last tile repeats pixels.
 *
 * Each output's FMA chain is the C version's, tap by tap in the same order
 * and cut at the same tap (tsq__conv_direct_split); the epilogue does the
 * same operations in the same order, so the bits are the same. 8 x 8
 * transposes turn each pixel's channel vector into channel rows of
 * pixels, stored 6 at a time into the NCHW planes. */
#include "kernels/conv.h"
#include "kernels/transpose_avx2.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

enum {
    NP = 6, /* output pixels per tile */
    NV = 2, /* 8-channel vectors per tile */
    VL = 8
};

/* Taps t0 .. t1 - 1 into the tile's chains: pixel i's input at
 * xp[o[i] + off[t]], tap t's 16 weights at w + 16 t. */
INLINE void taps(const float *xp, const int32_t *off, const int64_t o[NP], const float *w,
                 int64_t t0, int64_t t1, __m256 acc[NP][NV])
{
    const float *p[NP]; /* pixel i's window corner */
    __m256 r[NP][NV];   /* a copy the compiler keeps in registers */
    int64_t t;
    int i, v;
#pragma GCC unroll 6
    for (i = 0; i < NP; i++) {
        p[i] = xp + o[i];
#pragma GCC unroll 2
        for (v = 0; v < NV; v++)
            r[i][v] = acc[i][v];
    }
    for (t = t0; t < t1; t++) {
        int64_t d = off[t];
        __m256 wv[NV] = {_mm256_loadu_ps(w + 16 * t), _mm256_loadu_ps(w + 16 * t + 8)};
#pragma GCC unroll 6
        for (i = 0; i < NP; i++) {
            __m256 x = _mm256_broadcast_ss(p[i] + d);
#pragma GCC unroll 2
            for (v = 0; v < NV; v++)
                r[i][v] = _mm256_fmadd_ps(wv[v], x, r[i][v]);
        }
    }
#pragma GCC unroll 6
    for (i = 0; i < NP; i++)
#pragma GCC unroll 2
        for (v = 0; v < NV; v++)
            acc[i][v] = r[i][v];
}

/* The per-channel constants of a block of 16 channels as vectors, zero
 * past cout (those lanes are computed and not stored). */
typedef struct {
    __m256 bias[NV], scale[NV];
    int has_bias, has_scale;
} epi;

static epi epi_of(const tsq__conv_direct_op *op, int64_t co0, int64_t nco)
{
    float b[NV * VL] = {0}, s[NV * VL] = {0};
    epi e;
    int64_t c;
    int v;
    for (c = 0; c < nco; c++) {
        b[c] = op->bias ? op->bias[co0 + c] : 0.0f;
        s[c] = op->scale ? op->scale[co0 + c] : 0.0f;
    }
    for (v = 0; v < NV; v++) {
        e.bias[v] = _mm256_loadu_ps(b + VL * v);
        e.scale[v] = _mm256_loadu_ps(s + VL * v);
    }
    e.has_bias = op->bias != NULL;
    e.has_scale = op->scale != NULL;
    return e;
}

/* The first n <= NP floats of v to p: two plain stores for a whole tile
 * (masked stores are microcoded on AMD). */
INLINE void store_px(float *p, __m256 v, int64_t n)
{
    float tmp[VL];
    int64_t i;
    if (n == NP) {
        _mm_storeu_ps(p, _mm256_castps256_ps128(v));
        _mm_storel_pi((__m64 *)(void *)(p + 4), _mm256_extractf128_ps(v, 1));
        return;
    }
    _mm256_storeu_ps(tmp, v);
    for (i = 0; i < n; i++)
        p[i] = tmp[i];
}

/* The tile's results into y (channel co0's plane, pixel q0): per pixel,
 * chain + bias (no scale) or scale * chain + bias, plus the first chain
 * when cut, as the C version orders them; then channel rows. */
INLINE void store(const epi *e, __m256 acc[NP][NV], __m256 first[NP][NV], int cut, float *y,
                  int64_t ohw, int64_t nco, int64_t np)
{
    int64_t c;
    int i, v;
    for (v = 0; v < NV && VL * v < nco; v++) {
        __m256 r[VL];
        for (i = 0; i < NP; i++) {
            __m256 s = acc[i][v];
            if (e->has_bias && !e->has_scale)
                s = _mm256_add_ps(s, e->bias[v]);
            if (cut)
                s = _mm256_add_ps(first[i][v], s);
            if (e->has_scale)
                s = _mm256_add_ps(_mm256_mul_ps(s, e->scale[v]), e->bias[v]);
            r[i] = s;
        }
        r[6] = r[7] = _mm256_setzero_ps();
        tsq__transpose8_ps_avx2(r);
        for (c = 0; c < VL && VL * v + c < nco; c++)
            store_px(y + (VL * v + c) * ohw, r[c], np);
    }
}

/* Pixels q0 .. q0 + np - 1 of the output plane (past np the last again),
 * channels co0 .. co0 + nco - 1, weights w (their packed block). */
INLINE void tile(const tsq__conv_direct_op *op, const float *xp, const int32_t *off,
                 const float *w, const epi *e, float *y, int64_t co0, int64_t nco, int64_t q0,
                 int64_t np, int64_t split)
{
    const tsq__conv_geom *g = op->g;
    int64_t o[NP], wp = g->w + 2 * g->pad_w;
    __m256 acc[NP][NV], first[NP][NV];
    int i, v, cut = split < g->k;
    for (i = 0; i < NP; i++) {
        int64_t q = q0 + (i < np ? i : np - 1);
        o[i] = q / g->ow * wp + q % g->ow;
        for (v = 0; v < NV; v++)
            acc[i][v] = first[i][v] = _mm256_setzero_ps();
    }
    taps(xp, off, o, w, 0, split, acc);
    if (cut) { /* the second chain starts from +0 */
        for (i = 0; i < NP; i++)
            for (v = 0; v < NV; v++) {
                first[i][v] = acc[i][v];
                acc[i][v] = _mm256_setzero_ps();
            }
        taps(xp, off, o, w, split, g->k, acc);
    }
    store(e, acc, first, cut, y + co0 * g->ohw + q0, g->ohw, nco, np);
}

void tsq__conv_direct_ch_avx2(const tsq__conv_direct_op *op, const float *x, float *y,
                              float *scratch)
{
    const tsq__conv_geom *g = op->g;
    int64_t co0, q0, split = tsq__conv_direct_split(g, op->bias && !op->scale);
    int32_t *off = tsq__conv_direct_offsets(g, scratch);
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += NV * VL) {
        int64_t nco = g->cout - co0 < NV * VL ? g->cout - co0 : NV * VL;
        /* co0 is a multiple of 16: its block starts at co0 k (tsq__conv_direct_pack) */
        const float *w = op->packed + co0 * g->k;
        epi e = epi_of(op, co0, nco);
        for (q0 = 0; q0 < g->ohw; q0 += NP)
            tile(op, scratch, off, w, &e, y, co0, nco, q0,
                 g->ohw - q0 < NP ? g->ohw - q0 : NP, split);
    }
}
