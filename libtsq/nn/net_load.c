/*
 * How a tsq_net is rebuilt from a .tsq model file: each record of
 * io/model_records.h checked against its kind's entry in nn/net_records.h,
 * the layer made through the public constructors, then its options and
 * tensors filled (tsq_net_load, tsq_net_load_file). The writer is
 * net_records.c.
 */
#include "nn/net_records.h"

#include <stdio.h>
#include <string.h>

typedef struct load_state {
    tsq_context *ctx;
    tsq_net *net;
} load_state;

/* A call into the layer API failed while building the net: out-of-memory
 * stays out-of-memory, anything else means the file holds a bad value. */
static tsq_status relay(const tsq__model_cursor *cur, tsq_status st, const char *what,
                        const char *why)
{
    if (st == TSQ_ERR_NO_MEMORY)
        return tsq__fail(&cur->ctx->obj, TSQ_ERR_NO_MEMORY,
                         "%s: layer %d: %s: out of memory", cur->where, (int)cur->record, what);
    return tsq__model_fail(cur, "%s: %s", what, why);
}

static int64_t config_of(const tsq__layer_rec *rec, const tsq__kind_spec *spec, int32_t key)
{
    int32_t i;
    for (i = 0; i < spec->nconfig; i++)
        if (spec->config[i] == key)
            return rec->attrs[i];
    return 0;
}

/* The element count of the layer's main weight as its config implies, so
 * that a hostile config cannot make the constructor allocate more than the
 * file can fill (-1 on overflow). */
static int64_t implied_weight_count(const tsq__layer_rec *rec, const tsq__kind_spec *spec)
{
    int64_t n = config_of(rec, spec, TSQ_LAYER_INFO_IN_CHANNELS);
    if (!tsq__mul_i64(n, config_of(rec, spec, TSQ_LAYER_INFO_OUT_CHANNELS), &n))
        return -1;
    if (rec->kind == TSQ_LAYER_CONV2D || rec->kind == TSQ_LAYER_LOWBIT_CONV2D) {
        if (!tsq__mul_i64(n, config_of(rec, spec, TSQ_LAYER_INFO_KERNEL_H), &n) ||
            !tsq__mul_i64(n, config_of(rec, spec, TSQ_LAYER_INFO_KERNEL_W), &n))
            return -1;
    }
    return n;
}

static tsq_status check_sizes(const tsq__model_cursor *cur, const tsq__layer_rec *rec,
                              const tsq__kind_spec *spec)
{
    const tsq__rec_array *a;
    int64_t need = implied_weight_count(rec, spec), bits;
    if (rec->kind == TSQ_LAYER_DENSE || rec->kind == TSQ_LAYER_CONV2D) {
        a = tsq__rec_find_array(rec, "weight");
        if (!a || a->numel != need)
            return tsq__model_fail(cur, "weight has %lld elements, config implies %lld",
                                   a ? (long long)a->numel : 0LL, (long long)need);
    } else if (tsq__kind_is_lowbit(rec->kind)) {
        bits = config_of(rec, spec, TSQ_LAYER_INFO_WEIGHT_BITS);
        a = tsq__rec_find_array(rec, "weight_codes");
        if (bits < 2 || bits > 8)
            return tsq__model_fail(cur, "weight bits %lld", (long long)bits);
        if (!a || a->numel != need || a->encoding != TSQ__REC_PACKED ||
            a->nbytes != tsq__packed_bytes(need, (int32_t)bits))
            return tsq__model_fail(cur, "weight codes do not match %lld %lld-bit weights",
                                   (long long)need, (long long)bits);
    } else if (rec->kind == TSQ_LAYER_BATCHNORM) {
        a = tsq__rec_find_array(rec, "gamma");
        if (!a || a->numel != rec->attrs[0])
            return tsq__model_fail(cur, "batch-norm gamma does not match %lld channels",
                                   (long long)rec->attrs[0]);
    }
    return TSQ_OK;
}

