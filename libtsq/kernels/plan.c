/* The inference plan (issue 7; docs/kernels.md, "The inference plan").
 *
 * tsq_plan_create walks a converted net once and turns it into a list of
 * stages over one activation buffer, which is either
 *   - float, NCHW per sample (as the net itself computes), or
 *   - uint8 codes, NHWC per sample (rows of the kernels' M x N output).
 * Hidden low-bit layers read codes and, with the quantizer after them,
 * become tsq_lowbit_gemm_threshold: the per-channel affine and quantizer are
 * integer thresholds (TSQ.md, "Deployment consequence"). Everything else
 * runs in float with the same operations as the layers' eval forward, so
 * the plan's output is the net's float simulation.
 *
 * Layout rules: a conv's weights are packed in the (ky, kx, c) order of
 * tsq_im2col_codes on NHWC codes; a dense layer after a flatten of NHWC
 * codes gets its weight rows permuted from the net's (c, h, w) order to
 * (h, w, c), so no transposition is needed at run time. */
#include "kernels_internal.h"
#include "nn/nn_internal.h"
#include "quant/activation_histogram.h" /* the encode kernels */
#include "quant/quant_internal.h"
#include "tsq/plan.h"

#include <math.h>
#include <string.h>

enum {
    OP_CONV = 1,   /* float conv2d (NCHW) */
    OP_DENSE,      /* float dense */
    OP_AFFINE,     /* batch-norm in eval mode: per channel s x + t */
    OP_RELU,       /* float max(x, 0) */
    OP_FPOOL,      /* float max-pool (NCHW) */
    OP_ENCODE,     /* float NCHW -> codes NHWC (the quantizer's code) */
    OP_DECODE,     /* codes NHWC -> float NCHW, times a per-channel scale */
    OP_CPOOL,      /* max-pool on NHWC codes */
    OP_LOWBIT      /* low-bit dense / conv on codes */
};

typedef struct {
    int32_t op;
    int64_t c, h, w;    /* input sample dims (vectors: c = F, h = w = 1) */
    int64_t oc, oh, ow; /* output sample dims */
    /* float conv / dense */
    tsq__conv_geom g;
    float *weight, *bias; /* dense: out x in */
    /* per channel: affine (s, t), encode (eps, inv_delta), decode (scale) */
    float *s, *t;
    int32_t *maxcode;
    /* pooling */
    int64_t k, stride;
    /* low-bit */
    int conv;
    int64_t kh, kw, pad; /* and stride above */
    int32_t code_bits;   /* of the input codes */
    tsq_packed_weights *pw;
    tsq_thresholds *th;   /* NULL: float output alpha * acc + b */
    float *alpha, *beta;  /* for the float output */
} stage;

struct tsq_plan {
    tsq__object obj; /* ctx for freeing; the message is unused (shared) */
    stage *stages;
    int32_t nstages;
    int64_t in_numel, out_numel;
    int64_t lowbit, fused, packed_bytes, packed_fp32, float_bytes;
};

#define ALIGN 64

/* ---- building ---- */

typedef struct {
    tsq_context *ctx;
    tsq_plan *plan;
    int32_t cap;
    /* the activation buffer after the stages so far */
    int codes;        /* 1: u8 NHWC codes; 0: float NCHW */
    int64_t c, h, w;  /* physical dims */
    int flat;         /* codes flattened from (c, h, w) */
    int32_t bits;     /* bits of the codes */
} builder;

static stage *add_stage(builder *b, int32_t op)
{
    stage *s;
    if (b->plan->nstages == b->cap) {
        int32_t cap = b->cap ? 2 * b->cap : 16;
        stage *n = tsq__calloc(b->ctx, (size_t)cap, sizeof *n);
        if (!n)
            return NULL;
        if (b->plan->stages)
            memcpy(n, b->plan->stages, (size_t)b->plan->nstages * sizeof *n);
        tsq__free(b->ctx, b->plan->stages);
        b->plan->stages = n;
        b->cap = cap;
    }
    s = &b->plan->stages[b->plan->nstages++];
    memset(s, 0, sizeof *s);
    s->op = op;
    s->c = s->oc = b->c;
    s->h = s->oh = b->h;
    s->w = s->ow = b->w;
    return s;
}

static float *copy_floats(builder *b, const float *src, int64_t n)
{
    float *d = tsq__alloc(b->ctx, (size_t)n * sizeof(float));
    if (d && src)
        memcpy(d, src, (size_t)n * sizeof(float));
    return d;
}

static tsq_status oom(builder *b)
{
    return tsq__fail(&b->ctx->obj, TSQ_ERR_NO_MEMORY, "plan_create: out of memory");
}

