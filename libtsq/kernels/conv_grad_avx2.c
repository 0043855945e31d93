/* The direct backward of conv_grad.c on AVX2 + FMA: the same chains as the
 * C oracle, in the same order, so the same bits. Compiled with -mavx2
 * -mfma; called only when the CPU has them (tsq__conv_grad_direct_runs).
 *
 * 16 ymm registers and two FMA pipes of latency 4 want at least 8
 * independent chains; both kernels run 12, with few loads per FMA:
 * dW: 8 output channels per vector (dy transposed to position-major), 6
 * patch taps and two vectors of channels at a time: per position, 2 loads
 * of dy and 6 broadcasts of input values serve 12 FMAs.
 * dx: 8 input channels per vector, 6 input pixels (in plane order, a tile
 * may cross a row) and two vectors of channels at a time: per output
 * channel, 2 weight loads and 6 broadcasts of (zero-padded) dy serve 12
 * FMAs; 8 x 8 transposes put the pixels back in rows at the end. With 8
 * channels or fewer left, a tile takes two taps at once instead of two
 * vectors. Pixels in the lanes (a broadcast weight per channel) need no
 * transpose, but at the fmnist net's shapes a fifth of their FMAs were
 * idle lanes (rows of 14 and 28 in 8-pixel vectors; 32 channels in tiles
 * of 6): these tiles ran 1.15-1.3x faster.
 * Scratch and sizes are conv_grad.c's (tsq__conv_grad_layout_of): dy
 * transposed takes the same P x ld floats as the AVX-512 kernel's, the
 * weights the same taps x cout x c16, in other orders. */
#include "kernels/conv.h"

#include "kernels/transpose_avx2.h"

#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* ---- dW ---- */

#define DW_TAPS 6 /* taps per block: 6 x 2 vectors of channels = 12 chains */
_Static_assert(DW_TAPS <= TSQ__CONV_GRAD_TAPS, "a last block's rows must fit the scratch's tmp");

typedef struct {
    const tsq__conv_geom *g;
    const float *dyt; /* position-major dy, blocks of 16 channels */
    int64_t ld, wp;
    const float *base[DW_TAPS]; /* tap j's input at position (0, 0) */
} dw_job;

/* Tap k's chains take the input value at x##k[i] times the two dy vectors. */
#define DW_TAP(k)                                                                              \
    do {                                                                                       \
        __m256 xv = _mm256_broadcast_ss(x##k + i);                                             \
        lo##k = _mm256_fmadd_ps(xv, d0, lo##k);                                                \
        hi##k = _mm256_fmadd_ps(xv, d1, hi##k);                                                \
    } while (0)

/* rows[t] (16 channels from co0) += the chain over positions [p0, p0 + n)
 * of tap t, from +0, for the DW_TAPS taps. The positions go by output row,
 * so that each tap's input is read straight along its padded row. */
INLINE void dw_block(const dw_job *j, int64_t co0, int64_t p0, int64_t n, float *rows)
{
    __m256 lo0, lo1, lo2, lo3, lo4, lo5, hi0, hi1, hi2, hi3, hi4, hi5;
    int64_t ow = j->g->ow, ox = p0 % ow, off = p0 / ow * j->wp + ox, skip = j->wp - ow, t;
    const float *d = j->dyt + co0 * j->g->ohw + p0 * 16;
    const float *x0 = j->base[0] + off, *x1 = j->base[1] + off, *x2 = j->base[2] + off;
    const float *x3 = j->base[3] + off, *x4 = j->base[4] + off, *x5 = j->base[5] + off;
    lo0 = lo1 = lo2 = lo3 = lo4 = lo5 = _mm256_setzero_ps();
    hi0 = hi1 = hi2 = hi3 = hi4 = hi5 = lo0;
    while (n > 0) {
        int64_t seg = ow - ox < n ? ow - ox : n, i;
        for (i = 0; i < seg; i++, d += 16) {
            __m256 d0 = _mm256_loadu_ps(d), d1 = _mm256_loadu_ps(d + 8);
            DW_TAP(0);
            DW_TAP(1);
            DW_TAP(2);
            DW_TAP(3);
            DW_TAP(4);
            DW_TAP(5);
        }
        /* on to the next output row: past the padding columns */
        x0 += seg + skip, x1 += seg + skip, x2 += seg + skip;
        x3 += seg + skip, x4 += seg + skip, x5 += seg + skip;
        n -= seg;
        ox = 0;
    }
    {
        __m256 rl[DW_TAPS] = {lo0, lo1, lo2, lo3, lo4, lo5};
        __m256 rh[DW_TAPS] = {hi0, hi1, hi2, hi3, hi4, hi5};
        for (t = 0; t < DW_TAPS; t++) {
            float *row = rows + t * j->ld + co0;
            _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), rl[t]));
            _mm256_storeu_ps(row + 8, _mm256_add_ps(_mm256_loadu_ps(row + 8), rh[t]));
        }
    }
}