static tsq_status create_layer(const tsq__model_cursor *cur, const tsq__layer_rec *rec,
                               tsq_layer **out)
{
    const int64_t *c = rec->attrs;
    tsq_context *ctx = cur->ctx;
    tsq_status st;
    int32_t bits;
    float eps, delta;
    switch (rec->kind) {
    case TSQ_LAYER_DENSE: st = tsq_layer_dense_create(ctx, c[0], c[1], out); break;
    case TSQ_LAYER_CONV2D:
        st = tsq_layer_conv2d_create(ctx, c[0], c[1], c[2], c[3], c[4], c[5], out);
        break;
    case TSQ_LAYER_BATCHNORM: st = tsq_layer_batchnorm_create(ctx, c[0], out); break;
    case TSQ_LAYER_RELU: st = tsq_layer_relu_create(ctx, out); break;
    case TSQ_LAYER_MAXPOOL2D: st = tsq_layer_maxpool2d_create(ctx, c[0], c[1], out); break;
    case TSQ_LAYER_GLOBAL_AVGPOOL: st = tsq_layer_global_avgpool_create(ctx, out); break;
    case TSQ_LAYER_FLATTEN: st = tsq_layer_flatten_create(ctx, out); break;
    case TSQ_LAYER_LOWBIT_DENSE:
        st = tsq_layer_lowbit_dense_create(ctx, c[0], c[1], (int32_t)c[2], out);
        break;
    case TSQ_LAYER_LOWBIT_CONV2D:
        st = tsq_layer_lowbit_conv2d_create(ctx, c[0], c[1], c[2], c[3], c[4], c[5],
                                            (int32_t)c[6], out);
        break;
    case TSQ_LAYER_ACT_QUANT:
        tsq__rec_channel(rec, 0, &bits, &eps, &delta);
        st = tsq_layer_act_quant_create(ctx, bits, eps, delta, out);
        break;
    default: return tsq__model_fail(cur, "unknown layer kind %d", (int)rec->kind);
    }
    if (st != TSQ_OK) {
        /* the constructor's message says which value it refused */
        char why[TSQ_MSG_CAP];
        snprintf(why, sizeof why, "%s", tsq_context_errmsg(ctx));
        return relay(cur, st, tsq_layer_kind_name(rec->kind), why);
    }
    return TSQ_OK;
}

/* Copies a stored float array into the layer's tensor of the same name. */
static tsq_status fill_float(const tsq__model_cursor *cur, const tsq__rec_array *a,
                             tsq_tensor *dst)
{
    int64_t numel = 0, bad;
    int32_t dtype = 0;
    float *x = NULL;
    tsq_tensor_numel(dst, &numel);
    tsq_tensor_dtype(dst, &dtype);
    if (dtype != TSQ_DTYPE_F32 || a->dtype != TSQ_DTYPE_F32 || a->encoding != TSQ__REC_RAW ||
        a->numel != numel)
        return tsq__model_fail(cur, "tensor '%s' does not fit the layer (%lld elements stored, "
                               "%lld expected)", a->name, (long long)a->numel, (long long)numel);
    tsq_tensor_data(dst, (void **)&x);
    bad = tsq__rec_read_f32(a, x);
    if (bad >= 0)
        return tsq__model_fail(cur, "tensor '%s' holds a non-finite value at %lld", a->name,
                               (long long)bad);
    return TSQ_OK;
}

/* A variance below 0 is corrupt data: eval mode would divide by the square
 * root of a negative number, and folding would put NaN into the weights. */
static tsq_status check_variance(const tsq__model_cursor *cur, tsq_tensor *var)
{
    const float *v = NULL;
    int64_t n = 0, i;
    tsq_tensor_data(var, (void **)&v);
    tsq_tensor_numel(var, &n);
    for (i = 0; i < n; i++)
        if (!(v[i] >= 0.0f))
            return tsq__model_fail(cur, "running_var[%lld] is %g, below 0", (long long)i, v[i]);
    return TSQ_OK;
}

