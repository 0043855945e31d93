/* The batch-norm channel sums of vec_f32.c on AVX-512, several rows at a
 * time. tsq__vec_sums and tsq__vec_dot_sum keep 8 partial sums in double,
 * element i of a row going to partial i % 8, and fold them into the
 * caller's sums in order: each partial is one dependent chain of adds, so
 * a row runs at the adds' latency, not their throughput. The 8 partials
 * are one vector here, and 4 rows are summed side by side (8 independent
 * chains, with the squares' or products'), then folded row by row in
 * order: the same operations on the same values, so the same bits as
 * calling the C functions row by row. */
#include "kernels/vec.h"

#include <immintrin.h>

#define ROWS 4

/* *a += p[0] + ... in order, *b likewise: the C functions' fold. */
static void fold(__m512d p, __m512d q, const double *tail_p, const double *tail_q, double *a,
                 double *b)
{
    double tp[8], tq[8];
    int k;
    _mm512_storeu_pd(tp, p);
    _mm512_storeu_pd(tq, q);
    tp[0] = *tail_p;
    tq[0] = *tail_q;
    for (k = 0; k < 8; k++) {
        *a += tp[k];
        *b += tq[k];
    }
}

void tsq__vec_sums_rows_avx512(const float *x, int64_t stride, int64_t rows, int64_t n,
                               double *sum, double *sumsq)
{
    int64_t r0, whole = n / 8 * 8;
    for (r0 = 0; r0 < rows; r0 += ROWS) {
        int nr = rows - r0 < ROWS ? (int)(rows - r0) : ROWS, j;
        __m512d s[ROWS], q[ROWS];
        int64_t i;
        for (j = 0; j < ROWS; j++)
            s[j] = q[j] = _mm512_setzero_pd();
        if (nr == ROWS) {
            for (i = 0; i < whole; i += 8)
#pragma GCC unroll 4
                for (j = 0; j < ROWS; j++) {
                    __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + (r0 + j) * stride + i));
                    s[j] = _mm512_add_pd(s[j], v);
                    q[j] = _mm512_add_pd(q[j], _mm512_mul_pd(v, v));
                }
        } else {
            for (j = 0; j < nr; j++)
                for (i = 0; i < whole; i += 8) {
                    __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + (r0 + j) * stride + i));
                    s[j] = _mm512_add_pd(s[j], v);
                    q[j] = _mm512_add_pd(q[j], _mm512_mul_pd(v, v));
                }
        }
        for (j = 0; j < nr; j++) {
            /* the elements past the last 8 go to partial 0, one by one */
            const float *row = x + (r0 + j) * stride;
            double s0 = _mm_cvtsd_f64(_mm512_castpd512_pd128(s[j]));
            double q0 = _mm_cvtsd_f64(_mm512_castpd512_pd128(q[j]));
            for (i = whole; i < n; i++) {
                double v = row[i];
                s0 += v;
                q0 += v * v;
            }
            fold(s[j], q[j], &s0, &q0, sum, sumsq);
        }
    }
}

/* dy's values as the sums take them: with relu, 0 where a x + b <= 0 (the
 * batch-norm's output, recomputed with the same float operations, is the
 * ReLU's input: tsq__vec_dot_sum_rows_relu). */
static inline __attribute__((always_inline)) __m256 grad8(const float *dy, __m256 v, __m256 a,
                                                          __m256 b, const int relu)
{
    __m256 g = _mm256_loadu_ps(dy);
    if (relu) {
        __mmask8 on = _mm256_cmp_ps_mask(_mm256_add_ps(_mm256_mul_ps(a, v), b),
                                         _mm256_setzero_ps(), _CMP_GT_OQ);
        g = _mm256_maskz_mov_ps(on, g);
    }
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
        __m512d s[ROWS], d[ROWS];
        int64_t i;
        for (j = 0; j < ROWS; j++)
            s[j] = d[j] = _mm512_setzero_pd();
        if (nr == ROWS) {
            for (i = 0; i < whole; i += 8)
#pragma GCC unroll 4
                for (j = 0; j < ROWS; j++) {
                    int64_t o = (r0 + j) * stride + i;
                    __m256 xv = _mm256_loadu_ps(x + o);
                    __m512d g = _mm512_cvtps_pd(grad8(dy + o, xv, a, b, relu));
                    s[j] = _mm512_add_pd(s[j], g);
                    d[j] = _mm512_add_pd(d[j], _mm512_mul_pd(g, _mm512_cvtps_pd(xv)));
                }
        } else {
            for (j = 0; j < nr; j++)
                for (i = 0; i < whole; i += 8) {
                    int64_t o = (r0 + j) * stride + i;
                    __m256 xv = _mm256_loadu_ps(x + o);
                    __m512d g = _mm512_cvtps_pd(grad8(dy + o, xv, a, b, relu));
                    s[j] = _mm512_add_pd(s[j], g);
                    d[j] = _mm512_add_pd(d[j], _mm512_mul_pd(g, _mm512_cvtps_pd(xv)));
                }
        }
        for (j = 0; j < nr; j++) {
            int64_t o = (r0 + j) * stride;
            double s0 = _mm_cvtsd_f64(_mm512_castpd512_pd128(s[j]));
            double d0 = _mm_cvtsd_f64(_mm512_castpd512_pd128(d[j]));
            for (i = whole; i < n; i++) {
                float g = dy[o + i];
                if (relu && !(fa * x[o + i] + fb > 0.0f))
                    g = 0.0f;
                s0 += g;
                d0 += (double)g * (double)x[o + i];
            }
            fold(s[j], d[j], &s0, &d0, sum_dy, sum_dyx);
        }
    }
}

void tsq__vec_dot_sum_rows_avx512(const float *dy, const float *x, int64_t stride, int64_t rows,
                                  int64_t n, double *sum_dy, double *sum_dyx)
{
    dot_sum_rows(dy, x, 0.0f, 0.0f, stride, rows, n, sum_dy, sum_dyx, 0);
}

void tsq__vec_dot_sum_rows_relu_avx512(const float *dy, const float *x, float a, float b,
                                       int64_t stride, int64_t rows, int64_t n, double *sum_dy,
                                       double *sum_dyx)
{
    dot_sum_rows(dy, x, a, b, stride, rows, n, sum_dy, sum_dyx, 1);
}
