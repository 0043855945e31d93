/*
 * The float convolution and dense kernels (depend on core only): the one
 * convolution geometry, im2col / col2im, the conv and dense GEMM drivers.
 * The layers (nn/) and the inference plan (runtime/) both call these, so a
 * float layer and its plan stage give the same bits.
 */
#ifndef TSQ_KERNELS_CONV_H
#define TSQ_KERNELS_CONV_H

#include "internal.h"

/* ---- im2col.c: the one convolution geometry ---- */
typedef struct tsq__conv_geom {
    int64_t cin, h, w;     /* input */
    int64_t cout, oh, ow;  /* output */
    int64_t kh, kw, stride, pad; /* stride and pad: vertical (and both when square) */
    int64_t stride_w, pad_w;     /* horizontal */
    int64_t k;             /* rows of the patch matrix: cin*kh*kw */
    int64_t ohw;           /* oh*ow */
    int direct;            /* 1x1, stride 1, pad 0: the input is its own patch matrix */
    int64_t group;         /* images side by side in one GEMM (small outputs) */
} tsq__conv_geom;

/* The part known before the image: channels, kernel, stride and padding
 * (no image: h = w = 0, group 1). */
void tsq__conv_geom_set(tsq__conv_geom *g, int64_t cin, int64_t cout, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w);
/* Completes a set geometry for an h x w image, with the float GEMM path's
 * grouping; returns 0 (g's image part unchanged) if the output would be
 * empty. The float GEMM path (conv_f32.c, tsq__im2col) takes square
 * geometries only; tsq__im2col_rows takes any. */
int tsq__conv_geom_fit(tsq__conv_geom *g, int64_t h, int64_t w);
/* tsq__conv_geom_set (square stride and pad), then tsq__conv_geom_fit. */
int tsq__conv_geom_init(tsq__conv_geom *g, int64_t cin, int64_t h, int64_t w, int64_t cout,
                        int64_t kh, int64_t kw, int64_t stride, int64_t pad);
/* The window's bounds, the one rule for every caller: kernel and stride in
 * 1..lim, padding in 0..kernel-1; else TSQ_ERR_INVALID and "where: ..." on
 * obj. */
tsq_status tsq__conv_window_check(tsq__object *obj, const char *where, int64_t kh, int64_t kw,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                  int64_t pad_w, int64_t lim);
/* The one validation of a geometry: tsq__conv_window_check with lim 2^20,
 * the window fits the padded image, cin*kh*kw fits.
 * Fills *g (cout = 0) or fails with TSQ_ERR_INVALID / TSQ_ERR_SHAPE /
 * TSQ_ERR_OVERFLOW and a message "where: ..." on obj. */
tsq_status tsq__conv_geom_check(tsq__object *obj, const char *where, int64_t cin, int64_t h,
                                int64_t w, int64_t kh, int64_t kw, int64_t stride_h,
                                int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                tsq__conv_geom *g);

/* Image layouts of tsq__im2col_rows (the values of TSQ_LAYOUT_*). */
enum { TSQ__NCHW = 1, TSQ__NHWC = 2 };
/* The one im2col by rows: for images [b0, b1) of `in` (each cin x h x w in
 * NCHW, or h x w x cin in NHWC; elements of `es` bytes: u8 codes or f32),
 * one row of g->k elements per output position: all oh*ow in order
 * (positions NULL, npos = oh*ow), or the npos positions listed for image b
 * at positions[b*npos ..]. Row (b, i) starts at out + (b*npos + i)*k*es.
 * Column order: (c, ky, kx) for NCHW, (ky, kx, c) for NHWC. Padding cells
 * are zero bytes (the code of 0, and 0.0f). */
void tsq__im2col_rows(const tsq__conv_geom *g, size_t es, int32_t layout, const void *in,
                      void *out, int64_t b0, int64_t b1, const int64_t *positions,
                      int64_t npos);
/* col (k x ohw, rows ld >= ohw floats apart) = patches of one image x
 * (cin x h x w). */
void tsq__im2col(const tsq__conv_geom *g, const float *x, float *col, int64_t ld);
/* x (cin x h x w) = sum of the patches in col (as above), x overwritten.
 * col is scratch: entries that fall outside the image may be zeroed. */
