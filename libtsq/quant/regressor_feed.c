/*
 * Feeding rows to a pass (docs/method.md §3.6). Pass 0 accumulates the
 * statistics (N, s = X^T 1, X^T X, and X^T z0, sum z0, sum z0^2 for the
 * start target z0). Pass k >= 1 evaluates iterate k-1 on the rows (its
 * true objective, for the history and the best-per-channel) and, when
 * round k takes a z-step, computes z from that iterate and accumulates
 * X^T z. The polish's passes (regressor_polish_pass.c) instead count
 * (X w, y) into histograms or sum each candidate's code errors. Every
 * pass runs on the context's threads: rows in blocks whose partial sums
 * are reduced in block order, X^T z and pass 0's products in blocks of
 * columns that own their rows of the result; the splits depend on the data's
 * shape only, so results do not depend on the thread count. The products
 * X w and the integer kernels are in regressor_products.c.
 */
#include "regressor_fit.h"
#include "blas.h"

#include "kernels/kernels_internal.h" /* tsq__gemm_vnni, tsq__k4n */

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

/* Rows [0, n) of a piece of the feed are split into at most MAX_BLOCKS
 * blocks of at least BLOCK_ROWS rows (a product per block then costs
 * little more than one over the piece). The split depends only on n, each
 * block's work is the same calls whichever thread runs it, and partial
 * sums are reduced in block order, so results do not depend on the
 * thread count. */
#define BLOCK_ROWS 128
/* X^T z and pass 0's products split d into blocks of this many columns. */
#define COL_BLOCK 64

typedef struct block_job {
    fit_state *f;
    batch bt;          /* the rows of this piece (already offset) */
    const float *xf;   /* the rows as floats */
    float *v;          /* rows x C: their products X w (f->vf, or the cache) */
    const uint8_t *y;  /* rows x C: their codes */
    int64_t block_rows, nblocks;
    int64_t td0;       /* pass 0: the piece's first row within td */
    int32_t convert;   /* u8 rows go to xf first */
    int32_t int_gram;  /* pass 0: X^T X by the integer kernel (codes <= 127) */
    int32_t int_cross; /* pass 0: X^T z0 = X^T Y delta by it too (z0 = delta Y) */
    int32_t products;  /* PRODUCTS_ALL / _UPDATE / _NONE */
} block_job;

static void split_blocks(block_job *job, int64_t n)
{
    int64_t per = (n + MAX_BLOCKS - 1) / MAX_BLOCKS;
    job->block_rows = per < BLOCK_ROWS ? BLOCK_ROWS : per;
    job->nblocks = (n + job->block_rows - 1) / job->block_rows;
}

static void block_range(const block_job *job, int64_t blk, int64_t *lo, int64_t *hi)
{
    *lo = blk * job->block_rows;
    *hi = *lo + job->block_rows < job->bt.n ? *lo + job->block_rows : job->bt.n;
}

