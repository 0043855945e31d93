/* The float convolution's backward computed directly, image by image, for
 * the larger-patch convolutions whose forward goes direct (conv_direct.c):
 * stride 1, k = cin kh kw > TSQ__CONV_DIRECT_K, rows at least
 * TSQ__CONV_DIRECT_MIN_W wide, on CPUs with AVX-512 (conv_grad_avx512.c)
 * and, where its kernels beat the GEMMs (tsq__conv_grad_direct_runs), on
 * CPUs with AVX2 + FMA (conv_grad_avx2.c); elsewhere the GEMMs of
 * conv_f32.c. A small patch's backward is a tiny GEMM, which the BLAS
 * runs with its own small-matrix kernel (summing 16 lanes of k at a time
 * on SkylakeX): nothing to gain there, and its bits are the BLAS's.
 *
 * The GEMM path computes, per image, dcol = W^T dy then col2im, and
 * [dW db] += dy [col; 1]^T. Its bits on OpenBLAS's SkylakeX sgemm, which
 * this file reproduces (so that a net trained through the GEMM on such a
 * machine keeps its numbers):
 *
 *   dx[c][iy][ix] = +0 + t(0,0) + t(0,1) + ...   over the taps (ky, kx) in
 *                   order that reach an output (oy = iy + pad - ky, ox =
 *                   ix + pad - kx inside the output), where
 *   t(ky,kx)      = fma chain over co = 0 .. cout-1 from +0 of
 *                   W[co][c][ky][kx] * dy[co][oy][ox];
 *
 *   acc[t][co]   += one fma chain over the positions p of each depth block
 *                   (tsq__conv_depth_block: the GEMM cuts its depth of P =
 *                   oh ow positions into blocks of at most 448), from +0,
 *                   of dy[co][p] * col[t][p]; the blocks added in order.
 *                   Column t < k is patch tap (c, ky, kx); column k, when
 *                   the bias is learned, is all ones (db).
 *
 * The C versions here are the oracle (fmaf is exact by definition); the
 * AVX-512 and AVX2 kernels give the same bits (tests/test_kernels.c,
 * test_conv_grad), so on an AVX2 machine too these are SkylakeX's sums,
 * not those of the local BLAS. At the fmnist net's shapes the chains over
 * cout (32 or 64 terms) are one block, as are P = 196; P = 784 is cut at
 * 400. */
#include "kernels/conv.h"

#include <math.h>
#include <string.h>

/* Where the AVX2 kernels beat the GEMMs (OpenBLAS's Zen sgemm on a Zen 3,
 * one thread, weight and input gradients of 8-16 images together): up to
 * 128 output channels (1.15-1.6x at the fmnist net's shapes, 1.05-1.3x at
 * 128). At 256 and 448 the GEMMs ran up to 10% faster (1.3-1.6x with 8
 * input channels): dy and a tile's weights outgrow the L2 cache. Below 8
 * input channels the input gradient's vector of channels is partly empty,
 * while the GEMM's depth is cout: with 4 input channels and 32 or 64
 * outputs the GEMMs ran 1.1-1.5x faster, with 16 outputs or fewer (the
 * GEMM's rows few too) as fast or slower. */
static int avx2_wins(const tsq__conv_geom *g)
{
    return g->cout <= 128 && (g->cin >= 8 || g->cout <= 16);
}

int tsq__conv_grad_direct_runs(const tsq__conv_geom *g, uint32_t cpu)
{
    const uint32_t avx2 = TSQ_CPU_AVX2 | TSQ_CPU_FMA, avx512 = avx2 | TSQ_CPU_AVX512F;
    int kernels = (cpu & avx512) == avx512 || ((cpu & avx2) == avx2 && avx2_wins(g));
    return kernels && g->group == 1 && g->k > TSQ__CONV_DIRECT_K &&
           !(g->kh == 1 && g->kw == 1) &&
           g->stride == 1 && g->stride_w == 1 && g->pad == g->pad_w &&
           g->ow >= TSQ__CONV_DIRECT_MIN_W && g->cout <= TSQ__CONV_CHAIN_Q;
}

static int64_t round16(int64_t n)
{
    return (n + 15) / 16 * 16;
}

int64_t tsq__conv_grad_ld(const tsq__conv_geom *g)
{
    return round16(g->cout);
}

tsq__conv_grad_layout tsq__conv_grad_layout_of(const tsq__conv_geom *g)
{
    tsq__conv_grad_layout L;
    /* dW: the zero-padded image, a plane of ones (the bias's row), dy
     * position-major, a last tap block's rows */
    L.hp = g->h + 2 * g->pad;
    L.wp = g->w + 2 * g->pad_w;
    L.plane = L.hp * L.wp;
    L.ld = tsq__conv_grad_ld(g);
    L.xp = 0;
    L.ones = round16(L.xp + g->cin * L.plane + 32);
    L.dyt = round16(L.ones + L.plane);
    L.tmp = L.dyt + g->ohw * L.ld;
    L.dw_total = L.tmp + TSQ__CONV_GRAD_TAPS * L.ld;
    /* dx: dy zero-padded so that every tap of a tile of pixels reads
     * inside it; the weights' channels rounded up to 16 (one vector) */
    L.top = g->kh - 1 - g->pad;
    L.left = g->kw - 1 - g->pad_w;
    L.ohp = g->oh + 2 * L.top;
    L.owp = round16(g->w) + g->kw + 16;
    L.c16 = round16(g->cin);
    L.dyp = 0;
    L.dx_total = L.dyp + g->cout * L.ohp * L.owp;
    return L;
}

