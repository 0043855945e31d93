/*
 * The two alphabets of step 2 (docs/method.md §3): the weight alphabet S
 * (nearest element) and the output quantizer of a channel with its bins,
 * and the z step (docs/method.md §3.4) over rows of outputs,
 * tsq__zrows_run, in plain C and SSE2 (bit-identical).
 */
#include "regressor_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------ */
/* The weight alphabet                                                 */
/* ------------------------------------------------------------------ */

void tsq__alphabet_range(tsq__alphabet *a, int32_t L)
{
    int32_t i;
    a->count = 2 * L + 1;
    a->symmetric = 1;
    a->range = L;
    for (i = 0; i < a->count; i++)
        a->values[i] = i - L;
}

int tsq__alphabet_custom(tsq__alphabet *a, const int32_t *values, int32_t count)
{
    unsigned char seen[256];
    int32_t i, n = 0;
    memset(seen, 0, sizeof seen);
    for (i = 0; i < count; i++) {
        if (values[i] < -128 || values[i] > 127)
            return 0;
        seen[values[i] + 128] = 1;
    }
    for (i = 0; i < 256; i++)
        if (seen[i])
            a->values[n++] = i - 128;
    if (n < 2)
        return 0;
    a->count = n;
    a->symmetric = 1;
    for (i = 0; i < n; i++)
        if (a->values[i] == -128 || !seen[-a->values[i] + 128])
            a->symmetric = 0;
    /* {-L .. L} gets the closed-form nearest element. */
    a->range = (a->symmetric && a->values[n - 1] - a->values[0] == n - 1) ? a->values[n - 1] : 0;
    return 1;
}

