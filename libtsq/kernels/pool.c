/* Max-pooling kernels: float NCHW planes (the layer and the plan's float
 * stages) and uint8 NHWC codes (the plan's code stages). */
#include "kernels/vec.h"

#include <string.h>

void tsq__maxpool_f32(const float *x, float *y, int32_t *argmax, int64_t lo, int64_t hi,
                      int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s)
{
    int64_t pl, oy, ox, a, b;
    for (pl = lo; pl < hi; pl++) {
        const float *xp = x + pl * h * w;
        float *yp = y + pl * oh * ow;
        int32_t *ip = argmax ? argmax + pl * oh * ow : NULL;
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++) {
                int64_t best = oy * s * w + ox * s;
                for (a = 0; a < k; a++)
                    for (b = 0; b < k; b++) {
                        int64_t idx = (oy * s + a) * w + ox * s + b;
                        if (xp[idx] > xp[best])
                            best = idx;
                    }
                yp[oy * ow + ox] = xp[best];
                if (ip)
                    ip[oy * ow + ox] = (int32_t)best;
            }
    }
}

void tsq__maxpool_u8_nhwc(const uint8_t *x, uint8_t *y, int64_t lo, int64_t hi, int64_t h,
                          int64_t w, int64_t c, int64_t oh, int64_t ow, int64_t k, int64_t s)
{
    int64_t b, oy, ox, a, d, ch;
    for (b = lo; b < hi; b++) {
        const uint8_t *xb = x + b * h * w * c;
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++) {
                uint8_t *yp = y + ((b * oh + oy) * ow + ox) * c;
                memcpy(yp, xb + (oy * s * w + ox * s) * c, (size_t)c);
                for (a = 0; a < k; a++)
                    for (d = 0; d < k; d++) {
                        const uint8_t *xp = xb + ((oy * s + a) * w + ox * s + d) * c;
                        for (ch = 0; ch < c; ch++)
                            yp[ch] = xp[ch] > yp[ch] ? xp[ch] : yp[ch];
                    }
            }
    }
}
