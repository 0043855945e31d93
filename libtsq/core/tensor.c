/* Tensors: shape validation with overflow checks, owned or wrapped data. */
#include "internal.h"

#include <math.h>
#include <string.h>

size_t tsq__dtype_size(int32_t dtype)
{
    switch (dtype) {
    case TSQ_DTYPE_F32: return 4;
    case TSQ_DTYPE_U8: return 1;
    case TSQ_DTYPE_I8: return 1;
    default: return 0;
    }
}

static const char *dtype_name(int32_t dtype)
{
    switch (dtype) {
    case TSQ_DTYPE_F32: return "f32";
    case TSQ_DTYPE_U8: return "u8";
    case TSQ_DTYPE_I8: return "i8";
    default: return "unknown";
    }
}

tsq_status tsq__shape_check(const tsq__object *obj, const char *where, int32_t dtype,
                            int32_t ndim, const int64_t *shape, int64_t *numel,
                            uint64_t *nbytes)
{
    int64_t n = 1, bytes;
    int32_t i;
    size_t esize = tsq__dtype_size(dtype);
    TSQ_RETURN_ERROR_IF(!esize, obj, TSQ_ERR_DTYPE, "%s: unknown dtype %d", where, (int)dtype);
    TSQ_RETURN_ERROR_IF(ndim < 1 || ndim > TSQ_MAX_DIMS, obj, TSQ_ERR_SHAPE,
                        "%s: ndim %d is outside 1..%d", where, (int)ndim, TSQ_MAX_DIMS);
    for (i = 0; i < ndim; i++) {
        TSQ_RETURN_ERROR_IF(shape[i] < 1, obj, TSQ_ERR_SHAPE,
                            "%s: dimension %d is %lld, must be >= 1", where, (int)i,
                            (long long)shape[i]);
        TSQ_RETURN_ERROR_IF(!tsq__mul_i64(n, shape[i], &n), obj, TSQ_ERR_OVERFLOW,
                            "%s: element count overflows at dimension %d", where, (int)i);
    }
    TSQ_RETURN_ERROR_IF(!tsq__mul_i64(n, (int64_t)esize, &bytes) ||
                            (uint64_t)bytes > (uint64_t)SIZE_MAX,
                        obj, TSQ_ERR_OVERFLOW, "%s: byte size of %lld elements overflows", where,
                        (long long)n);
    *numel = n;
    *nbytes = (uint64_t)bytes;
    return TSQ_OK;
}

tsq_status tsq__expect_dtype(const tsq__object *obj, const char *where, const char *name,
                             const tsq_tensor *t, int32_t dtype)
{
    TSQ_RETURN_ERROR_IF(!t, obj, TSQ_ERR_NULL, "%s: %s is NULL", where, name);
    TSQ_RETURN_ERROR_IF(t->dtype != dtype, obj, TSQ_ERR_DTYPE, "%s: %s has dtype %s, expected %s",
                        where, name, dtype_name(t->dtype), dtype_name(dtype));
    return TSQ_OK;
}

int tsq__all_finite(const float *x, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static tsq_status make(tsq_context *ctx, int32_t dtype, int32_t ndim, const int64_t *shape,
                       void *data, uint64_t nbytes, int wrap, tsq_tensor **out)
{
    tsq_tensor *t;
    int64_t numel;
    uint64_t need;
    const char *where = wrap ? "tensor_wrap" : "tensor_create";

    if (!out)
        return ctx ? tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where) : TSQ_ERR_NULL;
    *out = NULL;
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!shape, &ctx->obj, TSQ_ERR_NULL, "%s: shape is NULL", where);
    TSQ_FORWARD_IF_ERROR(tsq__shape_check(&ctx->obj, where, dtype, ndim, shape, &numel, &need));
    TSQ_RETURN_ERROR_IF(wrap && !data, &ctx->obj, TSQ_ERR_NULL, "%s: data is NULL", where);
    TSQ_RETURN_ERROR_IF(wrap && ((uintptr_t)data & (tsq__dtype_size(dtype) - 1)) != 0, &ctx->obj,
                        TSQ_ERR_INVALID,
                        "%s: data at %p is not aligned to the %u bytes of dtype %s", where, data,
                        (unsigned)tsq__dtype_size(dtype), dtype_name(dtype));
    TSQ_RETURN_ERROR_IF(wrap && nbytes < need, &ctx->obj, TSQ_ERR_TOO_SMALL,
                        "%s: buffer has %llu bytes, shape needs %llu", where,
                        (unsigned long long)nbytes, (unsigned long long)need);
    t = tsq__alloc(ctx, sizeof *t);
    TSQ_RETURN_ERROR_IF(!t, &ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the handle",
                        where);
    memset(t, 0, sizeof *t);
    tsq__object_init(&t->obj, ctx);
    if (!wrap) {
        data = tsq__alloc(ctx, (size_t)need);
        if (!data) {
            tsq__free(ctx, t);
            return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for %llu bytes",
                             where, (unsigned long long)need);
        }
        memset(data, 0, (size_t)need);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof shape[0]);
    t->numel = numel;
    t->data = data;
    t->owns_data = !wrap;
    tsq__clear(&ctx->obj);
    *out = t;
    return TSQ_OK;
}

