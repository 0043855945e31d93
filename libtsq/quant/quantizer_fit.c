/* Fitting (eps, delta) of the sparse activation quantizer from a channel's
 * histogram (docs/method.md §2.3).
 *
 * For a given eps, delta minimises the empirical error
 *     E(delta) = sum over x > 0 of (x - Q(x))^2,
 * Q(x) = k(x) delta with the code k of quant_internal.h. E is piecewise
 * smooth in delta and, on small discrete data, has several local minima,
 * so the search is global first and local second:
 *   1. a log-spaced grid of 64 points per octave between the smallest and
 *      the largest useful step, then a 32 times finer grid over +-2 coarse
 *      steps around each of its 8 lowest local minima;
 *   2. from the 8 lowest minima of the fine grids, Lloyd iterations: with the codes of the
 *      current delta fixed, the best delta is sum k x / sum k^2 (over
 *      x > eps); recomputing the codes for it cannot raise E. The fixed
 *      point is a stationary point of E (the level boundaries move with
 *      delta, but at a boundary both sides have equal error, and eps does
 *      not move).
 * Each evaluation of E costs O(2^n) from the histogram's prefix sums.
 *
 * eps per TSQ_QUANTIZER_EPS_MODE: fixed, plain (0), sparsity (a quantile of
 * the samples) or joint. In the joint mode the best eps for any delta is
 * delta/2 (each sample between the levels 0 and delta goes to the nearer),
 * so minimising E(delta/2, delta) over delta alone is the joint optimum.
 */
#include "quant/activation_histogram.h"
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>

#define GRID_PER_OCTAVE 64
#define GRID_MAX_POINTS 4096
#define LLOYD_STARTS 8
#define FINE_PER_STEP 32 /* fine grid points per coarse step */
#define FINE_HALF_WIDTH 2 /* coarse steps on each side of a coarse minimum */
#define LLOYD_MAX_ITER 500

typedef struct fit_problem {
    const tsq__hist_view *v;
    int32_t maxcode;
    int joint;  /* eps = delta / 2 */
    double eps; /* otherwise */
} fit_problem;

/* E(delta) of docs/method.md §2.3 over the histogram, and the Lloyd update's sums
 * sum k x and sum k^2 over the samples with a non-zero code. */
static double evaluate(const fit_problem *p, double delta, double *sum_kx, double *sum_kk)
{
    const tsq__hist_view *v = p->v;
    double eps = p->joint ? 0.5 * delta : p->eps;
    double err = v->pos_s2, kx = 0.0, kk = 0.0;
    double n_prev, s_prev, n_next, s_next, nk, sk, q;
    int32_t k;
    /* Code 0: x <= eps. Code k >= 1: eps < x and (k - 1/2) delta <= x <
     * (k + 1/2) delta, the lowest and highest codes open-ended. */
    tsq__hist_mass_below(v, eps, 1, &n_prev, &s_prev);
    for (k = 1; k <= p->maxcode && n_prev < v->pos_n; k++) {
        if (k == p->maxcode) {
            n_next = v->pos_n;
            s_next = v->cum_s1[v->nbins];
        } else {
            double upper = ((double)k + 0.5) * delta;
            if (upper <= eps)
                continue; /* no sample has this code */
            tsq__hist_mass_below(v, upper, 0, &n_next, &s_next);
        }
        nk = n_next - n_prev;
        sk = s_next - s_prev;
        q = (double)k * delta;
        err += q * q * nk - 2.0 * q * sk;
        kx += (double)k * sk;
        kk += (double)k * (double)k * nk;
        n_prev = n_next;
        s_prev = s_next;
    }
    *sum_kx = kx;
    *sum_kk = kk;
    return err;
}

static double error_at(const fit_problem *p, double delta)
{
    double kx, kk;
    return evaluate(p, delta, &kx, &kk);
}

/* Lloyd iterations from delta; returns the best delta met, its E in *err. */
static double lloyd(const fit_problem *p, double delta, double *err)
{
    double best = delta, best_err, kx, kk, next;
    int iter;
    best_err = evaluate(p, delta, &kx, &kk);
    for (iter = 0; iter < LLOYD_MAX_ITER && kk > 0.0; iter++) {
        double e;
        next = kx / kk;
        if (!(next > 0.0) || fabs(next - best) <= 1e-13 * best)
            break;
        e = evaluate(p, next, &kx, &kk);
        if (e > best_err)
            break; /* only rounding can do this: stop at the better point */
        best = next;
        best_err = e;
    }
    *err = best_err;
    return best;
}

/* Keeps the `LLOYD_STARTS` lowest local minima of the grid. */
typedef struct start_list {
    int count;
    double delta[LLOYD_STARTS], err[LLOYD_STARTS];
} start_list;

static void start_offer(start_list *s, double delta, double err)
{
    int i, worst = 0;
    if (s->count < LLOYD_STARTS) {
        s->delta[s->count] = delta;
        s->err[s->count++] = err;
        return;
    }
    for (i = 1; i < s->count; i++)
        if (s->err[i] > s->err[worst])
            worst = i;
    if (err < s->err[worst]) {
        s->delta[worst] = delta;
        s->err[worst] = err;
    }
}

/* Evaluates E on the geometric grid hi, hi r, hi r^2, ... (npts points)
 * and offers its local minima as starts. */
