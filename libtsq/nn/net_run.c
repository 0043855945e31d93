/* Running a net over a batch: the activation and gradient buffers (sized
 * for the largest batch seen, dropped when the layer list changes), input
 * checks, forward through the layers and backward through them in reverse. */
#include "nn_internal.h"

#include <string.h>

void tsq__net_free_buffers(tsq_net *net)
{
    tsq_context *ctx = net->obj.ctx;
    int32_t i;
    if (net->act) {
        for (i = 0; i <= net->nlayers; i++)
            tsq__free(ctx, net->act[i]);
        tsq__free(ctx, net->act);
    }
    net->act = NULL;
    net->act_cap = 0;
    tsq__free(ctx, net->grad_a);
    tsq__free(ctx, net->grad_b);
    net->grad_a = net->grad_b = NULL;
    net->grad_cap = 0;
    net->have_forward = 0;
    net->act_valid = -1;
}

static int64_t out_numel(const tsq_net *net)
{
    return net->nlayers ? net->layers[net->nlayers - 1]->out_numel : net->in_numel;
}

tsq_status tsq__net_reserve(tsq_net *net, int64_t n)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t maxn = net->in_numel;
    size_t g;
    int32_t i;
    if (n <= net->act_cap && net->act)
        return TSQ_OK;
    tsq__net_free_buffers(net);
    net->act = tsq__calloc(ctx, (size_t)net->nlayers + 1, sizeof *net->act);
    if (!net->act)
        goto oom;
    net->act[0] = tsq__alloc(ctx, (size_t)(n * net->in_numel) * sizeof(float));
    if (!net->act[0])
        goto oom;
    for (i = 0; i < net->nlayers; i++) {
        int64_t m = net->layers[i]->out_numel;
        if (m > maxn)
            maxn = m;
        net->act[i + 1] = tsq__alloc(ctx, (size_t)(n * m) * sizeof(float));
        if (!net->act[i + 1])
            goto oom;
    }
    g = (size_t)(n * maxn);
    net->grad_a = tsq__alloc(ctx, g * sizeof(float));
    net->grad_b = tsq__alloc(ctx, g * sizeof(float));
    if (!net->grad_a || !net->grad_b)
        goto oom;
    net->grad_cap = g;
    net->act_cap = n;
    return TSQ_OK;
oom:
    tsq__net_free_buffers(net);
    return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY,
                     "net: out of memory for the activations of %lld samples", (long long)n);
}

tsq_status tsq__net_check_input(tsq_net *net, const char *where, const tsq_tensor *x,
                                int64_t *n)
{
    tsq_status st = tsq__expect_dtype(&net->obj, where, "x", x, TSQ_DTYPE_F32);
    int64_t N;
    char a[64];
    if (st != TSQ_OK)
        return st;
    if (net->nlayers == 0)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: the net has no layers", where);
    N = x->shape[0];
    if (x->ndim < 2 || x->numel != N * net->in_numel)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: x must be (N, ...) with N samples of %s = %lld elements; it has "
                         "%d dimensions and %lld elements for N = %lld",
                         where, tsq__shape_str(a, sizeof a, net->in_ndim, net->in_shape),
                         (long long)net->in_numel, (int)x->ndim, (long long)x->numel,
                         (long long)N);
    if (N > (INT64_C(1) << 31) - 1)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE, "%s: batch of %lld is above 2^31", where,
                         (long long)N);
    if (!tsq__all_finite(x->data, x->numel))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: x holds NaN or Inf", where);
    *n = N;
    return TSQ_OK;
}

/* 1 if layer i is a batch-norm whose next layer is a ReLU: the two run as
 * one step (tsq__batchnorm_forward_relu, _backward_relu), which saves the
 * ReLU's passes over memory and gives the same bits. */
static int bn_relu_pair(const tsq_net *net, int32_t i)
{
    return i + 1 < net->nlayers && tsq__layer_is(net->layers[i], TSQ_LAYER_BATCHNORM) &&
           tsq__layer_is(net->layers[i + 1], TSQ_LAYER_RELU);
}

tsq_status tsq__net_run(tsq_net *net, int32_t upto, int64_t n, int train)
{
    int32_t i;
    net->have_forward = 0;
    net->act_valid = 0;
    net->batch = n;
    for (i = 0; i < upto; i++) {
        tsq_layer *l = net->layers[i];
        int pair = i + 1 < upto && bn_relu_pair(net, i);
        tsq_status st = pair ? tsq__batchnorm_forward_relu(l, net->act[i], net->act[i + 1],
                                                           net->act[i + 2], n, train)
                             : l->ops->forward(l, net->act[i], net->act[i + 1], n, train);
        if (st != TSQ_OK)
            return tsq__fail(&net->obj, st, "net: layer %d (%s): %s", (int)i, l->ops->name,
                             l->obj.msg);
        l->last_train = train;
        if (pair)
            net->layers[++i]->last_train = train;
        net->act_valid = i + 1;
    }
    net->have_forward = upto == net->nlayers;
    return TSQ_OK;
}

