/* Element-wise loops of the layers (ReLU, batch-norm, epilogues), written in
 * blocks of 8 independent operations on restrict pointers: at -O2 GCC only
 * vectorises loops whose trip count it knows, but it vectorises such blocks
 * (SLP), so these run with SIMD instructions without per-ISA code. The
 * sums keep 8 partial accumulators in a fixed order: deterministic. */
#include "kernels/vec.h"

void tsq__vec_relu(float *restrict y, const float *restrict x, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            float v = x[i + k];
            y[i + k] = v > 0.0f ? v : 0.0f;
        }
    for (; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void tsq__vec_relu_grad(float *restrict dx, const float *restrict x, const float *restrict dy,
                        int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            float g = dy[i + k]; /* loaded unconditionally: a select, not a branch */
            dx[i + k] = x[i + k] > 0.0f ? g : 0.0f;
        }
    for (; i < n; i++)
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

void tsq__vec_affine(float *restrict y, const float *restrict x, float a, float b, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++)
            y[i + k] = a * x[i + k] + b;
    for (; i < n; i++)
        y[i] = a * x[i] + b;
}

void tsq__vec_affine_inplace(float *y, float a, float b, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++)
            y[i + k] = a * y[i + k] + b;
    for (; i < n; i++)
        y[i] = a * y[i] + b;
}

/* y = a dy + b x + c (batch-norm backward with batch statistics). */
void tsq__vec_axpbypc(float *restrict y, const float *restrict dy, const float *restrict x,
                      float a, float b, float c, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++)
            y[i + k] = a * dy[i + k] + b * x[i + k] + c;
    for (; i < n; i++)
        y[i] = a * dy[i] + b * x[i] + c;
}

void tsq__vec_sums(const float *restrict x, int64_t n, double *sum, double *sumsq)
{
    double s[8] = {0}, q[8] = {0};
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            double v = x[i + k];
            s[k] += v;
            q[k] += v * v;
        }
    for (; i < n; i++) {
        double v = x[i];
        s[0] += v;
        q[0] += v * v;
    }
    for (k = 0; k < 8; k++) {
        *sum += s[k];
        *sumsq += q[k];
    }
}

void tsq__vec_dot_sum(const float *restrict dy, const float *restrict x, int64_t n,
                      double *sum_dy, double *sum_dyx)
{
    double s[8] = {0}, d[8] = {0};
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            double g = dy[i + k];
            s[k] += g;
            d[k] += g * (double)x[i + k];
        }
    for (; i < n; i++) {
        s[0] += dy[i];
        d[0] += (double)dy[i] * (double)x[i];
    }
    for (k = 0; k < 8; k++) {
        *sum_dy += s[k];
        *sum_dyx += d[k];
    }
}

void tsq__vec_add(float *restrict dst, const float *restrict src, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++)
            dst[i + k] += src[i + k];
    for (; i < n; i++)
        dst[i] += src[i];
}

/* A batch-norm and the ReLU after it in one pass (nn/batchnorm.c): y1 =
 * a x + b as tsq__vec_affine writes it, y2 = its ReLU as tsq__vec_relu. */
void tsq__vec_affine_relu(float *restrict y1, float *restrict y2, const float *restrict x,
                          float a, float b, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            float v = a * x[i + k] + b;
            y1[i + k] = v;
            y2[i + k] = v > 0.0f ? v : 0.0f;
        }
    for (; i < n; i++) {
        float v = a * x[i] + b;
        y1[i] = v;
        y2[i] = v > 0.0f ? v : 0.0f;
    }
}

/* The ReLU's gradient taken from the batch-norm's input: a x + b is, bit
 * for bit, the ReLU's input, so g = dy where it is > 0, else 0, is what
 * tsq__vec_relu_grad writes; then y = ga g + gb x + gc as
 * tsq__vec_axpbypc computes it. */
void tsq__vec_axpbypc_relu(float *restrict y, const float *restrict dy, const float *restrict x,
                           float a, float b, float ga, float gb, float gc, int64_t n)
{
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            float v = x[i + k], d = dy[i + k]; /* loaded unconditionally: a select */
            float g = a * v + b > 0.0f ? d : 0.0f;
            y[i + k] = ga * g + gb * v + gc;
        }
    for (; i < n; i++) {
        float g = a * x[i] + b > 0.0f ? dy[i] : 0.0f;
        y[i] = ga * g + gb * x[i] + gc;
    }
}

