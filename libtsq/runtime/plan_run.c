/* Running the inference plan: the workspace layout for a batch and the
 * stage loop. Nothing here re-checks what plan_build.c guaranteed: the
 * codes a stage reads were written by the plan's own encoders or
 * thresholds, so they are within range, and every kernel, geometry and
 * weight layout was decided at creation. Only the caller's x and y, and
 * the workspace, are checked. */
#include "runtime/plan_internal.h"

#include <stdatomic.h>
#include <string.h>

#define ALIGN TSQ__PLAN_ALIGN

static uint64_t round_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

static const char *const where = "plan_run";

/* Bytes of a stage's output buffer and of its scratch, for n samples. A
 * low-bit stage's product is prepared here (kernel, threads, workspace
 * split for its M rows): arithmetic only. */
static tsq_status stage_sizes(tsq_context *ctx, const tsq__plan_stage *s, int64_t n,
                              int64_t threads, uint64_t *outb, uint64_t *scratch,
                              tsq__lowbit_call *call)
{
    int64_t onumel = s->oc * s->oh * s->ow;
    int out_codes = s->op == OP_ENCODE || s->op == OP_CPOOL || (s->op == OP_LOWBIT && s->th);
    double total = (double)n * (double)onumel * (out_codes ? 1.0 : 4.0);
    *scratch = 0;
    if (total > 1e18)
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "plan_workspace_size: batch %lld is too "
                         "large", (long long)n);
    *outb = (uint64_t)total;
    if (s->op == OP_TOBP || s->op == OP_FRONT || s->op == OP_CONV_FRONT ||
        (s->op == OP_LOWBIT && s->bp_in)) {
        tsq__plan_bits_sizes(s, n, threads, outb, scratch);
        return TSQ_OK;
    }
    if (s->op == OP_CONV)
        *scratch = (uint64_t)tsq__conv_forward_ws_floats(&s->g, threads, n) * sizeof(float);
    if (s->op == OP_LOWBIT) {
        int64_t m = n * s->oh * s->ow;
        tsq_status st = tsq__lowbit_prepare(ctx, "plan_workspace_size", s->pw, m, s->code_bits,
                                            TSQ_KERNEL_AUTO, threads, call);
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

/* One run of the stages on n images with `threads` threads. */
static tsq_status layout(tsq_context *ctx, const tsq_plan *p, int64_t n, int64_t threads,
                         ws_layout *w)
{
    int32_t i;
    memset(w, 0, sizeof *w);
    for (i = 0; i < p->nstages; i++) {
        uint64_t ob = 0, sc = 0;
        tsq__lowbit_call call;
        tsq_status st = stage_sizes(ctx, &p->stages[i], n, threads, &ob, &sc, &call);
        if (st != TSQ_OK)
            return st;
        w->buf = ob > w->buf ? ob : w->buf;
        w->scratch = sc > w->scratch ? sc : w->scratch;
    }
    w->buf = round_up(w->buf);
    w->total = round_up(2 * w->buf + w->scratch);
    return TSQ_OK;
}

/* How a batch is run. A batch larger than one tile goes through the
 * stages a tile of images at a time: the workspace is then bounded by the
 * tile, not the batch, and a tile's activations stay in cache from one
 * stage to the next. The threads then take whole tiles (each running the
 * stages on one thread, with its own part of the workspace), which needs
 * no synchronisation between stages. A batch of at most one tile runs at
 * once, its stages split over the threads.
 *
 * The tiles are as many as the workspace bound asks for, rounded up to a
 * multiple of the threads, and their sizes differ by at most one image:
 * 256 images in 13 tiles of 20 left one thread a seventh of the batch
 * longer than the other (7 tiles against 6). The threads take the next
 * tile from a shared counter, so one that a busy host slows down takes
 * fewer. */
#define TILE_BYTES (3u << 20) /* workspace of one tile, at most (or one image) */
#define TILE_MAX 64           /* images per tile, at most */
/* A batch of one tile splits its stages over the threads only with at
 * least this many multiply-adds: each split costs a fork-join of some tens
 * of microseconds (bench_threads), about what one thread does in 2^25
 * low-bit multiply-adds. */
#define SPLIT_MIN_MACS 33554432.0
#define MAX_WORKERS 256

typedef struct {
    int64_t tile;     /* images per tile, at most (the whole batch when workers == 0) */
    int64_t tiles;    /* the first n % tiles tiles hold one image more than the rest */
    int64_t workers;  /* threads taking tiles; 0: one run of the whole batch */
    int64_t threads;  /* of that one run */
    ws_layout w;      /* of one tile on one thread, or of the whole batch */
    uint64_t total;   /* bytes, alignment slack included */
} run_layout;

static tsq_status plan_layout(tsq_context *ctx, const tsq_plan *p, int64_t n, run_layout *r)
{
    ws_layout one;
    int64_t tile;
    tsq_status st = layout(ctx, p, 1, 1, &one);
    if (st != TSQ_OK)
        return st;
    tile = (int64_t)(TILE_BYTES / (one.total ? one.total : 1));
    tile = tile < 1 ? 1 : tile > TILE_MAX ? TILE_MAX : tile;
    r->tiles = n / tile + (n % tile != 0); /* n + tile - 1 could overflow */
    if (r->tiles <= 1) {
        r->tile = n;
        r->tiles = 1;
        r->workers = 0;
        r->threads = p->macs * (double)n >= SPLIT_MIN_MACS ? ctx->threads : 1;
        st = layout(ctx, p, n, r->threads, &r->w);
        r->total = r->w.total + ALIGN;
        return st;
    }
    r->workers = ctx->threads < r->tiles ? ctx->threads : r->tiles;
    r->workers = r->workers > MAX_WORKERS ? MAX_WORKERS : r->workers;
    /* More, smaller tiles (never more than n): each at most `tile`. */
    r->tiles = (r->tiles + r->workers - 1) / r->workers * r->workers;
    r->tiles = r->tiles > n ? n : r->tiles;
    r->tile = n / r->tiles + (n % r->tiles != 0);
    st = layout(ctx, p, r->tile, 1, &r->w);
    r->total = (uint64_t)r->workers * r->w.total + ALIGN;
    return st;
}

tsq_status tsq_plan_workspace_size(tsq_context *ctx, const tsq_plan *plan, int64_t batch,
                                   uint64_t *bytes)
{
    run_layout w;
    tsq_status st;
    int64_t in_bytes, out_bytes;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!plan || !bytes)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_workspace_size: %s is NULL",
                         !plan ? "plan" : "bytes");
    if (batch < 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "plan_workspace_size: batch %lld < 1",
                         (long long)batch);
    /* The tiles bound the workspace, not the batch; but a batch whose
     * input or output could not be a tensor is no batch to plan for. */
    if (!tsq__mul_i64(batch, plan->in_numel, &in_bytes) ||
        !tsq__mul_i64(in_bytes, (int64_t)sizeof(float), &in_bytes) ||
        !tsq__mul_i64(batch, plan->out_numel, &out_bytes) ||
        !tsq__mul_i64(out_bytes, (int64_t)sizeof(float), &out_bytes))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW,
                         "plan_workspace_size: a batch of %lld: its input or output "
                         "floats overflow int64", (long long)batch);
    st = plan_layout(ctx, plan, batch, &w);
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

