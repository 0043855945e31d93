/* Running the inference plan: the workspace layout for a batch and the
 * stage loop. Nothing here re-checks what plan_build.c guaranteed: the
 * codes a stage reads were written by the plan's own encoders or
 * thresholds, so they are within range, and every kernel, geometry and
 * weight layout was decided at creation. Only the caller's x and y, and
 * the workspace, are checked. */
#include "runtime/plan_internal.h"

#include <string.h>

#define ALIGN TSQ__PLAN_ALIGN

static uint64_t round_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

static const char *const where = "plan_run";

/* Bytes of a stage's output buffer and of its scratch, for n samples. A
 * low-bit stage's product is prepared here (kernel, threads, workspace
 * split for its M rows): arithmetic only. */
static tsq_status stage_sizes(tsq_context *ctx, const tsq__plan_stage *s, int64_t n,
                              uint64_t *outb, uint64_t *scratch, tsq__lowbit_call *call)
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
        tsq_status st = tsq__lowbit_prepare(ctx, "plan_workspace_size", s->pw, m, s->code_bits,
                                            TSQ_KERNEL_AUTO, call);
        if (st != TSQ_OK)
            return st;
        *scratch = round_up(call->ws.total);
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
        tsq__lowbit_call call;
        tsq_status st = stage_sizes(ctx, &p->stages[i], n, &ob, &sc, &call);
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

/* ---- the stages ---- */

/* The layout loops below run over samples [lo, hi), split over the
 * context's threads by tsq__parallel_range. */
typedef struct {
    const tsq__plan_stage *s;
    const void *x;
    void *y;
} span_job;

static void fpool_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const tsq__plan_stage *s = j->s;
    tsq__maxpool_f32(j->x, j->y, NULL, lo * s->c, hi * s->c, s->h, s->w, s->oh, s->ow, s->k,
                     s->stride);
}

static void cpool_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const tsq__plan_stage *s = j->s;
    tsq__maxpool_u8_nhwc(j->x, j->y, lo, hi, s->h, s->w, s->c, s->oh, s->ow, s->k, s->stride);
}

#define ENCODE_TILE 16384 /* bytes of codes encoded per block, on the stack */

/* NCHW floats to NHWC codes: each channel's positions are encoded in
 * blocks by the chosen span kernel (bit-identical to tsq__quant_code),
 * then transposed into place. */
static void encode_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const tsq__plan_stage *s = j->s;
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
            for (c = 0; c < C; c++)
                s->encode(xb + c * HW + p0, tile + c * len, len, s->s[c], s->t[c],
                          s->maxcode[c]);
            for (p = 0; p < len; p++)
                for (c = 0; c < C; c++)
                    yb[(p0 + p) * C + c] = tile[c * len + p];
        }
    }
}

static void decode_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const tsq__plan_stage *s = j->s;
    int64_t b, c, p, HW = s->h * s->w, C = s->c;
    for (b = lo; b < hi; b++)
        for (c = 0; c < C; c++) {
            float *yp = (float *)j->y + (b * C + c) * HW;
            const uint8_t *xp = (const uint8_t *)j->x + b * HW * C + c;
            for (p = 0; p < HW; p++)
                yp[p] = (float)xp[p * C] * s->s[c];
        }
}

/* NHWC codes to the patch rows of a low-bit conv, images [lo, hi). */
static void im2col_range(void *arg, int64_t lo, int64_t hi)
{
    const span_job *j = arg;
    const tsq__plan_stage *s = j->s;
    tsq__conv_geom g;
    memset(&g, 0, sizeof g);
    g.cin = s->c;
    g.h = s->h;
    g.w = s->w;
    g.kh = s->kh;
    g.kw = s->kw;
    g.stride = g.stride_w = s->stride;
    g.pad = g.pad_w = s->pad;
    g.oh = s->oh;
    g.ow = s->ow;
    g.k = s->c * s->kh * s->kw;
    tsq__im2col_rows(&g, 1, TSQ__NHWC, j->x, j->y, lo, hi, NULL, s->oh * s->ow);
}

