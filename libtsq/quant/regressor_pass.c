/*
 * The end of a pass: from the pass's sums, the start iterate (pass 0),
 * round k's alpha/b and w updates on every channel (regressor_sweep.c)
 * against z0 or the pass's z, the best iterate per channel and the
 * history; then the polish (regressor_polish_pass.c). With the linear loss
 * every objective follows from the statistics, so pass 0 is the only one.
 * The per-channel solves run on the channels [c0, c1) only (all of them
 * unless tsq_regressor_set_share split them); what needs every channel
 * (the relaxed objective, the early stop, the next pass) waits for
 * tsq__reg_conclude, which a shared fit runs after the shares' import.
 */
#include "regressor_fit.h"
#include "blas.h"
#include "quant/progress.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* The end of a pass: start, rounds, best iterate, history              */
/* ------------------------------------------------------------------ */

tsq__gram tsq__reg_gram_of(const fit_state *f)
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

static void start_channels(void *arg, int64_t task)
{
    round_job *job = arg;
    fit_state *f = job->f;
    void *scratch = (unsigned char *)job->lowbit + (size_t)task * job->lowbit_bytes;
    int64_t c;
    for (c = f->c0 + task; c < f->c1; c += job->tasks) {
        tsq__lowbit_approx(&f->opt.alphabet, job->w0 + c, f->d, f->C, f->w + c * f->d,
                           &f->alpha[c], scratch);
        f->b[c] = tsq__profile_offset(&job->g, job->zsum[c], f->w + c * f->d, f->alpha[c]);
    }
}

/* r = M w for every channel (rows of f->r, channel-major) and w^T M w into
 * f->wmw: one dgemm per thread's range of channels, instead of a d x d
 * form per channel. f->r then serves the next round's sweeps. */
typedef struct forms_job {
    fit_state *f;
    const tsq__gram *g;
    int64_t first, end, per;
} forms_job;

static void forms_task(void *arg, int64_t k)
{
    forms_job *job = arg;
    fit_state *f = job->f;
    int64_t d = f->d, c0 = job->first + k * job->per;
    int64_t c1 = c0 + job->per < job->end ? c0 + job->per : job->end, c, j;
    if (c0 >= c1)
        return;
    for (j = c0 * d; j < c1 * d; j++)
        f->wd[j] = (double)f->w[j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(c1 - c0), (int)d, (int)d, 1.0,
                f->wd + c0 * d, (int)d, job->g->m, (int)d, 0.0, f->r + c0 * d, (int)d);
    for (c = c0; c < c1; c++) {
        double s = 0.0;
        for (j = 0; j < d; j++)
            s += (double)f->w[c * d + j] * f->r[c * d + j];
        f->wmw[c] = s;
    }
}

/* The forms of channels [c0, c1); a channel's do not depend on the range. */
static void quad_forms_of(fit_state *f, const tsq__gram *g, int64_t c0, int64_t c1)
{
    forms_job job;
    int64_t tasks = f->threads < c1 - c0 ? f->threads : c1 - c0;
    if (tasks < 1)
        tasks = 1;
    job.f = f;
    job.g = g;
    job.first = c0;
    job.end = c1;
    job.per = (c1 - c0 + tasks - 1) / tasks;
    tsq__parallel_for(tasks, tasks, forms_task, &job);
    f->r_valid = 1;
}

void tsq__reg_quad_forms(fit_state *f, const tsq__gram *g)
{
    quad_forms_of(f, g, 0, f->C);
}

typedef struct linear_job {
    const fit_state *f;
    const tsq__gram *g;
    const double *xtz, *zsum, *zsq;
    int64_t c0;
} linear_job;

static void linear_channel(void *arg, int64_t i)
{
    const linear_job *job = arg;
    const fit_state *f = job->f;
    int64_t d = f->d, c = job->c0 + i;
    column(job->xtz, d, f->C, c, f->t + c * d);
    f->lin[c] = tsq__linear_objective(job->g, f->t + c * d, job->zsum[c], job->zsq[c],
                                      f->w + c * d, f->wmw[c], f->alpha[c], f->b[c]);
}

/* The linear objective of channels [c0, c1) against (xtz, zsum, zsq)
 * into f->lin, w^T M w taken from f->wmw, spread over the threads. */
static void linear_channels(const fit_state *f, const tsq__gram *g, const double *xtz,
                            const double *zsum, const double *zsq, int64_t c0, int64_t c1)
{
    linear_job job;
    job.f = f;
    job.g = g;
    job.xtz = xtz;
    job.zsum = zsum;
    job.zsq = zsq;
    job.c0 = c0;
    if (c1 > c0)
        tsq__parallel_for(threads_for(f, (c1 - c0) * f->d * 4), c1 - c0, linear_channel, &job);
}

