/* Max-pool 2-d (k x k windows, stride s, no padding; the gradient goes to
 * the first maximum of each window, whose index forward records) and
 * global average pool ((C,H,W) -> (C), dx = dy / (H W)). */
#include "nn_internal.h"

#include <string.h>

typedef struct {
    tsq_layer base;
    int64_t k, stride;
    int32_t *argmax;      /* per output element of the last forward */
    size_t argmax_cap;
} maxpool_layer;

static tsq_status maxpool_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                                int32_t *out_ndim, int64_t *out_shape)
{
    maxpool_layer *m = (maxpool_layer *)l;
    char buf[64];
    if (in_ndim != 3)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "maxpool2d: expects (C,H,W) samples, gets %s",
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    if (in_shape[1] < m->k || in_shape[2] < m->k)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "maxpool2d: a %lldx%lld window does not fit %s",
                         (long long)m->k, (long long)m->k,
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    if (in_shape[1] * in_shape[2] > (INT64_C(1) << 31) - 1)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE, "maxpool2d: planes above 2^31 pixels");
    *out_ndim = 3;
    out_shape[0] = in_shape[0];
    out_shape[1] = (in_shape[1] - m->k) / m->stride + 1;
    out_shape[2] = (in_shape[2] - m->k) / m->stride + 1;
    return TSQ_OK;
}

typedef struct {
    maxpool_layer *m;
    const float *x, *dy;
    float *y, *dx;
} pool_job;

static void maxpool_planes(void *arg, int64_t lo, int64_t hi)
{
    pool_job *j = arg;
    tsq_layer *l = &j->m->base;
    tsq__maxpool_f32(j->x, j->y, j->m->argmax, lo, hi, l->in_shape[1], l->in_shape[2],
                     l->out_shape[1], l->out_shape[2], j->m->k, j->m->stride);
}

static void maxpool_back_planes(void *arg, int64_t lo, int64_t hi)
{
    pool_job *j = arg;
    tsq_layer *l = &j->m->base;
    int64_t HW = l->in_shape[1] * l->in_shape[2], OHW = l->out_shape[1] * l->out_shape[2];
    int64_t pl, o;
    for (pl = lo; pl < hi; pl++) {
        float *dxp = j->dx + pl * HW;
        const float *dyp = j->dy + pl * OHW;
        const int32_t *ip = j->m->argmax + pl * OHW;
        memset(dxp, 0, (size_t)HW * sizeof(float));
        for (o = 0; o < OHW; o++)
            dxp[ip[o]] += dyp[o];
    }
}

static tsq_status maxpool_forward(tsq_layer *l, const float *x, float *y, int64_t batch,
                                  int train)
{
    maxpool_layer *m = (maxpool_layer *)l;
    size_t need = (size_t)(batch * l->out_numel);
    pool_job j = {m, x, NULL, y, NULL};
    (void)train;
    if (need > m->argmax_cap) {
        int32_t *p = tsq__alloc(l->obj.ctx, need * sizeof(int32_t));
        if (!p)
            return tsq__fail(&l->obj, TSQ_ERR_NO_MEMORY, "maxpool2d_forward: out of memory");
        tsq__free(l->obj.ctx, m->argmax);
        m->argmax = p;
        m->argmax_cap = need;
    }
    tsq__parallel_range(tsq__layer_threads(l), batch * l->in_shape[0],
                        l->in_shape[1] * l->in_shape[2], maxpool_planes, &j);
    return TSQ_OK;
}

static tsq_status maxpool_backward(tsq_layer *l, const float *x, const float *y,
                                   const float *dy, float *dx, int64_t batch)
{
    pool_job j = {(maxpool_layer *)l, x, dy, (float *)y, dx};
    if (dx)
        tsq__parallel_range(tsq__layer_threads(l), batch * l->in_shape[0],
                            l->in_shape[1] * l->in_shape[2], maxpool_back_planes, &j);
    return TSQ_OK;
}

static tsq_status maxpool_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    const maxpool_layer *m = (const maxpool_layer *)l;
    if (key == TSQ_LAYER_INFO_KERNEL_H || key == TSQ_LAYER_INFO_KERNEL_W)
        *value = m->k;
    else if (key == TSQ_LAYER_INFO_STRIDE)
        *value = m->stride;
    else
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_info: a maxpool2d layer has no key %d", (int)key);
    return TSQ_OK;
}

static tsq_status maxpool_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    (void)src;
    ((maxpool_layer *)dst)->argmax = NULL; /* per-forward scratch: not copied */
    ((maxpool_layer *)dst)->argmax_cap = 0;
    return TSQ_OK;
}

static void maxpool_destroy_extra(tsq_layer *l)
{
    tsq__free(l->obj.ctx, ((maxpool_layer *)l)->argmax);
}

static const tsq__layer_ops maxpool_ops = {
    TSQ_LAYER_MAXPOOL2D, "maxpool2d", sizeof(maxpool_layer), maxpool_setup, maxpool_forward,
    maxpool_backward, maxpool_clone_extra, maxpool_destroy_extra, NULL, NULL, maxpool_info,
};

tsq_status tsq_layer_maxpool2d_create(tsq_context *ctx, int64_t k, int64_t stride,
                                      tsq_layer **layer)
{
    tsq_status st = tsq__layer_create_begin(ctx, "maxpool2d_create", layer);
    if (st != TSQ_OK)
        return st;
    if (k < 1 || k > 1024 || stride < 1 || stride > 1024)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "maxpool2d_create: k %lld and stride %lld must be in 1..1024",
                         (long long)k, (long long)stride);
    st = tsq__layer_alloc(ctx, &maxpool_ops, "maxpool2d_create", layer);
    if (st != TSQ_OK)
        return st;
    ((maxpool_layer *)*layer)->k = k;
    ((maxpool_layer *)*layer)->stride = stride;
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

/* ---- global average pool ---- */

static tsq_status gap_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                            int32_t *out_ndim, int64_t *out_shape)
{
    char buf[64];
    if (in_ndim != 3)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "global_avgpool: expects (C,H,W) samples, gets %s",
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    *out_ndim = 1;
    out_shape[0] = in_shape[0];
    return TSQ_OK;
}

static tsq_status gap_forward(tsq_layer *l, const float *x, float *y, int64_t batch, int train)
{
    int64_t planes = batch * l->in_shape[0], S = l->in_shape[1] * l->in_shape[2], pl, p;
    (void)train;
    for (pl = 0; pl < planes; pl++) {
        double s = 0.0;
        for (p = 0; p < S; p++)
            s += x[pl * S + p];
        y[pl] = (float)(s / (double)S);
    }
    return TSQ_OK;
}

static tsq_status gap_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                               float *dx, int64_t batch)
{
    int64_t planes = batch * l->in_shape[0], S = l->in_shape[1] * l->in_shape[2], pl, p;
    float inv = 1.0f / (float)S;
    (void)x;
    (void)y;
    if (!dx)
        return TSQ_OK;
    for (pl = 0; pl < planes; pl++)
        for (p = 0; p < S; p++)
            dx[pl * S + p] = dy[pl] * inv;
    return TSQ_OK;
}

static const tsq__layer_ops gap_ops = {
    TSQ_LAYER_GLOBAL_AVGPOOL, "global_avgpool", sizeof(tsq_layer), gap_setup, gap_forward,
    gap_backward, NULL, NULL, NULL, NULL, NULL,
};

tsq_status tsq_layer_global_avgpool_create(tsq_context *ctx, tsq_layer **layer)
{
    return tsq__layer_create_plain(ctx, &gap_ops, "global_avgpool_create", layer);
}