static void run_spans(tsq_context *ctx, const tsq__plan_stage *s, const void *x, void *y,
                      int64_t n, int64_t cost, tsq__range_fn fn)
{
    span_job j;
    j.s = s;
    j.x = x;
    j.y = y;
    tsq__parallel_range(ctx->threads, n, cost, fn, &j);
}

/* alpha * acc + b, two roundings as the low-bit layer's epilogue, NHWC
 * accumulators to NCHW floats. */
static void run_affine_out(const tsq__plan_stage *s, const int32_t *acc, float *y, int64_t n)
{
    int64_t b, c, p, HW = s->oh * s->ow, C = s->oc;
    for (b = 0; b < n; b++)
        for (c = 0; c < C; c++)
            for (p = 0; p < HW; p++) {
                float scaled = (float)acc[(b * HW + p) * C + c] * s->alpha[c];
                y[(b * C + c) * HW + p] = scaled + s->beta[c];
            }
}

static tsq_status run_lowbit(tsq_context *ctx, const tsq__plan_stage *s, const uint8_t *x,
                             void *y, int64_t n, uint8_t *scratch)
{
    tsq__lowbit_call call;
    int64_t m = n * s->oh * s->ow;
    const uint8_t *patches = x;
    uint64_t used = 0;
    tsq_status st = tsq__lowbit_prepare(ctx, where, s->pw, m, s->code_bits, TSQ_KERNEL_AUTO,
                                        &call);
    if (st != TSQ_OK) /* cannot happen: the workspace size prepared the same */
        return st;
    if (s->conv) {
        run_spans(ctx, s, x, scratch, n, s->oh * s->ow * s->c * s->kh * s->kw, im2col_range);
        patches = scratch;
        used = round_up((uint64_t)m * (uint64_t)(s->c * s->kh * s->kw));
    }
    if (s->th) {
        tsq__lowbit_execute(&call, s->pw, patches, s->th, NULL, y, scratch + used);
    } else {
        int32_t *acc = (int32_t *)(void *)(scratch + used);
        used += round_up((uint64_t)m * (uint64_t)s->oc * sizeof(int32_t));
        tsq__lowbit_execute(&call, s->pw, patches, NULL, acc, NULL, scratch + used);
        run_affine_out(s, acc, y, n);
    }
    return TSQ_OK;
}

static tsq_status run_stage(tsq_context *ctx, const tsq__plan_stage *s, const void *x, void *y,
                            int64_t n, uint8_t *scratch)
{
    int64_t numel = n * s->c * s->h * s->w, per = s->c * s->h * s->w;
    switch (s->op) {
    case OP_CONV:
        tsq__conv_forward(&s->g, ctx->threads, x, s->weight, NULL, s->bias, y, n,
                          (float *)(void *)scratch);
        return TSQ_OK;
    case OP_DENSE:
        tsq__dense_forward(ctx->threads, per, s->oc, x, s->weight, NULL, s->bias, y, n);
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
    case OP_FPOOL: run_spans(ctx, s, x, y, n, per, fpool_range); return TSQ_OK;
    case OP_CPOOL: run_spans(ctx, s, x, y, n, per, cpool_range); return TSQ_OK;
    case OP_ENCODE: run_spans(ctx, s, x, y, n, per, encode_range); return TSQ_OK;
    case OP_DECODE: run_spans(ctx, s, x, y, n, per, decode_range); return TSQ_OK;
    case OP_LOWBIT: return run_lowbit(ctx, s, x, y, n, scratch);
    default:
        return tsq__fail(&ctx->obj, TSQ_ERR_INTERNAL, "plan_run: unknown stage %d", (int)s->op);
    }
}

static tsq_status check_io(tsq_context *ctx, const tsq_plan *p, const tsq_tensor *x,
                           const tsq_tensor *y, int64_t *n)
{
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
        st = run_stage(ctx, &plan->stages[i], cur, buf[i & 1], n, scratch);
        cur = buf[i & 1];
    }
    /* The last stage leaves floats (the build ends in float): copy out only
     * on success, so y is untouched on failure. */
    if (st == TSQ_OK) {
        memcpy(y->data, cur, (size_t)(n * plan->out_numel) * sizeof(float));
        tsq__clear(&ctx->obj);
    }
    tsq__free(ctx, owned);
    return st;
}
