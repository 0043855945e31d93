/* The direct convolution (conv_direct.c) on AVX2 + FMA, stride 1
 * (tsq__conv_direct_runs). The padded image's rows are read as one flat
 * sequence: output q = oy * wp + ox of a grid wp wide (the padded width)
 * reads tap t at xp[q + off[t]], so 8 consecutive q are one vector load
 * whatever the row, and the wp - ow outputs past each row are computed and
 * dropped (2 of 30 at the fmnist net's 28-wide rows, where 8-pixel vectors
 * per row dropped 4 of 32). A tile is 2 vectors (16 outputs) x 6 output
 * channels: 12 FMA chains, more than the 8 that two FMA units of latency 4
 * need, the two input vectors and a broadcast in the 16 registers (3
 * vectors x 4 channels left gcc one register short: it spilled three
 * chains, and ran at half the speed). Each output's chain is the C version's, in the
 * same order and cut at the same tap (tsq__conv_direct_split), so the bits
 * are the same. */
#include "kernels/conv.h"

#include <immintrin.h>

#define VECS 2 /* 8-output vectors per tile */
#define CH 6   /* output channels per tile */
#define INLINE static inline __attribute__((always_inline))

typedef struct {
    const tsq__conv_direct_op *op;
    const float *xp;    /* the padded image */
    const int32_t *off; /* the taps' offsets */
    int64_t wp;         /* the flat grid's width */
    int64_t last;       /* the last valid output's q */
    int64_t split;      /* the first chain's taps */
} job;

/* Taps t0 .. t1 - 1 into the NV x CH chains of the tile at q0, channel
 * c's weights at wk[c] (tap t at wk[c] + t * TSQ__CONV_PACK_W). */
INLINE void taps(const job *j, const float *const *wk, int64_t q0, int64_t t0, int64_t t1,
                 __m256 acc[VECS][CH], const int NV, const int NC)
{
    const float *base = j->xp + q0;
    __m256 r[VECS][CH]; /* a copy the compiler keeps in registers (acc lives in memory) */
    int64_t t;
    int v, c;
#pragma GCC unroll 2
    for (v = 0; v < VECS; v++)
#pragma GCC unroll 6
        for (c = 0; c < CH; c++)
            r[v][c] = acc[v][c];
    for (t = t0; t < t1; t++) {
        const float *p = base + j->off[t];
        __m256 in[VECS];
#pragma GCC unroll 2
        for (v = 0; v < NV; v++)
            in[v] = _mm256_loadu_ps(p + 8 * v);
#pragma GCC unroll 6
        for (c = 0; c < NC; c++) {
            __m256 b = _mm256_broadcast_ss(wk[c] + t * TSQ__CONV_PACK_W);
#pragma GCC unroll 2
            for (v = 0; v < NV; v++)
                r[v][c] = _mm256_fmadd_ps(b, in[v], r[v][c]);
        }
    }
#pragma GCC unroll 2
    for (v = 0; v < VECS; v++)
#pragma GCC unroll 6
        for (c = 0; c < CH; c++)
            acc[v][c] = r[v][c];
}

/* n <= 16 floats (a run of one tile's outputs) from src to dst: two
 * vectors of 8 or of 4, the second overlapping the first (rewriting the
 * same values), or up to 3 single floats. No loops: gcc turned the loops
 * this had into a memcpy call per run (1% of a training step), and masked
 * stores (vmaskmovps) are microcoded on AMD and halved the kernel's speed. */
INLINE void copy_run(float *dst, const float *src, int64_t n)
{
    if (n >= 8) {
        _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
        _mm256_storeu_ps(dst + n - 8, _mm256_loadu_ps(src + n - 8));
    } else if (n >= 4) {
        _mm_storeu_ps(dst, _mm_loadu_ps(src));
        _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
    } else {
        if (n > 0)
            dst[0] = src[0];
        if (n > 1)
            dst[1] = src[1];
        if (n > 2)
            dst[2] = src[2];
    }
}

/* The tile's results, ordered as the C version adds them, into y: each
 * channel's 8 NV outputs from q0 on, run by run within the output rows. */
INLINE void store(const job *j, __m256 acc[VECS][CH], __m256 first[VECS][CH], int cut,
                  float *y, int64_t co0, int64_t q0, const int NV, int nc)
{
    const tsq__conv_direct_op *op = j->op;
    const tsq__conv_geom *g = op->g;
    float out[VECS * 8];
    int v, c;
    for (c = 0; c < nc; c++) {
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
            if (ox < g->ow)
                copy_run(y + (co * g->oh + oy) * g->ow + ox, out + q,
                         g->ow - ox < run ? g->ow - ox : run);
            q += run;
        }
    }
}

INLINE void tile(const job *j, const float *const *wk, float *y, int64_t co0, int64_t nc,
                 int64_t q0, const int NV)
{
    const tsq__conv_geom *g = j->op->g;
    __m256 acc[VECS][CH], first[VECS][CH];
    int v, c;
    for (v = 0; v < VECS; v++)
        for (c = 0; c < CH; c++)
            acc[v][c] = first[v][c] = _mm256_setzero_ps();
    taps(j, wk, q0, 0, j->split, acc, NV, CH);
    if (j->split < g->k) { /* the second chain from +0 */
        for (v = 0; v < NV; v++)
            for (c = 0; c < CH; c++) {
                first[v][c] = acc[v][c];
                acc[v][c] = _mm256_setzero_ps();
            }
        taps(j, wk, q0, j->split, g->k, acc, NV, CH);
    }
    store(j, acc, first, j->split < g->k, y, co0, q0, NV, (int)nc);
}

void tsq__conv_direct_avx2(const tsq__conv_direct_op *op, const float *x, float *y,
                           float *scratch)
{
    const tsq__conv_geom *g = op->g;
    int64_t co0, c, q0, nvec;
    job j;
    j.op = op;
    j.xp = scratch;
    j.off = tsq__conv_direct_offsets(g, scratch);
    j.wp = g->w + 2 * g->pad_w;
    j.last = (g->oh - 1) * j.wp + g->ow - 1;
    j.split = tsq__conv_direct_split(g, op->bias && !op->scale);
    nvec = j.last / 8 + 1; /* vectors that start at or before the last output */
    tsq__conv_pad_image(g, x, scratch);
    for (co0 = 0; co0 < g->cout; co0 += CH) {
        /* each channel's lane in its block of 16 (tsq__conv_direct_pack); a
         * tile's channels may span two blocks, and past cout the last
         * channel is computed again and not stored (one tile shape: each
         * further one had cost seconds of every instrumented build) */
        const float *wk[CH];
        int64_t nc = g->cout - co0 < CH ? g->cout - co0 : CH;
        for (c = 0; c < CH; c++) {
            int64_t co = co0 + (c < nc ? c : nc - 1);
            wk[c] = op->packed + co / TSQ__CONV_PACK_W * TSQ__CONV_PACK_W * g->k +
                    co % TSQ__CONV_PACK_W;
        }
        for (q0 = 0; q0 < 8 * nvec; q0 += 8 * VECS) {
            if (nvec - q0 / 8 >= 2)
                tile(&j, wk, y, co0, nc, q0, 2);
            else
                tile(&j, wk, y, co0, nc, q0, 1);
        }
    }
}
