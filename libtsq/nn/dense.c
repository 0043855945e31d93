/* Fully connected layer y = W x + b, over the batch as GEMMs:
 *     Y (N x out) = X (N x in) W^T,  dW = dY^T X,  dX = dY W,  db = colsum dY.
 * The GEMM core (kernels/dense_f32.c) is shared with the low-bit dense
 * layer and the inference plan. */
#include "nn_internal.h"

#include <string.h>

typedef struct {
    tsq_layer base;
    int64_t in, out;
    tsq__qat qat;
} dense_layer;

enum { P_WEIGHT = 0, P_BIAS = 1 };

tsq_status tsq__dense_setup(tsq_layer *l, int64_t in, int64_t out, int32_t in_ndim,
                            const int64_t *in_shape, int32_t *out_ndim, int64_t *out_shape)
{
    char buf[64];
    if (in_ndim != 1)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "%s: expects vector samples of %lld features, gets %s (add a flatten layer)",
                         l->ops->name, (long long)in,
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    if (in_shape[0] != in)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "%s: expects %lld input features, gets %lld",
                         l->ops->name, (long long)in, (long long)in_shape[0]);
    *out_ndim = 1;
    out_shape[0] = out;
    return TSQ_OK;
}

static tsq_status dense_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                              int32_t *out_ndim, int64_t *out_shape)
{
    dense_layer *d = (dense_layer *)l;
    return tsq__dense_setup(l, d->in, d->out, in_ndim, in_shape, out_ndim, out_shape);
}

static tsq_status dense_forward(tsq_layer *l, const float *x, float *y, int64_t batch,
                                int train)
{
    dense_layer *d = (dense_layer *)l;
    tsq_status st;
    const float *w = tsq__qat_weights(&d->qat, l, tsq__param_data(l, P_WEIGHT), d->out, d->in,
                                      &st);
    (void)train;
    if (!w)
        return st;
    tsq__dense_forward(tsq__layer_threads(l), d->in, d->out, x, w, NULL,
                       tsq__param_data(l, P_BIAS), y, batch);
    return TSQ_OK;
}

static tsq_status dense_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                                 float *dx, int64_t batch)
{
    dense_layer *d = (dense_layer *)l;
    /* QAT: dx through the weights the forward used, dW straight through */
    const float *w = d->qat.bits ? d->qat.wq : tsq__param_data(l, P_WEIGHT);
    (void)y;
    tsq__dense_backward(tsq__layer_threads(l), d->in, d->out, x, w, dy, tsq__param_grad(l, P_WEIGHT), tsq__param_grad(l, P_BIAS), dx, batch);
    return TSQ_OK;
}

static tsq_status dense_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    const dense_layer *d = (const dense_layer *)l;
    if (key == TSQ_LAYER_INFO_IN_CHANNELS)
        *value = d->in;
    else if (key == TSQ_LAYER_INFO_OUT_CHANNELS)
        *value = d->out;
    else
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_info: a dense layer has no key %d", (int)key);
    return TSQ_OK;
}

static tsq_status dense_set_option(tsq_layer *l, int32_t key, double value)
{
    return tsq__qat_set_option(&((dense_layer *)l)->qat, l, key, value);
}

static tsq_status dense_get_option(const tsq_layer *l, int32_t key, double *value)
{
    return tsq__qat_get_option(&((const dense_layer *)l)->qat, l, key, value);
}

static const tsq__layer_ops dense_ops = {
    TSQ_LAYER_DENSE, "dense", sizeof(dense_layer), dense_setup, dense_forward, dense_backward,
    tsq__qat_clone_extra, tsq__qat_destroy_extra, dense_set_option, dense_get_option, dense_info,
};

tsq__qat *tsq__layer_qat(tsq_layer *l)
{
    if (l->ops == &dense_ops)
        return &((dense_layer *)l)->qat;
    return tsq__conv2d_qat(l);
}

tsq_status tsq__dense_check_args(tsq_context *ctx, const char *where, int64_t in, int64_t out,
                                 tsq_layer **layer)
{
    const int64_t max = INT64_C(1) << 30;
    TSQ_FORWARD_IF_ERROR(tsq__layer_create_begin(ctx, where, layer));
    if (in < 1 || in > max || out < 1 || out > max)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: sizes %lld -> %lld must be in 1..%lld",
                         where, (long long)in, (long long)out, (long long)max);
    if (in * out > max)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: %lld x %lld weights exceed 2^30", where,
                         (long long)out, (long long)in);
    return TSQ_OK;
}

tsq_status tsq_layer_dense_create(tsq_context *ctx, int64_t in, int64_t out, tsq_layer **layer)
{
    static const char *where = "dense_create";
    tsq_layer *l = NULL;
    int64_t wshape[2];
    tsq_status st;
    st = tsq__dense_check_args(ctx, where, in, out, layer);
    if (st != TSQ_OK)
        return st;
    st = tsq__layer_alloc(ctx, &dense_ops, where, &l);
    if (st != TSQ_OK)
        return st;
    ((dense_layer *)l)->in = in;
    ((dense_layer *)l)->out = out;
    wshape[0] = out;
    wshape[1] = in;
    return tsq__layer_finish_weight_bias(l, where, 2, wshape, layer);
}

tsq_status tsq__layer_finish_weight_bias(tsq_layer *l, const char *where, int32_t ndim,
                                         const int64_t *wshape, tsq_layer **out)
{
    tsq_context *ctx = l->obj.ctx;
    int64_t n = 1;
    int32_t i;
    float *w = NULL;
    tsq_status st = tsq__layer_add_param(l, where, "weight", 1, ndim, wshape, &w);
    if (st == TSQ_OK)
        st = tsq__layer_add_param(l, where, "bias", 0, 1, wshape, NULL);
    if (st != TSQ_OK) {
        tsq__layer_free(l);
        return st;
    }
    for (i = 0; i < ndim; i++)
        n *= wshape[i];
    tsq__init_he_normal(ctx, w, n, n / wshape[0]);
    tsq__clear(&ctx->obj);
    *out = l;
    return TSQ_OK;
}
