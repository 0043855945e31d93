/* The direct convolution (conv_direct.c) on AVX2 + FMA, stride 1
 * (tsq__conv_direct_runs). The padded image's rows are read as one flat
 * sequence: output q = oy * wp + ox of a grid wp wide (the padded width)
 * reads tap t at xp[q + off[t]], so 8 consecutive q are one vector load
 * whatever the row, and the wp - ow outputs past each row are computed and
 * dropped (2 of 30 at the fmnist net's 28-wide rows, where 8-pixel vectors
 * per row dropped 4 of 32). A tile is 3 vectors (24 outputs) x 4 output
 * channels: 12 FMA chains, more than the 8 that two FMA units of latency 4
 * need, within the 16 registers with a broadcast (the loads go into the
 * FMAs as memory operands). Each output's chain is the C version's, in the
 * same order and cut at the same tap (tsq__conv_direct_split), so the bits
 * are the same. */
#include "kernels/conv.h"

#include <immintrin.h>
#include <string.h>

#define VECS 3 /* 8-output vectors per tile */
#define CH 4   /* output channels per tile */
#define INLINE static inline __attribute__((always_inline))

typedef struct {
    const tsq__conv_direct_op *op;
    const float *xp;    /* the padded image */
    const int32_t *off; /* the taps' offsets */
    int64_t wp;         /* the flat grid's width */
    int64_t last;       /* the last valid output's q */
    int64_t split;      /* the first chain's taps */
} job;

/* Taps t0 .. t1 - 1 into the NV x CH chains of the tile at q0, channels'
 * weights wk (tap t at wk + t * TSQ__CONV_PACK_W). */
INLINE void taps(const job *j, const float *wk, int64_t q0, int64_t t0, int64_t t1,
                 __m256 acc[VECS][CH], const int NV, const int NC)
{
    const float *base = j->xp + q0;
    __m256 r[VECS][CH]; /* a copy the compiler keeps in registers (acc lives in memory) */
    int64_t t;
    int v, c;
#pragma GCC unroll 3
    for (v = 0; v < VECS; v++)
#pragma GCC unroll 4
        for (c = 0; c < CH; c++)
            r[v][c] = acc[v][c];
    for (t = t0; t < t1; t++) {
        const float *p = base + j->off[t], *w = wk + t * TSQ__CONV_PACK_W;
#pragma GCC unroll 4
        for (c = 0; c < NC; c++) {
            __m256 b = _mm256_broadcast_ss(w + c);
#pragma GCC unroll 3
            for (v = 0; v < NV; v++)
                r[v][c] = _mm256_fmadd_ps(b, _mm256_loadu_ps(p + 8 * v), r[v][c]);
        }
    }
#pragma GCC unroll 3
    for (v = 0; v < VECS; v++)
#pragma GCC unroll 4
        for (c = 0; c < CH; c++)
            acc[v][c] = r[v][c];
}

/* The tile's results, ordered as the C version adds them, into y: each
 * channel's 8 NV outputs from q0 on, run by run within the output rows. */
INLINE void store(const job *j, __m256 acc[VECS][CH], __m256 first[VECS][CH], int cut,
                  float *y, int64_t co0, int64_t q0, const int NV, const int NC)
{
    const tsq__conv_direct_op *op = j->op;
    const tsq__conv_geom *g = op->g;
    float out[VECS * 8];
    int v, c;
    for (c = 0; c < NC; c++) {
        int64_t co = co0 + c, q, n = 8 * NV;
        for (v = 0; v < NV; v++) {
            __m256 r = acc[v][c];
            if (op->bias && !op->scale)
                r = _mm256_add_ps(r, _mm256_set1_ps(op->bias[co]));
            if (cut)
                r = _mm256_add_ps(first[v][c], r);
            if (op->scale)
                r = _mm256_add_ps(_mm256_mul_ps(r, _mm256_set1_ps(op->scale[co])),
                                  _mm256_set1_ps(op->bias ? op->bias[co] : 0.0f));
            _mm256_storeu_ps(out + 8 * v, r);
        }
        for (q = 0; q < n && q0 + q <= j->last;) {
            int64_t oy = (q0 + q) / j->wp, ox = (q0 + q) % j->wp;
            int64_t run = j->wp - ox < n - q ? j->wp - ox : n - q;
            if (ox < g->ow) {
                int64_t keep = g->ow - ox < run ? g->ow - ox : run;
                memcpy(y + (co * g->oh + oy) * g->ow + ox, out + q, (size_t)keep * sizeof(float));
            }
            q += run;
        }
    }
}

INLINE void tile(const job *j, const float *wk, float *y, int64_t co0, int64_t q0,
                 const int NV, const int NC)
{
    const tsq__conv_geom *g = j->op->g;
    __m256 acc[VECS][CH], first[VECS][CH];
    int v, c;
    for (v = 0; v < VECS; v++)
        for (c = 0; c < CH; c++)
            acc[v][c] = first[v][c] = _mm256_setzero_ps();
    taps(j, wk, q0, 0, j->split, acc, NV, NC);
    if (j->split < g->k) { /* the second chain from +0 */
        for (v = 0; v < NV; v++)
            for (c = 0; c < NC; c++) {
                first[v][c] = acc[v][c];
                acc[v][c] = _mm256_setzero_ps();
            }
        taps(j, wk, q0, j->split, g->k, acc, NV, NC);
    }
    store(j, acc, first, j->split < g->k, y, co0, q0, NV, NC);
}

/* Every tile of channels co0 .. co0 + NC - 1. */
INLINE void channels(const job *j, const float *wk, float *y, int64_t co0, const int NC)
{
    int64_t q0, nvec = j->last / 8 + 1; /* vectors that start at or before the last output */
    for (q0 = 0; q0 < 8 * nvec; q0 += 8 * VECS) {
        int64_t left = nvec - q0 / 8;
        if (left >= 3)
            tile(j, wk, y, co0, q0, 3, NC);
        else if (left == 2)
            tile(j, wk, y, co0, q0, 2, NC);
        else
            tile(j, wk, y, co0, q0, 1, NC);
    }
}

void tsq__conv_direct_avx2(const tsq__conv_direct_op *op, const float *x, float *y,
                           float *scratch)
{
    const tsq__conv_geom *g = op->g;
    int64_t co0;
    job j;
    j.op = op;
    j.xp = scratch;
    j.off = tsq__conv_direct_offsets(g, scratch);
    j.wp = g->w + 2 * g->pad_w;
    j.last = (g->oh - 1) * j.wp + g->ow - 1;
    j.split = tsq__conv_direct_split(g, op->bias && !op->scale);
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += CH) {
        /* the 4 channels' lanes in their block of 16 (tsq__conv_direct_pack) */
        const float *wk = op->packed + co0 / TSQ__CONV_PACK_W * TSQ__CONV_PACK_W * g->k +
                          co0 % TSQ__CONV_PACK_W;
        int64_t nc = g->cout - co0 < CH ? g->cout - co0 : CH;
        if (nc == 4)
            channels(&j, wk, y, co0, 4);
        else if (nc == 3)
            channels(&j, wk, y, co0, 3);
        else if (nc == 2)
            channels(&j, wk, y, co0, 2);
        else
            channels(&j, wk, y, co0, 1);
    }
}
