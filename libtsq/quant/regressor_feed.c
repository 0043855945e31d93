/*
 * Feeding rows to a pass (docs/method.md §3.6). Pass 0 accumulates the
 * statistics (N, s = X^T 1, X^T X, and X^T z0, sum z0, sum z0^2 for the
 * start target z0). Pass k >= 1 evaluates iterate k-1 on the rows (its
 * true objective, for the history and the best-per-channel) and, when
 * round k takes a z-step, computes z from that iterate and accumulates
 * X^T z. The polish's passes (regressor_polish_pass.c) instead count
 * (X w, y) into histograms or sum each candidate's code errors. Rows are
 * split into blocks whose partial sums are reduced in block order (counts
 * are exact in any order), so results do not depend on the thread count.
 */
#include "regressor_fit.h"

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
            const double *p = f->part + (blk * PART_STRIDE + s) * C;
            for (c = 0; c < C; c++)
                into[s][c] += p[c];
        }
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
    a.err = f->part + blk * PART_STRIDE * C;
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

/* A polish pass: the squared code errors of every candidate (alpha, b). */
static void polish_block(void *arg, int64_t blk)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t lo, hi, C = f->C;
    tsq__polish_rows_args a;
    block_range(job, blk, &lo, &hi);
    a.rows = hi - lo;
    a.C = C;
    a.xw = f->vf + lo * C;
    a.y = (job->bt.ydt == TSQ_DTYPE_U8 ? (const uint8_t *)job->bt.y : f->yc) + lo * C;
    a.alpha = f->caf;
    a.b = f->cbf;
    a.q = f->q;
    a.err = f->part + blk * PART_STRIDE * C;
    memset(a.err, 0, TSQ__POLISH_CAND * (size_t)C * sizeof a.err[0]);
    a.eps = f->qeps;
    a.inv_delta = f->qinv;
    a.top = f->qtop;
    tsq__polish_rows(&a, 1);
}

/* Polish pass 1: the histograms, channels spread over the tasks (each
 * task owns its channels' counts: no reduction, exact in any order). */
static void hist_task(void *arg, int64_t task)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t per = (f->C + job->nblocks - 1) / job->nblocks;
    tsq__polish_hist_args a;
    a.rows = job->bt.n;
    a.C = f->C;
    a.c0 = task * per;
    a.c1 = a.c0 + per < f->C ? a.c0 + per : f->C;
    a.xw = f->vf;
    a.y = job->bt.ydt == TSQ_DTYPE_U8 ? (const uint8_t *)job->bt.y : f->yc;
    a.lo = f->hlo;
    a.scale = f->hscale;
    a.nb = f->nbins;
    a.bins = f->hbins;
    a.hist = f->hist;
    if (a.c0 < a.c1)
        tsq__polish_hist_rows(&a);
}

/* Polish pass 3: the windows' histograms, as hist_task. */
static void window_task(void *arg, int64_t task)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t per = (f->C + job->nblocks - 1) / job->nblocks;
    tsq__polish_window_args a;
    a.rows = job->bt.n;
    a.C = f->C;
    a.c0 = task * per;
    a.c1 = a.c0 + per < f->C ? a.c0 + per : f->C;
    a.xw = f->vf;
    a.y = job->bt.ydt == TSQ_DTYPE_U8 ? (const uint8_t *)job->bt.y : f->yc;
    a.wlo = f->wlo;
    a.wscale = f->wscale;
    a.nw = f->nw;
    a.nb = f->nbins;
    a.fb = f->fb;
    a.hist = f->hist;
    if (a.c0 < a.c1)
        tsq__polish_window_rows(&a);
}

static void polish_rows(fit_state *f, block_job *job)
{
    int64_t blk, k, c, C = f->C;
    tsq__parallel_for(threads_for(f, job->bt.n * C * TSQ__POLISH_CAND / 4), job->nblocks,
                      polish_block, job);
    for (blk = 0; blk < job->nblocks; blk++) /* in block order: thread-count free */
        for (k = 0; k < TSQ__POLISH_CAND; k++)
            for (c = 0; c < C; c++)
                f->cand[k * C + c] += f->part[(blk * PART_STRIDE + k) * C + c];
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
    if (f->pstage == POLISH_HIST || f->pstage == POLISH_WINDOW) {
        block_job hj = *job;
        hj.nblocks = threads_for(f, (int64_t)n * C); /* one task per thread */
        tsq__parallel_for(hj.nblocks, hj.nblocks,
                          f->pstage == POLISH_HIST ? hist_task : window_task, &hj);
        return;
    }
    if (f->pstage) {
        polish_rows(f, job);
        return;
    }
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

void tsq__reg_feed_rows(fit_state *f, const batch *bt)
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
    st = tsq__reg_check_batch(reg, "regressor_feed", X, Y, P, &bt);
    if (st != TSQ_OK)
        return st;
    tsq__reg_feed_rows(reg->fit, &bt);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