static void set_dims(builder *b, stage *s, int64_t c, int64_t h, int64_t w)
{
    s->oc = b->c = c;
    s->oh = b->h = h;
    s->ow = b->w = w;
}

static int64_t info(const tsq_layer *l, int32_t key)
{
    int64_t v = 0;
    (void)tsq_layer_info(l, key, &v);
    return v;
}

/* Codes -> float NCHW with per-channel scale (1 for codes mode). */
static tsq_status add_decode(builder *b, const tsq_layer *quant)
{
    stage *s = add_stage(b, OP_DECODE);
    int64_t c;
    if (!s)
        return oom(b);
    s->s = tsq__alloc(b->ctx, (size_t)b->c * sizeof(float));
    if (!s->s)
        return oom(b);
    for (c = 0; c < b->c; c++) {
        int32_t bits;
        float eps, delta;
        if (quant)
            tsq__act_quant_channel(quant, tsq__act_quant_nchannels(quant) > 0 ? c : 0, &bits,
                                   &eps, &delta);
        /* values mode outputs (float)k * delta (activation_quant.c) */
        s->s[c] = quant ? delta : 1.0f;
    }
    b->codes = 0;
    b->flat = 0;
    return TSQ_OK;
}

static int quant_outputs_codes(const tsq_layer *l)
{
    double v = 0.0;
    (void)tsq_layer_get_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, &v);
    return v != 0.0;
}

/* The bits of the quantizer's codes: the largest of its channels (*mixed
 * set when they differ). */
static int32_t quant_bits(const tsq_layer *l, int64_t channels, int *mixed)
{
    int64_t c, n = tsq__act_quant_nchannels(l) > 0 ? channels : 1;
    int32_t hi = 0, lo = 9;
    for (c = 0; c < n; c++) {
        int32_t bits;
        float eps, delta;
        tsq__act_quant_channel(l, c, &bits, &eps, &delta);
        hi = bits > hi ? bits : hi;
        lo = bits < lo ? bits : lo;
    }
    *mixed = hi != lo;
    return hi;
}

static tsq_status build_quant(builder *b, const tsq_layer *l)
{
    stage *s;
    int64_t c;
    int mixed;
    if (b->codes) /* a quantizer on codes: back to float first */
        if (add_decode(b, NULL) != TSQ_OK)
            return TSQ_ERR_NO_MEMORY;
    s = add_stage(b, OP_ENCODE);
    if (!s)
        return oom(b);
    s->s = tsq__alloc(b->ctx, (size_t)b->c * sizeof(float));
    s->t = tsq__alloc(b->ctx, (size_t)b->c * sizeof(float));
    s->maxcode = tsq__alloc(b->ctx, (size_t)b->c * sizeof(int32_t));
    if (!s->s || !s->t || !s->maxcode)
        return oom(b);
    for (c = 0; c < b->c; c++) {
        int32_t bits;
        float eps, delta;
        tsq__act_quant_channel(l, tsq__act_quant_nchannels(l) > 0 ? c : 0, &bits, &eps, &delta);
        s->s[c] = eps;
        s->t[c] = 1.0f / delta; /* as the layer computes it */
        s->maxcode[c] = tsq__max_code(bits);
    }
    b->codes = 1;
    b->bits = quant_bits(l, b->c, &mixed);
    if (!quant_outputs_codes(l))
        return add_decode(b, l);
    return TSQ_OK;
}

static tsq_status pack_lowbit(builder *b, stage *s, tsq_layer *l, int64_t in, int64_t out,
                              const float *alpha)
{
    tsq_tensor *wt = NULL;
    int8_t *w;
    const float *S = tsq__param_data(l, 0);
    int32_t bits = (int32_t)info(l, TSQ_LAYER_INFO_WEIGHT_BITS), m = tsq__max_weight(bits);
    int64_t shape[2] = {in, out}, o, i;
    tsq_status st = tsq_tensor_create(b->ctx, TSQ_DTYPE_I8, 2, shape, &wt);
    if (st != TSQ_OK)
        return st;
    w = wt->data;
    for (o = 0; o < out; o++)
        for (i = 0; i < in; i++) {
            int64_t row; /* row of the packed matrix for the net's column i */
            if (s->conv) {
                int64_t cin = s->c, kk = s->kh * s->kw;
                int64_t ci = i / kk, ky = (i % kk) / s->kw, kx = i % s->kw;
                row = (ky * s->kw + kx) * cin + ci;
            } else if (b->flat) {
                int64_t hw = b->h * b->w, ci = i / hw, p = i % hw;
                row = p * b->c + ci;
            } else {
                row = i;
            }
            w[row * out + o] = tsq__lowbit_code(S[o * in + i], alpha[o], m);
        }
    st = tsq_packed_weights_create(b->ctx, wt, bits, &s->pw);
    tsq_tensor_destroy(wt);
    if (st != TSQ_OK)
        return st;
    b->plan->lowbit++;
    b->plan->packed_bytes += (int64_t)s->pw->bytes;
    b->plan->packed_fp32 += 4 * in * out;
    if ((double)in * tsq__max_code(b->bits) * m > (double)INT32_MAX)
        return tsq__fail(&b->ctx->obj, TSQ_ERR_OVERFLOW,
                         "plan_create: a %lld-long dot product of %d-bit codes and %d-bit "
                         "weights could overflow int32",
                         (long long)in, (int)b->bits, (int)bits);
    return TSQ_OK;
}

