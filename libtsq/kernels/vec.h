/*
 * Element-wise float loops and pooling kernels (depend on core only),
 * shared by the layers (nn/) and the inference plan (runtime/).
 */
#ifndef TSQ_KERNELS_VEC_H
#define TSQ_KERNELS_VEC_H

#include "internal.h"

/* ---- vec_f32.c: vectorisable loops (pointers must not overlap unless
 * the name says in place) ---- */
void tsq__vec_relu(float *restrict y, const float *restrict x, int64_t n);
void tsq__vec_relu_grad(float *restrict dx, const float *restrict x, const float *restrict dy,
                        int64_t n);
void tsq__vec_affine(float *restrict y, const float *restrict x, float a, float b, int64_t n);
void tsq__vec_affine_inplace(float *y, float a, float b, int64_t n);
void tsq__vec_axpbypc(float *restrict y, const float *restrict dy, const float *restrict x,
                      float a, float b, float c, int64_t n);
/* *sum += sum x, *sumsq += sum x^2 (in double). */
void tsq__vec_sums(const float *restrict x, int64_t n, double *sum, double *sumsq);
/* *sum_dy += sum dy, *sum_dyx += sum dy x (in double). */
void tsq__vec_dot_sum(const float *restrict dy, const float *restrict x, int64_t n,
                      double *sum_dy, double *sum_dyx);
void tsq__vec_add(float *restrict dst, const float *restrict src, int64_t n);
/* The two sums above over `rows` rows of n floats, stride floats apart,
 * with exactly the bits of calling them row by row in order; cpu (the
 * context's TSQ_CPU_* features) picks the kernel: with AVX-512 or AVX2
 * several rows run side by side (vec_sums_avx512.c, vec_sums_avx2.c). */
void tsq__vec_sums_rows(uint32_t cpu, const float *x, int64_t stride, int64_t rows, int64_t n,
                        double *sum, double *sumsq);
void tsq__vec_dot_sum_rows(uint32_t cpu, const float *dy, const float *x, int64_t stride,
                           int64_t rows, int64_t n, double *sum_dy, double *sum_dyx);
/* A batch-norm (y1 = a x + b) and the ReLU after it (y2) in one pass, and
 * the ReLU's gradient recomputed from the batch-norm's input x (g = dy
 * where a x + b > 0), folded into the batch-norm's backward passes: the
 * bits of tsq__vec_affine, tsq__vec_relu, tsq__vec_relu_grad and then
 * tsq__vec_axpbypc, tsq__vec_affine (b = 0) or tsq__vec_dot_sum_rows. */
void tsq__vec_affine_relu(float *restrict y1, float *restrict y2, const float *restrict x,
                          float a, float b, int64_t n);
void tsq__vec_axpbypc_relu(float *restrict y, const float *restrict dy, const float *restrict x,
                           float a, float b, float ga, float gb, float gc, int64_t n);
void tsq__vec_scale_relu(float *restrict y, const float *restrict dy, const float *restrict x,
                         float a, float b, float k, int64_t n);
void tsq__vec_dot_sum_rows_relu(uint32_t cpu, const float *dy, const float *x, float a, float b,
                                int64_t stride, int64_t rows, int64_t n, double *sum_dy,
                                double *sum_dyx);
void tsq__vec_dot_sum_rows_relu_avx512(const float *dy, const float *x, float a, float b,
                                       int64_t stride, int64_t rows, int64_t n, double *sum_dy,
                                       double *sum_dyx);
void tsq__vec_sums_rows_avx512(const float *x, int64_t stride, int64_t rows, int64_t n,
                               double *sum, double *sumsq);
void tsq__vec_dot_sum_rows_avx512(const float *dy, const float *x, int64_t stride, int64_t rows,
                                  int64_t n, double *sum_dy, double *sum_dyx);
/* The same three on AVX2 (vec_sums_avx2.c), for CPUs without AVX-512. */
void tsq__vec_dot_sum_rows_relu_avx2(const float *dy, const float *x, float a, float b,
                                     int64_t stride, int64_t rows, int64_t n, double *sum_dy,
                                     double *sum_dyx);
void tsq__vec_sums_rows_avx2(const float *x, int64_t stride, int64_t rows, int64_t n,
                             double *sum, double *sumsq);
void tsq__vec_dot_sum_rows_avx2(const float *dy, const float *x, int64_t stride, int64_t rows,
                                int64_t n, double *sum_dy, double *sum_dyx);

/* ---- pool.c ---- */
/* k x k max-pool with stride s, no padding, on planes [lo, hi) of float
 * planes h x w (plane p at x + p*h*w) into oh x ow planes at y. argmax, when
 * not NULL, receives per output the index in its input plane of the first
 * maximum of the window (the gradient's target). */
void tsq__maxpool_f32(const float *x, float *y, int32_t *argmax, int64_t lo, int64_t hi,
                      int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s);
/* The same on NHWC uint8 codes, images [lo, hi) of h x w x c: exact on
 * codes, as the quantizer is monotone (the max of codes is the code of the
 * max). */
void tsq__maxpool_u8_nhwc(const uint8_t *x, uint8_t *y, int64_t lo, int64_t hi, int64_t h,
                          int64_t w, int64_t c, int64_t oh, int64_t ow, int64_t k, int64_t s);

#endif /* TSQ_KERNELS_VEC_H */
