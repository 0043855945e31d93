/* The float convolution computed directly, without the patch matrix: a
 * network's first layer (one or three input channels) and the 3 x 3
 * convolutions of small CNNs (k = cin kh kw up to a few hundred).
 *
 * The GEMM of conv_f32.c spends much of its time building, packing and
 * clearing matrices, not multiplying: at k = 9 to 28 most of it, at the
 * fmnist net's k = 288 and 576 a third (this path is 1.3-1.7x faster
 * there, docs/nn.md). Here each output is an FMA chain over its patch in
 * the patch matrix's (c, ky, kx) order, from +0, with the bias added last:
 *
 *     y = fl( fma(w[k-1], x[k-1], ... fma(w[0], x[0], +0) ...) + b )
 *
 * Padding cells enter as 0.0f, as im2col writes them. This is, bit for
 * bit, what a GEMM kernel that accumulates over k in one FMA register per
 * output computes with the bias as a last row of ones, and it is what
 * OpenBLAS's SkylakeX sgemm computes at these shapes as long as the k + 1
 * terms fit its depth block of 448. A longer patch is cut there as the
 * GEMM cuts it: a first chain over the first half of the terms rounded up
 * to 16, a second over the rest with the bias as its last term, the two
 * added (tsq__conv_direct_split). Measured: no output of 1.6 million
 * differs at k = 9 to 28, 288 and 576, so a net trained on such a machine
 * through the GEMM keeps its numbers. Every CPU takes this path for small
 * patches, so their result no longer depends on the BLAS; larger ones go
 * direct where a SIMD kernel runs them (AVX2 + FMA), the GEMM elsewhere.
 * The layers and the inference plan decide alike (tsq__conv_direct_runs),
 * and the plan, which fuses the small-patch case with the quantizer
 * (conv_front_avx512.c), still equals the net.
 *
 * This C version is the oracle: fmaf is exact by definition, so the SIMD
 * kernels (conv_direct_avx2.c, conv_direct_avx512.c) give the same bits.
 * On a CPU without an FMA unit fmaf is emulated, slowly, but exactly. */
#include "kernels/conv.h"

#include <math.h>
#include <string.h>

static int simd(uint32_t cpu)
{
    return (cpu & (TSQ_CPU_AVX2 | TSQ_CPU_FMA)) == (TSQ_CPU_AVX2 | TSQ_CPU_FMA);
}

int tsq__conv_direct_runs(const tsq__conv_geom *g, uint32_t cpu)
{
    int small = g->k <= TSQ__CONV_DIRECT_K;
    int two_chains = g->k + 1 < 2 * TSQ__CONV_CHAIN_Q && g->ow >= TSQ__CONV_DIRECT_MIN_W &&
                     simd(cpu);
    return !(g->kh == 1 && g->kw == 1) && (small || two_chains) && g->stride == 1 &&
           g->stride_w == 1 && g->pad == g->pad_w;
}

int64_t tsq__conv_direct_split(const tsq__conv_geom *g, int has_bias)
{
    int64_t terms = g->k + (has_bias ? 1 : 0); /* a scaled layer's bias is not a term */
    return terms <= TSQ__CONV_CHAIN_Q ? g->k : tsq__conv_depth_block(terms);
}
/* The padded image (rows of w + 2 pad floats), 32 zeros after it (a row's
 * last vector reads up to 15 floats past the row), then the taps'
 * offsets. */
static int64_t image_floats(const tsq__conv_geom *g)
{
    return g->cin * (g->h + 2 * g->pad) * (g->w + 2 * g->pad_w) + 32;
}

int64_t tsq__conv_direct_ws_floats(const tsq__conv_geom *g)
{
    return (image_floats(g) + g->k + 15) / 16 * 16;
}

/* Tap t = (c, ky, kx) of the patch starts at off[t] in the padded image,
 * counted from the window's top-left corner. */
int32_t *tsq__conv_direct_offsets(const tsq__conv_geom *g, float *scratch)
{
    int64_t wp = g->w + 2 * g->pad_w, hp = g->h + 2 * g->pad, c, ky, kx, t = 0;
    int32_t *off = (int32_t *)(scratch + image_floats(g));
    for (c = 0; c < g->cin; c++)
        for (ky = 0; ky < g->kh; ky++)
            for (kx = 0; kx < g->kw; kx++)
                off[t++] = (int32_t)((c * hp + ky) * wp + kx);
    return off;
}

int64_t tsq__conv_direct_pack_floats(const tsq__conv_geom *g)
{
    return (g->cout + TSQ__CONV_PACK_W - 1) / TSQ__CONV_PACK_W * TSQ__CONV_PACK_W * g->k;
}

void tsq__conv_direct_pack(const tsq__conv_geom *g, const float *w, float *packed)
{
    enum { W = TSQ__CONV_PACK_W };
    int64_t co0, t, j;
    for (co0 = 0; co0 < g->cout; co0 += W) {
        int64_t last = (g->cout - co0 < W ? g->cout - co0 : W) - 1;
        float *blk = packed + co0 * g->k;
        for (t = 0; t < g->k; t++)
            for (j = 0; j < W; j++)
                blk[t * W + j] = w[(co0 + (j < last ? j : last)) * g->k + t];
    }
}