/* A low-bit layer; `next` is the layer after it (or NULL). Returns 1 in
 * *consumed when the quantizer `next` was fused. */
static tsq_status build_lowbit(builder *b, int32_t index, tsq_layer *l, tsq_layer *next,
                               int *consumed)
{
    stage *s;
    int64_t in, out, c;
    float *alpha;
    const float *bias = tsq__param_data(l, 2);
    tsq_status st;
    int mixed = 0;
    *consumed = 0;
    if (!b->codes)
        return tsq__fail(&b->ctx->obj, TSQ_ERR_UNSUPPORTED,
                         "plan_create: low-bit layer %d is not fed by a codes-mode quantizer",
                         (int)index);
    s = add_stage(b, OP_LOWBIT);
    if (!s)
        return oom(b);
    s->conv = tsq__layer_is(l, TSQ_LAYER_LOWBIT_CONV2D);
    s->code_bits = b->bits;
    out = info(l, TSQ_LAYER_INFO_OUT_CHANNELS);
    in = l->in_numel;
    if (s->conv) {
        s->kh = info(l, TSQ_LAYER_INFO_KERNEL_H);
        s->kw = info(l, TSQ_LAYER_INFO_KERNEL_W);
        s->stride = info(l, TSQ_LAYER_INFO_STRIDE);
        s->pad = info(l, TSQ_LAYER_INFO_PAD);
        in = s->c * s->kh * s->kw;
    }
    alpha = copy_floats(b, tsq__param_data(l, 1), out);
    if (!alpha)
        return oom(b);
    s->alpha = alpha;
    for (c = 0; c < out; c++)
        if (!(alpha[c] >= TSQ__LOWBIT_ALPHA_MIN))
            alpha[c] = TSQ__LOWBIT_ALPHA_MIN;
    st = pack_lowbit(b, s, l, in, out, alpha);
    if (st != TSQ_OK)
        return st;
    if (s->conv)
        set_dims(b, s, out, l->out_shape[1], l->out_shape[2]);
    else
        set_dims(b, s, out, 1, 1);
    b->flat = 0;
    if (next && tsq__layer_is_act_quant(next))
        b->bits = quant_bits(next, out, &mixed);
    if (next && tsq__layer_is_act_quant(next) && !mixed) {
        float *eps = tsq__alloc(b->ctx, (size_t)out * sizeof(float));
        float *delta = tsq__alloc(b->ctx, (size_t)out * sizeof(float));
        int64_t q = tsq__act_quant_nchannels(next) > 0 ? out : 1;
        if (!eps || !delta) {
            tsq__free(b->ctx, eps);
            tsq__free(b->ctx, delta);
            return oom(b);
        }
        for (c = 0; c < q; c++) {
            int32_t bits;
            tsq__act_quant_channel(next, c, &bits, &eps[c], &delta[c]);
        }
        st = tsq_thresholds_create(b->ctx, out, alpha, bias, b->bits, eps, delta, q, &s->th);
        tsq__free(b->ctx, eps);
        tsq__free(b->ctx, delta);
        if (st != TSQ_OK)
            return st;
        b->plan->fused++;
        *consumed = 1;
        b->codes = 1;
        return quant_outputs_codes(next) ? TSQ_OK : add_decode(b, next);
    }
    s->beta = copy_floats(b, bias, out);
    if (!s->beta)
        return oom(b);
    b->codes = 0;
    return TSQ_OK;
}

