/*
 * The activation layouts of the inference plan's fused path, bit planes
 * (for the VPOPCNT kernel), bytes (for the VNNI kernel) and pairs (for the
 * AVX2 table kernel: tsq__bp_geom_pairs below), and their
 * kernels (bitplane_vpopcnt.c, AVX-512; bitplane.c, the portable reference
 * the tests compare them with). docs/kernels.md, "Activations in the
 * kernel's format", draws the layouts.
 *
 * One image of n-bit codes of C channels on an H x W grid is stored as n
 * planes, plane b holding bit b of every code, NHWC inside a plane, with a
 * zero border of `pad` pixels on each side (the padding of the convolution
 * that reads it) and ceil(C / 8) bytes per pixel (channel c is bit c % 8 of
 * byte c / 8; bits of channels >= C are zero):
 *
 *     img[b * plane + ((y + pad) * (W + 2 pad) + x + pad) * cb + c / 8]
 *
 * so a row of a kw-wide convolution window is kw * cb contiguous bytes of
 * one plane row, and the im2col row of an output pixel (the popcount
 * kernel's operand, k in (ky, kx, c) order with c padded to cb * 8) is kh
 * copies: it is built per tile of output pixels, never for the batch. With
 * pad = 0 a whole plane is the k-words of a dense layer's input in
 * (h, w, c) order, used in place.
 */
#ifndef TSQ_KERNELS_BITPLANE_H
#define TSQ_KERNELS_BITPLANE_H

#include "kernels/conv.h"
#include "kernels/kernels_internal.h"

typedef struct {
    int64_t c, h, w, pad;
    int32_t nb;     /* code bits */
    int bytes;      /* the byte layout, 1 code per byte, or 2: the pair layout (else bit planes) */
    int32_t planes; /* nb planes of bits, or 1 of bytes (byte and pair layouts) */
    int64_t cb;     /* bytes per pixel in a plane: ceil(c / 8), c (bytes) or c / 2 (pairs) */
    int64_t kpix;   /* k entries per pixel: cb * 8 (bits) or c (bytes, pairs) */
    int64_t row;    /* bytes per padded row: (w + 2 pad) cb */
    int64_t plane;  /* bytes per plane, a multiple of 8 */
    int64_t image;  /* planes * plane */
} tsq__bp_geom;

static inline void tsq__bp_geom_fill(tsq__bp_geom *g, int64_t c, int64_t h, int64_t w,
                                     int64_t pad, int32_t nb, int bytes)
{
    g->c = c;
    g->h = h;
    g->w = w;
    g->pad = pad;
    g->nb = nb;
    g->bytes = bytes;
    g->planes = bytes ? 1 : nb;
    g->cb = bytes == 2 ? c / 2 : bytes ? c : (c + 7) / 8;
    g->kpix = bytes ? c : g->cb * 8;
    g->row = (w + 2 * pad) * g->cb;
    g->plane = ((h + 2 * pad) * g->row + 7) / 8 * 8;
    g->image = g->planes * g->plane;
}

/* Bit planes of nb-bit codes. */
static inline void tsq__bp_geom_init(tsq__bp_geom *g, int64_t c, int64_t h, int64_t w,
                                     int64_t pad, int32_t nb)
{
    tsq__bp_geom_fill(g, c, h, w, pad, nb, 0);
}

/* The byte layout (for the VNNI kernel): one code per byte, the same
 * padded NHWC order, one "plane"; the gather then builds im2col rows of
 * bytes (kwords * 8 bytes each) the same way. */
static inline void tsq__bp_geom_bytes(tsq__bp_geom *g, int64_t c, int64_t h, int64_t w,
                                      int64_t pad, int32_t nb)
{
    tsq__bp_geom_fill(g, c, h, w, pad, nb, 1);
}

/* The pair layout (for the AVX2 pair kernel, gemm_pairs_avx2.c): codes of
 * at most 2 bits, c even, channels 2j and 2j + 1 of a pixel in byte j as
 * 16 (a_2j + 4 a_2j+1), the same padded NHWC order otherwise; k stays
 * (ky, kx, c), two per byte. */
