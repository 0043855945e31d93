/*
 * The polish of alpha and b on the true quantized objective (docs/method.md
 * §3.2, docs/regressor.md "Polish"). Once the rounds are over, each
 * channel's w is fixed and its objective ||y - Q(alpha u + b)||^2, u = X w,
 * is a 2-D problem in (alpha, b). It is piecewise constant, so neither
 * least squares nor a local search reaches its optimum (a compass search
 * stalls at once on the planted layers). Its data, though, are small: the
 * joint histogram of (u, y). So the polish takes two passes:
 *   1. a histogram of u per code y and channel, over mean(u) +- 5 sd(u)
 *      (both known from the statistics; outliers go to the end bins),
 *   2. an exact evaluation, on the data, of the centre (the best iterate)
 *      and the 8 best (alpha, b) that a grid search on the histogram finds;
 *      each channel keeps the best of the nine (never worse than before);
 *   3. finer histograms of u in windows of 8 bins around each threshold's
 *      preimage (t_m - b) / alpha: only the samples there can change code
 *      when (alpha, b) moves by less than half a window;
 *   4. an exact evaluation of the 8 best the search on those finds;
 *   5 .. a compass search on the exact objective, when asked for.
 * The cost is often flat (0 on planted layers) over a region of (alpha, b):
 * the search then prefers the widest margins (outputs nearest the centres
 * of their bins), and pass 2 prefers the search's order to the centre.
 * Histogram counts and candidate sums add over shards, so a streamed or
 * MPI fit polishes to the same result.
 */
#include "regressor_internal.h"

#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- pass 1: the histogram ---- */

void tsq__polish_hist_rows(const tsq__polish_hist_args *a)
{
    int64_t i, c;
    for (c = a->c0; c < a->c1; c++) {
        const float lo = a->lo[c], scale = a->scale[c];
        double *h = a->hist + c * a->nb * a->bins;
        for (i = 0; i < a->rows; i++) {
            float t = (a->xw[i * a->C + c] - lo) * scale;
            int32_t k = t < 0.0f ? 0 : t >= (float)(a->bins - 1) ? a->bins - 1 : (int32_t)t;
            h[(int64_t)a->y[i * a->C + c] * a->bins + k] += 1.0;
        }
    }
}

/* ---- the search on the histogram ---- */

#define COARSE 4 /* bins merged for the coarse grid */
#define ZOOMS 2  /* coarse optima zoomed into */

typedef struct hist_view {
    const double *n, *s, *q; /* per bin: count, sum of codes, sum of squared codes */
    const double *u;         /* bin centres */
    int32_t bins;
    const tsq__outq *oq;
    float lo[256], hi[256];  /* the bins shrunk by delta / 2 (tsq__zstep_bins) */
    /* The bins that hold samples, in order: the cost is a sum over them
     * only, and a layer's few samples (a small calibration set, the tails
     * of u) leave most bins empty. */
    int32_t nnz, nz[TSQ__POLISH_CELLS]; /* bins <= TSQ__POLISH_CELLS (regressor_begin.c) */
} hist_view;

/* Points the view at bins [0, bins) of n, s, q, u and lists the nonempty. */
static void view_set(hist_view *h, const double *n, const double *s, const double *q,
                     const double *u, int32_t bins)
{
    int32_t k;
    h->n = n;
    h->s = s;
    h->q = q;
    h->u = u;
    h->bins = bins;
    h->nnz = 0;
    for (k = 0; k < bins; k++)
        if (n[k] != 0.0)
            h->nz[h->nnz++] = k;
}

/* sum over bins of sum_i (y_i - m)^2, m the code of alpha u + b, and, to
 * break its ties (the cost is often 0 on a whole region), the squared
 * distances of the outputs to their bins shrunk by half a step: among
 * equal costs, the (alpha, b) with the widest margins. */
static double hist_cost(const hist_view *h, double alpha, double b, double *pen)
{
    double total = 0.0, p = 0.0;
    int32_t i;
    for (i = 0; i < h->nnz; i++) {
        int32_t k = h->nz[i], m;
        float v, gap;
        v = (float)(alpha * h->u[k] + b);
        m = tsq__quant_code(v, h->oq->eps, h->oq->inv_delta, h->oq->maxcode);
        total += h->q[k] - 2.0 * m * h->s[k] + (double)m * m * h->n[k];
        gap = v < h->lo[m] ? h->lo[m] - v : v > h->hi[m] ? v - h->hi[m] : 0.0f;
        p += h->n[k] * (double)gap * gap;
    }
    *pen = p;
    return total;
}

/* The `keep` best (alpha, b) seen, sorted by cost (ties keep the first). */
typedef struct top_list {
    int32_t count, keep;
    double cost[TSQ__POLISH_CAND], pen[TSQ__POLISH_CAND];
    double alpha[TSQ__POLISH_CAND], b[TSQ__POLISH_CAND];
} top_list;