static tsq_status build_float(builder *b, int32_t index, tsq_layer *l)
{
    stage *s;
    int64_t n;
    if (b->codes && !tsq__layer_is(l, TSQ_LAYER_MAXPOOL2D) &&
        !tsq__layer_is(l, TSQ_LAYER_FLATTEN))
        if (add_decode(b, NULL) != TSQ_OK)
            return TSQ_ERR_NO_MEMORY;
    if (tsq__layer_is(l, TSQ_LAYER_FLATTEN)) {
        if (b->codes && b->h * b->w > 1)
            b->flat = 1; /* keep NHWC; the dense after it permutes its weights */
        else {
            b->c = b->c * b->h * b->w;
            b->h = b->w = 1;
        }
        return TSQ_OK;
    }
    if (tsq__layer_is(l, TSQ_LAYER_MAXPOOL2D)) {
        s = add_stage(b, b->codes ? OP_CPOOL : OP_FPOOL);
        if (!s)
            return oom(b);
        s->k = info(l, TSQ_LAYER_INFO_KERNEL_H);
        s->stride = info(l, TSQ_LAYER_INFO_STRIDE);
        set_dims(b, s, b->c, l->out_shape[1], l->out_shape[2]);
        return TSQ_OK;
    }
    if (tsq__layer_is(l, TSQ_LAYER_RELU))
        return add_stage(b, OP_RELU) ? TSQ_OK : oom(b);
    if (tsq__layer_is(l, TSQ_LAYER_BATCHNORM)) {
        s = add_stage(b, OP_AFFINE);
        if (!s)
            return oom(b);
        n = tsq__batchnorm_channels(l);
        s->s = tsq__alloc(b->ctx, (size_t)n * sizeof(float));
        s->t = tsq__alloc(b->ctx, (size_t)n * sizeof(float));
        if (!s->s || !s->t)
            return oom(b);
        tsq__batchnorm_eval_affine(l, s->s, s->t);
        b->plan->float_bytes += 8 * n;
        return TSQ_OK;
    }
    if (tsq__layer_is(l, TSQ_LAYER_CONV2D) || tsq__layer_is(l, TSQ_LAYER_DENSE)) {
        int conv = tsq__layer_is(l, TSQ_LAYER_CONV2D);
        int64_t out = info(l, TSQ_LAYER_INFO_OUT_CHANNELS);
        int64_t wn = out * (conv ? tsq__conv2d_geom(l)->k : l->in_numel);
        s = add_stage(b, conv ? OP_CONV : OP_DENSE);
        if (!s)
            return oom(b);
        if (conv)
            s->g = *tsq__conv2d_geom(l);
        s->weight = copy_floats(b, tsq__param_data(l, 0), wn);
        s->bias = copy_floats(b, tsq__param_data(l, 1), out);
        if (!s->weight || !s->bias)
            return oom(b);
        b->plan->float_bytes += 4 * (wn + out);
        if (conv)
            set_dims(b, s, out, l->out_shape[1], l->out_shape[2]);
        else
            set_dims(b, s, out, 1, 1);
        return TSQ_OK;
    }
    return tsq__fail(&b->ctx->obj, TSQ_ERR_UNSUPPORTED,
                     "plan_create: layer %d (%s) is not supported by the plan", (int)index,
                     l->ops->name);
}

static void free_stages(tsq_plan *p)
{
    tsq_context *ctx = p->obj.ctx;
    int32_t i;
    for (i = 0; p->stages && i < p->nstages; i++) {
        stage *s = &p->stages[i];
        tsq__free(ctx, s->weight);
        tsq__free(ctx, s->bias);
        tsq__free(ctx, s->s);
        tsq__free(ctx, s->t);
        tsq__free(ctx, s->maxcode);
        tsq__free(ctx, s->alpha);
        tsq__free(ctx, s->beta);
        tsq_packed_weights_destroy(s->pw);
        tsq_thresholds_destroy(s->th);
    }
    tsq__free(ctx, p->stages);
}

void tsq_plan_destroy(tsq_plan *plan)
{
    if (!plan)
        return;
    free_stages(plan);
    tsq__free(plan->obj.ctx, plan);
}

static tsq_status build(builder *b, tsq_net *net)
{
    int32_t i;
    tsq_status st = TSQ_OK;
    for (i = 0; i < net->nlayers && st == TSQ_OK; i++) {
        tsq_layer *l = net->layers[i];
        if (tsq__layer_is_lowbit(l)) {
            int consumed;
            st = build_lowbit(b, i, l, i + 1 < net->nlayers ? net->layers[i + 1] : NULL,
                              &consumed);
            i += consumed;
        } else if (tsq__layer_is_act_quant(l)) {
            st = build_quant(b, l);
        } else {
            st = build_float(b, i, l);
        }
    }
    if (st == TSQ_OK && b->codes)
        st = add_decode(b, NULL) == TSQ_OK ? TSQ_OK : TSQ_ERR_NO_MEMORY;
    return st;
}

