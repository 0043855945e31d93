/* The sparse activation quantizer of TSQ (TSQ.md, "Step 1"): the handle,
 * its options, observe/fit, forward/encode/decode/backward, tsq_learn_codes
 * and the serialized form. The formula and the encode kernels live in
 * kernels/encode.h, the statistics in activation_histogram.c, the fit in
 * quantizer_fit.c. */
#include "quant/activation_histogram.h"
#include "quant/quant_internal.h"
#include "io/crc32.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_EPS_MODE TSQ_EPS_JOINT
#define DEFAULT_EPS 0.32      /* TSQ's 2-bit demo, on batch-normalised inputs */
#define DEFAULT_SPARSITY 0.63 /* what eps = 0.32 zeroes of unit-Gaussian inputs */
#define MAX_CHANNELS INT32_MAX
/* Encode work is split into pieces of this many elements across threads. */
#define ENCODE_CHUNK ((int64_t)1 << 16)
#define PARALLEL_MIN_ELEMENTS ((int64_t)1 << 18)

struct tsq_quantizer {
    tsq__object obj;
    int32_t bits;
    int32_t eps_mode;
    int32_t sub_bits;   /* histogram resolution option; 0 = automatic */
    int32_t use_avx2;   /* from the CPU detection at creation */
    int64_t channels;   /* 0: per tensor */
    int64_t nparams;    /* max(1, channels) */
    int64_t nset;       /* channels with parameters (delta > 0) */
    double eps_fixed;
    double sparsity;
    float *eps;         /* nparams each; delta 0 = no parameters yet */
    float *delta;
    float *inv_delta;   /* 1.0f / delta, as the formula needs it */
    tsq__act_hist *hist; /* NULL until the first observation */
};

static int32_t max_code(const tsq_quantizer *q) { return (1 << q->bits) - 1; }

/* The resolution a new histogram gets. */
static int32_t hist_sub_bits(const tsq_quantizer *q)
{
    return q->sub_bits ? q->sub_bits : TSQ__HIST_SUB_BITS_AUTO(q->bits);
}

static int64_t count_nonfinite(const tsq_quantizer *q, const float *x, int64_t n)
{
    return q->use_avx2 ? tsq__count_nonfinite_avx2(x, n) : tsq__count_nonfinite_c(x, n);
}

/* ------------------------------------------------------------------ */
/* Handle                                                               */
/* ------------------------------------------------------------------ */

static void clear_params(tsq_quantizer *q)
{
    memset(q->eps, 0, (size_t)q->nparams * sizeof *q->eps);
    memset(q->delta, 0, (size_t)q->nparams * sizeof *q->delta);
    memset(q->inv_delta, 0, (size_t)q->nparams * sizeof *q->inv_delta);
    q->nset = 0;
}

tsq_status tsq_quantizer_create(tsq_context *ctx, int32_t bits, int64_t channels,
                                tsq_quantizer **out)
{
    tsq_quantizer *q;
    size_t np;
    if (!out)
        return ctx ? tsq__fail(&ctx->obj, TSQ_ERR_NULL, "quantizer_create: out is NULL")
                   : TSQ_ERR_NULL;
    *out = NULL;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (bits < 1 || bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "quantizer_create: bits is %d, must be 1..8", (int)bits);
    if (channels < 0 || channels > MAX_CHANNELS)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "quantizer_create: channels is %lld, must be 0 (per tensor) .. %d",
                         (long long)channels, (int)MAX_CHANNELS);
    np = (size_t)(channels > 0 ? channels : 1);
    q = tsq__calloc(ctx, 1, sizeof *q);
    if (!q)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "quantizer_create: out of memory");
    tsq__object_init(&q->obj, ctx);
    q->eps = tsq__calloc(ctx, np, sizeof *q->eps);
    q->delta = tsq__calloc(ctx, np, sizeof *q->delta);
    q->inv_delta = tsq__calloc(ctx, np, sizeof *q->inv_delta);
    if (!q->eps || !q->delta || !q->inv_delta) {
        tsq_quantizer_destroy(q);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY,
                         "quantizer_create: out of memory for %llu channel(s)",
                         (unsigned long long)np);
    }
    q->bits = bits;
    q->eps_mode = DEFAULT_EPS_MODE;
    q->sub_bits = 0;
    q->use_avx2 = (tsq__cpu_detect() & TSQ_CPU_AVX2) != 0;
    q->channels = channels;
    q->nparams = (int64_t)np;
    q->eps_fixed = DEFAULT_EPS;
    q->sparsity = DEFAULT_SPARSITY;
    tsq__clear(&ctx->obj);
    *out = q;
    return TSQ_OK;
}

