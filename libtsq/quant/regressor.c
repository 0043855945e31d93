/*
 * The step-2 regressor (TSQ.md, "Step 2"): options, the output quantizer,
 * the caller-driven passes over the data, the statistics exchange, and
 * tsq_fit_transform on top of them. The updates themselves live in
 * regressor_solve.c, the start in lowbit_init.c.
 *
 * Passes. Pass 0 accumulates the statistics (N, s = X^T 1, X^T X, and X^T z0,
 * sum z0, sum z0^2 for the start target z0). Its end builds the start iterate
 * (the exact low-bit approximation of W_init or of the least squares
 * solution). With the quantized loss, pass k >= 1 then evaluates iterate
 * k-1 on the data (its true objective, for the history and the best-per-
 * channel) and, when round k takes a z-step, computes z from that iterate
 * and accumulates X^T z; its end runs round k's alpha/b and w updates. With
 * the linear loss every objective follows from the statistics, so pass 0 is
 * the only one.
 */
#include "regressor_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Where the start target z0 (and the linear loss's target) comes from. */
enum { TARGET_PREACT = 1, TARGET_XW = 2, TARGET_CODES = 3 };
enum { FIT_RUNNING = 1, FIT_DONE = 2 };
enum { STATS_EXPORT = 0 };

typedef struct fit_options {
    int32_t loss, offset, rounds, linear_rounds, sweeps, batch_rows;
    double lambda0, growth, tol, margin;
    tsq__alphabet alphabet;
} fit_options;

/* Everything one fit needs. `work` holds the statistics and scratch and is
 * freed when the fit is done; `keep` holds what stays queryable. */
typedef struct fit_state {
    int64_t d, C;
    fit_options opt;
    int32_t target, with_preact, status;
    int32_t pass;       /* 0: statistics; k >= 1: evaluates iterate k-1 */
    int32_t zpass;      /* the current pass takes round `pass`'s z-step */
    double lambda;      /* lambda of that z-step */
    int32_t chunk;      /* rows per block of work */
    int32_t threads;
    void *work, *keep;
    /* work: statistics of pass 0 */
    tsq__outq *q;       /* C channels' quantizers (when one is set) */
    double *gram, *colsum, *g0, *z0sum, *z0sq;
    double *ysum;       /* sum of delta Y per channel: shifts z0 = X W_init */
    double rows0;
    float *w_init;      /* d x C, or NULL */
    /* work: sums of the current pass */
    double rows;
    double *obj, *g, *zsum, *zsq, *zcost;
    double *lin;        /* per-channel linear objectives (linear_total's scratch) */
    /* work: the iterate (w is C x d, channel-major) */
    int8_t *w;
    double *alpha, *b;
    float *af, *bf, *wf; /* alpha, b as evaluated; w as a d x C float matrix */
    float *zlo, *zhi;   /* the z-step's bins per channel (tsq__zstep_bins) */
    float *qeps, *qinv, *qtop, *qdelta2; /* the quantizers as float arrays */
    int32_t nbins;      /* 1 + the largest top code over the channels */
    uint8_t *yc;        /* a block of f32 codes as u8 */
    /* work: scratch */
    double *t, *r, *part;
    int8_t *moved;      /* per channel: the last round moved it (see stalled) */
    int8_t *w_try;      /* per channel: the w of a restarted descent */
    float *xf, *vf, *zf, *gf;
    double *xd, *td, *ones; /* pass 0 works in double: rows of X, of z0 */
    /* keep: the best iterate per channel and the history */
    int8_t *best_w;
    double *best_alpha, *best_b, *best_obj;
    double *h_obj, *h_best, *h_relax, *h_lambda;
    int32_t h_count;
} fit_state;

struct tsq_regressor {
    tsq__object obj;
    fit_options opt;
    int32_t weight_bits;      /* 0 while a custom alphabet is in use */
    int32_t q_set;            /* an output quantizer was given */
    int64_t q_channels;       /* 0: per tensor (q_tensor) */
    tsq__outq q_tensor;
    tsq__outq *q_channel;     /* q_channels entries */
    fit_state *fit;
};

/* Partial sums per block of rows: obj, zsum, zsq, zcost (or z0sum, z0sq). */
#define PART_SERIES 4
#define MAX_BLOCKS 64
/* Pass 0 converts rows to double this many at a time. */
#define DOUBLE_ROWS 256
/* Elementwise work is spread over threads only in shares of at least this
 * many elements: a fork-join costs a thread start and, on a busy machine,
 * a wait for a scheduler slot, which finer shares do not repay. */
#define MIN_SHARE 131072

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct param_info {
    int32_t key;
    double lo, hi, dflt;
    int integral;
} param_info;

static const param_info params[] = {
    {TSQ_REGRESSOR_WEIGHT_BITS, 2, 8, 2, 1},
    {TSQ_REGRESSOR_OFFSET, 0, 1, 1, 1},
    {TSQ_REGRESSOR_LOSS, TSQ_LOSS_QUANTIZED, TSQ_LOSS_LINEAR, TSQ_LOSS_QUANTIZED, 1},
    {TSQ_REGRESSOR_ROUNDS, 0, 100000, 10, 1},
    {TSQ_REGRESSOR_LINEAR_ROUNDS, 0, 100000, 3, 1},
    {TSQ_REGRESSOR_SWEEPS, 1, 10000, 8, 1},
    {TSQ_REGRESSOR_LAMBDA0, 1e-12, 1e12, 0.1, 0},
    {TSQ_REGRESSOR_LAMBDA_GROWTH, 1, 1000, 1.1, 0},
    {TSQ_REGRESSOR_TOLERANCE, 0, 1, 1e-4, 0},
    {TSQ_REGRESSOR_BATCH_ROWS, 16, 1048576, 1024, 1},
    {TSQ_REGRESSOR_MARGIN, 0, 0.5, 0.5, 0},
};

static const param_info *find_param(int32_t key)
{
    size_t i;
    for (i = 0; i < sizeof params / sizeof params[0]; i++)
        if (params[i].key == key)
            return &params[i];
    return NULL;
}

tsq_status tsq_regressor_param_bounds(int32_t key, double *lo, double *hi)
{
    const param_info *p = find_param(key);
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    if (!p)
        return TSQ_ERR_INVALID;
    *lo = p->lo;
    *hi = p->hi;
    return TSQ_OK;
}

static int fit_running(const tsq_regressor *reg)
{
    return reg->fit && reg->fit->status == FIT_RUNNING;
}

tsq_status tsq_regressor_set_param(tsq_regressor *reg, int32_t key, double value)
{
    const param_info *p;
    fit_options *o;
    if (!reg)
        return TSQ_ERR_NULL;
    p = find_param(key);
    if (!p)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID, "regressor_set_param: unknown key %d",
                         (int)key);
    if (!(value >= p->lo && value <= p->hi) || (p->integral && value != floor(value)))
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_set_param: key %d: %g is not %s in %g .. %g", (int)key,
                         value, p->integral ? "an integer" : "a value", p->lo, p->hi);
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "regressor_set_param: a fit is in progress (options are read by begin)");
    o = &reg->opt;
    switch (key) {
    case TSQ_REGRESSOR_WEIGHT_BITS:
        reg->weight_bits = (int32_t)value;
        tsq__alphabet_range(&o->alphabet, (1 << (reg->weight_bits - 1)) - 1);
        break;
    case TSQ_REGRESSOR_OFFSET: o->offset = (int32_t)value; break;
    case TSQ_REGRESSOR_LOSS: o->loss = (int32_t)value; break;
    case TSQ_REGRESSOR_ROUNDS: o->rounds = (int32_t)value; break;
    case TSQ_REGRESSOR_LINEAR_ROUNDS: o->linear_rounds = (int32_t)value; break;
    case TSQ_REGRESSOR_SWEEPS: o->sweeps = (int32_t)value; break;
    case TSQ_REGRESSOR_LAMBDA0: o->lambda0 = value; break;
    case TSQ_REGRESSOR_LAMBDA_GROWTH: o->growth = value; break;
    case TSQ_REGRESSOR_TOLERANCE: o->tol = value; break;
    case TSQ_REGRESSOR_MARGIN: o->margin = value; break;
    default: o->batch_rows = (int32_t)value; break;
    }
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_get_param(const tsq_regressor *reg, int32_t key, double *value)
{
    const fit_options *o;
    if (!reg || !value)
        return TSQ_ERR_NULL;
    o = &reg->opt;
    switch (key) {
    case TSQ_REGRESSOR_WEIGHT_BITS: *value = reg->weight_bits; break;
    case TSQ_REGRESSOR_OFFSET: *value = o->offset; break;
    case TSQ_REGRESSOR_LOSS: *value = o->loss; break;
    case TSQ_REGRESSOR_ROUNDS: *value = o->rounds; break;
    case TSQ_REGRESSOR_LINEAR_ROUNDS: *value = o->linear_rounds; break;
    case TSQ_REGRESSOR_SWEEPS: *value = o->sweeps; break;
    case TSQ_REGRESSOR_LAMBDA0: *value = o->lambda0; break;
    case TSQ_REGRESSOR_LAMBDA_GROWTH: *value = o->growth; break;
    case TSQ_REGRESSOR_TOLERANCE: *value = o->tol; break;
    case TSQ_REGRESSOR_BATCH_ROWS: *value = o->batch_rows; break;
    case TSQ_REGRESSOR_MARGIN: *value = o->margin; break;
    default:
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_INVALID,
                         "regressor_get_param: unknown key %d", (int)key);
    }
    return TSQ_OK;
}

