/*
 * libtsq - experimental.h: the kernel-level calls under the inference plan.
 *
 * Declared only when TSQ_EXPERIMENTAL is defined before this header is
 * included:
 *
 *     #define TSQ_EXPERIMENTAL
 *     #include <tsq/experimental.h>
 *
 * These calls are outside the ABI promise of docs/abi.md: they are exported
 * under their own version node (TSQ_EXPERIMENTAL_0.1), the ABI check leaves
 * them out, and any release may change or remove them. What they compute is
 * exact and tested like the rest of the library.
 *
 * The product. For codes X (M x K, uint8, each in 0 .. 2^n - 1) and weights
 * W (K x N, int8, each in -(2^(b-1) - 1) .. 2^(b-1) - 1 for b-bit weights,
 * b = 2 being ternary {-1, 0, +1}) the kernels compute the int32 matrix
 *
 *     acc[m][c] = sum over k of X[m][k] * W[k][c]          (exactly)
 *
 * Every kernel gives the same bits. K * (2^n - 1) * (2^(b-1) - 1) must be at
 * most 2^31 - 1, so no accumulator can overflow (TSQ_ERR_OVERFLOW otherwise).
 *
 * Kernels (TSQ_KERNEL_*): a portable C reference; AVX2 (vpmaddubsw on u8
 * codes x s8 weights, 16-bit partial sums); AVX-512 VNNI (vpdpbusd); and a
 * bit-serial AVX-512 VPOPCNTDQ kernel (popcounts of activation bit planes
 * ANDed with weight bit planes). TSQ_KERNEL_AUTO picks, from the CPU
 * features the context detected at its creation, the one measured fastest
 * for the shape and bit widths; a kernel can also be forced, for tests and
 * benchmarks (docs/kernels.md).
 *
 * Thread-safety: tsq_packed_weights and tsq_thresholds are immutable after
 * creation and may be shared by any number of threads at once (each thread
 * passing its own context and workspace). Calls report their errors on the
 * context they are given, never on the shared objects.
 */
#ifndef TSQ_EXPERIMENTAL_H
#define TSQ_EXPERIMENTAL_H

#include "plan.h"

#ifdef TSQ_EXPERIMENTAL

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Kernels                                                             */
/* ------------------------------------------------------------------ */

/* Kernel choices, passed as int32_t. The numbers are frozen. */
enum {
    TSQ_KERNEL_AUTO = 0,    /* the fastest available for the shape (measured) */
    TSQ_KERNEL_REF = 1,     /* portable C, the oracle: always available */
    TSQ_KERNEL_AVX2 = 2,    /* vpmaddubsw; needs AVX2 */
    TSQ_KERNEL_VNNI = 3,    /* vpdpbusd; needs AVX-512 F, BW, VL and VNNI */
    TSQ_KERNEL_VPOPCNT = 4  /* bit-serial; needs AVX-512 F, BW, VL and VPOPCNTDQ */
};

/*! tsq_kernel_name() :
 *  @return a static name for a TSQ_KERNEL_* value ("auto", "ref", "avx2",
 *  "vnni", "vpopcnt"), or "unknown". Cannot fail. Thread-safe. */
TSQ_API const char *tsq_kernel_name(int32_t kernel);

/*! tsq_kernel_available() :
 *  Writes 1 to *available if this CPU (and OS) can run the kernel, else 0.
 *  TSQ_KERNEL_AUTO and TSQ_KERNEL_REF are always available. Thread-safe.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (not a TSQ_KERNEL_* value). */
TSQ_API tsq_status tsq_kernel_available(int32_t kernel, int32_t *available);

/* ------------------------------------------------------------------ */
/* Packed weights                                                      */
/* ------------------------------------------------------------------ */

/* Low-bit weights packed once into bit planes (b bits per weight, so 2 bits
 * per ternary weight; K is padded to a multiple of 64 and N to a multiple
 * of 8). Immutable after creation: shareable across threads. */
typedef struct tsq_packed_weights tsq_packed_weights;