tsq_status tsq_plan_create(tsq_context *ctx, tsq_net *net, tsq_plan **out)
{
    builder b;
    tsq_plan *p;
    tsq_status st;
    int32_t i;
    int lowbit = 0;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!net || !out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_create: %s is NULL",
                         !net ? "net" : "out");
    *out = NULL;
    if (net->nlayers < 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_STATE, "plan_create: the net has no layers");
    for (i = 0; i < net->nlayers; i++)
        lowbit |= tsq__layer_is_lowbit(net->layers[i]);
    if (!lowbit)
        return tsq__fail(&ctx->obj, TSQ_ERR_STATE,
                         "plan_create: the net has no low-bit layer (not converted: run "
                         "tsq_net_fit_transform first)");
    if (net->in_ndim == 2 || net->in_ndim > 3)
        return tsq__fail(&ctx->obj, TSQ_ERR_UNSUPPORTED,
                         "plan_create: input samples must be (C,H,W) or (F)");
    p = tsq__calloc(ctx, 1, sizeof *p);
    if (!p)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "plan_create: out of memory");
    tsq__object_init(&p->obj, ctx);
    memset(&b, 0, sizeof b);
    b.ctx = ctx;
    b.plan = p;
    b.c = net->in_shape[0];
    b.h = net->in_ndim == 3 ? net->in_shape[1] : 1;
    b.w = net->in_ndim == 3 ? net->in_shape[2] : 1;
    p->in_numel = net->in_numel;
    st = build(&b, net);
    if (st != TSQ_OK) {
        tsq_plan_destroy(p);
        return st;
    }
    p->out_numel = b.c * b.h * b.w;
    tsq__clear(&ctx->obj);
    *out = p;
    return TSQ_OK;
}

tsq_status tsq_plan_get(const tsq_plan *plan, int32_t key, int64_t *value)
{
    if (!plan || !value)
        return TSQ_ERR_NULL;
    switch (key) {
    case TSQ_PLAN_LOWBIT_LAYERS: *value = plan->lowbit; return TSQ_OK;
    case TSQ_PLAN_FUSED_THRESHOLDS: *value = plan->fused; return TSQ_OK;
    case TSQ_PLAN_PACKED_BYTES: *value = plan->packed_bytes; return TSQ_OK;
    case TSQ_PLAN_PACKED_FP32_BYTES: *value = plan->packed_fp32; return TSQ_OK;
    case TSQ_PLAN_FLOAT_BYTES: *value = plan->float_bytes; return TSQ_OK;
    case TSQ_PLAN_INPUT_SIZE: *value = plan->in_numel; return TSQ_OK;
    case TSQ_PLAN_OUTPUT_SIZE: *value = plan->out_numel; return TSQ_OK;
    case TSQ_PLAN_STAGES: *value = plan->nstages; return TSQ_OK;
    default: return TSQ_ERR_INVALID;
    }
}

/* ---- workspace ---- */

static uint64_t round_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* Bytes of a stage's output buffer and of its scratch, for n samples. */
static tsq_status stage_sizes(tsq_context *ctx, const stage *s, int64_t n, uint64_t *outb,
                              uint64_t *scratch)
{
    int64_t onumel = s->oc * s->oh * s->ow;
    int out_codes = s->op == OP_ENCODE || s->op == OP_CPOOL || (s->op == OP_LOWBIT && s->th);
    double total = (double)n * (double)onumel * (out_codes ? 1.0 : 4.0);
    *scratch = 0;
    if (total > 1e18)
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "plan_workspace_size: batch %lld is too "
                         "large", (long long)n);
    *outb = (uint64_t)total;
    if (s->op == OP_CONV)
        *scratch = (uint64_t)tsq__conv_ws_floats(&s->g, ctx->threads, 0) * sizeof(float);
    if (s->op == OP_LOWBIT) {
        int64_t m = n * s->oh * s->ow;
        uint64_t ws = 0;
        tsq_status st = tsq_lowbit_workspace_size(ctx, s->pw, m, s->code_bits, TSQ_KERNEL_AUTO,
                                                  &ws);
        if (st != TSQ_OK)
            return st;
        *scratch = round_up(ws);
        if (s->conv)
            *scratch += round_up((uint64_t)m * (uint64_t)(s->c * s->kh * s->kw));
        if (!s->th)
            *scratch += round_up((uint64_t)m * (uint64_t)s->oc * sizeof(int32_t));
    }
    return TSQ_OK;
}

typedef struct {
    uint64_t buf, scratch, total;
} ws_layout;

static tsq_status layout(tsq_context *ctx, const tsq_plan *p, int64_t n, ws_layout *w)
{
    int32_t i;
    memset(w, 0, sizeof *w);
    for (i = 0; i < p->nstages; i++) {
        uint64_t ob = 0, sc = 0;
        tsq_status st = stage_sizes(ctx, &p->stages[i], n, &ob, &sc);
        if (st != TSQ_OK)
            return st;
        w->buf = ob > w->buf ? ob : w->buf;
        w->scratch = sc > w->scratch ? sc : w->scratch;
    }
    w->buf = round_up(w->buf);
    w->total = 2 * w->buf + w->scratch + ALIGN; /* ALIGN: slack to align the start */
    return TSQ_OK;
}