tsq_status tsq_regressor_set_alphabet(tsq_regressor *reg, const int32_t *values, int32_t count)
{
    tsq__alphabet a;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!values)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_set_alphabet: values is NULL");
    if (count < 1)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID, "regressor_set_alphabet: count is %d",
                         (int)count);
    if (!tsq__alphabet_custom(&a, values, count))
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_set_alphabet: need at least 2 distinct values in -128..127");
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_set_alphabet: a fit is in progress");
    reg->opt.alphabet = a;
    reg->weight_bits = 0;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_get_alphabet(const tsq_regressor *reg, int32_t *values,
                                      int32_t capacity, int32_t *count)
{
    if (!reg || !count)
        return TSQ_ERR_NULL;
    *count = reg->opt.alphabet.count;
    if (!values)
        return TSQ_OK;
    if (capacity < *count)
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_get_alphabet: capacity %d < %d values", (int)capacity,
                         (int)*count);
    memcpy(values, reg->opt.alphabet.values, (size_t)*count * sizeof values[0]);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* The output quantizer                                                */
/* ------------------------------------------------------------------ */

tsq_status tsq_regressor_set_levels(tsq_regressor *reg, int32_t bits, float eps, float delta)
{
    tsq__outq q;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!isfinite(eps) || !isfinite(delta))
        return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE,
                         "regressor_set_levels: eps %g and delta %g must be finite", eps, delta);
    if (!tsq__outq_init(&q, bits, eps, delta))
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_set_levels: need bits in 1..8, eps >= 0, delta > 0 "
                         "(got %d, %g, %g)", (int)bits, eps, delta);
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_set_levels: a fit is in progress");
    tsq__free(reg->obj.ctx, reg->q_channel);
    reg->q_channel = NULL;
    reg->q_channels = 0;
    reg->q_tensor = q;
    reg->q_set = 1;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_set_quantizer(tsq_regressor *reg, const tsq_quantizer *quant)
{
    int64_t n, c, count;
    tsq__outq *qs;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!quant)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_set_quantizer: quantizer is NULL");
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "regressor_set_quantizer: a fit is in progress");
    n = tsq__quantizer_nchannels(quant);
    count = n > 0 ? n : 1;
    qs = tsq__calloc(reg->obj.ctx, (size_t)count, sizeof *qs);
    if (!qs)
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY,
                         "regressor_set_quantizer: out of memory for %lld channels",
                         (long long)count);
    for (c = 0; c < count; c++) {
        int32_t bits;
        float eps, delta;
        tsq_status st = tsq__quantizer_channel(quant, c, &bits, &eps, &delta);
        if (st != TSQ_OK || !tsq__outq_init(&qs[c], bits, eps, delta)) {
            tsq__free(reg->obj.ctx, qs);
            if (st == TSQ_ERR_STATE)
                return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                                 "regressor_set_quantizer: the quantizer is not fitted");
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "regressor_set_quantizer: channel %lld has unusable parameters",
                             (long long)c);
        }
    }
    tsq__free(reg->obj.ctx, reg->q_channel);
    if (n > 0) {
        reg->q_channel = qs;
        reg->q_channels = n;
    } else {
        reg->q_tensor = qs[0];
        reg->q_channel = NULL;
        reg->q_channels = 0;
        tsq__free(reg->obj.ctx, qs);
    }
    reg->q_set = 1;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Handle                                                              */
/* ------------------------------------------------------------------ */

static void fit_free(tsq_context *ctx, fit_state *f)
{
    if (!f)
        return;
    tsq__free(ctx, f->work);
    tsq__free(ctx, f->keep);
    tsq__free(ctx, f);
}

tsq_status tsq_regressor_create(tsq_context *ctx, tsq_regressor **out)
{
    tsq_regressor *reg;
    size_t i;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "regressor_create: out is NULL");
    *out = NULL;
    reg = tsq__calloc(ctx, 1, sizeof *reg);
    if (!reg)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "regressor_create: out of memory");
    tsq__object_init(&reg->obj, ctx);
    for (i = 0; i < sizeof params / sizeof params[0]; i++)
        tsq_regressor_set_param(reg, params[i].key, params[i].dflt);
    tsq__clear(&ctx->obj);
    *out = reg;
    return TSQ_OK;
}

void tsq_regressor_destroy(tsq_regressor *reg)
{
    if (!reg)
        return;
    fit_free(reg->obj.ctx, reg->fit);
    tsq__free(reg->obj.ctx, reg->q_channel);
    tsq__free(reg->obj.ctx, reg);
}

const char *tsq_regressor_errmsg(const tsq_regressor *reg)
{
    return reg ? reg->obj.msg : "no regressor";
}

/* ------------------------------------------------------------------ */
/* Fit state: two arenas, laid out once                                */
/* ------------------------------------------------------------------ */

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* Lays the arrays out from `base` (or, with base NULL, only measures).
 * Sizes were checked against overflow by the caller. */
#define CARVE(field, count)                                                   \
    do {                                                                      \
        size_t at_ = align64(off);                                            \
        off = at_ + (size_t)(count) * sizeof *(f->field);                     \
        if (base)                                                             \
            f->field = (void *)(base + at_);                                  \
    } while (0)

static size_t layout_work(fit_state *f, unsigned char *base, int have_w_init)
{
    size_t off = 0, d = (size_t)f->d, C = (size_t)f->C, n = (size_t)f->chunk;
    size_t gf = d * d > d * C ? d * d : d * C;
    CARVE(q, C);
    CARVE(gram, d * d);
    CARVE(colsum, d);
    CARVE(g0, d * C);
    CARVE(z0sum, C);
    CARVE(z0sq, C);
    CARVE(ysum, C);
    CARVE(w_init, have_w_init ? d * C : 0);
    CARVE(obj, C);
    CARVE(g, d * C);
    CARVE(zsum, C);
    CARVE(zsq, C);
    CARVE(zcost, C);
    CARVE(lin, C);
    CARVE(w, C * d);
    CARVE(alpha, C);
    CARVE(b, C);
    CARVE(af, C);
    CARVE(bf, C);
    CARVE(wf, d * C);
    CARVE(qeps, C);
    CARVE(qinv, C);
    CARVE(qtop, C);
    CARVE(qdelta2, C);
    CARVE(zlo, C * (size_t)f->nbins);
    CARVE(zhi, C * (size_t)f->nbins);
    CARVE(yc, n * C);
    CARVE(t, C * d);
    CARVE(r, C * d * 2);
    CARVE(w_try, C * d);
    CARVE(part, (size_t)MAX_BLOCKS * PART_SERIES * C);
    CARVE(moved, C);
    CARVE(xf, n * d);
    CARVE(vf, n * C);
    CARVE(zf, n * C);
    CARVE(gf, gf);
    CARVE(xd, (n < DOUBLE_ROWS ? n : DOUBLE_ROWS) * d);
    CARVE(td, (n < DOUBLE_ROWS ? n : DOUBLE_ROWS) * C);
    CARVE(ones, n < DOUBLE_ROWS ? n : DOUBLE_ROWS);
    return off;
}

static size_t layout_keep(fit_state *f, unsigned char *base)
{
    size_t off = 0, d = (size_t)f->d, C = (size_t)f->C, h = (size_t)f->opt.rounds + 1;
    CARVE(best_w, C * d);
    CARVE(best_alpha, C);
    CARVE(best_b, C);
    CARVE(best_obj, C);
    CARVE(h_obj, h);
    CARVE(h_best, h);
    CARVE(h_relax, h);
    CARVE(h_lambda, h);
    return off;
}