tsq_status tsq_tensor_create(tsq_context *ctx, int32_t dtype, int32_t ndim,
                             const int64_t *shape, tsq_tensor **out)
{
    return make(ctx, dtype, ndim, shape, NULL, 0, 0, out);
}

tsq_status tsq_tensor_wrap(tsq_context *ctx, int32_t dtype, int32_t ndim,
                           const int64_t *shape, void *data, uint64_t nbytes,
                           tsq_tensor **out)
{
    return make(ctx, dtype, ndim, shape, data, nbytes, 1, out);
}

void tsq_tensor_destroy(tsq_tensor *t)
{
    if (!t)
        return;
    if (t->owns_data)
        tsq__free(t->obj.ctx, t->data);
    tsq__free(t->obj.ctx, t);
}

const char *tsq_tensor_errmsg(const tsq_tensor *t)
{
    return t ? t->obj.msg : "no tensor";
}

uint64_t tsq__tensor_bytes(const tsq_tensor *t)
{
    return t ? (uint64_t)t->numel * tsq__dtype_size(t->dtype) : 0;
}

tsq_status tsq__tensor_dup(tsq_context *ctx, const tsq_tensor *src, tsq_tensor **out)
{
    tsq_status st;
    *out = NULL;
    if (!src)
        return TSQ_OK;
    st = tsq_tensor_create(ctx, src->dtype, src->ndim, src->shape, out);
    if (st == TSQ_OK)
        memcpy((*out)->data, src->data, (size_t)tsq__tensor_bytes(src));
    return st;
}

tsq_status tsq_tensor_dtype(const tsq_tensor *t, int32_t *dtype)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!dtype, &t->obj, TSQ_ERR_NULL, "tensor_dtype: dtype is NULL");
    *dtype = t->dtype;
    return TSQ_OK;
}

tsq_status tsq_tensor_ndim(const tsq_tensor *t, int32_t *ndim)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!ndim, &t->obj, TSQ_ERR_NULL, "tensor_ndim: ndim is NULL");
    *ndim = t->ndim;
    return TSQ_OK;
}

tsq_status tsq_tensor_dim(const tsq_tensor *t, int32_t axis, int64_t *size)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!size, &t->obj, TSQ_ERR_NULL, "tensor_dim: size is NULL");
    TSQ_RETURN_ERROR_IF(axis < 0 || axis >= t->ndim, &t->obj, TSQ_ERR_INVALID,
                        "tensor_dim: axis %d outside 0..%d", (int)axis, (int)t->ndim - 1);
    *size = t->shape[axis];
    return TSQ_OK;
}

tsq_status tsq_tensor_numel(const tsq_tensor *t, int64_t *count)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!count, &t->obj, TSQ_ERR_NULL, "tensor_numel: count is NULL");
    *count = t->numel;
    return TSQ_OK;
}

tsq_status tsq_tensor_nbytes(const tsq_tensor *t, uint64_t *nbytes)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!nbytes, &t->obj, TSQ_ERR_NULL, "tensor_nbytes: nbytes is NULL");
    *nbytes = tsq__tensor_bytes(t);
    return TSQ_OK;
}

tsq_status tsq_tensor_shape(const tsq_tensor *t, int64_t *shape, int32_t capacity,
                            int32_t *ndim)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!shape || !ndim, &t->obj, TSQ_ERR_NULL, "tensor_shape: %s is NULL",
                        shape ? "ndim" : "shape");
    TSQ_RETURN_ERROR_IF(capacity < t->ndim, &t->obj, TSQ_ERR_TOO_SMALL,
                        "tensor_shape: capacity %d < ndim %d", (int)capacity, (int)t->ndim);
    memcpy(shape, t->shape, (size_t)t->ndim * sizeof shape[0]);
    *ndim = t->ndim;
    return TSQ_OK;
}

