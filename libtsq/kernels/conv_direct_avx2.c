/* The direct small-patch convolution (conv_direct.c) on AVX2 + FMA: 8
 * output pixels per vector (the body is conv_direct_simd.h). Stride 1 only
 * (tsq__conv_direct_runs). */
#include "kernels/conv.h"

#include <immintrin.h>

#define CD_VEC __m256
#define CD_LANES 8
#define CD_MASK __m256i
#define CD_MASK_OF(n)                                                                          \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define CD_ZERO() _mm256_setzero_ps()
#define CD_LOAD(p) _mm256_loadu_ps(p)
#define CD_FMA(wp, v, acc) _mm256_fmadd_ps(_mm256_broadcast_ss(wp), v, acc)
#define CD_ADD1(r, s) _mm256_add_ps(r, _mm256_set1_ps(s))
#define CD_MUL1(r, s) _mm256_mul_ps(r, _mm256_set1_ps(s))
#define CD_ADD(a, b) _mm256_add_ps(a, b)
#define CD_STORE(p, m, r) _mm256_maskstore_ps(p, m, r)
#define CD_ROWS 1
#define CD_NAME tsq__conv_direct_avx2

#include "kernels/conv_direct_simd.h"
