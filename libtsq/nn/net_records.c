/*
 * What a tsq_net puts into a .tsq model file: the table of what each layer
 * kind stores (nn/net_records.h), and the writer that maps layers to the
 * generic records of io/model_records.h (which owns the container, its
 * CRCs and its bounds checks): tsq_net_save, tsq_net_save_file,
 * tsq_net_weight_bytes. The reader is net_load.c. Built on the public layer
 * API, so the format does not depend on how layers store their data.
 */
#include "nn/net_records.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const tsq__kind_spec kind_specs[] = {
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

const tsq__kind_spec *tsq__kind_spec_of(int32_t kind)
{
    size_t i;
    for (i = 0; i < sizeof kind_specs / sizeof kind_specs[0]; i++)
        if (kind_specs[i].kind == kind)
            return &kind_specs[i];
    return NULL;
}

int tsq__kind_is_lowbit(int32_t kind)
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
        if (tsq__kind_is_lowbit(kind) && strcmp(name, "weight") == 0)
            continue;
        set_array(&rec->arrays[rec->narrays++], name, t, 0);
    }
    count = 0;
    tsq_layer_state_count(l, &count);
    for (i = 0; i < count && rec->narrays < TSQ__REC_MAX_ARRAYS; i++) {
        if (tsq_layer_state(l, i, &t, &name) != TSQ_OK)
            continue;
        set_array(&rec->arrays[rec->narrays++], name, t,
                  tsq__kind_is_lowbit(kind) && strcmp(name, "weight_codes") == 0 ? weight_bits : 0);
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
    const tsq__kind_spec *spec;
    int32_t kind = 0, i;
    int64_t weight_bits = 0;
    double opt;
    tsq_net_layer(net, index, &l);
    tsq_layer_kind(l, &kind);
    spec = tsq__kind_spec_of(kind);
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
        if (tsq__kind_is_lowbit(kind))
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
