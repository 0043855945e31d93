/*
 * Internal interface of the low-bit kernels (include/tsq/plan.h is the
 * public one). docs/kernels.md describes the layouts drawn here.
 *
 * Packed weights (pack.c). A b-bit weight w is stored in two's complement,
 * one bit plane per bit j = 0 .. b-1:
 *
 *     w = sum_{j < b-1} 2^j * bit_j  -  2^(b-1) * bit_{b-1}
 *
 * (ternary: plane 0 = "nonzero", plane 1 = "negative"). Columns are grouped
 * by 8 (a "column group", one 64-bit lane per column of a 512-bit vector)
 * and K by 64 (a "k-word"):
 *
 *     planes[((g * b + j) * kwords + kw) * 8 + lane]
 *       bit (k % 64) = bit j of W[k][8g + lane],  kw = k / 64
 *
 * Padding (k >= K, columns >= N) holds zero bits, i.e. weight 0.
 *
 * Decoded panels (for the AVX2 and VNNI kernels, built per call in the
 * workspace): 16 columns per panel, K in groups of 4 ("k4"):
 *
 *     dec[(p * k4n + q) * 64 + l * 4 + i] = W[4q + i][16p + l]   (int8, 0 in padding)
 *
 * so one 64-byte row holds, for each of 16 columns, the 4 consecutive k of
 * one vpdpbusd dword (AVX2 reads it as two 32-byte halves of 8 columns).
 *
 * Activation bit planes (VPOPCNT kernel, built per row block in the
 * workspace): xplanes[(r * nb + b) * kwords + kw], bit (k % 64) = bit b of
 * X[r][k]; zero beyond K.
 */
#ifndef TSQ_KERNELS_INTERNAL_H
#define TSQ_KERNELS_INTERNAL_H

#include "internal.h"

#define TSQ__GROUP_COLS 8  /* columns per column group (popcount lanes) */
#define TSQ__PANEL_COLS 16 /* columns per decoded panel */
#define TSQ__KWORD 64      /* k per k-word */

struct tsq_packed_weights {
    tsq__object obj; /* ctx for freeing; the message is unused (immutable) */
    int64_t k, n;
    int32_t bits;
    int64_t kwords;  /* ceil(k / 64) */
    int64_t groups;  /* ceil(n / 8) */
    uint64_t bytes;  /* size of planes */
    uint64_t *planes;
};

struct tsq_thresholds {
    tsq__object obj; /* ctx for freeing; the message is unused (immutable) */
    int64_t channels;
    int64_t padded;   /* channels rounded up to 16; padding gives code 0 */
    int32_t bits;
    int32_t maxcode;  /* 2^bits - 1 */
    int32_t *t;       /* [maxcode][padded] thresholds, non-decreasing in m */
    int32_t *flip;    /* [padded] 0 (compare acc) or -1 (compare ~acc) */
    int32_t *top;     /* [padded] the largest code of the channel */
};

/* The smallest scale alpha of a low-bit layer: the layers, the plan and
 * the model reader clamp to it alike. */
#define TSQ__LOWBIT_ALPHA_MIN 1e-12f

/* Largest weight magnitude of b-bit weights and largest code of n-bit codes. */
static inline int32_t tsq__max_weight(int32_t bits) { return (1 << (bits - 1)) - 1; }
static inline int32_t tsq__max_code(int32_t bits) { return (1 << bits) - 1; }

/* ---- pack.c ---- */
/* W (K x N int8, row-major) from the planes. */
void tsq__unpack_weights(const tsq_packed_weights *pw, int8_t *w);
/* Decoded panels p0 .. p1-1 into dec (layout above; dec receives panel p0). */
void tsq__decode_panels(const tsq_packed_weights *pw, int64_t p0, int64_t p1, int8_t *dec);
static inline int64_t tsq__k4n(int64_t k) { return (k + 3) / 4; }
/* Pair panels (plain C, any CPU): for each block of TSQ__PAIR_COLS
 * columns, ceil(k / 2) rows of one byte per column, (w0 + 2) + 4 (w1 + 2)
 * for the column's weights at k = 2q and 2q + 1 (0 past k and past n).
 * w: k x n int8 in -2 .. 1. */
#define TSQ__PAIR_COLS 64
static inline int64_t tsq__pair_panel_bytes(int64_t k, int64_t n)
{
    return (n + TSQ__PAIR_COLS - 1) / TSQ__PAIR_COLS * ((k + 1) / 2) * TSQ__PAIR_COLS;
}
void tsq__pair_panels(const int8_t *w, int64_t k, int64_t n, uint8_t *out);
static inline int64_t tsq__panels(int64_t n) { return (n + TSQ__PANEL_COLS - 1) / TSQ__PANEL_COLS; }

/* ---- the kernels: rows 0..m-1 of codes x (row stride ldx) times column
 * range [c0, c1) of the weights into acc (row stride ldacc, acc points at
 * column 0 of row 0). c0 is a multiple of 32. Only acc[r][c0..c1-1] is
 * written. The decoded-panel kernels get dec pointing at panel c0 / 16. ---- */
