/* The sparse activation quantizer of TSQ step 1 as a layer
 * (docs/method.md §2): fake quantization in training, codes for low-bit
 * layers, and, for joint QAT (§5), a learned step delta.
 *
 *   k = tsq__quant_code(x, eps, 1/delta, 2^bits - 1)   (quant_internal.h)
 *   y = k * delta        ("values" output, the default)
 *   y = k                ("codes" output, TSQ_LAYER_OPT_AQ_OUTPUT_CODES)
 *   dx = dy * [0 < x < (2^bits - 1) delta]   (straight-through estimator,
 *        tsq__quant_passes), divided by delta in codes mode since there
 *        y ~ x / delta.
 * Per-channel quantizers index channels by dimension 0 of the sample shape
 * (C of (C,H,W), or the feature of a vector).
 *
 * With TSQ_LAYER_OPT_AQ_LEARN_DELTA the layer owns a parameter "delta"
 * (one per slot) that the optimiser moves; each forward copies it into the
 * slots (eps = ratio * delta, the ratio fixed when learning began), so
 * every reader of the slots sees the values of the last forward. Its
 * gradient is LSQ's: the derivative of y = delta * round(x/delta) (the code
 * above eps) with round's derivative taken as 1 inside the range:
 *   dy/ddelta = k - x/delta   (0 < x < top),   2^bits - 1 (x >= top),   0 (x <= 0),
 * scaled by g = 1/sqrt(elements per sample and slot * (2^bits - 1)). */
#include "nn_internal.h"

#include "quant/activation_histogram.h" /* the encode kernels */
#include "quant/quant_internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    tsq_layer base;
    int64_t nchannels;  /* 0: per tensor */
    int32_t *bits;      /* max(1, nchannels) entries each */
    float *eps, *delta;
    int output_codes;
    int learn;    /* TSQ_LAYER_OPT_AQ_LEARN_DELTA: parameter 0 is "delta" */
    float *ratio; /* eps / delta of each slot while learning */
} aq_layer;

/* Smallest learned delta: keeps 1/delta and the codes finite. */
#define AQ_DELTA_MIN 1e-6f

static int64_t slots(const aq_layer *q)
{
    return q->nchannels > 0 ? q->nchannels : 1;
}

int tsq__layer_is_act_quant(const tsq_layer *l)
{
    return tsq__layer_is(l, TSQ_LAYER_ACT_QUANT);
}

int64_t tsq__act_quant_nchannels(const tsq_layer *l)
{
    return ((const aq_layer *)l)->nchannels;
}

void tsq__act_quant_channel(const tsq_layer *l, int64_t c, int32_t *bits, float *eps,
                            float *delta)
{
    const aq_layer *q = (const aq_layer *)l;
    int64_t i = q->nchannels > 0 ? c : 0;
    *bits = q->bits[i];
    *eps = q->eps[i];
    *delta = q->delta[i];
}

static tsq_status aq_setup(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                           int32_t *out_ndim, int64_t *out_shape)
{
    aq_layer *q = (aq_layer *)l;
    if (q->nchannels > 0 && in_shape[0] != q->nchannels)
        return tsq__fail(&l->obj, TSQ_ERR_SHAPE,
                         "act_quant: a quantizer of %lld channels gets %lld channels",
                         (long long)q->nchannels, (long long)in_shape[0]);
    *out_ndim = in_ndim;
    memcpy(out_shape, in_shape, (size_t)in_ndim * sizeof(int64_t));
    return TSQ_OK;
}

typedef struct {
    aq_layer *q;
    const float *x, *dy;
    float *y, *dx;
    int64_t per_channel; /* elements of one channel in one sample */
    int64_t channels;    /* channels per sample */
    const tsq__eltwise *k; /* the element-wise kernels of the context's CPU */
} aq_job;

/* dx = dy * scale where tsq__quant_passes(x), else 0. The blocks of 8
 * evaluate tsq__quant_passes's condition, 0 < x < (float)maxcode * delta,
 * with the same float operations as two selects instead of its short
 * circuit (a branch the compiler does not vectorise);
 * test_act_quant_layer checks them against tsq__quant_passes bit for bit,
 * at the boundaries too. */
