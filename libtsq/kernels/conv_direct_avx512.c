/* The direct small-patch convolution (conv_direct.c) on AVX-512: 16 output
 * pixels of a row per vector and 8 output channels at a time, so that each
 * input vector loaded serves 8 FMAs, from a zero-padded copy of the image
 * (so every tap is one plain load). The FMA chain of every output is the C
 * version's, in the same order, so the bits are the same. Stride 1 only
 * (tsq__conv_direct_runs). */
#include "kernels/conv.h"

#include <immintrin.h>

#define CO_BLOCK 8

/* Output channels co0 .. co0 + nco - 1 (nco <= 8; the lanes of missing
 * channels repeat the last one and are not stored). wt: scratch for the
 * block's weights, tap-major (k x 8), so each FMA takes its weight as an
 * embedded broadcast from one base. */
static void block(const tsq__conv_geom *g, const float *xp, const float *w, const float *bias,
                  float *y, int64_t co0, int64_t nco, float *wt)
{
    int64_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad_w, oy, x0, c, ky, kx, j, t;
    for (t = 0; t < g->k; t++)
        for (j = 0; j < CO_BLOCK; j++)
            wt[t * CO_BLOCK + j] = w[(co0 + (j < nco ? j : nco - 1)) * g->k + t];
    for (oy = 0; oy < g->oh; oy++)
        for (x0 = 0; x0 < g->ow; x0 += 16) {
            __mmask16 om = (__mmask16)(g->ow - x0 >= 16 ? 0xFFFF : (1u << (g->ow - x0)) - 1u);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
                   a6 = a0, a7 = a0;
            const float *wk = wt;
            for (c = 0; c < g->cin; c++)
                for (ky = 0; ky < g->kh; ky++) {
                    const float *row = xp + (c * hp + oy + ky) * wp + x0;
                    for (kx = 0; kx < g->kw; kx++, wk += CO_BLOCK) {
                        __m512 v = _mm512_loadu_ps(row + kx);
                        a0 = _mm512_fmadd_ps(_mm512_set1_ps(wk[0]), v, a0);
                        a1 = _mm512_fmadd_ps(_mm512_set1_ps(wk[1]), v, a1);
                        a2 = _mm512_fmadd_ps(_mm512_set1_ps(wk[2]), v, a2);
                        a3 = _mm512_fmadd_ps(_mm512_set1_ps(wk[3]), v, a3);
                        a4 = _mm512_fmadd_ps(_mm512_set1_ps(wk[4]), v, a4);
                        a5 = _mm512_fmadd_ps(_mm512_set1_ps(wk[5]), v, a5);
                        a6 = _mm512_fmadd_ps(_mm512_set1_ps(wk[6]), v, a6);
                        a7 = _mm512_fmadd_ps(_mm512_set1_ps(wk[7]), v, a7);
                    }
                }
            {
                __m512 acc[CO_BLOCK] = {a0, a1, a2, a3, a4, a5, a6, a7};
                for (j = 0; j < nco; j++) {
                    __m512 r = acc[j];
                    if (bias)
                        r = _mm512_add_ps(r, _mm512_set1_ps(bias[co0 + j]));
                    _mm512_mask_storeu_ps(y + ((co0 + j) * g->oh + oy) * g->ow + x0, om, r);
                }
            }
        }
}

void tsq__conv_direct_avx512(const tsq__conv_geom *g, const float *x, const float *w,
                             const float *bias, float *y, float *scratch)
{
    int64_t co0;
    float *wt = scratch + tsq__conv_direct_ws_floats(g) - g->k * CO_BLOCK;
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += CO_BLOCK)
        block(g, scratch, w, bias, y, co0, g->cout - co0 < CO_BLOCK ? g->cout - co0 : CO_BLOCK,
              wt);
}
