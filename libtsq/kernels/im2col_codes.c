/* tsq_im2col_codes: the checked public form of the one im2col
 * (kernels/im2col.c) on uint8 codes. Padding positions get code 0 (the
 * code of the value 0, which is what the float layer pads with). */
#include "kernels/conv.h"
#include "kernels/kernels_internal.h"

tsq_status tsq_im2col_codes(tsq_context *ctx, const tsq_tensor *in, int32_t layout,
                            int32_t kh, int32_t kw, int32_t stride_h, int32_t stride_w,
                            int32_t pad_h, int32_t pad_w, tsq_tensor *out)
{
    static const char *where = "im2col_codes";
    tsq__conv_geom g;
    int64_t rows, c, h, w;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    st = tsq__expect_dtype(&ctx->obj, where, "in", in, TSQ_DTYPE_U8);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&ctx->obj, where, "out", out, TSQ_DTYPE_U8);
    if (st != TSQ_OK)
        return st;
    if (layout != TSQ_LAYOUT_NCHW && layout != TSQ_LAYOUT_NHWC)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: unknown layout %d", where, (int)layout);
    if (in->ndim != 4)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: input has %d dimensions, expected 4",
                         where, (int)in->ndim);
    c = in->shape[layout == TSQ_LAYOUT_NCHW ? 1 : 3];
    h = in->shape[layout == TSQ_LAYOUT_NCHW ? 2 : 1];
    w = in->shape[layout == TSQ_LAYOUT_NCHW ? 3 : 2];
    st = tsq__conv_geom_check(&ctx->obj, where, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w,
                              &g);
    if (st != TSQ_OK)
        return st;
    if (!tsq__mul_i64(in->shape[0], g.ohw, &rows))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: patch matrix size overflows", where);
    if (out->ndim != 2 || out->shape[0] != rows || out->shape[1] != g.k)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: out must be %lld x %lld (u8)", where,
                         (long long)rows, (long long)g.k);
    tsq__im2col_rows(&g, 1, layout, in->data, out->data, 0, in->shape[0], NULL, g.ohw);
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}