/* u8 X rows [lo, hi) as floats, for the products (and the exact float X^T X). */
static void convert_rows(const block_job *job, int64_t lo, int64_t hi)
{
    const uint8_t *x = job->bt.x;
    float *xf = job->f->xf;
    int64_t i = lo * job->f->d, end = hi * job->f->d;
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

static void convert_block(void *arg, int64_t blk)
{
    block_job *job = arg;
    int64_t lo, hi;
    block_range(job, blk, &lo, &hi);
    convert_rows(job, lo, hi);
}

/* acc (double) += src (float), n values. */
static void add_into(double *acc, const float *src, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        acc[i] += src[i];
}

/* ------------------------------------------------------------------ */
/* Pass 0: the statistics                                              */
/* ------------------------------------------------------------------ */

/* The start target z0 (P or delta Y) of the piece's rows as doubles in td,
 * with its sums (or, for z0 = X W_init + beta, only the sum of delta Y). */
static void target_rows(fit_state *f, const block_job *job)
{
    int64_t i, c, C = f->C;
    if (f->target == TARGET_XW && !shifts_xw(f))
        return;
    for (i = 0; i < job->bt.n; i++)
        for (c = 0; c < C; c++) {
            int64_t at = i * C + c;
            double z = job->bt.p ? (double)job->bt.p[at]
                                 : (double)code_at(job->bt.y, job->bt.ydt, at) * f->q[c].delta;
            f->td[at] = z;
            if (f->target == TARGET_XW) {
                f->ysum[c] += z;
            } else {
                f->z0sum[c] += z;
                f->z0sq[c] += z * z;
            }
        }
}

static void col_range(const fit_state *f, int64_t k, int64_t *j0, int64_t *j1)
{
    *j0 = k * COL_BLOCK;
    *j1 = *j0 + COL_BLOCK < f->d ? *j0 + COL_BLOCK : f->d;
}

/* Columns [j0, j1) of rows [r0, r0 + m) as doubles in xd (the column
 * blocks of xd are disjoint, so the tasks fill them side by side). */
static void cols_to_double(fit_state *f, const block_job *job, int64_t r0, int64_t m, int64_t j0,
                           int64_t j1)
{
    int64_t i, j, d = f->d;
    for (i = 0; i < m; i++) {
        double *out = f->xd + i * d;
        if (job->bt.xdt == TSQ_DTYPE_U8) {
            const uint8_t *x = (const uint8_t *)job->bt.x + (r0 + i) * d;
            for (j = j0; j < j1; j++)
                out[j] = (double)x[j];
        } else {
            const float *x = (const float *)job->bt.x + (r0 + i) * d;
            for (j = j0; j < j1; j++)
                out[j] = (double)x[j];
        }
    }
}

/* Pass 0, column block k of the piece: rows k of X^T X (for u8 codes in
 * float, exact while rows * maxcode^2 <= 2^24, see exact_rows; for f32 X
 * in double), s, and X^T z0 in double so that the linear loss, computed
 * from these sums, is exact to double rounding. For f32 X the caller
 * converted every column of the piece first (the Gram block reads them
 * all); the X^T X block of u8 codes reads the float rows. */
static void stats_task(void *arg, int64_t k)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t d = f->d, C = f->C, n = job->bt.n, j0, j1, r0, i, j, c;
    int u8 = job->bt.xdt == TSQ_DTYPE_U8;
    col_range(f, k, &j0, &j1);
    if (job->int_gram) { /* int32 in gf, exact: n maxcode^2 <= 2^24 */
        int64_t c0 = j0 / 32 * 32;
        int32_t *acc = (int32_t *)f->gf;
        tsq__gemm_vnni(f->xt + j0 * n, n, j1 - j0, n, f->dec + c0 / 16 * tsq__k4n(n) * 64, c0, d,
                       acc + j0 * d, d);
        for (i = j0; i < j1; i++) {
            int64_t s = 0;
            for (j = i; j < d; j++)
                f->gram[i * d + j] += (double)acc[i * d + j];
            for (j = 0; j < n; j++)
                s += f->xt[i * n + j];
            f->colsum[i] += (double)s;
        }
    } else if (u8) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(j1 - j0), (int)(d - j0),
                    (int)n, 1.0f, f->xf + j0, (int)d, f->xf + j0, (int)d, 0.0f,
                    f->gf + j0 * d + j0, (int)d);
        for (i = j0; i < j1; i++)
            add_into(f->gram + i * d + i, f->gf + i * d + i, d - i);
    }
    if (job->int_cross) { /* X^T Y in int32 (exact), times delta per channel */
        int32_t *acc = f->accy + j0 * C;
        tsq__gemm_vnni(f->xt + j0 * n, n, j1 - j0, n, f->dec + f->decy, 0, C, acc, C);
        for (i = 0; i < (j1 - j0) * C; i += C)
            for (c = 0; c < C; c++)
                f->g0[j0 * C + i + c] += (double)acc[i + c] * f->q[c].delta;
        return;
    }
    if (job->int_gram && f->target == TARGET_XW)
        return;
    for (r0 = 0; r0 < n; r0 += DOUBLE_ROWS) {
        int64_t m = n - r0 < DOUBLE_ROWS ? n - r0 : DOUBLE_ROWS;
        if (u8)
            cols_to_double(f, job, r0, m, j0, j1);
        else
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(j1 - j0), (int)(d - j0),
                        (int)m, 1.0, f->xd + j0, (int)d, f->xd + j0, (int)d, 1.0,
                        f->gram + j0 * d + j0, (int)d);
        for (i = 0; i < m && !job->int_gram; i++)
            for (j = j0; j < j1; j++)
                f->colsum[j] += f->xd[i * d + j];
        if (f->target != TARGET_XW)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(j1 - j0), (int)C, (int)m,
                        1.0, f->xd + j0, (int)d, f->td + (job->td0 + r0) * C, (int)C, 1.0,
                        f->g0 + j0 * C, (int)C);
        if (!u8)
            break; /* f32 X: one piece of DOUBLE_ROWS rows per call */
    }
}