static inline void tsq__bp_geom_pairs(tsq__bp_geom *g, int64_t c, int64_t h, int64_t w,
                                      int64_t pad, int32_t nb)
{
    tsq__bp_geom_fill(g, c, h, w, pad, nb, 2);
}

/* The byte of a pixel holding channel c's code, and the code's shift in
 * it, in the byte or pair layout. */
static inline int64_t tsq__bp_byte_of(const tsq__bp_geom *g, int64_t c)
{
    return g->bytes == 2 ? c / 2 : c;
}
static inline int tsq__bp_shift_of(const tsq__bp_geom *g, int64_t c)
{
    return g->bytes == 2 ? 4 + 2 * (int)(c % 2) : 0;
}

/* The packed-weight row (k index) of input channel ci at window tap
 * (ky, kx) of a kw-wide window, for an input of geometry g. */
static inline int64_t tsq__bp_k(const tsq__bp_geom *g, int64_t kw, int64_t ky, int64_t kx,
                                int64_t ci)
{
    return (ky * kw + kx) * g->kpix + ci;
}

/* A convolution's window over a bit-plane input. */
typedef struct {
    int64_t kh, kw, stride, oh, ow;
    int64_t kwords; /* of one im2col row: ceil(kh kw cb / 8) */
} tsq__bp_window;

/* Output pixels q0 .. q0 + rows - 1 (row-major over oh x ow) of one image
 * img as rows of activation bit planes (kernels_internal.h's xplanes
 * layout, kwords per plane; for the byte layout, rows of kwords * 8
 * bytes). The AVX-512 version may read up to
 * TSQ__BP_SLACK bytes past img's last byte and write as many past xp's
 * last row (their contents are unspecified there): both buffers need that
 * slack. */
#define TSQ__BP_SLACK 32
void tsq__bp_gather_ref(const tsq__bp_geom *g, const tsq__bp_window *win, const uint8_t *img,
                        int64_t q0, int64_t rows, uint64_t *xp);
void tsq__bp_gather_avx512(const tsq__bp_geom *g, const tsq__bp_window *win,
                           const uint8_t *img, int64_t q0, int64_t rows, uint64_t *xp);

/* NHWC codes of one image (g->h x g->w x g->c, each < 2^nb) into img
 * (g->image bytes, border and padding bits included). */
void tsq__bp_from_codes_ref(const tsq__bp_geom *g, const uint8_t *codes, uint8_t *img);
void tsq__bp_from_codes_avx512(const tsq__bp_geom *g, const uint8_t *codes, uint8_t *img);

/* The threshold epilogue into bit planes: the accumulators of output rows
 * y0 .. y0 + nrows - 1 (full rows of width ow, acc row stride ldacc, one
 * int32 per channel) become codes (tsq__thresholds_apply_ref's), written as
 * bits of the interior of img (geometry og, og->c channels). pool 1: 2 x 2
 * max-pooling, stride 2, fused: the output pixel (y/2, x/2) gets the
 * largest code of its window (y0 and nrows even, or the last odd row
 * dropped as a floor pool does). Only interior bytes are written; the
 * caller zeroes the border once. */
void tsq__bp_epilogue_ref(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                          int64_t y0, int64_t nrows, int64_t ow, int pool,
                          const tsq__bp_geom *og, uint8_t *img);
void tsq__bp_epilogue_avx512(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                             int64_t y0, int64_t nrows, int64_t ow, int pool,
                             const tsq__bp_geom *og, uint8_t *img);
/* The same into the byte or pair layout (og from tsq__bp_geom_bytes or
 * tsq__bp_geom_pairs): the codes themselves, max-pooled when pool is set
 * (the AVX-512 version: the byte layout only). */
void tsq__bp_epilogue_bytes_ref(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                int64_t y0, int64_t nrows, int64_t ow, int pool,
                                const tsq__bp_geom *og, uint8_t *img);