tsq_status tsq_plan_workspace_size(tsq_context *ctx, const tsq_plan *plan, int64_t batch,
                                   uint64_t *bytes)
{
    ws_layout w;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!plan || !bytes)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_workspace_size: %s is NULL",
                         !plan ? "plan" : "bytes");
    if (batch < 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "plan_workspace_size: batch %lld < 1",
                         (long long)batch);
    st = layout(ctx, plan, batch, &w);
    if (st != TSQ_OK)
        return st;
    *bytes = w.total;
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

/* ---- running ---- */

static void wrap(tsq_tensor *t, tsq_context *ctx, int32_t dtype, int32_t ndim,
                 const int64_t *shape, void *data)
{
    int32_t i;
    memset(t, 0, sizeof *t);
    tsq__object_init(&t->obj, ctx);
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = 1;
    for (i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->data = data;
}

/* The layout loops below run over samples [lo, hi), split over the
 * context's threads by tsq__parallel_range. */
typedef struct {
    const stage *s;
    const void *x;
    void *y;
    int avx2;
} span_job;

static void fpool_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const stage *s = j->s;
    int64_t pl, oy, ox, a, c;
    for (pl = lo * s->c; pl < hi * s->c; pl++) {
        const float *xp = (const float *)j->x + pl * s->h * s->w;
        float *yp = (float *)j->y + pl * s->oh * s->ow;
        for (oy = 0; oy < s->oh; oy++)
            for (ox = 0; ox < s->ow; ox++) {
                float best = xp[oy * s->stride * s->w + ox * s->stride];
                for (a = 0; a < s->k; a++)
                    for (c = 0; c < s->k; c++) {
                        float v = xp[(oy * s->stride + a) * s->w + ox * s->stride + c];
                        best = v > best ? v : best;
                    }
                yp[oy * s->ow + ox] = best;
            }
    }
}

/* Max-pool on NHWC codes: exact, as the quantizer is monotone. */
static void cpool_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const stage *s = j->s;
    int64_t b, oy, ox, a, d, c, C = s->c;
    for (b = lo; b < hi; b++) {
        const uint8_t *xb = (const uint8_t *)j->x + b * s->h * s->w * C;
        for (oy = 0; oy < s->oh; oy++)
            for (ox = 0; ox < s->ow; ox++) {
                uint8_t *yp = (uint8_t *)j->y + ((b * s->oh + oy) * s->ow + ox) * C;
                memcpy(yp, xb + (oy * s->stride * s->w + ox * s->stride) * C, (size_t)C);
                for (a = 0; a < s->k; a++)
                    for (d = 0; d < s->k; d++) {
                        const uint8_t *xp =
                            xb + ((oy * s->stride + a) * s->w + ox * s->stride + d) * C;
                        for (c = 0; c < C; c++)
                            yp[c] = xp[c] > yp[c] ? xp[c] : yp[c];
                    }
            }
    }
}

#define ENCODE_TILE 16384 /* bytes of codes encoded per block, on the stack */

/* NCHW floats to NHWC codes: each channel's positions are encoded in
 * blocks by the quantizer's own span kernel (bit-identical to
 * tsq__quant_code), then transposed into place. */
static void encode_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const stage *s = j->s;
    int64_t b, c, p, p0, HW = s->h * s->w, C = s->c;
    int64_t P = C <= ENCODE_TILE ? ENCODE_TILE / C : 0;
    uint8_t tile[ENCODE_TILE];
    for (b = lo; b < hi; b++) {
        const float *xb = (const float *)j->x + b * C * HW;
        uint8_t *yb = (uint8_t *)j->y + b * HW * C;
        if (P == 0) { /* very many channels: one element at a time */
            for (c = 0; c < C; c++)
                for (p = 0; p < HW; p++)
                    yb[p * C + c] = (uint8_t)tsq__quant_code(xb[c * HW + p], s->s[c], s->t[c],
                                                             s->maxcode[c]);
            continue;
        }
        for (p0 = 0; p0 < HW; p0 += P) {
            int64_t len = HW - p0 < P ? HW - p0 : P;
            for (c = 0; c < C; c++) {
                if (j->avx2)
                    tsq__encode_span_avx2(xb + c * HW + p0, tile + c * len, len, s->s[c],
                                          s->t[c], s->maxcode[c]);
                else
                    tsq__encode_span_c(xb + c * HW + p0, tile + c * len, len, s->s[c],
                                       s->t[c], s->maxcode[c]);
            }
            for (p = 0; p < len; p++)
                for (c = 0; c < C; c++)
                    yb[(p0 + p) * C + c] = tile[c * len + p];
        }
    }
}

