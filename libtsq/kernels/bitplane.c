/* The portable reference of the bit-plane kernels (bitplane.h): the
 * im2col gather of a tile, codes to planes, and the threshold epilogue
 * into planes with the fused 2 x 2 max-pool. The AVX-512 versions
 * (bitplane_vpopcnt.c) must give the same bytes. */
#include "kernels/bitplane.h"
#include "kernels/encode.h"

#include <math.h>
#include <string.h>

void tsq__bp_gather_ref(const tsq__bp_geom *g, const tsq__bp_window *win, const uint8_t *img,
                        int64_t q0, int64_t rows, uint64_t *xp)
{
    int64_t r, ky, seg = win->kw * g->cb;
    int32_t b;
    for (r = 0; r < rows; r++) {
        int64_t oy = (q0 + r) / win->ow, ox = (q0 + r) % win->ow;
        const uint8_t *src = img + oy * win->stride * g->row + ox * win->stride * g->cb;
        for (b = 0; b < g->planes; b++) {
            uint8_t *dst = (uint8_t *)(xp + (r * g->planes + b) * win->kwords);
            memset(dst, 0, (size_t)win->kwords * 8);
            for (ky = 0; ky < win->kh; ky++)
                memcpy(dst + ky * seg, src + b * g->plane + ky * g->row, (size_t)seg);
        }
    }
}

void tsq__bp_from_codes_ref(const tsq__bp_geom *g, const uint8_t *codes, uint8_t *img)
{
    int64_t y, x, c, wp = g->w + 2 * g->pad;
    int32_t b;
    memset(img, 0, (size_t)g->image);
    for (y = 0; y < g->h; y++)
        for (x = 0; x < g->w; x++) {
            const uint8_t *px = codes + (y * g->w + x) * g->c;
            uint8_t *dst = img + ((y + g->pad) * wp + x + g->pad) * g->cb;
            for (c = 0; c < g->c; c++)
                for (b = 0; b < g->nb; b++)
                    dst[b * g->plane + c / 8] |= (uint8_t)(((px[c] >> b) & 1) << (c % 8));
        }
}

/* The code of accumulator acc in channel c (thresholds.c's form). */
static int32_t code_of(const tsq_thresholds *th, int32_t acc, int64_t c)
{
    int32_t a = acc ^ th->flip[c], count = 0, m;
    for (m = 0; m < th->maxcode; m++)
        count += a >= th->t[m * th->padded + c];
    return count < th->top[c] ? count : th->top[c];
}

void tsq__bp_epilogue_ref(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                          int64_t y0, int64_t nrows, int64_t ow, int pool,
                          const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, wp = og->w + 2 * og->pad, oy, ox, c, j;
    int64_t first = y0 / s, last = (y0 + nrows) / s; /* output rows [first, last) */
    int32_t b;
    for (oy = first; oy < last && oy < og->h; oy++)
        for (ox = 0; ox < og->w; ox++) {
            uint8_t *dst = img + ((oy + og->pad) * wp + ox + og->pad) * og->cb;
            for (j = 0; j < og->cb; j++)
                for (b = 0; b < og->nb; b++)
                    dst[b * og->plane + j] = 0;
            for (c = 0; c < og->c; c++) {
                int32_t code = 0, dy, dx;
                for (dy = 0; dy < s; dy++)
                    for (dx = 0; dx < s; dx++) {
                        int64_t q = (oy * s + dy - y0) * ow + ox * s + dx;
                        int32_t v = code_of(th, acc[q * ldacc + c], c);
                        code = v > code ? v : code;
                    }
                for (b = 0; b < og->nb; b++)
                    dst[b * og->plane + c / 8] |= (uint8_t)(((code >> b) & 1) << (c % 8));
            }
        }
}