void tsq_quantizer_destroy(tsq_quantizer *q)
{
    tsq_context *ctx;
    if (!q)
        return;
    ctx = q->obj.ctx;
    tsq__hist_destroy(ctx, q->hist);
    tsq__free(ctx, q->eps);
    tsq__free(ctx, q->delta);
    tsq__free(ctx, q->inv_delta);
    tsq__free(ctx, q);
}

const char *tsq_quantizer_errmsg(const tsq_quantizer *q)
{
    return q ? q->obj.msg : "no quantizer";
}

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

typedef struct param_info {
    int32_t key;
    const char *name;
    double lo, hi;
    int integral;
    int read_only;
} param_info;

static const param_info params[] = {
    {TSQ_QUANTIZER_BITS, "bits", 1, 8, 1, 0},
    {TSQ_QUANTIZER_EPS_MODE, "eps_mode", TSQ_EPS_FIXED, TSQ_EPS_PLAIN, 1, 0},
    {TSQ_QUANTIZER_EPS, "eps", 0, FLT_MAX, 0, 0},
    {TSQ_QUANTIZER_SPARSITY, "sparsity", 0, 1, 0, 0},
    {TSQ_QUANTIZER_HIST_RESOLUTION, "hist_resolution", 0, TSQ__HIST_SUB_BITS_MAX, 1, 0},
    {TSQ_QUANTIZER_CHANNELS, "channels", 0, MAX_CHANNELS, 1, 1},
    {TSQ_QUANTIZER_FITTED, "fitted", 0, 1, 1, 1},
    {TSQ_QUANTIZER_OBSERVED, "observed", 0, 9007199254740992.0 /* 2^53 */, 1, 1},
};

static const param_info *find_param(int32_t key)
{
    size_t i;
    for (i = 0; i < sizeof params / sizeof params[0]; i++)
        if (params[i].key == key)
            return &params[i];
    return NULL;
}

tsq_status tsq_quantizer_param_bounds(int32_t key, double *lo, double *hi)
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

static double observed_samples(const tsq_quantizer *q)
{
    return q->hist ? tsq__hist_total(q->hist) : 0.0;
}

