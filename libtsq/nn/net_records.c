/*
 * What a tsq_net puts into a .tsq model file and how it is rebuilt from
 * one: the mapping between layers and the generic records of
 * io/model_records.h (which owns the container, its CRCs and its bounds
 * checks), and the public calls of model.h. Built on the public layer API,
 * so the format does not depend on how layers store their data.
 *
 * Per kind: the attributes (TSQ_LAYER_INFO_* values, in file order), the
 * options besides TRAINABLE, and the arrays (the layer's parameters and
 * states by name; low-bit layers store their codes packed instead of their
 * float shadow weights).
 */
#include "nn/nn_internal.h"
#include "io/model_records.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct kind_spec {
    int32_t kind;
    int32_t nconfig;
    int32_t config[7];  /* TSQ_LAYER_INFO_* keys, in file order */
    int32_t noptions;
    int32_t options[4]; /* TSQ_LAYER_OPT_* keys besides TRAINABLE */
} kind_spec;

static const kind_spec kind_specs[] = {
    {TSQ_LAYER_DENSE, 2, {TSQ_LAYER_INFO_IN_CHANNELS, TSQ_LAYER_INFO_OUT_CHANNELS}, 0, {0}},
    {TSQ_LAYER_CONV2D, 6,
     {TSQ_LAYER_INFO_IN_CHANNELS, TSQ_LAYER_INFO_OUT_CHANNELS, TSQ_LAYER_INFO_KERNEL_H,
      TSQ_LAYER_INFO_KERNEL_W, TSQ_LAYER_INFO_STRIDE, TSQ_LAYER_INFO_PAD},
     0, {0}},
    {TSQ_LAYER_BATCHNORM, 1, {TSQ_LAYER_INFO_IN_CHANNELS}, 3,
     {TSQ_LAYER_OPT_BN_MOMENTUM, TSQ_LAYER_OPT_BN_EPS, TSQ_LAYER_OPT_BN_FROZEN}},
    {TSQ_LAYER_RELU, 0, {0}, 0, {0}},
    {TSQ_LAYER_ACT_QUANT, 0, {0}, 1, {TSQ_LAYER_OPT_AQ_OUTPUT_CODES}},
    {TSQ_LAYER_MAXPOOL2D, 2, {TSQ_LAYER_INFO_KERNEL_H, TSQ_LAYER_INFO_STRIDE}, 0, {0}},
    {TSQ_LAYER_GLOBAL_AVGPOOL, 0, {0}, 0, {0}},
    {TSQ_LAYER_FLATTEN, 0, {0}, 0, {0}},
    {TSQ_LAYER_LOWBIT_DENSE, 3,
     {TSQ_LAYER_INFO_IN_CHANNELS, TSQ_LAYER_INFO_OUT_CHANNELS, TSQ_LAYER_INFO_WEIGHT_BITS}, 0,
     {0}},
    {TSQ_LAYER_LOWBIT_CONV2D, 7,
     {TSQ_LAYER_INFO_IN_CHANNELS, TSQ_LAYER_INFO_OUT_CHANNELS, TSQ_LAYER_INFO_KERNEL_H,
      TSQ_LAYER_INFO_KERNEL_W, TSQ_LAYER_INFO_STRIDE, TSQ_LAYER_INFO_PAD,
      TSQ_LAYER_INFO_WEIGHT_BITS},
     0, {0}},
};

static const kind_spec *find_spec(int32_t kind)
{
    size_t i;
    for (i = 0; i < sizeof kind_specs / sizeof kind_specs[0]; i++)
        if (kind_specs[i].kind == kind)
            return &kind_specs[i];
    return NULL;
}

static int is_lowbit(int32_t kind)
{
    return kind == TSQ_LAYER_LOWBIT_DENSE || kind == TSQ_LAYER_LOWBIT_CONV2D;
}

/* ------------------------------------------------------------------ */
/* Layer -> record                                                      */
/* ------------------------------------------------------------------ */

