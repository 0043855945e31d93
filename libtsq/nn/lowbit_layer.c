/* Low-bit dense and conv layers: what TSQ step 2 produces (docs/method.md
 * §3 and §6).
 *
 * Per output channel c: integer codes w_c in -m..m (m = 2^(bits-1) - 1),
 * scale alpha_c > 0, offset b_c:
 *     acc_c = x . w_c          (exact in float for integer codes x)
 *     y_c   = alpha_c acc_c + b_c
 * Fine-tuning keeps full-precision shadow weights S; before each forward
 *     w_c = clamp(rint(S_c / alpha_c), -m, m)
 * and backward uses the straight-through estimator on S:
 *     dL/dS_c = x^T dy_c  where |S_c / alpha_c| <= m + 1/2, else 0
 *     dL/dalpha_c = sum dy_c acc_c = w_c . (x^T dy_c)
 *     dL/db_c = sum dy_c,   dL/dx = (alpha (.) w)^T dy.
 * The GEMM cores are dense.c's and conv2d.c's. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    tsq_layer base;
    int conv;
    int64_t in, out;                           /* dense; for conv in = cin*kh*kw */
    tsq__conv_geom g;                          /* conv, as conv2d.c's */
    int32_t weight_bits, m;
    float *wq;   /* codes as floats (out x in), refreshed each forward */
    float *weff; /* alpha (.) codes, for the input gradient */
} lowbit_layer;

enum { P_SHADOW = 0, P_ALPHA = 1, P_BIAS = 2 };
enum { S_CODES = 0 };

/* Alpha is kept positive: an optimiser step could drive it to or below 0. */

int tsq__layer_is_lowbit(const tsq_layer *l)
{
    return tsq__layer_is(l, TSQ_LAYER_LOWBIT_DENSE) || tsq__layer_is(l, TSQ_LAYER_LOWBIT_CONV2D);
}

static tsq_status lb_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                           int32_t *out_ndim, int64_t *out_shape)
{
    lowbit_layer *q = (lowbit_layer *)l;
    if (!q->conv)
        return tsq__dense_setup(l, q->in, q->out, in_ndim, in_shape, out_ndim, out_shape);
    return tsq__conv_setup(l, &q->g, in_ndim, in_shape, out_ndim, out_shape);
}

/* Codes from the shadow weights (and the float copy the GEMM uses). */
static void requantize(lowbit_layer *q)
{
    const float *S = tsq__param_data(&q->base, P_SHADOW);
    float *alpha = tsq__param_data(&q->base, P_ALPHA);
    int8_t *codes = tsq__state_data(&q->base, S_CODES);
    int64_t c, j;
    for (c = 0; c < q->out; c++) {
        float a;
        if (!(alpha[c] >= TSQ__LOWBIT_ALPHA_MIN))
            alpha[c] = TSQ__LOWBIT_ALPHA_MIN;
        a = alpha[c];
        for (j = 0; j < q->in; j++) {
            int8_t code = tsq__lowbit_code(S[c * q->in + j], a, q->m);
            codes[c * q->in + j] = code;
            q->wq[c * q->in + j] = (float)code;
        }
    }
}

static tsq_status lb_forward(tsq_layer *l, const float *x, float *y, int64_t batch, int train)
{
    lowbit_layer *q = (lowbit_layer *)l;
    const float *alpha = tsq__param_data(l, P_ALPHA), *b = tsq__param_data(l, P_BIAS);
    (void)train;
    requantize(q);
    if (!q->conv) {
        tsq__dense_forward(tsq__layer_threads(l), q->in, q->out, x, q->wq, alpha, b, y, batch);
        return TSQ_OK;
    }
    if (tsq__layer_workspace(l, "lowbit_conv2d_forward",
                             tsq__conv_ws_floats(&q->g, tsq__layer_threads(l), 1)) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    tsq__conv_forward(&q->g, tsq__layer_threads(l), l->obj.ctx->cpu, x, q->wq, alpha, b, y,
                      batch, l->ws);
    return TSQ_OK;
}

static tsq_status lb_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                              float *dx, int64_t batch)
{
    lowbit_layer *q = (lowbit_layer *)l;
    const float *alpha = tsq__param_data(l, P_ALPHA), *S = tsq__param_data(l, P_SHADOW);
    float *dS = tsq__param_grad(l, P_SHADOW), *dalpha = tsq__param_grad(l, P_ALPHA);
    float *db = tsq__param_grad(l, P_BIAS);
    float lim = (float)q->m + 0.5f;
    int64_t c, j;
    (void)y;
    for (c = 0; c < q->out; c++)
        for (j = 0; j < q->in; j++)
            q->weff[c * q->in + j] = alpha[c] * q->wq[c * q->in + j];
    /* dS receives x^T dy here and is masked below. */
    if (!q->conv) {
        tsq__dense_backward(tsq__layer_threads(l), q->in, q->out, x, q->weff, dy, dS, db, dx,
                            batch);
    } else {
        if (tsq__layer_workspace(l, "lowbit_conv2d_backward",
                                 tsq__conv_ws_floats(&q->g, tsq__layer_threads(l), 1)) != TSQ_OK)
            return TSQ_ERR_NO_MEMORY;
        tsq__conv_backward(&q->g, tsq__layer_threads(l), l->obj.ctx->cpu, x, q->weff, dy, dS,
                           db, dx, batch, l->ws);
    }
    for (c = 0; c < q->out; c++) {
        double s = 0.0;
        for (j = 0; j < q->in; j++) {
            int64_t k = c * q->in + j;
            s += (double)q->wq[k] * (double)dS[k];
            if (!(fabsf(S[k] / alpha[c]) <= lim))
                dS[k] = 0.0f;
        }
        dalpha[c] = (float)s;
    }
    return TSQ_OK;
}

