/* The full-precision 2-D convolution layer (cross-correlation + bias), on
 * the GEMM core of conv_gemm.c. */
#include "nn_internal.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* The full-precision conv2d layer                                      */
/* ------------------------------------------------------------------ */

typedef struct {
    tsq_layer base;
    tsq__conv_geom g; /* the configuration from creation; the image's at setup */
    tsq__qat qat;
} conv_layer;

enum { P_WEIGHT = 0, P_BIAS = 1 };

const tsq__conv_geom *tsq__conv2d_geom(const tsq_layer *l)
{
    return &((const conv_layer *)l)->g;
}

tsq_status tsq__conv_setup(tsq_layer *l, tsq__conv_geom *g, int32_t in_ndim,
                           const int64_t *in_shape, int32_t *out_ndim, int64_t *out_shape)
{
    char buf[64];
    if (in_ndim != 3)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "%s: expects (C,H,W) samples, gets %s", l->ops->name,
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    if (in_shape[0] != g->cin)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "%s: input has %lld channels, layer expects %lld",
                         l->ops->name, (long long)in_shape[0], (long long)g->cin);
    if (!tsq__conv_geom_fit(g, in_shape[1], in_shape[2]))
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "%s: a %lldx%lld kernel with pad %lld does not fit a %lldx%lld input",
                         l->ops->name, (long long)g->kh, (long long)g->kw, (long long)g->pad,
                         (long long)in_shape[1], (long long)in_shape[2]);
    if (g->ohw * g->group > (INT64_C(1) << 30) || g->cout * g->ohw > (INT64_C(1) << 30))
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "%s: a %lldx%lld output is too large for one GEMM",
                         l->ops->name, (long long)g->oh, (long long)g->ow);
    *out_ndim = 3;
    out_shape[0] = g->cout;
    out_shape[1] = g->oh;
    out_shape[2] = g->ow;
    return TSQ_OK;
}

static tsq_status conv_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                             int32_t *out_ndim, int64_t *out_shape)
{
    return tsq__conv_setup(l, &((conv_layer *)l)->g, in_ndim, in_shape, out_ndim, out_shape);
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
        w = tsq__qat_weights(&c->qat, l, tsq__param_data(l, P_WEIGHT), c->g.cout, c->g.k, &st);
    if (st != TSQ_OK)
        return st;
    tsq__conv_forward(&c->g, tsq__layer_threads(l), l->obj.ctx->cpu, x, w, NULL,
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
    tsq__conv_backward(&c->g, tsq__layer_threads(l), l->obj.ctx->cpu, x,
                       c->qat.bits ? c->qat.wq : tsq__param_data(l, P_WEIGHT), dy,
                       tsq__param_grad(l, P_WEIGHT), tsq__param_grad(l, P_BIAS), dx, batch,
                       l->ws);
    return TSQ_OK;
}

tsq_status tsq__conv_info(const tsq__conv_geom *g, int32_t key, int64_t *value)
{
    switch (key) {
    case TSQ_LAYER_INFO_IN_CHANNELS: *value = g->cin; return TSQ_OK;
    case TSQ_LAYER_INFO_OUT_CHANNELS: *value = g->cout; return TSQ_OK;
    case TSQ_LAYER_INFO_KERNEL_H: *value = g->kh; return TSQ_OK;
    case TSQ_LAYER_INFO_KERNEL_W: *value = g->kw; return TSQ_OK;
    case TSQ_LAYER_INFO_STRIDE: *value = g->stride; return TSQ_OK;
    case TSQ_LAYER_INFO_PAD: *value = g->pad; return TSQ_OK;
    default: return TSQ_ERR_INVALID;
    }
}

static tsq_status conv_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    if (tsq__conv_info(&((const conv_layer *)l)->g, key, value) != TSQ_OK)
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_info: a conv2d layer has no key %d", (int)key);
    return TSQ_OK;
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
    tsq__qat_clone_extra, tsq__qat_destroy_extra, conv_set_option, conv_get_option, conv_info,
};

tsq__qat *tsq__conv2d_qat(tsq_layer *l)
{
    return l->ops == &conv_ops ? &((conv_layer *)l)->qat : NULL;
}

tsq_status tsq__conv_check_args(tsq_context *ctx, const char *where, int64_t cin, int64_t cout,
                                int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                                tsq_layer **layer)
{
    const int64_t max_ch = INT64_C(1) << 24;
    TSQ_FORWARD_IF_ERROR(tsq__layer_create_begin(ctx, where, layer));
    if (cin < 1 || cin > max_ch || cout < 1 || cout > max_ch)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: channels %lld -> %lld must be in 1..%lld", where, (long long)cin,
                         (long long)cout, (long long)max_ch);
    TSQ_FORWARD_IF_ERROR(
        tsq__conv_window_check(&ctx->obj, where, kh, kw, stride, stride, pad, pad, 1024));
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
    int64_t wshape[4];
    tsq_status st;
    st = tsq__conv_check_args(ctx, where, cin, cout, kh, kw, stride, pad, layer);
    if (st != TSQ_OK)
        return st;
    st = tsq__layer_alloc(ctx, &conv_ops, where, &l);
    if (st != TSQ_OK)
        return st;
    tsq__conv_geom_set(&((conv_layer *)l)->g, cin, cout, kh, kw, stride, stride, pad, pad);
    wshape[0] = cout;
    wshape[1] = cin;
    wshape[2] = kh;
    wshape[3] = kw;
    return tsq__layer_finish_weight_bias(l, where, 4, wshape, layer);
}
