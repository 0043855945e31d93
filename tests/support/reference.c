/* tests/support/reference.h */
#include "reference.h"

#include <math.h>

int32_t th_ref_code(float x, float eps, float delta, int32_t maxcode)
{
    volatile float inv, prod, sum, k;
    if (!(x > eps))
        return 0;
    inv = 1.0f / delta;
    prod = x * inv;
    sum = prod + 0.5f;
    k = floorf(sum);
    if (k < 1.0f)
        return 1;
    if (k > (float)maxcode)
        return maxcode;
    return (int32_t)k;
}

int th_ref_ste_passes(float x, float delta, int32_t maxcode)
{
    volatile float top = (float)maxcode * delta;
    return x > 0.0f && x < top;
}

uint32_t th_ref_crc32(const void *data, uint64_t n)
{
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    uint64_t i;
    int b;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

double th_ref_best_ternary(const uint8_t *x, const float *t, int64_t n, int d, int64_t C,
                           int64_t c)
{
    double A[9][9] = {{0}}, mu[9] = {0}, tc[9] = {0}, tt = 0.0, tbar = 0.0, best;
    int idx[9], i, j;
    int64_t k;
    for (k = 0; k < n; k++) {
        tbar += t[k * C + c];
        for (i = 0; i < d; i++)
            mu[i] += x[k * d + i];
    }
    tbar /= (double)n;
    for (i = 0; i < d; i++)
        mu[i] /= (double)n;
    for (k = 0; k < n; k++) {
        double tk = t[k * C + c] - tbar;
        tt += tk * tk;
        for (i = 0; i < d; i++) {
            tc[i] += (x[k * d + i] - mu[i]) * tk;
            for (j = 0; j < d; j++)
                A[i][j] += (x[k * d + i] - mu[i]) * (x[k * d + j] - mu[j]);
        }
    }
    /* every w in {-1,0,1}^d, counted in base 3 */
    best = tt;
    for (i = 0; i < d; i++)
        idx[i] = -1;
    for (;;) {
        double wt = 0.0, waw = 0.0;
        for (i = 0; i < d; i++) {
            wt += idx[i] * tc[i];
            for (j = 0; j < d; j++)
                waw += idx[i] * A[i][j] * idx[j];
        }
        if (waw > 0.0 && tt - wt * wt / waw < best)
            best = tt - wt * wt / waw;
        for (i = 0; i < d && ++idx[i] == 2; i++)
            idx[i] = -1;
        if (i == d)
            break;
    }
    return best;
}