/* dyt from dy (cout x P): position-major in blocks of 16 channels (block
 * b holds P x 16 floats, channels past cout zero), so that a block's
 * chains read one contiguous stream; 8 x 8 transposes, not one strided
 * load per value. */
static void transpose_dy(const tsq__conv_geom *g, const float *dy, int64_t ld, float *dyt)
{
    int64_t P = g->ohw, p, co, i;
    for (p = 0; p + 8 <= P; p += 8)
        for (co = 0; co < ld; co += 8) {
            __m256 r[8];
            for (i = 0; i < 8; i++)
                r[i] = co + i < g->cout ? _mm256_loadu_ps(dy + (co + i) * P + p)
                                        : _mm256_setzero_ps();
            tsq__transpose8_ps_avx2(r);
            for (i = 0; i < 8; i++)
                _mm256_storeu_ps(dyt + co / 16 * 16 * P + (p + i) * 16 + co % 16, r[i]);
        }
    for (; p < P; p++)
        for (co = 0; co < ld; co++)
            dyt[co / 16 * 16 * P + p * 16 + co % 16] = co < g->cout ? dy[co * P + p] : 0.0f;
}

/* The input rows of taps t0 .. t0 + DW_TAPS - 1 (past cols: tap t0 again,
 * whose sums then go to rows nobody reads), stepping (c, ky, kx) rather
 * than dividing per tap: a block of few positions is short. */
static void dw_bases(const tsq__conv_geom *g, const tsq__conv_grad_layout *L, const float *xp,
                     const float *ones, int64_t t0, int64_t nt, dw_job *j)
{
    int64_t taps = g->kh * g->kw, c = t0 / taps, ky = t0 % taps / g->kw, kx = t0 % g->kw, t;
    for (t = 0; t < nt; t++) {
        j->base[t] = t0 + t == g->k ? ones : xp + (c * L->hp + ky) * L->wp + kx;
        if (++kx == g->kw) {
            kx = 0;
            if (++ky == g->kh) {
                ky = 0;
                c++;
            }
        }
    }
    for (; t < DW_TAPS; t++)
        j->base[t] = j->base[0];
}

void tsq__conv_grad_dw_avx2(const tsq__conv_geom *g, const float *x, const float *dy,
                            int64_t cols, float *acc, float *scratch)
{
    tsq__conv_grad_layout L = tsq__conv_grad_layout_of(g);
    int64_t P = g->ohw, co0, t0, t, p, p0, n;
    float *xp = scratch + L.xp, *ones = scratch + L.ones, *dyt = scratch + L.dyt;
    float *tmp = scratch + L.tmp; /* a last block's rows: room for TSQ__CONV_GRAD_TAPS */
    dw_job j;
    tsq__conv_pad_image(g, x, xp);
    for (p = 0; p < L.plane; p++)
        ones[p] = 1.0f; /* the bias's row of the patch matrix */
    transpose_dy(g, dy, L.ld, dyt);
    j.g = g;
    j.dyt = dyt;
    j.ld = L.ld;
    j.wp = L.wp;
    for (co0 = 0; co0 < L.ld; co0 += 16) /* ld is a multiple of 16 */
        for (t0 = 0; t0 < cols; t0 += DW_TAPS) {
            int64_t nt = cols - t0 < DW_TAPS ? cols - t0 : DW_TAPS;
            float *rows = nt == DW_TAPS ? acc + t0 * L.ld : tmp;
            dw_bases(g, &L, xp, ones, t0, nt, &j);
            if (rows == tmp) {
                memset(tmp, 0, (size_t)(DW_TAPS * L.ld) * sizeof(float));
                for (t = 0; t < nt; t++)
                    memcpy(tmp + t * L.ld, acc + (t0 + t) * L.ld, (size_t)L.ld * sizeof(float));
            }
            for (p0 = 0; p0 < P; p0 += n) {
                n = tsq__conv_depth_block(P - p0);
                dw_block(&j, co0, p0, n, rows);
            }
            if (rows == tmp)
                for (t = 0; t < nt; t++)
                    memcpy(acc + (t0 + t) * L.ld, tmp + t * L.ld, (size_t)L.ld * sizeof(float));
        }
}

/* ---- dx ---- */

enum {
    DX_NP = 6, /* input pixels per tile, in plane order (one broadcast each) */
    DX_NV = 2  /* vectors of 8 input channels per tile (one load each) */
};