static void pass_span(float *restrict dx, const float *restrict x, const float *restrict dy,
                      int64_t n, float delta, int32_t maxcode, float scale)
{
    const float top = (float)maxcode * delta;
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            float v = x[i + k], g = dy[i + k];
            float r = v > 0.0f ? g : 0.0f;
            dx[i + k] = v < top ? r : 0.0f;
        }
    for (; i < n; i++)
        dx[i] = tsq__quant_passes(x[i], delta, maxcode) ? dy[i] : 0.0f;
    /* (a scale inside the loop above stops GCC from vectorising it) */
    if (scale != 1.0f)
        tsq__vec_affine_inplace(dx, scale, 0.0f, n);
}

/* Planes [lo, hi) (one channel of one sample each): the forward, or the
 * backward when the job has dy. */
static void run_planes(void *arg, int64_t lo, int64_t hi)
{
    aq_job *j = arg;
    const aq_layer *q = j->q;
    int64_t pl, S = j->per_channel;
    for (pl = lo; pl < hi; pl++) {
        int64_t c = q->nchannels > 0 ? pl % j->channels : 0, at = pl * S;
        float delta = q->delta[c];
        int32_t maxcode = (1 << q->bits[c]) - 1;
        if (j->dy)
            pass_span(j->dx + at, j->x + at, j->dy + at, S, delta, maxcode,
                      q->output_codes ? 1.0f / delta : 1.0f);
        else /* y = code * scale in one pass: codes as exact floats times the
              * scale, the bits of (float)code * scale for a positive scale */
            j->k->fakequant_span(j->x + at, j->y + at, S, q->eps[c], 1.0f / delta,
                                 q->output_codes ? 1.0f : delta, maxcode);
    }
}

static void make_job(aq_job *j, tsq_layer *l)
{
    memset(j, 0, sizeof *j);
    j->q = (aq_layer *)l;
    j->channels = l->in_shape[0];
    j->per_channel = l->in_numel / l->in_shape[0];
    /* the CPU features were detected once, at context creation */
    j->k = tsq__eltwise_for(l->obj.ctx->cpu);
}

/* Learned delta: the parameter, kept >= AQ_DELTA_MIN, into the slots. */
static void sync_learned(aq_layer *q)
{
    float *d = tsq__param_data(&q->base, 0);
    int64_t c, n = slots(q);
    for (c = 0; c < n; c++) {
        float v = d[c] > AQ_DELTA_MIN ? d[c] : AQ_DELTA_MIN;
        float top = (float)((1 << q->bits[c]) - 1) * v;
        if (!isfinite(top))
            v = q->delta[c];
        d[c] = v;
        q->delta[c] = v;
        q->eps[c] = q->ratio[c] * v;
    }
}

static tsq_status aq_forward(tsq_layer *l, const float *x, float *y, int64_t batch, int train)
{
    aq_job j;
    (void)train;
    if (((aq_layer *)l)->learn)
        sync_learned((aq_layer *)l);
    make_job(&j, l);
    j.x = x;
    j.y = y;
    tsq__parallel_range(tsq__layer_threads(l), batch * j.channels, j.per_channel, run_planes,
                        &j);
    return TSQ_OK;
}

typedef struct {
    const aq_layer *q;
    const float *x, *dy;
    float *part; /* per plane (n, c): its sum, rounded to float */
    int64_t C, S;
    /* the products' kernel of the context's CPU */
    void (*prod)(const float *x, const float *dy, double *prod, int64_t n, float eps,
                 float inv_delta, float top, int32_t maxcode);
} dg_job;

/* PLANES planes side by side: independent sums (each in the order of its
 * own elements), so that their additions overlap; CHUNK elements of each
 * at a time. The products dy * term (tsq__lsq_term: the LSQ derivative
 * above) are formed first, as doubles, by the CPU's element-wise kernel (a
 * float times a float is exact in double), so that the element loop is
 * the additions alone: eight chains keep both adders busy. */
