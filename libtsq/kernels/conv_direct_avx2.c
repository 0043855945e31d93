/* The direct small-patch convolution (conv_direct.c) on AVX2 + FMA: as the
 * AVX-512 kernel, with 8 output pixels per vector. The FMA chain of every
 * output is the C version's, in the same order, so the bits are the same. */
#include "kernels/conv.h"

#include <immintrin.h>

#define CO_BLOCK 8

static void block(const tsq__conv_geom *g, const float *xp, const float *w, const float *bias,
                  float *y, int64_t co0, int64_t nco, float *wt)
{
    int64_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad_w, oy, x0, c, ky, kx, j, t;
    for (t = 0; t < g->k; t++)
        for (j = 0; j < CO_BLOCK; j++)
            wt[t * CO_BLOCK + j] = w[(co0 + (j < nco ? j : nco - 1)) * g->k + t];
    for (oy = 0; oy < g->oh; oy++)
        for (x0 = 0; x0 < g->ow; x0 += 8) {
            int64_t np = g->ow - x0 < 8 ? g->ow - x0 : 8;
            __m256i om = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)np),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
                   a6 = a0, a7 = a0;
            const float *wk = wt;
            for (c = 0; c < g->cin; c++)
                for (ky = 0; ky < g->kh; ky++) {
                    const float *row = xp + (c * hp + oy + ky) * wp + x0;
                    for (kx = 0; kx < g->kw; kx++, wk += CO_BLOCK) {
                        __m256 v = _mm256_loadu_ps(row + kx);
                        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 0), v, a0);
                        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 1), v, a1);
                        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 2), v, a2);
                        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 3), v, a3);
                        a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 4), v, a4);
                        a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 5), v, a5);
                        a6 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 6), v, a6);
                        a7 = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + 7), v, a7);
                    }
                }
            {
                __m256 acc[CO_BLOCK] = {a0, a1, a2, a3, a4, a5, a6, a7};
                for (j = 0; j < nco; j++) {
                    __m256 r = acc[j];
                    if (bias)
                        r = _mm256_add_ps(r, _mm256_set1_ps(bias[co0 + j]));
                    _mm256_maskstore_ps(y + ((co0 + j) * g->oh + oy) * g->ow + x0, om, r);
                }
            }
        }
}

void tsq__conv_direct_avx2(const tsq__conv_geom *g, const float *x, const float *w,
                           const float *bias, float *y, float *scratch)
{
    int64_t co0;
    float *wt = scratch + tsq__conv_direct_ws_floats(g) - g->k * CO_BLOCK;
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += CO_BLOCK)
        block(g, scratch, w, bias, y, co0, g->cout - co0 < CO_BLOCK ? g->cout - co0 : CO_BLOCK,
              wt);
}