#undef CARVE

/* Rejects sizes whose arrays could overflow size_t (or not fit in the
 * int-sized dimensions BLAS takes). */
static int sizes_ok(int64_t d, int64_t C, int64_t chunk)
{
    const int64_t lim = (int64_t)1 << 30;
    size_t x;
    if (d > lim || C > lim)
        return 0;
    return tsq__mul_size((size_t)d, (size_t)d, &x) && x <= SIZE_MAX / 64 &&
           tsq__mul_size((size_t)d, (size_t)C, &x) && x <= SIZE_MAX / 64 &&
           tsq__mul_size((size_t)chunk, (size_t)(d > C ? d : C), &x) && x <= SIZE_MAX / 64 &&
           d * C < lim * 2;
}

/* ------------------------------------------------------------------ */
/* begin                                                               */
/* ------------------------------------------------------------------ */

static tsq_status check_matrix(tsq_regressor *reg, const char *where, const char *name,
                               const tsq_tensor *t, int64_t rows, int64_t cols)
{
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        if (t->ndim != 2)
            return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: %s has %d dimensions, expected 2",
                             where, name, (int)t->ndim);
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: %s is %lld x %lld, expected %lld x %lld",
                         where, name, (long long)t->shape[0], (long long)t->shape[1],
                         (long long)rows, (long long)cols);
    }
    return TSQ_OK;
}

static tsq_status check_w_init(tsq_regressor *reg, const char *where, const tsq_tensor *W,
                               int64_t d, int64_t C)
{
    tsq_status st;
    if (!W)
        return TSQ_OK;
    st = tsq__expect_dtype(&reg->obj, where, "W_init", W, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = check_matrix(reg, where, "W_init (d x C)", W, d, C);
    if (st == TSQ_OK && !tsq__all_finite(W->data, W->numel))
        st = tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE, "%s: W_init holds NaN or Inf", where);
    return st;
}

/* The quantizer is needed by the quantized loss, and by the linear loss
 * when its target is delta * Y. */
static tsq_status check_quantizer(tsq_regressor *reg, const char *where, int64_t C, int needed)
{
    if (!needed)
        return TSQ_OK;
    if (!reg->q_set)
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "%s: no output quantizer (tsq_regressor_set_quantizer or "
                         "tsq_regressor_set_levels)%s", where,
                         reg->opt.loss == TSQ_LOSS_LINEAR ? "; the linear loss needs one when "
                                                            "neither P nor W_init is given" : "");
    if (reg->q_channels && reg->q_channels != C)
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "%s: the output quantizer has %lld channels, the layer %lld outputs",
                         where, (long long)reg->q_channels, (long long)C);
    return TSQ_OK;
}

/* z0 (and the linear loss's target): P, else X W_init, else delta Y. */
static int32_t pick_target(int with_preact, int have_w_init)
{
    if (with_preact)
        return TARGET_PREACT;
    return have_w_init ? TARGET_XW : TARGET_CODES;
}

static int needs_quantizer(const fit_options *o, int32_t target)
{
    return o->loss == TSQ_LOSS_QUANTIZED || target == TARGET_CODES;
}

static void reset_pass_sums(fit_state *f)
{
    size_t C = (size_t)f->C;
    f->rows = 0.0;
    memset(f->obj, 0, C * sizeof f->obj[0]);
    memset(f->g, 0, C * (size_t)f->d * sizeof f->g[0]);
    memset(f->zsum, 0, C * sizeof f->zsum[0]);
    memset(f->zsq, 0, C * sizeof f->zsq[0]);
    memset(f->zcost, 0, C * sizeof f->zcost[0]);
}

/* Makes a new fit state in *out (reg->fit is left alone). */
static tsq_status begin_fit(tsq_regressor *reg, const char *where, int64_t d, int64_t C,
                            const tsq_tensor *W_init, int32_t with_preact, fit_state **out)
{
    tsq_context *ctx = reg->obj.ctx;
    fit_state *f;
    size_t work_bytes, keep_bytes;
    int64_t c, j;
    int32_t target = pick_target(with_preact, W_init != NULL);
    tsq_status st;

    if (d < 1 || C < 1)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                         "%s: d = %lld and C = %lld, need at least 1 input and 1 output", where,
                         (long long)d, (long long)C);
    if (!sizes_ok(d, C, reg->opt.batch_rows))
        return tsq__fail(&reg->obj, TSQ_ERR_OVERFLOW, "%s: d = %lld, C = %lld is too large",
                         where, (long long)d, (long long)C);
    st = check_w_init(reg, where, W_init, d, C);
    if (st == TSQ_OK)
        st = check_quantizer(reg, where, C, needs_quantizer(&reg->opt, target));
    if (st != TSQ_OK)
        return st;

    f = tsq__calloc(ctx, 1, sizeof *f);
    if (!f)
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    f->d = d;
    f->C = C;
    f->opt = reg->opt;
    f->target = target;
    f->with_preact = with_preact;
    f->chunk = reg->opt.batch_rows;
    f->threads = (int32_t)ctx->threads;
    f->nbins = 1;
    for (c = 0; reg->q_set && c < (reg->q_channels ? reg->q_channels : 1); c++) {
        const tsq__outq *q = reg->q_channels ? &reg->q_channel[c] : &reg->q_tensor;
        if (q->maxcode + 1 > f->nbins)
            f->nbins = q->maxcode + 1;
    }
    work_bytes = layout_work(f, NULL, W_init != NULL);
    keep_bytes = layout_keep(f, NULL);
    f->work = tsq__alloc(ctx, work_bytes);
    f->keep = tsq__alloc(ctx, keep_bytes);
    if (!f->work || !f->keep) {
        fit_free(ctx, f);
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for %llu bytes",
                         where, (unsigned long long)(work_bytes + keep_bytes));
    }
    memset(f->work, 0, work_bytes);
    memset(f->keep, 0, keep_bytes);
    layout_work(f, f->work, W_init != NULL);
    layout_keep(f, f->keep);
    if (!W_init)
        f->w_init = NULL;
    else
        memcpy(f->w_init, W_init->data, (size_t)(d * C) * sizeof(float));
    for (c = 0; c < C; c++) {
        if (reg->q_set) {
            f->q[c] = reg->q_channels ? reg->q_channel[c] : reg->q_tensor;
            f->qeps[c] = f->q[c].eps;
            f->qinv[c] = f->q[c].inv_delta;
            f->qtop[c] = (float)f->q[c].maxcode;
            f->qdelta2[c] = f->q[c].delta * f->q[c].delta;
        }
        f->best_obj[c] = HUGE_VAL;
    }
    for (j = 0; j < (f->chunk < DOUBLE_ROWS ? f->chunk : DOUBLE_ROWS); j++)
        f->ones[j] = 1.0;
    f->status = FIT_RUNNING;
    f->pass = 0;
    *out = f;
    return TSQ_OK;
}

tsq_status tsq_regressor_begin(tsq_regressor *reg, int64_t d, int64_t C,
                               const tsq_tensor *W_init, int32_t with_preact)
{
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (with_preact != 0 && with_preact != 1)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_begin: with_preact is %d, must be 0 or 1", (int)with_preact);
    fit_state *f = NULL;
    st = begin_fit(reg, "regressor_begin", d, C, W_init, with_preact, &f);
    if (st != TSQ_OK)
        return st;
    fit_free(reg->obj.ctx, reg->fit);
    reg->fit = f;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Validation of a batch                                               */
/* ------------------------------------------------------------------ */

/* The rows a feed brings, as raw pointers (already validated). */
typedef struct batch {
    const void *x;
    int32_t xdt;
    const void *y;
    int32_t ydt;
    const float *p;
    int64_t n;
} batch;

static int needs_codes(const fit_state *f)
{
    return f->opt.loss == TSQ_LOSS_QUANTIZED || (f->pass == 0 && f->target == TARGET_CODES);
}

static tsq_status check_codes(tsq_regressor *reg, const char *where, const fit_state *f,
                              const tsq_tensor *Y)
{
    int64_t i, C = f->C;
    for (i = 0; i < Y->numel; i++) {
        double v = Y->dtype == TSQ_DTYPE_U8 ? (double)((const uint8_t *)Y->data)[i]
                                            : (double)((const float *)Y->data)[i];
        int32_t top = f->q[i % C].maxcode;
        if (v != v || !isfinite(v))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE, "%s: Y[%lld, %lld] is NaN or Inf",
                             where, (long long)(i / C), (long long)(i % C));
        if (v != floor(v) || v < 0.0)
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "%s: Y[%lld, %lld] = %g is not a code (a non-negative integer)",
                             where, (long long)(i / C), (long long)(i % C), v);
        if (v > top)
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "%s: Y[%lld, %lld] = %g is above the top code %d of the %d-bit "
                             "output quantizer", where, (long long)(i / C), (long long)(i % C),
                             v, (int)top, (int)f->q[i % C].bits);
    }
    return TSQ_OK;
}