static void set_array(tsq__rec_array *a, const char *name, tsq_tensor *t, int32_t packed_bits)
{
    void *data = NULL;
    snprintf(a->name, sizeof a->name, "%s", name);
    tsq_tensor_shape(t, a->shape, TSQ_MAX_DIMS, &a->ndim);
    tsq_tensor_dtype(t, &a->dtype);
    tsq_tensor_numel(t, &a->numel);
    tsq_tensor_data(t, &data);
    a->data = data;
    a->encoding = packed_bits ? TSQ__REC_PACKED : TSQ__REC_RAW;
    a->packed_bits = packed_bits;
}

/* The arrays a layer stores, in file order: its parameters (low-bit layers
 * without their float shadow "weight"), then its states (low-bit layers'
 * "weight_codes" packed). */
static void layer_arrays(tsq_layer *l, int32_t kind, int32_t weight_bits, tsq__layer_rec *rec)
{
    int32_t i, count = 0;
    tsq_tensor *t;
    const char *name;
    tsq_layer_param_count(l, &count);
    for (i = 0; i < count && rec->narrays < TSQ__REC_MAX_ARRAYS; i++) {
        if (tsq_layer_param(l, i, &t, NULL, &name) != TSQ_OK)
            continue;
        if (is_lowbit(kind) && strcmp(name, "weight") == 0)
            continue;
        set_array(&rec->arrays[rec->narrays++], name, t, 0);
    }
    count = 0;
    tsq_layer_state_count(l, &count);
    for (i = 0; i < count && rec->narrays < TSQ__REC_MAX_ARRAYS; i++) {
        if (tsq_layer_state(l, i, &t, &name) != TSQ_OK)
            continue;
        set_array(&rec->arrays[rec->narrays++], name, t,
                  is_lowbit(kind) && strcmp(name, "weight_codes") == 0 ? weight_bits : 0);
    }
}

static void act_quant_channel(void *owner, int64_t i, int32_t *bits, float *eps, float *delta)
{
    tsq_layer *l = owner;
    int64_t nch = 0;
    tsq_layer_act_quant_get_channel(l, 0, &nch, NULL, NULL, NULL);
    tsq_layer_act_quant_get_channel(l, nch > 0 ? i : -1, NULL, bits, eps, delta);
}

/* Packing would corrupt a code outside the alphabet: refuse it. */
static tsq_status check_codes(tsq_net *net, int32_t index, const tsq__rec_array *a)
{
    const int8_t *c = a->data;
    int64_t j, m = (INT64_C(1) << (a->packed_bits - 1)) - 1;
    for (j = 0; j < a->numel; j++)
        TSQ_RETURN_ERROR_IF(c[j] < -m || c[j] > m, &net->obj, TSQ_ERR_INVALID,
                            "net_save: layer %d: code %d at %lld is outside -%lld..%lld",
                            (int)index, (int)c[j], (long long)j, (long long)m, (long long)m);
    return TSQ_OK;
}

static tsq_status layer_record(void *user, int32_t index, tsq__layer_rec *rec)
{
    tsq_net *net = user;
    tsq_layer *l = NULL;
    const kind_spec *spec;
    int32_t kind = 0, i;
    int64_t weight_bits = 0;
    double opt;
    tsq_net_layer(net, index, &l);
    tsq_layer_kind(l, &kind);
    spec = find_spec(kind);
    TSQ_RETURN_ERROR_IF(!spec, &net->obj, TSQ_ERR_UNSUPPORTED,
                        "net_save: layer %d has kind %d, which the model format cannot hold",
                        (int)index, (int)kind);
    rec->kind = kind;
    rec->nattrs = spec->nconfig;
    for (i = 0; i < spec->nconfig; i++) {
        tsq_layer_info(l, spec->config[i], &rec->attrs[i]);
        if (spec->config[i] == TSQ_LAYER_INFO_WEIGHT_BITS)
            weight_bits = rec->attrs[i];
    }
    /* options: trainable first, then the kind's own */
    opt = 1;
    tsq_layer_get_option(l, TSQ_LAYER_OPT_TRAINABLE, &opt);
    rec->option_keys[0] = TSQ_LAYER_OPT_TRAINABLE;
    rec->option_values[0] = opt;
    for (i = 0; i < spec->noptions; i++) {
        opt = 0;
        tsq_layer_get_option(l, spec->options[i], &opt);
        rec->option_keys[1 + i] = spec->options[i];
        rec->option_values[1 + i] = opt;
    }
    rec->noptions = 1 + spec->noptions;
    if (kind == TSQ_LAYER_ACT_QUANT) {
        tsq_layer_act_quant_get_channel(l, 0, &rec->nchannels, NULL, NULL, NULL);
        rec->ch_get = act_quant_channel;
        rec->ch_owner = l;
    }
    layer_arrays(l, kind, (int32_t)weight_bits, rec);
    for (i = 0; i < rec->narrays; i++)
        if (rec->arrays[i].encoding == TSQ__REC_PACKED)
            TSQ_FORWARD_IF_ERROR(check_codes(net, index, &rec->arrays[i]));
    return TSQ_OK;
}

