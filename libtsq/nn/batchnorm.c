/* Batch normalisation, 1-d (samples (C)) and 2-d (samples (C,H,W)).
 *
 * Over the M = N*H*W values of channel c:
 *   train:  mu = mean x,  var = mean (x - mu)^2 (biased),
 *           running_mean <- (1-m) running_mean + m mu,
 *           running_var  <- (1-m) running_var  + m var M/(M-1)
 *   eval (or frozen): mu = running_mean, var = running_var
 *   y = gamma (x - mu) / sqrt(var + eps) + beta
 * Backward with batch statistics (xh = (x - mu) istd):
 *   dbeta = sum dy,  dgamma = sum dy xh,
 *   dx = gamma istd (dy - dbeta/M - xh dgamma/M);
 * with running statistics the normalisation is a constant affine map, so
 *   dx = gamma istd dy.
 * Channel sums are taken in double; channels are independent, so the
 * result does not depend on the thread count.
 *
 * A ReLU right after the layer runs inside its passes (the net pairs them,
 * net_run.c): the forward writes y and max(y, 0) from one read of x, and
 * the backward takes the ReLU's output gradient and recomputes its mask,
 * y > 0, from x (y = sc x + sh, the same float operations, so the same
 * bits), instead of the ReLU's own pass writing dy for this layer's two
 * passes to read back. Every result is the pair's, run apart, bit for
 * bit. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    tsq_layer base;
    int64_t channels;
    int64_t spatial;      /* H*W, or 1 for 1-d */
    double momentum, eps;
    int frozen;
    int used_batch_stats; /* how the last forward normalised */
    float *mean, *istd;   /* per channel, from the last forward */
    float *sc, *sh;       /* per channel, the last forward's y = sc x + sh */
} bn_layer;

enum { P_GAMMA = 0, P_BETA = 1 };
enum { S_MEAN = 0, S_VAR = 1 };

int64_t tsq__batchnorm_channels(const tsq_layer *l)
{
    return ((const bn_layer *)l)->channels;
}

void tsq__batchnorm_eval_affine(const tsq_layer *l, float *s, float *t)
{
    const bn_layer *b = (const bn_layer *)l;
    const float *gamma = tsq__param_data(l, P_GAMMA), *beta = tsq__param_data(l, P_BETA);
    const float *rm = tsq__state_data(l, S_MEAN), *rv = tsq__state_data(l, S_VAR);
    int64_t c;
    for (c = 0; c < b->channels; c++) {
        double sc = (double)gamma[c] / sqrt((double)rv[c] + b->eps);
        s[c] = (float)sc;
        t[c] = (float)((double)beta[c] - sc * (double)rm[c]);
    }
}

static tsq_status bn_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                           int32_t *out_ndim, int64_t *out_shape)
{
    bn_layer *b = (bn_layer *)l;
    char buf[64];
    if ((in_ndim != 1 && in_ndim != 3) || in_shape[0] != b->channels)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "batchnorm: expects (%lld) or (%lld,H,W) samples, gets %s",
                         (long long)b->channels, (long long)b->channels,
                         tsq__shape_str(buf, sizeof buf, in_ndim, in_shape));
    b->spatial = in_ndim == 3 ? in_shape[1] * in_shape[2] : 1;
    *out_ndim = in_ndim;
    memcpy(out_shape, in_shape, (size_t)in_ndim * sizeof(int64_t));
    return TSQ_OK;
}

typedef struct {
    bn_layer *b;
    const float *x, *dy;
    float *y, *dx;
    float *r;  /* forward: the ReLU's output too (tsq__batchnorm_forward_relu), or NULL */
    int relu;  /* backward: dy is the gradient of that ReLU's output */
    int64_t batch;
    int update;
} bn_job;

static void forward_channels(void *arg, int64_t lo, int64_t hi)
{
    bn_job *j = arg;
    bn_layer *b = j->b;
    const float *gamma = tsq__param_data(&b->base, P_GAMMA);
    const float *beta = tsq__param_data(&b->base, P_BETA);
    float *rm = tsq__state_data(&b->base, S_MEAN), *rv = tsq__state_data(&b->base, S_VAR);
    int64_t S = b->spatial, C = b->channels, M = j->batch * S, c, n;
    for (c = lo; c < hi; c++) {
        double mu, var, istd;
        float sc, sh;
        if (b->used_batch_stats) {
            /* One pass: var = E[x^2] - mu^2, in double (the cancellation
             * only matters for |mu| / sigma beyond ~1e6). */
            double sum = 0.0, sq = 0.0;
            tsq__vec_sums_rows(b->base.obj.ctx->cpu, j->x + c * S, C * S, j->batch, S, &sum, &sq);
            mu = sum / (double)M;
            var = sq / (double)M - mu * mu;
            if (var < 0.0)
                var = 0.0;
            if (j->update) {
                double unbiased = M > 1 ? var * (double)M / (double)(M - 1) : var;
                rm[c] = (float)((1.0 - b->momentum) * rm[c] + b->momentum * mu);
                rv[c] = (float)((1.0 - b->momentum) * rv[c] + b->momentum * unbiased);
            }
        } else {
            mu = rm[c];
            var = rv[c];
        }
        istd = 1.0 / sqrt(var + b->eps);
        b->mean[c] = (float)mu;
        b->istd[c] = (float)istd;
        sc = (float)(gamma[c] * istd);
        sh = (float)(beta[c] - gamma[c] * istd * mu);
        b->sc[c] = sc;
        b->sh[c] = sh;
        for (n = 0; n < j->batch; n++) {
            int64_t o = (n * C + c) * S;
            if (j->r)
                tsq__vec_affine_relu(j->y + o, j->r + o, j->x + o, sc, sh, S);
            else
                tsq__vec_affine(j->y + o, j->x + o, sc, sh, S);
        }
    }
}