int64_t tsq__conv_grad_ws_floats(const tsq__conv_geom *g)
{
    tsq__conv_grad_layout L = tsq__conv_grad_layout_of(g);
    return (L.dw_total > L.dx_total ? L.dw_total : L.dx_total) + 16;
}

int64_t tsq__conv_depth_block(int64_t left)
{
    if (left >= 2 * TSQ__CONV_CHAIN_Q)
        return TSQ__CONV_CHAIN_Q;
    if (left > TSQ__CONV_CHAIN_Q)
        return (left / 2 + 15) / 16 * 16;
    return left;
}

/* Input value (c, iy, ix) of one image, 0.0f in the padding. */
static float at(const tsq__conv_geom *g, const float *x, int64_t c, int64_t iy, int64_t ix)
{
    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
        return 0.0f;
    return x[(c * g->h + iy) * g->w + ix];
}

/* Row t of the patch matrix (with the ones row at t = k) at position p. */
static float col(const tsq__conv_geom *g, const float *x, int64_t t, int64_t p)
{
    int64_t c = t / (g->kh * g->kw), ky = t / g->kw % g->kh, kx = t % g->kw;
    if (t == g->k)
        return 1.0f;
    return at(g, x, c, p / g->ow - g->pad + ky, p % g->ow - g->pad_w + kx);
}

void tsq__conv_grad_dw_ref(const tsq__conv_geom *g, const float *x, const float *dy,
                           int64_t cols, float *acc, float *scratch)
{
    int64_t P = g->ohw, ld = tsq__conv_grad_ld(g), co, t, p0, n, p;
    (void)scratch;
    for (co = 0; co < g->cout; co++)
        for (t = 0; t < cols; t++)
            for (p0 = 0; p0 < P; p0 += n) {
                float s = 0.0f;
                n = tsq__conv_depth_block(P - p0);
                for (p = p0; p < p0 + n; p++)
                    s = fmaf(dy[co * P + p], col(g, x, t, p), s);
                acc[t * ld + co] = acc[t * ld + co] + s;
            }
}

int64_t tsq__conv_grad_prep_floats(const tsq__conv_geom *g)
{
    /* the SIMD layouts: taps x cout x cin rounded up to 16, in tap-major
     * order on AVX-512, in groups of 16 channels on AVX2 (the oracle's
     * plain copy is smaller) */
    return g->kh * g->kw * g->cout * tsq__conv_grad_layout_of(g).c16;
}

void tsq__conv_grad_prep_ref(const tsq__conv_geom *g, const float *w, float *wp)
{
    memcpy(wp, w, (size_t)(g->cout * g->k) * sizeof(float));
}

void tsq__conv_grad_dx_ref(const tsq__conv_geom *g, const float *w, const float *dy, float *dx,
                           float *scratch)
{
    int64_t c, iy, ix, ky, kx, co, taps = g->kh * g->kw;
    (void)scratch;
    for (c = 0; c < g->cin; c++)
        for (iy = 0; iy < g->h; iy++)
            for (ix = 0; ix < g->w; ix++) {
                float acc = 0.0f;
                for (ky = 0; ky < g->kh; ky++)
                    for (kx = 0; kx < g->kw; kx++) {
                        int64_t oy = iy + g->pad - ky, ox = ix + g->pad_w - kx;
                        float t = 0.0f;
                        if (oy < 0 || oy >= g->oh || ox < 0 || ox >= g->ow)
                            continue;
                        for (co = 0; co < g->cout; co++)
                            t = fmaf(w[(co * g->cin + c) * taps + ky * g->kw + kx],
                                     dy[(co * g->oh + oy) * g->ow + ox], t);
                        acc = acc + t;
                    }
                dx[(c * g->h + iy) * g->w + ix] = acc;
            }
}

tsq__conv_grad_fns tsq__conv_grad_for(uint32_t cpu)
{
    tsq__conv_grad_fns f = {tsq__conv_grad_dw_ref, tsq__conv_grad_prep_ref,
                            tsq__conv_grad_dx_ref};
    const uint32_t avx2 = TSQ_CPU_AVX2 | TSQ_CPU_FMA, avx512 = avx2 | TSQ_CPU_AVX512F;
    if ((cpu & avx512) == avx512) {
        f.dw = tsq__conv_grad_dw_avx512;
        f.prep = tsq__conv_grad_prep_avx512;
        f.dx = tsq__conv_grad_dx_avx512;
    } else if ((cpu & avx2) == avx2) {
        f.dw = tsq__conv_grad_dw_avx2;
        f.prep = tsq__conv_grad_prep_avx2;
        f.dx = tsq__conv_grad_dx_avx2;
    }
    return f;
}
