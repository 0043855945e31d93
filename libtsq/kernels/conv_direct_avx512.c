/* The direct small-patch convolution (conv_direct.c) on AVX-512: 16 output
 * pixels per vector (the body is conv_direct_simd.h). Stride 1 only
 * (tsq__conv_direct_runs). */
#include "kernels/conv.h"

#include <immintrin.h>

#define CD_VEC __m512
#define CD_LANES 16
#define CD_MASK __mmask16
#define CD_MASK_OF(n) ((__mmask16)((1u << (n)) - 1u))
#define CD_ZERO() _mm512_setzero_ps()
#define CD_LOAD(p) _mm512_loadu_ps(p)
#define CD_FMA(wp, v, acc) _mm512_fmadd_ps(_mm512_set1_ps(*(wp)), v, acc)
#define CD_ADD1(r, s) _mm512_add_ps(r, _mm512_set1_ps(s))
#define CD_MUL1(r, s) _mm512_mul_ps(r, _mm512_set1_ps(s))
#define CD_ADD(a, b) _mm512_add_ps(a, b)
#define CD_STORE(p, m, r) _mm512_mask_storeu_ps(p, m, r)
#define CD_ROWS 2
#define CD_NAME tsq__conv_direct_avx512

#include "kernels/conv_direct_simd.h"
