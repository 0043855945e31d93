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