tsq_status tsq_tensor_data(tsq_tensor *t, void **data)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!data, &t->obj, TSQ_ERR_NULL, "tensor_data: data is NULL");
    *data = t->data;
    return TSQ_OK;
}

tsq_status tsq_tensor_copy_in(tsq_tensor *t, const void *src, uint64_t nbytes)
{
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!src, &t->obj, TSQ_ERR_NULL, "tensor_copy_in: src is NULL");
    TSQ_RETURN_ERROR_IF(nbytes != tsq__tensor_bytes(t), &t->obj, TSQ_ERR_TOO_SMALL,
                        "tensor_copy_in: got %llu bytes, tensor holds %llu",
                        (unsigned long long)nbytes, (unsigned long long)tsq__tensor_bytes(t));
    memmove(t->data, src, (size_t)nbytes);
    tsq__clear(&t->obj);
    return TSQ_OK;
}

tsq_status tsq_tensor_copy_out(const tsq_tensor *t, void *dst, uint64_t nbytes)
{
    const tsq__object *obj;
    if (!t)
        return TSQ_ERR_NULL;
    obj = &t->obj;
    TSQ_RETURN_ERROR_IF(!dst, obj, TSQ_ERR_NULL, "tensor_copy_out: dst is NULL");
    TSQ_RETURN_ERROR_IF(nbytes < tsq__tensor_bytes(t), obj, TSQ_ERR_TOO_SMALL,
                        "tensor_copy_out: buffer has %llu bytes, tensor holds %llu",
                        (unsigned long long)nbytes, (unsigned long long)tsq__tensor_bytes(t));
    memmove(dst, t->data, (size_t)tsq__tensor_bytes(t));
    tsq__clear(obj);
    return TSQ_OK;
}

tsq_status tsq_tensor_reshape(tsq_tensor *t, int32_t ndim, const int64_t *shape)
{
    int64_t numel;
    uint64_t nbytes;
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!shape, &t->obj, TSQ_ERR_NULL, "tensor_reshape: shape is NULL");
    TSQ_FORWARD_IF_ERROR(
        tsq__shape_check(&t->obj, "tensor_reshape", t->dtype, ndim, shape, &numel, &nbytes));
    TSQ_RETURN_ERROR_IF(numel != t->numel, &t->obj, TSQ_ERR_SHAPE,
                        "tensor_reshape: new shape has %lld elements, tensor has %lld",
                        (long long)numel, (long long)t->numel);
    t->ndim = ndim;
    memset(t->shape, 0, sizeof t->shape);
    memcpy(t->shape, shape, (size_t)ndim * sizeof shape[0]);
    tsq__clear(&t->obj);
    return TSQ_OK;
}

tsq_status tsq_tensor_fill(tsq_tensor *t, double value)
{
    int64_t i;
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!isfinite(value), &t->obj, TSQ_ERR_NOT_FINITE,
                        "tensor_fill: value is not finite");
    if (t->dtype == TSQ_DTYPE_F32) {
        float *x = t->data;
        TSQ_RETURN_ERROR_IF(fabs(value) > 3.4028234663852886e38, &t->obj, TSQ_ERR_INVALID,
                            "tensor_fill: %g overflows float", value);
        for (i = 0; i < t->numel; i++)
            x[i] = (float)value;
    } else {
        double lo = t->dtype == TSQ_DTYPE_U8 ? 0 : -128, hi = t->dtype == TSQ_DTYPE_U8 ? 255 : 127;
        TSQ_RETURN_ERROR_IF(value != floor(value) || value < lo || value > hi, &t->obj,
                            TSQ_ERR_INVALID, "tensor_fill: %g is not an integer in %g..%g", value,
                            lo, hi);
        if (t->dtype == TSQ_DTYPE_U8)
            memset(t->data, (int)(uint8_t)value, (size_t)t->numel);
        else
            memset(t->data, (int)(uint8_t)(int8_t)value, (size_t)t->numel);
    }
    tsq__clear(&t->obj);
    return TSQ_OK;
}

tsq_status tsq_tensor_count_nonfinite(const tsq_tensor *t, int64_t *count)
{
    int64_t i, n = 0;
    if (!t)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!count, &t->obj, TSQ_ERR_NULL, "tensor_count_nonfinite: count is NULL");
    if (t->dtype == TSQ_DTYPE_F32) {
        const float *x = t->data;
        for (i = 0; i < t->numel; i++)
            n += !isfinite(x[i]);
    }
    *count = n;
    return TSQ_OK;
}
