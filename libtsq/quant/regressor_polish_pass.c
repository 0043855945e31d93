/*
 * The polish's passes, driver side (docs/regressor.md "Polish"): after the
 * rounds, each channel's best w is fixed; the histograms' ranges and
 * windows, the searches on them (regressor_polish.c), the choice of the
 * best candidate per channel after each exact check, the compass steps,
 * and the end of the fit.
 */
#include "regressor_fit.h"

#include <float.h>
#include <math.h>
#include <string.h>

typedef struct polish_job {
    fit_state *f;
    tsq__gram g;
    int64_t c0;  /* the searches: task i is channel c0 + i */
} polish_job;

/* The histogram's range for channel c: mean(u) +- TSQ__POLISH_SPREAD sd(u),
 * both from the statistics (w^T M w is the centred sum of squares with
 * offsets, the raw one without). */
/* Channel c's candidates, as doubles and as the floats evaluated; one whose
 * alpha or b would not be a positive finite float (inputs of extreme
 * magnitude) is replaced by the centre. */
static void set_candidates(fit_state *f, int64_t c, const double *cad, const double *cbd)
{
    int64_t k, C = f->C;
    for (k = 0; k < TSQ__POLISH_CAND; k++) {
        int ok = (float)cad[k] > 0.0f && isfinite((float)cad[k]) && isfinite((float)cbd[k]);
        f->cad[k * C + c] = ok ? cad[k] : cad[0];
        f->cbd[k * C + c] = ok ? cbd[k] : cbd[0];
        f->caf[k * C + c] = (float)f->cad[k * C + c];
        f->cbf[k * C + c] = (float)f->cbd[k * C + c];
    }
}

static void polish_range(void *arg, int64_t c)
{
    polish_job *job = arg;
    fit_state *f = job->f;
    const int8_t *w = f->w + c * f->d;
    double n = f->rows0, su = 0.0, var, sd, width;
    int64_t j;
    for (j = 0; j < f->d; j++)
        su += (double)w[j] * f->colsum[j];
    f->ubar[c] = su / n;
    var = f->wmw[c] / n - (job->g.offset ? 0.0 : f->ubar[c] * f->ubar[c]);
    sd = var > 0.0 ? sqrt(var) : 0.0;
    width = 2.0 * TSQ__POLISH_SPREAD * sd;
    if (!(width > 1e-30 * (fabs(f->ubar[c]) + 1.0)))
        width = fabs(f->ubar[c]) + 1.0; /* u (nearly) constant: one wide bin does */
    f->hlo[c] = (float)(f->ubar[c] - 0.5 * width);
    f->hscale[c] = (float)(f->hbins / width);
}

/* After the rounds: each channel's best iterate becomes the centre, its w
 * the fixed weights; pass 1 builds the histograms. */
static void begin_polish(fit_state *f)
{
    int64_t c, j, C = f->C, d = f->d;
    polish_job job;
    for (c = 0; c < C; c++) {
        memcpy(f->w + c * d, f->best_w + c * d, (size_t)d);
        f->alpha[c] = f->best_alpha[c];
        f->b[c] = f->best_b[c];
        for (j = 0; j < d; j++)
            f->wf[j * C + c] = (float)f->w[c * d + j];
    }
    job.f = f;
    job.g = tsq__reg_gram_of(f);
    tsq__reg_quad_forms(f, &job.g);
    tsq__parallel_for(threads_for(f, C * d), C, polish_range, &job);
    f->polishing = 1;
    f->pstage = POLISH_HIST;
    f->pass++;
    f->zpass = 0;
    tsq__reg_reset_pass_sums(f);
}

static void polish_search(void *arg, int64_t i)
{
    polish_job *job = arg;
    fit_state *f = job->f;
    int64_t c = job->c0 + i;
    double cad[TSQ__POLISH_CAND], cbd[TSQ__POLISH_CAND];
    tsq__polish_search_args a;
    a.hist = f->hist + c * f->nbins * f->hbins;
    a.bins = f->hbins;
    a.lo = f->hlo[c];
    a.scale = f->hscale[c];
    a.ubar = f->ubar[c];
    a.alpha = f->alpha[c];
    a.b = f->b[c];
    a.oq = &f->q[c];
    tsq__polish_search(&a, cad, cbd, f->hscratch + c * 5 * f->hbins);
    set_candidates(f, c, cad, cbd);
}

tsq_status tsq__reg_finish_or_polish(tsq_regressor *reg, int32_t *done)
{
    fit_state *f = reg->fit;
    if (f->opt.polish && f->polishing == 0) {
        begin_polish(f);
        *done = 0;
        return TSQ_OK;
    }
    tsq__reg_finish(reg);
    *done = 1;
    return TSQ_OK;
}

/* The next compass pass's candidates; 0 when every step is below the
 * float resolution of alpha and b (nothing left to search). */
static int setup_compass(fit_state *f)
{
    int64_t c, C = f->C, live = 0;
    for (c = 0; c < C; c++) {
        double cad[TSQ__POLISH_CAND], cbd[TSQ__POLISH_CAND];
        tsq__polish_compass(f->alpha[c], f->b[c], f->ph[c], f->pg[c], f->ubar[c],
                            f->q[c].delta, cad, cbd);
        live += f->ph[c] > 1e-7 || f->pg[c] * f->q[c].delta > 1e-7 * (fabs(f->b[c]) + 1e-30);
        set_candidates(f, c, cad, cbd);
    }
    return live > 0;
}

/* Pass 3's windows for channel c around the preimages (t_m - b) / alpha
 * of its thresholds t_m (the lower ends of bins 1 .. maxcode), each 8
 * bins of pass 1 wide. */