#define PLANES 8
#define CHUNK 256
/* Planes [p, p + m), m <= PLANES: part[p + k] = sum_i dy_i * term(x_i). */
static void plane_sums(const dg_job *j, int64_t p, int64_t m)
{
    const aq_layer *q = j->q;
    const float *xs[PLANES], *ds[PLANES];
    float eps[PLANES], inv[PLANES], top[PLANES];
    double prod[PLANES][CHUNK], acc[PLANES];
    int32_t maxcode[PLANES];
    int64_t i, k, i0, len;
    for (k = 0; k < m; k++) {
        int64_t sl = q->nchannels > 0 ? (p + k) % j->C : 0;
        xs[k] = j->x + (p + k) * j->S;
        ds[k] = j->dy + (p + k) * j->S;
        eps[k] = q->eps[sl];
        inv[k] = 1.0f / q->delta[sl];
        maxcode[k] = (1 << q->bits[sl]) - 1;
        top[k] = (float)maxcode[k] * q->delta[sl]; /* as tsq__quant_passes */
        acc[k] = 0.0;
    }
    for (i0 = 0; i0 < j->S; i0 += CHUNK) {
        len = j->S - i0 < CHUNK ? j->S - i0 : CHUNK;
        for (k = 0; k < m; k++)
            j->prod(xs[k] + i0, ds[k] + i0, prod[k], len, eps[k], inv[k], top[k], maxcode[k]);
        if (m == PLANES) {
            for (i = 0; i < len; i++)
                for (k = 0; k < PLANES; k++)
                    acc[k] += prod[k][i];
        } else {
            for (k = 0; k < m; k++)
                for (i = 0; i < len; i++)
                    acc[k] += prod[k][i];
        }
    }
    for (k = 0; k < m; k++)
        j->part[p + k] = (float)acc[k];
}

static void delta_grad_planes(void *arg, int64_t lo, int64_t hi)
{
    const dg_job *j = arg;
    int64_t p;
    for (p = lo; p < hi; p += PLANES)
        plane_sums(j, p, hi - p < PLANES ? hi - p : PLANES);
}

/* The LSQ gradient of each learned delta (see the top of the file): each
 * plane's sum on the threads, then the planes added in (n, c) order, so
 * the result does not depend on the thread count. */
static void delta_grad(aq_layer *q, const float *x, const float *dy, int64_t batch)
{
    const tsq_layer *l = &q->base;
    int64_t C = l->in_shape[0], S = l->in_numel / C, p, c, nslots = slots(q);
    float *g = tsq__param_grad(l, 0);
    dg_job j;
    j.q = q;
    j.x = x;
    j.dy = dy;
    j.part = l->ws; /* batch * C floats: aq_backward reserved them */
    j.C = C;
    j.S = S;
    j.prod = tsq__eltwise_for(l->obj.ctx->cpu)->lsq_prod_span;
    tsq__parallel_range(tsq__layer_threads(l), batch * C, S, delta_grad_planes, &j);
    for (c = 0; c < nslots; c++)
        g[c] = 0.0f;
    for (p = 0; p < batch * C; p++)
        g[q->nchannels > 0 ? p % C : 0] += j.part[p];
    for (c = 0; c < nslots; c++) {
        int32_t maxcode = (1 << q->bits[c]) - 1;
        double per = (double)(q->nchannels > 0 ? S : C * S);
        g[c] = (float)(g[c] / sqrt(per * maxcode));
    }
}

static tsq_status aq_backward(tsq_layer *l, const float *x, const float *y, const float *dy,
                              float *dx, int64_t batch)
{
    aq_job j;
    (void)y;
    if (((aq_layer *)l)->learn) {
        tsq_status st = tsq__layer_workspace(l, "act_quant_backward",
                                             (size_t)(batch * l->in_shape[0]));
        if (st != TSQ_OK)
            return st;
        delta_grad((aq_layer *)l, x, dy, batch);
    }
    if (!dx)
        return TSQ_OK;
    make_job(&j, l);
    j.x = x;
    j.dy = dy;
    j.dx = dx;
    tsq__parallel_range(tsq__layer_threads(l), batch * j.channels, j.per_channel,
                        run_planes, &j);
    return TSQ_OK;
}

/* Turns delta learning on (a "delta" parameter appears) or off (the
 * parameter goes, its last values stay in the slots). The owning net, if
 * any, rebuilds its parameter list. */
