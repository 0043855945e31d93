/* Flatten: any sample shape to a vector of the same elements, same order
 * (a copy: activations of different layers never alias). */
#include "nn_internal.h"

#include <string.h>

static tsq_status flatten_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                                int32_t *out_ndim, int64_t *out_shape)
{
    int64_t n = 1;
    int32_t i;
    (void)l;
    for (i = 0; i < in_ndim; i++)
        n *= in_shape[i];
    *out_ndim = 1;
    out_shape[0] = n;
    return TSQ_OK;
}

static tsq_status flatten_forward(tsq_layer *l, const float *x, float *y, int64_t batch,
                                  int train)
{
    (void)train;
    memcpy(y, x, (size_t)(batch * l->in_numel) * sizeof(float));
    return TSQ_OK;
}

static tsq_status flatten_backward(tsq_layer *l, const float *x, const float *y,
                                   const float *dy, float *dx, int64_t batch)
{
    (void)x;
    (void)y;
    if (dx)
        memcpy(dx, dy, (size_t)(batch * l->in_numel) * sizeof(float));
    return TSQ_OK;
}

static const tsq__layer_ops flatten_ops = {
    TSQ_LAYER_FLATTEN, "flatten", sizeof(tsq_layer), flatten_setup, flatten_forward,
    flatten_backward, NULL, NULL, NULL, NULL, NULL,
};

tsq_status tsq_layer_flatten_create(tsq_context *ctx, tsq_layer **layer)
{
    return tsq__layer_create_plain(ctx, &flatten_ops, "flatten_create", layer);
}