/*! tsq_packed_weights_create() :
 *  Packs the int8 tensor w of shape K x N (K rows = the reduction axis,
 *  N columns = output channels) with `weight_bits` b in 2..8: every
 *  element must lie in -(2^(b-1) - 1) .. 2^(b-1) - 1 (b = 2: {-1, 0, 1}).
 *  w is only read; the packed object is allocated through ctx, which must
 *  outlive it. *out receives the object, or NULL on failure.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, w or out), TSQ_ERR_DTYPE (w not i8),
 *  TSQ_ERR_SHAPE (w not 2-D), TSQ_ERR_INVALID (weight_bits outside 2..8, or
 *  a weight outside the alphabet: the message gives its row and column),
 *  TSQ_ERR_OVERFLOW (K or N above 2^31 - 1), TSQ_ERR_NO_MEMORY.
 *  Errors are reported on ctx. */
TSQ_API tsq_status tsq_packed_weights_create(tsq_context *ctx, const tsq_tensor *w,
                                             int32_t weight_bits,
                                             tsq_packed_weights **out);

/*! tsq_packed_weights_destroy() : frees the object. Accepts NULL. No thread
 *  may be using it. */
TSQ_API void tsq_packed_weights_destroy(tsq_packed_weights *pw);

/* Keys of tsq_packed_weights_get(). */
enum {
    TSQ_PACKED_ROWS = 0x0801,        /* K, the reduction length */
    TSQ_PACKED_COLS = 0x0802,        /* N, the number of output channels */
    TSQ_PACKED_WEIGHT_BITS = 0x0803, /* b */
    TSQ_PACKED_BYTES = 0x0804        /* bytes of packed weight data (padding included) */
};

/*! tsq_packed_weights_get() :
 *  Writes one property (a TSQ_PACKED_* key) to *value. Thread-safe.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_packed_weights_get(const tsq_packed_weights *pw, int32_t key,
                                          int64_t *value);

/*! tsq_packed_weights_unpack() :
 *  Writes the weights back into w, an int8 tensor of shape K x N (a round
 *  trip of tsq_packed_weights_create). Thread-safe for pw; w is written.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE (message on
 *  w; w is untouched on failure). */
TSQ_API tsq_status tsq_packed_weights_unpack(const tsq_packed_weights *pw, tsq_tensor *w);

/* ------------------------------------------------------------------ */
/* Thresholds: affine + quantize as integer comparisons                */
/* ------------------------------------------------------------------ */

/* Per output channel c, a hidden layer's float epilogue is
 *
 *     v    = fl(fl((float)acc * alpha[c]) + bias[c])        (two roundings)
 *     code = Q(v) = 0 if v <= eps, else clamp(floor(v * (1/delta) + 1/2), 1, 2^n - 1)
 *
 * (docs/method.md §6.1; Q as in quantizer.h, in float). As a
 * function of the integer acc this is monotone, so it equals counting how
 * many of 2^n - 1 integer thresholds acc passes. tsq_thresholds holds those
 * integers; the equivalence is exact for every int32 acc, ties included,
 * and for alpha > 0, alpha < 0 and alpha = 0 alike. Immutable: shareable. */
typedef struct tsq_thresholds tsq_thresholds;

/*! tsq_thresholds_create() :
 *  Derives the thresholds of `channels` output channels for n = code_bits
 *  (1..8) bit output codes. alpha[channels] are the scales, bias[channels]
 *  the offsets (bias may be NULL for zero offsets). eps and delta hold the
 *  quantizer's parameters, either one value shared by every channel
 *  (qparams = 1) or one per channel (qparams = channels). The arrays are
 *  only read. The object is allocated through ctx, which must outlive it.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, alpha, eps, delta or out),
 *  TSQ_ERR_INVALID (channels < 1 or above 2^31 - 1, code_bits outside 1..8,
 *  qparams neither 1 nor channels, delta <= 0), TSQ_ERR_NOT_FINITE (a NaN
 *  or infinite alpha, bias, eps or delta; the message names it),
 *  TSQ_ERR_NO_MEMORY. Errors are reported on ctx. */
TSQ_API tsq_status tsq_thresholds_create(tsq_context *ctx, int64_t channels,
                                         const float *alpha, const float *bias,
                                         int32_t code_bits, const float *eps,
                                         const float *delta, int64_t qparams,
                                         tsq_thresholds **out);

/*! tsq_thresholds_destroy() : frees the object. Accepts NULL. */
TSQ_API void tsq_thresholds_destroy(tsq_thresholds *th);