static tsq_status fill_lowbit(const tsq__model_cursor *cur, const tsq__layer_rec *rec,
                              const tsq__kind_spec *spec, tsq_layer *l)
{
    const tsq__rec_array *codes_rec = tsq__rec_find_array(rec, "weight_codes");
    const tsq__rec_array *alpha_rec = tsq__rec_find_array(rec, "alpha");
    const tsq__rec_array *bias_rec = tsq__rec_find_array(rec, "bias");
    int64_t count = codes_rec->numel, out_ch = config_of(rec, spec, TSQ_LAYER_INFO_OUT_CHANNELS);
    int32_t bits = (int32_t)config_of(rec, spec, TSQ_LAYER_INFO_WEIGHT_BITS);
    tsq_tensor *codes = NULL, *alpha = NULL, *bias = NULL;
    int8_t *c = NULL;
    tsq_status st;
    if (!alpha_rec || !bias_rec)
        return tsq__model_fail(cur, "low-bit layer without alpha or bias");
    st = tsq_tensor_create(cur->ctx, TSQ_DTYPE_I8, 1, &count, &codes);
    if (st == TSQ_OK)
        st = tsq_tensor_create(cur->ctx, TSQ_DTYPE_F32, 1, &out_ch, &alpha);
    if (st == TSQ_OK)
        st = tsq_tensor_create(cur->ctx, TSQ_DTYPE_F32, 1, &out_ch, &bias);
    if (st == TSQ_OK) {
        tsq_tensor_data(codes, (void **)&c);
        if (!tsq__unpack_codes(codes_rec->data, c, count, bits))
            st = tsq__model_fail(cur, "a weight code is outside its %d-bit alphabet", (int)bits);
    }
    if (st == TSQ_OK)
        st = fill_float(cur, alpha_rec, alpha);
    if (st == TSQ_OK)
        st = fill_float(cur, bias_rec, bias);
    if (st == TSQ_OK && tsq__lowbit_shape_codes(l, codes) != TSQ_OK)
        st = tsq__model_fail(cur, "%lld weight codes do not fill the layer's weights",
                             (long long)count);
    if (st == TSQ_OK) {
        st = tsq_layer_lowbit_set(l, codes, alpha, bias);
        if (st != TSQ_OK) {
            char why[TSQ_MSG_CAP];
            snprintf(why, sizeof why, "%s", tsq_layer_errmsg(l));
            st = relay(cur, st, "low-bit weights", why);
        }
    }
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    return st;
}

static tsq_status fill_options(const tsq__model_cursor *cur, const tsq__layer_rec *rec,
                               tsq_layer *l)
{
    char why[TSQ_MSG_CAP];
    int64_t c;
    int32_t i;
    tsq_status st;
    for (i = 0; i < rec->noptions; i++) {
        st = tsq_layer_set_option(l, rec->option_keys[i], rec->option_values[i]);
        if (st != TSQ_OK) {
            snprintf(why, sizeof why, "%s", tsq_layer_errmsg(l));
            return relay(cur, st, "option", why);
        }
    }
    if (rec->kind != TSQ_LAYER_ACT_QUANT)
        return TSQ_OK;
    for (c = 0; c < rec->nchannels; c++) {
        int32_t bits;
        float eps, delta;
        tsq__rec_channel(rec, c, &bits, &eps, &delta);
        st = tsq_layer_act_quant_set_channel(l, c, rec->nchannels, bits, eps, delta);
        if (st != TSQ_OK) {
            snprintf(why, sizeof why, "%s", tsq_layer_errmsg(l));
            return relay(cur, st, "quantizer channel", why);
        }
    }
    return TSQ_OK;
}

/* Fills the layer's parameters, then its states, from the arrays of the
 * same names. */
