/*
 * Coordinate descent on w for many channels at once, in blocks
 * (docs/method.md §3.3, docs/regressor.md "Blocked sweeps"). One round of
 * one channel is the descent of regressor_solve.c's tsq__channel_round:
 * alpha refit, cyclic sweeps over the coordinates each followed by an
 * alpha refit, then descents restarted from scaled alphas, the best kept.
 * Done one channel and one coordinate at a time, each change costs a
 * rank-1 update r += (M row j) delta of r = M w, d memory-bound operations.
 * Here a task owns a range of channels and sweeps them together, 64
 * coordinates at a time: inside a block each channel updates a local copy
 * of r over the block only (M's 64 x 64 diagonal block, in cache); at the
 * end of the block the channels that changed many weights there are
 * brought up to date by one dgemm per run of such channels,
 * R[run, :] += dW[run, J] M[J, :]; a channel with a few changes takes them
 * as daxpys (a dgemm would cost d per weight of the block, changed or not).
 * Which path a channel takes depends on its own changes only, so results
 * do not depend on how the channels are split over threads. The
 * coordinates are visited in the same order, and each decision sees the
 * same r, as in the one-at-a-time descent. R and the targets are stored
 * channel-major (C x d), so that a channel's r is contiguous.
 * M, r and the targets are float64: r is a running sum of up to d rows of
 * M, and a decision compares it with t / alpha near ties, where float's
 * 24 bits would flip weights the double path keeps.
 */
#include "regressor_internal.h"
#include "blas.h"

#include <math.h>
#include <string.h>

#define BLOCK 64
/* A channel with at most this many changes in a block takes daxpys. */
#define SPARSE 8

/* The scales of alpha that restarted descents start from, in order. */
static const double restart_scales[4] = {0.5, 0.7, 1.4, 2.0};

typedef struct task {
    const tsq__sweep_args *a;
    int64_t c0, c1;
} task;

static double dot_w(const int8_t *w, const double *m, int64_t d)
{
    double s = 0.0;
    int64_t j;
    for (j = 0; j < d; j++)
        s += (double)w[j] * m[j];
    return s;
}

/* alpha = w.t / w.M w; a negative fit flips w (and its r column) with a
 * symmetric alphabet; alpha kept when w.M w = 0 or the fit is <= 0. */
static int64_t refit(const tsq__sweep_args *a, int64_t c, int8_t *w, double *r, double *alpha)
{
    int64_t d = a->g->d, j, flipped = 0;
    double wt = dot_w(w, a->t + c * d, d), wmw = dot_w(w, r + c * d, d);
    if (!(wmw > 0.0))
        return 0;
    if (wt < 0.0 && a->a->symmetric) {
        for (j = 0; j < d; j++) {
            flipped += w[j] != 0;
            w[j] = (int8_t)-w[j];
            r[c * d + j] = -r[c * d + j];
        }
        wt = -wt;
    }
    if (wt > 0.0)
        *alpha = wt / wmw;
    return flipped;
}

/* R[c0:c1, :] = W M for the task's channels (rows of R are the r = M w
 * of the channels, M symmetric). */
static void gram_times(const task *tk, const int8_t *w, double *r)
{
    const tsq__sweep_args *a = tk->a;
    int64_t d = a->g->d, i;
    for (i = tk->c0 * d; i < tk->c1 * d; i++)
        a->wd[i] = (double)w[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(tk->c1 - tk->c0), (int)d,
                (int)d, 1.0, a->wd + tk->c0 * d, (int)d, a->g->m, (int)d, 0.0, r + tk->c0 * d,
                (int)d);
}

/* R[c0:c1, :] += dW[c0:c1, J] M[J, :] for a run of dense channels. */
static void dense_update(const tsq__sweep_args *a, int64_t c0, int64_t c1, int64_t j0,
                         int64_t nb, double *r)
{
    int64_t d = a->g->d;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(c1 - c0), (int)d, (int)nb, 1.0,
                a->dw + c0 * BLOCK, BLOCK, a->g->m + j0 * d, (int)d, 1.0, r + c0 * d, (int)d);
}

/* One cyclic sweep of the task's active channels at their alphas; adds
 * each channel's changes to changed[c]. */
static void sweep(const task *tk, int8_t *w_all, double *r, const double *alpha,
                  const int8_t *active, int64_t *changed)
{
    const tsq__sweep_args *a = tk->a;
    const double *m = a->g->m;
    int64_t d = a->g->d, j0, c;
    int32_t zero = tsq__alphabet_nearest(a->a, 0.0);
    for (j0 = 0; j0 < d; j0 += BLOCK) {
        int64_t nb = d - j0 < BLOCK ? d - j0 : BLOCK, i, j, run = -1;
        for (c = tk->c0; c <= tk->c1; c++) {
            int64_t n = 0;
            if (c < tk->c1 && active[c]) {
                double rloc[BLOCK], *dw = a->dw + c * BLOCK;
                int8_t *w = w_all + c * d;
                const double *t = a->t + c * d + j0;
                memcpy(rloc, r + c * d + j0, (size_t)nb * sizeof rloc[0]);
                for (j = 0; j < nb; j++) {
                    const double *row = m + (j0 + j) * d + j0;
                    double mjj = row[j];
                    int32_t target, delta;
                    if (mjj > a->diag_floor)
                        target = tsq__alphabet_nearest(
                            a->a, (t[j] / alpha[c] - (rloc[j] - mjj * w[j0 + j])) / mjj);
                    else
                        target = zero; /* a column without variance: its weight does nothing */
                    delta = target - w[j0 + j];
                    dw[j] = delta;
                    if (!delta)
                        continue;
                    for (i = j + 1; i < nb; i++)
                        rloc[i] += row[i] * delta;
                    w[j0 + j] = (int8_t)target;
                    n++;
                }
                changed[c] += n;
                if (n > 0 && n <= SPARSE) /* few changes: a daxpy each, in order */
                    for (j = 0; j < nb; j++)
                        if (dw[j] != 0.0)
                            cblas_daxpy((int)d, dw[j], m + (j0 + j) * d, 1, r + c * d, 1);
            }
            /* runs of consecutive dense channels share one dgemm */
            if (c < tk->c1 && n > SPARSE) {
                if (run < 0)
                    run = c;
            } else if (run >= 0) {
                dense_update(a, run, c, j0, nb, r);
                run = -1;
            }
        }
    }
}

