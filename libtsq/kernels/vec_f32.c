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

static int sums_avx512(uint32_t cpu)
{
    return (cpu & (TSQ_CPU_AVX2 | TSQ_CPU_AVX512F)) == (TSQ_CPU_AVX2 | TSQ_CPU_AVX512F);
}

void tsq__vec_sums_rows(uint32_t cpu, const float *x, int64_t stride, int64_t rows, int64_t n,
                        double *sum, double *sumsq)
{
    int64_t r;
    if (sums_avx512(cpu)) {
        tsq__vec_sums_rows_avx512(x, stride, rows, n, sum, sumsq);
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
    for (r = 0; r < rows; r++)
        tsq__vec_dot_sum(dy + r * stride, x + r * stride, n, sum_dy, sum_dyx);
}