static tsq_status fill_tensors(const tsq__model_cursor *cur, const tsq__layer_rec *rec,
                               tsq_layer *l)
{
    int32_t i, count = 0;
    tsq_tensor *t;
    const char *name;
    const tsq__rec_array *a;
    tsq_layer_param_count(l, &count);
    for (i = 0; i < count; i++) {
        tsq_layer_param(l, i, &t, NULL, &name);
        a = tsq__rec_find_array(rec, name);
        if (!a)
            return tsq__model_fail(cur, "parameter '%s' is missing", name);
        TSQ_FORWARD_IF_ERROR(fill_float(cur, a, t));
    }
    count = 0;
    tsq_layer_state_count(l, &count);
    for (i = 0; i < count; i++) {
        tsq_layer_state(l, i, &t, &name);
        a = tsq__rec_find_array(rec, name);
        if (!a)
            return tsq__model_fail(cur, "state '%s' is missing", name);
        TSQ_FORWARD_IF_ERROR(fill_float(cur, a, t));
        if (strcmp(name, "running_var") == 0)
            TSQ_FORWARD_IF_ERROR(check_variance(cur, t));
    }
    return TSQ_OK;
}

static tsq_status sink_head(void *user, const tsq__model_cursor *cur,
                            const tsq__model_head *head)
{
    load_state *ls = user;
    tsq_status st = tsq_net_create(ls->ctx, head->in_ndim, head->in_shape, &ls->net);
    if (st != TSQ_OK)
        return st == TSQ_ERR_NO_MEMORY ? st : tsq__model_fail(cur, "bad input shape");
    return TSQ_OK;
}

static tsq_status sink_record(void *user, const tsq__model_cursor *cur,
                              const tsq__layer_rec *rec)
{
    load_state *ls = user;
    const tsq__kind_spec *spec = tsq__kind_spec_of(rec->kind);
    tsq_layer *l = NULL;
    tsq_status st;
    if (!spec)
        return tsq__model_fail(cur, "unknown layer kind %d", (int)rec->kind);
    if (rec->nattrs != spec->nconfig)
        return tsq__model_fail(cur, "%s has %d config values, expected %d",
                               tsq_layer_kind_name(rec->kind), (int)rec->nattrs,
                               (int)spec->nconfig);
    TSQ_FORWARD_IF_ERROR(check_sizes(cur, rec, spec));
    TSQ_FORWARD_IF_ERROR(create_layer(cur, rec, &l));
    st = tsq_net_append(ls->net, l);
    if (st != TSQ_OK) {
        char why[TSQ_MSG_CAP];
        snprintf(why, sizeof why, "%s", tsq_net_errmsg(ls->net));
        tsq_layer_destroy(l);
        return relay(cur, st, "append", why);
    }
    TSQ_FORWARD_IF_ERROR(fill_options(cur, rec, l));
    if (tsq__kind_is_lowbit(rec->kind))
        return fill_lowbit(cur, rec, spec, l);
    return fill_tensors(cur, rec, l);
}

tsq_status tsq_net_load(tsq_context *ctx, const void *buf, uint64_t size, tsq_net **out)
{
    load_state ls;
    tsq__model_sink sink;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!out || !buf, &ctx->obj, TSQ_ERR_NULL, "net_load: %s is NULL",
                        out ? "buf" : "out");
    *out = NULL;
    ls.ctx = ctx;
    ls.net = NULL;
    sink.head = sink_head;
    sink.record = sink_record;
    sink.user = &ls;
    st = tsq__model_read(ctx, "net_load", buf, size, &sink);
    if (st != TSQ_OK) {
        tsq_net_destroy(ls.net);
        return st;
    }
    tsq__clear(&ctx->obj);
    *out = ls.net;
    return TSQ_OK;
}

tsq_status tsq_net_load_file(tsq_context *ctx, const char *path, tsq_net **out)
{
    void *buf = NULL;
    uint64_t size = 0;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!path || !out, &ctx->obj, TSQ_ERR_NULL, "net_load_file: %s is NULL",
                        path ? "out" : "path");
    *out = NULL;
    TSQ_FORWARD_IF_ERROR(tsq__file_read(ctx, "net_load_file", path, &buf, &size));
    st = tsq_net_load(ctx, buf, size, out);
    tsq__free(ctx, buf);
    return st;
}