void tsq__conv_grad_prep_avx2(const tsq__conv_geom *g, const float *w, float *wp)
{
    int64_t taps = g->kh * g->kw, c16 = tsq__conv_grad_layout_of(g).c16, c0, tap, co, i;
    /* c16 / 16 groups of taps x cout x 16 channels: a tile's weights in
     * one stream, written in order */
    for (c0 = 0; c0 < c16; c0 += 16)
        for (tap = 0; tap < taps; tap++)
            for (co = 0; co < g->cout; co++, wp += 16)
                for (i = 0; i < 16; i++)
                    wp[i] = c0 + i < g->cin ? w[(co * g->cin + c0 + i) * taps + tap] : 0.0f;
}

/* Pixel k's chains take its dy value at src[o##k] times the weight vectors. */
#define DX_PX(k)                                                                               \
    do {                                                                                       \
        __m256 dv = _mm256_broadcast_ss(src + o##k);                                           \
        t##k##0 = _mm256_fmadd_ps(w0, dv, t##k##0);                                            \
        if (nv == 2)                                                                           \
            t##k##1 = _mm256_fmadd_ps(w1, dv, t##k##1);                                        \
    } while (0)

/* acc[DX_NV k + v] += one tap's chain over the output channels, from +0,
 * for pixel k (dy at src + o[k], the next output channel chan floats on)
 * and channel vector v < nv (weights at w, 16 per output channel). */
INLINE void dx_tap(const float *src, const int64_t *o, int64_t chan, const float *w,
                   int64_t cout, __m256 *acc, const int nv)
{
    __m256 t00, t01, t10, t11, t20, t21, t30, t31, t40, t41, t50, t51;
    int64_t co, o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3], o4 = o[4], o5 = o[5];
    t00 = t01 = t10 = t11 = t20 = t21 = _mm256_setzero_ps();
    t30 = t31 = t40 = t41 = t50 = t51 = t00;
    for (co = 0; co < cout; co++, src += chan, w += 16) {
        __m256 w0 = _mm256_loadu_ps(w), w1 = nv == 2 ? _mm256_loadu_ps(w + 8) : w0;
        DX_PX(0);
        DX_PX(1);
        DX_PX(2);
        DX_PX(3);
        DX_PX(4);
        DX_PX(5);
    }
    {
        /* acc = acc + t, the oracle's order; acc lives in memory (the
         * chains take the registers), one add per vector per tap */
        __m256 t[DX_NP * DX_NV] = {t00, t01, t10, t11, t20, t21, t30, t31, t40, t41, t50, t51};
        int i;
        for (i = 0; i < DX_NP * DX_NV; i++)
            if (i % DX_NV < nv)
                acc[i] = _mm256_add_ps(acc[i], t[i]);
    }
}

/* Pixel k's chains of taps a and b. */
#define DX_PX2(k)                                                                              \
    do {                                                                                       \
        ta##k = _mm256_fmadd_ps(va, _mm256_broadcast_ss(sa + o##k), ta##k);                    \
        tb##k = _mm256_fmadd_ps(vb, _mm256_broadcast_ss(sb + o##k), tb##k);                    \
    } while (0)

/* One vector of channels: the chains of two taps at once (dy at sa and
 * sb, weights at wa and wb), so that the tile still runs 12; added to acc
 * in tap order, a's then b's. */
INLINE void dx_tap_pair(const float *sa, const float *sb, const int64_t *o, int64_t chan,
                        const float *wa, const float *wb, int64_t cout, __m256 *acc)
{
    __m256 ta0, ta1, ta2, ta3, ta4, ta5, tb0, tb1, tb2, tb3, tb4, tb5;
    int64_t co, o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3], o4 = o[4], o5 = o[5];
    ta0 = ta1 = ta2 = ta3 = ta4 = ta5 = _mm256_setzero_ps();
    tb0 = tb1 = tb2 = tb3 = tb4 = tb5 = ta0;
    for (co = 0; co < cout; co++, sa += chan, sb += chan, wa += 16, wb += 16) {
        __m256 va = _mm256_loadu_ps(wa), vb = _mm256_loadu_ps(wb);
        DX_PX2(0);
        DX_PX2(1);
        DX_PX2(2);
        DX_PX2(3);
        DX_PX2(4);
        DX_PX2(5);
    }
    {
        __m256 ra[DX_NP] = {ta0, ta1, ta2, ta3, ta4, ta5};
        __m256 rb[DX_NP] = {tb0, tb1, tb2, tb3, tb4, tb5};
        int i;
        for (i = 0; i < DX_NP; i++)
            acc[i * DX_NV] = _mm256_add_ps(_mm256_add_ps(acc[i * DX_NV], ra[i]), rb[i]);
    }
}

/* The first n <= DX_NP lanes of v to p: two plain stores for a whole
 * tile (a masked store costs much more on AMD). */