void tsq__bp_encode_ref(const tsq__bp_geom *g, const float *x, const float *a, const float *b,
                        int relu, const float *eps, const float *inv_delta,
                        const int32_t *maxcode, uint8_t *img)
{
    int64_t c, p, hw = g->h * g->w, wp = g->w + 2 * g->pad;
    int32_t bit;
    memset(img, 0, (size_t)g->image);
    for (c = 0; c < g->c; c++)
        for (p = 0; p < hw; p++) {
            float v = x[c * hw + p];
            int32_t code;
            uint8_t *dst = img + ((p / g->w + g->pad) * wp + p % g->w + g->pad) * g->cb + c / 8;
            if (a)
                v = a[c] * v + b[c]; /* as tsq__vec_affine: product, then sum */
            if (relu)
                v = v > 0.0f ? v : 0.0f;
            code = tsq__quant_code(v, eps[c], inv_delta[c], maxcode[c]);
            for (bit = 0; bit < g->nb; bit++)
                dst[bit * g->plane] |= (uint8_t)(((code >> bit) & 1) << (c % 8));
        }
}

void tsq__bp_epilogue_bytes_ref(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                int64_t y0, int64_t nrows, int64_t ow, int pool,
                                const tsq__bp_geom *og, uint8_t *img)
{
    int64_t s = pool ? 2 : 1, wp = og->w + 2 * og->pad, oy, ox, c;
    int64_t first = y0 / s, last = (y0 + nrows) / s;
    for (oy = first; oy < last && oy < og->h; oy++)
        for (ox = 0; ox < og->w; ox++) {
            uint8_t *dst = img + ((oy + og->pad) * wp + ox + og->pad) * og->cb;
            memset(dst, 0, (size_t)og->cb);
            for (c = 0; c < og->c; c++) {
                int32_t code = 0, dy, dx;
                for (dy = 0; dy < s; dy++)
                    for (dx = 0; dx < s; dx++) {
                        int64_t q = (oy * s + dy - y0) * ow + ox * s + dx;
                        int32_t v = code_of(th, acc[q * ldacc + c], c);
                        code = v > code ? v : code;
                    }
                dst[tsq__bp_byte_of(og, c)] |= (uint8_t)(code << tsq__bp_shift_of(og, c));
            }
        }
}

void tsq__bp_bytes_from_codes(const tsq__bp_geom *g, const uint8_t *codes, uint8_t *img)
{
    int64_t y, x, c, wp = g->w + 2 * g->pad;
    memset(img, 0, (size_t)g->image);
    for (y = 0; y < g->h; y++) {
        uint8_t *row = img + ((y + g->pad) * wp + g->pad) * g->cb;
        const uint8_t *src = codes + y * g->w * g->c;
        if (g->bytes != 2) {
            memcpy(row, src, (size_t)(g->w * g->c));
            continue;
        }
        for (x = 0; x < g->w; x++)
            for (c = 0; c < g->c; c++)
                row[x * g->cb + tsq__bp_byte_of(g, c)] |=
                    (uint8_t)(src[x * g->c + c] << tsq__bp_shift_of(g, c));
    }
}

int tsq__front_short_form(const float *eps, const float *inv_delta, int64_t channels)
{
    int64_t c;
    for (c = 0; c < channels; c++) {
        float e = eps[c], inv = inv_delta[c];
        if (!(e >= 0.0f) || !(inv > 0.0f) || !(floorf(e * inv + 0.5f) >= 1.0f))
            return 0;
    }
    return 1;
}

void tsq__bp_encode_bytes_ref(const tsq__bp_geom *g, const float *x, const float *a,
                              const float *b, int relu, const float *eps,
                              const float *inv_delta, const int32_t *maxcode, uint8_t *img)
{
    int64_t c, p, hw = g->h * g->w, wp = g->w + 2 * g->pad;
    memset(img, 0, (size_t)g->image);
    for (c = 0; c < g->c; c++)
        for (p = 0; p < hw; p++) {
            float v = x[c * hw + p];
            if (a)
                v = a[c] * v + b[c];
            if (relu)
                v = v > 0.0f ? v : 0.0f;
            img[((p / g->w + g->pad) * wp + p % g->w + g->pad) * g->cb + c] =
                (uint8_t)tsq__quant_code(v, eps[c], inv_delta[c], maxcode[c]);
        }
}
