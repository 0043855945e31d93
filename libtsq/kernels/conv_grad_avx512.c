/* The direct backward of conv_grad.c on AVX-512: the same chains as the C
 * oracle, in the same order, so the same bits. Compiled with the AVX-512
 * flags; called only when the CPU has them (tsq__conv_grad_direct_runs).
 *
 * dW: 16 output channels per vector (dy transposed to position-major), 8
 * patch taps at a time, two vectors of channels: per position, 2 loads of
 * dy and 8 broadcasts of input values serve 16 FMAs.
 * dx: 16 input pixels of a row per vector, 8 input channels and two rows
 * at a time: per output channel, 2 loads of (zero-padded) dy and 8 weight
 * broadcasts serve 16 FMAs. Their scratch layout is conv_grad.c's
 * (tsq__conv_grad_layout_of), so that the size queries, which every CPU
 * calls, are not compiled with these flags. */
#include "kernels/conv.h"
#include "kernels/transpose_avx512.h"

#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define TAPS TSQ__CONV_GRAD_TAPS

/* S0..S7 += bs[k] * v: 8 chains, each its own broadcast times one vector. */
#define FMA8(S, bs, v)                                                                         \
    do {                                                                                       \
        S##0 = _mm512_fmadd_ps(bs[0], v, S##0);                                                \
        S##1 = _mm512_fmadd_ps(bs[1], v, S##1);                                                \
        S##2 = _mm512_fmadd_ps(bs[2], v, S##2);                                                \
        S##3 = _mm512_fmadd_ps(bs[3], v, S##3);                                                \
        S##4 = _mm512_fmadd_ps(bs[4], v, S##4);                                                \
        S##5 = _mm512_fmadd_ps(bs[5], v, S##5);                                                \
        S##6 = _mm512_fmadd_ps(bs[6], v, S##6);                                                \
        S##7 = _mm512_fmadd_ps(bs[7], v, S##7);                                                \
    } while (0)

/* ---- dW ---- */

typedef struct {
    const tsq__conv_geom *g;
    const float *dyt;   /* position-major dy, ld floats per position */
    int64_t ld, wp;
    const float *base[TAPS]; /* tap j's input at position (0, 0) */
} dw_job;

/* The chains of positions [p0, p0 + n) for TAPS taps and `vecs` (1 or 2)
 * vectors of channels from v0, each from +0, added to acc (rows of ld). */
INLINE void dw_block(const dw_job *j, int64_t v0, int vecs, int64_t p0, int64_t n, float *acc)
{
    __m512 a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7;
    int64_t ow = j->g->ow, ox = p0 % ow, off = p0 / ow * j->wp + ox, p, t;
    const float *d = j->dyt + p0 * j->ld + v0 * 16;
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _mm512_setzero_ps();
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = a0;
    for (p = 0; p < n; p++, d += j->ld, off++) {
        __m512 xs[TAPS];
        for (t = 0; t < TAPS; t++)
            xs[t] = _mm512_set1_ps(j->base[t][off]);
        FMA8(a, xs, _mm512_loadu_ps(d));
        if (vecs == 2)
            FMA8(b, xs, _mm512_loadu_ps(d + 16));
        if (++ox == ow) { /* next output row: skip the padding columns */
            ox = 0;
            off += j->wp - ow;
        }
    }
    {
        __m512 ra[TAPS] = {a0, a1, a2, a3, a4, a5, a6, a7};
        __m512 rb[TAPS] = {b0, b1, b2, b3, b4, b5, b6, b7};
        for (t = 0; t < TAPS; t++) {
            float *row = acc + t * j->ld + v0 * 16;
            _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), ra[t]));
            if (vecs == 2)
                _mm512_storeu_ps(row + 16, _mm512_add_ps(_mm512_loadu_ps(row + 16), rb[t]));
        }
    }
}

/* dst row j (16 floats, rows dstride apart) = column j of the 16 x 16
 * block at src (rows sstride apart; rows from `rows` on read as zeros):
 * dy made position-major 256 values at a time, not one strided load each
 * (a tenth of the weight gradient's time when it was). */
static void transpose_block(const float *src, int64_t sstride, int64_t rows, float *dst,
                            int64_t dstride)
{
    __m512i v[16];
    int i;
    for (i = 0; i < 16; i++)
        v[i] = i < rows ? _mm512_loadu_si512(src + i * sstride) : _mm512_setzero_si512();
    tsq__transpose16_avx512(v);
    for (i = 0; i < 16; i++)
        _mm512_storeu_si512(dst + i * dstride, v[i]);
}