static inline void store_lanes(float *p, __m256 v, int64_t n)
{
    float tmp[8];
    int64_t i;
    if (n == DX_NP) {
        _mm_storeu_ps(p, _mm256_castps256_ps128(v));
        _mm_storel_pi((__m64 *)(p + 4), _mm256_extractf128_ps(v, 1));
        return;
    }
    _mm256_storeu_ps(tmp, v);
    for (i = 0; i < n; i++)
        p[i] = tmp[i];
}

/* The tile's sums (acc[DX_NV k + v]: pixel k, channels 8v ..) into the
 * planes of its nc channels (plane c at dx + c hw), np pixels each. */
static void dx_store(const __m256 *acc, int nv, int64_t nc, int64_t np, float *dx, int64_t hw)
{
    int64_t c, k;
    int v;
    for (v = 0; v < nv; v++) {
        __m256 r[8];
        for (k = 0; k < 8; k++)
            r[k] = k < DX_NP ? acc[k * DX_NV + v] : _mm256_setzero_ps();
        tsq__transpose8_ps_avx2(r);
        for (c = 0; c < 8 && 8 * v + c < nc; c++)
            store_lanes(dx + (8 * v + c) * hw, r[c], np);
    }
}

/* Input channels c0 .. c0 + nc - 1 (nv vectors), pixels q0 .. q0 + np - 1
 * of the plane in order (rows may change inside a tile; past np, the
 * last pixel again): every tap's chain, then 8 x 8 transposes into the
 * channels' planes. A row of taps that reaches no output of the tile adds
 * +0 to every sum and is left out. */
INLINE void dx_tile(const tsq__conv_geom *g, const tsq__conv_grad_layout *L, const float *dyp,
                    const float *wd, float *dx, int64_t c0, int64_t nc, int64_t q0, int64_t np,
                    const int nv)
{
    __m256 acc[DX_NP * DX_NV];
    int64_t chan = L->ohp * L->owp, o[DX_NP], ky, kx, k;
    int64_t first = q0 / g->w, last = (q0 + np - 1) / g->w; /* the tile's rows */
    const float *held_src = NULL, *held_w = NULL; /* a tap waiting for its pair */
    int held = 0;
    for (k = 0; k < DX_NP; k++) {
        int64_t q = q0 + (k < np ? k : np - 1);
        o[k] = q / g->w * L->owp + q % g->w;
    }
    for (k = 0; k < DX_NP * DX_NV; k++)
        acc[k] = _mm256_setzero_ps();
    for (ky = 0; ky < g->kh; ky++) {
        /* dy rows iy + pad - ky of the tile's rows iy */
        if (last + g->pad - ky < 0 || first + g->pad - ky >= g->oh)
            continue;
        for (kx = 0; kx < g->kw; kx++) {
            /* dy row iy + pad - ky, column ix + pad - kx, in the padded copy */
            const float *src = dyp + (g->kh - 1 - ky) * L->owp + g->kw - 1 - kx;
            const float *wt = wd + ((c0 / 16 * g->kh + ky) * g->kw + kx) * g->cout * 16;
            if (nv == 2) {
                dx_tap(src, o, chan, wt, g->cout, acc, 2);
            } else if (!held) { /* one vector: wait for the next tap */
                held_src = src;
                held_w = wt;
                held = 1;
            } else {
                dx_tap_pair(held_src, src, o, chan, held_w, wt, g->cout, acc);
                held = 0;
            }
        }
    }
    if (held)
        dx_tap(held_src, o, chan, held_w, g->cout, acc, 1);
    dx_store(acc, nv, nc, np, dx + c0 * g->h * g->w + q0, g->h * g->w);
}

void tsq__conv_grad_dx_avx2(const tsq__conv_geom *g, const float *wp, const float *dy,
                            float *dx, float *scratch)
{
    tsq__conv_grad_layout L = tsq__conv_grad_layout_of(g);
    int64_t hw = g->h * g->w, c0, q0;
    float *dyp = scratch + L.dyp;
    tsq__pad_planes(dy, g->cout, g->oh, g->ow, L.top, L.left, L.ohp, L.owp, dyp);
    for (c0 = 0; c0 < g->cin; c0 += 8 * DX_NV) {
        int64_t nc = g->cin - c0 < 8 * DX_NV ? g->cin - c0 : 8 * DX_NV;
        for (q0 = 0; q0 < hw; q0 += DX_NP) {
            int64_t np = hw - q0 < DX_NP ? hw - q0 : DX_NP;
            if (nc > 8)
                dx_tile(g, &L, dyp, wp, dx, c0, nc, q0, np, 2);
            else
                dx_tile(g, &L, dyp, wp, dx, c0, nc, q0, np, 1);
        }
    }
}