static tsq_status set_learning(aq_layer *q, int on)
{
    tsq_layer *l = &q->base;
    static const char *where = "layer_set_option";
    int64_t c, n = slots(q), shape[1];
    float *d;
    tsq_status st;
    if (on == q->learn)
        return TSQ_OK;
    if (on) {
        if (q->output_codes)
            return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                             "%s: a quantizer in codes output cannot learn delta", where);
        q->ratio = tsq__alloc(l->obj.ctx, (size_t)n * sizeof(float));
        shape[0] = n;
        if (!q->ratio || tsq__layer_add_param(l, where, "delta", 0, 1, shape, &d) != TSQ_OK) {
            tsq__free(l->obj.ctx, q->ratio);
            q->ratio = NULL;
            return tsq__fail(&l->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        }
        for (c = 0; c < n; c++) {
            d[c] = q->delta[c];
            q->ratio[c] = q->eps[c] / q->delta[c];
        }
    } else {
        sync_learned(q);
        l->nparams--;
        tsq_tensor_destroy(l->params[0].value);
        tsq_tensor_destroy(l->params[0].grad);
        memset(&l->params[0], 0, sizeof l->params[0]);
        tsq__free(l->obj.ctx, q->ratio);
        q->ratio = NULL;
    }
    q->learn = on;
    if (l->owner && (st = tsq__net_structure_changed((tsq_net *)(uintptr_t)l->owner)) != TSQ_OK)
        return tsq__fail(&l->obj, st, "%s: out of memory", where);
    return TSQ_OK;
}

static tsq_status aq_set_option(tsq_layer *l, int32_t key, double value)
{
    aq_layer *q = (aq_layer *)l;
    tsq_status st;
    if (key == TSQ_LAYER_OPT_AQ_LEARN_DELTA) {
        if ((st = set_learning(q, value != 0)) != TSQ_OK)
            return st;
    } else if (key == TSQ_LAYER_OPT_AQ_OUTPUT_CODES) {
        if (q->learn && value != 0)
            return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                             "layer_set_option: a quantizer learning delta cannot output codes");
        q->output_codes = value != 0;
    } else {
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_set_option: key %d does not apply to an act_quant layer", (int)key);
    }
    tsq__clear(&l->obj);
    return TSQ_OK;
}

static tsq_status aq_get_option(const tsq_layer *l, int32_t key, double *value)
{
    if (key == TSQ_LAYER_OPT_AQ_OUTPUT_CODES)
        *value = ((const aq_layer *)l)->output_codes;
    else if (key == TSQ_LAYER_OPT_AQ_LEARN_DELTA)
        *value = ((const aq_layer *)l)->learn;
    else
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_get_option: key %d does not apply to an act_quant layer", (int)key);
    return TSQ_OK;
}

static tsq_status aq_info(const tsq_layer *l, int32_t key, int64_t *value)
{
    const aq_layer *q = (const aq_layer *)l;
    if (key == TSQ_LAYER_INFO_BITS)
        *value = q->bits[0];
    else if (key == TSQ_LAYER_INFO_IN_CHANNELS)
        *value = q->nchannels;
    else
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_info: an act_quant layer has no key %d", (int)key);
    return TSQ_OK;
}

/* One block holds bits, eps and delta for n slots. */
static tsq_status alloc_slots(tsq_context *ctx, int64_t n, int32_t **bits, float **eps,
                              float **delta)
{
    size_t bytes = (size_t)n * (sizeof(int32_t) + 2 * sizeof(float));
    char *p = tsq__alloc(ctx, bytes);
    if (!p)
        return TSQ_ERR_NO_MEMORY;
    *bits = (int32_t *)p;
    *eps = (float *)(p + (size_t)n * sizeof(int32_t));
    *delta = *eps + n;
    return TSQ_OK;
}

static tsq_status aq_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    const aq_layer *s = (const aq_layer *)src;
    aq_layer *d = (aq_layer *)dst;
    int64_t n = slots(s);
    d->bits = NULL;
    if (alloc_slots(dst->obj.ctx, n, &d->bits, &d->eps, &d->delta) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    memcpy(d->bits, s->bits, (size_t)n * sizeof(int32_t));
    memcpy(d->eps, s->eps, (size_t)n * sizeof(float));
    memcpy(d->delta, s->delta, (size_t)n * sizeof(float));
    d->ratio = NULL;
    if (s->learn) {
        d->ratio = tsq__alloc(dst->obj.ctx, (size_t)n * sizeof(float));
        if (!d->ratio)
            return TSQ_ERR_NO_MEMORY;
        memcpy(d->ratio, s->ratio, (size_t)n * sizeof(float));
    }
    return TSQ_OK;
}