void tsq__conv_grad_dw_avx512(const tsq__conv_geom *g, const float *x, const float *dy,
                              int64_t cols, float *acc, float *scratch)
{
    tsq__conv_grad_layout L = tsq__conv_grad_layout_of(g);
    int64_t P = g->ohw, nv = L.ld / 16, v0, t0, t, p, co, p0, n;
    float *xp = scratch + L.xp, *ones = scratch + L.ones, *dyt = scratch + L.dyt;
    float *tmp = scratch + L.tmp; /* a block's rows past the last column */
    dw_job j;
    tsq__conv_pad_image(g, x, xp);
    for (p = 0; p < L.plane; p++)
        ones[p] = 1.0f; /* the bias's row of the patch matrix */
    for (p = 0; p + 16 <= P; p += 16)
        for (co = 0; co < L.ld; co += 16)
            transpose_block(dy + co * P + p, P, g->cout - co, dyt + p * L.ld + co, L.ld);
    for (; p < P; p++) {
        for (co = 0; co < g->cout; co++)
            dyt[p * L.ld + co] = dy[co * P + p];
        for (; co < L.ld; co++)
            dyt[p * L.ld + co] = 0.0f;
    }
    j.g = g;
    j.dyt = dyt;
    j.ld = L.ld;
    j.wp = L.wp;
    for (v0 = 0; v0 < nv; v0 += 2) {
        int vecs = nv - v0 >= 2 ? 2 : 1;
        for (t0 = 0; t0 < cols; t0 += TAPS) {
            /* a last block of fewer taps adds its extra rows to tmp */
            float *rows = t0 + TAPS <= cols ? acc + t0 * L.ld : tmp;
            int64_t nt = cols - t0 < TAPS ? cols - t0 : TAPS;
            for (t = 0; t < TAPS; t++) {
                int64_t tap = t0 + (t < nt ? t : 0), c = tap / (g->kh * g->kw);
                int64_t ky = tap / g->kw % g->kh, kx = tap % g->kw;
                j.base[t] = tap == g->k ? ones : xp + (c * L.hp + ky) * L.wp + kx;
            }
            if (rows == tmp)
                for (t = 0; t < nt; t++)
                    memcpy(tmp + t * L.ld, acc + (t0 + t) * L.ld, (size_t)L.ld * sizeof(float));
            for (p0 = 0; p0 < P; p0 += n) {
                n = tsq__conv_depth_block(P - p0);
                if (vecs == 2)
                    dw_block(&j, v0, 2, p0, n, rows);
                else
                    dw_block(&j, v0, 1, p0, n, rows);
            }
            if (rows == tmp)
                for (t = 0; t < nt; t++)
                    memcpy(acc + (t0 + t) * L.ld, tmp + t * L.ld, (size_t)L.ld * sizeof(float));
        }
    }
}

/* ---- dx ---- */

enum {
    DX_NP = 14, /* input pixels of a row per tile: 28- and 14-wide rows in whole tiles */
    DX_NV = 2   /* vectors of 16 input channels per tile */
};

/* acc += one tap's chains over the output channels, from +0, for DX_NP
 * pixels (dy at src[i], the next channel chan floats on) and nv vectors of
 * input channels (weights at w, the next output channel c16 floats on). */
INLINE void dx_tap(const float *src, int64_t chan, const float *w, int64_t c16, int64_t cout,
                   __m512 *acc, const int nv)
{
    __m512 t[DX_NP][DX_NV];
    int64_t co;
    int i, v;
#pragma GCC unroll 14
    for (i = 0; i < DX_NP; i++)
#pragma GCC unroll 2
        for (v = 0; v < nv; v++)
            t[i][v] = _mm512_setzero_ps();
    for (co = 0; co < cout; co++, src += chan, w += c16) {
        __m512 wv[DX_NV];
#pragma GCC unroll 2
        for (v = 0; v < nv; v++)
            wv[v] = _mm512_loadu_ps(w + 16 * v);
#pragma GCC unroll 14
        for (i = 0; i < DX_NP; i++) {
            __m512 d = _mm512_set1_ps(src[i]);
#pragma GCC unroll 2
            for (v = 0; v < nv; v++)
                t[i][v] = _mm512_fmadd_ps(wv[v], d, t[i][v]);
        }
    }
    /* acc = acc + t, the oracle's order; acc lives in memory (the tile's
     * chains take the registers), one add per pixel per tap */
#pragma GCC unroll 14
    for (i = 0; i < DX_NP; i++)
#pragma GCC unroll 2
        for (v = 0; v < nv; v++)
            acc[i * DX_NV + v] = _mm512_add_ps(acc[i * DX_NV + v], t[i][v]);
}

