/*
 * The body of the direct convolution's pixel-lane AVX-512 kernel
 * (conv_direct.c), written over a vector abstraction: included by
 * conv_direct_avx512.c (16 lanes, small patches: conv_direct_ch_avx512.c
 * takes the larger ones) after it defines the macros below. The AVX2
 * kernel, with half the registers' width and count, walks the image's
 * rows as one flat sequence instead (conv_direct_avx2.c).
 *
 *   CD_VEC, CD_LANES      the float vector type and its lanes
 *   CD_MASK, CD_MASK_OF(n)  a store mask for the first n lanes
 *   CD_ZERO(), CD_LOAD(p) zero, an unaligned load
 *   CD_FMA(wp, v, acc)    acc + (*wp broadcast) * v, fused
 *   CD_ADD1(r, s)         r + s broadcast
 *   CD_MUL1(r, s)         r * s broadcast
 *   CD_ADD(a, b)          a + b
 *   CD_STORE(p, m, r)     the lanes of mask m of r to p
 *   CD_ROWS               output rows per tile (1 or 2: registers permitting)
 *   CD_NAME               the kernel's name
 *
 * 16 output pixels of a row per vector and 8 output channels at a
 * time, so that each input vector loaded serves 8 FMAs, and two rows at a
 * time, so that each weight broadcast serves 2, from a zero-padded
 * copy of the image (every tap is one plain load). The FMA chains of every
 * output are the C version's, in the same order and cut at the same tap
 * (tsq__conv_direct_split), so the bits are the same.
 */

#define CO_BLOCK 8

/* The 8 chains of one row's vector take tap v (weights at wk). */
#define CD_TAP8(A, v, wk)                                                                      \
    do {                                                                                       \
        A##0 = CD_FMA((wk) + 0, v, A##0);                                                      \
        A##1 = CD_FMA((wk) + 1, v, A##1);                                                      \
        A##2 = CD_FMA((wk) + 2, v, A##2);                                                      \
        A##3 = CD_FMA((wk) + 3, v, A##3);                                                      \
        A##4 = CD_FMA((wk) + 4, v, A##4);                                                      \
        A##5 = CD_FMA((wk) + 5, v, A##5);                                                      \
        A##6 = CD_FMA((wk) + 6, v, A##6);                                                      \
        A##7 = CD_FMA((wk) + 7, v, A##7);                                                      \
    } while (0)
#define CD_ZERO8(A) (A##0 = A##1 = A##2 = A##3 = A##4 = A##5 = A##6 = A##7 = CD_ZERO())
/* At the split tap the chains so far are kept in F and restart from +0. */
#define CD_CUT8(F, A)                                                                          \
    do {                                                                                       \
        F[0] = A##0, F[1] = A##1, F[2] = A##2, F[3] = A##3;                                    \
        F[4] = A##4, F[5] = A##5, F[6] = A##6, F[7] = A##7;                                    \
        CD_ZERO8(A);                                                                           \
    } while (0)

/* The tile's results: chain + bias (no scale) or scale * chain + bias,
 * plus the first chain when cut, as the C version orders them. */
static void store8(const tsq__conv_direct_op *op, const CD_VEC *acc, const CD_VEC *first,
                   int cut, float *y, int64_t co0, int64_t nco, int64_t oy, int64_t x0)
{
    const tsq__conv_geom *g = op->g;
    CD_MASK om = CD_MASK_OF(g->ow - x0 < CD_LANES ? g->ow - x0 : CD_LANES);
    int64_t j;
    for (j = 0; j < nco; j++) {
        CD_VEC r = op->bias && !op->scale ? CD_ADD1(acc[j], op->bias[co0 + j]) : acc[j];
        if (cut)
            r = CD_ADD(first[j], r);
        if (op->scale)
            r = CD_ADD1(CD_MUL1(r, op->scale[co0 + j]), op->bias ? op->bias[co0 + j] : 0.0f);
        CD_STORE(y + ((co0 + j) * g->oh + oy) * g->ow + x0, om, r);
    }
}