/* Pass 0 with integer products: column block k of the piece transposed
 * (the left operand of X^T X) and as the kernel's panels (the right). */
static void layout_task(void *arg, int64_t k)
{
    block_job *job = arg;
    fit_state *f = job->f;
    const uint8_t *x = job->bt.x;
    int64_t d = f->d, n = job->bt.n, j0, j1, i, j;
    col_range(f, k, &j0, &j1);
    for (j = j0; j < j1; j++)
        for (i = 0; i < n; i++)
            f->xt[j * n + i] = x[i * d + j];
    tsq__reg_panels_codes(x, n, d, j0 / 16, (j1 + 15) / 16, f->dec);
}

/* z0 = delta Y and every code <= 127: Y's rows as the integer kernel's
 * panels (K = n, N = C) at f->dec + f->decy, for X^T Y. */
static int codes_fit(fit_state *f, const block_job *job)
{
    int64_t i, n = job->bt.n * f->C;
    const uint8_t *y = job->bt.y;
    if (job->bt.p)
        return 0;
    if (job->bt.ydt == TSQ_DTYPE_F32) {
        const float *yf = job->bt.y;
        for (i = 0; i < n; i++)
            f->yc[i] = (uint8_t)yf[i]; /* validated integral codes <= 255 */
        y = f->yc;
    }
    for (i = 0; i < n; i++)
        if (y[i] > 127)
            return 0;
    tsq__reg_panels_codes(y, job->bt.n, f->C, 0, tsq__panels(f->C), f->dec + f->decy);
    return 1;
}

static void stats_rows(fit_state *f, block_job *job)
{
    int64_t d = f->d, n = job->bt.n, tasks = (d + COL_BLOCK - 1) / COL_BLOCK, r0;
    int64_t threads = threads_for(f, n * d * (d + f->C) / 8);
    target_rows(f, job);
    if (job->bt.xdt == TSQ_DTYPE_U8) {
        job->int_cross = job->int_gram && f->target == TARGET_CODES && codes_fit(f, job);
        if (job->int_gram)
            tsq__parallel_for(threads_for(f, n * d), tasks, layout_task, job);
        tsq__parallel_for(threads, tasks, stats_task, job);
        return;
    }
    for (r0 = 0; r0 < n; r0 += DOUBLE_ROWS) { /* f32 X: the Gram block reads every column */
        block_job piece = *job;
        int64_t m = n - r0 < DOUBLE_ROWS ? n - r0 : DOUBLE_ROWS;
        cols_to_double(f, job, r0, m, 0, d);
        piece.bt.n = m;
        piece.bt.x = (const float *)job->bt.x + r0 * d;
        piece.td0 = r0;
        tsq__parallel_for(threads, tasks, stats_task, &piece);
    }
}

/* ------------------------------------------------------------------ */
/* Passes k >= 1: products, evaluation, z, the polish's sums            */
/* ------------------------------------------------------------------ */

/* v = alpha (X w) + b for iterate k-1, its true objective (as a count of
 * squared code errors; end_later_pass scales by delta^2), and, in a z-step
 * pass, z (into zf) with its sums. */
static void eval_block(block_job *job, int64_t blk, int64_t lo, int64_t hi)
{
    fit_state *f = job->f;
    int64_t C = f->C;
    tsq__zrows a;
    a.rows = hi - lo;
    a.C = C;
    a.xw = job->v + lo * C;
    a.y = job->y + lo * C;
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
    tsq__zrows_run(&a, f->avx512 ? 2 : 1);
}

/* A polish pass: the squared code errors of every candidate (alpha, b). */
static void polish_block(block_job *job, int64_t blk, int64_t lo, int64_t hi)
{
    fit_state *f = job->f;
    int64_t C = f->C;
    tsq__polish_rows_args a;
    a.rows = hi - lo;
    a.C = C;
    a.xw = job->v + lo * C;
    a.y = job->y + lo * C;
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

/* One block of rows: its products, then its per-sample work (the
 * histogram passes count per channel afterwards, see channel_task). */
static void row_block(void *arg, int64_t blk)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t lo, hi, d = f->d, C = f->C;
    block_range(job, blk, &lo, &hi);
    if (job->convert)
        convert_rows(job, lo, hi);
    if (job->products == PRODUCTS_ALL && f->int_xw && job->bt.xdt == TSQ_DTYPE_U8)
        tsq__reg_int_products((const uint8_t *)job->bt.x + lo * d, hi - lo, d, f->dec, C,
                              (int32_t *)(f->vf + lo * C), job->v + lo * C, C, NULL);
    else if (job->products == PRODUCTS_ALL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)C, (int)d,
                    1.0f, job->xf + lo * d, (int)d, f->wf, (int)C, 0.0f, job->v + lo * C,
                    (int)C);
    else if (job->products == PRODUCTS_UPDATE)
        tsq__reg_products_update(f, (const uint8_t *)job->bt.x + lo * d, job->xf + lo * d,
                                 hi - lo, job->v + lo * C, f->vf + lo * C);
    if (f->pstage == POLISH_HIST || f->pstage == POLISH_WINDOW)
        return;
    if (f->pstage)
        polish_block(job, blk, lo, hi);
    else
        eval_block(job, blk, lo, hi);
}