/* Sum of f->lin over every channel, in channel order: the total depends
 * neither on the threads nor on the shares. */
static double linear_sum(const fit_state *f, double *per_channel)
{
    int64_t c;
    double total = 0.0;
    for (c = 0; c < f->C; c++) {
        if (per_channel)
            per_channel[c] = f->lin[c];
        total += f->lin[c];
    }
    return total;
}

/* The linear objective summed over every channel (none shared). */
static double linear_total(const fit_state *f, const tsq__gram *g, const double *xtz,
                           const double *zsum, const double *zsq, double *per_channel)
{
    linear_channels(f, g, xtz, zsum, zsq, 0, f->C);
    return linear_sum(f, per_channel);
}

/* Iterate h_count has objective obj[] per channel: record it, keep the best
 * per channel, extend the history. */
void tsq__reg_record_iterate(fit_state *f, const double *obj, double relaxed, double lambda)
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

/* One round of alpha/b and w updates on channels [c0, c1) against the
 * targets (xtz, zsum): centred targets, the blocked sweeps
 * (regressor_sweep.c), then each channel's profiled offset and whether it
 * moved. */
static void run_round(fit_state *f, const tsq__gram *g, const double *xtz, const double *zsum,
                      const double *zsq)
{
    int64_t d = f->d, C = f->C, c0 = f->c0, c1 = f->c1, j, c;
    double maxdiag = 0.0, tol = f->opt.tol;
    tsq__sweep_args a;
    (void)zsq;
    for (j = 0; j < d; j++) {
        maxdiag = fmax(maxdiag, g->m[j * d + j]);
        for (c = c0; c < c1; c++) /* channel-major for the sweeps */
            f->tt[c * d + j] = g->offset ? xtz[j * C + c] - g->colsum[j] * zsum[c] / g->rows
                                         : xtz[j * C + c];
    }
    memcpy(f->alpha_prev, f->alpha, (size_t)C * sizeof f->alpha[0]);
    memcpy(f->b_prev, f->b, (size_t)C * sizeof f->b[0]);
    memset(&a, 0, sizeof a);
    a.g = g;
    a.t = f->tt;
    a.a = &f->opt.alphabet;
    a.sweeps = f->opt.sweeps;
    /* -1: the restarts pay with the linear loss (no passes over the data,
     * the descents are all the work), not with the quantized one (the
     * polish gains far more per second): docs/regressor.md, "Speed". */
    a.restarts = f->opt.restarts >= 0 ? f->opt.restarts
                                       : f->opt.loss == TSQ_LOSS_LINEAR ? 4 : 0;
    a.c0 = c0;
    a.C = c1;
    a.diag_floor = 1e-12 * maxdiag;
    a.w = f->w;
    a.alpha = f->alpha;
    a.changes = f->changes;
    a.r = f->r;
    a.r_try = f->r + d * C;
    a.wd = f->wd;
    a.dw = f->dw;
    a.w_try = f->w_try;
    a.active = f->active;
    a.alpha_try = f->alpha_try;
    a.best = f->sbest;
    a.count = f->count;
    a.tries = f->tries;
    a.fresh = !f->r_valid;
    tsq__sweep_round(&a, f->threads);
    f->r_valid = 1; /* r = M w of the round's w: the next round starts from it */
    for (c = c0; c < c1; c++) {
        double alpha0 = f->alpha_prev[c], b0 = f->b_prev[c], wmw = 0.0;
        for (j = 0; j < d; j++) /* r = M w of the round's w */
            wmw += (double)f->w[c * d + j] * f->r[c * d + j];
        f->wmw[c] = wmw;
        f->b[c] = tsq__profile_offset(g, zsum[c], f->w + c * d, f->alpha[c]);
        f->moved[c] = f->changes[c] > 0 || fabs(f->alpha[c] - alpha0) > tol * alpha0 ||
                      fabs(f->b[c] - b0) > tol * (fabs(b0) + alpha0);
    }
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
    tsq__reg_reset_pass_sums(f);
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

/* The start iterate of channels [c0, c1): the exact low-bit approximation
 * of W_init, or of the least-squares solution for z0 when W_init is NULL
 * (solved for every channel: one factorisation serves them all). */
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
        if (!tsq__least_squares(g->m, d, w0, C, m_work, f->threads)) {
            tsq__free(ctx, m_work);
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "%s: X^T X is not positive semi-definite, so no data gave these "
                             "statistics (an imported array that is not a sum of exports?)",
                             where);
        }
        tsq__free(ctx, m_work);
    }
    job.f = f;
    job.g = *g;
    job.zsum = f->z0sum;
    job.w0 = w0;
    job.tasks = f->threads < f->c1 - f->c0 ? f->threads : f->c1 - f->c0;
    if (job.tasks < 1)
        job.tasks = 1;
    job.lowbit_bytes = align64(tsq__lowbit_scratch_bytes(d));
    job.lowbit = tsq__alloc(ctx, job.lowbit_bytes * (size_t)job.tasks);
    if (!job.lowbit)
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    tsq__parallel_for(job.tasks, job.tasks, start_channels, &job);
    tsq__free(ctx, job.lowbit);
    quad_forms_of(f, g, f->c0, f->c1);
    return TSQ_OK;
}