static void run_spans(int64_t threads, const tsq__plan_stage *s, const void *x, void *y,
                      int64_t n, int64_t cost, tsq__range_fn fn)
{
    span_job j;
    j.s = s;
    j.x = x;
    j.y = y;
    tsq__parallel_range(threads, n, cost, fn, &j);
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

static tsq_status run_lowbit(tsq_context *ctx, int64_t threads, const tsq__plan_stage *s,
                             const uint8_t *x, void *y, int64_t n, uint8_t *scratch)
{
    tsq__lowbit_call call;
    int64_t m = n * s->oh * s->ow;
    const uint8_t *patches = x;
    uint64_t used = 0;
    tsq_status st = tsq__lowbit_prepare(ctx, where, s->pw, m, s->code_bits, TSQ_KERNEL_AUTO,
                                        threads, &call);
    if (st != TSQ_OK) /* cannot happen: the workspace size prepared the same */
        return st;
    if (s->conv) {
        run_spans(threads, s, x, scratch, n, s->oh * s->ow * s->c * s->kh * s->kw,
                  im2col_range);
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

static tsq_status run_stage(tsq_context *ctx, int64_t threads, const tsq__plan_stage *s,
                            const void *x, void *y, int64_t n, uint8_t *scratch)
{
    int64_t numel = n * s->c * s->h * s->w, per = s->c * s->h * s->w;
    switch (s->op) {
    case OP_CONV:
        tsq__conv_forward(&s->g, threads, s->cpu, x, s->weight, NULL, s->bias, y, n,
                          (float *)(void *)scratch);
        return TSQ_OK;
    case OP_DENSE:
        tsq__dense_forward(threads, per, s->oc, x, s->weight, NULL, s->bias, y, n);
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
    case OP_FPOOL: run_spans(threads, s, x, y, n, per, fpool_range); return TSQ_OK;
    case OP_CPOOL: run_spans(threads, s, x, y, n, per, cpool_range); return TSQ_OK;
    case OP_ENCODE: run_spans(threads, s, x, y, n, per, encode_range); return TSQ_OK;
    case OP_DECODE: run_spans(threads, s, x, y, n, per, decode_range); return TSQ_OK;
    case OP_LOWBIT:
        if (s->bp_in) {
            tsq__plan_bits_run(threads, s, x, y, n, scratch);
            return TSQ_OK;
        }
        return run_lowbit(ctx, threads, s, x, y, n, scratch);
    case OP_TOBP:
    case OP_FRONT:
    case OP_CONV_FRONT: tsq__plan_bits_run(threads, s, x, y, n, scratch); return TSQ_OK;
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

/* The stages on n images from x into y (n * out_numel floats), in a
 * workspace of w->total bytes at base (aligned). */
static tsq_status run_stages(tsq_context *ctx, const tsq_plan *plan, const ws_layout *w,
                             int64_t threads, const float *x, float *y, int64_t n, uint8_t *base)
{
    uint8_t *buf[2], *scratch;
    const void *cur = x;
    tsq_status st = TSQ_OK;
    int32_t i;
    buf[0] = base;
    buf[1] = base + w->buf;
    scratch = base + 2 * w->buf;
    for (i = 0; i < plan->nstages && st == TSQ_OK; i++) {
        st = run_stage(ctx, threads, &plan->stages[i], cur, buf[i & 1], n, scratch);
        cur = buf[i & 1];
    }
    /* The last stage leaves floats (the build ends in float). */
    if (st == TSQ_OK)
        memcpy(y, cur, (size_t)(n * plan->out_numel) * sizeof(float));
    return st;
}

typedef struct {
    tsq_context *ctx;
    const tsq_plan *plan;
    const run_layout *r;
    const float *x;
    float *y;
    int64_t n;
    uint8_t *base;
    atomic_llong next; /* the next tile to take */
    tsq_status status[MAX_WORKERS];
} tile_job;

/* Worker `slot` takes tiles from the shared counter and runs each on one
 * thread in its own part of the workspace. A tile's result does not
 * depend on which worker runs it. */
static void tile_worker(void *arg, int64_t slot)
{
    tile_job *j = arg;
    const tsq_plan *p = j->plan;
    const int64_t tiles = j->r->tiles;
    uint8_t *mine = j->base + (uint64_t)slot * j->r->w.total;
    int64_t t;
    j->status[slot] = TSQ_OK;
    while (j->status[slot] == TSQ_OK &&
           (t = (int64_t)atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < tiles) {
        int64_t size = j->n / tiles, more = j->n % tiles;
        int64_t b0 = t * size + (t < more ? t : more), nb = size + (t < more);
        j->status[slot] = run_stages(j->ctx, p, &j->r->w, 1, j->x + b0 * p->in_numel,
                                     j->y + b0 * p->out_numel, nb, mine);
    }
}

tsq_status tsq_plan_run(tsq_context *ctx, const tsq_plan *plan, const tsq_tensor *x,
                        tsq_tensor *y, void *workspace, uint64_t workspace_bytes)
{
    run_layout r;
    uint8_t *base;
    void *owned = NULL;
    int64_t n, i;
    int blas;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!plan || !x || !y)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_run: %s is NULL",
                         !plan ? "plan" : !x ? "x" : "y");
    st = check_io(ctx, plan, x, y, &n);
    if (st == TSQ_OK)
        st = plan_layout(ctx, plan, n, &r);
    if (st != TSQ_OK)
        return st;
    if (!workspace) {
        owned = tsq__alloc(ctx, (size_t)r.total);
        if (!owned)
            return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY,
                             "plan_run: out of memory (%llu bytes of workspace)",
                             (unsigned long long)r.total);
        workspace = owned;
    } else if (workspace_bytes < r.total) {
        return tsq__fail(&ctx->obj, TSQ_ERR_TOO_SMALL,
                         "plan_run: workspace of %llu bytes, %llu needed for batch %lld",
                         (unsigned long long)workspace_bytes, (unsigned long long)r.total,
                         (long long)n);
    }
    base = (uint8_t *)workspace + ((ALIGN - (uintptr_t)workspace % ALIGN) % ALIGN);
    /* The plan's float GEMMs (first conv, last dense) are small: the
     * BLAS's own threads would only spin between them. */
    blas = tsq__blas_single_begin();
    /* After the checks above no stage can fail (the layout prepared every
     * product), so y is only written by a run that succeeds. */
    if (r.workers == 0) {
        st = run_stages(ctx, plan, &r.w, r.threads, x->data, y->data, n, base);
    } else {
        tile_job j;
        j.ctx = ctx;
        j.plan = plan;
        j.r = &r;
        j.x = x->data;
        j.y = y->data;
        j.n = n;
        j.base = base;
        atomic_init(&j.next, 0);
        tsq__parallel_for(r.workers, r.workers, tile_worker, &j);
        for (i = 0; i < r.workers && st == TSQ_OK; i++)
            st = j.status[i];
    }
    tsq__blas_single_end(blas);
    if (st == TSQ_OK)
        tsq__clear(&ctx->obj);
    tsq__free(ctx, owned);
    return st;
}