static tsq_status check_f32_finite(tsq_regressor *reg, const char *where, const char *name,
                                   const tsq_tensor *t)
{
    const float *v = t->data;
    int64_t i, cols = t->shape[1];
    for (i = 0; i < t->numel; i++)
        if (!isfinite(v[i]))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE, "%s: %s[%lld, %lld] is NaN or Inf",
                             where, name, (long long)(i / cols), (long long)(i % cols));
    return TSQ_OK;
}

static tsq_status check_x(tsq_regressor *reg, const char *where, const tsq_tensor *X, int64_t d)
{
    if (!X)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: X is NULL", where);
    if (X->dtype != TSQ_DTYPE_U8 && X->dtype != TSQ_DTYPE_F32)
        return tsq__fail(&reg->obj, TSQ_ERR_DTYPE, "%s: X must be u8 codes or f32", where);
    if (X->ndim != 2)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: X has %d dimensions, expected 2 (N x d)",
                         where, (int)X->ndim);
    if (X->shape[1] != d)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: X has %lld columns, the layer d = %lld",
                         where, (long long)X->shape[1], (long long)d);
    if (X->dtype == TSQ_DTYPE_F32)
        return check_f32_finite(reg, where, "X", X);
    return TSQ_OK;
}

/* Checks (X, Y, P) against the fit's current pass and fills *bt. */
static tsq_status check_batch(tsq_regressor *reg, const char *where, const tsq_tensor *X,
                              const tsq_tensor *Y, const tsq_tensor *P, batch *bt)
{
    const fit_state *f = reg->fit;
    int64_t n;
    tsq_status st = check_x(reg, where, X, f->d);
    if (st != TSQ_OK)
        return st;
    n = X->shape[0];
    memset(bt, 0, sizeof *bt);
    bt->x = X->data;
    bt->xdt = X->dtype;
    bt->n = n;
    if (needs_codes(f)) {
        if (!Y)
            return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: Y (the step-1 codes) is NULL", where);
        if (Y->dtype != TSQ_DTYPE_U8 && Y->dtype != TSQ_DTYPE_F32)
            return tsq__fail(&reg->obj, TSQ_ERR_DTYPE, "%s: Y must be u8 codes (or f32 codes)",
                             where);
        if (Y->ndim != 2 || Y->shape[0] != n || Y->shape[1] != f->C)
            return tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                             "%s: Y must be N x C = %lld x %lld (X has %lld rows), "
                             "got %s%lld x %lld",
                             where, (long long)n, (long long)f->C, (long long)n,
                             Y->ndim != 2 ? "a non-matrix " : "", (long long)Y->shape[0],
                             (long long)(Y->ndim > 1 ? Y->shape[1] : 1));
        st = check_codes(reg, where, f, Y);
        if (st != TSQ_OK)
            return st;
        bt->y = Y->data;
        bt->ydt = Y->dtype;
    }
    if (f->pass == 0 && f->with_preact) {
        if (!P)
            return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                             "%s: P is NULL, but the fit began with with_preact = 1", where);
        st = tsq__expect_dtype(&reg->obj, where, "P", P, TSQ_DTYPE_F32);
        if (st == TSQ_OK && (P->ndim != 2 || P->shape[0] != n || P->shape[1] != f->C))
            st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                           "%s: P must be N x C = %lld x %lld (X has %lld rows)", where,
                           (long long)n, (long long)f->C, (long long)n);
        if (st == TSQ_OK)
            st = check_f32_finite(reg, where, "P", P);
        if (st != TSQ_OK)
            return st;
        bt->p = P->data;
    } else if (f->pass == 0 && P) {
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "%s: P given, but the fit began with with_preact = 0", where);
    }
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Work on one block of rows                                           */
/* ------------------------------------------------------------------ */

static int32_t code_at(const void *y, int32_t ydt, int64_t i)
{
    return ydt == TSQ_DTYPE_U8 ? (int32_t)((const uint8_t *)y)[i]
                               : (int32_t)((const float *)y)[i];
}

/* Rows [first, first + n) are split into at most MAX_BLOCKS blocks of at
 * least 16 rows. The split depends only on n, and partial sums are reduced
 * in block order, so results do not depend on the thread count. */
typedef struct block_job {
    fit_state *f;
    batch bt;          /* the rows of this block of work (already offset) */
    const float *xf;   /* the rows as floats */
    int64_t block_rows, nblocks;
} block_job;

static void split_blocks(block_job *job, int64_t n)
{
    int64_t per = (n + MAX_BLOCKS - 1) / MAX_BLOCKS;
    job->block_rows = per < 16 ? 16 : per;
    job->nblocks = (n + job->block_rows - 1) / job->block_rows;
}

static void block_range(const block_job *job, int64_t blk, int64_t *lo, int64_t *hi)
{
    *lo = blk * job->block_rows;
    *hi = *lo + job->block_rows < job->bt.n ? *lo + job->block_rows : job->bt.n;
}

/* Threads for `work` elements of cheap work (see MIN_SHARE). */
static int64_t threads_for(const fit_state *f, int64_t work)
{
    int64_t t = work / MIN_SHARE;
    return t < 1 ? 1 : t < f->threads ? t : f->threads;
}

/* u8 X rows as floats, for the products (and the exact float X^T X). */
static void convert_block(void *arg, int64_t blk)
{
    block_job *job = arg;
    const uint8_t *x = job->bt.x;
    float *xf = job->f->xf;
    int64_t lo, hi, i, d = job->f->d, end;
    block_range(job, blk, &lo, &hi);
    i = lo * d;
    end = hi * d;
#if defined(__SSE2__)
    for (; i + 16 <= end; i += 16) { /* 16 codes -> 4 x 4 floats */
        __m128i b = _mm_loadu_si128((const __m128i *)(x + i)), zero = _mm_setzero_si128();
        __m128i lo8 = _mm_unpacklo_epi8(b, zero), hi8 = _mm_unpackhi_epi8(b, zero);
        _mm_storeu_ps(xf + i, _mm_cvtepi32_ps(_mm_unpacklo_epi16(lo8, zero)));
        _mm_storeu_ps(xf + i + 4, _mm_cvtepi32_ps(_mm_unpackhi_epi16(lo8, zero)));
        _mm_storeu_ps(xf + i + 8, _mm_cvtepi32_ps(_mm_unpacklo_epi16(hi8, zero)));
        _mm_storeu_ps(xf + i + 12, _mm_cvtepi32_ps(_mm_unpackhi_epi16(hi8, zero)));
    }
#endif
    for (; i < end; i++)
        xf[i] = (float)x[i];
}

static void reduce_parts(fit_state *f, int64_t nblocks, double *const *into, int series)
{
    int64_t blk, c, C = f->C;
    int s;
    for (blk = 0; blk < nblocks; blk++)
        for (s = 0; s < series; s++) {
            const double *p = f->part + (blk * PART_SERIES + s) * C;
            for (c = 0; c < C; c++)
                into[s][c] += p[c];
        }
}

/* With the quantized loss, z0 = X W_init + beta, beta matching the mean of
 * the codes' levels: W_init carries no offset, the layer may have one. */
static int shifts_xw(const fit_state *f)
{
    return f->target == TARGET_XW && f->opt.loss == TSQ_LOSS_QUANTIZED && f->opt.offset;
}

/* Pass 0, rows [r0, r0 + m) of the block: X as doubles in xd, and the
 * start target z0 (P or delta Y) as doubles in td with its sums (or, for
 * z0 = X W_init + beta, only the sum of delta Y). */