int32_t tsq__alphabet_nearest(const tsq__alphabet *a, double u)
{
    int32_t lo, hi;
    if (u != u)
        u = 0.0;
    if (a->range) {
        /* ceil(|u| - 1/2): ties (|u| = m + 1/2) go to the smaller magnitude. */
        double m = fabs(u);
        int32_t k = m < (double)a->range + 0.5 ? (int32_t)ceil(m - 0.5) : a->range;
        return u < 0 ? -k : k;
    }
    /* Binary search for the first value >= u, then compare with its left. */
    lo = 0;
    hi = a->count;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if ((double)a->values[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return a->values[0];
    if (lo == a->count)
        return a->values[a->count - 1];
    {
        double dl = u - a->values[lo - 1], dh = a->values[lo] - u;
        if (dl < dh)
            return a->values[lo - 1];
        if (dh < dl)
            return a->values[lo];
        return abs(a->values[lo - 1]) < abs(a->values[lo]) ? a->values[lo - 1] : a->values[lo];
    }
}

/* ------------------------------------------------------------------ */
/* The output quantizer and the z-step                                 */
/* ------------------------------------------------------------------ */

int tsq__outq_init(tsq__outq *q, int32_t bits, float eps, float delta)
{
    if (bits < 1 || bits > 8 || !isfinite(eps) || !isfinite(delta) || eps < 0.0f ||
        !(delta > 0.0f))
        return 0;
    q->bits = bits;
    q->maxcode = (1 << bits) - 1;
    q->eps = eps;
    q->delta = delta;
    q->inv_delta = 1.0f / delta;
    if (!isfinite(q->inv_delta) || !isfinite((float)q->maxcode * delta))
        return 0;
    return 1;
}

/* Bin m of Q (docs/method.md §2.1), closed: I_0 = (-inf, eps],
 * I_m = [max(eps, (m - 1/2) delta), (m + 1/2) delta] for 1 <= m < maxcode
 * (bin 1 starts at eps itself), and the top bin is unbounded above.
 * Each finite end is then moved inward by `margin` (a length; a bin
 * narrower than two margins shrinks to its midpoint). Returns 0 for a bin
 * that eps has swallowed. */
static int bin_bounds(const tsq__outq *q, int32_t m, double margin, double *lo, double *hi)
{
    double delta = q->delta;
    if (m == 0) {
        *lo = -HUGE_VAL;
        *hi = q->eps;
    } else {
        *lo = m == 1 ? (double)q->eps : fmax((double)q->eps, (m - 0.5) * delta);
        *hi = m == q->maxcode ? HUGE_VAL : (m + 0.5) * delta;
        if (!(*lo < *hi))
            return 0;
    }
    if (margin > 0.0) {
        double a = isfinite(*lo) ? *lo + margin : *lo, b = isfinite(*hi) ? *hi - margin : *hi;
        if (a > b) /* both ends are finite here */
            a = b = 0.5 * (*lo + *hi);
        *lo = a;
        *hi = b;
    }
    return 1;
}

/* The bins as the z-step uses them (see tsq__zstep in the header). */
void tsq__zstep_bins(const tsq__outq *q, double margin, float *lo, float *hi)
{
    int32_t m;
    for (m = 0; m <= q->maxcode; m++) {
        double a, b;
        if (bin_bounds(q, m, margin, &a, &b)) {
            lo[m] = (float)a;
            hi[m] = (float)b;
        } else { /* swallowed by eps: no v has this code */
            lo[m] = 1.0f;
            hi[m] = 0.0f;
        }
    }
}

/* One sample of tsq__zrows: the plain C definition. */
static void zrows_one(const tsq__zrows *a, int64_t i, int64_t c)
{
    const tsq__outq *q = &a->q[c];
    float v = a->alpha[c] * a->xw[i * a->C + c] + a->b[c], z;
    int32_t y = a->y[i * a->C + c], k = tsq__quant_code(v, q->eps, q->inv_delta, q->maxcode);
    a->err[c] += (double)((y - k) * (y - k));
    if (!a->zstep)
        return;
    z = tsq__zstep_coded(q, a->lo + c * a->nbins, a->hi + c * a->nbins, v, k, y, a->lambda,
                         &a->zcost[c]);
    a->z[i * a->C + c] = z;
    a->zsum[c] += z;
    a->zsq[c] += (double)z * z;
}

#if defined(__SSE2__)
/* Four channels c .. c+3 of row i, branch-free where the scalar code
 * branches on data. Bit-identical to zrows_one: the same float operations
 * in the same order (v = alpha x + b; t = v inv + 1/2; for v > eps >= 0,
 * t > 0, so floor(t) = trunc(t), and clamping t to [1, maxcode] before
 * truncating equals clamping the floor, the bounds being integers); the
 * own-bin fast path of tsq__zstep_coded; lanes off that path go through
 * the scalar function; the double sums are added per channel in row order
 * as in zrows_one. */
static void zrows_four(const tsq__zrows *a, int64_t i, int64_t c)
{
    const int64_t at = i * a->C + c;
    __m128 v = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(a->alpha + c), _mm_loadu_ps(a->xw + at)),
                          _mm_loadu_ps(a->b + c));
    __m128 t = _mm_add_ps(_mm_mul_ps(v, _mm_loadu_ps(a->inv_delta + c)), _mm_set1_ps(0.5f));
    __m128 above = _mm_cmpgt_ps(v, _mm_loadu_ps(a->eps + c));
    __m128i k, y, e;
    __m128 ef;
    int32_t kk[4], yy[4];
    int lane;
    t = _mm_max_ps(_mm_min_ps(t, _mm_loadu_ps(a->top + c)), _mm_set1_ps(1.0f));
    k = _mm_and_si128(_mm_cvttps_epi32(t), _mm_castps_si128(above));
    {
        int32_t packed;
        memcpy(&packed, a->y + at, 4);
        y = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(packed), _mm_setzero_si128()),
                               _mm_setzero_si128());
    }
    e = _mm_sub_epi32(y, k);
    ef = _mm_cvtepi32_ps(e);
    ef = _mm_mul_ps(ef, ef); /* exact: |e| <= 255 */
    _mm_storeu_pd(a->err + c, _mm_add_pd(_mm_loadu_pd(a->err + c), _mm_cvtps_pd(ef)));
    _mm_storeu_pd(a->err + c + 2,
                  _mm_add_pd(_mm_loadu_pd(a->err + c + 2), _mm_cvtps_pd(_mm_movehl_ps(ef, ef))));
    if (!a->zstep)
        return;
    _mm_storeu_si128((__m128i *)kk, k);
    _mm_storeu_si128((__m128i *)yy, y);
    {
        const int32_t nb = a->nbins;
        __m128 lo = _mm_setr_ps(a->lo[c * nb + kk[0]], a->lo[(c + 1) * nb + kk[1]],
                                a->lo[(c + 2) * nb + kk[2]], a->lo[(c + 3) * nb + kk[3]]);
        __m128 hi = _mm_setr_ps(a->hi[c * nb + kk[0]], a->hi[(c + 1) * nb + kk[1]],
                                a->hi[(c + 2) * nb + kk[2]], a->hi[(c + 3) * nb + kk[3]]);
        __m128 below_lo = _mm_cmplt_ps(v, lo), above_hi = _mm_cmpgt_ps(v, hi);
        /* z = v < lo ? lo : v > hi ? hi : v */
        __m128 z = _mm_or_ps(_mm_and_ps(above_hi, hi), _mm_andnot_ps(above_hi, v));
        __m128 dz, cost, fast;
        float zz[4], vv[4];
        z = _mm_or_ps(_mm_and_ps(below_lo, lo), _mm_andnot_ps(below_lo, z));
        dz = _mm_sub_ps(z, v);
        cost = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(a->lambda), dz), dz);
        fast = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, y)),
                          _mm_cmplt_ps(cost, _mm_loadu_ps(a->delta2 + c)));
        _mm_storeu_ps(zz, z);
        _mm_storeu_ps(vv, v);
        if (_mm_movemask_ps(fast) != 0xF)
            for (lane = 0; lane < 4; lane++)
                if (!((_mm_movemask_ps(fast) >> lane) & 1))
                    zz[lane] = tsq__zstep_coded(&a->q[c + lane], a->lo + (c + lane) * nb,
                                                a->hi + (c + lane) * nb, vv[lane], kk[lane],
                                                yy[lane], a->lambda, &a->zcost[c + lane]);
        z = _mm_loadu_ps(zz);
        _mm_storeu_ps(a->z + at, z);
        {
            __m128d z01 = _mm_cvtps_pd(z), z23 = _mm_cvtps_pd(_mm_movehl_ps(z, z));
            _mm_storeu_pd(a->zsum + c, _mm_add_pd(_mm_loadu_pd(a->zsum + c), z01));
            _mm_storeu_pd(a->zsum + c + 2, _mm_add_pd(_mm_loadu_pd(a->zsum + c + 2), z23));
            _mm_storeu_pd(a->zsq + c, _mm_add_pd(_mm_loadu_pd(a->zsq + c), _mm_mul_pd(z01, z01)));
            _mm_storeu_pd(a->zsq + c + 2,
                          _mm_add_pd(_mm_loadu_pd(a->zsq + c + 2), _mm_mul_pd(z23, z23)));
        }
    }
}
#endif

void tsq__zrows_run(const tsq__zrows *a, int simd)
{
    int64_t i, c, c4 = 0, c16 = simd == 2 ? a->C & ~(int64_t)15 : 0;
#if defined(__SSE2__)
    if (simd)
        c4 = a->C & ~(int64_t)3;
#else
    (void)simd;
#endif
    for (i = 0; i < a->rows; i++) {
        for (c = 0; c < c16; c += 16)
            tsq__zrows_sixteen_avx512(a, i, c);
#if defined(__SSE2__)
        for (c = c16; c < c4; c += 4)
            zrows_four(a, i, c);
#endif
        for (c = c4; c < a->C; c++)
            zrows_one(a, i, c);
    }
}

