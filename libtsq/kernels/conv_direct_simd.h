/*
 * The body of the direct small-patch convolution's SIMD kernels
 * (conv_direct.c), written once for both vector widths: included by
 * conv_direct_avx2.c (8 lanes) and conv_direct_avx512.c (16 lanes) after
 * they define
 *
 *   CD_VEC, CD_LANES      the float vector type and its lanes
 *   CD_MASK, CD_MASK_OF(n)  a store mask for the first n lanes
 *   CD_ZERO(), CD_LOAD(p) zero, an unaligned load
 *   CD_FMA(wp, v, acc)    acc + (*wp broadcast) * v, fused
 *   CD_ADD1(r, s)         r + s broadcast
 *   CD_STORE(p, m, r)     the lanes of mask m of r to p
 *   CD_NAME               the kernel's name
 *
 * 16 (or 8) output pixels of a row per vector and 8 output channels at a
 * time, so that each input vector loaded serves 8 FMAs, from a zero-padded
 * copy of the image (every tap is one plain load). The FMA chain of every
 * output is the C version's, in the same order, so the bits are the same.
 */

#define CO_BLOCK 8

/* Output channels co0 .. co0 + nco - 1 (nco <= 8; the lanes of missing
 * channels repeat the last one and are not stored). wt: scratch for the
 * block's weights, tap-major (k x 8), so each FMA takes its weight as a
 * broadcast from one base. */
static void block(const tsq__conv_geom *g, const float *xp, const float *w, const float *bias,
                  float *y, int64_t co0, int64_t nco, float *wt)
{
    int64_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad_w, oy, x0, c, ky, kx, j, t;
    for (t = 0; t < g->k; t++)
        for (j = 0; j < CO_BLOCK; j++)
            wt[t * CO_BLOCK + j] = w[(co0 + (j < nco ? j : nco - 1)) * g->k + t];
    for (oy = 0; oy < g->oh; oy++)
        for (x0 = 0; x0 < g->ow; x0 += CD_LANES) {
            CD_MASK om = CD_MASK_OF(g->ow - x0 < CD_LANES ? g->ow - x0 : CD_LANES);
            CD_VEC a0 = CD_ZERO(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            const float *wk = wt;
            for (c = 0; c < g->cin; c++)
                for (ky = 0; ky < g->kh; ky++) {
                    const float *row = xp + (c * hp + oy + ky) * wp + x0;
                    for (kx = 0; kx < g->kw; kx++, wk += CO_BLOCK) {
                        CD_VEC v = CD_LOAD(row + kx);
                        a0 = CD_FMA(wk + 0, v, a0);
                        a1 = CD_FMA(wk + 1, v, a1);
                        a2 = CD_FMA(wk + 2, v, a2);
                        a3 = CD_FMA(wk + 3, v, a3);
                        a4 = CD_FMA(wk + 4, v, a4);
                        a5 = CD_FMA(wk + 5, v, a5);
                        a6 = CD_FMA(wk + 6, v, a6);
                        a7 = CD_FMA(wk + 7, v, a7);
                    }
                }
            {
                CD_VEC acc[CO_BLOCK] = {a0, a1, a2, a3, a4, a5, a6, a7};
                for (j = 0; j < nco; j++) {
                    CD_VEC r = bias ? CD_ADD1(acc[j], bias[co0 + j]) : acc[j];
                    CD_STORE(y + ((co0 + j) * g->oh + oy) * g->ow + x0, om, r);
                }
            }
        }
}

void CD_NAME(const tsq__conv_geom *g, const float *x, const float *w, const float *bias,
             float *y, float *scratch)
{
    int64_t co0;
    float *wt = scratch + tsq__conv_direct_ws_floats(g) - g->k * CO_BLOCK;
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += CO_BLOCK)
        block(g, scratch, w, bias, y, co0, g->cout - co0 < CO_BLOCK ? g->cout - co0 : CO_BLOCK,
              wt);
}
