/*
 * The .tsq model file (docs/format.md): a header, then sections, each with
 * its own CRC-32. Built only on the public layer and net API, so the format
 * does not depend on how layers store their data.
 *
 *   header   "TSQM" | u32 version | u32 section count | u32 CRC of the 12 bytes before
 *   section  u32 tag | u64 payload length | payload | u32 CRC of tag, length and payload
 *
 * The first section is NETW (the input sample shape and the layer count),
 * then one LAYR section per layer, in order.
 */
#include "internal.h"
#include "core/codec.h"
#include "nn/nn_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "TSQM"
#define TAG_NETW 0x5754454Eu /* "NETW" read as a little-endian u32 */
#define TAG_LAYR 0x5259414Cu /* "LAYR" */
#define MAX_SECTIONS 4096
#define MAX_LAYERS 4095
#define MAX_CONFIG 16
#define MAX_OPTIONS 16
#define MAX_TENSORS 8
#define MAX_CHANNELS_AQ (INT64_C(1) << 24)

enum { ENC_RAW = 0, ENC_PACKED = 1 };

/* ------------------------------------------------------------------ */
/* Little-endian writer; with buf == NULL it only counts bytes.        */
/* ------------------------------------------------------------------ */

typedef struct writer {
    uint8_t *buf;
    uint64_t cap, pos;
} writer;

static void put_bytes(writer *w, const void *p, uint64_t n)
{
    if (w->buf && w->pos + n <= w->cap)
        memcpy(w->buf + w->pos, p, (size_t)n);
    w->pos += n;
}

static void put_u8(writer *w, uint8_t v) { put_bytes(w, &v, 1); }

static void put_u32(writer *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put_bytes(w, b, 4);
}

