/* Fully connected layer y = W x + b, over the batch as GEMMs:
 *     Y (N x out) = X (N x in) W^T,  dW = dY^T X,  dX = dY W,  db = colsum dY.
 * The GEMM core is shared with the low-bit dense layer (scale != NULL).
 * With one libtsq thread the BLAS threads each GEMM; with T > 1 (the
 * "workers" mode of conv_gemm.c: the BLAS is meant to run one thread per
 * call) libtsq's threads each take a contiguous block of rows: of the batch
 * for Y and dX, of the outputs for dW and db. */
#include "nn_internal.h"

#include "blas.h"

#include <string.h>

typedef struct {
    int64_t in, out, batch, threads;
    const float *x, *w, *scale, *bias, *dy;
    float *y, *dw, *db, *dx;
} dense_job;

static void block(int64_t n, int64_t parts, int64_t t, int64_t *lo, int64_t *hi)
{
    *lo = n * t / parts;
    *hi = n * (t + 1) / parts;
}

static void forward_rows(const dense_job *j, int64_t lo, int64_t hi)
{
    int64_t n, o;
    if (hi <= lo)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(hi - lo), (int)j->out, (int)j->in,
                1.0f, j->x + lo * j->in, (int)j->in, j->w, (int)j->in, 0.0f, j->y + lo * j->out,
                (int)j->out);
    for (n = lo; n < hi; n++) {
        float *row = j->y + n * j->out;
        if (j->scale) {
            for (o = 0; o < j->out; o++)
                row[o] = j->scale[o] * row[o] + (j->bias ? j->bias[o] : 0.0f);
        } else if (j->bias) {
            tsq__vec_add(row, j->bias, j->out);
        }
    }
}

static void forward_task(void *arg, int64_t t)
{
    const dense_job *j = arg;
    int64_t lo, hi;
    block(j->batch, j->threads, t, &lo, &hi);
    forward_rows(j, lo, hi);
}

void tsq__dense_forward(int64_t threads, int64_t in, int64_t out, const float *x,
                        const float *w, const float *scale, const float *bias, float *y,
                        int64_t batch)
{
    dense_job j;
    memset(&j, 0, sizeof j);
    j.in = in;
    j.out = out;
    j.batch = batch;
    j.threads = threads > batch ? batch : threads;
    j.x = x;
    j.w = w;
    j.scale = scale;
    j.bias = bias;
    j.y = y;
    if (j.threads > 1)
        tsq__parallel_for(j.threads, j.threads, forward_task, &j);
    else
        forward_rows(&j, 0, batch);
}

/* dW and db for outputs [lo, hi). */
static void weight_grad_rows(const dense_job *j, int64_t lo, int64_t hi)
{
    int64_t n, o;
    if (hi <= lo)
        return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)j->in,
                (int)j->batch, 1.0f, j->dy + lo, (int)j->out, j->x, (int)j->in, 0.0f,
                j->dw + lo * j->in, (int)j->in);
    if (!j->db)
        return;
    for (o = lo; o < hi; o++)
        j->db[o] = 0.0f;
    for (n = 0; n < j->batch; n++)
        tsq__vec_add(j->db + lo, j->dy + n * j->out + lo, hi - lo);
}

static void input_grad_rows(const dense_job *j, int64_t lo, int64_t hi)
{
    if (hi <= lo || !j->dx)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)j->in,
                (int)j->out, 1.0f, j->dy + lo * j->out, (int)j->out, j->w, (int)j->in, 0.0f,
                j->dx + lo * j->in, (int)j->in);
}

static void backward_task(void *arg, int64_t t)
{
    const dense_job *j = arg;
    int64_t lo, hi;
    block(j->out, j->threads, t, &lo, &hi);
    weight_grad_rows(j, lo, hi);
    block(j->batch, j->threads, t, &lo, &hi);
    input_grad_rows(j, lo, hi);
}

void tsq__dense_backward(int64_t threads, int64_t in, int64_t out, const float *x,
                         const float *w, const float *dy, float *dw, float *db, float *dx,
                         int64_t batch)
{
    dense_job j;
    memset(&j, 0, sizeof j);
    j.in = in;
    j.out = out;
    j.batch = batch;
    j.threads = threads;
    if (j.threads > out && j.threads > batch)
        j.threads = out > batch ? out : batch;
    j.x = x;
    j.w = w;
    j.dy = dy;
    j.dw = dw;
    j.db = db;
    j.dx = dx;
    if (j.threads > 1) {
        tsq__parallel_for(j.threads, j.threads, backward_task, &j);
    } else {
        weight_grad_rows(&j, 0, out);
        input_grad_rows(&j, 0, batch);
    }
}

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
        return tsq__fail((tsq__object *)&l->obj, TSQ_ERR_INVALID,
                         "layer_info: a dense layer has no key %d", (int)key);
    return TSQ_OK;
}

static tsq_status dense_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    dense_layer *d = (dense_layer *)dst;
    (void)src;
    d->qat.wq = d->qat.alpha = NULL;
    d->qat.codes = NULL;
    d->qat.cap = 0;
    return TSQ_OK;
}

static void dense_destroy_extra(tsq_layer *l)
{
    tsq__qat_free(&((dense_layer *)l)->qat, l);
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
    dense_clone_extra, dense_destroy_extra, dense_set_option, dense_get_option, dense_info,
};

tsq__qat *tsq__layer_qat(tsq_layer *l)
{
    if (l->ops == &dense_ops)
        return &((dense_layer *)l)->qat;
    return tsq__conv2d_qat(l);
}

tsq_status tsq__dense_check_args(tsq_context *ctx, const char *where, int64_t in, int64_t out)
{
    const int64_t max = INT64_C(1) << 30;
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
    int64_t wshape[2], bshape[1];
    float *w;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!layer)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    *layer = NULL;
    st = tsq__dense_check_args(ctx, where, in, out);
    if (st != TSQ_OK)
        return st;
    st = tsq__layer_alloc(ctx, &dense_ops, where, &l);
    if (st != TSQ_OK)
        return st;
    ((dense_layer *)l)->in = in;
    ((dense_layer *)l)->out = out;
    wshape[0] = out;
    wshape[1] = in;
    bshape[0] = out;
    st = tsq__layer_add_param(l, where, "weight", 1, 2, wshape, &w);
    if (st == TSQ_OK)
        st = tsq__layer_add_param(l, where, "bias", 0, 1, bshape, NULL);
    if (st != TSQ_OK) {
        tsq__layer_free(l);
        return st;
    }
    tsq__init_he_normal(ctx, w, in * out, in);
    tsq__clear(&ctx->obj);
    *layer = l;
    return TSQ_OK;
}
