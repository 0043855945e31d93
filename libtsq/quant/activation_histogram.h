/*
 * Internal interface between the parts of the activation quantizer:
 * the streaming statistics (activation_histogram.c), the (eps, delta) fit
 * that reads them (quantizer_fit.c) and the quantizer (quantizer.c). Not
 * installed.
 *
 * The histogram. Per channel, the positive samples x fall into bins whose
 * layout is that of a small floating-point format relative to a range
 * R = 2^r, the smallest power of two above every positive sample seen:
 * with u = x * 2^(E - r) in (0, 2^E),
 *   u in [0, 1):                 M linear bins of width 1/M   (index 0..M-1)
 *   u in [2^e, 2^(e+1)), e < E:  M bins of width 2^e / M      (index (e+1)M + s)
 * (E = TSQ__HIST_OCTAVES octaves, M = 2^sub_bits bins per octave). So the
 * relative bin width is 2^-sub_bits over 16 octaves below R, whatever the
 * scale of the data and however far out a few outliers lie. When a larger
 * sample arrives, R doubles as often as needed; each doubling maps every bin
 * onto exactly the bin its samples would have reached had R been larger from
 * the start (bins shift down one octave, the lowest octave and the linear
 * bins merge in pairs), so the counts do not depend on batch order or size.
 *
 * Each bin keeps the count, sum and sum of squares of its samples (doubles).
 * Samples x <= 0 are only counted. The fit reads the histogram as a
 * distribution: a bin of one or two samples is exactly those samples (two
 * point masses at m -+ sigma), a larger one is spread uniformly over
 * [m - h, m + h] (m the mean, h = sqrt(3 * variance), kept inside the bin;
 * equal samples are a point mass), so the error of any (eps, delta) is exact
 * for every bin that lies inside one quantization interval.
 */
#ifndef TSQ_ACTIVATION_HISTOGRAM_H
#define TSQ_ACTIVATION_HISTOGRAM_H

#include "internal.h"
#include "kernels/encode.h"

#define TSQ__HIST_OCTAVES 16
#define TSQ__HIST_SUB_BITS_MAX 10
/* The automatic resolution: 2^7 bins per octave, and more for many bits so
 * that a bin stays narrower than the level spacing at the top level (whose
 * relative size is 1 / (2^bits - 1)). */
#define TSQ__HIST_SUB_BITS_AUTO(bits) ((bits) + 1 > 7 ? (bits) + 1 : 7)

typedef struct tsq__hist_bin {
    double n;  /* samples in the bin */
    double s1; /* their sum */
    double s2; /* their sum of squares */
} tsq__hist_bin;

typedef struct tsq__hist_channel {
    double count;      /* every sample of the channel */
    double nonpos;     /* samples <= 0 */
    double range;      /* R = 2^range_exp, 0 while no positive sample was seen */
    double inv_unit;   /* 2^(E - range_exp): maps x to u */
    float max_pos;     /* the largest positive sample (0 if none) */
    float min_pos;     /* the smallest positive sample (0 if none) */
    int32_t range_exp; /* every positive sample is < 2^range_exp */
} tsq__hist_channel;

typedef struct tsq__act_hist {
    int64_t nchannels;     /* >= 1 (a per-tensor quantizer has one) */
    int32_t sub_bits;
    int32_t nbins;         /* (TSQ__HIST_OCTAVES + 1) << sub_bits */
    tsq__hist_channel *chan;   /* nchannels */
    tsq__hist_bin *bins;       /* nchannels * nbins, channel-major */
} tsq__act_hist;

/* Allocates an empty histogram; NULL when out of memory (or the size
 * overflows). */
tsq__act_hist *tsq__hist_create(tsq_context *ctx, int64_t nchannels, int32_t sub_bits);
void tsq__hist_destroy(tsq_context *ctx, tsq__act_hist *h);
/* Empties every channel. */
void tsq__hist_clear(tsq__act_hist *h);
/* Adds finite samples laid out as [outer][nchannels][inner] (per tensor:
 * outer = 1, nchannels = 1, inner = the sample count). Cannot fail. */
void tsq__hist_add(tsq__act_hist *h, const float *x, int64_t outer, int64_t inner);
/* Total samples over every channel. */
double tsq__hist_total(const tsq__act_hist *h);

/* A read-only view of one channel with prefix sums, for the fit. */
typedef struct tsq__hist_view {
    const tsq__hist_bin *bins;
    const double *cum_n;   /* cum_n[i] = samples in bins 0 .. i-1 (nbins + 1 entries) */
    const double *cum_s1;  /* likewise for the sums */
    int32_t nbins, sub_bits;
    double unit;           /* 2^(r - E): the width of u = 1 in units of x */
    double range;          /* R = 2^r */
    double count, nonpos, pos_n, pos_s2, max_pos, min_pos;
} tsq__hist_view;

/* Doubles needed per channel for the prefix sums of tsq__hist_view_init. */
size_t tsq__hist_scratch_doubles(const tsq__act_hist *h);
/* Fills *v for channel c, using `scratch` (tsq__hist_scratch_doubles
 * entries) for the prefix sums; the view is valid while both live. */
void tsq__hist_view_init(const tsq__act_hist *h, int64_t c, double *scratch,
                         tsq__hist_view *v);
/* Count and sum of the positive samples below b under the uniform-in-bin
 * reading: x < b, or x <= b when `inclusive`. */
void tsq__hist_mass_below(const tsq__hist_view *v, double b, int inclusive, double *n,
                          double *s1);
/* The smallest t > 0 such that the positive samples x <= t number `target`
 * (0 < target <= v->pos_n) under the same reading. */
double tsq__hist_positive_quantile(const tsq__hist_view *v, double target);

/* ---- the fit (quantizer_fit.c) ---- */

/* Fits one channel: eps_mode as TSQ_EPS_*, eps_fixed for TSQ_EPS_FIXED,
 * sparsity for TSQ_EPS_SPARSITY. Writes float parameters that satisfy the
 * quantizer's validity rules. */
void tsq__fit_channel(const tsq__hist_view *v, int32_t bits, int32_t eps_mode,
                      double eps_fixed, double sparsity, float *eps, float *delta);
/* The histogram's estimate, for given parameters, of the channel's sum over
 * x > 0 of (x - Q(x))^2 and of its number of zero codes. */
void tsq__fit_estimate(const tsq__hist_view *v, int32_t bits, float eps, float delta,
                       double *error_sum, double *zeros);

/* The encode kernels are in kernels/encode.h. */

#endif