void tsq__reg_finish(tsq_regressor *reg)
{
    fit_state *f = reg->fit;
    int64_t c, j;
    /* A channel left with all-zero weights (e.g. its codes are all 0):
     * alpha changes nothing there, and 1 is safer downstream than the
     * start's tiny value (thresholds divide by alpha). */
    for (c = 0; c < f->C; c++) {
        for (j = 0; j < f->d && !f->best_w[c * f->d + j]; j++)
            ;
        if (j == f->d)
            f->best_alpha[c] = 1.0;
    }
    f->status = FIT_DONE;
    tsq__reg_cache_free(reg->obj.ctx, f);
    tsq__free(reg->obj.ctx, f->work); /* statistics and scratch; results stay */
    f->work = NULL;
}

static void abandon(tsq_regressor *reg)
{
    tsq__reg_fit_free(reg->obj.ctx, reg->fit);
    reg->fit = NULL;
}

/* The linear loss: every round and objective from the statistics. */
static void run_linear(fit_state *f, const tsq__gram *g)
{
    double *obj = f->zcost; /* per-channel objectives */
    int32_t r;
    double total = linear_total(f, g, f->g0, f->z0sum, f->z0sq, obj);
    tsq__reg_record_iterate(f, obj, total, 0.0);
    for (r = 1; r <= f->opt.rounds; r++) {
        run_round(f, g, f->g0, f->z0sum, f->z0sq);
        total = linear_total(f, g, f->g0, f->z0sum, f->z0sq, obj);
        tsq__reg_record_iterate(f, obj, total, 0.0);
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
        if (f->gram[i * d + i] < 0.0) { /* a sum of squares: only an import gets here */
            double v = f->gram[i * d + i];
            abandon(reg); /* frees f */
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "%s: X^T X has a negative diagonal entry %g at %lld: no data gave "
                             "these statistics (an imported array that is not a sum of "
                             "exports?)", where, v, (long long)i);
        }
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
    if (f->opt.offset) /* centre: X^T X - s s^T / N (docs/method.md §3.6) */
        for (i = 0; i < d; i++)
            for (j = 0; j < d; j++)
                f->gram[i * d + j] -= f->colsum[i] * f->colsum[j] / f->rows0;
    g = tsq__reg_gram_of(f);
    st = start_iterate(reg, where, &g);
    if (st != TSQ_OK) {
        abandon(reg);
        return st;
    }
    if (f->opt.loss == TSQ_LOSS_LINEAR) {
        run_linear(f, &g);
        tsq__reg_finish(reg);
        *done = 1;
        return TSQ_OK;
    }
    /* Quantized loss: entry 0's relaxed value is its linear fit to z0
     * (summed by conclude_start); its true objective comes from pass 1. */
    linear_channels(f, &g, f->g0, f->z0sum, f->z0sq, f->c0, f->c1);
    return tsq__reg_solved(reg, EXCHANGE_ITERATE, done);
}

static tsq_status conclude_start(tsq_regressor *reg, int32_t *done)
{
    fit_state *f = reg->fit;
    f->h_relax[0] = linear_sum(f, NULL);
    tsq__log(reg->obj.ctx, REG_LOG_INFO, "regressor: pass 0: statistics of %.0f rows, d = %lld, "
             "C = %lld; the start's linear objective %g", f->rows0, (long long)f->d,
             (long long)f->C, f->h_relax[0]);
    setup_pass(f, 1);
    *done = 0;
    return TSQ_OK;
}