void tsq__gemm_ref(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, const int8_t *w,
                   int64_t n, int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc);
/* Groups of 4 k the AVX2 kernel's 16-bit sums take before a lane could
 * leave int16 (a pair sum is at most 2 maxprod); 0: products this large
 * need its nibble split, which only tsq__gemm_avx2 has. */
static inline int64_t tsq__avx2_flush_steps(int32_t maxprod)
{
    return 32767 / (2 * (int64_t)(maxprod > 0 ? maxprod : 1));
}
/* maxprod = largest code times largest weight magnitude: it bounds the
 * 16-bit partial sums (vpmaddubsw saturates). */
void tsq__gemm_avx2(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, const int8_t *dec,
                    int32_t maxprod, int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc);
void tsq__gemm_vnni(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, const int8_t *dec,
                    int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc);
/* The same product with row r of x read in place as kh segments of seg
 * bytes (seg a multiple of 4), segment ky at rows[r] + ky * step, and k
 * = kh * seg rounded up as the panels were (a convolution's window rows in
 * the byte layout: no im2col copy). The same bits as tsq__gemm_vnni on
 * the gathered rows. */
void tsq__conv_vnni(const uint8_t *const *rows, int64_t m, int64_t kh, int64_t seg,
                    int64_t step, int64_t k, const int8_t *dec, int64_t c0, int64_t c1,
                    int32_t *acc, int64_t ldacc);
/* The same on AVX2 (maxprod as for tsq__gemm_avx2, and small enough that
 * 16-bit sums are used: 2 * maxprod <= 32767). The same bits as
 * tsq__gemm_avx2 on the gathered rows. */
void tsq__conv_avx2(const uint8_t *const *rows, int64_t m, int64_t kh, int64_t seg,
                    int64_t step, int64_t k, const int8_t *dec, int32_t maxprod, int64_t c0,
                    int64_t c1, int32_t *acc, int64_t ldacc);
/* The pair layout's product (gemm_pairs_avx2.c): codes of at most 2 bits,
 * two per byte as 16 (a0 + 4 a1), times 2-bit weights given as pair
 * panels (tsq__pair_panels). Row r is kh segments of seg bytes (pairs of
 * k), segment ky at rows[r] + ky * step; the panels hold kpairs pairs per
 * column (kpairs >= kh * seg). Columns 0 .. n - 1 of acc are written.
 * flush: pairs of k the byte sums take, 127 / the largest |a0 w0 + a1 w1|;
 * the 16-bit row sums must hold kh * seg times that bound. The gemm form
 * reads rows of kpairs bytes, ldx apart. Call only when the CPU has AVX2. */
void tsq__conv_pairs_avx2(const uint8_t *const *rows, int64_t m, int64_t kh, int64_t seg,
                          int64_t step, int64_t kpairs, const uint8_t *panels, int32_t flush,
                          int64_t n, int32_t *acc, int64_t ldacc);
void tsq__gemm_pairs_avx2(const uint8_t *x, int64_t ldx, int64_t m, int64_t kpairs,
                          const uint8_t *panels, int32_t flush, int64_t n, int32_t *acc,
                          int64_t ldacc);
/* AMX-INT8 (gemm_amx.c): the same sums from tile instructions. Rows come
 * in `sets` of m rows: row r of set i is kh segments of seg bytes (seg a
 * multiple of 4), segment ky at x + i * xset + r * ldx + ky * step, its
 * sums written to acc + (i * m + r) * ldacc, columns 0 .. n - 1 only. A
 * convolution's output row is a set (ldx = stride * cb); a dense product
 * is one set with kh = 1 and seg = k. w: the weights re-laid by
 * tsq__amx_pack for this kh and seg. No byte outside the segments is
 * read. Call only when the CPU has AMX-INT8 and tsq__amx_permit() gave 1. */
void tsq__conv_amx(const uint8_t *x, int64_t sets, int64_t xset, int64_t m, int64_t ldx,
                   int64_t kh, int64_t seg, int64_t step, const int8_t *w, int64_t n,
                   int32_t *acc, int64_t ldacc);
/* Bytes per panel of the re-laid weights, and the re-laying: panels
 * 0 .. panels - 1 of dec (decoded panels of k rows, k >= kh * seg) into
 * out, per window row ky its chunks of 64 k, zeros where the last chunk
 * overlaps the one before (gemm_amx.c). Plain C, any CPU. */
int64_t tsq__amx_panel_bytes(int64_t kh, int64_t seg);
void tsq__amx_pack(const int8_t *dec, int64_t k, int64_t kh, int64_t seg, int64_t panels,
                   int8_t *out);
/* AVX2 and AVX-512 versions of tsq__decode_panels (same output). */
void tsq__decode_panels_avx2(const tsq_packed_weights *pw, int64_t p0, int64_t p1,
                             int8_t *dec);