tsq_status tsq_quantizer_set_param(tsq_quantizer *q, int32_t key, double value)
{
    const param_info *p;
    if (!q)
        return TSQ_ERR_NULL;
    p = find_param(key);
    if (!p)
        return tsq__fail(&q->obj, TSQ_ERR_INVALID, "quantizer_set_param: unknown key %d",
                         (int)key);
    if (p->read_only)
        return tsq__fail(&q->obj, TSQ_ERR_INVALID, "quantizer_set_param: %s is read-only",
                         p->name);
    if (!(value >= p->lo && value <= p->hi)) /* NaN fails here too */
        return tsq__fail(&q->obj, TSQ_ERR_INVALID,
                         "quantizer_set_param: %s = %g is outside %g .. %g", p->name, value,
                         p->lo, p->hi);
    if (p->integral && value != floor(value))
        return tsq__fail(&q->obj, TSQ_ERR_INVALID,
                         "quantizer_set_param: %s must be an integer, got %g", p->name, value);
    switch (key) {
    case TSQ_QUANTIZER_BITS:
        if ((int32_t)value != q->bits) {
            q->bits = (int32_t)value;
            clear_params(q); /* parameters fitted for other levels */
        }
        break;
    case TSQ_QUANTIZER_EPS_MODE: q->eps_mode = (int32_t)value; break;
    case TSQ_QUANTIZER_EPS: q->eps_fixed = value; break;
    case TSQ_QUANTIZER_SPARSITY: q->sparsity = value; break;
    case TSQ_QUANTIZER_HIST_RESOLUTION:
        if ((int32_t)value != q->sub_bits) {
            if (observed_samples(q) > 0.0)
                return tsq__fail(&q->obj, TSQ_ERR_STATE,
                                 "quantizer_set_param: hist_resolution cannot change while "
                                 "statistics are held; call tsq_quantizer_reset first");
            tsq__hist_destroy(q->obj.ctx, q->hist);
            q->hist = NULL;
            q->sub_bits = (int32_t)value;
        }
        break;
    default: break;
    }
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_get_param(const tsq_quantizer *q, int32_t key, double *value)
{
    if (!q || !value)
        return TSQ_ERR_NULL;
    switch (key) {
    case TSQ_QUANTIZER_BITS: *value = q->bits; break;
    case TSQ_QUANTIZER_EPS_MODE: *value = q->eps_mode; break;
    case TSQ_QUANTIZER_EPS: *value = q->eps_fixed; break;
    case TSQ_QUANTIZER_SPARSITY: *value = q->sparsity; break;
    case TSQ_QUANTIZER_HIST_RESOLUTION: *value = q->sub_bits; break;
    case TSQ_QUANTIZER_CHANNELS: *value = (double)q->channels; break;
    case TSQ_QUANTIZER_FITTED: *value = q->nset == q->nparams; break;
    case TSQ_QUANTIZER_OBSERVED: *value = observed_samples(q); break;
    default: return TSQ_ERR_INVALID;
    }
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Argument checks                                                      */
/* ------------------------------------------------------------------ */

/* How a tensor splits into [outer][channels][inner] for this quantizer. */
typedef struct layout {
    int64_t outer, inner, numel;
} layout;

static tsq_status get_layout(tsq_quantizer *q, const char *where, const char *name,
                             const tsq_tensor *t, layout *l)
{
    l->numel = t->numel;
    if (q->channels == 0) {
        l->outer = 1;
        l->inner = t->numel;
        return TSQ_OK;
    }
    if (t->ndim < 2)
        return tsq__fail(&q->obj, TSQ_ERR_SHAPE,
                         "%s: %s has %d dimension(s); a per-channel quantizer needs N x C "
                         "(x H x W)", where, name, (int)t->ndim);
    if (t->shape[1] != q->channels)
        return tsq__fail(&q->obj, TSQ_ERR_SHAPE,
                         "%s: %s has %lld channels (dimension 1), the quantizer has %lld",
                         where, name, (long long)t->shape[1], (long long)q->channels);
    l->outer = t->shape[0];
    l->inner = t->numel / (t->shape[0] * t->shape[1]);
    return TSQ_OK;
}

static void format_shape(const tsq_tensor *t, char *buf, size_t cap)
{
    int32_t i;
    size_t used = 0;
    buf[0] = '\0';
    for (i = 0; i < t->ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? "x" : "",
                                 (long long)t->shape[i]);
}

static tsq_status same_shape(tsq_quantizer *q, const char *where, const char *na,
                             const tsq_tensor *a, const char *nb, const tsq_tensor *b)
{
    char sa[64], sb[64];
    int32_t i;
    int same = a->ndim == b->ndim;
    for (i = 0; same && i < a->ndim; i++)
        same = a->shape[i] == b->shape[i];
    if (same)
        return TSQ_OK;
    format_shape(a, sa, sizeof sa);
    format_shape(b, sb, sizeof sb);
    return tsq__fail(&q->obj, TSQ_ERR_SHAPE, "%s: %s has shape %s but %s has shape %s", where,
                     na, sa, nb, sb);
}

static tsq_status check_finite(tsq_quantizer *q, const char *where, const char *name,
                               const tsq_tensor *t)
{
    int64_t bad = count_nonfinite(q, (const float *)t->data, t->numel);
    if (bad)
        return tsq__fail(&q->obj, TSQ_ERR_NOT_FINITE, "%s: %lld of %lld samples of %s are NaN "
                         "or Inf", where, (long long)bad, (long long)t->numel, name);
    return TSQ_OK;
}

/* dtype f32, the quantizer's layout, finite. */
static tsq_status check_input(tsq_quantizer *q, const char *where, const char *name,
                              const tsq_tensor *x, layout *l)
{
    tsq_status st = tsq__expect_dtype(&q->obj, where, name, x, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = get_layout(q, where, name, x, l);
    if (st == TSQ_OK)
        st = check_finite(q, where, name, x);
    return st;
}

/* An output (or second input) of the given dtype and x's shape. */
static tsq_status check_like(tsq_quantizer *q, const char *where, const char *name,
                             const tsq_tensor *t, int32_t dtype, const char *xname,
                             const tsq_tensor *x)
{
    tsq_status st = tsq__expect_dtype(&q->obj, where, name, t, dtype);
    return st == TSQ_OK ? same_shape(q, where, xname, x, name, t) : st;
}

static tsq_status require_fitted(tsq_quantizer *q, const char *where)
{
    int64_t c;
    if (q->nset == q->nparams)
        return TSQ_OK;
    for (c = 0; c < q->nparams && q->delta[c] > 0.0f; c++)
        ;
    return tsq__fail(&q->obj, TSQ_ERR_STATE,
                     "%s: the quantizer is not fitted (channel %lld has no parameters); "
                     "fit it or set its channels first", where, (long long)c);
}

/* Why (eps, delta) cannot be a quantizer's parameters, or NULL. */
static const char *param_problem(float eps, float delta, int32_t maxcode)
{
    if (!isfinite(eps) || !isfinite(delta))
        return "is not finite";
    if (eps < 0.0f)
        return "has eps < 0";
    if (!(delta > 0.0f))
        return "has delta <= 0";
    if (!isfinite(1.0f / delta) || !isfinite((float)maxcode * delta))
        return "has a delta whose inverse or top level overflows float";
    return NULL;
}

static void store_param(tsq_quantizer *q, int64_t c, float eps, float delta)
{
    if (!(q->delta[c] > 0.0f))
        q->nset++;
    q->eps[c] = eps;
    q->delta[c] = delta;
    q->inv_delta[c] = 1.0f / delta; /* in float, as quant_internal.h requires */
}

/* ------------------------------------------------------------------ */
/* Statistics and fit                                                   */
/* ------------------------------------------------------------------ */

tsq_status tsq_quantizer_observe(tsq_quantizer *q, const tsq_tensor *x)
{
    static const char *where = "quantizer_observe";
    layout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = check_input(q, where, "x", x, &l);
    if (st != TSQ_OK)
        return st;
    if (!q->hist) {
        q->hist = tsq__hist_create(q->obj.ctx, q->nparams, hist_sub_bits(q));
        if (!q->hist)
            return tsq__fail(&q->obj, TSQ_ERR_NO_MEMORY,
                             "%s: out of memory for the histograms of %lld channel(s)", where,
                             (long long)q->nparams);
    }
    tsq__hist_add(q->hist, (const float *)x->data, l.outer, l.inner);
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_reset(tsq_quantizer *q)
{
    if (!q)
        return TSQ_ERR_NULL;
    if (q->hist)
        tsq__hist_clear(q->hist);
    tsq__clear(&q->obj);
    return TSQ_OK;
}

/* Fitting runs one task per thread, each with its own prefix-sum scratch. */
typedef struct fit_job {
    tsq_quantizer *q;
    const tsq__act_hist *hist;
    double *scratch;        /* ntasks * per_task doubles */
    size_t per_task;
    int64_t ntasks;
    double *error_sum;      /* per channel, or NULL */
    double *zeros;
} fit_job;

static void fit_task(void *arg, int64_t task)
{
    fit_job *job = arg;
    tsq_quantizer *q = job->q;
    double *scratch = job->scratch + (size_t)task * job->per_task;
    tsq__hist_view v;
    int64_t c;
    for (c = task; c < q->nparams; c += job->ntasks) {
        float eps, delta;
        tsq__hist_view_init(job->hist, c, scratch, &v);
        tsq__fit_channel(&v, q->bits, q->eps_mode, q->eps_fixed, q->sparsity, &eps, &delta);
        /* Each task writes only its own channels; nset is settled after. */
        q->eps[c] = eps;
        q->delta[c] = delta;
        q->inv_delta[c] = 1.0f / delta;
        if (job->error_sum)
            tsq__fit_estimate(&v, q->bits, eps, delta, &job->error_sum[c], &job->zeros[c]);
    }
}

/* Fits every channel from hist. With estimates, also writes the histogram's
 * estimate of the error sum and zero count over all channels. Only the
 * allocation can fail, and it comes before any change to q. */
static tsq_status fit_from(tsq_quantizer *q, const char *where, const tsq__act_hist *hist,
                           double *error_sum, double *zeros)
{
    tsq_context *ctx = q->obj.ctx;
    fit_job job;
    size_t total;
    int64_t c;
    job.q = q;
    job.hist = hist;
    job.ntasks = ctx->threads < q->nparams ? ctx->threads : q->nparams;
    if (job.ntasks < 1)
        job.ntasks = 1;
    job.per_task = tsq__hist_scratch_doubles(hist);
    job.error_sum = job.zeros = NULL;
    if (!tsq__mul_size(job.per_task, (size_t)job.ntasks, &total) ||
        !(job.scratch = tsq__calloc(ctx, total, sizeof(double))))
        return tsq__fail(&q->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the fit", where);
    if (error_sum) {
        job.error_sum = tsq__calloc(ctx, 2 * (size_t)q->nparams, sizeof(double));
        if (!job.error_sum) {
            tsq__free(ctx, job.scratch);
            return tsq__fail(&q->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the fit",
                             where);
        }
        job.zeros = job.error_sum + q->nparams;
    }
    tsq__parallel_for(job.ntasks, job.ntasks, fit_task, &job);
    q->nset = q->nparams;
    if (error_sum) {
        *error_sum = *zeros = 0.0;
        for (c = 0; c < q->nparams; c++) {
            *error_sum += job.error_sum[c];
            *zeros += job.zeros[c];
        }
        tsq__free(ctx, job.error_sum);
    }
    tsq__free(ctx, job.scratch);
    return TSQ_OK;
}

static tsq_status require_observed(tsq_quantizer *q, const char *where)
{
    if (observed_samples(q) > 0.0)
        return TSQ_OK;
    return tsq__fail(&q->obj, TSQ_ERR_NO_DATA,
                     "%s: no samples observed; call tsq_quantizer_observe first", where);
}

tsq_status tsq_quantizer_fit(tsq_quantizer *q)
{
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = require_observed(q, "quantizer_fit");
    if (st == TSQ_OK)
        st = fit_from(q, "quantizer_fit", q->hist, NULL, NULL);
    if (st == TSQ_OK)
        tsq__clear(&q->obj);
    return st;
}

/* ------------------------------------------------------------------ */
/* Parameters by hand                                                   */
/* ------------------------------------------------------------------ */

static tsq_status check_channel_index(tsq_quantizer *q, const char *where, int64_t c)
{
    if (c >= 0 && c < q->nparams)
        return TSQ_OK;
    return tsq__fail(&q->obj, TSQ_ERR_INVALID, "%s: channel %lld is outside 0..%lld", where,
                     (long long)c, (long long)(q->nparams - 1));
}

tsq_status tsq_quantizer_set_channel(tsq_quantizer *q, int64_t c, float eps, float delta)
{
    static const char *where = "quantizer_set_channel";
    const char *problem;
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = check_channel_index(q, where, c);
    if (st != TSQ_OK)
        return st;
    problem = param_problem(eps, delta, max_code(q));
    if (problem)
        return tsq__fail(&q->obj, isfinite(eps) && isfinite(delta) ? TSQ_ERR_INVALID
                                                                    : TSQ_ERR_NOT_FINITE,
                         "%s: (eps %g, delta %g) %s", where, (double)eps, (double)delta,
                         problem);
    store_param(q, c, eps, delta);
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_get_channel(const tsq_quantizer *q, int64_t c, float *eps,
                                     float *delta)
{
    tsq_quantizer *mq = (tsq_quantizer *)q; /* only its message changes */
    tsq_status st;
    if (!q || !eps || !delta)
        return TSQ_ERR_NULL;
    st = check_channel_index(mq, "quantizer_get_channel", c);
    if (st != TSQ_OK)
        return st;
    if (!(q->delta[c] > 0.0f))
        return tsq__fail(&mq->obj, TSQ_ERR_STATE,
                         "quantizer_get_channel: channel %lld has no parameters yet",
                         (long long)c);
    *eps = q->eps[c];
    *delta = q->delta[c];
    tsq__clear(&mq->obj);
    return TSQ_OK;
}

int64_t tsq__quantizer_nchannels(const struct tsq_quantizer *q)
{
    return q->channels;
}

tsq_status tsq__quantizer_channel(const struct tsq_quantizer *q, int64_t channel,
                                  int32_t *bits, float *eps, float *delta)
{
    int64_t c = q->channels == 0 ? 0 : channel;
    if (channel < 0 || (q->channels > 0 && channel >= q->channels))
        return TSQ_ERR_INVALID;
    if (q->nset != q->nparams)
        return TSQ_ERR_STATE;
    *bits = q->bits;
    *eps = q->eps[c];
    *delta = q->delta[c];
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Forward, encode, decode, backward                                    */
/* ------------------------------------------------------------------ */

/* Encoding is split into units that threads share: pieces of a per-tensor
 * span, channel spans of an N x C x ... tensor, or rows of an N x C one. */
typedef struct encode_job {
    const tsq_quantizer *q;
    const float *x;
    uint8_t *codes;
    layout l;
    int64_t nunits;
} encode_job;

static void encode_span(const tsq_quantizer *q, const float *x, uint8_t *codes, int64_t n,
                        int64_t c)
{
    if (q->use_avx2)
        tsq__encode_span_avx2(x, codes, n, q->eps[c], q->inv_delta[c], max_code(q));
    else
        tsq__encode_span_c(x, codes, n, q->eps[c], q->inv_delta[c], max_code(q));
}

static void encode_unit(void *arg, int64_t u)
{
    const encode_job *job = arg;
    const tsq_quantizer *q = job->q;
    int64_t start, n;
    if (q->channels == 0) {
        start = u * ENCODE_CHUNK;
        n = job->l.numel - start < ENCODE_CHUNK ? job->l.numel - start : ENCODE_CHUNK;
        encode_span(q, job->x + start, job->codes + start, n, 0);
    } else if (job->l.inner > 1) {
        start = u * job->l.inner;
        encode_span(q, job->x + start, job->codes + start, job->l.inner, u % q->channels);
    } else if (q->use_avx2) {
        start = u * q->channels;
        tsq__encode_row_avx2(job->x + start, job->codes + start, q->channels, q->eps,
                             q->inv_delta, max_code(q));
    } else {
        start = u * q->channels;
        tsq__encode_row_c(job->x + start, job->codes + start, q->channels, q->eps,
                          q->inv_delta, max_code(q));
    }
}

static void encode_all(const tsq_quantizer *q, const float *x, uint8_t *codes, const layout *l)
{
    encode_job job;
    int64_t threads = q->obj.ctx->threads;
    job.q = q;
    job.x = x;
    job.codes = codes;
    job.l = *l;
    if (q->channels == 0)
        job.nunits = (l->numel + ENCODE_CHUNK - 1) / ENCODE_CHUNK;
    else if (l->inner > 1)
        job.nunits = l->outer * q->channels;
    else
        job.nunits = l->outer;
    if (l->numel < PARALLEL_MIN_ELEMENTS)
        threads = 1;
    tsq__parallel_for(threads, job.nunits, encode_unit, &job);
}

tsq_status tsq_quantizer_encode(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *codes)
{
    static const char *where = "quantizer_encode";
    layout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = require_fitted(q, where);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&q->obj, where, "x", x, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = check_like(q, where, "codes", codes, TSQ_DTYPE_U8, "x", x);
    if (st == TSQ_OK)
        st = check_input(q, where, "x", x, &l);
    if (st != TSQ_OK)
        return st;
    encode_all(q, (const float *)x->data, (uint8_t *)codes->data, &l);
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_forward(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *y)
{
    static const char *where = "quantizer_forward";
    const float *xs;
    float *ys;
    int32_t maxcode;
    int64_t o, c, i;
    layout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = require_fitted(q, where);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&q->obj, where, "x", x, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = check_like(q, where, "y", y, TSQ_DTYPE_F32, "x", x);
    if (st == TSQ_OK)
        st = check_input(q, where, "x", x, &l);
    if (st != TSQ_OK)
        return st;
    maxcode = max_code(q);
    xs = (const float *)x->data;
    ys = (float *)y->data;
    for (o = 0; o < l.outer; o++)
        for (c = 0; c < q->nparams; c++, xs += l.inner, ys += l.inner) {
            float eps = q->eps[c], delta = q->delta[c], inv = q->inv_delta[c];
            for (i = 0; i < l.inner; i++)
                ys[i] = (float)tsq__quant_code(xs[i], eps, inv, maxcode) * delta;
        }
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_decode(tsq_quantizer *q, const tsq_tensor *codes, tsq_tensor *y)
{
    static const char *where = "quantizer_decode";
    const uint8_t *k;
    float *ys;
    int32_t maxcode;
    int64_t o, c, i;
    layout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = require_fitted(q, where);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&q->obj, where, "codes", codes, TSQ_DTYPE_U8);
    if (st == TSQ_OK)
        st = check_like(q, where, "y", y, TSQ_DTYPE_F32, "codes", codes);
    if (st == TSQ_OK)
        st = get_layout(q, where, "codes", codes, &l);
    if (st != TSQ_OK)
        return st;
    maxcode = max_code(q);
    k = (const uint8_t *)codes->data;
    for (i = 0; i < l.numel; i++)
        if (k[i] > maxcode)
            return tsq__fail(&q->obj, TSQ_ERR_INVALID,
                             "%s: code %u at index %lld exceeds %d, the top code of %d bits",
                             where, (unsigned)k[i], (long long)i, (int)maxcode, (int)q->bits);
    ys = (float *)y->data;
    for (o = 0; o < l.outer; o++)
        for (c = 0; c < q->nparams; c++, k += l.inner, ys += l.inner) {
            float delta = q->delta[c];
            for (i = 0; i < l.inner; i++)
                ys[i] = (float)k[i] * delta;
        }
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_backward(tsq_quantizer *q, const tsq_tensor *x,
                                  const tsq_tensor *grad_out, tsq_tensor *grad_in)
{
    static const char *where = "quantizer_backward";
    const float *xs, *go;
    float *gi;
    int32_t maxcode;
    int64_t o, c, i;
    layout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    st = require_fitted(q, where);
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&q->obj, where, "x", x, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = check_like(q, where, "grad_out", grad_out, TSQ_DTYPE_F32, "x", x);
    if (st == TSQ_OK)
        st = check_like(q, where, "grad_in", grad_in, TSQ_DTYPE_F32, "x", x);
    if (st == TSQ_OK)
        st = check_input(q, where, "x", x, &l);
    if (st != TSQ_OK)
        return st;
    maxcode = max_code(q);
    xs = (const float *)x->data;
    go = (const float *)grad_out->data;
    gi = (float *)grad_in->data;
    for (o = 0; o < l.outer; o++)
        for (c = 0; c < q->nparams; c++, xs += l.inner, go += l.inner, gi += l.inner) {
            float delta = q->delta[c];
            for (i = 0; i < l.inner; i++)
                gi[i] = tsq__quant_passes(xs[i], delta, maxcode) ? go[i] : 0.0f;
        }
    tsq__clear(&q->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* tsq_learn_codes                                                      */
/* ------------------------------------------------------------------ */

/* Exact error sum over x > 0 and zero count of the current parameters. */
static void measure(const tsq_quantizer *q, const float *x, const layout *l, double *error_sum,
                    double *zeros)
{
    int32_t maxcode = max_code(q);
    double err = 0.0, nz = 0.0;
    int64_t o, c, i;
    for (o = 0; o < l->outer; o++)
        for (c = 0; c < q->nparams; c++, x += l->inner) {
            float eps = q->eps[c], delta = q->delta[c], inv = q->inv_delta[c];
            for (i = 0; i < l->inner; i++) {
                int32_t k = tsq__quant_code(x[i], eps, inv, maxcode);
                nz += k == 0;
                if (x[i] > 0.0f) {
                    double d = (double)x[i] - (double)((float)k * delta);
                    err += d * d;
                }
            }
        }
    *error_sum = err;
    *zeros = nz;
}

static tsq_status learn_from_observed(tsq_quantizer *q, tsq_tensor *codes, double *error,
                                      double *sparsity)
{
    static const char *where = "learn_codes";
    double err_sum, zeros, total;
    tsq_status st;
    if (codes)
        return tsq__fail(&q->obj, TSQ_ERR_INVALID,
                         "%s: codes were given but no x to encode (x is NULL)", where);
    st = require_observed(q, where);
    if (st == TSQ_OK)
        st = fit_from(q, where, q->hist, &err_sum, &zeros);
    if (st != TSQ_OK)
        return st;
    total = tsq__hist_total(q->hist);
    if (error)
        *error = err_sum / total;
    if (sparsity)
        *sparsity = zeros / total;
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_learn_codes(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *codes,
                           double *error, double *sparsity)
{
    static const char *where = "learn_codes";
    tsq__act_hist *hist;
    double err_sum, zeros;
    layout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    if (!x)
        return learn_from_observed(q, codes, error, sparsity);
    st = check_input(q, where, "x", x, &l);
    if (st == TSQ_OK && codes)
        st = check_like(q, where, "codes", codes, TSQ_DTYPE_U8, "x", x);
    if (st != TSQ_OK)
        return st;
    hist = tsq__hist_create(q->obj.ctx, q->nparams, hist_sub_bits(q));
    if (!hist)
        return tsq__fail(&q->obj, TSQ_ERR_NO_MEMORY,
                         "%s: out of memory for the histograms of %lld channel(s)", where,
                         (long long)q->nparams);
    tsq__hist_add(hist, (const float *)x->data, l.outer, l.inner);
    st = fit_from(q, where, hist, NULL, NULL);
    tsq__hist_destroy(q->obj.ctx, hist);
    if (st != TSQ_OK)
        return st;
    if (codes)
        encode_all(q, (const float *)x->data, (uint8_t *)codes->data, &l);
    measure(q, (const float *)x->data, &l, &err_sum, &zeros);
    if (error)
        *error = err_sum / (double)l.numel;
    if (sparsity)
        *sparsity = zeros / (double)l.numel;
    tsq__clear(&q->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Serialized form, version 1 (all little-endian):                      */
/*    0  "TSQQ"           4  u32 version = 1     8  u32 bits            */
/*   12  u32 eps_mode    16  u32 hist_resolution 20  u32 reserved = 0   */
/*   24  i64 channels    32  f64 eps option      40  f64 sparsity       */
/*   48  per channel (max(1, channels) of them): f32 eps, f32 delta,    */
/*       both 0 for a channel without parameters                        */
/*  end  u32 CRC-32 of every byte before it                             */
/* ------------------------------------------------------------------ */

#define FORMAT_VERSION 1u
#define HEADER_BYTES 48u
#define TRAILER_BYTES 4u

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static void put_f32(unsigned char *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, sizeof v);
    put_u32(p, v);
}

static void put_f64(unsigned char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(p, v);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static float get_f32(const unsigned char *p)
{
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}

static double get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static uint64_t saved_size(int64_t nparams)
{
    return HEADER_BYTES + 8u * (uint64_t)nparams + TRAILER_BYTES;
}

tsq_status tsq_quantizer_save(tsq_quantizer *q, void *buf, uint64_t capacity, uint64_t *size)
{
    unsigned char *p = buf;
    uint64_t need;
    int64_t c;
    if (!q || !size)
        return TSQ_ERR_NULL;
    need = saved_size(q->nparams);
    *size = need;
    if (!buf) {
        tsq__clear(&q->obj);
        return TSQ_OK;
    }
    if (capacity < need)
        return tsq__fail(&q->obj, TSQ_ERR_TOO_SMALL,
                         "quantizer_save: buffer holds %llu bytes, %llu needed",
                         (unsigned long long)capacity, (unsigned long long)need);
    memcpy(p, "TSQQ", 4);
    put_u32(p + 4, FORMAT_VERSION);
    put_u32(p + 8, (uint32_t)q->bits);
    put_u32(p + 12, (uint32_t)q->eps_mode);
    put_u32(p + 16, (uint32_t)q->sub_bits);
    put_u32(p + 20, 0);
    put_u64(p + 24, (uint64_t)q->channels);
    put_f64(p + 32, q->eps_fixed);
    put_f64(p + 40, q->sparsity);
    for (c = 0; c < q->nparams; c++) {
        put_f32(p + HEADER_BYTES + 8 * c, q->eps[c]);
        put_f32(p + HEADER_BYTES + 8 * c + 4, q->delta[c]);
    }
    put_u32(p + need - TRAILER_BYTES, tsq__crc32(0, p, (size_t)(need - TRAILER_BYTES)));
    tsq__clear(&q->obj);
    return TSQ_OK;
}

/* Checks the framing: size, magic, version, channel count and checksum. */
static tsq_status check_frame(tsq_context *ctx, const unsigned char *p, uint64_t size,
                              int64_t *channels)
{
    static const char *where = "quantizer_load";
    uint64_t raw, need;
    uint32_t version;
    if (size < saved_size(1))
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT,
                         "%s: %llu bytes are fewer than the %llu of the smallest quantizer",
                         where, (unsigned long long)size, (unsigned long long)saved_size(1));
    if (memcmp(p, "TSQQ", 4) != 0)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: bad magic: not a libtsq quantizer",
                         where);
    version = get_u32(p + 4);
    if (version != FORMAT_VERSION)
        return tsq__fail(&ctx->obj, TSQ_ERR_VERSION,
                         "%s: format version %u; this library reads version %u", where,
                         (unsigned)version, (unsigned)FORMAT_VERSION);
    raw = get_u64(p + 24);
    if (raw > (uint64_t)MAX_CHANNELS)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: channel count %llu is out of range",
                         where, (unsigned long long)raw);
    need = saved_size(raw > 0 ? (int64_t)raw : 1);
    if (size != need)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT,
                         "%s: %llu bytes, but %llu channel(s) need exactly %llu", where,
                         (unsigned long long)size, (unsigned long long)raw,
                         (unsigned long long)need);
    if (get_u32(p + size - TRAILER_BYTES) != tsq__crc32(0, p, (size_t)(size - TRAILER_BYTES)))
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: checksum mismatch (corrupt data)",
                         where);
    *channels = (int64_t)raw;
    return TSQ_OK;
}

/* Checks the fields inside a well-framed buffer. */
static tsq_status check_fields(tsq_context *ctx, const unsigned char *p, int64_t nparams)
{
    static const char *where = "quantizer_load";
    uint32_t bits = get_u32(p + 8), mode = get_u32(p + 12), res = get_u32(p + 16);
    double eps = get_f64(p + 32), sparsity = get_f64(p + 40);
    int64_t c;
    if (bits < 1 || bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: bits %u is outside 1..8", where,
                         (unsigned)bits);
    if (mode < TSQ_EPS_FIXED || mode > TSQ_EPS_PLAIN)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: unknown eps mode %u", where,
                         (unsigned)mode);
    if (res > TSQ__HIST_SUB_BITS_MAX)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: histogram resolution %u is outside "
                         "0..%d", where, (unsigned)res, TSQ__HIST_SUB_BITS_MAX);
    if (get_u32(p + 20) != 0)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: reserved field is not 0", where);
    if (!(eps >= 0.0 && eps <= FLT_MAX) || !(sparsity >= 0.0 && sparsity <= 1.0))
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: eps option %g or sparsity %g is out "
                         "of range", where, eps, sparsity);
    for (c = 0; c < nparams; c++) {
        float e = get_f32(p + HEADER_BYTES + 8 * c), d = get_f32(p + HEADER_BYTES + 8 * c + 4);
        const char *problem;
        if (e == 0.0f && d == 0.0f && !signbit(e) && !signbit(d))
            continue; /* a channel without parameters */
        problem = param_problem(e, d, (1 << bits) - 1);
        if (problem)
            return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "%s: channel %lld %s", where,
                             (long long)c, problem);
    }
    return TSQ_OK;
}

tsq_status tsq_quantizer_load(tsq_context *ctx, const void *buf, uint64_t size,
                              tsq_quantizer **out)
{
    const unsigned char *p = buf;
    tsq_quantizer *q;
    int64_t channels = 0, c;
    tsq_status st;
    if (!out)
        return ctx ? tsq__fail(&ctx->obj, TSQ_ERR_NULL, "quantizer_load: out is NULL")
                   : TSQ_ERR_NULL;
    *out = NULL;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!buf)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "quantizer_load: buf is NULL");
    st = check_frame(ctx, p, size, &channels);
    if (st == TSQ_OK)
        st = check_fields(ctx, p, channels > 0 ? channels : 1);
    if (st == TSQ_OK)
        st = tsq_quantizer_create(ctx, (int32_t)get_u32(p + 8), channels, &q);
    if (st != TSQ_OK)
        return st;
    q->eps_mode = (int32_t)get_u32(p + 12);
    q->sub_bits = (int32_t)get_u32(p + 16);
    q->eps_fixed = get_f64(p + 32);
    q->sparsity = get_f64(p + 40);
    for (c = 0; c < q->nparams; c++) {
        float d = get_f32(p + HEADER_BYTES + 8 * c + 4);
        if (d > 0.0f)
            store_param(q, c, get_f32(p + HEADER_BYTES + 8 * c), d);
    }
    *out = q;
    return TSQ_OK;
}
