/* Streaming statistics of activations: one log-linear histogram per channel
 * with per-bin count, sum and sum of squares (layout and reading explained
 * in activation_histogram.h). Memory is fixed at creation: 17 * 2^sub_bits
 * bins per channel, whatever the number of samples. */
#include "quant/activation_histogram.h"

#include <math.h>
#include <string.h>

/* Variance below this fraction of mean^2 is rounding noise of the sums:
 * such a bin holds equal samples and is read as a point mass. */
#define POINT_MASS_REL_VAR 1e-12

tsq__act_hist *tsq__hist_create(tsq_context *ctx, int64_t nchannels, int32_t sub_bits)
{
    tsq__act_hist *h;
    size_t nbins = (size_t)(TSQ__HIST_OCTAVES + 1) << sub_bits, total;
    if (nchannels < 1 || (uint64_t)nchannels > (uint64_t)SIZE_MAX ||
        !tsq__mul_size((size_t)nchannels, nbins, &total) ||
        !tsq__mul_size(total, sizeof(tsq__hist_bin), &total))
        return NULL;
    h = tsq__calloc(ctx, 1, sizeof *h);
    if (!h)
        return NULL;
    h->nchannels = nchannels;
    h->sub_bits = sub_bits;
    h->nbins = (int32_t)nbins;
    h->chan = tsq__calloc(ctx, (size_t)nchannels, sizeof *h->chan);
    h->bins = tsq__alloc(ctx, total);
    if (!h->chan || !h->bins) {
        tsq__hist_destroy(ctx, h);
        return NULL;
    }
    tsq__hist_clear(h);
    return h;
}

void tsq__hist_destroy(tsq_context *ctx, tsq__act_hist *h)
{
    if (!h)
        return;
    tsq__free(ctx, h->chan);
    tsq__free(ctx, h->bins);
    tsq__free(ctx, h);
}

void tsq__hist_clear(tsq__act_hist *h)
{
    memset(h->chan, 0, (size_t)h->nchannels * sizeof *h->chan);
    memset(h->bins, 0, (size_t)h->nchannels * (size_t)h->nbins * sizeof *h->bins);
}

double tsq__hist_total(const tsq__act_hist *h)
{
    double total = 0.0;
    int64_t c;
    for (c = 0; c < h->nchannels; c++)
        total += h->chan[c].count;
    return total;
}

/* The bin of u in [0, 2^E): linear below 1, else exponent and top mantissa
 * bits of u, exactly as a float format with sub_bits mantissa bits. */
static int32_t bin_of(double u, int32_t sub_bits)
{
    uint64_t bits;
    int32_t e, s;
    if (u < 1.0)
        return (int32_t)(u * (double)(1 << sub_bits)); /* exact scaling, then floor */
    memcpy(&bits, &u, sizeof bits);
    e = (int32_t)(bits >> 52) - 1023;
    s = (int32_t)((bits >> (52 - sub_bits)) & ((1u << sub_bits) - 1u));
    return ((e + 1) << sub_bits) + s;
}

/* The lower edge and width of bin idx, in units of u. */
static void bin_edges(int32_t idx, int32_t sub_bits, double *lo, double *width)
{
    int32_t m = 1 << sub_bits, e;
    if (idx < m) {
        *width = ldexp(1.0, -sub_bits);
        *lo = (double)idx * *width;
        return;
    }
    e = (idx >> sub_bits) - 1;
    *width = ldexp(1.0, e - sub_bits);
    *lo = ldexp(1.0, e) + (double)(idx & (m - 1)) * *width;
}

static void bin_merge(tsq__hist_bin *dst, const tsq__hist_bin *a, const tsq__hist_bin *b)
{
    dst->n = a->n + b->n;
    dst->s1 = a->s1 + b->s1;
    dst->s2 = a->s2 + b->s2;
}

/* R doubles once: u halves, so each octave moves one down, and the linear
 * bins and the lowest octave merge in pairs into the linear bins. In place:
 * every write goes to an index no larger than the ones still to be read. */