/* Only the border is cleared: clearing the whole copy first doubled the
 * bytes written, and a library call per row of a few dozen floats cost
 * more than the copy (together about a tenth of a 28 x 28 convolution);
 * TSQ__NO_LIBCALLS keeps gcc from making those calls again. */
TSQ__NO_LIBCALLS void tsq__pad_planes(const float *x, int64_t planes, int64_t h, int64_t w, int64_t top,
                     int64_t left, int64_t hp, int64_t wp, float *xp)
{
    int64_t right = wp - left - w, c, iy, i;
    for (c = 0; c < planes; c++) {
        float *plane = xp + c * hp * wp;
        const float *src = x + c * h * w;
        for (i = 0; i < top * wp; i++)
            plane[i] = 0.0f;
        for (i = (top + h) * wp; i < hp * wp; i++)
            plane[i] = 0.0f;
        for (iy = 0; iy < h; iy++) {
            float *row = plane + (iy + top) * wp;
            const float *in = src + iy * w;
            for (i = 0; i < left; i++)
                row[i] = 0.0f;
            for (i = 0; i < w; i++)
                row[left + i] = in[i];
            for (i = 0; i < right; i++)
                row[left + w + i] = 0.0f;
        }
    }
}

void tsq__conv_pad_image(const tsq__conv_geom *g, const float *x, float *xp)
{
    int64_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad_w, i;
    tsq__pad_planes(x, g->cin, g->h, g->w, g->pad, g->pad_w, hp, wp, xp);
    for (i = 0; i < 32; i++)
        xp[g->cin * hp * wp + i] = 0.0f;
}

/* Input value (c, iy, ix) of one image, 0.0f in the padding. */
static float at(const tsq__conv_geom *g, const float *x, int64_t c, int64_t iy, int64_t ix)
{
    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
        return 0.0f;
    return x[(c * g->h + iy) * g->w + ix];
}

void tsq__conv_direct_ref(const tsq__conv_direct_op *op, const float *x, float *y,
                          float *scratch)
{
    const tsq__conv_geom *g = op->g;
    const float *bias = op->bias, *scale = op->scale;
    int64_t split = tsq__conv_direct_split(g, bias && !scale), co, oy, ox, c, ky, kx;
    (void)scratch;
    for (co = 0; co < g->cout; co++)
        for (oy = 0; oy < g->oh; oy++)
            for (ox = 0; ox < g->ow; ox++) {
                const float *wc = op->w + co * g->k;
                float acc = 0.0f, first = 0.0f;
                int64_t t = 0;
                for (c = 0; c < g->cin; c++)
                    for (ky = 0; ky < g->kh; ky++)
                        for (kx = 0; kx < g->kw; kx++, t++) {
                            if (t == split) { /* the second chain starts from +0 */
                                first = acc;
                                acc = 0.0f;
                            }
                            acc = fmaf(*wc++, at(g, x, c, oy - g->pad + ky, ox - g->pad_w + kx),
                                       acc);
                        }
                if (bias && !scale)
                    acc = acc + bias[co];
                if (split < g->k)
                    acc = first + acc;
                if (scale)
                    acc = scale[co] * acc + (bias ? bias[co] : 0.0f);
                y[(co * g->oh + oy) * g->ow + ox] = acc;
            }
}

/* On AVX2 both layouts waste FMA slots: pixels in the lanes compute the
 * padded grid's columns past each row in 16-output tiles and round the
 * channels up to 6; channels in the lanes round them up to 16 and the
 * plane's pixels up to 6. The one that computes fewer runs. At the fmnist
 * net's 32- and 64-channel layers that is channels in the lanes: 1.24-1.3x
 * faster at k = 288 and 576 on Zen 3, and 1.3x even for the first layer's
 * 9 taps, whose transposes outweighed the taps on AVX-512 (docs/nn.md). */
static int channel_lanes_avx2(const tsq__conv_geom *g)
{
    int64_t wp = g->w + 2 * g->pad_w;
    int64_t ch = (g->cout + 15) / 16 * 16 * ((g->ohw + 5) / 6 * 6);
    int64_t px = (g->cout + 5) / 6 * 6 * (((g->oh - 1) * wp + g->ow + 15) / 16 * 16);
    return ch <= px;
}

/* On AVX-512, channels in the lanes fill every lane of 32- and 64-channel
 * layers, but their epilogue transposes each tile: at k = 9 that took
 * longer than the taps (the first layer ran at 0.75x the pixel-lane
 * kernel), from k = 288 the taps dominate and it ran 1.03-1.11x. */
tsq__conv_direct_fn tsq__conv_direct_for(uint32_t cpu, const tsq__conv_geom *g)
{
    if (simd(cpu) && (cpu & TSQ_CPU_AVX512F))
        return g->k > TSQ__CONV_DIRECT_K ? tsq__conv_direct_ch_avx512 : tsq__conv_direct_avx512;
    if (simd(cpu))
        return channel_lanes_avx2(g) ? tsq__conv_direct_ch_avx2 : tsq__conv_direct_avx2;
    return tsq__conv_direct_ref;
}
