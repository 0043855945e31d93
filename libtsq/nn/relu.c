/* ReLU: y = max(x, 0); dx = dy where x > 0, else 0. */
#include "nn_internal.h"

#include <string.h>

static tsq_status relu_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                             int32_t *out_ndim, int64_t *out_shape)
{
    (void)l;
    *out_ndim = in_ndim;
    memcpy(out_shape, in_shape, (size_t)in_ndim * sizeof(int64_t));
    return TSQ_OK;
}

typedef struct {
    const float *x, *dy;
    float *y, *dx;
} relu_job;

static void forward_range(void *arg, int64_t lo, int64_t hi)
{
    relu_job *j = arg;
    tsq__vec_relu(j->y + lo, j->x + lo, hi - lo);
}

static void backward_range(void *arg, int64_t lo, int64_t hi)
{
    relu_job *j = arg;
    tsq__vec_relu_grad(j->dx + lo, j->x + lo, j->dy + lo, hi - lo);
}

static tsq_status relu_forward(tsq_layer *l, const float *x, float *y, int64_t batch, int train)
{
    relu_job j = {x, NULL, y, NULL};
    (void)train;
    tsq__parallel_range(tsq__layer_threads(l), batch * l->in_numel, 1, forward_range, &j);
    return TSQ_OK;
}

static tsq_status relu_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                                float *dx, int64_t batch)
{
    relu_job j = {x, dy, NULL, dx};
    (void)y;
    if (dx)
        tsq__parallel_range(tsq__layer_threads(l), batch * l->in_numel, 1, backward_range, &j);
    return TSQ_OK;
}

static const tsq__layer_ops relu_ops = {
    TSQ_LAYER_RELU, "relu", sizeof(tsq_layer), relu_setup, relu_forward, relu_backward,
    NULL, NULL, NULL, NULL, NULL,
};

tsq_status tsq_layer_relu_create(tsq_context *ctx, tsq_layer **layer)
{
    return tsq__layer_create_plain(ctx, &relu_ops, "relu_create", layer);
}