static tsq_status end_later_pass(tsq_regressor *reg, const char *where, int32_t *done)
{
    fit_state *f = reg->fit;
    int32_t k = f->pass, it = k - 1; /* this pass evaluated iterate k-1 */
    tsq__gram g = tsq__reg_gram_of(f);
    double relaxed;
    int64_t c;
    if (f->rows != f->rows0) {
        double seen = f->rows;
        abandon(reg);
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                         "%s: pass %d saw %.0f rows, the first pass %.0f", where, (int)k, seen,
                         g.rows);
    }
    if (f->polishing)
        return tsq__reg_end_polish_pass(reg, done);
    for (c = 0; c < f->C; c++) { /* counts of squared code errors -> output units */
        double delta2 = (double)f->q[c].delta * f->q[c].delta;
        f->obj[c] *= delta2;
        f->zcost[c] *= delta2;
    }
    relaxed = f->h_relax[it];
    tsq__reg_record_iterate(f, f->obj, relaxed, it == 0 ? 0.0 : f->h_lambda[it]);
    tsq__log(reg->obj.ctx, REG_LOG_INFO, "regressor: pass %d: iterate %d has objective %g "
             "(best per channel %g)", (int)k, (int)it, f->h_obj[it], f->h_best[it]);
    if (it == f->opt.rounds)
        return tsq__reg_finish_or_polish(reg, done);
    /* Round k's update, against z0 (linear round) or this pass's z. */
    if (f->zpass) {
        run_round(f, &g, f->g, f->zsum, f->zsq);
        linear_channels(f, &g, f->g, f->zsum, f->zsq, f->c0, f->c1);
    } else {
        run_round(f, &g, f->g0, f->z0sum, f->z0sq);
        linear_channels(f, &g, f->g0, f->z0sum, f->z0sq, f->c0, f->c1);
    }
    return tsq__reg_solved(reg, EXCHANGE_ITERATE, done);
}

/* After round k's solves on every channel: its relaxed objective, the
 * early stop, the next pass. */
static tsq_status conclude_round(tsq_regressor *reg, int32_t *done)
{
    fit_state *f = reg->fit;
    int32_t k = f->pass;
    double relaxed = 0.0;
    int64_t c;
    if (f->zpass) {
        for (c = 0; c < f->C; c++)
            relaxed += f->zcost[c];
        relaxed += f->lambda * linear_sum(f, NULL);
    } else {
        relaxed = linear_sum(f, NULL);
    }
    f->h_relax[k] = relaxed;
    f->h_lambda[k] = f->zpass ? f->lambda : 0.0;
    tsq__log(reg->obj.ctx, REG_LOG_DEBUG, "regressor: round %d (%s): relaxed objective %g, "
             "lambda %g", (int)k, f->zpass ? "z step" : "linear", relaxed, f->h_lambda[k]);
    if (stalled(f) && f->zpass) /* iterate k is iterate k-1 up to the tolerance */
        return tsq__reg_finish_or_polish(reg, done);
    setup_pass(f, k + 1);
    *done = 0;
    return TSQ_OK;
}

tsq_status tsq__reg_solved(tsq_regressor *reg, int32_t exchange, int32_t *done)
{
    if (reg->fit->shares > 1) {
        reg->fit->exchange = exchange;
        *done = 0;
        return TSQ_OK;
    }
    return tsq__reg_conclude(reg, done);
}

tsq_status tsq__reg_conclude(tsq_regressor *reg, int32_t *done)
{
    fit_state *f = reg->fit;
    if (f->polishing)
        return tsq__reg_conclude_search(reg, done);
    return f->pass == 0 ? conclude_start(reg, done) : conclude_round(reg, done);
}

tsq_status tsq__reg_end_pass(tsq_regressor *reg, const char *where, int32_t *done)
{
    tsq_status st = reg->fit->pass == 0 ? end_first_pass(reg, where, done)
                                        : end_later_pass(reg, where, done);
    /* The progress callback (quant/progress.c); a cancel abandons the fit. */
    if (st == TSQ_OK)
        st = tsq__reg_progress(reg, where, *done);
    if (st == TSQ_OK && reg->fit->shares > 1 && !reg->fit->exchange) {
        /* Nothing per channel was solved: the pass's decisions are taken,
         * and the import reports them, so that every pass ends the same way. */
        reg->fit->exchange = EXCHANGE_EMPTY;
        reg->fit->exchange_done = *done;
        *done = 0;
    }
    return st;
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
    TSQ_FORWARD_IF_ERROR(tsq__reg_check_no_exchange(reg, "regressor_end_pass"));
    st = tsq__reg_end_pass(reg, "regressor_end_pass", done);
    if (st == TSQ_OK)
        tsq__clear(&reg->obj);
    return st;
}

