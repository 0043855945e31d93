/* The full-precision 2-D convolution layer (cross-correlation + bias), on
 * the GEMM core of conv_gemm.c. */
#include "nn_internal.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* The full-precision conv2d layer                                      */
/* ------------------------------------------------------------------ */

typedef struct {
    tsq_layer base;
    int64_t cin, cout, kh, kw, stride, pad;
    tsq__conv_geom g;
    tsq__qat qat;
} conv_layer;

enum { P_WEIGHT = 0, P_BIAS = 1 };

const tsq__conv_geom *tsq__conv2d_geom(const tsq_layer *l)
{
    return &((const conv_layer *)l)->g;
}

static tsq_status conv_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                             int32_t *out_ndim, int64_t *out_shape)
{
    conv_layer *c = (conv_layer *)l;
    char buf[64];
    if (in_ndim != 3)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "%s: expects (C,H,W) samples, gets %s", l->ops->name,
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    if (in_shape[0] != c->cin)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "%s: input has %lld channels, layer expects %lld",
                         l->ops->name, (long long)in_shape[0], (long long)c->cin);
    if (!tsq__conv_geom_init(&c->g, c->cin, in_shape[1], in_shape[2], c->cout, c->kh, c->kw,
                             c->stride, c->pad))
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "%s: a %lldx%lld kernel with pad %lld does not fit a %lldx%lld input",
                         l->ops->name, (long long)c->kh, (long long)c->kw, (long long)c->pad,
                         (long long)in_shape[1], (long long)in_shape[2]);
    if (c->g.ohw * c->g.group > (INT64_C(1) << 30) || c->cout * c->g.ohw > (INT64_C(1) << 30))
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "%s: a %lldx%lld output is too large for one GEMM",
                         l->ops->name, (long long)c->g.oh, (long long)c->g.ow);
    *out_ndim = 3;
    out_shape[0] = c->cout;
    out_shape[1] = c->g.oh;
    out_shape[2] = c->g.ow;
    return TSQ_OK;
}

static tsq_status conv_ws(tsq_layer *l, const char *where)
{
    conv_layer *c = (conv_layer *)l;
    return tsq__layer_workspace(l, where, tsq__conv_ws_floats(&c->g, tsq__layer_threads(l), 1));
}

static tsq_status conv_forward(tsq_layer *l, const float *x, float *y, int64_t batch, int train)
{
    conv_layer *c = (conv_layer *)l;
    tsq_status st = conv_ws(l, "conv2d_forward");
    const float *w = NULL;
    (void)train;
    if (st == TSQ_OK)
        w = tsq__qat_weights(&c->qat, l, tsq__param_data(l, P_WEIGHT), c->cout, c->g.k, &st);
    if (st != TSQ_OK)
        return st;
    tsq__conv_forward(&c->g, tsq__layer_threads(l), x, w, NULL,
                      tsq__param_data(l, P_BIAS), y, batch, l->ws);
    return TSQ_OK;
}

static tsq_status conv_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                                float *dx, int64_t batch)
{
    conv_layer *c = (conv_layer *)l;
    tsq_status st = conv_ws(l, "conv2d_backward");
    (void)y;
    if (st != TSQ_OK)
        return st;
    /* QAT: dx through the weights the forward used, dW straight through */
    tsq__conv_backward(&c->g, tsq__layer_threads(l), x,
                       c->qat.bits ? c->qat.wq : tsq__param_data(l, P_WEIGHT), dy,
                       tsq__param_grad(l, P_WEIGHT), tsq__param_grad(l, P_BIAS), dx, batch,
                       l->ws);
    return TSQ_OK;
}

tsq_status tsq__conv_info(int64_t cin, int64_t cout, int64_t kh, int64_t kw, int64_t stride,
                          int64_t pad, int32_t key, int64_t *value)
{
    switch (key) {
    case TSQ_LAYER_INFO_IN_CHANNELS: *value = cin; return TSQ_OK;
    case TSQ_LAYER_INFO_OUT_CHANNELS: *value = cout; return TSQ_OK;
    case TSQ_LAYER_INFO_KERNEL_H: *value = kh; return TSQ_OK;
    case TSQ_LAYER_INFO_KERNEL_W: *value = kw; return TSQ_OK;
    case TSQ_LAYER_INFO_STRIDE: *value = stride; return TSQ_OK;
    case TSQ_LAYER_INFO_PAD: *value = pad; return TSQ_OK;
    default: return TSQ_ERR_INVALID;
    }
}