static int better(double cost, double pen, double cost2, double pen2)
{
    return cost < cost2 || (cost == cost2 && pen < pen2);
}

static void top_add(top_list *t, double cost, double pen, double alpha, double b)
{
    int32_t i;
    if (t->count < t->keep) {
        i = t->count++;
    } else {
        i = t->keep - 1;
        if (!better(cost, pen, t->cost[i], t->pen[i]))
            return;
    }
    while (i > 0 && better(cost, pen, t->cost[i - 1], t->pen[i - 1])) {
        t->cost[i] = t->cost[i - 1];
        t->pen[i] = t->pen[i - 1];
        t->alpha[i] = t->alpha[i - 1];
        t->b[i] = t->b[i - 1];
        i--;
    }
    t->cost[i] = cost;
    t->pen[i] = pen;
    t->alpha[i] = alpha;
    t->b[i] = b;
}

/* A grid of n x n points: alpha = a0 exp(i ls), b keeping the mean output
 * alpha ubar + b of (a0, b0), plus j lb delta; i, j in -(n-1)/2 .. (n-1)/2. */
static void grid(const hist_view *h, top_list *t, double a0, double b0, double ubar,
                 double ls, double lb, int32_t n)
{
    int32_t i, j, half = (n - 1) / 2;
    for (i = -half; i <= half; i++) {
        double alpha = a0 * exp(i * ls), base = b0 - (alpha - a0) * ubar;
        for (j = -half; j <= half; j++) {
            double b = base + j * lb * h->oq->delta, pen, cost = hist_cost(h, alpha, b, &pen);
            top_add(t, cost, pen, alpha, b);
        }
    }
}

void tsq__polish_search(const tsq__polish_search_args *a, double *alpha, double *b,
                        double *scratch)
{
    hist_view h;
    top_list top, coarse;
    int32_t k, y, i, j, z, nb = a->oq->maxcode + 1, level;
    double *n = scratch, *s = n + a->bins, *q = s + a->bins, *u = q + a->bins;
    double *nc = u + a->bins, *sc = nc + a->bins / COARSE, *qc = sc + a->bins / COARSE;
    double *uc = qc + a->bins / COARSE;
    double delta = a->oq->delta, sd = a->bins / (a->scale * 2.0 * TSQ__POLISH_SPREAD);
    double a_ref = a->oq->maxcode * delta / (4.0 * sd), m_mid = 0.5 * a->oq->maxcode * delta;
    double ls = 5.0 / 40, lm = (a->oq->maxcode + 2) * delta / 40;
    for (k = 0; k < a->bins; k++) {
        n[k] = s[k] = q[k] = 0.0;
        u[k] = a->lo + (k + 0.5) / a->scale;
        for (y = 0; y < nb; y++) {
            double cnt = a->hist[(int64_t)y * a->bins + k];
            n[k] += cnt;
            s[k] += cnt * y;
            q[k] += cnt * y * y;
        }
    }
    /* The coarse grid runs on bins merged by COARSE (cheaper), the zoom on
     * the full histogram. */
    for (k = 0; k < a->bins / COARSE; k++) {
        int32_t t;
        nc[k] = sc[k] = qc[k] = 0.0;
        uc[k] = a->lo + (k + 0.5) * COARSE / a->scale;
        for (t = 0; t < COARSE; t++) {
            nc[k] += n[k * COARSE + t];
            sc[k] += s[k * COARSE + t];
            qc[k] += q[k * COARSE + t];
        }
    }
    view_set(&h, nc, sc, qc, uc, a->bins / COARSE);
    h.oq = a->oq;
    tsq__zstep_bins(a->oq, 0.5 * delta, h.lo, h.hi);
    memset(&coarse, 0, sizeof coarse);
    coarse.keep = ZOOMS;
    /* The coarse grid depends on the histogram only, not on where the
     * rounds ended, so that processes whose rounds differ by rounding still
     * search the same points: alpha within a_ref e^(+-2.5) (a_ref maps
     * +-2 sd of u onto the codes' range), the mean output alpha ubar + b
     * from -delta to (maxcode + 1) delta. */
    for (i = -20; i <= 20; i++) {
        double al = a_ref * exp(i * ls);
        for (j = -20; j <= 20; j++) {
            double bb = m_mid + j * lm - al * a->ubar, pen, cost = hist_cost(&h, al, bb, &pen);
            top_add(&coarse, cost, pen, al, bb);
        }
    }
    view_set(&h, n, s, q, u, a->bins);
    memset(&top, 0, sizeof top);
    top.keep = TSQ__POLISH_CAND - 1;
    for (z = 0; z < coarse.count; z++) { /* zoom in around each of the best */
        double zl = ls, zm = lm / delta, best_a = coarse.alpha[z], best_b = coarse.b[z];
        top_list local;
        memset(&local, 0, sizeof local);
        local.keep = 1;
        for (level = 0; level < 4; level++) {
            zl /= 4.0;
            zm /= 4.0;
            grid(&h, &local, best_a, best_b, a->ubar, zl, zm, 9);
            best_a = local.alpha[0];
            best_b = local.b[0];
        }
        top_add(&top, local.cost[0], local.pen[0], best_a, best_b);
        grid(&h, &top, best_a, best_b, a->ubar, zl / 4.0, zm / 4.0, 3); /* its neighbours */
    }
    alpha[0] = a->alpha;
    b[0] = a->b;
    for (k = 1; k < TSQ__POLISH_CAND; k++) { /* fewer than 8 seen: repeat the centre */
        alpha[k] = k - 1 < top.count ? top.alpha[k - 1] : a->alpha;
        b[k] = k - 1 < top.count ? top.b[k - 1] : a->b;
    }
}