static void scan(const fit_problem *p, double hi, double ratio, int32_t npts, start_list *starts)
{
    double d = hi, e_prev = HUGE_VAL, e_cur = error_at(p, hi), e_next;
    int32_t i;
    for (i = 0; i < npts; i++) {
        double d_next = d * ratio;
        e_next = i + 1 < npts ? error_at(p, d_next) : HUGE_VAL;
        if (e_cur <= e_prev && e_cur <= e_next)
            start_offer(starts, d, e_cur);
        e_prev = e_cur;
        e_cur = e_next;
        d = d_next;
    }
}

/* The error-minimising delta of the problem (eps fixed or joint). */
static double best_delta(const fit_problem *p)
{
    const tsq__hist_view *v = p->v;
    double hi, lo, ratio, fine_ratio, best = 1.0, best_err = HUGE_VAL;
    double floor_step = v->unit * ldexp(1.0, -v->sub_bits);
    int32_t npts, i;
    start_list coarse = {0, {0}, {0}}, fine = {0, {0}, {0}};

    /* Beyond max x, E only grows with delta (every code is 1 and the error
     * is convex); below (min x)/maxcode every positive sample is clamped to
     * the top level, whose error falls as delta grows. */
    hi = (double)v->max_pos;
    lo = (double)(v->min_pos > 0.0f ? v->min_pos : v->max_pos);
    if (lo < floor_step)
        lo = floor_step;
    lo /= 2.0 * (double)p->maxcode;
    npts = (int32_t)ceil(log2(hi / lo) * GRID_PER_OCTAVE) + 1;
    if (npts > GRID_MAX_POINTS)
        npts = GRID_MAX_POINTS;
    if (npts < 3)
        npts = 3;
    ratio = pow(lo / hi, 1.0 / (double)(npts - 1));

    /* 1. The coarse grid over the whole range. */
    scan(p, hi, ratio, npts, &coarse);
    /* 2. Around each coarse minimum, +-FINE_HALF_WIDTH coarse steps on a
     * grid FINE_PER_STEP times finer: with many levels or few samples E is
     * jagged at the scale of the coarse step, so the coarse minimum only
     * says where the best dip is roughly, not which dip it is. */
    fine_ratio = pow(ratio, 1.0 / FINE_PER_STEP);
    for (i = 0; i < coarse.count; i++)
        scan(p, coarse.delta[i] * pow(ratio, -FINE_HALF_WIDTH), fine_ratio,
             2 * FINE_HALF_WIDTH * FINE_PER_STEP + 1, &fine);
    /* 3. Lloyd from the best fine minima; the lowest error wins. */
    for (i = 0; i < fine.count; i++) {
        double e, cand = lloyd(p, fine.delta[i], &e);
        if (e < best_err) {
            best_err = e;
            best = cand;
        }
    }
    return best;
}

/* A float delta that the quantizer accepts: 1/delta and maxcode * delta
 * must stay finite in float. */
static float valid_delta(double delta, int32_t maxcode)
{
    double lo = 4.0 * (double)FLT_MIN, hi = (double)FLT_MAX / (2.0 * (double)maxcode);
    if (!(delta > lo))
        delta = lo;
    if (delta > hi)
        delta = hi;
    return (float)delta;
}

static float valid_eps(double eps)
{
    if (!(eps > 0.0))
        return 0.0f;
    return eps > (double)FLT_MAX ? FLT_MAX : (float)eps;
}

/* eps of the sparsity mode: the zero fraction `sparsity` of all samples. */
static double sparsity_eps(const tsq__hist_view *v, double sparsity)
{
    double target = sparsity * v->count - v->nonpos;
    if (target <= 0.0)
        return 0.0; /* the samples <= 0 already reach it */
    return tsq__hist_positive_quantile(v, target);
}

void tsq__fit_channel(const tsq__hist_view *v, int32_t bits, int32_t eps_mode,
                      double eps_fixed, double sparsity, float *eps, float *delta)
{
    fit_problem p;
    double above, s1;
    p.v = v;
    p.maxcode = (1 << bits) - 1;
    p.joint = eps_mode == TSQ_EPS_JOINT;
    p.eps = 0.0;
    if (eps_mode == TSQ_EPS_FIXED)
        p.eps = eps_fixed;
    else if (eps_mode == TSQ_EPS_SPARSITY)
        p.eps = sparsity_eps(v, sparsity);
    p.eps = (double)valid_eps(p.eps); /* fit for the eps actually used */

    tsq__hist_mass_below(v, p.eps, 1, &above, &s1);
    above = v->pos_n - above;
    if (v->pos_n <= 0.0 || (!p.joint && above <= 0.0)) {
        /* No sample gets a non-zero code: every delta is as good. */
        *delta = 1.0f;
        *eps = p.joint ? 0.5f : (float)p.eps;
        return;
    }
    *delta = valid_delta(best_delta(&p), p.maxcode);
    *eps = p.joint ? 0.5f * *delta : (float)p.eps;
}

void tsq__fit_estimate(const tsq__hist_view *v, int32_t bits, float eps, float delta,
                       double *error_sum, double *zeros)
{
    fit_problem p;
    double n0, s0, err;
    p.v = v;
    p.maxcode = (1 << bits) - 1;
    p.joint = 0;
    p.eps = (double)eps;
    err = error_at(&p, (double)delta);
    *error_sum = err > 0.0 ? err : 0.0; /* E is a difference of large sums */
    tsq__hist_mass_below(v, (double)eps, 1, &n0, &s0);
    *zeros = v->nonpos + n0;
}
