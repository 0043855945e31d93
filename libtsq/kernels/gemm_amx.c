/* AMX-INT8 kernel for the plan's byte layout: tdpbusd multiplies a tile of
 * up to 16 rows x 64 unsigned codes by a tile of 16 rows of 4 x 16 signed
 * weights (the VNNI panel's layout: one row per group of 4 k) and adds
 * into 16 x 16 int32 sums, each product and sum exact in int32 as
 * vpdpbusd's are. So for the codes and weights of a low-bit layer the
 * accumulators are the VNNI kernel's, bit for bit, in any summation order.
 *
 * Operand A is read in place: a conv's 16 neighbouring output pixels of one
 * output row have their window rows stride * cb bytes apart, which is one
 * strided tile load; a dense product's rows are ldx apart the same way.
 * Each window row (a "segment" of seg bytes, seg % 4 == 0) is taken in
 * chunks of 64 bytes. A short last chunk would need a second tile shape
 * (and so fewer tiles for reuse), so instead the last chunk is the
 * segment's last 64 bytes, overlapping the one before, and the weight copy
 * (tsq__amx_pack) has zeros on the overlapped rows: each k is counted once,
 * and no byte outside the segment is read. A segment under 64 bytes is one
 * chunk of seg bytes. Row groups work the same way: a set of m > 16 rows
 * ends with the group of its last 16 rows, which overlaps the group before
 * and rewrites some rows with the same sums; m < 16 gives tiles of m rows.
 * Hence one tile configuration per call.
 *
 * Tiles: 0..3 sums (2 row groups x 2 panels), 4..5 codes, 6..7 weights:
 * 4 tdpbusd per 4 tile loads. The configuration is per thread and the
 * library's threads are started per call, so it is loaded here and the
 * tiles released before returning. Compiled with -mamx-tile -mamx-int8;
 * called only after the CPU reported AMX-INT8 and Linux granted the
 * process the tile state (tsq__amx_permit), otherwise it would fault. */
#include "kernels_internal.h"

#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* Palette 1's configuration block, as ldtilecfg reads it. */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16]; /* bytes per row of each tile */
    uint8_t rows[16];
} tile_config;

_Static_assert(sizeof(tile_config) == 64, "ldtilecfg reads 64 bytes");

/* ---- the weight copy (plain C: run once at plan creation) ---------------- */

static int64_t chunk_bytes(int64_t seg) { return seg < 64 ? seg : 64; }
static int64_t chunks(int64_t seg) { return (seg + 63) / 64; }
/* Where chunk j of a segment starts: every 64 bytes, the last one pulled
 * back to end at the segment's end. */
static int64_t chunk_off(int64_t seg, int64_t j)
{
    return 64 * j + 64 > seg && seg >= 64 ? seg - 64 : 64 * j;
}

int64_t tsq__amx_panel_bytes(int64_t kh, int64_t seg)
{
    return kh * chunks(seg) * (chunk_bytes(seg) / 4) * 64;
}

void tsq__amx_pack(const int8_t *dec, int64_t k, int64_t kh, int64_t seg, int64_t panels,
                   int8_t *out)
{
    int64_t k4n = tsq__k4n(k), sq = seg / 4, nch = chunks(seg), br = chunk_bytes(seg) / 4;
    int64_t pb = tsq__amx_panel_bytes(kh, seg), p, ky, j, q;
    for (p = 0; p < panels; p++)
        for (ky = 0; ky < kh; ky++)
            for (j = 0; j < nch; j++)
                for (q = 0; q < br; q++) {
                    int64_t byte = chunk_off(seg, j) + 4 * q;
                    int8_t *d = out + p * pb + ((ky * nch + j) * br + q) * 64;
                    /* Bytes below 64 j were counted by the earlier chunks. */
                    if (byte < 64 * j)
                        memset(d, 0, 64);
                    else
                        memcpy(d, dec + (p * k4n + ky * sq + byte / 4) * 64, 64);
                }
}

/* ---- the kernel ------------------------------------------------------------ */

typedef struct {
    int64_t ldx, kh, seg, step, nch, pb, ldacc, rows;
} shape;

/* Sums of one panel's tile (tile number t) into acc: in place when the
 * panel's 16 columns are all wanted, else through a buffer (columns past
 * ncols of the caller's acc must not be written). */
#define STORE(t, dst, left)                                                        \
    do {                                                                           \
        if ((left) >= 16) {                                                        \
            _tile_stored(t, (dst), sh->ldacc * 4);                                 \
        } else {                                                                   \
            int32_t buf_[16 * 16];                                                 \
            int64_t r_;                                                            \
            _tile_stored(t, buf_, 64);                                             \
            for (r_ = 0; r_ < sh->rows; r_++)                                      \
                memcpy((dst) + r_ * sh->ldacc, buf_ + 16 * r_,                     \
                       (size_t)(left) * sizeof(int32_t));                          \
        }                                                                          \
    } while (0)

/* R row groups (codes at a0, a1) times C panels (weights at w, w + pb):
 * tile numbers are immediates, hence the branches on the constants R, C
 * (resolved at compile time in each inlined copy). */