/* ---- pass 3: windows around the thresholds ---- */

void tsq__polish_window_rows(const tsq__polish_window_args *a)
{
    int64_t i, c;
    int32_t m;
    for (c = a->c0; c < a->c1; c++) {
        const float *wlo = a->wlo + c * a->nw, scale = a->wscale[c];
        double *h = a->hist + c * a->nw * a->nb * a->fb;
        for (i = 0; i < a->rows; i++) {
            float u = a->xw[i * a->C + c];
            for (m = 0; m < a->nw; m++) {
                float t = (u - wlo[m]) * scale;
                if (t >= 0.0f && t < (float)a->fb) { /* the first window claims it */
                    int32_t k = (int32_t)t < a->fb ? (int32_t)t : a->fb - 1;
                    h[((int64_t)m * a->nb + a->y[i * a->C + c]) * a->fb + k] += 1.0;
                    break;
                }
            }
        }
    }
}

void tsq__polish_window_search(const tsq__polish_window_search_args *a, double *alpha,
                               double *b, double *scratch)
{
    hist_view h;
    top_list top;
    int32_t m, y, k, i, j, level, nb = a->oq->maxcode + 1, nbins = a->nw * a->fb;
    int32_t first = -1, last = -1;
    double *n = scratch, *s = n + nbins, *q = s + nbins, *u = q + nbins;
    double half = 0.5 * a->fb / a->wscale, step = half / 16.0, u_first = 0, u_last = 0;
    for (m = 0; m < a->nw; m++) {
        if (a->used[m]) {
            if (first < 0)
                first = m;
            last = m;
        }
        for (k = 0; k < a->fb; k++) {
            int64_t at = (int64_t)m * a->fb + k;
            n[at] = s[at] = q[at] = 0.0;
            u[at] = a->wlo[m] + (k + 0.5) / a->wscale;
            for (y = 0; y < nb; y++) {
                double cnt = a->hist[((int64_t)m * nb + y) * a->fb + k];
                n[at] += cnt;
                s[at] += cnt * y;
                q[at] += cnt * y * y;
            }
        }
    }
    alpha[0] = a->alpha;
    b[0] = a->b;
    for (k = 1; k < TSQ__POLISH_CAND; k++) {
        alpha[k] = a->alpha;
        b[k] = a->b;
    }
    if (first < 0)
        return;
    view_set(&h, n, s, q, u, nbins);
    h.oq = a->oq;
    tsq__zstep_bins(a->oq, 0.5 * a->oq->delta, h.lo, h.hi);
    memset(&top, 0, sizeof top);
    top.keep = TSQ__POLISH_CAND - 1;
    u_first = (a->edge[first] - a->b) / a->alpha;
    u_last = (a->edge[last] - a->b) / a->alpha;
    /* (alpha, b) through the moved preimages of the first and last
     * thresholds: shifts (i, j) steps, within half a window; the first
     * level on a 33 x 33 grid, then three zooms of 9 x 9 around the best. */
    for (level = 0; level < 4; level++) {
        int32_t r = level ? 4 : 16;
        double ca = top.count ? top.alpha[0] : a->alpha, cb = top.count ? top.b[0] : a->b;
        double c_first = (a->edge[first] - cb) / ca, c_last = (a->edge[last] - cb) / ca;
        if (level)
            step /= 4.0;
        for (i = -r; i <= r; i++)
            for (j = -r; j <= r; j++) {
                double uf = c_first + i * step, ul = c_last + j * step, al, bb, pen, cost;
                if (fabs(uf - u_first) > half || fabs(ul - u_last) > half)
                    continue;
                if (first == last) { /* one threshold: alpha stays */
                    if (j)
                        continue;
                    al = ca;
                } else {
                    if (!(ul > uf))
                        continue;
                    al = (a->edge[last] - a->edge[first]) / (ul - uf);
                }
                bb = a->edge[first] - al * uf;
                cost = hist_cost(&h, al, bb, &pen);
                top_add(&top, cost, pen, al, bb);
            }
    }
    for (k = 1; k < TSQ__POLISH_CAND && k - 1 < top.count; k++) {
        alpha[k] = top.alpha[k - 1];
        b[k] = top.b[k - 1];
    }
}