static void halve_scale(tsq__hist_bin *b, int32_t sub_bits, int32_t nbins)
{
    int32_t m = 1 << sub_bits, i;
    for (i = 0; i < m / 2; i++)
        bin_merge(&b[i], &b[2 * i], &b[2 * i + 1]);
    for (i = 0; i < m / 2; i++)
        bin_merge(&b[m / 2 + i], &b[m + 2 * i], &b[m + 2 * i + 1]);
    memmove(b + m, b + 2 * m, (size_t)(nbins - 2 * m) * sizeof *b);
    memset(b + nbins - m, 0, (size_t)m * sizeof *b);
}

/* Makes the channel's range cover x (> 0, >= the current range). */
static void grow_range(tsq__hist_channel *ch, tsq__hist_bin *bins, int32_t sub_bits,
                       int32_t nbins, float x)
{
    int exp2;
    int32_t steps, cap = TSQ__HIST_OCTAVES + sub_bits + 1;
    frexp((double)x, &exp2); /* x = f * 2^exp2 with f in [0.5, 1): x < 2^exp2 */
    if (ch->range > 0.0) {
        /* After `cap` halvings all mass sits in bin 0; more change nothing. */
        steps = exp2 - ch->range_exp;
        if (steps > cap)
            steps = cap;
        while (steps-- > 0)
            halve_scale(bins, sub_bits, nbins);
    }
    ch->range_exp = exp2;
    ch->range = ldexp(1.0, exp2);
    ch->inv_unit = ldexp(1.0, TSQ__HIST_OCTAVES - exp2);
}

static void add_positive(tsq__hist_channel *ch, tsq__hist_bin *bins, int32_t sub_bits,
                         int32_t nbins, float x)
{
    tsq__hist_bin *b;
    double xd = (double)x;
    if (xd >= ch->range)
        grow_range(ch, bins, sub_bits, nbins, x);
    if (x > ch->max_pos)
        ch->max_pos = x;
    if (ch->min_pos == 0.0f || x < ch->min_pos)
        ch->min_pos = x;
    b = &bins[bin_of(xd * ch->inv_unit, sub_bits)];
    b->n += 1.0;
    b->s1 += xd;
    b->s2 += xd * xd;
}

static void add_span(tsq__act_hist *h, int64_t c, const float *x, int64_t n)
{
    tsq__hist_channel *ch = &h->chan[c];
    tsq__hist_bin *bins = h->bins + (size_t)c * (size_t)h->nbins;
    int64_t i;
    double nonpos = 0.0;
    for (i = 0; i < n; i++) {
        if (x[i] > 0.0f)
            add_positive(ch, bins, h->sub_bits, h->nbins, x[i]);
        else
            nonpos += 1.0;
    }
    ch->nonpos += nonpos;
    ch->count += (double)n;
}

void tsq__hist_add(tsq__act_hist *h, const float *x, int64_t outer, int64_t inner)
{
    int64_t o, c;
    for (o = 0; o < outer; o++)
        for (c = 0; c < h->nchannels; c++)
            add_span(h, c, x + (o * h->nchannels + c) * inner, inner);
}

size_t tsq__hist_scratch_doubles(const tsq__act_hist *h)
{
    return 2 * ((size_t)h->nbins + 1);
}

void tsq__hist_view_init(const tsq__act_hist *h, int64_t c, double *scratch,
                         tsq__hist_view *v)
{
    const tsq__hist_channel *ch = &h->chan[c];
    const tsq__hist_bin *bins = h->bins + (size_t)c * (size_t)h->nbins;
    double *cum_n = scratch, *cum_s1 = scratch + h->nbins + 1, s2 = 0.0;
    int32_t i;
    cum_n[0] = cum_s1[0] = 0.0;
    for (i = 0; i < h->nbins; i++) {
        cum_n[i + 1] = cum_n[i] + bins[i].n;
        cum_s1[i + 1] = cum_s1[i] + bins[i].s1;
        s2 += bins[i].s2;
    }
    v->bins = bins;
    v->cum_n = cum_n;
    v->cum_s1 = cum_s1;
    v->nbins = h->nbins;
    v->sub_bits = h->sub_bits;
    v->range = ch->range;
    v->unit = ch->range > 0.0 ? ldexp(1.0, ch->range_exp - TSQ__HIST_OCTAVES) : 0.0;
    v->count = ch->count;
    v->nonpos = ch->nonpos;
    v->pos_n = cum_n[h->nbins];
    v->pos_s2 = s2;
    v->max_pos = ch->max_pos;
    v->min_pos = ch->min_pos;
}

