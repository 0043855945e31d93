/* The float convolution computed directly, for small patches (a network's
 * first layer: one or three input channels, a 3 x 3 or 5 x 5 window).
 *
 * With k = cin kh kw of a few tens, the GEMM of conv_f32.c spends most of
 * its time building and packing the patch matrix, not multiplying, and its
 * float output goes through memory before the next stage reads it. Here
 * each output is one FMA chain over its patch in the patch matrix's
 * (c, ky, kx) order, from +0, with the bias added last:
 *
 *     y = fl( fma(w[k-1], x[k-1], ... fma(w[0], x[0], +0) ...) + b )
 *
 * Padding cells enter as 0.0f, as im2col writes them. This is, bit for
 * bit, what a GEMM kernel that accumulates over k in one FMA register per
 * output computes with the bias as a last row of ones: OpenBLAS's SkylakeX
 * sgemm kernels at these shapes (measured: no output of 1.6 million
 * differs, k = 9 to 28), so a net trained on such a machine through the
 * GEMM keeps its numbers. Every CPU takes this path for these shapes (the
 * layers and the inference plan alike, tsq__conv_direct_runs), so the
 * result no longer depends on the BLAS, and the plan, which fuses it with
 * the quantizer (conv_front_avx512.c), still equals the net.
 *
 * This C version is the oracle: fmaf is exact by definition, so the SIMD
 * kernels (conv_direct_avx2.c, conv_direct_avx512.c) give the same bits.
 * On a CPU without an FMA unit fmaf is emulated, slowly, but exactly. */
#include "kernels/conv.h"

#include <math.h>
#include <string.h>

int tsq__conv_direct_runs(const tsq__conv_geom *g)
{
    return !(g->kh == 1 && g->kw == 1) && g->k <= TSQ__CONV_DIRECT_K && g->stride == 1 && g->stride_w == 1 &&
           g->pad == g->pad_w;
}

/* The padded image (rows of w + 2 pad floats), 32 zeros after it (a row's
 * last vector reads up to 15 floats past the row), then a block of 8
 * channels' weights. */
int64_t tsq__conv_direct_ws_floats(const tsq__conv_geom *g)
{
    int64_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad_w;
    return (g->cin * hp * wp + 32 + 8 * g->k + 15) / 16 * 16;
}

void tsq__conv_pad_image(const tsq__conv_geom *g, const float *x, float *xp)
{
    int64_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad_w, c, iy;
    memset(xp, 0, (size_t)(g->cin * hp * wp + 32) * sizeof(float));
    for (c = 0; c < g->cin; c++)
        for (iy = 0; iy < g->h; iy++)
            memcpy(xp + (c * hp + iy + g->pad) * wp + g->pad_w, x + (c * g->h + iy) * g->w,
                   (size_t)g->w * sizeof(float));
}

/* Input value (c, iy, ix) of one image, 0.0f in the padding. */
static float at(const tsq__conv_geom *g, const float *x, int64_t c, int64_t iy, int64_t ix)
{
    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
        return 0.0f;
    return x[(c * g->h + iy) * g->w + ix];
}

void tsq__conv_direct_ref(const tsq__conv_geom *g, const float *x, const float *w,
                          const float *bias, float *y, float *scratch)
{
    int64_t co, oy, ox, c, ky, kx;
    (void)scratch;
    for (co = 0; co < g->cout; co++)
        for (oy = 0; oy < g->oh; oy++)
            for (ox = 0; ox < g->ow; ox++) {
                const float *wc = w + co * g->k;
                float acc = 0.0f;
                for (c = 0; c < g->cin; c++)
                    for (ky = 0; ky < g->kh; ky++)
                        for (kx = 0; kx < g->kw; kx++)
                            acc = fmaf(*wc++, at(g, x, c, oy - g->pad + ky, ox - g->pad_w + kx),
                                       acc);
                if (bias)
                    acc = acc + bias[co];
                y[(co * g->oh + oy) * g->ow + ox] = acc;
            }
}

tsq__conv_direct_fn tsq__conv_direct_for(uint32_t cpu)
{
    const uint32_t avx2 = TSQ_CPU_AVX2 | TSQ_CPU_FMA;
    if ((cpu & (avx2 | TSQ_CPU_AVX512F)) == (avx2 | TSQ_CPU_AVX512F))
        return tsq__conv_direct_avx512;
    if ((cpu & avx2) == avx2)
        return tsq__conv_direct_avx2;
    return tsq__conv_direct_ref;
}