/* Validates and runs a forward; the output stays in act[nlayers]. */
tsq_status tsq__net_forward(tsq_net *net, const char *where, const tsq_tensor *x,
                                   int train, int64_t *n)
{
    tsq_status st = tsq__net_check_input(net, where, x, n);
    if (st == TSQ_OK)
        st = tsq__net_reserve(net, *n);
    if (st != TSQ_OK)
        return st;
    memcpy(net->act[0], x->data, (size_t)(*n * net->in_numel) * sizeof(float));
    return tsq__net_run(net, net->nlayers, *n, train);
}

tsq_status tsq_net_forward(tsq_net *net, const tsq_tensor *x, tsq_tensor *y, int32_t train)
{
    static const char *where = "net_forward";
    tsq_status st;
    int64_t n, m;
    if (!net)
        return TSQ_ERR_NULL;
    st = tsq__expect_dtype(&net->obj, where, "y", y, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    if (train != 0 && train != 1)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: train is %d, must be 0 or 1", where,
                         (int)train);
    if (x && x->dtype == TSQ_DTYPE_F32 && net->nlayers > 0) {
        m = out_numel(net);
        if (y->shape[0] != x->shape[0] || y->numel != x->shape[0] * m)
            return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                             "%s: y must hold N = %lld samples of %lld outputs; it has first "
                             "dimension %lld and %lld elements",
                             where, (long long)x->shape[0], (long long)m,
                             (long long)y->shape[0], (long long)y->numel);
    }
    st = tsq__net_forward(net, where, x, train, &n);
    if (st != TSQ_OK)
        return st;
    memcpy(y->data, net->act[net->nlayers], (size_t)y->numel * sizeof(float));
    tsq__clear(&net->obj);
    return TSQ_OK;
}

/* Backward from the gradient in grad_a (of the net output); dx may be NULL. */
tsq_status tsq__net_backward(tsq_net *net, float *dx_out)
{
    float *dy = net->grad_a, *dx = net->grad_b, *t;
    int32_t i, first = net->nlayers;
    /* Below the first layer with parameters, input gradients are only
     * needed if the caller asked for dx. */
    for (i = 0; i < net->nlayers; i++)
        if (net->layers[i]->nparams > 0) {
            first = i;
            break;
        }
    for (i = net->nlayers - 1; i >= 0; i--) {
        tsq_layer *l = net->layers[i];
        int want = dx_out || i > first;
        float *target = want ? (i == 0 && dx_out ? dx_out : dx) : NULL;
        tsq_status st;
        if (i > 0 && bn_relu_pair(net, i - 1))
            continue; /* the batch-norm below takes this ReLU's gradient */
        if (!want && l->nparams == 0)
            break;
        if (bn_relu_pair(net, i))
            st = tsq__batchnorm_backward_relu(l, net->act[i], dy, target, net->batch);
        else
            st = l->ops->backward(l, net->act[i], net->act[i + 1], dy, target, net->batch);
        if (st != TSQ_OK)
            return tsq__fail(&net->obj, st, "net_backward: layer %d (%s): %s", (int)i,
                             l->ops->name, l->obj.msg);
        t = dy;
        dy = dx;
        dx = t;
    }
    return TSQ_OK;
}

tsq_status tsq_net_backward(tsq_net *net, const tsq_tensor *dy, tsq_tensor *dx)
{
    static const char *where = "net_backward";
    tsq_status st;
    int64_t m;
    if (!net)
        return TSQ_ERR_NULL;
    if (!net->have_forward)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: no forward since the net last changed",
                         where);
    st = tsq__expect_dtype(&net->obj, where, "dy", dy, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    m = out_numel(net);
    if (dy->numel != net->batch * m || dy->shape[0] != net->batch)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: dy has %lld elements (first dimension %lld); the last forward "
                         "gave %lld samples of %lld",
                         where, (long long)dy->numel, (long long)dy->shape[0],
                         (long long)net->batch, (long long)m);
    if (dx) {
        st = tsq__expect_dtype(&net->obj, where, "dx", dx, TSQ_DTYPE_F32);
        if (st != TSQ_OK)
            return st;
        if (dx->numel != net->batch * net->in_numel || dx->shape[0] != net->batch)
            return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                             "%s: dx has %lld elements, the input had %lld samples of %lld",
                             where, (long long)dx->numel, (long long)net->batch,
                             (long long)net->in_numel);
    }
    if (!tsq__all_finite(dy->data, dy->numel))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: dy holds NaN or Inf", where);
    memcpy(net->grad_a, dy->data, (size_t)dy->numel * sizeof(float));
    st = tsq__net_backward(net, dx ? (float *)dx->data : NULL);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}