/* How the fit reads a bin: a bin of one or two samples is exactly those
 * samples (two point masses at m -+ sigma, recovered from the sums), a
 * larger one is spread uniformly over [lo, hi] = m -+ sqrt(3 var), the
 * uniform law with the bin's mean and variance, kept inside the bin. Equal
 * samples make a single point mass (lo == hi) either way. */
typedef struct bin_shape {
    int points; /* 1: two point masses of n/2 at lo and hi; 0: uniform */
    double lo, hi;
} bin_shape;

static bin_shape bin_read(const tsq__hist_bin *b, int32_t idx, const tsq__hist_view *v)
{
    bin_shape sh;
    double ua, uw, a, w, m = b->s1 / b->n, var, h;
    bin_edges(idx, v->sub_bits, &ua, &uw);
    a = ua * v->unit;
    w = uw * v->unit;
    if (m < a)
        m = a;
    if (m > a + w)
        m = a + w;
    var = b->s2 / b->n - m * m;
    sh.points = b->n <= 2.0;
    h = var > POINT_MASS_REL_VAR * m * m ? sqrt(sh.points ? var : 3.0 * var) : 0.0;
    if (h > m - a)
        h = m - a;
    if (h > a + w - m)
        h = a + w - m;
    sh.lo = m - h;
    sh.hi = m + h;
    return sh;
}

/* Whether a point mass at p counts as below b. */
static int point_below(double p, double b, int inclusive)
{
    return p < b || (inclusive && p == b);
}

void tsq__hist_mass_below(const tsq__hist_view *v, double b, int inclusive, double *n,
                          double *s1)
{
    const tsq__hist_bin *bin;
    bin_shape sh;
    double f, pn;
    int32_t idx;
    if (!(b > 0.0) || v->pos_n <= 0.0) {
        *n = *s1 = 0.0;
        return;
    }
    if (b >= v->range) {
        *n = v->pos_n;
        *s1 = v->cum_s1[v->nbins];
        return;
    }
    idx = bin_of(b / v->unit, v->sub_bits);
    *n = v->cum_n[idx];
    *s1 = v->cum_s1[idx];
    bin = &v->bins[idx];
    if (bin->n <= 0.0)
        return;
    sh = bin_read(bin, idx, v);
    if (sh.points || sh.hi <= sh.lo) {
        int below_lo = point_below(sh.lo, b, inclusive), below_hi = point_below(sh.hi, b, inclusive);
        if (below_lo && below_hi) {
            *n += bin->n;
            *s1 += bin->s1;
        } else if (below_lo) { /* only possible for two distinct points */
            *n += 0.5 * bin->n;
            *s1 += 0.5 * bin->n * sh.lo;
        }
        return;
    }
    if (b <= sh.lo)
        return;
    if (b >= sh.hi) {
        *n += bin->n;
        *s1 += bin->s1;
        return;
    }
    f = (b - sh.lo) / (sh.hi - sh.lo);
    pn = bin->n * f;
    *n += pn;
    *s1 += pn * 0.5 * (sh.lo + b);
}

double tsq__hist_positive_quantile(const tsq__hist_view *v, double target)
{
    int32_t lo = 0, hi = v->nbins - 1, mid;
    double need;
    const tsq__hist_bin *bin;
    bin_shape sh;
    if (target >= v->pos_n)
        return (double)v->max_pos;
    /* The first bin whose cumulative count reaches the target. */
    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (v->cum_n[mid + 1] >= target)
            hi = mid;
        else
            lo = mid + 1;
    }
    bin = &v->bins[lo];
    sh = bin_read(bin, lo, v);
    need = target - v->cum_n[lo];
    if (sh.points || sh.hi <= sh.lo)
        return need <= 0.5 * bin->n ? sh.lo : sh.hi;
    return sh.lo + (sh.hi - sh.lo) * (need / bin->n);
}