/* The same gradient times k (+ 0.0f, as tsq__vec_affine with b = 0). */
void tsq__vec_scale_relu(float *restrict y, const float *restrict dy, const float *restrict x,
                         float a, float b, float k, int64_t n)
{
    int64_t i = 0, t;
    for (; i + 8 <= n; i += 8)
        for (t = 0; t < 8; t++) {
            float d = dy[i + t], g = a * x[i + t] + b > 0.0f ? d : 0.0f;
            y[i + t] = k * g + 0.0f;
        }
    for (; i < n; i++) {
        float g = a * x[i] + b > 0.0f ? dy[i] : 0.0f;
        y[i] = k * g + 0.0f;
    }
}

/* tsq__vec_dot_sum on that gradient, one row. */
static void dot_sum_relu(const float *restrict dy, const float *restrict x, float a, float b,
                         int64_t n, double *sum_dy, double *sum_dyx)
{
    double s[8] = {0}, d[8] = {0};
    int64_t i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) {
            float v = x[i + k], gv = dy[i + k];
            double g = a * v + b > 0.0f ? gv : 0.0f;
            s[k] += g;
            d[k] += g * (double)v;
        }
    for (; i < n; i++) {
        float g = a * x[i] + b > 0.0f ? dy[i] : 0.0f;
        s[0] += g;
        d[0] += (double)g * (double)x[i];
    }
    for (k = 0; k < 8; k++) {
        *sum_dy += s[k];
        *sum_dyx += d[k];
    }
}

static int sums_avx512(uint32_t cpu)
{
    return (cpu & (TSQ_CPU_AVX2 | TSQ_CPU_AVX512F)) == (TSQ_CPU_AVX2 | TSQ_CPU_AVX512F);
}

static int sums_avx2(uint32_t cpu)
{
    return (cpu & TSQ_CPU_AVX2) != 0;
}

void tsq__vec_sums_rows(uint32_t cpu, const float *x, int64_t stride, int64_t rows, int64_t n,
                        double *sum, double *sumsq)
{
    int64_t r;
    if (sums_avx512(cpu)) {
        tsq__vec_sums_rows_avx512(x, stride, rows, n, sum, sumsq);
        return;
    }
    if (sums_avx2(cpu)) {
        tsq__vec_sums_rows_avx2(x, stride, rows, n, sum, sumsq);
        return;
    }
    for (r = 0; r < rows; r++)
        tsq__vec_sums(x + r * stride, n, sum, sumsq);
}

void tsq__vec_dot_sum_rows(uint32_t cpu, const float *dy, const float *x, int64_t stride,
                           int64_t rows, int64_t n, double *sum_dy, double *sum_dyx)
{
    int64_t r;
    if (sums_avx512(cpu)) {
        tsq__vec_dot_sum_rows_avx512(dy, x, stride, rows, n, sum_dy, sum_dyx);
        return;
    }
    if (sums_avx2(cpu)) {
        tsq__vec_dot_sum_rows_avx2(dy, x, stride, rows, n, sum_dy, sum_dyx);
        return;
    }
    for (r = 0; r < rows; r++)
        tsq__vec_dot_sum(dy + r * stride, x + r * stride, n, sum_dy, sum_dyx);
}

void tsq__vec_dot_sum_rows_relu(uint32_t cpu, const float *dy, const float *x, float a, float b,
                                int64_t stride, int64_t rows, int64_t n, double *sum_dy,
                                double *sum_dyx)
{
    int64_t r;
    if (sums_avx512(cpu)) {
        tsq__vec_dot_sum_rows_relu_avx512(dy, x, a, b, stride, rows, n, sum_dy, sum_dyx);
        return;
    }
    if (sums_avx2(cpu)) {
        tsq__vec_dot_sum_rows_relu_avx2(dy, x, a, b, stride, rows, n, sum_dy, sum_dyx);
        return;
    }
    for (r = 0; r < rows; r++)
        dot_sum_relu(dy + r * stride, x + r * stride, a, b, n, sum_dy, sum_dyx);
}