static tsq_status run_forward(tsq_layer *l, const float *x, float *y, float *r, int64_t batch,
                              int train)
{
    bn_layer *b = (bn_layer *)l;
    bn_job j;
    memset(&j, 0, sizeof j);
    j.b = b;
    j.x = x;
    j.y = y;
    j.r = r;
    j.batch = batch;
    b->used_batch_stats = train && !b->frozen;
    j.update = b->used_batch_stats;
    tsq__parallel_range(tsq__layer_threads(l), b->channels, 2 * batch * b->spatial,
                        forward_channels, &j);
    return TSQ_OK;
}

static tsq_status bn_forward(tsq_layer *l, const float *x, float *y, int64_t batch, int train)
{
    return run_forward(l, x, y, NULL, batch, train);
}

tsq_status tsq__batchnorm_forward_relu(tsq_layer *l, const float *x, float *y, float *r,
                                       int64_t batch, int train)
{
    return run_forward(l, x, y, r, batch, train);
}

static void backward_channels(void *arg, int64_t lo, int64_t hi)
{
    bn_job *j = arg;
    bn_layer *b = j->b;
    const float *gamma = tsq__param_data(&b->base, P_GAMMA);
    float *dgamma = tsq__param_grad(&b->base, P_GAMMA), *dbeta = tsq__param_grad(&b->base, P_BETA);
    uint32_t cpu = b->base.obj.ctx->cpu;
    int64_t S = b->spatial, C = b->channels, M = j->batch * S, c, n;
    for (c = lo; c < hi; c++) {
        double sdy = 0.0, sdx = 0.0, sdyx;
        double mu = b->mean[c], istd = b->istd[c];
        float sc = b->sc[c], sh = b->sh[c];
        if (j->relu)
            tsq__vec_dot_sum_rows_relu(cpu, j->dy + c * S, j->x + c * S, sc, sh, C * S, j->batch,
                                       S, &sdy, &sdx);
        else
            tsq__vec_dot_sum_rows(cpu, j->dy + c * S, j->x + c * S, C * S, j->batch, S, &sdy,
                                  &sdx);
        /* sum dy xh with xh = (x - mu) istd */
        sdyx = istd * (sdx - mu * sdy);
        dgamma[c] = (float)sdyx;
        dbeta[c] = (float)sdy;
        if (!j->dx)
            continue;
        for (n = 0; n < j->batch; n++) {
            int64_t o = (n * C + c) * S;
            if (b->used_batch_stats) {
                /* dx = k (dy - mean dy - xh mean(dy xh)) = a dy + bx x + c0 */
                double k = gamma[c] * istd, mdy = sdy / (double)M, mdyx = sdyx / (double)M;
                float a = (float)k, bx = (float)(-k * istd * mdyx);
                float c0 = (float)(-k * mdy + k * istd * mdyx * mu);
                if (j->relu)
                    tsq__vec_axpbypc_relu(j->dx + o, j->dy + o, j->x + o, sc, sh, a, bx, c0, S);
                else
                    tsq__vec_axpbypc(j->dx + o, j->dy + o, j->x + o, a, bx, c0, S);
            } else {
                float k = (float)(gamma[c] * istd);
                if (j->relu)
                    tsq__vec_scale_relu(j->dx + o, j->dy + o, j->x + o, sc, sh, k, S);
                else
                    tsq__vec_affine(j->dx + o, j->dy + o, k, 0.0f, S);
            }
        }
    }
}

static tsq_status run_backward(tsq_layer *l, const float *x, const float *dy, float *dx,
                               int64_t batch, int relu)
{
    bn_layer *b = (bn_layer *)l;
    bn_job j;
    memset(&j, 0, sizeof j);
    j.b = b;
    j.x = x;
    j.dy = dy;
    j.dx = dx;
    j.relu = relu;
    j.batch = batch;
    tsq__parallel_range(tsq__layer_threads(l), b->channels, 2 * batch * b->spatial,
                        backward_channels, &j);
    return TSQ_OK;
}

static tsq_status bn_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                              float *dx, int64_t batch)
{
    (void)y;
    return run_backward(l, x, dy, dx, batch, 0);
}