/* The input sample shape is the first layer's input (or the output shape
 * of an empty net). */
static void net_head(tsq_net *net, tsq__model_head *head)
{
    int64_t out_shape[3];
    int32_t out_ndim = 0;
    tsq_layer *first = NULL;
    memset(head, 0, sizeof *head);
    tsq_net_layer_count(net, &head->nrecords);
    if (head->nrecords > 0 && tsq_net_layer(net, 0, &first) == TSQ_OK)
        tsq_layer_sample_shapes(first, head->in_shape, &head->in_ndim, out_shape, &out_ndim, 3);
    else
        tsq_net_output_shape(net, head->in_shape, 3, &head->in_ndim);
}

tsq_status tsq_net_save(tsq_net *net, void *buf, uint64_t capacity, uint64_t *size)
{
    tsq__le_writer count = {NULL, 0, 0}, out;
    tsq__model_head head;
    if (!net)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!size, &net->obj, TSQ_ERR_NULL, "net_save: size is NULL");
    net_head(net, &head);
    TSQ_FORWARD_IF_ERROR(tsq__model_write(&count, &head, layer_record, net));
    *size = count.pos;
    if (!buf)
        return TSQ_OK;
    TSQ_RETURN_ERROR_IF(capacity < count.pos, &net->obj, TSQ_ERR_TOO_SMALL,
                        "net_save: buffer has %llu bytes, the model needs %llu",
                        (unsigned long long)capacity, (unsigned long long)count.pos);
    out.buf = buf;
    out.cap = capacity;
    out.pos = 0;
    TSQ_FORWARD_IF_ERROR(tsq__model_write(&out, &head, layer_record, net));
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_weight_bytes(tsq_net *net, uint64_t *bytes)
{
    int32_t nlayers = 0, i, j, kind;
    uint64_t total = 0;
    if (!net)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!bytes, &net->obj, TSQ_ERR_NULL, "net_weight_bytes: bytes is NULL");
    tsq_net_layer_count(net, &nlayers);
    for (i = 0; i < nlayers; i++) {
        tsq_layer *l = NULL;
        tsq__layer_rec rec;
        int64_t wb = 0, nch = 0;
        memset(&rec, 0, sizeof rec);
        tsq_net_layer(net, i, &l);
        tsq_layer_kind(l, &kind);
        if (is_lowbit(kind))
            tsq_layer_info(l, TSQ_LAYER_INFO_WEIGHT_BITS, &wb);
        if (kind == TSQ_LAYER_ACT_QUANT) {
            tsq_layer_act_quant_get_channel(l, 0, &nch, NULL, NULL, NULL);
            total += 8 * (uint64_t)(nch > 0 ? nch : 1); /* eps and delta per channel */
        }
        layer_arrays(l, kind, (int32_t)wb, &rec);
        for (j = 0; j < rec.narrays; j++) {
            const tsq__rec_array *a = &rec.arrays[j];
            if (a->encoding == TSQ__REC_PACKED)
                total += tsq__packed_bytes(a->numel, a->packed_bits);
            else
                total += (uint64_t)a->numel * (a->dtype == TSQ_DTYPE_F32 ? 4 : 1);
        }
    }
    *bytes = total;
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Record -> layer                                                      */
/* ------------------------------------------------------------------ */

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