void tsq__col2im(const tsq__conv_geom *g, float *col, int64_t ld, float *x);

/* ---- conv_f32.c: the float convolution, shared by conv2d, the low-bit conv
 * layer and the inference plan ---- */
/* y[n] = scale (.) (W * x[n]) + bias per output channel (scale may be NULL
 * for 1). W is cout x k. `ws` holds tsq__conv_ws_floats(g, threads, 0). */
size_t tsq__conv_ws_floats(const tsq__conv_geom *g, int64_t threads, int backward);
/* The floats tsq__conv_forward needs for `batch` images at most (less than
 * tsq__conv_ws_floats for small batches: the inference plan's tiles). */
size_t tsq__conv_forward_ws_floats(const tsq__conv_geom *g, int64_t threads, int64_t batch);
/* cpu: the context's TSQ_CPU_* features, which pick the kernel (never the
 * result). With tsq__conv_direct_runs and no scale the convolution is
 * computed directly (conv_direct.c). */
void tsq__conv_forward(const tsq__conv_geom *g, int64_t threads, uint32_t cpu, const float *x,
                       const float *w, const float *scale, const float *bias, float *y,
                       int64_t batch, float *ws);
/* From dy: dw = sum_n dy[n] col(x[n])^T (cout x k), db = sum dy over
 * positions (NULL to skip), dx = W^T dy col2im'd (NULL to skip). cpu
 * picks the kernels: directly (conv_grad.c) where
 * tsq__conv_grad_direct_runs, else the GEMMs. */
void tsq__conv_backward(const tsq__conv_geom *g, int64_t threads, uint32_t cpu, const float *x,
                        const float *w, const float *dy, float *dw, float *db, float *dx,
                        int64_t batch, float *ws);

/* ---- conv_direct.c: convolutions without the GEMM ---- */
#define TSQ__CONV_DIRECT_K 32 /* small patches: always direct, and fused into a plan's front */
#define TSQ__CONV_CHAIN_Q 448 /* the longest single FMA chain (see tsq__conv_direct_split) */
#define TSQ__CONV_DIRECT_MIN_W 12 /* larger patches go direct from this output width */
/* 1 if a convolution of this geometry is computed directly on a CPU with
 * the TSQ_CPU_* features cpu: stride 1, square padding, not 1 x 1 (a
 * product over channels, which the BLAS does well), and either k <=
 * TSQ__CONV_DIRECT_K (every CPU), or k + 1 < 2 Q, outputs at least
 * TSQ__CONV_DIRECT_MIN_W wide (a row fills most of a vector) and a SIMD
 * kernel (AVX2 + FMA). The layers and the plan both decide with it. */
int tsq__conv_direct_runs(const tsq__conv_geom *g, uint32_t cpu);
/* The taps of an output's first FMA chain: all k when the patch with its
 * bias (k + 1 terms, or k without) is at most TSQ__CONV_CHAIN_Q long,
 * else the first half rounded up to a multiple of 16; the second chain
 * takes the rest and the bias, and the two are added (conv_direct.c). */
int64_t tsq__conv_direct_split(const tsq__conv_geom *g, int has_bias);
/* Scratch floats of one image's direct convolution (the padded image, the
 * taps' offsets). */
int64_t tsq__conv_direct_ws_floats(const tsq__conv_geom *g);
/* Where in that scratch the SIMD kernels keep the taps' offsets in the
 * padded image (filled here). */
int32_t *tsq__conv_direct_offsets(const tsq__conv_geom *g, float *scratch);
/* The SIMD kernels' weights: blocks of 16 output channels, each tap-major
 * (k x 16, a missing channel repeating the block's last), so that one
 * tap's weights are one vector for the AVX-512 kernel (channels in the
 * lanes) and the broadcasts of the AVX2 one. Packed once per
 * call (tsq__conv_forward) and shared by its images and threads. */