tsq_status tsq__batchnorm_backward_relu(tsq_layer *l, const float *x, const float *dr, float *dx,
                                        int64_t batch)
{
    return run_backward(l, x, dr, dx, batch, 1);
}

static tsq_status bn_set_option(tsq_layer *l, int32_t key, double value)
{
    bn_layer *b = (bn_layer *)l;
    switch (key) {
    case TSQ_LAYER_OPT_BN_MOMENTUM: b->momentum = value; break;
    case TSQ_LAYER_OPT_BN_EPS: b->eps = value; break;
    case TSQ_LAYER_OPT_BN_FROZEN: b->frozen = value != 0; break;
    default:
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_set_option: key %d does not apply to a batchnorm layer", (int)key);
    }
    tsq__clear(&l->obj);
    return TSQ_OK;
}

static tsq_status bn_get_option(const tsq_layer *l, int32_t key, double *value)
{
    const bn_layer *b = (const bn_layer *)l;
    switch (key) {
    case TSQ_LAYER_OPT_BN_MOMENTUM: *value = b->momentum; return TSQ_OK;
    case TSQ_LAYER_OPT_BN_EPS: *value = b->eps; return TSQ_OK;
    case TSQ_LAYER_OPT_BN_FROZEN: *value = b->frozen; return TSQ_OK;
    default:
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_get_option: key %d does not apply to a batchnorm layer", (int)key);
    }
}

static tsq_status bn_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    if (key != TSQ_LAYER_INFO_IN_CHANNELS)
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_info: a batchnorm layer has no key %d", (int)key);
    *value = ((const bn_layer *)l)->channels;
    return TSQ_OK;
}

static tsq_status bn_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    const bn_layer *s = (const bn_layer *)src;
    bn_layer *d = (bn_layer *)dst;
    d->mean = tsq__alloc(dst->obj.ctx, (size_t)(4 * s->channels) * sizeof(float));
    d->istd = d->sc = d->sh = NULL;
    if (!d->mean)
        return TSQ_ERR_NO_MEMORY;
    d->istd = d->mean + s->channels;
    d->sc = d->mean + 2 * s->channels;
    d->sh = d->mean + 3 * s->channels;
    memcpy(d->mean, s->mean, (size_t)(4 * s->channels) * sizeof(float));
    return TSQ_OK;
}

static void bn_destroy_extra(tsq_layer *l)
{
    tsq__free(l->obj.ctx, ((bn_layer *)l)->mean);
}

static const tsq__layer_ops bn_ops = {
    TSQ_LAYER_BATCHNORM, "batchnorm", sizeof(bn_layer), bn_setup, bn_forward, bn_backward,
    bn_clone_extra, bn_destroy_extra, bn_set_option, bn_get_option, bn_info,
};

tsq_status tsq_layer_batchnorm_create(tsq_context *ctx, int64_t channels, tsq_layer **layer)
{
    static const char *where = "batchnorm_create";
    tsq_layer *l = NULL;
    bn_layer *b;
    int64_t shape[1];
    float *gamma, *rv;
    tsq_status st;
    int64_t c;
    TSQ_FORWARD_IF_ERROR(tsq__layer_create_begin(ctx, where, layer));
    if (channels < 1 || channels > (INT64_C(1) << 24))
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: channels %lld must be in 1..2^24",
                         where, (long long)channels);
    st = tsq__layer_alloc(ctx, &bn_ops, where, &l);
    if (st != TSQ_OK)
        return st;
    b = (bn_layer *)l;
    b->channels = channels;
    b->spatial = 1; /* momentum and eps: the options' defaults (layer.c) */
    shape[0] = channels;
    b->mean = tsq__alloc(ctx, (size_t)(4 * channels) * sizeof(float));
    if (!b->mean) {
        tsq__layer_free(l);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    b->istd = b->mean + channels;
    b->sc = b->mean + 2 * channels;
    b->sh = b->mean + 3 * channels;
    st = tsq__layer_add_param(l, where, "gamma", 0, 1, shape, &gamma);
    if (st == TSQ_OK)
        st = tsq__layer_add_param(l, where, "beta", 0, 1, shape, NULL);
    if (st == TSQ_OK)
        st = tsq__layer_add_state(l, where, "running_mean", TSQ_DTYPE_F32, 1, shape, NULL);
    if (st == TSQ_OK)
        st = tsq__layer_add_state(l, where, "running_var", TSQ_DTYPE_F32, 1, shape,
                                  (void **)&rv);
    if (st != TSQ_OK) {
        tsq__layer_free(l);
        return st;
    }
    for (c = 0; c < channels; c++) {
        gamma[c] = 1.0f;
        rv[c] = 1.0f;
        b->mean[c] = 0.0f;
        b->istd[c] = 1.0f;
        b->sc[c] = 1.0f;
        b->sh[c] = 0.0f;
    }
    tsq__clear(&ctx->obj);
    *layer = l;
    return TSQ_OK;
}