static void decode_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const stage *s = j->s;
    int64_t b, c, p, HW = s->h * s->w, C = s->c;
    for (b = lo; b < hi; b++)
        for (c = 0; c < C; c++) {
            float *yp = (float *)j->y + (b * C + c) * HW;
            const uint8_t *xp = (const uint8_t *)j->x + b * HW * C + c;
            for (p = 0; p < HW; p++)
                yp[p] = (float)xp[p * C] * s->s[c];
        }
}

static void run_spans(tsq_context *ctx, const stage *s, const void *x, void *y, int64_t n,
                      tsq__range_fn fn)
{
    span_job j;
    j.s = s;
    j.x = x;
    j.y = y;
    j.avx2 = (tsq__cpu_detect() & TSQ_CPU_AVX2) != 0;
    tsq__parallel_range(ctx->threads, n, s->c * s->h * s->w, fn, &j);
}

/* alpha * acc + b, two roundings as the low-bit layer's epilogue, NHWC
 * accumulators to NCHW floats. */
static void run_affine_out(const stage *s, const int32_t *acc, float *y, int64_t n)
{
    int64_t b, c, p, HW = s->oh * s->ow, C = s->oc;
    for (b = 0; b < n; b++)
        for (c = 0; c < C; c++)
            for (p = 0; p < HW; p++) {
                float scaled = (float)acc[(b * HW + p) * C + c] * s->alpha[c];
                y[(b * C + c) * HW + p] = scaled + s->beta[c];
            }
}

static tsq_status run_lowbit(tsq_context *ctx, const stage *s, const uint8_t *x, void *y,
                             int64_t n, uint8_t *scratch, uint64_t scratch_bytes)
{
    tsq_tensor codes, outt;
    int64_t m = n * s->oh * s->ow, k = s->c * s->kh * s->kw;
    int64_t shape[4];
    const uint8_t *patches = x;
    uint64_t used = 0;
    tsq_status st;
    if (s->conv) {
        tsq_tensor in, col;
        int64_t ishape[4] = {n, s->h, s->w, s->c}, cshape[2] = {m, k};
        uint8_t *cbuf = scratch;
        wrap(&in, ctx, TSQ_DTYPE_U8, 4, ishape, (void *)(uintptr_t)x);
        wrap(&col, ctx, TSQ_DTYPE_U8, 2, cshape, cbuf);
        st = tsq_im2col_codes(ctx, &in, TSQ_LAYOUT_NHWC, (int32_t)s->kh, (int32_t)s->kw,
                              (int32_t)s->stride, (int32_t)s->stride, (int32_t)s->pad,
                              (int32_t)s->pad, &col);
        if (st != TSQ_OK)
            return st;
        patches = cbuf;
        used = round_up((uint64_t)m * (uint64_t)k);
    } else {
        k = s->c * s->h * s->w;
    }
    shape[0] = m;
    shape[1] = k;
    wrap(&codes, ctx, TSQ_DTYPE_U8, 2, shape, (void *)(uintptr_t)patches);
    if (s->th) {
        shape[1] = s->oc;
        wrap(&outt, ctx, TSQ_DTYPE_U8, 2, shape, y);
        return tsq_lowbit_gemm_threshold(ctx, s->pw, &codes, s->code_bits, s->th,
                                         TSQ_KERNEL_AUTO, &outt, scratch + used,
                                         scratch_bytes - used);
    } else {
        int32_t *acc = (int32_t *)(void *)(scratch + used);
        uint64_t accb = round_up((uint64_t)m * (uint64_t)s->oc * sizeof(int32_t));
        used += accb;
        st = tsq_lowbit_gemm(ctx, s->pw, &codes, s->code_bits, TSQ_KERNEL_AUTO, acc,
                             m * s->oc, scratch + used, scratch_bytes - used);
        if (st != TSQ_OK)
            return st;
        run_affine_out(s, acc, y, n);
        return TSQ_OK;
    }
}