/* Keys of tsq_thresholds_get(). */
enum {
    TSQ_THRESHOLDS_CHANNELS = 0x0901,  /* number of channels */
    TSQ_THRESHOLDS_CODE_BITS = 0x0902  /* n */
};

/*! tsq_thresholds_get() : one property (TSQ_THRESHOLDS_* key) into *value.
 *  Thread-safe. @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_thresholds_get(const tsq_thresholds *th, int32_t key,
                                      int64_t *value);

/*! tsq_thresholds_channel() :
 *  Reads the integer form of one channel, so that for every int32 acc
 *
 *      a    = direction > 0 ? acc : -acc - 1          (i.e. ~acc, no overflow)
 *      code = min(#{ m in 1 .. 2^n - 1 : a >= t[m - 1] }, top)
 *
 *  *direction is +1 (alpha > 0 or constant output) or -1 (alpha < 0),
 *  *top the largest code the channel can produce, and t[0 .. 2^n - 2] the
 *  non-decreasing thresholds (capacity entries available; 2^n - 1 needed).
 *  Thread-safe. @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (channel out
 *  of range), TSQ_ERR_TOO_SMALL (capacity < 2^n - 1; nothing written). */
TSQ_API tsq_status tsq_thresholds_channel(const tsq_thresholds *th, int64_t channel,
                                          int32_t *direction, int32_t *top,
                                          int32_t *t, int64_t capacity);

/*! tsq_thresholds_apply() :
 *  Turns accumulators acc (rows x channels int32, row-major, acc_count
 *  entries available) into codes: out is a uint8 tensor with rows x
 *  channels elements (any shape), written row-major. `kernel` selects the
 *  SIMD variant as for tsq_lowbit_gemm (all give the same bits).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (rows < 1, unknown kernel),
 *  TSQ_ERR_TOO_SMALL (acc_count < rows * channels), TSQ_ERR_DTYPE,
 *  TSQ_ERR_SHAPE (out has the wrong element count), TSQ_ERR_UNSUPPORTED
 *  (the forced kernel's instructions are missing). Errors go on ctx; out is
 *  untouched on failure. ctx is used only for messages and is the only
 *  object modified besides out. */
TSQ_API tsq_status tsq_thresholds_apply(tsq_context *ctx, const tsq_thresholds *th,
                                        const int32_t *acc, int64_t acc_count,
                                        int64_t rows, int32_t kernel, tsq_tensor *out);

/* ------------------------------------------------------------------ */
/* Low-bit GEMM                                                        */
/* ------------------------------------------------------------------ */

/*! tsq_lowbit_kernel_select() :
 *  Resolves a kernel request for M rows of n = code_bits bit codes against
 *  pw: TSQ_KERNEL_AUTO gives the kernel tsq_lowbit_gemm would use, a forced
 *  kernel gives itself if this CPU has it. Writes the TSQ_KERNEL_* value to
 *  *chosen. @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown kernel,
 *  m < 1, code_bits outside 1..8), TSQ_ERR_UNSUPPORTED (a forced kernel the
 *  CPU lacks; the message names the missing instructions). Errors on ctx. */
TSQ_API tsq_status tsq_lowbit_kernel_select(tsq_context *ctx, const tsq_packed_weights *pw,
                                            int64_t m, int32_t code_bits, int32_t kernel,
                                            int32_t *chosen);

/*! tsq_lowbit_workspace_size() :
 *  Writes to *bytes the scratch size tsq_lowbit_gemm and
 *  tsq_lowbit_gemm_threshold need for M rows of code_bits codes with this
 *  kernel request and the context's current TSQ_CONTEXT_THREADS. It may be 0.
 *  @return as tsq_lowbit_kernel_select(), plus TSQ_ERR_OVERFLOW. */
TSQ_API tsq_status tsq_lowbit_workspace_size(tsq_context *ctx, const tsq_packed_weights *pw,
                                             int64_t m, int32_t code_bits, int32_t kernel,
                                             uint64_t *bytes);

