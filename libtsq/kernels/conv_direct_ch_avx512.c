/* The direct small-patch convolution (conv_direct.c) on AVX-512, output
 * channels in the lanes. Stride 1 only (tsq__conv_direct_runs).
 *
 * A tile is 14 output pixels of one row times 32 output channels (two
 * vectors of 16): per tap, two weight vectors (one tap of two packed
 * blocks, tsq__conv_direct_pack) and 14 input values broadcast, 28 FMAs.
 * With the pixels in the lanes instead (the AVX2 kernel), rows of 28 and
 * 14 pixels filled 7/8 of each vector and every FMA needed a weight
 * broadcast of its own, so the loads, not the FMAs, set the pace; here
 * every lane works on 32- and 64-channel layers and one load feeds two
 * FMAs. The 14 broadcasts of a tap are one base pointer plus constant
 * displacements, so the tile needs no per-pixel pointers.
 *
 * Each output's FMA chain is the C version's, tap by tap in the same
 * order and cut at the same tap (tsq__conv_direct_split); the epilogue
 * does the same operations in the same order, so the bits are the same.
 * A 16 x 16 transpose turns each pixel's channel vector into channel rows
 * of pixels for NCHW stores. */
#include "kernels/conv.h"
#include "transpose_avx512.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

enum {
    NP = 14, /* output pixels per tile: a 28- or 14-wide row in whole tiles */
    NV = 2,  /* channel vectors per tile: NP x NV accumulators of 32 */
    VL = 16
};

/* Taps t0 .. t1 - 1 into the accumulators: base is the tile's window
 * corner in the padded image, w[v] the packed block of vector v. */
INLINE void taps(const float *base, const int32_t *off, const float *const w[NV], int64_t t0,
                 int64_t t1, __m512 a[NP][NV], const int nv)
{
    int64_t t;
    for (t = t0; t < t1; t++) {
        const float *p = base + off[t];
        __m512 wv[NV];
        int i, v;
#pragma GCC unroll 2
        for (v = 0; v < nv; v++)
            wv[v] = _mm512_loadu_ps(w[v] + t * VL);
#pragma GCC unroll 14
        for (i = 0; i < NP; i++) {
            __m512 x = _mm512_set1_ps(p[i]);
#pragma GCC unroll 2
            for (v = 0; v < nv; v++)
                a[i][v] = _mm512_fmadd_ps(wv[v], x, a[i][v]);
        }
    }
}

/* One channel vector's epilogue and stores: for each pixel, chain + bias
 * (no scale) or scale * chain + bias, plus the first chain when cut, as
 * the C version orders them; then 16 x 16 transposed into the first nx
 * pixels of the nco channel rows at y (row stride ohw). */
INLINE void store_vec(const tsq__conv_direct_op *op, int64_t co0, int nco, __m512 r[VL],
                      const __m512 *first, int cut, float *y, int64_t ohw, int nx)
{
    __mmask16 cm = (__mmask16)((1u << nco) - 1u), pm = (__mmask16)((1u << nx) - 1u);
    __m512 zero = _mm512_setzero_ps(), bias, scale = zero;
    __m512i *ri = (__m512i *)(void *)r;
    int i;
    bias = op->bias ? _mm512_maskz_loadu_ps(cm, op->bias + co0) : zero;
    if (op->scale)
        scale = _mm512_maskz_loadu_ps(cm, op->scale + co0);
    for (i = 0; i < NP; i++) {
        if (op->bias && !op->scale)
            r[i] = _mm512_add_ps(r[i], bias);
        if (cut)
            r[i] = _mm512_add_ps(first[i], r[i]);
        if (op->scale)
            r[i] = _mm512_add_ps(_mm512_mul_ps(r[i], scale), bias);
    }
    r[14] = r[15] = zero;
    tsq__transpose16_avx512(ri);
    for (i = 0; i < nco; i++)
        _mm512_mask_storeu_ps(y + i * ohw, pm, r[i]);
}

/* Output pixels x0 .. x0 + nx - 1 of row oy, channels co0 .. co0 + nco - 1
 * (nv vectors). Pixels past the row are computed from the padded image's
 * next cells (or its zero tail) and not stored. */
INLINE void tile(const tsq__conv_direct_op *op, const float *xp, const int32_t *off,
                 const float *const w[NV], float *y, int64_t co0, int nco, int64_t oy,
                 int64_t x0, int64_t split, const int nv)
{
    const tsq__conv_geom *g = op->g;
    const float *base = xp + oy * (g->w + 2 * g->pad_w) + x0;
    __m512 a[NP][NV], first[NV][VL];
    int nx = g->ow - x0 < NP ? (int)(g->ow - x0) : NP, i, v, cut = split < g->k;
#pragma GCC unroll 14
    for (i = 0; i < NP; i++)
#pragma GCC unroll 2
        for (v = 0; v < nv; v++)
            a[i][v] = _mm512_setzero_ps();
    taps(base, off, w, 0, split, a, nv);
    if (cut) {
        /* the second chain starts from +0 */
#pragma GCC unroll 14
        for (i = 0; i < NP; i++)
#pragma GCC unroll 2
            for (v = 0; v < nv; v++) {
                first[v][i] = a[i][v];
                a[i][v] = _mm512_setzero_ps();
            }
        taps(base, off, w, split, g->k, a, nv);
    }
    for (v = 0; v < nv; v++) {
        __m512 r[VL];
        int c0 = v * VL, n = nco - c0 < VL ? nco - c0 : VL;
        for (i = 0; i < NP; i++)
            r[i] = a[i][v];
        store_vec(op, co0 + c0, n, r, first[v], cut, y + ((co0 + c0) * g->oh + oy) * g->ow + x0,
                  g->oh * g->ow, nx);
    }
}

void tsq__conv_direct_ch_avx512(const tsq__conv_direct_op *op, const float *x, float *y,
                             float *scratch)
{
    const tsq__conv_geom *g = op->g;
    int64_t co0, oy, x0, split = tsq__conv_direct_split(g, op->bias && !op->scale);
    int32_t *off = tsq__conv_direct_offsets(g, scratch);
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += NV * VL) {
        int nco = g->cout - co0 < NV * VL ? (int)(g->cout - co0) : NV * VL;
        /* blocks of 16 channels start every 16 k floats (tsq__conv_direct_pack) */
        const float *w0 = op->packed + co0 * g->k;
        const float *w[NV] = {w0, nco > VL ? w0 + VL * g->k : w0};
        for (oy = 0; oy < g->oh; oy++)
            for (x0 = 0; x0 < g->ow; x0 += NP) {
                if (nco > VL)
                    tile(op, scratch, off, w, y, co0, nco, oy, x0, split, 2);
                else
                    tile(op, scratch, off, w, y, co0, nco, oy, x0, split, 1);
            }
    }
}
