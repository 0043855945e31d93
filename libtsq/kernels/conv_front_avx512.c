/* A network's float front in one pass, on AVX-512: the first convolution
 * computed directly (conv_direct.c's FMA chain per output, bias last), then
 * the per-channel affine, relu and quantizer (kernels/encode_avx512.h),
 * written as codes into the first low-bit layer's byte layout
 * (kernels/bitplane.h). The float output of the convolution is never
 * stored: each output pixel's channels are computed in vector lanes and
 * encoded at once. Every float operation is the separate stages' (the
 * direct convolution, tsq__bp_encode_bytes), in the same order, so the
 * codes are the same bits. Stride 1 (tsq__conv_direct_runs). */
#include "kernels/bitplane.h"
#include "kernels/conv.h"
#include "kernels/encode_avx512.h"

#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define CHUNKS 4 /* 16-channel chunks per pass: 64 channels */
#define PIXELS 4 /* output pixels per step */

typedef struct {
    const tsq__conv_geom *g;
    const tsq__conv_front *f;
    const tsq__bp_geom *og;
    const float *xp;  /* the zero-padded image */
    const int32_t *off; /* tap t at xp + pixel + off[t] (tsq__conv_direct_offsets) */
    uint8_t *img;
} front_job;

/* Channels c0 .. c0 + 16 NCH - 1 of every pixel. SHORT: the relu and the
 * clamp at code 1 are left out (f->short_form: tsq__front_short_form). */
INLINE void pass(const front_job *j, int64_t c0, const int NCH, const int SHORT)
{
    const tsq__conv_geom *g = j->g;
    const tsq__conv_front *f = j->f;
    int64_t wp = g->w + 2 * g->pad_w, wpo = j->og->w + 2 * j->og->pad, oy, ox, t, q;
    __m512 bias[CHUNKS], a[CHUNKS], b[CHUNKS], eps[CHUNKS], inv[CHUNKS], top[CHUNKS];
    __mmask16 cm[CHUNKS];
    for (q = 0; q < NCH; q++) {
        int64_t c = c0 + 16 * q, nc = g->cout - c < 16 ? g->cout - c : 16;
        cm[q] = (__mmask16)((1u << nc) - 1u);
        bias[q] = f->bias ? _mm512_maskz_loadu_ps(cm[q], f->bias + c) : _mm512_setzero_ps();
        a[q] = f->a ? _mm512_maskz_loadu_ps(cm[q], f->a + c) : _mm512_setzero_ps();
        b[q] = f->a ? _mm512_maskz_loadu_ps(cm[q], f->b + c) : _mm512_setzero_ps();
        eps[q] = _mm512_maskz_loadu_ps(cm[q], f->eps + c);
        inv[q] = _mm512_maskz_loadu_ps(cm[q], f->inv_delta + c);
        top[q] = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(cm[q], f->maxcode + c));
    }
    for (oy = 0; oy < g->oh; oy++)
        for (ox = 0; ox < g->ow; ox += PIXELS) {
            /* PIXELS pixels at once: their FMA chains are independent, so
             * the FMA latency is hidden; past the row's end the last pixel
             * is computed again and not stored. */
            const float *px[PIXELS];
            const float *wt = f->wt + c0;
            __m512 acc[PIXELS][CHUNKS];
            int64_t p, np = g->ow - ox < PIXELS ? g->ow - ox : PIXELS;
            for (p = 0; p < PIXELS; p++) {
                px[p] = j->xp + oy * wp + ox + (p < np ? p : np - 1);
                for (q = 0; q < NCH; q++)
                    acc[p][q] = _mm512_setzero_ps();
            }
            for (t = 0; t < g->k; t++, wt += f->ld)
                for (p = 0; p < PIXELS; p++) {
                    __m512 v = _mm512_set1_ps(px[p][j->off[t]]);
                    for (q = 0; q < NCH; q++)
                        acc[p][q] = _mm512_fmadd_ps(_mm512_loadu_ps(wt + 16 * q), v, acc[p][q]);
                }
            for (p = 0; p < np; p++) {
                uint8_t *dst =
                    j->img + ((oy + j->og->pad) * wpo + ox + p + j->og->pad) * j->og->cb + c0;
                for (q = 0; q < NCH; q++) {
                    __m512 y = f->bias ? _mm512_add_ps(acc[p][q], bias[q]) : acc[p][q];
                    __m512i code = tsq__encode_codes_v(y, a[q], b[q], f->a != NULL,
                                                       f->relu && !SHORT, eps[q], inv[q],
                                                       top[q], !SHORT);
                    _mm_mask_storeu_epi8(dst + 16 * q, cm[q], _mm512_cvtepi32_epi8(code));
                }
            }
        }
}

void tsq__conv_front_bytes_avx512(const tsq__conv_front *f, const float *x,
                                  const tsq__bp_geom *og, uint8_t *img, float *scratch)
{
    const tsq__conv_geom *g = f->g;
    int64_t c0;
    const int sf = f->short_form;
    front_job j;
    j.g = g;
    j.f = f;
    j.og = og;
    j.xp = scratch;
    j.img = img;
    j.off = tsq__conv_direct_offsets(g, scratch);
    tsq__conv_pad_image(g, x, scratch);
    memset(img, 0, (size_t)og->image);
    for (c0 = 0; c0 < g->cout; c0 += 16 * CHUNKS) {
        int64_t left = (g->cout - c0 + 15) / 16;
        if (left >= 4)
            sf ? pass(&j, c0, 4, 1) : pass(&j, c0, 4, 0);
        else if (left == 3)
            sf ? pass(&j, c0, 3, 1) : pass(&j, c0, 3, 0);
        else if (left == 2)
            sf ? pass(&j, c0, 2, 1) : pass(&j, c0, 2, 0);
        else
            sf ? pass(&j, c0, 1, 1) : pass(&j, c0, 1, 0);
    }
}