/* Taps t0 .. t1 - 1 into the chains of row oy (a) and, with two rows, oy + 1
 * (b). A tap is one load at its offset in the padded image (off, from
 * tsq__conv_direct_offsets), so the loop is flat whatever the window. */
#define CD_TAPS(t0, t1, ROWS)                                                                  \
    for (t = (t0); t < (t1); t++) {                                                            \
        const float *p = base + off[t], *wk = wt + t * TSQ__CONV_PACK_W;                             \
        CD_VEC v = CD_LOAD(p);                                                                 \
        CD_TAP8(a, v, wk);                                                                     \
        if ((ROWS) == 2) {                                                                     \
            v = CD_LOAD(p + wp);                                                               \
            CD_TAP8(b, v, wk);                                                                 \
        }                                                                                      \
    }

/* Output rows oy and oy + 1 (rows = 2) or oy alone, pixels x0 .. x0 +
 * CD_LANES - 1, channels co0 .. co0 + nco - 1 (weights wt, their packed
 * block): each weight broadcast serves both rows. The first chain runs to
 * the split tap, the second on. */
static void tile(const tsq__conv_direct_op *op, const float *xp, const int32_t *off,
                 const float *wt, float *y, int64_t co0, int64_t nco, int64_t oy, int64_t x0,
                 int rows, int64_t split)
{
    const tsq__conv_geom *g = op->g;
    int64_t wp = g->w + 2 * g->pad_w, t;
    const float *base = xp + oy * wp + x0;
    CD_VEC a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7;
    CD_VEC fa[CO_BLOCK], fb[CO_BLOCK];
    CD_ZERO8(a);
    CD_ZERO8(b);
    if (rows == 2) {
        CD_TAPS(0, split, 2);
    } else {
        CD_TAPS(0, split, 1);
    }
    if (split < g->k) {
        CD_CUT8(fa, a);
        CD_CUT8(fb, b);
        if (rows == 2) {
            CD_TAPS(split, g->k, 2);
        } else {
            CD_TAPS(split, g->k, 1);
        }
    }
    {
        CD_VEC ra[CO_BLOCK] = {a0, a1, a2, a3, a4, a5, a6, a7};
        CD_VEC rb[CO_BLOCK] = {b0, b1, b2, b3, b4, b5, b6, b7};
        store8(op, ra, fa, split < g->k, y, co0, nco, oy, x0);
        if (rows == 2)
            store8(op, rb, fb, split < g->k, y, co0, nco, oy + 1, x0);
    }
}

void CD_NAME(const tsq__conv_direct_op *op, const float *x, float *y, float *scratch)
{
    const tsq__conv_geom *g = op->g;
    int64_t co0, oy, x0, split = tsq__conv_direct_split(g, op->bias && !op->scale);
    int32_t *off = tsq__conv_direct_offsets(g, scratch);
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += CO_BLOCK) {
        int64_t nco = g->cout - co0 < CO_BLOCK ? g->cout - co0 : CO_BLOCK;
        /* the 8 channels' lanes in their block of 16 (tsq__conv_direct_pack) */
        const float *wt = op->packed + co0 / TSQ__CONV_PACK_W * TSQ__CONV_PACK_W * g->k +
                          co0 % TSQ__CONV_PACK_W;
        for (oy = 0; oy < g->oh; oy += CD_ROWS) {
            int rows = g->oh - oy < CD_ROWS ? (int)(g->oh - oy) : CD_ROWS;
            for (x0 = 0; x0 < g->ow; x0 += CD_LANES) {
                if (rows == 2)
                    tile(op, scratch, off, wt, y, co0, nco, oy, x0, 2, split);
                else
                    tile(op, scratch, off, wt, y, co0, nco, oy, x0, 1, split);
            }
        }
    }
}