static tsq_status run_stage(tsq_context *ctx, const stage *s, const void *x, void *y, int64_t n,
                            uint8_t *scratch, uint64_t scratch_bytes)
{
    int64_t numel = n * s->c * s->h * s->w;
    switch (s->op) {
    case OP_CONV:
        tsq__conv_forward(&s->g, ctx->threads, x, s->weight, NULL, s->bias, y, n,
                          (float *)(void *)scratch);
        return TSQ_OK;
    case OP_DENSE:
        tsq__dense_forward(ctx->threads, s->c * s->h * s->w, s->oc, x, s->weight, NULL, s->bias,
                           y, n);
        return TSQ_OK;
    case OP_AFFINE: {
        int64_t HW = s->h * s->w, b, c;
        for (b = 0; b < n; b++)
            for (c = 0; c < s->c; c++)
                tsq__vec_affine((float *)y + (b * s->c + c) * HW,
                                (const float *)x + (b * s->c + c) * HW, s->s[c], s->t[c], HW);
        return TSQ_OK;
    }
    case OP_RELU:
        tsq__vec_relu(y, x, numel);
        return TSQ_OK;
    case OP_FPOOL: run_spans(ctx, s, x, y, n, fpool_range); return TSQ_OK;
    case OP_CPOOL: run_spans(ctx, s, x, y, n, cpool_range); return TSQ_OK;
    case OP_ENCODE: run_spans(ctx, s, x, y, n, encode_range); return TSQ_OK;
    case OP_DECODE: run_spans(ctx, s, x, y, n, decode_range); return TSQ_OK;
    case OP_LOWBIT: return run_lowbit(ctx, s, x, y, n, scratch, scratch_bytes);
    default:
        return tsq__fail(&ctx->obj, TSQ_ERR_INTERNAL, "plan_run: unknown stage %d", (int)s->op);
    }
}

static tsq_status check_io(tsq_context *ctx, const tsq_plan *p, const tsq_tensor *x,
                           const tsq_tensor *y, int64_t *n)
{
    static const char *where = "plan_run";
    tsq_status st = tsq__expect_dtype(&ctx->obj, where, "x", x, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&ctx->obj, where, "y", y, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    *n = x->ndim >= 1 ? x->shape[0] : 0;
    if (x->ndim < 2 || *n < 1 || x->numel != *n * p->in_numel)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                         "%s: x has %lld elements in %d dimensions; the plan expects N x %lld "
                         "(N >= 1 the first dimension)",
                         where, (long long)x->numel, (int)x->ndim, (long long)p->in_numel);
    if (y->ndim < 1 || y->shape[0] != *n || y->numel != *n * p->out_numel)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                         "%s: y has %lld elements (first dimension %lld); expected %lld x %lld",
                         where, (long long)y->numel, (long long)(y->ndim ? y->shape[0] : 0),
                         (long long)*n, (long long)p->out_numel);
    if (!tsq__all_finite(x->data, x->numel))
        return tsq__fail(&ctx->obj, TSQ_ERR_NOT_FINITE, "%s: x holds NaN or Inf", where);
    return TSQ_OK;
}

tsq_status tsq_plan_run(tsq_context *ctx, const tsq_plan *plan, const tsq_tensor *x,
                        tsq_tensor *y, void *workspace, uint64_t workspace_bytes)
{
    ws_layout w;
    uint8_t *base, *buf[2], *scratch;
    void *owned = NULL;
    const void *cur;
    int64_t n;
    int32_t i;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!plan || !x || !y)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_run: %s is NULL",
                         !plan ? "plan" : !x ? "x" : "y");
    st = check_io(ctx, plan, x, y, &n);
    if (st == TSQ_OK)
        st = layout(ctx, plan, n, &w);
    if (st != TSQ_OK)
        return st;
    if (!workspace) {
        owned = tsq__alloc(ctx, (size_t)w.total);
        if (!owned)
            return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY,
                             "plan_run: out of memory (%llu bytes of workspace)",
                             (unsigned long long)w.total);
        workspace = owned;
    } else if (workspace_bytes < w.total) {
        return tsq__fail(&ctx->obj, TSQ_ERR_TOO_SMALL,
                         "plan_run: workspace of %llu bytes, %llu needed for batch %lld",
                         (unsigned long long)workspace_bytes, (unsigned long long)w.total,
                         (long long)n);
    }
    base = (uint8_t *)workspace + ((ALIGN - (uintptr_t)workspace % ALIGN) % ALIGN);
    buf[0] = base;
    buf[1] = base + w.buf;
    scratch = base + 2 * w.buf;
    cur = x->data;
    for (i = 0; i < plan->nstages && st == TSQ_OK; i++) {
        st = run_stage(ctx, &plan->stages[i], cur, buf[i & 1], n, scratch, w.scratch);
        cur = buf[i & 1];
    }
    /* The last stage leaves floats (build ends in float): copy out only on
     * success, so y is untouched on failure. */
    if (st == TSQ_OK) {
        memcpy(y->data, cur, (size_t)(n * plan->out_numel) * sizeof(float));
        tsq__clear(&ctx->obj);
    }
    tsq__free(ctx, owned);
    return st;
}