/* Sweeps with alpha refits until a channel's sweep changes nothing (it
 * then stops) or `sweeps` ran; adds the changes to total[c]. */
static void descend(const task *tk, int8_t *w, double *r, double *alpha, int64_t *total)
{
    const tsq__sweep_args *a = tk->a;
    int64_t c, d = a->g->d, live = 0, *changed = a->count;
    int8_t *active = a->active;
    int32_t s;
    for (c = tk->c0; c < tk->c1; c++) {
        total[c] += refit(a, c, w + c * d, r, &alpha[c]);
        active[c] = 1;
        live++;
    }
    for (s = 0; s < a->sweeps && live; s++) {
        for (c = tk->c0; c < tk->c1; c++)
            changed[c] = 0;
        sweep(tk, w, r, alpha, active, changed);
        for (c = tk->c0; c < tk->c1; c++) {
            if (!active[c])
                continue;
            total[c] += changed[c] + refit(a, c, w + c * d, r, &alpha[c]);
            if (!changed[c]) {
                active[c] = 0;
                live--;
            }
        }
    }
}

static double objective(const tsq__sweep_args *a, int64_t c, const int8_t *w, const double *r,
                        double alpha)
{
    int64_t d = a->g->d;
    return alpha * alpha * dot_w(w, r + c * d, d) - 2.0 * alpha * dot_w(w, a->t + c * d, d);
}

static void round_task(void *arg, int64_t k)
{
    const task *tk = (const task *)arg + k;
    const tsq__sweep_args *a = tk->a;
    int64_t d = a->g->d, c, j, s;
    for (c = tk->c0; c < tk->c1; c++)
        a->changes[c] = 0;
    if (a->fresh) /* else r carries over from the last round (same w) */
        gram_times(tk, a->w, a->r);
    descend(tk, a->w, a->r, a->alpha, a->changes);
    for (c = tk->c0; c < tk->c1; c++)
        a->best[c] = objective(a, c, a->w + c * d, a->r, a->alpha[c]);
    for (s = 0; s < a->restarts && s < 4; s++) {
        /* Coordinate descent stops where no single weight can improve, for
         * the alpha it converged with; restarted at other scales of alpha
         * it reaches other such points. Only a strictly better one replaces
         * w, so the round never loses. */
        for (c = tk->c0; c < tk->c1; c++) {
            memcpy(a->w_try + c * d, a->w + c * d, (size_t)d);
            memcpy(a->r_try + c * d, a->r + c * d, (size_t)d * sizeof a->r[0]);
            a->alpha_try[c] = a->alpha[c] * restart_scales[s];
            a->active[c] = 1;
            a->count[c] = 0;
            a->tries[c] = 0;
        }
        sweep(tk, a->w_try, a->r_try, a->alpha_try, a->active, a->count); /* before a refit */
        descend(tk, a->w_try, a->r_try, a->alpha_try, a->tries);
        for (c = tk->c0; c < tk->c1; c++) {
            double f = objective(a, c, a->w_try + c * d, a->r_try, a->alpha_try[c]);
            if (!(f < a->best[c]))
                continue;
            for (j = 0; j < d; j++)
                a->changes[c] += a->w_try[c * d + j] != a->w[c * d + j];
            a->best[c] = f;
            a->alpha[c] = a->alpha_try[c];
            memcpy(a->w + c * d, a->w_try + c * d, (size_t)d);
            memcpy(a->r + c * d, a->r_try + c * d, (size_t)d * sizeof a->r[0]);
        }
    }
}

void tsq__sweep_round(const tsq__sweep_args *a, int64_t threads)
{
    task tasks[256];
    int64_t k, n, per, count = a->C - a->c0;
    if (count < 1) /* a share without channels */
        return;
    n = threads < 1 ? 1 : threads > 256 ? 256 : threads;
    if (n > count)
        n = count;
    /* Contiguous ranges of channels; a channel's arithmetic does not
     * depend on the range it is in (see the thread and share tests). */
    per = (count + n - 1) / n;
    for (k = 0; k < n; k++) {
        tasks[k].a = a;
        tasks[k].c0 = a->c0 + (k * per < count ? k * per : count);
        tasks[k].c1 = a->c0 + ((k + 1) * per < count ? (k + 1) * per : count);
    }
    tsq__parallel_for(n, n, round_task, tasks);
}