#define TSQ__CONV_PACK_W 16
int64_t tsq__conv_direct_pack_floats(const tsq__conv_geom *g);
void tsq__conv_direct_pack(const tsq__conv_geom *g, const float *w, float *packed);
/* planes x h x w floats into planes x hp x wp with a zero border: `top`
 * rows above, `left` columns before, the rest after. */
void tsq__pad_planes(const float *x, int64_t planes, int64_t h, int64_t w, int64_t top,
                     int64_t left, int64_t hp, int64_t wp, float *xp);
/* x (cin x h x w) into scratch with a zero border of the padding, and 32
 * zeros after it. */
void tsq__conv_pad_image(const tsq__conv_geom *g, const float *x, float *xp);
/* What stays the same for every image of a direct convolution. */
typedef struct tsq__conv_direct_op {
    const tsq__conv_geom *g;
    const float *w;      /* cout x k */
    const float *packed; /* tsq__conv_direct_pack of w (the SIMD kernels read this) */
    const float *scale;  /* per output channel, or NULL */
    const float *bias;   /* per output channel, or NULL */
} tsq__conv_direct_op;
/* One image x (cin x h x w) into y (cout x oh x ow): each output the FMA
 * chain over its patch in (c, ky, kx) order from +0, split in two chains
 * as tsq__conv_direct_split says, then
 *   no scale:  chain + bias (the bias the chain's last term, NULL: none);
 *   scale:     scale * chain + bias (bias NULL: + 0.0f), the low-bit
 *              layers' epilogue.
 * The C oracle and the SIMD kernels give the same bits; scratch:
 * tsq__conv_direct_ws_floats(g) floats. */
typedef void (*tsq__conv_direct_fn)(const tsq__conv_direct_op *op, const float *x, float *y,
                                    float *scratch);
void tsq__conv_direct_ref(const tsq__conv_direct_op *op, const float *x, float *y,
                          float *scratch);
/* AVX2: output pixels in the lanes, or output channels in the lanes
 * (conv_direct_ch_avx2.c), whichever computes fewer idle lanes. */
void tsq__conv_direct_avx2(const tsq__conv_direct_op *op, const float *x, float *y,
                           float *scratch);
void tsq__conv_direct_ch_avx2(const tsq__conv_direct_op *op, const float *x, float *y,
                              float *scratch);
/* AVX-512: output pixels in the lanes for small patches (k up to
 * TSQ__CONV_DIRECT_K), output channels in the lanes for larger ones. */
void tsq__conv_direct_avx512(const tsq__conv_direct_op *op, const float *x, float *y,
                             float *scratch);
void tsq__conv_direct_ch_avx512(const tsq__conv_direct_op *op, const float *x, float *y,
                                float *scratch);
/* The kernel for the TSQ_CPU_* features cpu and this geometry. */
tsq__conv_direct_fn tsq__conv_direct_for(uint32_t cpu, const tsq__conv_geom *g);

/* ---- conv_grad.c: the backward without the GEMMs ---- */
/* 1 if tsq__conv_backward computes this geometry directly on a CPU with
 * the features cpu: AVX-512, or AVX2 + FMA where its kernels beat the
 * GEMMs (conv_grad.c: cout <= 128, and cin >= 8 unless cout <= 16),
 * stride 1, square padding, k > TSQ__CONV_DIRECT_K, one image per GEMM
 * (group 1), rows at least TSQ__CONV_DIRECT_MIN_W wide, cout <=
 * TSQ__CONV_CHAIN_Q. */
int tsq__conv_grad_direct_runs(const tsq__conv_geom *g, uint32_t cpu);
/* The length of the next depth block of a GEMM with `left` terms still to
 * add: at most TSQ__CONV_CHAIN_Q; between Q and 2Q, half rounded up to a
 * multiple of 16 (OpenBLAS SkylakeX's cut, measured). The one rule of
 * both directions (tsq__conv_direct_split uses it too). */
int64_t tsq__conv_depth_block(int64_t left);
/* Scratch floats of one image's backward (any kernel set). */
int64_t tsq__conv_grad_ws_floats(const tsq__conv_geom *g);
/* Where the SIMD kernels (AVX-512 and AVX2) keep what in their scratch
 * (offsets and sizes in floats), in one place with the size queries. */