/* Polish passes 1 and 3: (u, y) into each channel's histogram or windows,
 * channels spread over the tasks (each task owns its channels' counts: no
 * reduction, exact in any order). */
static void channel_task(void *arg, int64_t task)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t per = (f->C + job->nblocks - 1) / job->nblocks, c0 = task * per;
    int64_t c1 = c0 + per < f->C ? c0 + per : f->C;
    if (c0 >= c1)
        return;
    if (f->pstage == POLISH_HIST) {
        tsq__polish_hist_args a;
        a.rows = job->bt.n;
        a.C = f->C;
        a.c0 = c0;
        a.c1 = c1;
        a.xw = job->v;
        a.y = job->y;
        a.lo = f->hlo;
        a.scale = f->hscale;
        a.nb = f->nbins;
        a.bins = f->hbins;
        a.hist = f->hist;
        tsq__polish_hist_rows(&a);
    } else {
        tsq__polish_window_args a;
        a.rows = job->bt.n;
        a.C = f->C;
        a.c0 = c0;
        a.c1 = c1;
        a.xw = job->v;
        a.y = job->y;
        a.wlo = f->wlo;
        a.wscale = f->wscale;
        a.nw = f->nw;
        a.nb = f->nbins;
        a.fb = f->fb;
        a.hist = f->hist;
        tsq__polish_window_rows(&a);
    }
}

/* A z-step pass: X^T z into g, column block k of X per task (each task
 * owns its rows of g: no reduction). For u8 codes on AVX-512 CPUs, sums
 * in registers over the rows (the plain C definition tsq__reg_xtz_rows is
 * the reference it is tested against); elsewhere the BLAS, whose tuned
 * kernels beat a plain loop. */
static void xtz_task(void *arg, int64_t k)
{
    block_job *job = arg;
    fit_state *f = job->f;
    int64_t d = f->d, C = f->C, n = job->bt.n, j0, j1;
    col_range(f, k, &j0, &j1);
    if (job->bt.xdt == TSQ_DTYPE_U8 && f->avx512)
        tsq__reg_xtz_rows_avx512(job->bt.x, d, n, j0, j1, f->zf, C, f->gf + j0 * C);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(j1 - j0), (int)C, (int)n,
                    1.0f, job->xf + j0, (int)d, f->zf, (int)C, 0.0f, f->gf + j0 * C, (int)C);
    add_into(f->g + j0 * C, f->gf + j0 * C, (j1 - j0) * C);
}

static void reduce_parts(fit_state *f, int64_t nblocks, double *const *into, int series)
{
    int64_t blk, c, C = f->C;
    int s;
    for (blk = 0; blk < nblocks; blk++) /* in block order: thread-count free */
        for (s = 0; s < series; s++) {
            const double *p = f->part + (blk * PART_STRIDE + s) * C;
            for (c = 0; c < C; c++)
                into[s][c] += p[c];
        }
}