static void setup_windows(fit_state *f, int64_t c)
{
    float lo[256], hi[256];
    const tsq__outq *q = &f->q[c];
    double half = 4.0 / f->hscale[c];
    int32_t m;
    tsq__zstep_bins(q, 0.0, lo, hi);
    f->wscale[c] = (float)(f->fb / (2.0 * half));
    for (m = 0; m < f->nw; m++) {
        int64_t at = c * f->nw + m;
        int used = m + 1 <= q->maxcode && lo[m + 1] <= hi[m + 1];
        f->wused[at] = (int8_t)used;
        f->wedge[at] = used ? lo[m + 1] : 0.0f;
        f->wlo[at] = used ? (float)((lo[m + 1] - f->b[c]) / f->alpha[c] - half) : FLT_MAX;
    }
}

static void window_search(void *arg, int64_t i)
{
    polish_job *job = arg;
    fit_state *f = job->f;
    int64_t c = job->c0 + i;
    double cad[TSQ__POLISH_CAND], cbd[TSQ__POLISH_CAND];
    tsq__polish_window_search_args a;
    a.hist = f->hist + c * f->nw * f->nbins * f->fb;
    a.wlo = f->wlo + c * f->nw;
    a.edge = f->wedge + c * f->nw;
    a.used = f->wused + c * f->nw;
    a.wscale = f->wscale[c];
    a.nw = f->nw;
    a.fb = f->fb;
    a.alpha = f->alpha[c];
    a.b = f->b[c];
    a.oq = &f->q[c];
    tsq__polish_window_search(&a, cad, cbd, f->hscratch + c * 5 * f->hbins);
    set_candidates(f, c, cad, cbd);
}

/* Each channel takes its best candidate: after a search, ties go to the
 * search's order, then to the centre; in the compass, to the centre. The
 * centre is the previous best, so the polish never loses. Then the
 * compass steps: one bin of the histogram just searched, later grown by
 * 1.5 after a move and halved when the centre stays best. */
static double take_best(fit_state *f, int64_t *moved)
{
    int64_t c, k, C = f->C;
    double total = 0.0;
    for (c = 0; c < C; c++) {
        double delta2 = (double)f->q[c].delta * f->q[c].delta;
        int64_t best = f->pstage == POLISH_COMPASS ? 0 : 1;
        for (k = 0; k < TSQ__POLISH_CAND; k++)
            if (f->cand[k * C + c] < f->cand[best * C + c])
                best = k;
        *moved += best != 0;
        f->alpha[c] = f->cad[best * C + c];
        f->b[c] = f->cbd[best * C + c];
        f->obj[c] = f->cand[best * C + c] * delta2;
        total += f->obj[c];
        if (f->pstage != POLISH_COMPASS) {
            double width = f->pstage == POLISH_VERIFY ? 1.0 / f->hscale[c] : 1.0 / f->wscale[c];
            double sd = f->hbins / (f->hscale[c] * 2.0 * TSQ__POLISH_SPREAD);
            f->ph[c] = width / (2.0 * sd);
            f->pg[c] = f->alpha[c] * width / f->q[c].delta;
        } else if (best) {
            f->ph[c] = fmin(1.5 * f->ph[c], 0.25);
            f->pg[c] = fmin(1.5 * f->pg[c], 1.0);
        } else {
            f->ph[c] *= 0.5;
            f->pg[c] *= 0.5;
        }
    }
    return total;
}

tsq_status tsq__reg_conclude_search(tsq_regressor *reg, int32_t *done)
{
    fit_state *f = reg->fit;
    f->pstage++;
    f->polishing++;
    f->pass++;
    tsq__reg_reset_pass_sums(f);
    *done = 0;
    return TSQ_OK;
}

/* Ends a polish pass (see regressor_polish.c for the sequence). A search
 * (after a histogram pass) runs on this share's channels; the checks of
 * candidates, cheap, on every channel. */
tsq_status tsq__reg_end_polish_pass(tsq_regressor *reg, int32_t *done)
{
    fit_state *f = reg->fit;
    int64_t c, moved = 0;
    double total;
    int32_t next;
    polish_job job;
    job.f = f;
    job.g = tsq__reg_gram_of(f);
    job.c0 = f->c0;
    if (f->pstage == POLISH_HIST || f->pstage == POLISH_WINDOW) {
        int64_t n = f->c1 - f->c0; /* this share's channels */
        if (n > 0)
            tsq__parallel_for(threads_for(f, n * TSQ__POLISH_CELLS * 8), n,
                              f->pstage == POLISH_HIST ? polish_search : window_search, &job);
        return tsq__reg_solved(reg, EXCHANGE_CANDIDATES, done);
    }
    total = take_best(f, &moved);
    tsq__reg_record_iterate(f, f->obj, total, 0.0);
    tsq__log(reg->obj.ctx, REG_LOG_DEBUG, "regressor: polish pass %d: objective %g, %lld of %lld "
             "channels moved", (int)f->polishing, total, (long long)moved, (long long)f->C);
    next = f->pstage == POLISH_VERIFY && f->fb ? POLISH_WINDOW : POLISH_COMPASS;
    if (f->polishing + (next == POLISH_WINDOW ? 2 : 1) > f->opt.polish ||
        (next == POLISH_COMPASS && !setup_compass(f))) {
        tsq__log(reg->obj.ctx, REG_LOG_INFO, "regressor: polished to objective %g", total);
        tsq__reg_finish(reg);
        *done = 1;
        return TSQ_OK;
    }
    if (next == POLISH_WINDOW)
        for (c = 0; c < f->C; c++)
            setup_windows(f, c);
    f->pstage = next;
    f->polishing++;
    f->pass++;
    tsq__reg_reset_pass_sums(f);
    *done = 0;
    return TSQ_OK;
}