static void rows_to_double(fit_state *f, const block_job *job, int64_t r0, int64_t m)
{
    int64_t i, c, d = f->d, C = f->C;
    if (job->bt.xdt == TSQ_DTYPE_U8) {
        const uint8_t *x = (const uint8_t *)job->bt.x + r0 * d;
        for (i = 0; i < m * d; i++)
            f->xd[i] = (double)x[i];
    } else {
        const float *x = (const float *)job->bt.x + r0 * d;
        for (i = 0; i < m * d; i++)
            f->xd[i] = (double)x[i];
    }
    if (f->target == TARGET_XW && !shifts_xw(f))
        return;
    for (i = 0; i < m; i++)
        for (c = 0; c < C; c++) {
            int64_t at = (r0 + i) * C + c;
            double z = job->bt.p ? (double)job->bt.p[at]
                                 : (double)code_at(job->bt.y, job->bt.ydt, at) * f->q[c].delta;
            f->td[i * C + c] = z;
            if (f->target == TARGET_XW) {
                f->ysum[c] += z;
            } else {
                f->z0sum[c] += z;
                f->z0sq[c] += z * z;
            }
        }
}

/* Passes k >= 1: v = alpha (X w) + b for iterate k-1, its true objective
 * (as a count of squared code errors; end_later_pass scales by delta^2),
 * and, in a z-step pass, z (into zf) with its sums. */
static void eval_block(void *arg, int64_t blk)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t lo, hi, C = f->C;
    tsq__zrows a;
    block_range(job, blk, &lo, &hi);
    a.rows = hi - lo;
    a.C = C;
    a.xw = f->vf + lo * C;
    a.y = (job->bt.ydt == TSQ_DTYPE_U8 ? (const uint8_t *)job->bt.y : f->yc) + lo * C;
    a.alpha = f->af;
    a.b = f->bf;
    a.q = f->q;
    a.eps = f->qeps;
    a.inv_delta = f->qinv;
    a.top = f->qtop;
    a.delta2 = f->qdelta2;
    a.lo = f->zlo;
    a.hi = f->zhi;
    a.nbins = f->nbins;
    a.zstep = f->zpass;
    a.lambda = (float)f->lambda;
    a.z = f->zf + lo * C;
    a.err = f->part + blk * PART_SERIES * C;
    a.zsum = a.err + C;
    a.zsq = a.zsum + C;
    a.zcost = a.zsq + C;
    memset(a.err, 0, PART_SERIES * (size_t)C * sizeof a.err[0]);
    tsq__zrows_run(&a, 1);
}

/* acc (double) += src (float), n values. */
static void add_into(double *acc, const float *src, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        acc[i] += src[i];
}

/* Pass 0 on one block of rows. X^T X: for u8 codes in float, exact while
 * rows * maxcode^2 <= 2^24 (see exact_rows), then added to the double
 * triangle; for f32 X in double. The cross products with z0 in double, so
 * that the linear loss, computed from these sums, is exact to double
 * rounding. */
static void stats_rows(fit_state *f, block_job *job)
{
    int d = (int)f->d, C = (int)f->C, n = (int)job->bt.n, i;
    int64_t r0;
    if (job->bt.xdt == TSQ_DTYPE_U8) {
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0f, f->xf, d, 0.0f, f->gf, d);
        for (i = 0; i < d; i++)
            add_into(f->gram + (size_t)i * d + i, f->gf + (size_t)i * d + i, d - i);
    }
    for (r0 = 0; r0 < n; r0 += DOUBLE_ROWS) {
        int m = n - r0 < DOUBLE_ROWS ? (int)(n - r0) : DOUBLE_ROWS;
        rows_to_double(f, job, r0, m);
        if (job->bt.xdt != TSQ_DTYPE_U8)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, m, 1.0, f->xd, d, 1.0, f->gram,
                        d);
        cblas_dgemv(CblasRowMajor, CblasTrans, m, d, 1.0, f->xd, d, f->ones, 1, 1.0, f->colsum, 1);
        if (f->target != TARGET_XW)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, C, m, 1.0, f->xd, d, f->td, C,
                        1.0, f->g0, C);
    }
}

static void eval_rows(fit_state *f, block_job *job)
{
    int d = (int)f->d, C = (int)f->C, n = (int)job->bt.n;
    double *into[PART_SERIES] = {f->obj, f->zsum, f->zsq, f->zcost};
    if (job->bt.ydt == TSQ_DTYPE_F32) { /* validated integral codes <= 255 */
        const float *y = job->bt.y;
        int64_t i;
        for (i = 0; i < (int64_t)n * C; i++)
            f->yc[i] = (uint8_t)y[i];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, d, 1.0f, job->xf, d, f->wf, C,
                0.0f, f->vf, C);
    tsq__parallel_for(threads_for(f, (int64_t)n * C), job->nblocks, eval_block, job);
    reduce_parts(f, job->nblocks, into, f->zpass ? PART_SERIES : 1);
    if (f->zpass) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, C, n, 1.0f, job->xf, d, f->zf, C,
                    0.0f, f->gf, C);
        add_into(f->g, f->gf, (int64_t)d * C);
    }
}

/* Rows per block for pass 0 with u8 X: the float X^T X of a block stays
 * exact while rows * maxcode^2 <= 2^24. */
static int64_t exact_rows(const batch *bt, int64_t d, int64_t chunk)
{
    const uint8_t *x = bt->x;
    int64_t i, n = bt->n * d, top = 0, lim;
    for (i = 0; i < n; i++)
        if (x[i] > top)
            top = x[i];
    if (top == 0)
        return chunk;
    lim = ((int64_t)1 << 24) / (top * top);
    return lim < chunk ? (lim < 1 ? 1 : lim) : chunk;
}

static void feed_rows(fit_state *f, const batch *bt)
{
    int64_t chunk = f->chunk, first;
    if (f->pass == 0 && bt->xdt == TSQ_DTYPE_U8)
        chunk = exact_rows(bt, f->d, chunk);
    for (first = 0; first < bt->n; first += chunk) {
        block_job job;
        int64_t n = bt->n - first < chunk ? bt->n - first : chunk;
        size_t xsz = bt->xdt == TSQ_DTYPE_U8 ? 1 : sizeof(float);
        job.f = f;
        job.bt = *bt;
        job.bt.n = n;
        job.bt.x = (const unsigned char *)bt->x + (size_t)(first * f->d) * xsz;
        if (bt->y)
            job.bt.y = (const unsigned char *)bt->y +
                       (size_t)(first * f->C) * (bt->ydt == TSQ_DTYPE_U8 ? 1 : sizeof(float));
        if (bt->p)
            job.bt.p = bt->p + first * f->C;
        split_blocks(&job, n);
        if (bt->xdt == TSQ_DTYPE_U8) /* conversion is about 8 times cheaper per element */
            tsq__parallel_for(threads_for(f, n * f->d / 8), job.nblocks, convert_block, &job);
        job.xf = bt->xdt == TSQ_DTYPE_U8 ? f->xf : job.bt.x;
        if (f->pass == 0)
            stats_rows(f, &job);
        else
            eval_rows(f, &job);
        f->rows += (double)n;
    }
}

tsq_status tsq_regressor_feed(tsq_regressor *reg, const tsq_tensor *X, const tsq_tensor *Y,
                              const tsq_tensor *P)
{
    batch bt;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "regressor_feed: no fit in progress (tsq_regressor_begin first)");
    st = check_batch(reg, "regressor_feed", X, Y, P, &bt);
    if (st != TSQ_OK)
        return st;
    feed_rows(reg->fit, &bt);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* The end of a pass: start, rounds, best iterate, history              */
/* ------------------------------------------------------------------ */

static tsq__gram gram_of(const fit_state *f)
{
    tsq__gram g;
    g.m = f->gram;
    g.colsum = f->colsum;
    g.rows = f->rows0;
    g.d = f->d;
    g.offset = f->opt.offset;
    return g;
}

/* The target of round `round`'s updates: z0 for linear rounds, the z of
 * the pass for z-step rounds. */
typedef struct round_job {
    fit_state *f;
    tsq__gram g;
    const double *xtz, *zsum, *zsq;
    void *lowbit;      /* start: one scratch per task */
    size_t lowbit_bytes;
    const double *w0;  /* start: d x C weights to approximate */
    int64_t tasks;
} round_job;

static void column(const double *m, int64_t d, int64_t C, int64_t c, double *out)
{
    int64_t j;
    for (j = 0; j < d; j++)
        out[j] = m[j * C + c];
}

