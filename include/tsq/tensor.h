/*
 * libtsq - tensor.h: dense tensors of float32, uint8 codes and int8 weights.
 *
 * A tensor has 1 to 4 dimensions, stored contiguously in row-major order
 * (NCHW for images: the last dimension varies fastest). It either owns its
 * memory (tsq_tensor_create) or wraps memory the caller owns (tsq_tensor_wrap)
 * without copying; a wrapped buffer must outlive the tensor.
 * A tensor must not be used by two threads at once; distinct tensors may.
 */
#ifndef TSQ_TENSOR_H
#define TSQ_TENSOR_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsq_tensor tsq_tensor;

/* Element types. */
enum {
    TSQ_DTYPE_F32 = 1, /* float32: weights, activations, gradients */
    TSQ_DTYPE_U8 = 2,  /* uint8: activation codes 0 .. 2^n - 1 */
    TSQ_DTYPE_I8 = 3   /* int8: low-bit weights */
};

/* The largest number of dimensions. */
#define TSQ_MAX_DIMS 4

/*! tsq_tensor_create() :
 *  Creates a tensor that owns zero-filled memory of the given type and shape.
 *  shape[0..ndim-1] must each be >= 1; the byte size must fit in int64.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, shape or out), TSQ_ERR_DTYPE (unknown
 *  dtype), TSQ_ERR_SHAPE (ndim not in 1..4 or a dimension < 1),
 *  TSQ_ERR_OVERFLOW (the element or byte count overflows), TSQ_ERR_NO_MEMORY.
 *  On failure *out is NULL and the message is on the context. */
TSQ_API tsq_status tsq_tensor_create(tsq_context *ctx, int32_t dtype, int32_t ndim,
                                     const int64_t *shape, tsq_tensor **out);

/*! tsq_tensor_wrap() :
 *  Creates a tensor over caller memory `data` of `nbytes` bytes, without
 *  copying. nbytes must be at least the tensor's byte size. The caller keeps
 *  ownership; data must stay valid until the tensor is destroyed and must be
 *  aligned for the element type (f32: an address that is a multiple of 4).
 *  @return as tsq_tensor_create(), plus TSQ_ERR_NULL (data),
 *  TSQ_ERR_TOO_SMALL (nbytes short), TSQ_ERR_INVALID (data misaligned). */
TSQ_API tsq_status tsq_tensor_wrap(tsq_context *ctx, int32_t dtype, int32_t ndim,
                                   const int64_t *shape, void *data, uint64_t nbytes,
                                   tsq_tensor **out);

/*! tsq_tensor_destroy() : frees an owned tensor's memory and the handle.
 *  Wrapped memory is left alone. Accepts NULL. */
TSQ_API void tsq_tensor_destroy(tsq_tensor *t);

/*! tsq_tensor_errmsg() :
 *  @return the message of the last failed call on t ("" if none), owned by t
 *  and valid until its next call; a static "no tensor" for NULL. */
TSQ_API const char *tsq_tensor_errmsg(const tsq_tensor *t);

/*! Queries. Each writes one value and returns TSQ_OK, or TSQ_ERR_NULL when t
 *  or the output pointer is NULL (a NULL output leaves a message on t).
 *  tsq_tensor_dim also returns TSQ_ERR_INVALID for an axis outside
 *  0..ndim-1. */
TSQ_API tsq_status tsq_tensor_dtype(const tsq_tensor *t, int32_t *dtype);
TSQ_API tsq_status tsq_tensor_ndim(const tsq_tensor *t, int32_t *ndim);
TSQ_API tsq_status tsq_tensor_dim(const tsq_tensor *t, int32_t axis, int64_t *size);
TSQ_API tsq_status tsq_tensor_numel(const tsq_tensor *t, int64_t *count);
TSQ_API tsq_status tsq_tensor_nbytes(const tsq_tensor *t, uint64_t *nbytes);

/*! tsq_tensor_shape() :
 *  Writes the ndim dimensions to shape[0..ndim-1] and ndim to *ndim.
 *  `capacity` is the number of entries shape can hold (TSQ_MAX_DIMS always
 *  suffices). @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_TOO_SMALL. */
TSQ_API tsq_status tsq_tensor_shape(const tsq_tensor *t, int64_t *shape, int32_t capacity,
                                    int32_t *ndim);

/*! tsq_tensor_data() :
 *  Writes the address of the first element to *data. It stays valid while
 *  the tensor lives and is not reshaped. The caller may read and write it.
 *  @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_tensor_data(tsq_tensor *t, void **data);

/*! tsq_tensor_copy_in() :
 *  Copies exactly the tensor's byte size from src into the tensor.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_TOO_SMALL when
 *  nbytes differs from the tensor's byte size (nothing is copied then). */
TSQ_API tsq_status tsq_tensor_copy_in(tsq_tensor *t, const void *src, uint64_t nbytes);

/*! tsq_tensor_copy_out() :
 *  Copies the tensor's bytes to dst, which holds nbytes bytes.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_TOO_SMALL (nbytes < byte size;
 *  nothing is written then). */
TSQ_API tsq_status tsq_tensor_copy_out(const tsq_tensor *t, void *dst, uint64_t nbytes);

/*! tsq_tensor_reshape() :
 *  Gives the tensor a new shape with the same number of elements; the data
 *  are not moved. @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_SHAPE (bad ndim, a
 *  dimension < 1, or a different element count), TSQ_ERR_OVERFLOW. On
 *  failure the tensor is unchanged. */
TSQ_API tsq_status tsq_tensor_reshape(tsq_tensor *t, int32_t ndim, const int64_t *shape);

/*! tsq_tensor_fill() :
 *  Sets every element to `value` (converted to the tensor's type; for u8/i8
 *  it must be an integer in the type's range).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (f32: |value| > FLT_MAX;
 *  u8/i8: not an integer in range), TSQ_ERR_NOT_FINITE (NaN, +-Inf). */
TSQ_API tsq_status tsq_tensor_fill(tsq_tensor *t, double value);

/*! tsq_tensor_count_nonfinite() :
 *  Writes the number of NaN or +-Inf elements to *count (always 0 for u8 and
 *  i8 tensors). @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_tensor_count_nonfinite(const tsq_tensor *t, int64_t *count);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_TENSOR_H */