void tsq__lowbit_fold_affine(tsq_layer *l, const float *s, const float *t)
{
    lowbit_layer *q = (lowbit_layer *)l;
    float *S = tsq__param_data(l, P_SHADOW), *alpha = tsq__param_data(l, P_ALPHA);
    float *b = tsq__param_data(l, P_BIAS);
    int8_t *codes = tsq__state_data(l, S_CODES);
    int64_t c, j;
    for (c = 0; c < q->out; c++) {
        /* s alpha w = |s| alpha (sign(s) w): flip the codes for s < 0. */
        for (j = 0; j < q->in; j++) {
            int64_t k = c * q->in + j;
            if (s[c] == 0.0f) {
                S[k] = 0.0f;
                codes[k] = 0;
            } else {
                S[k] *= s[c];
                if (s[c] < 0.0f)
                    codes[k] = (int8_t)-codes[k];
            }
        }
        if (s[c] != 0.0f)
            alpha[c] *= fabsf(s[c]);
        b[c] = s[c] * b[c] + t[c];
    }
}

static tsq_status lb_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    const lowbit_layer *q = (const lowbit_layer *)l;
    if (key == TSQ_LAYER_INFO_WEIGHT_BITS) {
        *value = q->weight_bits;
        return TSQ_OK;
    }
    if (q->conv && tsq__conv_info(&q->g, key, value) == TSQ_OK)
        return TSQ_OK;
    if (!q->conv && (key == TSQ_LAYER_INFO_IN_CHANNELS || key == TSQ_LAYER_INFO_OUT_CHANNELS)) {
        *value = key == TSQ_LAYER_INFO_IN_CHANNELS ? q->in : q->out;
        return TSQ_OK;
    }
    return tsq__fail(&l->obj, TSQ_ERR_INVALID, "layer_info: a %s layer has no key %d",
                     l->ops->name, (int)key);
}

static tsq_status lb_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    const lowbit_layer *s = (const lowbit_layer *)src;
    lowbit_layer *d = (lowbit_layer *)dst;
    size_t n = (size_t)(s->in * s->out);
    d->wq = tsq__alloc(dst->obj.ctx, 2 * n * sizeof(float));
    d->weff = NULL;
    if (!d->wq)
        return TSQ_ERR_NO_MEMORY;
    d->weff = d->wq + n;
    memcpy(d->wq, s->wq, 2 * n * sizeof(float));
    return TSQ_OK;
}

static void lb_destroy_extra(tsq_layer *l)
{
    tsq__free(l->obj.ctx, ((lowbit_layer *)l)->wq);
}

/* Whether the optimisers move alpha (TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA).
 * dL/dalpha_c sums the channel's whole accumulator, so one SGD step at the
 * net's learning rate can move alpha_c by a large fraction of itself, and
 * every move re-rounds all of the channel's codes w = rint(S / alpha):
 * docs/nn.md, "Fine-tuning low-bit layers". */
static tsq_status lb_set_option(tsq_layer *l, int32_t key, double value)
{
    if (key != TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA)
        return tsq__fail(&l->obj, TSQ_ERR_INVALID, "layer_set_option: key %d does not apply to a %s layer",
                         (int)key, l->ops->name);
    l->params[P_ALPHA].frozen = value == 0;
    tsq__clear(&l->obj);
    return TSQ_OK;
}