void tsq__conv_grad_prep_avx512(const tsq__conv_geom *g, const float *w, float *wp)
{
    int64_t taps = g->kh * g->kw, c16 = tsq__conv_grad_layout_of(g).c16, tap, co, c;
    for (co = 0; co < g->cout; co++) /* taps x cout x c16: the input channels side by side */
        for (c = 0; c < c16; c++)
            for (tap = 0; tap < taps; tap++)
                wp[(tap * g->cout + co) * c16 + c] =
                    c < g->cin ? w[(co * g->cin + c) * taps + tap] : 0.0f;
}

/* Input pixels ix0 .. ix0 + nx - 1 of row iy, input channels c0 .. c0 + nc
 * - 1 (nv vectors): every tap's chain, then 16 x 16 transposes into the
 * channels' rows. Pixels past the row read the padded dy's zeros or next
 * cells and are not stored. */
INLINE void dx_tile(const tsq__conv_geom *g, const tsq__conv_grad_layout *L, const float *dyp,
                    const float *wd, float *dx, int64_t c0, int nc, int64_t iy, int64_t ix0,
                    const int nv)
{
    __m512 acc[DX_NP * DX_NV];
    int64_t ky, kx, chan = L->ohp * L->owp;
    int nx = g->w - ix0 < DX_NP ? (int)(g->w - ix0) : DX_NP, i, v;
    __mmask16 pm = (__mmask16)((1u << nx) - 1u);
    for (i = 0; i < DX_NP * DX_NV; i++)
        acc[i] = _mm512_setzero_ps();
    for (ky = 0; ky < g->kh; ky++)
        for (kx = 0; kx < g->kw; kx++) {
            /* dy row oy = iy + pad - ky, column ox = ix0 + pad - kx, padded */
            const float *src = dyp + (iy + g->kh - 1 - ky) * L->owp + ix0 + g->kw - 1 - kx;
            const float *wt = wd + (ky * g->kw + kx) * g->cout * L->c16 + c0;
            dx_tap(src, chan, wt, L->c16, g->cout, acc, nv);
        }
    for (v = 0; v < nv; v++) {
        __m512i r[16];
        int n = nc - 16 * v < 16 ? nc - 16 * v : 16;
        for (i = 0; i < 16; i++)
            r[i] = i < DX_NP ? _mm512_castps_si512(acc[i * DX_NV + v]) : _mm512_setzero_si512();
        tsq__transpose16_avx512(r);
        for (i = 0; i < n; i++)
            _mm512_mask_storeu_ps(dx + ((c0 + 16 * v + i) * g->h + iy) * g->w + ix0, pm,
                                  _mm512_castsi512_ps(r[i]));
    }
}

void tsq__conv_grad_dx_avx512(const tsq__conv_geom *g, const float *wp, const float *dy,
                              float *dx, float *scratch)
{
    tsq__conv_grad_layout L = tsq__conv_grad_layout_of(g);
    int64_t c0, iy, ix0;
    float *dyp = scratch + L.dyp;
    tsq__pad_planes(dy, g->cout, g->oh, g->ow, L.top, L.left, L.ohp, L.owp, dyp);
    for (c0 = 0; c0 < g->cin; c0 += 16 * DX_NV) {
        int nc = g->cin - c0 < 16 * DX_NV ? (int)(g->cin - c0) : 16 * DX_NV;
        for (iy = 0; iy < g->h; iy++)
            for (ix0 = 0; ix0 < g->w; ix0 += DX_NP) {
                if (nc > 16)
                    dx_tile(g, &L, dyp, wp, dx, c0, nc, iy, ix0, 2);
                else
                    dx_tile(g, &L, dyp, wp, dx, c0, nc, iy, ix0, 1);
            }
    }
}
