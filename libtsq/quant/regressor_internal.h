/*
 * The step-2 solver's interface (docs/method.md §3): the weight alphabet
 * and the output quantizer of one channel, the z step (regressor_levels.c),
 * the alpha/b and w updates on sufficient statistics (regressor_solve.c),
 * the exact low-bit approximation that starts a fit (lowbit_init.c) and
 * the direct alpha/b search on fixed products (regressor_polish.c). The
 * drivers (regressor_fit.h) call these; nothing here knows a fit's state.
 */
#ifndef TSQ_REGRESSOR_INTERNAL_H
#define TSQ_REGRESSOR_INTERNAL_H

#include "quant_internal.h"

#include <stddef.h>
#include <stdint.h>

/* ---- the weight alphabet S: distinct integers in ascending order ---- */
typedef struct tsq__alphabet {
    int32_t count;
    int32_t symmetric; /* v in S <=> -v in S */
    int32_t range;     /* L when S = {-L .. L}, else 0 (fast nearest) */
    int32_t values[256];
} tsq__alphabet;

/* S = {-L .. L}. */
void tsq__alphabet_range(tsq__alphabet *a, int32_t L);
/* S from caller values (sorted, deduplicated); 0 when they are unusable. */
int tsq__alphabet_custom(tsq__alphabet *a, const int32_t *values, int32_t count);
/* The element of S nearest to u; ties go to the smaller magnitude. */
int32_t tsq__alphabet_nearest(const tsq__alphabet *a, double u);

/* ---- the output quantizer of one channel (docs/method.md §2.1) ---- */
typedef struct tsq__outq {
    float eps, delta, inv_delta;
    int32_t bits, maxcode;
} tsq__outq;

/* Fills q from (bits, eps, delta); 0 when they are unusable. */
int tsq__outq_init(tsq__outq *q, int32_t bits, float eps, float delta);

/* The quantizer's bins, closed, each finite end moved inward by `margin`
 * (a length; a bin narrower than two margins becomes its midpoint):
 * lo[m], hi[m] for m = 0 .. maxcode, in float. Bins that eps swallows get
 * lo > hi. Bin 0 is (-inf, eps], bin 1 starts at eps, the top bin is
 * unbounded above. */
void tsq__zstep_bins(const tsq__outq *q, double margin, float *lo, float *hi);

/* The z step (docs/method.md §3.4), for one sample: given the output v = alpha
 * x.w + b and its code y, returns z = clamp(v, I_m) for the bin m
 * minimising delta^2 (y - m)^2 + lambda (clamp(v, I_m) - v)^2, the bins
 * from tsq__zstep_bins; adds that bin's (y - m)^2 (codes: the caller
 * scales by delta^2) to *data_cost. The shrunk bins are disjoint and
 * ordered, so their distance to v grows away from v on each side: only the
 * bins between Q(v) and y and the nearest non-empty one beyond each end
 * can win (a neighbour's shrunk part can be nearer than v's own). When v's
 * code is already y every other bin costs at least delta^2, so the own bin
 * wins as soon as it costs less. Ties keep the own bin, then the lower m.
 * All in float: this is the definition the fit uses, inline because it
 * runs once per sample and channel. */
static inline float tsq__zstep_coded(const tsq__outq *q, const float *lo, const float *hi,
                                     float v, int32_t k, int32_t y, float lambda,
                                     double *data_cost)
{
    int32_t m, best_m = k, first, last;
    float delta2 = q->delta * q->delta, z, best;
    z = v < lo[k] ? lo[k] : v > hi[k] ? hi[k] : v;
    best = delta2 * (float)((y - k) * (y - k)) + lambda * (z - v) * (z - v);
    if (k == y && best < delta2)
        return z;
    first = (k < y ? k : y) - 1;
    last = (k > y ? k : y) + 1;
    while (first >= 1 && lo[first] > hi[first])
        first--;
    if (first < 0)
        first = 0;
    if (last > q->maxcode)
        last = q->maxcode;
    for (m = first; m <= last; m++) {
        float zz, cost;
        if (m == k || lo[m] > hi[m])
            continue;
        zz = v < lo[m] ? lo[m] : v > hi[m] ? hi[m] : v;
        cost = delta2 * (float)((y - m) * (y - m)) + lambda * (zz - v) * (zz - v);
        if (cost < best) {
            best = cost;
            best_m = m;
            z = zz;
        }
    }
    *data_cost += (double)((y - best_m) * (y - best_m));
    return z;
}

/* The z-step as above; tsq__zstep_coded takes v's code k = Q(v)/delta
 * already computed (the fit has it from the objective). */
static inline float tsq__zstep(const tsq__outq *q, const float *lo, const float *hi, float v,
                               int32_t y, float lambda, double *data_cost)
{
    return tsq__zstep_coded(q, lo, hi, v, tsq__quant_code(v, q->eps, q->inv_delta, q->maxcode),
                            y, lambda, data_cost);
}