/*! tsq_lowbit_gemm() :
 *  acc[m][c] = sum_k codes[m][k] * W[k][c] for the packed weights W (K x N).
 *  codes is a uint8 tensor of shape M x K (or 1-D of length K: M = 1), each
 *  value in 0 .. 2^code_bits - 1 (code_bits 1..8). acc receives M x N int32
 *  values row-major; acc_count is the number of int32 it can hold.
 *  workspace: NULL (with workspace_bytes 0) to let the call allocate its
 *  scratch through ctx, or a caller buffer of at least
 *  tsq_lowbit_workspace_size() bytes (no alignment needed) for calls that
 *  allocate nothing. Uses the context's TSQ_CONTEXT_THREADS threads.
 *  Thread-safety: pw may be shared; ctx, acc and workspace must be this
 *  call's own.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE (codes not u8),
 *  TSQ_ERR_SHAPE (codes not M x K), TSQ_ERR_INVALID (code_bits outside 1..8,
 *  a code above 2^code_bits - 1: the message gives row and column, unknown
 *  kernel), TSQ_ERR_OVERFLOW (an accumulator could overflow int32),
 *  TSQ_ERR_TOO_SMALL (acc_count < M * N, or the workspace is too small),
 *  TSQ_ERR_UNSUPPORTED (a forced kernel this CPU lacks), TSQ_ERR_NO_MEMORY.
 *  Errors go on ctx; acc is untouched on failure. */
TSQ_API tsq_status tsq_lowbit_gemm(tsq_context *ctx, const tsq_packed_weights *pw,
                                   const tsq_tensor *codes, int32_t code_bits, int32_t kernel,
                                   int32_t *acc, int64_t acc_count, void *workspace,
                                   uint64_t workspace_bytes);

/*! tsq_lowbit_gemm_threshold() :
 *  The fused hidden layer: as tsq_lowbit_gemm, then th (one channel per
 *  column of W) turns each accumulator into an output code, written to out,
 *  a uint8 tensor with M x N elements (any shape, row-major: M rows of N
 *  channels, e.g. NHWC for a convolution). The int32 accumulators only
 *  live in the workspace, a block of rows at a time.
 *  @return as tsq_lowbit_gemm(), with TSQ_ERR_SHAPE also when th has not
 *  N channels or out has not M x N elements. out is untouched on failure. */
TSQ_API tsq_status tsq_lowbit_gemm_threshold(tsq_context *ctx, const tsq_packed_weights *pw,
                                             const tsq_tensor *codes, int32_t code_bits,
                                             const tsq_thresholds *th, int32_t kernel,
                                             tsq_tensor *out, void *workspace,
                                             uint64_t workspace_bytes);

/* ------------------------------------------------------------------ */
/* im2col on codes                                                     */
/* ------------------------------------------------------------------ */

/* Image layouts, passed as int32_t. */
enum {
    TSQ_LAYOUT_NCHW = 1, /* batch, channel, row, column (column fastest) */
    TSQ_LAYOUT_NHWC = 2  /* batch, row, column, channel (channel fastest) */
};

/*! tsq_im2col_codes() :
 *  Unfolds uint8 codes `in` (4-D, in the given layout: B x C x H x W or
 *  B x H x W x C) into the patch matrix `out` (uint8, 2-D, (B*Ho*Wo) x
 *  (C*kh*kw)), with Ho = (H + 2*pad_h - kh) / stride_h + 1 and likewise Wo.
 *  Row r = (b*Ho + oy)*Wo + ox. The column order follows the layout:
 *  NCHW gives (c, ky, kx) with kx fastest (the order of a C x kh x kw
 *  filter), NHWC gives (ky, kx, c) with c fastest. Positions in the zero
 *  padding get code 0, the code of the value 0.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_INVALID (unknown
 *  layout, kh, kw, stride < 1, pad < 0, pad >= kernel size), TSQ_ERR_SHAPE
 *  (in not 4-D, the window does not fit, out has the wrong shape: the
 *  message gives the expected one). Errors on ctx; out untouched on failure. */
TSQ_API tsq_status tsq_im2col_codes(tsq_context *ctx, const tsq_tensor *in, int32_t layout,
                                    int32_t kh, int32_t kw, int32_t stride_h,
                                    int32_t stride_w, int32_t pad_h, int32_t pad_w,
                                    tsq_tensor *out);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_EXPERIMENTAL */
#endif /* TSQ_EXPERIMENTAL_H */
