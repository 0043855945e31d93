/* Learning the quantizer's parameters (docs/method.md §2.3): streaming
 * statistics (observe, reset), the fit of every channel from them on the
 * context's threads, and tsq_learn_codes, step 1 as one call. The fit of one
 * channel is quantizer_fit.c's; the histogram is activation_histogram.c's. */
#include "quant/quantizer_internal.h"

#include <string.h>

tsq_status tsq_quantizer_observe(tsq_quantizer *q, const tsq_tensor *x)
{
    static const char *where = "quantizer_observe";
    tsq__qlayout l = {0, 0, 0};
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(tsq__q_check_input(q, where, "x", x, &l));
    if (!q->hist) {
        q->hist = tsq__hist_create(q->obj.ctx, q->nparams, tsq__q_hist_sub_bits(q));
        TSQ_RETURN_ERROR_IF(!q->hist, &q->obj, TSQ_ERR_NO_MEMORY,
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

/* Fitting runs one task per thread, each with its own prefix-sum scratch,
 * over the channels of one chunk at a time: between chunks the calling
 * thread reports progress (without a progress callback, one chunk holds
 * every channel). The fitted values go to scratch arrays and are committed
 * only after the last report, so a cancelled fit changes nothing. Chunks
 * change no result: each channel's fit is its own. */
typedef struct fit_job {
    const tsq_quantizer *q;
    const tsq__act_hist *hist;
    double *scratch;        /* ntasks * per_task doubles */
    size_t per_task;
    int64_t ntasks;
    int64_t lo, hi;         /* the chunk of channels */
    float *eps, *delta;     /* per channel, committed at the end */
    double *error_sum;      /* per channel, or NULL */
    double *zeros;
} fit_job;

/* Channels per chunk: about 16 progress reports for many channels. */
enum { FIT_REPORTS = 16 };

static void fit_task(void *arg, int64_t task)
{
    fit_job *job = arg;
    const tsq_quantizer *q = job->q;
    double *scratch = job->scratch + (size_t)task * job->per_task;
    tsq__hist_view v;
    int64_t c;
    for (c = job->lo + task; c < job->hi; c += job->ntasks) {
        tsq__hist_view_init(job->hist, c, scratch, &v);
        tsq__fit_channel(&v, q->bits, q->eps_mode, q->eps_fixed, q->sparsity, &job->eps[c],
                         &job->delta[c]);
        if (job->error_sum)
            tsq__fit_estimate(&v, q->bits, job->eps[c], job->delta[c], &job->error_sum[c],
                              &job->zeros[c]);
    }
}

static tsq_status fit_chunks(tsq_quantizer *q, const char *where, fit_job *job)
{
    int64_t C = q->nparams, chunk = (C + FIT_REPORTS - 1) / FIT_REPORTS;
    if (chunk < job->ntasks)
        chunk = job->ntasks;
    if (!q->obj.ctx->progress_fn) /* nobody listens: one fork-join, as without reports */
        chunk = C;
    TSQ_FORWARD_IF_ERROR(tsq__progress(&q->obj, TSQ_PROGRESS_QUANTIZER_FIT, 0, C, where));
    for (job->lo = 0; job->lo < C; job->lo = job->hi) {
        job->hi = C - job->lo < chunk ? C : job->lo + chunk;
        tsq__parallel_for(job->ntasks, job->ntasks, fit_task, job);
        TSQ_FORWARD_IF_ERROR(
            tsq__progress(&q->obj, TSQ_PROGRESS_QUANTIZER_FIT, job->hi, C, where));
    }
    return TSQ_OK;
}

static void commit(tsq_quantizer *q, const fit_job *job, double *error_sum, double *zeros)
{
    int64_t c;
    for (c = 0; c < q->nparams; c++) {
        q->eps[c] = job->eps[c];
        q->delta[c] = job->delta[c];
        q->inv_delta[c] = 1.0f / job->delta[c];
    }
    q->nset = q->nparams;
    if (error_sum) {
        *error_sum = *zeros = 0.0;
        for (c = 0; c < q->nparams; c++) {
            *error_sum += job->error_sum[c];
            *zeros += job->zeros[c];
        }
    }
}

tsq_status tsq__q_fit_from(tsq_quantizer *q, const char *where, const tsq__act_hist *hist,
                           double *error_sum, double *zeros)
{
    tsq_context *ctx = q->obj.ctx;
    fit_job job;
    size_t total;
    tsq_status st;
    memset(&job, 0, sizeof job);
    job.q = q;
    job.hist = hist;
    job.ntasks = ctx->threads < q->nparams ? ctx->threads : q->nparams;
    if (job.ntasks < 1)
        job.ntasks = 1;
    job.per_task = tsq__hist_scratch_doubles(hist);
    if (tsq__mul_size(job.per_task, (size_t)job.ntasks, &total))
        job.scratch = tsq__calloc(ctx, total, sizeof(double));
    job.eps = tsq__calloc(ctx, 2 * (size_t)q->nparams, sizeof(float));
    if (error_sum)
        job.error_sum = tsq__calloc(ctx, 2 * (size_t)q->nparams, sizeof(double));
    if (!job.scratch || !job.eps || (error_sum && !job.error_sum))
        st = tsq__fail(&q->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the fit", where);
    else {
        job.delta = job.eps + q->nparams;
        job.zeros = job.error_sum ? job.error_sum + q->nparams : NULL;
        st = fit_chunks(q, where, &job);
    }
    if (st == TSQ_OK) {
        commit(q, &job, error_sum, zeros);
        tsq__log(ctx, 3 /* info */, "%s: %d-bit quantizer fitted on %.0f samples, %lld "
                 "channel(s): eps %.4g, delta %.4g (channel 0)", where, (int)q->bits,
                 tsq__q_observed(q), (long long)q->nparams, (double)q->eps[0],
                 (double)q->delta[0]);
    }
    tsq__free(ctx, job.error_sum);
    tsq__free(ctx, job.eps);
    tsq__free(ctx, job.scratch);
    return st;
}

static tsq_status require_observed(const tsq_quantizer *q, const char *where)
{
    TSQ_RETURN_ERROR_IF(!(tsq__q_observed(q) > 0.0), &q->obj, TSQ_ERR_NO_DATA,
                        "%s: no samples observed; call tsq_quantizer_observe first", where);
    return TSQ_OK;
}

tsq_status tsq_quantizer_fit(tsq_quantizer *q)
{
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(require_observed(q, "quantizer_fit"));
    TSQ_FORWARD_IF_ERROR(tsq__q_fit_from(q, "quantizer_fit", q->hist, NULL, NULL));
    tsq__clear(&q->obj);
    return TSQ_OK;
}

/* Exact error sum over x > 0 and zero count of the current parameters. */
static void measure(const tsq_quantizer *q, const float *x, const tsq__qlayout *l,
                    double *error_sum, double *zeros)
{
    int32_t maxcode = tsq__qmax_code(q);
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
    TSQ_RETURN_ERROR_IF(codes, &q->obj, TSQ_ERR_INVALID,
                        "%s: codes were given but no x to encode (x is NULL)", where);
    TSQ_FORWARD_IF_ERROR(require_observed(q, where));
    TSQ_FORWARD_IF_ERROR(tsq__q_fit_from(q, where, q->hist, &err_sum, &zeros));
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
    tsq__qlayout l = {0, 0, 0};
    tsq_status st;
    if (!q)
        return TSQ_ERR_NULL;
    if (!x)
        return learn_from_observed(q, codes, error, sparsity);
    TSQ_FORWARD_IF_ERROR(tsq__q_check_input(q, where, "x", x, &l));
    if (codes)
        TSQ_FORWARD_IF_ERROR(tsq__q_check_like(q, where, "codes", codes, TSQ_DTYPE_U8, "x", x));
    hist = tsq__hist_create(q->obj.ctx, q->nparams, tsq__q_hist_sub_bits(q));
    TSQ_RETURN_ERROR_IF(!hist, &q->obj, TSQ_ERR_NO_MEMORY,
                        "%s: out of memory for the histograms of %lld channel(s)", where,
                        (long long)q->nparams);
    tsq__hist_add(hist, (const float *)x->data, l.outer, l.inner);
    st = tsq__q_fit_from(q, where, hist, NULL, NULL);
    tsq__hist_destroy(q->obj.ctx, hist);
    TSQ_FORWARD_IF_ERROR(st);
    if (codes)
        tsq__q_encode_all(q, (const float *)x->data, (uint8_t *)codes->data, &l);
    measure(q, (const float *)x->data, &l, &err_sum, &zeros);
    if (error)
        *error = err_sum / (double)l.numel;
    if (sparsity)
        *sparsity = zeros / (double)l.numel;
    tsq__clear(&q->obj);
    return TSQ_OK;
}