/* The per-sample work of a pass over rows, for one block of rows:
 * v = alpha (Xw) + b, the squared code error (y - Q(v)/delta)^2 and, with
 * zstep, z = tsq__zstep(v) with its sums. Every output is added to.
 * Per-channel float copies of the quantizer (eps, inv_delta, maxcode as a
 * float, delta^2) let the SIMD path load four channels at once. */
typedef struct tsq__zrows {
    int64_t rows, C;
    const float *xw;        /* rows x C: X w */
    const uint8_t *y;       /* rows x C: codes */
    const float *alpha, *b; /* C */
    const tsq__outq *q;     /* C */
    const float *eps, *inv_delta, *top, *delta2; /* C each, copies of q */
    const float *lo, *hi;   /* C x nbins: tsq__zstep_bins per channel */
    int32_t nbins, zstep;
    float lambda;
    float *z;               /* rows x C, written when zstep */
    double *err, *zsum, *zsq, *zcost; /* C each, added to */
} tsq__zrows;

/* simd = 0: plain C; 1: SSE2 where the build has it; 2: AVX-512 too (the
 * caller checks the CPU has AVX-512 F/BW/VL). All bit-identical. */
void tsq__zrows_run(const tsq__zrows *a, int simd);
/* Channels c .. c+15 of row i (regressor_zrows_avx512.c). */
void tsq__zrows_sixteen_avx512(const tsq__zrows *a, int64_t i, int64_t c);

/* ---- the sufficient statistics of one layer ---- */
typedef struct tsq__gram {
    const double *m;      /* d x d: X^T X, centred (X^T X - s s^T / N) with offsets */
    const double *colsum; /* s = X^T 1 (d) */
    double rows;          /* N */
    int64_t d;
    int offset;           /* the per-channel offset b is fitted */
} tsq__gram;

/* t = X^T z - s zsum / N with offsets (the centred target), else X^T z. */
void tsq__centre_target(const tsq__gram *g, const double *xtz, double zsum, double *t);

/* One round's alpha and w updates of every channel against fixed targets
 * (regressor_sweep.c): alpha refit, up to `sweeps` coordinate sweeps each
 * followed by an alpha refit, then `restarts` descents from scaled alphas,
 * the best kept; channels spread over `threads` tasks. */
typedef struct tsq__sweep_args {
    const tsq__gram *g;
    const double *t;           /* C x d: the centred targets, channel-major */
    const tsq__alphabet *a;
    int32_t sweeps, restarts;
    int32_t fresh;             /* 1: compute r = M w first; 0: r holds it */
    int64_t c0, C;             /* the channels [c0, C) are swept (arrays hold all) */
    double diag_floor;         /* coordinates with M_jj below it get weight 0 */
    int8_t *w;                 /* C x d, channel-major: updated */
    double *alpha;             /* C: updated */
    int64_t *changes;          /* C: weight changes of the round, written */
    double *r, *r_try, *wd;    /* C x d scratch each (r = M w per channel) */
    double *dw;                /* C x 64 scratch */
    int8_t *w_try, *active;    /* C x d, C scratch */
    double *alpha_try, *best;  /* C scratch each */
    int64_t *count, *tries;    /* C scratch each */
} tsq__sweep_args;
void tsq__sweep_round(const tsq__sweep_args *a, int64_t threads);

/* b = zbar - alpha mu.w with offsets (the profiled offset), else 0. */
double tsq__profile_offset(const tsq__gram *g, double zsum, const int8_t *w, double alpha);

/* sum over samples of (z - alpha x.w - b)^2, from the statistics; wmw is
 * w^T M w (w.r with r = M w, which the sweeps keep). */
double tsq__linear_objective(const tsq__gram *g, const double *xtz, double zsum, double zsq,
                             const int8_t *w, double wmw, double alpha, double b);

/* Least squares W = (M + rho I)^-1 T for the C columns of T (d x C,
 * row-major, overwritten with W), rho a tiny ridge that keeps M definite.
 * m_work: d x d scratch. Returns 0 when no factorisation succeeded. The
 * result is the same for every thread count (fixed blocks). */
int tsq__least_squares(const double *m, int64_t d, double *t, int64_t C, double *m_work,
                       int64_t threads);

/* ---- the exact best low-bit approximation (lowbit_init.c) ---- */
/* Bytes of scratch tsq__lowbit_approx needs for d weights. */
size_t tsq__lowbit_scratch_bytes(int64_t d);
/* Minimises ||w - alpha q||^2 over alpha > 0 and q in S^d exactly; w has d
 * entries at stride `stride`. Writes q and alpha; returns the error. */
double tsq__lowbit_approx(const tsq__alphabet *a, const double *w, int64_t d, int64_t stride,
                          int8_t *q, double *alpha, void *scratch);

/* ---- the polish of alpha and b on fixed products (regressor_polish.c) ---- */
#define TSQ__POLISH_CAND 9       /* the centre and the 8 best of the search */
#define TSQ__POLISH_CELLS 4096   /* histogram cells (codes x bins) per channel */
#define TSQ__POLISH_SPREAD 5.0   /* the histogram spans mean(u) +- this many sd */

/* Pass 1: adds rows' (u, y) to the histograms of channels [c0, c1):
 * hist[(c nb + y) bins + k] += 1, k the bin of u (clamped to the ends). */