static void update_channel(void *arg, int64_t c)
{
    round_job *job = arg;
    fit_state *f = job->f;
    int64_t d = f->d, changes;
    double *t = f->t + c * d, *x = f->r + c * 2 * d, alpha0 = f->alpha[c], b0 = f->b[c];
    double tol = f->opt.tol;
    int8_t *w = f->w + c * d;
    column(job->xtz, d, f->C, c, x);
    tsq__centre_target(&job->g, x, job->zsum[c], t);
    changes = tsq__channel_round(&job->g, t, &f->opt.alphabet, f->opt.sweeps, w, &f->alpha[c],
                                 f->r + c * 2 * d, f->w_try + c * d);
    f->b[c] = tsq__profile_offset(&job->g, job->zsum[c], w, f->alpha[c]);
    f->moved[c] = changes > 0 || fabs(f->alpha[c] - alpha0) > tol * alpha0 ||
                  fabs(f->b[c] - b0) > tol * (fabs(b0) + alpha0);
}

static void start_channels(void *arg, int64_t task)
{
    round_job *job = arg;
    fit_state *f = job->f;
    void *scratch = (unsigned char *)job->lowbit + (size_t)task * job->lowbit_bytes;
    int64_t c;
    for (c = task; c < f->C; c += job->tasks) {
        tsq__lowbit_approx(&f->opt.alphabet, job->w0 + c, f->d, f->C, f->w + c * f->d,
                           &f->alpha[c], scratch);
        f->b[c] = tsq__profile_offset(&job->g, job->zsum[c], f->w + c * f->d, f->alpha[c]);
    }
}

typedef struct linear_job {
    const fit_state *f;
    const tsq__gram *g;
    const double *xtz, *zsum, *zsq;
} linear_job;

static void linear_channel(void *arg, int64_t c)
{
    const linear_job *job = arg;
    const fit_state *f = job->f;
    int64_t d = f->d;
    column(job->xtz, d, f->C, c, f->t + c * d);
    f->lin[c] = tsq__linear_objective(job->g, f->t + c * d, job->zsum[c], job->zsq[c],
                                      f->w + c * d, f->alpha[c], f->b[c]);
}

/* Sum over channels of the linear objective against (xtz, zsum, zsq).
 * Each channel costs a d x d quadratic form: spread over the threads, and
 * summed in channel order, so the total does not depend on them. */
static double linear_total(const fit_state *f, const tsq__gram *g, const double *xtz,
                           const double *zsum, const double *zsq, double *per_channel)
{
    linear_job job;
    int64_t c;
    double total = 0.0;
    job.f = f;
    job.g = g;
    job.xtz = xtz;
    job.zsum = zsum;
    job.zsq = zsq;
    tsq__parallel_for(threads_for(f, f->C * f->d * f->d), f->C, linear_channel, &job);
    for (c = 0; c < f->C; c++) {
        if (per_channel)
            per_channel[c] = f->lin[c];
        total += f->lin[c];
    }
    return total;
}

/* Iterate h_count has objective obj[] per channel: record it, keep the best
 * per channel, extend the history. */
static void record_iterate(fit_state *f, const double *obj, double relaxed, double lambda)
{
    int64_t c, d = f->d;
    double total = 0.0, best = 0.0;
    int32_t r = f->h_count;
    for (c = 0; c < f->C; c++) {
        total += obj[c];
        if (obj[c] < f->best_obj[c]) {
            f->best_obj[c] = obj[c];
            f->best_alpha[c] = f->alpha[c];
            f->best_b[c] = f->b[c];
            memcpy(f->best_w + c * d, f->w + c * d, (size_t)d);
        }
        best += f->best_obj[c];
    }
    f->h_obj[r] = total;
    f->h_best[r] = best;
    f->h_relax[r] = relaxed;
    f->h_lambda[r] = lambda;
    f->h_count = r + 1;
}

/* The fit ends early after a round that changed no weight and moved no
 * alpha or b by more than the tolerance (tolerance 0: never). The true
 * objective is no guide here: it is piecewise constant in alpha and b, and
 * the z-steps often move them for several rounds before a level boundary
 * is crossed and the objective drops. */
static int stalled(const fit_state *f)
{
    int64_t c;
    if (f->opt.tol <= 0.0)
        return 0;
    for (c = 0; c < f->C; c++)
        if (f->moved[c])
            return 0;
    return 1;
}

/* Rounds `round` of updates on all channels (parallel over channels). */
static void run_round(fit_state *f, const tsq__gram *g, const double *xtz, const double *zsum,
                      const double *zsq)
{
    round_job job;
    memset(&job, 0, sizeof job);
    job.f = f;
    job.g = *g;
    job.xtz = xtz;
    job.zsum = zsum;
    job.zsq = zsq;
    tsq__parallel_for(f->threads, f->C, update_channel, &job);
}

/* Prepares pass k: whether it takes a z-step, lambda, w as floats. */
static void setup_pass(fit_state *f, int32_t k)
{
    int64_t c, j, C = f->C, d = f->d;
    int32_t zround = k - f->opt.linear_rounds;
    f->pass = k;
    f->zpass = zround >= 1 && k <= f->opt.rounds;
    f->lambda = f->zpass ? f->opt.lambda0 * pow(f->opt.growth, zround - 1) : 0.0;
    for (c = 0; c < C; c++) {
        f->af[c] = (float)f->alpha[c];
        f->bf[c] = (float)f->b[c];
        for (j = 0; j < d; j++)
            f->wf[j * C + c] = (float)f->w[c * d + j];
        if (f->zpass)
            tsq__zstep_bins(&f->q[c], f->opt.margin * f->q[c].delta, f->zlo + c * f->nbins,
                            f->zhi + c * f->nbins);
    }
    reset_pass_sums(f);
}

/* End of pass 0 for the target z0 = X W_init (+ beta): its sums follow
 * from X^T X and s, so it needs no product over the data. */
static void derive_xw_target(fit_state *f)
{
    int64_t d = f->d, C = f->C, j, c;
    double *w = f->t; /* d x C doubles fit in the C x d scratch */
    for (j = 0; j < d * C; j++)
        w[j] = f->w_init[j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)C, (int)d, 1.0, f->gram,
                (int)d, w, (int)C, 0.0, f->g0, (int)C);
    for (c = 0; c < C; c++) {
        double s = 0.0, q = 0.0, beta;
        for (j = 0; j < d; j++) {
            s += f->colsum[j] * w[j * C + c];
            q += w[j * C + c] * f->g0[j * C + c];
        }
        beta = shifts_xw(f) ? (f->ysum[c] - s) / f->rows0 : 0.0;
        for (j = 0; j < d; j++)
            f->g0[j * C + c] += f->colsum[j] * beta;
        f->z0sum[c] = s + f->rows0 * beta;
        f->z0sq[c] = q + 2.0 * beta * s + f->rows0 * beta * beta;
    }
}

/* The start iterate: the exact low-bit approximation of W_init, or of the
 * least-squares solution for z0 when W_init is NULL. */
static tsq_status start_iterate(tsq_regressor *reg, const char *where, const tsq__gram *g)
{
    fit_state *f = reg->fit;
    tsq_context *ctx = reg->obj.ctx;
    int64_t d = f->d, C = f->C, c, j;
    round_job job;
    double *w0 = f->t, *m_work = NULL; /* d x C doubles in the C x d scratch */
    memset(&job, 0, sizeof job);
    if (f->w_init) {
        for (j = 0; j < d * C; j++)
            w0[j] = f->w_init[j];
    } else {
        /* The centred target of every channel, then M W = T in place. */
        for (j = 0; j < d; j++)
            for (c = 0; c < C; c++)
                w0[j * C + c] = g->offset ? f->g0[j * C + c] - f->colsum[j] * f->z0sum[c] / g->rows
                                          : f->g0[j * C + c];
        m_work = tsq__alloc(ctx, (size_t)(d * d) * sizeof(double));
        if (!m_work)
            return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        if (!tsq__least_squares(g->m, d, w0, C, m_work)) {
            tsq__free(ctx, m_work);
            return tsq__fail(&reg->obj, TSQ_ERR_INTERNAL,
                             "%s: the least-squares start failed to factorise X^T X", where);
        }
        tsq__free(ctx, m_work);
    }
    job.f = f;
    job.g = *g;
    job.zsum = f->z0sum;
    job.w0 = w0;
    job.tasks = f->threads < C ? f->threads : C;
    if (job.tasks < 1)
        job.tasks = 1;
    job.lowbit_bytes = align64(tsq__lowbit_scratch_bytes(d));
    job.lowbit = tsq__alloc(ctx, job.lowbit_bytes * (size_t)job.tasks);
    if (!job.lowbit)
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    tsq__parallel_for(job.tasks, job.tasks, start_channels, &job);
    tsq__free(ctx, job.lowbit);
    return TSQ_OK;
}