static void aq_destroy_extra(tsq_layer *l)
{
    tsq__free(l->obj.ctx, ((aq_layer *)l)->bits);
    tsq__free(l->obj.ctx, ((aq_layer *)l)->ratio);
}

static const tsq__layer_ops aq_ops = {
    TSQ_LAYER_ACT_QUANT, "act_quant", sizeof(aq_layer), aq_setup, aq_forward, aq_backward,
    aq_clone_extra, aq_destroy_extra, aq_set_option, aq_get_option, aq_info,
};

static tsq_status check_params(tsq__object *obj, const char *where, int32_t bits, float eps,
                               float delta)
{
    if (!isfinite(eps) || !isfinite(delta))
        return tsq__fail(obj, TSQ_ERR_NOT_FINITE, "%s: eps %g and delta %g must be finite", where,
                         (double)eps, (double)delta);
    if (bits < 1 || bits > 8 || eps < 0.0f || delta <= 0.0f)
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "%s: bits %d must be in 1..8, eps %g >= 0, delta %g > 0", where,
                         (int)bits, (double)eps, (double)delta);
    /* The rule of tsq_quantizer_set_channel: the codes use 1/delta and the
     * top level (2^bits - 1) delta, and codes-mode backward divides by delta. */
    if (!isfinite(1.0f / delta) || !isfinite((float)((1 << bits) - 1) * delta))
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "%s: delta %g makes 1/delta or the top level %d * delta overflow float",
                         where, (double)delta, (1 << bits) - 1);
    return TSQ_OK;
}

tsq_status tsq_layer_act_quant_create(tsq_context *ctx, int32_t bits, float eps, float delta,
                                      tsq_layer **layer)
{
    static const char *where = "act_quant_create";
    tsq_layer *l = NULL;
    aq_layer *q;
    tsq_status st;
    TSQ_FORWARD_IF_ERROR(tsq__layer_create_begin(ctx, where, layer));
    st = check_params(&ctx->obj, where, bits, eps, delta);
    if (st != TSQ_OK)
        return st;
    st = tsq__layer_alloc(ctx, &aq_ops, where, &l);
    if (st != TSQ_OK)
        return st;
    q = (aq_layer *)l;
    if (alloc_slots(ctx, 1, &q->bits, &q->eps, &q->delta) != TSQ_OK) {
        tsq__layer_free(l);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    q->bits[0] = bits;
    q->eps[0] = eps;
    q->delta[0] = delta;
    tsq__clear(&ctx->obj);
    *layer = l;
    return TSQ_OK;
}

tsq_status tsq_layer_act_quant_set_channel(tsq_layer *layer, int64_t channel, int64_t nchannels,
                                           int32_t bits, float eps, float delta)
{
    static const char *where = "act_quant_set_channel";
    aq_layer *q;
    tsq_status st;
    int64_t i;
    if (!layer)
        return TSQ_ERR_NULL;
    if (!tsq__layer_is_act_quant(layer))
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID, "%s: a %s layer is not a quantizer",
                         where, layer->ops->name);
    q = (aq_layer *)layer;
    st = check_params(&layer->obj, where, bits, eps, delta);
    if (st != TSQ_OK)
        return st;
    if (q->learn)
        return tsq__fail(&layer->obj, TSQ_ERR_STATE,
                         "%s: the quantizer is learning delta (TSQ_LAYER_OPT_AQ_LEARN_DELTA)", where);
    if (channel == -1) {
        /* Back to one set for the whole tensor. */
        if (q->nchannels > 0) {
            int32_t *b;
            float *e, *d;
            if (alloc_slots(layer->obj.ctx, 1, &b, &e, &d) != TSQ_OK)
                return tsq__fail(&layer->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
            tsq__free(layer->obj.ctx, q->bits);
            q->bits = b;
            q->eps = e;
            q->delta = d;
            q->nchannels = 0;
        }
        q->bits[0] = bits;
        q->eps[0] = eps;
        q->delta[0] = delta;
        tsq__clear(&layer->obj);
        return TSQ_OK;
    }
    if (nchannels < 1 || nchannels > (INT64_C(1) << 24) || channel < 0 || channel >= nchannels)
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "%s: channel %lld must be -1 or in 0..nchannels-1 (nchannels %lld, at "
                         "most 2^24)", where, (long long)channel, (long long)nchannels);
    if (q->nchannels > 0 && nchannels != q->nchannels)
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "%s: the quantizer has %lld channels, not %lld", where,
                         (long long)q->nchannels, (long long)nchannels);
    if (layer->is_setup && layer->in_shape[0] != nchannels)
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "%s: the layer's input has %lld channels, not %lld", where,
                         (long long)layer->in_shape[0], (long long)nchannels);
    if (q->nchannels == 0) {
        int32_t *b;
        float *e, *d;
        if (alloc_slots(layer->obj.ctx, nchannels, &b, &e, &d) != TSQ_OK)
            return tsq__fail(&layer->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        for (i = 0; i < nchannels; i++) {
            b[i] = q->bits[0];
            e[i] = q->eps[0];
            d[i] = q->delta[0];
        }
        tsq__free(layer->obj.ctx, q->bits);
        q->bits = b;
        q->eps = e;
        q->delta = d;
        q->nchannels = nchannels;
    }
    q->bits[channel] = bits;
    q->eps[channel] = eps;
    q->delta[channel] = delta;
    tsq__clear(&layer->obj);
    return TSQ_OK;
}