static tsq_status lb_get_option(const tsq_layer *l, int32_t key, double *value)
{
    if (key != TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA)
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_get_option: key %d does not apply to a %s layer", (int)key,
                         l->ops->name);
    *value = l->params[P_ALPHA].frozen ? 0 : 1;
    return TSQ_OK;
}

static const tsq__layer_ops lowbit_dense_ops = {
    TSQ_LAYER_LOWBIT_DENSE, "lowbit_dense", sizeof(lowbit_layer), lb_setup, lb_forward,
    lb_backward, lb_clone_extra, lb_destroy_extra, lb_set_option, lb_get_option, lb_info,
};

static const tsq__layer_ops lowbit_conv_ops = {
    TSQ_LAYER_LOWBIT_CONV2D, "lowbit_conv2d", sizeof(lowbit_layer), lb_setup, lb_forward,
    lb_backward, lb_clone_extra, lb_destroy_extra, lb_set_option, lb_get_option, lb_info,
};

static tsq_status make(tsq_context *ctx, const char *where, const tsq__layer_ops *ops,
                       int32_t ndim, const int64_t *wshape, int64_t in, int64_t out,
                       int32_t weight_bits, tsq_layer **layer)
{
    tsq_layer *l = NULL;
    lowbit_layer *q;
    int64_t vshape[1];
    float *alpha;
    tsq_status st;
    int64_t c;
    if (weight_bits < 2 || weight_bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: weight_bits %d must be in 2..8", where,
                         (int)weight_bits);
    st = tsq__layer_alloc(ctx, ops, where, &l);
    if (st != TSQ_OK)
        return st;
    q = (lowbit_layer *)l;
    q->in = in;
    q->out = out;
    q->weight_bits = weight_bits;
    q->m = (1 << (weight_bits - 1)) - 1;
    q->wq = tsq__alloc(ctx, (size_t)(2 * in * out) * sizeof(float));
    if (!q->wq) {
        tsq__layer_free(l);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    q->weff = q->wq + in * out;
    memset(q->wq, 0, (size_t)(2 * in * out) * sizeof(float));
    vshape[0] = out;
    st = tsq__layer_add_param(l, where, "weight", 1, ndim, wshape, NULL);
    if (st == TSQ_OK)
        st = tsq__layer_add_param(l, where, "alpha", 0, 1, vshape, &alpha);
    if (st == TSQ_OK)
        st = tsq__layer_add_param(l, where, "bias", 0, 1, vshape, NULL);
    if (st == TSQ_OK)
        st = tsq__layer_add_state(l, where, "weight_codes", TSQ_DTYPE_I8, ndim, wshape, NULL);
    if (st != TSQ_OK) {
        tsq__layer_free(l);
        return st;
    }
    for (c = 0; c < out; c++)
        alpha[c] = 1.0f;
    /* alpha's "frozen" flag was set from TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA's
     * default by tsq__layer_alloc */
    tsq__clear(&ctx->obj);
    *layer = l;
    return TSQ_OK;
}

tsq_status tsq_layer_lowbit_dense_create(tsq_context *ctx, int64_t in, int64_t out,
                                         int32_t weight_bits, tsq_layer **layer)
{
    static const char *where = "lowbit_dense_create";
    int64_t wshape[2];
    tsq_status st;
    st = tsq__dense_check_args(ctx, where, in, out, layer);
    if (st != TSQ_OK)
        return st;
    wshape[0] = out;
    wshape[1] = in;
    return make(ctx, where, &lowbit_dense_ops, 2, wshape, in, out, weight_bits, layer);
}

tsq_status tsq_layer_lowbit_conv2d_create(tsq_context *ctx, int64_t cin, int64_t cout,
                                          int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                                          int32_t weight_bits, tsq_layer **layer)
{
    static const char *where = "lowbit_conv2d_create";
    int64_t wshape[4];
    tsq_status st;
    lowbit_layer *q;
    st = tsq__conv_check_args(ctx, where, cin, cout, kh, kw, stride, pad, layer);
    if (st != TSQ_OK)
        return st;
    wshape[0] = cout;
    wshape[1] = cin;
    wshape[2] = kh;
    wshape[3] = kw;
    st = make(ctx, where, &lowbit_conv_ops, 4, wshape, cin * kh * kw, cout, weight_bits, layer);
    if (st != TSQ_OK)
        return st;
    q = (lowbit_layer *)*layer;
    q->conv = 1;
    tsq__conv_geom_set(&q->g, cin, cout, kh, kw, stride, stride, pad, pad);
    return TSQ_OK;
}

/* The codes come in exactly the layer's weight shape, outputs first:
 * (out, in) or (cout, cin, kh, kw). A flat or transposed tensor of the right
 * size is refused, since reading it as (out, in) would silently scramble the
 * weights. */
static tsq_status codes_shape_is_weight_shape(lowbit_layer *q, const char *where,
                                              const tsq_tensor *codes)
{
    const tsq_tensor *w = q->base.params[P_SHADOW].value;
    char want[64], got[64];
    int same = codes->ndim == w->ndim;
    int32_t i;
    for (i = 0; same && i < w->ndim; i++)
        same = codes->shape[i] == w->shape[i];
    if (same)
        return TSQ_OK;
    return tsq__fail(&q->base.obj, TSQ_ERR_SHAPE,
                     "%s: codes must have the shape %s %s, got %s", where,
                     tsq__shape_str(want, sizeof want, w->ndim, w->shape),
                     q->conv ? "(cout, cin, kh, kw)" : "(out, in)",
                     tsq__shape_str(got, sizeof got, codes->ndim, codes->shape));
}

tsq_status tsq__lowbit_shape_codes(const tsq_layer *l, tsq_tensor *codes)
{
    const tsq_tensor *w = l->params[P_SHADOW].value;
    return tsq_tensor_reshape(codes, w->ndim, w->shape);
}

tsq_status tsq_layer_lowbit_set(tsq_layer *layer, const tsq_tensor *codes,
                                const tsq_tensor *alpha, const tsq_tensor *bias)
{
    static const char *where = "lowbit_set";
    lowbit_layer *q;
    tsq_status st;
    const int8_t *cv;
    const float *av;
    float *S, *A, *B;
    int8_t *C;
    int64_t c, j;
    if (!layer)
        return TSQ_ERR_NULL;
    if (!tsq__layer_is_lowbit(layer))
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID, "%s: a %s layer is not low-bit", where,
                         layer->ops->name);
    q = (lowbit_layer *)layer;
    st = tsq__expect_dtype(&layer->obj, where, "codes", codes, TSQ_DTYPE_I8);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&layer->obj, where, "alpha", alpha, TSQ_DTYPE_F32);
    if (st == TSQ_OK && bias)
        st = tsq__expect_dtype(&layer->obj, where, "bias", bias, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    st = codes_shape_is_weight_shape(q, where, codes);
    if (st != TSQ_OK)
        return st;
    if (alpha->numel != q->out || (bias && bias->numel != q->out))
        return tsq__fail(&layer->obj, TSQ_ERR_SHAPE,
                         "%s: need %lld alphas and biases; got %lld, %lld", where,
                         (long long)q->out, (long long)alpha->numel,
                         (long long)(bias ? bias->numel : q->out));
    cv = codes->data;
    av = alpha->data;
    if (!tsq__all_finite(av, q->out) || (bias && !tsq__all_finite(bias->data, q->out)))
        return tsq__fail(&layer->obj, TSQ_ERR_NOT_FINITE, "%s: alpha or bias holds NaN or Inf",
                         where);
    for (c = 0; c < q->out; c++)
        if (!(av[c] > 0.0f))
            return tsq__fail(&layer->obj, TSQ_ERR_INVALID, "%s: alpha[%lld] = %g must be > 0",
                             where, (long long)c, (double)av[c]);
    for (j = 0; j < q->in * q->out; j++)
        if (cv[j] < -q->m || cv[j] > q->m)
            return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                             "%s: code %d at %lld is outside -%d..%d (%d-bit weights)", where,
                             (int)cv[j], (long long)j, (int)q->m, (int)q->m, (int)q->weight_bits);
    S = tsq__param_data(layer, P_SHADOW);
    A = tsq__param_data(layer, P_ALPHA);
    B = tsq__param_data(layer, P_BIAS);
    C = tsq__state_data(layer, S_CODES);
    for (c = 0; c < q->out; c++) {
        A[c] = av[c];
        B[c] = bias ? ((const float *)bias->data)[c] : 0.0f;
        for (j = 0; j < q->in; j++) {
            int64_t k = c * q->in + j;
            C[k] = cv[k];
            S[k] = av[c] * (float)cv[k];
        }
    }
    tsq__clear(&layer->obj);
    return TSQ_OK;
}