INLINE void block(const shape *sh, const uint8_t *a0, const uint8_t *a1, const int8_t *w,
                  int32_t *c0, int32_t *c1, int64_t left, const int R, const int C)
{
    int64_t ky, j;
    _tile_zero(0);
    if (C > 1)
        _tile_zero(1);
    if (R > 1) {
        _tile_zero(2);
        if (C > 1)
            _tile_zero(3);
    }
    for (ky = 0; ky < sh->kh; ky++)
        for (j = 0; j < sh->nch; j++) {
            int64_t off = ky * sh->step + chunk_off(sh->seg, j);
            const int8_t *b = w + (ky * sh->nch + j) * (chunk_bytes(sh->seg) / 4) * 64;
            _tile_loadd(4, a0 + off, sh->ldx);
            _tile_loadd(6, b, 64);
            if (C > 1)
                _tile_loadd(7, b + sh->pb, 64);
            if (R > 1)
                _tile_loadd(5, a1 + off, sh->ldx);
            _tile_dpbusd(0, 4, 6);
            if (C > 1)
                _tile_dpbusd(1, 4, 7);
            if (R > 1) {
                _tile_dpbusd(2, 5, 6);
                if (C > 1)
                    _tile_dpbusd(3, 5, 7);
            }
        }
    STORE(0, c0, left);
    if (C > 1)
        STORE(1, c0 + 16, left - 16);
    if (R > 1) {
        STORE(2, c1, left);
        if (C > 1)
            STORE(3, c1 + 16, left - 16);
    }
}

static void block_1_1(const shape *sh, const uint8_t *a0, const uint8_t *a1, const int8_t *w,
                      int32_t *c0, int32_t *c1, int64_t left)
{
    block(sh, a0, a1, w, c0, c1, left, 1, 1);
}
static void block_1_2(const shape *sh, const uint8_t *a0, const uint8_t *a1, const int8_t *w,
                      int32_t *c0, int32_t *c1, int64_t left)
{
    block(sh, a0, a1, w, c0, c1, left, 1, 2);
}
static void block_2_1(const shape *sh, const uint8_t *a0, const uint8_t *a1, const int8_t *w,
                      int32_t *c0, int32_t *c1, int64_t left)
{
    block(sh, a0, a1, w, c0, c1, left, 2, 1);
}
static void block_2_2(const shape *sh, const uint8_t *a0, const uint8_t *a1, const int8_t *w,
                      int32_t *c0, int32_t *c1, int64_t left)
{
    block(sh, a0, a1, w, c0, c1, left, 2, 2);
}

/* Row group g of the call: set g / per, the group's first row r0 within
 * the set (the last group of a set of more than 16 rows ends at its end). */
static void group(const uint8_t *x, int64_t xset, int64_t m, int64_t ldx, int64_t per,
                  int64_t g, int32_t *acc, int64_t ldacc, const uint8_t **a, int32_t **c)
{
    int64_t set = g / per, r0 = 16 * (g % per);
    if (m > 16 && r0 > m - 16)
        r0 = m - 16;
    *a = x + set * xset + r0 * ldx;
    *c = acc + (set * m + r0) * ldacc;
}

void tsq__conv_amx(const uint8_t *x, int64_t sets, int64_t xset, int64_t m, int64_t ldx,
                   int64_t kh, int64_t seg, int64_t step, const int8_t *w, int64_t n,
                   int32_t *acc, int64_t ldacc)
{
    typedef void (*block_fn)(const shape *, const uint8_t *, const uint8_t *, const int8_t *,
                             int32_t *, int32_t *, int64_t);
    static const block_fn blocks[2][2] = {{block_1_1, block_1_2}, {block_2_1, block_2_2}};
    tile_config cfg;
    shape sh;
    int64_t rows = m < 16 ? m : 16, kc = chunk_bytes(seg), per = (m + 15) / 16;
    int64_t groups = sets * per, np = tsq__panels(n), g, p;
    int t;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (t = 0; t < 8; t++) {
        cfg.rows[t] = (uint8_t)(t < 6 ? rows : kc / 4);
        cfg.colsb[t] = (uint16_t)(t < 4 || t >= 6 ? 64 : kc);
    }
    /* gcc's _tile_loadconfig names only the block's first 8 bytes as its
     * operand: make the whole block visible in memory first. */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
    sh.ldx = ldx;
    sh.kh = kh;
    sh.seg = seg;
    sh.step = step;
    sh.nch = chunks(seg);
    sh.pb = tsq__amx_panel_bytes(kh, seg);
    sh.ldacc = ldacc;
    sh.rows = rows;
    for (g = 0; g < groups; g += 2) {
        const uint8_t *a0, *a1 = NULL;
        int32_t *c0, *c1 = NULL;
        int two = g + 1 < groups;
        group(x, xset, m, ldx, per, g, acc, ldacc, &a0, &c0);
        if (two)
            group(x, xset, m, ldx, per, g + 1, acc, ldacc, &a1, &c1);
        for (p = 0; p < np; p += 2) {
            int wide = p + 1 < np;
            blocks[two][wide](&sh, a0, a1, w + p * sh.pb, c0 + 16 * p, c1 ? c1 + 16 * p : NULL,
                              n - 16 * p);
        }
    }
    _tile_release();
}