static tsq_status conv_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    const conv_layer *c = (const conv_layer *)l;
    if (tsq__conv_info(c->cin, c->cout, c->kh, c->kw, c->stride, c->pad, key, value) != TSQ_OK)
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_info: a conv2d layer has no key %d", (int)key);
    return TSQ_OK;
}

static tsq_status conv_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    conv_layer *c = (conv_layer *)dst;
    (void)src;
    c->qat.wq = c->qat.alpha = NULL;
    c->qat.codes = NULL;
    c->qat.cap = 0;
    return TSQ_OK;
}

static void conv_destroy_extra(tsq_layer *l)
{
    tsq__qat_free(&((conv_layer *)l)->qat, l);
}

static tsq_status conv_set_option(tsq_layer *l, int32_t key, double value)
{
    return tsq__qat_set_option(&((conv_layer *)l)->qat, l, key, value);
}

static tsq_status conv_get_option(const tsq_layer *l, int32_t key, double *value)
{
    return tsq__qat_get_option(&((const conv_layer *)l)->qat, l, key, value);
}

static const tsq__layer_ops conv_ops = {
    TSQ_LAYER_CONV2D, "conv2d", sizeof(conv_layer), conv_setup, conv_forward, conv_backward,
    conv_clone_extra, conv_destroy_extra, conv_set_option, conv_get_option, conv_info,
};

tsq__qat *tsq__conv2d_qat(tsq_layer *l)
{
    return l->ops == &conv_ops ? &((conv_layer *)l)->qat : NULL;
}

tsq_status tsq__conv_check_args(tsq_context *ctx, const char *where, int64_t cin, int64_t cout,
                                int64_t kh, int64_t kw, int64_t stride, int64_t pad)
{
    const int64_t max_ch = INT64_C(1) << 24;
    if (cin < 1 || cin > max_ch || cout < 1 || cout > max_ch)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: channels %lld -> %lld must be in 1..%lld", where, (long long)cin,
                         (long long)cout, (long long)max_ch);
    if (kh < 1 || kh > 1024 || kw < 1 || kw > 1024)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: kernel %lldx%lld must be in 1..1024",
                         where, (long long)kh, (long long)kw);
    if (stride < 1 || stride > 1024)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: stride %lld must be in 1..1024", where,
                         (long long)stride);
    if (pad < 0 || pad >= kh || pad >= kw)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: pad %lld must be in 0..kernel-1 (kernel %lldx%lld)", where,
                         (long long)pad, (long long)kh, (long long)kw);
    if (cin * kh * kw > (INT64_C(1) << 30))
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: cin*kh*kw = %lld exceeds 2^30", where,
                         (long long)(cin * kh * kw));
    return TSQ_OK;
}

tsq_status tsq_layer_conv2d_create(tsq_context *ctx, int64_t cin, int64_t cout, int64_t kh,
                                   int64_t kw, int64_t stride, int64_t pad, tsq_layer **layer)
{
    static const char *where = "conv2d_create";
    tsq_layer *l = NULL;
    conv_layer *c;
    int64_t wshape[4], bshape[1];
    float *w;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!layer)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    *layer = NULL;
    st = tsq__conv_check_args(ctx, where, cin, cout, kh, kw, stride, pad);
    if (st != TSQ_OK)
        return st;
    st = tsq__layer_alloc(ctx, &conv_ops, where, &l);
    if (st != TSQ_OK)
        return st;
    c = (conv_layer *)l;
    c->cin = cin;
    c->cout = cout;
    c->kh = kh;
    c->kw = kw;
    c->stride = stride;
    c->pad = pad;
    wshape[0] = cout;
    wshape[1] = cin;
    wshape[2] = kh;
    wshape[3] = kw;
    bshape[0] = cout;
    st = tsq__layer_add_param(l, where, "weight", 1, 4, wshape, &w);
    if (st == TSQ_OK)
        st = tsq__layer_add_param(l, where, "bias", 0, 1, bshape, NULL);
    if (st != TSQ_OK) {
        tsq__layer_free(l);
        return st;
    }
    tsq__init_he_normal(ctx, w, cout * cin * kh * kw, cin * kh * kw);
    tsq__clear(&ctx->obj);
    *layer = l;
    return TSQ_OK;
}
