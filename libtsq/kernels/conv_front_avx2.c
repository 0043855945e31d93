/* A network's float front in one pass, on AVX2: the AVX-512 front's
 * computation (conv_front_avx512.c) with 8 channels per vector. The first
 * convolution is computed directly (conv_direct.c's FMA chain per output
 * from +0, bias last), then the per-channel affine, relu and quantizer
 * (kernels/encode_avx2.h), written as codes into the first low-bit
 * layer's byte layout; the convolution's floats are never stored. Every
 * float operation is the separate stages' in the same order, so the codes
 * are the same bits. Stride 1 (tsq__conv_direct_runs). */
#include "kernels/bitplane.h"
#include "kernels/conv.h"
#include "kernels/encode_avx2.h"

#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define CHUNKS 4 /* 8-channel chunks per pass: 32 channels */
#define PIXELS 3 /* output pixels per step: 12 chains, a broadcast, 3 registers spare */

typedef struct {
    const tsq__conv_geom *g;
    const tsq__conv_front *f;
    const tsq__bp_geom *og;
    const float *xp;    /* the zero-padded image */
    const int32_t *off; /* tap t at xp + pixel + off[t] (tsq__conv_direct_offsets) */
    uint8_t *img;
} front_job;

/* Per-channel constants of one 8-channel chunk (lanes past cout: zeros). */
typedef struct {
    __m256 bias, a, b, eps, inv, top;
} chunk_consts;

static __m256 load_part(const float *p, int64_t n)
{
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (n >= 8)
        return _mm256_loadu_ps(p);
    memcpy(t, p, (size_t)n * sizeof(float));
    return _mm256_loadu_ps(t);
}

static chunk_consts consts_of(const tsq__conv_front *f, int64_t c, int64_t n)
{
    chunk_consts k;
    int32_t mc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(mc, f->maxcode + c, (size_t)(n < 8 ? n : 8) * sizeof(int32_t));
    k.bias = f->bias ? load_part(f->bias + c, n) : _mm256_setzero_ps();
    k.a = f->a ? load_part(f->a + c, n) : _mm256_setzero_ps();
    k.b = f->a ? load_part(f->b + c, n) : _mm256_setzero_ps();
    k.eps = load_part(f->eps + c, n);
    k.inv = load_part(f->inv_delta + c, n);
    k.top = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(const void *)mc));
    return k;
}

/* The codes of one pixel's chunk from its chain. */
INLINE __m256i codes_of(const tsq__conv_front *f, const chunk_consts *k, __m256 acc,
                        const int SHORT)
{
    __m256 y = f->bias ? _mm256_add_ps(acc, k->bias) : acc;
    y = tsq__front_v8_avx2(y, k->a, k->b, f->a != NULL, f->relu && !SHORT);
    return _mm256_cvttps_epi32(tsq__levels8_avx2(y, k->eps, k->inv, k->top, !SHORT));
}

/* The chains of PIXELS pixels (at px) x NCH chunks over every tap, from
 * +0, into acc. They run in a local copy that gcc keeps in registers: with
 * the loop written over acc itself it stored all twelve chains to the
 * stack after every tap, and the front took twice its time. */
INLINE void front_taps(const front_job *j, const float *const *px, const float *wt,
                       __m256 acc[PIXELS][CHUNKS], const int NCH)
{
    __m256 r[PIXELS][CHUNKS];
    int64_t t;
    int p, q;
    for (p = 0; p < PIXELS; p++)
        for (q = 0; q < CHUNKS; q++)
            r[p][q] = _mm256_setzero_ps();
    for (t = 0; t < j->g->k; t++, wt += j->f->ld) {
        const int32_t o = j->off[t];
        for (p = 0; p < PIXELS; p++) {
            __m256 v = _mm256_broadcast_ss(px[p] + o);
            for (q = 0; q < NCH; q++)
                r[p][q] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 8 * q), v, r[p][q]);
        }
    }
    for (p = 0; p < PIXELS; p++)
        for (q = 0; q < CHUNKS; q++)
            acc[p][q] = r[p][q];
}

/* Channels c0 .. c0 + 8 NCH - 1 of every pixel. SHORT: the relu and the
 * clamp at code 1 are left out (f->short_form: tsq__front_short_form). */
INLINE void pass(const front_job *j, int64_t c0, const int NCH, const int SHORT)
{
    const tsq__conv_geom *g = j->g;
    const tsq__conv_front *f = j->f;
    int64_t wp = g->w + 2 * g->pad_w, wpo = j->og->w + 2 * j->og->pad, oy, ox, q;
    int64_t nc = g->cout - c0 < 8 * NCH ? g->cout - c0 : 8 * NCH;
    chunk_consts k[CHUNKS];
    for (q = 0; q < NCH; q++)
        k[q] = consts_of(f, c0 + 8 * q, g->cout - c0 - 8 * q);
    for (oy = 0; oy < g->oh; oy++)
        for (ox = 0; ox < g->ow; ox += PIXELS) {
            /* PIXELS pixels at once: their chains are independent, so the
             * FMA latency is hidden; past the row's end the last pixel is
             * computed again and not stored. */
            const float *px[PIXELS];
            __m256 acc[PIXELS][CHUNKS];
            int64_t p, np = g->ow - ox < PIXELS ? g->ow - ox : PIXELS;
            for (p = 0; p < PIXELS; p++)
                px[p] = j->xp + oy * wp + ox + (p < np ? p : np - 1);
            front_taps(j, px, f->wt + c0, acc, NCH);
            for (p = 0; p < np; p++) {
                uint8_t *dst =
                    j->img + ((oy + j->og->pad) * wpo + ox + p + j->og->pad) * j->og->cb + c0;
                __m256i c[CHUNKS], z = _mm256_setzero_si256(), b;
                for (q = 0; q < CHUNKS; q++)
                    c[q] = q < NCH ? codes_of(f, &k[q], acc[p][q], SHORT) : z;
                b = tsq__pack32_avx2(c[0], c[1], c[2], c[3]);
                if (nc == 32) {
                    _mm256_storeu_si256((__m256i *)(void *)dst, b);
                } else {
                    uint8_t tmp[32];
                    _mm256_storeu_si256((__m256i *)(void *)tmp, b);
                    memcpy(dst, tmp, (size_t)nc);
                }
            }
        }
}

void tsq__conv_front_bytes_avx2(const tsq__conv_front *f, const float *x,
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
    for (c0 = 0; c0 < g->cout; c0 += 8 * CHUNKS) {
        int64_t left = (g->cout - c0 + 7) / 8;
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