void tsq__decode_panels_avx512(const tsq_packed_weights *pw, int64_t p0, int64_t p1,
                               int8_t *dec);
/* Bit planes of m rows of codes (nb planes) into xp (layout above). */
void tsq__bitplanes_avx512(const uint8_t *x, int64_t ldx, int64_t m, int64_t k, int32_t nb,
                           int64_t kwords, uint64_t *xp);
void tsq__gemm_vpopcnt(const uint64_t *xp, int64_t m, int32_t nb,
                       const tsq_packed_weights *pw, int64_t c0, int64_t c1, int32_t *acc,
                       int64_t ldacc);

/* OR of n bytes (for the code range check). */
uint8_t tsq__or_bytes_avx2(const uint8_t *x, int64_t n);

/* ---- thresholds.c and its SIMD variants: codes of rows 0..rows-1,
 * channels [c0, c1), from acc (row stride ldacc, pointing at channel 0)
 * into out (row stride ldo, pointing at channel 0). ---- */
typedef void (*tsq__thresholds_fn)(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                   int64_t rows, int64_t c0, int64_t c1, uint8_t *out,
                                   int64_t ldo);
void tsq__thresholds_apply_ref(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                               int64_t rows, int64_t c0, int64_t c1, uint8_t *out,
                               int64_t ldo);
void tsq__thresholds_apply_avx2(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                int64_t rows, int64_t c0, int64_t c1, uint8_t *out,
                                int64_t ldo);
void tsq__thresholds_apply_avx512(const tsq_thresholds *th, const int32_t *acc,
                                  int64_t ldacc, int64_t rows, int64_t c0, int64_t c1,
                                  uint8_t *out, int64_t ldo);
/* The float epilogue the thresholds replace (docs/method.md §6.1):
 * code of fl(fl((float)acc * alpha) + bias). */
int32_t tsq__affine_code(int32_t acc, float alpha, float bias, float eps, float inv_delta,
                         int32_t maxcode);

/* ---- dispatch.c: what a low-bit product of M rows decides before it
 * touches any data (the kernel, the thread count, the workspace layout),
 * so that the plan can run it without the public calls' checks. ---- */
typedef struct {
    uint64_t shared;     /* decoded weights (ref: K x N int8; avx2/vnni: all panels) */
    uint64_t scratch;    /* per thread: bit planes (vpopcnt) or two panels (streaming) */
    uint64_t block;      /* per thread: int32 accumulators of a row block */
    int64_t rows;        /* rows per block */
    int64_t threads;     /* slots */
    int streaming;       /* avx2/vnni decode per panel pair into scratch */
    uint64_t total;      /* including the alignment slack */
} tsq__lowbit_ws;

typedef struct {
    const uint8_t *x;
    int64_t m, k;
    int32_t code_bits;
    int32_t kernel;   /* resolved */
    int64_t threads;
    tsq__lowbit_ws ws;
} tsq__lowbit_call;

/* Fills *call for M rows of code_bits codes times pw, with the kernel
 * request resolved against ctx's CPU features, on at most `threads`
 * threads (fewer for little work). Errors (a forced kernel the CPU lacks,
 * an overflowing size) on ctx; on success ctx is not written. */
tsq_status tsq__lowbit_prepare(tsq_context *ctx, const char *where, const tsq_packed_weights *pw,
                               int64_t m, int32_t code_bits, int32_t kernel, int64_t threads,
                               tsq__lowbit_call *call);
/* Runs the product prepared in *call on codes x (M x K, row-major, every
 * code within code_bits: not checked). th NULL: accumulators into acc
 * (M x N); else codes into out (M x N). workspace holds call->ws.total
 * bytes (any alignment). Cannot fail. */
void tsq__lowbit_execute(const tsq__lowbit_call *call, const tsq_packed_weights *pw,
                         const uint8_t *x, const tsq_thresholds *th, int32_t *acc, uint8_t *out,
                         void *workspace);

/* ---- dispatch.c: kernel resolution ---- */
/* 1 when a CPU with `features` runs `kernel` (TSQ_KERNEL_*, not AUTO). */
int tsq__kernel_runs(int32_t kernel, uint32_t features);
/* The kernel a request resolves to, or TSQ_ERR_UNSUPPORTED / INVALID with a
 * message on obj. */
tsq_status tsq__kernel_resolve(tsq__object *obj, const char *where, int32_t kernel,
                               int64_t m, int32_t code_bits, int32_t weight_bits,
                               int32_t *chosen);
/* The same for a given set of TSQ_CPU_* features (tests use it to check
 * the refusal of kernels this machine happens to have). */
tsq_status tsq__kernel_resolve_for(tsq__object *obj, const char *where, int32_t kernel,
                                   uint32_t features, int64_t m, int32_t code_bits,
                                   int32_t weight_bits, int32_t *chosen);

#endif /* TSQ_KERNELS_INTERNAL_H */