static void finish(tsq_regressor *reg)
{
    fit_state *f = reg->fit;
    f->status = FIT_DONE;
    tsq__free(reg->obj.ctx, f->work); /* statistics and scratch; results stay */
    f->work = NULL;
}

static void abandon(tsq_regressor *reg)
{
    fit_free(reg->obj.ctx, reg->fit);
    reg->fit = NULL;
}

/* The linear loss: every round and objective from the statistics. */
static void run_linear(fit_state *f, const tsq__gram *g)
{
    double *obj = f->zcost; /* per-channel objectives */
    int32_t r;
    double total = linear_total(f, g, f->g0, f->z0sum, f->z0sq, obj);
    record_iterate(f, obj, total, 0.0);
    for (r = 1; r <= f->opt.rounds; r++) {
        run_round(f, g, f->g0, f->z0sum, f->z0sq);
        total = linear_total(f, g, f->g0, f->z0sum, f->z0sq, obj);
        record_iterate(f, obj, total, 0.0);
        if (stalled(f))
            break;
    }
}

static tsq_status end_first_pass(tsq_regressor *reg, const char *where, int32_t *done)
{
    fit_state *f = reg->fit;
    int64_t d = f->d, i, j;
    double trace = 0.0;
    tsq__gram g;
    tsq_status st;
    if (f->rows < 1.0) {
        abandon(reg);
        return tsq__fail(&reg->obj, TSQ_ERR_NO_DATA, "%s: the pass saw no rows", where);
    }
    for (i = 0; i < d; i++) {
        trace += f->gram[i * d + i];
        for (j = i + 1; j < d; j++)
            f->gram[j * d + i] = f->gram[i * d + j];
    }
    if (!(trace > 0.0)) {
        abandon(reg);
        return tsq__fail(&reg->obj, TSQ_ERR_NO_DATA, "%s: X is all zero: nothing to fit", where);
    }
    f->rows0 = f->rows;
    if (f->target == TARGET_XW)
        derive_xw_target(f);
    if (f->opt.offset) /* centre: X^T X - s s^T / N (TSQ.md "Centre it") */
        for (i = 0; i < d; i++)
            for (j = 0; j < d; j++)
                f->gram[i * d + j] -= f->colsum[i] * f->colsum[j] / f->rows0;
    g = gram_of(f);
    st = start_iterate(reg, where, &g);
    if (st != TSQ_OK) {
        abandon(reg);
        return st;
    }
    if (f->opt.loss == TSQ_LOSS_LINEAR) {
        run_linear(f, &g);
        finish(reg);
        *done = 1;
        return TSQ_OK;
    }
    /* Quantized loss: entry 0's relaxed value is its linear fit to z0; its
     * true objective comes from pass 1. */
    f->h_relax[0] = linear_total(f, &g, f->g0, f->z0sum, f->z0sq, NULL);
    setup_pass(f, 1);
    *done = 0;
    return TSQ_OK;
}

static tsq_status end_later_pass(tsq_regressor *reg, const char *where, int32_t *done)
{
    fit_state *f = reg->fit;
    int32_t k = f->pass, it = k - 1; /* this pass evaluated iterate k-1 */
    tsq__gram g = gram_of(f);
    double relaxed;
    int64_t c;
    if (f->rows != f->rows0) {
        double seen = f->rows;
        abandon(reg);
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                         "%s: pass %d saw %.0f rows, the first pass %.0f", where, (int)k, seen,
                         g.rows);
    }
    for (c = 0; c < f->C; c++) { /* counts of squared code errors -> output units */
        double delta2 = (double)f->q[c].delta * f->q[c].delta;
        f->obj[c] *= delta2;
        f->zcost[c] *= delta2;
    }
    relaxed = f->h_relax[it];
    record_iterate(f, f->obj, relaxed, it == 0 ? 0.0 : f->h_lambda[it]);
    if (it == f->opt.rounds) {
        finish(reg);
        *done = 1;
        return TSQ_OK;
    }
    /* Round k's update, against z0 (linear round) or this pass's z. */
    if (f->zpass) {
        run_round(f, &g, f->g, f->zsum, f->zsq);
        relaxed = 0.0;
        for (c = 0; c < f->C; c++)
            relaxed += f->zcost[c];
        relaxed += f->lambda * linear_total(f, &g, f->g, f->zsum, f->zsq, NULL);
    } else {
        run_round(f, &g, f->g0, f->z0sum, f->z0sq);
        relaxed = linear_total(f, &g, f->g0, f->z0sum, f->z0sq, NULL);
    }
    f->h_relax[k] = relaxed;
    f->h_lambda[k] = f->zpass ? f->lambda : 0.0;
    if (stalled(f) && f->zpass) {
        /* Iterate k is iterate k-1 up to the tolerance: already evaluated. */
        finish(reg);
        *done = 1;
        return TSQ_OK;
    }
    setup_pass(f, k + 1);
    *done = 0;
    return TSQ_OK;
}

static tsq_status end_pass(tsq_regressor *reg, const char *where, int32_t *done)
{
    return reg->fit->pass == 0 ? end_first_pass(reg, where, done)
                               : end_later_pass(reg, where, done);
}

tsq_status tsq_regressor_end_pass(tsq_regressor *reg, int32_t *done)
{
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!done)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_end_pass: done is NULL");
    if (!fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_end_pass: no fit in progress");
    st = end_pass(reg, "regressor_end_pass", done);
    if (st == TSQ_OK)
        tsq__clear(&reg->obj);
    return st;
}

/* ------------------------------------------------------------------ */
/* Statistics exchange                                                 */
/* ------------------------------------------------------------------ */

/* The pass's sums as a list of segments; the Gram matrix travels as its
 * upper triangle (row by row). */
typedef struct segment {
    double *v;
    int64_t n;
} segment;

static int stats_segments(fit_state *f, segment *seg, int64_t *total)
{
    int ns = 0, i;
    int64_t d = f->d, C = f->C;
    segment *s = seg;
#define SEG(ptr, count) (s[ns].v = (ptr), s[ns].n = (count), ns++)
    SEG(&f->rows, 1);
    if (f->pass == 0) {
        SEG(f->colsum, d);
        SEG(f->gram, d * (d + 1) / 2); /* the upper triangle, see stats_move */
        if (f->target != TARGET_XW) {
            SEG(f->g0, d * C);
            SEG(f->z0sum, C);
            SEG(f->z0sq, C);
        } else if (shifts_xw(f)) {
            SEG(f->ysum, C);
        }
    } else {
        SEG(f->obj, C);
        if (f->zpass) {
            SEG(f->g, d * C);
            SEG(f->zsum, C);
            SEG(f->zsq, C);
            SEG(f->zcost, C);
        }
    }
#undef SEG
    *total = 0;
    for (i = 0; i < ns; i++)
        *total += s[i].n;
    return ns;
}

static void move_value(double *v, double *buf, int32_t mode)
{
    if (mode == STATS_EXPORT)
        *buf = *v;
    else if (mode == TSQ_STATS_ADD)
        *v += *buf;
    else
        *v = *buf;
}

/* Moves the sums to or from buf: EXPORT copies out, ADD adds in, REPLACE
 * copies in. */
static void stats_move(fit_state *f, double *buf, int32_t mode)
{
    segment seg[8];
    int64_t total, pos = 0, i, j, d = f->d;
    int ns = stats_segments(f, seg, &total), s;
    for (s = 0; s < ns; s++) {
        if (f->pass == 0 && seg[s].v == f->gram) {
            for (i = 0; i < d; i++)
                for (j = i; j < d; j++)
                    move_value(f->gram + i * d + j, buf + pos++, mode);
        } else {
            for (i = 0; i < seg[s].n; i++)
                move_value(seg[s].v + i, buf + pos++, mode);
        }
    }
}

static tsq_status stats_common(const tsq_regressor *reg, const char *where, int64_t *size)
{
    segment seg[8];
    if (!fit_running(reg))
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_STATE, "%s: no pass in progress",
                         where);
    stats_segments(reg->fit, seg, size); /* reads only */
    return TSQ_OK;
}

tsq_status tsq_regressor_stats_size(const tsq_regressor *reg, int64_t *count)
{
    if (!reg || !count)
        return TSQ_ERR_NULL;
    return stats_common(reg, "regressor_stats_size", count);
}

