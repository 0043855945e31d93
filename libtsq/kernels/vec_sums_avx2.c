/* The batch-norm channel sums of vec_f32.c on AVX2 (vec_sums_avx512.c
 * explains the scheme): a row's 8 double partials (element i to partial
 * i % 8) are two vectors of 4, and 2 rows are summed side by side, so 8
 * independent chains of adds hide their latency; each row is then folded
 * into the caller's sums in order, as the C functions fold. The same
 * operations on the same values (product and sum apart, no FMA), so the
 * same bits as calling the C functions row by row. Compiled with -mavx2;
 * called only when the CPU has it. */
#include "kernels/vec.h"

#include <immintrin.h>

#define ROWS 2

/* A row's partials: lo holds 0..3, hi 4..7. */
typedef struct {
    __m256d lo, hi;
} parts8;

/* *a += p[0] + ... + p[7] in order (p[0] replaced by first), *b likewise. */
static void fold(parts8 p, parts8 q, double first_p, double first_q, double *a, double *b)
{
    double tp[8], tq[8];
    int k;
    _mm256_storeu_pd(tp, p.lo);
    _mm256_storeu_pd(tp + 4, p.hi);
    _mm256_storeu_pd(tq, q.lo);
    _mm256_storeu_pd(tq + 4, q.hi);
    tp[0] = first_p;
    tq[0] = first_q;
    for (k = 0; k < 8; k++) {
        *a += tp[k];
        *b += tq[k];
    }
}

static inline __attribute__((always_inline)) parts8 add8(parts8 s, __m256 v)
{
    s.lo = _mm256_add_pd(s.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s.hi = _mm256_add_pd(s.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    return s;
}

/* s += u * v elementwise in double (u, v floats widened). */
static inline __attribute__((always_inline)) parts8 addmul8(parts8 s, __m256 u, __m256 v)
{
    __m256d ul = _mm256_cvtps_pd(_mm256_castps256_ps128(u));
    __m256d uh = _mm256_cvtps_pd(_mm256_extractf128_ps(u, 1));
    __m256d vl = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d vh = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    s.lo = _mm256_add_pd(s.lo, _mm256_mul_pd(ul, vl));
    s.hi = _mm256_add_pd(s.hi, _mm256_mul_pd(uh, vh));
    return s;
}

static parts8 zero8(void)
{
    parts8 z = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    return z;
}

void tsq__vec_sums_rows_avx2(const float *x, int64_t stride, int64_t rows, int64_t n,
                             double *sum, double *sumsq)
{
    int64_t r0, whole = n / 8 * 8;
    for (r0 = 0; r0 < rows; r0 += ROWS) {
        int nr = rows - r0 < ROWS ? (int)(rows - r0) : ROWS, j;
        parts8 s[ROWS], q[ROWS];
        int64_t i;
        for (j = 0; j < ROWS; j++)
            s[j] = q[j] = zero8();
        for (i = 0; i < whole; i += 8)
#pragma GCC unroll 2
            for (j = 0; j < nr; j++) {
                __m256 v = _mm256_loadu_ps(x + (r0 + j) * stride + i);
                s[j] = add8(s[j], v);
                q[j] = addmul8(q[j], v, v);
            }
        for (j = 0; j < nr; j++) {
            /* the elements past the last 8 go to partial 0, one by one */
            const float *row = x + (r0 + j) * stride;
            double s0 = _mm256_cvtsd_f64(s[j].lo), q0 = _mm256_cvtsd_f64(q[j].lo);
            for (i = whole; i < n; i++) {
                double v = row[i];
                s0 += v;
                q0 += v * v;
            }
            fold(s[j], q[j], s0, q0, sum, sumsq);
        }
    }
}

/* dy's values as the sums take them: with relu, 0 where a x + b <= 0 (the
 * batch-norm's output recomputed with the same float operations). */
static inline __attribute__((always_inline)) __m256 grad8(const float *dy, __m256 v, __m256 a,
                                                          __m256 b, const int relu)
{
    __m256 g = _mm256_loadu_ps(dy);
    if (relu)
        g = _mm256_and_ps(g, _mm256_cmp_ps(_mm256_add_ps(_mm256_mul_ps(a, v), b),
                                           _mm256_setzero_ps(), _CMP_GT_OQ));
    return g;
}

static inline __attribute__((always_inline)) void
dot_sum_rows(const float *dy, const float *x, float fa, float fb, int64_t stride, int64_t rows,
             int64_t n, double *sum_dy, double *sum_dyx, const int relu)
{
    int64_t r0, whole = n / 8 * 8;
    __m256 a = _mm256_set1_ps(fa), b = _mm256_set1_ps(fb);
    for (r0 = 0; r0 < rows; r0 += ROWS) {
        int nr = rows - r0 < ROWS ? (int)(rows - r0) : ROWS, j;
        parts8 s[ROWS], d[ROWS];
        int64_t i;
        for (j = 0; j < ROWS; j++)
            s[j] = d[j] = zero8();
        for (i = 0; i < whole; i += 8)
#pragma GCC unroll 2
            for (j = 0; j < nr; j++) {
                int64_t o = (r0 + j) * stride + i;
                __m256 xv = _mm256_loadu_ps(x + o), g = grad8(dy + o, xv, a, b, relu);
                s[j] = add8(s[j], g);
                d[j] = addmul8(d[j], g, xv);
            }
        for (j = 0; j < nr; j++) {
            int64_t o = (r0 + j) * stride;
            double s0 = _mm256_cvtsd_f64(s[j].lo), d0 = _mm256_cvtsd_f64(d[j].lo);
            for (i = whole; i < n; i++) {
                float g = dy[o + i];
                if (relu && !(fa * x[o + i] + fb > 0.0f))
                    g = 0.0f;
                s0 += g;
                d0 += (double)g * (double)x[o + i];
            }
            fold(s[j], d[j], s0, d0, sum_dy, sum_dyx);
        }
    }
}

void tsq__vec_dot_sum_rows_avx2(const float *dy, const float *x, int64_t stride, int64_t rows,
                                int64_t n, double *sum_dy, double *sum_dyx)
{
    dot_sum_rows(dy, x, 0.0f, 0.0f, stride, rows, n, sum_dy, sum_dyx, 0);
}

void tsq__vec_dot_sum_rows_relu_avx2(const float *dy, const float *x, float a, float b,
                                     int64_t stride, int64_t rows, int64_t n, double *sum_dy,
                                     double *sum_dyx)
{
    dot_sum_rows(dy, x, a, b, stride, rows, n, sum_dy, sum_dyx, 1);
}