static int64_t config_of(const tsq__layer_rec *rec, const kind_spec *spec, int32_t key)
{
    int32_t i;
    for (i = 0; i < spec->nconfig; i++)
        if (spec->config[i] == key)
            return rec->attrs[i];
    return 0;
}

static const tsq__rec_array *find_array(const tsq__layer_rec *rec, const char *name)
{
    int32_t i;
    for (i = 0; i < rec->narrays; i++)
        if (strcmp(rec->arrays[i].name, name) == 0)
            return &rec->arrays[i];
    return NULL;
}

/* The element count of the layer's main weight as its config implies, so
 * that a hostile config cannot make the constructor allocate more than the
 * file can fill (-1 on overflow). */
static int64_t implied_weight_count(const tsq__layer_rec *rec, const kind_spec *spec)
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
                              const kind_spec *spec)
{
    const tsq__rec_array *a;
    int64_t need = implied_weight_count(rec, spec), bits;
    if (rec->kind == TSQ_LAYER_DENSE || rec->kind == TSQ_LAYER_CONV2D) {
        a = find_array(rec, "weight");
        if (!a || a->numel != need)
            return tsq__model_fail(cur, "weight has %lld elements, config implies %lld",
                                   a ? (long long)a->numel : 0LL, (long long)need);
    } else if (is_lowbit(rec->kind)) {
        bits = config_of(rec, spec, TSQ_LAYER_INFO_WEIGHT_BITS);
        a = find_array(rec, "weight_codes");
        if (bits < 2 || bits > 8)
            return tsq__model_fail(cur, "weight bits %lld", (long long)bits);
        if (!a || a->numel != need || a->encoding != TSQ__REC_PACKED ||
            a->nbytes != tsq__packed_bytes(need, (int32_t)bits))
            return tsq__model_fail(cur, "weight codes do not match %lld %lld-bit weights",
                                   (long long)need, (long long)bits);
    } else if (rec->kind == TSQ_LAYER_BATCHNORM) {
        a = find_array(rec, "gamma");
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
                              const kind_spec *spec, tsq_layer *l)
{
    const tsq__rec_array *codes_rec = find_array(rec, "weight_codes");
    const tsq__rec_array *alpha_rec = find_array(rec, "alpha");
    const tsq__rec_array *bias_rec = find_array(rec, "bias");
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
        a = find_array(rec, name);
        if (!a)
            return tsq__model_fail(cur, "parameter '%s' is missing", name);
        TSQ_FORWARD_IF_ERROR(fill_float(cur, a, t));
    }
    count = 0;
    tsq_layer_state_count(l, &count);
    for (i = 0; i < count; i++) {
        tsq_layer_state(l, i, &t, &name);
        a = find_array(rec, name);
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
    const kind_spec *spec = find_spec(rec->kind);
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
    if (is_lowbit(rec->kind))
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

/* ------------------------------------------------------------------ */
/* Files                                                                */
/* ------------------------------------------------------------------ */

tsq_status tsq_net_save_file(tsq_net *net, const char *path)
{
    static const char *where = "net_save_file";
    uint64_t size = 0;
    void *buf;
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!path, &net->obj, TSQ_ERR_NULL, "%s: path is NULL", where);
    TSQ_FORWARD_IF_ERROR(tsq_net_save(net, NULL, 0, &size));
    buf = tsq__alloc(net->obj.ctx, (size_t)size);
    TSQ_RETURN_ERROR_IF(!buf, &net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory (%llu bytes)",
                        where, (unsigned long long)size);
    st = tsq_net_save(net, buf, size, &size);
    if (st == TSQ_OK)
        st = tsq__file_write(&net->obj, where, path, buf, size);
    tsq__free(net->obj.ctx, buf);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
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
