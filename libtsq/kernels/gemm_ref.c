/* The reference kernel, the oracle of every SIMD path: plain int32
 * multiply-accumulate over the int8 weights unpacked from the planes. */
#include "kernels_internal.h"

void tsq__gemm_ref(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, const int8_t *w,
                   int64_t n, int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    int64_t r, i, c;
    for (r = 0; r < m; r++) {
        int32_t *row = acc + r * ldacc;
        for (c = c0; c < c1; c++)
            row[c] = 0;
        for (i = 0; i < k; i++) {
            int32_t xv = x[r * ldx + i];
            const int8_t *wrow = w + i * n;
            if (xv == 0)
                continue; /* most codes are 0 after a sparse quantizer */
            for (c = c0; c < c1; c++)
                row[c] += xv * wrow[c];
        }
    }
}