void tsq__bp_epilogue_bytes_avx512(const tsq_thresholds *th, const int32_t *acc,
                                   int64_t ldacc, int64_t y0, int64_t nrows, int64_t ow,
                                   int pool, const tsq__bp_geom *og, uint8_t *img);
void tsq__bp_epilogue_bytes_avx2(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                                 int64_t y0, int64_t nrows, int64_t ow, int pool,
                                 const tsq__bp_geom *og, uint8_t *img);
/* NHWC codes of one image into the byte layout (border zeroed). */
void tsq__bp_bytes_from_codes(const tsq__bp_geom *g, const uint8_t *codes, uint8_t *img);

/* The float front of a network into bit planes: one image of float NCHW
 * values x (g->c x g->h x g->w) through the per-channel affine a x + b
 * (a NULL: none), then max(., 0) when relu is set, then the quantizer of
 * channel c (eps, inv_delta, maxcode; kernels/encode.h), as the separate
 * float stages compute them, bit for bit; written to img (g->image bytes,
 * border included). The AVX-512 version takes g->nb of 1 or 2 (others go
 * to the reference). */
void tsq__bp_encode_ref(const tsq__bp_geom *g, const float *x, const float *a, const float *b,
                        int relu, const float *eps, const float *inv_delta,
                        const int32_t *maxcode, uint8_t *img);
void tsq__bp_encode_avx512(const tsq__bp_geom *g, const float *x, const float *a,
                           const float *b, int relu, const float *eps, const float *inv_delta,
                           const int32_t *maxcode, uint8_t *img);

/* The same front into the byte layout (g from tsq__bp_geom_bytes). */
void tsq__bp_encode_bytes_ref(const tsq__bp_geom *g, const float *x, const float *a,
                              const float *b, int relu, const float *eps,
                              const float *inv_delta, const int32_t *maxcode, uint8_t *img);
void tsq__bp_encode_bytes_avx512(const tsq__bp_geom *g, const float *x, const float *a,
                                 const float *b, int relu, const float *eps,
                                 const float *inv_delta, const int32_t *maxcode, uint8_t *img);

/* The front with the network's first convolution before it: the
 * convolution computed directly (conv_direct.c; tsq__conv_direct_runs, one
 * chain: k <= TSQ__CONV_DIRECT_K),
 * then the front above, per channel. */
typedef struct tsq__conv_front {
    const tsq__conv_geom *g;
    const float *wt;       /* the weights tap-major, k x ld, zero beyond cout */
    int64_t ld;            /* cout rounded up to 16 */
    const float *bias;     /* cout, or NULL */
    const float *a, *b;    /* the affine per channel, or a = NULL */
    int relu;
    const float *eps, *inv_delta;
    const int32_t *maxcode;
    int short_form;        /* tsq__front_short_form(eps, inv_delta, cout), decided once */
} tsq__conv_front;
/* Whether a front may leave out the relu and the clamp at code 1 with no
 * code changing: every channel has eps >= 0 (a value <= 0 is then at most
 * eps either way) and floor(eps inv + 1/2) >= 1 with inv > 0 (every value
 * above eps then rounds to a code >= 1, rounding being monotone). The
 * same float operations as the encoder's, so the test is exact. */
int tsq__front_short_form(const float *eps, const float *inv_delta, int64_t channels);
/* One image x (g->cin x g->h x g->w) into the byte layout og (og->c =
 * g->cout, og->h x og->w = g->oh x g->ow): the codes of the separate
 * stages (tsq__conv_direct_ref, then tsq__bp_encode_bytes_ref), bit for
 * bit, without storing the convolution's floats. scratch:
 * tsq__conv_direct_ws_floats(g) floats. */
void tsq__conv_front_bytes_avx512(const tsq__conv_front *f, const float *x,
                                  const tsq__bp_geom *og, uint8_t *img, float *scratch);
void tsq__conv_front_bytes_avx2(const tsq__conv_front *f, const float *x,
                                const tsq__bp_geom *og, uint8_t *img, float *scratch);

#endif /* TSQ_KERNELS_BITPLANE_H */