#define TSQ__CONV_GRAD_TAPS 8 /* taps of the weight gradient's blocks */
typedef struct {
    int64_t hp, wp, plane; /* dW: the padded image */
    int64_t ld;            /* dW: floats per position of transposed dy (AVX2: in
                            * blocks of 16 channels, the same P ld floats) */
    int64_t xp, ones, dyt, tmp, dw_total;
    int64_t top, left, ohp, owp, c16; /* dx: the padded dy, the weights */
    int64_t dyp, dx_total;
} tsq__conv_grad_layout;
tsq__conv_grad_layout tsq__conv_grad_layout_of(const tsq__conv_geom *g);
/* Floats per row of the backward's accumulator: cout rounded up to 16. */
int64_t tsq__conv_grad_ld(const tsq__conv_geom *g);
/* acc (cols rows of tsq__conv_grad_ld floats: row t is column t of
 * [dW db], cols = k or k + 1 with the ones row of the bias) += this
 * image's [dW db]^T, one chain per depth block of positions. */
typedef void (*tsq__conv_grad_dw_fn)(const tsq__conv_geom *g, const float *x, const float *dy,
                                     int64_t cols, float *acc, float *scratch);
/* The weights W (cout x k) in the dx kernel's layout, wp (of
 * tsq__conv_grad_prep_floats floats): once per backward, not per image. */
typedef void (*tsq__conv_grad_prep_fn)(const tsq__conv_geom *g, const float *w, float *wp);
int64_t tsq__conv_grad_prep_floats(const tsq__conv_geom *g);
/* dx (cin x h x w) = this image's input gradient, overwritten; wp from the
 * same kernel set's prep. */
typedef void (*tsq__conv_grad_dx_fn)(const tsq__conv_geom *g, const float *wp, const float *dy,
                                     float *dx, float *scratch);
typedef struct {
    tsq__conv_grad_dw_fn dw;
    tsq__conv_grad_prep_fn prep;
    tsq__conv_grad_dx_fn dx;
} tsq__conv_grad_fns;
void tsq__conv_grad_dw_ref(const tsq__conv_geom *g, const float *x, const float *dy,
                           int64_t cols, float *acc, float *scratch);
void tsq__conv_grad_prep_ref(const tsq__conv_geom *g, const float *w, float *wp);
void tsq__conv_grad_dx_ref(const tsq__conv_geom *g, const float *wp, const float *dy, float *dx,
                           float *scratch);
void tsq__conv_grad_dw_avx512(const tsq__conv_geom *g, const float *x, const float *dy,
                              int64_t cols, float *acc, float *scratch);
void tsq__conv_grad_prep_avx512(const tsq__conv_geom *g, const float *w, float *wp);
void tsq__conv_grad_dx_avx512(const tsq__conv_geom *g, const float *wp, const float *dy,
                              float *dx, float *scratch);
/* AVX2 + FMA (conv_grad_avx2.c): channels in the lanes as on AVX-512, 8
 * per vector; the same scratch and prep sizes, other orders inside. */
void tsq__conv_grad_dw_avx2(const tsq__conv_geom *g, const float *x, const float *dy,
                            int64_t cols, float *acc, float *scratch);
void tsq__conv_grad_prep_avx2(const tsq__conv_geom *g, const float *w, float *wp);
void tsq__conv_grad_dx_avx2(const tsq__conv_geom *g, const float *wp, const float *dy,
                            float *dx, float *scratch);
tsq__conv_grad_fns tsq__conv_grad_for(uint32_t cpu);

/* ---- dense_f32.c ---- */
/* y = x W^T (.) scale + bias (x batch x in, W out x in); threads as for
 * the convolution (> 1: libtsq's threads split the rows). */
void tsq__dense_forward(int64_t threads, int64_t in, int64_t out, const float *x,
                        const float *w, const float *scale, const float *bias, float *y,
                        int64_t batch);
void tsq__dense_backward(int64_t threads, int64_t in, int64_t out, const float *x,
                         const float *w, const float *dy, float *dw, float *db, float *dx,
                         int64_t batch);

#endif /* TSQ_KERNELS_CONV_H */