/* ---- passes 5 ..: a compass search on the exact objective ---- */

void tsq__polish_compass(double alpha0, double b0, double h, double g, double ubar,
                         double delta, double *alpha, double *b)
{
    int32_t i, j, k = 1;
    alpha[0] = alpha0;
    b[0] = b0;
    for (i = -1; i <= 1; i++)
        for (j = -1; j <= 1; j++) {
            if (!i && !j)
                continue;
            alpha[k] = alpha0 * (1.0 + i * h);
            b[k] = b0 - alpha0 * i * h * ubar + j * g * delta;
            k++;
        }
}

/* ---- passes 2 ..: the exact objective of every candidate ---- */

/* Candidate k on channels [c0, c1) of a block of rows, plain C. */
static void polish_plain(const tsq__polish_rows_args *a, int32_t k, int64_t c0, int64_t c1)
{
    int64_t i, c, C = a->C;
    const float *al = a->alpha + k * C, *bb = a->b + k * C;
    double *err = a->err + k * C;
    for (i = 0; i < a->rows; i++) {
        const float *u = a->xw + i * C;
        const uint8_t *y = a->y + i * C;
        for (c = c0; c < c1; c++) {
            float v = al[c] * u[c] + bb[c];
            int32_t e = (int32_t)y[c] -
                        tsq__quant_code(v, a->q[c].eps, a->q[c].inv_delta, a->q[c].maxcode);
            err[c] += (double)(e * e);
        }
    }
}

#if defined(__SSE2__)
/* Candidate k on channels [c0, c0 + 4), four lanes: the code as in
 * tsq__zrows_run's SSE2 path (bit-identical to tsq__quant_code); squared
 * errors summed in float lanes, exact while below 2^24: flushed to double
 * every FLUSH rows (FLUSH 255^2 < 2^24). */
#define FLUSH 256
static void polish_four(const tsq__polish_rows_args *a, int32_t k, int64_t c)
{
    int64_t i, C = a->C, r0;
    const __m128 al = _mm_loadu_ps(a->alpha + k * C + c), bb = _mm_loadu_ps(a->b + k * C + c);
    const __m128 eps = _mm_loadu_ps(a->eps + c), inv = _mm_loadu_ps(a->inv_delta + c);
    const __m128 top = _mm_loadu_ps(a->top + c), half = _mm_set1_ps(0.5f), one = _mm_set1_ps(1.0f);
    double *err = a->err + k * C + c;
    for (r0 = 0; r0 < a->rows; r0 += FLUSH) {
        int64_t r1 = r0 + FLUSH < a->rows ? r0 + FLUSH : a->rows;
        __m128 acc = _mm_setzero_ps();
        float lanes[4];
        for (i = r0; i < r1; i++) {
            __m128 v = _mm_add_ps(_mm_mul_ps(al, _mm_loadu_ps(a->xw + i * C + c)), bb);
            __m128 t = _mm_add_ps(_mm_mul_ps(v, inv), half);
            __m128i kk, y, e;
            int32_t packed;
            t = _mm_max_ps(_mm_min_ps(t, top), one);
            kk = _mm_and_si128(_mm_cvttps_epi32(t), _mm_castps_si128(_mm_cmpgt_ps(v, eps)));
            memcpy(&packed, a->y + i * C + c, 4);
            y = _mm_unpacklo_epi16(
                _mm_unpacklo_epi8(_mm_cvtsi32_si128(packed), _mm_setzero_si128()),
                _mm_setzero_si128());
            e = _mm_sub_epi32(y, kk);
            {
                __m128 ef = _mm_cvtepi32_ps(e);
                acc = _mm_add_ps(acc, _mm_mul_ps(ef, ef)); /* exact integers */
            }
        }
        _mm_storeu_ps(lanes, acc);
        err[0] += lanes[0];
        err[1] += lanes[1];
        err[2] += lanes[2];
        err[3] += lanes[3];
    }
}
#endif

void tsq__polish_rows(const tsq__polish_rows_args *a, int simd)
{
    int64_t c4 = 0;
    int32_t k;
#if defined(__SSE2__)
    if (simd)
        c4 = a->C & ~(int64_t)3;
#else
    (void)simd;
#endif
    for (k = 0; k < TSQ__POLISH_CAND; k++) {
#if defined(__SSE2__)
        int64_t c;
        for (c = 0; c < c4; c += 4)
            polish_four(a, k, c);
#endif
        polish_plain(a, k, c4, a->C);
    }
}