tsq_status tsq_layer_act_quant_get_channel(const tsq_layer *layer, int64_t channel,
                                           int64_t *nchannels, int32_t *bits, float *eps,
                                           float *delta)
{
    const aq_layer *q;
    int64_t i;
    if (!layer)
        return TSQ_ERR_NULL;
    if (!tsq__layer_is_act_quant(layer))
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "act_quant_get_channel: a %s layer is not a quantizer", layer->ops->name);
    q = (const aq_layer *)layer;
    if (channel < -1 || (q->nchannels > 0 && channel >= q->nchannels) ||
        (q->nchannels > 0 && channel == -1))
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "act_quant_get_channel: channel %lld is out of range (%lld channels)",
                         (long long)channel, (long long)q->nchannels);
    i = q->nchannels > 0 ? channel : 0;
    if (nchannels)
        *nchannels = q->nchannels;
    if (bits)
        *bits = q->bits[i];
    if (eps)
        *eps = q->eps[i];
    if (delta)
        *delta = q->delta[i];
    return TSQ_OK;
}

tsq_status tsq_layer_act_quant_create_from(tsq_context *ctx, const tsq_quantizer *q,
                                           tsq_layer **layer)
{
    static const char *where = "act_quant_create_from";
    double bits = 0, channels = 0, fitted = 0;
    float eps = 0, delta = 0;
    tsq_layer *l = NULL;
    tsq_status st;
    int64_t c;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!layer || !q)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: %s is NULL", where, q ? "out" : "q");
    *layer = NULL;
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_FITTED, &fitted);
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_BITS, &bits);
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_CHANNELS, &channels);
    if (fitted != 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_STATE, "%s: the quantizer is not fitted", where);
    st = tsq_quantizer_get_channel(q, 0, &eps, &delta);
    if (st == TSQ_OK)
        st = tsq_layer_act_quant_create(ctx, (int32_t)bits, eps, delta, &l);
    for (c = 0; st == TSQ_OK && c < (int64_t)channels; c++) {
        st = tsq_quantizer_get_channel(q, c, &eps, &delta);
        if (st == TSQ_OK)
            st = tsq_layer_act_quant_set_channel(l, c, (int64_t)channels, (int32_t)bits, eps,
                                                 delta);
        if (st != TSQ_OK)
            tsq__fail(&ctx->obj, st, "%s: %s", where, tsq_layer_errmsg(l));
    }
    if (st != TSQ_OK) {
        tsq_layer_destroy(l);
        return st;
    }
    tsq__clear(&ctx->obj);
    *layer = l;
    return TSQ_OK;
}