typedef struct tsq__polish_hist_args {
    int64_t rows, C, c0, c1;
    const float *xw;              /* rows x C: u = X w */
    const uint8_t *y;             /* rows x C: codes */
    const float *lo, *scale;      /* C: bin of u = (u - lo) scale */
    int32_t nb, bins;             /* codes per channel (stride), bins per code */
    double *hist;                 /* C x nb x bins */
} tsq__polish_hist_args;
void tsq__polish_hist_rows(const tsq__polish_hist_args *a);

/* The search on one channel's histogram (nb x bins counts, codes of oq):
 * candidate 0 is the centre (alpha, b), 1 .. 8 the best the grid found.
 * scratch: 5 bins doubles; bins a multiple of 4. */
typedef struct tsq__polish_search_args {
    const double *hist;
    int32_t bins;
    double lo, scale, ubar, alpha, b;
    const tsq__outq *oq;
} tsq__polish_search_args;
void tsq__polish_search(const tsq__polish_search_args *a, double *alpha, double *b,
                        double *scratch);

/* Pass 3: rows' (u, y) into windows around the thresholds' preimages:
 * window m of channel c covers [wlo[c nw + m], + fb / wscale[c]), fb bins;
 * a sample goes to the first window that covers it, else nowhere. */
typedef struct tsq__polish_window_args {
    int64_t rows, C, c0, c1;
    const float *xw;
    const uint8_t *y;
    const float *wlo, *wscale; /* C x nw, C */
    int32_t nw, nb, fb;        /* windows, codes (stride), bins per window */
    double *hist;              /* C x nw x nb x fb */
} tsq__polish_window_args;
void tsq__polish_window_rows(const tsq__polish_window_args *a);

/* The search on one channel's windows: candidates as tsq__polish_search.
 * edge[m]: the threshold of window m (used[m] 0 for none). scratch: 4 nw
 * fb doubles. */
typedef struct tsq__polish_window_search_args {
    const double *hist;
    const float *wlo;
    const float *edge;
    const int8_t *used;
    float wscale;
    int32_t nw, fb;
    double alpha, b;
    const tsq__outq *oq;
} tsq__polish_window_search_args;
void tsq__polish_window_search(const tsq__polish_window_search_args *a, double *alpha,
                               double *b, double *scratch);

/* Passes 5 ..: the centre (alpha0, b0) and its 8 neighbours at relative
 * step h of alpha (the mean output alpha ubar + b kept) and step g delta
 * of b. */
void tsq__polish_compass(double alpha0, double b0, double h, double g, double ubar,
                         double delta, double *alpha, double *b);

/* Passes 2 ..: squared code errors of every candidate on a block of rows:
 * err[k C + c] += sum_i (y_ic - Q(alpha[k C + c] u_ic + b[k C + c]) / delta)^2. */
typedef struct tsq__polish_rows_args {
    int64_t rows, C;
    const float *xw;        /* rows x C: u = X w */
    const uint8_t *y;       /* rows x C: codes */
    const float *alpha, *b; /* TSQ__POLISH_CAND x C */
    const tsq__outq *q;     /* C */
    const float *eps, *inv_delta, *top; /* C each, copies of q (for SIMD) */
    double *err;            /* TSQ__POLISH_CAND x C, added to */
} tsq__polish_rows_args;
/* simd = 0: plain C; 1: SSE2 where the build has it (the same sums: the
 * squared code errors are integers, added exactly). */
void tsq__polish_rows(const tsq__polish_rows_args *a, int simd);

/* ---- integer products on AVX-512 VNNI CPUs (regressor_products.c) ---- */
/* The kernels' decoded panels (kernels/kernels_internal.h) of panels
 * [p0, p1) of K x N int8 matrices: X's n rows of d codes (K = n, N = d;
 * codes <= 127), or channels' weights (K = d, N = count; channel k is
 * row list[k] of the C x d w, or row k without a list). */
void tsq__reg_panels_codes(const uint8_t *x, int64_t n, int64_t d, int64_t p0, int64_t p1,
                           int8_t *dec);
void tsq__reg_panels_weights(const int8_t *w, int64_t d, const int32_t *list, int64_t count,
                             int8_t *dec);
/* rows x count products of u8 rows x (stride d) with panels dec of K = d
 * into out (stride ldo) as floats; acc: rows x count int32 scratch. */
void tsq__reg_int_products(const uint8_t *x, int64_t rows, int64_t d, const int8_t *dec,
                           int64_t count, int32_t *acc, float *out, int64_t ldo,
                           const int32_t *list);

/* g = X^T z over rows [0, rows) of u8 codes x (stride ldx), columns
 * [j0, j1), z rows x C, g (j1 - j0) x C overwritten: per element a float
 * sum in row order, zero codes skipped. The AVX-512 version (AVX-512 F
 * CPUs only) is bit-identical. */
void tsq__reg_xtz_rows(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                       const float *z, int64_t C, float *g);
void tsq__reg_xtz_rows_avx512(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                              const float *z, int64_t C, float *g);

#endif
