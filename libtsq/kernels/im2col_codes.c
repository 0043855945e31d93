/* im2col on uint8 activation codes: each output row is one receptive field,
 * laid out in the column order of the filter it meets, so that a
 * convolution becomes one low-bit GEMM. Padding positions get code 0 (the
 * code of the value 0, which is what the float layer pads with). */
#include "kernels_internal.h"

#include <string.h>

typedef struct {
    int64_t batch, channels, height, width; /* of the input */
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t oh, ow;                         /* output positions */
} geometry;

static void im2col_nchw(const geometry *g, const uint8_t *in, uint8_t *out)
{
    int64_t b, oy, ox, c, ky, kx;
    int64_t cols = g->channels * g->kh * g->kw;
    for (b = 0; b < g->batch; b++)
        for (oy = 0; oy < g->oh; oy++)
            for (ox = 0; ox < g->ow; ox++) {
                uint8_t *row = out + ((b * g->oh + oy) * g->ow + ox) * cols;
                for (c = 0; c < g->channels; c++) {
                    const uint8_t *plane = in + (b * g->channels + c) * g->height * g->width;
                    for (ky = 0; ky < g->kh; ky++) {
                        int64_t iy = oy * g->sh - g->ph + ky;
                        for (kx = 0; kx < g->kw; kx++) {
                            int64_t ix = ox * g->sw - g->pw + kx;
                            int inside = iy >= 0 && iy < g->height && ix >= 0 && ix < g->width;
                            *row++ = inside ? plane[iy * g->width + ix] : 0;
                        }
                    }
                }
            }
}

static void im2col_nhwc(const geometry *g, const uint8_t *in, uint8_t *out)
{
    int64_t b, oy, ox, ky, kx, c = g->channels;
    int64_t cols = c * g->kh * g->kw;
    for (b = 0; b < g->batch; b++)
        for (oy = 0; oy < g->oh; oy++)
            for (ox = 0; ox < g->ow; ox++) {
                uint8_t *row = out + ((b * g->oh + oy) * g->ow + ox) * cols;
                for (ky = 0; ky < g->kh; ky++) {
                    int64_t iy = oy * g->sh - g->ph + ky;
                    for (kx = 0; kx < g->kw; kx++, row += c) {
                        int64_t ix = ox * g->sw - g->pw + kx;
                        if (iy >= 0 && iy < g->height && ix >= 0 && ix < g->width)
                            memcpy(row, in + ((b * g->height + iy) * g->width + ix) * c,
                                   (size_t)c);
                        else
                            memset(row, 0, (size_t)c);
                    }
                }
            }
}

static tsq_status check_geometry(tsq__object *obj, const tsq_tensor *in, int32_t layout,
                                 geometry *g)
{
    static const char *where = "im2col_codes";
    if (layout != TSQ_LAYOUT_NCHW && layout != TSQ_LAYOUT_NHWC)
        return tsq__fail(obj, TSQ_ERR_INVALID, "%s: unknown layout %d", where, (int)layout);
    if (g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1)
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "%s: kernel %lld x %lld and stride %lld x %lld must be >= 1", where,
                         (long long)g->kh, (long long)g->kw, (long long)g->sh, (long long)g->sw);
    if (g->ph < 0 || g->pw < 0 || g->ph >= g->kh || g->pw >= g->kw)
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "%s: padding %lld x %lld must be >= 0 and below the kernel size", where,
                         (long long)g->ph, (long long)g->pw);
    if (in->ndim != 4)
        return tsq__fail(obj, TSQ_ERR_SHAPE, "%s: input has %d dimensions, expected 4", where,
                         (int)in->ndim);
    g->batch = in->shape[0];
    g->channels = in->shape[layout == TSQ_LAYOUT_NCHW ? 1 : 3];
    g->height = in->shape[layout == TSQ_LAYOUT_NCHW ? 2 : 1];
    g->width = in->shape[layout == TSQ_LAYOUT_NCHW ? 3 : 2];
    if (g->height + 2 * g->ph < g->kh || g->width + 2 * g->pw < g->kw)
        return tsq__fail(obj, TSQ_ERR_SHAPE,
                         "%s: a %lld x %lld window does not fit a padded %lld x %lld image",
                         where, (long long)g->kh, (long long)g->kw,
                         (long long)(g->height + 2 * g->ph), (long long)(g->width + 2 * g->pw));
    g->oh = (g->height + 2 * g->ph - g->kh) / g->sh + 1;
    g->ow = (g->width + 2 * g->pw - g->kw) / g->sw + 1;
    return TSQ_OK;
}

tsq_status tsq_im2col_codes(tsq_context *ctx, const tsq_tensor *in, int32_t layout,
                            int32_t kh, int32_t kw, int32_t stride_h, int32_t stride_w,
                            int32_t pad_h, int32_t pad_w, tsq_tensor *out)
{
    static const char *where = "im2col_codes";
    geometry g = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    int64_t rows, cols;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    st = tsq__expect_dtype(&ctx->obj, where, "in", in, TSQ_DTYPE_U8);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&ctx->obj, where, "out", out, TSQ_DTYPE_U8);
    if (st != TSQ_OK)
        return st;
    g.kh = kh;
    g.kw = kw;
    g.sh = stride_h;
    g.sw = stride_w;
    g.ph = pad_h;
    g.pw = pad_w;
    st = check_geometry(&ctx->obj, in, layout, &g);
    if (st != TSQ_OK)
        return st;
    if (!tsq__mul_i64(g.batch, g.oh, &rows) || !tsq__mul_i64(rows, g.ow, &rows) ||
        !tsq__mul_i64(g.channels, g.kh, &cols) || !tsq__mul_i64(cols, g.kw, &cols))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: patch matrix size overflows", where);
    if (out->ndim != 2 || out->shape[0] != rows || out->shape[1] != cols)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: out must be %lld x %lld (u8)", where,
                         (long long)rows, (long long)cols);
    if (layout == TSQ_LAYOUT_NCHW)
        im2col_nchw(&g, in->data, out->data);
    else
        im2col_nhwc(&g, in->data, out->data);
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}