static void eval_rows(fit_state *f, block_job *job)
{
    int64_t d = f->d, C = f->C, n = job->bt.n, work = n * C;
    if (job->bt.ydt == TSQ_DTYPE_F32) { /* validated integral codes <= 255 */
        const float *y = job->bt.y;
        int64_t i;
        for (i = 0; i < n * C; i++)
            f->yc[i] = (uint8_t)y[i];
    }
    job->y = job->bt.ydt == TSQ_DTYPE_U8 ? (const uint8_t *)job->bt.y : f->yc;
    if (job->products == PRODUCTS_ALL)
        work += n * d * C / 4;
    else if (job->products == PRODUCTS_UPDATE)
        work += n * (f->ndelta + f->ndense * d / 4);
    if (f->pstage && f->pstage != POLISH_HIST && f->pstage != POLISH_WINDOW)
        work += n * C * TSQ__POLISH_CAND / 4;
    if (job->convert || job->products != PRODUCTS_NONE ||
        (f->pstage != POLISH_HIST && f->pstage != POLISH_WINDOW))
        tsq__parallel_for(threads_for(f, work), job->nblocks, row_block, job);
    if (f->pstage == POLISH_HIST || f->pstage == POLISH_WINDOW) {
        block_job hj = *job;
        hj.nblocks = threads_for(f, n * C); /* one task per thread */
        tsq__parallel_for(hj.nblocks, hj.nblocks, channel_task, &hj);
    } else if (f->pstage) {
        double *into[TSQ__POLISH_CAND];
        int k;
        for (k = 0; k < TSQ__POLISH_CAND; k++)
            into[k] = f->cand + k * C;
        reduce_parts(f, job->nblocks, into, TSQ__POLISH_CAND);
    } else {
        double *into[PART_SERIES] = {f->obj, f->zsum, f->zsq, f->zcost};
        reduce_parts(f, job->nblocks, into, f->zpass ? PART_SERIES : 1);
        if (f->zpass)
            tsq__parallel_for(threads_for(f, n * d * C / 4), (d + COL_BLOCK - 1) / COL_BLOCK,
                              xtz_task, job);
    }
}

/* Rows per block for pass 0 with u8 X: the float X^T X of a block stays
 * exact while rows * maxcode^2 <= 2^24. */
static int64_t exact_rows(const batch *bt, int64_t d, int64_t chunk, int64_t *largest)
{
    const uint8_t *x = bt->x;
    int64_t i, n = bt->n * d, top = 0, lim;
    for (i = 0; i < n; i++)
        if (x[i] > top)
            top = x[i];
    *largest = top;
    if (top == 0)
        return chunk;
    lim = ((int64_t)1 << 24) / (top * top);
    return lim < chunk ? (lim < 1 ? 1 : lim) : chunk;
}

void tsq__reg_feed_rows(fit_state *f, const batch *bt)
{
    int64_t chunk = f->chunk, first, top = 255;
    int32_t products = PRODUCTS_ALL, cached = f->vcache && f->pass > 0 && bt->n == f->vrows;
    int32_t u8 = bt->xdt == TSQ_DTYPE_U8, need_xf, int_gram;
    if (cached)
        products = tsq__reg_products_plan(f);
    if (f->pass == 0 && u8)
        chunk = exact_rows(bt, f->d, chunk, &top);
    int_gram = f->pass == 0 && u8 && f->vnni && top <= 127;
    need_xf = u8 && ((f->pass == 0 && !int_gram) || (f->zpass && !f->avx512) ||
                     (!f->int_xw && (products == PRODUCTS_ALL || f->ndense > 0)));
    if (u8 && f->int_xw && f->pass > 0 && products == PRODUCTS_ALL)
        tsq__reg_panels_weights(f->w, f->d, NULL, f->C, f->dec);
    if (cached && !need_xf && products != PRODUCTS_ALL && !f->ndense && !f->zpass &&
        bt->ydt == TSQ_DTYPE_U8)
        chunk = bt->n; /* no scratch per piece: one piece, one fork */
    for (first = 0; first < bt->n; first += chunk) {
        block_job job;
        int64_t n = bt->n - first < chunk ? bt->n - first : chunk;
        size_t xsz = u8 ? 1 : sizeof(float);
        memset(&job, 0, sizeof job);
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
        job.xf = u8 ? f->xf : job.bt.x;
        job.v = cached ? f->vcache + first * f->C : f->vf;
        job.products = products;
        job.convert = need_xf;
        job.int_gram = int_gram;
        if (f->pass == 0) {
            if (need_xf)
                tsq__parallel_for(threads_for(f, n * f->d / 8), job.nblocks, convert_block,
                                  &job);
            stats_rows(f, &job);
        } else {
            eval_rows(f, &job);
        }
        f->rows += (double)n;
    }
    if (cached)
        tsq__reg_products_done(f);
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
    TSQ_FORWARD_IF_ERROR(tsq__reg_check_no_exchange(reg, "regressor_feed"));
    st = tsq__reg_check_batch(reg, "regressor_feed", X, Y, P, &bt);
    if (st != TSQ_OK)
        return st;
    tsq__reg_feed_rows(reg->fit, &bt);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