static void put_u64(writer *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_f32(writer *w, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(w, u);
}

static void put_f64(writer *w, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    put_u64(w, u);
}

/* ------------------------------------------------------------------ */
/* Bounds-checked reader: any read past the end sets `bad`.            */
/* ------------------------------------------------------------------ */

typedef struct reader {
    const uint8_t *p;
    uint64_t n, pos;
    int bad;
} reader;

static const uint8_t *take(reader *r, uint64_t n)
{
    const uint8_t *q;
    if (r->bad || n > r->n - r->pos) {
        r->bad = 1;
        return NULL;
    }
    q = r->p + r->pos;
    r->pos += n;
    return q;
}

static uint8_t get_u8(reader *r)
{
    const uint8_t *q = take(r, 1);
    return q ? q[0] : 0;
}

static uint32_t get_u32(reader *r)
{
    const uint8_t *q = take(r, 4);
    if (!q)
        return 0;
    return (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
           ((uint32_t)q[3] << 24);
}

static uint64_t get_u64(reader *r)
{
    uint64_t lo = get_u32(r);
    return lo | ((uint64_t)get_u32(r) << 32);
}

static float get_f32(reader *r)
{
    uint32_t u = get_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double get_f64(reader *r)
{
    uint64_t u = get_u64(r);
    double f;
    memcpy(&f, &u, 8);
    return f;
}

/* ------------------------------------------------------------------ */
/* What the format stores per layer kind                               */
/* ------------------------------------------------------------------ */

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
/* Packed low-bit codes: value v in -m..m stored as v + m in `bits`     */
/* bits, least significant first (ternary: 2 bits, 4 codes a byte).     */
/* ------------------------------------------------------------------ */

static uint64_t packed_bytes(int64_t count, int32_t bits)
{
    return ((uint64_t)count * (uint64_t)bits + 7) / 8;
}

static void put_packed(writer *w, const int8_t *codes, int64_t count, int32_t bits)
{
    int32_t m = (1 << (bits - 1)) - 1;
    uint32_t acc = 0;
    int fill = 0;
    int64_t i;
    for (i = 0; i < count; i++) {
        acc |= (uint32_t)(codes[i] + m) << fill;
        fill += bits;
        while (fill >= 8) {
            put_u8(w, (uint8_t)acc);
            acc >>= 8;
            fill -= 8;
        }
    }
    if (fill > 0)
        put_u8(w, (uint8_t)acc);
}

/* Returns 0 if a stored value lies outside -m..m (possible in a corrupt
 * file even with a matching CRC, e.g. one written by another program). */
static int get_packed(const uint8_t *src, int8_t *codes, int64_t count, int32_t bits)
{
    int32_t m = (1 << (bits - 1)) - 1;
    uint32_t mask = (1u << bits) - 1, acc = 0;
    int fill = 0;
    int64_t i;
    for (i = 0; i < count; i++) {
        int32_t v;
        while (fill < bits) {
            acc |= (uint32_t)(*src++) << fill;
            fill += 8;
        }
        v = (int32_t)(acc & mask) - m;
        acc >>= bits;
        fill -= bits;
        if (v > m)
            return 0;
        codes[i] = (int8_t)v;
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* Saving                                                              */
/* ------------------------------------------------------------------ */

typedef struct save_tensor {
    const char *name;
    tsq_tensor *t;
    int32_t packed_bits; /* 0: raw */
} save_tensor;

/* The tensors a layer stores, in file order. Low-bit layers store their
 * codes packed instead of the float shadow weights. */
static int layer_tensors(tsq_layer *l, int32_t kind, save_tensor *out, int32_t weight_bits)
{
    int32_t i, n = 0, count = 0;
    tsq_tensor *t;
    const char *name;
    tsq_layer_param_count(l, &count);
    for (i = 0; i < count && n < MAX_TENSORS; i++) {
        if (tsq_layer_param(l, i, &t, NULL, &name) != TSQ_OK)
            continue;
        if (is_lowbit(kind) && strcmp(name, "weight") == 0)
            continue;
        out[n].name = name;
        out[n].t = t;
        out[n].packed_bits = 0;
        n++;
    }
    count = 0;
    tsq_layer_state_count(l, &count);
    for (i = 0; i < count && n < MAX_TENSORS; i++) {
        if (tsq_layer_state(l, i, &t, &name) != TSQ_OK)
            continue;
        out[n].name = name;
        out[n].t = t;
        out[n].packed_bits = is_lowbit(kind) && strcmp(name, "weight_codes") == 0 ? weight_bits : 0;
        n++;
    }
    return n;
}

static void put_tensor(writer *w, const save_tensor *s)
{
    int32_t ndim = 0, dtype = 0, d;
    int64_t shape[TSQ_MAX_DIMS], numel = 0;
    void *data = NULL;
    size_t len = strlen(s->name);
    tsq_tensor_shape(s->t, shape, TSQ_MAX_DIMS, &ndim);
    tsq_tensor_dtype(s->t, &dtype);
    tsq_tensor_numel(s->t, &numel);
    tsq_tensor_data(s->t, &data);
    put_u8(w, (uint8_t)len);
    put_bytes(w, s->name, len);
    put_u8(w, (uint8_t)dtype);
    put_u8(w, (uint8_t)(s->packed_bits ? ENC_PACKED : ENC_RAW));
    put_u8(w, (uint8_t)ndim);
    for (d = 0; d < ndim; d++)
        put_u64(w, (uint64_t)shape[d]);
    if (s->packed_bits) {
        put_u64(w, packed_bytes(numel, s->packed_bits));
        put_packed(w, data, numel, s->packed_bits);
    } else if (dtype == TSQ_DTYPE_F32) {
        const float *x = data;
        int64_t i;
        put_u64(w, (uint64_t)numel * 4);
        for (i = 0; i < numel; i++)
            put_f32(w, x[i]);
    } else {
        put_u64(w, (uint64_t)numel);
        put_bytes(w, data, (uint64_t)numel);
    }
}

static void put_act_quant(writer *w, tsq_layer *l)
{
    int64_t nch = 0, c, count;
    int32_t bits = 0;
    float eps = 0, delta = 0;
    tsq_layer_act_quant_get_channel(l, 0, &nch, &bits, &eps, &delta);
    put_u64(w, (uint64_t)nch);
    count = nch > 0 ? nch : 1;
    for (c = 0; c < count; c++) {
        tsq_layer_act_quant_get_channel(l, nch > 0 ? c : -1, NULL, &bits, &eps, &delta);
        put_u32(w, (uint32_t)bits);
        put_f32(w, eps);
        put_f32(w, delta);
    }
}

static tsq_status put_layer(writer *w, tsq_net *net, int32_t index)
{
    tsq_layer *l = NULL;
    int32_t kind = 0, i, ntensors;
    const kind_spec *spec;
    int64_t v, weight_bits = 0;
    double opt;
    save_tensor tensors[MAX_TENSORS];
    tsq__object *obj = &net->obj;

    tsq_net_layer(net, index, &l);
    tsq_layer_kind(l, &kind);
    spec = find_spec(kind);
    if (!spec)
        return tsq__fail(obj, TSQ_ERR_UNSUPPORTED, "net_save: layer %d has kind %d, which the "
                         "model format cannot hold", (int)index, (int)kind);
    put_u32(w, (uint32_t)kind);
    put_u32(w, (uint32_t)spec->nconfig);
    for (i = 0; i < spec->nconfig; i++) {
        v = 0;
        tsq_layer_info(l, spec->config[i], &v);
        if (spec->config[i] == TSQ_LAYER_INFO_WEIGHT_BITS)
            weight_bits = v;
        put_u64(w, (uint64_t)v);
    }
    /* options: trainable first, then the kind's own */
    put_u32(w, (uint32_t)(1 + spec->noptions));
    opt = 1;
    tsq_layer_get_option(l, TSQ_LAYER_OPT_TRAINABLE, &opt);
    put_u32(w, TSQ_LAYER_OPT_TRAINABLE);
    put_f64(w, opt);
    for (i = 0; i < spec->noptions; i++) {
        opt = 0;
        tsq_layer_get_option(l, spec->options[i], &opt);
        put_u32(w, (uint32_t)spec->options[i]);
        put_f64(w, opt);
    }
    if (kind == TSQ_LAYER_ACT_QUANT)
        put_act_quant(w, l);
    ntensors = layer_tensors(l, kind, tensors, (int32_t)weight_bits);
    put_u32(w, (uint32_t)ntensors);
    for (i = 0; i < ntensors; i++) {
        if (tensors[i].packed_bits) {
            /* the codes must lie in the alphabet, or packing would corrupt them */
            const int8_t *c = NULL;
            int64_t n = 0, j, m = (INT64_C(1) << (weight_bits - 1)) - 1;
            tsq_tensor_data(tensors[i].t, (void **)&c);
            tsq_tensor_numel(tensors[i].t, &n);
            for (j = 0; j < n; j++)
                if (c[j] < -m || c[j] > m)
                    return tsq__fail(obj, TSQ_ERR_INVALID, "net_save: layer %d: code %d at %lld "
                                     "is outside -%lld..%lld", (int)index, (int)c[j],
                                     (long long)j, (long long)m, (long long)m);
        }
        put_tensor(w, &tensors[i]);
    }
    return TSQ_OK;
}

static void put_net_header(writer *w, tsq_net *net, int32_t nlayers)
{
    /* The input sample shape is the first layer's input (or the output
     * shape of an empty net). */
    int64_t in_shape[3] = {0, 0, 0}, out_shape[3];
    int32_t in_ndim = 0, out_ndim = 0, d;
    tsq_layer *first = NULL;
    if (nlayers > 0 && tsq_net_layer(net, 0, &first) == TSQ_OK)
        tsq_layer_sample_shapes(first, in_shape, &in_ndim, out_shape, &out_ndim, 3);
    else
        tsq_net_output_shape(net, in_shape, 3, &in_ndim);
    put_u32(w, (uint32_t)in_ndim);
    for (d = 0; d < 3; d++)
        put_u64(w, (uint64_t)(d < in_ndim ? in_shape[d] : 0));
    put_u32(w, (uint32_t)nlayers);
}

/* Writes one section: tag, length, payload, CRC. The payload is produced
 * by `body` twice: once counting, once writing. */
typedef tsq_status (*section_body)(writer *w, tsq_net *net, int32_t arg);

static tsq_status put_section(writer *w, uint32_t tag, section_body body, tsq_net *net,
                              int32_t arg)
{
    writer count = {NULL, 0, 0};
    uint64_t start;
    tsq_status st = body(&count, net, arg);
    if (st != TSQ_OK)
        return st;
    start = w->pos;
    put_u32(w, tag);
    put_u64(w, count.pos);
    st = body(w, net, arg);
    if (st != TSQ_OK)
        return st;
    if (w->buf && w->pos <= w->cap)
        put_u32(w, tsq__crc32(0, w->buf + start, (size_t)(w->pos - start)));
    else
        put_u32(w, 0);
    return TSQ_OK;
}

static tsq_status netw_body(writer *w, tsq_net *net, int32_t nlayers)
{
    put_net_header(w, net, nlayers);
    return TSQ_OK;
}

static tsq_status layr_body(writer *w, tsq_net *net, int32_t index)
{
    return put_layer(w, net, index);
}

static tsq_status write_model(writer *w, tsq_net *net)
{
    int32_t nlayers = 0, i;
    tsq_status st;
    tsq_net_layer_count(net, &nlayers);
    put_bytes(w, MAGIC, 4);
    put_u32(w, TSQ_MODEL_FORMAT_VERSION);
    put_u32(w, (uint32_t)(1 + nlayers));
    put_u32(w, w->buf && w->cap >= 12 ? tsq__crc32(0, w->buf, 12) : 0);
    st = put_section(w, TAG_NETW, netw_body, net, nlayers);
    for (i = 0; st == TSQ_OK && i < nlayers; i++)
        st = put_section(w, TAG_LAYR, layr_body, net, i);
    return st;
}

tsq_status tsq_net_save(tsq_net *net, void *buf, uint64_t capacity, uint64_t *size)
{
    writer count = {NULL, 0, 0}, out;
    tsq__object *obj = net ? &net->obj : NULL;
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    if (!size)
        return tsq__fail(obj, TSQ_ERR_NULL, "net_save: size is NULL");
    st = write_model(&count, net);
    if (st != TSQ_OK)
        return st;
    *size = count.pos;
    if (!buf)
        return TSQ_OK;
    if (capacity < count.pos)
        return tsq__fail(obj, TSQ_ERR_TOO_SMALL, "net_save: buffer has %llu bytes, the model "
                         "needs %llu", (unsigned long long)capacity,
                         (unsigned long long)count.pos);
    out.buf = buf;
    out.cap = capacity;
    out.pos = 0;
    st = write_model(&out, net);
    if (st == TSQ_OK)
        tsq__clear(obj);
    return st;
}

tsq_status tsq_net_weight_bytes(tsq_net *net, uint64_t *bytes)
{
    int32_t nlayers = 0, i, j, n, kind;
    uint64_t total = 0;
    if (!net || !bytes)
        return TSQ_ERR_NULL;
    tsq_net_layer_count(net, &nlayers);
    for (i = 0; i < nlayers; i++) {
        tsq_layer *l = NULL;
        save_tensor ts[MAX_TENSORS];
        int64_t wb = 0, numel, nch = 0;
        tsq_net_layer(net, i, &l);
        tsq_layer_kind(l, &kind);
        if (is_lowbit(kind))
            tsq_layer_info(l, TSQ_LAYER_INFO_WEIGHT_BITS, &wb);
        if (kind == TSQ_LAYER_ACT_QUANT) {
            tsq_layer_act_quant_get_channel(l, 0, &nch, NULL, NULL, NULL);
            total += 8 * (uint64_t)(nch > 0 ? nch : 1); /* eps and delta per channel */
        }
        n = layer_tensors(l, kind, ts, (int32_t)wb);
        for (j = 0; j < n; j++) {
            int32_t dtype = 0;
            tsq_tensor_numel(ts[j].t, &numel);
            tsq_tensor_dtype(ts[j].t, &dtype);
            if (ts[j].packed_bits)
                total += packed_bytes(numel, ts[j].packed_bits);
            else
                total += (uint64_t)numel * (dtype == TSQ_DTYPE_F32 ? 4 : 1);
        }
    }
    *bytes = total;
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */
/* ------------------------------------------------------------------ */

typedef struct tensor_record {
    char name[256];
    int32_t dtype, encoding, ndim;
    int64_t shape[TSQ_MAX_DIMS];
    int64_t numel;
    uint64_t nbytes;
    const uint8_t *data;
} tensor_record;

typedef struct layer_record {
    int32_t kind;
    int32_t nconfig;
    int64_t config[MAX_CONFIG];
    int32_t noptions;
    int32_t option_keys[MAX_OPTIONS];
    double option_values[MAX_OPTIONS];
    int64_t aq_nchannels;
    reader aq;  /* the per-channel (bits, eps, delta) triples */
    int32_t ntensors;
    tensor_record tensors[MAX_TENSORS];
} layer_record;

typedef struct load_state {
    tsq_context *ctx;
    int32_t section;
    int32_t layer;
} load_state;

#define LOAD_FAIL(ls, ...) load_fail(ls, __VA_ARGS__)

static tsq_status load_fail(load_state *ls, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static tsq_status load_fail(load_state *ls, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (ls->layer >= 0)
        return tsq__fail(&ls->ctx->obj, TSQ_ERR_FORMAT, "net_load: section %d (layer %d): %s",
                         (int)ls->section, (int)ls->layer, what);
    return tsq__fail(&ls->ctx->obj, TSQ_ERR_FORMAT, "net_load: section %d: %s",
                     (int)ls->section, what);
}

/* A call into the layer API failed while building the net: out-of-memory
 * stays out-of-memory, anything else means the file holds a bad value. */
static tsq_status relay(load_state *ls, tsq_status st, const char *what, const char *why)
{
    if (st == TSQ_ERR_NO_MEMORY)
        return tsq__fail(&ls->ctx->obj, TSQ_ERR_NO_MEMORY, "net_load: layer %d: %s: out of memory",
                         (int)ls->layer, what);
    return LOAD_FAIL(ls, "%s: %s", what, why);
}

static int64_t config_of(const layer_record *lr, const kind_spec *spec, int32_t key)
{
    int32_t i;
    for (i = 0; i < spec->nconfig; i++)
        if (spec->config[i] == key)
            return lr->config[i];
    return 0;
}

static tsq_status parse_tensor(load_state *ls, reader *r, tensor_record *t)
{
    uint8_t len = get_u8(r);
    const uint8_t *name = take(r, len);
    int32_t d;
    uint64_t elem;
    if (r->bad)
        return LOAD_FAIL(ls, "truncated tensor record");
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->dtype = get_u8(r);
    t->encoding = get_u8(r);
    t->ndim = get_u8(r);
    if (r->bad || t->ndim < 1 || t->ndim > TSQ_MAX_DIMS)
        return LOAD_FAIL(ls, "tensor '%s' has a bad rank", t->name);
    t->numel = 1;
    for (d = 0; d < t->ndim; d++) {
        uint64_t s = get_u64(r);
        if (s < 1 || s > (UINT64_C(1) << 40) || !tsq__mul_i64(t->numel, (int64_t)s, &t->numel))
            return LOAD_FAIL(ls, "tensor '%s' dimension %d is %llu", t->name, (int)d,
                             (unsigned long long)s);
        t->shape[d] = (int64_t)s;
    }
    t->nbytes = get_u64(r);
    if (r->bad)
        return LOAD_FAIL(ls, "truncated tensor '%s'", t->name);
    if (t->encoding == ENC_RAW) {
        elem = t->dtype == TSQ_DTYPE_F32 ? 4 : (t->dtype == TSQ_DTYPE_I8 || t->dtype == TSQ_DTYPE_U8) ? 1 : 0;
        if (!elem || t->nbytes / elem != (uint64_t)t->numel || t->nbytes % elem)
            return LOAD_FAIL(ls, "tensor '%s': %llu bytes for %lld elements of dtype %d",
                             t->name, (unsigned long long)t->nbytes, (long long)t->numel,
                             (int)t->dtype);
    } else if (t->encoding != ENC_PACKED || t->dtype != TSQ_DTYPE_I8) {
        return LOAD_FAIL(ls, "tensor '%s': unknown encoding %d", t->name, (int)t->encoding);
    }
    t->data = take(r, t->nbytes);
    if (r->bad)
        return LOAD_FAIL(ls, "tensor '%s' needs %llu bytes, the section has fewer", t->name,
                         (unsigned long long)t->nbytes);
    return TSQ_OK;
}

static tsq_status parse_layer(load_state *ls, reader *r, layer_record *lr)
{
    const kind_spec *spec;
    int32_t i;
    tsq_status st;
    memset(lr, 0, sizeof *lr);
    lr->kind = (int32_t)get_u32(r);
    spec = find_spec(lr->kind);
    if (r->bad || !spec)
        return LOAD_FAIL(ls, "unknown layer kind %d", (int)lr->kind);
    lr->nconfig = (int32_t)get_u32(r);
    if (lr->nconfig != spec->nconfig)
        return LOAD_FAIL(ls, "%s has %d config values, expected %d",
                         tsq_layer_kind_name(lr->kind), (int)lr->nconfig, (int)spec->nconfig);
    for (i = 0; i < lr->nconfig; i++) {
        uint64_t v = get_u64(r);
        if (v > (UINT64_C(1) << 30))
            return LOAD_FAIL(ls, "config value %d is %llu", (int)i, (unsigned long long)v);
        lr->config[i] = (int64_t)v;
    }
    lr->noptions = (int32_t)get_u32(r);
    if (r->bad || lr->noptions < 0 || lr->noptions > MAX_OPTIONS)
        return LOAD_FAIL(ls, "bad option count");
    for (i = 0; i < lr->noptions; i++) {
        lr->option_keys[i] = (int32_t)get_u32(r);
        lr->option_values[i] = get_f64(r);
    }
    if (lr->kind == TSQ_LAYER_ACT_QUANT) {
        uint64_t nch = get_u64(r), count;
        if (r->bad || nch > (uint64_t)MAX_CHANNELS_AQ)
            return LOAD_FAIL(ls, "quantizer channel count %llu", (unsigned long long)nch);
        lr->aq_nchannels = (int64_t)nch;
        count = nch ? nch : 1;
        lr->aq.p = r->p + r->pos;
        lr->aq.n = count * 12;
        lr->aq.pos = 0;
        if (!take(r, count * 12))
            return LOAD_FAIL(ls, "truncated quantizer parameters");
    }
    lr->ntensors = (int32_t)get_u32(r);
    if (r->bad || lr->ntensors < 0 || lr->ntensors > MAX_TENSORS)
        return LOAD_FAIL(ls, "bad tensor count");
    for (i = 0; i < lr->ntensors; i++) {
        st = parse_tensor(ls, r, &lr->tensors[i]);
        if (st != TSQ_OK)
            return st;
    }
    if (r->pos != r->n)
        return LOAD_FAIL(ls, "%llu unexpected bytes at the end", (unsigned long long)(r->n - r->pos));
    return TSQ_OK;
}

/* The element count of the layer's main weight as its config implies, so
 * that a hostile config cannot make the constructor allocate more than the
 * file can fill (-1 on overflow). */
static int64_t implied_weight_count(const layer_record *lr, const kind_spec *spec)
{
    int64_t n = config_of(lr, spec, TSQ_LAYER_INFO_IN_CHANNELS);
    if (!tsq__mul_i64(n, config_of(lr, spec, TSQ_LAYER_INFO_OUT_CHANNELS), &n))
        return -1;
    if (lr->kind == TSQ_LAYER_CONV2D || lr->kind == TSQ_LAYER_LOWBIT_CONV2D) {
        if (!tsq__mul_i64(n, config_of(lr, spec, TSQ_LAYER_INFO_KERNEL_H), &n) ||
            !tsq__mul_i64(n, config_of(lr, spec, TSQ_LAYER_INFO_KERNEL_W), &n))
            return -1;
    }
    return n;
}

static const tensor_record *find_tensor(const layer_record *lr, const char *name)
{
    int32_t i;
    for (i = 0; i < lr->ntensors; i++)
        if (strcmp(lr->tensors[i].name, name) == 0)
            return &lr->tensors[i];
    return NULL;
}

static tsq_status check_sizes(load_state *ls, const layer_record *lr, const kind_spec *spec)
{
    const tensor_record *t;
    int64_t need = implied_weight_count(lr, spec), bits;
    if (lr->kind == TSQ_LAYER_DENSE || lr->kind == TSQ_LAYER_CONV2D) {
        t = find_tensor(lr, "weight");
        if (!t || t->numel != need)
            return LOAD_FAIL(ls, "weight has %lld elements, config implies %lld",
                             t ? (long long)t->numel : 0LL, (long long)need);
    } else if (is_lowbit(lr->kind)) {
        bits = config_of(lr, spec, TSQ_LAYER_INFO_WEIGHT_BITS);
        t = find_tensor(lr, "weight_codes");
        if (bits < 2 || bits > 8)
            return LOAD_FAIL(ls, "weight bits %lld", (long long)bits);
        if (!t || t->numel != need || t->encoding != ENC_PACKED ||
            t->nbytes != packed_bytes(need, (int32_t)bits))
            return LOAD_FAIL(ls, "weight codes do not match %lld %lld-bit weights",
                             (long long)need, (long long)bits);
    } else if (lr->kind == TSQ_LAYER_BATCHNORM) {
        t = find_tensor(lr, "gamma");
        if (!t || t->numel != lr->config[0])
            return LOAD_FAIL(ls, "batch-norm gamma does not match %lld channels",
                             (long long)lr->config[0]);
    }
    return TSQ_OK;
}

static tsq_status create_layer(load_state *ls, const layer_record *lr, tsq_layer **out)
{
    const int64_t *c = lr->config;
    tsq_context *ctx = ls->ctx;
    tsq_status st;
    switch (lr->kind) {
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
    case TSQ_LAYER_ACT_QUANT: {
        reader aq = lr->aq;
        int32_t bits = (int32_t)get_u32(&aq);
        float eps = get_f32(&aq), delta = get_f32(&aq);
        st = tsq_layer_act_quant_create(ctx, bits, eps, delta, out);
        break;
    }
    default: return LOAD_FAIL(ls, "unknown layer kind %d", (int)lr->kind);
    }
    if (st != TSQ_OK) {
        /* the constructor's message says which value it refused */
        char why[TSQ_MSG_CAP];
        snprintf(why, sizeof why, "%s", tsq_context_errmsg(ctx));
        return relay(ls, st, tsq_layer_kind_name(lr->kind), why);
    }
    return TSQ_OK;
}

/* Copies a stored float tensor into the layer's tensor of the same name. */
static tsq_status fill_float(load_state *ls, const tensor_record *t, tsq_tensor *dst)
{
    int64_t numel = 0, i;
    int32_t dtype = 0;
    float *x = NULL;
    reader r;
    tsq_tensor_numel(dst, &numel);
    tsq_tensor_dtype(dst, &dtype);
    if (dtype != TSQ_DTYPE_F32 || t->dtype != TSQ_DTYPE_F32 || t->encoding != ENC_RAW ||
        t->numel != numel)
        return LOAD_FAIL(ls, "tensor '%s' does not fit the layer (%lld elements stored, %lld "
                         "expected)", t->name, (long long)t->numel, (long long)numel);
    tsq_tensor_data(dst, (void **)&x);
    r.p = t->data;
    r.n = t->nbytes;
    r.pos = 0;
    r.bad = 0;
    for (i = 0; i < numel; i++) {
        x[i] = get_f32(&r);
        if (!isfinite(x[i]))
            return LOAD_FAIL(ls, "tensor '%s' holds a non-finite value at %lld", t->name,
                             (long long)i);
    }
    return TSQ_OK;
}

/* A variance below 0 is corrupt data: eval mode would divide by the square
 * root of a negative number, and folding would put NaN into the weights. */
static tsq_status check_variance(load_state *ls, tsq_tensor *var)
{
    const float *v = NULL;
    int64_t n = 0, i;
    tsq_tensor_data(var, (void **)&v);
    tsq_tensor_numel(var, &n);
    for (i = 0; i < n; i++)
        if (!(v[i] >= 0.0f))
            return LOAD_FAIL(ls, "running_var[%lld] is %g, below 0", (long long)i, v[i]);
    return TSQ_OK;
}

static tsq_status fill_lowbit(load_state *ls, const layer_record *lr, const kind_spec *spec,
                              tsq_layer *l)
{
    const tensor_record *codes_rec = find_tensor(lr, "weight_codes");
    const tensor_record *alpha_rec = find_tensor(lr, "alpha");
    const tensor_record *bias_rec = find_tensor(lr, "bias");
    int64_t count = codes_rec->numel, out_ch = config_of(lr, spec, TSQ_LAYER_INFO_OUT_CHANNELS);
    int32_t bits = (int32_t)config_of(lr, spec, TSQ_LAYER_INFO_WEIGHT_BITS);
    tsq_tensor *codes = NULL, *alpha = NULL, *bias = NULL;
    int8_t *c = NULL;
    tsq_status st;
    if (!alpha_rec || !bias_rec)
        return LOAD_FAIL(ls, "low-bit layer without alpha or bias");
    st = tsq_tensor_create(ls->ctx, TSQ_DTYPE_I8, 1, &count, &codes);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ls->ctx, TSQ_DTYPE_F32, 1, &out_ch, &alpha);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ls->ctx, TSQ_DTYPE_F32, 1, &out_ch, &bias);
    if (st == TSQ_OK) {
        tsq_tensor_data(codes, (void **)&c);
        if (!get_packed(codes_rec->data, c, count, bits))
            st = LOAD_FAIL(ls, "a weight code is outside its %d-bit alphabet", (int)bits);
    }
    if (st == TSQ_OK)
        st = fill_float(ls, alpha_rec, alpha);
    if (st == TSQ_OK)
        st = fill_float(ls, bias_rec, bias);
    if (st == TSQ_OK) {
        st = tsq_layer_lowbit_set(l, codes, alpha, bias);
        if (st != TSQ_OK) {
            char why[TSQ_MSG_CAP];
            snprintf(why, sizeof why, "%s", tsq_layer_errmsg(l));
            st = relay(ls, st, "low-bit weights", why);
        }
    }
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    return st;
}

static tsq_status fill_layer(load_state *ls, const layer_record *lr, const kind_spec *spec,
                             tsq_layer *l)
{
    int32_t i, count = 0;
    tsq_tensor *t;
    const char *name;
    tsq_status st;
    for (i = 0; i < lr->noptions; i++) {
        st = tsq_layer_set_option(l, lr->option_keys[i], lr->option_values[i]);
        if (st != TSQ_OK) {
            char why[TSQ_MSG_CAP];
            snprintf(why, sizeof why, "%s", tsq_layer_errmsg(l));
            return relay(ls, st, "option", why);
        }
    }
    if (lr->kind == TSQ_LAYER_ACT_QUANT && lr->aq_nchannels > 0) {
        reader aq = lr->aq;
        int64_t c;
        for (c = 0; c < lr->aq_nchannels; c++) {
            int32_t bits = (int32_t)get_u32(&aq);
            float eps = get_f32(&aq), delta = get_f32(&aq);
            st = tsq_layer_act_quant_set_channel(l, c, lr->aq_nchannels, bits, eps, delta);
            if (st != TSQ_OK) {
                char why[TSQ_MSG_CAP];
                snprintf(why, sizeof why, "%s", tsq_layer_errmsg(l));
                return relay(ls, st, "quantizer channel", why);
            }
        }
    }
    if (is_lowbit(lr->kind))
        return fill_lowbit(ls, lr, spec, l);
    tsq_layer_param_count(l, &count);
    for (i = 0; i < count; i++) {
        const tensor_record *rec;
        tsq_layer_param(l, i, &t, NULL, &name);
        rec = find_tensor(lr, name);
        if (!rec)
            return LOAD_FAIL(ls, "parameter '%s' is missing", name);
        if ((st = fill_float(ls, rec, t)) != TSQ_OK)
            return st;
    }
    count = 0;
    tsq_layer_state_count(l, &count);
    for (i = 0; i < count; i++) {
        const tensor_record *rec;
        tsq_layer_state(l, i, &t, &name);
        rec = find_tensor(lr, name);
        if (!rec)
            return LOAD_FAIL(ls, "state '%s' is missing", name);
        if ((st = fill_float(ls, rec, t)) != TSQ_OK)
            return st;
        if (strcmp(name, "running_var") == 0 && (st = check_variance(ls, t)) != TSQ_OK)
            return st;
    }
    return TSQ_OK;
}

/* Checks a section's frame and CRC; on success `payload` reads its body. */
static tsq_status next_section(load_state *ls, reader *file, uint32_t *tag, reader *payload)
{
    uint64_t start = file->pos, len;
    uint32_t crc;
    *tag = get_u32(file);
    len = get_u64(file);
    if (file->bad || len > file->n - file->pos)
        return LOAD_FAIL(ls, "truncated section header or payload");
    payload->p = file->p + file->pos;
    payload->n = len;
    payload->pos = 0;
    payload->bad = 0;
    take(file, len);
    crc = get_u32(file);
    if (file->bad)
        return LOAD_FAIL(ls, "truncated section checksum");
    if (crc != tsq__crc32(0, file->p + start, (size_t)(12 + len)))
        return LOAD_FAIL(ls, "checksum mismatch (corrupt data)");
    return TSQ_OK;
}

static tsq_status load_layers(load_state *ls, reader *file, int32_t nlayers, tsq_net *net)
{
    layer_record *lr = tsq__alloc(ls->ctx, sizeof *lr);
    tsq_status st = TSQ_OK;
    int32_t i;
    if (!lr)
        return tsq__fail(&ls->ctx->obj, TSQ_ERR_NO_MEMORY, "net_load: out of memory");
    for (i = 0; i < nlayers && st == TSQ_OK; i++) {
        uint32_t tag;
        reader payload;
        tsq_layer *l = NULL;
        const kind_spec *spec;
        ls->section = i + 1;
        ls->layer = i;
        st = next_section(ls, file, &tag, &payload);
        if (st == TSQ_OK && tag != TAG_LAYR)
            st = LOAD_FAIL(ls, "expected a LAYR section");
        if (st == TSQ_OK)
            st = parse_layer(ls, &payload, lr);
        if (st != TSQ_OK)
            break;
        spec = find_spec(lr->kind);
        st = check_sizes(ls, lr, spec);
        if (st == TSQ_OK)
            st = create_layer(ls, lr, &l);
        if (st == TSQ_OK) {
            st = tsq_net_append(net, l);
            if (st != TSQ_OK) {
                char why[TSQ_MSG_CAP];
                snprintf(why, sizeof why, "%s", tsq_net_errmsg(net));
                tsq_layer_destroy(l);
                st = relay(ls, st, "append", why);
                break;
            }
        }
        if (st == TSQ_OK)
            st = fill_layer(ls, lr, spec, l);
    }
    tsq__free(ls->ctx, lr);
    return st;
}

tsq_status tsq_net_load(tsq_context *ctx, const void *buf, uint64_t size, tsq_net **out)
{
    reader file, payload;
    load_state ls;
    uint32_t version, nsections, tag, in_ndim, nlayers, d;
    int64_t shape[3];
    tsq_net *net = NULL;
    tsq_status st;

    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out || !buf)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "net_load: %s is NULL", out ? "buf" : "out");
    *out = NULL;
    ls.ctx = ctx;
    ls.section = 0;
    ls.layer = -1;
    file.p = buf;
    file.n = size;
    file.pos = 0;
    file.bad = 0;
    if (size < 16 || memcmp(buf, MAGIC, 4) != 0)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "net_load: not a .tsq model (bad magic)");
    take(&file, 4);
    version = get_u32(&file);
    nsections = get_u32(&file);
    if (get_u32(&file) != tsq__crc32(0, buf, 12))
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "net_load: header checksum mismatch");
    if (version > TSQ_MODEL_FORMAT_VERSION)
        return tsq__fail(&ctx->obj, TSQ_ERR_VERSION, "net_load: format version %u, this "
                         "library reads up to %d", version, TSQ_MODEL_FORMAT_VERSION);
    if (version == 0)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "net_load: format version 0");
    if (nsections < 1 || nsections > MAX_SECTIONS)
        return tsq__fail(&ctx->obj, TSQ_ERR_FORMAT, "net_load: %u sections", nsections);

    st = next_section(&ls, &file, &tag, &payload);
    if (st != TSQ_OK)
        return st;
    if (tag != TAG_NETW)
        return LOAD_FAIL(&ls, "the first section is not NETW");
    in_ndim = get_u32(&payload);
    for (d = 0; d < 3; d++) {
        uint64_t s = get_u64(&payload);
        if (s > (UINT64_C(1) << 24) || (d < in_ndim && s < 1))
            return LOAD_FAIL(&ls, "input dimension %u is %llu", d, (unsigned long long)s);
        shape[d] = (int64_t)s;
    }
    nlayers = get_u32(&payload);
    if (payload.bad || payload.pos != payload.n || in_ndim < 1 || in_ndim > 3)
        return LOAD_FAIL(&ls, "malformed network header");
    if (nlayers > MAX_LAYERS || nlayers + 1 != nsections)
        return LOAD_FAIL(&ls, "%u layers in %u sections", nlayers, nsections);

    st = tsq_net_create(ctx, (int32_t)in_ndim, shape, &net);
    if (st != TSQ_OK)
        return st == TSQ_ERR_NO_MEMORY ? st : LOAD_FAIL(&ls, "bad input shape");
    st = load_layers(&ls, &file, (int32_t)nlayers, net);
    if (st == TSQ_OK && file.pos != file.n) {
        ls.layer = -1;
        st = LOAD_FAIL(&ls, "%llu bytes after the last section",
                       (unsigned long long)(file.n - file.pos));
    }
    if (st != TSQ_OK) {
        tsq_net_destroy(net);
        return st;
    }
    tsq__clear(&ctx->obj);
    *out = net;
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

tsq_status tsq_net_save_file(tsq_net *net, const char *path)
{
    tsq__object *obj = net ? &net->obj : NULL;
    uint64_t size = 0;
    void *buf;
    char tmp[4096];
    FILE *f;
    tsq_status st;
    int ok;
    if (!net)
        return TSQ_ERR_NULL;
    if (!path)
        return tsq__fail(obj, TSQ_ERR_NULL, "net_save_file: path is NULL");
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return tsq__fail(obj, TSQ_ERR_INVALID, "net_save_file: path too long");
    st = tsq_net_save(net, NULL, 0, &size);
    if (st != TSQ_OK)
        return st;
    buf = tsq__alloc(obj->ctx, (size_t)size);
    if (!buf)
        return tsq__fail(obj, TSQ_ERR_NO_MEMORY, "net_save_file: out of memory (%llu bytes)",
                         (unsigned long long)size);
    st = tsq_net_save(net, buf, size, &size);
    if (st != TSQ_OK) {
        tsq__free(obj->ctx, buf);
        return st;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        tsq__free(obj->ctx, buf);
        return tsq__fail(obj, TSQ_ERR_IO, "net_save_file: cannot create %s: %s", tmp,
                         strerror(errno));
    }
    ok = fwrite(buf, 1, (size_t)size, f) == (size_t)size;
    ok = (fclose(f) == 0) && ok;
    tsq__free(obj->ctx, buf);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return tsq__fail(obj, TSQ_ERR_IO, "net_save_file: writing %s failed: %s", path,
                         strerror(e));
    }
    tsq__clear(obj);
    return TSQ_OK;
}

tsq_status tsq_net_load_file(tsq_context *ctx, const char *path, tsq_net **out)
{
    FILE *f;
    long len;
    void *buf;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!path || !out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "net_load_file: %s is NULL",
                         path ? "out" : "path");
    *out = NULL;
    f = fopen(path, "rb");
    if (!f)
        return tsq__fail(&ctx->obj, TSQ_ERR_IO, "net_load_file: cannot open %s: %s", path,
                         strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return tsq__fail(&ctx->obj, TSQ_ERR_IO, "net_load_file: cannot size %s", path);
    }
    buf = tsq__alloc(ctx, (size_t)len);
    if (!buf) {
        fclose(f);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "net_load_file: out of memory (%ld "
                         "bytes)", len);
    }
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        tsq__free(ctx, buf);
        return tsq__fail(&ctx->obj, TSQ_ERR_IO, "net_load_file: cannot read %s", path);
    }
    fclose(f);
    st = tsq_net_load(ctx, buf, (uint64_t)len, out);
    tsq__free(ctx, buf);
    return st;
}
