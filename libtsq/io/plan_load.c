/* tsq_plan_load: a plan straight from the bytes of a .tsq model file
 * (docs/format.md), without building a tsq_net, so that the inference-only
 * library (core, kernels, runtime, io) can run a model alone.
 *
 * io/model_file.c reads and checks the container (header, sections, CRCs,
 * record structure); this file turns each layer record into a stage of the
 * runtime's description (runtime/desc.h) and hands it to the same builder
 * as tsq_plan_create, so both plans of one model compute the same bits.
 * Every value is checked before it is used, as the net loader does: memory
 * allocated is bounded by the file's size, and a corrupt file gets
 * TSQ_ERR_FORMAT with the section and layer. */
#include "io/model_records.h"
#include "kernels/kernels_internal.h"
#include "runtime/desc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    tsq_context *ctx;
    const tsq__model_cursor *cur; /* during a sink call: where the reader is */
    tsq__arena arena;             /* the description's arrays */
    tsq__net_desc *desc;
    /* the sample shape after the layers so far */
    int32_t ndim;
    int64_t c, h, w;
} loader;

typedef tsq__layer_rec layer_rec;

static tsq_status bad(loader *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static tsq_status bad(loader *L, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return tsq__model_fail(L->cur, "%s", what);
}

static void *keep(loader *L, size_t bytes)
{
    return tsq__arena_alloc(&L->arena, bytes);
}

static tsq_status oom(loader *L)
{
    return tsq__fail(&L->ctx->obj, TSQ_ERR_NO_MEMORY, "plan_load: out of memory");
}

/* Checks a section's frame and CRC; `payload` then reads its body. */
static double option(const layer_rec *lr, int32_t key, double dflt)
{
    int32_t i;
    for (i = 0; i < lr->noptions; i++)
        if (lr->option_keys[i] == key)
            return lr->option_values[i];
    return dflt;
}

/* How many integer attributes each layer kind stores (docs/format.md). */
static int32_t config_count(int32_t kind)
{
    switch (kind) {
    case TSQ_LAYER_DENSE: case TSQ_LAYER_MAXPOOL2D: return 2;
    case TSQ_LAYER_CONV2D: return 6;
    case TSQ_LAYER_BATCHNORM: return 1;
    case TSQ_LAYER_LOWBIT_DENSE: return 3;
    case TSQ_LAYER_LOWBIT_CONV2D: return 7;
    case TSQ_LAYER_RELU: case TSQ_LAYER_ACT_QUANT: case TSQ_LAYER_GLOBAL_AVGPOOL:
    case TSQ_LAYER_FLATTEN: return 0;
    default: return -1;
    }
}

/* A raw f32 array of exactly n finite values, copied (the file's bytes need
 * not be aligned). */
static tsq_status floats(loader *L, const layer_rec *lr, const char *name, int64_t n,
                         const float **out)
{
    const tsq__rec_array *t = tsq__rec_find_array(lr, name);
    float *x;
    int64_t bad_at;
    if (!t || t->dtype != TSQ_DTYPE_F32 || t->encoding != TSQ__REC_RAW || t->numel != n ||
        t->nbytes != (uint64_t)n * 4)
        return bad(L, "tensor '%s' is missing or does not hold %lld floats", name, (long long)n);
    x = keep(L, (size_t)n * sizeof *x);
    if (!x)
        return oom(L);
    if ((bad_at = tsq__rec_read_f32(t, x)) >= 0)
        return bad(L, "tensor '%s' holds a non-finite value at %lld", name, (long long)bad_at);
    *out = x;
    return TSQ_OK;
}

/* Packed weight codes (io/model_records.h, tsq__unpack_codes). */
static tsq_status codes(loader *L, const layer_rec *lr, int64_t n, int32_t bits,
                        const int8_t **out)
{
    const tsq__rec_array *t = tsq__rec_find_array(lr, "weight_codes");
    int8_t *w;
    if (!t || t->encoding != TSQ__REC_PACKED || t->numel != n ||
        t->nbytes != tsq__packed_bytes(n, bits))
        return bad(L, "weight codes do not match %lld %d-bit weights", (long long)n, (int)bits);
    w = keep(L, (size_t)n);
    if (!w)
        return oom(L);
    if (!tsq__unpack_codes(t->data, w, n, bits))
        return bad(L, "a weight code is outside its %d-bit alphabet", (int)bits);
    *out = w;
    return TSQ_OK;
}

static void set_in(loader *L, tsq__stage_desc *d)
{
    d->in_c = L->c;
    d->in_h = L->h;
    d->in_w = L->w;
}

static void set_out(loader *L, tsq__stage_desc *d, int32_t ndim, int64_t c, int64_t h, int64_t w)
{
    L->ndim = ndim;
    d->out_c = L->c = c;
    d->out_h = L->h = h;
    d->out_w = L->w = w;
}

static tsq_status describe_quant(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    int64_t n = lr->nchannels ? lr->nchannels : 1, c;
    int32_t *bits = keep(L, (size_t)n * sizeof *bits);
    float *eps = keep(L, (size_t)n * sizeof *eps), *delta = keep(L, (size_t)n * sizeof *delta);
    if (!bits || !eps || !delta)
        return oom(L);
    if (lr->nchannels && lr->nchannels != L->c)
        return bad(L, "quantizer of %lld channels on %lld", (long long)n, (long long)L->c);
    for (c = 0; c < n; c++) {
        tsq__rec_channel(lr, c, &bits[c], &eps[c], &delta[c]);
        if (bits[c] < 1 || bits[c] > 8 || !isfinite(eps[c]) || !(delta[c] > 0.0f) ||
            !isfinite(delta[c]))
            return bad(L, "quantizer channel %lld: bits %d, eps %g, delta %g", (long long)c,
                       (int)bits[c], eps[c], delta[c]);
    }
    d->kind = TSQ__STAGE_QUANT;
    d->nq = n;
    d->bits = bits;
    d->eps = eps;
    d->delta = delta;
    d->codes_out = option(lr, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 0.0) != 0.0;
    set_out(L, d, L->ndim, L->c, L->h, L->w);
    return TSQ_OK;
}

static tsq_status describe_affine(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    const float *g, *b, *m, *v;
    float *s, *t;
    double eps = option(lr, TSQ_LAYER_OPT_BN_EPS, 1e-5);
    int64_t n = lr->attrs[0], c;
    tsq_status st;
    if (n != L->c)
        return bad(L, "batch-norm of %lld channels on %lld", (long long)n, (long long)L->c);
    if ((st = floats(L, lr, "gamma", n, &g)) != TSQ_OK ||
        (st = floats(L, lr, "beta", n, &b)) != TSQ_OK ||
        (st = floats(L, lr, "running_mean", n, &m)) != TSQ_OK ||
        (st = floats(L, lr, "running_var", n, &v)) != TSQ_OK)
        return st;
    if (!(eps > 0.0) || !isfinite(eps))
        return bad(L, "batch-norm eps %g", eps);
    s = keep(L, (size_t)n * sizeof *s);
    t = keep(L, (size_t)n * sizeof *t);
    if (!s || !t)
        return oom(L);
    for (c = 0; c < n; c++) { /* the layer's eval affine, operation for operation */
        double sc;
        if (!(v[c] >= 0.0f))
            return bad(L, "running_var[%lld] is %g, below 0", (long long)c, v[c]);
        sc = (double)g[c] / sqrt((double)v[c] + eps);
        s[c] = (float)sc;
        t[c] = (float)((double)b[c] - sc * (double)m[c]);
    }
    d->kind = TSQ__STAGE_AFFINE;
    d->scale = s;
    d->shift = t;
    set_out(L, d, L->ndim, L->c, L->h, L->w);
    return TSQ_OK;
}

/* Float or low-bit conv / dense: the geometry, then the tensors. */
static tsq_status describe_product(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    int conv = lr->kind == TSQ_LAYER_CONV2D || lr->kind == TSQ_LAYER_LOWBIT_CONV2D;
    int lowbit = lr->kind == TSQ_LAYER_LOWBIT_CONV2D || lr->kind == TSQ_LAYER_LOWBIT_DENSE;
    int64_t in = lr->attrs[0], out = lr->attrs[1], k = in;
    tsq_status st;
    if (out < 1 || in < 1)
        return bad(L, "%lld -> %lld channels", (long long)in, (long long)out);
    if (conv) {
        if (L->ndim != 3 || L->c != in)
            return bad(L, "a convolution of %lld channels on a (%lld,%lld,%lld) sample",
                       (long long)in, (long long)L->c, (long long)L->h, (long long)L->w);
        st = tsq__conv_geom_check(&L->ctx->obj, "plan_load", in, L->h, L->w, lr->attrs[2],
                                  lr->attrs[3], lr->attrs[4], lr->attrs[4], lr->attrs[5],
                                  lr->attrs[5], &d->geom);
        if (st != TSQ_OK)
            return bad(L, "%s", tsq_context_errmsg(L->ctx));
        if (lr->attrs[2] > 1024 || lr->attrs[3] > 1024 || lr->attrs[4] > 1024 ||
            d->geom.k > (INT64_C(1) << 30))
            return bad(L, "convolution kernel or stride too large");
        tsq__conv_geom_init(&d->geom, in, L->h, L->w, out, lr->attrs[2], lr->attrs[3],
                            lr->attrs[4], lr->attrs[5]);
        k = d->geom.k;
    } else if (L->ndim != 1 || L->c != in) {
        return bad(L, "a dense layer of %lld inputs on a sample of %lld x %lld x %lld",
                   (long long)in, (long long)L->c, (long long)L->h, (long long)L->w);
    }
    if (k * out > (INT64_C(1) << 40))
        return bad(L, "weights too large");
    d->conv = conv;
    if (lowbit) {
        int32_t bits = (int32_t)lr->attrs[conv ? 6 : 2];
        const float *alpha;
        float *a;
        int64_t o;
        if (bits < 2 || bits > 8)
            return bad(L, "weight bits %d", (int)bits);
        if ((st = codes(L, lr, k * out, bits, &d->wcodes)) != TSQ_OK ||
            (st = floats(L, lr, "alpha", out, &alpha)) != TSQ_OK ||
            (st = floats(L, lr, "bias", out, &d->bias)) != TSQ_OK)
            return st;
        a = (float *)(uintptr_t)alpha; /* our own copy: clamp as the layer does */
        for (o = 0; o < out; o++)
            a[o] = a[o] >= TSQ__LOWBIT_ALPHA_MIN ? a[o] : TSQ__LOWBIT_ALPHA_MIN;
        d->kind = TSQ__STAGE_LOWBIT;
        d->weight_bits = bits;
        d->alpha = a;
    } else {
        if ((st = floats(L, lr, "weight", k * out, &d->weight)) != TSQ_OK ||
            (st = floats(L, lr, "bias", out, &d->bias)) != TSQ_OK)
            return st;
        d->kind = conv ? TSQ__STAGE_CONV : TSQ__STAGE_DENSE;
    }
    if (conv)
        set_out(L, d, 3, out, d->geom.oh, d->geom.ow);
    else
        set_out(L, d, 1, out, 1, 1);
    return TSQ_OK;
}

/* The kind names of nn.h, for messages (this library has no layers). */
static const char *kind_name(int32_t kind)
{
    static const char *const names[] = {"?",       "dense",      "conv2d",  "batchnorm",
                                        "relu",    "act_quant",  "maxpool2d",
                                        "global_avgpool", "flatten", "lowbit_dense",
                                        "lowbit_conv2d"};
    return kind >= 1 && kind <= 10 ? names[kind] : names[0];
}

static tsq_status describe(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    d->layer = L->cur->record;
    d->name = kind_name(lr->kind);
    set_in(L, d);
    switch (lr->kind) {
    case TSQ_LAYER_ACT_QUANT: return describe_quant(L, lr, d);
    case TSQ_LAYER_BATCHNORM: return describe_affine(L, lr, d);
    case TSQ_LAYER_RELU:
        d->kind = TSQ__STAGE_RELU;
        set_out(L, d, L->ndim, L->c, L->h, L->w);
        return TSQ_OK;
    case TSQ_LAYER_FLATTEN:
        d->kind = TSQ__STAGE_FLATTEN;
        set_out(L, d, 1, L->c * L->h * L->w, 1, 1);
        return TSQ_OK;
    case TSQ_LAYER_MAXPOOL2D: {
        int64_t k = lr->attrs[0], s = lr->attrs[1];
        if (L->ndim != 3 || k < 1 || s < 1 || k > L->h || k > L->w)
            return bad(L, "a %lld x %lld max-pool on a (%lld,%lld,%lld) sample", (long long)k,
                       (long long)k, (long long)L->c, (long long)L->h, (long long)L->w);
        d->kind = TSQ__STAGE_MAXPOOL;
        d->k = k;
        d->stride = s;
        set_out(L, d, 3, L->c, (L->h - k) / s + 1, (L->w - k) / s + 1);
        return TSQ_OK;
    }
    case TSQ_LAYER_GLOBAL_AVGPOOL:
        d->kind = 0; /* the builder refuses it with the layer's name */
        set_out(L, d, 1, L->c, 1, 1);
        return TSQ_OK;
    default: return describe_product(L, lr, d);
    }
}

static tsq_status on_head(void *user, const tsq__model_cursor *cur, const tsq__model_head *h)
{
    loader *L = user;
    tsq__net_desc *d = L->desc;
    int32_t n = h->nrecords ? h->nrecords : 1;
    L->cur = cur;
    if (h->in_ndim == 2)
        return bad(L, "input samples must be (C,H,W) or (F)");
    d->in_ndim = h->in_ndim;
    memcpy(d->in_shape, h->in_shape, sizeof d->in_shape);
    L->ndim = h->in_ndim;
    L->c = h->in_shape[0];
    L->h = h->in_ndim == 3 ? h->in_shape[1] : 1;
    L->w = h->in_ndim == 3 ? h->in_shape[2] : 1;
    d->stages = keep(L, (size_t)n * sizeof *d->stages);
    if (!d->stages)
        return oom(L);
    memset(d->stages, 0, (size_t)n * sizeof *d->stages);
    d->nstages = h->nrecords;
    return TSQ_OK;
}

static tsq_status on_record(void *user, const tsq__model_cursor *cur, const tsq__layer_rec *rec)
{
    loader *L = user;
    L->cur = cur;
    if (config_count(rec->kind) < 0)
        return bad(L, "unknown layer kind %d", (int)rec->kind);
    if (rec->nattrs != config_count(rec->kind))
        return bad(L, "%d config values, expected %d", (int)rec->nattrs,
                   (int)config_count(rec->kind));
    if (rec->kind != TSQ_LAYER_ACT_QUANT && rec->nchannels)
        return bad(L, "a quantizer block on a %s layer", kind_name(rec->kind));
    return describe(L, rec, &L->desc->stages[cur->record]);
}

tsq_status tsq_plan_load(tsq_context *ctx, const void *buf, uint64_t size, tsq_plan **out)
{
    loader L;
    tsq__net_desc d;
    tsq__model_sink sink;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!buf || !out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_load: %s is NULL", !buf ? "buf" : "out");
    *out = NULL;
    memset(&L, 0, sizeof L);
    memset(&d, 0, sizeof d);
    L.ctx = ctx;
    L.arena.ctx = ctx;
    L.desc = &d;
    sink.head = on_head;
    sink.record = on_record;
    sink.user = &L;
    st = tsq__model_read(ctx, "plan_load", buf, size, &sink);
    if (st == TSQ_OK && d.nstages < 1)
        st = tsq__fail(&ctx->obj, TSQ_ERR_STATE, "plan_load: the model has no layers");
    if (st == TSQ_OK)
        st = tsq__plan_from_desc(ctx, &d, out);
    tsq__arena_free(&L.arena);
    return st;
}