tsq_status tsq_regressor_stats_export(const tsq_regressor *reg, double *out, int64_t count)
{
    int64_t size;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_NULL,
                         "regressor_stats_export: out is NULL");
    st = stats_common(reg, "regressor_stats_export", &size);
    if (st != TSQ_OK)
        return st;
    if (count != size)
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_stats_export: count %lld, the pass has %lld sums",
                         (long long)count, (long long)size);
    stats_move(reg->fit, out, STATS_EXPORT);
    return TSQ_OK;
}

tsq_status tsq_regressor_stats_import(tsq_regressor *reg, const double *in, int64_t count,
                                      int32_t mode)
{
    int64_t size, i;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!in)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_stats_import: in is NULL");
    if (mode != TSQ_STATS_ADD && mode != TSQ_STATS_REPLACE)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID, "regressor_stats_import: unknown mode %d",
                         (int)mode);
    st = stats_common(reg, "regressor_stats_import", &size);
    if (st != TSQ_OK)
        return st;
    if (count != size)
        return tsq__fail(&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_stats_import: count %lld, the pass has %lld sums",
                         (long long)count, (long long)size);
    for (i = 0; i < count; i++)
        if (!isfinite(in[i]))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE,
                             "regressor_stats_import: element %lld is NaN or Inf", (long long)i);
    stats_move(reg->fit, (double *)in, mode);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */

static tsq_status check_outputs(tsq_regressor *reg, const char *where, tsq_tensor *W_out,
                                tsq_tensor *alpha_out, tsq_tensor *b_out, int64_t d, int64_t C)
{
    tsq_status st;
    if (!W_out || !alpha_out)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                         W_out ? "alpha_out" : "W_out");
    st = tsq__expect_dtype(&reg->obj, where, "W_out", W_out, TSQ_DTYPE_I8);
    if (st == TSQ_OK)
        st = check_matrix(reg, where, "W_out (d x C)", W_out, d, C);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&reg->obj, where, "alpha_out", alpha_out, TSQ_DTYPE_F32);
    if (st == TSQ_OK && (alpha_out->ndim != 1 || alpha_out->shape[0] != C))
        st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: alpha_out must be a vector of C = %lld",
                       where, (long long)C);
    if (st == TSQ_OK && b_out) {
        st = tsq__expect_dtype(&reg->obj, where, "b_out", b_out, TSQ_DTYPE_F32);
        if (st == TSQ_OK && (b_out->ndim != 1 || b_out->shape[0] != C))
            st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: b_out must be a vector of C = %lld",
                           where, (long long)C);
    }
    return st;
}

static double best_total(const fit_state *f)
{
    double s = 0.0;
    int64_t c;
    for (c = 0; c < f->C; c++)
        s += f->best_obj[c];
    return s;
}

static void write_results(const fit_state *f, tsq_tensor *W_out, tsq_tensor *alpha_out,
                          tsq_tensor *b_out, double *objective)
{
    int64_t d = f->d, C = f->C, c, j;
    int8_t *w = W_out->data;
    float *a = alpha_out->data, *b = b_out ? b_out->data : NULL;
    for (c = 0; c < C; c++) {
        for (j = 0; j < d; j++)
            w[j * C + c] = f->best_w[c * d + j];
        a[c] = (float)f->best_alpha[c];
        if (b)
            b[c] = (float)f->best_b[c];
    }
    if (objective)
        *objective = best_total(f);
}

/* alpha and b are computed in double: with inputs of extreme magnitude
 * (e.g. denormal X, where alpha ~ 1/|X|) they may not fit in float. Refuse
 * rather than hand out an infinite scale. */
static tsq_status check_results_fit_float(tsq_regressor *reg, const char *where)
{
    const fit_state *f = reg->fit;
    int64_t c;
    for (c = 0; c < f->C; c++)
        if (!(fabs(f->best_alpha[c]) <= FLT_MAX) || !(fabs(f->best_b[c]) <= FLT_MAX))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE,
                             "%s: channel %lld: alpha %g or b %g overflows float (inputs of "
                             "extreme magnitude?)",
                             where, (long long)c, f->best_alpha[c], f->best_b[c]);
    return TSQ_OK;
}

static int fit_done(const tsq_regressor *reg)
{
    return reg->fit && reg->fit->status == FIT_DONE;
}

tsq_status tsq_regressor_result(tsq_regressor *reg, tsq_tensor *W_out, tsq_tensor *alpha_out,
                                tsq_tensor *b_out, double *objective)
{
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!fit_done(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_result: no finished fit");
    st = check_outputs(reg, "regressor_result", W_out, alpha_out, b_out, reg->fit->d,
                       reg->fit->C);
    if (st == TSQ_OK)
        st = check_results_fit_float(reg, "regressor_result");
    if (st != TSQ_OK)
        return st;
    write_results(reg->fit, W_out, alpha_out, b_out, objective);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_history(const tsq_regressor *reg, int32_t series, double *values,
                                 int32_t capacity, int32_t *count)
{
    const fit_state *f;
    const double *src;
    if (!reg || !count)
        return TSQ_ERR_NULL;
    f = reg->fit;
    switch (series) {
    case TSQ_HISTORY_OBJECTIVE: src = f ? f->h_obj : NULL; break;
    case TSQ_HISTORY_BEST: src = f ? f->h_best : NULL; break;
    case TSQ_HISTORY_RELAXED: src = f ? f->h_relax : NULL; break;
    case TSQ_HISTORY_LAMBDA: src = f ? f->h_lambda : NULL; break;
    default:
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_INVALID,
                         "regressor_history: unknown series %d", (int)series);
    }
    *count = f ? f->h_count : 0;
    if (!values || *count == 0)
        return TSQ_OK;
    if (capacity < *count)
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_history: capacity %d < %d entries", (int)capacity,
                         (int)*count);
    memcpy(values, src, (size_t)*count * sizeof values[0]);
    return TSQ_OK;
}

tsq_status tsq_regressor_channel_objectives(const tsq_regressor *reg, double *out, int64_t count)
{
    if (!reg)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_NULL,
                         "regressor_channel_objectives: out is NULL");
    if (!fit_done(reg))
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_STATE,
                         "regressor_channel_objectives: no finished fit");
    if (count != reg->fit->C)
        return tsq__fail((tsq__object *)&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_channel_objectives: count %lld, the layer has C = %lld",
                         (long long)count, (long long)reg->fit->C);
    memcpy(out, reg->fit->best_obj, (size_t)count * sizeof out[0]);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* tsq_fit_transform                                                   */
/* ------------------------------------------------------------------ */

tsq_status tsq_fit_transform(tsq_regressor *reg, const tsq_tensor *X, const tsq_tensor *Y,
                             const tsq_tensor *W_init, const tsq_tensor *P, tsq_tensor *W_out,
                             tsq_tensor *alpha_out, tsq_tensor *b_out, double *objective)
{
    const char *where = "fit_transform";
    fit_state *fresh = NULL, *previous;
    int64_t d, C;
    int32_t done = 0;
    batch bt;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "%s: a streamed fit is in progress on this regressor", where);
    if (!X)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: X is NULL", where);
    if (!W_out)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: W_out is NULL", where);
    if (X->ndim != 2 || W_out->ndim != 2)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: X (N x d) and W_out (d x C) must be "
                         "matrices", where);
    d = X->shape[1];
    C = W_out->shape[1];
    st = check_outputs(reg, where, W_out, alpha_out, b_out, d, C);
    if (st == TSQ_OK)
        st = check_w_init(reg, where, W_init, d, C);
    if (st != TSQ_OK)
        return st;
    /* The batch checks read the new fit's channel quantizers: check with
     * it in place, and put the previous fit back if the data are refused. */
    st = begin_fit(reg, where, d, C, W_init, P != NULL, &fresh);
    if (st != TSQ_OK)
        return st;
    previous = reg->fit;
    reg->fit = fresh;
    st = check_batch(reg, where, X, Y, P, &bt);
    if (st != TSQ_OK) {
        fit_free(reg->obj.ctx, fresh);
        reg->fit = previous;
        return st;
    }
    fit_free(reg->obj.ctx, previous);
    while (!done) {
        feed_rows(reg->fit, &bt);
        bt.p = NULL;
        st = end_pass(reg, where, &done);
        if (st != TSQ_OK)
            return st; /* end_pass abandoned the fit */
    }
    st = check_results_fit_float(reg, where);
    if (st != TSQ_OK)
        return st;
    write_results(reg->fit, W_out, alpha_out, b_out, objective);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}
